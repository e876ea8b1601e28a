package main

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/Kwik-messenger/apns-go/apnstest"
)

func TestCountUsesThePluralUnlessOne(t *testing.T) {
	for _, tc := range []struct {
		n    int
		want string
	}{{0, "0 invalid tokens"}, {1, "1 invalid token"}, {2, "2 invalid tokens"}} {
		if got := count(tc.n, "invalid token"); got != tc.want {
			t.Errorf("count(%d) = %q; want %q", tc.n, got, tc.want)
		}
	}
}

// push's summary counts in the singular where there is one.
func TestPushSummaryWording(t *testing.T) {
	s := apnstest.NewServer()
	defer s.Close()
	ca, cert, key := pki(t)
	code, out, stderr := runCmd(t, "", "push", "-gateway", s.Addr, "-ca", ca, "-cert", cert, "-key", key,
		"-token", tok(1), "-token", "abc", "-alert", "hi", "-assume-sent", "100ms", "-progress", "0")
	if code != exitRejected || !strings.Contains(out, "1 delivered, 0 rejected, 0 unsent, 1 invalid token, of 2 tokens") {
		t.Fatalf("exit %d, stdout %q; want 1 and the summary with \"1 invalid token\". stderr:\n%s", code, out, stderr)
	}
}

// On a terminal, a line printed while the bar is drawn goes on a cleared line, not inside the
// bar; the bar is drawn again below it on the next tick.
func TestLinesPrintedAboveTheBarClearItFirst(t *testing.T) {
	var buf bytes.Buffer
	k := 10
	p := newProgress(&buf, "answered", 100, func() int { return k })
	p.tty = true
	print := func() { fmt.Fprint(&buf, "rejected  01010101…0101  410 Unregistered\n") }

	p.above(print) // no bar yet: nothing to clear
	if got := buf.String(); strings.Contains(got, "\x1b[K") {
		t.Fatalf("output %q; want no clearing before any bar", got)
	}
	buf.Reset()
	p.draw(p.begin.Add(time.Second))
	p.above(print)
	got := buf.String()
	bar, line, ok := strings.Cut(got, "\r\x1b[K")
	if !ok || !strings.Contains(bar, "10/100 answered") || line != "rejected  01010101…0101  410 Unregistered\n" {
		t.Fatalf("output %q; want the bar, then \\r\\x1b[K, then the line", got)
	}
}

// A user who forgot -cert is refused by the binary gateway, as by Apple's, and told so: the
// notification is not reported delivered and the exit status is not 0.
func TestPushWithoutACertificateIsNotDelivered(t *testing.T) {
	s := apnstest.NewServer()
	defer s.Close()
	ca, _, _ := pki(t)
	code, out, stderr := runCmd(t, "", "push", "-gateway", s.Addr, "-ca", ca, "-token", tok(1), "-alert", "hi", "-assume-sent", "100ms")
	if code == exitOK || strings.Contains(out, "1 delivered") || !strings.Contains(stderr, "certificate required") {
		t.Fatalf("exit %d, stdout %q, stderr %q; want a failure naming the missing certificate", code, out, stderr)
	}
	if s.Count() != 0 {
		t.Fatalf("the gateway accepted %d notifications from a client without a certificate", s.Count())
	}
}
