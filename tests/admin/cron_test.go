package admin_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	pgmig "github.com/pgmig/pgmig/gowrapper"
	"github.com/pgmig/pgmig/tests/pgtest"
)

// requirePgCron fails the test (never skips: CI installs it) unless the
// PostgreSQL server binaries the private clusters use have pg_cron.
func requirePgCron(t *testing.T) {
	t.Helper()
	pgConfig := "pg_config"
	if dir := pgtest.Server(t).BinDir(); dir != "" {
		pgConfig = filepath.Join(dir, "pg_config")
	}
	out, err := exec.Command(pgConfig, "--pkglibdir", "--sharedir", "--version").Output()
	if err != nil {
		t.Fatalf("pg_cron tests: running %s to find the server's library directory: %v (install the PostgreSQL server development files, or put pg_config on PATH)", pgConfig, err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 3 {
		t.Fatalf("pg_config printed %q", out)
	}
	major := strings.Split(strings.TrimPrefix(lines[2], "PostgreSQL "), ".")[0]
	for _, f := range []string{filepath.Join(lines[0], "pg_cron.so"), filepath.Join(lines[1], "extension", "pg_cron.control")} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("these tests need pg_cron for the PostgreSQL %s server they start (%s is missing): apt-get install postgresql-%s-cron", major, f, major)
		}
	}
}

// buildCLI builds the pgmig command into dir: the race below is with the
// real CLI, as an operator or a CI job would run it.
func buildCLI(t testing.TB, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "pgmig")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/pgmig/pgmig/cmd/pgmig").CombinedOutput()
	if err != nil {
		t.Fatalf("building pgmig: %v\n%s", err, out)
	}
	return bin
}

// A real pg_cron, in both of its modes (a libpq connection per job, the
// default; or background workers), on a cluster of its own started with
// shared_preload_libraries = 'pg_cron': a staged release scheduled into
// another database with cron.schedule_in_database is applied exactly once
// while `pgmig push` processes race it; a failing staged release scheduled
// with cron.schedule fails the job (cron.job_run_details) and is recorded
// as failed, naming the migration, in migrate_staged().
func TestPgCron(t *testing.T) {
	t.Parallel()
	requirePgCron(t)
	cli := buildCLI(t, t.TempDir())
	for _, mode := range []struct {
		name     string
		settings []string
	}{
		{"libpq", nil},
		{"background_workers", []string{"cron.use_background_workers=on"}},
	} {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			testPgCron(t, cli, mode.name, mode.settings...)
		})
	}
}

func testPgCron(t *testing.T, cli, mode string, settings ...string) {
	settings = append([]string{"shared_preload_libraries=pg_cron", "cron.database_name=postgres",
		// the libpq mode's jobs connect here; the cluster listens on 127.0.0.1 only
		"cron.host=127.0.0.1"}, settings...)
	cronURL := pgtest.PrivateCluster(t, settings...)
	cronDB := pgtest.Connect(t, cronURL)
	for _, sql := range []string{"create extension pg_cron", "create database app"} {
		if _, err := cronDB.Exec(ctx(t), sql); err != nil {
			t.Fatal(err)
		}
	}
	appURL := strings.Replace(cronURL, "/postgres?", "/app?", 1)
	app := pgtest.Connect(t, appURL)
	for _, c := range []*pgx.Conn{app, cronDB} {
		if _, err := pgmig.New(c, nil).Install(ctx(t), nil); err != nil {
			t.Fatal(err)
		}
	}

	// The release: 12 migrations counting their own runs, a slow one ending
	// a transaction in the middle, so that the job and the pushes interleave.
	dir := t.TempDir()
	files := countingFiles(12)
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ms := loadFiles(t, files)
	if _, err := pgmig.New(app, nil).Stage(ctx(t), ms, "v1.0.0", nil); err != nil {
		t.Fatal(err)
	}
	bad := loadFiles(t, map[string]string{"001_a.sql": "create table a (id int);\n", "002_bad.sql": "select 1/0;\n"})
	if _, err := pgmig.New(cronDB, nil).Stage(ctx(t), bad, "bad", nil); err != nil {
		t.Fatal(err)
	}
	// As in docs/admin-tooling.md.
	if _, err := cronDB.Exec(ctx(t), `select cron.schedule_in_database('pgmig-v1.0.0', '* * * * *', $$CALL migrate_run_staged('v1.0.0')$$, 'app')`); err != nil {
		t.Fatal(err)
	}
	if _, err := cronDB.Exec(ctx(t), `select cron.schedule('pgmig-bad', '* * * * *', $$CALL migrate_run_staged('bad')$$)`); err != nil {
		t.Fatal(err)
	}

	// pg_cron starts jobs at the top of the minute: from just after it (so
	// that the job usually gets the lock first and the pushes catch it
	// between its transactions), pushers run `pgmig push` of the same
	// migrations until the job has run.
	var wait float64
	if err := cronDB.QueryRow(ctx(t), "select extract(epoch from date_trunc('minute', now()) + interval '1 minute' - now())").Scan(&wait); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Duration(wait*float64(time.Second)) + 150*time.Millisecond)
	jobDone := make(chan struct{})
	var wg sync.WaitGroup
	var pushes sync.Map
	for i := 0; i < 3; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-jobDone:
					return
				default:
				}
				cmd := exec.Command(cli, "push", "--dir", dir, "--quiet")
				cmd.Env = append(os.Environ(), "DATABASE_URL="+appURL)
				var stderr bytes.Buffer
				cmd.Stderr = &stderr
				if err := cmd.Run(); err != nil {
					t.Errorf("pgmig push: %v\n%s", err, stderr.String())
					return
				}
				pushes.Store(fmt.Sprint(i, n), true)
			}
		}()
	}

	type run struct {
		status, message string
		took            time.Duration
	}
	runs := map[string]run{}
	deadline := time.Now().Add(100 * time.Second)
	for len(runs) < 2 {
		if time.Now().After(deadline) {
			close(jobDone)
			wg.Wait()
			t.Fatalf("pg_cron ran %d of the 2 jobs within 100 s: %v", len(runs), runs)
		}
		time.Sleep(200 * time.Millisecond)
		rows, err := cronDB.Query(ctx(t), `select j.jobname, d.status, coalesce(d.return_message, ''),
			(extract(epoch from d.end_time - d.start_time) * 1e6)::bigint
			from cron.job_run_details d join cron.job j using (jobid) where d.status in ('succeeded', 'failed')`)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var name string
			var r run
			var us int64
			if err := rows.Scan(&name, &r.status, &r.message, &us); err != nil {
				t.Fatal(err)
			}
			r.took = time.Duration(us) * time.Microsecond
			runs[name] = r
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
	}
	close(jobDone)
	wg.Wait()
	if _, err := cronDB.Exec(ctx(t), "select cron.unschedule('pgmig-v1.0.0'), cron.unschedule('pgmig-bad')"); err != nil {
		t.Fatal(err)
	}

	// The release: applied exactly once, whoever applied what.
	if r := runs["pgmig-v1.0.0"]; r.status != "succeeded" {
		t.Errorf("job pgmig-v1.0.0: %s %s", r.status, r.message)
	}
	if got := queryString(t, app, "select coalesce(string_agg(version || ' ran ' || c || ' times', ', '), 'none') from (select version, count(*) c from runs group by version having count(*) <> 1) x"); got != "none" {
		t.Errorf("migrations not run exactly once: %s", got)
	}
	checkHistory(t, app, ms)
	byJob := queryInt(t, app, "select count(*) from pgmig.history where client_info like 'pgmig staged release v1.0.0 %'")
	s := stagedStatus(t, app, "v1.0.0")
	if s.State != "applied" || int64(s.Applied) != byJob || s.Attempts != 1 {
		t.Errorf("release v1.0.0: %+v; the history credits the job with %d", s, byJob)
	}
	n := 0
	pushes.Range(func(any, any) bool { n++; return true })
	t.Logf("pg_cron (%s): the job ran %v and applied %d of the %d migrations (versions %s); %d pgmig push runs raced it",
		mode, runs["pgmig-v1.0.0"].took.Round(time.Millisecond), byJob, len(ms),
		queryString(t, app, "select coalesce(string_agg(version::text, ',' order by version), 'none') from pgmig.history where client_info like 'pgmig staged release v1.0.0 %'"), n)

	// The failing release: the job failed with the error naming it, and the
	// release records it.
	r := runs["pgmig-bad"]
	if r.status != "failed" || !strings.Contains(r.message, "pgmig: staged release bad failed at migration 2 (bad): division by zero") {
		t.Errorf("job pgmig-bad: %s %q, want failed naming migration 2", r.status, r.message)
	}
	s = stagedStatus(t, cronDB, "bad")
	if s.State != "failed" || s.FailedVersion == nil || *s.FailedVersion != 2 || s.Error != "22012: division by zero" {
		t.Errorf("release bad: %+v", s)
	}
	if n := queryInt(t, cronDB, "select count(*) from pgmig.history"); n != 0 {
		t.Errorf("the failed release applied %d migrations (one transaction: want none)", n)
	}
}
