// Package workload is the migration set and the checks shared by the fault,
// PgBouncer and hostile-input tests: a directory of tern files whose every
// migration leaves a trace that a duplicate or a partial apply would show
// (its own table, and one row in a ledger), the pgmig CLI built once per
// test binary, and the "all or none, exactly once" check.
package workload

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// EnvFull selects the full gauntlet (make test-all): many trials instead of
// a handful. Both modes run every test; only the counts differ.
const EnvFull = "PGMIG_TEST_FULL"

// Full reports whether PGMIG_TEST_FULL is set to something other than ""/0.
func Full() bool {
	v := os.Getenv(EnvFull)
	return v != "" && v != "0"
}

// Trials is quick in the default suite and full under PGMIG_TEST_FULL=1.
func Trials(quick, full int) int {
	if Full() {
		return full
	}
	return quick
}

// BuildCLI builds cmd/pgmig into a fresh temp dir and returns the binary's
// path and a function removing it. Call it from TestMain, before
// pgtest.Main (which does not return).
func BuildCLI() (string, func(), error) {
	dir, err := os.MkdirTemp("", "pgmig-faults-")
	if err != nil {
		return "", nil, err
	}
	bin := filepath.Join(dir, "pgmig")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/pgmig/pgmig/cmd/pgmig").CombinedOutput()
	if err != nil {
		os.RemoveAll(dir)
		return "", nil, fmt.Errorf("building pgmig: %v\n%s", err, out)
	}
	return bin, func() { os.RemoveAll(dir) }, nil
}

// Rows is how many rows each migration inserts into its own table: enough
// that a 500-migration push lasts about a second on a loaded 2-core
// machine, so a kill at a random moment usually lands inside it.
const Rows = 200

// WriteDir writes n tern migration files into dir. Migration 1 creates the
// ledger; every migration v creates table w_<v>, fills it and inserts v
// into the ledger. A migration applied twice would fail on its table, or
// (with the table dropped meanwhile) show up twice in the ledger.
func WriteDir(tb testing.TB, dir string, n int) {
	tb.Helper()
	for v := 1; v <= n; v++ {
		var sql strings.Builder
		if v == 1 {
			sql.WriteString("create table ledger (v int not null);\n")
		}
		fmt.Fprintf(&sql, "create table w_%04d (id int primary key, note text);\n", v)
		fmt.Fprintf(&sql, "insert into w_%04d select g, md5(g::text) from generate_series(1, %d) g;\n", v, Rows)
		fmt.Fprintf(&sql, "insert into ledger values (%d);\n", v)
		sql.WriteString("---- create above / drop below ----\n")
		fmt.Fprintf(&sql, "drop table w_%04d;\n", v)
		name := filepath.Join(dir, fmt.Sprintf("%04d_step_%04d.sql", v, v))
		if err := os.WriteFile(name, []byte(sql.String()), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
}

// State is what a database holds of a workload batch.
type State struct {
	History, Tables, Ledger, LedgerDistinct int64
}

func (s State) String() string {
	return fmt.Sprintf("history=%d tables=%d ledger=%d (distinct %d)", s.History, s.Tables, s.Ledger, s.LedgerDistinct)
}

// Read counts what conn's database holds of the workload.
func Read(ctx context.Context, conn *pgx.Conn) (State, error) {
	var s State
	err := conn.QueryRow(ctx, `
		select (select count(*) from pgmig.history),
		       (select count(*) from pg_class where relname ~ '^w_[0-9]+$' and relkind = 'r'),
		       coalesce((select count(*) from pg_class where relname = 'ledger'), 0)`).
		Scan(&s.History, &s.Tables, &s.Ledger)
	if err != nil {
		return s, err
	}
	if s.Ledger > 0 {
		err = conn.QueryRow(ctx, "select count(*), count(distinct v) from ledger").Scan(&s.Ledger, &s.LedgerDistinct)
	}
	return s, err
}

// AllOrNone fails unless the database holds none of the n migrations or all
// of them exactly once. It returns whether all were there.
func AllOrNone(tb testing.TB, ctx context.Context, conn *pgx.Conn, n int) bool {
	tb.Helper()
	s, err := Read(ctx, conn)
	if err != nil {
		tb.Fatalf("reading workload state: %v", err)
	}
	switch {
	case s == State{}:
		return false
	case s == State{History: int64(n), Tables: int64(n), Ledger: int64(n), LedgerDistinct: int64(n)}:
		return true
	}
	tb.Fatalf("partial or duplicated batch: %v, want all %d or none", s, n)
	return false
}

// ExactlyOnce fails unless all n migrations are there exactly once.
func ExactlyOnce(tb testing.TB, ctx context.Context, conn *pgx.Conn, n int) {
	tb.Helper()
	if !AllOrNone(tb, ctx, conn, n) {
		tb.Fatalf("nothing applied, want all %d migrations", n)
	}
}

// WaitLockFree polls pg_locks until no session other than conn's holds or
// waits for a lock on conn's database's pgmig.history, and no other session
// of the database is active. A client killed mid-call leaves its backend
// running until the server notices the closed socket (at its next write,
// e.g. a progress notice) and aborts the transaction, which ends the lock.
func WaitLockFree(tb testing.TB, ctx context.Context, conn *pgx.Conn, within time.Duration) time.Duration {
	tb.Helper()
	start := time.Now()
	for {
		var holders int
		var who string
		err := conn.QueryRow(ctx, `
			select count(*), coalesce(string_agg(a.pid || ' ' || coalesce(a.application_name, '') || ' ' || a.state, '; '), '')
			from pg_locks l join pg_stat_activity a on a.pid = l.pid
			where l.locktype = 'relation'
			  and l.database = (select oid from pg_database where datname = current_database())
			  and l.relation = 'pgmig.history'::regclass
			  and l.pid <> pg_backend_pid()`).Scan(&holders, &who)
		if err != nil {
			tb.Fatalf("reading pg_locks: %v", err)
		}
		if holders == 0 {
			return time.Since(start)
		}
		if time.Since(start) > within {
			tb.Fatalf("pgmig.history still locked %v after the client died: %s", within, who)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Result is one run of the CLI.
type Result struct {
	Stdout, Stderr string
	Code           int
	Took           time.Duration
}

func (r Result) String() string {
	return fmt.Sprintf("exit %d after %v\nstdout:\n%s\nstderr:\n%s", r.Code, r.Took.Round(time.Millisecond), r.Stdout, r.Stderr)
}

// Command prepares `pgmig args...` with a clean environment (no PG*
// variables, no DATABASE_URL from the caller) plus env.
func Command(bin string, env []string, args ...string) *exec.Cmd {
	cmd := exec.Command(bin, args...)
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") || strings.HasPrefix(kv, "DATABASE_URL=") {
			continue
		}
		cmd.Env = append(cmd.Env, kv)
	}
	cmd.Env = append(cmd.Env, env...)
	return cmd
}

// Run runs the CLI to completion.
func Run(tb testing.TB, bin string, env []string, args ...string) Result {
	tb.Helper()
	cmd := Command(bin, env, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	r := Result{Stdout: stdout.String(), Stderr: stderr.String(), Took: time.Since(start)}
	var exitErr *exec.ExitError
	switch {
	case errors.As(err, &exitErr):
		r.Code = exitErr.ExitCode()
	case err != nil:
		tb.Fatalf("running pgmig %v: %v", args, err)
	}
	return r
}

// Psql runs psql -X -v ON_ERROR_STOP=1 against url: the SQL with -c, as an
// operator would type it, or from a file when it is too long for one
// command-line argument (Linux caps each at 128 KiB).
func Psql(psql, url, sql string) (string, error) {
	args := []string{"-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url}
	if len(sql) < 100_000 {
		args = append(args, "-c", sql)
	} else {
		f, err := os.CreateTemp("", "pgmig-psql-*.sql")
		if err != nil {
			return "", err
		}
		defer os.Remove(f.Name())
		if _, err := f.WriteString(sql); err != nil {
			f.Close()
			return "", err
		}
		if err := f.Close(); err != nil {
			return "", err
		}
		args = append(args, "-f", f.Name())
	}
	cmd := exec.Command(psql, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// ApplySQL is the psql call applying batch (a JSON document) with
// migrate_apply, the batch as a dollar-quoted literal.
func ApplySQL(batch []byte) string {
	tag := "batch" + strconv.Itoa(rand.IntN(1<<30))
	for bytes.Contains(batch, []byte("$"+tag+"$")) {
		tag += "x"
	}
	return fmt.Sprintf("select count(*) filter (where outcome = 'applied') from migrate_apply($%s$%s$%s$::jsonb)", tag, batch, tag)
}

// RandomDuration is uniform in [0, max).
func RandomDuration(max time.Duration) time.Duration {
	if max <= 0 {
		return 0
	}
	return time.Duration(rand.Int64N(int64(max)))
}
