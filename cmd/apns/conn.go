package main

// This file owns the connection flags that push, feedback and bench share, and the making of
// a client from them.

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	apns "github.com/Kwik-messenger/apns-go"
)

// Apple's hosts.
const (
	productionHost  = "api.push.apple.com"
	sandboxHost     = "api.sandbox.push.apple.com"
	feedbackHost    = "feedback.push.apple.com:2196"
	feedbackSandbox = "feedback.sandbox.push.apple.com:2196"
)

// connFlags are the flags that say where to connect and how to authenticate.
type connFlags struct {
	cert, key     string // PEM files: certificate authentication
	p8            string // PEM file: token authentication, with keyID and teamID
	keyID, teamID string
	topic         string
	sandbox       bool
	gateway       string
	ca            string
	insecure      bool
	protocol      string
	tokenAuth     bool // whether the command takes -p8 at all
}

// connFeature selects optional connection flags.
type connFeature int

const (
	withToken    connFeature = 1 << iota // -p8, -key-id, -team-id, -topic: the HTTP/2 API's token auth
	withProtocol                         // -protocol
	withSandbox                          // -sandbox: Apple's sandbox instead of production
)

// register adds the flags to fs: always -cert, -key, -gateway, -ca and -insecure, and those
// that feat selects.
func (c *connFlags) register(fs *flag.FlagSet, feat connFeature) {
	fs.StringVar(&c.cert, "cert", "", "client certificate `FILE` (PEM), for certificate authentication")
	fs.StringVar(&c.key, "key", "", "private key `FILE` (PEM) of -cert")
	c.tokenAuth = feat&withToken != 0
	if c.tokenAuth {
		fs.StringVar(&c.p8, "p8", "", "signing key `FILE` (.p8 from Apple), for token authentication (HTTP/2)")
		fs.StringVar(&c.keyID, "key-id", "", "`ID` of the -p8 key (10 characters)")
		fs.StringVar(&c.teamID, "team-id", "", "Apple developer team `ID`, for -p8")
		fs.StringVar(&c.topic, "topic", "", "apns-topic, usually the app's bundle ID (required with -p8)")
	}
	if feat&withSandbox != 0 {
		fs.BoolVar(&c.sandbox, "sandbox", false, "use Apple's sandbox (development) service")
	}
	fs.StringVar(&c.gateway, "gateway", "", "gateway `ADDR` instead of Apple's: host:port (binary) or https://host:port (HTTP/2)")
	fs.StringVar(&c.ca, "ca", "", "trust the CA certificates in `FILE` (PEM) instead of the system's, e.g. the mock's ca.pem")
	fs.BoolVar(&c.insecure, "insecure", false, "accept any server certificate (testing only)")
	if feat&withProtocol != 0 {
		fs.StringVar(&c.protocol, "protocol", "auto", "`protocol`: auto (by -gateway), binary or http2")
	}
}

// check reports a usage problem with the flags, or nil.
func (c *connFlags) check() error {
	switch {
	case c.protocol != "" && c.protocol != "auto" && c.protocol != "binary" && c.protocol != "http2":
		return fmt.Errorf("-protocol is %q; want auto, binary or http2", c.protocol)
	case (c.cert == "") != (c.key == ""):
		return errors.New("-cert and -key go together")
	case c.p8 != "" && c.cert != "":
		return errors.New("give -cert/-key or -p8, not both")
	case c.p8 != "" && (c.keyID == "" || c.teamID == "" || c.topic == ""):
		return errors.New("-p8 needs -key-id, -team-id and -topic")
	case c.p8 != "" && c.protocol == "binary":
		return errors.New("-p8 works only with the HTTP/2 API, not -protocol binary")
	case c.protocol == "binary" && isURL(c.gateway):
		return fmt.Errorf("-gateway %s is an https:// URL, which means the HTTP/2 API; for -protocol binary give host:port, e.g. 127.0.0.1:2195", c.gateway)
	case c.p8 == "" && c.cert == "" && !c.insecure && c.gateway == "":
		if c.tokenAuth {
			return errors.New("give -cert and -key, or -p8, -key-id, -team-id and -topic")
		}
		return errors.New("give -cert and -key")
	}
	return nil
}

// isURL reports whether gateway is an https:// URL, which means the HTTP/2 API.
func isURL(gateway string) bool {
	return strings.HasPrefix(strings.ToLower(gateway), "https://")
}

// address returns the gateway to connect to: -gateway, or Apple's production or sandbox host
// (of the binary protocol with -protocol binary).
func (c *connFlags) address() string {
	if c.gateway != "" {
		return c.gateway
	}
	if c.protocol == "binary" { // Apple has retired these
		if c.sandbox {
			return "gateway.sandbox.push.apple.com:2195"
		}
		return "gateway.push.apple.com:2195"
	}
	if c.sandbox {
		return sandboxHost
	}
	return productionHost
}

// isHTTP2 reports whether the client will speak the HTTP/2 API, by the rule CreateClient
// documents: -protocol, token authentication, an https:// gateway or one of Apple's hosts.
func (c *connFlags) isHTTP2() bool {
	switch {
	case c.protocol == "binary":
		return false
	case c.protocol == "http2", c.p8 != "", c.gateway == "", isURL(c.gateway):
		return true
	}
	host, _, err := net.SplitHostPort(c.gateway)
	if err != nil {
		host = c.gateway
	}
	switch strings.TrimSuffix(strings.ToLower(host), ".") {
	case "gateway.push.apple.com", "gateway.sandbox.push.apple.com", productionHost, sandboxHost:
		return true
	}
	return false
}

// options returns the client options the flags ask for, ahead of extra.
func (c *connFlags) options(extra ...apns.Option) ([]apns.Option, error) {
	var opts []apns.Option
	var tlsConf *tls.Config
	if c.ca != "" {
		pem, err := os.ReadFile(c.ca)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s holds no PEM certificate", c.ca)
		}
		tlsConf = &tls.Config{RootCAs: pool}
	}
	if c.insecure && c.p8 != "" { // CreateTokenClient has no anyServerCert parameter
		if tlsConf == nil {
			tlsConf = &tls.Config{}
		}
		tlsConf.InsecureSkipVerify = true
	}
	if tlsConf != nil {
		opts = append(opts, apns.WithTLSConfig(tlsConf))
	}
	switch c.protocol {
	case "binary":
		opts = append(opts, apns.WithProtocol(apns.ProtocolBinary))
	case "http2":
		opts = append(opts, apns.WithProtocol(apns.ProtocolHTTP2))
	}
	if c.topic != "" {
		opts = append(opts, apns.WithTopic(c.topic))
	}
	return append(opts, extra...), nil
}

// client makes the client the flags describe for gateway.
func (c *connFlags) client(gateway string, extra ...apns.Option) (*apns.Client, error) {
	opts, err := c.options(extra...)
	if err != nil {
		return nil, err
	}
	if c.p8 != "" {
		p8, err := os.ReadFile(c.p8)
		if err != nil {
			return nil, err
		}
		return apns.CreateTokenClient(gateway, p8, c.keyID, c.teamID, c.topic, opts...)
	}
	var cert, key []byte
	if c.cert != "" {
		if cert, err = os.ReadFile(c.cert); err != nil {
			return nil, err
		}
		if key, err = os.ReadFile(c.key); err != nil {
			return nil, err
		}
	}
	return apns.CreateClient(gateway, cert, key, c.insecure, opts...)
}

// errorLog returns an error handler for the client that prints connection trouble on stderr,
// prefixed with the command's name and the time.
func errorLog(env *cmdEnv, name string) apns.Option {
	return apns.WithErrorHandler(func(err error) {
		fmt.Fprintf(env.stderr, "apns %s: %s %v\n", name, time.Now().Format("15:04:05"), strings.TrimPrefix(err.Error(), "apns: "))
	})
}
