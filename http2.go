package apns

// This file owns the HTTP/2 provider API transport (PROTOCOL.md §4): the Notification type of
// the idiomatic API, the request encoding, the connections and their senders, and the
// decision what to do with each answer. The Client lifecycle around it is in client.go.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Limits of the HTTP/2 provider API.
const (
	MaxHTTP2PayloadSize = 4096
	MaxVoIPPayloadSize  = 5120
	MaxCollapseIDSize   = 64
	DefaultStreams      = 100 // before: the default cap of WithStreams; now the server's limit is the default
	DefaultMaxAttempts  = 5   // tries of one notification that meets retryable answers
	maxResponseBody     = 4096
	http2PingTimeout    = 15 * time.Second
	http2IdlePingAfter  = time.Minute
	maxRetryAfter       = time.Minute
)

// PriorityPowerSaving is apns-priority 1 (HTTP/2 API only): the device's power considerations
// come before everything else, and the notification does not wake the device.
const PriorityPowerSaving = 1

// Errors of the HTTP/2 API's input.
var (
	ErrInvalidCollapseID = errors.New("apns: collapse id is longer than 64 bytes or holds a control character")
	ErrInvalidPushType   = errors.New("apns: push type is not one APNs knows")
	ErrNotStarted        = errors.New("apns: client is not started")
	ErrNotHTTP2          = errors.New("apns: call needs a client of the HTTP/2 provider API")
)

// Notification is one notification for the HTTP/2 provider API, with every header APNs takes.
// Zero fields take the defaults given.
type Notification struct {
	DeviceToken string    // hexadecimal device token (any even length)
	Topic       string    // apns-topic; default: the client's topic (WithTopic, or the token client's)
	ID          string    // apns-id, a canonical lowercase UUID (else ErrInvalidID); generated when empty
	CollapseID  string    // apns-collapse-id, at most 64 bytes, no control characters
	PushType    string    // apns-push-type; default: "background" for a content-available-only payload, else "alert"
	Priority    int       // apns-priority: 10, 5 or 1; default 10. Background pushes go at 5 when 10 (or nothing) is given: APNs refuses them at 10
	Expiration  time.Time // apns-expiration; zero: header omitted, APNs stores the notification up to 30 days
	// Payload is the JSON payload: []byte or json.RawMessage are sent as they are, anything
	// else (a map, a struct, the payload builder) is marshalled.
	Payload any
}

// Response is APNs' answer to one notification.
type Response struct {
	StatusCode int       // HTTP status; 200 means accepted
	Reason     string    // APNs' reason for a rejection, passed through as sent
	ID         string    // apns-id of the notification
	Timestamp  time.Time // with 410: when APNs learned the token is no longer valid
}

// Sent reports whether APNs accepted the notification.
func (r *Response) Sent() bool { return r.StatusCode == http.StatusOK }

// Rejection describes a notification that will not be delivered: APNs rejected it, or the
// client gave up. It is an error, and what SetRejectionCallback's function receives. The
// channel calls (CreateChannel, ...) return it, with a nil Message, when APNs refuses them.
type Rejection struct {
	Message    *Message
	Code       uint8     // the binary protocol's status code with the nearest meaning (see Status)
	StatusCode int       // HTTP status of the last answer; 0 for the binary protocol or no answer
	Reason     string    // APNs' reason, or the binary status's description
	ID         string    // apns-id, for the HTTP/2 API; apns-request-id for broadcasts and channel calls
	Timestamp  time.Time // with 410: when the token stopped being valid
	ChannelID  string    // the broadcast channel, for broadcasts and channel calls (broadcast.go)
}

// Error describes the rejection by its HTTP status and reason, or by its binary status.
func (r *Rejection) Error() string {
	if r.Message == nil { // a channel-management call (broadcast.go)
		if r.Reason == "" { // an answer without APNs' JSON body
			return fmt.Sprintf("apns: channel request rejected: %d (no reason)", r.StatusCode)
		}
		return fmt.Sprintf("apns: channel request rejected: %d %s", r.StatusCode, r.Reason)
	}
	if r.StatusCode != 0 {
		return fmt.Sprintf("apns: notification rejected: %d %s", r.StatusCode, r.Reason)
	}
	return fmt.Sprintf("apns: notification rejected: status %d (%s)", r.Code, r.Reason)
}

// reasonCodes maps APNs reasons to the binary status with the nearest meaning.
var reasonCodes = map[string]Status{
	"BadDeviceToken":         StatusInvalidToken,
	"DeviceTokenNotForTopic": StatusInvalidToken,
	"Unregistered":           StatusInvalidToken,
	"ExpiredToken":           StatusInvalidToken,
	"MissingDeviceToken":     StatusMissingDeviceToken,
	"MissingTopic":           StatusMissingTopic,
	"BadTopic":               StatusInvalidTopicSize,
	"TopicDisallowed":        StatusInvalidTopicSize,
	"PayloadEmpty":           StatusMissingPayload,
	"PayloadTooLarge":        StatusInvalidPayloadSize,
	"BadCollapseId":          StatusProtocolError,
	"BadExpirationDate":      StatusProtocolError,
	"BadMessageId":           StatusProtocolError,
	"BadPriority":            StatusProtocolError,
	"DuplicateHeaders":       StatusProtocolError,
	"InvalidPushType":        StatusProtocolError,
	"BadPath":                StatusProtocolError,
	"MethodNotAllowed":       StatusProtocolError,
	"InternalServerError":    StatusProcessingError,
	"ServiceUnavailable":     StatusProcessingError,
	"Shutdown":               StatusShutdown,
	"TooManyRequests":        StatusProcessingError,
}

// codeOf returns the binary status for an answer: by reason, else by HTTP status class.
func codeOf(status int, reason string) Status {
	if code, ok := reasonCodes[reason]; ok {
		return code
	}
	switch {
	case status == http.StatusGone: // the token is no longer active, whatever the reason says
		return StatusInvalidToken
	case status == http.StatusForbidden, status >= 500:
		return StatusProcessingError
	default:
		return StatusUnknown
	}
}

// parseResponse reads APNs' answer: the apns-id header and, for a rejection, the JSON body
// {"reason": ..., "timestamp": milliseconds}. A body that is not such JSON leaves Reason empty
// and returns an error that also describes the HTTP status.
func parseResponse(status int, id string, body []byte) (*Response, error) {
	r := &Response{StatusCode: status, ID: id}
	if status == http.StatusOK || len(bytes.TrimSpace(body)) == 0 {
		return r, nil
	}
	var b struct {
		Reason    string `json:"reason"`
		Timestamp *int64 `json:"timestamp"`
	}
	if err := json.Unmarshal(body, &b); err != nil {
		return r, fmt.Errorf("apns: unreadable %d response body: %w", status, err)
	}
	r.Reason = b.Reason
	if b.Timestamp != nil {
		r.Timestamp = time.UnixMilli(*b.Timestamp).UTC()
	}
	return r, nil
}

// h2Request is a notification ready to go: headers and body built once, reused on retries.
// Once built, header and its value slices are never modified, since a request that net/http
// has not let go of may still read them; a change means a new map.
type h2Request struct {
	path   string      // /3/device/<hex>
	header http.Header // lowercase names, as HTTP/2 sends them; no authorization
	body   []byte
	token  string // lowercase hex
	prio   uint8
	expiry uint32
	vals   [4]string // backing of the per-notification header values: id, topic, expiration, collapse id

	auth       string      // authorization in authHeader
	authHeader http.Header // header plus authorization, for token authentication

	channel string // apns-channel-id of a broadcast (broadcast.go), whose token is empty
}

// Request header names, lowercase so that net/http sends them without converting them.
const (
	hdrID         = "apns-id"
	hdrPushType   = "apns-push-type"
	hdrPriority   = "apns-priority"
	hdrTopic      = "apns-topic"
	hdrExpiration = "apns-expiration"
	hdrCollapseID = "apns-collapse-id"
	hdrAuth       = "authorization"
	hdrType       = "content-type"
)

// Header values that many requests share; never modified.
var (
	pushTypeValues = map[string][]string{}
	priorityValues = map[int][]string{
		PRIORITY_IMMEDIATE: {"10"}, PRIORITY_DELAYED: {"5"}, PriorityPowerSaving: {"1"},
	}
	jsonValue       = []string{"application/json"}
	zeroExpiryValue = []string{"0"}
)

func init() {
	for _, t := range []string{"alert", "background", "complication", "controls", "fileprovider",
		"liveactivity", "location", "mdm", "pushtotalk", "voip", "widgets"} {
		pushTypeValues[t] = []string{t}
	}
}

// newH2Request validates a notification and builds its request.
func newH2Request(n *Notification, defaultTopic string) (*h2Request, error) {
	if n == nil {
		return nil, ErrNilNotification
	}
	if err := checkHeaderFields(n.ID, cmp(n.Topic, defaultTopic), n.CollapseID); err != nil {
		return nil, err
	}
	tok := strings.ToLower(n.DeviceToken)
	if !isHex(tok) {
		return nil, ErrTokenNotHex
	}
	if tok == "" || len(tok)%2 != 0 {
		return nil, ErrTokenLength
	}
	var body []byte
	switch p := n.Payload.(type) {
	case nil:
		return nil, ErrPayloadEmpty
	case []byte: // copied: the caller may reuse its buffer once Send returns
		body = slices.Clone(p)
	case json.RawMessage:
		body = slices.Clone(p)
	default:
		var err error
		if body, err = json.Marshal(p); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrPayloadMarshal, err)
		}
	}
	if len(body) == 0 || isNullPayload(body) {
		return nil, ErrPayloadEmpty
	}
	pushType := n.PushType
	if pushType == "" {
		pushType = inferPushType(body)
	}
	pushTypeValue := pushTypeValues[pushType]
	if pushTypeValue == nil {
		return nil, ErrInvalidPushType
	}
	limit, where := MaxHTTP2PayloadSize, "the HTTP/2 API allows"
	if pushType == "voip" {
		limit, where = MaxVoIPPayloadSize, "the HTTP/2 API allows for voip"
	}
	if len(body) > limit {
		return nil, payloadTooLarge(len(body), limit, where)
	}
	prio := n.Priority
	if prio == 0 {
		prio = PRIORITY_IMMEDIATE
	}
	if pushType == "background" && prio == PRIORITY_IMMEDIATE {
		prio = PRIORITY_DELAYED // APNs refuses background pushes at 10 (400 BadPriority)
	}
	prioValue := priorityValues[prio]
	if prioValue == nil {
		return nil, invalidPriority(prio, "the HTTP/2 API takes 10 (immediate), 5 (power-saving) or 1 (lowest)")
	}
	if len(n.CollapseID) > MaxCollapseIDSize {
		return nil, ErrInvalidCollapseID
	}
	var exp uint32
	if !n.Expiration.IsZero() {
		var err error
		if exp, err = expirySeconds(n.Expiration); err != nil {
			return nil, err
		}
	}
	id := n.ID
	if id == "" {
		id = newUUID()
	}
	r := &h2Request{path: "/3/device/" + tok, body: body, token: tok, prio: uint8(prio), expiry: exp}
	r.vals[0] = id
	h := make(http.Header, 8)
	h[hdrPushType] = pushTypeValue
	h[hdrPriority] = prioValue
	h[hdrID] = r.vals[0:1:1]
	h[hdrType] = jsonValue
	if topic := cmp(n.Topic, defaultTopic); topic != "" {
		r.vals[1] = topic
		h[hdrTopic] = r.vals[1:2:2]
	}
	if !n.Expiration.IsZero() {
		r.vals[2] = strconv.FormatUint(uint64(exp), 10)
		h[hdrExpiration] = r.vals[2:3:3]
	}
	if n.CollapseID != "" {
		r.vals[3] = n.CollapseID
		h[hdrCollapseID] = r.vals[3:4:4]
	}
	r.header = h
	return r, nil
}

// id returns the request's apns-id.
func (r *h2Request) id() string { return r.vals[0] }

// headerWith returns the request's header with authorization auth, if not empty. The map for
// one value is built once and kept for retries.
func (r *h2Request) headerWith(auth string) http.Header {
	if auth == "" {
		return r.header
	}
	if r.authHeader == nil || r.auth != auth {
		h := make(http.Header, len(r.header)+1)
		for k, v := range r.header {
			h[k] = v
		}
		h[hdrAuth] = []string{auth}
		r.auth, r.authHeader = auth, h
	}
	return r.authHeader
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

func cmp(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

var contentAvailable = []byte("content-available")

// inferPushType returns "background" for a payload whose aps dictionary has only
// content-available, and "alert" otherwise. A payload that does not spell the key out, and has
// no escapes that could spell it, cannot have it, and is not parsed.
func inferPushType(body []byte) string {
	if !bytes.Contains(body, contentAvailable) && bytes.IndexByte(body, '\\') < 0 {
		return "alert"
	}
	var p struct {
		Aps map[string]json.RawMessage `json:"aps"`
	}
	if json.Unmarshal(body, &p) == nil && len(p.Aps) == 1 && p.Aps["content-available"] != nil {
		return "background"
	}
	return "alert"
}

// newUUID returns a random (version 4) UUID in canonical lowercase form.
func newUUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var out [36]byte
	hex.Encode(out[0:8], b[0:4])
	out[8] = '-'
	hex.Encode(out[9:13], b[4:6])
	out[13] = '-'
	hex.Encode(out[14:18], b[6:8])
	out[18] = '-'
	hex.Encode(out[19:23], b[8:10])
	out[23] = '-'
	hex.Encode(out[24:], b[10:])
	return string(out[:])
}

// message rebuilds the Message of a request for the callbacks.
func (r *h2Request) message() *Message {
	tok, _ := hex.DecodeString(r.token)
	return &Message{Token: tok, Expiry: r.expiry, Priority: r.prio, Payload: r.body}
}

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

	pushes    sync.WaitGroup // Push calls in progress
	dialers   sync.WaitGroup // connection attempts in progress
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

// batchConn is an HTTP/2 connection's TLS connection with its writes gathered. net/http's
// HTTP/2 client flushes after each frame it writes, a request's HEADERS and then its DATA,
// and each flush costs a TLS record (its encryption) and a system call, made while the
// connection's write lock is held. Here Write only copies the bytes into a buffer; one
// goroutine per connection writes whatever has gathered meanwhile as one TLS write. With
// many requests in flight their frames share records and system calls, and with one the
// request's two frames do.
//
// A write error closes the connection, which fails its reads too, and is returned by every
// Write after it. Write blocks while batchLimit bytes are waiting, so a peer that stops
// reading still stops the writers. Close drops what has not been written.
type batchConn struct {
	*tls.Conn // reads, addresses, deadlines, ConnectionState

	mu    sync.Mutex
	ready sync.Cond // the writer waits here for bytes, or the end
	room  sync.Cond // Writes wait here for the buffer to shrink
	buf   []byte    // written, not yet handed to the TLS connection
	spare []byte    // the writer's previous batch, for reuse
	err   error     // the first write error, or net.ErrClosed after Close
	done  chan struct{}

	// The silence detector's (silence.go): where the bytes written stand in the frames,
	// whether a PING probe waits for a place between two frames, and the reads made.
	preface, hn, left int
	hdr               [frameHeaderLen]byte
	framed            bool // a frame followed the preface: the preface's SETTINGS
	inBlock, pingDue  bool
	reads             atomic.Uint64
	suspect           atomic.Bool // probed, no answer yet: the pool gives it no new request
}

// batchLimit is how many bytes may wait for the writer before Write blocks.
const batchLimit = 256 << 10

// batchYield is the size below which the writer yields once before writing.
const batchYield = 16 << 10

func newBatchConn(tc *tls.Conn) *batchConn {
	c := &batchConn{Conn: tc, done: make(chan struct{}), preface: clientPrefaceLen}
	c.ready.L, c.room.L = &c.mu, &c.mu
	go c.writeLoop()
	return c
}

func (c *batchConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.err == nil && len(c.buf) >= batchLimit {
		c.room.Wait()
	}
	if c.err != nil {
		return 0, c.err
	}
	if len(c.buf) == 0 {
		c.ready.Signal()
	}
	c.buf = append(c.buf, p...)
	c.track(p)
	c.sendDueLocked()
	return len(p), nil
}

// Close closes the TLS connection, which interrupts a write in progress, and waits for the
// writer to exit.
func (c *batchConn) Close() error {
	c.mu.Lock()
	if c.err == nil {
		c.err = net.ErrClosed
	}
	c.ready.Signal()
	c.room.Broadcast()
	c.mu.Unlock()
	err := c.Conn.Close()
	<-c.done
	return err
}

func (c *batchConn) writeLoop() {
	defer close(c.done)
	c.mu.Lock()
	for {
		for len(c.buf) == 0 && c.err == nil {
			c.ready.Wait()
		}
		if c.err != nil {
			c.mu.Unlock()
			return
		}
		if len(c.buf) < batchYield {
			// Let the goroutines that are ready run first: the one that woke the writer
			// is about to add its request's DATA, and others their requests.
			c.mu.Unlock()
			runtime.Gosched()
			c.mu.Lock()
		}
		out := c.buf
		c.buf, c.spare = c.spare[:0], nil
		c.mu.Unlock()
		_, err := c.Conn.Write(out)
		c.mu.Lock()
		if cap(out) <= 2*batchLimit {
			c.spare = out
		}
		c.room.Broadcast()
		if err != nil && c.err == nil {
			c.err = err
			c.mu.Unlock()
			c.Conn.Close()
			return
		}
	}
}

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
