package main

// This file owns "apns mock": the apnstest gateways on loopback ports, for trying out and
// testing clients from outside this process.

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	apns "github.com/Kwik-messenger/apns-go"
	"github.com/Kwik-messenger/apns-go/apnstest"
)

const mockAbout = `Mock runs the apnstest mock gateways until interrupted: the binary gateway, its feedback
service and the HTTP/2 API, on loopback. It writes the files a client needs to connect into
-dir (default: a new temporary directory, removed on exit): ca.pem, the CA to trust (-ca);
client.pem and client-key.pem, a client certificate; AuthKey_MOCKKEY001.p8, a token signing
key (key ID MOCKKEY001, team ID MOCKTEAM01). It prints the addresses and files on stderr
(with -json also as a first JSON line on stdout), then one JSON line on stdout for every
notification it receives, accepted or rejected, whatever rejected it: the rules below or the
mock's own checks (binary: malformed frames, status 2, 4, 5, 7, 128; HTTP/2: 403 for a missing
or bad provider token, 400 MissingTopic, ...), each with its status and reason. Like Apple's,
the binary gateway and the feedback service refuse a client without a certificate in the TLS
handshake; no notification is read, so no line is logged.

Rejections are scripted with -reject TOKEN[:STATUS] (repeatable) and -reject-every K. STATUS
is a binary status (default 8, invalid token); the HTTP/2 API answers its nearest equivalent
(8: 410 Unregistered, 5: 400 BadDeviceToken, 7: 413 PayloadTooLarge, 10: 503
ServiceUnavailable, ...). Like Apple, the mock reports tokens rejected with 8 (410) on its
feedback service.

-latency D (and -latency-jitter J) makes the HTTP/2 API answer every request after D (plus up
to J), like Apple's gateway a network round trip away.

The addresses default to free ports; for fixed ones, e.g. -gateway-addr 127.0.0.1:2195
-feedback-addr 127.0.0.1:2196 -http2-addr 127.0.0.1:2197. The certificate is valid for
127.0.0.1, ::1 and localhost only.
`

// Identity of the mock's token signing key.
const (
	mockKeyID  = "MOCKKEY001"
	mockTeamID = "MOCKTEAM01"
)

// mockInfo tells a client how to reach the mock.
type mockInfo struct {
	Event      string `json:"event"` // "ready"
	Gateway    string `json:"gateway"`
	Feedback   string `json:"feedback"`
	HTTP2      string `json:"http2"`
	Manage     string `json:"broadcast_management"` // channel management: the HTTP/2 address too
	Dir        string `json:"dir"`
	CA         string `json:"ca"`
	ClientCert string `json:"client_cert"`
	ClientKey  string `json:"client_key"`
	TokenKey   string `json:"token_key"`
	KeyID      string `json:"key_id"`
	TeamID     string `json:"team_id"`
}

// mockEvent is the JSON line logged for each notification the mock receives.
type mockEvent struct {
	Event      string          `json:"event"` // "notification"
	Time       time.Time       `json:"time"`
	Gateway    string          `json:"gateway"` // binary or http2
	Conn       int             `json:"conn"`
	Token      string          `json:"token"`
	ID         string          `json:"id,omitempty"` // binary identifier, or apns-id
	Topic      string          `json:"topic,omitempty"`
	PushType   string          `json:"push_type,omitempty"`
	CollapseID string          `json:"collapse_id,omitempty"`
	Priority   int             `json:"priority"`
	Expiry     string          `json:"expiry,omitempty"` // UNIX seconds; 0 or absent: not stored
	KeyID      string          `json:"key_id,omitempty"`
	Payload    json.RawMessage `json:"payload"`
	Accepted   bool            `json:"accepted"`
	Status     int             `json:"status,omitempty"` // binary status or HTTP status of a rejection
	Reason     string          `json:"reason,omitempty"`
}

// rejectRules decide which notifications the mock rejects.
type rejectRules struct {
	tokens map[string]uint8 // lower-case hex token -> binary status
	every  int
	status uint8
	n      atomic.Int64 // notifications decided on
}

// decide returns the binary status to reject a notification to token with, or 0.
func (r *rejectRules) decide(token string) uint8 {
	k := r.n.Add(1)
	if s, ok := r.tokens[strings.ToLower(token)]; ok {
		return s
	}
	if r.every > 0 && k%int64(r.every) == 0 {
		return r.status
	}
	return 0
}

// rejectFlag is the repeatable -reject TOKEN[:STATUS].
type rejectFlag map[string]uint8

func (f rejectFlag) String() string { return "" }

func (f rejectFlag) Set(s string) error {
	tok, status, found := strings.Cut(s, ":")
	code := uint64(apns.StatusInvalidToken)
	if found {
		var err error
		if code, err = strconv.ParseUint(status, 10, 8); err != nil || code == 0 {
			return fmt.Errorf("status %q is not a binary status 1-255", status)
		}
	}
	if _, err := hex.DecodeString(tok); err != nil || tok == "" {
		return fmt.Errorf("token %q is not hexadecimal", tok)
	}
	f[strings.ToLower(tok)] = uint8(code)
	return nil
}

func mock(env *cmdEnv, args []string) int {
	fs := newFlagSet(env, "mock", "[flags]", mockAbout+mockBroadcastAbout)
	gatewayAddr := fs.String("gateway-addr", "127.0.0.1:0", "`address` of the binary gateway")
	feedbackAddr := fs.String("feedback-addr", "127.0.0.1:0", "`address` of the feedback service")
	http2Addr := fs.String("http2-addr", "127.0.0.1:0", "`address` of the HTTP/2 API")
	dir := fs.String("dir", "", "`directory` for ca.pem, client.pem, client-key.pem and the .p8 key (default: a temporary one)")
	rules := &rejectRules{tokens: map[string]uint8{}}
	fs.Var(rejectFlag(rules.tokens), "reject", "reject notifications to `TOKEN[:STATUS]` (repeatable; STATUS default 8)")
	fs.IntVar(&rules.every, "reject-every", 0, "reject every `k`-th notification received (0: none)")
	everyStatus := fs.Uint("reject-status", uint(apns.StatusInvalidToken), "binary `status` of the -reject-every rejections")
	latency := fs.Duration("latency", 0, "HTTP/2: wait this `long` before every answer, as a gateway a round trip away does (e.g. 200ms)")
	jitter := fs.Duration("latency-jitter", 0, "HTTP/2: add a random part of up to this `long` to each -latency wait")
	jsonOut := fs.Bool("json", false, "also print the addresses and files as a first JSON line on stdout")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	switch {
	case rules.every < 0:
		return usageError(env, "mock", "-reject-every is %d; want 0 (none) or more", rules.every)
	case *everyStatus == 0 || *everyStatus > 255:
		return usageError(env, "mock", "-reject-status is %d; want a binary status, 1 to 255", *everyStatus)
	}
	if *latency < 0 || *jitter < 0 {
		return usageError(env, "mock", "-latency and -latency-jitter must not be negative")
	}
	rules.status = uint8(*everyStatus)

	// Listen first, so a port in use is a plain error.
	var lns []net.Listener
	closeAll := func() {
		for _, ln := range lns {
			ln.Close()
		}
	}
	for _, addr := range []string{*gatewayAddr, *feedbackAddr, *http2Addr} {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			closeAll()
			return fail(env, "mock", exitUsage, err)
		}
		lns = append(lns, ln)
	}

	info := mockInfo{Event: "ready", KeyID: mockKeyID, TeamID: mockTeamID, Dir: *dir}
	if info.Dir == "" {
		d, err := os.MkdirTemp("", "apns-mock-")
		if err != nil {
			closeAll()
			return fail(env, "mock", exitUsage, err)
		}
		defer os.RemoveAll(d)
		info.Dir = d
	}
	tokenKey, err := writeMockFiles(&info)
	if err != nil {
		closeAll()
		return fail(env, "mock", exitUsage, err)
	}

	m := &mockServers{env: env, rules: rules}
	m.feedback = apnstest.NewUnstartedFeedbackServer()
	m.feedback.Listener = lns[1]
	m.feedback.Start()
	defer m.feedback.Close()

	m.gateway = apnstest.NewUnstartedServer()
	m.gateway.Listener = lns[0]
	m.gateway.DiscardNotifications = true
	m.gateway.Observe = m.observeBinary
	m.gateway.ObserveRejected = m.observeBinaryRejected
	m.gateway.RejectFunc(m.judgeBinary)
	m.gateway.Start()
	defer m.gateway.Close()

	m.http2 = apnstest.NewUnstartedHTTP2Server()
	m.http2.Listener = lns[2]
	m.http2.DiscardNotifications = true
	m.http2.Latency, m.http2.LatencyJitter = *latency, *jitter
	m.http2.Keys = map[string]*ecdsa.PublicKey{mockKeyID: &tokenKey.PublicKey}
	m.http2.TeamID = mockTeamID
	m.http2.Observe = m.observeHTTP2
	m.http2.ObserveRejected = m.observeHTTP2Rejected
	m.http2.RespondFunc(m.judgeHTTP2)
	m.http2.ObserveBroadcast(m.observeBroadcast)
	m.http2.Start()
	defer m.http2.Close()

	info.Gateway, info.Feedback, info.HTTP2, info.Manage = m.gateway.Addr, m.feedback.Addr, m.http2.URL, m.http2.URL
	printMockInfo(env, &info, *dir == "")
	if *jsonOut {
		if err := writeJSONLine(env.stdout, info); err != nil {
			return fail(env, "mock", exitUsage, err)
		}
	}

	<-env.ctx.Done()
	m.http2.Close()
	m.gateway.Close()
	m.feedback.Close()
	fmt.Fprintf(env.stderr, "apns mock: stopped after %d binary and %d HTTP/2 notifications accepted\n",
		m.gateway.Count(), m.http2.Count())
	return exitOK
}

// writeMockFiles writes the CA, the client certificate and a new token signing key into
// info.Dir, and records their paths in info. It returns the signing key.
func writeMockFiles(info *mockInfo) (*ecdsa.PrivateKey, error) {
	if err := os.MkdirAll(info.Dir, 0o755); err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	cert, certKey := apnstest.ClientCertPEM()
	info.CA = filepath.Join(info.Dir, "ca.pem")
	info.ClientCert = filepath.Join(info.Dir, "client.pem")
	info.ClientKey = filepath.Join(info.Dir, "client-key.pem")
	info.TokenKey = filepath.Join(info.Dir, "AuthKey_"+mockKeyID+".p8")
	for _, f := range []struct {
		name string
		data []byte
		perm os.FileMode
	}{
		{info.CA, apnstest.CACertPEM(), 0o644},
		{info.ClientCert, cert, 0o644},
		{info.ClientKey, certKey, 0o600},
		{info.TokenKey, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600},
	} {
		if err := os.WriteFile(f.name, f.data, f.perm); err != nil {
			return nil, err
		}
	}
	return key, nil
}

func printMockInfo(env *cmdEnv, info *mockInfo, temporary bool) {
	removed := ""
	if temporary {
		removed = " (removed on exit)"
	}
	fmt.Fprintf(env.stderr, `apns mock: running until interrupted
  binary gateway  %s
  feedback        %s
  HTTP/2 API      %s (also broadcast channels and their management)
  files in        %s%s
  CA              %s
  client cert     %s
  client key      %s
  token key       %s (key ID %s, team ID %s)
try:
  apns push -gateway %s -ca %s -cert %s -key %s -token %s -alert hello
  apns push -gateway %s -ca %s -p8 %s -key-id %s -team-id %s -topic com.example.app -token %s -alert hello
  apns feedback -gateway %s -ca %s -cert %s -key %s
Every notification received is logged as a JSON line on stdout.
`, info.Gateway, info.Feedback, info.HTTP2, info.Dir, removed, info.CA, info.ClientCert, info.ClientKey,
		info.TokenKey, info.KeyID, info.TeamID,
		info.Gateway, info.CA, info.ClientCert, info.ClientKey, demoToken(1),
		info.HTTP2, info.CA, info.TokenKey, info.KeyID, info.TeamID, demoToken(1),
		info.Feedback, info.CA, info.ClientCert, info.ClientKey)
}

// mockServers are the running gateways of "apns mock" and what their hooks share.
type mockServers struct {
	env      *cmdEnv
	rules    *rejectRules
	gateway  *apnstest.Server
	feedback *apnstest.FeedbackServer
	http2    *apnstest.HTTP2Server
}

func (m *mockServers) observeBinary(n apnstest.Notification) {
	m.log(binaryEvent(&n, true, 0))
}

// observeBinaryRejected logs every notification the binary gateway refused, whether for the
// rules or for its own checks.
func (m *mockServers) observeBinaryRejected(n apnstest.Notification, status uint8) {
	m.log(binaryEvent(&n, false, status))
}

// judgeBinary is the binary gateway's RejectFunc: it applies the rules. The gateway reports
// the rejections to observeBinaryRejected.
func (m *mockServers) judgeBinary(n apnstest.Notification) uint8 {
	status := m.rules.decide(hex.EncodeToString(n.Token))
	if status == uint8(apns.StatusInvalidToken) {
		m.feedback.Add(n.Token, time.Now())
	}
	return status
}

func binaryEvent(n *apnstest.Notification, accepted bool, status uint8) *mockEvent {
	e := &mockEvent{Gateway: "binary", Conn: n.Conn, Token: hex.EncodeToString(n.Token),
		ID: strconv.FormatUint(uint64(n.ID), 10), Priority: int(n.Priority), Payload: jsonOrString(n.Payload),
		Accepted: accepted, Status: int(status)}
	if n.Expiry != 0 {
		e.Expiry = strconv.FormatUint(uint64(n.Expiry), 10)
	}
	switch {
	case !accepted && status == 0:
		e.Reason = "malformed command-0 frame (connection dropped: command 0 has no identifier to name)"
	case status != 0 && n.Command == 0:
		e.Reason = apns.Status(status).String() + " (connection dropped: command 0 has no identifier to name)"
	case status != 0:
		e.Reason = apns.Status(status).String()
	}
	return e
}

func (m *mockServers) observeHTTP2(r apnstest.Request) {
	m.log(http2Event(&r, true, nil))
}

// observeHTTP2Rejected logs every request the HTTP/2 server answered with an error, whether
// for the rules or for its own checks.
func (m *mockServers) observeHTTP2Rejected(r apnstest.RejectedRequest) {
	m.log(http2Event(&r.Request, false, &apnstest.Response{Status: r.Status, Reason: r.Reason}))
}

// judgeHTTP2 is the HTTP/2 server's RespondFunc: it applies the rules. The server reports the
// rejections to observeHTTP2Rejected.
func (m *mockServers) judgeHTTP2(r apnstest.Request) *apnstest.Response {
	status := m.rules.decide(r.Token)
	if status == 0 {
		return nil
	}
	resp := http2Answer(status)
	if resp.Status == 410 {
		if tok, err := hex.DecodeString(r.Token); err == nil {
			m.feedback.Add(tok, time.Now())
		}
	}
	return &resp
}

func http2Event(r *apnstest.Request, accepted bool, resp *apnstest.Response) *mockEvent {
	e := &mockEvent{Gateway: "http2", Conn: r.Conn, Token: r.Token, ID: r.ID, Topic: r.Topic,
		PushType: r.PushType, CollapseID: r.CollapseID, Priority: r.Priority, Expiry: r.Expiration,
		KeyID: r.KeyID, Payload: jsonOrString(r.Payload), Accepted: accepted}
	if resp != nil {
		e.Status, e.Reason = resp.Status, resp.Reason
	}
	return e
}

// http2Answer is the HTTP/2 API's nearest answer to a binary status.
func http2Answer(status uint8) apnstest.Response {
	switch apns.Status(status) {
	case apns.StatusInvalidToken:
		return apnstest.Response{Status: 410, Reason: "Unregistered"}
	case apns.StatusMissingDeviceToken:
		return apnstest.Response{Status: 400, Reason: "MissingDeviceToken"}
	case apns.StatusMissingTopic:
		return apnstest.Response{Status: 400, Reason: "MissingTopic"}
	case apns.StatusMissingPayload:
		return apnstest.Response{Status: 400, Reason: "PayloadEmpty"}
	case apns.StatusInvalidTokenSize:
		return apnstest.Response{Status: 400, Reason: "BadDeviceToken"}
	case apns.StatusInvalidTopicSize:
		return apnstest.Response{Status: 400, Reason: "BadTopic"}
	case apns.StatusInvalidPayloadSize:
		return apnstest.Response{Status: 413, Reason: "PayloadTooLarge"}
	case apns.StatusShutdown:
		return apnstest.Response{Status: 503, Reason: "ServiceUnavailable"}
	default:
		return apnstest.Response{Status: 500, Reason: "InternalServerError"}
	}
}

// log writes e as a JSON line on stdout.
func (m *mockServers) log(e *mockEvent) {
	e.Event, e.Time = "notification", time.Now().UTC()
	if err := writeJSONLine(m.env.stdout, e); err != nil {
		fmt.Fprintln(m.env.stderr, "apns mock:", err)
	}
}

// jsonOrString returns b if it is valid JSON, else b as a JSON string.
func jsonOrString(b []byte) json.RawMessage {
	if json.Valid(b) {
		return b
	}
	s, _ := json.Marshal(string(b))
	return s
}
