package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	pgmig "github.com/pgmig/pgmig/gowrapper"
)

const stageHelp = `usage: pgmig stage --label L [--dir DIR] [--target N]
       pgmig stage --list

Stores the migrations in --dir in the database as a staged release named L (the engine's
migrate_stage), validated against the history now (drift, non-transactional migrations it
could not run). Later anyone with the grant applies it, exactly as push would, from psql,
an admin GUI or pg_cron:

  CALL migrate_run_staged('L');

Staging the same label again with the same migrations changes nothing; with other migrations
it is refused (a staged release never changes). --list shows every staged release and what
became of it (pending, running, applied, failed with the error, interrupted). See
docs/admin-tooling.md, also for a role that may stage but not run.

The database: --database, else $DATABASE_URL, else libpq's PG* variables and ~/.pgpass.

Flags:
`

// runStage is `pgmig stage` (docs/admin-tooling.md).
func runStage(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var a adminFlags
	var database, label string
	var list bool
	fs := flag.NewFlagSet("pgmig stage", flag.ContinueOnError)
	a.register(fs)
	fs.StringVar(&database, "database", "", "connection string (default $DATABASE_URL, else PG* variables)")
	fs.StringVar(&label, "label", "", "the release's label: 1-128 of A-Z a-z 0-9 . _ : / @ + -")
	fs.BoolVar(&list, "list", false, "list the staged releases and what became of each")
	if code, ok := parseAdminFlags(fs, stageHelp, args, stderr); !ok {
		return code
	}
	out := newOutput(stdout, stderr, a.json, a.quiet)
	out.dir = a.dir
	if list == (label != "") {
		return failCode(out, errors.New("pgmig stage needs exactly one of --label L (stage --dir) and --list"), exitUsage)
	}
	if database == "" {
		database = os.Getenv("DATABASE_URL")
	}
	o := options{database: database, dir: a.dir, schema: "public"}
	if list {
		client, code := connect(ctx, o, out)
		if client == nil {
			return code
		}
		defer client.Close(context.WithoutCancel(ctx))
		releases, err := client.StagedReleases(ctx)
		if err != nil {
			return failCode(out, err, exitCode(err))
		}
		showStaged(out, releases)
		return exitOK
	}

	ms, client, code := loadAndConnect(ctx, o, out, nil)
	if client == nil {
		return code
	}
	defer client.Close(context.WithoutCancel(ctx))
	ms, err := upTo(ms, a.target)
	if err != nil {
		return failCode(out, err, exitUsage)
	}
	res, err := client.Stage(ctx, ms, label, nil)
	if err != nil {
		code := exitCode(err)
		if errors.Is(err, pgmig.ErrStagedRelease) || errors.Is(err, pgmig.ErrNotRunnable) {
			// A label taken by another batch, or migrations a staged run
			// could not apply: the files, not the database, are the problem.
			code = exitValidation
		}
		return failCode(out, err, code)
	}
	if a.json {
		writeJSON(stdout, res)
		return exitOK
	}
	if res.Outcome == "already_staged" {
		out.say("Release %s was staged already with these migrations (on %s by %s; now %s); nothing changed.",
			res.Label, res.StagedAt.Local().Format(time.DateTime), res.StagedBy, res.State)
	} else {
		out.say("Staged release %s: %s (versions %d to %d), %d pending now.",
			res.Label, plural(res.Migrations, "migration", "migrations"), ms[0].Version, ms[len(ms)-1].Version, res.Pending)
	}
	out.say("History digest once applied: %s", res.Digest)
	if res.State != "applied" {
		out.say("Apply it (psql, an admin GUI, pg_cron): CALL migrate_run_staged('%s');", res.Label)
	}
	return exitOK
}

// showStaged prints migrate_staged() as a table, or as JSON.
func showStaged(out *output, releases []pgmig.StagedRelease) {
	if out.json {
		writeJSON(out.stdout, struct {
			Staged []pgmig.StagedRelease `json:"staged"`
		}{releases})
		return
	}
	if out.quiet {
		return
	}
	if len(releases) == 0 {
		fmt.Fprintln(out.stdout, "No release is staged in this database.")
		return
	}
	tw := tabwriter.NewWriter(out.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "LABEL\tSTATE\tMIGRATIONS\tSTAGED\tOUTCOME")
	for _, r := range releases {
		outcome := r.Detail
		switch r.State {
		case "applied":
			outcome = fmt.Sprintf("applied %s by %s; its runs applied %d", r.AppliedAt.Local().Format(time.DateTime), r.AppliedBy, r.Applied)
		case "failed":
			outcome = r.Error
			if r.FailedVersion != 0 {
				outcome = fmt.Sprintf("migration %d (%s): %s", r.FailedVersion, r.FailedName, r.Error)
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%d (%d-%d)\t%s by %s\t%s\n", r.Label, r.State,
			r.Migrations, r.FirstVersion, r.LastVersion, r.StagedAt.Local().Format(time.DateTime), r.StagedBy,
			strings.ReplaceAll(outcome, "\n", "; "))
	}
	tw.Flush()
}
