package main

// This file owns "apns push": sending notifications for real, to Apple or to a mock.

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	apns "github.com/Kwik-messenger/apns-go"
)

const pushAbout = `Push sends one payload to one or more device tokens and prints every rejection with APNs'
reason. It authenticates with a certificate (-cert/-key) or, for the HTTP/2 API, a token
signing key (-p8/-key-id/-team-id/-topic). Without -gateway it sends to Apple's HTTP/2 API,
production or -sandbox. Tokens come from -token (repeatable) and -tokens FILE (one per line,
"-" for stdin; blank lines and #comments are skipped); a bulk send shows progress on stderr.
Exit status 1 means some notifications were rejected or could not be sent.

With -channel ID it sends one broadcast instead: a Live Activity update (-event, -content-state,
-timestamp) to every device subscribed to the channel (see "apns channel"), -priority 10 or 5,
-expiry only for a channel of policy 1.

Against "apns mock": -gateway ADDR -ca DIR/ca.pem, with -cert DIR/client.pem -key
DIR/client-key.pem or the -p8 key it prints.
`

// pushResult is push's summary, printed as text or, with -json, as this object.
type pushResult struct {
	Protocol    string          `json:"protocol"`
	Tokens      int             `json:"tokens"`
	Accepted    uint64          `json:"accepted"`  // taken by Send
	Delivered   uint64          `json:"delivered"` // binary: assumed delivered (no error response in time)
	Rejected    uint64          `json:"rejected"`
	Unsent      uint64          `json:"unsent"`
	Unconfirmed uint64          `json:"unconfirmed"`           // binary: given up on at Stop, possibly delivered
	Invalid     int             `json:"invalid"`               // refused by Send: not a valid token
	Interrupted bool            `json:"interrupted,omitempty"` // the rest of the tokens were not sent
	Replayed    uint64          `json:"replayed"`
	Reconnects  uint64          `json:"reconnects"`
	Millis      int64           `json:"elapsed_ms"`
	Rejections  []pushRejection `json:"rejections"`
}

// pushRejection is one notification that was not delivered.
type pushRejection struct {
	Token      string     `json:"token"`
	Code       uint8      `json:"code,omitempty"`        // binary status (nearest meaning for HTTP/2)
	StatusCode int        `json:"status_code,omitempty"` // HTTP status
	Reason     string     `json:"reason"`
	ID         string     `json:"apns_id,omitempty"`
	Timestamp  *time.Time `json:"timestamp,omitempty"` // with 410: since when the token is invalid
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(s string) error { *l = append(*l, s); return nil }

func push(env *cmdEnv, args []string) int {
	fs := newFlagSet(env, "push", "[flags]", pushAbout)
	var conn connFlags
	conn.register(fs, withToken|withProtocol|withSandbox)
	var pf payloadFlags
	pf.register(fs)
	var bf broadcastFlags
	bf.register(fs)
	var tokenArgs stringList
	fs.Var(&tokenArgs, "token", "device `token` in hex (repeatable)")
	tokensFile := fs.String("tokens", "", "read device tokens from `FILE`, one per line; - for stdin")
	pushType := fs.String("push-type", "", "apns-push-type `type`, e.g. alert or background (HTTP/2; default by payload)")
	priority := fs.Int("priority", 0, "10 (immediate), 5 (power-saving) or 1 (HTTP/2: lowest); default 10, or 5 for a background push (APNs refuses those at 10)")
	expiry := fs.Duration("expiry", 0, "how long APNs may store the notification for an offline device (0: binary: not at all; HTTP/2: APNs's default)")
	collapseID := fs.String("collapse-id", "", "apns-collapse-id `ID` (HTTP/2): a newer notification with it replaces an older one")
	workers := fs.Int("workers", 1, "connections to the gateway")
	assumeSent := fs.Duration("assume-sent", apns.WORKER_ASSUME_SENT_TIMEOUT, "binary: how long a notification waits for an error response before it counts as delivered (Stop confirms the last ones with a sentinel frame instead when the gateway answers it)")
	interval := fs.Duration("progress", time.Second, "interval of progress lines for bulk sends when stderr is not a terminal (0: none)")
	timeout := fs.Duration("timeout", apns.DefaultDialTimeout, "how long each attempt to connect (TCP and TLS handshake) may take; the client tries 3 times")
	jsonOut := fs.Bool("json", false, "print the summary and rejections as JSON")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if err := conn.check(); err != nil {
		return usageError(env, "push", "%v", err)
	}
	switch {
	case *workers < 1:
		return usageError(env, "push", "-workers is %d; want at least 1", *workers)
	case *expiry < 0:
		return usageError(env, "push", "-expiry is %v; want 0 (no storing) or a positive duration", *expiry)
	case *assumeSent <= 0:
		return usageError(env, "push", "-assume-sent is %v; want a positive duration", *assumeSent)
	case *interval < 0:
		return usageError(env, "push", "-progress is %v; want 0 (none) or a positive duration", *interval)
	case *timeout <= 0:
		return usageError(env, "push", "-timeout is %v; want a positive duration", *timeout)
	case *priority != 0 && *priority != 10 && *priority != 5 && *priority != 1:
		return usageError(env, "push", "-priority is %d; want 10, 5 or (HTTP/2 only) 1", *priority)
	}
	if bf.channel != "" {
		switch {
		case len(tokenArgs) > 0 || *tokensFile != "":
			return usageError(env, "push", "-channel sends a broadcast to a channel's subscribers; give no -token or -tokens with it")
		case *pushType != "" || *collapseID != "":
			return usageError(env, "push", "-push-type and -collapse-id do not go with -channel (a broadcast is always liveactivity)")
		}
		return pushBroadcast(env, &conn, &pf, &bf, broadcastSettings{priority: *priority, expiry: *expiry, timeout: *timeout, jsonOut: *jsonOut})
	}
	if f := bf.liveActivityFlag(); f != "" {
		return usageError(env, "push", "%s goes with -channel (a broadcast); for a device's Live Activity use -payload", f)
	}
	payload, err := buildPayload(&pf)
	if err != nil {
		return usageError(env, "push", "%v", err)
	}
	tokens := []string(tokenArgs)
	if *tokensFile != "" {
		more, err := readTokens(env, *tokensFile)
		if err != nil {
			return fail(env, "push", exitUsage, err)
		}
		tokens = append(tokens, more...)
	}
	if len(tokens) == 0 {
		return usageError(env, "push", "no device tokens: give -token or -tokens")
	}

	http2 := conn.isHTTP2()
	res := pushResult{Protocol: "binary", Tokens: len(tokens), Rejections: []pushRejection{}}
	if http2 {
		res.Protocol = "http2"
	} else if *pushType != "" || *collapseID != "" {
		return usageError(env, "push", "-push-type and -collapse-id need the HTTP/2 API")
	} else if *priority == 0 {
		*priority = binaryPriority(payload)
	} else if *priority != apns.PRIORITY_IMMEDIATE && *priority != apns.PRIORITY_DELAYED {
		return usageError(env, "push", "-priority is %d; the binary protocol takes 10 or 5", *priority)
	}
	client, err := conn.client(conn.address(), errorLog(env, "push"), apns.WithAssumeSentTimeout(*assumeSent),
		apns.WithDialTimeout(*timeout))
	if err != nil {
		return fail(env, "push", exitUsage, err)
	}
	// HTTP/2 answers every notification, so progress counts answers; the binary protocol
	// answers only rejections, so it counts what the client has queued.
	var prog *progress
	if len(tokens) > 1 && http2 {
		prog = newProgress(env.stderr, "answered", len(tokens), func() int {
			st := client.Stats()
			return int(st.Delivered + st.Rejected + st.Unsent + st.Unconfirmed)
		})
	} else if len(tokens) > 1 {
		prog = newProgress(env.stderr, "queued", len(tokens), func() int { return int(client.Stats().Accepted) })
	} else {
		prog = newProgress(env.stderr, "", 0, nil)
	}
	var mu sync.Mutex
	client.SetRejectionCallback(func(r *apns.Rejection) {
		rej := toPushRejection(r)
		mu.Lock()
		res.Rejections = append(res.Rejections, rej)
		mu.Unlock()
		if !*jsonOut {
			prog.above(func() {
				fmt.Fprintf(env.stdout, "rejected  %s  %s\n", shortToken(rej.Token), describeRejection(&rej))
			})
		}
	})
	begin := time.Now()
	if err := client.Start(*workers); err != nil {
		_ = client.Stop() // a failed Start keeps the callback goroutine until Stop
		return fail(env, "push", exitUsage, err)
	}
	if len(tokens) > 1 {
		prog.start(*interval)
	}

	n := apns.Notification{Payload: payload, PushType: *pushType, Priority: *priority, CollapseID: *collapseID}
	if *expiry > 0 {
		n.Expiration = time.Now().Add(*expiry)
	}
	var sendErr error
	queued := 0
	for _, tok := range tokens {
		if err := env.ctx.Err(); err != nil { // Send takes a free slot in the queue even then
			sendErr = err
			break
		}
		var err error
		if http2 {
			n.DeviceToken = tok
			err = client.SendNotification(env.ctx, &n)
		} else {
			err = client.SendContext(env.ctx, tok, n.Expiration, uint8(*priority), payload)
		}
		if errors.Is(err, apns.ErrTokenNotHex) || errors.Is(err, apns.ErrTokenLength) {
			res.Invalid++
			fmt.Fprintf(env.stderr, "apns push: token %q: %v\n", shortToken(tok), err)
			continue
		}
		if err != nil {
			sendErr = err
			break
		}
		queued++
	}
	interrupted := sendErr != nil && env.ctx.Err() != nil
	if interrupted {
		fmt.Fprintf(env.stderr, "apns push: interrupted after queueing %d of %d notifications; sending those\n", queued, len(tokens))
		sendErr = nil
		res.Interrupted = true
	}
	_ = client.Stop()
	prog.stop()
	if sendErr != nil {
		return fail(env, "push", exitUsage, sendErr)
	}
	st := client.Stats()
	res.Accepted, res.Delivered, res.Rejected, res.Unsent = st.Accepted, st.Delivered, st.Rejected, st.Unsent
	res.Unconfirmed = st.Unconfirmed
	res.Replayed, res.Reconnects = st.Replayed, st.Reconnects
	res.Millis = time.Since(begin).Milliseconds()
	if *jsonOut {
		if err := writeJSON(env.stdout, res); err != nil {
			return fail(env, "push", exitUsage, err)
		}
	} else {
		unconfirmed := ""
		if res.Unconfirmed > 0 {
			unconfirmed = fmt.Sprintf(", %d unconfirmed (possibly delivered)", res.Unconfirmed)
		}
		fmt.Fprintf(env.stdout, "%d delivered, %d rejected, %d unsent%s, %s, of %s (%s, %v)\n",
			res.Delivered, res.Rejected, res.Unsent, unconfirmed, count(res.Invalid, "invalid token"), count(res.Tokens, "token"), res.Protocol,
			time.Duration(res.Millis)*time.Millisecond)
	}
	if res.Rejected+res.Unsent+res.Unconfirmed > 0 || res.Invalid > 0 || interrupted {
		return exitRejected
	}
	return exitOK
}

// readTokens reads device tokens from name, or stdin for "-": one per line, ignoring blank
// lines and lines starting with #.
func readTokens(env *cmdEnv, name string) ([]string, error) {
	var r io.Reader = env.stdin
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	var tokens []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		tokens = append(tokens, line)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading tokens from %s: %w", name, err)
	}
	return tokens, nil
}

func toPushRejection(r *apns.Rejection) pushRejection {
	rej := pushRejection{Code: r.Code, StatusCode: r.StatusCode, Reason: r.Reason, ID: r.ID}
	if r.Message != nil {
		rej.Token = fmt.Sprintf("%x", r.Message.Token)
	}
	if !r.Timestamp.IsZero() {
		ts := r.Timestamp.UTC()
		rej.Timestamp = &ts
	}
	return rej
}

func describeRejection(r *pushRejection) string {
	s := fmt.Sprintf("status %d (%s)", r.Code, r.Reason)
	if r.StatusCode != 0 {
		s = fmt.Sprintf("%d %s", r.StatusCode, r.Reason)
	}
	if r.Timestamp != nil {
		s += " since " + r.Timestamp.Format(time.RFC3339)
	}
	return s
}

// binaryPriority is the binary protocol's default priority for payload: 5 for a background
// push (an aps dictionary with only content-available), which Apple forbids at 10, else 10.
// Over HTTP/2 the library decides (priority 0 in the Notification).
func binaryPriority(payload map[string]any) int {
	if aps, ok := payload["aps"].(map[string]any); ok && len(aps) == 1 && aps["content-available"] != nil {
		return apns.PRIORITY_DELAYED
	}
	return apns.PRIORITY_IMMEDIATE
}
