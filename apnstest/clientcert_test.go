package apnstest

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// refusedWithoutCert checks that a client without a certificate gets nothing through: the
// handshake fails, at once or (TLS 1.3) on the client's first read.
func refusedWithoutCert(t *testing.T, addr string, frame []byte) {
	t.Helper()
	c, err := dialNoCert(addr, clientTLSConfig())
	if err != nil {
		return
	}
	defer c.Close()
	if frame != nil {
		_, _ = c.Write(frame)
	}
	n, err := io.ReadAll(c)
	var ne net.Error
	if err == nil || errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("read %d bytes, err %v without a client certificate; want the handshake to fail", len(n), err)
	}
}

// The gateway requires a client certificate by default, as Apple's did.
func TestServerRequiresAClientCertificateByDefault(t *testing.T) {
	s := newTestServer(t)
	refusedWithoutCert(t, s.Addr, note(1, 1))
	if s.Count() != 0 || len(s.Rejected()) != 0 {
		t.Fatalf("Count() = %d, Rejected() = %v without a certificate; want nothing", s.Count(), s.Rejected())
	}
}

// The feedback service requires one too: without it the client reads no tuple.
func TestFeedbackServerRequiresAClientCertificateByDefault(t *testing.T) {
	f := NewFeedbackServer()
	defer f.Close()
	f.Add(token(1), time.Unix(1600000000, 0))
	refusedWithoutCert(t, f.Addr, nil)
	// The tuple is still there for a client with a certificate.
	got, err := io.ReadAll(dial(t, f.Addr, nil))
	if err != nil || len(got) != 6+32 {
		t.Fatalf("with a certificate: read %d bytes, %v; want one tuple (38 bytes)", len(got), err)
	}
}

// AllowNoClientCert lets clients without a certificate in, on both servers.
func TestAllowNoClientCertAcceptsClientsWithoutOne(t *testing.T) {
	s := NewUnstartedServer()
	s.AllowNoClientCert = true
	s.Start()
	defer s.Close()
	c, err := dialNoCert(s.Addr, s.ClientTLSConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	write(t, c, note(1, 1))
	waitCount(t, s, 1)

	f := NewUnstartedFeedbackServer()
	f.AllowNoClientCert = true
	f.Start()
	defer f.Close()
	f.Add(token(1), time.Unix(1600000000, 0))
	fc, err := dialNoCert(f.Addr, f.ClientTLSConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer fc.Close()
	if got, err := io.ReadAll(fc); err != nil || len(got) != 6+32 {
		t.Fatalf("read %d bytes, %v; want one tuple (38 bytes)", len(got), err)
	}
}
