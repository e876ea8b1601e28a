package apns_test

// Bounded waits for the tests of package apns_test (issue 16: a failure must fail, not hang).
// Every Stop and Shutdown in these tests goes through stop, stopAfter or shutdown, and every
// wait for another goroutine through guard or waitFor: past waitGuard they dump every
// goroutine's stack and fail the test, instead of blocking until the package timeout hides the
// failure and every later result.

import (
	"context"
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
		hung.Store(c, true)
		fatalHang(t, "Stop")
	}
}

// hung holds the clients whose Stop did not return (as keys), so that stopAfter does not wait
// for them a second time, and checkNoGoroutines does not blame their goroutines on a later
// test.
var hung sync.Map

// anyHung reports whether the Stop of some client of this test binary did not return.
func anyHung() bool {
	found := false
	hung.Range(func(any, any) bool { found = true; return false })
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
		hung.Store(c, true)
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
