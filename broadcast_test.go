package apns_test

// Broadcast channels (broadcast.go) against apnstest.HTTP2Server over TLS on loopback.

import (
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	apns "github.com/Kwik-messenger/apns-go"
	"github.com/Kwik-messenger/apns-go/apnstest"
)

const bundle = "com.example.app"

// broadcastAuths runs f with a certificate client and a token client of a new mock each;
// the clients are started and stopped after the test.
func broadcastAuths(t *testing.T, setup func(*apnstest.HTTP2Server), f func(t *testing.T, s *apnstest.HTTP2Server, c *apns.Client)) {
	t.Run("certificate", func(t *testing.T) {
		s := newH2Server(t, func(s *apnstest.HTTP2Server) {
			s.RequireClientCert = true
			if setup != nil {
				setup(s)
			}
		})
		c := newH2Client(t, s, apns.WithBroadcastManagementURL(s.URL))
		f(t, s, c)
	})
	t.Run("token", func(t *testing.T) {
		s, c := newTokenBroadcastClient(t, setup)
		f(t, s, c)
	})
}

func newTokenBroadcastClient(t *testing.T, setup func(*apnstest.HTTP2Server), opts ...apns.Option) (*apnstest.HTTP2Server, *apns.Client) {
	t.Helper()
	key, p8 := apns.NewTestAuthKey(t)
	s := newH2Server(t, func(s *apnstest.HTTP2Server) {
		s.Keys = map[string]*ecdsa.PublicKey{"KEY1234567": &key.PublicKey}
		if setup != nil {
			setup(s)
		}
	})
	opts = append([]apns.Option{apns.WithTLSConfig(s.ClientTLSConfig()), apns.WithBroadcastManagementURL(s.URL)}, opts...)
	c, err := apns.CreateTokenClient(s.URL, p8, "KEY1234567", "TEAM123456", bundle, opts...)
	if err != nil {
		t.Fatal(err)
	}
	stopAfter(t, c)
	return s, c
}

func rejectionOf(t *testing.T, err error, status int, reason string) *apns.Rejection {
	t.Helper()
	var rej *apns.Rejection
	if !errors.As(err, &rej) {
		t.Fatalf("error = %v; want a *Rejection %d %s", err, status, reason)
	}
	if rej.StatusCode != status || rej.Reason != reason {
		t.Fatalf("rejection = %d %s; want %d %s", rej.StatusCode, rej.Reason, status, reason)
	}
	return rej
}

func liveUpdate(score int) *apns.Payload {
	return apns.NewPayload().Event(apns.LiveActivityUpdate).Timestamp(time.Unix(1700000000, 0)).
		ContentState(map[string]int{"score": score})
}

func TestChannelsAreCreatedReadListedAndDeleted(t *testing.T) {
	broadcastAuths(t, nil, func(t *testing.T, s *apnstest.HTTP2Server, c *apns.Client) {
		ctx := context.Background()
		ch0, err := c.CreateChannel(ctx, bundle, apns.NoMessageStored)
		if err != nil {
			t.Fatal(err)
		}
		ch1, err := c.CreateChannel(ctx, bundle, apns.MostRecentMessageStored)
		if err != nil {
			t.Fatal(err)
		}
		if ch0.ID == "" || ch0.ID == ch1.ID {
			t.Fatalf("channel IDs %q and %q; want two different ones", ch0.ID, ch1.ID)
		}
		if want := []string{ch0.ID, ch1.ID}; !slices.Equal(s.Channels(bundle), want) {
			t.Fatalf("mock has channels %q; want %q", s.Channels(bundle), want)
		}
		for _, want := range []*apns.Channel{ch0, ch1} {
			got, err := c.Channel(ctx, bundle, want.ID)
			if err != nil {
				t.Fatal(err)
			}
			if *got != *want || got.PushType != "LiveActivity" {
				t.Errorf("Channel(%s) = %+v; want %+v", want.ID, got, want)
			}
		}
		ids, err := c.Channels(ctx, bundle)
		if err != nil || !slices.Equal(ids, []string{ch0.ID, ch1.ID}) {
			t.Fatalf("Channels = %q, %v; want %q", ids, err, []string{ch0.ID, ch1.ID})
		}
		if err := c.DeleteChannel(ctx, bundle, ch0.ID); err != nil {
			t.Fatal(err)
		}
		ids, err = c.Channels(ctx, bundle)
		if err != nil || !slices.Equal(ids, []string{ch1.ID}) {
			t.Fatalf("Channels after delete = %q, %v; want %q", ids, err, []string{ch1.ID})
		}
		_, err = c.Channel(ctx, bundle, ch0.ID)
		rej := rejectionOf(t, err, 400, apns.ReasonChannelNotRegistered)
		if rej.ChannelID != ch0.ID || rej.ID == "" || rej.Message != nil {
			t.Errorf("rejection = %+v; want channel %s, an apns-request-id, no Message", rej, ch0.ID)
		}
		if !strings.Contains(rej.Error(), "ChannelNotRegistered") {
			t.Errorf("Error() = %q; want the reason in it", rej.Error())
		}
		err = c.DeleteChannel(ctx, bundle, ch0.ID)
		rejectionOf(t, err, 400, apns.ReasonChannelNotRegistered)
		ids, err = c.Channels(ctx, "com.example.other")
		if err != nil || ids == nil || len(ids) != 0 {
			t.Errorf("Channels of an app without channels = %q, %v; want an empty list", ids, err)
		}

		// Management used a connection of its own, and the provider token when there is one.
		for _, r := range s.BroadcastRequests() {
			if r.Conn != 1 {
				t.Errorf("%s went on connection %d; want 1 (the client was not started)", r.Op, r.Conn)
			}
			if token := t.Name() == "TestChannelsAreCreatedReadListedAndDeleted/token"; token != (r.KeyID == "KEY1234567") {
				t.Errorf("%s with key ID %q", r.Op, r.KeyID)
			}
		}
	})
}

func TestBroadcastReachesTheChannelWithItsHeaders(t *testing.T) {
	broadcastAuths(t, nil, func(t *testing.T, s *apnstest.HTTP2Server, c *apns.Client) {
		ctx := context.Background()
		if err := c.Start(1); err != nil {
			t.Fatal(err)
		}
		ch, err := c.CreateChannel(ctx, bundle, apns.MostRecentMessageStored)
		if err != nil {
			t.Fatal(err)
		}
		const reqID = "0f5fdd5e-4d44-4b5a-9f39-3f0b0e2c8a11"
		exp := time.Unix(1900000000, 0)
		resp, err := c.Broadcast(ctx, &apns.BroadcastNotification{BundleID: bundle, ChannelID: ch.ID,
			RequestID: reqID, Priority: 5, Expiration: exp, Payload: liveUpdate(1)})
		if err != nil {
			t.Fatal(err)
		}
		if !resp.Sent() || resp.ID != reqID {
			t.Fatalf("Broadcast = %+v; want 200 with ID %s", resp, reqID)
		}
		// Defaults: the client's topic as bundle ID (token client), priority 10, expiration 0.
		n := &apns.BroadcastNotification{BundleID: bundle, ChannelID: ch.ID, Payload: liveUpdate(2)}
		if strings.HasSuffix(t.Name(), "token") {
			n.BundleID = ""
		}
		resp, err = c.Broadcast(ctx, n)
		if err != nil || !resp.Sent() || resp.ID == "" {
			t.Fatalf("Broadcast = %+v, %v; want 200 with a generated apns-request-id", resp, err)
		}
		got := s.Broadcasts(ch.ID)
		if len(got) != 2 {
			t.Fatalf("mock recorded %d broadcasts on the channel; want 2", len(got))
		}
		want := []struct {
			prio int
			exp  string
			id   string
		}{{5, "1900000000", reqID}, {10, "0", resp.ID}}
		for i, r := range got {
			if r.BundleID != bundle || r.PushType != "liveactivity" || r.Priority != want[i].prio ||
				r.Expiration != want[i].exp || r.RequestID != want[i].id || r.StoragePolicy != 1 {
				t.Errorf("broadcast %d = %+v; want bundle %s, liveactivity, priority %d, expiration %s, request ID %s",
					i, r, bundle, want[i].prio, want[i].exp, want[i].id)
			}
			var p struct {
				Aps struct {
					Event        string         `json:"event"`
					ContentState map[string]int `json:"content-state"`
				} `json:"aps"`
			}
			if err := json.Unmarshal(r.Payload, &p); err != nil || p.Aps.Event != "update" || p.Aps.ContentState["score"] != i+1 {
				t.Errorf("broadcast %d payload %s; want event update, score %d", i, r.Payload, i+1)
			}
		}
		if len(s.Requests()) != 0 {
			t.Errorf("the mock saw %d device pushes; want none", len(s.Requests()))
		}
	})
}

func TestBroadcastToAPolicyZeroChannelMustNotExpire(t *testing.T) {
	broadcastAuths(t, nil, func(t *testing.T, s *apnstest.HTTP2Server, c *apns.Client) {
		ctx := context.Background()
		if err := c.Start(1); err != nil {
			t.Fatal(err)
		}
		ch, err := c.CreateChannel(ctx, bundle, apns.NoMessageStored)
		if err != nil {
			t.Fatal(err)
		}
		later := time.Now().Add(time.Hour)
		n := &apns.BroadcastNotification{BundleID: bundle, ChannelID: ch.ID, Expiration: later, Payload: liveUpdate(1)}
		if _, err := c.Broadcast(ctx, n); !errors.Is(err, apns.ErrChannelExpiration) {
			t.Errorf("Broadcast with expiration to a policy-0 channel = %v; want ErrChannelExpiration", err)
		}
		if err := c.SendBroadcast(ctx, n); !errors.Is(err, apns.ErrChannelExpiration) {
			t.Errorf("SendBroadcast with expiration to a policy-0 channel = %v; want ErrChannelExpiration", err)
		}
		if k := len(s.BroadcastRequests()); k != 1 {
			t.Errorf("the mock saw %d requests; want 1, the create", k)
		}

		// A channel this client never created or read: APNs (the mock) refuses.
		other, err := c.CreateChannel(ctx, bundle, apns.NoMessageStored)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.DeleteChannel(ctx, bundle, ch.ID); err != nil { // the client forgets ch
			t.Fatal(err)
		}
		fresh := newClientLike(t, s)
		n.ChannelID = other.ID
		resp, err := fresh.Broadcast(ctx, n)
		if err != nil || resp.StatusCode != 400 || resp.Reason != "BadExpirationDate" {
			t.Errorf("Broadcast with expiration to an unknown policy-0 channel = %+v, %v; want 400 BadExpirationDate", resp, err)
		}
		// Once it has read the channel, it knows.
		if _, err := fresh.Channel(ctx, bundle, other.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := fresh.Broadcast(ctx, n); !errors.Is(err, apns.ErrChannelExpiration) {
			t.Errorf("Broadcast after Channel = %v; want ErrChannelExpiration", err)
		}
		n.Expiration = time.Time{}
		if resp, err := fresh.Broadcast(ctx, n); err != nil || !resp.Sent() {
			t.Errorf("Broadcast without expiration = %+v, %v; want 200", resp, err)
		}
	})
}

// newClientLike returns a second started client of s, with a certificate, which both kinds
// of mock take: a client that knows nothing of the channels the first one made.
func newClientLike(t *testing.T, s *apnstest.HTTP2Server) *apns.Client {
	t.Helper()
	cert, key := apnstest.ClientCertPEM()
	c, err := apns.CreateClient(s.URL, cert, key, false, apns.WithTLSConfig(s.ClientTLSConfig()),
		apns.WithBroadcastManagementURL(s.URL))
	if err != nil {
		t.Fatal(err)
	}
	// Stopped before the first client, whose cleanup then checks for leftover goroutines.
	t.Cleanup(func() { guard(t, "Stop", func() { c.Stop() }) })
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	return c
}
