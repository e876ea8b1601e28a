package apns

import (
	"math/big"
	"time"
)

// WithStartClaimedHook makes Start call f once it has claimed the start and let go of the
// client's lock, before it starts the transport: the window in which Stop may run.
func WithStartClaimedHook(f func()) Option { return func(s *settings) { s.startClaimed = f } }

// WithSilenceTimes replaces the silence detector's times (silence.go): how long a connection
// with requests in flight may read nothing before it is probed, and how long the probe's
// answer may take.
func WithSilenceTimes(after, timeout time.Duration) Option {
	return func(s *settings) { s.silenceAfter, s.silenceTimeout = after, timeout }
}

// BreakProviderTokenKey makes a token client's provider token impossible to sign, as a key
// whose private scalar is zero is.
func BreakProviderTokenKey(c *Client) {
	k := *c.h2.token.key
	//lint:ignore SA1019 a zero scalar is the one way to get a P-256 key that ecdsa.Sign refuses
	k.D = new(big.Int)
	c.h2.token.key = &k
}
