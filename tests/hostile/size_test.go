package hostile_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	pgmig "github.com/pgmig/pgmig/gowrapper"
	"github.com/pgmig/pgmig/tests/faults/workload"
	"github.com/pgmig/pgmig/tests/pgtest"
)

// TestFiftyMegabyteBatch: a 50 MB batch (one migration carrying a 50 MB
// literal) is applied, recorded with its full SQL and the right checksum,
// and a failing twin of it leaves nothing behind. The default suite uses
// 5 MB (the same code path, a tenth of the time); PGMIG_TEST_FULL=1 50 MB.
func TestFiftyMegabyteBatch(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	conn := pgtest.NewDB(t).Conn(t)
	size := workload.Trials(5, 50) << 20
	payload := strings.Repeat("pgmig ", size/6)
	sql := "create table big (t text); insert into big values ('" + payload + "')"
	b := []entry{mig(1, "small", "create table small (id int)"), mig(2, "big", sql)}
	batch := toJSON(t, b)

	// The failing twin first: a syntax error after the 50 MB literal.
	bad := toJSON(t, []entry{mig(1, "small", "create table small (id int)"), mig(2, "big", sql+" oops")})
	start := time.Now()
	_, err := applyRaw(ctx, conn, bad)
	mentions(t, pgErr(t, err, "42601"), "oops")
	nothingApplied(t, ctx, conn)
	failed := time.Since(start)

	start = time.Now()
	got, err := applyRaw(ctx, conn, batch)
	if err != nil || got["applied"] != 2 {
		t.Fatalf("applying a %d MB batch: %v %v", len(batch)>>20, got, err)
	}
	took := time.Since(start)
	var n int
	var checksum string
	if err := conn.QueryRow(ctx, "select length(sql), checksum from pgmig.history where version = 2").Scan(&n, &checksum); err != nil {
		t.Fatal(err)
	}
	if n != len(sql) || checksum != sha256Hex(sql) {
		t.Errorf("recorded %d characters with checksum %s; want %d and %s", n, checksum, len(sql), sha256Hex(sql))
	}
	start = time.Now()
	if got, err := applyRaw(ctx, conn, batch); err != nil || got["already_applied"] != 2 {
		t.Fatalf("re-run: %v %v", got, err)
	}
	t.Logf("%d MB batch: applied in %v, failing twin rolled back in %v, no-op re-run %v",
		len(batch)>>20, took.Round(time.Millisecond), failed.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}

// TestTenThousandMigrations: a batch of 10 000 migrations is data, not an
// attack: applied in one call, each recorded once; a re-run is a no-op.
// The migrations take no new locks (each inserts a row), so the batch
// stays within a default lock table (see DESIGN.md, problem 7).
func TestTenThousandMigrations(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	conn := db.Conn(t)
	const n = 10_000
	if _, err := conn.Exec(ctx, "create table ledger (v int not null)"); err != nil {
		t.Fatal(err)
	}
	ms := make([]*pgmig.Migration, n)
	for i := range ms {
		v := int64(i + 1)
		s := fmt.Sprintf("insert into ledger values (%d)", v)
		ms[i] = &pgmig.Migration{Version: v, Name: fmt.Sprintf("row_%05d", v), SQL: s, Transactional: true, Checksum: sha256Hex(s)}
	}
	batch, err := pgmig.Batch(ms)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	got, err := applyRaw(ctx, conn, string(batch))
	if err != nil || got["applied"] != n {
		t.Fatalf("applying %d migrations: %v %v", n, got, err)
	}
	took := time.Since(start)
	var rows, distinct, hist int
	if err := conn.QueryRow(ctx, "select count(*), count(distinct v), (select count(*) from pgmig.history) from ledger").Scan(&rows, &distinct, &hist); err != nil {
		t.Fatal(err)
	}
	if rows != n || distinct != n || hist != n {
		t.Fatalf("ledger %d rows (%d distinct), history %d; want %d each", rows, distinct, hist, n)
	}
	start = time.Now()
	if got, err := applyRaw(ctx, conn, string(batch)); err != nil || got["already_applied"] != n {
		t.Fatalf("re-run: %v %v", got, err)
	}
	noop := time.Since(start)
	// The library's lock-free precheck on the same database.
	client, err := pgmig.Connect(ctx, db.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close(ctx)
	start = time.Now()
	res, err := client.Push(ctx, ms, nil)
	if err != nil || res.Applied != 0 || !res.Prechecked {
		t.Fatalf("library push of the applied batch: %+v %v", res, err)
	}
	t.Logf("%d migrations (%d KB batch): applied in %v; no-op migrate_apply %v; no-op library push (precheck) %v",
		n, len(batch)>>10, took.Round(time.Millisecond), noop.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}
