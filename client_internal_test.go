package apns

import "testing"

func TestSplitAddrAddsDefaultPortAndFindsHost(t *testing.T) {
	cases := []struct{ in, hostPort, host string }{
		{"gateway.push.apple.com", "gateway.push.apple.com:2195", "gateway.push.apple.com"},
		{"gateway.push.apple.com:1234", "gateway.push.apple.com:1234", "gateway.push.apple.com"},
		{"127.0.0.1", "127.0.0.1:2195", "127.0.0.1"},
		{"::1", "[::1]:2195", "::1"},
		{"[::1]", "[::1]:2195", "::1"},
		{"[2001:db8::1]:443", "[2001:db8::1]:443", "2001:db8::1"},
	}
	for _, tc := range cases {
		hp, host, err := splitAddr(tc.in, DefaultGatewayPort)
		if err != nil || hp != tc.hostPort || host != tc.host {
			t.Errorf("splitAddr(%q) = %q, %q, %v; want %q, %q", tc.in, hp, host, err, tc.hostPort, tc.host)
		}
	}
	for _, bad := range []string{"", ":2195", "[]"} {
		if _, _, err := splitAddr(bad, DefaultGatewayPort); err == nil {
			t.Errorf("splitAddr(%q) succeeded", bad)
		}
	}
}

func TestBackoffGrowsAndIsCapped(t *testing.T) {
	for n, want := range map[int]int64{1: int64(backoffMin), 2: 2 * int64(backoffMin), 40: int64(backoffMax)} {
		got := int64(backoff(n))
		if got < want-want/10 || got > want+want/10 {
			t.Errorf("backoff(%d) = %d; want %d ± 10%%", n, got, want)
		}
	}
}
