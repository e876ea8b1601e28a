package apns

// This file owns the encoding of an HTTP/2 request (PROTOCOL.md §4): validation of a
// Notification, its headers (push type inferred, priority, expiration, collapse id, topic) and
// body, built once and reused on retries.

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// h2Request is a notification ready to go: headers and body built once, reused on retries.
// Once built, header and its value slices are never modified, since a request that net/http
// has not let go of may still read them; a change means a new map.
type h2Request struct {
	path   string      // /3/device/<hex>
	header http.Header // lowercase names, as HTTP/2 sends them; no authorization
	body   []byte
	token  string // lowercase hex
	prio   uint8
	expiry uint32
	vals   [4]string // backing of the per-notification header values: id, topic, expiration, collapse id

	auth       string      // authorization in authHeader
	authHeader http.Header // header plus authorization, for token authentication

	channel string // apns-channel-id of a broadcast (broadcast.go), whose token is empty
}

// Request header names, lowercase so that net/http sends them without converting them.
const (
	hdrID         = "apns-id"
	hdrPushType   = "apns-push-type"
	hdrPriority   = "apns-priority"
	hdrTopic      = "apns-topic"
	hdrExpiration = "apns-expiration"
	hdrCollapseID = "apns-collapse-id"
	hdrAuth       = "authorization"
	hdrType       = "content-type"
)

// Header values that many requests share; never modified.
var (
	pushTypeValues = map[string][]string{}
	priorityValues = map[int][]string{
		PRIORITY_IMMEDIATE: {"10"}, PRIORITY_DELAYED: {"5"}, PriorityPowerSaving: {"1"},
	}
	jsonValue       = []string{"application/json"}
	zeroExpiryValue = []string{"0"}
)

func init() {
	for _, t := range []string{"alert", "background", "complication", "controls", "fileprovider",
		"liveactivity", "location", "mdm", "pushtotalk", "voip", "widgets"} {
		pushTypeValues[t] = []string{t}
	}
}

// newH2Request validates a notification and builds its request.
func newH2Request(n *Notification, defaultTopic string) (*h2Request, error) {
	if n == nil {
		return nil, ErrNilNotification
	}
	if err := checkHeaderFields(n.ID, cmp(n.Topic, defaultTopic), n.CollapseID); err != nil {
		return nil, err
	}
	tok := strings.ToLower(n.DeviceToken)
	if !isHex(tok) {
		return nil, ErrTokenNotHex
	}
	if tok == "" || len(tok)%2 != 0 {
		return nil, ErrTokenLength
	}
	body, err := encodePayload(n.Payload)
	if err != nil {
		return nil, err
	}
	pushType := n.PushType
	if pushType == "" {
		pushType = inferPushType(body)
	}
	pushTypeValue := pushTypeValues[pushType]
	if pushTypeValue == nil {
		return nil, ErrInvalidPushType
	}
	limit, where := MaxHTTP2PayloadSize, "the HTTP/2 API allows"
	if pushType == "voip" {
		limit, where = MaxVoIPPayloadSize, "the HTTP/2 API allows for voip"
	}
	if len(body) > limit {
		return nil, payloadTooLarge(len(body), limit, where)
	}
	prio := n.Priority
	if prio == 0 {
		prio = PRIORITY_IMMEDIATE
	}
	if pushType == "background" && prio == PRIORITY_IMMEDIATE {
		prio = PRIORITY_DELAYED // APNs refuses background pushes at 10 (400 BadPriority)
	}
	prioValue := priorityValues[prio]
	if prioValue == nil {
		return nil, invalidPriority(prio, "the HTTP/2 API takes 10 (immediate), 5 (power-saving) or 1 (lowest)")
	}
	if len(n.CollapseID) > MaxCollapseIDSize {
		return nil, ErrInvalidCollapseID
	}
	var exp uint32
	if !n.Expiration.IsZero() {
		var err error
		if exp, err = expirySeconds(n.Expiration); err != nil {
			return nil, err
		}
	}
	id := n.ID
	if id == "" {
		id = newUUID()
	}
	r := &h2Request{path: "/3/device/" + tok, body: body, token: tok, prio: uint8(prio), expiry: exp}
	r.vals[0] = id
	h := make(http.Header, 8)
	h[hdrPushType] = pushTypeValue
	h[hdrPriority] = prioValue
	h[hdrID] = r.vals[0:1:1]
	h[hdrType] = jsonValue
	if topic := cmp(n.Topic, defaultTopic); topic != "" {
		r.vals[1] = topic
		h[hdrTopic] = r.vals[1:2:2]
	}
	if !n.Expiration.IsZero() {
		r.vals[2] = strconv.FormatUint(uint64(exp), 10)
		h[hdrExpiration] = r.vals[2:3:3]
	}
	if n.CollapseID != "" {
		r.vals[3] = n.CollapseID
		h[hdrCollapseID] = r.vals[3:4:4]
	}
	r.header = h
	return r, nil
}

// encodePayload returns the JSON body of a request's payload: []byte and json.RawMessage as
// they are (copied: the caller may reuse its buffer once the call returns), anything else
// marshalled. No payload, an empty one or JSON null is ErrPayloadEmpty.
func encodePayload(payload any) ([]byte, error) {
	var body []byte
	switch p := payload.(type) {
	case nil:
		return nil, ErrPayloadEmpty
	case []byte:
		body = slices.Clone(p)
	case json.RawMessage:
		body = slices.Clone(p)
	default:
		var err error
		if body, err = json.Marshal(p); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrPayloadMarshal, err)
		}
	}
	if len(body) == 0 || isNullPayload(body) {
		return nil, ErrPayloadEmpty
	}
	return body, nil
}

// id returns the request's apns-id.
func (r *h2Request) id() string { return r.vals[0] }

// headerWith returns the request's header with authorization auth, if not empty. The map for
// one value is built once and kept for retries.
func (r *h2Request) headerWith(auth string) http.Header {
	if auth == "" {
		return r.header
	}
	if r.authHeader == nil || r.auth != auth {
		h := make(http.Header, len(r.header)+1)
		for k, v := range r.header {
			h[k] = v
		}
		h[hdrAuth] = []string{auth}
		r.auth, r.authHeader = auth, h
	}
	return r.authHeader
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

func cmp(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

var contentAvailable = []byte("content-available")

// inferPushType returns "background" for a payload whose aps dictionary has only
// content-available, and "alert" otherwise. A payload that does not spell the key out, and has
// no escapes that could spell it, cannot have it, and is not parsed.
func inferPushType(body []byte) string {
	if !bytes.Contains(body, contentAvailable) && bytes.IndexByte(body, '\\') < 0 {
		return "alert"
	}
	var p struct {
		Aps map[string]json.RawMessage `json:"aps"`
	}
	if json.Unmarshal(body, &p) == nil && len(p.Aps) == 1 && p.Aps["content-available"] != nil {
		return "background"
	}
	return "alert"
}

// newUUID returns a random (version 4) UUID in canonical lowercase form.
func newUUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var out [36]byte
	hex.Encode(out[0:8], b[0:4])
	out[8] = '-'
	hex.Encode(out[9:13], b[4:6])
	out[13] = '-'
	hex.Encode(out[14:18], b[6:8])
	out[18] = '-'
	hex.Encode(out[19:23], b[8:10])
	out[23] = '-'
	hex.Encode(out[24:], b[10:])
	return string(out[:])
}

// message rebuilds the Message of a request for the callbacks.
func (r *h2Request) message() *Message {
	tok, _ := hex.DecodeString(r.token)
	return &Message{Token: tok, Expiry: r.expiry, Priority: r.prio, Payload: r.body}
}
