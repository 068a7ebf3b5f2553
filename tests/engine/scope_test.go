package engine_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgmig/pgmig/tests/pgtest"
)

// TestScopeIsolation: the same batch applied in the default scope and in
// two tenant schemas lands in each schema, with a history, digest, drift
// check, rollback and status per scope.
func TestScopeIsolation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	conn := db.Conn(t)
	b := ledgerBatch(3)
	mustRun(t, conn, b, "")
	mustRun(t, conn, b, "scope => 'tenant_a'")   // its schema does not exist yet: created
	mustRun(t, conn, b, `scope => 'Tenant "B"'`) // any schema name, case and quotes kept
	for _, table := range []string{`public.ledger`, `tenant_a.ledger`, `"Tenant ""B""".ledger`} {
		if n := count(t, conn, "select count(*) from "+table); n != 2 {
			t.Fatalf("%s has %d rows, want 2 (versions 2 and 3 once each)", table, n)
		}
	}
	got := mustQueryStrings(t, conn, "select format('%s:%s:%s', scope, version, migrations) from migrate_scopes()")
	if strings.Join(got, " ") != `:3:3 Tenant "B":3:3 tenant_a:3:3` {
		t.Fatalf("migrate_scopes() = %v", got)
	}
	// Once applied in every scope: nothing to do, whatever scope.
	if r := mustRun(t, conn, b, "scope => 'tenant_a'"); r.Applied != 0 {
		t.Fatalf("second run in tenant_a applied %d", r.Applied)
	}
	var same bool
	if err := conn.QueryRow(ctx, "select migrate_history_digest('tenant_a') = migrate_history_digest() and migrate_history_digest('nobody') <> migrate_history_digest()").Scan(&same); err != nil || !same {
		t.Fatalf("digests per scope: %v %v", same, err)
	}

	// Drift in one scope is that scope's business.
	edited := b.with(3, "insert into ledger values (33)")
	_, err := run(ctx, conn, edited, "scope => 'tenant_a'")
	if e := pgError(t, err, "PM002"); !strings.Contains(e.Message, "in scope tenant_a") {
		t.Fatalf("drift message %q does not name the scope", e.Message)
	}
	if r := mustRun(t, conn, b, "scope => 'nobody_yet', dry_run => true"); r.Pending != 3 {
		t.Fatalf("a new scope has everything pending: %+v", r)
	}

	// Rollback in one scope leaves the others alone.
	if _, err := conn.Exec(ctx, "select * from migrate_rollback(0, scope => 'tenant_a')"); err == nil {
		t.Fatal("rollback past irreversible versions succeeded") // 2 and 3 have no down SQL
	}
	rows := mustQueryStrings(t, conn, "select version::text || ':' || outcome from migrate_rollback(3, scope => 'tenant_a')")
	if len(rows) != 0 {
		t.Fatalf("rollback to the newest version rolled back %v", rows)
	}
	if n := count(t, conn, "select count(*) from pgmig.history where scope = 'tenant_a'"); n != 3 {
		t.Fatalf("tenant_a history has %d rows", n)
	}
	st := mustQueryStrings(t, conn, "select version::text from migrate_status('Tenant \"B\"') where state = 'applied'")
	if strings.Join(st, ",") != "1,2,3" {
		t.Fatalf("status of Tenant \"B\": %v", st)
	}

	// Names that cannot be tenants: pgmig's schema, a system schema, the API schema.
	for _, bad := range []string{"pgmig", "pg_catalog", "public", "information_schema"} {
		_, err := run(ctx, conn, b, "scope => '"+bad+"'")
		pgError(t, err, "PM001")
	}
}

// TestScopesDoNotWaitForEachOther: 50 tenant schemas, one of which runs a
// migration that waits until the test lets it go; the 49 others are all
// applied meanwhile (were any waiting on it, the test would time out). A
// default-scope migrator waits for the tenants (it excludes them all); a
// second migrator of the busy tenant waits for it too.
func TestScopesDoNotWaitForEachOther(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	admin := db.Conn(t)
	if _, err := admin.Exec(ctx, "create table public.gate (open boolean)"); err != nil {
		t.Fatal(err)
	}
	b := ledgerBatch(3).with(2, `do $$ begin
		if current_schema() = 'tenant_00' then
			for i in 1..3000 loop
				exit when exists (select from public.gate);
				perform pg_sleep(0.02);
			end loop;
			if not exists (select from public.gate) then raise 'the gate never opened'; end if;
		end if;
		insert into ledger values (2);
	end $$`)

	const tenants = 50
	slow := make(chan error, 1)
	go func() {
		conn := pgtest.Connect(t, db.URL)
		_, err := run(ctx, conn, b, "scope => 'tenant_00'")
		slow <- err
	}()
	// The slow tenant holds its lock: wait until it is in its migration.
	deadline := time.Now().Add(30 * time.Second)
	for count(t, admin, "select count(*) from pg_stat_activity where datname = current_database() and wait_event = 'PgSleep'") == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the slow tenant's migration never started")
		}
		time.Sleep(20 * time.Millisecond)
	}

	var wg sync.WaitGroup
	errs := make(chan error, tenants)
	jobs := make(chan int)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn := pgtest.Connect(t, db.URL)
			for i := range jobs {
				// A short lock_timeout: a tenant that had to wait for another
				// would fail with PM003 instead of finishing.
				if _, err := run(ctx, conn, b, fmt.Sprintf("scope => 'tenant_%02d', lock_timeout => '5s'", i)); err != nil {
					errs <- fmt.Errorf("tenant_%02d: %s", i, describe(err))
				}
			}
		}()
	}
	start := time.Now()
	for i := 1; i < tenants; i++ {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	select {
	case err := <-slow:
		t.Fatalf("the slow tenant finished before the gate opened: %v", err)
	default:
	}
	t.Logf("49 tenants applied in %v while tenant_00 held its lock", since(start))

	// The default scope excludes every tenant, and the busy tenant excludes a second migrator of its own.
	_, err := run(ctx, admin, b, "lock_timeout => '300ms'")
	if e := pgError(t, err, "PM003"); !strings.Contains(e.Detail, "pgmig: applying 2") {
		t.Fatalf("the default scope's wait names %q, want tenant_00's migrator", e.Detail)
	}
	_, err = run(ctx, admin, b, "scope => 'tenant_00', lock_timeout => '300ms'")
	if e := pgError(t, err, "PM003"); !strings.Contains(e.Message, "in scope tenant_00") {
		t.Fatalf("PM003 message %q does not name the scope", e.Message)
	}
	holders := mustQueryStrings(t, admin, "select application_name from migrate_lock_holder('tenant_00')")
	if len(holders) != 1 || !strings.HasPrefix(holders[0], "pgmig: applying 2") {
		t.Fatalf("migrate_lock_holder('tenant_00') = %v", holders)
	}
	if got := mustQueryStrings(t, admin, "select pid::text from migrate_lock_holder('tenant_01')"); len(got) != 0 {
		t.Fatalf("an idle tenant has a lock holder: %v", got)
	}

	if _, err := admin.Exec(ctx, "insert into public.gate values (true)"); err != nil {
		t.Fatal(err)
	}
	if err := <-slow; err != nil {
		t.Fatalf("tenant_00: %s", describe(err))
	}
	for i := 0; i < tenants; i++ {
		if n := count(t, admin, fmt.Sprintf("select count(*) from tenant_%02d.ledger", i)); n != 2 {
			t.Fatalf("tenant_%02d.ledger has %d rows, want 2", i, n)
		}
	}
}

// TestScopeConcurrentCallersApplyOnce: 12 callers of the same tenant and 4
// of another, at once, each migration exactly once per tenant.
func TestScopeConcurrentCallersApplyOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	b := ledgerBatch(20)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := pgx.Connect(ctx, db.URL)
			if err != nil {
				errs <- err
				return
			}
			defer conn.Close(ctx)
			scope := "busy"
			if i%4 == 0 {
				scope = "other"
			}
			if _, err := run(ctx, conn, b, "scope => '"+scope+"'"); err != nil {
				errs <- fmt.Errorf("caller %d: %s", i, describe(err))
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	conn := db.Conn(t)
	for _, s := range []string{"busy", "other"} {
		if n := count(t, conn, "select count(*) from "+s+".ledger"); n != 19 {
			t.Fatalf("%s.ledger has %d rows, want 19 (each insert once)", s, n)
		}
		if n := count(t, conn, "select count(*) from pgmig.history where scope = $1", s); n != 20 {
			t.Fatalf("%s history has %d rows", s, n)
		}
	}
}
