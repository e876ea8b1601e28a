package apns

// This file owns the in-flight ring: the frames written on one connection that are not yet
// assumed delivered. It is a plain data structure; one worker goroutine owns each ring.

// inflight is a FIFO ring of written frames in write order. Because a worker gives its frames
// consecutive identifiers and pushes every frame it writes, the identifiers in the ring are
// consecutive too (modulo 2^32), which makes find O(1) and wrap-around safe.
//
// The ring is bounded by the bytes of the frames it holds: full reports true once maxBytes is
// reached, and the worker then stops taking new notifications until the oldest frames age out.
type inflight struct {
	buf      []inflightEntry // circular; len(buf) is a power of two
	head     int             // index of the oldest entry
	n        int             // number of entries
	bytes    int             // total length of the frames held
	maxBytes int
}

type inflightEntry struct {
	frame []byte
	at    int64 // when the frame was written, in nanoseconds on the worker's clock
}

func newInflight(maxBytes int) *inflight {
	return &inflight{buf: make([]inflightEntry, 64), maxBytes: maxBytes}
}

// Len returns the number of frames in flight.
func (r *inflight) Len() int { return r.n }

// full reports whether the ring holds its byte budget.
func (r *inflight) full() bool { return r.bytes >= r.maxBytes }

// push appends a frame written at time at.
func (r *inflight) push(frame []byte, at int64) {
	if r.n == len(r.buf) {
		grown := make([]inflightEntry, 2*len(r.buf))
		r.copyTo(grown)
		r.buf, r.head = grown, 0
	}
	r.buf[(r.head+r.n)&(len(r.buf)-1)] = inflightEntry{frame, at}
	r.n++
	r.bytes += len(frame)
}

// copyTo copies the entries, oldest first, to dst.
func (r *inflight) copyTo(dst []inflightEntry) {
	k := copy(dst, r.buf[r.head:min(r.head+r.n, len(r.buf))])
	copy(dst[k:r.n], r.buf)
}

// at returns the i-th oldest entry.
func (r *inflight) at(i int) *inflightEntry {
	return &r.buf[(r.head+i)&(len(r.buf)-1)]
}

// oldest returns the write time of the oldest frame; ok is false when the ring is empty.
func (r *inflight) oldest() (at int64, ok bool) {
	if r.n == 0 {
		return 0, false
	}
	return r.at(0).at, true
}

// expire drops the frames written at or before deadline and returns how many it dropped.
func (r *inflight) expire(deadline int64) int {
	k := 0
	for r.n > 0 && r.at(0).at <= deadline {
		r.popFront()
		k++
	}
	return k
}

func (r *inflight) popFront() []byte {
	e := r.at(0)
	f := e.frame
	*e = inflightEntry{}
	r.head = (r.head + 1) & (len(r.buf) - 1)
	r.n--
	r.bytes -= len(f)
	return f
}

// find returns the position of the frame with identifier id, or -1.
func (r *inflight) find(id uint32) int {
	if r.n == 0 {
		return -1
	}
	i := int(id - frameID(r.at(0).frame)) // uint32 arithmetic: wrap-around safe
	if i < 0 || i >= r.n || frameID(r.at(i).frame) != id {
		return -1
	}
	return i
}

// drain empties the ring: it drops the first k frames (delivered) and returns the rest,
// oldest first.
func (r *inflight) drain(k int) [][]byte {
	for ; k > 0 && r.n > 0; k-- {
		r.popFront()
	}
	rest := make([][]byte, 0, r.n)
	for r.n > 0 {
		rest = append(rest, r.popFront())
	}
	return rest
}
