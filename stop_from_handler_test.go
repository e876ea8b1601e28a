package apns_test

// Stop called from the client's own handlers (issue 10 item 7): from the error handler and the
// callbacks, which run on the dispatcher goroutine that Stop waits for, and from the feedback
// error handler, which runs on the poller that Stop waits for.

import (
	"context"
	"crypto/tls"
	"sync"
	"testing"
	"time"

	apns "github.com/Kwik-messenger/apns-go"
	"github.com/Kwik-messenger/apns-go/apnstest"
)

// guardedClient makes a client whose cleanup Stop is guarded too, so that a deadlocked Stop
// fails the test instead of hanging it.
func guardedClient(t *testing.T, gateway string, tlsConf func() *tlsConfigSource, opts ...apns.Option) *apns.Client {
	t.Helper()
	cert, key := apnstest.ClientCertPEM()
	c, err := apns.CreateClient(gateway, cert, key, false, append([]apns.Option{apns.WithTLSConfig(tlsConf().cfg)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stop(t, c)
		checkNoGoroutines(t)
	})
	return c
}

// stopOnce calls c.Stop from a handler, once, and tells when it returned.
type stopOnce struct {
	once     sync.Once
	returned chan struct{}
	c        *apns.Client
}

func newStopOnce() *stopOnce { return &stopOnce{returned: make(chan struct{})} }

func (s *stopOnce) stop() {
	s.once.Do(func() {
		s.c.Stop()
		close(s.returned)
	})
}

func (s *stopOnce) wait(t *testing.T, what string) {
	t.Helper()
	select {
	case <-s.returned:
	case <-time.After(waitGuard):
		t.Fatalf("Stop called from %s did not return within %v", what, waitGuard)
	}
}

func TestStopFromTheErrorHandlerReturns(t *testing.T) {
	t.Run("binary", func(t *testing.T) {
		s := newServer(t)
		so := newStopOnce()
		c := guardedClient(t, s.Addr, tlsOf(s.ClientTLSConfig()), apns.WithAssumeSentTimeout(150*time.Millisecond),
			apns.WithErrorHandler(func(error) { so.stop() }))
		so.c = c
		l := newLedger(c)
		start(t, c, 1)
		sendAll(t, c, 10)
		if !s.WaitCount(10, waitGuard) {
			t.Fatal("not delivered")
		}
		s.CloseClientConnections() // "connection lost" reaches the error handler
		so.wait(t, "the error handler")
		sendAll := c.Send(token(99), time.Time{}, apns.PRIORITY_IMMEDIATE, payload(99))
		if sendAll == nil {
			t.Error("Send after the handler's Stop succeeded; want ErrStopped")
		}
		_ = l
	})
	t.Run("http2", func(t *testing.T) {
		s := newH2Server(t, nil)
		so := newStopOnce()
		c := guardedClient(t, s.URL, tlsOf(s.ClientTLSConfig()), apns.WithErrorHandler(func(error) { so.stop() }))
		so.c = c
		start(t, c, 1)
		sendAll(t, c, 10)
		if !s.WaitCount(10, waitGuard) {
			t.Fatal("not delivered")
		}
		s.CloseClientConnections()
		// The next request meets the lost connection, if the client has not noticed yet; the
		// error handler hears of it either way (and may have stopped the client already).
		_ = c.Send(token(10), time.Time{}, apns.PRIORITY_IMMEDIATE, payload(10))
		so.wait(t, "the error handler")
	})
}

func TestStopFromTheCallbackReturns(t *testing.T) {
	s := newH2Server(t, nil)
	s.Respond(token(3), apnstest.Response{Status: 400, Reason: "BadDeviceToken"})
	s.Respond(token(4), apnstest.Response{Status: 400, Reason: "BadDeviceToken"})
	so := newStopOnce()
	c := guardedClient(t, s.URL, tlsOf(s.ClientTLSConfig()))
	so.c = c
	var mu sync.Mutex
	var reported []string
	c.SetCallback(func(m *apns.Message, code uint8) {
		mu.Lock()
		reported = append(reported, hexOf(m.Token))
		mu.Unlock()
		so.stop()
	})
	start(t, c, 1)
	sendAll(t, c, 10)
	so.wait(t, "the callback")
	stop(t, c)
	mu.Lock()
	defer mu.Unlock()
	if len(reported) != 2 {
		t.Errorf("callbacks for %d notifications; want 2 (tokens 3 and 4): the one after the Stop runs too", len(reported))
	}
}

// A Stop from outside and one from the callback at the same time: each returns.
func TestStopFromTheCallbackWhileStopRunsElsewhere(t *testing.T) {
	s := newH2Server(t, nil)
	s.Respond(token(1), apnstest.Response{Status: 400, Reason: "BadDeviceToken"})
	c := guardedClient(t, s.URL, tlsOf(s.ClientTLSConfig()))
	inCallback, outerStopping := make(chan struct{}), make(chan struct{})
	so := newStopOnce()
	so.c = c
	c.SetCallback(func(*apns.Message, uint8) {
		close(inCallback)
		<-outerStopping
		time.Sleep(10 * time.Millisecond) // the outer Stop is on its way to wait for this callback
		so.stop()
	})
	start(t, c, 1)
	sendAll(t, c, 2)
	guard(t, "the callback", func() { <-inCallback })
	outer := make(chan struct{})
	go func() { defer close(outer); c.Stop() }()
	close(outerStopping)
	so.wait(t, "the callback during another Stop")
	guard(t, "the outer Stop", func() { <-outer })
}

func TestStopFromTheFeedbackErrorHandlerReturns(t *testing.T) {
	s := newServer(t)
	fs := apnstest.NewFeedbackServer()
	addr := fs.Addr
	fs.Close() // every poll fails
	so := newStopOnce()
	c := guardedClient(t, s.Addr, tlsOf(s.ClientTLSConfig()), apns.WithErrorHandler(func(error) { so.stop() }))
	so.c = c
	fc, err := c.SetupFeedbackClient(addr, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	so.wait(t, "the feedback error handler")
	ctx, cancel := context.WithTimeout(context.Background(), waitGuard)
	defer cancel()
	if _, err := fc.BadTokens(ctx); err != apns.ErrFeedbackStopped {
		t.Errorf("BadTokens = %v; want ErrFeedbackStopped", err)
	}
}

type tlsConfigSource struct{ cfg *tls.Config }

func tlsOf(cfg *tls.Config) func() *tlsConfigSource {
	return func() *tlsConfigSource { return &tlsConfigSource{cfg} }
}
