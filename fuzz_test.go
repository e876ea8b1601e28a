package apns

import (
	"bytes"
	"encoding/hex"
	"errors"
	"reflect"
	"testing"
	"time"
)

// Seed corpora for these targets live in testdata/fuzz/<target>.

func FuzzFrameRoundTrip(f *testing.F) {
	good, _ := hex.DecodeString(handFrame)
	f.Add(good)
	f.Fuzz(func(t *testing.T, b []byte) {
		var m Message
		if m.UnmarshalBinary(b) != nil {
			return
		}
		enc, err := m.MarshalBinary()
		if err != nil {
			t.Fatalf("decoded %+v but cannot encode it: %v", m, err)
		}
		if len(enc) != len(b) {
			t.Fatalf("re-encoded length %d; input %d", len(enc), len(b))
		}
		var again Message
		if err := again.UnmarshalBinary(enc); err != nil || !reflect.DeepEqual(m, again) {
			t.Fatalf("round trip: %+v, %v; want %+v", again, err, m)
		}
	})
}

func FuzzReadErrorResponse(f *testing.F) {
	f.Add([]byte{8, 8, 0, 0, 0, 7})
	f.Fuzz(func(t *testing.T, b []byte) {
		results := make(chan readResult, 1)
		readErrorResponse(bytes.NewReader(b), results)
		res := <-results
		isResponse := len(b) >= 6 && b[0] == 8
		if (res.err == nil) != isResponse {
			t.Fatalf("input %x: result %+v", b, res)
		}
		if res.err != nil && len(b) >= 6 && !errors.Is(res.err, ErrGarbage) {
			t.Fatalf("input %x: err %v; want ErrGarbage", b, res.err)
		}
	})
}

func FuzzReadFeedback(f *testing.F) {
	f.Add(tuple(1600000000, bytes.Repeat([]byte{0xab}, 32)))
	f.Fuzz(func(t *testing.T, b []byte) {
		tokens, err := readFeedback(bytes.NewReader(b), 1000)
		if len(tokens) > len(b)/7 {
			t.Fatalf("%d tokens from %d bytes", len(tokens), len(b))
		}
		if err != nil && !errors.Is(err, ErrMalformedFeedback) && !errors.Is(err, ErrFeedbackOverflow) {
			t.Fatalf("err = %v; want ErrMalformedFeedback or ErrFeedbackOverflow", err)
		}
	})
}

func FuzzSendInput(f *testing.F) {
	f.Add(testToken, uint8(10), int64(1600000000), "hello")
	f.Add("zz", uint8(5), int64(-1), "")
	f.Fuzz(func(t *testing.T, token string, priority uint8, expiry int64, alert string) {
		payload := map[string]interface{}{"aps": map[string]interface{}{"alert": alert}}
		var f frameBuf
		err := f.encode(token, time.Unix(expiry, 0), priority, payload)
		frame := f.b
		if err != nil {
			return
		}
		var m Message
		if err := m.UnmarshalBinary(frame); err != nil {
			t.Fatalf("Send accepted input whose frame does not decode: %v", err)
		}
		if hex.EncodeToString(m.Token) != toLower(token) || m.Priority != priority || int64(m.Expiry) != expiry {
			t.Fatalf("frame %+v does not carry token %q, priority %d, expiry %d", m, token, priority, expiry)
		}
	})
}

func toLower(s string) string { return string(bytes.ToLower([]byte(s))) }
