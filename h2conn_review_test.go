package apns_test

// Review tests of the HTTP/2 connection pool (h2conn.go) and the parts of http2.go that
// call into it: GOAWAY re-sends, Stop's bound, gauges and goroutines after Stop.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	apns "github.com/Kwik-messenger/apns-go"
	"github.com/Kwik-messenger/apns-go/apnstest"
)

// poolServer is a plain net/http HTTP/2 server over TLS with the given stream limit; handler
// answers. It counts the connections it accepted.
type poolServer struct {
	*httptest.Server
	conns atomic.Int64
}

func newPoolServer(t *testing.T, streams uint32, handler http.HandlerFunc) *poolServer {
	t.Helper()
	s := &poolServer{}
	s.Server = httptest.NewUnstartedServer(handler)
	s.EnableHTTP2 = true
	s.Config.HTTP2 = &http.HTTP2Config{MaxConcurrentStreams: int(streams)}
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			s.conns.Add(1)
		}
	}
	s.StartTLS()
	t.Cleanup(s.Close)
	return s
}

// client returns a certificate client of s (s does not check the certificate).
func (s *poolServer) client(t *testing.T, opts ...apns.Option) *apns.Client {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(s.Certificate())
	cert, key := apnstest.ClientCertPEM()
	opts = append([]apns.Option{apns.WithTLSConfig(&tls.Config{RootCAs: pool}), apns.WithErrorHandler(func(error) {})}, opts...)
	c, err := apns.CreateClient(s.URL, cert, key, false, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// tokenOf returns the hex token of a request's path /3/device/<token>.
func tokenOf(r *http.Request) string { return strings.TrimPrefix(r.URL.Path, "/3/device/") }

// A stream reset (RST_STREAM) of one request on a connection whose streams are all busy is
// not a GOAWAY: the connection is healthy and keeps its other requests. The pool must neither
// retire it (a new connection per reset) nor send the request again outside the retry policy
// (WithMaxAttempts(1): one try each).
func TestPoolStreamResetOnAFullConnectionIsNotAGoAway(t *testing.T) {
	parallel(t)
	var mu sync.Mutex
	arrivals := map[string]int{}
	s := newPoolServer(t, 4, func(w http.ResponseWriter, r *http.Request) {
		tok := tokenOf(r)
		mu.Lock()
		arrivals[tok]++
		mu.Unlock()
		b, _ := hex.DecodeString(tok)
		if b[len(b)-1]%3 == 0 {
			time.Sleep(20 * time.Millisecond)
			panic(http.ErrAbortHandler) // RST_STREAM INTERNAL_ERROR, no answer
		}
		time.Sleep(100 * time.Millisecond)
		w.Header().Set("apns-id", r.Header.Get("apns-id"))
		w.WriteHeader(http.StatusOK)
	})
	c := s.client(t, apns.WithMaxAttempts(1))
	t.Cleanup(func() { stop(t, c); checkNoGoroutines(t) })
	l := newLedger(c)
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	const n = 120
	sendH2(t, c, 0, n)
	stop(t, c)
	mu.Lock()
	defer mu.Unlock()
	calls := l.snapshot()
	resent := 0
	for i := 0; i < n; i++ {
		tok := token(i)
		if arrivals[tok] > 1 {
			resent++
			if resent <= 5 {
				t.Errorf("token %d sent %d times with WithMaxAttempts(1)", i, arrivals[tok])
			}
		}
		reset := i%3 == 0 // token(i)'s last byte is i's
		if codes := calls[tok]; reset && (len(codes) != 1 || codes[0] != uint8(apns.StatusUnknown)) || !reset && len(codes) != 0 {
			t.Errorf("token %d (reset %v): callbacks %v", i, reset, codes)
		}
	}
	st := c.Stats()
	if resent > 0 || st.Reconnects > 0 || s.conns.Load() != 1 {
		t.Errorf("%d of %d notifications sent more than once; %d connections at the server, stats %+v; want 1 each, 1 connection, 0 reconnects",
			resent, n, s.conns.Load(), st)
	}
}

// Issue 10 item 4, README: once Stop has begun, each connection makes at most 3 more attempts
// without an answer and what is left is reported with 255. A notification whose request was
// in flight when the gateway went away keeps retrying through the whole retry policy
// (WithMaxAttempts), sleeping its backoff each time, although every reservation after the
// third failed attempt answers errGaveUp.
func TestPoolStopWithTheGatewayGoneMidFlightIsBounded(t *testing.T) {
	parallel(t)
	var judged atomic.Int64
	s := newH2Server(t, func(s *apnstest.HTTP2Server) {
		s.Latency = 5 * time.Second // answers do not come before the gateway goes
		s.RespondFunc(func(apnstest.Request) *apnstest.Response { judged.Add(1); return nil })
	})
	cert, key := apnstest.ClientCertPEM()
	c, err := apns.CreateClient(s.URL, cert, key, false, apns.WithTLSConfig(s.ClientTLSConfig()),
		apns.WithErrorHandler(func(error) {}), apns.WithMaxAttempts(12))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c.Shutdown(ctx)
		checkNoGoroutines(t)
	})
	l := newLedger(c)
	if err := c.Start(2); err != nil {
		t.Fatal(err)
	}
	const n = 20
	sendH2(t, c, 0, n)
	waitFor(t, "the mock to hold every request", func() bool { return judged.Load() == n })
	s.Close() // the gateway is gone with every notification in flight
	begin := time.Now()
	stop(t, c)
	t.Logf("Stop took %v", time.Since(begin))
	calls := l.snapshot()
	for i := 0; i < n; i++ {
		// The first request of each connection went alone and may have had its answer.
		if codes := calls[token(i)]; len(codes) > 1 || len(codes) == 1 && codes[0] != uint8(apns.StatusUnknown) {
			t.Errorf("token %d reported %v; want at most once, with 255", i, codes)
		}
	}
	if st := c.Stats(); st.Delivered+st.Unsent+st.Unconfirmed != n || st.Delivered > 2 {
		t.Errorf("stats %+v; want %d delivered, unsent or unconfirmed, at most 2 delivered", st, n)
	}
}

// A gateway that completes TLS and SETTINGS and then never answers a request: each request
// ends by the write timeout, which is not counted against the connection (failed ignores
// context errors), so the connection is never retired, Stop's 3 attempts per connection never
// run out, and every notification goes through the whole retry policy on it.
func TestPoolStopWithAGatewayThatNeverAnswersIsBounded(t *testing.T) {
	parallel(t)
	var mu sync.Mutex
	arrivals := map[string]int{}
	quit := make(chan struct{})
	s := newPoolServer(t, 100, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		arrivals[tokenOf(r)]++
		mu.Unlock()
		select {
		case <-r.Context().Done():
		case <-quit:
		}
	})
	t.Cleanup(func() { close(quit) }) // before s.Close (cleanups run last-in first-out)
	// 6 tries, so that the retry policy's backoff (0.1+0.2+0.4+0.8+1.6 s) stays short.
	c := s.client(t, apns.WithWriteTimeout(time.Second), apns.WithMaxAttempts(6))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c.Shutdown(ctx)
		checkNoGoroutines(t)
	})
	l := newLedger(c)
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	const n = 5
	sendH2(t, c, 0, n)
	begin := time.Now()
	stop(t, c)
	t.Logf("Stop took %v", time.Since(begin))
	mu.Lock()
	defer mu.Unlock()
	calls := l.snapshot()
	for i := 0; i < n; i++ {
		if codes := calls[token(i)]; len(codes) != 1 || codes[0] != uint8(apns.StatusUnknown) {
			t.Errorf("token %d reported %v; want once with 255", i, codes)
		}
		if a := arrivals[token(i)]; a > 4 {
			t.Errorf("token %d sent %d times to a gateway that never answers, during Stop; want at most 1+3", i, a)
		}
	}
	t.Logf("connections at the server: %d, stats %+v", s.conns.Load(), c.Stats())
}

// Thousands in flight at 1000 streams when Stop begins: everything is delivered once, the
// gauges read 0 afterwards and no goroutine of the package is left.
func TestPoolStopWithThousandsInFlight(t *testing.T) {
	parallel(t)
	s := newH2Server(t, func(s *apnstest.HTTP2Server) {
		s.Latency = 300 * time.Millisecond
		s.LatencyJitter = 100 * time.Millisecond
	})
	c := newH2Client(t, s, apns.WithMaxConnections(3), apns.WithIdleTimeout(200*time.Millisecond))
	l := newLedger(c)
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	const n = 4000
	sendH2(t, c, 0, n)
	stop(t, c)
	checkNoGoroutines(t)
	st := c.Stats()
	if st.Delivered != n || st.InFlight != 0 || st.Connections != 0 || st.Queued != 0 {
		t.Errorf("stats after Stop %+v; want %d delivered, gauges 0", st, n)
	}
	if calls := l.snapshot(); len(calls) != 0 {
		t.Errorf("%d callbacks for delivered notifications", len(calls))
	}
	got := h2Received(s)
	dups := 0
	for i := 0; i < n; i++ {
		if got[token(i)] != 1 {
			dups++
		}
	}
	if dups != 0 {
		t.Errorf("%d tokens not received exactly once", dups)
	}
}

// GOAWAY, again and again, while a thousand requests are in flight: every notification ends
// exactly once (delivered, no callback), every arrival beyond the first at the mock is counted
// as a duplicate, and the gauges read 0 after Stop.
func TestPoolRepeatedGoAwayUnderLoad(t *testing.T) {
	parallel(t)
	s := newH2Server(t, func(s *apnstest.HTTP2Server) {
		s.Latency = 200 * time.Millisecond
		s.MaxConcurrentStreams = 300
	})
	c := newH2Client(t, s, apns.WithMaxConnections(3))
	l := newLedger(c)
	if err := c.Start(2); err != nil {
		t.Fatal(err)
	}
	const n = 3000
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 4; i++ {
			time.Sleep(150 * time.Millisecond)
			s.GoAway()
		}
	}()
	sendH2(t, c, 0, n)
	receive(t, "the GOAWAYs", done)
	stop(t, c)
	st := c.Stats()
	if st.Delivered != n || st.InFlight != 0 || st.Connections != 0 {
		t.Errorf("stats after Stop %+v; want %d delivered, gauges 0", st, n)
	}
	if calls := l.snapshot(); len(calls) != 0 {
		t.Errorf("%d tokens reported to the callback", len(calls))
	}
	got := h2Received(s)
	extra, missing := 0, 0
	for i := 0; i < n; i++ {
		switch k := got[token(i)]; {
		case k == 0:
			missing++
		case k > 1:
			extra += k - 1
		}
	}
	if missing > 0 || uint64(extra) > st.Duplicates {
		t.Errorf("%d never reached the mock, %d arrivals beyond the first, %d counted as duplicates", missing, extra, st.Duplicates)
	}
	t.Logf("stats %+v, extra arrivals %d", st, extra)
}

// Issue 11 item 4: Apple must never see a burst of connections; the pool opens connections
// for load one at a time, at most one a second. After a GOAWAY on a pool grown to its cap,
// every slot (Start's and the ones opened for load) is reopened at once.
func TestPoolGoAwayOnAGrownPoolIsNoConnectionBurst(t *testing.T) {
	parallel(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	log := &acceptTimes{Listener: ln}
	s := apnstest.NewUnstartedHTTP2Server()
	s.Listener = log
	s.Latency = 100 * time.Millisecond
	s.MaxConcurrentStreams = 10
	s.DiscardNotifications = true
	s.Start()
	t.Cleanup(s.Close)
	c := newH2Client(t, s, apns.WithMaxConnections(4))
	l := newLedger(c)
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	const n = 2000
	sent := make(chan struct{})
	go func() { defer close(sent); sendH2(t, c, 0, n) }()
	waitFor(t, "the pool to grow to 4", func() bool { return c.Stats().Connections == 4 })
	before := len(log.accepted())
	s.GoAway()
	receive(t, "the sends", sent)
	// The queue drains before Stop: the pool reopens its slots while work waits, and once
	// Stop has begun it grows no more, so that the rest would drain through one connection.
	waitFor(t, "the queue to drain", func() bool { st := c.Stats(); return st.Queued == 0 && st.InFlight == 0 })
	stop(t, c)
	times := log.accepted()[before:]
	burst := 0
	for i := 1; i < len(times); i++ {
		if times[i].Sub(times[i-1]) < time.Second {
			burst++
		}
	}
	if burst > 0 {
		var gaps []time.Duration
		for i := 1; i < len(times); i++ {
			gaps = append(gaps, times[i].Sub(times[i-1]))
		}
		t.Errorf("after GOAWAY the pool opened %d connections with gaps %v; want no two within a second", len(times), gaps)
	}
	if st := c.Stats(); st.Delivered != n || len(l.snapshot()) != 0 {
		t.Errorf("stats %+v, %d reported; want %d delivered", st, len(l.snapshot()), n)
	}
}

// The first request on each new connection is reset by the server without an answer: the
// warm gate (first request alone) must open all the same, and the connection then carries
// requests side by side.
func TestPoolFirstRequestResetOpensTheWarmGate(t *testing.T) {
	parallel(t)
	var mu sync.Mutex
	seen := map[string]bool{} // remote address -> first request seen
	now, most := 0, 0
	s := newPoolServer(t, 50, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		first := !seen[r.RemoteAddr]
		seen[r.RemoteAddr] = true
		now++
		most = max(most, now)
		mu.Unlock()
		defer func() { mu.Lock(); now--; mu.Unlock() }()
		if first {
			panic(http.ErrAbortHandler)
		}
		time.Sleep(50 * time.Millisecond)
		w.WriteHeader(http.StatusOK)
	})
	c := s.client(t)
	t.Cleanup(func() { stop(t, c); checkNoGoroutines(t) })
	l := newLedger(c)
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	const n = 300
	sendH2(t, c, 0, n)
	stop(t, c)
	mu.Lock()
	defer mu.Unlock()
	if st := c.Stats(); st.Delivered != n || len(l.snapshot()) != 0 || most < 10 {
		t.Errorf("stats %+v, %d reported, most in flight at the server %d; want %d delivered, requests side by side", st, len(l.snapshot()), most, n)
	}
}

// A gateway that accepts TCP and never completes the TLS handshake once Stop has begun: Stop
// reports what is queued after 3 attempts per connection, each within the dial timeout.
func TestPoolStopWithAGatewayThatNeverCompletesTLS(t *testing.T) {
	parallel(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hole := &blackHole{Listener: ln}
	s := apnstest.NewUnstartedHTTP2Server()
	s.Listener = hole
	s.Start()
	t.Cleanup(s.Close)
	t.Cleanup(hole.release)
	cert, key := apnstest.ClientCertPEM()
	c, err := apns.CreateClient(s.URL, cert, key, false, apns.WithTLSConfig(s.ClientTLSConfig()),
		apns.WithErrorHandler(func(error) {}), apns.WithDialTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c.Shutdown(ctx)
		checkNoGoroutines(t)
	})
	l := newLedger(c)
	if err := c.Start(2); err != nil {
		t.Fatal(err)
	}
	sendH2(t, c, 0, 10)
	waitFor(t, "10 delivered", func() bool { return c.Stats().Delivered == 10 })
	hole.on.Store(true)
	s.CloseClientConnections()
	sendH2(t, c, 10, 50)
	begin := time.Now()
	stop(t, c)
	t.Logf("Stop took %v; %d connections held without TLS", time.Since(begin), hole.count())
	calls := l.snapshot()
	for i := 10; i < 60; i++ {
		if codes := calls[token(i)]; len(codes) != 1 || codes[0] != uint8(apns.StatusUnknown) {
			t.Errorf("token %d reported %v; want once with 255", i, codes)
		}
	}
}

// blackHole is a listener that, once on, accepts connections and holds them without passing
// them on: the client's TCP connect succeeds and its TLS handshake never completes.
type blackHole struct {
	net.Listener
	on    atomic.Bool
	mu    sync.Mutex
	held  []net.Conn
	ended bool
}

func (l *blackHole) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil || !l.on.Load() {
			return c, err
		}
		l.mu.Lock()
		if l.ended {
			c.Close()
		} else {
			l.held = append(l.held, c)
		}
		l.mu.Unlock()
	}
}

func (l *blackHole) count() int { l.mu.Lock(); defer l.mu.Unlock(); return len(l.held) }

func (l *blackHole) release() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ended = true
	for _, c := range l.held {
		c.Close()
	}
}

// GOAWAY on every connection, again and again, for 3 seconds while Stop drains the queue:
// Stop returns, every notification ends once (delivered, or reported), arrivals beyond the
// first are counted as duplicates, and the client does not answer the storm with a storm of
// connections (Apple must never see a burst): the answer to a connection's first request
// must not reset the backoff, or the client reconnects at once, dozens of times a second.
func TestPoolGoAwayStormDuringStop(t *testing.T) {
	parallel(t)
	s := newH2Server(t, func(s *apnstest.HTTP2Server) {
		s.Latency = 50 * time.Millisecond
		s.MaxConcurrentStreams = 20
	})
	c := newH2Client(t, s, apns.WithMaxConnections(3), apns.WithErrorHandler(func(error) {}))
	l := newLedger(c)
	if err := c.Start(2); err != nil {
		t.Fatal(err)
	}
	const n = 1000
	sendH2(t, c, 0, n)
	const storm = 3 * time.Second
	before := s.Conns()
	stormDone := make(chan int)
	go func() {
		end := time.Now().Add(storm)
		for time.Now().Before(end) {
			s.GoAway()
			time.Sleep(5 * time.Millisecond)
		}
		stormDone <- s.Conns()
	}()
	stopped := stopAsync(c)
	during := receive(t, "the storm's end", stormDone) - before
	if err := receive(t, "Stop", stopped); err != nil {
		t.Errorf("Stop: %v", err)
	}
	st := c.Stats()
	calls := l.snapshot()
	got := h2Received(s)
	extra, lost, both := 0, 0, 0
	for i := 0; i < n; i++ {
		tok := token(i)
		k, codes := got[tok], calls[tok]
		if k > 1 {
			extra += k - 1
		}
		if k > 0 && len(codes) > 0 {
			both++ // accepted by the mock and reported: an answer lost with its connection
		}
		if len(codes) > 1 || k == 0 && len(codes) == 0 {
			lost++
			if lost < 5 {
				t.Errorf("token %d: %d arrivals, callbacks %v", i, k, codes)
			}
		}
	}
	if st.Delivered+st.Unsent+st.Rejected != n || st.InFlight != 0 || st.Connections != 0 || uint64(extra) > st.Duplicates {
		t.Errorf("stats %+v; %d arrivals beyond the first", st, extra)
	}
	t.Logf("stats %+v; extra arrivals %d; accepted by the mock and reported %d", st, extra, both)
	// Each slot backs off from 100 ms, doubling, at most a second apart once Stop has begun,
	// with ±10 % jitter: openings at 0, 0.09, 0.27, 0.63, 1.35, 2.25 s at the soonest, the
	// next past 3 s. At most 6 per slot in 3 s, 18 for the pool of 3; a client that
	// reconnects at once opens dozens a second.
	if limit := 3 * 6; during > limit {
		t.Errorf("the client opened %d connections during a %v GOAWAY storm; want at most %d (6 per slot of 3: backoff)", during, storm, limit)
	}
}

// Stats.Connections is "connections open". After the gateway sends GOAWAY and closes the
// connections of an idle client, the gauge must come down (the connections are gone at both
// ends), not wait for the next notification.
func TestPoolConnectionsGaugeAfterGoAwayWhileIdle(t *testing.T) {
	parallel(t)
	s := newH2Server(t, nil)
	c := newH2Client(t, s)
	if err := c.Start(2); err != nil {
		t.Fatal(err)
	}
	sendH2(t, c, 0, 10)
	waitFor(t, "10 delivered", func() bool { return c.Stats().Delivered == 10 })
	s.GoAway() // returns once every connection is closed
	deadline := time.Now().Add(5 * time.Second)
	for c.Stats().Connections != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := c.Stats().Connections; got != 0 {
		t.Errorf("Stats().Connections = %d five seconds after the server closed every connection (server accepted %d in all); want 0", got, s.Conns())
	}
}

// Push callers while the gateway goes away and Stop begins: Push returns within Stop's bound
// (3 attempts per connection), and so does Stop, which waits for Push calls.
func TestPoolPushDuringStopWithTheGatewayGone(t *testing.T) {
	parallel(t)
	var judged atomic.Int64
	s := newH2Server(t, func(s *apnstest.HTTP2Server) {
		s.Latency = 5 * time.Second
		s.RespondFunc(func(apnstest.Request) *apnstest.Response { judged.Add(1); return nil })
	})
	cert, key := apnstest.ClientCertPEM()
	c, err := apns.CreateClient(s.URL, cert, key, false, apns.WithTLSConfig(s.ClientTLSConfig()),
		apns.WithErrorHandler(func(error) {}), apns.WithMaxAttempts(12))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c.Shutdown(ctx)
		checkNoGoroutines(t)
	})
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	const n = 4
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		go func() {
			_, err := c.Push(context.Background(), &apns.Notification{DeviceToken: token(i), Payload: []byte(`{"aps":{}}`)})
			errs <- err
		}()
	}
	waitFor(t, "the mock to hold every push", func() bool { return judged.Load() == n })
	s.Close()
	begin := time.Now()
	stopped := stopAsync(c)
	for i := 0; i < n; i++ {
		receive(t, "Push", errs) // the first may have its answer: it went alone, before the others
	}
	t.Logf("the Push calls returned %v after Stop began", time.Since(begin))
	if err := receive(t, "Stop", stopped); err != nil {
		t.Errorf("Stop: %v", err)
	}
}

// Stop drains: it waits for the Push calls in progress (h2Transport.close says so). A Push whose
// request is in flight on a healthy gateway when Stop is called gets its answer, instead of
// having its connection closed under it (the gateway may deliver it all the same).
func TestPoolStopLetsAPushInFlightFinish(t *testing.T) {
	parallel(t)
	var judged atomic.Int64
	s := newH2Server(t, func(s *apnstest.HTTP2Server) {
		s.Latency = time.Second
		s.RespondFunc(func(apnstest.Request) *apnstest.Response { judged.Add(1); return nil })
	})
	c := newH2Client(t, s)
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	pl := []byte(`{"aps":{"alert":"x"}}`)
	if _, err := c.Push(context.Background(), &apns.Notification{DeviceToken: token(0), Payload: pl}); err != nil {
		t.Fatal(err) // the connection's first request, alone
	}
	type result struct {
		resp *apns.Response
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := c.Push(context.Background(), &apns.Notification{DeviceToken: token(1), Payload: pl})
		done <- result{resp, err}
	}()
	waitFor(t, "the mock to hold the push", func() bool { return judged.Load() == 2 })
	stopped := stopAsync(c)
	r := receive(t, "Push", done)
	if err := receive(t, "Stop", stopped); err != nil {
		t.Errorf("Stop: %v", err)
	}
	if r.err != nil || !r.resp.Sent() {
		t.Errorf("Push in flight when Stop was called: %+v, %v; want its answer, 200 (the mock got it: %d requests)", r.resp, r.err, s.Count())
	}
}

// One stream per connection (the server's limit and WithStreams(1)), GOAWAY twice under load:
// every notification is delivered, none reported, arrivals beyond the first are counted.
func TestPoolOneStreamGoAwayLedger(t *testing.T) {
	parallel(t)
	s := newH2Server(t, func(s *apnstest.HTTP2Server) {
		s.Latency = 20 * time.Millisecond
		s.MaxConcurrentStreams = 1
	})
	c := newH2Client(t, s, apns.WithStreams(1))
	l := newLedger(c)
	if err := c.Start(2); err != nil {
		t.Fatal(err)
	}
	const n = 200
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 2 {
			time.Sleep(300 * time.Millisecond)
			s.GoAway()
		}
	}()
	sendH2(t, c, 0, n)
	receive(t, "the GOAWAYs", done)
	stop(t, c)
	st := c.Stats()
	got := h2Received(s)
	extra := 0
	for i := 0; i < n; i++ {
		if k := got[token(i)]; k == 0 {
			t.Errorf("token %d never arrived", i)
		} else {
			extra += k - 1
		}
	}
	if st.Delivered != n || len(l.snapshot()) != 0 || uint64(extra) > st.Duplicates || st.Connections != 0 {
		t.Errorf("stats %+v, %d reported, %d extra arrivals", st, len(l.snapshot()), extra)
	}
}

// Two thousand Push calls at once on one connection of 1000 streams: all answered, nothing
// left behind after Stop.
func TestPoolThousandsOfPushes(t *testing.T) {
	parallel(t)
	s := newH2Server(t, func(s *apnstest.HTTP2Server) {
		s.Latency = 100 * time.Millisecond
		s.DiscardNotifications = true
	})
	c := newH2Client(t, s)
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	const n = 2000
	var wg sync.WaitGroup
	var failed atomic.Int64
	for i := 0; i < n; i++ {
		wg.Go(func() {
			r, err := c.Push(context.Background(), &apns.Notification{DeviceToken: token(i), Payload: []byte(`{"aps":{"alert":"x"}}`)})
			if err != nil || !r.Sent() {
				failed.Add(1)
			}
		})
	}
	guard(t, "the pushes", wg.Wait)
	stop(t, c)
	checkNoGoroutines(t)
	if failed.Load() != 0 || s.Count() != n {
		t.Errorf("%d pushes failed, mock counted %d of %d", failed.Load(), s.Count(), n)
	}
	if st := c.Stats(); st.Connections != 0 || st.InFlight != 0 {
		t.Errorf("gauges after Stop %+v", st)
	}
}
