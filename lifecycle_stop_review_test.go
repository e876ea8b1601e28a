package apns_test

// Adversarial tests of the h2rel change (issue 10 items 3, 5, 6, 7, 8, 12; issue 16 items 1,
// 2, 4, 5, 6): Stop from handlers, the feedback client across Stop, the HTTP/2 answer rules.
// Each test is bounded: a deadlock fails it after attackGuard instead of hanging. A handler
// stops the client as documented, with go c.Stop() (Stop waits for the handlers; see
// stop_from_handler_test.go).

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	apns "github.com/Kwik-messenger/apns-go"
	"github.com/Kwik-messenger/apns-go/apnstest"
)

// attackGuard bounds the waits of these tests; it is far beyond FeedbackStopGrace.
const attackGuard = 10 * time.Second

// rawClient makes a binary client of s without the cleanup Stop of newClient, for tests whose
// failure is a deadlocked Stop: they unwind it themselves.
func rawClient(t *testing.T, s *apnstest.Server, opts ...apns.Option) *apns.Client {
	t.Helper()
	cert, key := apnstest.ClientCertPEM()
	opts = append([]apns.Option{apns.WithTLSConfig(s.ClientTLSConfig()), apns.WithAssumeSentTimeout(150 * time.Millisecond)}, opts...)
	c, err := apns.CreateClient(s.Addr, cert, key, false, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// The feedback error handler stops the client (go c.Shutdown) while another goroutine's Stop is
// already running: the outer Stop waits for the feedback poller, which runs the handler; the
// handler's Stop, on its own goroutine, waits for the outer one. Both return. The handler's
// Shutdown has a context the test cancels, so that a deadlock can be unwound once detected.
func TestStopReviewFeedbackErrorHandlerStopWhileStopRuns(t *testing.T) {
	s := newServer(t)
	fs := apnstest.NewFeedbackServer()
	fbAddr := fs.Addr
	fs.Close() // every poll fails at once: the error handler runs on the poller

	unwind, cancelUnwind := context.WithCancel(context.Background())
	defer cancelUnwind()
	inHandler, handlerDone := make(chan struct{}), make(chan error, 1)
	var once sync.Once
	var c *apns.Client
	c = rawClient(t, s, apns.WithErrorHandler(func(err error) {
		if !strings.Contains(err.Error(), "feedback poll") {
			return
		}
		once.Do(func() {
			close(inHandler)
			// Wait until the outer Stop has begun: Start then says ErrStopped.
			deadline := time.Now().Add(attackGuard)
			for c.Start(1) != apns.ErrStopped {
				if time.Now().After(deadline) {
					handlerDone <- errors.New("outer Stop never began")
					return
				}
				time.Sleep(time.Millisecond)
			}
			go func() { handlerDone <- c.Shutdown(unwind) }()
		})
	}))
	start(t, c, 1)
	if _, err := c.SetupFeedbackClient(fbAddr, time.Hour); err != nil {
		t.Fatal(err)
	}
	select {
	case <-inHandler:
	case <-time.After(attackGuard):
		t.Fatal("the feedback error handler never ran")
	}
	outerDone := make(chan struct{})
	go func() { defer close(outerDone); c.Stop() }()

	var handlerErr error
	var handlerReturned, outerReturned bool
	timeout := time.After(attackGuard)
	for !(handlerReturned && outerReturned) {
		select {
		case handlerErr = <-handlerDone:
			handlerReturned = true
		case <-outerDone:
			outerReturned = true
			outerDone = nil
		case <-timeout:
			t.Errorf("deadlock: after %v the outer Stop returned=%v, the feedback error handler's Stop returned=%v", attackGuard, outerReturned, handlerReturned)
			cancelUnwind()
			timeout = time.After(attackGuard) // the unwinding must end it
			if !handlerReturned && !outerReturned {
				continue
			}
		}
	}
	if handlerErr != nil {
		t.Errorf("the handler's Stop (Shutdown) returned %v; want nil, at once", handlerErr)
	}
	checkNoGoroutines(t)
}

// When the first Stop comes from a callback (go c.Stop()), a later Stop from the application
// still returns only after the callbacks due have run (Stop's doc: "Stop returns after every
// callback already due has run"): an application that does `defer c.Stop()` and then closes
// what the callback uses must not race with the callback.
func TestStopReviewNoCallbackRunsAfterAnOuterStopReturned(t *testing.T) {
	parallel(t)
	s := newH2Server(t, nil)
	s.Respond(token(1), apnstest.Response{Status: 400, Reason: "BadDeviceToken"})
	s.Respond(token(2), apnstest.Response{Status: 400, Reason: "BadDeviceToken"})
	c := newH2Client(t, s)
	entered2, release2 := make(chan struct{}), make(chan struct{})
	var inCallback2 atomic.Bool
	var calls atomic.Int32
	c.SetCallback(func(m *apns.Message, _ uint8) {
		switch calls.Add(1) {
		case 1:
			go c.Stop()
		case 2:
			inCallback2.Store(true)
			close(entered2)
			select {
			case <-release2:
			case <-time.After(attackGuard):
			}
			inCallback2.Store(false)
		}
	})
	sendAll(t, c, 3) // tokens 1 and 2 are rejected
	start(t, c, 1)
	select {
	case <-entered2:
	case <-time.After(attackGuard):
		t.Fatal("the second callback never ran")
	}
	stop(t, c) // the application's Stop
	if inCallback2.Load() {
		t.Errorf("the application's Stop returned while the second callback was still running")
	}
	close(release2)
}

// A Stop on a goroutine started by a callback waits for every callback due, the current one
// included.
func TestStopReviewStopFromAGoroutineOfTheCallbackWaits(t *testing.T) {
	parallel(t)
	s := newH2Server(t, nil)
	s.Respond(token(1), apnstest.Response{Status: 400, Reason: "BadDeviceToken"})
	c := newH2Client(t, s)
	var callbackDone atomic.Bool
	stopReturned := make(chan bool, 1)
	c.SetCallback(func(m *apns.Message, _ uint8) {
		go func() { c.Stop(); stopReturned <- callbackDone.Load() }()
		time.Sleep(100 * time.Millisecond) // a Stop that does not wait returns meanwhile
		callbackDone.Store(true)
	})
	start(t, c, 1)
	sendAll(t, c, 2)
	select {
	case done := <-stopReturned:
		if !done {
			t.Error("Stop from a goroutine the callback started returned before the callback ended: taken for the dispatcher")
		}
	case <-time.After(attackGuard):
		t.Fatal("Stop from a goroutine the callback started never returned")
	}
}

// go c.Stop() from the rejection callback (SetRejectionCallback) of a client that was never
// started: the callbacks then run on the first Stop's goroutine.
func TestStopReviewStopFromRejectionCallbackNeverStarted(t *testing.T) {
	s := newH2Server(t, nil)
	c := newH2Client(t, s)
	var calls atomic.Int32
	c.SetRejectionCallback(func(*apns.Rejection) {
		calls.Add(1)
		go c.Stop()
		go c.Stop()
	})
	c.SetCallback(func(*apns.Message, uint8) { go c.Stop() })
	sendAll(t, c, 3)
	stop(t, c)
	if n := calls.Load(); n != 3 {
		t.Errorf("rejection callbacks = %d; want 3", n)
	}
	st := c.Stats()
	if st.Accepted != 3 || st.Unsent != 3 {
		t.Errorf("Stats = %+v; want Accepted 3, Unsent 3", st)
	}
}

// Two callbacks each start a Stop (go c.Stop()), and an outer Stop runs too; every call
// returns and the ledger adds up.
func TestStopReviewTwoStopsFromTwoCallbacks(t *testing.T) {
	s := newH2Server(t, nil)
	for i := 0; i < 20; i += 3 {
		s.Respond(token(i), apnstest.Response{Status: 400, Reason: "BadDeviceToken"})
	}
	c := newH2Client(t, s)
	var mu sync.Mutex
	seen := map[string]int{}
	c.SetCallback(func(m *apns.Message, _ uint8) {
		mu.Lock()
		seen[hexOf(m.Token)]++
		mu.Unlock()
		go c.Stop()
	})
	c.SetRejectionCallback(func(*apns.Rejection) { go c.Stop() })
	start(t, c, 2)
	for i := 0; i < 20; i++ {
		if err := c.Send(token(i), time.Time{}, apns.PRIORITY_IMMEDIATE, payload(i)); err != nil {
			break
		}
	}
	stop(t, c)
	checkNoGoroutines(t)
	st := c.Stats()
	if st.Accepted != st.Delivered+st.Rejected+st.Unsent+st.Unconfirmed {
		t.Errorf("Stats after Stop: Accepted %d != Delivered %d + Rejected %d + Unsent %d + Unconfirmed %d",
			st.Accepted, st.Delivered, st.Rejected, st.Unsent, st.Unconfirmed)
	}
	mu.Lock()
	defer mu.Unlock()
	for tok, n := range seen {
		if n != 1 {
			t.Errorf("token %s reported %d times", tok, n)
		}
	}
	if got := uint64(len(seen)); got != st.Rejected+st.Unsent {
		t.Errorf("callbacks for %d tokens; Stats says %d rejected + %d unsent", got, st.Rejected, st.Unsent)
	}
}

// A 200 whose body is reset is delivered: once to the server, Delivered in Stats, no drop, no
// duplicate, no replay, no callback.
func TestStopReviewResetAfter200Stats(t *testing.T) {
	s := newH2Server(t, nil)
	s.Respond(token(1), apnstest.Response{Status: 200, ResetStream: true})
	s.Respond(token(2), apnstest.Response{Status: 410, ResetStream: true})
	c := newH2Client(t, s)
	rej := recordRejections(c)
	start(t, c, 1)
	sendAll(t, c, 3)
	stop(t, c)
	st := c.Stats()
	if st.Accepted != 3 || st.Delivered != 2 || st.Rejected != 1 || st.Drops != 0 || st.Duplicates != 0 || st.Replayed != 0 || st.Unsent != 0 {
		t.Errorf("Stats = %+v; want Accepted 3, Delivered 2, Rejected 1, nothing else", st)
	}
	got := rej.snapshot()
	if len(got[token(1)]) != 0 || len(got[token(2)]) != 1 || len(got) != 1 {
		t.Errorf("rejections = %v; want one, for token 2", got)
	}
	if n := h2Received(s)[token(1)]; n != 1 {
		t.Errorf("token 1 accepted %d times by the server; want 1", n)
	}
}

// A background push at priority 10 goes at 5 through Push as well as the queue.
func TestStopReviewBackgroundPriorityThroughPush(t *testing.T) {
	s := newH2Server(t, nil)
	c := newH2Client(t, s)
	start(t, c, 1)
	ctx, cancel := context.WithTimeout(context.Background(), attackGuard)
	defer cancel()
	for i, n := range []*apns.Notification{
		{DeviceToken: token(1), PushType: "background", Priority: apns.PRIORITY_IMMEDIATE, Payload: []byte(`{"aps":{"content-available":1}}`)},
		{DeviceToken: token(2), Payload: []byte(`{"aps":{"content-available":1}}`)},
		{DeviceToken: token(3), Payload: []byte(`{"aps":{"content-available":1,"alert":"x"}}`)},
		{DeviceToken: token(4), Payload: map[string]any{"aps": map[string]any{"content-available": 1}}},
	} {
		resp, err := c.Push(ctx, n)
		if err != nil || !resp.Sent() {
			t.Errorf("Push %d = %+v, %v; want sent", i, resp, err)
		}
	}
	want := map[string]struct {
		prio int
		typ  string
	}{token(1): {5, "background"}, token(2): {5, "background"}, token(3): {10, "alert"}, token(4): {5, "background"}}
	for _, r := range s.Requests() {
		if w := want[r.Token]; r.Priority != w.prio || r.PushType != w.typ {
			t.Errorf("token %s went as %s at %d; want %s at %d", r.Token[len(r.Token)-1:], r.PushType, r.Priority, w.typ, w.prio)
		}
	}
}

// Two feedback clients whose error handlers both stop the client (go c.Shutdown): each Stop,
// on its own goroutine, waits for both pollers, which return once their handler has; both
// Stops return.
func TestStopReviewTwoFeedbackErrorHandlersStop(t *testing.T) {
	s := newServer(t)
	fs := apnstest.NewFeedbackServer()
	fbAddr := fs.Addr
	fs.Close()

	unwind, cancelUnwind := context.WithCancel(context.Background())
	defer cancelUnwind()
	var arrived sync.WaitGroup
	arrived.Add(2)
	both := make(chan struct{})
	go func() { arrived.Wait(); close(both) }()
	returned := make(chan error, 2)
	var calls atomic.Int32
	var c *apns.Client
	c = rawClient(t, s, apns.WithErrorHandler(func(err error) {
		if !strings.Contains(err.Error(), "feedback poll") || calls.Add(1) > 2 {
			return
		}
		arrived.Done()
		select { // both pollers are in the handler before either stops the client
		case <-both:
		case <-time.After(attackGuard):
		}
		go func() { returned <- c.Shutdown(unwind) }()
	}))
	start(t, c, 1)
	for i := 0; i < 2; i++ {
		if _, err := c.SetupFeedbackClient(fbAddr, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	var errs []error
	timeout := time.After(attackGuard + attackGuard/2)
	for len(errs) < 2 {
		select {
		case err := <-returned:
			errs = append(errs, err)
		case <-timeout:
			t.Errorf("deadlock: %d of the 2 feedback error handlers' Stops returned within %v", len(errs), attackGuard)
			cancelUnwind()
			timeout = time.After(attackGuard)
		}
	}
	for _, err := range errs {
		if err != nil {
			t.Errorf("a feedback error handler's Stop (Shutdown) returned %v; want nil", err)
		}
	}
	stop(t, c)
	checkNoGoroutines(t)
}

// Shutdown's deadline bounds the wait for a blocked callback (issue 10 review): Shutdown
// returns ctx's error while the callback still runs; a later Stop waits for it and for the
// callback due after it; the dispatcher goroutine exits once they have returned.
func TestStopReviewShutdownDeadlineWithABlockedCallback(t *testing.T) {
	parallel(t)
	s := newH2Server(t, nil)
	s.Respond(token(1), apnstest.Response{Status: 400, Reason: "BadDeviceToken"})
	s.Respond(token(2), apnstest.Response{Status: 400, Reason: "BadDeviceToken"})
	c := newH2Client(t, s)
	entered, release := make(chan struct{}), make(chan struct{})
	var running atomic.Bool
	var calls atomic.Int32
	c.SetCallback(func(*apns.Message, uint8) {
		if calls.Add(1) != 1 {
			return
		}
		running.Store(true)
		close(entered)
		select {
		case <-release:
		case <-time.After(3 * attackGuard):
		}
		running.Store(false)
	})
	var once sync.Once
	letGo := func() { once.Do(func() { close(release) }) }
	t.Cleanup(letGo) // before the client's cleanup Stop
	sendAll(t, c, 3)
	start(t, c, 1)
	select {
	case <-entered:
	case <-time.After(attackGuard):
		t.Fatal("no callback")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- c.Shutdown(ctx) }()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Shutdown with a blocked callback = %v; want DeadlineExceeded", err)
		}
	case <-time.After(attackGuard):
		t.Fatalf("Shutdown with a 100ms deadline had not returned after %v: it waits for a blocked callback", attackGuard)
	}
	if !running.Load() {
		t.Fatal("the callback returned before it was let go")
	}
	app := stopAsync(c)
	select { // Stop has no deadline: it waits for the callbacks
	case <-app:
		t.Fatal("Stop after Shutdown returned while the callback was still running")
	case <-time.After(100 * time.Millisecond):
	}
	letGo()
	if err := receive(t, "Stop", app); err != nil {
		t.Errorf("Stop: %v", err)
	}
	if n := calls.Load(); n != 2 || running.Load() {
		t.Errorf("when Stop returned, %d callbacks had run (running: %v); want 2, none running", n, running.Load())
	}
	checkNoGoroutines(t)
}

// Two consumers call GetBadTokens in loops while 410s arrive and Stop runs: every token
// answered 410 reaches exactly one of them, once, and both end with ErrFeedbackStopped.
func TestStopReviewConcurrentGetBadTokensAcrossStop(t *testing.T) {
	const n = 60
	s := newH2Server(t, nil)
	for i := 0; i < n; i++ {
		s.Respond(token(i), apnstest.Response{Status: 410})
	}
	c := newH2Client(t, s)
	fc, err := c.SetupFeedbackClient("", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	got := map[string]int{}
	var wg sync.WaitGroup
	ends := make(chan error, 2)
	for g := 0; g < 2; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), attackGuard)
			defer cancel()
			for {
				toks, err := fc.BadTokens(ctx)
				if err != nil {
					ends <- err
					return
				}
				mu.Lock()
				for _, bt := range toks {
					got[bt.Token]++
				}
				mu.Unlock()
			}
		}()
	}
	start(t, c, 2)
	sendAll(t, c, n/2)
	go func() {
		for i := n / 2; i < n; i++ {
			if c.Send(token(i), time.Time{}, apns.PRIORITY_IMMEDIATE, payload(i)) != nil {
				return
			}
		}
	}()
	stop(t, c)
	wg.Wait()
	for i := 0; i < 2; i++ {
		if err := <-ends; !errors.Is(err, apns.ErrFeedbackStopped) {
			t.Errorf("a consumer ended with %v; want ErrFeedbackStopped", err)
		}
	}
	st := c.Stats()
	mu.Lock()
	defer mu.Unlock()
	if uint64(len(got)) != st.Rejected { // every rejection is a 410
		t.Errorf("GetBadTokens returned %d distinct tokens; Stats says %d rejected (%v)", len(got), st.Rejected, st.RejectedByStatus)
	}
	for tok, k := range got {
		if k != 1 {
			t.Errorf("token %s returned %d times", tok, k)
		}
	}
}

// closedAddr returns a loopback address where nothing listens.
func closedAddr(t *testing.T) string {
	t.Helper()
	fs := apnstest.NewFeedbackServer()
	addr := fs.Addr
	fs.Close()
	return addr
}

// The error handler "runs on the same dispatcher goroutine as the callback" (WithErrorHandler),
// and callbacks run "one at a time" (SetCallback). After a Start that reached nothing, while
// the error handler still runs for the failed attempts, a Stop must not run the callbacks of
// the queued notifications on its own goroutine at the same time: the failed Start keeps its
// dispatcher, and Stop's callbacks queue behind the handler on it.
func TestStopReviewCallbackConcurrentWithErrorHandlerAfterFailedStart(t *testing.T) {
	parallel(t)
	addr := closedAddr(t)
	var inHandler atomic.Bool
	var overlap atomic.Int32
	entered, release := make(chan struct{}), make(chan struct{})
	var errs atomic.Int32
	cert, key := apnstest.ClientCertPEM()
	c, err := apns.CreateClient(addr, cert, key, true, apns.WithProtocol(apns.ProtocolHTTP2),
		apns.WithErrorHandler(func(error) {
			if errs.Add(1) != startDialAttemptsSeen {
				return
			}
			// The last failed attempt: Start is about to take its dispatcher back.
			inHandler.Store(true)
			close(entered)
			select {
			case <-release:
			case <-time.After(attackGuard):
			}
			inHandler.Store(false)
		}))
	if err != nil {
		t.Fatal(err)
	}
	c.SetCallback(func(*apns.Message, uint8) {
		if inHandler.Load() {
			overlap.Add(1)
		}
	})
	sendAll(t, c, 3)
	startDone := make(chan error, 1)
	go func() { startDone <- c.Start(1) }()
	select {
	case <-entered:
	case <-time.After(attackGuard):
		t.Fatal("the error handler never heard of the last failed attempt")
	}
	time.Sleep(200 * time.Millisecond) // Start takes its dispatcher back (a slow run only hides the defect)
	stop(t, c)
	close(release)
	select {
	case <-startDone:
	case <-time.After(attackGuard):
		t.Fatal("Start never returned")
	}
	if n := overlap.Load(); n > 0 {
		t.Errorf("%d callbacks ran while the error handler was running, on another goroutine", n)
	}
	checkNoGoroutines(t)
}

// startDialAttemptsSeen is how many "connecting" errors a Start of one connection to a closed
// port reports (startDialAttempts).
const startDialAttemptsSeen = 3

// go c.Stop() from the error handler while Start is still dialing an unreachable gateway.
func TestStopReviewStopFromErrorHandlerDuringStartDial(t *testing.T) {
	addr := closedAddr(t)
	var c *apns.Client
	var once sync.Once
	stopped := make(chan struct{})
	cert, key := apnstest.ClientCertPEM()
	c, err := apns.CreateClient(addr, cert, key, true, apns.WithProtocol(apns.ProtocolHTTP2),
		apns.WithErrorHandler(func(error) { once.Do(func() { go func() { c.Stop(); close(stopped) }() }) }))
	if err != nil {
		t.Fatal(err)
	}
	l := newLedger(c)
	sendAll(t, c, 3)
	startDone := make(chan error, 1)
	go func() { startDone <- c.Start(2) }()
	select {
	case <-stopped:
	case <-time.After(attackGuard):
		t.Fatal("Stop from the error handler during Start did not return")
	}
	select {
	case err := <-startDone:
		if err == nil {
			t.Error("Start succeeded against a closed port")
		}
	case <-time.After(attackGuard):
		t.Fatal("Start did not return")
	}
	stop(t, c)
	checkNoGoroutines(t)
	if got := l.snapshot(); len(got) != 3 {
		t.Errorf("callbacks for %d notifications; want 3", len(got))
	}
	if st := c.Stats(); st.Accepted != 3 || st.Unsent != 3 {
		t.Errorf("Stats = %+v; want 3 accepted, 3 unsent", st)
	}
}

// A provider token that cannot be signed once, then can: the one notification is reported
// unsent (nothing sent, no drop), the later ones and a Push go through, and the ledger adds up.
func TestStopReviewProviderTokenFailsOnceThenWorks(t *testing.T) {
	key, p8 := apns.NewTestAuthKey(t)
	s := newH2Server(t, func(s *apnstest.HTTP2Server) {
		s.Keys = map[string]*ecdsa.PublicKey{"KEY1234567": &key.PublicKey}
	})
	var handlerErrs atomic.Int32
	c, err := apns.CreateTokenClient(s.URL, p8, "KEY1234567", "TEAM123456", "com.example.app",
		apns.WithTLSConfig(s.ClientTLSConfig()), apns.WithErrorHandler(func(error) { handlerErrs.Add(1) }))
	if err != nil {
		t.Fatal(err)
	}
	stopAfter(t, c)
	mend := apns.BreakProviderTokenKeyFor(c)
	rej := recordRejections(c)
	start(t, c, 1)
	if err := c.Send(token(0), time.Time{}, apns.PRIORITY_IMMEDIATE, payload(0)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(attackGuard)
	for len(rej.snapshot()[token(0)]) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the notification sent with a broken key was never reported")
		}
		time.Sleep(5 * time.Millisecond)
	}
	mend()
	sendAll(t, c, 4) // token 0 again, and 1..3
	ctx, cancel := context.WithTimeout(context.Background(), attackGuard)
	defer cancel()
	if resp, err := c.Push(ctx, &apns.Notification{DeviceToken: token(9), Payload: payload(9)}); err != nil || !resp.Sent() {
		t.Errorf("Push after the key was mended = %+v, %v; want sent", resp, err)
	}
	stop(t, c)
	st := c.Stats()
	if st.Accepted != 5 || st.Delivered != 4 || st.Unsent != 1 || st.Drops != 0 || st.Duplicates != 0 || st.Replayed != 0 {
		t.Errorf("Stats = %+v; want Accepted 5, Delivered 4, Unsent 1, no drop, duplicate or replay", st)
	}
	if n := s.Count(); n != 5 {
		t.Errorf("server accepted %d; want 5 (4 queued after the mend, 1 Push)", n)
	}
	if got := rej.snapshot(); len(got) != 1 || len(got[token(0)]) != 1 {
		t.Errorf("rejections = %v; want one, for the first token 0", got)
	}
	if handlerErrs.Load() < 1 {
		t.Error("the error handler never heard of the signing failure")
	}
}

// PROTOCOL.md §1.4 (binary frame, item 5): "Using 10 for a push whose only key is
// content-available is an error." Send writes such a push at 5 over the binary protocol too,
// as over HTTP/2 (issue 10 item 8); a payload with anything else in aps keeps its priority.
func TestStopReviewBinaryBackgroundPushAtPriority10(t *testing.T) {
	s := newServer(t)
	c := newClient(t, s)
	for i, tc := range []struct {
		prio    uint8
		payload map[string]any
	}{
		{apns.PRIORITY_IMMEDIATE, map[string]any{"aps": map[string]any{"content-available": 1}}},
		{apns.PRIORITY_IMMEDIATE, map[string]any{"aps": map[string]any{"content-available": 1, "alert": "x"}}},
		{apns.PRIORITY_DELAYED, map[string]any{"aps": map[string]any{"content-available": 1}}},
		{apns.PRIORITY_IMMEDIATE, map[string]any{"aps": map[string]any{"content-available": 1}, "extra": "data"}},
	} {
		if err := c.Send(token(i), time.Now().Add(time.Hour), tc.prio, tc.payload); err != nil {
			t.Fatal(err)
		}
	}
	start(t, c, 1)
	if !s.WaitCount(4, attackGuard) {
		t.Fatal("not received")
	}
	stop(t, c)
	want := map[string]uint8{token(0): 5, token(1): 10, token(2): 5, token(3): 5}
	for _, n := range s.Notifications() {
		if tok := hexOf(n.Token); n.Priority != want[tok] {
			t.Errorf("token %s written at priority %d; want %d (PROTOCOL.md §1.4: 10 is an error for a push with only content-available)", tok[len(tok)-1:], n.Priority, want[tok])
		}
	}
}

// Two consumers wait in GetBadTokens while Stop ends a held poll: the poll's tuples reach
// exactly one of them, once; both then get ErrFeedbackStopped; nothing is left behind.
func TestStopReviewTwoConsumersAcrossStopDuringAPoll(t *testing.T) {
	fs, tlsConf := newHoldingFeedback(t, feedbackTuples(1, 2, 3))
	gw := newServer(t)
	cfg := gw.ClientTLSConfig().Clone() // trusts the gateway and, below, the feedback service
	cfg.RootCAs = tlsConf.RootCAs.Clone()
	cfg.RootCAs.AddCert(gw.Certificate())
	c := newClient(t, gw, apns.WithTLSConfig(cfg))
	fc, err := c.SetupFeedbackClient(fs.addr, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	start(t, c, 1) // so that Start says ErrAlreadyStarted until Stop begins, then ErrStopped
	var mu sync.Mutex
	got := map[string]int{}
	ends := make(chan error, 2)
	for g := 0; g < 2; g++ {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), attackGuard)
			defer cancel()
			for {
				toks, err := fc.BadTokens(ctx)
				if err != nil {
					ends <- err
					return
				}
				mu.Lock()
				for _, bt := range toks {
					got[bt.Token]++
				}
				mu.Unlock()
			}
		}()
	}
	select {
	case <-fs.polled:
	case <-time.After(attackGuard):
		t.Fatal("no poll")
	}
	stopped := make(chan struct{})
	go func() { defer close(stopped); c.Stop() }()
	// Let the service answer once Stop has begun (Start says ErrStopped then).
	deadline := time.Now().Add(attackGuard)
	for c.Start(1) != apns.ErrStopped && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	fs.letGo()
	guard(t, "Stop", func() { <-stopped })
	for i := 0; i < 2; i++ {
		select {
		case err := <-ends:
			if !errors.Is(err, apns.ErrFeedbackStopped) {
				t.Errorf("a consumer ended with %v; want ErrFeedbackStopped", err)
			}
		case <-time.After(attackGuard):
			t.Fatal("a consumer never ended")
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for _, i := range []int{1, 2, 3} {
		if got[token(i)] != 1 {
			t.Errorf("token %d returned %d times; want 1", i, got[token(i)])
		}
	}
}

// Shutdown's deadline bounds the feedback grace: with a poll held by the service, Shutdown
// with a 100ms deadline cuts the poll when the deadline ends instead of giving it
// FeedbackStopGrace (2 s), and returns DeadlineExceeded. (The bound checked is the grace, 20
// times the deadline: a busy machine does not reach it.)
func TestStopReviewShutdownDeadlineWithAHeldFeedbackPoll(t *testing.T) {
	fs, tlsConf := newHoldingFeedback(t)
	gw := newServer(t)
	cfg := gw.ClientTLSConfig().Clone()
	cfg.RootCAs = tlsConf.RootCAs.Clone()
	cfg.RootCAs.AddCert(gw.Certificate())
	c := newClient(t, gw, apns.WithTLSConfig(cfg))
	start(t, c, 1)
	if _, err := c.SetupFeedbackClient(fs.addr, time.Hour); err != nil {
		t.Fatal(err)
	}
	select {
	case <-fs.polled:
	case <-time.After(attackGuard):
		t.Fatal("no poll")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	begin := time.Now()
	var err error
	guard(t, "Shutdown", func() { err = c.Shutdown(ctx) })
	if d := time.Since(begin); d >= apns.FeedbackStopGrace {
		t.Errorf("Shutdown with a 100ms deadline took %v (>= FeedbackStopGrace) and returned %v: the feedback grace ignores its context", d.Round(time.Millisecond), err)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown that cut a feedback poll = %v; want DeadlineExceeded", err)
	}
}

// Shutdown's deadline ends a request that the gateway has received in full (headers and body)
// and is answering slowly. The client reports it with StatusUnknown and Reason "no answer" and
// counts it in Stats.Unsent, whose doc says "the client gave up before the gateway took
// them"; the gateway took it and may deliver it. The binary transport counts such a
// notification in Unconfirmed with Reason "unknown (possibly delivered)". (Argued: Unconfirmed
// is documented for binary only; the HTTP/2 rejection cannot tell "never sent" from "possibly
// delivered".)
func TestHTTP2RequestAbortedInFlightIsUnconfirmedNotUnsent(t *testing.T) {
	received := make(chan struct{}, 1)
	s := newH2Server(t, nil)
	s.RespondFunc(func(apnstest.Request) *apnstest.Response {
		select {
		case received <- struct{}{}:
		default:
		}
		return &apnstest.Response{Delay: 3 * attackGuard}
	})
	c := newH2Client(t, s)
	rej := recordRejections(c)
	start(t, c, 1)
	sendAll(t, c, 1)
	select {
	case <-received: // the whole request, body included, has reached the gateway
	case <-time.After(attackGuard):
		t.Fatal("no request")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	guard(t, "Shutdown", func() { c.Shutdown(ctx) })
	stop(t, c) // Shutdown past its deadline does not wait for the callbacks; Stop does
	st := c.Stats()
	got := rej.snapshot()[token(0)]
	if st.Unsent != 0 || st.Unconfirmed != 1 || len(got) != 1 || got[0].Reason == "no answer" {
		reason := ""
		if len(got) > 0 {
			reason = got[0].Reason
		}
		t.Errorf("a request the gateway received, then aborted by Shutdown: Unsent %d, Unconfirmed %d, Reason %q; want Unconfirmed 1 and a reason that says it may have been delivered", st.Unsent, st.Unconfirmed, reason)
	}
}
