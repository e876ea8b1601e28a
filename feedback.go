package apns

// This file owns the feedback client: a goroutine that polls Apple's feedback service and
// hands the bad tokens it reads to GetBadTokens.

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
)

// Limits of a feedback read.
const (
	// MaxFeedbackTokens caps the tuples kept from one poll, and the tokens waiting for
	// GetBadTokens. Tuples beyond it are read and dropped (the service forgets what it sent),
	// and the error handler is told how many.
	MaxFeedbackTokens = 100_000
	// maxFeedbackTokenSize is the largest token length a tuple may declare.
	maxFeedbackTokenSize = 100
	// feedbackReadTimeout bounds one whole feedback read.
	feedbackReadTimeout = time.Minute
	// FeedbackStopGrace is how long Stop lets the feedback polls in progress go on, all of
	// them at once: the service forgets the tuples it has sent, so a poll cut short would lose
	// them. A poll still running after it is ended, and the tuples it has read are kept.
	// Shutdown's deadline ends it sooner.
	FeedbackStopGrace = 2 * time.Second
)

// BadToken is a device token that the feedback service reported: APNs could not deliver to it
// because the app is no longer on the device.
type BadToken struct {
	Token     string    // hexadecimal device token
	Timestamp time.Time // when APNs found the app gone; ignore the report if the device registered again after it
}

// FeedbackClient polls the feedback service. It is safe for concurrent use.
type FeedbackClient struct {
	// Immutable.
	addr      string
	tlsConfig *tls.Config
	poll      time.Duration
	timeout   time.Duration
	onError   func(error)     // the client's error handler; runs on the poller, so must not call Stop
	ctx       context.Context // ends when Stop is called: no new poll
	cancel    context.CancelFunc
	fetchCtx  context.Context // ends FeedbackStopGrace after Stop (or at Shutdown's deadline): the poll in progress ends
	endFetch  context.CancelFunc
	done      chan struct{} // closed when the poller has exited
	ready     chan struct{} // capacity 1: tokens arrived

	mu      sync.Mutex
	pending []BadToken // read but not yet returned
	stopped bool
}

// SetupFeedbackClient returns a client for the feedback service at gateway ("host" or
// "host:port", port 2196 by default) that shares the client's certificate and TLS settings.
// It starts polling at once and then every poll interval; a failed poll is retried at the next
// interval and passed to the error handler. While tokens read are waiting for GetBadTokens, no
// new poll is made, so they stay with Apple instead of piling up here. The client's Stop also
// stops the feedback client; a poll in progress then has FeedbackStopGrace to finish, and the
// tokens it read wait for GetBadTokens. A failed poll reaches the error handler
// (WithErrorHandler) on the poller's goroutine, which the client's Stop waits for: the
// handler must not call Stop or Shutdown (call go c.Stop() instead).
//
// On a client of the HTTP/2 API, which has no feedback service, the feedback client makes no
// connection: gateway and poll are ignored, and GetBadTokens returns the tokens that APNs
// answered with 410 (Unregistered, ExpiredToken) since, with the 410's timestamp.
func (c *Client) SetupFeedbackClient(gateway string, poll time.Duration) (*FeedbackClient, error) {
	if !c.t.hasFeedbackService() {
		return c.addFeedback(&FeedbackClient{ready: make(chan struct{}, 1)}, false)
	}
	if poll <= 0 {
		return nil, errors.New("apns: feedback poll interval must be positive")
	}
	fc, err := c.newFeedbackClient(gateway)
	if err != nil {
		return nil, err
	}
	fc.poll = poll
	return c.addFeedback(fc, true)
}

// ErrNoFeedbackService is returned by ReadFeedback on a client of the HTTP/2 API, which has
// no feedback service (its 410 answers take its place, see SetupFeedbackClient).
var ErrNoFeedbackService = errors.New("apns: the HTTP/2 API has no feedback service")

// ReadFeedback reads the feedback service at gateway once, as one poll of SetupFeedbackClient
// does: it connects with the client's certificate and TLS settings, reads the tuples until the
// service closes the connection, and returns them (none when the service has nothing). It
// needs no Start. ctx bounds the whole read; a service that answers in part returns the tokens
// read with the error.
func (c *Client) ReadFeedback(ctx context.Context, gateway string) ([]BadToken, error) {
	if !c.t.hasFeedbackService() {
		return nil, ErrNoFeedbackService
	}
	fc, err := c.newFeedbackClient(gateway)
	if err != nil {
		return nil, err
	}
	return fc.fetch(ctx)
}

// newFeedbackClient returns a feedback client for gateway with the client's TLS settings,
// neither registered nor polling.
func (c *Client) newFeedbackClient(gateway string) (*FeedbackClient, error) {
	addr, host, err := splitAddr(gateway, DefaultFeedbackPort)
	if err != nil {
		return nil, err
	}
	cfg := c.tlsConfig.Clone()
	if c.set.tlsConfig == nil || c.set.tlsConfig.ServerName == "" {
		cfg.ServerName = host
	}
	return &FeedbackClient{
		addr:      addr,
		tlsConfig: cfg,
		timeout:   c.set.dial(),
		onError:   c.set.errorHandler,
		ready:     make(chan struct{}, 1),
	}, nil
}

// addFeedback registers fc with the client, which stops it, and starts its poller if poll.
func (c *Client) addFeedback(fc *FeedbackClient, poll bool) (*FeedbackClient, error) {
	fc.ctx, fc.cancel = context.WithCancel(context.Background())
	fc.fetchCtx, fc.endFetch = context.WithCancel(context.Background())
	fc.done = make(chan struct{})
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		fc.cancel()
		fc.endFetch()
		return nil, ErrStopped
	}
	c.feedbacks = append(c.feedbacks, fc)
	if poll {
		go fc.run()
	} else {
		close(fc.done)
	}
	return fc, nil
}

// add hands tokens to GetBadTokens. At most MaxFeedbackTokens wait; beyond that the oldest are
// dropped.
func (fc *FeedbackClient) add(tokens []BadToken) {
	fc.mu.Lock()
	fc.pending = append(fc.pending, tokens...)
	if extra := len(fc.pending) - MaxFeedbackTokens; extra > 0 {
		fc.pending = append(fc.pending[:0], fc.pending[extra:]...)
	}
	fc.mu.Unlock()
	select {
	case fc.ready <- struct{}{}:
	default:
	}
}

// GetBadTokens waits until a poll has read at least one bad token and returns every token read
// since the last call. After Stop it returns the tokens still waiting, those of a poll that was
// in progress included (it waits for that poll to end), then ErrFeedbackStopped.
func (fc *FeedbackClient) GetBadTokens() ([]BadToken, error) {
	return fc.BadTokens(context.Background())
}

// BadTokens is GetBadTokens with a context that bounds the wait.
func (fc *FeedbackClient) BadTokens(ctx context.Context) ([]BadToken, error) {
	for {
		fc.mu.Lock()
		tokens, stopped := fc.pending, fc.stopped
		fc.pending = nil
		fc.mu.Unlock()
		if len(tokens) > 0 {
			return tokens, nil
		}
		if stopped {
			// The poller may still hold what a poll in progress read: wait for it to hand
			// that over and exit, then take the last tokens.
			select {
			case <-fc.done:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			fc.mu.Lock()
			tokens = fc.pending
			fc.pending = nil
			fc.mu.Unlock()
			if len(tokens) > 0 {
				return tokens, nil
			}
			return nil, ErrFeedbackStopped
		}
		select {
		case <-fc.ready:
		case <-fc.ctx.Done():
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Stop stops polling and waits for the poller to exit. A poll in progress has
// FeedbackStopGrace to finish; the tokens it read wait for GetBadTokens. Stop is idempotent.
// The error handler runs on the poller, so it must not call Stop (nor the client's Stop or
// Shutdown, which call it): the call would wait for itself. Call go fc.Stop() there instead.
func (fc *FeedbackClient) Stop() {
	stopFeedbacks(context.Background(), []*FeedbackClient{fc})
	<-fc.done
}

// stopFeedbacks stops the feedback clients fcs together: they make no new poll, and the polls
// in progress get FeedbackStopGrace between them to finish, or until ctx ends, then are cut
// short. It reports whether ctx ended first. It does not wait for the pollers to exit (done):
// a poller may still be running the error handler.
func stopFeedbacks(ctx context.Context, fcs []*FeedbackClient) (cut bool) {
	if len(fcs) == 0 {
		return false
	}
	for _, fc := range fcs {
		fc.mu.Lock()
		if !fc.stopped {
			fc.stopped = true
			fc.cancel()
		}
		fc.mu.Unlock()
	}
	grace := time.NewTimer(FeedbackStopGrace)
	defer grace.Stop()
wait:
	for _, fc := range fcs {
		select {
		case <-fc.done:
			continue
		default:
		}
		select {
		case <-fc.done:
		case <-grace.C:
			break wait
		case <-ctx.Done():
			cut = true
			break wait
		}
	}
	for _, fc := range fcs {
		fc.endFetch()
	}
	return cut
}

func (fc *FeedbackClient) run() {
	defer close(fc.done)
	defer fc.endFetch()
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-fc.ctx.Done():
			return
		}
		if fc.ctx.Err() != nil { // both were ready: no poll after Stop
			return
		}
		fc.mu.Lock()
		busy := len(fc.pending) > 0
		fc.mu.Unlock()
		if !busy {
			tokens, err := fc.fetch(fc.fetchCtx)
			if len(tokens) > 0 {
				fc.add(tokens)
			}
			if err != nil && fc.onError != nil && fc.ctx.Err() == nil {
				fc.onError(fmt.Errorf("apns: feedback poll of %s: %w", fc.addr, err))
			}
		}
		t.Reset(fc.poll)
	}
}

// fetch connects to the feedback service and reads its tuples until it closes, or ctx ends.
func (fc *FeedbackClient) fetch(ctx context.Context) ([]BadToken, error) {
	conn, err := dialTLS(ctx, fc.addr, fc.tlsConfig, fc.timeout)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	// Stop (ctx) interrupts a read in progress by closing the connection.
	defer context.AfterFunc(ctx, func() { conn.Close() })()
	if err := conn.SetReadDeadline(time.Now().Add(feedbackReadTimeout)); err != nil {
		return nil, err
	}
	tokens, err := readFeedback(conn, MaxFeedbackTokens)
	if err != nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	return tokens, err
}

// ErrFeedbackOverflow tells that a feedback poll read more tuples than MaxFeedbackTokens.
var ErrFeedbackOverflow = errors.New("apns: feedback service sent more tuples than kept")

// readFeedback reads feedback tuples (4-byte time, 2-byte length, token) until EOF, keeping
// the first max. It returns the tuples kept before any error; a truncated or implausible tuple
// gives ErrMalformedFeedback, and tuples beyond max ErrFeedbackOverflow with their number.
func readFeedback(r io.Reader, max int) ([]BadToken, error) {
	br := bufio.NewReader(r)
	var tokens []BadToken
	var head [6]byte
	var tok [maxFeedbackTokenSize]byte
	dropped := 0
	for {
		if _, err := io.ReadFull(br, head[:]); err != nil {
			if err == io.EOF && dropped > 0 {
				return tokens, fmt.Errorf("%w: %d tuples dropped", ErrFeedbackOverflow, dropped)
			}
			if err == io.EOF {
				return tokens, nil
			}
			if err == io.ErrUnexpectedEOF {
				err = fmt.Errorf("%w: truncated header", ErrMalformedFeedback)
			}
			return tokens, err
		}
		n := int(binary.BigEndian.Uint16(head[4:]))
		if n == 0 || n > maxFeedbackTokenSize {
			return tokens, fmt.Errorf("%w: token length %d", ErrMalformedFeedback, n)
		}
		if _, err := io.ReadFull(br, tok[:n]); err != nil {
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				err = fmt.Errorf("%w: truncated token", ErrMalformedFeedback)
			}
			return tokens, err
		}
		if len(tokens) == max {
			dropped++
			continue
		}
		tokens = append(tokens, BadToken{
			Token:     hex.EncodeToString(tok[:n]),
			Timestamp: time.Unix(int64(binary.BigEndian.Uint32(head[:4])), 0).UTC(),
		})
	}
}
