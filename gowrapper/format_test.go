package pgmig

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

var updateGolden = flag.Bool("update-formats", false, "rewrite testdata/formats/*.golden")

// fixtureOpts: the data the fixtures' substitutions need (goose's ENVSUB,
// Flyway's placeholders); format_push_test.go pushes the same.
var fixtureOpts = &LoadOpts{
	Env:  map[string]string{"TEAM_NAME": "payments"},
	Data: map[string]any{"owner": "logistics"},
}

// render writes what a directory loads to, every field, in a form to
// review: testdata/formats/<tool>.golden.
func render(l *Loaded) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# format %s: %d migrations, %d repeatable\n", l.Format, len(l.Migrations), len(l.Repeatable))
	text := func(s string) {
		for _, line := range strings.Split(s, "\n") {
			fmt.Fprintf(&b, "| %s\n", strings.ReplaceAll(line, "\r", `\r`))
		}
	}
	for _, m := range append(append([]*Migration(nil), l.Migrations...), l.Repeatable...) {
		fmt.Fprintf(&b, "\n== version %d label %q name %q file %s\n", m.Version, m.Label, m.Name, m.File)
		fmt.Fprintf(&b, "format %s, transactional %v, commit after %v, repeatable %v\n", m.Format, m.Transactional, m.CommitAfter, m.Repeatable)
		fmt.Fprintf(&b, "checksum %s\n-- up\n", m.Checksum)
		text(m.SQL)
		if m.Down != "" {
			b.WriteString("-- down\n")
			text(m.Down)
		}
	}
	return b.String()
}

// TestFormatFixtures: each tool's directory loads to what its golden file
// says (reviewed by hand: versions, names, SQL, down SQL, transactional,
// checksums), its format detected; forcing the format, or reading through
// os.DirFS instead of LoadDir's reader, changes nothing.
func TestFormatFixtures(t *testing.T) {
	t.Parallel()
	for _, f := range formats {
		t.Run(string(f), func(t *testing.T) {
			t.Parallel()
			dir := filepath.Join("testdata", "formats", string(f))
			l, err := LoadDirAll(dir, fixtureOpts)
			if err != nil {
				t.Fatal(err)
			}
			if l.Format != f {
				t.Fatalf("detected %s", l.Format)
			}
			for _, m := range append(append([]*Migration(nil), l.Migrations...), l.Repeatable...) {
				sum := sha256.Sum256([]byte(m.SQL))
				if m.Format != f || m.Checksum != hex.EncodeToString(sum[:]) || strings.TrimSpace(m.SQL) != m.SQL || m.SQL == "" {
					t.Errorf("%s: format %s, checksum %s of %q", m.File, m.Format, m.Checksum, m.SQL)
				}
			}
			golden := dir + ".golden"
			got := render(l)
			if *updateGolden {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if got != string(want) {
				t.Errorf("%s differs (go test ./gowrapper -run TestFormatFixtures -update-formats, then review the diff):\n%s", golden, got)
			}
			forced, err := LoadDirAll(dir, &LoadOpts{Format: f, Env: fixtureOpts.Env, Data: fixtureOpts.Data})
			if err != nil || render(forced) != got {
				t.Errorf("with the format forced: %v", err)
			}
			viaFS, err := LoadAll(os.DirFS(dir), fixtureOpts)
			if err != nil || !reflect.DeepEqual(viaFS, l) {
				t.Errorf("through os.DirFS: %v", err)
			}
		})
	}
}

// TestFormatFixtureFacts states what the fixtures are about, independently
// of the golden files.
func TestFormatFixtureFacts(t *testing.T) {
	t.Parallel()
	load := func(f Format) map[string]*Migration {
		l, err := LoadDirAll(filepath.Join("testdata", "formats", string(f)), fixtureOpts)
		if err != nil {
			t.Fatal(err)
		}
		byFile := map[string]*Migration{}
		for _, m := range append(append([]*Migration(nil), l.Migrations...), l.Repeatable...) {
			byFile[m.File] = m
		}
		return byFile
	}
	check := func(m *Migration, version int64, tx bool, sqlPrefix, downPrefix string) {
		t.Helper()
		if m == nil {
			t.Fatal("missing")
		}
		if m.Version != version || m.Transactional != tx || !strings.HasPrefix(m.SQL, sqlPrefix) || !strings.HasPrefix(m.Down, downPrefix) || (downPrefix == "") != (m.Down == "") {
			t.Errorf("%s: version %d tx %v\nSQL %q\ndown %q\nwant version %d tx %v, SQL starting %q, down starting %q",
				m.File, m.Version, m.Transactional, m.SQL, m.Down, version, tx, sqlPrefix, downPrefix)
		}
	}

	tern := load(FormatTern)
	// BOM dropped, CRLF kept as tern keeps it; disable-tx recognised with CRLF.
	check(tern["001_create_accounts.sql"], 1, true, "-- Accounts of the billing service.\r\ncreate table accounts (", "drop table accounts;")
	check(tern["002_index_accounts_email.sql"], 2, false, "---- tern: disable-tx ----\r\ncreate index concurrently", "drop index concurrently")

	gm := load(FormatGolangMigrate)
	c := gm["20240105093000_create_customers.up.sql"]
	check(c, 20240105093000, true, "-- golang-migrate runs a file as written: this project wraps each one itself.\n\nCREATE TABLE customers (", "DROP TABLE customers;")
	if strings.Contains(c.SQL, "BEGIN") || strings.Contains(c.SQL, "COMMIT") || c.Down != "DROP TABLE customers;" {
		t.Errorf("the BEGIN/COMMIT wrapper stayed: %q / %q", c.SQL, c.Down)
	}
	check(gm["20240112141500_create_orders.up.sql"], 20240112141500, true, "SET lock_timeout = '5s';", "")
	check(gm["20240220080000_index_orders_customer.up.sql"], 20240220080000, false, "-- Built without blocking writes", "DROP INDEX CONCURRENTLY")
	s := gm["20240301000000_order_status.up.sql"] // START TRANSACTION ... END, CRLF, BOM
	check(s, 20240301000000, true, "CREATE TYPE order_status AS ENUM ('open', 'paid', 'shipped');\r\nALTER TABLE orders", "ALTER TABLE orders DROP COLUMN status;\r\nDROP TYPE order_status;")
	if strings.HasSuffix(s.SQL, "END;") || strings.HasSuffix(s.Down, "COMMIT;") {
		t.Errorf("the START TRANSACTION/END wrapper stayed: %q / %q", s.SQL, s.Down)
	}
	check(gm["20240315120000_backfill_done_by_hand.up.sql"], 20240315120000, true, "-- The backfill of orders.status was run by hand", "")
	check(gm["20240401000000_reserved.up.sql"], 20240401000000, true, emptySQL, "")

	goose := load(FormatGoose)
	check(goose["00001_create_users.sql"], 1, true, "CREATE TABLE users (", "DROP TABLE users;")
	tr := goose["00002_users_touch_trigger.sql"]
	check(tr, 2, true, "CREATE OR REPLACE FUNCTION users_touch()", "DROP TRIGGER users_touch ON users;\nDROP FUNCTION users_touch();")
	if strings.Contains(tr.SQL, "+goose") || strings.Contains(tr.Down, "+goose") {
		t.Errorf("annotations left in the SQL: %q / %q", tr.SQL, tr.Down)
	}
	check(goose["00003_index_users_email.sql"], 3, false, "SET lock_timeout = '2s';\nCREATE UNIQUE INDEX CONCURRENTLY", "DROP INDEX CONCURRENTLY users_email_key;")
	check(goose["20240131120000_add_team.sql"], 20240131120000, true, "ALTER TABLE users ADD COLUMN team text;", "")
	check(goose["20240202093000_comment_owner.sql"], 20240202093000, true,
		"COMMENT ON TABLE users IS 'owned by payments, contact nobody';\nCOMMENT ON COLUMN users.team IS 'costs ${not substituted}';", "COMMENT ON TABLE users IS NULL;")
	check(goose["20240210000000_noop.sql"], 20240210000000, true, "-- Nothing to do any more", "")
	check(goose["20240215000000_seed_admin.sql"], 20240215000000, true, "INSERT INTO users", "DELETE FROM users")

	dbmate := load(FormatDbmate)
	check(dbmate["20230601100000_create_projects.sql"], 20230601100000, true, "create table projects (", "drop table projects;")
	check(dbmate["20230715000000_index_tasks.sql"], 20230715000000, false, "create index concurrently tasks_project_idx", "drop index concurrently")
	check(dbmate["20230801000000_seed_projects.sql"], 20230801000000, true, "insert into projects (name) values ('inbox');", "delete from projects")
	check(dbmate["20230901000000_labels.sql"], 20230901000000, true,
		"create table labels (id bigserial primary key, name text not null);\ncreate table label_aliases", "drop table labels;\n\ndrop table label_aliases;")
	check(dbmate["20231001000000_nothing.sql"], 20231001000000, true, "-- (kept for history", "")

	sm := load(FormatSQLMigrate)
	check(sm["20220301090000-create_authors.sql"], 20220301090000, true, "CREATE TABLE authors (", "DROP TABLE authors;")
	check(sm["20220301090500-create_books.sql"], 20220301090500, true, "CREATE TABLE books (", "DROP FUNCTION books_of(int);")
	check(sm["20220415000000-index_books.sql"], 20220415000000, false, "SET lock_timeout = '2s';\nCREATE INDEX CONCURRENTLY", "DROP INDEX CONCURRENTLY")
	check(sm["20220501000000-seed.sql"], 20220501000000, true, "INSERT INTO authors (name) VALUES ('Ursula');", "DELETE FROM authors")
	check(sm["20220601000000-nothing.sql"], 20220601000000, true, "-- Superseded by 20220501000000", "")

	fw := load(FormatFlyway)
	for file, want := range map[string]struct {
		version int64
		label   string
		tx      bool
	}{
		"V1__create_warehouses.sql":             {10000, "1", true},
		"V1.1__add_warehouse_city.sql":          {10100, "1.1", true},
		"V1_2__index_warehouse_code.sql":        {10200, "1.2", false},
		"V1.9__create_stock.sql":                {10900, "1.9", true},
		"V1.10__stock_guard.sql":                {11000, "1.10", true},
		"V2__comment_owner.sql":                 {20000, "2", true},
		"V2.0.1__index_stock_sku.sql":           {20001, "2.0.1", false},
		"V3__seed.sql":                          {30000, "3", true},
		"V3.1__nothing.sql":                     {30100, "3.1", true},
		"archive/V2024.01.15__from_archive.sql": {20240115, "2024.01.15", true},
	} {
		m := fw[file]
		if m == nil || m.Version != want.version || m.Label != want.label || m.Transactional != want.tx || m.Repeatable {
			t.Errorf("%s: %+v, want %+v", file, m, want)
		}
	}
	if m := fw["V1.1__add_warehouse_city.sql"]; m.Down != "ALTER TABLE warehouses DROP COLUMN city;" {
		t.Errorf("the undo file is not the down SQL: %q", m.Down)
	}
	if m := fw["V2__comment_owner.sql"]; m.SQL != "COMMENT ON TABLE warehouses IS 'owned by logistics, created by V2__comment_owner.sql';" {
		t.Errorf("placeholders: %q", m.SQL)
	}
	if m := fw["R__warehouse_view.sql"]; m == nil || !m.Repeatable || m.Version != 0 || m.Name != "warehouse_view" {
		t.Errorf("repeatable: %+v", m)
	}
	ms, err := LoadDir(filepath.Join("testdata", "formats", "flyway"), fixtureOpts)
	if err != nil {
		t.Fatal(err)
	}
	// LoadDir: the versioned migrations, then the repeatable one.
	for i, m := range ms {
		if last := i == len(ms)-1; m.Repeatable != last || (m.Version == 0) != last {
			t.Errorf("LoadDir returned %s (repeatable %v) at %d of %d", m.File, m.Repeatable, i, len(ms))
		}
	}
}

// TestLocateFixtures: in every fixture, each character of the SQL that
// came from the file as written maps back to that character of the file
// (line and column in characters, 1-based), whatever was left out
// (markers, a BEGIN/COMMIT wrapper, a byte-order mark) around it.
func TestLocateFixtures(t *testing.T) {
	t.Parallel()
	for _, f := range formats {
		l, err := LoadDirAll(filepath.Join("testdata", "formats", string(f)), fixtureOpts)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range append(append([]*Migration(nil), l.Migrations...), l.Repeatable...) {
			if m.SQL == emptySQL {
				continue
			}
			raw, err := os.ReadFile(filepath.Join("testdata", "formats", string(f), m.File))
			if err != nil {
				t.Fatal(err)
			}
			checkLocateAll(t, m, strings.TrimPrefix(string(raw), byteOrderMark))
		}
	}
}

// checkLocateAll: every position of m.SQL maps to the file's character
// there, or (Expanded) to a line of the file.
func checkLocateAll(t *testing.T, m *Migration, file string) {
	t.Helper()
	fileLines := strings.Split(file, "\n")
	sql := []rune(m.SQL)
	step := 1 + len(sql)/2000 // Locate is linear in the SQL: sample long ones
	for p := 1; p <= len(sql); p += step {
		loc, ok := m.Locate(p)
		if !ok {
			t.Fatalf("%s: position %d (%q) not located", m.File, p, sql[p-1])
		}
		if loc.Line < 1 || loc.Line > len(fileLines) {
			t.Fatalf("%s: position %d at line %d of %d", m.File, p, loc.Line, len(fileLines))
		}
		line := []rune(fileLines[loc.Line-1])
		if loc.Text != strings.TrimSuffix(fileLines[loc.Line-1], "\r") {
			t.Fatalf("%s: position %d: Text %q, line %d is %q", m.File, p, loc.Text, loc.Line, fileLines[loc.Line-1])
		}
		if loc.Expanded {
			continue
		}
		if sql[p-1] == '\n' && loc.Column == len(line)+1 {
			continue // the end of the line
		}
		if loc.Column < 1 || loc.Column > len(line) || line[loc.Column-1] != sql[p-1] {
			t.Fatalf("%s: position %d (%q) located at %d:%d of %q", m.File, p, sql[p-1], loc.Line, loc.Column, string(line))
		}
	}
}

func TestFlywayKey(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		version string
		key     int64
		label   string
	}{
		{"1", 10000, "1"}, {"1.0", 10000, "1.0"}, {"1.0.0.0", 10000, "1.0.0.0"}, {"1.1", 10100, "1.1"}, {"1_1", 10100, "1.1"},
		{"1.9", 10900, "1.9"}, {"1.10", 11000, "1.10"}, {"2.0.1", 20001, "2.0.1"}, {"01.02.03", 10203, "01.02.03"},
		{"0.1", 100, "0.1"}, {"0.0.1", 1, "0.0.1"}, {"2024.01.15", 20240115, "2024.01.15"},
		{"20240131120000", 202401311200000000, "20240131120000"},
		{"922337203685476.99.99", 9223372036854769999, "922337203685476.99.99"},
		{"1.2.3.0", 10203, "1.2.3.0"},
	} {
		key, label, err := flywayKey("f.sql", tt.version)
		if err != nil || key != tt.key || label != tt.label {
			t.Errorf("%s: %d %q %v, want %d %q", tt.version, key, label, err, tt.key, tt.label)
		}
	}
	for _, bad := range []string{"", "0", "0.0", "1.100", "1.1.100", "1.2.3.4", "922337203685477", "99999999999999999999", "1..2", "1.", ".1", "1a", "-1", "1.a", "+1"} {
		_, _, err := flywayKey("f.sql", bad)
		var le *LoadError
		if !errors.Is(err, ErrInvalidFileName) || !errors.As(err, &le) || le.File != "f.sql" {
			t.Errorf("%q: %v, want ErrInvalidFileName naming f.sql", bad, err)
		}
	}
	_, _, err := flywayKey("f.sql", "1.100")
	if err == nil || !strings.Contains(err.Error(), "at most three parts; part2 and part3 at most 99; part1 at most 922337203685476") {
		t.Errorf("the limits are not named: %v", err)
	}
}

func TestStatementKinds(t *testing.T) {
	t.Parallel()
	outside := map[string]string{
		"CREATE INDEX CONCURRENTLY i ON t (x)":                                  "CREATE INDEX CONCURRENTLY",
		"create unique index concurrently if not exists i on t (x)":             "CREATE INDEX CONCURRENTLY",
		"/* why */ -- how\n Create  Index\tConcurrently i on t(x)":              "CREATE INDEX CONCURRENTLY",
		"DROP INDEX CONCURRENTLY IF EXISTS i":                                   "DROP INDEX CONCURRENTLY",
		"REINDEX INDEX CONCURRENTLY i":                                          "REINDEX CONCURRENTLY",
		"REINDEX (VERBOSE, CONCURRENTLY) TABLE t":                               "REINDEX CONCURRENTLY",
		"reindex (concurrently true) index i":                                   "REINDEX CONCURRENTLY",
		"REINDEX DATABASE app":                                                  "REINDEX DATABASE",
		"reindex schema s":                                                      "REINDEX SCHEMA",
		"REINDEX SYSTEM":                                                        "REINDEX SYSTEM",
		"VACUUM":                                                                "VACUUM",
		"vacuum (analyze, verbose) t":                                           "VACUUM",
		"CLUSTER":                                                               "CLUSTER",
		"ALTER SYSTEM SET work_mem = '64MB'":                                    "ALTER SYSTEM",
		"CREATE DATABASE other":                                                 "CREATE DATABASE",
		"DROP DATABASE IF EXISTS other":                                         "DROP DATABASE",
		`ALTER DATABASE "app" SET TABLESPACE fast`:                              "ALTER DATABASE ... SET TABLESPACE",
		"CREATE TABLESPACE fast LOCATION '/ssd'":                                "CREATE TABLESPACE",
		"DROP TABLESPACE fast":                                                  "DROP TABLESPACE",
		"CREATE SUBSCRIPTION s CONNECTION 'x' PUBLICATION p":                    "CREATE SUBSCRIPTION",
		"DROP SUBSCRIPTION s":                                                   "DROP SUBSCRIPTION",
		"ALTER SUBSCRIPTION s REFRESH PUBLICATION":                              "ALTER SUBSCRIPTION",
		"ALTER TABLE ONLY public.m DETACH PARTITION public.m_2020 CONCURRENTLY": "ALTER TABLE ... DETACH PARTITION ... CONCURRENTLY",
		"alter table m detach partition m_2020 finalize":                        "ALTER TABLE ... DETACH PARTITION ... FINALIZE",
		"DISCARD ALL":                                                           "DISCARD ALL",
		"COMMIT PREPARED 'x'":                                                   "COMMIT PREPARED",
		"ROLLBACK PREPARED 'x'":                                                 "ROLLBACK PREPARED",
	}
	for stmt, want := range outside {
		if got := outsideTransaction(tokens(statementTokens(stmt, statementTokenLimit))); got != want {
			t.Errorf("%q: %q, want %q", stmt, got, want)
		}
	}
	for _, stmt := range []string{
		"CREATE INDEX i ON t (x)", "create index concurrently_named on t (x)", "ANALYZE t", "REINDEX INDEX i", "ALTER DATABASE app SET work_mem = '1MB'",
		"ALTER TABLE m DETACH PARTITION m_2020", "ALTER TABLE t ADD COLUMN concurrently int", "DISCARD PLANS", "SELECT 'VACUUM'",
		"-- VACUUM\nSELECT 1", "DO $$ BEGIN EXECUTE 'VACUUM'; END $$", "REFRESH MATERIALIZED VIEW CONCURRENTLY v", "COMMIT", "DROP INDEX i",
	} {
		if got := outsideTransaction(tokens(statementTokens(stmt, statementTokenLimit))); got != "" {
			t.Errorf("%q: %q, want it to run in a transaction", stmt, got)
		}
	}
	for stmt, want := range map[string]txKind{
		"BEGIN": txBegin, "begin work": txBegin, "BEGIN ISOLATION LEVEL SERIALIZABLE": txBegin, "START TRANSACTION": txBegin,
		"COMMIT": txCommit, "commit work": txCommit, "END": txCommit, "END TRANSACTION": txCommit, "COMMIT AND NO CHAIN": txCommit,
		"COMMIT AND CHAIN": txOther, "ROLLBACK": txOther, "ROLLBACK TO SAVEPOINT a": txOther, "ABORT": txOther, "SAVEPOINT a": txOther,
		"RELEASE SAVEPOINT a": txOther, "PREPARE TRANSACTION 'x'": txOther,
		"COMMIT PREPARED 'x'": txNone, "ROLLBACK PREPARED 'x'": txNone, "PREPARE q AS SELECT 1": txNone, "START_REPLICATION": txNone,
		"SELECT 'BEGIN'": txNone, "/* COMMIT */ SELECT 1": txNone, "DO $$BEGIN END$$": txNone,
	} {
		if got := transactionControl(tokens(statementTokens(stmt, statementTokenLimit))); got != want {
			t.Errorf("%q: %v, want %v", stmt, got, want)
		}
	}
}

// fsLoad loads files (path → body) with a forced or detected format.
func fsLoad(files map[string]string, opts *LoadOpts) (*Loaded, error) {
	return LoadAll(mapFS(files), opts)
}

func TestDetectFormat(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name  string
		files map[string]string
		want  Format
	}{
		{"tern", map[string]string{"001_a.sql": "select 1", "002_b.sql": "select 2", "notes.sql": "x", "README": "x"}, FormatTern},
		{"tern with markers only", map[string]string{"001_a.sql": "select 1;\n---- create above / drop below ----\nselect 2;"}, FormatTern},
		{"golang-migrate", map[string]string{"1_a.up.sql": "select 1", "1_a.down.sql": "select 2"}, FormatGolangMigrate},
		{"goose", map[string]string{"1_a.sql": "-- +goose Up\nselect 1;", "2_b.sql": "-- +goose up\nselect 2;", "helpers.go": "package x"}, FormatGoose},
		{"goose, annotation after blanks", map[string]string{"1_a.sql": "\n\n-- +goose Up\nselect 1;"}, FormatGoose},
		{"dbmate", map[string]string{"20240101000000_a.sql": "-- migrate:up\nselect 1;\n-- migrate:down\n", "1.sql": "--migrate:up\nselect 2;"}, FormatDbmate},
		{"sql-migrate", map[string]string{"1-a.sql": "-- +migrate Up\nselect 1;", "2_b.sql": "-- +migrate Down\nselect 2;"}, FormatSQLMigrate},
		{"flyway", map[string]string{"V1__a.sql": "select 1", "R__b.sql": "select 2", "flyway.conf": "x"}, FormatFlyway},
		{"flyway in sub-directories only", map[string]string{"v1/V1__a.sql": "select 1", "v2/V2__b.sql": "select 2"}, FormatFlyway},
	} {
		l, err := fsLoad(tt.files, nil)
		if err != nil || l.Format != tt.want {
			t.Errorf("%s: %v, want %s", tt.name, err, tt.want)
		}
	}
}

// TestDetectErrors: what cannot be told, or does not fit the format, is
// an error naming a file, with every file involved in the message.
func TestDetectErrors(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name     string
		files    map[string]string
		format   Format
		sentinel error
		file     string
		says     []string
	}{
		{"tern and goose", map[string]string{"001_a.sql": "select 1", "002_b.sql": "select 2", "003_c.sql": "-- +goose Up\nselect 3;"}, "",
			ErrMixedFormats, "003_c.sql", []string{"tern (001_a.sql, 002_b.sql)", "goose (003_c.sql)"}},
		{"a tie names the later file", map[string]string{"001_first.sql": "select 1", "002_fuzz.sql": "-- migrate:up\nselect 2;"}, "",
			ErrMixedFormats, "002_fuzz.sql", []string{"tern (001_first.sql)", "dbmate (002_fuzz.sql)"}},
		{"golang-migrate and Flyway", map[string]string{"1_a.up.sql": "x", "2_b.up.sql": "x", "V3__c.sql": "x"}, "",
			ErrMixedFormats, "V3__c.sql", []string{"golang-migrate (1_a.up.sql, 2_b.up.sql)", "flyway (V3__c.sql)"}},
		{"one file, two tools", map[string]string{"1_a.sql": "-- +goose Up\n-- +migrate Up\nselect 1;"}, "",
			ErrMixedFormats, "1_a.sql", []string{"both goose and sql-migrate"}},
		{"many files listed with a count", map[string]string{"1_a.sql": "x", "2_a.sql": "x", "3_a.sql": "x", "4_a.sql": "x", "5_a.sql": "x", "6_a.sql": "x", "7_a.sql": "x", "8_b.sql": "-- +goose Up\n"}, "",
			ErrMixedFormats, "8_b.sql", []string{"tern (1_a.sql, 2_a.sql, 3_a.sql, 4_a.sql, 5_a.sql and 2 more)"}},
		{"tern ignored 000001.sql", map[string]string{"001_a.sql": "select 1", "000002.sql": "select 2", "3-c.sql": "x"}, "",
			ErrUnmatchedFile, "000002.sql", []string{"(tern: NNN_name.sql", "000002.sql, 3-c.sql"}},
		{"tern upper-case suffix", map[string]string{"001_a.sql": "select 1", "002_b.SQL": "select 2"}, "",
			ErrUnmatchedFile, "002_b.SQL", nil},
		{"golang-migrate and a plain file", map[string]string{"1_a.up.sql": "x", "2_b.sql": "x"}, FormatGolangMigrate,
			ErrUnmatchedFile, "2_b.sql", []string{"golang-migrate: VERSION_title.up.sql"}},
		{"no format at all", map[string]string{"000001.sql": "select 1", "V1_a.sql": "x"}, "",
			ErrUnmatchedFile, "000001.sql", []string{"000001.sql, V1_a.sql match no rule of any format"}},
		{"flyway: single underscore", map[string]string{"V1__a.sql": "x", "V2_b.sql": "x", "v3__c.sql": "x"}, "",
			ErrUnmatchedFile, "V2_b.sql", []string{"V2_b.sql, v3__c.sql"}},
		{"goose: file without a version", map[string]string{"1_a.sql": "-- +goose Up\n", "1a_b.sql": "-- +goose Up\n"}, FormatGoose,
			ErrUnmatchedFile, "1a_b.sql", nil},
		{"nothing", map[string]string{"README.md": "x", "schema.sql": "x"}, "", ErrNoMigrations, "", nil},
		{"migrations one level down", map[string]string{"README.md": "x", "db/migrations/001_a.sql": "select 1", "db/migrations/002_b.sql": "select 2"}, "",
			ErrUnmatchedFile, "", []string{"db/migrations/001_a.sql, db/migrations/002_b.sql, in db/migrations, not in the directory itself", "(pgmig --dir db/migrations)"}},
		{"forced format, nothing of it", map[string]string{"001_a.sql": "select 1"}, FormatFlyway, ErrUnmatchedFile, "001_a.sql", nil},
		{"unknown format", map[string]string{"001_a.sql": "select 1"}, "liquibase", ErrUnknownFormat, "", []string{`"liquibase" (known: tern, golang-migrate, goose, dbmate, sql-migrate, flyway)`}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := fsLoad(tt.files, &LoadOpts{Format: tt.format})
			if !errors.Is(err, tt.sentinel) {
				t.Fatalf("err = %v, want %v", err, tt.sentinel)
			}
			var le *LoadError
			if tt.file != "" && (!errors.As(err, &le) || le.File != tt.file || !strings.HasPrefix(err.Error(), tt.file+": ")) {
				t.Fatalf("err = %v, want a *LoadError for %s", err, tt.file)
			}
			for _, s := range tt.says {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("%q does not say %q", err, s)
				}
			}
		})
	}
}

// TestFormatErrors: each loader's refusals name the file and, where there
// is one, the line.
func TestFormatErrors(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name     string
		format   Format
		files    map[string]string
		sentinel error
		file     string
		line     int
		says     string
	}{
		// golang-migrate
		{"gm: COMMIT in the middle", FormatGolangMigrate, map[string]string{"1_a.up.sql": "BEGIN;\nselect 1;\nCOMMIT;\nBEGIN;\nselect 2;\nCOMMIT;"},
			ErrTransactionControl, "1_a.up.sql", 3, "COMMIT inside the file"},
		{"gm: BEGIN without COMMIT", FormatGolangMigrate, map[string]string{"1_a.up.sql": "-- x\nBEGIN;\nselect 1;\n"},
			ErrTransactionControl, "1_a.up.sql", 2, "BEGIN opens a transaction that no COMMIT or END"},
		{"gm: ROLLBACK", FormatGolangMigrate, map[string]string{"1_a.up.sql": "select 1;\n  ROLLBACK;"},
			ErrTransactionControl, "1_a.up.sql", 2, "ROLLBACK inside the file"},
		{"gm: SAVEPOINT", FormatGolangMigrate, map[string]string{"1_a.up.sql": "BEGIN;\nSAVEPOINT a;\nselect 1;\nCOMMIT;"},
			ErrTransactionControl, "1_a.up.sql", 2, "SAVEPOINT inside"},
		{"gm: in the down file", FormatGolangMigrate, map[string]string{"1_a.up.sql": "select 1;", "1_a.down.sql": "select 1;\nCOMMIT AND CHAIN;\nselect 2;"},
			ErrTransactionControl, "1_a.down.sql", 2, "COMMIT AND inside"},
		{"gm: down without up", FormatGolangMigrate, map[string]string{"1_a.up.sql": "select 1;", "2_b.down.sql": "select 1;"},
			ErrMissingVersion, "2_b.down.sql", 0, "without an up file for version 2"},
		{"gm: duplicate", FormatGolangMigrate, map[string]string{"1_a.up.sql": "select 1;", "01_b.up.sql": "select 2;"},
			ErrDuplicateVersion, "1_a.up.sql", 0, "also in 01_b.up.sql"},
		{"gm: version 0", FormatGolangMigrate, map[string]string{"0_a.up.sql": "select 1;"}, ErrInvalidFileName, "0_a.up.sql", 0, "start at 1"},
		{"gm: version too large", FormatGolangMigrate, map[string]string{"9223372036854775808_a.up.sql": "select 1;"},
			ErrInvalidFileName, "9223372036854775808_a.up.sql", 0, "at most 9223372036854775807"},
		// goose
		{"goose: no Up", FormatGoose, map[string]string{"1_a.sql": "select 1;"}, ErrMarker, "1_a.sql", 1, "SQL before `-- +goose Up`"},
		{"goose: only comments", FormatGoose, map[string]string{"1_a.sql": "-- nothing"}, ErrMarker, "1_a.sql", 0, "no `-- +goose Up`"},
		{"goose: two Up", FormatGoose, map[string]string{"1_a.sql": "-- +goose Up\nselect 1;\n-- +goose Up\n"}, ErrMarker, "1_a.sql", 3, "a second `-- +goose Up` (the first is at line 1)"},
		{"goose: Down first", FormatGoose, map[string]string{"1_a.sql": "-- +goose Down\nselect 1;\n-- +goose Up\n"}, ErrMarker, "1_a.sql", 1, "before `-- +goose Up`"},
		{"goose: two Down", FormatGoose, map[string]string{"1_a.sql": "-- +goose Up\n-- +goose Down\n-- +goose Down\n"}, ErrMarker, "1_a.sql", 3, "a second `-- +goose Down`"},
		{"goose: open block", FormatGoose, map[string]string{"1_a.sql": "-- +goose Up\n-- +goose StatementBegin\nselect 1;\n"}, ErrMarker, "1_a.sql", 2, "without a StatementEnd"},
		{"goose: Down in a block", FormatGoose, map[string]string{"1_a.sql": "-- +goose Up\n-- +goose StatementBegin\nselect 1;\n-- +goose Down\n"}, ErrMarker, "1_a.sql", 4, "inside the StatementBegin block of line 2"},
		{"goose: End without Begin", FormatGoose, map[string]string{"1_a.sql": "-- +goose Up\nselect 1;\n-- +goose StatementEnd\n"}, ErrMarker, "1_a.sql", 3, "without a StatementBegin"},
		{"goose: unknown annotation", FormatGoose, map[string]string{"1_a.sql": "-- +goose Up\n-- +goose NO TX\n"}, ErrMarker, "1_a.sql", 2, `unknown goose annotation "NO TX"`},
		{"goose: indented annotation", FormatGoose, map[string]string{"1_a.sql": "-- +goose Up\n  -- +goose Down\n"}, ErrMarker, "1_a.sql", 2, "beginning of the line"},
		{"goose: ENVSUB required variable", FormatGoose, map[string]string{"1_a.sql": "-- +goose ENVSUB ON\n-- +goose Up\nselect '${REGION?set REGION}';\n"}, ErrSubstitution, "1_a.sql", 3, "$REGION: set REGION"},
		{"goose: ENVSUB $1", FormatGoose, map[string]string{"1_a.sql": "-- +goose Up\n-- +goose ENVSUB ON\nprepare q as select $1;\n"}, ErrSubstitution, "1_a.sql", 3, "expected a variable name after $ at column 22, got '1'"},
		{"goose: Go migration", FormatGoose, map[string]string{"1_a.sql": "-- +goose Up\n", "2_b.go": "package x"}, ErrUnsupported, "2_b.go", 0, "goose Go migration"},
		{"goose: version 0", FormatGoose, map[string]string{"0_a.sql": "-- +goose Up\n"}, ErrInvalidFileName, "0_a.sql", 0, "start at 1"},
		// dbmate
		{"dbmate: no up", FormatDbmate, map[string]string{"1_a.sql": "select 1;"}, ErrMarker, "1_a.sql", 0, "no `-- migrate:up`"},
		{"dbmate: SQL before up", FormatDbmate, map[string]string{"1_a.sql": "-- x\n\ncreate type t;\n-- migrate:up\nselect 1;"}, ErrMarker, "1_a.sql", 3, "SQL before `-- migrate:up`"},
		{"dbmate: two downs", FormatDbmate, map[string]string{"1_a.sql": "-- migrate:up\nselect 1;\n-- migrate:down\nselect 2;\n-- migrate:down\n"}, ErrMarker, "1_a.sql", 5, "a second `-- migrate:down` in the section of line 1"},
		{"dbmate: mixed sections", FormatDbmate, map[string]string{"1_a.sql": "-- migrate:up\nselect 1;\n-- migrate:down\n-- migrate:up transaction:false\nvacuum;\n"}, ErrMarker, "1_a.sql", 4, "differs from the section of line 1"},
		{"dbmate: duplicate", FormatDbmate, map[string]string{"1_a.sql": "-- migrate:up\n", "001_b.sql": "-- migrate:up\n"}, ErrDuplicateVersion, "1_a.sql", 0, "also in 001_b.sql"},
		// sql-migrate
		{"sql-migrate: no number", FormatSQLMigrate, map[string]string{"1-a.sql": "-- +migrate Up\n", "init.sql": "-- +migrate Up\n"}, ErrInvalidFileName, "init.sql", 0, "does not start with a version number"},
		{"sql-migrate: no markers", FormatSQLMigrate, map[string]string{"1-a.sql": "select 1;"}, ErrMarker, "1-a.sql", 0, "no `-- +migrate Up`"},
		{"sql-migrate: open block", FormatSQLMigrate, map[string]string{"1-a.sql": "-- +migrate Up\n-- +migrate StatementBegin\nselect 1;"}, ErrMarker, "1-a.sql", 2, "without a StatementEnd"},
		{"sql-migrate: empty command", FormatSQLMigrate, map[string]string{"1-a.sql": "-- +migrate Up\n-- +migrate \n"}, ErrMarker, "1-a.sql", 2, "incomplete"},
		{"sql-migrate: same number", FormatSQLMigrate, map[string]string{"1-a.sql": "-- +migrate Up\n", "1-b.sql": "-- +migrate Up\n"}, ErrDuplicateVersion, "1-b.sql", 0, "also in 1-a.sql"},
		// Flyway
		{"flyway: 1.0 and 1", FormatFlyway, map[string]string{"V1__a.sql": "x", "V1.0__b.sql": "x"}, ErrDuplicateVersion, "V1__a.sql", 0, "1: also in V1.0__b.sql (Flyway compares versions as numbers"},
		{"flyway: too many parts", FormatFlyway, map[string]string{"V1.2.3.4__a.sql": "x"}, ErrInvalidFileName, "V1.2.3.4__a.sql", 0, "at most three parts"},
		{"flyway: part too large", FormatFlyway, map[string]string{"V1.100__a.sql": "x"}, ErrInvalidFileName, "V1.100__a.sql", 0, "part2 and part3 at most 99"},
		{"flyway: not a number", FormatFlyway, map[string]string{"V1.a__a.sql": "x"}, ErrInvalidFileName, "V1.a__a.sql", 0, "numbers separated by . or _"},
		{"flyway: no version", FormatFlyway, map[string]string{"V1__a.sql": "x", "V__b.sql": "x"}, ErrInvalidFileName, "V__b.sql", 0, "no version"},
		{"flyway: undo without V", FormatFlyway, map[string]string{"V1__a.sql": "x", "U2__b.sql": "x"}, ErrMissingVersion, "U2__b.sql", 0, "has no V2__ migration"},
		{"flyway: two repeatables", FormatFlyway, map[string]string{"R__a.sql": "x", "sub/R__a.sql": "x"}, ErrDuplicateVersion, "sub/R__a.sql", 0, `a second repeatable migration "a"`},
		{"flyway: placeholder without value", FormatFlyway, map[string]string{"V1__a.sql": "select 1;\nselect '${missing}';"}, ErrSubstitution, "V1__a.sql", 2, "no value for the Flyway placeholder ${missing}"},
		{"flyway: connection placeholder", FormatFlyway, map[string]string{"V1__a.sql": "set search_path = ${flyway:defaultSchema};"}, ErrSubstitution, "V1__a.sql", 1, "Flyway fills ${flyway:defaultSchema} from the connection"},
		{"flyway: unterminated placeholder", FormatFlyway, map[string]string{"V1__a.sql": "\n\nselect '${oops';"}, ErrSubstitution, "V1__a.sql", 3, "without a closing }"},
		{"flyway: callback", FormatFlyway, map[string]string{"V1__a.sql": "x", "afterMigrate.sql": "grant select on all tables in schema public to reader;"}, ErrUnsupported, "afterMigrate.sql", 0, "callback"},
		{"flyway: COPY FROM STDIN", FormatFlyway, map[string]string{"V1__a.sql": "create table t (x int);\nCOPY t (x) FROM stdin;\n1\n\\.\n"}, ErrUnsupported, "V1__a.sql", 2, "COPY ... FROM STDIN"},
		{"flyway: shouldExecute", FormatFlyway, map[string]string{"V1__a.sql": "x", "V1__a.sql.conf": "shouldExecute=${env}==prod"}, ErrUnsupported, "V1__a.sql.conf", 1, "shouldExecute"},
		{"flyway: unknown conf key", FormatFlyway, map[string]string{"V1__a.sql": "x", "V1__a.sql.conf": "# x\nexecuteInTransactions=false"}, ErrMarker, "V1__a.sql.conf", 2, `unknown script configuration "executeInTransactions"`},
		{"flyway: conf encoding", FormatFlyway, map[string]string{"V1__a.sql": "x", "V1__a.sql.conf": "encoding=ISO-8859-1"}, ErrUnsupported, "V1__a.sql.conf", 1, "encoding ISO-8859-1"},
		{"flyway: NUL from a placeholder", FormatFlyway, map[string]string{"V1__a.sql": "select '${nul}';"}, ErrInvalidText, "V1__a.sql", 0, "placeholders replaced"},
		// every format: text PostgreSQL cannot store
		{"invalid UTF-8", FormatGoose, map[string]string{"1_a.sql": "-- +goose Up\nselect 'gr\xfc';"}, ErrInvalidText, "1_a.sql", 0, "line 2, column 11"},
		{"NUL after a BOM", FormatFlyway, map[string]string{"V1__a.sql": "\ufeffselect 1;\x00"}, ErrInvalidText, "V1__a.sql", 0, "line 1, column 10"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := fsLoad(tt.files, &LoadOpts{Format: tt.format, Data: map[string]any{"nul": "\x00"}})
			if !errors.Is(err, tt.sentinel) {
				t.Fatalf("err = %v, want %v", err, tt.sentinel)
			}
			var le *LoadError
			if !errors.As(err, &le) || le.File != tt.file || !strings.HasPrefix(err.Error(), tt.file+": ") {
				t.Fatalf("err = %v, want a *LoadError for %s", err, tt.file)
			}
			var line *LineError
			if got := errors.As(err, &line); got != (tt.line > 0) || got && line.Line != tt.line {
				t.Fatalf("err = %v, want line %d", err, tt.line)
			}
			if !strings.Contains(err.Error(), tt.says) {
				t.Errorf("%q does not say %q", err, tt.says)
			}
		})
	}
}

// TestFormatLocate: an error position maps to the file's line and column,
// in characters, past everything the loaders leave out or substitute.
func TestFormatLocate(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name      string
		format    Format
		file      string
		body      string
		env       map[string]string
		needle    string // the error is at its first occurrence in the SQL
		line, col int
		text      string
		expanded  string // the expanded line, when the position is in substituted text
	}{
		{"gm: after a stripped BEGIN, CRLF, BOM", FormatGolangMigrate, "1_a.up.sql", "\ufeffBEGIN;\r\n\r\nCREATE TABLE ü (x int);\r\nSELEC 1;\r\nCOMMIT;\r\n", nil,
			"SELEC", 4, 1, "SELEC 1;", ""},
		{"gm: same line as BEGIN", FormatGolangMigrate, "1_a.up.sql", "BEGIN; SELEC 1; COMMIT;", nil, "SELEC", 1, 8, "BEGIN; SELEC 1; COMMIT;", ""},
		{"goose: past annotations", FormatGoose, "1_a.sql", "-- +goose NO TRANSACTION\n-- +goose Up\n-- +goose StatementBegin\nDO $$ BEGIN PERFORM 1; END $$;\n-- +goose StatementEnd\n  créate index concurrently i on t (x);\n", nil,
			"index", 6, 10, "  créate index concurrently i on t (x);", ""},
		{"goose: in ENVSUB text", FormatGoose, "1_a.sql", "-- +goose Up\n-- +goose ENVSUB ON\ncreate table ${PREFIX}t (id int, x ${TYPE});\n", map[string]string{"PREFIX": "app_", "TYPE": "nosuchtype"},
			"nosuchtype", 3, 36, "create table ${PREFIX}t (id int, x ${TYPE});", "create table app_t (id int, x nosuchtype);"},
		{"goose: literal text after an expansion", FormatGoose, "1_a.sql", "-- +goose Up\n-- +goose ENVSUB ON\nselect '${A}' fromm t;\n", map[string]string{"A": "ααα"},
			"fromm", 3, 15, "select '${A}' fromm t;", ""},
		{"dbmate: second section", FormatDbmate, "1_a.sql", "-- migrate:up\nselect 1;\n-- migrate:down\nselect 2;\n-- migrate:up\nselec 3;\n", nil,
			"selec 3", 6, 1, "selec 3;", ""},
		{"sql-migrate: CRLF", FormatSQLMigrate, "1-a.sql", "-- +migrate Up\r\n-- +migrate StatementBegin\r\nselect 1;\r\n-- +migrate StatementEnd\r\nselect fromm;\r\n", nil,
			"fromm", 5, 8, "select fromm;", ""},
		{"flyway: after a placeholder", FormatFlyway, "V1__a.sql", "comment on table t is '${owner}';\nselect fromm;\n", nil,
			"fromm", 2, 8, "select fromm;", ""},
		{"flyway: in a placeholder", FormatFlyway, "V1__a.sql", "create table t (x ${owner});\n", nil,
			"logistics", 1, 19, "create table t (x ${owner});", "create table t (x logistics);"},
		{"tern: BOM and CRLF", FormatTern, "001_a.sql", "\ufeffselect 1;\r\nselec 2;\r\n", nil, "selec 2", 2, 1, "selec 2;", ""},
		{"tern: BOM, first line", FormatTern, "001_a.sql", "\ufeffselec 2;", nil, "selec", 1, 1, "selec 2;", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			l, err := fsLoad(map[string]string{tt.file: tt.body}, &LoadOpts{Format: tt.format, Env: tt.env, Data: map[string]any{"Owner": "logistics"}})
			if err != nil {
				t.Fatal(err)
			}
			m := l.Migrations[0]
			loc, ok := m.Locate(position(t, m.SQL, tt.needle))
			if !ok || loc.File != tt.file || loc.Line != tt.line || loc.Column != tt.col || loc.Text != tt.text ||
				loc.Expanded != (tt.expanded != "") || loc.ExpandedText != tt.expanded {
				t.Errorf("SQL %q: got %+v (%v), want %d:%d %q expanded %q", m.SQL, loc, ok, tt.line, tt.col, tt.text, tt.expanded)
			}
			if tt.format != FormatTern {
				checkLocateAll(t, m, strings.TrimPrefix(tt.body, byteOrderMark))
			}
		})
	}
}

// TestTernByteOrderMarkAndCRLF: issue 9's two inputs in tern's format.
func TestTernByteOrderMarkAndCRLF(t *testing.T) {
	t.Parallel()
	ms, err := Load(mapFS(map[string]string{
		"001_bom.sql":    "\ufeffcreate table a (id int);\r\n---- create above / drop below ----\r\ndrop table a;\r\n",
		"002_index.sql":  "---- tern: disable-tx ----\r\ncreate index concurrently a_id on a (id);\r\n",
		"003_enum.sql":   "alter type e add value 'x';\r\n---- pgmig: commit-after ----\r\n",
		"004_inline.sql": "select 1; ---- tern: disable-tx ----\r\n",
	}), nil)
	if err != nil {
		t.Fatal(err)
	}
	if ms[0].SQL != "create table a (id int);" || ms[0].Down != "drop table a;" || ms[0].Checksum != checksum("create table a (id int);") {
		t.Errorf("BOM: %q %q", ms[0].SQL, ms[0].Down)
	}
	if ms[1].Transactional || !ms[2].CommitAfter || !ms[3].Transactional {
		t.Errorf("CRLF markers: disable-tx %v, commit-after %v, inline %v", !ms[1].Transactional, ms[2].CommitAfter, !ms[3].Transactional)
	}
	// Through tern's template path too.
	ms, err = Load(mapFS(map[string]string{"001_bom.sql": "\ufeffselect '{{ .x }}';", "002_index.sql": "---- tern: disable-tx ----\r\nselect 1;"}), &LoadOpts{Data: map[string]any{"x": "y"}})
	if err != nil || ms[0].SQL != "select 'y';" || ms[1].Transactional {
		t.Errorf("templates: %v %q %v", err, ms[0].SQL, ms[1].Transactional)
	}
}

// TestGooseEnvsub: goose's substitution, with the environment as data.
func TestGooseEnvsub(t *testing.T) {
	t.Parallel()
	env := map[string]string{"SET": "v", "EMPTY": "", "LONG": "abcdef", "UNI": "ünï"}
	for in, want := range map[string]string{
		"$SET ${SET}": "v v",
		"${UNSET}x":   "x",
		"${UNSET:-def} ${EMPTY:-def} ${SET:-def}":                             "def def v",
		"${UNSET-def} ${EMPTY-def}":                                           "def ",
		"${UNSET:-${SET}-${UNSET2:-z}}":                                       "v-z",
		"${LONG:2} ${LONG:2:3} ${LONG: -2} ${LONG:1:-2} ${LONG:9} ${LONG:-2}": "cdef cde ef bcd  abcdef",
		"$$ \\$SET \\\\ $(date) end$":                                         "$ $SET \\\\ $(date) end$",
		"cost $5":                                                             "",
		"${SET?boom}":                                                         "v",
		"${SET_1}a":                                                           "a",
		"${UNI}":                                                              "ünï",
	} {
		b := sqlBuilder{text: in}
		err := envsubLine(&b, fileLine{num: 1, start: 0, end: len(in), next: len(in), text: in}, env)
		got := b.b.String()
		if want == "" {
			if err == nil {
				t.Errorf("%q: %q, want an error", in, got)
			}
			continue
		}
		if err != nil || got != want {
			t.Errorf("%q: %q %v, want %q", in, got, err, want)
		}
	}
	for in, msg := range map[string]string{
		"${UNSET?boom}": "$UNSET: boom",
		"${UNSET?}":     "$UNSET: not set",
		"${SET:?x}":     "the offset is not a number",
		"${SET":         "expected an operator (:-, -, ?, :) in ${SET...}, got the end of the line",
		"${SET:-x":      "${SET...} is not closed with }, got the end of the line",
		"${SET!}":       "expected an operator",
		"${1}":          "expected a variable name",
		"${SET:1:x}":    "the length is not a number",
	} {
		b := sqlBuilder{text: in}
		err := envsubLine(&b, fileLine{num: 1, end: len(in), next: len(in), text: in}, env)
		if err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("%q: %v, want %q", in, err, msg)
		}
	}
}

// TestGooseComments: ENVSUB leaves alone the comment lines goose drops (a
// required variable named in one is no error), and expands the ones inside
// a statement, as goose does.
func TestGooseComments(t *testing.T) {
	t.Parallel()
	l, err := fsLoad(map[string]string{"1_a.sql": "-- +goose ENVSUB ON\n-- +goose Up\n-- needs ${X?unset}\nselect 1 -- ${Y}\n-- ${Y}\n;\n"},
		&LoadOpts{Env: map[string]string{"Y": "y"}})
	if err != nil {
		t.Fatal(err)
	}
	if want := "-- needs ${X?unset}\nselect 1 -- y\n-- y\n;"; l.Migrations[0].SQL != want {
		t.Errorf("%q, want %q", l.Migrations[0].SQL, want)
	}
}

// TestGolangMigrateWrappers: the forms of a BEGIN ... COMMIT wrapper that
// are left out, and what stays.
func TestGolangMigrateWrappers(t *testing.T) {
	t.Parallel()
	for body, want := range map[string]string{
		"BEGIN;\nselect 1;\nCOMMIT;\n": "select 1;",
		"begin transaction isolation level read committed; select 1; end transaction;": "select 1;",
		"-- head\nSTART TRANSACTION;\nselect 1;\n-- tail\nCOMMIT WORK;":                "-- head\nselect 1;\n-- tail",
		"select 1;\nCOMMIT;": "select 1;",
		"BEGIN;\nCOMMIT;":    emptySQL,
		"COMMIT;":            emptySQL,
		"   \n\t":            emptySQL,
		"BEGIN;\nDO $$ BEGIN COMMIT; END $$;\nCOMMIT;":                                                   "DO $$ BEGIN COMMIT; END $$;",
		"BEGIN;\ncreate function f() returns int language sql\nbegin atomic\n  select 1;\nend;\nCOMMIT;": "create function f() returns int language sql\nbegin atomic\n  select 1;\nend;",
		"create procedure p() begin atomic select 1; end;\nEND;":                                         "create procedure p() begin atomic select 1; end;",
		"select 'BEGIN;'; select $$COMMIT;$$;":                                                           "select 'BEGIN;'; select $$COMMIT;$$;",
		"BEGIN; /* c */ COMMIT PREPARED 'x'; COMMIT;":                                                    "/* c */ COMMIT PREPARED 'x';",
	} {
		l, err := fsLoad(map[string]string{"1_a.up.sql": body}, nil)
		if err != nil {
			t.Errorf("%q: %v", body, err)
			continue
		}
		if m := l.Migrations[0]; m.SQL != want {
			t.Errorf("%q: %q, want %q", body, m.SQL, want)
		}
	}
	// A statement that cannot run in a transaction makes the whole file
	// non-transactional, wherever it is.
	for body, tx := range map[string]bool{
		"create table t (x int);\ncreate index concurrently i on t (x);": false,
		"BEGIN;\nVACUUM t;\nCOMMIT;":                                     false,
		"create index i on t (x);":                                       true,
		"select 'create index concurrently';":                            true,
		"COMMIT PREPARED 'x';":                                           false,
	} {
		l, err := fsLoad(map[string]string{"1_a.up.sql": body}, nil)
		if err != nil || l.Migrations[0].Transactional != tx {
			t.Errorf("%q: %v, want transactional %v", body, err, tx)
		}
	}
}

// TestDbmateOptions: transaction:false on the up marker, as dbmate reads
// it.
func TestDbmateOptions(t *testing.T) {
	t.Parallel()
	for marker, tx := range map[string]bool{
		"-- migrate:up":                                    true,
		"-- migrate:up transaction:false":                  false,
		"--migrate:up   transaction:false  foo:bar":        false,
		"-- migrate:up transaction:true":                   true,
		"-- migrate:up transaction:false transaction:true": true,
		"-- migrate:up transaction:FALSE":                  true,
		"-- migrate:up\r":                                  true,
		"-- migrate:up transaction:false\r":                false,
	} {
		l, err := fsLoad(map[string]string{"1_a.sql": marker + "\nselect 1;\n-- migrate:down\nselect 2;\n"}, nil)
		if err != nil || l.Format != FormatDbmate || l.Migrations[0].Transactional != tx || l.Migrations[0].SQL != "select 1;" {
			t.Errorf("%q: %v, want transactional %v", marker, err, tx)
		}
	}
}

// TestRepeatableOnly: a directory of repeatable migrations only (Flyway's
// R__ files, a repeatable/ sub-directory) is valid: Load returns them.
func TestRepeatableOnly(t *testing.T) {
	t.Parallel()
	for _, files := range []map[string]string{
		{"R__views.sql": "create view v as select 1;"},
		{"repeatable/views.sql": "create view v as select 1;"},
	} {
		l, err := fsLoad(files, nil)
		if err != nil || len(l.Migrations) != 0 || len(l.Repeatable) != 1 {
			t.Fatalf("%v: %v %+v", files, err, l)
		}
		ms, err := Load(mapFS(files), nil)
		if err != nil || len(ms) != 1 || !ms[0].Repeatable || ms[0].Name != "views" {
			t.Errorf("Load %v: %v %+v", files, err, ms)
		}
	}
	if _, err := Load(mapFS(map[string]string{"notes.txt": "x"}), nil); !errors.Is(err, ErrNoMigrations) {
		t.Errorf("Load of nothing: %v", err)
	}
}

// TestFormatNames: the Name of a migration in each format.
func TestFormatNames(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		format     Format
		file, body string
		version    int64
		name       string
	}{
		{FormatGolangMigrate, "1_.up.sql", "select 1;", 1, "1_.up"},
		{FormatGolangMigrate, "2_a.b.up.sql", "select 1;", 2, "a.b"},
		{FormatGoose, "3_add_x_y.sql", "-- +goose Up\n", 3, "add_x_y"},
		{FormatDbmate, "4.sql", "-- migrate:up\n", 4, "4"},
		{FormatDbmate, "20240101_b.sql", "-- migrate:up\n", 20240101, "b"},
		{FormatSQLMigrate, "5-c.sql", "-- +migrate Up\n", 5, "c"},
		{FormatSQLMigrate, "6d.sql", "-- +migrate Up\n", 6, "d"},
		{FormatFlyway, "V7__.sql", "select 1;", 70000, "V7__"},
		{FormatFlyway, "V8__Add_Users.SQL", "select 1;", 80000, "Add_Users"},
	} {
		l, err := fsLoad(map[string]string{tt.file: tt.body}, &LoadOpts{Format: tt.format})
		if err != nil || len(l.Migrations) != 1 || l.Migrations[0].Version != tt.version || l.Migrations[0].Name != tt.name {
			t.Errorf("%s: %v %+v, want %d %q", tt.file, err, l, tt.version, tt.name)
		}
	}
}

// TestFormatLargeDirectory: many files of each format read with several
// goroutines give what one reader gives, and what os.DirFS gives.
func TestFormatLargeDirectory(t *testing.T) {
	t.Parallel()
	body := map[Format]func(i int) (string, string){
		FormatGolangMigrate: func(i int) (string, string) {
			return fmt.Sprintf("%d_m.up.sql", 20240000000000+i*7), fmt.Sprintf("BEGIN;\nselect %d;\nCOMMIT;\n", i)
		},
		FormatGoose: func(i int) (string, string) {
			return fmt.Sprintf("%05d_m.sql", i+1), fmt.Sprintf("-- +goose Up\nselect %d;\n", i)
		},
		FormatFlyway: func(i int) (string, string) {
			return fmt.Sprintf("V%d.%d__m.sql", i/50+1, i%50), fmt.Sprintf("select %d;", i)
		},
	}
	for f, gen := range body {
		dir := t.TempDir()
		for i := range 600 {
			name, text := gen(i)
			if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		a, err := LoadDirAll(dir, nil)
		if err != nil || a.Format != f || len(a.Migrations) != 600 {
			t.Fatalf("%s: %v", f, err)
		}
		b, err := LoadAll(os.DirFS(dir), nil)
		if err != nil || !reflect.DeepEqual(a, b) {
			t.Fatalf("%s: LoadDir and os.DirFS differ: %v", f, err)
		}
		for i := 1; i < len(a.Migrations); i++ {
			if a.Migrations[i-1].Version >= a.Migrations[i].Version {
				t.Fatalf("%s: not in version order at %d", f, i)
			}
		}
	}
}

// The characters of the fixtures' SQL are all valid UTF-8 (the loader
// checks the files; this checks the assembly, which must not cut one).
func TestFixtureSQLIsText(t *testing.T) {
	t.Parallel()
	for _, f := range formats {
		l, err := LoadDirAll(filepath.Join("testdata", "formats", string(f)), fixtureOpts)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range l.Migrations {
			if !utf8.ValidString(m.SQL) || !utf8.ValidString(m.Down) {
				t.Errorf("%s: invalid UTF-8", m.File)
			}
		}
	}
}
