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

// Outcome is what happened to one migration, as migrate_apply reports it.
type Outcome string

const (
	OutcomeApplied        Outcome = "applied"         // applied by this call
	OutcomeAlreadyApplied Outcome = "already_applied" // in the history with the same checksum
	OutcomePending        Outcome = "pending"         // not applied: dry run, or above the target version
	OutcomeAhead          Outcome = "ahead"           // applied, newer than every pushed migration
	OutcomeMissing        Outcome = "missing"         // applied, not pushed, older than the newest pushed (AllowMissing)
)

// MigrationResult is one row of migrate_apply's or migrate_plan's result.
type MigrationResult struct {
	Version   int64         `json:"version"`
	Name      string        `json:"name"`
	File      string        `json:"file,omitempty"`
	Outcome   Outcome       `json:"outcome"`
	Duration  time.Duration `json:"duration_ns"`
	AppliedAt *time.Time    `json:"applied_at,omitempty"`
}

// PushOpts configures Push. A nil *PushOpts means defaults.
type PushOpts struct {
	// TargetVersion: apply pending versions up to this one only (0: all).
	TargetVersion int64
	// LockTimeout: wait at most this long for the history lock, then fail
	// with ErrLockTimeout (0: the server's lock_timeout, by default forever).
	LockTimeout time.Duration
	// AllowOutOfOrder applies pending versions older than the newest applied.
	AllowOutOfOrder bool
	// AllowMissing tolerates applied versions absent from the migrations.
	AllowMissing bool
	// DryRun takes the lock and validates, applies nothing: every pending
	// migration comes back as OutcomePending.
	DryRun bool
	// Progress is called as the server starts each migration (live only
	// when notices reach this package, see HandleNotice).
	Progress func(Progress)
	// Notice receives the other notices the migrations raise.
	Notice func(*pgconn.Notice)
	// SegmentSize > 0 applies the pending migrations in consecutive
	// segments of at most this many, one transaction (one migrate_apply
	// call) each: for first-time batches too big for one transaction's lock
	// table (SQLSTATE 53200). A failure rolls back its segment only; earlier
	// segments stay applied (MigrationError.Applied counts them). A
	// migration marked `---- pgmig: commit-after ----` always ends a segment.
	SegmentSize int
}

// PushResult reports what Push did.
type PushResult struct {
	// Migrations: one per pushed migration, in version order, plus one per
	// applied version that was not pushed (OutcomeAhead / OutcomeMissing).
	Migrations []MigrationResult `json:"migrations"`
	// Applied is how many migrations this call applied.
	Applied int `json:"applied"`
	// Version is the newest applied version after the call (0: none).
	Version int64 `json:"version"`
	// Ahead: the database has versions newer than every pushed migration
	// (a newer release migrated it). Not an error.
	Ahead bool `json:"ahead"`
	// Prechecked: the lock-free manifest check found nothing pending, so no
	// lock was taken and no SQL uploaded.
	Prechecked bool `json:"prechecked"`
	// Segments is how many steps the push took: calls of migrate_apply (one
	// transaction each) and non-transactional migrations; more than one
	// with SegmentSize, commit-after or non-transactional migrations.
	Segments int           `json:"segments"`
	Duration time.Duration `json:"duration_ns"`
}

// Push applies the pending migrations with one call of migrate_apply: the
// engine takes its lock, reads the history, checks drift and applies
// everything pending in one transaction. On failure nothing was applied.
//
// Unless Config.DisablePrecheck or opts.DryRun, Push first asks
// migrate_plan, without any lock, with a manifest (versions and checksums,
// no SQL) whether anything is pending. When nothing is, it returns at once
// with Prechecked set: a service starting up against an up-to-date database
// costs one small round trip. That check also verifies the engine version.
//
// Errors: *MigrationError for a failing migration (errors.As); ErrDrift,
// ErrLockTimeout, ErrInvalidBatch, ErrNotRunnable, ErrTransactionContext,
// ErrUnsupportedEngine, ErrEngineNotInstalled (errors.Is), with the
// *pgconn.PgError reachable through errors.As.
func (c *Client) Push(ctx context.Context, migrations []*Migration, opts *PushOpts) (*PushResult, error) {
	if opts == nil {
		opts = &PushOpts{}
	}
	start := time.Now()
	conn, release, err := c.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer release()

	var pending []int64 // known when the precheck ran
	if !c.config.DisablePrecheck && !opts.DryRun {
		res, p, err := c.precheck(ctx, conn, migrations, opts)
		if err != nil {
			return nil, err
		}
		if res != nil {
			res.Duration = time.Since(start)
			return res, nil
		}
		pending = p
	}
	if err := c.verifyEngine(ctx, conn); err != nil {
		return nil, fmt.Errorf("pushing migrations: %w", err)
	}

	batch, err := Batch(migrations)
	if err != nil {
		return nil, fmt.Errorf("encoding batch: %w", err)
	}
	route := &noticeRoute{progress: opts.Progress, notice: opts.Notice, files: filesByVersion(migrations)}
	detach := attachRoute(conn.PgConn(), route)
	defer detach()

	steps := []step{{target: opts.TargetVersion}}
	if !opts.DryRun && (opts.SegmentSize > 0 || hasCommitAfter(migrations) || hasNonTransactional(migrations)) {
		if pending == nil {
			if pending, err = c.pendingVersions(ctx, conn, migrations, opts); err != nil {
				return nil, err
			}
		}
		steps = planSteps(migrations, pending, opts)
		route.total = len(pending)
	}

	merged := map[int64]MigrationResult{}
	applied := 0
	for _, st := range steps {
		var results []MigrationResult
		if st.nontx != nil {
			var r MigrationResult
			r, err = c.applyNonTransactional(ctx, conn, batch, st.nontx, opts, applied+1, route.total, route)
			results = []MigrationResult{r}
		} else {
			results, err = c.apply(ctx, conn, batch, migrations, opts, st.target, route)
			if err != nil {
				err = c.pushError(ctx, conn, migrations, route, err)
			}
		}
		if err != nil {
			var merr *MigrationError
			if errors.As(err, &merr) {
				merr.Applied = applied
			}
			return nil, err
		}
		for _, r := range results {
			if prev, ok := merged[r.Version]; !ok || prev.Outcome != OutcomeApplied {
				merged[r.Version] = r
			}
			if r.Outcome == OutcomeApplied {
				applied++
			}
		}
		route.offset = applied
	}
	results := make([]MigrationResult, 0, len(merged))
	for _, r := range merged {
		results = append(results, r)
	}
	sort.Slice(results, func(i, j int) bool { return results[i].Version < results[j].Version })
	res := summarize(results)
	res.Segments = len(steps)
	res.Duration = time.Since(start)
	return res, nil
}

// apply is one call of migrate_apply.
func (c *Client) apply(ctx context.Context, conn *pgx.Conn, batch []byte, migrations []*Migration, opts *PushOpts, target int64, route *noticeRoute) ([]MigrationResult, error) {
	var lockTimeout any
	if opts.LockTimeout > 0 {
		lockTimeout = fmt.Sprintf("%d microseconds", opts.LockTimeout.Microseconds())
	}
	// QueryExecModeExec: one round trip (no separate prepare), the batch
	// goes as a text parameter, never spliced into SQL.
	query := `select version, name, outcome, duration, applied_at from ` + c.fn("migrate_apply") +
		`($1::jsonb, target_version => $2, lock_timeout => $3::interval, allow_out_of_order => $4,
		  allow_missing => $5, dry_run => $6, client_info => $7)`
	args := []any{pgx.QueryExecModeExec, string(batch), nullZero(target), lockTimeout,
		opts.AllowOutOfOrder, opts.AllowMissing, opts.DryRun, c.config.ClientInfo}
	rows, err := conn.Query(ctx, query, args...)
	if err == nil {
		var results []MigrationResult
		results, err = scanResults(rows, migrations)
		if err == nil || !nonTransactionalRunning(err) {
			return results, err
		}
	} else if !nonTransactionalRunning(err) {
		return nil, err
	}
	// Another migrator is running a non-transactional migration, and the
	// engine will not queue for the lock inside a statement (its snapshot
	// would stall that migrator's CREATE INDEX CONCURRENTLY). Queue with a
	// plain LOCK TABLE, which holds no snapshot, then apply under the lock.
	tx, err := conn.Begin(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if err := lockHistory(ctx, tx, opts.LockTimeout); err != nil {
		return nil, err
	}
	rows, err = tx.Query(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	results, err := scanResults(rows, migrations)
	if err != nil {
		return nil, err
	}
	return results, tx.Commit(ctx)
}

// nonTransactionalRunning: the engine refused to queue for the lock
// because the holder runs a non-transactional migration.
func nonTransactionalRunning(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == codeLockTimeout && strings.Contains(pgErr.Message, "non-transactional")
}

// lockHistory takes the history lock with a plain LOCK TABLE at the start
// of tx: a utility statement waits without a snapshot. Simple protocol
// throughout (see applyNonTransactional).
func lockHistory(ctx context.Context, tx pgx.Tx, timeout time.Duration) error {
	if timeout > 0 {
		if _, err := tx.Exec(ctx, "select pg_catalog.set_config('lock_timeout', $1, true)", pgx.QueryExecModeSimpleProtocol,
			fmt.Sprintf("%dms", max(1, timeout.Milliseconds()))); err != nil {
			return err
		}
	}
	if _, err := tx.Exec(ctx, "lock table pgmig.history in exclusive mode"); err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "55P03" { // lock_not_available
			return fmt.Errorf("%w: %w", ErrLockTimeout, err)
		}
		return err
	}
	return nil
}

func hasCommitAfter(migrations []*Migration) bool {
	for _, m := range migrations {
		if m.CommitAfter {
			return true
		}
	}
	return false
}

// pendingVersions asks migrate_plan (no lock) which versions are pending.
// If planning fails (drift...), the caller's single migrate_apply call will
// report it under the lock: return no segments then.
func (c *Client) pendingVersions(ctx context.Context, conn *pgx.Conn, migrations []*Migration, opts *PushOpts) ([]int64, error) {
	manifest, err := Manifest(migrations)
	if err != nil {
		return nil, fmt.Errorf("encoding manifest: %w", err)
	}
	rows, err := conn.Query(ctx, `select version from `+c.fn("migrate_plan")+
		`($1::jsonb, target_version => $2, allow_out_of_order => $3, allow_missing => $4) where outcome = 'pending' order by version`,
		pgx.QueryExecModeExec, string(manifest), nullZero(opts.TargetVersion), opts.AllowOutOfOrder, opts.AllowMissing)
	if err != nil {
		return []int64{}, nil
	}
	versions, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return []int64{}, nil
	}
	var out []int64
	for _, v := range versions {
		if opts.TargetVersion == 0 || v <= opts.TargetVersion {
			out = append(out, v)
		}
	}
	if out == nil {
		out = []int64{}
	}
	return out, nil
}

// precheck returns a result when nothing is pending, nil when the full push
// must run.
func (c *Client) precheck(ctx context.Context, conn *pgx.Conn, migrations []*Migration, opts *PushOpts) (*PushResult, []int64, error) {
	manifest, err := Manifest(migrations)
	if err != nil {
		return nil, nil, fmt.Errorf("encoding manifest: %w", err)
	}
	// One statement: the engine version rides along with the plan, so an
	// up-to-date database costs exactly one round trip.
	rows, err := conn.Query(ctx, `select pgmig.engine_version(), p.version, p.name, p.outcome, p.duration, p.applied_at from `+
		c.fn("migrate_plan")+`($1::jsonb, target_version => $2, allow_out_of_order => $3, allow_missing => $4) p`,
		pgx.QueryExecModeExec, string(manifest), nullZero(opts.TargetVersion), opts.AllowOutOfOrder, opts.AllowMissing)
	if err != nil {
		return nil, nil, c.precheckError(ctx, conn, err)
	}
	var engine string
	var results []MigrationResult
	for rows.Next() {
		var r MigrationResult
		var d pgtype.Interval
		if err := rows.Scan(&engine, &r.Version, &r.Name, &r.Outcome, &d, &r.AppliedAt); err != nil {
			rows.Close()
			return nil, nil, fmt.Errorf("reading plan: %w", err)
		}
		r.Duration = intervalDuration(d)
		results = append(results, r)
	}
	if err := rows.Err(); err != nil {
		return nil, nil, c.precheckError(ctx, conn, err)
	}
	if engine != "" {
		if err := c.acceptEngine(engine); err != nil {
			return nil, nil, fmt.Errorf("pushing migrations: %w", err)
		}
	}
	var pending []int64
	for _, r := range results {
		if r.Outcome == OutcomePending && (opts.TargetVersion == 0 || r.Version <= opts.TargetVersion) {
			pending = append(pending, r.Version)
		}
	}
	if len(pending) > 0 || len(results) == 0 {
		return nil, pending, nil
	}
	addFiles(results, migrations)
	res := summarize(results)
	res.Prechecked = true
	return res, nil, nil
}

// precheckError: a missing engine is final; anything else (a pending
// manifest entry, drift seen without the lock...) is left for migrate_apply
// to report authoritatively under the lock.
func (c *Client) precheckError(ctx context.Context, conn *pgx.Conn, err error) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return fmt.Errorf("checking for pending migrations: %w", err)
	}
	if isEngineMissing(pgErr) {
		// Tell "not installed" from "installed, but another version".
		if err := c.verifyEngine(ctx, conn); err != nil {
			return fmt.Errorf("pushing migrations: %w", err)
		}
	}
	return nil
}

func nullZero(v int64) any {
	if v == 0 {
		return nil
	}
	return v
}

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

func addFiles(results []MigrationResult, migrations []*Migration) {
	files := filesByVersion(migrations)
	for i := range results {
		results[i].File = files[results[i].Version]
	}
}

func filesByVersion(migrations []*Migration) map[int64]string {
	files := make(map[int64]string, len(migrations))
	for _, m := range migrations {
		files[m.Version] = m.File
	}
	return files
}

func summarize(results []MigrationResult) *PushResult {
	res := &PushResult{Migrations: results}
	for _, r := range results {
		switch r.Outcome {
		case OutcomeApplied:
			res.Applied++
		case OutcomeAhead:
			res.Ahead = true
		}
		if r.Outcome != OutcomePending && r.Version > res.Version {
			res.Version = r.Version
		}
	}
	if res.Migrations == nil {
		res.Migrations = []MigrationResult{}
	}
	return res
}

func intervalDuration(d pgtype.Interval) time.Duration {
	if !d.Valid {
		return 0
	}
	return time.Duration(d.Microseconds)*time.Microsecond +
		time.Duration(d.Days)*24*time.Hour + time.Duration(d.Months)*30*24*time.Hour
}

// pushError turns the server's answer into a *MigrationError when a
// migration failed, or into pgmig's sentinel errors.
func (c *Client) pushError(ctx context.Context, conn *pgx.Conn, migrations []*Migration, route *noticeRoute, err error) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || strings.HasPrefix(pgErr.Code, "PM") || isEngineMissing(pgErr) && failingMigration(migrations, route, pgErr) == nil {
		return engineError("pushing migrations", err)
	}
	m := failingMigration(migrations, route, pgErr)
	if m == nil {
		return fmt.Errorf("pushing migrations: %w", err)
	}
	merr := &MigrationError{
		Version: m.Version, Name: m.Name, File: m.File,
		Code: pgErr.Code, Message: pgErr.Message, Detail: pgErr.Detail, Hint: pgErr.Hint,
		CurrentVersion: -1,
		PgError:        pgErr,
	}
	if pos := sqlPosition(m, pgErr); pos > 0 {
		if loc, ok := m.Locate(pos); ok {
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

// currentVersion is the newest applied version, -1 if it cannot be read.
func (c *Client) currentVersion(ctx context.Context, conn *pgx.Conn) int64 {
	if ctx.Err() != nil || conn.IsClosed() {
		return -1
	}
	var v int64
	if err := conn.QueryRow(ctx, `select coalesce(max(version), 0) from `+c.fn("migrate_status")+`() where state in ('applied', 'baseline')`,
		pgx.QueryExecModeExec).Scan(&v); err != nil {
		return -1
	}
	return v
}

// failingMigration: the one the last progress notice named, else the one
// whose SQL the server reports as the internal query.
func failingMigration(migrations []*Migration, route *noticeRoute, pgErr *pgconn.PgError) *Migration {
	if route != nil && route.hasCurrent {
		for _, m := range migrations {
			if m.Version == route.current {
				return m
			}
		}
	}
	if pgErr.InternalQuery != "" {
		for _, m := range migrations {
			if m.SQL == pgErr.InternalQuery {
				return m
			}
		}
		for _, m := range migrations {
			if strings.Contains(pgErr.InternalQuery, m.SQL) || strings.Contains(m.SQL, pgErr.InternalQuery) {
				return m
			}
		}
	}
	return nil
}

// sqlPosition: the error's 1-based character position in m.SQL, from the
// internal position (the migration's SQL as executed by the engine).
func sqlPosition(m *Migration, pgErr *pgconn.PgError) int {
	if pgErr.InternalPosition <= 0 || pgErr.InternalQuery == "" {
		return 0
	}
	pos := int(pgErr.InternalPosition)
	if pgErr.InternalQuery == m.SQL {
		return pos
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
