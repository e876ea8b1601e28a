package apns_test

// Adversarial tests of the binary protocol's reliability work (issues 10, 16, 17): chunked
// replay after a silent loss, the sentinel, Stop's bound, identifier wrap-around. Each test
// here failed on the commit it was written against (1ef1134); see the report for the
// diagnosis of each.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	apns "github.com/Kwik-messenger/apns-go"
	"github.com/Kwik-messenger/apns-go/apnstest"
)

// ---- a tiny scripted TLS gateway, for behaviour the mock's ConnScript cannot express ----

// a2Gateway is a binary gateway whose connections run handle(index, conn). It records the
// tokens of the notifications handlers accept.
type a2Gateway struct {
	ln     net.Listener
	handle func(idx int, g *a2Gateway, conn *tls.Conn)
	mu     sync.Mutex
	conns  int
	got    map[string]int
	wg     sync.WaitGroup
	open   map[net.Conn]bool
}

func a2ServerTLS(t *testing.T) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}))
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequestClientCert, MinVersion: tls.VersionTLS12}
}

func newA2Gateway(t *testing.T, handle func(idx int, g *a2Gateway, conn *tls.Conn)) *a2Gateway {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &a2Gateway{ln: tls.NewListener(ln, a2ServerTLS(t)), handle: handle, got: map[string]int{}, open: map[net.Conn]bool{}}
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		for {
			conn, err := g.ln.Accept()
			if err != nil {
				return
			}
			g.mu.Lock()
			g.conns++
			idx := g.conns
			g.open[conn] = true
			g.mu.Unlock()
			g.wg.Add(1)
			go func() {
				defer g.wg.Done()
				defer func() {
					conn.Close()
					g.mu.Lock()
					delete(g.open, conn)
					g.mu.Unlock()
				}()
				tc := conn.(*tls.Conn)
				tc.SetDeadline(time.Now().Add(waitGuard))
				if tc.Handshake() != nil {
					return
				}
				g.handle(idx, g, tc)
			}()
		}
	}()
	t.Cleanup(func() {
		g.ln.Close()
		g.mu.Lock()
		for c := range g.open {
			c.Close()
		}
		g.mu.Unlock()
		g.wg.Wait()
	})
	return g
}

func (g *a2Gateway) record(tok []byte) {
	g.mu.Lock()
	g.got[hex.EncodeToString(tok)]++
	g.mu.Unlock()
}

func (g *a2Gateway) received() map[string]int {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := map[string]int{}
	for k, v := range g.got {
		out[k] = v
	}
	return out
}

// a2Frame is one command-2 frame as the gateway read it.
type a2Frame struct {
	id       uint32
	token    []byte
	sentinel bool // an identifier item and nothing else
}

func a2ReadFrame(r io.Reader) (a2Frame, error) {
	var h [5]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return a2Frame{}, err
	}
	data := make([]byte, binary.BigEndian.Uint32(h[1:]))
	if _, err := io.ReadFull(r, data); err != nil {
		return a2Frame{}, err
	}
	var f a2Frame
	items := 0
	hasID := false
	for len(data) >= 3 {
		id, n := data[0], int(binary.BigEndian.Uint16(data[1:]))
		v := data[3 : 3+n]
		data = data[3+n:]
		items++
		switch id {
		case 1:
			f.token = v
		case 3:
			f.id = binary.BigEndian.Uint32(v)
			hasID = true
		}
	}
	f.sentinel = items == 1 && hasID
	return f, nil
}

func a2Answer(w io.Writer, status uint8, id uint32) {
	var b [6]byte
	b[0], b[1] = 8, status
	binary.BigEndian.PutUint32(b[2:], id)
	w.Write(b[:])
}

// a2Serve accepts notifications and answers a sentinel with status 2 naming it, as APNs does.
func a2Serve(g *a2Gateway, conn *tls.Conn) {
	for {
		f, err := a2ReadFrame(conn)
		if err != nil {
			return
		}
		if f.sentinel {
			a2Answer(conn, 2, f.id)
			return
		}
		g.record(f.token)
	}
}

func a2Client(t *testing.T, addr string, opts ...apns.Option) *apns.Client {
	t.Helper()
	cert, key := apnstest.ClientCertPEM()
	c, err := apns.CreateClient(addr, cert, key, true, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		guard(t, "cleanup Stop", func() { c.Stop() })
		checkNoGoroutines(t)
	})
	return c
}

func a2Send(t *testing.T, c *apns.Client, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		if err := c.Send(token(i), time.Now().Add(time.Hour), apns.PRIORITY_IMMEDIATE, payload(i)); err != nil {
			t.Fatalf("Send(%d): %v", i, err)
		}
	}
}

// TestAttack2NoFrameWrittenAfterChunkSentinel: in chunked mode (after a silent loss) the
// worker ends a chunk with a sentinel as soon as the queue is momentarily empty. If the
// gateway is slow to answer the sentinel, the worker's next wake-up (the oldest frame's
// assume-sent expiry) runs fill, which takes new frames from the queue and writes them AFTER
// the sentinel. APNs discards everything after the frame it rejects, yet the answer naming
// the sentinel settles every frame in flight as delivered: the notifications are lost, and
// counted Delivered.
func TestAttack2NoFrameWrittenAfterChunkSentinel(t *testing.T) {
	sawSentinel := make(chan struct{})
	release := make(chan struct{})
	var afterSentinel atomic.Int64
	g := newA2Gateway(t, func(idx int, g *a2Gateway, conn *tls.Conn) {
		switch idx {
		case 1: // take 5 frames, then drop without a word
			for range 5 {
				f, err := a2ReadFrame(conn)
				if err != nil {
					return
				}
				g.record(f.token)
			}
			return
		case 2: // take the chunk; answer its sentinel only once released (a slow gateway)
			for {
				f, err := a2ReadFrame(conn)
				if err != nil {
					return
				}
				if f.sentinel {
					close(sawSentinel)
					go func() { // APNs reads on and discards what follows the rejected frame
						for {
							if _, err := a2ReadFrame(conn); err != nil {
								return
							}
							afterSentinel.Add(1)
						}
					}()
					select {
					case <-release:
					case <-time.After(waitGuard):
					}
					a2Answer(conn, 2, f.id)
					return
				}
				g.record(f.token)
			}
		default:
			a2Serve(g, conn)
		}
	})
	c := a2Client(t, g.ln.Addr().String(), apns.WithAssumeSentTimeout(2*time.Second))
	l := newLedger(c)
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	a2Send(t, c, 0, 10) // A: 5 arrive, the drop makes all 10 ambiguous, replayed as a chunk
	select {
	case <-sawSentinel:
	case <-time.After(waitGuard):
		t.Fatal("the chunk's sentinel never came")
	}
	a2Send(t, c, 10, 20) // B: sent while the chunk's sentinel waits for its answer
	// A correct worker writes nothing after the sentinel; give a broken one the time to.
	deadline := time.Now().Add(4 * time.Second)
	for afterSentinel.Load() < 10 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	close(release)
	stop(t, c)

	if k := afterSentinel.Load(); k > 0 {
		t.Errorf("%d frames written after the connection's sentinel (the gateway discards them)", k)
	}
	got, calls := g.received(), l.snapshot()
	lost := 0
	for i := range 20 {
		if got[token(i)] == 0 && len(calls[token(i)]) == 0 {
			lost++
		}
	}
	st := c.Stats()
	if lost > 0 {
		t.Errorf("%d of 20 notifications neither arrived nor were reported; stats %+v", lost, st)
	}
	if st.Accepted != st.Delivered+st.Rejected+st.Unsent+st.Unconfirmed {
		t.Errorf("stats do not add up: %+v", st)
	}
}

// TestAttack2NoConnectionPerNotificationAfterOneDrop: after one silent loss the worker writes
// in chunks for 30 s, and ends a chunk with a sentinel, and so its connection, whenever the
// queue is momentarily empty. A client sending at a steady, light rate then opens a new TLS
// connection for every notification, with no backoff, since every one confirms its chunk:
// the rapid connect/disconnect pattern Apple treats as a denial-of-service.
func TestAttack2NoConnectionPerNotificationAfterOneDrop(t *testing.T) {
	s := newServer(t)
	s.Script(apnstest.ConnScript{After: 1, Drop: true})
	c := newClient(t, s)
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	a2Send(t, c, 0, 1)              // accepted, then the connection drops without a word
	if !s.WaitCount(2, waitGuard) { // and its replay on the next connection
		t.Fatalf("replay never arrived: count %d", s.Count())
	}
	before := s.Conns()
	begin := time.Now()
	const n = 40
	for i := 1; i <= n; i++ {
		a2Send(t, c, i, i+1)
		if !s.WaitCount(2+i, waitGuard) {
			t.Fatalf("notification %d never arrived", i)
		}
	}
	opened := s.Conns() - before
	elapsed := time.Since(begin)
	stop(t, c)
	t.Logf("%d notifications one at a time after one drop: %d connections in %v (%.0f/s)",
		n, opened, elapsed.Round(time.Millisecond), float64(opened)/elapsed.Seconds())
	if opened > 5 {
		t.Errorf("%d notifications sent one at a time opened %d connections; want a handful", n, opened)
	}
}

// TestAttack2StopGivesUpAfterThreeAttempts: Stop's doc says that when "three connection
// attempts in a row per worker confirm nothing", what the worker holds is reported. With
// ambiguous frames in the ring, attempts with a chunk larger than one frame are not counted,
// so a gateway that drops every connection at once gets 5 more (chunk 1024, 256, 64, 16, 4)
// before the three counted ones: eight attempts, each after a backoff, and more still when
// the chunk had grown (up to 65536: eleven).
func TestAttack2StopGivesUpAfterThreeAttempts(t *testing.T) {
	s := newServer(t)
	scripts := []apnstest.ConnScript{{After: 2, Drop: true}}
	for range 50 {
		scripts = append(scripts, apnstest.ConnScript{Drop: true})
	}
	s.Script(scripts...)
	c := newClient(t, s)
	l := newLedger(c)
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	a2Send(t, c, 0, 10)
	// Stop at once: the first connection is the Start's, begun before Stop; every later one is
	// an attempt made while stopping.
	stop(t, c)
	attempts := s.Conns() - 1
	st := c.Stats()
	t.Logf("connection attempts after Stop began: %d; stats %+v; reported %d", attempts, st, len(l.snapshot()))
	if attempts > 3 {
		t.Errorf("Stop made %d connection attempts that confirmed nothing; its doc says it gives up after three", attempts)
	}
}

// TestAttack2WrapDuringChunkedReplay: identifiers wrap (skipping 0) while the worker replays
// in chunks; every notification arrives, none is reported, the counters add up.
func TestAttack2WrapDuringChunkedReplay(t *testing.T) {
	s := newServer(t)
	s.Script(apnstest.ConnScript{After: 3, Drop: true}, apnstest.ConnScript{After: 4, Shutdown: true},
		apnstest.ConnScript{After: 2, Reject: 8})
	c := newClient(t, s, apns.WithFirstID(0xfffffff8))
	l := newLedger(c)
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	const n = 40
	a2Send(t, c, 0, n)
	stop(t, c)
	got, calls := received(s), l.snapshot()
	for i := range n {
		k, r := got[token(i)], len(calls[token(i)])
		if (k == 0) == (r == 0) {
			t.Errorf("token %d: arrived %d times, reported %d times (%v)", i, k, r, calls[token(i)])
		}
	}
	st := c.Stats()
	if st.Accepted != n || st.Accepted != st.Delivered+st.Rejected+st.Unsent+st.Unconfirmed {
		t.Errorf("stats do not add up: %+v", st)
	}
}

// a2FixedPayload returns a payload for notification i whose JSON is exactly size bytes.
func a2FixedPayload(t *testing.T, i, size int) map[string]interface{} {
	t.Helper()
	p := map[string]interface{}{"aps": map[string]interface{}{"alert": "x"}, "n": fmt.Sprintf("%08d", i), "p": ""}
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > size {
		t.Fatalf("payload base %d > %d", len(b), size)
	}
	p["p"] = strings.Repeat("z", size-len(b))
	return p
}

// TestAttack2ShutdownInterruptingWriteLosesNoFrame: Shutdown's deadline interrupts a write
// blocked by a gateway that stopped reading; unsendLast then makes pending the newest frames
// holding the bytes left in the write buffer. But when the blocked flush ran inside
// bufio.Writer.Write, only the head of the newest frame is in the buffer, and unsendLast
// subtracts that frame's whole size: the count runs out one frame early, so the oldest frame
// partly left in the buffer (its head written, its tail not) stays "written", and giveUp
// counts it delivered. The gateway got half of it. Frames of 565 bytes (16385 = 29 * 565)
// make this happen at every TLS record boundary.
func TestAttack2ShutdownInterruptingWriteLosesNoFrame(t *testing.T) {
	s := newServer(t)
	s.Script(apnstest.ConnScript{After: 100, Stall: 4 * time.Second})
	const n = 30000
	c := newClient(t, s, apns.WithInflightBytes(64<<20), apns.WithQueueSize(n),
		apns.WithWriteTimeout(time.Minute), apns.WithAssumeSentTimeout(time.Minute))
	l := newLedger(c)
	for i := range n { // queued before Start: the worker writes full buffers only
		if err := c.Send(token(i), time.Now().Add(time.Hour), apns.PRIORITY_IMMEDIATE, a2FixedPayload(t, i, 565-61)); err != nil {
			t.Fatalf("Send(%d): %v", i, err)
		}
	}
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	if !s.WaitCount(100, waitGuard) {
		t.Fatal("the gateway never took 100 frames")
	}
	// Let the worker fill the socket buffers and block, then cut it short.
	var last uint64
	for k := 0; k < 500; k++ {
		time.Sleep(20 * time.Millisecond)
		if w := c.Stats().Written; w == last && w > 100 {
			break
		} else {
			last = w
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	guard(t, "Shutdown", func() { c.Shutdown(ctx) })
	st := c.Stats()
	// The gateway reads on after its stall (4 s), up to the connection's end; a correct
	// client's Delivered is then reached within a few seconds, a broken one's never.
	deadline := time.Now().Add(10 * time.Second)
	for uint64(s.Count()) < st.Delivered && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	prev := -1
	for k := 0; k < 100 && s.Count() != prev; k++ { // until the gateway's count settles
		prev = s.Count()
		time.Sleep(50 * time.Millisecond)
	}
	got, calls := received(s), l.snapshot()
	lost, both := []int{}, 0
	for i := range n {
		switch k, r := got[token(i)], len(calls[token(i)]); {
		case k == 0 && r == 0:
			lost = append(lost, i)
		case k > 0 && r > 0:
			both++
		}
	}
	t.Logf("stats %+v; gateway took %d", st, s.Count())
	if len(lost) > 0 || both > 0 {
		t.Errorf("%d notifications neither arrived nor were reported (%v), %d arrived and were reported; Delivered %d, gateway took %d",
			len(lost), lost, both, st.Delivered, s.Count())
	}
}

// TestAttack2Status255RejectionCountedRejected: APNs's status 255 ("None (unknown)") is a
// rejection the gateway sends naming a notification it read. report() counts every
// StatusUnknown as Unsent, so such a rejection shows in Stats.Unsent ("never taken by the
// gateway") and not in Rejected or RejectedByStatus. (Older than the change under review.)
func TestAttack2Status255RejectionCountedRejected(t *testing.T) {
	s := newServer(t)
	s.RejectToken(token(3), 255)
	c := newClient(t, s)
	l := newLedger(c)
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	a2Send(t, c, 0, 10)
	stop(t, c)
	if got := l.snapshot()[token(3)]; len(got) != 1 || got[0] != 255 {
		t.Fatalf("callback for token 3: %v; want [255]", got)
	}
	st := c.Stats()
	if st.Rejected != 1 || st.Unsent != 0 || st.RejectedByStatus[255] != 1 {
		t.Errorf("a rejection with status 255: stats %+v; want Rejected 1 (RejectedByStatus[255] 1), Unsent 0", st)
	}
}
