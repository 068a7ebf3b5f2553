package admin_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	pgmig "github.com/pgmig/pgmig/gowrapper"
	"github.com/pgmig/pgmig/tests/pgtest"
)

func batchOf(t *testing.T, ms []*pgmig.Migration) string {
	t.Helper()
	b, err := pgmig.Batch(ms)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// stage calls migrate_stage as a DBA would and returns its outcome.
func stage(t *testing.T, conn *pgx.Conn, batch, label string) (string, error) {
	t.Helper()
	var outcome string
	err := conn.QueryRow(ctx(t), "select outcome from migrate_stage($1::jsonb, $2)", batch, label).Scan(&outcome)
	return outcome, err
}

// runStaged is CALL migrate_run_staged(label) and its result document.
func runStaged(t *testing.T, conn *pgx.Conn, label string) (map[string]any, error) {
	t.Helper()
	var doc []byte
	err := conn.QueryRow(ctx(t), "call migrate_run_staged($1)", label).Scan(&doc)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(doc, &m); err != nil {
		t.Fatal(err)
	}
	return m, nil
}

// staged is migrate_staged() for label: its state and the other columns.
type stagedRow struct {
	State, Error, Detail, AppliedBy, StagedBy string
	Attempts, Applied                         int
	FailedVersion                             *int64
}

func stagedStatus(t *testing.T, conn *pgx.Conn, label string) stagedRow {
	t.Helper()
	var r stagedRow
	var errText, appliedBy *string
	if err := conn.QueryRow(ctx(t), `select state, error, detail, applied_by, staged_by, attempts, applied, failed_version
		from migrate_staged() where label = $1`, label).Scan(&r.State, &errText, &r.Detail, &appliedBy, &r.StagedBy,
		&r.Attempts, &r.Applied, &r.FailedVersion); err != nil {
		t.Fatalf("migrate_staged() for %s: %v", label, err)
	}
	if errText != nil {
		r.Error = *errText
	}
	if appliedBy != nil {
		r.AppliedBy = *appliedBy
	}
	return r
}

// Staging validates as a run would now: label, shape, drift, what a staged
// run could not apply; restaging the same batch is a no-op, another batch
// under the same label an error; racing stagers of one label agree.
func TestStageValidation(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	conn := db.Conn(t)
	ms := loadFiles(t, map[string]string{"001_a.sql": "create table a (id int);\n", "002_b.sql": "create table b (id int);\n"})
	batch := batchOf(t, ms)

	for _, tc := range []struct{ batch, label, code, msg string }{
		{batch, "has space", "PM001", "invalid staged release label 'has space'"},
		{batch, "", "PM001", "invalid staged release label"},
		{batch, "-leading-dash", "PM001", "invalid staged release label"},
		{batch, strings.Repeat("x", 129), "PM001", "invalid staged release label"},
		{"[]", "empty", "PM001", "is empty; nothing was staged"},
		{`[{"version": 1}]`, "bad", "PM001", "invalid batch"},
		{`[{"version": 1, "name": "a", "checksum": "` + ms[0].Checksum + `"}]`, "manifest", "PM001", "carries only their checksum; nothing was staged"},
		{`[{"version": 1, "name": "a", "sql": "vacuum", "transactional": false}]`, "nontx", "PM005", "non-transactional migrations are pending: 1 (a); nothing was staged"},
	} {
		_, err := stage(t, conn, tc.batch, tc.label)
		if pgCode(err) != tc.code || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("stage %q: %v, want %s %q", tc.label, err, tc.code, tc.msg)
		}
	}

	// Eight stagers of one label at once: one stages it, the others find it.
	outcomes := make(chan string, 8)
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := db.Conn(t)
			o, err := stage(t, c, batch, "v1.0.0")
			if err != nil {
				t.Error(err)
			}
			outcomes <- o
		}()
	}
	wg.Wait()
	close(outcomes)
	count := map[string]int{}
	for o := range outcomes {
		count[o]++
	}
	if count["staged"] != 1 || count["already_staged"] != 7 {
		t.Errorf("racing stagers: %v, want 1 staged and 7 already_staged", count)
	}

	_, err := stage(t, conn, batchOf(t, ms[:1]), "v1.0.0")
	if pgCode(err) != "PM021" || !strings.Contains(err.Error(), "staged release v1.0.0 already exists with another batch; nothing was staged") {
		t.Fatalf("restage with another batch: %v, want PM021", err)
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr); !strings.Contains(pgErr.Detail, "2 migrations (versions 1 to 2), history digest "+pgmig.HistoryDigest(ms)) {
		t.Errorf("PM021 detail: %s", pgErr.Detail)
	}

	// Drift: an applied migration edited since.
	if _, err := pgmig.New(conn, nil).Push(ctx(t), ms, nil); err != nil {
		t.Fatal(err)
	}
	edited := loadFiles(t, map[string]string{"001_a.sql": "create table a (id bigint);\n", "002_b.sql": "create table b (id int);\n"})
	if _, err := stage(t, conn, batchOf(t, edited), "edited"); pgCode(err) != "PM002" || !strings.Contains(err.Error(), "nothing was staged") {
		t.Errorf("stage a drifted batch: %v, want PM002", err)
	}
	if n := queryInt(t, conn, "select count(*) from pgmig.staged"); n != 1 {
		t.Errorf("%d staged releases, want 1 (only v1.0.0)", n)
	}
}

// A staged release applies like migrate_run, records who applied what, and
// is done once applied: running it again does nothing, and so does a push.
func TestRunStaged(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	conn := db.Conn(t)
	ms := loadFiles(t, map[string]string{
		"001_a.sql": "create table a (id int);\n---- pgmig: commit-after ----\n",
		"002_b.sql": "create table b (id int);\n---- create above / drop below ----\ndrop table b;\n",
	})
	if _, err := stage(t, conn, batchOf(t, ms), "r1"); err != nil {
		t.Fatal(err)
	}
	if s := stagedStatus(t, conn, "r1"); s.State != "pending" || s.Attempts != 0 {
		t.Fatalf("before the run: %+v", s)
	}
	res, err := runStaged(t, conn, "r1")
	if err != nil {
		t.Fatal(err)
	}
	if res["state"] != "applied" || res["applied"] != 2.0 || res["transactions"] != 2.0 {
		t.Errorf("result %v, want applied 2 in 2 transactions", res)
	}
	checkHistory(t, conn, ms)
	if got := queryString(t, conn, "select string_agg(distinct client_info, ',') from pgmig.history"); !strings.HasPrefix(got, "pgmig staged release r1 (staged by ") {
		t.Errorf("history client_info %q", got)
	}
	s := stagedStatus(t, conn, "r1")
	if s.State != "applied" || s.Applied != 2 || s.Attempts != 1 || s.AppliedBy == "" {
		t.Errorf("after the run: %+v", s)
	}

	res, err = runStaged(t, conn, "r1")
	if err != nil || res["state"] != "applied" || res["applied"] != 0.0 {
		t.Fatalf("second run: %v %v", res, err)
	}
	if s := stagedStatus(t, conn, "r1"); s.Attempts != 1 {
		t.Errorf("a run of an applied release counted as an attempt: %+v", s)
	}
	// Once applied, a release is not applied again, even after an operator
	// rolled part of it back on purpose (a schedule left behind must not undo
	// that).
	if _, err := conn.Exec(ctx(t), "select * from migrate_rollback(1)"); err != nil {
		t.Fatal(err)
	}
	if res, err := runStaged(t, conn, "r1"); err != nil || res["applied"] != 0.0 {
		t.Fatalf("run after a rollback: %v %v", res, err)
	}
	if n := queryInt(t, conn, "select count(*) from pgmig.history"); n != 1 {
		t.Fatalf("%d migrations applied after rollback and rerun, want 1", n)
	}

	_, err = runStaged(t, conn, "nope")
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "PM021" || !strings.Contains(pgErr.Detail, "r1 (applied)") {
		t.Errorf("unknown label: %v (detail %v), want PM021 listing r1", err, pgErr)
	}
	// Inside a transaction block nothing happens (the procedure must commit).
	if _, err := stage(t, conn, batchOf(t, ms[:1]), "r2"); err != nil {
		t.Fatal(err)
	}
	tx, err := conn.Begin(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	_, err = tx.Exec(ctx(t), "call migrate_run_staged('r2')")
	tx.Rollback(ctx(t))
	if pgCode(err) != "2D000" {
		t.Fatalf("inside BEGIN: %v, want 2D000", err)
	}
	if s := stagedStatus(t, conn, "r2"); s.State != "pending" || s.Attempts != 0 {
		t.Errorf("a run inside BEGIN left a trace: %+v", s)
	}
}

// A failing staged run raises the migration's own error (SQLSTATE kept,
// the release and migration named) after the PM010 warning, rolls back its
// transaction (the committed one before it stays), and records the failure
// durably; running it again retries. Checks that stop a run before it
// starts (drift) are recorded the same way.
func TestRunStagedFailure(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	conn := db.Conn(t)
	var warnings []string
	var mu sync.Mutex
	cfg, err := pgx.ParseConfig(db.URL)
	if err != nil {
		t.Fatal(err)
	}
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
		mu.Lock()
		defer mu.Unlock()
		if n.Severity == "WARNING" {
			warnings = append(warnings, n.Code+" "+n.Message)
		}
	}
	runner, err := pgx.ConnectConfig(ctx(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer runner.Close(ctx(t))

	ms := loadFiles(t, map[string]string{
		"001_a.sql":   "create table a (id int);\n---- pgmig: commit-after ----\n",
		"002_b.sql":   "create table b (id int);\n",
		"003_bad.sql": "create table c (id int);\nselect 1/0;\n",
	})
	if _, err := stage(t, conn, batchOf(t, ms), "bad"); err != nil {
		t.Fatal(err)
	}
	_, err = runStaged(t, runner, "bad")
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "22012" ||
		pgErr.Message != "pgmig: staged release bad failed at migration 3 (bad): division by zero" ||
		!strings.Contains(pgErr.Detail, "Its transaction was rolled back; the 1 migration committed earlier by this run stay applied.") {
		t.Fatalf("failing run: %v (%+v)", err, pgErr)
	}
	if len(warnings) != 1 || !strings.HasPrefix(warnings[0], "PM010 pgmig: migration 3 (bad) failed with SQLSTATE 22012") {
		t.Errorf("warnings %q, want one PM010 naming migration 3", warnings)
	}
	if got := queryString(t, conn, "select string_agg(version::text, ',' order by version) from pgmig.history"); got != "1" {
		t.Errorf("history %s, want 1", got)
	}
	s := stagedStatus(t, conn, "bad")
	if s.State != "failed" || s.FailedVersion == nil || *s.FailedVersion != 3 || s.Error != "22012: division by zero" ||
		s.Applied != 1 || s.Attempts != 1 || !strings.Contains(s.Detail, "1 migrations committed earlier by that run stay applied") {
		t.Errorf("recorded failure: %+v", s)
	}
	if _, err := runStaged(t, runner, "bad"); pgCode(err) != "22012" {
		t.Fatalf("retry: %v", err)
	}
	if s := stagedStatus(t, conn, "bad"); s.Attempts != 2 || s.State != "failed" || s.Applied != 1 {
		t.Errorf("after the retry: %+v", s)
	}

	// Drift found before the run starts: recorded too.
	if _, err := stage(t, conn, batchOf(t, loadFiles(t, map[string]string{"001_a.sql": "create table a (id int);\n---- pgmig: commit-after ----\n", "002_b.sql": "create table b (id int);\n"})), "ok"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx(t), "set pgmig.maintenance = 'on'; update pgmig.history set checksum = repeat('0', 64) where version = 1; reset pgmig.maintenance"); err != nil {
		t.Fatal(err)
	}
	_, err = runStaged(t, runner, "ok")
	if !errors.As(err, &pgErr) || pgErr.Code != "PM002" || !strings.HasPrefix(pgErr.Message, "pgmig: staged release ok failed: the batch does not match the applied history (versions 1)") {
		t.Fatalf("drifted run: %v", err)
	}
	if s := stagedStatus(t, conn, "ok"); s.State != "failed" || s.FailedVersion != nil || !strings.HasPrefix(s.Error, "PM002: ") || s.Attempts != 1 {
		t.Errorf("recorded drift: %+v", s)
	}
}

// A run that ends without recording an outcome (its session killed while a
// migration runs) shows as running, then interrupted; nothing of its
// transaction is applied, and running it again applies it.
func TestRunStagedInterrupted(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	conn := db.Conn(t)
	// The migration sleeps as long as sleep_for says: 30 s for the run that is killed, 0 after.
	if _, err := conn.Exec(ctx(t), "create table sleep_for (seconds float); insert into sleep_for values (30)"); err != nil {
		t.Fatal(err)
	}
	if _, err := stage(t, conn, `[{"version": 1, "name": "slow", "sql": "create table slow (id int); select pg_sleep((select seconds from public.sleep_for))"}]`, "slow"); err != nil {
		t.Fatal(err)
	}
	runner := db.Conn(t)
	pid := runner.PgConn().PID()
	done := make(chan error, 1)
	go func() {
		_, err := runner.Exec(ctx(t), "call migrate_run_staged('slow')")
		done <- err
	}()
	deadline := time.Now().Add(30 * time.Second)
	for stagedStatus(t, conn, "slow").State != "running" {
		if time.Now().After(deadline) {
			t.Fatal("the release never showed as running")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(stagedStatus(t, conn, "slow").Detail, fmt.Sprintf("(pid %d)", pid)) {
		t.Errorf("running detail does not name pid %d: %s", pid, stagedStatus(t, conn, "slow").Detail)
	}
	if _, err := conn.Exec(ctx(t), "select pg_terminate_backend($1)", pid); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err == nil {
		t.Fatal("the killed run returned no error")
	}
	for stagedStatus(t, conn, "slow").State != "interrupted" {
		if time.Now().After(deadline) {
			t.Fatalf("after the kill: %+v, want interrupted", stagedStatus(t, conn, "slow"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := queryInt(t, conn, "select count(*) from pgmig.history"); n != 0 {
		t.Fatal("the killed run applied something")
	}
	if _, err := conn.Exec(ctx(t), "update sleep_for set seconds = 0"); err != nil {
		t.Fatal(err)
	}
	if _, err := runStaged(t, conn, "slow"); err != nil {
		t.Fatal(err)
	}
	if s := stagedStatus(t, conn, "slow"); s.State != "applied" || s.Attempts != 2 {
		t.Errorf("after the rerun: %+v", s)
	}
}

// Eight sessions run one staged release while four pushers push the same
// migrations: every migration is applied exactly once, and the release ends
// applied, crediting its runs with exactly what they applied.
func TestRunStagedConcurrent(t *testing.T) {
	t.Parallel()
	const n = 30
	db := pgtest.NewDB(t)
	conn := db.Conn(t)
	ms := loadFiles(t, countingFiles(n))
	if _, err := stage(t, conn, batchOf(t, ms), "race"); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 12)
	for i := 0; i < 12; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := pgx.Connect(ctx(t), db.URL)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close(ctx(t))
			if i < 8 {
				_, err = c.Exec(ctx(t), "call migrate_run_staged('race')")
			} else {
				_, err = pgmig.New(c, nil).Push(ctx(t), ms, nil)
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if got := queryString(t, conn, "select coalesce(string_agg(version || ' ran ' || c || ' times', ', '), 'none') from (select version, count(*) c from runs group by version having count(*) <> 1) x"); got != "none" {
		t.Errorf("migrations not run exactly once: %s", got)
	}
	checkHistory(t, conn, ms)
	byStaged := queryInt(t, conn, "select count(*) from pgmig.history where client_info like 'pgmig staged release race %'")
	s := stagedStatus(t, conn, "race")
	if s.State != "applied" || int64(s.Applied) != byStaged {
		t.Errorf("release %+v; the history credits its runs with %d", s, byStaged)
	}
	t.Logf("staged runs applied %d of %d migrations, pushes the rest", byStaged, n)
}

// docRecipe is the SQL between <!-- name:begin --> and <!-- name:end --> in
// docs/admin-tooling.md, with its code fences removed.
func docRecipe(t *testing.T, name string) string {
	t.Helper()
	doc, err := os.ReadFile("../../docs/admin-tooling.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "<!-- "+name+":begin -->")
	recipe, _, ok2 := strings.Cut(rest, "<!-- "+name+":end -->")
	if !ok || !ok2 {
		t.Fatalf("docs/admin-tooling.md lost its %s markers", name)
	}
	return strings.NewReplacer("```sql", "", "```", "").Replace(recipe)
}

// The documented recipe, run as written: CI may stage but not run, the
// operator may run but not stage, and the record says who did which.
func TestStageAndRunGrants(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	admin := db.Conn(t)
	ci := pgtest.CreateRole(t, "")
	operator := pgtest.CreateRole(t, "")
	recipe := strings.NewReplacer("ci_stager", `"`+ci+`"`, "release_operator", `"`+operator+`"`).
		Replace(docRecipe(t, "stage-grants") + docRecipe(t, "run-grants"))
	if _, err := admin.Exec(ctx(t), recipe); err != nil {
		t.Fatalf("the recipe: %v\n%s", err, recipe)
	}
	asCI := pgtest.Connect(t, db.URLAs(ci, pgtest.RolePassword))
	asOperator := pgtest.Connect(t, db.URLAs(operator, pgtest.RolePassword))
	ms := loadFiles(t, map[string]string{"001_a.sql": "create table public.a (id int);\n"})

	// CI stages, and sees what became of it; it cannot run it, nor migrate.
	if _, err := pgmig.New(asCI, nil).Stage(ctx(t), ms, "v1", nil); err != nil {
		t.Fatalf("CI stages: %v", err)
	}
	if _, err := asCI.Exec(ctx(t), "call migrate_run_staged('v1')"); pgCode(err) != "42501" {
		t.Errorf("CI runs the release: %v, want 42501", err)
	}
	if _, err := asCI.Exec(ctx(t), "call pgmig._run_staged('v1', null, 'text', null)"); pgCode(err) != "42501" {
		t.Errorf("CI runs the release's internals: %v, want 42501", err)
	}
	if _, err := asCI.Exec(ctx(t), "select * from pgmig.migrate_apply($1::jsonb)", batchOf(t, ms)); pgCode(err) != "42501" {
		t.Errorf("CI migrates directly: %v, want 42501", err)
	}
	if _, err := asCI.Exec(ctx(t), "update pgmig.staged set state = 'applied'"); pgCode(err) != "42501" {
		t.Errorf("CI rewrites a release's record: %v, want 42501", err)
	}
	// Writing the table directly forges nothing: who staged it, when, the
	// digest and the state are derived from the row's batch and session.
	if _, err := asCI.Exec(ctx(t), `insert into pgmig.staged (label, batch, digest, migrations, staged_by, state, applied)
		values ('forged', $1::jsonb, repeat('0', 64), 99, 'someone_else', 'applied', 7)`, batchOf(t, ms)); err != nil {
		t.Fatalf("CI inserts directly: %v", err)
	}
	if got := queryString(t, admin, "select concat_ws(' ', staged_by, state, applied, migrations, digest) from pgmig.staged where label = 'forged'"); got != ci+" pending 0 1 "+pgmig.HistoryDigest(ms) {
		t.Errorf("a direct insert kept forged columns: %s", got)
	}

	// The operator runs it; it cannot stage, nor change what was staged.
	if _, err := asOperator.Exec(ctx(t), `update pgmig.staged set batch = '[]' where label = 'v1'`); pgCode(err) != "PM021" {
		t.Errorf("operator rewrites a staged batch: %v, want PM021", err)
	}
	if _, err := pgmig.New(asOperator, nil).Stage(ctx(t), ms, "v2", nil); pgCode(err) != "42501" {
		t.Errorf("operator stages: %v, want 42501", err)
	}
	if _, err := runStaged(t, asOperator, "v1"); err != nil {
		t.Fatalf("operator runs: %v", err)
	}
	releases, err := pgmig.New(asCI, nil).StagedReleases(ctx(t))
	if err != nil || len(releases) != 2 || releases[1].Label != "v1" {
		t.Fatalf("CI lists releases: %v %v", releases, err)
	}
	r := releases[1]
	if r.State != "applied" || r.StagedBy != ci || r.AppliedBy != operator || r.Applied != 1 {
		t.Errorf("release record %+v, want staged by %s, applied by %s", r, ci, operator)
	}
	if got := queryString(t, admin, "select applied_by from pgmig.history"); got != operator {
		t.Errorf("history applied_by %s, want %s", got, operator)
	}
}
