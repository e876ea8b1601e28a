package apns_test

// Attack review (helper attack20d, stop 20) of daf4e54 and 49f2b50: management connections
// whose stream is reserved under the lock (ClientConn.Reserve), a connection whose Reserve
// fails retired and a new one dialed, a state hook that sweeps retired connections, and
// management calls refused by a GOAWAY sent again.
//
// Failing on the code reviewed (defects; each passes on daf4e54^ unless noted):
//   - TestManagementCallsBeyondTheStreamLimitShareTheConnection,
//     TestSequentialManagementCallsAtAOneStreamLimitKeepOneConnection,
//     TestManagementCallAtTheStreamLimitKeepsTheOnlyConnection: conn() (channels.go) takes
//     Reserve's refusal at the server's stream limit for a broken connection: it retires a
//     healthy connection and dials another, per call beyond the limit (also for sequential
//     calls: a 201's stream still counted); where the host allows one connection, the call
//     and every later one fail.
//   - TestManagementCallsOnANewConnectionDoNotStallUntilTheWriteTimeout,
//     TestFirstManagementCallsAtOnceDoNotStallUntilTheWriteTimeout: reservations made on a
//     new connection before its SETTINGS are read exceed the server's limit, and net/http
//     deadlocks their holders (awaitOpenSlotForStreamLocked holds reqHeaderMu) until the
//     write timeout.
//   - TestManagementCallsRefusedWithRefusedStreamAreSentAgain (fails before daf4e54 too):
//     REFUSED_STREAM (never processed, RFC 9113 section 8.7) is not resent.
//
// Protection (passes): TestManagementCallsUnderGoAwaysAndDropsEndAndLeaveOneConnection,
// TestChurnedManagementConnectionsAreAllClosedOnceIdle,
// TestStopDuringManagementConnectionChurnClosesEverything,
// TestManagementCallsEndingBeforeTheirRequestReleaseTheirStream,
// TestManagementCallOnANewConnectionRefusedByGoAwayIsSentAgain.

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	apns "github.com/Kwik-messenger/apns-go"
	"github.com/Kwik-messenger/apns-go/apnstest"
)

// A management connection at the server's stream limit is healthy: net/http's RoundTrip
// waits for a stream to end before it sends the next request. channelManager.conn
// (channels.go) takes Reserve's refusal at the limit for a broken connection: it retires the
// connection (closed once idle) and dials another, and the next call beyond the limit does
// the same to that one. So N simultaneous calls to a host that allows one stream per
// connection open N connections, each closed after one call: the doc comment's "one HTTP/2
// connection, opened by the first call, replaced when it fails" becomes one TLS handshake
// per call beyond the limit.
func TestManagementCallsBeyondTheStreamLimitShareTheConnection(t *testing.T) {
	parallel(t)
	const calls = 6
	s, c := newTokenBroadcastClient(t, func(s *apnstest.HTTP2Server) { s.MaxConcurrentStreams = 1 })
	ctx := context.Background()
	if _, err := c.CreateChannel(ctx, bundle, apns.NoMessageStored); err != nil {
		t.Fatal(err) // opens the management connection; its SETTINGS (1 stream) are read
	}
	base := s.Conns()
	release := make(chan struct{})
	var releaseOnce sync.Once
	releaseAll := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(releaseAll)
	var arrived atomic.Int32
	s.RespondBroadcastFunc(func(r apnstest.BroadcastRequest) *apnstest.Response {
		if r.Op == apnstest.OpListChannels {
			arrived.Add(1)
			select {
			case <-release:
			case <-time.After(waitGuard):
			}
		}
		return nil
	})
	done := make(chan error, calls)
	for range calls {
		go func() {
			_, err := c.Channels(ctx, bundle)
			done <- err
		}()
	}
	waitFor(t, "a list call at the server", func() bool { return arrived.Load() >= 1 })
	// Give the others time to be sent (or to wait for the stream): at most 3s.
	deadline := time.Now().Add(3 * time.Second)
	for arrived.Load() < calls && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	inFlightAtServer, dialed := arrived.Load(), s.Conns()-base
	releaseAll()
	for i := range calls {
		if err := receive(t, "a list call", done); err != nil {
			t.Errorf("list call %d = %v; want the list", i, err)
		}
	}
	if dialed > 1 {
		t.Errorf("%d simultaneous management calls to a host allowing 1 stream per connection dialed %d new "+
			"connections (%d calls at the server at once); want at most 1: a connection at its stream limit "+
			"is healthy (its calls wait for a stream), not one to retire and replace",
			calls, dialed, inFlightAtServer)
	}
}

// The same with no concurrency at all: one call after another, each waiting for the
// previous one's answer. A CreateChannel answered 201 without a body returns from RoundTrip
// before net/http forgets its stream (cleanupWriteRequest runs on the request's goroutine), so
// the next call's Reserve may find the connection still at its 1-stream limit: conn() then
// retires a connection that has nothing wrong and dials a new one.
func TestSequentialManagementCallsAtAOneStreamLimitKeepOneConnection(t *testing.T) {
	parallel(t)
	const calls = 40
	s, c := newTokenBroadcastClient(t, func(s *apnstest.HTTP2Server) { s.MaxConcurrentStreams = 1 })
	ctx := context.Background()
	for i := range calls {
		if _, err := c.CreateChannel(ctx, bundle, apns.NoMessageStored); err != nil {
			t.Fatalf("CreateChannel %d = %v", i, err)
		}
	}
	if n := s.Conns(); n > 1 {
		t.Errorf("%d sequential CreateChannel calls (1 stream per connection allowed) opened %d connections; "+
			"want 1: each call began after the previous one's answer", calls, n)
	}
}

// Stress (passes when no defect shows): many simultaneous management calls on a host that
// allows two streams per connection, while the host sends GOAWAYs and drops its connections.
// Every call returns (answer or error) within its bounds, no CreateChannel the host
// processed is processed again (each POST's apns-request-id reaches the handler once: a
// stream the host discards after its GOAWAY never does), once the calls end every retired
// connection is closed, and Stop leaves nothing (stopAfter).
func TestManagementCallsUnderGoAwaysAndDropsEndAndLeaveOneConnection(t *testing.T) {
	parallel(t)
	const workers, perWorker = 16, 12
	s, c := newTokenBroadcastClient(t, func(s *apnstest.HTTP2Server) { s.MaxConcurrentStreams = 2 },
		apns.WithWriteTimeout(5*time.Second), apns.WithErrorHandler(func(error) {}))
	s.SetChannelLimit(1 << 20)
	ctx := context.Background()
	ch, err := c.CreateChannel(ctx, bundle, apns.NoMessageStored)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	posts := map[string]int{}
	s.RespondBroadcastFunc(func(r apnstest.BroadcastRequest) *apnstest.Response {
		if r.Op == apnstest.OpCreateChannel {
			mu.Lock()
			posts[r.RequestID]++
			mu.Unlock()
		}
		return &apnstest.Response{Delay: 2 * time.Millisecond}
	})
	var wg sync.WaitGroup
	stopChaos := make(chan struct{})
	chaosDone := make(chan struct{})
	go func() {
		defer close(chaosDone)
		for i := 0; ; i++ {
			select {
			case <-stopChaos:
				return
			case <-time.After(15 * time.Millisecond):
			}
			if i%3 == 2 {
				s.CloseClientConnections()
			} else {
				s.GoAway()
			}
		}
	}()
	var ok, failed atomic.Int64
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
				var err error
				switch (w + i) % 4 {
				case 0:
					_, err = c.CreateChannel(cctx, bundle, apns.NoMessageStored)
				case 1:
					_, err = c.Channels(cctx, bundle)
				case 2:
					_, err = c.Channel(cctx, bundle, ch.ID)
				case 3:
					// A call its caller gives up on at once.
					cctx2, cancel2 := context.WithTimeout(cctx, time.Millisecond)
					_, err = c.Channels(cctx2, bundle)
					cancel2()
				}
				cancel()
				if err == nil {
					ok.Add(1)
				} else {
					failed.Add(1)
				}
			}
		})
	}
	guard(t, "every management call to return", wg.Wait)
	close(stopChaos)
	receive(t, "the chaos to stop", chaosDone)
	t.Logf("%d calls answered, %d failed", ok.Load(), failed.Load())
	mu.Lock()
	for id, n := range posts {
		if n > 1 {
			t.Errorf("CreateChannel %s was processed %d times; want once", id, n)
		}
	}
	mu.Unlock()
	if _, err := c.Channels(ctx, bundle); err != nil {
		t.Errorf("a list call after the GOAWAYs = %v; want the list", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for openH2Conns(t) > 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := openH2Conns(t); n > 1 {
		t.Errorf("%d HTTP/2 connections open 5s after the last management call ended; want 1; "+
			"retired [InFlight, closed]: %v", n, apns.ManagementRetired(c))
	}
}

// Management calls on a healthy host that answers at once must not wait for their write
// timeout. conn() reserves a stream (ClientConn.Reserve) for each caller; on a connection
// just dialed, net/http has not read the server's SETTINGS yet and grants up to 100
// reservations, so the callers that waited for the dial (and, with daf4e54, every call beyond
// the stream limit dials) all reserve at once, beyond the server's limit. net/http then
// deadlocks them: the first caller takes the connection's request-header lock and waits in
// awaitOpenSlotForStreamLocked for len(streams)+streamsReserved to drop below the limit, while
// the reservations that hold it up belong to callers blocked on that very lock. Every call on
// the connection ends only at its write timeout, with "context deadline exceeded".
func TestManagementCallsOnANewConnectionDoNotStallUntilTheWriteTimeout(t *testing.T) {
	parallel(t)
	const workers, perWorker, rounds = 16, 12, 10
	const writeTimeout = 4 * time.Second
	s, c := newTokenBroadcastClient(t, func(s *apnstest.HTTP2Server) { s.MaxConcurrentStreams = 2 },
		apns.WithWriteTimeout(writeTimeout))
	s.RespondBroadcastFunc(func(r apnstest.BroadcastRequest) *apnstest.Response {
		return &apnstest.Response{Delay: 2 * time.Millisecond}
	})
	ctx := context.Background()
	for r := range rounds {
		var mu sync.Mutex
		var slow []string
		var wg sync.WaitGroup
		for range workers {
			wg.Go(func() {
				for range perWorker {
					start := time.Now()
					_, err := c.Channels(ctx, bundle)
					if took := time.Since(start); took > writeTimeout*3/4 {
						mu.Lock()
						slow = append(slow, fmt.Sprintf("%v (%v)", took.Round(time.Millisecond), err))
						mu.Unlock()
					}
				}
			})
		}
		guard(t, "the management calls", wg.Wait)
		if len(slow) > 0 {
			t.Fatalf("round %d: %d of %d list calls to a host answering in 2ms (2 streams per connection) "+
				"took more than %v (write timeout %v); %d connections dialed; first: %v",
				r, len(slow), workers*perWorker, writeTimeout*3/4, writeTimeout, s.Conns(), slow[0])
		}
	}
}

// Protection (passes unless a retired connection is left open): with one stream per
// connection, sequential CreateChannel calls replace their connection again and again (see
// TestSequentialManagementCallsAtAOneStreamLimitKeepOneConnection); every replaced one must
// be closed once idle (the state hook's sweep), leaving only the current connection.
func TestChurnedManagementConnectionsAreAllClosedOnceIdle(t *testing.T) {
	parallel(t)
	const calls = 60
	_, c := newTokenBroadcastClient(t, func(s *apnstest.HTTP2Server) { s.MaxConcurrentStreams = 1 })
	ctx := context.Background()
	for i := range calls {
		if _, err := c.CreateChannel(ctx, bundle, apns.NoMessageStored); err != nil {
			t.Fatalf("CreateChannel %d = %v", i, err)
		}
	}
	deadline := time.Now().Add(3 * time.Second)
	for openH2Conns(t) > 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := openH2Conns(t); n > 1 {
		t.Errorf("%d HTTP/2 connections open 3s after the last of %d sequential calls; want 1; "+
			"retired [InFlight, closed]: %v", n, calls, apns.ManagementRetired(c))
	}
}

// Protection (passes unless Stop races the sweeps): Stop while many management calls churn
// connections (one stream per connection: every call beyond it dials) returns, ends every
// call, closes every management connection, and leaves no goroutine (stopAfter).
func TestStopDuringManagementConnectionChurnClosesEverything(t *testing.T) {
	parallel(t)
	const workers = 12
	s, c := newTokenBroadcastClient(t, func(s *apnstest.HTTP2Server) { s.MaxConcurrentStreams = 1 },
		apns.WithWriteTimeout(3*time.Second))
	s.SetChannelLimit(1 << 20)
	s.RespondBroadcastFunc(func(r apnstest.BroadcastRequest) *apnstest.Response {
		return &apnstest.Response{Delay: time.Millisecond}
	})
	ctx := context.Background()
	var calls atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := 0; ; i++ {
				var err error
				if (w+i)%2 == 0 {
					_, err = c.CreateChannel(ctx, bundle, apns.NoMessageStored)
				} else {
					_, err = c.Channels(ctx, bundle)
				}
				calls.Add(1)
				if errors.Is(err, apns.ErrStopped) {
					return
				}
			}
		})
	}
	waitFor(t, "200 management calls", func() bool { return calls.Load() >= 200 })
	stop(t, c)
	guard(t, "every management call to end after Stop", wg.Wait)
	waitFor(t, "every management connection to close after Stop", func() bool { return openH2Conns(t) == 0 })
}

// refuseFirstStream answers a management request like the host would, except the first
// stream of each connection, which it refuses with RST_STREAM REFUSED_STREAM: RFC 9113
// section 8.7, "the stream was closed prior to any processing"; the request can be retried.
// A host at its stream limit does so (net/http's server, for streams opened beyond its
// SETTINGS_MAX_CONCURRENT_STREAMS before the client has read them). A POST is answered 201
// with an apns-channel-id, anything else 200 with an empty channel list.
func refuseFirstStream(stream uint32, post bool) ([]byte, bool) {
	if stream == 1 {
		return h2Frame(0x3, 0, stream, []byte{0, 0, 0, 0x7}), false // RST_STREAM REFUSED_STREAM
	}
	if post {
		const id = "AAAAAAAAAAAAAAAAAAAAAA=="
		hdr := []byte{0x08, 3, '2', '0', '1', 0x00, byte(len("apns-channel-id"))} // :status 201
		hdr = append(hdr, "apns-channel-id"...)
		hdr = append(append(hdr, byte(len(id))), id...)
		return h2Frame(0x1, 0x4|0x1, stream, hdr), false // HEADERS, END_HEADERS|END_STREAM
	}
	return listAnswer(stream), false
}

// listAnswer is the frames of a 200 answer with an empty channel list on stream.
func listAnswer(stream uint32) []byte {
	body := []byte(`{"channels":[]}`)
	return append(h2Frame(0x1, 0x4, stream, []byte{0x88}), h2Frame(0x0, 0x1, stream, body)...) // :status 200
}

// A management call the host refused with REFUSED_STREAM was never processed (RFC 9113
// section 8.7): like one refused by a GOAWAY (49f2b50's notSentError resend), it belongs on
// the connection again, a POST too. daf4e54 makes such refusals routine: the reservations
// granted on a new connection before its SETTINGS are read exceed the host's stream limit
// (see TestManagementCallsBeyondTheStreamLimitShareTheConnection, whose calls fail so). The
// manager passes the refusal to the caller: for a call on a connection it has just dialed
// (fresh), even a GET is not tried again.
func TestManagementCallsRefusedWithRefusedStreamAreSentAgain(t *testing.T) {
	for _, post := range []bool{false, true} {
		name := "Channels"
		if post {
			name = "CreateChannel"
		}
		t.Run(name, func(t *testing.T) {
			parallel(t)
			srv := newRawH2Server(t, func(stream uint32) ([]byte, bool) { return refuseFirstStream(stream, post) })
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
			if post {
				_, err = c.CreateChannel(ctx, bundle, apns.NoMessageStored)
			} else {
				_, err = c.Channels(ctx, bundle)
			}
			if err != nil {
				t.Errorf("%s refused with REFUSED_STREAM (never processed) = %v; want it sent again and answered "+
					"(%d requests reached the host)", name, err, srv.requests.Load())
			}
		})
	}
}

// Protection (passes unless a reservation leaks): calls that end between conn()'s
// reservation and the request (a provider token that cannot be signed, a caller's context
// already ended) give their stream back: on a host allowing 5 streams per connection, 20 of
// them leave the connection able to take a call, and no other connection is dialed.
func TestManagementCallsEndingBeforeTheirRequestReleaseTheirStream(t *testing.T) {
	parallel(t)
	s, c := newTokenBroadcastClient(t, func(s *apnstest.HTTP2Server) { s.MaxConcurrentStreams = 5 })
	ctx := context.Background()
	mend := apns.BreakProviderTokenKeyFor(c) // before the first token is signed
	for i := range 20 {
		if _, err := c.Channels(ctx, bundle); err == nil {
			t.Fatalf("list call %d with a provider token that cannot be signed succeeded", i)
		}
	}
	mend()
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	for range 20 {
		c.Channels(canceled, bundle)
	}
	for i := range 10 {
		if _, err := c.Channels(ctx, bundle); err != nil {
			t.Fatalf("list call %d after the failed ones = %v", i, err)
		}
	}
	if n := s.Conns(); n != 1 {
		t.Errorf("%d connections dialed; want 1: the failed calls' reservations were released", n)
	}
}

// goAwayNewConnsServer is a minimal HTTP/2 server over TLS 1.2 whose first goAways
// connections are refused as a host that is shutting down refuses them: SETTINGS and at once
// a graceful GOAWAY (NO_ERROR, last stream ID 0: nothing processed), then it reads until the
// client closes. TLS 1.2 lets the server write them right behind its Finished, so that the
// client may read the GOAWAY before its first request. Later connections answer each request
// (a list call) with 200 and an empty list. conns counts connections accepted.
type goAwayNewConnsServer struct {
	addr  string
	pool  *x509.CertPool
	conns atomic.Int64
}

func newGoAwayNewConnsServer(t *testing.T, goAways int64) *goAwayNewConnsServer {
	t.Helper()
	srv := &goAwayNewConnsServer{}
	normal := &rawH2Server{answer: func(stream uint32) ([]byte, bool) { return listAnswer(stream), false }}
	tls12 := func(cfg *tls.Config) {
		cfg.MaxVersion = tls.VersionTLS12
		cfg.CipherSuites = []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}
	}
	srv.addr, srv.pool = rawTLSServer(t, tls12, func(n int64, tc *tls.Conn) {
		srv.conns.Add(1)
		if n > goAways {
			normal.serve(tc)
			return
		}
		defer tc.Close()
		if tc.Handshake() != nil {
			return
		}
		tc.Write(append(h2Frame(0x4, 0, 0, nil), goAwayFrame(0, 0, "")...))
		io.Copy(io.Discard, tc)
	})
	return srv
}

// Protection (passes): a management host that is shutting down refuses a new connection with
// a graceful GOAWAY before any request: nothing was processed, and the call belongs on another
// connection (49f2b50's resend of a call refused by a GOAWAY). Not seen to fail, but note:
// when the GOAWAY is read before conn() reserves its stream on the connection it has just
// dialed, Reserve fails and conn() (channels.go, the dial path) closes it and returns
// "apns: connecting to ...: connection is unavailable", which manage() passes to the caller
// without trying a new connection; before daf4e54 the request went to RoundTrip, was refused
// as "client conn not usable", and was sent again.
func TestManagementCallOnANewConnectionRefusedByGoAwayIsSentAgain(t *testing.T) {
	parallel(t)
	const calls = 20
	for i := range calls {
		srv := newGoAwayNewConnsServer(t, 2)
		cert, key := apnstest.ClientCertPEM()
		c, err := apns.CreateClient("https://"+srv.addr, cert, key, false,
			apns.WithTLSConfig(&tls.Config{RootCAs: srv.pool}), apns.WithBroadcastManagementURL("https://"+srv.addr),
			apns.WithErrorHandler(func(error) {}))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), waitGuard)
		_, err = c.Channels(ctx, bundle)
		cancel()
		stop(t, c)
		if err != nil {
			t.Fatalf("call %d: a list call whose first 2 connections were refused by a graceful GOAWAY before any "+
				"request = %v after %d connections; want it sent on a new connection (%d resends allowed)",
				i, err, srv.conns.Load(), 3)
		}
	}
}

// oneConnForwarder relays the first TCP connection it accepts to addr and closes every later
// one at once: a management host (or the way to it) that allows a client one connection.
// It returns its address.
func oneConnForwarder(t *testing.T, addr string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for n := 0; ; n++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if n > 0 {
				c.Close()
				continue
			}
			up, err := net.Dial("tcp", addr)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, up)
			mu.Unlock()
			wg.Go(func() { io.Copy(up, c); up.Close() })
			wg.Go(func() { io.Copy(c, up); c.Close() })
		}
	})
	return ln.Addr().String()
}

// A second call while the management connection is at the host's stream limit must wait for
// a stream, not give up the connection. conn() (channels.go) retires the healthy connection
// when Reserve refuses at the limit and dials another; where the host allows one connection,
// that dial fails, the call fails ("apns: connecting to ..."), and the retired connection is
// closed once its call ends: every later call fails too, although the host never failed.
func TestManagementCallAtTheStreamLimitKeepsTheOnlyConnection(t *testing.T) {
	parallel(t)
	key, p8 := apns.NewTestAuthKey(t)
	s := newH2Server(t, func(s *apnstest.HTTP2Server) {
		s.Keys = map[string]*ecdsa.PublicKey{"KEY1234567": &key.PublicKey}
		s.MaxConcurrentStreams = 1
	})
	fwd := oneConnForwarder(t, s.Addr)
	c, err := apns.CreateTokenClient(s.URL, p8, "KEY1234567", "TEAM123456", bundle,
		apns.WithTLSConfig(s.ClientTLSConfig()), apns.WithBroadcastManagementURL("https://"+fwd))
	if err != nil {
		t.Fatal(err)
	}
	stopAfter(t, c)
	ctx := context.Background()
	if _, err := c.Channels(ctx, bundle); err != nil {
		t.Fatal(err) // opens the one management connection; its SETTINGS (1 stream) are read
	}
	arrived, release := make(chan struct{}), make(chan struct{})
	var once, releaseOnce sync.Once
	releaseAll := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(releaseAll)
	s.RespondBroadcastFunc(func(r apnstest.BroadcastRequest) *apnstest.Response {
		if r.Op == apnstest.OpListChannels {
			first := false
			once.Do(func() { first = true; close(arrived) })
			if first {
				select {
				case <-release:
				case <-time.After(waitGuard):
				}
			}
		}
		return nil
	})
	aDone := make(chan error, 1)
	go func() {
		_, err := c.Channels(ctx, bundle)
		aDone <- err
	}()
	receive(t, "call A at the server", arrived)
	bDone := make(chan error, 1)
	go func() {
		_, err := c.Channels(ctx, bundle)
		bDone <- err
	}()
	// B waits for A's stream, or (the defect) fails at once; release A after a moment.
	var bErr error
	bEnded := false
	select {
	case bErr = <-bDone:
		bEnded = true
	case <-time.After(500 * time.Millisecond):
	}
	releaseAll()
	if err := receive(t, "call A", aDone); err != nil {
		t.Errorf("call A = %v; want the list", err)
	}
	if !bEnded {
		bErr = receive(t, "call B", bDone)
	}
	if bErr != nil {
		t.Errorf("call B, made while call A held the connection's one stream = %v; want the list once A ended "+
			"(the connection is healthy, and the host allows one connection)", bErr)
	}
	if _, err := c.Channels(ctx, bundle); err != nil {
		t.Errorf("a later call = %v; want the list: the host and its one connection never failed", err)
	}
}

// The same stall at a client's first management calls: 8 calls at once on a client that has
// no management connection yet, to a host allowing 1 stream per connection. The callers that
// waited for the first dial reserve on the new connection before its SETTINGS are read
// (net/http assumes 100 streams until then); the first to send waits in
// awaitOpenSlotForStreamLocked, holding the connection's request-header lock, for the others'
// reservations to go away, and they wait for that lock: the calls end at their write timeout.
func TestFirstManagementCallsAtOnceDoNotStallUntilTheWriteTimeout(t *testing.T) {
	parallel(t)
	const calls, rounds = 8, 12
	const writeTimeout = 3 * time.Second
	for r := range rounds {
		s, c := newTokenBroadcastClient(t, func(s *apnstest.HTTP2Server) { s.MaxConcurrentStreams = 1 },
			apns.WithWriteTimeout(writeTimeout))
		var mu sync.Mutex
		var slow []string
		var wg sync.WaitGroup
		for range calls {
			wg.Go(func() {
				start := time.Now()
				_, err := c.Channels(context.Background(), bundle)
				if took := time.Since(start); took > writeTimeout*2/3 {
					mu.Lock()
					slow = append(slow, fmt.Sprintf("%v (%v)", took.Round(time.Millisecond), err))
					mu.Unlock()
				}
			})
		}
		guard(t, "the management calls", wg.Wait)
		stop(t, c)
		if len(slow) > 0 {
			t.Fatalf("round %d: %d of %d first list calls at once to a host answering at once (1 stream per "+
				"connection) took more than %v (write timeout %v); %d connections dialed; first: %v",
				r, len(slow), calls, writeTimeout*2/3, writeTimeout, s.Conns(), slow[0])
		}
	}
}
