// Command bench compares the HTTP/2 client of apns-go with sideshow/apns2 against the same
// mock server (apnstest.HTTP2Server) in the same run.
//
// The mock runs in a child process (this program re-executed with -serve), so the CPU time
// that getrusage reports for this process is the clients' alone. For each repetition, each
// concurrency and each client, a fresh client opens one connection, sends a warm-up batch,
// and then sends -n notifications from that many goroutines. Results are printed as Go
// benchmark lines, which benchstat reads, followed by a table of medians and ratios.
//
//	cd bench && go run . -n 20000 -count 5 | tee out.txt
//	go run golang.org/x/perf/cmd/benchstat@latest out.txt
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	apns "github.com/Kwik-messenger/apns-go"
	"github.com/Kwik-messenger/apns-go/apnstest"
	"github.com/sideshow/apns2"
	"golang.org/x/net/http2"
)

var (
	payload = []byte(`{"aps":{"alert":"hello world!"},"data":42}`)
	// deviceToken is 32 bytes of hex, like a real device token.
	deviceToken = strings.Repeat("0123456789abcdef", 4)
)

func main() {
	serve := flag.Bool("serve", false, "internal: run the mock server (the child process)")
	n := flag.Int("n", 20000, "notifications per measurement")
	count := flag.Int("count", 5, "repetitions of every measurement")
	concFlag := flag.String("conc", "1,64,256", "comma-separated numbers of concurrent sends; 0: as many as the connections' streams (conns x streams; apns2: streams)")
	clientsFlag := flag.String("clients", "apns-go,apns-go-send,apns2,nethttp", "comma-separated clients: apns-go (Push), apns-go-send (SendNotification through the queue, WithStreams(conc)), apns-go-seed (the seed API: Send through the queue from 8 goroutines, streams as the server allows), apns2, nethttp (a plain net/http client: the floor)")
	latencyFlag := flag.String("latency", "0", "comma-separated answer latencies of the mock (e.g. 0,20ms,100ms,250ms)")
	jitter := flag.Duration("jitter", 0, "spread of the mock's answer latency: each answer waits latency - jitter/2 plus a uniform random part of [0, jitter), so the mean stays latency (at most 2 x the smallest latency but 0)")
	connsFlag := flag.String("conns", "1", "comma-separated connection counts of apns-go (Start(n)); apns2 and nethttp run once")
	streams := flag.Int("streams", 1000, "SETTINGS_MAX_CONCURRENT_STREAMS the mock announces")
	growth := flag.Bool("growth", false, "run the growth scenario instead: Start(1), WithMaxConnections(8), -streams 100 and 200ms latency by default")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of this (client) process to `file`")
	mutexprofile := flag.String("mutexprofile", "", "write a mutex contention profile of this (client) process to `file`")
	blockprofile := flag.String("blockprofile", "", "write a blocking profile of this (client) process to `file` (sampling every 100 µs blocked)")
	svgFile := flag.String("svg", "", "write a chart of throughput against latency (medians; one line per client and connection count, and the bounds) to `file`")
	serverCPUs := flag.String("servercpus", "", "run the mock server under taskset -c `list` (e.g. 1; then run this under taskset -c 0)")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("bench: ")

	if *serve {
		lat, err := time.ParseDuration(*latencyFlag)
		if err != nil {
			log.Fatal(err)
		}
		runServer(lat, *jitter, *streams)
		return
	}
	concs, err := parseInts(*concFlag, 0)
	if err != nil {
		log.Fatal(err)
	}
	connsList, err := parseInts(*connsFlag, 1)
	if err != nil {
		log.Fatal(err)
	}
	var latencies []time.Duration
	for _, f := range strings.Split(*latencyFlag, ",") {
		d, err := time.ParseDuration(strings.TrimSpace(f))
		if err != nil || d < 0 {
			log.Fatalf("bad latency %q", f)
		}
		latencies = append(latencies, d)
	}
	if *growth {
		lat := 200 * time.Millisecond
		if *latencyFlag != "0" {
			lat = latencies[0]
		}
		st := 100
		if isFlagSet("streams") {
			st = *streams
		}
		if err := runGrowth(*serverCPUs, lat, st); err != nil {
			log.Fatal(err)
		}
		return
	}
	clients := strings.Split(*clientsFlag, ",")
	for _, name := range clients {
		if runners[name] == nil {
			log.Fatalf("unknown client %q", name)
		}
	}

	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			log.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			log.Fatal(err)
		}
		defer pprof.StopCPUProfile()
	}

	if *mutexprofile != "" {
		runtime.SetMutexProfileFraction(10)
		defer writeProfile("mutex", *mutexprofile)
	}
	if *blockprofile != "" {
		runtime.SetBlockProfileRate(int(100 * time.Microsecond))
		defer writeProfile("block", *blockprofile)
	}

	fmt.Printf("goos: %s\ngoarch: %s\npkg: github.com/Kwik-messenger/apns-go/bench\n", runtime.GOOS, runtime.GOARCH)
	fmt.Printf("# %d CPUs, GOMAXPROCS %d, %s; mock server in a child process announcing %d streams, latency jitter %v\n", runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version(), *streams, *jitter)
	results := map[key][]result{}
	var keys []key
	for _, lat := range latencies {
		if *jitter < 0 || lat > 0 && *jitter > 2*lat {
			log.Fatalf("-jitter %v: want at most twice the latency %v", *jitter, lat)
		}
		srv, err := startServer(*serverCPUs, lat, *jitter, *streams)
		if err != nil {
			log.Fatal(err)
		}
		for range *count {
			for _, conc := range concs {
				for _, name := range clients {
					for i, conns := range connsList {
						if !strings.HasPrefix(name, "apns-go") {
							if i > 0 {
								continue
							}
							conns = 0 // not ours: as many as it opens
						}
						k := key{name, conc, lat, conns}
						c := conc
						if c == 0 { // fill every stream
							c = max(conns, 1) * *streams
							if name == "apns-go-seed" || name == "apns-go-send" {
								c = 8
							}
						}
						r, err := measure(runners[name], srv, c, conns, *n)
						if err != nil {
							log.Fatalf("client=%s conc=%d latency=%v conns=%d: %v", name, c, lat, conns, err)
						}
						if _, ok := results[k]; !ok {
							keys = append(keys, k)
						}
						results[k] = append(results[k], r)
						fmt.Printf("BenchmarkHTTP2/latency=%v/client=%s/conns=%d/conc=%d \t%8d\t%10.0f ns/op\t%10.0f notifications/s\t%10.0f bound/s\t%8.2f µs-cpu/op\t%8.0f B/op\t%6.0f allocs/op\t%6d peak-goroutines\t%6.1f peak-heap-MiB\n",
							lat, name, conns, c, r.n, r.nsPerOp(), r.perSecond(), bound(conns, *streams, lat), r.cpuPerOp(), r.bytesPerOp(), r.allocsPerOp(), r.goroutines, float64(r.heap)/(1<<20))
					}
				}
			}
		}
		srv.stop()
	}
	printRatios(results, keys, *streams)
	if *svgFile != "" {
		if err := os.WriteFile(*svgFile, latencyChart(results, keys, latencies, *streams), 0o644); err != nil {
			log.Fatal(err)
		}
	}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		fmt.Printf("# peak RSS of this (client) process: %.1f MiB\n", float64(ru.Maxrss)/1024)
	}
}

// bound is what the connections allow: conns x streams / latency, in notifications per
// second; 0 when there is no latency (no bound) or the client is not ours.
func bound(conns, streams int, latency time.Duration) float64 {
	if latency <= 0 || conns <= 0 {
		return 0
	}
	return float64(conns*streams) / latency.Seconds()
}

func isFlagSet(name string) bool {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// runner makes a client connected to srv and returns a function that sends one notification,
// and one that waits for everything sent to be answered and closes the client.
//
// idle, when not nil, waits until everything sent so far is answered (a client with a queue,
// whose sends return before the answers).
type runner func(srv *server, conc, conns int) (send func() error, finish func() error, idle func(), err error)

var runners = map[string]runner{
	"apns-go":      apnsGoPush,
	"apns-go-send": apnsGoSend,
	"apns-go-seed": apnsGoSeed,
	"apns2":        apns2Push,
	"nethttp":      netHTTPPost,
}

func newAPNsGo(srv *server, conns int, opts ...apns.Option) (*apns.Client, error) {
	cfg := &tls.Config{RootCAs: srv.roots}
	opts = append([]apns.Option{apns.WithTLSConfig(cfg)}, opts...)
	c, err := apns.CreateClient(srv.url, srv.certPEM, srv.keyPEM, false, opts...)
	if err != nil {
		return nil, err
	}
	return c, c.Start(max(conns, 1))
}

func apnsGoPush(srv *server, _, conns int) (func() error, func() error, func(), error) {
	c, err := newAPNsGo(srv, conns)
	if err != nil {
		return nil, nil, nil, err
	}
	send := func() error {
		resp, err := c.Push(context.Background(), &apns.Notification{DeviceToken: deviceToken, Payload: payload})
		if err == nil && !resp.Sent() {
			err = fmt.Errorf("rejected: %d %s", resp.StatusCode, resp.Reason)
		}
		return err
	}
	return send, c.Stop, nil, nil
}

// apnsGoSend queues notifications with SendNotification; conc senders (WithStreams) send
// them on the one connection. finish waits for every answer (Stop), then checks that all
// were delivered.
func apnsGoSend(srv *server, conc, conns int) (func() error, func() error, func(), error) {
	c, err := newAPNsGo(srv, conns, apns.WithStreams(conc))
	if err != nil {
		return nil, nil, nil, err
	}
	send := func() error {
		return c.SendNotification(context.Background(), &apns.Notification{DeviceToken: deviceToken, Payload: payload})
	}
	finish := func() error {
		if err := c.Stop(); err != nil {
			return err
		}
		if st := c.Stats(); st.Delivered != st.Accepted {
			return fmt.Errorf("delivered %d of %d", st.Delivered, st.Accepted)
		}
		return nil
	}
	return send, finish, func() { waitIdle(c) }, nil
}

// apnsGoSeed is the seed API as a new user writes it: CreateClient, Start(conns), Send with
// a map payload from the sending goroutines, Stop; streams as the server allows.
func apnsGoSeed(srv *server, _, conns int) (func() error, func() error, func(), error) {
	c, err := newAPNsGo(srv, conns)
	if err != nil {
		return nil, nil, nil, err
	}
	send := func() error {
		return c.Send(deviceToken, time.Time{}, apns.PRIORITY_IMMEDIATE, map[string]interface{}{
			"aps": map[string]interface{}{"alert": "hello world!"}, "data": 42})
	}
	finish := func() error {
		if err := c.Stop(); err != nil {
			return err
		}
		if st := c.Stats(); st.Delivered != st.Accepted {
			return fmt.Errorf("delivered %d of %d", st.Delivered, st.Accepted)
		}
		return nil
	}
	return send, finish, func() { waitIdle(c) }, nil
}

// waitIdle waits until c has settled every notification it accepted.
func waitIdle(c *apns.Client) {
	for begin := time.Now(); time.Since(begin) < time.Minute; {
		st := c.Stats()
		if st.Queued == 0 && st.InFlight == 0 && st.Delivered+st.Rejected+st.Unsent+st.Unconfirmed >= st.Accepted {
			return
		}
		time.Sleep(time.Millisecond)
	}
	log.Print("warm-up not answered within a minute")
}

func apns2Push(srv *server, _, _ int) (func() error, func() error, func(), error) {
	pair, err := tls.X509KeyPair(srv.certPEM, srv.keyPEM)
	if err != nil {
		return nil, nil, nil, err
	}
	c := apns2.NewClient(pair)
	c.Host = srv.url
	// apns2 v0.25.0 builds its client on x/net's http2.Transport; its TLS configuration is
	// the only way to trust the mock's certificate.
	//lint:ignore SA1019 the transport apns2 made
	tr, ok := c.HTTPClient.Transport.(*http2.Transport)
	if !ok {
		return nil, nil, nil, fmt.Errorf("apns2 transport is %T, not *http2.Transport", c.HTTPClient.Transport)
	}
	//lint:ignore SA1019 the transport apns2 made
	tr.TLSClientConfig.RootCAs = srv.roots
	send := func() error {
		resp, err := c.Push(&apns2.Notification{DeviceToken: deviceToken, Payload: payload})
		if err == nil && !resp.Sent() {
			err = fmt.Errorf("rejected: %d %s", resp.StatusCode, resp.Reason)
		}
		return err
	}
	finish := func() error {
		c.CloseIdleConnections()
		return nil
	}
	return send, finish, nil, nil
}

// netHTTPPost is the floor on net/http: a plain http.Client posting the same path, headers
// and body over one HTTP/2 connection, with nothing of an APNs client around it.
func netHTTPPost(srv *server, _, _ int) (func() error, func() error, func(), error) {
	pair, err := tls.X509KeyPair(srv.certPEM, srv.keyPEM)
	if err != nil {
		return nil, nil, nil, err
	}
	var protocols http.Protocols
	protocols.SetHTTP2(true)
	tr := &http.Transport{
		TLSClientConfig:    &tls.Config{RootCAs: srv.roots, Certificates: []tls.Certificate{pair}},
		Protocols:          &protocols,
		DisableCompression: true,
	}
	client := &http.Client{Transport: tr}
	url := srv.url + "/3/device/" + deviceToken
	send := func() error {
		req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(payload))
		if err != nil {
			return err
		}
		req.Header = http.Header{
			"Apns-Push-Type": {"alert"},
			"Apns-Priority":  {"10"},
			"Content-Type":   {"application/json"},
		}
		res, err := client.Do(req)
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if err == nil && res.StatusCode != http.StatusOK {
			err = fmt.Errorf("status %d", res.StatusCode)
		}
		return err
	}
	finish := func() error {
		tr.CloseIdleConnections()
		return nil
	}
	return send, finish, nil, nil
}

type key struct {
	client  string
	conc    int
	latency time.Duration
	conns   int // apns-go's Start(n); 0 for the others
}

// result is one measurement of n notifications.
type result struct {
	n              int
	wall, cpu      time.Duration
	bytes, mallocs uint64
	goroutines     int           // most goroutines of this process at once
	serverCPU      time.Duration // the mock's CPU time (child process) meanwhile
	sending        time.Duration // until the sends returned (the rest of wall: finish)
	heap           uint64        // most heap in use (objects) at once
	inSend         time.Duration // summed over the sends: time inside send (for Push: the round trip)
}

func (r result) nsPerOp() float64     { return float64(r.wall.Nanoseconds()) / float64(r.n) }
func (r result) perSecond() float64   { return float64(r.n) / r.wall.Seconds() }
func (r result) cpuPerOp() float64    { return float64(r.cpu.Nanoseconds()) / 1e3 / float64(r.n) }
func (r result) bytesPerOp() float64  { return float64(r.bytes) / float64(r.n) }
func (r result) allocsPerOp() float64 { return float64(r.mallocs) / float64(r.n) }

// msPerSend is the mean time one send took, in ms: for Push, the round trip as the caller sees
// it, latency and the client's own delays included.
func (r result) msPerSend() float64 { return float64(r.inSend.Nanoseconds()) / 1e6 / float64(r.n) }

// measure runs one client at one concurrency: connect, warm up with n/10 notifications (at
// least conc), then time n notifications sent from conc goroutines until finish returns.
func measure(newRunner runner, srv *server, conc, conns, n int) (result, error) {
	send, finish, idle, err := newRunner(srv, conc, conns)
	if err != nil {
		return result{}, err
	}
	if _, err := sendAll(send, conc, max(n/10, conc)); err != nil {
		finish()
		return result{}, fmt.Errorf("warming up: %w", err)
	}
	if idle != nil {
		idle() // the warm-up is delivered: the timed run delivers its n alone
	}
	runtime.GC()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	peak := samplePeaks()
	scpu0 := childCPU(srv)
	cpu0, begin := processCPU(), time.Now()
	inSend, err := sendAll(send, conc, n)
	sending := time.Since(begin)
	if ferr := finish(); err == nil {
		err = ferr
	}
	wall, cpu := time.Since(begin), processCPU()-cpu0
	scpu := childCPU(srv) - scpu0
	goroutines, heap := peak()
	runtime.ReadMemStats(&m1)
	if err != nil {
		return result{}, err
	}
	return result{n: n, wall: wall, cpu: cpu, bytes: m1.TotalAlloc - m0.TotalAlloc, mallocs: m1.Mallocs - m0.Mallocs,
		goroutines: goroutines, heap: heap, serverCPU: scpu, sending: sending, inSend: inSend}, nil
}

// samplePeaks samples the goroutine count and the heap in use every 10 ms until the
// function it returns is called, which returns the largest of each.
func samplePeaks() func() (goroutines int, heap uint64) {
	samples := []metrics.Sample{{Name: "/sched/goroutines:goroutines"}, {Name: "/memory/classes/heap/objects:bytes"}}
	stop, done := make(chan struct{}), make(chan struct{})
	var g, h uint64
	go func() {
		defer close(done)
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			metrics.Read(samples)
			g, h = max(g, samples[0].Value.Uint64()), max(h, samples[1].Value.Uint64())
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	return func() (int, uint64) {
		close(stop)
		<-done
		return int(g), h
	}
}

// sendAll calls send n times from conc goroutines and returns the time spent inside send,
// summed over the calls, and the first error.
func sendAll(send func() error, conc, n int) (time.Duration, error) {
	var next, inSend atomic.Int64
	var first atomic.Pointer[error]
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				begin := time.Now()
				err := send()
				inSend.Add(int64(time.Since(begin)))
				if err != nil {
					first.CompareAndSwap(nil, &err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := first.Load(); err != nil {
		return time.Duration(inSend.Load()), *err
	}
	return time.Duration(inSend.Load()), nil
}

// childCPU returns the user and system CPU time the mock's process has used so far, read from
// /proc (Linux; 0 elsewhere), in clock ticks of 10 ms.
func childCPU(srv *server) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", srv.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	_, rest, ok := bytes.Cut(b, []byte(") ")) // after the command name, which may hold spaces
	f := strings.Fields(string(rest))
	if !ok || len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

func writeProfile(name, file string) {
	f, err := os.Create(file)
	if err == nil {
		err = pprof.Lookup(name).WriteTo(f, 0)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		log.Print(err)
	}
}

// processCPU returns the user and system CPU time this process has used so far; the child
// process's is not included.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func printRatios(results map[key][]result, keys []key, streams int) {
	med := func(k key, f func(result) float64) float64 {
		var v []float64
		for _, r := range results[k] {
			v = append(v, f(r))
		}
		return median(v)
	}
	fmt.Printf("\n# medians of %d runs; bound = conns x %d streams / latency; ratios to apns2 at the same latency and concurrency setting\n", len(results[keys[0]]), streams)
	fmt.Printf("# %-8s %-13s %5s %5s %16s %10s %7s %12s %9s %8s %10s %9s %9s\n", "latency", "client", "conns", "conc", "notifications/s", "bound/s", "÷bound", "µs-cpu/op", "B/op", "allocs", "goroutines", "heap-MiB", "÷apns2")
	for _, k := range keys {
		tp := med(k, result.perSecond)
		b := bound(k.conns, streams, k.latency)
		ofBound, ofApns2 := "-", "-"
		if b > 0 {
			ofBound = fmt.Sprintf("%.2f", tp/b)
		}
		ref := key{"apns2", k.conc, k.latency, 0}
		if _, ok := results[ref]; ok && k.client != "apns2" {
			ofApns2 = fmt.Sprintf("%.2f", tp/med(ref, result.perSecond))
		}
		fmt.Printf("# %-8v %-13s %5d %5d %16.0f %10.0f %7s %12.2f %9.0f %8.1f %10.0f %9.1f %9s\n", k.latency, k.client, k.conns, k.conc,
			tp, b, ofBound, med(k, result.cpuPerOp), med(k, result.bytesPerOp), med(k, result.allocsPerOp),
			med(k, func(r result) float64 { return float64(r.goroutines) }), med(k, func(r result) float64 { return float64(r.heap) / (1 << 20) }), ofApns2)
	}
	fmt.Printf("\n# mock server (child process) CPU µs per notification; the share of the wall time the sends took (the rest: finish, e.g. Stop); ms per send (for Push: the round trip the caller sees)\n")
	for _, k := range keys {
		fmt.Printf("# %-8v %-13s %5d %5d %10.2f %8.3f %10.2f\n", k.latency, k.client, k.conns, k.conc,
			med(k, func(r result) float64 { return float64(r.serverCPU.Nanoseconds()) / 1e3 / float64(r.n) }),
			med(k, func(r result) float64 { return r.sending.Seconds() / r.wall.Seconds() }),
			med(k, result.msPerSend))
	}
	fmt.Printf("\n# CPU per notification ÷ apns2's (goal at latency 0: <= 0.60)\n")
	for _, k := range keys {
		ref := key{"apns2", k.conc, k.latency, 0}
		if _, ok := results[ref]; ok && k.client != "apns2" {
			fmt.Printf("# %-8v %-13s %5d %5d %10.2f\n", k.latency, k.client, k.conns, k.conc, med(k, result.cpuPerOp)/med(ref, result.cpuPerOp))
		}
	}
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

func parseInts(s string, least int) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || v < least {
			return nil, fmt.Errorf("bad number %q in %q", f, s)
		}
		out = append(out, v)
	}
	return out, nil
}

// server is the child process running the mock, and what a client needs to reach it.
type server struct {
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	url     string
	roots   *x509.CertPool // holds the mock's leaf certificate
	certPEM []byte         // client certificate signed by the child's test CA
	keyPEM  []byte
}

// startServer re-executes this program with -serve (under taskset if cpus is set) and reads the line it prints:
// "<url> <directory>", the directory holding server.pem, client.pem and client-key.pem.
func startServer(cpus string, latency, jitter time.Duration, streams int) (*server, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	args := []string{exe, "-serve", "-latency", latency.String(), "-jitter", jitter.String(), "-streams", strconv.Itoa(streams)}
	if cpus != "" {
		args = append([]string{"taskset", "-c", cpus}, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &server{cmd: cmd, stdin: stdin}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		s.stop()
		return nil, fmt.Errorf("reading the server's address: %w", err)
	}
	url, dir, ok := strings.Cut(strings.TrimSpace(line), " ")
	if !ok {
		s.stop()
		return nil, fmt.Errorf("server said %q", line)
	}
	s.url = url
	leaf, err := os.ReadFile(filepath.Join(dir, "server.pem"))
	if err == nil {
		s.certPEM, err = os.ReadFile(filepath.Join(dir, "client.pem"))
	}
	if err == nil {
		s.keyPEM, err = os.ReadFile(filepath.Join(dir, "client-key.pem"))
	}
	if err != nil {
		s.stop()
		return nil, err
	}
	s.roots = x509.NewCertPool()
	if !s.roots.AppendCertsFromPEM(leaf) {
		s.stop()
		return nil, errors.New("no certificate in server.pem")
	}
	return s, nil
}

// stop closes the child's stdin, which makes it exit, and waits for it.
func (s *server) stop() {
	s.stdin.Close()
	if err := s.cmd.Wait(); err != nil {
		log.Printf("server process: %v", err)
	}
}

// runServer is the child: it starts the mock, writes the certificates a client needs to a
// temporary directory, prints "<url> <directory>", and serves until its stdin is closed.
func runServer(latency, jitter time.Duration, streams int) {
	s := apnstest.NewUnstartedHTTP2Server()
	s.DiscardNotifications = true
	if latency > 0 {
		s.Latency, s.LatencyJitter = latency-jitter/2, jitter
	}
	s.MaxConcurrentStreams = streams
	s.Start()
	defer s.Close()

	// The test CA is not exported; the client trusts the server's leaf certificate itself,
	// fetched with a handshake.
	conn, err := tls.Dial("tcp", s.Addr, s.ClientTLSConfig())
	if err != nil {
		log.Fatal(err)
	}
	leaf := conn.ConnectionState().PeerCertificates[0].Raw
	conn.Close()

	dir, err := os.MkdirTemp("", "apns-bench-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	certPEM, keyPEM := apnstest.ClientCertPEM()
	files := map[string][]byte{
		"server.pem":     pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf}),
		"client.pem":     certPEM,
		"client-key.pem": keyPEM,
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			log.Fatal(err)
		}
	}
	fmt.Printf("%s %s\n", s.URL, dir)
	io.Copy(io.Discard, os.Stdin) // until the parent closes stdin or exits
}

// runGrowth is the growth scenario: Start(1) with WithMaxConnections(8) against a mock that
// announces streams streams and answers after latency. Notifications are sent through the
// queue from 8 goroutines; every second it prints the notifications delivered in that second
// and the connections open. After the ramp (8 s) it measures 5 s at the full pool, then stops
// sending and waits for the pool to shrink back to one connection (idle timeout 2 s).
func runGrowth(cpus string, latency time.Duration, streams int) error {
	srv, err := startServer(cpus, latency, 0, streams)
	if err != nil {
		return err
	}
	defer srv.stop()
	const maxConns, idle = 8, 2 * time.Second
	c, err := newAPNsGo(srv, 1, apns.WithMaxConnections(maxConns), apns.WithIdleTimeout(idle))
	if err != nil {
		return err
	}
	b := bound(maxConns, streams, latency)
	fmt.Printf("# growth: Start(1), WithMaxConnections(%d), %d streams, latency %v: bound %.0f/s at %d connections\n", maxConns, streams, latency, b, maxConns)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := c.SendNotification(context.Background(), &apns.Notification{DeviceToken: deviceToken, Payload: payload}); err != nil {
					return
				}
			}
		})
	}
	const ramp, window = 8, 5
	prev := c.Stats().Delivered
	var full []float64
	for sec := 1; sec <= ramp+window; sec++ {
		time.Sleep(time.Second)
		st := c.Stats()
		rate := float64(st.Delivered - prev)
		prev = st.Delivered
		fmt.Printf("# t=%2ds connections %d delivered %6.0f/s (%.2f of the %d-connection bound)\n", sec, st.Connections, rate, rate/b, maxConns)
		if sec > ramp {
			full = append(full, rate)
		}
	}
	close(stop)
	wg.Wait()
	fmt.Printf("BenchmarkHTTP2Growth/latency=%v/streams=%d/max=%d \t1\t%10.0f notifications/s\t%10.0f bound/s\t%6.2f of-bound\n",
		latency, streams, maxConns, median(full), b, median(full)/b)
	begin := time.Now()
	for c.Stats().Connections > 1 && time.Since(begin) < time.Minute {
		time.Sleep(100 * time.Millisecond)
	}
	fmt.Printf("# back to %d connection(s) %.1f s after the load stopped (idle timeout %v)\n", c.Stats().Connections, time.Since(begin).Seconds(), idle)
	return c.Stop()
}
