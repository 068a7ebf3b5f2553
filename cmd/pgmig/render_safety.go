package main

import (
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	pgmig "github.com/pgmig/pgmig/gowrapper"
)

// What issue 14's commands show: push's retries and blocked migrations,
// plan --sql, plan --rehearse, wait.

// lockName is a lock mode as the PostgreSQL manual and LOCK TABLE name it
// (AccessExclusiveLock → ACCESS EXCLUSIVE).
func lockName(mode string) string {
	var b strings.Builder
	for i, r := range strings.TrimSuffix(mode, "Lock") {
		if i > 0 && r >= 'A' && r <= 'Z' {
			b.WriteByte(' ')
		}
		b.WriteRune(r)
	}
	return strings.ToUpper(b.String())
}

// formatBytes is a size for people: 440 B, 1.7 kB, 13.4 MB.
func formatBytes(n int64) string {
	const unit = 1000
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %cB", float64(n)/float64(div), "kMGTPE"[exp])
}

// blockedLine is "migrations/002_add_col.sql blocked on "orders" by pid
// 4242 (reporting, idle in transaction 40s)", with the file as the user
// finds it.
func (o *output) blockedLine(e *pgmig.BlockedError) string {
	c := *e
	if c.File != "" {
		c.File = o.path(c.File)
	}
	return c.Describe()
}

// retrying says that a push was blocked and will be tried again: the
// migration's progress line ends as failed, and one line on stderr says
// which attempt, who was in the way and when the next one comes.
func (o *output) retrying(live *liveProgress, a pgmig.RetryAttempt) {
	live.abandon()
	o.info("attempt %d/%d: %s; trying again in %s", a.Attempt, a.Attempts, o.blockedLine(a.Err), formatDuration(a.Wait))
}

// abandon ends the line of the migration in progress as failed (its
// transaction was rolled back; the push goes on).
func (l *liveProgress) abandon() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.finish(false)
}

// blockedHeadline is the first line of a *BlockedError.
func (o *output) blockedHeadline(e *pgmig.BlockedError) string {
	s := fmt.Sprintf("%s: %s: gave up after waiting %s for its lock (--ddl-lock-timeout)", o.op(), o.blockedLine(e), formatDuration(e.LockTimeout))
	if e.Attempts > 1 {
		s += fmt.Sprintf(", %d attempts", e.Attempts)
	}
	return s
}

// blocked prints a *BlockedError for people: who was in the way, what it
// left, what to do.
func (o *output) blocked(e *pgmig.BlockedError) {
	w := o.stderr
	fmt.Fprintf(w, "%s %s\n", paint(o.ttyErr, bold+red, "pgmig: error:"), o.blockedHeadline(e))
	if len(e.Blockers) == 0 {
		fmt.Fprintln(w, "The session in its way had ended by the time pgmig looked (or it locked a relation the migration does not name).")
	} else {
		fmt.Fprintln(w, "In its way:")
		for _, b := range e.Blockers {
			who := []string{}
			if b.Role != "" {
				who = append(who, "role "+b.Role)
			}
			if b.ClientAddr != "" {
				who = append(who, "from "+b.ClientAddr)
			}
			held := "holds"
			if !b.Granted {
				held = "queued before it for"
			}
			extra := ""
			if len(who) > 0 {
				extra = ", " + strings.Join(who, ", ")
			}
			fmt.Fprintf(w, "  %s%s: %s %s on %s\n", b, extra, held, strings.Join(mapSlice(b.Modes, lockName), ", "), b.Relation)
			if b.Query != "" {
				fmt.Fprintf(w, "      %s\n", paint(o.ttyErr, dim, oneLine(b.Query, 160)))
			}
		}
	}
	if e.NonTransactional {
		fmt.Fprintf(w, "It was statement %d of %d of non-transactional migration %d (%s): the statements before it stay applied, and pushes refuse "+
			"until you run `pgmig resolve %d --retry` (nothing of the blocked statement was applied; undo the ones before it first) "+
			"or `pgmig resolve %d --applied` (after finishing it by hand).\n", e.Statement, e.Statements, e.Version, e.Name, e.Version, e.Version)
		return
	}
	earlier := ""
	if e.Applied > 0 {
		earlier = fmt.Sprintf(" The %s committed by earlier steps stay applied.", plural(e.Applied, "migration", "migrations"))
	}
	end := ""
	if len(e.Blockers) > 0 && !e.Blockers[0].Prepared {
		end = fmt.Sprintf(", or end them (select pg_terminate_backend(%d);)", e.Blockers[0].PID)
	}
	fmt.Fprintf(w, "Nothing of its transaction was applied, and nobody waits behind it any more.%s Push again once they end "+
		"(--retries N does that by itself)%s; a migration that may wait longer says so with a line ---- pgmig: lock-timeout 30s ----.\n", earlier, end)
}

func mapSlice(in []string, f func(string) string) []string {
	out := make([]string, len(in))
	for i, s := range in {
		out[i] = f(s)
	}
	return out
}

// oneLine is s on one line, at most n characters.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

// blockedJSON is a *BlockedError in the --json error object.
type blockedJSON struct {
	Relation         string          `json:"relation,omitempty"`
	LockTimeoutMS    int64           `json:"lock_timeout_ms"`
	Attempts         int             `json:"attempts"`
	NonTransactional bool            `json:"non_transactional,omitempty"`
	Statement        int             `json:"statement,omitempty"`
	Blockers         []pgmig.Blocker `json:"blockers"`
}

func newBlockedJSON(e *pgmig.BlockedError) *blockedJSON {
	return &blockedJSON{Relation: e.Relation, LockTimeoutMS: e.LockTimeout.Milliseconds(), Attempts: max(e.Attempts, 1),
		NonTransactional: e.NonTransactional, Statement: e.Statement, Blockers: append([]pgmig.Blocker{}, e.Blockers...)}
}

// plannedSQL is one migration of plan --sql.
type plannedSQL struct {
	pgmig.PlanEntry
	SQL         string         `json:"sql"`
	LockTimeout *time.Duration `json:"-"`
}

type planSQLResult struct {
	migrations []plannedSQL
	version    int64
	steps      int
}

func (r planSQLResult) jsonValue() any {
	type entry struct {
		plannedSQL
		LockTimeoutMS *int64 `json:"lock_timeout_ms,omitempty"`
	}
	v := struct {
		Version    int64   `json:"version"`
		Steps      int     `json:"steps"`
		Migrations []entry `json:"migrations"`
	}{Version: r.version, Steps: r.steps, Migrations: []entry{}}
	for _, m := range r.migrations {
		e := entry{plannedSQL: m}
		if m.LockTimeout != nil {
			ms := m.LockTimeout.Milliseconds()
			e.LockTimeoutMS = &ms
		}
		v.Migrations = append(v.Migrations, e)
	}
	return v
}

// text is the SQL itself, each migration under a comment line naming its
// file: what `psql -f` of the output would run, transaction boundaries
// aside (push commits where the engine decides).
func (r planSQLResult) text(o *output) {
	w := o.stdout
	if len(r.migrations) == 0 {
		fmt.Fprintf(w, "-- Nothing to apply: the database is at version %d.\n", r.version)
		return
	}
	fmt.Fprintf(w, "-- The SQL `pgmig push` would run now: %s, in this order (the database is at version %d).\n",
		plural(len(r.migrations), "migration", "migrations"), r.version)
	if r.steps > 1 {
		fmt.Fprintf(w, "-- In %d steps, each atomic: push commits after each one.\n", r.steps)
	}
	for _, m := range r.migrations {
		var notes []string
		if r.steps > 1 {
			notes = append(notes, fmt.Sprintf("step %d", m.Step))
		}
		if !m.Transactional {
			notes = append(notes, "non-transactional: statement by statement, each committed")
		}
		if m.CommitAfter {
			notes = append(notes, "commit after")
		}
		if m.LockTimeout != nil {
			notes = append(notes, "lock timeout "+m.LockTimeout.String())
		}
		head := fmt.Sprintf("-- ==== %s: version %d (%s)", o.path(m.File), m.Version, m.Name)
		if len(notes) > 0 {
			head += " [" + strings.Join(notes, "; ") + "]"
		}
		fmt.Fprintf(w, "\n%s ====\n%s\n", head, strings.TrimRight(m.SQL, "\n"))
	}
}

type rehearseResult struct {
	res        *pgmig.RehearseResult
	failOn     []string
	violations []violation
}

func (r rehearseResult) jsonValue() any {
	return struct {
		*pgmig.RehearseResult
		FailOn     []string    `json:"fail_on,omitempty"`
		Violations []violation `json:"violations,omitempty"`
	}{r.res, r.failOn, r.violations}
}

func (r rehearseResult) text(o *output) {
	if o.quiet {
		return
	}
	res := r.res
	if res.Rehearsed == 0 && res.NotRehearsed == 0 {
		fmt.Fprintln(o.stdout, "Nothing to rehearse: nothing is pending.")
		return
	}
	fmt.Fprintf(o.stdout, "%s %s in %s: executed under the migration lock, measured, and rolled back; the database is unchanged.\n",
		paint(o.ttyOut, bold+green, "Rehearsed"), plural(res.Rehearsed, "migration", "migrations"), formatDuration(res.Duration))
	for _, m := range res.Migrations {
		name := label(o.path(m.File), m.Version, m.Name)
		switch m.Outcome {
		case pgmig.OutcomeRehearsed:
		case pgmig.OutcomeNotRehearsed:
			fmt.Fprintf(o.stdout, "  %s  %s\n", name, paint(o.ttyOut, yellow, "not rehearsed: "+m.Note))
			continue
		default:
			continue
		}
		fmt.Fprintf(o.stdout, "  %s  %s  WAL %s\n", paint(o.ttyOut, bold, name), formatDuration(m.Duration), formatBytes(m.WALBytes))
		tw := tabwriter.NewWriter(o.stdout, 0, 4, 2, ' ', 0)
		for _, rel := range m.Relations {
			lock := lockName(rel.LockMode)
			if rel.LockMode != "" && !slices.Contains(rel.NewModes, rel.LockMode) {
				lock += " (held since an earlier migration)"
			}
			var what []string
			switch {
			case rel.Created:
				what = append(what, "created")
			case rel.Dropped:
				what = append(what, "dropped")
			}
			if rel.Rewritten {
				what = append(what, paint(o.ttyOut, yellow, "rewritten: "+formatBytes(rel.SizeBytes)))
			}
			line := fmt.Sprintf("      %s\t%s\t%s", rel.Relation, rel.Kind, lock)
			if len(what) > 0 {
				line += "\t" + strings.Join(what, ", ")
			}
			fmt.Fprintln(tw, line)
		}
		tw.Flush()
	}
	if len(r.violations) > 0 {
		fmt.Fprintf(o.stdout, "%s --fail-on %s:\n", paint(o.ttyOut, bold+red, "Forbidden by"), strings.Join(r.failOn, ","))
		for _, v := range violationList(r.violations) {
			fmt.Fprintf(o.stdout, "  %s\n", o.path(v))
		}
	}
}

type waitResult struct {
	res     *pgmig.WaitResult
	files   int
	version int64
}

func (r waitResult) jsonValue() any { return r.res }
func (r waitResult) text(o *output) {
	res := r.res
	took := formatDuration(res.Waited)
	switch res.Ready {
	case "version":
		o.say("%s the database is at version %d (at least %d was asked for; %s).", paint(o.ttyOut, bold+green, "Ready:"), res.Version, r.version, took)
	case "ahead":
		ahead := int64Strings(res.Ahead)
		o.say("%s the database holds the %s of %s and is ahead of them (versions %s, applied by a newer release; %s).",
			paint(o.ttyOut, bold+green, "Ready:"), plural(r.files, "migration", "migrations"), o.dir, strings.Join(ahead, ", "), took)
	default:
		o.say("%s the database holds exactly the %s of %s (version %d; %s).",
			paint(o.ttyOut, bold+green, "Ready:"), plural(r.files, "migration", "migrations"), o.dir, res.Version, took)
	}
}

func int64Strings(vs []int64) []string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = fmt.Sprint(v)
	}
	return out
}
