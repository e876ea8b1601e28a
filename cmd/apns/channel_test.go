package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/Kwik-messenger/apns-go/apnstest"
)

// writeP8 writes a new P-256 signing key as a .p8 file and returns its name and public key.
func writeP8(t *testing.T) (string, *ecdsa.PublicKey) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	p8 := filepath.Join(t.TempDir(), "AuthKey.p8")
	if err := os.WriteFile(p8, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p8, &k.PublicKey
}

// runJSON runs a command line that must exit with want and decodes its stdout into v.
func runJSON(t *testing.T, want int, v any, args ...string) string {
	t.Helper()
	code, out, stderr := runCmd(t, "", args...)
	if code != want {
		t.Fatalf("run(%q) = %d; want %d\nstdout:\n%s\nstderr:\n%s", args, code, want, out, stderr)
	}
	if v != nil {
		if err := json.Unmarshal([]byte(out), v); err != nil {
			t.Fatalf("run(%q): stdout is not JSON: %v\n%s", args, err, out)
		}
	}
	return stderr
}

// The whole round with certificate authentication against apnstest.HTTP2Server, which
// serves channel management on its own URL (found through -gateway, no -manage-url): create,
// get, list, push -channel (the broadcast reaches the channel with the Live Activity payload),
// delete; then get and push -channel of the deleted channel are refused with
// ChannelNotRegistered and exit 1.
func TestChannelRoundTripAndBroadcastWithCertificate(t *testing.T) {
	s := apnstest.NewUnstartedHTTP2Server()
	s.RequireClientCert = true
	s.Start()
	defer s.Close()
	ca, cert, key := pki(t)
	auth := []string{"-gateway", s.URL, "-ca", ca, "-cert", cert, "-key", key, "-bundle", "com.example.app"}
	cmd := func(parts ...string) []string { return append(parts, auth...) }

	var created channelResult
	runJSON(t, 0, &created, cmd("channel", "create", "-policy", "1", "-json")...)
	if created.Op != "create" || created.ID == "" || created.StoragePolicy == nil || *created.StoragePolicy != 1 ||
		created.PushType != "LiveActivity" || created.Bundle != "com.example.app" {
		t.Fatalf("create: %+v; want a new channel of policy 1", created)
	}
	if got := s.Channels("com.example.app"); !slices.Equal(got, []string{created.ID}) {
		t.Fatalf("server's channels %q; want [%s]", got, created.ID)
	}
	var got channelResult
	runJSON(t, 0, &got, cmd("channel", "get", "-id", created.ID, "-json")...)
	if got.ID != created.ID || got.StoragePolicy == nil || *got.StoragePolicy != 1 || got.PushType != "LiveActivity" {
		t.Errorf("get: %+v; want the channel, policy 1", got)
	}
	var list channelResult
	runJSON(t, 0, &list, cmd("channel", "list", "-json")...)
	if !slices.Equal(list.Channels, []string{created.ID}) {
		t.Errorf("list: %+v; want [%s]", list, created.ID)
	}
	code, out, stderr := runCmd(t, "", cmd("channel", "list")...)
	if code != 0 || out != created.ID+"\n" || !strings.Contains(stderr, "1 channel of com.example.app") {
		t.Errorf("list (text): exit %d, stdout %q, stderr %q", code, out, stderr)
	}

	before := time.Now().Unix()
	var res broadcastResult
	runJSON(t, 0, &res, cmd("push", "-channel", created.ID, "-event", "update", "-content-state", `{"score":3}`,
		"-priority", "5", "-expiry", "1h", "-json")...)
	if !res.Sent || res.StatusCode != 200 || res.RequestID == "" || res.Channel != created.ID {
		t.Errorf("push -channel: %+v; want sent with a request ID", res)
	}
	bs := s.Broadcasts(created.ID)
	if len(bs) != 1 {
		t.Fatalf("the channel got %d broadcasts; want 1", len(bs))
	}
	b := bs[0]
	if b.Priority != 5 || b.Expiration == "0" || b.Expiration == "" || b.RequestID != res.RequestID || b.BundleID != "com.example.app" {
		t.Errorf("broadcast %+v; want priority 5, an expiration, the request ID %s", b, res.RequestID)
	}
	var payload struct {
		APS struct {
			Event        string         `json:"event"`
			Timestamp    int64          `json:"timestamp"`
			ContentState map[string]any `json:"content-state"`
		} `json:"aps"`
	}
	if err := json.Unmarshal(b.Payload, &payload); err != nil || payload.APS.Event != "update" ||
		payload.APS.Timestamp < before || payload.APS.ContentState["score"] != 3.0 {
		t.Errorf("payload %s; want event update, timestamp now, content-state {score:3}", b.Payload)
	}

	var del channelResult
	runJSON(t, 0, &del, cmd("channel", "delete", "-id", created.ID, "-json")...)
	if !del.Deleted || del.ID != created.ID {
		t.Errorf("delete: %+v", del)
	}
	if got := s.Channels("com.example.app"); len(got) != 0 {
		t.Errorf("server's channels after delete %q; want none", got)
	}
	// Refusals: printed with their reason, exit 1.
	var ref refusalResult
	stderr = runJSON(t, 1, &ref, cmd("channel", "get", "-id", created.ID, "-json")...)
	if ref.StatusCode != 400 || ref.Reason != "ChannelNotRegistered" || !strings.Contains(stderr, "get "+created.ID+" refused: 400 ChannelNotRegistered") {
		t.Errorf("get of a deleted channel: %+v, stderr %q; want 400 ChannelNotRegistered", ref, stderr)
	}
	code, out, stderr = runCmd(t, "", cmd("push", "-channel", created.ID)...)
	if code != 1 || out != "" || !strings.Contains(stderr, "broadcast to "+created.ID+" refused: 400 ChannelNotRegistered") {
		t.Errorf("push -channel to a deleted channel: exit %d, stdout %q, stderr %q; want 1 and the reason", code, out, stderr)
	}
	var empty map[string]any
	runJSON(t, 0, &empty, cmd("channel", "list", "-json")...)
	if ch, ok := empty["channels"].([]any); !ok || len(ch) != 0 {
		t.Errorf("list after delete: %v; want channels []", empty)
	}
}

// Token authentication, the bundle from -topic: a policy-0 channel takes a broadcast
// without -expiry, and refuses one with -expiry (BadExpirationDate, exit 1, printed).
func TestChannelWithTokenAuthAndPolicy0(t *testing.T) {
	p8, pub := writeP8(t)
	s := apnstest.NewUnstartedHTTP2Server()
	s.Keys = map[string]*ecdsa.PublicKey{"KEY1234567": pub}
	s.TeamID = "TEAM123456"
	s.Start()
	defer s.Close()
	ca, _, _ := pki(t)
	auth := []string{"-gateway", s.URL, "-ca", ca, "-p8", p8, "-key-id", "KEY1234567", "-team-id", "TEAM123456",
		"-topic", "com.example.app.push-type.liveactivity"}
	cmd := func(parts ...string) []string { return append(parts, auth...) }
	var created channelResult
	runJSON(t, 0, &created, cmd("channel", "create", "-policy", "0", "-json")...)
	if created.StoragePolicy == nil || *created.StoragePolicy != 0 || created.Bundle != "com.example.app" {
		t.Fatalf("create: %+v; want policy 0 for com.example.app", created)
	}
	code, out, stderr := runCmd(t, "", cmd("push", "-channel", created.ID, "-event", "end", "-timestamp", "1700000000")...)
	if code != 0 || !strings.Contains(out, "broadcast to "+created.ID+" sent") {
		t.Fatalf("push -channel: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, stderr)
	}
	var res broadcastResult
	stderr = runJSON(t, 1, &res, cmd("push", "-channel", created.ID, "-expiry", "1h", "-json")...)
	if res.Sent || res.StatusCode != 400 || res.Reason != "BadExpirationDate" || !strings.Contains(stderr, "refused: 400 BadExpirationDate") {
		t.Errorf("push -expiry to a policy-0 channel: %+v, stderr %q; want 400 BadExpirationDate", res, stderr)
	}
	bs := s.Broadcasts(created.ID)
	if len(bs) != 1 || bs[0].KeyID != "KEY1234567" || bs[0].Expiration != "0" ||
		string(bs[0].Payload) != `{"aps":{"event":"end","timestamp":1700000000}}` {
		t.Errorf("broadcasts %+v; want the one end with expiration 0", bs)
	}
}

// apns channel and apns push -channel against "apns mock", whose log shows them.
func TestChannelAgainstTheMock(t *testing.T) {
	c := startCmd("mock", "-json", "-dir", t.TempDir())
	var info mockInfo
	if line := c.next(t); json.Unmarshal([]byte(line), &info) != nil || info.HTTP2 == "" {
		t.Fatalf("first line %q; want the ready object", line)
	}
	defer func() {
		if code := c.stop(t); code != 0 {
			t.Errorf("mock exit %d after cancel; want 0", code)
		}
	}()
	auth := []string{"-gateway", info.HTTP2, "-ca", info.CA, "-p8", info.TokenKey,
		"-key-id", info.KeyID, "-team-id", info.TeamID, "-topic", "com.example.app"}
	cmd := func(parts ...string) []string { return append(parts, auth...) }
	var created channelResult
	runJSON(t, 0, &created, cmd("channel", "create", "-manage-url", info.Manage, "-json")...)
	if created.StoragePolicy == nil || *created.StoragePolicy != 1 {
		t.Fatalf("create: %+v; want policy 1, the default", created)
	}
	var res broadcastResult
	runJSON(t, 0, &res, cmd("push", "-channel", created.ID, "-content-state", `{"n":1}`, "-json")...)
	var e broadcastEvent
	if line := c.next(t); json.Unmarshal([]byte(line), &e) != nil || e.Op != "create" || e.Channel != created.ID {
		t.Fatalf("line %q; want the create", line)
	}
	e = broadcastEvent{}
	if line := c.next(t); json.Unmarshal([]byte(line), &e) != nil || e.Op != "broadcast" || e.Status != 200 ||
		e.Channel != created.ID || e.RequestID != res.RequestID || !strings.Contains(string(e.Payload), `"content-state":{"n":1}`) {
		t.Fatalf("line %q; want the broadcast", line)
	}
}

func TestChannelUsageErrorsNameTheFlag(t *testing.T) {
	_, cert, key := pki(t)
	// A local port nobody listens on: a row whose fault is no longer refused must not reach
	// Apple.
	auth := []string{"-cert", cert, "-key", key, "-gateway", "https://127.0.0.1:1"}
	withBundle := append([]string{"-bundle", "com.example.app"}, auth...)
	cat := func(parts ...[]string) []string { return slices.Concat(parts...) }
	for _, row := range []struct {
		args []string
		want string
	}{
		{[]string{"channel"}, "give an operation first: create, get, delete or list"},
		{[]string{"channel", "-json"}, "give an operation first"},
		{[]string{"channel", "rename"}, `unknown operation "rename"`},
		{[]string{"channel", "list", "-nope"}, "flag provided but not defined: -nope"},
		{[]string{"channel", "list", "stray"}, `unexpected argument "stray"`},
		{[]string{"channel", "list", "-bundle", "com.example.app"}, "give -cert and -key, or -p8"},
		{cat([]string{"channel", "list"}, auth), "-bundle is missing"},
		{cat([]string{"channel", "create", "-policy", "2"}, withBundle), "-policy is 2; want 0"},
		{cat([]string{"channel", "create", "-policy", "x"}, withBundle), `invalid value "x" for flag -policy`},
		{cat([]string{"channel", "list", "-policy", "0"}, withBundle), "-policy goes with create only"},
		{cat([]string{"channel", "get"}, withBundle), "-id is missing: get needs the channel ID"},
		{cat([]string{"channel", "delete"}, withBundle), "-id is missing: delete needs the channel ID"},
		{cat([]string{"channel", "list", "-id", "abc"}, withBundle), "-id goes with get and delete only"},
		{cat([]string{"channel", "list", "-timeout", "0s"}, withBundle), "-timeout is 0s"},
		{cat([]string{"push", "-channel", "abc", "-token", tok(1)}, withBundle), "give no -token or -tokens with it"},
		{cat([]string{"push", "-channel", "abc", "-push-type", "alert"}, withBundle), "-push-type and -collapse-id do not go with -channel"},
		{cat([]string{"push", "-channel", "abc"}, auth), "-bundle is missing: -channel needs"},
		{cat([]string{"push", "-channel", "abc", "-priority", "1"}, withBundle), "-priority is 1; a broadcast takes 10 or 5"},
		{cat([]string{"push", "-channel", "abc", "-event", "start"}, withBundle), "-event start goes to a device's push-to-start token"},
		{cat([]string{"push", "-channel", "abc", "-event", "pause"}, withBundle), `-event is "pause"; want update or end`},
		{cat([]string{"push", "-channel", "abc", "-content-state", "[1]"}, withBundle), "-content-state is not a JSON object"},
		{cat([]string{"push", "-channel", "abc", "-timestamp", "yesterday"}, withBundle), `-timestamp is "yesterday"`},
		{cat([]string{"push", "-channel", "abc", "-protocol", "binary"}, []string{"-bundle", "b", "-cert", cert, "-key", key, "-gateway", "127.0.0.1:1"}), "-channel needs the HTTP/2 API"},
		{cat([]string{"push", "-token", tok(1), "-event", "update"}, auth), "-event goes with -channel"},
		{cat([]string{"push", "-token", tok(1), "-alert", "hi"}, withBundle), "-bundle goes with -channel"},
	} {
		code, stdout, stderr := runCmd(t, "", row.args...)
		if code != 2 || !strings.Contains(stderr, row.want) || stdout != "" {
			t.Errorf("run(%q) = %d, stdout %q, stderr:\n%s\nwant 2, nothing on stdout, and %q on stderr", row.args, code, stdout, stderr, row.want)
		}
	}
}

func TestChannelHelp(t *testing.T) {
	for _, args := range [][]string{{"channel", "-h"}, {"channel", "create", "-h"}} {
		code, _, stderr := runCmd(t, "", args...)
		if code != 0 || !strings.Contains(stderr, "usage: apns channel") || !strings.Contains(stderr, "-manage-url") ||
			!strings.Contains(stderr, "-policy") || !strings.Contains(stderr, "-json") {
			t.Errorf("apns %q: exit %d, stderr:\n%s\nwant 0 and a usage with -manage-url, -policy, -json", args, code, stderr)
		}
	}
	code, _, stderr := runCmd(t, "", "push", "-h")
	if code != 0 || !strings.Contains(stderr, "-channel") || !strings.Contains(stderr, "-content-state") {
		t.Errorf("push -h: exit %d; want -channel and -content-state in:\n%s", code, stderr)
	}
}

func TestBroadcastPayloadMergesTheLiveActivityFlags(t *testing.T) {
	now := time.Unix(1700000000, 0)
	for _, row := range []struct {
		p    payloadFlags
		b    broadcastFlags
		want string
	}{
		{payloadFlags{badge: -1}, broadcastFlags{}, `{"aps":{"event":"update","timestamp":1700000000}}`},
		{payloadFlags{badge: -1}, broadcastFlags{event: "end", timestamp: "2026-01-02T00:00:00Z", contentState: `{"a":"b"}`},
			`{"aps":{"content-state":{"a":"b"},"event":"end","timestamp":1767312000}}`},
		{payloadFlags{badge: -1, json: `{"aps":{"event":"end","timestamp":5},"x":1}`, alert: "hi"}, broadcastFlags{},
			`{"aps":{"alert":"hi","event":"end","timestamp":5},"x":1}`},
	} {
		p, err := broadcastPayload(&row.p, &row.b, now)
		if err != nil {
			t.Errorf("broadcastPayload(%+v, %+v): %v", row.p, row.b, err)
			continue
		}
		if b, _ := json.Marshal(p); string(b) != row.want {
			t.Errorf("broadcastPayload(%+v, %+v) = %s; want %s", row.p, row.b, b, row.want)
		}
	}
}

// The management refusals a command can provoke are printed with their reason and exit 1:
// one channel more than the app may have (CannotCreateChannelConfig), an app without the
// Broadcast capability (FeatureNotEnabled), on stderr and, with -json, on stdout.
func TestChannelRefusalsArePrintedWithTheirReason(t *testing.T) {
	s := apnstest.NewUnstartedHTTP2Server()
	s.RequireClientCert = true
	s.Start()
	defer s.Close()
	s.SetChannelLimit(1)
	s.EnableBroadcast("com.example.app")
	ca, cert, key := pki(t)
	auth := []string{"-gateway", s.URL, "-ca", ca, "-cert", cert, "-key", key}
	if code, out, stderr := runCmd(t, "", append([]string{"channel", "create", "-bundle", "com.example.app"}, auth...)...); code != 0 {
		t.Fatalf("first create: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, stderr)
	}
	code, out, stderr := runCmd(t, "", append([]string{"channel", "create", "-bundle", "com.example.app"}, auth...)...)
	if code != 1 || out != "" || !strings.Contains(stderr, "apns channel: create refused: 400 CannotCreateChannelConfig") {
		t.Errorf("second create: exit %d, stdout %q, stderr %q; want 1 and CannotCreateChannelConfig", code, out, stderr)
	}
	var ref refusalResult
	stderr = runJSON(t, 1, &ref, append([]string{"channel", "list", "-bundle", "com.example.other", "-json"}, auth...)...)
	if ref.Op != "list" || ref.Bundle != "com.example.other" || ref.StatusCode != 400 || ref.Reason != "FeatureNotEnabled" ||
		ref.RequestID == "" || !strings.Contains(stderr, "list refused: 400 FeatureNotEnabled") {
		t.Errorf("list of an app without the capability: %+v, stderr %q; want 400 FeatureNotEnabled", ref, stderr)
	}
}
