package apns

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"time"
)

func tuple(ts uint32, token []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, ts)
	b = binary.BigEndian.AppendUint16(b, uint16(len(token)))
	return append(b, token...)
}

func TestReadFeedbackParsesTuplesUntilEOF(t *testing.T) {
	tok := bytes.Repeat([]byte{0xab}, 32)
	in := append(tuple(1600000000, tok), tuple(1600000001, []byte{1, 2})...)
	got, err := readFeedback(bytes.NewReader(in), 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Token != string(bytes.Repeat([]byte("ab"), 32)) ||
		!got[0].Timestamp.Equal(time.Unix(1600000000, 0)) || got[1].Token != "0102" {
		t.Errorf("got %+v", got)
	}
}

func TestReadFeedbackReportsMalformedTuples(t *testing.T) {
	good := tuple(1, bytes.Repeat([]byte{1}, 32))
	cases := map[string][]byte{
		"truncated header": append(append([]byte(nil), good...), 0, 0, 0),
		"truncated token":  good[:20],
		"zero length":      tuple(1, nil),
		"length 101":       tuple(1, make([]byte, 101)),
	}
	for name, in := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := readFeedback(bytes.NewReader(in), 10)
			if !errors.Is(err, ErrMalformedFeedback) {
				t.Errorf("err = %v; want ErrMalformedFeedback", err)
			}
			if name == "truncated header" && len(got) != 1 {
				t.Errorf("got %d tokens before the error; want 1", len(got))
			}
		})
	}
}

func TestReadFeedbackStopsAtItsCap(t *testing.T) {
	var in []byte
	for i := 0; i < 5; i++ {
		in = append(in, tuple(uint32(i), []byte{byte(i)})...)
	}
	got, err := readFeedback(bytes.NewReader(in), 3)
	if !errors.Is(err, ErrFeedbackOverflow) || !strings.Contains(err.Error(), "2 tuples") || len(got) != 3 {
		t.Errorf("got %d tokens, %v; want 3 and ErrFeedbackOverflow for 2", len(got), err)
	}
}
