package apns_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	apns "github.com/Kwik-messenger/apns-go"
)

// dispatchers counts the callback dispatcher goroutines of test t (see countGoroutines).
func dispatchers(t testing.TB) int { return countGoroutines(t, "(*dispatcher).run") }

// Start racing Stop or Shutdown on a client of the HTTP/2 API leaves no goroutine behind, and
// every notification sent ends once (issue 10 item 5: Stop could miss the dispatcher that Start
// was about to make, and nobody closed it).
func TestHTTP2StartRacingStopLeavesNoDispatcher(t *testing.T) {
	parallel(t)
	s := newH2Server(t, nil)
	rounds := 300
	if testing.Short() {
		rounds = 50
	}
	before := dispatchers(t)
	for i := 0; i < rounds; i++ {
		c := newH2Client(t, s, apns.WithErrorHandler(func(error) {}))
		l := newLedger(c)
		sendAll(t, c, 2)
		var wg sync.WaitGroup
		wg.Add(2)
		var startErr error
		go func() { defer wg.Done(); startErr = c.Start(1) }()
		go func() {
			defer wg.Done()
			runtime.Gosched()
			switch i % 3 {
			case 0:
				c.Stop()
			case 1:
				ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
				defer cancel()
				c.Shutdown(ctx)
			default:
				c.Shutdown(context.Background())
			}
		}()
		guard(t, fmt.Sprintf("round %d: Start and Stop", i), wg.Wait)
		if startErr != nil && !errors.Is(startErr, apns.ErrStopped) {
			t.Fatalf("round %d: Start = %v; want nil or ErrStopped", i, startErr)
		}
		guard(t, "Stop", func() { c.Stop() })
		// Shutdown's short deadline may leave a request sent and never answered: Unconfirmed.
		st := c.Stats()
		if st.Accepted != 2 || st.Delivered+st.Rejected+st.Unsent+st.Unconfirmed != 2 {
			t.Fatalf("round %d: stats %+v; want the 2 sent settled", i, st)
		}
		reported := 0
		for _, codes := range l.snapshot() {
			reported += len(codes)
		}
		if want := int(st.Rejected + st.Unsent + st.Unconfirmed); reported != want {
			t.Fatalf("round %d: %d callbacks; want %d (stats %+v)", i, reported, want, st)
		}
	}
	deadline := time.Now().Add(waitGuard)
	for dispatchers(t) > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := dispatchers(t) - before; n > 0 {
		t.Errorf("%d callback dispatchers left running after %d Start/Stop races", n, rounds)
	}
}

// The same race made certain: Stop runs, to its end, in the moment after Start has claimed
// the start and before it has made anything.
func TestHTTP2StopJustAfterStartClaimedLeavesNoDispatcher(t *testing.T) {
	parallel(t) // the goroutine counts see this test's goroutines only
	s := newH2Server(t, nil)
	before := dispatchers(t)
	for _, shutdown := range []bool{false, true} {
		var c *apns.Client
		c = newH2Client(t, s, apns.WithStartClaimedHook(func() {
			if shutdown {
				c.Shutdown(context.Background())
			} else {
				c.Stop()
			}
		}))
		l := newLedger(c)
		sendAll(t, c, 3)
		var err error
		guard(t, "Start", func() { err = c.Start(1) })
		if !errors.Is(err, apns.ErrStopped) {
			t.Errorf("Start with Stop inside = %v; want ErrStopped", err)
		}
		if calls := l.snapshot(); len(calls) != 3 {
			t.Errorf("callbacks %v; want the 3 sent, reported unsent", calls)
		}
	}
	if n := dispatchers(t) - before; n > 0 {
		t.Errorf("%d callback dispatchers left running after Start returned ErrStopped", n)
	}
}
