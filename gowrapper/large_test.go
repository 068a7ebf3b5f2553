package pgmig_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	pgmig "github.com/pgmig/pgmig/gowrapper"
)

// smallDDL is n migrations of the kind fresh databases are built from:
// each takes 9 entries of the lock table until its transaction commits.
func smallDDL(n int) []*pgmig.Migration {
	ms := make([]*pgmig.Migration, n)
	for i := range ms {
		v := i + 1
		ms[i] = newMigration(int64(v), fmt.Sprintf("t_%d", v), fmt.Sprintf(
			"create table t_%d (id bigint primary key, v text);\ncreate index on t_%d (v);\ncomment on table t_%d is 'table %d';\ninsert into t_%d values (1, 'x');\n",
			v, v, v, v, v))
	}
	return ms
}

func countTables(t *testing.T, url string) (tables, history int64) {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if err := conn.QueryRow(context.Background(), `select (select count(*) from pg_tables where schemaname = 'public' and tablename like 't\_%'),
		(select count(*) from pgmig.history)`).Scan(&tables, &history); err != nil {
		t.Fatal(err)
	}
	return tables, history
}

// On a server with a small lock table, one transaction for the whole batch
// fails with 53200 (and says what to change); the default push sizes its
// segments from the server's settings and succeeds.
func TestPushLockTableAutoSegments(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := throwawayCluster(t, "max_locks_per_transaction=10", "max_connections=20")
	ms := smallDDL(300)

	_, err := connect(t, url, nil).Push(ctx, ms, &pgmig.PushOpts{SegmentSize: pgmig.SegmentAll})
	var merr *pgmig.MigrationError
	if !errors.As(err, &merr) || !errors.Is(err, pgmig.ErrLockTableFull) || merr.Code != "53200" || merr.CurrentVersion != 0 {
		t.Fatalf("one transaction: err = %v, want 53200", err)
	}
	if !strings.Contains(merr.Hint, "--segment-size") || !strings.Contains(merr.Hint, "max_locks_per_transaction") {
		t.Errorf("53200 hint does not say what to change: %q", merr.Hint)
	}
	t.Logf("one transaction: %v (hint: %s)", err, merr.Hint)
	if tables, history := countTables(t, url); tables != 0 || history != 0 {
		t.Fatalf("after the failed transaction: %d tables, %d history rows", tables, history)
	}

	start := time.Now()
	res, err := connect(t, url, nil).Push(ctx, ms, nil)
	if err != nil {
		t.Fatal(err)
	}
	// 10 * (20 + 0) lock slots: a budget of half of it, and the engine
	// stops each transaction near it.
	if res.Applied != len(ms) || res.LockBudget != 100 || res.SegmentSize != 0 || res.Segments < 2 {
		t.Fatalf("applied %d in %d segments with lock budget %d (segment size %d)", res.Applied, res.Segments, res.LockBudget, res.SegmentSize)
	}
	t.Logf("automatic segments: %d migrations in %d segments (lock budget %d) in %v", res.Applied, res.Segments, res.LockBudget, time.Since(start))
	if tables, history := countTables(t, url); tables != int64(len(ms)) || history != int64(len(ms)) {
		t.Fatalf("%d tables, %d history rows", tables, history)
	}
}

// The acceptance test: 10 000 small DDL migrations onto a fresh
// database of a server with default settings (max_locks_per_transaction =
// 64). Takes minutes on a small machine: PGMIG_TEST_LARGE=1 (make test-all).
func TestPush10000OnDefaultSettings(t *testing.T) {
	if os.Getenv("PGMIG_TEST_LARGE") == "" {
		t.Log("PGMIG_TEST_LARGE is not set: ran nothing (make test-all runs it)")
		return
	}
	ctx := context.Background()
	url := throwawayCluster(t)
	ms := smallDDL(10000)

	start := time.Now()
	res, err := connect(t, url, nil).Push(ctx, ms, nil)
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	if res.Applied != 10000 || res.Version != 10000 {
		t.Fatalf("%+v", res)
	}
	t.Logf("10000 migrations on default settings: %v, %d segments (lock budget %d)", took, res.Segments, res.LockBudget)
	if tables, history := countTables(t, url); tables != 10000 || history != 10000 {
		t.Fatalf("%d tables, %d history rows", tables, history)
	}

	// The same without segments, on a fresh database of the same server.
	admin, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "create database onetx"); err != nil {
		t.Fatal(err)
	}
	url2 := strings.Replace(url, "/postgres?", "/onetx?", 1)
	c2 := connect(t, url2, nil)
	if _, err := c2.Install(ctx, nil); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	_, err = c2.Push(ctx, ms, &pgmig.PushOpts{SegmentSize: pgmig.SegmentAll})
	if !errors.Is(err, pgmig.ErrLockTableFull) {
		t.Fatalf("one transaction: err = %v, want 53200", err)
	}
	t.Logf("one transaction failed after %v: %v", time.Since(start), err)
}

// newMigration builds a transactional migration without files.
func newMigration(version int64, name, sql string) *pgmig.Migration {
	sum := sha256.Sum256([]byte(sql))
	return &pgmig.Migration{Version: version, Name: name, SQL: sql, Transactional: true, Checksum: hex.EncodeToString(sum[:])}
}
