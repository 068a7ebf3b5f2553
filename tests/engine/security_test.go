package engine_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgmig/pgmig/tests/pgtest"
)

// TestRoleWithoutGrants: PUBLIC can neither run the engine nor read or
// write the history (I6).
func TestRoleWithoutGrants(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	role := pgtest.CreateRole(t, "")
	conn := pgtest.Connect(t, db.URLAs(role, pgtest.RolePassword))

	_, err := apply(ctx, conn, tableBatch(1), "")
	pgError(t, err, "42501")
	for _, sql := range []string{
		"select * from pgmig.history",
		"insert into pgmig.history (version, name, checksum, applied_at, applied_by, login_role, duration, engine_version) " +
			"values (1, 'x', repeat('0', 64), now(), 'x', 'x', '0', '0')",
		"select * from pgmig._apply('[]', null, null, false, false, false, null, null, 'text', null)",
	} {
		_, err := conn.Exec(ctx, sql)
		if err == nil {
			t.Errorf("%s: succeeded for a role without grants", sql)
			continue
		}
		pgError(t, err, "42501")
	}
}

// TestHostileObjectsDoNotChangeBookkeeping: look-alike functions, an
// operator and a table in public, and a search_path that puts public first,
// must not change what the engine records or decides (I6).
func TestHostileObjectsDoNotChangeBookkeeping(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	admin := db.Conn(t)
	for _, sql := range []string{
		`create function public.sha256(bytea) returns bytea language sql as $$select '\x00'::bytea$$`,
		`create function public.encode(bytea, text) returns text language sql as $$select repeat('0', 64)$$`,
		`create function public.convert_to(text, name) returns bytea language sql as $$select '\x00'::bytea$$`,
		`create function public.now() returns timestamptz language sql as $$select 'epoch'::timestamptz$$`,
		`create function public.clock_timestamp() returns timestamptz language sql as $$select 'epoch'::timestamptz$$`,
		`create function public.jsonb_array_elements(jsonb) returns setof jsonb language sql as
		   $$select '{"version": 999, "name": "evil", "sql": "create table evil ()"}'::jsonb$$`,
		`create function public.hostile_eq(text, text) returns boolean language sql as $$select true$$`,
		`create operator public.= (leftarg = text, rightarg = text, function = public.hostile_eq)`,
		`create function public.hostile_eq(bigint, bigint) returns boolean language sql as $$select true$$`,
		`create operator public.= (leftarg = bigint, rightarg = bigint, function = public.hostile_eq)`,
		`create table public.history (version bigint, name text)`,
	} {
		if _, err := admin.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}

	hostile := db.Conn(t)
	if _, err := hostile.Exec(ctx, "set search_path = public, pg_catalog"); err != nil {
		t.Fatal(err)
	}
	b := tableBatch(3)
	b[0].SQL = "create table t_001 (note text default 'grüße')" // non-ASCII: checksum over UTF-8 bytes
	before := time.Now().Add(-time.Minute)
	rows := mustApply(t, hostile, b, "")
	if got := outcomes(rows); got["applied"] != 3 || len(rows) != 3 {
		t.Fatalf("outcomes %v (%d rows), want 3 applied", got, len(rows))
	}

	type rec struct {
		version   int64
		name      string
		checksum  string
		sql       string
		appliedAt time.Time
	}
	hist, err := pgx.CollectRows(mustQuery(t, admin, "select version, name, checksum, sql, applied_at from pgmig.history order by version"),
		func(r pgx.CollectableRow) (rec, error) {
			var x rec
			return x, r.Scan(&x.version, &x.name, &x.checksum, &x.sql, &x.appliedAt)
		})
	if err != nil {
		t.Fatal(err)
	}
	if len(hist) != len(b) {
		t.Fatalf("history has %d rows, want %d: %+v", len(hist), len(b), hist)
	}
	for i, h := range hist {
		m := b[i]
		if h.version != m.Version || h.name != m.Name || h.sql != m.SQL {
			t.Errorf("history row %d = %d %q %q, want %d %q %q", i, h.version, h.name, h.sql, m.Version, m.Name, m.SQL)
		}
		if want := sha256Hex(m.SQL); h.checksum != want {
			t.Errorf("version %d: checksum %s, want sha256 %s", h.version, h.checksum, want)
		}
		if h.appliedAt.Before(before) {
			t.Errorf("version %d: applied_at %v comes from a hostile now()/clock_timestamp()", h.version, h.appliedAt)
		}
	}
	if n := count(t, admin, "select count(*) from public.history"); n != 0 {
		t.Errorf("public.history got %d rows", n)
	}
	if n := count(t, admin, "select count(*) from pg_class where relname = 'evil'"); n != 0 {
		t.Error("the hostile jsonb_array_elements injected a migration")
	}

	// The hostile "=" (always true) must not hide drift either.
	_, err = apply(ctx, hostile, b.with(2, "create table t_002 (changed int)"), "")
	pgError(t, err, "PM002")
	rows = mustApply(t, hostile, b, "")
	if got := outcomes(rows); got["already_applied"] != 3 {
		t.Errorf("re-run: outcomes %v, want 3 already_applied", got)
	}
	// The caller's search_path is the caller's again after the call.
	var path string
	if err := hostile.QueryRow(ctx, "select pg_catalog.current_setting('search_path')").Scan(&path); err != nil {
		t.Fatal(err)
	}
	if path != "public, pg_catalog" {
		t.Errorf("search_path after migrate_apply = %q, want the caller's %q", path, "public, pg_catalog")
	}
}

func mustQuery(t *testing.T, conn *pgx.Conn, sql string, args ...any) pgx.Rows {
	t.Helper()
	rows, err := conn.Query(context.Background(), sql, args...)
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return rows
}
