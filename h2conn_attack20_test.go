package apns_test

// Attack tests (stop 20) on the HTTP/2 pool's recent changes in h2conn.go: the cold-first rule
// of reserve (94656b8), the reaper woken by net/http's state hook (8358a55), and reserve's
// single question to a connection past its first request (85f9658). Each test states the
// promise it holds the code to.

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"testing"
	"time"

	apns "github.com/Kwik-messenger/apns-go"
	"github.com/Kwik-messenger/apns-go/apnstest"
)

// waitRejected waits until the callback has reported tok once.
func waitRejected(t *testing.T, rej *rejections, tok string) {
	t.Helper()
	waitFor(t, "the callback for "+tok[56:], func() bool { return len(rej.snapshot()[tok]) > 0 })
}

// Stop is bounded when the gateway is unreachable (Stop's doc: at most 3 more connection
// attempts per connection, at most a second apart, then what is held is reported). Here one
// connection of the pool never carried a stream although it is past its "first request":
// that request's provider token could not be signed, so its reserved stream was released
// unused and end() cleared cold. net/http reports room (Available > 0) on a closed connection
// that never had a stream, and reserve, since 85f9658, asks a connection past its first
// request nothing else when it reports room: it is taken for open, chosen, its Reserve fails,
// and reserve loops at once, for ever. While the scheduler runs the reaper retires such a
// connection when its state hook reports it closed; once Stop has drained the queue the
// scheduler and its reaper are gone, and a retry that needs a stream after the gateway went
// away spins in reserve: Stop never returns (here, Shutdown returns only at its deadline,
// whose abort closes the connection).
func TestAttack20StopIsBoundedWithAClosedConnectionThatNeverHadAStream(t *testing.T) {
	parallel(t)
	key, p8 := apns.NewTestAuthKey(t)
	s := newH2Server(t, func(s *apnstest.HTTP2Server) {
		s.Keys = map[string]*ecdsa.PublicKey{"KEY1234567": &key.PublicKey}
	})
	c, err := apns.CreateTokenClient(s.URL, p8, "KEY1234567", "TEAM123456", "com.example.app",
		apns.WithTLSConfig(s.ClientTLSConfig()), apns.WithErrorHandler(func(error) {}),
		apns.WithDialTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	stopAfter(t, c)
	rej := recordRejections(c)
	if err := c.Start(2); err != nil {
		t.Fatal(err)
	}
	pl := []byte(`{"aps":{"alert":"x"}}`)
	send := func(i int) {
		t.Helper()
		if err := c.SendNotification(context.Background(), &apns.Notification{DeviceToken: token(i), Payload: pl}); err != nil {
			t.Fatal(err)
		}
	}

	// Token 0 takes the first stream of one of the two new connections and is never sent:
	// the key cannot sign. That connection is now past its first request, with none sent.
	mend := apns.BreakProviderTokenKeyFor(c)
	send(0)
	waitRejected(t, rej, token(0))
	mend()

	// Token 1 goes on the other connection (cold first), is answered 503 with Retry-After,
	// and waits 2 s to be sent again.
	s.Respond(token(1), apnstest.Response{Status: 503, Reason: "ServiceUnavailable", RetryAfter: "2", Times: 1})
	send(1)
	waitFor(t, "the 503 for token 1", func() bool { return len(s.Rejected()) == 1 })

	// Stop drains the queue: the scheduler and its reaper exit; token 1 is still held.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	began := time.Now()
	stopped := make(chan error, 1)
	go func() { stopped <- c.Shutdown(ctx) }()
	waitFor(t, "the scheduler's reaper to exit", func() bool {
		return countGoroutines(t, "(*h2Transport).reaper") == 0
	})
	// The gateway goes away before token 1's retry: both connections close, new ones are
	// refused.
	s.Close()

	err = receive(t, "Shutdown", stopped)
	took := time.Since(began)
	if err != nil {
		t.Errorf("Shutdown = %v after %v; want nil well within its 20 s deadline: with the gateway gone Stop "+
			"gives up after 3 refused attempts at most a second apart (stats %+v)", err, took.Round(time.Millisecond), c.Stats())
	}
	if cs := rej.snapshot()[token(1)]; len(cs) != 1 {
		t.Errorf("token 1 reached the callback %d times; want once", len(cs))
	}
	if st := c.Stats(); st.Accepted != st.Delivered+st.Rejected+st.Unsent+st.Unconfirmed {
		t.Errorf("stats %+v: some notification has no end", st)
	}
	_ = errors.Is
}
