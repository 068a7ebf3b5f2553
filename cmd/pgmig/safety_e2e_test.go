package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pgmig/pgmig/tests/pgtest"
)

// holdOpen opens a session named "reporting" that runs stmt and stays idle
// in its transaction until the test ends or release is called.
func holdOpen(t *testing.T, db *pgtest.DB, stmt string) (pid uint32, release func()) {
	t.Helper()
	ctx := context.Background()
	conn := pgtest.Connect(t, pgtest.SetParam(db.URL, "application_name", "reporting"))
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, stmt); err != nil {
		t.Fatal(err)
	}
	release = func() { _ = tx.Rollback(context.Background()) }
	t.Cleanup(release)
	return conn.PgConn().PID(), release
}

var ordersMigrations = map[string]string{
	"001_orders.sql":  "create table orders (id int primary key, v text);\ninsert into orders select g, md5(g::text) from generate_series(1, 5000) g;\n",
	"002_add_col.sql": "alter table orders add column note text;\n",
}

// TestCLIDDLLockTimeoutRetries: push --ddl-lock-timeout --retries prints
// one line per blocked attempt naming the file, the relation and the
// session in the way, exits 3 when the retries run out (the error says who
// and what to do, --json carries it as data), and succeeds once the
// blocker is gone.
func TestCLIDDLLockTimeoutRetries(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"001_orders.sql": ordersMigrations["001_orders.sql"]})
	env := []string{"DATABASE_URL=" + db.URL}
	pgmigRun(t, dir, env, "push").must(t, exitOK)
	writeFiles(t, dir, ordersMigrations)

	pid, release := holdOpen(t, db, "select count(*) from orders")
	r := pgmigRun(t, dir, env, "push", "--ddl-lock-timeout", "200ms", "--retries", "2", "--retry-max-wait", "500ms").must(t, exitLocked)
	attempt := regexp.MustCompile(fmt.Sprintf(`(?m)^pgmig: attempt [12]/3: 002_add_col\.sql blocked on "orders" by pid %d \(reporting, idle in transaction [0-9.]+m?s\); trying again in [0-9.]+m?s$`, pid))
	if n := len(attempt.FindAllString(r.stderr, -1)); n != 2 {
		t.Errorf("want 2 attempt lines, got %d:\n%s", n, r.stderr)
	}
	r.stderrHas(t, `pgmig: error: pushing migrations: 002_add_col.sql blocked on "orders" by pid`,
		"gave up after waiting 200ms for its lock (--ddl-lock-timeout), 3 attempts",
		"holds ACCESS SHARE on orders", "select count(*) from orders",
		fmt.Sprintf("select pg_terminate_backend(%d);", pid), "Nothing of its transaction was applied")

	r = pgmigRun(t, dir, env, "push", "--ddl-lock-timeout", "200ms", "--json").must(t, exitLocked)
	var doc struct {
		Error struct {
			ExitCode int    `json:"exit_code"`
			SQLState string `json:"sqlstate"`
			File     string `json:"file"`
			Version  int64  `json:"version"`
			Blocked  struct {
				Relation      string `json:"relation"`
				LockTimeoutMS int64  `json:"lock_timeout_ms"`
				Attempts      int    `json:"attempts"`
				Blockers      []struct {
					PID         uint32 `json:"pid"`
					Application string `json:"application"`
					State       string `json:"state"`
				} `json:"blockers"`
			} `json:"blocked"`
		} `json:"error"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil {
		t.Fatalf("--json: %v\n%s", err, r.stdout)
	}
	e := doc.Error
	if e.ExitCode != exitLocked || e.SQLState != "PM017" || e.File != "002_add_col.sql" || e.Version != 2 || e.Blocked.Relation != "orders" ||
		e.Blocked.LockTimeoutMS != 200 || e.Blocked.Attempts != 1 || len(e.Blocked.Blockers) != 1 || e.Blocked.Blockers[0].PID != pid ||
		e.Blocked.Blockers[0].Application != "reporting" || e.Blocked.Blockers[0].State != "idle in transaction" {
		t.Errorf("--json error: %+v", e)
	}

	// The blocker ends while the push retries (once it said so): it goes through.
	cmd := pgmigCommand(dir, env, "push", "--ddl-lock-timeout", "200ms", "--retries", "20", "--retry-max-wait", "500ms")
	var stdout strings.Builder
	cmd.Stdout = &stdout
	stderrPipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	sc := bufio.NewScanner(stderrPipe)
	released := false
	for sc.Scan() {
		stderr.WriteString(sc.Text() + "\n")
		if !released && strings.Contains(sc.Text(), "pgmig: attempt 1/21: 002_add_col.sql blocked on") {
			release()
			released = true
		}
	}
	if err := cmd.Wait(); err != nil || !released {
		t.Fatalf("push with retries: %v (released: %v)\n%s\n%s", err, released, stdout.String(), stderr.String())
	}
	for _, want := range []string{"applied 002_add_col.sql", "the database is now at version 2"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("stdout lacks %q:\n%s", want, stdout.String())
		}
	}
	// Settings: from the config file as well.
	writeFiles(t, dir, map[string]string{"pgmig.conf": "[pgmig]\nddl_lock_timeout = 2s\nretries = 4\nretry_max_wait = 10s\n"})
	r = pgmigRun(t, dir, env, "config").must(t, exitOK)
	for _, want := range []string{"ddl-lock-timeout", "2s", "retries", "4", "retry-max-wait", "10s"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("pgmig config lacks %q:\n%s", want, r.stdout)
		}
	}
}

// TestCLIPlanRehearseAndSQL: plan --rehearse reports a table rewrite with
// its size, locks, WAL and duration (text and --json), changes nothing,
// and --fail-on exits 4 naming what it forbids; plan --sql prints the SQL
// push would run under comments naming the files.
func TestCLIPlanRehearseAndSQL(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"001_orders.sql": ordersMigrations["001_orders.sql"]})
	env := []string{"DATABASE_URL=" + db.URL}
	pgmigRun(t, dir, env, "push").must(t, exitOK)
	writeFiles(t, dir, map[string]string{
		"002_add_col.sql": "alter table orders add column note text;\n",
		"003_retype.sql":  "---- pgmig: lock-timeout 5s ----\nalter table orders alter column v type varchar(40);\n",
	})
	conn := db.Conn(t)
	shape := func() string {
		var s string
		if err := conn.QueryRow(ctx, `select string_agg(attname || ':' || format_type(atttypid, atttypmod), ',' order by attnum)
			|| ' ' || (select relfilenode from pg_class where oid = 'orders'::regclass)
			|| ' ' || (select count(*) from pgmig.history) from pg_attribute where attrelid = 'orders'::regclass and attnum > 0`).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	before := shape()

	r := pgmigRun(t, dir, env, "plan", "--rehearse").must(t, exitOK,
		"Rehearsed 2 migrations", "rolled back; the database is unchanged", "002_add_col.sql", "003_retype.sql",
		"public.orders", "ACCESS EXCLUSIVE", "rewritten: ")
	t.Logf("plan --rehearse:\n%s", r.stdout)
	if !regexp.MustCompile(`003_retype\.sql  [0-9.]+m?s  WAL [0-9.]+ [kM]B`).MatchString(r.stdout) {
		t.Errorf("no duration and WAL for 003:\n%s", r.stdout)
	}
	if after := shape(); after != before {
		t.Fatalf("the rehearsal changed the database: %s → %s", before, after)
	}

	r = pgmigRun(t, dir, env, "plan", "--rehearse", "--json").must(t, exitOK)
	var doc struct {
		Migrations []struct {
			Version    int64   `json:"version"`
			Outcome    string  `json:"outcome"`
			DurationMS float64 `json:"duration_ms"`
			WALBytes   int64   `json:"wal_bytes"`
			Relations  []struct {
				Relation  string `json:"relation"`
				LockMode  string `json:"lock_mode"`
				Rewritten bool   `json:"rewritten"`
				SizeBytes int64  `json:"size_bytes"`
			} `json:"relations"`
		} `json:"migrations"`
		Rehearsed int `json:"rehearsed"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil {
		t.Fatalf("--json: %v\n%s", err, r.stdout)
	}
	if doc.Rehearsed != 2 || len(doc.Migrations) != 3 {
		t.Fatalf("--json: %+v", doc)
	}
	retype := doc.Migrations[2]
	if retype.Outcome != "rehearsed" || retype.DurationMS <= 0 || retype.WALBytes < 100_000 || len(retype.Relations) == 0 ||
		retype.Relations[0].Relation != "public.orders" || !retype.Relations[0].Rewritten || retype.Relations[0].SizeBytes < 100_000 ||
		retype.Relations[0].LockMode != "AccessExclusiveLock" {
		t.Errorf("--json 003: %+v", retype)
	}

	r = pgmigRun(t, dir, env, "plan", "--rehearse", "--fail-on", "rewrite").must(t, exitValidation,
		"Forbidden by --fail-on rewrite:", "003_retype.sql rewrites table public.orders (")
	r.stderrHas(t, "the rehearsal found what --fail-on forbids")
	if strings.Contains(r.stdout, "002_add_col.sql rewrites") {
		t.Errorf("002 adds a nullable column, no rewrite:\n%s", r.stdout)
	}
	r = pgmigRun(t, dir, env, "plan", "--rehearse", "--fail-on", "access-exclusive", "--json").must(t, exitValidation)
	if !strings.Contains(r.stdout, `"violations": [`) || !strings.Contains(r.stdout, `"kind": "access-exclusive"`) ||
		!strings.Contains(r.stdout, `"exit_code": 4`) {
		t.Errorf("--fail-on --json:\n%s", r.stdout)
	}
	pgmigRun(t, dir, env, "plan", "--fail-on", "rewrite").must(t, exitUsage)
	pgmigRun(t, dir, env, "plan", "--rehearse", "--fail-on", "everything").must(t, exitUsage)
	if after := shape(); after != before {
		t.Fatalf("the rehearsals changed the database: %s → %s", before, after)
	}

	r = pgmigRun(t, dir, env, "plan", "--sql").must(t, exitOK,
		"-- The SQL `pgmig push` would run now: 2 migrations",
		"-- ==== 002_add_col.sql: version 2 (add_col) ====\nalter table orders add column note text;\n",
		"-- ==== 003_retype.sql: version 3 (retype) [lock timeout 5s] ====\n---- pgmig: lock-timeout 5s ----\nalter table orders alter column v type varchar(40);\n")
	if strings.Contains(r.stdout, "001_orders") {
		t.Errorf("plan --sql shows an applied migration:\n%s", r.stdout)
	}
	// A team's rule in the config file: for rehearsals only.
	writeFiles(t, dir, map[string]string{"pgmig.conf": "[pgmig]\nfail_on = rewrite\n"})
	pgmigRun(t, dir, env, "plan").must(t, exitOK, "2 migrations would be applied")
	pgmigRun(t, dir, env, "plan", "--rehearse").must(t, exitValidation, "Forbidden by --fail-on rewrite:")
	// The output runs as it is.
	if psql := pgtest.Server(t).PsqlPath(); psql != "" {
		out, err := exec.Command(psql, "-X", "-v", "ON_ERROR_STOP=1", "-d", db.URL, "-c", r.stdout).CombinedOutput()
		if err != nil {
			t.Fatalf("psql of plan --sql: %v\n%s", err, out)
		}
	}
}

// TestCLIWait: wait exits 0 once a push (here started a moment later)
// applied the files, 3 on --timeout, 4 on drift, and waits for a database
// that has no engine yet.
func TestCLIWait(t *testing.T) {
	t.Parallel()
	db := pgtest.NewEmptyDB(t)
	dir := t.TempDir()
	writeFiles(t, dir, baseMigrations)
	env := []string{"DATABASE_URL=" + db.URL}

	r := pgmigRun(t, dir, env, "wait", "--timeout", "700ms").must(t, exitLocked)
	r.stderrHas(t, "waiting: the pgmig engine is not installed in the database yet", "timed out waiting for the migrations to be applied")

	cmd := pgmigCommand(dir, env, "wait", "--timeout", "30s")
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	pgmigRun(t, dir, env, "install").must(t, exitOK)
	pgmigRun(t, dir, env, "push").must(t, exitOK)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("wait: %v\n%s%s", err, stdout.String(), stderr.String())
	}
	if !strings.Contains(stdout.String(), "Ready: the database holds exactly the 2 migrations of . (version 2;") {
		t.Errorf("wait:\n%s\n%s", stdout.String(), stderr.String())
	}

	pgmigRun(t, dir, env, "wait", "--version", "2").must(t, exitOK, "Ready: the database is at version 2")
	pgmigRun(t, dir, env, "wait", "--version", "3", "--timeout", "500ms").must(t, exitLocked).
		stderrHas(t, "the database is at version 2, waiting for 3")
	writeFiles(t, dir, map[string]string{"002_add_email.sql": "alter table users add column email varchar(200);\n"})
	pgmigRun(t, dir, env, "wait").must(t, exitValidation).stderrHas(t, "changed: 2")
	var ready struct {
		Ready    string `json:"ready"`
		Listened bool   `json:"listened"`
	}
	writeFiles(t, dir, baseMigrations)
	r = pgmigRun(t, dir, env, "wait", "--json").must(t, exitOK)
	if err := json.Unmarshal([]byte(r.stdout), &ready); err != nil || ready.Ready != "digest" || !ready.Listened {
		t.Errorf("wait --json: %+v %v\n%s", ready, err, r.stdout)
	}
}
