package main

// This file owns "apns feedback": reading bad tokens from the binary feedback service.

import (
	"context"
	"errors"
	"fmt"
	"time"

	apns "github.com/Kwik-messenger/apns-go"
)

const feedbackAbout = `Feedback reads the device tokens that APNs found invalid (the app was removed) from the
feedback service of the binary protocol, feedback.push.apple.com:2196 (-sandbox:
feedback.sandbox.push.apple.com:2196, or -gateway). The service answers once and forgets what
it sent, so keep the output. Without -watch it polls once and waits up to -timeout for the
answer (a service with nothing to report looks the same as a slow one, so an empty answer takes
the whole -timeout); with -watch it polls every -interval until interrupted. Output: one
"TOKEN TIMESTAMP" line per token, or with -json a JSON array (-watch: one JSON object per
line). The HTTP/2 API has no feedback service: push reports its 410 answers instead.
`

func feedback(env *cmdEnv, args []string) int {
	fs := newFlagSet(env, "feedback", "[flags]", feedbackAbout)
	var conn connFlags
	conn.register(fs, withSandbox)
	fs.Lookup("gateway").Usage = "feedback service `ADDR` (host:port) instead of Apple's"
	watch := fs.Bool("watch", false, "poll every -interval until interrupted")
	interval := fs.Duration("interval", 10*time.Minute, "poll interval with -watch")
	timeout := fs.Duration("timeout", 30*time.Second, "bound on connecting (TCP and TLS handshake, per attempt) and, without -watch, on the whole poll")
	jsonOut := fs.Bool("json", false, "print JSON")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if err := conn.check(); err != nil {
		return usageError(env, "feedback", "%v", err)
	}
	switch {
	case *interval <= 0:
		return usageError(env, "feedback", "-interval is %v; want a positive duration", *interval)
	case *timeout <= 0:
		return usageError(env, "feedback", "-timeout is %v; want a positive duration", *timeout)
	case isURL(conn.gateway):
		return usageError(env, "feedback", "-gateway %s is an https:// URL, which means the HTTP/2 API; it has no feedback service (push reports its 410 answers); give the feedback service's host:port", conn.gateway)
	}
	addr := conn.gateway
	if addr == "" {
		addr = feedbackHost
		if conn.sandbox {
			addr = feedbackSandbox
		}
	}

	conn.protocol = "binary" // the client only carries the certificate and TLS settings
	dialTimeout := apns.WithDialTimeout(*timeout)
	if !*watch {
		client, err := conn.client(addr, dialTimeout)
		if err != nil {
			return fail(env, "feedback", exitUsage, err)
		}
		defer client.Stop()
		ctx, cancel := context.WithTimeout(env.ctx, *timeout)
		defer cancel()
		tokens, err := client.ReadFeedback(ctx, addr)
		if errors.Is(err, context.DeadlineExceeded) && env.ctx.Err() == nil {
			err = fmt.Errorf("no answer from the feedback service at %s within -timeout %v (the TLS handshake or the read did not finish): %w", addr, *timeout, err)
		}
		if err != nil {
			return fail(env, "feedback", exitUsage, err)
		}
		out := make([]badToken, 0, len(tokens))
		for _, t := range tokens {
			out = append(out, badToken{t.Token, t.Timestamp})
		}
		if *jsonOut {
			if err := writeJSON(env.stdout, out); err != nil {
				return fail(env, "feedback", exitUsage, err)
			}
			return exitOK
		}
		printBadTokens(env, out)
		if len(out) == 0 {
			fmt.Fprintln(env.stderr, "apns feedback: no bad tokens")
		}
		return exitOK
	}

	// -watch reports failed polls and carries on.
	ctx := env.ctx
	onError := apns.WithErrorHandler(func(err error) {
		fmt.Fprintf(env.stderr, "apns feedback: %s %v\n", time.Now().Format("15:04:05"), err)
	})
	client, err := conn.client(addr, onError, dialTimeout)
	if err != nil {
		return fail(env, "feedback", exitUsage, err)
	}
	defer client.Stop()
	fc, err := client.SetupFeedbackClient(addr, *interval)
	if err != nil {
		return fail(env, "feedback", exitUsage, err)
	}

	for {
		tokens, err := fc.BadTokens(ctx)
		if err != nil {
			return exitOK // interrupted
		}
		out := make([]badToken, 0, len(tokens))
		for _, t := range tokens {
			out = append(out, badToken{t.Token, t.Timestamp})
		}
		if *jsonOut {
			for _, t := range out {
				if err := writeJSONLine(env.stdout, t); err != nil {
					return fail(env, "feedback", exitUsage, err)
				}
			}
			continue
		}
		printBadTokens(env, out)
	}
}

func printBadTokens(env *cmdEnv, tokens []badToken) {
	for _, t := range tokens {
		fmt.Fprintf(env.stdout, "%s %s\n", t.Token, t.Timestamp.Format(time.RFC3339))
	}
}
