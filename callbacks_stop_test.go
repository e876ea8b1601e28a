package apns_test

// Stopping the client from its own handlers (issue 10 item 7). Stop and Shutdown wait for the
// callbacks, the error handler and the feedback pollers, so the documented rule is: a handler
// never calls them itself, it calls go c.Stop(). These tests hold the rule: such a Stop
// finishes, from every kind of handler, and neither it nor the application's own Stop returns
// before the handler and the callbacks due have run.

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	apns "github.com/Kwik-messenger/apns-go"
	"github.com/Kwik-messenger/apns-go/apnstest"
)

// goStopper is a handler's way to stop the client: Stop on a new goroutine, once.
type goStopper struct {
	once     sync.Once
	returned chan struct{} // closed when that Stop has returned
}

func newGoStopper() *goStopper { return &goStopper{returned: make(chan struct{})} }

func (g *goStopper) goStop(c *apns.Client) {
	g.once.Do(func() {
		go func() {
			c.Stop()
			close(g.returned)
		}()
	})
}

// blocker holds a handler until released, and tells whether one is running.
type blocker struct {
	once     sync.Once
	entered  chan struct{}
	release  chan struct{}
	released atomic.Bool
	running  atomic.Bool
}

// newBlocker returns a blocker that the test lets go at its end, before the cleanups
// registered earlier (the client's Stop) run: call it after making the client.
func newBlocker(t *testing.T) *blocker {
	b := &blocker{entered: make(chan struct{}), release: make(chan struct{})}
	t.Cleanup(b.letGo) // a failed test must not leave the handler blocked
	return b
}

// block holds the first caller until letGo; later callers pass.
func (b *blocker) block() {
	first := false
	b.once.Do(func() { first = true })
	if !first {
		return
	}
	b.running.Store(true)
	close(b.entered)
	<-b.release
	b.running.Store(false)
}

func (b *blocker) letGo() {
	if b.released.CompareAndSwap(false, true) {
		close(b.release)
	}
}

// checkStopsWaitForTheHandler runs the application's Stop while a handler that called
// go c.Stop() is blocked: neither Stop may return before the handler does, both return after
// it, and then every callback counted by callbacks has run (want of them).
func checkStopsWaitForTheHandler(t *testing.T, c *apns.Client, g *goStopper, b *blocker, callbacks *atomic.Int32, want int32) {
	t.Helper()
	select {
	case <-b.entered:
	case <-time.After(waitGuard):
		t.Fatal("the handler never ran")
	}
	app := stopAsync(c)
	var appErr error
	appReturned := false
	select { // a Stop that does not wait for the handler returns meanwhile
	case appErr = <-app:
		appReturned = true
		t.Error("the application's Stop returned while the handler was still running")
	case <-g.returned:
		t.Error("the handler's go c.Stop() returned while the handler was still running")
	case <-time.After(100 * time.Millisecond):
	}
	b.letGo()
	if !appReturned {
		appErr = receive(t, "the application's Stop", app)
	}
	if appErr != nil {
		t.Errorf("Stop: %v", appErr)
	}
	if b.running.Load() {
		t.Error("the application's Stop returned while the handler was still running")
	}
	if callbacks != nil {
		if n := callbacks.Load(); n != want {
			t.Errorf("%d callbacks had run when the application's Stop returned; want %d", n, want)
		}
	}
	select {
	case <-g.returned:
	case <-time.After(waitGuard):
		t.Fatal("the Stop that the handler started on another goroutine never returned")
	}
}

// The callback of SetCallback, or of SetRejectionCallback, stops the client with go c.Stop()
// and blocks; the callback due after it runs once it returns, before any Stop returns.
func TestGoStopFromTheCallbacks(t *testing.T) {
	parallel(t)
	for _, rejection := range []bool{false, true} {
		name := "SetCallback"
		if rejection {
			name = "SetRejectionCallback"
		}
		t.Run(name, func(t *testing.T) {
			s := newH2Server(t, nil)
			s.Respond(token(1), apnstest.Response{Status: 400, Reason: "BadDeviceToken"})
			s.Respond(token(2), apnstest.Response{Status: 400, Reason: "BadDeviceToken"})
			c := newH2Client(t, s)
			g, b := newGoStopper(), newBlocker(t)
			var calls atomic.Int32
			handle := func() {
				calls.Add(1)
				g.goStop(c)
				b.block()
			}
			if rejection {
				c.SetRejectionCallback(func(*apns.Rejection) { handle() })
			} else {
				c.SetCallback(func(*apns.Message, uint8) { handle() })
			}
			sendAll(t, c, 3) // before Start: the callback's Stop must not refuse any of them
			start(t, c, 1)
			checkStopsWaitForTheHandler(t, c, g, b, &calls, 2)
			if st := c.Stats(); st.Accepted != 3 || st.Delivered != 1 || st.Rejected != 2 {
				t.Errorf("Stats = %+v; want 3 accepted, 1 delivered, 2 rejected", st)
			}
		})
	}
}

// The error handler, told of a lost connection, stops the client with go c.Stop() and blocks.
func TestGoStopFromTheErrorHandler(t *testing.T) {
	s := newServer(t)
	g := newGoStopper()
	var c *apns.Client
	var b *blocker
	c = newClient(t, s, apns.WithErrorHandler(func(error) {
		g.goStop(c)
		b.block()
	}))
	b = newBlocker(t)
	l := newLedger(c)
	start(t, c, 1)
	sendAll(t, c, 10)
	if !s.WaitCount(10, waitGuard) {
		t.Fatal("not delivered")
	}
	s.CloseClientConnections() // "connection lost" reaches the error handler
	checkStopsWaitForTheHandler(t, c, g, b, nil, 0)
	if err := c.Send(token(99), time.Time{}, apns.PRIORITY_IMMEDIATE, payload(99)); err != apns.ErrStopped {
		t.Errorf("Send after the handler's Stop = %v; want ErrStopped", err)
	}
	if st := c.Stats(); st.Accepted != st.Delivered+st.Rejected+st.Unsent+st.Unconfirmed || len(l.snapshot()) != int(st.Rejected+st.Unsent+st.Unconfirmed) {
		t.Errorf("Stats = %+v with %d callbacks: the ledger does not add up", st, len(l.snapshot()))
	}
}

// The error handler, told of a failed feedback poll on the poller's goroutine, stops the client
// with go c.Stop() and blocks; the poller, and so both Stops, end once it returns.
func TestGoStopFromTheFeedbackErrorHandler(t *testing.T) {
	parallel(t)
	s := newServer(t)
	fbAddr := closedAddr(t) // every poll fails
	g := newGoStopper()
	var c *apns.Client
	var b *blocker
	c = newClient(t, s, apns.WithErrorHandler(func(err error) {
		if strings.Contains(err.Error(), "feedback poll") {
			g.goStop(c)
			b.block()
		}
	}))
	b = newBlocker(t)
	start(t, c, 1)
	fc, err := c.SetupFeedbackClient(fbAddr, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	checkStopsWaitForTheHandler(t, c, g, b, nil, 0)
	ctx, cancel := context.WithTimeout(context.Background(), waitGuard)
	defer cancel()
	if _, err := fc.BadTokens(ctx); err != apns.ErrFeedbackStopped {
		t.Errorf("BadTokens = %v; want ErrFeedbackStopped", err)
	}
}
