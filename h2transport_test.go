package apns_test

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	apns "github.com/Kwik-messenger/apns-go"
	"github.com/Kwik-messenger/apns-go/apnstest"
)

func newH2Server(t *testing.T, setup func(*apnstest.HTTP2Server)) *apnstest.HTTP2Server {
	t.Helper()
	s := apnstest.NewUnstartedHTTP2Server()
	if setup != nil {
		setup(s)
	}
	s.Start()
	t.Cleanup(s.Close)
	return s
}

// newH2Client returns a certificate-auth client of s, checked for leaks after the test.
func newH2Client(t *testing.T, s *apnstest.HTTP2Server, opts ...apns.Option) *apns.Client {
	t.Helper()
	cert, key := apnstest.ClientCertPEM()
	opts = append([]apns.Option{apns.WithTLSConfig(s.ClientTLSConfig())}, opts...)
	c, err := apns.CreateClient(s.URL, cert, key, false, opts...)
	if err != nil {
		t.Fatal(err)
	}
	stopAfter(t, c)
	return c
}

func h2Received(s *apnstest.HTTP2Server) map[string]int {
	got := map[string]int{}
	for _, r := range s.Requests() {
		got[r.Token]++
	}
	return got
}

// rejections records what SetRejectionCallback reports, by token.
type rejections struct {
	mu  sync.Mutex
	got map[string][]*apns.Rejection
}

func recordRejections(c *apns.Client) *rejections {
	r := &rejections{got: map[string][]*apns.Rejection{}}
	c.SetRejectionCallback(func(rej *apns.Rejection) {
		r.mu.Lock()
		defer r.mu.Unlock()
		tok := hexOf(rej.Message.Token)
		r.got[tok] = append(r.got[tok], rej)
	})
	return r
}

func (r *rejections) snapshot() map[string][]*apns.Rejection {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string][]*apns.Rejection{}
	for k, v := range r.got {
		out[k] = v
	}
	return out
}

func hexOf(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, x := range b {
		out = append(out, digits[x>>4], digits[x&15])
	}
	return string(out)
}

func TestHTTP2READMEFlowDeliversEveryNotificationOnce(t *testing.T) {
	parallel(t)
	t.Run("certificate", func(t *testing.T) {
		s := newH2Server(t, func(s *apnstest.HTTP2Server) { s.RequireClientCert = true })
		checkREADMEFlowH2(t, s, newH2Client(t, s))
	})
	t.Run("token", func(t *testing.T) {
		key, p8 := apns.NewTestAuthKey(t)
		s := newH2Server(t, func(s *apnstest.HTTP2Server) {
			s.Keys = map[string]*ecdsa.PublicKey{"KEY1234567": &key.PublicKey}
		})
		c, err := apns.CreateTokenClient(s.URL, p8, "KEY1234567", "TEAM123456", "com.example.app",
			apns.WithTLSConfig(s.ClientTLSConfig()))
		if err != nil {
			t.Fatal(err)
		}
		stopAfter(t, c)
		checkREADMEFlowH2(t, s, c)
	})
}

func checkREADMEFlowH2(t *testing.T, s *apnstest.HTTP2Server, c *apns.Client) {
	l := newLedger(c)
	if err := c.Start(2); err != nil {
		t.Fatal(err)
	}
	const n = 10000
	sendAll(t, c, n)
	stop(t, c)
	got := h2Received(s)
	for i := 0; i < n; i++ {
		if k := got[token(i)]; k != 1 {
			t.Fatalf("token %d arrived %d times; want 1", i, k)
		}
	}
	if calls := l.snapshot(); len(calls) != 0 {
		t.Errorf("callback called for %d tokens; want none", len(calls))
	}
	if st := c.Stats(); st.Accepted != n || st.Delivered != n {
		t.Errorf("stats %+v", st)
	}
	if r := s.Requests()[0]; r.Priority != 10 || r.PushType != "alert" || r.Expiration == "" || r.ID == "" {
		t.Errorf("request %+v lacks the README's headers", r)
	}
}

func TestHTTP2RejectionsMapToBinaryCodesWithTheFullReason(t *testing.T) {
	ts := time.UnixMilli(1700000000123).UTC()
	scripted := map[int]apnstest.Response{
		1: {Status: 400, Reason: "BadDeviceToken"},
		2: {Status: 413, Reason: "PayloadTooLarge"},
		3: {Status: 400, Reason: "MissingTopic"},
		4: {Status: 410, Reason: "Unregistered", Timestamp: ts},
		5: {Status: 400, Reason: "SomethingAppleAddedLater"},
	}
	wantCode := map[int]uint8{1: 8, 2: 7, 3: 3, 4: 8, 5: 255}
	s := newH2Server(t, nil)
	for i, r := range scripted {
		s.Respond(token(i), r)
	}
	c := newH2Client(t, s)
	l := newLedger(c)
	rej := recordRejections(c)
	fc, err := c.SetupFeedbackClient("feedback.push.apple.com", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	sendAll(t, c, 10)
	stop(t, c)
	calls, rejs := l.snapshot(), rej.snapshot()
	for i, r := range scripted {
		if codes := calls[token(i)]; len(codes) != 1 || codes[0] != wantCode[i] {
			t.Errorf("%s: codes %v; want [%d]", r.Reason, codes, wantCode[i])
		}
		if got := rejs[token(i)]; len(got) != 1 || got[0].Reason != r.Reason || got[0].StatusCode != r.Status || got[0].ID == "" {
			t.Errorf("%s: rejections %+v", r.Reason, got)
		}
	}
	if len(calls) != len(scripted) {
		t.Errorf("callbacks for %d tokens; want %d", len(calls), len(scripted))
	}
	if got := rejs[token(4)]; len(got) == 1 && !got[0].Timestamp.Equal(ts) {
		t.Errorf("410 timestamp %v; want %v", got[0].Timestamp, ts)
	}
	bad, err := fc.GetBadTokens()
	if err != nil || len(bad) != 1 || bad[0].Token != token(4) || !bad[0].Timestamp.Equal(ts) {
		t.Errorf("GetBadTokens = %+v, %v; want token 4 at %v", bad, err, ts)
	}
	if got := s.Count(); got != 5 {
		t.Errorf("server accepted %d; want 5", got)
	}
}

func TestHTTP2RetriesHonourRetryAfterThenReport(t *testing.T) {
	parallel(t)
	s := newH2Server(t, nil)
	s.Respond(token(1), apnstest.Response{Status: 503, Reason: "ServiceUnavailable", RetryAfter: "1", Times: 1})
	s.Respond(token(2), apnstest.Response{Status: 500, Reason: "InternalServerError", Times: 2})
	s.Respond(token(3), apnstest.Response{Status: 429, Reason: "TooManyRequests"}) // always
	c := newH2Client(t, s, apns.WithMaxAttempts(3))
	l := newLedger(c)
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	sendAll(t, c, 5)
	stop(t, c)
	got := h2Received(s)
	for _, i := range []int{0, 1, 2, 4} {
		if got[token(i)] != 1 {
			t.Errorf("token %d arrived %d times; want 1", i, got[token(i)])
		}
	}
	calls := l.snapshot()
	if codes := calls[token(3)]; len(codes) != 1 || codes[0] != uint8(apns.StatusProcessingError) {
		t.Errorf("token 3 (always 429): codes %v; want [1] after its attempts", codes)
	}
	if len(calls) != 1 {
		t.Errorf("callbacks %v; want only token 3", calls)
	}
	if st := c.Stats(); st.Replayed != 1+2+2 {
		t.Errorf("retries counted %d; want 5", st.Replayed)
	}
}

func TestHTTP2GoAwayMidFlightLosesNothing(t *testing.T) {
	parallel(t)
	s := newH2Server(t, nil)
	var sent atomic.Int64
	s.RespondFunc(func(r apnstest.Request) *apnstest.Response {
		if sent.Add(1)%500 == 0 {
			go s.GoAway()
		}
		return nil
	})
	c := newH2Client(t, s)
	l := newLedger(c)
	if err := c.Start(2); err != nil {
		t.Fatal(err)
	}
	const n = 3000
	sendAll(t, c, n)
	stop(t, c)
	got := h2Received(s)
	rejected := l.snapshot()
	for i := 0; i < n; i++ {
		if got[token(i)] == 0 && len(rejected[token(i)]) == 0 {
			t.Fatalf("token %d neither arrived nor was reported", i)
		}
	}
	if len(rejected) != 0 {
		t.Errorf("%d notifications reported; want none", len(rejected))
	}
	if s.Conns() <= 2 {
		t.Errorf("server saw %d connections; want new ones after GOAWAY", s.Conns())
	}
}

func TestHTTP2StreamLimitOfOneKeepsOneConnection(t *testing.T) {
	parallel(t)
	s := newH2Server(t, func(s *apnstest.HTTP2Server) { s.MaxConcurrentStreams = 1 })
	s.RespondFunc(func(apnstest.Request) *apnstest.Response {
		return &apnstest.Response{Status: 200, Delay: time.Millisecond}
	})
	c := newH2Client(t, s, apns.WithStreams(16))
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	sendAll(t, c, 100)
	stop(t, c)
	if s.Count() != 100 || s.Conns() != 1 {
		t.Errorf("server accepted %d over %d connections; want 100 over 1", s.Count(), s.Conns())
	}
}

func TestHTTP2PushReturnsTheWholeAnswer(t *testing.T) {
	s := newH2Server(t, nil)
	s.Respond(token(2), apnstest.Response{Status: 400, Reason: "BadDeviceToken"})
	c := newH2Client(t, s, apns.WithTopic("com.example.app"))
	ctx := context.Background()
	n := &apns.Notification{DeviceToken: token(1), Payload: []byte(`{"aps":{"alert":"hi"}}`), CollapseID: "c"}
	if _, err := c.Push(ctx, n); !errors.Is(err, apns.ErrNotStarted) {
		t.Errorf("Push before Start = %v; want ErrNotStarted", err)
	}
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	resp, err := c.Push(ctx, n)
	if err != nil || !resp.Sent() || resp.ID == "" {
		t.Fatalf("Push = %+v, %v", resp, err)
	}
	r := s.Requests()[0]
	if r.Topic != "com.example.app" || r.CollapseID != "c" || r.ID != resp.ID || r.Expiration != "" {
		t.Errorf("request %+v", r)
	}
	n.DeviceToken = token(2)
	resp, err = c.Push(ctx, n)
	if err != nil || resp.Sent() || resp.StatusCode != 400 || resp.Reason != "BadDeviceToken" {
		t.Errorf("Push of a bad token = %+v, %v", resp, err)
	}
}

// clock is a settable time shared by a client and the mock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func TestHTTP2TokenAuthRefreshesAndRecoversFromExpiredToken(t *testing.T) {
	key, p8 := apns.NewTestAuthKey(t)
	clientClock := &clock{now: time.Now()}
	serverClock := &clock{now: clientClock.Now()}
	s := newH2Server(t, func(s *apnstest.HTTP2Server) {
		s.Keys = map[string]*ecdsa.PublicKey{"KEY1234567": &key.PublicKey}
		s.TeamID = "TEAM123456"
		s.Now = serverClock.Now
	})
	c, err := apns.CreateTokenClient(s.URL, p8, "KEY1234567", "TEAM123456", "com.example.app",
		apns.WithTLSConfig(s.ClientTLSConfig()), apns.WithClock(clientClock.Now))
	if err != nil {
		t.Fatal(err)
	}
	stopAfter(t, c)
	l := newLedger(c)
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	send := func(i int) {
		t.Helper()
		if err := c.Send(token(i), time.Time{}, apns.PRIORITY_IMMEDIATE, payload(i)); err != nil {
			t.Fatal(err)
		}
		if !s.WaitCount(i+1, waitGuard) {
			t.Fatalf("notification %d not accepted; callbacks %v, rejected %+v", i, l.snapshot(), s.Rejected())
		}
	}
	send(0)
	// 55 minutes later the client has replaced its token on its own.
	clientClock.Add(55 * time.Minute)
	serverClock.Add(55 * time.Minute)
	send(1)
	// The server's clock runs 45 minutes ahead: it calls the 30-minute-old token expired, and
	// the client makes a new one once and retries; the new one is 45 minutes old to the server.
	clientClock.Add(30 * time.Minute)
	serverClock.Add(75 * time.Minute)
	send(2)
	if calls := l.snapshot(); len(calls) != 0 {
		t.Errorf("callbacks %v; want none", calls)
	}
	for _, r := range s.Requests() {
		if r.KeyID != "KEY1234567" || r.Topic != "com.example.app" {
			t.Errorf("request %+v", r)
		}
	}
	expired := 0
	for _, r := range s.Rejected() {
		if r.Reason == "ExpiredProviderToken" {
			expired++
		} else {
			t.Errorf("unexpected rejection %+v", r)
		}
	}
	if expired != 1 {
		t.Errorf("%d ExpiredProviderToken answers; want exactly 1 before the client renewed", expired)
	}
}

func TestHTTP2ThroughAnHTTPConnectProxy(t *testing.T) {
	s := newH2Server(t, nil)
	var tunnels atomic.Int64
	proxy := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodConnect {
			http.Error(w, "CONNECT only", http.StatusMethodNotAllowed)
			return
		}
		up, err := net.Dial("tcp", r.Host)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		tunnels.Add(1)
		w.WriteHeader(http.StatusOK)
		down, buf, err := http.NewResponseController(w).Hijack()
		if err != nil {
			up.Close()
			return
		}
		go func() { io.Copy(up, buf); up.Close() }()
		io.Copy(down, up)
		down.Close()
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go proxy.Serve(ln)
	defer proxy.Close()
	u, _ := url.Parse("http://" + ln.Addr().String())
	c := newH2Client(t, s, apns.WithProxy(http.ProxyURL(u)))
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	sendAll(t, c, 20)
	stop(t, c)
	if s.Count() != 20 || tunnels.Load() == 0 {
		t.Errorf("server accepted %d, proxy tunnels %d; want 20 through the proxy", s.Count(), tunnels.Load())
	}
}

func TestHTTP2ConnectionLossBeforeAnswersLosesNothing(t *testing.T) {
	parallel(t)
	s := newH2Server(t, nil)
	var seen atomic.Int64
	s.RespondFunc(func(apnstest.Request) *apnstest.Response {
		if seen.Add(1) == 200 {
			go s.CloseClientConnections() // drops the connection with requests in flight
			return &apnstest.Response{Status: 200, Delay: 50 * time.Millisecond}
		}
		return nil
	})
	c := newH2Client(t, s, apns.WithErrorHandler(func(error) {}))
	l := newLedger(c)
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	const n = 1000
	sendAll(t, c, n)
	stop(t, c)
	got, calls := h2Received(s), l.snapshot()
	for i := 0; i < n; i++ {
		if got[token(i)] == 0 {
			t.Fatalf("token %d never arrived (callbacks %v)", i, calls[token(i)])
		}
	}
	if st := c.Stats(); st.Reconnects == 0 || st.Delivered != n {
		t.Errorf("stats %+v; want a reconnect and every notification delivered", st)
	}
}

// h2ReadLoops counts the client-side HTTP/2 connections of test t still open (see
// countGoroutines).
func h2ReadLoops(t testing.TB) int { return countGoroutines(t, "http2ClientConn).readLoop") }

func waitReadLoops(t testing.TB, want int) int {
	deadline := time.Now().Add(waitGuard)
	for time.Now().Before(deadline) {
		if n := h2ReadLoops(t); n == want {
			return n
		}
		time.Sleep(20 * time.Millisecond)
	}
	return h2ReadLoops(t)
}

// A: Stop while Start is still dialing leaves a connection open (and Start returns nil).
func TestHTTP2StopDuringStartLeavesNoConnection(t *testing.T) {
	parallel(t) // the goroutine counts see this test's goroutines only
	s := newH2Server(t, nil)
	var calls atomic.Int64
	slow, release := make(chan struct{}), make(chan struct{})
	proxy := func(*http.Request) (*url.URL, error) {
		if calls.Add(1) == 2 {
			close(slow)
			<-release // the second dial is slow: it goes on once Stop has begun
		}
		return nil, nil
	}
	cert, key := apnstest.ClientCertPEM()
	c, err := apns.CreateClient(s.URL, cert, key, false, apns.WithTLSConfig(s.ClientTLSConfig()), apns.WithProxy(proxy))
	if err != nil {
		t.Fatal(err)
	}
	var releaseOnce sync.Once
	t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) }) // a failed test lets Start go too
	startErr := make(chan error, 1)
	go func() { startErr <- c.Start(2) }()
	guard(t, "the second dial", func() { <-slow })
	if n := waitReadLoops(t, 1); n != 1 { // the first connection is up
		t.Fatalf("%d HTTP/2 connections open while Start dials the second; want 1", n)
	}
	stopped := make(chan struct{})
	go func() { defer close(stopped); c.Stop() }()
	for c.Send(token(0), time.Time{}, apns.PRIORITY_IMMEDIATE, payload(0)) == nil { // until Stop has begun
		runtime.Gosched()
	}
	releaseOnce.Do(func() { close(release) })
	guard(t, "Stop", func() { <-stopped })
	guard(t, "Start", func() { err = <-startErr })
	if err != nil && !errors.Is(err, apns.ErrStopped) {
		t.Errorf("Start racing Stop = %v; want nil or ErrStopped", err)
	}
	if n := waitReadLoops(t, 0); n != 0 {
		t.Errorf("%d HTTP/2 connections still open after Stop and Start returned", n)
	}
}

// B: Push after Stop dials a new connection that nobody closes.
func TestHTTP2PushAfterStopOpensNoConnection(t *testing.T) {
	parallel(t) // the goroutine counts see this test's goroutines only
	s := newH2Server(t, nil)
	cert, key := apnstest.ClientCertPEM()
	c, err := apns.CreateClient(s.URL, cert, key, false, apns.WithTLSConfig(s.ClientTLSConfig()))
	if err != nil {
		t.Fatal(err)
	}
	stopAfter(t, c)
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	n := &apns.Notification{DeviceToken: token(1), Payload: []byte(`{"aps":{"alert":"x"}}`)}
	if _, err := c.Push(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	stop(t, c)
	if _, err := c.Push(context.Background(), n); !errors.Is(err, apns.ErrStopped) {
		t.Errorf("Push after Stop = %v; want ErrStopped", err)
	}
	if k := waitReadLoops(t, 0); k != 0 {
		t.Errorf("%d HTTP/2 connections open after Stop", k)
	}
}

// C: a Push whose ctx ends while it waits for the only stream retires a healthy connection.
func TestHTTP2PushTimeoutAtStreamLimitKeepsTheConnection(t *testing.T) {
	parallel(t)
	s := newH2Server(t, func(s *apnstest.HTTP2Server) { s.MaxConcurrentStreams = 1 })
	holding := make(chan struct{})
	s.RespondFunc(func(r apnstest.Request) *apnstest.Response {
		if r.Token != token(1) {
			return nil
		}
		close(holding) // token 1 holds the only stream
		return &apnstest.Response{Status: 200, Delay: 300 * time.Millisecond}
	})
	c := newH2Client(t, s)
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	pl := []byte(`{"aps":{"alert":"x"}}`)
	if _, err := c.Push(ctx, &apns.Notification{DeviceToken: token(0), Payload: pl}); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.Push(ctx, &apns.Notification{DeviceToken: token(1), Payload: pl})
	}()
	guard(t, "token 1's request", func() { <-holding })
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	c.Push(short, &apns.Notification{DeviceToken: token(2), Payload: pl}) // may time out waiting for the stream
	cancel()
	if _, err := c.Push(ctx, &apns.Notification{DeviceToken: token(3), Payload: pl}); err != nil {
		t.Fatal(err)
	}
	receive(t, "the Push of token 1", done)
	if s.Conns() != 1 {
		t.Errorf("server saw %d TCP connections; want 1 (stream limit 1, nothing failed)", s.Conns())
	}
}

// D: SendNotification keeps the caller's []byte: changes after it returns are sent.
func TestHTTP2SendNotificationCopiesThePayload(t *testing.T) {
	s := newH2Server(t, nil)
	c := newH2Client(t, s)
	buf := []byte(`{"aps":{"alert":"A"}}`)
	if err := c.SendNotification(context.Background(), &apns.Notification{DeviceToken: token(1), Payload: buf}); err != nil {
		t.Fatal(err)
	}
	copy(buf, `{"aps":{"alert":"B"}}`) // caller reuses its buffer
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	stop(t, c)
	if got := string(s.Requests()[0].Payload); got != `{"aps":{"alert":"A"}}` {
		t.Errorf("server got %s; want the payload as it was at SendNotification", got)
	}
}

// E: a connection opened late in a token's life sees the 50-minute refresh as a too-early update.
func TestHTTP2TokenRefreshAfterReconnectIsNoTooEarlyUpdate(t *testing.T) {
	parallel(t)
	key, p8 := apns.NewTestAuthKey(t)
	clk := &clock{now: time.Now()}
	s := newH2Server(t, func(s *apnstest.HTTP2Server) {
		s.Keys = map[string]*ecdsa.PublicKey{"KEY1234567": &key.PublicKey}
		s.Now = clk.Now
	})
	c, err := apns.CreateTokenClient(s.URL, p8, "KEY1234567", "TEAM123456", "com.example.app",
		apns.WithTLSConfig(s.ClientTLSConfig()), apns.WithClock(clk.Now), apns.WithErrorHandler(func(error) {}))
	if err != nil {
		t.Fatal(err)
	}
	stopAfter(t, c)
	rej := recordRejections(c)
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	pl := []byte(`{"aps":{"alert":"x"}}`)
	c.SendNotification(ctx, &apns.Notification{DeviceToken: token(0), Payload: pl})
	if !s.WaitCount(1, waitGuard) {
		t.Fatalf("notification 0 not accepted; rejections %v", rej.snapshot())
	}
	clk.Add(45 * time.Minute)
	s.GoAway() // Apple routinely recycles connections
	c.SendNotification(ctx, &apns.Notification{DeviceToken: token(1), Payload: pl})
	if !s.WaitCount(2, waitGuard) {
		t.Fatalf("notification 1 not accepted; rejections %v", rej.snapshot())
	}
	clk.Add(6 * time.Minute)
	c.SendNotification(ctx, &apns.Notification{DeviceToken: token(2), Payload: pl})
	stop(t, c)
	for tok, r := range rej.snapshot() {
		t.Errorf("%s rejected: %d %s", tok[len(tok)-4:], r[0].StatusCode, r[0].Reason)
	}
}

// On HTTP/2 the Connections gauge counts the open connections, rejections are split by
// their nearest binary status, and the logger hears of rejections and retries.
func TestHTTP2StatsAndLogs(t *testing.T) {
	parallel(t)
	s := newH2Server(t, nil)
	s.Respond(token(1), apnstest.Response{Status: 410, Reason: "Unregistered"})
	s.Respond(token(2), apnstest.Response{Status: 503, Reason: "ServiceUnavailable", Times: 1})
	var logs lockedBuffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	c := newH2Client(t, s, apns.WithLogger(logger))
	if err := c.Start(2); err != nil {
		t.Fatal(err)
	}
	if st := c.Stats(); st.Connections != 2 {
		t.Errorf("Connections = %d after Start(2); want 2", st.Connections)
	}
	sendAll(t, c, 5)
	stop(t, c)
	st := c.Stats()
	if st.Connections != 0 || st.Delivered != 4 || !maps.Equal(st.RejectedByStatus, map[apns.Status]uint64{8: 1}) {
		t.Errorf("after Stop: %+v", st)
	}
	log := logs.String()
	for _, want := range []string{"apns: connected", "notification rejected", "reason=Unregistered", "token=" + token(1)[:8] + "…", "apns: retrying", "status=503"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	if strings.Contains(log, token(1)) {
		t.Error("log carries a whole token")
	}
}
