package apns_test

// Tests of the HTTP/2 connection pool (h2conn.go) through the public API, against the mock
// with a round-trip latency: streams follow the server's limit, work goes where there is
// room, the pool grows and shrinks with the load, and Stop is bounded when the gateway is gone.

import (
	"context"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	apns "github.com/Kwik-messenger/apns-go"
	"github.com/Kwik-messenger/apns-go/apnstest"
)

// inFlight counts, at the mock, the requests each connection has in flight (judged, not yet
// answered) and the most it ever had, and what each connection carried.
type inFlight struct {
	mu      sync.Mutex
	now     map[int]int // connection -> requests in flight
	most    map[int]int // connection -> most in flight at once
	carried map[int]int // connection -> requests accepted
}

// watch makes s count its requests in flight per connection. It takes s's RespondFunc and
// Observe.
func watch(s *apnstest.HTTP2Server) *inFlight {
	f := &inFlight{now: map[int]int{}, most: map[int]int{}, carried: map[int]int{}}
	s.RespondFunc(func(r apnstest.Request) *apnstest.Response {
		f.mu.Lock()
		f.now[r.Conn]++
		f.most[r.Conn] = max(f.most[r.Conn], f.now[r.Conn])
		f.mu.Unlock()
		return nil
	})
	s.Observe = func(r apnstest.Request) {
		f.mu.Lock()
		f.now[r.Conn]--
		f.carried[r.Conn]++
		f.mu.Unlock()
	}
	return f
}

func (f *inFlight) snapshot() (most, carried map[int]int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	most, carried = map[int]int{}, map[int]int{}
	for k, v := range f.most {
		most[k] = v
	}
	for k, v := range f.carried {
		carried[k] = v
	}
	return most, carried
}

// latencyServer returns a started mock answering after latency, announcing streams streams
// on its connections, with its requests in flight watched.
func latencyServer(t *testing.T, latency time.Duration, streams int) (*apnstest.HTTP2Server, *inFlight) {
	t.Helper()
	s := apnstest.NewUnstartedHTTP2Server()
	s.Latency = latency
	s.MaxConcurrentStreams = streams
	s.DiscardNotifications = true
	f := watch(s)
	s.Start()
	t.Cleanup(s.Close)
	return s, f
}

// sendH2 queues n notifications, tokens from..from+n-1.
func sendH2(t *testing.T, c *apns.Client, from, n int) {
	t.Helper()
	pl := []byte(`{"aps":{"alert":"x"}}`)
	for i := from; i < from+n; i++ {
		if err := c.SendNotification(context.Background(), &apns.Notification{DeviceToken: token(i), Payload: pl}); err != nil {
			t.Fatal(err)
		}
	}
}

// A connection carries as many requests at once as the server announces, not 100, and
// follows the limit of each new connection; WithStreams caps it.
func TestHTTP2StreamsRiseToTheAnnouncedLimit(t *testing.T) {
	parallel(t)
	// A connection's first request goes alone; the limit's worth after it all start within
	// the latency, which is long so that they overlap on a busy machine too (at 500 ms, one
	// of 150 came after the first had its answer, under CI's parallel load).
	s, f := latencyServer(t, 1500*time.Millisecond, 150)
	c := newH2Client(t, s)
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	sendH2(t, c, 0, 151)
	if !s.WaitCount(151, waitGuard) {
		t.Fatalf("server counted %d of 151", s.Count())
	}
	s.SetMaxConcurrentStreams(250)
	s.GoAway() // the next connection announces 250
	sendH2(t, c, 151, 251)
	stop(t, c)
	most, _ := f.snapshot()
	if most[1] != 150 || most[2] != 250 {
		t.Errorf("most requests in flight per connection %v; want 150 on the first, 250 on the second", most)
	}
	if st := c.Stats(); st.Delivered != 402 {
		t.Errorf("delivered %d of 402", st.Delivered)
	}

	s2, f2 := latencyServer(t, 100*time.Millisecond, 300)
	c2 := newH2Client(t, s2, apns.WithStreams(40))
	if err := c2.Start(1); err != nil {
		t.Fatal(err)
	}
	sendH2(t, c2, 0, 400)
	stop(t, c2)
	if most, _ := f2.snapshot(); most[1] != 40 {
		t.Errorf("with WithStreams(40), most in flight %v; want 40", most)
	}
}

// Issue 10, item 9: with a server limit of 1 stream, 2 connections and 100 requests answered
// in 50 ms each, both connections carry work (before: 99 on one, 1 on the other).
func TestHTTP2EveryConnectionWithAFreeStreamTakesWork(t *testing.T) {
	parallel(t)
	s, f := latencyServer(t, 50*time.Millisecond, 1)
	c := newH2Client(t, s)
	if err := c.Start(2); err != nil {
		t.Fatal(err)
	}
	sendH2(t, c, 0, 100)
	stop(t, c)
	most, carried := f.snapshot()
	if len(carried) != 2 || carried[1] < 25 || carried[2] < 25 || carried[1]+carried[2] != 100 {
		t.Errorf("connections carried %v; want 100 split over both, at least 25 each", carried)
	}
	if most[1] != 1 || most[2] != 1 {
		t.Errorf("most in flight per connection %v; want 1 (the server's limit)", most)
	}
}

// Work spreads evenly over the connections: with 80 Push calls at once on 4 connections of
// 100 streams each, each connection carries about a quarter, not all on the first with room.
// (While the others still carry their first request alone, the first may take more.)
func TestHTTP2WorkSpreadsEvenlyOverTheConnections(t *testing.T) {
	parallel(t)
	s, f := latencyServer(t, 50*time.Millisecond, 100)
	c := newH2Client(t, s)
	if err := c.Start(4); err != nil {
		t.Fatal(err)
	}
	const callers, each = 80, 10
	pl := []byte(`{"aps":{"alert":"x"}}`)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() {
			for j := range each {
				n := &apns.Notification{DeviceToken: token(i*each + j), Payload: pl}
				if resp, err := c.Push(context.Background(), n); err != nil || !resp.Sent() {
					t.Errorf("Push: %v, %v", resp, err)
					return
				}
			}
		})
	}
	wg.Wait()
	most, carried := f.snapshot()
	if len(carried) != 4 {
		t.Fatalf("connections carried %v; want 4 connections", carried)
	}
	const share = callers * each / 4
	for conn, k := range carried {
		if k < share/2 || k > share*3/2 {
			t.Errorf("connection %d carried %d; want about %d (all: %v, most at once %v)", conn, k, share, carried, most)
		}
	}
}

// acceptTimes is a listener that records when each connection was accepted.
type acceptTimes struct {
	net.Listener
	mu    sync.Mutex
	times []time.Time
}

func (l *acceptTimes) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.mu.Lock()
		l.times = append(l.times, time.Now())
		l.mu.Unlock()
	}
	return c, err
}

func (l *acceptTimes) accepted() []time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.times)
}

// Under load, Start(1) with WithMaxConnections(3) opens more connections, one at a time, no
// two within a second of each other, and is back to one connection after the idle timeout;
// nothing is lost or doubled when extra connections close and open again with bursts of work.
//
// It runs alone (not in parallel): it counts the connections opened exactly, with an idle
// timeout of 300 ms, and when the parallel tests starve the client's goroutines that long a
// connection is idle in fact, is closed, and another opens (seen under -race).
func TestHTTP2ConnectionsGrowWithTheLoadAndShrinkWhenIdle(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	log := &acceptTimes{Listener: ln}
	s := apnstest.NewUnstartedHTTP2Server()
	s.Listener = log
	s.Latency = 100 * time.Millisecond
	s.MaxConcurrentStreams = 20
	f := watch(s)
	s.Start()
	t.Cleanup(s.Close)
	const idle = 300 * time.Millisecond
	var logs lockedBuffer
	c := newH2Client(t, s, apns.WithMaxConnections(3), apns.WithIdleTimeout(idle), apns.WithLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	l := newLedger(c)
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	// 20 streams, 100 ms: 200/s per connection; 1500 notifications need more than 2 s on
	// one, enough for the two more connections the cap allows.
	const n = 1500
	sendH2(t, c, 0, n)
	if !s.WaitCount(n, waitGuard) {
		t.Fatalf("server counted %d of %d", s.Count(), n)
	}
	if got := len(log.accepted()); got != 3 {
		t.Errorf("server accepted %d connections under load; want 3 (the cap); stats %+v; log:\n%s", got, c.Stats(), logs.String())
	}
	// Idle: the two extra connections close after the idle timeout.
	deadline := time.Now().Add(waitGuard)
	for c.Stats().Connections != 1 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if got := c.Stats().Connections; got != 1 {
		t.Errorf("%d connections open after the idle timeout; want 1", got)
	}
	// Bursts around the idle timeout: extra connections close and open again while work
	// keeps coming.
	for i := range 6 {
		sendH2(t, c, n+i*200, 200)
		time.Sleep(idle + time.Duration(i)*idle/8)
	}
	stop(t, c)
	times := log.accepted()
	for i := 1; i < len(times); i++ {
		if gap := times[i].Sub(times[i-1]); gap < time.Second {
			t.Errorf("connections %d and %d opened %v apart; want at least a second", i, i+1, gap)
		}
	}
	_, carried := f.snapshot()
	total := 0
	for _, k := range carried {
		total += k
	}
	const all = n + 6*200
	if total != all || len(l.snapshot()) != 0 {
		t.Errorf("server accepted %d of %d (by connection %v), %d reported; want each once, none reported", total, all, carried, len(l.snapshot()))
	}
	if got := h2Received(s); len(got) != all {
		t.Errorf("%d distinct tokens arrived; want %d", len(got), all)
	} else {
		for tok, k := range got {
			if k != 1 {
				t.Fatalf("token %s arrived %d times; want once", tok, k)
			}
		}
	}
}

// Issue 10, item 4: when the gateway goes away with notifications queued, Stop makes a few
// connection attempts and then reports the rest with StatusUnknown, instead of retrying them
// for hours.
func TestHTTP2StopIsBoundedWhenTheGatewayIsGone(t *testing.T) {
	parallel(t)
	s := newH2Server(t, nil)
	cert, key := apnstest.ClientCertPEM()
	c, err := apns.CreateClient(s.URL, cert, key, false, apns.WithTLSConfig(s.ClientTLSConfig()), apns.WithErrorHandler(func(error) {}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Should Stop hang, end it here so that the test fails instead of hanging too.
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
	deadline := time.Now().Add(waitGuard)
	for c.Stats().Delivered != 10 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	s.Close() // the gateway is gone: connections dropped, new ones refused
	const queued = 50
	sendH2(t, c, 10, queued)
	begin := time.Now()
	stop(t, c) // fails the test if Stop takes longer than waitGuard
	took := time.Since(begin)
	calls := l.snapshot()
	for i := 10; i < 10+queued; i++ {
		if codes := calls[token(i)]; len(codes) != 1 || codes[0] != uint8(apns.StatusUnknown) {
			t.Errorf("token %d reported %v; want once with 255", i, codes)
		}
	}
	// Queued while the gateway was going: each was sent, or not, before Stop gave up, so
	// each is counted unsent or unconfirmed (possibly delivered), never both.
	if st := c.Stats(); st.Delivered != 10 || st.Unsent+st.Unconfirmed != queued || st.Unconfirmed > st.Duplicates {
		t.Errorf("stats %+v; want 10 delivered, %d unsent or unconfirmed, unconfirmed among the duplicates", st, queued)
	}
	t.Logf("Stop took %v with the gateway gone", took)
}

// A request that net/http did not send because the server's graceful GOAWAY came first (a
// stream above the GOAWAY's last stream ID, which the server did not process) is sent again
// on another connection and counted as replayed only: it is no duplicate and no drop. Pushes
// run from many goroutines while the mock sends GOAWAY, until some request was refused so;
// then every notification reached the mock exactly once and Duplicates and Drops are 0.
func TestHTTP2RequestRefusedByGoAwayIsReplayedNotDuplicated(t *testing.T) {
	parallel(t)
	s := newH2Server(t, func(s *apnstest.HTTP2Server) { s.Latency = 20 * time.Millisecond })
	c := newH2Client(t, s)
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	stopAfter(t, c)
	pl := []byte(`{"aps":{"alert":"x"}}`)
	var next atomic.Int64
	var failed atomic.Pointer[error]
	push := func() {
		for {
			i := next.Add(1)
			if i > 200_000 || c.Stats().Replayed > 0 {
				return
			}
			if _, err := c.Push(context.Background(), &apns.Notification{DeviceToken: token(int(i)), Payload: pl}); err != nil {
				failed.CompareAndSwap(nil, &err)
				return
			}
		}
	}
	var wg sync.WaitGroup
	for range 200 {
		wg.Go(push)
	}
	go func() {
		for c.Stats().Replayed == 0 && next.Load() < 200_000 && failed.Load() == nil {
			// Long enough for each new connection to prove itself, so that no backoff
			// slows the Pushes (a gateway that sends GOAWAY before is met with backoff).
			time.Sleep(150 * time.Millisecond)
			s.GoAway()
		}
	}()
	guard(t, "the Pushes", wg.Wait)
	if err := failed.Load(); err != nil {
		t.Fatalf("Push: %v", *err)
	}
	st := c.Stats()
	if st.Replayed == 0 {
		t.Fatalf("no request was refused by a GOAWAY in %d Pushes: the test did not reach the path it checks", next.Load())
	}
	for tok, k := range h2Received(s) {
		if k != 1 {
			t.Errorf("%s reached the mock %d times", tok, k)
		}
	}
	if st.Duplicates != 0 || st.Drops != 0 {
		t.Errorf("Replayed %d, Duplicates %d, Drops %d; want no duplicates or drops: the server did not process a stream its GOAWAY refused",
			st.Replayed, st.Duplicates, st.Drops)
	}
}
