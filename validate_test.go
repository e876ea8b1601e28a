package apns_test

// Header values that cannot go out as they are (an apns-id that is not a UUID, control
// characters in a topic or collapse id) are bad input, refused before anything is sent.

import (
	"context"
	"errors"
	"testing"
	"time"

	apns "github.com/Kwik-messenger/apns-go"
)

func TestHeaderValuesThatCannotBeSentAreRefusedUpFront(t *testing.T) {
	s := newH2Server(t, nil)
	c := newH2Client(t, s)
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ok := []byte(`{"aps":{"alert":"hi"}}`)
	for _, tc := range []struct {
		name string
		n    apns.Notification
		want error
	}{
		{"ID not a UUID", apns.Notification{ID: "not-a-uuid"}, apns.ErrInvalidID},
		{"ID in upper case", apns.Notification{ID: "8E7C1D70-8A4B-4D55-8F0E-8C3F5F1B2A90"}, apns.ErrInvalidID},
		{"ID with CR LF", apns.Notification{ID: "8e7c1d70-8a4b-4d55-8f0e-8c3f5f1b2a90\r\nx-evil: 1"}, apns.ErrInvalidID},
		{"topic with CR LF", apns.Notification{Topic: "com.example.app\r\nx-evil: 1"}, apns.ErrInvalidTopic},
		{"topic with NUL", apns.Notification{Topic: "com.example.app\x00"}, apns.ErrInvalidTopic},
		{"collapse id with LF", apns.Notification{CollapseID: "a\nb"}, apns.ErrInvalidCollapseID},
		{"collapse id with DEL", apns.Notification{CollapseID: "a\x7f"}, apns.ErrInvalidCollapseID},
	} {
		n := tc.n
		n.DeviceToken, n.Payload = token(1), ok
		if resp, err := c.Push(ctx, &n); !errors.Is(err, tc.want) {
			t.Errorf("Push with %s = %+v, %v; want %v", tc.name, resp, err, tc.want)
		}
		if err := c.SendNotification(ctx, &n); !errors.Is(err, tc.want) {
			t.Errorf("SendNotification with %s = %v; want %v", tc.name, err, tc.want)
		}
	}
	// A good ID still goes.
	if resp, err := c.Push(ctx, &apns.Notification{DeviceToken: token(2), ID: "8e7c1d70-8a4b-4d55-8f0e-8c3f5f1b2a90", Payload: ok}); err != nil || !resp.Sent() || resp.ID != "8e7c1d70-8a4b-4d55-8f0e-8c3f5f1b2a90" {
		t.Errorf("Push with a good ID = %+v, %v; want sent with that ID", resp, err)
	}
	stop(t, c)
	if st := c.Stats(); st.Replayed != 0 || st.Drops != 0 || st.Accepted != 0 {
		t.Errorf("bad input was queued or retried: stats %+v", st)
	}
	if n, r := s.Count(), len(s.Rejected()); n != 1 || r != 0 {
		t.Errorf("the mock accepted %d and refused %d; want the good one only", n, r)
	}
}

// The client's own topic (WithTopic) is checked as a Notification's is.
func TestClientTopicWithControlCharactersIsRefused(t *testing.T) {
	s := newH2Server(t, nil)
	c := newH2Client(t, s, apns.WithTopic("com.example.app\r\n"))
	if err := c.Send(token(1), time.Time{}, apns.PRIORITY_IMMEDIATE, payload(1)); !errors.Is(err, apns.ErrInvalidTopic) {
		t.Errorf("Send with the client's topic holding CR LF = %v; want ErrInvalidTopic", err)
	}
}
