package apns_test

// Tests of the silence detector (silence.go, issue 15): an HTTP/2 connection that goes silent
// with requests in flight (apnstest's SilenceClientConnections: bytes swallowed both ways, the
// socket kept open) is probed, closed, and its requests delivered through another connection;
// a connection that is merely slow answers the probe and is kept; an idle one is not probed.

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	apns "github.com/Kwik-messenger/apns-go"
	"github.com/Kwik-messenger/apns-go/apnstest"
)

// The detector's times in these tests: short, so that the tests are quick, and still well
// above what the mock needs to answer a PING on a busy machine.
const (
	testSilenceAfter   = 300 * time.Millisecond
	testSilenceTimeout = time.Second
)

// silenceServer returns a started mock that answers after latency and, through arrived,
// tells of each request it receives (before the latency).
func silenceServer(t *testing.T, latency time.Duration) (s *apnstest.HTTP2Server, arrived <-chan string) {
	t.Helper()
	ch := make(chan string, 100000)
	s = apnstest.NewUnstartedHTTP2Server()
	s.Latency = latency
	s.RespondFunc(func(r apnstest.Request) *apnstest.Response {
		ch <- r.Token
		return nil
	})
	s.Start()
	t.Cleanup(s.Close)
	return s, ch
}

// awaitArrivals waits until n requests have arrived at the mock, or fails the test.
func awaitArrivals(t *testing.T, arrived <-chan string, n int) {
	t.Helper()
	for range n {
		receive(t, "a request at the mock", arrived)
	}
}

// checkAllDelivered checks that every token in tokens reached the mock at least once and that
// the client's Duplicates cover the ones that reached it more than once.
func checkAllDelivered(t *testing.T, s *apnstest.HTTP2Server, c *apns.Client, tokens []string) {
	t.Helper()
	got := h2Received(s)
	extra := 0
	for _, tok := range tokens {
		switch n := got[tok]; {
		case n == 0:
			t.Errorf("token %s never reached the mock", tok)
		case n > 1:
			extra += n - 1
		}
	}
	if st := c.Stats(); st.Duplicates < uint64(extra) {
		t.Errorf("Duplicates = %d; the mock received %d notifications more than once", st.Duplicates, extra)
	}
}

// Connections go silent while notifications and a Push are in flight on them: every one is
// delivered through another connection, the Push caller gets its answer, the connections are
// counted and logged as silent, and duplicates are counted.
func TestSilentConnectionsRequestsGoToAnotherConnection(t *testing.T) {
	parallel(t)
	s, arrived := silenceServer(t, time.Second)
	var logs lockedBuffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	c := newH2Client(t, s, apns.WithLogger(logger), apns.WithSilenceTimes(testSilenceAfter, testSilenceTimeout))
	rej := recordRejections(c)
	if err := c.Start(2); err != nil {
		t.Fatal(err)
	}
	pushed := make(chan error, 1)
	pushToken := token(100000)
	go func() {
		resp, err := c.Push(context.Background(), &apns.Notification{DeviceToken: pushToken, Payload: []byte(`{"aps":{"alert":"p"}}`)})
		if err == nil && !resp.Sent() {
			err = &apns.Rejection{StatusCode: resp.StatusCode, Reason: resp.Reason}
		}
		pushed <- err
	}()
	const n = 200
	sendH2(t, c, 0, n)
	awaitArrivals(t, arrived, n+1) // all in flight: the mock answers a second after each arrived
	if got := s.SilenceClientConnections(); got != 2 {
		t.Fatalf("SilenceClientConnections silenced %d connections; want 2", got)
	}
	silenced := time.Now()
	if err := receive(t, "Push's answer", pushed); err != nil {
		t.Errorf("Push across the silence: %v", err)
	}
	stop(t, c)
	t.Logf("all delivered %v after the silence began", time.Since(silenced).Round(time.Millisecond))

	tokens := []string{pushToken}
	for i := range n {
		tokens = append(tokens, token(i))
	}
	checkAllDelivered(t, s, c, tokens)
	st := c.Stats()
	if st.Delivered != n || st.Unsent != 0 || st.Rejected != 0 { // Push answers its caller: not counted
		t.Errorf("Delivered %d, Unsent %d, Rejected %d; want %d, 0, 0", st.Delivered, st.Unsent, st.Rejected, n)
	}
	// Both connections were silenced; one that happened to carry no request is closed only
	// once the other's closing has it probed, which Stop may cut short.
	if st.SilentConns == 0 {
		t.Errorf("SilentConns = 0; want at least 1")
	}
	if st.Duplicates == 0 {
		t.Errorf("Duplicates = 0: the requests of the silent connections were not counted as possible duplicates")
	}
	if len(rej.got) != 0 {
		t.Errorf("rejections reported: %v", rej.got)
	}
	if l := logs.String(); !strings.Contains(l, "level=WARN msg=\"apns: connection closed as silent") {
		t.Errorf("no Warn log of a connection closed as silent in:\n%s", l)
	}
}

// Stop while connections are silent with notifications in flight returns once those have
// been delivered through another connection: it does not wait for the request timeout, and
// nothing is lost.
func TestStopDuringSilenceIsBoundedAndLosesNothing(t *testing.T) {
	parallel(t)
	s, arrived := silenceServer(t, time.Second)
	// A request timeout far above the test's guard: only the detector can end the requests
	// on the silent connections before Stop's guard fails the test.
	c := newH2Client(t, s, apns.WithWriteTimeout(time.Hour), apns.WithSilenceTimes(testSilenceAfter, testSilenceTimeout))
	rej := recordRejections(c)
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	const n = 100
	sendH2(t, c, 0, n)
	awaitArrivals(t, arrived, n)
	if got := s.SilenceClientConnections(); got != 1 {
		t.Fatalf("SilenceClientConnections silenced %d connections; want 1", got)
	}
	silenced := time.Now()
	stop(t, c) // fails the test if Stop waits out the request timeout
	took := time.Since(silenced)
	t.Logf("Stop returned %v after the silence began", took.Round(time.Millisecond))
	if took < testSilenceAfter {
		t.Errorf("Stop returned %v after the silence began, before the detector could act (%v)", took, testSilenceAfter)
	}
	tokens := make([]string, n)
	for i := range tokens {
		tokens[i] = token(i)
	}
	checkAllDelivered(t, s, c, tokens)
	if st := c.Stats(); st.Delivered != n || st.SilentConns != 1 {
		t.Errorf("Delivered %d, SilentConns %d; want %d, 1", st.Delivered, st.SilentConns, n)
	}
	if len(rej.got) != 0 {
		t.Errorf("rejections reported: %v", rej.got)
	}
}

// A server that takes longer to answer than the detector's silence and probe times together,
// but whose connection is alive, answers the probe's PING: its connection is not closed, and
// nothing is sent twice.
func TestSlowServerAnswersTheProbeAndKeepsItsConnection(t *testing.T) {
	parallel(t)
	s, _ := silenceServer(t, 2*(testSilenceAfter+testSilenceTimeout))
	var logs lockedBuffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	c := newH2Client(t, s, apns.WithLogger(logger), apns.WithSilenceTimes(testSilenceAfter, testSilenceTimeout))
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	const n = 50
	sendH2(t, c, 0, n)
	stop(t, c)
	st := c.Stats()
	if st.Delivered != n || st.SilentConns != 0 || st.Duplicates != 0 || st.Reconnects != 0 {
		t.Errorf("Delivered %d, SilentConns %d, Duplicates %d, Reconnects %d; want %d, 0, 0, 0",
			st.Delivered, st.SilentConns, st.Duplicates, st.Reconnects, n)
	}
	if l := logs.String(); !strings.Contains(l, "probing") {
		t.Errorf("the slow connection was never probed; log:\n%s", l)
	}
}

// An idle connection is left to net/http's health check (a PING after a minute without
// frames): the detector does not probe it.
func TestIdleConnectionIsNotProbed(t *testing.T) {
	parallel(t)
	s, _ := silenceServer(t, 0)
	var logs lockedBuffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	c := newH2Client(t, s, apns.WithLogger(logger), apns.WithSilenceTimes(testSilenceAfter/3, testSilenceTimeout))
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Push(context.Background(), &apns.Notification{DeviceToken: token(1), Payload: []byte(`{"aps":{"alert":"x"}}`)}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * testSilenceAfter) // idle for many times the silence: nothing may happen
	if l := logs.String(); strings.Contains(l, "probing") || strings.Contains(l, "silent") {
		t.Errorf("an idle connection was probed; log:\n%s", l)
	}
	stop(t, c)
	if st := c.Stats(); st.SilentConns != 0 || st.Reconnects != 0 {
		t.Errorf("SilentConns %d, Reconnects %d; want 0, 0", st.SilentConns, st.Reconnects)
	}
}
