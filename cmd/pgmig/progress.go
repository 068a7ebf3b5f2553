package main

import (
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	pgmig "github.com/pgmig/pgmig/gowrapper"
)

// label names a migration in progress lines: its file, or for history
// operations (no file) its version and name.
func label(file string, version int64, name string) string {
	if file != "" {
		return file
	}
	if version == 0 {
		return fmt.Sprintf("repeatable migration %s", name)
	}
	return fmt.Sprintf("version %d (%s)", version, name)
}

// liveProgress prints each migration on its own line as the server applies
// it, with its duration; on a terminal the running one shows its elapsed
// time, updated every second.
type liveProgress struct {
	o       *output
	enabled bool
	mu      sync.Mutex
	cur     *pgmig.Progress
	start   time.Time
	printed int
	// verb and failedVerb start the piped lines ("applied", "failed").
	verb, failedVerb string
	stopped          chan struct{}
	wg               sync.WaitGroup
}

func (o *output) startProgress() *liveProgress {
	l := &liveProgress{o: o, enabled: !o.json && !o.quiet, stopped: make(chan struct{}), verb: "applied", failedVerb: "failed"}
	if l.enabled && o.ttyOut {
		l.wg.Add(1)
		go l.tick()
	}
	return l
}

func (l *liveProgress) tick() {
	defer l.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-l.stopped:
			return
		case <-t.C:
			l.mu.Lock()
			if l.cur != nil && time.Since(l.start) >= time.Second {
				fmt.Fprintf(l.o.stdout, "\r\033[K  %s %s  %s", paint(true, yellow, "…"), label(l.cur.File, l.cur.Version, l.cur.Name),
					paint(true, dim, time.Since(l.start).Truncate(time.Second).String()))
			}
			l.mu.Unlock()
		}
	}
}

func (l *liveProgress) progress(p pgmig.Progress) {
	if !l.enabled {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if p.Done {
		// The server's own measure of the migration it just applied.
		if l.cur != nil && l.cur.Version == p.Version {
			l.finishWith(true, p.Duration)
		}
		return
	}
	l.finish(true)
	l.cur, l.start = &p, p.At
	if l.o.ttyOut {
		fmt.Fprintf(l.o.stdout, "  %s %s", paint(true, yellow, "…"), label(p.File, p.Version, p.Name))
	}
}

func (l *liveProgress) notice(n *pgconn.Notice) {
	if !l.enabled {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cur != nil && l.o.ttyOut {
		fmt.Fprint(l.o.stdout, "\r\033[K")
	}
	fmt.Fprintf(l.o.stderr, "%s:  %s\n", n.Severity, n.Message)
	if l.cur != nil && l.o.ttyOut {
		fmt.Fprintf(l.o.stdout, "  %s %s", paint(true, yellow, "…"), label(l.cur.File, l.cur.Version, l.cur.Name))
	}
}

// finish ends the current migration's line. Called with mu held.
func (l *liveProgress) finish(ok bool) {
	if l.cur == nil {
		return
	}
	l.finishWith(ok, time.Since(l.start))
}

// finishWith ends the current migration's line with its duration d: the
// server's when it reported one, else the time since its start.
func (l *liveProgress) finishWith(ok bool, d time.Duration) {
	name := label(l.cur.File, l.cur.Version, l.cur.Name)
	switch {
	case l.o.ttyOut && ok:
		fmt.Fprintf(l.o.stdout, "\r\033[K  %s %s  %s\n", paint(true, green, "✓"), name, paint(true, dim, formatDuration(d)))
	case l.o.ttyOut:
		fmt.Fprintf(l.o.stdout, "\r\033[K  %s %s  %s\n", paint(true, red, "✗"), name, paint(true, dim, "failed after "+formatDuration(d)))
	case ok:
		fmt.Fprintf(l.o.stdout, "%s %s (%s)\n", l.verb, name, formatDuration(d))
	default:
		fmt.Fprintf(l.o.stdout, "%s %s (after %s)\n", l.failedVerb, name, formatDuration(d))
	}
	l.cur = nil
	l.printed++
}

func (l *liveProgress) stop(ok bool) {
	close(l.stopped)
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.finish(ok)
}

func formatDuration(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return d.Round(time.Microsecond).String()
	case d < time.Second:
		return d.Round(100 * time.Microsecond).String()
	case d < time.Minute:
		return d.Round(10 * time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}

func plural(n int, one, many string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, one)
	}
	return fmt.Sprintf("%d %s", n, many)
}
