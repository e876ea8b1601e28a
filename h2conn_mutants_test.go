package apns_test

// Tests written from a mutation-testing run of h2conn.go (gremlins v0.6.0 on the lines changed
// since 0f1afaf): each kills a mutant that lived, and names it.
//
// Several of them need a gateway that sends GOAWAY and then keeps the connection open without
// a word: apnstest's GoAway closes the connection right after, and net/http's server a second
// later, so the pool's own handling of a connection that takes no more requests is hidden
// behind the server's close. holdServer is that gateway: a TLS front on loopback that hands
// each connection, decrypted, to a net/http HTTP/2 server of its own (h2c over a pipe); on
// goAwayAndHold the server of one connection shuts down gracefully (GOAWAY, NO_ERROR) and
// the front keeps the client's side open, reads what the client sends and answers nothing.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"io"
	"math/big"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	apns "github.com/Kwik-messenger/apns-go"
	"github.com/Kwik-messenger/apns-go/apnstest"
)

// holdServer is an HTTP/2 gateway whose connections can be made to send GOAWAY and then
// stay open and silent; see the file's comment.
type holdServer struct {
	t    *testing.T
	ln   net.Listener
	pool *x509.CertPool
	url  string

	latency time.Duration // before each answer
	streams int           // SETTINGS_MAX_CONCURRENT_STREAMS; 0: net/http's default

	mu      sync.Mutex
	conns   []*holdConn
	tokens  map[string]int // hex token -> connection (1-based) that answered it
	stall   bool           // requests are never answered from now on
	stalled map[int]int    // connection (1-based) -> requests stalled on it
	wg      sync.WaitGroup
}

// holdConn is one client connection of a holdServer.
type holdConn struct {
	tc    *tls.Conn
	srv   *http.Server
	toSrv net.Conn      // the front's end of the pipe to srv
	acked chan struct{} // closed when the client acknowledged the front's PING
	ready chan struct{} // closed when the client acknowledged the server's SETTINGS

	mu       sync.Mutex // guards the fields below and the writes to tc
	held     bool       // the front has taken over: srv's frames are dropped
	lastSeen uint32     // the highest stream the client opened
	opened   []uint32   // the streams the client opened, in order
}

// holdPing is the PING the front sends after the GOAWAY: its ACK tells that the client has
// read the GOAWAY (a connection reads its frames in order).
var holdPing = [8]byte{'h', 'o', 'l', 'd', 'p', 'i', 'n', 'g'}

// newHoldServer starts a holdServer; its server answers each request after latency, and
// announces streams concurrent streams (0: net/http's default).
func newHoldServer(t *testing.T, latency time.Duration, streams int) *holdServer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "hold"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		NextProtos:   []string{"h2"},
	})
	if err != nil {
		t.Fatal(err)
	}
	s := &holdServer{t: t, ln: ln, pool: pool, url: "https://" + ln.Addr().String(), latency: latency, streams: streams, tokens: map[string]int{}, stalled: map[int]int{}}
	t.Cleanup(s.close)
	s.wg.Add(1)
	go s.accept()
	return s
}

func (s *holdServer) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		tc := c.(*tls.Conn)
		front, back := net.Pipe()
		hc := &holdConn{tc: tc, toSrv: front, acked: make(chan struct{}), ready: make(chan struct{})}
		s.mu.Lock()
		s.conns = append(s.conns, hc)
		n := len(s.conns)
		s.mu.Unlock()
		var protocols http.Protocols
		protocols.SetUnencryptedHTTP2(true)
		hc.srv = &http.Server{
			Protocols: &protocols,
			HTTP2:     &http.HTTP2Config{MaxConcurrentStreams: s.streams},
			Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				s.mu.Lock()
				if s.stall {
					s.stalled[n]++
					s.mu.Unlock()
					<-r.Context().Done()
					return
				}
				s.mu.Unlock()
				time.Sleep(s.latency)
				s.mu.Lock()
				s.tokens[strings.TrimPrefix(r.URL.Path, "/3/device/")] = n
				s.mu.Unlock()
				w.Header().Set("apns-id", r.Header.Get("apns-id"))
				w.WriteHeader(http.StatusOK)
			}),
		}
		s.wg.Add(3)
		go func() {
			defer s.wg.Done()
			hc.srv.Serve(&pipeListener{conn: back, addr: s.ln.Addr(), closed: make(chan struct{})})
		}()
		go func() { // server to client, frame by frame, until the front takes over
			defer s.wg.Done()
			hc.readServer()
		}()
		go func() { // client to server, frame by frame, looking for the ACK of holdPing
			defer s.wg.Done()
			hc.readClient()
		}()
	}
}

// readFrame reads one HTTP/2 frame, header included.
func readFrame(r io.Reader) ([]byte, error) {
	var hdr [9]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := int(hdr[0])<<16 | int(hdr[1])<<8 | int(hdr[2])
	frame := make([]byte, 9+n)
	copy(frame, hdr[:])
	_, err := io.ReadFull(r, frame[9:])
	return frame, err
}

// readServer forwards the server's frames to the client until the front takes over.
func (hc *holdConn) readServer() {
	for {
		frame, err := readFrame(hc.toSrv)
		if err != nil {
			return
		}
		hc.mu.Lock()
		if !hc.held {
			_, err = hc.tc.Write(frame)
		}
		hc.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// readClient forwards the client's frames to the server until the front takes over, and
// reads them after; it closes acked at the ACK of holdPing.
func (hc *holdConn) readClient() {
	preface := make([]byte, 24)
	if _, err := io.ReadFull(hc.tc, preface); err != nil {
		return
	}
	hc.toSrv.Write(preface)
	settled := false
	for {
		frame, err := readFrame(hc.tc)
		if err != nil {
			return
		}
		typ, flags, n := frame[3], frame[4], len(frame)-9
		if typ == 0x6 && flags&0x1 != 0 && n == 8 && [8]byte(frame[9:]) == holdPing {
			close(hc.acked)
			continue
		}
		hc.mu.Lock()
		held := hc.held
		if typ == 0x1 {
			id := binary.BigEndian.Uint32(frame[5:9]) & 0x7fffffff
			hc.lastSeen = max(hc.lastSeen, id)
			hc.opened = append(hc.opened, id)
		}
		hc.mu.Unlock()
		if !held {
			hc.toSrv.Write(frame)
		}
		if typ == 0x4 && flags&0x1 != 0 && !settled {
			settled = true
			close(hc.ready)
		}
	}
}

// goAwayAndHold has connection i (1-based) send GOAWAY (NO_ERROR, naming the last stream the
// client opened) and then stay open and silent, and returns once the client has read the
// GOAWAY. The connection's requests must have been answered.
func (s *holdServer) goAwayAndHold(i int) { s.t.Helper(); s.goAwayAndHoldAt(i, 0) }

// goAwayAndHoldAt is goAwayAndHold with a GOAWAY that names as the last stream the one
// opened back streams before the last (0: the last): the client's later streams were not
// taken, and it may send them again elsewhere.
func (s *holdServer) goAwayAndHoldAt(i, back int) {
	s.t.Helper()
	s.mu.Lock()
	if i > len(s.conns) {
		s.mu.Unlock()
		s.t.Fatalf("goAwayAndHold(%d): the server has %d connections", i, len(s.conns))
	}
	hc := s.conns[i-1]
	s.mu.Unlock()
	// Not before the SETTINGS exchange: a GOAWAY before the server's SETTINGS is a protocol
	// error, after which the client closes the connection.
	receive(s.t, "the client's ACK of the server's SETTINGS", hc.ready)
	hc.mu.Lock()
	hc.held = true
	goAway := []byte{0, 0, 8, 0x7, 0, 0, 0, 0, 0}
	last := hc.lastSeen
	if back > 0 {
		last = hc.opened[len(hc.opened)-1-back]
	}
	goAway = binary.BigEndian.AppendUint32(goAway, last)
	goAway = binary.BigEndian.AppendUint32(goAway, 0) // NO_ERROR
	ping := append([]byte{0, 0, 8, 0x6, 0, 0, 0, 0, 0}, holdPing[:]...)
	_, err := hc.tc.Write(append(goAway, ping...))
	hc.mu.Unlock()
	if err != nil {
		s.t.Fatalf("writing GOAWAY and PING: %v", err)
	}
	receive(s.t, "the client's ACK of the PING sent after the GOAWAY", hc.acked)
}

// connOf returns the connection (1-based) that answered the notification of token tok, 0 if
// none did.
func (s *holdServer) connOf(tok string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tokens[tok]
}

// stallAll makes the server answer no more requests; they wait until their stream or
// connection ends.
func (s *holdServer) stallAll() {
	s.mu.Lock()
	s.stall = true
	s.mu.Unlock()
}

// stalledOn returns how many requests are stalled on connection i (1-based).
func (s *holdServer) stalledOn(i int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stalled[i]
}

// carried returns how many requests connection i (1-based) answered.
func (s *holdServer) carried(i int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, k := range s.tokens {
		if k == i {
			n++
		}
	}
	return n
}

// closeConn closes connection i (1-based) at once, as a gateway that drops it.
func (s *holdServer) closeConn(i int) {
	s.mu.Lock()
	hc := s.conns[i-1]
	s.mu.Unlock()
	hc.tc.NetConn().Close()
}

func (s *holdServer) accepted() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

func (s *holdServer) close() {
	s.ln.Close()
	s.mu.Lock()
	conns := s.conns
	s.mu.Unlock()
	for _, hc := range conns {
		hc.srv.Close()
		hc.tc.Close()
	}
	s.wg.Wait()
}

// client returns a certificate client of s, stopped when the test ends.
func (s *holdServer) client(t *testing.T, opts ...apns.Option) *apns.Client {
	t.Helper()
	cert, key := apnstest.ClientCertPEM()
	opts = append([]apns.Option{apns.WithTLSConfig(&tls.Config{RootCAs: s.pool}), apns.WithErrorHandler(func(error) {})}, opts...)
	c, err := apns.CreateClient(s.url, cert, key, false, opts...)
	if err != nil {
		t.Fatal(err)
	}
	stopAfter(t, c)
	return c
}

// pipeListener hands one connection to an http.Server, then blocks until closed.
type pipeListener struct {
	conn   net.Conn
	addr   net.Addr
	once   sync.Once
	mu     sync.Mutex
	given  bool
	closed chan struct{}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	if !l.given {
		l.given = true
		l.mu.Unlock()
		return l.conn, nil
	}
	l.mu.Unlock()
	<-l.closed
	return nil, net.ErrClosed
}

func (l *pipeListener) Close() error   { l.once.Do(func() { close(l.closed) }); return nil }
func (l *pipeListener) Addr() net.Addr { return l.addr }

// pushWithin pushes notification i with a deadline of d and returns Push's error, failing the
// test if Push outlives its deadline by far (a Push that does not watch its context).
func pushWithin(t *testing.T, c *apns.Client, i int, d time.Duration) error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		resp, err := c.Push(ctx, &apns.Notification{DeviceToken: token(i), Payload: []byte(`{"aps":{"alert":"x"}}`)})
		if err == nil && !resp.Sent() {
			err = &apns.Rejection{StatusCode: resp.StatusCode, Reason: resp.Reason}
		}
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(d + 5*time.Second):
		t.Fatalf("Push with a deadline of %v has not returned %v after it", d, 5*time.Second)
		return nil
	}
}

// A new connection that receives GOAWAY before its first request takes no request: the next
// Push goes on a new connection at once. Kills h2conn.go:259 `avail := -1` mutated to
// `avail := 1` (INVERT_NEGATIVES, and ARITHMETIC_BASE's `+1`): a cold connection then skips
// the check for a dead connection and is taken as having room, its Reserve fails, and the
// reservation spins on it for as long as the server keeps it open, ignoring Push's deadline.
func TestMutantColdConnectionAfterGoAwayIsReplaced(t *testing.T) {
	parallel(t)
	s := newHoldServer(t, 0, 0)
	c := s.client(t)
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	s.goAwayAndHold(1)
	if err := pushWithin(t, c, 1, 5*time.Second); err != nil {
		t.Fatalf("Push after a GOAWAY on the connection's first request's eve: %v; want it sent on a new connection", err)
	}
	if got := s.connOf(token(1)); got != 2 {
		t.Errorf("the notification went on connection %d; want 2 (%d accepted)", got, s.accepted())
	}
}

// A connection past its first request that receives GOAWAY while idle takes no more requests:
// the next Push goes on a new connection at once, whether or not the server closes the old
// one. Kills h2conn.go:267 `avail <= 0` mutated to `avail < 0` (CONDITIONALS_BOUNDARY): a
// warm connection that reports no free stream is then never looked at as dead, and the Push
// waits for a stream that never comes.
func TestMutantWarmConnectionAfterGoAwayIsReplaced(t *testing.T) {
	parallel(t)
	s := newHoldServer(t, 0, 0)
	c := s.client(t)
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	for i := range 3 { // past the connection's first request
		if err := pushWithin(t, c, i, 5*time.Second); err != nil {
			t.Fatalf("Push %d: %v", i, err)
		}
	}
	s.goAwayAndHold(1)
	if err := pushWithin(t, c, 10, 5*time.Second); err != nil {
		t.Fatalf("Push after a GOAWAY on an idle connection: %v; want it sent on a new connection", err)
	}
	if got := s.connOf(token(10)); got != 2 {
		t.Errorf("the notification went on connection %d; want 2 (%d accepted)", got, s.accepted())
	}
}

// A slot opened for load whose connection ended is dormant; while the load lasts, the pool
// grows into it again (a reconnection of that slot) as soon as the growth interval allows.
// Kills h2conn.go:279 `dormant++` mutated to `dormant--` (INCREMENT_DECREMENT): the count of
// live and dormant slots then falls short of the pool's size, the pool does not grow while
// the slot is dormant, and once the shrinker has dropped the empty slot the pool grows into
// a new one instead: no reconnection.
func TestMutantPoolGrowsAgainIntoItsDormantSlot(t *testing.T) {
	parallel(t)
	s := newHoldServer(t, 100*time.Millisecond, 1) // 10 a second per connection
	c := s.client(t, apns.WithMaxConnections(2), apns.WithIdleTimeout(time.Minute))
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	const n = 100
	sendH2(t, c, 0, n)
	// Connection 2 is the one opened for load; a second after it opened (10 answers), the
	// growth interval allows reopening its slot at once.
	waitFor(t, "connection 2, opened for load, to answer 10 requests", func() bool { return s.carried(2) >= 10 })
	s.closeConn(2)
	waitFor(t, "the load to drain", func() bool { st := c.Stats(); return st.Queued == 0 && st.InFlight == 0 })
	if st := c.Stats(); st.Reconnects != 1 || s.accepted() != 3 {
		t.Errorf("after the connection opened for load dropped under load: %d connections accepted, stats %+v; want 3 accepted and 1 reconnect (its slot reopened)", s.accepted(), st)
	}
}

// The pool does not grow past a connection whose first request is still unanswered: until
// the gateway has proven the connection, the work waits for it. Kills h2conn.go:362
// `k.cc != nil && k.cold` mutated to `k.cc == nil && k.cold` (CONDITIONALS_NEGATION): the pool
// then grows a second after Start while the first request is held, and the Push calls made
// meanwhile (each looks at the pool as it begins to wait) are answered on the new connection
// before it.
func TestMutantPoolDoesNotGrowPastAnUnprovenConnection(t *testing.T) {
	parallel(t)
	s := apnstest.NewUnstartedHTTP2Server()
	s.MaxConcurrentStreams = 1
	arrived := make(chan struct{})
	s.RespondFunc(func(r apnstest.Request) *apnstest.Response {
		if r.Token != token(0) {
			return nil
		}
		close(arrived)
		return &apnstest.Response{Delay: 3 * time.Second}
	})
	var mu sync.Mutex
	var answered []string
	firstDone := make(chan struct{})
	s.Observe = func(r apnstest.Request) {
		mu.Lock()
		answered = append(answered, r.Token)
		mu.Unlock()
		if r.Token == token(0) {
			close(firstDone)
		}
	}
	s.Start()
	t.Cleanup(s.Close)
	c := newH2Client(t, s, apns.WithMaxConnections(2))
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	sendH2(t, c, 0, 1) // the connection's first request, held for 3 s
	receive(t, "the first request at the gateway", arrived)
	// A Push every 200 ms while it is held: past the growth interval, each would find the
	// pool full and grow it, were growth allowed past an unproven connection.
	var wg sync.WaitGroup
	pushed := 0
	ticker := time.NewTicker(200 * time.Millisecond)
	defer ticker.Stop()
	for done := false; !done; {
		select {
		case <-firstDone:
			done = true
		case <-ticker.C:
			pushed++
			i := pushed
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), waitGuard)
				defer cancel()
				if _, err := c.Push(ctx, &apns.Notification{DeviceToken: token(i), Payload: []byte(`{"aps":{}}`)}); err != nil {
					t.Errorf("Push %d: %v", i, err)
				}
			})
		case <-time.After(waitGuard):
			t.Fatal("the held first request was never answered")
		}
	}
	guard(t, "the Push calls", wg.Wait)
	mu.Lock()
	defer mu.Unlock()
	if len(answered) == 0 || answered[0] != token(0) {
		first := -1
		for i := range pushed + 1 {
			if len(answered) > 0 && answered[0] == token(i) {
				first = i
			}
		}
		t.Errorf("notification %d was answered first (%d answers, %d Push calls, %d connections open); want 0, the held first request of the only connection: the pool grew past an unproven connection",
			first, len(answered), pushed, c.Stats().Connections)
	}
}

// Stop is bounded when the gateway is gone while a slot opened for load is dormant (its
// connection retired after a GOAWAY, still holding a request the gateway never answers, so
// the shrinker keeps the slot): once Start's connection has spent its attempts, what is left
// is reported as unsent. Kills h2conn.go:315 `spent+dormant` mutated to `spent-dormant`
// (ARITHMETIC_BASE): Stop then never gives up, waiting for the dormant slot, and once the
// shrinker has dropped that slot nothing wakes it: Stop hangs.
func TestMutantStopGivesUpWithADormantSlot(t *testing.T) {
	parallel(t)
	s := newHoldServer(t, 100*time.Millisecond, 2)
	c := s.client(t, apns.WithMaxConnections(2), apns.WithIdleTimeout(time.Minute),
		apns.WithWriteTimeout(8*time.Second), apns.WithSilenceTimes(time.Minute, time.Minute))
	l := newLedger(c)
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	sendH2(t, c, 0, 60) // 2 streams of 100 ms: 3 s on one connection, long enough to grow
	waitFor(t, "connection 2, opened for load, to answer 3 requests", func() bool { return s.carried(2) >= 3 })
	waitFor(t, "the load to drain", func() bool { st := c.Stats(); return st.Queued == 0 && st.InFlight == 0 })
	// Four requests the gateway never answers fill both connections' two streams.
	s.stallAll()
	sendH2(t, c, 100, 4)
	waitFor(t, "two stalled requests on each connection", func() bool { return s.stalledOn(1) == 2 && s.stalledOn(2) == 2 })
	// The gateway goes: no new connection; connection 2 sends GOAWAY that leaves out its last
	// stream (sent again elsewhere; connection 2 is retired, its slot dormant) and holds the
	// other; connection 1 drops.
	s.ln.Close()
	s.goAwayAndHoldAt(2, 1)
	s.closeConn(1)
	begin := time.Now()
	select {
	case err := <-stopAsync(c):
		if err != nil {
			t.Errorf("Stop: %v", err)
		}
	case <-time.After(25 * time.Second):
		markHung(t, c)
		t.Fatalf("Stop has not returned after 25 s with the gateway gone and a dormant slot (write timeout 8 s); stats %+v", c.Stats())
	}
	t.Logf("Stop took %v", time.Since(begin))
	calls := l.snapshot()
	for i := 100; i < 104; i++ {
		if codes := calls[token(i)]; len(codes) != 1 || codes[0] != uint8(apns.StatusUnknown) {
			t.Errorf("token %d reported %v; want once with 255", i, codes)
		}
	}
}
