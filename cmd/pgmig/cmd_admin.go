package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	pgmig "github.com/pgmig/pgmig/gowrapper"
)

// The commands for admin tooling (docs/admin-tooling.md): batch, bundle
// and stage. The engine does the work (migrate_run, migrate_stage,
// migrate_run_staged); these only write what it takes, or store it.

var (
	flagOutput = &flagDef{name: "output", arg: "FILE", defHelp: "stdout",
		usage: "write the script to FILE (written whole or not at all)",
		set:   func(o *options, v string) error { o.output = v; return nil }}
	flagO          = &flagDef{name: "o", arg: "FILE", usage: "same as --output", set: flagOutput.set}
	flagWithEngine = &flagDef{name: "with-engine",
		usage: "make the script install or upgrade the pgmig engine first (never downgrades)",
		set:   boolSetter(func(o *options, b bool) { o.withEngine = b })}
	flagNontxApplied = &flagDef{name: "nontx-applied",
		usage: "non-transactional migrations are applied already wherever the script will run (it refuses to run where one is pending)",
		set:   boolSetter(func(o *options, b bool) { o.nontxApplied = b })}
	flagLabel = &flagDef{name: "label", arg: "L",
		usage: "the release's label: 1-128 of A-Z a-z 0-9 . _ : / @ + -",
		set:   func(o *options, v string) error { o.label = v; return nil }}
	flagList = &flagDef{name: "list",
		usage: "list the staged releases and what became of each",
		set:   boolSetter(func(o *options, b bool) { o.list = b })}
	flagBatchTarget = flagTarget.withUsage("only the migrations up to version N (what push --target N applies)")
)

func (d *flagDef) withUsage(usage string) *flagDef {
	c := *d
	c.usage = usage
	return &c
}

// loadUpTo loads --dir and keeps the migrations up to --target. A batch
// cut at the target is what push --target would apply: the engine needs no
// option for it, so psql, a bundle and a staged release all stop there.
func (inv *invocation) loadUpTo() ([]*pgmig.Migration, error) {
	lopts, err := inv.loadOpts()
	if err != nil {
		return nil, err
	}
	ms, err := pgmig.LoadDir(inv.opts.dir, lopts)
	if err != nil {
		return nil, err
	}
	target := inv.opts.target
	if target <= 0 {
		return ms, nil
	}
	var kept []*pgmig.Migration
	for _, m := range ms {
		if m.Version <= target {
			kept = append(kept, m)
		}
	}
	if len(kept) == 0 {
		return nil, usagef("--target %d: no migration has a version up to %d (the first is %d)", target, target, ms[0].Version)
	}
	return kept, nil
}

// batchResult is `pgmig batch`: the batch on stdout, a summary on stderr.
type batchResult struct {
	batch json.RawMessage
	ms    []*pgmig.Migration
}

func runBatch(_ context.Context, inv *invocation) (result, error) {
	ms, err := inv.loadUpTo()
	if err != nil {
		return nil, err
	}
	batch, err := pgmig.Batch(ms)
	if err != nil {
		return nil, err
	}
	return batchResult{batch: batch, ms: ms}, nil
}

func (r batchResult) jsonValue() any {
	return struct {
		Batch         json.RawMessage `json:"batch"`
		Migrations    int             `json:"migrations"`
		HistoryDigest string          `json:"history_digest"`
	}{r.batch, len(r.ms), pgmig.HistoryDigest(r.ms)}
}

func (r batchResult) text(o *output) {
	// The batch is the product: written even with --quiet.
	fmt.Fprintf(o.stdout, "%s\n", r.batch)
	o.info("%s, versions %d to %d; history digest once applied: %s",
		plural(len(r.ms), "migration", "migrations"), r.ms[0].Version, r.ms[len(r.ms)-1].Version, pgmig.HistoryDigest(r.ms))
}

// bundleResult is `pgmig bundle`: the script (on stdout without -o) and a
// summary.
type bundleResult struct {
	script     string
	file       string
	ms         []*pgmig.Migration
	withEngine bool
}

func runBundle(_ context.Context, inv *invocation) (result, error) {
	o := inv.opts
	ms, err := inv.loadUpTo()
	if err != nil {
		return nil, err
	}
	script, err := pgmig.Bundle(ms, &pgmig.BundleOpts{WithEngine: o.withEngine, NonTransactionalApplied: o.nontxApplied})
	if err != nil {
		return nil, err
	}
	if o.output != "" {
		if err := writeFileAtomic(o.output, script); err != nil {
			return nil, err
		}
	}
	return bundleResult{script: script, file: o.output, ms: ms, withEngine: o.withEngine}, nil
}

func (r bundleResult) jsonValue() any {
	return struct {
		File          string `json:"file"`
		Migrations    int    `json:"migrations"`
		FirstVersion  int64  `json:"first_version"`
		LastVersion   int64  `json:"last_version"`
		HistoryDigest string `json:"history_digest"`
		WithEngine    bool   `json:"with_engine"`
		Bytes         int    `json:"bytes"`
	}{r.file, len(r.ms), r.ms[0].Version, r.ms[len(r.ms)-1].Version, pgmig.HistoryDigest(r.ms), r.withEngine, len(r.script)}
}

func (r bundleResult) text(o *output) {
	where := r.file
	if where == "" {
		_, _ = io.WriteString(o.stdout, r.script)
		where = "the script"
	}
	engine := ""
	if r.withEngine {
		engine = fmt.Sprintf(", installing engine %s first", pgmig.SupportedEngineVersion())
	}
	o.info("wrote %s: %s (versions %d to %d)%s, %d bytes; history digest once applied: %s",
		where, plural(len(r.ms), "migration", "migrations"), r.ms[0].Version, r.ms[len(r.ms)-1].Version, engine,
		len(r.script), pgmig.HistoryDigest(r.ms))
	if r.file != "" {
		o.info("run it with: psql -v ON_ERROR_STOP=1 -f %s   (or paste it into an admin GUI, in autocommit)", r.file)
	}
}

// writeFileAtomic writes the file whole or not at all: a half-written
// release script must never be left for someone to run.
func writeFileAtomic(path, text string) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return usagef("writing %s: %v", path, err)
	}
	_, err = f.WriteString(text)
	if err == nil {
		err = f.Chmod(0o644)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
		return usagef("writing %s: %v", path, err)
	}
	return nil
}

func validateStage(inv *invocation) error {
	if inv.opts.list == (inv.opts.label != "") {
		return usagef("pgmig stage needs exactly one of --label L (stage --dir) and --list")
	}
	return nil
}

func runStage(ctx context.Context, inv *invocation) (result, error) {
	if inv.opts.list {
		client, err := inv.connect(ctx)
		if err != nil {
			return nil, err
		}
		releases, err := client.StagedReleases(ctx)
		if err != nil {
			return nil, err
		}
		return stagedList{releases}, nil
	}
	ms, err := inv.loadUpTo()
	if err != nil {
		return nil, err
	}
	client, err := inv.connect(ctx)
	if err != nil {
		return nil, err
	}
	res, err := client.Stage(ctx, ms, inv.opts.label, nil)
	if err != nil {
		return nil, err
	}
	return stageResult{res: res, ms: ms}, nil
}

type stageResult struct {
	res *pgmig.StageResult
	ms  []*pgmig.Migration
}

func (r stageResult) jsonValue() any { return r.res }

func (r stageResult) text(o *output) {
	res := r.res
	if res.Outcome == "already_staged" {
		o.say("Release %s was staged already with these migrations (on %s by %s; now %s); nothing changed.",
			res.Label, res.StagedAt.Local().Format(time.DateTime), res.StagedBy, res.State)
	} else {
		o.say("Staged release %s: %s (versions %d to %d), %d pending now.",
			res.Label, plural(res.Migrations, "migration", "migrations"), r.ms[0].Version, r.ms[len(r.ms)-1].Version, res.Pending)
	}
	o.say("History digest once applied: %s", res.Digest)
	if res.State != "applied" {
		o.say("Apply it (psql, an admin GUI, pg_cron): CALL migrate_run_staged('%s');", res.Label)
	}
}

// stagedList is `pgmig stage --list`: migrate_staged() as a table.
type stagedList struct{ releases []pgmig.StagedRelease }

func (r stagedList) jsonValue() any {
	return struct {
		Staged []pgmig.StagedRelease `json:"staged"`
	}{r.releases}
}

func (r stagedList) text(o *output) {
	if o.quiet {
		return
	}
	if len(r.releases) == 0 {
		fmt.Fprintln(o.stdout, "No release is staged in this database.")
		return
	}
	tw := tabwriter.NewWriter(o.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "LABEL\tSTATE\tMIGRATIONS\tSTAGED\tOUTCOME")
	for _, s := range r.releases {
		outcome := s.Detail
		switch s.State {
		case "applied":
			outcome = fmt.Sprintf("applied %s by %s; its runs applied %d", s.AppliedAt.Local().Format(time.DateTime), s.AppliedBy, s.Applied)
		case "failed":
			outcome = s.Error
			if s.FailedVersion != 0 {
				outcome = fmt.Sprintf("migration %d (%s): %s", s.FailedVersion, s.FailedName, s.Error)
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%d (%d-%d)\t%s by %s\t%s\n", s.Label, s.State,
			s.Migrations, s.FirstVersion, s.LastVersion, s.StagedAt.Local().Format(time.DateTime), s.StagedBy,
			strings.ReplaceAll(outcome, "\n", "; "))
	}
	tw.Flush()
}

// errorsAreFiles: a bundle refusing non-transactional migrations and a
// label staged with another batch are problems of the files (exit 4).
func errorsAreFiles(err error) bool {
	return errors.Is(err, pgmig.ErrNonTransactional) || errors.Is(err, pgmig.ErrStagedRelease)
}
