package apns_test

// Attack review (helper attack20b, stop 20) of b2ef932, 114ca44, b9e288d, f95f2db: the state
// hook's hasRetired, retiredConns shared with the management connection, reserve's retire
// of a closed connection, and GOAWAY refusals counted as replayed only.
//
// Failing on the code reviewed (defects): TestCreateChannelDuringAGracefulGoAway...,
// TestReplacedManagementConnection..., TestNotificationRefusedByGoAway....
// Protection (passes): TestConnectionRetiredForASilentRequest... (fails if the
// state hook does not wake the reaper for a retired connection going idle).

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	apns "github.com/Kwik-messenger/apns-go"
	"github.com/Kwik-messenger/apns-go/apnstest"
)

// A channel-management call that net/http refused because the management connection had
// received a graceful GOAWAY ("http2: client conn not usable": the request was never sent)
// is no lost call: like a notification (h2Stream.roundTrip), it belongs on a new connection.
// Here the connection drains a slow call after the GOAWAY, so it stays open (Err nil);
// channelManager.failed retires only a closed connection, and a POST is not retried: the
// caller gets net/http's refusal.
func TestCreateChannelDuringAGracefulGoAwayIsSentOnANewConnection(t *testing.T) {
	parallel(t)
	s, c := newTokenBroadcastClient(t, nil)
	ctx := context.Background()
	if _, err := c.CreateChannel(ctx, bundle, apns.NoMessageStored); err != nil {
		t.Fatal(err) // opens the management connection: later calls reuse it
	}
	arrived, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	s.RespondBroadcastFunc(func(r apnstest.BroadcastRequest) *apnstest.Response {
		if r.Op == apnstest.OpListChannels {
			once.Do(func() { close(arrived) })
			select {
			case <-release:
			case <-time.After(waitGuard):
			}
		}
		return nil
	})
	var releaseOnce sync.Once
	releaseAll := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(releaseAll)

	listed := make(chan error, 1)
	go func() {
		_, err := c.Channels(ctx, bundle)
		listed <- err
	}()
	receive(t, "the slow list call at the server", arrived)
	goneAway := make(chan struct{})
	go func() { defer close(goneAway); s.GoAway() }() // returns once the connection has drained
	waitFor(t, "the management connection to read the GOAWAY", func() bool {
		return apns.ManagementConnRefusesNewRequests(c)
	})

	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err := c.CreateChannel(cctx, bundle, apns.MostRecentMessageStored)
	releaseAll()
	if err != nil {
		t.Errorf("CreateChannel while the management connection drains after a graceful GOAWAY = %v; "+
			"want it sent on a new connection (net/http never sent it)", err)
	}
	if err := receive(t, "the slow list call", listed); err != nil {
		t.Errorf("the list call in flight at the GOAWAY = %v; want its answer", err)
	}
	receive(t, "GoAway", goneAway)
}

// A management connection replaced while a call is in flight on it is retired; once that
// call ends the connection must be closed, even when no other call comes (the contract:
// retired connections are closed once their requests end, even on an idle client). The
// management connection sweeps its retired connections only when it retires or dials
// another (channelManager.retireLocked), so the replaced one stays open until Stop.
//
// The replacement: a list call B that outlasts the write timeout on connection X, which
// already carried a call, is lost on a reused connection and retried with X avoided
// (channelManager.replace), while call A, sent on X after B, waits for its answer.
func TestReplacedManagementConnectionIsClosedOnceItsLastCallEnds(t *testing.T) {
	parallel(t)
	const writeTimeout = 1500 * time.Millisecond
	s, c := newTokenBroadcastClient(t, nil, apns.WithWriteTimeout(writeTimeout))
	ctx := context.Background()
	ch, err := c.CreateChannel(ctx, bundle, apns.NoMessageStored)
	if err != nil {
		t.Fatal(err) // opens X
	}
	if n := openH2Conns(t); n != 1 {
		t.Fatalf("%d HTTP/2 connections open after one channel call; want 1", n)
	}
	var lists atomic.Int32
	bArrived, aArrived, bRetried := make(chan struct{}), make(chan struct{}), make(chan struct{})
	releaseA := make(chan struct{})
	var releaseOnce sync.Once
	releaseAll := func() { releaseOnce.Do(func() { close(releaseA) }) }
	t.Cleanup(releaseAll)
	s.RespondBroadcastFunc(func(r apnstest.BroadcastRequest) *apnstest.Response {
		switch r.Op {
		case apnstest.OpListChannels: // B, then its retry
			switch lists.Add(1) {
			case 1:
				close(bArrived)
				return &apnstest.Response{Delay: time.Hour} // ends when the client resets the stream
			case 2:
				close(bRetried)
			}
		case apnstest.OpReadChannel: // A
			close(aArrived)
			select {
			case <-releaseA:
			case <-time.After(waitGuard):
			}
		}
		return nil
	})

	bDone := make(chan error, 1)
	go func() {
		_, err := c.Channels(ctx, bundle)
		bDone <- err
	}()
	receive(t, "call B at the server", bArrived)
	time.Sleep(writeTimeout / 3) // A's write timeout ends well after B's
	aDone := make(chan error, 1)
	go func() {
		_, err := c.Channel(ctx, bundle, ch.ID)
		aDone <- err
	}()
	receive(t, "call A at the server", aArrived)
	receive(t, "call B's retry at the server", bRetried) // X is replaced by now, A still on it
	releaseAll()
	if err := receive(t, "call B", bDone); err != nil {
		t.Errorf("call B = %v; want its retry's answer", err)
	}
	if err := receive(t, "call A", aDone); err != nil {
		t.Errorf("call A = %v; want its answer", err)
	}

	// Idle now: X carries nothing. It must be closed; Y alone stays open.
	deadline := time.Now().Add(5 * time.Second)
	for openH2Conns(t) != 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := openH2Conns(t); n != 1 {
		t.Errorf("%d HTTP/2 connections open 5s after the replaced management connection's last call "+
			"ended on an idle client; want 1 (the retired connection closed); retired [InFlight, closed]: %v",
			n, apns.ManagementRetired(c))
	}
}

// Protection (passes): a connection retired while still open (a request outlasted the write
// timeout: the gateway took it and never answered) and still carrying other requests is
// closed once they end, on an idle client: the state hook wakes the reaper for it because its
// slot has retired connections (hasRetired). Once idle, Stats.Connections and the gateway
// count Start's connection only.
func TestConnectionRetiredForASilentRequestIsClosedOnceItsOthersEnd(t *testing.T) {
	parallel(t)
	// The stalled request times out at 2s and its retry is answered on a new connection soon
	// after; the others, sent at 1s, end at 2.8s: then nothing but the state hook can see that
	// the retired connection is done.
	const writeTimeout = 2 * time.Second
	stall := token(1)
	var stalls atomic.Int32
	s := newH2Server(t, func(s *apnstest.HTTP2Server) {
		s.RespondFunc(func(r apnstest.Request) *apnstest.Response {
			if r.Token == stall {
				if stalls.Add(1) == 1 {
					return &apnstest.Response{Delay: time.Hour} // ends when the client resets the stream
				}
				return nil
			}
			if r.Token == token(100) {
				return nil // the warm-up
			}
			return &apnstest.Response{Delay: writeTimeout * 9 / 10} // in flight when the stalled one times out
		})
	})
	c := newH2Client(t, s, apns.WithWriteTimeout(writeTimeout), apns.WithErrorHandler(func(error) {}))
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	pl := []byte(`{"aps":{"alert":"x"}}`)
	push := func(i int) error {
		ctx, cancel := context.WithTimeout(context.Background(), waitGuard)
		defer cancel()
		resp, err := c.Push(ctx, &apns.Notification{DeviceToken: token(i), Payload: pl})
		if err == nil && !resp.Sent() {
			err = fmt.Errorf("status %d %s", resp.StatusCode, resp.Reason)
		}
		return err
	}
	if err := push(100); err != nil { // the connection's first request: it now takes many
		t.Fatalf("warm-up Push: %v", err)
	}
	errs := make(chan error, 9)
	go func() { errs <- push(1) }()
	time.Sleep(writeTimeout / 2) // the others go out after the stalled one: they end after its timeout
	for i := 2; i <= 9; i++ {
		go func() { errs <- push(i) }()
	}
	for range 9 {
		if err := receive(t, "a Push", errs); err != nil {
			t.Errorf("Push: %v", err)
		}
	}
	if n := stalls.Load(); n != 2 {
		t.Fatalf("the stalled notification reached the mock %d times; want 2: once stalled, once answered (the scenario did not happen)", n)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, open := c.Stats().Connections, openH2Conns(t)
		if got <= 1 && uint64(open) == got {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("idle for 5s: Stats.Connections = %d, %d HTTP/2 connections open; want equal and at most 1 (the retired connection closed)", got, open)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// openH2Conns counts t's HTTP/2 client connections (their read loops), as h2ReadLoops does,
// but also when the first record of the goroutine profile is one of them: countGoroutines
// (helpers_test.go) reads that record with the profile's header line in front of it
// ("goroutine profile: total N") and fails the test with "expected integer".
func openH2Conns(t *testing.T) int {
	t.Helper()
	var b strings.Builder
	if err := pprof.Lookup("goroutine").WriteTo(&b, 1); err != nil {
		t.Fatalf("goroutine profile: %v", err)
	}
	_, body, _ := strings.Cut(b.String(), "\n") // the header line
	n := 0
	for _, record := range strings.Split(body, "\n\n") {
		if hasLabel(record, labelOf(t)) && strings.Contains(record, "http2ClientConn).readLoop+") {
			var k int
			if _, err := fmt.Sscan(record, &k); err != nil {
				t.Fatalf("goroutine profile record %q: %v", record, err)
			}
			n += k
		}
	}
	return n
}

// goAwayEveryStreamServer is a minimal HTTP/2 server over TLS that processes no request: it
// answers the first HEADERS frame of each connection with a graceful GOAWAY (NO_ERROR) whose
// last stream ID is below that stream's, so net/http fails the request with "Transport
// received Server's graceful shutdown GOAWAY" (RFC 9113 section 6.8: not processed), and
// keeps the connection open until the client closes it. headers counts the HEADERS frames
// it received.
type goAwayEveryStreamServer struct {
	addr    string
	pool    *x509.CertPool
	headers atomic.Int64
}

func newGoAwayEveryStreamServer(t *testing.T) *goAwayEveryStreamServer {
	t.Helper()
	srv := &goAwayEveryStreamServer{}
	srv.addr, srv.pool = rawTLSServer(t, nil, func(_ int64, c *tls.Conn) { srv.serve(c) })
	return srv
}

func (srv *goAwayEveryStreamServer) serve(c net.Conn) {
	defer c.Close()
	if _, err := c.Write(h2Frame(0x4, 0, 0, nil)); err != nil { // SETTINGS
		return
	}
	preface := make([]byte, len("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"))
	if _, err := io.ReadFull(c, preface); err != nil {
		return
	}
	goneAway := false
	hdr := make([]byte, 9)
	for {
		if _, err := io.ReadFull(c, hdr); err != nil {
			return
		}
		payload := make([]byte, int(hdr[0])<<16|int(hdr[1])<<8|int(hdr[2]))
		if _, err := io.ReadFull(c, payload); err != nil {
			return
		}
		typ, flags, stream := hdr[3], hdr[4], binary.BigEndian.Uint32(hdr[5:])&0x7fffffff
		var out []byte
		switch {
		case typ == 0x4 && flags&0x1 == 0: // SETTINGS: ACK
			out = h2Frame(0x4, 0x1, 0, nil)
		case typ == 0x6 && flags&0x1 == 0: // PING: ACK
			out = h2Frame(0x6, 0x1, 0, payload)
		case typ == 0x1: // HEADERS: a new stream, refused
			srv.headers.Add(1)
			if !goneAway {
				goneAway = true
				p := make([]byte, 8) // last stream ID below this one, NO_ERROR
				binary.BigEndian.PutUint32(p, max(stream, 2)-2)
				out = h2Frame(0x7, 0, 0, p)
			}
		}
		if out != nil {
			if _, err := c.Write(out); err != nil {
				return
			}
		}
	}
}

// A notification that every connection refuses with a graceful GOAWAY above the last stream
// ID was processed nowhere (f95f2db: such a refusal "counts as replayed only, not as a
// duplicate and a drop"). When the resends (goAwayResends) run out, h2Stream.roundTrip
// returns net/http's refusal as an ordinary error, and deliver counts it as a request that
// may have reached APNs: a duplicate, a drop, and the notification ends as Unconfirmed
// ("possibly delivered") instead of Unsent. Nothing reached the gateway.
func TestNotificationRefusedByGoAwayOnEveryConnectionIsNoDuplicate(t *testing.T) {
	parallel(t)
	srv := newGoAwayEveryStreamServer(t)
	cert, key := apnstest.ClientCertPEM()
	c, err := apns.CreateClient("https://"+srv.addr, cert, key, false,
		apns.WithTLSConfig(&tls.Config{RootCAs: srv.pool}), apns.WithMaxAttempts(1),
		apns.WithErrorHandler(func(error) {}))
	if err != nil {
		t.Fatal(err)
	}
	stopAfter(t, c)
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	if err := c.SendNotification(context.Background(), &apns.Notification{DeviceToken: token(1), Payload: []byte(`{"aps":{"alert":"x"}}`)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the notification to end", func() bool {
		st := c.Stats()
		return st.Unsent+st.Unconfirmed+st.Delivered+st.Rejected == 1
	})
	st := c.Stats()
	t.Logf("HEADERS frames refused: %d; stats %+v", srv.headers.Load(), st)
	if st.Duplicates != 0 || st.Drops != 0 || st.Unconfirmed != 0 || st.Unsent != 1 {
		t.Errorf("a notification refused by a graceful GOAWAY on %d connections (processed nowhere): Replayed %d, "+
			"Duplicates %d, Drops %d, Unconfirmed %d, Unsent %d; want Duplicates, Drops and Unconfirmed 0, Unsent 1",
			srv.headers.Load(), st.Replayed, st.Duplicates, st.Drops, st.Unconfirmed, st.Unsent)
	}
}
