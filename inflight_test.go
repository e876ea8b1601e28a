package apns

import (
	"bytes"
	"math"
	"testing"
)

// frameOf returns a frame of size bytes (at least the identifier's room) filled with fill.
func frameOf(size int, fill byte) []byte {
	return bytes.Repeat([]byte{fill}, max(size, frameTail+frameHeader))
}

// sendAll adds frames and writes them with consecutive identifiers from id, at times 0, 10, ...
func sendAll(r *inflight, id uint32, frames ...[]byte) {
	for i, f := range frames {
		r.add(f)
		r.send(id+uint32(i), int64(i*10))
	}
}

func heldIDs(r *inflight) []uint32 {
	var out []uint32
	for i := range r.Len() {
		out = append(out, frameID(r.frame(i)))
	}
	return out
}

// The worker's identifiers wrap from 2^32-1 to 1, skipping 0; find still finds each frame.
func TestInflightFindsConsecutiveIDsAcrossWrapAround(t *testing.T) {
	r := newInflight(1 << 20)
	start := uint32(math.MaxUint32 - 100)
	w := &worker{nextID: start}
	var ids []uint32
	for i := range 300 { // grows past its initial 64 entries too
		r.add(frameOf(0, byte(i)))
		ids = append(ids, w.newID())
		r.send(ids[i], 0)
	}
	if ids[100] != math.MaxUint32 || ids[101] != 1 {
		t.Fatalf("identifiers around the wrap: %v", ids[99:103])
	}
	for _, i := range []int{0, 100, 101, 102, 299} {
		if got := r.find(ids[i]); got != i {
			t.Errorf("find(%d) = %d; want %d", ids[i], got, i)
		}
	}
	for _, id := range []uint32{ids[299] + 1, start - 1, 0} {
		if got := r.find(id); got != -1 {
			t.Errorf("find(%d), an id not in the ring, = %d; want -1", id, got)
		}
	}
}

// Frames whose bytes never left the write buffer become pending again, whole frames counted.
func TestInflightUnsendLastTakesBackUnflushedFrames(t *testing.T) {
	r := newInflight(1 << 20)
	sendAll(r, 1, frameOf(100, 0), frameOf(100, 0), frameOf(100, 0), frameOf(100, 0))
	r.unsendLast(150) // the last frame and half of the one before it were still buffered
	if r.inFlight() != 2 || r.pending() != 2 {
		t.Errorf("inFlight %d, pending %d; want 2, 2", r.inFlight(), r.pending())
	}
	r.unsendLast(0)
	if r.inFlight() != 2 {
		t.Errorf("unsendLast(0) changed the ring: inFlight %d", r.inFlight())
	}
	// More bytes than the frames written hold (the buffer also held a sentinel, which the
	// ring does not keep): every written frame becomes pending, and no more.
	r.unsendLast(1000)
	if r.inFlight() != 0 || r.pending() != 4 || r.Len() != 4 || r.full() {
		t.Errorf("after unsendLast beyond the written frames: inFlight %d, pending %d, held %d, full %v; want 0, 4, 4, false",
			r.inFlight(), r.pending(), r.Len(), r.full())
	}
}

func TestInflightExpireDropsOnlyOldFrames(t *testing.T) {
	r := newInflight(1 << 20)
	for i := range 10 {
		r.add(frameOf(0, 0))
		r.send(uint32(i), int64(i*10))
	}
	if got := r.expire(45); got != 5 {
		t.Errorf("expire(45) = %d; want 5", got)
	}
	if at, _ := r.oldest(); at != 50 {
		t.Errorf("oldest = %d; want 50", at)
	}
	if got := r.find(7); got != 2 {
		t.Errorf("find(7) after expiry = %d; want 2", got)
	}
}

// The arena keeps every frame's bytes intact while frames come and go, the arena wraps and
// grows.
func TestInflightKeepsFrameBytesAcrossWrapAndGrowth(t *testing.T) {
	for _, budget := range []int{1 << 30, 8 << 10} { // the arena's growth is capped by the budget
		testInflightBytes(t, newInflight(budget))
	}
}

func testInflightBytes(t *testing.T, r *inflight) {
	want := map[uint32][]byte{}
	id := uint32(1)
	for round := range 200 {
		for k := range 50 + round%37 { // sizes vary so frames meet the arena's end unevenly
			f := frameOf(100+(round*31+k*17)%2000, byte(id))
			r.add(f)
			want[id] = bytes.Clone(r.send(id, int64(id)))
			id++
		}
		if r.Len() > 400 { // keep a few hundred in flight: the arena wraps
			r.drop(r.Len() - 300)
		}
		for i := range r.Len() {
			got := r.frame(i)
			if !bytes.Equal(got, want[frameID(got)]) {
				t.Fatalf("round %d: frame %d (id %d) changed", round, i, frameID(got))
			}
		}
	}
	if len(r.data) > 8*r.bytes() {
		t.Errorf("arena of %d bytes for %d bytes of frames", len(r.data), r.bytes())
	}
}

func TestInflightUnsendKeepsOrderForTheNextConnection(t *testing.T) {
	r := newInflight(1 << 20)
	for i := range 100 {
		sendAll(r, uint32(i), frameOf(0, 0))
		if i < 60 {
			r.expire(1 << 40) // move the head so the entries wrap
		}
	}
	// ids 60..99 are held; 70 is rejected: 60..69 delivered, 71..99 written again.
	i := r.find(70)
	r.drop(i + 1)
	r.unsend()
	if r.inFlight() != 0 || r.pending() != 29 || r.full() {
		t.Fatalf("after unsend inFlight=%d pending=%d full=%v; want 0, 29, false", r.inFlight(), r.pending(), r.full())
	}
	if got := heldIDs(r); got[0] != 71 || got[28] != 99 {
		t.Errorf("held %v; want 71..99", got)
	}
	// Written again on a new connection, with new identifiers.
	for k := range 29 {
		r.send(uint32(1000+k), 0)
	}
	if got := r.find(1005); got != 5 || r.pending() != 0 {
		t.Errorf("find(1005) = %d, pending %d; want 5, 0", got, r.pending())
	}
}

func TestInflightIsFullAtItsByteBudget(t *testing.T) {
	r := newInflight(1000)
	for i := 0; !r.full(); i++ {
		if i > 10 {
			t.Fatal("ring never became full")
		}
		sendAll(r, uint32(i), frameOf(300, 0))
	}
	if r.Len() != 4 {
		t.Errorf("full after %d frames of 300 bytes; want 4", r.Len())
	}
	r.expire(0)
	if r.full() {
		t.Error("still full after expiry")
	}
	r.unsend() // pending frames do not count against the budget
	if r.full() {
		t.Error("full with nothing written")
	}
}

// The budget is reached, not only exceeded, when the written frames hold exactly its bytes.
func TestInflightIsFullWhenFramesExactlyFillTheBudget(t *testing.T) {
	r := newInflight(900)
	sendAll(r, 1, frameOf(300, 0), frameOf(300, 0))
	if r.full() {
		t.Fatal("full at 600 of 900 bytes")
	}
	sendAll(r, 3, frameOf(300, 0))
	if !r.full() {
		t.Error("not full with 900 of 900 bytes written")
	}
	r.unsendLast(1)
	if r.full() || r.inFlight() != 2 {
		t.Errorf("after the last frame was taken back: full %v, inFlight %d; want false, 2", r.full(), r.inFlight())
	}
}

// A frame that exactly fits the gap between the newest and the oldest frame of a wrapped
// arena goes there: the arena does not grow.
func TestInflightFillsAnExactGapWithoutGrowing(t *testing.T) {
	r := newInflight(1 << 30)
	for i := range minArena / 1024 { // fills the first arena exactly
		r.add(frameOf(1024, byte(i)))
	}
	if len(r.data) != minArena {
		t.Fatalf("arena of %d bytes for %d bytes of frames; want %d", len(r.data), r.bytes(), minArena)
	}
	r.drop(2)                  // a gap of 2048 bytes at the start
	r.add(frameOf(1024, 0xa1)) // wraps to offset 0
	r.add(frameOf(1024, 0xa2)) // exactly fills what is left before the oldest frame
	if len(r.data) != minArena {
		t.Errorf("arena grew to %d bytes although the frame fit exactly", len(r.data))
	}
	if f := r.frame(r.Len() - 1); f[0] != 0xa2 || !bytes.Equal(r.frame(r.Len()-2), frameOf(1024, 0xa1)) {
		t.Error("the frames added after the wrap changed")
	}
}

// The arena grows geometrically, so that adding frames costs amortised O(1) copying: a few
// growths for megabytes of frames, not one per few frames.
func TestInflightArenaGrowsGeometrically(t *testing.T) {
	r := newInflight(1 << 30)
	growths, size := 0, 0
	for i := range 1000 { // 2 MB held at once
		r.add(frameOf(2000, byte(i)))
		if len(r.data) != size {
			growths, size = growths+1, len(r.data)
		}
	}
	if growths > 12 {
		t.Errorf("the arena grew %d times for %d bytes of frames; want a doubling, at most 12", growths, r.bytes())
	}
}

// BenchmarkInflight reports what a frame in flight costs: its own bytes plus the ring's
// overhead, at steady state with a full ring of 100,000 frames of a typical 107 bytes.
func BenchmarkInflight(b *testing.B) {
	const inFlight = 100000
	f := frameOf(107, 1)
	r := newInflight(inFlight * len(f))
	b.ReportAllocs()
	id := uint32(1)
	for b.Loop() {
		r.add(f)
		r.send(id, int64(id))
		id++
		if r.Len() > inFlight {
			r.drop(1)
		}
	}
	held := r.Len()
	total := cap(r.data) + cap(r.ents)*16
	b.ReportMetric(float64(total)/float64(held), "bytes/frame-held")
	b.ReportMetric(float64(total-r.bytes())/float64(held), "overhead-bytes/frame")
}

// FuzzInflight drives the ring with a script of operations and checks it against a plain
// slice: the same frames, in the same order, with the same bytes.
func FuzzInflight(f *testing.F) {
	f.Add([]byte{0, 10, 0, 200, 1, 1, 2, 0, 3, 0, 255, 1, 4})
	f.Fuzz(func(t *testing.T, script []byte) {
		r := newInflight(4 << 10)
		var model [][]byte // frames held, oldest first
		sent, id, now := 0, uint32(1), int64(0)
		for len(script) >= 2 {
			op, arg := script[0]%5, int(script[1])
			script = script[2:]
			switch op {
			case 0: // add a frame
				f := frameOf(20+arg*8, byte(id))
				r.add(f)
				model = append(model, f)
			case 1: // write the next pending frames
				for k := 0; k < arg%8 && sent < len(model); k++ {
					now++
					setFrameID(model[sent], id)
					r.send(id, now)
					id, sent = id+1, sent+1
				}
			case 2: // drop written frames
				k := min(arg%8, sent)
				r.drop(k)
				model, sent = model[k:], sent-k
			case 3: // the connection ended
				r.unsend()
				sent = 0
			case 4: // frames age out
				k := r.expire(now - int64(arg%8))
				model, sent = model[k:], sent-k
			}
			if r.Len() != len(model) || r.inFlight() != sent {
				t.Fatalf("ring holds %d (%d written); model %d (%d)", r.Len(), r.inFlight(), len(model), sent)
			}
			for i, want := range model {
				if !bytes.Equal(r.frame(i), want) {
					t.Fatalf("frame %d differs", i)
				}
			}
		}
	})
}
