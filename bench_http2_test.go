//go:build unix

package apns_test

// End-to-end benchmarks of the HTTP/2 transport through the public API, against
// apnstest.HTTP2Server in the same process, next to a plain net/http HTTP/2 client making the
// same requests. The CPU metric is the process's (getrusage), so it includes the mock server's
// share; the bench module (bench/) runs the mock in a child process to measure the client alone.

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	apns "github.com/Kwik-messenger/apns-go"
	"github.com/Kwik-messenger/apns-go/apnstest"
)

var (
	h2BenchPayload     = []byte(`{"aps":{"alert":"hello world!"},"data":42}`)
	h2BenchConcurrency = []int{1, 64, 256}
)

// processCPU returns the user and system CPU time the process has used so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func newBenchHTTP2Server(b *testing.B) *apnstest.HTTP2Server {
	b.Helper()
	s := apnstest.NewUnstartedHTTP2Server()
	s.DiscardNotifications = true
	s.Start()
	b.Cleanup(s.Close)
	return s
}

func newBenchHTTP2Client(b *testing.B, s *apnstest.HTTP2Server, opts ...apns.Option) *apns.Client {
	b.Helper()
	cert, key := apnstest.ClientCertPEM()
	opts = append([]apns.Option{apns.WithTLSConfig(s.ClientTLSConfig())}, opts...)
	c, err := apns.CreateClient(s.URL, cert, key, false, opts...)
	if err != nil {
		b.Fatal(err)
	}
	if err := c.Start(1); err != nil {
		b.Fatal(err)
	}
	return c
}

// runConcurrently makes b.N calls of do from conc goroutines, then calls finish, and reports
// notifications per second and CPU microseconds per notification over that span.
func runConcurrently(b *testing.B, conc int, do func() error, finish func()) {
	b.Helper()
	b.ReportAllocs()
	var next atomic.Int64
	var failed atomic.Pointer[error]
	var wg sync.WaitGroup
	b.ResetTimer()
	cpu0, begin := processCPU(), time.Now()
	for range conc {
		wg.Go(func() {
			for next.Add(1) <= int64(b.N) {
				if err := do(); err != nil {
					failed.CompareAndSwap(nil, &err)
					return
				}
			}
		})
	}
	wg.Wait()
	if finish != nil {
		finish()
	}
	elapsed, cpu := time.Since(begin), processCPU()-cpu0
	b.StopTimer()
	if err := failed.Load(); err != nil {
		b.Fatal(*err)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "notifications/s")
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "µs-cpu/op")
}

// BenchmarkHTTP2Push: conc goroutines calling Push on one connection.
func BenchmarkHTTP2Push(b *testing.B) {
	for _, conc := range h2BenchConcurrency {
		b.Run(fmt.Sprintf("conc=%d", conc), func(b *testing.B) {
			s := newBenchHTTP2Server(b)
			c := newBenchHTTP2Client(b, s)
			defer c.Stop()
			tok := token(1)
			runConcurrently(b, conc, func() error {
				resp, err := c.Push(context.Background(), &apns.Notification{DeviceToken: tok, Payload: h2BenchPayload})
				if err == nil && !resp.Sent() {
					err = fmt.Errorf("rejected: %d %s", resp.StatusCode, resp.Reason)
				}
				return err
			}, nil)
		})
	}
}

// BenchmarkHTTP2Send: notifications queued with SendNotification and sent by conc senders
// (WithStreams) on one connection; the time includes Stop, which waits for every answer.
func BenchmarkHTTP2Send(b *testing.B) {
	for _, conc := range h2BenchConcurrency {
		b.Run(fmt.Sprintf("conc=%d", conc), func(b *testing.B) {
			s := newBenchHTTP2Server(b)
			c := newBenchHTTP2Client(b, s, apns.WithStreams(conc))
			tok := token(1)
			runConcurrently(b, min(conc, 8), func() error {
				return c.SendNotification(context.Background(), &apns.Notification{DeviceToken: tok, Payload: h2BenchPayload})
			}, func() {
				if err := c.Stop(); err != nil {
					b.Fatal(err)
				}
			})
			if got := s.Count(); got != b.N {
				b.Fatalf("server counted %d of %d", got, b.N)
			}
		})
	}
}

// BenchmarkHTTP2RawNetHTTP is the floor: a plain net/http client posting the same requests
// (same path, headers and body) from conc goroutines over one HTTP/2 connection.
func BenchmarkHTTP2RawNetHTTP(b *testing.B) {
	for _, conc := range h2BenchConcurrency {
		b.Run(fmt.Sprintf("conc=%d", conc), func(b *testing.B) {
			s := newBenchHTTP2Server(b)
			certPEM, keyPEM := apnstest.ClientCertPEM()
			pair, err := tls.X509KeyPair(certPEM, keyPEM)
			if err != nil {
				b.Fatal(err)
			}
			cfg := s.ClientTLSConfig()
			cfg.Certificates = []tls.Certificate{pair}
			var protocols http.Protocols
			protocols.SetHTTP2(true)
			tr := &http.Transport{TLSClientConfig: cfg, Protocols: &protocols, DisableCompression: true}
			defer tr.CloseIdleConnections()
			client := &http.Client{Transport: tr}
			url := s.URL + "/3/device/" + strings.ToLower(token(1))
			runConcurrently(b, conc, func() error {
				req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(string(h2BenchPayload)))
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
			}, nil)
		})
	}
}
