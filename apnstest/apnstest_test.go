package apnstest

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"reflect"
	"runtime"
	"sync"
	"testing"
	"time"
)

// guard bounds every wait in these tests. It only turns a hang into a failure; no test
// depends on anything happening within it.
const guard = 20 * time.Second

func newTestServer(t *testing.T) *Server {
	t.Helper()
	s := NewServer()
	t.Cleanup(s.Close)
	return s
}

// dial opens a TLS connection to addr with conf, or with a configuration trusting the test CA
// when conf is nil.
func dial(t *testing.T, addr string, conf *tls.Config) *tls.Conn {
	t.Helper()
	c, err := tryDial(addr, conf)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// tryDial is dial without the test's failure. The connection presents the test client
// certificate unless conf has certificates of its own: see dialNoCert for none.
func tryDial(addr string, conf *tls.Config) (*tls.Conn, error) {
	if conf == nil {
		conf = clientTLSConfig()
	}
	if len(conf.Certificates) == 0 {
		conf = conf.Clone()
		conf.Certificates = []tls.Certificate{testClientCert()}
	}
	return dialNoCert(addr, conf)
}

// dialNoCert dials with conf as it is.
func dialNoCert(addr string, conf *tls.Config) (*tls.Conn, error) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: guard}, "tcp", addr, conf)
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(guard))
	return c, nil
}

// testClientCert is ClientCertPEM's certificate.
func testClientCert() tls.Certificate {
	pair, err := tls.X509KeyPair(ClientCertPEM())
	if err != nil {
		panic(err)
	}
	return pair
}

func write(t *testing.T, c net.Conn, frames ...[]byte) {
	t.Helper()
	if _, err := c.Write(bytes.Join(frames, nil)); err != nil {
		t.Fatalf("write: %v", err)
	}
}

func token(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

func u32(v uint32) []byte { return be.AppendUint32(nil, v) }

type item struct {
	id   byte
	data []byte
}

// frame2 encodes a command-2 frame holding items, in the order given.
func frame2(items ...item) []byte {
	var body []byte
	for _, it := range items {
		body = append(body, it.id)
		body = be.AppendUint16(body, uint16(len(it.data)))
		body = append(body, it.data...)
	}
	return append(be.AppendUint32([]byte{2}, uint32(len(body))), body...)
}

// note is a valid command-2 frame with identifier id to token(tok).
func note(id uint32, tok byte) []byte {
	return frame2(item{1, token(tok)}, item{2, payload(id)}, item{3, u32(id)}, item{5, []byte{10}})
}

func payload(id uint32) []byte { return []byte(fmt.Sprintf(`{"aps":{"alert":"n%d"}}`, id)) }

func cmd1(id, expiry uint32, tok, payload []byte) []byte {
	b := []byte{1}
	b = be.AppendUint32(b, id)
	b = be.AppendUint32(b, expiry)
	b = be.AppendUint16(b, uint16(len(tok)))
	b = append(b, tok...)
	b = be.AppendUint16(b, uint16(len(payload)))
	return append(b, payload...)
}

func cmd0(tok, payload []byte) []byte {
	b := be.AppendUint16([]byte{0}, uint16(len(tok)))
	b = append(b, tok...)
	b = be.AppendUint16(b, uint16(len(payload)))
	return append(b, payload...)
}

// expectResponse reads one error response from c, checks it, and checks that the server then
// closed the connection cleanly.
func expectResponse(t *testing.T, c net.Conn, status uint8, id uint32) {
	t.Helper()
	var got [6]byte
	if _, err := io.ReadFull(c, got[:]); err != nil {
		t.Fatalf("reading the error response: %v", err)
	}
	want := [6]byte{8, status}
	be.PutUint32(want[2:], id)
	if got != want {
		t.Fatalf("error response: got %v; want %v", got, want)
	}
	if n, err := c.Read(make([]byte, 16)); n != 0 || err != io.EOF {
		t.Fatalf("after the error response: got %d bytes, err %v; want 0 bytes, io.EOF", n, err)
	}
}

// expectDropped checks that the server closed c without sending anything.
func expectDropped(t *testing.T, c net.Conn) {
	t.Helper()
	if n, err := c.Read(make([]byte, 16)); n != 0 || err == nil {
		t.Fatalf("got %d bytes, err %v; want 0 bytes and an error", n, err)
	}
}

func waitCount(t *testing.T, s *Server, n int) {
	t.Helper()
	if !s.WaitCount(n, guard) {
		t.Fatalf("Count() = %d; want %d", s.Count(), n)
	}
}

func TestAValidFrameIsRecordedWithExactFields(t *testing.T) {
	s := newTestServer(t)
	c := dial(t, s.Addr, s.ClientTLSConfig())
	pl := []byte(`{"aps":{"alert":"hi"}}`)
	// Items out of the usual order, to show order does not matter.
	write(t, c, frame2(item{5, []byte{5}}, item{2, pl}, item{4, u32(1700000000)}, item{3, []byte{0xde, 0xad, 0xbe, 0xef}}, item{1, token(7)}))
	waitCount(t, s, 1)
	want := []Notification{{Command: 2, Token: token(7), ID: 0xdeadbeef, Expiry: 1700000000, Priority: 5, Payload: pl, Conn: 1}}
	if got := s.Notifications(); !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v; want %+v", got, want)
	}
}

func TestAFrameWithoutOptionalItemsGetsDefaults(t *testing.T) {
	s := newTestServer(t)
	c := dial(t, s.Addr, nil)
	big := bytes.Repeat([]byte("x"), 2048) // the largest payload allowed
	write(t, c, frame2(item{1, token(1)}, item{2, big}))
	waitCount(t, s, 1)
	want := []Notification{{Command: 2, Token: token(1), Priority: 10, Payload: big, Conn: 1}}
	if got := s.Notifications(); !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v; want %+v", got, want)
	}
}

func TestCommands0And1AreRecorded(t *testing.T) {
	s := newTestServer(t)
	c := dial(t, s.Addr, nil)
	write(t, c, cmd0(token(1), []byte(`{"a":0}`)), cmd1(0x01020304, 99, token(2), []byte(`{"a":1}`)))
	waitCount(t, s, 2)
	want := []Notification{
		{Command: 0, Token: token(1), Priority: 10, Payload: []byte(`{"a":0}`), Conn: 1},
		{Command: 1, Token: token(2), ID: 0x01020304, Expiry: 99, Priority: 10, Payload: []byte(`{"a":1}`), Conn: 1},
	}
	if got := s.Notifications(); !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v; want %+v", got, want)
	}
}

func TestMalformedFramesGetTheirStatusAndID(t *testing.T) {
	const id = 0x0a0b0c0d
	idItem := item{3, u32(id)}
	tok, pl := item{1, token(1)}, item{2, []byte(`{}`)}
	tests := []struct {
		name   string
		frame  []byte
		status uint8
		id     uint32
	}{
		{"token of 31 bytes", frame2(idItem, item{1, token(1)[:31]}, pl), 5, id},
		{"token of 33 bytes", frame2(idItem, item{1, append(token(1), 1)}, pl), 5, id},
		{"bad token before the id item", frame2(item{1, nil}, pl, idItem), 5, id},
		{"no token item", frame2(idItem, pl), 2, id},
		{"no payload item", frame2(idItem, tok), 4, id},
		{"empty payload", frame2(idItem, tok, item{2, nil}), 4, id},
		{"payload of 2049 bytes", frame2(idItem, tok, item{2, bytes.Repeat([]byte("x"), 2049)}), 7, id},
		{"priority 7", frame2(idItem, tok, pl, item{5, []byte{7}}), 128, id},
		{"priority of 2 bytes", frame2(idItem, tok, pl, item{5, []byte{0, 10}}), 128, id},
		{"id of 3 bytes", frame2(item{3, []byte{1, 2, 3}}, tok, pl), 128, 0},
		{"expiry of 5 bytes", frame2(idItem, tok, pl, item{4, make([]byte, 5)}), 128, id},
		{"unknown item after the id", frame2(idItem, tok, pl, item{6, nil}), 128, id},
		{"unknown item before the id", frame2(item{9, []byte{1}}, idItem, tok, pl), 128, 0},
		{"item 0", frame2(idItem, item{0, nil}, tok, pl), 128, id},
		{"duplicate token item", frame2(idItem, tok, pl, tok), 128, id},
		{"item longer than the frame", []byte{2, 0, 0, 0, 6, 1, 0, 32, 1, 1, 1}, 128, 0},
		{"frame ends inside an item header", []byte{2, 0, 0, 0, 9, 3, 0, 4, 0, 0, 0, 1, 2, 0}, 128, 1},
		{"frame length of 1 MiB", []byte{2, 0, 0x10, 0, 0}, 128, 0},
		{"unknown command", []byte{7, 1, 2, 3, 4, 5, 6}, 128, 0},
		{"command 1 with a 31-byte token", cmd1(id, 0, token(1)[:31], []byte(`{}`)), 5, id},
		{"command 1 with an empty payload", cmd1(id, 0, token(1), nil), 4, id},
		{"command 1 with a 257-byte payload", cmd1(id, 0, token(1), bytes.Repeat([]byte("x"), 257)), 7, id},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestServer(t)
			c := dial(t, s.Addr, nil)
			// The valid frame after the bad one must be discarded.
			write(t, c, tc.frame, note(1, 1))
			expectResponse(t, c, tc.status, tc.id)
			if got := s.Count(); got != 0 {
				t.Errorf("Count() = %d; want 0", got)
			}
			if r := s.Rejected(); len(r) != 1 || r[0].ID != tc.id || r[0].Conn != 1 || r[0].Command != tc.frame[0] {
				t.Errorf("Rejected() = %+v; want one notification with ID %#x from connection 1", r, tc.id)
			}
		})
	}
}

func TestABadCommand0FrameDropsTheConnection(t *testing.T) {
	tests := map[string][]byte{
		"token of 31 bytes":   cmd0(token(1)[:31], []byte(`{}`)),
		"empty payload":       cmd0(token(1), nil),
		"payload of 257 byte": cmd0(token(1), bytes.Repeat([]byte("x"), 257)),
	}
	for name, frame := range tests {
		t.Run(name, func(t *testing.T) {
			s := newTestServer(t)
			c := dial(t, s.Addr, nil)
			write(t, c, frame, note(1, 1))
			expectDropped(t, c)
			if got := s.Count(); got != 0 {
				t.Errorf("Count() = %d; want 0", got)
			}
		})
	}
}

func TestRejectTokenRejectsAndDiscardsWhatFollows(t *testing.T) {
	s := newTestServer(t)
	s.RejectToken(hex.EncodeToString(token(2)), 8)
	c := dial(t, s.Addr, nil)
	write(t, c, note(1, 1), note(2, 2), note(3, 3))
	expectResponse(t, c, 8, 2)
	got := s.Notifications()
	if len(got) != 1 || got[0].ID != 1 {
		t.Fatalf("Notifications() = %+v; want only id 1", got)
	}
	if r := s.Rejected(); len(r) != 1 || r[0].ID != 2 || !bytes.Equal(r[0].Token, token(2)) || !bytes.Equal(r[0].Payload, payload(2)) {
		t.Fatalf("Rejected() = %+v; want id 2 with its token and payload", r)
	}

	// The rule holds on new connections until it is removed.
	c2 := dial(t, s.Addr, nil)
	write(t, c2, note(4, 3), cmd1(5, 0, token(2), []byte(`{}`)))
	expectResponse(t, c2, 8, 5)
	s.RejectToken(hex.EncodeToString(token(2)), 0)
	c3 := dial(t, s.Addr, nil)
	write(t, c3, note(6, 2))
	waitCount(t, s, 3)
	var ids []uint32
	for _, n := range s.Notifications() {
		ids = append(ids, n.ID)
	}
	if !reflect.DeepEqual(ids, []uint32{1, 4, 6}) {
		t.Fatalf("accepted ids %v; want [1 4 6]", ids)
	}
}

func TestRejectTokenOnCommand0DropsTheConnection(t *testing.T) {
	s := newTestServer(t)
	s.RejectToken(hex.EncodeToString(token(2)), 8)
	c := dial(t, s.Addr, nil)
	write(t, c, cmd0(token(2), []byte(`{}`)))
	expectDropped(t, c)
	if r := s.Rejected(); len(r) != 1 || r[0].Command != 0 {
		t.Fatalf("Rejected() = %+v; want the command-0 frame", r)
	}
}

func TestRejectFuncRejectsWithItsStatus(t *testing.T) {
	s := newTestServer(t)
	s.RejectFunc(func(n Notification) uint8 {
		if n.ID == 3 {
			return 1
		}
		return 0
	})
	c := dial(t, s.Addr, nil)
	write(t, c, note(1, 1), note(2, 1), note(3, 1), note(4, 1))
	expectResponse(t, c, 1, 3)
	if got := s.Count(); got != 2 {
		t.Fatalf("Count() = %d; want 2", got)
	}
	s.RejectFunc(nil)
	c2 := dial(t, s.Addr, nil)
	write(t, c2, note(3, 1))
	waitCount(t, s, 3)
}

func TestScriptEvents(t *testing.T) {
	t.Run("Drop closes without a response", func(t *testing.T) {
		s := newTestServer(t)
		s.Script(ConnScript{After: 2, Drop: true})
		c := dial(t, s.Addr, nil)
		write(t, c, note(1, 1), note(2, 1), note(3, 1))
		expectDropped(t, c)
		if got := s.Count(); got != 2 {
			t.Fatalf("Count() = %d; want 2", got)
		}
	})
	t.Run("Shutdown names the last accepted frame", func(t *testing.T) {
		s := newTestServer(t)
		s.Script(ConnScript{After: 2, Shutdown: true})
		c := dial(t, s.Addr, nil)
		write(t, c, note(11, 1), note(12, 1), note(13, 1))
		expectResponse(t, c, 10, 12)
		if got := s.Count(); got != 2 {
			t.Fatalf("Count() = %d; want 2", got)
		}
	})
	t.Run("Shutdown before any frame names id 0", func(t *testing.T) {
		s := newTestServer(t)
		s.Script(ConnScript{Shutdown: true})
		c := dial(t, s.Addr, nil)
		expectResponse(t, c, 10, 0)
	})
	t.Run("Reject rejects the next frame", func(t *testing.T) {
		s := newTestServer(t)
		s.Script(ConnScript{After: 1, Reject: 7})
		c := dial(t, s.Addr, nil)
		write(t, c, note(11, 1), note(12, 2), note(13, 3))
		expectResponse(t, c, 7, 12)
		if got := s.Count(); got != 1 {
			t.Fatalf("Count() = %d; want 1", got)
		}
		if r := s.Rejected(); len(r) != 1 || r[0].ID != 12 || !bytes.Equal(r[0].Token, token(2)) {
			t.Fatalf("Rejected() = %+v; want id 12", r)
		}
	})
	t.Run("Reject of a malformed frame uses the frame's own status", func(t *testing.T) {
		s := newTestServer(t)
		s.Script(ConnScript{Reject: 7})
		c := dial(t, s.Addr, nil)
		write(t, c, frame2(item{3, u32(5)}, item{2, []byte(`{}`)}))
		expectResponse(t, c, 2, 5)
	})
	t.Run("Garbage writes its bytes then closes", func(t *testing.T) {
		s := newTestServer(t)
		garbage := []byte("HTTP/1.1 400 Bad Request\r\n")
		s.Script(ConnScript{After: 1, Garbage: garbage})
		c := dial(t, s.Addr, nil)
		write(t, c, note(1, 1), note(2, 1))
		got, err := io.ReadAll(c)
		if err != nil || !bytes.Equal(got, garbage) {
			t.Fatalf("read %q, %v; want %q, nil", got, err, garbage)
		}
		if got := s.Count(); got != 1 {
			t.Fatalf("Count() = %d; want 1", got)
		}
	})
	t.Run("Stall pauses reading then carries on", func(t *testing.T) {
		const stall = 200 * time.Millisecond
		s := newTestServer(t)
		s.Script(ConnScript{After: 1, Stall: stall})
		c := dial(t, s.Addr, nil)
		start := time.Now()
		write(t, c, note(1, 1), note(2, 1))
		waitCount(t, s, 2)
		// Frame 1 was accepted after start, and frame 2 no sooner than stall after that.
		if d := time.Since(start); d < stall {
			t.Fatalf("both frames accepted %v after the write; want at least %v", d, stall)
		}
		write(t, c, note(3, 1))
		waitCount(t, s, 3)
	})
	t.Run("RefuseHandshake and HandshakeDelay, scripts used in order", func(t *testing.T) {
		const delay = 200 * time.Millisecond
		s := newTestServer(t)
		s.Script(ConnScript{RefuseHandshake: true}, ConnScript{HandshakeDelay: delay})
		if c, err := tryDial(s.Addr, nil); err == nil {
			c.Close()
			t.Fatal("first handshake succeeded; want it refused")
		}
		start := time.Now()
		c2 := dial(t, s.Addr, nil)
		if d := time.Since(start); d < delay {
			t.Fatalf("delayed handshake took %v; want at least %v", d, delay)
		}
		c3 := dial(t, s.Addr, nil)
		write(t, c2, note(2, 1))
		waitCount(t, s, 1)
		write(t, c3, note(3, 1))
		waitCount(t, s, 2)
		got := s.Notifications()
		if got[0].Conn != 2 || got[1].Conn != 3 || s.Conns() != 3 {
			t.Fatalf("connections %d and %d of %d; want 2 and 3 of 3", got[0].Conn, got[1].Conn, s.Conns())
		}
	})
}

func TestRequireClientCert(t *testing.T) {
	s := NewServer() // requires a certificate by default
	defer s.Close()

	// Without a certificate the handshake fails; with TLS 1.3 the client learns it on its
	// first read.
	if c, err := dialNoCert(s.Addr, s.ClientTLSConfig()); err == nil {
		write(t, c, note(1, 1))
		n, err := c.Read(make([]byte, 16))
		var ne net.Error
		if err == nil || errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("read %d bytes, err %v; want the handshake to fail", n, err)
		}
		c.Close()
	}
	if s.Count() != 0 {
		t.Fatalf("Count() = %d without a client certificate; want 0", s.Count())
	}

	certPEM, keyPEM := ClientCertPEM()
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	conf := s.ClientTLSConfig()
	conf.Certificates = []tls.Certificate{pair}
	c := dial(t, s.Addr, conf)
	write(t, c, note(2, 1))
	waitCount(t, s, 1)
	if got := s.Notifications(); len(got) != 1 || got[0].ID != 2 {
		t.Fatalf("Notifications() = %+v; want only id 2", got)
	}
}

func TestCertificateCoversLoopbackNames(t *testing.T) {
	s := newTestServer(t)
	for _, host := range []string{"127.0.0.1", "::1", "localhost"} {
		if err := s.Certificate().VerifyHostname(host); err != nil {
			t.Errorf("VerifyHostname(%q): %v", host, err)
		}
	}
	conf := &tls.Config{RootCAs: s.RootCAs(), ServerName: "localhost"}
	dial(t, s.Addr, conf)
}

func TestDiscardNotificationsCountsAndObserves(t *testing.T) {
	s := NewUnstartedServer()
	s.DiscardNotifications = true
	var mu sync.Mutex
	var seen []uint32
	s.Observe = func(n Notification) {
		mu.Lock()
		seen = append(seen, n.ID)
		mu.Unlock()
	}
	s.Start()
	defer s.Close()
	c := dial(t, s.Addr, nil)
	write(t, c, note(1, 1), note(2, 1), note(3, 1))
	waitCount(t, s, 3)
	if got := s.Notifications(); len(got) != 0 {
		t.Fatalf("Notifications() holds %d; want none", len(got))
	}
	mu.Lock()
	defer mu.Unlock()
	if !reflect.DeepEqual(seen, []uint32{1, 2, 3}) {
		t.Fatalf("Observe saw %v; want [1 2 3]", seen)
	}
}

func TestWaitCount(t *testing.T) {
	s := newTestServer(t)
	if s.WaitCount(1, 10*time.Millisecond) {
		t.Fatal("WaitCount(1) = true with nothing sent")
	}
	done := make(chan bool)
	go func() { done <- s.WaitCount(3, guard) }()
	c := dial(t, s.Addr, nil)
	write(t, c, note(1, 1), note(2, 1), note(3, 1))
	if !<-done {
		t.Fatalf("WaitCount(3) = false; Count() = %d", s.Count())
	}
}

func TestCloseClientConnectionsForcesReconnect(t *testing.T) {
	s := newTestServer(t)
	c := dial(t, s.Addr, nil)
	write(t, c, note(1, 1))
	waitCount(t, s, 1)
	s.CloseClientConnections()
	expectDropped(t, c)
	c2 := dial(t, s.Addr, nil)
	write(t, c2, note(2, 1))
	waitCount(t, s, 2)
	if got := s.Notifications()[1].Conn; got != 2 {
		t.Fatalf("second notification came on connection %d; want 2", got)
	}
}

func TestStartTwicePanics(t *testing.T) {
	s := newTestServer(t)
	defer func() {
		if recover() == nil {
			t.Fatal("second Start did not panic")
		}
	}()
	s.Start()
}

func TestCloseIsSafeToCallTwiceAndOnAnUnstartedServer(t *testing.T) {
	s := NewServer()
	s.Close()
	s.Close()
	NewUnstartedServer().Close()
	NewUnstartedFeedbackServer().Close()
}

func TestFeedbackServerSendsQueuedTuplesOnce(t *testing.T) {
	f := NewFeedbackServer()
	defer f.Close()
	t1, t2 := time.Unix(1600000000, 0), time.Unix(1600000001, 0)
	f.Add(token(1), t1)
	f.Add(token(2)[:16], t2)
	f.AddRaw([]byte{0xff, 0xfe})

	want := append(append(append(u32(1600000000), 0, 32), token(1)...), u32(1600000001)...)
	want = append(append(append(want, 0, 16), token(2)[:16]...), 0xff, 0xfe)
	got, err := io.ReadAll(dial(t, f.Addr, f.ClientTLSConfig()))
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("first read:\nGot:  %x, %v\nWant: %x, nil", got, err, want)
	}
	got, err = io.ReadAll(dial(t, f.Addr, &tls.Config{RootCAs: f.RootCAs()}))
	if err != nil || len(got) != 0 {
		t.Fatalf("second read: got %x, %v; want nothing, nil", got, err)
	}
	if f.Conns() != 2 {
		t.Fatalf("Conns() = %d; want 2", f.Conns())
	}
}

func TestCloseLeavesNoGoroutines(t *testing.T) {
	thePKI() // generate outside the measurement
	before := runtime.NumGoroutine()

	s := NewServer()
	f := NewFeedbackServer()
	s.Script(ConnScript{Stall: time.Hour}, ConnScript{HandshakeDelay: time.Hour})
	stalled := dial(t, s.Addr, nil)
	write(t, stalled, note(1, 1))
	delayed, err := net.Dial("tcp", s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer delayed.Close()
	idle := dial(t, s.Addr, nil)
	write(t, idle, note(2, 1))
	waitCount(t, s, 1)
	half, err := net.Dial("tcp", f.Addr) // never completes a handshake
	if err != nil {
		t.Fatal(err)
	}
	defer half.Close()
	for s.Conns() < 3 || f.Conns() < 1 {
		time.Sleep(time.Millisecond)
	}

	start := time.Now()
	s.Close()
	f.Close()
	if d := time.Since(start); d > guard {
		t.Fatalf("Close took %v", d)
	}
	expectDropped(t, stalled)
	expectDropped(t, idle)

	waitGoroutines(t, before)
}

// TestParseFrameBounds checks, on every prefix of a few frames, that parseFrame asks for more
// bytes only while the frame is incomplete and never for more than a frame can hold.
func TestParseFrameBounds(t *testing.T) {
	frames := [][]byte{note(1, 1), cmd1(2, 3, token(1), []byte(`{}`)), cmd0(token(1), []byte(`{}`)), {2, 0xff, 0xff, 0xff, 0xff}}
	for _, f := range frames {
		var p parsed
		for i := 0; i <= len(f); i++ {
			need := parseFrame(f[:i], &p)
			if need != 0 && (need <= i || need > 5+maxFrameLen) {
				t.Fatalf("frame %x, prefix %d: need %d", f, i, need)
			}
			if need == 0 && p.verdict == 0 && p.size != len(f) {
				t.Fatalf("frame %x: size %d; want %d", f, p.size, len(f))
			}
		}
	}
}

func FuzzParseFrame(f *testing.F) {
	f.Add(note(1, 1))
	f.Add(cmd1(2, 3, token(1), []byte(`{}`)))
	f.Add(cmd0(token(1), []byte(`{}`)))
	f.Add([]byte{2, 0, 0, 0, 6, 1, 0, 32, 1, 1, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		var p parsed
		need := parseFrame(b, &p)
		switch {
		case need != 0 && (need <= len(b) || need > 5+maxFrameLen):
			t.Fatalf("need %d for %d bytes", need, len(b))
		case need == 0 && p.verdict == 0 && (p.size > len(b) || len(p.n.Token) != 32 || len(p.n.Payload) == 0):
			t.Fatalf("accepted %+v, size %d of %d", p.n, p.size, len(b))
		}
	})
}

// discardConn returns a connection reader over frames for a started-less, discarding server,
// to measure the parsing loop without TLS.
func discardConn() (*gwConn, *Server) {
	s := NewUnstartedServer()
	s.discard = true
	return &gwConn{s: s, br: bufio.NewReaderSize(nil, readBufSize)}, s
}

func frameBlock(n int) []byte {
	var block []byte
	for i := range n {
		block = append(block, note(uint32(i), 1)...)
	}
	return block
}

func TestDiscardingParsesWithoutAllocating(t *testing.T) {
	g, s := discardConn()
	block := frameBlock(100)
	r := bytes.NewReader(block)
	allocs := testing.AllocsPerRun(20, func() {
		r.Reset(block)
		g.br.Reset(r)
		g.run()
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per 100 frames; want 0", allocs)
	}
	if s.Count() != 21*100 {
		t.Fatalf("Count() = %d; want %d", s.Count(), 21*100)
	}
}

func BenchmarkParseDiscarding(b *testing.B) {
	const perBlock = 1024
	g, _ := discardConn()
	block := frameBlock(perBlock)
	r := bytes.NewReader(block)
	b.SetBytes(int64(len(block) / perBlock))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += perBlock {
		r.Reset(block)
		g.br.Reset(r)
		g.run()
	}
}

// BenchmarkServerOverTLS measures the whole gateway path, TLS included, with one client
// connection writing frames in 64 KiB batches.
func BenchmarkServerOverTLS(b *testing.B) {
	s := NewUnstartedServer()
	s.DiscardNotifications = true
	s.Start()
	defer s.Close()
	c, err := tryDial(s.Addr, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Time{})
	frame := note(1, 1)
	perBatch := (64 << 10) / len(frame)
	batch := bytes.Repeat(frame, perBatch)
	b.SetBytes(int64(len(frame)))
	b.ResetTimer()
	for sent := 0; sent < b.N; sent += perBatch {
		n := min(perBatch, b.N-sent)
		if _, err := c.Write(batch[:n*len(frame)]); err != nil {
			b.Fatal(err)
		}
	}
	if !s.WaitCount(b.N, guard) {
		b.Fatalf("Count() = %d; want %d", s.Count(), b.N)
	}
}

// waitGoroutines fails unless the number of goroutines falls back to before within guard.
func waitGoroutines(t *testing.T, before int) {
	t.Helper()
	deadline := time.Now().Add(guard)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines before, %d after Close:\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestServersServeOnAGivenListener(t *testing.T) {
	listen := func() net.Listener {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		return ln
	}
	s, f, h := NewUnstartedServer(), NewUnstartedFeedbackServer(), NewUnstartedHTTP2Server()
	sl, fl, hl := listen(), listen(), listen()
	s.Listener, f.Listener, h.Listener = sl, fl, hl
	s.Start()
	defer s.Close()
	f.Start()
	defer f.Close()
	h.Start()
	defer h.Close()
	for _, c := range []struct{ got, want string }{
		{s.Addr, sl.Addr().String()}, {f.Addr, fl.Addr().String()}, {h.Addr, hl.Addr().String()},
	} {
		if c.got != c.want {
			t.Errorf("Addr = %s; want the listener's %s", c.got, c.want)
		}
	}
	c := dial(t, s.Addr, nil)
	write(t, c, note(1, 1))
	waitCount(t, s, 1)
}

func TestCACertPEMVerifiesTheServerCertificate(t *testing.T) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(CACertPEM()) {
		t.Fatal("CACertPEM is not a PEM certificate")
	}
	s := newTestServer(t)
	dial(t, s.Addr, &tls.Config{RootCAs: pool, ServerName: "localhost"})
}
