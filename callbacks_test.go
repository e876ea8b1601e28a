package apns_test

import (
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	apns "github.com/Kwik-messenger/apns-go"
	"github.com/Kwik-messenger/apns-go/apnstest"
)

// onDispatcher reports whether the caller runs on a callback dispatcher goroutine.
func onDispatcher() bool {
	buf := make([]byte, 64<<10)
	return strings.Contains(string(buf[:runtime.Stack(buf, false)]), "(*dispatcher).run(")
}

// A failed Start leaves nothing running, on both protocols: the goroutine that runs the
// callbacks runs only while they are due, so two failed Starts leave no dispatcher. The error
// handler (told of the failed attempts) and the callbacks (of the notifications
// that Stop reports unsent) still all run on a dispatcher, never on Stop's goroutine.
func TestFailedStartsLeaveNoDispatcher(t *testing.T) {
	for name, proto := range map[string]apns.Protocol{"binary": apns.ProtocolBinary, "HTTP/2": apns.ProtocolHTTP2} {
		t.Run(name, func(t *testing.T) {
			addr := closedAddr(t)
			before := dispatchers(t)
			var handlerOff, callbackOff, handled, called atomic.Int32
			cert, key := apnstest.ClientCertPEM()
			c, err := apns.CreateClient(addr, cert, key, true, apns.WithProtocol(proto),
				apns.WithErrorHandler(func(error) {
					handled.Add(1)
					if !onDispatcher() {
						handlerOff.Add(1)
					}
				}))
			if err != nil {
				t.Fatal(err)
			}
			c.SetCallback(func(*apns.Message, uint8) {
				called.Add(1)
				if !onDispatcher() {
					callbackOff.Add(1)
				}
			})
			sendAll(t, c, 3)
			for i := 0; i < 2; i++ {
				if err := c.Start(1); err == nil {
					t.Fatal("Start succeeded against a closed port")
				}
			}
			waitFor(t, "the dispatcher to exit after the failed Starts", func() bool { return dispatchers(t) == before })
			stop(t, c)
			if called.Load() != 3 {
				t.Errorf("%d callbacks; want 3", called.Load())
			}
			if handled.Load() == 0 {
				t.Error("the error handler was not told of the failed connection attempts")
			}
			if n, m := callbackOff.Load(), handlerOff.Load(); n+m > 0 {
				t.Errorf("%d callbacks and %d error handler calls ran off the dispatcher", n, m)
			}
			checkNoGoroutines(t)
		})
	}
}
