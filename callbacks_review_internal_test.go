package apns

// Attack tests on the lazy callback dispatcher (callbacks.go, issue 12): its goroutine exits
// whenever its queue runs dry and a new one starts with the next event, so the properties
// the client promises (one at a time, in push order, all run before done, none after) must
// hold across those restarts and across close.

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// seqErr is an event of producer p, its n-th.
type seqErr struct{ p, n int }

func (e seqErr) Error() string { return fmt.Sprintf("%d/%d", e.p, e.n) }

func TestRestructureReviewDispatcherRestartsKeepOrderAndOneAtATime(t *testing.T) {
	const producers, perProducer = 4, 300
	rounds := 20
	if testing.Short() {
		rounds = 5
	}
	for round := 0; round < rounds; round++ {
		var running, overlaps, late, ran atomic.Int32
		var done atomic.Bool
		var mu sync.Mutex
		last := make([]int, producers)
		for i := range last {
			last[i] = -1
		}
		var disorder []string
		handler := func(err error) {
			if running.Add(1) > 1 {
				overlaps.Add(1)
			}
			if done.Load() {
				late.Add(1)
			}
			var e seqErr
			if errors.As(err, &e) {
				mu.Lock()
				if e.n <= last[e.p] {
					disorder = append(disorder, fmt.Sprintf("producer %d: %d after %d", e.p, e.n, last[e.p]))
				}
				last[e.p] = e.n
				mu.Unlock()
			}
			if e.n%7 == 0 {
				runtime.Gosched()
			}
			ran.Add(1)
			running.Add(-1)
		}
		c, err := CreateClient("127.0.0.1:1", nil, nil, true, WithErrorHandler(handler))
		if err != nil {
			t.Fatal(err)
		}
		d := c.events
		var wg sync.WaitGroup
		for p := 0; p < producers; p++ {
			wg.Go(func() {
				for n := 0; n < perProducer; n++ {
					c.reportError(seqErr{p, n})
					if n%3 == 0 {
						runtime.Gosched() // lets the goroutine run dry and exit, so the next push starts another
					}
				}
			})
		}
		wg.Wait()
		d.close()
		select {
		case <-d.done:
		case <-time.After(30 * time.Second):
			t.Fatalf("round %d: done did not close; %d of %d events ran", round, ran.Load(), producers*perProducer)
		}
		done.Store(true)
		// A push after done: dropped, and never run.
		c.reportError(seqErr{0, perProducer})
		runtime.Gosched()
		if n := ran.Load(); n != producers*perProducer {
			t.Fatalf("round %d: %d events ran by done; want %d", round, n, producers*perProducer)
		}
		if n := overlaps.Load(); n > 0 {
			t.Fatalf("round %d: the handler started %d times while another call ran", round, n)
		}
		mu.Lock()
		if len(disorder) > 0 {
			t.Fatalf("round %d: out of push order: %v", round, disorder[:min(5, len(disorder))])
		}
		mu.Unlock()
		if n := late.Load(); n > 0 {
			t.Fatalf("round %d: %d handler calls after done", round, n)
		}
	}
}

// Pushes racing close: every push that returned before close was called runs before done
// closes; none runs after done; done always closes.
func TestRestructureReviewDispatcherPushRacingClose(t *testing.T) {
	rounds := 2000
	if testing.Short() {
		rounds = 200
	}
	for round := 0; round < rounds; round++ {
		var ran, late atomic.Int32
		var doneSeen atomic.Bool
		c, err := CreateClient("127.0.0.1:1", nil, nil, true, WithErrorHandler(func(error) {
			if doneSeen.Load() {
				late.Add(1)
			}
			ran.Add(1)
		}))
		if err != nil {
			t.Fatal(err)
		}
		d := c.events
		const before = 3
		for i := 0; i < before; i++ {
			c.reportError(seqErr{0, i})
		}
		var wg sync.WaitGroup
		wg.Go(func() {
			for i := 0; i < 5; i++ {
				c.reportError(seqErr{1, i})
			}
		})
		wg.Go(d.close)
		wg.Wait()
		select {
		case <-d.done:
		case <-time.After(30 * time.Second):
			t.Fatalf("round %d: done did not close", round)
		}
		doneSeen.Store(true)
		if n := ran.Load(); n < before {
			t.Fatalf("round %d: %d events ran by done; want at least the %d pushed before close", round, n, before)
		}
		c.reportError(seqErr{2, 0})
		if n := late.Load(); n > 0 {
			t.Fatalf("round %d: %d handler calls after done", round, n)
		}
	}
}
