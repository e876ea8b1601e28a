package apns_test

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	apns "github.com/Kwik-messenger/apns-go"
	"github.com/Kwik-messenger/apns-go/apnstest"
)

// heldSecondConn is a listener that, on its second connection, closes opened and returns
// the connection only once proceed is closed: the client's second connection is not open
// until then.
type heldSecondConn struct {
	net.Listener
	accepted        atomic.Int32
	opened, proceed chan struct{}
}

func (l *heldSecondConn) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil && l.accepted.Add(1) == 2 {
		close(l.opened)
		<-l.proceed
	}
	return c, err
}

// A connection opened for load takes work at once: its first request, which proves it, goes
// there before another connection's free stream. Found while making the tests parallel: a
// grown connection that the scheduler passed over, because its first request goes alone and
// the older connection had room again, sat unused until it was closed as idle, and the pool
// grew again under the next load: connections opened and closed for nothing.
//
// Start(1) with room for 2 connections of 1 stream: once a first notification has proven the
// first connection (the pool does not grow past an unproven one), A holds the first connection's stream, B
// waits and makes the pool grow; the gateway then answers A and holds the second connection
// until B has gone on the first. C, the next notification, goes on the second.
func TestHTTP2ConnectionOpenedForLoadCarriesTheNextRequest(t *testing.T) {
	parallel(t)
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &heldSecondConn{Listener: inner, opened: make(chan struct{}), proceed: make(chan struct{})}
	s := apnstest.NewUnstartedHTTP2Server()
	s.Listener = l
	s.MaxConcurrentStreams = 1
	entered, release := make(chan struct{}), make(chan struct{})
	s.RespondFunc(func(r apnstest.Request) *apnstest.Response {
		if r.Token == token(0) {
			close(entered)
			<-release
		}
		return nil
	})
	s.Start()
	t.Cleanup(s.Close)
	c := newH2Client(t, s, apns.WithMaxConnections(2), apns.WithIdleTimeout(time.Minute))
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	pl := []byte(`{"aps":{"alert":"x"}}`)
	push := func(i int) <-chan error {
		done := make(chan error, 1)
		go func() {
			resp, err := c.Push(context.Background(), &apns.Notification{DeviceToken: token(i), Payload: pl})
			if err == nil && !resp.Sent() {
				err = &apns.Rejection{StatusCode: resp.StatusCode, Reason: resp.Reason}
			}
			done <- err
		}()
		return done
	}
	if err := receive(t, "a first notification, which proves the first connection", push(100)); err != nil {
		t.Fatalf("Push: %v", err)
	}
	a := push(0)
	receive(t, "A at the gateway", entered)
	b := push(1)
	receive(t, "the pool to grow for B", l.opened)
	close(release)
	for _, done := range []<-chan error{a, b} {
		if err := receive(t, "A and B", done); err != nil {
			t.Fatalf("Push: %v", err)
		}
	}
	close(l.proceed)
	waitFor(t, "the second connection to open", func() bool { return c.Stats().Connections == 2 })
	if err := receive(t, "C", push(2)); err != nil {
		t.Fatalf("Push: %v", err)
	}
	for _, r := range s.Requests() {
		if r.Token == token(2) && r.Conn != 2 {
			t.Errorf("C went on connection %d; want 2, the connection opened for load", r.Conn)
		}
	}
}
