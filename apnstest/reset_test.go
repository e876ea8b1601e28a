package apnstest

import (
	"net/http"
	"strings"
	"testing"
)

// ResetStream sends the status and half the body, then resets the stream: the client has a
// status and a failed body read. An accepted request is recorded all the same.
func TestHTTP2ResetStreamSendsTheStatusThenResets(t *testing.T) {
	s := newH2TestServer(t)
	c := newH2Client(t, s, h2Opts{cert: true})
	s.Respond(h2Token, Response{Status: 200, ResetStream: true, Times: 1})
	res := c.try(h2Req{})
	if res.status != http.StatusOK || res.err == nil || res.body != "" {
		t.Errorf("200 with reset: status %d, body %q, read error %v; want 200, no body, a read error", res.status, res.body, res.err)
	}
	if s.Count() != 1 {
		t.Errorf("accepted %d; want 1", s.Count())
	}
	s.Respond(h2Token, Response{Status: 400, Reason: "BadDeviceToken", ResetStream: true, Times: 1})
	res = c.try(h2Req{})
	full := `{"reason":"BadDeviceToken"}`
	if res.status != http.StatusBadRequest || res.err == nil || res.body != full[:len(full)/2] {
		t.Errorf("400 with reset: status %d, body %q, read error %v; want 400, %q, a read error", res.status, res.body, res.err, full[:len(full)/2])
	}
	if res.err != nil && !strings.Contains(res.err.Error(), "INTERNAL_ERROR") {
		t.Errorf("read error %v; want a stream reset (INTERNAL_ERROR)", res.err)
	}
	res = c.try(h2Req{}) // the connection is fine
	if res.status != http.StatusOK || res.err != nil {
		t.Errorf("next request: %d, %v; want 200", res.status, res.err)
	}
}
