package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgmig/pgmig/tests/pgtest"
)

// What a new user tripped over (issue 11 §2), each pinned by a test that
// failed before the command table.

// oneJSON decodes stdout as exactly one JSON document.
func oneJSON(t *testing.T, r cliRun) map[string]any {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(r.stdout))
	var doc map[string]any
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("stdout is not a JSON document: %v\n%s\nstderr:\n%s", err, r.stdout, r.stderr)
	}
	var extra json.RawMessage
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		t.Fatalf("stdout holds more than one JSON document (next: %s, %v):\n%s", extra, err, r.stdout)
	}
	return doc
}

func errorField(t *testing.T, doc map[string]any) map[string]any {
	t.Helper()
	e, ok := doc["error"].(map[string]any)
	if !ok {
		t.Fatalf("no error object in %v", doc)
	}
	return e
}

// hintLine is the HINT line of a text error.
func hintLine(stderr string) string {
	for _, l := range strings.Split(stderr, "\n") {
		if strings.HasPrefix(l, "HINT:") {
			return l
		}
	}
	return ""
}

func TestStatusJSONWithDriftIsOneDocument(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	dir := t.TempDir()
	writeFiles(t, dir, baseMigrations)
	env := []string{"DATABASE_URL=" + db.URL}
	pgmigRun(t, dir, env, "push").must(t, exitOK)
	writeFiles(t, dir, map[string]string{"002_add_email.sql": "alter table users add column email text not null;\n"})
	r := pgmigRun(t, dir, env, "status", "--json").must(t, exitValidation)
	doc := oneJSON(t, r)
	if h, _ := doc["history"].([]any); len(h) != 2 || doc["version"] != 2.0 {
		t.Errorf("status --json lost the history: %v", doc)
	}
	if e := errorField(t, doc); e["sqlstate"] != "PM002" || e["exit_code"] != 4.0 {
		t.Errorf("status --json error: %v", e)
	}
}

func TestNewCreatesMissingDir(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	r := pgmigRun(t, dir, nil, "new", "create_accounts", "--dir", "migrations").must(t, exitOK, filepath.Join("migrations", "001_create_accounts.sql"))
	r.stderrHas(t, "created directory migrations")
	if _, err := os.Stat(filepath.Join(dir, "migrations", "001_create_accounts.sql")); err != nil {
		t.Fatal(err)
	}
	// The second one goes next to it, without the note.
	r = pgmigRun(t, dir, nil, "new", "add_email", "--dir", "migrations").must(t, exitOK, filepath.Join("migrations", "002_add_email.sql"))
	if r.stderr != "" {
		t.Errorf("stderr: %s", r.stderr)
	}
	doc := oneJSON(t, pgmigRun(t, dir, nil, "new", "x", "--dir", "db/nested", "--json").must(t, exitOK))
	if doc["created_dir"] != "db/nested" || doc["file"] != filepath.Join("db", "nested", "001_x.sql") {
		t.Errorf("new --json: %v", doc)
	}
}

// Hints are CLI commands and flags, chosen by SQLSTATE and the drift
// kinds the error lists: an edited migration is not told about
// out-of-order versions.
func TestHintsSpeakCLI(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	dir := t.TempDir()
	writeFiles(t, dir, baseMigrations)
	env := []string{"DATABASE_URL=" + db.URL}
	pgmigRun(t, dir, env, "push").must(t, exitOK)
	sqlWords := []string{"migrate_", "=>", "allow_out_of_order", "select "}

	// Edited.
	writeFiles(t, dir, map[string]string{"002_add_email.sql": "alter table users add column email text not null;\n"})
	r := pgmigRun(t, dir, env, "push").must(t, exitValidation)
	hint := hintLine(r.stderr)
	if !strings.Contains(hint, "pgmig repair") || !strings.Contains(hint, "version 2") {
		t.Errorf("edited migration: hint %q", hint)
	}
	for _, w := range append(sqlWords, "out-of-order", "out of order") {
		if strings.Contains(hint, w) {
			t.Errorf("edited migration: hint mentions %q: %s", w, hint)
		}
	}
	e := errorField(t, oneJSON(t, pgmigRun(t, dir, env, "push", "--json").must(t, exitValidation)))
	h, _ := e["hint"].(string)
	if sh, _ := e["server_hint"].(string); !strings.Contains(h, "pgmig repair") || !strings.Contains(sh, "migrate_repair") {
		t.Errorf("--json hint %q, server_hint %q", e["hint"], e["server_hint"])
	}
	writeFiles(t, dir, baseMigrations)

	// Out of order: 1, 2, 4 applied, 3 pending (tern's files have no gaps,
	// so 3's history row is taken away).
	writeFiles(t, dir, map[string]string{"003_three.sql": "select 3;", "004_four.sql": "select 4;"})
	pgmigRun(t, dir, env, "push").must(t, exitOK)
	admin := db.Conn(t)
	tx, err := admin.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"set local pgmig.maintenance = 'on'", "delete from pgmig.history where version = 3"} {
		if _, err := tx.Exec(context.Background(), q); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	r = pgmigRun(t, dir, env, "push").must(t, exitValidation)
	hint = hintLine(r.stderr)
	if !strings.Contains(hint, "--allow-out-of-order") || !strings.Contains(hint, "version 3") || strings.Contains(hint, "repair") {
		t.Errorf("out of order: hint %q\n%s", hint, r.stderr)
	}
	for _, w := range sqlWords {
		if strings.Contains(hint, w) {
			t.Errorf("out of order: hint mentions %q: %s", w, hint)
		}
	}
	pgmigRun(t, dir, env, "push", "--allow-out-of-order").must(t, exitOK, "applied 003_three.sql")

	// Lock timeout: pgmig status, not migrate_status().
	holder := db.Conn(t)
	lockTx, err := holder.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer lockTx.Rollback(context.Background())
	if _, err := lockTx.Exec(context.Background(), "lock table pgmig.history in exclusive mode"); err != nil {
		t.Fatal(err)
	}
	writeFiles(t, dir, map[string]string{"005_five.sql": "select 5;"})
	r = pgmigRun(t, dir, env, "push", "--lock-timeout", "100ms").must(t, exitLocked)
	if hint = hintLine(r.stderr); !strings.Contains(hint, "pgmig status") || strings.Contains(hint, "migrate_status") {
		t.Errorf("lock timeout: hint %q", hint)
	}
	r = pgmigRun(t, dir, env, "validate").must(t, exitLocked)
	if hint = hintLine(r.stderr); !strings.Contains(hint, "pgmig validate --wait") {
		t.Errorf("validate lock timeout: hint %q", hint)
	}
}

// Each command names its own operation: validate used to say "pushing
// migrations:", status "planning:".
func TestErrorsNameTheCommandsOperation(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	dir := t.TempDir()
	writeFiles(t, dir, baseMigrations)
	env := []string{"DATABASE_URL=" + db.URL}
	pgmigRun(t, dir, env, "push").must(t, exitOK)
	writeFiles(t, dir, map[string]string{"002_add_email.sql": "alter table users add column email text not null;\n"})
	for cmd, op := range map[string]string{
		"validate": "pgmig: error: validating migrations: migrations drifted",
		"status":   "pgmig: error: reading the status: migrations drifted",
		"plan":     "pgmig: error: planning: migrations drifted",
		"push":     "pgmig: error: pushing migrations: migrations drifted",
	} {
		r := pgmigRun(t, dir, env, cmd).must(t, exitValidation)
		r.stderrHas(t, op)
		for _, other := range []string{"pushing migrations", "planning", "reading the status", "validating migrations"} {
			if !strings.Contains(op, other) && strings.Contains(r.stderr, other+":") {
				t.Errorf("%s names another operation (%s):\n%s", cmd, other, r.stderr)
			}
		}
		e := errorField(t, oneJSON(t, pgmigRun(t, dir, env, cmd, "--json").must(t, exitValidation)))
		if msg, _ := e["message"].(string); !strings.HasPrefix(msg, strings.TrimPrefix(op, "pgmig: error: ")) {
			t.Errorf("%s --json message %q", cmd, msg)
		}
	}
}

// A migration that touches pgmig's history is refused (PM008) and, like
// any failed migration, exits 1 (it exited 2).
func TestHistoryTouchedByMigrationExitsOne(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	dir := t.TempDir()
	writeFiles(t, dir, baseMigrations)
	env := []string{"DATABASE_URL=" + db.URL}
	pgmigRun(t, dir, env, "push").must(t, exitOK)
	writeFiles(t, dir, map[string]string{"003_sneaky.sql": "create table t3 (id int);\ndelete from pgmig.history where version = 1;\n"})
	r := pgmigRun(t, dir, env, "push").must(t, exitMigration)
	r.stderrHas(t, "SQLSTATE: PM008", "pgmig rollback")
	if strings.Contains(hintLine(r.stderr), "migrate_") {
		t.Errorf("hint speaks SQL: %s", hintLine(r.stderr))
	}
	e := errorField(t, oneJSON(t, pgmigRun(t, dir, env, "push", "--json").must(t, exitMigration)))
	if e["exit_code"] != 1.0 || e["sqlstate"] != "PM008" {
		t.Errorf("--json error %v", e)
	}
	pgmigRun(t, dir, env, "status").must(t, exitOK, "the database is at version 2 (2 migrations applied)")
}

// silentServer accepts connections and never answers: a command that
// waited on the network would hang until its connect_timeout.
func silentServer(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	return "postgres://nobody@" + l.Addr().String() + "/nothing?connect_timeout=60"
}

// Flags are parsed and checked before anything is connected to.
func TestBadFlagsNeverWaitOnTheNetwork(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeFiles(t, dir, baseMigrations)
	env := []string{"DATABASE_URL=" + silentServer(t)}
	for _, tc := range []struct {
		args []string
		says string
	}{
		{[]string{"push", "--segment-size", "lots"}, "segment-size"},
		{[]string{"push", "--lock-timeout", "soon"}, "lock-timeout"},
		{[]string{"push", "--format", "liquibase"}, "unknown format"},
		{[]string{"push", "--data", "not a pair"}, "KEY=VALUE"},
		{[]string{"rollback"}, "--to V"},
		{[]string{"baseline"}, "--version V and --from-tern"},
		{[]string{"resolve", "two", "--retry"}, "pgmig resolve V"},
		{[]string{"resolve", "2"}, "pgmig resolve V"},
		{[]string{"status", "extra"}, "unexpected argument"},
		{[]string{"push", "--to", "3"}, "-to"},
	} {
		start := time.Now()
		r := pgmigRun(t, dir, env, tc.args...).must(t, exitUsage)
		r.stderrHas(t, tc.says)
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("%v took %v: it waited on the network", tc.args, d)
		}
		e := errorField(t, oneJSON(t, pgmigRun(t, dir, env, append(tc.args, "--json")...).must(t, exitUsage)))
		if e["exit_code"] != 2.0 {
			t.Errorf("%v --json: %v", tc.args, e)
		}
	}
	// Settings from the environment are checked as strictly, naming the variable.
	pgmigRun(t, dir, append(env, "PGMIG_SEGMENT_SIZE=lots"), "push").must(t, exitUsage).stderrHas(t, "$PGMIG_SEGMENT_SIZE")
}

// pgmig <cmd> --help and pgmig help <cmd> show that command's flags only.
func TestCommandHelp(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	push := pgmigRun(t, dir, nil, "push", "--help").must(t, exitOK, "usage: pgmig push [flags]", "--segment-size N", "--lock-timeout D", "--dir DIR", "PGMIG_SEGMENT_SIZE")
	for _, foreign := range []string{"--to ", "--print", "--retry ", "--wait "} {
		if strings.Contains(push.stdout, foreign) {
			t.Errorf("push --help lists %q:\n%s", foreign, push.stdout)
		}
	}
	if h := pgmigRun(t, dir, nil, "help", "push").must(t, exitOK); h.stdout != push.stdout {
		t.Errorf("pgmig help push differs from pgmig push --help")
	}
	rb := pgmigRun(t, dir, nil, "rollback", "-h").must(t, exitOK, "usage: pgmig rollback --to V [flags]", "--to V", "--dry-run", "default: do not wait")
	if strings.Contains(rb.stdout, "--segment-size") {
		t.Errorf("rollback --help lists push's flags:\n%s", rb.stdout)
	}
	all := pgmigRun(t, dir, nil, "help").must(t, exitOK, "Exit codes:", "3  timeout: another migrator holds the lock")
	for _, c := range commands {
		if !strings.Contains(all.stdout, "\n  "+c.name+" ") {
			t.Errorf("pgmig help does not list %s", c.name)
		}
	}
	doc := oneJSON(t, pgmigRun(t, dir, nil, "validate", "--help", "--json").must(t, exitOK))
	var names []string
	for _, f := range doc["flags"].([]any) {
		names = append(names, f.(map[string]any)["name"].(string))
	}
	if got := strings.Join(names, " "); !strings.HasPrefix(got, "wait wait-timeout target lock-timeout") {
		t.Errorf("validate --help --json flags: %s", got)
	}
	pgmigRun(t, dir, nil, "help", "frobnicate").must(t, exitUsage)
}

// --json: exactly one JSON document on stdout for every command, errors
// included.
func TestJSONEverywhere(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	dir := t.TempDir()
	writeFiles(t, dir, baseMigrations)
	env := []string{"DATABASE_URL=" + db.URL}
	down := []string{"DATABASE_URL=postgres://nobody@127.0.0.1:1/nothing?connect_timeout=2"}
	for _, tc := range []struct {
		env  []string
		args []string
		code int
	}{
		{nil, []string{"frobnicate", "--json"}, exitUsage},
		{nil, []string{"help", "--json"}, exitOK},
		{nil, []string{"version", "--json"}, exitOK},
		{nil, []string{"install", "--print", "--json"}, exitOK},
		{nil, []string{"config", "--json"}, exitOK},
		{env, []string{"plan", "--json"}, exitOK},
		{env, []string{"push", "--json"}, exitOK},
		{env, []string{"validate", "--json"}, exitOK},
		{env, []string{"status", "--json"}, exitOK},
		{env, []string{"rollback", "--to", "2", "--dry-run", "--json"}, exitOK},
		{env, []string{"repair", "--json"}, exitOK},
		{env, []string{"resolve", "1", "--retry", "--json"}, exitValidation},
		{env, []string{"baseline", "--version", "1", "--json"}, exitValidation},
		{down, []string{"status", "--json"}, exitUsage},
		{down, []string{"install", "--json"}, exitUsage},
		{append(env, "PGMIG_JSON=1"), []string{"push", "--bogus"}, exitUsage},
	} {
		r := pgmigRun(t, dir, tc.env, tc.args...).must(t, tc.code)
		doc := oneJSON(t, r)
		if tc.code != exitOK {
			if e := errorField(t, doc); e["exit_code"] != float64(tc.code) || e["message"] == "" {
				t.Errorf("%v: error %v", tc.args, e)
			}
		}
	}
	var script struct{ SQL string }
	r := pgmigRun(t, dir, nil, "install", "--print", "--json").must(t, exitOK)
	if err := json.Unmarshal([]byte(r.stdout), &script); err != nil || !bytes.Contains([]byte(script.SQL), []byte("migrate_apply")) {
		t.Errorf("install --print --json: %v", err)
	}
}
