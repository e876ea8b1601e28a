package apns

import (
	"fmt"
	"testing"
)

// At most MaxFeedbackTokens tokens wait for GetBadTokens; beyond that the oldest are dropped,
// so the newest news about a device wins (issue 16 item 5).
func TestFeedbackCapDropsTheOldestWaitingTokens(t *testing.T) {
	fc := &FeedbackClient{ready: make(chan struct{}, 1)}
	tok := func(i int) BadToken { return BadToken{Token: fmt.Sprintf("%08x", i)} }
	batch := make([]BadToken, MaxFeedbackTokens)
	for i := range batch {
		batch[i] = tok(i)
	}
	fc.add(batch)
	fc.add([]BadToken{tok(MaxFeedbackTokens), tok(MaxFeedbackTokens + 1)})
	if n := len(fc.pending); n != MaxFeedbackTokens {
		t.Fatalf("%d tokens wait; want MaxFeedbackTokens (%d)", n, MaxFeedbackTokens)
	}
	if first, last := fc.pending[0], fc.pending[len(fc.pending)-1]; first != tok(2) || last != tok(MaxFeedbackTokens+1) {
		t.Errorf("waiting tokens run from %s to %s; want %s to %s (the two oldest dropped)",
			first.Token, last.Token, tok(2).Token, tok(MaxFeedbackTokens+1).Token)
	}
}
