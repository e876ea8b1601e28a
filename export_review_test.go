package apns

// BreakProviderTokenKeyFor breaks a token client's signing key (as BreakProviderTokenKey) and
// returns a function that mends it: a provider token that fails, then works.
func BreakProviderTokenKeyFor(c *Client) (mend func()) {
	orig := c.h2.token.key
	BreakProviderTokenKey(c)
	return func() {
		c.h2.token.mu.Lock()
		c.h2.token.key = orig
		c.h2.token.mu.Unlock()
	}
}
