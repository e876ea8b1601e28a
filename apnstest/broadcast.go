// This file owns HTTP2Server's broadcast API (PROTOCOL.md §5): channel management on
// /1/apps/<bundle ID>/channels and /1/apps/<bundle ID>/all-channels, and broadcast sends on
// /4/broadcasts/apps/<bundle ID>.
//
// Design: Apple serves channel management on its own hosts and ports, and broadcasts on the
// push hosts. The mock serves both on the HTTP2Server's one address, beside device pushes:
// the paths do not overlap, and a broadcast must see the channels management made (whether
// one exists, its storage policy), which one server holds without any wiring. A client
// keeps a connection of its own to the management endpoint anyway, so pointing it at the
// same URL (apns.WithBroadcastManagementURL(s.URL)) exercises the same code as Apple's hosts.

package apnstest

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// BroadcastOp names a request of the broadcast API.
type BroadcastOp string

// The requests of the broadcast API.
const (
	OpCreateChannel BroadcastOp = "create"    // POST /1/apps/<bundle ID>/channels
	OpReadChannel   BroadcastOp = "read"      // GET /1/apps/<bundle ID>/channels
	OpDeleteChannel BroadcastOp = "delete"    // DELETE /1/apps/<bundle ID>/channels
	OpListChannels  BroadcastOp = "list"      // GET /1/apps/<bundle ID>/all-channels
	OpBroadcast     BroadcastOp = "broadcast" // POST /4/broadcasts/apps/<bundle ID>
	OpUnknown       BroadcastOp = ""          // a method or path the API does not have
)

// DefaultChannelLimit is how many channels HTTP2Server lets one app have, as APNs does,
// unless SetChannelLimit says otherwise.
const DefaultChannelLimit = 10000

// Broadcast API limits.
const (
	maxBroadcastPayload = 5120
	maxChannelIDBytes   = 64 // decoded; the mock's own bound, Apple states none
)

// BroadcastRequest is one request of the broadcast API that HTTP2Server answered, with its
// answer. Fields not reached by the checks before a refusal may be empty.
//
// HTTP2Server answers the broadcast API's requests like APNs. Checks run in this order and
// the first failure answers: method and path (404 BadPath for a path the API lacks, 405
// MethodNotAllowed for a method its path lacks); a repeated authorization or apns-* header
// (400 DuplicateHeaders); authentication as for device pushes, without apns-topic (403,
// 429); the bundle ID, without a push-type suffix (400 TopicDisallowed), with the capability
// (400 FeatureNotEnabled); apns-request-id or apns-id a lowercase UUID (400 BadMessageId).
// Then, per operation:
//   - create: a body (400 PayloadEmpty), a JSON object (400 BadRequestPayload) with only
//     message-storage-policy and push-type (400 BadRequestParams), push-type present (400
//     MissingPushType) and LiveActivity (400 InvalidPushType), the policy 0 or 1 (400
//     BadRequestParams), room for one more channel (400 CannotCreateChannelConfig); answer
//     201 with apns-channel-id, 16 random bytes in standard base64, never issued before.
//   - read, delete: apns-channel-id present (400 MissingChannelId), standard base64 of at
//     most 64 bytes (400 BadChannelId), a channel of the app (400 ChannelNotRegistered);
//     answer 200 {"message-storage-policy":P,"push-type":"LiveActivity"}, or 204.
//   - list: answer 200 {"channels":[...]}, in creation order.
//   - broadcast: apns-push-type present (400 MissingPushType) and liveactivity, in any case
//     (400 InvalidPushType); apns-channel-id as for read; apns-priority 10 or 5 when present
//     (400 BadPriority); apns-expiration present and decimal, and 0 on a channel of policy 0
//     (400 BadExpirationDate); a body (400 PayloadEmpty; also for the JSON null, the mock's
//     choice of the nearest reason) of at most 5120 bytes (413 PayloadTooLarge); answer 200.
//
// RespondBroadcastFunc comes last. Every answer carries apns-request-id: the request's when
// it is a canonical lowercase UUID, else a new one. TopicMismatch is not modelled: the mock
// does not know which bundle IDs a certificate or signing key covers.
type BroadcastRequest struct {
	Op         BroadcastOp // OpUnknown for a method or path the API lacks
	Method     string      // the HTTP method
	Path       string      // the URL path
	BundleID   string      // from the path
	ChannelID  string      // apns-channel-id as sent; for OpCreateChannel, the new channel's
	RequestID  string      // apns-request-id (or apns-id) as sent, or ""
	PushType   string      // apns-push-type, or for OpCreateChannel the body's push-type
	Priority   int         // apns-priority of a broadcast: 10 when absent, 0 when not a number; 0 for the others
	Expiration string      // apns-expiration as sent, or ""
	// StoragePolicy is the message-storage-policy of the channel created, read or
	// broadcast to; -1 when not known.
	StoragePolicy int
	Payload       []byte // the body, as received; nil when not read or too large
	KeyID         string // kid of the provider token; "" with certificate authentication
	Conn          int    // 1-based sequence number of the connection that carried it

	Status int    // the HTTP status answered: 200, 201 or 204 on success
	Reason string // the reason of a refusal, else ""
}

// broadcastState is the broadcast API's state: the channels and the records.
type broadcastState struct {
	mu       sync.Mutex
	apps     map[string]*broadcastApp // bundle ID -> channels
	issued   map[string]bool          // every channel ID ever issued, deleted ones included
	enabled  map[string]bool          // bundle IDs with the capability; nil: all
	limit    int                      // channels per app; 0: DefaultChannelLimit
	log      []BroadcastRequest
	byCh     map[string][]int // channel ID -> indexes in log of accepted broadcasts
	respond  func(BroadcastRequest) *Response
	observer func(BroadcastRequest)
}

// broadcastApp holds one app's channels.
type broadcastApp struct {
	order    []string       // channel IDs in creation order
	policies map[string]int // channel ID -> storage policy
}

// EnableBroadcast restricts the broadcast API to the given bundle IDs: requests for any
// other app are refused with 400 FeatureNotEnabled, as for an App ID without the Broadcast
// capability. Until it is called, every app has the capability.
func (s *HTTP2Server) EnableBroadcast(bundleIDs ...string) {
	b := &s.bcast
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.enabled == nil {
		b.enabled = make(map[string]bool)
	}
	for _, id := range bundleIDs {
		b.enabled[id] = true
	}
}

// SetChannelLimit sets how many channels one app may have; creating one more is refused
// with 400 CannotCreateChannelConfig. n <= 0 means DefaultChannelLimit.
func (s *HTTP2Server) SetChannelLimit(n int) {
	s.bcast.mu.Lock()
	s.bcast.limit = n
	s.bcast.mu.Unlock()
}

// RespondBroadcastFunc sets a function called for every request of the broadcast API that
// passes the checks, before it takes effect. A non-nil result with an error Status (300 or
// more) is the answer, and the request takes no effect; its Delay is waited first (a
// success Status with a Delay delays the normal answer); Reason, RetryAfter apply, Times and
// Timestamp are ignored. nil means normal handling. It runs on handler goroutines, possibly
// concurrently. A nil f removes it.
func (s *HTTP2Server) RespondBroadcastFunc(f func(BroadcastRequest) *Response) {
	s.bcast.mu.Lock()
	s.bcast.respond = f
	s.bcast.mu.Unlock()
}

// ObserveBroadcast sets a function called with every request of the broadcast API once it
// has been answered, accepted or refused, from its handler goroutine, possibly concurrently.
// A nil f removes it.
func (s *HTTP2Server) ObserveBroadcast(f func(BroadcastRequest)) {
	s.bcast.mu.Lock()
	s.bcast.observer = f
	s.bcast.mu.Unlock()
}

// Broadcasts returns the broadcasts accepted on a channel, in the order they were
// answered. Payload slices are shared with the server and must not be modified.
func (s *HTTP2Server) Broadcasts(channelID string) []BroadcastRequest {
	b := &s.bcast
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]BroadcastRequest, 0, len(b.byCh[channelID]))
	for _, i := range b.byCh[channelID] {
		out = append(out, b.log[i])
	}
	return out
}

// BroadcastRequests returns every request of the broadcast API answered so far, accepted or
// refused, management and broadcasts, in the order they were answered.
func (s *HTTP2Server) BroadcastRequests() []BroadcastRequest {
	s.bcast.mu.Lock()
	defer s.bcast.mu.Unlock()
	return slices.Clone(s.bcast.log)
}

// Channels returns the IDs of an app's channels, in the order they were created.
func (s *HTTP2Server) Channels(bundleID string) []string {
	s.bcast.mu.Lock()
	defer s.bcast.mu.Unlock()
	if a := s.bcast.apps[bundleID]; a != nil {
		return slices.Clone(a.order)
	}
	return nil
}

// isBroadcastPath reports whether a request belongs to the broadcast API.
func isBroadcastPath(path string) bool {
	return strings.HasPrefix(path, "/1/") || strings.HasPrefix(path, "/4/")
}

// serveBroadcast handles one request of the broadcast API (see BroadcastRequest).
func (s *HTTP2Server) serveBroadcast(hc *h2Conn, w http.ResponseWriter, r *http.Request) {
	req := BroadcastRequest{Method: r.Method, Path: r.URL.Path, Conn: hc.tc.seq, StoragePolicy: -1}
	ans, ok := s.judgeBroadcast(hc, r, &req)
	if !ok {
		return // the client went away while sending the body
	}
	id := req.RequestID
	if !isUUID(id) {
		id = newUUID()
	}
	h := w.Header()
	h.Set("Apns-Request-Id", id)
	if ans.retryAfter != "" {
		h.Set("Retry-After", ans.retryAfter)
	}
	req.Status, req.Reason = ans.status, ans.reason
	if ans.status >= 300 && req.Reason == "" {
		req.Reason = defaultReasons[ans.status]
	}
	b := &s.bcast
	b.mu.Lock()
	b.log = append(b.log, req)
	if req.Op == OpBroadcast && req.Status == http.StatusOK {
		if b.byCh == nil {
			b.byCh = make(map[string][]int)
		}
		b.byCh[req.ChannelID] = append(b.byCh[req.ChannelID], len(b.log)-1)
	}
	observe := b.observer
	b.mu.Unlock()
	if observe != nil {
		c := req
		c.Payload = slices.Clone(req.Payload)
		observe(c)
	}
	if ans.status >= 300 && s.obsRej != nil {
		s.obsRej(RejectedRequest{Request: Request{ID: req.RequestID, PushType: req.PushType, Priority: req.Priority,
			Expiration: req.Expiration, Payload: req.Payload, KeyID: req.KeyID, Conn: req.Conn}, Status: req.Status, Reason: req.Reason})
	}
	switch {
	case ans.status >= 300:
		body, _ := json.Marshal(struct {
			Reason string `json:"reason"`
		}{req.Reason})
		h.Set("Content-Type", "application/json")
		h.Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(ans.status)
		_, _ = w.Write(body)
	case req.Op == OpCreateChannel:
		h.Set("Apns-Channel-Id", req.ChannelID)
		w.WriteHeader(ans.status)
	case ans.body != nil:
		h.Set("Content-Type", "application/json")
		h.Set("Content-Length", strconv.Itoa(len(ans.body)))
		w.WriteHeader(ans.status)
		_, _ = w.Write(ans.body)
	default:
		w.WriteHeader(ans.status)
	}
}

// broadcastAnswer is how a request of the broadcast API is to be answered.
type broadcastAnswer struct {
	status     int
	reason     string
	body       []byte // for a success
	retryAfter string
}

func refuse(status int, reason string) (broadcastAnswer, bool) {
	return broadcastAnswer{status: status, reason: reason}, true
}

// judgeBroadcast runs the checks, the script and the operation, filling req as it goes. ok
// is false when reading the body failed.
func (s *HTTP2Server) judgeBroadcast(hc *h2Conn, r *http.Request, req *BroadcastRequest) (broadcastAnswer, bool) {
	hdr := r.Header
	req.RequestID = cmpStr(hdr.Get("Apns-Request-Id"), hdr.Get("Apns-Id"))
	path := r.URL.Path
	switch {
	case strings.HasPrefix(path, "/4/broadcasts/apps/"):
		req.BundleID = strings.TrimPrefix(path, "/4/broadcasts/apps/")
		if req.BundleID == "" || strings.Contains(req.BundleID, "/") {
			return refuse(404, "BadPath")
		}
		if r.Method != http.MethodPost {
			return refuse(405, "MethodNotAllowed")
		}
		req.Op = OpBroadcast
	case strings.HasPrefix(path, "/1/apps/"):
		bundle, rest, _ := strings.Cut(strings.TrimPrefix(path, "/1/apps/"), "/")
		req.BundleID = bundle
		if bundle == "" {
			return refuse(404, "BadPath")
		}
		switch {
		case rest == "channels" && r.Method == http.MethodPost:
			req.Op = OpCreateChannel
		case rest == "channels" && r.Method == http.MethodGet:
			req.Op = OpReadChannel
		case rest == "channels" && r.Method == http.MethodDelete:
			req.Op = OpDeleteChannel
		case rest == "all-channels" && r.Method == http.MethodGet:
			req.Op = OpListChannels
		case rest == "channels", rest == "all-channels":
			return refuse(405, "MethodNotAllowed")
		default:
			return refuse(404, "BadPath")
		}
	default:
		return refuse(404, "BadPath")
	}
	for name, vals := range hdr {
		if len(vals) > 1 && (name == "Authorization" || strings.HasPrefix(name, "Apns-")) {
			return refuse(400, "DuplicateHeaders")
		}
	}
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 { // token authentication
		if ans, ok := s.authenticateBroadcast(hc, hdr, req); !ok {
			return ans, true
		}
	}
	if strings.Contains(req.BundleID, ".push-type.") {
		return refuse(400, "TopicDisallowed")
	}
	b := &s.bcast
	b.mu.Lock()
	enabled := b.enabled == nil || b.enabled[req.BundleID]
	b.mu.Unlock()
	if !enabled {
		return refuse(400, "FeatureNotEnabled")
	}
	if req.RequestID != "" && !isUUID(req.RequestID) {
		return refuse(400, "BadMessageId")
	}

	var create struct{ policy int }
	switch req.Op {
	case OpCreateChannel:
		body, err := io.ReadAll(io.LimitReader(r.Body, maxBroadcastPayload+1))
		if err != nil {
			return broadcastAnswer{}, false
		}
		req.Payload = body
		if len(body) == 0 {
			return refuse(400, "PayloadEmpty")
		}
		var fields map[string]json.RawMessage
		if json.Unmarshal(body, &fields) != nil || fields == nil {
			return refuse(400, "BadRequestPayload")
		}
		for k := range fields {
			if k != "message-storage-policy" && k != "push-type" {
				return refuse(400, "BadRequestParams")
			}
		}
		pt, ok := fields["push-type"]
		if !ok {
			return refuse(400, "MissingPushType")
		}
		if json.Unmarshal(pt, &req.PushType) != nil || !strings.EqualFold(req.PushType, "LiveActivity") {
			return refuse(400, "InvalidPushType")
		}
		p, ok := fields["message-storage-policy"]
		if !ok || json.Unmarshal(p, &create.policy) != nil || create.policy != 0 && create.policy != 1 {
			return refuse(400, "BadRequestParams")
		}
		req.StoragePolicy = create.policy
	case OpReadChannel, OpDeleteChannel:
		if ans, ok := s.checkChannel(hdr, req); !ok {
			return ans, true
		}
	case OpBroadcast:
		req.PushType = hdr.Get("Apns-Push-Type")
		req.Priority = defaultPriority
		req.Expiration = hdr.Get("Apns-Expiration")
		prio, hasPrio := header(hdr, "Apns-Priority")
		if hasPrio {
			req.Priority, _ = strconv.Atoi(prio)
		}
		if _, ok := header(hdr, "Apns-Push-Type"); !ok {
			return refuse(400, "MissingPushType")
		}
		if !strings.EqualFold(req.PushType, "liveactivity") {
			return refuse(400, "InvalidPushType")
		}
		if ans, ok := s.checkChannel(hdr, req); !ok {
			return ans, true
		}
		if hasPrio && prio != "10" && prio != "5" {
			return refuse(400, "BadPriority")
		}
		exp, hasExp := header(hdr, "Apns-Expiration")
		n, err := strconv.ParseUint(exp, 10, 64)
		if !hasExp || err != nil || req.StoragePolicy == 0 && n != 0 {
			return refuse(400, "BadExpirationDate")
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, maxBroadcastPayload+1))
		if err != nil {
			return broadcastAnswer{}, false
		}
		switch {
		case len(body) == 0, isNull(body):
			return refuse(400, "PayloadEmpty")
		case len(body) > maxBroadcastPayload:
			return refuse(413, "PayloadTooLarge")
		}
		req.Payload = body
	}

	b.mu.Lock()
	respond := b.respond
	b.mu.Unlock()
	if respond != nil {
		c := *req
		c.Payload = slices.Clone(req.Payload)
		if sc := respond(c); sc != nil {
			if sc.Delay > 0 && !sleepCtx(r.Context(), sc.Delay) {
				return broadcastAnswer{}, false
			}
			if sc.Status >= 300 {
				return broadcastAnswer{status: sc.Status, reason: sc.Reason, retryAfter: sc.RetryAfter}, true
			}
		}
	}
	return s.succeed(req), true
}

// succeed carries out an operation that passed the checks and returns its answer.
func (s *HTTP2Server) succeed(req *BroadcastRequest) broadcastAnswer {
	b := &s.bcast
	b.mu.Lock()
	defer b.mu.Unlock()
	app := b.apps[req.BundleID]
	switch req.Op {
	case OpCreateChannel:
		limit := b.limit
		if limit <= 0 {
			limit = DefaultChannelLimit
		}
		if app != nil && len(app.order) >= limit {
			return broadcastAnswer{status: 400, reason: "CannotCreateChannelConfig"}
		}
		req.ChannelID = b.newChannelIDLocked()
		if app == nil {
			if b.apps == nil {
				b.apps = make(map[string]*broadcastApp)
			}
			app = &broadcastApp{policies: make(map[string]int)}
			b.apps[req.BundleID] = app
		}
		app.order = append(app.order, req.ChannelID)
		app.policies[req.ChannelID] = req.StoragePolicy
		return broadcastAnswer{status: http.StatusCreated}
	case OpReadChannel:
		body, _ := json.Marshal(struct {
			Policy   int    `json:"message-storage-policy"`
			PushType string `json:"push-type"`
		}{req.StoragePolicy, "LiveActivity"})
		return broadcastAnswer{status: http.StatusOK, body: body}
	case OpDeleteChannel:
		if app != nil {
			if _, ok := app.policies[req.ChannelID]; ok { // not deleted meanwhile
				delete(app.policies, req.ChannelID)
				app.order = slices.DeleteFunc(app.order, func(id string) bool { return id == req.ChannelID })
			}
		}
		return broadcastAnswer{status: http.StatusNoContent}
	case OpListChannels:
		ids := []string{}
		if app != nil {
			ids = app.order
		}
		body, _ := json.Marshal(struct {
			Channels []string `json:"channels"`
		}{ids})
		return broadcastAnswer{status: http.StatusOK, body: body}
	default: // OpBroadcast
		return broadcastAnswer{status: http.StatusOK}
	}
}

// newChannelIDLocked returns a random channel ID never issued before.
func (b *broadcastState) newChannelIDLocked() string {
	if b.issued == nil {
		b.issued = make(map[string]bool)
	}
	for {
		var raw [16]byte
		_, _ = rand.Read(raw[:])
		id := base64.StdEncoding.EncodeToString(raw[:])
		if !b.issued[id] {
			b.issued[id] = true
			return id
		}
	}
}

// checkChannel checks apns-channel-id and finds the channel's policy.
func (s *HTTP2Server) checkChannel(hdr http.Header, req *BroadcastRequest) (broadcastAnswer, bool) {
	id, ok := header(hdr, "Apns-Channel-Id")
	req.ChannelID = id
	if !ok || id == "" {
		return broadcastAnswer{status: 400, reason: "MissingChannelId"}, false
	}
	raw, err := base64.StdEncoding.DecodeString(id)
	if err != nil || len(raw) == 0 || len(raw) > maxChannelIDBytes {
		return broadcastAnswer{status: 400, reason: "BadChannelId"}, false
	}
	b := &s.bcast
	b.mu.Lock()
	defer b.mu.Unlock()
	app := b.apps[req.BundleID]
	if app == nil {
		return broadcastAnswer{status: 400, reason: "ChannelNotRegistered"}, false
	}
	p, ok := app.policies[id]
	if !ok {
		return broadcastAnswer{status: 400, reason: "ChannelNotRegistered"}, false
	}
	req.StoragePolicy = p
	return broadcastAnswer{}, true
}

// authenticateBroadcast applies the provider-token rules to a request without a client
// certificate; the broadcast API takes no apns-topic.
func (s *HTTP2Server) authenticateBroadcast(hc *h2Conn, hdr http.Header, req *BroadcastRequest) (broadcastAnswer, bool) {
	var r Request
	r.Topic = "-" // no MissingTopic: the bundle ID is in the path
	v, ok := s.authenticate(hc, hdr, &r)
	req.KeyID = r.KeyID
	if !ok {
		return broadcastAnswer{status: v.status, reason: v.reason}, false
	}
	return broadcastAnswer{}, true
}

func cmpStr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
