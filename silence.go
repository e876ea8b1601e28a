package apns

// This file owns the silence detector of the HTTP/2 connections (issue 15): a connection
// that has requests in flight and has read nothing for a few seconds is probed with a PING,
// and closed when the probe gets no answer either, so that its requests go to another
// connection within seconds instead of waiting for net/http's idle health check (a minute
// without frames, then its ping timeout).
//
// net/http's ClientConn has no Ping method, and its health check (HTTP2Config.SendPingTimeout)
// runs on every connection, idle or busy, so it cannot be made short for busy connections
// only. The probe is therefore written by batchConn (batchconn.go), which carries the
// connection's bytes: a PING frame (RFC 9113 §6.7) inserted between two of net/http's frames,
// never inside one or inside a header block. Its ACK is read by net/http, which ignores an
// ACK it did not ask for; any byte read after the probe counts as the answer. The detector
// only needs to know that bytes were read: batchConn counts its reads.

import (
	"log/slog"
	"net/http"
	"time"
)

const (
	// silenceAfter is how long a connection with requests in flight may read nothing before
	// it is probed. APNs answers within tens of milliseconds; a connection carrying requests
	// reads an answer, a window update or a PING long before this.
	silenceAfter = 3 * time.Second
	// silenceTimeout is how long the probe's answer may take before the connection is
	// closed as silent.
	silenceTimeout = 2 * time.Second
	// silenceTick is how often the detector looks at the connections.
	silenceTick = 250 * time.Millisecond
)

// h2Watch is what the detector knows of one connection; its fields belong to the detector's
// goroutine, apart from cc and bc.
type h2Watch struct {
	cc       *http.ClientConn
	bc       *batchConn
	reads    uint64    // bc's read count at the last look
	lastRead time.Time // when bc's reads were last seen to grow (at first: when it opened)
	heard    time.Time // lastRead, or when the connection last turned busy if later
	busy     bool      // requests were in flight at the last look
	probed   time.Time // when the unanswered probe was sent; zero when none is
}

// watch adds a new connection to those the detector looks at. bc is nil for a connection
// through a proxy, whose TLS to the gateway net/http does itself: that one is not watched.
func (h *h2Transport) watch(cc *http.ClientConn, bc *batchConn) {
	if bc == nil {
		return
	}
	now := time.Now()
	h.watchMu.Lock()
	h.watched = append(h.watched, &h2Watch{cc: cc, bc: bc, reads: bc.reads.Load(), lastRead: now, heard: now})
	h.watchMu.Unlock()
}

// detectSilence is the silence detector: until quit is closed it looks at every connection
// each silenceTick and probes the ones that have requests in flight and have read nothing for
// the silence time (since the work began). A probed connection takes no new request until it
// answers; one that does not answer within the timeout is closed, which ends its requests
// with an error: each is retried on another connection and counted as a possible duplicate
// (deliver). What silences one connection (a NAT, a load balancer) has often silenced the
// others too, idle ones included, where the retries would go: when one is closed, every
// other that has read nothing for the silence time is probed too, busy or idle.
func (h *h2Transport) detectSilence(quit <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	after, timeout := h.silenceAfter, h.silenceTimeout
	t := time.NewTicker(min(silenceTick, after/4, timeout/4))
	defer t.Stop()
	for {
		select {
		case <-quit:
			return
		case <-t.C:
		}
		now := time.Now()
		var probe, dead []*h2Watch
		cleared := false
		h.watchMu.Lock()
		keep := h.watched[:0]
		for _, w := range h.watched {
			if w.bc.closed() {
				continue
			}
			if r := w.bc.reads.Load(); r != w.reads {
				if !w.probed.IsZero() {
					w.bc.suspect.Store(false) // answered: takes requests again
					cleared = true
				}
				w.reads, w.lastRead, w.heard, w.probed = r, now, now, time.Time{}
			}
			busy := w.cc.InFlight() > 0
			if busy && !w.busy { // silence counts from when the work began
				w.heard = now
			}
			w.busy = busy
			switch {
			case w.probed.IsZero() && busy && now.Sub(w.heard) >= after:
				w.probed = now
				w.bc.suspect.Store(true) // no new request until it answers
				probe = append(probe, w)
			case !w.probed.IsZero() && now.Sub(w.probed) >= timeout:
				dead = append(dead, w) // no longer watched: closed once
				continue
			}
			keep = append(keep, w)
		}
		if len(dead) > 0 {
			for _, w := range keep {
				if w.probed.IsZero() && now.Sub(w.lastRead) >= after {
					w.probed = now
					w.bc.suspect.Store(true)
					probe = append(probe, w)
				}
			}
		}
		clear(h.watched[len(keep):])
		h.watched = keep
		h.watchMu.Unlock()

		if cleared {
			h.signal() // streams may be free again
		}
		for _, w := range probe {
			w.bc.probe()
			h.c.log(slog.LevelDebug, "apns: connection silent, probing with a PING", slog.String("addr", h.addr),
				slog.Duration("silent", now.Sub(w.lastRead)), slog.Int("in_flight", w.cc.InFlight()))
		}
		for _, w := range dead {
			n := w.cc.InFlight()
			w.bc.abandon()
			h.c.stats.silentConns.Add(1)
			h.c.log(slog.LevelWarn, "apns: connection closed as silent: nothing read, no answer to a PING",
				slog.String("addr", h.addr), slog.Duration("silent", now.Sub(w.lastRead)), slog.Int("in_flight", n))
		}
	}
}

// suspectLocked reports whether k's connection is probed as silent and takes no new request
// until it answers: the requests of another silent connection must not go there.
func (k *h2Conn) suspectLocked() bool { return k.bc != nil && k.bc.suspect.Load() }

// startSilenceDetector starts the detector; stopSilenceDetector stops it and waits for it.
func (h *h2Transport) startSilenceDetector() {
	if h.silenceAfter <= 0 {
		h.silenceAfter = silenceAfter
	}
	if h.silenceTimeout <= 0 {
		h.silenceTimeout = silenceTimeout
	}
	h.silenceQuit, h.silenceDone = make(chan struct{}), make(chan struct{})
	go h.detectSilence(h.silenceQuit, h.silenceDone)
}

func (h *h2Transport) stopSilenceDetector() {
	if h.silenceQuit != nil {
		close(h.silenceQuit)
		<-h.silenceDone
		h.silenceQuit = nil
	}
	h.watchMu.Lock()
	h.watched = nil
	h.watchMu.Unlock()
}

// The HTTP/2 frame layout batchConn follows to find the places where a PING may go.
const (
	clientPrefaceLen   = 24 // "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
	frameHeaderLen     = 9
	frameHeaders       = 0x1
	framePushPromise   = 0x5
	frameContinuation  = 0x9
	flagEndHeaders     = 0x4
	pingFrameType      = 0x6
	pingPayloadLen     = 8
	pingProbeFrameSize = frameHeaderLen + pingPayloadLen
)

// pingProbe is the PING frame of the probe: stream 0, no flags, eight bytes of opaque data
// that net/http's own PINGs (random data) do not use in practice.
var pingProbe = [pingProbeFrameSize]byte{0, 0, pingPayloadLen, pingFrameType, 0, 0, 0, 0, 0, 'a', 'p', 'n', 's', '-', 'g', 'o', '?'}

// track follows the frames in the bytes p that net/http wrote, so that the connection knows
// whether it stands between two frames. The caller holds c.mu.
func (c *batchConn) track(p []byte) {
	for len(p) > 0 {
		switch {
		case c.preface > 0:
			n := min(c.preface, len(p))
			c.preface -= n
			p = p[n:]
		case c.left > 0:
			n := min(c.left, len(p))
			c.left -= n
			p = p[n:]
		default:
			n := copy(c.hdr[c.hn:], p)
			c.hn += n
			p = p[n:]
			if c.hn < frameHeaderLen {
				return
			}
			c.hn, c.framed = 0, true
			c.left = int(c.hdr[0])<<16 | int(c.hdr[1])<<8 | int(c.hdr[2])
			switch c.hdr[3] {
			case frameHeaders, framePushPromise, frameContinuation:
				// Until END_HEADERS, only CONTINUATION frames may follow.
				c.inBlock = c.hdr[4]&flagEndHeaders == 0
			}
		}
	}
}

// between reports whether the bytes written so far end with a whole frame, outside a header
// block and past the preface's SETTINGS: where a PING may go. The caller holds c.mu.
func (c *batchConn) between() bool {
	return c.framed && c.hn == 0 && c.left == 0 && !c.inBlock
}

// probe has a PING written at the next place between two frames: now, or after the frame
// being written. The caller looks for its answer by the read count.
func (c *batchConn) probe() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pingDue = true
	c.sendDueLocked()
}

// sendDueLocked appends the due PING when the connection stands between two frames.
func (c *batchConn) sendDueLocked() {
	if !c.pingDue || c.err != nil || !c.between() {
		return
	}
	c.pingDue = false
	if len(c.buf) == 0 {
		c.ready.Signal()
	}
	c.buf = append(c.buf, pingProbe[:]...)
}

// Read reads from the TLS connection and counts the reads that returned bytes.
func (c *batchConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.reads.Add(1)
	}
	return n, err
}

// closed reports whether the connection was closed or failed.
func (c *batchConn) closed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err != nil
}

// abandon closes the connection's socket at once, without TLS's close_notify, which a silent
// peer would not read and whose write could wait for a full send buffer. net/http's read
// fails, which ends the connection and its requests; its Close comes later, from the pool.
func (c *batchConn) abandon() {
	c.Conn.NetConn().Close()
}
