package engine_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	pgmigsql "github.com/pgmig/pgmig/sql"
	"github.com/pgmig/pgmig/tests/pgtest"
)

// TestConcurrentInstalls: 16 sessions run the install script on the same
// empty database at once (design problem 4; graphile/worker's "20 installs
// at once"). All succeed and the engine works afterwards.
func TestConcurrentInstalls(t *testing.T) {
	t.Parallel()
	db := pgtest.NewEmptyDB(t)
	const n = 16
	conns := make([]*pgx.Conn, n)
	for i := range conns {
		conns[i] = db.Conn(t)
	}
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i, conn := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, errs[i] = conn.Exec(context.Background(), pgmigsql.InstallScript())
		}()
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("installer %d: %s", i, describe(err))
		}
	}
	rows := mustApply(t, conns[0], tableBatch(2), "")
	if got := outcomes(rows)["applied"]; got != 2 {
		t.Errorf("after concurrent installs: %v, want 2 applied", outcomes(rows))
	}
}

// TestProgressNotices: one PM000 NOTICE per migration, in order, and on
// failure a PM010 WARNING naming the migration before the original error.
func TestProgressNotices(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	cfg, err := pgx.ParseConfig(db.URL)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var notices []*pgconn.Notice
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
		mu.Lock()
		notices = append(notices, n)
		mu.Unlock()
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)

	mustApply(t, conn, tableBatch(3), "")
	var progress []string
	for _, n := range notices {
		if n.Code == "PM000" {
			progress = append(progress, n.Message)
		}
	}
	want := []string{
		"pgmig: applying version 1 (1/3): create_t_001",
		"pgmig: applying version 2 (2/3): create_t_002",
		"pgmig: applying version 3 (3/3): create_t_003",
	}
	if strings.Join(progress, "\n") != strings.Join(want, "\n") {
		t.Errorf("PM000 notices:\n%s\nwant:\n%s", strings.Join(progress, "\n"), strings.Join(want, "\n"))
	}

	notices = nil
	_, err = apply(ctx, conn, append(tableBatch(3), migration{Version: 4, Name: "divide", SQL: "select 1/0"}), "")
	pgError(t, err, "22012")
	var warned bool
	for _, n := range notices {
		if n.Code == "PM010" && n.Severity == "WARNING" && strings.Contains(n.Message, "4 (divide)") {
			warned = true
		}
	}
	if !warned {
		t.Errorf("no PM010 WARNING naming migration 4 (divide); notices: %+v", notices)
	}
}

// TestBatchOrderAndStatements: entries are applied in version order whatever
// their order in the batch, and a migration may hold several statements.
func TestBatchOrderAndStatements(t *testing.T) {
	t.Parallel()
	conn := pgtest.NewDB(t).Conn(t)
	b := batch{
		{Version: 3, Name: "fill", SQL: "insert into items values (3); insert into items values (33); select 1"},
		{Version: 1, Name: "create", SQL: "create table items (id int);\ncomment on table items is 'x'"},
		{Version: 2, Name: "index", SQL: "create index on items (id)"},
	}
	rows := mustApply(t, conn, b, "")
	var order []int64
	for _, r := range rows {
		order = append(order, r.Version)
		if r.Outcome != "applied" {
			t.Errorf("version %d: %s", r.Version, r.Outcome)
		}
	}
	if len(order) != 3 || order[0] != 1 || order[1] != 2 || order[2] != 3 {
		t.Errorf("result rows in order %v, want 1 2 3", order)
	}
	if n := count(t, conn, "select count(*) from items"); n != 2 {
		t.Errorf("items has %d rows, want 2", n)
	}
}

// TestRefusedMigrations: transaction control and non-transactional entries
// are refused with PM005, malformed batches with PM001; nothing applied.
func TestRefusedMigrations(t *testing.T) {
	t.Parallel()
	no := false
	cases := []struct {
		name string
		b    batch
		code string
	}{
		{"commit", append(tableBatch(1), migration{Version: 2, Name: "commits", SQL: "create table x (id int); commit"}), "PM005"},
		{"non-transactional", append(tableBatch(1), migration{Version: 2, Name: "concurrently",
			SQL: "create index concurrently on t_001 (id)", Transactional: &no}), "PM005"},
		{"create index concurrently marked transactional", append(tableBatch(1), migration{Version: 2, Name: "concurrently",
			SQL: "create index concurrently on t_001 (id)"}), "PM005"},
		{"duplicate version", append(tableBatch(2), migration{Version: 2, Name: "again", SQL: "select 1"}), "PM001"},
		{"empty sql", append(tableBatch(1), migration{Version: 2, Name: "blank", SQL: " \n\t"}), "PM001"},
		{"bad checksum", append(tableBatch(1), migration{Version: 2, Name: "sum", SQL: "select 1", Checksum: strings.Repeat("0", 64)}), "PM001"},
		{"manifest entry pending", append(tableBatch(1), migration{Version: 2, Name: "sum", Checksum: sha256Hex("select 1")}), "PM001"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			conn := pgtest.NewDB(t).Conn(t)
			_, err := apply(context.Background(), conn, tc.b, "")
			pgError(t, err, tc.code)
			if n := count(t, conn, "select count(*) from pgmig.history"); n != 0 {
				t.Errorf("history has %d rows", n)
			}
			if n := count(t, conn, "select count(*) from pg_class where relname = 't_001'"); n != 0 {
				t.Error("t_001 exists")
			}
		})
	}

	t.Run("unknown key", func(t *testing.T) {
		t.Parallel()
		conn := pgtest.NewDB(t).Conn(t)
		_, err := conn.Exec(context.Background(), `select * from migrate_apply('[{"version": 1, "name": "a", "sql": "select 1", "transactonal": false}]')`)
		pgErr := pgError(t, err, "PM001")
		if !strings.Contains(pgErr.Detail, "transactonal") {
			t.Errorf("PM001 detail does not name the unknown key: %s", describe(err))
		}
	})
}

// TestMigrationSessionChangesAreUndone: a migration's SET search_path / SET
// ROLE does not leak into the bookkeeping, the next migration, or the
// caller's session.
func TestMigrationSessionChangesAreUndone(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	role := pgtest.CreateRole(t, "")
	conn := db.Conn(t)
	if _, err := conn.Exec(ctx, "create schema other; grant create, usage on schema public to "+pgx.Identifier{role}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	b := batch{
		{Version: 1, Name: "path", SQL: "set search_path = other"},
		{Version: 2, Name: "in_caller_path", SQL: "create table where_am_i (id int)"},
		{Version: 3, Name: "role", SQL: "set role " + pgx.Identifier{role}.Sanitize()},
		{Version: 4, Name: "as_caller", SQL: "create table whose (id int)"},
	}
	rows := mustApply(t, conn, b, "")
	if got := outcomes(rows)["applied"]; got != 4 {
		t.Fatalf("outcomes %v", outcomes(rows))
	}
	var schema, owner, path, cur string
	if err := conn.QueryRow(ctx, `select n.nspname from pg_class c join pg_namespace n on n.oid = c.relnamespace where c.relname = 'where_am_i'`).Scan(&schema); err != nil {
		t.Fatal(err)
	}
	if schema != "public" {
		t.Errorf("migration 2 ran with the search_path migration 1 set: table in %s", schema)
	}
	if err := conn.QueryRow(ctx, `select pg_get_userbyid(relowner) from pg_class where relname = 'whose'`).Scan(&owner); err != nil {
		t.Fatal(err)
	}
	if owner == role {
		t.Errorf("migration 4 ran as the role migration 3 switched to")
	}
	if err := conn.QueryRow(ctx, "select current_setting('search_path'), current_user").Scan(&path, &cur); err != nil {
		t.Fatal(err)
	}
	if path != `"$user", public` || cur == role {
		t.Errorf("caller's session after the call: search_path %q, current_user %q", path, cur)
	}
	var appliedBy string
	if err := conn.QueryRow(ctx, "select applied_by from pgmig.history where version = 3").Scan(&appliedBy); err != nil {
		t.Fatal(err)
	}
	if appliedBy == role {
		t.Errorf("history row 3 recorded applied_by %q: the bookkeeping ran as the migration's role", appliedBy)
	}
}

// TestDryRunAndTarget: dry_run changes nothing; target_version stops there.
func TestDryRunAndTarget(t *testing.T) {
	t.Parallel()
	conn := pgtest.NewDB(t).Conn(t)
	b := tableBatch(5)
	rows := mustApply(t, conn, b, "dry_run => true")
	if got := outcomes(rows)["pending"]; got != 5 {
		t.Errorf("dry run: %v, want 5 pending", outcomes(rows))
	}
	if n := count(t, conn, "select count(*) from pgmig.history"); n != 0 {
		t.Errorf("dry run wrote %d history rows", n)
	}
	rows = mustApply(t, conn, b, "target_version => 3")
	if got := outcomes(rows); got["applied"] != 3 || got["beyond_target"] != 2 {
		t.Errorf("target 3: %v, want 3 applied 2 beyond_target", got)
	}
	if n := count(t, conn, "select count(*) from pg_class where relname in ('t_004', 't_005')"); n != 0 {
		t.Error("versions above target_version were applied")
	}
}

// TestLockBudget: with lock_budget the engine stops after the migration that
// brings its transaction near the budget (counted in pg_locks), leaves the
// rest pending, says so in PM012, and the next call continues; the whole
// batch ends applied exactly once. Without it, the same batch is one call.
func TestLockBudget(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	cfg, err := pgx.ParseConfig(db.URL)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var summary []string
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
		if n.Code == "PM012" {
			mu.Lock()
			summary = append(summary, n.Message)
			mu.Unlock()
		}
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)

	// Each migration creates a table: an AccessExclusiveLock on a new
	// relation (plus its type) that the transaction holds until it ends.
	b := tableBatch(120)
	const budget = 100
	calls, maxHeld := 0, 0
	for {
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		rows, err := apply(ctx, tx, b, fmt.Sprintf("lock_budget => %d", budget))
		if err != nil {
			t.Fatalf("call %d: %v", calls+1, describe(err))
		}
		var held int
		if err := tx.QueryRow(ctx, "select count(*) from pg_locks where pid = pg_backend_pid()").Scan(&held); err != nil {
			t.Fatal(err)
		}
		maxHeld = max(maxHeld, held)
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		calls++
		got := outcomes(rows)
		if got["applied"] == 0 {
			t.Fatalf("call %d applied nothing: %v", calls, got)
		}
		if got["pending"] == 0 {
			break
		}
		if calls > 120 {
			t.Fatal("no end in sight")
		}
	}
	if calls < 2 {
		t.Errorf("120 table creations under a budget of %d locks took %d call(s), want several", budget, calls)
	}
	// The engine stops before the next migration could pass the budget at the
	// growth it has seen; one migration's worth of slack.
	if maxHeld > budget+10 {
		t.Errorf("a call held %d locks, budget %d", maxHeld, budget)
	}
	if n := count(t, conn, "select count(*) from pgmig.history"); n != 120 {
		t.Errorf("history has %d rows, want 120", n)
	}
	if n := count(t, conn, "select count(*) from pg_class where relname like 't\\_%' and relkind = 'r'"); n != 120 {
		t.Errorf("%d tables, want 120", n)
	}
	mu.Lock()
	stopped := 0
	for _, m := range summary {
		if strings.Contains(m, "stopped at the lock budget") {
			stopped++
		}
	}
	mu.Unlock()
	if stopped != calls-1 {
		t.Errorf("PM012 says 'stopped at the lock budget' %d times in %d calls: %q", stopped, calls, summary)
	}
	t.Logf("120 migrations, lock budget %d: %d calls, at most %d locks held", budget, calls, maxHeld)

	// No budget: one call, whatever it holds.
	db2 := pgtest.NewDB(t).Conn(t)
	if got := outcomes(mustApply(t, db2, tableBatch(120), "")); got["applied"] != 120 {
		t.Errorf("without a budget: %v", got)
	}
	// lock_budget => 0 means none too; a negative budget is refused.
	db3 := pgtest.NewDB(t).Conn(t)
	if got := outcomes(mustApply(t, db3, tableBatch(120), "lock_budget => 0")); got["applied"] != 120 {
		t.Errorf("lock_budget => 0: %v", got)
	}
	if _, err := apply(ctx, db2, tableBatch(1), "lock_budget => -1"); err == nil || !strings.Contains(err.Error(), "lock_budget must be at least 1") {
		t.Errorf("lock_budget => -1: %v", err)
	}
}
