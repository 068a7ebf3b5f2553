package pgmig_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	pgmig "github.com/pgmig/pgmig/gowrapper"
	"github.com/pgmig/pgmig/tests/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func load(t *testing.T, files map[string]string) []*pgmig.Migration {
	t.Helper()
	return loadFiles(t, files)
}

func loadFiles(tb testing.TB, files map[string]string) []*pgmig.Migration {
	tb.Helper()
	fsys := fstest.MapFS{}
	for name, body := range files {
		fsys[name] = &fstest.MapFile{Data: []byte(body)}
	}
	ms, err := pgmig.Load(fsys, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return ms
}

func connect(t *testing.T, dsn string, config *pgmig.Config) *pgmig.Client {
	t.Helper()
	c, err := pgmig.Connect(context.Background(), dsn, config)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

var twoMigrations = map[string]string{
	"001_create_users.sql": "create table users (id bigint primary key);\n---- create above / drop below ----\ndrop table users;\n",
	"002_add_email.sql":    "alter table users add column email text;\n",
}

func TestPushAppliesThenNothingPending(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	client := connect(t, db.URL, nil)
	ms := load(t, twoMigrations)

	var progress, done []pgmig.Progress
	res, err := client.Push(ctx, ms, &pgmig.PushOpts{Progress: func(p pgmig.Progress) {
		if p.Done {
			done = append(done, p)
		} else {
			progress = append(progress, p)
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Applied != 2 || res.Version != 2 || res.Prechecked || len(res.Migrations) != 2 {
		t.Fatalf("first push: %+v", res)
	}
	for i, r := range res.Migrations {
		if r.Outcome != pgmig.OutcomeApplied || r.Version != int64(i+1) || r.File != ms[i].File {
			t.Errorf("row %d: %+v", i, r)
		}
	}
	if len(progress) != 2 || progress[0].Version != 1 || progress[0].Index != 1 || progress[0].Total != 2 ||
		progress[1].Name != "add_email" || progress[1].File != "002_add_email.sql" {
		t.Errorf("progress: %+v", progress)
	}
	// Each migration is reported done too, with the duration the server measured.
	if len(done) != 2 || done[0].Version != 1 || done[1].Version != 2 || done[0].File != "001_create_users.sql" ||
		done[0].Duration <= 0 || done[0].Duration != res.Migrations[0].Duration {
		t.Errorf("done: %+v (results %+v)", done, res.Migrations)
	}

	res, err = client.Push(ctx, ms, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Applied != 0 || res.Version != 2 || !res.Prechecked {
		t.Fatalf("second push: %+v", res)
	}
	for _, r := range res.Migrations {
		if r.Outcome != pgmig.OutcomeAlreadyApplied {
			t.Errorf("second push row: %+v", r)
		}
	}

	// Without the precheck the same answer comes from migrate_apply.
	res, err = connect(t, db.URL, &pgmig.Config{DisablePrecheck: true}).Push(ctx, ms, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Applied != 0 || res.Version != 2 || res.Prechecked {
		t.Fatalf("push without precheck: %+v", res)
	}

	st, err := client.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Version != 2 || len(st.History) != 2 || st.InProgress != nil || st.EngineVersion != pgmig.SupportedEngineVersion() {
		t.Fatalf("status: %+v", st)
	}
	if !strings.Contains(st.History[0].Client, "pgmig/") {
		t.Errorf("client info not recorded: %+v", st.History[0])
	}
}

func TestPushTargetAndPlan(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	client := connect(t, db.URL, nil)
	ms := load(t, twoMigrations)

	plan, err := client.Plan(ctx, ms, nil)
	if err != nil {
		t.Fatal(err)
	}
	if plan.Pending != 2 || plan.Version != 0 {
		t.Fatalf("plan: %+v", plan)
	}
	// The engine decides what a target leaves out, for plan as for push.
	plan, err = client.Plan(ctx, ms, &pgmig.PlanOpts{TargetVersion: 1})
	if err != nil {
		t.Fatal(err)
	}
	if plan.Pending != 1 || plan.Migrations[0].Outcome != pgmig.OutcomePending || plan.Migrations[1].Outcome != pgmig.OutcomeBeyondTarget {
		t.Fatalf("plan to target 1: %+v", plan)
	}
	res, err := client.Push(ctx, ms, &pgmig.PushOpts{TargetVersion: 1})
	if err != nil {
		t.Fatal(err)
	}
	if res.Applied != 1 || res.Version != 1 || res.Migrations[1].Outcome != pgmig.OutcomeBeyondTarget {
		t.Fatalf("push to target 1: %+v", res)
	}
	// Pending only above the target: nothing to do.
	res, err = client.Push(ctx, ms, &pgmig.PushOpts{TargetVersion: 1})
	if err != nil || res.Applied != 0 || res.Migrations[1].Outcome != pgmig.OutcomeBeyondTarget {
		t.Fatalf("second push to target 1: %+v %v", res, err)
	}
	res, err = client.Push(ctx, ms, &pgmig.PushOpts{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Applied != 0 || res.Migrations[1].Outcome != pgmig.OutcomePending {
		t.Fatalf("dry run: %+v", res)
	}
	plan, err = client.Plan(ctx, ms, nil)
	if err != nil {
		t.Fatal(err)
	}
	if plan.Pending != 1 || plan.Version != 1 {
		t.Fatalf("plan after target: %+v", plan)
	}
}

func TestPushMigrationError(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	client := connect(t, db.URL, nil)
	if _, err := client.Push(ctx, load(t, twoMigrations), nil); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"003_good.sql": "create table ok (id int);",
		"004_bad.sql":  "\n-- ünïcode comment\ncreate table t (\n    id int,\n    é text nott null\n);\n",
	}
	for k, v := range twoMigrations {
		files[k] = v
	}
	_, err := client.Push(ctx, load(t, files), nil)
	var merr *pgmig.MigrationError
	if !errors.As(err, &merr) {
		t.Fatalf("err = %v, want *MigrationError", err)
	}
	if merr.Version != 4 || merr.Name != "bad" || merr.File != "004_bad.sql" || merr.Code != "42601" {
		t.Errorf("identity: %+v", merr)
	}
	if merr.Location.Line != 5 || merr.Location.Column != 12 || merr.Location.Text != "    é text nott null" {
		t.Errorf("location: %+v", merr.Location)
	}
	if merr.CurrentVersion != 2 {
		t.Errorf("CurrentVersion = %d, want 2", merr.CurrentVersion)
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "42601" {
		t.Errorf("PgError not reachable: %v", err)
	}
	// Nothing of the batch was applied: 003 came before the failure.
	var n int
	if err := db.Conn(t).QueryRow(ctx, "select count(*) from pg_tables where tablename = 'ok'").Scan(&n); err != nil || n != 0 {
		t.Errorf("003 survived the failed batch: n=%d err=%v", n, err)
	}
}

func TestPushRuntimeErrorWithoutPosition(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	_, err := connect(t, db.URL, nil).Push(ctx, load(t, map[string]string{
		"001_div.sql": "select 1/0;",
	}), nil)
	var merr *pgmig.MigrationError
	if !errors.As(err, &merr) || merr.Code != "22012" || merr.Version != 1 || merr.CurrentVersion != 0 {
		t.Fatalf("err = %#v", err)
	}
}

// A caller-supplied connection without pgmig.HandleNotice: no progress, but
// the failing migration is still identified from the error itself.
func TestPushOnOwnConnWithoutNoticeHandler(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	client := pgmig.New(db.Conn(t), nil)
	_, err := client.Push(ctx, load(t, map[string]string{
		"001_a.sql": "create table a (id int);",
		"002_b.sql": "create table b (id int);\nselect * from nope;",
	}), &pgmig.PushOpts{Progress: func(pgmig.Progress) { t.Error("progress without a notice handler") }})
	var merr *pgmig.MigrationError
	if !errors.As(err, &merr) || merr.Version != 2 || merr.Code != "42P01" || merr.Location.Line != 2 || merr.Location.Column != 15 {
		t.Fatalf("err = %v (%+v)", err, merr)
	}
}

func TestPushOnPoolWithNoticeHandler(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	cfg, err := pgxpool.ParseConfig(db.URL)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.OnNotice = pgmig.HandleNotice
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	var got []int64
	res, err := pgmig.NewPool(pool, nil).Push(ctx, load(t, twoMigrations), &pgmig.PushOpts{
		Progress: func(p pgmig.Progress) {
			if !p.Done {
				got = append(got, p.Version)
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Applied != 2 || len(got) != 2 || got[0] != 1 || got[1] != 2 {
		t.Fatalf("res=%+v progress=%v", res, got)
	}
}

func TestPushDrift(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	client := connect(t, db.URL, nil)
	if _, err := client.Push(ctx, load(t, twoMigrations), nil); err != nil {
		t.Fatal(err)
	}
	edited := map[string]string{
		"001_create_users.sql": "create table users (id bigint primary key, name text);",
		"002_add_email.sql":    twoMigrations["002_add_email.sql"],
	}
	for _, config := range []*pgmig.Config{nil, {DisablePrecheck: true}} {
		_, err := connect(t, db.URL, config).Push(ctx, load(t, edited), nil)
		if !errors.Is(err, pgmig.ErrDrift) {
			t.Fatalf("err = %v, want ErrDrift", err)
		}
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "PM002" || !strings.Contains(pgErr.Detail, "1") {
			t.Errorf("PgError: %+v", pgErr)
		}
	}
	if _, err := client.Plan(ctx, load(t, edited), nil); !errors.Is(err, pgmig.ErrDrift) {
		t.Errorf("plan: err = %v, want ErrDrift", err)
	}

	// Every kind at once, with hand-built migrations (a loaded directory
	// has no gaps, so nothing can be "missing" from it).
	mig := func(v int64, sql string) *pgmig.Migration {
		sum := sha256.Sum256([]byte(sql))
		return &pgmig.Migration{Version: v, Name: fmt.Sprint("m", v), SQL: sql, Transactional: true, Checksum: hex.EncodeToString(sum[:])}
	}
	db2 := pgtest.NewDB(t)
	client2 := connect(t, db2.URL, nil)
	if _, err := client2.Push(ctx, []*pgmig.Migration{mig(1, "select 1;"), mig(2, "select 2;"), mig(4, "select 4;")}, nil); err != nil {
		t.Fatal(err)
	}
	_, err := client2.Push(ctx, []*pgmig.Migration{mig(1, "select 'changed';"), mig(3, "select 3;"), mig(4, "select 4;")}, nil)
	var derr *pgmig.DriftError
	if !errors.As(err, &derr) || !errors.Is(err, pgmig.ErrOutOfOrder) {
		t.Fatalf("err = %v, want *DriftError and ErrOutOfOrder", err)
	}
	if fmt.Sprint(derr.Changed, derr.Missing, derr.OutOfOrder) != "[1] [2] [3]" {
		t.Errorf("changed %v missing %v out of order %v", derr.Changed, derr.Missing, derr.OutOfOrder)
	}
}

func TestPushLockTimeout(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	client := connect(t, db.URL, nil)
	ms := load(t, twoMigrations)

	holder := db.Conn(t)
	tx, err := holder.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "lock table pgmig.history in exclusive mode"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = client.Push(ctx, ms, &pgmig.PushOpts{LockTimeout: 200 * time.Millisecond})
	if !errors.Is(err, pgmig.ErrLockTimeout) {
		t.Fatalf("err = %v, want ErrLockTimeout", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("lock timeout took %v", d)
	}
	h, err := client.LockHolder(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if h == nil || h.PID != int(holder.PgConn().PID()) {
		t.Errorf("lock holder = %+v, want pid %d", h, holder.PgConn().PID())
	}
	st, err := client.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.InProgress == nil {
		t.Errorf("status shows nobody in progress")
	}
	// The precheck takes no lock: with nothing pending, push succeeds even now.
	tx.Rollback(ctx)
	if _, err := client.Push(ctx, ms, nil); err != nil {
		t.Fatal(err)
	}
	tx, err = holder.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "lock table pgmig.history in exclusive mode"); err != nil {
		t.Fatal(err)
	}
	res, err := client.Push(ctx, ms, &pgmig.PushOpts{LockTimeout: 100 * time.Millisecond})
	if err != nil || !res.Prechecked {
		t.Fatalf("no-op push while locked: res=%+v err=%v", res, err)
	}
}

// A migrator waiting for the lock gets it when the holder commits, not at
// its next poll: it waits in PostgreSQL's lock queue (LOCK TABLE, granted
// at the holder's COMMIT), which a poller never does. Proved by what the
// server shows, not by timing: while the holder keeps the lock, the waiter
// is seen queued for pgmig.history (an ungranted lock in pg_locks, its
// backend waiting on a Lock event), and it is still queued, not between
// attempts, when the holder commits. How long it then took is logged only.
// The session's lock_timeout (42 s here) is the limit of the whole wait,
// and the migrations run with it again, whatever the queued attempts set.
func TestPushGetsLockAsHolderCommits(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	client := connect(t, db.URL+"&lock_timeout=42s", nil)
	waiter := client.Conn().PgConn().PID()
	files := map[string]string{"003_check.sql": `do $$ begin
		if current_setting('lock_timeout') <> '42s' then
			raise exception 'migrations run with lock_timeout %', current_setting('lock_timeout');
		end if; end $$;`}
	for name, sql := range twoMigrations {
		files[name] = sql
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
	locked := time.Now()
	progress := make(chan time.Time, 1)
	done := make(chan error, 1)
	go func() {
		res, err := client.Push(ctx, load(t, files), &pgmig.PushOpts{Progress: func(pgmig.Progress) {
			select {
			case progress <- time.Now():
			default:
			}
		}})
		if err == nil && res.Applied != 3 {
			err = fmt.Errorf("applied %d migrations, want 3", res.Applied)
		}
		done <- err
	}()

	observer := db.Conn(t)
	queued := func() bool {
		var q bool
		if err := observer.QueryRow(ctx, `select exists (select from pg_locks as l join pg_stat_activity as a using (pid)
			where l.pid = $1 and l.relation = 'pgmig.history'::regclass and not l.granted
			  and a.state = 'active' and a.wait_event_type = 'Lock')`, waiter).Scan(&q); err != nil {
			t.Fatal(err)
		}
		return q
	}
	// Seen queued several times over a few slices (a queued attempt lasts
	// 200 ms, then the next one queues again at once).
	for seen := 0; seen < 5; {
		if queued() {
			seen++
		}
		time.Sleep(50 * time.Millisecond)
		if time.Since(locked) > 20*time.Second {
			t.Fatal("the waiting push was never seen in the lock queue of pgmig.history")
		}
	}
	// Commit right after seeing it queued.
	for !queued() {
		if time.Since(locked) > 20*time.Second {
			t.Fatal("the waiting push left the lock queue")
		}
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	committed := time.Now()
	select {
	case at := <-progress:
		t.Logf("the waiting push started applying %v after the holder committed", at.Sub(committed))
	case err := <-done:
		t.Fatalf("push ended without progress: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("the waiting push never started applying")
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// A push waiting for the lock stops when its context is cancelled, as a
// lost connection (the engine was running: the outcome is reported
// unknown, re-running is safe), and its server session leaves the lock
// queue within a slice (its client is gone) instead of staying queued
// behind the holder; nothing was applied.
func TestPushWaitCancelled(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	holder := db.Conn(t)
	tx, err := holder.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "lock table pgmig.history in exclusive mode"); err != nil {
		t.Fatal(err)
	}
	client := connect(t, db.URL, nil)
	waiter := client.Conn().PgConn().PID()
	pushCtx, cancel := context.WithTimeout(ctx, 700*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = client.Push(pushCtx, load(t, twoMigrations), nil)
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, pgmig.ErrConnectionLost) {
		t.Fatalf("err = %v, want ErrConnectionLost wrapping context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the cancelled push returned after %v", d)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var queued bool
		if err := holder.QueryRow(ctx, `select exists (select from pg_locks where pid = $1 and not granted)`, waiter).Scan(&queued); err != nil {
			t.Fatal(err)
		}
		if !queued {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the cancelled push's session is still queued for the lock")
		}
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if res, err := connect(t, db.URL, nil).Push(ctx, load(t, twoMigrations), nil); err != nil || res.Applied != 2 {
		t.Fatalf("push after the cancelled one: %+v %v", res, err)
	}
}

// A whole push is one statement (CALL migrate_run), so a session's short
// statement_timeout bounds the wait for the lock too: the engine's queued
// slices end before it, and it fails with its own PM003 naming the
// statement_timeout and the holder (never a raw 57014 from a cancelled
// LOCK TABLE), nothing applied; once the holder is gone the same push works.
func TestPushUnderShortStatementTimeout(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	holder := db.Conn(t)
	tx, err := holder.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "lock table pgmig.history in exclusive mode"); err != nil {
		t.Fatal(err)
	}
	ms := load(t, map[string]string{"001_t.sql": "create table t (id int);"})
	client := connect(t, db.URL+"&statement_timeout=1s", nil)
	start := time.Now()
	_, err = client.Push(ctx, ms, nil)
	var pgErr *pgconn.PgError
	errors.As(err, &pgErr)
	if !errors.Is(err, pgmig.ErrLockTimeout) || pgErr == nil || !strings.Contains(pgErr.Message, "statement_timeout") ||
		!strings.Contains(pgErr.Detail, "held by pid") {
		t.Fatalf("err = %v (%+v), want ErrLockTimeout naming statement_timeout and the holder", err, pgErr.Where)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("returned after %v", d)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if res, err := client.Push(ctx, ms, nil); err != nil || res.Applied != 1 {
		t.Fatalf("push after the holder committed: %+v %v", res, err)
	}
}

func TestEngineNotInstalledThenInstall(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewEmptyDB(t)
	client := connect(t, db.URL, nil)
	ms := load(t, twoMigrations)
	for _, config := range []*pgmig.Config{nil, {DisablePrecheck: true}} {
		_, err := connect(t, db.URL, config).Push(ctx, ms, nil)
		if !errors.Is(err, pgmig.ErrEngineNotInstalled) || !strings.Contains(err.Error(), "pgmig install") {
			t.Fatalf("err = %v, want ErrEngineNotInstalled", err)
		}
	}
	if _, err := client.Status(ctx); !errors.Is(err, pgmig.ErrEngineNotInstalled) {
		t.Fatalf("status: err = %v", err)
	}
	res, err := client.Install(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.PreviousVersion != "" || res.Version != pgmig.SupportedEngineVersion() {
		t.Fatalf("install: %+v", res)
	}
	res, err = client.Install(ctx, nil)
	if err != nil || res.PreviousVersion != res.Version {
		t.Fatalf("second install: %+v %v", res, err)
	}
	if _, err := client.Push(ctx, ms, nil); err != nil {
		t.Fatal(err)
	}
}

func TestUnsupportedEngine(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	for _, tc := range []struct{ installed, says string }{
		{"0.0.1", "run `pgmig install`"},
		{"9.9.0", "use a pgmig release matching the engine"},
	} {
		if _, err := db.Conn(t).Exec(ctx, `create or replace function pgmig.engine_version() returns text language sql as $$select '`+tc.installed+`'$$`); err != nil {
			t.Fatal(err)
		}
		for _, config := range []*pgmig.Config{nil, {DisablePrecheck: true}} {
			_, err := connect(t, db.URL, config).Push(ctx, load(t, twoMigrations), nil)
			var verr *pgmig.EngineVersionError
			if !errors.Is(err, pgmig.ErrUnsupportedEngine) || !errors.As(err, &verr) || verr.Installed != tc.installed ||
				!strings.Contains(err.Error(), tc.says) {
				t.Fatalf("err = %v, want ErrUnsupportedEngine saying %q", err, tc.says)
			}
		}
	}
	var n int
	if err := db.Conn(t).QueryRow(ctx, "select count(*) from pgmig.history").Scan(&n); err != nil || n != 0 {
		t.Fatalf("history rows = %d (%v), want 0", n, err)
	}
}

func TestPushNonTransactional(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	files := map[string]string{
		"001_t.sql":     "create table t (id int, v text);\ninsert into t select g, g::text from generate_series(1, 1000) g;",
		"002_index.sql": "---- tern: disable-tx ----\ncreate index concurrently t_id on t (id);\n\ncreate index concurrently t_v on t (v);\n",
		"003_u.sql":     "create table u (id int);",
	}
	var progress []string
	res, err := connect(t, db.URL, nil).Push(ctx, load(t, files), &pgmig.PushOpts{
		Progress: func(p pgmig.Progress) {
			if p.Done {
				return
			}
			progress = append(progress, fmt.Sprintf("%d:%d/%d", p.Version, p.Index, p.Total))
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Applied != 3 || res.Version != 3 || res.Segments != 3 {
		t.Fatalf("%+v", res)
	}
	if got := strings.Join(progress, " "); got != "1:1/3 2:2/3 3:3/3" {
		t.Errorf("progress %s", got)
	}
	conn := db.Conn(t)
	var valid int
	var tx bool
	if err := conn.QueryRow(ctx, "select count(*) from pg_index where indisvalid and indrelid = 't'::regclass").Scan(&valid); err != nil || valid != 2 {
		t.Errorf("valid indexes = %d (%v)", valid, err)
	}
	if err := conn.QueryRow(ctx, "select transactional from pgmig.history where version = 2").Scan(&tx); err != nil || tx {
		t.Errorf("history: transactional = %v (%v)", tx, err)
	}
	// Nothing pending: the precheck answers, no lock, no second connection.
	res, err = connect(t, db.URL, nil).Push(ctx, load(t, files), nil)
	if err != nil || !res.Prechecked {
		t.Fatalf("second push: %+v %v", res, err)
	}
}

func TestPushNonTransactionalFailure(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	client := connect(t, db.URL, nil)
	files := map[string]string{
		"001_t.sql":     "create table t (id int, v text);",
		"002_index.sql": "---- tern: disable-tx ----\ncreate index concurrently t_id on t (id);\ncreate index concurrently t_v on t (v) wher v > '';\n",
		"003_u.sql":     "create table u (id int);",
	}
	_, err := client.Push(ctx, load(t, files), nil)
	var merr *pgmig.MigrationError
	if !errors.As(err, &merr) {
		t.Fatalf("err = %v", err)
	}
	if !merr.NonTransactional || merr.Statement != 2 || merr.Statements != 2 || merr.Applied != 1 || merr.CurrentVersion != 1 ||
		merr.Code != "42601" || merr.Location.Line != 3 || merr.Location.Column != 40 {
		t.Fatalf("nontx=%v stmt=%d/%d applied=%d cur=%d code=%s %+v", merr.NonTransactional, merr.Statement, merr.Statements, merr.Applied, merr.CurrentVersion, merr.Code, merr.Location)
	}
	// Every migrator now refuses until an operator resolves it.
	_, err = client.Push(ctx, load(t, files), nil)
	var pgErr *pgconn.PgError
	if !errors.Is(err, pgmig.ErrInterrupted) || !errors.As(err, &pgErr) || !strings.Contains(pgErr.Detail, "Statements 1 to 1 ran outside a transaction") {
		t.Fatalf("second push: %v (%+v)", err, pgErr)
	}
	conn := db.Conn(t)
	for _, q := range []string{"drop index t_id", "select migrate_resolve(2, 'retry')"} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	files["002_index.sql"] = "---- tern: disable-tx ----\ncreate index concurrently t_id on t (id);\ncreate index concurrently t_v on t (v);\n"
	// The fixed migration was never recorded: it applies from its first
	// statement, then the rest.
	res, err := client.Push(ctx, load(t, files), nil)
	if err != nil || res.Applied != 2 || res.Version != 3 {
		t.Fatalf("after resolve: %+v %v", res, err)
	}
}

func TestSchemaConfig(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	conn := db.Conn(t)
	if _, err := conn.Exec(ctx, "create schema ops"); err != nil {
		t.Fatal(err)
	}
	client := pgmig.New(conn, &pgmig.Config{Schema: "ops"})
	if _, err := client.Install(ctx, nil); err != nil {
		t.Fatal(err)
	}
	var n int
	// migrate_apply(jsonb, ...) and its batch-as-text twin.
	if err := conn.QueryRow(ctx, "select count(*) from pg_proc where proname = 'migrate_apply' and pronamespace = 'ops'::regnamespace").Scan(&n); err != nil || n != 2 {
		t.Fatalf("migrate_apply in ops: %d %v", n, err)
	}
	var setting string
	if err := conn.QueryRow(ctx, "select coalesce(current_setting('pgmig.api_schema', true), '')").Scan(&setting); err != nil || setting != "" {
		t.Errorf("pgmig.api_schema left set: %q %v", setting, err)
	}
	res, err := client.Push(ctx, load(t, twoMigrations), nil)
	if err != nil || res.Applied != 2 {
		t.Fatalf("push via schema ops: %+v %v", res, err)
	}
}

func TestPushMigrationErrorInTemplate(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	ms, err := pgmig.Load(fstest.MapFS{
		"001_a.sql":       {Data: []byte("create table {{.p}}a (id int);\n{{ template \"shared/cols.sql\" . }}\nselect 1;\n")},
		"shared/cols.sql": {Data: []byte("alter table {{.p}}a add column x int;\nalter table {{.p}}a add colum y int;")},
	}, &pgmig.LoadOpts{Data: map[string]any{"p": "app_"}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = connect(t, db.URL, nil).Push(ctx, ms, nil)
	var merr *pgmig.MigrationError
	if !errors.As(err, &merr) {
		t.Fatalf("err = %v", err)
	}
	loc := merr.Location
	if loc.Line != 2 || loc.Column != 1 || !loc.Expanded || loc.ExpandedText != "alter table app_a add colum y int;" || loc.ExpandedColumn != 31 {
		t.Errorf("location: %+v", loc)
	}
}

func TestPushSegments(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	client := connect(t, db.URL, nil)
	files := map[string]string{}
	for i := 1; i <= 5; i++ {
		files[fmt.Sprintf("%03d_t%d.sql", i, i)] = fmt.Sprintf("create table t%d (id int);", i)
	}
	var progress []string
	res, err := client.Push(ctx, load(t, files), &pgmig.PushOpts{
		SegmentSize: 2,
		Progress: func(p pgmig.Progress) {
			if p.Done {
				return
			}
			progress = append(progress, fmt.Sprintf("%d:%d/%d", p.Version, p.Index, p.Total))
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Applied != 5 || res.Segments != 3 || res.Version != 5 || len(res.Migrations) != 5 {
		t.Fatalf("%+v", res)
	}
	if got := strings.Join(progress, " "); got != "1:1/5 2:2/5 3:3/5 4:4/5 5:5/5" {
		t.Errorf("progress %s", got)
	}
}

func TestPushSegmentFailureKeepsEarlierSegments(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	_, err := connect(t, db.URL, nil).Push(ctx, load(t, map[string]string{
		"001_a.sql": "create table a (id int);",
		"002_b.sql": "create table b (id int);",
		"003_c.sql": "create table c (id int);",
		"004_d.sql": "create tabl d (id int);",
	}), &pgmig.PushOpts{SegmentSize: 2})
	var merr *pgmig.MigrationError
	if !errors.As(err, &merr) || merr.Version != 4 || merr.Applied != 2 || merr.CurrentVersion != 2 {
		t.Fatalf("err = %v %+v", err, merr)
	}
}

// A new enum value cannot be used in the transaction that added it: the
// commit-after marker ends the segment there.
func TestPushCommitAfter(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	files := map[string]string{
		"001_mood.sql":  "create type mood as enum ('sad');\ncreate table person (m mood);",
		"002_happy.sql": "alter type mood add value 'happy';",
		"003_use.sql":   "insert into person values ('happy');",
	}
	_, err := connect(t, pgtest.NewDB(t).URL, nil).Push(ctx, load(t, files), nil)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "55P04" {
		t.Fatalf("without the marker: err = %v, want 55P04", err)
	}
	files["002_happy.sql"] = "---- pgmig: commit-after ----\n" + files["002_happy.sql"]
	ms := load(t, files)
	if !ms[1].CommitAfter || ms[0].CommitAfter {
		t.Fatalf("CommitAfter not parsed")
	}
	res, err := connect(t, pgtest.NewDB(t).URL, nil).Push(ctx, ms, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Applied != 3 || res.Segments != 2 {
		t.Fatalf("%+v", res)
	}
}

// Errors inside nested code (a DO block, a function body) come with a
// position relative to that inner text; it still maps to the file.
func TestPushNestedErrorPosition(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, tc := range []struct {
		name, sql string
		line, col int
	}{
		{"do block", "create table a (id int);\ndo $$\nbegin\n    insert into a values (1);\n    selct 1;\nend\n$$;\n", 5, 5},
		{"sql function body", "create function f() returns int language sql as $$\n  select 1 +* 2\n$$;\n", 2, 12},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			db := pgtest.NewDB(t)
			for _, c := range []*pgmig.Client{connect(t, db.URL, nil), pgmig.New(db.Conn(t), nil)} {
				_, err := c.Push(ctx, load(t, map[string]string{"001_a.sql": tc.sql}), nil)
				var merr *pgmig.MigrationError
				if !errors.As(err, &merr) {
					t.Fatalf("err = %v", err)
				}
				if merr.Version != 1 || merr.Location.Line != tc.line || merr.Location.Column != tc.col {
					t.Errorf("got %d:%d (%q), want %d:%d; PgError %+v", merr.Location.Line, merr.Location.Column, merr.Location.Text, tc.line, tc.col, merr.PgError)
				}
			}
		})
	}
}

// While one migrator runs a non-transactional migration, others queue for
// the lock without a snapshot (which would stall its concurrent index
// build) and then find the work done.
func TestPushWaitsForNonTransactional(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	base := map[string]string{
		"001_t.sql":     "create table t (id int);",
		"002_index.sql": "---- tern: disable-tx ----\nselect pg_sleep(1);\ncreate index concurrently t_id on t (id);",
	}
	done := make(chan error, 1)
	go func() {
		_, err := connect(t, db.URL, nil).Push(ctx, load(t, base), nil)
		done <- err
	}()
	conn := db.Conn(t)
	for deadline := time.Now().Add(10 * time.Second); ; {
		var n int
		if err := conn.QueryRow(ctx, "select count(*) from pgmig.nontx_run where state = 'running'").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the non-transactional migration never started")
		}
		time.Sleep(20 * time.Millisecond)
	}

	more := map[string]string{"003_u.sql": "create table u (id int);"}
	for k, v := range base {
		more[k] = v
	}
	var wg sync.WaitGroup
	errs := make([]error, 2)
	results := make([]*pgmig.PushResult, 2)
	wg.Add(2)
	go func() { // pending: 002 (running elsewhere) and 003
		defer wg.Done()
		results[0], errs[0] = connect(t, db.URL, nil).Push(ctx, load(t, more), nil)
	}()
	go func() { // nothing pending, but asks migrate_apply directly
		defer wg.Done()
		results[1], errs[1] = connect(t, db.URL, &pgmig.Config{DisablePrecheck: true}).Push(ctx, load(t, map[string]string{"001_t.sql": base["001_t.sql"]}), nil)
	}()
	wg.Wait()
	if err := <-done; err != nil {
		t.Fatalf("first migrator: %v", err)
	}
	for i, err := range errs {
		if err != nil {
			t.Fatalf("migrator %d: %v", i+2, err)
		}
	}
	if results[0].Applied != 1 || results[0].Version != 3 || results[1].Applied != 0 || !results[1].Ahead {
		t.Errorf("results: %+v / %+v", results[0], results[1])
	}
	var valid bool
	if err := conn.QueryRow(ctx, "select indisvalid from pg_index where indexrelid = 't_id'::regclass").Scan(&valid); err != nil || !valid {
		t.Errorf("index valid = %v (%v)", valid, err)
	}
}

// TestPushWithoutCallbacksIsQuiet: a push with neither Progress nor Notice
// asks the server not to send notices for its transaction (they cost a
// flushed message each), the session's own client_min_messages is back
// afterwards, and a failing migration is still named — by the engine's
// PM010 WARNING — even where its SQL cannot be matched against the error's
// internal query (an error inside a DO block reports the inner statement).
func TestPushWithoutCallbacksIsQuiet(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	cfg, err := pgx.ParseConfig(db.URL)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	codes := map[string]int{}
	cfg.OnNotice = func(c *pgconn.PgConn, n *pgconn.Notice) {
		mu.Lock()
		codes[n.Code]++
		mu.Unlock()
		pgmig.HandleNotice(c, n)
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	client := pgmig.New(conn, nil)
	count := func(code string) int {
		mu.Lock()
		defer mu.Unlock()
		n := codes[code]
		codes[code] = 0
		return n
	}

	files := map[string]string{
		"001_t.sql": "create table t (id int);",
		"002_n.sql": "do $$ begin raise notice 'from migration 2'; end $$;",
		"003_u.sql": "insert into t values (3);",
	}
	if _, err := client.Push(ctx, load(t, files), nil); err != nil {
		t.Fatal(err)
	}
	if n, m := count("PM000"), count("00000"); n != 0 || m != 0 {
		t.Errorf("push without callbacks: %d PM000 notices and %d notices of the migrations reached the client, want none", n, m)
	}
	var level string
	if err := conn.QueryRow(ctx, "show client_min_messages").Scan(&level); err != nil || level != "notice" {
		t.Errorf("client_min_messages after the push = %q (%v), want the session's notice", level, err)
	}

	// With a callback the notices come as before.
	files["004_v.sql"] = "create table v (id int);"
	var seen []int64
	if _, err := client.Push(ctx, load(t, files), &pgmig.PushOpts{Progress: func(p pgmig.Progress) {
		if !p.Done {
			seen = append(seen, p.Version)
		}
	}}); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(seen) != "[4]" || count("PM000") != 2 { // applying and applied
		t.Errorf("progress with a callback: %v", seen)
	}

	// A failure inside a DO block, quiet: named by PM010.
	files["005_bad.sql"] = "insert into t values (5);\ndo $$ begin perform 1/0; end $$;"
	_, err = client.Push(ctx, load(t, files), nil)
	var merr *pgmig.MigrationError
	if !errors.As(err, &merr) || merr.Version != 5 || merr.Code != "22012" || merr.File != "005_bad.sql" {
		t.Fatalf("err = %v, want a MigrationError for version 5 (22012)", err)
	}
	if n := count("PM010"); n != 1 {
		t.Errorf("%d PM010 warnings, want 1", n)
	}
}
