// This file owns FeedbackServer, the mock of the APNs feedback service (PROTOCOL.md §2).

package apnstest

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"sync"
	"time"
)

// FeedbackServer is a mock APNs feedback service. On each connection, once the TLS handshake
// is done, it writes everything queued with Add and AddRaw so far, forgets it (Apple clears
// the list once it is read), and closes the connection; it reads nothing from the client.
// A connection with nothing queued is closed without data. Its methods are safe for
// concurrent use.
type FeedbackServer struct {
	// Addr is the "127.0.0.1:port" the server listens on, set by Start.
	Addr string

	// AllowNoClientCert lets clients connect without a certificate (one that is given is
	// still verified). Set before Start. Default: as Apple's service did, the handshake fails
	// unless the client presents a certificate signed by the package's test CA (ClientCertPEM
	// gives one).
	AllowNoClientCert bool

	// Listener, if set before Start, is the listener the server serves on instead of a new
	// one on 127.0.0.1:0; Start takes it over and Close closes it. The server's certificate
	// is valid only for 127.0.0.1, ::1 and localhost.
	Listener net.Listener

	ns netServer

	mu     sync.Mutex
	queued []byte // encoded tuples and raw bytes, in the order they were added
}

// NewFeedbackServer returns a started FeedbackServer listening on 127.0.0.1 on a free port.
// The caller should Close it when done.
func NewFeedbackServer() *FeedbackServer {
	f := NewUnstartedFeedbackServer()
	f.Start()
	return f
}

// NewUnstartedFeedbackServer returns a FeedbackServer that is not yet listening.
func NewUnstartedFeedbackServer() *FeedbackServer { return &FeedbackServer{} }

// Start starts listening on 127.0.0.1 on a free port and sets Addr. It panics if the server
// was already started or closed, or if it cannot listen.
func (f *FeedbackServer) Start() {
	var conf *tls.Config
	f.Addr = f.ns.start("FeedbackServer", f.Listener, func() { conf = serverTLSConfig(!f.AllowNoClientCert) }, func(c *trackedConn) func() {
		return func() { f.serve(c, conf) }
	})
}

// Close closes the listener and every client connection, then blocks until all of the
// server's goroutines have exited, logging what it waits for if that takes more than
// 5 seconds. Calling Close more than once is safe.
func (f *FeedbackServer) Close() { f.ns.close() }

// Add queues a feedback tuple for the next connection: t as UNIX seconds (BE uint32, so t
// must lie between 1970 and 2106), the token's length (BE uint16) and the token.
func (f *FeedbackServer) Add(token []byte, t time.Time) {
	var hdr [6]byte
	be.PutUint32(hdr[:], uint32(t.Unix()))
	be.PutUint16(hdr[4:], uint16(len(token)))
	f.mu.Lock()
	f.queued = append(append(f.queued, hdr[:]...), token...)
	f.mu.Unlock()
}

// AddRaw queues raw bytes for the next connection, after anything queued before, for tests
// of malformed input.
func (f *FeedbackServer) AddRaw(b []byte) {
	f.mu.Lock()
	f.queued = append(f.queued, b...)
	f.mu.Unlock()
}

// Conns returns the number of TCP connections accepted so far.
func (f *FeedbackServer) Conns() int { return f.ns.conns() }

// RootCAs returns a new pool holding the test CA, which signed the server's certificate.
func (f *FeedbackServer) RootCAs() *x509.CertPool { return caPool() }

// ClientTLSConfig returns a new client configuration that trusts the server's certificate,
// with MinVersion TLS 1.2. It has no client certificate (add ClientCertPEM's). The gateway
// Server uses the same certificate, so one configuration works for both.
func (f *FeedbackServer) ClientTLSConfig() *tls.Config { return clientTLSConfig() }

func (f *FeedbackServer) serve(c *trackedConn, conf *tls.Config) {
	c.setState("in the TLS handshake")
	tc := tls.Server(c.raw, conf)
	if err := tc.Handshake(); err != nil {
		return
	}
	f.mu.Lock()
	data := f.queued
	f.queued = nil
	f.mu.Unlock()
	c.setState("writing feedback")
	if len(data) > 0 {
		if _, err := tc.Write(data); err != nil {
			return
		}
	}
	lingerClose(c, tc)
}
