package apns

// This file owns how a Client tells its user what happened: the reports of notifications
// that will not be delivered, the error handler's events, logging, and the dispatcher, the
// goroutine that runs the callbacks one at a time.

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"log/slog"
	"sync"
)

// reportRejected hands a notification the gateway rejected with status (any status, 255
// included: the gateway read it and said no) to the callback. It keeps a copy of frame.
func (c *Client) reportRejected(frame []byte, status Status) {
	c.stats.reject(uint8(status))
	if c.logging() {
		tok := frame[frameHeader+itemHeader:][:TokenSize]
		c.log(slog.LevelInfo, "apns: notification rejected", slog.Any("status", status),
			slog.Uint64("id", uint64(frameID(frame))), slog.String("token", abbrev(hex.EncodeToString(tok[:4]))))
	}
	c.push(event{frame: bytes.Clone(frame), status: status})
}

// reportUnsent hands the callback, with StatusUnknown, a notification the client gave up on
// before the gateway took it (counted in Stats.Unsent). It keeps a copy of frame.
func (c *Client) reportUnsent(frame []byte) {
	c.stats.unsent.Add(1)
	c.push(event{frame: bytes.Clone(frame), status: StatusUnknown})
}

// reasonUnconfirmed is the Rejection.Reason of a notification reported with
// StatusUnknown that the gateway may have delivered (counted in Stats.Unconfirmed).
const reasonUnconfirmed = "unknown (possibly delivered)"

// reportUnconfirmed hands the callback, with StatusUnknown, a notification the client gave up
// on although the gateway may have delivered it: it was written on a connection lost without
// an answer. It keeps a copy of frame.
func (c *Client) reportUnconfirmed(frame []byte) {
	c.stats.unconfirmed.Add(1)
	c.push(event{frame: bytes.Clone(frame), status: StatusUnknown, unconfirmed: true})
}

// reportRejection hands a notification of the HTTP/2 API that will not be delivered to the
// callbacks. The caller has counted it.
func (c *Client) reportRejection(r *Rejection) {
	c.push(event{rej: r})
}

// push queues an event for the dispatcher.
func (c *Client) push(e event) { c.events.push(e) }

// log logs an event when the client has a logger. Callers whose attributes cost something to
// build check logging first.
func (c *Client) log(level slog.Level, msg string, attrs ...slog.Attr) {
	if l := c.set.logger; l != nil {
		l.LogAttrs(context.Background(), level, msg, attrs...)
	}
}

// logging reports whether the client has a logger.
func (c *Client) logging() bool { return c.set.logger != nil }

// abbrev shortens a hex device token for logs to its first 8 digits.
func abbrev(hexToken string) string {
	return hexToken[:min(8, len(hexToken))] + "…"
}

// connectFailed logs and reports a failed connection attempt, the failures-th in a row.
func (c *Client) connectFailed(failures int, err error) {
	c.log(slog.LevelWarn, "apns: connection attempt failed", slog.String("addr", c.addr),
		slog.Int("failures", failures), slog.Any("err", err))
	c.reportError(fmt.Errorf("apns: connecting to %s: %w", c.addr, err))
}

// reportError hands an event that concerns no single notification to the error handler.
func (c *Client) reportError(err error) {
	if c.set.errorHandler == nil {
		return
	}
	c.push(event{err: err})
}

// run runs the callbacks for one event.
func (c *Client) run(e event) {
	if e.err != nil {
		c.set.errorHandler(e.err)
		return
	}
	c.mu.Lock()
	cb, rejectCB := c.cb, c.rejectCB
	c.mu.Unlock()
	if cb == nil && rejectCB == nil {
		return
	}
	r := e.rej
	if r == nil {
		r = &Rejection{Message: messageOf(e.frame), Code: uint8(e.status), Reason: e.status.String()}
		if e.unconfirmed {
			r.Reason = reasonUnconfirmed
		}
	}
	if cb != nil {
		cb(r.Message, r.Code)
	}
	if rejectCB != nil {
		rejectCB(r)
	}
}

// addBadToken hands a token that APNs answered with 410 to the feedback clients.
func (c *Client) addBadToken(t BadToken) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, fc := range c.feedbacks {
		fc.add([]BadToken{t})
	}
}

// event is one report waiting for the dispatcher: a binary frame and its status, an HTTP/2
// rejection, or an error.
type event struct {
	frame       []byte
	status      Status
	unconfirmed bool // binary: given up on, possibly delivered
	rej         *Rejection
	err         error
}

// dispatcher runs callbacks one at a time, in the order they were pushed, on a goroutine of
// its own that runs only while events wait: it starts with the first event pushed and exits
// once none is left, so that a client that is not sending (never started, or whose Start
// failed) keeps no goroutine. Its queue is unbounded so that a slow callback never stalls a
// worker; it holds at most one entry per notification.
type dispatcher struct {
	c    *Client
	done chan struct{} // closed once close was called and every event pushed before it has run

	mu      sync.Mutex
	queue   []event
	running bool // a goroutine is running the queue
	closed  bool
}

func newDispatcher(c *Client) *dispatcher {
	return &dispatcher{c: c, done: make(chan struct{})}
}

// push queues e and starts the goroutine when none runs. An event pushed after the dispatcher
// is done (none is: Stop closes it last) is dropped.
func (d *dispatcher) push(e event) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed && !d.running {
		return
	}
	d.queue = append(d.queue, e)
	if !d.running {
		d.running = true
		go d.run()
	}
}

// close makes done close once every event pushed so far has run.
func (d *dispatcher) close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return
	}
	d.closed = true
	if !d.running {
		close(d.done)
	}
}

func (d *dispatcher) run() {
	for {
		d.mu.Lock()
		batch := d.queue
		d.queue = nil
		if len(batch) == 0 {
			d.running = false
			if d.closed {
				close(d.done)
			}
			d.mu.Unlock()
			return
		}
		d.mu.Unlock()
		for _, e := range batch {
			d.c.run(e)
		}
	}
}
