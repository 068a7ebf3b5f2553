package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
)

// command is one `pgmig <name>`: its flags, its help, the checks its
// arguments get before anything is connected to, and what it does. The
// table below is the whole CLI; `pgmig help` lists it and
// `pgmig <name> --help` prints one entry.
type command struct {
	name string
	// args names the positional arguments in the usage line ("NAME");
	// nargs is how many there must be.
	args  string
	nargs int
	// summary is the line in `pgmig help`; help is the text of
	// `pgmig help <name>`.
	summary string
	help    string
	// op is what the command is doing, at the head of its error messages
	// ("validating migrations").
	op string
	// flags are the command's own flags, then the shared ones it takes.
	flags []*flagDef
	// validate checks the parsed arguments (no network, no files).
	validate func(inv *invocation) error
	// run does the work; what it returns is rendered by output.report.
	run func(ctx context.Context, inv *invocation) (result, error)
}

func (c *command) takes(d *flagDef) bool {
	for _, f := range c.flags {
		if f.name == d.name {
			return true
		}
	}
	return false
}

// Shared flags, appended to the commands that take them.
var (
	outputFlags = []*flagDef{flagJSON, flagQuiet, flagConfig}
	connFlags   = []*flagDef{flagDatabase, flagSchema}
	fileFlags   = []*flagDef{flagDir, flagFormat, flagData}
	// unreadDir keeps --dir working for commands that read no files, as it
	// always has, so that one set of flags (or PGMIG_DIR) serves them all.
	unreadDir = &flagDef{name: flagDir.name, arg: flagDir.arg, def: flagDir.def, config: flagDir.config,
		usage: "migrations directory (accepted; this command reads no migration files)", set: flagDir.set}
)

func flagsOf(own []*flagDef, shared ...[]*flagDef) []*flagDef {
	out := append([]*flagDef{}, own...)
	for _, s := range shared {
		out = append(out, s...)
	}
	return out
}

var sharedFlagNames = func() map[string]bool {
	m := map[string]bool{}
	for _, group := range [][]*flagDef{outputFlags, connFlags, fileFlags} {
		for _, d := range group {
			m[d.name] = true
		}
	}
	return m
}()

// commands is the command table, in the order `pgmig help` lists it.
var commands []*command

func init() {
	commands = []*command{
		{
			name: "install", op: "installing the engine",
			summary: "install or upgrade the engine in the database (--print: write the SQL instead)",
			help: "Installs the pgmig engine into the database, or upgrades it to the version built into this binary. " +
				"Idempotent: installing the same version again changes nothing. --print writes the install SQL to stdout " +
				"instead, for managed databases: paste it into the console, or run it with psql -f.",
			flags: flagsOf([]*flagDef{flagPrint, flagDatabase, flagAPISchema}, []*flagDef{unreadDir}, outputFlags),
			run:   runInstall,
		},
		{
			name: "push", op: "pushing migrations",
			summary: "apply pending migrations: one transaction, or consecutive atomic segments",
			help: "Uploads the migrations of --dir and lets the engine apply what is pending (one call of " +
				"migrate_run): one transaction, or, after commit-after markers and near the server's lock-table limit, " +
				"consecutive atomic transactions; non-transactional migrations run statement by statement from pgmig " +
				"under the same lock (docs/nontransactional.md). Nothing pending is answered by a lock-free check " +
				"without uploading SQL. A failing migration is shown with its file, line and column; the database keeps " +
				"what it had before the failing step. With --ddl-lock-timeout a migration that waits too long for a table " +
				"lock (behind a long transaction, with every reader of the table queued behind it) gives up instead, " +
				"naming the session in the way, and --retries pushes again later. With --targets FILE or --targets-query " +
				"SQL, pushes the same migrations to many databases, and with --schemas-query to every tenant schema, " +
				"--parallel at once, the --canary first; one line per target, a summary, exit 1 when any failed (docs/fleet.md).",
			flags: flagsOf([]*flagDef{flagTarget, flagLockTimeout.withDefault("the server's lock_timeout (normally: wait)"),
				flagAllowOutOfOrder, flagAllowMissing, flagSegmentSize, flagDDLLockTimeout, flagRetries, flagRetryMaxWait},
				fleetFlags, fileFlags, connFlags, outputFlags),
			validate: validatePush,
			run:      runPush,
		},
		{
			name: "status", op: "reading the status",
			summary: "show the applied history, who is migrating now, and what is pending",
			help: "Shows the engine version, the applied history (newest first), the migrator holding the lock if any, " +
				"and, when --dir holds migrations, what is pending. Exit 4 when the files drifted from the history.",
			flags: flagsOf([]*flagDef{flagAll, flagTarget, flagAllowOutOfOrder, flagAllowMissing}, fileFlags, connFlags, outputFlags),
			run:   runStatus,
		},
		{
			name: "plan", op: "planning",
			summary: "show what push would apply (--sql: its SQL; --rehearse: run it, measure it, roll it back)",
			help: "Shows what `pgmig push` would apply now. Changes nothing and takes no lock, so the answer can be stale by the time you push; " +
				"push checks again under the lock. --sql prints the SQL push would run, migration by migration. --rehearse runs the " +
				"pending migrations for real under the migration lock, reports per migration every relation it locks and in which mode, " +
				"the tables it rewrites with their size, the WAL it writes and how long it takes, and rolls everything back; guard " +
				"rails: --ddl-lock-timeout (default 1s) and --statement-timeout (default 1m). --fail-on makes it exit 4 on what your " +
				"team forbids (rewrite, access-exclusive, blocks-writes).",
			flags: flagsOf([]*flagDef{flagTarget, flagAllowOutOfOrder, flagAllowMissing, flagPrintSQL, flagRehearse, flagFailOn,
				flagDDLLockTimeout.withDefault("with --rehearse: 1s"), flagStatementTimeout,
				flagLockTimeout.withDefault("with --rehearse: the server's lock_timeout, within --statement-timeout")},
				fileFlags, connFlags, outputFlags),
			validate: validatePlan,
			run:      runPlanCommand,
		},
		{
			name: "wait", op: "waiting for migrations",
			summary: "wait until the database holds the migrations of --dir (or --version V); for application start-up",
			help: "Exits 0 as soon as the database holds exactly the migrations of --dir (the history digest; a database ahead of " +
				"them, migrated by a newer release, counts as ready too), or with --version V as soon as the newest applied version " +
				"is at least V. Takes no lock and changes nothing: for Kubernetes init containers and application start-up while " +
				"another process pushes (docs/deploy.md). Polls the history, and where the connection is a session of its own " +
				"(not through PgBouncer) listens for the engine's notification to return at once. Exit 3 on --timeout, 4 on drift " +
				"(which waiting cannot fix). A database that cannot be reached yet, or without the engine yet, is waited for.",
			flags: flagsOf([]*flagDef{flagTimeout, flagWaitVersion}, fileFlags, connFlags, outputFlags),
			run:   runWait,
		},
		{
			name: "validate", op: "validating migrations",
			summary: "check the files against the history under the lock, apply nothing",
			help: "Checks the files against the history under the migration lock (a dry run of migrate_apply) and applies " +
				"nothing. Without --wait it fails fast (exit 3) when another migrator holds the lock; with --wait it waits " +
				"for the lock, then validates.",
			flags: flagsOf([]*flagDef{flagWait, flagWaitTimeout, flagTarget,
				flagLockTimeout.withDefault("1s (with --wait: 200ms per attempt)"), flagAllowOutOfOrder, flagAllowMissing},
				fileFlags, connFlags, outputFlags),
			run: runValidate,
		},
		{
			name: "rollback", args: "--to V", op: "rolling back",
			summary: "roll back every version above V with the down SQL recorded in the history",
			help: "Rolls back every applied version above V (0: all), newest first, by running the down SQL recorded in the " +
				"history when each was applied: no files needed, so it also undoes versions a newer release applied. " +
				"One transaction: the whole range or nothing. Refuses (exit 4) naming every version in the range without " +
				"down SQL. Fails fast (exit 3) when another migrator holds the lock, unless --lock-timeout allows a wait.",
			flags: flagsOf([]*flagDef{flagTo, flagDryRun, flagLockTimeout.withDefault("do not wait")}, connFlags, []*flagDef{unreadDir}, outputFlags),
			validate: func(inv *invocation) error {
				if inv.opts.to < 0 {
					return usagef("rollback needs --to V: the version to go back to (0: roll back everything)")
				}
				return nil
			},
			run: runRollback,
		},
		{
			name: "baseline", args: "--version V | --from-tern", op: "baselining",
			summary: "record the migrations up to V as applied without running them (adopt a database)",
			help: "Adopts an existing database: records the migrations of --dir up to V as applied without running them " +
				"(checksums, SQL and down SQL from the files, so drift checks and rollback work later). Refuses (exit 4) " +
				"when the history already has versions above V. --from-tern is `pgmig adopt --from tern` (--tern-table for " +
				"its --table), reported as a baseline at tern's version. Then push applies only what comes after V.",
			flags: flagsOf([]*flagDef{flagBaselineVersion, flagFromTern, flagTernTable,
				flagLockTimeout.withDefault("the server's lock_timeout (normally: wait)")}, fileFlags, connFlags, outputFlags),
			validate: func(inv *invocation) error {
				if inv.opts.version > 0 == inv.opts.fromTern {
					return usagef("baseline needs exactly one of --version V and --from-tern")
				}
				return nil
			},
			run: runBaseline,
		},
		adoptCommand(),
		{
			name: "repair", op: "repairing the history",
			summary: "accept deliberate edits of applied migrations (record their new checksum and name)",
			help: "After a deliberate edit of applied migrations (a comment, formatting): records their new checksum, name, " +
				"SQL and down SQL; by default every drifted version. Nothing is executed. The old values, who, when and " +
				"from where go to pgmig.audit.",
			flags: flagsOf([]*flagDef{flagRepairVersion, flagLockTimeout.withDefault("the server's lock_timeout (normally: wait)")},
				fileFlags, connFlags, outputFlags),
			run: runRepair,
		},
		{
			name: "resolve", args: "V --retry | --applied", nargs: 1, op: "resolving",
			summary: "after an interrupted non-transactional migration: run it again, or record it as applied",
			help: "After an interrupted non-transactional migration (SQLSTATE PM009): --retry forgets the run, so the next " +
				"push runs it again from its first statement (undo what it did first); --applied records it as applied " +
				"(finish it by hand first). Audited. Fails fast when another migrator holds the lock.",
			flags: flagsOf([]*flagDef{flagRetry, flagApplied, flagLockTimeout.withDefault("do not wait")}, connFlags, []*flagDef{unreadDir}, outputFlags),
			validate: func(inv *invocation) error {
				v, err := parseVersionArg(inv.args[0])
				if err != nil || inv.opts.retry == inv.opts.applied {
					return usagef("usage: pgmig resolve V --retry | --applied (V: the interrupted version)")
				}
				inv.resolveVersion = v
				return nil
			},
			run: runResolve,
		},
		{
			name: "new", args: "NAME", nargs: 1, op: "creating a migration",
			summary: "create the next numbered migration file in --dir (created if missing)",
			help: "Creates the next numbered file in --dir (003_NAME.sql, keeping the existing zero padding) with tern's " +
				"template text. The directory is created when it does not exist yet.",
			flags: flagsOf([]*flagDef{flagDir}, outputFlags),
			validate: func(inv *invocation) error {
				name := strings.ReplaceAll(strings.TrimSpace(inv.args[0]), " ", "_")
				if !newNamePattern.MatchString(name) {
					return usagef("invalid migration name %q: use letters, digits, _ . -", inv.args[0])
				}
				inv.args[0] = name
				return nil
			},
			run: runNew,
		},
		{
			name: "batch", op: "writing the batch",
			summary: "print the batch push would send (the jsonb migrate_run takes), for psql and schedulers",
			help: "Prints the batch pgmig push would send for the migrations in --dir: the jsonb array the engine's " +
				"migrate_run and migrate_apply take (docs/sql-api.md, \"Batch format\"), with the same loader, templates and " +
				"checksums as push. The batch goes to stdout, the count and history digest to stderr; with --json one " +
				"document {\"batch\": [...], \"migrations\": N, \"history_digest\": \"...\"}. Needs no database. " +
				"Example: psql -v batch=\"$(pgmig batch --dir migrations)\" -c \"CALL pgmig.migrate_run(:'batch')\" (docs/admin-tooling.md).",
			flags: flagsOf([]*flagDef{flagBatchTarget}, fileFlags, outputFlags),
			run:   runBatch,
		},
		{
			name: "bundle", op: "writing the release script",
			summary: "write one self-contained SQL script that applies the migrations (psql -f, an admin GUI)",
			help: "Writes one SQL statement that applies the migrations of --dir when run, for a DBA or a deploy job with " +
				"psql or an admin GUI but no pgmig: exactly once however many sessions run it at once, each transaction all " +
				"or nothing, nothing to do when run again (it calls migrate_run). Needs no database. --with-engine installs " +
				"or upgrades the engine first. Non-transactional migrations cannot run from a script: they are refused (exit " +
				"4), naming them, unless --nontx-applied says they are applied already wherever the script will run. Run it " +
				"with psql -v ON_ERROR_STOP=1 -f release.sql, or paste it into a GUI in autocommit (docs/admin-tooling.md).",
			flags: flagsOf([]*flagDef{flagO, flagOutput, flagWithEngine, flagNontxApplied, flagBatchTarget}, fileFlags, outputFlags),
			validate: func(inv *invocation) error {
				if inv.opts.json && inv.opts.output == "" {
					return usagef("pgmig bundle --json needs -o FILE: without it the script itself goes to stdout")
				}
				return nil
			},
			run: runBundle,
		},
		{
			name: "stage", args: "--label L | --list", op: "staging the release",
			summary: "store the migrations in the database as a staged release, for CALL migrate_run_staged(L)",
			help: "Stores the migrations of --dir in the database as the staged release L (the engine's migrate_stage), " +
				"validated against the history now. Later anyone with the grant applies it exactly as push would, from " +
				"psql, an admin GUI or pg_cron: CALL migrate_run_staged('L'). Staging the same label again with the same " +
				"migrations changes nothing; with others it is refused (exit 4: a staged release never changes). --list " +
				"shows every staged release and what became of it (pending, running, applied, failed, interrupted). " +
				"See docs/admin-tooling.md, also for a role that may stage but not run.",
			flags:    flagsOf([]*flagDef{flagLabel, flagList, flagBatchTarget}, fileFlags, []*flagDef{flagDatabase}, outputFlags),
			validate: validateStage,
			run:      runStage,
		},
		{
			name: "config", op: "reading the configuration",
			summary: "print the effective configuration and where each value came from",
			help: "Prints every setting as the other commands would see it, and where its value came from: a flag, an " +
				"environment variable, the config file (file:line) or the default. Passwords are masked. Connects to nothing.",
			flags: flagsOf([]*flagDef{flagLockTimeout.withDefault("per command"), flagSegmentSize, flagAllowOutOfOrder,
				flagAllowMissing, flagTernTable, flagWaitTimeout, flagAPISchema, flagDDLLockTimeout, flagRetries, flagRetryMaxWait,
				flagStatementTimeout, flagFailOn}, fileFlags, connFlags, outputFlags),
			run: runConfig,
		},
		{
			name: "version", op: "version",
			summary: "print pgmig's version and the engine version it installs",
			help:    "Prints pgmig's version and the engine version it installs and supports.",
			flags:   []*flagDef{flagJSON},
			run:     runVersion,
		},
		{
			name: "help", args: "[COMMAND]", nargs: -1, op: "help",
			summary: "list the commands, or show one command's usage and flags",
			help:    "Without an argument, lists the commands, the configuration rules and the exit codes. With one, shows that command's usage and flags (as `pgmig COMMAND --help` does).",
			flags:   []*flagDef{flagJSON},
			run:     runHelp,
		},
	}
}

func lookupCommand(name string) *command {
	for _, c := range commands {
		if c.name == name {
			return c
		}
	}
	return nil
}

// allFlags is every distinct flag definition, for the config file's list
// of known keys.
func allFlags() []*flagDef {
	seen := map[*flagDef]bool{}
	var out []*flagDef
	for _, c := range commands {
		for _, d := range c.flags {
			if !seen[d] {
				seen[d] = true
				out = append(out, d)
			}
		}
	}
	return out
}

func parseVersionArg(s string) (int64, error) {
	v, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || v < 1 {
		return 0, fmt.Errorf("invalid version %q", s)
	}
	return v, nil
}

// usageLine is "pgmig push [flags]".
func (c *command) usageLine() string {
	s := "pgmig " + c.name
	if c.args != "" {
		s += " " + c.args
	}
	return s + " [flags]"
}

// checkArgs checks the number of positional arguments.
func (c *command) checkArgs(args []string) error {
	switch {
	case c.nargs < 0:
		return nil
	case len(args) > c.nargs:
		return usagef("pgmig %s: unexpected argument %q (usage: %s)", c.name, args[c.nargs], c.usageLine())
	case len(args) < c.nargs:
		return usagef("usage: %s", c.usageLine())
	}
	return nil
}
