package pgbouncer_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	pgmig "github.com/pgmig/pgmig/gowrapper"
	"github.com/pgmig/pgmig/tests/faults/workload"
	"github.com/pgmig/pgmig/tests/pgtest"
)

// poolSize is small on purpose: 32 clients share 5 server connections, so
// consecutive transactions of one client really land on different server
// connections and connections really carry several clients.
const poolSize = 5

// TestPushThroughPgBouncer: `pgmig push` (the CLI) and
// `psql -c "select * from migrate_apply(...)"` through PgBouncer in
// transaction pooling mode apply, record and then find nothing to do.
func TestPushThroughPgBouncer(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := startBouncer(t, poolSize)

	t.Run("cli", func(t *testing.T) {
		t.Parallel()
		db := pgtest.NewDB(t)
		dir := t.TempDir()
		workload.WriteDir(t, dir, 50)
		env := []string{"DATABASE_URL=" + b.URL(db)}
		r := workload.Run(t, cli, env, "push", "--dir", dir)
		if r.Code != 0 || !strings.Contains(r.Stdout, "Applied 50 migrations") {
			t.Fatalf("push through pgbouncer: %v", r)
		}
		if got := strings.Count(r.Stdout, "applied 0"); got != 50 {
			t.Errorf("%d progress lines, want one per migration (notices pass through PgBouncer):\n%s", got, r.Stdout)
		}
		workload.ExactlyOnce(t, ctx, db.Conn(t), 50)
		r = workload.Run(t, cli, env, "push", "--dir", dir, "--json")
		var res struct{ Applied, Version int }
		if r.Code != 0 || json.Unmarshal([]byte(r.Stdout), &res) != nil || res.Applied != 0 || res.Version != 50 {
			t.Fatalf("second push through pgbouncer: %v", r)
		}
		r = workload.Run(t, cli, env, "status", "--dir", dir)
		if r.Code != 0 {
			t.Fatalf("status through pgbouncer: %v", r)
		}
	})

	t.Run("cli-default-exec-mode", func(t *testing.T) {
		// Without default_query_exec_mode in the URL pgx would cache named
		// prepared statements; pgmig's own queries must not depend on that.
		t.Parallel()
		db := pgtest.NewDB(t)
		dir := t.TempDir()
		workload.WriteDir(t, dir, 20)
		env := []string{"DATABASE_URL=" + b.PsqlURL(db)}
		for i := range 3 {
			r := workload.Run(t, cli, env, "push", "--dir", dir, "--quiet")
			if r.Code != 0 {
				t.Fatalf("push %d through pgbouncer without default_query_exec_mode: %v", i+1, r)
			}
			r = workload.Run(t, cli, env, "status", "--dir", dir)
			if r.Code != 0 {
				t.Fatalf("status %d through pgbouncer without default_query_exec_mode: %v", i+1, r)
			}
		}
		workload.ExactlyOnce(t, ctx, db.Conn(t), 20)
	})

	t.Run("psql", func(t *testing.T) {
		t.Parallel()
		db := pgtest.NewDB(t)
		psql := pgtest.Server(t).PsqlPath()
		if psql == "" {
			t.Fatal("psql not found: apt-get install postgresql-client")
		}
		dir := t.TempDir()
		workload.WriteDir(t, dir, 50)
		ms, err := pgmig.LoadDir(dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		batch, err := pgmig.Batch(ms)
		if err != nil {
			t.Fatal(err)
		}
		for i, want := range []string{"50", "0"} {
			out, err := workload.Psql(psql, b.PsqlURL(db), workload.ApplySQL(batch))
			if err != nil {
				t.Fatalf("psql call %d through pgbouncer: %v", i+1, err)
			}
			if strings.TrimSpace(out) != want {
				t.Errorf("psql call %d applied %q, want %s", i+1, out, want)
			}
		}
		workload.ExactlyOnce(t, ctx, db.Conn(t), 50)
	})

	t.Run("library", func(t *testing.T) {
		t.Parallel()
		db := pgtest.NewDB(t)
		dir := t.TempDir()
		workload.WriteDir(t, dir, 50)
		ms, err := pgmig.LoadDir(dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		client, err := pgmig.Connect(ctx, b.URL(db), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close(ctx)
		progress := 0
		res, err := client.Push(ctx, ms, &pgmig.PushOpts{Progress: func(p pgmig.Progress) {
			if p.Done {
				progress++
			}
		}})
		if err != nil {
			t.Fatal(err)
		}
		if res.Applied != 50 || progress != 50 {
			t.Errorf("applied %d with %d progress events, want 50 and 50", res.Applied, progress)
		}
		st, err := client.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.Version != 50 {
			t.Errorf("status version %d, want 50", st.Version)
		}
		workload.ExactlyOnce(t, ctx, db.Conn(t), 50)
	})
}

// TestConcurrentPushersThroughPgBouncer: 32 pushers (CLI, library, psql)
// through one PgBouncer with 5 server connections, on one fresh database:
// every call succeeds, each migration is applied exactly once.
func TestConcurrentPushersThroughPgBouncer(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := startBouncer(t, poolSize)
	db := pgtest.NewDB(t)
	psql := pgtest.Server(t).PsqlPath()
	if psql == "" {
		t.Fatal("psql not found: apt-get install postgresql-client")
	}
	const n = 100
	dir := t.TempDir()
	workload.WriteDir(t, dir, n)
	ms, err := pgmig.LoadDir(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	batch, err := pgmig.Batch(ms)
	if err != nil {
		t.Fatal(err)
	}
	sql := workload.ApplySQL(batch)

	type outcome struct {
		who     string
		applied int
		err     error
	}
	const cliN, libN, psqlN = 11, 11, 10
	results := make(chan outcome, cliN+libN+psqlN)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range cliN {
		wg.Go(func() {
			<-start
			who := fmt.Sprintf("cli-%02d", i)
			r := workload.Run(t, cli, []string{"DATABASE_URL=" + pgtest.SetParam(b.URL(db), "application_name", who)}, "push", "--dir", dir, "--json")
			if r.Code != 0 {
				results <- outcome{who: who, err: fmt.Errorf("%v", r)}
				return
			}
			var res struct{ Applied int }
			err := json.Unmarshal([]byte(r.Stdout), &res)
			results <- outcome{who: who, applied: res.Applied, err: err}
		})
	}
	for i := range libN {
		wg.Go(func() {
			<-start
			who := fmt.Sprintf("lib-%02d", i)
			client, err := pgmig.Connect(ctx, pgtest.SetParam(b.URL(db), "application_name", who), nil)
			if err != nil {
				results <- outcome{who: who, err: err}
				return
			}
			defer client.Close(ctx)
			res, err := client.Push(ctx, ms, nil)
			if err != nil {
				results <- outcome{who: who, err: err}
				return
			}
			results <- outcome{who: who, applied: res.Applied}
		})
	}
	for i := range psqlN {
		wg.Go(func() {
			<-start
			who := fmt.Sprintf("psql-%02d", i)
			out, err := workload.Psql(psql, pgtest.SetParam(b.PsqlURL(db), "application_name", who), sql)
			if err != nil {
				results <- outcome{who: who, err: err}
				return
			}
			applied, err := strconv.Atoi(strings.TrimSpace(out))
			results <- outcome{who: who, applied: applied, err: err}
		})
	}
	began := time.Now()
	close(start)
	wg.Wait()
	took := time.Since(began)
	close(results)
	total := 0
	var appliers []string
	for r := range results {
		if r.err != nil {
			t.Errorf("%s failed through pgbouncer: %v", r.who, r.err)
			continue
		}
		if r.applied > 0 {
			appliers = append(appliers, fmt.Sprintf("%s applied %d", r.who, r.applied))
		}
		total += r.applied
	}
	if total != n {
		t.Errorf("32 pushers applied %d migrations between them, want exactly %d: %v", total, n, appliers)
	}
	if got := serverConns(t, ctx, db); got > poolSize {
		t.Errorf("%d server connections to the database, want at most PgBouncer's pool of %d", got, poolSize)
	}
	workload.ExactlyOnce(t, ctx, db.Conn(t), n)
	t.Logf("32 pushers through pgbouncer (pool of %d): all succeeded in %v; %v", poolSize, took.Round(time.Millisecond), appliers)
}

// TestSessionAdvisoryLockBreaks shows why pgmig does not use a session
// advisory lock (pg_advisory_lock), what most migration tools use:
// behind PgBouncer in transaction pooling the lock belongs to a server
// connection, not to the client that took it. Two clients both "get" the
// same lock, and it stays held in the pool after its client is gone.
// pgmig's LOCK TABLE lives and dies with migrate_apply's transaction.
func TestSessionAdvisoryLockBreaks(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := startBouncer(t, 1) // one server connection: the failure is deterministic
	db := pgtest.NewDB(t)
	const key = 727272

	migratorA := pgtest.Connect(t, b.URL(db))
	migratorB := pgtest.Connect(t, b.URL(db))
	var gotA, gotB bool
	if err := migratorA.QueryRow(ctx, "select pg_try_advisory_lock($1)", key).Scan(&gotA); err != nil {
		t.Fatal(err)
	}
	if err := migratorB.QueryRow(ctx, "select pg_try_advisory_lock($1)", key).Scan(&gotB); err != nil {
		t.Fatal(err)
	}
	if !gotA || !gotB {
		t.Fatalf("A got the advisory lock: %v, B got it: %v; expected both to 'hold' it through PgBouncer", gotA, gotB)
	}
	t.Log("two migrators both acquired session advisory lock", key, "through PgBouncer: no mutual exclusion")

	// Both clients go away without unlocking (a crash, a killed pod): the
	// lock outlives them in PgBouncer's pool, blocking every later migrator
	// that connects directly.
	_ = migratorA.Close(ctx)
	_ = migratorB.Close(ctx)
	direct := db.Conn(t)
	var held int
	if err := direct.QueryRow(ctx, "select count(*) from pg_locks where locktype = 'advisory' and database = (select oid from pg_database where datname = current_database()) and objid = $1 and granted", key).Scan(&held); err != nil {
		t.Fatal(err)
	}
	if held == 0 {
		t.Fatal("the advisory lock was released with the clients; expected it to stay with the pooled server connection")
	}
	var free bool
	if err := direct.QueryRow(ctx, "select pg_try_advisory_lock($1)", key).Scan(&free); err != nil {
		t.Fatal(err)
	}
	if free {
		t.Fatal("a direct session got the lock; expected the leaked lock to block it")
	}
	t.Log("after both clients disconnected, the lock is still held by PgBouncer's server connection")

	// pgmig through the same single-connection pool: the lock ends with the
	// transaction, so a second migrator is never fooled and nothing leaks.
	dir := t.TempDir()
	workload.WriteDir(t, dir, 10)
	for i := range 2 {
		r := workload.Run(t, cli, []string{"DATABASE_URL=" + b.URL(db)}, "push", "--dir", dir, "--quiet")
		if r.Code != 0 {
			t.Fatalf("push %d: %v", i+1, r)
		}
	}
	workload.ExactlyOnce(t, ctx, direct, 10)
	var historyLocks int
	if err := direct.QueryRow(ctx, "select count(*) from pg_locks where database = (select oid from pg_database where datname = current_database()) and relation = 'pgmig.history'::regclass and pid <> pg_backend_pid()").Scan(&historyLocks); err != nil {
		t.Fatal(err)
	}
	if historyLocks != 0 {
		t.Errorf("%d locks on pgmig.history remain after the pushes", historyLocks)
	}
}
