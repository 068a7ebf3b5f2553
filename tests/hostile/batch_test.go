package hostile_test

import (
	"context"
	"strings"
	"testing"

	"github.com/pgmig/pgmig/tests/pgtest"
)

// TestMalformedBatches: every malformed batch is refused as a whole with
// PM001 (or, for text that is not JSON at all, by PostgreSQL's jsonb input
// function before the engine runs), the error names the offending entry,
// and nothing is applied — not even the valid entries next to it.
func TestMalformedBatches(t *testing.T) {
	t.Parallel()
	ok := `{"version": 1, "name": "create_ok", "sql": "create table ok_table (id int)"}`
	cases := []struct {
		name  string
		batch string
		code  string
		says  []string // in MESSAGE or DETAIL
	}{
		// Not JSON at all: jsonb's own input error, nothing reaches the engine.
		{"not JSON", `[{"version": 1,`, "22P02", nil},
		{"NUL escape", `[{"version": 1, "name": "a\u0000b", "sql": "select 1"}]`, "22P05", nil},
		{"lone surrogate", `[{"version": 1, "name": "\ud800", "sql": "select 1"}]`, "22P02", nil},
		// The batch itself.
		{"object, not array", ok, "PM001", []string{"JSON array", "object"}},
		{"string", `"[]"`, "PM001", []string{"JSON array", "string"}},
		{"number", `42`, "PM001", []string{"JSON array", "number"}},
		{"JSON null", `null`, "PM001", []string{"JSON array", "null"}},
		{"element is a number", `[` + ok + `, 2]`, "PM001", []string{"entry 2", "not an object"}},
		{"element is null", `[` + ok + `, null]`, "PM001", []string{"entry 2", "not an object"}},
		{"element is an array", `[` + ok + `, [` + ok + `]]`, "PM001", []string{"entry 2", "not an object"}},
		// version
		{"version missing", `[` + ok + `, {"name": "x", "sql": "select 1"}]`, "PM001", []string{"entry 2", `"version" is missing`}},
		{"version zero", `[` + ok + `, {"version": 0, "name": "x", "sql": "select 1"}]`, "PM001", []string{"entry 2", `"version"`}},
		{"version negative", `[` + ok + `, {"version": -5, "name": "x", "sql": "select 1"}]`, "PM001", []string{"entry 2", "-5"}},
		{"version overflows bigint", `[` + ok + `, {"version": 9223372036854775808, "name": "x", "sql": "select 1"}]`, "PM001", []string{"entry 2", "9223372036854775808"}},
		{"version huge exponent", `[` + ok + `, {"version": 1e300, "name": "x", "sql": "select 1"}]`, "PM001", []string{"entry 2"}},
		{"version fraction", `[` + ok + `, {"version": 2.5, "name": "x", "sql": "select 1"}]`, "PM001", []string{"entry 2", "2.5"}},
		// An integer's value written with a fraction: jsonb keeps the scale, and
		// the engine once cast "2.0" to bigint after validating it (raw 22P02).
		{"version 2.0", `[` + ok + `, {"version": 2.0, "name": "x", "sql": "select 1"}]`, "PM001", []string{"entry 2", "2.0"}},
		{"version 20e-1", `[` + ok + `, {"version": 20e-1, "name": "x", "sql": "select 1"}]`, "PM001", []string{"entry 2", "2.0"}},
		{"version 3.00", `[` + ok + `, {"version": 3.00, "name": "x", "sql": "select 1"}]`, "PM001", []string{"entry 2", "3.00"}},
		{"version -0", `[` + ok + `, {"version": -0, "name": "x", "sql": "select 1"}]`, "PM001", []string{"entry 2"}},
		{"version string", `[` + ok + `, {"version": "2", "name": "x", "sql": "select 1"}]`, "PM001", []string{"entry 2", `"2"`}},
		{"version boolean", `[` + ok + `, {"version": true, "name": "x", "sql": "select 1"}]`, "PM001", []string{"entry 2", "true"}},
		{"version null", `[` + ok + `, {"version": null, "name": "x", "sql": "select 1"}]`, "PM001", []string{"entry 2"}},
		{"version object", `[` + ok + `, {"version": {"n": 2}, "name": "x", "sql": "select 1"}]`, "PM001", []string{"entry 2"}},
		// name
		{"name missing", `[` + ok + `, {"version": 2, "sql": "select 1"}]`, "PM001", []string{"entry 2 (version 2)", `"name" is missing`}},
		{"name empty", `[` + ok + `, {"version": 2, "name": "", "sql": "select 1"}]`, "PM001", []string{"version 2", `"name" is empty`}},
		{"name blank", `[` + ok + `, {"version": 2, "name": " \t\n", "sql": "select 1"}]`, "PM001", []string{"version 2", `"name" is empty`}},
		{"name number", `[` + ok + `, {"version": 2, "name": 7, "sql": "select 1"}]`, "PM001", []string{"version 2", `"name" must be a string`}},
		{"name null", `[` + ok + `, {"version": 2, "name": null, "sql": "select 1"}]`, "PM001", []string{"version 2", `"name"`}},
		// sql, down, transactional, checksum
		{"sql number", `[` + ok + `, {"version": 2, "name": "x", "sql": 1}]`, "PM001", []string{"version 2", `"sql" must be a string`}},
		{"sql array", `[` + ok + `, {"version": 2, "name": "x", "sql": ["select 1"]}]`, "PM001", []string{"version 2", `"sql" must be a string`}},
		{"sql null", `[` + ok + `, {"version": 2, "name": "x", "sql": null}]`, "PM001", []string{"version 2", `"sql"`}},
		{"sql empty", `[` + ok + `, {"version": 2, "name": "x", "sql": ""}]`, "PM001", []string{"version 2", `"sql" is empty`}},
		{"sql form feeds and tabs", `[` + ok + `, {"version": 2, "name": "x", "sql": "\f\t\r\n"}]`, "PM001", []string{"version 2", `"sql" is empty`}},
		// The engine's blank test strips E' \t\r\n\f\v', but PostgreSQL has
		// no \v escape: E'\v' is the letter v. SQL made of v's is a syntax
		// error of the migration, not an empty one.
		{"sql of letters v", `[` + ok + `, {"version": 2, "name": "x", "sql": "vvv"}]`, "42601", nil},
		{"neither sql nor checksum", `[` + ok + `, {"version": 2, "name": "x"}]`, "PM001", []string{"version 2", `neither "sql" nor "checksum"`}},
		{"down number", `[` + ok + `, {"version": 2, "name": "x", "sql": "select 1", "down": 5}]`, "PM001", []string{"version 2", `"down"`}},
		{"transactional string", `[` + ok + `, {"version": 2, "name": "x", "sql": "select 1", "transactional": "yes"}]`, "PM001", []string{"version 2", `"transactional"`}},
		{"transactional null", `[` + ok + `, {"version": 2, "name": "x", "sql": "select 1", "transactional": null}]`, "PM001", []string{"version 2", `"transactional"`}},
		{"checksum number", `[` + ok + `, {"version": 2, "name": "x", "sql": "select 1", "checksum": 12}]`, "PM001", []string{"version 2", `"checksum"`}},
		{"checksum uppercase", `[` + ok + `, {"version": 2, "name": "x", "sql": "select 1", "checksum": "` + strings.ToUpper(sha256Hex("select 1")) + `"}]`, "PM001", []string{"version 2", `"checksum"`}},
		{"key with SQL in it", `[` + ok + `, {"version": 2, "name": "x", "sql": "select 1", "'); drop table pgmig.history; --": 1}]`, "PM001", []string{"version 2", "unknown key"}},
		// several problems: all listed, in one error
		{"every problem listed", `[{"version": 0, "name": 1, "sql": 2}, {"version": 3, "name": "", "sql": " "}, {"version": 3, "name": "y", "sql": "select 1"}]`,
			"PM001", []string{"entry 1", "entry 2", "entries 2, 3", "version 3", "same version"}},
	}
	// Every case fails and must leave nothing, so one database serves them
	// all: a case that applied anything would show in the next check.
	ctx := context.Background()
	conn := pgtest.NewDB(t).Conn(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := applyRaw(ctx, conn, tc.batch)
			e := pgErr(t, err, tc.code)
			mentions(t, e, tc.says...)
			if tc.code == "PM001" && e.Hint == "" {
				t.Errorf("PM001 without a HINT: %s", describe(e))
			}
			nothingApplied(t, ctx, conn)
		})
	}

	t.Run("SQL NULL", func(t *testing.T) {
		_, err := conn.Exec(ctx, "select * from migrate_apply(null)")
		mentions(t, pgErr(t, err, "PM001"), "JSON array")
		nothingApplied(t, ctx, conn)
	})
	t.Run("empty array", func(t *testing.T) {
		got, err := applyRaw(ctx, conn, `[]`)
		if err != nil || len(got) != 0 {
			t.Fatalf("empty batch: %v %v, want no rows and no error", got, err)
		}
		nothingApplied(t, ctx, conn)
	})
	t.Run("integral exponent", func(t *testing.T) {
		t.Parallel()
		ctx := context.Background()
		conn := pgtest.NewDB(t).Conn(t)
		// jsonb reads 1e1 and 1.0e1 as 10: an integer, applied as version 10.
		got, err := applyRaw(ctx, conn, `[{"version": 1e1, "name": "ten", "sql": "create table ten (id int)"}, {"version": 1.1e1, "name": "eleven", "sql": "create table eleven (id int)"}]`)
		if err != nil || got["applied"] != 2 {
			t.Fatalf("versions 1e1 and 1.1e1: %v %v, want both applied", got, err)
		}
		var versions string
		if err := conn.QueryRow(ctx, "select string_agg(version::text, ',' order by version) from pgmig.history").Scan(&versions); err != nil || versions != "10,11" {
			t.Fatalf("recorded versions %q (%v), want 10,11", versions, err)
		}
	})
	t.Run("largest version", func(t *testing.T) {
		t.Parallel()
		ctx := context.Background()
		conn := pgtest.NewDB(t).Conn(t)
		got, err := applyRaw(ctx, conn, `[{"version": 9223372036854775807, "name": "max", "sql": "create table at_max (id int)"}]`)
		if err != nil || got["applied"] != 1 {
			t.Fatalf("version 9223372036854775807: %v %v, want applied", got, err)
		}
		var v int64
		if err := conn.QueryRow(ctx, "select version from pgmig.history").Scan(&v); err != nil || v != 9223372036854775807 {
			t.Fatalf("recorded version %d (%v)", v, err)
		}
	})
}
