package pgmig_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	pgmig "github.com/pgmig/pgmig/gowrapper"
	"github.com/pgmig/pgmig/tests/pgtest"
)

var reversible = map[string]string{
	"001_a.sql": "create table a (id int);\n---- create above / drop below ----\ndrop table a;\n",
	"002_b.sql": "create table b (id int);\n---- create above / drop below ----\ndrop table b;\n",
	"003_c.sql": "create table c (id int);\n",
	"004_d.sql": "create table d (id int);\n---- create above / drop below ----\ndrop table d;\n",
	"005_e.sql": "create table e (id int);\n---- create above / drop below ----\ndrop table e;\n",
}

func TestRollback(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	client := connect(t, db.URL, nil)
	if _, err := client.Push(ctx, load(t, reversible), nil); err != nil {
		t.Fatal(err)
	}
	// Dry run first: nothing changes.
	res, err := client.Rollback(ctx, 3, &pgmig.RollbackOpts{DryRun: true})
	if err != nil || len(res.Migrations) != 2 || res.Changed != 0 || res.Version != 5 ||
		res.Migrations[0].Outcome != pgmig.OutcomePendingRollback {
		t.Fatalf("dry run: %+v %v", res, err)
	}
	var progress []int64
	res, err = client.Rollback(ctx, 3, &pgmig.RollbackOpts{Progress: func(p pgmig.Progress) {
		if !p.Done {
			progress = append(progress, p.Version)
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Changed != 2 || res.Version != 3 || res.Migrations[0].Version != 5 || res.Migrations[1].Version != 4 ||
		res.Migrations[0].Outcome != pgmig.OutcomeRolledBack || len(progress) != 2 || progress[0] != 5 {
		t.Fatalf("rollback: %+v progress %v", res, progress)
	}
	// Version 3 has no down SQL: refused, named, nothing rolled back.
	_, err = client.Rollback(ctx, 1, nil)
	if !errors.Is(err, pgmig.ErrIrreversible) {
		t.Fatalf("err = %v, want ErrIrreversible", err)
	}
	st, err := client.Status(ctx)
	if err != nil || st.Version != 3 {
		t.Fatalf("status after refusal: %+v %v", st, err)
	}

	// Another migrator holds the lock: fail fast by default.
	tx, err := db.Conn(t).Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "lock table pgmig.history in exclusive mode"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := client.Rollback(ctx, 2, nil); !errors.Is(err, pgmig.ErrLockTimeout) {
		t.Fatalf("err = %v, want ErrLockTimeout", err)
	}
	t.Logf("rollback against a held lock failed after %v", time.Since(start))
	tx.Rollback(ctx)

	// A failing down SQL: a MigrationError naming the version, nothing
	// rolled back.
	if _, err := client.Push(ctx, load(t, reversible), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Conn(t).Exec(ctx, "create view ev as select * from e"); err != nil {
		t.Fatal(err)
	}
	_, err = client.Rollback(ctx, 3, nil)
	var merr *pgmig.MigrationError
	if !errors.As(err, &merr) || !merr.Rollback || merr.Version != 5 || merr.Name != "e" || merr.Code != "2BP01" || merr.CurrentVersion != 5 {
		t.Fatalf("err = %v (%+v)", err, merr)
	}
}

func TestBaselineAndRepair(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	client := connect(t, db.URL, nil)
	conn := db.Conn(t)
	// A database built by hand up to version 3.
	if _, err := conn.Exec(ctx, "create table a (id int); create table b (id int); create table c (id int)"); err != nil {
		t.Fatal(err)
	}
	ms := load(t, reversible)
	res, err := client.Baseline(ctx, ms, 3, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Changed != 3 || res.Version != 3 {
		t.Fatalf("baseline: %+v", res)
	}
	pushed, err := client.Push(ctx, ms, nil)
	if err != nil || pushed.Applied != 2 || pushed.Version != 5 {
		t.Fatalf("push after baseline: %+v %v", pushed, err)
	}
	// Refused: history above the baseline.
	if _, err := client.Baseline(ctx, ms, 2, nil); !errors.Is(err, pgmig.ErrDrift) {
		t.Fatalf("second baseline: err = %v, want ErrDrift", err)
	}
	// The down SQL recorded at baseline makes rollback work.
	if _, err := client.Rollback(ctx, 3, nil); err != nil {
		t.Fatal(err)
	}

	// Repair: a deliberate edit of version 2.
	files := map[string]string{}
	for k, v := range reversible {
		files[k] = v
	}
	files["002_b.sql"] = "create table b (id int); -- reformatted\n---- create above / drop below ----\ndrop table b;\n"
	edited := load(t, files)
	if _, err := client.Push(ctx, edited, nil); !errors.Is(err, pgmig.ErrDrift) {
		t.Fatalf("push of an edited file: err = %v, want ErrDrift", err)
	}
	res, err = client.Repair(ctx, edited, &pgmig.RepairOpts{Versions: []int64{2}})
	if err != nil || res.Changed != 1 || res.Migrations[0].Version != 2 || res.Migrations[0].Outcome != pgmig.OutcomeRepaired {
		t.Fatalf("repair: %+v %v", res, err)
	}
	if _, err := client.Push(ctx, edited, nil); err != nil {
		t.Fatalf("push after repair: %v", err)
	}
	var oldSum, newSum, by string
	if err := conn.QueryRow(ctx, `select details->'old'->>'checksum', details->'new'->>'checksum', by_role from pgmig.audit
		where action = 'repair' and version = 2`).Scan(&oldSum, &newSum, &by); err != nil {
		t.Fatal(err)
	}
	if oldSum != ms[1].Checksum || newSum != edited[1].Checksum || by == "" {
		t.Errorf("audit: old %s new %s by %q", oldSum, newSum, by)
	}
	// Repairing a version that is not applied is refused.
	if _, err := client.Repair(ctx, edited, &pgmig.RepairOpts{Versions: []int64{9}}); !errors.Is(err, pgmig.ErrInvalidBatch) {
		t.Fatalf("repair of version 9: err = %v", err)
	}
}

func TestResolve(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	client := connect(t, db.URL, nil)
	files := map[string]string{
		"001_t.sql":     "create table t (id int);",
		"002_index.sql": "---- tern: disable-tx ----\ncreate index concurrently t_id on t (id);\ncreate index concurrently t_x on t (nope);\n",
		"003_u.sql":     "create table u (id int);",
	}
	if _, err := client.Push(ctx, load(t, files), nil); err == nil {
		t.Fatal("push succeeded")
	}
	if _, err := client.Resolve(ctx, 3, pgmig.ResolveApplied, nil); !errors.Is(err, pgmig.ErrInvalidBatch) {
		t.Fatalf("resolve of a version that was not interrupted: %v", err)
	}
	// Finished by hand (the second index, corrected) and recorded as applied.
	if _, err := db.Conn(t).Exec(ctx, "create index t_x on t (id)"); err != nil {
		t.Fatal(err)
	}
	res, err := client.Resolve(ctx, 2, pgmig.ResolveApplied, nil)
	if err != nil || len(res.Migrations) != 1 || res.Migrations[0].Outcome != pgmig.OutcomeApplied || res.Version != 2 {
		t.Fatalf("resolve: %+v %v", res, err)
	}
	pushed, err := client.Push(ctx, load(t, files), nil)
	if err != nil || pushed.Applied != 1 || pushed.Version != 3 {
		t.Fatalf("push after resolve: %+v %v", pushed, err)
	}
}

// The batch from Batch carries commit_after, so a psql user who applies it
// in one call is told where to split it.
func TestBatchCommitAfterFromSQL(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ms := load(t, map[string]string{
		"001_mood.sql":  "create type mood as enum ('sad');\ncreate table person (m mood);",
		"002_happy.sql": "---- pgmig: commit-after ----\nalter type mood add value 'happy';",
		"003_use.sql":   "insert into person values ('happy');",
	})
	batch, err := pgmig.Batch(ms)
	if err != nil {
		t.Fatal(err)
	}
	conn := pgtest.NewDB(t).Conn(t)
	_, err = conn.Exec(ctx, "select * from migrate_apply($1::jsonb)", string(batch))
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "55P04" || !strings.Contains(pgErr.Hint, "target_version => 2") {
		t.Fatalf("err = %v (%+v)", err, pgErr)
	}
	// As the hint says: up to the marker, then the rest.
	for _, q := range []string{"select * from migrate_apply($1::jsonb, target_version => 2)", "select * from migrate_apply($1::jsonb)"} {
		if _, err := conn.Exec(ctx, q, string(batch)); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

// A non-transactional migration's down (DROP INDEX CONCURRENTLY) cannot run inside the
// rollback's transaction: Rollback runs it with the non-transactional protocol, between the
// engine's transactional steps; a dry run says which ones; from SQL, migrate_rollback refuses
// such a range up front unless asked to stop before it.
func TestRollbackNonTransactional(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	client := connect(t, db.URL, nil)
	files := map[string]string{
		"001_t.sql":   "create table t (id int);\n---- create above / drop below ----\ndrop table t;\n",
		"002_idx.sql": "---- tern: disable-tx ----\ncreate index concurrently t_id on t (id);\n---- create above / drop below ----\ndrop index concurrently t_id;\n",
		"003_u.sql":   "create table u (id int);\n---- create above / drop below ----\ndrop table u;\n",
	}
	if _, err := client.Push(ctx, load(t, files), nil); err != nil {
		t.Fatal(err)
	}
	conn := db.Conn(t)
	_, err := conn.Exec(ctx, "select * from pgmig.migrate_rollback(0)")
	if pgErr := new(pgconn.PgError); !errors.As(err, &pgErr) || pgErr.Code != "PM005" || !strings.Contains(pgErr.Message, "2 (idx)") {
		t.Fatalf("migrate_rollback over a non-transactional version: %v", err)
	}
	dry, err := client.Rollback(ctx, 0, &pgmig.RollbackOpts{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	got := ""
	for _, m := range dry.Migrations {
		got += fmt.Sprintf("%d:%s ", m.Version, m.Outcome)
	}
	if got != "3:pending_rollback 2:pending_nontx_rollback 1:pending_rollback " {
		t.Errorf("dry run: %s", got)
	}
	var progress []int64
	res, err := client.Rollback(ctx, 0, &pgmig.RollbackOpts{Progress: func(p pgmig.Progress) {
		if p.Done {
			progress = append(progress, p.Version)
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Changed != 3 || res.Version != 0 || fmt.Sprint(progress) != "[3 2 1]" {
		t.Fatalf("rollback: %+v, done %v", res, progress)
	}
	var left int
	if err := conn.QueryRow(ctx, `select (select count(*) from pgmig.history) + (select count(*) from pgmig.nontx_run)
		+ (select count(*) from pg_class where relname in ('t', 'u', 't_id'))`).Scan(&left); err != nil || left != 0 {
		t.Fatalf("left after the rollback: %d (%v)", left, err)
	}
	var audited int
	if err := conn.QueryRow(ctx, "select count(*) from pgmig.audit where action = 'rollback'").Scan(&audited); err != nil || audited != 3 {
		t.Errorf("audit rows: %d (%v)", audited, err)
	}
	// And up again: the files still apply.
	if res, err := client.Push(ctx, load(t, files), nil); err != nil || res.Applied != 3 {
		t.Fatalf("push after the rollback: %+v %v", res, err)
	}
}
