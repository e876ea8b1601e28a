package apns

// This file owns the HTTP/2 provider API transport (PROTOCOL.md §4): the Notification type of
// the idiomatic API, the request encoding, the connections and their senders, and the
// decision what to do with each answer. The Client lifecycle around it is in client.go.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Limits of the HTTP/2 provider API.
const (
	MaxHTTP2PayloadSize = 4096
	MaxVoIPPayloadSize  = 5120
	MaxCollapseIDSize   = 64
	DefaultStreams      = 100 // concurrent requests per connection
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
	ErrInvalidCollapseID = errors.New("apns: collapse id is longer than 64 bytes")
	ErrInvalidPushType   = errors.New("apns: push type is not one APNs knows")
	ErrNotStarted        = errors.New("apns: client is not started")
	ErrNotHTTP2          = errors.New("apns: call needs a client of the HTTP/2 provider API")
)

// Notification is one notification for the HTTP/2 provider API, with every header APNs takes.
// Zero fields take the defaults given.
type Notification struct {
	DeviceToken string    // hexadecimal device token (any even length)
	Topic       string    // apns-topic; default: the client's topic (WithTopic, or the token client's)
	ID          string    // apns-id, a lowercase UUID; generated when empty
	CollapseID  string    // apns-collapse-id, at most 64 bytes
	PushType    string    // apns-push-type; default: "background" for a content-available-only payload, else "alert"
	Priority    int       // apns-priority: 10, 5 or 1; default 10 (5 for background pushes)
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
// client gave up. It is an error, and what SetRejectionCallback's function receives.
type Rejection struct {
	Message    *Message
	Code       uint8     // the binary protocol's status code with the nearest meaning (see Status)
	StatusCode int       // HTTP status of the last answer; 0 for the binary protocol or no answer
	Reason     string    // APNs' reason, or the binary status's description
	ID         string    // apns-id, for the HTTP/2 API
	Timestamp  time.Time // with 410: when the token stopped being valid
}

func (r *Rejection) Error() string {
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
type h2Request struct {
	path   string // /3/device/<hex>
	header http.Header
	body   []byte
	token  string // lowercase hex
	prio   uint8
	expiry uint32
	topic  string // "" means the client's default
}

var validPushTypes = map[string]bool{
	"alert": true, "background": true, "complication": true, "controls": true, "fileprovider": true,
	"liveactivity": true, "location": true, "mdm": true, "pushtotalk": true, "voip": true, "widgets": true,
}

// newH2Request validates a notification and builds its request.
func newH2Request(n *Notification, defaultTopic string) (*h2Request, error) {
	tok := strings.ToLower(n.DeviceToken)
	if tok == "" || len(tok)%2 != 0 {
		if _, err := hex.DecodeString(tok); err != nil && !errors.Is(err, hex.ErrLength) {
			return nil, ErrTokenNotHex
		}
		return nil, ErrTokenLength
	}
	if _, err := hex.DecodeString(tok); err != nil {
		return nil, ErrTokenNotHex
	}
	var body []byte
	switch p := n.Payload.(type) {
	case nil:
		return nil, ErrPayloadEmpty
	case []byte:
		body = p
	case json.RawMessage:
		body = p
	default:
		var err error
		if body, err = json.Marshal(p); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrPayloadMarshal, err)
		}
	}
	if len(body) == 0 {
		return nil, ErrPayloadEmpty
	}
	pushType := n.PushType
	if pushType == "" {
		pushType = inferPushType(body)
	}
	if !validPushTypes[pushType] {
		return nil, ErrInvalidPushType
	}
	limit := MaxHTTP2PayloadSize
	if pushType == "voip" {
		limit = MaxVoIPPayloadSize
	}
	if len(body) > limit {
		return nil, ErrPayloadTooLarge
	}
	prio := n.Priority
	if prio == 0 {
		prio = PRIORITY_IMMEDIATE
		if pushType == "background" {
			prio = PRIORITY_DELAYED
		}
	}
	if prio != PRIORITY_IMMEDIATE && prio != PRIORITY_DELAYED && prio != PriorityPowerSaving {
		return nil, ErrInvalidPriority
	}
	if len(n.CollapseID) > MaxCollapseIDSize {
		return nil, ErrInvalidCollapseID
	}
	id := n.ID
	if id == "" {
		id = newUUID()
	}
	h := http.Header{
		"Apns-Push-Type": {pushType},
		"Apns-Priority":  {strconv.Itoa(prio)},
		"Apns-Id":        {id},
		"Content-Type":   {"application/json"},
	}
	r := &h2Request{path: "/3/device/" + tok, header: h, body: body, token: tok, prio: uint8(prio)}
	if !n.Expiration.IsZero() {
		exp, err := expirySeconds(n.Expiration)
		if err != nil {
			return nil, err
		}
		h["Apns-Expiration"] = []string{strconv.FormatUint(uint64(exp), 10)}
		r.expiry = exp
	}
	if topic := cmp(n.Topic, defaultTopic); topic != "" {
		h["Apns-Topic"] = []string{topic}
	}
	if n.CollapseID != "" {
		h["Apns-Collapse-Id"] = []string{n.CollapseID}
	}
	return r, nil
}

func cmp(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// inferPushType returns "background" for a payload whose aps dictionary has only
// content-available, and "alert" otherwise.
func inferPushType(body []byte) string {
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
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// message rebuilds the Message of a request for the callbacks.
func (r *h2Request) message() *Message {
	tok, _ := hex.DecodeString(r.token)
	return &Message{Token: tok, Expiry: r.expiry, Priority: r.prio, Payload: r.body}
}

// h2Transport is the HTTP/2 side of a Client.
type h2Transport struct {
	c       *Client
	url     string // https://host:port
	addr    string // host:port, for dialing
	queue   chan *h2Request
	token   *providerToken // nil for certificate auth
	topic   string
	proxy   func(*http.Request) (*url.URL, error)
	streams int
	tries   int
	now     func() time.Time

	mu    sync.Mutex // guards conns
	conns []*http.Transport
	next  int // round robin for Push
}

// start opens n connections and starts streams senders on each. With a proxy, connections are
// opened by the first requests instead.
func (h *h2Transport) start(n int) error {
	probe, _ := http.NewRequest(http.MethodPost, h.url+"/3/device/", nil)
	proxied := false
	if h.proxy != nil {
		u, err := h.proxy(probe)
		if err != nil {
			return fmt.Errorf("apns: choosing a proxy: %w", err)
		}
		proxied = u != nil
	}
	pre := make([]net.Conn, n)
	if !proxied {
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range pre {
			wg.Add(1)
			go func() {
				defer wg.Done()
				pre[i], errs[i] = h.c.dialRetry(startDialAttempts)
			}()
		}
		wg.Wait()
		if pre[0] == nil && allNil(pre) {
			return fmt.Errorf("apns: cannot reach %s: %w", h.addr, errors.Join(errs...))
		}
	}
	h.mu.Lock()
	for i := 0; i < n; i++ {
		h.conns = append(h.conns, h.newTransport(pre[i]))
	}
	conns := h.conns
	h.mu.Unlock()
	for _, tr := range conns {
		for j := 0; j < h.streams; j++ {
			h.c.workers.Add(1)
			go h.sender(tr)
		}
	}
	return nil
}

func allNil(conns []net.Conn) bool {
	for _, c := range conns {
		if c != nil {
			return false
		}
	}
	return true
}

// newTransport returns a transport that keeps one HTTP/2 connection to the server, starting
// with pre when it is not nil.
func (h *h2Transport) newTransport(pre net.Conn) *http.Transport {
	var protocols http.Protocols
	protocols.SetHTTP2(true)
	tr := &http.Transport{
		TLSClientConfig:    h.c.tlsConfig,
		ForceAttemptHTTP2:  true,
		Protocols:          &protocols,
		Proxy:              h.proxy,
		DisableCompression: true,
		HTTP2: &http.HTTP2Config{
			StrictMaxConcurrentRequests: true, // one connection, whatever the server's stream limit
			SendPingTimeout:             http2IdlePingAfter,
			PingTimeout:                 http2PingTimeout,
		},
		TLSHandshakeTimeout: h.c.set.dial(),
	}
	if pre != nil {
		var once sync.Once
		tr.DialTLSContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			var conn net.Conn
			once.Do(func() { conn, pre = pre, nil })
			if conn != nil {
				return conn, nil
			}
			return dialTLS(ctx, addr, h.c.tlsConfig, h.c.set.dial())
		}
	}
	return tr
}

// sender is one of a connection's streams: it takes notifications from the queue until the
// queue is closed and drained, and settles each.
func (h *h2Transport) sender(tr *http.Transport) {
	defer h.c.workers.Done()
	for r := range h.queue {
		h.settle(r, h.deliver(h.c.abortCtx, tr, r))
	}
}

// outcome is how one notification ended.
type outcome struct {
	resp *Response
	err  error // no answer at all (the client gave up)
}

// deliver sends r until it gets a final answer, retrying what is worth retrying.
func (h *h2Transport) deliver(ctx context.Context, tr *http.Transport, r *h2Request) outcome {
	c := h.c
	reauthed := false
	var last outcome
	for attempt := 1; ; attempt++ {
		if attempt > 1 {
			c.stats.replayed.Add(1)
		}
		resp, used, retryAfter, err := h.roundTrip(ctx, tr, r)
		last = outcome{resp, err}
		var delay time.Duration
		switch {
		case err != nil && ctx.Err() != nil:
			return last
		case err != nil: // no answer: it may or may not have reached APNs
			c.stats.duplicates.Add(1)
			c.stats.drops.Add(1)
			c.reportError(fmt.Errorf("apns: request to %s failed: %w", h.addr, err))
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
		if !sleep(ctx, min(delay, maxRetryAfter)) {
			return last
		}
	}
}

// roundTrip makes one request. It returns the parsed answer, the authorization it used and
// the server's Retry-After, or the error that left it without an answer.
func (h *h2Transport) roundTrip(ctx context.Context, tr *http.Transport, r *h2Request) (*Response, string, time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.url+r.path, bytes.NewReader(r.body))
	if err != nil {
		return nil, "", 0, err
	}
	req.Header = r.header.Clone()
	var auth string
	if h.token != nil {
		if auth, err = h.token.get(); err != nil {
			return nil, "", 0, err
		}
		req.Header["Authorization"] = []string{auth}
	}
	res, err := tr.RoundTrip(req)
	if err != nil {
		return nil, auth, 0, err
	}
	body, err := io.ReadAll(io.LimitReader(res.Body, maxResponseBody))
	res.Body.Close()
	if err != nil {
		return nil, auth, 0, err
	}
	resp, perr := parseResponse(res.StatusCode, res.Header.Get("Apns-Id"), body)
	if perr != nil {
		h.c.reportError(perr)
	}
	var after time.Duration
	if s, err := strconv.Atoi(res.Header.Get("Retry-After")); err == nil && s > 0 {
		after = time.Duration(s) * time.Second
	}
	return resp, auth, after, nil
}

// settle counts a notification's end and reports it when it was not delivered.
func (h *h2Transport) settle(r *h2Request, o outcome) {
	c := h.c
	switch {
	case o.resp != nil && o.resp.Sent():
		c.stats.delivered.Add(1)
		return
	case o.resp == nil:
		c.stats.unsent.Add(1)
		c.reportRejection(&Rejection{Message: r.message(), Code: uint8(StatusUnknown), Reason: "no answer", ID: r.header.Get("Apns-Id")})
		return
	}
	resp := o.resp
	if resp.StatusCode == http.StatusGone {
		c.addBadToken(BadToken{Token: r.token, Timestamp: resp.Timestamp})
	}
	c.stats.rejected.Add(1)
	c.reportRejection(&Rejection{
		Message:    r.message(),
		Code:       uint8(codeOf(resp.StatusCode, resp.Reason)),
		StatusCode: resp.StatusCode,
		Reason:     resp.Reason,
		ID:         cmp(resp.ID, r.header.Get("Apns-Id")),
		Timestamp:  resp.Timestamp,
	})
}

// push is Push's work: one notification, synchronously, on the next connection.
func (h *h2Transport) push(ctx context.Context, r *h2Request) (*Response, error) {
	h.mu.Lock()
	if len(h.conns) == 0 {
		h.mu.Unlock()
		return nil, ErrNotStarted
	}
	tr := h.conns[h.next%len(h.conns)]
	h.next++
	h.mu.Unlock()
	o := h.deliver(ctx, tr, r)
	if o.resp == nil {
		return nil, o.err
	}
	if o.resp.StatusCode == http.StatusGone {
		h.c.addBadToken(BadToken{Token: r.token, Timestamp: o.resp.Timestamp})
	}
	return o.resp, nil
}

// close closes the idle connections of every transport; the senders have exited.
func (h *h2Transport) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, tr := range h.conns {
		tr.CloseIdleConnections()
	}
}

// h2Endpoint decides whether gateway names the HTTP/2 API and returns its URL: an https://
// URL, or one of Apple's hosts, binary or HTTP/2 (the binary hosts map to their HTTP/2
// successors on port 443).
func h2Endpoint(gateway string) (u string, ok bool) {
	if rest, found := strings.CutPrefix(gateway, "https://"); found {
		return "https://" + strings.TrimSuffix(rest, "/"), true
	}
	host, port, err := net.SplitHostPort(gateway)
	if err != nil {
		host, port = gateway, ""
	}
	switch host {
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
