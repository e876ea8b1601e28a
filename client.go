package apns

// This file owns Client: what is the same for both protocols. Its settings, admission (Send
// and the queue's bounds), the Start/Stop/Shutdown state machine and the statistics; the
// callbacks are in callbacks.go, the feedback clients in feedback.go. Each protocol is a
// transport under it: binary.go (the binary protocol), h2transport.go (the HTTP/2 API).

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// BadMessageCallback is called with each notification that APNs rejected and its status code
// (see Status). See Client.SetCallback for when and where it runs.
type BadMessageCallback func(m *Message, code uint8)

// Client sends notifications to APNs, over the HTTP/2 provider API or the legacy binary
// protocol (CreateClient decides), through a queue served by a number of TLS connections.
//
// A Client is safe for concurrent use by multiple goroutines. Its settings are fixed by
// CreateClient; only the callback may change later.
type Client struct {
	// Immutable after CreateClient.
	addr      string // host:port
	tlsConfig *tls.Config
	set       settings
	t         transport     // the protocol: *binaryTransport or *h2Transport
	stopping  chan struct{} // closed when Stop begins: Send refuses, blocked Sends return
	abortCtx  context.Context
	abort     context.CancelFunc // called when Shutdown's context ends: workers stop waiting
	done      chan struct{}      // closed when Stop has finished
	events    *dispatcher        // runs the callbacks (callbacks.go)

	mu        sync.Mutex // guards the fields below
	started   bool
	stopped   bool
	cb        BadMessageCallback
	rejectCB  func(*Rejection)
	feedbacks []*FeedbackClient

	senders sync.WaitGroup // Sends between their stopped check and their enqueue
	opening sync.WaitGroup // a Start opening connections: Stop waits for it to close them

	stats counters
}

// transport is one protocol under a Client: binaryTransport (binary.go) or h2Transport
// (h2transport.go). Client holds the policy that is the same for both; a transport carries
// the queue's notifications over its connections and settles each: counted delivered, or
// reported through the client (callbacks.go).
type transport interface {
	// open opens n connections, trying each a few times, and keeps them for run or discard:
	// Start calls exactly one of the two next. It fails only when none opened.
	open(n int) error
	// run starts serving the queue on what open opened. Start calls it under the client's
	// lock, after checking that Stop has not begun, so that Stop's drain sees the work.
	run()
	// discard closes what open opened.
	discard()
	// send validates Send's notification, encodes it and queues it (enqueue).
	send(ctx context.Context, token string, expiry time.Time, priority uint8, payload map[string]interface{}) error
	// queued is how many notifications wait in the queue.
	queued() int
	// hasFeedbackService reports whether the protocol has a feedback service (feedback.go).
	hasFeedbackService() bool
	// drain begins Stop's wait, once no Send is in progress: it closes the queue and returns
	// a channel closed once every notification taken from the queue, and every Push, has
	// ended. The client's abort (Shutdown's deadline) ends them sooner.
	drain() <-chan struct{}
	// finish ends Stop, after drain's channel and the abort: it reports what is left in the
	// queue with StatusUnknown and closes every connection.
	finish()
}

// CreateClient returns a client for the gateway at gateway, which also decides the protocol,
// unless WithProtocol does: Apple's hosts (api.push.apple.com and api.sandbox.push.apple.com,
// and the retired binary gateway.push.apple.com and gateway.sandbox.push.apple.com, which map
// to their api.* successors on port 443) and https:// URLs mean the HTTP/2 provider API; any
// other address, "host" or "host:port" (port 2195 by default; IPv6 literals in brackets, or
// bare without a port), means the binary protocol. cert and key are the PEM-encoded client
// certificate and private key; both may be empty for a gateway that does not ask for one
// (for provider-token authentication, use CreateTokenClient). The server's certificate is
// verified against the system roots for the gateway's host unless anyServerCert is true; to
// trust another CA, pass WithTLSConfig. The connection uses TLS 1.2 or later.
//
// No connection is made until Start.
func CreateClient(gateway string, cert, key []byte, anyServerCert bool, opts ...Option) (*Client, error) {
	return newClient(gateway, cert, key, anyServerCert, nil, opts)
}

// CreateTokenClient returns a client of the HTTP/2 provider API that authenticates with a
// provider token (JWT) instead of a certificate. p8 is the PEM-encoded P-256 signing key from
// Apple, keyID its 10-character key ID, teamID the team's ID and topic the default apns-topic
// (usually the app's bundle ID). All connections share one token, made on first use and
// replaced every 50 minutes. gateway is as for CreateClient; the protocol is always HTTP/2.
func CreateTokenClient(gateway string, p8 []byte, keyID, teamID, topic string, opts ...Option) (*Client, error) {
	key, err := parseAuthKey(p8)
	if err != nil {
		return nil, err
	}
	tok := &providerToken{key: key, keyID: keyID, teamID: teamID}
	opts = append([]Option{WithTopic(topic)}, opts...)
	opts = append(opts, WithProtocol(ProtocolHTTP2))
	return newClient(gateway, nil, nil, false, tok, opts)
}

func newClient(gateway string, cert, key []byte, anyServerCert bool, tok *providerToken, opts []Option) (*Client, error) {
	var set settings
	for _, opt := range opts {
		opt(&set)
	}
	endpoint, isH2 := h2Endpoint(gateway)
	switch set.protocol {
	case ProtocolBinary:
		isH2 = false
	case ProtocolHTTP2:
		if !isH2 {
			endpoint, isH2 = "https://"+gateway, true
		}
	}
	addrIn, defPort := gateway, DefaultGatewayPort
	if isH2 {
		addrIn, defPort = strings.TrimPrefix(endpoint, "https://"), "443"
	}
	addr, host, err := splitAddr(addrIn, defPort)
	if err != nil {
		return nil, err
	}
	cfg, err := makeTLSConfig(set.tlsConfig, cert, key, anyServerCert)
	if err != nil {
		return nil, err
	}
	if cfg.ServerName == "" {
		cfg.ServerName = host
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Client{
		addr:      addr,
		tlsConfig: cfg,
		set:       set,
		stopping:  make(chan struct{}),
		abortCtx:  ctx,
		abort:     cancel,
		done:      make(chan struct{}),
	}
	c.events = newDispatcher(c)
	if !isH2 {
		c.t = newBinaryTransport(c)
		return c, nil
	}
	if c.t, err = newH2Transport(c, host, tok); err != nil {
		return nil, err
	}
	return c, nil
}

func orClock(now func() time.Time) func() time.Time {
	if now == nil {
		return time.Now
	}
	return now
}

// splitAddr returns addr as host:port, adding defPort when it has none, and its host.
func splitAddr(addr, defPort string) (hostPort, host string, err error) {
	if addr == "" {
		return "", "", errors.New("apns: empty address")
	}
	if ip := net.ParseIP(addr); ip != nil { // a bare IPv6 (or IPv4) literal
		return net.JoinHostPort(addr, defPort), addr, nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil { // no port: "host" or "[::1]"
		host, port = addr, defPort
		if len(host) > 1 && host[0] == '[' && host[len(host)-1] == ']' {
			host = host[1 : len(host)-1]
		}
	}
	if host == "" {
		return "", "", fmt.Errorf("apns: address %q has no host", addr)
	}
	return net.JoinHostPort(host, port), host, nil
}

func makeTLSConfig(base *tls.Config, cert, key []byte, anyServerCert bool) (*tls.Config, error) {
	cfg := &tls.Config{}
	if base != nil {
		cfg = base.Clone()
	}
	if cfg.MinVersion < tls.VersionTLS12 {
		cfg.MinVersion = tls.VersionTLS12
	}
	if anyServerCert {
		cfg.InsecureSkipVerify = true
	}
	if len(cert) > 0 || len(key) > 0 {
		pair, err := tls.X509KeyPair(cert, key)
		if err != nil {
			return nil, fmt.Errorf("apns: loading client certificate: %w", err)
		}
		cfg.Certificates = append(cfg.Certificates, pair)
	}
	return cfg, nil
}

// SetCallback sets the function that is told about every rejected notification. It may be
// called at any time; nil removes the callback.
//
// Callbacks run one at a time on a goroutine owned by the client (a new one after a quiet
// spell), never while a lock of the client is held, in the order in which the client learned
// of the rejections (for one
// connection, in the order the frames were written). A slow callback delays later callbacks
// but never the workers. A panic in the callback is not recovered.
//
// Stop returns after every callback already due has run, so the callback must not call Stop
// or Shutdown: the call would wait for the callback that made it, and never return. To stop
// the client from a callback, call Stop on another goroutine (go c.Stop()), as with
// http.Server.Shutdown from a handler; that Stop, and any other, returns once the callback
// has returned and the callbacks due after it have run.
func (c *Client) SetCallback(cb BadMessageCallback) {
	c.mu.Lock()
	c.cb = cb
	c.mu.Unlock()
}

// SetRejectionCallback sets a function that is told about every notification that will not be
// delivered, with everything known about it: for the HTTP/2 API the HTTP status, APNs' reason
// string (unknown reasons are passed through), apns-id and, with 410, the timestamp. It runs
// like the callback of SetCallback, after it, on the same goroutine, and like it must not call
// Stop or Shutdown, which wait for it (call go c.Stop() instead). nil removes it.
func (c *Client) SetRejectionCallback(f func(*Rejection)) {
	c.mu.Lock()
	c.rejectCB = f
	c.mu.Unlock()
}

// Start opens workerCount TLS connections to the gateway and starts serving the queue on
// them. It tries each connection a few times, and tells the error handler of each failed
// attempt (it may hear of them after Start has returned). If none can be opened Start returns
// the error, leaves nothing running once the handler has run, and may be called again. A
// connection that failed while others opened is retried later with backoff: on the binary
// protocol at once, in the background; over HTTP/2 when the work needs it. Stop called while
// Start is opening connections cuts the attempts short, waits for Start to close what it
// opened, and Start then returns ErrStopped.
func (c *Client) Start(workerCount int) error {
	if workerCount < 1 {
		return ErrNoWorkers
	}
	c.mu.Lock()
	switch {
	case c.stopped:
		c.mu.Unlock()
		return ErrStopped
	case c.started:
		c.mu.Unlock()
		return ErrAlreadyStarted
	}
	c.started = true // claims Start; undone below if no connection opens
	c.mu.Unlock()
	if hook := c.set.startClaimed; hook != nil {
		hook()
	}
	c.mu.Lock()
	if c.stopped { // Stop ran since Start claimed the start
		c.mu.Unlock()
		return ErrStopped
	}
	c.opening.Add(1) // Stop, which waits for it, has not begun
	c.mu.Unlock()
	defer c.opening.Done()

	err := c.t.open(workerCount)
	c.mu.Lock()
	if err == nil && !c.stopped { // else Stop ran meanwhile: it found no work to wait for
		c.t.run()
		c.mu.Unlock()
		return nil
	}
	c.mu.Unlock()
	c.t.discard()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return ErrStopped
	}
	c.started = false
	return c.startError(err)
}

// startError adds to Start's error what timed out when a connection attempt ran out of time
// in the TLS handshake, whose error says only "context deadline exceeded" (a TCP connect that
// times out says so itself).
func (c *Client) startError(err error) error {
	var op *net.OpError
	if !errors.Is(err, context.DeadlineExceeded) || errors.As(err, &op) {
		return err
	}
	return fmt.Errorf("%w (the TLS handshake timed out: %v per attempt, %d attempts; see WithDialTimeout)", err, c.set.dial(), startDialAttempts)
}

// distinct returns errs without repeats of the same text, the first of each kept.
func distinct(errs []error) []error {
	var out []error
	seen := map[string]bool{}
	for _, err := range errs {
		if err != nil && !seen[err.Error()] {
			seen[err.Error()] = true
			out = append(out, err)
		}
	}
	return out
}

// Bounds of the lifecycle, the same on both transports.
const (
	// startDialAttempts is how often Start tries each connection before giving up on it.
	startDialAttempts = 3
	// stopDialAttempts is how many connection attempts in a row that got nothing done a
	// connection makes once Stop has begun before what it still holds is reported with
	// StatusUnknown: failed dials, and connections that confirmed (binary) or answered
	// (HTTP/2) nothing. One that does starts the count again.
	stopDialAttempts = 3
)

// Send validates a notification, encodes it and queues it for the workers. It returns an
// error for bad input (ErrTokenNotHex, ErrTokenLength, ErrPayloadEmpty, ErrPayloadMarshal,
// ErrPayloadTooLarge, ErrInvalidPriority, ErrInvalidExpiry) and ErrStopped once Stop has
// begun; the 2014 API panicked there instead. A zero expiry asks APNs to try once and not
// store the notification.
//
// Send may be called before Start: the notification waits in the queue. Send blocks while the
// queue is full. A nil error means the client has taken responsibility for the notification:
// it will be assumed delivered or handed to the callback.
//
// A payload whose aps dictionary holds only content-available is a background push, which
// APNs forbids at priority 10: Send writes it at priority 5 even when PRIORITY_IMMEDIATE is
// given, over both protocols.
func (c *Client) Send(token string, expiry time.Time, priority uint8, payload map[string]interface{}) error {
	return c.SendContext(context.Background(), token, expiry, priority, payload)
}

// SendContext is Send with a context that bounds the wait for room in the queue. When ctx ends
// first, the notification is not queued and ctx's error is returned.
//
// A payload whose aps dictionary holds only content-available goes at priority 5 even when
// PRIORITY_IMMEDIATE is given (APNs refuses background pushes at 10); over HTTP/2 it goes as
// a background push (apns-push-type background).
//
// On a client of the HTTP/2 API the token may have any even number of hex digits, the payload
// up to 4096 bytes, and a zero expiry is sent as apns-expiration 0.
func (c *Client) SendContext(ctx context.Context, token string, expiry time.Time, priority uint8, payload map[string]interface{}) error {
	return c.t.send(ctx, token, expiry, priority, payload)
}

// SendNotification validates a notification of the HTTP/2 API and queues it, like Send. Its
// outcome reaches the callbacks only if it is not delivered. On a binary client it returns
// ErrNotHTTP2.
func (c *Client) SendNotification(ctx context.Context, n *Notification) error {
	h, err := c.http2()
	if err != nil {
		return err
	}
	r, err := newH2Request(n, h.topic)
	if err != nil {
		return err
	}
	return enqueue(ctx, c, h.queue, r)
}

// Push sends one notification of the HTTP/2 API synchronously, bypassing the queue and the
// callbacks, and returns APNs' answer; a rejection is a Response whose Sent is false, not an
// error. It retries like the queue does. The error reports bad input, a client that is not
// started (ErrNotStarted) or stopping (ErrStopped: Stop has begun; a Push already in progress
// then gets its answer first), or a notification that got no answer (ctx ended, or the
// connection kept failing). On a binary client it returns ErrNotHTTP2.
func (c *Client) Push(ctx context.Context, n *Notification) (*Response, error) {
	h, err := c.http2()
	if err != nil {
		return nil, err
	}
	r, err := newH2Request(n, h.topic)
	if err != nil {
		return nil, err
	}
	return h.push(ctx, r)
}

// http2 returns the client's HTTP/2 transport, for the calls of the HTTP/2 API alone (Push,
// SendNotification, broadcasts and channels), or ErrNotHTTP2 on a binary client.
func (c *Client) http2() (*h2Transport, error) {
	if h, ok := c.t.(*h2Transport); ok {
		return h, nil
	}
	return nil, ErrNotHTTP2
}

// enqueue puts an accepted notification on a queue, unless Stop has begun or ctx ends first.
func enqueue[T any](ctx context.Context, c *Client, queue chan T, v T) error {
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		return ErrStopped
	}
	c.senders.Add(1)
	c.mu.Unlock()
	defer c.senders.Done()
	select {
	case queue <- v: // the common case, without a full select
		c.stats.accepted.Add(1)
		return nil
	default:
	}
	select {
	case queue <- v:
		c.stats.accepted.Add(1)
		return nil
	case <-c.stopping:
		return ErrStopped
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Stop stops the client gracefully: Send refuses new notifications, the workers write
// everything queued, end each connection with a sentinel frame whose rejection confirms every
// frame before it, wait until every frame in flight is confirmed, reported or assumed
// delivered (up to the assume-sent timeout when the gateway does not answer the sentinel),
// close their connections and exit, feedback polling stops, and the callbacks already due
// run. The feedback polls in progress get FeedbackStopGrace, together, to finish. Stop is
// idempotent; later calls wait for the first to finish. It returns nil.
//
// Stop is bounded when the gateway is unreachable, on both protocols. A binary worker gives
// up after exactly three connection attempts in a row made after Stop began that confirm
// nothing (failed dials, and connections that confirmed no notification; one that confirms
// any starts the count again); after a connection that confirmed nothing the next carries a
// single notification and its sentinel, so a gateway that takes two frames per connection is
// never given up on. Each attempt takes at most the dial timeout, or, when a write blocks,
// the write timeout plus 2 s for an error response, plus up to 1 s of backoff before the
// next. An HTTP/2 connection makes at most 3 more connection attempts without an answer,
// each within the dial timeout (or the write timeout, when the connection opens and its
// requests get no answer) and at most a second apart; a Push in progress when Stop is called
// gets its answer first; a notification that was sent and
// got no answer is retried as WithMaxAttempts allows, within that bound. What is then still
// held is reported with StatusUnknown: counted in Stats.Unsent if it was never written or
// sent, in Stats.Unconfirmed if it may have arrived. Shutdown bounds it all.
//
// Stop and Shutdown must not be called from the callbacks (SetCallback, SetRejectionCallback)
// or the error handler (WithErrorHandler, feedback poll errors included): they wait for those
// to return, so such a call would wait for itself and never return. Call them on another
// goroutine instead (go c.Stop()), as with http.Server.Shutdown from a handler: that Stop,
// and any other, returns once the handler has returned and the callbacks due have run.
func (c *Client) Stop() error {
	return c.Shutdown(context.Background())
}

// Shutdown is Stop with a deadline. When ctx ends before the workers are done, they stop
// waiting: frames already written are counted as delivered without waiting out their window,
// and notifications not yet written are reported with StatusUnknown. A write blocked by a
// gateway that stopped reading is interrupted: the frames it had not finished count as not
// written. When ctx ends during the feedback polls' FeedbackStopGrace, the polls in progress
// are cut short at once (the tuples they read are kept). In either case Shutdown returns
// ctx's error.
//
// Once ctx has ended, Shutdown returns ctx's error without waiting for the callbacks and the
// error handler, as http.Server.Shutdown does with handlers: a callback that is running (user
// code) cannot be interrupted. The callbacks still due, those of the notifications Shutdown
// gave up on included, then run after Shutdown has returned, one at a time on the client's
// dispatcher goroutine, which exits once they all have; a later Stop waits for that. Until
// ctx ends, Shutdown waits for them as Stop does.
func (c *Client) Shutdown(ctx context.Context) error {
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		select {
		case <-c.done:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	c.stopped = true
	close(c.stopping)
	feedbacks := c.feedbacks
	c.mu.Unlock()

	c.senders.Wait()
	var err error
	drained := c.t.drain()
	select {
	case <-drained:
	case <-ctx.Done():
		err = ctx.Err()
		c.abort()
		<-drained
	}
	c.abort()
	c.opening.Wait() // a Start the abort cut short has closed what it opened
	c.t.finish()     // what is left in the queue was never sent: no work ran, or all gave up
	if stopFeedbacks(ctx, feedbacks) && err == nil {
		err = ctx.Err()
	}

	// What is left to wait for ends when the callbacks and handlers running now return: user
	// code, which cannot be interrupted. Once ctx has ended, Shutdown does not wait for it;
	// later Stops do (c.done).
	waits := make([]<-chan struct{}, 0, len(feedbacks)+1)
	for _, fc := range feedbacks {
		waits = append(waits, fc.done)
	}
	c.events.close()
	waits = append(waits, c.events.done)
	for i, w := range waits {
		select {
		case <-w:
			continue
		default:
		}
		select {
		case <-w:
		case <-ctx.Done():
			go func() { // ends when the handlers do
				for _, w := range waits[i:] {
					<-w
				}
				close(c.done)
			}()
			return ctx.Err()
		}
	}
	close(c.done)
	return err
}

// Stats is a snapshot of a client's counters.
type Stats struct {
	Accepted   uint64 // notifications Send accepted
	Written    uint64 // binary frames written, replays included
	Delivered  uint64 // notifications assumed delivered (binary) or accepted with 200 (HTTP/2)
	Rejected   uint64 // notifications the gateway rejected, with the status it sent (255 included)
	Unsent     uint64 // notifications reported with StatusUnknown: the client gave up before the gateway took them
	Replayed   uint64 // frames written again after a rejection, a shutdown or a lost connection; HTTP/2 retries
	Duplicates uint64 // resends that the gateway may already have delivered (lost connection, no answer)
	Drops      uint64 // connections lost without an error response; HTTP/2 requests left without an answer
	Reconnects uint64 // connections opened after the first of each worker
	UnknownIDs uint64 // error responses naming no frame in flight

	// SilentConns counts HTTP/2 connections closed as silent: they read nothing for a few
	// seconds while requests were in flight on them (or while another connection was found
	// silent), and did not answer a PING either. Their requests went to another connection,
	// counted in Duplicates and Drops.
	SilentConns uint64

	// Unconfirmed counts notifications the client gave up on (Stop with the gateway
	// unreachable, or Shutdown's deadline) although the gateway may have delivered them:
	// binary frames written on a connection lost without an answer that no later connection
	// confirmed, and HTTP/2 requests sent at least once that never got an answer. Unsent
	// counts the others, which the gateway never took (never written or sent, or discarded
	// after a rejection). The callback gets both with StatusUnknown; the rejection callback
	// (SetRejectionCallback) tells them apart by Reason: "unknown (possibly delivered)" here;
	// "unknown" (binary) or "no answer" (HTTP/2) for unsent.
	Unconfirmed uint64

	// RejectedByStatus splits Rejected by status code (HTTP/2: the nearest binary code, as
	// the callback gets it). Statuses that never occurred are absent.
	RejectedByStatus map[Status]uint64

	// Gauges: the state at the time of the call.
	Queued      uint64 // notifications waiting in the queue
	InFlight    uint64 // notifications taken from the queue and not yet settled: written and waiting, or to be written again
	Connections uint64 // connections open
}

type counters struct {
	accepted, written, delivered, rejected, unsent, unconfirmed, replayed, duplicates, drops,
	reconnects, unknownIDs, silentConns atomic.Uint64
	byStatus [256]atomic.Uint64
	conns    atomic.Int64
}

// reject counts a notification rejected with code.
func (s *counters) reject(code uint8) {
	s.rejected.Add(1)
	s.byStatus[code].Add(1)
}

// Stats returns the client's counters and gauges. They are read one by one while the client
// runs, so they may disagree by a few notifications in flux; once Stop has returned, Accepted
// equals Delivered + Rejected + Unsent + Unconfirmed.
func (c *Client) Stats() Stats {
	s := &c.stats
	st := Stats{
		Written:     s.written.Load(),
		Delivered:   s.delivered.Load(),
		Rejected:    s.rejected.Load(),
		Unsent:      s.unsent.Load(),
		Unconfirmed: s.unconfirmed.Load(),
		Replayed:    s.replayed.Load(),
		Duplicates:  s.duplicates.Load(),
		Drops:       s.drops.Load(),
		Reconnects:  s.reconnects.Load(),
		UnknownIDs:  s.unknownIDs.Load(),
		SilentConns: s.silentConns.Load(),
		Connections: uint64(max(s.conns.Load(), 0)),
		Queued:      uint64(c.t.queued()),
	}
	st.Accepted = s.accepted.Load() // last: it counts before the others
	if settled := st.Delivered + st.Rejected + st.Unsent + st.Unconfirmed + st.Queued; st.Accepted > settled {
		st.InFlight = st.Accepted - settled
	}
	for code := range s.byStatus {
		if n := s.byStatus[code].Load(); n > 0 {
			if st.RejectedByStatus == nil {
				st.RejectedByStatus = map[Status]uint64{}
			}
			st.RejectedByStatus[Status(code)] = n
		}
	}
	return st
}
