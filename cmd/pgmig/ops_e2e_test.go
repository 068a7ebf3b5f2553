package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/tern/v2/migrate"
	"github.com/pgmig/pgmig/tests/pgtest"
)

// A new enum value cannot be used in the transaction that added it: with
// the commit-after marker `pgmig push` commits in between.
func TestCLIEnumCommitAfter(t *testing.T) {
	t.Parallel()
	files := map[string]string{
		"001_mood.sql":  "create type mood as enum ('sad');\ncreate table person (name text, m mood);\n",
		"002_happy.sql": "alter type mood add value 'happy';\n",
		"003_use.sql":   "insert into person values ('ann', 'happy');\n",
	}
	dir := t.TempDir()
	writeFiles(t, dir, files)
	env := []string{"DATABASE_URL=" + pgtest.NewDB(t).URL}
	r := pgmigRun(t, dir, env, "push").must(t, exitMigration)
	r.stderrHas(t, "SQLSTATE: 55P04", "---- pgmig: commit-after ----")

	writeFiles(t, dir, map[string]string{"002_happy.sql": "---- pgmig: commit-after ----\nalter type mood add value 'happy';\n"})
	pgmigRun(t, dir, env, "push").must(t, exitOK, "applied 001_mood.sql", "applied 003_use.sql", "Applied 3 migrations in 2 steps")
}

func TestCLIRollback(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"001_a.sql": "create table a (id int);\n---- create above / drop below ----\ndrop table a;\n",
		"002_b.sql": "create table b (id int);\n",
		"003_c.sql": "create table c (id int);\n---- create above / drop below ----\ndrop table c;\n",
		"004_d.sql": "create table d (id int);\n---- create above / drop below ----\ndrop table d;\n",
		"005_e.sql": "create table e (id int);\n---- create above / drop below ----\ndrop table e;\n",
	})
	env := []string{"DATABASE_URL=" + db.URL}
	pgmigRun(t, dir, env, "push").must(t, exitOK, "now at version 5.")
	pgmigRun(t, dir, env, "rollback").must(t, exitUsage)
	pgmigRun(t, dir, env, "rollback", "--to", "2", "--dry-run").must(t, exitOK, "3 migrations would be rolled back", "  5 e", "  3 c")
	pgmigRun(t, dir, env, "rollback", "--to", "2").must(t, exitOK,
		"rolled back version 5 (e)", "rolled back version 3 (c)", "Rolled back 3 migrations in ", "now at version 2.")
	// Version 2 has no down SQL: refused, named, nothing rolled back.
	r := pgmigRun(t, dir, env, "rollback", "--to", "0").must(t, exitValidation)
	r.stderrHas(t, "SQLSTATE: PM007", "no down SQL was recorded for 2 (b)")
	pgmigRun(t, dir, env, "status").must(t, exitOK, "the database is at version 2 (2 migrations applied)", "Pending (3):")

	// Another migrator holds the lock: rollback fails fast (exit 3).
	pgmigRun(t, dir, env, "push").must(t, exitOK, "now at version 5.")
	holder := db.Conn(t)
	tx, err := holder.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "lock table pgmig.history in exclusive mode"); err != nil {
		t.Fatal(err)
	}
	r = pgmigRun(t, dir, env, "rollback", "--to", "4").must(t, exitLocked)
	r.stderrHas(t, "SQLSTATE: PM003", fmt.Sprintf("pid %d", holder.PgConn().PID()))
	t.Logf("rollback against a held lock: exit 3 after %v", r.took)
	tx.Rollback(ctx)

	var out struct {
		Migrations []struct {
			Version int64  `json:"version"`
			Outcome string `json:"outcome"`
		} `json:"migrations"`
		Changed int   `json:"changed"`
		Version int64 `json:"version"`
	}
	r = pgmigRun(t, dir, env, "rollback", "--to", "4", "--json").must(t, exitOK)
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil || out.Changed != 1 || out.Version != 4 ||
		len(out.Migrations) != 1 || out.Migrations[0].Outcome != "rolled_back" {
		t.Fatalf("rollback --json: %v %+v\n%s", err, out, r.stdout)
	}
}

// A database that tern migrated is adopted with baseline --from-tern; then
// push applies only the newer files.
func TestCLIBaselineFromTern(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"001_accounts.sql": "create table accounts (id bigint primary key);\n---- create above / drop below ----\ndrop table accounts;\n",
		"002_email.sql":    "alter table accounts add column email text;\n---- create above / drop below ----\nalter table accounts drop column email;\n",
		"003_index.sql":    "---- tern: disable-tx ----\ncreate index concurrently accounts_email on accounts (email);\n",
	})
	conn, err := pgx.Connect(ctx, db.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	tern, err := migrate.NewMigrator(ctx, conn, "public.schema_version")
	if err != nil {
		t.Fatal(err)
	}
	if err := tern.LoadMigrations(os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	if err := tern.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	writeFiles(t, dir, map[string]string{"004_name.sql": "alter table accounts add column name text;\n---- create above / drop below ----\nalter table accounts drop column name;\n"})
	env := []string{"DATABASE_URL=" + db.URL}

	pgmigRun(t, dir, env, "baseline").must(t, exitUsage)
	r := pgmigRun(t, dir, env, "baseline", "--from-tern").must(t, exitOK,
		"Baselined at version 3: recorded 3 migrations as applied without running them", "1 migration after it left for `pgmig push`.")
	r.stderrHas(t, "tern's version table public.schema_version is at version 3")
	pgmigRun(t, dir, env, "push").must(t, exitOK, "applied 004_name.sql", "Applied 1 migration in ")
	pgmigRun(t, dir, env, "status").must(t, exitOK, "the database is at version 4 (4 migrations applied)", "baseline")
	// History above the version: refused.
	pgmigRun(t, dir, env, "baseline", "--version", "2").must(t, exitValidation).stderrHas(t, "history already has versions 3, 4 above it")
	// The down SQL recorded at baseline makes rollback work.
	pgmigRun(t, dir, env, "rollback", "--to", "3").must(t, exitOK, "now at version 3.")
}

func TestCLIRepair(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	dir := t.TempDir()
	writeFiles(t, dir, baseMigrations)
	env := []string{"DATABASE_URL=" + db.URL}
	pgmigRun(t, dir, env, "push").must(t, exitOK)
	pgmigRun(t, dir, env, "repair").must(t, exitOK, "Nothing to repair")

	// A deliberate edit (formatting) of an applied migration.
	writeFiles(t, dir, map[string]string{"002_add_email.sql": "-- users' e-mail address\nalter table users add column email text;\n"})
	pgmigRun(t, dir, env, "push").must(t, exitValidation).stderrHas(t, "SQLSTATE: PM002")
	pgmigRun(t, dir, env, "repair", "--version", "2").must(t, exitOK,
		"repaired 002_add_email.sql", "Repaired 1 migration; the old values are in pgmig.audit.")
	pgmigRun(t, dir, env, "push").must(t, exitOK, "Nothing to apply")
	var action, oldSQL, newSQL, by, app string
	if err := db.Conn(t).QueryRow(ctx, `select action, details->'old'->>'sql', details->'new'->>'sql', by_role, client_application
		from pgmig.audit where version = 2`).Scan(&action, &oldSQL, &newSQL, &by, &app); err != nil {
		t.Fatal(err)
	}
	if action != "repair" || !strings.HasPrefix(oldSQL, "alter table") || !strings.HasPrefix(newSQL, "-- users'") || by == "" || app == "" {
		t.Errorf("audit row: %s %q %q %s %s", action, oldSQL, newSQL, by, app)
	}
	pgmigRun(t, dir, env, "repair", "--version", "7").must(t, exitValidation)
}

// slowIndexFiles: migration 2 builds an index concurrently over an
// expression that sleeps per row as long as pgmig_test.sleep says (set in
// the first push's connection options only), so the build can be killed
// while it runs.
var slowIndexFiles = map[string]string{
	"001_big.sql": `create table big (id int);
insert into big select generate_series(1, 2000);
create function slow(i int) returns int language plpgsql immutable as $$
begin
    perform pg_sleep(coalesce(nullif(current_setting('pgmig_test.sleep', true), ''), '0')::float8);
    return i;
end $$;
`,
	"002_index.sql": "---- tern: disable-tx ----\ncreate index concurrently big_id on big (id);\ncreate index concurrently big_slow on big (slow(id));\n",
	"003_after.sql": "create table after_index (id int);\n",
}

// killDuringBuild runs `pgmig push` with dsn and SIGKILLs it while the slow
// concurrent build runs.
func killDuringBuild(t *testing.T, dir, dsn string, admin *pgx.Conn) {
	t.Helper()
	ctx := context.Background()
	cmd := pgmigCommand(dir, []string{"DATABASE_URL=" + dsn}, "push")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		var n int
		if err := admin.QueryRow(ctx, `select count(*) from pg_stat_progress_create_index p
			where p.index_relid = to_regclass('big_slow') and p.phase like 'building index%'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatal("the slow concurrent build never started")
		}
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
}

func buildRunning(t *testing.T, admin *pgx.Conn) bool {
	t.Helper()
	var n int
	// Only this test's database: the tests run in parallel on one server,
	// each with a big_slow build of its own.
	if err := admin.QueryRow(context.Background(), `select count(*) from pg_stat_activity
		where query ilike 'create index concurrently big_slow%' and state = 'active'
		  and datname = current_database()`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n > 0
}

// The client dies during CREATE INDEX CONCURRENTLY. The executor session
// asks the server to check for a vanished client, so the build is cancelled
// and leaves an INVALID index. status shows the migration interrupted with
// one of its two statements done; push refuses (exit 4, PM009) naming the
// invalid index and the command to run; after the documented recovery
// (drop what the statements left, resolve --retry) push applies it and the
// rest.
func TestCLIKilledDuringConcurrentIndex(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	dir := t.TempDir()
	writeFiles(t, dir, slowIndexFiles)
	env := []string{"DATABASE_URL=" + db.URL}
	admin := db.Conn(t)

	killDuringBuild(t, dir, db.URL+"&options=-c%20pgmig_test.sleep%3D0.01", admin)
	if pgtest.Server(t).ServerVersionNum() < 140000 {
		// No client_connection_check_interval before 14: the build runs on
		// in its orphaned session; the operator cancels it.
		// This test's build only: the parallel ...Continues test lets its own run on.
		if _, err := admin.Exec(ctx, `select pg_cancel_backend(pid) from pg_stat_activity
			where query ilike 'create index concurrently big_slow%' and state = 'active'
			  and datname = current_database()`); err != nil {
			t.Fatal(err)
		}
	}
	for deadline := time.Now().Add(30 * time.Second); buildRunning(t, admin); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the server did not cancel the build of the dead client")
		}
	}
	var valid bool
	if err := admin.QueryRow(ctx, "select indisvalid from pg_index where indexrelid = 'big_slow'::regclass").Scan(&valid); err != nil || valid {
		t.Fatalf("big_slow: valid=%v err=%v, want an INVALID index", valid, err)
	}

	pgmigRun(t, dir, env, "status").must(t, exitOK, "the database is at version 1 (1 migration applied)",
		"Interrupted: non-transactional migration 2 (index) was interrupted", "1 of 2 statements done", "create index concurrently big_slow")
	r := pgmigRun(t, dir, env, "push").must(t, exitValidation)
	r.stderrHas(t, "SQLSTATE: PM009", "after 1 of 2 statements", "Invalid indexes", "big_slow", "pgmig resolve 2 --retry", "pgmig resolve 2 --applied")

	// The documented recovery.
	if _, err := admin.Exec(ctx, "drop index big_slow; drop index big_id"); err != nil {
		t.Fatal(err)
	}
	pgmigRun(t, dir, env, "resolve", "2", "--retry").must(t, exitOK, "the next push runs it again from its first statement")
	pgmigRun(t, dir, env, "push").must(t, exitOK, "applied 002_index.sql", "applied 003_after.sql", "now at version 3.")
	if err := admin.QueryRow(ctx, "select indisvalid from pg_index where indexrelid = 'big_slow'::regclass").Scan(&valid); err != nil || !valid {
		t.Fatalf("big_slow after recovery: valid=%v err=%v", valid, err)
	}
}

// The same kill without the server-side check for a vanished client
// (client_connection_check_interval=0 in the connection string, or a
// server older than 14): the build runs on to completion in the orphaned
// session. Meanwhile every push refuses; once the build is done and the
// index valid, the operator records the migration as applied.
func TestCLIKilledDuringConcurrentIndexBuildContinues(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	dir := t.TempDir()
	writeFiles(t, dir, slowIndexFiles)
	env := []string{"DATABASE_URL=" + db.URL}
	admin := db.Conn(t)

	dsn := db.URL + "&options=-c%20pgmig_test.sleep%3D0.001"
	if pgtest.Server(t).ServerVersionNum() >= 140000 {
		dsn += "&client_connection_check_interval=0"
	}
	killDuringBuild(t, dir, dsn, admin)
	if !buildRunning(t, admin) {
		t.Fatal("the build stopped with its client")
	}
	r := pgmigRun(t, dir, env, "push").must(t, exitValidation)
	r.stderrHas(t, "SQLSTATE: PM009", "big_slow", "pgmig resolve 2 --applied")
	for deadline := time.Now().Add(60 * time.Second); buildRunning(t, admin); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the orphaned build did not finish")
		}
	}
	var valid bool
	if err := admin.QueryRow(ctx, "select indisvalid from pg_index where indexrelid = 'big_slow'::regclass").Scan(&valid); err != nil || !valid {
		t.Fatalf("big_slow after the orphaned build: valid=%v err=%v", valid, err)
	}
	pgmigRun(t, dir, env, "resolve", "2", "--applied").must(t, exitOK, "recorded as applied")
	pgmigRun(t, dir, env, "push").must(t, exitOK, "applied 003_after.sql", "now at version 3.")
	pgmigRun(t, dir, env, "status").must(t, exitOK, "(3 migrations applied)", "Nothing pending.")
}

// A down section written after the migration was applied: status says the files' down
// differs from the recorded one, repair records it, and rollback then works (it runs the
// recorded down SQL). A non-transactional migration's down runs outside a transaction.
func TestCLIDownAddedLaterAndNonTransactionalRollback(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"001_a.sql":   "create table a (id int);\n",
		"002_idx.sql": "---- tern: disable-tx ----\ncreate index concurrently a_id on a (id);\n---- create above / drop below ----\ndrop index concurrently a_id;\n",
	})
	env := []string{"DATABASE_URL=" + db.URL}
	pgmigRun(t, dir, env, "push").must(t, exitOK, "now at version 2.")
	r := pgmigRun(t, dir, env, "rollback", "--to", "0").must(t, exitValidation)
	r.stderrHas(t, "SQLSTATE: PM007", "no down SQL was recorded for 1 (a)")

	writeFiles(t, dir, map[string]string{"001_a.sql": "create table a (id int);\n---- create above / drop below ----\ndrop table a;\n"})
	pgmigRun(t, dir, env, "status").must(t, exitOK, "the down SQL in the files differs from the one recorded for 001_a.sql", "pgmig repair")
	pgmigRun(t, dir, env, "repair").must(t, exitOK, "Repaired 1 migration")
	pgmigRun(t, dir, env, "rollback", "--to", "0", "--dry-run").must(t, exitOK,
		"2 migrations would be rolled back", "non-transactional: its down runs outside a transaction")
	pgmigRun(t, dir, env, "rollback", "--to", "0").must(t, exitOK, "Rolled back 2 migrations", "now at version 0.")
	pgmigRun(t, dir, env, "push").must(t, exitOK, "now at version 2.")
}
