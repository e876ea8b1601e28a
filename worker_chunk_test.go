package apns_test

// Tests of the binary worker's chunked replay after a silent loss (issues 10, 17): nothing
// after a chunk's sentinel, few connections under light traffic, Stop's bound, identifier
// wrap-around; and of what Shutdown and a status-255 rejection count. A small scripted TLS
// gateway covers what the mock's ConnScript cannot express.

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
	"errors"
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

// ---- a small scripted TLS gateway, for behaviour the mock's ConnScript cannot express ----

// scriptedGateway is a binary gateway whose connections run handle(index, conn). It records the
// tokens of the notifications handlers accept.
type scriptedGateway struct {
	ln     net.Listener
	handle func(idx int, g *scriptedGateway, conn *tls.Conn)
	mu     sync.Mutex
	conns  int
	got    map[string]int
	wg     sync.WaitGroup
	open   map[net.Conn]bool
}

func scriptedGatewayTLS(t *testing.T) *tls.Config {
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

func newScriptedGateway(t *testing.T, handle func(idx int, g *scriptedGateway, conn *tls.Conn)) *scriptedGateway {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &scriptedGateway{ln: tls.NewListener(ln, scriptedGatewayTLS(t)), handle: handle, got: map[string]int{}, open: map[net.Conn]bool{}}
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

func (g *scriptedGateway) record(tok []byte) {
	g.mu.Lock()
	g.got[hex.EncodeToString(tok)]++
	g.mu.Unlock()
}

func (g *scriptedGateway) received() map[string]int {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := map[string]int{}
	for k, v := range g.got {
		out[k] = v
	}
	return out
}

// gatewayFrame is one command-2 frame as the gateway read it.
type gatewayFrame struct {
	id       uint32
	token    []byte
	sentinel bool // an identifier item and nothing else
}

func readGatewayFrame(r io.Reader) (gatewayFrame, error) {
	var h [5]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return gatewayFrame{}, err
	}
	data := make([]byte, binary.BigEndian.Uint32(h[1:]))
	if _, err := io.ReadFull(r, data); err != nil {
		return gatewayFrame{}, err
	}
	var f gatewayFrame
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

func answerFrame(w io.Writer, status uint8, id uint32) {
	var b [6]byte
	b[0], b[1] = 8, status
	binary.BigEndian.PutUint32(b[2:], id)
	w.Write(b[:])
}

// serveAndAnswerSentinel accepts notifications and answers a sentinel with status 2 naming it, as APNs does.
func serveAndAnswerSentinel(g *scriptedGateway, conn *tls.Conn) {
	for {
		f, err := readGatewayFrame(conn)
		if err != nil {
			return
		}
		if f.sentinel {
			answerFrame(conn, 2, f.id)
			return
		}
		g.record(f.token)
	}
}

func scriptedClient(t *testing.T, addr string, opts ...apns.Option) *apns.Client {
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

func sendRange(t *testing.T, c *apns.Client, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		if err := c.Send(token(i), time.Now().Add(time.Hour), apns.PRIORITY_IMMEDIATE, payload(i)); err != nil {
			t.Fatalf("Send(%d): %v", i, err)
		}
	}
}

// sentinelGateway is a gateway whose first connection takes drop frames and then closes
// without a word, making every frame in flight ambiguous, so the worker writes in chunks
// (for 30 s); its connection number slow takes frames up to the chunk's sentinel, then
// answers it only once released, like a slow gateway, meanwhile reading on and counting what
// follows the sentinel (APNs discards it); other connections take frames and answer their
// sentinel.
type sentinelGateway struct {
	*scriptedGateway
	sawSentinel   chan struct{}
	release       chan struct{}
	afterSentinel atomic.Int64
}

func newSentinelGateway(t *testing.T, drop, slow int) *sentinelGateway {
	sg := &sentinelGateway{sawSentinel: make(chan struct{}), release: make(chan struct{})}
	sg.scriptedGateway = newScriptedGateway(t, func(idx int, g *scriptedGateway, conn *tls.Conn) {
		switch idx {
		case 1:
			for range drop {
				f, err := readGatewayFrame(conn)
				if err != nil {
					return
				}
				g.record(f.token)
			}
		case slow:
			for {
				f, err := readGatewayFrame(conn)
				if err != nil {
					return
				}
				if !f.sentinel {
					g.record(f.token)
					continue
				}
				close(sg.sawSentinel)
				go func() {
					for {
						if _, err := readGatewayFrame(conn); err != nil {
							return
						}
						sg.afterSentinel.Add(1)
					}
				}()
				select {
				case <-sg.release:
				case <-time.After(waitGuard):
				}
				answerFrame(conn, 2, f.id)
				return
			}
		default:
			serveAndAnswerSentinel(g, conn)
		}
	})
	return sg
}

// Nothing is written on a connection after its sentinel, however the chunk ended (issue 17
// follow-up): the gateway discards what follows the frame it rejects, yet the sentinel's
// answer settles every frame in flight as delivered, so a frame written after it would be
// lost and counted Delivered. The worker wakes while the sentinel waits for its answer (the
// oldest frame's assume-sent time); a broken one then writes the next frames.
func TestNoFrameIsWrittenAfterAChunksSentinel(t *testing.T) {
	parallel(t)
	cases := []struct {
		name string
		// drop: frames the first connection takes; slow: the connection that answers its
		// sentinel late; send sends the notifications, from 0, and returns how many.
		drop, slow int
		opts       []apns.Option
		send       func(t *testing.T, c *apns.Client, g *sentinelGateway) int
	}{
		// The replayed chunk ends with a sentinel once the queue is empty; more come.
		{"queue momentarily empty", 5, 2, nil, func(t *testing.T, c *apns.Client, g *sentinelGateway) int {
			sendRange(t, c, 0, 10)
			g.awaitSentinel(t)
			sendRange(t, c, 10, 20)
			return 20
		}},
		// After the replay, a chunk on a small ring fills it with notifications sent at a
		// steady pace: the sentinel follows with more to come, and the ring has room again
		// as its oldest frames age out, one by one, while the sentinel waits.
		{"ring full", 1, 3, []apns.Option{apns.WithInflightBytes(4096)}, func(t *testing.T, c *apns.Client, g *sentinelGateway) int {
			const n = 100 // the ring holds about 45
			for i := range n {
				sendRange(t, c, i, i+1)
				time.Sleep(20 * time.Millisecond)
			}
			g.awaitSentinel(t)
			return n
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			parallel(t)
			g := newSentinelGateway(t, tc.drop, tc.slow)
			c := scriptedClient(t, g.ln.Addr().String(), append(tc.opts, apns.WithAssumeSentTimeout(2*time.Second))...)
			l := newLedger(c)
			if err := c.Start(1); err != nil {
				t.Fatal(err)
			}
			total := tc.send(t, c, g)
			// A correct worker writes nothing after the sentinel; give a broken one the time
			// to (the frames before the sentinel age out 2 s after they were written).
			deadline := time.Now().Add(4 * time.Second)
			for g.afterSentinel.Load() == 0 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			close(g.release)
			stop(t, c)

			if k := g.afterSentinel.Load(); k > 0 {
				t.Errorf("%d frames written after the connection's sentinel (the gateway discards them)", k)
			}
			got, calls := g.received(), l.snapshot()
			lost := 0
			for i := range total {
				if got[token(i)] == 0 && len(calls[token(i)]) == 0 {
					lost++
				}
			}
			st := c.Stats()
			if lost > 0 {
				t.Errorf("%d of %d notifications neither arrived nor were reported; stats %+v", lost, total, st)
			}
			if st.Accepted != st.Delivered+st.Rejected+st.Unsent+st.Unconfirmed {
				t.Errorf("stats do not add up: %+v", st)
			}
		})
	}
}

// awaitSentinel waits for the slow connection's sentinel.
func (g *sentinelGateway) awaitSentinel(t *testing.T) {
	t.Helper()
	select {
	case <-g.sawSentinel:
	case <-time.After(waitGuard):
		t.Fatal("the chunk's sentinel never came")
	}
}

// mostPerSecond returns the most connections of the client accepted within any one second.
func (l *acceptLog) mostPerSecond() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	var times []time.Time
	for i, at := range l.at {
		if !l.ignored[l.from[i]] {
			times = append(times, at)
		}
	}
	most := 0
	for i, j := 0, 0; j < len(times); j++ {
		for times[j].Sub(times[i]) >= time.Second {
			i++
		}
		most = max(most, j-i+1)
	}
	return most
}

// After one connection lost without a word the worker writes in chunks for 30 s; under light
// traffic it must not end a chunk, and so its connection, whenever the queue is momentarily
// empty: that opens a TLS connection per notification, each confirming its chunk and so
// without backoff, the rapid connect/disconnect APNs treats as an attack. The bound counts
// every connection, those that carried frames too: the one dropped, the one that replays and
// confirms the dropped frame, and then one for all the traffic (a connection per
// notification makes 40 in well under a second). A slow machine only makes fewer per second.
func TestLightTrafficAfterADropOpensFewConnections(t *testing.T) {
	s := apnstest.NewUnstartedServer()
	accepts := listenLogged(t)
	s.Listener = accepts
	s.Start()
	t.Cleanup(s.Close)
	s.Script(apnstest.ConnScript{After: 1, Drop: true})
	c := newClient(t, s)
	start(t, c, 1)
	sendRange(t, c, 0, 1)           // taken, then the connection drops without a word
	if !s.WaitCount(2, waitGuard) { // and its replay arrives on the next connection
		t.Fatalf("replay never arrived: count %d", s.Count())
	}
	begin := time.Now()
	const n = 40
	for i := 1; i <= n; i++ { // one at a time: the queue is empty between them
		sendRange(t, c, i, i+1)
		if !s.WaitCount(2+i, waitGuard) {
			t.Fatalf("notification %d never arrived", i)
		}
	}
	elapsed := time.Since(begin)
	stop(t, c)
	const perWorkerSecond = 5
	most, conns := accepts.mostPerSecond(), s.Conns()
	t.Logf("%d notifications one at a time after one drop, in %v: %d connections in all, at most %d in one second",
		n, elapsed.Round(time.Millisecond), conns, most)
	if most > perWorkerSecond {
		t.Errorf("%d connections within one second from one worker under light traffic after a drop; want at most %d", most, perWorkerSecond)
	}
	if conns > 4 {
		t.Errorf("%d connections for %d notifications after one drop; want 3 (dropped, replay, the rest) and at most one more", conns, n+1)
	}
}

// Stop gives up on a worker after three connection attempts in a row that confirm nothing,
// as its doc says, whatever the chunk: with ambiguous frames in the ring, an attempt with a
// chunk larger than one frame counts too (before, five more were made, each after a
// backoff, as the chunk shrank from 1,024 to 4, and up to eleven once it had grown). While
// stopping, an attempt that confirms nothing is followed by a chunk of one frame, so a
// gateway that takes two frames per connection is still not given up on
// (TestGatewayTakingTwoFramesPerConnectionGetsEverything).
func TestStopGivesUpAfterThreeAttemptsThatConfirmNothing(t *testing.T) {
	parallel(t)
	proceed := make(chan struct{})
	g := newScriptedGateway(t, func(idx int, g *scriptedGateway, conn *tls.Conn) {
		if idx > 1 {
			return // every attempt while stopping: dropped at once
		}
		// The first connection takes everything, answers nothing, and drops once Stop has
		// begun: every frame becomes ambiguous and the worker replays in chunks.
		go func() {
			for {
				f, err := readGatewayFrame(conn)
				if err != nil {
					return
				}
				g.record(f.token)
			}
		}()
		select {
		case <-proceed:
		case <-time.After(waitGuard):
		}
	})
	c := scriptedClient(t, g.ln.Addr().String())
	l := newLedger(c)
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	sendRange(t, c, 0, 10)
	stopped := stopAsync(c)
	// Stop has begun once Send refuses; a notification it still took is one more to report.
	for i := 10; ; i++ {
		if err := c.Send(token(i), time.Now().Add(time.Hour), apns.PRIORITY_IMMEDIATE, payload(i)); errors.Is(err, apns.ErrStopped) {
			break
		} else if err != nil {
			t.Fatalf("Send: %v", err)
		}
		time.Sleep(time.Millisecond)
	}
	close(proceed)
	select {
	case <-stopped:
	case <-time.After(waitGuard):
		t.Fatal("Stop did not return")
	}
	g.mu.Lock()
	attempts := g.conns - 1
	g.mu.Unlock()
	st := c.Stats()
	t.Logf("connection attempts after Stop began: %d; stats %+v", attempts, st)
	if attempts != 3 {
		t.Errorf("Stop made %d connection attempts that confirmed nothing; want three, as its doc says", attempts)
	}
	if n := len(l.snapshot()); uint64(n) != st.Accepted || st.Unconfirmed+st.Unsent != st.Accepted {
		t.Errorf("reported %d notifications, stats %+v; want every one given up on", n, st)
	}
}

// Identifiers wrap (skipping 0) while the worker replays in chunks; every notification
// arrives, none is reported, the counters add up.
func TestIdentifiersWrapDuringChunkedReplay(t *testing.T) {
	s := newServer(t)
	s.Script(apnstest.ConnScript{After: 3, Drop: true}, apnstest.ConnScript{After: 4, Shutdown: true},
		apnstest.ConnScript{After: 2, Reject: 8})
	c := newClient(t, s, apns.WithFirstID(0xfffffff8))
	l := newLedger(c)
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	const n = 40
	sendRange(t, c, 0, n)
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

// fixedSizePayload returns a payload for notification i whose JSON is exactly size bytes.
func fixedSizePayload(t *testing.T, i, size int) map[string]interface{} {
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

// Shutdown's deadline interrupts a write blocked by a gateway that stopped reading; the
// frames that did not leave whole become pending again and are reported unsent, and only the
// others count delivered. When the blocked flush ran inside bufio.Writer.Write, only the
// head of the newest frame is in the buffer and the rest of it never reached the buffer: it
// counts among the bytes that never left (before, the count ran out one frame early, and a
// frame the gateway got half of counted delivered). Frames of 565 bytes (16385 = 29 * 565)
// make this happen at every TLS record boundary. TestUnwrittenBytesLeaveOutTheSentinel holds
// the case of a sentinel among the bytes that never left.
func TestShutdownCuttingAWriteShortCountsOnlyWholeFramesWritten(t *testing.T) {
	parallel(t)
	s := newServer(t)
	s.Script(apnstest.ConnScript{After: 100, Stall: 4 * time.Second})
	const n = 30000
	c := newClient(t, s, apns.WithInflightBytes(64<<20), apns.WithQueueSize(n),
		apns.WithWriteTimeout(time.Minute), apns.WithAssumeSentTimeout(time.Minute))
	l := newLedger(c)
	for i := range n { // queued before Start: the worker writes full buffers only
		if err := c.Send(token(i), time.Now().Add(time.Hour), apns.PRIORITY_IMMEDIATE, fixedSizePayload(t, i, 565-61)); err != nil {
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

// APNs's status 255 ("None (unknown)") in an error response is a rejection of a notification
// the gateway read: it counts in Stats.Rejected and RejectedByStatus, not in Unsent (which
// is for notifications the client gave up on before the gateway took them).
func TestStatus255RejectionCountsAsRejected(t *testing.T) {
	s := newServer(t)
	s.RejectToken(token(3), 255)
	c := newClient(t, s)
	l := newLedger(c)
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	sendRange(t, c, 0, 10)
	stop(t, c)
	if got := l.snapshot()[token(3)]; len(got) != 1 || got[0] != 255 {
		t.Fatalf("callback for token 3: %v; want [255]", got)
	}
	st := c.Stats()
	if st.Rejected != 1 || st.Unsent != 0 || st.RejectedByStatus[255] != 1 {
		t.Errorf("a rejection with status 255: stats %+v; want Rejected 1 (RejectedByStatus[255] 1), Unsent 0", st)
	}
}
