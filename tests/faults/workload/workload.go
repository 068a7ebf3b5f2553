// Package workload is the migration set and the checks shared by the fault,
// PgBouncer and hostile-input tests: a directory of tern files whose every
// migration leaves a trace that a duplicate or a partial apply would show
// (its own table, and one row in a ledger), the pgmig CLI built once per
// test binary, and the "all or none, exactly once" check.
package workload

import (
	"bufio"
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
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgmig/pgmig/tests/pgtest"
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
// path. Call it from TestMain, before pgtest.Main (which exits without
// returning, so the build cannot be removed afterwards: the next run
// removes builds whose process is gone).
func BuildCLI() (string, error) {
	sweepBuilds()
	dir, err := os.MkdirTemp("", fmt.Sprintf("%s%d-", buildPrefix, os.Getpid()))
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "pgmig")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/pgmig/pgmig/cmd/pgmig").CombinedOutput()
	if err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("building pgmig: %v\n%s", err, out)
	}
	return bin, nil
}

const buildPrefix = "pgmig-faults-"

func sweepBuilds() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), buildPrefix+"*"))
	for _, d := range dirs {
		var pid int
		if _, err := fmt.Sscanf(filepath.Base(d), buildPrefix+"%d-", &pid); err != nil {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); errors.Is(err, os.ErrNotExist) {
			os.RemoveAll(d)
		}
	}
}

// Main builds the CLI into *bin, then runs the package's tests with
// pgtest.Main. Call it from TestMain; it does not return.
func Main(m *testing.M, bin *string) {
	b, err := BuildCLI()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	*bin = b
	pgtest.Main(m)
}

// Rows is how many rows each migration inserts into its own table: enough
// that a 500-migration push lasts one to three seconds on a loaded 2-core
// machine, so a fault at a random moment usually lands inside it.
const Rows = 50

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
		fmt.Fprintf(&sql, "create table w_%04d (id int, note text);\n", v)
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

// PushArgs is `pgmig push` of dir as one transaction whatever its size
// (--segment-size all): the fault tests check all-or-none of the whole
// batch, which automatic segments (on a server with a small lock table)
// would rightly break into all-or-none per segment.
func PushArgs(dir string, extra ...string) []string {
	return append([]string{"push", "--dir", dir, "--segment-size", "all"}, extra...)
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

// WaitSettled polls until no session other than conn's holds or waits for
// a lock on conn's database's pgmig.history and no other client backend is
// connected to the database, and returns how long that took. A client
// killed mid-call leaves its backend running until the server notices the
// closed socket (at its next write, e.g. a progress notice, or its next
// read) and aborts the transaction, which ends the lock. Waiting for the
// backend to be gone, not just the lock, also covers a query the dead
// client had fully sent that the server has not started yet.
func WaitSettled(tb testing.TB, ctx context.Context, conn *pgx.Conn, within time.Duration) time.Duration {
	tb.Helper()
	start := time.Now()
	for {
		var lockers, others int
		var who string
		err := conn.QueryRow(ctx, `
			select (select count(*) from pg_locks l
			        where l.locktype = 'relation'
			          and l.database = (select oid from pg_database where datname = current_database())
			          and l.relation = 'pgmig.history'::regclass
			          and l.pid <> pg_backend_pid()),
			       count(*),
			       coalesce(string_agg(format('pid %s (%s) %s: %s', pid, application_name, state, left(query, 60)), '; '), '')
			from pg_stat_activity
			where datname = current_database() and backend_type = 'client backend' and pid <> pg_backend_pid()`).
			Scan(&lockers, &others, &who)
		if err != nil {
			tb.Fatalf("reading pg_locks: %v", err)
		}
		if lockers == 0 && others == 0 {
			return time.Since(start)
		}
		if time.Since(start) > within {
			tb.Fatalf("%v after the client died: %d sessions still lock pgmig.history, %d still connected: %s", within, lockers, others, who)
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

// Psql runs psql -X -tA -v ON_ERROR_STOP=1 against url: the SQL with -c, as an
// operator would type it, or from a file when it is too long for one
// command-line argument (Linux caps each at 128 KiB). It returns the
// standard output; an error carries the standard error (notices, ERROR).
func Psql(psql, url, sql string) (string, error) {
	args := []string{"-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-d", url}
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
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("psql: %w\n%s", err, stderr.String())
	}
	return stdout.String(), nil
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

// Running is a `pgmig push` started in the background whose progress lines
// (one "applied <file>" line per migration on stdout) can be waited for.
type Running struct {
	Cmd     *exec.Cmd
	lines   chan struct{}
	done    chan error
	stderr  bytes.Buffer
	applied int
}

// Start starts the CLI with args (a push without --quiet, so that it
// prints a line per migration as the server applies it).
func Start(tb testing.TB, bin string, env []string, args ...string) *Running {
	tb.Helper()
	r := &Running{Cmd: Command(bin, env, args...), lines: make(chan struct{}, 1<<16), done: make(chan error, 1)}
	r.Cmd.Stderr = &r.stderr
	out, err := r.Cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := r.Cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "applied ") {
				r.lines <- struct{}{}
			}
		}
		close(r.lines)
		r.done <- r.Cmd.Wait()
	}()
	return r
}

// AfterProgress waits until the push reported k applied migrations, or
// the process ended (false).
func (r *Running) AfterProgress(k int) bool {
	for r.applied < k {
		if _, ok := <-r.lines; !ok {
			return false
		}
		r.applied++
	}
	return true
}

// AfterTime waits d, or until the process ended (false).
func (r *Running) AfterTime(d time.Duration) bool {
	select {
	case <-time.After(d):
		return true
	case err := <-r.done:
		r.done <- err
		return false
	}
}

// Kill sends SIGKILL.
func (r *Running) Kill() { _ = r.Cmd.Process.Signal(syscall.SIGKILL) }

// Wait waits for the process and returns its exit code (-1: killed by a
// signal) and standard error.
func (r *Running) Wait() (int, string) {
	for range r.lines { // drain: the scanner must not block the pipe
	}
	err := <-r.done
	r.done <- err
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	}
	return code, r.stderr.String()
}
