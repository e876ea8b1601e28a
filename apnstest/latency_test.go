package apnstest

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Every answer, accepted or rejected, waits Latency and at most LatencyJitter more, and the
// requests wait side by side: all of them are waiting at once.
func TestHTTP2LatencyDelaysEveryAnswerWithoutSerializingThem(t *testing.T) {
	s := NewUnstartedHTTP2Server()
	s.Latency = 100 * time.Millisecond
	s.LatencyJitter = 20 * time.Millisecond
	var waiting, most, arrived atomic.Int64
	all, together := make(chan struct{}), make(chan struct{})
	const n = 8
	s.RespondFunc(func(r Request) *Response {
		if r.ID == "" { // the concurrent ones: wait until all have arrived, then start together
			if arrived.Add(1) == n {
				close(together)
			}
			select {
			case <-together:
			case <-time.After(guard):
				t.Error("the requests never arrived together")
			}
		}
		// Judged, about to wait: count the requests waiting at once.
		k := waiting.Add(1)
		for {
			m := most.Load()
			if k <= m || most.CompareAndSwap(m, k) {
				break
			}
		}
		if k == n {
			close(all)
		}
		return nil
	})
	s.Observe = func(Request) { waiting.Add(-1) }
	s.Start()
	t.Cleanup(s.Close)
	c := newH2Client(t, s, h2Opts{cert: true})
	s.Respond(h2Token, Response{Status: 410, Times: 1})
	start := time.Now()
	c.expect(h2Req{header: hdr("apns-id", "a8a6a0b4-7f3c-4b8e-9a41-9d1a0c0e5a11")}, 410, "Unregistered")
	if el := time.Since(start); el < s.Latency {
		t.Fatalf("rejection answered after %v; want at least %v", el, s.Latency)
	}
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			start := time.Now()
			res := c.try(h2Req{})
			if res.err != nil || res.status != 200 {
				t.Errorf("answer %d, %v; want 200", res.status, res.err)
			}
			if el := time.Since(start); el < s.Latency {
				t.Errorf("answered after %v; want at least %v", el, s.Latency)
			}
		})
	}
	wg.Wait()
	select {
	case <-all:
	default:
		t.Errorf("at most %d of %d requests waited at once; want all", most.Load(), n)
	}
}
