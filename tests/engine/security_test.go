package engine_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

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

// attack is a migration that tries to get at pgmig's bookkeeping.
type attack struct{ name, sql string }

// runAttacks applies each attack as migration 2 after migration 1, on one
// database (each batch must fail and leave nothing): the call fails with one
// of codes, the error names the migration, the history still holds exactly
// migration 1, and the engine works afterwards.
func runAttacks(t *testing.T, conn *pgx.Conn, attacks []attack, codes ...string) {
	t.Helper()
	ctx := context.Background()
	first := batch{{Version: 1, Name: "before", SQL: "create table before_attack (id int)", Down: "drop table before_attack"}}
	if _, err := apply(ctx, conn, first, ""); err != nil {
		t.Fatal(describe(err))
	}
	var checksum string
	if err := conn.QueryRow(ctx, "select checksum from pgmig.history where version = 1").Scan(&checksum); err != nil {
		t.Fatal(err)
	}
	for _, a := range attacks {
		t.Run(a.name, func(t *testing.T) {
			b := append(first, migration{Version: 2, Name: "attack", SQL: a.sql}, migration{Version: 3, Name: "after", SQL: "create table after_attack (id int)"})
			_, err := apply(ctx, conn, b, "")
			if err == nil {
				t.Fatalf("accepted; history now: %v", mustQueryStrings(t, conn, "select version || ' ' || name || ' ' || checksum from pgmig.history order by 1"))
			}
			var e *pgconn.PgError
			if !errors.As(err, &e) {
				t.Fatalf("not a PostgreSQL error: %v", err)
			}
			if !slices.Contains(codes, e.Code) {
				t.Errorf("SQLSTATE %s, want one of %v: %s", e.Code, codes, describe(err))
			}
			if !strings.Contains(e.Message+e.Detail, "2 (attack)") {
				t.Errorf("the error does not name migration 2 (attack): %s", describe(err))
			}
			if got := mustQueryStrings(t, conn, "select version || ' ' || checksum from pgmig.history"); !slices.Equal(got, []string{"1 " + checksum}) {
				t.Errorf("history after the failed attack: %v", got)
			}
			if n := count(t, conn, "select count(*) from pg_class where relname = 'after_attack'"); n != 0 {
				t.Error("migration 3 was applied")
			}
		})
	}
	rows := mustApply(t, conn, append(first, migration{Version: 2, Name: "after", SQL: "create table after_attack (id int)"}), "")
	if got := outcomes(rows); got["applied"] != 1 {
		t.Errorf("the engine after the attacks: %v", got)
	}
}

// TestMigrationsCannotSwitchTheGuardOff: the history guard's switch
// (pgmig.maintenance) cannot be turned on by a migration, however it is
// spelled, nor can a migration write pgmig's bookkeeping any other way: by
// code it leaves to run later in the transaction (a deferred trigger, a WITH
// HOLD cursor), by calling the engine itself, or by making the switch a
// default for later sessions. Each fails naming the migration (PM008, PM013
// for the defaults), nothing is applied, and the switch is not left on.
func TestMigrationsCannotSwitchTheGuardOff(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	// A superuser of its own: the attacks that ALTER ROLE must not touch
	// the role every other test uses (rolled back anyway).
	role := pgtest.CreateRole(t, "superuser")
	conn := pgtest.Connect(t, db.URLAs(role, pgtest.RolePassword))
	deleteAll := "delete from pgmig.history"
	attacks := []attack{
		{"SET", "set pgmig.maintenance = on; " + deleteAll},
		{"SET LOCAL", "set local pgmig.maintenance = on; " + deleteAll},
		{"set_config session", "select set_config('pgmig.maintenance', 'on', false); update pgmig.history set name = 'rewritten'"},
		{"set_config local", "select set_config('pgmig.maintenance', 'on', true); truncate pgmig.history"},
		{"SET in another case", "SET PGMIG.Maintenance TO 'on'; " + deleteAll},
		{"function with a SET clause", "create function attack_fn() returns void language plpgsql set pgmig.maintenance = 'on' as $$ begin delete from pgmig.history; end $$; select attack_fn()"},
		{"SECURITY DEFINER function", "create function attack_fn() returns void language plpgsql security definer set search_path = pg_catalog set pgmig.maintenance = 'on' as $$ begin delete from pgmig.history; end $$; select attack_fn()"},
		{"DO block", "do $$ begin perform set_config('pgmig.maintenance', 'on', true); delete from pgmig.history; end $$"},
		{"dynamic SQL", "do $$ begin execute 'set local ' || 'pgmig.' || 'maintenance = on'; execute 'delete from pgmig.' || 'history'; end $$"},
		{"trigger on another table", "create table t_trig (id int); create function attack_trg() returns trigger language plpgsql as $$ begin perform set_config('pgmig.maintenance', 'on', true); delete from pgmig.history; return null; end $$; " +
			"create trigger attack after insert on t_trig for each statement execute function attack_trg(); insert into t_trig values (1)"},
		{"rule on another table", "create table t_rule (id int); create rule attack as on insert to t_rule do also delete from pgmig.history; set local pgmig.maintenance = on; insert into t_rule values (1)"},
		{"event trigger", "create function attack_evt() returns event_trigger language plpgsql as $$ begin perform set_config('pgmig.maintenance', 'on', true); delete from pgmig.history; end $$; " +
			"create event trigger attack_evt on ddl_command_end execute function attack_evt(); create table t_evt (id int)"},
		{"deferred constraint trigger", "create table t_def (id int); create function attack_def() returns trigger language plpgsql as $$ begin perform set_config('pgmig.maintenance', 'on', true); delete from pgmig.history; return null; end $$; " +
			"create constraint trigger attack after insert on t_def deferrable initially deferred for each row execute function attack_def(); insert into t_def values (1)"},
		{"session_replication_role replica", "set session_replication_role = replica; set local pgmig.maintenance = on; " + deleteAll},
		{"a fake history row", "insert into pgmig.history (version, name, checksum, applied_at, applied_by, login_role, duration, engine_version) " +
			"values (999, 'fake', repeat('0', 64), now(), 'x', 'x', '0', '0')"},
		{"nested migrate_rollback", "select * from migrate_rollback(0)"},
		{"nested migrate_apply", `select * from migrate_apply('[{"version": 500, "name": "inner", "sql": "select 1"}]', allow_missing => true)`},
		{"the audit trail", "update pgmig.audit set by_role = 'someone else'"},
		{"the audit trail with the switch", "set local pgmig.maintenance = on; delete from pgmig.audit"},
		{"a fake non-transactional run", "insert into pgmig.nontx_run (version, name, checksum, statements, statements_done, sql, state, started_at, updated_at, pid, by_role) " +
			"values (999, 'fake', repeat('0', 64), 1, 0, 'select 1', 'running', now(), now(), 1, 'x')"},
		{"ALTER ROLE SET", "alter role current_user set pgmig.maintenance = 'on'"},
		{"ALTER DATABASE SET", "do $$ begin execute format('alter database %I set pgmig.maintenance = on', current_database()); end $$"},
	}
	runAttacks(t, conn, attacks, "PM008", "PM013")
	t.Logf("%d ways of switching the guard off tried", len(attacks))

	// A migration that only sets the switch: applied, and the switch is
	// not left on, in this session or its next transaction.
	mustApply(t, conn, batch{{Version: 1, Name: "before", SQL: "create table before_attack (id int)", Down: "drop table before_attack"},
		{Version: 2, Name: "after", SQL: "create table after_attack (id int)"},
		{Version: 3, Name: "switch_only", SQL: "set pgmig.maintenance = on; set pgmig.maintenance = on"}}, "")
	var sw string
	if err := conn.QueryRow(ctx, "select coalesce(current_setting('pgmig.maintenance', true), '')").Scan(&sw); err != nil || sw == "on" {
		t.Errorf("pgmig.maintenance after the call = %q (%v)", sw, err)
	}
	_, err := conn.Exec(ctx, "delete from pgmig.history")
	pgError(t, err, "PM008")

	// Code a migration leaves for the COMMIT: a WITH HOLD cursor whose query
	// would write the history when the commit runs it. Closed before.
	mustExec(t, conn, `create function attack_at_commit() returns int language plpgsql as $$
		begin perform set_config('pgmig.maintenance', 'on', true); delete from pgmig.history; return 1; end $$`)
	mustApply(t, conn, batch{{Version: 1, Name: "before", SQL: "create table before_attack (id int)", Down: "drop table before_attack"},
		{Version: 2, Name: "after", SQL: "create table after_attack (id int)"},
		{Version: 3, Name: "switch_only", SQL: "set pgmig.maintenance = on; set pgmig.maintenance = on"},
		{Version: 4, Name: "cursor", SQL: "declare attack cursor with hold for select attack_at_commit()"}}, "")
	if n := count(t, conn, "select count(*) from pgmig.history"); n != 4 {
		t.Errorf("history has %d rows after the commit, want 4: the cursor's query ran at COMMIT", n)
	}
}

// TestOperatorsCanStillEditTheHistory: outside any migration, whoever
// means it can still edit the history with the switch set in the
// transaction (and migrate_rollback/migrate_repair can); never with the
// switch as a default from ALTER ROLE/DATABASE.
func TestOperatorsCanStillEditTheHistory(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	conn := db.Conn(t)
	mustApply(t, conn, tableBatch(3), "")
	mustExec(t, conn, "begin; set local pgmig.maintenance = 'on'; update pgmig.history set name = 'renamed' where version = 3; commit")
	mustExec(t, conn, "set pgmig.maintenance = 'on'; delete from pgmig.history where version = 3; reset pgmig.maintenance")
	if n := count(t, conn, "select count(*) from pgmig.history"); n != 2 {
		t.Fatalf("history has %d rows, want 2", n)
	}
	_, err := conn.Exec(ctx, "delete from pgmig.audit")
	pgError(t, err, "PM008")
	mustExec(t, conn, "begin; set local pgmig.maintenance = 'on'; delete from pgmig.audit; commit")

	mustExec(t, conn, "alter database "+pgx.Identifier{db.Name}.Sanitize()+" set pgmig.maintenance = 'on'")
	fresh := db.Conn(t)
	_, err = fresh.Exec(ctx, "delete from pgmig.history")
	e := pgError(t, err, "PM008")
	if !strings.Contains(e.Message, "ALTER ROLE or ALTER DATABASE") {
		t.Errorf("refusal does not say why: %s", describe(err))
	}
	// Migrations stop too, until the default is gone.
	next := append(tableBatch(2), migration{Version: 10, Name: "next", SQL: "create table next_one (id int)"})
	_, err = apply(ctx, fresh, next, "")
	pgError(t, err, "PM013")
	mustExec(t, conn, "alter database "+pgx.Identifier{db.Name}.Sanitize()+" reset pgmig.maintenance")
	mustApply(t, db.Conn(t), next, "")
}

// TestBookkeepingTamperingDetected: a migration (run here as a superuser,
// who can) that changes pgmig's own objects so that the history would
// record nothing, the wrong thing, or could be rewritten later: every such
// batch fails with PM013 naming the migration, nothing is applied, the
// history is intact, and the engine works afterwards. Changed and changed
// back counts too, and so does replacing the checkers themselves.
func TestBookkeepingTamperingDetected(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	conn := db.Conn(t)
	other := pgtest.CreateRole(t, "")
	o := pgx.Identifier{other}.Sanitize()
	noop := "create or replace function %s returns %s language plpgsql as $f$ begin return %s; end $f$; "
	attacks := []attack{
		{"disable the guard", "alter table pgmig.history disable trigger history_append_only"},
		{"disable every trigger", "alter table pgmig.history disable trigger all"},
		{"drop the guard", "drop trigger history_append_only on pgmig.history"},
		{"guard for replicas only", "alter table pgmig.history enable replica trigger history_append_only"},
		{"disable, delete, enable", "alter table pgmig.history disable trigger history_append_only; delete from pgmig.history; alter table pgmig.history enable always trigger history_append_only"},
		{"replace the guard", fmt.Sprintf(noop, "pgmig._history_guard()", "trigger", "null") + "delete from pgmig.history"},
		{"replace the checkers", fmt.Sprintf(noop, "pgmig._assert_intact(p_snapshot pgmig.integrity_state, p_ran_versions bigint[], p_ran_names text[], "+
			"p_history_delta bigint, p_written_versions bigint[], p_written_checksums text[], p_ran_sql text[] default null)", "void", "") +
			fmt.Sprintf(noop, "pgmig._integrity_problems()", "setof text", "") +
			"alter table pgmig.history disable trigger history_append_only; delete from pgmig.history"},
		{"add a column", "alter table pgmig.history add column note text default 'x'"},
		{"drop a NOT NULL", "alter table pgmig.history alter column checksum drop not null"},
		{"drop a CHECK", "alter table pgmig.history drop constraint history_checksum_check"},
		{"drop the primary key", "alter table pgmig.history drop constraint history_pkey"},
		{"a rule that swallows the INSERT", "create rule attack as on insert to pgmig.history do instead nothing"},
		{"a rule that adds to it", "create rule attack as on insert to pgmig.history do also insert into pgmig.audit (action, version, details) values ('repair', 0, '{}')"},
		{"a trigger that rewrites the INSERT", "create function attack_rw() returns trigger language plpgsql as $$ begin new.checksum := repeat('0', 64); return new; end $$; " +
			"create trigger attack before insert on pgmig.history for each row execute function attack_rw()"},
		{"a trigger that deletes behind it", "create function attack_del() returns trigger language plpgsql as $$ begin perform set_config('pgmig.maintenance', 'on', true); delete from pgmig.history; return null; end $$; " +
			"create trigger attack after insert on pgmig.history for each statement execute function attack_del()"},
		{"row level security", "alter table pgmig.history enable row level security; create policy attack on pgmig.history using (version < 2)"},
		{"forced row level security", "alter table pgmig.history force row level security"},
		{"a new owner", "alter table pgmig.history owner to " + o},
		{"a grant", "grant all on pgmig.history to public"},
		{"a revoke", "revoke select on pgmig.history from " + pgx.Identifier{pgtest.Server(t).User()}.Sanitize() + "; grant select on pgmig.history to " + pgx.Identifier{pgtest.Server(t).User()}.Sanitize()},
		{"a child table", "create table attack_child () inherits (pgmig.history); insert into attack_child select * from pgmig.history limit 1"},
		{"a look-alike history", "alter table pgmig.history rename to history_old; create table pgmig.history (like pgmig.history_old including all)"},
		{"the audit's guard", "alter table pgmig.audit disable trigger audit_append_only"},
		{"the guard's owner", "alter function pgmig._history_guard() owner to " + o},
		{"the guard's settings", "alter function pgmig._history_guard() set search_path = public"},
		{"a function of pgmig's", "create function pgmig._attack() returns int language sql as 'select 1'"},
		{"the schema's owner", "alter schema pgmig owner to " + o},
	}
	runAttacks(t, conn, attacks, "PM013", "PM008", "PM005")
	t.Logf("%d ways of tampering with the bookkeeping tried", len(attacks))
}

// TestAuditIsAppendOnly: the audit trail refuses UPDATE, DELETE and
// TRUNCATE like the history (its owner included), unless the switch is set
// in the transaction.
func TestAuditIsAppendOnly(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	conn := pgtest.NewDB(t).Conn(t)
	mustApply(t, conn, tableBatch(2), "")
	rows, err := conn.Query(ctx, "select * from migrate_rollback(1)")
	if err != nil {
		t.Fatal(err)
	}
	rows.Close()
	if n := count(t, conn, "select count(*) from pgmig.audit"); n != 1 {
		t.Fatalf("audit rows: %d", n)
	}
	for _, sql := range []string{"update pgmig.audit set by_role = 'x'", "delete from pgmig.audit", "truncate pgmig.audit"} {
		_, err := conn.Exec(ctx, sql)
		e := pgError(t, err, "PM008")
		if !strings.Contains(e.Message, "audit trail is append-only") {
			t.Errorf("%s: %s", sql, describe(err))
		}
	}
	if n := count(t, conn, "select count(*) from pgmig.audit"); n != 1 {
		t.Fatalf("audit rows after the refusals: %d", n)
	}
}
