package pgmig_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	pgmig "github.com/pgmig/pgmig/gowrapper"
	"github.com/pgmig/pgmig/tests/pgtest"
)

// bigTableSQL fills a table large enough for CREATE INDEX CONCURRENTLY to
// take about a second.
const bigTableSQL = "create table big (id bigint, v text);\n" +
	"insert into big select g, md5(g::text) from generate_series(1, 500000) g;\n"

// 16 pushers of one batch — five transactional migrations, a CREATE INDEX
// CONCURRENTLY, five more — at once: all succeed, each migration is
// applied once, the index is valid, and the build was not held up by the
// waiting pushers. Logs the build's time next to the same build alone.
//
// Pushers queue for the lock in LOCK TABLE, which can hold a catalog
// snapshot, in slices of at most 200 ms, and only while no
// non-transactional migration runs; during one they poll and hold nothing.
// A slice already queued when the run starts may hold up the build until
// it runs out, which is bounded. So the sampler checks that no pusher
// starts queueing once the run is visible (100 ms of slack for a check
// answered just before it was), and that the build never waits for another
// transaction's snapshot for a whole second: a waiter that queued without
// a bound would hold it up for good (then the pushes are cancelled).
func TestConcurrentPushersWithConcurrentIndex(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pushCtx, cancelPushes := context.WithCancel(ctx)
	defer cancelPushes()
	db := pgtest.NewDB(t)
	files := map[string]string{
		"001_big.sql": "create table ledger (version int not null);\n" + bigTableSQL + "insert into ledger values (1);",
		"006_index.sql": "---- tern: disable-tx ----\ncreate index concurrently big_v on big (v);\n" +
			"insert into ledger values (6);\n",
	}
	for v := 2; v <= 11; v++ {
		if v != 6 {
			files[fmt.Sprintf("%03d_m%d.sql", v, v)] = fmt.Sprintf("create table m%d (id int);\ninsert into ledger values (%d);", v, v)
		}
	}
	ms := load(t, files)
	if len(ms) != 11 || ms[5].Transactional {
		t.Fatalf("batch: %d migrations, 6th transactional=%v", len(ms), ms[5].Transactional)
	}

	const pushers = 16
	// A mix of the three kinds of Client, each on its own connection(s).
	clients := make([]*pgmig.Client, pushers)
	for i := range clients {
		switch i % 3 {
		case 0:
			clients[i] = connect(t, db.URL, nil)
		case 1:
			cfg, err := pgx.ParseConfig(db.URL)
			if err != nil {
				t.Fatal(err)
			}
			cfg.OnNotice = pgmig.HandleNotice
			conn, err := pgx.ConnectConfig(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { conn.Close(context.Background()) })
			clients[i] = pgmig.New(conn, nil)
		case 2:
			pool, err := pgxpool.New(ctx, db.URL)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(pool.Close)
			clients[i] = pgmig.NewPool(pool, nil)
		}
	}
	var (
		wg       sync.WaitGroup
		start    = make(chan struct{})
		errs     = make([]error, pushers)
		results  = make([]*pgmig.PushResult, pushers)
		mu       sync.Mutex
		indexRan time.Duration
	)
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			results[i], errs[i] = clients[i].Push(pushCtx, ms, nil)
			if errs[i] == nil {
				for _, r := range results[i].Migrations {
					if r.Version == 6 && r.Outcome == pgmig.OutcomeApplied {
						mu.Lock()
						indexRan = r.Duration
						mu.Unlock()
					}
				}
			}
		}()
	}
	// While the pushers run, count how often the index build waits for
	// another transaction's snapshot (wait event virtualxid), an idle
	// session waiting for the migration lock holds a snapshot
	// (backend_xmin), a session queued for it holds one, and a session
	// started queueing for it after the run had begun.
	sampler := db.Conn(t)
	stop := make(chan struct{})
	sampled := make(chan [5]int, 1)
	go func() {
		var n [5]int          // samples, build waiting for a snapshot, idle waiters holding one, queued waiters holding one, queued after the run began
		var stalled time.Time // since when the build waits for a snapshot
		for {
			select {
			case <-stop:
				sampled <- n
				return
			case <-time.After(10 * time.Millisecond):
			}
			var building, waitsVxid, xminWaiters, xminQueued, lateQueued int
			if err := sampler.QueryRow(ctx, `with a as (
				select *, state = 'active' and query ilike '%create index concurrently big_v%' and query not ilike '%pgmig.%' as cic
				from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid()),
				queued as (select a.* from a join pg_locks l on l.pid = a.pid
				           where l.locktype = 'relation' and l.relation = 'pgmig.history'::regclass and not l.granted)
				select count(*) filter (where cic), count(*) filter (where cic and wait_event = 'virtualxid'),
				       count(*) filter (where not cic and backend_xmin is not null and application_name like 'pgmig%' and state <> 'active'),
				       (select count(*) from queued where backend_xmin is not null),
				       (select count(*) from queued, pgmig.nontx_run r
				        where r.state = 'running' and queued.query_start > r.started_at + interval '100 ms')
				from a`).
				Scan(&building, &waitsVxid, &xminWaiters, &xminQueued, &lateQueued); err != nil {
				t.Errorf("sampling pg_stat_activity: %v", err)
				sampled <- n
				return
			}
			if building > 0 {
				n[0]++
				n[1] += min(waitsVxid, 1)
				n[2] += min(xminWaiters, 1)
				n[3] += min(xminQueued, 1)
				n[4] += min(lateQueued, 1)
			}
			switch {
			case building == 0 || waitsVxid == 0:
				stalled = time.Time{}
			case stalled.IsZero():
				stalled = time.Now()
			case time.Since(stalled) > time.Second:
				t.Errorf("the index build has waited for another transaction's snapshot for %v", time.Since(stalled))
				cancelPushes()
				stalled = time.Time{}
			}
		}
	}()
	began := time.Now()
	close(start)
	wg.Wait()
	total := time.Since(began)
	close(stop)
	samples := <-sampled
	applied := 0
	for i, err := range errs {
		if err != nil {
			t.Fatalf("pusher %d: %v", i, err)
		}
		applied += results[i].Applied
	}
	if applied != len(ms) {
		t.Errorf("pushers applied %d migrations between them, want %d", applied, len(ms))
	}
	conn := db.Conn(t)
	var ledger, distinct, history int
	var valid bool
	if err := conn.QueryRow(ctx, `select (select count(*) from ledger), (select count(distinct version) from ledger),
		(select count(*) from pgmig.history), (select indisvalid from pg_index where indexrelid = 'big_v'::regclass)`).
		Scan(&ledger, &distinct, &history, &valid); err != nil {
		t.Fatal(err)
	}
	if ledger != 11 || distinct != 11 || history != 11 || !valid {
		t.Fatalf("ledger %d rows (%d distinct), history %d rows, index valid %v", ledger, distinct, history, valid)
	}

	// The same build alone, on a copy without pushers.
	alone := pgtest.NewDB(t).Conn(t)
	if _, err := alone.Exec(ctx, bigTableSQL); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if _, err := alone.Exec(ctx, "create index concurrently big_v on big (v)"); err != nil {
		t.Fatal(err)
	}
	t.Logf("CREATE INDEX CONCURRENTLY with %d concurrent pushers waiting: %v; the same build alone: %v (all %d pushes took %v)",
		pushers-1, indexRan, time.Since(t0), pushers, total)
	t.Logf("sampled the build %d times: waiting for another transaction's snapshot in %d, an idle pgmig session holding a snapshot in %d, "+
		"a queued one holding a snapshot in %d", samples[0], samples[1], samples[2], samples[3])
	if samples[4] > 0 {
		t.Errorf("in %d of %d samples of the build a pusher had started queueing for the lock after the non-transactional migration began",
			samples[4], samples[0])
	}
}
