package pgmig

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
)

// applyNonTransactional runs one non-transactional migration with the
// engine's protocol (sql/src/75_nontx.sql): the holder connection keeps the
// history lock in an open transaction that holds no snapshot, so it
// excludes other migrators without stalling CREATE INDEX CONCURRENTLY; a
// second connection runs the statements one by one at top level, recording
// before each one how far it got, so an interruption leaves an exact
// account (PM009 for every migrator until migrate_resolve).
func (c *Client) applyNonTransactional(ctx context.Context, holder *pgx.Conn, batch []byte, m *Migration, opts *PushOpts,
	index int, route *noticeRoute) (MigrationResult, error) {
	res := MigrationResult{Version: m.Version, Name: m.Name, Label: m.Label, File: m.File, Outcome: OutcomeApplied}
	op := fmt.Sprintf("applying non-transactional version %d [%s]", m.Version, m.Name)
	// Bookkeeping must reach the server even when ctx was cancelled.
	bg := context.WithoutCancel(ctx)
	stmts := splitStatements(m.SQL)

	tx, err := c.lockHistory(ctx, holder, opts.LockTimeout)
	if err != nil {
		if connectionLost(holder, err) {
			return res, &ConnectionLostError{Op: op, Err: err}
		}
		return res, engineError(op, err)
	}
	defer tx.Rollback(bg) // after Commit: a no-op

	// Under the lock the plan is exact: while this push queued, another
	// migrator may have applied the migration.
	var outcome Outcome
	var appliedAt *time.Time
	if err := tx.QueryRow(ctx, `select outcome, applied_at from pgmig.migrate_plan($1::jsonb, target_version => $2::bigint,
		allow_out_of_order => $3::boolean, allow_missing => $4::boolean, scope => $6::text) where version = $5::bigint`, pgx.QueryExecModeSimpleProtocol,
		string(batch), nullZero(opts.TargetVersion), opts.AllowOutOfOrder, opts.AllowMissing, m.Version, c.scope()).Scan(&outcome, &appliedAt); err == nil && outcome != OutcomePending {
		res.Outcome, res.AppliedAt = outcome, appliedAt
		return res, tx.Commit(ctx)
	}
	// Simple protocol for everything the holder runs: an extended-protocol
	// portal stays open after its Sync until the next one or the end of the
	// transaction, and keeps its snapshot registered meanwhile; the idle
	// holder would then hold back xmin and CREATE INDEX CONCURRENTLY on the
	// executor would wait for it forever.
	texts := make([]string, len(stmts))
	for i, st := range stmts {
		texts[i] = st.text
	}
	// The engine says which search_path the statements run with (a tenant
	// scope's schema first), or nothing.
	var searchPath *string
	if err := tx.QueryRow(ctx, "select pgmig.nontx_begin($1::jsonb, $2::bigint, NULL, $3::boolean, $4::boolean, $5::text[], $6::text)", pgx.QueryExecModeSimpleProtocol,
		string(batch), m.Version, opts.AllowOutOfOrder, opts.AllowMissing, texts, c.scope()).Scan(&searchPath); err != nil {
		if connectionLost(holder, err) {
			// Not committed: the server rolls the holder's transaction back.
			return res, &ConnectionLostError{Op: op, Err: err}
		}
		return res, engineError(op, err)
	}

	if opts.Progress != nil {
		route.emit(Progress{Version: m.Version, Name: m.Name, Index: index, Total: route.total, At: time.Now()})
	}
	start := time.Now()
	run := nontxRun{m: m, sql: m.SQL, down: m.Down, direction: "up", stmts: stmts, searchPath: searchPath, lockTimeout: opts.DDLLockTimeout}
	if m.LockTimeout != nil {
		run.lockTimeout = *m.LockTimeout
	}
	if err := c.runStatements(ctx, holder, tx, run, route, op); err != nil {
		return res, err
	}
	res.Duration = time.Since(start)
	res.AppliedAt = &start
	if opts.Progress != nil {
		route.emit(Progress{Version: m.Version, Name: m.Name, Total: route.total, Done: true, Duration: res.Duration, At: time.Now()})
	}
	if _, err := tx.Exec(ctx, "select pgmig.nontx_finish($1::jsonb, $2::bigint, $3::interval, $4::text, $5::text)", pgx.QueryExecModeSimpleProtocol,
		string(batch), m.Version, fmt.Sprintf("%d microseconds", res.Duration.Microseconds()), c.config.ClientInfo, c.scope()); err != nil {
		if connectionLost(holder, err) {
			return res, &ConnectionLostError{Op: op, Version: m.Version, Err: err}
		}
		return res, engineError(op, err)
	}
	if err := tx.Commit(ctx); err != nil {
		if connectionLost(holder, err) {
			return res, &ConnectionLostError{Op: op, Version: m.Version, OutcomeUnknown: true, Err: err}
		}
		return res, fmt.Errorf("%s: %w", op, err)
	}
	return res, nil
}

// nontxRun is what the executor runs: the statements of a non-transactional
// migration's up SQL (direction "up") or of its recorded down SQL ("down").
type nontxRun struct {
	m         *Migration
	sql, down string
	direction string
	stmts     []statement
	// searchPath is what the engine said the statements run with (a
	// tenant scope), nil: the session's own.
	searchPath *string
	// lockTimeout: the DDL lock timeout for the statements (0: none).
	lockTimeout time.Duration
}

// runStatements runs the statements on a second connection (the executor)
// at top level, one by one, recording before each one how far it got
// (pgmig.nontx_progress, committed at once), and once after the last; a
// watchdog cancels a statement that waits for the holder. tx is the
// holder's transaction, which holds the history lock.
func (c *Client) runStatements(ctx context.Context, holder *pgx.Conn, tx pgx.Tx, run nontxRun, route *noticeRoute, op string) error {
	bg := context.WithoutCancel(ctx)
	m := run.m
	exec, err := pgx.ConnectConfig(ctx, executorConfig(holder))
	if err != nil {
		return fmt.Errorf("%s: opening the executor connection: %w", op, err)
	}
	defer exec.Close(bg)
	defer attachRoute(exec.PgConn(), route)()
	locks, err := c.statementLockTimeouts(ctx, exec, run)
	if err != nil {
		if connectionLost(exec, err) {
			return &ConnectionLostError{Op: op, Version: m.Version, Err: err}
		}
		return engineError(op, err)
	}
	record := func(done int, current, failure *string) error {
		_, err := exec.Exec(bg, "select pgmig.nontx_progress($1::bigint, $2::text, $3::text, $4::text, $5::text, $6::integer, $7::integer, $8::text, $9::text, $10::text, $11::text, $12::text)",
			pgx.QueryExecModeExec, m.Version, m.Name, m.Checksum, run.sql, nullEmpty(run.down), len(run.stmts), done, current, failure,
			c.config.ClientInfo, run.direction, c.scope())
		return err
	}
	if run.searchPath != nil {
		// The executor is this run's own connection: the setting ends with it.
		if _, err := exec.Exec(ctx, "select pg_catalog.set_config('search_path', $1::text, false)", pgx.QueryExecModeExec, *run.searchPath); err != nil {
			return fmt.Errorf("%s: setting the search_path of the statements: %w", op, err)
		}
	}
	for i, st := range run.stmts {
		text := st.text
		if err := record(i, &text, nil); err != nil {
			if connectionLost(exec, err) {
				return &ConnectionLostError{Op: op, Version: m.Version, Err: err}
			}
			return engineError(op, err)
		}
		lockTimeout, err := locks.set(ctx, exec, i)
		if err != nil {
			if connectionLost(exec, err) {
				return &ConnectionLostError{Op: op, Version: m.Version, Err: err}
			}
			return engineError(op, err)
		}
		dog := watch(ctx, holder, exec, c.scope())
		_, err = exec.PgConn().Exec(ctx, st.text).ReadAll()
		blocked := dog.stop()
		if err != nil {
			// Timed out waiting for a lock: ask the engine who was in the
			// way while the executor still sees them (PM017's data).
			var report []byte
			var pgErr *pgconn.PgError
			if lockTimeout > 0 && errors.As(err, &pgErr) && pgErr.Code == codeLockNotAvailable {
				_ = exec.QueryRow(bg, "select pgmig.lock_blockers($1::text, $2::interval)", pgx.QueryExecModeExec,
					st.text, durationArg(lockTimeout)).Scan(&report)
			}
			msg := err.Error()
			if blocked != "" {
				msg = "cancelled by pgmig: " + blocked + ": " + msg
			}
			if rerr := record(i, &text, &msg); rerr != nil {
				err = errors.Join(err, fmt.Errorf("recording the failure: %w", rerr))
			}
			// (A PgError, FATAL included, is reported as the statement's
			// failure: the MigrationError says what stays applied.)
			lost := connectionLost(exec, err) && !errors.As(err, new(*pgconn.PgError))
			err = c.nonTransactionalError(bg, holder, tx, run, i, err)
			var merr *MigrationError
			if blocked != "" && errors.As(err, &merr) {
				merr.Blocked = blocked
			}
			if report != nil && errors.As(err, &merr) {
				if b, berr := newBlockedError(report, m, merr.PgError); berr == nil {
					b.LockTimeout = lockTimeout
					b.NonTransactional, b.Statement, b.Statements = true, i+1, len(run.stmts)
					err = b
				}
			}
			if lost {
				err = &ConnectionLostError{Op: op, Version: m.Version, Err: err}
			}
			return err
		}
	}
	if err := record(len(run.stmts), nil, nil); err != nil {
		if connectionLost(exec, err) {
			return &ConnectionLostError{Op: op, Version: m.Version, Err: err}
		}
		return engineError(op, err)
	}
	return nil
}

// stmtLocks is the lock_timeout each statement of a non-transactional
// migration runs with (the engine decides: pgmig.nontx_lock_timeouts), and
// the one the executor's session has now.
type stmtLocks struct {
	base    string          // the session's own lock_timeout
	each    []time.Duration // per statement; 0: the session's own
	current string
}

// statementLockTimeouts asks the engine for the statements' lock timeouts
// under run.lockTimeout (none without one).
func (c *Client) statementLockTimeouts(ctx context.Context, exec *pgx.Conn, run nontxRun) (*stmtLocks, error) {
	if run.lockTimeout <= 0 {
		return &stmtLocks{}, nil
	}
	texts := make([]string, len(run.stmts))
	for i, st := range run.stmts {
		texts[i] = st.text
	}
	var base string
	var each []pgtype.Interval
	if err := exec.QueryRow(ctx, "select current_setting('lock_timeout'), pgmig.nontx_lock_timeouts($1::text[], $2::interval)",
		pgx.QueryExecModeExec, texts, durationArg(run.lockTimeout)).Scan(&base, &each); err != nil {
		return nil, err
	}
	l := &stmtLocks{base: base, current: base, each: make([]time.Duration, len(each))}
	for i, d := range each {
		l.each[i] = intervalDuration(d)
	}
	return l, nil
}

// set gives the executor's session statement i's lock_timeout, and
// returns it (0: the session's own).
func (l *stmtLocks) set(ctx context.Context, exec *pgx.Conn, i int) (time.Duration, error) {
	if l.each == nil {
		return 0, nil
	}
	want, d := l.base, l.each[i]
	if d > 0 {
		want = strconv.FormatInt(ceilMillis(d), 10) + "ms"
	}
	if want != l.current {
		if _, err := exec.Exec(ctx, "select set_config('lock_timeout', $1, false)", pgx.QueryExecModeExec, want); err != nil {
			return 0, err
		}
		l.current = want
	}
	return d, nil
}

// executorConfig is the holder's configuration plus, unless the caller set
// it, client_connection_check_interval (PostgreSQL 14+): PostgreSQL does
// not otherwise notice a vanished client until the statement ends, so a
// CREATE INDEX CONCURRENTLY whose client died would run on unobserved,
// after the lock was gone and the run had been reported interrupted. With
// the check the server cancels it within a second (leaving, for a
// concurrent build, an INVALID index that the PM009 report names).
func executorConfig(holder *pgx.Conn) *pgx.ConnConfig {
	cfg := holder.Config().Copy()
	if _, set := cfg.RuntimeParams["client_connection_check_interval"]; !set {
		major, _, _ := strings.Cut(holder.PgConn().ParameterStatus("server_version"), ".")
		if v, err := strconv.Atoi(major); err == nil && v >= 14 {
			cfg.RuntimeParams["client_connection_check_interval"] = "1000"
		}
	}
	return cfg
}

func nullEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// nonTransactionalError describes a statement that failed: which one, where
// in the file, and what stayed applied.
func (c *Client) nonTransactionalError(ctx context.Context, holder *pgx.Conn, tx pgx.Tx, run nontxRun, i int, err error) error {
	m, stmts := run.m, run.stmts
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return fmt.Errorf("%s non-transactional version %d [%s]: stopped in statement %d of %d (statements before it stay applied): %w",
			map[string]string{"up": "applying", "down": "rolling back"}[run.direction], m.Version, m.Name, i+1, len(stmts), err)
	}
	merr := &MigrationError{
		Version: m.Version, Name: m.Name, File: m.File,
		Code: pgErr.Code, Message: pgErr.Message, Detail: pgErr.Detail, Hint: pgErr.Hint,
		NonTransactional: true, Statement: i + 1, Statements: len(stmts),
		Rollback:       run.direction == "down",
		CurrentVersion: -1,
		PgError:        pgErr,
	}
	st := stmts[i]
	pos := 0
	switch {
	case pgErr.InternalQuery != "" && pgErr.InternalPosition > 0:
		if j := strings.Index(st.text, pgErr.InternalQuery); j >= 0 {
			pos = len([]rune(st.text[:j])) + int(pgErr.InternalPosition)
		}
	case pgErr.Position > 0:
		pos = int(pgErr.Position)
	}
	if run.direction == "up" {
		// A runtime error has no position: the statement's line (Column 0).
		if loc, ok := m.Locate(len([]rune(m.SQL[:st.offset])) + max(pos, 1)); ok {
			if pos == 0 {
				loc.Column, loc.Expanded = 0, false
			}
			merr.Location = loc
		}
	}
	merr.Context = pgErr.Where
	if merr.Location.File == "" {
		merr.Location.File = m.File
	}
	// Release the lock before reading the history: the holder's
	// transaction is the one that holds it.
	_ = tx.Rollback(ctx)
	merr.CurrentVersion = c.currentVersion(ctx, holder)
	return merr
}

// rollbackNonTransactional rolls back one non-transactional migration, the
// newest applied version, by running its recorded down SQL with the engine's
// protocol (nontx_down_begin / nontx_progress 'down' / nontx_down_finish):
// the same lock discipline, recording and recovery as applying one.
func (c *Client) rollbackNonTransactional(ctx context.Context, holder *pgx.Conn, version int64, name string, opts *RollbackOpts,
	route *noticeRoute) (MigrationResult, error) {
	res := MigrationResult{Version: version, Name: name, Outcome: OutcomeRolledBack}
	op := fmt.Sprintf("rolling back non-transactional version %d [%s]", version, name)
	bg := context.WithoutCancel(ctx)
	lockTimeout := opts.LockTimeout
	if lockTimeout <= 0 {
		lockTimeout = -1 // fail fast, as the engine's rollback does
	}
	tx, err := c.lockHistory(ctx, holder, lockTimeout)
	if err != nil {
		if connectionLost(holder, err) {
			return res, &ConnectionLostError{Op: op, Err: err}
		}
		return res, engineError(op, err)
	}
	defer tx.Rollback(bg)
	// Simple protocol throughout, as for an up (see applyNonTransactional).
	var down, checksum string
	var searchPath *string
	if err := tx.QueryRow(ctx, `select d.down_sql, d.search_path, (select checksum from pgmig.migrate_status($2::text) where version = $1::bigint)
		from pgmig.nontx_down_begin($1::bigint, NULL, $2::text) as d`,
		pgx.QueryExecModeSimpleProtocol, version, c.scope()).Scan(&down, &searchPath, &checksum); err != nil {
		if connectionLost(holder, err) {
			return res, &ConnectionLostError{Op: op, Err: err}
		}
		return res, engineError(op, err)
	}
	stmts := splitStatements(down)
	texts := make([]string, len(stmts))
	for i, st := range stmts {
		texts[i] = st.text
	}
	if _, err := tx.Exec(ctx, "select from pgmig.nontx_down_begin($1::bigint, $2::text[], $3::text)", pgx.QueryExecModeSimpleProtocol, version, texts, c.scope()); err != nil {
		if connectionLost(holder, err) {
			return res, &ConnectionLostError{Op: op, Err: err}
		}
		return res, engineError(op, err)
	}
	if opts.Progress != nil {
		route.progress(Progress{Version: version, Name: name, At: time.Now()})
	}
	start := time.Now()
	m := &Migration{Version: version, Name: name, SQL: down, Checksum: checksum}
	if err := c.runStatements(ctx, holder, tx, nontxRun{m: m, sql: down, direction: "down", stmts: stmts, searchPath: searchPath}, route, op); err != nil {
		return res, err
	}
	res.Duration = time.Since(start)
	if opts.Progress != nil {
		route.progress(Progress{Version: version, Name: name, Done: true, Duration: res.Duration, At: time.Now()})
	}
	if _, err := tx.Exec(ctx, "select pgmig.nontx_down_finish($1::bigint, $2::interval, $3::text, $4::text)", pgx.QueryExecModeSimpleProtocol,
		version, fmt.Sprintf("%d microseconds", res.Duration.Microseconds()), c.config.ClientInfo, c.scope()); err != nil {
		if connectionLost(holder, err) {
			return res, &ConnectionLostError{Op: op, Version: version, Err: err}
		}
		return res, engineError(op, err)
	}
	if err := tx.Commit(ctx); err != nil {
		if connectionLost(holder, err) {
			return res, &ConnectionLostError{Op: op, Version: version, OutcomeUnknown: true, Err: err}
		}
		return res, fmt.Errorf("%s: %w", op, err)
	}
	return res, nil
}
