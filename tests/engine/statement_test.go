package engine_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgmig/pgmig/tests/pgtest"
)

// statementBatch is a one-migration batch whose "statements" say where each
// of its statements starts (what the Go client sends).
func statementBatch(sql string, starts ...int) string {
	b, err := json.Marshal([]map[string]any{{"version": 1, "name": "one", "sql": sql, "statements": starts}})
	if err != nil {
		panic(err)
	}
	return string(b)
}

// warnings collects the WARNINGs a connection receives.
type warnings struct {
	mu   sync.Mutex
	list []*pgconn.Notice
}

func (w *warnings) connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
		if n.Severity == "WARNING" {
			w.mu.Lock()
			w.list = append(w.list, n)
			w.mu.Unlock()
		}
	}
	conn, err := pgx.ConnectConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func (w *warnings) pm010(t *testing.T) *pgconn.Notice {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, n := range w.list {
		if n.Code == "PM010" {
			return n
		}
	}
	t.Fatal("no PM010 warning")
	return nil
}

// TestRuntimeErrorNamesStatementAndLine (issue 11): a migration whose batch
// entry lists its statements runs them one by one; a runtime error (no
// position) is traced to its statement and line, and the CONTEXT inside
// the migration is reported; statements still share one session and
// transaction (a SET in one reaches the next).
func TestRuntimeErrorNamesStatementAndLine(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)

	cases := []struct {
		name, sql          string
		starts             []int
		code               string
		statement, line    int
		context, queryPart string // queryPart: a syntax error's internal query
	}{
		{name: "division by zero in statement 3",
			sql:    "create table a (i int);\n-- seed\ninsert into a values (1);\nselect 1/0;\ninsert into a values (2);",
			starts: []int{0, 32, 58, 70}, code: "22012", statement: 3, line: 4},
		{name: "RAISE in a DO block",
			sql:    "create table a (i int);\ndo $$\nbegin\n  raise exception 'boom %', 42;\nend $$;",
			starts: []int{0, 24}, code: "P0001", statement: 2, line: 2,
			context: "PL/pgSQL function inline_code_block line 3 at RAISE"},
		{name: "foreign key violation",
			sql:    "create table p (i int primary key);\ncreate table c (i int references p);\ninsert into c values (7);",
			starts: []int{0, 36, 73}, code: "23503", statement: 3, line: 3},
		{name: "missing table (a position, in the statement)",
			sql:    "create table a (i int);\nselect * from missing_table;",
			starts: []int{0, 24}, code: "42P01", queryPart: "select * from missing_table;"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var w warnings
			conn := w.connect(t, db.URL)
			_, err := conn.Exec(ctx, "call pgmig.migrate_run($1::jsonb, notices => 'json')", statementBatch(c.sql, c.starts...))
			pgErr := pgError(t, err, c.code)
			var data struct {
				Statement, Line int
				Context         string
			}
			n := w.pm010(t)
			if err := json.Unmarshal([]byte(n.Detail), &data); err != nil {
				t.Fatalf("PM010 DETAIL %q: %v", n.Detail, err)
			}
			if data.Statement != c.statement || data.Line != c.line || data.Context != c.context {
				t.Errorf("PM010 data %+v, want statement %d, line %d, context %q", data, c.statement, c.line, c.context)
			}
			if c.statement > 0 && !strings.Contains(n.Message, fmt.Sprintf("in statement %d (line %d)", c.statement, c.line)) {
				t.Errorf("PM010 message %q does not name the statement", n.Message)
			}
			if c.queryPart != "" && (!strings.HasPrefix(pgErr.InternalQuery, c.queryPart) || pgErr.InternalPosition != 15) {
				t.Errorf("internal query %q at %d, want the statement alone, position 15", pgErr.InternalQuery, pgErr.InternalPosition)
			}
			if n := count(t, db.Conn(t), "select count(*) from pgmig.history"); n != 0 {
				t.Fatalf("%d history rows after a failure", n)
			}
		})
	}

	// One session across the statements: a SET in the first reaches the second.
	conn := db.Conn(t)
	sql := "set local datestyle = 'German';\ncreate table ds as select to_char(date '2026-12-02', 'YYYY') || ' ' || current_setting('datestyle') as v;"
	if _, err := conn.Exec(ctx, "call pgmig.migrate_run($1::jsonb)", statementBatch(sql, 0, 32)); err != nil {
		t.Fatal(describe(err))
	}
	var v string
	if err := conn.QueryRow(ctx, "select v from ds").Scan(&v); err != nil || v != "2026 German, DMY" {
		t.Fatalf("second statement saw datestyle %q (%v), want the first statement's", v, err)
	}
}

// TestStatementsKey: the batch's "statements" is validated alike by both
// validators; a bad one is PM001 naming the entry.
func TestStatementsKey(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	conn := db.Conn(t)
	checkEntryKey(t, conn, "statements", `[{"version": 1, "name": "one", "sql": "select 1; select 2", "statements": %s}]`, map[string]bool{
		`[0]`: true, `[0, 9]`: true, `[3, 9]`: true, `null`: true,
		`[]`: false, `[9, 0]`: false, `[0, 0]`: false, `[-1]`: false, `[0, 18]`: false, `[0.5]`: false, `"0"`: false, `[0, "9"]`: false, `{}`: false,
	})
	// A manifest entry (no SQL) cannot carry statements.
	b := `[{"version": 1, "name": "one", "checksum": "` + sha256Hex("x") + `", "statements": [0]}]`
	_, err := conn.Exec(ctx, "select * from pgmig.migrate_plan($1::jsonb)", b)
	pgError(t, err, "PM001")
}
