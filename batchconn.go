package apns

// This file owns batchConn, the TLS connection under each HTTP/2 connection to the gateway,
// which gathers net/http's writes into fewer TLS records and system calls. Its watch for
// silence is in silence.go.

import (
	"crypto/tls"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
)

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
