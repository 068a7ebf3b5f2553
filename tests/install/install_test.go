// Package install_test checks both ways of installing the engine — the plain script
// (psql -f, managed databases) and CREATE EXTENSION — against a real server: versions are
// recorded, a second install of the same version changes nothing, racing installers never
// fail, the API schema is selectable and PUBLIC gets nothing.
package install_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	pgmigsql "github.com/pgmig/pgmig/sql"
	"github.com/pgmig/pgmig/tests/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}

func installScript(t *testing.T, conn *pgx.Conn) {
	t.Helper()
	// No arguments: pgx uses the simple protocol, which runs the multi-statement script
	// (with its own BEGIN/COMMIT) as psql -f would.
	if _, err := conn.Exec(ctx(t), pgmigsql.InstallScript()); err != nil {
		t.Fatalf("install script: %v", err)
	}
}

func queryString(t *testing.T, conn *pgx.Conn, sql string, args ...any) string {
	t.Helper()
	var s string
	if err := conn.QueryRow(ctx(t), sql, args...).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return s
}

func pgErrCode(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

// fingerprint identifies the installed objects and state: a second install of the same
// version must leave it unchanged.
const fingerprint = `
select string_agg(x, ',' order by x) from (
  select p.oid::regprocedure::text || '@' || p.oid from pg_proc p
   where p.pronamespace in ('pgmig'::regnamespace, 'public'::regnamespace)
  union all select 'log:' || version || '/' || mode || '/' || api_schema || '/' || installed_at from pgmig.install_log
  union all select 'hist:' || count(*) from pgmig.history
) s(x)`

func TestPlainScriptInstallsAndReinstallIsNoOp(t *testing.T) {
	t.Parallel()
	db := pgtest.NewEmptyDB(t)
	conn := db.Conn(t)
	installScript(t, conn)

	if got := queryString(t, conn, "select pgmig.engine_version()"); got != pgmigsql.Version() {
		t.Fatalf("engine_version() = %q, want %q", got, pgmigsql.Version())
	}
	if got := queryString(t, conn, "select mode || ' ' || api_schema from pgmig.install_log"); got != "script public" {
		t.Fatalf("install_log = %q, want %q", got, "script public")
	}
	// The API works unqualified in a fresh session with the default search_path.
	fresh := db.Conn(t)
	var outcome string
	if err := fresh.QueryRow(ctx(t), `select outcome from migrate_apply('[{"version":1,"name":"one","sql":"create table one()"}]')`).Scan(&outcome); err != nil || outcome != "applied" {
		t.Fatalf("migrate_apply after install: outcome %q, err %v", outcome, err)
	}

	before := queryString(t, conn, fingerprint)
	installScript(t, conn)
	installScript(t, db.Conn(t))
	if after := queryString(t, conn, fingerprint); after != before {
		t.Fatalf("reinstalling the same version changed the install:\nbefore %s\nafter  %s", before, after)
	}
}

func TestRacingInstallersNeverFail(t *testing.T) {
	t.Parallel()
	db := pgtest.NewEmptyDB(t)
	const installers = 20
	conns := make([]*pgx.Conn, installers)
	for i := range conns {
		conns[i] = db.Conn(t)
	}
	var wg sync.WaitGroup
	errs := make(chan error, installers)
	start := make(chan struct{})
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, err := c.Exec(context.Background(), pgmigsql.InstallScript())
			errs <- err
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("concurrent install failed (SQLSTATE %s): %v", pgErrCode(err), err)
		}
	}
	if got := queryString(t, conns[0], "select count(*)::text from pgmig.install_log"); got != "1" {
		t.Fatalf("install_log rows = %s, want 1", got)
	}
}

func TestAPISchemaIsSelectable(t *testing.T) {
	t.Parallel()
	db := pgtest.NewEmptyDB(t)
	conn := db.Conn(t)
	if _, err := conn.Exec(ctx(t), `create schema deploy; set pgmig.api_schema = 'deploy'`); err != nil {
		t.Fatal(err)
	}
	installScript(t, conn)
	got := queryString(t, conn, `select string_agg(distinct n.nspname || '.' || p.proname, ',' order by n.nspname || '.' || p.proname)
		from pg_proc p join pg_namespace n on n.oid = p.pronamespace where p.proname like 'migrate\_%'`)
	// The API in the chosen schema, and always in pgmig (for safe qualified calls).
	api := "migrate_adopt,migrate_apply,migrate_baseline,migrate_history_digest,migrate_lock_holder,migrate_plan," +
		"migrate_rehearse,migrate_repair,migrate_resolve,migrate_rollback,migrate_run,migrate_run_staged,migrate_scopes,migrate_stage,migrate_staged,migrate_status"
	want := "deploy." + strings.ReplaceAll(api, ",", ",deploy.") + ",pgmig." + strings.ReplaceAll(api, ",", ",pgmig.")
	if got != want {
		t.Fatalf("API functions = %s, want %s", got, want)
	}
	// An upgrade without the setting keeps the schema of the previous install.
	other := db.Conn(t)
	installScript(t, other)
	if got := queryString(t, other, "select string_agg(distinct api_schema, ',') from pgmig.install_log"); got != "deploy" {
		t.Fatalf("reinstall moved the API: install_log api_schema = %s", got)
	}
	// A schema that does not exist is refused with PM006 and nothing is installed.
	db2 := pgtest.NewEmptyDB(t)
	c2 := db2.Conn(t)
	if _, err := c2.Exec(ctx(t), `set pgmig.api_schema = 'nope'`); err != nil {
		t.Fatal(err)
	}
	_, err := c2.Exec(ctx(t), pgmigsql.InstallScript())
	if pgErrCode(err) != "PM006" {
		t.Fatalf("install into missing API schema: err %v, want SQLSTATE PM006", err)
	}
	if _, err := c2.Exec(ctx(t), "rollback"); err != nil {
		t.Fatal(err)
	}
	if got := queryString(t, c2, "select count(*)::text from pg_namespace where nspname = 'pgmig'"); got != "0" {
		t.Fatalf("failed install left schema pgmig behind")
	}
}

func TestPublicGetsNothing(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	conn := db.Conn(t)
	// Privileges granted to PUBLIC show in the ACLs as an entry with an empty grantee.
	got := queryString(t, conn, `
		select coalesce(string_agg(what, ', '), '') from (
		  select p.oid::regprocedure::text as what from pg_proc p
		   where (p.pronamespace = 'pgmig'::regnamespace or p.proname like 'migrate\_%')
		     and (p.proacl is null or exists (select from aclexplode(p.proacl) a where a.grantee = 0))
		  union all
		  select c.oid::regclass::text from pg_class c
		   where c.relnamespace = 'pgmig'::regnamespace
		     and exists (select from aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a where a.grantee = 0)
		  union all
		  select 'schema pgmig' from pg_namespace n where n.nspname = 'pgmig'
		     and exists (select from aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a where a.grantee = 0)
		) s`)
	if got != "" {
		t.Fatalf("PUBLIC has privileges on: %s", got)
	}
	// Every function is SECURITY INVOKER.
	if got := queryString(t, conn, `select coalesce(string_agg(oid::regprocedure::text, ', '), '') from pg_proc
		where (pronamespace = 'pgmig'::regnamespace or proname like 'migrate\_%') and prosecdef`); got != "" {
		t.Fatalf("SECURITY DEFINER functions: %s", got)
	}
}

// extensionDir installs the extension files into the local server's extension directory,
// as `make install` does. Only possible where the server's files are on this machine.
func extensionDir(t *testing.T) {
	t.Helper()
	srv := pgtest.Server(t)
	if srv.Kind() != "local" {
		t.Skipf("extension mode needs the extension files on the server's disk; backend %q is not local (CI uses a local cluster)", srv.Kind())
	}
	out, err := exec.Command(filepath.Join(srv.BinDir(), "pg_config"), "--sharedir").Output()
	if err != nil {
		t.Fatalf("pg_config --sharedir: %v", err)
	}
	dir := filepath.Join(strings.TrimSpace(string(out)), "extension")
	v := pgmigsql.Version()
	files := map[string]string{
		"pgmig.control":                 "../../sql/pgmig.control",
		fmt.Sprintf("pgmig--%s.sql", v): fmt.Sprintf("../../sql/build/pgmig--%s.sql", v),
		// The released version and the upgrade path from it (TestUpgradeExtension).
		"pgmig--0.1.0.sql":                     "../../sql/releases/pgmig--0.1.0.sql",
		fmt.Sprintf("pgmig--0.1.0--%s.sql", v): fmt.Sprintf("../../sql/build/pgmig--0.1.0--%s.sql", v),
	}
	for name, src := range files {
		want, err := os.ReadFile(src)
		if err != nil {
			t.Fatalf("%s: %v (run make sql)", src, err)
		}
		if have, err := os.ReadFile(filepath.Join(dir, name)); err == nil && string(have) == string(want) {
			continue
		}
		if err := os.WriteFile(filepath.Join(dir, name), want, 0o644); err != nil {
			t.Fatalf("cannot install %s into %s: %v; run `make install` as a user who can write there", name, dir, err)
		}
	}
}

func TestExtensionMode(t *testing.T) {
	t.Parallel()
	extensionDir(t)
	db := pgtest.NewEmptyDB(t)
	conn := db.Conn(t)
	if _, err := conn.Exec(ctx(t), "create extension pgmig"); err != nil {
		t.Fatalf("create extension: %v", err)
	}
	if got := queryString(t, conn, "select extversion from pg_extension where extname = 'pgmig'"); got != pgmigsql.Version() {
		t.Fatalf("extversion = %s", got)
	}
	if got := queryString(t, conn, "select pgmig.engine_version() || ' ' || (select mode from pgmig.install_log)"); got != pgmigsql.Version()+" extension" {
		t.Fatalf("engine_version/mode = %s", got)
	}
	var outcome string
	if err := db.Conn(t).QueryRow(ctx(t), `select outcome from migrate_apply('[{"version":1,"name":"one","sql":"create table one()"}]')`).Scan(&outcome); err != nil || outcome != "applied" {
		t.Fatalf("migrate_apply in extension mode: %q, %v", outcome, err)
	}
	// The history, the audit trail and the staged releases are configuration data: pg_dump must include their rows.
	if got := queryString(t, conn, `select string_agg(c::regclass::text, ' ' order by c::regclass::text) from pg_extension e, unnest(e.extconfig) c where e.extname = 'pgmig'`); got != "pgmig.audit pgmig.audit_id_seq pgmig.history pgmig.install_log pgmig.repeatable pgmig.repeatable_id_seq pgmig.staged" {
		t.Fatalf("extconfig = %s, want pgmig.audit pgmig.audit_id_seq pgmig.history pgmig.install_log pgmig.repeatable pgmig.repeatable_id_seq pgmig.staged", got)
	}
	// The plain script must not touch an extension install.
	_, err := db.Conn(t).Exec(ctx(t), pgmigsql.InstallScript())
	if pgErrCode(err) != "PM006" {
		t.Fatalf("plain script over extension: %v, want PM006", err)
	}
	// And CREATE EXTENSION must not adopt a plain install.
	plain := pgtest.NewDB(t)
	_, err = plain.Conn(t).Exec(ctx(t), "create extension pgmig")
	if pgErrCode(err) != "PM006" {
		t.Fatalf("create extension over plain install: %v, want PM006", err)
	}
	// DROP EXTENSION removes everything, API wrappers included.
	if _, err := conn.Exec(ctx(t), "drop extension pgmig"); err != nil {
		t.Fatal(err)
	}
	if got := queryString(t, conn, `select count(*)::text from pg_proc where proname like 'migrate\_%' or pronamespace::regnamespace::text = 'pgmig'`); got != "0" {
		t.Fatalf("%s functions left after drop extension", got)
	}
}

// The README's grant recipe, run as written (with the role name substituted), must be
// enough for a deploy role to migrate — and nothing less than a grant must be.
func TestREADMEGrantsLetADeployRoleMigrate(t *testing.T) {
	t.Parallel()
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

	db := pgtest.NewDB(t)
	role := pgtest.CreateRole(t, "")
	asRole := pgtest.Connect(t, db.URLAs(role, "pw"))
	batch := `[{"version":1,"name":"one","sql":"create table public.one(i int)"}]`
	_, err = asRole.Exec(ctx(t), "select * from pgmig.migrate_apply($1::jsonb)", batch)
	if pgErrCode(err) != "42501" {
		t.Fatalf("before the grants: %v, want 42501", err)
	}

	admin := db.Conn(t)
	if _, err := admin.Exec(ctx(t), strings.ReplaceAll(recipe, "deploy", `"`+role+`"`)); err != nil {
		t.Fatalf("README grants: %v", err)
	}
	asRole = pgtest.Connect(t, db.URLAs(role, "pw"))
	if _, err := asRole.Exec(ctx(t), "select * from pgmig.migrate_apply($1::jsonb)", batch); err != nil {
		t.Fatalf("after the grants: %v", err)
	}
	if got := queryString(t, admin, "select applied_by || ' ' || login_role from pgmig.history"); got != role+" "+role {
		t.Fatalf("history applied_by/login_role = %q, want the deploy role", got)
	}

	// Everything the engine does for a deploy role works with those grants (a tenant's
	// schema, which the role may not create, made for it).
	if _, err := admin.Exec(ctx(t), `create schema tenant_a authorization "`+role+`"`); err != nil {
		t.Fatal(err)
	}
	for _, sql := range []string{
		`select * from pgmig.migrate_apply('[{"version":1,"name":"one","sql":"create table public.one(i int)"},
		  {"version":2,"name":"two","sql":"create table public.two(i int)","down":"drop table public.two"}]')`,
		`select * from pgmig.migrate_rollback(1)`,
		`select * from pgmig.migrate_repair('[{"version":1,"name":"uno","sql":"create table public.one(i int)"}]')`,
		`select * from pgmig.migrate_status()`,
		`call pgmig.migrate_run('[{"version":1,"name":"uno","sql":"create table one(i int)"}]', scope => 'tenant_a')`,
	} {
		if _, err := asRole.Exec(ctx(t), sql); err != nil {
			t.Fatalf("as the deploy role: %s: %v", sql, err)
		}
	}
	if got := queryString(t, admin, "select count(*)::text from pgmig.audit"); got != "2" {
		t.Fatalf("audit rows = %s, want 2 (rollback, repair)", got)
	}
	// And nothing more: the audit trail cannot be erased (42501: no such
	// privilege), the history not truncated, nor edited without the switch
	// (PM008: the guard).
	for sql, code := range map[string]string{
		"delete from pgmig.audit":                                        "42501",
		"update pgmig.audit set by_role = 'x'":                           "42501",
		"truncate pgmig.audit":                                           "42501",
		"truncate pgmig.history":                                         "42501",
		"delete from pgmig.history":                                      "PM008",
		"alter table pgmig.history disable trigger all":                  "42501",
		"create rule r as on insert to pgmig.history do instead nothing": "42501",
		"create trigger t before insert on pgmig.history execute function pgmig._history_guard()": "42501",
	} {
		_, err := asRole.Exec(ctx(t), sql)
		if pgErrCode(err) != code {
			t.Errorf("as the deploy role: %s: %v, want SQLSTATE %s", sql, err, code)
		}
	}
	if got := queryString(t, admin, "select count(*)::text from pgmig.audit"); got != "2" {
		t.Fatalf("audit rows after the attempts = %s, want 2", got)
	}
}

// grants010 is the README's grant recipe as released with 0.1.0.
const grants010 = `GRANT USAGE ON SCHEMA pgmig TO %[1]s;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA pgmig TO %[1]s;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA pgmig TO %[1]s;
GRANT EXECUTE ON FUNCTION migrate_apply, migrate_plan, migrate_status, migrate_lock_holder,
    migrate_rollback, migrate_baseline, migrate_repair, migrate_resolve, migrate_history_digest TO %[1]s;
GRANT CREATE ON SCHEMA public TO %[1]s;`

// An engine installed with the plain script of 0.1.0, granted to a deploy role as that
// release's README said, with history: the current script upgrades it in place. The history
// stays, the deploy role keeps every right it had (also on routines that had to be dropped
// and created anew, and migrate_run, the new way to do what migrate_apply did), no routine
// of 0.1.0 is left behind, and running the script again changes nothing.
func TestUpgradeFromPlain010(t *testing.T) {
	t.Parallel()
	db := pgtest.NewEmptyDB(t)
	admin := db.Conn(t)
	old, err := os.ReadFile("../../sql/releases/pgmig-0.1.0.sql")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.PgConn().Exec(ctx(t), string(old)).ReadAll(); err != nil {
		t.Fatalf("installing 0.1.0: %v", err)
	}
	role := pgtest.CreateRole(t, "")
	if _, err := admin.Exec(ctx(t), fmt.Sprintf(grants010, `"`+role+`"`)); err != nil {
		t.Fatal(err)
	}
	deploy := pgtest.Connect(t, db.URLAs(role, "pw"))
	if _, err := deploy.Exec(ctx(t), `select * from migrate_apply('[{"version":1,"name":"one","sql":"create table one (i int)","down":"drop table one"}]')`); err != nil {
		t.Fatalf("migrating with 0.1.0: %v", err)
	}

	installScript(t, admin)
	if got := queryString(t, admin, "select pgmig.engine_version()"); got != pgmigsql.Version() {
		t.Fatalf("engine version after the upgrade: %s", got)
	}
	if got := queryString(t, admin, "select string_agg(version || ' ' || name || ' ' || coalesce(down_sql, '-'), ',') from pgmig.history"); got != "1 one drop table one" {
		t.Fatalf("history after the upgrade: %s", got)
	}
	// 0.1.0's routines whose signature changed are gone, not left as overloads: exactly
	// this version's signatures (each batch-taking one also as its batch-as-text twin).
	if got := queryString(t, admin, `select string_agg(oid::regprocedure::text, ' ' order by oid::regprocedure::text) from pg_proc
		where pronamespace = 'public'::regnamespace and proname in ('migrate_apply', 'migrate_plan', 'migrate_rollback')`); got !=
		"migrate_apply(jsonb,bigint,interval,boolean,boolean,boolean,text,integer,text,text,interval) "+
			"migrate_apply(text,bigint,interval,boolean,boolean,boolean,text,integer,text,text,interval) "+
			"migrate_plan(jsonb,bigint,boolean,boolean,boolean,text) migrate_plan(text,bigint,boolean,boolean,boolean,text) "+
			"migrate_rollback(bigint,interval,boolean,text,text,boolean,text)" {
		t.Fatalf("API signatures after the upgrade: %s", got)
	}
	if got := queryString(t, admin, `select coalesce(string_agg(sigs, ', '), '') from (
		select string_agg(oid::regprocedure::text, ', ') as sigs from pg_proc
		where proname in ('_apply', '_plan', '_rollback', '_assert_no_drift')
		group by pronamespace, proname having count(*) > 1) as x`); got != "" {
		t.Fatalf("left-over internal overloads: %s", got)
	}
	if got := queryString(t, admin, `select coalesce(string_agg(oid::regprocedure::text, ', '), '') from pg_proc
		where (pronamespace = 'pgmig'::regnamespace or proname like 'migrate\_%') and not has_function_privilege($1, oid, 'execute')`, role); got != "" {
		t.Fatalf("the deploy role lost EXECUTE on: %s", got)
	}
	deploy = pgtest.Connect(t, db.URLAs(role, "pw"))
	b := `[{"version":1,"name":"one","sql":"create table one (i int)","down":"drop table one"},
	       {"version":2,"name":"two","sql":"create table two (i int)","down":"drop table two"}]`
	var result string
	if err := deploy.QueryRow(ctx(t), "call migrate_run($1::jsonb)", b).Scan(&result); err != nil || !strings.Contains(result, `"applied": 1`) {
		t.Fatalf("migrate_run as the deploy role after the upgrade: %s %v", result, err)
	}
	if _, err := deploy.Exec(ctx(t), "select * from pgmig.migrate_rollback(1)"); err != nil {
		t.Fatalf("rollback as the deploy role after the upgrade: %v", err)
	}
	before := queryString(t, admin, "select string_agg(oid::text, ',' order by oid) from pg_proc where pronamespace = 'pgmig'::regnamespace or proname like 'migrate\\_%'")
	installScript(t, admin)
	if after := queryString(t, admin, "select string_agg(oid::text, ',' order by oid) from pg_proc where pronamespace = 'pgmig'::regnamespace or proname like 'migrate\\_%'"); after != before {
		t.Fatalf("reinstalling the same version re-created routines")
	}
}

// The extension of 0.1.0, updated with ALTER EXTENSION pgmig UPDATE: same outcome, and the
// new routines are members (DROP EXTENSION removes them).
func TestUpgradeExtension(t *testing.T) {
	t.Parallel()
	extensionDir(t)
	db := pgtest.NewEmptyDB(t)
	conn := db.Conn(t)
	if _, err := conn.Exec(ctx(t), "create extension pgmig version '0.1.0'"); err != nil {
		t.Fatalf("create extension 0.1.0: %v", err)
	}
	if _, err := conn.Exec(ctx(t), `select * from migrate_apply('[{"version":1,"name":"one","sql":"create table one (i int)"}]')`); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx(t), "alter extension pgmig update"); err != nil {
		t.Fatalf("alter extension pgmig update: %v", err)
	}
	if got := queryString(t, conn, "select extversion || ' ' || pgmig.engine_version() from pg_extension where extname = 'pgmig'"); got != pgmigsql.Version()+" "+pgmigsql.Version() {
		t.Fatalf("versions after the update: %s", got)
	}
	if got := queryString(t, conn, `select count(*)::text from pg_depend d join pg_proc p on p.oid = d.objid
		where d.refobjid = (select oid from pg_extension where extname = 'pgmig') and d.deptype = 'e' and p.proname = 'migrate_run'`); got != "4" {
		t.Fatalf("migrate_run extension members: %s, want 4 (pgmig and public, batch as jsonb and as text)", got)
	}
	var result string
	if err := db.Conn(t).QueryRow(ctx(t), `call migrate_run('[{"version":1,"name":"one","sql":"create table one (i int)"},{"version":2,"name":"two","sql":"create table two ()"}]')`).Scan(&result); err != nil ||
		!strings.Contains(result, `"applied": 1`) {
		t.Fatalf("migrate_run after the update: %s %v", result, err)
	}
	if _, err := conn.Exec(ctx(t), "drop extension pgmig"); err != nil {
		t.Fatal(err)
	}
	if got := queryString(t, conn, `select count(*)::text from pg_proc where proname like 'migrate\_%' or pronamespace::regnamespace::text = 'pgmig'`); got != "0" {
		t.Fatalf("%s functions left after drop extension", got)
	}
}
