package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/Kwik-messenger/apns-go/apnstest"
)

// When the gateway rejects some notifications, bench exits 1 and says why: how many, of
// which run, and the reasons.
func TestBenchSaysWhyItExitsWith1(t *testing.T) {
	s := apnstest.NewUnstartedServer()
	s.DiscardNotifications = true
	s.Start()
	defer s.Close()
	s.RejectToken(demoToken(7), 8)
	ca, cert, key := pki(t)
	code, out, stderr := runCmd(t, "", "bench", "-gateway", s.Addr, "-ca", ca, "-cert", cert, "-key", key,
		"-n", "50", "-workers", "1", "-assume-sent", "100ms")
	if code != exitRejected {
		t.Fatalf("exit %d; want 1. stdout:\n%s\nstderr:\n%s", code, out, stderr)
	}
	for _, want := range []string{"the run with 1 worker delivered 49 of 50", "1 rejected or not sent", "status 8 (invalid token): 1"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr:\n%s\nwant %q", stderr, want)
		}
	}
	if !strings.Contains(out, "to the gateway at "+s.Addr) {
		t.Errorf("stdout:\n%s\nwant \"to the gateway at %s\"", out, s.Addr)
	}
}

// An -svg path that cannot be written is refused before any run: here the gateway is a
// closed port, which the runs would fail on first.
func TestBenchChecksTheSVGPathFirst(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ca, cert, key := pki(t)
	svg := filepath.Join(t.TempDir(), "no-such-dir", "bench.svg")
	code, _, stderr := runCmd(t, "", "bench", "-gateway", addr, "-ca", ca, "-cert", cert, "-key", key, "-svg", svg)
	if code != exitUsage || !strings.Contains(stderr, "-svg") || strings.Contains(stderr, "refused") {
		t.Fatalf("exit %d, stderr %q; want 2 and the -svg error before any connection", code, stderr)
	}

	// The check leaves no file behind.
	svg = filepath.Join(t.TempDir(), "bench.svg")
	if err := checkWritable(svg); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(svg); !os.IsNotExist(err) {
		t.Fatalf("checkWritable left %s behind (%v)", svg, err)
	}
}
