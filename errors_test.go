package apns_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	apns "github.com/Kwik-messenger/apns-go"
)

// unstartedClient returns a client of proto that is never started: Send validates before
// anything touches the network.
func unstartedClient(t *testing.T, proto apns.Protocol) *apns.Client {
	t.Helper()
	c, err := apns.CreateClient("127.0.0.1:1", nil, nil, true, apns.WithProtocol(proto))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stop(t, c) })
	return c
}

// checkErr checks that err is target and that its text has every one of want and none of
// unwanted.
func checkErr(t *testing.T, what string, err, target error, want []string, unwanted ...string) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Errorf("%s: err = %v; want %v", what, err, target)
		return
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("%s: %q; want it to say %q", what, err, w)
		}
	}
	for _, u := range unwanted {
		if strings.Contains(err.Error(), u) {
			t.Errorf("%s: %q; want no %q", what, err, u)
		}
	}
}

func bigPayload(n int) map[string]interface{} {
	return map[string]interface{}{"a": strings.Repeat("x", n)}
}

// ErrPayloadTooLarge names the limit of the protocol in use: 2048 bytes on the binary protocol,
// 4096 on HTTP/2, 5120 for voip.
func TestPayloadTooLargeNamesTheLimitOfTheProtocol(t *testing.T) {
	bin := unstartedClient(t, apns.ProtocolBinary)
	err := bin.Send(token(0), time.Time{}, 10, bigPayload(3000))
	checkErr(t, "binary Send", err, apns.ErrPayloadTooLarge, []string{"3008 bytes", "2048", "binary"}, "4096")

	h2 := unstartedClient(t, apns.ProtocolHTTP2)
	err = h2.Send(token(0), time.Time{}, 10, bigPayload(5000))
	checkErr(t, "HTTP/2 Send", err, apns.ErrPayloadTooLarge, []string{"5008 bytes", "4096", "HTTP/2"}, "2048")
	ctx := context.Background()
	err = h2.SendNotification(ctx, &apns.Notification{DeviceToken: token(0), Payload: make([]byte, 4097)})
	checkErr(t, "HTTP/2 SendNotification", err, apns.ErrPayloadTooLarge, []string{"4097 bytes", "4096"}, "2048", "5120")
	err = h2.SendNotification(ctx, &apns.Notification{DeviceToken: token(0), PushType: "voip", Payload: make([]byte, 5121)})
	checkErr(t, "HTTP/2 voip", err, apns.ErrPayloadTooLarge, []string{"5121 bytes", "5120", "voip"}, "2048", "4096")
}

// ErrInvalidPriority names the priority and what the protocol takes: HTTP/2 also takes 1.
func TestInvalidPriorityNamesWhatTheProtocolTakes(t *testing.T) {
	bin := unstartedClient(t, apns.ProtocolBinary)
	err := bin.Send(token(0), time.Time{}, 1, payload(0))
	checkErr(t, "binary Send priority 1", err, apns.ErrInvalidPriority, []string{"priority 1", "10", "5"}, "neither")

	h2 := unstartedClient(t, apns.ProtocolHTTP2)
	err = h2.SendNotification(context.Background(), &apns.Notification{DeviceToken: token(0), Priority: 7, Payload: []byte(`{}`)})
	checkErr(t, "HTTP/2 priority 7", err, apns.ErrInvalidPriority, []string{"priority 7", "10", "5", "1 (lowest)"}, "neither")
	err = h2.Send(token(0), time.Time{}, 1, payload(0))
	checkErr(t, "HTTP/2 Send priority 1", err, apns.ErrInvalidPriority, []string{"priority 1", "SendNotification"})
}
