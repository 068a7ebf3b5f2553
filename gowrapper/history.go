package pgmig

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Outcomes of the history operations (Rollback, Baseline, Repair, Resolve).
const (
	OutcomeRolledBack      Outcome = "rolled_back"      // its recorded down SQL ran, its history row is gone
	OutcomePendingRollback Outcome = "pending_rollback" // a dry run would roll it back
	OutcomeBaselined       Outcome = "baselined"        // recorded as applied without running it
	OutcomeRepaired        Outcome = "repaired"         // its recorded checksum/name/SQL now match the migration
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
	route := &noticeRoute{progress: opts.Progress, notice: opts.Notice}
	defer attachRoute(conn.PgConn(), route)()
	results, err := c.lockedCall(ctx, conn, op, failFast(opts.LockTimeout), `select version, name, outcome, duration, applied_at from `+
		c.fn("migrate_rollback")+`($1, dry_run => $2, client_info => $3)`, nil, toVersion, opts.DryRun, c.config.ClientInfo)
	if err != nil {
		return nil, c.rollbackError(ctx, conn, op, route, err)
	}
	return c.historyResult(ctx, conn, results, start, OutcomeRolledBack), nil
}

// failFast: 0 means one attempt at the lock.
func failFast(d time.Duration) time.Duration {
	if d <= 0 {
		return -1
	}
	return d
}

// lockedCall runs query (a history function returning migrate_apply's
// columns) in a transaction that first takes the history lock without a
// snapshot (lockHistory); the function then finds the lock held.
func (c *Client) lockedCall(ctx context.Context, conn *pgx.Conn, op string, lockTimeout time.Duration, query string, migrations []*Migration, args ...any) ([]MigrationResult, error) {
	tx, err := c.lockHistory(ctx, conn, lockTimeout)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	return c.runLocked(ctx, conn, tx, op, query, migrations, append([]any{pgx.QueryExecModeExec}, args...)...)
}

// runLocked runs query in tx, which holds the history lock, and commits.
// Up to the COMMIT a lost connection means the server rolls the transaction
// back (the caller reports that); a connection lost during the COMMIT leaves
// the outcome unknown: *ConnectionLostError with OutcomeUnknown.
func (c *Client) runLocked(ctx context.Context, conn *pgx.Conn, tx pgx.Tx, op string, query string, migrations []*Migration, args ...any) ([]MigrationResult, error) {
	rows, err := tx.Query(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	results, err := scanResults(rows, migrations)
	if err != nil {
		// The caller reads the history next: end the failed transaction.
		_ = tx.Rollback(context.WithoutCancel(ctx))
		return nil, err
	}
	if err := tx.Commit(ctx); err != nil {
		if connectionLost(conn, err) {
			return nil, &ConnectionLostError{Op: op, OutcomeUnknown: true, Err: err}
		}
		return nil, err
	}
	return results, nil
}

// rollbackError: a down SQL that failed becomes a *MigrationError naming
// the version the last progress notice announced.
func (c *Client) rollbackError(ctx context.Context, conn *pgx.Conn, op string, route *noticeRoute, err error) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || strings.HasPrefix(pgErr.Code, "PM") || !route.hasCurrent {
		return engineError(op, err)
	}
	merr := &MigrationError{
		Version: route.current, Name: route.currentName,
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
	return c.historyCall(ctx, op, migrations, OutcomeBaselined, opts.LockTimeout, `select version, name, outcome, duration, applied_at from `+
		c.fn("migrate_baseline")+`($1::jsonb, $2, client_info => $3)`, version, c.config.ClientInfo)
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
	return c.historyCall(ctx, "repairing the history", migrations, OutcomeRepaired, opts.LockTimeout, `select version, name, outcome, duration, applied_at from `+
		c.fn("migrate_repair")+`($1::jsonb, $2::bigint[], client_info => $3)`, versions, c.config.ClientInfo)
}

// historyCall runs a history function whose first argument is the batch,
// in a transaction that takes the lock first as Push does (lockHistory).
func (c *Client) historyCall(ctx context.Context, op string, migrations []*Migration, changed Outcome, lockTimeout time.Duration, query string, args ...any) (*HistoryResult, error) {
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
	results, err := c.lockedCall(ctx, conn, op, lockTimeout, query, migrations, append([]any{string(batch)}, args...)...)
	if err != nil {
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
	results, err := c.lockedCall(ctx, conn, op, failFast(opts.LockTimeout), `select version, name, outcome, duration, applied_at from `+
		c.fn("migrate_resolve")+`($1, $2, client_info => $3)`, nil, version, string(action), c.config.ClientInfo)
	if err != nil {
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
