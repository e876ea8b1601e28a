package apns_test

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"sync"
	"syscall"
	"testing"
	"time"

	apns "github.com/Kwik-messenger/apns-go"
	"github.com/Kwik-messenger/apns-go/apnstest"
)

// The binary benchmarks measure notifications per second end to end: from the first Send
// until the gateway has counted every notification. Client and mock share the process, so
// the CPU figures (from getrusage) include the mock's work. Each "client" benchmark has a
// "raw" twin in the same run: a plain buffered TLS writer doing the same per-message work
// (json.Marshal of the payload map, hex decoding of the token, one command-2 frame) with the
// same number of goroutines and connections, and nothing else: no queue, no in-flight ring,
// no replay. client/raw is the cost of the library.

var benchPayload = map[string]interface{}{"aps": map[string]interface{}{"alert": "hello world!"}, "data": 42}

// cpuTime returns the CPU time the process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// measure runs send, which must get b.N notifications counted by the gateway, and reports
// throughput and CPU per notification.
func measure(b *testing.B, send func()) {
	b.Helper()
	b.ReportAllocs()
	b.ResetTimer()
	cpu, begin := cpuTime(), time.Now()
	send()
	elapsed, used := time.Since(begin), cpuTime()-cpu
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "notifications/s")
	b.ReportMetric(float64(used.Microseconds())/float64(b.N), "µs-cpu/op")
	b.ReportMetric(float64(peakRSS())/(1<<20), "peak-RSS-MiB")
}

// peakRSS returns the process's peak resident set size in bytes, over its whole life: it
// describes one benchmark only when the process runs just that one.
func peakRSS() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return int64(ru.Maxrss) << 10 // kilobytes on Linux; int32 on 386 and arm
}

// split calls f(k, n) on each of g goroutines, the n adding up to total, and waits.
func split(g, total int, f func(k, n int)) {
	var wg sync.WaitGroup
	for k := range g {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(k, total/g+btoi(k < total%g))
		}()
	}
	wg.Wait()
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func newBenchServer(b *testing.B) *apnstest.Server {
	s := apnstest.NewUnstartedServer()
	s.DiscardNotifications = true
	s.Start()
	b.Cleanup(s.Close)
	return s
}

func waitCounted(b *testing.B, s *apnstest.Server, n int) {
	if !s.WaitCount(n, time.Minute) {
		b.Fatalf("gateway counted %d of %d", s.Count(), n)
	}
}

func BenchmarkBinary(b *testing.B) {
	for _, workers := range []int{1, 2, 4} {
		name := map[int]string{1: "workers=1", 2: "workers=2", 4: "workers=4"}[workers]
		b.Run(name+"/kind=client", func(b *testing.B) { benchClient(b, workers) })
		b.Run(name+"/kind=raw", func(b *testing.B) { benchRaw(b, workers) })
	}
}

// BenchmarkBinaryDefaultCap runs one worker with the default in-flight cap (8 MiB) and a
// 250 ms assume-sent timeout: throughput is what the cap allows, cap ÷ frame size ÷ timeout,
// reported beside it as cap-notifications/s.
func BenchmarkBinaryDefaultCap(b *testing.B) {
	benchClient(b, 1, apns.WithInflightBytes(0))
	b.ReportMetric(float64(apns.DefaultInflightBytes)/float64(len(getFrame(b)))/0.25, "cap-notifications/s")
}

// getFrame returns the frame of the benchmarks' notification.
func getFrame(b *testing.B) []byte {
	tok, _ := hex.DecodeString(token(1))
	p, err := json.Marshal(benchPayload)
	if err != nil {
		b.Fatal(err)
	}
	return appendFrame(nil, tok, p, 1)
}

// benchClient sends through the public API from as many goroutines as the client has workers,
// with a 250 ms assume-sent timeout and room for 64 MiB in flight per worker.
func benchClient(b *testing.B, workers int, opts ...apns.Option) {
	s := newBenchServer(b)
	cert, key := apnstest.ClientCertPEM()
	opts = append([]apns.Option{apns.WithTLSConfig(s.ClientTLSConfig()),
		apns.WithAssumeSentTimeout(250 * time.Millisecond), apns.WithInflightBytes(64 << 20)}, opts...)
	c, err := apns.CreateClient(s.Addr, cert, key, false, opts...)
	if err != nil {
		b.Fatal(err)
	}
	if err := c.Start(workers); err != nil {
		b.Fatal(err)
	}
	defer c.Stop()
	tok := token(1)
	measure(b, func() {
		split(workers, b.N, func(_, n int) {
			for range n {
				if err := c.Send(tok, time.Time{}, apns.PRIORITY_IMMEDIATE, benchPayload); err != nil {
					b.Error(err)
					return
				}
			}
		})
		waitCounted(b, s, b.N)
	})
}

// benchRaw is the baseline: each goroutine owns one TLS connection and a 64 KiB buffer.
func benchRaw(b *testing.B, conns int) {
	s := newBenchServer(b)
	cfg := s.ClientTLSConfig()
	tc := make([]*tls.Conn, conns)
	for i := range tc {
		c, err := tls.Dial("tcp", s.Addr, cfg)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		tc[i] = c
	}
	tok := token(1)
	measure(b, func() {
		split(conns, b.N, func(k, n int) {
			w := bufio.NewWriterSize(tc[k], 64<<10)
			var frame []byte
			for i := range n {
				p, err := json.Marshal(benchPayload)
				if err != nil {
					b.Error(err)
					return
				}
				t, err := hex.DecodeString(tok)
				if err != nil {
					b.Error(err)
					return
				}
				frame = appendFrame(frame[:0], t, p, uint32(i+1))
				if _, err := w.Write(frame); err != nil {
					b.Error(err)
					return
				}
			}
			if err := w.Flush(); err != nil {
				b.Error(err)
			}
		})
		waitCounted(b, s, b.N)
	})
}

// appendFrame appends a command-2 frame, written out here independently of the library.
func appendFrame(dst, token, payload []byte, id uint32) []byte {
	be := binary.BigEndian
	dst = append(dst, 2)
	dst = be.AppendUint32(dst, uint32(3+len(token)+3+len(payload)+7+7+4))
	dst = append(be.AppendUint16(append(dst, 1), uint16(len(token))), token...)
	dst = append(be.AppendUint16(append(dst, 2), uint16(len(payload))), payload...)
	dst = be.AppendUint32(be.AppendUint16(append(dst, 3), 4), id)
	dst = be.AppendUint32(be.AppendUint16(append(dst, 4), 4), 0)
	return append(be.AppendUint16(append(dst, 5), 1), 10)
}

// BenchmarkStop measures how long Stop takes once 1,000 notifications have been counted by
// the gateway, with the default assume-sent timeout: "sentinel" confirms with a sentinel frame
// (the default), "wait" waits out the timeout as the client did before.
func BenchmarkStop(b *testing.B) {
	b.Run("mode=sentinel", func(b *testing.B) { benchStop(b) })
	b.Run("mode=wait", func(b *testing.B) { benchStop(b, apns.WithoutSentinel()) })
}

func benchStop(b *testing.B, opts ...apns.Option) {
	s := newBenchServer(b)
	cert, key := apnstest.ClientCertPEM()
	tok := token(1)
	var total time.Duration
	for i := 0; i < b.N; i++ {
		c, err := apns.CreateClient(s.Addr, cert, key, false, append(opts, apns.WithTLSConfig(s.ClientTLSConfig()))...)
		if err != nil {
			b.Fatal(err)
		}
		if err := c.Start(2); err != nil {
			b.Fatal(err)
		}
		for range 1000 {
			if err := c.Send(tok, time.Time{}, apns.PRIORITY_IMMEDIATE, benchPayload); err != nil {
				b.Fatal(err)
			}
		}
		waitCounted(b, s, (i+1)*1000)
		begin := time.Now()
		c.Stop()
		total += time.Since(begin)
	}
	b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "ms-stop/op")
}
