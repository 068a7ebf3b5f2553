package adopt_test

import (
	"bytes"
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
	"github.com/jackc/tern/v2/migrate"

	pgmig "github.com/pgmig/pgmig/gowrapper"
	"github.com/pgmig/pgmig/tests/pgtest"
)

// realTool is another migration tool's CLI, built from its Go module at a
// pinned version with `go install module/cmd@version`: go.mod stays free
// of them. The binary is kept in $PGMIG_CACHE/tools/<name>@<version> (see
// pgtest.CacheDir), so it is built once per machine; a rebuild after the
// cache is cleared comes mostly from the Go build cache.
type realTool struct {
	name, pkg, version string
	// tags leave out the database drivers the tests do not need (goose
	// links ClickHouse, MySQL, SQLite, ... by default: minutes to build).
	tags string
}

var (
	golangMigrate = realTool{name: "migrate", pkg: "github.com/golang-migrate/migrate/v4/cmd/migrate", version: "v4.20.1", tags: "postgres"}
	goose         = realTool{name: "goose", pkg: "github.com/pressly/goose/v3/cmd/goose", version: "v3.30.0",
		tags: "no_clickhouse no_libsql no_mssql no_mysql no_sqlite3 no_vertica no_ydb"}
	sqlMigrate = realTool{name: "sql-migrate", pkg: "github.com/rubenv/sql-migrate/sql-migrate", version: "v1.8.1"}
)

var (
	toolsMu    sync.Mutex
	toolBuilds = map[string]*toolBuild{}
)

type toolBuild struct {
	once sync.Once
	path string
	err  error
}

// bin is the tool's binary, built on first use.
func (rt realTool) bin(t *testing.T) string {
	t.Helper()
	toolsMu.Lock()
	b := toolBuilds[rt.name]
	if b == nil {
		b = &toolBuild{}
		toolBuilds[rt.name] = b
	}
	toolsMu.Unlock()
	b.once.Do(func() { b.path, b.err = rt.build() })
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

func (rt realTool) build() (string, error) {
	cache, err := pgtest.CacheDir()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(cache, "tools", rt.name+"@"+rt.version)
	bin := filepath.Join(dir, rt.name)
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	// Installed into a directory of its own, then renamed into place: a
	// half-written binary is never found by the next run.
	tmp, err := os.MkdirTemp(dir, "build-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	cmd := exec.Command("go", "install", "-tags", rt.tags, rt.pkg+"@"+rt.version)
	// Outside this module (pkg@version ignores it anyway), without cgo (no
	// C compiler needed; sql-migrate's SQLite driver is not used).
	cmd.Dir = tmp
	cmd.Env = append(os.Environ(), "GOBIN="+tmp, "CGO_ENABLED=0", "GOWORK=off")
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building %s %s (%s): %v\n%s", rt.name, rt.version, strings.Join(cmd.Args, " "), err, out)
	}
	fmt.Fprintf(os.Stderr, "adopt tests: built %s %s in %s into %s\n", rt.name, rt.version, time.Since(start).Round(time.Second), dir)
	return bin, os.Rename(filepath.Join(tmp, rt.name), bin)
}

// run runs the tool in dir; it must exit with code want (0: success).
func (rt realTool) run(t *testing.T, dir string, want int, args ...string) string {
	t.Helper()
	return runCmd(t, rt.bin(t), dir, nil, want, args...)
}

func runCmd(t *testing.T, bin, dir string, env []string, want int, args ...string) string {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	code := 0
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		code = exitErr.ExitCode()
	} else if err != nil {
		t.Fatalf("%s %s: %v", filepath.Base(bin), strings.Join(args, " "), err)
	}
	if code != want {
		t.Fatalf("%s %s: exit %d, want %d\n%s", filepath.Base(bin), strings.Join(args, " "), code, want, out.String())
	}
	return out.String()
}

// pgmigCLI runs the pgmig binary against db; it must exit with want and
// print every one of has.
func pgmigCLI(t *testing.T, db *pgtest.DB, dir string, want int, has []string, args ...string) string {
	t.Helper()
	out := runCmd(t, cli, dir, []string{"DATABASE_URL=" + db.URL, "NO_COLOR=1"}, want, args...)
	for _, h := range has {
		if !strings.Contains(out, h) {
			t.Errorf("pgmig %s: the output lacks %q:\n%s", strings.Join(args, " "), h, out)
		}
	}
	return out
}

// adoptedByCLI is the loop with the real binary: adopt, push has
// nothing to do, the next file applies.
func adoptedByCLI(t *testing.T, db *pgtest.DB, tool pgmig.Format, dir string, n int) {
	t.Helper()
	pgmigCLI(t, db, dir, 0, []string{fmt.Sprintf("Adopted %d migrations from %s without running them", n, tool),
		fmt.Sprintf("%s's table %s is left as it was", tool, pgmig.AdoptTable(tool))}, "adopt", "--from", string(tool))
	pgmigCLI(t, db, dir, 0, []string{"Nothing to apply"}, "push")
	addNext(t, tool, dir)
	pgmigCLI(t, db, dir, 0, []string{"Applied 1 migration"}, "push")
	pgmigCLI(t, db, dir, 0, []string{"baseline", "applied"}, "status")
}

// sameColumns checks that the real tool's table is the one the
// reproduced tests build (createTable): same columns, types, nullability.
func sameColumns(t *testing.T, real *pgtest.DB, tool pgmig.Format) {
	t.Helper()
	scratch := pgtest.NewEmptyDB(t)
	if _, err := scratch.Conn(t).Exec(context.Background(), createTable[tool]); err != nil {
		t.Fatal(err)
	}
	columns := func(db *pgtest.DB) string {
		var s string
		err := db.Conn(t).QueryRow(context.Background(), `select string_agg(format('%s %s %s %s', a.attname, format_type(a.atttypid, a.atttypmod),
				a.attnotnull, coalesce(pg_get_expr(d.adbin, d.adrelid), '')), ', ' order by a.attnum)
			from pg_attribute a left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
			where a.attrelid = $1::regclass and a.attnum > 0 and not a.attisdropped`, toolTable[tool]).Scan(&s)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	if r, c := columns(real), columns(scratch); r != c {
		t.Errorf("%s's table: the real tool's is\n  %s\nthe reproduced one\n  %s", tool, r, c)
	}
}

// nothingChanged checks that pgmig recorded and audited nothing.
func nothingChanged(t *testing.T, db *pgtest.DB) {
	t.Helper()
	var n int
	if err := db.Conn(t).QueryRow(context.Background(), "select (select count(*) from pgmig.history) + (select count(*) from pgmig.audit)").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("a refused adoption recorded %d rows", n)
	}
}

func TestRealGolangMigrate(t *testing.T) {
	t.Parallel()
	t.Run("adopted", func(t *testing.T) {
		t.Parallel()
		db, dir := pgtest.NewDB(t), fixture(t, pgmig.FormatGolangMigrate)
		golangMigrate.run(t, dir, 0, "-path", dir, "-database", db.URL, "up")
		sameColumns(t, db, pgmig.FormatGolangMigrate)
		adoptedByCLI(t, db, pgmig.FormatGolangMigrate, dir, 3)
	})
	// A failing migration leaves golang-migrate dirty: refused, with
	// golang-migrate's own fix, which then works.
	t.Run("dirty", func(t *testing.T) {
		t.Parallel()
		db, dir := pgtest.NewDB(t), fixture(t, pgmig.FormatGolangMigrate)
		broken := filepath.Join(dir, "20240301000000_order_status.up.sql")
		writeFile(t, broken, "ALTER TABLE orders ADD COLUMN status order_status;\n")
		golangMigrate.run(t, dir, 1, "-path", dir, "-database", db.URL, "up")
		pgmigCLI(t, db, dir, 4, []string{"SQLSTATE: PM020", "version 20240301000000 is dirty", "`migrate force V`"}, "adopt", "--from", "golang-migrate")
		nothingChanged(t, db)

		golangMigrate.run(t, dir, 0, "-path", dir, "-database", db.URL, "force", "20240220080000")
		if err := os.Remove(broken); err != nil {
			t.Fatal(err)
		}
		pgmigCLI(t, db, dir, 0, []string{"Adopted 3 migrations"}, "adopt", "--from", "golang-migrate")
	})
}

func TestRealGoose(t *testing.T) {
	t.Parallel()
	t.Run("adopted", func(t *testing.T) {
		t.Parallel()
		db, dir := pgtest.NewDB(t), fixture(t, pgmig.FormatGoose)
		goose.run(t, dir, 0, "-dir", dir, "postgres", db.URL, "up")
		sameColumns(t, db, pgmig.FormatGoose)
		adoptedByCLI(t, db, pgmig.FormatGoose, dir, 4)
	})
	// A file older than goose's newest version that goose did not apply:
	// refused, with goose's own fix, which then works.
	t.Run("missing", func(t *testing.T) {
		t.Parallel()
		db, dir := pgtest.NewDB(t), fixture(t, pgmig.FormatGoose)
		late := filepath.Join(dir, "00003_index_users_email.sql")
		aside := filepath.Join(t.TempDir(), "late.sql")
		if err := os.Rename(late, aside); err != nil {
			t.Fatal(err)
		}
		goose.run(t, dir, 0, "-dir", dir, "postgres", db.URL, "up")
		if err := os.Rename(aside, late); err != nil {
			t.Fatal(err)
		}
		pgmigCLI(t, db, dir, 4, []string{"version 3 (index_users_email): not recorded by goose", "`goose up -allow-missing`"},
			"adopt", "--from", "goose")
		nothingChanged(t, db)
		goose.run(t, dir, 0, "-dir", dir, "-allow-missing", "postgres", db.URL, "up")
		pgmigCLI(t, db, dir, 0, []string{"Adopted 4 migrations"}, "adopt", "--from", "goose", "--drop-old")
		pgmigCLI(t, db, dir, 0, []string{"Nothing to apply"}, "push")
	})
}

func TestRealSQLMigrate(t *testing.T) {
	t.Parallel()
	config := func(t *testing.T, db *pgtest.DB, dir string) string {
		p := filepath.Join(t.TempDir(), "dbconfig.yml")
		writeFile(t, p, fmt.Sprintf("test:\n  dialect: postgres\n  datasource: %s\n  dir: %s\n", db.URL, dir))
		return p
	}
	t.Run("adopted", func(t *testing.T) {
		t.Parallel()
		db, dir := pgtest.NewDB(t), fixture(t, pgmig.FormatSQLMigrate)
		sqlMigrate.run(t, dir, 0, "up", "-config", config(t, db, dir), "-env", "test")
		sameColumns(t, db, pgmig.FormatSQLMigrate)
		adoptedByCLI(t, db, pgmig.FormatSQLMigrate, dir, 3)
	})
	// sql-migrate records file names: a renamed file is refused until it
	// has its name back; a removed one too.
	t.Run("renamed and removed", func(t *testing.T) {
		t.Parallel()
		db, dir := pgtest.NewDB(t), fixture(t, pgmig.FormatSQLMigrate)
		sqlMigrate.run(t, dir, 0, "up", "-config", config(t, db, dir), "-env", "test")
		was, now := filepath.Join(dir, "20220301090500-create_books.sql"), filepath.Join(dir, "20220301090500_books.sql")
		if err := os.Rename(was, now); err != nil {
			t.Fatal(err)
		}
		pgmigCLI(t, db, dir, 4, []string{"recorded as '20220301090500-create_books.sql', but the file of version 20220301090500 is named 'books'"},
			"adopt", "--from", "sql-migrate")
		if err := os.Remove(now); err != nil {
			t.Fatal(err)
		}
		pgmigCLI(t, db, dir, 4, []string{"version 20220301090500-create_books.sql: recorded by sql-migrate, but no migration file has it"},
			"adopt", "--from", "sql-migrate")
		nothingChanged(t, db)
	})
}

// tern is a dependency already: its own migrator migrates, then
// `adopt --from tern` and its alias `baseline --from-tern` take over.
func TestRealTern(t *testing.T) {
	t.Parallel()
	ternMigrateTo := func(t *testing.T, db *pgtest.DB, dir, table string) {
		ctx := context.Background()
		conn, err := pgx.Connect(ctx, db.URL)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		m, err := migrate.NewMigrator(ctx, conn, table)
		if err != nil {
			t.Fatal(err)
		}
		if err := m.LoadMigrations(os.DirFS(dir)); err != nil {
			t.Fatal(err)
		}
		if err := m.Migrate(ctx); err != nil {
			t.Fatal(err)
		}
	}
	ternMigrate := func(t *testing.T, db *pgtest.DB, dir string) { ternMigrateTo(t, db, dir, "public.schema_version") }
	// tern.conf's version_table names tern's table for adopt too.
	t.Run("tern.conf", func(t *testing.T) {
		t.Parallel()
		db, dir := pgtest.NewDB(t), fixture(t, pgmig.FormatTern)
		if _, err := db.Conn(t).Exec(context.Background(), "create schema ops"); err != nil {
			t.Fatal(err)
		}
		ternMigrateTo(t, db, dir, "ops.tern_version")
		work := t.TempDir()
		writeFile(t, filepath.Join(work, "tern.conf"), "[database]\nversion_table = ops.tern_version\n")
		pgmigCLI(t, db, work, 0, []string{"Adopted 3 migrations from tern", "tern's table ops.tern_version is left as it was"},
			"adopt", "--from", "tern", "--dir", dir)
	})
	t.Run("adopt", func(t *testing.T) {
		t.Parallel()
		db, dir := pgtest.NewDB(t), fixture(t, pgmig.FormatTern)
		ternMigrate(t, db, dir)
		sameColumns(t, db, pgmig.FormatTern)
		adoptedByCLI(t, db, pgmig.FormatTern, dir, 3)
	})
	t.Run("baseline --from-tern", func(t *testing.T) {
		t.Parallel()
		db, dir := pgtest.NewDB(t), fixture(t, pgmig.FormatTern)
		ternMigrate(t, db, dir)
		out := pgmigCLI(t, db, dir, 0, []string{"Baselined at version 3: recorded 3 migrations as applied without running them",
			"tern's version table public.schema_version is at version 3"}, "baseline", "--from-tern")
		if strings.Contains(out, "after it left") {
			t.Errorf("nothing is pending:\n%s", out)
		}
		var from string
		if err := db.Conn(t).QueryRow(context.Background(), "select details->>'adopted_from' from pgmig.audit").Scan(&from); err != nil || from != "tern" {
			t.Fatalf("audit: %q %v", from, err)
		}
	})
}
