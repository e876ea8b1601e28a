package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Kwik-messenger/apns-go/apnstest"
)

// guard bounds every wait in these tests. It only turns a hang into a failure; no test
// depends on anything happening within it.
const guard = 30 * time.Second

// TestMain fails the run if the commands leave goroutines behind.
func TestMain(m *testing.M) {
	before := runtime.NumGoroutine()
	code := m.Run()
	if code == 0 {
		deadline := time.Now().Add(guard)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				fmt.Fprintf(os.Stderr, "%d goroutines before the tests, %d after:\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
				code = 1
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	os.Exit(code)
}

// runCmd runs a command line in process with stdin and returns its exit status and output.
func runCmd(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = runContext(context.Background(), args, strings.NewReader(stdin), &out, &errOut)
	return code, out.String(), errOut.String()
}

// syncBuffer is a bytes.Buffer for a command running on another goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// bgCmd is a command running until its context is cancelled, with its stdout as lines.
type bgCmd struct {
	cancel context.CancelFunc
	lines  chan string
	done   chan int
	stderr *syncBuffer
}

// startCmd runs a command line on a new goroutine. The test must call stop.
func startCmd(args ...string) *bgCmd {
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	c := &bgCmd{cancel: cancel, lines: make(chan string, 1000), done: make(chan int, 1), stderr: &syncBuffer{}}
	go func() {
		code := runContext(ctx, args, strings.NewReader(""), pw, c.stderr)
		pw.Close()
		c.done <- code
	}()
	go func() {
		defer close(c.lines)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
	}()
	return c
}

// next returns the command's next line of stdout.
func (c *bgCmd) next(t *testing.T) string {
	t.Helper()
	select {
	case l, ok := <-c.lines:
		if !ok {
			t.Fatalf("stdout ended; stderr:\n%s", c.stderr.String())
		}
		return l
	case <-time.After(guard):
		t.Fatalf("no line on stdout; stderr:\n%s", c.stderr.String())
		return ""
	}
}

// stop cancels the command and returns its exit status.
func (c *bgCmd) stop(t *testing.T) int {
	t.Helper()
	c.cancel()
	select {
	case code := <-c.done:
		for range c.lines { // drain the reader
		}
		return code
	case <-time.After(guard):
		t.Fatal("the command did not end after its context was cancelled")
		return -1
	}
}

// pki writes the test CA, the client certificate and key into a temporary directory.
func pki(t *testing.T) (ca, cert, key string) {
	t.Helper()
	dir := t.TempDir()
	c, k := apnstest.ClientCertPEM()
	ca, cert, key = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	for name, data := range map[string][]byte{ca: apnstest.CACertPEM(), cert: c, key: k} {
		if err := os.WriteFile(name, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return ca, cert, key
}

func tok(b byte) string { return strings.Repeat(fmt.Sprintf("%02x", b), 32) }

func TestNoArgumentsPrintsUsagePointingAtDemo(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := run(nil, &stdout, &stderr)
	if code != 2 || !strings.Contains(stderr.String(), "apns demo") || stdout.Len() != 0 {
		t.Fatalf("exit %d, stderr:\n%s\nwant 2 and usage naming demo on stderr", code, stderr.String())
	}
	stdout.Reset()
	if code := run([]string{"help"}, &stdout, &stderr); code != 0 || !strings.Contains(stdout.String(), "commands:") {
		t.Fatalf("apns help: exit %d, stdout:\n%s\nwant 0 and the usage", code, stdout.String())
	}
}

// Each row is a command line with one thing wrong, and the message that names it. The files
// the row names exist and are valid, so that a row fails if its one fault stops being refused
// (instead of passing on a missing file further on).
func TestUsageErrorsExitWithStatus2AndNameTheProblem(t *testing.T) {
	_, cert, key := pki(t)
	p8 := filepath.Join(t.TempDir(), "AuthKey.p8")
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p8, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "missing.pem")
	// Each names a local port nobody listens on: a row whose fault is no longer refused must
	// not reach Apple.
	certAuth := []string{"-cert", cert, "-key", key, "-gateway", "127.0.0.1:1"}
	tokenAuth := []string{"-p8", p8, "-key-id", "KEY1234567", "-team-id", "TEAM123456", "-topic", "com.example.app", "-gateway", "https://127.0.0.1:1"}
	cat := func(parts ...[]string) []string { return slices.Concat(parts...) }
	for _, row := range []struct {
		args []string
		want string
	}{
		{[]string{"frobnicate"}, `apns: unknown command "frobnicate"`},
		{[]string{"demo", "-n", "-1"}, "-n is -1; want 0 or more"},
		{[]string{"demo", "-nope"}, "flag provided but not defined: -nope"},
		{[]string{"demo", "stray"}, `unexpected argument "stray"`},
		{[]string{"demo", "-protocol", "smoke"}, "-protocol is \"smoke\"; want binary or http2"},
		{cat([]string{"push"}, certAuth, []string{"-alert", "hi"}), "no device tokens"},
		{[]string{"push", "-cert", cert, "-gateway", "127.0.0.1:1", "-token", tok(1), "-alert", "hi"}, "-cert and -key go together"},
		{cat([]string{"push", "-cert", cert, "-key", key}, tokenAuth, []string{"-token", tok(1), "-alert", "hi"}), "give -cert/-key or -p8, not both"},
		{[]string{"push", "-p8", p8, "-key-id", "K", "-gateway", "https://127.0.0.1:1", "-token", tok(1), "-alert", "hi"}, "-p8 needs -key-id, -team-id and -topic"},
		{cat([]string{"push", "-protocol", "binary"}, tokenAuth, []string{"-token", tok(1), "-alert", "hi"}), "-p8 works only with the HTTP/2 API"},
		{cat([]string{"push"}, certAuth, []string{"-token", tok(1)}), "no payload"},
		{cat([]string{"push"}, certAuth, []string{"-token", tok(1), "-payload", "[1]"}), "-payload is not a JSON object"},
		{cat([]string{"push"}, certAuth, []string{"-token", tok(1), "-alert", "hi", "-push-type", "alert"}), "-push-type and -collapse-id need the HTTP/2 API"},
		{cat([]string{"push"}, certAuth, []string{"-token", tok(1), "-alert", "hi", "-collapse-id", "c"}), "-push-type and -collapse-id need the HTTP/2 API"},
		{cat([]string{"push"}, certAuth, []string{"-token", tok(1), "-alert", "hi", "-priority", "1"}), "-priority is 1; the binary protocol takes 10 or 5"},
		{cat([]string{"push"}, certAuth, []string{"-token", tok(1), "-alert", "hi", "-workers", "0"}), "-workers is 0; want at least 1"},
		{[]string{"push", "-cert", missing, "-key", missing, "-gateway", "127.0.0.1:1", "-token", tok(1), "-alert", "hi"}, "missing.pem: no such file"},
		{[]string{"feedback"}, "give -cert and -key"},
		{cat([]string{"feedback"}, certAuth, []string{"-interval", "0"}), "-interval is 0s; want a positive duration"},
		{[]string{"mock", "-reject", "xyz"}, `token "xyz" is not hexadecimal`},
		{[]string{"mock", "-reject", tok(1) + ":300"}, `status "300" is not a binary status 1-255`},
		{[]string{"bench", "-workers", "1,0"}, `-workers: "0" is not a positive number`},
		{[]string{"bench", "-payload-size", "9000"}, "-payload-size must be 32 to 2048 for binary"},
		{[]string{"bench", "-protocol", "spdy"}, "-protocol must be binary or http2"},
	} {
		code, stdout, stderr := runCmd(t, "", row.args...)
		if code != 2 || !strings.Contains(stderr, row.want) || stdout != "" {
			t.Errorf("run(%q) = %d, stdout %q, stderr:\n%s\nwant 2, nothing on stdout, and %q on stderr", row.args, code, stdout, stderr, row.want)
		}
	}
}

func TestEveryCommandHasHelp(t *testing.T) {
	for _, cmd := range []string{"demo", "push", "feedback", "mock", "bench"} {
		code, _, stderr := runCmd(t, "", cmd, "-h")
		if code != 0 || !strings.Contains(stderr, "usage: apns "+cmd) || !strings.Contains(stderr, "-json") {
			t.Errorf("apns %s -h: exit %d, stderr:\n%s\nwant 0 and a usage with -json", cmd, code, stderr)
		}
	}
}

func TestDemoSendsThroughTheMockAndSummarises(t *testing.T) {
	code, out, stderr := runCmd(t, "", "demo", "-n", "3000", "-reject-every", "500", "-progress", "0", "-assume-sent", "2s")
	if code != 0 {
		t.Fatalf("exit status %d; stderr:\n%s", code, stderr)
	}
	for _, want := range []string{
		"delivered  2994 (the mock gateway counted 2994)",
		"status 8 (invalid token): 6",
		"feedback   3 bad tokens",
		"fe000000…0001 since 2026-11-01T12:00:01Z",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestDemoOverHTTP2ReportsThe410TokensAsFeedbackInJSON(t *testing.T) {
	code, out, stderr := runCmd(t, "", "demo", "-protocol", "http2", "-n", "1000", "-reject-every", "250", "-progress", "0", "-json")
	if code != 0 {
		t.Fatalf("exit status %d; stderr:\n%s", code, stderr)
	}
	var res demoResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, out)
	}
	if res.Delivered != 996 || res.GatewayCount != 996 || res.Rejected != 4 || res.Reasons["410 Unregistered"] != 4 || len(res.Feedback) != 4 {
		t.Fatalf("got %+v; want 996 delivered, 4 rejected as 410 Unregistered, 4 feedback tokens", res)
	}
}

func TestDemoProgressOnANonTerminalIsPlainLines(t *testing.T) {
	// However few ticks fall within the run, stopping the display prints the final state.
	code, _, stderr := runCmd(t, "", "demo", "-n", "500", "-reject-every", "0", "-progress", "1h")
	if code != 0 {
		t.Fatalf("exit status %d; stderr:\n%s", code, stderr)
	}
	if !strings.Contains(stderr, "progress: 500/500 accepted by the gateway (100%)") || strings.Contains(stderr, "\r") {
		t.Fatalf("stderr:\n%q\nwant a plain final progress line and no carriage returns", stderr)
	}
}

func TestProgressDrawsLinesOrABar(t *testing.T) {
	var buf bytes.Buffer
	k := 0
	p := newProgress(&buf, "sent", 200, func() int { return k })
	t0 := p.begin
	k = 50
	p.draw(t0.Add(time.Second))
	k = 150
	p.draw(t0.Add(2 * time.Second))
	want := "progress: 50/200 sent (25%), 50/s, 1s\nprogress: 150/200 sent (75%), 100/s, 2s\n"
	if buf.String() != want {
		t.Fatalf("Got:\n%q\nExpected:\n%q", buf.String(), want)
	}

	buf.Reset()
	p.tty = true
	k = 200
	p.draw(t0.Add(3 * time.Second))
	if got := buf.String(); !strings.HasPrefix(got, "\r["+strings.Repeat("█", 30)+"] 100.0% 200/200 sent") {
		t.Fatalf("terminal output %q; want a full bar redrawn in place", got)
	}
	if isTerminal(&buf) {
		t.Fatal("isTerminal(bytes.Buffer) = true")
	}
}

func TestBuildPayload(t *testing.T) {
	for _, c := range []struct {
		flags payloadFlags
		want  string
	}{
		{payloadFlags{alert: "hi", badge: -1}, `{"aps":{"alert":"hi"}}`},
		{payloadFlags{alert: "b", title: "t", sound: "default", badge: 0}, `{"aps":{"alert":{"body":"b","title":"t"},"badge":0,"sound":"default"}}`},
		{payloadFlags{contentAvailable: true, badge: -1}, `{"aps":{"content-available":1}}`},
		{payloadFlags{json: `{"aps":{"alert":"x"},"k":1}`, badge: 3}, `{"aps":{"alert":"x","badge":3},"k":1}`},
	} {
		p, err := buildPayload(&c.flags)
		if err != nil {
			t.Fatalf("buildPayload(%+v): %v", c.flags, err)
		}
		got, _ := json.Marshal(p)
		if string(got) != c.want {
			t.Errorf("buildPayload(%+v) = %s; want %s", c.flags, got, c.want)
		}
	}
}

func TestPushOverBinaryWithCertificateAndCA(t *testing.T) {
	s := apnstest.NewServer() // requires a client certificate by default
	defer s.Close()
	ca, cert, key := pki(t)
	code, out, stderr := runCmd(t, "", "push", "-gateway", s.Addr, "-ca", ca, "-cert", cert, "-key", key,
		"-token", tok(1), "-alert", "hello", "-badge", "2", "-priority", "5", "-expiry", "1h", "-assume-sent", "100ms")
	if code != 0 {
		t.Fatalf("exit %d; stdout:\n%s\nstderr:\n%s", code, out, stderr)
	}
	if !s.WaitCount(1, guard) {
		t.Fatal("the gateway got nothing")
	}
	notes := s.Notifications()
	if len(notes) != 1 || fmt.Sprintf("%x", notes[0].Token) != tok(1) || string(notes[0].Payload) != `{"aps":{"alert":"hello","badge":2}}` ||
		notes[0].Priority != 5 || notes[0].Expiry == 0 {
		t.Fatalf("gateway got %+v; want one notification to %s with the alert, badge 2, priority 5 and an expiry", notes, tok(1))
	}
	if !strings.Contains(out, "1 delivered, 0 rejected") {
		t.Fatalf("stdout:\n%s\nwant the summary", out)
	}
}

func TestPushRejectionOverBinaryExitsWith1AndPrintsTheReason(t *testing.T) {
	s := apnstest.NewServer()
	defer s.Close()
	s.RejectToken(tok(7), 8)
	ca, cert, key := pki(t)
	code, out, stderr := runCmd(t, "", "push", "-gateway", s.Addr, "-ca", ca, "-cert", cert, "-key", key,
		"-token", tok(7), "-alert", "hello")
	if code != 1 {
		t.Fatalf("exit %d; want 1. stdout:\n%s\nstderr:\n%s", code, out, stderr)
	}
	if !strings.Contains(out, "rejected  07070707…0707  status 8 (invalid token)") {
		t.Fatalf("stdout:\n%s\nwant the rejection with its reason", out)
	}
}

func TestPushOverHTTP2BulkFromFileWithCertificate(t *testing.T) {
	s := apnstest.NewUnstartedHTTP2Server()
	s.RequireClientCert = true
	s.Start()
	defer s.Close()
	gone := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	s.Respond(tok(2), apnstest.Response{Status: 410, Reason: "Unregistered", Timestamp: gone})
	ca, cert, key := pki(t)
	list := filepath.Join(t.TempDir(), "tokens.txt")
	if err := os.WriteFile(list, []byte("# devices\n"+tok(1)+"\n\n"+tok(2)+"\n"+tok(3)+"\nnot-hex\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, stderr := runCmd(t, "", "push", "-gateway", s.URL, "-ca", ca, "-cert", cert, "-key", key,
		"-tokens", list, "-payload", `{"aps":{"alert":"x"}}`, "-progress", "1h", "-json")
	if code != 1 {
		t.Fatalf("exit %d; want 1. stdout:\n%s\nstderr:\n%s", code, out, stderr)
	}
	var res pushResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("stdout is not JSON: %v\n%s", err, out)
	}
	if res.Protocol != "http2" || res.Tokens != 4 || res.Delivered != 2 || res.Rejected != 1 || res.Invalid != 1 || len(res.Rejections) != 1 {
		t.Fatalf("got %+v; want http2, 4 tokens, 2 delivered, 1 rejected, 1 invalid", res)
	}
	r := res.Rejections[0]
	if r.Token != tok(2) || r.StatusCode != 410 || r.Reason != "Unregistered" || r.Timestamp == nil || !r.Timestamp.Equal(gone) {
		t.Fatalf("rejection %+v; want %s 410 Unregistered at %v", r, tok(2), gone)
	}
	if !strings.Contains(stderr, `token "not-hex"`) || !strings.Contains(stderr, "progress: 3/4 answered") {
		t.Fatalf("stderr:\n%s\nwant the invalid token and the final progress line", stderr)
	}
}

func TestPushOverHTTP2WithTokenAuthFromStdin(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	p8 := filepath.Join(t.TempDir(), "AuthKey.p8")
	if err := os.WriteFile(p8, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	s := apnstest.NewUnstartedHTTP2Server()
	s.Keys = map[string]*ecdsa.PublicKey{"KEY1234567": &key.PublicKey}
	s.TeamID = "TEAM123456"
	s.Start()
	defer s.Close()
	ca, _, _ := pki(t)
	code, out, stderr := runCmd(t, tok(1)+"\n"+tok(2)+"\n", "push", "-gateway", s.URL, "-ca", ca,
		"-p8", p8, "-key-id", "KEY1234567", "-team-id", "TEAM123456", "-topic", "com.example.app",
		"-tokens", "-", "-content-available", "-push-type", "background", "-priority", "5",
		"-collapse-id", "c1", "-expiry", "1h", "-workers", "2", "-progress", "0")
	if code != 0 {
		t.Fatalf("exit %d; stdout:\n%s\nstderr:\n%s", code, out, stderr)
	}
	reqs := s.Requests()
	if len(reqs) != 2 {
		t.Fatalf("server got %d requests; want 2", len(reqs))
	}
	for _, r := range reqs {
		if r.KeyID != "KEY1234567" || r.Topic != "com.example.app" || r.PushType != "background" || r.Priority != 5 ||
			r.CollapseID != "c1" || r.Expiration == "" || string(r.Payload) != `{"aps":{"content-available":1}}` {
			t.Errorf("request %+v; want token auth, the topic, background, priority 5, collapse id c1, an expiration", r)
		}
	}
}

func TestFeedbackPrintsTheBadTokens(t *testing.T) {
	f := apnstest.NewFeedbackServer()
	defer f.Close()
	ca, cert, key := pki(t)
	when := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	f.Add(bytes.Repeat([]byte{1}, 32), when)
	f.Add(bytes.Repeat([]byte{2}, 32), when)
	code, out, stderr := runCmd(t, "", "feedback", "-gateway", f.Addr, "-ca", ca, "-cert", cert, "-key", key, "-json")
	if code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", code, stderr)
	}
	var got []badToken
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("stdout is not JSON: %v\n%s", err, out)
	}
	if len(got) != 2 || got[0].Token != tok(1) || got[1].Token != tok(2) || !got[0].Timestamp.Equal(when) {
		t.Fatalf("got %+v; want %s and %s at %v", got, tok(1), tok(2), when)
	}

	f.Add(bytes.Repeat([]byte{3}, 32), when)
	code, out, _ = runCmd(t, "", "feedback", "-gateway", f.Addr, "-ca", ca, "-cert", cert, "-key", key)
	if code != 0 || out != tok(3)+" 2026-03-04T05:06:07Z\n" {
		t.Fatalf("text mode: exit %d, stdout %q; want 0 and one line for %s", code, out, tok(3))
	}

	// The service has nothing left: it closes the connection at once and none is reported.
	code, out, stderr = runCmd(t, "", "feedback", "-gateway", f.Addr, "-ca", ca, "-cert", cert, "-key", key)
	if code != 0 || out != "" || !strings.Contains(stderr, "no bad tokens") {
		t.Fatalf("empty service: exit %d, stdout %q, stderr %q; want 0, nothing, \"no bad tokens\"", code, out, stderr)
	}
}

func TestFeedbackWatchRunsUntilCancelled(t *testing.T) {
	f := apnstest.NewFeedbackServer()
	defer f.Close()
	ca, cert, key := pki(t)
	f.Add(bytes.Repeat([]byte{4}, 32), time.Unix(1700000000, 0))
	c := startCmd("feedback", "-watch", "-interval", "1h", "-gateway", f.Addr, "-ca", ca, "-cert", cert, "-key", key, "-json")
	var got badToken
	if line := c.next(t); json.Unmarshal([]byte(line), &got) != nil || got.Token != tok(4) {
		t.Fatalf("line %q; want a JSON object for %s", line, tok(4))
	}
	if code := c.stop(t); code != 0 {
		t.Fatalf("exit %d after cancel; want 0. stderr:\n%s", code, c.stderr.String())
	}
}

func TestMockServesLogsAndRejectsUntilCancelled(t *testing.T) {
	dir := t.TempDir()
	c := startCmd("mock", "-json", "-dir", dir, "-reject", tok(9)+":8")
	var info mockInfo
	if line := c.next(t); json.Unmarshal([]byte(line), &info) != nil || info.Event != "ready" {
		t.Fatalf("first line %q; want the ready object", line)
	}
	for _, f := range []string{info.CA, info.ClientCert, info.ClientKey, info.TokenKey} {
		if filepath.Dir(f) != dir {
			t.Errorf("file %s is not in -dir %s", f, dir)
		}
	}

	// HTTP/2 with the mock's token key: one accepted, one rejected as the script says.
	code, out, stderr := runCmd(t, "", "push", "-gateway", info.HTTP2, "-ca", info.CA, "-p8", info.TokenKey,
		"-key-id", info.KeyID, "-team-id", info.TeamID, "-topic", "com.example.app",
		"-token", tok(1), "-token", tok(9), "-alert", "hi")
	if code != 1 || !strings.Contains(out, "410 Unregistered") {
		t.Fatalf("HTTP/2 push: exit %d; want 1 and the 410. stdout:\n%s\nstderr:\n%s", code, out, stderr)
	}
	events := map[string]mockEvent{}
	for range 2 {
		var e mockEvent
		if line := c.next(t); json.Unmarshal([]byte(line), &e) != nil {
			t.Fatalf("line %q is not a JSON event", line)
		}
		events[e.Token] = e
	}
	if e := events[tok(1)]; !e.Accepted || e.Gateway != "http2" || e.KeyID != mockKeyID || e.Topic != "com.example.app" || string(e.Payload) != `{"aps":{"alert":"hi"}}` {
		t.Errorf("accepted event %+v", e)
	}
	if e := events[tok(9)]; e.Accepted || e.Status != 410 || e.Reason != "Unregistered" {
		t.Errorf("rejected event %+v; want 410 Unregistered", e)
	}

	// Binary with the mock's client certificate.
	code, out, stderr = runCmd(t, "", "push", "-gateway", info.Gateway, "-ca", info.CA, "-cert", info.ClientCert,
		"-key", info.ClientKey, "-token", tok(1), "-alert", "bin", "-assume-sent", "100ms")
	if code != 0 {
		t.Fatalf("binary push: exit %d. stdout:\n%s\nstderr:\n%s", code, out, stderr)
	}
	var e mockEvent
	if line := c.next(t); json.Unmarshal([]byte(line), &e) != nil || e.Gateway != "binary" || !e.Accepted || e.Token != tok(1) {
		t.Fatalf("line %q; want the accepted binary notification", line)
	}

	// The token rejected with 410 is on the feedback service, as with Apple.
	code, out, _ = runCmd(t, "", "feedback", "-gateway", info.Feedback, "-ca", info.CA, "-cert", info.ClientCert, "-key", info.ClientKey)
	if code != 0 || !strings.HasPrefix(out, tok(9)+" ") {
		t.Fatalf("feedback: exit %d, stdout %q; want %s", code, out, tok(9))
	}

	if code := c.stop(t); code != 0 {
		t.Fatalf("mock exit %d after cancel; want 0", code)
	}
	if !strings.Contains(c.stderr.String(), "stopped after 1 binary and 1 HTTP/2 notifications accepted") {
		t.Fatalf("stderr:\n%s\nwant the closing count", c.stderr.String())
	}
}

func TestMockRejectsAPortInUse(t *testing.T) {
	s := apnstest.NewServer()
	defer s.Close()
	code, _, stderr := runCmd(t, "", "mock", "-gateway-addr", s.Addr)
	if code != 2 || !strings.Contains(stderr, s.Addr) {
		t.Fatalf("exit %d, stderr %q; want 2 and the listen error", code, stderr)
	}
}

func TestBenchReportsJSONAndWritesAnSVG(t *testing.T) {
	for _, protocol := range []string{"binary", "http2"} {
		t.Run(protocol, func(t *testing.T) {
			svg := filepath.Join(t.TempDir(), "bench.svg")
			code, out, stderr := runCmd(t, "", "bench", "-protocol", protocol, "-n", "2000", "-workers", "1,2", "-svg", svg, "-json")
			if code != 0 {
				t.Fatalf("exit %d; stderr:\n%s", code, stderr)
			}
			var res []benchResult
			if err := json.Unmarshal([]byte(out), &res); err != nil {
				t.Fatalf("stdout is not JSON: %v\n%s", err, out)
			}
			if len(res) != 2 || res[0].Workers != 1 || res[1].Workers != 2 {
				t.Fatalf("got %+v; want runs with 1 and 2 workers", res)
			}
			for _, r := range res {
				if r.Protocol != protocol || r.N != 2000 || r.Delivered != 2000 || r.PerSecond <= 0 || r.SendP99Nanos < r.SendP50Nanos || r.AllocsPerMsg <= 0 || r.PeakHeapBytes == 0 {
					t.Errorf("run %+v", r)
				}
			}
			checkSVG(t, svg, 2)
		})
	}
}

func TestBenchTextOutput(t *testing.T) {
	code, out, stderr := runCmd(t, "", "bench", "-n", "500", "-workers", "1", "-payload-size", "100")
	if code != 0 || !strings.Contains(out, "workers") || !strings.Contains(out, "msgs/s") {
		t.Fatalf("exit %d, stdout:\n%s\nstderr:\n%s", code, out, stderr)
	}
}

// checkSVG parses the file as XML and checks that it is an SVG with a bar per run (and one
// background rect).
func checkSVG(t *testing.T, name string, bars int) {
	t.Helper()
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	d := xml.NewDecoder(bytes.NewReader(data))
	rects, root := 0, ""
	for {
		tk, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("SVG is not well-formed XML: %v\n%s", err, data)
		}
		if se, ok := tk.(xml.StartElement); ok {
			if root == "" {
				root = se.Name.Local
			}
			if se.Name.Local == "rect" {
				rects++
			}
		}
	}
	if root != "svg" || rects != bars+1 {
		t.Fatalf("root <%s>, %d rects; want <svg> with %d bars and a background", root, rects, bars)
	}
}

func TestSizedPayloadHasTheRequestedSize(t *testing.T) {
	for _, n := range []int{32, 256, 2048} {
		b, _ := json.Marshal(sizedPayload(n))
		if len(b) != n {
			t.Errorf("sizedPayload(%d) marshals to %d bytes", n, len(b))
		}
	}
}

func TestPushInterruptedBeforeSendingExitsWith1(t *testing.T) {
	s := apnstest.NewHTTP2Server()
	defer s.Close()
	ca, cert, key := pki(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var out, errOut bytes.Buffer
	code := runContext(ctx, []string{"push", "-gateway", s.URL, "-ca", ca, "-cert", cert, "-key", key,
		"-token", tok(1), "-alert", "hi", "-json"}, strings.NewReader(""), &out, &errOut)
	var res pushResult
	if code != 1 || json.Unmarshal(out.Bytes(), &res) != nil || !res.Interrupted || res.Accepted != 0 {
		t.Fatalf("exit %d, stdout:\n%s\nstderr:\n%s\nwant 1 and an interrupted summary with nothing sent", code, out.String(), errOut.String())
	}
	if !strings.Contains(errOut.String(), "interrupted after queueing 0 of 1") {
		t.Fatalf("stderr:\n%s\nwant the interruption", errOut.String())
	}
}

func TestBenchAgainstAGivenGateway(t *testing.T) {
	s := apnstest.NewUnstartedServer()
	s.DiscardNotifications = true
	s.Start()
	defer s.Close()
	ca, cert, key := pki(t)
	code, out, stderr := runCmd(t, "", "bench", "-gateway", s.Addr, "-ca", ca, "-cert", cert, "-key", key,
		"-n", "300", "-workers", "2", "-assume-sent", "100ms", "-json")
	var res []benchResult
	if code != 0 || json.Unmarshal([]byte(out), &res) != nil || len(res) != 1 || res[0].Delivered != 300 || res[0].Protocol != "binary" {
		t.Fatalf("exit %d, stdout:\n%s\nstderr:\n%s\nwant 0 and 300 delivered over binary", code, out, stderr)
	}
	if !s.WaitCount(300, guard) {
		t.Fatalf("gateway counted %d; want 300", s.Count())
	}
}
