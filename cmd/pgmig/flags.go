package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	pgmig "github.com/pgmig/pgmig/gowrapper"
)

// options are the parsed settings of one invocation. Every command fills
// the fields of the flags it declares; the others keep their zero values.
type options struct {
	config          string
	database        string
	schema          string // tenant scope
	apiSchema       string // install: the API schema
	dir             string
	format          string
	data            map[string]string
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
	to              int64 // -1: not given
	dryRun          bool
	version         int64
	versions        []int64
	fromTern        bool
	ternTable       string
	adoptFrom       string // adopt --from
	adoptTable      string // adopt --table
	dropOld         bool   // adopt --drop-old
	retry, applied  bool
	// batch, bundle, stage (cmd_admin.go)
	output                   string
	withEngine, nontxApplied bool
	label                    string
	list                     bool
	// fleet (cmd_fleet.go)
	targets, targetsQuery string
	schemasQuery          string
	parallel, canary      int
	continueOnError       bool
	install               bool
	// safety (issue 14): push's DDL lock timeout and retries, plan's
	// rehearsal and SQL, wait's deadline
	ddlLockTimeout   time.Duration
	retries          int
	retryMaxWait     time.Duration
	rehearse         bool
	printSQL         bool
	failOn           []string
	statementTimeout time.Duration
	timeout          time.Duration

	// sources says where each flag's value came from ("flag --dir",
	// "env PGMIG_DIR", "config pgmig.conf:3", "default"), for `pgmig config`.
	sources map[string]string
	// dataSources is the same per key of --data.
	dataSources map[string]string
	// dataFlag collects --data before it is merged with PGMIG_DATA and the
	// config file's [data], key by key.
	dataFlag map[string]string
}

// flagDef is one flag. Its value comes from the command line, else the
// environment (PGMIG_<NAME>, then the extra variables in env), else the
// config file, else the default: flag > env > config > default
// (docs/cli.md, "Configuration"). Every value, whatever its source, goes
// through set, so a bad value is refused the same way, naming its source.
type flagDef struct {
	name    string
	arg     string // placeholder in help ("D", "N", "URL"); "" for a bool flag
	usage   string
	def     string   // default as text, applied through set; "" = zero value
	defHelp string   // how help describes the default when def alone does not
	env     []string // variables consulted after PGMIG_<NAME>, in order
	config  string   // key in the config file's [pgmig] section; "" = not settable there
	// repeat: each occurrence on the command line adds to the value; a
	// lower-precedence source is then ignored as a whole.
	repeat bool
	set    func(o *options, v string) error
}

func (d *flagDef) isBool() bool { return d.arg == "" }

// envVars are the environment variables for d, in precedence order.
func (d *flagDef) envVars() []string {
	return append([]string{envName(d.name)}, d.env...)
}

func envName(flagName string) string {
	return "PGMIG_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// withDefault is d with another description of its default, for a command
// whose default differs (--lock-timeout).
func (d *flagDef) withDefault(help string) *flagDef {
	c := *d
	c.defHelp = help
	return &c
}

func (d *flagDef) defaultText() string {
	switch {
	case d.defHelp != "":
		return d.defHelp
	case d.def != "":
		return d.def
	case d.isBool():
		return "off"
	}
	return ""
}

// The flags. A command lists the ones it takes (commands.go).
var (
	flagConfig = &flagDef{name: "config", arg: "FILE",
		usage:   "configuration file (INI; tern's tern.conf is read as such)",
		defHelp: "./pgmig.conf, else ./tern.conf, when present",
		set:     func(o *options, v string) error { o.config = v; return nil }}
	flagDatabase = &flagDef{name: "database", arg: "URL",
		usage:   "connection string (URL or key=value)",
		defHelp: "the config file's [database], else libpq's PG* variables and ~/.pgpass",
		env:     []string{"DATABASE_URL"},
		set:     func(o *options, v string) error { o.database = v; return nil }}
	flagSchema = &flagDef{name: "schema", arg: "NAME", config: "schema", defHelp: "none: the database's own migrations",
		usage: "tenant schema: the migrations run inside it (created if missing), with a history and a lock of its own (docs/fleet.md)",
		set:   func(o *options, v string) error { o.schema = v; return nil }}
	flagAPISchema = &flagDef{name: "api-schema", arg: "NAME", def: "public", config: "api_schema",
		usage: "where to put the API functions for unqualified calls (the schema must exist; they are always in schema pgmig too)",
		set:   func(o *options, v string) error { o.apiSchema = v; return nil }}
	flagDir = &flagDef{name: "dir", arg: "DIR", def: ".", config: "dir",
		usage: "migrations directory",
		set:   func(o *options, v string) error { o.dir = v; return nil }}
	flagFormat = &flagDef{name: "format", arg: "NAME", config: "format",
		usage:   "format of the migration files: " + strings.Join(formatNames, ", "),
		defHelp: "told from the files",
		set:     setFormat}
	flagData = &flagDef{name: "data", arg: "KEY=VALUE", repeat: true,
		usage:   "template data for the migration files, as {{.KEY}} (repeatable; also PGMIG_DATA=k=v,k2=v2 and the config file's [data])",
		defHelp: "none",
		set:     setData}
	flagJSON = &flagDef{name: "json",
		usage: "machine-readable output: one JSON document on stdout, errors included",
		set:   boolSetter(func(o *options, b bool) { o.json = b })}
	flagQuiet = &flagDef{name: "quiet",
		usage: "print only errors",
		set:   boolSetter(func(o *options, b bool) { o.quiet = b })}
	flagTarget = &flagDef{name: "target", arg: "N", defHelp: "all",
		usage: "only versions up to N",
		set:   int64Setter("a version", 0, func(o *options, n int64) { o.target = n })}
	flagAllowOutOfOrder = &flagDef{name: "allow-out-of-order", config: "allow_out_of_order",
		usage: "apply pending versions older than the newest applied one",
		set:   boolSetter(func(o *options, b bool) { o.allowOutOfOrder = b })}
	flagAllowMissing = &flagDef{name: "allow-missing", config: "allow_missing",
		usage: "tolerate applied versions missing from the files",
		set:   boolSetter(func(o *options, b bool) { o.allowMissing = b })}
	flagLockTimeout = &flagDef{name: "lock-timeout", arg: "D", config: "lock_timeout",
		usage: "wait at most D (500ms, 30s, 2m) for the migration lock, then exit 3 naming the holder",
		set:   durationSetter(func(o *options, d time.Duration) { o.lockTimeout = d })}
	flagSegmentSize = &flagDef{name: "segment-size", arg: "N", def: "auto", config: "segment_size",
		usage: "commit after every N migrations (each segment atomic); auto (0): one transaction while it fits the server's lock table; all: one transaction whatever it takes",
		set:   setSegmentSize}
	flagTo = &flagDef{name: "to", arg: "V", defHelp: "(required)",
		usage: "roll back every applied version above V (0: all of them)",
		set:   int64Setter("a version", 0, func(o *options, n int64) { o.to = n })}
	flagDryRun = &flagDef{name: "dry-run",
		usage: "take the lock, check that every version in the range has down SQL, list them; change nothing",
		set:   boolSetter(func(o *options, b bool) { o.dryRun = b })}
	flagBaselineVersion = &flagDef{name: "version", arg: "V",
		usage: "record the migrations up to V as applied without running them",
		set:   int64Setter("a version", 1, func(o *options, n int64) { o.version = n })}
	flagRepairVersion = &flagDef{name: "version", arg: "V", repeat: true, defHelp: "every drifted version",
		usage: "repair version V (repeatable, or V1,V2)",
		set:   setVersions}
	flagFromTern = &flagDef{name: "from-tern",
		usage: "take the baseline version from tern's version table",
		set:   boolSetter(func(o *options, b bool) { o.fromTern = b })}
	flagTernTable = &flagDef{name: "tern-table", arg: "T", def: "public.schema_version", config: "tern_table",
		usage: "tern's version table (schema.table or table; tern.conf's version_table)",
		set:   func(o *options, v string) error { o.ternTable = v; return nil }}
	flagRetry = &flagDef{name: "retry",
		usage: "forget the interrupted run: the next push runs the migration again from its first statement (undo what it did first)",
		set:   boolSetter(func(o *options, b bool) { o.retry = b })}
	flagApplied = &flagDef{name: "applied",
		usage: "record the interrupted migration as applied (finish it by hand first)",
		set:   boolSetter(func(o *options, b bool) { o.applied = b })}
	flagWait = &flagDef{name: "wait",
		usage: "wait while another migrator holds the lock, then validate",
		set:   boolSetter(func(o *options, b bool) { o.wait = b })}
	flagWaitTimeout = &flagDef{name: "wait-timeout", arg: "D", defHelp: "no limit", config: "wait_timeout",
		usage: "with --wait: give up waiting after D (exit 3)",
		set:   durationSetter(func(o *options, d time.Duration) { o.waitTimeout = d })}
	flagPrint = &flagDef{name: "print",
		usage: "write the install SQL to stdout instead of running it (for managed databases)",
		set:   boolSetter(func(o *options, b bool) { o.print = b })}
	flagDDLLockTimeout = &flagDef{name: "ddl-lock-timeout", arg: "D", config: "ddl_lock_timeout",
		defHelp: "none: wait as long as the lock is held",
		usage: "a migration that waits longer than D for a lock on a table gives up: its transaction rolls back and nobody queues behind it " +
			"any more; pgmig names the sessions in the way (exit 3) or retries (--retries). A migration's own ---- pgmig: lock-timeout D ---- line wins",
		set: durationSetter(func(o *options, d time.Duration) { o.ddlLockTimeout = d })}
	flagRetries = &flagDef{name: "retries", arg: "N", def: "0", config: "retries",
		usage: "after a migration gave up waiting for a lock (--ddl-lock-timeout), push again up to N more times, pausing with jittered exponential backoff; exit 3 when they run out",
		set:   intSetter("a number of retries", 0, func(o *options, n int) { o.retries = n })}
	flagRetryMaxWait = &flagDef{name: "retry-max-wait", arg: "D", def: "30s", config: "retry_max_wait",
		usage: "the longest pause between two attempts (--retries): 500ms, doubling up to D",
		set:   durationSetter(func(o *options, d time.Duration) { o.retryMaxWait = d })}
	flagRehearse = &flagDef{name: "rehearse",
		usage: "run the pending migrations for real under the migration lock, measure each (locks and modes, rewritten tables and their size, WAL, duration), then roll everything back",
		set:   boolSetter(func(o *options, b bool) { o.rehearse = b })}
	flagPrintSQL = &flagDef{name: "sql",
		usage: "print the exact SQL push would run now, migration by migration, each under a comment naming its file",
		set:   boolSetter(func(o *options, b bool) { o.printSQL = b })}
	flagFailOn = &flagDef{name: "fail-on", arg: "LIST", config: "fail_on", defHelp: "nothing",
		usage: "with --rehearse: exit 4 when a migration does one of these to an existing relation (comma-separated): " + strings.Join(failOnKinds, ", "),
		set:   setFailOn}
	flagStatementTimeout = &flagDef{name: "statement-timeout", arg: "D", def: "1m", config: "statement_timeout",
		usage: "with --rehearse: stop the rehearsal (the lock wait and every migration) after D; 0: no limit",
		set:   durationSetter(func(o *options, d time.Duration) { o.statementTimeout = d })}
	flagTimeout = &flagDef{name: "timeout", arg: "D", def: "1m",
		usage: "give up after D (exit 3); 0: wait as long as it takes",
		set:   durationSetter(func(o *options, d time.Duration) { o.timeout = d })}
	flagWaitVersion = &flagDef{name: "version", arg: "V", defHelp: "exactly the migrations of --dir",
		usage: "wait until the newest applied version is at least V instead (--dir is then not read)",
		set:   int64Setter("a version", 1, func(o *options, n int64) { o.version = n })}
	flagAll = &flagDef{name: "all",
		usage: fmt.Sprintf("show the whole history (default: the newest %d entries; --json always has all)", statusRows),
		set:   boolSetter(func(o *options, b bool) { o.all = b })}
)

// failOnKinds are what --fail-on can forbid (see rehearseViolations).
var failOnKinds = []string{"rewrite", "access-exclusive", "blocks-writes"}

func setFailOn(o *options, s string) error {
	o.failOn = nil
	for _, k := range strings.Split(s, ",") {
		k = strings.ToLower(strings.TrimSpace(k))
		if k == "" {
			continue
		}
		if !slices.Contains(failOnKinds, k) {
			return fmt.Errorf("unknown --fail-on kind %q: want a comma-separated list of %s", k, strings.Join(failOnKinds, ", "))
		}
		if !slices.Contains(o.failOn, k) {
			o.failOn = append(o.failOn, k)
		}
	}
	return nil
}

func intSetter(what string, min int, f func(*options, int)) func(*options, string) error {
	return func(o *options, s string) error {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < min {
			return fmt.Errorf("%q: want %s (a number ≥ %d)", s, what, min)
		}
		f(o, n)
		return nil
	}
}

// formatNames are the migration file formats --format accepts.
var formatNames = []string{"tern", "golang-migrate", "goose", "dbmate", "sql-migrate", "flyway"}

func setFormat(o *options, v string) error {
	v = strings.ToLower(strings.TrimSpace(v))
	for _, n := range formatNames {
		if v == n {
			o.format = v
			return nil
		}
	}
	return fmt.Errorf("unknown format %q: want one of %s", v, strings.Join(formatNames, ", "))
}

// dataKey is what a template can reach as {{.KEY}}: a Go identifier.
var dataKey = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

func splitData(kv string) (string, string, error) {
	k, v, ok := strings.Cut(kv, "=")
	k = strings.TrimSpace(k)
	if !ok || !dataKey.MatchString(k) {
		return "", "", fmt.Errorf("%q: want KEY=VALUE with KEY a name usable as {{.KEY}}", kv)
	}
	return k, v, nil
}

func setData(o *options, kv string) error {
	k, v, err := splitData(kv)
	if err != nil {
		return err
	}
	if o.dataFlag == nil {
		o.dataFlag = map[string]string{}
	}
	o.dataFlag[k] = v
	return nil
}

func setVersions(o *options, s string) error {
	for _, part := range strings.Split(s, ",") {
		v, err := strconv.ParseInt(strings.TrimSpace(part), 10, 64)
		if err != nil || v < 1 {
			return fmt.Errorf("invalid version %q: want a positive number", part)
		}
		o.versions = append(o.versions, v)
	}
	return nil
}

// setSegmentSize: "auto" or "0" (automatic), "all" (one transaction), or
// a positive count.
func setSegmentSize(o *options, s string) error {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "auto", "0":
		o.segmentSize = 0
		return nil
	case "all":
		o.segmentSize = pgmig.SegmentAll
		return nil
	}
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || n < 1 {
		return fmt.Errorf("%q: want a positive number, auto (0) or all", s)
	}
	o.segmentSize = n
	return nil
}

func boolSetter(f func(*options, bool)) func(*options, string) error {
	return func(o *options, s string) error {
		b, err := parseBool(s)
		if err != nil {
			return err
		}
		f(o, b)
		return nil
	}
}

// parseBool accepts what people write in environment variables and INI
// files as well as Go's spellings.
func parseBool(s string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "1", "t", "true", "yes", "y", "on":
		return true, nil
	case "0", "f", "false", "no", "n", "off":
		return false, nil
	}
	return false, fmt.Errorf("%q: want true or false", s)
}

func int64Setter(what string, min int64, f func(*options, int64)) func(*options, string) error {
	return func(o *options, s string) error {
		n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
		if err != nil || n < min {
			return fmt.Errorf("%q: want %s (a number ≥ %d)", s, what, min)
		}
		f(o, n)
		return nil
	}
}

func durationSetter(f func(*options, time.Duration)) func(*options, string) error {
	return func(o *options, s string) error {
		d, err := time.ParseDuration(strings.TrimSpace(s))
		if err != nil || d < 0 {
			return fmt.Errorf("%q: want a duration such as 500ms, 30s or 2m", s)
		}
		f(o, d)
		return nil
	}
}

// flagValue binds a flagDef to the command line.
type flagValue struct {
	def  *flagDef
	opts *options
	seen bool
}

func (v *flagValue) String() string   { return "" }
func (v *flagValue) IsBoolFlag() bool { return v.def.isBool() }
func (v *flagValue) Set(s string) error {
	if err := v.def.set(v.opts, s); err != nil {
		return err
	}
	v.seen = true
	v.opts.sources[v.def.name] = "flag --" + v.def.name
	return nil
}

// lookupEnv is os.LookupEnv, or a test's environment.
type lookupEnv func(string) (string, bool)

// errHelp: --help (or -h) was given; the command's usage is the answer.
var errHelp = errors.New("help requested")

// parseFlags parses args for cmd: flags may come before or after the
// positional arguments (pgmig new add_users --dir db/migrations). Then
// every flag not on the command line takes its value from the
// environment, the config file or its default. Nothing is connected to.
func parseFlags(cmd *command, args []string, env lookupEnv) (*options, []string, *configFile, error) {
	o := &options{to: -1, sources: map[string]string{}, dataSources: map[string]string{}}
	fs := flag.NewFlagSet("pgmig "+cmd.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are reported by the caller, in text or JSON
	fs.Usage = func() {}
	values := make([]*flagValue, 0, len(cmd.flags))
	for _, d := range cmd.flags {
		v := &flagValue{def: d, opts: o}
		values = append(values, v)
		fs.Var(v, d.name, d.usage)
	}
	positional, err := parseInterspersed(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return o, nil, nil, errHelp
	}
	if err != nil {
		return o, nil, nil, usagef("pgmig %s: %v (`pgmig %s --help` lists its flags)", cmd.name, err, cmd.name)
	}
	// The config file is found first: --config may be on the command line,
	// and the file supplies values to the flags that are not. Commands
	// without settings (help, version) do not read it, so that a broken
	// file cannot keep them from answering.
	var cfg *configFile
	if cmd.takes(flagConfig) {
		if cfg, err = findConfig(o, env); err != nil {
			return o, nil, nil, err
		}
	}
	for _, v := range values {
		if v.seen || v.def == flagConfig {
			continue
		}
		if err := fallback(v.def, o, cfg, env); err != nil {
			return o, nil, nil, err
		}
	}
	if cmd.takes(flagData) {
		if err := mergeData(o, cfg, env); err != nil {
			return o, nil, nil, err
		}
	}
	return o, positional, cfg, nil
}

// fallback gives d its value from the environment, the config file or its
// default, in that order.
func fallback(d *flagDef, o *options, cfg *configFile, env lookupEnv) error {
	if d == flagData {
		return nil // merged key by key in mergeData
	}
	for _, name := range d.envVars() {
		if v, ok := env(name); ok && v != "" {
			if err := d.set(o, v); err != nil {
				return usagef("$%s (for --%s): %v", name, d.name, err)
			}
			o.sources[d.name] = "env " + name
			return nil
		}
	}
	if v, where, ok := cfg.lookup(d); ok {
		if err := d.set(o, v); err != nil {
			return usagef("%s (for --%s): %v", where, d.name, err)
		}
		o.sources[d.name] = "config " + where
		return nil
	}
	if d.def != "" {
		if err := d.set(o, d.def); err != nil {
			return err
		}
	}
	o.sources[d.name] = "default"
	return nil
}

// mergeData builds the template data key by key: --data over PGMIG_DATA
// over the config file's [data].
func mergeData(o *options, cfg *configFile, env lookupEnv) error {
	o.data = map[string]string{}
	for _, kv := range cfg.section("data") {
		o.data[kv.key] = kv.value
		o.dataSources[kv.key] = "config " + cfg.where(kv.line)
	}
	if s, ok := env(envName(flagData.name)); ok && s != "" {
		// Comma-separated pairs, the usual shape of a list in one variable;
		// a value that holds a comma goes in --data or the config file.
		for _, kv := range strings.Split(s, ",") {
			k, v, err := splitData(strings.TrimSpace(kv))
			if err != nil {
				return usagef("$%s: %v", envName(flagData.name), err)
			}
			o.data[k] = v
			o.dataSources[k] = "env " + envName(flagData.name)
		}
	}
	for k, v := range o.dataFlag {
		o.data[k] = v
		o.dataSources[k] = "flag --data"
	}
	return nil
}

// dataKeys are the template data keys in order, for display.
func (o *options) dataKeys() []string {
	keys := make([]string, 0, len(o.data))
	for k := range o.data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
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

// wantsJSON tells, before the flags are parsed (they may be the problem),
// whether the answer must be JSON: a --json flag or PGMIG_JSON.
func wantsJSON(args []string, env lookupEnv) bool {
	for _, a := range args {
		if a == "--" {
			break
		}
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") || name != "json" {
			continue
		}
		if !hasVal {
			return true
		}
		b, err := parseBool(val)
		return err == nil && b
	}
	if v, ok := env(envName(flagJSON.name)); ok {
		b, err := parseBool(v)
		return err == nil && b
	}
	return false
}
