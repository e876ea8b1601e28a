package apnstest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	h2Token  = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	h2Token2 = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
	h2Topic  = "com.example.app"
	h2Team   = "TEAM123456"
	h2Kid    = "KEY1234567"
	h2Kid2   = "KEY7654321"
	h2ID     = "6b1f2a0c-3d4e-4f50-8a6b-7c8d9e0f1a2b"
)

var h2Payload = []byte(`{"aps":{"alert":"hi"}}`)

func newH2TestServer(t *testing.T) *HTTP2Server {
	t.Helper()
	s := NewHTTP2Server()
	t.Cleanup(s.Close)
	return s
}

// h2Client is an HTTP/2 client for an HTTP2Server, built only from net/http.
type h2Client struct {
	t   *testing.T
	s   *HTTP2Server
	c   *http.Client
	tr  *http.Transport
	jwt string // sent as "authorization: bearer <jwt>" unless the request sets its own
}

type h2Opts struct {
	cert  bool // present the test client certificate
	http1 bool // do not enable HTTP/2
}

func newH2Client(t *testing.T, s *HTTP2Server, o h2Opts) *h2Client {
	t.Helper()
	conf := s.ClientTLSConfig()
	if o.cert {
		certPEM, keyPEM := ClientCertPEM()
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		conf.Certificates = []tls.Certificate{pair}
	}
	tr := &http.Transport{TLSClientConfig: conf, ForceAttemptHTTP2: true}
	if o.http1 {
		conf.NextProtos = nil
		tr.ForceAttemptHTTP2 = false
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &h2Client{t: t, s: s, tr: tr, c: &http.Client{Transport: tr, Timeout: guard}}
}

type h2Result struct {
	status int
	proto  int
	header http.Header
	body   string
	err    error
}

// h2Req describes a request; zero fields get defaults: POST, /3/device/h2Token, the
// client's token (if any), apns-topic h2Topic, and h2Payload.
type h2Req struct {
	method string
	path   string
	header http.Header // sent as is; a nil value for a key suppresses its default
	body   []byte      // nil: h2Payload; use []byte{} for no body
}

func (c *h2Client) try(r h2Req) h2Result {
	method, path, body := r.method, r.path, r.body
	if method == "" {
		method = http.MethodPost
	}
	if path == "" {
		path = "/3/device/" + h2Token
	}
	if body == nil {
		body = h2Payload
	}
	var rd io.Reader
	if len(body) > 0 {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, c.s.URL+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Apns-Topic", h2Topic)
	if c.jwt != "" {
		req.Header.Set("Authorization", "bearer "+c.jwt)
	}
	for k, v := range r.header {
		if v == nil {
			req.Header.Del(k)
		} else {
			req.Header[http.CanonicalHeaderKey(k)] = v
		}
	}
	resp, err := c.c.Do(req)
	if err != nil {
		return h2Result{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return h2Result{status: resp.StatusCode, proto: resp.ProtoMajor, header: resp.Header, body: string(b), err: err}
}

// do sends r and fails the test unless it got a response over HTTP/2.
func (c *h2Client) do(r h2Req) h2Result {
	c.t.Helper()
	res := c.try(r)
	if res.err != nil {
		c.t.Fatalf("request: %v", res.err)
	}
	if res.proto != 2 {
		c.t.Fatalf("response over HTTP/%d; want HTTP/2", res.proto)
	}
	if id := res.header.Get("Apns-Id"); !isUUID(id) {
		c.t.Fatalf("apns-id %q is not a lowercase UUID", id)
	}
	return res
}

// expect sends r and checks the status and, for errors, the exact JSON body.
func (c *h2Client) expect(r h2Req, status int, reason string) h2Result {
	c.t.Helper()
	res := c.do(r)
	checkAnswer(c.t, res, status, reason)
	return res
}

func checkAnswer(t *testing.T, res h2Result, status int, reason string) {
	t.Helper()
	if res.status != status {
		t.Fatalf("status %d (body %q); want %d %s", res.status, res.body, status, reason)
	}
	if status == http.StatusOK {
		if res.body != "" {
			t.Fatalf("body %q; want none", res.body)
		}
		return
	}
	if ct := res.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("content-type %q; want application/json", ct)
	}
	if want := `{"reason":"` + reason + `"}`; res.body != want && status != http.StatusGone {
		t.Fatalf("Got:\n%s\nExpected:\n%s", res.body, want)
	}
}

func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}

// signES256 makes a provider token the way a client must: base64url JSON header and claims,
// ECDSA P-256 over SHA-256, the signature as the 64 bytes r || s.
func signES256(t *testing.T, key *ecdsa.PrivateKey, alg, kid, iss string, iat int64) string {
	t.Helper()
	h, _ := json.Marshal(map[string]any{"alg": alg, "kid": kid})
	c, _ := json.Marshal(map[string]any{"iss": iss, "iat": iat})
	input := b64url(h) + "." + b64url(c)
	d := sha256.Sum256([]byte(input))
	r, s, err := ecdsa.Sign(rand.Reader, key, d[:])
	if err != nil {
		t.Fatal(err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return input + "." + b64url(sig)
}

func b64url(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func newP256(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// fakeClock is an injectable HTTP2Server.Now.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestHTTP2AnAcceptedRequestIsRecordedWithAllFields(t *testing.T) {
	s := newH2TestServer(t)
	c := newH2Client(t, s, h2Opts{cert: true})
	res := c.expect(h2Req{
		path: "/3/device/" + strings.ToUpper(h2Token),
		header: hdr("apns-id", h2ID, "apns-push-type", "alert", "apns-priority", "5",
			"apns-expiration", "1700000000", "apns-collapse-id", "c1"),
	}, 200, "")
	if got := res.header.Get("Apns-Id"); got != h2ID {
		t.Fatalf("apns-id %q; want the request's %q", got, h2ID)
	}
	want := []Request{{Token: strings.ToUpper(h2Token), ID: h2ID, Topic: h2Topic, PushType: "alert",
		CollapseID: "c1", Priority: 5, Expiration: "1700000000", Payload: h2Payload, Conn: 1}}
	if got := s.Requests(); !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v; want %+v", got, want)
	}
	if s.Count() != 1 || len(s.Rejected()) != 0 {
		t.Fatalf("Count() = %d, %d rejected; want 1, 0", s.Count(), len(s.Rejected()))
	}
}

func TestHTTP2ARequestWithoutOptionalHeadersGetsDefaultsAndAGeneratedID(t *testing.T) {
	s := newH2TestServer(t)
	c := newH2Client(t, s, h2Opts{cert: true})
	a := c.expect(h2Req{header: http.Header{"Apns-Topic": nil}}, 200, "")
	b := c.expect(h2Req{header: http.Header{"Apns-Topic": nil}}, 200, "")
	if a.header.Get("Apns-Id") == b.header.Get("Apns-Id") {
		t.Fatalf("two generated apns-ids are equal: %s", a.header.Get("Apns-Id"))
	}
	want := Request{Token: h2Token, Priority: 10, Payload: h2Payload, Conn: 1}
	for _, got := range s.Requests() {
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("got %+v; want %+v", got, want)
		}
	}
}

func TestHTTP2ValidationAnswersLikeAPNs(t *testing.T) {
	s := newH2TestServer(t)
	c := newH2Client(t, s, h2Opts{cert: true})
	big := func(n int) []byte { return bytes.Repeat([]byte("x"), n) }
	tests := []struct {
		name   string
		req    h2Req
		status int
		reason string
	}{
		{"a GET is not allowed", h2Req{method: "GET", body: []byte{}}, 405, "MethodNotAllowed"},
		{"the method is checked before the path", h2Req{method: "PUT", path: "/x"}, 405, "MethodNotAllowed"},
		{"a path outside /3/device is bad", h2Req{path: "/3/devices/" + h2Token}, 404, "BadPath"},
		{"a path with a deeper segment is bad", h2Req{path: "/3/device/" + h2Token + "/x"}, 404, "BadPath"},
		{"a path with a query is bad", h2Req{path: "/3/device/" + h2Token + "?x=1"}, 404, "BadPath"},
		{"/3/device without a token is bad", h2Req{path: "/3/device"}, 404, "BadPath"},
		{"an empty token is missing", h2Req{path: "/3/device/"}, 400, "MissingDeviceToken"},
		{"an odd-length token is bad", h2Req{path: "/3/device/abc"}, 400, "BadDeviceToken"},
		{"a non-hex token is bad", h2Req{path: "/3/device/zz"}, 400, "BadDeviceToken"},
		{"the token is checked before duplicates", h2Req{path: "/3/device/zz", header: hdr("apns-topic", "a", "apns-topic", "b")}, 400, "BadDeviceToken"},
		{"a repeated apns-topic", h2Req{header: hdr("apns-topic", "a", "apns-topic", "b")}, 400, "DuplicateHeaders"},
		{"a repeated apns-id", h2Req{header: hdr("apns-id", h2ID, "apns-id", h2ID)}, 400, "DuplicateHeaders"},
		{"a repeated authorization", h2Req{header: hdr("authorization", "bearer a", "authorization", "bearer b")}, 400, "DuplicateHeaders"},
		{"duplicates are checked before values", h2Req{header: hdr("apns-priority", "7", "apns-priority", "7")}, 400, "DuplicateHeaders"},
		{"an uppercase apns-id", h2Req{header: hdr("apns-id", strings.ToUpper(h2ID))}, 400, "BadMessageId"},
		{"an apns-id that is no UUID", h2Req{header: hdr("apns-id", "42")}, 400, "BadMessageId"},
		{"priority 7", h2Req{header: hdr("apns-priority", "7")}, 400, "BadPriority"},
		{"priority 1", h2Req{header: hdr("apns-priority", "1")}, 200, ""},
		{"an expiration that is no number", h2Req{header: hdr("apns-expiration", "tomorrow")}, 400, "BadExpirationDate"},
		{"a negative expiration", h2Req{header: hdr("apns-expiration", "-1")}, 400, "BadExpirationDate"},
		{"expiration 0", h2Req{header: hdr("apns-expiration", "0")}, 200, ""},
		{"a 65-byte collapse id", h2Req{header: hdr("apns-collapse-id", string(big(65)))}, 400, "BadCollapseId"},
		{"a 64-byte collapse id", h2Req{header: hdr("apns-collapse-id", string(big(64)))}, 200, ""},
		{"an unknown push type", h2Req{header: hdr("apns-push-type", "banner")}, 400, "InvalidPushType"},
		{"push types are case-sensitive", h2Req{header: hdr("apns-push-type", "Alert")}, 400, "InvalidPushType"},
		{"background with priority 10", h2Req{header: hdr("apns-push-type", "background", "apns-priority", "10")}, 400, "BadPriority"},
		{"background with the default priority", h2Req{header: hdr("apns-push-type", "background")}, 400, "BadPriority"},
		{"background with priority 5", h2Req{header: hdr("apns-push-type", "background", "apns-priority", "5")}, 200, ""},
		{"liveactivity", h2Req{header: hdr("apns-push-type", "liveactivity")}, 200, ""},
		{"headers are checked before the body", h2Req{header: hdr("apns-priority", "7"), body: []byte{}}, 400, "BadPriority"},
		{"an empty body", h2Req{body: []byte{}}, 400, "PayloadEmpty"},
		{"4096 bytes", h2Req{body: big(4096)}, 200, ""},
		{"4097 bytes", h2Req{body: big(4097)}, 413, "PayloadTooLarge"},
		{"a huge body", h2Req{body: big(1 << 20)}, 413, "PayloadTooLarge"},
		{"5120 bytes of alert", h2Req{header: hdr("apns-push-type", "alert"), body: big(5120)}, 413, "PayloadTooLarge"},
		{"5120 bytes of voip", h2Req{header: hdr("apns-push-type", "voip"), body: big(5120)}, 200, ""},
		{"5121 bytes of voip", h2Req{header: hdr("apns-push-type", "voip"), body: big(5121)}, 413, "PayloadTooLarge"},
		{"a body that is not JSON", h2Req{body: []byte("not json")}, 200, ""},
	}
	var want []RejectedRequest
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c.t = t
			c.expect(tt.req, tt.status, tt.reason)
		})
		if tt.status != 200 {
			want = append(want, RejectedRequest{Status: tt.status, Reason: tt.reason})
		}
	}
	got := s.Rejected()
	if len(got) != len(want) {
		t.Fatalf("%d rejected; want %d", len(got), len(want))
	}
	for i := range got {
		if got[i].Status != want[i].Status || got[i].Reason != want[i].Reason {
			t.Fatalf("Rejected()[%d] = %d %s; want %d %s", i, got[i].Status, got[i].Reason, want[i].Status, want[i].Reason)
		}
	}
	if n := len(s.Requests()); n != len(tests)-len(want) {
		t.Fatalf("%d accepted; want %d", n, len(tests)-len(want))
	}
}

// tokenServer starts a server with token authentication and a fake clock.
func tokenServer(t *testing.T, keys map[string]*ecdsa.PublicKey) (*HTTP2Server, *fakeClock) {
	t.Helper()
	clock := &fakeClock{t: time.Unix(1700000000, 0)}
	s := NewUnstartedHTTP2Server()
	s.Keys = keys
	s.TeamID = h2Team
	s.Now = clock.Now
	s.Start()
	t.Cleanup(s.Close)
	return s, clock
}

func TestHTTP2TokenAuthentication(t *testing.T) {
	k1, k2, other := newP256(t), newP256(t), newP256(t)
	s, clock := tokenServer(t, map[string]*ecdsa.PublicKey{h2Kid: &k1.PublicKey, h2Kid2: &k2.PublicKey})
	now := clock.Now().Unix()
	good := signES256(t, k1, "ES256", h2Kid, h2Team, now)
	parts := strings.Split(good, ".")
	claims := b64url([]byte(`{"iss":"` + h2Team + `","iat":` + "1700000001" + `}`))
	d := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	der, err := ecdsa.SignASN1(rand.Reader, k1, d[:])
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		authz  []string // nil: no authorization header
		topic  []string // nil: no apns-topic
		status int
		reason string
		kid    string
	}{
		{"a valid token", []string{"bearer " + good}, []string{h2Topic}, 200, "", h2Kid},
		{"the scheme is case-insensitive", []string{"Bearer " + good}, []string{h2Topic}, 200, "", h2Kid},
		{"a token signed by the second key", []string{"bearer " + signES256(t, k2, "ES256", h2Kid2, h2Team, now)}, []string{h2Topic}, 200, "", h2Kid2},
		{"a token issued 59 minutes ago", []string{"bearer " + signES256(t, k1, "ES256", h2Kid, h2Team, now-59*60)}, []string{h2Topic}, 200, "", h2Kid},
		{"a token issued 30 seconds ahead", []string{"bearer " + signES256(t, k1, "ES256", h2Kid, h2Team, now+30)}, []string{h2Topic}, 200, "", h2Kid},
		{"no authorization", nil, []string{h2Topic}, 403, "MissingProviderToken", ""},
		{"an empty authorization", []string{""}, []string{h2Topic}, 403, "MissingProviderToken", ""},
		{"another scheme", []string{"basic " + good}, []string{h2Topic}, 403, "InvalidProviderToken", ""},
		{"garbage", []string{"bearer abc"}, []string{h2Topic}, 403, "InvalidProviderToken", ""},
		{"tampered claims", []string{"bearer " + parts[0] + "." + claims + "." + parts[2]}, []string{h2Topic}, 403, "InvalidProviderToken", h2Kid},
		{"an ASN.1 signature", []string{"bearer " + parts[0] + "." + parts[1] + "." + b64url(der)}, []string{h2Topic}, 403, "InvalidProviderToken", h2Kid},
		{"an unsigned token", []string{"bearer " + parts[0] + "." + parts[1] + "."}, []string{h2Topic}, 403, "InvalidProviderToken", ""},
		{"alg HS256", []string{"bearer " + signES256(t, k1, "HS256", h2Kid, h2Team, now)}, []string{h2Topic}, 403, "InvalidProviderToken", h2Kid},
		{"an unknown key ID", []string{"bearer " + signES256(t, k1, "ES256", "NOSUCHKEY0", h2Team, now)}, []string{h2Topic}, 403, "InvalidProviderToken", "NOSUCHKEY0"},
		{"the wrong key", []string{"bearer " + signES256(t, other, "ES256", h2Kid, h2Team, now)}, []string{h2Topic}, 403, "InvalidProviderToken", h2Kid},
		{"another team", []string{"bearer " + signES256(t, k1, "ES256", h2Kid, "OTHERTEAM0", now)}, []string{h2Topic}, 403, "InvalidProviderToken", h2Kid},
		{"a token issued 61 minutes ago", []string{"bearer " + signES256(t, k1, "ES256", h2Kid, h2Team, now-61*60)}, []string{h2Topic}, 403, "ExpiredProviderToken", h2Kid},
		{"a token issued 2 minutes ahead", []string{"bearer " + signES256(t, k1, "ES256", h2Kid, h2Team, now+120)}, []string{h2Topic}, 403, "InvalidProviderToken", h2Kid},
		{"a valid token without a topic", []string{"bearer " + good}, nil, 400, "MissingTopic", h2Kid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newH2Client(t, s, h2Opts{}) // a connection each, so token changes do not count
			before := len(s.Requests()) + len(s.Rejected())
			c.expect(h2Req{header: http.Header{"Authorization": tt.authz, "Apns-Topic": tt.topic}}, tt.status, tt.reason)
			var got Request
			if tt.status == 200 {
				got = s.Requests()[len(s.Requests())-1]
			} else {
				got = s.Rejected()[len(s.Rejected())-1].Request
			}
			if after := len(s.Requests()) + len(s.Rejected()); after != before+1 {
				t.Fatalf("%d requests recorded; want 1", after-before)
			}
			if got.KeyID != tt.kid {
				t.Fatalf("KeyID %q; want %q", got.KeyID, tt.kid)
			}
		})
	}
}

func TestHTTP2ATokenExpiresByTheInjectedClock(t *testing.T) {
	k := newP256(t)
	s, clock := tokenServer(t, map[string]*ecdsa.PublicKey{h2Kid: &k.PublicKey})
	c := newH2Client(t, s, h2Opts{})
	c.jwt = signES256(t, k, "ES256", h2Kid, h2Team, clock.Now().Unix())
	c.expect(h2Req{}, 200, "")
	clock.Add(time.Hour)
	c.expect(h2Req{}, 200, "") // exactly one hour old is still valid
	clock.Add(time.Second)
	c.expect(h2Req{}, 403, "ExpiredProviderToken")
}

func TestHTTP2ChangingTheTokenWithin20MinutesIsRefused(t *testing.T) {
	k := newP256(t)
	s, clock := tokenServer(t, map[string]*ecdsa.PublicKey{h2Kid: &k.PublicKey})
	now := clock.Now().Unix()
	t1 := signES256(t, k, "ES256", h2Kid, h2Team, now)
	t2 := signES256(t, k, "ES256", h2Kid, h2Team, now+1)
	c := newH2Client(t, s, h2Opts{})
	c.jwt = t1
	c.expect(h2Req{}, 200, "")
	c.jwt = t2
	c.expect(h2Req{}, 429, "TooManyProviderTokenUpdates")
	clock.Add(20*time.Minute - time.Second)
	c.expect(h2Req{}, 429, "TooManyProviderTokenUpdates")
	clock.Add(time.Second)
	c.expect(h2Req{}, 200, "")
	c.jwt = t1 // back to the old token: a change again
	c.expect(h2Req{}, 429, "TooManyProviderTokenUpdates")

	fresh := newH2Client(t, s, h2Opts{}) // the rule is per connection
	fresh.jwt = t1
	fresh.expect(h2Req{}, 200, "")
	conns := map[int]int{}
	for _, r := range s.Requests() {
		conns[r.Conn]++
	}
	if !reflect.DeepEqual(conns, map[int]int{1: 2, 2: 1}) {
		t.Fatalf("accepted per connection: %v; want map[1:2 2:1]", conns)
	}
}

func TestHTTP2ACertificateTakesPrecedenceOverTokens(t *testing.T) {
	k := newP256(t)
	s, _ := tokenServer(t, map[string]*ecdsa.PublicKey{h2Kid: &k.PublicKey})
	c := newH2Client(t, s, h2Opts{cert: true})
	c.expect(h2Req{header: http.Header{"Apns-Topic": nil}}, 200, "")
	c.expect(h2Req{header: hdr("authorization", "bearer garbage")}, 200, "")
	for _, r := range s.Requests() {
		if r.KeyID != "" {
			t.Fatalf("KeyID %q; want none with certificate authentication", r.KeyID)
		}
	}
}

func TestHTTP2WithoutKeysARequestWithoutACertificateIsRefused(t *testing.T) {
	s := newH2TestServer(t)
	c := newH2Client(t, s, h2Opts{})
	c.jwt = "a.b.c"
	c.expect(h2Req{}, 403, "MissingProviderToken")
}

func TestHTTP2RequireClientCert(t *testing.T) {
	s := NewUnstartedHTTP2Server()
	s.RequireClientCert = true
	s.Start()
	defer s.Close()
	if res := newH2Client(t, s, h2Opts{}).try(h2Req{}); res.err == nil {
		t.Fatalf("without a certificate: status %d; want an error", res.status)
	}
	newH2Client(t, s, h2Opts{cert: true}).expect(h2Req{}, 200, "")
	if s.Count() != 1 || s.Conns() != 2 {
		t.Fatalf("Count() = %d, Conns() = %d; want 1, 2", s.Count(), s.Conns())
	}
}

func TestHTTP2RespondScriptsAnswers(t *testing.T) {
	clock := &fakeClock{t: time.UnixMilli(1700000000456)}
	s := NewUnstartedHTTP2Server()
	s.Now = clock.Now
	s.Start()
	defer s.Close()
	c := newH2Client(t, s, h2Opts{cert: true})
	p1, p2 := "/3/device/"+h2Token, "/3/device/"+h2Token2

	s.Respond(strings.ToUpper(h2Token), Response{Status: 410, Reason: "Unregistered", Timestamp: time.UnixMilli(1700000000123)})
	res := c.expect(h2Req{path: p1}, 410, "Unregistered")
	if want := `{"reason":"Unregistered","timestamp":1700000000123}`; res.body != want {
		t.Fatalf("Got:\n%s\nExpected:\n%s", res.body, want)
	}
	s.Respond(h2Token, Response{})
	s.Respond(h2Token, Response{Status: 410}) // default reason, timestamp from Now
	res = c.expect(h2Req{path: p1}, 410, "")
	if want := `{"reason":"Unregistered","timestamp":1700000000456}`; res.body != want {
		t.Fatalf("Got:\n%s\nExpected:\n%s", res.body, want)
	}
	s.Respond(h2Token, Response{}) // removed
	c.expect(h2Req{path: p1}, 200, "")

	s.Respond(h2Token2, Response{Status: 429, RetryAfter: "7", Times: 2})
	s.Respond(h2Token2, Response{Status: 503, Reason: "Shutdown", Times: 1})
	for i := 0; i < 2; i++ {
		res := c.expect(h2Req{path: p2}, 429, "TooManyRequests")
		if got := res.header.Get("Retry-After"); got != "7" {
			t.Fatalf("Retry-After %q; want 7", got)
		}
	}
	res = c.expect(h2Req{path: p2}, 503, "Shutdown")
	if got := res.header.Get("Retry-After"); got != "" {
		t.Fatalf("Retry-After %q; want none", got)
	}
	c.expect(h2Req{path: p2}, 200, "")

	s.Respond(h2Token2, Response{Status: 410})
	c.expect(h2Req{path: p2, body: []byte{}}, 400, "PayloadEmpty") // protocol checks come first

	got := s.Rejected()
	var summary []string
	for _, r := range got {
		summary = append(summary, r.Reason)
	}
	want := []string{"Unregistered", "Unregistered", "TooManyRequests", "TooManyRequests", "Shutdown", "PayloadEmpty"}
	if !reflect.DeepEqual(summary, want) {
		t.Fatalf("Rejected reasons %v; want %v", summary, want)
	}
	if got[0].Token != strings.ToLower(h2Token) || got[0].Status != 410 || !bytes.Equal(got[0].Payload, h2Payload) {
		t.Fatalf("Rejected()[0] = %+v", got[0])
	}
}

func TestHTTP2RespondFunc(t *testing.T) {
	s := newH2TestServer(t)
	c := newH2Client(t, s, h2Opts{cert: true})
	var mu sync.Mutex
	var seen []Request
	s.RespondFunc(func(r Request) *Response {
		mu.Lock()
		seen = append(seen, r)
		mu.Unlock()
		if r.Priority == 5 {
			return &Response{Status: 500, Reason: "InternalServerError"}
		}
		return nil
	})
	c.expect(h2Req{header: hdr("apns-priority", "5")}, 500, "InternalServerError")
	c.expect(h2Req{}, 200, "")
	s.Respond(h2Token, Response{Status: 410, Times: 1}) // rules come before the function
	c.expect(h2Req{header: hdr("apns-priority", "5")}, 410, "")
	s.RespondFunc(nil)
	c.expect(h2Req{header: hdr("apns-priority", "5")}, 200, "")
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 2 || !bytes.Equal(seen[0].Payload, h2Payload) || seen[0].Token != h2Token {
		t.Fatalf("RespondFunc saw %+v; want the first two requests", seen)
	}
}

func TestHTTP2DelayPostponesTheAnswer(t *testing.T) {
	s := newH2TestServer(t)
	c := newH2Client(t, s, h2Opts{cert: true})
	const d = 50 * time.Millisecond
	s.Respond(h2Token, Response{Delay: d, Times: 1})
	s.Respond(h2Token, Response{Status: 503, Delay: d, Times: 1})
	for _, status := range []int{200, 503} {
		start := time.Now()
		c.expect(h2Req{}, status, "ServiceUnavailable")
		if el := time.Since(start); el < d {
			t.Fatalf("answered %d after %v; want at least %v", status, el, d)
		}
	}
	if s.Count() != 1 {
		t.Fatalf("Count() = %d; want 1", s.Count())
	}
}

func TestHTTP2GoAwayMovesTheClientToANewConnection(t *testing.T) {
	s := newH2TestServer(t)
	c := newH2Client(t, s, h2Opts{cert: true})
	arrived, release := make(chan struct{}), make(chan struct{})
	s.RespondFunc(func(r Request) *Response {
		if r.Token == h2Token2 {
			close(arrived)
			<-release
		}
		return nil
	})
	c.expect(h2Req{}, 200, "")
	slow := make(chan h2Result, 1)
	go func() { slow <- c.try(h2Req{path: "/3/device/" + h2Token2}) }()
	select {
	case <-arrived:
	case <-time.After(guard):
		t.Fatal("the slow request never arrived")
	}

	goneAway := make(chan struct{})
	go func() {
		s.GoAway()
		close(goneAway)
	}()
	// Until the client has read the GOAWAY it may still use the old connection; after it,
	// it must open a new one.
	deadline := time.Now().Add(guard)
	for s.Conns() < 2 {
		if time.Now().After(deadline) {
			t.Fatal("the client never opened a second connection")
		}
		c.expect(h2Req{}, 200, "")
	}
	c.expect(h2Req{}, 200, "")
	select {
	case <-goneAway:
		t.Fatal("GoAway returned while a request was in flight")
	default:
	}

	close(release)
	res := <-slow
	if res.err != nil {
		t.Fatalf("the in-flight request failed: %v", res.err)
	}
	checkAnswer(t, res, 200, "")
	select {
	case <-goneAway:
	case <-time.After(guard):
		t.Fatal("GoAway did not return")
	}
	reqs := s.Requests()
	var slowConn int
	for _, r := range reqs {
		if r.Token == h2Token2 {
			slowConn = r.Conn
		}
	}
	if last := reqs[len(reqs)-1].Conn; slowConn != 1 || last != 2 || s.Conns() != 2 {
		t.Fatalf("in-flight request on connection %d, last on %d, Conns() = %d; want 1, 2, 2", slowConn, last, s.Conns())
	}
	c.expect(h2Req{}, 200, "") // the new connection is unaffected
}

// perConn measures, per connection, how many requests are between RespondFunc and Observe
// at once.
type perConn struct {
	mu       sync.Mutex
	cur      map[int]int
	peak     map[int]int
	arrivals int
	full     chan struct{} // closed when barrier requests have arrived
	barrier  int
}

func newPerConn(barrier int) *perConn {
	return &perConn{cur: map[int]int{}, peak: map[int]int{}, full: make(chan struct{}), barrier: barrier}
}

// enter holds the first barrier requests until all of them have arrived.
func (pc *perConn) enter(r Request) *Response {
	pc.mu.Lock()
	pc.cur[r.Conn]++
	pc.peak[r.Conn] = max(pc.peak[r.Conn], pc.cur[r.Conn])
	pc.arrivals++
	wait := pc.arrivals <= pc.barrier
	if pc.arrivals == pc.barrier {
		close(pc.full)
	}
	pc.mu.Unlock()
	if wait {
		select {
		case <-pc.full:
		case <-time.After(guard):
		}
	}
	return nil
}

func (pc *perConn) leave(r Request) {
	pc.mu.Lock()
	pc.cur[r.Conn]--
	pc.mu.Unlock()
}

func TestHTTP2TheStreamLimitHoldsPerConnection(t *testing.T) {
	// The barrier holds the first 3 requests until all 3 have arrived, which a limit of one
	// stream per connection allows only on 3 connections. (A client with
	// StrictMaxConcurrentRequests would wait for a free stream instead, but net/http's can
	// stall for good when more requests wait than the limit: golang/go#70809.)
	pc := newPerConn(3)
	s := NewUnstartedHTTP2Server()
	s.MaxConcurrentStreams = 1
	s.Observe = pc.leave
	s.Start()
	defer s.Close()
	s.RespondFunc(pc.enter)
	c := newH2Client(t, s, h2Opts{cert: true})
	results := make(chan h2Result, 5)
	for i := 0; i < 5; i++ {
		go func() { results <- c.try(h2Req{}) }()
	}
	for i := 0; i < 5; i++ {
		if res := <-results; res.err != nil || res.status != 200 {
			t.Fatalf("concurrent request: status %d, %v; want 200", res.status, res.err)
		}
	}
	pc.mu.Lock()
	defer pc.mu.Unlock()
	for conn, p := range pc.peak {
		if p != 1 {
			t.Fatalf("connection %d carried %d requests at once; want 1", conn, p)
		}
	}
	if len(pc.peak) < 3 || s.Conns() < 3 {
		t.Fatalf("requests on %d connections, Conns() = %d; want at least 3", len(pc.peak), s.Conns())
	}
}

// h2Frame is one raw HTTP/2 frame.
type h2Frame struct {
	typ, flags byte
	stream     uint32
	payload    []byte
}

func (f h2Frame) bytes() []byte {
	b := []byte{byte(len(f.payload) >> 16), byte(len(f.payload) >> 8), byte(len(f.payload)), f.typ, f.flags}
	b = be.AppendUint32(b, f.stream)
	return append(b, f.payload...)
}

const (
	frameSettings = 0x4
	frameGoAway   = 0x7
)

// rawH2 opens a TLS connection negotiating h2 and sends the client preface and an empty
// SETTINGS frame, without a client certificate.
func rawH2(t *testing.T, s *HTTP2Server) *tls.Conn {
	t.Helper()
	c, err := tryDial(s.Addr, s.ClientTLSConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if p := c.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Fatalf("negotiated %q; want h2", p)
	}
	preface := append([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), h2Frame{typ: frameSettings}.bytes()...)
	write(t, c, preface)
	return c
}

func readH2Frame(t *testing.T, r io.Reader) h2Frame {
	t.Helper()
	var h [9]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		t.Fatalf("reading a frame header: %v", err)
	}
	f := h2Frame{typ: h[3], flags: h[4], stream: be.Uint32(h[5:]) &^ (1 << 31)}
	f.payload = make([]byte, int(h[0])<<16|int(h[1])<<8|int(h[2]))
	if _, err := io.ReadFull(r, f.payload); err != nil {
		t.Fatalf("reading a frame payload: %v", err)
	}
	return f
}

// advertisedStreams reads the server's first frame, which must be SETTINGS, and returns its
// SETTINGS_MAX_CONCURRENT_STREAMS (-1 if absent).
func advertisedStreams(t *testing.T, c *tls.Conn) int {
	t.Helper()
	f := readH2Frame(t, c)
	if f.typ != frameSettings || f.flags != 0 || len(f.payload)%6 != 0 {
		t.Fatalf("first frame type %d flags %d length %d; want a SETTINGS frame", f.typ, f.flags, len(f.payload))
	}
	for p := f.payload; len(p) > 0; p = p[6:] {
		if be.Uint16(p) == 0x3 {
			return int(be.Uint32(p[2:]))
		}
	}
	return -1
}

func TestHTTP2SettingsAdvertiseMaxConcurrentStreams(t *testing.T) {
	s := newH2TestServer(t)
	if n := advertisedStreams(t, rawH2(t, s)); n != 1000 {
		t.Fatalf("SETTINGS_MAX_CONCURRENT_STREAMS = %d; want the default 1000", n)
	}
	s.SetMaxConcurrentStreams(1)
	if n := advertisedStreams(t, rawH2(t, s)); n != 1 {
		t.Fatalf("after SetMaxConcurrentStreams(1): %d; want 1", n)
	}
	s.SetMaxConcurrentStreams(0)
	if n := advertisedStreams(t, rawH2(t, s)); n != 1000 {
		t.Fatalf("after SetMaxConcurrentStreams(0): %d; want 1000", n)
	}

	u := NewUnstartedHTTP2Server()
	u.MaxConcurrentStreams = 7
	u.Start()
	defer u.Close()
	if n := advertisedStreams(t, rawH2(t, u)); n != 7 {
		t.Fatalf("with MaxConcurrentStreams 7: %d; want 7", n)
	}
}

func TestHTTP2GoAwaySendsGoAwayWithNoError(t *testing.T) {
	s := newH2TestServer(t)
	c := rawH2(t, s)
	advertisedStreams(t, c)
	done := make(chan struct{})
	go func() {
		s.GoAway()
		close(done)
	}()
	for {
		f := readH2Frame(t, c)
		if f.typ != frameGoAway {
			continue // WINDOW_UPDATE, SETTINGS ACK
		}
		// Last-Stream-ID 0 (no stream was opened), NO_ERROR, no debug data.
		want := h2Frame{typ: frameGoAway, payload: make([]byte, 8)}.bytes()
		if got := f.bytes(); !bytes.Equal(got, want) {
			t.Fatalf("Got:\n% x\nExpected:\n% x", got, want)
		}
		break
	}
	c.Close()
	select {
	case <-done:
	case <-time.After(guard):
		t.Fatal("GoAway did not return after the client closed")
	}
	newH2Client(t, s, h2Opts{cert: true}).expect(h2Req{}, 200, "") // still listening
}

func TestHTTP2RefusesHTTP1(t *testing.T) {
	s := newH2TestServer(t)
	res := newH2Client(t, s, h2Opts{cert: true, http1: true}).try(h2Req{})
	if res.err != nil || res.status != http.StatusHTTPVersionNotSupported || res.proto != 1 {
		t.Fatalf("got HTTP/%d %d, %v; want HTTP/1 505", res.proto, res.status, res.err)
	}
	if s.Count() != 0 || len(s.Rejected()) != 0 {
		t.Fatalf("Count() = %d, %d rejected; want 0, 0", s.Count(), len(s.Rejected()))
	}
}

func TestHTTP2DiscardNotificationsCountsAndObserves(t *testing.T) {
	s := NewUnstartedHTTP2Server()
	s.DiscardNotifications = true
	var mu sync.Mutex
	var seen int
	s.Observe = func(r Request) {
		mu.Lock()
		seen += len(r.Payload)
		mu.Unlock()
	}
	s.Start()
	defer s.Close()
	c := newH2Client(t, s, h2Opts{cert: true})
	done := make(chan bool)
	go func() { done <- s.WaitCount(3, guard) }()
	for i := 0; i < 3; i++ {
		c.expect(h2Req{}, 200, "")
	}
	if !<-done {
		t.Fatalf("WaitCount(3) = false; Count() = %d", s.Count())
	}
	mu.Lock()
	defer mu.Unlock()
	if len(s.Requests()) != 0 || seen != 3*len(h2Payload) {
		t.Fatalf("Requests() holds %d, Observe saw %d bytes; want 0, %d", len(s.Requests()), seen, 3*len(h2Payload))
	}
	if s.WaitCount(4, 10*time.Millisecond) {
		t.Fatal("WaitCount(4) = true after 3 requests")
	}
}

func TestHTTP2CloseLeavesNoGoroutines(t *testing.T) {
	thePKI() // generate outside the measurement
	before := runtime.NumGoroutine()

	s := NewHTTP2Server()
	c := newH2Client(t, s, h2Opts{cert: true})
	arrived := make(chan struct{})
	s.RespondFunc(func(r Request) *Response {
		if r.Token == h2Token2 {
			close(arrived)
			return &Response{Delay: time.Hour}
		}
		return nil
	})
	c.expect(h2Req{}, 200, "")
	slow := make(chan h2Result, 1)
	go func() { slow <- c.try(h2Req{path: "/3/device/" + h2Token2}) }()
	<-arrived
	half, err := net.Dial("tcp", s.Addr) // never starts a handshake
	if err != nil {
		t.Fatal(err)
	}
	defer half.Close()
	for s.Conns() < 2 {
		time.Sleep(time.Millisecond)
	}

	start := time.Now()
	s.Close()
	if d := time.Since(start); d > guard {
		t.Fatalf("Close took %v", d)
	}
	if res := <-slow; res.err == nil {
		t.Fatalf("the delayed request got status %d after Close; want an error", res.status)
	}
	half.Close()
	c.tr.CloseIdleConnections()

	waitGoroutines(t, before)
}

func TestParseProviderTokenRejectsMalformedTokens(t *testing.T) {
	enc := func(s string) string { return b64url([]byte(s)) }
	h, c := enc(`{"alg":"ES256","kid":"K"}`), enc(`{"iss":"T","iat":1}`)
	for _, tok := range []string{
		"", "a", "a.b", "a.b.c.d", h + "." + c, h + "." + c + ".",
		h + "." + c + "." + enc("sig") + "=",
		enc(`[]`) + "." + c + "." + enc("s"),
		h + "." + enc(`{"iss":"T","iat":1.5}`) + "." + enc("s"),
		h + "." + enc(`{"iss":"T"}`) + "." + enc("s"),
		enc(`{"alg":"ES256"}`) + "." + c + "." + enc("s"),
		h + "." + enc(`{"iss":"T","iat":1} {}`) + "." + enc("s"),
	} {
		if _, err := parseProviderToken(tok); err == nil {
			t.Errorf("parseProviderToken(%q) succeeded; want an error", tok)
		}
	}
	if _, err := parseProviderToken(h + "." + c + "." + enc("s")); err != nil {
		t.Fatalf("a well-formed token: %v", err)
	}
}

func FuzzParseProviderToken(f *testing.F) {
	f.Add("eyJhbGciOiJFUzI1NiIsImtpZCI6IksifQ.eyJpc3MiOiJUIiwiaWF0IjoxfQ.cw")
	f.Add("a.b.c")
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	keys := map[string]*ecdsa.PublicKey{"K": &key.PublicKey}
	f.Fuzz(func(t *testing.T, tok string) {
		pt, err := parseProviderToken(tok)
		if err == nil && pt.signingInput+"." != tok[:len(pt.signingInput)+1] {
			t.Fatalf("signing input %q is not a prefix of %q", pt.signingInput, tok)
		}
		_, status, reason := checkProviderToken(tok, keys, "", time.Unix(1, 0))
		if status == 0 { // no fuzzer can forge a signature
			t.Fatalf("accepted %q", tok)
		}
		if status != 403 || reason == "" {
			t.Fatalf("status %d %q", status, reason)
		}
	})
}
