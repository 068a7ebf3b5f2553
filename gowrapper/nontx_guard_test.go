package pgmig_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	pgmig "github.com/pgmig/pgmig/gowrapper"
	"github.com/pgmig/pgmig/tests/pgtest"
)

// A non-transactional statement that needs a lock on every table (a database-wide VACUUM or
// ANALYZE) would wait forever for the migration's own history lock: the engine refuses it up
// front, naming it, before anything runs, and nothing is left for an operator to resolve.
func TestNonTransactionalSelfDeadlockRefusedUpFront(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, stmt := range []string{"vacuum;", "ANALYZE;", "vacuum (verbose, analyze);", "create index concurrently h on pgmig.history (name);"} {
		db := pgtest.NewDB(t)
		client := connect(t, db.URL, nil)
		files := map[string]string{
			"001_t.sql":     "create table t (id int);",
			"002_nontx.sql": "---- tern: disable-tx ----\ncreate index concurrently t_id on t (id);\n" + stmt + "\n",
		}
		start := time.Now()
		_, err := client.Push(ctx, load(t, files), nil)
		var pgErr *pgconn.PgError
		if !errors.Is(err, pgmig.ErrNotRunnable) || !errors.As(err, &pgErr) || !strings.Contains(pgErr.Message, "statement 2 of 2") {
			t.Fatalf("%q: %v", stmt, err)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("%q: refused after %v", stmt, d)
		}
		// Nothing ran: the index of statement 1 is not there, and the next push is not blocked.
		var n int
		if err := db.Conn(t).QueryRow(ctx, "select (select count(*) from pg_class where relname = 't_id') + (select count(*) from pgmig.nontx_run)").Scan(&n); err != nil || n != 0 {
			t.Errorf("%q: %d leftovers (%v)", stmt, n, err)
		}
		files["002_nontx.sql"] = "---- tern: disable-tx ----\ncreate index concurrently t_id on t (id);\n"
		if res, err := client.Push(ctx, load(t, files), nil); err != nil || res.Applied != 1 {
			t.Fatalf("%q: push after fixing the file: %+v %v", stmt, res, err)
		}
	}
}

// What the text does not show — a function that takes a lock on pgmig's history — the
// client's watchdog catches: the statement is cancelled within about a second instead of
// waiting forever, and the error says why.
func TestNonTransactionalSelfDeadlockCancelledByWatchdog(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	client := connect(t, db.URL, nil)
	files := map[string]string{
		"001_f.sql":     "create function touch_history() returns void language plpgsql as $$ begin execute 'lock table ' || 'pg' || 'mig.history in share mode'; end $$;",
		"002_nontx.sql": "---- tern: disable-tx ----\nselect touch_history();\n",
	}
	start := time.Now()
	_, err := client.Push(ctx, load(t, files), nil)
	var merr *pgmig.MigrationError
	if !errors.As(err, &merr) || merr.Version != 2 || merr.Blocked == "" || !strings.Contains(merr.Blocked, "history lock") {
		t.Fatalf("err = %v (%+v)", err, merr)
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("cancelled after %v", d)
	}
	t.Logf("cancelled after %v: %v", time.Since(start).Round(time.Millisecond), err)
	// The run is recorded as failed (statement 1 did not complete): resolve, fix, push.
	if _, err := client.Resolve(ctx, 2, pgmig.ResolveRetry, nil); err != nil {
		t.Fatal(err)
	}
	files["002_nontx.sql"] = "---- tern: disable-tx ----\nselect 1;\n"
	if res, err := client.Push(ctx, load(t, files), &pgmig.PushOpts{}); err != nil || res.Applied != 1 {
		t.Fatalf("after resolving: %+v %v", res, err)
	}
}

// A database-level idle_in_transaction_session_timeout shorter than a non-transactional
// statement does not end the holder's transaction (and the lock with it) half-way.
func TestNonTransactionalHolderImmuneToIdleTimeout(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	if _, err := db.Conn(t).Exec(ctx,
		"do $$ begin execute format('alter database %I set idle_in_transaction_session_timeout = ''500ms''', current_database()); end $$"); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"001_t.sql":    "create table t (id int);",
		"002_slow.sql": "---- tern: disable-tx ----\nselect pg_sleep(2);\ncreate index concurrently t_id on t (id);\n",
	}
	res, err := connect(t, db.URL, nil).Push(ctx, load(t, files), nil)
	if err != nil || res.Applied != 2 {
		t.Fatalf("push: %+v %v", res, err)
	}
	var n int
	if err := db.Conn(t).QueryRow(ctx, "select count(*) from pgmig.history").Scan(&n); err != nil || n != 2 {
		t.Fatalf("history rows %d (%v)", n, err)
	}
}

// A run whose statements all completed before its client went away (the executor recorded the
// last one done; the holder never recorded the migration) is applied: the next migrator
// records it as such, with a notice and an audit row, instead of refusing with PM009.
func TestCompletedNonTransactionalRunIsRecorded(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	conn := db.Conn(t)
	files := map[string]string{
		"001_t.sql":   "create table t (id int);",
		"002_idx.sql": "---- tern: disable-tx ----\ncreate index concurrently t_id on t (id);\n",
		"003_u.sql":   "create table u (id int);",
	}
	ms := load(t, files)
	client := connect(t, db.URL, nil)
	if _, err := client.Push(ctx, ms, &pgmig.PushOpts{TargetVersion: 1}); err != nil {
		t.Fatal(err)
	}
	// What the executor leaves when the holder dies after the last statement.
	m := ms[1]
	if _, err := conn.Exec(ctx, `create index concurrently t_id on t (id)`); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `select pgmig.nontx_progress($1::bigint, $2::text, $3::text, $4::text, null, 1, 1, null)`,
		m.Version, m.Name, m.Checksum, m.SQL); err != nil {
		t.Fatal(err)
	}
	var notices []string
	res, err := client.Push(ctx, ms, &pgmig.PushOpts{Notice: func(n *pgconn.Notice) { notices = append(notices, n.Message) }})
	if err != nil || res.Applied != 1 || res.Version != 3 {
		t.Fatalf("push after the interrupted but complete run: %+v %v", res, err)
	}
	var audit string
	if err := conn.QueryRow(ctx, "select details->>'action' from pgmig.audit where version = 2").Scan(&audit); err != nil || audit != "completed" {
		t.Errorf("audit: %q %v", audit, err)
	}
	var kind string
	if err := conn.QueryRow(ctx, "select kind from pgmig.history where version = 2").Scan(&kind); err != nil || kind != "applied" {
		t.Errorf("history row of 2: %q %v", kind, err)
	}
}
