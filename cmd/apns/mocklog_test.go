package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/json"
	"io"
	"os"
	"testing"
	"time"
)

// The mock logs every notification its own checks refuse, with the status and reason, not
// only those its rules reject.
func TestMockLogsRefusalsByItsOwnChecks(t *testing.T) {
	c := startCmd("mock", "-json", "-dir", t.TempDir())
	var info mockInfo
	if line := c.next(t); json.Unmarshal([]byte(line), &info) != nil || info.Event != "ready" {
		t.Fatalf("first line %q; want the ready object", line)
	}

	// HTTP/2: a provider token from the wrong team gets 403.
	code, out, stderr := runCmd(t, "", "push", "-gateway", info.HTTP2, "-ca", info.CA, "-p8", info.TokenKey,
		"-key-id", info.KeyID, "-team-id", "WRONGTEAM1", "-topic", "com.example.app", "-token", tok(1), "-alert", "hi")
	if code != exitRejected {
		t.Fatalf("push: exit %d; want 1. stdout:\n%s\nstderr:\n%s", code, out, stderr)
	}
	var e mockEvent
	if line := c.next(t); json.Unmarshal([]byte(line), &e) != nil || e.Gateway != "http2" || e.Accepted || e.Status != 403 || e.Reason == "" || e.Token != tok(1) {
		t.Fatalf("line %q; want the 403 with its reason", line)
	}

	// Binary: a frame with a 16-byte token gets status 5 (invalid token size).
	conn := dialMock(t, &info)
	var items []byte
	items = appendItem(items, 1, bytes.Repeat([]byte{1}, 16))
	items = appendItem(items, 2, []byte(`{"aps":{}}`))
	items = appendItem(items, 3, []byte{0, 0, 0, 42})
	frame := binary.BigEndian.AppendUint32([]byte{2}, uint32(len(items)))
	if _, err := conn.Write(append(frame, items...)); err != nil {
		t.Fatal(err)
	}
	var resp [6]byte
	if _, err := io.ReadFull(conn, resp[:]); err != nil || resp != [6]byte{8, 5, 0, 0, 0, 42} {
		t.Fatalf("error response %v, %v; want status 5 for id 42", resp, err)
	}
	e = mockEvent{}
	if line := c.next(t); json.Unmarshal([]byte(line), &e) != nil || e.Gateway != "binary" || e.Accepted || e.Status != 5 || e.Reason != "invalid token size" || e.ID != "42" {
		t.Fatalf("line %q; want status 5 (invalid token size) for id 42", line)
	}
	if code := c.stop(t); code != 0 {
		t.Fatalf("mock exit %d after cancel; want 0", code)
	}
}

func appendItem(b []byte, id byte, data []byte) []byte {
	b = append(b, id)
	b = binary.BigEndian.AppendUint16(b, uint16(len(data)))
	return append(b, data...)
}

// dialMock opens a TLS connection to the mock's binary gateway with its client certificate.
func dialMock(t *testing.T, info *mockInfo) *tls.Conn {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(info.ClientCert, info.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(info.CA)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	conn, err := tls.Dial("tcp", info.Gateway, &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.SetDeadline(time.Now().Add(guard))
	t.Cleanup(func() { conn.Close() })
	return conn
}
