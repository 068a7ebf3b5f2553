package hostile_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgmig/pgmig/tests/faults/workload"
	"github.com/pgmig/pgmig/tests/pgtest"
)

// TestHostileNamesAreData: names and SQL built to break out of a comment,
// a literal or an identifier are data: applied, recorded verbatim, never
// spliced into SQL (I5, I6).
func TestHostileNamesAreData(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	conn := pgtest.NewDB(t).Conn(t)
	names := []string{
		"*/ drop table pgmig.history; /*",
		`it's "quoted" $$ $pgmig$ $fn$ \ %s %I %L`,
		"line one\nline two\r\n-- not a comment\n;",
		strings.Repeat("n", 10_000),
		"grüße ✓ 𝄞 \u202e",
		"'); drop table pgmig.history; --",
	}
	sqls := []string{
		"create table names_1 (id int) /* */ -- trailing comment without newline",
		"create table names_2 (note text default $$ '; drop table pgmig.history; -- $$)",
		"create table names_3 (id int); comment on table names_3 is '*/ $fn$ $pgmig$'",
		"create table names_4 (id int)",
		"create table names_5 (id int); -- last line is a comment",
		"create table names_6 (id int);;;",
	}
	var b []entry
	for i, n := range names {
		b = append(b, mig(int64(i+1), n, sqls[i]))
	}
	got, err := applyRaw(ctx, conn, toJSON(t, b))
	if err != nil || got["applied"] != len(names) {
		t.Fatalf("applying hostile names: %v %v", got, err)
	}
	rows, err := conn.Query(ctx, "select version, name, sql, checksum from pgmig.history order by version")
	if err != nil {
		t.Fatal(err)
	}
	type rec struct {
		v                   int64
		name, sql, checksum string
	}
	recs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (rec, error) {
		var x rec
		return x, r.Scan(&x.v, &x.name, &x.sql, &x.checksum)
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != len(names) {
		t.Fatalf("%d history rows, want %d", len(recs), len(names))
	}
	for i, r := range recs {
		if r.name != names[i] || r.sql != sqls[i] || r.checksum != sha256Hex(sqls[i]) {
			t.Errorf("version %d recorded as name %.60q sql %.60q checksum %s; want it verbatim", r.v, r.name, r.sql, r.checksum)
		}
	}
	// A second run finds everything applied: the names compare as data too.
	got, err = applyRaw(ctx, conn, toJSON(t, b))
	if err != nil || got["already_applied"] != len(names) {
		t.Fatalf("re-run: %v %v", got, err)
	}
}

// TestTransactionControlRefused: a migration that would end, roll back or
// split migrate_apply's transaction is refused with PM005 naming it, and
// nothing of the batch is applied (I2). (COMMIT alone: tests/engine.)
func TestTransactionControlRefused(t *testing.T) {
	t.Parallel()
	// Every case must fail and leave nothing: one database serves them all.
	ctx := context.Background()
	conn := pgtest.NewDB(t).Conn(t)
	for _, sql := range []string{
		"create table tc (id int); rollback",
		"create table tc (id int); ROLLBACK;",
		"create table tc (id int);\nend",
		"create table tc (id int); abort",
		"create table tc (id int); commit and chain",
		"create table tc (id int); savepoint s1",
		"savepoint s1; create table tc (id int); release savepoint s1",
		"create table tc (id int); begin",
		"create table tc (id int); start transaction",
		"create table tc (id int); prepare transaction 'x'",
		"do $$ begin create table tc (id int); commit; end $$",
		"do $$ begin create table tc (id int); rollback; end $$",
	} {
		t.Run(sql, func(t *testing.T) {
			b := []entry{mig(1, "first", "create table first_one (id int)"), mig(2, "tx_control", sql)}
			_, err := applyRaw(ctx, conn, toJSON(t, b))
			e := pgErr(t, err, "PM005")
			mentions(t, e, "2", "tx_control")
			nothingApplied(t, ctx, conn)
			var status string
			if err := conn.QueryRow(ctx, "select 'usable'").Scan(&status); err != nil {
				t.Fatalf("session unusable after the refusal: %v", err)
			}
		})
	}
}

// TestSessionChangesDoNotLeak: RESET ALL, set_config(..., false), RESET
// ROLE and friends inside migrations change neither the
// next migration, nor the bookkeeping, nor the caller's session after the
// call. (SET ROLE and SET search_path: tests/engine.)
func TestSessionChangesDoNotLeak(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	role := pgtest.CreateRole(t, "")
	conn := db.Conn(t)
	for _, sql := range []string{
		"create schema caller_schema",
		"set search_path = caller_schema, public",
		"set statement_timeout = '123s'",
		"set application_name = 'the-caller'",
		"set datestyle = 'SQL, DMY'",
		"grant create, usage on schema public, caller_schema to " + pgx.Identifier{role}.Sanitize(),
	} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	b := []entry{
		mig(1, "reset_all", "reset all"),
		mig(2, "after_reset", "create table after_reset (id int)"),
		mig(3, "set_role", "set role "+pgx.Identifier{role}.Sanitize()),
		mig(4, "after_set_role", "create table after_set_role (id int)"),
		mig(5, "set_config", "select set_config('search_path', 'pg_catalog', false), set_config('statement_timeout', '1ms', false)"),
		mig(6, "after_set_config", "create table after_set_config (id int); select pg_sleep(0.01)"),
		mig(7, "reset_role_and_path", "reset role; reset search_path; set local search_path = public"),
		mig(8, "after_reset_role", "create table after_reset_role (id int)"),
	}
	got, err := applyRaw(ctx, conn, toJSON(t, b))
	if err != nil || got["applied"] != len(b) {
		t.Fatalf("applying: %v %v", got, err)
	}
	var caller string
	if err := conn.QueryRow(ctx, "select current_user").Scan(&caller); err != nil {
		t.Fatal(err)
	}
	// Every table was created where the caller's search_path points, owned
	// by the caller.
	for _, tbl := range []string{"after_reset", "after_set_role", "after_set_config", "after_reset_role"} {
		var schema, owner string
		err := conn.QueryRow(ctx, `select n.nspname, pg_get_userbyid(c.relowner) from pg_class c
			join pg_namespace n on n.oid = c.relnamespace where c.relname = $1`, tbl).Scan(&schema, &owner)
		if err != nil {
			t.Fatalf("%s: %v", tbl, err)
		}
		if schema != "caller_schema" || owner != caller {
			t.Errorf("%s created in %s owned by %s; want caller_schema and %s (a previous migration's change leaked)", tbl, schema, owner, caller)
		}
	}
	// The caller's session is the caller's again, for search_path, the role
	// and every setting (docs/sql-api.md, "Session state").
	var path, timeout, datestyle, cur, sess, app string
	if err := conn.QueryRow(ctx, `select current_setting('search_path'), current_setting('statement_timeout'),
		current_setting('datestyle'), current_user, session_user, current_setting('application_name')`).
		Scan(&path, &timeout, &datestyle, &cur, &sess, &app); err != nil {
		t.Fatal(err)
	}
	if path != "caller_schema, public" || timeout != "123s" || datestyle != "SQL, DMY" || cur != caller || sess != caller {
		t.Errorf("caller's session after the call: search_path %q, statement_timeout %q, datestyle %q, current_user %q, session_user %q",
			path, timeout, datestyle, cur, sess)
	}
	// Every setting comes back, not only those of pgmig._settings():
	// RESET ALL reset application_name too.
	if app != "the-caller" {
		t.Errorf("application_name after the call = %q, want the caller's (RESET ALL in a migration leaked)", app)
	}
	// The bookkeeping ran as the caller.
	var whoDidIt []string
	rows, err := conn.Query(ctx, "select distinct applied_by || '/' || login_role from pgmig.history")
	if err != nil {
		t.Fatal(err)
	}
	if whoDidIt, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		t.Fatal(err)
	}
	if len(whoDidIt) != 1 || whoDidIt[0] != caller+"/"+caller {
		t.Errorf("history applied_by/login_role = %v, want only %s/%s", whoDidIt, caller, caller)
	}
}

// TestSetSessionAuthorization: SET SESSION AUTHORIZATION in a migration
// (a superuser becoming another role for the rest of the session) must be
// undone like SET ROLE, or refused with an error naming the migration;
// either way nothing leaks and a failure applies nothing.
func TestSetSessionAuthorization(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	role := pgtest.CreateRole(t, "")
	conn := db.Conn(t)
	b := []entry{
		mig(1, "first", "create table first_one (id int)"),
		mig(2, "session_auth", "set session authorization "+pgx.Identifier{role}.Sanitize()),
		mig(3, "after_session_auth", "create table after_session_auth (id int)"),
	}
	_, err := applyRaw(ctx, conn, toJSON(t, b))
	var cur, sess string
	if qerr := conn.QueryRow(ctx, "select current_user, session_user").Scan(&cur, &sess); qerr != nil {
		t.Fatal(qerr)
	}
	if sess == role || cur == role {
		t.Errorf("the caller's session is now %s/%s: SET SESSION AUTHORIZATION leaked out of migrate_apply", cur, sess)
	}
	if err == nil {
		var owner string
		if qerr := conn.QueryRow(ctx, "select pg_get_userbyid(relowner) from pg_class where relname = 'after_session_auth'").Scan(&owner); qerr != nil {
			t.Fatal(qerr)
		}
		if owner == role {
			t.Errorf("migration 3 ran as %s, the role migration 2 switched to", role)
		}
		return
	}
	e := pgErr(t, err, "PM005")
	mentions(t, e, "session_auth")
	nothingApplied(t, ctx, conn)
}

// TestMigrationAttacksBookkeeping: a migration that drops, truncates,
// empties or renames the engine's own state fails the batch with an error
// naming that migration; nothing of the batch is applied and the engine
// still works afterwards (I2, I5). Dropping an API function is the
// operator's call: accepted, the history stays intact, and reinstalling
// brings the function back.
func TestMigrationAttacksBookkeeping(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, sql string }{
		{"drop history", "drop table pgmig.history"},
		{"drop history cascade", "drop table pgmig.history cascade"},
		{"drop schema", "drop schema pgmig cascade"},
		{"rename history", "alter table pgmig.history rename to history_old"},
		{"truncate history", "truncate pgmig.history"},
		{"delete history", "delete from pgmig.history"},
		{"rename column", "alter table pgmig.history rename column version to v"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			conn := pgtest.NewDB(t).Conn(t)
			// One migration applied before, so that erasing the history
			// would be visible.
			before := []entry{mig(1, "before", "create table before_attack (id int)")}
			if got, err := applyRaw(ctx, conn, toJSON(t, before)); err != nil || got["applied"] != 1 {
				t.Fatalf("first push: %v %v", got, err)
			}
			b := append(before, mig(2, "attack", tc.sql), mig(3, "after", "create table after_attack (id int)"))
			got, err := applyRaw(ctx, conn, toJSON(t, b))
			if err == nil {
				// Not refused: the history must still tell the truth.
				var n int
				_ = conn.QueryRow(ctx, "select count(*) from pgmig.history").Scan(&n)
				t.Fatalf("migration %q was accepted (outcomes %v); history now has %d rows for 3 applied versions", tc.sql, got, n)
			}
			t.Logf("%s: %v", tc.name, err)
			var e *pgconn.PgError
			if !errors.As(err, &e) {
				t.Fatalf("not a PostgreSQL error: %v", err)
			}
			if !strings.Contains(e.Message+e.Detail, "attack") {
				t.Errorf("the error does not name the migration that attacked the history (version 2, attack): %s", describe(e))
			}
			var hist int
			var hasAfter, hasBefore bool
			if err := conn.QueryRow(ctx, `select (select count(*) from pgmig.history where version = 1),
				to_regclass('after_attack') is not null, to_regclass('before_attack') is not null`).Scan(&hist, &hasAfter, &hasBefore); err != nil {
				t.Fatalf("engine state after the failed attack: %v", err)
			}
			if hist != 1 || hasAfter || !hasBefore {
				t.Errorf("after the failed batch: history row 1 present %v, after_attack %v, before_attack %v", hist == 1, hasAfter, hasBefore)
			}
			if got, err := applyRaw(ctx, conn, toJSON(t, append(before, mig(3, "after", "create table after_attack (id int)")))); err != nil || got["applied"] != 1 {
				t.Errorf("engine unusable after the failed attack: %v %v", got, err)
			}
		})
	}
}

// dropPublicApply drops every public.migrate_apply (the routine and its batch-as-text twin).
const dropPublicApply = `do $$ declare r regprocedure; begin
  for r in select oid from pg_proc where proname = 'migrate_apply' and pronamespace = 'public'::regnamespace loop
    execute 'drop function ' || r;
  end loop; end $$`

// TestMigrationDropsTheAPI: a migration may drop the unqualified
// migrate_apply in the API schema (the operator's call); the batch is
// recorded, pgmig push keeps working (it calls the copy of the API in
// schema pgmig), and reinstalling the engine restores the dropped function
// with the history intact.
func TestMigrationDropsTheAPI(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	conn := db.Conn(t)
	b := []entry{mig(1, "before", "create table before_drop (id int)"), mig(2, "drop_api", dropPublicApply)}
	if got, err := applyRaw(ctx, conn, toJSON(t, b)); err != nil || got["applied"] != 2 {
		t.Fatalf("dropping migrate_apply from a migration: %v %v", got, err)
	}
	env := []string{"DATABASE_URL=" + db.URL}
	dir := t.TempDir()
	write(t, dir, "001_before.sql", "create table before_drop (id int)")
	write(t, dir, "002_drop_api.sql", dropPublicApply)
	write(t, dir, "003_after.sql", "create table after_drop (id int)")
	if r := workload.Run(t, cli, env, "push", "--dir", dir); r.Code != 0 {
		t.Errorf("push without public.migrate_apply: %v", r)
	}
	if n := queryText(t, conn, "select count(*)::text from pg_proc where proname = 'migrate_apply' and pronamespace = 'public'::regnamespace"); n != "0" {
		t.Fatalf("public.migrate_apply is back before the reinstall: %s", n)
	}
	if r := workload.Run(t, cli, env, "install"); r.Code != 0 {
		t.Fatalf("reinstall: %v", r)
	}
	if n := queryText(t, conn, "select count(*)::text from pg_proc where proname = 'migrate_apply' and pronamespace = 'public'::regnamespace"); n != "2" {
		t.Fatalf("pgmig install restored %s public.migrate_apply routines, want 2", n)
	}
	var n int
	if err := conn.QueryRow(ctx, "select count(*) from pgmig.history").Scan(&n); err != nil || n != 3 {
		t.Fatalf("history after reinstall: %d rows (%v), want 3", n, err)
	}
}

func queryText(t *testing.T, conn *pgx.Conn, sql string) string {
	t.Helper()
	var s string
	if err := conn.QueryRow(context.Background(), sql).Scan(&s); err != nil {
		t.Fatal(err)
	}
	return s
}
