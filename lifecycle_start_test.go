package apns_test

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	apns "github.com/Kwik-messenger/apns-go"
)

// silentGateway accepts TCP connections and never says a word, as a gateway that hangs in the
// TLS handshake would. It returns its address; the connections close with the test.
func silentGateway(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}

// When the gateway never completes the TLS handshake, Start's error says so, with the address,
// the timeout and the number of attempts, instead of only "context deadline exceeded".
func TestStartAgainstASilentGatewaySaysTheHandshakeTimedOut(t *testing.T) {
	parallel(t)
	addr := silentGateway(t)
	for _, tc := range []struct {
		name    string
		gateway string
		proto   apns.Protocol
	}{
		{"binary", addr, apns.ProtocolBinary},
		{"http2", "https://" + addr, apns.ProtocolHTTP2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			parallel(t)
			// A dial timeout of a second: a busy machine may take longer than 100 ms to
			// complete even the TCP connect, and the error then says so.
			c, err := apns.CreateClient(tc.gateway, nil, nil, true,
				apns.WithProtocol(tc.proto), apns.WithDialTimeout(time.Second))
			if err != nil {
				t.Fatal(err)
			}
			defer stop(t, c)
			err = c.Start(2)
			if err == nil {
				t.Fatal("Start succeeded against a silent gateway")
			}
			msg := err.Error()
			for _, want := range []string{addr, "TLS handshake timed out", "1s per attempt", "3 attempts"} {
				if !strings.Contains(msg, want) {
					t.Errorf("Start error %q; want it to contain %q", msg, want)
				}
			}
			if strings.Count(msg, "context deadline exceeded") != 1 {
				t.Errorf("Start error %q; want the cause once, not once per connection", msg)
			}
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("errors.Is(%v, context.DeadlineExceeded) = false; want true", err)
			}
		})
	}
}

// A gateway that refuses the connection is not reported as a handshake timeout.
func TestStartAgainstAClosedPortIsNotCalledATimeout(t *testing.T) {
	parallel(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	c, err := apns.CreateClient(addr, nil, nil, true, apns.WithProtocol(apns.ProtocolBinary))
	if err != nil {
		t.Fatal(err)
	}
	defer stop(t, c)
	if err := c.Start(1); err == nil || strings.Contains(err.Error(), "timed out") {
		t.Fatalf("Start = %v; want a refused connection, not a timeout", err)
	}
}

// refusingListener accepts connections and closes each at once, counting them.
type refusingListener struct {
	net.Listener
	accepted atomic.Int32
	mu       sync.Mutex
	times    []time.Time
}

func (l *refusingListener) serve() {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		l.mu.Lock()
		l.times = append(l.times, time.Now())
		l.mu.Unlock()
		l.accepted.Add(1)
		c.Close()
	}
}

// A Start that reaches nothing tries each connection exactly three times (startDialAttempts),
// on both protocols, and returns the error: no fewer tries, and none left running after it.
func TestFailedStartTriesEachConnectionThreeTimes(t *testing.T) {
	for name, proto := range map[string]apns.Protocol{"binary": apns.ProtocolBinary, "HTTP/2": apns.ProtocolHTTP2} {
		t.Run(name, func(t *testing.T) {
			inner, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			l := &refusingListener{Listener: inner}
			go l.serve()
			t.Cleanup(func() { inner.Close() })
			c, err := apns.CreateClient(inner.Addr().String(), nil, nil, true, apns.WithProtocol(proto))
			if err != nil {
				t.Fatal(err)
			}
			stopAfter(t, c)
			if err := guardErr(t, "Start", func() error { return c.Start(2) }); err == nil {
				t.Fatal("Start succeeded against a gateway that closes every connection")
			}
			if n := l.accepted.Load(); n != 6 {
				t.Errorf("the gateway saw %d connection attempts from Start(2); want 6 (3 per connection)", n)
			}
		})
	}
}

// Start's tries of one connection are spaced by backoff (at least 90 ms: 100 ms less its
// 10% jitter), not made at once. A lower bound: a busy machine only widens the gaps.
func TestFailedStartBacksOffBetweenTries(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &refusingListener{Listener: inner}
	go l.serve()
	t.Cleanup(func() { inner.Close() })
	c, err := apns.CreateClient(inner.Addr().String(), nil, nil, true, apns.WithProtocol(apns.ProtocolBinary))
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
	for i := 1; i < len(times); i++ {
		if gap := times[i].Sub(times[i-1]); gap < 90*time.Millisecond {
			t.Errorf("tries %d and %d came %v apart; want at least 90 ms of backoff", i, i+1, gap)
		}
	}
}
