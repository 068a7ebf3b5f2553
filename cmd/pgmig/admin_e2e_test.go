package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	pgmigsql "github.com/pgmig/pgmig/sql"
	"github.com/pgmig/pgmig/tests/pgtest"
)

// pgmig batch prints what push would send; psql can apply it as is.
func TestCLIBatch(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeFiles(t, dir, baseMigrations)
	r := pgmigRun(t, dir, nil, "batch").must(t, exitOK)
	var batch []struct {
		Version  int64  `json:"version"`
		Name     string `json:"name"`
		SQL      string `json:"sql"`
		Down     string `json:"down"`
		Checksum string `json:"checksum"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &batch); err != nil || len(batch) != 2 || batch[0].Down != "drop table users;" || len(batch[1].Checksum) != 64 {
		t.Fatalf("batch: %v\n%s", err, r.stdout)
	}
	r.stderrHas(t, "2 migrations, versions 1 to 2; history digest once applied: ")

	var doc struct {
		Batch         []json.RawMessage `json:"batch"`
		Migrations    int               `json:"migrations"`
		HistoryDigest string            `json:"history_digest"`
	}
	r = pgmigRun(t, dir, nil, "batch", "--json", "--target", "1").must(t, exitOK)
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil || len(doc.Batch) != 1 || doc.Migrations != 1 || len(doc.HistoryDigest) != 64 || r.stderr != "" {
		t.Fatalf("batch --json --target 1: %v\n%s\n%s", err, r.stdout, r.stderr)
	}
	pgmigRun(t, dir, nil, "batch", "--target", "0").must(t, exitOK)
	pgmigRun(t, dir, nil, "batch", "--help").must(t, exitOK, "usage: pgmig batch", "--target")
	pgmigRun(t, dir, nil, "batch", "extra").must(t, exitUsage)
	pgmigRun(t, dir, nil, "batch", "--no-such-flag").must(t, exitUsage)
	r = pgmigRun(t, t.TempDir(), nil, "batch", "--json").must(t, exitValidation, `"exit_code": 4`)

	// The documented psql recipe applies it.
	db := pgtest.NewDB(t)
	r = pgmigRun(t, dir, nil, "batch")
	cmd := exec.Command(pgtest.Server(t).PsqlPath(), "-X", "-v", "ON_ERROR_STOP=1", "-v", "batch="+strings.TrimSpace(r.stdout), "-d", db.URL)
	cmd.Stdin = strings.NewReader("CALL migrate_run(:'batch');\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("psql: %v\n%s", err, out)
	}
	pgmigRun(t, dir, []string{"DATABASE_URL=" + db.URL}, "push").must(t, exitOK, "Nothing to apply: the database is at version 2.")
}

// pgmig bundle writes a script that psql runs; non-transactional
// migrations are refused naming them (exit 4).
func TestCLIBundle(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeFiles(t, dir, baseMigrations)
	out := filepath.Join(t.TempDir(), "release.sql")
	r := pgmigRun(t, dir, nil, "bundle", "-o", out, "--with-engine").must(t, exitOK)
	r.stderrHas(t, "wrote "+out+": 2 migrations (versions 1 to 2), installing engine "+pgmigsql.Version()+" first", "psql -v ON_ERROR_STOP=1 -f "+out)
	script, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(out); st.Mode().Perm() != 0o644 {
		t.Errorf("release.sql mode %v, want 0644", st.Mode().Perm())
	}
	stdout := pgmigRun(t, dir, nil, "bundle", "--with-engine", "--quiet").must(t, exitOK)
	if stdout.stdout != string(script) || stdout.stderr != "" {
		t.Errorf("bundle to stdout differs from -o, or --quiet printed %q", stdout.stderr)
	}
	var doc struct {
		File          string `json:"file"`
		Migrations    int    `json:"migrations"`
		HistoryDigest string `json:"history_digest"`
		WithEngine    bool   `json:"with_engine"`
	}
	r = pgmigRun(t, dir, nil, "bundle", "--output", out, "--json", "--target", "1").must(t, exitOK)
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil || doc.File != out || doc.Migrations != 1 || doc.WithEngine {
		t.Fatalf("bundle --json: %v\n%s", err, r.stdout)
	}
	pgmigRun(t, dir, nil, "bundle", "--json").must(t, exitUsage, "needs -o FILE")
	pgmigRun(t, dir, nil, "bundle", "--help").must(t, exitOK)

	// The script made with --with-engine on an empty database, as a DBA runs it.
	if err := os.WriteFile(out, script, 0o644); err != nil {
		t.Fatal(err)
	}
	db := pgtest.NewEmptyDB(t)
	psqlOut, err := exec.Command(pgtest.Server(t).PsqlPath(), "-X", "-v", "ON_ERROR_STOP=1", "-d", db.URL, "-f", out).CombinedOutput()
	if err != nil || !strings.Contains(string(psqlOut), "this run applied 2") {
		t.Fatalf("psql -f: %v\n%s", err, psqlOut)
	}
	pgmigRun(t, dir, []string{"DATABASE_URL=" + db.URL}, "status").must(t, exitOK, "the database is at version 2")

	writeFiles(t, dir, map[string]string{"003_index.sql": "---- tern: disable-tx ----\ncreate index concurrently users_email on users (email);\n"})
	r = pgmigRun(t, dir, nil, "bundle", "-o", out).must(t, exitValidation)
	r.stderrHas(t, "003_index.sql (version 3)", "pgmig push", "--target 2", "--nontx-applied")
	if after, _ := os.ReadFile(out); string(after) != string(script) {
		t.Error("a refused bundle overwrote the output file")
	}
	pgmigRun(t, dir, nil, "bundle", "-o", out, "--nontx-applied").must(t, exitOK)
}

// pgmig stage stores a release; the SQL call applies it; --list shows it.
func TestCLIStage(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	dir := t.TempDir()
	writeFiles(t, dir, baseMigrations)
	env := []string{"DATABASE_URL=" + db.URL}

	pgmigRun(t, dir, env, "stage", "--label", "v1.0.0").must(t, exitOK,
		"Staged release v1.0.0: 2 migrations (versions 1 to 2), 2 pending now.", "CALL migrate_run_staged('v1.0.0');")
	pgmigRun(t, dir, env, "stage", "--label", "v1.0.0").must(t, exitOK, "Release v1.0.0 was staged already with these migrations")
	writeFiles(t, dir, map[string]string{"003_more.sql": "create table more (id int);\n"})
	r := pgmigRun(t, dir, env, "stage", "--label", "v1.0.0").must(t, exitValidation)
	r.stderrHas(t, "SQLSTATE: PM021", "already exists with another batch")
	pgmigRun(t, dir, env, "stage", "--label", "bad label").must(t, exitValidation)
	pgmigRun(t, dir, env, "stage").must(t, exitUsage)
	pgmigRun(t, dir, env, "stage", "--list", "--label", "x").must(t, exitUsage)
	pgmigRun(t, dir, env, "stage", "--help").must(t, exitOK)
	pgmigRun(t, dir, []string{"DATABASE_URL=postgres://nobody@127.0.0.1:1/nothing?connect_timeout=2"}, "stage", "--list").must(t, exitUsage)

	pgmigRun(t, dir, env, "stage", "--list").must(t, exitOK, "v1.0.0", "pending")
	if _, err := db.Conn(t).Exec(t.Context(), "call migrate_run_staged('v1.0.0')"); err != nil {
		t.Fatal(err)
	}
	var list struct {
		Staged []struct {
			Label   string `json:"label"`
			State   string `json:"state"`
			Applied int    `json:"applied"`
		} `json:"staged"`
	}
	r = pgmigRun(t, dir, env, "stage", "--list", "--json").must(t, exitOK)
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil || len(list.Staged) != 1 || list.Staged[0].State != "applied" || list.Staged[0].Applied != 2 {
		t.Fatalf("stage --list --json: %v\n%s", err, r.stdout)
	}
	pgmigRun(t, dir, env, "stage", "--list").must(t, exitOK, "applied", "its runs applied 2")

	// --target: the release stops there; a drifted file is refused (exit 4).
	r = pgmigRun(t, dir, env, "stage", "--label", "v1.1.0", "--target", "3", "--json").must(t, exitOK)
	var res struct {
		Outcome    string `json:"outcome"`
		Migrations int    `json:"migrations"`
		Pending    int    `json:"pending"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || res.Outcome != "staged" || res.Migrations != 3 || res.Pending != 1 {
		t.Fatalf("stage --json: %v\n%s", err, r.stdout)
	}
	writeFiles(t, dir, map[string]string{"001_create_users.sql": "create table users (id int);\n"})
	r = pgmigRun(t, dir, env, "stage", "--label", "v1.2.0").must(t, exitValidation)
	r.stderrHas(t, "SQLSTATE: PM002")
}
