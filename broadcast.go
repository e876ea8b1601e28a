package apns

// This file owns broadcast push (iOS 18 Live Activity channels, PROTOCOL.md §5): the
// BroadcastNotification, its validation and request, and the broadcast sends, which are
// requests of the HTTP/2 transport (h2transport.go) with another path and other headers,
// delivered, retried and reported as device pushes are. The channel calls are in channels.go.

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Limits and endpoints of broadcast push (PROTOCOL.md §5).
const (
	// MaxBroadcastPayloadSize is the largest broadcast payload APNs takes, in bytes.
	MaxBroadcastPayloadSize = 5120
	// MaxChannelsPerApp is how many channels one app may have per environment; creating
	// one more is refused with ReasonCannotCreateChannelConfig.
	MaxChannelsPerApp = 10000
	// MaxStoredBroadcastAge is how long APNs keeps the latest message of a
	// MostRecentMessageStored channel for devices that are offline, at most.
	MaxStoredBroadcastAge = 8 * time.Hour

	// BroadcastManagementHost is the channel-management endpoint of the production
	// environment, used by clients of api.push.apple.com.
	BroadcastManagementHost = "api-manage-broadcast.push.apple.com:2196"
	// BroadcastManagementSandboxHost is the channel-management endpoint of the development
	// environment, used by clients of api.sandbox.push.apple.com.
	BroadcastManagementSandboxHost = "api-manage-broadcast.sandbox.push.apple.com:2195"
)

// Reasons APNs gives for refusing a channel-management request or a broadcast, beyond those
// it shares with device pushes (PayloadEmpty, BadMessageId, InvalidPushType,
// BadExpirationDate, TopicDisallowed, BadPriority, the 403 authentication reasons,
// PayloadTooLarge, TooManyRequests, ...). A refusal is a *Rejection whose Reason is one of
// these strings.
const (
	// ReasonFeatureNotEnabled: the app's App ID does not have the Broadcast capability.
	ReasonFeatureNotEnabled = "FeatureNotEnabled"
	// ReasonMissingChannelID: the request has no apns-channel-id.
	ReasonMissingChannelID = "MissingChannelId"
	// ReasonBadChannelID: the channel ID is badly encoded or too long.
	ReasonBadChannelID = "BadChannelId"
	// ReasonChannelNotRegistered: no such channel (never created, or deleted).
	ReasonChannelNotRegistered = "ChannelNotRegistered"
	// ReasonBadRequestParams: the JSON request has an attribute APNs does not know.
	ReasonBadRequestParams = "BadRequestParams"
	// ReasonBadRequestPayload: the JSON request cannot be parsed.
	ReasonBadRequestPayload = "BadRequestPayload"
	// ReasonMissingPushType: the request names no push type.
	ReasonMissingPushType = "MissingPushType"
	// ReasonCannotCreateChannelConfig: the app has MaxChannelsPerApp channels already.
	ReasonCannotCreateChannelConfig = "CannotCreateChannelConfig"
	// ReasonTopicMismatch: the bundle IDs of the certificate or provider token do not
	// include the bundle ID in the path.
	ReasonTopicMismatch = "TopicMismatch"
)

func init() {
	// The binary status with the nearest meaning, for SetCallback's callback.
	for _, reason := range []string{ReasonFeatureNotEnabled, ReasonMissingChannelID, ReasonBadChannelID,
		ReasonChannelNotRegistered, ReasonBadRequestParams, ReasonBadRequestPayload, ReasonMissingPushType,
		ReasonCannotCreateChannelConfig} {
		reasonCodes[reason] = StatusProtocolError
	}
}

// BroadcastNotification is one Live Activity update for every device subscribed to a
// channel. Zero fields take the defaults given.
type BroadcastNotification struct {
	// BundleID is the app's bundle ID, bare: without a .push-type.liveactivity suffix,
	// which APNs refuses (TopicDisallowed). Default: the client's topic (WithTopic, or the
	// token client's), with a .push-type.liveactivity suffix removed.
	BundleID  string
	ChannelID string // apns-channel-id; required
	// RequestID is apns-request-id, a canonical lowercase UUID (else ErrInvalidID), echoed
	// in the Response's ID; generated when empty.
	RequestID string
	Priority  int // apns-priority: 10 or 5; default 10
	// Expiration is apns-expiration. Zero sends 0: APNs tries once and stores nothing,
	// which is all a NoMessageStored channel accepts. On a MostRecentMessageStored channel,
	// a later time keeps the message for offline devices until then (at most
	// MaxStoredBroadcastAge).
	Expiration time.Time
	// Payload is the Live Activity payload (event update or end, timestamp,
	// content-state, ...): []byte or json.RawMessage are sent as they are, anything else
	// (a map, a struct, the payload builder) is marshalled. At most
	// MaxBroadcastPayloadSize bytes.
	Payload any
}

// Errors of broadcast push.
var (
	// ErrInvalidBundleID means a bundle ID is not reverse-DNS: labels of letters, digits and
	// hyphens separated by periods, none empty (Apple's rule for App IDs).
	ErrInvalidBundleID      = errors.New("apns: bundle ID is not reverse-DNS (letters, digits and hyphens in labels separated by periods)")
	ErrInvalidChannelID     = errors.New("apns: channel ID is empty or not base64")
	ErrInvalidStoragePolicy = errors.New("apns: message storage policy is neither 0 nor 1")
	// ErrChannelExpiration means a broadcast with a non-zero expiration was addressed to a
	// channel this client created or read with policy NoMessageStored, which APNs would
	// refuse (BadExpirationDate).
	ErrChannelExpiration = errors.New("apns: channel stores no messages (policy 0): expiration must be zero")
	// ErrNoChannelManagement means the client has no channel-management endpoint: its
	// gateway is not one of Apple's hosts and WithBroadcastManagementURL was not given.
	ErrNoChannelManagement = errors.New("apns: no channel-management endpoint for this gateway (see WithBroadcastManagementURL)")
)

// WithBroadcastManagementURL sets the channel-management endpoint, "https://host:port" or
// "host:port". Without a port, Apple's management hosts take their own (2195 for
// api-manage-broadcast.sandbox.push.apple.com, 2196 for api-manage-broadcast.push.apple.com),
// any other host 443. A URL with user info, a path, a query or a fragment makes CreateClient
// fail. Default: for clients of Apple's hosts, BroadcastManagementHost or
// BroadcastManagementSandboxHost, by the gateway's environment; for other gateways, none
// (the channel calls return ErrNoChannelManagement). The connection uses the client's TLS
// configuration and certificate or provider token, but verifies the management host's own
// name, not a ServerName set with WithTLSConfig for the gateway.
func WithBroadcastManagementURL(u string) Option {
	return func(s *settings) { s.manageURL = u }
}

// Request and response header names of broadcast push.
const (
	hdrChannelID = "apns-channel-id"
	hdrRequestID = "apns-request-id"
)

// Paths (PROTOCOL.md §5.2, §5.3).
const (
	broadcastPathPrefix = "/4/broadcasts/apps/"
	managePathPrefix    = "/1/apps/"
)

// maxManageResponse bounds the answer to a management call read: a list of 10,000 channel
// IDs of about 30 bytes fits many times over.
const maxManageResponse = 4 << 20

// maxChannelID bounds the channel IDs the client sends. APNs states no length; its IDs are
// a few dozen characters.
const maxChannelID = 1024

// maxKnownPolicies bounds the channels whose storage policy a client remembers.
const maxKnownPolicies = 100000

var liveActivityValue = []string{"liveactivity"}

// checkBundleID accepts a reverse-DNS bundle ID: labels of letters, digits and hyphens,
// separated by periods, none empty. Such an ID goes in a path as it is.
func checkBundleID(id string) error {
	label := 0 // length of the label so far
	for i := 0; i < len(id); i++ {
		switch c := id[i]; {
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-':
			label++
		case c == '.' && label > 0:
			label = 0
		default:
			return ErrInvalidBundleID
		}
	}
	if label == 0 { // empty, or ends with a period
		return ErrInvalidBundleID
	}
	return nil
}

// liveActivityTopicSuffix is the suffix of a Live Activity topic, which the broadcast API's
// bundle ID must not carry.
const liveActivityTopicSuffix = ".push-type.liveactivity"

// checkChannelID accepts a channel ID made of base64 characters, standard or URL alphabet.
func checkChannelID(id string) error {
	if id == "" || len(id) > maxChannelID {
		return ErrInvalidChannelID
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || strings.IndexByte("+/=-_", c) >= 0) {
			return ErrInvalidChannelID
		}
	}
	return nil
}

// newBroadcastRequest validates a broadcast and builds its request; knownPolicy reports a
// channel's storage policy when the client knows it.
func newBroadcastRequest(n *BroadcastNotification, defaultBundle string, knownPolicy func(bundle, channel string) (MessageStoragePolicy, bool)) (*h2Request, error) {
	if n == nil {
		return nil, ErrNilNotification
	}
	bundle := n.BundleID
	if bundle == "" {
		bundle = strings.TrimSuffix(defaultBundle, liveActivityTopicSuffix)
	}
	if err := checkBundleID(bundle); err != nil {
		return nil, err
	}
	if err := checkChannelID(n.ChannelID); err != nil {
		return nil, err
	}
	if n.RequestID != "" && !isUUID(n.RequestID) {
		return nil, ErrInvalidID
	}
	body, err := encodePayload(n.Payload)
	if err != nil {
		return nil, err
	}
	if len(body) > MaxBroadcastPayloadSize {
		return nil, payloadTooLarge(len(body), MaxBroadcastPayloadSize, "a broadcast allows")
	}
	prio := n.Priority
	if prio == 0 {
		prio = PRIORITY_IMMEDIATE
	}
	if prio != PRIORITY_IMMEDIATE && prio != PRIORITY_DELAYED {
		return nil, invalidPriority(prio, "a broadcast takes 10 (immediate) or 5 (power-saving)")
	}
	var exp uint32
	if !n.Expiration.IsZero() {
		var err error
		if exp, err = expirySeconds(n.Expiration); err != nil {
			return nil, err
		}
		if p, ok := knownPolicy(bundle, n.ChannelID); ok && p == NoMessageStored && exp != 0 {
			return nil, ErrChannelExpiration
		}
	}
	id := n.RequestID
	if id == "" {
		id = newUUID()
	}
	r := &h2Request{path: broadcastPathPrefix + bundle, body: body, prio: uint8(prio), expiry: exp, channel: n.ChannelID}
	r.vals[0], r.vals[1], r.vals[2] = id, n.ChannelID, strconv.FormatUint(uint64(exp), 10)
	r.header = http.Header{
		hdrRequestID:  r.vals[0:1:1],
		hdrChannelID:  r.vals[1:2:2],
		hdrExpiration: r.vals[2:3:3],
		hdrPushType:   liveActivityValue,
		hdrPriority:   priorityValues[prio],
		hdrType:       jsonValue,
	}
	return r, nil
}

// responseID returns the ID an answer echoes: apns-id for device pushes, apns-request-id for
// broadcasts.
func responseID(h http.Header) string {
	if v := h["Apns-Id"]; len(v) > 0 {
		return v[0]
	}
	if v := h["Apns-Request-Id"]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// Broadcast sends one Live Activity update to every device subscribed to a channel,
// synchronously, bypassing the queue and the callbacks, and returns APNs' answer, whose ID
// is the echoed apns-request-id; a refusal is a Response whose Sent is false, not an error.
// It is retried like Push: after 429, 500, 503 and connections lost before an answer. The
// error reports bad input (ErrNilNotification, ErrInvalidBundleID, ErrInvalidChannelID,
// ErrInvalidID, ErrPayloadEmpty for no payload or one that marshals to null,
// ErrPayloadMarshal, ErrPayloadTooLarge, ErrInvalidPriority, ErrInvalidExpiry,
// ErrChannelExpiration), a client that is not started, or a broadcast that got no answer.
func (c *Client) Broadcast(ctx context.Context, n *BroadcastNotification) (*Response, error) {
	h, err := c.http2()
	if err != nil {
		return nil, err
	}
	r, err := newBroadcastRequest(n, h.topic, h.bc.policy)
	if err != nil {
		return nil, err
	}
	return h.push(ctx, r)
}

// SendBroadcast validates a broadcast and queues it, like SendNotification: it shares the
// queue, the connections and the retries of device pushes. If it is not delivered, the
// callbacks get it: SetRejectionCallback's with the Rejection's ChannelID set and its ID the
// apns-request-id, SetCallback's with a Message whose Token is empty. It returns the same
// input errors as Broadcast, and ErrStopped once Stop has begun.
func (c *Client) SendBroadcast(ctx context.Context, n *BroadcastNotification) error {
	h, err := c.http2()
	if err != nil {
		return err
	}
	r, err := newBroadcastRequest(n, h.topic, h.bc.policy)
	if err != nil {
		return err
	}
	return enqueue(ctx, c, h.queue, r)
}
