package apns

// This file holds the package's sentinel errors and the APNs status codes.

import (
	"errors"
	"fmt"
)

// Errors returned by Send for bad input. Each names one problem, so callers can test for it
// with errors.Is. ErrPayloadTooLarge and ErrInvalidPriority come wrapped with the size or
// priority given and what the protocol in use takes.
var (
	ErrTokenNotHex       = errors.New("apns: device token is not hexadecimal")
	ErrTokenLength       = errors.New("apns: device token is not 32 bytes (64 hex digits)")
	ErrPayloadMarshal    = errors.New("apns: payload cannot be marshalled to JSON")
	ErrPayloadTooLarge   = errors.New("apns: payload is too large")
	ErrPayloadEmpty      = errors.New("apns: payload is empty")
	ErrInvalidPriority   = errors.New("apns: invalid priority")
	ErrInvalidExpiry     = errors.New("apns: expiry is outside the 32-bit UNIX time range")
	ErrStopped           = errors.New("apns: client is stopped")
	ErrAlreadyStarted    = errors.New("apns: client is already started")
	ErrNoWorkers         = errors.New("apns: worker count must be at least 1")
	ErrFeedbackStopped   = errors.New("apns: feedback client is stopped")
	ErrMalformedFeedback = errors.New("apns: malformed feedback tuple")
	// ErrNilNotification is returned by Push, SendNotification, Broadcast and SendBroadcast
	// when given a nil notification.
	ErrNilNotification = errors.New("apns: notification is nil")
	// ErrInvalidID means a Notification.ID or BroadcastNotification.RequestID is not a
	// canonical lowercase UUID (8-4-4-4-12 hexadecimal digits), the only form APNs takes.
	ErrInvalidID = errors.New("apns: ID is not a canonical lowercase UUID")
	// ErrInvalidTopic means a topic (Notification.Topic, or the client's WithTopic) holds a
	// control character, which cannot go in a header.
	ErrInvalidTopic = errors.New("apns: topic holds a control character")
)

// payloadTooLarge is ErrPayloadTooLarge with the payload's size and the limit of the protocol
// in use, which the sentinel's text cannot name: 2048 bytes on the binary protocol, 4096 on
// HTTP/2 (5120 for voip).
func payloadTooLarge(size, limit int, where string) error {
	return fmt.Errorf("%w: %d bytes, more than the %d bytes %s", ErrPayloadTooLarge, size, limit, where)
}

// invalidPriority is ErrInvalidPriority with the priority given and the ones taken.
func invalidPriority(priority int, taken string) error {
	return fmt.Errorf("%w %d: %s", ErrInvalidPriority, priority, taken)
}

// Errors passed to the error handler (see WithErrorHandler) for events that concern no single
// accepted notification.
var (
	// ErrUnknownID means the gateway named an identifier that is not in flight: the frame
	// was already assumed delivered, or the server sent nonsense. The frames still in flight
	// are replayed.
	ErrUnknownID = errors.New("apns: error response names a notification that is not in flight")
	// ErrGarbage means the server sent bytes that are not an error response.
	ErrGarbage = errors.New("apns: server sent bytes that are not an error response")
)

// Status is an APNs error-response status code.
type Status uint8

// The status codes of APNs error responses.
const (
	StatusNoErrors           Status = 0
	StatusProcessingError    Status = 1
	StatusMissingDeviceToken Status = 2
	StatusMissingTopic       Status = 3
	StatusMissingPayload     Status = 4
	StatusInvalidTokenSize   Status = 5
	StatusInvalidTopicSize   Status = 6
	StatusInvalidPayloadSize Status = 7
	StatusInvalidToken       Status = 8
	StatusShutdown           Status = 10
	StatusProtocolError      Status = 128
	// StatusUnknown is Apple's "none (unknown)". The client also uses it for notifications it
	// gave up on without writing them (the gateway stayed unreachable while stopping).
	StatusUnknown Status = 255
)

var statusNames = map[Status]string{
	StatusNoErrors:           "no errors",
	StatusProcessingError:    "processing error",
	StatusMissingDeviceToken: "missing device token",
	StatusMissingTopic:       "missing topic",
	StatusMissingPayload:     "missing payload",
	StatusInvalidTokenSize:   "invalid token size",
	StatusInvalidTopicSize:   "invalid topic size",
	StatusInvalidPayloadSize: "invalid payload size",
	StatusInvalidToken:       "invalid token",
	StatusShutdown:           "shutdown",
	StatusProtocolError:      "protocol error",
	StatusUnknown:            "unknown",
}

// String returns Apple's description of the status.
func (s Status) String() string {
	if name, ok := statusNames[s]; ok {
		return name
	}
	return fmt.Sprintf("status %d", uint8(s))
}

// ResponseError is an error response that the client could not match to a notification in
// flight. It is passed to the error handler and wraps ErrUnknownID.
type ResponseError struct {
	Status Status
	ID     uint32
}

// Error describes the response by its status and identifier.
func (e *ResponseError) Error() string {
	return fmt.Sprintf("apns: error response %q for unknown notification id %d", e.Status, e.ID)
}

// Unwrap returns ErrUnknownID.
func (e *ResponseError) Unwrap() error { return ErrUnknownID }
