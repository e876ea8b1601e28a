package main

// This file owns "apns bench": a load generator that measures the client.

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	apns "github.com/Kwik-messenger/apns-go"
	"github.com/Kwik-messenger/apns-go/apnstest"
)

const benchAbout = `Bench sends -n notifications of about -payload-size bytes through the client, once for each
count in -workers, and reports for each run: throughput (notifications per second from the
first Send until the gateway has them all), the latency of Send (p50, p99), heap allocations
per notification and the peak heap in use. By default it sends to an in-process apnstest
gateway; allocations and heap then include the mock's share. With -gateway it sends to another
gateway, e.g. a running "apns mock" (with the connection flags of push); throughput then runs
until Stop returns (binary: one round trip for the sentinel frame that confirms the last
frames, or the -assume-sent wait when the gateway does not answer it).
-svg FILE draws throughput against workers.
`

// maxLatencySamples bounds the memory of the Send latency samples: beyond it, every k-th Send
// is timed.
const maxLatencySamples = 1 << 20

// benchResult is one run of bench.
type benchResult struct {
	Protocol      string  `json:"protocol"`
	Workers       int     `json:"workers"`
	N             int     `json:"n"`
	PayloadBytes  int     `json:"payload_bytes"`
	Seconds       float64 `json:"seconds"`
	PerSecond     float64 `json:"msgs_per_sec"`
	SendP50Nanos  int64   `json:"send_p50_ns"`
	SendP99Nanos  int64   `json:"send_p99_ns"`
	AllocsPerMsg  float64 `json:"allocs_per_msg"`
	PeakHeapBytes uint64  `json:"peak_heap_inuse_bytes"`
	Delivered     uint64  `json:"delivered"`
	Rejected      uint64  `json:"rejected"`
	// Reasons counts the rejections by reason, as demo does.
	Reasons map[string]int `json:"rejected_by_reason,omitempty"`
}

func bench(env *cmdEnv, args []string) int {
	fs := newFlagSet(env, "bench", "[flags]", benchAbout)
	n := fs.Int("n", 100000, "notifications per run")
	workersList := fs.String("workers", "1,2,4", "comma-separated worker `counts`; one run each")
	payloadSize := fs.Int("payload-size", 256, "payload size in `bytes` (binary at most 2048, HTTP/2 4096)")
	protocol := fs.String("protocol", "binary", "`protocol` of the in-process gateway: binary or http2")
	assumeSent := fs.Duration("assume-sent", 250*time.Millisecond, "assume-sent timeout of the client (binary)")
	inflightMiB := fs.Int("inflight-mib", 64, "in-flight ring per connection in `MiB` (binary); throughput per connection is at most ring ÷ frame size ÷ assume-sent")
	svgFile := fs.String("svg", "", "write a chart of throughput against workers to `FILE` (SVG)")
	jsonOut := fs.Bool("json", false, "print the results as JSON")
	var conn connFlags
	conn.register(fs, withToken)
	fs.Lookup("gateway").Usage = "send to the gateway at `ADDR` (host:port binary, https://host:port HTTP/2) instead of an in-process mock"
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	workers, err := parseCounts(*workersList)
	if err != nil {
		return usageError(env, "bench", "-workers: %v", err)
	}
	maxSize := apns.MaxPayloadSize
	if *protocol == "http2" {
		maxSize = apns.MaxHTTP2PayloadSize
	}
	switch {
	case *n < 1:
		return usageError(env, "bench", "-n is %d; want at least 1", *n)
	case *assumeSent <= 0:
		return usageError(env, "bench", "-assume-sent is %v; want a positive duration", *assumeSent)
	case *inflightMiB < 1 || *inflightMiB > 1024:
		return usageError(env, "bench", "-inflight-mib must be 1 to 1024")
	case *protocol != "binary" && *protocol != "http2":
		return usageError(env, "bench", "-protocol must be binary or http2")
	case *payloadSize < 32 || *payloadSize > maxSize:
		return usageError(env, "bench", "-payload-size must be 32 to %d for %s", maxSize, *protocol)
	}
	if conn.gateway != "" {
		if err := conn.check(); err != nil {
			return usageError(env, "bench", "%v", err)
		}
	}
	if *svgFile != "" { // before the runs, which may take minutes
		if err := checkWritable(*svgFile); err != nil {
			return usageError(env, "bench", "-svg: %v", err)
		}
	}

	payload := sizedPayload(*payloadSize)
	var results []benchResult
	for _, w := range workers {
		opts := []apns.Option{apns.WithAssumeSentTimeout(*assumeSent), apns.WithInflightBytes(*inflightMiB << 20)}
		r, err := benchRun(env, &conn, *protocol, w, *n, payload, opts)
		if err != nil {
			return fail(env, "bench", exitUsage, err)
		}
		r.PayloadBytes = *payloadSize
		results = append(results, r)
		if !*jsonOut {
			fmt.Fprintf(env.stderr, "apns bench: %s: %.0f/s\n", count(w, "worker"), r.PerSecond)
		}
	}
	if *svgFile != "" {
		if err := os.WriteFile(*svgFile, throughputSVG(results), 0o644); err != nil {
			return fail(env, "bench", exitUsage, err)
		}
	}
	if *jsonOut {
		if err := writeJSON(env.stdout, results); err != nil {
			return fail(env, "bench", exitUsage, err)
		}
	} else {
		printBench(env, results, conn.gateway)
	}
	code := exitOK
	for _, r := range results {
		if r.Rejected > 0 || r.Delivered < uint64(r.N) {
			fmt.Fprintf(env.stderr, "apns bench: the run with %s delivered %d of %d: %d rejected or not sent%s\n",
				count(r.Workers, "worker"), r.Delivered, r.N, r.Rejected, describeReasons(r.Reasons))
			code = exitRejected
		}
	}
	return code
}

// describeReasons lists rejection counts by reason, most frequent first: " (status 8
// (invalid token): 3)".
func describeReasons(reasons map[string]int) string {
	if len(reasons) == 0 {
		return ""
	}
	keys := make([]string, 0, len(reasons))
	for k := range reasons {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int {
		if reasons[a] != reasons[b] {
			return reasons[b] - reasons[a]
		}
		return strings.Compare(a, b)
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s: %d", k, reasons[k])
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

// checkWritable reports why name cannot be written, without changing it: a file that did not
// exist is removed again.
func checkWritable(name string) error {
	_, statErr := os.Stat(name)
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	f.Close()
	if errors.Is(statErr, os.ErrNotExist) {
		return os.Remove(name)
	}
	return nil
}

// parseCounts parses a comma-separated list of positive numbers.
func parseCounts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		k, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || k < 1 {
			return nil, fmt.Errorf("%q is not a positive number", f)
		}
		out = append(out, k)
	}
	return out, nil
}

// sizedPayload returns a payload whose JSON encoding is size bytes long (size >= 32).
func sizedPayload(size int) map[string]any {
	const frame = `{"aps":{"alert":""}}` // the JSON around the alert text
	return map[string]any{"aps": map[string]any{"alert": strings.Repeat("x", size-len(frame))}}
}

// benchRun makes one client with workers connections, sends n notifications and measures.
func benchRun(env *cmdEnv, conn *connFlags, protocol string, workers, n int, payload map[string]any, opts []apns.Option) (benchResult, error) {
	res := benchResult{Protocol: protocol, Workers: workers, N: n}
	var client *apns.Client
	var err error
	var gw *mockGateway
	if conn.gateway != "" {
		client, err = conn.client(conn.gateway, opts...)
		res.Protocol = "binary"
		if conn.isHTTP2() {
			res.Protocol = "http2"
		}
	} else {
		gw = newMockGateway(protocol)
		defer gw.close()
		cert, key := apnstest.ClientCertPEM()
		client, err = apns.CreateClient(gw.addr, cert, key, false,
			append([]apns.Option{apns.WithTLSConfig(gw.tlsConfig)}, opts...)...)
	}
	if err != nil {
		return res, err
	}
	var mu sync.Mutex
	client.SetRejectionCallback(func(r *apns.Rejection) {
		mu.Lock()
		defer mu.Unlock()
		if res.Reasons == nil {
			res.Reasons = map[string]int{}
		}
		res.Reasons[rejectionReason(r)]++
	})
	if err := client.Start(workers); err != nil {
		_ = client.Stop() // a failed Start keeps the callback goroutine until Stop
		return res, err
	}

	// Everything the measurement needs is made before it starts, so that it does not count.
	tokens := make([]string, min(n, 10000))
	for i := range tokens {
		tokens[i] = demoToken(i)
	}
	stride := max(1, n/maxLatencySamples)
	lat := make([]time.Duration, 0, n/stride+1)
	expiry := time.Now().Add(time.Hour)
	var before, after runtime.MemStats
	runtime.GC()
	peak := startHeapSampler()
	runtime.ReadMemStats(&before)

	begin := time.Now()
	for i := range n {
		tok := tokens[i%len(tokens)]
		if i%stride != 0 {
			err = client.SendContext(env.ctx, tok, expiry, apns.PRIORITY_IMMEDIATE, payload)
		} else {
			t0 := time.Now()
			err = client.SendContext(env.ctx, tok, expiry, apns.PRIORITY_IMMEDIATE, payload)
			lat = append(lat, time.Since(t0))
		}
		if err != nil {
			peak()
			_ = client.Stop()
			return res, fmt.Errorf("send: %w", err)
		}
	}
	if gw != nil {
		for !gw.waitCount(n, time.Second) {
			if env.ctx.Err() != nil {
				peak()
				_ = client.Stop()
				return res, errors.New("interrupted")
			}
		}
	} else {
		_ = client.Stop()
	}
	elapsed := time.Since(begin)
	runtime.ReadMemStats(&after)
	res.PeakHeapBytes = peak()
	_ = client.Stop()

	st := client.Stats()
	res.Delivered, res.Rejected = st.Delivered, st.Rejected+st.Unsent+st.Unconfirmed
	res.Seconds = elapsed.Seconds()
	res.PerSecond = float64(n) / elapsed.Seconds()
	res.AllocsPerMsg = float64(after.Mallocs-before.Mallocs) / float64(n)
	slices.Sort(lat)
	res.SendP50Nanos = int64(percentile(lat, 0.50))
	res.SendP99Nanos = int64(percentile(lat, 0.99))
	return res, nil
}

// percentile returns the q-quantile of sorted durations (nearest rank).
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted)) + 0.5)
	return sorted[min(max(i-1, 0), len(sorted)-1)]
}

// startHeapSampler samples HeapInuse every 10ms until the returned function is called, which
// returns the largest value seen (sampled once more at the end).
func startHeapSampler() (stop func() uint64) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	var peak uint64
	sample := func() {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		peak = max(peak, ms.HeapInuse)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				sample()
			}
		}
	}()
	var once sync.Once
	return func() uint64 {
		once.Do(func() {
			close(done)
			wg.Wait()
			sample()
		})
		return peak
	}
}

// roundDuration keeps the three or four leading digits of d: 2.379090ms -> 2.379ms.
func roundDuration(d time.Duration) time.Duration {
	step := time.Duration(1)
	for d/step >= 10000 {
		step *= 10
	}
	return d.Round(step)
}

func printBench(env *cmdEnv, results []benchResult, gateway string) {
	where := "the in-process apnstest gateway (allocations and heap include the mock's)"
	if gateway != "" {
		where = "the gateway at " + gateway
	}
	r0 := results[0]
	fmt.Fprintf(env.stdout, "%s: %s of %s per run, to %s\n", r0.Protocol, count(r0.N, "notification"), count(r0.PayloadBytes, "byte"), where)
	tw := tabwriter.NewWriter(env.stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "workers\tmsgs/s\tSend p50\tSend p99\tallocs/msg\tpeak heap\t")
	for _, r := range results {
		fmt.Fprintf(tw, "%d\t%.0f\t%v\t%v\t%.1f\t%.1f MiB\t\n", r.Workers, r.PerSecond,
			roundDuration(time.Duration(r.SendP50Nanos)), roundDuration(time.Duration(r.SendP99Nanos)), r.AllocsPerMsg, float64(r.PeakHeapBytes)/(1<<20))
	}
	tw.Flush()
}
