package hostile_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgmig/pgmig/tests/faults/workload"
	"github.com/pgmig/pgmig/tests/pgtest"
)

// TestBrokenFiles: `pgmig push` on a directory with one broken file fails
// with a message naming that file and applies nothing — not even the good
// files before it.
func TestBrokenFiles(t *testing.T) {
	t.Parallel()
	good := "create table good_one (id int);\n"
	for _, tc := range []struct {
		name, file, body string
	}{
		{"invalid UTF-8", "002_latin1.sql", "create table t2 (note text default 'gr\xfc\xdfe');\n"},
		{"truncated UTF-8 sequence", "002_cut.sql", "create table t2 (note text default '\xe2\x82');\n"},
		{"NUL byte", "002_nul.sql", "create table t2 (id int);\x00\ncreate table t3 (id int);\n"},
		{"NUL in the down section", "002_nul_down.sql", "create table t2 (id int);\n---- create above / drop below ----\ndrop table t2;\x00\n"},
		{"only line comments", "002_comments.sql", "-- nothing here\n\n   -- or here\n"},
		{"template error", "002_tpl.sql", "create table {{ .missing.field }} (id int);\n"},
		{"unterminated template", "002_tpl2.sql", "create table t2 (id int); {{ if\n"},
		{"SQL syntax error", "002_syntax.sql", "create table t2 (id int;\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			db := pgtest.NewDB(t)
			dir := t.TempDir()
			write(t, dir, "001_good.sql", good)
			write(t, dir, tc.file, tc.body)
			r := workload.Run(t, cli, []string{"DATABASE_URL=" + db.URL}, "push", "--dir", dir)
			if r.Code == 0 {
				t.Fatalf("push succeeded: %v", r)
			}
			if !strings.Contains(r.Stderr, tc.file) {
				t.Errorf("the error does not name %s:\n%v", tc.file, r)
			}
			if strings.Contains(r.Stderr, "panic") {
				t.Errorf("panic:\n%s", r.Stderr)
			}
			nothingApplied(t, ctx, db.Conn(t))
			t.Logf("exit %d: %s", r.Code, strings.TrimSpace(r.Stderr))
		})
	}
}

// TestHostileFileNames: file names with quotes, comment terminators and
// dollar quotes are data: applied, recorded verbatim.
func TestHostileFileNames(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	dir := t.TempDir()
	names := map[string]string{
		"001_it's *\\ \"quoted\" $$ --.sql":        "it's *\\ \"quoted\" $$ --",
		"002_'); drop table x; --.sql":             "'); drop table x; --",
		"003_" + strings.Repeat("n", 200) + ".sql": strings.Repeat("n", 200),
	}
	for file := range names {
		write(t, dir, file, "create table hostile_"+file[:3]+" (id int);\n")
	}
	r := workload.Run(t, cli, []string{"DATABASE_URL=" + db.URL}, "push", "--dir", dir)
	if r.Code != 0 {
		t.Fatalf("push: %v", r)
	}
	conn := db.Conn(t)
	for file, name := range names {
		var n int
		if err := conn.QueryRow(ctx, "select count(*) from pgmig.history where name = $1", name).Scan(&n); err != nil || n != 1 {
			t.Errorf("%q: %d history rows named %q (%v)", file, n, name, err)
		}
	}
}

// TestRoleWithoutGrantsCLI: `pgmig push` and `pgmig status` as a role
// without grants fail with a permission error (exit code, message) and
// change nothing. (The SQL level: tests/engine TestRoleWithoutGrants.)
func TestRoleWithoutGrantsCLI(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	role := pgtest.CreateRole(t, "")
	dir := t.TempDir()
	write(t, dir, "001_a.sql", "create table a (id int);\n")
	env := []string{"DATABASE_URL=" + db.URLAs(role, pgtest.RolePassword)}
	for _, args := range [][]string{{"push", "--dir", dir}, {"status"}, {"plan", "--dir", dir}, {"validate", "--dir", dir}} {
		r := workload.Run(t, cli, env, args...)
		if r.Code == 0 {
			t.Errorf("%v as a role without grants succeeded: %v", args, r)
			continue
		}
		if !strings.Contains(r.Stderr, "permission denied") && !strings.Contains(r.Stderr, "42501") {
			t.Errorf("%v: the error does not say permission denied:\n%v", args, r)
		}
		// The engine is installed; telling the operator to install it
		// sends them the wrong way.
		if strings.Contains(r.Stderr, "not installed") {
			t.Errorf("%v: a role without grants is told the engine is not installed:\n%s", args, r.Stderr)
		}
		t.Logf("%v: exit %d: %s", args, r.Code, strings.TrimSpace(r.Stderr))
	}
	nothingApplied(t, ctx, db.Conn(t))
}

func write(t *testing.T, dir, name, body string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}
