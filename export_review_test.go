package apns

// BreakProviderTokenKeyFor breaks a token client's signing key (as BreakProviderTokenKey) and
// returns a function that mends it: a provider token that fails, then works.
func BreakProviderTokenKeyFor(c *Client) (mend func()) {
	orig := h2Of(c).token.key
	BreakProviderTokenKey(c)
	return func() {
		h2Of(c).token.mu.Lock()
		h2Of(c).token.key = orig
		h2Of(c).token.mu.Unlock()
	}
}
