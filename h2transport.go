package apns

// This file owns the HTTP/2 transport (PROTOCOL.md §4): sending one request and deciding what
// to do with its answer (retry, settle, report), Push, and the shared request deadlines. Its
// connections and streams are in h2conn.go; the request encoding in h2request.go.

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Limits of the HTTP/2 transport.
const (
	maxResponseBody    = 4096
	http2PingTimeout   = 15 * time.Second
	http2IdlePingAfter = time.Minute
	maxRetryAfter      = time.Minute
)

// h2Transport is the HTTP/2 side of a Client. Its connections are in h2conn.go.
type h2Transport struct {
	c        *Client
	url      string // https://host:port
	addr     string // host:port
	queue    chan *h2Request
	token    *providerToken // nil for certificate auth
	topic    string
	proxy    func(*http.Request) (*url.URL, error)
	streams  int // requests per connection at most (WithStreams); 0: as the server allows
	tries    int
	tr       *http.Transport // makes the connections; never used for requests itself
	maxConns int             // connections at most (WithMaxConnections); at least Start's count

	bc        *channelManager // broadcast channel management (channels.go)
	workers   sync.WaitGroup  // the scheduler and its senders (h2conn.go)
	pushes    sync.WaitGroup  // Push calls in progress
	opened    []*h2Conn       // what open opened, for run or discard; Start's alone
	dialers   sync.WaitGroup  // connection attempts in progress
	deadlines sharedDeadlines

	mu        sync.Mutex    // guards the fields below, and the fields of the h2Conns
	conns     []*h2Conn     // Start's connections, then those opened for load
	base      int           // Start's count
	lastGrow  time.Time     // when the last connection was opened for load
	dialFails uint64        // failed connection attempts
	dialErr   error         // the last one's error
	closed    bool          // set by close: no new connection, no new Push
	noPush    bool          // set by refusePushes: no new Push
	reap      chan struct{} // a connection has ended: the reaper closes it (capacity 1)
	stopAbort func() bool
	abortDone chan struct{} // closed when the abort hook of startLocked has run

	// The silence detector (silence.go).
	silenceAfter, silenceTimeout time.Duration
	silenceQuit, silenceDone     chan struct{}
	watchMu                      sync.Mutex // guards watched; held for nothing else
	watched                      []*h2Watch

	sigMu   sync.Mutex    // guards the fields below; held for nothing else
	changed chan struct{} // closed and replaced when room may have come, while waiting > 0
	waiting int           // callers waiting for room
}

// newH2Transport returns the HTTP/2 transport of c, whose gateway's host is host; tok is the
// provider token, or nil for certificate authentication.
func newH2Transport(c *Client, host string, tok *providerToken) (*h2Transport, error) {
	set := &c.set
	c.tlsConfig.NextProtos = []string{"h2"}
	if tok != nil {
		tok.now = orClock(set.clock)
	}
	proxy := set.proxy
	if !set.proxySet {
		proxy = http.ProxyFromEnvironment
	}
	h := &h2Transport{
		c:        c,
		url:      "https://" + c.addr,
		addr:     c.addr,
		queue:    make(chan *h2Request, set.queue()),
		reap:     make(chan struct{}, 1),
		token:    tok,
		topic:    set.topic,
		proxy:    proxy,
		streams:  set.streams,
		tries:    orDefault(set.maxAttempts, DefaultMaxAttempts),
		maxConns: set.maxConns,
	}
	h.silenceAfter, h.silenceTimeout = set.silenceAfter, set.silenceTimeout
	var err error
	if h.bc, err = newChannelManager(c, host, tok); err != nil {
		return nil, err
	}
	return h, nil
}

// open makes the net/http transport and opens n connections (dial).
func (h *h2Transport) open(n int) error {
	var err error
	h.opened, err = h.dial(n)
	return err
}

// run starts the scheduler on the connections open opened.
func (h *h2Transport) run() {
	h.startLocked(h.opened)
	h.opened = nil
}

// discard closes the connections open opened.
func (h *h2Transport) discard() {
	for _, k := range h.opened {
		k.close()
	}
	h.opened = nil
}

// send builds the request of Send's notification and queues it. Send's priorities are the
// binary protocol's, 10 and 5; a zero expiry is sent as apns-expiration 0 (try once), as the
// binary protocol means it.
func (h *h2Transport) send(ctx context.Context, token string, expiry time.Time, priority uint8, payload map[string]interface{}) error {
	if priority != PRIORITY_IMMEDIATE && priority != PRIORITY_DELAYED {
		return invalidPriority(int(priority), "Send takes 10 (immediate) or 5 (power-saving); for 1 (lowest), use SendNotification")
	}
	if payload == nil {
		return ErrPayloadEmpty
	}
	r, err := newH2Request(&Notification{DeviceToken: token, Expiration: expiry, Priority: int(priority), Payload: payload}, h.topic)
	if err != nil {
		return err
	}
	if expiry.IsZero() {
		r.header[hdrExpiration] = zeroExpiryValue
	}
	return enqueue(ctx, h.c, h.queue, r)
}

func (h *h2Transport) queued() int { return len(h.queue) }

// hasFeedbackService is false: the HTTP/2 API's 410 answers take the feedback service's
// place (feedback.go).
func (h *h2Transport) hasFeedbackService() bool { return false }

// drain closes the queue and refuses new Push calls; the channel closes once the scheduler,
// the requests it sent and the Push calls in progress have ended. A Push in progress gets
// its answer first, unless the abort comes.
func (h *h2Transport) drain() <-chan struct{} {
	close(h.queue)
	pushesDone := h.refusePushes()
	done := make(chan struct{})
	go func() {
		h.workers.Wait()
		<-pushesDone
		close(done)
	}()
	return done
}

// finish reports what is left in the queue, which the scheduler never took, and closes every
// connection, the channel-management one included.
func (h *h2Transport) finish() {
	for r := range h.queue {
		h.settle(r, outcome{})
	}
	h.shut()
	h.bc.close()
}

// dialTLS opens a TLS connection for net/http: to the gateway, one that must negotiate HTTP/2
// and whose writes are batched (see batchConn); to anything else (an https proxy), a plain
// one, as net/http would have opened. Connections through an http proxy do not come here:
// net/http does their TLS itself, and they are not batched.
func (h *h2Transport) dialTLS(ctx context.Context, network, addr string) (net.Conn, error) {
	cfg := h.tr.TLSClientConfig.Clone()
	if addr != h.addr {
		cfg.NextProtos = nil
		if cfg.ServerName == "" || cfg.ServerName == h.c.tlsConfig.ServerName {
			cfg.ServerName, _, _ = net.SplitHostPort(addr)
		}
	}
	d := tls.Dialer{Config: cfg}
	conn, err := d.DialContext(ctx, network, addr)
	if err != nil || addr != h.addr {
		return conn, err
	}
	tc := conn.(*tls.Conn)
	if p := tc.ConnectionState().NegotiatedProtocol; p != "h2" {
		tc.Close()
		return nil, fmt.Errorf("apns: %s did not negotiate HTTP/2 (ALPN %q)", addr, p)
	}
	bc := newBatchConn(tc)
	if slot, ok := ctx.Value(dialedKey{}).(*atomic.Pointer[batchConn]); ok {
		slot.Store(bc) // for connect, which has the silence detector watch it
	}
	return bc, nil
}

// dialedKey is the context key under which connect asks dialTLS for the connection it opens.
type dialedKey struct{}

// outcome is how one notification ended.
type outcome struct {
	resp  *Response
	err   error // no answer at all (the client gave up)
	maybe bool  // with no answer: some attempt was sent and may have reached APNs
}

// deliver sends r until it gets a final answer, retrying what is worth retrying.
// s is the stream reserved for the first try, or nil.
func (h *h2Transport) deliver(ctx context.Context, s *h2Stream, r *h2Request) outcome {
	c := h.c
	reauthed := false
	var last outcome
	var notSent notSentError
	maybe := false
	for attempt := 1; ; attempt++ {
		if attempt > 1 {
			c.stats.replayed.Add(1)
		}
		resp, used, retryAfter, err := h.roundTrip(ctx, s, r)
		s = nil
		maybe = maybe || err != nil && !errors.As(err, &notSent)
		last = outcome{resp, err, maybe}
		var delay time.Duration
		switch {
		case err != nil && ctx.Err() != nil:
			return last
		case errors.As(err, &notSent) && notSent.final: // nothing sent, and a retry would not send it
			return last
		case errors.As(err, &notSent): // no connection: retry after a pause
		case err != nil: // no answer: it may or may not have reached APNs
			c.stats.duplicates.Add(1)
			c.stats.drops.Add(1)
		case resp.Sent():
			return last
		case resp.StatusCode == http.StatusForbidden && resp.Reason == "ExpiredProviderToken" && h.token != nil && !reauthed:
			reauthed = true
			if h.token.rejected(used) {
				attempt-- // a new token is not a retry of the same request
				continue
			}
			return last
		case resp.StatusCode == http.StatusTooManyRequests && resp.Reason != "TooManyProviderTokenUpdates",
			resp.StatusCode == http.StatusInternalServerError,
			resp.StatusCode == http.StatusServiceUnavailable,
			resp.Reason == "Shutdown":
			delay = retryAfter
		default:
			return last
		}
		if attempt >= h.tries {
			return last
		}
		if delay <= 0 {
			delay = backoff(attempt)
		}
		if c.logging() {
			status, reason := 0, ""
			if resp != nil {
				status, reason = resp.StatusCode, resp.Reason
			}
			c.log(slog.LevelInfo, "apns: retrying", slog.String("apns_id", r.id()), slog.Int("attempt", attempt),
				slog.Duration("after", delay), slog.Int("status", status), slog.String("reason", reason), slog.Any("err", err))
		}
		if !sleep(ctx, min(delay, maxRetryAfter)) {
			return last
		}
	}
}

// notSentError wraps the reason a request could not even be sent: it is no drop and no
// duplicate. A final one (the provider token cannot be signed) is not retried either.
type notSentError struct {
	err   error
	final bool
}

func (e notSentError) Error() string { return e.err.Error() }
func (e notSentError) Unwrap() error { return e.err }

// roundTrip makes one request. It returns the parsed answer, the authorization it used and
// the server's Retry-After, or the error that left it without an answer.
func (h *h2Transport) roundTrip(ctx context.Context, s *h2Stream, r *h2Request) (*Response, string, time.Duration, error) {
	s, err := h.stream(ctx, s)
	if err != nil {
		// Given up (Stop and no gateway) or stopped: a retry would get no stream either.
		return nil, "", 0, notSentError{err: err, final: errors.Is(err, errGaveUp) || errors.Is(err, ErrStopped)}
	}
	defer s.end()
	var reqCtx context.Context // ends when a server that never answers has had its time
	if ctx == h.c.abortCtx {
		// Not a child of the client's abort context, whose registry of children every
		// request would lock twice: the abort closes the connections instead (startLocked).
		reqCtx = h.deadlines.get(h.c.set.write())
	} else {
		var cancel context.CancelFunc
		reqCtx, cancel = context.WithTimeout(ctx, h.c.set.write())
		defer cancel()
	}
	var auth string
	if h.token != nil {
		if auth, err = h.token.get(); err != nil {
			h.c.reportError(err)
			return nil, "", 0, notSentError{err: err, final: true}
		}
	}
	a := &h2Attempt{url: url.URL{Scheme: "https", Host: h.addr, Path: r.path}}
	a.body.Reset(r.body)
	req := (&http.Request{
		Method:        http.MethodPost,
		URL:           &a.url,
		Header:        r.headerWith(auth),
		Body:          &a.body,
		ContentLength: int64(len(r.body)),
		Host:          h.addr,
	}).WithContext(reqCtx)
	res, err := s.roundTrip(ctx, req)
	if err != nil {
		if ctx.Err() != nil { // ended by the abort, or the caller: the connection is fine
			return nil, auth, 0, ctx.Err()
		}
		s.failed(err)
		if notSentByNetHTTP(err) {
			// Refused by a GOAWAY on every connection it was resent to: never processed, so
			// a retry is no duplicate, and a notification that runs out of tries so was
			// never sent.
			return nil, auth, 0, notSentError{err: err}
		}
		return nil, auth, 0, err
	}
	// From here on the request has its answer: the status is final, whatever becomes of the
	// body. A 200 whose body cannot be read was delivered; a rejection whose body cannot be
	// read is judged by its status and what of the body arrived. Sending it again could
	// deliver it twice.
	bp := responseBuffers.Get().(*[]byte)
	defer responseBuffers.Put(bp)
	body, rerr := readBody(res.Body, *bp)
	res.Body.Close()
	if rerr != nil && ctx.Err() == nil { // a connection that died with it is replaced by the next get
		h.c.reportError(fmt.Errorf("apns: reading the body of a %d answer: %w", res.StatusCode, rerr))
	}
	resp, perr := parseResponse(res.StatusCode, responseID(res.Header), body)
	if perr != nil && rerr == nil {
		h.c.reportError(perr)
	}
	var after time.Duration
	if v := res.Header["Retry-After"]; len(v) > 0 {
		if s, err := strconv.Atoi(v[0]); err == nil && s > 0 {
			after = time.Duration(s) * time.Second
		}
	}
	return resp, auth, after, nil
}

// h2Attempt holds what one request needs besides the http.Request, in one allocation.
type h2Attempt struct {
	url  url.URL
	body requestBody
}

// requestBody is a request's body: the encoded payload, read again for every attempt.
type requestBody struct{ bytes.Reader }

func (*requestBody) Close() error { return nil }

// responseBuffers holds buffers of maxResponseBody bytes for reading answers.
var responseBuffers = sync.Pool{New: func() any { b := make([]byte, maxResponseBody); return &b }}

// readBody reads up to len(buf) bytes of body into buf, and ignores the rest. On a read
// error it returns what it read before it with the error.
func readBody(body io.Reader, buf []byte) ([]byte, error) {
	n := 0
	for n < len(buf) {
		m, err := body.Read(buf[n:])
		n += m
		if err == io.EOF {
			break
		}
		if err != nil {
			return buf[:n], err
		}
	}
	return buf[:n], nil
}

// settle counts a notification's end and reports it when it was not delivered.
func (h *h2Transport) settle(r *h2Request, o outcome) {
	c := h.c
	switch {
	case o.resp != nil && o.resp.Sent():
		c.stats.delivered.Add(1)
		return
	case o.resp == nil && o.maybe: // sent at least once, never answered
		c.stats.unconfirmed.Add(1)
		c.reportRejection(&Rejection{Message: r.message(), Code: uint8(StatusUnknown), Reason: reasonUnconfirmed, ID: r.id(), ChannelID: r.channel})
		return
	case o.resp == nil:
		c.stats.unsent.Add(1)
		c.reportRejection(&Rejection{Message: r.message(), Code: uint8(StatusUnknown), Reason: "no answer", ID: r.id(), ChannelID: r.channel})
		return
	}
	resp := o.resp
	if resp.StatusCode == http.StatusGone && r.token != "" {
		c.addBadToken(BadToken{Token: r.token, Timestamp: resp.Timestamp})
	}
	code := uint8(codeOf(resp.StatusCode, resp.Reason))
	c.stats.reject(code)
	if c.logging() {
		to := slog.String("token", abbrev(r.token))
		if r.channel != "" { // a broadcast: no token
			to = slog.String("channel", r.channel)
		}
		c.log(slog.LevelInfo, "apns: notification rejected", slog.Int("status", resp.StatusCode),
			slog.String("reason", resp.Reason), to)
	}
	c.reportRejection(&Rejection{
		Message:    r.message(),
		Code:       code,
		StatusCode: resp.StatusCode,
		Reason:     resp.Reason,
		ID:         cmp(resp.ID, r.id()),
		Timestamp:  resp.Timestamp,
		ChannelID:  r.channel,
	})
}

// push is Push's work: one notification, synchronously, on the connection with the most free
// streams. Shutdown's
// deadline ends it too.
func (h *h2Transport) push(ctx context.Context, r *h2Request) (*Response, error) {
	h.mu.Lock()
	switch {
	case h.closed || h.noPush:
		h.mu.Unlock()
		return nil, ErrStopped
	case len(h.conns) == 0:
		h.mu.Unlock()
		return nil, ErrNotStarted
	}
	h.pushes.Add(1)
	h.mu.Unlock()
	defer h.pushes.Done()
	if ctx.Done() == nil {
		ctx = h.c.abortCtx // a context that never ends adds nothing to the abort
	} else {
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
		defer context.AfterFunc(h.c.abortCtx, cancel)()
	}
	o := h.deliver(ctx, nil, r)
	if o.resp == nil {
		return nil, o.err
	}
	if o.resp.StatusCode == http.StatusGone && r.token != "" {
		h.c.addBadToken(BadToken{Token: r.token, Timestamp: o.resp.Timestamp})
	}
	return o.resp, nil
}

// sharedDeadlines hands out the timeout contexts of requests that watch no context of their
// own caller: the requests that start within one slot (a 32nd of the timeout) share a context
// that ends a timeout after the slot's end. Each request so gets at least the timeout, at
// most a slot more, and costs no context, timer and channel of its own.
type sharedDeadlines struct {
	cur atomic.Pointer[deadlineSlot]

	mu    sync.Mutex // guards the field below, and the making of a slot
	slots []*deadlineSlot
}

type deadlineSlot struct {
	ctx    context.Context
	cancel context.CancelFunc
	until  time.Time // requests starting before it use ctx
}

// get returns the context for a request starting now with the given timeout.
func (d *sharedDeadlines) get(timeout time.Duration) context.Context {
	now := time.Now()
	if s := d.cur.Load(); s != nil && now.Before(s.until) {
		return s.ctx
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if s := d.cur.Load(); s != nil && now.Before(s.until) {
		return s.ctx
	}
	d.slots = slices.DeleteFunc(d.slots, func(s *deadlineSlot) bool { return s.ctx.Err() != nil })
	slot := timeout / 32
	s := &deadlineSlot{until: now.Add(slot)}
	s.ctx, s.cancel = context.WithTimeout(context.Background(), timeout+slot)
	d.slots = append(d.slots, s)
	d.cur.Store(s)
	return s.ctx
}

// stop releases the timers of the slots; requests using them end.
func (d *sharedDeadlines) stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, s := range d.slots {
		s.cancel()
	}
	d.slots = nil
	d.cur.Store(nil)
}

// h2Endpoint decides whether gateway names the HTTP/2 API and returns its URL: an https://
// URL, or one of Apple's hosts, binary or HTTP/2 (the binary hosts map to their HTTP/2
// successors on port 443).
func h2Endpoint(gateway string) (u string, ok bool) {
	if rest, found := strings.CutPrefix(gateway, "https://"); found {
		hostPort, _, _ := strings.Cut(rest, "/")
		return "https://" + hostPort, true
	}
	host, port, err := net.SplitHostPort(gateway)
	if err != nil {
		host, port = gateway, ""
	}
	switch strings.TrimSuffix(strings.ToLower(host), ".") {
	case "gateway.push.apple.com", "api.push.apple.com":
		host = "api.push.apple.com"
	case "gateway.sandbox.push.apple.com", "api.sandbox.push.apple.com", "api.development.push.apple.com":
		host = "api.sandbox.push.apple.com"
	default:
		return "", false
	}
	if port == "" || strings.HasPrefix(gateway, "gateway.") {
		port = "443"
	}
	return "https://" + net.JoinHostPort(host, port), true
}
