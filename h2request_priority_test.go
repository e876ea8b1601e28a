package apns_test

import (
	"context"
	"testing"
	"time"

	apns "github.com/Kwik-messenger/apns-go"
)

// A background push goes at priority 5 even when 10 was asked for: APNs refuses background
// pushes at 10 with 400 BadPriority (issue 10 item 8).
func TestHTTP2BackgroundPushAtPriority10GoesAt5(t *testing.T) {
	s := newH2Server(t, nil)
	c := newH2Client(t, s)
	rej := recordRejections(c)
	background := map[string]any{"aps": map[string]any{"content-available": 1}}
	if err := c.Send(token(1), time.Time{}, apns.PRIORITY_IMMEDIATE, background); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i, n := range []*apns.Notification{
		{DeviceToken: token(2), PushType: "background", Priority: 10, Payload: []byte(`{"aps":{"content-available":1},"k":1}`)},
		{DeviceToken: token(3), Priority: 10, Payload: []byte(`{"aps":{"content-available":1}}`)},
		{DeviceToken: token(4), PushType: "alert", Priority: 10, Payload: []byte(`{"aps":{"alert":"x"}}`)},
		{DeviceToken: token(5), PushType: "background", Priority: 1, Payload: []byte(`{"aps":{"content-available":1}}`)},
	} {
		if err := c.SendNotification(ctx, n); err != nil {
			t.Fatalf("SendNotification %d: %v", i, err)
		}
	}
	start(t, c, 1)
	stop(t, c)
	for tok, rs := range rej.snapshot() {
		t.Errorf("token %s rejected: %d %s", tok[len(tok)-1:], rs[0].StatusCode, rs[0].Reason)
	}
	want := map[string]int{token(1): 5, token(2): 5, token(3): 5, token(4): 10, token(5): 1}
	got := map[string]int{}
	for _, r := range s.Requests() {
		got[r.Token] = r.Priority
	}
	for tok, p := range want {
		if got[tok] != p {
			t.Errorf("token %s went at priority %d; want %d", tok[len(tok)-1:], got[tok], p)
		}
	}
}
