package apns

// This file owns the binary transport (PROTOCOL.md §1–2): the queue of encoded frames and the
// workers that write it, one TLS connection each. One connection's work is in worker.go, the
// frames it keeps in flight in inflight.go, the frame codec in message.go.

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// binaryTransport is the binary side of a Client.
type binaryTransport struct {
	c       *Client
	queue   chan *frameBuf // encoded frames accepted by Send; closed by drain
	workers sync.WaitGroup
	opened  []net.Conn // what open opened, for run or discard; Start's alone
}

func newBinaryTransport(c *Client) *binaryTransport {
	return &binaryTransport{c: c, queue: make(chan *frameBuf, c.set.queue())}
}

// open opens n connections at once, each tried startDialAttempts times. It fails only when
// none opens; a worker whose connection failed keeps trying in the background once it runs.
func (b *binaryTransport) open(n int) error {
	conns := make([]net.Conn, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range conns {
		wg.Go(func() { conns[i], errs[i] = b.dialRetry(startDialAttempts) })
	}
	wg.Wait()
	b.opened = conns
	for _, conn := range conns {
		if conn != nil {
			return nil
		}
	}
	return fmt.Errorf("apns: cannot reach %s: %w", b.c.addr, errors.Join(distinct(errs)...))
}

// run starts a worker on each connection open opened, and on each it failed to open.
func (b *binaryTransport) run() {
	for _, conn := range b.opened {
		w := newWorker(b, conn == nil)
		b.workers.Add(1)
		go w.run(conn)
	}
	b.opened = nil
}

// discard closes the connections open opened.
func (b *binaryTransport) discard() {
	for _, conn := range b.opened {
		if conn != nil {
			conn.Close()
		}
	}
	b.opened = nil
}

// dialRetry opens a connection, trying up to attempts times with backoff.
func (b *binaryTransport) dialRetry(attempts int) (net.Conn, error) {
	var err error
	for i := 1; i <= attempts; i++ {
		var conn net.Conn
		if conn, err = b.dial(); err == nil {
			return conn, nil
		}
		b.c.connectFailed(i, err)
		if i < attempts && !sleep(b.c.abortCtx, backoff(i)) {
			break
		}
	}
	return nil, err
}

// dial opens one TLS connection to the gateway, handshake included, within the dial timeout.
func (b *binaryTransport) dial() (net.Conn, error) {
	return dialTLS(b.c.abortCtx, b.c.addr, b.c.tlsConfig, b.c.set.dial())
}

func dialTLS(ctx context.Context, addr string, cfg *tls.Config, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	d := tls.Dialer{Config: cfg}
	return d.DialContext(ctx, "tcp", addr)
}

// send encodes Send's notification as a frame and queues it.
func (b *binaryTransport) send(ctx context.Context, token string, expiry time.Time, priority uint8, payload map[string]interface{}) error {
	f := getFrameBuf()
	err := f.encode(token, expiry, priority, payload)
	if err == nil {
		err = enqueue(ctx, b.c, b.queue, f)
	}
	if err != nil {
		f.release()
	}
	return err
}

func (b *binaryTransport) queued() int { return len(b.queue) }

func (b *binaryTransport) hasFeedbackService() bool { return true }

// drain closes the queue; the workers write what it holds and exit once every frame is
// settled (or, after the abort, given up).
func (b *binaryTransport) drain() <-chan struct{} {
	close(b.queue)
	done := make(chan struct{})
	go func() { b.workers.Wait(); close(done) }()
	return done
}

// finish reports what is left in the queue, which no worker wrote: none ran, or all gave up.
// The workers have closed their connections.
func (b *binaryTransport) finish() {
	for f := range b.queue {
		b.c.reportUnsent(f.b)
		f.release()
	}
}
