package pgmig

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"sync"
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
	// SegmentSize splits the pending migrations into consecutive segments
	// of at most this many, each applied and committed by its own call of
	// migrate_apply: one transaction holds a lock on every object it
	// creates until it commits, and on default server settings a few
	// thousand small DDL migrations in one transaction exhaust the shared
	// lock table (SQLSTATE 53200, "out of shared memory").
	//
	//   0 (default)   automatic: one transaction while it fits; with more
	//                 than 20 pending, the engine counts the locks its
	//                 transaction holds and stops after the migration that
	//                 brings it near half the server's lock table
	//                 (migrate_apply's lock_budget); Push commits and
	//                 continues from there in a new transaction
	//   N > 0         at most N per segment
	//   SegmentAll    one transaction, whatever it takes
	//
	// Each segment is atomic; a failure rolls back its own segment only,
	// earlier segments stay applied (MigrationError.Applied counts them) and
	// the next push continues after them. A migration marked
	// `---- pgmig: commit-after ----` always ends a segment, and a
	// non-transactional one is a step of its own.
	SegmentSize int
	// HistoryDigest is what Client.HistoryDigest returned on this Client,
	// read while the migrations were still loading (the pgmig CLI reads it
	// as soon as it is connected). Push then starts from it instead of
	// querying the digest itself: when it equals HistoryDigest(migrations)
	// nothing is pending and Push returns at once, Prechecked. It means
	// what the precheck's own query means, as of when it was read: neither
	// takes a lock, and Push re-checks everything under the lock when there
	// is something to apply. Ignored with Config.DisablePrecheck or DryRun.
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
	// with SegmentSize, commit-after, non-transactional migrations, or
	// when the lock budget of the automatic mode ended a transaction.
	Segments int `json:"segments"`
	// SegmentSize is PushOpts.SegmentSize when the push was split by it; 0
	// otherwise.
	SegmentSize int `json:"segment_size,omitempty"`
	// LockBudget is the lock budget of the automatic mode when it ended at
	// least one transaction (see PushOpts.SegmentSize); 0 otherwise.
	LockBudget int           `json:"lock_budget,omitempty"`
	Duration   time.Duration `json:"duration_ns"`
}

// Push applies the pending migrations with one call of migrate_apply: the
// engine takes its lock, reads the history, checks drift and applies
// everything pending in one transaction. On failure nothing was applied.
//
// Some batches take several steps, each atomic, each under the lock:
// segments ended by `---- pgmig: commit-after ----` markers, a
// non-transactional migration (`---- tern: disable-tx ----`) run from the
// client statement by statement, and segments sized to fit the server's
// lock table when many migrations are pending (see PushOpts.SegmentSize and
// docs/nontransactional.md). A failure then rolls back its own step only.
//
// Unless Config.DisablePrecheck or opts.DryRun, Push first compares,
// without any lock, the history digest (migrate_history_digest) with its
// files' (HistoryDigest): when they are equal it returns at once with
// Prechecked set, so a service starting up against an up-to-date database
// costs one small round trip. An empty history needs no further check;
// otherwise it asks migrate_plan with a manifest (versions and checksums,
// no SQL) whether anything is pending, and returns when nothing is. That
// check also verifies the engine version.
//
// Errors: *MigrationError for a failing migration (errors.As); ErrDrift,
// ErrLockTimeout, ErrInvalidBatch, ErrNotRunnable, ErrTransactionContext,
// ErrUnsupportedEngine, ErrEngineNotInstalled (errors.Is), with the
// *pgconn.PgError reachable through errors.As. ErrPermissionDenied: the
// role lacks privileges on the engine.
//
// A connection that fails mid-push (closed, reset, EOF, timeout, cancelled
// context) gives a *ConnectionLostError (errors.Is ErrConnectionLost): when
// it failed before the COMMIT of a step was sent, the server rolls that
// step back (OutcomeUnknown false); while or after the COMMIT was sent it
// matches ErrOutcomeUnknown: the step may or may not be committed. Either
// way pushing again is safe: applied migrations are recorded and skipped.
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

	// The files' history digest, compared with the server's by the precheck
	// and under the lock by every call: computed once, when first needed.
	filesDigest := sync.OnceValue(func() string { return HistoryDigest(migrations) })

	var pending []int64 // known when the precheck ran
	if !c.config.DisablePrecheck && !opts.DryRun {
		res, p, err := c.precheck(ctx, conn, migrations, filesDigest, opts)
		if err != nil {
			return nil, lostBeforeApply(conn, err)
		}
		if res != nil {
			res.Duration = time.Since(start)
			return res, nil
		}
		pending = p
	}
	if err := c.verifyEngine(ctx, conn); err != nil {
		return nil, lostBeforeApply(conn, fmt.Errorf("pushing migrations: %w", err))
	}

	route := &noticeRoute{progress: opts.Progress, notice: opts.Notice, files: filesByVersion(migrations)}
	detach := attachRoute(conn.PgConn(), route)
	defer detach()

	steps := []step{{target: opts.TargetVersion, count: len(pending)}}
	segmentSize := opts.SegmentSize
	budget := 0 // migrate_apply's lock_budget; 0: none
	if !opts.DryRun && (segmentSize > 0 || hasCommitAfter(migrations) || hasNonTransactional(migrations) ||
		segmentSize == 0 && len(migrations) > autoSegmentMin) {
		if pending == nil {
			if pending, err = c.pendingVersions(ctx, conn, migrations, opts); err != nil {
				return nil, lostBeforeApply(conn, err)
			}
		}
		if segmentSize == 0 && len(pending) > autoSegmentMin {
			if budget, err = c.lockBudget(ctx, conn); err != nil {
				return nil, lostBeforeApply(conn, fmt.Errorf("pushing migrations: reading the lock table size: %w", err))
			}
		}
		steps = planSteps(migrations, pending, segmentSize, opts.TargetVersion)
		route.total = len(pending)
	}

	merged := map[int64]MigrationResult{}
	applied, calls, budgetStops := 0, 0, 0
	for _, st := range steps {
		var results []MigrationResult
		if st.nontx != nil {
			var r MigrationResult
			r, err = c.applyNonTransactional(ctx, conn, migrations, st.nontx, opts, applied+1, route.total, route)
			if err == nil {
				results = []MigrationResult{r}
			}
			calls++
		} else {
			// A step is one call unless the engine stops at the lock budget: then
			// it is committed and the step goes on from its last applied version.
			for after := st.after; ; {
				var batch []byte
				if batch, err = segmentBatch(migrations, after, st.target); err != nil {
					return nil, fmt.Errorf("encoding batch: %w", err)
				}
				var part []MigrationResult
				part, err = c.apply(ctx, conn, batch, migrations, filesDigest, opts, st.target, budget, route)
				calls++
				if err != nil {
					if !errors.As(err, new(*ConnectionLostError)) {
						if connectionLost(conn, err) {
							// COMMIT not sent: the server rolls this step back.
							err = &ConnectionLostError{Op: "pushing migrations", Err: err}
						} else {
							err = c.pushError(ctx, conn, migrations, route, err)
						}
					}
					break
				}
				results = append(results, part...)
				last, left := budgetProgress(part, after, st.target)
				if budget == 0 || last == 0 || !left {
					break
				}
				budgetStops++
				after = last
				route.offset += countApplied(part)
			}
		}
		if err != nil {
			// Committed before the failure: earlier steps and this step's
			// calls that ended at the lock budget.
			committed := applied + countApplied(results)
			var merr *MigrationError
			if errors.As(err, &merr) {
				merr.Applied = committed
				merr.SegmentSize = st.count
			}
			var lost *ConnectionLostError
			if errors.As(err, &lost) {
				lost.Applied = committed
			}
			return nil, err
		}
		for _, r := range results {
			if prev, ok := merged[r.Version]; !ok || prev.Outcome != OutcomeApplied {
				merged[r.Version] = r
			}
		}
		applied += countApplied(results)
		route.offset = applied
	}
	results := make([]MigrationResult, 0, len(merged))
	for _, r := range merged {
		results = append(results, r)
	}
	sort.Slice(results, func(i, j int) bool { return results[i].Version < results[j].Version })
	res := summarize(results)
	res.Segments = calls
	if len(steps) > 1 && segmentSize > 0 {
		res.SegmentSize = segmentSize
	}
	if budgetStops > 0 {
		res.LockBudget = budget
	}
	res.Duration = time.Since(start)
	return res, nil
}

// budgetProgress reads one call's results for a step covering (after,
// target] (target 0: no bound): the last version it applied (0: none) and
// whether migrations of the step are left pending, which after a successful
// call with a lock budget means the engine stopped at the budget.
func budgetProgress(results []MigrationResult, after, target int64) (last int64, left bool) {
	for _, r := range results {
		if r.Version <= after || target != 0 && r.Version > target {
			continue
		}
		switch r.Outcome {
		case OutcomeApplied:
			last = max(last, r.Version)
		case OutcomePending:
			left = true
		}
	}
	return last, left
}

func countApplied(results []MigrationResult) int {
	n := 0
	for _, r := range results {
		if r.Outcome == OutcomeApplied {
			n++
		}
	}
	return n
}

// lostBeforeApply: a connection that failed before anything was applied
// is a *ConnectionLostError (nothing committed); other errors stay as they
// are.
func lostBeforeApply(conn *pgx.Conn, err error) error {
	if errors.As(err, new(*ConnectionLostError)) || !connectionLost(conn, err) {
		return err
	}
	return &ConnectionLostError{Op: "pushing migrations", Err: err}
}

// autoSegmentMin: pushes with at most this many pending migrations are one
// transaction unless asked otherwise; no server lock table is that small.
const autoSegmentMin = 20

// lockBudget is the automatic mode's lock budget: half the server's shared
// lock table, which has room for max_locks_per_transaction *
// (max_connections + max_prepared_transactions) locks (PostgreSQL docs,
// "Lock Management"; the table can borrow some spare shared memory beyond
// that, which is not counted on). The other half is headroom for every
// other session.
func (c *Client) lockBudget(ctx context.Context, conn *pgx.Conn) (int, error) {
	var slots int64
	err := conn.QueryRow(ctx, `select current_setting('max_locks_per_transaction')::bigint *
		(current_setting('max_connections')::bigint + current_setting('max_prepared_transactions')::bigint)`,
		pgx.QueryExecModeExec).Scan(&slots)
	if err != nil {
		return 0, err
	}
	return int(max(1, min(slots/2, math.MaxInt32))), nil
}

// apply is one call of migrate_apply, in a transaction that already holds
// the history lock (see lockHistory).
func (c *Client) apply(ctx context.Context, conn *pgx.Conn, batch []byte, migrations []*Migration, filesDigest func() string, opts *PushOpts, target int64, budget int, route *noticeRoute) ([]MigrationResult, error) {
	// QueryExecModeExec: one round trip (no separate prepare), the batch
	// goes as a text parameter, never spliced into SQL. The lock is held
	// by then: lock_timeout stays NULL.
	query := `select version, name, outcome, duration, applied_at from ` + c.fn("migrate_apply") +
		`($1::jsonb, target_version => $2, allow_out_of_order => $3,
		  allow_missing => $4, dry_run => $5, client_info => $6, lock_budget => $7)`
	args := []any{pgx.QueryExecModeExec, string(batch), nullZero(target),
		opts.AllowOutOfOrder, opts.AllowMissing, opts.DryRun, c.config.ClientInfo, nullZero(int64(budget))}
	tx, err := c.lockHistory(ctx, conn, opts.LockTimeout)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if !opts.DryRun {
		// Racing pushers of the same files: whoever gets the lock after the winner finds
		// the history equal to its files with one tiny query under the lock, instead of
		// uploading and validating the whole batch while every other pusher waits.
		// Nobody to show progress or notices to: ask the server not to send
		// them for this transaction (client_min_messages = warning, local).
		// Each notice is a separate flushed message, and a Go client reading
		// a thousand of them pays far more per message than they are worth;
		// a failure is still named by the engine's PM010 WARNING.
		quiet := opts.Progress == nil && opts.Notice == nil
		var digest string
		if err := tx.QueryRow(ctx, `select `+c.fn("migrate_history_digest")+`(), case when $1 then pg_catalog.set_config('client_min_messages', 'warning', true) end`,
			pgx.QueryExecModeExec, quiet).Scan(&digest, nil); err != nil {
			return nil, err
		}
		if len(migrations) > 0 && digest == filesDigest() {
			return allApplied(migrations), nil
		}
	}
	return c.runLocked(ctx, conn, tx, "pushing migrations", query, migrations, args...)
}

// lockHistory opens a transaction on conn that holds the history lock. It
// queues for the lock in PostgreSQL's lock queue, so the lock passes to it
// the moment the holder commits; but while a non-transactional migration
// runs it waits without holding a snapshot, polling.
//
// Why not always queue: a migrator that waits while another one runs a
// non-transactional migration must not hold a snapshot, or that
// migration's CREATE INDEX CONCURRENTLY waits for it (it waits for every
// transaction whose xmin predates the build), the waiter waits for the
// lock holder and the holder for its index: nobody moves. Queueing inside
// migrate_apply holds the statement's snapshot. Even a plain LOCK TABLE
// can: looking up the table name can take a catalog snapshot (a syscache
// miss), which stays registered, xmin and all, for as long as the
// statement waits — seen in pg_stat_activity.backend_xmin.
//
// So every attempt is a transaction taking the lock in one round trip:
//
//   - the first one, and each one after an idle wait, with LOCK TABLE ...
//     NOWAIT, which fails at once;
//   - after a failed attempt, when no non-transactional migration is
//     running (see lockWaitStateSQL), a queued LOCK TABLE under SET LOCAL
//     lock_timeout = lockSlice (shorter than the session's
//     statement_timeout). It gets the lock as soon as the holder commits;
//     if the slice runs out first, the next attempt checks again.
//
// A failed attempt is rolled back in the same round trip as that check.
// While a non-transactional migration runs, the session is idle between
// NOWAIT attempts (5 ms doubling to 200 ms, plus jitter) and holds nothing:
// PostgreSQL drops the catalog snapshot before waiting for client input. A
// queued slice already waiting when a non-transactional migration starts
// may hold a snapshot its index build waits for, but only until the slice
// runs out and is rolled back: a build waits for a waiter one slice at
// most.
//
// timeout 0 means the session's lock_timeout (0 there: no limit), a
// negative timeout one attempt only; it counts from the first failed
// attempt. On timeout it fails like the engine (a PgError with PM003 naming
// the holder). A cancelled ctx ends the wait with ctx.Err() (pgx closes a
// connection whose query a cancelled ctx interrupts). Everything goes
// through the simple protocol (see applyNonTransactional).
func (c *Client) lockHistory(ctx context.Context, conn *pgx.Conn, timeout time.Duration) (pgx.Tx, error) {
	bg := context.WithoutCancel(ctx)
	var deadline time.Time
	delay := 5 * time.Millisecond
	attemptSQL := lockNowaitSQL
	for attempt := 0; ; attempt++ {
		tx, err := conn.BeginTx(ctx, pgx.TxOptions{BeginQuery: attemptSQL})
		if err == nil {
			return tx, nil
		}
		var pgErr *pgconn.PgError
		if ctx.Err() != nil || !errors.As(err, &pgErr) || pgErr.Code != "55P03" { // lock_not_available
			return nil, abandonLockWait(ctx, conn, err)
		}
		if timeout < 0 {
			_, _ = conn.Exec(bg, "rollback")
			return nil, c.lockTimeoutError(bg, conn, timeout)
		}
		state, err := readLockWaitState(ctx, conn)
		if err != nil {
			return nil, abandonLockWait(ctx, conn, err)
		}
		if attempt == 0 {
			if timeout == 0 {
				timeout = state.lockTimeout
			}
			if timeout > 0 {
				deadline = time.Now().Add(timeout)
			}
		}
		left := time.Duration(math.MaxInt64)
		if !deadline.IsZero() {
			if left = time.Until(deadline); left <= 0 {
				return nil, c.lockTimeoutError(bg, conn, timeout)
			}
		}
		if !state.nontx {
			slice := min(lockSlice, left)
			if state.statementTimeout > 0 {
				// A slice must run out before the session's statement_timeout
				// cancels the LOCK TABLE (57014, a failure, not a retry).
				slice = min(slice, state.statementTimeout/2)
			}
			attemptSQL = lockQueueSQL(slice, state.lockTimeout)
			continue
		}
		attemptSQL = lockNowaitSQL
		wait := min(delay+time.Duration(rand.Int64N(int64(delay))), left)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
		delay = min(2*delay, 200*time.Millisecond)
	}
}

// lockSlice is the longest one queued attempt at the history lock waits
// (lockHistory). The lock passes to a queued waiter when its holder
// commits, whatever the slice; the slice only bounds two things: how long
// a waiter that queued just before a non-transactional migration started
// can hold up its CREATE INDEX CONCURRENTLY, and how long the session of a
// client that vanished while queued keeps its place in the queue. Against
// that, every slice that runs out costs the waiter a round trip and a look
// at pg_stat_activity (readLockWaitState, ~1 ms of server time): at 200 ms,
// 31 waiters make ~155 checks a second, in line with the ~100 attempts of
// the polling before at its 200-400 ms cap; at 20 ms ten times as many, on
// the server the holder is migrating. 200 ms is also well below
// deadlock_timeout (1 s by default), so these waits never run the deadlock
// detector, which takes every partition lock of the shared lock table.
const lockSlice = 200 * time.Millisecond

// lockNowaitSQL is one attempt at the history lock that does not wait.
const lockNowaitSQL = "begin; lock table pgmig.history in exclusive mode nowait"

// lockQueueSQL is one attempt at the history lock that waits in the queue
// at most slice, then restores the session's lock_timeout for the rest of
// the transaction (the migrations' own lock waits).
func lockQueueSQL(slice, session time.Duration) string {
	ms := func(d time.Duration) int64 { return int64((d + time.Millisecond - 1) / time.Millisecond) }
	return fmt.Sprintf("begin; set local lock_timeout = %d; lock table pgmig.history in exclusive mode; set local lock_timeout = %d",
		max(1, ms(slice)), ms(session))
}

// lockWaitStateSQL rolls a failed attempt back, then reads whether a
// non-transactional migration is running, and the session's lock_timeout
// and statement_timeout in ms. Running means what it means to the engine
// (_lock_history in sql/src/50_apply.sql): a 'running' row in
// pgmig.nontx_run, or a session named 'pgmig: non-transactional migration
// V', as nontx_begin names the lock holder until it commits, before the
// first row is written. The name is looked up in this database's
// pg_stat_activity, where the engine goes through pg_locks to the lock
// holder: pg_locks copies the whole shared lock table, which the holder of
// a large batch fills with thousands of entries (~5 ms a look with 100
// realistic migrations applied, against ~1 ms), and the waiters look once
// a slice each. Only a session in this database can hold a CREATE INDEX
// CONCURRENTLY here up.
const lockWaitStateSQL = `rollback;
select exists (select from pgmig.nontx_run where state = 'running')
       or exists (select from pg_stat_activity where datname = current_database()
                  and application_name like 'pgmig: non-transactional migration %'),
       ceil(extract(epoch from current_setting('lock_timeout')::interval) * 1000)::bigint,
       ceil(extract(epoch from current_setting('statement_timeout')::interval) * 1000)::bigint`

// lockWaitState is what lockHistory needs to know after a failed attempt.
type lockWaitState struct {
	nontx            bool          // a non-transactional migration is running
	lockTimeout      time.Duration // the session's (0: none)
	statementTimeout time.Duration // the session's (0: none)
}

// readLockWaitState ends a failed attempt at the lock and reads, in the
// same round trip, the lockWaitState.
func readLockWaitState(ctx context.Context, conn *pgx.Conn) (lockWaitState, error) {
	results, err := conn.PgConn().Exec(ctx, lockWaitStateSQL).ReadAll()
	if err != nil {
		return lockWaitState{}, err
	}
	if len(results) != 2 || len(results[1].Rows) != 1 || len(results[1].Rows[0]) != 3 {
		return lockWaitState{}, fmt.Errorf("checking for a running non-transactional migration: unexpected answer")
	}
	row := results[1].Rows[0]
	var ms [2]int64
	for i := range ms {
		if ms[i], err = strconv.ParseInt(string(row[i+1]), 10, 64); err != nil {
			return lockWaitState{}, fmt.Errorf("reading the session's timeouts: %w", err)
		}
	}
	return lockWaitState{nontx: string(row[0]) == "t",
		lockTimeout: time.Duration(ms[0]) * time.Millisecond, statementTimeout: time.Duration(ms[1]) * time.Millisecond}, nil
}

// abandonLockWait ends a failed attempt at the lock that left a
// transaction open and says why the wait ended: ctx.Err() when ctx was
// cancelled, else err.
func abandonLockWait(ctx context.Context, conn *pgx.Conn, err error) error {
	if s := conn.PgConn().TxStatus(); !conn.IsClosed() && (s == 'T' || s == 'E') {
		_, _ = conn.Exec(context.WithoutCancel(ctx), "rollback")
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// lockTimeoutError is the engine's PM003, naming the holder.
func (c *Client) lockTimeoutError(ctx context.Context, conn *pgx.Conn, waited time.Duration) error {
	holder := "a session this role cannot see (grant pg_read_all_stats to see it)"
	var text *string
	if err := conn.QueryRow(ctx, "select pgmig._lock_holder_text()", pgx.QueryExecModeSimpleProtocol).Scan(&text); err == nil && text != nil {
		holder = *text
	}
	how := "waited " + waited.String()
	if waited < 0 {
		how = "did not wait"
	}
	return &pgconn.PgError{
		Severity: "ERROR", Code: codeLockTimeout,
		Message: fmt.Sprintf("pgmig: another migrator holds the migration lock (%s)", how),
		Detail:  "held by " + holder,
		Hint:    "Wait for it to finish and run again: already applied migrations are skipped. `pgmig status` shows who is migrating.",
	}
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
func (c *Client) precheck(ctx context.Context, conn *pgx.Conn, migrations []*Migration, filesDigest func() string, opts *PushOpts) (*PushResult, []int64, error) {
	// Cheapest first: when the history digest equals the files' digest, exactly these
	// migrations are applied and nothing drifted. One tiny query, nothing uploaded,
	// or none at all when the caller read the digest already.
	var engine string
	digest := opts.HistoryDigest
	if digest == "" || !c.engineChecked() {
		var err error
		if engine, digest, err = c.historyDigest(ctx, conn); err != nil {
			return nil, nil, c.precheckError(ctx, conn, err)
		}
		if err := c.acceptEngine(engine); err != nil {
			return nil, nil, fmt.Errorf("pushing migrations: %w", err)
		}
	}
	if len(migrations) > 0 && digest == filesDigest() {
		res := summarize(allApplied(migrations))
		res.Prechecked = true
		return res, nil, nil
	}
	if len(migrations) > 0 && digest == emptyHistoryDigest {
		// Nothing applied yet (a fresh database): every migration up to the
		// target is pending and nothing can have drifted; planning the
		// manifest would only say so.
		pending := make([]int64, 0, len(migrations))
		for _, m := range migrations {
			if opts.TargetVersion == 0 || m.Version <= opts.TargetVersion {
				pending = append(pending, m.Version)
			}
		}
		sort.Slice(pending, func(i, j int) bool { return pending[i] < pending[j] })
		return nil, pending, nil
	}

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
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && isEngineMissing(pgErr) {
			// Tell "not installed" from "installed, but another version".
			if err := c.verifyEngine(ctx, conn); err != nil {
				return "", fmt.Errorf("reading the history digest: %w", err)
			}
		}
		return "", engineError("reading the history digest", err)
	}
	if err := c.acceptEngine(engine); err != nil {
		return "", fmt.Errorf("reading the history digest: %w", err)
	}
	return digest, nil
}

func (c *Client) historyDigest(ctx context.Context, conn *pgx.Conn) (engine, digest string, err error) {
	err = conn.QueryRow(ctx, `select pgmig.engine_version(), `+c.fn("migrate_history_digest")+`()`,
		pgx.QueryExecModeExec).Scan(&engine, &digest)
	return engine, digest, err
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
		return engineError("pushing migrations", err)
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

// allApplied is the result of a push that found exactly these migrations applied.
func allApplied(migrations []*Migration) []MigrationResult {
	results := make([]MigrationResult, len(migrations))
	for i, m := range migrations {
		results[i] = MigrationResult{Version: m.Version, Name: m.Name, File: m.File, Outcome: OutcomeAlreadyApplied}
	}
	return results
}
