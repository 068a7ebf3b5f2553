package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// errUnavailable marks a backend that is not there at all (no Docker engine,
// no server binaries), as opposed to one that is there and failed.
var errUnavailable = errors.New("not available")

const localDirPrefix = "pgmig-pgtest-"

// localServer is a throwaway cluster: initdb into a temp dir, pg_ctl start on
// a free port, pg_ctl stop -m immediate and rm -rf at the end.
type localServer struct {
	binDir  string
	dir     string // temp dir, owned by the server's OS user
	dataDir string
	logFile string
	port    int
	cred    *syscall.Credential // run server binaries as this user (when we are root)
	// settings nil: the shared test server's settings; else the server's
	// defaults plus these (PrivateCluster, StartLocal).
	settings []string
	durable  bool // keep PostgreSQL's durability defaults (StartLocal)
}

func startLocal(ctx context.Context) (*Cluster, error) {
	started := time.Now()
	ls, err := initLocal(ctx, nil, false)
	if err != nil {
		return nil, err
	}
	c := &Cluster{
		kind:    "local",
		host:    "127.0.0.1",
		port:    ls.port,
		user:    "postgres",
		maintDB: "postgres",
		params:  url.Values{"sslmode": {"disable"}},
		local:   ls,
	}
	if p := filepath.Join(ls.binDir, "psql"); isExecutable(p) {
		c.psql = p
	} else if p, err := exec.LookPath("psql"); err == nil {
		c.psql = p
	}
	if os.Getenv("PGMIG_TEST_VERBOSE") != "" {
		fmt.Fprintf(os.Stderr, "pgtest: local cluster %s on port %d started in %v\n", ls.dataDir, ls.port, time.Since(started))
	}
	return c, nil
}

// PrivateCluster starts a throwaway cluster of its own for one test, with
// PostgreSQL's default settings (max_connections 100, max_locks_per_transaction
// 64, ...) except durability (fsync off) plus settings ("name=value"), and
// returns a superuser URL for its postgres database (no engine installed).
// For tests whose subject is a server setting — the lock table's size, say —
// which the shared server (max_connections=300) cannot serve. Stopped and
// removed at cleanup. Needs local server binaries, whatever the backend.
func PrivateCluster(tb testing.TB, settings ...string) string {
	tb.Helper()
	return SetParam(PrivateLocal(tb, settings...).URL("postgres"), "application_name", ApplicationName)
}

// PrivateLocal is PrivateCluster as a *Local, for a test that stops the
// server (StopImmediate) while a client uses it, without touching the
// shared server. Stopped and removed at cleanup.
func PrivateLocal(tb testing.TB, settings ...string) *Local {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if settings == nil {
		settings = []string{}
	}
	ls, err := initLocal(ctx, settings, false)
	if err != nil {
		tb.Fatalf("pgtest: a private cluster needs local server binaries: %v\n%s", err, howToProvide)
	}
	tb.Cleanup(func() { _ = ls.destroy() })
	return &Local{ls}
}

// StopImmediate stops the server at once (pg_ctl stop -m immediate): every
// session ends without a goodbye, as in a crash.
func (l *Local) StopImmediate() error { return l.ls.stop() }

// Local is a throwaway cluster from local server binaries for programs that
// are not tests (the benchmark), started by StartLocal.
type Local struct{ ls *localServer }

// StartLocal starts a cluster with PostgreSQL's default settings, durability
// included (fsync, synchronous_commit and full_page_writes on, as users run
// it), plus settings ("name=value"), on a free port of 127.0.0.1. As root it
// runs the server as the postgres OS user. Destroy stops and removes it.
func StartLocal(ctx context.Context, settings ...string) (*Local, error) {
	if settings == nil {
		settings = []string{}
	}
	ls, err := initLocal(ctx, settings, true)
	if err != nil {
		return nil, err
	}
	return &Local{ls}, nil
}

// Port is the server's TCP port on 127.0.0.1.
func (l *Local) Port() int { return l.ls.port }

// BinDir is the directory of the server binaries (psql, postgres, ...).
func (l *Local) BinDir() string { return l.ls.binDir }

// URL is a superuser URL for database db.
func (l *Local) URL(db string) string {
	u := url.URL{Scheme: "postgres", User: url.User("postgres"), Host: joinHostPort("127.0.0.1", l.ls.port),
		Path: "/" + db, RawQuery: "sslmode=disable"}
	return u.String()
}

// ServerOSUser is the OS user that owns the local cluster's data directory,
// which is the user the server runs as (postgres refuses a data directory
// owned by anyone else); "" for the url and docker backends.
func (c *Cluster) ServerOSUser() string {
	if c.local == nil {
		return ""
	}
	st, err := os.Stat(c.local.dataDir)
	if err != nil {
		return ""
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return ""
	}
	if u, err := user.LookupId(strconv.Itoa(int(sys.Uid))); err == nil {
		return u.Username
	}
	return strconv.Itoa(int(sys.Uid))
}

// Destroy stops the server (immediate mode) and removes its directory.
func (l *Local) Destroy() error { return l.ls.destroy() }

// initLocal runs initdb into a new temp dir and starts the server on a free
// port. settings nil: the shared test server's settings; otherwise the
// server's defaults plus these "name=value" settings. durable keeps fsync,
// synchronous_commit and full_page_writes on.
func initLocal(ctx context.Context, settings []string, durable bool) (*localServer, error) {
	binDir, err := findBinDir()
	if err != nil {
		return nil, err
	}
	ls := &localServer{binDir: binDir, settings: settings, durable: durable}
	var uid, gid = -1, -1
	if os.Geteuid() == 0 {
		// initdb and postgres refuse to run as root; run them as the
		// postgres OS user, which the server packages create.
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("pgtest: running as root, and initdb refuses root: need an OS user \"postgres\" to run the server as: %w", err)
		}
		uid, _ = strconv.Atoi(u.Uid)
		gid, _ = strconv.Atoi(u.Gid)
		ls.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	base, err := tempBase(uid, gid)
	if err != nil {
		return nil, err
	}
	sweepStale(base, binDir, ls.cred)
	ls.dir, err = os.MkdirTemp(base, localDirPrefix)
	if err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	// Written before anything else so that a later run can tell a leftover
	// of a dead test binary (killed by -timeout, SIGKILL) from a live one.
	if err := os.WriteFile(filepath.Join(ls.dir, "owner.pid"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	ls.dataDir = filepath.Join(ls.dir, "data")
	ls.logFile = filepath.Join(ls.dir, "postgres.log")
	if uid >= 0 {
		if err := os.Chown(ls.dir, uid, gid); err != nil {
			_ = os.RemoveAll(ls.dir)
			return nil, fmt.Errorf("pgtest: %w", err)
		}
	}
	out, err := ls.run(filepath.Join(binDir, "initdb"), "-D", ls.dataDir, "--no-sync", "-A", "trust",
		"-U", "postgres", "-E", "UTF8", "--locale=C")
	if err != nil {
		_ = os.RemoveAll(ls.dir)
		return nil, fmt.Errorf("pgtest: initdb (%s) failed: %w\n%s", binDir, err, out)
	}
	// The free port is found by binding and releasing it; another process
	// can grab it in between, hence a few attempts.
	for attempt := 0; ; attempt++ {
		ls.port, err = freePort()
		if err == nil {
			err = ls.start()
		}
		if err == nil {
			break
		}
		if attempt == 2 || ctx.Err() != nil {
			_ = os.RemoveAll(ls.dir)
			return nil, err
		}
	}
	return ls, nil
}

// FindBinDir is the directory of the server binaries the harness's local
// clusters use (see findBinDir), for programs that start a server of their
// own (make demo).
func FindBinDir() (string, error) { return findBinDir() }

// findBinDir finds the directory holding initdb and pg_ctl: PGMIG_PGBIN,
// else PATH (symlinks resolved to the real bin dir, where postgres and psql
// of the same version live), else the newest /usr/lib/postgresql/<N>/bin,
// else — a machine without server binaries — the npm build (npm.go).
// PGMIG_TEST_HIDE_SYSTEM_PG=1 skips PATH and /usr/lib/postgresql.
func findBinDir() (string, error) {
	ok := func(dir string) bool {
		return isExecutable(filepath.Join(dir, "initdb")) && isExecutable(filepath.Join(dir, "pg_ctl"))
	}
	if dir := os.Getenv(EnvPGBin); dir != "" {
		if !ok(dir) {
			return "", fmt.Errorf("%s=%s holds no initdb and pg_ctl: %w", EnvPGBin, dir, errUnavailable)
		}
		return dir, nil
	}
	if os.Getenv(EnvHideSystemPG) != "1" {
		if p, err := exec.LookPath("initdb"); err == nil {
			if real, err := filepath.EvalSymlinks(p); err == nil && ok(filepath.Dir(real)) {
				return filepath.Dir(real), nil
			}
		}
		dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
		sort.Slice(dirs, func(i, j int) bool { return versionOf(dirs[i]) > versionOf(dirs[j]) })
		for _, d := range dirs {
			if ok(d) {
				return d, nil
			}
		}
	}
	dir, err := npmFallback()
	if err != nil {
		// Unavailable whatever the reason (no npm, offline): the caller
		// then lists every way to provide a server.
		return "", fmt.Errorf("no initdb/pg_ctl in $%s, PATH or /usr/lib/postgresql/*/bin, and no npm build: %w (%w)", EnvPGBin, err, errUnavailable)
	}
	return dir, nil
}

// findBasebackup returns a pg_basebackup that can copy the server of
// binDir: its own, or — the relocatable builds `make test-matrix` uses ship
// none — one from PATH or /usr/lib/postgresql/*/bin of the same or a newer
// major (pg_basebackup works with servers of its own major and older ones).
func findBasebackup(binDir string) (string, error) {
	own := filepath.Join(binDir, "pg_basebackup")
	if isExecutable(own) {
		return own, nil
	}
	server := majorOf(filepath.Join(binDir, "postgres"))
	candidates, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pg_basebackup")
	if p, err := exec.LookPath("pg_basebackup"); err == nil {
		candidates = append([]string{p}, candidates...)
	}
	for _, c := range candidates {
		if server > 0 && majorOf(c) >= server {
			return c, nil
		}
	}
	return "", fmt.Errorf("no pg_basebackup for a PostgreSQL %d server: none in %s, and none of major %d or newer in PATH or /usr/lib/postgresql/*/bin (install that major's client package)",
		server, binDir, server)
}

// majorOf runs a PostgreSQL program with --version ("postgres (PostgreSQL)
// 13.23") and returns its major version, 0 if that fails.
func majorOf(program string) int {
	out, err := exec.Command(program, "--version").Output()
	if err != nil {
		return 0
	}
	_, rest, ok := strings.Cut(string(out), "(PostgreSQL) ")
	if !ok {
		return 0
	}
	end := strings.IndexFunc(rest, func(r rune) bool { return r < '0' || r > '9' })
	if end < 0 {
		end = len(rest)
	}
	n, _ := strconv.Atoi(rest[:end])
	return n
}

func versionOf(binDir string) float64 {
	v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(binDir)), 64)
	return v
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}

// tempBase picks a temp directory the server's OS user can reach: when we
// are root and TMPDIR is, say, under /root (mode 0700), postgres could not
// even open its data directory.
func tempBase(uid, gid int) (string, error) {
	cands := []string{os.TempDir()}
	if uid < 0 {
		return cands[0], nil
	}
	cands = append(cands, "/tmp", "/var/tmp")
	for _, c := range cands {
		if traversable(c, uid, gid) {
			return c, nil
		}
	}
	return "", fmt.Errorf("pgtest: none of %v is traversable by the postgres OS user; set TMPDIR to a directory it can reach", cands)
}

func traversable(dir string, uid, gid int) bool {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return false
	}
	for {
		st, err := os.Stat(dir)
		if err != nil || !st.IsDir() {
			return false
		}
		sys, _ := st.Sys().(*syscall.Stat_t)
		mode := st.Mode().Perm()
		switch {
		case sys != nil && int(sys.Uid) == uid:
			if mode&0o100 == 0 {
				return false
			}
		case sys != nil && int(sys.Gid) == gid:
			if mode&0o010 == 0 {
				return false
			}
		default:
			if mode&0o001 == 0 {
				return false
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return true
		}
		dir = parent
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgtest: finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// run runs a server binary as the server's OS user, with no PG* variables
// from our environment (PGDATA, PGPORT... would override our flags).
func (ls *localServer) run(bin string, args ...string) ([]byte, error) {
	cmd := exec.Command(bin, args...)
	cmd.Dir = ls.dir // postgres must be able to stat its cwd
	if ls.dir == "" {
		cmd.Dir = os.TempDir()
	}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	if ls.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: ls.cred}
	}
	return cmd.CombinedOutput()
}

func (ls *localServer) start() error {
	args := []string{
		"-c listen_addresses=127.0.0.1",
		"-p " + strconv.Itoa(ls.port),
		"-c unix_socket_directories=" + shellQuote(ls.dir),
	}
	if !ls.durable {
		// Durability is worthless for a throwaway test cluster and costs most
		// of the time of DDL-heavy tests.
		args = append(args, "-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off")
	}
	if ls.settings == nil {
		args = append(args, "-c max_connections=300", "-c shared_buffers=128MB")
	}
	for _, s := range ls.settings {
		args = append(args, "-c "+shellQuote(s))
	}
	opts := strings.Join(args, " ")
	// -l matters beyond logging: without it the postmaster inherits our
	// stdout/stderr pipes and CombinedOutput would wait for it to exit.
	out, err := ls.run(filepath.Join(ls.binDir, "pg_ctl"), "start", "-w", "-t", "120",
		"-D", ls.dataDir, "-l", ls.logFile, "-o", opts)
	if err != nil {
		log, _ := os.ReadFile(ls.logFile)
		return fmt.Errorf("pgtest: pg_ctl start (port %d) failed: %w\n%s\n%s", ls.port, err, out, tail(log, 2000))
	}
	return nil
}

func (ls *localServer) stop() error {
	out, err := ls.run(filepath.Join(ls.binDir, "pg_ctl"), "stop", "-w", "-m", "immediate", "-D", ls.dataDir)
	if err != nil {
		return fmt.Errorf("pgtest: pg_ctl stop failed: %w\n%s", err, out)
	}
	return nil
}

func (ls *localServer) destroy() error {
	var err error
	if _, statErr := os.Stat(filepath.Join(ls.dataDir, "postmaster.pid")); statErr == nil {
		err = ls.stop()
	}
	return errors.Join(err, os.RemoveAll(ls.dir))
}

// sweepStale removes clusters left behind by test binaries that died without
// cleaning up (go test -timeout panics, SIGKILL): their owner.pid names a
// process that no longer exists.
func sweepStale(base, binDir string, cred *syscall.Credential) {
	dirs, _ := filepath.Glob(filepath.Join(base, localDirPrefix+"*"))
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "owner.pid"))
		if err != nil {
			continue // not ours, or still being created
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 || processAlive(pid) {
			continue
		}
		ls := &localServer{binDir: binDir, dir: d, dataDir: filepath.Join(d, "data"), cred: cred}
		_ = ls.destroy()
	}
}

func processAlive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	// A killed binary whose parent has not reaped it yet is a zombie:
	// signal 0 still finds it, but it will never clean up.
	if b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat"); err == nil {
		if i := strings.LastIndexByte(string(b), ')'); i >= 0 && i+2 < len(b) && b[i+2] == 'Z' {
			return false
		}
	}
	return true
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// StartStandby makes a streaming-replication standby of the local cluster
// (pg_basebackup -R into a directory of its own, started on a free port) and
// returns a superuser URL for dbname on it. The standby is stopped and removed
// at the test's cleanup. Only for the "local" backend.
func (c *Cluster) StartStandby(tb testing.TB, dbname string) string {
	tb.Helper()
	ls := c.local
	if ls == nil {
		tb.Fatalf("pgtest: StartStandby needs the local backend (this run uses %q)", c.kind)
	}
	dir, err := os.MkdirTemp(ls.dir, "standby-")
	if err != nil {
		tb.Fatal(err)
	}
	if ls.cred != nil {
		if err := os.Chown(dir, int(ls.cred.Uid), int(ls.cred.Gid)); err != nil {
			tb.Fatal(err)
		}
	}
	sb := &localServer{binDir: ls.binDir, dir: dir, dataDir: filepath.Join(dir, "data"),
		logFile: filepath.Join(dir, "postgres.log"), cred: ls.cred}
	basebackup, err := findBasebackup(ls.binDir)
	if err != nil {
		tb.Skipf("pgtest: %v", err)
	}
	out, err := sb.run(basebackup, "-h", "127.0.0.1", "-p", strconv.Itoa(ls.port),
		"-U", "postgres", "-D", sb.dataDir, "-R", "--checkpoint=fast", "--no-sync")
	if err != nil {
		tb.Fatalf("pgtest: pg_basebackup: %v\n%s", err, out)
	}
	if sb.port, err = freePort(); err != nil {
		tb.Fatal(err)
	}
	if err := sb.start(); err != nil {
		tb.Fatalf("pgtest: starting the standby: %v", err)
	}
	tb.Cleanup(func() { _ = sb.destroy() })
	u := url.URL{Scheme: "postgres", User: url.User("postgres"), Host: joinHostPort("127.0.0.1", sb.port),
		Path: "/" + dbname, RawQuery: "sslmode=disable&application_name=" + ApplicationName}
	return u.String()
}
