package pgmig_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	pgmig "github.com/pgmig/pgmig/gowrapper"
	"github.com/pgmig/pgmig/tests/pgtest"
)

// fingerprint is everything a rehearsal must leave as it found it: the
// catalog of the user's schemas (relations with their storage, columns,
// constraints, indexes), the data of table big, pgmig's history and audit,
// and pgmig's run records.
func fingerprint(t *testing.T, conn *pgx.Conn) string {
	t.Helper()
	var fp string
	if err := conn.QueryRow(context.Background(), `select md5(string_agg(x, '|' order by x)) from (
		select format('rel %s %s %s %s %s', n.nspname, c.relname, c.oid, c.relfilenode, c.relkind) as x
		  from pg_class c join pg_namespace n on n.oid = c.relnamespace where n.nspname not in ('pg_catalog', 'information_schema')
		union all select format('col %s %s %s %s %s', attrelid, attname, atttypid, attnum, attnotnull)
		  from pg_attribute a join pg_class c on c.oid = a.attrelid where c.relnamespace = 'public'::regnamespace
		union all select format('con %s %s', conname, pg_get_constraintdef(oid)) from pg_constraint where connamespace = 'public'::regnamespace
		union all select format('data %s', md5(coalesce((select string_agg(b::text, ',' order by b.id) from big b), '')))
		union all select format('history %s', (select string_agg(concat_ws(' ', version, name, checksum, applied_at), ',') from pgmig.history))
		union all select format('audit %s nontx %s', (select count(*) from pgmig.audit), (select count(*) from pgmig.nontx_run))
	) as f`).Scan(&fp); err != nil {
		t.Fatal(err)
	}
	return fp
}

func rehearsalDB(t *testing.T) (*pgtest.DB, *pgx.Conn) {
	t.Helper()
	db := pgtest.NewDB(t)
	conn := db.Conn(t)
	if _, err := conn.Exec(context.Background(), `create table big (id int primary key, v text);
		insert into big select g, repeat('x', 100) from generate_series(1, 20000) g;
		create table small (id int)`); err != nil {
		t.Fatal(err)
	}
	return db, conn
}

// TestRehearse: the pending migrations run for real and are measured — the
// locks each one takes with their modes, the relations it rewrites with
// their size, its WAL and duration — and nothing remains afterwards:
// catalog, data and history exactly as before. It stops before a
// non-transactional migration.
func TestRehearse(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, conn := rehearsalDB(t)
	client := connect(t, db.URL, nil)
	ms := load(t, map[string]string{
		"001_add_note.sql":     "alter table big add column note text;\n",
		"002_widen.sql":        "alter table big alter column v type varchar(200);\n",
		"003_index_small.sql":  "create index small_id on small (id);\n",
		"004_concurrently.sql": "---- tern: disable-tx ----\ncreate index concurrently big_v on big (v);\n",
		"005_after.sql":        "select 1;\n",
	})
	if _, err := client.Push(ctx, ms[:1], nil); err != nil { // version 1 applied already
		t.Fatal(err)
	}
	before := fingerprint(t, conn)
	var progress []pgmig.Progress
	res, err := client.Rehearse(ctx, ms, &pgmig.RehearseOpts{Progress: func(p pgmig.Progress) { progress = append(progress, p) }})
	if err != nil {
		t.Fatal(err)
	}
	if after := fingerprint(t, conn); after != before {
		t.Fatal("the rehearsal left something behind: catalog, data or history changed")
	}
	if res.Rehearsed != 2 || res.NotRehearsed != 2 || len(res.Migrations) != 5 {
		t.Fatalf("report: %+v", res)
	}
	outcomes := []pgmig.Outcome{pgmig.OutcomeAlreadyApplied, pgmig.OutcomeRehearsed, pgmig.OutcomeRehearsed,
		pgmig.OutcomeNotRehearsed, pgmig.OutcomeNotRehearsed}
	for i, m := range res.Migrations {
		if m.Outcome != outcomes[i] || m.File != ms[i].File {
			t.Errorf("%d: %s %s, want %s", i+1, m.File, m.Outcome, outcomes[i])
		}
	}
	rel := func(m pgmig.RehearsedMigration, name string) *pgmig.RehearsedRelation {
		for i := range m.Relations {
			if m.Relations[i].Relation == name {
				return &m.Relations[i]
			}
		}
		t.Errorf("version %d: no %s in %+v", m.Version, name, m.Relations)
		return &pgmig.RehearsedRelation{}
	}
	widen := res.Migrations[1]
	if r := rel(widen, "public.big"); !r.Rewritten || r.SizeBytes < 2_000_000 || r.LockMode != "AccessExclusiveLock" || r.Kind != "table" || r.Created {
		t.Errorf("002 on big: %+v, want rewritten (~2.5 MB) under ACCESS EXCLUSIVE", r)
	}
	if r := rel(widen, "public.big_pkey"); !r.Rewritten || r.Kind != "index" {
		t.Errorf("002 on big_pkey: %+v, want the index rebuilt", r)
	}
	if widen.WALBytes < 2_000_000 || widen.Duration <= 0 || widen.DurationMS <= 0 {
		t.Errorf("002: %d WAL bytes, %v: want the rewrite's WAL (MBs) and a duration", widen.WALBytes, widen.Duration)
	}
	index := res.Migrations[2]
	if r := rel(index, "public.small"); r.Rewritten || r.LockMode != "ShareLock" || r.Created {
		t.Errorf("003 on small: %+v, want SHARE, not rewritten", r)
	}
	if r := rel(index, "public.small_id"); !r.Created {
		t.Errorf("003 small_id: %+v, want created", r)
	}
	if res.Migrations[3].Note == "" || res.Migrations[4].Note == "" {
		t.Errorf("not rehearsed without a reason: %+v", res.Migrations[3:])
	}
	if len(progress) == 0 || progress[0].Version != 2 {
		t.Errorf("progress: %+v", progress)
	}
}

// TestRehearseFailures: a failing migration is reported as push reports it
// (the file, line and column), a blocked one with the blockers, one that
// runs past the statement timeout is stopped; nothing remains of any.
func TestRehearseFailures(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, conn := rehearsalDB(t)
	client := connect(t, db.URL, nil)
	before := fingerprint(t, conn)

	ms := load(t, map[string]string{
		"001_ok.sql":  "alter table big add column note text;\n",
		"002_bad.sql": "alter table big add column other text;\nselec 1;\n",
	})
	_, err := client.Rehearse(ctx, ms, nil)
	var merr *pgmig.MigrationError
	if !errors.As(err, &merr) || merr.File != "002_bad.sql" || merr.Location.Line != 2 || merr.Code != "42601" {
		t.Fatalf("want the failing migration with its line, got %v", err)
	}

	b := holdTable(t, db, "small")
	_, err = client.Rehearse(ctx, load(t, map[string]string{"001_alter.sql": "alter table small add column x int;\n"}),
		&pgmig.RehearseOpts{DDLLockTimeout: 200 * time.Millisecond})
	var blocked *pgmig.BlockedError
	if !errors.As(err, &blocked) || blocked.Relation != "small" || len(blocked.Blockers) == 0 || blocked.Blockers[0].PID != b.pid {
		t.Fatalf("want a *BlockedError naming small and pid %d, got %v", b.pid, err)
	}
	// The default DDL lock timeout (the engine's, 1s) is a guard rail too.
	start := time.Now()
	_, err = client.Rehearse(ctx, load(t, map[string]string{"001_alter.sql": "alter table small add column x int;\n"}), nil)
	if !errors.Is(err, pgmig.ErrBlocked) || time.Since(start) > 10*time.Second {
		t.Fatalf("with the default DDL lock timeout: %v after %v", err, time.Since(start))
	}
	b.release()

	start = time.Now()
	_, err = client.Rehearse(ctx, load(t, map[string]string{"001_slow.sql": "select pg_sleep(5);\n"}),
		&pgmig.RehearseOpts{StatementTimeout: 500 * time.Millisecond})
	if !errors.As(err, &merr) || merr.Code != "57014" || merr.File != "001_slow.sql" || time.Since(start) > 4*time.Second {
		t.Fatalf("want the statement timeout to stop the slow migration (57014), got %v after %v", err, time.Since(start))
	}
	if after := fingerprint(t, conn); after != before {
		t.Fatal("a failed rehearsal left something behind")
	}
	// The connection is usable and its statement_timeout its own again.
	var st string
	if err := client.Conn().QueryRow(ctx, "show statement_timeout").Scan(&st); err != nil || st != "0" {
		t.Errorf("statement_timeout after the rehearsals: %q %v", st, err)
	}
}
