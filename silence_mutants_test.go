package apns_test

// Tests written from a mutation-testing run of silence.go (gremlins v0.6.0): each kills a
// mutant that lived, and names it.

import (
	"context"
	"testing"
	"time"

	apns "github.com/Kwik-messenger/apns-go"
	"github.com/Kwik-messenger/apns-go/apnstest"
)

// When a connection is closed as silent, an idle connection that has read nothing for the
// silence time is probed too, and closed when it does not answer either. Kills silence.go:112
// `now.Sub(w.lastRead) >= after` mutated to `<` (CONDITIONALS_NEGATION): the detector then
// probes the connections that did read lately, and leaves the silent idle one open.
func TestMutantSilentCloseProbesTheSilentIdleConnection(t *testing.T) {
	parallel(t)
	s := apnstest.NewHTTP2Server()
	t.Cleanup(s.Close)
	const after, timeout = 200 * time.Millisecond, 300 * time.Millisecond
	c := newH2Client(t, s, apns.WithSilenceTimes(after, timeout), apns.WithMaxAttempts(1), apns.WithErrorHandler(func(error) {}))
	if err := c.Start(2); err != nil {
		t.Fatal(err)
	}
	silenced := 0 // the server registers a connection a moment after the client has it
	waitFor(t, "both connections silenced", func() bool { silenced += s.SilenceClientConnections(); return silenced == 2 })
	// One request, on one connection: that one is busy and silent, the other idle and silent.
	ctx, cancel := context.WithTimeout(context.Background(), waitGuard)
	defer cancel()
	if _, err := c.Push(ctx, &apns.Notification{DeviceToken: token(1), Payload: []byte(`{"aps":{}}`)}); err == nil {
		t.Fatal("Push on a silent connection answered; want an error once the connection is closed as silent (one attempt)")
	}
	deadline := time.Now().Add(10 * time.Second) // far above the probe's timeout and a tick
	for c.Stats().SilentConns < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if st := c.Stats(); st.SilentConns != 2 {
		t.Errorf("SilentConns %d 10 s after the busy connection was closed as silent (silence %v, probe timeout %v); want 2: the idle silent connection probed and closed too", st.SilentConns, after, timeout)
	}
}
