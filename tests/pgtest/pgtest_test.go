package pgtest_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	pgmigsql "github.com/pgmig/pgmig/sql"
	"github.com/pgmig/pgmig/tests/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestNewDBGivesDistinctUsableDatabases(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a, b := pgtest.NewDB(t), pgtest.NewDB(t)
	if a.Name == b.Name || a.URL == b.URL {
		t.Fatalf("same database twice: %q %q", a.Name, b.Name)
	}
	ca, cb := a.Conn(t), b.Conn(t)
	if _, err := ca.Exec(ctx, "create table only_in_a (id int)"); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := cb.QueryRow(ctx, "select count(*) from pg_class where relname = 'only_in_a'").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatal("a table created in one test database is visible in the other")
	}
	for _, c := range []*pgx.Conn{ca, cb} {
		var db, app string
		if err := c.QueryRow(ctx, "select current_database(), current_setting('application_name')").Scan(&db, &app); err != nil {
			t.Fatal(err)
		}
		if app != pgtest.ApplicationName {
			t.Errorf("application_name = %q, want %q", app, pgtest.ApplicationName)
		}
	}
	var hasSchema bool
	if err := ca.QueryRow(ctx, "select exists (select from pg_namespace where nspname = 'pgmig')").Scan(&hasSchema); err != nil {
		t.Fatal(err)
	}
	if !hasSchema && !placeholderEngine() {
		t.Error("NewDB: schema pgmig is missing; the engine template was not installed")
	}
	pool := a.Pool(t, 3)
	if err := pool.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if got := pool.Config().MaxConns; got != 3 {
		t.Errorf("pool MaxConns = %d, want 3", got)
	}
}

func TestDatabaseDroppedAfterCleanup(t *testing.T) {
	t.Parallel()
	var name string
	t.Run("inner", func(t *testing.T) {
		db := pgtest.NewDB(t)
		name = db.Name
		db.Conn(t) // an open connection must not prevent the drop
	})
	c := pgtest.Server(t)
	conn := pgtest.Connect(t, c.ConnString("postgres"))
	var n int
	if err := conn.QueryRow(context.Background(), "select count(*) from pg_database where datname = $1", name).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("database %s still exists after its test ended", name)
	}
}

func TestCreateRoleCanLogIn(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	role := pgtest.CreateRole(t, "NOSUPERUSER")
	conn := pgtest.Connect(t, db.URLAs(role, pgtest.RolePassword))
	var user string
	var super bool
	if err := conn.QueryRow(ctx, "select current_user, current_setting('is_superuser')::bool").Scan(&user, &super); err != nil {
		t.Fatal(err)
	}
	if user != role || super {
		t.Fatalf("connected as %q (superuser %v), want %q, not superuser", user, super, role)
	}
	// Owning an object must not make the role impossible to drop at cleanup.
	if _, err := conn.Exec(ctx, "create table owned_by_role (id int)"); err != nil {
		var pgErr *pgconn.PgError
		// PostgreSQL 15+: PUBLIC has no CREATE on schema public.
		if !errors.As(err, &pgErr) || pgErr.Code != "42501" {
			t.Fatal(err)
		}
		admin := db.Conn(t)
		if _, err := admin.Exec(ctx, "grant create on schema public to "+pgx.Identifier{role}.Sanitize()); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, "create table owned_by_role (id int)"); err != nil {
			t.Fatal(err)
		}
	}
}

func TestNewEmptyDBHasNoEngine(t *testing.T) {
	t.Parallel()
	conn := pgtest.NewEmptyDB(t).Conn(t)
	var has bool
	if err := conn.QueryRow(context.Background(), "select exists (select from pg_namespace where nspname = 'pgmig')").Scan(&has); err != nil {
		t.Fatal(err)
	}
	if has {
		t.Fatal("NewEmptyDB has schema pgmig")
	}
}

func TestSetParamOverridesApplicationName(t *testing.T) {
	t.Parallel()
	db := pgtest.NewEmptyDB(t)
	conn := pgtest.Connect(t, pgtest.SetParam(db.URL, "application_name", "holder-app"))
	var app string
	if err := conn.QueryRow(context.Background(), "select current_setting('application_name')").Scan(&app); err != nil {
		t.Fatal(err)
	}
	if app != "holder-app" {
		t.Fatalf("application_name = %q", app)
	}
}

func TestServerFacts(t *testing.T) {
	t.Parallel()
	c := pgtest.Server(t)
	t.Logf("backend %s at %s:%d as %s, server_version_num %d, bin dir %q, psql %q, os user %q",
		c.Kind(), c.Host(), c.Port(), c.User(), c.ServerVersionNum(), c.BinDir(), c.PsqlPath(), c.ServerOSUser())
	if c.Kind() == "local" && c.BinDir() == "" {
		t.Error("local cluster without BinDir")
	}
}

// TestCloneSpeed reports what one NewDB costs once the template exists.
func TestCloneSpeed(t *testing.T) {
	t.Parallel()
	pgtest.NewDB(t) // make sure the template exists
	const n = 10
	start := time.Now()
	for i := 0; i < n; i++ {
		t.Run("clone", func(t *testing.T) { pgtest.NewDB(t) })
	}
	t.Logf("NewDB: %v per database (create + drop, %d sequential clones)", time.Since(start)/n, n)
}

// TestStopImmediateAndStart kills and restarts the local cluster. It cannot
// run in parallel with the other tests.
func TestStopImmediateAndStart(t *testing.T) {
	c := pgtest.Server(t)
	if c.Kind() != "local" {
		t.Skip("needs the local backend")
	}
	ctx := context.Background()
	db := pgtest.NewEmptyDB(t)
	conn := db.Conn(t)
	if err := c.StopImmediate(); err != nil {
		t.Fatal(err)
	}
	if err := conn.Ping(ctx); err == nil {
		t.Fatal("connection survived StopImmediate")
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	conn2 := db.Conn(t)
	if err := conn2.Ping(ctx); err != nil {
		t.Fatal(err)
	}
}

// placeholderEngine: sql/build/pgmig.sql is still the placeholder comment.
func placeholderEngine() bool {
	return len(pgmigsql.InstallScript()) < 200
}
