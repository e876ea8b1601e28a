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

// A failed HTTP/2 Start keeps its dispatcher for the next Start, and only Stop ends it: two
// failed Starts leave one dispatcher, and the error handler (told of the failed attempts) and
// the callbacks (of the notifications that Stop reports unsent) all run on it, one at a time,
// never on Stop's goroutine.
func TestHTTP2FailedStartsKeepOneDispatcher(t *testing.T) {
	parallel(t)
	addr := closedAddr(t)
	before := dispatchers(t)
	var handlerOff, callbackOff, handled, called atomic.Int32
	cert, key := apnstest.ClientCertPEM()
	c, err := apns.CreateClient(addr, cert, key, true, apns.WithProtocol(apns.ProtocolHTTP2),
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
	if n := dispatchers(t) - before; n != 1 {
		t.Errorf("%d dispatchers after two failed Starts; want 1, kept for the next Start", n)
	}
	stop(t, c)
	if called.Load() != 3 || handled.Load() == 0 {
		t.Errorf("%d callbacks and %d error handler calls; want 3 and some", called.Load(), handled.Load())
	}
	if n, m := callbackOff.Load(), handlerOff.Load(); n+m > 0 {
		t.Errorf("%d callbacks and %d error handler calls ran off the dispatcher", n, m)
	}
	checkNoGoroutines(t)
}
