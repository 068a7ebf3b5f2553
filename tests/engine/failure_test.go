package engine_test

import (
	"context"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/pgmig/pgmig/tests/pgtest"
)

// TestFailingMigrationKeepsErrorAndAppliesNothing: migration 100 of 200 has
// a syntax error. The caller gets PostgreSQL's own error (SQLSTATE 42601,
// the migration's SQL as internal query, the position of the bad token in
// characters), and the database holds nothing of the batch (I2). After the
// fix the whole batch applies.
func TestFailingMigrationKeepsErrorAndAppliesNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	conn := db.Conn(t)

	// Multi-byte characters before the bad token: PostgreSQL positions are
	// 1-based character offsets, not byte offsets.
	const bad = "-- миграция №100: ünïcödé before the error\ncreate table t_100 (id int);\ncreate tabel oops (id int)"
	b := tableBatch(200).with(100, bad)

	_, err := apply(ctx, conn, b, "")
	pgErr := pgError(t, err, "42601")
	if pgErr.InternalQuery != bad {
		t.Errorf("InternalQuery = %q, want migration 100's SQL %q", pgErr.InternalQuery, bad)
	}
	wantPos := int32(utf8.RuneCountInString(bad[:strings.Index(bad, "tabel")]) + 1)
	if pgErr.InternalPosition != wantPos {
		t.Errorf("InternalPosition = %d, want %d (1-based character offset of \"tabel\")", pgErr.InternalPosition, wantPos)
	}
	if !strings.Contains(pgErr.Message, "tabel") {
		t.Errorf("message %q does not name the bad token", pgErr.Message)
	}

	if n := count(t, conn, "select count(*) from pgmig.history"); n != 0 {
		t.Errorf("history has %d rows after a failed batch, want 0", n)
	}
	if n := count(t, conn, `select count(*) from pg_class where relname ~ '^t_[0-9]{3}$'`); n != 0 {
		t.Errorf("%d tables of migrations 1-99 exist after a failed batch, want 0", n)
	}

	fixed := b.with(100, "create table t_100 (id int)")
	rows := mustApply(t, conn, fixed, "")
	if got := outcomes(rows)["applied"]; got != 200 {
		t.Errorf("after the fix %d applied, want 200 (outcomes %v)", got, outcomes(rows))
	}
	if n := count(t, conn, `select count(*) from pg_class where relname ~ '^t_[0-9]{3}$' and relkind = 'r'`); n != 200 {
		t.Errorf("%d tables after the fix, want 200", n)
	}
}
