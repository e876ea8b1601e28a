package main

// This file owns the progress display of demo and push: a bar redrawn in place on a terminal,
// plain periodic lines anywhere else (a file, a pipe, a CI log).

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// ttyRefresh is how often the bar is redrawn on a terminal.
const ttyRefresh = 100 * time.Millisecond

// isTerminal reports whether w is a terminal (a character device), seeing through lockedWriter.
func isTerminal(w io.Writer) bool {
	if l, ok := w.(*lockedWriter); ok {
		w = l.w
	}
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// progress reports count() out of total on w while a batch runs. Its fields are set before
// start; mu serialises drawing with above.
type progress struct {
	w     io.Writer
	tty   bool
	what  string // e.g. "at the gateway"
	total int    // 0: unknown
	count func() int

	mu     sync.Mutex
	begin  time.Time // guarded by mu, like the fields below
	last   int
	lastAt time.Time
	drawn  bool // a bar is on the terminal's current line

	done chan struct{}
	wg   sync.WaitGroup
}

// newProgress returns a display of count() against total on w that does not draw yet.
func newProgress(w io.Writer, what string, total int, count func() int) *progress {
	now := time.Now()
	return &progress{w: w, tty: isTerminal(w), what: what, total: total, count: count, begin: now, lastAt: now}
}

// startProgress starts drawing a display on w: every ttyRefresh on a terminal, else a line
// every interval. interval 0 means no display at all. stop ends it.
func startProgress(w io.Writer, interval time.Duration, what string, total int, count func() int) *progress {
	p := newProgress(w, what, total, count)
	p.start(interval)
	return p
}

// start starts drawing, as startProgress does. It is called at most once.
func (p *progress) start(interval time.Duration) {
	if interval <= 0 {
		return
	}
	if p.tty {
		interval = ttyRefresh
	}
	p.done = make(chan struct{})
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-p.done:
				return
			case now := <-t.C:
				p.draw(now)
			}
		}
	}()
}

// above runs print, which writes whole lines to the terminal (stdout, say), with the bar's
// line cleared first, so that the lines do not land inside the bar; the next tick draws the
// bar again below them. Elsewhere, or with no bar drawn, it just runs print. Safe to call
// from any goroutine.
func (p *progress) above(print func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.drawn {
		fmt.Fprint(p.w, "\r\x1b[K")
		p.drawn = false
	}
	print()
}

// stop ends the display, drawing the final state once more (and ending the bar's line on a
// terminal). It does nothing for a display that never started.
func (p *progress) stop() {
	if p.done == nil {
		return
	}
	close(p.done)
	p.wg.Wait()
	p.done = nil
	p.draw(time.Now())
	if p.tty {
		p.mu.Lock()
		fmt.Fprintln(p.w)
		p.drawn = false
		p.mu.Unlock()
	}
}

// draw writes the state at now: the bar on a terminal, a line elsewhere. The rate is the
// one since the previous draw.
func (p *progress) draw(now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	k := p.count()
	rate := 0.0
	if dt := now.Sub(p.lastAt).Seconds(); dt > 0 {
		rate = float64(k-p.last) / dt
	}
	p.last, p.lastAt = k, now
	elapsed := now.Sub(p.begin).Round(100 * time.Millisecond)
	if !p.tty {
		if p.total > 0 {
			fmt.Fprintf(p.w, "progress: %d/%d %s (%.0f%%), %.0f/s, %v\n", k, p.total, p.what, percent(k, p.total), rate, elapsed)
		} else {
			fmt.Fprintf(p.w, "progress: %d %s, %.0f/s, %v\n", k, p.what, rate, elapsed)
		}
		return
	}
	// \r returns to the line's start, \x1b[K clears what is left of a longer previous line.
	p.drawn = true
	if p.total > 0 {
		fmt.Fprintf(p.w, "\r%s %5.1f%% %d/%d %s  %8.0f/s  %v\x1b[K", bar(k, p.total, 30), percent(k, p.total), k, p.total, p.what, rate, elapsed)
	} else {
		fmt.Fprintf(p.w, "\r%d %s  %8.0f/s  %v\x1b[K", k, p.what, rate, elapsed)
	}
}

func percent(k, total int) float64 { return 100 * float64(k) / float64(total) }

// bar draws k of total as a bar of width cells.
func bar(k, total, width int) string {
	filled := min(width, width*k/total)
	return "[" + strings.Repeat("█", filled) + strings.Repeat("·", width-filled) + "]"
}
