package hostile_test

import (
	"context"
	"strings"
	"testing"

	pgmig "github.com/pgmig/pgmig/gowrapper"
	"github.com/pgmig/pgmig/tests/faults/workload"
	"github.com/pgmig/pgmig/tests/pgtest"
)

// hostileObjects are look-alikes of what a bookkeeping query might call,
// created in public, beyond the ones tests/engine already plants (sha256,
// encode, now, jsonb_array_elements, "=" on text and bigint): with
// search_path = public, pg_catalog they win over pg_catalog's for exact
// argument types.
var hostileObjects = []string{
	`create function public.jsonb_typeof(jsonb) returns text language sql as $$select 'array'$$`,
	`create function public.jsonb_array_length(jsonb) returns int language sql as $$select 0$$`,
	`create function public.jsonb_object_keys(jsonb) returns setof text language sql as $$select 'version'$$`,
	`create function public.btrim(text, text) returns text language sql as $$select 'x'$$`,
	`create function public.length(text) returns int language sql as $$select 1$$`,
	`create function public.lower(text) returns text language sql as $$select 'x'$$`,
	`create function public.current_setting(text) returns text language sql as $$select 'pg_catalog'$$`,
	`create function public.current_setting(text, boolean) returns text language sql as $$select 'pg_catalog'$$`,
	`create function public.set_config(text, text, boolean) returns text language sql as $$select 'x'$$`,
	`create function public.session_user_hostile() returns name language sql as $$select 'nobody'::name$$`,
	`create function public.hostile_arrow(jsonb, text) returns text language sql as $$select '1'$$`,
	`create operator public.->> (leftarg = jsonb, rightarg = text, function = public.hostile_arrow)`,
	`create function public.hostile_lt(bigint, bigint) returns boolean language sql as $$select false$$`,
	`create operator public.< (leftarg = bigint, rightarg = bigint, function = public.hostile_lt)`,
	`create operator public.> (leftarg = bigint, rightarg = bigint, function = public.hostile_lt)`,
	`create function public.hostile_ne(text, text) returns boolean language sql as $$select false$$`,
	`create operator public.<> (leftarg = text, rightarg = text, function = public.hostile_ne)`,
	`create function public.hostile_distinct(bigint, bigint) returns boolean language sql as $$select false$$`,
	`create operator public.<> (leftarg = bigint, rightarg = bigint, function = public.hostile_distinct)`,
	`create function public.hostile_concat(text, text) returns text language sql as $$select 'x'$$`,
	`create operator public.|| (leftarg = text, rightarg = text, function = public.hostile_concat)`,
	`create function public.hostile_match(text, text) returns boolean language sql as $$select true$$`,
	`create operator public.~ (leftarg = text, rightarg = text, function = public.hostile_match)`,
	`create operator public.!~ (leftarg = text, rightarg = text, function = public.hostile_match)`,
	`create table public.history (version bigint, name text, checksum text)`,
	`create schema evil`,
	`create function evil.migrate_apply(jsonb) returns table (version bigint, name text, outcome text, duration interval, applied_at timestamptz)
	   language sql as $$select 1::bigint, 'evil', 'applied', '0'::interval, now()$$`,
}

// TestHostileOverloadsAndSearchPath: with look-alike functions and
// operators in public, public before pg_catalog on the search_path (and a
// pg_temp table named like the history), the engine still validates,
// detects drift and out-of-order versions, and records the truth — whether
// called from SQL, the library or the CLI (I4, I6).
func TestHostileOverloadsAndSearchPath(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	admin := db.Conn(t)
	for _, sql := range hostileObjects {
		if _, err := admin.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	hostilePath := pgtest.SetParam(db.URL, "options", "-csearch_path=public,pg_catalog")
	conn := pgtest.Connect(t, hostilePath)
	if _, err := conn.Exec(ctx, "create temp table history (version bigint, name text)"); err != nil {
		t.Fatal(err)
	}

	// Malformed batches are still malformed.
	for _, bad := range []string{`{"not": "an array"}`, `[{"version": 0, "name": "x", "sql": "select 1"}]`, `[{"version": 1, "name": "", "sql": "select 1"}]`, `[{"version": 1, "name": "x", "sql": "  "}]`} {
		_, err := applyRaw(ctx, conn, bad)
		pgErr(t, err, "PM001")
	}
	var hist int
	if err := admin.QueryRow(ctx, "select count(*) from pgmig.history").Scan(&hist); err != nil || hist != 0 {
		t.Fatalf("history has %d rows after malformed batches (%v)", hist, err)
	}

	b := []entry{mig(1, "one", "create table h_one (id int)"), mig(2, "two", "create table h_two (id int)"), mig(4, "four", "create table h_four (id int)")}
	got, err := applyRaw(ctx, conn, toJSON(t, b))
	if err != nil || got["applied"] != 3 {
		t.Fatalf("applying under hostile search_path: %v %v", got, err)
	}
	var n int
	var names string
	if err := admin.QueryRow(ctx, "select count(*), string_agg(name || ':' || checksum, ' ' order by version) from pgmig.history").Scan(&n, &names); err != nil {
		t.Fatal(err)
	}
	want := "one:" + sha256Hex("create table h_one (id int)") + " two:" + sha256Hex("create table h_two (id int)") + " four:" + sha256Hex("create table h_four (id int)")
	if n != 3 || names != want {
		t.Errorf("history %d rows %q, want 3 rows %q", n, names, want)
	}
	// Drift: a changed checksum, a renamed version, a missing version, an
	// out-of-order pending version — each still detected.
	for _, tc := range []struct {
		name  string
		batch []entry
	}{
		{"changed", []entry{b[0], mig(2, "two", "create table h_two (id bigint)"), b[2]}},
		{"renamed", []entry{b[0], mig(2, "deux", "create table h_two (id int)"), b[2]}},
		{"missing", []entry{b[0], b[2]}},
		{"out of order", []entry{b[0], b[1], mig(3, "three", "create table h_three (id int)"), b[2]}},
	} {
		_, err := applyRaw(ctx, conn, toJSON(t, tc.batch))
		if err == nil {
			t.Errorf("%s: drift not detected under the hostile search_path", tc.name)
			continue
		}
		pgErr(t, err, "PM002")
	}
	if err := admin.QueryRow(ctx, "select count(*) from pgmig.history").Scan(&n); err != nil || n != 3 {
		t.Errorf("history has %d rows after the refused batches (%v)", n, err)
	}

	// The library and the CLI through the same hostile session settings.
	dir := t.TempDir()
	write(t, dir, "001_one.sql", "create table h_one (id int)")
	write(t, dir, "002_two.sql", "create table h_two (id int)")
	write(t, dir, "003_three.sql", "create table h_three (id int)")
	ms, err := pgmig.LoadDir(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	client, err := pgmig.Connect(ctx, hostilePath, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close(ctx)
	if _, err := client.Plan(ctx, ms, nil); err == nil {
		t.Error("library plan: version 4 is missing from the files and 3 is out of order, want drift")
	}
	r := workload.Run(t, cli, []string{"DATABASE_URL=" + hostilePath}, "push", "--dir", dir)
	if r.Code != 4 || !strings.Contains(r.Stderr, "3") {
		t.Errorf("CLI push with drift under the hostile search_path: want exit 4 naming version 3:\n%v", r)
	}
	if err := admin.QueryRow(ctx, "select count(*) from pgmig.history").Scan(&n); err != nil || n != 3 {
		t.Errorf("history has %d rows after the refused pushes (%v)", n, err)
	}
	var evil int
	if err := admin.QueryRow(ctx, "select count(*) from public.history").Scan(&evil); err != nil || evil != 0 {
		t.Errorf("public.history got %d rows (%v)", evil, err)
	}
}
