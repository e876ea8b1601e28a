package main

import (
	"testing"

	"github.com/Kwik-messenger/apns-go/apnstest"
)

// apns push -content-available without -priority goes at priority 5: APNs (and the mock)
// refuse a background push at 10 with 400 BadPriority (issue 10 item 8). Without
// -content-available the default stays 10; over the binary protocol the same rule holds.
func TestPushBackgroundDefaultsToPriority5(t *testing.T) {
	s := apnstest.NewUnstartedHTTP2Server()
	s.RequireClientCert = true
	s.Start()
	defer s.Close()
	ca, cert, key := pki(t)
	for _, tc := range []struct {
		flag string
		tok  byte
		want int
	}{{"-content-available", 1, 5}, {"-alert=x", 2, 10}} {
		code, out, stderr := runCmd(t, "", "push", "-gateway", s.URL, "-ca", ca, "-cert", cert, "-key", key,
			"-token", tok(tc.tok), tc.flag)
		if code != 0 {
			t.Errorf("push %s: exit %d; stdout:\n%s\nstderr:\n%s", tc.flag, code, out, stderr)
		}
	}
	got := map[string]int{}
	for _, r := range s.Requests() {
		got[r.Token] = r.Priority
	}
	if got[tok(1)] != 5 || got[tok(2)] != 10 {
		t.Errorf("priorities %v; want 5 for the background push, 10 for the alert", got)
	}

	b := apnstest.NewServer()
	defer b.Close()
	for _, tc := range []struct {
		flag string
		tok  byte
	}{{"-content-available", 3}, {"-alert=x", 4}} {
		if code, out, stderr := runCmd(t, "", "push", "-gateway", b.Addr, "-ca", ca, "-cert", cert, "-key", key,
			"-token", tok(tc.tok), tc.flag, "-assume-sent", "100ms"); code != 0 {
			t.Errorf("binary push %s: exit %d; stdout:\n%s\nstderr:\n%s", tc.flag, code, out, stderr)
		}
	}
	if !b.WaitCount(2, guard) {
		t.Fatal("the binary gateway did not get both")
	}
	prio := map[byte]uint8{}
	for _, n := range b.Notifications() {
		prio[n.Token[0]] = n.Priority
	}
	if prio[3] != 5 || prio[4] != 10 {
		t.Errorf("binary priorities %v; want 5 for the background push, 10 for the alert", prio)
	}
}
