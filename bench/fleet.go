package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// The fleet workload (-workloads fleet): the same realistic migrations
// pushed to many databases of one server, by `pgmig push --targets FILE
// --parallel P` (the real CLI, one process for the whole fleet) and by
// sequential shell loops of one `pgmig push` or one `tern migrate` process
// per database. Every run gets freshly created databases; the clock runs
// from the command's start to its exit.

// fleetConfig is the fleet workload's part of the configuration.
type fleetConfig struct {
	dbs       int   // databases of the fleet
	n         int   // realistic migrations pushed to each
	runs      int   // runs per contender, each on fresh databases
	parallels []int // --parallel values of the pgmig fleet push
	plot      string
	render    string // a saved run to render again instead of running
}

const (
	fleetLoopPgmig = "pgmig loop" // bash: for url ...; do pgmig push --database "$url" --quiet; done
	fleetLoopTern  = "tern loop"  // bash: for url ...; do tern migrate --conn-string "$url"; done
	fleetPrefix    = "pgmig --parallel "
)

func fleetParallel(p int) string { return fmt.Sprintf("%s%d", fleetPrefix, p) }

// fleetSample is one timed run of a fleet contender.
type fleetSample struct {
	wall time.Duration
	// CPU time over the run: the client processes (the pgmig process, or
	// the shell and every process it started, from their rusage), the
	// server (the postmaster, its live children and the children it
	// reaped, from /proc), and the whole machine (/proc/stat, all CPUs,
	// whoever used them).
	client, server, machine time.Duration
	// walSyncs is the server's WAL fsyncs during the run (pg_stat_wal;
	// -1 when the server has no such view).
	walSyncs int64
}

// fleetResult is the fleet section's data.
type fleetResult struct {
	cfg      fleetConfig
	order    []string
	samples  map[string][]fleetSample
	failures map[string][]string
	// commands are the exact commands timed, with placeholders.
	commands map[string]string
	// Measured once: a round trip (select 1) and a round trip that commits
	// a transaction with an xid (select txid_current(): a WAL flush), on
	// one open connection; the cost of creating and dropping a database.
	roundTrip, commitTrip time.Duration
	create, drop          time.Duration
	strategy              string
	loadBefore            string
	loadAfter             string
	started               time.Time
	elapsed               time.Duration
	cores                 int
}

func (f *fleetResult) add(c string, s fleetSample) {
	f.touch(c)
	f.samples[c] = append(f.samples[c], s)
}

func (f *fleetResult) fail(c string, err error) {
	f.touch(c)
	f.failures[c] = append(f.failures[c], firstLine(err))
}

func (f *fleetResult) touch(c string) {
	for _, o := range f.order {
		if o == c {
			return
		}
	}
	f.order = append(f.order, c)
}

// median is the run of median wall time; for an even count, the mean of
// the two middle runs (every field).
func (f *fleetResult) median(c string) (fleetSample, bool) {
	xs := append([]fleetSample(nil), f.samples[c]...)
	if len(xs) == 0 {
		return fleetSample{}, false
	}
	sort.Slice(xs, func(i, j int) bool { return xs[i].wall < xs[j].wall })
	m := xs[len(xs)/2]
	if len(xs)%2 == 0 {
		a := xs[len(xs)/2-1]
		m = fleetSample{wall: (a.wall + m.wall) / 2, client: (a.client + m.client) / 2, server: (a.server + m.server) / 2,
			machine: (a.machine + m.machine) / 2, walSyncs: (a.walSyncs + m.walSyncs) / 2}
		if a.walSyncs < 0 {
			m.walSyncs = -1
		}
	}
	return m, true
}

func (f *fleetResult) spread(c string) (lo, hi time.Duration) {
	for i, s := range f.samples[c] {
		if i == 0 || s.wall < lo {
			lo = s.wall
		}
		if s.wall > hi {
			hi = s.wall
		}
	}
	return lo, hi
}

// fleetContenders in the order of the first run.
func (c fleetConfig) contenders() []string {
	var cs []string
	for _, p := range c.parallels {
		cs = append(cs, fleetParallel(p))
	}
	return append(cs, fleetLoopPgmig, fleetLoopTern)
}

// fleetScenario runs the fleet workload and fills e.fleet.
func (e *env) fleetScenario(ctx context.Context, fc fleetConfig) error {
	fr := &fleetResult{cfg: fc, samples: map[string][]fleetSample{}, failures: map[string][]string{},
		commands: map[string]string{}, started: time.Now(), loadBefore: loadavg(), cores: numCPU()}
	e.fleet = fr
	w, err := e.workload(realistic, fc.n)
	if err != nil {
		return err
	}
	if e.r.tern == "" {
		logf("building the tern CLI")
		if e.r.tern, err = buildTern(); err != nil {
			return err
		}
	}
	if err := e.fleetProbe(ctx, fr); err != nil {
		return err
	}
	pm, err := postmasterPID(ctx, e.admin)
	if err != nil {
		return err
	}
	dir := filepath.Join(e.tmp, "fleet")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	cs := fc.contenders()
	logf("fleet: %d databases × %d realistic migrations, %d runs of %s", fc.dbs, fc.n, fc.runs, strings.Join(cs, ", "))
	for r := range fc.runs {
		for _, c := range rotate(cs, r) {
			s, err := e.fleetRun(ctx, fr, c, w, dir, pm)
			if err != nil {
				if errors.Is(err, errSetup) {
					return err
				}
				fr.fail(c, err)
				logf("  run %d %-20s FAILED: %v", r+1, c, firstLine(err))
				continue
			}
			fr.add(c, s)
			logf("  run %d %-20s %8s  client CPU %7s  server CPU %7s  machine CPU %7s  WAL fsyncs %d", r+1, c,
				fmtDur(s.wall), fmtDur(s.client), fmtDur(s.server), fmtDur(s.machine), s.walSyncs)
		}
	}
	fr.loadAfter = loadavg()
	fr.elapsed = time.Since(fr.started)
	return nil
}

var errSetup = errors.New("fleet setup")

// fleetProbe measures the inputs of the model that no run shows directly:
// a round trip, a committing round trip (the WAL flush), and creating and
// dropping one database.
func (e *env) fleetProbe(ctx context.Context, fr *fleetResult) error {
	var v int
	if err := e.admin.QueryRow(ctx, "select current_setting('server_version_num')::int").Scan(&v); err != nil {
		return err
	}
	fr.strategy = "`WAL_LOG`, PostgreSQL's default"
	if v < 150000 {
		fr.strategy = "a file copy, the only strategy before PostgreSQL 15"
	}
	conn, err := pgx.Connect(ctx, e.cl.url("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	med := func(q string) (time.Duration, error) {
		var ds []time.Duration
		for range 101 {
			start := time.Now()
			if _, err := conn.Exec(ctx, q, pgx.QueryExecModeSimpleProtocol); err != nil {
				return 0, err
			}
			ds = append(ds, time.Since(start))
		}
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		return ds[len(ds)/2], nil
	}
	if fr.roundTrip, err = med("select 1"); err != nil {
		return err
	}
	// A one-row insert into a table of its own: a commit that has written
	// WAL, so it waits for the flush (synchronous_commit on).
	if _, err := conn.Exec(ctx, "create table bench_flush_probe (x int)"); err != nil {
		return err
	}
	defer conn.Exec(ctx, "drop table bench_flush_probe")
	if fr.commitTrip, err = med("insert into bench_flush_probe values (1)"); err != nil {
		return err
	}
	logf("fleet: round trip %s, committing round trip (WAL flush) %s", fmtDur(fr.roundTrip), fmtDur(fr.commitTrip))
	return nil
}

// fleetRun is one run of contender c on fc.dbs fresh databases.
func (e *env) fleetRun(ctx context.Context, fr *fleetResult, c string, w *workload, dir string, pm int) (fleetSample, error) {
	fc := fr.cfg
	e.seq++
	names := make([]string, fc.dbs)
	for i := range names {
		names[i] = fmt.Sprintf("fleet_%d_%03d", e.seq, i+1)
	}
	start := time.Now()
	if err := e.eachDB(ctx, names, 4, "create database %s template "+templateDB); err != nil {
		return fleetSample{}, fmt.Errorf("%w: %v", errSetup, err)
	}
	if fr.create == 0 {
		fr.create = time.Since(start) / time.Duration(len(names))
		logf("fleet: creating the databases from the template: %s per database (4 at once)", fmtDur(fr.create))
	}
	defer func() {
		start := time.Now()
		if err := e.eachDB(ctx, names, 8, "drop database if exists %s with (force)"); err != nil {
			logf("dropping the fleet's databases: %v", err)
		}
		if fr.drop == 0 {
			fr.drop = time.Since(start) / time.Duration(len(names))
			logf("fleet: dropping them: %s per database (8 at once)", fmtDur(fr.drop))
		}
	}()
	targets := filepath.Join(dir, "targets.txt")
	var b strings.Builder
	for _, n := range names {
		b.WriteString(e.cl.url(n) + "\n")
	}
	if err := os.WriteFile(targets, []byte(b.String()), 0o644); err != nil {
		return fleetSample{}, err
	}
	cmd, shown := e.fleetCommand(c, targets, w.dir, dir)
	fr.commands[c] = shown
	// No run pays for the previous one's (or the creation's) dirty buffers.
	if _, err := e.admin.Exec(ctx, "checkpoint"); err != nil {
		return fleetSample{}, fmt.Errorf("%w: %v", errSetup, err)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// The setup's backends must have exited (and been reaped) first.
	waitIdle(ctx, e.admin)
	wal0 := walSyncs(ctx, e.admin)
	srv0, mach0 := serverCPU(pm), machineCPU()
	t0 := time.Now()
	err := cmd.Run()
	wall := time.Since(t0)
	// The last backends exit after their clients: wait until the server
	// has only the benchmark's own connection before reading its CPU time.
	waitIdle(ctx, e.admin)
	srv1, mach1 := serverCPU(pm), machineCPU()
	wal1 := walSyncs(ctx, e.admin)
	if err != nil {
		return fleetSample{}, fmt.Errorf("%s: %w\n%s", c, err, tail(out.String(), 1500))
	}
	s := fleetSample{wall: wall, server: srv1 - srv0, machine: mach1 - mach0, walSyncs: -1}
	if ps := cmd.ProcessState; ps != nil {
		s.client = ps.UserTime() + ps.SystemTime()
	}
	if wal0 >= 0 && wal1 >= 0 {
		s.walSyncs = wal1 - wal0
	}
	if err := e.verifyFleet(ctx, names, w); err != nil {
		return fleetSample{}, fmt.Errorf("%s: %w", c, err)
	}
	return s, nil
}

// fleetCommand is contender c's command, and how the report shows it.
func (e *env) fleetCommand(c, targets, migrations, dir string) (*exec.Cmd, string) {
	var cmd *exec.Cmd
	var shown string
	switch {
	case strings.HasPrefix(c, fleetPrefix):
		p := strings.TrimPrefix(c, fleetPrefix)
		cmd = exec.Command(e.r.cli, "push", "--dir", migrations, "--targets", targets, "--parallel", p)
		shown = "pgmig push --dir migrations --targets targets.txt --parallel " + p
	case c == fleetLoopPgmig:
		cmd = exec.Command("bash", "-c", `for url in $(cat "$1"); do "$2" push --dir "$3" --database "$url" --quiet || exit 1; done`,
			"bash", targets, e.r.cli, migrations)
		shown = `for url in $(cat targets.txt); do pgmig push --dir migrations --database "$url" --quiet || exit 1; done`
	case c == fleetLoopTern:
		cmd = exec.Command("bash", "-c", `for url in $(cat "$1"); do "$2" migrate --migrations "$3" --conn-string "$url" || exit 1; done`,
			"bash", targets, e.r.tern, migrations)
		shown = `for url in $(cat targets.txt); do tern migrate --migrations migrations --conn-string "$url" || exit 1; done`
	default:
		panic("unknown fleet contender " + c)
	}
	// In a directory without pgmig.conf or tern.conf, without our PG*
	// variables (libpq's would override nothing here, but keep it clean).
	cmd.Dir = dir
	cmd.Env = cleanEnv()
	return cmd, shown
}

func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") && !strings.HasPrefix(kv, "DATABASE_URL=") {
			env = append(env, kv)
		}
	}
	return env
}

// eachDB runs the statement format (with %s for the database's name) for
// every database of names, conns at a time: creating and dropping
// databases is not timed, and in parallel their WAL flushes and the
// checkpoints that DROP DATABASE waits for are shared.
func (e *env) eachDB(ctx context.Context, names []string, conns int, format string) error {
	jobs := make(chan string)
	errs := make(chan error, conns)
	var wg sync.WaitGroup
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := pgx.Connect(ctx, e.cl.url("postgres"))
			if err != nil {
				errs <- err
				for range jobs {
				}
				return
			}
			defer conn.Close(ctx)
			var first error
			for n := range jobs {
				if _, err := conn.Exec(ctx, fmt.Sprintf(format, n)); err != nil && first == nil {
					first = fmt.Errorf("%s: %w", fmt.Sprintf(format, n), err)
				}
			}
			if first != nil {
				errs <- first
			}
		}()
	}
	for _, n := range names {
		jobs <- n
	}
	close(jobs)
	wg.Wait()
	close(errs)
	return <-errs
}

// verifyFleet checks every database of the run: all the workload's tables.
func (e *env) verifyFleet(ctx context.Context, names []string, w *workload) error {
	jobs := make(chan string)
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range jobs {
				if err := e.verify(ctx, n, w); err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("database %s: %w", n, err))
					mu.Unlock()
				}
			}
		}()
	}
	for _, n := range names {
		jobs <- n
	}
	close(jobs)
	wg.Wait()
	if len(errs) > 0 {
		return fmt.Errorf("%d of %d databases wrong, first: %w", len(errs), len(names), errs[0])
	}
	return nil
}

func waitIdle(ctx context.Context, admin *pgx.Conn) {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		var n int
		if err := admin.QueryRow(ctx, "select count(*) from pg_stat_activity where backend_type = 'client backend' and pid <> pg_backend_pid()").Scan(&n); err != nil || n == 0 {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// walSyncs is pg_stat_wal.wal_sync (PostgreSQL 14+), -1 without it.
func walSyncs(ctx context.Context, admin *pgx.Conn) int64 {
	// Statistics reach the shared view when a backend is idle or exits;
	// pg_stat_clear_snapshot makes this session read them afresh.
	var n int64
	if err := admin.QueryRow(ctx, "select wal_sync from pg_stat_wal, pg_stat_clear_snapshot()").Scan(&n); err != nil {
		return -1
	}
	return n
}

// buildTern builds tern's own CLI from its Go module at the version the
// benchmark links as a library (go.mod), like the adopt tests build the
// other tools: `go install module@version` outside this module, into
// $PGMIG_CACHE/tools/tern@<version>, once per machine.
func buildTern() (string, error) {
	version := ternVersion()
	cache, err := cacheDir()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(cache, "tools", "tern@"+version)
	bin := filepath.Join(dir, "tern")
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(dir, "build-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	cmd := exec.Command("go", "install", "github.com/jackc/tern/v2@"+version)
	cmd.Dir = tmp
	cmd.Env = append(os.Environ(), "GOBIN="+tmp, "CGO_ENABLED=0", "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building tern %s (%s): %v\n%s", version, strings.Join(cmd.Args, " "), err, out)
	}
	return bin, os.Rename(filepath.Join(tmp, "tern"), bin)
}
