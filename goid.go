package apns

// This file owns goid, which lets Stop tell that it runs on a goroutine it would otherwise
// wait for: the callback dispatcher's, or a feedback poller's (a handler calling Stop).

import (
	"runtime"
	"strconv"
	"strings"
)

// goid returns the id of the calling goroutine, from the first line of its stack trace
// ("goroutine 18 [running]:"), or 0 if that cannot be read.
func goid() uint64 {
	var buf [64]byte
	s := string(buf[:runtime.Stack(buf[:], false)])
	s, ok := strings.CutPrefix(s, "goroutine ")
	if !ok {
		return 0
	}
	s, _, _ = strings.Cut(s, " ")
	id, _ := strconv.ParseUint(s, 10, 64)
	return id
}
