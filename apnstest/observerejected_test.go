package apnstest

import (
	"encoding/hex"
	"net/http"
	"sync"
	"testing"
)

// rejection is one call of Server.ObserveRejected.
type rejection struct {
	id     uint32
	status uint8
}

// ObserveRejected hears of every refusal: the protocol checks, a rule, a script, and a
// malformed command-0 frame (status 0: dropped without a response).
func TestObserveRejectedHearsEveryRefusal(t *testing.T) {
	s := NewUnstartedServer()
	var mu sync.Mutex
	var got []rejection
	s.ObserveRejected = func(n Notification, status uint8) {
		mu.Lock()
		got = append(got, rejection{n.ID, status})
		mu.Unlock()
	}
	s.Start()
	defer s.Close()
	s.RejectToken(hex.EncodeToString(token(9)), 8)
	s.Script(ConnScript{}, ConnScript{}, ConnScript{}, ConnScript{Reject: 10})

	c := dial(t, s.Addr, nil) // a 16-byte token: status 5
	write(t, c, frame2(item{1, token(1)[:16]}, item{2, payload(1)}, item{3, u32(1)}))
	expectResponse(t, c, statusBadTokenSize, 1)
	c = dial(t, s.Addr, nil) // the rule
	write(t, c, note(2, 9))
	expectResponse(t, c, 8, 2)
	c = dial(t, s.Addr, nil) // command 0 with no payload: dropped
	write(t, c, cmd0(token(1), nil))
	expectDropped(t, c)
	c = dial(t, s.Addr, nil) // the script
	write(t, c, note(4, 1))
	expectResponse(t, c, 10, 4)
	s.Close() // every ObserveRejected call has returned

	want := []rejection{{1, statusBadTokenSize}, {2, 8}, {0, 0}, {4, 10}}
	if len(got) != len(want) {
		t.Fatalf("ObserveRejected saw %v; want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("ObserveRejected saw %v; want %v", got, want)
		}
	}
	if r := s.Rejected(); len(r) != 4 {
		t.Fatalf("Rejected() has %d; want the same 4", len(r))
	}
}

// HTTP2Server.ObserveRejected hears of refusals by the built-in checks (authentication,
// headers) as well as by Respond.
func TestHTTP2ObserveRejectedHearsEveryRefusal(t *testing.T) {
	var mu sync.Mutex
	var got []string
	s := NewUnstartedHTTP2Server()
	s.ObserveRejected = func(r RejectedRequest) {
		mu.Lock()
		got = append(got, r.Reason)
		mu.Unlock()
	}
	s.Start()
	defer s.Close()
	s.Respond(h2Token, Response{Status: 410})
	c := newH2Client(t, s, h2Opts{})
	c.expect(h2Req{}, 403, "MissingProviderToken")
	cc := newH2Client(t, s, h2Opts{cert: true})
	cc.expect(h2Req{header: http.Header{"apns-priority": {"7"}}}, 400, "BadPriority")
	cc.expect(h2Req{}, 410, "Unregistered")
	mu.Lock()
	defer mu.Unlock()
	want := []string{"MissingProviderToken", "BadPriority", "Unregistered"}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Fatalf("ObserveRejected saw %q; want %q", got, want)
	}
}
