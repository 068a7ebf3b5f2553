package hostile_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	pgmig "github.com/pgmig/pgmig/gowrapper"
	"github.com/pgmig/pgmig/tests/faults/workload"
	"github.com/pgmig/pgmig/tests/pgtest"
)

// The principle, tried at random: nothing a migration does outlives the
// call or escapes its transaction. Each trial is a batch of 1-5 migrations,
// each made of 1-4 random fragments (a setting changed by one of eight
// spellings, a custom setting, the role, search_path, RESET ALL, leftovers
// such as temporary tables, prepared statements, WITH HOLD cursors and
// advisory locks, writes to pgmig's bookkeeping under every spelling of its
// switch, a division by zero), called in autocommit or in the caller's
// transaction holding SET LOCAL values of its own. Whatever the outcome,
// afterwards every setting (all of pg_settings, value and source, and the
// custom settings involved), the role and what the session holds are what
// they would have been without the call, in the transaction and after it
// ends; the history has the whole batch or none of it; a failure is one of
// the SQLSTATEs that the fragments can cause.

// fragmentSettings are the settings the trials change (name, a value other
// than the default), a spread of types and of what they govern.
var fragmentSettings = [][2]string{
	{"work_mem", "77MB"}, {"maintenance_work_mem", "99MB"}, {"statement_timeout", "1h"}, {"lock_timeout", "42s"},
	{"idle_in_transaction_session_timeout", "2h"}, {"application_name", "spoofed"}, {"DateStyle", "German, DMY"},
	{"TimeZone", "Asia/Tokyo"}, {"IntervalStyle", "iso_8601"}, {"extra_float_digits", "0"}, {"bytea_output", "escape"},
	{"client_min_messages", "error"}, {"synchronous_commit", "off"}, {"enable_seqscan", "off"}, {"enable_hashjoin", "off"},
	{"random_page_cost", "1.1"}, {"jit", "off"}, {"default_transaction_isolation", "serializable"},
	{"default_transaction_read_only", "on"}, {"default_transaction_deferrable", "on"}, {"check_function_bodies", "off"},
	{"row_security", "off"}, {"session_replication_role", "replica"}, {"xmloption", "document"},
	{"standard_conforming_strings", "off"}, {"escape_string_warning", "off"}, {"quote_all_identifiers", "on"},
	{"transform_null_equals", "on"}, {"plan_cache_mode", "force_generic_plan"}, {"default_statistics_target", "1000"},
	{"cursor_tuple_fraction", "0.5"}, {"log_statement", "all"}, {"log_min_duration_statement", "5s"},
	{"plpgsql.variable_conflict", "use_column"}, {"plpgsql.extra_warnings", "all"}, {"temp_tablespaces", "pg_default"},
	{"default_text_search_config", "pg_catalog.simple"}, {"gin_fuzzy_search_limit", "7"},
}

// callerLocal are what the caller sets with SET LOCAL in the transaction
// mode: left alone by the fragments (TestSetLocalOfTheCallerBoundary in
// tests/engine covers a migration changing one of them).
var callerLocal = [][2]string{{"enable_indexscan", "off"}, {"seq_page_cost", "3"}, {"myapp.caller", "local"}}

// callerSession are what the caller sets at session level in the autocommit
// mode, among the settings the fragments change.
var callerSession = [][2]string{{"work_mem", "12MB"}, {"statement_timeout", "77s"}, {"lock_timeout", "7s"},
	{"application_name", "the-caller"}, {"TimeZone", "America/Lima"}, {"myapp.tenant", "callers"}}

var customNames = []string{"myapp.tenant", "myapp.user_id", "pgmig.maintenance", "app.flag"}

func setSQL(spelling int, name, to, current string) string {
	id := pgx.Identifier{name}.Sanitize()
	lit := "'" + strings.ReplaceAll(to, "'", "''") + "'"
	cur := "'" + strings.ReplaceAll(current, "'", "''") + "'"
	switch spelling {
	case 0:
		return fmt.Sprintf("set %s = %s", id, lit)
	case 1:
		return fmt.Sprintf("set local %s = %s", id, lit)
	case 2:
		return fmt.Sprintf("select pg_catalog.set_config(%s, %s, false)", "'"+name+"'", lit)
	case 3:
		return fmt.Sprintf("select pg_catalog.set_config(%s, %s, true)", "'"+name+"'", lit)
	case 4:
		return fmt.Sprintf("set %s = %s; set local %s = %s", id, lit, id, cur)
	case 5:
		return fmt.Sprintf("do $x$ begin perform pg_catalog.set_config(%s, %s, false); end $x$", "'"+name+"'", lit)
	case 6:
		return fmt.Sprintf("reset %s", id)
	default:
		return fmt.Sprintf("set session %s to %s", id, lit)
	}
}

// fragment returns one random piece of a migration and the SQLSTATE it makes
// the batch fail with ("" if none).
func fragment(r *rand.Rand, mode string, defaults map[string]string, role string, seq *int) (string, string) {
	*seq++
	n := *seq
	switch k := r.IntN(20); {
	case k < 8:
		s := fragmentSettings[r.IntN(len(fragmentSettings))]
		return setSQL(r.IntN(8), s[0], s[1], defaults[s[0]]), ""
	case k < 10:
		name := customNames[r.IntN(len(customNames))]
		return setSQL(r.IntN(8), name, fmt.Sprintf("v%d", n), ""), ""
	case k == 10:
		return []string{"set role " + pgx.Identifier{role}.Sanitize(), "set local role " + pgx.Identifier{role}.Sanitize(),
			"select set_config('role', " + "'" + role + "'" + ", false)"}[r.IntN(3)], ""
	case k == 11:
		return []string{"set search_path = pg_catalog", "set local search_path = public, pg_catalog",
			"select set_config('search_path', 'pg_temp, public', false)", "set schema 'public'"}[r.IntN(4)], ""
	case k == 12:
		if mode == "autocommit" {
			return "reset all", ""
		}
		return "discard plans", ""
	case k == 13:
		return []string{
			fmt.Sprintf("create temp table tmp_%d (id int)", n),
			fmt.Sprintf("prepare prep_%d as select %d", n, n),
			fmt.Sprintf("declare cur_%d cursor with hold for select %d", n, n),
			fmt.Sprintf("select pg_advisory_lock(%d)", 900000+n),
			fmt.Sprintf("select pg_advisory_lock_shared(%d, %d)", n, n),
			fmt.Sprintf("create function pg_temp.f_%d() returns int language sql as 'select 1'", n),
		}[r.IntN(6)], ""
	case k == 14:
		return []string{
			"set local pgmig.maintenance = on; delete from pgmig.history",
			"select set_config('pgmig.maintenance', 'on', false); update pgmig.history set name = 'x'",
			"do $x$ begin perform set_config('pgmig.maintenance', 'on', true); truncate pgmig.history; end $x$",
			"set pgmig.maintenance = on; delete from pgmig.audit",
		}[r.IntN(4)], "PM008"
	case k == 15:
		return "select 1/0", "22012"
	case k == 16:
		return "set session characteristics as transaction read only", ""
	default:
		return fmt.Sprintf("create table public.t_%d (id int)", n), ""
	}
}

// sessionState is every setting (value [source]), the custom settings
// named, the role, and what the session holds.
func sessionState(tb testing.TB, q interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}) map[string]string {
	tb.Helper()
	ctx := context.Background()
	// PL/pgSQL defines its settings when it is loaded: load it first.
	if rows, err := q.Query(ctx, "do $$ begin end $$"); err != nil {
		tb.Fatal(err)
	} else {
		rows.Close()
	}
	names := append(slices.Clone(customNames), "myapp.caller")
	rows, err := q.Query(ctx, `
		select name, setting || ' [' || source || ']' from pg_settings
		union all select 'custom ' || n, coalesce(current_setting(n, true), '') from unnest($1::text[]) as n
		union all select 'role', current_setting('role')
		union all select 'current_user', current_user::text
		union all select 'temp objects', coalesce(string_agg(relname, ',' order by relname), '')
		          from pg_class where relnamespace = pg_my_temp_schema() and relkind not in ('i', 't')
		union all select 'temp functions', coalesce(string_agg(proname, ',' order by proname), '')
		          from pg_proc where pronamespace = pg_my_temp_schema()
		union all select 'cursors', coalesce(string_agg(name, ',' order by name), '') from pg_cursors where is_holdable
		union all select 'prepared', coalesce(string_agg(name, ',' order by name), '') from pg_prepared_statements where from_sql
		union all select 'advisory locks', coalesce(string_agg(classid || '/' || objid || '/' || objsubid || '/' || mode, ',' order by 1), '')
		          from pg_locks where locktype = 'advisory' and pid = pg_backend_pid()`, names)
	if err != nil {
		tb.Fatalf("reading the session: %v", err)
	}
	out := map[string]string{}
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			tb.Fatal(err)
		}
		out[k] = v
	}
	if err := rows.Err(); err != nil {
		tb.Fatal(err)
	}
	return out
}

func stateDiff(before, after map[string]string) []string {
	var out []string
	for k, b := range before {
		if a := after[k]; a != b {
			out = append(out, fmt.Sprintf("%s: %q -> %q", k, b, a))
		}
	}
	for k, a := range after {
		if _, ok := before[k]; !ok {
			out = append(out, fmt.Sprintf("%s: (absent) -> %q", k, a))
		}
	}
	sort.Strings(out)
	return out
}

// TestRandomSessionAttacks: see above. 80 trials by default, 800 with
// PGMIG_TEST_FULL=1; the seed is logged and PGMIG_TEST_SEED replays one.
func TestRandomSessionAttacks(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	role := pgtest.CreateRole(t, "")
	admin := db.Conn(t)
	if _, err := admin.Exec(ctx, "grant create, usage on schema public to "+pgx.Identifier{role}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	defaults := map[string]string{}
	if _, err := admin.Exec(ctx, "do $$ begin end $$"); err != nil { // PL/pgSQL's settings too
		t.Fatal(err)
	}
	rows, err := admin.Query(ctx, "select name, setting from pg_settings")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			t.Fatal(err)
		}
		defaults[k] = v
	}
	rows.Close()

	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("PGMIG_TEST_SEED"); v != "" {
		if seed, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatalf("PGMIG_TEST_SEED: %v", err)
		}
	}
	r := rand.New(rand.NewPCG(seed, seed))
	trials := workload.Trials(80, 800)
	version, seq := 0, 0
	var applied, failed, fragments int
	codes := map[string]int{}
	for trial := range trials {
		mode := []string{"autocommit", "transaction"}[r.IntN(2)]
		var b []entry
		wantFail := map[string]bool{} // the batch must fail, with one of these
		mayFail := map[string]bool{}  // it may fail with these too
		var sqls []string
		for range 1 + r.IntN(5) {
			var parts []string
			for range 1 + r.IntN(4) {
				sql, code := fragment(r, mode, defaults, role, &seq)
				parts = append(parts, sql)
				if code != "" {
					wantFail[code] = true
				}
				if strings.Contains(sql, "role") {
					// The later fragments run as a role without superuser settings
					// or access to pgmig.
					mayFail["42501"] = true
				}
				fragments++
			}
			version++
			sql := strings.Join(parts, "; ")
			sqls = append(sqls, sql)
			b = append(b, mig(int64(version), fmt.Sprintf("trial_%d_%d", trial, version), sql))
		}
		conn := db.Conn(t) // a session of its own: exit_on_error may end it
		if mode == "autocommit" {
			// The caller's own session values, which the migrations may change.
			resetAll := strings.Contains(strings.Join(sqls, ";"), "reset all")
			for _, s := range callerSession {
				// RESET ALL empties the caller's custom settings that no migration of
				// the call names: PostgreSQL lists them nowhere (the documented
				// boundary, TestCustomSettingsPgmigCanName).
				if strings.Contains(s[0], ".") && resetAll {
					continue
				}
				if r.IntN(2) == 0 {
					if _, err := conn.Exec(ctx, setSQL(0, s[0], s[1], "")); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
		var q interface {
			Query(context.Context, string, ...any) (pgx.Rows, error)
		} = conn
		var tx pgx.Tx
		if mode == "transaction" {
			if tx, err = conn.Begin(ctx); err != nil {
				t.Fatal(err)
			}
			q = tx
			for _, s := range callerLocal {
				if _, err := tx.Exec(ctx, setSQL(1, s[0], s[1], "")); err != nil {
					t.Fatal(err)
				}
			}
		}
		before := sessionState(t, q)
		histBefore := historyCount(t, admin)
		var callErr error
		if mode == "autocommit" {
			// One simple-protocol message, as psql -c sends it.
			_, callErr = conn.Exec(ctx, "select * from migrate_apply($1::jsonb, allow_missing => true)", pgx.QueryExecModeSimpleProtocol, toJSON(t, b))
		} else {
			_, callErr = tx.Exec(ctx, "savepoint call")
			if callErr == nil {
				_, callErr = tx.Exec(ctx, "select * from migrate_apply($1::jsonb, allow_missing => true)", toJSON(t, b))
			}
			if callErr != nil {
				if _, err := tx.Exec(ctx, "rollback to savepoint call"); err != nil {
					t.Fatalf("trial %d: rollback to savepoint: %v", trial, err)
				}
			}
		}
		describeTrial := func() string {
			return fmt.Sprintf("trial %d (%s, seed %d): %s", trial, mode, seed, strings.Join(sqls, " || "))
		}
		if callErr != nil {
			var e *pgconn.PgError
			if !errors.As(callErr, &e) {
				t.Fatalf("%s: %v", describeTrial(), callErr)
			}
			codes[e.Code]++
			if !wantFail[e.Code] && !mayFail[e.Code] {
				t.Errorf("%s: failed with %s: %s (allowed: %v %v)", describeTrial(), e.Code, e.Message, wantFail, mayFail)
			}
			failed++
		} else {
			if len(wantFail) > 0 {
				t.Errorf("%s: succeeded, want one of %v", describeTrial(), wantFail)
			}
			applied++
		}
		if d := stateDiff(before, sessionState(t, q)); len(d) > 0 {
			t.Errorf("%s: after the call, the session differs:\n%s", describeTrial(), strings.Join(d, "\n"))
		}
		if tx != nil {
			if err := tx.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			// What a session holds after the same transaction without the call.
			control := db.Conn(t)
			if _, err := control.Exec(ctx, "begin"); err != nil {
				t.Fatal(err)
			}
			for _, s := range callerLocal {
				if _, err := control.Exec(ctx, setSQL(1, s[0], s[1], "")); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := control.Exec(ctx, "commit"); err != nil {
				t.Fatal(err)
			}
			before = sessionState(t, control)
			control.Close(ctx)
			if d := stateDiff(before, sessionState(t, conn)); len(d) > 0 {
				t.Errorf("%s: after COMMIT, the session differs from one that did the same without the call:\n%s", describeTrial(), strings.Join(d, "\n"))
			}
		} else if d := stateDiff(before, sessionState(t, conn)); len(d) > 0 {
			t.Errorf("%s: in the next transaction, the session differs:\n%s", describeTrial(), strings.Join(d, "\n"))
		}
		want := histBefore
		if callErr == nil {
			want += len(b)
		}
		if got := historyCount(t, admin); got != want {
			t.Errorf("%s: history has %d rows, want %d (all or none)", describeTrial(), got, want)
		}
		conn.Close(ctx)
		if t.Failed() {
			return
		}
	}
	t.Logf("seed %d: %d trials (%d fragments): %d applied, %d failed as expected %v", seed, trials, fragments, applied, failed, codes)
}

func historyCount(tb testing.TB, conn *pgx.Conn) int {
	tb.Helper()
	var n int
	if err := conn.QueryRow(context.Background(), "select count(*) from pgmig.history").Scan(&n); err != nil {
		tb.Fatal(err)
	}
	return n
}

// TestNonTransactionalMigrationCannotEraseTheAudit: the statements of a
// non-transactional migration run at top level on the library's second
// connection, where the migration executor's frame is not on the stack:
// the guard recognises that session by its run row, and refuses to let it
// erase the audit trail (or the history) even with the switch set.
func TestNonTransactionalMigrationCannotEraseTheAudit(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	conn := db.Conn(t)
	if _, err := conn.Exec(ctx, `select * from migrate_apply('[{"version": 1, "name": "a", "sql": "create table nt_a (id int)", "down": "drop table nt_a"}]')`); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `select * from migrate_rollback(0)`); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write(t, dir, "001_a.sql", "create table nt_a (id int);")
	client, err := pgmig.Connect(ctx, db.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close(ctx)
	// Named in plain text, the engine refuses the statements before any runs (PM005); with
	// the names built at run time, the guard refuses the write itself (PM008).
	for _, c := range []struct{ sql, code string }{
		{"set pgmig.maintenance = on;\ndelete from pgmig.audit;\n", "PM005"},
		{"select set_config('pg' || 'mig.maintenance', 'on', false);\n" +
			"do $$ begin execute 'delete from ' || 'pg' || 'mig.audit'; end $$;\n", "PM008"},
	} {
		write(t, dir, "002_erase.sql", "---- tern: disable-tx ----\n"+c.sql)
		ms, err := pgmig.LoadDir(dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, err = client.Push(ctx, ms, nil)
		if err == nil || !strings.Contains(err.Error(), c.code) {
			t.Fatalf("push of a non-transactional migration erasing the audit trail: %v, want %s", err, c.code)
		}
		if c.code == "PM008" {
			break
		}
		// The refused migration left nothing to resolve: nothing ran.
	}
	var n int
	if err := conn.QueryRow(ctx, "select count(*) from pgmig.audit").Scan(&n); err != nil || n != 1 {
		t.Fatalf("audit rows after the push: %d (%v), want 1", n, err)
	}
}
