// This file owns the provider-token (JWT) checks of HTTP2Server (PROTOCOL.md §4.6): parsing
// the compact JWS form, verifying its ES256 signature and judging its age.

package apnstest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/big"
	"strconv"
	"strings"
	"time"
)

// Provider-token rules (PROTOCOL.md §4.6).
const (
	tokenMaxAge      = time.Hour        // older iat: ExpiredProviderToken
	tokenMaxSkew     = time.Minute      // iat further in the future: InvalidProviderToken
	tokenMinRefresh  = 20 * time.Minute // a different token sooner: TooManyProviderTokenUpdates
	maxProviderToken = 4096             // longer authorization values are not parsed
)

var errBadJWT = errors.New("apnstest: malformed provider token")

// providerToken is a parsed JWT whose signature has not been checked yet.
type providerToken struct {
	alg, kid     string
	iss          string
	iat          int64
	signingInput string // base64url(header) "." base64url(claims)
	sig          []byte // raw signature bytes
}

// parseProviderToken splits and decodes a compact JWS. Every part must be unpadded base64url;
// the header must be a JSON object with string "alg" and "kid"; the claims a JSON object with
// a string "iss" and an integer "iat".
func parseProviderToken(s string) (*providerToken, error) {
	if len(s) > maxProviderToken {
		return nil, errBadJWT
	}
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return nil, errBadJWT
	}
	var raw [3][]byte
	for i, p := range parts {
		b, err := base64.RawURLEncoding.DecodeString(p)
		if err != nil || len(b) == 0 {
			return nil, errBadJWT
		}
		raw[i] = b
	}
	var hdr struct {
		Alg *string `json:"alg"`
		Kid *string `json:"kid"`
	}
	var claims struct {
		Iss *string      `json:"iss"`
		Iat *json.Number `json:"iat"`
	}
	if err := decodeObject(raw[0], &hdr); err != nil || hdr.Alg == nil || hdr.Kid == nil {
		return nil, errBadJWT
	}
	if err := decodeObject(raw[1], &claims); err != nil || claims.Iss == nil || claims.Iat == nil {
		return nil, errBadJWT
	}
	iat, err := strconv.ParseInt(claims.Iat.String(), 10, 64)
	if err != nil {
		return nil, errBadJWT
	}
	return &providerToken{
		alg:          *hdr.Alg,
		kid:          *hdr.Kid,
		iss:          *claims.Iss,
		iat:          iat,
		signingInput: parts[0] + "." + parts[1],
		sig:          raw[2],
	}, nil
}

// decodeObject decodes one JSON object into v, rejecting anything after it.
func decodeObject(b []byte, v any) error {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || b[0] != '{' {
		return errBadJWT
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	if err := d.Decode(v); err != nil {
		return err
	}
	if d.More() {
		return errBadJWT
	}
	return nil
}

// verifyES256 reports whether sig is a valid ES256 signature of input by pub: ECDSA over
// P-256 of the SHA-256 digest, sent as the 64-byte concatenation r || s (RFC 7518 §3.4), not
// ASN.1.
func verifyES256(pub *ecdsa.PublicKey, input string, sig []byte) bool {
	if pub == nil || pub.Curve != elliptic.P256() || len(sig) != 64 {
		return false
	}
	digest := sha256.Sum256([]byte(input))
	r := new(big.Int).SetBytes(sig[:32])
	s := new(big.Int).SetBytes(sig[32:])
	return ecdsa.Verify(pub, digest[:], r, s)
}

// checkProviderToken judges a bearer token as APNs does and returns the key ID it names (once
// parsed) with 0 and "" when it is acceptable, or the status and reason to reject it.
func checkProviderToken(tok string, keys map[string]*ecdsa.PublicKey, team string, now time.Time) (kid string, status int, reason string) {
	pt, err := parseProviderToken(tok)
	if err != nil {
		return "", 403, "InvalidProviderToken"
	}
	kid = pt.kid
	pub := keys[pt.kid]
	switch {
	case pt.alg != "ES256", pub == nil, !verifyES256(pub, pt.signingInput, pt.sig):
		return kid, 403, "InvalidProviderToken"
	case pt.iss == "", team != "" && pt.iss != team:
		return kid, 403, "InvalidProviderToken"
	}
	iat := time.Unix(pt.iat, 0)
	switch {
	case now.Sub(iat) > tokenMaxAge:
		return kid, 403, "ExpiredProviderToken"
	case iat.Sub(now) > tokenMaxSkew:
		return kid, 403, "InvalidProviderToken"
	}
	return kid, 0, ""
}
