// Package engine_test runs the pgmig SQL engine (docs/sql-api.md) against a
// real PostgreSQL, with no Go wrapper in between: what every caller (psql,
// the CLI, a service at start-up) relies on.
package engine_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/pgmig/pgmig/tests/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// migration is one batch entry (docs/sql-api.md, "Batch format").
type migration struct {
	Version       int64  `json:"version"`
	Name          string `json:"name"`
	SQL           string `json:"sql,omitempty"`
	Down          string `json:"down,omitempty"`
	Transactional *bool  `json:"transactional,omitempty"`
	Checksum      string `json:"checksum,omitempty"`
}

type batch []migration

func (b batch) JSON() string {
	out, err := json.Marshal(b)
	if err != nil {
		panic(err)
	}
	return string(out)
}

// without returns the batch minus the given versions.
func (b batch) without(versions ...int64) batch {
	var out batch
next:
	for _, m := range b {
		for _, v := range versions {
			if m.Version == v {
				continue next
			}
		}
		out = append(out, m)
	}
	return out
}

// with returns a copy of the batch where version v has the given SQL.
func (b batch) with(v int64, sql string) batch {
	out := append(batch(nil), b...)
	for i := range out {
		if out[i].Version == v {
			out[i].SQL = sql
		}
	}
	return out
}

// ledgerBatch: migration 1 creates ledger(v int), 2..n each insert their own
// version, so a duplicate application shows up as a duplicate row.
func ledgerBatch(n int) batch {
	b := batch{{Version: 1, Name: "create_ledger", SQL: "create table ledger (v int)", Down: "drop table ledger"}}
	for v := 2; v <= n; v++ {
		b = append(b, migration{Version: int64(v), Name: fmt.Sprintf("insert_%03d", v),
			SQL: fmt.Sprintf("insert into ledger values (%d)", v)})
	}
	return b
}

// tableBatch: migration v creates table t_<v>.
func tableBatch(n int) batch {
	var b batch
	for v := 1; v <= n; v++ {
		b = append(b, migration{Version: int64(v), Name: fmt.Sprintf("create_t_%03d", v),
			SQL: fmt.Sprintf("create table t_%03d (id int)", v), Down: fmt.Sprintf("drop table t_%03d", v)})
	}
	return b
}

type resultRow struct {
	Version   int64
	Name      string
	Outcome   string
	Duration  pgtype.Interval
	AppliedAt pgtype.Timestamptz
}

type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// apply calls migrate_apply(batch, <opts>) and returns its rows; opts is
// extra named arguments, e.g. "lock_timeout => '200ms'".
func apply(ctx context.Context, q querier, b batch, opts string) ([]resultRow, error) {
	sql := "select version, name, outcome, duration, applied_at from migrate_apply($1::jsonb"
	if opts != "" {
		sql += ", " + opts
	}
	sql += ")"
	rows, err := q.Query(ctx, sql, b.JSON())
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (resultRow, error) {
		var row resultRow
		var name *string
		err := r.Scan(&row.Version, &name, &row.Outcome, &row.Duration, &row.AppliedAt)
		if name != nil {
			row.Name = *name
		}
		return row, err
	})
}

func mustApply(t *testing.T, q querier, b batch, opts string) []resultRow {
	t.Helper()
	rows, err := apply(context.Background(), q, b, opts)
	if err != nil {
		t.Fatalf("migrate_apply: %v", describe(err))
	}
	return rows
}

func outcomes(rows []resultRow) map[string]int {
	m := map[string]int{}
	for _, r := range rows {
		m[r.Outcome]++
	}
	return m
}

// pgError asserts err is a PostgreSQL error with SQLSTATE code.
func pgError(t *testing.T, err error, code string) *pgconn.PgError {
	t.Helper()
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		t.Fatalf("want a PostgreSQL error with SQLSTATE %s, got %v", code, err)
	}
	if pgErr.Code != code {
		t.Fatalf("want SQLSTATE %s, got %s", code, describe(err))
	}
	return pgErr
}

// describe spells out every field of a PostgreSQL error for test failures.
func describe(err error) string {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return fmt.Sprint(err)
	}
	return fmt.Sprintf("SQLSTATE %s: %s\nDETAIL: %s\nHINT: %s\nWHERE: %s\nINTERNAL QUERY (pos %d): %.200q",
		pgErr.Code, pgErr.Message, pgErr.Detail, pgErr.Hint, pgErr.Where, pgErr.InternalPosition, pgErr.InternalQuery)
}

func count(t *testing.T, conn *pgx.Conn, sql string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := conn.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

var versionList = regexp.MustCompile(`\bversions? ([0-9][0-9, ]*)`)

// namedVersions: the versions a pgmig error names in its message and detail
// ("versions 3, 7", "version 3 (name): ...").
func namedVersions(pgErr *pgconn.PgError) map[int64]bool {
	out := map[int64]bool{}
	for _, m := range versionList.FindAllStringSubmatch(pgErr.Message+"\n"+pgErr.Detail, -1) {
		for _, f := range strings.FieldsFunc(m[1], func(r rune) bool { return r == ',' || r == ' ' }) {
			if v, err := strconv.ParseInt(f, 10, 64); err == nil {
				out[v] = true
			}
		}
	}
	return out
}

func since(start time.Time) time.Duration { return time.Since(start).Round(time.Millisecond) }

func itoa(v int64) string { return strconv.FormatInt(v, 10) }

// mustQueryStrings runs a query returning one text column.
func mustQueryStrings(t *testing.T, conn *pgx.Conn, sql string, args ...any) []string {
	t.Helper()
	rows, err := conn.Query(context.Background(), sql, args...)
	if err != nil {
		t.Fatal(describe(err))
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(describe(err))
	}
	return out
}
