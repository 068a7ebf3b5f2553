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
)

const usage = `pgmig applies PostgreSQL schema migrations with the pgmig engine, which runs
inside the database. Migration files use tern's format (001_name.sql).

Usage:
  pgmig <command> [flags]

Commands:
  install    install or upgrade the engine in the database (--print: write the SQL instead)
  push       apply pending migrations, all in one transaction
  status     show the applied history, who is migrating now, and what is pending
  plan       show what push would apply; changes nothing, takes no lock
  validate   check the files against the history under the lock, apply nothing
             (--wait: wait while another migrator holds the lock instead of failing)
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
  --lock-timeout D   wait at most D (e.g. 10s) for the migration lock
  --allow-out-of-order, --allow-missing
Flags of push:
  --segment-size N   apply in consecutive transactions of at most N migrations each
                     (for first-time batches too big for one transaction's lock table)
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
	segmentSize     int
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
	case "push", "validate":
		fs.DurationVar(&o.lockTimeout, "lock-timeout", 0, "wait at most this long for the migration lock")
	}
	if cmd == "push" {
		fs.IntVar(&o.segmentSize, "segment-size", 0, "apply in consecutive transactions of at most this many migrations")
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

func load(o options, out *output) ([]*pgmig.Migration, int) {
	ms, err := pgmig.LoadDir(o.dir, nil)
	if err != nil {
		out.fail(err)
		return nil, exitCode(err)
	}
	return ms, exitOK
}

func exitCode(err error) int {
	var merr *pgmig.MigrationError
	var lerr *pgmig.LoadError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &merr), errors.Is(err, pgmig.ErrNotRunnable):
		return exitMigration
	case errors.Is(err, pgmig.ErrLockTimeout):
		return exitLocked
	case errors.Is(err, pgmig.ErrDrift), errors.Is(err, pgmig.ErrInvalidBatch), errors.As(err, &lerr),
		errors.Is(err, pgmig.ErrInterrupted),
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
	ms, code := load(o, out)
	if ms == nil {
		return code
	}
	client, code := connect(ctx, o, out)
	if client == nil {
		return code
	}
	defer client.Close(context.WithoutCancel(ctx))
	live := out.startProgress()
	res, err := client.Push(ctx, ms, &pgmig.PushOpts{
		TargetVersion:   o.target,
		LockTimeout:     o.lockTimeout,
		AllowOutOfOrder: o.allowOutOfOrder,
		AllowMissing:    o.allowMissing,
		SegmentSize:     o.segmentSize,
		Progress:        live.progress,
		Notice:          live.notice,
	})
	live.stop(err == nil)
	if err != nil {
		out.fail(err)
		return exitCode(err)
	}
	out.pushed(res, live)
	return exitOK
}

func cmdPlan(ctx context.Context, o options, out *output) int {
	ms, code := load(o, out)
	if ms == nil {
		return code
	}
	client, code := connect(ctx, o, out)
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
	// Pending migrations, when --dir holds any (status also works from
	// anywhere, for the history alone).
	var plan *pgmig.PlanResult
	var planErr error
	if ms, err := pgmig.LoadDir(o.dir, nil); err == nil {
		plan, planErr = client.Plan(ctx, ms, &pgmig.PlanOpts{TargetVersion: o.target, AllowOutOfOrder: o.allowOutOfOrder, AllowMissing: o.allowMissing})
	} else if !errors.Is(err, pgmig.ErrNoMigrations) {
		planErr = err
	}
	out.status(st, plan, planErr, o.all)
	if planErr != nil {
		return exitCode(planErr)
	}
	return exitOK
}

func cmdValidate(ctx context.Context, o options, out *output) int {
	ms, code := load(o, out)
	if ms == nil {
		return code
	}
	client, code := connect(ctx, o, out)
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
