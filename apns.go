// Package apns is a client for the Apple Push Notification service (APNs): Apple's HTTP/2
// provider API, with certificate or provider-token (JWT) authentication, and the legacy
// binary provider protocol with its feedback service, behind one Client.
//
// # Usage
//
// Create a client with the gateway and a PEM certificate and key (CreateTokenClient takes a
// .p8 signing key instead), optionally set a callback for notifications that will not be
// delivered, start some connections and send:
//
//	client, err := apns.CreateClient("api.push.apple.com", cert, key, false)
//	client.SetCallback(func(m *apns.Message, code uint8) { /* not delivered */ })
//	err = client.Start(2)
//	err = client.Send(hexToken, time.Now().Add(24*time.Hour), apns.PRIORITY_IMMEDIATE, payload)
//	err = client.Stop()
//
// The gateway decides the protocol: Apple's hosts (the retired binary gateway.push.apple.com
// included, which maps to its successor) and https:// URLs mean the HTTP/2 API, any other
// address the binary protocol; WithProtocol overrides. Everything else is the same for both.
//
// # Which call to use
//
// The 2014 API's calls are all kept, and behave as its README describes; where a newer call
// does more, the table says so.
//
//	To                                 Use                        Kept from 2014
//	queue a notification               SendContext                Send: no context
//	queue one with every HTTP/2 header SendNotification           -
//	send one, wait for APNs' answer    Push (HTTP/2)              -
//	hear of what is not delivered      SetRejectionCallback       SetCallback: status code only
//	stop                               Shutdown(ctx)              Stop: Shutdown, no deadline
//	take the tokens APNs says are bad  FeedbackClient.BadTokens   GetBadTokens: no context
//	read the feedback service once     ReadFeedback (binary)      -
//
// SendContext, SendNotification and SendBroadcast queue: the call returns once the client has
// taken the notification, and only a notification that is not delivered comes back, to the
// callbacks. Push and Broadcast bypass the queue and return APNs' answer. On a client of the
// HTTP/2 API, SetupFeedbackClient's feedback client hands out the tokens APNs answered with
// 410; on the binary protocol it polls the feedback service.
//
// # Delivery semantics
//
// Every notification accepted by a Send call (it returned nil) ends in exactly one of two
// ways: it is delivered (HTTP/2: APNs answered 200; binary: written and assumed delivered), or
// it is reported to the callbacks, with the status APNs gave or StatusUnknown (255) when the
// client gave up: counted in Stats.Unsent if the gateway never took it and in
// Stats.Unconfirmed if it may have arrived. A notification that got no answer over HTTP/2, or
// that was in flight on a binary connection lost without an error response, is sent again:
// a device may then get it twice (Stats.Duplicates).
//
// The binary protocol never acknowledges an accepted notification: APNs answers only when it
// rejects one, with a 6-byte error response naming the rejected notification, and then closes
// the connection, discarding everything written after it. The client therefore keeps every
// written frame in a per-connection in-flight ring. A frame that has been in the ring for the
// assume-sent timeout (WORKER_ASSUME_SENT_TIMEOUT by default) without an error response is
// assumed delivered and dropped from the ring. When an error response arrives, the named
// notification is handed to the callback with Apple's status code, the frames written before
// it count as delivered, and the frames written after it are written again, in order, first
// thing on a new connection. Status 10 (shutdown) names the last good notification instead:
// nothing is reported, the rest is replayed. After a connection lost without an error
// response, the worker writes for 30 seconds in chunks, each connection ending with a
// sentinel frame whose rejection confirms the chunk, sized to what the gateway takes per
// connection: a gateway that reads at least two frames on every connection gets every
// notification.
//
// # Goroutines
//
// On the binary protocol, Start runs one goroutine per connection that owns the connection's
// writer and ring, and one short-lived reader per connection that waits for the error
// response. On HTTP/2, Start runs one scheduler goroutine, one goroutine per request in
// flight, and one silence detector that probes and closes connections that go silent with
// requests in flight. On both, one dispatcher goroutine calls the callbacks, one at a time, in
// the order the outcomes were learned, without holding any lock; it runs only while callbacks
// are due. SetupFeedbackClient runs one polling goroutine. Stop waits for all of them to
// exit.
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

// Default timeouts of the binary protocol's connections. They are constants so that code written against the
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
