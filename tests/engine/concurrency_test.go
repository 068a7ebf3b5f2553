package engine_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgmig/pgmig/tests/pgtest"
)

const (
	racers      = 32
	raceBatchSz = 200
)

// TestConcurrentCallersApplyOnce: 32 sessions push the same 200-migration
// batch into a fresh database at once (invariants I1 and I3, design problems
// 1, 3 and 4). Every call succeeds, each migration runs exactly once.
func TestConcurrentCallersApplyOnce(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	results, wall := race(t, db, 0)
	t.Logf("%d concurrent callers x %d migrations: %v wall time", racers, raceBatchSz, wall)
	applied := 0
	for i, r := range results {
		if r.err != nil {
			t.Errorf("caller %d: %s", i, describe(r.err))
			continue
		}
		if len(r.rows) != raceBatchSz {
			t.Errorf("caller %d: %d result rows, want %d", i, len(r.rows), raceBatchSz)
		}
		applied += outcomes(r.rows)["applied"]
	}
	if applied != raceBatchSz {
		t.Errorf("%d 'applied' outcomes over all callers, want %d (each migration applied by exactly one caller)", applied, raceBatchSz)
	}
	checkLedger(t, db)
}

// TestRepeatableReadCallersRefused: callers in REPEATABLE READ have a
// snapshot that may predate the lock (I3): refused with PM004, while the
// READ COMMITTED callers racing them still apply everything exactly once.
func TestRepeatableReadCallersRefused(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	results, wall := race(t, db, racers/2)
	t.Logf("%d concurrent callers (%d REPEATABLE READ): %v wall time", racers, racers/2, wall)
	for i, r := range results {
		if r.repeatableRead {
			if r.err == nil {
				t.Errorf("caller %d (REPEATABLE READ) was served %d rows, want PM004", i, len(r.rows))
				continue
			}
			pgErr := pgError(t, r.err, "PM004")
			if pgErr.Hint == "" {
				t.Errorf("PM004 without a HINT: %s", describe(r.err))
			}
			continue
		}
		if r.err != nil {
			t.Errorf("caller %d (READ COMMITTED): %s", i, describe(r.err))
		}
	}
	checkLedger(t, db)
}

type raceResult struct {
	repeatableRead bool
	rows           []resultRow
	err            error
}

// race connects all callers first, then releases them at once; the first
// repeatableRead callers run in BEGIN ISOLATION LEVEL REPEATABLE READ.
func race(t *testing.T, db *pgtest.DB, repeatableRead int) ([]raceResult, time.Duration) {
	t.Helper()
	b := ledgerBatch(raceBatchSz)
	conns := make([]*pgx.Conn, racers)
	for i := range conns {
		conns[i] = db.Conn(t)
	}
	var wg sync.WaitGroup
	results := make([]raceResult, racers)
	start := make(chan struct{})
	for i, conn := range conns {
		results[i].repeatableRead = i < repeatableRead
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			<-start
			r := &results[i]
			if !r.repeatableRead {
				r.rows, r.err = apply(ctx, conn, b, "")
				return
			}
			tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
			if err != nil {
				r.err = err
				return
			}
			defer tx.Rollback(context.WithoutCancel(ctx))
			r.rows, r.err = apply(ctx, tx, b, "")
			if r.err == nil {
				r.err = tx.Commit(ctx)
			}
		}()
	}
	began := time.Now()
	close(start)
	wg.Wait()
	return results, since(began)
}

// checkLedger: ledger holds 2..raceBatchSz once each, history 1..raceBatchSz.
func checkLedger(t *testing.T, db *pgtest.DB) {
	t.Helper()
	conn := db.Conn(t)
	if n := count(t, conn, "select count(*) from ledger"); n != raceBatchSz-1 {
		t.Errorf("ledger has %d rows, want %d", n, raceBatchSz-1)
	}
	if n := count(t, conn, "select count(*) from (select v from ledger group by v having count(*) > 1) d"); n != 0 {
		t.Errorf("ledger has %d duplicated versions", n)
	}
	if n := count(t, conn, "select count(distinct v) from ledger where v between 2 and $1", raceBatchSz); n != raceBatchSz-1 {
		t.Errorf("ledger has %d of the expected versions, want %d", n, raceBatchSz-1)
	}
	if n := count(t, conn, "select count(*) from pgmig.history"); n != raceBatchSz {
		t.Errorf("pgmig.history has %d rows, want %d", n, raceBatchSz)
	}
}
