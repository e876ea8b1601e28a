package apnstest

import (
	"crypto/ecdsa"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
)

const (
	bcBundle   = "com.example.app"
	bcManage   = "/1/apps/" + bcBundle + "/channels"
	bcAll      = "/1/apps/" + bcBundle + "/all-channels"
	bcSend     = "/4/broadcasts/apps/" + bcBundle
	bcUnknown  = "dW5rbm93bi1jaGFubmVs" // base64, never issued
	bcReqID    = "3a6c1f2e-0b4d-4e8f-9a1b-2c3d4e5f6a7b"
	bcCreate0  = `{"message-storage-policy":0,"push-type":"LiveActivity"}`
	bcCreate1  = `{"message-storage-policy":1,"push-type":"LiveActivity"}`
	bcLiveJSON = `{"aps":{"event":"update","timestamp":1700000000,"content-state":{"score":1}}}`
)

// bcDo sends a broadcast-API request (no apns-topic) and checks the answer's status, JSON
// reason and apns-request-id.
func bcDo(t *testing.T, c *h2Client, method, path string, h http.Header, body string, status int, reason string) h2Result {
	t.Helper()
	if h == nil {
		h = http.Header{}
	}
	h["Apns-Topic"] = nil
	res := c.try(h2Req{method: method, path: path, header: h, body: []byte(body)})
	if res.err != nil {
		t.Fatalf("%s %s: %v", method, path, res.err)
	}
	if res.proto != 2 {
		t.Fatalf("answer over HTTP/%d; want HTTP/2", res.proto)
	}
	if id := res.header.Get("Apns-Request-Id"); !isUUID(id) {
		t.Fatalf("apns-request-id %q is not a lowercase UUID", id)
	}
	if res.status != status {
		t.Fatalf("%s %s: status %d (body %q); want %d %s", method, path, res.status, res.body, status, reason)
	}
	if status >= 300 {
		if want := `{"reason":"` + reason + `"}`; res.body != want {
			t.Fatalf("%s %s: Got:\n%s\nExpected:\n%s", method, path, res.body, want)
		}
		if ct := res.header.Get("Content-Type"); ct != "application/json" {
			t.Fatalf("content-type %q; want application/json", ct)
		}
	}
	return res
}

func bcCreate(t *testing.T, c *h2Client, policy int) string {
	t.Helper()
	body := bcCreate0
	if policy == 1 {
		body = bcCreate1
	}
	res := bcDo(t, c, http.MethodPost, bcManage, nil, body, http.StatusCreated, "")
	id := res.header.Get("Apns-Channel-Id")
	if raw, err := base64.StdEncoding.DecodeString(id); err != nil || len(raw) == 0 {
		t.Fatalf("apns-channel-id %q is not base64", id)
	}
	if res.body != "" {
		t.Fatalf("create answered with body %q; want none", res.body)
	}
	return id
}

func bcSendHeader(channel string, kv ...string) http.Header {
	h := hdr("Apns-Push-Type", "liveactivity", "Apns-Channel-Id", channel, "Apns-Expiration", "0", "Apns-Priority", "10")
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == "-" {
			h[kv[i]] = nil
		} else {
			h.Set(kv[i], kv[i+1])
		}
	}
	return h
}

func TestBroadcastManagementRoundTrip(t *testing.T) {
	s := newH2TestServer(t)
	c := newH2Client(t, s, h2Opts{cert: true})
	ch0 := bcCreate(t, c, 0)
	ch1 := bcCreate(t, c, 1)
	if ch0 == ch1 {
		t.Fatal("two creates issued the same channel ID")
	}
	res := bcDo(t, c, http.MethodGet, bcManage, hdr("Apns-Channel-Id", ch1, "Apns-Request-Id", bcReqID), "", 200, "")
	if want := `{"message-storage-policy":1,"push-type":"LiveActivity"}`; res.body != want {
		t.Errorf("read: Got:\n%s\nExpected:\n%s", res.body, want)
	}
	if got := res.header.Get("Apns-Request-Id"); got != bcReqID {
		t.Errorf("apns-request-id %q; want the request's %q", got, bcReqID)
	}
	res = bcDo(t, c, http.MethodGet, bcAll, nil, "", 200, "")
	var list struct{ Channels []string }
	if err := json.Unmarshal([]byte(res.body), &list); err != nil || !slices.Equal(list.Channels, []string{ch0, ch1}) {
		t.Errorf("list = %s; want channels [%s %s]", res.body, ch0, ch1)
	}
	res = bcDo(t, c, http.MethodDelete, bcManage, hdr("Apns-Channel-Id", ch0), "", 204, "")
	if res.body != "" {
		t.Errorf("delete answered with body %q; want none", res.body)
	}
	bcDo(t, c, http.MethodGet, bcManage, hdr("Apns-Channel-Id", ch0), "", 400, "ChannelNotRegistered")
	bcDo(t, c, http.MethodDelete, bcManage, hdr("Apns-Channel-Id", ch0), "", 400, "ChannelNotRegistered")
	if got := s.Channels(bcBundle); !slices.Equal(got, []string{ch1}) {
		t.Errorf("Channels = %q; want [%s]", got, ch1)
	}
	res = bcDo(t, c, http.MethodGet, "/1/apps/com.example.none/all-channels", nil, "", 200, "")
	if res.body != `{"channels":[]}` {
		t.Errorf("list of an app without channels = %s; want {\"channels\":[]}", res.body)
	}
	ops := []BroadcastOp{}
	for _, r := range s.BroadcastRequests() {
		ops = append(ops, r.Op)
	}
	want := []BroadcastOp{OpCreateChannel, OpCreateChannel, OpReadChannel, OpListChannels, OpDeleteChannel,
		OpReadChannel, OpDeleteChannel, OpListChannels}
	if !slices.Equal(ops, want) {
		t.Errorf("recorded %q; want %q", ops, want)
	}
}

func TestBroadcastChannelIDsAreNeverReissued(t *testing.T) {
	s := newH2TestServer(t)
	c := newH2Client(t, s, h2Opts{cert: true})
	seen := map[string]bool{}
	for round := 0; round < 2; round++ {
		for i := 0; i < 50; i++ {
			id := bcCreate(t, c, 0)
			if seen[id] {
				t.Fatalf("channel ID %s issued twice", id)
			}
			seen[id] = true
		}
		for _, id := range s.Channels(bcBundle) {
			bcDo(t, c, http.MethodDelete, bcManage, hdr("Apns-Channel-Id", id), "", 204, "")
		}
	}
	// Deleted IDs stay in the issued set, which every new ID is checked against.
	b := &s.bcast
	b.mu.Lock()
	n := len(b.issued)
	b.mu.Unlock()
	if n != 100 {
		t.Errorf("%d IDs remembered as issued; want 100", n)
	}
}

func TestBroadcastChannelLimit(t *testing.T) {
	s := newH2TestServer(t)
	c := newH2Client(t, s, h2Opts{cert: true})
	s.SetChannelLimit(3)
	for i := 0; i < 3; i++ {
		bcCreate(t, c, 0)
	}
	bcDo(t, c, http.MethodPost, bcManage, nil, bcCreate0, 400, "CannotCreateChannelConfig")
	// The limit is per app.
	bcDo(t, c, http.MethodPost, "/1/apps/com.example.other/channels", nil, bcCreate0, 201, "")
	// Deleting one makes room.
	bcDo(t, c, http.MethodDelete, bcManage, hdr("Apns-Channel-Id", s.Channels(bcBundle)[0]), "", 204, "")
	bcCreate(t, c, 1)
	bcDo(t, c, http.MethodPost, bcManage, nil, bcCreate0, 400, "CannotCreateChannelConfig")
}

func TestBroadcastDefaultChannelLimitIsApples(t *testing.T) {
	s := newH2TestServer(t)
	c := newH2Client(t, s, h2Opts{cert: true})
	// Fill the app directly up to one short of the limit, then cross it over the wire.
	b := &s.bcast
	b.mu.Lock()
	b.apps = map[string]*broadcastApp{bcBundle: {policies: map[string]int{}}}
	for i := 0; i < DefaultChannelLimit-1; i++ {
		id := b.newChannelIDLocked()
		b.apps[bcBundle].order = append(b.apps[bcBundle].order, id)
		b.apps[bcBundle].policies[id] = 0
	}
	b.mu.Unlock()
	bcCreate(t, c, 0)
	bcDo(t, c, http.MethodPost, bcManage, nil, bcCreate0, 400, "CannotCreateChannelConfig")
	if DefaultChannelLimit != 10000 {
		t.Errorf("DefaultChannelLimit = %d; want Apple's 10000", DefaultChannelLimit)
	}
}

func TestBroadcastManagementValidation(t *testing.T) {
	s := newH2TestServer(t)
	c := newH2Client(t, s, h2Opts{cert: true})
	ch := bcCreate(t, c, 0)
	s.EnableBroadcast(bcBundle, "com.example.app.push-type.liveactivity")
	for _, tc := range []struct {
		name, method, path string
		h                  http.Header
		body               string
		status             int
		reason             string
	}{
		{"PUT channels", http.MethodPut, bcManage, nil, bcCreate0, 405, "MethodNotAllowed"},
		{"POST all-channels", http.MethodPost, bcAll, nil, bcCreate0, 405, "MethodNotAllowed"},
		{"unknown path", http.MethodGet, "/1/apps/" + bcBundle + "/channel", nil, "", 404, "BadPath"},
		{"no bundle", http.MethodGet, "/1/apps//channels", nil, "", 404, "BadPath"},
		{"unknown version", http.MethodGet, "/1/other", nil, "", 404, "BadPath"},
		{"push-type suffix", http.MethodGet, "/1/apps/com.example.app.push-type.liveactivity/all-channels", nil, "", 400, "TopicDisallowed"},
		{"no capability", http.MethodGet, "/1/apps/com.example.plain/all-channels", nil, "", 400, "FeatureNotEnabled"},
		{"bad request ID", http.MethodGet, bcAll, hdr("Apns-Request-Id", "not-a-uuid"), "", 400, "BadMessageId"},
		{"repeated channel ID", http.MethodGet, bcManage, hdr("Apns-Channel-Id", ch, "Apns-Channel-Id", ch), "", 400, "DuplicateHeaders"},
		{"create without body", http.MethodPost, bcManage, nil, "", 400, "PayloadEmpty"},
		{"create with bad JSON", http.MethodPost, bcManage, nil, `{"message-storage-policy":`, 400, "BadRequestPayload"},
		{"create with a JSON array", http.MethodPost, bcManage, nil, `[0]`, 400, "BadRequestPayload"},
		{"create with an unknown attribute", http.MethodPost, bcManage, nil, `{"message-storage-policy":0,"push-type":"LiveActivity","x":1}`, 400, "BadRequestParams"},
		{"create without push type", http.MethodPost, bcManage, nil, `{"message-storage-policy":0}`, 400, "MissingPushType"},
		{"create with another push type", http.MethodPost, bcManage, nil, `{"message-storage-policy":0,"push-type":"alert"}`, 400, "InvalidPushType"},
		{"create without policy", http.MethodPost, bcManage, nil, `{"push-type":"LiveActivity"}`, 400, "BadRequestParams"},
		{"create with policy 2", http.MethodPost, bcManage, nil, `{"message-storage-policy":2,"push-type":"LiveActivity"}`, 400, "BadRequestParams"},
		{"read without channel", http.MethodGet, bcManage, nil, "", 400, "MissingChannelId"},
		{"read with bad base64", http.MethodGet, bcManage, hdr("Apns-Channel-Id", "not base64!"), "", 400, "BadChannelId"},
		{"read with a long channel ID", http.MethodGet, bcManage, hdr("Apns-Channel-Id", base64.StdEncoding.EncodeToString(make([]byte, 65))), "", 400, "BadChannelId"},
		{"read unknown", http.MethodGet, bcManage, hdr("Apns-Channel-Id", bcUnknown), "", 400, "ChannelNotRegistered"},
		{"read another app's channel", http.MethodGet, "/1/apps/com.example.app2/channels", hdr("Apns-Channel-Id", ch), "", 400, "FeatureNotEnabled"},
		{"delete without channel", http.MethodDelete, bcManage, nil, "", 400, "MissingChannelId"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bcDo(t, c, tc.method, tc.path, tc.h, tc.body, tc.status, tc.reason)
		})
	}
	if got := s.Channels(bcBundle); !slices.Equal(got, []string{ch}) {
		t.Errorf("channels after the refusals = %q; want only %s", got, ch)
	}
	s.EnableBroadcast("com.example.app2")
	bcDo(t, c, http.MethodGet, "/1/apps/com.example.app2/channels", hdr("Apns-Channel-Id", ch), "", 400, "ChannelNotRegistered")
}

func TestBroadcastSendValidationAndRecords(t *testing.T) {
	s := newH2TestServer(t)
	c := newH2Client(t, s, h2Opts{cert: true})
	ch0 := bcCreate(t, c, 0)
	ch1 := bcCreate(t, c, 1)
	big := `{"aps":{"event":"update","content-state":{"s":"` + strings.Repeat("x", 5120) + `"}}}`
	for _, tc := range []struct {
		name, method, path string
		h                  http.Header
		body               string
		status             int
		reason             string
	}{
		{"GET", http.MethodGet, bcSend, bcSendHeader(ch0), bcLiveJSON, 405, "MethodNotAllowed"},
		{"no bundle", http.MethodPost, "/4/broadcasts/apps/", bcSendHeader(ch0), bcLiveJSON, 404, "BadPath"},
		{"extra segment", http.MethodPost, bcSend + "/x", bcSendHeader(ch0), bcLiveJSON, 404, "BadPath"},
		{"device path prefix", http.MethodPost, "/4/broadcast/apps/" + bcBundle, bcSendHeader(ch0), bcLiveJSON, 404, "BadPath"},
		{"push-type suffix", http.MethodPost, bcSend + ".push-type.liveactivity", bcSendHeader(ch0), bcLiveJSON, 400, "TopicDisallowed"},
		{"no push type", http.MethodPost, bcSend, bcSendHeader(ch0, "Apns-Push-Type", "-"), bcLiveJSON, 400, "MissingPushType"},
		{"alert push type", http.MethodPost, bcSend, bcSendHeader(ch0, "Apns-Push-Type", "alert"), bcLiveJSON, 400, "InvalidPushType"},
		{"no channel", http.MethodPost, bcSend, bcSendHeader(ch0, "Apns-Channel-Id", "-"), bcLiveJSON, 400, "MissingChannelId"},
		{"bad channel", http.MethodPost, bcSend, bcSendHeader("%%%"), bcLiveJSON, 400, "BadChannelId"},
		{"unknown channel", http.MethodPost, bcSend, bcSendHeader(bcUnknown), bcLiveJSON, 400, "ChannelNotRegistered"},
		{"priority 1", http.MethodPost, bcSend, bcSendHeader(ch0, "Apns-Priority", "1"), bcLiveJSON, 400, "BadPriority"},
		{"no expiration", http.MethodPost, bcSend, bcSendHeader(ch1, "Apns-Expiration", "-"), bcLiveJSON, 400, "BadExpirationDate"},
		{"bad expiration", http.MethodPost, bcSend, bcSendHeader(ch1, "Apns-Expiration", "soon"), bcLiveJSON, 400, "BadExpirationDate"},
		{"policy 0 with expiration", http.MethodPost, bcSend, bcSendHeader(ch0, "Apns-Expiration", "1900000000"), bcLiveJSON, 400, "BadExpirationDate"},
		{"bad request ID", http.MethodPost, bcSend, bcSendHeader(ch0, "Apns-Request-Id", "ABC"), bcLiveJSON, 400, "BadMessageId"},
		{"bad apns-id", http.MethodPost, bcSend, bcSendHeader(ch0, "Apns-Id", "ABC"), bcLiveJSON, 400, "BadMessageId"},
		{"empty body", http.MethodPost, bcSend, bcSendHeader(ch0), "", 400, "PayloadEmpty"},
		{"5121 bytes", http.MethodPost, bcSend, bcSendHeader(ch0), big[:5121], 413, "PayloadTooLarge"},
		{"5120 bytes", http.MethodPost, bcSend, bcSendHeader(ch0), big[:5120], 200, ""},
		{"policy 0, expiration 0, priority 5", http.MethodPost, bcSend, bcSendHeader(ch0, "Apns-Priority", "5", "Apns-Request-Id", bcReqID), bcLiveJSON, 200, ""},
		{"policy 1 with expiration, LiveActivity", http.MethodPost, bcSend, bcSendHeader(ch1, "Apns-Expiration", "1900000000", "Apns-Push-Type", "LiveActivity", "Apns-Priority", "-"), bcLiveJSON, 200, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := bcDo(t, c, tc.method, tc.path, tc.h, tc.body, tc.status, tc.reason)
			if tc.status == 200 && res.body != "" {
				t.Errorf("body %q; want none", res.body)
			}
		})
	}
	got0, got1 := s.Broadcasts(ch0), s.Broadcasts(ch1)
	if len(got0) != 2 || len(got1) != 1 {
		t.Fatalf("recorded %d and %d broadcasts; want 2 and 1", len(got0), len(got1))
	}
	r := got0[1]
	want := BroadcastRequest{Op: OpBroadcast, Method: "POST", Path: bcSend, BundleID: bcBundle, ChannelID: ch0,
		RequestID: bcReqID, PushType: "liveactivity", Priority: 5, Expiration: "0", StoragePolicy: 0,
		Payload: []byte(bcLiveJSON), Conn: 1, Status: 200}
	if !equalBroadcast(r, want) {
		t.Errorf("Got:\n%+v\nExpected:\n%+v", r, want)
	}
	if r := got1[0]; r.Priority != 10 || r.Expiration != "1900000000" || r.StoragePolicy != 1 {
		t.Errorf("broadcast on the policy-1 channel = %+v; want priority 10 (default), expiration 1900000000, policy 1", r)
	}
	if n := len(s.Requests()) + len(s.Rejected()); n != 0 {
		t.Errorf("%d device-push records; want none", n)
	}
}

func equalBroadcast(a, b BroadcastRequest) bool { return reflect.DeepEqual(a, b) }

func TestBroadcastTokenAuthentication(t *testing.T) {
	key := newP256(t)
	s, clk := tokenServer(t, map[string]*ecdsa.PublicKey{h2Kid: &key.PublicKey})
	c := newH2Client(t, s, h2Opts{})
	// No token.
	bcDo(t, c, http.MethodPost, bcManage, nil, bcCreate0, 403, "MissingProviderToken")
	c.jwt = signES256(t, key, "ES256", h2Kid, h2Team, clk.Now().Unix())
	ch := bcCreate(t, c, 0) // no apns-topic needed
	bcDo(t, c, http.MethodPost, bcSend, bcSendHeader(ch), bcLiveJSON, 200, "")
	if r := s.Broadcasts(ch); len(r) != 1 || r[0].KeyID != h2Kid {
		t.Errorf("broadcasts = %+v; want one with key ID %s", r, h2Kid)
	}
	c.jwt = signES256(t, key, "ES256", h2Kid, h2Team, clk.Now().Add(-2*tokenMaxAge).Unix())
	bcDo(t, c, http.MethodGet, bcAll, nil, "", 403, "ExpiredProviderToken")
}

func TestBroadcastRespondFuncAndObserve(t *testing.T) {
	s := newH2TestServer(t)
	c := newH2Client(t, s, h2Opts{cert: true})
	var seen atomic.Int64
	s.ObserveBroadcast(func(r BroadcastRequest) { seen.Add(1) })
	s.RespondBroadcastFunc(func(r BroadcastRequest) *Response {
		if r.Op == OpCreateChannel {
			return &Response{Status: 503, RetryAfter: "7"}
		}
		return nil
	})
	res := bcDo(t, c, http.MethodPost, bcManage, nil, bcCreate0, 503, "ServiceUnavailable")
	if res.header.Get("Retry-After") != "7" {
		t.Errorf("Retry-After %q; want 7", res.header.Get("Retry-After"))
	}
	if len(s.Channels(bcBundle)) != 0 {
		t.Error("a scripted refusal created a channel")
	}
	bcDo(t, c, http.MethodGet, bcAll, nil, "", 200, "")
	s.RespondBroadcastFunc(nil)
	bcCreate(t, c, 0)
	if n := seen.Load(); n != 3 {
		t.Errorf("observed %d requests; want 3", n)
	}
}
