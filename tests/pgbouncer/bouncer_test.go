// Package pgbouncer_test runs pgmig through a real PgBouncer in transaction
// pooling mode: each transaction of a client may run on a different server
// connection, and server connections are shared between clients. pgmig's
// lock is transaction-bound (LOCK TABLE inside migrate_apply's
// transaction), so it keeps working there; a session advisory lock — what
// most migration tools use — does not, and TestSessionAdvisoryLockBreaks
// shows why.
package pgbouncer_test

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgmig/pgmig/tests/faults/workload"
	"github.com/pgmig/pgmig/tests/pgtest"
)

var cli string

func TestMain(m *testing.M) { workload.Main(m, &cli) }

// bouncerBinary is Debian's pgbouncer (PGMIG_PGBOUNCER overrides it).
func bouncerBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("PGMIG_PGBOUNCER"); p != "" {
		return p
	}
	for _, p := range []string{"/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"} {
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p
		}
	}
	if p, err := exec.LookPath("pgbouncer"); err == nil {
		return p
	}
	t.Fatal("pgbouncer not found: apt-get install pgbouncer (or set PGMIG_PGBOUNCER to its path). " +
		"These tests prove pgmig works behind PgBouncer in transaction pooling mode; they are never skipped.")
	return ""
}

// bouncer is one PgBouncer process in front of the test server.
type bouncer struct {
	port int
	dir  string
}

// startBouncer starts PgBouncer in transaction pooling mode on a free
// 127.0.0.1 port in front of the test server, with poolSize server
// connections per database and user, and stops it when the test ends.
func startBouncer(t *testing.T, poolSize int) *bouncer {
	t.Helper()
	bin := bouncerBinary(t)
	c := pgtest.Server(t)
	// The server's password (docker backend, url backend) is what PgBouncer
	// logs in with; clients authenticate to PgBouncer by trust.
	su, _ := url.Parse(c.ConnString("postgres"))
	pw, _ := su.User.Password()

	var cred *syscall.Credential
	dir, err := os.MkdirTemp("", "pgmig-pgbouncer-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if os.Geteuid() == 0 {
		// PgBouncer refuses to run as root.
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("running as root, and pgbouncer refuses root: need an OS user \"postgres\": %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	b := &bouncer{dir: dir}
	users := []string{c.User()}
	var userlist strings.Builder
	for _, u := range users {
		fmt.Fprintf(&userlist, "%q %q\n", u, pw)
	}
	if err := os.WriteFile(filepath.Join(dir, "userlist.txt"), []byte(userlist.String()), 0o644); err != nil {
		t.Fatal(err)
	}

	// The free port is found by binding and releasing it; another process
	// can take it in between, hence a few attempts.
	for attempt := 0; ; attempt++ {
		err := b.start(t, bin, cred, c.Host(), c.Port(), c.User(), poolSize)
		if err == nil {
			return b
		}
		if attempt == 2 || !strings.Contains(err.Error(), "in use") {
			t.Fatal(err)
		}
	}
}

func (b *bouncer) start(t *testing.T, bin string, cred *syscall.Credential, host string, port int, superuser string, poolSize int) error {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	b.port = l.Addr().(*net.TCPAddr).Port
	l.Close()
	ini := fmt.Sprintf(`[databases]
* = host=%s port=%d
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = trust
auth_file = %s
pool_mode = transaction
max_client_conn = 200
default_pool_size = %d
min_pool_size = 0
reserve_pool_size = 0
; pgx and psql may send these at startup; PgBouncer cannot track them per client
ignore_startup_parameters = extra_float_digits,search_path,options
logfile = %s
pidfile = %s
admin_users = %s
`, host, port, b.port, filepath.Join(b.dir, "userlist.txt"), poolSize,
		filepath.Join(b.dir, "pgbouncer.log"), filepath.Join(b.dir, "pgbouncer.pid"), superuser)
	iniPath := filepath.Join(b.dir, "pgbouncer.ini")
	if err := os.WriteFile(iniPath, []byte(ini), 0o644); err != nil {
		return err
	}
	_ = os.Remove(filepath.Join(b.dir, "pgbouncer.log"))
	cmd := exec.Command(bin, iniPath)
	cmd.Dir = b.dir
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", bin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case err := <-exited:
			log, _ := os.ReadFile(filepath.Join(b.dir, "pgbouncer.log"))
			return fmt.Errorf("pgbouncer exited at start: %v\n%s", err, log)
		default:
		}
		if conn, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(b.port)), 200*time.Millisecond); err == nil {
			conn.Close()
			break
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-exited
			return fmt.Errorf("pgbouncer did not listen on port %d within 10s", b.port)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Cleanup(func() {
		// SIGTERM closes everything at once (SIGINT would wait for clients).
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	return nil
}

// URL is db's connection string through PgBouncer. pgx's default (a
// cached, named prepared statement per query) cannot work in transaction
// pooling, where the next query may reach a server connection that never
// saw the PREPARE: default_query_exec_mode=simple_protocol, as PgBouncer's
// documentation asks of every driver.
func (b *bouncer) URL(db *pgtest.DB) string {
	u, err := url.Parse(db.URL)
	if err != nil {
		panic(err)
	}
	u.Host = net.JoinHostPort("127.0.0.1", strconv.Itoa(b.port))
	q := u.Query()
	q.Set("default_query_exec_mode", "simple_protocol")
	u.RawQuery = q.Encode()
	return u.String()
}

// PsqlURL is db's connection string through PgBouncer for psql (libpq knows
// no default_query_exec_mode).
func (b *bouncer) PsqlURL(db *pgtest.DB) string {
	u, _ := url.Parse(b.URL(db))
	q := u.Query()
	q.Del("default_query_exec_mode")
	u.RawQuery = q.Encode()
	return u.String()
}

// serverConns is how many server connections PgBouncer opened to db, as
// the server sees them.
func serverConns(t *testing.T, ctx context.Context, db *pgtest.DB) int {
	t.Helper()
	var n int
	conn := pgtest.Connect(t, pgtest.Server(t).ConnString("postgres"))
	if err := conn.QueryRow(ctx, "select count(*) from pg_stat_activity where datname = $1 and backend_type = 'client backend'", db.Name).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
