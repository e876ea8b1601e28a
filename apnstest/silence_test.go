package apnstest

import (
	"net/http"
	"testing"
	"time"
)

// A silenced connection stays open and swallows everything: a request sent on it gets no
// answer and never reaches the server. New connections are served as usual.
func TestHTTP2SilenceClientConnectionsSwallowsTrafficAndKeepsTheConnection(t *testing.T) {
	s := newH2TestServer(t)
	arrived, release := make(chan struct{}), make(chan struct{})
	s.RespondFunc(func(r Request) *Response {
		if r.Token == h2Token2 {
			close(arrived)
			<-release
		}
		return nil
	})
	c := newH2Client(t, s, h2Opts{cert: true})
	c.expect(h2Req{}, 200, "")
	// A request judged before the silence and answered after it: the answer is swallowed.
	c.c = &http.Client{Transport: c.tr, Timeout: 2 * time.Second}
	inFlight := make(chan h2Result, 1)
	go func() { inFlight <- c.try(h2Req{path: "/3/device/" + h2Token2}) }()
	select {
	case <-arrived:
	case <-time.After(guard):
		t.Fatal("the request did not arrive")
	}
	if n := s.SilenceClientConnections(); n != 1 {
		t.Fatalf("SilenceClientConnections() = %d; want 1", n)
	}
	if n := s.SilenceClientConnections(); n != 0 {
		t.Fatalf("SilenceClientConnections() again = %d; want 0", n)
	}

	close(release)
	if r := <-inFlight; r.err == nil {
		t.Fatalf("a request in flight when its connection was silenced was answered %d", r.status)
	}

	// On the silent connection: no answer. The client gives up after a while (any while: the
	// answer is never coming), and the server never saw the request.
	c.c = &http.Client{Transport: c.tr, Timeout: 300 * time.Millisecond}
	if r := c.try(h2Req{}); r.err == nil {
		t.Fatalf("a request on a silenced connection was answered %d", r.status)
	}
	if got := s.Count(); got != 2 {
		t.Fatalf("Count() = %d after a request on a silenced connection; want 2 (the one before, the one in flight)", got)
	}

	// A new connection is served, and the silenced one is still open.
	fresh := newH2Client(t, s, h2Opts{cert: true})
	fresh.expect(h2Req{}, 200, "")
	if got := s.Conns(); got != 2 {
		t.Fatalf("Conns() = %d; want 2: the silenced connection must stay open", got)
	}
}
