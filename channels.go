package apns

// This file owns broadcast channels (PROTOCOL.md §5.2, §5.3): the channel calls of the
// management API (CreateChannel, Channel, DeleteChannel, Channels) and the channelManager, a
// client's one connection to the management host, which also remembers the channels' storage
// policies for the broadcasts (broadcast.go).

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
)

// MessageStoragePolicy is a channel's message-storage policy, fixed when it is created.
type MessageStoragePolicy int

// The message-storage policies.
const (
	// NoMessageStored: APNs keeps no message for devices that are offline. Such a channel
	// gets a higher publishing budget, and takes only broadcasts with apns-expiration 0
	// (a zero BroadcastNotification.Expiration).
	NoMessageStored MessageStoragePolicy = 0
	// MostRecentMessageStored: APNs keeps a channel's latest message for devices that are
	// offline, for at most MaxStoredBroadcastAge; a broadcast's Expiration can shorten that.
	MostRecentMessageStored MessageStoragePolicy = 1
)

// String returns the policy's name.
func (p MessageStoragePolicy) String() string {
	switch p {
	case NoMessageStored:
		return "no message stored"
	case MostRecentMessageStored:
		return "most recent message stored"
	}
	return "message storage policy " + strconv.Itoa(int(p))
}

// Channel is a broadcast channel's configuration.
type Channel struct {
	ID            string               // the channel ID APNs chose, base64
	StoragePolicy MessageStoragePolicy // message-storage-policy
	PushType      string               // push-type; "LiveActivity", the only one APNs offers
}

// CreateChannel creates a broadcast channel for the app bundleID with the given storage
// policy and returns it, with the ID APNs chose. A refusal is a *Rejection (for example
// ReasonCannotCreateChannelConfig, ReasonFeatureNotEnabled), whatever its body: one that
// is not APNs' JSON leaves Reason empty, and its parse error goes to the error handler
// (WithErrorHandler). The channel calls may be made before Start. They are retried once
// with a new provider token after ExpiredProviderToken. The reads (Channel, Channels) and
// DeleteChannel are also retried once on a new connection when a connection that carried
// earlier calls fails without an answer (the management host, or a NAT, may drop it while
// idle); CreateChannel never is, since it may have created a channel.
func (c *Client) CreateChannel(ctx context.Context, bundleID string, policy MessageStoragePolicy) (*Channel, error) {
	if policy != NoMessageStored && policy != MostRecentMessageStored {
		return nil, ErrInvalidStoragePolicy
	}
	body, _ := json.Marshal(struct {
		Policy   MessageStoragePolicy `json:"message-storage-policy"`
		PushType string               `json:"push-type"`
	}{policy, "LiveActivity"})
	a, err := c.manage(ctx, http.MethodPost, bundleID, "/channels", "", body)
	if err != nil {
		return nil, err
	}
	id := a.header.Get(hdrChannelID)
	if checkChannelID(id) != nil {
		return nil, fmt.Errorf("apns: channel created, but the answer's apns-channel-id %q is not a channel ID", id)
	}
	a.m.remember(bundleID, id, policy)
	return &Channel{ID: id, StoragePolicy: policy, PushType: "LiveActivity"}, nil
}

// Channel reads the configuration of one of the app's channels. A channel that does not
// exist is a *Rejection with ReasonChannelNotRegistered.
func (c *Client) Channel(ctx context.Context, bundleID, channelID string) (*Channel, error) {
	if err := checkChannelID(channelID); err != nil {
		return nil, err
	}
	a, err := c.manage(ctx, http.MethodGet, bundleID, "/channels", channelID, nil)
	if err != nil {
		return nil, err
	}
	ch, err := parseChannelConfig(a.body)
	if err != nil {
		return nil, err
	}
	ch.ID = channelID
	a.m.remember(bundleID, channelID, ch.StoragePolicy)
	return ch, nil
}

// DeleteChannel deletes one of the app's channels. Its ID is never issued again; messages
// already stored may still be delivered. When the call was retried on a new connection (see
// CreateChannel), a ReasonChannelNotRegistered answer to the retry counts as success: the
// lost attempt may have deleted the channel.
func (c *Client) DeleteChannel(ctx context.Context, bundleID, channelID string) error {
	if err := checkChannelID(channelID); err != nil {
		return err
	}
	a, err := c.manage(ctx, http.MethodDelete, bundleID, "/channels", channelID, nil)
	if err != nil {
		return err
	}
	a.m.forget(bundleID, channelID)
	return nil
}

// Channels returns the IDs of all the app's channels, in APNs' order. An answer with an
// entry that is not a channel ID is an error.
func (c *Client) Channels(ctx context.Context, bundleID string) ([]string, error) {
	a, err := c.manage(ctx, http.MethodGet, bundleID, "/all-channels", "", nil)
	if err != nil {
		return nil, err
	}
	return parseChannelList(a.body)
}

// parseChannelConfig reads the answer to a channel read:
// {"message-storage-policy":0|1,"push-type":"LiveActivity"}.
func parseChannelConfig(body []byte) (*Channel, error) {
	var b struct {
		Policy   *int   `json:"message-storage-policy"`
		PushType string `json:"push-type"`
	}
	if err := json.Unmarshal(body, &b); err != nil {
		return nil, fmt.Errorf("apns: unreadable channel configuration: %w", err)
	}
	if b.Policy == nil || (*b.Policy != 0 && *b.Policy != 1) {
		return nil, fmt.Errorf("apns: channel configuration %.100q has no storage policy 0 or 1", body)
	}
	return &Channel{StoragePolicy: MessageStoragePolicy(*b.Policy), PushType: b.PushType}, nil
}

// parseChannelList reads the answer to a channel list: {"channels":["<base64>", ...]}.
func parseChannelList(body []byte) ([]string, error) {
	var b struct {
		Channels *[]string `json:"channels"`
	}
	if err := json.Unmarshal(body, &b); err != nil {
		return nil, fmt.Errorf("apns: unreadable channel list: %w", err)
	}
	if b.Channels == nil {
		return nil, fmt.Errorf("apns: channel list %.100q has no channels", body)
	}
	ids := *b.Channels
	if ids == nil {
		ids = []string{}
	}
	for i, id := range ids {
		if checkChannelID(id) != nil {
			return nil, fmt.Errorf("apns: channel list entry %d, %.100q, is not a channel ID", i, id)
		}
	}
	return ids, nil
}

// manageAnswer is a successful answer of the management host.
type manageAnswer struct {
	m      *channelManager // the manager that made the call
	header http.Header
	body   []byte
}

// manage makes one channel-management call: method on /1/apps/<bundleID><suffix>, with
// apns-channel-id channelID when not empty. A non-2xx answer is a *Rejection.
func (c *Client) manage(ctx context.Context, method, bundleID, suffix, channelID string, body []byte) (*manageAnswer, error) {
	h, err := c.http2()
	if err != nil {
		return nil, err
	}
	if err := checkBundleID(bundleID); err != nil {
		return nil, err
	}
	m := h.bc
	if m.addr == "" {
		return nil, ErrNoChannelManagement
	}
	if err := m.enter(); err != nil {
		return nil, err
	}
	defer m.calls.Done()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(c.abortCtx, cancel)() // Stop's abort ends the call

	// A replaced connection whose last call this was is closed: by this sweep, or by the state
	// hook when net/http forgets the stream later. Both are needed: net/http runs the hook
	// only when InFlight falls below what it saw at its last look, and a call's own stream
	// may start and end between two looks (helper-28).
	defer m.sweep()

	requestID := newUUID()
	idempotent := method != http.MethodPost // GET and DELETE; POST creates a channel
	reauthed, retried, resends := false, false, 0
	var dead *http.ClientConn // the connection that lost the first attempt
	for {
		status, header, resBody, used, err := m.roundTrip(ctx, method, managePathPrefix+bundleID+suffix, channelID, requestID, body, dead)
		var lost lostOnReusedConn
		if errors.As(err, &lost) && idempotent && !retried {
			retried, dead = true, lost.cc
			continue
		}
		var notSent notSentError
		if errors.As(err, &notSent) && resends < goAwayResends {
			resends++ // never sent: a POST too goes again, on a new connection
			continue
		}
		if err != nil {
			return nil, err
		}
		if status >= 200 && status < 300 {
			return &manageAnswer{m: m, header: header, body: resBody}, nil
		}
		resp, perr := parseResponse(status, responseID(header), resBody)
		if resp.StatusCode == http.StatusForbidden && resp.Reason == "ExpiredProviderToken" && m.token != nil && !reauthed {
			reauthed = true
			if m.token.rejected(used) {
				continue
			}
		}
		if retried && method == http.MethodDelete && resp.Reason == ReasonChannelNotRegistered {
			return &manageAnswer{m: m, header: header}, nil // the lost attempt deleted it
		}
		if perr != nil {
			c.reportError(perr)
		}
		return nil, &Rejection{
			Code:       uint8(codeOf(resp.StatusCode, resp.Reason)),
			StatusCode: resp.StatusCode,
			Reason:     resp.Reason,
			ID:         cmp(resp.ID, requestID),
			ChannelID:  channelID,
		}
	}
}

// channelManager is a client's connection to the channel-management host: one HTTP/2
// connection, opened by the first call, replaced when it fails, closed by Stop. It also
// remembers the storage policies of the channels the client created or read, so that a
// broadcast that APNs would refuse for its expiration is refused at once.
type channelManager struct {
	// Immutable.
	c     *Client
	addr  string // host:port; "" when the client has none
	tr    *http.Transport
	token *providerToken // nil for certificate authentication

	calls sync.WaitGroup // calls in progress

	// The sweeps the connections' state hook starts when a retired connection goes idle.
	// The hook may run from net/http's calls, so it takes only sweepMu.
	sweepMu  sync.Mutex     // guards noSweeps, and sweeps' Add
	noSweeps bool           // set by close: no new sweep starts
	sweeps   sync.WaitGroup // sweeps in progress

	mu       sync.Mutex // guards the fields below
	cc       *http.ClientConn
	retired  retiredConns  // replaced connections, closed once idle
	dialing  chan struct{} // closed when the dial in progress ends; nil if none
	closed   bool
	policies map[string]MessageStoragePolicy // bundle ID "/" channel ID -> policy
}

// newChannelManager sets up the management connection of an HTTP/2 client whose gateway is
// gatewayHost; it dials nothing.
func newChannelManager(c *Client, gatewayHost string, tok *providerToken) (*channelManager, error) {
	m := &channelManager{c: c, token: tok}
	var host, port string
	if u := c.set.manageURL; u != "" {
		addr, err := parseManagementURL(u)
		if err != nil {
			return nil, err
		}
		host, port, _ = net.SplitHostPort(addr)
	} else {
		switch strings.TrimSuffix(strings.ToLower(gatewayHost), ".") {
		case "api.push.apple.com":
			host, port, _ = net.SplitHostPort(BroadcastManagementHost)
		case "api.sandbox.push.apple.com", "api.development.push.apple.com":
			host, port, _ = net.SplitHostPort(BroadcastManagementSandboxHost)
		default:
			return m, nil // no endpoint: the calls say so
		}
	}
	m.addr = net.JoinHostPort(host, port)
	// Verification as for the gateway (TLS 1.2+, verified unless anyServerCert), but of the
	// management host's name: a ServerName set for the gateway names another host.
	cfg := c.tlsConfig.Clone()
	cfg.ServerName = host
	var protocols http.Protocols
	protocols.SetHTTP2(true)
	proxy := c.set.proxy
	if !c.set.proxySet {
		proxy = http.ProxyFromEnvironment
	}
	m.tr = &http.Transport{
		TLSClientConfig:     cfg,
		Protocols:           &protocols,
		Proxy:               proxy,
		DisableCompression:  true,
		TLSHandshakeTimeout: c.set.dial(),
		HTTP2:               &http.HTTP2Config{SendPingTimeout: http2IdlePingAfter, PingTimeout: http2PingTimeout},
	}
	return m, nil
}

// parseManagementURL returns the host:port of a WithBroadcastManagementURL value. Its errors
// show the URL without user info, query or fragment, which may hold secrets.
func parseManagementURL(raw string) (string, error) {
	s := raw
	if !strings.Contains(s, "://") {
		if net.ParseIP(s) != nil { // a bare IPv6 (or IPv4) literal
			addr, _, err := splitAddr(s, "443")
			return addr, err
		}
		s = "https://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) { // ue.Err, without the URL
			err = ue.Err
		}
		return "", fmt.Errorf("apns: broadcast management URL cannot be parsed: %v", err)
	}
	shown := &url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path, Opaque: u.Opaque}
	if u.User != nil {
		shown.User = url.User("xxxxx")
	}
	if u.RawQuery != "" || u.ForceQuery {
		shown.RawQuery = "xxxxx"
	}
	if u.Fragment != "" {
		shown.Fragment = "xxxxx"
	}
	switch {
	case !strings.EqualFold(u.Scheme, "https"):
		return "", fmt.Errorf("apns: broadcast management URL %s: want https", shown.Redacted())
	case u.User != nil || u.Opaque != "" || u.Path != "" && u.Path != "/" || shown.RawQuery != "" || u.Fragment != "":
		return "", fmt.Errorf("apns: broadcast management URL %s: want https://host[:port], without user info, path, query or fragment", shown.Redacted())
	case u.Hostname() == "":
		return "", fmt.Errorf("apns: broadcast management URL %s has no host", shown.Redacted())
	}
	port := u.Port()
	if port == "" {
		switch strings.TrimSuffix(strings.ToLower(u.Hostname()), ".") {
		case "api-manage-broadcast.push.apple.com":
			_, port, _ = net.SplitHostPort(BroadcastManagementHost)
		case "api-manage-broadcast.sandbox.push.apple.com":
			_, port, _ = net.SplitHostPort(BroadcastManagementSandboxHost)
		default:
			port = "443"
		}
	}
	return net.JoinHostPort(u.Hostname(), port), nil
}

// enter registers a call, unless Stop has closed the manager.
func (m *channelManager) enter() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrStopped
	}
	m.calls.Add(1)
	return nil
}

// conn returns the connection, dialing one when there is none or it failed; fresh reports
// that this call dialed it. A call at the server's stream limit waits in net/http's
// RoundTrip for a free stream. (Reserving one here instead took a full connection for a
// broken one: attack20d.) A connection that read a GOAWAY is replaced when net/http refuses
// a request on it (roundTrip).
func (m *channelManager) conn(ctx context.Context) (cc *http.ClientConn, fresh bool, err error) {
	for {
		m.mu.Lock()
		if m.cc != nil && m.cc.Err() == nil {
			cc := m.cc
			m.mu.Unlock()
			return cc, false, nil
		}
		if wait := m.dialing; wait != nil {
			m.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return nil, false, ctx.Err()
			}
		}
		idle := m.retireLocked(m.cc)
		m.cc = nil
		done := make(chan struct{})
		m.dialing = done
		m.mu.Unlock()
		closeIdle(idle)

		dctx, cancel := context.WithTimeout(ctx, m.c.set.dial())
		cc, err := m.tr.NewClientConn(dctx, "https", m.addr)
		cancel()

		if err == nil {
			cc.SetStateHook(m.stateHook)
		}
		m.mu.Lock()
		m.dialing = nil
		close(done)
		if err != nil {
			m.mu.Unlock()
			return nil, false, fmt.Errorf("apns: connecting to %s: %w", m.addr, err)
		}
		m.cc = cc
		m.mu.Unlock()
		if m.token != nil {
			m.token.freshen() // as for a new push connection
		}
		return cc, true, nil
	}
}

// stateHook is every management connection's: a retired one that goes idle or ends is
// closed, by a sweep of its own, since the hook may run under m.mu.
func (m *channelManager) stateHook(cc *http.ClientConn) {
	if !m.retired.any() || !done(cc) {
		return
	}
	m.sweepMu.Lock()
	defer m.sweepMu.Unlock()
	if m.noSweeps {
		return
	}
	m.sweeps.Add(1)
	go func() {
		defer m.sweeps.Done()
		m.sweep()
	}()
}

// retireLocked adds cc to the retired connections and returns those with no request in
// flight, for the caller to close once it has let go of m.mu.
func (m *channelManager) retireLocked(cc *http.ClientConn) (idle []*http.ClientConn) {
	if cc != nil {
		m.retired.add(cc)
	}
	return m.retired.sweep()
}

// refusedStream reports whether err is net/http's for a stream the server reset with
// REFUSED_STREAM, which it did not process (RFC 9113, section 8.7), so that a POST too may
// go again. The text is net/http's StreamError, whole: "stream error: stream ID <n>;
// REFUSED_STREAM; received from peer"; nothing in it comes from the server but the code.
func refusedStream(err error) bool {
	if err == nil {
		return false
	}
	rest, ok := strings.CutPrefix(err.Error(), "stream error: stream ID ")
	if !ok {
		return false
	}
	id, rest, ok := strings.Cut(rest, ";")
	if !ok || id == "" || strings.Trim(id, "0123456789") != "" {
		return false
	}
	return rest == " REFUSED_STREAM; received from peer"
}

// closeIdle closes management connections.
func closeIdle(conns []*http.ClientConn) {
	for _, cc := range conns {
		cc.Close()
	}
}

// lostOnReusedConn is the error of a request that got no answer on a connection that had
// carried earlier calls: one the host may have dropped while it was idle, worth one new
// attempt on a new connection when the call is idempotent.
type lostOnReusedConn struct {
	err error
	cc  *http.ClientConn
}

func (e lostOnReusedConn) Error() string { return e.err.Error() }
func (e lostOnReusedConn) Unwrap() error { return e.err }

// roundTrip makes one request and reads its whole answer. used is the authorization sent.
// A connection that is avoid (one that lost an attempt without noticing it is dead) is
// replaced first.
func (m *channelManager) roundTrip(ctx context.Context, method, path, channelID, requestID string, body []byte, avoid *http.ClientConn) (status int, header http.Header, resBody []byte, used string, err error) {
	cc, fresh, err := m.conn(ctx)
	if err != nil {
		return 0, nil, nil, "", err
	}
	if cc == avoid {
		m.replace(cc)
		if cc, fresh, err = m.conn(ctx); err != nil {
			return 0, nil, nil, "", err
		}
	}
	h := http.Header{hdrRequestID: {requestID}}
	if channelID != "" {
		h[hdrChannelID] = []string{channelID}
	}
	if m.token != nil {
		if used, err = m.token.get(); err != nil {
			return 0, nil, nil, "", err
		}
		h[hdrAuth] = []string{used}
	}
	var rd io.ReadCloser = http.NoBody
	if body != nil {
		h[hdrType] = jsonValue
		rd = io.NopCloser(bytes.NewReader(body))
	}
	reqCtx, cancel := context.WithTimeout(ctx, m.c.set.write())
	defer cancel()
	req := (&http.Request{
		Method:        method,
		URL:           &url.URL{Scheme: "https", Host: m.addr, Path: path},
		Header:        h,
		Body:          rd,
		ContentLength: int64(len(body)),
		Host:          m.addr,
	}).WithContext(reqCtx)
	res, err := cc.RoundTrip(req)
	if err != nil {
		notSent, refused := notSentByNetHTTP(err), refusedStream(err)
		err = fmt.Errorf("apns: channel management request: %w", err)
		switch {
		case ctx.Err() != nil:
		case refused:
			// The server reset the stream unprocessed (at its stream limit): the
			// connection is fine, and the call goes again.
			err = notSentError{err: err}
		case notSent:
			// The connection takes no new request (a GOAWAY came first): the request was
			// not processed, and goes again on a new connection.
			m.replace(cc)
			err = notSentError{err: err}
		default:
			m.failed(cc)
			if !fresh {
				err = lostOnReusedConn{err, cc}
			}
		}
		return 0, nil, nil, used, err
	}
	defer res.Body.Close()
	resBody, err = io.ReadAll(io.LimitReader(res.Body, maxManageResponse+1))
	if err != nil {
		return 0, nil, nil, used, fmt.Errorf("apns: channel management answer: %w", err)
	}
	if len(resBody) > maxManageResponse {
		return 0, nil, nil, used, fmt.Errorf("apns: channel management answer is larger than %d bytes", maxManageResponse)
	}
	return res.StatusCode, res.Header, resBody, used, nil
}

// replace retires cc if it is still the connection, whatever its state, so that the next
// call dials a new one.
func (m *channelManager) replace(cc *http.ClientConn) {
	m.mu.Lock()
	var idle []*http.ClientConn
	if m.cc == cc {
		idle = m.retireLocked(cc)
		m.cc = nil
	}
	m.mu.Unlock()
	closeIdle(idle)
}

// sweep closes the replaced connections whose calls have all ended.
func (m *channelManager) sweep() {
	m.mu.Lock()
	idle := m.retireLocked(nil)
	m.mu.Unlock()
	closeIdle(idle)
}

// failed retires cc if it takes no more requests.
func (m *channelManager) failed(cc *http.ClientConn) {
	m.mu.Lock()
	var idle []*http.ClientConn
	if m.cc == cc && cc.Err() != nil {
		idle = m.retireLocked(cc)
		m.cc = nil
	}
	m.mu.Unlock()
	closeIdle(idle)
}

// close refuses new calls, waits for those in progress (Stop's abort has ended them) and
// closes the connections.
func (m *channelManager) close() {
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
	m.calls.Wait()
	m.sweepMu.Lock()
	m.noSweeps = true
	m.sweepMu.Unlock()
	m.sweeps.Wait()
	m.mu.Lock()
	all := m.retired.take()
	if m.cc != nil {
		all = append(all, m.cc)
	}
	m.cc = nil
	m.mu.Unlock()
	closeIdle(all)
}

// remember records a channel's storage policy.
func (m *channelManager) remember(bundle, channel string, p MessageStoragePolicy) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.policies == nil {
		m.policies = make(map[string]MessageStoragePolicy)
	}
	if _, ok := m.policies[bundle+"/"+channel]; ok || len(m.policies) < maxKnownPolicies {
		m.policies[bundle+"/"+channel] = p
	}
}

// forget drops a deleted channel's policy.
func (m *channelManager) forget(bundle, channel string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.policies, bundle+"/"+channel)
}

// policy returns a channel's storage policy, if the client knows it.
func (m *channelManager) policy(bundle, channel string) (MessageStoragePolicy, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p, ok := m.policies[bundle+"/"+channel]
	return p, ok
}
