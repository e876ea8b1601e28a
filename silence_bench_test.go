package apns_test

import (
	"testing"
	"time"

	apns "github.com/Kwik-messenger/apns-go"
	"github.com/Kwik-messenger/apns-go/apnstest"
)

// BenchmarkSilentConnectionRecovery measures, with the silence detector's real times (issue
// 15), how long after every connection of a client goes silent with requests in flight the
// last of those requests is delivered through a new connection. (A connection that had no
// request in flight is closed as silent after the others, when it does not answer the probe
// their closing sends it; the pool gives it no request meanwhile.) Each iteration: two
// connections, 1000 notifications in flight (the mock answers after 200 ms), then the mock
// swallows all traffic on both connections while keeping them open. Metrics: seconds from
// the silence to the last delivery (recovery-s), and the duplicates counted per iteration.
//
//	go test -run '^$' -bench BenchmarkSilentConnectionRecovery -benchtime 1x -count 5 .
func BenchmarkSilentConnectionRecovery(b *testing.B) {
	const n = 1000
	var total time.Duration
	var worst time.Duration
	var dups uint64
	for range b.N {
		b.StopTimer()
		arrived := make(chan struct{}, n)
		s := apnstest.NewUnstartedHTTP2Server()
		s.Latency = 200 * time.Millisecond
		s.DiscardNotifications = true
		s.RespondFunc(func(apnstest.Request) *apnstest.Response {
			select {
			case arrived <- struct{}{}:
			default:
			}
			return nil
		})
		s.Start()
		cert, key := apnstest.ClientCertPEM()
		c, err := apns.CreateClient(s.URL, cert, key, false, apns.WithTLSConfig(s.ClientTLSConfig()))
		if err != nil {
			b.Fatal(err)
		}
		if err := c.Start(2); err != nil {
			b.Fatal(err)
		}
		sendAllB(b, c, n)
		for range n {
			select {
			case <-arrived:
			case <-time.After(waitGuard):
				b.Fatal("the notifications did not reach the mock")
			}
		}
		b.StartTimer()
		start := time.Now()
		if got := s.SilenceClientConnections(); got != 2 {
			b.Fatalf("silenced %d connections; want 2", got)
		}
		for c.Stats().Delivered < n {
			if time.Since(start) > waitGuard {
				b.Fatalf("after %v: %+v", waitGuard, c.Stats())
			}
			time.Sleep(5 * time.Millisecond)
		}
		took := time.Since(start)
		b.StopTimer()
		total += took
		worst = max(worst, took)
		st := c.Stats()
		dups += st.Duplicates
		if st.SilentConns == 0 {
			b.Errorf("SilentConns = 0; want at least 1")
		}
		if err := c.Stop(); err != nil {
			b.Error(err)
		}
		s.Close()
	}
	b.ReportMetric(total.Seconds()/float64(b.N), "recovery-s")
	b.ReportMetric(worst.Seconds(), "worst-recovery-s")
	b.ReportMetric(float64(dups)/float64(b.N), "duplicates/op")
	b.ReportMetric(0, "ns/op")
}

// sendAllB queues n notifications with tokens 0..n-1.
func sendAllB(b *testing.B, c *apns.Client, n int) {
	b.Helper()
	pl := []byte(`{"aps":{"alert":"x"}}`)
	for i := range n {
		if err := c.SendNotification(b.Context(), &apns.Notification{DeviceToken: token(i), Payload: pl}); err != nil {
			b.Fatal(err)
		}
	}
}
