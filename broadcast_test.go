package apns_test

// Broadcast channels (broadcast.go) against apnstest.HTTP2Server over TLS on loopback.

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
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

func TestSendBroadcastIsQueuedAndItsRejectionReachesTheCallbacks(t *testing.T) {
	broadcastAuths(t, nil, func(t *testing.T, s *apnstest.HTTP2Server, c *apns.Client) {
		ctx := context.Background()
		ch, err := c.CreateChannel(ctx, bundle, apns.MostRecentMessageStored)
		if err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		var rejs []*apns.Rejection
		var codes []uint8
		c.SetRejectionCallback(func(r *apns.Rejection) { mu.Lock(); rejs = append(rejs, r); mu.Unlock() })
		c.SetCallback(func(m *apns.Message, code uint8) { mu.Lock(); codes = append(codes, code); mu.Unlock() })
		// Queued before Start, like Send.
		for i := 0; i < 20; i++ {
			if err := c.SendBroadcast(ctx, &apns.BroadcastNotification{BundleID: bundle, ChannelID: ch.ID, Payload: liveUpdate(i)}); err != nil {
				t.Fatal(err)
			}
		}
		const gone = "Z29uZS1jaGFubmVsLWlk" // base64, never created
		const reqID = "8e7c1d70-8a4b-4d55-8f0e-8c3f5f1b2a90"
		if err := c.SendBroadcast(ctx, &apns.BroadcastNotification{BundleID: bundle, ChannelID: gone, RequestID: reqID, Payload: liveUpdate(0)}); err != nil {
			t.Fatal(err)
		}
		if err := c.Start(2); err != nil {
			t.Fatal(err)
		}
		guard(t, "Stop", func() { c.Stop() })
		if got := len(s.Broadcasts(ch.ID)); got != 20 {
			t.Errorf("the channel got %d broadcasts; want 20", got)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(rejs) != 1 || len(codes) != 1 {
			t.Fatalf("callbacks got %d rejections and %d codes; want 1 each", len(rejs), len(codes))
		}
		r := rejs[0]
		if r.StatusCode != 400 || r.Reason != apns.ReasonChannelNotRegistered || r.ChannelID != gone || r.ID != reqID ||
			r.Message == nil || len(r.Message.Token) != 0 || codes[0] != uint8(apns.StatusProtocolError) {
			t.Errorf("rejection = %d %s, channel %q, ID %q, message %+v, code %d; want 400 ChannelNotRegistered on %s, ID %s, empty token, code 128",
				r.StatusCode, r.Reason, r.ChannelID, r.ID, r.Message, codes[0], gone, reqID)
		}
		if st := c.Stats(); st.Accepted != 21 || st.Delivered != 20 || st.Rejected != 1 {
			t.Errorf("stats = %+v; want 21 accepted, 20 delivered, 1 rejected", st)
		}
	})
}

func TestBroadcastIsRetriedAfter503And429AndGoAway(t *testing.T) {
	parallel(t)
	broadcastAuths(t, nil, func(t *testing.T, s *apnstest.HTTP2Server, c *apns.Client) {
		ctx := context.Background()
		ch, err := c.CreateChannel(ctx, bundle, apns.NoMessageStored)
		if err != nil {
			t.Fatal(err)
		}
		var calls atomic.Int64
		s.RespondBroadcastFunc(func(r apnstest.BroadcastRequest) *apnstest.Response {
			if r.Op != apnstest.OpBroadcast {
				return nil
			}
			switch calls.Add(1) {
			case 1:
				return &apnstest.Response{Status: 503, Reason: "ServiceUnavailable"}
			case 2:
				return &apnstest.Response{Status: 429, Reason: "TooManyRequests", RetryAfter: "1"}
			}
			return nil
		})
		if err := c.Start(1); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		resp, err := c.Broadcast(ctx, &apns.BroadcastNotification{BundleID: bundle, ChannelID: ch.ID, Payload: liveUpdate(1)})
		if err != nil || !resp.Sent() {
			t.Fatalf("Broadcast = %+v, %v; want 200 after retries", resp, err)
		}
		if d := time.Since(start); d < time.Second {
			t.Errorf("Broadcast returned after %v; want no sooner than Retry-After's 1s", d)
		}
		if n := calls.Load(); n != 3 {
			t.Errorf("the mock saw %d tries; want 3", n)
		}

		// A GOAWAY while a queued broadcast waits for its answer: it is sent again on a new
		// connection, and arrives once.
		s.RespondBroadcastFunc(func(r apnstest.BroadcastRequest) *apnstest.Response {
			if r.Op == apnstest.OpBroadcast && calls.Add(1) == 4 {
				go s.GoAway()
				return &apnstest.Response{Delay: 200 * time.Millisecond}
			}
			return nil
		})
		if err := c.SendBroadcast(ctx, &apns.BroadcastNotification{BundleID: bundle, ChannelID: ch.ID, Payload: liveUpdate(2)}); err != nil {
			t.Fatal(err)
		}
		resp, err = c.Broadcast(ctx, &apns.BroadcastNotification{BundleID: bundle, ChannelID: ch.ID, Payload: liveUpdate(3)})
		if err != nil || !resp.Sent() {
			t.Fatalf("Broadcast around a GOAWAY = %+v, %v; want 200", resp, err)
		}
		guard(t, "Stop", func() { c.Stop() })
		if got := len(s.Broadcasts(ch.ID)); got != 3 {
			t.Errorf("the channel got %d broadcasts; want 3", got)
		}
		if st := c.Stats(); st.Delivered != 1 || st.Rejected+st.Unsent != 0 {
			t.Errorf("stats = %+v; want the queued broadcast delivered", st)
		}
	})
}

func TestStopClosesTheManagementConnection(t *testing.T) {
	parallel(t) // the goroutine counts see this test's goroutines only
	broadcastAuths(t, nil, func(t *testing.T, s *apnstest.HTTP2Server, c *apns.Client) {
		ctx := context.Background()
		// Without Start: only the management connection.
		if _, err := c.CreateChannel(ctx, bundle, apns.NoMessageStored); err != nil {
			t.Fatal(err)
		}
		if n := h2ReadLoops(t); n != 1 {
			t.Fatalf("%d HTTP/2 connections open after a channel call; want 1", n)
		}
		guard(t, "Stop", func() { c.Stop() })
		if n := waitReadLoops(t, 0); n != 0 {
			t.Errorf("%d HTTP/2 connections open after Stop; want 0", n)
		}
		if _, err := c.Channels(ctx, bundle); !errors.Is(err, apns.ErrStopped) {
			t.Errorf("Channels after Stop = %v; want ErrStopped", err)
		}
		if n := h2ReadLoops(t); n != 0 {
			t.Errorf("a channel call after Stop opened %d connections", n)
		}
	})
}

func TestStopEndsAChannelCallInProgress(t *testing.T) {
	parallel(t) // the goroutine counts see this test's goroutines only
	s, c := newTokenBroadcastClient(t, nil)
	arrived, release := make(chan struct{}), make(chan struct{})
	s.RespondBroadcastFunc(func(r apnstest.BroadcastRequest) *apnstest.Response {
		close(arrived)
		<-release // the server never answers while the test runs
		return nil
	})
	t.Cleanup(func() { close(release) }) // before the cleanup that stops c, so that one ends
	errc := make(chan error, 1)
	go func() {
		_, err := c.CreateChannel(context.Background(), bundle, apns.MostRecentMessageStored)
		errc <- err
	}()
	<-arrived
	guard(t, "Stop", func() { c.Stop() })
	select {
	case err := <-errc:
		if err == nil {
			t.Error("CreateChannel cut short by Stop returned no error")
		}
	case <-time.After(waitGuard):
		t.Fatal("CreateChannel did not return after Stop")
	}
	if n := waitReadLoops(t, 0); n != 0 {
		t.Errorf("%d HTTP/2 connections open after Stop; want 0", n)
	}
}

func TestChannelCallsHonourTheirContext(t *testing.T) {
	parallel(t)
	s, c := newTokenBroadcastClient(t, nil)
	s.RespondBroadcastFunc(func(r apnstest.BroadcastRequest) *apnstest.Response {
		return &apnstest.Response{Delay: time.Hour}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := c.Channels(ctx, bundle); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Channels with a 100ms context against a server that never answers = %v; want DeadlineExceeded", err)
	}
}

func TestChannelManagementEndpoint(t *testing.T) {
	// Apple's hosts: the endpoint follows the gateway; anything else needs the option.
	c, err := apns.CreateClient("127.0.0.1:9", nil, nil, false, apns.WithProtocol(apns.ProtocolHTTP2))
	if err != nil {
		t.Fatal(err)
	}
	stopAfter(t, c)
	if _, err := c.Channels(context.Background(), bundle); !errors.Is(err, apns.ErrNoChannelManagement) {
		t.Errorf("Channels without a management endpoint = %v; want ErrNoChannelManagement", err)
	}
	bin, err := apns.CreateClient("127.0.0.1:9", nil, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	stopAfter(t, bin)
	if _, err := bin.CreateChannel(context.Background(), bundle, 0); !errors.Is(err, apns.ErrNotHTTP2) {
		t.Errorf("CreateChannel on a binary client = %v; want ErrNotHTTP2", err)
	}
	if _, err := bin.Broadcast(context.Background(), &apns.BroadcastNotification{}); !errors.Is(err, apns.ErrNotHTTP2) {
		t.Errorf("Broadcast on a binary client = %v; want ErrNotHTTP2", err)
	}
	if _, err := apns.CreateClient("api.push.apple.com", nil, nil, false, apns.WithBroadcastManagementURL("https://:2196")); err == nil {
		t.Error("CreateClient with a management URL without a host succeeded")
	}
	for gateway, want := range map[string]string{
		"api.push.apple.com":                 apns.BroadcastManagementHost,
		"gateway.push.apple.com":             apns.BroadcastManagementHost,
		"https://api.push.apple.com:2197":    apns.BroadcastManagementHost,
		"api.sandbox.push.apple.com":         apns.BroadcastManagementSandboxHost,
		"gateway.sandbox.push.apple.com:443": apns.BroadcastManagementSandboxHost,
		"api.development.push.apple.com":     apns.BroadcastManagementSandboxHost,
	} {
		c, err := apns.CreateClient(gateway, nil, nil, false)
		if err != nil {
			t.Fatal(err)
		}
		if got := apns.ManagementAddr(c); got != want {
			t.Errorf("management endpoint of %s = %q; want %q", gateway, got, want)
		}
		if name, _, _ := strings.Cut(want, ":"); apns.ManagementServerName(c) != name {
			t.Errorf("management connection of %s verifies %q; want %q", gateway, apns.ManagementServerName(c), name)
		}
	}
}

func TestManagementConnectionVerifiesTheServer(t *testing.T) {
	s := newH2Server(t, nil)
	cert, key := apnstest.ClientCertPEM()
	// No WithTLSConfig: the system roots do not know the mock's CA.
	c, err := apns.CreateClient(s.URL, cert, key, false, apns.WithBroadcastManagementURL(s.URL))
	if err != nil {
		t.Fatal(err)
	}
	stopAfter(t, c)
	_, err = c.CreateChannel(context.Background(), bundle, apns.NoMessageStored)
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) {
		t.Errorf("CreateChannel against an unknown CA = %v; want x509.UnknownAuthorityError", err)
	}
	// anyServerCert skips the verification, as for the gateway.
	c2, err := apns.CreateClient(s.URL, cert, key, true, apns.WithBroadcastManagementURL(s.URL))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { guard(t, "Stop", func() { c2.Stop() }) })
	if _, err := c2.CreateChannel(context.Background(), bundle, apns.NoMessageStored); err != nil {
		t.Errorf("CreateChannel with anyServerCert = %v", err)
	}
}

func TestChannelCallsNeedCredentials(t *testing.T) {
	s := newH2Server(t, nil)
	// No certificate and no token: APNs answers MissingProviderToken.
	c, err := apns.CreateClient(s.URL, nil, nil, false, apns.WithTLSConfig(s.ClientTLSConfig()), apns.WithBroadcastManagementURL(s.URL))
	if err != nil {
		t.Fatal(err)
	}
	stopAfter(t, c)
	_, err = c.CreateChannel(context.Background(), bundle, apns.NoMessageStored)
	rejectionOf(t, err, 403, "MissingProviderToken")
}

func TestChannelCallsRejectBadInputLocally(t *testing.T) {
	s, c := newTokenBroadcastClient(t, nil)
	ctx := context.Background()
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	ch, err := c.CreateChannel(ctx, bundle, apns.MostRecentMessageStored)
	if err != nil {
		t.Fatal(err)
	}
	big := []byte(`{"aps":{"event":"update","content-state":{"s":"` + strings.Repeat("x", apns.MaxBroadcastPayloadSize-40) + `"}}}`)
	big = big[:apns.MaxBroadcastPayloadSize]
	big[len(big)-4], big[len(big)-3], big[len(big)-2], big[len(big)-1] = '"', '}', '}', '}'
	for _, tc := range []struct {
		name string
		call func() error
		want error
	}{
		{"create with policy 2", func() error { _, err := c.CreateChannel(ctx, bundle, 2); return err }, apns.ErrInvalidStoragePolicy},
		{"create with empty bundle", func() error { _, err := c.CreateChannel(ctx, "", 0); return err }, apns.ErrInvalidBundleID},
		{"create with a slash in the bundle", func() error { _, err := c.CreateChannel(ctx, "com.x/y", 0); return err }, apns.ErrInvalidBundleID},
		{"read with empty channel", func() error { _, err := c.Channel(ctx, bundle, ""); return err }, apns.ErrInvalidChannelID},
		{"delete with a non-base64 channel", func() error { return c.DeleteChannel(ctx, bundle, "a b\r\n") }, apns.ErrInvalidChannelID},
		{"broadcast without channel", func() error {
			_, err := c.Broadcast(ctx, &apns.BroadcastNotification{Payload: liveUpdate(1)})
			return err
		}, apns.ErrInvalidChannelID},
		{"broadcast without payload", func() error {
			_, err := c.Broadcast(ctx, &apns.BroadcastNotification{ChannelID: ch.ID})
			return err
		}, apns.ErrPayloadEmpty},
		{"broadcast with priority 1", func() error {
			_, err := c.Broadcast(ctx, &apns.BroadcastNotification{ChannelID: ch.ID, Priority: 1, Payload: liveUpdate(1)})
			return err
		}, apns.ErrInvalidPriority},
		{"broadcast of 5121 bytes", func() error {
			_, err := c.Broadcast(ctx, &apns.BroadcastNotification{ChannelID: ch.ID, Payload: append(big, ' ')})
			return err
		}, apns.ErrPayloadTooLarge},
		{"queued broadcast of 5121 bytes", func() error {
			return c.SendBroadcast(ctx, &apns.BroadcastNotification{ChannelID: ch.ID, Payload: append(big, ' ')})
		}, apns.ErrPayloadTooLarge},
		{"broadcast that does not marshal", func() error {
			_, err := c.Broadcast(ctx, &apns.BroadcastNotification{ChannelID: ch.ID, Payload: func() {}})
			return err
		}, apns.ErrPayloadMarshal},
	} {
		if err := tc.call(); !errors.Is(err, tc.want) {
			t.Errorf("%s = %v; want %v", tc.name, err, tc.want)
		}
	}
	if n := len(s.BroadcastRequests()); n != 1 {
		t.Errorf("the mock saw %d requests; want 1, the create", n)
	}
	// 5120 bytes exactly is fine.
	if resp, err := c.Broadcast(ctx, &apns.BroadcastNotification{ChannelID: ch.ID, Payload: big}); err != nil || !resp.Sent() {
		t.Errorf("Broadcast of 5120 bytes = %+v, %v; want 200", resp, err)
	}
}

func TestChannelRefusalsFromAPNsAreRejections(t *testing.T) {
	broadcastAuths(t, func(s *apnstest.HTTP2Server) {
		s.SetChannelLimit(2)
		s.EnableBroadcast(bundle)
	}, func(t *testing.T, s *apnstest.HTTP2Server, c *apns.Client) {
		ctx := context.Background()
		for i := 0; i < 2; i++ {
			if _, err := c.CreateChannel(ctx, bundle, apns.NoMessageStored); err != nil {
				t.Fatal(err)
			}
		}
		_, err := c.CreateChannel(ctx, bundle, apns.NoMessageStored)
		rejectionOf(t, err, 400, apns.ReasonCannotCreateChannelConfig)
		_, err = c.CreateChannel(ctx, "com.example.plain", apns.NoMessageStored)
		rejectionOf(t, err, 400, apns.ReasonFeatureNotEnabled)
		_, err = c.Channels(ctx, bundle+".push-type.liveactivity")
		rejectionOf(t, err, 400, "TopicDisallowed")
		_, err = c.Channel(ctx, bundle, "bm90LWEtY2hhbm5lbA==")
		rejectionOf(t, err, 400, apns.ReasonChannelNotRegistered)
		_, err = c.Channel(ctx, bundle, strings.Repeat("QUFB", 30)) // 90 bytes: longer than the mock takes
		rejectionOf(t, err, 400, apns.ReasonBadChannelID)
		if err := c.Start(1); err != nil {
			t.Fatal(err)
		}
		resp, err := c.Broadcast(ctx, &apns.BroadcastNotification{BundleID: bundle, ChannelID: "bm90LWEtY2hhbm5lbA==", Payload: liveUpdate(1)})
		if err != nil || resp.StatusCode != 400 || resp.Reason != apns.ReasonChannelNotRegistered {
			t.Errorf("Broadcast to an unknown channel = %+v, %v; want 400 ChannelNotRegistered", resp, err)
		}
		s.RespondBroadcastFunc(func(apnstest.BroadcastRequest) *apnstest.Response {
			return &apnstest.Response{Status: 503, Reason: "ServiceUnavailable"}
		})
		_, err = c.Channels(ctx, bundle) // not retried
		rejectionOf(t, err, 503, "ServiceUnavailable")
		if k := len(s.BroadcastRequests()); k != 9 {
			t.Errorf("the mock saw %d requests; want 9 (no retries)", k)
		}
	})
}

func TestChannelCallsRenewAnExpiredProviderToken(t *testing.T) {
	client, server := &clock{now: time.Now()}, &clock{now: time.Now()}
	s, c := newTokenBroadcastClient(t, func(s *apnstest.HTTP2Server) { s.Now = server.Now }, apns.WithClock(client.Now))
	ctx := context.Background()
	if _, err := c.CreateChannel(ctx, bundle, apns.NoMessageStored); err != nil {
		t.Fatal(err)
	}
	// The server's clock runs ahead: by its rules the token is over an hour old; by the
	// client's it is 25 minutes old, short of its own refresh but old enough to replace.
	client.Add(25 * time.Minute)
	server.Add(61 * time.Minute)
	if _, err := c.Channels(ctx, bundle); err != nil {
		t.Fatalf("Channels with an expired token = %v; want a new token and success", err)
	}
	reqs := s.BroadcastRequests()
	if len(reqs) != 3 || reqs[1].Reason != "ExpiredProviderToken" || reqs[2].Status != 200 {
		t.Errorf("the mock saw %+v; want create, list refused ExpiredProviderToken, list accepted", reqs)
	}
}

func TestManagementConnectionUsesTheClientsProxySetting(t *testing.T) {
	s := newH2Server(t, nil)
	var mu sync.Mutex
	var asked []string
	proxy := func(r *http.Request) (*url.URL, error) {
		mu.Lock()
		asked = append(asked, r.URL.Host)
		mu.Unlock()
		return nil, nil // direct
	}
	c := newH2Client(t, s, apns.WithBroadcastManagementURL(s.URL), apns.WithProxy(proxy))
	if _, err := c.CreateChannel(context.Background(), bundle, apns.NoMessageStored); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if host, _, _ := net.SplitHostPort(s.Addr); len(asked) != 1 || !strings.HasPrefix(asked[0], host) {
		t.Errorf("the proxy function was asked about %q; want once about %s", asked, s.Addr)
	}
}
