package main

import (
	"context"
	"os"
	"time"

	pgmig "github.com/pgmig/pgmig/gowrapper"
)

// The callers besides the Go ones: tern's own CLI as a process, and psql
// running a `pgmig bundle` script, which is one `CALL migrate_run(...)`
// with the batch inline — what an admin GUI, pg_cron or a DBA runs.
const (
	cTernCLI = "tern CLI"       // tern migrate --migrations D --conn-string URL: a process, as users run it
	cBundle  = "psql -f bundle" // psql -X -f release.sql: one CALL migrate_run of the inline batch
)

func (r *runner) ternCLI(ctx context.Context, url, dir string) error {
	return r.command(ctx, r.tern, "migrate", "--migrations", dir, "--conn-string", url)
}

// bundleFile writes the workload's bundle once (before any clock starts:
// a release script is built in CI, run later) and returns its path.
func (w *workload) bundleFile() (string, error) {
	if w.bundle != "" {
		return w.bundle, nil
	}
	ms, err := pgmig.LoadDir(w.dir, nil)
	if err != nil {
		return "", err
	}
	script, err := pgmig.Bundle(ms, nil)
	if err != nil {
		return "", err
	}
	path := w.dir + ".bundle.sql"
	if err := os.WriteFile(path, []byte(script), 0o644); err != nil {
		return "", err
	}
	w.bundle = path
	return path, nil
}

func (r *runner) psqlBundle(ctx context.Context, url string, w *workload) error {
	path, err := w.bundleFile()
	if err != nil {
		return err
	}
	return r.command(ctx, r.psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-f", path)
}

// cliScenario: pgmig's CLI against tern's CLI, both processes started from
// nothing, on n trivial migrations (one insert each), with the physical
// limit and the psql bundle alongside.
func (e *env) cliScenario(ctx context.Context, n int) error {
	w, err := e.workload(trivial, n)
	if err != nil {
		return err
	}
	s := e.report.scenario(scenarioKey(trivial, n, 0, "cli"))
	s.kind, s.n, s.op = trivial, n, "cli"
	contenders := []string{cPhysical, cCLI, cBundle, cTernCLI}
	logf("%s: %d runs", s.title(), e.cfg.runs)
	for r := range e.cfg.runs {
		for _, c := range rotate(contenders, r) {
			d, ok, err := e.timedRun(ctx, s, c, w, func(db string) (time.Duration, error) {
				return e.r.apply(ctx, c, e.cl.url(db), w, 0)
			})
			if err != nil {
				return err
			}
			if ok && e.cfg.verbose {
				logf("  run %d %-14s %v", r+1, c, d.Round(time.Microsecond))
			}
		}
	}
	return nil
}
