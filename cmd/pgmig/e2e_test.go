package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pgmigsql "github.com/pgmig/pgmig/sql"
	"github.com/pgmig/pgmig/tests/pgtest"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// binary is the pgmig command built once for all tests: they run the real
// binary, as users and CI do.
var binary string

func TestMain(m *testing.M) {
	flag.Parse()
	removeStaleBuilds()
	dir, err := os.MkdirTemp("", fmt.Sprintf("pgmig-e2e-%d-", os.Getpid()))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	binary = filepath.Join(dir, "pgmig")
	out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building pgmig: %v\n%s", err, out)
		os.Exit(2)
	}
	pgtest.Main(m)
}

// removeStaleBuilds deletes binaries left by earlier runs (pgtest.Main
// exits without returning, so a run cannot clean up after itself) whose
// process is gone.
func removeStaleBuilds() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "pgmig-e2e-*"))
	for _, d := range dirs {
		var pid int
		if _, err := fmt.Sscanf(filepath.Base(d), "pgmig-e2e-%d-", &pid); err != nil {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); errors.Is(err, os.ErrNotExist) {
			os.RemoveAll(d)
		}
	}
}

type cliRun struct {
	stdout, stderr string
	code           int
	took           time.Duration
}

// pgmigCommand is the binary in dir with a clean environment plus env.
func pgmigCommand(dir string, env []string, args ...string) *exec.Cmd {
	cmd := exec.Command(binary, args...)
	cmd.Dir = dir
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") || strings.HasPrefix(kv, "DATABASE_URL=") {
			continue
		}
		cmd.Env = append(cmd.Env, kv)
	}
	cmd.Env = append(cmd.Env, env...)
	return cmd
}

// pgmigRun runs the binary in dir with a clean environment plus env.
func pgmigRun(t *testing.T, dir string, env []string, args ...string) cliRun {
	t.Helper()
	cmd := pgmigCommand(dir, env, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	r := cliRun{stdout: stdout.String(), stderr: stderr.String(), took: time.Since(start)}
	var exitErr *exec.ExitError
	switch {
	case errors.As(err, &exitErr):
		r.code = exitErr.ExitCode()
	case err != nil:
		t.Fatalf("running pgmig %v: %v", args, err)
	}
	return r
}

func (r cliRun) must(t *testing.T, code int, stdoutHas ...string) cliRun {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit code %d, want %d\nstdout:\n%s\nstderr:\n%s", r.code, code, r.stdout, r.stderr)
	}
	for _, s := range stdoutHas {
		if !strings.Contains(r.stdout, s) {
			t.Errorf("stdout lacks %q:\n%s", s, r.stdout)
		}
	}
	return r
}

func (r cliRun) stderrHas(t *testing.T, subs ...string) {
	t.Helper()
	for _, s := range subs {
		if !strings.Contains(r.stderr, s) {
			t.Errorf("stderr lacks %q:\n%s", s, r.stderr)
		}
	}
}

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, body := range files {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

var baseMigrations = map[string]string{
	"001_create_users.sql": "create table users (\n    id bigint primary key\n);\n---- create above / drop below ----\ndrop table users;\n",
	"002_add_email.sql":    "alter table users add column email text;\n",
}

// TestCLILoop: install → push → status → push again (no-op) → edit an
// applied file (drift refused) → bad SQL (golden error output) → fix → push.
func TestCLILoop(t *testing.T) {
	t.Parallel()
	db := pgtest.NewEmptyDB(t)
	dir := t.TempDir()
	writeFiles(t, dir, baseMigrations)
	env := []string{"DATABASE_URL=" + db.URL}

	r := pgmigRun(t, dir, env, "push").must(t, exitUsage)
	r.stderrHas(t, "not installed", "pgmig install")

	pgmigRun(t, dir, env, "install").must(t, exitOK, "Installed the pgmig engine "+pgmigsql.Version())
	pgmigRun(t, dir, env, "install").must(t, exitOK, "is installed")

	pgmigRun(t, dir, env, "plan").must(t, exitOK, "2 migrations would be applied", "001_create_users.sql", "002_add_email.sql")

	pgmigRun(t, dir, env, "push").must(t, exitOK,
		"applied 001_create_users.sql (", "applied 002_add_email.sql (", "Applied 2 migrations in ", "now at version 2.")

	pgmigRun(t, dir, env, "status").must(t, exitOK, "the database is at version 2 (2 migrations applied)", "create_users", "add_email", "Nothing pending.")
	var st struct {
		Version int64 `json:"version"`
		History []struct {
			Version int64  `json:"version"`
			State   string `json:"state"`
		} `json:"history"`
	}
	r = pgmigRun(t, dir, env, "status", "--json").must(t, exitOK)
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || st.Version != 2 || len(st.History) != 2 {
		t.Fatalf("status --json: %v %+v\n%s", err, st, r.stdout)
	}

	r = pgmigRun(t, dir, env, "push").must(t, exitOK, "Nothing to apply: the database is at version 2.")
	if strings.Contains(r.stdout, "applied 0") {
		t.Errorf("no-op push listed migrations:\n%s", r.stdout)
	}
	var pushed struct {
		Applied    int   `json:"applied"`
		Version    int64 `json:"version"`
		Prechecked bool  `json:"prechecked"`
	}
	r = pgmigRun(t, dir, env, "push", "--json").must(t, exitOK)
	if err := json.Unmarshal([]byte(r.stdout), &pushed); err != nil || pushed.Applied != 0 || pushed.Version != 2 || !pushed.Prechecked {
		t.Fatalf("push --json: %v %+v\n%s", err, pushed, r.stdout)
	}
	pgmigRun(t, dir, env, "push", "--quiet").must(t, exitOK)
	if r := pgmigRun(t, dir, env, "push", "--quiet"); r.stdout != "" || r.stderr != "" {
		t.Errorf("--quiet printed: %q %q", r.stdout, r.stderr)
	}

	// Drift: an applied file edited.
	writeFiles(t, dir, map[string]string{"002_add_email.sql": "alter table users add column email text not null;\n"})
	r = pgmigRun(t, dir, env, "push").must(t, exitValidation)
	r.stderrHas(t, "SQLSTATE: PM002", "version 2 (add_email)")
	pgmigRun(t, dir, env, "validate").must(t, exitValidation)
	r = pgmigRun(t, dir, env, "push", "--json").must(t, exitValidation)
	if !strings.Contains(r.stdout, `"sqlstate": "PM002"`) || !strings.Contains(r.stdout, `"exit_code": 4`) {
		t.Errorf("push --json on drift:\n%s", r.stdout)
	}
	writeFiles(t, dir, baseMigrations)
	pgmigRun(t, dir, env, "validate").must(t, exitOK, "OK: 2 applied migrations match the history")

	// Bad SQL: the error output is compared with a golden file.
	for _, tc := range []struct{ file, body, golden string }{
		{"003_add_profile.sql", "-- a typo on line 4\ncreate table profile (\n    user_id bigint references users,\n    bïo text nott null\n);\n", "bad_syntax.golden"},
		{"003_add_profile.sql", "create table profile (user_id bigint);\n\n\tselect\tlower('a', 'b');\n", "bad_function.golden"},
		{"003_add_profile.sql", "create table profile (user_id bigint);\n{{ template \"shared/grants.sql\" }}\n", "bad_template.golden"},
	} {
		writeFiles(t, dir, map[string]string{tc.file: tc.body, "shared/grants.sql": "comment on table profile is 'p';\ngrant select onn profile to public;\n"})
		r = pgmigRun(t, dir, env, "push").must(t, exitMigration, "failed 003_add_profile.sql (after ")
		golden(t, tc.golden, r.stderr)
		r = pgmigRun(t, dir, env, "push", "--json").must(t, exitMigration, `"file": "003_add_profile.sql"`, `"current_version": 2`)
	}
	pgmigRun(t, dir, env, "plan").must(t, exitOK, "1 migration would be applied (the database is at version 2):", "003_add_profile.sql")
	// Run from elsewhere with --dir: file names relative to the current directory.
	r = pgmigRun(t, filepath.Dir(dir), env, "push", "--dir", filepath.Base(dir)).must(t, exitMigration)
	r.stderrHas(t, filepath.Join(filepath.Base(dir), "003_add_profile.sql")+":2:1: ERROR:", "EXPANDED from "+filepath.Join(filepath.Base(dir), "shared/grants.sql")+":2:14: ")
	if strings.Contains(r.stdout+r.stderr, "\033[") {
		t.Errorf("colours in piped output:\n%s%s", r.stdout, r.stderr)
	}

	// Fixed: applies. --database beats DATABASE_URL.
	writeFiles(t, dir, map[string]string{"003_add_profile.sql": "create table profile (user_id bigint references users);\n"})
	pgmigRun(t, dir, []string{"DATABASE_URL=postgres://nobody@127.0.0.1:1/nothing"}, "push", "--database", db.URL).
		must(t, exitOK, "applied 003_add_profile.sql", "now at version 3.")
}

// golden compares got with testdata/name (rewritten with -update).
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if string(want) != got {
		t.Errorf("output differs from %s:\n--- want\n%s--- got\n%s", path, want, got)
	}
}

// libpq environment variables (no DATABASE_URL) and the --dir flag.
func TestCLIPGEnvironment(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	u, err := url.Parse(db.URL)
	if err != nil {
		t.Fatal(err)
	}
	env := []string{"PGHOST=" + u.Hostname(), "PGPORT=" + u.Port(), "PGUSER=" + u.User.Username(),
		"PGDATABASE=" + strings.TrimPrefix(u.Path, "/"), "PGSSLMODE=disable", "PGAPPNAME=pgmig-e2e"}
	if pw, ok := u.User.Password(); ok {
		env = append(env, "PGPASSWORD="+pw)
	}
	dir := t.TempDir()
	writeFiles(t, dir, baseMigrations)
	pgmigRun(t, t.TempDir(), env, "push", "--dir", dir).must(t, exitOK, "Applied 2 migrations")
	pgmigRun(t, t.TempDir(), env, "status").must(t, exitOK, "the database is at version 2")
}

// validate --wait polls while another session holds the lock; without
// --wait, validate and push fail fast with exit code 3.
func TestCLIValidateWait(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	dir := t.TempDir()
	writeFiles(t, dir, baseMigrations)
	env := []string{"DATABASE_URL=" + db.URL}
	pgmigRun(t, dir, env, "push").must(t, exitOK)
	writeFiles(t, dir, map[string]string{"003_more.sql": "create table more (id int);"})

	holder := db.Conn(t)
	tx, err := holder.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "lock table pgmig.history in exclusive mode"); err != nil {
		t.Fatal(err)
	}

	r := pgmigRun(t, dir, env, "validate").must(t, exitLocked)
	r.stderrHas(t, "SQLSTATE: PM003", fmt.Sprintf("pid %d", holder.PgConn().PID()))
	pgmigRun(t, dir, env, "push", "--lock-timeout", "200ms").must(t, exitLocked)
	pgmigRun(t, dir, env, "validate", "--wait", "--wait-timeout", "300ms").must(t, exitLocked)

	const hold = 1500 * time.Millisecond
	released := make(chan struct{})
	go func() {
		time.Sleep(hold)
		tx.Rollback(ctx)
		close(released)
	}()
	r = pgmigRun(t, dir, env, "validate", "--wait").must(t, exitOK, "OK: 2 applied migrations match the history, 1 migration pending")
	r.stderrHas(t, fmt.Sprintf("waiting for the migration lock held by pid %d", holder.PgConn().PID()))
	<-released
	if r.took < hold/2 {
		t.Errorf("validate --wait returned after %v, before the lock was released", r.took)
	}
	pgmigRun(t, dir, env, "push").must(t, exitOK, "applied 003_more.sql")
}

// install --print writes the script for managed databases; psql -f of it
// gives a working engine.
func TestCLIInstallPrint(t *testing.T) {
	t.Parallel()
	r := pgmigRun(t, t.TempDir(), nil, "install", "--print").must(t, exitOK)
	if r.stdout != pgmigsql.InstallScript() {
		t.Fatalf("install --print is not the embedded script")
	}
	db := pgtest.NewEmptyDB(t)
	script := filepath.Join(t.TempDir(), "pgmig.sql")
	if err := os.WriteFile(script, []byte(r.stdout), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(pgtest.Server(t).PsqlPath(), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", db.URL, "-f", script).CombinedOutput()
	if err != nil {
		t.Fatalf("psql -f: %v\n%s", err, out)
	}
	dir := t.TempDir()
	writeFiles(t, dir, baseMigrations)
	pgmigRun(t, dir, []string{"DATABASE_URL=" + db.URL}, "push").must(t, exitOK, "Applied 2 migrations")
}

func TestCLISegments(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"001_a.sql": "create table a (id int);",
		"002_b.sql": "create table b (id int);",
		"003_c.sql": "create table c (id int);",
		"004_d.sql": "create tabl d (id int);",
	})
	env := []string{"DATABASE_URL=" + db.URL}
	r := pgmigRun(t, dir, env, "push", "--segment-size", "2").must(t, exitMigration, "applied 001_a.sql", "applied 003_c.sql", "failed 004_d.sql")
	r.stderrHas(t, "004_d.sql:1:8: ERROR:", "Migration 4 (d) failed and its segment was rolled back; the 2 migrations of earlier segments stay applied: the database is at version 2.")
	writeFiles(t, dir, map[string]string{"004_d.sql": "create table d (id int);"})
	pgmigRun(t, dir, env, "push", "--segment-size", "1").must(t, exitOK, "Applied 2 migrations in 2 steps", "now at version 4.")
}

// A `---- tern: disable-tx ----` migration runs statement by statement; a
// failure in it is reported with the statement and what to do next.
func TestCLINonTransactional(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"001_t.sql":     "create table t (id int, v text);\n",
		"002_index.sql": "---- tern: disable-tx ----\ncreate index concurrently t_id on t (id);\ncreate index concurrently t_v on t (v) wher v > '';\n",
	})
	env := []string{"DATABASE_URL=" + db.URL}
	r := pgmigRun(t, dir, env, "push").must(t, exitMigration, "applied 001_t.sql", "failed 002_index.sql")
	golden(t, "bad_nontx.golden", r.stderr)
	r = pgmigRun(t, dir, env, "push").must(t, exitValidation)
	r.stderrHas(t, "SQLSTATE: PM009", "pgmig resolve 2 --retry")
	if strings.Contains(r.stderr, "migrate_resolve") {
		t.Errorf("the CLI's hint speaks SQL:\n%s", r.stderr)
	}
	if _, err := db.Conn(t).Exec(context.Background(), "drop index t_id; select migrate_resolve(2, 'retry')"); err != nil {
		t.Fatal(err)
	}
	writeFiles(t, dir, map[string]string{
		"002_index.sql": "---- tern: disable-tx ----\ncreate index concurrently t_id on t (id);\ncreate index concurrently t_v on t (v) where v > '';\n",
	})
	pgmigRun(t, dir, env, "push").must(t, exitOK, "applied 002_index.sql", "Applied 1 migration in ")
}

func TestCLINew(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	pgmigRun(t, dir, nil, "new", "create_users").must(t, exitOK, "001_create_users.sql")
	pgmigRun(t, t.TempDir(), nil, "new", "add_email", "--dir", dir).must(t, exitOK, filepath.Join(dir, "002_add_email.sql"))
	body, err := os.ReadFile(filepath.Join(dir, "002_add_email.sql"))
	if err != nil || !strings.Contains(string(body), "---- create above / drop below ----") {
		t.Fatalf("new file: %v %q", err, body)
	}
	writeFiles(t, dir, map[string]string{"0010_wide.sql": "select 1;"})
	pgmigRun(t, dir, nil, "new", "next").must(t, exitOK, "0011_next.sql")
	pgmigRun(t, dir, nil, "new").must(t, exitUsage)
	pgmigRun(t, dir, nil, "new", "bad/name").must(t, exitUsage)
}

func TestCLIUsage(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	pgmigRun(t, dir, nil, "help").must(t, exitOK, "Exit codes:", "3  timeout: another migrator holds the lock")
	pgmigRun(t, dir, nil).must(t, exitUsage)
	pgmigRun(t, dir, nil, "frobnicate").must(t, exitUsage)
	pgmigRun(t, dir, nil, "push", "--no-such-flag").must(t, exitUsage)
	pgmigRun(t, dir, nil, "version").must(t, exitOK, "pgmig "+pgmigsql.Version())
	// Bad files are a validation error, reported instead of the connection
	// error (push connects while it loads).
	writeFiles(t, dir, map[string]string{"001_a.sql": "select 1;", "003_c.sql": "select 3;"})
	r := pgmigRun(t, dir, []string{"DATABASE_URL=postgres://nobody@127.0.0.1:1/nothing"}, "push").must(t, exitValidation)
	r.stderrHas(t, "003_c.sql: missing migration version 2 (after 001_a.sql)")
	// ... without waiting for a server that does not answer.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	start := time.Now()
	r = pgmigRun(t, dir, []string{"DATABASE_URL=postgres://nobody@" + silent.Addr().String() + "/nothing?connect_timeout=60"}, "push").must(t, exitValidation)
	r.stderrHas(t, "003_c.sql: missing migration version 2 (after 001_a.sql)")
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("the load error took %v: push waited for the connection", d)
	}
	// Connection failure.
	os.Remove(filepath.Join(dir, "003_c.sql"))
	pgmigRun(t, dir, []string{"DATABASE_URL=postgres://nobody@127.0.0.1:1/nothing?connect_timeout=2"}, "push").must(t, exitUsage)
}

// TestCLIRuntimeErrorLine: a runtime error (no position from the server)
// is shown at the file:line where the failing statement starts, with the
// statement's number and the CONTEXT inside the migration, in text and
// --json, transactional or not.
func TestCLIRuntimeErrorLine(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"001_t.sql":  "create table t (id int);\n\ninsert into t values (1);\ndo $$\nbegin\n  raise exception 't is not empty';\nend $$;\n",
		"002_nt.sql": "---- tern: disable-tx ----\ncreate index concurrently t_id on t (id);\n\nselect 1/0;\n",
	})
	env := []string{"DATABASE_URL=" + db.URL}
	r := pgmigRun(t, dir, env, "push").must(t, exitMigration, "failed 001_t.sql")
	r.stderrHas(t, "001_t.sql:4: ERROR:  t is not empty", "LINE 4: do $$", "(in statement 3 of 3, which starts there)",
		"CONTEXT:  PL/pgSQL function inline_code_block line 3 at RAISE", "nothing was applied")
	j := pgmigRun(t, dir, env, "push", "--json").must(t, exitMigration)
	var doc struct {
		Error struct {
			File      string `json:"file"`
			Line      int    `json:"line"`
			Statement int    `json:"statement"`
			Context   string `json:"context"`
		} `json:"error"`
	}
	if err := json.Unmarshal([]byte(j.stdout), &doc); err != nil {
		t.Fatalf("--json output: %v\n%s", err, j.stdout)
	}
	if e := doc.Error; e.File != "001_t.sql" || e.Line != 4 || e.Statement != 3 || !strings.Contains(e.Context, "at RAISE") {
		t.Errorf("--json error: %+v", e)
	}
	writeFiles(t, dir, map[string]string{"001_t.sql": "create table t (id int);\n"})
	r = pgmigRun(t, dir, env, "push").must(t, exitMigration, "applied 001_t.sql", "failed 002_nt.sql")
	r.stderrHas(t, "002_nt.sql:4: ERROR:  division by zero", "LINE 4: select 1/0;", "(in statement 2 of 2, which starts there)")
}
