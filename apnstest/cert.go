// This file owns the package's test PKI: one ECDSA P-256 certificate authority per process,
// the localhost leaf certificate both mock servers present, the client certificate that
// ClientCertPEM hands out, and the TLS configurations built from them.

package apnstest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"sync"
	"time"
)

// testPKI is generated once, on first use, and never changes afterwards.
type testPKI struct {
	ca         *x509.Certificate
	server     tls.Certificate // leaf signed by ca; server.Leaf is set
	clientCert []byte          // PEM, signed by ca
	clientKey  []byte          // PEM, PKCS #8
}

var (
	pkiOnce sync.Once
	pkiVal  *testPKI
)

// thePKI returns the process-wide test PKI, generating it on the first call.
func thePKI() *testPKI {
	pkiOnce.Do(func() { pkiVal = newTestPKI() })
	return pkiVal
}

// newTestPKI generates the CA, the server leaf and the client certificate. Failure here means
// the crypto packages are broken, so it panics rather than returning an error every caller
// would have to check.
func newTestPKI() *testPKI {
	notBefore := time.Now().Add(-time.Hour)
	notAfter := notBefore.AddDate(10, 0, 0)

	caKey := newKey()
	caTmpl := &x509.Certificate{
		SerialNumber:          newSerial(),
		Subject:               pkix.Name{CommonName: "apnstest CA", Organization: []string{"apnstest"}},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	ca := mustParse(mustCreate(caTmpl, caTmpl, &caKey.PublicKey, caKey))

	leafKey := newKey()
	leafDER := mustCreate(&x509.Certificate{
		SerialNumber: newSerial(),
		Subject:      pkix.Name{CommonName: "apnstest server", Organization: []string{"apnstest"}},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}, ca, &leafKey.PublicKey, caKey)

	clientKey := newKey()
	clientDER := mustCreate(&x509.Certificate{
		SerialNumber: newSerial(),
		Subject:      pkix.Name{CommonName: "apnstest client", Organization: []string{"apnstest"}},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, ca, &clientKey.PublicKey, caKey)
	clientKeyDER, err := x509.MarshalPKCS8PrivateKey(clientKey)
	if err != nil {
		panic("apnstest: marshal client key: " + err.Error())
	}

	return &testPKI{
		ca: ca,
		server: tls.Certificate{
			Certificate: [][]byte{leafDER},
			PrivateKey:  leafKey,
			Leaf:        mustParse(leafDER),
		},
		clientCert: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: clientDER}),
		clientKey:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: clientKeyDER}),
	}
}

func newKey() *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic("apnstest: generate key: " + err.Error())
	}
	return k
}

func newSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic("apnstest: serial number: " + err.Error())
	}
	return n
}

func mustCreate(tmpl, parent *x509.Certificate, pub *ecdsa.PublicKey, signer *ecdsa.PrivateKey) []byte {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		panic("apnstest: create certificate: " + err.Error())
	}
	return der
}

func mustParse(der []byte) *x509.Certificate {
	c, err := x509.ParseCertificate(der)
	if err != nil {
		panic("apnstest: parse certificate: " + err.Error())
	}
	return c
}

// caPool returns a new pool holding only the test CA.
func caPool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(thePKI().ca)
	return p
}

// serverTLSConfig is the configuration both mock servers listen with.
func serverTLSConfig(requireClientCert bool) *tls.Config {
	auth := tls.VerifyClientCertIfGiven
	if requireClientCert {
		auth = tls.RequireAndVerifyClientCert
	}
	return &tls.Config{
		Certificates: []tls.Certificate{thePKI().server},
		ClientCAs:    caPool(),
		ClientAuth:   auth,
		MinVersion:   tls.VersionTLS12,
	}
}

// clientTLSConfig trusts the mock servers' certificate. It carries no client certificate.
func clientTLSConfig() *tls.Config {
	return &tls.Config{RootCAs: caPool(), MinVersion: tls.VersionTLS12}
}

// ClientCertPEM returns a PEM-encoded client certificate and its PEM-encoded PKCS #8 private
// key. The certificate is signed by the package's test CA, so it passes the client
// certificate check of every server in the package, and tls.X509KeyPair accepts the pair. Every call returns the same certificate, in new slices the caller may modify.
func ClientCertPEM() (certPEM, keyPEM []byte) {
	p := thePKI()
	return append([]byte(nil), p.clientCert...), append([]byte(nil), p.clientKey...)
}

// CACertPEM returns the PEM-encoded certificate of the package's test CA, which signed the
// servers' certificate and ClientCertPEM's, for clients outside the process (a file to trust).
// Every call returns the same certificate, in a new slice the caller may modify.
func CACertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: thePKI().ca.Raw})
}
