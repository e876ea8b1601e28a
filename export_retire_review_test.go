package apns

// Hooks for h2conn_attack20b_test.go.

// ManagementConnRefusesNewRequests reports whether c's management connection is open
// (Err is nil) but takes no new request: net/http has read the server's GOAWAY.
func ManagementConnRefusesNewRequests(c *Client) bool {
	m := h2Of(c).bc
	m.mu.Lock()
	cc := m.cc
	m.mu.Unlock()
	return cc != nil && cc.Err() == nil && cc.Available() == 0
}

// ManagementRetired returns, for each retired management connection, its InFlight and 1 if
// it is closed (Err not nil), else 0.
func ManagementRetired(c *Client) (out [][2]int) {
	m := h2Of(c).bc
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range m.retired.conns {
		e := 0
		if r.Err() != nil {
			e = 1
		}
		out = append(out, [2]int{r.InFlight(), e})
	}
	return out
}
