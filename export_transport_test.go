package apns

// h2Of returns the HTTP/2 transport of a client of the HTTP/2 API, for the test hooks.
func h2Of(c *Client) *h2Transport { return c.t.(*h2Transport) }
