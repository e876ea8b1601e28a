// Package apnstest provides in-process mock servers of the Apple Push Notification service,
// in the manner of net/http/httptest: for the legacy binary protocol a gateway (Server) and a
// feedback service (FeedbackServer), and for the HTTP/2 provider API an HTTP2Server that
// checks requests, certificates and provider tokens like APNs and answers with its reasons.
//
// All servers listen on 127.0.0.1 with TLS (version 1.2 or later) and present a certificate
// for 127.0.0.1, ::1 and localhost signed by a per-process test CA; ClientTLSConfig returns a
// configuration that trusts it, and ClientCertPEM returns a client certificate the servers
// accept. Like Apple's, the gateway and the feedback service refuse a client without a
// certificate (AllowNoClientCert lets it in); the HTTP/2 server takes a certificate or a
// provider token.
//
// The gateway parses notification commands 0 (simple), 1 (enhanced) and 2 (frame) strictly,
// following Apple's documentation rather than any client, and records what it accepts. It
// answers only errors, exactly as APNs did: a 6-byte error response (command 8, status,
// the 4 identifier bytes), after which it reads nothing more from that connection, so every
// frame the client wrote after the rejected one is discarded, and closes it. A bad command-0
// frame makes it drop the connection without a response. Tests provoke errors with
// RejectToken, RejectFunc and per-connection scripts (ConnScript).
//
// # Sentinel frames
//
// A sentinel is a command-2 frame that holds an identifier item and nothing else. It is not a
// notification: apns-go's client writes one as the last frame of each connection when it
// stops, and since APNs answers frames in order, the error response naming the sentinel
// (status 2, missing device token) confirms every notification written before it. The
// gateway answers sentinels like any malformed frame but keeps them out of Rejected and
// ObserveRejected, and counts them in Sentinels instead; their number varies from run to run
// with the connections open at Stop.
//
// Tokens are given to the mocks in hexadecimal, as applications hold them: Server.RejectToken
// and HTTP2Server.Respond take the same strings.
package apnstest
