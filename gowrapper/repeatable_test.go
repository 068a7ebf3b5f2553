package pgmig_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"testing/fstest"

	pgmig "github.com/pgmig/pgmig/gowrapper"
	"github.com/pgmig/pgmig/tests/pgtest"
)

func memFS(files map[string]string) fstest.MapFS {
	fsys := fstest.MapFS{}
	for name, body := range files {
		fsys[name] = &fstest.MapFile{Data: []byte(body)}
	}
	return fsys
}

// TestLoadRepeatableDir: tern's format with a repeatable/ sub-directory: the
// repeatable migrations follow the versioned ones in name order, templates
// expanded (data and shared templates), a byte-order mark ignored.
func TestLoadRepeatableDir(t *testing.T) {
	t.Parallel()
	ms, err := pgmig.Load(memFS(map[string]string{
		"001_users.sql":          "create table users (id int);",
		"002_orders.sql":         "create table orders (id int, user_id int);",
		"repeatable/b_view.sql":  "\ufeff\n  create or replace view {{.schema}}.user_orders as select * from orders;\n",
		"repeatable/a_grant.sql": "{{ template \"shared/grant.sql\" . }}",
		"repeatable/README.md":   "not a migration",
		"shared/grant.sql":       "grant select on users to {{.reader}};",
	}), &pgmig.LoadOpts{Data: map[string]any{"schema": "public", "reader": "app_reader"}})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range ms {
		got = append(got, m.Name)
	}
	if strings.Join(got, ",") != "users,orders,a_grant,b_view" {
		t.Fatalf("loaded %v", got)
	}
	a, b := ms[2], ms[3]
	if !a.Repeatable || a.Version != 0 || a.File != "repeatable/a_grant.sql" || a.SQL != "grant select on users to app_reader;" || !a.Transactional {
		t.Errorf("a_grant: %+v", a)
	}
	if b.SQL != "create or replace view public.user_orders as select * from orders;" {
		t.Errorf("b_view SQL %q", b.SQL)
	}
	// Positions map back to the file (line 2 after the BOM and a blank line; column after the indentation).
	if loc, ok := b.Locate(1); !ok || loc.File != "repeatable/b_view.sql" || loc.Line != 2 {
		t.Errorf("Locate: %+v %v", loc, ok)
	}
	// Not templated in the other formats: plain SQL, positions exact.
	ms, err = pgmig.Load(memFS(map[string]string{
		"1_users.up.sql":     "create table users (id int);",
		"1_users.down.sql":   "drop table users;",
		"repeatable/v.sql":   "-- a view\n\ncreate view v as select {{1}};",
		"repeatable/w.SQL":   "create view w as select 1;",
		"repeatable/x/y.sql": "select 1;",
	}), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 3 || ms[1].Name != "v" || ms[1].Format != pgmig.FormatGolangMigrate || ms[1].SQL != "-- a view\n\ncreate view v as select {{1}};" || ms[2].Name != "w" {
		t.Fatalf("golang-migrate with repeatable/: %+v", ms)
	}
	if loc, ok := ms[1].Locate(strings.Index(ms[1].SQL, "select") + 1); !ok || loc.Line != 3 || loc.Column != 18 {
		t.Errorf("Locate in golang-migrate: %+v", loc)
	}
}

// TestLoadRepeatableRefusals: what a repeatable migration cannot be is an
// error naming the file (and the line where there is one).
func TestLoadRepeatableRefusals(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		files map[string]string
		err   error
		want  string // in the message
	}{
		{"tern disable-tx", map[string]string{"001_a.sql": "select 1;", "repeatable/idx.sql": "select 1;\n---- tern: disable-tx ----\ncreate index concurrently i on t (x);"},
			pgmig.ErrMarker, "repeatable/idx.sql: line 2: "},
		{"goose no transaction", map[string]string{"00001_a.sql": "-- +goose Up\nselect 1;", "repeatable/idx.sql": "-- +goose NO TRANSACTION\nselect 1;"},
			pgmig.ErrMarker, "repeatable/idx.sql: line 1: "},
		{"commit-after", map[string]string{"001_a.sql": "select 1;", "repeatable/e.sql": "select 1;\n\n---- pgmig: commit-after ----"},
			pgmig.ErrMarker, "repeatable/e.sql: line 3: "},
		{"lock-timeout", map[string]string{"001_a.sql": "select 1;", "repeatable/e.sql": "---- pgmig: lock-timeout 5s ----\nselect 1;"},
			pgmig.ErrMarker, "lock-timeout"},
		{"flyway not in a transaction", map[string]string{"V1__a.sql": "select 1;", "R__idx.sql": "create index concurrently i on t (x);",
			"R__idx.sql.conf": "executeInTransaction=false\n"}, pgmig.ErrMarker, "R__idx.sql"},
		{"invalid UTF-8", map[string]string{"001_a.sql": "select 1;", "repeatable/bad.sql": "select 1;\nselect '\xff';"},
			pgmig.ErrInvalidText, "repeatable/bad.sql: " + "invalid text: invalid UTF-8 (byte 0xFF) at line 2, column 9"},
		{"empty", map[string]string{"001_a.sql": "select 1;", "repeatable/e.sql": "-- nothing\n"}, pgmig.ErrEmptyMigration, "repeatable/e.sql"},
		{"bad template", map[string]string{"001_a.sql": "select 1;", "repeatable/t.sql": "select {{ .x "}, pgmig.ErrTemplate, "repeatable/t.sql"},
		{"no name", map[string]string{"001_a.sql": "select 1;", "repeatable/.sql": "select 1;"}, pgmig.ErrInvalidFileName, "repeatable/.sql"},
	} {
		_, err := pgmig.Load(memFS(tc.files), nil)
		var lerr *pgmig.LoadError
		if !errors.Is(err, tc.err) || !errors.As(err, &lerr) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %v with %q", tc.name, err, tc.err, tc.want)
		}
	}
}

// TestPushRepeatable: pushed with the versioned migrations, applied once,
// skipped (by the digest precheck) while unchanged, applied again when
// changed; a failing one is a *MigrationError naming it, its file and line.
func TestPushRepeatable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	client := connect(t, db.URL, nil)
	files := map[string]string{
		"001_users.sql":         "create table users (id int, name text);",
		"repeatable/a_view.sql": "create or replace view user_names as select name from users;",
	}
	var progress []pgmig.Progress
	res, err := client.Push(ctx, load(t, files), &pgmig.PushOpts{Progress: func(p pgmig.Progress) { progress = append(progress, p) }})
	if err != nil {
		t.Fatal(err)
	}
	if res.Applied != 2 || res.RepeatableApplied != 1 || res.Version != 1 || len(res.Migrations) != 2 ||
		res.Migrations[1].Outcome != pgmig.OutcomeRepeatableApplied || res.Migrations[1].File != "repeatable/a_view.sql" {
		t.Fatalf("first push: %+v", res)
	}
	if len(progress) == 0 || !progress[len(progress)-1].Repeatable || progress[len(progress)-1].File != "repeatable/a_view.sql" {
		t.Errorf("progress: %+v", progress)
	}
	res, err = client.Push(ctx, load(t, files), nil)
	if err != nil || !res.Prechecked || res.Applied != 0 || res.Migrations[1].Outcome != pgmig.OutcomeRepeatableUnchanged {
		t.Fatalf("unchanged: %+v %v", res, err)
	}
	files["repeatable/a_view.sql"] = "create or replace view user_names as select name, id from users;"
	res, err = client.Push(ctx, load(t, files), nil)
	if err != nil || res.Prechecked || res.Applied != 1 || res.RepeatableApplied != 1 {
		t.Fatalf("changed: %+v %v", res, err)
	}
	plan, err := client.Plan(ctx, load(t, files), nil)
	if err != nil || plan.Pending != 0 || plan.Migrations[1].Outcome != pgmig.OutcomeRepeatableUnchanged || !plan.Migrations[1].Repeatable {
		t.Fatalf("plan: %+v %v", plan, err)
	}
	st, err := client.Status(ctx)
	if err != nil || len(st.History) != 2 || st.History[1].State != "repeatable" || st.History[1].Detail != "applied 2 times" || st.Version != 1 {
		t.Fatalf("status: %+v %v", st, err)
	}

	files["002_more.sql"] = "alter table users add column email text;"
	files["repeatable/a_view.sql"] = "create or replace view user_names as\nselect name, id from users;\nselect 1/0;"
	_, err = client.Push(ctx, load(t, files), nil)
	var merr *pgmig.MigrationError
	if !errors.As(err, &merr) || !merr.Repeatable || merr.Name != "a_view" || merr.File != "repeatable/a_view.sql" || merr.Code != "22012" ||
		merr.Location.Line != 3 || merr.Statement != 2 || merr.CurrentVersion != 1 {
		t.Fatalf("failing repeatable: %v (%+v)", err, merr)
	}
	if !strings.Contains(err.Error(), "error applying repeatable migration [a_view] at repeatable/a_view.sql:3") {
		t.Errorf("message: %v", err)
	}
}
