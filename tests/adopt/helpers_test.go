// Package adopt_test takes over the history of other migration tools
// (pgmig adopt, docs/adopt.md) in databases those tools migrated: with the
// real tools where they can be built here (realtools_test.go: golang-migrate,
// goose, sql-migrate from their Go modules, tern from its library), and with
// each tool's history table reproduced exactly, as the tool creates and
// fills it (reproduced_test.go: every tool, Flyway and dbmate only so, and
// every refusal). After adoption, push has nothing to do and a new file
// applies; a refusal leaves the database as it was.
package adopt_test

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	pgmig "github.com/pgmig/pgmig/gowrapper"
	"github.com/pgmig/pgmig/tests/faults/workload"
	"github.com/pgmig/pgmig/tests/pgtest"
)

// cli is the pgmig binary, built once per test binary.
var cli string

func TestMain(m *testing.M) { workload.Main(m, &cli) }

// fixture copies testdata/<tool>/migrations into a fresh directory.
func fixture(t *testing.T, tool pgmig.Format) string {
	t.Helper()
	dir := t.TempDir()
	copyTree(t, filepath.Join("testdata", string(tool), "migrations"), dir)
	return dir
}

// addNext adds the tool's next migration (testdata/<tool>/next): a file
// written after the switch to pgmig.
func addNext(t *testing.T, tool pgmig.Format, dir string) {
	t.Helper()
	copyTree(t, filepath.Join("testdata", string(tool), "next"), dir)
}

func copyTree(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(to, rel), 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(to, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

// bundle is one test's database, directory and client.
type bundle struct {
	tool   pgmig.Format
	db     *pgtest.DB
	conn   *pgx.Conn
	client *pgmig.Client
	dir    string
}

func setup(t *testing.T, tool pgmig.Format) *bundle {
	t.Helper()
	db := pgtest.NewDB(t)
	client, err := pgmig.Connect(context.Background(), db.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(context.Background()) })
	return &bundle{tool: tool, db: db, conn: db.Conn(t), client: client, dir: fixture(t, tool)}
}

// loadOpts reads the files as the tool's; the Flyway fixture has a
// placeholder.
func loadOpts(tool pgmig.Format) *pgmig.LoadOpts {
	return &pgmig.LoadOpts{Format: tool, Data: map[string]any{"owner": "logistics"}}
}

func (b *bundle) load(t *testing.T) []*pgmig.Migration {
	t.Helper()
	ms, err := pgmig.LoadDir(b.dir, loadOpts(b.tool))
	if err != nil {
		t.Fatal(err)
	}
	return ms
}

func (b *bundle) exec(t *testing.T, sql string, args ...any) {
	t.Helper()
	if _, err := b.conn.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func (b *bundle) count(t *testing.T, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := b.conn.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// snapshot is the whole state adoption could change: pgmig's history and
// audit, and the tool's table.
func (b *bundle) snapshot(t *testing.T, table string) string {
	t.Helper()
	var s string
	err := b.conn.QueryRow(context.Background(), `select jsonb_build_object(
			'history', (select coalesce(jsonb_agg(h order by version), '[]') from pgmig.history h),
			'audit', (select coalesce(jsonb_agg(a order by id), '[]') from pgmig.audit a))::text`).Scan(&s)
	if err != nil {
		t.Fatal(err)
	}
	return s + " " + b.toolRows(t, table)
}

// toolRows is the tool's table as JSON, "none" when it does not exist.
func (b *bundle) toolRows(t *testing.T, table string) string {
	t.Helper()
	if b.count(t, "select count(*) from pg_class where oid = to_regclass($1)", table) == 0 {
		return "none"
	}
	var rows string
	if err := b.conn.QueryRow(context.Background(), "select coalesce(jsonb_agg(to_jsonb(t) order by to_jsonb(t)::text), '[]')::text from "+
		pgx.Identifier(strings.Split(table, ".")).Sanitize()+" t").Scan(&rows); err != nil {
		t.Fatal(err)
	}
	return rows
}

// adopt adopts the tool's history from b.dir with the library.
func (b *bundle) adopt(t *testing.T, opts *pgmig.AdoptOpts) (*pgmig.HistoryResult, error) {
	t.Helper()
	return b.client.Adopt(context.Background(), b.load(t), b.tool, opts)
}

// mustAdopt adopts and checks how many migrations were adopted.
func (b *bundle) mustAdopt(t *testing.T, want int) *pgmig.HistoryResult {
	t.Helper()
	res, err := b.adopt(t, nil)
	if err != nil {
		t.Fatalf("adopt: %v", err)
	}
	if res.Changed != want {
		t.Fatalf("adopted %d migrations, want %d: %+v", res.Changed, want, res.Migrations)
	}
	return res
}

// refused adopts, expecting a refusal (ErrAdoptRefused, PM020) whose
// DETAIL holds every want, and checks that nothing changed.
func (b *bundle) refused(t *testing.T, table string, want ...string) *pgconn.PgError {
	t.Helper()
	before := b.snapshot(t, table)
	_, err := b.adopt(t, nil)
	var pgErr *pgconn.PgError
	if !errors.Is(err, pgmig.ErrAdoptRefused) || !errors.As(err, &pgErr) || pgErr.Code != "PM020" {
		t.Fatalf("adopt: want a PM020 refusal, got %v", err)
	}
	for _, w := range want {
		if !strings.Contains(pgErr.Detail, w) {
			t.Errorf("the refusal's detail lacks %q:\n%s", w, pgErr.Detail)
		}
	}
	if after := b.snapshot(t, table); after != before {
		t.Fatalf("a refused adoption changed the database:\nbefore %s\nafter  %s", before, after)
	}
	return pgErr
}

// pushAfter checks what the issue asks of an adopted database: push has
// nothing to do, and the next file applies.
func (b *bundle) pushAfter(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	res, err := b.client.Push(ctx, b.load(t), nil)
	// (Repeatable migrations, which pgmig does not adopt, are applied once: they are made to be.)
	if err != nil || res.Applied != res.RepeatableApplied {
		t.Fatalf("push right after adopting: %v, %+v (want nothing to apply but repeatable migrations)", err, res)
	}
	addNext(t, b.tool, b.dir)
	res, err = b.client.Push(ctx, b.load(t), nil)
	if err != nil || res.Applied != 1 {
		t.Fatalf("push of the next file: %v, %+v (want 1 applied)", err, res)
	}
}

// auditOf is the adoption's audit row.
type auditRow struct {
	Action  string
	Version int64
	Details struct {
		AdoptedFrom string            `json:"adopted_from"`
		Table       string            `json:"table"`
		Recorded    int               `json:"recorded"`
		Versions    []int64           `json:"versions"`
		Dropped     bool              `json:"dropped"`
		Checksums   string            `json:"checksums"`
		ToolRows    []json.RawMessage `json:"tool_rows"`
	}
}

func (b *bundle) audit(t *testing.T) []auditRow {
	t.Helper()
	rows, err := b.conn.Query(context.Background(), "select action, version, details from pgmig.audit order by id")
	if err != nil {
		t.Fatal(err)
	}
	var out []auditRow
	for rows.Next() {
		var a auditRow
		var details []byte
		if err := rows.Scan(&a.Action, &a.Version, &details); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(details, &a.Details); err != nil {
			t.Fatal(err)
		}
		out = append(out, a)
	}
	if rows.Err() != nil {
		t.Fatal(rows.Err())
	}
	return out
}
