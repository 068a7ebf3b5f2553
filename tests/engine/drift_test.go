package engine_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgmig/pgmig/tests/pgtest"
)

// TestDrift: the batch disagrees with what was applied (I4).
func TestDrift(t *testing.T) {
	t.Parallel()
	full := tableBatch(5)

	// setup returns a connection to a fresh database where b is applied.
	setup := func(t *testing.T, b batch) *pgx.Conn {
		t.Helper()
		conn := pgtest.NewDB(t).Conn(t)
		mustApply(t, conn, b, "")
		return conn
	}
	historyCount := func(t *testing.T, conn *pgx.Conn) int64 {
		return count(t, conn, "select count(*) from pgmig.history")
	}
	wantDrift := func(t *testing.T, err error, versions ...int64) {
		t.Helper()
		pgErr := pgError(t, err, "PM002")
		named := namedVersions(pgErr)
		for _, v := range versions {
			if !named[v] {
				t.Errorf("PM002 does not name version %d: %s", v, describe(err))
			}
		}
		if pgErr.Hint == "" {
			t.Errorf("PM002 without a HINT: %s", describe(err))
		}
	}

	t.Run("edited", func(t *testing.T) {
		t.Parallel()
		conn := setup(t, full)
		_, err := apply(context.Background(), conn, full.with(3, "create table t_003 (id bigint)"), "")
		wantDrift(t, err, 3)
	})

	t.Run("renamed", func(t *testing.T) {
		t.Parallel()
		conn := setup(t, full)
		renamed := append(batch(nil), full...)
		renamed[3].Name = "create_t_four" // same SQL, same checksum
		_, err := apply(context.Background(), conn, renamed, "")
		wantDrift(t, err, 4)
		if n := historyCount(t, conn); n != 5 {
			t.Errorf("history has %d rows after the refused batch, want 5", n)
		}
	})

	t.Run("edited and missing listed together", func(t *testing.T) {
		t.Parallel()
		conn := setup(t, full)
		_, err := apply(context.Background(), conn, full.with(2, "create table t_002 (x int)").without(4), "")
		wantDrift(t, err, 2, 4)
	})

	t.Run("missing", func(t *testing.T) {
		t.Parallel()
		conn := setup(t, full)
		_, err := apply(context.Background(), conn, full.without(2), "")
		wantDrift(t, err, 2)
		if n := historyCount(t, conn); n != 5 {
			t.Errorf("history has %d rows, want 5", n)
		}
	})

	t.Run("out of order", func(t *testing.T) {
		t.Parallel()
		conn := setup(t, full.without(3))
		_, err := apply(context.Background(), conn, full, "")
		wantDrift(t, err, 3)
		if n := count(t, conn, "select count(*) from pg_class where relname = 't_003'"); n != 0 {
			t.Error("t_003 exists after a refused out-of-order batch")
		}
		rows := mustApply(t, conn, full, "allow_out_of_order => true")
		got := map[int64]string{}
		for _, r := range rows {
			got[r.Version] = r.Outcome
		}
		if got[3] != "applied" || got[1] != "already_applied" || got[5] != "already_applied" {
			t.Errorf("with allow_out_of_order: outcomes %v, want 3 applied, the others already_applied", got)
		}
		if n := historyCount(t, conn); n != 5 {
			t.Errorf("history has %d rows, want 5", n)
		}
	})

	t.Run("database ahead", func(t *testing.T) {
		t.Parallel()
		conn := setup(t, full)
		var before []byte
		if err := conn.QueryRow(context.Background(),
			"select coalesce(jsonb_agg(h order by version), '[]')::text::bytea from pgmig.history h").Scan(&before); err != nil {
			t.Fatal(err)
		}
		rows := mustApply(t, conn, full[:3], "")
		got := map[int64]string{}
		for _, r := range rows {
			got[r.Version] = r.Outcome
		}
		want := map[int64]string{1: "already_applied", 2: "already_applied", 3: "already_applied", 4: "ahead", 5: "ahead"}
		for v, o := range want {
			if got[v] != o {
				t.Errorf("version %d: outcome %q, want %q (all: %v)", v, got[v], o, got)
			}
		}
		if len(rows) != len(want) {
			t.Errorf("%d result rows, want %d", len(rows), len(want))
		}
		var after []byte
		if err := conn.QueryRow(context.Background(),
			"select coalesce(jsonb_agg(h order by version), '[]')::text::bytea from pgmig.history h").Scan(&after); err != nil {
			t.Fatal(err)
		}
		if string(before) != string(after) {
			t.Error("history changed although the database was ahead of the batch")
		}
	})
}
