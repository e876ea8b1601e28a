package apns_test

// Tests from the adversarial review of issues 13 and 14 (broadcast channels, apnstest). Each
// test names the behaviour it holds.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	apns "github.com/Kwik-messenger/apns-go"
	"github.com/Kwik-messenger/apns-go/apnstest"
)

// fakeManagement starts a TLS HTTP/2 server whose answers h decides, and a client (never
// started) whose management endpoint it is.
func fakeManagement(t *testing.T, h http.HandlerFunc) (*httptest.Server, *apns.Client) {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	c, err := apns.CreateClient(srv.URL, nil, nil, true, apns.WithProtocol(apns.ProtocolHTTP2),
		apns.WithBroadcastManagementURL(srv.URL))
	if err != nil {
		t.Fatal(err)
	}
	stopAfter(t, c)
	return srv, c
}

func noPanic(t *testing.T, what string, f func()) {
	t.Helper()
	defer func() {
		if p := recover(); p != nil {
			t.Errorf("%s panicked: %v", what, p)
		}
	}()
	f()
}

// Bad input gets a clear error, never a panic: a nil broadcast or notification is
// ErrNilNotification.
func TestNilNotificationIsAnErrorNotAPanic(t *testing.T) {
	s, c := newTokenBroadcastClient(t, nil)
	_ = s
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for name, f := range map[string]func() error{
		"Broadcast(ctx, nil)":        func() error { _, err := c.Broadcast(ctx, nil); return err },
		"SendBroadcast(ctx, nil)":    func() error { return c.SendBroadcast(ctx, nil) },
		"Push(ctx, nil)":             func() error { _, err := c.Push(ctx, nil); return err },
		"SendNotification(ctx, nil)": func() error { return c.SendNotification(ctx, nil) },
	} {
		noPanic(t, name, func() {
			if err := f(); !errors.Is(err, apns.ErrNilNotification) {
				t.Errorf("%s = %v; want ErrNilNotification", name, err)
			}
		})
	}
}

// A refusal of the management host is a *Rejection whatever its body: Apple's front ends (and
// proxies) answer some errors with HTML or nothing.
func TestManagementRefusalWithNonJSONBodyIsARejectionWithItsStatus(t *testing.T) {
	for _, tc := range []struct {
		status int
		body   string
	}{
		{403, "<html><body>Forbidden</body></html>"},
		{502, "Bad Gateway"},
		{400, `{"reason":123}`},
		{500, ""},
	} {
		t.Run(fmt.Sprint(tc.status), func(t *testing.T) {
			handled := make(chan error, 4)
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tc.status)
				_, _ = w.Write([]byte(tc.body))
			}))
			srv.EnableHTTP2 = true
			srv.StartTLS()
			t.Cleanup(srv.Close)
			c, err := apns.CreateClient(srv.URL, nil, nil, true, apns.WithProtocol(apns.ProtocolHTTP2),
				apns.WithBroadcastManagementURL(srv.URL), apns.WithErrorHandler(func(err error) { handled <- err }))
			if err != nil {
				t.Fatal(err)
			}
			stopAfter(t, c)
			_, err = c.Channels(context.Background(), bundle)
			var rej *apns.Rejection
			if !errors.As(err, &rej) {
				t.Fatalf("Channels answered %d %q = %v (%T); want a *Rejection with StatusCode %d", tc.status, tc.body, err, err, tc.status)
			}
			if rej.StatusCode != tc.status || rej.Reason != "" {
				t.Errorf("Rejection = %d %q; want %d with no reason", rej.StatusCode, rej.Reason, tc.status)
			}
			if tc.body == "" {
				return // nothing to parse, nothing to report
			}
			// The error handler runs on the client's dispatcher goroutine, before Start too.
			herr := receive(t, fmt.Sprintf("the error handler's report of the unreadable %d answer", tc.status), handled)
			if !strings.Contains(herr.Error(), fmt.Sprint(tc.status)) {
				t.Errorf("error handler got %v; want the parse error of the %d answer", herr, tc.status)
			}
		})
	}
}

// Garbage successes of the management host: clear errors, no panic, no hang.
func TestManagementGarbageSuccessesAreErrors(t *testing.T) {
	ctx := context.Background()
	t.Run("huge list", func(t *testing.T) {
		_, c := fakeManagement(t, func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(200)
			chunk := []byte(strings.Repeat("x", 64<<10))
			for i := 0; i < 100; i++ { // 6.4 MB
				if _, err := w.Write(chunk); err != nil {
					return
				}
			}
		})
		if _, err := c.Channels(ctx, bundle); err == nil {
			t.Error("Channels with a 6.4 MB answer returned no error")
		}
	})
	t.Run("list of non channel IDs", func(t *testing.T) {
		_, c := fakeManagement(t, func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(200)
			_, _ = w.Write([]byte(`{"channels":["", null, "not base64!\r\n"]}`))
		})
		ids, err := c.Channels(ctx, bundle)
		if err == nil {
			t.Errorf("Channels answered IDs that are not channel IDs = %q, nil; want an error as CreateChannel gives for such an ID", ids)
		}
	})
	t.Run("config without policy", func(t *testing.T) {
		_, c := fakeManagement(t, func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(200)
			_, _ = w.Write([]byte(`null`))
		})
		if _, err := c.Channel(ctx, bundle, "dHN0LXNyY2gtY2hubA=="); err == nil {
			t.Error("Channel answered null returned no error")
		}
	})
	t.Run("create without id", func(t *testing.T) {
		_, c := fakeManagement(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(201) })
		if _, err := c.CreateChannel(ctx, bundle, apns.NoMessageStored); err == nil {
			t.Error("CreateChannel answered 201 without apns-channel-id returned no error")
		}
	})
	t.Run("HTTP/1.1 only", func(t *testing.T) {
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write([]byte(`{"channels":[]}`))
		}))
		srv.StartTLS() // no h2 in ALPN
		t.Cleanup(srv.Close)
		c, err := apns.CreateClient(srv.URL, nil, nil, true, apns.WithProtocol(apns.ProtocolHTTP2),
			apns.WithBroadcastManagementURL(srv.URL))
		if err != nil {
			t.Fatal(err)
		}
		stopAfter(t, c)
		cctx, cancel := context.WithTimeout(ctx, waitGuard)
		defer cancel()
		if _, err := c.Channels(cctx, bundle); err == nil {
			t.Log("Channels over HTTP/1.1 succeeded")
		} else if cctx.Err() != nil {
			t.Errorf("Channels against an HTTP/1.1 server hung: %v", err)
		}
	})
}

// The management endpoint follows every spelling of Apple's sandbox gateway that the push
// side accepts: https://api.development.push.apple.com is the sandbox host of the 2017 docs.
func TestManagementEndpointOfHTTPSDevelopmentURLIsTheSandbox(t *testing.T) {
	for gateway, want := range map[string]string{
		"https://api.development.push.apple.com":     apns.BroadcastManagementSandboxHost,
		"https://api.development.push.apple.com:443": apns.BroadcastManagementSandboxHost,
		"https://api.sandbox.push.apple.com":         apns.BroadcastManagementSandboxHost,
		"https://api.push.apple.com":                 apns.BroadcastManagementHost,
	} {
		c, err := apns.CreateClient(gateway, nil, nil, false)
		if err != nil {
			t.Fatal(err)
		}
		if got := apns.ManagementAddr(c); got != want {
			t.Errorf("management endpoint of %s = %q; want %q", gateway, got, want)
		}
	}
}

// Stop racing channel calls leaves no connection and no goroutine behind, and every call
// returns.
func TestStopRacingChannelCallsLeavesNothingBehind(t *testing.T) {
	parallel(t) // the goroutine counts see this test's goroutines only
	for round := 0; round < 8; round++ {
		s, c := newTokenBroadcastClient(t, nil)
		_ = s
		ctx := context.Background()
		var wg sync.WaitGroup
		start := make(chan struct{})
		for g := 0; g < 4; g++ {
			wg.Add(1)
			go func(g int) {
				defer wg.Done()
				<-start
				for i := 0; i < 20; i++ {
					var err error
					switch (g + i) % 3 {
					case 0:
						_, err = c.CreateChannel(ctx, bundle, apns.MostRecentMessageStored)
					case 1:
						_, err = c.Channels(ctx, bundle)
					case 2:
						_, err = c.Broadcast(ctx, &apns.BroadcastNotification{ChannelID: "dHN0LXNyY2gtY2hubA==", Payload: []byte(`{}`)})
					}
					if errors.Is(err, apns.ErrStopped) {
						return
					}
				}
			}(g)
		}
		close(start)
		if round%2 == 1 {
			time.Sleep(time.Duration(round) * time.Millisecond)
		}
		guard(t, "Stop", func() { c.Stop() })
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(waitGuard):
			t.Fatal("channel calls did not return after Stop")
		}
		if n := waitReadLoops(t, 0); n != 0 {
			t.Fatalf("round %d: %d HTTP/2 connections open after Stop and the calls returned", round, n)
		}
		checkNoGoroutines(t)
	}
}

// Stop during the management connection's TLS handshake to a silent host returns, and the
// call with it.
func TestStopDuringManagementHandshakeReturns(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 4)
	go func() {
		for {
			cn, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- cn // silent: never answers the ClientHello
		}
	}()
	c, err := apns.CreateClient("https://"+ln.Addr().String(), nil, nil, true,
		apns.WithBroadcastManagementURL(ln.Addr().String()), apns.WithDialTimeout(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { _, err := c.Channels(context.Background(), bundle); errc <- err }()
	var cn net.Conn
	select {
	case cn = <-accepted:
		defer cn.Close()
	case <-time.After(waitGuard):
		t.Fatal("no management connection")
	}
	guard(t, "Stop", func() { c.Stop() })
	select {
	case err := <-errc:
		if err == nil {
			t.Error("Channels against a silent host returned no error")
		}
	case <-time.After(waitGuard):
		t.Fatal("Channels did not return after Stop")
	}
	checkNoGoroutines(t)
}

// Callbacks set while broadcasts are queued and sent: no race, one report per rejection,
// none for successes.
func TestSetCallbackDuringSendBroadcastReportsEachRejectionOnce(t *testing.T) {
	s, c := newTokenBroadcastClient(t, nil)
	ctx := context.Background()
	ch, err := c.CreateChannel(ctx, bundle, apns.MostRecentMessageStored)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(2); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	byID := map[string]int{}
	cb := func(r *apns.Rejection) { mu.Lock(); byID[r.ID]++; mu.Unlock() }
	const n = 200
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 50; i++ {
			c.SetRejectionCallback(cb)
			c.SetCallback(func(*apns.Message, uint8) {})
		}
	}()
	c.SetRejectionCallback(cb)
	for i := 0; i < n; i++ {
		id := ch.ID
		if i%2 == 1 {
			id = "Z29uZS1jaGFubmVsLWlk" // not registered
		}
		if err := c.SendBroadcast(ctx, &apns.BroadcastNotification{ChannelID: id, RequestID: uuidOf(i), Payload: liveUpdate(i)}); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	guard(t, "Stop", func() { c.Stop() })
	mu.Lock()
	defer mu.Unlock()
	for i := 0; i < n; i++ {
		want := i % 2
		if got := byID[uuidOf(i)]; got != want {
			t.Errorf("broadcast %d reported %d times; want %d", i, got, want)
		}
	}
	if got := len(s.Broadcasts(ch.ID)); got != n/2 {
		t.Errorf("channel got %d broadcasts; want %d", got, n/2)
	}
}

func uuidOf(i int) string { return fmt.Sprintf("00000000-0000-4000-8000-%012x", i) }

// After Stop: broadcasts are refused with ErrStopped and open nothing.
func TestBroadcastAndChannelCallsAfterStopAreErrStopped(t *testing.T) {
	parallel(t) // h2ReadLoops then counts this test's connections only
	_, c := newTokenBroadcastClient(t, nil)
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	guard(t, "Stop", func() { c.Stop() })
	if n := waitReadLoops(t, 0); n != 0 { // the connections Stop closed are gone
		t.Fatalf("%d connections open after Stop", n)
	}
	n := &apns.BroadcastNotification{ChannelID: "dHN0LXNyY2gtY2hubA==", Payload: liveUpdate(1)}
	if _, err := c.Broadcast(context.Background(), n); !errors.Is(err, apns.ErrStopped) {
		t.Errorf("Broadcast after Stop = %v; want ErrStopped", err)
	}
	if err := c.SendBroadcast(context.Background(), n); !errors.Is(err, apns.ErrStopped) {
		t.Errorf("SendBroadcast after Stop = %v; want ErrStopped", err)
	}
	for _, f := range []func() error{
		func() error { _, err := c.CreateChannel(context.Background(), bundle, 0); return err },
		func() error { _, err := c.Channel(context.Background(), bundle, "dHN0LXNyY2gtY2hubA=="); return err },
		func() error { return c.DeleteChannel(context.Background(), bundle, "dHN0LXNyY2gtY2hubA==") },
	} {
		if err := f(); !errors.Is(err, apns.ErrStopped) {
			t.Errorf("channel call after Stop = %v; want ErrStopped", err)
		}
	}
	if n := h2ReadLoops(t); n != 0 {
		t.Errorf("%d connections open after Stop", n)
	}
}

// The wrapped input errors still match their sentinels on every path.
func TestWrappedInputErrorsMatchTheirSentinels(t *testing.T) {
	s := newH2Server(t, nil)
	c := newH2Client(t, s)
	big := map[string]interface{}{"aps": map[string]string{"alert": strings.Repeat("x", 5000)}}
	tok := strings.Repeat("ab", 32)
	for name, err := range map[string]error{
		"Send prio 7":         c.Send(tok, time.Time{}, 7, map[string]interface{}{"a": 1}),
		"Send big":            c.Send(tok, time.Time{}, 10, big),
		"SendNotification p2": c.SendNotification(context.Background(), &apns.Notification{DeviceToken: tok, Priority: 2, Payload: []byte(`{}`)}),
	} {
		if !errors.Is(err, apns.ErrInvalidPriority) && !errors.Is(err, apns.ErrPayloadTooLarge) {
			t.Errorf("%s = %v; want a wrapped input error", name, err)
		}
	}
	m := &apns.Message{Token: make([]byte, 32), Payload: make([]byte, 3000)}
	if _, err := m.MarshalBinary(); !errors.Is(err, apns.ErrPayloadTooLarge) {
		t.Errorf("MarshalBinary of 3000 bytes = %v; want ErrPayloadTooLarge", err)
	}
	_ = apnstest.ClientCertPEM
}

// A binary client that forgot its certificate, against the default gateway mock (which now
// requires one, as Apple did): nothing may count as delivered. Either Start fails or every
// notification reaches the callback.
func TestBinaryClientWithoutCertificateIsNotToldDelivered(t *testing.T) {
	s := newServer(t)
	c, err := apns.CreateClient(s.Addr, nil, nil, false, apns.WithTLSConfig(s.ClientTLSConfig()),
		apns.WithAssumeSentTimeout(150*time.Millisecond), apns.WithDialTimeout(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	reported := 0
	c.SetCallback(func(*apns.Message, uint8) { mu.Lock(); reported++; mu.Unlock() })
	startErr := c.Start(1)
	if startErr == nil {
		for i := 0; i < 3; i++ {
			if err := c.Send(token(i), time.Time{}, apns.PRIORITY_IMMEDIATE, payload(i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	guard(t, "Shutdown", func() { _ = c.Shutdown(ctx) })
	st := c.Stats()
	mu.Lock()
	defer mu.Unlock()
	t.Logf("Start = %v; stats %+v; callback got %d", startErr, st, reported)
	if s.Count() != 0 {
		t.Fatalf("the gateway accepted %d notifications from a client without a certificate", s.Count())
	}
	if st.Delivered != 0 {
		t.Errorf("a client without a certificate counted %d notifications as delivered; the gateway took none", st.Delivered)
	}
	if startErr == nil && reported != 3 {
		t.Errorf("callback got %d of 3 notifications that never reached the gateway", reported)
	}
}

// The same for ReadFeedback: a client without a certificate gets an error, not "no bad tokens".
func TestFeedbackWithoutCertificateIsAnError(t *testing.T) {
	f := apnstest.NewFeedbackServer()
	t.Cleanup(f.Close)
	f.Add(make([]byte, 32), time.Unix(1600000000, 0))
	c, err := apns.CreateClient("127.0.0.1:9", nil, nil, false, apns.WithTLSConfig(f.ClientTLSConfig()))
	if err != nil {
		t.Fatal(err)
	}
	stopAfter(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), waitGuard)
	defer cancel()
	toks, err := c.ReadFeedback(ctx, f.Addr)
	if err == nil {
		t.Errorf("ReadFeedback without a certificate = %d tokens, nil; want the handshake's error", len(toks))
	}
}

// A request ID that cannot go in a header is bad input: a clear error at once, not retries
// counted as lost connections and "no answer".
func TestBroadcastRequestIDThatIsNotAUUIDIsRefusedUpFront(t *testing.T) {
	s, c := newTokenBroadcastClient(t, nil)
	ctx := context.Background()
	ch, err := c.CreateChannel(ctx, bundle, apns.MostRecentMessageStored)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	n := &apns.BroadcastNotification{ChannelID: ch.ID, RequestID: "8e7c1d70-8a4b-4d55-8f0e-8c3f5f1b2a90\r\nx-evil: 1", Payload: liveUpdate(1)}
	begin := time.Now()
	resp, err := c.Broadcast(ctx, n)
	took := time.Since(begin)
	st := c.Stats()
	t.Logf("Broadcast = %+v, %v after %v; stats %+v", resp, err, took, st)
	if err == nil {
		t.Fatalf("Broadcast with a request ID holding CR LF = %+v, nil; want an input error", resp)
	}
	if st.Replayed != 0 || st.Drops != 0 || st.Duplicates != 0 {
		t.Errorf("bad input was retried as a lost request: %d replays, %d drops, %d duplicates", st.Replayed, st.Drops, st.Duplicates)
	}
	if k := len(s.Broadcasts(ch.ID)); k != 0 {
		t.Errorf("the mock took %d broadcasts", k)
	}
}

// WithBroadcastManagementURL with one of Apple's management host names and no port: Apple
// serves them on 2195 (sandbox) and 2196 (production) only (PROTOCOL.md §5.2), so that is the
// port to use, not 443.
func TestManagementURLOfAppleHostWithoutPortUsesApplesPort(t *testing.T) {
	for u, want := range map[string]string{
		"https://api-manage-broadcast.sandbox.push.apple.com": apns.BroadcastManagementSandboxHost,
		"api-manage-broadcast.sandbox.push.apple.com":         apns.BroadcastManagementSandboxHost,
		"https://api-manage-broadcast.push.apple.com":         apns.BroadcastManagementHost,
		"api-manage-broadcast.push.apple.com":                 apns.BroadcastManagementHost,
	} {
		c, err := apns.CreateClient("https://api.push.apple.com", nil, nil, false, apns.WithBroadcastManagementURL(u))
		if err != nil {
			t.Fatal(err)
		}
		if got := apns.ManagementAddr(c); got != want {
			t.Errorf("WithBroadcastManagementURL(%q): endpoint %q; want %q", u, got, want)
		}
	}
}

// A management URL with credentials in it (user:password@), a path, a query or a fragment
// is refused by CreateClient, with an error that names the URL without any secret.
func TestManagementURLWithUserinfoIsRefusedWithoutTheSecret(t *testing.T) {
	for _, u := range []string{
		"https://user:s3cret@127.0.0.1:9",
		"user:s3cret@127.0.0.1:9",
		"https://s3cret@127.0.0.1:9",
		"https://127.0.0.1:9/s3cret",
		"https://127.0.0.1:9?key=s3cret",
		"https://127.0.0.1:9#s3cret",
		"http://127.0.0.1:9",
	} {
		c, err := apns.CreateClient("https://127.0.0.1:9", nil, nil, true, apns.WithBroadcastManagementURL(u))
		if err == nil {
			t.Errorf("CreateClient with management URL %q: endpoint %q, no error; want one", u, apns.ManagementAddr(c))
			stopAfter(t, c)
			continue
		}
		if strings.Contains(err.Error(), "s3cret") && !strings.HasSuffix(u, "/s3cret") {
			t.Errorf("CreateClient's error shows the secret: %v", err)
		}
		if !strings.Contains(err.Error(), "127.0.0.1:9") {
			t.Errorf("CreateClient's error %q does not name the URL", err)
		}
	}
	for _, u := range []string{"https://127.0.0.1:9", "https://127.0.0.1:9/", "127.0.0.1:9", "::1", "https://[::1]:9"} {
		c, err := apns.CreateClient("https://127.0.0.1:9", nil, nil, true, apns.WithBroadcastManagementURL(u))
		if err != nil {
			t.Errorf("CreateClient with management URL %q: %v", u, err)
			continue
		}
		stopAfter(t, c)
	}
}

// Broadcasts queued before Start and never sent: each reported once at Stop, with its
// channel, and the callbacks get nothing else.
func TestQueuedBroadcastsAreReportedOnceWhenNeverStarted(t *testing.T) {
	_, c := newTokenBroadcastClient(t, nil)
	var mu sync.Mutex
	got := map[string]int{}
	channels := map[string]string{}
	c.SetRejectionCallback(func(r *apns.Rejection) {
		mu.Lock()
		got[r.ID]++
		channels[r.ID] = r.ChannelID
		mu.Unlock()
	})
	for i := 0; i < 5; i++ {
		if err := c.SendBroadcast(context.Background(), &apns.BroadcastNotification{ChannelID: "dHN0LXNyY2gtY2hubA==", RequestID: uuidOf(i), Payload: liveUpdate(i)}); err != nil {
			t.Fatal(err)
		}
	}
	guard(t, "Stop", func() { c.Stop() })
	mu.Lock()
	defer mu.Unlock()
	for i := 0; i < 5; i++ {
		if got[uuidOf(i)] != 1 || channels[uuidOf(i)] != "dHN0LXNyY2gtY2hubA==" {
			t.Errorf("broadcast %d: reported %d times, channel %q; want once, dHN0LXNyY2gtY2hubA==", i, got[uuidOf(i)], channels[uuidOf(i)])
		}
	}
	if len(got) != 5 {
		t.Errorf("callback got %d IDs; want 5", len(got))
	}
}

// Stop while the management connection waits for a silent CONNECT proxy returns, and the
// call with it.
func TestStopDuringManagementProxyConnectReturns(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 4)
	go func() {
		for {
			cn, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- cn // silent: never answers the CONNECT
		}
	}()
	proxyURL, _ := url.Parse("http://" + ln.Addr().String())
	c, err := apns.CreateClient("https://127.0.0.1:9", nil, nil, true,
		apns.WithBroadcastManagementURL("127.0.0.1:9"), apns.WithDialTimeout(time.Hour),
		apns.WithProxy(http.ProxyURL(proxyURL)))
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { _, err := c.Channels(context.Background(), bundle); errc <- err }()
	select {
	case cn := <-accepted:
		defer cn.Close()
	case <-time.After(waitGuard):
		t.Fatal("no connection to the proxy")
	}
	guard(t, "Stop", func() { c.Stop() })
	select {
	case <-errc:
	case <-time.After(waitGuard):
		t.Fatal("Channels did not return after Stop")
	}
	checkNoGoroutines(t)
}

// Channel calls while the management host keeps dropping connections and sending GOAWAY:
// no race, no panic, the calls recover once the host behaves, and Stop leaves nothing open.
func TestChannelCallsRecoverAcrossDroppedManagementConnections(t *testing.T) {
	parallel(t)
	s, c := newTokenBroadcastClient(t, func(s *apnstest.HTTP2Server) { s.SetMaxConcurrentStreams(2) })
	ctx := context.Background()
	stopChaos := make(chan struct{})
	chaosDone := make(chan struct{})
	go func() {
		defer close(chaosDone)
		for i := 0; ; i++ {
			select {
			case <-stopChaos:
				return
			case <-time.After(3 * time.Millisecond):
			}
			if i%2 == 0 {
				s.CloseClientConnections()
			} else {
				s.GoAway()
			}
		}
	}()
	var wg sync.WaitGroup
	for g := 0; g < 6; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 30; i++ {
				cctx, cancel := context.WithTimeout(ctx, waitGuard)
				switch i % 3 {
				case 0:
					_, _ = c.CreateChannel(cctx, bundle, apns.MostRecentMessageStored)
				case 1:
					_, _ = c.Channels(cctx, bundle)
				default:
					if ids, err := c.Channels(cctx, bundle); err == nil && len(ids) > 0 {
						_ = c.DeleteChannel(cctx, bundle, ids[0])
					}
				}
				cancel()
			}
		}(g)
	}
	wg.Wait()
	close(stopChaos)
	<-chaosDone
	if _, err := c.Channels(ctx, bundle); err != nil {
		t.Errorf("Channels once the host behaves = %v", err)
	}
	guard(t, "Stop", func() { c.Stop() })
	if n := waitReadLoops(t, 0); n != 0 {
		t.Errorf("%d HTTP/2 connections open after Stop", n)
	}
}

// The management host closed the idle connection (as Apple does with IdleTimeout): the
// next call opens a new one instead of failing.
func TestChannelCallAfterTheHostClosedTheIdleConnectionOpensANewOne(t *testing.T) {
	parallel(t)
	for _, how := range []string{"close", "goaway"} {
		t.Run(how, func(t *testing.T) {
			s, c := newTokenBroadcastClient(t, nil)
			ctx := context.Background()
			if _, err := c.CreateChannel(ctx, bundle, apns.NoMessageStored); err != nil {
				t.Fatal(err)
			}
			if how == "close" {
				s.CloseClientConnections()
			} else {
				s.GoAway()
			}
			if n := waitReadLoops(t, 0); n != 0 { // the client has seen the close
				t.Fatalf("%d client connections still open after the host closed them", n)
			}
			if _, err := c.Channels(ctx, bundle); err != nil {
				t.Errorf("Channels after the host closed the idle connection (%s) = %v", how, err)
			}
		})
	}
}

// The management connection idles between calls, often for long; a host (or a NAT) that
// drops it meanwhile must not make the next read fail: Channels and Channel are idempotent
// and a connection that died while idle is worth one new attempt on a fresh one. Here the
// host drops the connection after every call, and the next call races the client noticing.
func TestChannelReadsSurviveAConnectionDroppedWhileIdle(t *testing.T) {
	s, c := newTokenBroadcastClient(t, nil)
	ctx := context.Background()
	ch, err := c.CreateChannel(ctx, bundle, apns.NoMessageStored)
	if err != nil {
		t.Fatal(err)
	}
	fails := 0
	for i := 0; i < 40; i++ {
		s.CloseClientConnections()
		var err error
		if i%2 == 0 {
			_, err = c.Channels(ctx, bundle)
		} else {
			_, err = c.Channel(ctx, bundle, ch.ID)
		}
		if err != nil {
			fails++
			if fails <= 3 {
				t.Logf("call %d: %v", i, err)
			}
		}
	}
	if fails > 0 {
		t.Errorf("%d of 40 reads failed after the host dropped the idle management connection; want none", fails)
	}
}

// A bundle ID is reverse-DNS: letters, digits, hyphens and periods (Apple's rule for App
// IDs). ".." and friends put a path traversal into /1/apps/<bundle>/channels and
// /4/broadcasts/apps/<bundle>; they are bad input, refused locally.
func TestBundleIDsThatAreNotReverseDNSAreRefused(t *testing.T) {
	s, c := newTokenBroadcastClient(t, nil)
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, b := range []string{"..", ".", "com.example.app;v=1", "com.example.app:443", "com.example.app@x", "[::1]"} {
		if _, err := c.Channels(ctx, b); !errors.Is(err, apns.ErrInvalidBundleID) {
			t.Errorf("Channels(%q) = %v; want ErrInvalidBundleID", b, err)
		}
		if _, err := c.Broadcast(ctx, &apns.BroadcastNotification{BundleID: b, ChannelID: "dHN0LXNyY2gtY2hubA==", Payload: liveUpdate(1)}); !errors.Is(err, apns.ErrInvalidBundleID) {
			t.Errorf("Broadcast to bundle %q = %v; want ErrInvalidBundleID", b, err)
		}
	}
	for _, r := range s.BroadcastRequests() {
		t.Logf("the mock saw %s %s -> %d %s", r.Method, r.Path, r.Status, r.Reason)
	}
}

// The queued path under 503s, refusals and dropped connections: every broadcast is reported
// at most once, and each one not reported was answered 200 by the mock.
func TestQueuedBroadcastsUnderChaosEndOnce(t *testing.T) {
	parallel(t)
	s, c := newTokenBroadcastClient(t, nil, apns.WithMaxAttempts(6))
	ctx := context.Background()
	ch, err := c.CreateChannel(ctx, bundle, apns.MostRecentMessageStored)
	if err != nil {
		t.Fatal(err)
	}
	var calls sync.Map
	s.RespondBroadcastFunc(func(r apnstest.BroadcastRequest) *apnstest.Response {
		if r.Op != apnstest.OpBroadcast {
			return nil
		}
		n, _ := calls.LoadOrStore(r.RequestID, new(int))
		p := n.(*int)
		*p++ // the same request ID never runs concurrently with itself
		if *p == 1 && strings.HasSuffix(r.RequestID, "0") {
			return &apnstest.Response{Status: 503, Reason: "ServiceUnavailable", RetryAfter: "0"}
		}
		return nil
	})
	var mu sync.Mutex
	reported := map[string]int{}
	c.SetRejectionCallback(func(r *apns.Rejection) { mu.Lock(); reported[r.ID]++; mu.Unlock() })
	if err := c.Start(2); err != nil {
		t.Fatal(err)
	}
	const n = 300
	chaos := make(chan struct{})
	go func() {
		defer close(chaos)
		for i := 0; i < 5; i++ {
			time.Sleep(10 * time.Millisecond)
			s.CloseClientConnections()
		}
	}()
	for i := 0; i < n; i++ {
		id := ch.ID
		if i%7 == 3 {
			id = "Z29uZS1jaGFubmVsLWlk"
		}
		if err := c.SendBroadcast(ctx, &apns.BroadcastNotification{ChannelID: id, RequestID: uuidOf(i), Payload: liveUpdate(i)}); err != nil {
			t.Fatal(err)
		}
	}
	<-chaos
	guard(t, "Stop", func() { c.Stop() })
	ok := map[string]bool{}
	for _, r := range s.BroadcastRequests() {
		if r.Op == apnstest.OpBroadcast && r.Status == 200 {
			ok[r.RequestID] = true
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for i := 0; i < n; i++ {
		id := uuidOf(i)
		switch {
		case reported[id] > 1:
			t.Errorf("broadcast %d reported %d times", i, reported[id])
		case reported[id] == 0 && !ok[id]:
			t.Errorf("broadcast %d neither reported nor answered 200: lost", i)
		case i%7 == 3 && ok[id]:
			t.Errorf("broadcast %d to an unknown channel answered 200", i)
		}
	}
	t.Logf("stats %+v", c.Stats())
}

// apns-go's own client against the gateway mock: Rejected() holds exactly the rejected
// notifications, never a sentinel, however many connections Stop ends.
func TestRejectedHoldsNoSentinelFromTheClient(t *testing.T) {
	for round := 0; round < 3; round++ {
		s := newServer(t)
		s.RejectToken(strings.ToUpper(token(7)), 8)
		c := newClient(t, s)
		var mu sync.Mutex
		cb := 0
		c.SetCallback(func(*apns.Message, uint8) { mu.Lock(); cb++; mu.Unlock() })
		if err := c.Start(3); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 60; i++ {
			if err := c.Send(token(i%10), time.Time{}, apns.PRIORITY_IMMEDIATE, payload(i)); err != nil {
				t.Fatal(err)
			}
		}
		stop(t, c)
		rej := s.Rejected()
		for _, n := range rej {
			if len(n.Token) != 32 {
				t.Fatalf("Rejected() holds a frame without a full token (a sentinel?): %+v", n)
			}
		}
		mu.Lock()
		if len(rej) != 6 || cb != 6 {
			t.Errorf("round %d: Rejected() has %d, callback got %d; want 6 each (sentinels: %d)", round, len(rej), cb, s.Sentinels())
		}
		mu.Unlock()
		if s.Sentinels() < 1 {
			t.Errorf("Sentinels() = %d after Stop; want at least 1", s.Sentinels())
		}
	}
}

// A typed nil payload (a nil *Payload from the builder, a nil map) is no payload: it must not
// go out as the JSON "null", for a broadcast or a device push.
func TestPayloadThatMarshalsToNullIsErrPayloadEmpty(t *testing.T) {
	s, c := newTokenBroadcastClient(t, nil)
	ctx := context.Background()
	ch, err := c.CreateChannel(ctx, bundle, apns.MostRecentMessageStored)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	var nilPayload *apns.Payload
	var nilMap map[string]any
	for name, p := range map[string]any{"nil *Payload": nilPayload, "nil map": nilMap, "raw null": []byte(" null ")} {
		resp, err := c.Broadcast(ctx, &apns.BroadcastNotification{ChannelID: ch.ID, Payload: p})
		if !errors.Is(err, apns.ErrPayloadEmpty) {
			t.Errorf("Broadcast with a %s = %+v, %v; want ErrPayloadEmpty", name, resp, err)
		}
		resp, err = c.Push(ctx, &apns.Notification{DeviceToken: token(1), Payload: p})
		if !errors.Is(err, apns.ErrPayloadEmpty) {
			t.Errorf("Push with a %s = %+v, %v; want ErrPayloadEmpty", name, resp, err)
		}
		if err := c.SendNotification(ctx, &apns.Notification{DeviceToken: token(1), Payload: p}); !errors.Is(err, apns.ErrPayloadEmpty) {
			t.Errorf("SendNotification with a %s = %v; want ErrPayloadEmpty", name, err)
		}
	}
	for _, b := range s.Broadcasts(ch.ID) {
		t.Logf("the mock accepted a broadcast with body %q", b.Payload)
	}
}
