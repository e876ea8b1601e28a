package apns_test

// Tests of the feedback client's end: Stop during a poll (issue 10 item 6), the cap on the
// waiting tokens and no poll while tokens wait (issue 16 item 5).

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	apns "github.com/Kwik-messenger/apns-go"
	"github.com/Kwik-messenger/apns-go/apnstest"
)

// holdingFeedback is a feedback service that holds each poll: it accepts the connection,
// completes the handshake, and sends its tuples only when release is closed or the client
// closes the connection first (then they are lost, as with Apple, which forgets what it
// sent). Poll i gets batches[i], none after the last. It records whether the client closed
// first.
type holdingFeedback struct {
	addr    string
	ln      net.Listener
	batches [][]byte
	polls   int           // guarded by mu
	release chan struct{} // closed by letGo
	once    sync.Once
	polled  chan struct{} // receives once per connection, after the handshake
	wg      sync.WaitGroup

	mu          sync.Mutex
	clientFirst int   // polls the client ended before the service answered
	written     []int // the polls whose tuples were written
}

func newHoldingFeedback(t *testing.T, batches ...[]byte) (*holdingFeedback, *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}})
	if err != nil {
		t.Fatal(err)
	}
	h := &holdingFeedback{addr: ln.Addr().String(), ln: ln, batches: batches, release: make(chan struct{}), polled: make(chan struct{}, 100)}
	h.wg.Add(1)
	go h.serve()
	t.Cleanup(func() {
		ln.Close()
		h.letGo()
		h.wg.Wait()
	})
	return h, &tls.Config{RootCAs: pool}
}

// letGo ends the hold of the polls in progress and of the next ones.
func (h *holdingFeedback) letGo() { h.once.Do(func() { close(h.release) }) }

func (h *holdingFeedback) serve() {
	defer h.wg.Done()
	for {
		conn, err := h.ln.Accept()
		if err != nil {
			return
		}
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			defer conn.Close()
			tc := conn.(*tls.Conn)
			if tc.Handshake() != nil {
				return
			}
			h.mu.Lock()
			var tuples []byte
			if h.polls < len(h.batches) {
				tuples = h.batches[h.polls]
			}
			poll := h.polls
			h.polls++
			h.mu.Unlock()
			h.polled <- struct{}{}
			closed := make(chan struct{})
			go func() { var b [1]byte; tc.Read(b[:]); close(closed) }() // the client sends nothing: any return is its close
			select {
			case <-closed:
				h.mu.Lock()
				h.clientFirst++
				h.mu.Unlock()
				return
			case <-h.release:
			}
			if _, err := tc.Write(tuples); err == nil && len(tuples) > 0 {
				h.mu.Lock()
				h.written = append(h.written, poll)
				h.mu.Unlock()
			}
		}()
	}
}

func feedbackTuples(idx ...int) []byte {
	var out []byte
	for _, i := range idx {
		tok, _ := hex.DecodeString(token(i))
		var hdr [6]byte
		binary.BigEndian.PutUint32(hdr[:], uint32(1600000000+i))
		binary.BigEndian.PutUint16(hdr[4:], uint16(len(tok)))
		out = append(append(out, hdr[:]...), tok...)
	}
	return out
}

// Stop during a poll lets the poll finish: the tuples the service sends after Stop began reach
// a GetBadTokens that was already waiting, and only then does it say ErrFeedbackStopped.
func TestFeedbackStopDuringAPollKeepsWhatThePollReads(t *testing.T) {
	fs, tlsConf := newHoldingFeedback(t, feedbackTuples(1, 2))
	c := newClient(t, newServer(t), apns.WithTLSConfig(tlsConf))
	fc, err := c.SetupFeedbackClient(fs.addr, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		tokens []apns.BadToken
		err    error
	}
	got := make(chan result, 1)
	go func() { tokens, err := fc.GetBadTokens(); got <- result{tokens, err} }()
	select {
	case <-fs.polled: // the poll is in progress, and held
	case <-time.After(waitGuard):
		t.Fatal("no poll")
	}
	stopped := make(chan struct{})
	go func() { defer close(stopped); c.Stop() }()
	// The service answers a moment after Stop began (a client that cut the poll short has
	// closed the connection by then, and the tuples are lost).
	time.Sleep(50 * time.Millisecond)
	fs.letGo()
	guard(t, "Stop", func() { <-stopped })
	var r result
	guard(t, "GetBadTokens", func() { r = <-got })
	if r.err != nil || len(r.tokens) != 2 || r.tokens[0].Token != token(1) || r.tokens[1].Token != token(2) {
		t.Errorf("GetBadTokens waiting at Stop = %+v, %v; want tokens 1 and 2", r.tokens, r.err)
	}
	if _, err := fc.GetBadTokens(); !errors.Is(err, apns.ErrFeedbackStopped) {
		t.Errorf("GetBadTokens after that = %v; want ErrFeedbackStopped", err)
	}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.clientFirst != 0 {
		t.Errorf("the client ended %d polls before the service answered; want 0", fs.clientFirst)
	}
}

// A service that never answers cannot hold Stop longer than FeedbackStopGrace (and the test's
// guard): the poll is then ended.
func TestFeedbackStopEndsAPollThatNeverEnds(t *testing.T) {
	parallel(t)
	fs, tlsConf := newHoldingFeedback(t)
	c := newClient(t, newServer(t), apns.WithTLSConfig(tlsConf))
	fc, err := c.SetupFeedbackClient(fs.addr, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	<-fs.polled
	begin := time.Now()
	stop(t, c)
	if d := time.Since(begin); d < apns.FeedbackStopGrace {
		t.Errorf("Stop returned after %v; want the poll given FeedbackStopGrace (%v)", d, apns.FeedbackStopGrace)
	}
	if _, err := fc.GetBadTokens(); !errors.Is(err, apns.ErrFeedbackStopped) {
		t.Errorf("GetBadTokens = %v; want ErrFeedbackStopped", err)
	}
}

// While the tokens one poll read wait for GetBadTokens, no new poll is made: the next tuples
// stay with the service until GetBadTokens has taken the first.
func TestFeedbackNoPollWhileTokensWait(t *testing.T) {
	parallel(t)
	fs, tlsConf := newHoldingFeedback(t, feedbackTuples(1), feedbackTuples(2))
	fs.letGo() // no hold
	const poll = 10 * time.Millisecond
	c := newClient(t, newServer(t), apns.WithTLSConfig(tlsConf))
	fc, err := c.SetupFeedbackClient(fs.addr, poll)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-fs.polled:
	case <-time.After(waitGuard):
		t.Fatal("no poll")
	}
	// Twenty intervals give a poller that ignores the waiting tokens ample occasion.
	select {
	case <-fs.polled:
		t.Errorf("a second poll while the first poll's tokens wait for GetBadTokens")
	case <-time.After(20 * poll):
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitGuard)
	defer cancel()
	got, err := fc.BadTokens(ctx)
	if err != nil || len(got) != 1 || got[0].Token != token(1) {
		t.Fatalf("BadTokens = %+v, %v; want token 1 alone", got, err)
	}
	got, err = fc.BadTokens(ctx) // the next poll comes now
	if err != nil || len(got) != 1 || got[0].Token != token(2) {
		t.Fatalf("BadTokens = %+v, %v; want token 2", got, err)
	}
}

// Stop at a random moment of a feedback client's life, polls held for random times: every
// tuple the service wrote reaches GetBadTokens once, and the client never cuts a poll short
// (seeded; issue 10's "Stop during a feedback poll").
func TestChaosFeedbackStopDuringAPoll(t *testing.T) {
	parallel(t)
	_, seeds := chaosSize(t, 0)
	for seed := 1; seed <= seeds; seed++ {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			r := mrand.New(mrand.NewPCG(uint64(seed), 0xfb))
			for round := 0; round < 15; round++ {
				chaosFeedbackRound(t, r, round)
				if t.Failed() {
					return
				}
			}
		})
	}
}

func chaosFeedbackRound(t *testing.T, r *mrand.Rand, round int) {
	const batches, per = 4, 50
	tuples := make([][]byte, batches)
	for b := range tuples {
		idx := make([]int, 1+r.IntN(per))
		for j := range idx {
			idx[j] = round*batches*per + b*per + j
		}
		tuples[b] = feedbackTuples(idx...)
	}
	fs, tlsConf := newHoldingFeedback(t, tuples...)
	holdFor := time.Duration(r.IntN(20)) * time.Millisecond
	stopAfter := time.Duration(r.IntN(30)) * time.Millisecond
	cert, key := apnstest.ClientCertPEM()
	c, err := apns.CreateClient("127.0.0.1:1", cert, key, false, apns.WithTLSConfig(tlsConf))
	if err != nil {
		t.Fatal(err)
	}
	fc, err := c.SetupFeedbackClient(fs.addr, 2*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	consumed := make(chan error, 1)
	go func() {
		for {
			bad, err := fc.GetBadTokens()
			if err != nil {
				consumed <- err
				return
			}
			for _, b := range bad {
				got[b.Token]++
			}
		}
	}()
	go func() { time.Sleep(holdFor); fs.letGo() }()
	time.Sleep(stopAfter)
	stop(t, c)
	guard(t, "GetBadTokens after Stop", func() {
		if err := <-consumed; !errors.Is(err, apns.ErrFeedbackStopped) {
			t.Errorf("round %d: GetBadTokens = %v; want ErrFeedbackStopped at the end", round, err)
		}
	})
	fs.mu.Lock()
	written, clientFirst := slices.Clone(fs.written), fs.clientFirst
	fs.mu.Unlock()
	if clientFirst != 0 {
		t.Errorf("round %d (hold %v, Stop after %v): the client cut %d polls short", round, holdFor, stopAfter, clientFirst)
	}
	want := map[string]bool{}
	for _, b := range written {
		for off := 0; off < len(tuples[b]); off += 6 + 32 {
			want[hex.EncodeToString(tuples[b][off+6:off+38])] = true
		}
	}
	for tok, k := range got {
		if k != 1 || !want[tok] {
			t.Errorf("round %d: token %s returned %d times (written by the service: %v); want once, if written", round, tok, k, want[tok])
		}
	}
	if len(got) != len(want) {
		t.Errorf("round %d (hold %v, Stop after %v): GetBadTokens returned %d tokens; the service wrote %d", round, holdFor, stopAfter, len(got), len(want))
	}
}
