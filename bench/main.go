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
	concFlag := flag.String("conc", "1,64,256", "comma-separated numbers of concurrent sends")
	clientsFlag := flag.String("clients", "apns-go,apns-go-send,apns2,nethttp", "comma-separated clients: apns-go (Push), apns-go-send (SendNotification through the queue), apns2, nethttp (a plain net/http client: the floor)")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of this (client) process to `file`")
	serverCPUs := flag.String("servercpus", "", "run the mock server under taskset -c `list` (e.g. 1; then run this under taskset -c 0)")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("bench: ")

	if *serve {
		runServer()
		return
	}
	concs, err := parseInts(*concFlag)
	if err != nil {
		log.Fatal(err)
	}
	clients := strings.Split(*clientsFlag, ",")
	for _, name := range clients {
		if runners[name] == nil {
			log.Fatalf("unknown client %q", name)
		}
	}

	srv, err := startServer(*serverCPUs)
	if err != nil {
		log.Fatal(err)
	}
	defer srv.stop()

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

	fmt.Printf("goos: %s\ngoarch: %s\npkg: github.com/Kwik-messenger/apns-go/bench\n", runtime.GOOS, runtime.GOARCH)
	fmt.Printf("# %d CPUs, GOMAXPROCS %d, %s; mock server in child process %d\n", runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version(), srv.cmd.Process.Pid)
	results := map[key][]result{}
	for range *count {
		for _, conc := range concs {
			for _, name := range clients {
				r, err := measure(runners[name], srv, conc, *n)
				if err != nil {
					log.Fatalf("client=%s conc=%d: %v", name, conc, err)
				}
				k := key{name, conc}
				results[k] = append(results[k], r)
				fmt.Printf("BenchmarkHTTP2/client=%s/conc=%d \t%8d\t%10.0f ns/op\t%10.0f notifications/s\t%8.2f µs-cpu/op\t%8.0f B/op\t%6.0f allocs/op\n",
					name, conc, r.n, r.nsPerOp(), r.perSecond(), r.cpuPerOp(), r.bytesPerOp(), r.allocsPerOp())
			}
		}
	}
	printRatios(results, clients, concs)
}

// runner makes a client connected to srv and returns a function that sends one notification,
// and one that waits for everything sent to be answered and closes the client.
type runner func(srv *server, conc int) (send func() error, finish func() error, err error)

var runners = map[string]runner{
	"apns-go":      apnsGoPush,
	"apns-go-send": apnsGoSend,
	"apns2":        apns2Push,
	"nethttp":      netHTTPPost,
}

func newAPNsGo(srv *server, opts ...apns.Option) (*apns.Client, error) {
	cfg := &tls.Config{RootCAs: srv.roots}
	opts = append([]apns.Option{apns.WithTLSConfig(cfg)}, opts...)
	c, err := apns.CreateClient(srv.url, srv.certPEM, srv.keyPEM, false, opts...)
	if err != nil {
		return nil, err
	}
	return c, c.Start(1)
}

func apnsGoPush(srv *server, _ int) (func() error, func() error, error) {
	c, err := newAPNsGo(srv)
	if err != nil {
		return nil, nil, err
	}
	send := func() error {
		resp, err := c.Push(context.Background(), &apns.Notification{DeviceToken: deviceToken, Payload: payload})
		if err == nil && !resp.Sent() {
			err = fmt.Errorf("rejected: %d %s", resp.StatusCode, resp.Reason)
		}
		return err
	}
	return send, c.Stop, nil
}

// apnsGoSend queues notifications with SendNotification; conc senders (WithStreams) send
// them on the one connection. finish waits for every answer (Stop), then checks that all
// were delivered.
func apnsGoSend(srv *server, conc int) (func() error, func() error, error) {
	c, err := newAPNsGo(srv, apns.WithStreams(conc))
	if err != nil {
		return nil, nil, err
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
	return send, finish, nil
}

func apns2Push(srv *server, _ int) (func() error, func() error, error) {
	pair, err := tls.X509KeyPair(srv.certPEM, srv.keyPEM)
	if err != nil {
		return nil, nil, err
	}
	c := apns2.NewClient(pair)
	c.Host = srv.url
	// apns2 v0.25.0 builds its client on x/net's http2.Transport; its TLS configuration is
	// the only way to trust the mock's certificate.
	//lint:ignore SA1019 the transport apns2 made
	tr, ok := c.HTTPClient.Transport.(*http2.Transport)
	if !ok {
		return nil, nil, fmt.Errorf("apns2 transport is %T, not *http2.Transport", c.HTTPClient.Transport)
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
	return send, finish, nil
}

// netHTTPPost is the floor on net/http: a plain http.Client posting the same path, headers
// and body over one HTTP/2 connection, with nothing of an APNs client around it.
func netHTTPPost(srv *server, _ int) (func() error, func() error, error) {
	pair, err := tls.X509KeyPair(srv.certPEM, srv.keyPEM)
	if err != nil {
		return nil, nil, err
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
	return send, finish, nil
}

type key struct {
	client string
	conc   int
}

// result is one measurement of n notifications.
type result struct {
	n              int
	wall, cpu      time.Duration
	bytes, mallocs uint64
}

func (r result) nsPerOp() float64     { return float64(r.wall.Nanoseconds()) / float64(r.n) }
func (r result) perSecond() float64   { return float64(r.n) / r.wall.Seconds() }
func (r result) cpuPerOp() float64    { return float64(r.cpu.Nanoseconds()) / 1e3 / float64(r.n) }
func (r result) bytesPerOp() float64  { return float64(r.bytes) / float64(r.n) }
func (r result) allocsPerOp() float64 { return float64(r.mallocs) / float64(r.n) }

// measure runs one client at one concurrency: connect, warm up with n/10 notifications (at
// least conc), then time n notifications sent from conc goroutines until finish returns.
func measure(newRunner runner, srv *server, conc, n int) (result, error) {
	send, finish, err := newRunner(srv, conc)
	if err != nil {
		return result{}, err
	}
	if err := sendAll(send, conc, max(n/10, conc)); err != nil {
		finish()
		return result{}, fmt.Errorf("warming up: %w", err)
	}
	runtime.GC()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	cpu0, begin := processCPU(), time.Now()
	err = sendAll(send, conc, n)
	if ferr := finish(); err == nil {
		err = ferr
	}
	wall, cpu := time.Since(begin), processCPU()-cpu0
	runtime.ReadMemStats(&m1)
	if err != nil {
		return result{}, err
	}
	return result{n: n, wall: wall, cpu: cpu, bytes: m1.TotalAlloc - m0.TotalAlloc, mallocs: m1.Mallocs - m0.Mallocs}, nil
}

// sendAll calls send n times from conc goroutines and returns the first error.
func sendAll(send func() error, conc, n int) error {
	var next atomic.Int64
	var first atomic.Pointer[error]
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				if err := send(); err != nil {
					first.CompareAndSwap(nil, &err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := first.Load(); err != nil {
		return *err
	}
	return nil
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

func printRatios(results map[key][]result, clients []string, concs []int) {
	med := func(k key, f func(result) float64) float64 {
		var v []float64
		for _, r := range results[k] {
			v = append(v, f(r))
		}
		return median(v)
	}
	fmt.Printf("\n# medians of %d runs\n", len(results[key{clients[0], concs[0]}]))
	fmt.Printf("# %-14s %5s %16s %12s %10s %10s\n", "client", "conc", "notifications/s", "µs-cpu/op", "B/op", "allocs/op")
	for _, conc := range concs {
		for _, name := range clients {
			k := key{name, conc}
			fmt.Printf("# %-14s %5d %16.0f %12.2f %10.0f %10.1f\n", name, conc,
				med(k, result.perSecond), med(k, result.cpuPerOp), med(k, result.bytesPerOp), med(k, result.allocsPerOp))
		}
	}
	if !slices.Contains(clients, "apns2") {
		return
	}
	fmt.Printf("\n# ratios to apns2 (medians): CPU per notification (goal <= 0.60), throughput (goal >= 1.20)\n")
	fmt.Printf("# %-14s %5s %10s %12s\n", "client", "conc", "cpu ratio", "throughput")
	for _, conc := range concs {
		ref := key{"apns2", conc}
		for _, name := range clients {
			if name == "apns2" {
				continue
			}
			k := key{name, conc}
			fmt.Printf("# %-14s %5d %10.2f %12.2f\n", name, conc,
				med(k, result.cpuPerOp)/med(ref, result.cpuPerOp), med(k, result.perSecond)/med(ref, result.perSecond))
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

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || v < 1 {
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
func startServer(cpus string) (*server, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, "-serve")
	if cpus != "" {
		cmd = exec.Command("taskset", "-c", cpus, exe, "-serve")
	}
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
func runServer() {
	s := apnstest.NewUnstartedHTTP2Server()
	s.DiscardNotifications = true
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
