package hostile_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	pgmig "github.com/pgmig/pgmig/gowrapper"
	"github.com/pgmig/pgmig/tests/faults/workload"
	"github.com/pgmig/pgmig/tests/pgtest"
)

// readmeGrants is the README's grant recipe for role (between its grants markers).
func readmeGrants(t *testing.T, role string) string {
	t.Helper()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(readme), "<!-- grants:begin -->")
	recipe, _, ok2 := strings.Cut(rest, "<!-- grants:end -->")
	if !ok || !ok2 {
		t.Fatal("README.md lost its grants:begin/grants:end markers")
	}
	recipe = strings.NewReplacer("```sql", "", "```", "").Replace(recipe)
	return strings.ReplaceAll(recipe, "deploy", `"`+role+`"`)
}

// shadowsOf returns, for one API routine, the overloads and look-alikes a role with
// CREATE on public can plant to be preferred over it by function resolution: the string
// category's other types for an untyped literal, int4 and numeric for integer literals,
// text for interval literals, named-argument variants, variadic and defaulted ones, and
// procedures for the CALL forms. Each body, if it ever runs, records itself in
// public.pwned and tries to make the role a superuser.
func shadowsOf(role string) []string {
	body := func(sig, ret string) string {
		return fmt.Sprintf(`language plpgsql as $b$ begin
			insert into public.pwned values (current_user || ' ran %s');
			execute 'alter role %s superuser';
			%s
		end $b$`, strings.ReplaceAll(sig, "'", ""), role, ret)
	}
	table := "returns table (version bigint, name text, outcome text, duration interval, applied_at timestamptz)"
	fn := func(sig, ret, retStmt string) string {
		return fmt.Sprintf("create function public.%s %s %s", sig, ret, body(sig, retStmt))
	}
	proc := func(sig string) string {
		return fmt.Sprintf("create procedure public.%s %s", sig, body(sig, ""))
	}
	var out []string
	for _, name := range []string{"migrate_apply", "migrate_plan", "migrate_baseline", "migrate_repair"} {
		for _, args := range []string{
			"batch text", "batch varchar", "batch json", "batch name", "batch character(100)",
			"batch text, target_version integer", "batch jsonb, target_version integer",
			"batch text, target_version numeric", "batch text, lock_timeout text", "batch jsonb, lock_timeout text",
			"batch text, dry_run text", "batch jsonb, version integer", "batch text, version integer",
			"VARIADIC batch text[]", "batch unknown_domain", "batch text, extra integer DEFAULT 0",
		} {
			out = append(out, fn(name+"("+args+")", table, "return;"))
		}
	}
	for _, args := range []string{"batch text", "batch varchar", "batch jsonb", "batch text, lock_budget integer",
		"batch jsonb, lock_budget integer", "batch text, lock_timeout text", "VARIADIC batch text[]", "batch text, extra integer DEFAULT 0"} {
		out = append(out, proc("migrate_run("+args+")"))
	}
	for _, sig := range []string{"migrate_rollback(to_version integer)", "migrate_rollback(to_version numeric)",
		"migrate_rollback(to_version text)", "migrate_rollback(to_version integer, dry_run text)",
		"migrate_resolve(version integer, action text)", "migrate_resolve(version integer, action varchar)",
		"migrate_resolve(version bigint, action varchar)"} {
		out = append(out, fn(sig, table, "return;"))
	}
	for _, sig := range []string{"migrate_status(extra integer DEFAULT 0)", "migrate_lock_holder(VARIADIC x integer[] DEFAULT '{}')"} {
		out = append(out, fn(sig, "returns setof record", "return;"))
	}
	out = append(out, fn("migrate_history_digest(extra integer DEFAULT 0)", "returns text", "return 'x';"))
	return out
}

// TestAPIShadowsCannotRunCode (issue 9, section 1): a role holding exactly the README's
// grants plants overloads and look-alikes of every API routine in public (on every default
// search_path). Then a superuser makes every documented call: the unqualified call with an
// untyped or typed batch, the schema-qualified calls with untyped options, CALL forms, the
// CLI and the library. None of the role's code runs (no row in public.pwned, the role is not
// a superuser); every documented call still works; pgmig.api_shadows() and the install name
// the planted routines.
func TestAPIShadowsCannotRunCode(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	admin := db.Conn(t)
	role := pgtest.CreateRole(t, "")
	if _, err := admin.Exec(ctx, readmeGrants(t, role)); err != nil {
		t.Fatalf("README grants: %v", err)
	}
	deploy := pgtest.Connect(t, db.URLAs(role, "pw"))
	if _, err := deploy.Exec(ctx, `create table public.pwned (what text); grant insert, select on public.pwned to public;
		create domain public.unknown_domain as text`); err != nil {
		t.Fatal(err)
	}
	planted := 0
	for _, sql := range shadowsOf(role) {
		if _, err := deploy.Exec(ctx, sql); err != nil {
			// Some exact duplicates of pgmig's own signatures cannot be created at all.
			t.Logf("not plantable: %v", err)
			continue
		}
		planted++
	}
	if planted < 40 {
		t.Fatalf("only %d shadows planted", planted)
	}

	batch := `[{"version": 1, "name": "one", "sql": "create table one (id int)", "down": "drop table one"}]`
	lit := "'" + batch + "'"
	// Unqualified: resolved through the search_path, where the role can create. A planted
	// exact copy of a signature can make them ambiguous (an error, 42725), never run its code.
	unqualified := []string{
		"select * from migrate_apply(" + lit + ")",
		"select * from migrate_apply(" + lit + "::jsonb)",
		"select * from migrate_apply(" + lit + "::jsonb, target_version => 7::bigint, dry_run => true::boolean)",
		"call migrate_run(" + lit + ")",
		"select * from migrate_status()",
	}
	ambiguous := 0
	for _, sql := range unqualified {
		_, err := admin.Exec(ctx, sql, pgx.QueryExecModeSimpleProtocol)
		var pgErr *pgconn.PgError
		switch {
		case err == nil:
		case errors.As(err, &pgErr) && pgErr.Code == "42725":
			ambiguous++
		default:
			t.Errorf("unqualified call %q: %v", sql, err)
		}
	}
	// Schema-qualified (what the docs, the CLI and the library use): always pgmig's own.
	calls := []string{
		"select * from pgmig.migrate_apply(" + lit + ")",
		"select * from pgmig.migrate_apply(" + lit + ", target_version => 7, lock_timeout => '5s', dry_run => true)",
		"call pgmig.migrate_run(" + lit + ", lock_budget => 0, lock_timeout => '5s')",
		"call pgmig.migrate_run(" + lit + ")",
		"select * from pgmig.migrate_plan(" + lit + ", target_version => 1)",
		"select * from pgmig.migrate_status()",
		"select * from pgmig.migrate_lock_holder()",
		"select pgmig.migrate_history_digest()",
		"select * from pgmig.migrate_rollback(0, dry_run => true, lock_timeout => '1s')",
		"select * from pgmig.migrate_repair(" + lit + ")",
		"select * from pgmig.migrate_baseline(" + lit + ", 1)",
	}
	for _, sql := range calls {
		if _, err := admin.Exec(ctx, sql, pgx.QueryExecModeSimpleProtocol); err != nil {
			t.Errorf("documented call %q: %v", sql, err)
		}
	}
	// The CLI and the library, as the superuser.
	dir := t.TempDir()
	write(t, dir, "001_one.sql", "create table one (id int)\n---- create above / drop below ----\ndrop table one\n")
	write(t, dir, "002_two.sql", "create table two (id int);\n")
	env := []string{"DATABASE_URL=" + db.URL}
	for _, args := range [][]string{{"push", "--dir", dir}, {"status", "--dir", dir}, {"plan", "--dir", dir}, {"validate", "--dir", dir}} {
		if r := workload.Run(t, cli, env, args...); r.Code != 0 {
			t.Errorf("pgmig %v: %v", args, r)
		}
	}
	client, err := pgmig.Connect(ctx, db.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close(ctx)
	ms, err := pgmig.LoadDir(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.Push(ctx, ms, nil); err != nil {
		t.Errorf("library push: %v", err)
	}
	if _, err := client.Rollback(ctx, 1, &pgmig.RollbackOpts{DryRun: true}); err == nil {
		t.Errorf("rollback past 002 (no down SQL): no error")
	}

	var pwned []string
	rows, err := admin.Query(ctx, "select what from public.pwned")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var w string
		_ = rows.Scan(&w)
		pwned = append(pwned, w)
	}
	if len(pwned) > 0 {
		t.Errorf("planted code ran: %q", pwned)
	}
	var super bool
	if err := admin.QueryRow(ctx, "select rolsuper from pg_roles where rolname = $1", role).Scan(&super); err != nil || super {
		t.Errorf("the deploy role is superuser now: %v %v", super, err)
	}
	var shadows int
	if err := admin.QueryRow(ctx, "select count(*) from pgmig.api_shadows()").Scan(&shadows); err != nil || shadows != planted {
		t.Errorf("api_shadows lists %d, %d planted (%v)", shadows, planted, err)
	}
	var warned bool
	if r := workload.Run(t, cli, env, "install"); r.Code != 0 || !strings.Contains(r.Stderr, "named like the pgmig API") ||
		!strings.Contains(r.Stderr, "public.migrate_apply(text)") {
		t.Errorf("install does not warn about the shadows: %v", r)
	} else {
		warned = true
	}
	t.Logf("%d shadows planted by a role with the README's grants; %d qualified calls, 4 CLI commands and the library ran clean; "+
		"%d of %d unqualified calls refused as ambiguous, none ran planted code; install warned: %v",
		planted, len(calls), ambiguous, len(unqualified), warned)
}
