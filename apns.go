// Package apns is a client for the Apple Push Notification service (APNs) binary provider
// protocol and its feedback service.
//
// # Usage
//
// Create a client with the gateway address and a PEM certificate and key, optionally set a
// callback for rejected notifications, start some workers and send:
//
//	client, err := apns.CreateClient("gateway.push.apple.com", cert, key, false)
//	client.SetCallback(func(m *apns.Message, code uint8) { /* handle rejection */ })
//	err = client.Start(5)
//	err = client.Send(hexToken, time.Now().Add(24*time.Hour), apns.PRIORITY_IMMEDIATE, payload)
//	err = client.Stop()
//
// # Delivery semantics
//
// APNs never acknowledges an accepted notification: it answers only when it rejects one, with
// a 6-byte error response naming the rejected notification, and then closes the connection,
// discarding everything written after it. The client therefore keeps every written frame in a
// per-connection in-flight ring. A frame that has been in the ring for the assume-sent timeout
// (WORKER_ASSUME_SENT_TIMEOUT by default) without an error response is assumed delivered and
// dropped from the ring.
//
// When an error response arrives, the named notification is handed to the callback with
// Apple's status code, the frames written before it count as delivered, and the frames written
// after it are written again, in order, first thing on a new connection. Status 10 (shutdown)
// names the last good notification instead: nothing is reported, the rest is replayed.
// When a connection is lost without an error response, nothing is known about the frames in
// its ring, so all of them are replayed: a device may then get a notification twice. For the
// next 30 seconds the worker then writes in chunks, each connection ending with a sentinel
// frame whose rejection confirms the chunk, and sizes the chunks to what the gateway takes
// per connection: a gateway that reads at least two frames on every connection gets every
// notification.
//
// Every notification accepted by Send (Send returned nil) therefore ends in exactly one of
// two ways: it is written and assumed delivered, or it is reported to the callback. A
// notification that Stop gave up on (the gateway stayed unreachable, or kept ending
// connections without confirming anything) is reported with StatusUnknown (255), counted in
// Stats.Unsent if the gateway never took it and in Stats.Unconfirmed if it may have arrived.
//
// # Goroutines
//
// Start runs one goroutine per connection that owns the connection's writer and ring, one
// short-lived reader per connection that waits for the error response, and one dispatcher
// goroutine that calls the callbacks one at a time, in the order the rejections were
// learned, without holding any lock. On HTTP/2, Start runs instead one scheduler goroutine,
// one goroutine per request in flight, and one silence detector that probes and closes
// connections that go silent with requests in flight. SetupFeedbackClient runs one polling
// goroutine. Stop waits for all of them to exit.
//
// Since Stop and Shutdown wait for the callbacks and the error handler, those must never call
// Stop or Shutdown themselves: the call would wait for itself. Stop the client from a callback
// or handler on another goroutine (go client.Stop()), as with http.Server.Shutdown.
package apns

import "time"

// Notification priorities, the values of the frame's priority item.
const (
	// PRIORITY_IMMEDIATE asks APNs to deliver the notification at once. It must trigger an
	// alert, sound or badge on the device.
	PRIORITY_IMMEDIATE = 10
	// PRIORITY_DELAYED asks APNs to deliver the notification at a power-efficient time.
	PRIORITY_DELAYED = 5
)

// Default timeouts of the binary workers. They are constants so that code written against the
// 2014 API keeps compiling; to lower them for one client, use WithAssumeSentTimeout and
// WithIdleTimeout.
const (
	// WORKER_ASSUME_SENT_TIMEOUT is how long a written frame stays in flight: a frame with no
	// error response after this long is assumed delivered. Stop takes up to this long when the
	// gateway does not answer the sentinel frame that ends each connection.
	WORKER_ASSUME_SENT_TIMEOUT = 5 * time.Second
	// WORKER_IDLE_TIMEOUT is how long a connection may go without traffic before the worker
	// replaces it with a fresh one (idle connections to APNs tend to go stale).
	WORKER_IDLE_TIMEOUT = 5 * time.Minute
)

// Default ports of Apple's binary services, used when an address has no port.
const (
	DefaultGatewayPort  = "2195"
	DefaultFeedbackPort = "2196"
)
