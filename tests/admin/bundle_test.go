package admin_test

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	pgmig "github.com/pgmig/pgmig/gowrapper"
	"github.com/pgmig/pgmig/tests/pgtest"
)

// Migration text that tries every way out of a quoted literal: empty and
// named dollar quotes, every tag the bundle generator uses, a tag fragment
// right before the end of a string, quotes and backslashes, psql's own
// syntax (meta-commands, variables), comments, and non-ASCII text.
var hostileFiles = map[string]string{
	"001_hostile_table.sql": "create table hostile (id int primary key, note text);\n" +
		"---- create above / drop below ----\ndrop table hostile; -- $pgmig_batch$ in the down SQL too\n",
	"002_dollar_quotes.sql": "-- $$ $pgmig$ $pgmig_batch$ $pgmig_bundle$ $pgmig_engine$ $pgmig_batch_1$ $pgmig_bundle_1$\n" +
		"-- psql acts on these outside quotes: \\gexec \\! echo hi :var :'var' :\"var\" ?\n" +
		"/* a block comment with $pgmig_bundle$ and */\n" +
		"insert into hostile values (1, $q$ $$ $pgmig$ $pgmig_batch$ $pgmig_bundle$ ' '' \" \\ \\\\ \\n $q$);\n" +
		"create function hostile_f() returns text language sql as $pgmig_batch$ select 'ends with $pgmig_bundle' $pgmig_batch$;\n",
	"003_quotes_and_unicode.sql": "insert into hostile values (2, 'it''s Grüße 日本語 😀 e' || U&'\\0301' || E' tab\\there \\\\ \\'' || chr(8232));\n" +
		"insert into hostile values (3, $pgmig_bundle$x$pgmig_bundle$);\n" +
		"-- the text ends with a tag fragment: $pgmig_batch",
}

var tagRE = regexp.MustCompile(`\$pgmig_[a-z]+(?:_[0-9]+)?\$`)

// hostileState is what the hostile migrations leave behind, for comparing a
// bundle's result with a push's.
func hostileState(t *testing.T, conn *pgx.Conn) string {
	t.Helper()
	return queryString(t, conn, "select string_agg(id || '=' || note, E'\\n' order by id) || E'\\n' || hostile_f() from hostile")
}

// A bundle of hostile migrations applies them exactly as push does, through
// every way a release script reaches the server: psql -f, psql -c (one
// simple-protocol message, as a GUI that sends the whole editor sends it),
// the simple protocol from a driver, and the extended protocol (a JDBC GUI
// running one statement). Then it is a no-op.
func TestBundleHostileText(t *testing.T) {
	t.Parallel()
	files := map[string]string{}
	for k, v := range hostileFiles {
		files[k] = v
	}
	ms := loadFiles(t, files)
	_, first := bundleFile(t, ms, nil)
	// Round two: a migration holding every tag the first bundle used, so
	// that the generator must pick others.
	files["004_every_tag.sql"] = "-- " + strings.Join(tagRE.FindAllString(first, -1), " ") + "\nselect 1;\n"
	ms = loadFiles(t, files)
	path, script := bundleFile(t, ms, nil)
	used := map[string]bool{}
	for _, tag := range tagRE.FindAllString(first, -1) {
		used[tag] = true
	}
	doTag := strings.Fields(script[strings.Index(script, "\nDO ")+1:])[1]
	if used[doTag] {
		t.Fatalf("the second bundle quotes with %s, which its migrations contain", doTag)
	}
	if len(script) >= 120_000 {
		t.Fatalf("the bundle is %d bytes: too big for one psql -c argument (128 kB), which this test needs", len(script))
	}

	ref := pgtest.NewDB(t)
	if _, err := pgmig.New(ref.Conn(t), nil).Push(ctx(t), ms, nil); err != nil {
		t.Fatal(err)
	}
	want := hostileState(t, ref.Conn(t))

	for _, channel := range []struct {
		name string
		run  func(t *testing.T, db *pgtest.DB) error
	}{
		{"psql -f", func(t *testing.T, db *pgtest.DB) error {
			if r := psql(t, db.URL, "-f", path); r.code != 0 {
				return fmt.Errorf("exit %d: %s", r.code, r.stderr)
			}
			return nil
		}},
		{"psql -c", func(t *testing.T, db *pgtest.DB) error {
			if r := psql(t, db.URL, "-c", script); r.code != 0 {
				return fmt.Errorf("exit %d: %s", r.code, r.stderr)
			}
			return nil
		}},
		{"simple protocol", func(t *testing.T, db *pgtest.DB) error {
			_, err := db.Conn(t).PgConn().Exec(ctx(t), script).ReadAll()
			return err
		}},
		{"extended protocol", func(t *testing.T, db *pgtest.DB) error {
			_, err := db.Conn(t).Exec(ctx(t), script, pgx.QueryExecModeExec)
			return err
		}},
	} {
		t.Run(channel.name, func(t *testing.T) {
			t.Parallel()
			db := pgtest.NewDB(t)
			if err := channel.run(t, db); err != nil {
				t.Fatal(err)
			}
			conn := db.Conn(t)
			checkHistory(t, conn, ms)
			if got := hostileState(t, conn); got != want {
				t.Errorf("the bundle left\n%s\npush left\n%s", got, want)
			}
			if err := channel.run(t, db); err != nil {
				t.Fatalf("second run: %v", err)
			}
			if n := queryInt(t, conn, "select count(*) from pgmig.history"); n != int64(len(ms)) {
				t.Errorf("%d history rows after the second run, want %d", n, len(ms))
			}
		})
	}
}

// countingFiles: n migrations that each record their own execution in
// runs (migration 1 creates it), with a commit-after marker and a slow one
// so that concurrent sessions overlap in several transactions.
func countingFiles(n int) map[string]string {
	files := map[string]string{"001_runs.sql": "create table runs (version int, pid int default pg_backend_pid());\ninsert into runs (version) values (1);\n"}
	for v := 2; v <= n; v++ {
		body := fmt.Sprintf("create table t%03d (id int);\ninsert into runs (version) values (%d);\n", v, v)
		if v == n/2 {
			body += "select pg_sleep(0.3);\n---- pgmig: commit-after ----\n"
		}
		files[fmt.Sprintf("%03d_t%03d.sql", v, v)] = body
	}
	return files
}

// Eight psql -f of one release script (engine included) on an empty
// database at once: the engine is installed once, every migration is applied
// exactly once, every session succeeds; a ninth run does nothing.
func TestBundleConcurrentPsql(t *testing.T) {
	t.Parallel()
	const n = 20
	ms := loadFiles(t, countingFiles(n))
	path, _ := bundleFile(t, ms, &pgmig.BundleOpts{WithEngine: true})
	db := pgtest.NewEmptyDB(t)

	results := make([]psqlResult, 8)
	var wg sync.WaitGroup
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = psql(t, db.URL, "-f", path)
		}()
	}
	wg.Wait()
	installs, applied := 0, 0
	for i, r := range results {
		if r.code != 0 {
			t.Fatalf("session %d: psql exit %d\n%s", i, r.code, r.stderr)
		}
		installs += strings.Count(r.stderr, "pgmig: installed the pgmig engine")
		applied += strings.Count(r.stderr, "NOTICE:  pgmig: applying version")
	}
	conn := db.Conn(t)
	if installs != 1 {
		t.Errorf("%d sessions installed the engine, want 1", installs)
	}
	if got := queryString(t, conn, "select coalesce(string_agg(version || ' ran ' || c || ' times', ', '), 'none') from (select version, count(*) c from runs group by version having count(*) <> 1) x"); got != "none" {
		t.Errorf("migrations not run exactly once: %s", got)
	}
	if got := queryInt(t, conn, "select count(*) from runs"); got != n || applied != n {
		t.Errorf("%d runs recorded, %d applying notices, want %d", got, applied, n)
	}
	checkHistory(t, conn, ms)
	r := psql(t, db.URL, "-f", path)
	if r.code != 0 || !strings.Contains(r.stderr, "this run applied 0, nothing is pending") || strings.Contains(r.stderr, "installed the pgmig engine") {
		t.Errorf("a ninth run: exit %d\n%s", r.code, r.stderr)
	}
}

// A failing migration: psql exits non-zero with the engine's PM010 warning
// naming it and PostgreSQL's error; its transaction is rolled back, the
// transaction committed before it (commit-after) stays. The fixed release
// then applies the rest.
func TestBundleFailingMigration(t *testing.T) {
	t.Parallel()
	files := map[string]string{
		"001_a.sql":   "create table a (id int);\n---- pgmig: commit-after ----\n",
		"002_b.sql":   "create table b (id int);\n",
		"003_bad.sql": "create table c (id int);\nselec 1;\n",
	}
	path, script := bundleFile(t, loadFiles(t, files), nil)
	db := pgtest.NewDB(t)
	r := psql(t, db.URL, "-f", path)
	if r.code != 3 {
		t.Fatalf("psql -f exit %d, want 3 (ON_ERROR_STOP)\n%s", r.code, r.stderr)
	}
	for _, want := range []string{
		"WARNING:  pgmig: migration 3 (bad) failed with SQLSTATE 42601; nothing of its transaction was applied (1 migration committed earlier by this call stay applied)",
		`ERROR:  syntax error at or near "selec"`,
	} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
		}
	}
	conn := db.Conn(t)
	if got := queryString(t, conn, "select string_agg(version::text, ',' order by version) from pgmig.history"); got != "1" {
		t.Errorf("history %s, want 1 (the committed transaction only)", got)
	}
	if got := queryString(t, conn, "select coalesce(string_agg(relname::text, ','), '') from pg_class where relname in ('b', 'c')"); got != "" {
		t.Errorf("tables of the failed transaction exist: %s", got)
	}
	if r := psql(t, db.URL, "-c", script); r.code != 1 || !strings.Contains(r.stderr, "migration 3 (bad) failed") {
		t.Errorf("psql -c of a failing release: exit %d, want 1\n%s", r.code, r.stderr)
	}

	files["003_bad.sql"] = "create table c (id int);\nselect 1;\n"
	ms := loadFiles(t, files)
	path, _ = bundleFile(t, ms, nil)
	if r := psql(t, db.URL, "-f", path); r.code != 0 || !strings.Contains(r.stderr, "this run applied 2") {
		t.Fatalf("fixed release: exit %d\n%s", r.code, r.stderr)
	}
	checkHistory(t, conn, ms)
}

// Non-transactional migrations in a bundle are checksum-only entries
// (NonTransactionalApplied): the script refuses to run, changing nothing,
// while one is pending, and applies the rest once it is.
func TestBundleNonTransactionalApplied(t *testing.T) {
	t.Parallel()
	ms := loadFiles(t, map[string]string{
		"001_t.sql":     "create table t (id int);\n",
		"002_index.sql": "---- tern: disable-tx ----\ncreate index concurrently t_id on t (id);\n",
		"003_u.sql":     "create table u (id int);\n",
	})
	path, _ := bundleFile(t, ms, &pgmig.BundleOpts{NonTransactionalApplied: true})
	db := pgtest.NewDB(t)
	r := psql(t, db.URL, "-f", path)
	if r.code != 3 || !strings.Contains(r.stderr, "ERROR:  pgmig: non-transactional migrations 2 (index) are not applied in this database, and this script cannot run them; nothing was applied") {
		t.Fatalf("exit %d, want 3 and PM005 naming version 2\n%s", r.code, r.stderr)
	}
	conn := db.Conn(t)
	if n := queryInt(t, conn, "select count(*) from pgmig.history"); n != 0 {
		t.Fatalf("%d migrations applied by a refused script", n)
	}
	if _, err := pgmig.New(conn, nil).Push(ctx(t), ms, &pgmig.PushOpts{TargetVersion: 2}); err != nil {
		t.Fatal(err)
	}
	if r := psql(t, db.URL, "-f", path); r.code != 0 || !strings.Contains(r.stderr, "this run applied 1") {
		t.Fatalf("after pushing the index: exit %d\n%s", r.code, r.stderr)
	}
	checkHistory(t, conn, ms)
}

// The engine a bundle needs: missing or too old is refused before anything
// runs (PM006); --with-engine installs it, upgrades 0.1.0, and keeps a
// newer one; inside a transaction block (psql -1) nothing happens at all.
func TestBundleEngine(t *testing.T) {
	t.Parallel()
	ms := loadFiles(t, map[string]string{"001_a.sql": "create table a (id int);\n"})
	plain, _ := bundleFile(t, ms, nil)
	withEngine, withEngineScript := bundleFile(t, ms, &pgmig.BundleOpts{WithEngine: true})

	t.Run("missing", func(t *testing.T) {
		t.Parallel()
		db := pgtest.NewEmptyDB(t)
		r := psql(t, db.URL, "-f", plain)
		if r.code != 3 || !strings.Contains(r.stderr, "ERROR:  pgmig: the pgmig engine is not installed in this database; nothing was applied") ||
			!strings.Contains(r.stderr, "--with-engine") {
			t.Fatalf("exit %d\n%s", r.code, r.stderr)
		}
		r = psql(t, db.URL, "-1", "-f", withEngine)
		if r.code != 3 || !strings.Contains(r.stderr, "invalid transaction termination") {
			t.Fatalf("psql -1: exit %d, want 3 and 2D000\n%s", r.code, r.stderr)
		}
		if n := queryInt(t, db.Conn(t), "select count(*) from pg_namespace where nspname = 'pgmig'"); n != 0 {
			t.Fatal("psql -1 left the engine installed: the script's transaction was not rolled back")
		}
		if r := psql(t, db.URL, "-f", withEngine); r.code != 0 || !strings.Contains(r.stderr, "pgmig: installed the pgmig engine "+pgmig.SupportedEngineVersion()+" (new install)") {
			t.Fatalf("--with-engine: exit %d\n%s", r.code, r.stderr)
		}
		checkHistory(t, db.Conn(t), ms)
	})
	// The install script carries its own BEGIN/COMMIT; inside the bundle it
	// must still be one statement that commits, however it is sent.
	t.Run("one message", func(t *testing.T) {
		t.Parallel()
		simple, extended := pgtest.NewEmptyDB(t), pgtest.NewEmptyDB(t)
		if _, err := simple.Conn(t).PgConn().Exec(ctx(t), withEngineScript).ReadAll(); err != nil {
			t.Fatalf("simple protocol: %v", err)
		}
		if _, err := extended.Conn(t).Exec(ctx(t), withEngineScript, pgx.QueryExecModeExec); err != nil {
			t.Fatalf("extended protocol: %v", err)
		}
		for _, db := range []*pgtest.DB{simple, extended} {
			checkHistory(t, db.Conn(t), ms)
		}
	})
	t.Run("0.1.0", func(t *testing.T) {
		t.Parallel()
		db := pgtest.NewEmptyDB(t)
		old, err := os.ReadFile("../../sql/releases/pgmig-0.1.0.sql")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.Conn(t).PgConn().Exec(ctx(t), string(old)).ReadAll(); err != nil {
			t.Fatal(err)
		}
		r := psql(t, db.URL, "-f", plain)
		if r.code != 3 || !strings.Contains(r.stderr, "pgmig: the pgmig engine 0.1.0 is installed; this release needs 0.2.0 or newer; nothing was applied") {
			t.Fatalf("exit %d\n%s", r.code, r.stderr)
		}
		if r := psql(t, db.URL, "-f", withEngine); r.code != 0 || !strings.Contains(r.stderr, "(was 0.1.0)") {
			t.Fatalf("--with-engine over 0.1.0: exit %d\n%s", r.code, r.stderr)
		}
		conn := db.Conn(t)
		if v := queryString(t, conn, "select pgmig.engine_version()"); v != pgmig.SupportedEngineVersion() {
			t.Errorf("engine %s after the upgrade", v)
		}
		checkHistory(t, conn, ms)
	})
	t.Run("newer", func(t *testing.T) {
		t.Parallel()
		db := pgtest.NewDB(t)
		conn := db.Conn(t)
		if _, err := conn.Exec(ctx(t), "create or replace function pgmig.engine_version() returns text language sql immutable as $$ select '9.9.0'::text $$"); err != nil {
			t.Fatal(err)
		}
		r := psql(t, db.URL, "-f", withEngine)
		if r.code != 0 || strings.Contains(r.stderr, "installed the pgmig engine") {
			t.Fatalf("exit %d, or it reinstalled over a newer engine\n%s", r.code, r.stderr)
		}
		if v := queryString(t, conn, "select pgmig.engine_version()"); v != "9.9.0" {
			t.Errorf("engine %s: the bundle downgraded it", v)
		}
		checkHistory(t, conn, ms)
	})
}
