// Package admin_test runs the admin-tooling paths against a real PostgreSQL,
// the way a DBA or a scheduler uses them: release scripts from pgmig bundle run
// by the real psql binary (and sent as one protocol message, as GUIs do),
// staged releases called from SQL, and a real pg_cron scheduling them
// (docs/admin-tooling.md).
package admin_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	pgmig "github.com/pgmig/pgmig/gowrapper"
	"github.com/pgmig/pgmig/tests/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}

// loadFiles loads tern-format migration files given by name and content.
func loadFiles(t *testing.T, files map[string]string) []*pgmig.Migration {
	t.Helper()
	fsys := fstest.MapFS{}
	for name, body := range files {
		fsys[name] = &fstest.MapFile{Data: []byte(body)}
	}
	ms, err := pgmig.Load(fsys, nil)
	if err != nil {
		t.Fatal(err)
	}
	return ms
}

// bundleFile writes the bundle of ms to a file and returns its path and text.
func bundleFile(t *testing.T, ms []*pgmig.Migration, opts *pgmig.BundleOpts) (string, string) {
	t.Helper()
	script, err := pgmig.Bundle(ms, opts)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "release.sql")
	if err := os.WriteFile(path, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	return path, script
}

type psqlResult struct {
	stdout, stderr string
	code           int
}

func psqlPath(t *testing.T) string {
	t.Helper()
	p := pgtest.Server(t).PsqlPath()
	if p == "" {
		t.Fatal("no psql binary: install the PostgreSQL client (apt-get install postgresql-client)")
	}
	return p
}

// psql runs the real psql against url with args, as a DBA would (no
// ~/.psqlrc, ON_ERROR_STOP on).
func psql(t *testing.T, url string, args ...string) psqlResult {
	t.Helper()
	c, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(c, psqlPath(t), append([]string{"-X", "-v", "ON_ERROR_STOP=1", "-d", url}, args...)...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	r := psqlResult{stdout: out.String(), stderr: errOut.String()}
	var exitErr *exec.ExitError
	switch {
	case errors.As(err, &exitErr):
		r.code = exitErr.ExitCode()
	case err != nil:
		t.Fatalf("running psql: %v", err)
	}
	return r
}

func pgCode(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

func queryString(t *testing.T, conn *pgx.Conn, sql string, args ...any) string {
	t.Helper()
	var s string
	if err := conn.QueryRow(ctx(t), sql, args...).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return s
}

func queryInt(t *testing.T, conn *pgx.Conn, sql string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := conn.QueryRow(ctx(t), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// checkHistory fails unless exactly ms are applied, with their exact SQL.
func checkHistory(t *testing.T, conn *pgx.Conn, ms []*pgmig.Migration) {
	t.Helper()
	if got, want := queryString(t, conn, "select migrate_history_digest()"), pgmig.HistoryDigest(ms); got != want {
		t.Errorf("history digest %s, want %s (the migrations' HistoryDigest)", got, want)
	}
	for _, m := range ms {
		var sql, down *string
		if err := conn.QueryRow(ctx(t), "select sql, down_sql from pgmig.history where version = $1", m.Version).Scan(&sql, &down); err != nil {
			t.Fatalf("version %d: %v", m.Version, err)
		}
		if m.Transactional && (sql == nil || *sql != m.SQL) {
			t.Errorf("version %d: recorded SQL differs from the file's:\n%v\nwant\n%q", m.Version, sql, m.SQL)
		}
		if m.Down != "" && (down == nil || *down != m.Down) {
			t.Errorf("version %d: recorded down SQL differs from the file's", m.Version)
		}
	}
}
