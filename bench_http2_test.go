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
	"runtime"
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

// h2BenchLatencies are the answer latencies of BenchmarkHTTP2Latency: loopback, and Apple-like
// round trips.
var h2BenchLatencies = []time.Duration{0, 20 * time.Millisecond, 100 * time.Millisecond, 250 * time.Millisecond}

// BenchmarkHTTP2Latency: b.N notifications against a mock that answers after a latency and
// announces 1000 streams, on 1 and 4 connections, through the queue (the seed API's Send loop
// from 8 goroutines, timed until Stop returns) and by Push from as many goroutines as the
// connections have streams. Beside notifications/s it reports the bound the connections allow
// (conns x 1000 / latency), the throughput's share of it, and the most goroutines at once.
// Run it with a fixed count, e.g. -benchtime 20000x: the latency runs are not CPU-bound.
func BenchmarkHTTP2Latency(b *testing.B) {
	const streams = 1000
	for _, lat := range h2BenchLatencies {
		for _, mode := range []string{"send", "push"} {
			for _, conns := range []int{1, 4} {
				b.Run(fmt.Sprintf("latency=%v/mode=%s/conns=%d", lat, mode, conns), func(b *testing.B) {
					s := apnstest.NewUnstartedHTTP2Server()
					s.DiscardNotifications = true
					s.Latency = lat
					s.MaxConcurrentStreams = streams
					s.Start()
					b.Cleanup(s.Close)
					cert, key := apnstest.ClientCertPEM()
					c, err := apns.CreateClient(s.URL, cert, key, false, apns.WithTLSConfig(s.ClientTLSConfig()))
					if err != nil {
						b.Fatal(err)
					}
					if err := c.Start(conns); err != nil {
						b.Fatal(err)
					}
					tok := token(1)
					payload := map[string]interface{}{"aps": map[string]interface{}{"alert": "hello world!"}, "data": 42}
					most := sampleGoroutines()
					if mode == "send" {
						runConcurrently(b, 8, func() error {
							return c.Send(tok, time.Time{}, apns.PRIORITY_IMMEDIATE, payload)
						}, func() {
							if err := c.Stop(); err != nil {
								b.Fatal(err)
							}
						})
						if got := s.Count(); got != b.N {
							b.Fatalf("server counted %d of %d", got, b.N)
						}
					} else {
						runConcurrently(b, conns*streams, func() error {
							resp, err := c.Push(context.Background(), &apns.Notification{DeviceToken: tok, Payload: h2BenchPayload})
							if err == nil && !resp.Sent() {
								err = fmt.Errorf("rejected: %d %s", resp.StatusCode, resp.Reason)
							}
							return err
						}, func() { c.Stop() })
					}
					b.ReportMetric(float64(most()), "peak-goroutines")
					if lat > 0 {
						bound := float64(conns*streams) / lat.Seconds()
						b.ReportMetric(bound, "bound/s")
						b.ReportMetric(float64(b.N)/b.Elapsed().Seconds()/bound, "of-bound")
					}
				})
			}
		}
	}
}

// sampleGoroutines samples the number of goroutines every 10 ms until the function it returns
// is called, which returns the most seen.
func sampleGoroutines() func() int {
	stop, done := make(chan struct{}), make(chan struct{})
	most := runtime.NumGoroutine()
	go func() {
		defer close(done)
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				most = max(most, runtime.NumGoroutine())
			}
		}
	}()
	return func() int { close(stop); <-done; return most }
}
