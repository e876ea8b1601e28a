// Command apns drives the apns client. "apns demo" sends a batch of notifications through the
// client to the apnstest mock gateway, in process, and prints what happened.
//
// Usage:
//
//	apns demo [-n count] [-workers n] [-reject-every k] [-assume-sent d]
package main

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"sync"
	"time"

	apns "github.com/Kwik-messenger/apns-go"
	"github.com/Kwik-messenger/apns-go/apnstest"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `usage: apns <command> [flags]

commands:
  demo    send a batch of notifications to an in-process mock gateway and report

Run "apns demo -h" for the flags of a command.
`

// run is the whole command, testable in process. It returns the exit status: 0 ok, 2 usage or
// setup error.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "demo":
		return demo(args[1:], stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "apns: unknown command %q\n%s", args[0], usage)
		return 2
	}
}

func demo(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("apns demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	n := fs.Int("n", 100000, "notifications to send")
	workers := fs.Int("workers", 2, "connections to the gateway")
	rejectEvery := fs.Int("reject-every", 1000, "the mock rejects every k-th token as invalid (0: none)")
	assumeSent := fs.Duration("assume-sent", 250*time.Millisecond, "assume-sent timeout of the client")
	progress := fs.Duration("progress", time.Second, "interval of progress lines on stderr (0: none)")
	protocol := fs.String("protocol", "binary", "protocol of the mock gateway: binary or http2")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *n < 0 || *workers < 1 || *rejectEvery < 0 || *protocol != "binary" && *protocol != "http2" {
		fmt.Fprintln(stderr, "apns demo: -n and -reject-every must not be negative, -workers at least 1, -protocol binary or http2")
		return 2
	}

	gw := newMockGateway(*protocol)
	defer gw.close()
	feedback := apnstest.NewFeedbackServer()
	defer feedback.Close()

	rejected := map[uint8]int{}
	var mu sync.Mutex
	cert, key := apnstest.ClientCertPEM()
	client, err := apns.CreateClient(gw.addr, cert, key, false,
		apns.WithTLSConfig(feedback.ClientTLSConfig()), apns.WithAssumeSentTimeout(*assumeSent))
	if err != nil {
		fmt.Fprintln(stderr, "apns demo:", err)
		return 2
	}
	client.SetCallback(func(m *apns.Message, code uint8) {
		mu.Lock()
		rejected[code]++
		mu.Unlock()
	})
	tokens := make([]string, *n)
	for i := range tokens {
		var b [32]byte
		binary.BigEndian.PutUint64(b[:], uint64(i)*0x9e3779b97f4a7c15)
		binary.BigEndian.PutUint64(b[24:], uint64(i))
		tokens[i] = hex.EncodeToString(b[:])
		if *rejectEvery > 0 && i%*rejectEvery == *rejectEvery-1 {
			gw.reject(b[:])
		}
	}

	// The feedback service knows three devices that uninstalled the app.
	for i := byte(1); i <= 3; i++ {
		var b [32]byte
		b[0], b[31] = 0xfe, i
		feedback.Add(b[:], time.Date(2026, 11, 1, 12, 0, int(i), 0, time.UTC))
	}
	fc, err := client.SetupFeedbackClient(feedback.Addr, time.Hour)
	if err != nil {
		fmt.Fprintln(stderr, "apns demo:", err)
		return 2
	}
	var bad []apns.BadToken
	var feedbackErr error
	if *protocol == "binary" { // the feedback service; HTTP/2 has none, see below
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		bad, feedbackErr = fc.BadTokens(ctx)
		cancel()
	}

	begin := time.Now()
	if err := client.Start(*workers); err != nil {
		fmt.Fprintln(stderr, "apns demo:", err)
		return 2
	}
	stopProgress := startProgress(stderr, *progress, *n, gw.count)
	payload := map[string]interface{}{"aps": map[string]interface{}{"alert": "Hello from apns-go"}}
	for i, tok := range tokens {
		payload["n"] = i
		if err := client.Send(tok, time.Now().Add(time.Hour), apns.PRIORITY_IMMEDIATE, payload); err != nil {
			fmt.Fprintln(stderr, "apns demo: send:", err)
			return 2
		}
	}
	sent := time.Since(begin)
	stopBegin := time.Now()
	client.Stop()
	stopTime := time.Since(stopBegin)
	stopProgress()

	st := client.Stats()
	total := time.Since(begin)
	fmt.Fprintf(stdout, "sent       %d notifications with %d workers: Send took %v, Start to Stop %v (%.0f/s end to end)\n",
		*n, *workers, sent.Round(time.Millisecond), total.Round(time.Millisecond), float64(*n)/total.Seconds())
	fmt.Fprintf(stdout, "delivered  %d (the mock gateway counted %d)\n", st.Delivered, gw.count())
	codes := make([]int, 0, len(rejected))
	for code := range rejected {
		codes = append(codes, int(code))
	}
	sort.Ints(codes)
	fmt.Fprintf(stdout, "rejected   %d\n", st.Rejected)
	for _, code := range codes {
		fmt.Fprintf(stdout, "  status %d (%s): %d\n", code, apns.Status(code), rejected[uint8(code)])
	}
	fmt.Fprintf(stdout, "replayed   %d frames after rejections, %d reconnects\n", st.Replayed, st.Reconnects)
	if *protocol == "binary" {
		fmt.Fprintf(stdout, "stop       %v (waits out the assume-sent timeout, %v)\n", stopTime.Round(time.Millisecond), *assumeSent)
	} else {
		fmt.Fprintf(stdout, "stop       %v (waits for the last answers)\n", stopTime.Round(time.Millisecond))
		// On HTTP/2 the feedback client reports the tokens answered with 410.
		bad, feedbackErr = fc.GetBadTokens()
	}
	if feedbackErr != nil {
		fmt.Fprintln(stdout, "feedback   error:", feedbackErr)
	} else {
		fmt.Fprintf(stdout, "feedback   %d bad tokens:\n", len(bad))
		for _, t := range bad[:min(len(bad), 3)] {
			fmt.Fprintf(stdout, "  %s… since %s\n", t.Token[:16], t.Timestamp.Format(time.RFC3339))
		}
	}
	return 0
}

// mockGateway is the in-process gateway the demo sends to.
type mockGateway struct {
	addr   string
	count  func() int
	reject func(token []byte)
	close  func()
}

func newMockGateway(protocol string) *mockGateway {
	if protocol == "http2" {
		s := apnstest.NewUnstartedHTTP2Server()
		s.DiscardNotifications = true
		s.Start()
		return &mockGateway{addr: s.URL, count: s.Count, close: s.Close, reject: func(tok []byte) {
			s.Respond(hex.EncodeToString(tok), apnstest.Response{Status: 410, Reason: "Unregistered",
				Timestamp: time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)})
		}}
	}
	s := apnstest.NewUnstartedServer()
	s.DiscardNotifications = true
	s.Start()
	return &mockGateway{addr: s.Addr, count: s.Count, close: s.Close,
		reject: func(tok []byte) { s.RejectToken(tok, 8) }}
}

// startProgress prints a line every interval until the returned function is called.
func startProgress(w io.Writer, interval time.Duration, total int, count func() int) (stop func()) {
	if interval <= 0 {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(interval)
		defer t.Stop()
		last, lastAt := 0, time.Now()
		for {
			select {
			case <-done:
				return
			case now := <-t.C:
				k := count()
				fmt.Fprintf(w, "progress: %d/%d at the gateway, %.0f/s\n", k, total, float64(k-last)/now.Sub(lastAt).Seconds())
				last, lastAt = k, now
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}
