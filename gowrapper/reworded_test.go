package pgmig_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	pgmig "github.com/pgmig/pgmig/gowrapper"
	"github.com/pgmig/pgmig/tests/pgtest"
)

// The engine's signals to clients are data (SQLSTATEs, JSON DETAILs, result
// columns), never message wording: an engine whose every message is reworded
// must give this package exactly the same behaviour (issue: "rewording any
// engine message must not change any client behaviour").
func TestRewordedEngineMessagesChangeNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	script := pgmig.InstallScript()
	reworded := strings.ReplaceAll(script, "MESSAGE = ", "MESSAGE = 'Reworded, in other words: ' || ")
	if n := strings.Count(script, "MESSAGE = "); n < 40 {
		t.Fatalf("only %d messages to reword: has the engine's RAISE style changed?", n)
	}
	db := pgtest.NewEmptyDB(t)
	admin := db.Conn(t)
	if _, err := admin.PgConn().Exec(ctx, reworded).ReadAll(); err != nil {
		t.Fatalf("installing the reworded engine: %v", err)
	}
	var msg string
	if err := admin.QueryRow(ctx, `select coalesce((select 1 from pgmig.migrate_plan('[{"version": 0, "name": "x", "sql": "x"}]')), 0)::text`).Scan(&msg); err == nil ||
		!strings.Contains(err.Error(), "Reworded, in other words") {
		t.Fatalf("the engine is not reworded: %v", err)
	}
	client := connect(t, db.URL, nil)

	// Progress and results.
	var started, done []int64
	ms := load(t, twoMigrations)
	res, err := client.Push(ctx, ms, &pgmig.PushOpts{Progress: func(p pgmig.Progress) {
		if p.Done {
			done = append(done, p.Version)
		} else {
			started = append(started, p.Version)
		}
	}})
	if err != nil || res.Applied != 2 || len(started) != 2 || len(done) != 2 || res.Migrations[0].Duration <= 0 {
		t.Fatalf("push: %+v %v, progress %v %v", res, err, started, done)
	}

	// A failing migration is named, with its file and line.
	files := map[string]string{}
	for k, v := range twoMigrations {
		files[k] = v
	}
	files["003_bad.sql"] = "create table ok3 (id int);\nselect * from no_such_table;\n"
	_, err = client.Push(ctx, load(t, files), nil)
	var merr *pgmig.MigrationError
	if !errors.As(err, &merr) || merr.Version != 3 || merr.File != "003_bad.sql" || merr.Location.Line != 2 || merr.Code != "42P01" {
		t.Fatalf("failing migration: %v (%+v)", err, merr)
	}
	// The same quietly (no callbacks): still named, from the engine's data.
	_, err = client.Push(ctx, load(t, files), &pgmig.PushOpts{})
	if !errors.As(err, &merr) || merr.Version != 3 {
		t.Fatalf("failing migration, quiet: %v", err)
	}

	// Drift, by kind.
	edited := map[string]string{}
	for k, v := range twoMigrations {
		edited[k] = v
	}
	edited["001_create_users.sql"] = "-- edited\n" + twoMigrations["001_create_users.sql"]
	_, err = client.Push(ctx, load(t, edited), nil)
	var derr *pgmig.DriftError
	if !errors.As(err, &derr) || len(derr.Changed) != 1 || derr.Changed[0] != 1 || errors.Is(err, pgmig.ErrOutOfOrder) {
		t.Fatalf("drift: %v (%+v)", err, derr)
	}
	plan, err := client.Plan(ctx, load(t, edited), &pgmig.PlanOpts{ReportDrift: true})
	if err != nil || plan.Drift == nil || len(plan.Drift.Changed) != 1 || plan.Migrations[0].Drift != "changed" {
		t.Fatalf("plan with drift: %+v %v", plan, err)
	}

	// The lock holder: a lock timeout is ErrLockTimeout.
	holder := db.Conn(t)
	tx, err := holder.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "lock table pgmig.history in exclusive mode"); err != nil {
		t.Fatal(err)
	}
	_, err = client.Push(ctx, load(t, files), &pgmig.PushOpts{LockTimeout: 100 * time.Millisecond})
	_ = tx.Rollback(ctx)
	if !errors.Is(err, pgmig.ErrLockTimeout) {
		t.Fatalf("lock timeout: %v", err)
	}

	// Rollback: progress, and an irreversible version refused as such.
	if _, err := client.Rollback(ctx, 1, nil); !errors.Is(err, pgmig.ErrIrreversible) {
		t.Fatalf("rollback past a version without down SQL: %v", err)
	}
	var rolled []int64
	if _, err := client.Rollback(ctx, 0, &pgmig.RollbackOpts{Progress: func(p pgmig.Progress) {
		if !p.Done {
			rolled = append(rolled, p.Version)
		}
	}}); !errors.Is(err, pgmig.ErrIrreversible) {
		t.Fatalf("rollback: %v", err)
	}
	reversible := map[string]string{"001_create_users.sql": twoMigrations["001_create_users.sql"],
		"002_add_email.sql": twoMigrations["002_add_email.sql"] + "---- create above / drop below ----\nalter table users drop column email;\n"}
	if _, err := client.Repair(ctx, load(t, reversible), nil); err != nil {
		t.Fatalf("recording the down SQL of 002: %v", err)
	}
	if _, err := client.Rollback(ctx, 0, &pgmig.RollbackOpts{Progress: func(p pgmig.Progress) {
		if !p.Done {
			rolled = append(rolled, p.Version)
		}
	}}); err != nil || len(rolled) != 2 || rolled[0] != 2 {
		t.Fatalf("rollback: %v, progress %v", err, rolled)
	}
}
