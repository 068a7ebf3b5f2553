package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	pgmig "github.com/pgmig/pgmig/gowrapper"
)

// Fleet flags: `pgmig push --targets FILE | --targets-query SQL` pushes the
// same migrations to many databases (docs/fleet.md).
var (
	flagTargets = &flagDef{name: "targets", arg: "FILE", config: "targets",
		usage: "push to every database listed in FILE (one connection string a line; # comments; $VAR expanded from the environment)",
		set:   func(o *options, v string) error { o.targets = v; return nil }}
	flagTargetsQuery = &flagDef{name: "targets-query", arg: "SQL", config: "targets_query",
		usage: "push to every database this query returns, run read-only on --database (one column: connection strings or database names on that server)",
		set:   func(o *options, v string) error { o.targetsQuery = v; return nil }}
	flagParallel = &flagDef{name: "parallel", arg: "N", def: "4", config: "parallel",
		usage: "with --targets/--targets-query: push to at most N databases at once (1-64)",
		set: func(o *options, v string) error {
			return int64Setter("a number of databases (1-64)", 1, func(o *options, n int64) { o.parallel = int(min(n, 64)) })(o, v)
		}}
	flagCanary = &flagDef{name: "canary", arg: "K", defHelp: "none", config: "canary",
		usage: "with --targets/--targets-query: push to the first K databases alone first; stop if any of them fails",
		set:   int64Setter("a number of databases", 0, func(o *options, n int64) { o.canary = int(n) })}
	flagContinueOnError = &flagDef{name: "continue-on-error", config: "continue_on_error",
		usage: "with --targets/--targets-query: keep starting databases after one failed (default: let the running ones finish, start no more)",
		set:   boolSetter(func(o *options, b bool) { o.continueOnError = b })}
	flagSchemasQuery = &flagDef{name: "schemas-query", arg: "SQL", config: "schemas_query",
		usage: "push to every tenant schema this query returns, run read-only on each database (one column: schema names); each gets --schema's treatment",
		set:   func(o *options, v string) error { o.schemasQuery = v; return nil }}
	flagInstall = &flagDef{name: "install", config: "install",
		usage: "with --targets/--targets-query: install the engine where it is missing (or older than this pgmig)",
		set:   boolSetter(func(o *options, b bool) { o.install = b })}
	fleetFlags = []*flagDef{flagTargets, flagTargetsQuery, flagSchemasQuery, flagParallel, flagCanary, flagContinueOnError, flagInstall}
)

func (o *options) fleet() bool {
	return o.targets != "" || o.targetsQuery != "" || o.schemasQuery != ""
}

func validatePush(inv *invocation) error {
	o := inv.opts
	if o.targets != "" && o.targetsQuery != "" {
		return usagef("give one of --targets and --targets-query")
	}
	if o.schemasQuery != "" && o.schema != "" {
		return usagef("give one of --schema and --schemas-query")
	}
	if !o.fleet() {
		for _, name := range []string{"canary", "continue-on-error", "install"} {
			if src := o.sources[name]; strings.HasPrefix(src, "flag ") {
				return usagef("--%s needs --targets, --targets-query or --schemas-query", name)
			}
		}
	}
	return nil
}

// fleetTargets reads the fleet's databases (--targets, --targets-query, else
// --database), then, with --schemas-query, the tenant schemas of each.
func (inv *invocation) fleetTargets(ctx context.Context) ([]pgmig.Target, error) {
	o := inv.opts
	var ts []pgmig.Target
	var err error
	switch {
	case o.targets != "":
		f, err := os.Open(o.targets)
		if err != nil {
			return nil, usagef("--targets: %v", err)
		}
		defer f.Close()
		if ts, err = pgmig.ParseTargets(f, o.targets, os.Getenv); err != nil {
			return nil, usagef("--targets %v", err)
		}
	case o.targetsQuery != "":
		if ts, err = pgmig.TargetsFromQuery(ctx, o.database, o.targetsQuery); err != nil {
			return nil, err
		}
	default:
		t, err := pgmig.TargetOf(o.database)
		if err != nil {
			return nil, usagef("--database: %v", err)
		}
		ts = []pgmig.Target{t}
	}
	if o.schemasQuery == "" {
		return ts, nil
	}
	return pgmig.ScopesFromQuery(ctx, ts, o.schemasQuery, o.parallel)
}

func runFleet(ctx context.Context, inv *invocation) (result, error) {
	o := inv.opts
	lopts, err := inv.loadOpts()
	if err != nil {
		return nil, err
	}
	ms, err := pgmig.LoadDir(o.dir, lopts)
	if err != nil {
		return nil, err
	}
	targets, err := inv.fleetTargets(ctx)
	if err != nil {
		return nil, err
	}
	if len(targets) == 0 {
		return nil, usagef("no targets: %s", map[bool]string{true: "--targets " + o.targets + " lists no database", false: "the query returned no rows"}[o.targets != ""])
	}
	live := newFleetProgress(inv.out, len(targets), o.parallel)
	fopts := &pgmig.FleetOpts{
		Push: pgmig.PushOpts{
			TargetVersion:   o.target,
			LockTimeout:     o.lockTimeout,
			AllowOutOfOrder: o.allowOutOfOrder,
			AllowMissing:    o.allowMissing,
			SegmentSize:     o.segmentSize,
		},
		Config:          inv.engineConfig(),
		Parallel:        o.parallel,
		Canary:          o.canary,
		ContinueOnError: o.continueOnError,
		Install:         o.install,
		Started:         live.started,
		Done:            live.done,
	}
	res, err := pgmig.PushFleet(ctx, targets, ms, fopts)
	live.stop()
	return fleetResult{res: res, canary: o.canary}, err
}

// fleetProgress reports a fleet push as it goes: in --json mode one JSON
// line per target on stdout as it ends; otherwise one line per target on
// stdout and, on a terminal, a status line on stderr (done, failed,
// running, ETA).
type fleetProgress struct {
	o                 *output
	mu                sync.Mutex
	total, parallel   int
	running, finished int
	failed            int
	start             time.Time
	busy              time.Duration // summed durations of the finished targets
	stopped           chan struct{}
	wg                sync.WaitGroup
	statusShown       bool
	jsonEnc           *json.Encoder // --json: one line per target
}

func newFleetProgress(o *output, total, parallel int) *fleetProgress {
	p := &fleetProgress{o: o, total: total, parallel: max(parallel, 1), start: time.Now(), stopped: make(chan struct{})}
	if o.json {
		p.jsonEnc = json.NewEncoder(o.stdout)
		p.jsonEnc.SetEscapeHTML(false)
	}
	if !o.json && !o.quiet && o.ttyErr {
		p.wg.Add(1)
		go p.tick()
	}
	return p
}

func (p *fleetProgress) tick() {
	defer p.wg.Done()
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-p.stopped:
			return
		case <-t.C:
			p.mu.Lock()
			p.status()
			p.mu.Unlock()
		}
	}
}

// status redraws the status line on stderr. Called with mu held.
func (p *fleetProgress) status() {
	if !p.o.ttyErr || p.o.json || p.o.quiet {
		return
	}
	line := fmt.Sprintf("fleet: %d/%d done", p.finished, p.total)
	if p.failed > 0 {
		line += fmt.Sprintf(" · %s", paint(true, red, fmt.Sprintf("%d failed", p.failed)))
	}
	line += fmt.Sprintf(" · %d running · %s", p.running, formatDuration(time.Since(p.start).Truncate(time.Second)))
	if eta, ok := p.eta(); ok {
		line += " · ETA " + eta.Round(time.Second).String()
	}
	fmt.Fprintf(p.o.stderr, "\r\033[K%s", line)
	p.statusShown = true
}

// eta estimates the time left: the targets not finished, at the mean
// duration of the finished ones, spread over the parallel workers.
func (p *fleetProgress) eta() (time.Duration, bool) {
	if p.finished == 0 {
		return 0, false
	}
	mean := p.busy / time.Duration(p.finished)
	left := p.total - p.finished
	return mean * time.Duration(left) / time.Duration(min(p.parallel, max(left, 1))), true
}

func (p *fleetProgress) clearStatus() {
	if p.statusShown {
		fmt.Fprint(p.o.stderr, "\r\033[K")
		p.statusShown = false
	}
}

func (p *fleetProgress) started(pgmig.Target) {
	p.mu.Lock()
	p.running++
	p.mu.Unlock()
}

func (p *fleetProgress) done(r pgmig.TargetResult) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if r.Outcome != pgmig.TargetSkipped {
		p.running--
		p.busy += r.Duration
	}
	p.finished++
	if r.Outcome == pgmig.TargetFailed {
		p.failed++
	}
	if p.jsonEnc != nil {
		_ = p.jsonEnc.Encode(r)
		return
	}
	p.clearStatus()
	if !p.o.quiet || r.Outcome == pgmig.TargetFailed {
		fmt.Fprintln(p.o.stdout, targetLine(p.o, r))
	}
	p.status()
}

func (p *fleetProgress) stop() {
	close(p.stopped)
	p.wg.Wait()
	p.mu.Lock()
	p.clearStatus()
	p.mu.Unlock()
}

// targetLine is one target's outcome for people.
func targetLine(o *output, r pgmig.TargetResult) string {
	switch r.Outcome {
	case pgmig.TargetApplied:
		installed := ""
		if r.Installed {
			installed = "installed the engine, "
		}
		return fmt.Sprintf("%s %s: %sapplied %s, now at version %d (%s)", paint(o.ttyOut, green, "✓"), r.Target, installed,
			versionList(r.Applied), r.Version, formatDuration(r.Duration))
	case pgmig.TargetUpToDate:
		return fmt.Sprintf("%s %s: up to date at version %d (%s)", paint(o.ttyOut, green, "✓"), r.Target, r.Version, formatDuration(r.Duration))
	case pgmig.TargetSkipped:
		return fmt.Sprintf("%s %s: skipped (the rollout stopped after a failure)", paint(o.ttyOut, yellow, "-"), r.Target)
	}
	// A failing migration's error names its file, line and column.
	return fmt.Sprintf("%s %s: failed after %s: %s", paint(o.ttyOut, red, "✗"), r.Target, formatDuration(r.Duration), firstLine(r.Error))
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

// fleetResult is a fleet push's summary: the per-target lines were
// written as the targets ended.
type fleetResult struct {
	res    *pgmig.FleetResult
	canary int
}

// fleetSummary is the last JSON line of a fleet push in --json mode.
type fleetSummary struct {
	Summary fleetCounts `json:"summary"`
}

type fleetCounts struct {
	Targets  int           `json:"targets"`
	Applied  int           `json:"applied"`
	UpToDate int           `json:"up_to_date"`
	Failed   int           `json:"failed"`
	Skipped  int           `json:"skipped"`
	Duration time.Duration `json:"duration_ns"`
	// FailedTargets names each failed target.
	FailedTargets []string `json:"failed_targets,omitempty"`
}

func (r fleetResult) counts() fleetCounts {
	c := fleetCounts{Targets: len(r.res.Targets), Failed: r.res.Failed, Skipped: r.res.Skipped, Duration: r.res.Duration}
	for _, t := range r.res.Targets {
		switch t.Outcome {
		case pgmig.TargetApplied:
			c.Applied++
		case pgmig.TargetUpToDate:
			c.UpToDate++
		case pgmig.TargetFailed:
			c.FailedTargets = append(c.FailedTargets, t.Target)
		}
	}
	return c
}

func (r fleetResult) jsonValue() any { return fleetSummary{Summary: r.counts()} }

// oneLine: the summary follows the per-target JSON lines, one line each.
func (r fleetResult) oneLine() bool { return true }

func (r fleetResult) text(o *output) {
	c := r.counts()
	if !o.quiet {
		tw := tabwriter.NewWriter(o.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(o.stdout)
		fmt.Fprintln(tw, "TARGETS\tAPPLIED\tUP TO DATE\tFAILED\tSKIPPED\tTIME")
		fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%d\t%s\n", c.Targets, c.Applied, c.UpToDate, c.Failed, c.Skipped, formatDuration(c.Duration))
		tw.Flush()
	}
	if c.Failed == 0 && c.Skipped == 0 {
		o.say("%s on every target.", paint(o.ttyOut, bold+green, "Done"))
		return
	}
	fmt.Fprintf(o.stdout, "%s\n", paint(o.ttyOut, bold+red, fmt.Sprintf("Failed on %s:", plural(c.Failed, "target", "targets"))))
	for _, t := range r.res.Targets {
		if t.Outcome == pgmig.TargetFailed {
			fmt.Fprintf(o.stdout, "  %s\n", strings.TrimPrefix(targetLine(o, t), paint(o.ttyOut, red, "✗")+" "))
		}
	}
	if c.Skipped > 0 {
		why := "after the first failure (--continue-on-error starts them anyway)"
		for i := 0; i < min(r.canary, len(r.res.Targets)); i++ {
			if r.res.Targets[i].Outcome == pgmig.TargetFailed {
				why = "because a canary failed"
			}
		}
		fmt.Fprintf(o.stdout, "%s not started %s.\n", plural(c.Skipped, "target was", "targets were"), why)
	}
	fmt.Fprintln(o.stdout, "Fix the failure and push again: only databases with pending migrations do any work.")
}
