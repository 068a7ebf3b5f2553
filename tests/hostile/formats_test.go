package hostile_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgmig/pgmig/tests/faults/workload"
	"github.com/pgmig/pgmig/tests/pgtest"
)

// TestOtherFormatsBrokenFiles: `pgmig push` on directories in the other
// tools' formats whose files try to escape pgmig's transaction, mix
// formats, or would be skipped: each fails naming the file (and the line
// where the loader refuses it), and nothing is applied, not even the good
// migrations before it.
func TestOtherFormatsBrokenFiles(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		files map[string]string
		says  []string
	}{
		{"golang-migrate: two transactions in one file", map[string]string{
			"1_good.up.sql": "create table good_one (id int);",
			"2_two.up.sql":  "BEGIN;\ncreate table b (id int);\nCOMMIT;\nBEGIN;\ncreate table c (id int);\nCOMMIT;\n",
		}, []string{"2_two.up.sql", "line 3", "COMMIT"}},
		{"golang-migrate: ROLLBACK at the end", map[string]string{
			"1_good.up.sql": "create table good_one (id int);",
			"2_undo.up.sql": "create table b (id int);\nROLLBACK;\n",
		}, []string{"2_undo.up.sql", "line 2", "ROLLBACK"}},
		{"golang-migrate: BEGIN never committed", map[string]string{
			"1_good.up.sql": "create table good_one (id int);",
			"2_open.up.sql": "BEGIN;\ncreate table b (id int);\n",
		}, []string{"2_open.up.sql", "line 1"}},
		{"goose: COMMIT inside a statement block", map[string]string{
			"1_good.sql":   "-- +goose Up\ncreate table good_one (id int);\n",
			"2_commit.sql": "-- +goose Up\n-- +goose StatementBegin\ncreate table b (id int); COMMIT;\n-- +goose StatementEnd\n",
		}, []string{"failed 2_commit.sql", "migration 2 (commit) contains transaction control"}},
		{"sql-migrate: an unclosed statement block", map[string]string{
			"1-good.sql":   "-- +migrate Up\ncreate table good_one (id int);\n",
			"2-broken.sql": "-- +migrate Up notransaction\n-- +migrate StatementBegin\ncreate index concurrently i on good_one (id);\n",
		}, []string{"2-broken.sql", "line 2", "`-- +migrate StatementBegin` without a StatementEnd"}},
		{"mixed formats", map[string]string{
			"001_good.sql": "create table good_one (id int);",
			"002_b.sql":    "-- +goose Up\ncreate table b (id int);\n",
		}, []string{"002_b.sql", "mixes migration formats", "tern (001_good.sql)", "goose (002_b.sql)"}},
		{"a file tern would skip", map[string]string{
			"001_good.sql": "create table good_one (id int);",
			"000002.sql":   "create table b (id int);",
		}, []string{"000002.sql", "look like migrations"}},
		{"dbmate: SQL outside a section", map[string]string{
			"1_good.sql": "-- migrate:up\ncreate table good_one (id int);\n-- migrate:down\n",
			"2_b.sql":    "create table sneaky (id int);\n-- migrate:up\ncreate table b (id int);\n",
		}, []string{"2_b.sql", "line 1", "SQL before `-- migrate:up`"}},
		{"flyway: a placeholder without a value", map[string]string{
			"V1__good.sql": "create table good_one (id int);",
			"V2__b.sql":    "create table b (id int);\ngrant select on b to ${reader};\n",
		}, []string{"V2__b.sql", "line 2", "${reader}"}},
		{"flyway: 1.0 is 1", map[string]string{
			"V1__good.sql":  "create table good_one (id int);",
			"V1.0__dup.sql": "create table b (id int);",
		}, []string{"V1__good.sql", "also in V1.0__dup.sql"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			db := pgtest.NewDB(t)
			dir := t.TempDir()
			for name, body := range tc.files {
				write(t, dir, name, body)
			}
			r := workload.Run(t, cli, []string{"DATABASE_URL=" + db.URL}, "push", "--dir", dir)
			if r.Code == 0 {
				t.Fatalf("push succeeded: %v", r)
			}
			for _, s := range tc.says {
				// (A migration the engine refuses is named on stdout.)
				if !strings.Contains(r.Stdout+r.Stderr, s) {
					t.Errorf("the error does not say %q:\n%v", s, r)
				}
			}
			if strings.Contains(r.Stderr, "panic") {
				t.Errorf("panic:\n%s", r.Stderr)
			}
			nothingApplied(t, ctx, db.Conn(t))
			t.Logf("exit %d: %s", r.Code, strings.TrimSpace(r.Stderr))
		})
	}
}

// TestOtherFormatsThroughCLI: the CLI pushes golang-migrate, dbmate and
// sql-migrate directories as those tools have them (BEGIN/COMMIT wrappers,
// CREATE INDEX CONCURRENTLY without a marker, CRLF, byte-order marks,
// unrelated files), and a second push has nothing to do.
func TestOtherFormatsThroughCLI(t *testing.T) {
	t.Parallel()
	for tool, migrations := range map[string]int{"golang-migrate": 6, "dbmate": 6, "sql-migrate": 5} {
		t.Run(tool, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			db := pgtest.NewDB(t)
			dir := filepath.Join("..", "..", "gowrapper", "testdata", "formats", tool)
			for i := range 2 {
				r := workload.Run(t, cli, []string{"DATABASE_URL=" + db.URL}, "push", "--dir", dir)
				if r.Code != 0 {
					t.Fatalf("push %d: %v", i+1, r)
				}
			}
			var n int
			if err := db.Conn(t).QueryRow(ctx, "select count(*) from pgmig.history").Scan(&n); err != nil || n != migrations {
				t.Fatalf("history holds %d rows (%v), want %d", n, err, migrations)
			}
		})
	}
}
