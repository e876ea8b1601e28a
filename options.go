package apns

// This file owns the client's settings and the options that change them.

import (
	"crypto/tls"
	"log/slog"
	"net/http"
	"net/url"
	"time"
)

// Option changes a setting of a client made by CreateClient.
type Option func(*settings)

// settings holds the per-client configuration. A zero field means "use the default"; the
// accessor methods apply the defaults.
type settings struct {
	tlsConfig         *tls.Config
	assumeSentTimeout time.Duration
	idleTimeout       time.Duration
	dialTimeout       time.Duration
	writeTimeout      time.Duration
	queueSize         int
	inflightBytes     int
	errorHandler      func(error)
	protocol          Protocol
	topic             string
	proxy             func(*http.Request) (*url.URL, error)
	proxySet          bool
	streams           int
	maxConns          int
	maxAttempts       int
	clock             func() time.Time
	noSentinel        bool          // tests and benchmarks: Stop waits out the assume-sent timeout
	firstID           uint32        // tests: the first identifier each binary worker gives
	startClaimed      func()        // tests: run by Start once it has claimed the start, before it starts the transport
	silenceAfter      time.Duration // tests: silenceAfter instead of the constant (silence.go)
	silenceTimeout    time.Duration // tests: silenceTimeout instead of the constant
	logger            *slog.Logger
	manageURL         string // broadcast channel management endpoint (broadcast.go)
}

// Protocol is the wire protocol a client speaks.
type Protocol int

// The protocols. ProtocolAuto picks by the gateway address: an https:// URL or one of Apple's
// hosts (gateway.push.apple.com, gateway.sandbox.push.apple.com and their api.* successors)
// means HTTP/2, since Apple's binary gateway is retired; any other address means binary.
const (
	ProtocolAuto Protocol = iota
	ProtocolBinary
	ProtocolHTTP2
)

// WithProtocol chooses the wire protocol instead of letting the gateway address decide.
func WithProtocol(p Protocol) Option {
	return func(s *settings) { s.protocol = p }
}

// WithTopic sets the apns-topic of notifications that name none (HTTP/2 only). With
// certificate authentication and no topic, APNs uses the certificate's.
func WithTopic(topic string) Option {
	return func(s *settings) { s.topic = topic }
}

// WithProxy sets how HTTP/2 connections find their proxy, as http.Transport.Proxy does; pass
// http.ProxyURL(u) for an explicit HTTP CONNECT proxy, or nil for none. Default:
// http.ProxyFromEnvironment.
func WithProxy(proxy func(*http.Request) (*url.URL, error)) Option {
	return func(s *settings) { s.proxy, s.proxySet = proxy, true }
}

// WithStreams caps how many requests each HTTP/2 connection carries at once. By default a
// connection carries as many as the server's SETTINGS_MAX_CONCURRENT_STREAMS allows, following
// its changes (APNs announces up to 1000); the server's limit also bounds a cap set here. The
// first request on a new connection always goes alone, so that the server's limit is known
// before more follow (APNs allows a token-authenticated connection one stream until then).
func WithStreams(n int) Option {
	return func(s *settings) { s.streams = n }
}

// WithMaxConnections lets an HTTP/2 client open more connections than Start's count when the
// load needs them, up to m in all. While every stream of every connection is busy and work
// waits, the client opens one more connection, one at a time and at most one a second, so
// that APNs never sees a burst of connections; a connection opened this way is closed again
// once it has carried no request for the idle timeout (WithIdleTimeout). Default: Start's
// count, so the client keeps the connections Start opened and no more. The binary protocol
// ignores it.
func WithMaxConnections(m int) Option {
	return func(s *settings) { s.maxConns = m }
}

// WithMaxAttempts sets how often an HTTP/2 notification is tried when APNs answers 429, 500 or
// 503, or the connection fails before an answer (default DefaultMaxAttempts).
func WithMaxAttempts(n int) Option {
	return func(s *settings) { s.maxAttempts = n }
}

// WithClock sets the clock used for provider tokens' ages (default time.Now); for tests.
func WithClock(now func() time.Time) Option {
	return func(s *settings) { s.clock = now }
}

// Defaults of the settings that have no constant of their own.
const (
	DefaultDialTimeout   = 10 * time.Second
	DefaultWriteTimeout  = 30 * time.Second
	DefaultQueueSize     = 4096
	DefaultInflightBytes = 8 << 20
)

// WithTLSConfig makes the client start from a copy of cfg, for example to trust a private CA
// through RootCAs instead of disabling verification. The client adds its certificate, sets
// ServerName to the gateway's host when cfg has none, and raises MinVersion to TLS 1.2.
func WithTLSConfig(cfg *tls.Config) Option {
	return func(s *settings) { s.tlsConfig = cfg }
}

// WithAssumeSentTimeout sets how long a written frame stays in flight before it is assumed
// delivered (default WORKER_ASSUME_SENT_TIMEOUT). Stop takes up to this long when the gateway
// does not answer the sentinel frame that ends each connection. Lowering it
// raises the risk that a rejection arrives after its notification was assumed delivered.
func WithAssumeSentTimeout(d time.Duration) Option {
	return func(s *settings) { s.assumeSentTimeout = d }
}

// WithIdleTimeout sets how long a connection may carry no traffic before the worker replaces
// it (default WORKER_IDLE_TIMEOUT).
func WithIdleTimeout(d time.Duration) Option {
	return func(s *settings) { s.idleTimeout = d }
}

// WithDialTimeout bounds each connection attempt, TCP connect and TLS handshake together
// (default DefaultDialTimeout).
func WithDialTimeout(d time.Duration) Option {
	return func(s *settings) { s.dialTimeout = d }
}

// WithWriteTimeout bounds each write to a binary connection, and each HTTP/2 request's wait
// for its answer (default DefaultWriteTimeout). A binary write that times out counts as a lost
// connection: its frames in flight are replayed. An HTTP/2 request that times out is retried
// like one whose connection was lost.
//
// On the binary protocol it is what bounds a gateway that goes silent: a gateway that stops
// reading fills the TCP window, and the write that blocks then fails after this timeout.
// Until then, frames the kernel accepted are assumed delivered after the assume-sent timeout
// like any other, since the protocol answers only rejections: a silent connection cannot be
// told from a working one. At Stop, the unanswered sentinel makes Stop wait out the
// assume-sent timeout. On HTTP/2, a silent connection is found much sooner: one with requests
// in flight that reads nothing for 3 s is probed with a PING and closed 2 s later if that
// gets no answer either; its requests go to another connection (Stats.SilentConns).
func WithWriteTimeout(d time.Duration) Option {
	return func(s *settings) { s.writeTimeout = d }
}

// WithQueueSize sets how many accepted notifications may wait for a worker (default
// DefaultQueueSize). Send blocks while the queue is full.
func WithQueueSize(n int) Option {
	return func(s *settings) { s.queueSize = n }
}

// maxInflightBytes bounds WithInflightBytes: the ring addresses its arena with 32-bit offsets.
const maxInflightBytes = 1 << 30

// WithInflightBytes caps the bytes of frames each connection keeps in flight (default
// DefaultInflightBytes, 8 MiB; at most 1 GiB). A frame in flight costs its own bytes plus
// about 20 (the ring keeps them in one byte arena). A worker whose ring is full waits for its
// oldest frames to be assumed delivered, so one connection carries at most about
// inflightBytes ÷ frame size ÷ assume-sent timeout notifications per second: with the
// defaults and 107-byte frames, 8 MiB ÷ 107 B ÷ 5 s ≈ 15,700 per second per worker. Stop does
// not wait for this (see Stop).
func WithInflightBytes(n int) Option {
	return func(s *settings) { s.inflightBytes = n }
}

// WithErrorHandler sets a function that is told about events that concern no single
// notification: failed connection attempts, lost connections, error responses that name no
// notification in flight (ErrUnknownID), failed feedback polls. It runs on the same
// dispatcher goroutine as the callback (feedback errors: on the feedback poller's goroutine)
// and must not block for long. Stop and Shutdown wait for it, so it must not call them (nor
// FeedbackClient.Stop): the call would wait for itself and never return. To stop the client
// from the handler, call Stop on another goroutine (go c.Stop()), as with http.Server.Shutdown
// from a handler. Default: such events are only counted.
func WithErrorHandler(f func(error)) Option {
	return func(s *settings) { s.errorHandler = f }
}

// WithLogger makes the client log connection events to l: connections opened and closed,
// lost connections and reconnects, rejections, frames written again, HTTP/2 retries. Routine
// events are logged at Debug, replays and rejections at Info, lost connections and failed
// connection attempts at Warn. Tokens appear abbreviated to their first 8 hex digits, keys and
// provider tokens never. Default: nothing is logged.
func WithLogger(l *slog.Logger) Option {
	return func(s *settings) { s.logger = l }
}

func (s *settings) assumeSent() time.Duration {
	return orDefault(s.assumeSentTimeout, WORKER_ASSUME_SENT_TIMEOUT)
}
func (s *settings) idle() time.Duration  { return orDefault(s.idleTimeout, WORKER_IDLE_TIMEOUT) }
func (s *settings) dial() time.Duration  { return orDefault(s.dialTimeout, DefaultDialTimeout) }
func (s *settings) write() time.Duration { return orDefault(s.writeTimeout, DefaultWriteTimeout) }
func (s *settings) queue() int           { return orDefault(s.queueSize, DefaultQueueSize) }
func (s *settings) inflight() int {
	return min(max(orDefault(s.inflightBytes, DefaultInflightBytes), maxFrameSize), maxInflightBytes)
}

func orDefault[T int | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}
