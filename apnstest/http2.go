// This file owns HTTP2Server, the mock of the APNs HTTP/2 provider API (PROTOCOL.md §4).
//
// Design: the accept loop is the package's netServer. Each accepted connection gets its own
// TLS handshake and then its own http.Server, serving a listener that yields only that
// connection. One server per connection is what lets GoAway shut a connection down
// gracefully (http.Server.Shutdown sends GOAWAY with NO_ERROR and lets the open streams
// finish), lets SetMaxConcurrentStreams apply to later connections only (the limit is fixed
// when a server starts), and gives the handler per-connection state for the provider-token
// rules without any lookup.

package apnstest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"math"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// HTTP2Server mocks the APNs HTTP/2 provider API over TLS on 127.0.0.1. It speaks only
// HTTP/2, negotiated with ALPN "h2". It validates requests the way APNs documents, records
// what it accepts and rejects, and can be scripted with Respond and RespondFunc. Its methods
// are safe for concurrent use; its exported fields must be set before Start and not changed
// afterwards.
//
// Every response carries an apns-id header: the request's when it is a canonical lowercase
// UUID, else a new random one. Accepted requests get status 200 and an empty body; rejected
// ones a JSON body {"reason":"..."} (with "timestamp" in milliseconds for status 410) and
// content-type application/json.
//
// Checks run in this order, and the first failure answers: method (405 MethodNotAllowed);
// path /3/device/<token> (404 BadPath); the token, even-length hex (400 MissingDeviceToken,
// BadDeviceToken); a repeated authorization or apns-* header (400 DuplicateHeaders);
// authentication (403, see Keys; 429 TooManyProviderTokenUpdates; 400 MissingTopic);
// apns-id (BadMessageId), apns-priority 10, 5 or 1 (BadPriority), apns-expiration decimal
// digits (BadExpirationDate), apns-collapse-id at most 64 bytes (BadCollapseId),
// apns-push-type (InvalidPushType), background with priority 10, also by default
// (BadPriority); the body, non-empty and not the JSON null (400 PayloadEmpty; for null,
// the mock's choice of the nearest reason, as Apple documents none) and at most 4096 bytes,
// 5120 for voip (413 PayloadTooLarge). The body is not otherwise parsed as JSON. Then the
// rules set with
// Respond, then RespondFunc; a request none of them rejects is accepted.
//
// Paths under /1/ and /4/ are the broadcast API instead, channel management and broadcasts
// on the same address: see BroadcastRequest.
type HTTP2Server struct {
	// Addr is the "127.0.0.1:port" the server listens on, set by Start.
	Addr string
	// URL is "https://" + Addr, set by Start.
	URL string

	// RequireClientCert makes the handshake fail unless the client presents a certificate
	// signed by the package's test CA (ClientCertPEM gives one). Without it, a certificate
	// is verified if given. A request on a connection with a client certificate uses
	// certificate authentication: authorization is ignored and apns-topic is optional.
	RequireClientCert bool

	// Keys enables token authentication: key ID -> ES256 (P-256) public key. A request on a
	// connection without a client certificate must then carry "authorization: bearer <JWT>"
	// with header {"alg":"ES256","kid":<key ID>} and claims {"iss":<team ID>,"iat":<UNIX
	// seconds>}, signed by Keys[kid], and an apns-topic header. When Keys is nil, such a
	// request gets 403 MissingProviderToken. A token whose iat is more than an hour before
	// Now gets ExpiredProviderToken; one more than a minute after Now, InvalidProviderToken.
	// Each connection remembers its current token: a different one, less than 20 minutes
	// (by Now) after the current one was first accepted, gets 429
	// TooManyProviderTokenUpdates.
	Keys map[string]*ecdsa.PublicKey
	// TeamID, if set, is the only iss accepted.
	TeamID string

	// MaxConcurrentStreams is the SETTINGS_MAX_CONCURRENT_STREAMS value sent on new
	// connections. Default (0): 1000.
	MaxConcurrentStreams int

	// Latency is how long every answer waits before it is sent, as Apple's gateway answers
	// after a network round trip: each request's handler waits Latency plus a random part of
	// LatencyJitter (uniform in [0, LatencyJitter)) once the request has been judged, holding
	// no lock, before a Response's Delay. The wait ends early, without an answer, if the stream
	// or connection goes away. Default 0: answers at once.
	Latency       time.Duration
	LatencyJitter time.Duration

	// DiscardNotifications makes the server count accepted requests without keeping them,
	// so Requests returns nothing (for benchmarks). Rejected requests are still kept.
	DiscardNotifications bool

	// Observe, if set, is called for every accepted request, from its handler goroutine,
	// possibly concurrently with other calls, before the request is counted and answered.
	// The request's Payload is the caller's to keep. A panic in it is not recovered.
	Observe func(Request)

	// ObserveRejected, if set, is called for every request answered with an error status,
	// whatever refused it (the protocol and authentication checks, Respond or RespondFunc),
	// from its handler goroutine, possibly concurrently with other calls, just before the
	// answer is written. The request's Payload is shared with Rejected and must not be modified.
	// A panic in it is not recovered. Refusals of the broadcast API (BroadcastRequest) are
	// observed too, though Rejected does not hold them (BroadcastRequests does): their
	// Request has ID (the apns-request-id), PushType, Priority, Expiration, Payload, KeyID
	// and Conn set, and Token and Topic empty.
	ObserveRejected func(RejectedRequest)

	// Now is the clock for the provider-token time rules. Default: time.Now. It is called
	// from handler goroutines, possibly concurrently.
	Now func() time.Time

	// Listener, if set before Start, is the listener the server serves on instead of a new
	// one on 127.0.0.1:0; Start takes it over and Close closes it. The server's certificate
	// is valid only for 127.0.0.1, ::1 and localhost.
	Listener net.Listener

	ns netServer

	// Set by Start, then read-only.
	tlsConf *tls.Config
	keys    map[string]*ecdsa.PublicKey
	team    string
	discard bool
	latency time.Duration
	jitter  time.Duration
	observe func(Request)
	obsRej  func(RejectedRequest)
	now     func() time.Time

	maxStreams atomic.Int64 // for connections accepted from now on
	respondFn  atomic.Pointer[respondFunc]
	arrivals   atomic.Uint64 // handler entries, for arrival order
	count      tally         // accepted requests

	mu       sync.Mutex // guards the fields below
	live     map[*h2Conn]struct{}
	rules    map[string][]*respondRule // lowercase hex token -> queued rules
	accepted []arrived
	rejected []RejectedRequest

	bcast broadcastState // the broadcast API (broadcast.go), with its own lock
}

// Request is one request HTTP2Server received: accepted (Requests) or refused (Rejected).
// Fields not reached by the checks before a refusal may be empty.
type Request struct {
	Token      string // device token from the path, as sent (hexadecimal text)
	ID         string // apns-id as sent, or "" when absent
	Topic      string // apns-topic, or ""
	PushType   string // apns-push-type, or ""
	CollapseID string // apns-collapse-id, or ""
	Priority   int    // apns-priority; 10 when absent, 0 when not a number
	Expiration string // apns-expiration as sent, or "" when absent
	Payload    []byte // the body, as received; nil when not read or too large
	KeyID      string // kid of the provider token; "" with certificate authentication
	Conn       int    // 1-based sequence number of the connection that carried it
}

// RejectedRequest is a request HTTP2Server answered with an error status.
type RejectedRequest struct {
	Request
	Status int
	Reason string
}

// Response scripts the answer to a request; see Respond and RespondFunc.
type Response struct {
	// Status is the HTTP status. 0 or 200 accepts the request (it is recorded in Requests);
	// anything else rejects it.
	Status int
	// Reason is the "reason" of the JSON error body. If empty, a default for Status is
	// used: 403 Forbidden, 404 BadPath, 405 MethodNotAllowed, 410 Unregistered, 413
	// PayloadTooLarge, 429 TooManyRequests, 500 InternalServerError, 503
	// ServiceUnavailable; for other statuses it stays empty.
	Reason string
	// Timestamp is sent with status 410 as "timestamp", in milliseconds since the epoch.
	// Zero means Now() at the time of the answer.
	Timestamp time.Time
	// Delay is how long to wait before answering. The wait ends early, without an answer, if
	// the stream or connection goes away.
	Delay time.Duration
	// RetryAfter, if set, is sent as a Retry-After header.
	RetryAfter string
	// Times makes a Respond rule answer the next Times matching requests, after which the
	// rule is dropped. 0 means for ever. RespondFunc ignores it.
	Times int
	// ResetStream makes the answer end in a stream reset (RST_STREAM INTERNAL_ERROR) instead
	// of its end: the headers, with Status, and the first half of the JSON error body (none
	// for 200) are sent, then the stream is reset. The client so gets a status and then a
	// failed body read. An accepted request is recorded as accepted all the same.
	ResetStream bool
}

type respondRule struct {
	r    Response
	left int // answers left; 0 means unlimited
}

type respondFunc struct{ f func(Request) *Response }

// arrived is an accepted request with its arrival sequence number.
type arrived struct {
	seq uint64
	req Request
}

// NewHTTP2Server returns a started HTTP2Server listening on 127.0.0.1 on a free port. The
// caller should Close it when done.
func NewHTTP2Server() *HTTP2Server {
	s := NewUnstartedHTTP2Server()
	s.Start()
	return s
}

// NewUnstartedHTTP2Server returns an HTTP2Server that is not yet listening, so its fields can
// be set before Start.
func NewUnstartedHTTP2Server() *HTTP2Server {
	s := &HTTP2Server{}
	return s
}

// Start starts listening on 127.0.0.1 on a free port and sets Addr and URL. It panics if the
// server was already started or closed, or if it cannot listen.
func (s *HTTP2Server) Start() {
	s.Addr = s.ns.start("HTTP2Server", s.Listener, func() {
		conf := serverTLSConfig(s.RequireClientCert)
		conf.NextProtos = []string{"h2"}
		s.tlsConf = conf
		if s.Keys != nil {
			s.keys = make(map[string]*ecdsa.PublicKey, len(s.Keys))
			for k, v := range s.Keys {
				s.keys[k] = v
			}
		}
		s.team = s.TeamID
		s.discard = s.DiscardNotifications
		s.latency, s.jitter = max(s.Latency, 0), max(s.LatencyJitter, 0)
		s.observe = s.Observe
		s.obsRej = s.ObserveRejected
		s.now = s.Now
		if s.now == nil {
			s.now = time.Now
		}
		if s.MaxConcurrentStreams != 0 || s.maxStreams.Load() == 0 {
			s.SetMaxConcurrentStreams(s.MaxConcurrentStreams)
		}
	}, func(c *trackedConn) func() {
		n := int(s.maxStreams.Load())
		return func() { s.serveConn(c, n) }
	})
	s.URL = "https://" + s.Addr
}

// Close closes the listener and every client connection, abruptly, then blocks until all of
// the server's goroutines and handlers have returned. If that takes longer than 5 seconds it
// logs what it is still waiting for and keeps waiting. Calling Close more than once is safe.
func (s *HTTP2Server) Close() { s.ns.close() }

// CloseClientConnections drops every open client connection without a GOAWAY, as a network
// failure would, and waits until their goroutines and handlers have returned. The server
// keeps accepting new connections. It must not be called from Observe or a RespondFunc.
func (s *HTTP2Server) CloseClientConnections() { s.ns.closeConns() }

// GoAway gracefully closes every connection whose TLS handshake has completed: each sends
// GOAWAY with NO_ERROR naming the last stream it received, answers its open streams (Delays
// included), and then closes. Streams the client opens after the GOAWAY are discarded; the
// client must retry them on a new connection. The server keeps accepting new connections,
// which are unaffected. GoAway blocks until those connections have closed and their handlers
// have returned, so to act while a request is in flight, call it from another goroutine. It
// must not be called from Observe or a RespondFunc.
func (s *HTTP2Server) GoAway() {
	s.mu.Lock()
	cs := make([]*h2Conn, 0, len(s.live))
	for hc := range s.live {
		cs = append(cs, hc)
	}
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, hc := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			hc.goAway()
		}()
	}
	wg.Wait()
}

// SilenceClientConnections makes every open client connection go silent, as one whose flow a
// NAT or load balancer has forgotten: from now on the server reads and discards whatever the
// client sends on it and sends nothing, no answer, PING acknowledgement or GOAWAY, yet keeps
// it open until the client closes it or Close is called. Requests judged before are counted
// (Count, Requests) although their answers are lost; requests sent after are never seen. New
// connections are unaffected. It returns how many connections it silenced. GoAway must not be
// called while a silenced connection is open: it would wait for that connection to close.
func (s *HTTP2Server) SilenceClientConnections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for hc := range s.live {
		if !hc.quiet.silent.Swap(true) {
			n++
		}
	}
	return n
}

// silencer is a server connection's TCP connection, which SilenceClientConnections can make
// swallow all traffic both ways while it stays open.
type silencer struct {
	net.Conn
	silent atomic.Bool
}

// Read returns what the client sent until the connection goes silent; from then on it discards
// everything and returns only the connection's end.
func (c *silencer) Read(p []byte) (int, error) {
	for {
		n, err := c.Conn.Read(p)
		switch {
		case !c.silent.Load():
			return n, err
		case err != nil:
			return 0, err
		}
	}
}

// Write sends p until the connection goes silent; from then on it discards it.
func (c *silencer) Write(p []byte) (int, error) {
	if c.silent.Load() {
		return len(p), nil
	}
	return c.Conn.Write(p)
}

// SetMaxConcurrentStreams sets the SETTINGS_MAX_CONCURRENT_STREAMS value for connections
// accepted from now on; open connections keep theirs (the standard library cannot change it
// mid-connection). n <= 0 means the default, 1000. Called before Start, it is overridden by a
// non-zero MaxConcurrentStreams field.
func (s *HTTP2Server) SetMaxConcurrentStreams(n int) {
	switch {
	case n <= 0:
		n = 1000
	case n > math.MaxInt32:
		n = math.MaxInt32
	}
	s.maxStreams.Store(int64(n))
}

// Respond adds a rule for requests to token (hexadecimal, case-insensitive) that pass the
// protocol checks. Rules for a token form a queue: the first one answers, and one with Times
// set is dropped once it has answered Times requests. Respond(token, Response{}) removes
// every rule for token. It panics if token is not hexadecimal (an even number of hex
// digits), as Server.RejectToken does: a rule that can never match is a mistake in the test.
func (s *HTTP2Server) Respond(token string, r Response) {
	if _, err := hex.DecodeString(token); err != nil {
		panic(fmt.Sprintf("apnstest: Respond: token %q is not hexadecimal: %v", token, err))
	}
	key := strings.ToLower(token)
	s.mu.Lock()
	defer s.mu.Unlock()
	if r == (Response{}) {
		delete(s.rules, key)
		return
	}
	if s.rules == nil {
		s.rules = make(map[string][]*respondRule)
	}
	s.rules[key] = append(s.rules[key], &respondRule{r: r, left: max(r.Times, 0)})
}

// RespondFunc sets a function called for every request that passes the protocol checks and
// no Respond rule answered. A non-nil result is the answer (its Times is ignored); nil means
// normal handling. It runs on handler goroutines, possibly concurrently, and owns the
// request's Payload. A nil f removes it.
func (s *HTTP2Server) RespondFunc(f func(Request) *Response) {
	if f == nil {
		s.respondFn.Store(nil)
		return
	}
	s.respondFn.Store(&respondFunc{f})
}

// Requests returns the accepted requests in the order they arrived (their handlers started).
// The slice is a copy, but the Payload slices are shared with the server and must not be
// modified. It is empty when DiscardNotifications is set.
func (s *HTTP2Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Request, len(s.accepted))
	for i, a := range s.accepted {
		out[i] = a.req
	}
	return out
}

// Rejected returns the requests answered with an error status, in the order they were
// answered. Payload slices are shared with the server and must not be modified.
func (s *HTTP2Server) Rejected() []RejectedRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.rejected)
}

// Count returns the number of requests accepted so far, also when DiscardNotifications is
// set.
func (s *HTTP2Server) Count() int { return s.count.load() }

// Conns returns the number of TCP connections accepted so far, including ones whose
// handshake failed.
func (s *HTTP2Server) Conns() int { return s.ns.conns() }

// WaitCount waits until Count() >= n and reports true, or reports false once timeout has
// passed.
func (s *HTTP2Server) WaitCount(n int, timeout time.Duration) bool { return s.count.wait(n, timeout) }

// ClientTLSConfig returns a new client configuration that trusts the server's certificate,
// with NextProtos ["h2"] and MinVersion TLS 1.2. It has no client certificate and no
// ServerName; the certificate is valid for 127.0.0.1, ::1 and localhost.
func (s *HTTP2Server) ClientTLSConfig() *tls.Config {
	c := clientTLSConfig()
	c.NextProtos = []string{"h2"}
	return c
}

// RootCAs returns a new pool holding the test CA, which signed the server's certificate.
func (s *HTTP2Server) RootCAs() *x509.CertPool { return caPool() }

// h2Conn is one connection after its TLS handshake, served by its own http.Server.
type h2Conn struct {
	s      *HTTP2Server
	tc     *trackedConn
	srv    *http.Server
	ln     *oneConnListener
	quiet  *silencer     // the TCP connection, which SilenceClientConnections silences
	closed chan struct{} // closed when srv has finished with the connection

	mu       sync.Mutex // guards the fields below
	idle     *sync.Cond // uses mu; signalled when active drops to 0 while draining
	active   int        // handlers running
	draining bool       // no new handler may start
	jwt      string     // the connection's current provider token
	jwtSince time.Time  // when jwt was first accepted, by Now
}

// serveConn runs one connection; the netServer closes it afterwards.
func (s *HTTP2Server) serveConn(c *trackedConn, maxStreams int) {
	c.setState("in the TLS handshake")
	quiet := &silencer{Conn: c.raw}
	tc := tls.Server(quiet, s.tlsConf)
	if err := tc.Handshake(); err != nil {
		return
	}
	if tc.ConnectionState().NegotiatedProtocol != "h2" {
		refuseHTTP1(c, tc)
		return
	}

	hc := &h2Conn{s: s, tc: c, quiet: quiet, closed: make(chan struct{})}
	hc.idle = sync.NewCond(&hc.mu)
	hc.ln = &oneConnListener{conn: tc, served: make(chan struct{}), stop: make(chan struct{}), done: hc.closed}
	var protos http.Protocols
	protos.SetHTTP2(true)
	var closeOnce sync.Once
	hc.srv = &http.Server{
		Handler:   http.HandlerFunc(hc.serveHTTP),
		Protocols: &protos,
		HTTP2:     &http.HTTP2Config{MaxConcurrentStreams: maxStreams},
		ErrorLog:  log.New(io.Discard, "", 0),
		ConnState: func(_ net.Conn, st http.ConnState) {
			if st == http.StateClosed || st == http.StateHijacked {
				closeOnce.Do(func() { close(hc.closed) })
			}
		},
	}

	s.mu.Lock()
	if s.live == nil {
		s.live = make(map[*h2Conn]struct{})
	}
	s.live[hc] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.live, hc)
		s.mu.Unlock()
	}()

	c.setState("serving HTTP/2")
	_ = hc.srv.Serve(hc.ln)
	if hc.ln.handedOver() {
		<-hc.closed
	}
	c.setState("waiting for its handlers")
	hc.drain()
}

// refuseHTTP1 answers a connection that did not negotiate h2 with an HTTP/1.1 505 and closes
// it, so a client that forgot to enable HTTP/2 gets a clear error rather than a dropped
// connection.
func refuseHTTP1(c *trackedConn, tc *tls.Conn) {
	c.setState("refusing HTTP/1")
	_ = c.raw.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := http.ReadRequest(bufio.NewReader(tc)); err != nil {
		return
	}
	const body = "apnstest: the APNs provider API requires HTTP/2 (ALPN h2)\n"
	_, err := fmt.Fprintf(tc, "HTTP/1.1 505 HTTP Version Not Supported\r\n"+
		"Content-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
		len(body), body)
	if err == nil {
		lingerClose(c, tc)
	}
}

// goAway shuts the connection down gracefully and waits until it has closed.
func (hc *h2Conn) goAway() {
	select {
	case <-hc.ln.served:
	case <-hc.tc.done:
		return
	}
	// Shutdown triggers the HTTP/2 graceful shutdown only for connections already
	// registered with the HTTP/2 server, which happens just after Serve hands the
	// connection over. Shutdown again, with a growing deadline, until it reports the
	// connection closed, so a connection that registered late still gets its GOAWAY.
	wait := 20 * time.Millisecond
	for {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		err := hc.srv.Shutdown(ctx)
		cancel()
		if err == nil {
			break
		}
		wait = min(2*wait, time.Second)
	}
	<-hc.tc.done
}

// enter registers a starting handler and reports whether it may run.
func (hc *h2Conn) enter() bool {
	hc.mu.Lock()
	defer hc.mu.Unlock()
	if hc.draining {
		return false
	}
	hc.active++
	return true
}

func (hc *h2Conn) leave() {
	hc.mu.Lock()
	hc.active--
	if hc.active == 0 && hc.draining {
		hc.idle.Broadcast()
	}
	hc.mu.Unlock()
}

// drain stops new handlers from running and waits for the running ones.
func (hc *h2Conn) drain() {
	hc.mu.Lock()
	defer hc.mu.Unlock()
	hc.draining = true
	for hc.active > 0 {
		hc.idle.Wait()
	}
}

// updateToken applies the 20-minute rule to a valid provider token and reports whether the
// connection accepts it.
func (hc *h2Conn) updateToken(jwt string, now time.Time) bool {
	hc.mu.Lock()
	defer hc.mu.Unlock()
	if jwt == hc.jwt {
		return true
	}
	if hc.jwt != "" && now.Sub(hc.jwtSince) < tokenMinRefresh {
		return false
	}
	hc.jwt, hc.jwtSince = jwt, now
	return true
}

// oneConnListener yields one connection, then blocks until it is closed or the connection is
// finished.
type oneConnListener struct {
	conn   net.Conn
	served chan struct{}   // closed when Accept has returned conn
	stop   chan struct{}   // closed by Close
	done   <-chan struct{} // closed when the connection is finished

	mu     sync.Mutex
	handed bool
	closed bool
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	if !l.handed && !l.closed {
		l.handed = true
		close(l.served)
		l.mu.Unlock()
		return l.conn, nil
	}
	l.mu.Unlock()
	select {
	case <-l.stop:
	case <-l.done:
	}
	return nil, net.ErrClosed
}

func (l *oneConnListener) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.closed {
		l.closed = true
		close(l.stop)
	}
	return nil
}

func (l *oneConnListener) Addr() net.Addr { return l.conn.LocalAddr() }

func (l *oneConnListener) handedOver() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.handed
}

// Request limits and values (PROTOCOL.md §4.2, §4.3).
const (
	devicePathPrefix = "/3/device/"
	maxH2Payload     = 4096
	maxVoIPPayload   = 5120
	maxCollapseID    = 64
)

var pushTypes = map[string]bool{
	"alert": true, "background": true, "complication": true, "controls": true,
	"fileprovider": true, "liveactivity": true, "location": true, "mdm": true,
	"pushtotalk": true, "voip": true, "widgets": true,
}

var defaultReasons = map[int]string{
	403: "Forbidden",
	404: "BadPath",
	405: "MethodNotAllowed",
	410: "Unregistered",
	413: "PayloadTooLarge",
	429: "TooManyRequests",
	500: "InternalServerError",
	503: "ServiceUnavailable",
}

// verdict is how a request is to be answered.
type verdict struct {
	status int // 0 or 200: accept
	reason string
	resp   *Response // a scripted answer, or nil
}

func reject(status int, reason string) verdict { return verdict{status: status, reason: reason} }

// serveHTTP handles one stream.
func (hc *h2Conn) serveHTTP(w http.ResponseWriter, r *http.Request) {
	if !hc.enter() {
		return
	}
	defer hc.leave()
	s := hc.s
	if isBroadcastPath(r.URL.Path) {
		s.serveBroadcast(hc, w, r)
		return
	}
	seq := s.arrivals.Add(1)
	req := Request{Conn: hc.tc.seq, Priority: defaultPriority}
	v, ok := s.judge(hc, r, &req)
	if !ok {
		// The body could not be read (the client went away, or reset the stream): reset the
		// stream rather than return, which would send an implicit 200 for a notification the
		// mock never recorded.
		panic(http.ErrAbortHandler)
	}
	id := r.Header.Get("Apns-Id")
	if !isUUID(id) {
		id = newUUID()
	}
	ts := time.Time{}
	retryAfter := ""
	reset := false
	if d := s.answerDelay(); d > 0 && !sleepCtx(r.Context(), d) {
		return
	}
	if sc := v.resp; sc != nil {
		if sc.Delay > 0 && !sleepCtx(r.Context(), sc.Delay) {
			return
		}
		ts, retryAfter, reset = sc.Timestamp, sc.RetryAfter, sc.ResetStream
	}
	h := w.Header()
	h.Set("Apns-Id", id)
	if retryAfter != "" {
		h.Set("Retry-After", retryAfter)
	}
	if v.status == 0 || v.status == http.StatusOK {
		s.accept(seq, req)
		w.WriteHeader(http.StatusOK)
		if reset {
			resetStream(w)
		}
		return
	}
	if v.reason == "" {
		v.reason = defaultReasons[v.status]
	}
	body := struct {
		Reason    string `json:"reason"`
		Timestamp *int64 `json:"timestamp,omitempty"`
	}{Reason: v.reason}
	if v.status == http.StatusGone {
		if ts.IsZero() {
			ts = s.now()
		}
		ms := ts.UnixMilli()
		body.Timestamp = &ms
	}
	b, _ := json.Marshal(body)
	rr := RejectedRequest{Request: req, Status: v.status, Reason: v.reason}
	s.mu.Lock()
	s.rejected = append(s.rejected, rr)
	s.mu.Unlock()
	if s.obsRej != nil {
		s.obsRej(rr)
	}
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(v.status)
	if reset {
		_, _ = w.Write(b[:len(b)/2])
		resetStream(w)
	}
	_, _ = w.Write(b)
}

// resetStream sends what the handler has written so far and resets the stream: the panic
// with http.ErrAbortHandler makes the HTTP/2 server send RST_STREAM, and is not logged.
func resetStream(w http.ResponseWriter) {
	_ = http.NewResponseController(w).Flush()
	panic(http.ErrAbortHandler)
}

// answerDelay returns how long the next answer waits: Latency plus its random part.
func (s *HTTP2Server) answerDelay() time.Duration {
	if s.jitter <= 0 {
		return s.latency
	}
	return s.latency + mrand.N(s.jitter)
}

// sleepCtx waits for d and reports true, or reports false if ctx ends first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// judge runs the protocol checks and the scripts, filling req as it goes. ok is false when
// reading the body failed, so nothing can be answered.
func (s *HTTP2Server) judge(hc *h2Conn, r *http.Request, req *Request) (v verdict, ok bool) {
	if r.ProtoMajor != 2 { // cannot happen: the server speaks only HTTP/2
		return reject(http.StatusHTTPVersionNotSupported, "HTTPVersionNotSupported"), true
	}
	if r.Method != http.MethodPost {
		return reject(405, "MethodNotAllowed"), true
	}
	tok, found := strings.CutPrefix(r.RequestURI, devicePathPrefix)
	if !found || strings.ContainsAny(tok, "/?#") {
		return reject(404, "BadPath"), true
	}
	req.Token = tok
	switch {
	case tok == "":
		return reject(400, "MissingDeviceToken"), true
	case len(tok)%2 != 0 || !isHex(tok):
		return reject(400, "BadDeviceToken"), true
	}

	hdr := r.Header
	req.ID = hdr.Get("Apns-Id")
	req.Topic = hdr.Get("Apns-Topic")
	req.PushType = hdr.Get("Apns-Push-Type")
	req.CollapseID = hdr.Get("Apns-Collapse-Id")
	req.Expiration = hdr.Get("Apns-Expiration")
	prio, hasPrio := header(hdr, "Apns-Priority")
	if hasPrio {
		req.Priority, _ = strconv.Atoi(prio)
	}
	for name, vals := range hdr {
		if len(vals) > 1 && (name == "Authorization" || strings.HasPrefix(name, "Apns-")) {
			return reject(400, "DuplicateHeaders"), true
		}
	}

	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 { // token authentication
		if v, ok := s.authenticate(hc, hdr, req); !ok {
			return v, true
		}
	}

	if id, ok := header(hdr, "Apns-Id"); ok && !isUUID(id) {
		return reject(400, "BadMessageId"), true
	}
	if hasPrio && prio != "10" && prio != "5" && prio != "1" {
		return reject(400, "BadPriority"), true
	}
	if exp, ok := header(hdr, "Apns-Expiration"); ok {
		if _, err := strconv.ParseUint(exp, 10, 64); err != nil {
			return reject(400, "BadExpirationDate"), true
		}
	}
	if len(req.CollapseID) > maxCollapseID {
		return reject(400, "BadCollapseId"), true
	}
	if pt, ok := header(hdr, "Apns-Push-Type"); ok && !pushTypes[pt] {
		return reject(400, "InvalidPushType"), true
	}
	if req.PushType == "background" && req.Priority == 10 {
		return reject(400, "BadPriority"), true
	}

	limit := maxH2Payload
	if req.PushType == "voip" {
		limit = maxVoIPPayload
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, int64(limit)+1))
	if err != nil {
		return verdict{}, false
	}
	switch {
	case len(body) == 0, isNull(body):
		return reject(400, "PayloadEmpty"), true
	case len(body) > limit:
		return reject(413, "PayloadTooLarge"), true
	}
	req.Payload = body

	if resp := s.scripted(req); resp != nil {
		return verdict{status: resp.Status, reason: resp.Reason, resp: resp}, true
	}
	return verdict{status: http.StatusOK}, true
}

// authenticate applies the provider-token rules to a request without a client certificate.
func (s *HTTP2Server) authenticate(hc *h2Conn, hdr http.Header, req *Request) (verdict, bool) {
	if s.keys == nil {
		return reject(403, "MissingProviderToken"), false
	}
	authz := strings.TrimSpace(hdr.Get("Authorization"))
	if authz == "" {
		return reject(403, "MissingProviderToken"), false
	}
	scheme, jwt, _ := strings.Cut(authz, " ")
	jwt = strings.TrimSpace(jwt)
	if !strings.EqualFold(scheme, "bearer") || jwt == "" {
		return reject(403, "InvalidProviderToken"), false
	}
	now := s.now()
	kid, status, reason := checkProviderToken(jwt, s.keys, s.team, now)
	req.KeyID = kid
	if status != 0 {
		return reject(status, reason), false
	}
	if !hc.updateToken(jwt, now) {
		return reject(429, "TooManyProviderTokenUpdates"), false
	}
	if req.Topic == "" {
		return reject(400, "MissingTopic"), false
	}
	return verdict{}, true
}

// scripted returns the answer a Respond rule or the RespondFunc gives req, or nil.
func (s *HTTP2Server) scripted(req *Request) *Response {
	key := strings.ToLower(req.Token)
	s.mu.Lock()
	if q := s.rules[key]; len(q) > 0 {
		rule := q[0]
		if rule.left > 0 {
			rule.left--
			if rule.left == 0 {
				if len(q) == 1 {
					delete(s.rules, key)
				} else {
					s.rules[key] = q[1:]
				}
			}
		}
		s.mu.Unlock()
		resp := rule.r
		return &resp
	}
	s.mu.Unlock()
	if fn := s.respondFn.Load(); fn != nil {
		c := *req
		c.Payload = slices.Clone(req.Payload)
		return fn.f(c)
	}
	return nil
}

// accept records an accepted request.
func (s *HTTP2Server) accept(seq uint64, req Request) {
	if s.observe != nil {
		c := req
		c.Payload = slices.Clone(req.Payload)
		s.observe(c)
	}
	s.mu.Lock()
	if !s.discard {
		i := len(s.accepted)
		for i > 0 && s.accepted[i-1].seq > seq {
			i--
		}
		s.accepted = slices.Insert(s.accepted, i, arrived{seq, req})
	}
	s.mu.Unlock()
	s.count.add()
}

// header returns the first value of a header and whether it is present at all.
func header(h http.Header, name string) (string, bool) {
	vals, ok := h[name]
	if !ok || len(vals) == 0 {
		return "", false
	}
	return vals[0], true
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

// isUUID reports whether s is a canonical lowercase UUID, 8-4-4-4-12 hexadecimal digits.
// isNull reports whether a body is the JSON null, which the mock refuses as PayloadEmpty.
func isNull(body []byte) bool {
	return string(bytes.TrimSpace(body)) == "null"
}

func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
				return false
			}
		}
	}
	return true
}

// newUUID returns a random (version 4) UUID in canonical lowercase form.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
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
