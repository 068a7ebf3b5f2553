package pgmig

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// runSQL calls the engine for a whole batch (docs/sql-api.md, "migrate_run").
// Every argument is cast to the parameter's exact type, so no overload
// another role might create can be a better match (docs/sql-api.md,
// "Calling the API safely"). The engine stops before a non-transactional
// migration instead of refusing the batch: Push runs it and calls again.
const runSQL = `call pgmig.migrate_run($1::jsonb, target_version => $2::bigint, lock_timeout => $3::interval,
	allow_out_of_order => $4::boolean, allow_missing => $5::boolean, dry_run => $6::boolean,
	client_info => $7::text, lock_budget => $8::integer, max_per_transaction => $9::integer,
	stop_before_non_transactional => true, notices => $10::text, details => true, scope => $11::text,
	ddl_lock_timeout => $12::interval)`

// runResult is migrate_run's result document.
type runResult struct {
	Applied         int   `json:"applied"`
	Pending         int   `json:"pending"`
	Transactions    int   `json:"transactions"`
	LockBudget      int   `json:"lock_budget"`
	LockBudgetStops int   `json:"lock_budget_stops"`
	Version         int64 `json:"version"`
	Stopped         *struct {
		Reason  string `json:"reason"`
		Version int64  `json:"version"`
		Name    string `json:"name"`
	} `json:"stopped"`
	Migrations []MigrationResult `json:"-"`
	Raw        []struct {
		Version    int64      `json:"version"`
		Repeatable bool       `json:"repeatable"`
		Name       string     `json:"name"`
		Label      string     `json:"label"`
		Outcome    Outcome    `json:"outcome"`
		DurationUS *int64     `json:"duration_us"`
		AppliedAt  *time.Time `json:"applied_at"`
	} `json:"migrations"`
}

// run is one call of migrate_run on conn, in autocommit (the procedure
// commits by itself).
func (c *Client) run(ctx context.Context, conn *pgx.Conn, batch []byte, opts *PushOpts, route *noticeRoute) (*runResult, error) {
	route.reset()
	var budget, perTx any
	switch {
	case opts.SegmentSize == SegmentAll:
		budget = 0 // none: one transaction, whatever it takes
	case opts.SegmentSize > 0:
		perTx = opts.SegmentSize
	}
	notices := "none"
	if route.wantsNotices() {
		notices = "json"
	}
	var doc []byte
	err := conn.QueryRow(ctx, runSQL, pgx.QueryExecModeExec, string(batch), nullZero(opts.TargetVersion),
		intervalArg(opts.LockTimeout), opts.AllowOutOfOrder, opts.AllowMissing, opts.DryRun,
		c.config.ClientInfo, budget, perTx, notices, c.scope(), durationArg(opts.DDLLockTimeout)).Scan(&doc)
	if err != nil {
		return nil, err
	}
	var r runResult
	if err := json.Unmarshal(doc, &r); err != nil {
		return nil, fmt.Errorf("reading the engine's result: %w", err)
	}
	r.Migrations = make([]MigrationResult, len(r.Raw))
	for i, m := range r.Raw {
		r.Migrations[i] = MigrationResult{Version: m.Version, Repeatable: m.Repeatable, Name: m.Name, Label: m.Label, Outcome: m.Outcome, AppliedAt: m.AppliedAt}
		if m.DurationUS != nil {
			r.Migrations[i].Duration = time.Duration(*m.DurationUS) * time.Microsecond
		}
	}
	return &r, nil
}

// intervalArg is d as an interval parameter (nil: NULL, the engine's
// default).
func intervalArg(d time.Duration) any {
	if d <= 0 {
		return nil
	}
	return fmt.Sprintf("%d microseconds", d.Microseconds())
}

// durationArg is d as an interval parameter, 0 included (nil: NULL).
func durationArg(d time.Duration) any {
	if d <= 0 {
		return nil
	}
	return fmt.Sprintf("%d milliseconds", ceilMillis(d))
}

func nullZero(v int64) any {
	if v == 0 {
		return nil
	}
	return v
}

// pushError turns a failed engine call into what the caller can act on:
// a *ConnectionLostError, a *MigrationError naming the failing migration
// (from the engine's PM010 data), a *DriftError (from its PM002 data), or
// pgmig's sentinel errors. committed is how many migrations earlier calls
// of the same push applied.
func (c *Client) pushError(ctx context.Context, conn *pgx.Conn, migrations []*Migration, route *noticeRoute, committed int, err error) error {
	if connectionLost(conn, err) {
		// Nothing was sent: nothing of this call was applied. Otherwise the
		// engine commits by itself and may have committed part of it.
		return &ConnectionLostError{Op: "pushing migrations", OutcomeUnknown: !pgconn.SafeToRetry(err), Applied: committed, Err: err}
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return fmt.Errorf("pushing migrations: %w", err)
	}
	failure, drift := route.failed()
	if pgErr.Code == codeDrift && drift != nil {
		return fmt.Errorf("pushing migrations: %w", newDriftError(pgErr, drift))
	}
	if pgErr.Code == codeBlocked {
		// The engine's account of who was in the way, as data (its DETAIL
		// is JSON: this package always asks for notices 'json' or 'none').
		if b, berr := newBlockedError([]byte(pgErr.Detail), nil, pgErr); berr == nil {
			if m := migrationByVersion(migrations, b.Version); m != nil {
				b.File = m.File
			}
			b.Applied += committed
			return b
		}
	}
	var m *Migration
	if failure != nil {
		m = failure.migration(migrations)
		committed += failure.Committed
	}
	if k, ok := route.running(); m == nil && pgErr.Code == codeQueryCanceled && ok {
		// Cancelled (statement_timeout, a cancel request): PL/pgSQL cannot
		// catch that, so no PM010 came; the last progress notice named the
		// migration that was running.
		m = k.migration(migrations)
	}
	if m == nil && !strings.HasPrefix(pgErr.Code, "PM") {
		// No PM010 data reached us (a connection without HandleNotice, or a
		// session that filters warnings): the migration whose SQL the
		// server reports as the internal query.
		m = migrationBySQL(migrations, pgErr.InternalQuery)
	}
	if m == nil {
		return withApplied(engineError("pushing migrations", err), committed)
	}
	merr := &MigrationError{
		Version: m.Version, Repeatable: m.Repeatable, Name: m.Name, File: m.File,
		Code: pgErr.Code, Message: pgErr.Message, Detail: pgErr.Detail, Hint: pgErr.Hint,
		CurrentVersion: -1, Applied: committed,
		PgError: pgErr,
	}
	starts := statementStarts(m.SQL)
	if pos := sqlPosition(m, starts, pgErr); pos > 0 {
		if loc, ok := m.Locate(pos); ok {
			merr.Location = loc
		}
	}
	if n := statementOf(pgErr.InternalQuery); n > 0 && n <= len(starts) && merr.Statement == 0 {
		merr.Statement, merr.Statements = n, len(starts)
	}
	if failure != nil && failure.migration(migrations) == m {
		switch {
		case failure.Statement > 0 && failure.Statement <= len(starts):
			merr.Statement, merr.Statements = failure.Statement, len(starts)
		case len(starts) == 1:
			// One statement, run as the whole migration: that one.
			merr.Statement, merr.Statements = 1, 1
		}
		merr.Context = failure.Context
	}
	if merr.Location.Line == 0 && merr.Statement > 0 {
		// A runtime error has no position: the failing statement's line
		// (Column 0: no column).
		if loc, ok := m.Locate(starts[merr.Statement-1] + 1); ok {
			loc.Column, loc.Expanded = 0, false
			merr.Location = loc
		}
	}
	if merr.Location.File == "" {
		merr.Location.File = m.File
	}
	// The failed transaction was rolled back: the newest applied version now
	// is the one before it (barring a concurrent migrator).
	merr.CurrentVersion = c.currentVersion(ctx, conn)
	return merr
}

// withApplied records, on the error's *MigrationError or
// *ConnectionLostError, how many migrations earlier steps committed.
func withApplied(err error, applied int) error {
	var merr *MigrationError
	if errors.As(err, &merr) {
		merr.Applied += applied
	}
	var lost *ConnectionLostError
	if errors.As(err, &lost) {
		lost.Applied += applied
	}
	return err
}

func isConnectionLostError(err error) bool {
	var lost *ConnectionLostError
	return errors.As(err, &lost)
}

// currentVersion is the newest applied version, -1 if it cannot be read.
func (c *Client) currentVersion(ctx context.Context, conn *pgx.Conn) int64 {
	if ctx.Err() != nil || conn.IsClosed() {
		return -1
	}
	var v int64
	if err := conn.QueryRow(ctx, `select coalesce(max(version), 0) from pgmig.migrate_status($1::text) where state in ('applied', 'baseline')`,
		pgx.QueryExecModeExec, c.scope()).Scan(&v); err != nil {
		return -1
	}
	return v
}

// migrationBySQL: the migration whose SQL is (or contains, or is
// contained in) the text the server reports as the failing internal query.
func migrationBySQL(migrations []*Migration, query string) *Migration {
	if query == "" {
		return nil
	}
	if n := statementOf(query); n > 0 {
		// The engine ran statement n of the migration on its own: the
		// migration whose statement n that is.
		stmt := strings.TrimSpace(statementMarker.ReplaceAllString(query, ""))
		for _, m := range migrations {
			if strings.TrimSpace(statementText(m.SQL, n)) == stmt {
				return m
			}
		}
		return nil
	}
	for _, m := range migrations {
		if m.SQL == query {
			return m
		}
	}
	for _, m := range migrations {
		if strings.Contains(query, m.SQL) || strings.Contains(m.SQL, query) {
			return m
		}
	}
	return nil
}

// statementMarker ends each statement the engine runs on its own
// (_execute_as_caller): `/*pgmig:statement N*/`.
var statementMarker = regexp.MustCompile(`\n/\*pgmig:statement ([0-9]+)\*/$`)

// statementOf is N when query is a statement the engine ran on its own.
func statementOf(query string) int {
	m := statementMarker.FindStringSubmatch(query)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// statementText is statement n (1-based) of sql as the engine cuts it at
// statementStarts (the first from the beginning), "" if there is none.
func statementText(sql string, n int) string {
	starts := statementStarts(sql)
	if n < 1 || n > len(starts) {
		return ""
	}
	runes := []rune(sql)
	from, to := starts[n-1], len(runes)
	if n == 1 {
		from = 0
	}
	if n < len(starts) {
		to = starts[n]
	}
	return string(runes[from:to])
}

// sqlPosition: the error's 1-based character position in m.SQL, from the
// internal position (the migration's SQL as executed by the engine);
// starts is statementStarts(m.SQL).
func sqlPosition(m *Migration, starts []int, pgErr *pgconn.PgError) int {
	if pgErr.InternalPosition <= 0 || pgErr.InternalQuery == "" {
		return 0
	}
	pos := int(pgErr.InternalPosition)
	if pgErr.InternalQuery == m.SQL {
		return pos
	}
	// The engine ran statement n alone (the batch's "statements"): it starts
	// there, or, the first one, at the beginning of the SQL.
	if n := statementOf(pgErr.InternalQuery); n > 0 {
		if n <= len(starts) {
			if n == 1 {
				return pos
			}
			return starts[n-1] + pos
		}
	}
	// The engine ran a statement of the migration, or the migration inside
	// a larger text: shift by where one sits in the other, in characters.
	if i := strings.Index(m.SQL, pgErr.InternalQuery); i >= 0 {
		return pos + len([]rune(m.SQL[:i]))
	}
	if i := strings.Index(pgErr.InternalQuery, m.SQL); i >= 0 {
		p := pos - len([]rune(pgErr.InternalQuery[:i]))
		if p >= 1 {
			return p
		}
	}
	return 0
}
