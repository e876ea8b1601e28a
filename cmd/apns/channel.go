package main

// This file owns "apns channel" (broadcast channel management: create, get, delete, list)
// and the broadcast side of "apns push": with -channel, push sends one Live Activity update
// to every device subscribed to a channel instead of device pushes.

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	apns "github.com/Kwik-messenger/apns-go"
)

const channelSynopsis = "create|get|delete|list [flags]"

const channelAbout = `Channel manages the broadcast channels (iOS 18 Live Activities) of an app: "create" makes one
(-policy 0: no message stored, 1: the most recent message stored for offline devices, for at
most 8 hours) and prints its ID; "get" prints a channel's configuration, "delete" deletes it
(-id), "list" prints every channel ID of the app. An app has at most 10,000 channels. It
authenticates like push, with a certificate (-cert/-key) or a token signing key (-p8/-key-id/
-team-id/-topic), and talks to Apple's management host (production or -sandbox), or to
-manage-url; with a -gateway that is not Apple's and no -manage-url, to the -gateway, which is
where "apns mock" serves it. Exit status 1 means APNs refused the request (its reason is
printed).

Send to a channel with "apns push -channel ID".
`

// channelResult is what channel prints with -json: the channel of create, get and delete,
// the channel IDs of list.
type channelResult struct {
	Op            string   `json:"op"`
	Bundle        string   `json:"bundle"`
	ID            string   `json:"id,omitempty"`
	StoragePolicy *int     `json:"storage_policy,omitempty"`
	PushType      string   `json:"push_type,omitempty"`
	Deleted       bool     `json:"deleted,omitempty"`
	Channels      []string `json:"channels,omitempty"`
}

// refusalResult is what channel and push -channel print with -json when APNs refuses.
type refusalResult struct {
	Op         string `json:"op"`
	Bundle     string `json:"bundle"`
	ID         string `json:"id,omitempty"`
	StatusCode int    `json:"status_code"`
	Reason     string `json:"reason"`
	RequestID  string `json:"request_id,omitempty"`
}

func channel(env *cmdEnv, args []string) int {
	const name = "channel"
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help") {
			fs := newFlagSet(env, name, channelSynopsis, channelAbout)
			channelFlags(fs, &connFlags{})
			fs.Usage()
			return exitOK
		}
		return usageError(env, name, "give an operation first: create, get, delete or list")
	}
	op := args[0]
	switch op {
	case "create", "get", "delete", "list":
	default:
		return usageError(env, name, "unknown operation %q; want create, get, delete or list", op)
	}
	fs := newFlagSet(env, name+" "+op, "[flags]", channelAbout)
	var conn connFlags
	cf := channelFlags(fs, &conn)
	if code, ok := parseFlags(fs, args[1:]); !ok {
		return code
	}
	if err := conn.check(); err != nil {
		return usageError(env, name, "%v", err)
	}
	bundle := cf.bundle
	if bundle == "" {
		bundle = strings.TrimSuffix(conn.topic, ".push-type.liveactivity")
	}
	switch {
	case bundle == "":
		return usageError(env, name, "-bundle is missing: give the app's bundle ID (or -topic)")
	case *cf.timeout <= 0:
		return usageError(env, name, "-timeout is %v; want a positive duration", *cf.timeout)
	case op == "create" && cf.policy != 0 && cf.policy != 1:
		return usageError(env, name, "-policy is %d; want 0 (no message stored) or 1 (most recent message stored)", cf.policy)
	case op != "create" && cf.policySet:
		return usageError(env, name, "-policy goes with create only")
	case (op == "get" || op == "delete") && cf.id == "":
		return usageError(env, name, "-id is missing: %s needs the channel ID", op)
	case (op == "create" || op == "list") && cf.id != "":
		return usageError(env, name, "-id goes with get and delete only; %s takes none", op)
	}
	client, err := conn.client(conn.address(), errorLog(env, name), apns.WithDialTimeout(*cf.timeout),
		apns.WithProtocol(apns.ProtocolHTTP2), apns.WithBroadcastManagementURL(manageURL(&conn, cf.manageURL)))
	if err != nil {
		return fail(env, name, exitUsage, err)
	}
	defer func() { _ = client.Stop() }()

	res := channelResult{Op: op, Bundle: bundle, ID: cf.id}
	var ch *apns.Channel
	switch op {
	case "create":
		ch, err = client.CreateChannel(env.ctx, bundle, apns.MessageStoragePolicy(cf.policy))
	case "get":
		ch, err = client.Channel(env.ctx, bundle, cf.id)
	case "delete":
		if err = client.DeleteChannel(env.ctx, bundle, cf.id); err == nil {
			res.Deleted = true
		}
	case "list":
		if res.Channels, err = client.Channels(env.ctx, bundle); err == nil && res.Channels == nil {
			res.Channels = []string{}
		}
	}
	if rej, ok := errors.AsType[*apns.Rejection](err); ok {
		return refused(env, name, cf.json, refusalResult{Op: op, Bundle: bundle, ID: cf.id,
			StatusCode: rej.StatusCode, Reason: rej.Reason, RequestID: rej.ID})
	}
	if err != nil {
		return fail(env, name, exitUsage, err)
	}
	if ch != nil {
		p := int(ch.StoragePolicy)
		res.ID, res.StoragePolicy, res.PushType = ch.ID, &p, ch.PushType
	}
	if cf.json {
		if op == "list" && len(res.Channels) == 0 {
			// omitempty would drop an empty list; print it.
			return printJSON(env, name, struct {
				Op       string   `json:"op"`
				Bundle   string   `json:"bundle"`
				Channels []string `json:"channels"`
			}{op, bundle, []string{}})
		}
		return printJSON(env, name, res)
	}
	switch op {
	case "create", "get":
		fmt.Fprintf(env.stdout, "%s  policy %d (%s)  %s\n", res.ID, *res.StoragePolicy, ch.StoragePolicy, ch.PushType)
	case "delete":
		fmt.Fprintf(env.stdout, "deleted %s\n", res.ID)
	case "list":
		for _, id := range res.Channels {
			fmt.Fprintln(env.stdout, id)
		}
		fmt.Fprintf(env.stderr, "%s of %s\n", count(len(res.Channels), "channel"), bundle)
	}
	return exitOK
}

// chanFlags are channel's own flags.
type chanFlags struct {
	bundle    string
	manageURL string
	policy    int
	policySet bool
	id        string
	json      bool
	timeout   *time.Duration
}

// channelFlags registers channel's flags, the connection flags included, on fs.
func channelFlags(fs *flag.FlagSet, conn *connFlags) *chanFlags {
	cf := &chanFlags{policy: 1}
	conn.register(fs, withToken|withSandbox)
	fs.StringVar(&cf.bundle, "bundle", "", "the app's bundle `ID` (default: -topic without a .push-type.liveactivity suffix)")
	fs.StringVar(&cf.manageURL, "manage-url", "", "channel-management endpoint `URL` (https://host:port) instead of Apple's, e.g. apns mock's http2 address")
	fs.Func("policy", "create: message-storage `policy`, 0 (no message stored) or 1 (most recent message stored, at most 8 hours) (default 1)", func(s string) error {
		n, err := strconv.Atoi(s)
		if err != nil {
			return errors.New("not a number")
		}
		cf.policy, cf.policySet = n, true
		return nil
	})
	fs.StringVar(&cf.id, "id", "", "get, delete: the channel `ID`")
	fs.BoolVar(&cf.json, "json", false, "print the result as JSON")
	cf.timeout = fs.Duration("timeout", apns.DefaultDialTimeout, "how long each attempt to connect (TCP and TLS handshake) may take")
	return cf
}

// manageURL is the channel-management endpoint for the flags: -manage-url; else, for a
// -gateway that is not one of Apple's hosts, the gateway (apns mock serves both there); else
// "", the library's default (Apple's management host of the gateway's environment).
func manageURL(conn *connFlags, flagURL string) string {
	if flagURL != "" || conn.gateway == "" {
		return flagURL
	}
	host := conn.gateway
	if u, err := url.Parse(conn.gateway); err == nil && u.Host != "" {
		host = u.Host
	}
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if host == "push.apple.com" || strings.HasSuffix(host, ".push.apple.com") {
		return ""
	}
	return conn.gateway
}

// printJSON writes v as JSON on stdout.
func printJSON(env *cmdEnv, name string, v any) int {
	if err := writeJSON(env.stdout, v); err != nil {
		return fail(env, name, exitUsage, err)
	}
	return exitOK
}

// refused prints APNs' refusal with its reason, on stderr and, with -json, as an object on
// stdout, and returns exitRejected.
func refused(env *cmdEnv, name string, jsonOut bool, r refusalResult) int {
	reason := r.Reason
	if reason == "" {
		reason = "(no reason)"
	}
	what := r.Op
	if r.ID != "" {
		what += " " + r.ID
	}
	fmt.Fprintf(env.stderr, "apns %s: %s refused: %d %s\n", name, what, r.StatusCode, reason)
	if jsonOut {
		if err := writeJSON(env.stdout, r); err != nil {
			return fail(env, name, exitUsage, err)
		}
	}
	return exitRejected
}

// broadcastFlags are push's flags for a broadcast (-channel) and its Live Activity payload.
type broadcastFlags struct {
	channel      string
	bundle       string
	event        string
	contentState string
	timestamp    string
}

func (b *broadcastFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&b.channel, "channel", "", "broadcast to the channel `ID` (a Live Activity update for every subscriber) instead of pushing to devices")
	fs.StringVar(&b.bundle, "bundle", "", "-channel: the app's bundle `ID` (default: -topic without a .push-type.liveactivity suffix)")
	fs.StringVar(&b.event, "event", "", "-channel: the Live Activity `event`, update or end (default update); sets aps.event")
	fs.StringVar(&b.contentState, "content-state", "", "-channel: the Live Activity's content state as a `JSON` object; sets aps.content-state")
	fs.StringVar(&b.timestamp, "timestamp", "", "-channel: aps.timestamp, UNIX seconds or RFC 3339 `time` (default now)")
}

// liveActivityFlag returns the first broadcast-only flag given, or "": push refuses them
// without -channel.
func (b *broadcastFlags) liveActivityFlag() string {
	switch {
	case b.bundle != "":
		return "-bundle"
	case b.event != "":
		return "-event"
	case b.contentState != "":
		return "-content-state"
	case b.timestamp != "":
		return "-timestamp"
	}
	return ""
}

// payloadGiven reports whether any payload flag was given.
func payloadGiven(p *payloadFlags) bool {
	return p.json != "" || p.alert != "" || p.title != "" || p.sound != "" || p.badge != -1 || p.contentAvailable
}

// broadcastPayload returns the Live Activity payload of a broadcast: the payload flags, if
// any, with aps.event, aps.timestamp and aps.content-state set from b.
func broadcastPayload(p *payloadFlags, b *broadcastFlags, now time.Time) (map[string]any, error) {
	payload := map[string]any{}
	if payloadGiven(p) {
		var err error
		if payload, err = buildPayload(p); err != nil {
			return nil, err
		}
	}
	aps, _ := payload["aps"].(map[string]any)
	if aps == nil {
		aps = map[string]any{}
	}
	event := b.event
	if event == "" {
		event, _ = aps["event"].(string)
	}
	switch event {
	case "":
		event = string(apns.LiveActivityUpdate)
	case string(apns.LiveActivityUpdate), string(apns.LiveActivityEnd):
	case string(apns.LiveActivityStart):
		return nil, errors.New("-event start goes to a device's push-to-start token (apns push -token), not to a channel; a broadcast takes update or end")
	default:
		return nil, fmt.Errorf("-event is %q; want update or end", event)
	}
	aps["event"] = event
	switch ts := b.timestamp; {
	case ts != "":
		if n, err := strconv.ParseInt(ts, 10, 64); err == nil && n >= 0 {
			aps["timestamp"] = n
		} else if t, err := time.Parse(time.RFC3339, ts); err == nil {
			aps["timestamp"] = t.Unix()
		} else {
			return nil, fmt.Errorf("-timestamp is %q; want UNIX seconds or an RFC 3339 time such as 2026-01-02T15:04:05Z", ts)
		}
	case aps["timestamp"] == nil:
		aps["timestamp"] = now.Unix()
	}
	if b.contentState != "" {
		var state map[string]any
		if err := json.Unmarshal([]byte(b.contentState), &state); err != nil || state == nil {
			return nil, fmt.Errorf("-content-state is not a JSON object: %q", b.contentState)
		}
		aps["content-state"] = state
	}
	payload["aps"] = aps
	return payload, nil
}

// broadcastResult is push -channel's result, printed as text or, with -json, as this object.
type broadcastResult struct {
	Protocol   string          `json:"protocol"` // "broadcast"
	Bundle     string          `json:"bundle"`
	Channel    string          `json:"channel"`
	Sent       bool            `json:"sent"`
	StatusCode int             `json:"status_code"`
	Reason     string          `json:"reason,omitempty"`
	RequestID  string          `json:"request_id,omitempty"`
	Payload    json.RawMessage `json:"payload"`
	Millis     int64           `json:"elapsed_ms"`
}

// broadcastSettings are push's other flags that a broadcast uses.
type broadcastSettings struct {
	priority int
	expiry   time.Duration
	timeout  time.Duration
	jsonOut  bool
}

// pushBroadcast is "apns push -channel": one broadcast, sent synchronously, its answer
// printed. The caller has checked the connection flags and the flags push shares.
func pushBroadcast(env *cmdEnv, conn *connFlags, pf *payloadFlags, bf *broadcastFlags, set broadcastSettings) int {
	const name = "push"
	if conn.protocol == "binary" {
		return usageError(env, name, "-channel needs the HTTP/2 API, not -protocol binary")
	}
	if set.priority != 0 && set.priority != apns.PRIORITY_IMMEDIATE && set.priority != apns.PRIORITY_DELAYED {
		return usageError(env, name, "-priority is %d; a broadcast takes 10 or 5", set.priority)
	}
	bundle := bf.bundle
	if bundle == "" {
		bundle = strings.TrimSuffix(conn.topic, ".push-type.liveactivity")
	}
	if bundle == "" {
		return usageError(env, name, "-bundle is missing: -channel needs the app's bundle ID (or -topic)")
	}
	payload, err := broadcastPayload(pf, bf, time.Now())
	if err != nil {
		return usageError(env, name, "%v", err)
	}
	body, err := json.Marshal(payload)
	if err != nil {
		return usageError(env, name, "%v", err)
	}
	client, err := conn.client(conn.address(), errorLog(env, name), apns.WithDialTimeout(set.timeout),
		apns.WithProtocol(apns.ProtocolHTTP2))
	if err != nil {
		return fail(env, name, exitUsage, err)
	}
	defer func() { _ = client.Stop() }()
	n := &apns.BroadcastNotification{BundleID: bundle, ChannelID: bf.channel, Priority: set.priority, Payload: body}
	if set.expiry > 0 {
		n.Expiration = time.Now().Add(set.expiry)
	}
	begin := time.Now()
	if err := client.Start(1); err != nil {
		return fail(env, name, exitUsage, err)
	}
	resp, err := client.Broadcast(env.ctx, n)
	if err != nil {
		return fail(env, name, exitUsage, err)
	}
	res := broadcastResult{Protocol: "broadcast", Bundle: bundle, Channel: bf.channel, Sent: resp.Sent(),
		StatusCode: resp.StatusCode, Reason: resp.Reason, RequestID: resp.ID, Payload: body,
		Millis: time.Since(begin).Milliseconds()}
	if !res.Sent {
		reason := res.Reason
		if reason == "" {
			reason = "(no reason)"
		}
		fmt.Fprintf(env.stderr, "apns push: broadcast to %s refused: %d %s\n", res.Channel, res.StatusCode, reason)
	}
	if set.jsonOut {
		if err := writeJSON(env.stdout, res); err != nil {
			return fail(env, name, exitUsage, err)
		}
	} else if res.Sent {
		fmt.Fprintf(env.stdout, "broadcast to %s sent (request %s, %v)\n", res.Channel, res.RequestID,
			time.Duration(res.Millis)*time.Millisecond)
	}
	if !res.Sent {
		return exitRejected
	}
	return exitOK
}
