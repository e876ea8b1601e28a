package apns

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// net/http tells that a request was not sent on a connection only by the text of two
// unexported errors (notSentByNetHTTP). This test has net/http's own server send a graceful
// GOAWAY (Server.Shutdown) while requests are being written on one connection, and checks
// that every request that failed failed with one of those texts and that both were seen: a Go
// release that changes them fails here, loudly, instead of turning every GOAWAY into counted
// tries.
func TestNotSentByNetHTTPMatchesGoAway(t *testing.T) {
	seen := map[string]bool{}
	for round := 0; round < 40 && len(seen) < 2; round++ {
		for _, err := range goAwayErrors(t) {
			if !notSentByNetHTTP(err) {
				t.Fatalf("a request on a connection that got net/http's graceful GOAWAY failed with %q (%T), which notSentByNetHTTP does not know", err, err)
			}
			seen[err.Error()] = true
		}
	}
	if len(seen) < 2 {
		t.Errorf("net/http's errors after a graceful GOAWAY: %v; want both \"graceful shutdown GOAWAY\" and \"client conn not usable\"", seen)
	}
}

// goAwayErrors sends requests on one connection to a net/http server, has the server shut
// down gracefully while they are written, sends one more once the client has read the GOAWAY,
// and returns the errors of the requests that failed.
//
// One request is answered first: until then the server may not have registered the connection
// for its graceful shutdown (it would never send the GOAWAY), and the client may not have the
// server's SETTINGS (its stream limit is not the server's).
func goAwayErrors(t *testing.T) []error {
	t.Helper()
	release := make(chan struct{})
	entered := make(chan struct{}, 100)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/first" {
			return
		}
		entered <- struct{}{}
		<-release
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	var protocols http.Protocols
	protocols.SetHTTP2(true)
	tr := &http.Transport{TLSClientConfig: srv.Client().Transport.(*http.Transport).TLSClientConfig, Protocols: &protocols}
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cc, err := tr.NewClientConn(ctx, "https", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	first, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/first", nil)
	res, err := cc.RoundTrip(first)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	send := func() {
		r, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
		res, err := cc.RoundTrip(r)
		if err != nil {
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
			return
		}
		res.Body.Close()
	}
	for range 50 {
		wg.Go(send)
	}
	<-entered // some requests are being handled, others still being written
	shut := make(chan struct{})
	go func() { defer close(shut); srv.Config.Shutdown(ctx) }()
	for cc.Available() > 0 { // until the client has read the GOAWAY
		if ctx.Err() != nil {
			t.Fatal("the client never read the server's GOAWAY")
		}
		time.Sleep(time.Millisecond)
	}
	send()
	close(release)
	wg.Wait()
	<-shut
	return errs
}
