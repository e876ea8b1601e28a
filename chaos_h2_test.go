package apns_test

// HTTP/2 chaos beyond the answers: Start, Stop and Shutdown racing one another, and the
// gateway gone when Stop begins (issue 10's fault classes). Each round keeps its own ledger:
// every notification Send accepted ends exactly once, delivered or reported.

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	apns "github.com/Kwik-messenger/apns-go"
	"github.com/Kwik-messenger/apns-go/apnstest"
)

func TestChaosHTTP2StartStopShutdownRaces(t *testing.T) {
	parallel(t)
	_, seeds := chaosSize(t, 0)
	for seed := 1; seed <= seeds; seed++ {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) { chaosH2Races(t, uint64(seed), 60) })
	}
}

func chaosH2Races(t *testing.T, seed uint64, rounds int) {
	r := rand.New(rand.NewPCG(seed, 0x5a))
	const perRound = 40
	arr := newArrivals(rounds * perRound)
	s := newH2Server(t, func(s *apnstest.HTTP2Server) {
		s.DiscardNotifications = true
		s.Observe = func(q apnstest.Request) { arr.add(hexIndex(q.Token)) }
	})
	s.RespondFunc(func(q apnstest.Request) *apnstest.Response {
		if i := hexIndex(q.Token); i%7 == 3 {
			return &apnstest.Response{Status: 400, Reason: "BadDeviceToken"}
		}
		return &apnstest.Response{Delay: time.Duration(r2(q.Token)%3) * time.Millisecond}
	})
	kinds := map[string]int{}
	for round := 0; round < rounds; round++ {
		c := newH2Client(t, s, apns.WithErrorHandler(func(error) {}))
		l := newLedger(c)
		base := round * perRound
		before := r.IntN(perRound + 1) // sent before Start, the rest while it races Stop
		for i := base; i < base+before; i++ {
			if err := c.Send(token(i), time.Time{}, apns.PRIORITY_IMMEDIATE, payload(i)); err != nil {
				t.Fatalf("Send(%d): %v", i, err)
			}
		}
		var accepted sync.Map
		for i := base; i < base+before; i++ {
			accepted.Store(i, true)
		}
		stopKind := r.IntN(4)
		delay := time.Duration(r.IntN(3000)) * time.Microsecond
		var wg sync.WaitGroup
		wg.Add(3)
		go func() { defer wg.Done(); c.Start(1 + r2(token(round))%3) }()
		go func() { // the senders that race Stop
			defer wg.Done()
			for i := base + before; i < base+perRound; i++ {
				if c.Send(token(i), time.Time{}, apns.PRIORITY_IMMEDIATE, payload(i)) == nil {
					accepted.Store(i, true)
				}
			}
		}()
		go func() {
			defer wg.Done()
			time.Sleep(delay)
			switch stopKind {
			case 0:
				c.Stop()
			case 1:
				c.Shutdown(context.Background())
			case 2: // two at once
				var two sync.WaitGroup
				two.Add(2)
				go func() { defer two.Done(); c.Stop() }()
				go func() { defer two.Done(); c.Shutdown(context.Background()) }()
				two.Wait()
			default: // a deadline that may end the wait
				ctx, cancel := context.WithTimeout(context.Background(), time.Duration(r2(token(round))%5)*time.Millisecond)
				c.Shutdown(ctx)
				cancel()
				c.Stop() // once its deadline ended, Shutdown does not wait for the callbacks

			}
		}()
		guard(t, fmt.Sprintf("round %d: Start, Send and Stop", round), wg.Wait)
		kinds[[]string{"Stop", "Shutdown", "Stop+Shutdown", "Shutdown with deadline"}[stopKind]]++
		calls := l.snapshot()
		n := 0
		for i := base; i < base+perRound; i++ {
			_, ok := accepted.Load(i)
			k, cs := int(arr.counts[i].Load()), calls[token(i)]
			switch {
			case !ok && (k > 0 || len(cs) > 0):
				t.Errorf("round %d: notification %d refused by Send, yet arrived %d times, callbacks %v", round, i, k, cs)
			case !ok:
			case i%7 == 3 && len(cs) == 1 && cs[0] == 8 && k == 0:
			case i%7 == 3 && len(cs) == 1 && cs[0] == uint8(apns.StatusUnknown) && k == 0: // never sent
			case i%7 != 3 && len(cs) == 0 && k == 1:
			case len(cs) == 1 && cs[0] == uint8(apns.StatusUnknown) && k == 0: // never sent
			case stopKind == 3 && len(cs) == 1 && cs[0] == uint8(apns.StatusUnknown) && k == 1:
				// The deadline ended the wait for an answer that the mock had given: unknown.
			default:
				t.Errorf("round %d (%s after %v): notification %d arrived %d times, callbacks %v; want exactly one end",
					round, []string{"Stop", "Shutdown", "Stop+Shutdown", "Shutdown with deadline"}[stopKind], delay, i, k, cs)
			}
			if ok {
				n++
			}
		}
		if st := c.Stats(); st.Accepted != uint64(n) || st.Delivered+st.Rejected+st.Unsent+st.Unconfirmed != st.Accepted {
			t.Errorf("round %d: stats %+v with %d accepted; want Accepted = Delivered+Rejected+Unsent+Unconfirmed", round, st, n)
		}
		if t.Failed() {
			return
		}
	}
	t.Logf("races seed=%d: rounds=%d stops=%s", seed, rounds, summary(kinds))
}

// r2 is a cheap deterministic number from a token, for delays and counts that should not
// draw from the shared generator on handler goroutines.
func r2(s string) int {
	h := 0
	for i := 0; i < len(s); i++ {
		h = h*31 + int(s[i])
	}
	if h < 0 {
		h = -h
	}
	return h
}
