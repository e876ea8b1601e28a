package apns

// This file owns the HTTP/2 connections of a client: the pool of connections, the streams
// reserved on them, the scheduler that hands queued notifications to free streams, the
// growth of the pool under load and its shrinking when the load is gone. What one request
// does with its stream (headers, answer, retries) is in h2transport.go.
//
// Model: a connection is an http.ClientConn, which carries as many requests at once as the
// server's SETTINGS_MAX_CONCURRENT_STREAMS allows (following its changes) and never opens a
// second connection. The pool reserves a stream (ClientConn.Reserve) on the connection with
// the most free streams before a request starts, so a request never waits inside net/http
// for a stream, work goes where there is room, and no connection idles while work waits.
// One scheduler goroutine takes notifications from the queue, reserves a stream for each
// and runs it on a goroutine that ends with it: goroutines follow the requests in flight.
// Push and retries reserve their streams the same way.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// connectionGrowthInterval is the least time between two connections opened because
	// the load needs more (WithMaxConnections): one at a time, at most one a second.
	connectionGrowthInterval = time.Second

	// connectionProvenAfter is how long a connection lives before the answer to its first
	// request resets its slot's backoff; sooner, only an answer to another request does.
	connectionProvenAfter = time.Second
)

// errGaveUp tells that Stop has begun and no connection could be opened in
// stopDialAttempts attempts per connection: what is left is reported as unsent.
var errGaveUp = errors.New("apns: gateway unreachable while stopping")

// h2Conn is one connection slot of the pool: its current http.ClientConn, replaced when it
// fails or the server sends GOAWAY, and the replaced ones still finishing their requests. Its
// fields are guarded by the transport's mu.
type h2Conn struct {
	h     *h2Transport
	extra bool // opened because of load, beyond Start's count: closed after the idle timeout

	cc           *http.ClientConn // nil before the first dial and after a failure
	bc           *batchConn       // cc's connection, for the silence detector; nil through a proxy
	cold         bool             // cc's first request has not ended: cc takes one stream
	firstOut     bool             // cc's first request has its stream
	answered     bool             // cc proved itself: answered a request besides its first, or one a second after it opened
	opened       time.Time        // when cc opened
	retired      retiredConns     // replaced connections, closed once idle
	dialing      bool             // a connection attempt is in progress
	failures     int              // failed attempts and connections ended without an answer, in a row
	stopAttempts int              // connection attempts since Stop began or the last answer
	dials        int              // connections opened
	lastUsed     time.Time        // when a stream was last reserved on cc

	// steady tells that the end of an answered request other than a connection's first has
	// nothing to change: answered is set and no failure or stop attempt is counted. It is
	// set and cleared under the transport's mu and read without it (h2Stream.end).
	steady atomic.Bool
}

// h2Stream is a stream reserved on a connection for one request.
type h2Stream struct {
	k        *h2Conn
	cc       *http.ClientConn
	first    bool      // cc's first request: cc takes no other until it ends
	opened   time.Time // when cc opened
	sent     bool      // RoundTrip was called, which took the reservation
	answered bool      // RoundTrip returned an answer
}

// resendable returns req with a body of its own, read from the start: net/http may still hold
// the body of the failed request.
func resendable(req *http.Request) *http.Request {
	r := req.WithContext(req.Context())
	if b, ok := req.Body.(*requestBody); ok {
		p := make([]byte, b.Size())
		b.ReadAt(p, 0) // reads the bytes the reader was made from, not its position
		nb := &requestBody{}
		nb.Reset(p)
		r.Body = nb
	}
	return r
}

// goAwayResends is how often a request that failed because its connection stopped taking
// requests (GOAWAY) is sent again on another stream before the failure counts as a try.
const goAwayResends = 3

// roundTrip sends req on the stream. When net/http says the request was not sent because the
// connection stopped taking new requests (the server sent GOAWAY: streams it had not taken
// fail, the others are answered; see notSentByNetHTTP), the stream is returned, the connection retired and
// req sent again on a stream of another connection, up to goAwayResends times, before the
// failure is the caller's: with a thousand streams a connection may have many requests
// written after the server's GOAWAY and before the client read it, and these are not tries
// of the notification. They count as replayed, not as duplicates or drops: net/http fails
// this way only the streams above the GOAWAY's last stream ID, which the server says it did
// not process (RFC 9113, section 6.8), and requests it never sent.
func (s *h2Stream) roundTrip(ctx context.Context, req *http.Request) (*http.Response, error) {
	for resend := 0; ; resend++ {
		s.sent = true
		res, err := s.cc.RoundTrip(req)
		s.answered = err == nil
		if err == nil || resend == goAwayResends || ctx.Err() != nil || req.Context().Err() != nil ||
			!notSentByNetHTTP(err) {
			return res, err
		}
		h := s.k.h
		s.failed(err)
		ns, rerr := h.reserve(ctx, true)
		if rerr != nil {
			return nil, err
		}
		s.end()
		*s = *ns
		req = resendable(req)
		h.c.stats.replayed.Add(1)
	}
}

// notSentByNetHTTP tells whether err is net/http's word that the request was not sent on the
// connection, so that sending it on another is no second try. net/http's HTTP/2 client says
// so with two unexported errors, the ones its own retry (canRetryError in h2_bundle.go)
// resends: the connection received the server's graceful GOAWAY before the request's stream
// was taken ("Transport received Server's graceful shutdown GOAWAY"), or it no longer takes
// requests ("client conn not usable"). They can be told only by their text:
// TestNotSentByNetHTTPMatchesGoAway pins it against a real GOAWAY from net/http's server,
// so a Go release that changes it fails loudly. A stream reset is no such word: the server
// may have processed the request. The whole text must match: ClientConn.RoundTrip returns
// these errors as they are, and other errors carry text the server chose (a GOAWAY's debug
// data), which may hold the same words.
func notSentByNetHTTP(err error) bool {
	if err == nil {
		return false
	}
	switch err.Error() {
	case "http2: Transport received Server's graceful shutdown GOAWAY", "http2: client conn not usable":
		return true
	}
	return false
}

// failed tells that the request got no answer because of err (see h2Conn.failed).
func (s *h2Stream) failed(err error) { s.k.failed(s.cc, err) }

// end returns the stream to the pool: after the request, or unused.
func (s *h2Stream) end() {
	if !s.sent {
		s.cc.Release()
	}
	k, h := s.k, s.k.h
	if s.answered && !s.first && k.steady.Load() {
		// The common case, without the transport's lock: the writes below would change
		// nothing. A change made meanwhile under the lock is as if made after this end.
		// Nor is there news to signal: the stream's release is net/http's, whose state
		// hook signals when the connection's count of requests in flight drops.
		return
	}
	// The answer to a connection's first request alone does not reset the backoff: a gateway
	// that sends GOAWAY on every connection right after its first answer is met with backoff,
	// not with a new connection each time.
	proven := s.answered && (!s.first || time.Since(s.opened) >= connectionProvenAfter)
	h.mu.Lock()
	if k.cc == s.cc {
		switch {
		case s.first && s.sent:
			k.cold = false // the server's SETTINGS are known by now
		case s.first:
			// Released unused (the provider token could not be signed): the connection
			// still never had a stream, and its next request is its first.
			k.firstOut = false
		}
		if proven {
			k.answered = true
		}
	}
	if s.answered {
		k.stopAttempts = 0
	}
	if proven {
		k.failures = 0
	}
	k.steadyLocked()
	h.mu.Unlock()
	h.signal()
}

// steadyLocked sets k.steady from the fields it sums up; every change of them calls it.
func (k *h2Conn) steadyLocked() {
	k.steady.Store(k.answered && k.failures == 0 && k.stopAttempts == 0)
}

// stream returns s, or when s is nil reserves a stream for a retry or a Push: one that does
// not wait for connections that cannot be opened.
func (h *h2Transport) stream(ctx context.Context, s *h2Stream) (*h2Stream, error) {
	if s != nil {
		return s, nil
	}
	return h.reserve(ctx, true)
}

// freeLocked returns how many streams k can take now. avail is what k.cc's Available
// returned during the caller's look, or -1 when it did not ask.
func (h *h2Transport) freeLocked(k *h2Conn, avail int) int {
	cc := k.cc
	if cc == nil || k.suspectLocked() {
		return 0
	}
	if k.cold {
		if k.firstOut {
			return 0
		}
		if avail < 0 {
			avail = cc.Available()
		}
		return min(avail, 1)
	}
	n := avail
	if n < 0 {
		n = cc.Available()
	}
	if h.streams > 0 {
		n = min(n, h.streams-cc.InFlight())
	}
	return n
}

// reserve waits until a connection has a free stream and reserves one on the connection
// with the most; a new connection's first request goes first. While it waits it has the connections that are missing opened, one attempt
// per connection at a time with backoff, and the pool grown when every stream is busy
// (WithMaxConnections). With failFast it returns the error of a failed connection attempt
// made while it waited when no connection is open; without, it waits for a connection. It
// returns errGaveUp once Stop has begun and the connections have failed stopDialAttempts
// attempts each without an answer since, ErrStopped once the transport is closed, or ctx's
// error.
func (h *h2Transport) reserve(ctx context.Context, failFast bool) (*h2Stream, error) {
	var fails0 uint64
	for round := 0; ; round++ {
		ch := h.await()
		stopping := isClosed(h.c.stopping)
		h.mu.Lock()
		if round == 0 {
			fails0 = h.dialFails
		}
		if h.closed {
			h.mu.Unlock()
			h.unawait()
			return nil, ErrStopped
		}
		var idle []*http.ClientConn
		var best *h2Conn
		bestFree, live, dialing, spent, dormant := 0, 0, 0, 0, 0
		for _, k := range h.conns {
			// Each call on an http.ClientConn takes its lock, which its reader and its
			// requests take too: one call tells the common case, a connection past its first
			// request with a free stream, open. net/http also reports room on a closed
			// connection that never had a stream (its first request was released unused, or
			// its context ended before net/http made the stream): its Reserve fails, and
			// the failure retires it below.
			avail := -1
			if cc := k.cc; cc != nil && !k.cold {
				avail = cc.Available()
			}
			// Closed, or GOAWAY received and its requests done. InFlight first: no request
			// can start meanwhile (reservations are made under h.mu), and one that ends
			// between the two calls raises Available, so a busy connection at its limit is
			// never taken for a dead one.
			if cc := k.cc; cc != nil && avail <= 0 && (cc.Err() != nil || cc.InFlight() == 0 && cc.Available() == 0) {
				k.retireLocked()
			}
			idle = append(idle, k.sweepLocked()...)
			switch {
			case k.cc != nil:
				live++
			case k.dialing:
				dialing++
			case k.extra:
				// Opened for load: growLocked reopens it at its rate, never at once (a GOAWAY
				// on a grown pool is no burst of connections).
				dormant++
			case stopping && k.stopAttempts >= stopDialAttempts:
				spent++
			default:
				h.connectLocked(k, stopping)
				dialing++
			}
			switch f := h.freeLocked(k, avail); {
			case f > 0 && k.cold:
				// A new connection's first request, which proves it, goes before any
				// other's free streams: passed over, a connection opened for load would
				// sit unused until closed as idle, and the pool would grow again.
				best, bestFree = k, math.MaxInt
			case f > bestFree:
				best, bestFree = k, f
			}
		}
		if best != nil {
			cc := best.cc
			if err := cc.Reserve(); err == nil {
				if best.cold {
					best.firstOut = true
				}
				best.lastUsed = time.Now()
				s := &h2Stream{k: best, cc: cc, first: best.cold, opened: best.opened} // under h.mu: connect may replace them
				h.mu.Unlock()
				h.unawait()
				closeConns(h.c, idle)
				return s, nil
			}
			// The connection changed since it was looked at (SETTINGS, GOAWAY), or it is
			// closed (net/http reports room on a closed connection that never had a
			// stream): again, without it once closed.
			if cc.Err() != nil {
				best.retireLocked()
				idle = append(idle, best.sweepLocked()...)
			}
			h.mu.Unlock()
			h.unawait()
			closeConns(h.c, idle)
			continue
		}
		if live == 0 && dialing == 0 && spent+dormant == len(h.conns) && stopping {
			h.mu.Unlock()
			h.unawait()
			closeConns(h.c, idle)
			return nil, errGaveUp
		}
		if failFast && live == 0 && h.dialFails != fails0 {
			err := h.dialErr
			h.mu.Unlock()
			h.unawait()
			closeConns(h.c, idle)
			return nil, err
		}
		if live+dormant == len(h.conns) && !stopping {
			h.growLocked()
		}
		h.mu.Unlock()
		closeConns(h.c, idle)
		var stop <-chan struct{}
		if !stopping {
			stop = h.c.stopping
		}
		select {
		case <-ch:
		case <-stop:
		case <-ctx.Done():
			h.unawait()
			return nil, ctx.Err()
		}
		h.unawait()
	}
}

// growLocked opens one more connection when the pool may grow: every connection is open
// (but the dormant ones opened for load, whose connection ended), past its first request, not
// being probed for silence, and without a free stream (the caller found none), and the last
// connection opened is connectionGrowthInterval old. It reopens a dormant slot before it adds
// one.
func (h *h2Transport) growLocked() {
	if time.Since(h.lastGrow) < connectionGrowthInterval {
		return
	}
	var dormant *h2Conn
	for _, k := range h.conns {
		// A connection being probed (silence.go) is not full: it takes requests again as
		// soon as it answers the PING, and growing for it would open a connection for a
		// gateway that is merely slow.
		if k.cc != nil && k.cold || k.dialing || k.suspectLocked() {
			return
		}
		if k.cc == nil && dormant == nil {
			dormant = k
		}
	}
	k := dormant
	if k == nil {
		if len(h.conns) >= h.maxConns {
			return
		}
		k = &h2Conn{h: h, extra: true}
		h.conns = append(h.conns, k)
	}
	h.lastGrow = time.Now()
	h.connectLocked(k, false)
}

// connectLocked starts a connection attempt for k on its own goroutine.
func (h *h2Transport) connectLocked(k *h2Conn, stopping bool) {
	k.dialing = true
	if stopping {
		k.stopAttempts++
		k.steadyLocked()
	}
	h.dialers.Add(1)
	go func() {
		defer h.dialers.Done()
		h.connect(k)
	}()
}

// connect makes one connection attempt for k, which is marked dialing, after the backoff its
// failures call for (at most a second once Stop has begun).
func (h *h2Transport) connect(k *h2Conn) error {
	c := h.c
	h.mu.Lock()
	failures := k.failures
	h.mu.Unlock()
	var cc *http.ClientConn
	var dialed atomic.Pointer[batchConn]
	err := c.abortCtx.Err()
	if err == nil && failures > 0 && !h.pause(backoff(failures)) {
		err = c.abortCtx.Err()
	}
	if err == nil {
		ctx, cancel := context.WithTimeout(context.WithValue(c.abortCtx, dialedKey{}, &dialed), c.set.dial())
		cc, err = h.tr.NewClientConn(ctx, "https", h.addr)
		cancel()
	}

	h.mu.Lock()
	k.dialing = false
	if err != nil {
		k.failures++
		k.steadyLocked()
		h.dialFails++
		h.dialErr = err
		failures := k.failures
		h.mu.Unlock()
		h.signal()
		c.connectFailed(failures, err)
		return err
	}
	if h.closed || !slices.Contains(h.conns, k) && h.conns != nil {
		h.mu.Unlock()
		cc.Close()
		return ErrStopped
	}
	c.stats.conns.Add(1)
	h.lastGrow = time.Now() // the growth interval runs from every opening, however long the dial took
	k.cc, k.cold, k.firstOut, k.answered, k.lastUsed, k.opened = cc, true, false, false, time.Now(), time.Now()
	k.steadyLocked()
	bc := dialed.Load()
	k.bc = bc
	if h.token != nil {
		h.token.freshen() // a new connection may take a new token: start it young
	}
	if k.dials++; k.dials > 1 {
		c.stats.reconnects.Add(1)
	}
	h.mu.Unlock()
	h.watch(cc, bc)
	cc.SetStateHook(func(cc *http.ClientConn) {
		// Ended, or idle while the slot has retired connections (a retired one whose last
		// request is done): the reaper closes it. A current connection going idle, at light
		// load after every request, wakes nothing. The hook may run under h.mu, and a
		// request's end takes no lock.
		if cc.Err() != nil || cc.InFlight() == 0 && k.retired.any() {
			h.reapSoon()
		}
		h.signal()
	})
	c.log(slog.LevelDebug, "apns: connected", slog.String("addr", h.addr)) // not under h.mu: the handler is the user's code
	h.signal()
	return nil
}

// pause waits for d, at most a second once Stop has begun, and Stop's beginning cuts it
// short; it returns false if Shutdown aborts.
func (h *h2Transport) pause(d time.Duration) bool {
	c := h.c
	var stop <-chan struct{}
	if isClosed(c.stopping) {
		d = min(d, time.Second)
	} else {
		stop = c.stopping
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-stop:
	case <-c.abortCtx.Done():
		return false
	}
	return true
}

// await registers the caller as waiting for room and returns the channel closed at the next
// change; the caller calls unawait once done waiting.
func (h *h2Transport) await() <-chan struct{} {
	h.sigMu.Lock()
	defer h.sigMu.Unlock()
	if h.changed == nil {
		h.changed = make(chan struct{})
	}
	h.waiting++
	return h.changed
}

func (h *h2Transport) unawait() {
	h.sigMu.Lock()
	h.waiting--
	h.sigMu.Unlock()
}

// signal wakes the callers waiting for room: a stream may have come free, a connection may
// have opened or failed. It takes no lock but sigMu, so that net/http's state hook may call
// it from anywhere.
func (h *h2Transport) signal() {
	h.sigMu.Lock()
	if h.waiting > 0 && h.changed != nil {
		close(h.changed)
		h.changed = make(chan struct{})
	}
	h.sigMu.Unlock()
}

// failed tells that a request on cc got no answer because of err. When cc has failed, has
// received a GOAWAY (net/http's not-sent errors) or left the request unanswered for its whole
// deadline, cc is retired, replaced at the next reservation and closed once its other
// requests are done: after a GOAWAY it takes none but finishes the ones it has. A stream
// reset or a cancellation concerns that request only: cc stays.
func (k *h2Conn) failed(cc *http.ClientConn, err error) {
	if errors.Is(err, context.Canceled) {
		return
	}
	h := k.h
	h.mu.Lock()
	// The request's own deadline (the write timeout; the caller's end is not reported here)
	// retires cc: a server that takes requests and never answers them is no connection.
	retire := k.cc == cc && (cc.Err() != nil || notSentByNetHTTP(err) || errors.Is(err, context.DeadlineExceeded))
	var idle []*http.ClientConn
	if retire {
		k.retireLocked()
		idle = k.sweepLocked()
	}
	h.mu.Unlock()
	closeConns(h.c, idle)
	if retire { // once per connection, not once per request on it
		h.c.log(slog.LevelWarn, "apns: connection lost", slog.String("addr", h.addr), slog.Any("err", err))
		h.c.reportError(fmt.Errorf("apns: connection to %s lost: %w", h.addr, err))
		h.signal()
	}
}

// retireLocked moves k's connection to the retired ones. A connection that ended without
// proving itself (an answer besides its first, or its first a second after it opened) counts
// as a failed attempt: the next one waits with backoff.
func (k *h2Conn) retireLocked() {
	if k.cc == nil {
		return
	}
	if !k.answered {
		k.failures++
		k.steadyLocked()
	}
	k.retired.add(k.cc)
	k.cc = nil
}

// sweepLocked returns the retired connections with no request in flight, for the caller to
// close once it has let go of the lock.
func (k *h2Conn) sweepLocked() (idle []*http.ClientConn) { return k.retired.sweep() }

// retiredConns are connections that take no new request and are closed once the requests
// they carry are done. The owner's lock guards them, but any, which a state hook reads
// without it.
type retiredConns struct {
	conns []*http.ClientConn
	some  atomic.Bool // len(conns) > 0
}

func (rs *retiredConns) add(cc *http.ClientConn) {
	rs.conns = append(rs.conns, cc)
	rs.some.Store(true)
}

// any reports whether there are retired connections; it takes no lock.
func (rs *retiredConns) any() bool { return rs.some.Load() }

// done reports whether r has no request left: none in flight, or closed (a closed connection
// may count requests in flight for ever: net/http's pending stream resets, never cleared once
// it is closed).
func done(r *http.ClientConn) bool { return r.InFlight() == 0 || r.Err() != nil }

// allDone reports whether every retired connection is done.
func (rs *retiredConns) allDone() bool {
	for _, r := range rs.conns {
		if !done(r) {
			return false
		}
	}
	return true
}

// sweep removes the connections that are done and returns them.
func (rs *retiredConns) sweep() (idle []*http.ClientConn) {
	if len(rs.conns) == 0 {
		return nil
	}
	live := rs.conns[:0]
	for _, r := range rs.conns {
		if done(r) {
			idle = append(idle, r)
		} else {
			live = append(live, r)
		}
	}
	clear(rs.conns[len(live):])
	rs.conns = live
	rs.some.Store(len(live) > 0)
	return idle
}

// take removes every retired connection and returns them.
func (rs *retiredConns) take() []*http.ClientConn {
	all := rs.conns
	rs.conns = nil
	rs.some.Store(false)
	return all
}

// closeConns closes connections that were opened; each is closed once, here.
func closeConns(c *Client, conns []*http.ClientConn) {
	for _, cc := range conns {
		cc.Close()
		c.stats.conns.Add(-1)
	}
}

// close closes every connection of k.
func (k *h2Conn) close() {
	h := k.h
	h.mu.Lock()
	all := k.retired.take()
	if k.cc != nil {
		all = append(all, k.cc)
	}
	k.cc = nil
	h.mu.Unlock()
	closeConns(h.c, all)
}

// dial makes the transport and opens n connections, each tried a few times. It fails only if
// none opens; the others are opened later, when work needs them.
func (h *h2Transport) dial(n int) ([]*h2Conn, error) {
	var protocols http.Protocols
	protocols.SetHTTP2(true)
	// With UnencryptedHTTP2 too, net/http speaks HTTP/2 on a connection from DialTLSContext
	// that is not a *tls.Conn: dialTLS's batchConn, TLS with ALPN "h2" already done.
	protocols.SetUnencryptedHTTP2(true)
	h.tr = &http.Transport{
		TLSClientConfig:     h.c.tlsConfig.Clone(),
		Protocols:           &protocols,
		Proxy:               h.proxy,
		DialTLSContext:      h.dialTLS,
		DisableCompression:  true,
		TLSHandshakeTimeout: h.c.set.dial(),
		HTTP2: &http.HTTP2Config{
			SendPingTimeout: http2IdlePingAfter,
			PingTimeout:     http2PingTimeout,
			// No HPACK dynamic table for the headers sent: every request carries a new
			// apns-id and, in practice, a new :path, which would evict an entry per request
			// (costly, and it soon evicts the constant headers too). Headers go as literals.
			MaxEncoderHeaderTableSize: 1,
		},
	}
	conns := make([]*h2Conn, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range conns {
		k := &h2Conn{h: h}
		conns[i] = k
		wg.Go(func() {
			for try := 1; try <= startDialAttempts; try++ {
				h.mu.Lock()
				k.dialing = true
				h.mu.Unlock()
				if errs[i] = h.connect(k); errs[i] == nil || h.c.abortCtx.Err() != nil {
					return
				}
			}
		})
	}
	wg.Wait()
	if slices.IndexFunc(errs, func(err error) bool { return err == nil }) < 0 {
		return conns, fmt.Errorf("apns: cannot reach %s: %w", h.addr, errors.Join(distinct(errs)...))
	}
	return conns, nil
}

// startLocked starts the scheduler on the connections; the caller holds c.mu (see
// transport.run), so that Stop waits for it.
func (h *h2Transport) startLocked(conns []*h2Conn) {
	done := make(chan struct{})
	stop := context.AfterFunc(h.c.abortCtx, func() {
		defer close(done)
		h.mu.Lock()
		all := slices.Clone(h.conns)
		h.mu.Unlock()
		for _, k := range all {
			k.close() // ends the requests in flight, which do not watch abortCtx
		}
	})
	h.mu.Lock()
	h.conns, h.base, h.stopAbort, h.abortDone = conns, len(conns), stop, done
	h.lastGrow = time.Now() // the first connection for load comes no sooner than the interval after Start's
	h.maxConns = max(h.maxConns, len(conns))
	h.mu.Unlock()
	h.startSilenceDetector()
	h.workers.Add(1)
	go h.schedule()
}

// schedule is the scheduler: it takes notifications from the queue until the queue is closed
// and drained, reserves a stream for each and sends each on a goroutine of its own. When no
// stream can be had because Stop has begun and the gateway cannot be reached, it reports the
// notification as unsent. While the pool may grow, it also closes the connections opened for
// load once they have been idle for the idle timeout.
func (h *h2Transport) schedule() {
	defer h.workers.Done()
	{
		quit, done := make(chan struct{}), make(chan struct{})
		go h.reaper(quit, done)
		defer func() { close(quit); <-done }()
	}
	if h.maxConns > h.base {
		quit, done := make(chan struct{}), make(chan struct{})
		go h.shrink(quit, done)
		defer func() { close(quit); <-done }()
	}
	for r := range h.queue {
		s, err := h.reserve(h.c.abortCtx, false)
		if err != nil {
			h.settle(r, outcome{err: err})
			continue
		}
		h.workers.Add(1)
		go h.sendOne(r, s)
	}
}

// sendOne delivers one notification on its reserved stream, retrying as deliver decides, and
// settles it.
func (h *h2Transport) sendOne(r *h2Request, s *h2Stream) {
	defer h.workers.Done()
	h.settle(r, h.deliver(h.c.abortCtx, s, r))
}

// reapSoon asks the reaper to close the connections that have ended. It takes no lock.
func (h *h2Transport) reapSoon() {
	select {
	case h.reap <- struct{}{}:
	default:
	}
}

// reaper closes, until quit is closed, the connections that have ended (the server closed
// them, or they failed) and the retired ones whose last request is done, as soon as their
// state hook tells, so that an idle client's Stats.Connections counts the open ones without
// waiting for the next request.
func (h *h2Transport) reaper(quit <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	for {
		select {
		case <-quit:
			return
		case <-h.reap:
		}
		var idle []*http.ClientConn
		h.mu.Lock()
		for _, k := range h.conns {
			if k.cc != nil && k.cc.Err() != nil {
				k.retireLocked()
			}
			idle = append(idle, k.sweepLocked()...)
		}
		h.mu.Unlock()
		closeConns(h.c, idle)
		h.signal()
	}
}

// shrink closes, until quit is closed, the connections opened for load that have carried no
// request for the idle timeout.
func (h *h2Transport) shrink(quit <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	idleFor := h.c.set.idle()
	t := time.NewTicker(max(min(idleFor/4, time.Second), 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-quit:
			return
		case <-t.C:
		}
		var idle []*http.ClientConn
		h.mu.Lock()
		keep := h.conns[:h.base]
		for _, k := range h.conns[h.base:] {
			// Reservations are made under h.mu: none can come after this look.
			quiet := !k.dialing && (k.cc == nil || k.cc.InFlight() == 0 && time.Since(k.lastUsed) >= idleFor)
			if !quiet || !k.retired.allDone() {
				keep = append(keep, k)
				continue
			}
			idle = append(idle, k.retired.take()...)
			if k.cc != nil {
				idle = append(idle, k.cc)
			}
			k.cc = nil
		}
		clear(h.conns[len(keep):])
		h.conns = keep
		h.mu.Unlock()
		if len(idle) > 0 {
			h.c.log(slog.LevelDebug, "apns: idle connection closed", slog.String("addr", h.addr), slog.Int("conns", len(keep)))
		}
		closeConns(h.c, idle)
	}
}

// refusePushes refuses new Push calls and returns a channel closed once the Push calls in
// progress have returned: Shutdown lets them finish before it aborts.
func (h *h2Transport) refusePushes() <-chan struct{} {
	h.mu.Lock()
	h.noPush = true
	h.mu.Unlock()
	done := make(chan struct{})
	go func() { h.pushes.Wait(); close(done) }()
	return done
}

// shut refuses new connections and Push calls, waits for the Push calls in progress and the
// connection attempts, and closes every connection; the scheduler and its requests have
// exited.
func (h *h2Transport) shut() {
	h.mu.Lock()
	h.closed = true
	conns, stopAbort, abortDone := h.conns, h.stopAbort, h.abortDone
	h.mu.Unlock()
	h.signal()
	h.pushes.Wait()
	h.dialers.Wait()
	if stopAbort != nil && !stopAbort() {
		<-abortDone // the abort hook is closing the connections: Stop returns after it
	}
	for _, k := range conns {
		k.close()
	}
	h.stopSilenceDetector()
	h.deadlines.stop()
}
