package apns

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// frame returns an HTTP/2 frame: type, flags, stream and payload.
func frame(typ, flags byte, stream uint32, payload []byte) []byte {
	b := []byte{byte(len(payload) >> 16), byte(len(payload) >> 8), byte(len(payload)), typ, flags}
	b = binary.BigEndian.AppendUint32(b, stream)
	return append(b, payload...)
}

// The probe's PING goes between two of net/http's frames, never inside one, inside the
// preface or inside a header block (HEADERS without END_HEADERS, then CONTINUATION), however
// the bytes are split into Writes and wherever the probe is asked for.
func TestProbeGoesBetweenFrames(t *testing.T) {
	preface := []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
	frames := [][]byte{
		frame(0x4, 0, 0, make([]byte, 18)),                           // SETTINGS
		frame(frameHeaders, 0, 1, bytes.Repeat([]byte{'h'}, 40)),     // HEADERS, header block goes on
		frame(frameContinuation, 0, 1, bytes.Repeat([]byte{'c'}, 7)), // still going on
		frame(frameContinuation, flagEndHeaders, 1, []byte("end")),
		frame(0x0, 0x1, 1, bytes.Repeat([]byte{'d'}, 30)), // DATA, END_STREAM
		frame(frameHeaders, flagEndHeaders, 3, []byte("hh")),
	}
	stream := append([]byte(nil), preface...)
	for _, f := range frames {
		stream = append(stream, f...)
	}
	// Where a PING may go: after the preface's SETTINGS, after the header block, after the DATA, at the end.
	allowed := map[int]bool{}
	at := len(preface)
	for i, f := range frames {
		at += len(f)
		if i != 1 && i != 2 {
			allowed[at] = true
		}
	}
	for _, chunk := range []int{1, 3, 7, 64, len(stream)} {
		for probeAt := 0; probeAt <= len(stream); probeAt++ {
			c := &batchConn{preface: clientPrefaceLen}
			c.ready.L, c.room.L = &c.mu, &c.mu
			for off := 0; off < len(stream); {
				end := min(off+chunk, len(stream))
				if off < probeAt && probeAt < end {
					end = probeAt
				}
				if off == probeAt {
					c.probe()
				}
				if _, err := c.Write(stream[off:end]); err != nil {
					t.Fatal(err)
				}
				off = end
			}
			if probeAt == len(stream) {
				c.probe()
			}
			got := c.buf
			i := bytes.Index(got, pingProbe[:])
			if i < 0 {
				t.Fatalf("chunk %d, probe at %d: no PING written", chunk, probeAt)
			}
			if !allowed[i] {
				t.Fatalf("chunk %d, probe at %d: PING written at %d, not between two frames", chunk, probeAt, i)
			}
			if i < probeAt {
				t.Fatalf("chunk %d, probe at %d: PING written at %d, before it was asked for", chunk, probeAt, i)
			}
			without := append(append([]byte(nil), got[:i]...), got[i+len(pingProbe):]...)
			if !bytes.Equal(without, stream) {
				t.Fatalf("chunk %d, probe at %d: the frames around the PING changed", chunk, probeAt)
			}
		}
	}
}
