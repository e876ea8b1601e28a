package apns_test

// The channel-management connection: which name it verifies, what is retried after an
// attempt lost on a reused connection, and the defaults and logs of broadcasts.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	apns "github.com/Kwik-messenger/apns-go"
	"github.com/Kwik-messenger/apns-go/apnstest"
)

// A ServerName set in WithTLSConfig names the gateway; the management host is verified by
// its own name.
func TestManagementConnectionVerifiesTheManagementHostNotTheGatewayServerName(t *testing.T) {
	s := newH2Server(t, nil)
	cfg := s.ClientTLSConfig()
	cfg.ServerName = "gateway.invalid" // not in the mock's certificate (127.0.0.1, ::1, localhost)
	_, c := newTokenBroadcastClient(t, nil, apns.WithTLSConfig(cfg))
	if got := apns.ManagementServerName(c); got != "127.0.0.1" {
		t.Errorf("management connection verifies %q; want 127.0.0.1, the management host", got)
	}
	if _, err := c.Channels(context.Background(), bundle); err != nil {
		t.Errorf("Channels with a gateway ServerName in WithTLSConfig = %v; want the management host verified by its own name", err)
	}
}

// A client whose topic is the Live Activity topic (<bundle>.push-type.liveactivity)
// broadcasts to the bare bundle ID by default: APNs refuses the suffix (TopicDisallowed).
func TestBroadcastBundleDefaultDropsTheLiveActivitySuffix(t *testing.T) {
	key, p8 := apns.NewTestAuthKey(t)
	s := newH2Server(t, func(s *apnstest.HTTP2Server) {
		s.Keys = map[string]*ecdsa.PublicKey{"KEY1234567": &key.PublicKey}
	})
	c, err := apns.CreateTokenClient(s.URL, p8, "KEY1234567", "TEAM123456", bundle+".push-type.liveactivity",
		apns.WithTLSConfig(s.ClientTLSConfig()), apns.WithBroadcastManagementURL(s.URL))
	if err != nil {
		t.Fatal(err)
	}
	stopAfter(t, c)
	ctx := context.Background()
	ch, err := c.CreateChannel(ctx, bundle, apns.MostRecentMessageStored)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	resp, err := c.Broadcast(ctx, &apns.BroadcastNotification{ChannelID: ch.ID, Payload: liveUpdate(1)})
	if err != nil || !resp.Sent() {
		t.Fatalf("Broadcast with the default bundle of a %s.push-type.liveactivity client = %+v, %v; want sent", bundle, resp, err)
	}
	if got := s.Broadcasts(ch.ID); len(got) != 1 || got[0].BundleID != bundle {
		t.Errorf("the mock got %+v; want one broadcast to %s", got, bundle)
	}
}

// logBuffer is an io.Writer for a slog handler, safe for concurrent use.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// The log line of a rejected broadcast names its channel; a broadcast has no token.
func TestRejectedBroadcastIsLoggedWithItsChannel(t *testing.T) {
	var logs logBuffer
	_, c := newTokenBroadcastClient(t, nil, apns.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	const gone = "Z29uZS1jaGFubmVsLWlk" // never created
	if err := c.SendBroadcast(context.Background(), &apns.BroadcastNotification{ChannelID: gone, Payload: liveUpdate(1)}); err != nil {
		t.Fatal(err)
	}
	stop(t, c)
	var line string
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "notification rejected") {
			line = l
		}
	}
	if !strings.Contains(line, "channel="+gone) || strings.Contains(line, "token=") {
		t.Errorf("log line of the rejected broadcast = %q; want channel=%s and no token", line, gone)
	}
}

// managementWithLostAttempt serves a fake management host whose first answer to method is
// lost (the stream is reset); a GET of all-channels always answers. It returns the client
// and the count of method requests.
func managementWithLostAttempt(t *testing.T, method string, retry func(w http.ResponseWriter)) (*apns.Client, *atomic.Int32) {
	t.Helper()
	var n atomic.Int32
	_, c := fakeManagement(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/all-channels") {
			_, _ = w.Write([]byte(`{"channels":[]}`))
			return
		}
		if r.Method != method {
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		if n.Add(1) == 1 {
			panic(http.ErrAbortHandler) // the request took effect; its answer is lost
		}
		retry(w)
	})
	return c, &n
}

// DELETE is retried once on a new connection after an attempt lost on a reused one; the
// lost attempt may have deleted the channel, so ChannelNotRegistered then is success.
func TestDeleteRetriedAfterALostAnswerTreatsChannelNotRegisteredAsSuccess(t *testing.T) {
	ctx := context.Background()
	notRegistered := func(w http.ResponseWriter) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(`{"reason":"ChannelNotRegistered"}`))
	}
	c, n := managementWithLostAttempt(t, http.MethodDelete, notRegistered)
	if _, err := c.Channels(ctx, bundle); err != nil { // the connection is now a reused one
		t.Fatal(err)
	}
	if err := c.DeleteChannel(ctx, bundle, "dHN0LXNyY2gtY2hubA=="); err != nil {
		t.Errorf("DeleteChannel whose first answer was lost = %v; want nil (the retry found it deleted)", err)
	}
	if got := n.Load(); got != 2 {
		t.Errorf("the host saw %d DELETEs; want 2", got)
	}

	// An attempt lost on a fresh connection is not retried: the host, not an idle
	// connection, failed.
	c, n = managementWithLostAttempt(t, http.MethodDelete, notRegistered)
	if err := c.DeleteChannel(ctx, bundle, "dHN0LXNyY2gtY2hubA=="); err == nil {
		t.Error("DeleteChannel lost on a fresh connection = nil; want the error")
	}
	if got := n.Load(); got != 1 {
		t.Errorf("the host saw %d DELETEs on a fresh connection; want 1", got)
	}

	// ChannelNotRegistered to an attempt that is not a retry is a refusal as ever.
	_, c = fakeManagement(t, func(w http.ResponseWriter, r *http.Request) { notRegistered(w) })
	err := c.DeleteChannel(ctx, bundle, "dHN0LXNyY2gtY2hubA==")
	var rej *apns.Rejection
	if !errors.As(err, &rej) || rej.Reason != apns.ReasonChannelNotRegistered {
		t.Errorf("DeleteChannel answered ChannelNotRegistered at once = %v; want that *Rejection", err)
	}
}

// CreateChannel is never retried: the lost attempt may have created a channel.
func TestCreateChannelIsNeverRetried(t *testing.T) {
	ctx := context.Background()
	c, n := managementWithLostAttempt(t, http.MethodPost, func(w http.ResponseWriter) {
		w.Header().Set("Apns-Channel-Id", "dHN0LXNyY2gtY2hubA==")
		w.WriteHeader(http.StatusCreated)
	})
	if _, err := c.Channels(ctx, bundle); err != nil {
		t.Fatal(err)
	}
	if ch, err := c.CreateChannel(ctx, bundle, apns.NoMessageStored); err == nil {
		t.Errorf("CreateChannel whose answer was lost = %+v, nil; want the error", ch)
	}
	if got := n.Load(); got != 1 {
		t.Errorf("the host saw %d POSTs; want 1", got)
	}
}
