package apns_test

// Tests of the HTTP/2 retry decision: which answers are final, which are tried again and when
// (issue 10 items 3, 12; issue 16 items 1, 2, 4, 6).

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	apns "github.com/Kwik-messenger/apns-go"
	"github.com/Kwik-messenger/apns-go/apnstest"
)

// A received status is final: a 200 whose body cannot be read was delivered, and a rejection
// whose body cannot be read is reported with what is known of it. Neither is sent again.
func TestHTTP2StatusFollowedByAStreamResetIsFinal(t *testing.T) {
	s := newH2Server(t, nil)
	s.Respond(token(1), apnstest.Response{Status: 200, ResetStream: true})
	s.Respond(token(2), apnstest.Response{Status: 400, Reason: "BadDeviceToken", ResetStream: true})
	s.Respond(token(3), apnstest.Response{Status: 410, Reason: "Unregistered", ResetStream: true})
	c := newH2Client(t, s, apns.WithMaxAttempts(5), apns.WithErrorHandler(func(error) {}))
	fc, err := c.SetupFeedbackClient("", 0)
	if err != nil {
		t.Fatal(err)
	}
	rej := recordRejections(c)
	start(t, c, 1)
	sendAll(t, c, 4)
	stop(t, c)

	if got := s.Count(); got != 2 {
		t.Errorf("server accepted %d requests; want 2 (tokens 0 and 1, once each)", got)
	}
	for _, r := range s.Requests() {
		if r.Token == token(1) {
			continue
		}
		if r.Token != token(0) {
			t.Errorf("server accepted %s", r.Token)
		}
	}
	asked := map[string]int{}
	for _, r := range s.Rejected() {
		asked[r.Token]++
	}
	for _, i := range []int{2, 3} {
		if asked[token(i)] != 1 {
			t.Errorf("token %d was asked %d times; want once", i, asked[token(i)])
		}
	}
	got := rej.snapshot()
	if len(got[token(0)])+len(got[token(1)]) != 0 {
		t.Errorf("delivered notifications reported: %+v %+v", got[token(0)], got[token(1)])
	}
	for i, want := range map[int]int{2: 400, 3: 410} {
		if rs := got[token(i)]; len(rs) != 1 || rs[0].StatusCode != want || rs[0].ID == "" {
			t.Errorf("token %d: rejections %+v; want one with status %d and its apns-id", i, rs, want)
		}
	}
	if st := c.Stats(); st.Delivered != 2 || st.Rejected != 2 || st.Replayed != 0 || st.Duplicates != 0 || st.Drops != 0 {
		t.Errorf("stats %+v; want 2 delivered, 2 rejected, no retry, duplicate or drop", st)
	}
	bad, err := fc.GetBadTokens()
	if err != nil || len(bad) != 1 || bad[0].Token != token(3) {
		t.Errorf("GetBadTokens = %+v, %v; want token 3 (410 with an unreadable body)", bad, err)
	}
}

// The same for Push: a 200 that loses its body is a 200.
func TestHTTP2PushStatusFollowedByAStreamResetIsFinal(t *testing.T) {
	s := newH2Server(t, nil)
	s.Respond(token(1), apnstest.Response{Status: 200, ResetStream: true})
	c := newH2Client(t, s, apns.WithErrorHandler(func(error) {}))
	start(t, c, 1)
	resp, err := c.Push(context.Background(), &apns.Notification{DeviceToken: token(1), Payload: []byte(`{"aps":{"alert":"x"}}`)})
	if err != nil || !resp.Sent() {
		t.Fatalf("Push = %+v, %v; want a 200", resp, err)
	}
	if got := s.Count(); got != 1 {
		t.Errorf("server accepted %d; want 1", got)
	}
}

// A 503 with Retry-After: 1 is tried again no sooner than a second after the answer.
func TestHTTP2RetryAfterOneSecondIsHonoured(t *testing.T) {
	parallel(t)
	s := newH2Server(t, nil)
	var mu sync.Mutex
	var seen []time.Time
	s.RespondFunc(func(q apnstest.Request) *apnstest.Response {
		if q.Token != token(1) {
			return nil
		}
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, time.Now())
		if len(seen) == 1 {
			return &apnstest.Response{Status: 503, Reason: "ServiceUnavailable", RetryAfter: "1"}
		}
		return nil
	})
	c := newH2Client(t, s)
	l := newLedger(c)
	start(t, c, 1)
	sendAll(t, c, 2)
	stop(t, c)
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 2 {
		t.Fatalf("token 1 arrived %d times; want 2 (503, then 200); callbacks %v", len(seen), l.snapshot())
	}
	if gap := seen[1].Sub(seen[0]); gap < time.Second {
		t.Errorf("retry came %v after the 503 with Retry-After: 1; want no sooner than 1s", gap)
	}
}

// Push to a token answered 410 hands it to the feedback client.
func TestHTTP2PushOfA410ReachesGetBadTokens(t *testing.T) {
	s := newH2Server(t, nil)
	when := time.UnixMilli(1700000000123).UTC()
	s.Respond(token(1), apnstest.Response{Status: 410, Reason: "Unregistered", Timestamp: when})
	c := newH2Client(t, s)
	fc, err := c.SetupFeedbackClient("", 0)
	if err != nil {
		t.Fatal(err)
	}
	start(t, c, 1)
	resp, err := c.Push(context.Background(), &apns.Notification{DeviceToken: token(1), Payload: []byte(`{"aps":{"alert":"x"}}`)})
	if err != nil || resp.StatusCode != 410 {
		t.Fatalf("Push = %+v, %v; want 410", resp, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitGuard)
	defer cancel()
	bad, err := fc.BadTokens(ctx)
	if err != nil || len(bad) != 1 || bad[0].Token != token(1) || !bad[0].Timestamp.Equal(when) {
		t.Errorf("BadTokens = %+v, %v; want token 1 at %v", bad, err, when)
	}
}

// 429 TooManyProviderTokenUpdates is final: another try within the 20 minutes would only
// meet it again.
func TestHTTP2TooManyProviderTokenUpdatesIsNotRetried(t *testing.T) {
	s := newH2Server(t, nil)
	s.Respond(token(1), apnstest.Response{Status: 429, Reason: "TooManyProviderTokenUpdates"})
	c := newH2Client(t, s, apns.WithMaxAttempts(3))
	rej := recordRejections(c)
	start(t, c, 1)
	sendAll(t, c, 2)
	stop(t, c)
	if n := len(s.Rejected()); n != 1 {
		t.Errorf("server answered 429 %d times; want 1 (no retry)", n)
	}
	if rs := rej.snapshot()[token(1)]; len(rs) != 1 || rs[0].StatusCode != 429 || rs[0].Reason != "TooManyProviderTokenUpdates" {
		t.Errorf("rejections %+v; want one 429 TooManyProviderTokenUpdates", rs)
	}
	if st := c.Stats(); st.Replayed != 0 {
		t.Errorf("%d retries counted; want 0", st.Replayed)
	}
}

// A provider token renewed after ExpiredProviderToken does not use up an attempt: with two
// attempts, a notification answered ExpiredProviderToken, then 503, then 200 is delivered.
func TestHTTP2TokenRenewalIsNotAnAttempt(t *testing.T) {
	parallel(t)
	key, p8 := apns.NewTestAuthKey(t)
	clientClock := &clock{now: time.Now()}
	serverClock := &clock{now: clientClock.Now()}
	s := newH2Server(t, func(s *apnstest.HTTP2Server) {
		s.Keys = map[string]*ecdsa.PublicKey{"KEY1234567": &key.PublicKey}
		s.Now = serverClock.Now
	})
	c, err := apns.CreateTokenClient(s.URL, p8, "KEY1234567", "TEAM123456", "com.example.app",
		apns.WithTLSConfig(s.ClientTLSConfig()), apns.WithClock(clientClock.Now), apns.WithMaxAttempts(2))
	if err != nil {
		t.Fatal(err)
	}
	stopAfter(t, c)
	rej := recordRejections(c)
	start(t, c, 1)
	pl := []byte(`{"aps":{"alert":"x"}}`)
	if resp, err := c.Push(context.Background(), &apns.Notification{DeviceToken: token(0), Payload: pl}); err != nil || !resp.Sent() {
		t.Fatalf("first Push = %+v, %v", resp, err)
	}
	// The token is 21 minutes old to the client (no refresh due), 61 to the server (expired).
	clientClock.Add(21 * time.Minute)
	serverClock.Add(61 * time.Minute)
	s.Respond(token(1), apnstest.Response{Status: 503, Reason: "ServiceUnavailable", RetryAfter: "0", Times: 1})
	if err := c.SendNotification(context.Background(), &apns.Notification{DeviceToken: token(1), Payload: pl}); err != nil {
		t.Fatal(err)
	}
	stop(t, c)
	if rs := rej.snapshot(); len(rs) != 0 {
		t.Errorf("rejections %+v; want none: the renewal is not one of the two attempts", rs[token(1)])
	}
	expired := 0
	for _, r := range s.Rejected() {
		if r.Reason == "ExpiredProviderToken" {
			expired++
		}
	}
	if expired != 1 || s.Count() != 2 {
		t.Errorf("%d ExpiredProviderToken answers and %d accepted; want 1 and 2", expired, s.Count())
	}
}

var _ = errors.Is

// A provider token that cannot be signed sends nothing: the notification is reported unsent,
// without a retry, and counted as neither a drop nor a duplicate (issue 10 item 12).
func TestHTTP2TokenSigningFailureSendsNothingAndCountsNoDrop(t *testing.T) {
	key, p8 := apns.NewTestAuthKey(t)
	s := newH2Server(t, func(s *apnstest.HTTP2Server) {
		s.Keys = map[string]*ecdsa.PublicKey{"KEY1234567": &key.PublicKey}
	})
	var mu sync.Mutex
	var errs []error
	c, err := apns.CreateTokenClient(s.URL, p8, "KEY1234567", "TEAM123456", "com.example.app",
		apns.WithTLSConfig(s.ClientTLSConfig()), apns.WithErrorHandler(func(err error) {
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
		}))
	if err != nil {
		t.Fatal(err)
	}
	stopAfter(t, c)
	apns.BreakProviderTokenKey(c)
	l := newLedger(c)
	start(t, c, 1)
	sendAll(t, c, 3)
	stop(t, c)
	calls := l.snapshot()
	for i := 0; i < 3; i++ {
		if cs := calls[token(i)]; len(cs) != 1 || cs[0] != uint8(apns.StatusUnknown) {
			t.Errorf("token %d: callback codes %v; want [255]", i, cs)
		}
	}
	if n := len(s.Requests()) + len(s.Rejected()); n != 0 {
		t.Errorf("server got %d requests; want none", n)
	}
	st := c.Stats()
	if st.Drops != 0 || st.Duplicates != 0 || st.Replayed != 0 || st.Unsent != 3 {
		t.Errorf("stats %+v; want 3 unsent, no drop, duplicate or retry", st)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(errs) == 0 || !strings.Contains(errs[0].Error(), "signing provider token") {
		t.Errorf("error handler got %v; want the signing failure", errs)
	}
}
