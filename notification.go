package apns

// This file owns the HTTP/2 API's public types of one notification: Notification, what goes
// in; Response, APNs' answer; Rejection, a notification that will not be delivered (on both
// protocols); and the mapping of APNs' reasons to the binary status codes.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"
)

// Limits of the HTTP/2 provider API.
const (
	MaxHTTP2PayloadSize = 4096
	MaxVoIPPayloadSize  = 5120
	MaxCollapseIDSize   = 64
)

// PriorityPowerSaving is apns-priority 1 (HTTP/2 API only): the device's power considerations
// come before everything else, and the notification does not wake the device.
const PriorityPowerSaving = 1

// Errors of the HTTP/2 API's input.
var (
	ErrInvalidCollapseID = errors.New("apns: collapse id is longer than 64 bytes or holds a control character")
	ErrInvalidPushType   = errors.New("apns: push type is not one APNs knows")
	ErrNotStarted        = errors.New("apns: client is not started")
	ErrNotHTTP2          = errors.New("apns: call needs a client of the HTTP/2 provider API")
)

// Notification is one notification for the HTTP/2 provider API, with every header APNs takes.
// Zero fields take the defaults given.
type Notification struct {
	DeviceToken string    // hexadecimal device token (any even length)
	Topic       string    // apns-topic; default: the client's topic (WithTopic, or the token client's)
	ID          string    // apns-id, a canonical lowercase UUID (else ErrInvalidID); generated when empty
	CollapseID  string    // apns-collapse-id, at most 64 bytes, no control characters
	PushType    string    // apns-push-type; default: "background" for a content-available-only payload, else "alert"
	Priority    int       // apns-priority: 10, 5 or 1; default 10. Background pushes go at 5 when 10 (or nothing) is given: APNs refuses them at 10
	Expiration  time.Time // apns-expiration; zero: header omitted, APNs stores the notification up to 30 days
	// Payload is the JSON payload: []byte or json.RawMessage are sent as they are, anything
	// else (a map, a struct, the payload builder) is marshalled.
	Payload any
}

// Response is APNs' answer to one notification.
type Response struct {
	StatusCode int       // HTTP status; 200 means accepted
	Reason     string    // APNs' reason for a rejection, passed through as sent
	ID         string    // apns-id of the notification
	Timestamp  time.Time // with 410: when APNs learned the token is no longer valid
}

// Sent reports whether APNs accepted the notification.
func (r *Response) Sent() bool { return r.StatusCode == http.StatusOK }

// Rejection describes a notification that will not be delivered: APNs rejected it, or the
// client gave up. It is an error, and what SetRejectionCallback's function receives. The
// channel calls (CreateChannel, ...) return it, with a nil Message, when APNs refuses them.
type Rejection struct {
	Message    *Message
	Code       uint8     // the binary protocol's status code with the nearest meaning (see Status)
	StatusCode int       // HTTP status of the last answer; 0 for the binary protocol or no answer
	Reason     string    // APNs' reason, or the binary status's description
	ID         string    // apns-id, for the HTTP/2 API; apns-request-id for broadcasts and channel calls
	Timestamp  time.Time // with 410: when the token stopped being valid
	ChannelID  string    // the broadcast channel, for broadcasts and channel calls (broadcast.go)
}

// Error describes the rejection by its HTTP status and reason, or by its binary status.
func (r *Rejection) Error() string {
	if r.Message == nil { // a channel-management call (channels.go)
		if r.Reason == "" { // an answer without APNs' JSON body
			return fmt.Sprintf("apns: channel request rejected: %d (no reason)", r.StatusCode)
		}
		return fmt.Sprintf("apns: channel request rejected: %d %s", r.StatusCode, r.Reason)
	}
	if r.StatusCode != 0 {
		return fmt.Sprintf("apns: notification rejected: %d %s", r.StatusCode, r.Reason)
	}
	return fmt.Sprintf("apns: notification rejected: status %d (%s)", r.Code, r.Reason)
}

// reasonCodes maps APNs reasons to the binary status with the nearest meaning.
var reasonCodes = map[string]Status{
	"BadDeviceToken":         StatusInvalidToken,
	"DeviceTokenNotForTopic": StatusInvalidToken,
	"Unregistered":           StatusInvalidToken,
	"ExpiredToken":           StatusInvalidToken,
	"MissingDeviceToken":     StatusMissingDeviceToken,
	"MissingTopic":           StatusMissingTopic,
	"BadTopic":               StatusInvalidTopicSize,
	"TopicDisallowed":        StatusInvalidTopicSize,
	"PayloadEmpty":           StatusMissingPayload,
	"PayloadTooLarge":        StatusInvalidPayloadSize,
	"BadCollapseId":          StatusProtocolError,
	"BadExpirationDate":      StatusProtocolError,
	"BadMessageId":           StatusProtocolError,
	"BadPriority":            StatusProtocolError,
	"DuplicateHeaders":       StatusProtocolError,
	"InvalidPushType":        StatusProtocolError,
	"BadPath":                StatusProtocolError,
	"MethodNotAllowed":       StatusProtocolError,
	"InternalServerError":    StatusProcessingError,
	"ServiceUnavailable":     StatusProcessingError,
	"Shutdown":               StatusShutdown,
	"TooManyRequests":        StatusProcessingError,
}

// codeOf returns the binary status for an answer: by reason, else by HTTP status class.
func codeOf(status int, reason string) Status {
	if code, ok := reasonCodes[reason]; ok {
		return code
	}
	switch {
	case status == http.StatusGone: // the token is no longer active, whatever the reason says
		return StatusInvalidToken
	case status == http.StatusForbidden, status >= 500:
		return StatusProcessingError
	default:
		return StatusUnknown
	}
}

// parseResponse reads APNs' answer: the apns-id header and, for a rejection, the JSON body
// {"reason": ..., "timestamp": milliseconds}. A body that is not such JSON leaves Reason empty
// and returns an error that also describes the HTTP status.
func parseResponse(status int, id string, body []byte) (*Response, error) {
	r := &Response{StatusCode: status, ID: id}
	if status == http.StatusOK || len(bytes.TrimSpace(body)) == 0 {
		return r, nil
	}
	var b struct {
		Reason    string `json:"reason"`
		Timestamp *int64 `json:"timestamp"`
	}
	if err := json.Unmarshal(body, &b); err != nil {
		return r, fmt.Errorf("apns: unreadable %d response body: %w", status, err)
	}
	r.Reason = b.Reason
	if b.Timestamp != nil {
		r.Timestamp = time.UnixMilli(*b.Timestamp).UTC()
	}
	return r, nil
}
