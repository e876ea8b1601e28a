package apns_test

import (
	"testing"
	"time"

	apns "github.com/Kwik-messenger/apns-go"
	"github.com/Kwik-messenger/apns-go/apnstest"
)

// benchSend sends b.N notifications through Send and Stop, and reports notifications per
// second end to end: from the first Send until Stop returned.
func benchSend(b *testing.B, c *apns.Client, workers int, count func() int) {
	b.Helper()
	if err := c.Start(workers); err != nil {
		b.Fatal(err)
	}
	payload := map[string]interface{}{"aps": map[string]interface{}{"alert": "hello world!"}, "data": 42}
	tok := token(1)
	b.ReportAllocs()
	b.ResetTimer()
	begin := time.Now()
	for i := 0; i < b.N; i++ {
		if err := c.Send(tok, time.Time{}, apns.PRIORITY_IMMEDIATE, payload); err != nil {
			b.Fatal(err)
		}
	}
	if err := c.Stop(); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	if got := count(); got != b.N {
		b.Fatalf("gateway counted %d of %d", got, b.N)
	}
	b.ReportMetric(float64(b.N)/time.Since(begin).Seconds(), "notifications/s")
}

func BenchmarkSendBinary(b *testing.B) {
	for _, workers := range []int{1, 2} {
		b.Run(map[int]string{1: "workers=1", 2: "workers=2"}[workers], func(b *testing.B) {
			s := apnstest.NewUnstartedServer()
			s.DiscardNotifications = true
			s.Start()
			defer s.Close()
			cert, key := apnstest.ClientCertPEM()
			c, err := apns.CreateClient(s.Addr, cert, key, false, apns.WithTLSConfig(s.ClientTLSConfig()),
				apns.WithAssumeSentTimeout(250*time.Millisecond), apns.WithInflightBytes(64<<20))
			if err != nil {
				b.Fatal(err)
			}
			benchSend(b, c, workers, s.Count)
		})
	}
}

func BenchmarkSendHTTP2(b *testing.B) {
	s := apnstest.NewUnstartedHTTP2Server()
	s.DiscardNotifications = true
	s.Start()
	defer s.Close()
	cert, key := apnstest.ClientCertPEM()
	c, err := apns.CreateClient(s.URL, cert, key, false, apns.WithTLSConfig(s.ClientTLSConfig()))
	if err != nil {
		b.Fatal(err)
	}
	benchSend(b, c, 1, s.Count)
}
