package apns

// Helpers for the external tests (package apns_test).

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"testing"
)

// NewTestAuthKey returns a new P-256 key and its PEM (PKCS #8) form, as Apple's .p8 files hold.
func NewTestAuthKey(t testing.TB) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// WithoutSentinel makes binary workers wait out the assume-sent timeout at Stop instead of
// confirming with a sentinel frame, as before the sentinel existed (for comparisons).
func WithoutSentinel() Option { return func(s *settings) { s.noSentinel = true } }

// WithFirstID makes every binary worker start its identifiers at id, to test wrap-around.
func WithFirstID(id uint32) Option { return func(s *settings) { s.firstID = id } }
