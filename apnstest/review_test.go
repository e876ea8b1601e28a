package apnstest_test

// Tests of the mocks from the adversarial review of issues 13 and 14, over TLS with a plain
// HTTP/2 client. Each test names the behaviour it holds.

import (
	"crypto/tls"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/Kwik-messenger/apns-go/apnstest"
)

func plainH2Client(t *testing.T, s *apnstest.HTTP2Server) *http.Client {
	t.Helper()
	certPEM, keyPEM := apnstest.ClientCertPEM()
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.ClientTLSConfig()
	cfg.Certificates = []tls.Certificate{cert}
	tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func plainDo(t *testing.T, hc *http.Client, method, url string, hdr map[string]string, body string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, res.Header, string(b)
}

// ObserveRejected's doc: "called for every request answered with an error status, whatever
// refused it". A request of the broadcast API answered 400/404 is such a request.
func TestObserveRejectedSeesBroadcastRefusals(t *testing.T) {
	s := apnstest.NewUnstartedHTTP2Server()
	var mu sync.Mutex
	var seen []apnstest.RejectedRequest
	s.ObserveRejected = func(r apnstest.RejectedRequest) { mu.Lock(); seen = append(seen, r); mu.Unlock() }
	s.Start()
	defer s.Close()
	hc := plainH2Client(t, s)
	status, _, body := plainDo(t, hc, "POST", s.URL+"/4/broadcasts/apps/com.example.app", map[string]string{
		"apns-push-type": "liveactivity", "apns-channel-id": "dHN0LXNyY2gtY2hubA==", "apns-expiration": "0",
	}, `{"aps":{"event":"update"}}`)
	if status != 400 {
		t.Fatalf("broadcast to an unknown channel = %d %s; want 400 ChannelNotRegistered", status, body)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 1 {
		t.Errorf("ObserveRejected saw %d requests after a 400 %s; want 1 (Rejected() has %d)", len(seen), body, len(s.Rejected()))
	}
}

// HTTP2Server.Respond and Server.RejectToken take tokens "the same way" (doc.go): a token that
// is not hexadecimal makes RejectToken panic; Respond must not silently keep a rule that
// can never match.
func TestRespondPanicsOnANonHexTokenAsRejectTokenDoes(t *testing.T) {
	s := apnstest.NewUnstartedHTTP2Server()
	panicked := func() (p any) {
		defer func() { p = recover() }()
		s.Respond("0123xyz", apnstest.Response{Status: 400, Reason: "BadDeviceToken"})
		return nil
	}()
	if panicked == nil {
		t.Error(`Respond("0123xyz", ...) kept a rule that can never match; RejectToken panics on the same string`)
	}
}

// A body that is the JSON null is no payload: the mock refuses it with PayloadEmpty (its
// choice of the nearest reason; Apple documents none), for device pushes and broadcasts.
func TestNullBodyIsRefusedAsPayloadEmpty(t *testing.T) {
	s := apnstest.NewHTTP2Server()
	defer s.Close()
	hc := plainH2Client(t, s)
	status, _, body := plainDo(t, hc, "POST", s.URL+"/3/device/"+strings.Repeat("ab", 32), nil, " null\n")
	if status != 400 || !strings.Contains(body, `"PayloadEmpty"`) {
		t.Errorf("device push with a null body = %d %s; want 400 PayloadEmpty", status, body)
	}
	status, hdr, body := plainDo(t, hc, "POST", s.URL+"/1/apps/com.example.app/channels", nil,
		`{"message-storage-policy":1,"push-type":"LiveActivity"}`)
	if status != 201 {
		t.Fatalf("create = %d %s", status, body)
	}
	ch := hdr.Get("Apns-Channel-Id")
	status, _, body = plainDo(t, hc, "POST", s.URL+"/4/broadcasts/apps/com.example.app", map[string]string{
		"apns-push-type": "liveactivity", "apns-channel-id": ch, "apns-expiration": "0",
	}, "null")
	if status != 400 || !strings.Contains(body, `"PayloadEmpty"`) {
		t.Errorf("broadcast with a null body = %d %s; want 400 PayloadEmpty", status, body)
	}
	if n := s.Count() + len(s.Broadcasts(ch)); n != 0 {
		t.Errorf("the mock accepted %d null bodies", n)
	}
}
