package apns

// This file owns Client: the send queue, the workers' lifecycle, the callback dispatcher and
// the statistics. One connection's work is in worker.go.

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// BadMessageCallback is called with each notification that APNs rejected and its status code
// (see Status). See Client.SetCallback for when and where it runs.
type BadMessageCallback func(m *Message, code uint8)

// Client sends notifications to the APNs binary gateway through a queue shared by a number of
// workers, one TLS connection each.
//
// A Client is safe for concurrent use by multiple goroutines. Its settings are fixed by
// CreateClient; only the callback may change later.
type Client struct {
	// Immutable after CreateClient.
	addr      string // host:port
	tlsConfig *tls.Config
	set       settings
	queue     chan []byte   // encoded frames accepted by Send; closed by Stop
	stopping  chan struct{} // closed when Stop begins: Send refuses, blocked Sends return
	abortCtx  context.Context
	abort     context.CancelFunc // called when Shutdown's context ends: workers stop waiting
	done      chan struct{}      // closed when Stop has finished

	mu        sync.Mutex // guards the fields below
	started   bool
	stopped   bool
	cb        BadMessageCallback
	feedbacks []*FeedbackClient
	events    *dispatcher // nil until Start

	senders sync.WaitGroup // Sends between their stopped check and their enqueue
	workers sync.WaitGroup

	stats counters
}

// CreateClient returns a client for the binary gateway at gateway, "host" or "host:port"
// (port 2195 by default; IPv6 literals in brackets, or bare without a port). cert and key are
// the PEM-encoded client certificate and private key; both may be empty for a gateway that
// does not ask for one. The server's certificate is verified against the system roots for the
// gateway's host unless anyServerCert is true; to trust another CA, pass WithTLSConfig. The
// connection uses TLS 1.2 or later.
//
// No connection is made until Start.
func CreateClient(gateway string, cert, key []byte, anyServerCert bool, opts ...Option) (*Client, error) {
	var set settings
	for _, opt := range opts {
		opt(&set)
	}
	addr, host, err := splitAddr(gateway, DefaultGatewayPort)
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
	return &Client{
		addr:      addr,
		tlsConfig: cfg,
		set:       set,
		queue:     make(chan []byte, set.queue()),
		stopping:  make(chan struct{}),
		abortCtx:  ctx,
		abort:     cancel,
		done:      make(chan struct{}),
	}, nil
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
// Callbacks run on one goroutine owned by the client, one at a time, never while a lock of
// the client is held, in the order in which the workers learned of the rejections (for one
// connection, in the order the frames were written). A slow callback delays later callbacks
// but never the workers. Stop returns after every callback already due has run. A panic in
// the callback is not recovered.
func (c *Client) SetCallback(cb BadMessageCallback) {
	c.mu.Lock()
	c.cb = cb
	c.mu.Unlock()
}

// Start opens workerCount TLS connections to the gateway and starts one worker on each. It
// tries each connection a few times; if none can be opened it returns the error and leaves
// nothing running, and Start may be called again. Connections that failed while others
// succeeded keep being retried in the background with backoff.
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

	conns := make([]net.Conn, workerCount)
	errs := make([]error, workerCount)
	var wg sync.WaitGroup
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conns[i], errs[i] = c.dialRetry(startDialAttempts)
		}()
	}
	wg.Wait()
	opened := 0
	for _, conn := range conns {
		if conn != nil {
			opened++
		}
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	if opened == 0 || c.stopped { // Stop ran meanwhile: it saw started and waits on workers
		for _, conn := range conns {
			if conn != nil {
				conn.Close()
			}
		}
		if c.stopped {
			return ErrStopped
		}
		c.started = false
		return fmt.Errorf("apns: cannot reach gateway %s: %w", c.addr, errors.Join(errs...))
	}
	c.events = newDispatcher(c)
	for _, conn := range conns {
		w := newWorker(c, conn == nil)
		c.workers.Add(1)
		go w.run(conn)
	}
	return nil
}

// startDialAttempts is how often Start tries each connection before giving up on it.
const startDialAttempts = 3

// dialRetry opens a connection, trying up to attempts times with backoff.
func (c *Client) dialRetry(attempts int) (net.Conn, error) {
	var err error
	for i := 1; i <= attempts; i++ {
		var conn net.Conn
		if conn, err = c.dial(); err == nil {
			return conn, nil
		}
		if i < attempts && !sleep(c.abortCtx, backoff(i)) {
			break
		}
	}
	return nil, err
}

// dial opens one TLS connection to the gateway, handshake included, within the dial timeout.
func (c *Client) dial() (net.Conn, error) {
	return dialTLS(c.abortCtx, c.addr, c.tlsConfig, c.set.dial())
}

func dialTLS(ctx context.Context, addr string, cfg *tls.Config, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	d := tls.Dialer{Config: cfg}
	return d.DialContext(ctx, "tcp", addr)
}

// Send validates a notification, encodes it and queues it for the workers. It returns an
// error for bad input (ErrTokenNotHex, ErrTokenLength, ErrPayloadEmpty, ErrPayloadMarshal,
// ErrPayloadTooLarge, ErrInvalidPriority, ErrInvalidExpiry) and ErrStopped once Stop has
// begun; the 2014 API panicked there instead. A zero expiry asks APNs to try once and not
// store the notification.
//
// Send may be called before Start: the notification waits in the queue. Send blocks while the
// queue is full. A nil error means the client has taken responsibility for the notification:
// it will be assumed delivered or handed to the callback.
func (c *Client) Send(token string, expiry time.Time, priority uint8, payload map[string]interface{}) error {
	return c.SendContext(context.Background(), token, expiry, priority, payload)
}

// SendContext is Send with a context that bounds the wait for room in the queue. When ctx ends
// first, the notification is not queued and ctx's error is returned.
func (c *Client) SendContext(ctx context.Context, token string, expiry time.Time, priority uint8, payload map[string]interface{}) error {
	frame, err := encodeFrame(token, expiry, priority, payload)
	if err != nil {
		return err
	}
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		return ErrStopped
	}
	c.senders.Add(1)
	c.mu.Unlock()
	defer c.senders.Done()
	select {
	case c.queue <- frame:
		c.stats.accepted.Add(1)
		return nil
	case <-c.stopping:
		return ErrStopped
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Stop stops the client gracefully: Send refuses new notifications, the workers write
// everything queued, wait until every frame in flight is assumed delivered or reported (up to
// the assume-sent timeout), close their connections and exit, feedback polling stops, and the
// callbacks already due run. If the gateway cannot be reached while stopping, the
// notifications that could not be written are reported with StatusUnknown. Stop is idempotent;
// later calls wait for the first to finish. It returns nil.
func (c *Client) Stop() error {
	return c.Shutdown(context.Background())
}

// Shutdown is Stop with a deadline. When ctx ends before the workers are done, they stop
// waiting: frames already written are counted as delivered without waiting out their window,
// and notifications not yet written are reported with StatusUnknown. Shutdown then returns
// ctx's error after everything has exited.
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
	close(c.queue)
	workersDone := make(chan struct{})
	go func() { c.workers.Wait(); close(workersDone) }()
	var err error
	select {
	case <-workersDone:
	case <-ctx.Done():
		err = ctx.Err()
		c.abort()
		<-workersDone
	}
	c.abort()

	// Whatever is left in the queue was never written: no worker ran, or all gave up.
	for frame := range c.queue {
		c.report(frame, StatusUnknown)
	}
	for _, fc := range feedbacks {
		fc.Stop()
	}
	c.mu.Lock()
	events := c.events
	c.mu.Unlock()
	if events != nil {
		events.close()
	}
	close(c.done)
	return err
}

// report hands a notification that will not be delivered to the callback.
func (c *Client) report(frame []byte, status Status) {
	if status == StatusUnknown {
		c.stats.unsent.Add(1)
	} else {
		c.stats.rejected.Add(1)
	}
	c.mu.Lock()
	events := c.events
	c.mu.Unlock()
	if events == nil { // never started: Stop is the only caller, on its own goroutine
		c.runCallback(frame, status)
		return
	}
	events.push(event{frame: frame, status: status})
}

// reportError hands an event that concerns no single notification to the error handler.
func (c *Client) reportError(err error) {
	if c.set.errorHandler == nil {
		return
	}
	c.mu.Lock()
	events := c.events
	c.mu.Unlock()
	if events == nil {
		c.set.errorHandler(err)
		return
	}
	events.push(event{err: err})
}

func (c *Client) runCallback(frame []byte, status Status) {
	c.mu.Lock()
	cb := c.cb
	c.mu.Unlock()
	if cb != nil {
		cb(messageOf(frame), uint8(status))
	}
}

// event is one report waiting for the dispatcher: a notification and its status, or an error.
type event struct {
	frame  []byte
	status Status
	err    error
}

// dispatcher runs callbacks one at a time on its own goroutine. Its queue is unbounded so
// that a slow callback never stalls a worker; it holds at most one entry per notification.
type dispatcher struct {
	c    *Client
	wake chan struct{} // capacity 1: something was pushed, or close was called
	done chan struct{} // closed when the goroutine has exited

	mu     sync.Mutex
	queue  []event
	closed bool
}

func newDispatcher(c *Client) *dispatcher {
	d := &dispatcher{c: c, wake: make(chan struct{}, 1), done: make(chan struct{})}
	go d.run()
	return d
}

func (d *dispatcher) push(e event) {
	d.mu.Lock()
	d.queue = append(d.queue, e)
	d.mu.Unlock()
	d.signal()
}

func (d *dispatcher) signal() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// close makes the goroutine exit after it has run every event pushed so far, and waits.
func (d *dispatcher) close() {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	d.signal()
	<-d.done
}

func (d *dispatcher) run() {
	defer close(d.done)
	for {
		<-d.wake
		for {
			d.mu.Lock()
			batch, closed := d.queue, d.closed
			d.queue = nil
			d.mu.Unlock()
			if len(batch) == 0 {
				if closed {
					return
				}
				break
			}
			for _, e := range batch {
				if e.err != nil {
					d.c.set.errorHandler(e.err)
				} else {
					d.c.runCallback(e.frame, e.status)
				}
			}
		}
	}
}

// Stats is a snapshot of a client's counters.
type Stats struct {
	Accepted   uint64 // notifications Send accepted
	Written    uint64 // frames written, replays included
	Delivered  uint64 // frames assumed delivered
	Rejected   uint64 // notifications reported with an APNs status
	Unsent     uint64 // notifications reported with StatusUnknown because they were never written
	Replayed   uint64 // frames written again after a rejection, a shutdown or a lost connection
	Duplicates uint64 // replayed frames that the gateway may already have delivered (lost connection)
	Drops      uint64 // connections lost without an error response
	Reconnects uint64 // connections opened after the first of each worker
	UnknownIDs uint64 // error responses naming no frame in flight
}

type counters struct {
	accepted, written, delivered, rejected, unsent, replayed, duplicates, drops, reconnects,
	unknownIDs atomic.Uint64
}

// Stats returns the client's counters. Once Stop has returned, Accepted equals Delivered +
// Rejected + Unsent.
func (c *Client) Stats() Stats {
	s := &c.stats
	return Stats{
		Accepted:   s.accepted.Load(),
		Written:    s.written.Load(),
		Delivered:  s.delivered.Load(),
		Rejected:   s.rejected.Load(),
		Unsent:     s.unsent.Load(),
		Replayed:   s.replayed.Load(),
		Duplicates: s.duplicates.Load(),
		Drops:      s.drops.Load(),
		Reconnects: s.reconnects.Load(),
		UnknownIDs: s.unknownIDs.Load(),
	}
}
