package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	pgmig "github.com/pgmig/pgmig/gowrapper"
)

// output renders results for people (colours only on a terminal) or, with
// --json, for machines.
type output struct {
	stdout, stderr io.Writer
	json, quiet    bool
	ttyOut, ttyErr bool // colours and live updates
	// dir is --dir: file names are shown relative to the current
	// directory, so editors and terminals can open them.
	dir string
}

func (o *output) path(file string) string {
	if o.dir == "" || o.dir == "." || filepath.IsAbs(file) {
		return file
	}
	return filepath.Join(o.dir, file)
}

func newOutput(stdout, stderr io.Writer, asJSON, quiet bool) *output {
	noColor := os.Getenv("NO_COLOR") != "" || os.Getenv("TERM") == "dumb"
	return &output{
		stdout: stdout, stderr: stderr, json: asJSON, quiet: quiet,
		ttyOut: !noColor && isTerminal(stdout),
		ttyErr: !noColor && isTerminal(stderr),
	}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

const (
	bold   = "\033[1m"
	red    = "\033[31m"
	green  = "\033[32m"
	yellow = "\033[33m"
	dim    = "\033[2m"
	reset  = "\033[0m"
)

func paint(on bool, color, s string) string {
	if !on {
		return s
	}
	return color + s + reset
}

func writeJSON(w io.Writer, v any) {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// info is a human message on stderr (not in --json or --quiet mode).
func (o *output) info(format string, args ...any) {
	if o.quiet || o.json {
		return
	}
	fmt.Fprintf(o.stderr, "pgmig: "+format+"\n", args...)
}

func (o *output) say(format string, args ...any) {
	if o.quiet || o.json {
		return
	}
	fmt.Fprintf(o.stdout, format+"\n", args...)
}

// jsonError is the --json shape of every error.
type jsonError struct {
	Error struct {
		Message        string `json:"message"`
		ExitCode       int    `json:"exit_code"`
		SQLState       string `json:"sqlstate,omitempty"`
		Detail         string `json:"detail,omitempty"`
		Hint           string `json:"hint,omitempty"`
		File           string `json:"file,omitempty"`
		Line           int    `json:"line,omitempty"`
		Column         int    `json:"column,omitempty"`
		Version        int64  `json:"version,omitempty"`
		Name           string `json:"name,omitempty"`
		CurrentVersion *int64 `json:"current_version,omitempty"`
		// The connection failed mid-push (exit 5): re-running is safe;
		// outcome_unknown when the server may have committed.
		ConnectionLost bool `json:"connection_lost,omitempty"`
		OutcomeUnknown bool `json:"outcome_unknown,omitempty"`
	} `json:"error"`
}

func (o *output) fail(err error) {
	var merr *pgmig.MigrationError
	var pgErr *pgconn.PgError
	isMig := errors.As(err, &merr)
	isPg := errors.As(err, &pgErr)
	if o.json {
		var j jsonError
		j.Error.Message = err.Error()
		j.Error.ExitCode = exitCode(err)
		if isPg {
			j.Error.SQLState, j.Error.Detail, j.Error.Hint = pgErr.Code, pgErr.Detail, pgErr.Hint
		}
		var lerr *pgmig.LoadError
		if errors.As(err, &lerr) {
			j.Error.File = lerr.File
		}
		if isMig {
			j.Error.Message = merr.Message
			j.Error.File, j.Error.Line, j.Error.Column = merr.File, merr.Location.Line, merr.Location.Column
			j.Error.Version, j.Error.Name = merr.Version, merr.Name
			if merr.CurrentVersion >= 0 {
				j.Error.CurrentVersion = &merr.CurrentVersion
			}
		}
		var lost *pgmig.ConnectionLostError
		if errors.As(err, &lost) {
			j.Error.ConnectionLost, j.Error.OutcomeUnknown = true, lost.OutcomeUnknown
		}
		writeJSON(o.stdout, j)
		return
	}
	if isMig {
		o.migrationError(merr)
		return
	}
	var lost *pgmig.ConnectionLostError
	if errors.As(err, &lost) {
		fmt.Fprintf(o.stderr, "%s %s\n", paint(o.ttyErr, bold+red, "pgmig: error:"), err)
		o.connectionLost(lost)
		return
	}
	var lerr *pgmig.LoadError
	if errors.As(err, &lerr) {
		fmt.Fprintf(o.stderr, "%s %s: %s\n", paint(o.ttyErr, bold+red, "pgmig: error:"), o.path(lerr.File), lerr.Err)
		return
	}
	if !isPg || !strings.HasSuffix(err.Error(), ": "+pgErr.Error()) {
		fmt.Fprintf(o.stderr, "%s %s\n", paint(o.ttyErr, bold+red, "pgmig: error:"), err)
		return
	}
	// The server's error psql-style, under what pgmig was doing.
	fmt.Fprintf(o.stderr, "%s %s\n", paint(o.ttyErr, bold+red, "pgmig: error:"), strings.TrimSuffix(err.Error(), ": "+pgErr.Error()))
	fmt.Fprintf(o.stderr, "%s  %s\nSQLSTATE: %s\n", paint(o.ttyErr, bold+red, pgErr.Severity+":"), pgErr.Message, pgErr.Code)
	{
		if pgErr.Detail != "" {
			fmt.Fprintf(o.stderr, "DETAIL:  %s\n", pgErr.Detail)
		}
		if pgErr.Hint != "" {
			fmt.Fprintf(o.stderr, "HINT:  %s\n", pgErr.Hint)
		}
	}
	if m := interruptedVersion.FindStringSubmatch(pgErr.Message); m != nil && errors.Is(err, pgmig.ErrInterrupted) {
		fmt.Fprintf(o.stderr, "With pgmig: `pgmig resolve %s --retry` once what the completed statements did is undone, or `pgmig resolve %s --applied` once the migration is finished by hand (docs/nontransactional.md).\n", m[1], m[1])
	}
}

// connectionLost says what a push whose connection failed left behind,
// and that running it again is safe.
func (o *output) connectionLost(e *pgmig.ConnectionLostError) {
	what := "The connection was lost during the push"
	if errors.Is(e.Err, context.Canceled) || errors.Is(e.Err, context.DeadlineExceeded) {
		what = "The push was interrupted"
	}
	earlier := ""
	if e.Applied > 0 {
		earlier = fmt.Sprintf(" The %s committed by earlier steps of this push stay applied.", plural(e.Applied, "migration", "migrations"))
	}
	switch {
	case e.Version != 0:
		fmt.Fprintf(o.stderr, "%s while non-transactional migration %d ran: the statements it completed stay applied, and whether the last one completed is unknown.%s "+
			"`pgmig status` shows where it stopped; re-running `pgmig push` is safe: it refuses to continue until the migration is resolved "+
			"with `pgmig resolve %d --retry` (once what its completed statements did is undone) or `pgmig resolve %d --applied` (docs/nontransactional.md).\n",
			what, e.Version, earlier, e.Version, e.Version)
	case e.OutcomeUnknown:
		fmt.Fprintf(o.stderr, "%s; whether the migrations were committed is unknown.%s "+
			"Re-running `pgmig push` is safe: applied migrations are recorded and will not run again (`pgmig status` shows the state).\n", what, earlier)
	case e.Applied > 0:
		fmt.Fprintf(o.stderr, "%s before its last step was committed: nothing of that step was applied (the server rolls back the open transaction).%s "+
			"Re-running `pgmig push` is safe: it continues where this one stopped.\n", what, earlier)
	default:
		fmt.Fprintf(o.stderr, "%s before anything was committed: nothing of this push was applied (the server rolls back the open transaction). "+
			"Re-running `pgmig push` is safe.\n", what)
	}
}

// interruptedVersion finds the version in PM009's message.
var interruptedVersion = regexp.MustCompile(`non-transactional migration (\d+) `)

// migrationError prints a failing migration the way psql prints an error
// in a script: where, the line with a caret under the column, then
// SQLSTATE, DETAIL, HINT, and what state the database is in.
func (o *output) migrationError(e *pgmig.MigrationError) {
	w := o.stderr
	loc := e.Location
	where := o.path(e.File)
	if e.Rollback {
		where = fmt.Sprintf("down SQL of version %d (%s)", e.Version, e.Name)
	}
	if loc.Line > 0 {
		where = fmt.Sprintf("%s:%d:%d", where, loc.Line, loc.Column)
	}
	fmt.Fprintf(w, "%s: %s  %s\n", paint(o.ttyErr, bold, where), paint(o.ttyErr, bold+red, "ERROR:"), e.Message)
	if loc.Line > 0 {
		prefix := fmt.Sprintf("LINE %d: ", loc.Line)
		fmt.Fprintf(w, "%s%s\n", prefix, loc.Text)
		fmt.Fprintf(w, "%s%s\n", caretIndent(strings.Repeat(" ", len(prefix))+loc.Text, len([]rune(prefix))+loc.Column), paint(o.ttyErr, bold+green, "^"))
		if loc.Expanded {
			prefix := "EXPANDED: "
			if loc.Shared != "" {
				prefix = fmt.Sprintf("EXPANDED from %s:%d:%d: ", o.path(loc.Shared), loc.SharedLine, loc.SharedColumn)
			}
			fmt.Fprintf(w, "%s%s\n", prefix, loc.ExpandedText)
			fmt.Fprintf(w, "%s%s\n", caretIndent(strings.Repeat(" ", len([]rune(prefix)))+loc.ExpandedText, len([]rune(prefix))+loc.ExpandedColumn), paint(o.ttyErr, bold+green, "^"))
		}
	}
	fmt.Fprintf(w, "SQLSTATE: %s\n", e.Code)
	if e.Detail != "" {
		fmt.Fprintf(w, "DETAIL:  %s\n", e.Detail)
	}
	if e.Hint != "" {
		fmt.Fprintf(w, "HINT:  %s\n", e.Hint)
	}
	if e.Code == "53200" {
		size := ""
		if e.SegmentSize > 1 {
			size = fmt.Sprintf(" This transaction was to apply %d migrations.", e.SegmentSize)
		}
		fmt.Fprintf(w, "The transaction ran out of the server's shared lock table: it holds a lock on every object it creates until it commits.%s "+
			"Let pgmig size segments for this server (--segment-size auto, the default), apply fewer migrations per transaction (--segment-size N), "+
			"or raise max_locks_per_transaction (needs a restart).\n", size)
	}
	switch {
	case e.Rollback:
		fmt.Fprintf(w, "Rolling back version %d (%s) failed in its recorded down SQL; nothing was rolled back: the database is still at version %d.\n",
			e.Version, e.Name, e.CurrentVersion)
	case e.NonTransactional:
		fmt.Fprintf(w, "Non-transactional migration %d (%s) failed in statement %d of %d: statements before it ran outside a transaction and stay applied; the database is at version %d.\n",
			e.Version, e.Name, e.Statement, e.Statements, e.CurrentVersion)
		fmt.Fprintf(w, "Undo what they did and run: pgmig resolve %d --retry (select migrate_resolve(%d, 'retry')); or finish the migration by hand and run: pgmig resolve %d --applied (select migrate_resolve(%d, 'applied')).\n",
			e.Version, e.Version, e.Version, e.Version)
	case e.Applied > 0:
		fmt.Fprintf(w, "Migration %d (%s) failed and its segment was rolled back; the %s of earlier segments stay applied: the database is at version %d.\n",
			e.Version, e.Name, plural(e.Applied, "migration", "migrations"), e.CurrentVersion)
	case e.CurrentVersion > 0:
		fmt.Fprintf(w, "Migration %d (%s) failed, nothing was applied: the database was left unchanged at version %d.\n", e.Version, e.Name, e.CurrentVersion)
	case e.CurrentVersion == 0:
		fmt.Fprintf(w, "Migration %d (%s) failed, nothing was applied: the database was left unchanged at version 0 (no migrations applied).\n", e.Version, e.Name)
	default:
		fmt.Fprintf(w, "Migration %d (%s) failed, nothing was applied: the database was left unchanged.\n", e.Version, e.Name)
	}
}

// caretIndent is the whitespace that puts a caret under the 1-based
// character column col of line: tabs are kept so that the caret lines up
// however the terminal expands them.
func caretIndent(line string, col int) string {
	var b strings.Builder
	for i, r := range []rune(line) {
		if i >= col-1 {
			break
		}
		if r == '\t' {
			b.WriteRune('\t')
		} else {
			b.WriteRune(' ')
		}
	}
	for n := len([]rune(b.String())); n < col-1; n++ {
		b.WriteRune(' ')
	}
	return b.String()
}

func (o *output) installed(res *pgmig.InstallResult) {
	if o.json {
		writeJSON(o.stdout, res)
		return
	}
	switch res.PreviousVersion {
	case "":
		o.say("Installed the pgmig engine %s.", res.Version)
	case res.Version:
		o.say("The pgmig engine %s is installed (script re-applied, nothing changed).", res.Version)
	default:
		o.say("Upgraded the pgmig engine from %s to %s.", res.PreviousVersion, res.Version)
	}
}

func (o *output) created(path string, version int64) {
	if o.json {
		writeJSON(o.stdout, map[string]any{"file": path, "version": version})
		return
	}
	o.say("%s", path)
}

func label(file string, version int64, name string) string {
	if file != "" {
		return file
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

// finishWith ends the current migration's line with its duration d.
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

func (o *output) pushed(res *pgmig.PushResult, live *liveProgress) {
	if o.json {
		writeJSON(o.stdout, res)
		return
	}
	if live.printed == 0 {
		// Notices did not reach us: list what was applied from the result.
		for _, r := range res.Migrations {
			if r.Outcome == pgmig.OutcomeApplied {
				o.say("applied %s (%s)", label(r.File, r.Version, r.Name), formatDuration(r.Duration))
			}
		}
	}
	pending := 0
	var ahead []string
	for _, r := range res.Migrations {
		switch r.Outcome {
		case pgmig.OutcomeBeyondTarget:
			pending++
		case pgmig.OutcomeAhead:
			ahead = append(ahead, fmt.Sprint(r.Version))
		}
	}
	if res.Applied > 0 {
		inTx := ""
		if res.Segments > 1 {
			inTx = fmt.Sprintf(" in %d steps", res.Segments)
		}
		o.say("%s %s%s in %s; the database is now at version %d.", paint(o.ttyOut, bold+green, "Applied"),
			plural(res.Applied, "migration", "migrations"), inTx, formatDuration(res.Duration), res.Version)
		if res.SegmentSize > 0 {
			o.say("Committed after every %s (each segment is atomic).", plural(res.SegmentSize, "migration", "migrations"))
		}
		if res.LockBudget > 0 {
			o.say("Committed whenever a transaction neared %d locks, half the server's lock table (each segment is atomic).", res.LockBudget)
		}
	} else {
		o.say("Nothing to apply: the database is at version %d.", res.Version)
	}
	if pending > 0 {
		o.say("%s above the target version left pending.", plural(pending, "migration", "migrations"))
	}
	if len(ahead) > 0 {
		o.say("%s the database is ahead of these files: version(s) %s applied by a newer release.",
			paint(o.ttyOut, yellow, "Note:"), strings.Join(ahead, ", "))
	}
}

func (o *output) planned(res *pgmig.PlanResult) {
	if o.json {
		writeJSON(o.stdout, res)
		return
	}
	if res.Pending == 0 {
		o.say("Nothing to apply: the database is at version %d.", res.Version)
		return
	}
	o.say("%s would be applied (the database is at version %d):", plural(res.Pending, "migration", "migrations"), res.Version)
	for _, r := range res.Migrations {
		if r.Outcome == pgmig.OutcomePending {
			o.say("  %s", label(r.File, r.Version, r.Name))
		}
	}
}

func (o *output) validated(res *pgmig.PushResult) {
	if o.json {
		writeJSON(o.stdout, res)
		return
	}
	applied, pending := 0, 0
	for _, r := range res.Migrations {
		switch r.Outcome {
		case pgmig.OutcomeAlreadyApplied:
			applied++
		case pgmig.OutcomePending:
			pending++
		}
	}
	o.say("OK: %s match the history, %s pending, no drift.",
		plural(applied, "applied migration", "applied migrations"), plural(pending, "migration", "migrations"))
}

// statusRows is how many history entries status shows without --all.
const statusRows = 20

func (o *output) status(st *pgmig.StatusResult, plan *pgmig.PlanResult, planErr error, all bool) {
	if o.json {
		v := struct {
			*pgmig.StatusResult
			Pending []pgmig.MigrationResult `json:"pending,omitempty"`
		}{StatusResult: st}
		if plan != nil {
			for _, r := range plan.Migrations {
				if r.Outcome == pgmig.OutcomePending {
					v.Pending = append(v.Pending, r.MigrationResult)
				}
			}
		}
		writeJSON(o.stdout, v)
		if planErr != nil {
			o.fail(planErr)
		}
		return
	}
	if !o.quiet {
		var unfinished []pgmig.HistoryEntry
		for _, h := range st.History {
			if h.State != "applied" && h.State != "baseline" {
				unfinished = append(unfinished, h)
			}
		}
		fmt.Fprintf(o.stdout, "Engine %s; the database is at version %d (%s applied).\n",
			st.EngineVersion, st.Version, plural(len(st.History)-len(unfinished), "migration", "migrations"))
		for _, h := range unfinished {
			what := "was interrupted (its client died or was killed)"
			switch h.State {
			case "failed":
				what = "failed"
			case "running":
				what = "is running"
			}
			fmt.Fprintf(o.stdout, "%s non-transactional migration %d (%s) %s: %s.\n", paint(o.ttyOut, bold+red, strings.ToUpper(h.State[:1])+h.State[1:]+":"),
				h.Version, h.Name, what, h.Detail)
			if h.State != "running" {
				fmt.Fprintf(o.stdout, "  Every push refuses until it is resolved: `pgmig push` says what to do.\n")
			}
		}
		if h := st.InProgress; h != nil {
			fmt.Fprintf(o.stdout, "%s a migrator holds the lock: %s %s\n", paint(o.ttyOut, yellow, "In progress:"), h.Client, h.Detail)
		}
		if len(st.History) > 0 {
			tw := tabwriter.NewWriter(o.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "VERSION\tNAME\tSTATE\tAPPLIED AT\tDURATION\tBY")
			history := st.History
			if !all && len(history) > statusRows {
				history = history[:statusRows]
			}
			for _, h := range history {
				at := ""
				if h.AppliedAt != nil {
					at = h.AppliedAt.Local().Format("2006-01-02 15:04:05")
				}
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", h.Version, h.Name, h.State, at, formatDuration(h.Duration), h.AppliedBy)
			}
			tw.Flush()
			if len(history) < len(st.History) {
				fmt.Fprintf(o.stdout, "... and %d older (--all shows them).\n", len(st.History)-len(history))
			}
		}
		if plan != nil {
			if plan.Pending == 0 {
				fmt.Fprintln(o.stdout, "Nothing pending.")
			} else {
				fmt.Fprintf(o.stdout, "Pending (%d):\n", plan.Pending)
				for _, r := range plan.Migrations {
					if r.Outcome == pgmig.OutcomePending {
						fmt.Fprintf(o.stdout, "  %s\n", label(r.File, r.Version, r.Name))
					}
				}
			}
		}
	}
	if planErr != nil {
		o.fail(planErr)
	}
}

func (o *output) rolledBack(res *pgmig.HistoryResult, to int64, dryRun bool, live *liveProgress) {
	if o.json {
		writeJSON(o.stdout, res)
		return
	}
	if dryRun {
		if len(res.Migrations) == 0 {
			o.say("Nothing to roll back: no applied version above %d.", to)
			return
		}
		o.say("%s would be rolled back (every one has down SQL), newest first:", plural(len(res.Migrations), "migration", "migrations"))
		for _, r := range res.Migrations {
			o.say("  %d %s", r.Version, r.Name)
		}
		return
	}
	if res.Changed == 0 {
		o.say("Nothing to roll back: the database is at version %d.", res.Version)
		return
	}
	if live.printed == 0 {
		for _, r := range res.Migrations {
			o.say("rolled back %d %s (%s)", r.Version, r.Name, formatDuration(r.Duration))
		}
	}
	o.say("%s %s in %s (one transaction); the database is now at version %d.", paint(o.ttyOut, bold+green, "Rolled back"),
		plural(res.Changed, "migration", "migrations"), formatDuration(res.Duration), res.Version)
}

func (o *output) baselined(res *pgmig.HistoryResult, version int64) {
	if o.json {
		writeJSON(o.stdout, res)
		return
	}
	o.say("%s at version %d: recorded %s as applied without running them; the database is at version %d.",
		paint(o.ttyOut, bold+green, "Baselined"), version, plural(res.Changed, "migration", "migrations"), res.Version)
	pending := 0
	for _, r := range res.Migrations {
		if r.Outcome == pgmig.OutcomePending {
			pending++
		}
	}
	if pending > 0 {
		o.say("%s after it left for `pgmig push`.", plural(pending, "migration", "migrations"))
	}
}

func (o *output) repaired(res *pgmig.HistoryResult) {
	if o.json {
		writeJSON(o.stdout, res)
		return
	}
	if res.Changed == 0 {
		o.say("Nothing to repair: every applied migration matches its file.")
		return
	}
	for _, r := range res.Migrations {
		o.say("repaired %s: the history now records its current checksum and name", label(r.File, r.Version, r.Name))
	}
	o.say("%s %s; the old values are in pgmig.audit.", paint(o.ttyOut, bold+green, "Repaired"), plural(res.Changed, "migration", "migrations"))
}

func (o *output) resolved(res *pgmig.HistoryResult, action pgmig.ResolveAction) {
	if o.json {
		writeJSON(o.stdout, res)
		return
	}
	for _, r := range res.Migrations {
		if action == pgmig.ResolveApplied {
			o.say("Resolved version %d (%s): recorded as applied; the next push continues after it.", r.Version, r.Name)
		} else {
			o.say("Resolved version %d (%s): the next push runs it again from its first statement.", r.Version, r.Name)
		}
	}
}
