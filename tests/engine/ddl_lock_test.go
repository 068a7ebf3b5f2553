package engine_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgmig/pgmig/tests/pgtest"
)

// holdLock opens a session named "reporting" that runs stmt in a
// transaction left open (idle in transaction) until the test ends or the
// returned func is called. It returns the session's pid.
func holdLock(t *testing.T, db *pgtest.DB, stmt string) (pid int, release func()) {
	t.Helper()
	ctx := context.Background()
	conn := pgtest.Connect(t, pgtest.SetParam(db.URL, "application_name", "reporting"))
	if err := conn.QueryRow(ctx, "select pg_backend_pid()").Scan(&pid); err != nil {
		t.Fatal(err)
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, stmt); err != nil {
		t.Fatal(err)
	}
	release = func() { _ = tx.Rollback(context.Background()) }
	t.Cleanup(release)
	return pid, release
}

// blockedDetail is PM017's DETAIL in notices 'json'/'none' mode.
type blockedDetail struct {
	Version       int64  `json:"version"`
	Name          string `json:"name"`
	LockTimeoutMS int64  `json:"lock_timeout_ms"`
	Relation      string `json:"relation"`
	Committed     int    `json:"committed"`
	Transaction   int    `json:"transaction"`
	Blockers      []struct {
		PID         int      `json:"pid"`
		Application string   `json:"application"`
		State       string   `json:"state"`
		Relation    string   `json:"relation"`
		Modes       []string `json:"modes"`
		Granted     bool     `json:"granted"`
		Query       string   `json:"query"`
		Seconds     float64  `json:"seconds"`
	} `json:"blockers"`
}

// TestDDLLockTimeout: with ddl_lock_timeout a migration that waits that
// long for a lock gives up with PM017, whose message names the migration,
// the relation and the session in the way, and whose DETAIL has them as
// data for programs (notices 'json'); nothing of the batch is applied, and
// migrate_run does the same.
func TestDDLLockTimeout(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	conn := db.Conn(t)
	if _, err := conn.Exec(ctx, "create table orders (id int primary key)"); err != nil {
		t.Fatal(err)
	}
	pid, release := holdLock(t, db, "select count(*) from orders")
	b := batch{
		{Version: 1, Name: "scratch", SQL: "create table scratch (i int)"},
		{Version: 2, Name: "add_col", SQL: "alter table orders add column note text"},
	}

	start := time.Now()
	_, err := apply(ctx, conn, b, "ddl_lock_timeout => '300ms', notices => 'json'")
	took := time.Since(start)
	pgErr := pgError(t, err, "PM017")
	var d blockedDetail
	if err := json.Unmarshal([]byte(pgErr.Detail), &d); err != nil {
		t.Fatalf("PM017 DETAIL is not JSON: %v: %s", err, pgErr.Detail)
	}
	if d.Version != 2 || d.Name != "add_col" || d.LockTimeoutMS != 300 || d.Relation != "orders" || d.Committed != 0 ||
		len(d.Blockers) != 1 {
		t.Fatalf("DETAIL: %+v", d)
	}
	bl := d.Blockers[0]
	if bl.PID != pid || bl.Application != "reporting" || bl.State != "idle in transaction" || bl.Relation != "orders" ||
		!slices.Contains(bl.Modes, "AccessShareLock") || !bl.Granted || bl.Query != "select count(*) from orders" {
		t.Errorf("blocker: %+v", bl)
	}
	for _, want := range []string{"migration 2 (add_col)", "orders", "pid " + strconv.Itoa(pid), "reporting", "idle in transaction"} {
		if !strings.Contains(pgErr.Message, want) {
			t.Errorf("message %q does not name %q", pgErr.Message, want)
		}
	}
	if took > 5*time.Second {
		t.Errorf("gave up after %v, want about 300ms", took)
	}
	if n := count(t, conn, "select (select count(*) from pgmig.history) + (select count(*) from pg_class where relname = 'scratch')"); n != 0 {
		t.Errorf("%d history rows or tables left: want nothing applied", n)
	}

	// For people (notices 'text'): the DETAIL lists the blockers.
	_, err = apply(ctx, conn, b, "ddl_lock_timeout => '100ms'")
	pgErr = pgError(t, err, "PM017")
	if !strings.Contains(pgErr.Detail, fmt.Sprintf("blocked on orders by pid %d (reporting, idle in transaction ", pid)) ||
		!strings.Contains(pgErr.Detail, "AccessShareLock") || !strings.Contains(pgErr.Hint, "lock-timeout") {
		t.Errorf("text DETAIL/HINT: %s / %s", pgErr.Detail, pgErr.Hint)
	}

	// migrate_run: the same, after the transaction that committed version 1.
	_, err = conn.Exec(ctx, "call pgmig.migrate_run($1::jsonb, ddl_lock_timeout => '100ms', notices => 'none')", withCommitAfter(b, 1))
	pgErr = pgError(t, err, "PM017")
	if err := json.Unmarshal([]byte(pgErr.Detail), &d); err != nil || d.Version != 2 || d.Committed != 1 || d.Transaction != 2 {
		t.Errorf("migrate_run PM017: %+v %v", d, err)
	}
	if !strings.Contains(pgErr.Message, "1 migration committed earlier by this call stay") {
		t.Errorf("migrate_run PM017 message: %s", pgErr.Message)
	}
	release()
	mustApply(t, conn, b, "ddl_lock_timeout => '100ms'")
}

// TestDDLLockTimeoutSeesSessionsAsTheyAre: pg_stat_activity is read once
// per transaction and kept; a caller (or the engine's lock wait) that read it
// before the blocker began must still get the blocker as it is when the
// timeout expires, not as it was.
func TestDDLLockTimeoutSeesSessionsAsTheyAre(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	conn := db.Conn(t)
	if _, err := conn.Exec(ctx, "create table orders (id int primary key)"); err != nil {
		t.Fatal(err)
	}
	blocker := pgtest.Connect(t, pgtest.SetParam(db.URL, "application_name", "reporting"))
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "select count(*) from pg_stat_activity"); err != nil { // the snapshot, while the blocker is idle
		t.Fatal(err)
	}
	btx, err := blocker.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer btx.Rollback(ctx)
	if _, err := btx.Exec(ctx, "select count(*) from orders"); err != nil {
		t.Fatal(err)
	}
	_, err = tx.Exec(ctx, "select * from pgmig.migrate_apply($1::jsonb, ddl_lock_timeout => '200ms', notices => 'none')",
		batch{{Version: 1, Name: "add_col", SQL: "alter table orders add column note text"}}.JSON())
	pgErr := pgError(t, err, "PM017")
	var d blockedDetail
	if err := json.Unmarshal([]byte(pgErr.Detail), &d); err != nil || len(d.Blockers) != 1 {
		t.Fatalf("DETAIL: %+v %v", d, err)
	}
	if b := d.Blockers[0]; b.PID != int(blocker.PgConn().PID()) || b.State != "idle in transaction" || b.Query != "select count(*) from orders" {
		t.Errorf("the blocker as the engine saw it: %+v; want it idle in transaction after its query", b)
	}
}

// TestDDLLockTimeoutHiddenBlocker: a deploy role without pg_read_all_stats
// cannot see what another role's session runs; the blocker is still named
// by its pid (PostgreSQL hides the rest), not dropped.
func TestDDLLockTimeoutHiddenBlocker(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	role := pgtest.CreateRole(t, "")
	admin := db.Conn(t)
	r := pgx.Identifier{role}.Sanitize()
	if _, err := admin.Exec(ctx, "grant usage on schema pgmig to "+r+"; grant select, insert, update, delete on all tables in schema pgmig to "+r+
		"; grant execute on all routines in schema pgmig to "+r+"; grant create, usage on schema public to "+r); err != nil {
		t.Fatal(err)
	}
	deploy := pgtest.Connect(t, db.URLAs(role, pgtest.RolePassword))
	if _, err := deploy.Exec(ctx, "create table orders (id int); grant select on orders to public"); err != nil {
		t.Fatal(err)
	}
	pid, _ := holdLock(t, db, "select count(*) from orders") // as the superuser
	_, err := deploy.Exec(ctx, "select * from pgmig.migrate_apply($1::jsonb, ddl_lock_timeout => '200ms', notices => 'none')",
		batch{{Version: 1, Name: "add_col", SQL: "alter table orders add column note text"}}.JSON())
	pgErr := pgError(t, err, "PM017")
	var d blockedDetail
	if err := json.Unmarshal([]byte(pgErr.Detail), &d); err != nil || d.Relation != "orders" || len(d.Blockers) != 1 ||
		d.Blockers[0].PID != pid || d.Blockers[0].Query != "" {
		t.Fatalf("DETAIL as a role without pg_read_all_stats: %s %v", pgErr.Detail, err)
	}
	if !strings.Contains(pgErr.Message, fmt.Sprintf("held by pid %d", pid)) {
		t.Errorf("message: %s", pgErr.Message)
	}
}

// TestDDLLockTimeoutScope: the timeout covers each migration's own
// statements and nothing else: a migration sees it (or its entry's own
// "lock_timeout", 0 there meaning none), and afterwards the caller's
// transaction has its own lock_timeout back.
func TestDDLLockTimeoutScope(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	conn := db.Conn(t)
	if _, err := conn.Exec(ctx, "create table seen (v int, lock_timeout text)"); err != nil {
		t.Fatal(err)
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "set local lock_timeout = '7s'"); err != nil {
		t.Fatal(err)
	}
	rec := func(v int) string {
		return fmt.Sprintf("insert into seen values (%d, current_setting('lock_timeout'))", v)
	}
	raw := fmt.Sprintf(`[{"version": 1, "name": "one", "sql": %q},
		{"version": 2, "name": "two", "sql": %q, "lock_timeout": "0"},
		{"version": 3, "name": "three", "sql": %q, "lock_timeout": "2 minutes"},
		{"version": 4, "name": "four", "sql": %q, "lock_timeout": null}]`, rec(1), rec(2), rec(3), rec(4))
	if _, err := tx.Exec(ctx, "select * from pgmig.migrate_apply($1::jsonb, ddl_lock_timeout => '1500ms')", raw); err != nil {
		t.Fatal(describe(err))
	}
	got := mustQueryStrings(t, conn, "select v || '=' || lock_timeout from seen order by v")
	if want := []string{"1=1500ms", "2=0", "3=2min", "4=1500ms"}; !slices.Equal(got, want) {
		t.Errorf("lock_timeout the migrations saw: %v, want %v", got, want)
	}
	var after string
	if err := tx.QueryRow(ctx, "show lock_timeout").Scan(&after); err != nil || after != "7s" {
		t.Errorf("the caller's lock_timeout after the call: %q %v, want 7s", after, err)
	}
}

// TestDDLLockTimeoutFindsRelatedRelation: a relation the migration does
// not name but needs all the same is found through the catalog: dropping a
// table takes a lock on the table its foreign key references.
func TestDDLLockTimeoutFindsRelatedRelation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	conn := db.Conn(t)
	if _, err := conn.Exec(ctx, `create schema shop; create table shop.orders (id int primary key);
		create table shop.order_items (order_id int references shop.orders)`); err != nil {
		t.Fatal(err)
	}
	pid, _ := holdLock(t, db, "select count(*) from shop.orders")
	_, err := apply(ctx, conn, batch{{Version: 1, Name: "drop_items", SQL: "drop table shop.order_items"}},
		"ddl_lock_timeout => '200ms', notices => 'none'")
	pgErr := pgError(t, err, "PM017")
	var d blockedDetail
	if err := json.Unmarshal([]byte(pgErr.Detail), &d); err != nil || d.Relation != "shop.orders" ||
		len(d.Blockers) != 1 || d.Blockers[0].PID != pid {
		t.Fatalf("DETAIL: %+v %v", d, err)
	}
}

// TestBatchLockTimeoutKey: the batch key "lock_timeout" takes an interval
// from 0 to lock_timeout's maximum, as a string (or null); anything else is
// PM001 naming the entry, and the engine's two batch validators agree on
// every value (see _batch_ok); ddl_lock_timeout is checked the same way.
func TestBatchLockTimeoutKey(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	conn := db.Conn(t)
	checkEntryKey(t, conn, "lock_timeout", `[{"version": 1, "name": "one", "sql": "select 1", "lock_timeout": %s}]`, map[string]bool{
		`"5s"`: true, `"500ms"`: true, `"0"`: true, `"2 minutes"`: true, `null`: true, `"24 days"`: true,
		`"abc"`: false, `"-1s"`: false, `"30 days"`: false, `5`: false, `true`: false, `["5s"]`: false, `""`: false,
	})
	for _, v := range []string{"-1 second", "30 days"} {
		_, err := apply(ctx, conn, tableBatch(1), fmt.Sprintf("ddl_lock_timeout => '%s'", v))
		pgError(t, err, "PM001")
	}
}

// TestHistoryNotifies: the engine NOTIFYs pgmig_history when it commits
// history changes, once per transaction; a dry run or a rolled-back call
// sends nothing.
func TestHistoryNotifies(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	listener := db.Conn(t)
	if _, err := listener.Exec(ctx, "listen pgmig_history"); err != nil {
		t.Fatal(err)
	}
	conn := db.Conn(t)
	next := func(within time.Duration) bool {
		wctx, cancel := context.WithTimeout(ctx, within)
		defer cancel()
		n, err := listener.WaitForNotification(wctx)
		if err == nil && n.Channel != "pgmig_history" {
			t.Errorf("notification on %q", n.Channel)
		}
		return err == nil
	}
	mustApply(t, conn, tableBatch(3), "dry_run => true")
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mustApply(t, tx, tableBatch(3), "")
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if next(300 * time.Millisecond) {
		t.Fatal("a dry run or a rolled-back call notified")
	}
	mustApply(t, conn, tableBatch(3), "")
	if !next(5 * time.Second) {
		t.Fatal("no notification after migrate_apply committed")
	}
	if next(300 * time.Millisecond) {
		t.Error("more than one notification for one transaction")
	}
	// migrate_run: one per transaction that recorded something.
	if _, err := conn.Exec(ctx, "call pgmig.migrate_run($1::jsonb)", withCommitAfter(tableBatch(5), 4)); err != nil {
		t.Fatal(describe(err))
	}
	for i := 1; i <= 2; i++ {
		if !next(5 * time.Second) {
			t.Fatalf("migrate_run's transaction %d did not notify", i)
		}
	}
}

// rehearsalFingerprint is what a rehearsal must leave as it was: the user's
// catalog (relations and their storage, columns), the data, the history.
func rehearsalFingerprint(t *testing.T, conn *pgx.Conn) string {
	t.Helper()
	var fp string
	if err := conn.QueryRow(context.Background(), `select md5(string_agg(x, '|' order by x)) from (
		select format('rel %s %s %s %s', c.relnamespace::regnamespace, c.relname, c.relfilenode, c.relkind) as x
		  from pg_class c where c.relnamespace not in ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
		union all select format('col %s %s %s', attrelid::regclass, attname, atttypid::regtype)
		  from pg_attribute a join pg_class c on c.oid = a.attrelid where c.relnamespace = 'public'::regnamespace and attnum > 0
		union all select format('data %s', (select md5(string_agg(w::text, ',' order by w.id)) from wide w))
		union all select format('history %s audit %s', (select count(*) from pgmig.history), (select count(*) from pgmig.audit))
	) as f`).Scan(&fp); err != nil {
		t.Fatal(err)
	}
	return fp
}

// TestRehearseFromSQL: migrate_rehearse from plain SQL (psql, a GUI): the
// report of a table rewrite, nothing left afterwards — not even the history
// lock — and the guard rail that makes the caller bound the statement.
func TestRehearseFromSQL(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	conn := db.Conn(t)
	if _, err := conn.Exec(ctx, `create table wide (id int primary key, v text);
		insert into wide select g, md5(g::text) from generate_series(1, 10000) g`); err != nil {
		t.Fatal(err)
	}
	b := batch{
		{Version: 1, Name: "add_flag", SQL: "alter table wide add column flag boolean"},
		{Version: 2, Name: "retype", SQL: "alter table wide alter column v type varchar(64)"},
	}
	before := rehearsalFingerprint(t, conn)

	_, err := conn.Exec(ctx, "select * from pgmig.migrate_rehearse($1::jsonb)", b.JSON())
	if pgErr := pgError(t, err, "PM018"); !strings.Contains(pgErr.Hint, "SET statement_timeout = '1min'") {
		t.Errorf("PM018 hint: %s", pgErr.Hint)
	}
	if _, err := conn.Exec(ctx, "set statement_timeout = '5min'"); err != nil {
		t.Fatal(err)
	}
	_, err = conn.Exec(ctx, "select * from pgmig.migrate_rehearse($1::jsonb)", b.JSON())
	pgError(t, err, "PM018") // longer than the rehearsal allows
	if _, err := conn.Exec(ctx, "set statement_timeout = '30s'"); err != nil {
		t.Fatal(err)
	}

	type row struct {
		Version   int64
		Outcome   string
		WAL       *int64
		Relations []map[string]any
	}
	rows, err := conn.Query(ctx, "select version, outcome, wal_bytes, relations from pgmig.migrate_rehearse($1::jsonb) order by version", b.JSON())
	if err != nil {
		t.Fatal(describe(err))
	}
	got, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (row, error) {
		var x row
		var rels []byte
		err := r.Scan(&x.Version, &x.Outcome, &x.WAL, &rels)
		if err == nil && rels != nil {
			err = json.Unmarshal(rels, &x.Relations)
		}
		return x, err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Outcome != "rehearsed" || got[1].Outcome != "rehearsed" {
		t.Fatalf("report: %+v", got)
	}
	table := func(r row) map[string]any {
		for _, rel := range r.Relations {
			if rel["relation"] == "public.wide" {
				return rel
			}
		}
		t.Fatalf("version %d did not report public.wide: %+v", r.Version, r.Relations)
		return nil
	}
	if w := table(got[0]); w["rewritten"] != false || w["lock_mode"] != "AccessExclusiveLock" {
		t.Errorf("adding a nullable column: %+v", w)
	}
	if w := table(got[1]); w["rewritten"] != true || w["size_bytes"].(float64) < 500_000 || *got[1].WAL < 500_000 {
		t.Errorf("retyping the column: %+v, %d WAL bytes", w, *got[1].WAL)
	}
	t.Logf("rehearsal of a rewrite of 10 000 rows: %+v, WAL %d bytes", table(got[1]), *got[1].WAL)
	if after := rehearsalFingerprint(t, conn); after != before {
		t.Fatal("the rehearsal changed the catalog, the data or the history")
	}
	// The history lock went with the rollback: another migrator gets it at once.
	other := db.Conn(t)
	if _, err := other.Exec(ctx, "begin; lock table pgmig.history in exclusive mode nowait; rollback"); err != nil {
		t.Fatalf("the history lock is still held after the rehearsal: %v", err)
	}
	// statement_timeout => '0' lifts the guard rail, for those who mean it.
	if _, err := conn.Exec(ctx, "set statement_timeout = 0"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "select * from pgmig.migrate_rehearse($1::jsonb, statement_timeout => '0')", b.JSON()); err != nil {
		t.Fatal(describe(err))
	}
	if after := rehearsalFingerprint(t, conn); after != before {
		t.Fatal("the second rehearsal changed something")
	}
}

// checkEntryKey: for each value of a batch entry's key (spliced into
// batchFormat), _batch_ok and _batch_problems agree on whether it is valid as
// want says, and an invalid one makes migrate_apply fail with PM001 whose
// DETAIL names the entry and the key.
func checkEntryKey(t *testing.T, conn *pgx.Conn, key, batchFormat string, want map[string]bool) {
	t.Helper()
	ctx := context.Background()
	for value, ok := range want {
		b := fmt.Sprintf(batchFormat, value)
		var batchOK bool
		var problems int
		if err := conn.QueryRow(ctx, "select pgmig._batch_ok($1::jsonb), (select count(*) from pgmig._batch_problems($1::jsonb))", b).
			Scan(&batchOK, &problems); err != nil {
			t.Fatal(err)
		}
		if batchOK != ok || (problems == 0) != ok {
			t.Errorf("%s %s: _batch_ok %v, %d problems; want ok=%v", key, value, batchOK, problems, ok)
		}
		if !ok {
			_, err := conn.Exec(ctx, "select * from pgmig.migrate_apply($1::jsonb)", b)
			if pgErr := pgError(t, err, "PM001"); !strings.Contains(pgErr.Detail, fmt.Sprintf(`entry 1 (version 1): %q must be`, key)) {
				t.Errorf("%s %s: DETAIL %q", key, value, pgErr.Detail)
			}
		}
	}
}
