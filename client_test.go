package apns_test

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"maps"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	apns "github.com/Kwik-messenger/apns-go"
	"github.com/Kwik-messenger/apns-go/apnstest"
)

func newServer(t *testing.T) *apnstest.Server {
	t.Helper()
	s := apnstest.NewServer()
	t.Cleanup(s.Close)
	return s
}

// newClient returns a client for s that trusts its certificate, with a short assume-sent
// timeout, and checks after the test that Stop left no goroutine behind.
func newClient(t *testing.T, s *apnstest.Server, opts ...apns.Option) *apns.Client {
	t.Helper()
	cert, key := apnstest.ClientCertPEM()
	opts = append([]apns.Option{
		apns.WithTLSConfig(s.ClientTLSConfig()),
		apns.WithAssumeSentTimeout(150 * time.Millisecond),
	}, opts...)
	c, err := apns.CreateClient(s.Addr, cert, key, false, opts...)
	if err != nil {
		t.Fatal(err)
	}
	stopAfter(t, c)
	return c
}

// token returns the hex device token of notification i.
func token(i int) string {
	var b [32]byte
	binary.BigEndian.PutUint64(b[24:], uint64(i))
	b[0] = 0xa0
	return hex.EncodeToString(b[:])
}

func payload(i int) map[string]interface{} {
	return map[string]interface{}{"aps": map[string]interface{}{"alert": "hello"}, "n": i}
}

// ledger records the callbacks a client made.
type ledger struct {
	mu     sync.Mutex
	calls  map[string][]uint8 // hex token -> codes
	frames map[string]*apns.Message
}

func newLedger(c *apns.Client) *ledger {
	l := &ledger{calls: map[string][]uint8{}, frames: map[string]*apns.Message{}}
	c.SetCallback(func(m *apns.Message, code uint8) {
		l.mu.Lock()
		defer l.mu.Unlock()
		tok := hex.EncodeToString(m.Token)
		l.calls[tok] = append(l.calls[tok], code)
		l.frames[tok] = m
	})
	return l
}

func (l *ledger) snapshot() map[string][]uint8 {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string][]uint8, len(l.calls))
	for k, v := range l.calls {
		out[k] = v
	}
	return out
}

// received counts the notifications the server accepted, by hex token.
func received(s *apnstest.Server) map[string]int {
	got := map[string]int{}
	for _, n := range s.Notifications() {
		got[hex.EncodeToString(n.Token)]++
	}
	return got
}

// sendAll sends notifications 0..n-1, failing the test if one is refused or if Send blocks
// for waitGuard (a client whose workers have stalled).
func sendAll(t *testing.T, c *apns.Client, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), waitGuard)
		err := c.SendContext(ctx, token(i), time.Now().Add(time.Hour), apns.PRIORITY_IMMEDIATE, payload(i))
		cancel()
		if err != nil {
			t.Fatalf("Send(%d): %v; stats %+v", i, err, c.Stats())
		}
	}
}

// checkAllArrived fails unless every token 0..n-1 not in skip arrived, exactly once when
// exactly is set.
func checkAllArrived(t *testing.T, s *apnstest.Server, n int, skip map[string]bool, exactly bool) {
	t.Helper()
	got := received(s)
	missing, dup := 0, 0
	for i := 0; i < n; i++ {
		k := got[token(i)]
		switch {
		case skip[token(i)]:
			if k != 0 {
				t.Errorf("rejected token %d arrived %d times", i, k)
			}
		case k == 0:
			missing++
		case k > 1:
			dup++
		}
	}
	if missing > 0 {
		t.Errorf("%d of %d notifications never arrived", missing, n)
	}
	if exactly && dup > 0 {
		t.Errorf("%d notifications arrived more than once", dup)
	}
}

func TestREADMEFlowDeliversEveryNotificationOnce(t *testing.T) {
	s := newServer(t)
	c := newClient(t, s)
	l := newLedger(c)
	if err := c.Start(5); err != nil {
		t.Fatal(err)
	}
	const n = 10000
	sendAll(t, c, n)
	stop(t, c)
	checkAllArrived(t, s, n, nil, true)
	if calls := l.snapshot(); len(calls) != 0 {
		t.Errorf("callback called for %d tokens; want none", len(calls))
	}
	st := c.Stats()
	if st.Accepted != n || st.Delivered != n || st.Rejected != 0 || st.Replayed != 0 {
		t.Errorf("stats = %+v; want %d accepted and delivered, nothing else", st, n)
	}
	if got := s.Conns(); got < 5 {
		t.Errorf("server saw %d connections; want at least 5", got)
	}
}

func TestRejectedNotificationsReachCallbackOnceAndTheRestArriveOnce(t *testing.T) {
	parallel(t)
	s := newServer(t)
	const n = 10000
	bad := map[string]bool{}
	for i := 0; i < n; i += 100 {
		s.RejectToken(token(i), 8)
		bad[token(i)] = true
	}
	// A gateway that reads frames later than the assume-sent timeout after they were written
	// and then rejects an earlier one loses the later ones: the binary protocol's limit. On a
	// loaded machine the mock's reader can lag far behind, so this test, which counts every
	// arrival, gives it seconds; the sentinel still ends Stop at once.
	c := newClient(t, s, apns.WithAssumeSentTimeout(5*time.Second))
	l := newLedger(c)
	if err := c.Start(4); err != nil {
		t.Fatal(err)
	}
	sendAll(t, c, n)
	stop(t, c)
	calls := l.snapshot()
	for tok := range bad {
		if codes := calls[tok]; len(codes) != 1 || codes[0] != 8 {
			t.Errorf("token %s: callback codes %v; want [8]", tok[56:], codes)
		}
	}
	if len(calls) != len(bad) {
		t.Errorf("callback called for %d tokens; want %d", len(calls), len(bad))
	}
	// The message handed to the callback is the one that was sent.
	m := l.frames[token(100)]
	if m == nil || m.Priority != apns.PRIORITY_IMMEDIATE || !strings.Contains(string(m.Payload), `"n":100`) {
		t.Errorf("callback message = %+v", m)
	}
	checkAllArrived(t, s, n, bad, true)
	st := c.Stats()
	if st.Rejected != uint64(len(bad)) || st.Delivered+st.Rejected != n || st.Duplicates != 0 {
		t.Errorf("stats = %+v", st)
	}
}

func TestSendBeforeStartIsQueued(t *testing.T) {
	s := newServer(t)
	c := newClient(t, s)
	sendAll(t, c, 100)
	if got := s.Count(); got != 0 {
		t.Fatalf("server got %d notifications before Start", got)
	}
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	stop(t, c)
	checkAllArrived(t, s, 100, nil, true)
}

func TestConnectionEndsAreRecoveredWithoutLoss(t *testing.T) {
	cases := []struct {
		name    string
		script  apnstest.ConnScript
		exactly bool // whether the end tells the client exactly what was delivered
		drops   bool // whether the client must count a lost connection
	}{
		{"drop without error response", apnstest.ConnScript{After: 300, Drop: true}, false, true},
		{"status 10 shutdown", apnstest.ConnScript{After: 300, Shutdown: true}, true, false},
		{"garbage bytes", apnstest.ConnScript{After: 300, Garbage: []byte("HTTP/1.1 400\r\n")}, false, true},
		{"truncated error response", apnstest.ConnScript{After: 300, Garbage: []byte{8, 8, 0}}, false, true},
		{"short stall", apnstest.ConnScript{After: 300, Stall: 50 * time.Millisecond}, true, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newServer(t)
			s.Script(tc.script, tc.script)
			c := newClient(t, s)
			l := newLedger(c)
			if err := c.Start(1); err != nil {
				t.Fatal(err)
			}
			const n = 2000
			sendAll(t, c, n)
			stop(t, c)
			checkAllArrived(t, s, n, nil, tc.exactly)
			if calls := l.snapshot(); len(calls) != 0 {
				t.Errorf("callback called for %d tokens; want none", len(calls))
			}
			st := c.Stats()
			if st.Delivered != n {
				t.Errorf("stats = %+v; want %d delivered", st, n)
			}
			if tc.drops && (st.Drops == 0 || st.Duplicates == 0) {
				t.Errorf("stats = %+v; want drops and duplicates counted", st)
			}
			if tc.name == "status 10 shutdown" && (st.Replayed == 0 || st.Reconnects == 0) {
				t.Errorf("stats = %+v; want replays after the shutdown", st)
			}
		})
	}
}

func TestUnknownIDIsReportedAndInflightReplayed(t *testing.T) {
	s := newServer(t)
	// A well-formed error response naming an identifier the client never used.
	s.Script(apnstest.ConnScript{After: 100, Garbage: []byte{8, 8, 0xff, 0xff, 0xff, 0xf0}})
	var mu sync.Mutex
	var errs []error
	c := newClient(t, s, apns.WithErrorHandler(func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
	}))
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	sendAll(t, c, 500)
	stop(t, c)
	checkAllArrived(t, s, 500, nil, false)
	mu.Lock()
	defer mu.Unlock()
	var re *apns.ResponseError
	found := false
	for _, err := range errs {
		if errors.As(err, &re) && re.ID == 0xfffffff0 && re.Status == apns.StatusInvalidToken {
			found = errors.Is(err, apns.ErrUnknownID)
		}
	}
	if !found || c.Stats().UnknownIDs != 1 {
		t.Errorf("errors %v, stats %+v; want one ResponseError for id 0xfffffff0", errs, c.Stats())
	}
}

func TestStartFailsCleanlyWhenGatewayRefusesHandshakes(t *testing.T) {
	s := newServer(t)
	refuse := apnstest.ConnScript{RefuseHandshake: true}
	s.Script(refuse, refuse, refuse)
	c := newClient(t, s)
	if err := c.Start(1); err == nil {
		t.Fatal("Start succeeded although every handshake was refused")
	}
	checkNoGoroutines(t)
	// The next attempt finds a willing server.
	if err := c.Start(1); err != nil {
		t.Fatalf("second Start: %v", err)
	}
	sendAll(t, c, 10)
	stop(t, c)
	checkAllArrived(t, s, 10, nil, true)
}

func TestWorkerReconnectsAfterRefusedHandshakes(t *testing.T) {
	s := newServer(t)
	refuse := apnstest.ConnScript{RefuseHandshake: true}
	// The first connection is dropped; the next two attempts are refused; then all is well.
	s.Script(apnstest.ConnScript{After: 100, Drop: true}, refuse, refuse)
	c := newClient(t, s)
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	sendAll(t, c, 1000)
	stop(t, c)
	checkAllArrived(t, s, 1000, nil, false)
	if st := c.Stats(); st.Reconnects == 0 || st.Delivered != 1000 {
		t.Errorf("stats = %+v", st)
	}
}

func TestStopReportsWhatCouldNotBeWritten(t *testing.T) {
	s := newServer(t)
	c := newClient(t, s)
	l := newLedger(c)
	sendAll(t, c, 20) // never started
	stop(t, c)
	calls := l.snapshot()
	for i := 0; i < 20; i++ {
		if codes := calls[token(i)]; len(codes) != 1 || codes[0] != uint8(apns.StatusUnknown) {
			t.Errorf("token %d: codes %v; want [255]", i, codes)
		}
	}
	if st := c.Stats(); st.Unsent != 20 {
		t.Errorf("stats = %+v; want 20 unsent", st)
	}
}

func TestSendAfterStopReturnsErrStoppedAndStopIsIdempotent(t *testing.T) {
	s := newServer(t)
	c := newClient(t, s)
	if err := c.Start(2); err != nil {
		t.Fatal(err)
	}
	stop(t, c)
	stop(t, c) // a second Stop returns at once, without error
	err := c.Send(token(1), time.Time{}, apns.PRIORITY_IMMEDIATE, payload(1))
	if !errors.Is(err, apns.ErrStopped) {
		t.Errorf("Send after Stop = %v; want ErrStopped", err)
	}
	if err := c.Start(1); !errors.Is(err, apns.ErrStopped) {
		t.Errorf("Start after Stop = %v; want ErrStopped", err)
	}
}

func TestSendRejectsBadInputWithItsOwnError(t *testing.T) {
	s := newServer(t)
	c := newClient(t, s)
	cases := map[error]error{
		apns.ErrTokenNotHex:     c.Send(strings.Repeat("g", 64), time.Time{}, 10, payload(0)),
		apns.ErrTokenLength:     c.Send("abcd", time.Time{}, 10, payload(0)),
		apns.ErrInvalidPriority: c.Send(token(0), time.Time{}, 7, payload(0)),
		apns.ErrPayloadMarshal:  c.Send(token(0), time.Time{}, 10, map[string]interface{}{"f": func() {}}),
		apns.ErrPayloadTooLarge: c.Send(token(0), time.Time{}, 10, map[string]interface{}{"a": strings.Repeat("x", 3000)}),
	}
	for want, got := range cases {
		if !errors.Is(got, want) {
			t.Errorf("got %v; want %v", got, want)
		}
	}
	if st := c.Stats(); st.Accepted != 0 {
		t.Errorf("accepted %d bad notifications", st.Accepted)
	}
}

func TestSendBlocksOnAFullQueueUntilItsContextEnds(t *testing.T) {
	s := newServer(t)
	c := newClient(t, s, apns.WithQueueSize(1))
	l := newLedger(c)
	if err := c.Send(token(0), time.Time{}, 10, payload(0)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := c.SendContext(ctx, token(1), time.Time{}, 10, payload(1)); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("SendContext on a full queue = %v; want DeadlineExceeded", err)
	}
	// A Send blocked on the full queue returns ErrStopped when Stop begins.
	blocked := make(chan error, 1)
	go func() { blocked <- c.Send(token(2), time.Time{}, 10, payload(2)) }()
	waitBlocked(t, "apns-go.enqueue", "select")
	stop(t, c)
	if err := receive(t, "the blocked Send to return", blocked); !errors.Is(err, apns.ErrStopped) {
		t.Errorf("blocked Send = %v; want ErrStopped", err)
	}
	if calls := l.snapshot(); len(calls) != 1 {
		t.Errorf("callbacks for %d tokens; want 1 (the queued, never-started one)", len(calls))
	}
}

func TestServerCertificateIsVerifiedUnlessAnyServerCert(t *testing.T) {
	parallel(t)
	s := newServer(t)
	cert, key := apnstest.ClientCertPEM()
	strict, err := apns.CreateClient(s.Addr, cert, key, false, apns.WithDialTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	stopAfter(t, strict)
	if err := strict.Start(1); err == nil {
		t.Fatal("Start trusted an unknown CA")
	}
	stop(t, strict)

	lax, err := apns.CreateClient(s.Addr, cert, key, true, apns.WithAssumeSentTimeout(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	stopAfter(t, lax)
	if err := lax.Start(1); err != nil {
		t.Fatalf("Start with anyServerCert: %v", err)
	}
	stop(t, lax)
}

func TestClientCertificateIsPresented(t *testing.T) {
	s := newServer(t) // requires a client certificate by default
	c := newClient(t, s)
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	sendAll(t, c, 10)
	stop(t, c)
	checkAllArrived(t, s, 10, nil, true)
}

func TestIdleConnectionIsReplaced(t *testing.T) {
	s := newServer(t)
	c := newClient(t, s, apns.WithIdleTimeout(300*time.Millisecond))
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	sendAll(t, c, 10)
	waitFor(t, "the idle connection to be replaced", func() bool { return s.Conns() >= 2 })
	sendAll(t, c, 20)
	stop(t, c)
	if got := s.Count(); got != 30 {
		t.Errorf("server got %d notifications; want 30", got)
	}
}

func TestSmallInflightBudgetStillDeliversEverything(t *testing.T) {
	s := newServer(t)
	c := newClient(t, s, apns.WithInflightBytes(1), apns.WithAssumeSentTimeout(5*time.Millisecond))
	if err := c.Start(2); err != nil {
		t.Fatal(err)
	}
	sendAll(t, c, 300)
	stop(t, c)
	checkAllArrived(t, s, 300, nil, true)
}

func TestGatewayAddressForms(t *testing.T) {
	for _, addr := range []string{"gateway.push.apple.com", "gateway.push.apple.com:2195", "[::1]:2195", "[::1]", "::1", "127.0.0.1"} {
		if _, err := apns.CreateClient(addr, nil, nil, false); err != nil {
			t.Errorf("CreateClient(%q): %v", addr, err)
		}
	}
	for _, addr := range []string{"", ":2195"} {
		if _, err := apns.CreateClient(addr, nil, nil, false); err == nil {
			t.Errorf("CreateClient(%q) succeeded", addr)
		}
	}
	if _, err := apns.CreateClient("localhost", []byte("not pem"), []byte("x"), false); err == nil {
		t.Error("CreateClient accepted a bad certificate")
	}
}

func TestFeedbackTokensReachGetBadTokensAndStopEndsPolling(t *testing.T) {
	s := newServer(t)
	fs := apnstest.NewFeedbackServer()
	defer fs.Close()
	tok1, _ := hex.DecodeString(token(1))
	tok2, _ := hex.DecodeString(token(2))
	fs.Add(tok1, time.Unix(1600000000, 0))
	fs.Add(tok2, time.Unix(1600000001, 0))
	fs.AddRaw([]byte{0, 0, 0, 1, 0}) // a truncated tuple after two good ones

	errc := make(chan error, 10)
	c := newClient(t, s, apns.WithErrorHandler(func(err error) { errc <- err }))
	fc, err := c.SetupFeedbackClient(fs.Addr, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	got, err := fc.GetBadTokens()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Token != token(1) || !got[1].Timestamp.Equal(time.Unix(1600000001, 0)) {
		t.Errorf("GetBadTokens = %+v", got)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, apns.ErrMalformedFeedback) {
			t.Errorf("error handler got %v; want ErrMalformedFeedback", err)
		}
	case <-time.After(waitGuard):
		t.Error("the malformed tuple was not reported")
	}
	stop(t, c)
	if _, err := fc.GetBadTokens(); !errors.Is(err, apns.ErrFeedbackStopped) {
		t.Errorf("GetBadTokens after Stop = %v; want ErrFeedbackStopped", err)
	}
	if _, err := c.SetupFeedbackClient(fs.Addr, time.Hour); !errors.Is(err, apns.ErrStopped) {
		t.Errorf("SetupFeedbackClient after Stop = %v; want ErrStopped", err)
	}
}

func TestFailedFeedbackPollIsRetriedNextInterval(t *testing.T) {
	s := newServer(t)
	fs := apnstest.NewUnstartedFeedbackServer()
	fs.Start()
	addr := fs.Addr
	fs.Close() // the first polls find nobody listening

	errc := make(chan error, 100)
	c := newClient(t, s, apns.WithErrorHandler(func(err error) {
		select {
		case errc <- err:
		default:
		}
	}))
	fc, err := c.SetupFeedbackClient(addr, 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-errc:
	case <-time.After(waitGuard):
		t.Fatal("the failed poll was not reported")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := fc.BadTokens(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("BadTokens with nothing to read = %v; want DeadlineExceeded", err)
	}
}

func TestStopGivesUpOnAnUnreachableGatewayAndReportsUnsent(t *testing.T) {
	parallel(t)
	s := apnstest.NewServer()
	connecting := make(chan struct{}, 1)
	c := newClient(t, s, apns.WithErrorHandler(func(err error) {
		if strings.Contains(err.Error(), "connecting") {
			select {
			case connecting <- struct{}{}:
			default:
			}
		}
	}))
	l := newLedger(c)
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	s.Close()
	select {
	case <-connecting: // the worker lost its connection and cannot get another
	case <-time.After(waitGuard):
		t.Fatal("the worker never tried to reconnect")
	}
	sendAll(t, c, 50)
	stop(t, c)
	calls := l.snapshot()
	for i := 0; i < 50; i++ {
		if codes := calls[token(i)]; len(codes) != 1 || codes[0] != uint8(apns.StatusUnknown) {
			t.Errorf("token %d: codes %v; want [255]", i, codes)
		}
	}
	if st := c.Stats(); st.Unsent != 50 || st.Accepted != 50 {
		t.Errorf("stats = %+v; want 50 accepted and unsent", st)
	}
}

func TestShutdownDeadlineEndsTheWaitAndReportsUnsent(t *testing.T) {
	s := apnstest.NewServer()
	c := newClient(t, s, apns.WithErrorHandler(func(error) {}))
	l := newLedger(c)
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	s.Close()
	sendAll(t, c, 50)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := shutdown(t, c, ctx); !errors.Is(err, context.DeadlineExceeded) && err != nil {
		t.Errorf("Shutdown = %v; want nil or DeadlineExceeded", err)
	}
	stop(t, c) // Shutdown whose deadline ended does not wait for the callbacks; Stop does
	st := c.Stats()
	if len(l.snapshot()) != int(st.Unsent+st.Unconfirmed) || st.Unsent+st.Unconfirmed+st.Delivered != 50 {
		t.Errorf("stats = %+v with %d callbacks; want every notification delivered or reported", st, len(l.snapshot()))
	}
}

func TestStopReturnsWhenTheGatewayKeepsDroppingConnections(t *testing.T) {
	s := newServer(t)
	drops := make([]apnstest.ConnScript, 1000)
	for i := range drops {
		drops[i] = apnstest.ConnScript{After: 1, Drop: true}
	}
	s.Script(drops...)
	c := newClient(t, s, apns.WithErrorHandler(func(error) {}))
	l := newLedger(c)
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	sendAll(t, c, 3)
	stop(t, c) // fails the test if Stop does not return
	got, calls := received(s), l.snapshot()
	for i := 0; i < 3; i++ {
		if got[token(i)] == 0 && len(calls[token(i)]) != 1 {
			t.Errorf("token %d neither arrived nor was reported", i)
		}
	}
}

func TestShutdownDeadlineInterruptsABlockedWrite(t *testing.T) {
	s := newServer(t)
	s.Script(apnstest.ConnScript{Stall: time.Hour}) // reads nothing, ever
	c := newClient(t, s, apns.WithInflightBytes(64<<20), apns.WithWriteTimeout(time.Hour),
		apns.WithQueueSize(20000), apns.WithErrorHandler(func(error) {}))
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("x", 1900)
	for i := 0; i < 10000; i++ {
		if err := c.Send(token(i), time.Time{}, 10, map[string]interface{}{"p": big}); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	// shutdown fails the test if Shutdown waits for a write that the server never reads.
	if err := shutdown(t, c, ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %v; want DeadlineExceeded", err)
	}
	st := c.Stats()
	if st.Delivered+st.Rejected+st.Unsent != 10000 {
		t.Errorf("stats %+v: not every notification accounted for", st)
	}
}

func TestShutdownStatusNamingNoFrameReplaysEverything(t *testing.T) {
	s := newServer(t)
	s.Script(apnstest.ConnScript{Shutdown: true}) // status 10 before accepting any frame: id 0
	c := newClient(t, s)
	l := newLedger(c)
	sendAll(t, c, 5)
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	stop(t, c)
	checkAllArrived(t, s, 5, nil, true)
	if calls := l.snapshot(); len(calls) != 0 {
		t.Errorf("callbacks %v; want none", calls)
	}
}

// Stop does not wait out the assume-sent timeout (an hour here): each worker ends with a
// sentinel frame the gateway rejects, which confirms every frame before it. The sentinel never
// reaches the callback, and a real rejection before it is still reported.
func TestStopConfirmsWithASentinelInsteadOfWaiting(t *testing.T) {
	s := newServer(t)
	s.RejectToken(token(50), 8)
	c := newClient(t, s, apns.WithAssumeSentTimeout(time.Hour))
	l := newLedger(c)
	if err := c.Start(2); err != nil {
		t.Fatal(err)
	}
	sendAll(t, c, 200)
	stop(t, c) // would take an hour without the sentinel
	if calls := l.snapshot(); len(calls) != 1 || len(calls[token(50)]) != 1 {
		t.Errorf("callbacks %v; want token 50 once", calls)
	}
	checkAllArrived(t, s, 200, map[string]bool{token(50): true}, true)
	if st := c.Stats(); st.Delivered != 199 || st.Rejected != 1 || st.Unsent != 0 {
		t.Errorf("stats %+v", st)
	}
	if s.Sentinels() == 0 {
		t.Error("the gateway saw no sentinel frame")
	}
}

// Stats splits rejections by status and shows the queue, the notifications in flight and
// the open connections.
func TestStatsSplitRejectionsAndShowGauges(t *testing.T) {
	s := newServer(t)
	for i, status := range map[int]uint8{3: 8, 7: 8, 11: 8, 13: 7} {
		s.RejectToken(token(i), status)
	}
	c := newClient(t, s)
	sendAll(t, c, 20) // before Start: all queued
	if st := c.Stats(); st.Queued != 20 || st.InFlight != 0 || st.Connections != 0 || st.Accepted != 20 {
		t.Errorf("before Start: %+v", st)
	}
	if err := c.Start(2); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "two connections up", func() bool { return c.Stats().Connections == 2 })
	stop(t, c)
	st := c.Stats()
	want := map[apns.Status]uint64{8: 3, 7: 1}
	if !maps.Equal(st.RejectedByStatus, want) || st.Rejected != 4 || st.Delivered != 16 {
		t.Errorf("after Stop: RejectedByStatus %v, stats %+v; want %v", st.RejectedByStatus, st, want)
	}
	if st.Queued != 0 || st.InFlight != 0 || st.Connections != 0 {
		t.Errorf("gauges after Stop: %+v", st)
	}
}

// ReadFeedback reads the service once, without Start: the tokens it has, then none.
func TestReadFeedbackReadsOnceWithoutStart(t *testing.T) {
	s := newServer(t)
	fs := apnstest.NewFeedbackServer()
	defer fs.Close()
	tok, _ := hex.DecodeString(token(7))
	fs.Add(tok, time.Unix(1600000000, 0))
	c := newClient(t, s)
	got, err := c.ReadFeedback(context.Background(), fs.Addr)
	if err != nil || len(got) != 1 || got[0].Token != token(7) || !got[0].Timestamp.Equal(time.Unix(1600000000, 0)) {
		t.Errorf("first ReadFeedback = %+v, %v", got, err)
	}
	if got, err := c.ReadFeedback(context.Background(), fs.Addr); err != nil || len(got) != 0 {
		t.Errorf("second ReadFeedback = %+v, %v; want nothing: the service forgets what it sent", got, err)
	}
}

// A worker's identifiers wrap from 2^32-1 to 1 while frames are in flight; a rejection of a
// frame written after the wrap is still matched to its frame: reported once, the frames
// before it delivered once, none written twice.
func TestRejectionAfterIdentifiersWrap(t *testing.T) {
	s := newServer(t)
	s.RejectToken(token(10), 8)
	c := newClient(t, s, apns.WithFirstID(math.MaxUint32-4), apns.WithAssumeSentTimeout(time.Hour))
	l := newLedger(c)
	sendAll(t, c, 20) // queued before Start: one connection writes them in order
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	stop(t, c)
	if calls := l.snapshot(); len(calls) != 1 || len(calls[token(10)]) != 1 {
		t.Errorf("callbacks %v; want token 10 once", calls)
	}
	checkAllArrived(t, s, 20, map[string]bool{token(10): true}, true)
	if st := c.Stats(); st.UnknownIDs != 0 || st.Delivered != 19 || st.Duplicates != 0 {
		t.Errorf("stats %+v", st)
	}
}
