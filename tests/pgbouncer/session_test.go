package pgbouncer_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgmig/pgmig/tests/faults/workload"
	"github.com/pgmig/pgmig/tests/pgtest"
)

// leakyMigrations change the session in every way a migration can: plain
// and local SET, set_config either way, session characteristics, custom
// settings, pgmig's own switch, application_name, search_path, RESET,
// a session-level SET hidden beneath a SET LOCAL, and what a session holds
// (temporary tables, prepared statements, WITH HOLD cursors, session
// advisory locks).
var leakyMigrations = []string{
	"set work_mem = '77MB'; set enable_seqscan = off; set random_page_cost = 1.1",
	"set local statement_timeout = '1h'; select set_config('lock_timeout', '42s', false)",
	"select set_config('TimeZone', 'Asia/Tokyo', true); set DateStyle = 'German'",
	"set session characteristics as transaction isolation level serializable, read only",
	"set default_transaction_deferrable = on",
	"set myapp.tenant_id = '42'; select set_config('myapp.user', 'mallory', false)",
	"set pgmig.maintenance = on",
	"set application_name = 'spoofed'",
	"set search_path = pg_catalog",
	"reset client_encoding; set plpgsql.variable_conflict = use_column",
	"set jit = on; set local jit = off",
	"set geqo = off; set local geqo = on",
	"create temp table left_behind (id int)",
	"prepare left_prepared as select 1",
	"declare left_cursor cursor with hold for select 1",
	"select pg_advisory_lock(4242)",
	"create table leaky_done (id int)",
}

// stateThroughBouncer reads a client's view of its server connection:
// every setting (value and source), the custom settings the migrations
// set, and what the connection holds. One statement: one transaction, on
// whichever server connection PgBouncer gives it.
func stateThroughBouncer(t *testing.T, conn *pgx.Conn) map[string]string {
	t.Helper()
	var raw string
	err := conn.QueryRow(context.Background(), `select json_object_agg(k, v)::text from (
		select name as k, setting || ' [' || source || ']' as v from pg_settings
		union all select 'custom ' || n, coalesce(current_setting(n, true), '') from unnest('{myapp.tenant_id,myapp.user,pgmig.maintenance}'::text[]) as n
		union all select 'role', current_setting('role')
		union all select 'temp tables', coalesce((select string_agg(relname, ',') from pg_class where relnamespace = pg_my_temp_schema() and relkind = 'r'), '')
		union all select 'prepared', coalesce((select string_agg(name, ',') from pg_prepared_statements where from_sql), '')
		union all select 'cursors', coalesce((select string_agg(name, ',') from pg_cursors), '')
		union all select 'advisory', coalesce((select string_agg(objid::text, ',') from pg_locks where locktype = 'advisory' and pid = pg_backend_pid()), '')
		union all select 'pid', pg_backend_pid()::text) s`).Scan(&raw)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	if err := json.Unmarshal([]byte(raw), &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestNothingLeaksToTheNextClient: through PgBouncer in transaction pooling
// with one server connection, one client applies migrations that change
// the session every way a migration can (with psql, and with pgx as psql
// sends queries); another client, whose transactions run on that same
// server connection, sees exactly what it saw before, and cannot edit the
// history because a migration set the guard's switch. On an engine that
// restores a list of settings, the second client inherits the first one's
// migrations' settings, custom settings and switch.
func TestNothingLeaksToTheNextClient(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := startBouncer(t, 1)
	psql := pgtest.Server(t).PsqlPath()
	if psql == "" {
		t.Fatal("psql not found: apt-get install postgresql-client")
	}
	for _, caller := range []string{"pgx", "psql"} {
		t.Run(caller, func(t *testing.T) {
			db := pgtest.NewDB(t)
			var batch []map[string]any
			for i, sql := range leakyMigrations {
				batch = append(batch, map[string]any{"version": i + 1, "name": fmt.Sprintf("leaky_%02d", i+1), "sql": sql})
			}
			raw, err := json.Marshal(batch)
			if err != nil {
				t.Fatal(err)
			}
			next := pgtest.Connect(t, b.URL(db))
			before := stateThroughBouncer(t, next)
			switch caller {
			case "pgx":
				applier := pgtest.Connect(t, b.URL(db))
				if _, err := applier.Exec(ctx, "select * from migrate_apply($1::jsonb)", string(raw)); err != nil {
					t.Fatal(err)
				}
			case "psql":
				out, err := workload.Psql(psql, b.PsqlURL(db), workload.ApplySQL(raw))
				if err != nil {
					t.Fatalf("psql: %v\n%s", err, out)
				}
			}
			after := stateThroughBouncer(t, next)
			if before["pid"] != after["pid"] {
				t.Fatalf("the next client got server connection %s, then %s: PgBouncer should have one", before["pid"], after["pid"])
			}
			var diff []string
			for k, v := range before {
				if after[k] != v {
					diff = append(diff, fmt.Sprintf("%s: %q -> %q", k, v, after[k]))
				}
			}
			sort.Strings(diff)
			if len(diff) > 0 {
				t.Errorf("the next client's server connection changed under it:\n%s", strings.Join(diff, "\n"))
			}
			if _, err := next.Exec(ctx, "delete from pgmig.history"); err == nil || !strings.Contains(err.Error(), "PM008") {
				t.Errorf("the next client deleted the history: %v (the guard's switch leaked)", err)
			}
			direct := db.Conn(t)
			var n int
			if err := direct.QueryRow(ctx, "select count(*) from pgmig.history").Scan(&n); err != nil || n != len(leakyMigrations) {
				t.Errorf("history: %d rows (%v), want %d", n, err, len(leakyMigrations))
			}
		})
	}
	t.Logf("%d leaky migrations through PgBouncer, with pgx and psql", len(leakyMigrations))
}
