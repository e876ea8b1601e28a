package apns

import (
	"math"
	"testing"
)

// find answers -1, never panics, for an identifier older than the ring's first frame, for 0
// and for identifiers never given, whatever the width of int (issue 10, item 1: on 386 and
// arm the difference became a negative index).
func TestInflightFindRefusesOlderZeroAndBogusIDs(t *testing.T) {
	for _, first := range []uint32{20, 1 << 31, math.MaxUint32 - 2} {
		r := newInflight(1 << 20)
		sendAll(r, first, frameOf(0, 1), frameOf(0, 2))
		for _, id := range []uint32{first - 15, first - 1, 0, first + 2, first + 1<<31, math.MaxUint32} {
			if id == first || id == first+1 {
				continue
			}
			if got := r.find(id); got != -1 {
				t.Errorf("first %d: find(%d) = %d; want -1", first, id, got)
			}
		}
		if got := r.find(first + 1); got != 1 {
			t.Errorf("first %d: find(%d) = %d; want 1", first, first+1, got)
		}
	}
}
