package pgmig

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Outcome is what happened to one migration, as the engine reports it.
type Outcome string

const (
	OutcomeApplied        Outcome = "applied"         // applied by this call
	OutcomeAlreadyApplied Outcome = "already_applied" // in the history with the same checksum
	OutcomePending        Outcome = "pending"         // would be applied: a dry run, a plan, or left for a later call
	OutcomeBeyondTarget   Outcome = "beyond_target"   // pending, above the target version
	OutcomeAhead          Outcome = "ahead"           // applied, newer than every pushed migration
	OutcomeMissing        Outcome = "missing"         // applied, not pushed, older than the newest pushed (AllowMissing)

	// Repeatable migrations (MigrationResult.Repeatable, no version).
	OutcomeRepeatableApplied   Outcome = "repeatable_applied"   // applied by this call: new, or changed since it was last applied
	OutcomeRepeatableUnchanged Outcome = "repeatable_unchanged" // applied with the same checksum: not run again
	OutcomeRepeatablePending   Outcome = "repeatable_pending"   // would be applied: a dry run, a plan, or a call that left versioned migrations pending
	OutcomeRepeatableMissing   Outcome = "repeatable_missing"   // applied once, not pushed now (not an error)
)

// IsApplied: applied by this call (a versioned or a repeatable migration).
func (o Outcome) IsApplied() bool { return o == OutcomeApplied || o == OutcomeRepeatableApplied }

// IsPending: would be applied (a versioned or a repeatable migration).
func (o Outcome) IsPending() bool { return o == OutcomePending || o == OutcomeRepeatablePending }

// MigrationResult is one migration as the engine reported it.
type MigrationResult struct {
	Version int64 `json:"version"`
	// Repeatable: a repeatable migration (Version 0), identified by Name.
	Repeatable bool          `json:"repeatable,omitempty"`
	Name       string        `json:"name"`
	Label      string        `json:"label,omitempty"`
	File       string        `json:"file,omitempty"`
	Outcome    Outcome       `json:"outcome"`
	Duration   time.Duration `json:"duration_ns"`
	AppliedAt  *time.Time    `json:"applied_at,omitempty"`
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
	// DDLLockTimeout bounds how long each statement of a migration waits
	// for a lock another session holds (the engine's ddl_lock_timeout;
	// not the history lock, see LockTimeout). An ALTER TABLE queued behind
	// a long transaction makes every later reader and writer of the table
	// queue behind it; with this the migration gives up instead, its
	// transaction rolls back (nothing applied, nobody waits any more) and
	// Push returns a *BlockedError (ErrBlocked) naming the relation and
	// the sessions in the way — or retries (Retries). A migration's own
	// `---- pgmig: lock-timeout D ----` line overrides it (0 there: no
	// limit). Non-transactional statements get it too, except those that
	// build or drop something CONCURRENTLY (their waits block nobody, and
	// a timeout would cancel the build half-way). 0: the session's
	// lock_timeout (normally: wait as long as it takes).
	DDLLockTimeout time.Duration
	// Retries: when a migration gives up waiting for a lock (ErrBlocked),
	// push the whole batch again, up to this many more times, pausing with
	// jittered exponential backoff (from 500ms, doubling, at most
	// RetryMaxWait) in between. Safe: a blocked transaction applied
	// nothing, and migrations earlier transactions committed are skipped.
	// A blocked non-transactional statement is not retried (the statements
	// before it stayed applied). 0: no retry.
	Retries int
	// RetryMaxWait is the longest pause between two attempts (default
	// 30s).
	RetryMaxWait time.Duration
	// OnRetry, if set, is called before each pause with the attempt that
	// was blocked.
	OnRetry func(RetryAttempt)
	// Progress is called as the server starts each migration (live only
	// when notices reach this package, see HandleNotice).
	Progress func(Progress)
	// Notice receives the other notices the migrations raise.
	Notice func(*pgconn.Notice)
	// SegmentSize bounds how many migrations one transaction applies. The
	// engine (migrate_run) commits by itself where a transaction must end:
	// after a migration marked `---- pgmig: commit-after ----`, and when
	// the locks its transaction holds near its lock budget (one transaction
	// holds a lock on every object it creates until it commits, and on
	// default server settings a few thousand small DDL migrations in one
	// transaction exhaust the shared lock table: SQLSTATE 53200).
	//
	//   0 (default)   automatic: the engine's default lock budget, half the
	//                 server's lock table
	//   N > 0         also commit after every N migrations
	//   SegmentAll    one transaction, whatever it takes (no lock budget;
	//                 commit-after markers still end a transaction)
	//
	// Each transaction is atomic; a failure rolls back its own transaction
	// only, earlier ones stay applied (MigrationError.Applied counts them)
	// and the next push continues after them. A non-transactional
	// migration is a step of its own.
	SegmentSize int
	// HistoryDigest is what Client.HistoryDigest returned on this Client,
	// read while the migrations were still loading (the pgmig CLI reads it
	// as soon as it is connected). Push then starts from it instead of
	// querying the digest itself: when it equals HistoryDigest(migrations)
	// nothing is pending and Push returns at once, Prechecked. It means
	// what the precheck's own query means, as of when it was read: neither
	// takes a lock, and the engine re-checks everything under the lock when
	// there is something to apply. Ignored with Config.DisablePrecheck or
	// DryRun.
	HistoryDigest string
}

// SegmentAll as PushOpts.SegmentSize applies every pending transactional
// migration in one transaction, however many there are.
const SegmentAll = -1

// PushResult reports what Push did.
type PushResult struct {
	// Migrations: one per pushed migration, in version order, plus one per
	// applied version that was not pushed (OutcomeAhead / OutcomeMissing).
	Migrations []MigrationResult `json:"migrations"`
	// Applied is how many migrations this call applied, repeatable ones
	// included.
	Applied int `json:"applied"`
	// RepeatableApplied: how many of them were repeatable migrations.
	RepeatableApplied int `json:"repeatable_applied,omitempty"`
	// Version is the newest applied version after the call (0: none).
	Version int64 `json:"version"`
	// Ahead: the database has versions newer than every pushed migration
	// (a newer release migrated it). Not an error.
	Ahead bool `json:"ahead"`
	// Prechecked: the lock-free digest check found exactly these
	// migrations applied, so no lock was taken and no SQL uploaded.
	Prechecked bool `json:"prechecked"`
	// Segments is how many steps the push took: transactions that applied
	// something, plus non-transactional migrations.
	Segments int `json:"segments"`
	// SegmentSize is PushOpts.SegmentSize when it was positive; 0 otherwise.
	SegmentSize int `json:"segment_size,omitempty"`
	// LockBudget is the engine's lock budget when it ended at least one
	// transaction (see PushOpts.SegmentSize); 0 otherwise.
	LockBudget int           `json:"lock_budget,omitempty"`
	Duration   time.Duration `json:"duration_ns"`
	// Attempts is how many times Push pushed: more than 1 when a migration
	// was blocked and retried (PushOpts.Retries).
	Attempts int `json:"attempts,omitempty"`
}

// Push applies the pending migrations: it uploads them as one batch and
// calls the engine's migrate_run, which takes the history lock, reads and
// checks the history after it, and applies what is pending, committing by
// itself where a transaction must end (see PushOpts.SegmentSize). The
// engine decides everything; Push only runs the part PostgreSQL does not
// let the engine run: a non-transactional migration (`---- tern:
// disable-tx ----`), statement by statement from the client under the same
// lock (docs/sql-api.md, "Client protocol"), after which it calls the engine
// again for the rest.
//
// Unless Config.DisablePrecheck or opts.DryRun, Push first compares,
// without any lock, the history digest (migrate_history_digest) with its
// files' (HistoryDigest): when they are equal it returns at once with
// Prechecked set, so a service starting up against an up-to-date database
// costs one small round trip. That check also verifies the engine version.
//
// Errors: *MigrationError for a failing migration (errors.As); ErrDrift
// (a *DriftError), ErrLockTimeout, ErrInvalidBatch, ErrNotRunnable,
// ErrTransactionContext, ErrUnsupportedEngine, ErrEngineNotInstalled
// (errors.Is), with the *pgconn.PgError reachable through errors.As.
// ErrPermissionDenied: the role lacks privileges on the engine.
//
// A connection that fails mid-push (closed, reset, EOF, timeout, cancelled
// context) gives a *ConnectionLostError (errors.Is ErrConnectionLost):
// when it failed before the engine was called, nothing was applied;
// while the engine ran it matches ErrOutcomeUnknown: the engine commits by
// itself, so some of the migrations may be committed. Either way pushing
// again is safe: applied migrations are recorded and skipped.
//
// With PushOpts.DDLLockTimeout a migration that waits too long for a table
// lock gives up with a *BlockedError (ErrBlocked), which PushOpts.Retries
// retries (see retry.go).
func (c *Client) Push(ctx context.Context, migrations []*Migration, opts *PushOpts) (*PushResult, error) {
	if opts == nil {
		opts = &PushOpts{}
	}
	return c.pushWithRetries(ctx, migrations, opts)
}

// pushOnce is one attempt of Push.
func (c *Client) pushOnce(ctx context.Context, migrations []*Migration, opts *PushOpts) (*PushResult, error) {
	start := time.Now()
	conn, release, err := c.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer release()

	if !c.config.DisablePrecheck && !opts.DryRun && len(migrations) > 0 {
		done, err := c.precheck(ctx, conn, migrations, opts.HistoryDigest)
		if err != nil {
			return nil, lostBeforeApply(conn, "pushing migrations", err)
		}
		if done {
			res := summarize(allApplied(migrations))
			res.Prechecked = true
			res.Duration = time.Since(start)
			return res, nil
		}
	}
	if err := c.verifyEngine(ctx, conn); err != nil {
		return nil, lostBeforeApply(conn, "pushing migrations", fmt.Errorf("pushing migrations: %w", err))
	}

	route := newNoticeRoute(opts.Progress, opts.Notice, migrations)
	defer attachRoute(conn.PgConn(), route)()

	batch, err := Batch(migrations)
	if err != nil {
		return nil, fmt.Errorf("encoding batch: %w", err)
	}
	var (
		applied = map[migrationKey]MigrationResult{} // by this push, across engine calls
		last    *runResult
		steps   int
		stops   int
		budget  int
	)
	for {
		// Committed by this push so far, for errors and progress numbers.
		committed := len(applied)
		route.offset = committed
		r, err := c.run(ctx, conn, batch, opts, route)
		if err != nil {
			return nil, c.pushError(ctx, conn, migrations, route, committed, err)
		}
		steps += r.Transactions
		stops += r.LockBudgetStops
		budget = r.LockBudget
		for _, m := range r.Migrations {
			if m.Outcome.IsApplied() {
				applied[resultKey(m)] = m
			}
		}
		last = r
		if r.Stopped == nil {
			break
		}
		// The engine stopped before a non-transactional migration: run it
		// with the client protocol, then let the engine go on.
		m := migrationByVersion(migrations, r.Stopped.Version)
		if m == nil {
			return nil, fmt.Errorf("pushing migrations: the engine stopped before version %d, which is not among the migrations", r.Stopped.Version)
		}
		res, err := c.applyNonTransactional(ctx, conn, batch, m, opts, len(applied)+1, route)
		if err != nil {
			return nil, withApplied(err, len(applied))
		}
		steps++
		if res.Outcome == OutcomeApplied {
			applied[resultKey(res)] = res
		}
	}

	results := mergeResults(last.Migrations, applied)
	addFiles(results, migrations)
	res := summarize(results)
	res.Segments = steps
	if opts.SegmentSize > 0 {
		res.SegmentSize = opts.SegmentSize
	}
	if stops > 0 {
		res.LockBudget = budget
	}
	res.Duration = time.Since(start)
	return res, nil
}

// precheck reports whether the history digest equals the files': exactly
// these migrations are applied, unchanged, so there is nothing to do.
// It verifies the engine version in the same round trip (or uses the
// digest the caller read already, see PushOpts.HistoryDigest).
func (c *Client) precheck(ctx context.Context, conn *pgx.Conn, migrations []*Migration, digest string) (bool, error) {
	if digest == "" || !c.engineChecked() {
		engine, d, err := c.historyDigest(ctx, conn)
		if err != nil {
			// Tell "not installed" from "installed, but another version";
			// anything else is left for the engine to report under the lock.
			if err := c.verifyEngine(ctx, conn); err != nil {
				return false, fmt.Errorf("pushing migrations: %w", err)
			}
			return false, nil
		}
		if err := c.acceptEngine(engine); err != nil {
			return false, fmt.Errorf("pushing migrations: %w", err)
		}
		digest = d
	}
	return digest == HistoryDigest(migrations), nil
}

// HistoryDigest returns the engine's migrate_history_digest(), a hash of
// the applied history (version, name and checksum of every applied
// migration), after checking the engine version in the same round trip.
// It equals HistoryDigest(migrations) exactly when these migrations,
// unchanged, are all that is applied. No lock is taken.
//
// Read while the migrations load, it saves Push that round trip: see
// PushOpts.HistoryDigest.
func (c *Client) HistoryDigest(ctx context.Context) (string, error) {
	conn, release, err := c.acquire(ctx)
	if err != nil {
		return "", err
	}
	defer release()
	engine, digest, err := c.historyDigest(ctx, conn)
	if err != nil {
		if verr := c.verifyEngine(ctx, conn); verr != nil {
			return "", fmt.Errorf("reading the history digest: %w", verr)
		}
		return "", engineError("reading the history digest", err)
	}
	if err := c.acceptEngine(engine); err != nil {
		return "", fmt.Errorf("reading the history digest: %w", err)
	}
	return digest, nil
}

func (c *Client) historyDigest(ctx context.Context, conn *pgx.Conn) (engine, digest string, err error) {
	err = conn.QueryRow(ctx, `select pgmig.engine_version(), pgmig.migrate_history_digest($1::text)`,
		pgx.QueryExecModeExec, c.scope()).Scan(&engine, &digest)
	return engine, digest, err
}

// mergeResults is the engine's last report with the migrations that
// earlier calls of the same push applied marked as such (the last call sees
// them as already applied).
func mergeResults(last []MigrationResult, applied map[migrationKey]MigrationResult) []MigrationResult {
	results := make([]MigrationResult, len(last))
	copy(results, last)
	for i, r := range results {
		if a, ok := applied[resultKey(r)]; ok {
			results[i] = a
		}
	}
	return results
}

// migrationKey identifies a migration: its version, or for a repeatable one
// its name.
type migrationKey struct {
	version int64
	name    string
}

func keyOf(m *Migration) migrationKey {
	if m.Repeatable {
		return migrationKey{name: m.Name}
	}
	return migrationKey{version: m.Version}
}

func resultKey(r MigrationResult) migrationKey {
	if r.Repeatable {
		return migrationKey{name: r.Name}
	}
	return migrationKey{version: r.Version}
}

// lostBeforeApply: a connection that failed before the engine was called
// is a *ConnectionLostError (nothing applied); other errors stay as they
// are.
func lostBeforeApply(conn *pgx.Conn, op string, err error) error {
	if isConnectionLostError(err) || !connectionLost(conn, err) {
		return err
	}
	return &ConnectionLostError{Op: op, Err: err}
}

func migrationByVersion(migrations []*Migration, v int64) *Migration {
	for _, m := range migrations {
		if m.Version == v && !m.Repeatable {
			return m
		}
	}
	return nil
}

// repeatableByName: the repeatable migration of that name, if any.
func repeatableByName(migrations []*Migration, name string) *Migration {
	for _, m := range migrations {
		if m.Repeatable && m.Name == name {
			return m
		}
	}
	return nil
}

func addFiles(results []MigrationResult, migrations []*Migration) {
	byKey := make(map[migrationKey]*Migration, len(migrations))
	for _, m := range migrations {
		byKey[keyOf(m)] = m
	}
	for i := range results {
		if m := byKey[resultKey(results[i])]; m != nil {
			results[i].File = m.File
			if results[i].Label == "" {
				results[i].Label = m.Label
			}
		}
	}
}

func summarize(results []MigrationResult) *PushResult {
	res := &PushResult{Migrations: results}
	for _, r := range results {
		switch r.Outcome {
		case OutcomeApplied:
			res.Applied++
		case OutcomeRepeatableApplied:
			res.Applied++
			res.RepeatableApplied++
		case OutcomeAhead:
			res.Ahead = true
		}
		if r.Outcome != OutcomePending && r.Outcome != OutcomeBeyondTarget && r.Version > res.Version {
			res.Version = r.Version
		}
	}
	if res.Migrations == nil {
		res.Migrations = []MigrationResult{}
	}
	return res
}

// allApplied is the result of a push that found exactly these migrations applied.
func allApplied(migrations []*Migration) []MigrationResult {
	results := make([]MigrationResult, len(migrations))
	for i, m := range migrations {
		results[i] = MigrationResult{Version: m.Version, Name: m.Name, Label: m.Label, File: m.File, Outcome: OutcomeAlreadyApplied}
		if m.Repeatable {
			results[i].Repeatable, results[i].Outcome = true, OutcomeRepeatableUnchanged
		}
	}
	return results
}
