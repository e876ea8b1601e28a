package apns

import (
	"math"
	"testing"
)

// frameWithID returns a minimal frame whose identifier is id.
func frameWithID(id uint32, size int) []byte {
	f := make([]byte, max(size, frameTail+frameHeader))
	setFrameID(f, id)
	return f
}

func ids(frames [][]byte) []uint32 {
	var out []uint32
	for _, f := range frames {
		out = append(out, frameID(f))
	}
	return out
}

func TestInflightFindsConsecutiveIDsAcrossWrapAround(t *testing.T) {
	r := newInflight(1 << 20)
	start := uint32(math.MaxUint32 - 100)
	for i := 0; i < 300; i++ { // grows past its initial 64 slots too
		r.push(frameWithID(start+uint32(i), 0), int64(i))
	}
	for _, i := range []int{0, 100, 101, 299} {
		if got := r.find(start + uint32(i)); got != i {
			t.Errorf("find(start+%d) = %d; want %d", i, got, i)
		}
	}
	if got := r.find(start + 300); got != -1 {
		t.Errorf("find of an id never written = %d; want -1", got)
	}
	if got := r.find(start - 1); got != -1 {
		t.Errorf("find of an id before the ring = %d; want -1", got)
	}
}

func TestInflightExpireDropsOnlyOldFrames(t *testing.T) {
	r := newInflight(1 << 20)
	for i := 0; i < 10; i++ {
		r.push(frameWithID(uint32(i), 0), int64(i*10))
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

func TestInflightDrainSplitsDeliveredFromReplay(t *testing.T) {
	r := newInflight(1 << 20)
	for i := 0; i < 100; i++ {
		r.push(frameWithID(uint32(i), 0), 0)
		if i < 60 {
			r.expire(0) // move head so the ring wraps
		}
	}
	// ids 60..99 are left, 40 frames.
	rest := r.drain(r.find(70))
	if got := ids(rest); len(got) != 30 || got[0] != 70 || got[29] != 99 {
		t.Errorf("drain = %v; want 70..99", got)
	}
	if r.Len() != 0 || r.bytes != 0 {
		t.Errorf("after drain Len=%d bytes=%d; want 0, 0", r.Len(), r.bytes)
	}
}

func TestInflightIsFullAtItsByteBudget(t *testing.T) {
	r := newInflight(1000)
	for i := 0; !r.full(); i++ {
		if i > 10 {
			t.Fatal("ring never became full")
		}
		r.push(frameWithID(uint32(i), 300), 0)
	}
	if r.Len() != 4 {
		t.Errorf("full after %d frames of 300 bytes; want 4", r.Len())
	}
	r.expire(0)
	if r.full() {
		t.Error("still full after expiry")
	}
}
