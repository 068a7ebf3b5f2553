package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgmig/pgmig/tests/pgtest"
)

// TestCLIFleet: pgmig push --targets with a failing database, --json lines,
// the summary, exit codes, a re-run, --targets-query, --install, --canary,
// and secrets that never reach the output.
func TestCLIFleet(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"001_users.sql": "create table users (id int);\n",
		"002_email.sql": "alter table users add column email text;\ninsert into settings values ('email');\n",
	})
	const n = 6
	dbs := make([]*pgtest.DB, n)
	var lines []string
	for i := range dbs {
		dbs[i] = pgtest.NewDB(t)
		if i != 3 { // database 3 has no settings table: 002 fails there, on line 2
			if _, err := dbs[i].Conn(t).Exec(ctx, "create table settings (k text)"); err != nil {
				t.Fatal(err)
			}
		}
		// The password comes from the environment; the server (trust) ignores it.
		u, _ := url.Parse(dbs[i].URL)
		u.User = url.UserPassword(u.User.Username(), "PLACEHOLDER")
		lines = append(lines, strings.Replace(u.String(), "PLACEHOLDER", "${FLEET_PW}", 1))
	}
	targets := filepath.Join(dir, "targets.txt")
	body := "# every customer database\n" + strings.Join(lines, "\n") + "\n"
	if err := os.WriteFile(targets, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	env := []string{"FLEET_PW=hunter2secret"}
	noSecret := func(r cliRun) {
		t.Helper()
		if strings.Contains(r.stdout+r.stderr, "hunter2secret") {
			t.Fatalf("the password reached the output:\n%s\n%s", r.stdout, r.stderr)
		}
	}

	// Text: one line per database, the summary names the failed one, exit 1.
	r := pgmigRun(t, dir, env, "push", "--targets", targets, "--parallel", "3", "--continue-on-error")
	r.must(t, exitMigration, "Failed on 1 target:", "002_email.sql:2", `relation "settings" does not exist`, dbs[3].Name)
	noSecret(r)
	if got := strings.Count(r.stdout, "applied versions 1, 2, now at version 2"); got != n-1 {
		t.Fatalf("%d databases report both versions applied, want %d:\n%s", got, n-1, r.stdout)
	}

	// The fix; the re-run in --json: one line per database, then the summary.
	if _, err := dbs[3].Conn(t).Exec(ctx, "create table settings (k text)"); err != nil {
		t.Fatal(err)
	}
	r = pgmigRun(t, dir, env, "push", "--targets", targets, "--json")
	r.must(t, exitOK)
	noSecret(r)
	out := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(out) != n+1 {
		t.Fatalf("%d JSON lines, want %d (one per database, then the summary):\n%s", len(out), n+1, r.stdout)
	}
	outcomes := map[string]string{}
	for _, l := range out[:n] {
		var tr struct {
			Target, Outcome string
			Applied         []int64
		}
		if err := json.Unmarshal([]byte(l), &tr); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		outcomes[tr.Target] = fmt.Sprint(tr.Outcome, tr.Applied)
	}
	for i, db := range dbs {
		want := "up_to_date[]"
		if i == 3 {
			want = "applied[1 2]"
		}
		name := targetFor(outcomes, db.Name)
		if outcomes[name] != want {
			t.Fatalf("database %d (%s): %s, want %s; all: %v", i, name, outcomes[name], want, outcomes)
		}
	}
	var sum struct {
		Summary struct{ Targets, Applied, UpToDate, Failed int } `json:"summary"`
	}
	if err := json.Unmarshal([]byte(out[n]), &sum); err != nil || sum.Summary.Targets != n || sum.Summary.Applied != 1 || sum.Summary.Failed != 0 {
		t.Fatalf("summary %q: %+v %v", out[n], sum, err)
	}

	// --targets-query on a catalog database, with --install where the
	// engine is missing, and a failing canary that stops the rollout.
	catalog := pgtest.NewEmptyDB(t)
	fresh := []*pgtest.DB{pgtest.NewEmptyDB(t), pgtest.NewEmptyDB(t), pgtest.NewEmptyDB(t)}
	for _, db := range fresh {
		if _, err := db.Conn(t).Exec(ctx, "create table settings (k text)"); err != nil {
			t.Fatal(err)
		}
	}
	query := fmt.Sprintf("select unnest(array['%s', '%s', '%s'])", fresh[0].Name, fresh[1].Name, fresh[2].Name)
	r = pgmigRun(t, dir, nil, "push", "--database", catalog.URL, "--targets-query", query)
	r.must(t, exitMigration, "engine is not installed")
	r = pgmigRun(t, dir, nil, "push", "--database", catalog.URL, "--targets-query", query, "--install", "--canary", "1")
	r.must(t, exitOK, "Done on every target.")
	for _, db := range fresh {
		var v int64
		if err := db.Conn(t).QueryRow(ctx, "select max(version) from pgmig.history").Scan(&v); err != nil || v != 2 {
			t.Fatalf("%s: version %d, %v", db.Name, v, err)
		}
	}
	// A canary that fails: nothing else starts.
	writeFiles(t, dir, map[string]string{"003_bad.sql": "select * from missing_table;\n"})
	r = pgmigRun(t, dir, env, "push", "--targets", targets, "--canary", "1", "--continue-on-error")
	r.must(t, exitMigration, "5 targets were not started because a canary failed", "003_bad.sql:1")
	noSecret(r)

	// Usage errors, before anything is connected to.
	pgmigRun(t, dir, nil, "push", "--targets", targets, "--targets-query", "select 1").must(t, exitUsage)
	pgmigRun(t, dir, nil, "push", "--canary", "2").must(t, exitUsage)
	pgmigRun(t, dir, nil, "push", "--targets", filepath.Join(dir, "nope.txt")).must(t, exitUsage)
}

// targetFor is the key of outcomes naming database db.
func targetFor(outcomes map[string]string, db string) string {
	for k := range outcomes {
		if strings.Contains(k, "/"+db+" ") {
			return k
		}
	}
	return db
}

// TestCLITenants: --schema for one tenant, --schemas-query for all of them,
// status per tenant and the tenants' summary, and the old meaning of
// --schema (the API schema) refused with a hint.
func TestCLITenants(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"001_users.sql": "create table users (id int);\n",
		"002_email.sql": "alter table users add column email text;\n",
	})
	db := pgtest.NewDB(t)
	conn := db.Conn(t)
	if _, err := conn.Exec(ctx, "create table public.tenants (name text, active boolean)"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "insert into public.tenants values ('acme', true), ('globex', true), ('initech', true), ('gone', false)"); err != nil {
		t.Fatal(err)
	}
	env := []string{"DATABASE_URL=" + db.URL}

	pgmigRun(t, dir, env, "push", "--schema", "acme").must(t, exitOK, "Applied 2 migrations")
	pgmigRun(t, dir, env, "status", "--schema", "acme").must(t, exitOK, "schema acme is at version 2", "Nothing pending.")
	r := pgmigRun(t, dir, env, "push", "--schemas-query", "select name from public.tenants where active order by name", "--json")
	r.must(t, exitOK)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 4 || !strings.Contains(lines[0]+lines[1]+lines[2], `"schema":"acme","outcome":"up_to_date"`) ||
		!strings.Contains(lines[3], `"targets":3,"applied":2,"up_to_date":1`) {
		t.Fatalf("--schemas-query --json:\n%s", r.stdout)
	}
	for _, s := range []string{"acme", "globex", "initech"} {
		var n int
		if err := conn.QueryRow(ctx, "select count(*) from information_schema.columns where table_schema = $1 and table_name = 'users'", s).Scan(&n); err != nil || n != 2 {
			t.Fatalf("%s.users has %d columns (%v), want 2", s, n, err)
		}
	}
	pgmigRun(t, dir, env, "status").must(t, exitOK, "Tenant schemas: 3 with a history, at version 2", "the database is at version 0")

	// --schema used to name the API schema: refused, saying what changed.
	r = pgmigRun(t, dir, env, "push", "--schema", "public")
	r.must(t, exitValidation)
	r.stderrHas(t, "holds pgmig's API functions", "--api-schema")
	pgmigRun(t, dir, env, "push", "--schema", "acme", "--schemas-query", "select 1").must(t, exitUsage)
}
