package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	pgmig "github.com/pgmig/pgmig/gowrapper"
)

// The engine's HINTs are written for whoever calls it, usually from SQL:
// they name functions and named parameters (migrate_repair,
// allow_out_of_order => true). A CLI user needs the command or flag
// instead. The CLI picks its hint by SQLSTATE and by data (the drift
// kinds, the history) — never by the wording of a message — and keeps
// the server's hint for every SQLSTATE not listed here.
var cliHints = map[string]func(o *output, err error) string{
	"PM002": driftHint,
	"PM003": lockHint,
	"PM004": func(*output, error) string {
		return "pgmig needs a read-write READ COMMITTED transaction on the primary: connect to the primary " +
			"(target_session_attrs=read-write in the connection string), and check default_transaction_read_only and " +
			"default_transaction_isolation for this role and database."
	},
	codePM008: func(*output, error) string {
		return "Migrations must not change pgmig's own tables: remove the statement on pgmig.history from the migration. " +
			"The history is changed only by `pgmig rollback` and `pgmig repair`."
	},
	"PM009": interruptedHint,
	"55P04": func(*output, error) string {
		return "Put a line ---- pgmig: commit-after ---- in the migration that adds the enum value: `pgmig push` then " +
			"commits after it, before the migrations that use the value."
	},
}

// cliHint is the hint a CLI user gets for err instead of the server's, if
// the CLI has one for its SQLSTATE.
func (o *output) cliHint(err error, sqlstate string) (string, bool) {
	f, ok := cliHints[sqlstate]
	if !ok {
		return "", false
	}
	return f(o, err), true
}

// driftKinds say what to do about each kind of drift the error reports,
// in this order. A kind the engine reports as data plugs in here: its
// versions and its sentence.
var driftKinds = []struct {
	versions func(*pgmig.DriftError) []int64
	hint     string // %s: "version 3" or "versions 3, 5"
}{
	{func(d *pgmig.DriftError) []int64 { return d.Changed },
		"Changed since applied (edited or renamed): %s. Restore the files as they were applied, or run `pgmig repair` to record a deliberate edit."},
	{func(d *pgmig.DriftError) []int64 { return d.Missing },
		"Applied but missing from the migrations directory: %s. Restore the files, or pass --allow-missing."},
	{func(d *pgmig.DriftError) []int64 { return d.OutOfOrder },
		"Pending but older than the newest applied version: %s. Pass --allow-out-of-order to apply them anyway."},
}

// driftHint names only the kinds of drift the error lists: an edited
// migration is not told about out-of-order versions.
func driftHint(_ *output, err error) string {
	var d *pgmig.DriftError
	var parts []string
	if errors.As(err, &d) {
		for _, k := range driftKinds {
			if vs := k.versions(d); len(vs) > 0 {
				parts = append(parts, fmt.Sprintf(k.hint, versionList(vs)))
			}
		}
	}
	if len(parts) == 0 {
		return "An applied migration must not be edited, renamed or removed: restore its file, or run `pgmig repair` to record a deliberate edit."
	}
	return strings.Join(parts, " ")
}

func versionList(vs []int64) string {
	s := make([]string, len(vs))
	for i, v := range vs {
		s[i] = fmt.Sprint(v)
	}
	if len(vs) == 1 {
		return "version " + s[0]
	}
	return "versions " + strings.Join(s, ", ")
}

func lockHint(o *output, _ error) string {
	name := ""
	if o.cmd != nil {
		name = o.cmd.name
	}
	switch name {
	case "validate":
		return "Another migrator holds the migration lock: `pgmig validate --wait` waits for it; `pgmig status` shows who it is."
	case "rollback", "resolve":
		return "Changing the history while another migrator works is refused rather than queued: wait for it to finish " +
			"(`pgmig status` shows who it is), or allow a wait with --lock-timeout D."
	}
	return "Wait for it to finish and run again: applied migrations are skipped. `pgmig status` shows who is migrating; " +
		"--lock-timeout D sets how long to wait."
}

func interruptedHint(o *output, _ error) string {
	if len(o.hints.interrupted) != 1 {
		return "Check what the completed statements did (`pgmig status` shows the migration and where it stopped). Then either undo " +
			"them and run `pgmig resolve V --retry`, or finish the migration by hand and run `pgmig resolve V --applied`."
	}
	v := o.hints.interrupted[0]
	return fmt.Sprintf("Check what the completed statements did. Then either undo them (e.g. DROP INDEX CONCURRENTLY an invalid index) "+
		"and run `pgmig resolve %d --retry` to run the migration again from its first statement, or finish it by hand and run "+
		"`pgmig resolve %d --applied` to record it as applied.", v, v)
}

// hintData is what a hint needs beyond the error itself, read while the
// connection is still open.
type hintData struct {
	// interrupted: the non-transactional migrations migrate_status() shows
	// started and not recorded: failed, interrupted, or still running in
	// a session whose client is gone (for PM009).
	interrupted []int64
}

func gatherHintData(ctx context.Context, inv *invocation, err error) hintData {
	var h hintData
	if inv.client == nil || !errors.Is(err, pgmig.ErrInterrupted) {
		return h
	}
	// Still worth asking when the command was interrupted; briefly.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	st, serr := inv.client.Status(ctx)
	if serr != nil {
		return h
	}
	for _, e := range st.History {
		if e.State != "applied" && e.State != "baseline" {
			h.interrupted = append(h.interrupted, e.Version)
		}
	}
	return h
}
