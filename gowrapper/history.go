package pgmig

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
)

// Outcomes of the history operations (Rollback, Baseline, Repair, Resolve).
const (
	OutcomeRolledBack      Outcome = "rolled_back"      // its recorded down SQL ran, its history row is gone
	OutcomePendingRollback Outcome = "pending_rollback" // a dry run would roll it back
	// OutcomePendingNonTxRollback: its down runs outside a transaction,
	// statement by statement from the client (a dry run says so; Rollback
	// does it).
	OutcomePendingNonTxRollback Outcome = "pending_nontx_rollback"
	OutcomeBaselined            Outcome = "baselined" // recorded as applied without running it
	OutcomeRepaired             Outcome = "repaired"  // its recorded checksum/name/SQL now match the migration
)

// RollbackOpts configures Rollback. A nil *RollbackOpts means defaults.
type RollbackOpts struct {
	// LockTimeout: how long to wait for the history lock. 0 (default):
	// do not wait at all, fail at once with ErrLockTimeout: going down
	// while another migrator is going up is a conflict to report, not to
	// queue behind.
	LockTimeout time.Duration
	// DryRun takes the lock and checks that every version in the range has
	// down SQL; rolls nothing back (OutcomePendingRollback).
	DryRun bool
	// Progress is called as the server starts rolling back each version.
	Progress func(Progress)
	// Notice receives the other notices the down SQL raises.
	Notice func(*pgconn.Notice)
}

// HistoryResult reports what a history operation did: one row per version
// it touched (Rollback, Repair) or per migration it was given (Baseline).
type HistoryResult struct {
	Migrations []MigrationResult `json:"migrations"`
	// Changed counts the rows with the operation's own outcome: rolled
	// back, baselined, repaired.
	Changed int `json:"changed"`
	// Version is the newest applied (or baselined) version afterwards (-1
	// if it could not be read).
	Version  int64         `json:"version"`
	Duration time.Duration `json:"duration_ns"`
}

// Rollback rolls back every applied version above toVersion, newest first,
// by running the down SQL recorded in the history when each was applied: it
// needs no migration files, so it also undoes versions applied by a newer
// release. One transaction: the whole range or nothing. It refuses, naming
// them, when a version in the range has no down SQL (ErrIrreversible), and
// fails fast when another migrator holds the lock (ErrLockTimeout) unless
// opts.LockTimeout allows a wait. toVersion 0 rolls back everything.
//
// A failing down SQL gives a *MigrationError (Rollback set, no file
// location: the SQL comes from the history).
func (c *Client) Rollback(ctx context.Context, toVersion int64, opts *RollbackOpts) (*HistoryResult, error) {
	if opts == nil {
		opts = &RollbackOpts{}
	}
	op := fmt.Sprintf("rolling back to version %d", toVersion)
	start := time.Now()
	conn, release, err := c.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	if err := c.verifyEngine(ctx, conn); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	route := newNoticeRoute(opts.Progress, opts.Notice, nil)
	defer attachRoute(conn.PgConn(), route)()
	// The engine takes the lock (failing fast by default: going down while
	// another migrator goes up is a conflict to report, not to queue
	// behind), and rolls back newest first until a non-transactional
	// version, whose down this client runs; then the engine goes on.
	done := map[int64]MigrationResult{}
	for {
		route.reset()
		rows, err := conn.Query(ctx, `select version, name, outcome, duration, applied_at from pgmig.migrate_rollback($1::bigint,
			lock_timeout => $2::interval, dry_run => $3::boolean, client_info => $4::text, notices => $5::text,
			stop_before_non_transactional => true, scope => $6::text)`,
			pgx.QueryExecModeExec, toVersion, rollbackLockTimeout(opts.LockTimeout), opts.DryRun, c.config.ClientInfo, dataNotices(route), c.scope())
		var results []MigrationResult
		if err == nil {
			results, err = scanResults(rows, nil)
		}
		if err != nil {
			return nil, withApplied(c.historyError(ctx, conn, op, route, err), len(done))
		}
		var next *MigrationResult
		for i, r := range results {
			if r.Outcome == OutcomeRolledBack {
				done[r.Version] = r
			}
			if r.Outcome == OutcomePendingNonTxRollback && next == nil && !opts.DryRun {
				next = &results[i]
			}
		}
		if next == nil {
			for i, r := range results {
				if d, ok := done[r.Version]; ok {
					results[i] = d
				}
			}
			for v, d := range done {
				if !containsVersion(results, v) {
					results = append(results, d)
				}
			}
			sort.Slice(results, func(i, j int) bool { return results[i].Version > results[j].Version })
			return c.historyResult(ctx, conn, results, start, OutcomeRolledBack), nil
		}
		r, err := c.rollbackNonTransactional(ctx, conn, next.Version, next.Name, opts, route)
		if err != nil {
			return nil, withApplied(err, len(done))
		}
		done[r.Version] = r
	}
}

func containsVersion(results []MigrationResult, v int64) bool {
	for _, r := range results {
		if r.Version == v {
			return true
		}
	}
	return false
}

// rollbackLockTimeout: 0 means do not wait.
func rollbackLockTimeout(d time.Duration) any {
	if d <= 0 {
		return "0"
	}
	return intervalArg(d)
}

// dataNotices is the engine's notices mode for a call: progress as data
// when someone takes it, else none (failures still come with data).
func dataNotices(route *noticeRoute) string {
	if route.wantsNotices() {
		return "json"
	}
	return "none"
}

// scanResults reads rows of the engine's (version, name, outcome,
// duration, applied_at) results, naming the files of migrations.
func scanResults(rows pgx.Rows, migrations []*Migration) ([]MigrationResult, error) {
	defer rows.Close()
	var results []MigrationResult
	for rows.Next() {
		var r MigrationResult
		var d pgtype.Interval
		if err := rows.Scan(&r.Version, &r.Name, &r.Outcome, &d, &r.AppliedAt); err != nil {
			return nil, err
		}
		r.Duration = intervalDuration(d)
		results = append(results, r)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	addFiles(results, migrations)
	return results, nil
}

// historyError: a down SQL that failed becomes a *MigrationError naming the
// version the engine's PM010 data names; a connection lost while the engine
// ran may have committed (the call is one transaction).
func (c *Client) historyError(ctx context.Context, conn *pgx.Conn, op string, route *noticeRoute, err error) error {
	if connectionLost(conn, err) {
		return &ConnectionLostError{Op: op, OutcomeUnknown: !pgconn.SafeToRetry(err), Err: err}
	}
	var pgErr *pgconn.PgError
	failure, _ := route.failed()
	if !errors.As(err, &pgErr) || strings.HasPrefix(pgErr.Code, "PM") || failure == nil {
		return engineError(op, err)
	}
	merr := &MigrationError{
		Version: failure.Version, Name: failure.Name,
		Code: pgErr.Code, Message: pgErr.Message, Detail: pgErr.Detail, Hint: pgErr.Hint,
		Rollback: true, PgError: pgErr,
	}
	merr.CurrentVersion = c.currentVersion(ctx, conn)
	return merr
}

// BaselineOpts configures Baseline. A nil *BaselineOpts means defaults.
type BaselineOpts struct {
	// LockTimeout: wait at most this long for the history lock (0: the
	// server's lock_timeout, by default forever).
	LockTimeout time.Duration
}

// Baseline adopts an existing database, built by hand or by another tool:
// it records the migrations up to version as applied without running
// them, with their checksums, SQL and down SQL (so later rollbacks and drift
// checks work). It refuses (ErrDrift) when the history already has versions
// above version, or recorded versions at or below it that differ from the
// migrations. Later pushes apply only what comes after version.
func (c *Client) Baseline(ctx context.Context, migrations []*Migration, version int64, opts *BaselineOpts) (*HistoryResult, error) {
	if opts == nil {
		opts = &BaselineOpts{}
	}
	op := fmt.Sprintf("baselining at version %d", version)
	return c.historyCall(ctx, op, migrations, OutcomeBaselined, `select version, name, outcome, duration, applied_at from
		pgmig.migrate_baseline($1::jsonb, $2::bigint, lock_timeout => $3::interval, client_info => $4::text, scope => $5::text)`,
		version, intervalArg(opts.LockTimeout), c.config.ClientInfo, c.scope())
}

// RepairOpts configures Repair. A nil *RepairOpts means defaults.
type RepairOpts struct {
	// Versions to repair; empty: every applied version whose checksum or
	// name differs from the migrations. Each must be applied and among the
	// migrations (else ErrInvalidBatch).
	Versions []int64
	// LockTimeout: wait at most this long for the history lock (0: the
	// server's lock_timeout, by default forever).
	LockTimeout time.Duration
}

// Repair records deliberate edits of applied migrations: their checksum,
// name, SQL and down SQL in the history become the migrations' own, and the
// old values are kept in pgmig.audit with when, by whom and from where.
// Nothing is executed.
func (c *Client) Repair(ctx context.Context, migrations []*Migration, opts *RepairOpts) (*HistoryResult, error) {
	if opts == nil {
		opts = &RepairOpts{}
	}
	var versions any
	if len(opts.Versions) > 0 {
		versions = opts.Versions
	}
	return c.historyCall(ctx, "repairing the history", migrations, OutcomeRepaired, `select version, name, outcome, duration, applied_at from
		pgmig.migrate_repair($1::jsonb, $2::bigint[], lock_timeout => $3::interval, client_info => $4::text, scope => $5::text)`,
		versions, intervalArg(opts.LockTimeout), c.config.ClientInfo, c.scope())
}

// historyCall runs a history function whose first argument is the batch;
// the engine takes the lock.
func (c *Client) historyCall(ctx context.Context, op string, migrations []*Migration, changed Outcome, query string, args ...any) (*HistoryResult, error) {
	start := time.Now()
	conn, release, err := c.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	if err := c.verifyEngine(ctx, conn); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	batch, err := Batch(migrations)
	if err != nil {
		return nil, fmt.Errorf("%s: encoding batch: %w", op, err)
	}
	rows, err := conn.Query(ctx, query, append([]any{pgx.QueryExecModeExec, string(batch)}, args...)...)
	var results []MigrationResult
	if err == nil {
		results, err = scanResults(rows, migrations)
	}
	if err != nil {
		if connectionLost(conn, err) {
			return nil, &ConnectionLostError{Op: op, OutcomeUnknown: !pgconn.SafeToRetry(err), Err: err}
		}
		return nil, engineError(op, err)
	}
	return c.historyResult(ctx, conn, results, start, changed), nil
}

func (c *Client) historyResult(ctx context.Context, conn *pgx.Conn, results []MigrationResult, start time.Time, changed Outcome) *HistoryResult {
	res := &HistoryResult{Migrations: results}
	if res.Migrations == nil {
		res.Migrations = []MigrationResult{}
	}
	for _, r := range results {
		if r.Outcome == changed {
			res.Changed++
		}
	}
	res.Version = c.currentVersion(ctx, conn)
	res.Duration = time.Since(start)
	return res
}

// ResolveAction says how an interrupted non-transactional migration was
// dealt with.
type ResolveAction string

const (
	// ResolveRetry: the operator undid what its completed statements did
	// (e.g. dropped the INVALID index a failed CREATE INDEX CONCURRENTLY
	// left); the next push runs it again from its first statement.
	ResolveRetry ResolveAction = "retry"
	// ResolveApplied: the operator finished it by hand; it is recorded as
	// applied.
	ResolveApplied ResolveAction = "applied"
)

// ResolveOpts configures Resolve. A nil *ResolveOpts means defaults.
type ResolveOpts struct {
	// LockTimeout: how long to wait for the history lock (0: fail at once
	// with ErrLockTimeout).
	LockTimeout time.Duration
}

// Resolve ends the refusal (ErrInterrupted, PM009) that follows a
// non-transactional migration interrupted part-way; audited in pgmig.audit.
// The result's single row has OutcomeApplied (ResolveApplied) or
// OutcomePending (ResolveRetry).
func (c *Client) Resolve(ctx context.Context, version int64, action ResolveAction, opts *ResolveOpts) (*HistoryResult, error) {
	if opts == nil {
		opts = &ResolveOpts{}
	}
	op := fmt.Sprintf("resolving interrupted version %d (%s)", version, action)
	start := time.Now()
	conn, release, err := c.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	if err := c.verifyEngine(ctx, conn); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	rows, err := conn.Query(ctx, `select version, name, outcome, duration, applied_at from pgmig.migrate_resolve($1::bigint, $2::text,
		lock_timeout => $3::interval, client_info => $4::text, scope => $5::text)`, pgx.QueryExecModeExec,
		version, string(action), rollbackLockTimeout(opts.LockTimeout), c.config.ClientInfo, c.scope())
	var results []MigrationResult
	if err == nil {
		results, err = scanResults(rows, nil)
	}
	if err != nil {
		if connectionLost(conn, err) {
			return nil, &ConnectionLostError{Op: op, OutcomeUnknown: !pgconn.SafeToRetry(err), Err: err}
		}
		return nil, engineError(op, err)
	}
	res := c.historyResult(ctx, conn, results, start, "")
	res.Changed = len(results)
	return res, nil
}

// TernVersion reads the version recorded by tern in its version table
// (tern's default: public.schema_version, one row, column version), e.g. to
// Baseline a database that tern migrated. table is "name" or
// "schema.name"; "" means public.schema_version.
func (c *Client) TernVersion(ctx context.Context, table string) (int64, error) {
	if table == "" {
		table = "public.schema_version"
	}
	conn, release, err := c.acquire(ctx)
	if err != nil {
		return 0, err
	}
	defer release()
	ident := pgx.Identifier(strings.Split(table, "."))
	var v int64
	if err := conn.QueryRow(ctx, "select version from "+ident.Sanitize(), pgx.QueryExecModeExec).Scan(&v); err != nil {
		return 0, fmt.Errorf("reading tern's version table %s: %w", table, err)
	}
	return v, nil
}
