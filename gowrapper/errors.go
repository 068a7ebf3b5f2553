package pgmig

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Loading errors. They arrive wrapped in a *LoadError naming the file.
var (
	ErrNoMigrations     = errors.New("no migration files found")
	ErrDuplicateVersion = errors.New("duplicate migration version")
	ErrMissingVersion   = errors.New("missing migration version")
	ErrEmptyMigration   = errors.New("empty migration")
	ErrTemplate         = errors.New("template error")
	ErrInvalidFileName  = errors.New("invalid migration file name")
	// ErrInvalidText: a migration file (or its expanded up or down SQL) is
	// not valid UTF-8 or holds a NUL byte, neither of which PostgreSQL text
	// can store. The message names the line and column of the first bad
	// byte.
	ErrInvalidText = errors.New("invalid text")
)

// Errors from the engine, matched with errors.Is. The *pgconn.PgError the
// server sent stays reachable with errors.As.
var (
	// ErrInvalidBatch: the engine refused the batch or an argument (PM001).
	ErrInvalidBatch = errors.New("invalid batch")
	// ErrDrift: an applied migration changed, is missing from the files, or a
	// pending one is older than the newest applied one (PM002).
	ErrDrift = errors.New("migrations drifted from the database history")
	// ErrOutOfOrder: a pending migration is older than the newest applied
	// one (a kind of drift: matches together with ErrDrift).
	ErrOutOfOrder = errors.New("pending migration older than the newest applied one")
	// ErrLockTimeout: another migrator held the history lock for longer than
	// the lock timeout (PM003). The PgError's Detail names the holder.
	ErrLockTimeout = errors.New("timed out waiting for the migration lock")
	// ErrTransactionContext: migrate_apply was called in a REPEATABLE READ or
	// SERIALIZABLE or read-only transaction, or on a standby (PM004).
	ErrTransactionContext = errors.New("wrong transaction context for migrating")
	// ErrNotRunnable: a migration cannot run inside migrate_apply: it uses
	// transaction control, or it is marked `---- tern: disable-tx ----`
	// (PM005): `pgmig push` runs the latter from the client.
	ErrNotRunnable = errors.New("migration cannot run inside migrate_apply")
	// ErrInterrupted: a non-transactional migration was interrupted or
	// failed part-way (PM009): every migrator refuses to continue until an
	// operator resolves it with migrate_resolve (the error's DETAIL and HINT
	// say what completed and what to run).
	ErrInterrupted = errors.New("a non-transactional migration was interrupted")
	// ErrIrreversible: a rollback reached a migration recorded without down
	// SQL (PM007); the error names it, nothing was rolled back.
	ErrIrreversible = errors.New("migration has no down SQL")
	// ErrLockTableFull: a transaction ran out of shared lock table space
	// (SQLSTATE 53200, "out of shared memory"): too many migrations in one
	// transaction for the server's max_locks_per_transaction. Matched by
	// the *MigrationError; use a smaller PushOpts.SegmentSize, or raise
	// max_locks_per_transaction (restart).
	ErrLockTableFull = errors.New("transaction ran out of lock table space (SQLSTATE 53200)")
	// ErrEngineNotInstalled: the pgmig engine is not installed in the
	// database (or not visible to this role): run `pgmig install`.
	ErrEngineNotInstalled = errors.New("pgmig engine is not installed in this database (run `pgmig install`)")
	// ErrPermissionDenied: the engine is installed but this role lacks
	// privileges on it (SQLSTATE 42501 on schema pgmig, its tables or the
	// API functions). The README's "Privileges" section has the GRANTs.
	ErrPermissionDenied = errors.New("permission denied: this role lacks privileges on the pgmig engine " +
		"(grant them as in the README's \"Privileges\" section: USAGE on schema pgmig, SELECT/INSERT/UPDATE/DELETE on its tables, EXECUTE on its functions and the migrate_* API)")
	// ErrUnsupportedEngine: the installed engine's version is not the one
	// this wrapper speaks, or the engine refused the server (PM006).
	ErrUnsupportedEngine = errors.New("unsupported pgmig engine version")
	// ErrBlocked: a migration waited longer than its DDL lock timeout for a
	// lock another session held (PM017), and gave up; matched by a
	// *BlockedError, which names the relation and the sessions in the way.
	ErrBlocked = errors.New("a migration gave up waiting for a lock (DDL lock timeout)")
)

// pgmig's own SQLSTATEs (docs/sql-api.md).
const (
	codeProgress        = "PM000"
	codeInvalidBatch    = "PM001"
	codeDrift           = "PM002"
	codeLockTimeout     = "PM003"
	codeTxContext       = "PM004"
	codeNotRunnable     = "PM005"
	codeEngineVersion   = "PM006"
	codeIrreversible    = "PM007"
	codeInterrupted     = "PM009"
	codeMigrationFailed = "PM010"
	codeBlocked         = "PM017"

	codeLockNotAvailable = "55P03" // PostgreSQL's lock_not_available: lock_timeout expired
	codeQueryCanceled    = "57014" // statement_timeout, or a cancel request

	codeOutOfSharedMemory     = "53200" // PostgreSQL's out_of_memory class: lock table full
	codeInsufficientPrivilege = "42501"
)

var sentinelByCode = map[string]error{
	codeInvalidBatch:  ErrInvalidBatch,
	codeDrift:         ErrDrift,
	codeLockTimeout:   ErrLockTimeout,
	codeTxContext:     ErrTransactionContext,
	codeNotRunnable:   ErrNotRunnable,
	codeEngineVersion: ErrUnsupportedEngine,
	codeInterrupted:   ErrInterrupted,
	codeIrreversible:  ErrIrreversible,
}

// LoadError is a problem with one migration file.
type LoadError struct {
	File string
	Err  error
}

func (e *LoadError) Error() string { return e.File + ": " + e.Err.Error() }
func (e *LoadError) Unwrap() error { return e.Err }

// EngineVersionError: the installed engine is not the version this wrapper
// supports. It matches ErrUnsupportedEngine with errors.Is.
type EngineVersionError struct {
	Installed string // version installed in the database
	Supported string // version embedded in this binary
}

func (e *EngineVersionError) Error() string {
	if versionLess(e.Supported, e.Installed) {
		return fmt.Sprintf("pgmig engine %s is installed, newer than this pgmig supports (%s): use a pgmig release matching the engine (`pgmig install` with this binary would not downgrade it)", e.Installed, e.Supported)
	}
	return fmt.Sprintf("pgmig engine %s is installed, this pgmig supports %s: run `pgmig install` to upgrade the engine", e.Installed, e.Supported)
}

// versionLess compares dotted numeric versions (1.10.0 > 1.9.0).
func versionLess(a, b string) bool {
	pa, pb := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < max(len(pa), len(pb)); i++ {
		var x, y int
		if i < len(pa) {
			x, _ = strconv.Atoi(pa[i])
		}
		if i < len(pb) {
			y, _ = strconv.Atoi(pb[i])
		}
		if x != y {
			return x < y
		}
	}
	return false
}

func (e *EngineVersionError) Is(target error) bool { return target == ErrUnsupportedEngine }

// MigrationError is a failing migration: PostgreSQL's error for it, where in
// the file it happened, and what state the database was left in.
// Unwrap returns the *pgconn.PgError.
type MigrationError struct {
	Version int64
	// Repeatable: the failing migration is a repeatable one (Version 0).
	Repeatable bool
	Name       string
	File       string
	// Location of the error in File, when the server reported a position;
	// for an error without one (a runtime error), the line where the
	// failing statement starts, with Column 0, when the statement is known
	// (Line 0 otherwise).
	Location Location
	// Code (SQLSTATE), Message, Detail, Hint: PostgreSQL's own.
	Code    string
	Message string
	Detail  string
	Hint    string
	// CurrentVersion is the newest applied version after the failure: the
	// failed transaction changed nothing (0: nothing applied; -1: unknown).
	CurrentVersion int64
	// Applied is how many migrations earlier transactions and steps of the
	// same push applied and committed (commit-after markers, the lock
	// budget, PushOpts.SegmentSize, non-transactional migrations); 0 for a
	// single-transaction push, which leaves the database unchanged.
	Applied int
	// NonTransactional: the migration runs statement by statement outside a
	// transaction (`---- tern: disable-tx ----`); statements 1 to
	// Statement-1 of Statements completed and stay applied, and the engine
	// refuses further pushes (ErrInterrupted) until migrate_resolve.
	NonTransactional bool
	// Statement (1-based) of Statements is the one that failed, when known:
	// always for a non-transactional migration; for another one with more
	// than one statement when the engine ran them one by one (every push
	// does). Location is then at least the statement's first line.
	Statement  int
	Statements int
	// Context is the error's CONTEXT inside the migration: the frames of a
	// DO block or a function it called ("PL/pgSQL function
	// inline_code_block line 3 at RAISE"), without pgmig's own.
	Context string
	// Blocked: pgmig cancelled the statement because it waited for a lock
	// the migration's own history lock holder has, a wait that could never
	// end (the engine's description; Code is then 57014).
	Blocked string
	// Rollback: the failing SQL was the down SQL recorded in the history,
	// run by Rollback (File and Location are empty); nothing was rolled
	// back.
	Rollback bool
	PgError  *pgconn.PgError
}

func (e *MigrationError) Error() string {
	if e.Rollback {
		return fmt.Sprintf("error rolling back version %d [%s]: %s (SQLSTATE %s)", e.Version, e.Name, e.Message, e.Code)
	}
	where := ""
	if e.File != "" {
		where = " at " + e.File
	}
	switch {
	case e.Location.Line > 0 && e.Location.Column > 0:
		where = fmt.Sprintf(" at %s:%d:%d", e.File, e.Location.Line, e.Location.Column)
	case e.Location.Line > 0:
		where = fmt.Sprintf(" at %s:%d (statement %d)", e.File, e.Location.Line, e.Statement)
	}
	what := fmt.Sprintf("version %d [%s]", e.Version, e.Name)
	if e.Repeatable {
		what = fmt.Sprintf("repeatable migration [%s]", e.Name)
	}
	if e.Blocked != "" {
		return fmt.Sprintf("error applying %s%s: cancelled: %s (SQLSTATE %s)", what, where, e.Blocked, e.Code)
	}
	return fmt.Sprintf("error applying %s%s: %s (SQLSTATE %s)", what, where, e.Message, e.Code)
}

func (e *MigrationError) Unwrap() error { return e.PgError }

// Is matches ErrLockTableFull for SQLSTATE 53200.
func (e *MigrationError) Is(target error) bool {
	return target == ErrLockTableFull && e.Code == codeOutOfSharedMemory
}

// BlockedError is a migration that waited longer than its DDL lock timeout
// (PushOpts.DDLLockTimeout, or its own `---- pgmig: lock-timeout D ----`)
// for a lock, and gave up: the engine's PM017, with its data (never its
// wording). Nothing of the failing transaction was applied and nothing waits
// any more; Push retries it when PushOpts.Retries allows. It matches
// ErrBlocked; Unwrap gives the *pgconn.PgError.
type BlockedError struct {
	Version int64
	Name    string
	File    string
	// Relation is the relation the engine found locked by others, as the
	// migration names it ("orders", "billing.invoices"); "" when no session
	// held a lock on a relation the migration names any more.
	Relation string
	// LockTimeout is the timeout that ran out.
	LockTimeout time.Duration
	// Blockers are the sessions that held (or queued for) a lock on the
	// migration's relations since before it started waiting, oldest first.
	Blockers []Blocker
	// Applied: migrations earlier transactions and steps of the push
	// committed (they stay applied).
	Applied int
	// NonTransactional: the statement was one of a non-transactional
	// migration's (Statement of Statements); the ones before it stay
	// applied, and pushes refuse (ErrInterrupted) until `pgmig resolve`.
	// Push does not retry it.
	NonTransactional      bool
	Statement, Statements int
	// Attempts is how many times Push tried (1 + the retries it made);
	// MaxAttempts how many it would have.
	Attempts, MaxAttempts int
	PgError               *pgconn.PgError
}

// Blocker is a session in a migration's way (BlockedError, the engine's
// PM017 data). Fields other roles' sessions hide from this role
// (pg_read_all_stats) are empty.
type Blocker struct {
	PID         int    `json:"pid"`
	Application string `json:"application,omitempty"`
	Role        string `json:"role,omitempty"`
	ClientAddr  string `json:"client_addr,omitempty"`
	State       string `json:"state,omitempty"`
	// Since is when its transaction started; StateSince when it entered
	// State.
	Since      *time.Time `json:"since,omitempty"`
	StateSince *time.Time `json:"state_since,omitempty"`
	// Age is how long its transaction had been open when the engine looked.
	Age   time.Duration `json:"age_ns"`
	Query string        `json:"query,omitempty"`
	// Relation and Modes: the lock it held (Granted) or waited for ahead of
	// the migration.
	Relation string   `json:"relation"`
	Modes    []string `json:"modes"`
	Granted  bool     `json:"granted"`
	// Prepared: a prepared transaction (no session; see pg_prepared_xacts),
	// Transaction its virtual transaction id.
	Prepared    bool   `json:"prepared,omitempty"`
	Transaction string `json:"transaction,omitempty"`
}

// String is "pid 4242 (reporting, idle in transaction 40s)": the age is
// its transaction's.
func (b Blocker) String() string {
	if b.Prepared {
		return fmt.Sprintf("a prepared transaction (%s)", b.Transaction)
	}
	var parts []string
	if b.Application != "" {
		parts = append(parts, b.Application)
	}
	state := b.State
	if state == "" {
		state = "state not visible"
	}
	parts = append(parts, state+" "+shortDuration(b.Age))
	return fmt.Sprintf("pid %d (%s)", b.PID, strings.Join(parts, ", "))
}

// shortDuration is d the way people say it: 40s, 2m05s, 1h02m, 350ms.
func shortDuration(d time.Duration) string {
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(time.Second).String()
	case d < time.Hour:
		d = d.Round(time.Second)
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	}
	d = d.Round(time.Minute)
	return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
}

// Describe is "002_add_col.sql blocked on "orders" by pid 4242 (reporting,
// idle in transaction 40s)": the migration, the relation and the oldest
// blocker.
func (e *BlockedError) Describe() string {
	what := e.File
	if what == "" {
		what = fmt.Sprintf("version %d [%s]", e.Version, e.Name)
	}
	if e.NonTransactional {
		what += fmt.Sprintf(" (statement %d of %d)", e.Statement, e.Statements)
	}
	on := "a lock"
	if e.Relation != "" {
		on = strconv.Quote(e.Relation)
	}
	s := fmt.Sprintf("%s blocked on %s", what, on)
	if len(e.Blockers) > 0 {
		s += " by " + e.Blockers[0].String()
		if n := len(e.Blockers) - 1; n > 0 {
			s += fmt.Sprintf(" and %d other session(s)", n)
		}
	}
	return s
}

func (e *BlockedError) Error() string {
	s := fmt.Sprintf("error applying version %d [%s]: %s: gave up after waiting %s for the lock (DDL lock timeout)",
		e.Version, e.Name, e.Describe(), shortDuration(e.LockTimeout))
	if e.Attempts > 1 {
		s += fmt.Sprintf(", %d attempts", e.Attempts)
	}
	return s
}

func (e *BlockedError) Unwrap() error { return e.PgError }

func (e *BlockedError) Is(target error) bool { return target == ErrBlocked }

// blockedReport is the engine's account of who was in a migration's way:
// PM017's DETAIL (notices 'json'/'none') or pgmig.lock_blockers().
type blockedReport struct {
	Version       int64   `json:"version"`
	Name          string  `json:"name"`
	LockTimeoutMS int64   `json:"lock_timeout_ms"`
	Relation      *string `json:"relation"`
	Committed     int     `json:"committed"`
	Blockers      []struct {
		PID         *int       `json:"pid"`
		Application string     `json:"application"`
		Role        string     `json:"role"`
		ClientAddr  string     `json:"client_addr"`
		State       string     `json:"state"`
		Since       *time.Time `json:"since"`
		StateSince  *time.Time `json:"state_since"`
		Seconds     float64    `json:"seconds"`
		Query       string     `json:"query"`
		Relation    string     `json:"relation"`
		Modes       []string   `json:"modes"`
		Granted     bool       `json:"granted"`
		Prepared    bool       `json:"prepared"`
		Transaction string     `json:"transaction"`
	} `json:"blockers"`
}

// newBlockedError reads the engine's report (JSON) into a *BlockedError
// for migration m (nil: the report's version and name).
func newBlockedError(report []byte, m *Migration, pgErr *pgconn.PgError) (*BlockedError, error) {
	var r blockedReport
	if err := json.Unmarshal(report, &r); err != nil {
		return nil, fmt.Errorf("reading the engine's lock-timeout report: %w", err)
	}
	e := &BlockedError{Version: r.Version, Name: r.Name, LockTimeout: time.Duration(r.LockTimeoutMS) * time.Millisecond,
		Applied: r.Committed, PgError: pgErr}
	if m != nil {
		e.Version, e.Name, e.File = m.Version, m.Name, m.File
	}
	if r.Relation != nil {
		e.Relation = *r.Relation
	}
	for _, b := range r.Blockers {
		x := Blocker{Application: b.Application, Role: b.Role, ClientAddr: b.ClientAddr, State: b.State,
			Since: b.Since, StateSince: b.StateSince, Age: time.Duration(b.Seconds * float64(time.Second)),
			Query: b.Query, Relation: b.Relation, Modes: b.Modes, Granted: b.Granted, Prepared: b.Prepared,
			Transaction: b.Transaction}
		if b.PID != nil {
			x.PID = *b.PID
		}
		e.Blockers = append(e.Blockers, x)
	}
	return e, nil
}

// DriftError is the engine's drift report (PM002), every offending version
// sorted by kind, as the engine reported them (data, not the message). It
// matches ErrDrift, and ErrOutOfOrder when OutOfOrder is not empty; Unwrap
// gives the *pgconn.PgError, whose DETAIL has one line per problem. The
// kinds are known when the engine sent them (Push, Plan); an error from
// another call has only the PgError.
type DriftError struct {
	// Changed: applied versions whose SQL (checksum) or name changed
	// (Renamed lists those whose name changed).
	Changed []int64
	Renamed []int64
	// Missing: applied versions absent from the migrations.
	Missing []int64
	// OutOfOrder: pending versions older than the newest applied one.
	OutOfOrder []int64
	PgError    *pgconn.PgError
}

func (e *DriftError) Error() string { return ErrDrift.Error() + ": " + e.PgError.Error() }

func (e *DriftError) Is(target error) bool {
	return target == ErrDrift || target == ErrOutOfOrder && len(e.OutOfOrder) > 0
}

func (e *DriftError) Unwrap() error { return e.PgError }

// newDriftError sorts the engine's drift data by kind.
func newDriftError(pgErr *pgconn.PgError, drift *driftEvent) *DriftError {
	e := &DriftError{PgError: pgErr}
	if drift == nil {
		return e
	}
	for _, d := range drift.Drift {
		e.add(d.Version, d.Kind)
	}
	return e
}

func (e *DriftError) add(v int64, kind string) {
	switch kind {
	case "out_of_order":
		e.OutOfOrder = append(e.OutOfOrder, v)
	case "missing":
		e.Missing = append(e.Missing, v)
	case "renamed":
		e.Renamed = append(e.Renamed, v)
		if !slices.Contains(e.Changed, v) {
			e.Changed = append(e.Changed, v)
		}
	default:
		if !slices.Contains(e.Changed, v) {
			e.Changed = append(e.Changed, v)
		}
	}
}

// engineError turns a pgmig SQLSTATE into its sentinel while keeping the
// PgError reachable; any other error is returned as is.
func engineError(op string, err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		if pgErr.Code == codeDrift {
			return fmt.Errorf("%s: %w", op, newDriftError(pgErr, nil))
		}
		if s, ok := sentinelByCode[pgErr.Code]; ok {
			return fmt.Errorf("%s: %w: %w", op, s, err)
		}
		if isEngineMissing(pgErr) {
			return fmt.Errorf("%s: %w: %w", op, ErrEngineNotInstalled, err)
		}
		if pgErr.Code == codeInsufficientPrivilege {
			return fmt.Errorf("%s: %w: %w", op, ErrPermissionDenied, err)
		}
	}
	return fmt.Errorf("%s: %w", op, err)
}

// isEngineMissing: schema pgmig or an API function does not exist, or is not
// accessible to this role.
func isEngineMissing(pgErr *pgconn.PgError) bool {
	switch pgErr.Code {
	case "3F000", // invalid_schema_name
		"42883": // undefined_function
		return true
	}
	return false
}

// ErrOutcomeUnknown: the connection was lost (or the call interrupted)
// while the server may have been committing: whether the push's last step
// was committed cannot be known from the client. Matched by a
// *ConnectionLostError whose OutcomeUnknown is set. Re-running the push is
// safe: applied migrations are recorded and skipped.
var ErrOutcomeUnknown = errors.New("the connection was lost while the engine ran: how much of the push was committed is unknown")

// ErrConnectionLost: the connection failed (closed, reset, EOF, timeout, or
// the context was cancelled) in the middle of a push. Every
// *ConnectionLostError matches it.
var ErrConnectionLost = errors.New("connection lost during the push")

// ConnectionLostError is a push whose connection failed without an answer
// from the server. It matches ErrConnectionLost, and ErrOutcomeUnknown when
// OutcomeUnknown is set; Unwrap gives the original error (net.Error,
// io.ErrUnexpectedEOF, context.Canceled...).
type ConnectionLostError struct {
	// Op is what the push was doing.
	Op string
	// OutcomeUnknown: the failure happened while the engine ran (it
	// commits by itself, transaction by transaction), or while the COMMIT
	// of a non-transactional step was sent: some of it may be committed.
	// When false nothing of the call was sent, or its transaction was never
	// committed: nothing of that step is applied.
	OutcomeUnknown bool
	// Applied is how many migrations earlier steps of the same push applied
	// and committed (segments, commit-after, non-transactional migrations).
	Applied int
	// Version, when not 0: the non-transactional migration that was running
	// (its completed statements stay applied; the engine records how far it
	// got).
	Version int64
	Err     error
}

func (e *ConnectionLostError) Error() string {
	what := "connection lost before the COMMIT was sent (the server rolls back the open transaction: nothing of it was applied)"
	switch {
	case e.Version != 0 && e.OutcomeUnknown:
		what = fmt.Sprintf("connection lost while committing non-transactional version %d: whether it was recorded as applied is unknown", e.Version)
	case e.Version != 0:
		what = fmt.Sprintf("connection lost while non-transactional version %d ran: the statements it completed stay applied", e.Version)
	case e.OutcomeUnknown:
		what = "connection lost while the engine ran (it commits by itself): how much was committed is unknown; pushing again is safe"
	}
	if e.Applied > 0 {
		what += fmt.Sprintf("; %d migration(s) committed by earlier steps stay applied", e.Applied)
	}
	return fmt.Sprintf("%s: %s: %v", e.Op, what, e.Err)
}

func (e *ConnectionLostError) Unwrap() error { return e.Err }

func (e *ConnectionLostError) Is(target error) bool {
	return target == ErrConnectionLost || target == ErrOutcomeUnknown && e.OutcomeUnknown
}

// connectionLost reports whether err, from a call on conn, is a failure of
// the connection itself rather than an answer of the server to the
// statement: not a *pgconn.PgError, and the connection is closed or the
// error is a network one or a cancelled context (pgx closes the connection
// then); or a FATAL/PANIC error that ended the session (terminated backend,
// server shutdown), which ends its transaction like a lost connection.
func connectionLost(conn *pgx.Conn, err error) bool {
	if err == nil {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return (pgErr.Severity == "FATAL" || pgErr.Severity == "PANIC") && conn.IsClosed()
	}
	var netErr net.Error
	return conn.IsClosed() || errors.As(err, &netErr) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || pgconn.Timeout(err)
}
