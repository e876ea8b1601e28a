package apns_test

// Review tests of the silence detector (issue 15, silence.go): the PING probe must never
// corrupt the HTTP/2 stream, a slow but live connection must be kept, Stop must stay bounded,
// and a failed Start must leave no detector behind.

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	apns "github.com/Kwik-messenger/apns-go"
	"github.com/Kwik-messenger/apns-go/apnstest"
)

// Probes injected constantly (a tiny silence time, answers held longer than it) while many
// large voip requests are written at once: the stream must stay valid, so no connection is
// lost, no request is retried and nothing is closed as silent.
func TestSilenceProbesAmidLargeConcurrentWritesKeepTheStreamValid(t *testing.T) {
	parallel(t)
	s, arrived := silenceServer(t, 150*time.Millisecond)
	var logs lockedBuffer
	c := newH2Client(t, s, apns.WithSilenceTimes(5*time.Millisecond, 5*time.Second), apns.WithLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	if err := c.Start(2); err != nil {
		t.Fatal(err)
	}
	body := `{"aps":{},"x":"` + strings.Repeat("v", apns.MaxVoIPPayloadSize-len(`{"aps":{},"x":""}`)) + `"}`
	const n = 300
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := c.Push(context.Background(), &apns.Notification{DeviceToken: token(i), PushType: "voip",
				Topic: "com.example.app.voip", Payload: []byte(body)})
			if err == nil && !resp.Sent() {
				err = fmt.Errorf("%d %s", resp.StatusCode, resp.Reason)
			}
			if err != nil {
				errs <- err
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(waitGuard):
		t.Fatal("pushes did not finish")
	}
	close(errs)
	for err := range errs {
		t.Errorf("Push: %v", err)
		break
	}
	_ = arrived
	if n := strings.Count(logs.String(), "probing with a PING"); n == 0 {
		t.Error("no probe was sent: the test attacked nothing")
	} else {
		t.Logf("%d probes sent", n)
	}
	stop(t, c)
	st := c.Stats()
	if st.SilentConns != 0 || st.Reconnects != 0 || st.Duplicates != 0 || st.Replayed != 0 {
		t.Errorf("SilentConns %d, Reconnects %d, Duplicates %d, Replayed %d; want all 0 (the probe broke a connection)",
			st.SilentConns, st.Reconnects, st.Duplicates, st.Replayed)
	}
	if got := s.Count(); got != n {
		t.Errorf("mock counted %d requests; want %d", got, n)
	}
}

// The same with Send (the worker path) and small payloads, many in flight at once.
func TestSilenceProbesAmidManySendsKeepTheStreamValid(t *testing.T) {
	parallel(t)
	s, _ := silenceServer(t, 100*time.Millisecond)
	var logs lockedBuffer
	c := newH2Client(t, s, apns.WithSilenceTimes(5*time.Millisecond, 5*time.Second), apns.WithLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	if err := c.Start(2); err != nil {
		t.Fatal(err)
	}
	const n = 2000
	sendH2(t, c, 0, n)
	if !s.WaitCount(n, waitGuard) {
		t.Fatalf("mock counted %d of %d", s.Count(), n)
	}
	if n := strings.Count(logs.String(), "probing with a PING"); n == 0 {
		t.Error("no probe was sent: the test attacked nothing")
	} else {
		t.Logf("%d probes sent", n)
	}
	stop(t, c)
	st := c.Stats()
	if st.Delivered != n || st.SilentConns != 0 || st.Reconnects != 0 || st.Duplicates != 0 {
		t.Errorf("Delivered %d SilentConns %d Reconnects %d Duplicates %d; want %d 0 0 0",
			st.Delivered, st.SilentConns, st.Reconnects, st.Duplicates, n)
	}
	if got := h2Received(s); len(got) != n {
		t.Errorf("mock received %d distinct tokens; want %d", len(got), n)
	}
}

// A server that answers PINGs but holds the answers to requests for an hour: Stop is bounded.
func TestSilenceStopWithAnswersHeldButPingsAnsweredIsBounded(t *testing.T) {
	parallel(t)
	s, arrived := silenceServer(t, time.Hour)
	// A probe's answer may take 5 s (it takes far less): on a busy machine one can take more
	// than a second, and the connection is not silent.
	c := newH2Client(t, s, apns.WithWriteTimeout(2*time.Second), apns.WithSilenceTimes(50*time.Millisecond, 5*time.Second))
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	sendH2(t, c, 0, 5)
	awaitArrivals(t, arrived, 1)       // a cold connection carries one request until its first answer
	time.Sleep(500 * time.Millisecond) // several probes, all answered
	stop(t, c)
	if st := c.Stats(); st.SilentConns != 0 {
		t.Errorf("SilentConns %d; want 0: the connection answered every PING", st.SilentConns)
	}
}

// Start that fails (nothing listens) leaves no detector goroutine behind (stopAfter checks).
func TestSilenceFailedStartLeavesNoDetector(t *testing.T) {
	parallel(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	s := apnstest.NewUnstartedHTTP2Server()
	cert, key := apnstest.ClientCertPEM()
	c, err := apns.CreateClient("https://"+addr, cert, key, false, apns.WithTLSConfig(s.ClientTLSConfig()),
		apns.WithSilenceTimes(10*time.Millisecond, 50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	stopAfter(t, c)
	if err := c.Start(1); err == nil {
		t.Fatal("Start succeeded with nothing listening")
	}
}

// A connection that is merely slow (answers held a few silence times, PINGs answered at once)
// under a steady stream of requests: its probes must not make the pool open more connections,
// as if the slow connection were full or lost.
func TestSilenceSlowConnectionProbesDoNotGrowThePool(t *testing.T) {
	parallel(t)
	s, arrived := silenceServer(t, 600*time.Millisecond)
	c := newH2Client(t, s, apns.WithSilenceTimes(100*time.Millisecond, 5*time.Second), apns.WithMaxConnections(8))
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	sendH2(t, c, 0, 1)
	awaitArrivals(t, arrived, 1)
	if !s.WaitCount(1, waitGuard) {
		t.Fatal("no first request")
	}
	time.Sleep(700 * time.Millisecond) // the first answer: the connection is warm
	for i := 1; i < 40; i++ {
		sendH2(t, c, i*10, 10)
		time.Sleep(50 * time.Millisecond)
	}
	if !s.WaitCount(391, waitGuard) {
		t.Fatalf("mock counted %d", s.Count())
	}
	conns := s.Conns()
	st := c.Stats()
	stop(t, c)
	if conns != 1 || st.SilentConns != 0 {
		t.Errorf("mock has %d connections, SilentConns %d, Connections %d; want 1 connection: the slow but live one "+
			"was probed, refused requests meanwhile and the pool grew", conns, st.SilentConns, st.Connections)
	}
}

// countingProxy forwards TCP connections to target and counts the bytes each client sends;
// blackhole makes connection i swallow everything both ways while staying open.
type countingProxy struct {
	l      net.Listener
	mu     sync.Mutex
	conns  []*proxied
	target string
}

type proxied struct {
	mu     sync.Mutex
	up     int
	silent bool
	c, s   net.Conn
}

func newCountingProxy(t *testing.T, target string) *countingProxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &countingProxy{l: l, target: target}
	t.Cleanup(func() {
		l.Close()
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, c := range p.conns {
			c.c.Close()
			c.s.Close()
		}
	})
	go func() {
		for {
			cc, err := l.Accept()
			if err != nil {
				return
			}
			sc, err := net.Dial("tcp", target)
			if err != nil {
				cc.Close()
				continue
			}
			pc := &proxied{c: cc, s: sc}
			p.mu.Lock()
			p.conns = append(p.conns, pc)
			p.mu.Unlock()
			go pc.pump(cc, sc, true)
			go pc.pump(sc, cc, false)
		}
	}()
	return p
}

func (pc *proxied) pump(from, to net.Conn, up bool) {
	buf := make([]byte, 32<<10)
	for {
		n, err := from.Read(buf)
		if n > 0 {
			pc.mu.Lock()
			silent := pc.silent
			if up {
				pc.up += n
			}
			pc.mu.Unlock()
			if !silent {
				if _, err := to.Write(buf[:n]); err != nil {
					return
				}
			}
		}
		if err != nil {
			to.Close()
			return
		}
	}
}

func (p *countingProxy) upBytes() []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []int
	for _, c := range p.conns {
		c.mu.Lock()
		out = append(out, c.up)
		c.mu.Unlock()
	}
	return out
}

// Idle connections are not probed at all, and after one connection is closed as silent the
// other, idle one is probed once (its answer comes back), not again and again.
func TestSilenceIdleConnectionsAreProbedAtMostOnce(t *testing.T) {
	parallel(t)
	s, arrived := silenceServer(t, 0)
	p := newCountingProxy(t, strings.TrimPrefix(s.URL, "https://"))
	cert, key := apnstest.ClientCertPEM()
	// A probe's answer may take 5 s: no connection is silent here, and on a busy machine a
	// PING's answer can take longer than a silence time.
	c, err := apns.CreateClient("https://"+p.l.Addr().String(), cert, key, false, apns.WithTLSConfig(s.ClientTLSConfig()),
		apns.WithSilenceTimes(50*time.Millisecond, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	stopAfter(t, c)
	if err := c.Start(2); err != nil {
		t.Fatal(err)
	}
	sendH2(t, c, 0, 200)
	awaitArrivals(t, arrived, 200)
	// Every answer back: from here on no request is in flight, so the connections are idle.
	waitFor(t, "every answer", func() bool { st := c.Stats(); return st.Delivered == 200 && st.InFlight == 0 })
	time.Sleep(300 * time.Millisecond)
	before := p.upBytes()
	time.Sleep(2 * time.Second) // idle: forty silence times
	after := p.upBytes()
	for i := range before {
		if after[i] != before[i] {
			t.Errorf("idle connection %d sent %d bytes in 2 s of idleness (probes of an idle connection)", i, after[i]-before[i])
		}
	}
	if st := c.Stats(); st.SilentConns != 0 {
		t.Errorf("SilentConns %d; want 0", st.SilentConns)
	}
}

// After a connection is closed as silent, the others are probed once, then left alone while
// idle: no bytes from the client on them over many silence times.
func TestSilenceAfterASilentCloseIdleConnectionsAreLeftAlone(t *testing.T) {
	parallel(t)
	s, _ := silenceServer(t, 200*time.Millisecond)
	// A probe's answer may take 5 s: the live connection, probed while its requests wait
	// 200 ms for their answers, must not be closed as silent on a busy machine.
	p := newCountingProxy(t, strings.TrimPrefix(s.URL, "https://"))
	cert, key := apnstest.ClientCertPEM()
	c, err := apns.CreateClient("https://"+p.l.Addr().String(), cert, key, false, apns.WithTLSConfig(s.ClientTLSConfig()),
		apns.WithSilenceTimes(50*time.Millisecond, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	stopAfter(t, c)
	if err := c.Start(2); err != nil {
		t.Fatal(err)
	}
	sendH2(t, c, 0, 50)
	if !s.WaitCount(50, waitGuard) {
		t.Fatal("warm-up not delivered")
	}
	p.mu.Lock()
	pc := p.conns[0]
	p.mu.Unlock()
	pc.mu.Lock()
	pc.silent = true
	pc.mu.Unlock()
	deadline := time.Now().Add(waitGuard)
	sent := uint64(50)
	for i := 1; c.Stats().SilentConns == 0; i++ {
		if time.Now().After(deadline) {
			t.Fatal("no connection closed as silent")
		}
		sendH2(t, c, i*100, 5)
		sent += 5
		time.Sleep(100 * time.Millisecond)
	}
	// Every notification answered, those of the silent connection sent again elsewhere: no
	// request is left to go out while the connections are watched.
	waitFor(t, "every notification delivered", func() bool {
		st := c.Stats()
		return st.Delivered == sent && st.InFlight == 0 && st.Queued == 0
	})
	// The one probe of the others is answered, and whatever the client still writes after its
	// last answer (seen once on CI under load: 31 bytes on the replacement connection, one
	// small TLS record, in the window after a 1 s wait) is written.
	time.Sleep(3 * time.Second)
	before := p.upBytes()
	time.Sleep(2 * time.Second)
	after := p.upBytes()
	for i := 1; i < len(before); i++ {
		if after[i] != before[i] {
			t.Errorf("connection %d sent %d bytes in 2 s of idleness after the silent close", i, after[i]-before[i])
		}
	}
	if st := c.Stats(); st.SilentConns != 1 {
		t.Errorf("SilentConns %d; want 1", st.SilentConns)
	}
}
