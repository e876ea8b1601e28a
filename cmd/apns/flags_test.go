package main

import (
	"net"
	"strings"
	"sync"
	"testing"
)

// Nonsense values are refused with exit status 2 and a message naming the flag at fault, and
// only that flag.
func TestNonsenseFlagValuesAreRefusedByName(t *testing.T) {
	push := []string{"push", "-cert", "c.pem", "-key", "k.pem", "-token", tok(1), "-alert", "hi"}
	for _, tc := range []struct {
		args    []string
		flag    string   // the message names it
		notFlag []string // and none of these
	}{
		{append(push, "-badge", "-7"), "-badge", nil},
		{append(push, "-expiry", "-5m"), "-expiry", nil},
		{append(push, "-assume-sent", "-1s"), "-assume-sent", nil},
		{append(push, "-progress", "-1s"), "-progress", nil},
		{append(push, "-timeout", "0"), "-timeout", nil},
		{append(push, "-workers", "0"), "-workers", nil},
		{append(push, "-priority", "7"), "-priority", nil},
		{[]string{"demo", "-assume-sent", "-1s"}, "-assume-sent", []string{"-workers", "-reject-every", "-protocol"}},
		{[]string{"demo", "-workers", "0"}, "-workers", []string{"-assume-sent", "-reject-every", "-protocol"}},
		{[]string{"demo", "-n", "-1"}, "-n", []string{"-workers", "-reject-every", "-protocol"}},
		{[]string{"demo", "-reject-every", "-3"}, "-reject-every", []string{"-workers", "-protocol"}},
		{[]string{"demo", "-progress", "-1s"}, "-progress", []string{"-workers", "-protocol"}},
		{[]string{"demo", "-protocol", "smoke"}, "-protocol", []string{"-workers", "-reject-every"}},
		{[]string{"bench", "-assume-sent", "-1s"}, "-assume-sent", nil},
		{[]string{"feedback", "-cert", "c.pem", "-key", "k.pem", "-timeout", "-1s"}, "-timeout", []string{"-interval"}},
		{[]string{"feedback", "-cert", "c.pem", "-key", "k.pem", "-interval", "0"}, "-interval", []string{"-timeout"}},
		{[]string{"mock", "-reject-every", "-1"}, "-reject-every", []string{"-reject-status"}},
		{[]string{"mock", "-reject-status", "0"}, "-reject-status", []string{"-reject-every"}},
	} {
		code, _, stderr := runCmd(t, "", tc.args...)
		if code != exitUsage || !strings.Contains(stderr, tc.flag+" ") {
			t.Errorf("%q: exit %d, stderr %q; want 2 and a message naming %s", tc.args, code, stderr, tc.flag)
			continue
		}
		for _, f := range tc.notFlag {
			if strings.Contains(stderr, f+" ") {
				t.Errorf("%q: stderr %q names %s too; want only %s", tc.args, stderr, f, tc.flag)
			}
		}
	}
}

// An https:// gateway means the HTTP/2 API: with -protocol binary the command says so instead
// of failing to look up a host named "https://...".
func TestAnHTTPSGatewayWithTheBinaryProtocolIsExplained(t *testing.T) {
	for _, args := range [][]string{
		{"push", "-protocol", "binary", "-gateway", "https://127.0.0.1:1", "-cert", "c.pem", "-key", "k.pem", "-token", tok(1), "-alert", "hi"},
		{"feedback", "-gateway", "https://127.0.0.1:1", "-cert", "c.pem", "-key", "k.pem"},
	} {
		code, _, stderr := runCmd(t, "", args...)
		if code != exitUsage || !strings.Contains(stderr, "https:// URL, which means the HTTP/2 API") || strings.Contains(stderr, "no such host") {
			t.Errorf("%q: exit %d, stderr %q; want 2 and that an https URL means HTTP/2", args, code, stderr)
		}
	}
}

// silentGateway accepts TCP connections and never answers, like a gateway stuck before the
// TLS handshake. Its connections close with the test.
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

// Against a silent gateway, push and feedback say what timed out, and -timeout bounds it.
func TestASilentGatewaySaysWhatTimedOut(t *testing.T) {
	addr := silentGateway(t)
	ca, cert, key := pki(t)
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"push", "-gateway", addr, "-ca", ca, "-cert", cert, "-key", key, "-token", tok(1), "-alert", "hi", "-timeout", "100ms"},
			[]string{addr, "TLS handshake timed out", "100ms per attempt", "3 attempts"}},
		{[]string{"push", "-gateway", "https://" + addr, "-ca", ca, "-cert", cert, "-key", key, "-token", tok(1), "-alert", "hi", "-timeout", "100ms"},
			[]string{addr, "TLS handshake timed out", "100ms per attempt", "3 attempts"}},
		{[]string{"feedback", "-gateway", addr, "-ca", ca, "-cert", cert, "-key", key, "-timeout", "200ms"},
			[]string{"no answer from the feedback service at " + addr, "-timeout 200ms", "TLS handshake"}},
	} {
		code, _, stderr := runCmd(t, "", tc.args...)
		if code != exitUsage {
			t.Errorf("%q: exit %d; want 2. stderr:\n%s", tc.args, code, stderr)
		}
		for _, w := range tc.want {
			if !strings.Contains(stderr, w) {
				t.Errorf("%q: stderr %q; want it to say %q", tc.args[:3], stderr, w)
			}
		}
	}
}
