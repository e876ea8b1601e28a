package apns_test

// Attack review (helper attack20c, stop 20) of 49f2b50: management calls refused by a GOAWAY
// sent again on a new connection, a replaced management connection closed by the last call's
// sweep, and a notification refused on every connection ending Unsent.
//
// Failing on the code reviewed (defects):
//   - TestCreateChannelAnsweredByGoAwayWithDebugDataIsNotSentAgain and
//     TestNotificationReceivedBeforeGoAwayWithDebugDataIsNotUnsent: notSentByNetHTTP
//     (h2conn.go) matches net/http's refusal texts anywhere in err.Error(), which carries the
//     server's GOAWAY debug data: a request the server says it received (stream ID at or
//     below the GOAWAY's last stream ID) is taken for one never sent.
//   - TestReplacedManagementConnectionIsClosedAfterALastCallIsCanceled (fails every run) and
//     TestReplacedManagementConnectionIsClosedAfterALastCreateChannel (fails under -race,
//     rarely without): the sweep at the end of manage() runs before net/http has forgotten
//     the call's stream (a canceled call, and a POST answered without a body, return before
//     net/http's cleanupWriteRequest), the management connection has no state hook, and
//     nothing sweeps later: the retired connection stays open until the next call or Stop.
//
// Protection (passes): TestCreateChannelRefusedByGoAwayEverywhereIsBounded.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	apns "github.com/Kwik-messenger/apns-go"
	"github.com/Kwik-messenger/apns-go/apnstest"
)

// goAwayDebug is GOAWAY debug data a server may send: opaque text (RFC 9113 section 6.8),
// here the error of an HTTP/2 proxy's own upstream connection, which names net/http's
// refusal.
const goAwayDebug = "upstream: http2: client conn not usable"

// rawH2Server is a minimal HTTP/2 server over TLS. On the end of each request (END_STREAM
// from the client) it calls answer, which returns the frames to write; close tells it to end
// the connection after them (a TLS close_notify, then it reads until the client closes).
// requests counts the requests it received whole.
type rawH2Server struct {
	addr     string
	pool     *x509.CertPool
	requests atomic.Int64
	answer   func(stream uint32) (frames []byte, close bool)
}

func h2Frame(typ, flags byte, stream uint32, payload []byte) []byte {
	f := []byte{byte(len(payload) >> 16), byte(len(payload) >> 8), byte(len(payload)), typ, flags, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(f[5:], stream)
	return append(f, payload...)
}

// goAwayFrame is a GOAWAY with the given last stream ID, error code and debug data.
func goAwayFrame(last, code uint32, debug string) []byte {
	p := make([]byte, 8, 8+len(debug))
	binary.BigEndian.PutUint32(p, last)
	binary.BigEndian.PutUint32(p[4:], code)
	return h2Frame(0x7, 0, 0, append(p, debug...))
}

func newRawH2Server(t *testing.T, answer func(stream uint32) ([]byte, bool)) *rawH2Server {
	t.Helper()
	srv := &rawH2Server{answer: answer}
	srv.addr, srv.pool = rawTLSServer(t, nil, func(_ int64, c *tls.Conn) { srv.serve(c) })
	return srv
}

func (srv *rawH2Server) serve(c *tls.Conn) {
	defer c.Close()
	if _, err := c.Write(h2Frame(0x4, 0, 0, nil)); err != nil { // SETTINGS
		return
	}
	preface := make([]byte, len("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"))
	if _, err := io.ReadFull(c, preface); err != nil {
		return
	}
	closing := false
	hdr := make([]byte, 9)
	for {
		if _, err := io.ReadFull(c, hdr); err != nil {
			return
		}
		payload := make([]byte, int(hdr[0])<<16|int(hdr[1])<<8|int(hdr[2]))
		if _, err := io.ReadFull(c, payload); err != nil {
			return
		}
		if closing {
			continue // read until the client closes
		}
		typ, flags, stream := hdr[3], hdr[4], binary.BigEndian.Uint32(hdr[5:])&0x7fffffff
		var out []byte
		switch {
		case typ == 0x4 && flags&0x1 == 0: // SETTINGS: ACK
			out = h2Frame(0x4, 0x1, 0, nil)
		case typ == 0x6 && flags&0x1 == 0: // PING: ACK
			out = h2Frame(0x6, 0x1, 0, payload)
		case (typ == 0x1 || typ == 0x0) && flags&0x1 != 0: // HEADERS or DATA with END_STREAM: a whole request
			srv.requests.Add(1)
			out, closing = srv.answer(stream)
		}
		if out != nil {
			if _, err := c.Write(out); err != nil {
				return
			}
		}
		if closing {
			c.CloseWrite() // close_notify: the client reads EOF after the frames
		}
	}
}

// goAwayAfterReceiving answers each request with a GOAWAY that says the server received it
// (last stream ID = its stream) and then closes the connection: the request may have been
// processed (RFC 9113 section 6.8). The GOAWAY carries goAwayDebug.
func goAwayAfterReceiving(stream uint32) ([]byte, bool) {
	return goAwayFrame(stream, 0x2 /* INTERNAL_ERROR */, goAwayDebug), true
}

// A POST that the server received (the GOAWAY's last stream ID is the POST's) may have created
// the channel: it must not be sent again (the contract: a POST that may have been processed
// is never silently sent twice). net/http fails it with http2.GoAwayError, whose text holds the
// server's debug data; notSentByNetHTTP (h2conn.go) looks for its refusal texts anywhere in
// that text, so a debug string that names one turns the POST into "never sent", and
// manage() (channels.go, the notSentError resend) sends it three more times.
func TestCreateChannelAnsweredByGoAwayWithDebugDataIsNotSentAgain(t *testing.T) {
	parallel(t)
	srv := newRawH2Server(t, goAwayAfterReceiving)
	cert, key := apnstest.ClientCertPEM()
	c, err := apns.CreateClient("https://"+srv.addr, cert, key, false,
		apns.WithTLSConfig(&tls.Config{RootCAs: srv.pool}), apns.WithBroadcastManagementURL("https://"+srv.addr),
		apns.WithErrorHandler(func(error) {}))
	if err != nil {
		t.Fatal(err)
	}
	stopAfter(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), waitGuard)
	defer cancel()
	_, err = c.CreateChannel(ctx, bundle, apns.NoMessageStored)
	if err == nil {
		t.Fatal("CreateChannel answered by a GOAWAY and a closed connection succeeded")
	}
	if n := srv.requests.Load(); n != 1 {
		t.Errorf("CreateChannel (POST) reached the server %d times; want 1: the server's GOAWAY (last stream ID "+
			"= the POST's) says it received it, and only its debug data %q names net/http's refusal; error: %v",
			n, goAwayDebug, err)
	}
}

// The same for a notification: one the gateway received (stream ID at or below the GOAWAY's
// last stream ID) may have been delivered, so it must not end Unsent (the contract), and each
// extra arrival counts as a duplicate. The debug data turns it into a refusal: resent up to
// goAwayResends times as "never sent", and (49f2b50, h2transport.go roundTrip) Unsent.
func TestNotificationReceivedBeforeGoAwayWithDebugDataIsNotUnsent(t *testing.T) {
	parallel(t)
	srv := newRawH2Server(t, goAwayAfterReceiving)
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
	arrivals := srv.requests.Load()
	if st.Unsent != 0 || st.Duplicates < uint64(arrivals-1) {
		t.Errorf("a notification the gateway received %d times (each GOAWAY's last stream ID is its stream; debug %q): "+
			"Unsent %d, Unconfirmed %d, Duplicates %d, Replayed %d; want Unsent 0 (it may have been delivered) and "+
			"Duplicates >= %d", arrivals, goAwayDebug, st.Unsent, st.Unconfirmed, st.Duplicates, st.Replayed, arrivals-1)
	}
}

// Protection (passes): a management host that GOAWAYs every stream (last stream ID below it:
// never processed) gets a CreateChannel at most 1+goAwayResends times, one connection each,
// the call ends with an error well within its bounds, and Stop closes every connection.
func TestCreateChannelRefusedByGoAwayEverywhereIsBounded(t *testing.T) {
	parallel(t)
	srv := newGoAwayEveryStreamServer(t)
	cert, key := apnstest.ClientCertPEM()
	c, err := apns.CreateClient("https://"+srv.addr, cert, key, false,
		apns.WithTLSConfig(&tls.Config{RootCAs: srv.pool}), apns.WithBroadcastManagementURL("https://"+srv.addr),
		apns.WithErrorHandler(func(error) {}))
	if err != nil {
		t.Fatal(err)
	}
	stopAfter(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), waitGuard)
	defer cancel()
	start := time.Now()
	_, err = c.CreateChannel(ctx, bundle, apns.NoMessageStored)
	took := time.Since(start)
	if err == nil {
		t.Fatal("CreateChannel refused by every connection succeeded")
	}
	if errors.Is(err, context.DeadlineExceeded) || took > 10*time.Second {
		t.Errorf("CreateChannel refused by every connection took %v (%v); want a quick error", took, err)
	}
	if n := srv.headers.Load(); n < 1 || n > 4 {
		t.Errorf("CreateChannel was sent %d times; want 1 to 4 (1 + goAwayResends), each never processed", n)
	}
	stop(t, c)
	waitFor(t, "the management connections to close after Stop", func() bool { return openH2Conns(t) == 0 })
}

// A replaced management connection must be closed once its last call ends, even when no other
// call comes. The sweep deferred in manage() (channels.go) looks at InFlight right when the
// call returns, but net/http forgets a stream on the request's own goroutine (doRequest's
// cleanupWriteRequest), which for a POST answered without a body (CreateChannel's 201) may
// run after RoundTrip has returned: the sweep then finds the call still in flight, keeps the
// connection, and nothing sweeps again until the next management call or Stop.
//
// Each round: a list call B on connection X outlasts the write timeout, is lost on a reused
// connection and retried with X avoided (replace), while CreateChannel P, sent on X after B,
// waits at the server: X is retired with P in flight; then P is answered, and is X's last call.
func TestReplacedManagementConnectionIsClosedAfterALastCreateChannel(t *testing.T) {
	parallel(t)
	const writeTimeout = 1500 * time.Millisecond
	const rounds = 6
	s, c := newTokenBroadcastClient(t, nil, apns.WithWriteTimeout(writeTimeout))
	ctx := context.Background()
	if _, err := c.CreateChannel(ctx, bundle, apns.NoMessageStored); err != nil {
		t.Fatal(err) // opens X
	}
	type round struct {
		pArrived, bArrived, bRetried, releaseP chan struct{}
	}
	var mu sync.Mutex
	var cur *round
	var creates, lists int
	s.RespondBroadcastFunc(func(r apnstest.BroadcastRequest) *apnstest.Response {
		mu.Lock()
		rd := cur
		var hold bool
		switch r.Op {
		case apnstest.OpCreateChannel:
			creates++
			if creates == 1 {
				close(rd.pArrived)
				hold = true
			}
		case apnstest.OpListChannels:
			lists++
			switch lists {
			case 1:
				close(rd.bArrived)
				mu.Unlock()
				return &apnstest.Response{Delay: time.Hour} // ends when the client resets the stream
			case 2:
				close(rd.bRetried)
			}
		}
		mu.Unlock()
		if hold {
			select {
			case <-rd.releaseP:
			case <-time.After(waitGuard):
			}
		}
		return nil
	})
	leaked := 0
	for i := range rounds {
		rd := &round{make(chan struct{}), make(chan struct{}), make(chan struct{}), make(chan struct{})}
		mu.Lock()
		cur, creates, lists = rd, 0, 0
		mu.Unlock()
		pDone, bDone := make(chan error, 1), make(chan error, 1)
		go func() {
			_, err := c.Channels(ctx, bundle)
			bDone <- err
		}()
		receive(t, "B at the server", rd.bArrived)
		time.Sleep(writeTimeout / 3) // P's write timeout ends well after B's
		go func() {
			_, err := c.CreateChannel(ctx, bundle, apns.NoMessageStored)
			pDone <- err
		}()
		receive(t, "P at the server", rd.pArrived)
		receive(t, "B's retry at the server", rd.bRetried) // X retired by now, P still on it
		if err := receive(t, "call B", bDone); err != nil {
			close(rd.releaseP)
			t.Fatalf("round %d: call B = %v; want its retry's answer", i, err)
		}
		close(rd.releaseP)
		if err := receive(t, "call P", pDone); err != nil {
			t.Fatalf("round %d: CreateChannel P = %v; want its answer", i, err)
		}
		// Idle now: the retired X carries nothing. Only the current connection may stay.
		deadline := time.Now().Add(2 * time.Second)
		for openH2Conns(t) > 1 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if n := openH2Conns(t); n > 1 {
			leaked++
			t.Errorf("round %d: %d HTTP/2 connections open 2s after the replaced management connection's last call "+
				"(a CreateChannel) ended on an idle client; want 1; retired [InFlight, closed]: %v",
				i, n, apns.ManagementRetired(c))
			break
		}
	}
	if leaked == 0 {
		t.Logf("%d rounds: every replaced connection was closed", rounds)
	}
}

// The same when the retired connection's last call ends because its caller gave up: a call
// whose ctx ends returns at once (net/http's RoundTrip returns on ctx.Done), while net/http
// resets and forgets its stream afterwards on the request's goroutine (cleanupWriteRequest),
// so the sweep deferred in manage() finds it still in flight, and the retired connection stays
// open on an idle client until the next management call or Stop.
//
// Each round: a list call B on connection X outlasts the write timeout and is retried with X
// avoided (X retired), while a ReadChannel G, sent on X after B, waits at the server; then
// G's caller cancels it, and G is X's last call.
func TestReplacedManagementConnectionIsClosedAfterALastCallIsCanceled(t *testing.T) {
	parallel(t)
	const writeTimeout = 1500 * time.Millisecond
	const rounds = 4
	s, c := newTokenBroadcastClient(t, nil, apns.WithWriteTimeout(writeTimeout))
	ctx := context.Background()
	ch, err := c.CreateChannel(ctx, bundle, apns.NoMessageStored)
	if err != nil {
		t.Fatal(err) // opens X
	}
	type round struct {
		gArrived, bArrived, bRetried chan struct{}
	}
	var mu sync.Mutex
	var cur *round
	var reads, lists int
	s.RespondBroadcastFunc(func(r apnstest.BroadcastRequest) *apnstest.Response {
		mu.Lock()
		defer mu.Unlock()
		rd := cur
		switch r.Op {
		case apnstest.OpReadChannel:
			if reads++; reads == 1 {
				close(rd.gArrived)
				return &apnstest.Response{Delay: time.Hour} // ends when the client resets the stream
			}
		case apnstest.OpListChannels:
			switch lists++; lists {
			case 1:
				close(rd.bArrived)
				return &apnstest.Response{Delay: time.Hour}
			case 2:
				close(rd.bRetried)
			}
		}
		return nil
	})
	for i := range rounds {
		rd := &round{make(chan struct{}), make(chan struct{}), make(chan struct{})}
		mu.Lock()
		cur, reads, lists = rd, 0, 0
		mu.Unlock()
		gDone, bDone := make(chan error, 1), make(chan error, 1)
		go func() {
			_, err := c.Channels(ctx, bundle)
			bDone <- err
		}()
		receive(t, "B at the server", rd.bArrived)
		time.Sleep(writeTimeout / 3) // G's write timeout ends well after B's
		gctx, gcancel := context.WithCancel(ctx)
		defer gcancel()
		go func() {
			_, err := c.Channel(gctx, bundle, ch.ID)
			gDone <- err
		}()
		receive(t, "G at the server", rd.gArrived)
		receive(t, "B's retry at the server", rd.bRetried) // X retired by now, G still on it
		if err := receive(t, "call B", bDone); err != nil {
			t.Fatalf("round %d: call B = %v; want its retry's answer", i, err)
		}
		gcancel()
		if err := receive(t, "call G", gDone); !errors.Is(err, context.Canceled) {
			t.Fatalf("round %d: canceled call G = %v; want context.Canceled", i, err)
		}
		deadline := time.Now().Add(2 * time.Second)
		for openH2Conns(t) > 1 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if n := openH2Conns(t); n > 1 {
			t.Fatalf("round %d: %d HTTP/2 connections open 2s after the replaced management connection's last call "+
				"(canceled by its caller) ended on an idle client; want 1; retired [InFlight, closed]: %v",
				i, n, apns.ManagementRetired(c))
		}
	}
}
