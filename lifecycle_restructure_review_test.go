package apns_test

// Attack tests on the restructured lifecycle (issue 12): one lifecycle over two transports, and
// the lazy callback dispatcher. Each test states the promise it holds the code to.

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	apns "github.com/Kwik-messenger/apns-go"
	"github.com/Kwik-messenger/apns-go/apnstest"
)

// firstConnListener serves the first connection it accepts and closes every later one at once,
// so that of the connections Start opens exactly one succeeds. It counts the served connection
// while it is open: until a read or write on it fails (the client closed it) or it is closed.
type firstConnListener struct {
	net.Listener
	accepted atomic.Int32
	open     atomic.Int32
}

func (l *firstConnListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.accepted.Add(1) > 1 {
			c.Close()
			continue
		}
		l.open.Add(1)
		return &trackedConn{Conn: c, l: l}, nil
	}
}

type trackedConn struct {
	net.Conn
	l      *firstConnListener
	closed atomic.Bool
}

func (c *trackedConn) gone() {
	if c.closed.CompareAndSwap(false, true) {
		c.l.open.Add(-1)
	}
}

func (c *trackedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil {
		c.gone()
	}
	return n, err
}

func (c *trackedConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if err != nil {
		c.gone()
	}
	return n, err
}

func (c *trackedConn) Close() error {
	c.gone()
	return c.Conn.Close()
}

// holdingLogHandler is a slog handler that holds the first record whose message is msg until
// release is closed (or twice waitGuard passes, so that a failed test cannot hang, and a
// waitFor of the test gives up first), closing entered
// when it starts holding it. It lets every other record through at once.
type holdingLogHandler struct {
	msg     string
	once    *sync.Once
	entered chan struct{}
	release chan struct{}
}

func newHoldingLogHandler(msg string) *holdingLogHandler {
	return &holdingLogHandler{msg: msg, once: new(sync.Once), entered: make(chan struct{}), release: make(chan struct{})}
}

func (h *holdingLogHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *holdingLogHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *holdingLogHandler) WithGroup(string) slog.Handler            { return h }
func (h *holdingLogHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Message != h.msg {
		return nil
	}
	first := false
	h.once.Do(func() { first = true })
	if first {
		close(h.entered)
		select {
		case <-h.release:
		case <-time.After(2 * waitGuard):
		}
	}
	return nil
}

// goroutinesIn counts the goroutines with a frame whose function name contains fn.
func goroutinesIn(fn string) int {
	buf := make([]byte, 4<<20)
	found := 0
	for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
		if strings.Contains(g, fn) {
			found++
		}
	}
	return found
}

// Stop closes the client's connections before it returns (Stop's doc: the workers "close their
// connections and exit"; Stats: the Connections gauge reads 0 once Stop has returned), also
// when it runs while Start is still opening connections: Start(2), one connection opens, the
// other's attempt fails, and Start is still in its dial phase (here held in the logger, user
// code, on the failed attempt's "connection attempt failed" record) when Stop is called. Stop
// waits for that Start (review: it returned with Start's connection open and counted), which
// the logger holds until Stop is seen waiting; a slow dial, the abort would cut short.
func TestRestructureStopDuringStartClosesWhatStartOpened(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr lifecycleTransport) {
		inner, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		l := &firstConnListener{Listener: inner}
		g := tr.serve(t, l)
		logs := newHoldingLogHandler("apns: connection attempt failed")
		c, r := lifecycleClient(t, tr, g.addr, apns.WithLogger(slog.New(logs)))
		sendTokens(t, c, 0, 2)

		started := make(chan error, 1)
		go func() { started <- c.Start(2) }()
		released := false
		release := func() {
			if !released {
				released = true
				close(logs.release)
			}
		}
		defer release()
		receive(t, "the failed connection attempt's log record", logs.entered)
		dialer := "(*binaryTransport).open.func1"
		if tr.protocol == apns.ProtocolHTTP2 {
			dialer = "(*h2Transport).dial.func1"
		}
		// The connection that opened is done dialing; the other is held in the logger.
		waitFor(t, "one of Start's two dials to be done", func() bool { return goroutinesIn(dialer) == 1 })
		if l.open.Load() != 1 {
			t.Fatalf("%d connections open at the gateway while Start dials; want 1", l.open.Load())
		}

		stopped := stopAsync(c)
		waitBlocked(t, "(*Client).Shutdown", "sync.WaitGroup.Wait")
		release()
		if err := receive(t, "Stop", stopped); err != nil {
			t.Errorf("Stop: %v", err)
		}
		r.stopped.Store(true)
		st := c.Stats()
		if st.Connections != 0 {
			t.Errorf("Stats.Connections = %d once Stop has returned; want 0 (Start's connection is still open)", st.Connections)
		}
		// The gateway learns of the close after the client made it.
		waitFor(t, "the gateway to see the connection Start opened closed", func() bool { return l.open.Load() == 0 })
		if err := receive(t, "Start", started); !errors.Is(err, apns.ErrStopped) {
			t.Errorf("Start = %v; want ErrStopped", err)
		}
		checkOneEndEach(t, c, r)
	})
}

// holdListener serves the first connection it accepts and holds every later one unanswered (a
// gateway that accepts TCP and never completes the TLS handshake), until it is closed.
type holdListener struct {
	net.Listener
	mu       sync.Mutex
	accepted int
	held     []net.Conn
}

func (l *holdListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		l.mu.Lock()
		l.accepted++
		first := l.accepted == 1
		if !first {
			l.held = append(l.held, c)
		}
		l.mu.Unlock()
		if first {
			return c, nil
		}
	}
}

func (l *holdListener) Close() error {
	l.mu.Lock()
	for _, c := range l.held {
		c.Close()
	}
	l.held = nil
	l.mu.Unlock()
	return l.Listener.Close()
}

// The same without any user code in the way: Start(2) against a gateway that completes the
// first connection and never answers the second's handshake, so that Start waits in its dial
// phase; Stop then cuts the hanging attempt short (its abort) and returns. Once it has
// returned, Stats.Connections must read 0 (Stats' doc and the lifecycle tests' contract). Stop
// races Start's discard of the connection it opened: a few rounds are enough to lose it.
func TestRestructureStopDuringStartLeavesNoConnectionCounted(t *testing.T) {
	tr := lifecycleTransports[1] // HTTP/2: its gauge counts a connection from the moment it opens
	if tr.protocol != apns.ProtocolHTTP2 {
		t.Fatal("lifecycleTransports[1] is not HTTP/2")
	}
	rounds := 40
	if testing.Short() {
		rounds = 10
	}
	for i := 0; i < rounds; i++ {
		inner, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		l := &holdListener{Listener: inner}
		g := tr.serve(t, l)
		c, r := lifecycleClient(t, tr, g.addr)
		started := make(chan error, 1)
		go func() { started <- c.Start(2) }()
		waitFor(t, "Start to have opened one connection and to wait for the other", func() bool {
			return c.Stats().Connections == 1 && goroutinesIn("(*h2Transport).dial.func1") == 1
		})
		lifecycleStop(t, c, r)
		n := c.Stats().Connections
		if err := receive(t, "Start", started); !errors.Is(err, apns.ErrStopped) {
			t.Errorf("round %d: Start = %v; want ErrStopped", i, err)
		}
		if n != 0 {
			t.Fatalf("round %d: Stats.Connections = %d right after Stop returned; want 0 (Start still held the connection it opened)", i, n)
		}
	}
}

// A Push in progress when Stop is called gets its answer first (Stop's doc), a 410 included,
// whose token reaches the feedback client; a Push made once Stop has begun is refused with
// ErrStopped at once (issue 12: drain refuses Push at once); the queue's notifications sent
// alongside each reach their one end, and Stop returns after the held Push has returned.
func TestRestructurePushInProgressWhenStopIsCalledGetsItsAnswer(t *testing.T) {
	held := token(1000) // not one of sendAll's
	entered := make(chan struct{})
	var enterOnce sync.Once
	release := make(chan struct{})
	s := newH2Server(t, func(s *apnstest.HTTP2Server) {
		s.RespondFunc(func(r apnstest.Request) *apnstest.Response {
			if r.Token != held {
				return nil
			}
			enterOnce.Do(func() { close(entered) })
			select {
			case <-release:
			case <-time.After(2 * waitGuard):
			}
			return &apnstest.Response{Status: 410, Reason: "Unregistered"}
		})
	})
	c := newH2Client(t, s)
	fc, err := c.SetupFeedbackClient("unused", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	l := newLedger(c)
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	// A connection takes no second request until its first has its answer: answer one first.
	if resp, err := c.Push(context.Background(), &apns.Notification{DeviceToken: token(999), Payload: payload(999)}); err != nil || !resp.Sent() {
		t.Fatalf("first Push = %+v, %v; want it sent", resp, err)
	}
	type result struct {
		resp *apns.Response
		err  error
	}
	pushed := make(chan result, 1)
	go func() {
		resp, err := c.Push(context.Background(), &apns.Notification{DeviceToken: held, Payload: payload(1000)})
		pushed <- result{resp, err}
	}()
	receive(t, "the held Push to reach the gateway", entered)
	sendAll(t, c, 5)
	stopped := stopAsync(c)
	waitFor(t, "Stop to refuse Push", func() bool {
		_, err := c.Push(context.Background(), &apns.Notification{DeviceToken: token(2), Payload: payload(2)})
		return errors.Is(err, apns.ErrStopped)
	})
	select {
	case err := <-stopped:
		t.Fatalf("Stop returned (%v) while a Push it must wait for was held at the gateway", err)
	default:
	}
	close(release)
	res := receive(t, "the held Push", pushed)
	if res.err != nil || res.resp == nil || res.resp.StatusCode != 410 {
		t.Fatalf("held Push = %+v, %v; want its answer, 410", res.resp, res.err)
	}
	if err := receive(t, "Stop", stopped); err != nil {
		t.Errorf("Stop: %v", err)
	}
	tokens, err := fc.BadTokens(context.Background())
	if err != nil || len(tokens) != 1 || tokens[0].Token != held {
		t.Errorf("BadTokens after Stop = %v, %v; want the held Push's token", tokens, err)
	}
	st := c.Stats()
	if st.Accepted != 5 || st.Delivered+st.Rejected+st.Unsent+st.Unconfirmed != 5 {
		t.Errorf("stats %+v; want the 5 sent, each settled", st)
	}
	if calls := l.snapshot(); uint64(len(calls)) != st.Rejected+st.Unsent+st.Unconfirmed {
		t.Errorf("%d callbacks; want %d", len(calls), st.Rejected+st.Unsent+st.Unconfirmed)
	}
}

// Start racing Stop, on both transports, many rounds: Start returns nil or ErrStopped, every
// notification sent before reaches exactly one end with one callback each, no callback
// overlaps another or runs after Stop returned (the recorder), and nothing of the client is
// left running once Start has returned too (stopAfter, per round).
func TestRestructureStartRacingStopEndsEveryNotificationOnce(t *testing.T) {
	rounds := 60
	if testing.Short() {
		rounds = 15
	}
	forEachTransport(t, func(t *testing.T, tr lifecycleTransport) {
		g := tr.serve(t, nil)
		for i := 0; i < rounds; i++ {
			t.Run("", func(t *testing.T) {
				c, r := lifecycleClient(t, tr, g.addr)
				sendTokens(t, c, 0, 3)
				started := make(chan error, 1)
				go func() { started <- c.Start(2) }()
				for j := 0; j < i%5; j++ {
					runtime.Gosched()
				}
				lifecycleStop(t, c, r)
				if err := receive(t, "Start", started); err != nil && !errors.Is(err, apns.ErrStopped) {
					t.Fatalf("Start = %v; want nil or ErrStopped", err)
				}
				st := c.Stats()
				if ends := st.Delivered + st.Rejected + st.Unsent + st.Unconfirmed; st.Accepted != 3 || ends != 3 {
					t.Errorf("stats %+v; want the 3 sent, each at one end", st)
				}
				if _, calls := r.snapshot(); uint64(calls) != st.Rejected+st.Unsent+st.Unconfirmed {
					t.Errorf("%d callbacks; want %d", calls, st.Rejected+st.Unsent+st.Unconfirmed)
				}
			})
		}
	})
}

// A connection attempt that failed before Stop was called is an event due: Stop returns after
// the error handler has heard of it ("Stop returns after every callback already due has run";
// WithErrorHandler: failed connection attempts are its events). Start's failed attempt, made
// while Stop is not yet called, is reported on Start's goroutine after its log record (held
// here, as a slow logger holds it, until Stop is seen waiting for Start). Review: it reached
// the dispatcher after Stop had closed it, and was dropped.
func TestRestructureAttemptFailedBeforeStopReachesTheErrorHandler(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr lifecycleTransport) {
		inner, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		g := tr.serve(t, &firstConnListener{Listener: inner})
		logs := newHoldingLogHandler("apns: connection attempt failed")
		var told atomic.Int32
		var stopped atomic.Bool
		var late atomic.Int32
		cert, key := apnstest.ClientCertPEM()
		c, err := apns.CreateClient(tr.gateway(g.addr), cert, key, false, apns.WithProtocol(tr.protocol),
			apns.WithTLSConfig(lifecycleTLS()), apns.WithLogger(slog.New(logs)),
			apns.WithErrorHandler(func(error) {
				if stopped.Load() {
					late.Add(1)
				}
				told.Add(1)
			}))
		if err != nil {
			t.Fatal(err)
		}
		stopAfter(t, c)
		before := dispatchers(t)
		started := make(chan error, 1)
		go func() { started <- c.Start(2) }()
		receive(t, "the failed connection attempt's log record", logs.entered)
		stopping := stopAsync(c)
		waitBlocked(t, "(*Client).Shutdown", "sync.WaitGroup.Wait")
		close(logs.release)
		if err := receive(t, "Stop", stopping); err != nil {
			t.Errorf("Stop: %v", err)
		}
		stopped.Store(true)
		if err := receive(t, "Start", started); !errors.Is(err, apns.ErrStopped) {
			t.Errorf("Start = %v; want ErrStopped", err)
		}
		waitFor(t, "the dispatcher to be idle", func() bool { return dispatchers(t) == before })
		if told.Load() == 0 {
			t.Errorf("the error handler never heard of the connection attempt that failed before Stop was called")
		}
		if n := late.Load(); n > 0 {
			t.Errorf("the error handler ran %d times after Stop returned", n)
		}
	})
}

// refuseSomeListener serves every connection it accepts but the 2nd to the (1+refuse)-th,
// which it closes at once.
type refuseSomeListener struct {
	net.Listener
	refuse   int32
	accepted atomic.Int32
}

func (l *refuseSomeListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if n := l.accepted.Add(1); n > 1 && n <= 1+l.refuse {
			c.Close()
			continue
		}
		return c, nil
	}
}

// Start's doc: on the binary protocol, a connection that failed while others opened is
// retried in the background. Start(2): one connection opens, the other fails Start's three
// attempts; the gateway then takes connections again. With nothing sent, the second
// connection comes back. (Over HTTP/2 it is opened when work needs it.)
func TestBinaryConnectionThatFailedAtStartIsRetriedInTheBackground(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr lifecycleTransport) {
		if tr.protocol != apns.ProtocolBinary {
			t.Skip("over HTTP/2 a connection that failed at Start is opened when work needs it")
		}
		inner, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		g := tr.serve(t, &refuseSomeListener{Listener: inner, refuse: 3})
		c, _ := lifecycleClient(t, tr, g.addr)
		if err := guardErr(t, "Start", func() error { return c.Start(2) }); err != nil {
			t.Fatalf("Start: %v", err)
		}
		waitFor(t, "the connection that failed at Start to be opened in the background", func() bool {
			return c.Stats().Connections == 2
		})
	})
}
