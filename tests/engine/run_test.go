package engine_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	pgmigsql "github.com/pgmig/pgmig/sql"
	"github.com/pgmig/pgmig/tests/pgtest"
)

// runResult is migrate_run's result document (docs/sql-api.md, "migrate_run").
type runResult struct {
	Applied         int   `json:"applied"`
	Pending         int   `json:"pending"`
	Transactions    int   `json:"transactions"`
	LockBudget      int   `json:"lock_budget"`
	LockBudgetStops int   `json:"lock_budget_stops"`
	Version         int64 `json:"version"`
	Ahead           []int64
	DryRun          bool `json:"dry_run"`
	Stopped         *struct {
		Reason  string `json:"reason"`
		Version int64  `json:"version"`
	} `json:"stopped"`
	Migrations []struct {
		Version    int64  `json:"version"`
		Outcome    string `json:"outcome"`
		DurationUS *int64 `json:"duration_us"`
	} `json:"migrations"`
}

func (r runResult) outcomes() map[string]int {
	m := map[string]int{}
	for _, x := range r.Migrations {
		m[x.Outcome]++
	}
	return m
}

// run calls migrate_run(batch, <opts>) in autocommit on conn and decodes its result.
func run(ctx context.Context, conn *pgx.Conn, b batch, opts string) (runResult, error) {
	sql := "call migrate_run($1::jsonb"
	if opts != "" {
		sql += ", " + opts
	}
	sql += ")"
	var doc []byte
	var r runResult
	if err := conn.QueryRow(ctx, sql, b.JSON()).Scan(&doc); err != nil {
		return r, err
	}
	if err := json.Unmarshal(doc, &r); err != nil {
		return r, fmt.Errorf("decoding %s: %w", doc, err)
	}
	return r, nil
}

func mustRun(t *testing.T, conn *pgx.Conn, b batch, opts string) runResult {
	t.Helper()
	r, err := run(context.Background(), conn, b, opts)
	if err != nil {
		t.Fatalf("migrate_run: %s", describe(err))
	}
	return r
}

// psqlRun runs psql with the given SQL in one -c (one simple-query message) or,
// with file, as a script; returns stdout, stderr and the exit code.
func psqlRun(t *testing.T, url string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	psql := pgtest.Server(t).PsqlPath()
	if psql == "" {
		t.Fatal("no psql binary: install the PostgreSQL client (apt-get install postgresql-client)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, psql, append([]string{"-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", url}, args...)...)
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

// psqlBatchFile writes a script that sets :batch from a file and runs sql.
func psqlBatchFile(t *testing.T, b batch, sql string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	batchFile := filepath.Join(dir, "batch.json")
	if err := os.WriteFile(batchFile, []byte(b.JSON()), 0o644); err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(dir, "run.sql")
	if err := os.WriteFile(script, []byte("\\set batch `cat "+batchFile+"`\n"+sql+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return script
}

// enumBatch adds an enum value in one migration and uses it in the next: the
// value is usable only after the transaction that added it commits.
func enumBatch() batch {
	return batch{
		{Version: 1, Name: "create_mood", SQL: "create type mood as enum ('ok')"},
		{Version: 2, Name: "add_value", SQL: "alter type mood add value 'great'"},
		{Version: 3, Name: "use_value", SQL: "create table feeling (m mood not null default 'great'); insert into feeling default values"},
	}
}

// TestRunFromPsqlInOneCall: the whole job from psql in one CALL, including an enum
// add-then-use pair (commit_after), which one transaction cannot do: migrate_run commits
// after the marked migration by itself. A second CALL finds nothing to do.
func TestRunFromPsqlInOneCall(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	b := enumBatch()
	lit := "'" + strings.ReplaceAll(withCommitAfter(b, 2), "'", "''") + "'"
	stdout, stderr, code := psqlRun(t, db.URL, "-c", "call migrate_run("+lit+")")
	if code != 0 {
		t.Fatalf("psql exit %d\n%s\n%s", code, stdout, stderr)
	}
	var r runResult
	if err := json.Unmarshal([]byte(strings.TrimSpace(stdout)), &r); err != nil {
		t.Fatalf("result %q: %v", stdout, err)
	}
	if r.Applied != 3 || r.Transactions != 2 || r.Version != 3 || r.Pending != 0 {
		t.Errorf("result %+v, want 3 applied in 2 transactions", r)
	}
	for _, line := range []string{"pgmig: applying version 1 (1/3): create_mood", "pgmig: applying version 3 (3/3): use_value",
		"pgmig: applied 3 migrations in"} {
		if !strings.Contains(stderr, line) {
			t.Errorf("stderr lacks %q:\n%s", line, stderr)
		}
	}
	conn := db.Conn(t)
	if n := count(t, conn, "select count(*) from feeling where m = 'great'"); n != 1 {
		t.Errorf("feeling rows: %d", n)
	}
	stdout, stderr, code = psqlRun(t, db.URL, "-c", "call migrate_run("+lit+")")
	if code != 0 || !strings.Contains(stdout, `"applied": 0`) || strings.Contains(stderr, "applying") {
		t.Errorf("second CALL: exit %d\n%s\n%s", code, stdout, stderr)
	}

	// Without the marker the pair fails as one transaction would, and nothing stays.
	db2 := pgtest.NewDB(t)
	lit2 := "'" + strings.ReplaceAll(b.JSON(), "'", "''") + "'"
	_, stderr, code = psqlRun(t, db2.URL, "-c", "call migrate_run("+lit2+")")
	if code == 0 || !strings.Contains(stderr, "55P04") && !strings.Contains(stderr, "unsafe use of new value") {
		t.Errorf("unmarked pair: exit %d\n%s", code, stderr)
	}
	if n := count(t, db2.Conn(t), "select count(*) from pgmig.history"); n != 0 {
		t.Errorf("unmarked pair left %d history rows", n)
	}
}

// withCommitAfter is b as JSON with "commit_after": true on version v.
func withCommitAfter(b batch, v int64) string {
	var entries []map[string]any
	_ = json.Unmarshal([]byte(b.JSON()), &entries)
	for _, e := range entries {
		if e["version"].(float64) == float64(v) {
			e["commit_after"] = true
		}
	}
	out, _ := json.Marshal(entries)
	return string(out)
}

// TestRunCommitsNearTheLockBudget: with a lock budget the call commits whenever its
// transaction nears it and goes on in a new one; max_per_transaction cuts every N.
func TestRunCommitsNearTheLockBudget(t *testing.T) {
	t.Parallel()
	conn := pgtest.NewDB(t).Conn(t)
	r := mustRun(t, conn, tableBatch(120), "lock_budget => 100")
	if r.Applied != 120 || r.Transactions < 2 || r.LockBudgetStops != r.Transactions-1 || r.LockBudget != 100 {
		t.Errorf("lock budget 100: %+v", r)
	}
	if n := count(t, conn, "select count(*) from pgmig.history"); n != 120 {
		t.Errorf("history rows: %d", n)
	}
	conn2 := pgtest.NewDB(t).Conn(t)
	r = mustRun(t, conn2, tableBatch(25), "max_per_transaction => 10")
	if r.Applied != 25 || r.Transactions != 3 {
		t.Errorf("max_per_transaction 10: %+v", r)
	}
	// The default budget is half the server's lock table.
	var slots int
	if err := conn2.QueryRow(context.Background(), `select current_setting('max_locks_per_transaction')::int *
		(current_setting('max_connections')::int + current_setting('max_prepared_transactions')::int) / 2`).Scan(&slots); err != nil {
		t.Fatal(err)
	}
	if r.LockBudget != slots {
		t.Errorf("default lock budget %d, want %d", r.LockBudget, slots)
	}
}

// TestRunConcurrentCallersApplyOnce: callers of migrate_run that commit many times each
// (a small lock budget) race with each other and with migrate_apply callers on the same
// batch: every call succeeds and each migration runs exactly once (I1), because every
// transaction of every call takes the lock and reads the history after it (I3).
func TestRunConcurrentCallersApplyOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	const callers = 16
	b := ledgerBatch(raceBatchSz)
	conns := make([]*pgx.Conn, callers)
	for i := range conns {
		conns[i] = db.Conn(t)
	}
	var wg sync.WaitGroup
	start := make(chan struct{})
	applied := make([]int, callers)
	errs := make([]error, callers)
	for i := range conns {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			<-start
			if i%4 == 3 {
				rows, err := apply(ctx, conns[i], b, "")
				applied[i], errs[i] = outcomes(rows)["applied"], err
				return
			}
			r, err := run(ctx, conns[i], b, "lock_budget => 40")
			applied[i], errs[i] = r.Applied, err
		}(i)
	}
	began := time.Now()
	close(start)
	wg.Wait()
	total := 0
	for i, err := range errs {
		if err != nil {
			t.Errorf("caller %d: %s", i, describe(err))
		}
		total += applied[i]
	}
	if total != raceBatchSz {
		t.Errorf("%d migrations applied over all callers, want %d", total, raceBatchSz)
	}
	checkLedger(t, db)
	t.Logf("%d callers (migrate_run with lock budget 40, and migrate_apply), %d migrations: %v", callers, raceBatchSz, since(began))
}

// TestRunRefusedInsideTransactionBlock: migrate_run commits by itself, which PostgreSQL
// forbids inside BEGIN ... COMMIT: it fails before doing anything, and a NOTICE says
// what to run instead; migrate_apply is the call for a transaction block.
func TestRunRefusedInsideTransactionBlock(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	lit := "'" + strings.ReplaceAll(tableBatch(2).JSON(), "'", "''") + "'"
	script := filepath.Join(t.TempDir(), "block.sql")
	if err := os.WriteFile(script, []byte("begin;\ncall migrate_run("+lit+");\ncommit;\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Dir(script), 0o755); err != nil {
		t.Fatal(err)
	}
	_, stderr, code := psqlRun(t, db.URL, "-f", script)
	if code == 0 || !strings.Contains(stderr, "invalid transaction termination") ||
		!strings.Contains(stderr, "migrate_run commits by itself") || !strings.Contains(stderr, "migrate_apply") {
		t.Errorf("CALL inside BEGIN: exit %d\n%s", code, stderr)
	}
	conn := db.Conn(t)
	if n := count(t, conn, "select count(*) from pgmig.history"); n != 0 {
		t.Errorf("%d history rows after the refused call", n)
	}
	tx, err := conn.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if rows := mustApply(t, tx, tableBatch(2), ""); outcomes(rows)["applied"] != 2 {
		t.Errorf("migrate_apply in a transaction block: %v", outcomes(rows))
	}
	if err := tx.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestRunNonTransactional: a pending non-transactional migration is refused up front
// (nothing applied) unless the caller asks to stop before it, which applies what comes
// before it and says where it stopped.
func TestRunNonTransactional(t *testing.T) {
	t.Parallel()
	conn := pgtest.NewDB(t).Conn(t)
	no := false
	b := tableBatch(4)
	b[2].SQL, b[2].Transactional = "create index concurrently on t_002 (id)", &no
	_, err := run(context.Background(), conn, b, "")
	if pgErr := pgError(t, err, "PM005"); !strings.Contains(pgErr.Message, "3 (create_t_003)") {
		t.Errorf("PM005 message: %s", pgErr.Message)
	}
	if n := count(t, conn, "select count(*) from pgmig.history"); n != 0 {
		t.Fatalf("%d history rows after the refusal", n)
	}
	r := mustRun(t, conn, b, "stop_before_non_transactional => true, details => true")
	if r.Applied != 2 || r.Stopped == nil || r.Stopped.Reason != "non_transactional" || r.Stopped.Version != 3 || r.Pending != 2 {
		t.Errorf("stopped run: %+v", r)
	}
	if o := r.outcomes(); o["applied"] != 2 || o["pending"] != 2 {
		t.Errorf("outcomes: %v", o)
	}
}

// TestRunDryRunTargetAndDetails: dry_run changes nothing; target_version leaves the rest
// beyond_target; details carry every entry with the server's duration of what ran.
func TestRunDryRunTargetAndDetails(t *testing.T) {
	t.Parallel()
	conn := pgtest.NewDB(t).Conn(t)
	r := mustRun(t, conn, tableBatch(5), "dry_run => true, details => true")
	if r.Applied != 0 || r.Pending != 5 || !r.DryRun || r.outcomes()["pending"] != 5 {
		t.Errorf("dry run: %+v", r)
	}
	if n := count(t, conn, "select count(*) from pgmig.history"); n != 0 {
		t.Errorf("dry run wrote %d history rows", n)
	}
	r = mustRun(t, conn, tableBatch(5), "target_version => 3, details => true")
	if o := r.outcomes(); r.Applied != 3 || o["applied"] != 3 || o["beyond_target"] != 2 || r.Version != 3 {
		t.Errorf("target 3: %+v %v", r, o)
	}
	for _, m := range r.Migrations {
		if (m.Outcome == "applied") != (m.DurationUS != nil) {
			t.Errorf("version %d (%s): duration %v", m.Version, m.Outcome, m.DurationUS)
		}
	}
	// Without details the result is the summary only.
	r = mustRun(t, conn, tableBatch(5), "")
	if r.Applied != 2 || r.Migrations != nil {
		t.Errorf("summary: %+v", r)
	}
}

// TestRunFailureKeepsEarlierTransactions: a failure rolls back its own transaction only;
// the error is PostgreSQL's own, after a PM010 warning that says what stays applied.
func TestRunFailureKeepsEarlierTransactions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	var mu sync.Mutex
	var warnings []string
	cfg, err := pgx.ParseConfig(db.URL)
	if err != nil {
		t.Fatal(err)
	}
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
		mu.Lock()
		defer mu.Unlock()
		if n.Code == "PM010" {
			warnings = append(warnings, n.Message)
		}
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	b := tableBatch(4).with(4, "select 1/0")
	_, err = run(ctx, conn, b, "max_per_transaction => 2")
	pgError(t, err, "22012")
	if n := count(t, conn, "select count(*) from pgmig.history"); n != 2 {
		t.Errorf("history rows: %d, want the 2 of the first transaction", n)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(warnings) != 1 || !strings.Contains(warnings[0], "migration 4 (create_t_004)") ||
		!strings.Contains(warnings[0], "2 migrations committed earlier by this call stay applied") {
		t.Errorf("PM010: %q", warnings)
	}
}

// TestRunWaitsBetweenTransactionsDuringNonTransactional: while a non-transactional
// migration holds the lock, a migrate_run caller does not queue inside one statement (a
// CREATE INDEX CONCURRENTLY of that migration would wait for its snapshot): it waits in
// short transactions of its own (lock_wait's retry_after), so no snapshot of it lives
// longer than a slice, and applies once the holder is done.
func TestRunWaitsBetweenTransactionsDuringNonTransactional(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	holder := pgtest.Connect(t, pgtest.SetParam(db.URL, "application_name", "holder"))
	tx, err := holder.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	// What nontx_begin does: the lock, and the name that tells waiters.
	if _, err := tx.Exec(ctx, `lock table pgmig.history in exclusive mode;
		select set_config('application_name', 'pgmig: non-transactional migration 9', true)`); err != nil {
		t.Fatal(err)
	}
	observer := db.Conn(t)
	done := make(chan error, 1)
	waiter := db.Conn(t)
	go func() { _, err := run(ctx, waiter, tableBatch(2), ""); done <- err }()
	var longest time.Duration
	var samples int
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		var age *time.Duration
		if err := observer.QueryRow(ctx, `select case when backend_xmin is not null then clock_timestamp() - xact_start end
			from pg_stat_activity where pid = $1`, waiter.PgConn().PID()).Scan(&age); err != nil {
			t.Fatal(err)
		}
		samples++
		if age != nil && *age > longest {
			longest = *age
		}
	}
	select {
	case err := <-done:
		t.Fatalf("migrate_run returned while a non-transactional migration held the lock: %v", err)
	default:
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("migrate_run after the holder committed: %s", describe(err))
	}
	t.Logf("%d samples: the waiter's longest transaction holding a snapshot was %v old", samples, longest)
	if longest > time.Second {
		t.Errorf("the waiter held a snapshot in one transaction for %v: it waited inside a statement", longest)
	}
}

// TestPlanDecidesLikeTheEngine: migrate_plan answers with the rules migrate_apply and
// migrate_run use: target_version leaves the rest beyond_target, drift can come back as
// rows (kinds and sentences) instead of PM002, and steps number the transactions the
// batch itself forces (commit_after, non-transactional).
func TestPlanDecidesLikeTheEngine(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	conn := pgtest.NewDB(t).Conn(t)
	type row struct {
		version int64
		outcome string
		step    *int32
		drift   *string
	}
	plan := func(b string, opts string) ([]row, error) {
		sql := "select version, outcome, step, drift from migrate_plan($1::jsonb"
		if opts != "" {
			sql += ", " + opts
		}
		rows, err := conn.Query(ctx, sql+")", b)
		if err != nil {
			return nil, err
		}
		return pgx.CollectRows(rows, func(r pgx.CollectableRow) (row, error) {
			var x row
			err := r.Scan(&x.version, &x.outcome, &x.step, &x.drift)
			return x, err
		})
	}
	no := false
	b := tableBatch(6)
	b[3].SQL, b[3].Transactional = "create index concurrently on t_001 (id)", &no
	js := withCommitAfter(b, 2)
	rows, err := plan(js, "target_version => 5")
	if err != nil {
		t.Fatal(err)
	}
	got := ""
	for _, r := range rows {
		s := "-"
		if r.step != nil {
			s = fmt.Sprint(*r.step)
		}
		got += fmt.Sprintf("%d:%s:%s ", r.version, r.outcome, s)
	}
	want := "1:pending:1 2:pending:1 3:pending:2 4:pending:3 5:pending:4 6:beyond_target:- "
	if got != want {
		t.Errorf("plan to target 5:\n got %s\nwant %s", got, want)
	}

	mustApply(t, conn, tableBatch(3), "")
	edited := tableBatch(3).with(2, "create table t_002 (id bigint)")
	if _, err := plan(edited.JSON(), ""); err == nil {
		t.Fatal("drift without report_drift: no error")
	} else {
		pgError(t, err, "PM002")
	}
	rows, err = plan(edited.without(1).JSON(), "report_drift => true")
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[int64]string{}
	for _, r := range rows {
		if r.drift != nil {
			kinds[r.version] = *r.drift
		}
	}
	if kinds[1] != "missing" || kinds[2] != "changed" || len(kinds) != 2 {
		t.Errorf("drift kinds: %v", kinds)
	}
}

// smallDDL is n migrations of the kind fresh databases are built from: each takes 9 entries
// of the lock table until its transaction commits.
func smallDDL(n int) batch {
	b := make(batch, n)
	for i := range b {
		v := i + 1
		b[i] = migration{Version: int64(v), Name: fmt.Sprintf("t_%d", v), SQL: fmt.Sprintf(
			"create table t_%d (id bigint primary key, v text);\ncreate index on t_%d (v);\ncomment on table t_%d is 'table %d';\ninsert into t_%d values (1, 'x');\n",
			v, v, v, v, v)}
	}
	return b
}

// TestRun10000FromPsqlOnDefaultSettings: 10 000 realistic migrations onto a fresh database
// of a server with default settings, from psql, in one CALL; the same batch in one
// transaction fails with 53200. Takes minutes on a small machine: PGMIG_TEST_LARGE=1 (make
// test-all).
func TestRun10000FromPsqlOnDefaultSettings(t *testing.T) {
	if os.Getenv("PGMIG_TEST_LARGE") == "" {
		t.Log("PGMIG_TEST_LARGE is not set: ran nothing (make test-all runs it)")
		return
	}
	ctx := context.Background()
	url := pgtest.PrivateCluster(t)
	admin := pgtest.Connect(t, url)
	for _, db := range []string{"run", "onetx"} {
		if _, err := admin.Exec(ctx, "create database "+db); err != nil {
			t.Fatal(err)
		}
		conn := pgtest.Connect(t, strings.Replace(url, "/postgres?", "/"+db+"?", 1))
		if _, err := conn.PgConn().Exec(ctx, pgmigsql.InstallScript()).ReadAll(); err != nil {
			t.Fatal(err)
		}
	}
	b := smallDDL(10000)
	start := time.Now()
	stdout, stderr, code := psqlRun(t, strings.Replace(url, "/postgres?", "/run?", 1),
		"-q", "-f", psqlBatchFile(t, b, "call migrate_run(:'batch', notices => 'none');"))
	if code != 0 {
		t.Fatalf("psql exit %d\n%s\n%.2000s", code, stdout, stderr)
	}
	var r runResult
	if err := json.Unmarshal([]byte(strings.TrimSpace(stdout)), &r); err != nil || r.Applied != 10000 {
		t.Fatalf("result %q: %v", stdout, err)
	}
	t.Logf("10 000 migrations from psql in one CALL: %v, %d transactions (lock budget %d)", since(start), r.Transactions, r.LockBudget)

	start = time.Now()
	_, stderr, code = psqlRun(t, strings.Replace(url, "/postgres?", "/onetx?", 1),
		"-q", "-f", psqlBatchFile(t, b, "call migrate_run(:'batch', lock_budget => 0, notices => 'none');"))
	if code == 0 || !strings.Contains(stderr, "53200") && !strings.Contains(stderr, "out of shared memory") {
		t.Fatalf("one transaction: exit %d\n%.2000s", code, stderr)
	}
	t.Logf("one transaction failed after %v", since(start))
}
