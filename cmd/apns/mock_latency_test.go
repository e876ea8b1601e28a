package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// -latency makes the mock's HTTP/2 API answer no sooner than the latency.
func TestMockLatencyDelaysHTTP2Answers(t *testing.T) {
	c := startCmd("mock", "-json", "-dir", t.TempDir(), "-latency", "300ms", "-latency-jitter", "10ms")
	var info mockInfo
	if line := c.next(t); json.Unmarshal([]byte(line), &info) != nil || info.Event != "ready" {
		t.Fatalf("first line %q; want the ready object", line)
	}
	start := time.Now()
	code, out, stderr := runCmd(t, "", "push", "-gateway", info.HTTP2, "-ca", info.CA, "-p8", info.TokenKey,
		"-key-id", info.KeyID, "-team-id", info.TeamID, "-topic", "com.example.app", "-token", tok(1), "-alert", "hi")
	if code != 0 {
		t.Fatalf("push: exit %d. stdout:\n%s\nstderr:\n%s", code, out, stderr)
	}
	if el := time.Since(start); el < 300*time.Millisecond {
		t.Errorf("push answered after %v; want at least the 300ms latency", el)
	}
	if code := c.stop(t); code != 0 {
		t.Fatalf("mock exit %d after cancel; want 0", code)
	}
	for _, args := range [][]string{{"mock", "-latency", "-1s"}, {"mock", "-latency-jitter", "-1ms"}} {
		if code, _, stderr := runCmd(t, "", args...); code != 2 || !strings.Contains(stderr, "latency") {
			t.Errorf("run(%q) = %d, %q; want 2 and a word on the latency", args, code, stderr)
		}
	}
}
