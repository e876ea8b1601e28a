// Command apns sends Apple push notifications with the apns-go client, and runs the apnstest
// mock gateways for trying it out, testing and benchmarking.
//
// Usage:
//
//	apns demo      [-n count] [-workers n] [-protocol binary|http2] [-json]
//	apns push      (-cert FILE -key FILE | -p8 FILE -key-id ID -team-id ID) -topic T
//	               (-token HEX | -tokens FILE|-) (-payload JSON | -alert TEXT ...) [flags]
//	apns push      ... -channel ID [-bundle ID] [-event update|end] [-content-state JSON] [-timestamp T]
//	apns channel   create|get|delete|list (-cert FILE -key FILE | -p8 FILE ...) [-bundle ID] [-policy 0|1] [-id ID] [-json]
//	apns feedback  -cert FILE -key FILE [-sandbox | -gateway ADDR] [-watch] [-json]
//	apns mock      [-gateway-addr A] [-feedback-addr A] [-http2-addr A] [-dir D] [-reject TOKEN[:status]]
//	apns bench     [-n count] [-workers 1,2,4] [-payload-size B] [-protocol binary|http2] [-svg FILE]
//
// Every command takes -h. The exit status is 0 when all went well, 1 when some notifications
// were rejected (or could not be sent), 2 for a usage or setup error.
//
// This file holds the command dispatch and what the subcommands share; each subcommand has a
// file of its own (demo.go, push.go, channel.go, feedback.go, mock.go, bench.go), with conn.go for the
// connection flags, payload.go for the payload flags, progress.go for the progress display
// and svg.go for bench's chart.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"
)

// Exit statuses.
const (
	exitOK       = 0 // everything was delivered, or the command had nothing to deliver
	exitRejected = 1 // some notifications were rejected or could not be sent
	exitUsage    = 2 // bad flags, unreadable files, no connection: nothing useful happened
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := runContext(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

const usage = `usage: apns <command> [flags]

Try "apns demo" first: it sends 100,000 notifications through the client to a mock gateway
running in this process, and reports what happened.

commands:
  demo      send a batch to an in-process mock gateway, with progress and a summary
  push      send notifications to APNs (or to a mock) with a certificate or a token key
  channel   create, read, delete or list broadcast channels (Live Activities); push -channel sends
  feedback  read the bad device tokens from the (binary) feedback service
  mock      run mock APNs gateways on loopback ports until interrupted
  bench     measure throughput, Send latency and allocations against a mock gateway

Run "apns <command> -h" for the flags of a command. Exit status: 0 ok, 1 some notifications
rejected, 2 usage or setup error.
`

// cmdEnv is what a subcommand runs with: the context that ends on interrupt, and the
// standard streams.
type cmdEnv struct {
	ctx    context.Context
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
}

// run is the whole command with the process's stdin and no interrupt handling, for tests.
func run(args []string, stdout, stderr io.Writer) int {
	return runContext(context.Background(), args, os.Stdin, stdout, stderr)
}

// runContext runs the command line args and returns the exit status. ctx ends the commands
// that run until interrupted (mock, feedback -watch) and cuts a push short.
func runContext(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	// Callbacks, the progress display and the mock's handlers write concurrently.
	env := &cmdEnv{ctx: ctx, stdin: stdin, stdout: &lockedWriter{w: stdout}, stderr: &lockedWriter{w: stderr}}
	cmds := map[string]func(*cmdEnv, []string) int{
		"demo":     demo,
		"push":     push,
		"feedback": feedback,
		"channel":  channel,
		"mock":     mock,
		"bench":    bench,
	}
	if cmd, ok := cmds[args[0]]; ok {
		return cmd(env, args[1:])
	}
	switch args[0] {
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	default:
		fmt.Fprintf(stderr, "apns: unknown command %q\n%s", args[0], usage)
		return exitUsage
	}
}

// newFlagSet returns the flag set of a subcommand, whose -h prints synopsis, the paragraph
// about, and the flags.
func newFlagSet(env *cmdEnv, name, synopsis, about string) *flag.FlagSet {
	fs := flag.NewFlagSet("apns "+name, flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: apns %s %s\n\n%s\nflags:\n", name, synopsis, about)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args into fs. It reports ok false with the exit status when the command
// must not go on: 0 after -h, 2 for bad flags or stray arguments.
func parseFlags(fs *flag.FlagSet, args []string) (code int, ok bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK, false
		}
		return exitUsage, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "%s: unexpected argument %q (flags go before it? see -h)\n", fs.Name(), fs.Arg(0))
		return exitUsage, false
	}
	return exitOK, true
}

// fail prints err as an error of command name and returns code.
func fail(env *cmdEnv, name string, code int, err error) int {
	fmt.Fprintf(env.stderr, "apns %s: %v\n", name, err)
	return code
}

// usageError prints a usage problem of command name and returns exitUsage.
func usageError(env *cmdEnv, name, format string, a ...any) int {
	fmt.Fprintf(env.stderr, "apns %s: %s (see apns %s -h)\n", name, fmt.Sprintf(format, a...), name)
	return exitUsage
}

// writeJSON writes v to w as indented JSON.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// writeJSONLine writes v to w as one line of JSON, in one Write.
func writeJSONLine(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// lockedWriter serialises writes to w, so that lines written from several goroutines do not
// interleave. Each write should be one whole line.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// count writes n and the noun, in the plural unless n is 1: count(1, "token") is "1 token",
// count(2, "token") "2 tokens".
func count[N int | uint64](n N, noun string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, noun)
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// shortToken abbreviates a hexadecimal device token for human output: its first 8 and last 4
// digits.
func shortToken(tok string) string {
	if len(tok) <= 16 {
		return tok
	}
	return tok[:8] + "…" + tok[len(tok)-4:]
}
