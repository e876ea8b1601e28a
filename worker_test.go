package apns_test

// Tests of the binary worker's reliability: backoff after connections that confirm nothing,
// progress through a gateway that drops connections, the assume-sent clock, giving up.

import (
	"context"
	"errors"
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
			t.Parallel()
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
