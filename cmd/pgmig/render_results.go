package main

import (
	"fmt"
	"strings"
	"text/tabwriter"

	pgmig "github.com/pgmig/pgmig/gowrapper"
)

// The results of the commands, each for people (text) and for machines
// (jsonValue). The JSON shapes are the library's result types, documented
// in docs/cli.md ("Output").

type installResult struct{ res *pgmig.InstallResult }

func (r installResult) jsonValue() any { return r.res }
func (r installResult) text(o *output) {
	switch r.res.PreviousVersion {
	case "":
		o.say("Installed the pgmig engine %s.", r.res.Version)
	case r.res.Version:
		o.say("The pgmig engine %s is installed (script re-applied, nothing changed).", r.res.Version)
	default:
		o.say("Upgraded the pgmig engine from %s to %s.", r.res.PreviousVersion, r.res.Version)
	}
	for _, w := range r.res.Warnings {
		fmt.Fprintf(o.stderr, "%s %s\n", paint(o.ttyErr, yellow, "WARNING:"), w)
	}
}

// installScript is install --print: the SQL itself is the output.
type installScript struct{ version, sql string }

func (r installScript) jsonValue() any {
	return map[string]string{"version": r.version, "sql": r.sql}
}
func (r installScript) text(o *output) { fmt.Fprint(o.stdout, r.sql) }

type pushResult struct {
	res  *pgmig.PushResult
	live *liveProgress
}

func (r pushResult) jsonValue() any { return r.res }
func (r pushResult) text(o *output) {
	res := r.res
	if r.live.printed == 0 {
		// Notices did not reach us: list what was applied from the result.
		for _, m := range res.Migrations {
			if m.Outcome.IsApplied() {
				o.say("applied %s (%s)", label(m.File, m.Version, m.Name), formatDuration(m.Duration))
			}
		}
	}
	pending, repeatablePending := 0, 0
	var ahead, missing []string
	for _, m := range res.Migrations {
		switch m.Outcome {
		case pgmig.OutcomeBeyondTarget:
			pending++
		case pgmig.OutcomeRepeatablePending:
			repeatablePending++
		case pgmig.OutcomeRepeatableMissing:
			missing = append(missing, m.Name)
		case pgmig.OutcomeAhead:
			ahead = append(ahead, fmt.Sprint(m.Version))
		}
	}
	if res.Applied > 0 {
		inTx := ""
		if res.Segments > 1 {
			inTx = fmt.Sprintf(" in %d steps", res.Segments)
		}
		repeatable := ""
		if res.RepeatableApplied > 0 {
			repeatable = fmt.Sprintf(" (%d repeatable)", res.RepeatableApplied)
		}
		o.say("%s %s%s%s in %s; the database is now at version %d.", paint(o.ttyOut, bold+green, "Applied"),
			plural(res.Applied, "migration", "migrations"), repeatable, inTx, formatDuration(res.Duration), res.Version)
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
	if repeatablePending > 0 {
		o.say("%s left pending: they are applied after the last versioned migration.", plural(repeatablePending, "repeatable migration", "repeatable migrations"))
	}
	if len(missing) > 0 {
		o.say("%s repeatable migration(s) %s applied earlier, missing from these files (not an error; the database keeps what they made).",
			paint(o.ttyOut, yellow, "Note:"), strings.Join(missing, ", "))
	}
	if len(ahead) > 0 {
		o.say("%s the database is ahead of these files: version(s) %s applied by a newer release.",
			paint(o.ttyOut, yellow, "Note:"), strings.Join(ahead, ", "))
	}
}

type planResult struct {
	res    *pgmig.PlanResult
	format pgmig.Format
}

func (r planResult) jsonValue() any {
	return struct {
		*pgmig.PlanResult
		Format pgmig.Format `json:"format,omitempty"`
	}{r.res, r.format}
}
func (r planResult) text(o *output) {
	if r.format != "" {
		o.say("Files: %s format.", r.format)
	}
	var missing []string
	for _, m := range r.res.Migrations {
		if m.Outcome == pgmig.OutcomeRepeatableMissing {
			missing = append(missing, m.Name)
		}
	}
	if len(missing) > 0 {
		defer o.say("%s repeatable migration(s) %s applied earlier, missing from these files (not an error).",
			paint(o.ttyOut, yellow, "Note:"), strings.Join(missing, ", "))
	}
	if r.res.Pending == 0 {
		o.say("Nothing to apply: the database is at version %d.", r.res.Version)
		return
	}
	steps := ""
	if r.res.Steps > 1 {
		steps = fmt.Sprintf(" in %d steps", r.res.Steps)
	}
	o.say("%s would be applied%s (the database is at version %d):", plural(r.res.Pending, "migration", "migrations"), steps, r.res.Version)
	beyond := 0
	for _, m := range r.res.Migrations {
		switch m.Outcome {
		case pgmig.OutcomeRepeatablePending:
			if m.Step == 0 {
				beyond++ // waits for the versioned migrations beyond the target
				continue
			}
			var notes []string
			if r.res.Steps > 1 {
				notes = append(notes, fmt.Sprintf("step %d", m.Step))
			}
			notes = append(notes, "repeatable: new or changed")
			o.say("  %s%s", label(m.File, m.Version, m.Name), paint(o.ttyOut, dim, "  ["+strings.Join(notes, ", ")+"]"))
		case pgmig.OutcomePending:
			var notes []string
			if r.res.Steps > 1 {
				notes = append(notes, fmt.Sprintf("step %d", m.Step))
			}
			if !m.Transactional {
				notes = append(notes, "non-transactional: statement by statement, each committed")
			}
			if m.CommitAfter {
				notes = append(notes, "commit after")
			}
			note := ""
			if len(notes) > 0 {
				note = paint(o.ttyOut, dim, "  ["+strings.Join(notes, ", ")+"]")
			}
			o.say("  %s%s", label(m.File, m.Version, m.Name), note)
		case pgmig.OutcomeBeyondTarget:
			beyond++
		}
	}
	if r.res.Steps > 1 {
		o.say("Each step is atomic; a failure leaves the earlier steps applied (the lock budget may add commit points).")
	}
	if beyond > 0 {
		o.say("%s above the target version would stay pending.", plural(beyond, "migration", "migrations"))
	}
}

type validateResult struct{ res *pgmig.PushResult }

func (r validateResult) jsonValue() any { return r.res }
func (r validateResult) text(o *output) {
	applied, pending := 0, 0
	for _, m := range r.res.Migrations {
		switch m.Outcome {
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

type statusResult struct {
	st     *pgmig.StatusResult
	plan   *pgmig.PlanResult // nil: no migrations in --dir, or they could not be checked
	format pgmig.Format      // of the files in --dir
	all    bool
}

func (r statusResult) jsonValue() any {
	v := struct {
		*pgmig.StatusResult
		Pending []pgmig.MigrationResult `json:"pending,omitempty"`
		Format  pgmig.Format            `json:"format,omitempty"`
	}{StatusResult: r.st, Format: r.format}
	if r.plan != nil {
		for _, m := range r.plan.Migrations {
			if m.Outcome.IsPending() {
				v.Pending = append(v.Pending, m.MigrationResult)
			}
		}
	}
	return v
}

func (r statusResult) text(o *output) {
	if o.quiet {
		return
	}
	st := r.st
	var unfinished []pgmig.HistoryEntry
	repeatables := 0
	for _, h := range st.History {
		switch h.State {
		case "applied", "baseline":
		case "repeatable":
			repeatables++
		default:
			unfinished = append(unfinished, h)
		}
	}
	what := "the database"
	if st.Scope != "" {
		what = "schema " + st.Scope
	}
	rep := ""
	if repeatables > 0 {
		rep = fmt.Sprintf(", and %s", plural(repeatables, "repeatable migration", "repeatable migrations"))
	}
	fmt.Fprintf(o.stdout, "Engine %s; %s is at version %d (%s applied%s).\n",
		st.EngineVersion, what, st.Version, plural(len(st.History)-len(unfinished)-repeatables, "migration", "migrations"), rep)
	if n := len(st.Tenants); n > 0 {
		lo, hi := st.Tenants[0].Version, st.Tenants[0].Version
		for _, s := range st.Tenants {
			lo, hi = min(lo, s.Version), max(hi, s.Version)
		}
		versions := fmt.Sprintf("version %d", lo)
		if lo != hi {
			versions = fmt.Sprintf("versions %d to %d", lo, hi)
		}
		fmt.Fprintf(o.stdout, "Tenant schemas: %d with a history, at %s (`pgmig status --schema NAME` shows one).\n", n, versions)
	}
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
		if !r.all && len(history) > statusRows {
			history = history[:statusRows]
		}
		for _, h := range history {
			at := ""
			if h.AppliedAt != nil {
				at = h.AppliedAt.Local().Format("2006-01-02 15:04:05")
			}
			version := fmt.Sprint(h.Version)
			if h.State == "repeatable" {
				version = "R" // a repeatable migration has no version
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", version, h.Name, h.State, at, formatDuration(h.Duration), h.AppliedBy)
		}
		tw.Flush()
		if len(history) < len(st.History) {
			fmt.Fprintf(o.stdout, "... and %d older (--all shows them).\n", len(st.History)-len(history))
		}
	}
	if r.plan != nil {
		if r.format != "" {
			fmt.Fprintf(o.stdout, "Files: %s format.\n", r.format)
		}
		if r.plan.Pending == 0 {
			fmt.Fprintln(o.stdout, "Nothing pending.")
		} else {
			fmt.Fprintf(o.stdout, "Pending (%d):\n", r.plan.Pending)
			for _, m := range r.plan.Migrations {
				if m.Outcome == pgmig.OutcomePending || m.Outcome == pgmig.OutcomeRepeatablePending && m.Step > 0 {
					fmt.Fprintf(o.stdout, "  %s\n", label(m.File, m.Version, m.Name))
				}
			}
		}
		var missing []string
		for _, m := range r.plan.Migrations {
			if m.Outcome == pgmig.OutcomeRepeatableMissing {
				missing = append(missing, m.Name)
			}
		}
		if len(missing) > 0 {
			fmt.Fprintf(o.stdout, "Repeatable migrations missing from the files (applied earlier; not an error): %s.\n", strings.Join(missing, ", "))
		}
		var downs []string
		for _, m := range r.plan.Migrations {
			if m.DownDiffers {
				downs = append(downs, label(m.File, m.Version, m.Name))
			}
		}
		if len(downs) > 0 {
			fmt.Fprintf(o.stdout, "%s the down SQL in the files differs from the one recorded for %s: `pgmig repair` records it (rollback runs the recorded one).\n",
				paint(o.ttyOut, yellow, "Note:"), strings.Join(downs, ", "))
		}
	}
}

type rollbackResult struct {
	res    *pgmig.HistoryResult
	to     int64
	dryRun bool
	live   *liveProgress
}

func (r rollbackResult) jsonValue() any { return r.res }
func (r rollbackResult) text(o *output) {
	res := r.res
	if r.dryRun {
		if len(res.Migrations) == 0 {
			o.say("Nothing to roll back: no applied version above %d.", r.to)
			return
		}
		o.say("%s would be rolled back (every one has down SQL), newest first:", plural(len(res.Migrations), "migration", "migrations"))
		nontx := 0
		for _, m := range res.Migrations {
			note := ""
			if m.Outcome == pgmig.OutcomePendingNonTxRollback {
				note = paint(o.ttyOut, dim, "  [non-transactional: its down runs outside a transaction, statement by statement]")
				nontx++
			}
			o.say("  %d %s%s", m.Version, m.Name, note)
		}
		if nontx > 0 {
			o.say("Each non-transactional down is a step of its own, committed statement by statement; a failure leaves the earlier steps rolled back.")
		}
		return
	}
	if res.Changed == 0 {
		o.say("Nothing to roll back: the database is at version %d.", res.Version)
		return
	}
	if r.live.printed == 0 {
		for _, m := range res.Migrations {
			o.say("rolled back %d %s (%s)", m.Version, m.Name, formatDuration(m.Duration))
		}
	}
	o.say("%s %s in %s; the database is now at version %d.", paint(o.ttyOut, bold+green, "Rolled back"),
		plural(res.Changed, "migration", "migrations"), formatDuration(res.Duration), res.Version)
}

type baselineResult struct {
	res     *pgmig.HistoryResult
	version int64
}

func (r baselineResult) jsonValue() any { return r.res }
func (r baselineResult) text(o *output) {
	o.say("%s at version %d: recorded %s as applied without running them; the database is at version %d.",
		paint(o.ttyOut, bold+green, "Baselined"), r.version, plural(r.res.Changed, "migration", "migrations"), r.res.Version)
	pending := 0
	for _, m := range r.res.Migrations {
		if m.Outcome == pgmig.OutcomePending {
			pending++
		}
	}
	if pending > 0 {
		o.say("%s after it left for `pgmig push`.", plural(pending, "migration", "migrations"))
	}
}

type repairResult struct{ res *pgmig.HistoryResult }

func (r repairResult) jsonValue() any { return r.res }
func (r repairResult) text(o *output) {
	if r.res.Changed == 0 {
		o.say("Nothing to repair: every applied migration matches its file.")
		return
	}
	for _, m := range r.res.Migrations {
		o.say("repaired %s: the history now records its current checksum and name", label(m.File, m.Version, m.Name))
	}
	o.say("%s %s; the old values are in pgmig.audit.", paint(o.ttyOut, bold+green, "Repaired"), plural(r.res.Changed, "migration", "migrations"))
}

type resolveResult struct {
	res    *pgmig.HistoryResult
	action pgmig.ResolveAction
}

func (r resolveResult) jsonValue() any { return r.res }
func (r resolveResult) text(o *output) {
	for _, m := range r.res.Migrations {
		if r.action == pgmig.ResolveApplied {
			o.say("Resolved version %d (%s): recorded as applied; the next push continues after it.", m.Version, m.Name)
		} else {
			o.say("Resolved version %d (%s): the next push runs it again from its first statement.", m.Version, m.Name)
		}
	}
}

type newResult struct {
	path    string
	version int64
	// createdDir is the migrations directory when new created it.
	createdDir string
}

func (r newResult) jsonValue() any {
	v := map[string]any{"file": r.path, "version": r.version}
	if r.createdDir != "" {
		v["created_dir"] = r.createdDir
	}
	return v
}
func (r newResult) text(o *output) {
	if r.createdDir != "" {
		o.info("created directory %s", r.createdDir)
	}
	o.say("%s", r.path)
}

type versionResult struct{ version string }

func (r versionResult) jsonValue() any {
	return map[string]string{"pgmig": r.version, "engine": r.version}
}
func (r versionResult) text(o *output) {
	fmt.Fprintf(o.stdout, "pgmig %s (installs and supports engine %s)\n", r.version, r.version)
}
