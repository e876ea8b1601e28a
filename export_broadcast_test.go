package apns

// Helpers for the external broadcast tests (package apns_test).

// ManagementAddr returns the host:port of c's channel-management endpoint, "" if none.
func ManagementAddr(c *Client) string { return h2Of(c).bc.addr }

// ManagementServerName returns the TLS server name c's management connection verifies.
func ManagementServerName(c *Client) string { return h2Of(c).bc.tr.TLSClientConfig.ServerName }
