package engine_test

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/pgmig/pgmig/tests/pgtest"
)

// TestPsql: the engine through the real psql binary, the way a DBA or a
// shell script calls it (no Go in the loop): rows on stdout, progress
// NOTICEs on stderr, exit code 1 and the error on stderr when it fails.
func TestPsql(t *testing.T) {
	t.Parallel()
	psql := pgtest.Server(t).PsqlPath()
	if psql == "" {
		t.Fatal("no psql binary: install the PostgreSQL client (apt-get install postgresql-client)")
	}
	db := pgtest.NewDB(t)

	run := func(t *testing.T, b batch) (stdout, stderr string, code int) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		lit := "'" + strings.ReplaceAll(b.JSON(), "'", "''") + "'"
		cmd := exec.CommandContext(ctx, psql, "-X", "-A", "-t", "-F", "|", "-v", "ON_ERROR_STOP=1",
			"-d", db.URL,
			"-c", "select version, name, outcome from migrate_apply("+lit+"::jsonb)")
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		var exitErr *exec.ExitError
		switch {
		case err == nil:
		case errors.As(err, &exitErr):
			code = exitErr.ExitCode()
		default:
			t.Fatalf("running psql: %v", err)
		}
		return out.String(), errOut.String(), code
	}

	b := tableBatch(3)
	b[1].Name = "it's quoted" // a quote in the batch must survive the SQL literal
	stdout, stderr, code := run(t, b)
	if code != 0 {
		t.Fatalf("psql exit code %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	want := "1|create_t_001|applied\n2|it's quoted|applied\n3|create_t_003|applied\n"
	if stdout != want {
		t.Errorf("stdout:\n%s\nwant:\n%s", stdout, want)
	}
	for _, line := range []string{
		"NOTICE:  pgmig: applying version 1 (1/3): create_t_001",
		"NOTICE:  pgmig: applying version 2 (2/3): it's quoted",
		"NOTICE:  pgmig: applying version 3 (3/3): create_t_003",
	} {
		if !strings.Contains(stderr, line) {
			t.Errorf("stderr lacks %q:\n%s", line, stderr)
		}
	}

	bad := append(b, migration{Version: 4, Name: "broken", SQL: "select * from no_such_table"})
	stdout, stderr, code = run(t, bad)
	if code != 1 {
		t.Errorf("failing batch: psql exit code %d, want 1\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if !strings.Contains(stderr, `ERROR:  relation "no_such_table" does not exist`) {
		t.Errorf("stderr lacks the migration's error:\n%s", stderr)
	}
	if !strings.Contains(stderr, "pgmig: applying version 4 (1/1): broken") {
		t.Errorf("stderr lacks the progress line naming the failing migration:\n%s", stderr)
	}
	if stdout != "" {
		t.Errorf("failing batch printed rows:\n%s", stdout)
	}
}
