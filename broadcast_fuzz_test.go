package apns

import (
	"encoding/json"
	"strings"
	"testing"
)

// FuzzParseChannelResponses feeds the readers of the management host's answers (a channel's
// configuration, the channel list, a refusal's body) arbitrary bytes: none may panic, and
// what they accept must be what the bytes say.
func FuzzParseChannelResponses(f *testing.F) {
	for _, seed := range []string{
		`{"message-storage-policy":0,"push-type":"LiveActivity"}`,
		`{"message-storage-policy":1,"push-type":"LiveActivity"}`,
		`{"message-storage-policy":2}`,
		`{"channels":["dHN0LXNyY2gtY2hubA==","YWJj"]}`,
		`{"channels":[]}`,
		`{"channels":null}`,
		`{"reason":"ChannelNotRegistered"}`,
		`{"reason":"BadChannelId","timestamp":1700000000000}`,
		``, `null`, `[]`, `{`, `{"message-storage-policy":1e400}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if ch, err := parseChannelConfig(body); err == nil {
			if ch.StoragePolicy != NoMessageStored && ch.StoragePolicy != MostRecentMessageStored {
				t.Fatalf("accepted policy %d from %q", ch.StoragePolicy, body)
			}
			var b struct {
				Policy int `json:"message-storage-policy"`
			}
			if json.Unmarshal(body, &b) != nil || b.Policy != int(ch.StoragePolicy) {
				t.Fatalf("policy %d from %q, which says %d", ch.StoragePolicy, body, b.Policy)
			}
		}
		if ids, err := parseChannelList(body); err == nil {
			if ids == nil {
				t.Fatalf("nil list from %q", body)
			}
			var b struct{ Channels []string }
			if json.Unmarshal(body, &b) != nil || strings.Join(b.Channels, "\n") != strings.Join(ids, "\n") {
				t.Fatalf("list %q from %q", ids, body)
			}
		}
		for _, status := range []int{400, 403, 429, 503} {
			r, _ := parseResponse(status, "", body)
			if r == nil || r.StatusCode != status {
				t.Fatalf("parseResponse(%d, %q) = %+v", status, body, r)
			}
		}
	})
}
