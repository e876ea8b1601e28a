package apns_test

// Bounded waits for the tests of package apns_test (issue 16: a failure must fail, not hang).
// Every Stop and Shutdown in these tests goes through stop, stopAfter or shutdown, and every
// wait for another goroutine through guard or waitFor: past waitGuard they dump every
// goroutine's stack and fail the test, instead of blocking until the package timeout hides the
// failure and every later result.
//
// The goroutine-leak check (checkNoGoroutines) is per test, so that the tests that mostly wait
// can run in parallel: see parallel.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"

	apns "github.com/Kwik-messenger/apns-go"
)

// waitGuard bounds every wait in these tests. It only turns a hang into a failure; no test
// depends on anything happening within it.
const waitGuard = 30 * time.Second

// stop stops c, failing the test if Stop returns an error or does not return within waitGuard.
func stop(t testing.TB, c *apns.Client) {
	t.Helper()
	done := stopAsync(c)
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Stop: %v", err)
		}
	case <-time.After(waitGuard):
		markHung(t, c)
		fatalHang(t, "Stop")
	}
}

// hung holds the clients whose Stop or Shutdown did not return (as keys; the values are the
// goroutine labels of their tests, see labelOf), so that stopAfter does not wait for them a
// second time, and checkNoGoroutines does not blame their goroutines on a later test.
var hung sync.Map

// markHung records that the Stop or Shutdown of c, a client of test t, did not return.
func markHung(t testing.TB, c *apns.Client) { hung.Store(c, labelOf(t)) }

// anyHung reports whether the Stop of some client of this test binary did not return; with a
// label, of some client of the tests carrying that label.
func anyHung(label string) bool {
	found := false
	hung.Range(func(_, l any) bool { found = label == "" || l == label; return !found })
	return found
}

// shutdown calls c.Shutdown(ctx) and returns its error, failing the test if it does not return
// within waitGuard (whatever ctx says: a Shutdown that ignores its context must not hang the
// test either).
func shutdown(t testing.TB, c *apns.Client, ctx context.Context) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- c.Shutdown(ctx) }()
	select {
	case err := <-done:
		return err
	case <-time.After(waitGuard):
		markHung(t, c)
		fatalHang(t, "Shutdown")
		return nil
	}
}

// stopAfter stops c when the test ends (bounded, as stop) and then checks that Stop left no
// goroutine of package apns behind.
func stopAfter(t testing.TB, c *apns.Client) {
	t.Helper()
	t.Cleanup(func() {
		if _, ok := hung.Load(c); ok {
			return // the test has failed already, with the goroutines
		}
		stop(t, c)
		checkNoGoroutines(t)
	})
}

// stopAsync starts c.Stop on a new goroutine and returns a channel that receives its error,
// for tests that check what happens while Stop is under way; wait for it with receive.
func stopAsync(c *apns.Client) <-chan error {
	done := make(chan error, 1)
	go func() { done <- c.Stop() }()
	return done
}

// receive returns the next value from ch, failing the test if none comes within waitGuard.
func receive[T any](t testing.TB, what string, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitGuard):
		fatalHang(t, what)
		var zero T
		return zero
	}
}

// guard runs f on a new goroutine and fails the test if it does not return within waitGuard.
// f must not call t.Fatal (it runs on another goroutine).
func guard(t testing.TB, what string, f func()) {
	t.Helper()
	guardErr(t, what, func() error { f(); return nil })
}

// guardErr is guard for a function that returns an error, which it returns.
func guardErr(t testing.TB, what string, f func() error) error {
	t.Helper()
	done := make(chan error, 1) // buffered: a late f must not block forever after a failure
	go func() { done <- f() }()
	return receive(t, what, done)
}

// waitFor fails the test unless cond becomes true within waitGuard; it polls every millisecond.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitGuard)
	for !cond() {
		if time.Now().After(deadline) {
			fatalHang(t, what)
		}
		time.Sleep(time.Millisecond)
	}
}

// fatalHang fails the test for a wait that outlasted waitGuard, with every goroutine's stack.
func fatalHang(t testing.TB, what string) {
	t.Helper()
	t.Fatalf("gave up after %v waiting for %s; goroutines:\n%s", waitGuard, what, goroutines())
}

// goroutines returns the stacks of every goroutine, as a panic prints them.
func goroutines() string {
	var b strings.Builder
	if err := pprof.Lookup("goroutine").WriteTo(&b, 2); err != nil {
		return "(no goroutine dump: " + err.Error() + ")"
	}
	return b.String()
}

// waitBlocked waits until a goroutine is blocked (its state, as a goroutine dump shows it, is
// state: "select", "chan receive", "sync.Mutex.Lock"...) in a function whose name contains fn:
// for a test that needs another goroutine to have reached a blocking point before it acts.
func waitBlocked(t testing.TB, fn, state string) {
	t.Helper()
	waitFor(t, "a goroutine blocked ["+state+"] in "+fn, func() bool {
		buf := make([]byte, 1<<20)
		for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
			header, frames, _ := strings.Cut(g, "\n")
			if strings.Contains(header, "["+state) && strings.Contains(frames, fn) {
				return true
			}
		}
		return false
	})
}

// Parallel tests and the goroutine-leak check.
//
// Until Stop, a client's goroutines are of package apns (their stacks show frames of
// "…/apns-go."), and the leak check after Stop looks for such goroutines. A sequential test
// runs alone, so it looks at every goroutine of the process. A parallel test cannot: other
// tests' clients are running. So parallel labels the test's goroutine with a pprof label
// naming the test; the runtime copies the labels of a goroutine to every goroutine it starts
// (runtime.newproc1), so every goroutine the test starts, and the goroutines those start,
// down to the client's workers, readers, dispatcher and the net/http goroutines of its
// HTTP/2 connections, carry it, and the check looks only at goroutines carrying the label.
//
// What a label cannot see (checked on go1.26.8): the goroutine of a time.AfterFunc callback
// has no labels (the runtime starts it from the scheduler, where no goroutine runs), and
// neither has that of a context.AfterFunc callback whose context a timer ended (WithTimeout,
// WithDeadline); a context.AfterFunc callback run because a labelled goroutine cancelled the
// context carries that goroutine's labels, and so do the goroutines of an httptest or
// apnstest server (started from the test's goroutine) and of net/http's client connections
// (started from the goroutine making the request). The library calls no time.AfterFunc; its
// context.AfterFunc callbacks watch contexts that Stop or Shutdown end from their own
// goroutine (abortCtx, the feedback poll's fetchCtx), which is the test's or one it started.
// A leaked goroutine without a label would be missed by the per-test check; a label is never
// wrong, since a goroutine carries the label of the test whose goroutine started it,
// directly or not, and tests share no client. TestMain (main_test.go) therefore checks, after
// every test has run, that no goroutine of package apns is left at all.
//
// Go runs every sequential top-level test before any parallel one starts, so a sequential
// test that looks at the whole process (checkNoGoroutines and countGoroutines without a
// label, waitBlocked) still runs alone. waitBlocked needs a goroutine's state, which the
// profile that shows labels does not give: a test that calls it stays sequential.

// testLabel is the pprof label key that names the test a goroutine belongs to.
const testLabel = "apns-test"

// labelled holds the names of the tests whose goroutines carry their name as label.
var labelled sync.Map

// parallel labels the goroutines t starts with t's name and then marks t parallel. A test
// calls it first, before it starts anything; the subtests of a labelled test carry its
// label, unless they call parallel themselves; subtests that run in parallel with each other
// call parallel, so that each checks its own. Only a test that looks at no goroutine but its
// own may call it: not one that calls waitBlocked, which sees every goroutine of the process.
//
// With -count above 1, the instances of one test share a label: the check of one may wait
// for another's goroutines to end.
func parallel(t *testing.T) {
	t.Helper()
	pprof.SetGoroutineLabels(pprof.WithLabels(context.Background(), pprof.Labels(testLabel, t.Name())))
	labelled.Store(t.Name(), true)
	t.Parallel()
}

// labelOf returns the label of the goroutines test t starts: the name of t or of its nearest
// labelled parent test, or "" when neither is labelled (a sequential test).
func labelOf(t testing.TB) string {
	for name := t.Name(); ; {
		if _, ok := labelled.Load(name); ok {
			return name
		}
		i := strings.LastIndexByte(name, '/')
		if i < 0 {
			return ""
		}
		name = name[:i]
	}
}

// checkNoGoroutines fails if a goroutine of package apns that belongs to t is still running
// after waitGuard: for a parallel test one that carries its label, for a sequential test any.
func checkNoGoroutines(t testing.TB) {
	t.Helper()
	label := labelOf(t)
	if anyHung(label) {
		t.Log("goroutine leak check skipped: an earlier client's Stop never returned, and its goroutines remain")
		return
	}
	if leaked := waitNoGoroutines(label); len(leaked) > 0 {
		t.Fatalf("%d goroutines of package apns left after Stop:\n%s", len(leaked), strings.Join(leaked, "\n\n"))
	}
}

// waitNoGoroutines waits up to waitGuard until no goroutine of package apns carrying label is
// left (with label "": none at all), and returns the stacks of those still there then.
func waitNoGoroutines(label string) []string {
	deadline := time.Now().Add(waitGuard)
	for {
		leaked := apnsGoroutines(label)
		if len(leaked) == 0 || time.Now().After(deadline) {
			return leaked
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// apnsGoroutines returns the stacks of the goroutines that run code of package apns: those
// carrying label, or with label "", every one. For a label, a stack is a record of the
// goroutine profile (debug=1, which shows labels): a count of goroutines with that stack and
// those labels, then the frames.
func apnsGoroutines(label string) []string {
	var stacks []string
	if label == "" {
		buf := make([]byte, 1<<20)
		stacks = strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n")
	} else {
		var b strings.Builder
		if err := pprof.Lookup("goroutine").WriteTo(&b, 1); err != nil {
			return []string{"(no goroutine profile: " + err.Error() + ")"}
		}
		stacks = strings.Split(b.String(), "\n\n")
	}
	var out []string
	for _, g := range stacks {
		if strings.Contains(g, "/apns-go.") && (label == "" || hasLabel(g, label)) {
			out = append(out, g)
		}
	}
	return out
}

// countGoroutines counts the goroutines of test t (those carrying its label; for a
// sequential test, every goroutine of the process) with a frame of function fn, a name as
// stacks show it without its package, such as "(*dispatcher).run".
func countGoroutines(t testing.TB, fn string) int {
	label := labelOf(t)
	if label == "" {
		buf := make([]byte, 4<<20)
		return strings.Count(string(buf[:runtime.Stack(buf, true)]), fn+"(")
	}
	var b strings.Builder
	if err := pprof.Lookup("goroutine").WriteTo(&b, 1); err != nil {
		t.Fatalf("goroutine profile: %v", err)
	}
	n := 0
	for _, record := range strings.Split(b.String(), "\n\n") {
		// A record begins with the number of goroutines that share its stack and labels,
		// and names each frame's function followed by its offset: fn+0x1f. The first
		// begins after the profile's header line.
		if strings.HasPrefix(record, "goroutine profile:") {
			_, record, _ = strings.Cut(record, "\n")
		}
		if hasLabel(record, label) && strings.Contains(record, fn+"+") {
			var k int
			if _, err := fmt.Sscan(record, &k); err != nil {
				t.Fatalf("goroutine profile record %q: %v", record, err)
			}
			n += k
		}
	}
	return n
}

// hasLabel reports whether a record of the debug=1 goroutine profile carries the test label
// label; the profile prints a record's labels as a line `# labels: {"key":"value", ...}`.
func hasLabel(record, label string) bool {
	want := fmt.Sprintf("%q:%q", testLabel, label)
	for _, line := range strings.Split(record, "\n") {
		if set, ok := strings.CutPrefix(line, "# labels: {"); ok {
			set = strings.TrimSuffix(set, "}")
			for _, kv := range strings.Split(set, ", ") {
				if kv == want {
					return true
				}
			}
		}
	}
	return false
}

// rawTLSServer listens on loopback with TLS: a new self-signed certificate for 127.0.0.1,
// ALPN h2, and what tweak changes in the configuration (nil: nothing). It hands every
// connection, with its number from 1, to serve on a goroutine of its own. When the test ends
// it closes the listener and the connections and waits for the goroutines. It returns the
// address and a pool holding the certificate, for the client's RootCAs.
func rawTLSServer(t testing.TB, tweak func(*tls.Config), serve func(n int64, c *tls.Conn)) (string, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "raw"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:        true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	cfg := &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		NextProtos:   []string{"h2"},
	}
	if tweak != nil {
		tweak(cfg)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for n := int64(1); ; n++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() { serve(n, c.(*tls.Conn)) })
		}
	})
	return ln.Addr().String(), pool
}
