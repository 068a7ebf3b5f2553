package pgmig

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// Target is one database of a fleet, or one tenant schema in it.
type Target struct {
	// Name identifies the target in output: host, port, database and user,
	// never the password; and the tenant schema, if any.
	Name string `json:"target"`
	// DSN is the connection string (URL or key=value), secrets included.
	DSN string `json:"-"`
	// Scope is the tenant schema (Config.Scope) of the push; empty: the
	// database's own migrations.
	Scope string `json:"schema,omitempty"`
}

// ParseTargets reads a targets file: one connection string (URL or
// key=value) per line; blank lines and lines starting with # are skipped,
// and $VAR / ${VAR} are expanded from env (so that secrets can stay in the
// environment; ~/.pgpass and PGPASSWORD work as for any connection). where
// names the source in errors.
func ParseTargets(r io.Reader, where string, env func(string) string) ([]Target, error) {
	var targets []Target
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		dsn := os.Expand(text, env)
		cfg, err := pgx.ParseConfig(dsn)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %s", where, line, MaskDSN(err.Error()))
		}
		targets = append(targets, Target{Name: targetName(cfg.Host, cfg.Port, cfg.Database, cfg.User), DSN: dsn})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	return targets, nil
}

// TargetOf is the database of connection string dsn as a target ("" means
// libpq's environment and defaults, as for Connect).
func TargetOf(dsn string) (Target, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return Target{}, fmt.Errorf("parsing the connection string: %s", MaskDSN(err.Error()))
	}
	return Target{Name: targetName(cfg.Host, cfg.Port, cfg.Database, cfg.User), DSN: dsn}, nil
}

// TargetsOfDatabases is the databases named by names on the server of base
// (a connection string): base with each database name in turn. A name that
// is itself a connection string (URL or key=value) is taken as it is.
func TargetsOfDatabases(base string, names []string) ([]Target, error) {
	cfg, err := pgx.ParseConfig(base)
	if err != nil {
		return nil, fmt.Errorf("parsing the catalog connection string: %s", MaskDSN(err.Error()))
	}
	targets := make([]Target, 0, len(names))
	for _, n := range names {
		n = strings.TrimSpace(n)
		if n == "" {
			continue
		}
		if strings.Contains(n, "://") || strings.Contains(n, "=") {
			c, err := pgx.ParseConfig(n)
			if err != nil {
				return nil, fmt.Errorf("target %q: %s", MaskDSN(n), MaskDSN(err.Error()))
			}
			targets = append(targets, Target{Name: targetName(c.Host, c.Port, c.Database, c.User), DSN: n})
			continue
		}
		targets = append(targets, Target{Name: targetName(cfg.Host, cfg.Port, n, cfg.User), DSN: withDatabase(base, n)})
	}
	return targets, nil
}

// withDatabase is dsn with its database replaced.
func withDatabase(dsn, db string) string {
	if u, err := url.Parse(dsn); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		u.Path = "/" + db
		return u.String()
	}
	// key=value: a later dbname wins.
	return dsn + " dbname='" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(db) + "'"
}

func targetName(host string, port uint16, db, user string) string {
	if strings.HasPrefix(host, "/") {
		host = "socket:" + host
	}
	return fmt.Sprintf("%s:%d/%s (%s)", host, port, db, user)
}

var (
	urlPassword = regexp.MustCompile(`(://[^:/@\s]*:)[^@\s]*@`)
	kvPassword  = regexp.MustCompile(`(?i)(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)`)
)

// MaskDSN hides the passwords in a text holding connection strings.
func MaskDSN(s string) string {
	s = urlPassword.ReplaceAllString(s, "${1}***@")
	return kvPassword.ReplaceAllString(s, "${1}***")
}

// FleetOpts configures PushFleet. A nil *FleetOpts means defaults.
type FleetOpts struct {
	// Push configures each target's push (Progress and Notice are not
	// used: many targets run at once).
	Push PushOpts
	// Config configures each target's Client.
	Config *Config
	// Parallel is how many targets are pushed at once (default 4).
	Parallel int
	// Canary: the first Canary targets are pushed first, on their own;
	// if any of them fails, no other target is started.
	Canary int
	// ContinueOnError starts the remaining targets after a failure;
	// by default no new target is started once one failed (those already
	// running finish).
	ContinueOnError bool
	// Install installs the engine on targets where it is missing, and
	// upgrades it where it is older than this package's; without it they
	// are reported as failed.
	Install bool
	// ConnectTimeout bounds each connection attempt (default 10s).
	ConnectTimeout time.Duration
	// Started and Done are called as each target starts and ends (from
	// the worker goroutines, one call at a time).
	Started func(Target)
	Done    func(TargetResult)
}

// TargetOutcome is what a fleet push did on one target.
type TargetOutcome string

const (
	TargetApplied  TargetOutcome = "applied"    // migrations were applied
	TargetUpToDate TargetOutcome = "up_to_date" // nothing was pending
	TargetFailed   TargetOutcome = "failed"     // the push failed there (Err)
	TargetSkipped  TargetOutcome = "skipped"    // not started: an earlier failure stopped the rollout
)

// TargetResult is one target's outcome.
type TargetResult struct {
	Target string `json:"target"`
	// Schema is the target's tenant schema (Target.Scope), if any.
	Schema  string        `json:"schema,omitempty"`
	Outcome TargetOutcome `json:"outcome"`
	// Applied are the versions this push applied there.
	Applied []int64 `json:"applied,omitempty"`
	// Version is the newest applied version there afterwards (-1 unknown).
	Version  int64         `json:"version"`
	Duration time.Duration `json:"duration_ns"`
	// Installed: the engine was installed or upgraded first (Install).
	Installed bool  `json:"installed,omitempty"`
	Err       error `json:"-"`
	// Error is Err's text (passwords masked); File and Line locate a
	// failing migration.
	Error string `json:"error,omitempty"`
	File  string `json:"file,omitempty"`
	Line  int    `json:"line,omitempty"`
}

// FleetResult is a fleet push's outcome, one result per target in the
// targets' order.
type FleetResult struct {
	Targets  []TargetResult `json:"targets"`
	Failed   int            `json:"failed"`
	Skipped  int            `json:"skipped"`
	Duration time.Duration  `json:"duration_ns"`
}

// ErrFleetFailed: at least one target of a fleet push failed (or was
// skipped after a failure); FleetResult says which.
var ErrFleetFailed = errors.New("the fleet push failed on some targets")

// PushFleet pushes the same migrations to every target: at most Parallel at
// once, the Canary first. Each target is an ordinary push with all its
// guarantees (the engine's lock, exactly once, all or nothing per
// transaction, drift), so racing fleet pushes, or a fleet push and a
// service starting up, are as safe as two pushes to one database; a
// re-run converges, doing work only where something is pending. A target
// that cannot be reached, refuses the password or has no engine is
// reported and never stops the others unless the rollout stops on
// failures (ContinueOnError false). The error is ErrFleetFailed when any
// target failed or was skipped; ctx cancels every running push.
func PushFleet(ctx context.Context, targets []Target, migrations []*Migration, opts *FleetOpts) (*FleetResult, error) {
	if opts == nil {
		opts = &FleetOpts{}
	}
	parallel := opts.Parallel
	if parallel <= 0 {
		parallel = 4
	}
	start := time.Now()
	res := &FleetResult{Targets: make([]TargetResult, len(targets))}
	var mu sync.Mutex // serialises the callbacks and the stop flag
	stop := false
	run := func(from, to int) {
		jobs := make(chan int)
		var wg sync.WaitGroup
		for w := 0; w < min(parallel, to-from); w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range jobs {
					mu.Lock()
					skip := stop || ctx.Err() != nil
					if !skip && opts.Started != nil {
						opts.Started(targets[i])
					}
					mu.Unlock()
					var r TargetResult
					if skip {
						r = TargetResult{Target: targets[i].Name, Schema: targets[i].Scope, Outcome: TargetSkipped, Version: -1}
					} else {
						r = pushTarget(ctx, targets[i], migrations, opts)
					}
					mu.Lock()
					res.Targets[i] = r
					if r.Outcome == TargetFailed && !opts.ContinueOnError {
						stop = true
					}
					if opts.Done != nil {
						opts.Done(r)
					}
					mu.Unlock()
				}
			}()
		}
		for i := from; i < to; i++ {
			jobs <- i
		}
		close(jobs)
		wg.Wait()
	}
	canary := min(max(opts.Canary, 0), len(targets))
	run(0, canary)
	mu.Lock()
	for i := 0; i < canary; i++ {
		if res.Targets[i].Outcome == TargetFailed {
			stop = true // a failed canary stops the rollout, whatever ContinueOnError says
		}
	}
	mu.Unlock()
	run(canary, len(targets))
	for _, r := range res.Targets {
		switch r.Outcome {
		case TargetFailed:
			res.Failed++
		case TargetSkipped:
			res.Skipped++
		}
	}
	res.Duration = time.Since(start)
	if res.Failed > 0 || res.Skipped > 0 {
		return res, ErrFleetFailed
	}
	return res, nil
}

// pushTarget is one target of a fleet push.
func pushTarget(ctx context.Context, t Target, migrations []*Migration, opts *FleetOpts) TargetResult {
	start := time.Now()
	r := TargetResult{Target: t.Name, Schema: t.Scope, Version: -1}
	fail := func(err error) TargetResult {
		r.Outcome, r.Err, r.Error, r.Duration = TargetFailed, err, MaskDSN(err.Error()), time.Since(start)
		var merr *MigrationError
		if errors.As(err, &merr) {
			r.File, r.Line = merr.File, merr.Location.Line
			if merr.Location.File != "" {
				r.File = merr.Location.File
			}
		}
		return r
	}
	timeout := opts.ConnectTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	var config Config
	if opts.Config != nil {
		config = *opts.Config
	}
	if t.Scope != "" {
		config.Scope = t.Scope
	}
	r.Schema = config.Scope
	cctx, cancel := context.WithTimeout(ctx, timeout)
	client, err := Connect(cctx, t.DSN, &config)
	cancel()
	if err != nil {
		return fail(err)
	}
	defer client.Close(context.WithoutCancel(ctx))
	push := opts.Push
	push.Progress, push.Notice = nil, nil
	res, err := client.Push(ctx, migrations, &push)
	var verr *EngineVersionError
	older := errors.As(err, &verr) && versionLess(verr.Installed, verr.Supported)
	if (errors.Is(err, ErrEngineNotInstalled) || older) && opts.Install {
		if _, ierr := client.Install(ctx, nil); ierr != nil {
			return fail(ierr)
		}
		r.Installed = true
		res, err = client.Push(ctx, migrations, &push)
	}
	if err != nil {
		return fail(err)
	}
	r.Outcome, r.Version, r.Duration = TargetUpToDate, res.Version, time.Since(start)
	for _, m := range res.Migrations {
		if m.Outcome == OutcomeApplied {
			r.Applied = append(r.Applied, m.Version)
		}
	}
	if len(r.Applied) > 0 {
		r.Outcome = TargetApplied
	}
	return r
}

// TargetsFromQuery runs query on the catalog database (catalogDSN) and
// makes a target of each row: its first column is a connection string, or
// the name of a database on the catalog's server (TargetsOfDatabases). The
// query must return exactly one column; NULLs and empty strings are
// skipped. It runs in a read-only transaction, so that a mistyped query
// cannot change the catalog.
func TargetsFromQuery(ctx context.Context, catalogDSN, query string) ([]Target, error) {
	names, err := queryColumn(ctx, catalogDSN, "the catalog database", "targets", query)
	if err != nil {
		return nil, err
	}
	return TargetsOfDatabases(catalogDSN, names)
}

// ScopesFromQuery is the tenant schemas of each target: query runs on each
// target database (read-only, at most parallel at once) and returns one
// column of schema names; each becomes a target with that Scope, in the
// order of targets, then of the query's rows. A target where the query
// fails is an error naming it.
func ScopesFromQuery(ctx context.Context, targets []Target, query string, parallel int) ([]Target, error) {
	parallel = max(parallel, 1)
	scopes := make([][]string, len(targets))
	errs := make([]error, len(targets))
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	for i, t := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			scopes[i], errs[i] = queryColumn(ctx, t.DSN, t.Name, "schemas", query)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	var out []Target
	for i, t := range targets {
		for _, s := range scopes[i] {
			out = append(out, Target{Name: t.Name + " schema " + s, DSN: t.DSN, Scope: s})
		}
	}
	return out, nil
}

// queryColumn runs query in a read-only transaction on dsn (named where in
// errors) and returns its one column as text, NULLs and empty strings
// skipped; what names the query's purpose ("targets", "schemas").
func queryColumn(ctx context.Context, dsn, where, what, query string) ([]string, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %s", where, MaskDSN(err.Error()))
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var names []string
	err = pgx.BeginTxFunc(ctx, conn, pgx.TxOptions{AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, query, pgx.QueryExecModeSimpleProtocol)
		if err != nil {
			return err
		}
		defer rows.Close()
		if n := len(rows.FieldDescriptions()); n != 1 {
			return fmt.Errorf("the %s query returns %d columns; want one", what, n)
		}
		for rows.Next() {
			var s *string
			if err := rows.Scan(&s); err != nil {
				return fmt.Errorf("the %s query's column: %w (cast it to text)", what, err)
			}
			if s != nil && strings.TrimSpace(*s) != "" {
				names = append(names, *s)
			}
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("running the %s query on %s: %w", what, where, err)
	}
	return names, nil
}
