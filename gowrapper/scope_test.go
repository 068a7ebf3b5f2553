package pgmig_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	pgmig "github.com/pgmig/pgmig/gowrapper"
	"github.com/pgmig/pgmig/tests/pgtest"
)

var scopeMigrations = map[string]string{
	"001_users.sql": "create table users (id int primary key, email text);\n---- create above / drop below ----\ndrop table users;\n",
	"002_email_index.sql": "---- tern: disable-tx ----\ncreate index concurrently users_email on users (email);\n" +
		"---- create above / drop below ----\ndrop index concurrently users_email;\n",
	"003_seed.sql": "insert into users values (1, 'a@example.com');\n---- create above / drop below ----\ndelete from users;\n",
}

// TestClientScope: a Client with Config.Scope pushes (a non-transactional
// migration included), plans, reports status and rolls back inside its
// tenant schema, and leaves the database's own migrations alone.
func TestClientScope(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	ms := loadFiles(t, scopeMigrations)
	tenant := connect(t, db.URL, &pgmig.Config{Scope: "acme"})
	res, err := tenant.Push(ctx, ms, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Applied != 3 || res.Version != 3 {
		t.Fatalf("push in scope acme: %+v", res)
	}
	conn := db.Conn(t)
	var where string
	if err := conn.QueryRow(ctx, "select string_agg(schemaname || '.' || indexname, ',' order by indexname) from pg_indexes where indexname like 'users%'").Scan(&where); err != nil {
		t.Fatal(err)
	}
	if where != "acme.users_email,acme.users_pkey" {
		t.Fatalf("the tenant's objects are in %s, want schema acme (the concurrent index too)", where)
	}
	if n := count(t, conn, "select count(*) from pgmig.history where scope = ''"); n != 0 {
		t.Fatalf("the default scope has %d history rows", n)
	}
	// The same client: up to date; the default scope: everything pending.
	if res, err := tenant.Push(ctx, ms, nil); err != nil || !res.Prechecked {
		t.Fatalf("second push: %+v %v", res, err)
	}
	plan, err := connect(t, db.URL, nil).Plan(ctx, ms, nil)
	if err != nil || plan.Pending != 3 {
		t.Fatalf("default scope plan: %+v %v", plan, err)
	}
	st, err := tenant.Status(ctx)
	if err != nil || len(st.History) != 3 || st.Version != 3 {
		t.Fatalf("tenant status: %+v %v", st, err)
	}
	// Rolling back the non-transactional migration runs its down in the tenant schema too.
	rb, err := tenant.Rollback(ctx, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(rb.Migrations) != 2 {
		t.Fatalf("rollback: %+v", rb)
	}
	if n := count(t, conn, "select count(*) from pg_indexes where schemaname = 'acme' and indexname = 'users_email'"); n != 0 {
		t.Fatal("the concurrent index survived its rollback")
	}
	// A schema holding pgmig's API is not a tenant: the mistake of passing the API schema.
	_, err = connect(t, db.URL, &pgmig.Config{Scope: "public"}).Push(ctx, ms, nil)
	if !errors.Is(err, pgmig.ErrInvalidBatch) || !strings.Contains(err.Error(), "holds pgmig's API functions") {
		t.Fatalf("scope public: %v", err)
	}
}

// TestPushFleetTenants: --schemas-query as a library: 50 tenant schemas of
// one database, one of which has a migration that waits until the other 49
// are done (a gate the test opens then; it gives up after a minute): were
// any tenant waiting for it, the push would fail. Each tenant's migrations
// exactly once.
func TestPushFleetTenants(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	conn := db.Conn(t)
	if _, err := conn.Exec(ctx, "create table public.tenants (name text); create table public.gate (open boolean)"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 50; i++ {
		if _, err := conn.Exec(ctx, "insert into public.tenants values ($1)", fmt.Sprintf("t%02d", i)); err != nil {
			t.Fatal(err)
		}
	}
	ms := loadFiles(t, map[string]string{
		"001_users.sql": "create table users (id int);\n",
		"002_gate.sql": `do $$ begin
			if current_schema() = 't00' then
				for i in 1..3000 loop
					exit when exists (select from public.gate);
					perform pg_sleep(0.02);
				end loop;
				if not exists (select from public.gate) then raise 'the gate never opened'; end if;
			end if;
		end $$;
`,
	})
	base, err := pgmig.TargetOf(db.URL)
	if err != nil {
		t.Fatal(err)
	}
	targets, err := pgmig.ScopesFromQuery(ctx, []pgmig.Target{base}, "select name from public.tenants order by name", 4)
	if err != nil || len(targets) != 50 || targets[7].Scope != "t07" || !strings.HasSuffix(targets[7].Name, " schema t07") {
		t.Fatalf("targets %v %v", len(targets), err)
	}
	var others int
	var slowLast bool
	res, err := pgmig.PushFleet(ctx, targets, ms, &pgmig.FleetOpts{Parallel: 8, ContinueOnError: true, Done: func(r pgmig.TargetResult) {
		if strings.HasSuffix(r.Target, " schema t00") {
			slowLast = others == 49
			return
		}
		if others++; others == 49 {
			if _, err := pgtest.Connect(t, db.URL).Exec(ctx, "insert into public.gate values (true)"); err != nil {
				t.Error(err)
			}
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	if !slowLast {
		t.Fatal("t00 finished before the other tenants")
	}
	for _, r := range res.Targets {
		if r.Outcome != pgmig.TargetApplied || r.Version != 2 {
			t.Fatalf("%s: %+v", r.Target, r)
		}
	}
	if n := count(t, conn, "select count(*) from pgmig.history where scope like 't%'"); n != 100 {
		t.Fatalf("%d history rows for 50 tenants × 2 migrations", n)
	}
}

func count(t *testing.T, conn *pgx.Conn, sql string) int64 {
	t.Helper()
	var n int64
	if err := conn.QueryRow(context.Background(), sql).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}
