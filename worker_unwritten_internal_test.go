package apns

import (
	"errors"
	"testing"
)

// cutWriter takes left bytes, then fails, as a connection whose write Shutdown cut short.
type cutWriter struct{ left int }

func (w *cutWriter) Write(p []byte) (int, error) {
	n := min(len(p), w.left)
	w.left -= n
	if n < len(p) {
		return n, errors.New("cut short")
	}
	return n, nil
}

// When the write that carries a connection's sentinel is cut short, the sentinel's bytes
// among those that never left are not taken for frames' bytes: exactly the frames that did
// not leave whole become pending again, and those that left stay written (and count
// delivered).
func TestUnwrittenBytesLeaveOutTheSentinel(t *testing.T) {
	for _, tc := range []struct {
		name        string
		cut         int // bytes of the second flush (frames 4 and 5, then the sentinel) that leave
		stayWritten int
	}{
		{"nothing of the last flush left", 0, 3},
		{"half of frame 4 left", 50, 3},
		{"frame 4 left", 100, 4},
		{"frames 4 and 5 left, not the sentinel", 200, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorker(&binaryTransport{c: &Client{}}, false)
			cw := &cutWriter{left: 300}
			w.bw.Reset(cw)
			for i := range 5 {
				w.ring.add(frameOf(100, byte(i)))
				if err := w.writeNext(0); err != nil {
					t.Fatal(err)
				}
				if i == 2 { // the first three frames leave
					if err := w.bw.Flush(); err != nil {
						t.Fatal(err)
					}
					cw.left = tc.cut
				}
			}
			if err := w.writeSentinel(); err == nil {
				t.Fatal("the sentinel's flush succeeded")
			}
			w.ring.unsendLast(w.unwritten())
			if got := w.ring.inFlight(); got != tc.stayWritten {
				t.Errorf("%d frames stay written; want %d (%d bytes counted unwritten)", got, tc.stayWritten, w.unwritten())
			}
		})
	}
}
