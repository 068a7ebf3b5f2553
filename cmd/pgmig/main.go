// Command pgmig applies PostgreSQL schema migrations (tern's file format)
// with the pgmig engine, which runs inside the database.
//
//	pgmig install            install or upgrade the engine
//	pgmig push               apply pending migrations
//	pgmig status | plan | validate | new NAME | version | help
//
// See docs/cli.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	pgmig "github.com/pgmig/pgmig/gowrapper"
)

// Exit codes (docs/cli.md).
const (
	exitOK         = 0
	exitMigration  = 1 // a migration failed: SQL error, nothing applied
	exitUsage      = 2 // usage, connection, engine missing/unsupported, other
	exitLocked     = 3 // lock timeout: another migrator holds the lock
	exitValidation = 4 // drift, invalid batch, bad migration files
	exitLost       = 5 // connection lost mid-push: re-run (outcome possibly unknown)
)

const usage = `pgmig applies PostgreSQL schema migrations with the pgmig engine, which runs
inside the database. Migration files use tern's format (001_name.sql).

Usage:
  pgmig <command> [flags]

Commands:
  install    install or upgrade the engine in the database (--print: write the SQL instead)
  push       apply pending migrations: one transaction, or consecutive atomic segments
             (commit-after markers, disable-tx migrations, batches too big for the
             lock table; see --segment-size)
  status     show the applied history, who is migrating now, and what is pending
  plan       show what push would apply; changes nothing, takes no lock
  validate   check the files against the history under the lock, apply nothing
             (--wait: wait while another migrator holds the lock instead of failing)
  rollback --to V
             roll back every version above V with the down SQL recorded in the
             history, newest first, in one transaction (fails fast if another
             migrator holds the lock; --dry-run: only check)
  baseline --version V | --from-tern
             record the migrations up to V as applied without running them
             (adopt an existing database; --from-tern reads V from tern's table)
  repair [--version V ...]
             accept deliberate edits of applied migrations: record their new
             checksum and name (default: every drifted version); audited
  resolve V --retry | --applied
             after an interrupted non-transactional migration: run it again
             from its first statement on the next push (you undid what it did),
             or record it as applied (you finished it by hand); audited
  new NAME   create the next numbered migration file in --dir
  version    print pgmig's version and the engine version it installs
  help       show this help

Flags (all commands that talk to the database):
  --database URL     connection string; default $DATABASE_URL, else libpq's PG*
                     environment variables and ~/.pgpass
  --schema NAME      API schema the engine was installed in (default public)
  --dir DIR          migrations directory (default: current directory)
  --json             machine-readable output on stdout (errors too)
  --quiet            print only errors
Flags of push, plan, validate:
  --target N         apply versions up to N only
  --lock-timeout D   wait at most D (e.g. 10s) for the migration lock (also rollback,
                     baseline, repair, resolve; rollback and resolve default to not waiting)
  --allow-out-of-order, --allow-missing
Flags of push:
  --segment-size N   commit after every N migrations (each segment is atomic; earlier
                     segments stay applied if a later one fails). Default auto: one
                     transaction unless the pending migrations would not fit the
                     server's lock table (then segments sized from
                     max_locks_per_transaction); "all": one transaction regardless
Flags of rollback: --to V (required; 0 = everything), --dry-run
Flags of baseline: --version V, or --from-tern [--tern-table public.schema_version]
Flags of repair:   --version V (repeatable; default: every drifted version)
Flags of resolve:  --retry or --applied
Flags of validate:
  --wait             wait while another migrator holds the lock
  --wait-timeout D   give up waiting after D (default: wait indefinitely)
Flags of status:
  --all              show the whole history (default: the newest 20 entries)

Exit codes:
  0  success
  1  a migration failed (the database was left unchanged)
  2  usage, connection or engine problem (not installed, unsupported version)
  3  lock timeout: another migrator holds the lock
  4  drift or validation error (changed/missing/out-of-order versions, bad files,
     an interrupted non-transactional migration waiting for migrate_resolve)
  5  the connection was lost (or the push interrupted) mid-push: whether the last
     step was committed may be unknown (the message says); re-running push is safe
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// options are the flags, shared by every command; each command registers
// the ones it uses.
type options struct {
	database        string
	schema          string
	dir             string
	json            bool
	quiet           bool
	target          int64
	lockTimeout     time.Duration
	allowOutOfOrder bool
	allowMissing    bool
	wait            bool
	waitTimeout     time.Duration
	print           bool
	all             bool
	segmentSize     string
	to              int64
	dryRun          bool
	version         int64
	versions        versionList
	fromTern        bool
	ternTable       string
	retry, applied  bool
}

// versionList is a repeatable --version flag.
type versionList []int64

func (l *versionList) String() string { return fmt.Sprint([]int64(*l)) }
func (l *versionList) Set(s string) error {
	for _, part := range strings.Split(s, ",") {
		v, err := strconv.ParseInt(strings.TrimSpace(part), 10, 64)
		if err != nil || v < 1 {
			return fmt.Errorf("invalid version %q", part)
		}
		*l = append(*l, v)
	}
	return nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "help", "-h", "--help", "-help":
		fmt.Fprint(stdout, usage)
		return exitOK
	case "version", "--version", "-version":
		return cmdVersion(args, stdout, stderr)
	case "batch":
		return runBatch(ctx, args, stdout, stderr)
	case "bundle":
		return runBundle(ctx, args, stdout, stderr)
	case "stage":
		return runStage(ctx, args, stdout, stderr)
	}

	var o options
	fs := flag.NewFlagSet("pgmig "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprintf(stderr, "usage: pgmig %s [flags]; see pgmig help\n", cmd) }
	fs.BoolVar(&o.json, "json", false, "machine-readable output")
	fs.BoolVar(&o.quiet, "quiet", false, "print only errors")
	fs.StringVar(&o.dir, "dir", ".", "migrations directory")
	if cmd != "new" {
		fs.StringVar(&o.database, "database", "", "connection string (default $DATABASE_URL, else PG* variables)")
		fs.StringVar(&o.schema, "schema", "public", "API schema of the engine")
	}
	switch cmd {
	case "push", "plan", "validate", "status":
		fs.Int64Var(&o.target, "target", 0, "apply versions up to this one only")
		fs.BoolVar(&o.allowOutOfOrder, "allow-out-of-order", false, "apply pending versions older than the newest applied one")
		fs.BoolVar(&o.allowMissing, "allow-missing", false, "tolerate applied versions missing from the files")
	}
	switch cmd {
	case "push", "validate", "rollback", "baseline", "repair", "resolve":
		fs.DurationVar(&o.lockTimeout, "lock-timeout", 0, "wait at most this long for the migration lock")
	}
	switch cmd {
	case "push":
		fs.StringVar(&o.segmentSize, "segment-size", "auto", "commit after every N migrations; auto (0) or all")
	case "rollback":
		fs.Int64Var(&o.to, "to", -1, "roll back every version above this one (0: all)")
		fs.BoolVar(&o.dryRun, "dry-run", false, "check under the lock, roll nothing back")
	case "baseline":
		fs.Int64Var(&o.version, "version", 0, "record the migrations up to this version as applied")
		fs.BoolVar(&o.fromTern, "from-tern", false, "take the version from tern's version table")
		fs.StringVar(&o.ternTable, "tern-table", "public.schema_version", "tern's version table")
	case "repair":
		fs.Var(&o.versions, "version", "repair this version (repeatable; default: every drifted one)")
	case "resolve":
		fs.BoolVar(&o.retry, "retry", false, "run the migration again from its first statement on the next push")
		fs.BoolVar(&o.applied, "applied", false, "record the migration as applied (finished by hand)")
	}
	switch cmd {
	case "validate":
		fs.BoolVar(&o.wait, "wait", false, "wait while another migrator holds the lock")
		fs.DurationVar(&o.waitTimeout, "wait-timeout", 0, "give up waiting after this long (0: never)")
	case "install":
		fs.BoolVar(&o.print, "print", false, "write the install SQL to stdout instead of running it")
	case "status":
		fs.BoolVar(&o.all, "all", false, "show the whole history (default: the newest 20)")
	}
	positional, err := parseInterspersed(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if o.database == "" {
		o.database = os.Getenv("DATABASE_URL")
	}
	out := newOutput(stdout, stderr, o.json, o.quiet)
	out.dir = o.dir

	if cmd == "new" {
		if len(positional) != 1 {
			fmt.Fprintln(stderr, "usage: pgmig new NAME [--dir DIR]")
			return exitUsage
		}
		return cmdNew(o, positional[0], out)
	}
	if cmd == "resolve" {
		return cmdResolve(ctx, o, positional, out)
	}
	if len(positional) > 0 {
		fmt.Fprintf(stderr, "pgmig %s: unexpected argument %q\n", cmd, positional[0])
		return exitUsage
	}
	switch cmd {
	case "install":
		return cmdInstall(ctx, o, out)
	case "push":
		return cmdPush(ctx, o, out)
	case "status":
		return cmdStatus(ctx, o, out)
	case "plan":
		return cmdPlan(ctx, o, out)
	case "validate":
		return cmdValidate(ctx, o, out)
	case "rollback":
		return cmdRollback(ctx, o, out)
	case "baseline":
		return cmdBaseline(ctx, o, out)
	case "repair":
		return cmdRepair(ctx, o, out)
	}
	fmt.Fprintf(stderr, "pgmig: unknown command %q; see pgmig help\n", cmd)
	return exitUsage
}

// parseInterspersed lets flags come after positional arguments too
// (pgmig new add_users --dir db/migrations).
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return positional, nil
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

func cmdVersion(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("pgmig version", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "machine-readable output")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	v := pgmig.SupportedEngineVersion()
	if *asJSON {
		writeJSON(stdout, map[string]string{"pgmig": v, "engine": v})
		return exitOK
	}
	fmt.Fprintf(stdout, "pgmig %s (installs and supports engine %s)\n", v, v)
	return exitOK
}

func connect(ctx context.Context, o options, out *output) (*pgmig.Client, int) {
	client, err := pgmig.Connect(ctx, o.database, &pgmig.Config{Schema: o.schema})
	if err != nil {
		out.fail(err)
		return nil, exitUsage
	}
	return client, exitOK
}

// loadAndConnect loads the migrations of --dir while it connects: loading
// waits on the disk, connecting on the network and on the server starting a
// backend, so doing both at once saves the shorter of the two. connected,
// when not nil, runs as soon as the connection is up, still while the files
// load (push reads the history digest there). The outcome is reported as if
// one followed the other: a load error wins (the connection, if one was
// made, is closed unused), then a connection error.
func loadAndConnect(ctx context.Context, o options, out *output, connected func(context.Context, *pgmig.Client)) ([]*pgmig.Migration, *pgmig.Client, int) {
	type connection struct {
		client *pgmig.Client
		err    error
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // the connection does not keep the context it was opened with
	done := make(chan connection, 1)
	go func() {
		client, err := pgmig.Connect(ctx, o.database, &pgmig.Config{Schema: o.schema})
		if err == nil && connected != nil {
			connected(ctx, client)
		}
		done <- connection{client, err}
	}()
	ms, err := pgmig.LoadDir(o.dir, nil)
	if err != nil {
		cancel()
		if c := <-done; c.client != nil {
			c.client.Close(context.WithoutCancel(ctx))
		}
		out.fail(err)
		return nil, nil, exitCode(err)
	}
	c := <-done
	if c.err != nil {
		out.fail(c.err)
		return nil, nil, exitUsage
	}
	return ms, c.client, exitOK
}

func exitCode(err error) int {
	var merr *pgmig.MigrationError
	var lerr *pgmig.LoadError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, pgmig.ErrConnectionLost):
		return exitLost
	case errors.As(err, &merr), errors.Is(err, pgmig.ErrNotRunnable):
		return exitMigration
	case errors.Is(err, pgmig.ErrLockTimeout):
		return exitLocked
	case errors.Is(err, pgmig.ErrDrift), errors.Is(err, pgmig.ErrInvalidBatch), errors.As(err, &lerr),
		errors.Is(err, pgmig.ErrInterrupted), errors.Is(err, pgmig.ErrIrreversible),
		errors.Is(err, pgmig.ErrNoMigrations):
		return exitValidation
	}
	return exitUsage
}

func cmdInstall(ctx context.Context, o options, out *output) int {
	if o.print {
		fmt.Fprint(out.stdout, pgmig.InstallScript())
		return exitOK
	}
	client, code := connect(ctx, o, out)
	if client == nil {
		return code
	}
	defer client.Close(context.WithoutCancel(ctx))
	res, err := client.Install(ctx, nil)
	if err != nil {
		out.fail(err)
		return exitCode(err)
	}
	out.installed(res)
	return exitOK
}

func cmdPush(ctx context.Context, o options, out *output) int {
	// An up-to-date database is answered by comparing this digest with the
	// files': ask for it while they load. An error here is left for Push to
	// report, as it would without the early read.
	var digest string
	ms, client, code := loadAndConnect(ctx, o, out, func(ctx context.Context, client *pgmig.Client) {
		digest, _ = client.HistoryDigest(ctx)
	})
	if client == nil {
		return code
	}
	defer client.Close(context.WithoutCancel(ctx))
	segmentSize, err := parseSegmentSize(o.segmentSize)
	if err != nil {
		out.fail(err)
		return exitUsage
	}
	live := out.startProgress()
	popts := &pgmig.PushOpts{
		TargetVersion:   o.target,
		LockTimeout:     o.lockTimeout,
		AllowOutOfOrder: o.allowOutOfOrder,
		AllowMissing:    o.allowMissing,
		SegmentSize:     segmentSize,
		HistoryDigest:   digest,
	}
	if live.enabled {
		// --quiet and --json show neither: without callbacks the server is
		// asked not to send the notices at all.
		popts.Progress, popts.Notice = live.progress, live.notice
	}
	res, err := client.Push(ctx, ms, popts)
	live.stop(err == nil)
	if err != nil {
		out.fail(err)
		return exitCode(err)
	}
	out.pushed(res, live)
	return exitOK
}

// parseSegmentSize: "auto" or "0" (automatic), "all" (one transaction),
// or a positive count.
func parseSegmentSize(s string) (int, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "auto", "0":
		return 0, nil
	case "all":
		return pgmig.SegmentAll, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("--segment-size %q: want a positive number, auto (0) or all", s)
	}
	return n, nil
}

func cmdRollback(ctx context.Context, o options, out *output) int {
	if o.to < 0 {
		out.fail(errors.New("rollback needs --to V: the version to go back to (0: roll back everything)"))
		return exitUsage
	}
	client, code := connect(ctx, o, out)
	if client == nil {
		return code
	}
	defer client.Close(context.WithoutCancel(ctx))
	live := out.startProgress()
	live.verb, live.failedVerb = "rolled back", "failed rolling back"
	res, err := client.Rollback(ctx, o.to, &pgmig.RollbackOpts{
		LockTimeout: o.lockTimeout, DryRun: o.dryRun, Progress: live.progress, Notice: live.notice,
	})
	live.stop(err == nil)
	if err != nil {
		out.fail(err)
		return exitCode(err)
	}
	out.rolledBack(res, o.to, o.dryRun, live)
	return exitOK
}

func cmdBaseline(ctx context.Context, o options, out *output) int {
	if o.version > 0 == o.fromTern {
		out.fail(errors.New("baseline needs exactly one of --version V and --from-tern"))
		return exitUsage
	}
	ms, client, code := loadAndConnect(ctx, o, out, nil)
	if client == nil {
		return code
	}
	defer client.Close(context.WithoutCancel(ctx))
	version := o.version
	if o.fromTern {
		v, err := client.TernVersion(ctx, o.ternTable)
		if err != nil {
			out.fail(err)
			return exitUsage
		}
		if v < 1 {
			out.fail(fmt.Errorf("tern's version table %s says version %d: nothing to baseline", o.ternTable, v))
			return exitValidation
		}
		out.info("tern's version table %s is at version %d", o.ternTable, v)
		version = v
	}
	res, err := client.Baseline(ctx, ms, version, &pgmig.BaselineOpts{LockTimeout: o.lockTimeout})
	if err != nil {
		out.fail(err)
		return exitCode(err)
	}
	out.baselined(res, version)
	return exitOK
}

func cmdRepair(ctx context.Context, o options, out *output) int {
	ms, client, code := loadAndConnect(ctx, o, out, nil)
	if client == nil {
		return code
	}
	defer client.Close(context.WithoutCancel(ctx))
	res, err := client.Repair(ctx, ms, &pgmig.RepairOpts{Versions: o.versions, LockTimeout: o.lockTimeout})
	if err != nil {
		out.fail(err)
		return exitCode(err)
	}
	out.repaired(res)
	return exitOK
}

func cmdResolve(ctx context.Context, o options, positional []string, out *output) int {
	var version int64
	var err error
	if len(positional) == 1 {
		version, err = strconv.ParseInt(positional[0], 10, 64)
	}
	if len(positional) != 1 || err != nil || version < 1 || o.retry == o.applied {
		out.fail(errors.New("usage: pgmig resolve V --retry | --applied"))
		return exitUsage
	}
	action := pgmig.ResolveRetry
	if o.applied {
		action = pgmig.ResolveApplied
	}
	client, code := connect(ctx, o, out)
	if client == nil {
		return code
	}
	defer client.Close(context.WithoutCancel(ctx))
	res, err := client.Resolve(ctx, version, action, &pgmig.ResolveOpts{LockTimeout: o.lockTimeout})
	if err != nil {
		out.fail(err)
		return exitCode(err)
	}
	out.resolved(res, action)
	return exitOK
}

func cmdPlan(ctx context.Context, o options, out *output) int {
	ms, client, code := loadAndConnect(ctx, o, out, nil)
	if client == nil {
		return code
	}
	defer client.Close(context.WithoutCancel(ctx))
	res, err := client.Plan(ctx, ms, &pgmig.PlanOpts{TargetVersion: o.target, AllowOutOfOrder: o.allowOutOfOrder, AllowMissing: o.allowMissing})
	if err != nil {
		out.fail(err)
		return exitCode(err)
	}
	out.planned(res)
	return exitOK
}

func cmdStatus(ctx context.Context, o options, out *output) int {
	// Pending migrations, when --dir holds any (status also works from
	// anywhere, for the history alone), loaded while connecting.
	type loaded struct {
		ms  []*pgmig.Migration
		err error
	}
	load := make(chan loaded, 1)
	go func() {
		ms, err := pgmig.LoadDir(o.dir, nil)
		load <- loaded{ms, err}
	}()
	client, code := connect(ctx, o, out)
	if client == nil {
		return code
	}
	defer client.Close(context.WithoutCancel(ctx))
	st, err := client.Status(ctx)
	if err != nil {
		out.fail(err)
		return exitCode(err)
	}
	var plan *pgmig.PlanResult
	var planErr error
	if l := <-load; l.err == nil {
		plan, planErr = client.Plan(ctx, l.ms, &pgmig.PlanOpts{TargetVersion: o.target, AllowOutOfOrder: o.allowOutOfOrder, AllowMissing: o.allowMissing})
	} else if !errors.Is(l.err, pgmig.ErrNoMigrations) {
		planErr = l.err
	}
	out.status(st, plan, planErr, o.all)
	if planErr != nil {
		return exitCode(planErr)
	}
	return exitOK
}

func cmdValidate(ctx context.Context, o options, out *output) int {
	ms, client, code := loadAndConnect(ctx, o, out, nil)
	if client == nil {
		return code
	}
	defer client.Close(context.WithoutCancel(ctx))
	if o.wait && o.waitTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.waitTimeout)
		defer cancel()
	}
	lockTimeout := o.lockTimeout
	if lockTimeout == 0 {
		// Without --wait, fail fast rather than queue behind a migrator.
		lockTimeout = time.Second
		if o.wait {
			lockTimeout = 200 * time.Millisecond
		}
	}
	announced := false
	for {
		if o.wait {
			if err := waitForLock(ctx, client, out, &announced); err != nil {
				out.fail(err)
				return exitLocked
			}
		}
		res, err := client.Push(ctx, ms, &pgmig.PushOpts{
			DryRun: true, TargetVersion: o.target, LockTimeout: lockTimeout,
			AllowOutOfOrder: o.allowOutOfOrder, AllowMissing: o.allowMissing,
		})
		if o.wait && errors.Is(err, pgmig.ErrLockTimeout) && ctx.Err() == nil {
			continue // another migrator took the lock between our poll and our call
		}
		if err != nil {
			out.fail(err)
			return exitCode(err)
		}
		out.validated(res)
		return exitOK
	}
}

// waitForLock polls the lock holder until nobody holds the history lock.
func waitForLock(ctx context.Context, client *pgmig.Client, out *output, announced *bool) error {
	for {
		h, err := client.LockHolder(ctx)
		if err != nil {
			return err
		}
		if h == nil {
			return nil
		}
		if !*announced {
			out.info("waiting for the migration lock held by %s", h)
			*announced = true
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: still held by %s: %w", pgmig.ErrLockTimeout, h, ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}

var newNamePattern = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)

// newMigrationText is tern's, so `pgmig new` and `tern new` agree.
const newMigrationText = `-- Write your migrate up statements here

---- create above / drop below ----

-- Write your migrate down statements here. If this migration is irreversible
-- Then delete the separator line above.
`

func cmdNew(o options, name string, out *output) int {
	name = strings.ReplaceAll(strings.TrimSpace(name), " ", "_")
	if !newNamePattern.MatchString(name) {
		out.fail(fmt.Errorf("invalid migration name %q: use letters, digits, _ . -", name))
		return exitUsage
	}
	entries, err := os.ReadDir(o.dir)
	if err != nil {
		out.fail(err)
		return exitUsage
	}
	fileRE := regexp.MustCompile(`\A(\d+)_.+\.sql\z`)
	next, width := int64(1), 3
	for _, e := range entries {
		m := fileRE.FindStringSubmatch(e.Name())
		if m == nil || e.IsDir() {
			continue
		}
		v, err := strconv.ParseInt(m[1], 10, 64)
		if err != nil {
			continue
		}
		if v >= next {
			next = v + 1
		}
		width = max(width, len(m[1]))
	}
	file := fmt.Sprintf("%0*d_%s.sql", width, next, name)
	path := filepath.Join(o.dir, file)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o666)
	if err != nil {
		out.fail(err)
		return exitUsage
	}
	if _, err := f.WriteString(newMigrationText); err != nil {
		f.Close()
		out.fail(err)
		return exitUsage
	}
	if err := f.Close(); err != nil {
		out.fail(err)
		return exitUsage
	}
	out.created(path, next)
	return exitOK
}
