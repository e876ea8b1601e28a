package apns

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

const testToken = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"

// A frame written out by hand from PROTOCOL.md §1.4.
var handFrame = strings.Join([]string{
	"02", "0000004e", // command 2, frame length 78 = 35 + 25 + 7 + 7 + 4
	"01", "0020", testToken, // item 1: token, 32 bytes
	"02", "0016", hex.EncodeToString([]byte(`{"aps":{"alert":"hi"}}`)), // item 2: payload, 22 bytes
	"03", "0004", "0badf00d", // item 3: identifier
	"04", "0004", "5f5e1000", // item 4: expiry 1600000000
	"05", "0001", "0a", // item 5: priority 10
}, "")

func TestEncodeFrameMatchesHandWrittenBytes(t *testing.T) {
	frame, err := encodeFrame(testToken, time.Unix(1600000000, 0), PRIORITY_IMMEDIATE,
		map[string]interface{}{"aps": map[string]interface{}{"alert": "hi"}})
	if err != nil {
		t.Fatal(err)
	}
	setFrameID(frame, 0x0badf00d)
	if got := hex.EncodeToString(frame); got != handFrame {
		t.Errorf("frame\nGot:\n%s\nExpected:\n%s", got, handFrame)
	}
	if got := frameID(frame); got != 0x0badf00d {
		t.Errorf("frameID = %#x; want 0xbadf00d", got)
	}
}

func TestMessageBinaryRoundTrip(t *testing.T) {
	want, _ := hex.DecodeString(handFrame)
	var m Message
	if err := m.UnmarshalBinary(want); err != nil {
		t.Fatal(err)
	}
	if m.MessageID != 0x0badf00d || m.Expiry != 1600000000 || m.Priority != 10 ||
		string(m.Payload) != `{"aps":{"alert":"hi"}}` || hex.EncodeToString(m.Token) != testToken {
		t.Errorf("decoded %+v", m)
	}
	got, err := m.MarshalBinary()
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("MarshalBinary = %x, %v; want %x", got, err, want)
	}
}

func TestUnmarshalBinaryAcceptsAnyItemOrder(t *testing.T) {
	frame := "02" + "0000004e" +
		"05" + "0001" + "05" +
		"03" + "0004" + "00000001" +
		"02" + "0016" + hex.EncodeToString([]byte(`{"aps":{"alert":"hi"}}`)) +
		"04" + "0004" + "00000000" +
		"01" + "0020" + testToken
	b, _ := hex.DecodeString(frame)
	var m Message
	if err := m.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if m.Priority != 5 || m.MessageID != 1 || m.Expiry != 0 {
		t.Errorf("decoded %+v", m)
	}
}

func TestUnmarshalBinaryRejectsMalformedFrames(t *testing.T) {
	good, _ := hex.DecodeString(handFrame)
	cases := map[string][]byte{
		"empty":            nil,
		"wrong command":    append([]byte{1}, good[1:]...),
		"length too long":  good[:len(good)-1],
		"duplicate item":   append(append([]byte(nil), good...), 5, 0, 1, 10),
		"missing priority": good[:len(good)-4],
		"unknown item":     append(append([]byte(nil), good...), 6, 0, 0),
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			var m Message
			if err := m.UnmarshalBinary(b); !errors.Is(err, ErrMalformedFrame) {
				t.Errorf("err = %v; want ErrMalformedFrame", err)
			}
		})
	}
}

func TestSendInputErrors(t *testing.T) {
	ok := map[string]interface{}{"aps": map[string]interface{}{"alert": "x"}}
	cases := []struct {
		name     string
		token    string
		expiry   time.Time
		priority uint8
		payload  map[string]interface{}
		want     error
	}{
		{"non-hex token", strings.Repeat("zz", 32), time.Time{}, 10, ok, ErrTokenNotHex},
		{"non-hex short token", "zz", time.Time{}, 10, ok, ErrTokenNotHex},
		{"short token", testToken[:62], time.Time{}, 10, ok, ErrTokenLength},
		{"odd token", testToken[:63], time.Time{}, 10, ok, ErrTokenLength},
		{"long token", testToken + "00", time.Time{}, 10, ok, ErrTokenLength},
		{"priority 1", testToken, time.Time{}, 1, ok, ErrInvalidPriority},
		{"nil payload", testToken, time.Time{}, 5, nil, ErrPayloadEmpty},
		{"channel in payload", testToken, time.Time{}, 5, map[string]interface{}{"c": make(chan int)}, ErrPayloadMarshal},
		{"NaN in payload", testToken, time.Time{}, 5, map[string]interface{}{"n": math.NaN()}, ErrPayloadMarshal},
		{"payload 2049 bytes", testToken, time.Time{}, 5, map[string]interface{}{"a": strings.Repeat("x", 2049-8)}, ErrPayloadTooLarge},
		{"expiry before 1970", testToken, time.Unix(-1, 0), 5, ok, ErrInvalidExpiry},
		{"expiry after 2106", testToken, time.Unix(1<<32, 0), 5, ok, ErrInvalidExpiry},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := encodeFrame(tc.token, tc.expiry, tc.priority, tc.payload)
			if !errors.Is(err, tc.want) {
				t.Errorf("err = %v; want %v", err, tc.want)
			}
		})
	}
	// The largest payload that fits.
	if _, err := encodeFrame(testToken, time.Time{}, 5, map[string]interface{}{"a": strings.Repeat("x", 2048-8)}); err != nil {
		t.Errorf("2048-byte payload: %v", err)
	}
}

func TestErrorsNeverContainTheWholeToken(t *testing.T) {
	_, err := encodeFrame(strings.Repeat("a", 63)+"z", time.Time{}, 10, map[string]interface{}{})
	if err == nil || strings.Contains(err.Error(), strings.Repeat("a", 63)) {
		t.Errorf("err = %v", err)
	}
}

// encodeFrame is Send's encoding into a fresh buffer.
func encodeFrame(token string, expiry time.Time, priority uint8, payload map[string]interface{}) ([]byte, error) {
	var f frameBuf
	err := f.encode(token, expiry, priority, payload)
	return f.b, err
}

// BenchmarkEncodeFrame compares the frame encoding with json.Marshal of the same payload: the
// encoding itself allocates nothing, so its allocations are the JSON encoder's.
func BenchmarkEncodeFrame(b *testing.B) {
	payload := map[string]interface{}{"aps": map[string]interface{}{"alert": "hello world!"}, "data": 42}
	b.Run("enc=frame", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			f := getFrameBuf()
			if err := f.encode(testToken, time.Time{}, 10, payload); err != nil {
				b.Fatal(err)
			}
			f.release()
		}
	})
	b.Run("enc=json.Marshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := json.Marshal(payload); err != nil {
				b.Fatal(err)
			}
		}
	})
}
