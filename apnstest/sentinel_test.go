package apnstest

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"
)

// sentinel is the frame apns-go's client writes last on a connection when it stops.
func sentinel(id uint32) []byte { return frame2(item{3, u32(id)}) }

// Sentinel frames are answered but kept out of Rejected and ObserveRejected, and counted.
func TestSentinelsAreCountedNotRejected(t *testing.T) {
	s := NewUnstartedServer()
	var observed []Notification
	s.ObserveRejected = func(n Notification, status uint8) { observed = append(observed, n) }
	s.Start()
	defer s.Close()

	for i := uint32(1); i <= 3; i++ {
		c := dial(t, s.Addr, nil)
		write(t, c, note(i, 1), sentinel(100+i))
		expectResponse(t, c, statusMissingToken, 100+i)
	}
	if got := s.Count(); got != 3 {
		t.Errorf("Count() = %d; want 3", got)
	}
	if got := s.Sentinels(); got != 3 {
		t.Errorf("Sentinels() = %d; want 3", got)
	}
	if got := s.Rejected(); len(got) != 0 {
		t.Errorf("Rejected() = %+v; want none (sentinels are not notifications)", got)
	}
	s.Close() // ObserveRejected has returned for every connection
	if len(observed) != 0 {
		t.Errorf("ObserveRejected saw %+v; want nothing", observed)
	}
}

// A frame that only looks like a sentinel is still a rejected notification: an identifier
// item of the wrong size, or an identifier with a payload but no token.
func TestFramesThatAreNotSentinelsAreRejected(t *testing.T) {
	for _, tc := range []struct {
		name   string
		frame  []byte
		status uint8
		id     uint32
	}{
		{"identifier of 3 bytes", frame2(item{3, []byte{0, 0, 7}}), statusProtocol, 0},
		{"identifier and payload", frame2(item{3, u32(7)}, item{2, payload(7)}), statusMissingToken, 7},
		{"identifier and short token", frame2(item{3, u32(7)}, item{1, token(1)[:4]}), statusBadTokenSize, 7},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestServer(t)
			c := dial(t, s.Addr, nil)
			write(t, c, tc.frame)
			expectResponse(t, c, tc.status, tc.id)
			if got := s.Sentinels(); got != 0 {
				t.Errorf("Sentinels() = %d; want 0", got)
			}
			if got := s.Rejected(); len(got) != 1 || got[0].ID != tc.id {
				t.Errorf("Rejected() = %+v; want the frame, id %d", got, tc.id)
			}
		})
	}
}

// RejectToken takes the token as HTTP2Server.Respond does: hexadecimal text, either case.
func TestRejectTokenTakesHexInEitherCase(t *testing.T) {
	s := newTestServer(t)
	tok := token(0xab)
	s.RejectToken(strings.ToUpper(hex.EncodeToString(tok)), 8)
	c := dial(t, s.Addr, nil)
	write(t, c, note(1, 2), note(2, 0xab))
	expectResponse(t, c, 8, 2)
	if got := s.Rejected(); len(got) != 1 || !bytes.Equal(got[0].Token, tok) {
		t.Fatalf("Rejected() = %+v; want the notification to token ab…", got)
	}
}

func TestRejectTokenPanicsOnATokenThatIsNotHex(t *testing.T) {
	s := NewUnstartedServer()
	defer func() {
		r := recover()
		if msg, _ := r.(string); !strings.Contains(msg, `"0123xyz"`) {
			t.Fatalf("recovered %v; want a panic naming the token", r)
		}
	}()
	s.RejectToken("0123xyz", 8)
}
