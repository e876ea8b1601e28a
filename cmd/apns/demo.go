package main

// This file owns "apns demo": the client against the apnstest gateways, in process.

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	apns "github.com/Kwik-messenger/apns-go"
	"github.com/Kwik-messenger/apns-go/apnstest"
)

const demoAbout = `Demo starts the apnstest mock gateway and feedback service in this process, sends a batch
of notifications to it through the client (every -reject-every'th token is one the gateway
rejects), and prints a summary: delivered, rejected by reason, replayed, reconnects,
throughput, how long Stop took, and the bad tokens from the feedback service. Progress goes to
stderr: a bar on a terminal, a line every -progress otherwise. Rejections are part of the
show, so they do not make the exit status 1.
`

// demoResult is demo's summary, printed as text or, with -json, as this object.
type demoResult struct {
	Protocol     string         `json:"protocol"`
	Workers      int            `json:"workers"`
	Sent         int            `json:"sent"`
	Delivered    uint64         `json:"delivered"`
	GatewayCount int            `json:"gateway_count"`
	Rejected     uint64         `json:"rejected"`
	Reasons      map[string]int `json:"rejected_by_reason"`
	Replayed     uint64         `json:"replayed"`
	Reconnects   uint64         `json:"reconnects"`
	SendMillis   int64          `json:"send_ms"`  // Start until the last Send returned
	TotalMillis  int64          `json:"total_ms"` // Start until Stop returned
	StopMillis   int64          `json:"stop_ms"`
	PerSecond    float64        `json:"per_second"` // sent / total
	AssumeSent   string         `json:"assume_sent,omitempty"`
	Feedback     []badToken     `json:"feedback"`
	FeedbackErr  string         `json:"feedback_error,omitempty"`
}

// badToken is a feedback token in JSON output.
type badToken struct {
	Token     string    `json:"token"`
	Timestamp time.Time `json:"timestamp"`
}

func demo(env *cmdEnv, args []string) int {
	fs := newFlagSet(env, "demo", "[flags]", demoAbout)
	n := fs.Int("n", 100000, "notifications to send")
	workers := fs.Int("workers", 2, "connections to the gateway")
	rejectEvery := fs.Int("reject-every", 1000, "the mock rejects every k-th token as invalid (0: none)")
	assumeSent := fs.Duration("assume-sent", 250*time.Millisecond, "assume-sent timeout of the client (binary)")
	interval := fs.Duration("progress", time.Second, "interval of progress lines when stderr is not a terminal (0: no progress)")
	protocol := fs.String("protocol", "binary", "`protocol` of the mock gateway: binary or http2")
	jsonOut := fs.Bool("json", false, "print the summary as JSON")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	switch {
	case *n < 0:
		return usageError(env, "demo", "-n is %d; want 0 or more", *n)
	case *workers < 1:
		return usageError(env, "demo", "-workers is %d; want at least 1", *workers)
	case *rejectEvery < 0:
		return usageError(env, "demo", "-reject-every is %d; want 0 (none) or more", *rejectEvery)
	case *assumeSent <= 0:
		return usageError(env, "demo", "-assume-sent is %v; want a positive duration", *assumeSent)
	case *interval < 0:
		return usageError(env, "demo", "-progress is %v; want 0 (none) or a positive duration", *interval)
	case *protocol != "binary" && *protocol != "http2":
		return usageError(env, "demo", "-protocol is %q; want binary or http2", *protocol)
	}

	gw := newMockGateway(*protocol)
	defer gw.close()
	feedbackSrv := apnstest.NewFeedbackServer()
	defer feedbackSrv.Close()

	var mu sync.Mutex
	reasons := map[string]int{}
	cert, key := apnstest.ClientCertPEM()
	client, err := apns.CreateClient(gw.addr, cert, key, false,
		apns.WithTLSConfig(gw.tlsConfig), apns.WithAssumeSentTimeout(*assumeSent))
	if err != nil {
		return fail(env, "demo", exitUsage, err)
	}
	client.SetRejectionCallback(func(r *apns.Rejection) {
		mu.Lock()
		reasons[rejectionReason(r)]++
		mu.Unlock()
	})
	tokens := make([]string, *n)
	scripted := 0 // tokens the gateway rejects
	for i := range tokens {
		tokens[i] = demoToken(i)
		if *rejectEvery > 0 && i%*rejectEvery == *rejectEvery-1 {
			gw.reject(tokens[i])
			scripted++
		}
	}

	// The feedback service knows three devices that uninstalled the app.
	for i := byte(1); i <= 3; i++ {
		var b [32]byte
		b[0], b[31] = 0xfe, i
		feedbackSrv.Add(b[:], time.Date(2026, 11, 1, 12, 0, int(i), 0, time.UTC))
	}
	fc, err := client.SetupFeedbackClient(feedbackSrv.Addr, time.Hour)
	if err != nil {
		return fail(env, "demo", exitUsage, err)
	}
	var bad []apns.BadToken
	var feedbackErr error
	if *protocol == "binary" { // the feedback service; HTTP/2 has none, see below
		ctx, cancel := context.WithTimeout(env.ctx, 10*time.Second)
		bad, feedbackErr = fc.BadTokens(ctx)
		cancel()
	}

	begin := time.Now()
	if err := client.Start(*workers); err != nil {
		_ = client.Stop() // a failed Start keeps the callback goroutine until Stop
		return fail(env, "demo", exitUsage, err)
	}
	prog := startProgress(env.stderr, *interval, "accepted by the gateway", *n-scripted, gw.count)
	for i, tok := range tokens {
		if err := client.SendContext(env.ctx, tok, time.Now().Add(time.Hour), apns.PRIORITY_IMMEDIATE, demoPayload(i)); err != nil {
			prog.stop()
			_ = client.Stop()
			return fail(env, "demo", exitUsage, fmt.Errorf("send: %w", err))
		}
	}
	sent := time.Since(begin)
	stopBegin := time.Now()
	_ = client.Stop()
	stopTime := time.Since(stopBegin)
	total := time.Since(begin)

	st := client.Stats()
	// What the client counts as delivered has been written, but on a busy machine the gateway
	// may still be reading it.
	gw.waitCount(int(st.Delivered), 10*time.Second)
	prog.stop()
	if *protocol == "http2" { // on HTTP/2 the feedback client reports the tokens answered with 410
		bad, feedbackErr = fc.GetBadTokens()
	}
	res := demoResult{
		Protocol: *protocol, Workers: *workers, Sent: *n,
		Delivered: st.Delivered, GatewayCount: gw.count(), Rejected: st.Rejected, Reasons: reasons,
		Replayed: st.Replayed, Reconnects: st.Reconnects,
		SendMillis: sent.Milliseconds(), TotalMillis: total.Milliseconds(), StopMillis: stopTime.Milliseconds(),
		PerSecond: float64(*n) / total.Seconds(),
		Feedback:  []badToken{},
	}
	if *protocol == "binary" {
		res.AssumeSent = assumeSent.String()
	}
	for _, t := range bad {
		res.Feedback = append(res.Feedback, badToken{t.Token, t.Timestamp})
	}
	if feedbackErr != nil && !errors.Is(feedbackErr, apns.ErrFeedbackStopped) { // stopped: none left
		res.FeedbackErr = feedbackErr.Error()
	}
	if *jsonOut {
		if err := writeJSON(env.stdout, res); err != nil {
			return fail(env, "demo", exitUsage, err)
		}
		return exitOK
	}
	printDemo(env, &res, sent, total, stopTime)
	return exitOK
}

func printDemo(env *cmdEnv, res *demoResult, sent, total, stopTime time.Duration) {
	w := env.stdout
	fmt.Fprintf(w, "sent       %s over %s with %s: Send took %v, Start to Stop %v (%.0f/s end to end)\n",
		count(res.Sent, "notification"), res.Protocol, count(res.Workers, "worker"), sent.Round(time.Millisecond), total.Round(time.Millisecond), res.PerSecond)
	fmt.Fprintf(w, "delivered  %d (the mock gateway counted %d)\n", res.Delivered, res.GatewayCount)
	fmt.Fprintf(w, "rejected   %d\n", res.Rejected)
	reasons := make([]string, 0, len(res.Reasons))
	for r := range res.Reasons {
		reasons = append(reasons, r)
	}
	sort.Strings(reasons)
	for _, r := range reasons {
		fmt.Fprintf(w, "  %s: %d\n", r, res.Reasons[r])
	}
	fmt.Fprintf(w, "replayed   %d (frames written again after rejections; HTTP/2: retries), %s\n", res.Replayed, count(res.Reconnects, "reconnect"))
	if res.AssumeSent != "" {
		fmt.Fprintf(w, "stop       %v (a sentinel frame confirmed each connection's last frames; unanswered, Stop waits out the assume-sent timeout, %s)\n", roundDuration(stopTime), res.AssumeSent)
	} else {
		fmt.Fprintf(w, "stop       %v (waits for the last answers)\n", roundDuration(stopTime))
	}
	if res.FeedbackErr != "" {
		fmt.Fprintln(w, "feedback   error:", res.FeedbackErr)
		return
	}
	source := "from the feedback service"
	if res.Protocol == "http2" {
		source = "answered 410 (HTTP/2 has no feedback service)"
	}
	fmt.Fprintf(w, "feedback   %s %s:\n", count(len(res.Feedback), "bad token"), source)
	for _, t := range res.Feedback[:min(len(res.Feedback), 3)] {
		fmt.Fprintf(w, "  %s since %s\n", shortToken(t.Token), t.Timestamp.Format(time.RFC3339))
	}
	if len(res.Feedback) > 3 {
		fmt.Fprintf(w, "  and %d more\n", len(res.Feedback)-3)
	}
}

// rejectionReason names a rejection for the summary: the binary status, or the HTTP status and
// APNs' reason.
func rejectionReason(r *apns.Rejection) string {
	if r.StatusCode != 0 {
		return fmt.Sprintf("%d %s", r.StatusCode, r.Reason)
	}
	return fmt.Sprintf("status %d (%s)", r.Code, apns.Status(r.Code))
}

// demoToken returns the i-th token of the demo's batch: distinct, and spread like real ones.
func demoToken(i int) string {
	var b [32]byte
	binary.BigEndian.PutUint64(b[:], uint64(i)*0x9e3779b97f4a7c15)
	binary.BigEndian.PutUint64(b[24:], uint64(i))
	return hex.EncodeToString(b[:])
}

// demoPayload is the i-th notification of the batch: an alert with a title, a badge, a sound
// and a custom key, like a chat message.
func demoPayload(i int) map[string]any {
	return map[string]any{
		"aps": map[string]any{
			"alert": map[string]any{"title": "Kwik", "body": fmt.Sprintf("New message #%d", i)},
			"badge": i%9 + 1,
			"sound": "default",
		},
		"msg": i,
	}
}

// mockGateway is the in-process gateway demo and bench send to.
type mockGateway struct {
	addr      string
	tlsConfig *tls.Config // trusts the gateway
	count     func() int
	waitCount func(n int, timeout time.Duration) bool
	reject    func(token string)
	close     func()
}

func newMockGateway(protocol string) *mockGateway {
	if protocol == "http2" {
		s := apnstest.NewUnstartedHTTP2Server()
		s.DiscardNotifications = true
		s.Start()
		return &mockGateway{addr: s.URL, tlsConfig: s.ClientTLSConfig(), count: s.Count, waitCount: s.WaitCount, close: s.Close, reject: func(tok string) {
			s.Respond(tok, apnstest.Response{Status: 410, Reason: "Unregistered",
				Timestamp: time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)})
		}}
	}
	s := apnstest.NewUnstartedServer()
	s.DiscardNotifications = true
	s.Start()
	return &mockGateway{addr: s.Addr, tlsConfig: s.ClientTLSConfig(), count: s.Count, waitCount: s.WaitCount, close: s.Close, reject: func(tok string) {
		s.RejectToken(tok, 8)
	}}
}
