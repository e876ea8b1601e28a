package apns

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestH2EndpointMapsApplesHostsAndURLs(t *testing.T) {
	cases := []struct {
		in, want string
		ok       bool
	}{
		{"gateway.push.apple.com", "https://api.push.apple.com:443", true},
		{"gateway.push.apple.com:2195", "https://api.push.apple.com:443", true},
		{"gateway.sandbox.push.apple.com", "https://api.sandbox.push.apple.com:443", true},
		{"api.push.apple.com", "https://api.push.apple.com:443", true},
		{"api.sandbox.push.apple.com:2197", "https://api.sandbox.push.apple.com:2197", true},
		{"https://127.0.0.1:8443/", "https://127.0.0.1:8443", true},
		{"127.0.0.1:2195", "", false},
		{"push.example.com", "", false},
	}
	for _, tc := range cases {
		got, ok := h2Endpoint(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("h2Endpoint(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestNewH2RequestBuildsHeadersOnce(t *testing.T) {
	exp := time.Unix(1700000000, 0)
	r, err := newH2Request(&Notification{
		DeviceToken: "ABCD", Payload: map[string]any{"aps": map[string]any{"alert": "hi"}},
		Expiration: exp, CollapseID: "c1",
	}, "com.example.app")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"apns-push-type": "alert", "apns-priority": "10", "apns-topic": "com.example.app",
		"apns-expiration": "1700000000", "apns-collapse-id": "c1", "content-type": "application/json",
	}
	for k, v := range want {
		if got := r.header[k]; len(got) != 1 || got[0] != v {
			t.Errorf("%s = %q; want %q", k, got, v)
		}
	}
	if r.path != "/3/device/abcd" {
		t.Errorf("path = %q", r.path)
	}
	h := map[string][]string(r.header) // lowercase names, as sent
	if id := r.id(); h[hdrID][0] != id || len(id) != 36 || strings.ToLower(id) != id || id[14] != '4' {
		t.Errorf("generated apns-id %q is not a lowercase v4 UUID", id)
	}
}

func TestNewH2RequestInfersBackgroundPushes(t *testing.T) {
	r, err := newH2Request(&Notification{DeviceToken: "ab", Payload: []byte(`{"aps":{"content-available":1}}`)}, "")
	if err != nil {
		t.Fatal(err)
	}
	h := map[string][]string(r.header) // lowercase names, as sent
	if h[hdrPushType][0] != "background" || h[hdrPriority][0] != "5" {
		t.Errorf("headers %v; want background push with priority 5", h)
	}
	if h[hdrTopic] != nil {
		t.Error("a topic was set although neither the notification nor the client has one")
	}
}

func TestInferPushTypeParsesOnlyPayloadsThatCanSayBackground(t *testing.T) {
	cases := []struct{ payload, want string }{
		{`{"aps":{"alert":"hi"}}`, "alert"},
		{`{"aps":{"content-available":1}}`, "background"},
		{`{"aps":{"content\u002davailable":1}}`, "background"},
		{`{"aps":{"content-available":1,"alert":"hi"}}`, "alert"},
		{`{"data":"content-available"}`, "alert"},
		{`{"aps":{"alert":"a \"quote\""}}`, "alert"},
	}
	for _, tc := range cases {
		if got := inferPushType([]byte(tc.payload)); got != tc.want {
			t.Errorf("inferPushType(%s) = %q; want %q", tc.payload, got, tc.want)
		}
	}
}

func TestNewH2RequestRejectsBadInput(t *testing.T) {
	ok := []byte(`{"aps":{"alert":"x"}}`)
	cases := []struct {
		name string
		n    Notification
		want error
	}{
		{"empty token", Notification{Payload: ok}, ErrTokenLength},
		{"odd token", Notification{DeviceToken: "abc", Payload: ok}, ErrTokenLength},
		{"non-hex token", Notification{DeviceToken: "zz", Payload: ok}, ErrTokenNotHex},
		{"no payload", Notification{DeviceToken: "ab"}, ErrPayloadEmpty},
		{"empty payload", Notification{DeviceToken: "ab", Payload: []byte{}}, ErrPayloadEmpty},
		{"unmarshalable", Notification{DeviceToken: "ab", Payload: func() {}}, ErrPayloadMarshal},
		{"4097 bytes", Notification{DeviceToken: "ab", Payload: make([]byte, 4097)}, ErrPayloadTooLarge},
		{"voip 5121 bytes", Notification{DeviceToken: "ab", PushType: "voip", Payload: make([]byte, 5121)}, ErrPayloadTooLarge},
		{"priority 7", Notification{DeviceToken: "ab", Priority: 7, Payload: ok}, ErrInvalidPriority},
		{"push type", Notification{DeviceToken: "ab", PushType: "fax", Payload: ok}, ErrInvalidPushType},
		{"collapse id", Notification{DeviceToken: "ab", CollapseID: strings.Repeat("c", 65), Payload: ok}, ErrInvalidCollapseID},
	}
	for _, tc := range cases {
		if _, err := newH2Request(&tc.n, ""); !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v; want %v", tc.name, err, tc.want)
		}
	}
	if _, err := newH2Request(&Notification{DeviceToken: "ab", PushType: "voip", Payload: make([]byte, 5120)}, ""); err != nil {
		t.Errorf("voip payload of 5120 bytes: %v", err)
	}
}

func TestParseResponseReadsReasonAndMillisecondTimestamp(t *testing.T) {
	r, err := parseResponse(410, "id-1", []byte(`{"reason":"Unregistered","timestamp":1600000000123}`))
	if err != nil {
		t.Fatal(err)
	}
	if r.Reason != "Unregistered" || !r.Timestamp.Equal(time.UnixMilli(1600000000123)) || r.ID != "id-1" {
		t.Errorf("parsed %+v", r)
	}
	if _, err := parseResponse(500, "", []byte("<html>")); err == nil {
		t.Error("an HTML body parsed without error")
	}
	if r, _ := parseResponse(400, "", []byte(`{"reason":"SomethingNew"}`)); r.Reason != "SomethingNew" || codeOf(400, r.Reason) != StatusUnknown {
		t.Errorf("unknown reason: %+v", r)
	}
}

func FuzzParseResponse(f *testing.F) {
	f.Add(410, []byte(`{"reason":"Unregistered","timestamp":1600000000123}`))
	f.Add(400, []byte(`{"reason":"BadDeviceToken"}`))
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		r, err := parseResponse(status, "", body)
		if r == nil || r.StatusCode != status {
			t.Fatalf("parseResponse(%d, %q) = %+v, %v", status, body, r, err)
		}
		_ = codeOf(status, r.Reason)
	})
}

// verifyJWT checks an ES256 JWT the way APNs does and returns its header and claims.
func verifyJWT(t *testing.T, bearer string, pub *ecdsa.PublicKey) (map[string]any, map[string]any) {
	t.Helper()
	parts := strings.Split(strings.TrimPrefix(bearer, "bearer "), ".")
	if len(parts) != 3 {
		t.Fatalf("JWT %q has %d parts", bearer, len(parts))
	}
	dec := base64.RawURLEncoding
	sig, err := dec.DecodeString(parts[2])
	if err != nil || len(sig) != 64 {
		t.Fatalf("signature %q: %v", parts[2], err)
	}
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if !ecdsa.Verify(pub, sum[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])) {
		t.Fatal("signature does not verify")
	}
	var header, claims map[string]any
	for i, v := range []*map[string]any{&header, &claims} {
		b, _ := dec.DecodeString(parts[i])
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatal(err)
		}
	}
	return header, claims
}

func TestProviderTokenIsSignedAndRefreshedOnSchedule(t *testing.T) {
	key, p8 := NewTestAuthKey(t)
	parsed, err := parseAuthKey(p8)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1700000000, 0)
	tok := &providerToken{key: parsed, keyID: "KEY1234567", teamID: "TEAM123456", now: func() time.Time { return now }}
	first, err := tok.get()
	if err != nil {
		t.Fatal(err)
	}
	header, claims := verifyJWT(t, first, &key.PublicKey)
	if header["alg"] != "ES256" || header["kid"] != "KEY1234567" || claims["iss"] != "TEAM123456" || claims["iat"] != float64(now.Unix()) {
		t.Errorf("header %v claims %v", header, claims)
	}
	now = now.Add(49 * time.Minute)
	if again, _ := tok.get(); again != first {
		t.Error("token replaced before 50 minutes")
	}
	now = now.Add(time.Minute)
	second, _ := tok.get()
	if second == first {
		t.Error("token not replaced at 50 minutes")
	}
	// ExpiredProviderToken on a 10-minute-old token: no new token (APNs would answer
	// TooManyProviderTokenUpdates), no retry.
	now = now.Add(10 * time.Minute)
	if tok.rejected(second) {
		t.Error("a 10-minute-old token was replaced")
	}
	// On a 20-minute-old one: replaced once, however many requests report it.
	now = now.Add(10 * time.Minute)
	if first, again := tok.rejected(second), tok.rejected(second); !first || !again {
		t.Error("rejected token of 20 minutes not replaced")
	}
	third, _ := tok.get()
	if third == second || tok.issued != now {
		t.Error("token not replaced")
	}
	if _, err := parseAuthKey([]byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")); !errors.Is(err, ErrInvalidAuthKey) {
		t.Errorf("bad key: %v", err)
	}
}

// tlsPipe returns the two ends of a TLS connection over net.Pipe, after the handshake, and
// the server's end of the pipe, which the test closes (a TLS Close would wait for the peer
// to read its close_notify).
func tlsPipe(t *testing.T) (client, server *tls.Conn, serverPipe net.Conn) {
	t.Helper()
	srv := httptest.NewUnstartedServer(nil)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	cfg := srv.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
	cfg.ServerName = "example.com"
	a, b := net.Pipe()
	server, client = tls.Server(a, srv.TLS.Clone()), tls.Client(b, cfg)
	errs := make(chan error, 1)
	go func() { errs <- server.Handshake() }()
	if err := client.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return client, server, a
}

func TestBatchConnDeliversWritesInOrderAndRefusesThemAfterClose(t *testing.T) {
	client, server, _ := tlsPipe(t)
	c := newBatchConn(client)
	var want bytes.Buffer
	for i := range 3000 { // about 450 KB, more than batchLimit: Write must also wait for room
		want.Write(bytes.Repeat([]byte{byte(i)}, i%300+1))
	}
	got := make(chan []byte, 1)
	go func() {
		b := make([]byte, want.Len())
		n, _ := io.ReadFull(server, b)
		got <- b[:n]
		io.Copy(io.Discard, server) // the close_notify
	}()
	for p := want.Bytes(); len(p) > 0; {
		n := min(len(p), 1+len(p)%300)
		if m, err := c.Write(p[:n]); m != n || err != nil {
			t.Fatalf("Write = %d, %v; want %d, nil", m, err, n)
		}
		p = p[n:]
	}
	select {
	case b := <-got:
		if !bytes.Equal(b, want.Bytes()) {
			t.Fatalf("peer read %d bytes, not the %d written in order", len(b), want.Len())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the peer never read everything written: writes lost")
	}
	c.Close()
	if _, err := c.Write([]byte("late")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Write after Close = %v; want net.ErrClosed", err)
	}
	c.Close() // a second Close must not block
}

func TestBatchConnWriteFailsOnceThePeerHasGone(t *testing.T) {
	client, _, serverPipe := tlsPipe(t)
	c := newBatchConn(client)
	defer c.Close()
	serverPipe.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := c.Write([]byte("frame")); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Write kept succeeding after the peer closed the connection")
		}
		time.Sleep(time.Millisecond)
	}
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
		t.Fatal("the writer did not exit after a write error")
	}
}

func TestSharedDeadlinesGiveEveryRequestAtLeastTheTimeout(t *testing.T) {
	var d sharedDeadlines
	const timeout = 320 * time.Millisecond
	start := time.Now()
	a, b := d.get(timeout), d.get(timeout)
	if a != b {
		t.Error("two requests started within a slot got different contexts")
	}
	if dl, ok := a.Deadline(); !ok || dl.Before(start.Add(timeout)) || dl.After(time.Now().Add(timeout+timeout/32)) {
		t.Errorf("deadline %v after the start; want between %v and %v", dl.Sub(start), timeout, timeout+timeout/32)
	}
	time.Sleep(timeout/32 + time.Millisecond)
	later := time.Now()
	c := d.get(timeout)
	if c == a {
		t.Error("a request started after the slot got its context")
	}
	if dl, _ := c.Deadline(); dl.Before(later.Add(timeout)) {
		t.Errorf("later deadline %v after its start; want at least %v", dl.Sub(later), timeout)
	}
	d.stop()
	if a.Err() == nil || c.Err() == nil {
		t.Error("stop left a slot's context running")
	}
}
