package apns_test

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
)

// TestMain raises the default -parallel, and after the tests checks that no goroutine of
// package apns is left: the per-test check of a parallel test sees only goroutines carrying
// its label (see parallel), and this one sees every goroutine.
func TestMain(m *testing.M) {
	flag.Parse()
	// The parallel tests spend their time waiting on timers (assume-sent timeouts, backoff,
	// silence probes, the pool's growth interval, Stop's bounds), not on the CPU: run one
	// after another they take 200 s of wall time for 25 s of CPU time. The default -parallel,
	// GOMAXPROCS, would leave them mostly waiting one after another; 8 per CPU lets their
	// waits overlap. More starve the tests of CPU on a 2-core machine (32 or 64 made tests
	// with sub-second margins fail), and so do 8 under the race detector, which makes the CPU
	// work several times larger: with it, 2 per CPU. An explicit -parallel wins.
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "test.parallel" })
	if !set {
		perCPU := 8
		if raceEnabled {
			perCPU = 2
		}
		if err := flag.Set("test.parallel", fmt.Sprint(perCPU*runtime.GOMAXPROCS(0))); err != nil {
			panic(err)
		}
	}
	code := m.Run()
	if code == 0 && !anyHung("") {
		if leaked := waitNoGoroutines(""); len(leaked) > 0 {
			fmt.Fprintf(os.Stderr, "FAIL: %d goroutines of package apns left after every test ended:\n%s\n", len(leaked), strings.Join(leaked, "\n\n"))
			code = 1
		}
	}
	os.Exit(code)
}
