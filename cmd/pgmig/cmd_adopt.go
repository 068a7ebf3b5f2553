package main

import (
	"context"
	"fmt"
	"strings"

	pgmig "github.com/pgmig/pgmig/gowrapper"
)

// `pgmig adopt --from TOOL`: take over the history of the tool that
// migrated the database (docs/adopt.md). The engine reads and checks the
// tool's table and records; this file only passes the files and flags on.

var (
	flagAdoptFrom = &flagDef{name: "from", arg: "TOOL", defHelp: "(required)",
		usage: "the tool that migrated the database: " + strings.Join(formatNames, ", "),
		set: func(o *options, v string) error {
			v = strings.ToLower(strings.TrimSpace(v))
			for _, n := range formatNames {
				if v == n {
					o.adoptFrom = v
					return nil
				}
			}
			return fmt.Errorf("unknown tool %q: want one of %s", v, strings.Join(formatNames, ", "))
		}}
	flagAdoptTable = &flagDef{name: "table", arg: "T", defHelp: "the tool's own default (tern: public.schema_version; golang-migrate, dbmate: " +
		"schema_migrations; goose: goose_db_version; sql-migrate: gorp_migrations; flyway: flyway_schema_history)",
		usage: "the tool's history table: table or schema.table, as SQL reads a name (an unqualified one is looked up in the search_path)",
		set:   func(o *options, v string) error { o.adoptTable = strings.TrimSpace(v); return nil }}
	flagDropOld = &flagDef{name: "drop-old",
		usage: "drop the tool's table once its history is recorded, in the same transaction (its rows stay in pgmig.audit)",
		set:   boolSetter(func(o *options, b bool) { o.dropOld = b })}
	flagAdoptDryRun = &flagDef{name: flagDryRun.name,
		usage: "take the lock and check the tool's history against the files; record nothing",
		set:   flagDryRun.set}
)

// adoptCommand is the command table's entry (commands.go).
func adoptCommand() *command {
	return &command{
		name: "adopt", args: "--from TOOL", op: "adopting",
		summary: "take over another tool's history: record what it applied, without running anything",
		help: "Takes over a database that another tool migrated (tern, golang-migrate, goose, dbmate, sql-migrate, flyway): " +
			"under the migration lock the engine reads the tool's own history table, checks it against the files of --dir " +
			"(read in the tool's format unless --format says otherwise): versions, and Flyway's checksums; then it records " +
			"what the tool applied as applied in pgmig's history, without running anything, audited with the tool's rows. " +
			"Refuses (exit 4), changing nothing, when the tool's history is not clean (golang-migrate dirty, a failed Flyway " +
			"migration, a goose version recorded as rolled back), names a version without a file, or when the tool would " +
			"still apply files older than its newest version; each reason comes with the tool's own fix. Then push applies " +
			"only what the tool had not applied. The tool's table is left as it was unless --drop-old. Adopting again " +
			"changes nothing. See docs/adopt.md.",
		// --tern-table (tern.conf's version_table) is --table's default with --from tern.
		flags: flagsOf([]*flagDef{flagAdoptFrom, flagAdoptTable, flagDropOld, flagAdoptDryRun,
			flagLockTimeout.withDefault("the server's lock_timeout (normally: wait)"), flagTernTable}, fileFlags, connFlags, outputFlags),
		validate: func(inv *invocation) error {
			if inv.opts.adoptFrom == "" {
				return usagef("adopt needs --from TOOL: the tool that migrated the database (%s)", strings.Join(formatNames, ", "))
			}
			// The files are the tool's: read them in its format, unless a
			// format was set on purpose (files converted to another one).
			if inv.opts.sources[flagFormat.name] == "default" {
				inv.opts.format = inv.opts.adoptFrom
			}
			return nil
		},
		run: runAdopt,
	}
}

func runAdopt(ctx context.Context, inv *invocation) (result, error) {
	o := inv.opts
	ms, client, err := inv.loadAndConnect(ctx, nil)
	if err != nil {
		return nil, err
	}
	tool := pgmig.Format(o.adoptFrom)
	table := o.adoptTable
	if table == "" && tool == pgmig.FormatTern {
		table = o.ternTable
	}
	res, err := client.Adopt(ctx, ms, tool, &pgmig.AdoptOpts{
		Table: table, DropOld: o.dropOld, DryRun: o.dryRun, LockTimeout: o.lockTimeout,
	})
	if err != nil {
		return nil, err
	}
	if table == "" {
		table = pgmig.AdoptTable(tool)
	}
	return adoptResult{HistoryResult: res, Tool: o.adoptFrom, Table: table, DryRun: o.dryRun,
		Dropped: o.dropOld && !o.dryRun}, nil
}

// adoptResult is adopt's outcome; its JSON is the history result with the
// tool, its table and what happened to the table.
type adoptResult struct {
	*pgmig.HistoryResult
	Tool    string `json:"tool"`
	Table   string `json:"table"`
	DryRun  bool   `json:"dry_run"`
	Dropped bool   `json:"dropped"`
}

func (r adoptResult) jsonValue() any { return r }

func (r adoptResult) text(o *output) {
	pending := 0
	for _, m := range r.Migrations {
		switch m.Outcome {
		case pgmig.OutcomeAdopted:
			o.say("adopted %s", label(o.path(m.File), m.Version, m.Name))
		case pgmig.OutcomePendingAdopt:
			o.say("would adopt %s", label(o.path(m.File), m.Version, m.Name))
		case pgmig.OutcomePending:
			pending++
		}
	}
	switch {
	case r.DryRun:
		o.say("%s: would adopt %s from %s (%s); nothing was recorded.", paint(o.ttyOut, bold, "Dry run"),
			plural(r.Changed, "migration", "migrations"), r.Tool, r.Table)
	case r.Changed == 0:
		o.say("Nothing to adopt: pgmig's history already has every migration %s recorded in %s; the database is at version %d.",
			r.Tool, r.Table, r.Version)
	default:
		o.say("%s %s from %s without running them; the database is at version %d.", paint(o.ttyOut, bold+green, "Adopted"),
			plural(r.Changed, "migration", "migrations"), r.Tool, r.Version)
	}
	if pending > 0 {
		o.say("%s after them left for `pgmig push`.", plural(pending, "migration", "migrations"))
	}
	switch {
	case r.Dropped:
		o.say("Dropped %s's table %s (its rows are kept in pgmig.audit).", r.Tool, r.Table)
	case !r.DryRun:
		o.say("%s's table %s is left as it was (--drop-old drops it).", r.Tool, r.Table)
	}
}

// baselineFromTern is `baseline --from-tern`, kept as an alias of
// `adopt --from tern` with --tern-table for --table and baseline's own
// report: "Baselined at version V" where V is tern's version.
func baselineFromTern(ctx context.Context, inv *invocation, ms []*pgmig.Migration, client *pgmig.Client) (result, error) {
	o := inv.opts
	res, err := client.Adopt(ctx, ms, pgmig.FormatTern, &pgmig.AdoptOpts{Table: o.ternTable, LockTimeout: o.lockTimeout})
	if err != nil {
		return nil, err
	}
	var version int64
	for _, m := range res.Migrations {
		if m.Outcome == pgmig.OutcomeAdopted || m.Outcome == pgmig.OutcomeAlreadyApplied {
			version = max(version, m.Version)
		}
	}
	if version == 0 {
		return nil, fmt.Errorf("%w: tern's version table %s says version 0: nothing to baseline", pgmig.ErrInvalidBatch, o.ternTable)
	}
	inv.out.info("tern's version table %s is at version %d", o.ternTable, version)
	return baselineResult{res: res, version: version}, nil
}
