package pgmig_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	pgmig "github.com/pgmig/pgmig/gowrapper"
	"github.com/pgmig/pgmig/tests/pgtest"
)

// fleetMigrations: three migrations; the third writes to table config on
// its line 2, so a database without one fails there.
var fleetMigrations = map[string]string{
	"001_t1.sql": "create table t1 (id int);\ninsert into applied_log values (1);\n",
	"002_t2.sql": "create table t2 (id int);\ninsert into applied_log values (2);\n",
	"003_t3.sql": "insert into applied_log values (3);\ninsert into config values ('v3');\ncreate table t3 (id int);\n",
}

// fleetDBs makes n databases with the engine, a config table and an
// applied_log table the migrations write to (one row per migration run: a
// second run of the same migration on a database would show as a second
// row).
func fleetDBs(t *testing.T, n int) ([]*pgtest.DB, []pgmig.Target) {
	t.Helper()
	dbs := make([]*pgtest.DB, n)
	targets := make([]pgmig.Target, n)
	for i := range dbs {
		dbs[i] = pgtest.NewDB(t)
		conn := dbs[i].Conn(t)
		if _, err := conn.Exec(context.Background(), "create table applied_log (version int); create table config (v text)"); err != nil {
			t.Fatal(err)
		}
		targets[i] = pgmig.Target{Name: dbs[i].Name, DSN: dbs[i].URL}
	}
	return dbs, targets
}

// appliedLog is the versions each migration run recorded in db, in order.
func appliedLog(t *testing.T, db *pgtest.DB) string {
	t.Helper()
	var s string
	err := db.Conn(t).QueryRow(context.Background(),
		"select coalesce(string_agg(version::text, ',' order by version), '') from applied_log").Scan(&s)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestPushFleetOneFailsThenRerunConverges(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ms := loadFiles(t, fleetMigrations)
	dbs, targets := fleetDBs(t, 50)
	const bad = 17
	if _, err := dbs[bad].Conn(t).Exec(ctx, "drop table config"); err != nil {
		t.Fatal(err)
	}
	res, err := pgmig.PushFleet(ctx, targets, ms, &pgmig.FleetOpts{Parallel: 8, ContinueOnError: true})
	if !errors.Is(err, pgmig.ErrFleetFailed) {
		t.Fatalf("PushFleet error = %v, want ErrFleetFailed", err)
	}
	if res.Failed != 1 || res.Skipped != 0 || len(res.Targets) != 50 {
		t.Fatalf("failed %d skipped %d targets %d, want 1, 0, 50", res.Failed, res.Skipped, len(res.Targets))
	}
	for i, r := range res.Targets {
		if r.Target != targets[i].Name {
			t.Fatalf("result %d is for %s, want %s (results in the targets' order)", i, r.Target, targets[i].Name)
		}
		if i == bad {
			var merr *pgmig.MigrationError
			if r.Outcome != pgmig.TargetFailed || !errors.As(r.Err, &merr) || merr.Version != 3 {
				t.Fatalf("bad target: %+v, want failed in version 3", r)
			}
			if r.File != "003_t3.sql" || r.Line != 2 || !strings.Contains(r.Error, `relation "config" does not exist`) {
				t.Fatalf("bad target's error at %s:%d %q, want 003_t3.sql:2 and PostgreSQL's message", r.File, r.Line, r.Error)
			}
			// The failing transaction was rolled back whole: nothing applied there.
			if got := appliedLog(t, dbs[i]); got != "" {
				t.Fatalf("failed target's applied_log = %q, want nothing (one transaction)", got)
			}
			continue
		}
		if r.Outcome != pgmig.TargetApplied || fmt.Sprint(r.Applied) != "[1 2 3]" || r.Version != 3 {
			t.Fatalf("target %d: %+v, want applied [1 2 3]", i, r)
		}
	}

	// The fix, then the same fleet push: only the failed database does work.
	if _, err := dbs[bad].Conn(t).Exec(ctx, "create table config (v text)"); err != nil {
		t.Fatal(err)
	}
	res, err = pgmig.PushFleet(ctx, targets, ms, &pgmig.FleetOpts{Parallel: 8})
	if err != nil {
		t.Fatalf("re-run: %v", err)
	}
	for i, r := range res.Targets {
		want := pgmig.TargetUpToDate
		if i == bad {
			want = pgmig.TargetApplied
		}
		if r.Outcome != want || r.Version != 3 {
			t.Fatalf("re-run target %d: %+v, want %s at version 3", i, r, want)
		}
	}
	for i, db := range dbs {
		if got := appliedLog(t, db); got != "1,2,3" {
			t.Fatalf("database %d ran %q, want each migration once: 1,2,3", i, got)
		}
	}
}

func TestPushFleetStopsAfterFailure(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ms := loadFiles(t, fleetMigrations)
	dbs, targets := fleetDBs(t, 12)
	// A failing canary: nothing else starts, whatever ContinueOnError says.
	if _, err := dbs[1].Conn(t).Exec(ctx, "drop table config"); err != nil {
		t.Fatal(err)
	}
	var started []string
	var mu sync.Mutex
	res, err := pgmig.PushFleet(ctx, targets, ms, &pgmig.FleetOpts{Parallel: 4, Canary: 2, ContinueOnError: true,
		Started: func(tg pgmig.Target) { mu.Lock(); started = append(started, tg.Name); mu.Unlock() }})
	if !errors.Is(err, pgmig.ErrFleetFailed) || res.Failed != 1 || res.Skipped != 10 {
		t.Fatalf("canary failed: err %v, failed %d, skipped %d; want ErrFleetFailed, 1, 10", err, res.Failed, res.Skipped)
	}
	if len(started) != 2 || res.Targets[0].Outcome != pgmig.TargetApplied {
		t.Fatalf("started %v, first %+v: want only the two canaries, the first applied", started, res.Targets[0])
	}
	for _, db := range dbs[2:] {
		if got := appliedLog(t, db); got != "" {
			t.Fatalf("a database after the failed canary ran %q", got)
		}
	}

	// Without canaries and with one target at a time, the first failure
	// stops the rollout: targets after it are skipped, never started.
	if _, err := dbs[1].Conn(t).Exec(ctx, "create table config (v text)"); err != nil {
		t.Fatal(err)
	}
	if _, err := dbs[5].Conn(t).Exec(ctx, "drop table config"); err != nil {
		t.Fatal(err)
	}
	res, err = pgmig.PushFleet(ctx, targets, ms, &pgmig.FleetOpts{Parallel: 1})
	if !errors.Is(err, pgmig.ErrFleetFailed) || res.Failed != 1 || res.Skipped != 6 {
		t.Fatalf("sequential: err %v, failed %d, skipped %d; want ErrFleetFailed, 1, 6", err, res.Failed, res.Skipped)
	}
	for i, r := range res.Targets {
		want := pgmig.TargetApplied
		switch {
		case i == 0:
			want = pgmig.TargetUpToDate
		case i == 5:
			want = pgmig.TargetFailed
		case i > 5:
			want = pgmig.TargetSkipped
		}
		if r.Outcome != want {
			t.Fatalf("sequential target %d: %s, want %s", i, r.Outcome, want)
		}
	}
}

// Two fleet pushes of the same migrations racing over the same databases,
// in opposite orders so that they meet on every one: each migration runs
// exactly once per database.
func TestPushFleetRacing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ms := loadFiles(t, fleetMigrations)
	dbs, targets := fleetDBs(t, 20)
	reversed := make([]pgmig.Target, len(targets))
	for i, tg := range targets {
		reversed[len(targets)-1-i] = tg
	}
	var wg sync.WaitGroup
	results := make([]*pgmig.FleetResult, 2)
	errs := make([]error, 2)
	for k, order := range [][]pgmig.Target{targets, reversed} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[k], errs[k] = pgmig.PushFleet(ctx, order, ms, &pgmig.FleetOpts{Parallel: 6})
		}()
	}
	wg.Wait()
	applied := map[string]int{}
	for k := range results {
		if errs[k] != nil {
			t.Fatalf("fleet push %d: %v", k, errs[k])
		}
		for _, r := range results[k].Targets {
			applied[r.Target] += len(r.Applied)
		}
	}
	for i, db := range dbs {
		if got := appliedLog(t, db); got != "1,2,3" {
			t.Fatalf("database %d ran %q, want each migration once: 1,2,3", i, got)
		}
		if n := applied[targets[i].Name]; n != 3 {
			t.Fatalf("database %d: the two pushes report %d applied migrations together, want 3", i, n)
		}
	}
}

// Targets that cannot be pushed to are reported one by one and do not
// stop the others: a closed port, a database that does not exist, a role
// that does not exist, a database without the engine (installed with
// Install), and a server stopped in the middle of its push.
func TestPushFleetBrokenTargets(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dbs, targets := fleetDBs(t, 6)
	srv := pgtest.Server(t)

	private := pgtest.PrivateLocal(t)
	conn := pgtest.Connect(t, private.URL("postgres"))
	if _, err := conn.Exec(ctx, "create table applied_log (version int)"); err != nil {
		t.Fatal(err)
	}
	if _, err := connect(t, private.URL("postgres"), nil).Install(ctx, nil); err != nil {
		t.Fatal(err)
	}
	ms := loadFiles(t, map[string]string{
		"001_t1.sql": fleetMigrations["001_t1.sql"],
		// Slow only on the private server, so that it can be stopped mid-push.
		"002_slow.sql": fmt.Sprintf("do $$ begin if current_setting('port') = '%d' then perform pg_sleep(30); end if; end $$;\n", private.Port()),
	})
	empty := pgtest.NewEmptyDB(t)
	if _, err := empty.Conn(t).Exec(ctx, "create table applied_log (version int)"); err != nil {
		t.Fatal(err)
	}
	broken := []pgmig.Target{
		{Name: "closed-port", DSN: "postgres://postgres@127.0.0.1:1/postgres?sslmode=disable&connect_timeout=5"},
		{Name: "no-such-database", DSN: srv.ConnString("pgmig_no_such_database")},
		{Name: "no-such-role", DSN: strings.Replace(dbs[0].URL, "postgres@", "pgmig_no_such_role@", 1)},
		{Name: "no-engine", DSN: empty.URL},
		{Name: "stopped-mid-push", DSN: private.URL("postgres")},
	}
	// The private server is stopped once its push is in the slow migration.
	go func() {
		for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); {
			var n int
			err := conn.QueryRow(ctx, "select count(*) from pg_stat_activity where wait_event = 'PgSleep'").Scan(&n)
			if err != nil || n > 0 {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		_ = private.StopImmediate()
	}()
	all := append(append([]pgmig.Target{}, broken...), targets...)
	res, err := pgmig.PushFleet(ctx, all, ms, &pgmig.FleetOpts{Parallel: 4, ContinueOnError: true,
		ConnectTimeout: 5 * time.Second, Config: &pgmig.Config{}})
	if !errors.Is(err, pgmig.ErrFleetFailed) || res.Failed != 5 {
		for _, r := range res.Targets {
			t.Logf("%s: %s %v", r.Target, r.Outcome, r.Err)
		}
		t.Fatalf("err %v, failed %d; want ErrFleetFailed, 5", err, res.Failed)
	}
	want := map[string]func(error) bool{
		"closed-port":      func(e error) bool { return strings.Contains(e.Error(), "connect") },
		"no-such-database": func(e error) bool { return strings.Contains(e.Error(), "does not exist") },
		"no-such-role":     func(e error) bool { return strings.Contains(e.Error(), "pgmig_no_such_role") },
		"no-engine":        func(e error) bool { return errors.Is(e, pgmig.ErrEngineNotInstalled) },
		"stopped-mid-push": func(e error) bool { return errors.Is(e, pgmig.ErrConnectionLost) },
	}
	for i, r := range res.Targets[:len(broken)] {
		if r.Outcome != pgmig.TargetFailed || !want[r.Target](r.Err) {
			t.Fatalf("broken target %d (%s): %s %v", i, r.Target, r.Outcome, r.Err)
		}
	}
	for i, r := range res.Targets[len(broken):] {
		if r.Outcome != pgmig.TargetApplied || appliedLog(t, dbs[i]) != "1" {
			t.Fatalf("healthy target %d: %+v (its log %q)", i, r, appliedLog(t, dbs[i]))
		}
	}

	// With Install, the database without the engine gets it and its migrations.
	res, err = pgmig.PushFleet(ctx, broken[3:4], ms, &pgmig.FleetOpts{Install: true})
	if err != nil || !res.Targets[0].Installed || res.Targets[0].Outcome != pgmig.TargetApplied {
		t.Fatalf("with Install: %v, %+v", err, res.Targets[0])
	}
	if got := appliedLog(t, empty); got != "1" {
		t.Fatalf("installed target ran %q, want 1", got)
	}
}

func TestParseTargets(t *testing.T) {
	t.Parallel()
	env := map[string]string{"PW": "s3cret", "HOST": "db1.internal"}
	in := "# fleet\n\npostgres://app:${PW}@$HOST:5433/shop?sslmode=disable\n  host=/run/pg dbname=crm user=ops password=$PW  \n"
	ts, err := pgmig.ParseTargets(strings.NewReader(in), "fleet.txt", func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if len(ts) != 2 || ts[0].Name != "db1.internal:5433/shop (app)" || ts[1].Name != "socket:/run/pg:5432/crm (ops)" {
		t.Fatalf("targets %+v", ts)
	}
	if !strings.Contains(ts[0].DSN, "s3cret") || strings.Contains(fmt.Sprint(ts[0].Name, ts[1].Name), "s3cret") {
		t.Fatalf("the DSN keeps the secret, the name never shows it: %+v", ts)
	}
	_, err = pgmig.ParseTargets(strings.NewReader("postgres://a@h/db\npostgres://x:topsecret@h:notaport/db\n"), "fleet.txt", nil)
	if err == nil || !strings.HasPrefix(err.Error(), "fleet.txt:2:") || strings.Contains(err.Error(), "topsecret") {
		t.Fatalf("bad line: %v, want fleet.txt:2 without the password", err)
	}
	if got := pgmig.MaskDSN("postgres://u:p%40ss@h/db password='it''s' password=plain"); strings.Contains(got, "p%40ss") || strings.Contains(got, "plain") {
		t.Fatalf("MaskDSN left a password: %s", got)
	}
}

func TestTargetsFromQuery(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dbs, _ := fleetDBs(t, 3)
	catalog := pgtest.NewEmptyDB(t)
	names := []string{dbs[0].Name, dbs[1].Name, dbs[2].URL}
	cc := catalog.Conn(t)
	if _, err := cc.Exec(ctx, "create table tenants (db text, active bool)"); err != nil {
		t.Fatal(err)
	}
	if _, err := cc.Exec(ctx, "insert into tenants values ($1, true), ($2, true), ($3, true), (null, true), ('x', false)",
		names[0], names[1], names[2]); err != nil {
		t.Fatal(err)
	}
	ts, err := pgmig.TargetsFromQuery(ctx, catalog.URL, "select db from tenants where active order by db")
	if err != nil {
		t.Fatal(err)
	}
	if len(ts) != 3 {
		t.Fatalf("targets %+v, want 3 (NULL skipped)", ts)
	}
	ms := loadFiles(t, fleetMigrations)
	if _, err := pgmig.PushFleet(ctx, ts, ms, nil); err != nil {
		t.Fatal(err)
	}
	for _, db := range dbs {
		if got := appliedLog(t, db); got != "1,2,3" {
			t.Fatalf("%s ran %q", db.Name, got)
		}
	}
	// Read-only: a query that writes is refused; so is one with two columns.
	if _, err := pgmig.TargetsFromQuery(ctx, catalog.URL, "insert into tenants values ('y', true) returning db"); err == nil || !strings.Contains(err.Error(), "read-only") {
		t.Fatalf("a writing query: %v", err)
	}
	if _, err := pgmig.TargetsFromQuery(ctx, catalog.URL, "select db, active from tenants"); err == nil || !strings.Contains(err.Error(), "2 columns") {
		t.Fatalf("two columns: %v", err)
	}
}
