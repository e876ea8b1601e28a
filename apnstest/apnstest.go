// This file owns Server, the mock of the binary gateway (PROTOCOL.md §1), and netServer, the
// listener and connection tracking that all three servers share.

package apnstest

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Notification is one notification the gateway accepted (or, in Rejected, refused).
type Notification struct {
	Command  uint8  // 0, 1 or 2 (in Rejected, the command byte as received)
	Token    []byte // device token
	ID       uint32 // the 4 identifier bytes read as big-endian; 0 for command 0 or a frame without item 3
	Expiry   uint32 // expiration, UNIX seconds; 0 for command 0
	Priority uint8  // 10 when the format has none (commands 0 and 1) or item 5 is absent
	Payload  []byte // JSON payload, as received
	Conn     int    // 1-based sequence number of the connection that carried it
}

// ConnScript scripts one connection. Scripts queued with Server.Script are consumed one per
// accepted TCP connection, in order; connections with no script left behave normally.
//
// A script holds at most one event. If more than one event field is set, the first of Drop,
// Shutdown, Reject, Garbage and Stall is the one that happens.
type ConnScript struct {
	// RefuseHandshake closes the TCP connection before the TLS handshake.
	RefuseHandshake bool
	// HandshakeDelay makes the server sleep this long before the handshake (or before
	// refusing it), as a slow server would.
	HandshakeDelay time.Duration

	// After is the number of frames to accept normally before the event below happens.
	// The event happens as soon as the After-th frame has been accepted (at once if After
	// is 0), without waiting for more input.
	After int

	// Drop closes the connection without an error response.
	Drop bool
	// Shutdown writes an error response with status 10 (shutdown) naming the last frame
	// accepted on this connection (identifier 0 if none), then closes the connection.
	Shutdown bool
	// Reject reads the next frame and rejects it with this status: an error response naming
	// its identifier, then close. A frame that is malformed gets its own status instead, as
	// APNs checks structure first. A command-0 frame has no identifier, so it is rejected by
	// dropping the connection.
	Reject uint8
	// Garbage writes these raw bytes (which need not be a valid response), then closes the
	// connection.
	Garbage []byte
	// Stall stops reading for this long, then carries on normally.
	Stall time.Duration
}

// hasEvent reports whether the script has an event to fire after After frames.
func (sc *ConnScript) hasEvent() bool {
	return sc.Drop || sc.Shutdown || sc.Reject != 0 || sc.Garbage != nil || sc.Stall > 0
}

// Server is a mock APNs gateway speaking the legacy binary protocol over TLS. Its methods are
// safe for concurrent use; its exported fields must not change after Start.
type Server struct {
	// Addr is the "127.0.0.1:port" the server listens on, set by Start.
	Addr string

	// AllowNoClientCert lets clients connect without a certificate (one that is given is
	// still verified). Set before Start. Default: as Apple's gateway did, the handshake fails
	// unless the client presents a certificate signed by the package's test CA (ClientCertPEM
	// gives one), so a client that forgot its certificate is not told "delivered".
	AllowNoClientCert bool

	// RequireClientCert is the old opt-in to what is now the default.
	//
	// Deprecated: a client certificate is required unless AllowNoClientCert is set; this
	// field has no effect.
	RequireClientCert bool

	// DiscardNotifications makes the server count accepted notifications without keeping
	// them, so Notifications returns nothing (for benchmarks). Set before Start. Default:
	// every accepted notification is kept.
	DiscardNotifications bool

	// Observe, if set before Start, is called for every accepted notification, from the
	// goroutine serving its connection, possibly concurrently with other calls. The
	// notification's slices are the caller's to keep. Observe returns before the
	// notification is counted, so once WaitCount(n) reports true, Observe has returned for
	// n notifications. The connection waits for Observe; a panic in it is not recovered.
	Observe func(Notification)

	// ObserveRejected, if set before Start, is called for every notification the server
	// refuses, whatever refused it: the protocol checks (status 2, 4, 5, 7, 128), a script,
	// RejectToken or RejectFunc. status is the status of the refusal, sent in the error
	// response; a command-0 frame has no identifier, so the server drops the connection
	// instead, and status is 0 when the frame's structure was at fault. It is called
	// from the goroutine serving the connection, before the response is written; the
	// notification's slices are the caller's to keep; a panic in it is not recovered.
	// Sentinel frames are not notifications and do not reach it (see Sentinels).
	ObserveRejected func(n Notification, status uint8)

	// Listener, if set before Start, is the listener the server serves on instead of a new
	// one on 127.0.0.1:0; Start takes it over and Close closes it. The server's certificate
	// is valid only for 127.0.0.1, ::1 and localhost.
	Listener net.Listener

	ns netServer

	// Set by Start, then read-only.
	tlsConf         *tls.Config
	discard         bool
	observe         func(Notification)
	observeRejected func(Notification, uint8)

	rules     atomic.Pointer[rules] // nil when no rule is set
	count     tally                 // accepted notifications
	sentinels atomic.Int64          // sentinel frames answered

	mu       sync.Mutex // guards the fields below, and rules updates
	scripts  []ConnScript
	notes    []Notification
	rejected []Notification
}

// rules is an immutable snapshot of the rejection rules, swapped as a whole on change so the
// connection goroutines read it without locking.
type rules struct {
	tokens map[string]uint8
	fn     func(Notification) uint8
}

// NewServer returns a started Server listening on 127.0.0.1 on a free port. The caller
// should Close it when done.
func NewServer() *Server {
	s := NewUnstartedServer()
	s.Start()
	return s
}

// NewUnstartedServer returns a Server that is not yet listening, so its fields can be set
// before Start.
func NewUnstartedServer() *Server {
	s := &Server{}
	return s
}

// Start starts listening on 127.0.0.1 on a free port and sets Addr. It panics if the server
// was already started or closed, or if it cannot listen.
func (s *Server) Start() {
	s.Addr = s.ns.start("Server", s.Listener, func() {
		s.tlsConf = serverTLSConfig(!s.AllowNoClientCert)
		s.discard = s.DiscardNotifications
		s.observe = s.Observe
		s.observeRejected = s.ObserveRejected
	}, func(c *trackedConn) func() {
		sc, ok := s.nextScript()
		return func() { s.serve(c, sc, ok) }
	})
}

// Close closes the listener and every client connection, then blocks until all of the
// server's goroutines have exited. If that takes longer than 5 seconds it logs what it is
// still waiting for and keeps waiting. Calling Close more than once is safe.
func (s *Server) Close() { s.ns.close() }

// CloseClientConnections drops every open client connection without an error response and
// waits until their goroutines have exited. The server keeps accepting new connections. It
// must not be called from Observe or a RejectFunc.
func (s *Server) CloseClientConnections() { s.ns.closeConns() }

// Script queues scripts for the next connections the server accepts, one per connection, in
// order.
func (s *Server) Script(scripts ...ConnScript) {
	s.mu.Lock()
	s.scripts = append(s.scripts, scripts...)
	s.mu.Unlock()
}

func (s *Server) nextScript() (ConnScript, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.scripts) == 0 {
		return ConnScript{}, false
	}
	sc := s.scripts[0]
	s.scripts = s.scripts[1:]
	return sc, true
}

// RejectToken makes the server reject every later well-formed notification to token with
// status, on any connection. token is the device token in hexadecimal, as HTTP2Server.Respond
// takes it (either case). A status of 0 removes the rule for token. It panics if token is not
// hexadecimal, as a rule that can never match would be a mistake in the test.
func (s *Server) RejectToken(token string, status uint8) {
	tok, err := hex.DecodeString(token)
	if err != nil {
		panic(fmt.Sprintf("apnstest: RejectToken: token %q is not hexadecimal: %v", token, err))
	}
	s.updateRules(func(r *rules) {
		m := make(map[string]uint8, len(r.tokens)+1)
		for k, v := range r.tokens {
			m[k] = v
		}
		if status == 0 {
			delete(m, string(tok))
		} else {
			m[string(tok)] = status
		}
		r.tokens = m
	})
}

// RejectFunc sets a function the server calls for every well-formed notification not
// already rejected by a script or RejectToken; a non-zero return rejects the notification
// with that status. The function runs on connection goroutines, possibly concurrently, and
// owns the notification's slices. A nil f removes it.
func (s *Server) RejectFunc(f func(Notification) uint8) {
	s.updateRules(func(r *rules) { r.fn = f })
}

func (s *Server) updateRules(change func(*rules)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var r rules
	if old := s.rules.Load(); old != nil {
		r = *old
	}
	change(&r)
	if len(r.tokens) == 0 && r.fn == nil {
		s.rules.Store(nil)
		return
	}
	s.rules.Store(&r)
}

// Notifications returns the accepted notifications in the order they were accepted (which,
// across connections, is the order the server recorded them). The slice is a copy, but the
// Token and Payload slices are shared with the server and must not be modified. It is empty
// when DiscardNotifications is set.
func (s *Server) Notifications() []Notification {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Notification(nil), s.notes...)
}

// Rejected returns the notifications the server refused, in order: with an error response,
// or, for command 0, by dropping the connection. ID is the identifier the error response
// named; Token and Payload are set when the frame was parsed far enough to have them.
// Frames the server discarded unread after an error are not included, and neither are
// sentinel frames, which are the client's end-of-connection marker rather than notifications
// (see Sentinels).
func (s *Server) Rejected() []Notification {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Notification(nil), s.rejected...)
}

// Sentinels returns the number of sentinel frames the server has answered so far. A sentinel
// is a command-2 frame holding an identifier item and nothing else: a client (apns-go's, on
// Stop) writes one as the last frame of a connection, so that the error response naming it
// (status 2, missing device token) confirms every frame before it. It is not a notification,
// so Rejected and ObserveRejected leave it out; how many a run writes depends on how many
// connections were open when it stopped.
func (s *Server) Sentinels() int { return int(s.sentinels.Load()) }

// Count returns the number of notifications accepted so far. It counts also when
// DiscardNotifications is set.
func (s *Server) Count() int { return s.count.load() }

// Conns returns the number of TCP connections accepted so far, including ones whose
// handshake was refused or failed.
func (s *Server) Conns() int { return s.ns.conns() }

// WaitCount waits until Count() >= n and reports true, or reports false once timeout has
// passed.
func (s *Server) WaitCount(n int, timeout time.Duration) bool { return s.count.wait(n, timeout) }

// Certificate returns the server's leaf certificate.
func (s *Server) Certificate() *x509.Certificate { return thePKI().server.Leaf }

// RootCAs returns a new pool holding the test CA, which signed the server's certificate.
func (s *Server) RootCAs() *x509.CertPool { return caPool() }

// ClientTLSConfig returns a new client configuration that trusts the server's certificate,
// with MinVersion TLS 1.2. It has no client certificate (the server requires one: pass
// ClientCertPEM's to the client) and no ServerName; the certificate is valid for 127.0.0.1,
// ::1 and localhost.
func (s *Server) ClientTLSConfig() *tls.Config { return clientTLSConfig() }

// accept records a notification that passed every check. n's slices alias the read buffer.
func (s *Server) accept(n *Notification) {
	if s.observe != nil {
		s.observe(n.clone())
	}
	if !s.discard {
		own := n.clone()
		s.mu.Lock()
		s.notes = append(s.notes, own)
		s.mu.Unlock()
	}
	s.count.add()
}

// tally counts what a server accepted and wakes the WaitCount calls waiting for a number.
type tally struct {
	n       atomic.Int64
	waiters atomic.Int32 // wait calls in progress; add signals only when there are some

	mu      sync.Mutex
	changed chan struct{} // closed and replaced when n grows while waiters > 0
}

func (t *tally) load() int { return int(t.n.Load()) }

func (t *tally) add() {
	t.n.Add(1)
	if t.waiters.Load() > 0 {
		t.mu.Lock()
		if t.changed != nil {
			close(t.changed)
			t.changed = nil
		}
		t.mu.Unlock()
	}
}

// wait waits until the count reaches n, or reports false once timeout has passed.
func (t *tally) wait(n int, timeout time.Duration) bool {
	t.waiters.Add(1)
	defer t.waiters.Add(-1)
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		t.mu.Lock()
		if t.changed == nil {
			t.changed = make(chan struct{})
		}
		changed := t.changed
		t.mu.Unlock()
		if t.load() >= n {
			return true
		}
		select {
		case <-changed:
		case <-deadline.C:
			return t.load() >= n
		}
	}
}

// reject records a notification refused with status (0: dropped without a response) and
// tells ObserveRejected. n's slices alias the read buffer.
func (s *Server) reject(n *Notification, status uint8) {
	own := n.clone()
	s.mu.Lock()
	s.rejected = append(s.rejected, own)
	s.mu.Unlock()
	if s.observeRejected != nil {
		s.observeRejected(n.clone(), status)
	}
}

// clone returns n with Token and Payload copied into one new allocation.
func (n *Notification) clone() Notification {
	c := *n
	if n.Token == nil && n.Payload == nil {
		return c
	}
	buf := make([]byte, len(n.Token)+len(n.Payload))
	tl := copy(buf, n.Token)
	copy(buf[tl:], n.Payload)
	if n.Token != nil {
		c.Token = buf[:tl:tl]
	}
	if n.Payload != nil {
		c.Payload = buf[tl:]
	}
	return c
}

// Protocol constants (PROTOCOL.md §1).
const (
	tokenSize        = 32
	maxPayload       = 2048 // command 2
	maxLegacyPayload = 256  // commands 0 and 1
	maxFrameLen      = 8 << 10
	defaultPriority  = 10

	statusMissingToken   = 2
	statusMissingPayload = 4
	statusBadTokenSize   = 5
	statusBadPayloadSize = 7
	statusShutdown       = 10
	statusProtocol       = 128

	// verdictDrop closes the connection without a response (a bad command-0 frame).
	verdictDrop = 256

	readBufSize   = 64 << 10
	lingerTimeout = 100 * time.Millisecond
)

var be = binary.BigEndian

// parsed is the result of parseFrame.
type parsed struct {
	n        Notification // Token and Payload alias the parsed bytes
	size     int          // bytes the frame occupies; set when verdict is 0
	verdict  int          // 0 (accept), an APNs status, or verdictDrop
	sentinel bool         // a command-2 frame holding only an identifier item
}

// parseFrame parses the frame at the start of b into p. If b is too short to decide, it
// returns the number of bytes it needs (more than len(b)); call it again with at least that
// many. Otherwise it returns 0 and p holds the frame or the reason to refuse it. It never asks
// for more than 5+maxFrameLen bytes.
func parseFrame(b []byte, p *parsed) (need int) {
	*p = parsed{}
	if len(b) < 1 {
		return 1
	}
	p.n.Command = b[0]
	p.n.Priority = defaultPriority
	switch b[0] {
	case 0: // 0 | tokenLen u16 | token | payloadLen u16 | payload
		if len(b) < 3 {
			return 3
		}
		if be.Uint16(b[1:]) != tokenSize {
			p.verdict = verdictDrop
			return 0
		}
		const hdr = 3 + tokenSize + 2
		if len(b) < hdr {
			return hdr
		}
		p.n.Token = b[3 : 3+tokenSize]
		pl := int(be.Uint16(b[hdr-2:]))
		if pl == 0 || pl > maxLegacyPayload {
			p.verdict = verdictDrop
			return 0
		}
		if len(b) < hdr+pl {
			return hdr + pl
		}
		p.n.Payload = b[hdr : hdr+pl]
		p.size = hdr + pl
		return 0

	case 1: // 1 | id 4 | expiry u32 | tokenLen u16 | token | payloadLen u16 | payload
		if len(b) < 11 {
			return 11
		}
		p.n.ID = be.Uint32(b[1:])
		p.n.Expiry = be.Uint32(b[5:])
		if be.Uint16(b[9:]) != tokenSize {
			p.verdict = statusBadTokenSize
			return 0
		}
		const hdr = 11 + tokenSize + 2
		if len(b) < hdr {
			return hdr
		}
		p.n.Token = b[11 : 11+tokenSize]
		switch pl := int(be.Uint16(b[hdr-2:])); {
		case pl == 0:
			p.verdict = statusMissingPayload
		case pl > maxLegacyPayload:
			p.verdict = statusBadPayloadSize
		case len(b) < hdr+pl:
			return hdr + pl
		default:
			p.n.Payload = b[hdr : hdr+pl]
			p.size = hdr + pl
		}
		return 0

	case 2: // 2 | frameLen u32 | items
		if len(b) < 5 {
			return 5
		}
		fl := be.Uint32(b[1:])
		if fl > maxFrameLen {
			p.verdict = statusProtocol
			return 0
		}
		size := 5 + int(fl)
		if len(b) < size {
			return size
		}
		var seen uint8
		p.verdict, seen = parseItems(b[5:size], &p.n)
		p.sentinel = seen == 1<<3 && p.verdict == statusMissingToken
		if p.verdict == 0 {
			p.size = size
		}
		return 0

	default:
		p.verdict = statusProtocol
		return 0
	}
}

// parseItems parses the items of a command-2 frame into n and returns 0 or the status to
// reject the frame with, and the set of items it read (bit i for item i). Structural faults
// (which make n.ID 0 unless item 3 came before them) are found first, then missing or badly
// sized fields.
func parseItems(items []byte, n *Notification) (verdict int, seen uint8) {
	var prio []byte
	for len(items) > 0 {
		if len(items) < 3 {
			return statusProtocol, seen
		}
		id, l := items[0], int(be.Uint16(items[1:]))
		if l > len(items)-3 {
			return statusProtocol, seen
		}
		data := items[3 : 3+l]
		items = items[3+l:]
		if id < 1 || id > 5 || seen&(1<<id) != 0 {
			return statusProtocol, seen
		}
		seen |= 1 << id
		switch id {
		case 1:
			n.Token = data
		case 2:
			n.Payload = data
		case 3:
			if l != 4 {
				return statusProtocol, seen
			}
			n.ID = be.Uint32(data)
		case 4:
			if l != 4 {
				return statusProtocol, seen
			}
			n.Expiry = be.Uint32(data)
		case 5:
			if l != 1 {
				return statusProtocol, seen
			}
			prio = data
		}
	}
	switch {
	case seen&(1<<1) == 0:
		return statusMissingToken, seen
	case len(n.Token) != tokenSize:
		return statusBadTokenSize, seen
	case len(n.Payload) == 0:
		return statusMissingPayload, seen
	case len(n.Payload) > maxPayload:
		return statusBadPayloadSize, seen
	}
	if prio != nil {
		if prio[0] != 5 && prio[0] != 10 {
			return statusProtocol, seen
		}
		n.Priority = prio[0]
	}
	return 0, seen
}

// gwConn is one gateway connection after its handshake. Only its own goroutine touches it.
type gwConn struct {
	s    *Server
	tc   *trackedConn // nil in benchmarks that feed br directly
	conn *tls.Conn    // responses are written here; nil with tc
	br   *bufio.Reader

	script     ConnScript
	pending    bool  // script's event has not happened yet
	rejectNext uint8 // set by a Reject event
	accepted   int   // frames accepted on this connection
	lastID     uint32
}

// serve runs one gateway connection; the caller closes it afterwards.
func (s *Server) serve(c *trackedConn, sc ConnScript, scripted bool) {
	if sc.HandshakeDelay > 0 {
		c.setState("delaying the handshake")
		if !c.sleep(sc.HandshakeDelay) {
			return
		}
	}
	if sc.RefuseHandshake {
		return
	}
	c.setState("in the TLS handshake")
	tc := tls.Server(c.raw, s.tlsConf)
	if err := tc.Handshake(); err != nil {
		return
	}
	c.setState("reading frames")
	g := &gwConn{
		s:       s,
		tc:      c,
		conn:    tc,
		br:      bufio.NewReaderSize(tc, readBufSize),
		script:  sc,
		pending: scripted && sc.hasEvent(),
	}
	g.run()
}

// run reads and handles frames until the connection ends or is to be closed.
func (g *gwConn) run() {
	var p parsed
	for {
		if g.pending && g.accepted >= g.script.After {
			g.pending = false
			if !g.event() {
				return
			}
		}
		if err := g.next(&p); err != nil {
			return
		}
		p.n.Conn = g.seq()
		v := p.verdict
		if v == 0 {
			v = g.judge(&p.n)
		}
		if v != 0 {
			switch {
			case p.sentinel:
				g.s.sentinels.Add(1)
			case v == verdictDrop:
				g.s.reject(&p.n, 0)
			default:
				g.s.reject(&p.n, uint8(v))
			}
			if v != verdictDrop && p.n.Command != 0 {
				g.respond(uint8(v), p.n.ID)
			}
			return
		}
		g.accepted++
		g.lastID = p.n.ID
		g.s.accept(&p.n)
		if _, err := g.br.Discard(p.size); err != nil {
			return
		}
	}
}

func (g *gwConn) seq() int {
	if g.tc == nil {
		return 0
	}
	return g.tc.seq
}

// next peeks at the next complete frame (or enough of it to refuse it) and parses it in place.
func (g *gwConn) next(p *parsed) error {
	need := g.br.Buffered()
	if need == 0 {
		need = 1
	}
	for {
		b, err := g.br.Peek(need)
		if err != nil {
			return err
		}
		if need = parseFrame(b, p); need == 0 {
			return nil
		}
	}
}

// judge applies the script's Reject event and the rejection rules to a well-formed frame.
func (g *gwConn) judge(n *Notification) int {
	if g.rejectNext != 0 {
		return int(g.rejectNext)
	}
	r := g.s.rules.Load()
	if r == nil {
		return 0
	}
	if st := r.tokens[string(n.Token)]; st != 0 {
		return int(st)
	}
	if r.fn != nil {
		return int(r.fn(n.clone()))
	}
	return 0
}

// event performs the script's event and reports whether to keep reading.
func (g *gwConn) event() bool {
	sc := &g.script
	switch {
	case sc.Drop:
		return false
	case sc.Shutdown:
		g.respond(statusShutdown, g.lastID)
		return false
	case sc.Reject != 0:
		g.rejectNext = sc.Reject
		return true
	case sc.Garbage != nil:
		if _, err := g.conn.Write(sc.Garbage); err == nil {
			g.linger()
		}
		return false
	default: // Stall
		g.tc.setState("stalled by its script")
		ok := g.tc.sleep(sc.Stall)
		g.tc.setState("reading frames")
		return ok
	}
}

// respond writes an error response and closes the connection gracefully.
func (g *gwConn) respond(status uint8, id uint32) {
	b := [6]byte{8, status}
	be.PutUint32(b[2:], id)
	if _, err := g.conn.Write(b[:]); err == nil {
		g.linger()
	}
}

// linger ends a connection whose last bytes must reach the client: see lingerClose.
func (g *gwConn) linger() { lingerClose(g.tc, g.conn) }

// lingerClose sends close_notify and a TCP FIN after what was written, then reads and
// discards whatever the client still sends until it closes or lingerTimeout passes. Closing
// right away with unread input would make the kernel send a reset, which can destroy the
// written bytes before the client reads them. The caller closes c afterwards.
func lingerClose(c *trackedConn, tc *tls.Conn) {
	c.setState("closing gracefully")
	_ = tc.CloseWrite()
	if cw, ok := c.raw.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	_ = c.raw.SetReadDeadline(time.Now().Add(lingerTimeout))
	_, _ = io.Copy(io.Discard, c.raw)
}

// netServer owns a listener, the connections accepted from it and the goroutines serving
// them. Server and FeedbackServer each have one.
type netServer struct {
	name       string        // type name for panics and logs; immutable after start
	acceptDone chan struct{} // closed when the accept loop exits; immutable after start

	mu      sync.Mutex
	started bool
	closed  bool
	ln      net.Listener
	live    map[*trackedConn]struct{}
	n       int // connections accepted so far
}

// trackedConn is one accepted TCP connection and the goroutine serving it.
type trackedConn struct {
	seq      int      // 1-based
	raw      net.Conn // the TCP connection
	kill     chan struct{}
	killOnce sync.Once
	done     chan struct{} // closed when the serving goroutine has finished
	state    atomic.Value  // string: what the goroutine is doing, for Close's log
}

func (c *trackedConn) setState(s string) { c.state.Store(s) }

// close closes the TCP connection and ends any sleep of its goroutine. Safe to repeat.
func (c *trackedConn) close() {
	c.killOnce.Do(func() {
		close(c.kill)
		_ = c.raw.Close()
	})
}

// sleep waits for d and reports true, or reports false early if the connection is closed.
func (c *trackedConn) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-c.kill:
		return false
	}
}

// start listens on 127.0.0.1:0, or takes ln if it is not nil, calls setup, and starts the
// accept loop. For every accepted
// connection the loop calls handle, in accept order, and runs the function it returns on a
// new goroutine. It panics if called twice or after close, before calling setup.
func (ns *netServer) start(name string, ln net.Listener, setup func(), handle func(*trackedConn) func()) string {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if ns.started || ns.closed {
		panic("apnstest: " + name + " already started or closed")
	}
	if ln == nil {
		var err error
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			panic(fmt.Sprintf("apnstest: %s failed to listen on a port: %v", name, err))
		}
	}
	ns.name = name
	ns.started = true
	ns.ln = ln
	ns.live = make(map[*trackedConn]struct{})
	ns.acceptDone = make(chan struct{})
	setup()
	go ns.acceptLoop(ln, handle)
	return ln.Addr().String()
}

func (ns *netServer) acceptLoop(ln net.Listener, handle func(*trackedConn) func()) {
	defer close(ns.acceptDone)
	for {
		raw, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(5 * time.Millisecond) // e.g. out of file descriptors
			continue
		}
		ns.mu.Lock()
		if ns.closed {
			ns.mu.Unlock()
			_ = raw.Close()
			continue
		}
		ns.n++
		c := &trackedConn{seq: ns.n, raw: raw, kill: make(chan struct{}), done: make(chan struct{})}
		c.setState("starting")
		ns.live[c] = struct{}{}
		ns.mu.Unlock()

		body := handle(c)
		go func() {
			defer close(c.done)
			defer ns.forget(c)
			body()
		}()
	}
}

func (ns *netServer) forget(c *trackedConn) {
	c.close()
	ns.mu.Lock()
	delete(ns.live, c)
	ns.mu.Unlock()
}

func (ns *netServer) conns() int {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	return ns.n
}

func (ns *netServer) liveConns() []*trackedConn {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	cs := make([]*trackedConn, 0, len(ns.live))
	for c := range ns.live {
		cs = append(cs, c)
	}
	return cs
}

// close stops the listener, closes every connection and waits for all goroutines.
func (ns *netServer) close() {
	ns.mu.Lock()
	ns.closed = true
	ln := ns.ln
	ns.mu.Unlock()
	if ln == nil { // never started
		return
	}
	_ = ln.Close()
	w := newWaiter(ns.name + ".Close")
	w.waitFor(ns.acceptDone, func() string { return "the accept loop" })
	// The accept loop has exited, so the set of connections can only shrink now.
	ns.closeAndWait(w, ns.liveConns())
}

// closeConns closes the connections open now and waits for their goroutines.
func (ns *netServer) closeConns() {
	ns.closeAndWait(newWaiter(ns.name+".CloseClientConnections"), ns.liveConns())
}

func (ns *netServer) closeAndWait(w *waiter, cs []*trackedConn) {
	for _, c := range cs {
		c.close()
	}
	for i := range cs {
		w.waitConns(cs[i:])
	}
	w.timer.Stop()
}

// waiter waits for goroutines to finish and logs, once, what it is still waiting for if that
// takes more than 5 seconds (like httptest).
type waiter struct {
	what   string
	timer  *time.Timer
	logged bool
}

func newWaiter(what string) *waiter {
	return &waiter{what: what, timer: time.NewTimer(5 * time.Second)}
}

// waitConns waits for the first of cs; the rest are only named in the log.
func (w *waiter) waitConns(cs []*trackedConn) {
	w.waitFor(cs[0].done, func() string {
		var b strings.Builder
		for _, c := range cs {
			select {
			case <-c.done:
				continue
			default:
			}
			if b.Len() > 0 {
				b.WriteString("; ")
			}
			fmt.Fprintf(&b, "connection %d from %v (%v)", c.seq, c.raw.RemoteAddr(), c.state.Load())
		}
		return b.String()
	})
}

func (w *waiter) waitFor(done <-chan struct{}, desc func() string) {
	if w.logged {
		<-done
		return
	}
	select {
	case <-done:
	case <-w.timer.C:
		w.logged = true
		log.Printf("apnstest: %s is still waiting after 5s for %s", w.what, desc())
		<-done
	}
}
