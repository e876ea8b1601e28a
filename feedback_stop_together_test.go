package apns_test

import (
	"testing"
	"time"

	apns "github.com/Kwik-messenger/apns-go"
)

// Stop gives the feedback polls in progress FeedbackStopGrace together, not one after another
// (issue 10 review): with 4 polls held by the service, Stop takes at least the grace (each
// poll gets it) and less than twice it, where one grace after another would take 4 times it.
// The upper bound leaves a margin of a whole grace (2 s) over what Stop needs.
func TestStopGivesHeldFeedbackPollsTheGraceTogether(t *testing.T) {
	parallel(t) // the margin of a whole grace holds on a busy machine: Stop's own work takes milliseconds
	const polls = 4
	fs, tlsConf := newHoldingFeedback(t)
	gw := newServer(t)
	cfg := gw.ClientTLSConfig().Clone()
	cfg.RootCAs = tlsConf.RootCAs.Clone()
	cfg.RootCAs.AddCert(gw.Certificate())
	c := newClient(t, gw, apns.WithTLSConfig(cfg))
	start(t, c, 1)
	for i := 0; i < polls; i++ {
		if _, err := c.SetupFeedbackClient(fs.addr, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < polls; i++ {
		select {
		case <-fs.polled:
		case <-time.After(waitGuard):
			t.Fatalf("%d of %d polls began", i, polls)
		}
	}
	begin := time.Now()
	stop(t, c)
	d := time.Since(begin)
	if d < apns.FeedbackStopGrace {
		t.Errorf("Stop took %v; want no less than FeedbackStopGrace (%v): the held polls get it", d.Round(time.Millisecond), apns.FeedbackStopGrace)
	}
	if d >= 2*apns.FeedbackStopGrace {
		t.Errorf("Stop with %d held feedback polls took %v; want less than 2 x FeedbackStopGrace: the polls get the grace together", polls, d.Round(time.Millisecond))
	}
	waitFor(t, "the service to see every held poll cut by the client", func() bool {
		fs.mu.Lock()
		defer fs.mu.Unlock()
		return fs.clientFirst == polls
	})
}
