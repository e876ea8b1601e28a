package main

// This file owns the broadcast side of "apns mock": the HTTP/2 mock serves channel
// management and broadcasts (apnstest.HTTP2Server), and each request is logged as a JSON
// line.

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/Kwik-messenger/apns-go/apnstest"
)

const mockBroadcastAbout = `
The HTTP/2 API also serves broadcast channels (iOS 18 Live Activities): channel management
(/1/apps/BUNDLE/channels and /all-channels, which Apple serves on its own management host) and
broadcasts (/4/broadcasts/apps/BUNDLE), on the same address; point a client's
WithBroadcastManagementURL at it. Each of their requests is logged as a JSON line with event
"broadcast".
`

// broadcastEvent is the JSON line logged for each request of the broadcast API.
type broadcastEvent struct {
	Event         string          `json:"event"` // "broadcast"
	Time          time.Time       `json:"time"`
	Op            string          `json:"op"` // create, read, delete, list, broadcast; "" for a bad method or path
	Conn          int             `json:"conn"`
	Bundle        string          `json:"bundle,omitempty"`
	Channel       string          `json:"channel,omitempty"`
	RequestID     string          `json:"request_id,omitempty"`
	StoragePolicy *int            `json:"storage_policy,omitempty"`
	Priority      int             `json:"priority,omitempty"`
	Expiry        string          `json:"expiry,omitempty"`
	KeyID         string          `json:"key_id,omitempty"`
	Payload       json.RawMessage `json:"payload,omitempty"`
	Status        int             `json:"status"`
	Reason        string          `json:"reason,omitempty"`
}

// observeBroadcast is the HTTP/2 server's ObserveBroadcast: it logs the request.
func (m *mockServers) observeBroadcast(r apnstest.BroadcastRequest) {
	e := &broadcastEvent{Event: "broadcast", Time: time.Now().UTC(), Op: string(r.Op), Conn: r.Conn,
		Bundle: r.BundleID, Channel: r.ChannelID, RequestID: r.RequestID, Priority: r.Priority,
		Expiry: r.Expiration, KeyID: r.KeyID, Status: r.Status, Reason: r.Reason}
	if r.StoragePolicy >= 0 {
		p := r.StoragePolicy
		e.StoragePolicy = &p
	}
	if len(r.Payload) > 0 && r.Op == apnstest.OpBroadcast {
		e.Payload = jsonOrString(r.Payload)
	}
	if err := writeJSONLine(m.env.stdout, e); err != nil {
		fmt.Fprintln(m.env.stderr, "apns mock:", err)
	}
}
