package apns_test

// Attack tests (stop 20) on the lifecycle: Start's tries, and Stop racing a Start that is
// still opening connections (f899d1a).

import (
	"context"
	"errors"
	"net"
	"slices"
	"testing"
	"time"

	apns "github.com/Kwik-messenger/apns-go"
)

// Start's tries of one connection are spaced by backoff over HTTP/2 too (the existing test
// covers the binary protocol only): three tries, the second at least 90 ms after the first and
// the third at least 180 ms after the second (100 ms and 200 ms less their 10% jitter).
func TestFailedHTTP2StartBacksOffBetweenTries(t *testing.T) {
	parallel(t)
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &refusingListener{Listener: inner}
	go l.serve()
	t.Cleanup(func() { inner.Close() })
	c, err := apns.CreateClient(inner.Addr().String(), nil, nil, true, apns.WithProtocol(apns.ProtocolHTTP2))
	if err != nil {
		t.Fatal(err)
	}
	stopAfter(t, c)
	if err := guardErr(t, "Start", func() error { return c.Start(1) }); err == nil {
		t.Fatal("Start succeeded against a gateway that closes every connection")
	}
	l.mu.Lock()
	times := slices.Clone(l.times)
	l.mu.Unlock()
	if len(times) != 3 {
		t.Fatalf("%d tries; want 3", len(times))
	}
	for i, least := range []time.Duration{90 * time.Millisecond, 180 * time.Millisecond} {
		if gap := times[i+1].Sub(times[i]); gap < least {
			t.Errorf("tries %d and %d came %v apart; want at least %v of backoff", i+1, i+2, gap, least)
		}
	}
}

// Shutdown with a deadline while Start is opening connections, one of them stuck in its TLS
// handshake (a dial that takes its whole dial timeout): Shutdown returns well within the dial
// timeout (the abort cuts the dial short), Start returns ErrStopped, nothing is counted as open
// afterwards, and the notifications queued before reach one end each.
func TestShutdownWithADeadlineDuringASlowStart(t *testing.T) {
	parallel(t)
	tr := lifecycleTransports[1]
	if tr.protocol != apns.ProtocolHTTP2 {
		t.Fatal("lifecycleTransports[1] is not HTTP/2")
	}
	for round := range 5 {
		inner, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		l := &holdListener{Listener: inner}
		g := tr.serve(t, l)
		c, r := lifecycleClient(t, tr, g.addr, apns.WithDialTimeout(20*time.Second))
		sendTokens(t, c, 0, 5)
		started := make(chan error, 1)
		go func() { started <- c.Start(2) }()
		waitFor(t, "Start to have opened one connection and to wait for the other", func() bool {
			return c.Stats().Connections == 1
		})
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		began := time.Now()
		err = shutdown(t, c, ctx)
		took := time.Since(began)
		cancel()
		r.stopped.Store(true)
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("round %d: Shutdown = %v", round, err)
		}
		if took > 5*time.Second {
			t.Errorf("round %d: Shutdown took %v with a 200 ms deadline; want it bounded, far below the 20 s dial timeout", round, took)
		}
		if err := receive(t, "Start", started); !errors.Is(err, apns.ErrStopped) {
			t.Errorf("round %d: Start = %v; want ErrStopped", round, err)
		}
		checkOneEndEach(t, c, r)
	}
}
