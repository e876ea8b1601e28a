package apns

// This file owns one worker: a goroutine that keeps a TLS connection to the gateway, writes
// frames from the client's queue, keeps them in the in-flight ring, and reacts to the error
// response that a short-lived reader goroutine waits for.

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"time"
)

// Backoff between failed connection attempts of one worker.
const (
	backoffMin = 100 * time.Millisecond
	backoffMax = 30 * time.Second
	// stopDialAttempts is how often a worker tries to connect once Stop has begun before it
	// reports what it still holds as unsent.
	stopDialAttempts = 3
	// errorResponseGrace is how long a worker whose write failed waits for the error response
	// that may explain the failure.
	errorResponseGrace = 2 * time.Second
	writeBufferSize    = 64 << 10
)

// backoff returns the wait after the n-th consecutive failure: exponential, capped, ±10%.
func backoff(n int) time.Duration {
	d := backoffMin << min(n-1, 16)
	d = min(d, backoffMax)
	return d - d/10 + rand.N(d/5+1)
}

// sleep waits for d; it returns false if ctx ends first.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

type worker struct {
	// Immutable.
	c     *Client
	epoch time.Time // origin of the ring's clock

	// Owned by the worker goroutine.
	ring         *inflight
	replay       [][]byte // frames to write before taking new ones, oldest first
	nextID       uint32   // never 0: a status-10 response names 0 when nothing was delivered
	stopAttempts int      // connection attempts since Stop began or the gateway last settled frames
	failures     int      // failed dials and lost connections since frames were last delivered
	conns        int      // connections opened
	lastWrite    int64    // when the last frame was written, on the ring's clock
	bw           *bufio.Writer
}

// newWorker returns a worker; startFailed tells that Start could not open its connection.
func newWorker(c *Client, startFailed bool) *worker {
	w := &worker{
		c:      c,
		epoch:  time.Now(),
		nextID: 1,
		ring:   newInflight(c.set.inflight()),
		bw:     bufio.NewWriterSize(nil, writeBufferSize),
	}
	if startFailed {
		w.failures = 1
	}
	return w
}

func (w *worker) now() int64 { return int64(time.Since(w.epoch)) }

// run is the worker goroutine. It serves conn (nil: connect first), then reconnects until the
// queue is closed and everything it wrote has been settled.
func (w *worker) run(conn net.Conn) {
	defer w.c.workers.Done()
	for {
		if conn == nil {
			if conn = w.connect(); conn == nil {
				w.giveUp()
				return
			}
		}
		w.conns++
		if w.conns > 1 {
			w.c.stats.reconnects.Add(1)
		}
		if done := w.serve(conn); done {
			return
		}
		conn = nil
	}
}

// connect dials until it succeeds, pausing with backoff after failures. It returns nil when
// Shutdown aborts, or when Stop has begun and the worker has made stopDialAttempts connection
// attempts since the gateway last settled a frame, successful or not: a gateway that accepts
// connections and drops them must not keep Stop waiting.
func (w *worker) connect() net.Conn {
	c := w.c
	for {
		stopping := isClosed(c.stopping)
		if stopping {
			if w.stopAttempts == stopDialAttempts {
				return nil
			}
			w.stopAttempts++
		}
		if w.failures > 0 && !w.pause(backoff(w.failures), stopping) {
			return nil
		}
		conn, err := c.dial()
		if err == nil {
			return conn
		}
		w.failures++
		c.reportError(fmt.Errorf("apns: connecting to %s: %w", c.addr, err))
	}
}

// pause waits for d, less once Stop has begun; it returns false if Shutdown aborts.
func (w *worker) pause(d time.Duration, stopping bool) bool {
	c := w.c
	var stop <-chan struct{}
	if stopping {
		d = min(d, time.Second)
	} else {
		stop = c.stopping // Stop cuts the pause short
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-stop:
	case <-c.abortCtx.Done():
		return false
	}
	return true
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// giveUp reports every frame the worker still holds as unsent; it runs when the worker exits
// without a connection. Frames in the ring were written and count as delivered.
func (w *worker) giveUp() {
	w.c.stats.delivered.Add(uint64(w.ring.expire(1<<63 - 1)))
	for _, f := range w.replay {
		w.c.report(f, StatusUnknown)
	}
	w.replay = nil
}

// readResult is what the reader goroutine saw: an error response, or why there was none.
type readResult struct {
	status Status
	id     uint32
	err    error // nil for an error response
}

// readErrorResponse waits for the one message the gateway may send, the 6-byte error
// response, and delivers what it read to results (capacity 1).
func readErrorResponse(conn io.Reader, results chan<- readResult) {
	var b [6]byte
	_, err := io.ReadFull(conn, b[:])
	switch {
	case err != nil:
		results <- readResult{err: err}
	case b[0] != 8:
		results <- readResult{err: fmt.Errorf("%w: first byte %#x", ErrGarbage, b[0])}
	default:
		results <- readResult{status: Status(b[1]), id: binary.BigEndian.Uint32(b[2:])}
	}
}

// deadlineWriter gives every write to the connection its own deadline. The buffered writer
// above it writes rarely, so this costs little.
type deadlineWriter struct {
	conn    net.Conn
	timeout time.Duration
}

func (d deadlineWriter) Write(p []byte) (int, error) {
	if err := d.conn.SetWriteDeadline(time.Now().Add(d.timeout)); err != nil {
		return 0, err
	}
	return d.conn.Write(p)
}

// These errors end a connection on the worker's initiative.
var (
	errDrained = errors.New("apns: queue drained")
	errIdle    = errors.New("apns: connection idle")
	errAborted = errors.New("apns: shutdown aborted")
)

// serve runs one connection until it ends and settles its ring. It returns true when the
// worker is done: the queue is closed and drained, or Shutdown aborted.
func (w *worker) serve(conn net.Conn) (done bool) {
	results := make(chan readResult, 1)
	go readErrorResponse(conn, results)
	// Shutdown's deadline interrupts a write blocked by a server that stopped reading.
	defer context.AfterFunc(w.c.abortCtx, func() { conn.SetDeadline(time.Now()) })()
	w.bw.Reset(deadlineWriter{conn, w.c.set.write()})
	res, end := w.loop(results)
	w.bw.Reset(nil)

	local := end == errDrained || end == errIdle || end == errAborted
	received := end == nil
	if !received && !local { // a write failed: the server may have said why before closing
		t := time.NewTimer(errorResponseGrace)
		select {
		case res = <-results:
			received = true
		case <-t.C:
		case <-w.c.abortCtx.Done():
		}
		t.Stop()
	}
	conn.Close()
	if !received {
		res = <-results // the close ends the reader, if nothing else did
		if res.err != nil {
			res.err = end
		}
	}
	if !local || res.err == nil {
		w.settle(res)
	}
	if !local && res.err != nil {
		w.failures++ // reconnect after a pause: a server that keeps dropping is not hammered
	}
	if end == errAborted {
		w.giveUp()
	}
	return end == errDrained || end == errAborted
}

// loop writes frames until the connection ends. It returns the reader's result, or the error
// that ended the connection on this side.
func (w *worker) loop(results <-chan readResult) (readResult, error) {
	c := w.c
	queue := c.queue
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	w.lastWrite = w.now()
	for {
		// Replayed frames go first.
		if len(w.replay) > 0 && !w.ring.full() {
			f := w.replay[0]
			w.replay[0] = nil
			w.replay = w.replay[1:]
			c.stats.replayed.Add(1)
			if err := w.write(f); err != nil {
				return readResult{}, err
			}
			continue
		}
		in := w.source(queue)
		select {
		case res := <-results:
			return res, nil
		case f, ok := <-in:
			if err := w.take(f, ok, &queue); err != nil {
				return readResult{}, err
			}
			continue
		default:
		}

		// Nothing to write right now.
		if err := w.bw.Flush(); err != nil {
			return readResult{}, err
		}
		now := w.now()
		if k := w.ring.expire(now - int64(c.set.assumeSent())); k > 0 {
			c.stats.delivered.Add(uint64(k))
			w.progressed()
		}
		if queue == nil && len(w.replay) == 0 && w.ring.Len() == 0 {
			return readResult{}, errDrained
		}
		var wait time.Duration
		if oldest, ok := w.ring.oldest(); ok {
			wait = time.Duration(oldest + int64(c.set.assumeSent()) - now)
		} else {
			wait = time.Duration(w.lastWrite + int64(c.set.idle()) - now)
			if wait <= 0 {
				return readResult{}, errIdle
			}
		}
		timer.Reset(max(wait, time.Millisecond))
		in = w.source(queue)
		select {
		case res := <-results:
			return res, nil
		case f, ok := <-in:
			if err := w.take(f, ok, &queue); err != nil {
				return readResult{}, err
			}
		case <-timer.C:
		case <-c.abortCtx.Done():
			return readResult{}, errAborted
		}
	}
}

// source returns queue when the worker may take a new frame from it, else nil: replayed
// frames go first, and a full ring takes nothing until its oldest frames age out.
func (w *worker) source(queue chan []byte) chan []byte {
	if w.ring.full() || len(w.replay) > 0 {
		return nil
	}
	return queue
}

// progressed notes that the gateway settled frames: connection trouble before it is not
// held against the next attempts.
func (w *worker) progressed() {
	w.failures, w.stopAttempts = 0, 0
}

// take writes a frame received from the queue; ok false means the queue was closed, and
// *queue is set to nil so that the loop stops reading it.
func (w *worker) take(frame []byte, ok bool, queue *chan []byte) error {
	if !ok {
		*queue = nil
		return nil
	}
	return w.write(frame)
}

// write gives the frame the next identifier, puts it in the ring and buffers it.
func (w *worker) write(frame []byte) error {
	w.lastWrite = w.now()
	setFrameID(frame, w.nextID)
	if w.nextID++; w.nextID == 0 {
		w.nextID = 1
	}
	w.ring.push(frame, w.lastWrite)
	w.c.stats.written.Add(1)
	_, err := w.bw.Write(frame)
	return err
}

// settle empties the ring after a connection ended, according to how it ended. It is the one
// place that decides what was delivered, what was rejected and what is written again.
func (w *worker) settle(res readResult) {
	c := w.c
	if w.ring.Len() == 0 && res.err != nil {
		return
	}
	var delivered int
	var again [][]byte
	switch i := w.ring.find(res.id); {
	case res.err != nil: // lost without a word: the gateway may have any of them
		c.stats.drops.Add(1)
		c.reportError(fmt.Errorf("apns: connection to %s lost with %d frames in flight: %w", c.addr, w.ring.Len(), res.err))
		again = w.ring.drain(0)
		c.stats.duplicates.Add(uint64(len(again)))
	case i < 0 && res.status == StatusShutdown: // nothing in flight was delivered
		again = w.ring.drain(0)
	case i < 0:
		c.stats.unknownIDs.Add(1)
		c.reportError(&ResponseError{Status: res.status, ID: res.id})
		again = w.ring.drain(0)
	case res.status == StatusShutdown: // id is the last frame delivered
		delivered = i + 1
		again = w.ring.drain(delivered)
		w.progressed()
	default:
		delivered = i
		again = w.ring.drain(delivered)
		c.report(again[0], res.status)
		again = again[1:]
		w.progressed()
	}
	c.stats.delivered.Add(uint64(delivered))
	w.replay = append(again, w.replay...)
}
