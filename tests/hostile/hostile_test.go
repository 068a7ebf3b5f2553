// Package hostile_test feeds pgmig broken and malicious input — malformed
// batches, wrong types, absurd sizes, invalid bytes in files, names and SQL
// built to escape, migrations attacking the bookkeeping, roles without
// grants, look-alike objects in public — and checks that each one ends in a
// clear error naming the entry or file with nothing applied, or, where the
// input is merely unusual, is applied and recorded verbatim (I1, I2, I5, I6).
// The fuzz targets (FuzzBatchSQL, FuzzLoad) run their seed corpora in the
// default suite; `go test -fuzz` explores further.
//
// What tests/engine already covers is not repeated here: duplicate
// versions, whitespace-only SQL, a wrong checksum, a pending manifest entry,
// an unknown key, COMMIT, SET ROLE / SET search_path not leaking, a role
// without grants at the SQL level, look-alike sha256/now()/"=" in public.
package hostile_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgmig/pgmig/tests/faults/workload"
)

var cli string

func TestMain(m *testing.M) { workload.Main(m, &cli) }

// entry is one batch element: any keys, values of any type.
type entry map[string]any

func mig(v int64, name, sql string) entry {
	return entry{"version": v, "name": name, "sql": sql}
}

func toJSON(tb testing.TB, v any) string {
	tb.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

// applyRaw calls migrate_apply with batch as jsonb text (any text at all),
// and returns the outcome counts.
func applyRaw(ctx context.Context, conn *pgx.Conn, batch string) (map[string]int, error) {
	rows, err := conn.Query(ctx, "select outcome from migrate_apply($1::jsonb)", pgx.QueryExecModeExec, batch)
	if err != nil {
		return nil, err
	}
	out := map[string]int{}
	for rows.Next() {
		var o string
		if err := rows.Scan(&o); err != nil {
			rows.Close()
			return nil, err
		}
		out[o]++
	}
	return out, rows.Err()
}

// pgErr fails unless err is a PostgreSQL error with SQLSTATE code.
func pgErr(tb testing.TB, err error, code string) *pgconn.PgError {
	tb.Helper()
	var e *pgconn.PgError
	if !errors.As(err, &e) {
		tb.Fatalf("got %v, want a PostgreSQL error %s", err, code)
	}
	if e.Code != code {
		tb.Fatalf("SQLSTATE %s, want %s: %s", e.Code, code, describe(e))
	}
	return e
}

func describe(e *pgconn.PgError) string {
	return fmt.Sprintf("%s: %s\nDETAIL: %s\nHINT: %s\nWHERE: %s", e.Code, e.Message, e.Detail, e.Hint, e.Where)
}

// nothingApplied fails if the database holds any history row or any table
// outside the engine's schema.
func nothingApplied(tb testing.TB, ctx context.Context, conn *pgx.Conn) {
	tb.Helper()
	var hist, tables int
	var names string
	if err := conn.QueryRow(ctx, `
		select (select count(*) from pgmig.history), count(*), coalesce(string_agg(c.relname, ' '), '')
		from pg_class c join pg_namespace n on n.oid = c.relnamespace
		where c.relkind in ('r', 'v', 'm', 'S', 'p') and n.nspname not in ('pg_catalog', 'information_schema', 'pgmig', 'pg_toast')`).
		Scan(&hist, &tables, &names); err != nil {
		tb.Fatalf("checking that nothing was applied: %v", err)
	}
	if hist != 0 || tables != 0 {
		tb.Fatalf("something was applied: %d history rows, %d tables (%s)", hist, tables, names)
	}
}

// mentions fails unless the error's message or detail contains every want.
func mentions(tb testing.TB, e *pgconn.PgError, wants ...string) {
	tb.Helper()
	text := e.Message + "\n" + e.Detail
	for _, w := range wants {
		if !strings.Contains(text, w) {
			tb.Errorf("error does not mention %q: %s", w, describe(e))
		}
	}
}

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}
