package apns

// This file owns the provider token of token-based authentication: an ES256 JWT that all
// connections of a client share, refreshed before APNs would call it expired and never so
// often that APNs would call it too many updates (PROTOCOL.md §4.6).

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"sync"
	"time"
)

const (
	// tokenRefreshAge is the age at which a provider token is replaced before use: APNs
	// rejects tokens older than an hour.
	tokenRefreshAge = 50 * time.Minute
	// tokenMinAge is the youngest a token may be when it is replaced: APNs answers
	// TooManyProviderTokenUpdates to a team that updates more than once per 20 minutes.
	tokenMinAge = 20 * time.Minute
)

// ErrInvalidAuthKey is returned for a signing key that is not a PEM-encoded P-256 private key.
var ErrInvalidAuthKey = errors.New("apns: auth key is not a PEM-encoded P-256 private key")

// providerToken holds the current JWT. It is safe for concurrent use; signing happens under
// its mutex, which no I/O ever holds.
type providerToken struct {
	key    *ecdsa.PrivateKey
	keyID  string
	teamID string
	now    func() time.Time

	mu     sync.Mutex
	bearer string // "bearer <jwt>", "" before the first use
	issued time.Time
}

// parseAuthKey reads a .p8 key: PEM "PRIVATE KEY" (PKCS #8) or "EC PRIVATE KEY" (SEC 1).
func parseAuthKey(p8 []byte) (*ecdsa.PrivateKey, error) {
	block, _ := pem.Decode(p8)
	if block == nil {
		return nil, ErrInvalidAuthKey
	}
	var key any
	var err error
	if block.Type == "EC PRIVATE KEY" {
		key, err = x509.ParseECPrivateKey(block.Bytes)
	} else {
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	}
	ec, ok := key.(*ecdsa.PrivateKey)
	if err != nil || !ok || ec.Curve != elliptic.P256() {
		return nil, ErrInvalidAuthKey
	}
	return ec, nil
}

// get returns the authorization header value, making a new token when there is none or the
// current one is tokenRefreshAge old.
func (t *providerToken) get() (string, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.bearer == "" || t.now().Sub(t.issued) >= tokenRefreshAge {
		if err := t.signLocked(); err != nil {
			return "", err
		}
	}
	return t.bearer, nil
}

// freshen replaces a token that has lived tokenRefreshAge-tokenMinAge, for a new connection:
// its next replacement then comes at least tokenMinAge after the connection first saw it.
func (t *providerToken) freshen() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.bearer != "" && t.now().Sub(t.issued) >= tokenRefreshAge-tokenMinAge {
		t.signLocked()
	}
}

// rejected is told that APNs answered ExpiredProviderToken to a request that carried used. It
// replaces the token unless another request already did or the token is younger than
// tokenMinAge, and reports whether a retry may help.
func (t *providerToken) rejected(used string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.bearer != used {
		return true // replaced meanwhile
	}
	if t.now().Sub(t.issued) < tokenMinAge {
		return false
	}
	return t.signLocked() == nil
}

func (t *providerToken) signLocked() error {
	now := t.now()
	header, _ := json.Marshal(map[string]string{"alg": "ES256", "kid": t.keyID})
	claims, _ := json.Marshal(map[string]any{"iss": t.teamID, "iat": now.Unix()})
	enc := base64.RawURLEncoding
	signing := enc.EncodeToString(header) + "." + enc.EncodeToString(claims)
	sum := sha256.Sum256([]byte(signing))
	r, s, err := ecdsa.Sign(rand.Reader, t.key, sum[:])
	if err != nil {
		return fmt.Errorf("apns: signing provider token: %w", err)
	}
	var sig [64]byte
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	t.bearer = "bearer " + signing + "." + enc.EncodeToString(sig[:])
	t.issued = now
	return nil
}
