package apns

// This file owns the in-flight ring: the frames a worker holds, those written on the current
// connection and not yet assumed delivered, followed by those waiting to be written again. It
// is a plain data structure; one worker goroutine owns each ring.

// inflight is a FIFO of frames in write order. The frame bytes live in one byte arena, each
// frame contiguous, the arena used circularly; a small entry per frame records where it is and
// when it was written. Holding a frame costs its bytes plus an entry's 16, and no heap object.
//
// The first sent entries were written on the current connection. Because a worker gives its
// frames consecutive identifiers, their identifiers are consecutive too (modulo 2^32, skipping
// 0, which a worker never gives), which makes find O(1) and wrap-around safe. The entries after them are pending: written on an
// earlier connection and waiting to be written again, oldest first.
//
// The ring is bounded by the bytes of the frames written on the connection: full reports true
// once maxBytes is reached, and the worker then stops writing until the oldest frames age out.
type inflight struct {
	data      []byte  // the arena
	ents      []entry // circular; len(ents) is a power of two
	head      int     // index of the oldest entry
	n         int     // number of entries
	sent      int     // the first sent entries were written on the current connection
	sentBytes int     // their total length
	maxBytes  int
	// The first ambiguous entries were written on a connection lost without an answer: the
	// gateway may have delivered them. sent <= ambiguous while any are ambiguous, as the
	// worker writes them first.
	ambiguous int
}

type entry struct {
	off, size int32
	at        int64 // when the frame was written, in nanoseconds on the worker's clock
}

const minArena = 64 << 10

func newInflight(maxBytes int) *inflight {
	return &inflight{ents: make([]entry, 64), maxBytes: maxBytes}
}

// Len returns the number of frames held, written or pending.
func (r *inflight) Len() int { return r.n }

// inFlight returns the number of frames written on the current connection.
func (r *inflight) inFlight() int { return r.sent }

// pending returns the number of frames waiting to be written again.
func (r *inflight) pending() int { return r.n - r.sent }

// full reports whether the frames written on the connection hold the byte budget.
func (r *inflight) full() bool { return r.sentBytes >= r.maxBytes }

func (r *inflight) entry(i int) *entry { return &r.ents[(r.head+i)&(len(r.ents)-1)] }

// frame returns the bytes of the i-th oldest frame, in the arena: valid until the ring changes.
func (r *inflight) frame(i int) []byte {
	e := r.entry(i)
	return r.data[e.off : e.off+e.size : e.off+e.size]
}

// add copies frame into the ring as the newest pending frame.
func (r *inflight) add(frame []byte) {
	if r.n == len(r.ents) {
		grown := make([]entry, 2*len(r.ents))
		k := copy(grown, r.ents[r.head:])
		copy(grown[k:], r.ents[:r.head])
		r.ents, r.head = grown, 0
	}
	off := r.alloc(len(frame))
	copy(r.data[off:], frame)
	*r.entry(r.n) = entry{off: int32(off), size: int32(len(frame))}
	r.n++
}

// alloc returns the arena offset for a new frame of size bytes, growing the arena if needed.
// Frames never wrap: when the end of the arena is too short, the frame goes to its start.
func (r *inflight) alloc(size int) int {
	if r.n == 0 {
		if size > len(r.data) {
			r.data = make([]byte, max(minArena, size))
		}
		return 0
	}
	first, last := r.entry(0), r.entry(r.n-1)
	end := int(last.off + last.size)
	if last.off >= first.off { // not wrapped: free at the end and before the first
		if end+size <= len(r.data) {
			return end
		}
		if size <= int(first.off) {
			return 0
		}
	} else if end+size <= int(first.off) { // wrapped: free between the last and the first
		return end
	}
	// Grow: copy the frames, oldest first, to the start of an arena twice as large, but no
	// larger than the ring can ever need. A worker holds at most maxBytes plus one frame
	// (written and pending together), and an arena two largest frames larger than what it
	// holds always has room for the next frame, whatever space its end wastes.
	need := r.bytes() + size + 2*maxFrameSize
	grown := make([]byte, max(need, min(max(2*len(r.data), minArena), r.maxBytes+3*maxFrameSize)))
	at := 0
	for i := range r.n {
		e := r.entry(i)
		copy(grown[at:], r.data[e.off:e.off+e.size])
		e.off = int32(at)
		at += int(e.size)
	}
	r.data = grown
	return at
}

// bytes returns the total length of the frames held.
func (r *inflight) bytes() int {
	total := 0
	for i := range r.n {
		total += int(r.entry(i).size)
	}
	return total
}

// send marks the oldest pending frame written at time at with identifier id, and returns it.
func (r *inflight) send(id uint32, at int64) []byte {
	e := r.entry(r.sent)
	e.at = at
	r.sent++
	r.sentBytes += int(e.size)
	f := r.frame(r.sent - 1)
	setFrameID(f, id)
	return f
}

// oldest returns the write time of the oldest frame written on the connection; ok is false
// when there is none.
func (r *inflight) oldest() (at int64, ok bool) {
	if r.sent == 0 {
		return 0, false
	}
	return r.entry(0).at, true
}

// expire drops the written frames written at or before deadline and returns how many.
func (r *inflight) expire(deadline int64) int {
	k := 0
	for r.sent > 0 && r.entry(0).at <= deadline {
		r.drop(1)
		k++
	}
	return k
}

// drop removes the k oldest frames.
func (r *inflight) drop(k int) {
	r.ambiguous = max(r.ambiguous-k, 0)
	for ; k > 0; k-- {
		e := r.entry(0)
		if r.sent > 0 {
			r.sent--
			r.sentBytes -= int(e.size)
		}
		*e = entry{}
		r.head = (r.head + 1) & (len(r.ents) - 1)
		r.n--
	}
}

// find returns the position of the written frame with identifier id, or -1.
func (r *inflight) find(id uint32) int {
	if r.sent == 0 {
		return -1
	}
	first := frameID(r.frame(0))
	d := id - first // uint32 arithmetic: wrap-around safe
	if id < first {
		d-- // the identifiers wrapped, skipping 0
	}
	// Compare as uint32 before converting: an identifier older than the first frame (or 0,
	// or a bogus one) gives a d near 2^32, which int makes negative where it has 32 bits.
	if d >= uint32(r.sent) {
		return -1
	}
	i := int(d)
	if frameID(r.frame(i)) != id {
		return -1
	}
	return i
}

// unsend makes every frame held pending: the connection ended and they are to be written
// again, oldest first.
func (r *inflight) unsend() {
	r.sent, r.sentBytes = 0, 0
}

// lose makes every frame held pending after a connection lost without an answer: the frames
// written on it become ambiguous.
func (r *inflight) lose() {
	r.ambiguous = max(r.ambiguous, r.sent)
	r.unsend()
}

// unsendLast makes pending the newest written frames that hold the last n bytes written, in
// whole or in part: bytes that never left the write buffer.
func (r *inflight) unsendLast(n int) {
	for n > 0 && r.sent > 0 {
		size := int(r.entry(r.sent - 1).size)
		r.sent--
		r.sentBytes -= size
		n -= size
	}
}

// shrink releases the arena of an empty ring.
func (r *inflight) shrink() {
	if r.n == 0 {
		r.data = nil
	}
}
