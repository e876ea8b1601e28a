package apns_test

// The lifecycle both protocols share (issue 12): Start, Send, Stop and Shutdown, admission,
// the callbacks and the statistics, as the doc comments of Client state them. Every test runs
// once per transport from one table, lifecycleTransports, so a bound that holds for one is
// checked for the other. Every client is made by lifecycleClient: its recorder checks on every
// test that the callbacks (callback, rejection callback and error handler share a goroutine)
// never run concurrently nor after Stop returned, and its cleanup checks that Stop left no
// goroutine of package apns behind.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	apns "github.com/Kwik-messenger/apns-go"
	"github.com/Kwik-messenger/apns-go/apnstest"
)

// lifecycleTransport is one protocol with its mock gateway.
type lifecycleTransport struct {
	name     string
	protocol apns.Protocol
	// gateway returns the gateway at hostPort as CreateClient takes it.
	gateway func(hostPort string) string
	// serve starts a mock gateway on l (nil: a free port), closed when the test ends.
	serve func(t *testing.T, l net.Listener) *lifecycleGateway
}

// lifecycleGateway is what the lifecycle tests need of either mock.
type lifecycleGateway struct {
	addr    string                // host:port
	reject  func(tok string)      // refuse tok's notifications with status 8 (invalid token)
	count   func() int            // notifications accepted so far
	arrived func() map[string]int // hex token -> times accepted
	close   func()                // the gateway goes away: connections dropped, new ones refused
}

var lifecycleTransports = []lifecycleTransport{
	{
		name:     "binary",
		protocol: apns.ProtocolBinary,
		gateway:  func(hostPort string) string { return hostPort },
		serve: func(t *testing.T, l net.Listener) *lifecycleGateway {
			s := apnstest.NewUnstartedServer()
			s.Listener = l
			s.Start()
			t.Cleanup(s.Close)
			return &lifecycleGateway{
				addr:    s.Addr,
				reject:  func(tok string) { s.RejectToken(tok, uint8(apns.StatusInvalidToken)) },
				count:   s.Count,
				arrived: func() map[string]int { return received(s) },
				close:   s.Close,
			}
		},
	},
	{
		name:     "http2",
		protocol: apns.ProtocolHTTP2,
		gateway:  func(hostPort string) string { return "https://" + hostPort },
		serve: func(t *testing.T, l net.Listener) *lifecycleGateway {
			s := apnstest.NewUnstartedHTTP2Server()
			s.Listener = l
			s.Start()
			t.Cleanup(s.Close)
			return &lifecycleGateway{
				addr: s.Addr,
				reject: func(tok string) {
					s.Respond(tok, apnstest.Response{Status: 400, Reason: "BadDeviceToken"}) // code 8
				},
				count:   s.Count,
				arrived: func() map[string]int { return h2Received(s) },
				close:   s.Close,
			}
		},
	},
}

// forEachTransport runs f as a subtest for each transport.
func forEachTransport(t *testing.T, f func(t *testing.T, tr lifecycleTransport)) {
	for _, tr := range lifecycleTransports {
		t.Run(tr.name, func(t *testing.T) { f(t, tr) })
	}
}

// lifecycleTLS trusts the mocks' test CA (one for every mock, so a client can be made before
// its gateway is up).
func lifecycleTLS() *tls.Config {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(apnstest.CACertPEM())
	return &tls.Config{RootCAs: pool}
}

// lifecycleClient returns a client of tr's gateway at hostPort, with a recorder of its
// callbacks and error handler. When the test ends it is stopped, checked for leaked
// goroutines, and then for callbacks that overlapped or ran after the test's Stop returned.
func lifecycleClient(t *testing.T, tr lifecycleTransport, hostPort string, opts ...apns.Option) (*apns.Client, *lifecycleRecorder) {
	t.Helper()
	r := &lifecycleRecorder{codes: map[string][]uint8{}}
	cert, key := apnstest.ClientCertPEM()
	opts = append([]apns.Option{
		apns.WithProtocol(tr.protocol),
		apns.WithTLSConfig(lifecycleTLS()),
		apns.WithErrorHandler(r.errorHandler),
	}, opts...)
	c, err := apns.CreateClient(tr.gateway(hostPort), cert, key, false, opts...)
	if err != nil {
		t.Fatal(err)
	}
	c.SetCallback(r.callback)
	c.SetRejectionCallback(r.rejection)
	t.Cleanup(func() { r.check(t) }) // runs after stopAfter's cleanup (last in, first out)
	stopAfter(t, c)
	return c, r
}

// lifecycleRecorder records a client's callbacks, and what would break their contract: two handlers
// running at once (the callback, the rejection callback and the error handler share one
// goroutine), a callback after Stop returned, a rejection callback that does not follow the
// callback of its notification.
type lifecycleRecorder struct {
	mu         sync.Mutex
	codes      map[string][]uint8 // hex token -> codes, in order
	calls      int
	rejections int    // calls of the rejection callback
	unsure     int    // of them, with the Reason of a possibly delivered notification
	mismatches int    // rejection callbacks whose notification or code was not the callback's just before
	last       string // hex token and code of the last callback, until the rejection callback
	block      func() // if set, the next callback runs it first (once)

	running  atomic.Int32
	overlaps atomic.Int32
	stopped  atomic.Bool // set once the test's Stop has returned
	late     atomic.Int32
	refused  atomic.Int32 // errors handed to the error handler for a refused connection
}

func (r *lifecycleRecorder) enter() {
	if r.running.Add(1) > 1 {
		r.overlaps.Add(1)
	}
	if r.stopped.Load() {
		r.late.Add(1)
	}
	runtime.Gosched() // widens the window in which an overlapping handler would be seen
}

func (r *lifecycleRecorder) leave() { r.running.Add(-1) }

func (r *lifecycleRecorder) callback(m *apns.Message, code uint8) {
	r.enter()
	defer r.leave()
	r.mu.Lock()
	tok := hex.EncodeToString(m.Token)
	r.codes[tok] = append(r.codes[tok], code)
	r.calls++
	r.last = tok + "/" + strconv.Itoa(int(code))
	block := r.block
	r.block = nil
	r.mu.Unlock()
	if block != nil {
		block()
	}
}

// reasonPossiblyDelivered is the Rejection.Reason of a notification counted in
// Stats.Unconfirmed (see Stats), on both protocols.
const reasonPossiblyDelivered = "unknown (possibly delivered)"

func (r *lifecycleRecorder) rejection(rej *apns.Rejection) {
	r.enter()
	defer r.leave()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rejections++
	if rej.Reason == reasonPossiblyDelivered {
		r.unsure++
	}
	if rej.Message == nil || hex.EncodeToString(rej.Message.Token)+"/"+strconv.Itoa(int(rej.Code)) != r.last {
		r.mismatches++
	}
	r.last = ""
}

func (r *lifecycleRecorder) errorHandler(err error) {
	r.enter()
	defer r.leave()
	if errors.Is(err, syscall.ECONNREFUSED) {
		r.refused.Add(1)
	}
}

// blockNext makes the next callback wait until release is closed (or waitGuard passes, so
// that a failed test cannot hang), closing entered when it starts waiting.
func (r *lifecycleRecorder) blockNext(entered chan<- struct{}, release <-chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.block = func() {
		close(entered)
		select {
		case <-release:
		case <-time.After(waitGuard):
		}
	}
}

func (r *lifecycleRecorder) snapshot() (codes map[string][]uint8, calls int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	codes = make(map[string][]uint8, len(r.codes))
	for k, v := range r.codes {
		codes[k] = v
	}
	return codes, r.calls
}

func (r *lifecycleRecorder) check(t *testing.T) {
	t.Helper()
	if n := r.overlaps.Load(); n > 0 {
		t.Errorf("a callback or the error handler started %d times while another was running; want one at a time", n)
	}
	if n := r.late.Load(); n > 0 {
		t.Errorf("%d callbacks ran after Stop returned", n)
	}
}

// lifecycleStop stops c (bounded) and notes that Stop has returned: from now on a callback
// is a failure.
func lifecycleStop(t *testing.T, c *apns.Client, r *lifecycleRecorder) {
	t.Helper()
	stop(t, c)
	r.stopped.Store(true)
}

// sendTokens sends notifications from..to-1, failing the test if one is refused or waits
// waitGuard for room in the queue.
func sendTokens(t *testing.T, c *apns.Client, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), waitGuard)
		err := c.SendContext(ctx, token(i), time.Now().Add(time.Hour), apns.PRIORITY_IMMEDIATE, payload(i))
		cancel()
		if err != nil {
			t.Fatalf("Send(%d): %v; stats %+v", i, err, c.Stats())
		}
	}
}

// checkOneEndEach checks, after Stop, that every accepted notification reached exactly one
// end: Accepted = Delivered + Rejected + Unsent + Unconfirmed with nothing queued, in flight or
// connected, the callback ran once for each
// that was not delivered, and never twice for one notification (every token is sent once);
// the rejection callback ran after each callback, and told the possibly delivered apart.
func checkOneEndEach(t *testing.T, c *apns.Client, r *lifecycleRecorder) {
	t.Helper()
	st := c.Stats()
	if ends := st.Delivered + st.Rejected + st.Unsent + st.Unconfirmed; st.Accepted != ends {
		t.Errorf("Accepted = %d; want Delivered + Rejected + Unsent + Unconfirmed = %d (stats %+v)", st.Accepted, ends, st)
	}
	if st.Queued != 0 || st.InFlight != 0 || st.Connections != 0 {
		t.Errorf("after Stop: %d queued, %d in flight, %d connections; want none", st.Queued, st.InFlight, st.Connections)
	}
	codes, calls := r.snapshot()
	if want := st.Rejected + st.Unsent + st.Unconfirmed; uint64(calls) != want {
		t.Errorf("callback ran %d times; want Rejected + Unsent + Unconfirmed = %d (stats %+v)", calls, want, st)
	}
	r.mu.Lock()
	rejections, unsure, mismatches := r.rejections, r.unsure, r.mismatches
	r.mu.Unlock()
	if rejections != calls || mismatches != 0 {
		t.Errorf("rejection callback ran %d times, %d of them not right after the callback of its notification with its code; want %d, each right after", rejections, mismatches, calls)
	}
	if uint64(unsure) != st.Unconfirmed {
		t.Errorf("%d rejections with Reason %q; want Unconfirmed = %d", unsure, reasonPossiblyDelivered, st.Unconfirmed)
	}
	for tok, cs := range codes {
		if len(cs) > 1 {
			t.Errorf("token %s reached the callback %d times (codes %v); want once", tok[56:], len(cs), cs)
		}
	}
}

// checkReported fails unless each token from..to-1 reached the callback once, with code.
func checkReported(t *testing.T, r *lifecycleRecorder, from, to int, code apns.Status) {
	t.Helper()
	codes, _ := r.snapshot()
	for i := from; i < to; i++ {
		if cs := codes[token(i)]; len(cs) != 1 || cs[0] != uint8(code) {
			t.Errorf("token %d: callback codes %v; want [%d]", i, cs, code)
		}
	}
}

// checkArrivedOnce fails unless each token from..to-1 arrived at the gateway exactly once.
func checkArrivedOnce(t *testing.T, g *lifecycleGateway, from, to int) {
	t.Helper()
	got := g.arrived()
	for i := from; i < to; i++ {
		if k := got[token(i)]; k != 1 {
			t.Errorf("token %d arrived %d times; want once", i, k)
		}
	}
}

// blockedIn counts the goroutines blocked (state as waitBlocked takes it) in a function whose
// name contains fn.
func blockedIn(fn, state string) int {
	buf := make([]byte, 1<<20)
	found := 0
	for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
		header, frames, _ := strings.Cut(g, "\n")
		if strings.Contains(header, "["+state) && strings.Contains(frames, fn) {
			found++
		}
	}
	return found
}

// Send before Start: the notification waits in the queue, and Start delivers it.
func TestLifecycleSendBeforeStartIsDeliveredAfterStart(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr lifecycleTransport) {
		g := tr.serve(t, nil)
		c, r := lifecycleClient(t, tr, g.addr)
		const n = 20
		sendTokens(t, c, 0, n)
		if got := g.count(); got != 0 {
			t.Fatalf("the gateway got %d notifications before Start; want 0", got)
		}
		if st := c.Stats(); st.Queued != n {
			t.Errorf("before Start, Stats().Queued = %d; want %d", st.Queued, n)
		}
		if err := c.Start(1); err != nil {
			t.Fatal(err)
		}
		lifecycleStop(t, c, r)
		checkArrivedOnce(t, g, 0, n)
		if _, calls := r.snapshot(); calls != 0 {
			t.Errorf("callback ran %d times; want none", calls)
		}
		if st := c.Stats(); st.Delivered != n {
			t.Errorf("stats %+v; want %d delivered", st, n)
		}
		checkOneEndEach(t, c, r)
	})
}

// Admission: SendContext returns ctx's error when ctx ends while it waits for room in a full
// queue; a Send waiting there returns ErrStopped when Stop begins; every Send after Stop
// returns ErrStopped.
func TestLifecycleSendWaitsForRoomUntilItsContextEndsOrStopBegins(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr lifecycleTransport) {
		g := tr.serve(t, nil)
		c, r := lifecycleClient(t, tr, g.addr, apns.WithQueueSize(1))
		sendTokens(t, c, 0, 1) // fills the queue: the client is not started

		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		waiting := make(chan error, 1)
		go func() { waiting <- c.SendContext(ctx, token(1), time.Time{}, apns.PRIORITY_IMMEDIATE, payload(1)) }()
		waitBlocked(t, "apns-go.enqueue", "select")
		cancel()
		if err := receive(t, "SendContext to return when its ctx ended", waiting); !errors.Is(err, context.Canceled) {
			t.Errorf("SendContext on a full queue whose ctx ended = %v; want context.Canceled", err)
		}

		go func() { waiting <- c.Send(token(2), time.Time{}, apns.PRIORITY_IMMEDIATE, payload(2)) }()
		waitBlocked(t, "apns-go.enqueue", "select")
		lifecycleStop(t, c, r)
		if err := receive(t, "the waiting Send to return when Stop began", waiting); !errors.Is(err, apns.ErrStopped) {
			t.Errorf("Send waiting on a full queue when Stop began = %v; want ErrStopped", err)
		}

		if err := c.Send(token(3), time.Time{}, apns.PRIORITY_IMMEDIATE, payload(3)); !errors.Is(err, apns.ErrStopped) {
			t.Errorf("Send after Stop = %v; want ErrStopped", err)
		}
		if err := c.SendContext(context.Background(), token(4), time.Time{}, apns.PRIORITY_IMMEDIATE, payload(4)); !errors.Is(err, apns.ErrStopped) {
			t.Errorf("SendContext after Stop = %v; want ErrStopped", err)
		}
		if st := c.Stats(); st.Accepted != 1 {
			t.Errorf("stats %+v; want only the first notification accepted", st)
		}
		checkReported(t, r, 0, 1, apns.StatusUnknown) // queued, never started
		checkOneEndEach(t, c, r)
	})
}

// Start's errors: ErrNoWorkers for fewer than one worker, ErrAlreadyStarted the second time,
// ErrStopped after Stop.
func TestLifecycleStartRefusesNoWorkersASecondStartAndAStartAfterStop(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr lifecycleTransport) {
		g := tr.serve(t, nil)
		c, r := lifecycleClient(t, tr, g.addr)
		if err := c.Start(0); !errors.Is(err, apns.ErrNoWorkers) {
			t.Errorf("Start(0) = %v; want ErrNoWorkers", err)
		}
		if err := c.Start(1); err != nil {
			t.Fatalf("Start(1) after Start(0) = %v; want nil", err)
		}
		if err := c.Start(1); !errors.Is(err, apns.ErrAlreadyStarted) {
			t.Errorf("second Start = %v; want ErrAlreadyStarted", err)
		}
		sendTokens(t, c, 0, 5)
		lifecycleStop(t, c, r)
		if err := c.Start(1); !errors.Is(err, apns.ErrStopped) {
			t.Errorf("Start after Stop = %v; want ErrStopped", err)
		}
		checkArrivedOnce(t, g, 0, 5)
		checkOneEndEach(t, c, r)
	})
}

// A Start that reaches nothing returns an error, keeps what was queued, and may be called
// again: once the gateway is up, it succeeds and the queue is delivered.
func TestLifecycleFailedStartCanBeRetriedOnceTheGatewayIsUp(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr lifecycleTransport) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close() // nothing listens there now
		c, r := lifecycleClient(t, tr, addr)
		sendTokens(t, c, 0, 5)
		if err := c.Start(1); err == nil {
			t.Fatal("Start with nothing listening = nil; want an error")
		}
		// Linux lets a port with no listener be bound again (Go sets SO_REUSEADDR); only another
		// listener taking this very port meanwhile could fail it.
		if l, err = net.Listen("tcp", addr); err != nil {
			t.Fatalf("listening again on %s: %v", addr, err)
		}
		g := tr.serve(t, l)
		if err := c.Start(1); err != nil {
			t.Fatalf("Start once the gateway is up = %v; want nil", err)
		}
		sendTokens(t, c, 5, 10)
		lifecycleStop(t, c, r)
		checkArrivedOnce(t, g, 0, 10)
		if st := c.Stats(); st.Delivered != 10 {
			t.Errorf("stats %+v; want 10 delivered", st)
		}
		checkOneEndEach(t, c, r)
	})
}

// A Start that reaches nothing tells the error handler of its failed attempts (WithErrorHandler:
// "failed connection attempts"; Start: the handler "heard of the failed attempts"), and a Stop
// after it reports the queue with StatusUnknown.
func TestLifecycleFailedStartTellsTheErrorHandlerAndStopReportsTheQueue(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr lifecycleTransport) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close() // nothing listens there
		c, r := lifecycleClient(t, tr, addr)
		const n = 5
		sendTokens(t, c, 0, n)
		if err := c.Start(1); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("Start with nothing listening = %v; want an error wrapping ECONNREFUSED", err)
		}
		lifecycleStop(t, c, r) // waits for the handlers
		checkReported(t, r, 0, n, apns.StatusUnknown)
		if st := c.Stats(); st.Unsent != n {
			t.Errorf("stats %+v; want %d unsent", st, n)
		}
		checkOneEndEach(t, c, r)
		if r.refused.Load() == 0 {
			t.Errorf("the error handler heard of no refused connection attempt; want Start's failed attempts")
		}
	})
}

// Stop before Start returns, and reports every queued notification with StatusUnknown
// (counted in Unsent); the client cannot be started afterwards.
func TestLifecycleStopBeforeStartReportsTheQueueAsUnknown(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr lifecycleTransport) {
		g := tr.serve(t, nil)
		c, r := lifecycleClient(t, tr, g.addr)
		const n = 10
		sendTokens(t, c, 0, n)
		lifecycleStop(t, c, r)
		checkReported(t, r, 0, n, apns.StatusUnknown)
		if st := c.Stats(); st.Unsent != n {
			t.Errorf("stats %+v; want %d unsent", st, n)
		}
		if err := c.Start(1); !errors.Is(err, apns.ErrStopped) {
			t.Errorf("Start after Stop = %v; want ErrStopped", err)
		}
		if got := g.count(); got != 0 {
			t.Errorf("the gateway got %d notifications from a client never started", got)
		}
		checkOneEndEach(t, c, r)
	})
}

// Stop is idempotent, and Stops made while the first runs return only once it has finished:
// while a callback is blocked none of them returns; once it returns all of them do.
func TestLifecycleConcurrentStopsReturnOnceTheFirstHasFinished(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr lifecycleTransport) {
		g := tr.serve(t, nil)
		g.reject(token(0))
		c, r := lifecycleClient(t, tr, g.addr)
		entered, release := make(chan struct{}), make(chan struct{})
		releaseOnce := sync.OnceFunc(func() { close(release) })
		t.Cleanup(releaseOnce) // before the cleanup's Stop, should the test fail early
		r.blockNext(entered, release)
		if err := c.Start(1); err != nil {
			t.Fatal(err)
		}
		sendTokens(t, c, 0, 10)
		receive(t, "the callback of the rejected notification", entered)

		// Each Stop reports its index when it returns. None may while the callback is blocked:
		// the first waits for the callback, the others for the first.
		type result struct {
			i   int
			err error
		}
		returned := make(chan result, 3)
		goStop := func(i int) { go func() { returned <- result{i, c.Stop()} }() }
		waitStops := func(n int) {
			t.Helper()
			waitFor(t, "the Stops to wait in Shutdown", func() bool {
				return len(returned) > 0 || blockedIn("apns-go.(*Client).Shutdown", "select") >= n
			})
			if len(returned) > 0 {
				res := <-returned
				t.Fatalf("Stop %d returned (%v) while a callback was still running", res.i, res.err)
			}
		}
		goStop(1)
		waitStops(1) // the first Stop has begun
		goStop(2)
		goStop(3)
		waitStops(3)
		releaseOnce()
		for range 3 {
			if res := receive(t, "the Stops to return once the callback did", returned); res.err != nil {
				t.Errorf("Stop %d = %v; want nil", res.i, res.err)
			}
		}
		r.stopped.Store(true)
		lifecycleStop(t, c, r) // once more, after all: returns nil at once
		checkReported(t, r, 0, 1, apns.StatusInvalidToken)
		checkArrivedOnce(t, g, 1, 10)
		checkOneEndEach(t, c, r)
	})
}

// Every accepted notification reaches exactly one end: delivered once, or rejected and
// handed to the callback once with the gateway's code.
func TestLifecycleEveryNotificationReachesExactlyOneEnd(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr lifecycleTransport) {
		g := tr.serve(t, nil)
		const n, every = 300, 10
		for i := 0; i < n; i += every {
			g.reject(token(i))
		}
		c, r := lifecycleClient(t, tr, g.addr)
		if err := c.Start(2); err != nil {
			t.Fatal(err)
		}
		sendTokens(t, c, 0, n)
		lifecycleStop(t, c, r)
		codes, _ := r.snapshot()
		got := g.arrived()
		for i := 0; i < n; i++ {
			if i%every == 0 {
				if cs := codes[token(i)]; len(cs) != 1 || cs[0] != uint8(apns.StatusInvalidToken) {
					t.Errorf("rejected token %d: callback codes %v; want [8]", i, cs)
				}
				if got[token(i)] != 0 {
					t.Errorf("rejected token %d was accepted by the gateway", i)
				}
			} else if cs, k := codes[token(i)], got[token(i)]; len(cs) != 0 || k != 1 {
				t.Errorf("token %d: callback codes %v, arrived %d times; want no callback, once", i, cs, k)
			}
		}
		st := c.Stats()
		if st.Rejected != n/every || st.RejectedByStatus[apns.StatusInvalidToken] != n/every || st.Delivered != n-n/every {
			t.Errorf("stats %+v; want %d rejected with 8, %d delivered", st, n/every, n-n/every)
		}
		checkOneEndEach(t, c, r)
	})
}

// Callbacks run one at a time (the error handler too, on the same goroutine), and none runs
// after Stop has returned, with rejections learned on two connections at once and Stop
// called while callbacks are still due. (The lifecycleRecorder checks both on every test of this
// file; this one makes many callbacks.)
func TestLifecycleCallbacksRunOneAtATimeAndNoneAfterStop(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr lifecycleTransport) {
		g := tr.serve(t, nil)
		const n, every = 200, 4 // a binary rejection costs a connection
		for i := 0; i < n; i += every {
			g.reject(token(i))
		}
		c, r := lifecycleClient(t, tr, g.addr)
		if err := c.Start(2); err != nil {
			t.Fatal(err)
		}
		sendTokens(t, c, 0, n)
		lifecycleStop(t, c, r)
		checkNoGoroutines(t) // the dispatcher is gone: no callback can run from here on
		if _, calls := r.snapshot(); calls != n/every {
			t.Errorf("callback ran %d times; want %d", calls, n/every)
		}
		r.check(t)
		checkOneEndEach(t, c, r)
	})
}

// With the gateway gone after Start, Stop is bounded (stop fails the test past waitGuard; no
// time is asserted) and reports what it could not deliver with StatusUnknown, as unsent or
// unconfirmed.
func TestLifecycleStopWithTheGatewayGoneIsBoundedAndReportsEverything(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr lifecycleTransport) {
		g := tr.serve(t, nil)
		c, r := lifecycleClient(t, tr, g.addr)
		if err := c.Start(1); err != nil {
			t.Fatal(err)
		}
		const before, after = 5, 15
		sendTokens(t, c, 0, before)
		waitFor(t, "the gateway to accept the first notifications", func() bool { return g.count() == before })
		g.close()
		sendTokens(t, c, before, after)
		lifecycleStop(t, c, r)
		// Sent before the gateway went: delivered, or (answer lost with the connection)
		// reported as possibly delivered.
		codes, _ := r.snapshot()
		for i := 0; i < before; i++ {
			if cs := codes[token(i)]; len(cs) > 1 || len(cs) == 1 && cs[0] != uint8(apns.StatusUnknown) {
				t.Errorf("token %d (accepted by the gateway): callback codes %v; want none or [255]", i, cs)
			}
		}
		checkReported(t, r, before, after, apns.StatusUnknown)
		st := c.Stats()
		if st.Rejected != 0 || st.Unsent+st.Unconfirmed < after-before {
			t.Errorf("stats %+v; want none rejected, at least %d unsent or unconfirmed", st, after-before)
		}
		checkOneEndEach(t, c, r)
	})
}

// Shutdown with a context that has already ended returns ctx's error (here while a callback
// runs, which it does not wait for); the callbacks still due run afterwards, a later Stop
// waits for them, and every notification reaches exactly one end.
func TestLifecycleShutdownWithAnEndedContextStillEndsEveryNotification(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr lifecycleTransport) {
		g := tr.serve(t, nil)
		const n, every = 200, 10
		for i := 0; i < n; i += every {
			g.reject(token(i))
		}
		c, r := lifecycleClient(t, tr, g.addr)
		entered, release := make(chan struct{}), make(chan struct{})
		releaseOnce := sync.OnceFunc(func() { close(release) })
		t.Cleanup(releaseOnce)
		r.blockNext(entered, release)
		if err := c.Start(1); err != nil {
			t.Fatal(err)
		}
		sendTokens(t, c, 0, n)
		receive(t, "the first callback", entered)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := shutdown(t, c, ctx); !errors.Is(err, context.Canceled) {
			t.Errorf("Shutdown with an ended context = %v; want context.Canceled", err)
		}
		if err := c.Send(token(n), time.Time{}, apns.PRIORITY_IMMEDIATE, payload(n)); !errors.Is(err, apns.ErrStopped) {
			t.Errorf("Send after Shutdown = %v; want ErrStopped", err)
		}
		releaseOnce()
		lifecycleStop(t, c, r) // waits for the callbacks Shutdown left
		checkOneEndEach(t, c, r)
		if st := c.Stats(); st.Accepted != n {
			t.Errorf("stats %+v; want %d accepted", st, n)
		}
	})
}
