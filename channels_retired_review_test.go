package apns_test

// Attack review (helper retired review, stop 20) of 28d3b82: retiredConns with its own lock-free
// flag, and the management call no longer sweeping retired connections at its end (only the
// state hook closes a retired management connection once it goes idle).

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"io"
	"sync"
	"testing"
	"time"

	apns "github.com/Kwik-messenger/apns-go"
	"github.com/Kwik-messenger/apns-go/apnstest"
)

// lateStreamServer serves the management host (and idles the gateway's connections, which
// send no request) for TestRetiredManagementConnectionWhoseLastCallStartedAfterTheHookIsClosed.
// Every connection allows one stream at a time. The first connection to carry a request is X:
// its first request is answered at once (200, no body); its second, F, is reported on
// fArrived and reset by the server (INTERNAL_ERROR) once resetF is closed; its third, A, is
// answered only once another connection (Y, F's retry) has received a request. Requests on
// other connections are answered at once and reported on yArrived.
type lateStreamServer struct {
	mu       sync.Mutex
	x        int64 // X's number; 0 until a connection carries a request
	fArrived chan struct{}
	resetF   chan struct{}
	yArrived chan struct{}
	yOnce    sync.Once
	done     chan struct{}
}

func (srv *lateStreamServer) serve(n int64, c *tls.Conn) {
	defer c.Close()
	settings := make([]byte, 6)
	binary.BigEndian.PutUint16(settings, 0x3) // SETTINGS_MAX_CONCURRENT_STREAMS
	binary.BigEndian.PutUint32(settings[2:], 1)
	if _, err := c.Write(h2Frame(0x4, 0, 0, settings)); err != nil {
		return
	}
	preface := make([]byte, len("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"))
	if _, err := io.ReadFull(c, preface); err != nil {
		return
	}
	ok200 := func(stream uint32) []byte { return h2Frame(0x1, 0x5, stream, []byte{0x88}) } // :status 200, END_STREAM
	requests := 0
	hdr := make([]byte, 9)
	for {
		if _, err := io.ReadFull(c, hdr); err != nil {
			return
		}
		payload := make([]byte, int(hdr[0])<<16|int(hdr[1])<<8|int(hdr[2]))
		if _, err := io.ReadFull(c, payload); err != nil {
			return
		}
		typ, flags, stream := hdr[3], hdr[4], binary.BigEndian.Uint32(hdr[5:])&0x7fffffff
		var out []byte
		switch {
		case typ == 0x4 && flags&0x1 == 0:
			out = h2Frame(0x4, 0x1, 0, nil)
		case typ == 0x6 && flags&0x1 == 0:
			out = h2Frame(0x6, 0x1, 0, payload)
		case (typ == 0x1 || typ == 0x0) && flags&0x1 != 0:
			requests++
			srv.mu.Lock()
			if srv.x == 0 {
				srv.x = n
			}
			onX := srv.x == n
			srv.mu.Unlock()
			switch {
			case !onX:
				srv.yOnce.Do(func() { close(srv.yArrived) })
				out = ok200(stream)
			case requests == 2: // F
				close(srv.fArrived)
				select {
				case <-srv.resetF:
				case <-srv.done:
					return
				}
				rst := make([]byte, 4)
				binary.BigEndian.PutUint32(rst, 0x2) // INTERNAL_ERROR
				out = h2Frame(0x3, 0, stream, rst)
			case requests == 3: // A: X's last call, answered once X is retired
				select {
				case <-srv.yArrived:
				case <-srv.done:
					return
				}
				out = ok200(stream)
			default:
				out = ok200(stream)
			}
		}
		if out != nil {
			if _, err := c.Write(out); err != nil {
				return
			}
		}
	}
}

// A retired management connection is closed once its requests end, on an idle client (the
// contract). 28d3b82 removed the sweep at the end of each management call: only the state
// hook closes a retired management connection. net/http's hook runs only when InFlight falls
// below the value it saw at its previous look (clientconn.go shouldRunStateHook), and nothing
// looks when a stream starts (RoundTrip looks only as it returns). So a call A whose stream
// starts on X after X's last look and ends without another look (its answer, HEADERS with
// END_STREAM, makes net/http forget the stream before or as RoundTrip returns) ends with no
// hook call; if X was retired, with A in flight, between A's start and its end, nothing closes
// X: it stays open until the next management call or Stop.
//
// Each round: X allows one stream. A list call F on X (not X's first call) is reset by the
// server while a list call A waits on X for F's stream; F's RST frees the slot (net/http's
// looks at F's end may come before A's stream is made), F is retried with X avoided
// (roundTrip's replace: X retired, A in flight), and A is answered once F's retry reaches Y.
func TestRetiredManagementConnectionWhoseLastCallStartedAfterTheHookIsClosed(t *testing.T) {
	parallel(t)
	const rounds = 40
	for i := range rounds {
		srv := &lateStreamServer{
			fArrived: make(chan struct{}), resetF: make(chan struct{}),
			yArrived: make(chan struct{}), done: make(chan struct{}),
		}
		addr, pool := rawTLSServer(t, nil, srv.serve)
		t.Cleanup(func() { close(srv.done) }) // before the server's cleanup (LIFO)
		cert, key := apnstest.ClientCertPEM()
		c, err := apns.CreateClient("https://"+addr, cert, key, false,
			apns.WithTLSConfig(&tls.Config{RootCAs: pool}), apns.WithBroadcastManagementURL("https://"+addr),
			apns.WithErrorHandler(func(error) {}))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), waitGuard)
		c.Channels(ctx, bundle) // opens X; its answer (no body) does not matter
		fDone, aDone := make(chan error, 1), make(chan error, 1)
		go func() {
			_, err := c.Channels(ctx, bundle)
			fDone <- err
		}()
		receive(t, "F at the server", srv.fArrived)
		go func() {
			_, err := c.Channels(ctx, bundle)
			aDone <- err
		}()
		time.Sleep(50 * time.Millisecond) // A waits in net/http for X's one stream
		close(srv.resetF)
		receive(t, "call F", fDone) // errors do not matter: the answers have no body
		receive(t, "call A", aDone)
		var left [][2]int
		deadline := time.Now().Add(2 * time.Second)
		for time.Now().Before(deadline) {
			left = left[:0]
			for _, r := range apns.ManagementRetired(c) {
				if r[1] == 0 {
					left = append(left, r)
				}
			}
			if len(left) == 0 {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		cancel()
		c.Stop()
		if len(left) > 0 {
			t.Fatalf("round %d: a retired management connection is still open 2s after its last call ended on an "+
				"idle client; retired [InFlight, closed]: %v", i, left)
		}
	}
}
