package apns

// This file owns one worker of the binary transport (binary.go): a goroutine that keeps a TLS
// connection to the gateway, writes frames from the transport's queue, keeps them in the in-flight ring, and reacts to the error
// response that a short-lived reader goroutine waits for.

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"time"
)

// Backoff between failed connection attempts of one worker.
const (
	backoffMin = 100 * time.Millisecond
	backoffMax = 30 * time.Second
	// Once Stop has begun, a worker counts towards stopDialAttempts failed dials and
	// connections that confirmed no frame, whatever their chunk; a connection that confirms a
	// frame starts the count again. While stopping, a chunked connection that confirmed
	// nothing is followed by a probe, a chunk of one frame and its sentinel, so a gateway that
	// takes two frames per connection keeps resetting the count.
	// Chunked writing after a connection lost without an answer (see serve): the first chunk,
	// the largest, the factor a chunk shrinks by after a connection that confirmed nothing
	// (it grows by an eighth after one that confirmed a whole chunk), and how long after the
	// last such loss the worker keeps writing in chunks.
	chunkFirst  = 1024
	chunkMax    = 1 << 16
	chunkShrink = 4
	chunkedFor  = 30 * time.Second
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
	t     *binaryTransport
	epoch time.Time // origin of the ring's clock
	// blocked is the time spent in writes to connections, which the ring's clock leaves out
	// (see now). Only the worker goroutine touches it, through deadlineWriter.
	blocked int64

	// Owned by the worker goroutine.
	queue        chan *frameBuf // the client's queue; nil once it is closed and drained
	ring         *inflight      // frames written on this connection, then those to write again
	nextID       uint32         // never 0: a status-10 response names 0 when nothing was delivered
	sentinel     uint32         // identifier of the sentinel written on this connection, or 0
	stopAttempts int            // connection attempts since Stop began or the gateway last settled frames
	failures     int            // failed dials and connections that confirmed nothing, since frames were last settled
	confirmed    int            // frames the gateway settled (delivered or rejected) on this connection
	chunk        int            // frames a connection carries before its sentinel when writing in chunks
	chunkLeft    int            // frames this connection may still write before its sentinel; -1: no limit
	resume       int            // while stopping and probing with a chunk of 1: the chunk to go on with once the probe confirms, or 0
	chunkedUntil int64          // write in chunks until then, on the ring's clock: a connection was lost silently
	conns        int            // connections opened
	lastWrite    int64          // when the last frame was written, on the ring's clock
	lastFlush    int64          // when the buffer was last flushed for want of frames
	bw           *bufio.Writer
	// short is how many bytes of the frame (or sentinel) whose write into bw failed never
	// reached bw: with bw.Buffered(), the bytes written on the connection that never left.
	short int
}

// newWorker returns a worker of t; startFailed tells that Start could not open its connection.
func newWorker(t *binaryTransport, startFailed bool) *worker {
	c := t.c
	w := &worker{
		c:      c,
		t:      t,
		queue:  t.queue,
		epoch:  time.Now(),
		nextID: 1,
		chunk:  chunkFirst,
		ring:   newInflight(c.set.inflight()),
		bw:     bufio.NewWriterSize(nil, writeBufferSize),
	}
	if startFailed {
		w.failures = 1
	}
	if c.set.firstID != 0 {
		w.nextID = c.set.firstID
	}
	return w
}

// now returns the ring's clock: the time since the worker began, less the time spent in
// writes to connections. A write blocks when the gateway stops reading; the frames written
// before it are then waiting unread, so their assume-sent time must not run: a rejection
// the gateway sends once it reads again still finds its frame in the ring. Frames buffered
// for a write are thus stamped, in effect, when that write completes.
func (w *worker) now() int64 { return int64(time.Since(w.epoch)) - w.blocked }

// run is the worker goroutine. It serves conn (nil: connect first), then reconnects until the
// queue is closed and everything it wrote has been settled.
func (w *worker) run(conn net.Conn) {
	defer w.t.workers.Done()
	for {
		stopping := false // the connection is an attempt made after Stop began
		if conn == nil {
			if conn, stopping = w.connect(); conn == nil {
				w.giveUp()
				return
			}
		}
		w.conns++
		if w.conns > 1 {
			w.c.stats.reconnects.Add(1)
		}
		if done := w.serve(conn, stopping); done {
			return
		}
		conn = nil
	}
}

// connect dials until it succeeds, pausing with backoff after failures. It returns nil when
// Shutdown aborts, or when Stop has begun and the worker has made stopDialAttempts attempts
// that confirmed nothing since Stop began or the gateway last settled a frame: a gateway that
// accepts connections and drops them must not keep Stop waiting. stopping tells that the
// connection is an attempt made after Stop began.
func (w *worker) connect() (net.Conn, bool) {
	c := w.c
	for {
		stopping := isClosed(c.stopping)
		if stopping && w.stopAttempts >= stopDialAttempts {
			return nil, false
		}
		if w.failures > 0 && !w.pause(backoff(w.failures), stopping) {
			return nil, false
		}
		stopping = isClosed(c.stopping) // Stop may have cut the pause short
		conn, err := w.t.dial()
		if err == nil {
			return conn, stopping
		}
		w.failures++
		if stopping {
			w.stopAttempts++
		}
		c.connectFailed(w.failures, err)
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

// giveUp reports every frame the worker still holds with StatusUnknown; it runs when the
// worker exits without a connection. Frames written on the last connection count as
// delivered. Frames written on a connection lost without an answer may have arrived: they are
// counted as unconfirmed, the others (never written, or discarded by the gateway after a
// rejection) as unsent.
func (w *worker) giveUp() {
	w.c.stats.delivered.Add(uint64(w.ring.expire(1<<63 - 1)))
	for w.ring.Len() > 0 {
		if w.ring.ambiguous > 0 {
			w.c.reportUnconfirmed(w.ring.frame(0))
		} else {
			w.c.reportUnsent(w.ring.frame(0))
		}
		w.ring.drop(1)
	}
}

// drained reports whether the worker is done: the queue is closed and empty and it holds no
// frame.
func (w *worker) drained() bool { return w.queue == nil && w.ring.Len() == 0 }

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

// deadlineWriter gives every write to the connection its own deadline, except once Shutdown's
// context has ended: then the deadline is now. The buffered writer above it writes rarely, so
// this costs little.
type deadlineWriter struct {
	abort   context.Context
	conn    net.Conn
	timeout time.Duration
	blocked *int64 // the worker's: time spent in conn.Write is added
}

func (d deadlineWriter) Write(p []byte) (int, error) {
	if err := d.conn.SetWriteDeadline(time.Now().Add(d.timeout)); err != nil {
		return 0, err
	}
	// Shutdown sets a past deadline when its context ends; a deadline set after that must
	// not undo it.
	if d.abort.Err() != nil {
		return 0, errAborted
	}
	start := time.Now()
	n, err := d.conn.Write(p)
	*d.blocked += int64(time.Since(start))
	return n, err
}

// These errors end a connection on the worker's initiative.
var (
	errDrained = errors.New("apns: queue drained")
	errIdle    = errors.New("apns: connection idle")
	errAborted = errors.New("apns: shutdown aborted")
	// errUnanswered ends a connection whose sentinel got no answer while everything written
	// before it aged out.
	errUnanswered = errors.New("apns: sentinel unanswered")
)

// serve runs one connection until it ends and settles its ring. It returns true when the
// worker is done: the queue is closed and drained, or Shutdown aborted.
func (w *worker) serve(conn net.Conn, stopping bool) (done bool) {
	results := make(chan readResult, 1)
	go readErrorResponse(conn, results)
	// Shutdown's deadline interrupts a write blocked by a server that stopped reading.
	defer context.AfterFunc(w.c.abortCtx, func() { conn.SetDeadline(time.Now()) })()
	w.bw.Reset(deadlineWriter{w.c.abortCtx, conn, w.c.set.write(), &w.blocked})
	// After a connection lost without an answer, the gateway may have delivered any frame
	// written on it. Writing them all again on one connection gets nowhere with a gateway
	// that drops every connection after fewer frames than that, so the worker writes in
	// chunks: each connection carries at most chunk frames, oldest first, then a sentinel,
	// whose answer confirms them all. The chunk shrinks after a connection that confirmed
	// nothing and grows after one that confirmed a whole chunk, like TCP's window, so it
	// settles below what the gateway takes per connection. Chunks go on for chunkedFor after
	// the last silent loss, so that the frames after the replay are not written in one
	// stream the next drop makes ambiguous again.
	w.sentinel, w.confirmed, w.chunkLeft, w.short = 0, 0, -1, 0
	chunked := w.ring.ambiguous > 0 || w.now() < w.chunkedUntil
	chunk := w.chunk
	if chunked {
		w.chunkLeft = chunk
	}
	w.c.stats.conns.Add(1)
	w.c.log(slog.LevelDebug, "apns: connected", slog.String("addr", w.c.addr), slog.Int("replay", w.ring.pending()))
	res, end := w.loop(results)
	received := end == nil // res holds the reader's result
	if w.c.abortCtx.Err() != nil && (end != nil || res.err != nil) {
		// Shutdown's deadline interrupted a blocked write, or the reader: what was written
		// counts as Shutdown's doc says (delivered), not as a lost connection's frames.
		end = errAborted
	}
	if end == errAborted {
		w.ring.unsendLast(w.unwritten()) // never written: giveUp reports them as unsent
	}
	w.bw.Reset(nil)

	local := end == errDrained || end == errIdle || end == errAborted || end == errUnanswered
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
	if tc, ok := conn.(*tls.Conn); ok && (end != errDrained && end != errIdle || w.c.abortCtx.Err() != nil) {
		// A write failed or was cut short, the gateway answered (and stopped reading), or it
		// left a sentinel unanswered, or Shutdown aborts: the gateway may not be reading, so
		// the close_notify alert that tls.Conn.Close writes could wait up to 5 s for room,
		// which Shutdown could not cut. Close under it; the alert is of no use here.
		tc.NetConn().Close()
	}
	conn.Close()
	w.c.stats.conns.Add(-1)
	if !received {
		res = <-results // the close ends the reader, if nothing else did
		if res.err != nil {
			res.err = end
		}
	}
	if !local || res.err == nil {
		w.settle(res)
	}
	if !local && w.confirmed == 0 {
		// However it ended (a drop, garbage, a write error, an error response naming nothing
		// in flight or an unknown identifier), a connection that confirmed no frame is a
		// failure: the next attempt waits with backoff, so a gateway that keeps ending
		// connections is not hammered.
		w.failures++
		if stopping {
			w.stopAttempts++
		}
	}
	switch {
	case !chunked || local:
	case w.confirmed == 0 && stopping && chunk > 1:
		// Stop counts this attempt: probe with one frame next, so that a gateway that takes
		// anything is not given up on, and go on with the shrunk chunk once it confirms.
		w.chunk, w.resume = 1, max(chunk/chunkShrink, 1)
	case w.confirmed == 0:
		w.chunk = max(chunk/chunkShrink, 1)
	case w.confirmed >= chunk && w.resume > 0:
		w.chunk, w.resume = w.resume, 0
	case w.confirmed >= chunk:
		w.chunk = min(chunk+max(chunk/8, 1), chunkMax)
	}
	if end == errIdle {
		w.c.log(slog.LevelDebug, "apns: idle connection closed", slog.String("addr", w.c.addr))
		w.ring.shrink()
	}
	if end == errAborted {
		w.giveUp()
	}
	return end == errAborted || w.drained()
}

const (
	// writeBatch bounds how many frames the worker writes between two looks at the reader.
	writeBatch = 256
	// flushDelay is the shortest time between two flushes of a worker that ran out of frames:
	// the first frame after a pause goes out at once, and under load frames go out in batches
	// rather than one TLS record and one system call per few frames.
	flushDelay = 200 * time.Microsecond
)

// loop writes frames until the connection ends. It returns the reader's result, or the error
// that ended the connection on this side.
func (w *worker) loop(results <-chan readResult) (readResult, error) {
	c := w.c
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	w.lastWrite = w.now()
	for {
		more, err := w.fill()
		if err != nil {
			return readResult{}, err
		}
		select {
		case res := <-results:
			return res, nil
		default:
		}
		if more {
			continue
		}

		// Nothing to write right now: flush, unless a flush went out less than flushDelay ago;
		// then more frames may come before the delay ends, and go out with these.
		now := w.now()
		flushIn := time.Duration(w.lastFlush + int64(flushDelay) - now)
		if w.bw.Buffered() > 0 && (flushIn <= 0 || w.queue == nil) {
			if err := w.bw.Flush(); err != nil {
				return readResult{}, err
			}
			w.lastFlush, flushIn = now, 0
		}
		if k := w.ring.expire(now - int64(c.set.assumeSent())); k > 0 {
			c.stats.delivered.Add(uint64(k))
			w.progressed(k)
		}
		if w.drained() {
			return readResult{}, errDrained
		}
		if w.sentinel != 0 && w.ring.inFlight() == 0 {
			// Everything before the sentinel aged out without an answer; nothing may be
			// written after a sentinel, so the next frames need a new connection.
			return readResult{}, errUnanswered
		}
		if w.sentinel == 0 && w.sentinelDue() {
			if err := w.writeSentinel(); err != nil {
				return readResult{}, err
			}
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
		if w.bw.Buffered() > 0 {
			wait = min(wait, flushIn)
		}
		timer.Reset(max(wait, 10*time.Microsecond))
		var in chan *frameBuf
		if !w.ring.full() && w.ring.pending() == 0 && w.chunkLeft != 0 && w.sentinel == 0 {
			in = w.queue
		}
		select {
		case res := <-results:
			return res, nil
		case f, ok := <-in:
			if err := w.take(f, ok); err != nil {
				return readResult{}, err
			}
		case <-timer.C:
		case <-c.abortCtx.Done():
			return readResult{}, errAborted
		}
	}
}

// fill writes up to writeBatch frames without waiting: frames to write again first, then
// frames from the queue, as long as the ring has room. more reports that it stopped at the
// batch limit.
func (w *worker) fill() (more bool, err error) {
	written, replayed := 0, 0
	defer func() {
		w.c.stats.written.Add(uint64(written))
		w.c.stats.replayed.Add(uint64(replayed))
	}()
	at := w.now()
	for written < writeBatch {
		if w.ring.full() || w.chunkLeft == 0 || w.sentinel != 0 {
			// Nothing may follow a sentinel: the gateway discards what follows the frame it
			// rejects, yet the sentinel's answer would settle it as delivered.
			return false, nil
		}
		if w.ring.pending() > 0 {
			replayed++
		} else {
			if w.queue == nil {
				return false, nil
			}
			select {
			case f, ok := <-w.queue:
				if !ok {
					w.queue = nil
					return false, nil
				}
				w.hold(f)
			default:
				return false, nil
			}
		}
		written++
		if err := w.writeNext(at); err != nil {
			return false, err
		}
	}
	return true, nil
}

// take writes a frame received from the queue; ok false means the queue was closed.
func (w *worker) take(f *frameBuf, ok bool) error {
	if !ok {
		w.queue = nil
		return nil
	}
	w.hold(f)
	w.c.stats.written.Add(1)
	return w.writeNext(w.now())
}

// hold copies a frame taken from the queue into the ring, as the next to write, and returns
// its buffer to the pool.
func (w *worker) hold(f *frameBuf) {
	w.ring.add(f.b)
	f.release()
}

// writeNext gives the oldest pending frame the next identifier and buffers it.
func (w *worker) writeNext(at int64) error {
	w.lastWrite = at
	if w.chunkLeft > 0 {
		w.chunkLeft--
	}
	f := w.ring.send(w.newID(), at)
	n, err := w.bw.Write(f)
	if err != nil {
		w.short = len(f) - n
	}
	return err
}

// unwritten returns how many bytes of the frames in flight never left for the connection
// when a write failed: those still in bw, including the head of a frame whose write stopped
// part way, plus the rest of that frame, which never reached bw. A sentinel is the last thing
// written on a connection: its bytes among them are not the ring's.
func (w *worker) unwritten() int {
	n := w.bw.Buffered() + w.short
	if w.sentinel != 0 {
		n = max(n-sentinelSize, 0)
	}
	return n
}

func (w *worker) newID() uint32 {
	id := w.nextID
	if w.nextID++; w.nextID == 0 {
		w.nextID = 1
	}
	return id
}

// sentinelDue reports whether the connection is to end with a sentinel now: when writing in
// chunks, once its chunk is written or the ring is full, or earlier once nothing more is to
// be written for now, but only when that settles something worth a new connection: frames
// replayed after a silent loss (which the gateway may hold already), or the last frames at
// Stop. Ending a chunk whenever the queue is momentarily empty would cost a TLS connection
// per notification under light traffic, the rapid reconnecting APNs treats as an attack.
// Otherwise the sentinel comes at Stop, once the queue is closed and every frame held is
// written.
func (w *worker) sentinelDue() bool {
	if w.chunkLeft >= 0 {
		idle := w.ring.pending() == 0 && len(w.queue) == 0 && (w.queue == nil || w.ring.ambiguous > 0)
		return w.ring.inFlight() > 0 && (w.chunkLeft == 0 || w.ring.full() || idle)
	}
	return w.queue == nil && w.ring.pending() == 0 && !w.c.set.noSentinel
}

// writeSentinel writes and flushes the sentinel: a frame with an identifier and nothing else,
// which a gateway rejects (status 2, missing device token) naming that identifier. As the
// gateway answers frames in order, the answer confirms every frame written before it, so Stop
// need not wait out the assume-sent timeout, and a replay after a lost connection knows what
// arrived. Nothing is written after it on the connection; without an answer the frames
// before it age out as usual.
func (w *worker) writeSentinel() error {
	w.sentinel = w.newID()
	var f [sentinelSize]byte
	f[0] = frameCommand
	binary.BigEndian.PutUint32(f[1:], itemHeader+4)
	f[frameHeader] = itemID
	binary.BigEndian.PutUint16(f[frameHeader+1:], 4)
	binary.BigEndian.PutUint32(f[frameHeader+itemHeader:], w.sentinel)
	if n, err := w.bw.Write(f[:]); err != nil {
		w.short = len(f) - n
		return err
	}
	return w.bw.Flush()
}

// sentinelSize is the length of a sentinel frame.
const sentinelSize = frameHeader + itemHeader + 4

// progressed notes that the gateway settled k frames on this connection (delivered, assumed
// delivered or rejected): connection trouble before it is not held against the next attempts.
func (w *worker) progressed(k int) {
	if k > 0 {
		w.confirmed += k
		w.failures, w.stopAttempts = 0, 0
	}
}

// settle sorts the frames written on a connection that ended, according to how it ended. It
// is the one place that decides what was delivered, what was rejected and what is written
// again: the frames it leaves in the ring are written again on the next connection, first.
func (w *worker) settle(res readResult) {
	c, r := w.c, w.ring
	if r.inFlight() == 0 && res.err != nil {
		return
	}
	switch i := r.find(res.id); {
	case res.err != nil: // lost without a word: the gateway may have any of them
		c.stats.drops.Add(1)
		c.log(slog.LevelWarn, "apns: connection lost", slog.String("addr", c.addr),
			slog.Int("in_flight", r.inFlight()), slog.Any("err", res.err))
		c.reportError(fmt.Errorf("apns: connection to %s lost with %d frames in flight: %w", c.addr, r.inFlight(), res.err))
		c.stats.duplicates.Add(uint64(r.inFlight()))
		r.lose()
		w.chunkedUntil = w.now() + int64(chunkedFor)
	case w.sentinel != 0 && res.id == w.sentinel: // the gateway took everything before it
		c.log(slog.LevelDebug, "apns: sentinel confirmed the frames in flight", slog.Int("frames", r.inFlight()))
		w.settled(r.inFlight())
	case i < 0 && res.status == StatusShutdown: // nothing in flight was delivered
		c.log(slog.LevelInfo, "apns: gateway shut the connection down", slog.Int("delivered", 0))
	case i < 0: // the gateway may have delivered any of them, as after a silent loss
		c.log(slog.LevelWarn, "apns: error response names no frame in flight",
			slog.Any("status", res.status), slog.Uint64("id", uint64(res.id)))
		c.stats.unknownIDs.Add(1)
		c.reportError(&ResponseError{Status: res.status, ID: res.id})
		c.stats.duplicates.Add(uint64(r.inFlight()))
		r.lose()
	case res.status == StatusShutdown: // id is the last frame delivered
		c.log(slog.LevelInfo, "apns: gateway shut the connection down", slog.Int("delivered", i+1))
		w.settled(i + 1)
	default: // id is the rejected frame: those before it were delivered
		w.settled(i)
		c.reportRejected(r.frame(0), res.status)
		r.drop(1)
		w.progressed(1)
	}
	r.unsend()
	if r.pending() > 0 {
		c.log(slog.LevelInfo, "apns: frames to write again", slog.Int("frames", r.pending()))
	}
}

// settled drops the k oldest frames as delivered: the gateway has settled them.
func (w *worker) settled(k int) {
	w.ring.drop(k)
	w.c.stats.delivered.Add(uint64(k))
	w.progressed(k)
}
