package apns_test

// Attack tests (stop 20) on the HTTP/2 pool's recent changes in h2conn.go: the cold-first rule
// of reserve (94656b8), the reaper woken by net/http's state hook (8358a55), and reserve's
// single question to a connection past its first request (85f9658). Each test states the
// promise it holds the code to.

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"net"
	"slices"
	"sync"
	"sync/atomic"
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
func TestStopIsBoundedWithAClosedConnectionThatNeverHadAStream(t *testing.T) {
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
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Second)
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
		t.Errorf("Shutdown = %v after %v; want nil well within its 12 s deadline: with the gateway gone Stop "+
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

// openCountListener counts the connections it accepted that are still open (not yet closed
// by the server, which closes each once the client has) and when each was accepted.
type openCountListener struct {
	net.Listener
	open  atomic.Int64
	mu    sync.Mutex
	times []time.Time
	conns []*countedConn
}

type countedConn struct {
	net.Conn
	l    *openCountListener
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() { c.l.open.Add(-1) })
	return c.Conn.Close()
}

func (l *openCountListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.open.Add(1)
	cc := &countedConn{Conn: c, l: l}
	l.mu.Lock()
	l.times = append(l.times, time.Now())
	l.conns = append(l.conns, cc)
	l.mu.Unlock()
	return cc, nil
}

func (l *openCountListener) accepted() []time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.times)
}

// newCountedH2Server is an apnstest HTTP/2 server behind an openCountListener.
func newCountedH2Server(t *testing.T, setup func(*apnstest.HTTP2Server)) (*apnstest.HTTP2Server, *openCountListener) {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &openCountListener{Listener: inner}
	s := newH2Server(t, func(s *apnstest.HTTP2Server) {
		s.Listener = l
		if setup != nil {
			setup(s)
		}
	})
	return s, l
}

// Under load that grows the pool, with GOAWAYs and dropped connections, every notification
// reaches one end; once the client is idle, Stats.Connections counts the connections open at
// the gateway, and after the idle timeout only Start's remain: the retired ones and those
// opened for load are closed.
func TestChurnThenIdleCountsAndClosesWhatIsOpen(t *testing.T) {
	parallel(t)
	s, l := newCountedH2Server(t, func(s *apnstest.HTTP2Server) {
		s.MaxConcurrentStreams = 4
		s.Latency = 10 * time.Millisecond
		s.LatencyJitter = 10 * time.Millisecond
		s.DiscardNotifications = true
	})
	const idle = 500 * time.Millisecond
	c := newH2Client(t, s, apns.WithMaxConnections(4), apns.WithIdleTimeout(idle), apns.WithErrorHandler(func(error) {}))
	l2 := newLedger(c)
	if err := c.Start(2); err != nil {
		t.Fatal(err)
	}
	const n = 4000
	churn := make(chan struct{})
	go func() {
		defer close(churn)
		for i := range 8 {
			time.Sleep(400 * time.Millisecond)
			if i == 5 {
				s.CloseClientConnections()
			} else {
				s.GoAway()
			}
		}
	}()
	sendH2(t, c, 0, n)
	receive(t, "the churn", churn)
	waitFor(t, "every notification settled", func() bool {
		st := c.Stats()
		return st.Accepted == n && st.InFlight == 0 && st.Queued == 0
	})
	st := c.Stats()
	if ends := st.Delivered + st.Rejected + st.Unsent + st.Unconfirmed; ends != n {
		t.Errorf("stats %+v: %d ends for %d notifications", st, ends, n)
	}
	calls := l2.snapshot()
	if want := st.Rejected + st.Unsent + st.Unconfirmed; uint64(len(calls)) != want {
		t.Errorf("%d tokens reached the callback; want %d (stats %+v)", len(calls), want, st)
	}
	// Idle: the gauge and the gateway agree, and the pool goes back to Start's 2.
	deadline := time.Now().Add(idle*4 + 3*time.Second)
	for {
		got, open := c.Stats().Connections, l.open.Load()
		if got == uint64(open) && got <= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("idle for %v after the churn: Stats.Connections = %d, %d open at the gateway; want equal and at most 2 (Start's)",
				idle*4+3*time.Second, got, open)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The pool grows one connection at a time and at most one a second (WithMaxConnections), also
// when the gateway ends the grown connections with GOAWAY under load: Apple never sees a
// burst. Start(1): every connection the gateway accepts after the first is either the
// replacement of Start's connection or one opened for load; no two of them come less than a
// second apart, but for the replacement of Start's connection, which is not growth.
func TestGrowthUnderGoAwayIsNoBurst(t *testing.T) {
	parallel(t)
	s, l := newCountedH2Server(t, func(s *apnstest.HTTP2Server) {
		s.MaxConcurrentStreams = 2
		s.Latency = 20 * time.Millisecond
		s.DiscardNotifications = true
	})
	c := newH2Client(t, s, apns.WithMaxConnections(4), apns.WithIdleTimeout(time.Minute), apns.WithErrorHandler(func(error) {}))
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		time.Sleep(3500 * time.Millisecond)
		s.GoAway()
		time.Sleep(2500 * time.Millisecond)
		s.GoAway()
	}()
	// About 9 s of load at 4 connections x 2 streams x 20 ms.
	sendH2(t, c, 0, 3000)
	receive(t, "the GOAWAYs", done)
	waitFor(t, "every notification settled", func() bool {
		st := c.Stats()
		return st.Accepted == 3000 && st.InFlight == 0 && st.Queued == 0
	})
	times := l.accepted()
	bursts := 0
	for i := 2; i < len(times); i++ {
		if gap := times[i].Sub(times[i-1]); gap < 900*time.Millisecond {
			bursts++
			t.Logf("connections %d and %d accepted %v apart", i, i+1, gap.Round(time.Millisecond))
		}
	}
	// Each GOAWAY lets Start's slot reconnect at once (1 close pair per GOAWAY allowed).
	if bursts > 2 {
		t.Errorf("%d pairs of connections opened less than 0.9 s apart (accepts at %v); want at most one per GOAWAY (Start's slot's replacement)",
			bursts, offsets(times))
	}
	if st := c.Stats(); st.Delivered != 3000 {
		t.Errorf("Delivered = %d; want 3000 (stats %+v)", st.Delivered, st)
	}
}

func offsets(ts []time.Time) []time.Duration {
	var out []time.Duration
	for _, t := range ts {
		out = append(out, t.Sub(ts[0]).Round(time.Millisecond))
	}
	return out
}

// Pushes while the gateway sends GOAWAY on every connection five times, most of them
// cold (their first request, which goes first, in flight or not yet sent): every Push returns
// once; one answered 200 reached the gateway exactly once (nothing sent twice after a 200),
// and once idle the gauge counts what is open at the gateway.
func TestPushesThroughGoAwaysOnColdConnectionsAreExactlyOnce(t *testing.T) {
	parallel(t)
	s, l := newCountedH2Server(t, func(s *apnstest.HTTP2Server) {
		s.Latency = 15 * time.Millisecond
		s.LatencyJitter = 10 * time.Millisecond
	})
	c := newH2Client(t, s, apns.WithMaxConnections(3), apns.WithIdleTimeout(300*time.Millisecond),
		apns.WithErrorHandler(func(error) {}))
	if err := c.Start(2); err != nil {
		t.Fatal(err)
	}
	const callers, each = 12, 40
	var sent, failed atomic.Int64
	results := make([][]bool, callers)
	stopStorm := make(chan struct{})
	storm := make(chan struct{})
	go func() {
		defer close(storm)
		// A few: every GOAWAY on a connection that has not proven itself is a failure, met
		// with backoff (100 ms, doubling).
		for range 5 {
			select {
			case <-stopStorm:
				return
			case <-time.After(40 * time.Millisecond):
			}
			s.GoAway()
		}
	}()
	guard(t, "every Push", func() {
		var wg sync.WaitGroup
		for g := range callers {
			results[g] = make([]bool, each)
			wg.Go(func() {
				for i := range each {
					resp, err := c.Push(context.Background(), &apns.Notification{DeviceToken: token(g*each + i), Payload: []byte(`{"aps":{"alert":"x"}}`)})
					if err == nil && resp.Sent() {
						sent.Add(1)
						results[g][i] = true
					} else {
						failed.Add(1)
					}
				}
			})
		}
		wg.Wait()
	})
	close(stopStorm)
	receive(t, "the GOAWAY storm", storm)
	got := h2Received(s)
	for g := range callers {
		for i := range each {
			tok := token(g*each + i)
			if results[g][i] && got[tok] != 1 {
				t.Errorf("token %d answered 200 to Push, accepted %d times at the gateway; want 1", g*each+i, got[tok])
			}
		}
	}
	if f := failed.Load(); f > 0 {
		t.Logf("%d of %d Pushes failed (allowed: the retries ran out)", f, callers*each)
	}
	waitFor(t, "the gauge to match the gateway, the pool back to Start's 2", func() bool {
		got, open := c.Stats().Connections, l.open.Load()
		return got == uint64(open) && got <= 2
	})
}

// The same, reached through the public API alone: a Push whose context has ended when it gets
// a new connection's first stream (cold first: it does) returns the context's error, and
// about one time in two net/http returned before the stream was created (its writeRequest
// picks at random between the ended context and the stream lock): end() clears cold all the
// same, and the connection has never had a stream. Eight such Pushes on Start(9)'s new
// connections leave at least one of them so with probability 255/256; the gateway then goes
// away during Stop, while a notification waits to be sent again (503, Retry-After), and Stop
// never gives up: reserve spins on the connection that reports room but takes no reservation.
func TestStopIsBoundedAfterPushesWhoseContextEnded(t *testing.T) {
	parallel(t)
	s := newH2Server(t, nil)
	c := newH2Client(t, s, apns.WithErrorHandler(func(error) {}), apns.WithDialTimeout(time.Second))
	rej := recordRejections(c)
	if err := c.Start(9); err != nil {
		t.Fatal(err)
	}
	pl := []byte(`{"aps":{"alert":"x"}}`)
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	for i := range 8 {
		if _, err := c.Push(ended, &apns.Notification{DeviceToken: token(100 + i), Payload: pl}); !errors.Is(err, context.Canceled) {
			t.Fatalf("Push with an ended context = %v; want context.Canceled", err)
		}
	}
	// Token 1 goes on the last new connection, is answered 503 and waits 1 s to be sent again.
	s.Respond(token(1), apnstest.Response{Status: 503, Reason: "ServiceUnavailable", RetryAfter: "1", Times: 1})
	if err := c.SendNotification(context.Background(), &apns.Notification{DeviceToken: token(1), Payload: pl}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the 503 for token 1", func() bool { return len(s.Rejected()) == 1 })
	ctx, cancelStop := context.WithTimeout(context.Background(), 12*time.Second)
	defer cancelStop()
	began := time.Now()
	stopped := make(chan error, 1)
	go func() { stopped <- c.Shutdown(ctx) }()
	waitFor(t, "the scheduler's reaper to exit", func() bool {
		return countGoroutines(t, "(*h2Transport).reaper") == 0
	})
	s.Close()
	if err := receive(t, "Shutdown", stopped); err != nil {
		t.Errorf("Shutdown = %v after %v; want nil well within its 12 s deadline: with the gateway gone Stop "+
			"gives up after 3 refused attempts at most a second apart (stats %+v)", err, time.Since(began).Round(time.Millisecond), c.Stats())
	}
	if cs := rej.snapshot()[token(1)]; len(cs) != 1 {
		t.Errorf("token 1 reached the callback %d times; want once", len(cs))
	}
}
