package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	pgmig "github.com/pgmig/pgmig/gowrapper"
)

// jsonError is the --json shape of every error.
type jsonError struct {
	Error jsonErrorBody `json:"error"`
}

type jsonErrorBody struct {
	Message  string `json:"message"`
	ExitCode int    `json:"exit_code"`
	SQLState string `json:"sqlstate,omitempty"`
	Detail   string `json:"detail,omitempty"`
	// Hint is what to do next, for a CLI user; ServerHint is the server's
	// own HINT when the CLI replaced it (it speaks to SQL callers).
	Hint       string `json:"hint,omitempty"`
	ServerHint string `json:"server_hint,omitempty"`
	File       string `json:"file,omitempty"`
	Line       int    `json:"line,omitempty"`
	Column     int    `json:"column,omitempty"`
	// Statement: the failing statement of the migration (1-based), when
	// known; Context: the error's CONTEXT inside the migration.
	Statement int    `json:"statement,omitempty"`
	Context   string `json:"context,omitempty"`
	// Blocked: a migration gave up waiting for a lock (--ddl-lock-timeout):
	// the relation and the sessions in its way.
	Blocked        *blockedJSON `json:"blocked,omitempty"`
	Version        int64        `json:"version,omitempty"`
	Repeatable     bool         `json:"repeatable,omitempty"`
	Name           string       `json:"name,omitempty"`
	CurrentVersion *int64       `json:"current_version,omitempty"`
	// The connection failed mid-push (exit 5): re-running is safe;
	// outcome_unknown when the server may have committed.
	ConnectionLost bool `json:"connection_lost,omitempty"`
	OutcomeUnknown bool `json:"outcome_unknown,omitempty"`
}

// op names what the command was doing, at the head of its errors.
func (o *output) op() string {
	if o.cmd == nil {
		return "pgmig"
	}
	return o.cmd.op
}

// engineSentinels describe the engine's errors in one phrase, after the
// operation ("validating migrations: migrations drifted from the database
// history"), whatever the library's own wrapping says.
var engineSentinels = []error{
	pgmig.ErrDrift, pgmig.ErrLockTimeout, pgmig.ErrInvalidBatch, pgmig.ErrInterrupted, pgmig.ErrIrreversible,
	pgmig.ErrNotRunnable, pgmig.ErrTransactionContext, pgmig.ErrEngineNotInstalled, pgmig.ErrPermissionDenied,
	pgmig.ErrUnsupportedEngine,
}

// headline is the first line of an error, without "pgmig: error: ".
func (o *output) headline(err error) string {
	var uerr *usageError
	var lerr *pgmig.LoadError
	var lost *pgmig.ConnectionLostError
	var verr *pgmig.EngineVersionError
	var pgErr *pgconn.PgError
	var blocked *pgmig.BlockedError
	switch {
	case errors.As(err, &uerr):
		return uerr.msg
	case errors.As(err, &blocked):
		return o.blockedHeadline(blocked)
	case errors.As(err, &lerr):
		return o.path(lerr.File) + ": " + lerr.Err.Error()
	case errors.As(err, &lost):
		// Error() is "<Op>: <what happened>: <cause>"; the command names
		// the operation itself.
		return o.op() + ": " + strings.TrimPrefix(lost.Error(), lost.Op+": ")
	case errors.As(err, &verr):
		return o.op() + ": " + verr.Error()
	case errors.As(err, &pgErr):
		for _, s := range engineSentinels {
			if errors.Is(err, s) {
				return o.op() + ": " + s.Error()
			}
		}
		return o.op()
	case errors.Is(err, context.Canceled):
		return o.op() + ": interrupted"
	}
	return o.op() + ": " + err.Error()
}

// errorObject is the --json form of err.
func (o *output) errorObject(err error) jsonError {
	var j jsonError
	j.Error.Message = o.headline(err)
	j.Error.ExitCode = exitCode(err)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		j.Error.Message += ": " + pgErr.Message
		j.Error.SQLState, j.Error.Detail, j.Error.Hint = pgErr.Code, pgErr.Detail, pgErr.Hint
		if h, ok := o.cliHint(err, pgErr.Code); ok {
			j.Error.Hint, j.Error.ServerHint = h, pgErr.Hint
		}
	}
	var lerr *pgmig.LoadError
	if errors.As(err, &lerr) {
		j.Error.File = lerr.File
	}
	var merr *pgmig.MigrationError
	if errors.As(err, &merr) {
		j.Error.Message = merr.Message
		j.Error.File, j.Error.Line, j.Error.Column = merr.File, merr.Location.Line, merr.Location.Column
		j.Error.Version, j.Error.Name, j.Error.Repeatable = merr.Version, merr.Name, merr.Repeatable
		j.Error.Statement, j.Error.Context = merr.Statement, merr.Context
		if merr.CurrentVersion >= 0 {
			j.Error.CurrentVersion = &merr.CurrentVersion
		}
	}
	var lost *pgmig.ConnectionLostError
	if errors.As(err, &lost) {
		j.Error.ConnectionLost, j.Error.OutcomeUnknown = true, lost.OutcomeUnknown
	}
	var blocked *pgmig.BlockedError
	if errors.As(err, &blocked) {
		j.Error.Message = o.blockedHeadline(blocked)
		j.Error.File, j.Error.Version, j.Error.Name = blocked.File, blocked.Version, blocked.Name
		j.Error.Blocked = newBlockedJSON(blocked)
	}
	return j
}

// fail prints err for people on stderr: a failing migration psql-style
// with its file, line and caret; a server error with its SQLSTATE, DETAIL
// and a hint in the CLI's terms; anything else on one line.
func (o *output) fail(err error) {
	var merr *pgmig.MigrationError
	if errors.As(err, &merr) {
		o.migrationError(merr)
		return
	}
	var blocked *pgmig.BlockedError
	if errors.As(err, &blocked) {
		o.blocked(blocked)
		return
	}
	head := paint(o.ttyErr, bold+red, "pgmig: error:")
	fmt.Fprintf(o.stderr, "%s %s\n", head, o.headline(err))
	var lost *pgmig.ConnectionLostError
	if errors.As(err, &lost) {
		o.connectionLost(lost)
		return
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return
	}
	fmt.Fprintf(o.stderr, "%s  %s\nSQLSTATE: %s\n", paint(o.ttyErr, bold+red, pgErr.Severity+":"), pgErr.Message, pgErr.Code)
	if pgErr.Detail != "" {
		fmt.Fprintf(o.stderr, "DETAIL:  %s\n", pgErr.Detail)
	}
	hint := pgErr.Hint
	if h, ok := o.cliHint(err, pgErr.Code); ok {
		hint = h
	}
	if hint != "" {
		fmt.Fprintf(o.stderr, "HINT:  %s\n", hint)
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
	switch {
	case loc.Line > 0 && loc.Column > 0:
		where = fmt.Sprintf("%s:%d:%d", where, loc.Line, loc.Column)
	case loc.Line > 0:
		where = fmt.Sprintf("%s:%d", where, loc.Line)
	}
	fmt.Fprintf(w, "%s: %s  %s\n", paint(o.ttyErr, bold, where), paint(o.ttyErr, bold+red, "ERROR:"), e.Message)
	if loc.Line > 0 && loc.Column == 0 {
		// The statement the error happened in (a runtime error has no position).
		fmt.Fprintf(w, "LINE %d: %s\n", loc.Line, loc.Text)
		if e.Statements > 1 {
			fmt.Fprintf(w, "(in statement %d of %d, which starts there)\n", e.Statement, e.Statements)
		}
	}
	if loc.Line > 0 && loc.Column > 0 {
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
	if e.Context != "" {
		fmt.Fprintf(w, "CONTEXT:  %s\n", strings.ReplaceAll(e.Context, "\n", "\n          "))
	}
	hint := e.Hint
	if h, ok := o.cliHint(e, e.Code); ok {
		hint = h
	}
	if hint != "" {
		fmt.Fprintf(w, "HINT:  %s\n", hint)
	}
	if e.Code == "53200" {
		fmt.Fprint(w, "The transaction ran out of the server's shared lock table: it holds a lock on every object it creates until it commits. "+
			"Let the engine size transactions for this server (--segment-size auto, the default), apply fewer migrations per transaction (--segment-size N), "+
			"or raise max_locks_per_transaction (needs a restart).\n")
	}
	what := fmt.Sprintf("Migration %d (%s)", e.Version, e.Name)
	if e.Repeatable {
		what = fmt.Sprintf("Repeatable migration %s", e.Name)
	}
	switch {
	case e.Rollback:
		fmt.Fprintf(w, "Rolling back version %d (%s) failed in its recorded down SQL; nothing was rolled back: the database is still at version %d.\n",
			e.Version, e.Name, e.CurrentVersion)
	case e.NonTransactional:
		if e.Blocked != "" {
			fmt.Fprintf(w, "pgmig cancelled statement %d: %s; it needs a lock that pgmig's own history lock holds, so it could never finish. "+
				"Leave pgmig's tables alone in it, or name the tables of a VACUUM/ANALYZE.\n", e.Statement, e.Blocked)
		}
		fmt.Fprintf(w, "Non-transactional migration %d (%s) failed in statement %d of %d: statements before it ran outside a transaction and stay applied; the database is at version %d.\n",
			e.Version, e.Name, e.Statement, e.Statements, e.CurrentVersion)
		fmt.Fprintf(w, "Undo what they did and run `pgmig resolve %d --retry`, or finish the migration by hand and run `pgmig resolve %d --applied`.\n",
			e.Version, e.Version)
	case e.Applied > 0:
		fmt.Fprintf(w, "%s failed and its segment was rolled back; the %s of earlier segments stay applied: the database is at version %d.\n",
			what, plural(e.Applied, "migration", "migrations"), e.CurrentVersion)
	case e.CurrentVersion > 0:
		fmt.Fprintf(w, "%s failed, nothing was applied: the database was left unchanged at version %d.\n", what, e.CurrentVersion)
	case e.CurrentVersion == 0:
		fmt.Fprintf(w, "%s failed, nothing was applied: the database was left unchanged at version 0 (no migrations applied).\n", what)
	default:
		fmt.Fprintf(w, "%s failed, nothing was applied: the database was left unchanged.\n", what)
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
