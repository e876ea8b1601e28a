package apns_test

// The chaos tests: a seeded random mix of faults from the apnstest mocks, and one ledger that
// checks, per notification, that everything Send accepted ended exactly once (issue 4,
// invariants 1-4).
//
// CI runs a short version. For a soak:
//
//	APNS_CHAOS_N=1000000 APNS_CHAOS_SEEDS=1 go test -run ChaosBinary -v -timeout 30m .
//
// The assertions never depend on timing: time only sets the length of faults (stalls, slow
// handshakes, delays) and bounds waits (waitGuard).

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	apns "github.com/Kwik-messenger/apns-go"
	"github.com/Kwik-messenger/apns-go/apnstest"
)

// TestChaosBinary runs in parallel with the other tests, so its assume-sent timeout
// (chaosAssumeSent) must outlast every stall of the mock's reader under their load on a
// 2-core machine: at one second, a run lost notifications.
func TestChaosBinary(t *testing.T) {
	parallel(t)
	n, seeds := chaosSize(t, 20000)
	for seed := 1; seed <= seeds; seed++ {
		if !t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) { chaosBinary(t, uint64(seed), n) }) {
			break // a broken client fails every seed alike: one ledger says enough
		}
	}
}

func TestChaosHTTP2(t *testing.T) {
	parallel(t)
	n, seeds := chaosSize(t, 5000)
	for seed := 1; seed <= seeds; seed++ {
		if !t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) { chaosHTTP2(t, uint64(seed), n) }) {
			break
		}
	}
}

// chaosSize returns the notifications per run (APNS_CHAOS_N, default def) and the number of
// seeds (APNS_CHAOS_SEEDS, default 3).
func chaosSize(t *testing.T, def int) (n, seeds int) {
	env := func(name string, def int) int {
		v := os.Getenv(name)
		if v == "" {
			return def
		}
		k, err := strconv.Atoi(v)
		if err != nil || k < 1 {
			t.Fatalf("%s=%q: want a positive number", name, v)
		}
		return k
	}
	return env("APNS_CHAOS_N", def), env("APNS_CHAOS_SEEDS", 3)
}

// ---- Deterministic decisions per token ----

// dice decides things about a notification from the seed and its index alone, so that the
// same token gets the same answer on every attempt and every connection, whatever the
// interleaving.
type dice uint64

func (d dice) roll(salt, i uint64) uint64 {
	x := uint64(d)*0x9e3779b97f4a7c15 ^ salt<<56 ^ i
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9 // SplitMix64's finaliser
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

// bad reports whether notification i goes to a token APNs calls invalid (about 1%).
func (d dice) bad(i int) bool { return i >= 0 && d.roll(1, uint64(i))%100 == 0 }

// tokenIndex returns i for the binary token of token(i), or -1 for any other token.
func tokenIndex(b []byte) int {
	if len(b) != 32 || b[0] != 0xa0 {
		return -1
	}
	return int(binary.BigEndian.Uint64(b[24:]))
}

func hexIndex(s string) int {
	b, err := hex.DecodeString(s)
	if err != nil {
		return -1
	}
	return tokenIndex(b)
}

// ---- Binary faults ----

// binaryFault is one kind of connection the binary mock gateway may be scripted to be.
type binaryFault struct {
	name   string
	weight int
	script func(r *rand.Rand) apnstest.ConnScript
	// burst, if set, is how many connections in a row get the fault (each its own script).
	burst func(r *rand.Rand) int
}

// burst returns a burst of lo to hi connections.
func burst(lo, hi int) func(r *rand.Rand) int {
	return func(r *rand.Rand) int { return lo + r.IntN(hi-lo+1) }
}

// early is the number of frames a faulty connection accepts before its fault: few enough that
// the fault usually comes before the next bad token (1 in 100) ends the connection.
func early(r *rand.Rand) int { return r.IntN(100) }

var binaryFaults = []binaryFault{
	{"normal", 45, func(*rand.Rand) apnstest.ConnScript { return apnstest.ConnScript{} }, nil},
	{"late drop", 10, func(r *rand.Rand) apnstest.ConnScript {
		return apnstest.ConnScript{After: 5000 + r.IntN(20000), Drop: true}
	}, nil},
	{"drop", 8, func(r *rand.Rand) apnstest.ConnScript {
		return apnstest.ConnScript{After: early(r), Drop: true}
	}, nil},
	{"shutdown", 6, func(r *rand.Rand) apnstest.ConnScript {
		return apnstest.ConnScript{After: early(r), Shutdown: true}
	}, nil},
	{"reject next", 6, func(r *rand.Rand) apnstest.ConnScript {
		return apnstest.ConnScript{After: early(r), Reject: 8}
	}, nil},
	{"garbage", 4, func(r *rand.Rand) apnstest.ConnScript {
		g := make([]byte, 1+r.IntN(32))
		for i := range g {
			g[i] = byte(r.IntN(256))
		}
		if g[0] == 8 { // never a well-formed error response: that would not be garbage
			g[0] = 'H'
		}
		return apnstest.ConnScript{After: early(r), Garbage: g}
	}, nil},
	{"truncated error response", 4, func(r *rand.Rand) apnstest.ConnScript {
		return apnstest.ConnScript{After: early(r), Garbage: []byte{8, 8, 0, 0, 0}[:1+r.IntN(5)]}
	}, nil},
	{"stall", 6, func(r *rand.Rand) apnstest.ConnScript {
		return apnstest.ConnScript{After: early(r), Stall: time.Duration(20+r.IntN(181)) * time.Millisecond}
	}, nil},
	{"refuse handshake", 4, func(*rand.Rand) apnstest.ConnScript {
		return apnstest.ConnScript{RefuseHandshake: true}
	}, nil},
	{"slow handshake", 4, func(r *rand.Rand) apnstest.ConnScript {
		return apnstest.ConnScript{HandshakeDelay: time.Duration(10+r.IntN(91)) * time.Millisecond}
	}, nil},
	{"slow handshake, then drop", 3, func(r *rand.Rand) apnstest.ConnScript {
		return apnstest.ConnScript{HandshakeDelay: time.Duration(10+r.IntN(91)) * time.Millisecond, After: early(r), Drop: true}
	}, nil},
	// Issue 10 item 2: a worker that reconnects at once after an error response naming no
	// frame in flight storms the gateway; the ledger bounds connection attempts.
	{"error response naming nothing, repeatedly", 2, func(r *rand.Rand) apnstest.ConnScript {
		switch r.IntN(3) {
		case 0:
			return apnstest.ConnScript{Shutdown: true} // status 10 before any frame: names 0
		case 1:
			return apnstest.ConnScript{After: early(r), Garbage: []byte{8, 8, 0, 0, 0, 0}}
		default:
			return apnstest.ConnScript{After: early(r), Garbage: []byte{8, 8, 0xff, 0xff, 0xff, 0xf0}}
		}
	}, burst(2, 4)},
	// Issue 17: a gateway that drops every connection without a word after 2,000-5,000 frames.
	{"dropping gateway", 1, func(r *rand.Rand) apnstest.ConnScript {
		return apnstest.ConnScript{After: 2000 + r.IntN(3001), Drop: true}
	}, burst(10, 30)},
}

// binaryScripts returns k seeded connection scripts and how many of each kind.
func binaryScripts(r *rand.Rand, k int) ([]apnstest.ConnScript, map[string]int) {
	total := 0
	for _, f := range binaryFaults {
		total += f.weight
	}
	scripts := make([]apnstest.ConnScript, 0, k)
	kinds := map[string]int{}
	for len(scripts) < k {
		w := r.IntN(total)
		for _, f := range binaryFaults {
			if w -= f.weight; w < 0 {
				times := 1
				if f.burst != nil {
					times = f.burst(r)
				}
				for range min(times, k-len(scripts)) {
					scripts = append(scripts, f.script(r))
				}
				kinds[f.name]++
				break
			}
		}
	}
	return scripts, kinds
}

// The binary client's assume-sent timeout and in-flight budget. APNs never acknowledges, so a
// frame the gateway leaves unread for longer than the assume-sent timeout and then discards
// (after a rejection or a drop) is lost: the client has already assumed it delivered. That is
// the protocol's documented limit, not a fault to inject, and the one timing assumption of
// this test: the mock reads every frame within the timeout. So the longest stall (200 ms)
// stays far below it, and the small ring keeps the unread backlog (at most 64 KiB, a few
// hundred frames, milliseconds of work) short. The margin covers a busy 2-core machine under
// -race; with a 100 ms timeout, stalls of 200 ms lose notifications in most runs. For the
// same reason writes that block longer than the timeout are not a fault class here: with this
// small ring the ring fills before the kernel's buffers, so no write blocks and the frames
// would wait unread past the timeout; TestRejectionAfterAStallLongerThanTheAssumeSentTimeout
// (worker_test.go) holds that case with a ring larger than the buffers.
const (
	chaosAssumeSent    = 3 * time.Second
	chaosInflightBytes = 64 << 10
)

func chaosBinary(t *testing.T, seed uint64, n int) {
	r := rand.New(rand.NewPCG(seed, 0xb1)) // fault schedule
	d := dice(seed)
	arr := newArrivals(n)
	s := apnstest.NewUnstartedServer()
	s.DiscardNotifications = true // the ledger counts through Observe; memory stays the client's
	used := newConnSet()
	s.Observe = func(m apnstest.Notification) { arr.add(tokenIndex(m.Token)); used.add(m.Conn) }
	accepts := listenLogged(t)
	s.Listener = accepts
	s.Start()
	t.Cleanup(s.Close)
	s.RejectFunc(func(m apnstest.Notification) uint8 {
		if d.bad(tokenIndex(m.Token)) {
			return 8
		}
		return 0
	})
	scripts, kinds := binaryScripts(r, max(300, n*300/20000))
	s.Script(scripts...)

	workers := 2 + r.IntN(3)
	var errs atomic.Int64
	c := newClient(t, s, apns.WithAssumeSentTimeout(chaosAssumeSent), apns.WithInflightBytes(chaosInflightBytes),
		apns.WithErrorHandler(func(error) { errs.Add(1) }))
	l := newLedger(c)
	maybe := recordRejections(c) // for the reason of each 255

	// judge checks the ledger as it stands, failing the test with its first broken entries.
	judge := func() ledgerSummary {
		codes, strays := byIndex(n, l.snapshot())
		refused := map[int]bool{} // refused by a script's Reject, not for the token
		for _, m := range s.Rejected() {
			if i := tokenIndex(m.Token); !d.bad(i) {
				refused[i] = true
			}
		}
		return checkLedger(t, n, d.bad, arr, codes, strays, refused, c.Stats())
	}

	peak := sampleHeap()
	begin := time.Now()
	start(t, c, workers)
	sendAll(t, c, n)
	// Let the client work through the faults until every notification has arrived or been
	// reported; then use up the scripts no connection took, so that Stop finds a willing
	// gateway (one that keeps failing while the client stops makes it report what it holds as
	// unsent, by design). A notification that never ends fails the run here, with the ledger.
	awaitLedger(t, n, arr, l, judge)
	// In one run of three, the gateway is gone at Stop (issue 10 item 4): Stop must still
	// return. A worker may still hold frames that arrived on a connection lost without a
	// word (it may be waiting out a backoff); it reports them with 255 as possibly delivered.
	gone := r.IntN(3) == 0
	if gone {
		s.Close()
	}
	for !gone && s.Conns() < len(scripts) {
		for k := len(scripts) - s.Conns(); k > 0; k-- {
			if conn, err := net.Dial("tcp", s.Addr); err == nil {
				accepts.ignore(conn.LocalAddr().String())
				conn.Close()
			}
		}
		time.Sleep(time.Millisecond)
	}
	chaosStop(t, c, judge)
	elapsed := time.Since(begin)
	heap := peak()
	arr.await(n, reported(l)) // a stalled connection may still hold the last ones
	s.Close()
	codes, strays := byIndex(n, l.snapshot())
	st := c.Stats()
	// Notifications given up on at Stop as possibly delivered that did arrive: delivered, as
	// far as the ledger goes. Any other report must satisfy the ledger as usual.
	unconfirmed := 0
	for tok, rs := range maybe.snapshot() {
		i := hexIndex(tok)
		if len(rs) == 1 && rs[0].Code == 255 && rs[0].Reason == "unknown (possibly delivered)" && i >= 0 && i < n &&
			arr.counts[i].Load() > 0 && len(codes[i]) == 1 {
			codes[i] = nil
			unconfirmed++
		}
	}
	if unconfirmed > 0 && !gone || uint64(unconfirmed) != st.Unconfirmed {
		t.Errorf("ledger: %d notifications that arrived reported as possibly delivered (gateway gone at Stop: %v), Stats.Unconfirmed %d", unconfirmed, gone, st.Unconfirmed)
	}
	st.Unconfirmed -= uint64(unconfirmed)
	st.Delivered += uint64(unconfirmed)
	refused := map[int]bool{} // refused by a script's Reject, not for the token
	for _, m := range s.Rejected() {
		if i := tokenIndex(m.Token); !d.bad(i) {
			refused[i] = true
		}
	}
	for _, m := range s.Rejected() { // a sentinel or a rejection: the connection carried frames
		used.add(m.Conn)
	}
	sum := checkLedger(t, n, d.bad, arr, codes, strays, refused, st)
	// Connection attempts stay bounded (issue 10 item 2): connections on which the gateway
	// took no frame at all (refused, dropped at once, answered with an error naming nothing)
	// are failures, and a worker waits at least backoffMin (100 ms, less 10%) after each
	// before the next attempt: at most about 11 per worker in any second. A storm makes
	// hundreds.
	const emptyPerWorkerSecond = 25
	empty := accepts.emptyPerSecond(used)
	if empty > emptyPerWorkerSecond*workers {
		t.Errorf("ledger: %d connections that carried no frame within one second from %d workers; want at most %d per worker", empty, workers, emptyPerWorkerSecond)
	}
	t.Logf("binary seed=%d: notifications=%d workers=%d rejected=%d (scripted %d) replayed=%d duplicates=%d (tokens seen twice %d, delivered and reported %d) drops=%d reconnects=%d unknownIDs=%d lost=%d errors=%d conns=%d (most empty in a second %d) gone-at-stop=%v (given up as possibly delivered %d) elapsed=%v peak-heap=%s faults=%s",
		seed, n, workers, st.Rejected, len(refused), st.Replayed, st.Duplicates, sum.ambiguous, sum.both, st.Drops, st.Reconnects,
		st.UnknownIDs, sum.lost, errs.Load(), s.Conns(), empty, gone, unconfirmed, elapsed.Round(time.Millisecond), heap, summary(kinds))
}

// ---- HTTP/2 faults ----

// h2Fault is one kind of answer the HTTP/2 mock gives a token; transient ones are given to its
// first attempt only.
type h2Fault struct {
	name      string
	percent   uint64
	transient bool
	resp      apnstest.Response
}

var h2Faults = []h2Fault{
	{"BadDeviceToken", 1, false, apnstest.Response{Status: 400, Reason: "BadDeviceToken"}},
	{"429 Retry-After 0", 2, true, apnstest.Response{Status: 429, Reason: "TooManyRequests", RetryAfter: "0"}},
	{"503", 2, true, apnstest.Response{Status: 503, Reason: "ServiceUnavailable"}},
	{"500", 1, true, apnstest.Response{Status: 500, Reason: "InternalServerError"}},
	{"slow 200", 5, false, apnstest.Response{Status: 200}}, // with a Delay of 1-5 ms
	// A status, then a stream reset: the status is the answer (issue 10 item 3). Every
	// attempt of a 200 is reset, so a client that retried it would deliver it again and again.
	{"200, stream reset", 2, false, apnstest.Response{Status: 200, ResetStream: true}},
	{"503, stream reset", 1, true, apnstest.Response{Status: 503, Reason: "ServiceUnavailable", ResetStream: true}},
	// 410: reported, and handed to the feedback client, whose consumer Stop interrupts.
	{"410 Unregistered", 1, false, apnstest.Response{Status: 410, Reason: "Unregistered"}},
}

// h2Rejected reports whether notification i is rejected for good (BadDeviceToken or 410),
// which the callback reports with status 8.
func (d dice) h2Rejected(i int) bool {
	f := d.h2Fault(i)
	return f != nil && !f.transient && f.resp.Status >= 400
}

// h2Fault returns the fault of notification i, or nil. The first entry must be
// BadDeviceToken, so that it matches dice.bad.
func (d dice) h2Fault(i int) *h2Fault {
	if i < 0 {
		return nil
	}
	w := d.roll(1, uint64(i)) % 100
	for k := range h2Faults {
		if w < h2Faults[k].percent {
			return &h2Faults[k]
		}
		w -= h2Faults[k].percent
	}
	return nil
}

func chaosHTTP2(t *testing.T, seed uint64, n int) {
	r := rand.New(rand.NewPCG(seed, 0x42))
	d := dice(seed)
	arr := newArrivals(n)
	s := newH2Server(t, func(s *apnstest.HTTP2Server) {
		s.DiscardNotifications = true
		s.Observe = func(q apnstest.Request) { arr.add(hexIndex(q.Token)) }
	})

	// Connection faults every few hundred requests, on goroutines (GoAway and
	// CloseClientConnections wait for the connections they end).
	goAwayEvery, closeEvery := int64(400+r.IntN(400)), int64(600+r.IntN(900))
	var bg sync.WaitGroup
	var requests, goAways, closes atomic.Int64
	kinds := map[string]int{}
	var mu sync.Mutex
	failed := map[int]bool{} // tokens whose transient fault was answered
	s.RespondFunc(func(q apnstest.Request) *apnstest.Response {
		k := requests.Add(1)
		switch {
		case k%goAwayEvery == 0:
			goAways.Add(1)
			bg.Add(1)
			go func() { defer bg.Done(); s.GoAway() }()
		case k%closeEvery == 0:
			closes.Add(1)
			bg.Add(1)
			go func() { defer bg.Done(); s.CloseClientConnections() }()
		}
		i := hexIndex(q.Token)
		f := d.h2Fault(i)
		if f == nil {
			return nil
		}
		resp := f.resp
		mu.Lock()
		defer mu.Unlock()
		switch {
		case f.transient && failed[i]:
			return nil
		case f.transient:
			failed[i] = true
		case f.resp.Status == 200:
			resp.Delay = time.Duration(1+d.roll(2, uint64(i))%5) * time.Millisecond
		}
		kinds[f.name]++
		return &resp
	})

	// Every GOAWAY or dropped connection fails the requests in flight on it (and, for a GOAWAY,
	// the ones started before the client noticed it); each failure counts as an attempt and
	// is retried after a backoff. A small number of streams keeps the share of attempts that
	// fail to a few percent, so that ten attempts always suffice and the run stays short.
	workers, streams := 2+r.IntN(3), 8+r.IntN(9)
	var errs atomic.Int64
	c := newH2Client(t, s, apns.WithMaxAttempts(10), apns.WithStreams(streams),
		apns.WithErrorHandler(func(error) { errs.Add(1) }))
	l := newLedger(c)
	rej := recordRejections(c)
	judge := func() ledgerSummary {
		codes, strays := byIndex(n, l.snapshot())
		return checkLedger(t, n, d.bad, arr, codes, strays, nil, c.Stats())
	}
	// The 410 tokens' consumer waits in GetBadTokens throughout, Stop included.
	fc, err := c.SetupFeedbackClient("", 0)
	if err != nil {
		t.Fatal(err)
	}
	gone := map[int]int{}
	feedbackDone := make(chan error, 1)
	go func() {
		for {
			bad, err := fc.GetBadTokens()
			if err != nil {
				feedbackDone <- err
				return
			}
			for _, b := range bad {
				gone[hexIndex(b.Token)]++
			}
		}
	}()

	peak := sampleHeap()
	begin := time.Now()
	start(t, c, workers)
	sendAll(t, c, n)
	chaosStop(t, c, judge)
	guard(t, "GetBadTokens after Stop", func() {
		if err := <-feedbackDone; !errors.Is(err, apns.ErrFeedbackStopped) {
			t.Errorf("GetBadTokens after Stop = %v; want ErrFeedbackStopped", err)
		}
	})
	elapsed := time.Since(begin)
	heap := peak()
	guard(t, "the mock's GoAway and CloseClientConnections", bg.Wait)
	s.Close()

	codes, strays := byIndex(n, l.snapshot())
	bodiesLost := 0
	for tok, rs := range rej.snapshot() {
		i, f := hexIndex(tok), d.h2Fault(hexIndex(tok))
		switch {
		case f == nil || len(rs) != 1 || rs[0].StatusCode != f.resp.Status:
			t.Errorf("token %s: rejections %+v; want one with the status of its fault %+v", tok, rs, f)
		case rs[0].Reason == "" && i >= 0 && i < n && len(codes[i]) == 1 && codes[i][0] == rs[0].Code:
			// The connection went after the status and before the body: the status is the
			// answer, reported with what is known (a 400 without its reason: status 255).
			bodiesLost++
			codes[i] = []uint8{8}
		case rs[0].Reason != f.resp.Reason:
			t.Errorf("token %s: rejection %+v; want the reason of its fault %+v", tok, rs[0], f)
		}
	}
	st := c.Stats()
	sum := checkLedger(t, n, d.h2Rejected, arr, codes, strays, nil, st)
	// Every HTTP/2 answer is known: no notification is both delivered and reported, and the
	// 410 tokens reach GetBadTokens, once each, Stop notwithstanding.
	var both []int
	for i := 0; i < n; i++ {
		if arr.counts[i].Load() > 0 && len(codes[i]) > 0 {
			both = append(both, i)
		}
		want := 0
		if f := d.h2Fault(i); f != nil && f.resp.Status == 410 {
			want = 1
		}
		if gone[i] != want {
			t.Errorf("notification %d: GetBadTokens returned it %d times; want %d", i, gone[i], want)
		}
	}
	if len(both) > 0 {
		t.Errorf("%d notifications both delivered and reported, e.g. %d (callback codes %v)", len(both), both[0], codes[both[0]])
	}
	mu.Lock()
	defer mu.Unlock()
	t.Logf("http2 seed=%d: bodies-lost=%d notifications=%d workers=%d streams=%d rejected=%d replayed=%d duplicates=%d (tokens seen twice %d) drops=%d reconnects=%d lost=%d errors=%d requests=%d goaways=%d closes=%d conns=%d elapsed=%v peak-heap=%s faults=%s",
		seed, bodiesLost, n, workers, streams, st.Rejected, st.Replayed, st.Duplicates, sum.ambiguous, st.Drops, st.Reconnects, sum.lost,
		errs.Load(), requests.Load(), goAways.Load(), closes.Load(), s.Conns(), elapsed.Round(time.Millisecond), heap, summary(kinds))
}

// ---- The ledger, shared by both transports ----

// arrivals counts, per notification index, how often the mock accepted it.
type arrivals struct {
	counts []atomic.Int32
	total  atomic.Int64 // every arrival, for await to see progress
	stray  atomic.Int64 // tokens that no notification of the run carries
}

func newArrivals(n int) *arrivals { return &arrivals{counts: make([]atomic.Int32, n)} }

func (a *arrivals) add(i int) {
	a.total.Add(1)
	if i < 0 || i >= len(a.counts) {
		a.stray.Add(1)
		return
	}
	a.counts[i].Add(1)
}

// chaosQuiet is how long await waits for a sign of progress (a notification arriving or
// being reported) before it gives up: far longer than any fault of the scripts, the
// assume-sent timeout and the backoff after a few failed connections, so that only a
// notification the client has lost is still missing then.
const chaosQuiet = 10 * time.Second

// await waits until every notification has arrived or been reported. It gives up after
// waitGuard, or when nothing has arrived or been reported for chaosQuiet: then it reports
// stalled. It only bounds the wait: checkLedger judges what arrived.
func (a *arrivals) await(n int, reported func() map[int]bool) (stalled bool) {
	deadline := time.Now().Add(waitGuard)
	i := 0 // what arrived or was reported stays so: resume where the last look stopped
	progress, lastChange := int64(-1), time.Now()
	for {
		done := reported()
		for i < n && (a.counts[i].Load() > 0 || done[i]) {
			i++
		}
		if i == n {
			return false
		}
		now := time.Now()
		if p := a.total.Load() + int64(len(done)); p != progress {
			progress, lastChange = p, now
		}
		if now.Sub(lastChange) > chaosQuiet {
			return true
		}
		if now.After(deadline) {
			return false // still moving: let Stop finish the work, and the ledger judge it
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// awaitLedger waits (as arrivals.await) until every notification has arrived or been
// reported; if some stop ending, it fails the test at once with the ledger's first broken
// entries (judge) rather than going on to wait for Stop.
func awaitLedger(t *testing.T, n int, arr *arrivals, l *ledger, judge func() ledgerSummary) {
	t.Helper()
	if !arr.await(n, reported(l)) {
		return
	}
	t.Errorf("after %v without progress, some notifications have neither arrived nor been reported", chaosQuiet)
	judge()
	t.FailNow()
}

// chaosStop stops c; if Stop does not return within waitGuard, it fails the test with the
// ledger's first broken entries (judge) before the goroutines.
func chaosStop(t *testing.T, c *apns.Client, judge func() ledgerSummary) {
	t.Helper()
	select {
	case err := <-stopAsync(c):
		if err != nil {
			t.Errorf("Stop: %v", err)
		}
	case <-time.After(waitGuard):
		markHung(t, c)
		judge()
		fatalHang(t, "Stop")
	}
}

// byIndex turns the callback ledger into codes per notification index, and returns the tokens
// of callbacks for notifications never sent.
func byIndex(n int, calls map[string][]uint8) (codes [][]uint8, strays []string) {
	codes = make([][]uint8, n)
	for tok, cs := range calls {
		if i := hexIndex(tok); i >= 0 && i < n {
			codes[i] = cs
		} else {
			strays = append(strays, tok)
		}
	}
	return codes, strays
}

// reported returns the indexes of the notifications the callback ledger holds, for
// arrivals.await.
func reported(l *ledger) func() map[int]bool {
	return func() map[int]bool {
		done := map[int]bool{}
		for tok := range l.snapshot() {
			done[hexIndex(tok)] = true
		}
		return done
	}
}

type ledgerSummary struct {
	lost      int // neither arrived nor reported
	ambiguous int // arrived more than once, or arrived and was reported
	both      int // arrived and was reported
}

// checkLedger checks invariants 1 and 2 for notifications 0..n-1: each ended exactly once,
// arrived at the mock or reported to the callback; those to bad tokens were reported once with
// status 8 and never arrived; others were reported only if refused (by a script), with status 8;
// a notification arrived twice, or arrived and was refused, only as often as the client counted
// duplicates; and the client's counters agree.
func checkLedger(t *testing.T, n int, bad func(int) bool, arr *arrivals, codes [][]uint8, strays []string, refused map[int]bool, st apns.Stats) ledgerSummary {
	t.Helper()
	var sum ledgerSummary
	var problems []string
	problem := func(format string, args ...any) {
		if len(problems) < 20 {
			problems = append(problems, fmt.Sprintf(format, args...))
		}
	}
	nReported := 0
	for i := 0; i < n; i++ {
		k, cs := int(arr.counts[i].Load()), codes[i]
		if len(cs) > 0 {
			nReported++
		}
		switch {
		case bad(i):
			if len(cs) != 1 || cs[0] != 8 || k != 0 {
				problem("notification %d (token %s) to a bad token: callback codes %v, arrived %d times; want [8] and never", i, token(i), cs, k)
			}
		case len(cs) == 0 && k == 0:
			sum.lost++
			problem("notification %d (token %s) lost: never arrived, never reported", i, token(i))
		case len(cs) > 0 && (len(cs) != 1 || cs[0] != 8 || !refused[i]):
			problem("notification %d (token %s): callback codes %v, arrived %d times (refused by the mock: %v); want none, or [8] if refused", i, token(i), cs, k, refused[i])
		}
		if k > 1 || k > 0 && len(cs) > 0 {
			sum.ambiguous++
		}
		if k > 0 && len(cs) > 0 {
			// Delivered and reported: only a frame that arrived on a connection lost without
			// a word and was then refused by a script on its replay (the gateway's word).
			sum.both++
			if !refused[i] {
				problem("notification %d both arrived (%d times) and was reported %v", i, k, cs)
			}
		}
	}
	if len(strays) > 0 {
		problem("callbacks for %d tokens never sent, e.g. %s", len(strays), strays[0])
	}
	if s := arr.stray.Load(); s > 0 {
		problem("the mock accepted %d notifications to tokens never sent", s)
	}
	if uint64(sum.ambiguous) > st.Duplicates {
		problem("%d notifications arrived twice (or arrived and were refused), but the client counted %d duplicates", sum.ambiguous, st.Duplicates)
	}
	if st.Accepted != uint64(n) || st.Accepted != st.Delivered+st.Rejected+st.Unsent+st.Unconfirmed || st.Unsent != 0 ||
		st.Unconfirmed != 0 || st.Rejected != uint64(nReported) {
		problem("stats %+v with %d sent and %d reported; want Accepted = sent = Delivered+Rejected+Unsent+Unconfirmed, Unsent and Unconfirmed 0, Rejected = reported", st, n, nReported)
	}
	if len(problems) > 0 {
		t.Errorf("ledger: %d lost; the first broken entries:\n\t%s", sum.lost, strings.Join(problems, "\n\t"))
	}
	return sum
}

// ---- Helpers ----

// start starts c; the first connections may meet refused handshakes, so Start may be retried.
func start(t *testing.T, c *apns.Client, workers int) {
	t.Helper()
	var err error
	for try := 0; try < 10; try++ {
		if err = c.Start(workers); err == nil {
			return
		}
	}
	t.Fatalf("Start: %v", err)
}

// sampleHeap samples HeapInuse until the returned function is called, which returns the peak.
func sampleHeap() func() string {
	stop, done := make(chan struct{}), make(chan uint64)
	go func() {
		var peak uint64
		var ms runtime.MemStats
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
			select {
			case <-tick.C:
			case <-stop:
				done <- peak
				return
			}
		}
	}()
	return func() string {
		close(stop)
		return fmt.Sprintf("%.1fMiB", float64(<-done)/(1<<20))
	}
}

func summary(kinds map[string]int) string {
	var parts []string
	for k, v := range kinds {
		parts = append(parts, fmt.Sprintf("%s:%d", strings.ReplaceAll(k, " ", "-"), v))
	}
	sort.Strings(parts)
	return "[" + strings.Join(parts, " ") + "]"
}

// ---- Connection attempts, counted at the mock ----

// connSet is the set of gateway connections (by sequence number) that carried a frame.
type connSet struct {
	mu   sync.Mutex
	seen map[int]bool
}

func newConnSet() *connSet { return &connSet{seen: map[int]bool{}} }

func (s *connSet) add(conn int) {
	s.mu.Lock()
	s.seen[conn] = true
	s.mu.Unlock()
}

// acceptLog is a listener that records when it accepted each connection, in the order the
// mock numbers them, and from where.
type acceptLog struct {
	net.Listener
	mu      sync.Mutex
	at      []time.Time
	from    []string
	ignored map[string]bool // the test's own connections
}

func listenLogged(t *testing.T) *acceptLog {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return &acceptLog{Listener: ln, ignored: map[string]bool{}}
}

func (l *acceptLog) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.mu.Lock()
		l.at = append(l.at, time.Now())
		l.from = append(l.from, c.RemoteAddr().String())
		l.mu.Unlock()
	}
	return c, err
}

func (l *acceptLog) ignore(addr string) {
	l.mu.Lock()
	l.ignored[addr] = true
	l.mu.Unlock()
}

// emptyPerSecond returns the most connections of the client, among those that carried no
// frame, accepted within any one second.
func (l *acceptLog) emptyPerSecond(used *connSet) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	used.mu.Lock()
	defer used.mu.Unlock()
	var times []time.Time
	for i, at := range l.at {
		if !used.seen[i+1] && !l.ignored[l.from[i]] {
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
