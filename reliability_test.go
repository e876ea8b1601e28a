package apns_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"log/slog"
	"math/big"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	apns "github.com/Kwik-messenger/apns-go"
	"github.com/Kwik-messenger/apns-go/apnstest"
)

func TestHostnameMismatchIsRefused(t *testing.T) {
	parallel(t)
	s := newServer(t)
	cfg := s.ClientTLSConfig()
	cfg.ServerName = "gateway.example.com" // the mock's certificate is for 127.0.0.1 and localhost
	c, err := apns.CreateClient(s.Addr, nil, nil, false, apns.WithTLSConfig(cfg))
	if err != nil {
		t.Fatal(err)
	}
	stopAfter(t, c)
	var hostErr x509.HostnameError
	if err := c.Start(1); !errors.As(err, &hostErr) {
		t.Errorf("Start = %v; want a hostname error", err)
	}
}

// tls11Server accepts TLS handshakes of version 1.1 at most, with a throwaway certificate.
func tls11Server(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "old"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		MinVersion:   tls.VersionTLS10,
		MaxVersion:   tls.VersionTLS11,
	})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			conn.(*tls.Conn).Handshake()
			conn.Close()
		}
	}()
	return ln.Addr().String()
}

func TestTLSBelow12IsRefusedEvenIfTheConfigAllowsIt(t *testing.T) {
	parallel(t)
	addr := tls11Server(t)
	c, err := apns.CreateClient(addr, nil, nil, true,
		apns.WithTLSConfig(&tls.Config{MinVersion: tls.VersionTLS10}), apns.WithDialTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	stopAfter(t, c)
	if err := c.Start(1); err == nil || !strings.Contains(err.Error(), "version") {
		t.Errorf("Start against a TLS 1.1 server = %v; want a protocol version error", err)
	}
}

func TestErrorsAndEventsNeverCarryAWholeToken(t *testing.T) {
	s := newServer(t)
	for i := 0; i < 50; i += 10 {
		s.RejectToken(token(i), 8)
	}
	s.Script(apnstest.ConnScript{After: 5, Drop: true}, apnstest.ConnScript{After: 5, Garbage: []byte{8, 8, 1, 2, 3, 4}})
	var mu sync.Mutex
	var texts []string
	var logs lockedBuffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	c := newClient(t, s, apns.WithLogger(logger), apns.WithErrorHandler(func(err error) {
		mu.Lock()
		texts = append(texts, err.Error())
		mu.Unlock()
	}))
	c.SetRejectionCallback(func(r *apns.Rejection) {
		mu.Lock()
		texts = append(texts, r.Error())
		mu.Unlock()
	})
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	sendAll(t, c, 50)
	stop(t, c)
	mu.Lock()
	defer mu.Unlock()
	if len(texts) < 5 {
		t.Fatalf("only %d error texts; want the 5 rejections and the connection events", len(texts))
	}
	log := logs.String()
	for _, want := range []string{"connected", "notification rejected", "token=" + token(10)[:8] + "…", "names no frame in flight", "frames to write again", "sentinel confirmed"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	texts = append(texts, strings.Split(log, "\n")...)
	for _, text := range texts {
		for i := 0; i < 50; i++ {
			if strings.Contains(text, token(i)) || strings.Contains(strings.ToUpper(text), strings.ToUpper(token(i))) {
				t.Errorf("error text %q contains token %d", text, i)
			}
		}
	}
}

func TestSendRacingStopLosesNothing(t *testing.T) {
	s := newServer(t)
	c := newClient(t, s, apns.WithAssumeSentTimeout(5*time.Second)) // counts every arrival: see TestRejectedNotificationsReachCallbackOnceAndTheRestArriveOnce
	l := newLedger(c)
	if err := c.Start(2); err != nil {
		t.Fatal(err)
	}
	var accepted atomic.Int64
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g * 1_000_000; ; i++ {
				err := c.Send(token(i), time.Time{}, apns.PRIORITY_IMMEDIATE, payload(i))
				if errors.Is(err, apns.ErrStopped) {
					return
				}
				if err != nil {
					t.Error(err)
					return
				}
				accepted.Add(1)
			}
		}()
	}
	waitFor(t, "the gateway to get 2000 notifications", func() bool { return s.Count() >= 2000 }) // let the senders get going
	stop(t, c)
	guard(t, "the senders to see ErrStopped", wg.Wait)
	st := c.Stats()
	if int64(st.Accepted) != accepted.Load() || st.Delivered+st.Rejected+st.Unsent != st.Accepted {
		t.Errorf("accepted %d by Send; stats %+v", accepted.Load(), st)
	}
	if got := int64(len(received(s))); got != accepted.Load()-int64(len(l.snapshot())) {
		t.Errorf("server got %d distinct tokens; want %d accepted minus %d reported", got, accepted.Load(), len(l.snapshot()))
	}
}

func TestBlockedCallbackStallsNoWorkerAndStopWaitsForIt(t *testing.T) {
	s := newServer(t)
	for i := 0; i < 1000; i += 100 {
		s.RejectToken(token(i), 8)
	}
	c := newClient(t, s)
	// Released on every path: a failed assertion must not leave the callback blocked, or the
	// cleanup's Stop would wait for it forever. (Cleanups run last first: this one before
	// newClient's Stop.)
	release := make(chan struct{})
	releaseOnce := sync.OnceFunc(func() { close(release) })
	t.Cleanup(releaseOnce)
	var calls atomic.Int64
	c.SetCallback(func(*apns.Message, uint8) {
		calls.Add(1)
		<-release // the first callback blocks until the gateway has everything else
	})
	if err := c.Start(2); err != nil {
		t.Fatal(err)
	}
	sendAll(t, c, 1000)
	if !s.WaitCount(990, waitGuard) {
		t.Fatalf("gateway got %d of 990 while a callback was blocked: the workers stalled", s.Count())
	}
	stopped := stopAsync(c)
	// Wait until Stop has done everything but wait for the callbacks: every notification
	// settled, the workers' sentinels answered and their connections closed.
	waitFor(t, "Stop to end the workers while a callback is blocked", func() bool {
		st := c.Stats()
		return st.Delivered+st.Rejected == 1000 && st.Connections == 0 && s.Sentinels() > 0
	})
	select {
	case err := <-stopped:
		t.Fatalf("Stop returned (%v) while a callback was still running", err)
	default:
	}
	releaseOnce()
	if err := receive(t, "Stop to return after the callback did", stopped); err != nil {
		t.Errorf("Stop: %v", err)
	}
	if got := calls.Load(); got != 10 {
		t.Errorf("callback ran %d times; want 10", got)
	}
}

func TestSetCallbackWhileRunningIsSafe(t *testing.T) {
	parallel(t)
	s := newServer(t)
	s.RejectFunc(func(n apnstest.Notification) uint8 {
		if n.Token[31]%10 == 0 {
			return 8
		}
		return 0
	})
	c := newClient(t, s)
	var a, b atomic.Int64
	c.SetCallback(func(*apns.Message, uint8) { a.Add(1) }) // a callback is set from the start
	if err := c.Start(2); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 200; i++ {
			if i%2 == 0 {
				c.SetCallback(func(*apns.Message, uint8) { a.Add(1) })
			} else {
				c.SetCallback(func(*apns.Message, uint8) { b.Add(1) })
			}
		}
	}()
	sendAll(t, c, 2000)
	receive(t, "the SetCallback loop", done)
	stop(t, c)
	if got := a.Load() + b.Load(); got != int64(c.Stats().Rejected) {
		t.Errorf("callbacks ran %d times; want one per rejection, %d", got, c.Stats().Rejected)
	}
}

func TestSlowHandshakeBeyondTheDialTimeoutFailsStart(t *testing.T) {
	parallel(t)
	s := newServer(t)
	slow := apnstest.ConnScript{HandshakeDelay: 2 * time.Second}
	s.Script(slow, slow, slow)
	c := newClient(t, s, apns.WithDialTimeout(100*time.Millisecond))
	if err := c.Start(1); err == nil {
		t.Fatal("Start succeeded although every handshake outlasted the dial timeout")
	}
}

func TestSilentGatewayCannotHangStop(t *testing.T) {
	s := newServer(t)
	s.Script(apnstest.ConnScript{Stall: time.Hour}) // accepts, then reads nothing and says nothing
	c := newClient(t, s)
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	sendAll(t, c, 100)
	stop(t, c) // fails the test if Stop hangs on the silent gateway
	// Written into socket buffers and never answered: assumed delivered, by the protocol's rules.
	if st := c.Stats(); st.Delivered != 100 {
		t.Errorf("stats %+v", st)
	}
}

// A panic in the callback is not recovered: it crashes the program, like a panic in any
// goroutine. The test runs the scenario in a child process.
func TestCallbackPanicIsNotRecovered(t *testing.T) {
	if os.Getenv("APNS_TEST_PANIC_CHILD") == "1" {
		s := apnstest.NewServer()
		s.RejectFunc(func(apnstest.Notification) uint8 { return 8 })
		cert, key := apnstest.ClientCertPEM()
		c, _ := apns.CreateClient(s.Addr, cert, key, false, apns.WithTLSConfig(s.ClientTLSConfig()))
		c.SetCallback(func(*apns.Message, uint8) { panic("callback boom") })
		c.Start(1)
		c.Send(token(1), time.Time{}, apns.PRIORITY_IMMEDIATE, payload(1))
		stop(t, c)
		return
	}
	// The child's own timeout bounds the wait for it.
	cmd := exec.Command(os.Args[0], "-test.run=^TestCallbackPanicIsNotRecovered$", "-test.timeout="+waitGuard.String())
	cmd.Env = append(os.Environ(), "APNS_TEST_PANIC_CHILD=1")
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || !strings.Contains(string(out), "panic: callback boom") {
		t.Errorf("child: %v\n%s", err, out)
	}
}

// lockedBuffer is a bytes.Buffer safe for concurrent writes, for loggers.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
