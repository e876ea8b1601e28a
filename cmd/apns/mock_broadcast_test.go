package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"os"
	"testing"

	apns "github.com/Kwik-messenger/apns-go"
)

func TestMockServesAndLogsBroadcastChannels(t *testing.T) {
	c := startCmd("mock", "-json", "-dir", t.TempDir())
	var info mockInfo
	if line := c.next(t); json.Unmarshal([]byte(line), &info) != nil || info.Manage != info.HTTP2 || info.Manage == "" {
		t.Fatalf("first line %q; want the ready object with broadcast_management = http2", line)
	}
	defer func() {
		if code := c.stop(t); code != 0 {
			t.Errorf("mock exit %d after cancel; want 0", code)
		}
	}()
	ca, err := os.ReadFile(info.CA)
	if err != nil {
		t.Fatal(err)
	}
	p8, err := os.ReadFile(info.TokenKey)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca)
	client, err := apns.CreateTokenClient(info.HTTP2, p8, info.KeyID, info.TeamID, "com.example.app",
		apns.WithTLSConfig(&tls.Config{RootCAs: roots}), apns.WithBroadcastManagementURL(info.Manage))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Stop()
	ctx := context.Background()
	ch, err := client.CreateChannel(ctx, "com.example.app", apns.MostRecentMessageStored)
	if err != nil {
		t.Fatal(err)
	}
	if err := client.Start(1); err != nil {
		t.Fatal(err)
	}
	resp, err := client.Broadcast(ctx, &apns.BroadcastNotification{ChannelID: ch.ID, Payload: []byte(`{"aps":{"event":"update"}}`)})
	if err != nil || !resp.Sent() {
		t.Fatalf("Broadcast = %+v, %v; want 200", resp, err)
	}
	var e broadcastEvent
	if line := c.next(t); json.Unmarshal([]byte(line), &e) != nil || e.Event != "broadcast" || e.Op != "create" ||
		e.Status != 201 || e.Channel != ch.ID || e.KeyID != mockKeyID || e.StoragePolicy == nil || *e.StoragePolicy != 1 {
		t.Fatalf("line %q; want the create", line)
	}
	e = broadcastEvent{}
	if line := c.next(t); json.Unmarshal([]byte(line), &e) != nil || e.Op != "broadcast" || e.Status != 200 ||
		e.Channel != ch.ID || e.RequestID != resp.ID || string(e.Payload) != `{"aps":{"event":"update"}}` {
		t.Fatalf("line %q; want the broadcast", line)
	}
}
