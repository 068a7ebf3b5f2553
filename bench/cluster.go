package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// cluster is the benchmark's own PostgreSQL: unlike the test clusters it
// keeps the durability defaults (fsync, synchronous_commit, full_page_writes
// on), because commits and their WAL flushes are part of what users pay for.
type cluster struct {
	binDir  string
	dir     string
	dataDir string
	port    int
	cred    *syscall.Credential
}

func startCluster(ctx context.Context, extra []string) (*cluster, error) {
	binDir, err := findBinDir()
	if err != nil {
		return nil, err
	}
	c := &cluster{binDir: binDir}
	uid, gid := -1, -1
	if os.Geteuid() == 0 {
		// initdb and postgres refuse to run as root.
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("running as root needs an OS user postgres to run the server as: %w", err)
		}
		uid, _ = strconv.Atoi(u.Uid)
		gid, _ = strconv.Atoi(u.Gid)
		c.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	// /tmp, not $TMPDIR: when root, $TMPDIR may be unreachable for postgres.
	base := os.TempDir()
	if uid >= 0 {
		base = "/tmp"
	}
	if c.dir, err = os.MkdirTemp(base, "pgmig-bench-"); err != nil {
		return nil, err
	}
	c.dataDir = filepath.Join(c.dir, "data")
	if uid >= 0 {
		if err := os.Chown(c.dir, uid, gid); err != nil {
			return nil, err
		}
	}
	if out, err := c.run(filepath.Join(binDir, "initdb"), "-D", c.dataDir, "-A", "trust", "-U", "postgres",
		"-E", "UTF8", "--locale=C"); err != nil {
		c.destroy()
		return nil, fmt.Errorf("initdb: %w\n%s", err, out)
	}
	if c.port, err = freePort(); err != nil {
		c.destroy()
		return nil, err
	}
	// Only what the benchmark needs to be reachable and alone; everything
	// else (fsync, synchronous_commit, max_connections = 100,
	// max_locks_per_transaction = 64, shared_buffers...) stays the default.
	opts := append([]string{
		"-c listen_addresses=127.0.0.1",
		"-p " + strconv.Itoa(c.port),
		"-c unix_socket_directories='" + c.dir + "'",
	}, extra...)
	if out, err := c.run(filepath.Join(binDir, "pg_ctl"), "start", "-w", "-t", "120", "-D", c.dataDir,
		"-l", filepath.Join(c.dir, "postgres.log"), "-o", strings.Join(opts, " ")); err != nil {
		log, _ := os.ReadFile(filepath.Join(c.dir, "postgres.log"))
		c.destroy()
		return nil, fmt.Errorf("pg_ctl start: %w\n%s\n%s", err, out, log)
	}
	return c, nil
}

func (c *cluster) url(db string) string {
	return c.urlAt(c.port, db)
}

func (c *cluster) urlAt(port int, db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", port, db)
}

func (c *cluster) destroy() {
	if _, err := os.Stat(filepath.Join(c.dataDir, "postmaster.pid")); err == nil {
		_, _ = c.run(filepath.Join(c.binDir, "pg_ctl"), "stop", "-w", "-m", "immediate", "-D", c.dataDir)
	}
	_ = os.RemoveAll(c.dir)
}

func (c *cluster) run(bin string, args ...string) ([]byte, error) {
	cmd := exec.Command(bin, args...)
	cmd.Dir = c.dir
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	if c.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	}
	return cmd.CombinedOutput()
}

func (c *cluster) version() string {
	out, err := exec.Command(filepath.Join(c.binDir, "postgres"), "--version").Output()
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(out))
}

// findBinDir: PGMIG_PGBIN, else initdb on PATH, else the newest
// /usr/lib/postgresql/<N>/bin (as tests/pgtest does).
func findBinDir() (string, error) {
	ok := func(dir string) bool {
		_, e1 := os.Stat(filepath.Join(dir, "initdb"))
		_, e2 := os.Stat(filepath.Join(dir, "pg_ctl"))
		return e1 == nil && e2 == nil
	}
	if dir := os.Getenv("PGMIG_PGBIN"); dir != "" {
		if !ok(dir) {
			return "", fmt.Errorf("PGMIG_PGBIN=%s holds no initdb and pg_ctl", dir)
		}
		return dir, nil
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil && ok(filepath.Dir(real)) {
			return filepath.Dir(real), nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool {
		a, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(dirs[i])), 64)
		b, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(dirs[j])), 64)
		return a > b
	})
	for _, d := range dirs {
		if ok(d) {
			return d, nil
		}
	}
	return "", fmt.Errorf("no initdb/pg_ctl in $PGMIG_PGBIN, PATH or /usr/lib/postgresql/*/bin (apt-get install postgresql)")
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
