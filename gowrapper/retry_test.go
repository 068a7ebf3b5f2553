package pgmig_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	pgmig "github.com/pgmig/pgmig/gowrapper"
	"github.com/pgmig/pgmig/tests/pgtest"
)

// blockerSession holds locks in an open transaction, as a long report
// would: begun, one statement (a read of a table takes ACCESS SHARE on it),
// then idle in transaction until released.
type blockerSession struct {
	conn *pgx.Conn
	tx   pgx.Tx
	pid  int
}

func holdTable(t *testing.T, db *pgtest.DB, table string) *blockerSession {
	t.Helper()
	return hold(t, db, "select count(*) from "+table)
}

func hold(t *testing.T, db *pgtest.DB, stmt string) *blockerSession {
	t.Helper()
	ctx := context.Background()
	conn := pgtest.Connect(t, pgtest.SetParam(db.URL, "application_name", "reporting"))
	b := &blockerSession{conn: conn}
	if err := conn.QueryRow(ctx, "select pg_backend_pid()").Scan(&b.pid); err != nil {
		t.Fatal(err)
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, stmt); err != nil {
		t.Fatal(err)
	}
	b.tx = tx
	t.Cleanup(func() { b.release() })
	return b
}

func (b *blockerSession) release() { _ = b.tx.Rollback(context.Background()) }

// readers query table in a loop on n connections of their own until stop
// is closed, and report every query's latency.
func readers(t *testing.T, db *pgtest.DB, table string, n int, stop <-chan struct{}) func() []time.Duration {
	t.Helper()
	var mu sync.Mutex
	var lat []time.Duration
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		conn := pgtest.Connect(t, pgtest.SetParam(db.URL, "application_name", "reader"))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				start := time.Now()
				var c int64
				if err := conn.QueryRow(context.Background(), "select count(*) from "+table).Scan(&c); err != nil {
					t.Error(err)
					return
				}
				d := time.Since(start)
				mu.Lock()
				lat = append(lat, d)
				mu.Unlock()
				time.Sleep(10 * time.Millisecond)
			}
		}()
	}
	return func() []time.Duration {
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(lat)
	}
}

func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

// lockScenario: while a session holds a lock on table "accounts" for
// hold, push a migration that alters it; four readers query the table all
// along. Returns the readers' latencies and the push's result.
func lockScenario(t *testing.T, hold time.Duration, opts *pgmig.PushOpts) ([]time.Duration, *pgmig.PushResult, *pgtest.DB, error) {
	t.Helper()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	admin := db.Conn(t)
	if _, err := admin.Exec(ctx, `create table accounts (id int primary key, balance int);
		insert into accounts select g, 0 from generate_series(1, 100) g;
		create table ledger (v int)`); err != nil {
		t.Fatal(err)
	}
	ms := load(t, map[string]string{
		"001_add_currency.sql": "alter table accounts add column currency text;\ninsert into ledger values (1);\n",
		"002_note.sql":         "insert into ledger values (2);\n",
	})
	client := connect(t, db.URL, nil)

	stop := make(chan struct{})
	collect := readers(t, db, "accounts", 4, stop)
	time.Sleep(300 * time.Millisecond) // the readers' baseline
	b := holdTable(t, db, "accounts")
	released := time.AfterFunc(hold, b.release)
	defer released.Stop()
	time.Sleep(200 * time.Millisecond)
	res, err := client.Push(ctx, ms, opts)
	time.Sleep(300 * time.Millisecond)
	close(stop)
	return collect(), res, db, err
}

// TestDDLLockTimeoutSparesReaders is issue 14's property: while another
// transaction holds a lock on a table for seconds, a push that alters the
// table makes plain readers of it wait for as long as the lock is held
// without a DDL lock timeout (their queries queue behind the ALTER's), and
// at most about the timeout with one (the ALTER gives up, its transaction
// rolls back, the readers go on; the push retries); and the push then
// succeeds once the blocker ends, applying each migration once.
func TestDDLLockTimeoutSparesReaders(t *testing.T) {
	const hold = 4 * time.Second
	const timeout = 300 * time.Millisecond

	// (The two runs one after the other, not in parallel: on a shared
	// machine each one's readers would slow the other's.)
	without, res, _, err := lockScenario(t, hold, nil)
	if err != nil {
		t.Fatalf("push without a DDL lock timeout: %v", err)
	}
	if res.Applied != 2 || res.Attempts != 1 {
		t.Fatalf("push without a DDL lock timeout: %+v", res)
	}

	var retries []pgmig.RetryAttempt
	with, res, db, err := lockScenario(t, hold, &pgmig.PushOpts{
		DDLLockTimeout: timeout, Retries: 30, RetryMaxWait: time.Second,
		OnRetry: func(a pgmig.RetryAttempt) { retries = append(retries, a) },
	})
	if err != nil {
		t.Fatalf("push with a DDL lock timeout and retries: %v", err)
	}
	if res.Applied != 2 || res.Attempts < 2 || len(retries) != res.Attempts-1 {
		t.Fatalf("push with retries: %+v, %d retries", res, len(retries))
	}
	for _, r := range retries {
		if r.Err.Relation != "accounts" || len(r.Err.Blockers) == 0 || r.Err.Blockers[0].Application != "reporting" ||
			r.Err.Version != 1 || r.Err.File != "001_add_currency.sql" || r.Attempts != 31 {
			t.Errorf("retry %d: %s %+v", r.Attempt, r.Err.Describe(), r.Err.Blockers)
		}
	}
	// Applied once each: one history row and one ledger row per migration.
	var history, ledger string
	if err := pgtest.Connect(t, db.URL).QueryRow(context.Background(), `select
		(select string_agg(version::text, ',' order by version) from pgmig.history),
		(select string_agg(v::text, ',' order by v) from ledger)`).Scan(&history, &ledger); err != nil {
		t.Fatal(err)
	}
	if history != "1,2" || ledger != "1,2" {
		t.Errorf("history %s, ledger %s: want each migration applied once (1,2)", history, ledger)
	}

	maxWithout, maxWith := slices.Max(without), slices.Max(with)
	t.Logf("readers' latency while a session held the table for %v: without a DDL lock timeout max %v (p99 %v, %d queries); "+
		"with --ddl-lock-timeout %v max %v (p99 %v, p50 %v, %d queries); the push took %d attempts",
		hold, maxWithout.Round(time.Millisecond), percentile(without, 0.99).Round(time.Millisecond), len(without),
		timeout, maxWith.Round(time.Millisecond), percentile(with, 0.99).Round(time.Millisecond),
		percentile(with, 0.5).Round(100*time.Microsecond), len(with), res.Attempts)
	// Without: the readers queued behind the ALTER until the blocker ended
	// (about hold minus the 200ms before the push). With: about the timeout;
	// the bound leaves room for a loaded test machine.
	if maxWithout < hold/2 {
		t.Errorf("without a DDL lock timeout the readers waited at most %v; the scenario did not block them (want about %v)", maxWithout, hold)
	}
	if maxWith > timeout+1500*time.Millisecond || maxWith > maxWithout/2 {
		t.Errorf("with a DDL lock timeout of %v the readers still waited up to %v (%v without)", timeout, maxWith, maxWithout)
	}
}

// TestBlockedErrorNamesBlocker: without retries, a blocked push fails with
// a *BlockedError naming the migration, the relation and the session in
// the way, having applied nothing.
func TestBlockedErrorNamesBlocker(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	admin := db.Conn(t)
	if _, err := admin.Exec(ctx, "create table orders (id int)"); err != nil {
		t.Fatal(err)
	}
	ms := load(t, map[string]string{
		"001_t.sql":       "create table t (i int);\n",
		"002_add_col.sql": "alter table orders add column note text;\n",
	})
	b := holdTable(t, db, "orders")
	client := connect(t, db.URL, nil)
	start := time.Now()
	_, err := client.Push(ctx, ms, &pgmig.PushOpts{DDLLockTimeout: 250 * time.Millisecond})
	took := time.Since(start)
	var blocked *pgmig.BlockedError
	if !errors.As(err, &blocked) || !errors.Is(err, pgmig.ErrBlocked) {
		t.Fatalf("want a *BlockedError, got %T %v", err, err)
	}
	if blocked.Version != 2 || blocked.File != "002_add_col.sql" || blocked.Relation != "orders" ||
		blocked.LockTimeout != 250*time.Millisecond || blocked.Attempts != 1 || len(blocked.Blockers) != 1 {
		t.Fatalf("blocked: %+v", blocked)
	}
	bl := blocked.Blockers[0]
	if bl.PID != b.pid || bl.Application != "reporting" || bl.State != "idle in transaction" || bl.Relation != "orders" ||
		!slices.Contains(bl.Modes, "AccessShareLock") || !bl.Granted || bl.Since == nil || bl.Query != "select count(*) from orders" {
		t.Errorf("blocker: %+v", bl)
	}
	want := fmt.Sprintf(`002_add_col.sql blocked on "orders" by pid %d (reporting, idle in transaction `, b.pid)
	if got := blocked.Describe(); len(got) < len(want) || got[:len(want)] != want {
		t.Errorf("Describe() = %q, want it to start with %q", got, want)
	}
	if took > 5*time.Second {
		t.Errorf("the blocked push took %v", took)
	}
	// One transaction: version 1 was rolled back with it.
	var n int
	if err := admin.QueryRow(ctx, `select (select count(*) from pgmig.history) + (select count(*) from pg_class where relname = 't')
		+ (select count(*) from pg_attribute where attrelid = 'orders'::regclass and attname = 'note')`).Scan(&n); err != nil || n != 0 {
		t.Errorf("after the blocked push: %d history rows or objects, %v; want nothing applied", n, err)
	}
	// The session's lock_timeout is its own again (the timeout covered the
	// migrations' statements only).
	var lt string
	if err := client.Conn().QueryRow(ctx, "show lock_timeout").Scan(&lt); err != nil || lt != "0" {
		t.Errorf("lock_timeout after the push: %q %v", lt, err)
	}
	b.release()
	if res, err := client.Push(ctx, ms, &pgmig.PushOpts{DDLLockTimeout: 250 * time.Millisecond}); err != nil || res.Applied != 2 {
		t.Fatalf("after the blocker ended: %+v %v", res, err)
	}
}

// TestRetriesRunOut: the blocker outlasts every retry: the last attempt's
// *BlockedError, with the attempts counted, and nothing applied.
func TestRetriesRunOut(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	if _, err := db.Conn(t).Exec(ctx, "create table orders (id int)"); err != nil {
		t.Fatal(err)
	}
	holdTable(t, db, "orders")
	ms := load(t, map[string]string{"001_add_col.sql": "alter table orders add column note text;\n"})
	var waits []time.Duration
	_, err := connect(t, db.URL, nil).Push(ctx, ms, &pgmig.PushOpts{
		DDLLockTimeout: 100 * time.Millisecond, Retries: 3, RetryMaxWait: 600 * time.Millisecond,
		OnRetry: func(a pgmig.RetryAttempt) { waits = append(waits, a.Wait) },
	})
	var blocked *pgmig.BlockedError
	if !errors.As(err, &blocked) || blocked.Attempts != 4 || blocked.MaxAttempts != 4 || len(waits) != 3 {
		t.Fatalf("want a *BlockedError after 4 attempts, got %v (%d retries)", err, len(waits))
	}
	// Backoff: 500ms, then capped at 600ms, each jittered into its upper half.
	for i, w := range waits {
		hi := min(500*time.Millisecond<<i, 600*time.Millisecond)
		if w < hi/2 || w > hi {
			t.Errorf("wait %d: %v, want between %v and %v", i+1, w, hi/2, hi)
		}
	}
}

// TestLockTimeoutMarker: a migration's own `---- pgmig: lock-timeout D
// ----` line overrides the push's DDL lock timeout: 0 lets it wait as long
// as it takes, while the others keep the push's.
func TestLockTimeoutMarker(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	if _, err := db.Conn(t).Exec(ctx, "create table orders (id int); create table items (id int)"); err != nil {
		t.Fatal(err)
	}
	ms := load(t, map[string]string{
		"001_orders.sql": "---- pgmig: lock-timeout 0 ----\nalter table orders add column note text;\n",
		"002_items.sql":  "alter table items add column note text;\n",
	})
	if ms[0].LockTimeout == nil || *ms[0].LockTimeout != 0 || ms[1].LockTimeout != nil {
		t.Fatalf("markers: %v %v", ms[0].LockTimeout, ms[1].LockTimeout)
	}
	b := holdTable(t, db, "orders")
	time.AfterFunc(time.Second, b.release)
	start := time.Now()
	res, err := connect(t, db.URL, nil).Push(ctx, ms, &pgmig.PushOpts{DDLLockTimeout: 100 * time.Millisecond})
	if err != nil || res.Applied != 2 || res.Attempts != 1 {
		t.Fatalf("push: %+v %v", res, err)
	}
	if took := time.Since(start); took < 900*time.Millisecond {
		t.Errorf("the push took %v: version 1 should have waited for the blocker (about 1s)", took)
	}

	// The same files, the other way round: the marker's short timeout
	// under a push without one.
	db2 := pgtest.NewDB(t)
	if _, err := db2.Conn(t).Exec(ctx, "create table orders (id int); create table items (id int)"); err != nil {
		t.Fatal(err)
	}
	ms2 := load(t, map[string]string{
		"001_orders.sql": "alter table orders add column note text;\n",
		"002_items.sql":  "---- pgmig: lock-timeout 150ms ----\nalter table items add column note text;\n",
	})
	holdTable(t, db2, "items")
	_, err = connect(t, db2.URL, nil).Push(ctx, ms2, nil)
	var blocked *pgmig.BlockedError
	if !errors.As(err, &blocked) || blocked.Version != 2 || blocked.LockTimeout != 150*time.Millisecond || blocked.Relation != "items" {
		t.Fatalf("want version 2 blocked on items after 150ms, got %v", err)
	}
}

// TestDDLLockTimeoutNonTransactional: the statements of a
// non-transactional migration get the timeout too (a plain ALTER TABLE
// there blocks readers just the same), except a CONCURRENTLY build, whose
// wait for older transactions blocks nobody: it waits them out.
func TestDDLLockTimeoutNonTransactional(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	admin := db.Conn(t)
	if _, err := admin.Exec(ctx, "create table orders (id int); create table items (id int)"); err != nil {
		t.Fatal(err)
	}
	client := connect(t, db.URL, nil)

	ms := load(t, map[string]string{
		"001_index.sql": "---- tern: disable-tx ----\ncreate index concurrently items_id on items (id);\n",
		"002_alter.sql": "---- tern: disable-tx ----\nalter table orders add column note text;\n",
	})
	// A concurrent index build while a transaction writing to the table is
	// open: the build waits for it (a lock wait on that transaction), and
	// the 100ms timeout does not cancel it.
	b := hold(t, db, "insert into items values (1)")
	time.AfterFunc(time.Second, b.release)
	start := time.Now()
	if res, err := client.Push(ctx, ms, &pgmig.PushOpts{DDLLockTimeout: 100 * time.Millisecond, TargetVersion: 1}); err != nil || res.Applied != 1 {
		t.Fatalf("concurrent build under a DDL lock timeout: %+v %v", res, err)
	}
	if took := time.Since(start); took < 900*time.Millisecond {
		t.Errorf("the build took %v; it should have waited for the open transaction (1s)", took)
	}

	// A plain ALTER TABLE in a non-transactional migration: blocked, named,
	// and not retried (the run is recorded as failed; resolve decides).
	b = holdTable(t, db, "orders")
	var retried int
	_, err := client.Push(ctx, ms, &pgmig.PushOpts{DDLLockTimeout: 100 * time.Millisecond, Retries: 5,
		OnRetry: func(pgmig.RetryAttempt) { retried++ }})
	var blocked *pgmig.BlockedError
	if !errors.As(err, &blocked) || !blocked.NonTransactional || blocked.Statement != 1 || blocked.Statements != 1 ||
		blocked.Relation != "orders" || len(blocked.Blockers) == 0 || blocked.Blockers[0].PID != b.pid || retried != 0 {
		t.Fatalf("want a non-transactional *BlockedError, not retried, got %v (retried %d)", err, retried)
	}
	b.release()
	if _, err := client.Push(ctx, ms, nil); !errors.Is(err, pgmig.ErrInterrupted) {
		t.Fatalf("next push: %v, want ErrInterrupted until resolved", err)
	}
}
