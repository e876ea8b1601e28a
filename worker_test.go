package apns_test

// Tests of the binary worker's reliability: backoff after connections that confirm nothing,
// progress through a gateway that drops connections, the assume-sent clock, giving up.

import (
	"context"
	"encoding/hex"
	"errors"
	"maps"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	apns "github.com/Kwik-messenger/apns-go"
	"github.com/Kwik-messenger/apns-go/apnstest"
)

// repeat returns k copies of sc.
func repeat(sc apnstest.ConnScript, k int) []apnstest.ConnScript {
	out := make([]apnstest.ConnScript, k)
	for i := range out {
		out[i] = sc
	}
	return out
}

// shutdownNow ends c at once (Shutdown with a past deadline), failing the test if that hangs.
func shutdownNow(t *testing.T, c *apns.Client) {
	t.Helper()
	guard(t, "Shutdown", func() {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := c.Shutdown(ctx); err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("Shutdown: %v", err)
		}
	})
}

// A connection that ends without confirming any frame is a failure, whatever ended it, and
// the next attempt waits with backoff (issue 10 item 2, issue 16 item 7). With backoff from
// 100 ms, doubling, a worker makes about 5 attempts in 2 s (at 0, 0.1, 0.3, 0.7 and 1.5 s);
// without it, hundreds. The bound is an upper bound: a slow machine only makes fewer.
func TestConnectionsThatConfirmNothingAreRetriedWithBackoff(t *testing.T) {
	parallel(t)
	cases := []struct {
		name   string
		script apnstest.ConnScript
	}{
		{"status 10 naming 0", apnstest.ConnScript{Shutdown: true}},
		{"error response naming an unknown id", apnstest.ConnScript{Garbage: []byte{8, 8, 0xff, 0xff, 0xff, 0xf0}}},
		{"error response naming 0", apnstest.ConnScript{Garbage: []byte{8, 8, 0, 0, 0, 0}}},
		{"drop", apnstest.ConnScript{Drop: true}},
		{"garbage", apnstest.ConnScript{Garbage: []byte("HTTP/1.1 400\r\n")}},
	}
	const window, bound = 2 * time.Second, 15
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			parallel(t)
			s := newServer(t)
			s.Script(repeat(tc.script, 5000)...)
			var errs atomic.Int64
			c := newClient(t, s, apns.WithErrorHandler(func(error) { errs.Add(1) }))
			sendAll(t, c, 1) // something to write on every connection
			if err := c.Start(1); err != nil {
				t.Fatal(err)
			}
			time.Sleep(window) // counts attempts over a window: a bound from above only
			attempts := s.Conns()
			shutdownNow(t, c)
			if attempts > bound {
				t.Errorf("%d connection attempts in %v; want at most %d (backoff from 100 ms)", attempts, window, bound)
			}
			if st := c.Stats(); st.UnknownIDs > bound || errs.Load() > 2*bound {
				t.Errorf("stats %+v, %d errors in %v; want at most %d unknown identifiers", st, errs.Load(), window, bound)
			}
			t.Logf("%d connection attempts in %v", attempts, window)
		})
	}
}

// bigPayload makes frames of about 2 KB, so that a few thousand fill the kernel's buffers.
func paddedPayload(i int) map[string]interface{} {
	return map[string]interface{}{"aps": map[string]interface{}{"alert": "x"}, "n": i, "pad": strings.Repeat("x", 1900)}
}

// The assume-sent clock does not run while a write is blocked (issue 10 item 10). The gateway
// stops reading for four times the assume-sent timeout; the test sends until the client's
// writes block, then makes the gateway reject one of the last frames written before the
// block. When the gateway reads on, that frame must still be in flight: reported once, the
// frames after it written again, none lost. (With the clock running through the block, the
// client assumes every frame written before it delivered as soon as its queue runs dry, and
// the rejection names a frame it no longer holds.)
func TestRejectionAfterAStallLongerThanTheAssumeSentTimeout(t *testing.T) {
	parallel(t) // countGoroutines below sees this test's goroutines only
	// Two seconds: after the stall, the gateway reads a few megabytes to reach the frame it
	// rejects, within what is left of that frame's assume-sent time, on a busy machine too.
	const assumeSent, most = 2 * time.Second, 20000
	s := newServer(t)
	s.Script(apnstest.ConnScript{After: 10, Stall: 4 * assumeSent})
	var bad atomic.Int64
	bad.Store(-1)
	s.RejectFunc(func(m apnstest.Notification) uint8 {
		if int64(tokenIndex(m.Token)) == bad.Load() {
			return 8
		}
		return 0
	})
	var unknown atomic.Int64
	c := newClient(t, s, apns.WithAssumeSentTimeout(assumeSent), apns.WithInflightBytes(64<<20),
		apns.WithQueueSize(most), apns.WithErrorHandler(func(err error) {
			if errors.Is(err, apns.ErrUnknownID) {
				unknown.Add(1)
			}
		}))
	l := newLedger(c)
	start(t, c, 1)
	// Send 100 at a time until the client's write is blocked: its worker is parked waiting for
	// the socket to take more (nothing else of this test writes while the gateway stalls).
	n := 0
	for blocked := false; !blocked; {
		if n == most {
			t.Fatalf("the client wrote %d notifications of 2 KB to a gateway that reads nothing", most)
		}
		for range 100 {
			if err := c.Send(token(n), time.Time{}, 10, paddedPayload(n)); err != nil {
				t.Fatal(err)
			}
			n++
		}
		last, lastAt := c.Stats().Written, time.Now()
		waitFor(t, "the worker to write the notifications or block", func() bool {
			w := c.Stats().Written
			if w >= uint64(n) {
				return true
			}
			if w != last || time.Since(lastAt) < 20*time.Millisecond {
				// Writing: the stacks (a profile that stops the world) are looked at only
				// once the writes have paused, at most every 20 ms.
				if w != last {
					last, lastAt = w, time.Now()
				}
				return false
			}
			lastAt = time.Now()
			blocked = countGoroutines(t, "(*pollDesc).waitWrite") > 0
			return blocked
		})
	}
	b := int(c.Stats().Written) - 50
	bad.Store(int64(b))
	stop(t, c)
	if calls := l.snapshot(); len(calls) != 1 || len(calls[token(b)]) != 1 || calls[token(b)][0] != 8 {
		t.Errorf("callbacks for %d tokens (token %d: %v); want token %d once with 8", len(calls), b, calls[token(b)], b)
	}
	checkAllArrived(t, s, n, map[string]bool{token(b): true}, true)
	if st := c.Stats(); st.UnknownIDs != 0 || unknown.Load() != 0 || st.Rejected != 1 || st.Delivered != uint64(n-1) {
		t.Errorf("stats %+v; want 1 rejected, %d delivered, no unknown identifier", st, n-1)
	}
}

// Shutdown's deadline interrupting a write blocked by a gateway that reads nothing (issue 10
// item 11): as its doc says, frames already written count as delivered and those not yet
// written are reported unsent; the interrupted write is not a lost connection, so nothing is
// counted as a duplicate or reported as possibly delivered.
func TestShutdownInterruptingABlockedWriteCountsWrittenFramesDelivered(t *testing.T) {
	const n = 10000
	s := newServer(t)
	s.Script(apnstest.ConnScript{Stall: time.Hour}) // reads nothing, ever
	c := newClient(t, s, apns.WithInflightBytes(64<<20), apns.WithWriteTimeout(time.Hour),
		apns.WithQueueSize(n), apns.WithErrorHandler(func(error) {}))
	l := newLedger(c)
	for i := range n {
		if err := c.Send(token(i), time.Time{}, 10, paddedPayload(i)); err != nil {
			t.Fatal(err)
		}
	}
	start(t, c, 1)
	// Wait until the writes block: the worker has taken frames but the count stops moving.
	guard(t, "the writes to block", func() {
		for last := uint64(0); ; {
			time.Sleep(50 * time.Millisecond)
			w := c.Stats().Written
			if w > 0 && w == last {
				return
			}
			last = w
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	guard(t, "Shutdown", func() {
		if err := c.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Shutdown = %v; want DeadlineExceeded", err)
		}
	})
	stop(t, c) // Shutdown whose deadline ended does not wait for the callbacks; Stop does
	st := c.Stats()
	if st.Delivered == 0 || st.Delivered+st.Unsent != n || st.Duplicates != 0 || st.Drops != 0 || st.Unconfirmed != 0 {
		t.Errorf("stats %+v; want the written frames delivered, the rest unsent, no drop or duplicate", st)
	}
	if calls := l.snapshot(); uint64(len(calls)) != st.Unsent {
		t.Errorf("callbacks for %d tokens; want %d (the unsent)", len(calls), st.Unsent)
	}
}

// rejections records the rejection callback's reasons by hex token.
func reasons(c *apns.Client) func() map[string][]string {
	var mu sync.Mutex
	got := map[string][]string{}
	c.SetRejectionCallback(func(r *apns.Rejection) {
		mu.Lock()
		defer mu.Unlock()
		tok := hex.EncodeToString(r.Message.Token)
		got[tok] = append(got[tok], r.Reason)
	})
	return func() map[string][]string {
		mu.Lock()
		defer mu.Unlock()
		return maps.Clone(got)
	}
}

// When Stop gives up on a gateway that refuses every connection after the first ended,
// the frames the worker still holds go to the callback with 255 (issue 16 item 3), counted
// apart (issue 17): those written on a connection lost without a word may have arrived
// (Unconfirmed, reason "unknown (possibly delivered)"); those the gateway discarded after a
// rejection never did (Unsent, reason "unknown").
func TestStopGivingUpReportsHeldFramesWith255CountedApart(t *testing.T) {
	parallel(t)
	refuse := repeat(apnstest.ConnScript{RefuseHandshake: true}, 1000)
	cases := []struct {
		name        string
		first       apnstest.ConnScript
		unconfirmed bool
	}{
		{"after a silent drop", apnstest.ConnScript{After: 10, Drop: true}, true},
		{"after a rejection", apnstest.ConnScript{After: 10, Reject: 8}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			const n = 50
			s := newServer(t)
			s.Script(append([]apnstest.ConnScript{tc.first}, refuse...)...)
			c := newClient(t, s, apns.WithAssumeSentTimeout(time.Hour), apns.WithErrorHandler(func(error) {}))
			l := newLedger(c)
			why := reasons(c)
			sendAll(t, c, n) // queued before Start: one connection writes them all
			start(t, c, 1)
			guard(t, "the first connection to end", func() {
				for s.Conns() < 2 {
					time.Sleep(time.Millisecond)
				}
			})
			stop(t, c)
			calls, rs := l.snapshot(), why()
			wantReason := "unknown"
			if tc.unconfirmed {
				wantReason = "unknown (possibly delivered)"
			}
			// After the drop the client cannot know that the gateway took 0..9: all are held.
			// After the rejection of 10, 0..9 are delivered and 11.. held.
			first := 0
			if !tc.unconfirmed {
				if codes := calls[token(10)]; len(codes) != 1 || codes[0] != 8 {
					t.Errorf("token 10: codes %v; want [8]", codes)
				}
				first = 11
			}
			for i := first; i < n; i++ {
				if codes := calls[token(i)]; len(codes) != 1 || codes[0] != uint8(apns.StatusUnknown) || len(rs[token(i)]) != 1 || rs[token(i)][0] != wantReason {
					t.Errorf("token %d: codes %v, reasons %q; want [255] and %q", i, codes, rs[token(i)], wantReason)
				}
			}
			st := c.Stats()
			held := uint64(n - first)
			if tc.unconfirmed && (st.Unconfirmed != held || st.Unsent != 0) || !tc.unconfirmed && (st.Unsent != held || st.Unconfirmed != 0) {
				t.Errorf("stats %+v; want %d unconfirmed: %v", st, held, tc.unconfirmed)
			}
		})
	}
}

// Shutdown's deadline with frames written on a live connection that never answers: they
// count as delivered, as Shutdown's doc says, not as unsent (issue 16 item 3).
func TestShutdownDeadlineCountsFramesWrittenOnTheLastConnectionDelivered(t *testing.T) {
	const n = 100
	s := newServer(t)
	c := newClient(t, s, apns.WithAssumeSentTimeout(time.Hour), apns.WithoutSentinel())
	l := newLedger(c)
	start(t, c, 1)
	sendAll(t, c, n)
	if !s.WaitCount(n, waitGuard) {
		t.Fatalf("the gateway got %d of %d", s.Count(), n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	guard(t, "Shutdown", func() {
		if err := c.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Shutdown = %v; want DeadlineExceeded (nothing confirms the frames)", err)
		}
	})
	stop(t, c) // Shutdown whose deadline ended does not wait for the callbacks; Stop does
	if st := c.Stats(); st.Delivered != n || st.Unsent != 0 || st.Unconfirmed != 0 || len(l.snapshot()) != 0 {
		t.Errorf("stats %+v, %d callbacks; want %d delivered, none reported", st, len(l.snapshot()), n)
	}
}

// The sentinel's answer confirms every frame before it, the last one included (issue 16 item
// 8): Stop returns well before its deadline without writing anything twice.
func TestSentinelConfirmsTheLastFrameBeforeIt(t *testing.T) {
	const n = 100
	s := newServer(t)
	c := newClient(t, s, apns.WithAssumeSentTimeout(time.Hour))
	l := newLedger(c)
	sendAll(t, c, n)
	start(t, c, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	guard(t, "Shutdown", func() {
		if err := c.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown = %v; want nil: the sentinel confirms everything", err)
		}
	})
	checkAllArrived(t, s, n, nil, true)
	if st := c.Stats(); st.Delivered != n || st.Replayed != 0 || st.Written != n || len(l.snapshot()) != 0 {
		t.Errorf("stats %+v, %d callbacks; want %d written once and delivered", st, len(l.snapshot()), n)
	}
}

// Status 10 naming frame i delivers frame i and writes again only the frames after it
// (issue 16 item 9).
func TestShutdownStatusNamingAFrameDeliversIt(t *testing.T) {
	const n, after = 100, 40
	s := newServer(t)
	s.Script(apnstest.ConnScript{After: after, Shutdown: true}) // names frame after-1
	c := newClient(t, s, apns.WithAssumeSentTimeout(time.Hour))
	l := newLedger(c)
	sendAll(t, c, n) // queued before Start: one connection writes them in order
	start(t, c, 1)
	stop(t, c)
	checkAllArrived(t, s, n, nil, true)
	st := c.Stats()
	if st.Delivered != n || st.Replayed != n-after || st.Duplicates != 0 || len(l.snapshot()) != 0 {
		t.Errorf("stats %+v, %d callbacks; want %d delivered, %d replayed (those after the named frame)", st, len(l.snapshot()), n, n-after)
	}
}

// An error response naming an identifier the worker never used says nothing about the frames
// in flight: the gateway may have delivered any of them. They are written again and counted
// as possible duplicates.
func TestUnknownIDCountsTheFramesInFlightAsDuplicates(t *testing.T) {
	parallel(t)
	const n, after = 500, 100
	s := newServer(t)
	s.Script(apnstest.ConnScript{After: after, Garbage: []byte{8, 8, 0xff, 0xff, 0xff, 0xf0}})
	c := newClient(t, s, apns.WithAssumeSentTimeout(time.Hour), apns.WithErrorHandler(func(error) {}))
	sendAll(t, c, n) // queued before Start: the gateway takes 0..99, then answers
	start(t, c, 1)
	stop(t, c)
	checkAllArrived(t, s, n, nil, false)
	twice := 0
	for _, k := range received(s) {
		twice += k - 1
	}
	if st := c.Stats(); st.Duplicates < uint64(twice) || twice < after || st.UnknownIDs != 1 {
		t.Errorf("%d arrived twice; stats %+v; want at least %d arrived twice, all counted as duplicates", twice, st, after)
	}
}
