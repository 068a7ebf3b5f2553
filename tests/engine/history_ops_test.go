package engine_test

import (
	"context"
	"strings"
	"testing"

	"github.com/pgmig/pgmig/tests/pgtest"
)

// TestRollbackRunsRecordedDownSQL: migrate_rollback undoes versions newest first with the
// down SQL stored at apply time (the batch is not needed), audits each, and is one
// transaction: a failing down SQL rolls back nothing.
func TestRollbackRunsRecordedDownSQL(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	conn := pgtest.NewDB(t).Conn(t)
	mustApply(t, conn, tableBatch(5), "")

	rows, err := conn.Query(ctx, "select version, outcome from migrate_rollback(2)")
	if err != nil {
		t.Fatal(describe(err))
	}
	var got []string
	for rows.Next() {
		var v int64
		var outcome string
		if err := rows.Scan(&v, &outcome); err != nil {
			t.Fatal(err)
		}
		got = append(got, strings.Join([]string{itoa(v), outcome}, ":"))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(describe(err))
	}
	if strings.Join(got, ",") != "5:rolled_back,4:rolled_back,3:rolled_back" {
		t.Fatalf("rollback rows %v", got)
	}
	if n := count(t, conn, "select count(*) from pg_class where relname in ('t_003','t_004','t_005')"); n != 0 {
		t.Errorf("%d rolled-back tables still exist", n)
	}
	if n := count(t, conn, "select count(*) from pgmig.history"); n != 2 {
		t.Errorf("history has %d rows after rollback to 2, want 2", n)
	}
	if n := count(t, conn, "select count(*) from pgmig.audit where action = 'rollback' and details->'history'->>'down_sql' like 'drop table t_00%'"); n != 3 {
		t.Errorf("%d rollback audit rows carrying the removed history, want 3", n)
	}

	// A failing down SQL: nothing of the range is rolled back.
	if _, err := conn.Exec(ctx, "update pgmig.history set down_sql = 'x' where version = 1"); err == nil {
		t.Fatal("the history accepted an UPDATE outside maintenance mode")
	}
	if _, err := conn.Exec(ctx, "set pgmig.maintenance = 'on'; update pgmig.history set down_sql = 'drop table no_such_table' where version = 1; reset pgmig.maintenance"); err != nil {
		t.Fatal(err)
	}
	_, err = conn.Exec(ctx, "select * from migrate_rollback(0)")
	pgError(t, err, "42P01")
	if n := count(t, conn, "select count(*) from pgmig.history"); n != 2 {
		t.Errorf("a failed rollback changed the history: %d rows", n)
	}
	if n := count(t, conn, "select count(*) from pg_class where relname = 't_002'"); n != 1 {
		t.Error("a failed rollback dropped t_002")
	}
}

// TestRollbackRefusesIrreversibleAndFailsFast: a version without down SQL in the range is
// named and nothing happens; with another migrator holding the lock, rollback does not wait.
func TestRollbackRefusesIrreversibleAndFailsFast(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	conn := db.Conn(t)
	b := tableBatch(3)
	b[1].Down = ""
	mustApply(t, conn, b, "")
	_, err := conn.Exec(ctx, "select * from migrate_rollback(0)")
	pgErr := pgError(t, err, "PM007")
	if !strings.Contains(pgErr.Message, "2 (create_t_002)") {
		t.Errorf("PM007 does not name version 2: %s", pgErr.Message)
	}
	if n := count(t, conn, "select count(*) from pgmig.history"); n != 3 {
		t.Errorf("refused rollback changed the history: %d rows", n)
	}

	holder := db.Conn(t)
	tx, err := holder.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "lock table pgmig.history in exclusive mode"); err != nil {
		t.Fatal(err)
	}
	_, err = conn.Exec(ctx, "select * from migrate_rollback(2)")
	pgError(t, err, "PM003")
}

// TestBaselineAdoptsAnExistingDatabase: versions up to V are recorded without running, the
// rest applies normally; a baseline below existing history is refused.
func TestBaselineAdoptsAnExistingDatabase(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	conn := pgtest.NewDB(t).Conn(t)
	// The schema that some other tool built: t_001..t_003 exist, no pgmig history.
	if _, err := conn.Exec(ctx, "create table t_001 (id int); create table t_002 (id int); create table t_003 (id int)"); err != nil {
		t.Fatal(err)
	}
	b := tableBatch(5)
	manifest := b
	manifest[1] = migration{Version: 2, Name: b[1].Name, Checksum: sha256Hex(b[1].SQL)} // a manifest entry is enough
	rows, err := conn.Query(ctx, "select version, outcome from migrate_baseline($1::jsonb, 3)", manifest.JSON())
	if err != nil {
		t.Fatal(describe(err))
	}
	n := 0
	for rows.Next() {
		var v int64
		var outcome string
		if err := rows.Scan(&v, &outcome); err != nil {
			t.Fatal(err)
		}
		want := "baselined"
		if v > 3 {
			want = "pending"
		}
		if outcome != want {
			t.Errorf("version %d: %s, want %s", v, outcome, want)
		}
		n++
	}
	if err := rows.Err(); err != nil || n != 5 {
		t.Fatalf("baseline rows %d, err %v", n, describe(err))
	}
	res := mustApply(t, conn, tableBatch(5), "")
	if got := outcomes(res); got["applied"] != 2 || got["already_applied"] != 3 {
		t.Errorf("push after baseline: %v, want 2 applied, 3 already applied", got)
	}
	if n := count(t, conn, "select count(*) from pgmig.history where kind = 'baseline'"); n != 3 {
		t.Errorf("%d baseline rows, want 3", n)
	}
	_, err = conn.Exec(ctx, "select * from migrate_baseline($1::jsonb, 2)", tableBatch(5).JSON())
	pgError(t, err, "PM002")
}

// TestRepairRecordsDeliberateEditsWithAudit: after an edit of an applied migration, repair
// updates checksum and name and keeps the old values in the audit; then the push is clean.
func TestRepairRecordsDeliberateEditsWithAudit(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	conn := pgtest.NewDB(t).Conn(t)
	mustApply(t, conn, tableBatch(3), "")
	edited := tableBatch(3).with(2, "create table t_002 (id int) -- reformatted")
	edited[1].Name = "create_t_two"
	_, err := apply(ctx, conn, edited, "")
	pgError(t, err, "PM002")

	rows := mustQueryStrings(t, conn, "select version || ':' || outcome from migrate_repair($1::jsonb)", edited.JSON())
	if strings.Join(rows, ",") != "2:repaired" {
		t.Fatalf("repair rows %v", rows)
	}
	res := mustApply(t, conn, edited, "")
	if got := outcomes(res); got["already_applied"] != 3 {
		t.Errorf("push after repair: %v", got)
	}
	var oldSum, newName, by string
	if err := conn.QueryRow(ctx, `select details->'old'->>'checksum', details->'new'->>'name', by_role
		from pgmig.audit where action = 'repair' and version = 2`).Scan(&oldSum, &newName, &by); err != nil {
		t.Fatal(err)
	}
	if oldSum != sha256Hex(tableBatch(3)[1].SQL) || newName != "create_t_two" || by == "" {
		t.Errorf("audit old checksum %s new name %s by %q", oldSum, newName, by)
	}
}

// TestInterruptedNonTransactionalRunBlocksUntilResolved: a run row left by a dead client
// stops every migrator with PM009 naming the statement and invalid indexes; resolving it
// ('retry' or 'applied') is audited and unblocks.
func TestInterruptedNonTransactionalRunBlocksUntilResolved(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	conn := pgtest.NewDB(t).Conn(t)
	mustApply(t, conn, tableBatch(1), "")
	stmt := "create index concurrently t_001_id on t_001 (id)"
	if _, err := conn.Exec(ctx, "select pgmig.nontx_progress(2, 'idx', $1, $2, null, 1, 0, $2)", sha256Hex(stmt), stmt); err != nil {
		t.Fatal(err)
	}
	// What a failed concurrent build leaves behind: an invalid index.
	if _, err := conn.Exec(ctx, "create index t_001_broken on t_001 (id); update pg_index set indisvalid = false where indexrelid = 't_001_broken'::regclass"); err != nil {
		t.Fatal(err)
	}
	no := false
	b := append(tableBatch(1), migration{Version: 2, Name: "idx", SQL: stmt, Transactional: &no})
	_, err := apply(ctx, conn, tableBatch(1), "")
	pgErr := pgError(t, err, "PM009")
	for _, want := range []string{"2 (idx)", "0 of 1"} {
		if !strings.Contains(pgErr.Message, want) {
			t.Errorf("PM009 message lacks %q: %s", want, pgErr.Message)
		}
	}
	if !strings.Contains(pgErr.Detail, "t_001_broken") || !strings.Contains(pgErr.Hint, "migrate_resolve(2, 'retry')") {
		t.Errorf("PM009 detail/hint: %s / %s", pgErr.Detail, pgErr.Hint)
	}
	if got := mustQueryStrings(t, conn, "select state from migrate_status() where version = 2"); strings.Join(got, ",") != "interrupted" {
		t.Errorf("status of the run: %v", got)
	}
	if got := mustQueryStrings(t, conn, "select outcome from migrate_resolve(2, 'applied')"); strings.Join(got, ",") != "applied" {
		t.Fatalf("resolve: %v", got)
	}
	res := mustApply(t, conn, b, "")
	if got := outcomes(res); got["already_applied"] != 2 {
		t.Errorf("after resolve: %v", got)
	}
	if n := count(t, conn, "select count(*) from pgmig.audit where action = 'resolve'"); n != 1 {
		t.Errorf("%d resolve audit rows", n)
	}
}

// TestEnumAddThenUseNeedsACommit: in one migrate_apply call the use of a new enum value fails
// with 55P04 and a hint naming the commit_after marker; applying up to the marker first works.
func TestEnumAddThenUseNeedsACommit(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	conn := pgtest.NewDB(t).Conn(t)
	b := `[{"version":1,"name":"mood","sql":"create type mood as enum ('ok')"},
	       {"version":2,"name":"add_sad","sql":"alter type mood add value 'sad'","commit_after":true},
	       {"version":3,"name":"use_sad","sql":"create table feelings (m mood default 'sad')"}]`
	_, err := conn.Exec(ctx, "select * from migrate_apply($1::jsonb)", b)
	pgErr := pgError(t, err, "55P04")
	if !strings.Contains(pgErr.Message, "3 (use_sad)") || !strings.Contains(pgErr.Hint, "target_version => 2") {
		t.Errorf("55P04 not explained: %s / %s", pgErr.Message, pgErr.Hint)
	}
	if _, err := conn.Exec(ctx, "select * from migrate_apply($1::jsonb, target_version => 2)", b); err != nil {
		t.Fatal(describe(err))
	}
	if _, err := conn.Exec(ctx, "select * from migrate_apply($1::jsonb)", b); err != nil {
		t.Fatal(describe(err))
	}
	if n := count(t, conn, "select count(*) from pgmig.history"); n != 3 {
		t.Errorf("history %d rows, want 3", n)
	}
}

// TestWaitingInsideAStatementRefusedDuringNonTransactional: from the moment a holder has
// called nontx_begin (before any progress row exists), migrate_apply from SQL must not queue
// for the lock with its statement snapshot, which would stall the coming index build.
func TestWaitingInsideAStatementRefusedDuringNonTransactional(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	conn := db.Conn(t)
	mustApply(t, conn, tableBatch(1), "")
	no := false
	b := append(tableBatch(1), migration{Version: 2, Name: "idx", SQL: "create index concurrently on t_001 (id)", Transactional: &no})

	holder := db.Conn(t)
	tx, err := holder.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "select pgmig.nontx_begin($1::jsonb, 2)", b.JSON()); err != nil {
		t.Fatal(describe(err))
	}
	_, err = apply(ctx, conn, b, "")
	pgErr := pgError(t, err, "PM003")
	if !strings.Contains(pgErr.Detail, "non-transactional migration 2") {
		t.Errorf("PM003 detail does not name the running migration: %s", pgErr.Detail)
	}
}
