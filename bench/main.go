// Command bench compares pgmig (library and CLI) with tern and with the
// physical limit (the whole workload's SQL in one transaction, one round
// trip) on generated workloads, side by side on one throwaway PostgreSQL
// cluster with default durability settings, and writes the results into
// BENCHMARKS.md and a plot into bench/scaling.png. Its fleet workload
// (fleet.go) pushes to 200 databases with `pgmig push --targets` against
// shell loops of pgmig and tern, into its own section and bench/fleet.png.
//
//	go run ./bench            # the full run (make bench)
//	go run ./bench -quick     # a few minutes: fewer runs, no N = 10 000, 5 ms only
//	go run ./bench -workloads fleet   # only the fleet (only its section is rewritten)
//	go run ./bench -h         # every flag; PGMIG_BENCH_* variables set the defaults
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	pgmig "github.com/pgmig/pgmig/gowrapper"
)

type config struct {
	runs        int
	largeRuns   int
	sizes       []int
	rtts        []time.Duration
	workloads   map[string]bool
	segment     int
	pgmigSeg    int
	hugeRuns    int
	concurrency int
	concN       int
	out         string
	plot        string
	quick       bool
	verbose     bool
	fleet       fleetConfig
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func main() {
	var cfg config
	var sizes, rtts, workloads string
	flag.IntVar(&cfg.runs, "runs", atoi(envOr("PGMIG_BENCH_RUNS", "5")), "runs per (workload, contender) ($PGMIG_BENCH_RUNS)")
	flag.IntVar(&cfg.largeRuns, "large-runs", atoi(envOr("PGMIG_BENCH_LARGE_RUNS", "3")), "runs for the realistic N = 1000 workloads and for tern at the largest latency ($PGMIG_BENCH_LARGE_RUNS)")
	flag.StringVar(&sizes, "sizes", envOr("PGMIG_BENCH_SIZES", "100,1000,10000"), "N of the realistic DDL workload, comma-separated ($PGMIG_BENCH_SIZES)")
	flag.StringVar(&rtts, "rtts", envOr("PGMIG_BENCH_RTTS", "1ms,5ms"), "added round-trip times for the latency workloads (0 is the loopback of the other workloads) ($PGMIG_BENCH_RTTS)")
	flag.StringVar(&workloads, "workloads", envOr("PGMIG_BENCH_WORKLOADS", "scale,cli,trivial,noop,concurrent,latency,profile,fleet"), "which workloads; fleet alone rewrites only the fleet section of -out ($PGMIG_BENCH_WORKLOADS)")
	flag.IntVar(&cfg.hugeRuns, "huge-runs", atoi(envOr("PGMIG_BENCH_HUGE_RUNS", "1")), "runs for N >= 10 000 ($PGMIG_BENCH_HUGE_RUNS)")
	flag.IntVar(&cfg.segment, "physical-segment", atoi(envOr("PGMIG_BENCH_PHYSICAL_SEGMENT", "1000")), "for N above it, the physical limit commits every this many migrations (one transaction's lock table holds ~1 000 realistic migrations on default settings)")
	flag.IntVar(&cfg.pgmigSeg, "pgmig-segment-size", atoi(envOr("PGMIG_BENCH_PGMIG_SEGMENT", "0")), "PushOpts.SegmentSize / --segment-size for every pgmig push (0: pgmig's default, automatic; -1: all in one)")
	flag.IntVar(&cfg.concurrency, "concurrency", 32, "pushers of the concurrent workload")
	flag.IntVar(&cfg.concN, "concurrent-n", 100, "migrations of the concurrent workload")
	var parallels string
	flag.IntVar(&cfg.fleet.dbs, "fleet-dbs", atoi(envOr("PGMIG_BENCH_FLEET_DBS", "200")), "databases of the fleet workload ($PGMIG_BENCH_FLEET_DBS)")
	flag.IntVar(&cfg.fleet.n, "fleet-n", atoi(envOr("PGMIG_BENCH_FLEET_N", "50")), "realistic migrations pushed to each database of the fleet ($PGMIG_BENCH_FLEET_N)")
	flag.IntVar(&cfg.fleet.runs, "fleet-runs", atoi(envOr("PGMIG_BENCH_FLEET_RUNS", "3")), "runs per fleet contender, each on freshly created databases ($PGMIG_BENCH_FLEET_RUNS)")
	flag.StringVar(&parallels, "fleet-parallel", envOr("PGMIG_BENCH_FLEET_PARALLEL", "1,4,8,16"), "--parallel values of the fleet push ($PGMIG_BENCH_FLEET_PARALLEL)")
	flag.StringVar(&cfg.fleet.render, "fleet-render", "", "run nothing: render the fleet section of -out and its plot again from a saved run (bench/fleet.json)")
	flag.StringVar(&cfg.fleet.plot, "fleet-plot", "bench/fleet.png", "PNG of the fleet's time and throughput against --parallel")
	flag.StringVar(&cfg.out, "out", "BENCHMARKS.md", "markdown file whose generated section is replaced (created if missing)")
	flag.StringVar(&cfg.plot, "plot", "bench/scaling.png", "PNG of time against N")
	flag.BoolVar(&cfg.quick, "quick", os.Getenv("PGMIG_BENCH_QUICK") != "", "a short run: 2 runs, N = 100 and 1000, 5 ms only, a fleet of 40 databases ($PGMIG_BENCH_QUICK)")
	flag.BoolVar(&cfg.verbose, "v", false, "print every run")
	flag.Parse()
	if cfg.quick {
		cfg.runs, cfg.largeRuns, cfg.hugeRuns = 2, 1, 1
		sizes, rtts = "100,1000", "5ms"
		cfg.fleet.dbs, cfg.fleet.runs = 40, 2
	}
	cfg.sizes = parseInts(sizes)
	cfg.fleet.parallels = parseInts(parallels)
	if cfg.fleet.dbs < 1 || cfg.fleet.n < 1 || cfg.fleet.runs < 1 || len(cfg.fleet.parallels) == 0 {
		fatal(errors.New("-fleet-dbs, -fleet-n, -fleet-runs must be at least 1, -fleet-parallel not empty"))
	}
	for _, p := range cfg.fleet.parallels {
		if p < 1 || p > 64 {
			fatal(fmt.Errorf("-fleet-parallel: %d is not in 1..64 (pgmig push --parallel)", p))
		}
	}
	for _, s := range strings.Split(rtts, ",") {
		if s = strings.TrimSpace(s); s != "" {
			d, err := time.ParseDuration(s)
			if err != nil {
				fatal(fmt.Errorf("-rtts: %w", err))
			}
			cfg.rtts = append(cfg.rtts, d)
		}
	}
	if cfg.fleet.render != "" {
		if err := renderFleet(&cfg); err != nil {
			fatal(err)
		}
		return
	}
	cfg.workloads = map[string]bool{}
	for _, w := range strings.Split(workloads, ",") {
		cfg.workloads[strings.TrimSpace(w)] = true
	}
	if err := run(context.Background(), &cfg); err != nil {
		fatal(err)
	}
}

// renderFleet writes the fleet section and plot again from a saved run.
func renderFleet(cfg *config) error {
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	if err := os.Chdir(root); err != nil {
		return err
	}
	rep := &report{}
	f, err := loadFleet(cfg.fleet.render, rep)
	if err != nil {
		return err
	}
	if err := f.plotPNG(cfg.fleet.plot); err != nil {
		return err
	}
	return f.write(cfg.out, rep)
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "bench:", err)
	os.Exit(1)
}

func atoi(s string) int {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		fatal(fmt.Errorf("not a number: %q", s))
	}
	return n
}

func parseInts(s string) []int {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, atoi(f))
		}
	}
	return out
}

// env is the state of one benchmark run.
type env struct {
	cfg    *config
	cl     *cluster
	admin  *pgx.Conn
	r      *runner
	tmp    string
	seq    int
	wl     map[string]*workload
	report *report
	fleet  *fleetResult
}

func run(ctx context.Context, cfg *config) error {
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	if err := os.Chdir(root); err != nil {
		return err
	}
	started := time.Now()
	tmp, err := os.MkdirTemp("", "pgmig-bench-files-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	logf("building the pgmig CLI")
	cli := filepath.Join(tmp, "pgmig")
	// Built as `make build` builds it: static, without cgo.
	build := exec.Command("go", "build", "-o", cli, "./cmd/pgmig")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/pgmig: %w\n%s", err, out)
	}

	var tern string
	if cfg.workloads["cli"] {
		logf("building the tern CLI")
		if tern, err = buildTern(); err != nil {
			return err
		}
	}

	logf("starting PostgreSQL (fsync on, default settings)")
	cl, err := startCluster(ctx, nil)
	if err != nil {
		return err
	}
	defer cl.destroy()
	// Interrupted (Ctrl-C, a CI timeout): stop the cluster rather than
	// leave a server running on a data directory in /tmp.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sig
		logf("interrupted: stopping the cluster")
		cl.destroy()
		os.Exit(130)
	}()
	psql := filepath.Join(cl.binDir, "psql")
	if _, err := os.Stat(psql); err != nil {
		if psql, err = exec.LookPath("psql"); err != nil {
			return errors.New("psql not found")
		}
	}
	admin, err := pgx.Connect(ctx, cl.url("postgres"))
	if err != nil {
		return err
	}
	defer admin.Close(ctx)

	e := &env{cfg: cfg, cl: cl, admin: admin, tmp: tmp, wl: map[string]*workload{},
		r:      &runner{cli: cli, psql: psql, tern: tern, pgmigSegment: cfg.pgmigSeg},
		report: &report{}}
	if err := e.describe(ctx); err != nil {
		return err
	}
	if err := e.makeTemplate(ctx); err != nil {
		return err
	}

	if cfg.workloads["scale"] {
		for _, n := range cfg.sizes {
			if err := e.applyScenario(ctx, realistic, n, 0); err != nil {
				return err
			}
		}
	}
	if cfg.workloads["cli"] {
		if err := e.cliScenario(ctx, 500); err != nil {
			return err
		}
	}
	if cfg.workloads["trivial"] {
		if err := e.applyScenario(ctx, trivial, 1000, 0); err != nil {
			return err
		}
	}
	if cfg.workloads["noop"] {
		if err := e.noopScenario(ctx, 1000, 0); err != nil {
			return err
		}
	}
	if cfg.workloads["concurrent"] {
		if err := e.concurrentScenario(ctx, cfg.concN, cfg.concurrency); err != nil {
			return err
		}
	}
	if cfg.workloads["latency"] {
		for i, rtt := range cfg.rtts {
			if err := e.applyScenario(ctx, trivial, 1000, rtt); err != nil {
				return err
			}
			// The realistic workload only at the largest latency: its DDL
			// costs the same for everyone and takes long on a small machine.
			if i == len(cfg.rtts)-1 {
				if err := e.applyScenario(ctx, realistic, 1000, rtt); err != nil {
					return err
				}
			}
			if err := e.noopScenario(ctx, 1000, rtt); err != nil {
				return err
			}
		}
	}
	if cfg.workloads["profile"] {
		if err := e.profile(ctx); err != nil {
			return err
		}
	}
	if cfg.workloads["fleet"] {
		if err := e.fleetScenario(ctx, cfg.fleet); err != nil {
			return err
		}
	}
	e.report.elapsed = time.Since(started)
	e.report.segments = e.r.segments
	var written []string
	// Only the sections of what ran are rewritten: a fleet-only run keeps
	// the other results (and their plot) as they are, and the other way
	// round.
	if len(e.report.scenarios) > 0 || e.report.profile != "" {
		if err := e.report.plot(cfg.plot); err != nil {
			return err
		}
		if err := e.report.write(cfg); err != nil {
			return err
		}
		written = append(written, cfg.plot)
	}
	if e.fleet != nil {
		if err := e.fleet.plotPNG(cfg.fleet.plot); err != nil {
			return err
		}
		if err := e.fleet.write(cfg.out, e.report); err != nil {
			return err
		}
		if err := e.fleet.save(jsonPath(cfg.fleet.plot), e.report); err != nil {
			return err
		}
		written = append(written, cfg.fleet.plot)
	}
	logf("done in %v: %s, %s", time.Since(started).Round(time.Second), cfg.out, strings.Join(written, ", "))
	return nil
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s bench: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && strings.Contains(string(b), "module github.com/pgmig/pgmig\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("run it inside the pgmig checkout (go run ./bench)")
		}
		dir = parent
	}
}

func (e *env) describe(ctx context.Context) error {
	rep := e.report
	rep.pgVersion = e.cl.version()
	for _, s := range []string{"fsync", "synchronous_commit", "full_page_writes", "wal_level", "shared_buffers",
		"max_connections", "max_locks_per_transaction", "checkpoint_timeout", "max_wal_size"} {
		var v string
		if err := e.admin.QueryRow(ctx, "select current_setting($1)", s).Scan(&v); err != nil {
			return err
		}
		rep.settings = append(rep.settings, [2]string{s, v})
	}
	rep.machine = machine()
	rep.goVersion = runtime.Version()
	rep.engine = pgmig.SupportedEngineVersion()
	return nil
}

func machine() string {
	model := "?"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				model = strings.TrimSpace(l[strings.Index(l, ":")+1:])
				break
			}
		}
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int
		fmt.Sscanf(strings.SplitN(string(b), "\n", 2)[0], "MemTotal: %d kB", &kb)
		mem = fmt.Sprintf(", %d GiB RAM", (kb+(1<<19))>>20)
	}
	return fmt.Sprintf("%s, %d CPUs%s, %s/%s", model, runtime.NumCPU(), mem, runtime.GOOS, runtime.GOARCH)
}

const templateDB = "bench_template"

// makeTemplate creates the template every run's database is cloned from,
// with the engine installed (tern and the physical limit get the same
// database; they just do not use the engine).
func (e *env) makeTemplate(ctx context.Context) error {
	if _, err := e.admin.Exec(ctx, "create database "+templateDB); err != nil {
		return err
	}
	client, err := pgmig.Connect(ctx, e.cl.url(templateDB), nil)
	if err != nil {
		return err
	}
	defer client.Close(ctx)
	_, err = client.Install(ctx, nil)
	return err
}

// freshDB clones the template and checkpoints, so that no run pays for the
// previous one's dirty buffers.
func (e *env) freshDB(ctx context.Context) (string, error) {
	e.seq++
	name := fmt.Sprintf("bench_%d", e.seq)
	if _, err := e.admin.Exec(ctx, "create database "+name+" template "+templateDB); err != nil {
		return "", err
	}
	_, err := e.admin.Exec(ctx, "checkpoint")
	return name, err
}

// timedRun is one run of contender c: run on a fresh database, then the
// result verified, the database dropped, and the time (or the failure)
// recorded in s. ok says whether the run counted; err is only a failure to
// create the database, which ends the workload.
func (e *env) timedRun(ctx context.Context, s *scenario, c string, w *workload, run func(db string) (time.Duration, error)) (d time.Duration, ok bool, err error) {
	db, err := e.freshDB(ctx)
	if err != nil {
		return 0, false, err
	}
	d, runErr := run(db)
	if runErr == nil {
		runErr = e.verify(ctx, db, w)
	}
	e.dropDB(ctx, db)
	if runErr != nil {
		s.fail(c, runErr)
		logf("  %s: FAILED: %v", c, firstLine(runErr))
		return 0, false, nil
	}
	s.add(c, d)
	return d, true, nil
}

func (e *env) dropDB(ctx context.Context, name string) {
	if _, err := e.admin.Exec(ctx, "drop database if exists "+name+" with (force)"); err != nil {
		logf("dropping %s: %v", name, err)
	}
}

func (e *env) workload(k kind, n int) (*workload, error) {
	key := fmt.Sprintf("%s-%d", k, n)
	if w := e.wl[key]; w != nil {
		return w, nil
	}
	w, err := writeWorkload(e.tmp, k, n)
	if err != nil {
		return nil, err
	}
	e.wl[key] = w
	return w, nil
}

// proxied returns the URL of db through a delaying proxy (nil proxy: direct).
func (e *env) dbURL(p *delayProxy, db string) string {
	if p == nil {
		return e.cl.url(db)
	}
	return e.cl.urlAt(p.port(), db)
}

func (e *env) verify(ctx context.Context, db string, w *workload) error {
	conn, err := pgx.Connect(ctx, e.cl.url(db))
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	q, want := w.checkQuery()
	var got int
	if err := conn.QueryRow(ctx, q).Scan(&got); err != nil {
		return fmt.Errorf("verifying: %w", err)
	}
	if got != want {
		return fmt.Errorf("verifying: %s gave %d, want %d", q, got, want)
	}
	return nil
}

// rotate gives each run a different contender order, so that slow phases of
// a shared machine do not always hit the same contender.
func rotate(cs []string, r int) []string {
	out := make([]string, len(cs))
	for i := range cs {
		out[i] = cs[(i+r)%len(cs)]
	}
	return out
}

func (e *env) runsFor(k kind, n int) int {
	switch {
	case n >= 10000:
		return e.cfg.hugeRuns
	case n >= 1000 && k == realistic:
		return e.cfg.largeRuns
	}
	return e.cfg.runs
}

// applyScenario: fresh database per run, the workload applied once.
func (e *env) applyScenario(ctx context.Context, k kind, n int, rtt time.Duration) error {
	w, err := e.workload(k, n)
	if err != nil {
		return err
	}
	seg := 0
	if n > e.cfg.segment {
		seg = e.cfg.segment
	}
	var p *delayProxy
	if rtt > 0 {
		if p, err = startProxy(fmt.Sprintf("127.0.0.1:%d", e.cl.port), rtt); err != nil {
			return err
		}
		defer p.close()
	}
	s := e.report.scenario(scenarioKey(k, n, rtt, "apply"))
	s.kind, s.n, s.rtt, s.segment, s.op = k, n, rtt, seg, "apply"
	if p != nil {
		s.measuredRTT = e.measureRTT(ctx, p)
	}
	contenders := []string{cPhysical, cLib, cCLI, cTern}
	if k == realistic && rtt == 0 {
		// What psql, pg_cron and admin GUIs run: the batch inline in one CALL.
		contenders = append(contenders, cBundle)
	}
	runs := e.runsFor(k, n)
	// tern pays about five round trips per migration: at the largest
	// latency fewer runs keep the whole benchmark within its budget.
	ternRuns := runs
	if rtt > 0 && rtt == e.cfg.rtts[len(e.cfg.rtts)-1] {
		ternRuns = min(runs, e.cfg.largeRuns)
	}
	logf("%s: %d runs", s.title(), runs)
	for r := range runs {
		for _, c := range rotate(contenders, r) {
			if c == cTern && r >= ternRuns {
				continue
			}
			d, ok, err := e.timedRun(ctx, s, c, w, func(db string) (time.Duration, error) {
				return e.r.apply(ctx, c, e.dbURL(p, db), w, seg)
			})
			if err != nil {
				return err
			}
			if ok && e.cfg.verbose {
				logf("  run %d %-14s %v", r+1, c, d.Round(time.Microsecond))
			}
		}
	}
	e.logSummary(s)
	return nil
}

// noopScenario: the workload is applied once (pgmig into one database, tern
// into another), then every run pushes it again and finds nothing to do.
func (e *env) noopScenario(ctx context.Context, n int, rtt time.Duration) error {
	w, err := e.workload(realistic, n)
	if err != nil {
		return err
	}
	var p *delayProxy
	if rtt > 0 {
		if p, err = startProxy(fmt.Sprintf("127.0.0.1:%d", e.cl.port), rtt); err != nil {
			return err
		}
		defer p.close()
	}
	seg := 0
	if n > e.cfg.segment {
		seg = e.cfg.segment
	}
	pgmigDB, err := e.freshDB(ctx)
	if err != nil {
		return err
	}
	defer e.dropDB(ctx, pgmigDB)
	if _, err := pgmigLibrary(ctx, e.cl.url(pgmigDB), w.dir, e.cfg.pgmigSeg); err != nil {
		return fmt.Errorf("preparing the no-op workload: %w", err)
	}
	ternDB, err := e.freshDB(ctx)
	if err != nil {
		return err
	}
	defer e.dropDB(ctx, ternDB)
	if err := ternLibrary(ctx, e.cl.url(ternDB), w.dir); err != nil {
		return fmt.Errorf("preparing the no-op workload: %w", err)
	}
	if _, err := e.admin.Exec(ctx, "checkpoint"); err != nil {
		return err
	}
	s := e.report.scenario(scenarioKey(realistic, n, rtt, "noop"))
	s.kind, s.n, s.rtt, s.op = realistic, n, rtt, "noop"
	if p != nil {
		s.measuredRTT = e.measureRTT(ctx, p)
	}
	contenders := []string{cSelect1, cPsql, cLib, cCLI, cTern}
	runs := e.cfg.runs * 2 // cheap, and the noisiest
	logf("%s: %d runs", s.title(), runs)
	for r := range runs {
		for _, c := range rotate(contenders, r) {
			db := pgmigDB
			if c == cTern {
				db = ternDB
			}
			d, err := e.r.apply(ctx, c, e.dbURL(p, db), w, seg)
			if err != nil {
				s.fail(c, err)
				logf("  %s: FAILED: %v", c, firstLine(err))
				continue
			}
			s.add(c, d)
		}
	}
	// Nothing may have been applied twice.
	var count int
	if err := e.queryIn(ctx, pgmigDB, "select count(*) from pgmig.history", &count); err != nil || count != n {
		return fmt.Errorf("no-op check: history has %d rows (%v), want %d", count, err, n)
	}
	e.logSummary(s)
	return nil
}

func (e *env) queryIn(ctx context.Context, db, q string, dst ...any) error {
	conn, err := pgx.Connect(ctx, e.cl.url(db))
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	return conn.QueryRow(ctx, q).Scan(dst...)
}

// concurrentScenario: p pushers of the same workload start at once on a
// fresh database; the time is until the last one returns. The physical
// limit applies the workload once, alone.
func (e *env) concurrentScenario(ctx context.Context, n, p int) error {
	w, err := e.workload(realistic, n)
	if err != nil {
		return err
	}
	s := e.report.scenario(scenarioKey(realistic, n, 0, "concurrent"))
	s.kind, s.n, s.op, s.pushers = realistic, n, "concurrent", p
	contenders := []string{cPhysical, cLib, cCLI, cTern}
	logf("%s: %d runs", s.title(), e.cfg.runs)
	for r := range e.cfg.runs {
		for _, c := range rotate(contenders, r) {
			pushers := p
			if c == cPhysical {
				pushers = 1
			}
			if _, _, err := e.timedRun(ctx, s, c, w, func(db string) (time.Duration, error) {
				return e.r.concurrent(ctx, c, e.cl.url(db), w, pushers)
			}); err != nil {
				return err
			}
		}
	}
	e.logSummary(s)
	return nil
}

func (e *env) logSummary(s *scenario) {
	for _, c := range s.order {
		st := s.stats(c)
		if st.n == 0 {
			continue
		}
		logf("  %-15s median %9s  min %9s  max %9s  (%d runs)", c, fmtDur(st.median), fmtDur(st.min), fmtDur(st.max), st.n)
	}
}

func firstLine(err error) string {
	s := err.Error()
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// measureRTT is the median time of `select 1` through the proxy: the round
// trip the contenders really got (on a loaded machine timers fire late,
// so it is a little more than the proxy's nominal delay).
func (e *env) measureRTT(ctx context.Context, p *delayProxy) time.Duration {
	conn, err := pgx.Connect(ctx, e.dbURL(p, "postgres"))
	if err != nil {
		return 0
	}
	defer conn.Close(ctx)
	var ds []time.Duration
	for range 41 {
		start := time.Now()
		if _, err := conn.Exec(ctx, "select 1", pgx.QueryExecModeSimpleProtocol); err != nil {
			return 0
		}
		ds = append(ds, time.Since(start))
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	logf("  round trip through the proxy: median %v", ds[len(ds)/2].Round(10*time.Microsecond))
	return ds[len(ds)/2]
}
