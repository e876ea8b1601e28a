package apns_test

// How a binary worker settles a connection that ended with nothing, or something, in flight
// (worker.settle), seen through Stats, the error handler and the log.

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	apns "github.com/Kwik-messenger/apns-go"
	"github.com/Kwik-messenger/apns-go/apnstest"
)

// errorLog records what a client hands its error handler.
type errorLog struct {
	mu   sync.Mutex
	errs []error
}

func (e *errorLog) handler(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.errs = append(e.errs, err)
}

func (e *errorLog) snapshot() []error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]error(nil), e.errs...)
}

// A connection the gateway closes when every frame written on it has been assumed delivered
// lost nothing: it is no drop, and no error; the worker connects again.
func TestConnectionLostWithNothingInFlightIsNoDrop(t *testing.T) {
	s := newServer(t)
	var errs errorLog
	c := newClient(t, s, apns.WithErrorHandler(errs.handler)) // assume-sent 150 ms
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	sendAll(t, c, 10)
	waitFor(t, "10 notifications assumed delivered", func() bool { return c.Stats().Delivered == 10 })
	s.CloseClientConnections()
	waitFor(t, "the worker to connect again", func() bool { return s.Conns() >= 2 && c.Stats().Connections == 1 })
	if st := c.Stats(); st.Drops != 0 || st.Duplicates != 0 {
		t.Errorf("stats %+v; want no drop and no duplicate", st)
	}
	if e := errs.snapshot(); len(e) != 0 {
		t.Errorf("error handler got %v; want nothing", e)
	}
	stop(t, c)
	checkAllArrived(t, s, 10, nil, true)
}

// An error response naming no frame, on a connection with nothing in flight, is still counted
// and reported as naming an unknown identifier.
func TestErrorResponseWithNothingInFlightIsReported(t *testing.T) {
	s := newServer(t)
	s.Script(apnstest.ConnScript{After: 0, Garbage: []byte{8, 8, 0, 0, 0, 9}}) // at once, naming id 9
	var errs errorLog
	c := newClient(t, s, apns.WithErrorHandler(errs.handler))
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	// The worker settles the connection before it connects again.
	waitFor(t, "the worker to connect again", func() bool { return s.Conns() >= 2 && c.Stats().Connections == 1 })
	sendAll(t, c, 10) // the next connection delivers them
	stop(t, c)
	var re *apns.ResponseError
	found := false
	for _, err := range errs.snapshot() {
		if errors.As(err, &re) && re.ID == 9 && re.Status == apns.StatusInvalidToken && errors.Is(err, apns.ErrUnknownID) {
			found = true
		}
	}
	if st := c.Stats(); !found || st.UnknownIDs != 1 || st.Delivered != 10 {
		t.Errorf("errors %v, stats %+v; want one ResponseError for id 9 and 10 delivered", errs.snapshot(), st)
	}
	checkAllArrived(t, s, 10, nil, true)
}

// A status-10 shutdown naming the k-th of five frames in flight (the first, the last) delivers
// the first k, and the log says so; the others are written again, once.
func TestShutdownNamingAFrameInFlightDeliversItAndThoseBefore(t *testing.T) {
	for _, k := range []int{1, 5} {
		t.Run(fmt.Sprintf("frame %d of 5", k), func(t *testing.T) {
			s := newServer(t)
			s.Script(apnstest.ConnScript{After: k, Shutdown: true})
			var logs lockedBuffer
			logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			c := newClient(t, s, apns.WithAssumeSentTimeout(time.Hour), apns.WithLogger(logger))
			sendAll(t, c, 5) // queued before Start: written on the first connection, in order
			if err := c.Start(1); err != nil {
				t.Fatal(err)
			}
			// The worker settles the connection before it connects again.
			waitFor(t, "the worker to connect again", func() bool { return s.Conns() >= 2 && c.Stats().Connections == 1 })
			stop(t, c)
			if st := c.Stats(); st.Delivered != 5 || st.Replayed != uint64(5-k) || st.Duplicates != 0 {
				t.Errorf("stats %+v; want 5 delivered, %d written again", st, 5-k)
			}
			log := logs.String()
			if want := fmt.Sprintf(`msg="apns: gateway shut the connection down" delivered=%d`, k); !strings.Contains(log, want) {
				t.Errorf("log lacks %q:\n%s", want, log)
			}
			if again := strings.Contains(log, "frames to write again"); again != (k < 5) {
				t.Errorf("log speaks of frames to write again: %v; want %v:\n%s", again, k < 5, log)
			}
			checkAllArrived(t, s, 5, nil, true)
		})
	}
}
