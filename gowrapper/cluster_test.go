package pgmig_test

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
	"testing"

	"github.com/pgmig/pgmig/tests/pgtest"
)

// throwawayCluster starts a private PostgreSQL cluster with default
// settings plus settings (e.g. "max_locks_per_transaction=10"), installs
// the engine into its postgres database and returns a URL for it. The
// shared test server cannot serve here: its max_connections=300 makes the
// lock table several times bigger than a default server's.
func throwawayCluster(t *testing.T, settings ...string) string {
	t.Helper()
	binDir := pgtest.Server(t).BinDir()
	if binDir == "" {
		dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
		sort.Slice(dirs, func(i, j int) bool {
			a, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[i])))
			b, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[j])))
			return a > b
		})
		for _, d := range dirs {
			if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
				binDir = d
				break
			}
		}
	}
	if binDir == "" {
		t.Fatal("this test needs local PostgreSQL server binaries (initdb, pg_ctl) for a cluster with default settings: apt-get install postgresql, or set PGMIG_PGBIN")
	}
	var cred *syscall.Credential
	uid, gid := -1, -1
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("running as root needs an OS user postgres for initdb: %v", err)
		}
		uid, _ = strconv.Atoi(u.Uid)
		gid, _ = strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	dir, err := os.MkdirTemp("/tmp", "pgmig-throwaway-")
	if err != nil {
		t.Fatal(err)
	}
	if uid >= 0 {
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	run := func(bin string, args ...string) {
		t.Helper()
		cmd := exec.Command(filepath.Join(binDir, bin), args...)
		cmd.Dir = dir
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, "PG") {
				cmd.Env = append(cmd.Env, kv)
			}
		}
		if cred != nil {
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		}
		if out, err := cmd.CombinedOutput(); err != nil {
			log, _ := os.ReadFile(filepath.Join(dir, "log"))
			t.Fatalf("%s %v: %v\n%s\n%s", bin, args, err, out, log)
		}
	}
	data := filepath.Join(dir, "data")
	run("initdb", "-D", data, "--no-sync", "-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	opts := []string{"-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off",
		"-c listen_addresses=127.0.0.1", fmt.Sprintf("-p %d", port), "-c unix_socket_directories=" + dir}
	for _, s := range settings {
		opts = append(opts, "-c "+s)
	}
	run("pg_ctl", "start", "-w", "-t", "120", "-D", data, "-l", filepath.Join(dir, "log"), "-o", strings.Join(opts, " "))
	t.Cleanup(func() {
		run("pg_ctl", "stop", "-w", "-m", "immediate", "-D", data)
		os.RemoveAll(dir)
	})
	url := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port)
	c := connect(t, url, nil)
	if _, err := c.Install(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	return url
}
