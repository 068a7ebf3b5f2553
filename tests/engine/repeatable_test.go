package engine_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgmig/pgmig/tests/pgtest"
)

// repeatable is a repeatable batch entry (docs/sql-api.md, "Repeatable migrations").
type repeatable struct {
	Repeatable bool   `json:"repeatable"`
	Name       string `json:"name"`
	SQL        string `json:"sql,omitempty"`
	Checksum   string `json:"checksum,omitempty"`
	Statements []int  `json:"statements,omitempty"`
}

func rep(name, sql string) repeatable { return repeatable{Repeatable: true, Name: name, SQL: sql} }

// withRepeatables is the batch b followed by the repeatable entries, as jsonb text.
func withRepeatables(b batch, reps ...repeatable) string {
	var all []any
	for _, m := range b {
		all = append(all, m)
	}
	for _, r := range reps {
		all = append(all, r)
	}
	out, err := json.Marshal(all)
	if err != nil {
		panic(err)
	}
	return string(out)
}

// applyText is apply with the batch given as jsonb text.
func applyText(ctx context.Context, q querier, b string, opts string) ([]resultRow, error) {
	sql := "select version, name, outcome, duration, applied_at from migrate_apply($1::jsonb"
	if opts != "" {
		sql += ", " + opts
	}
	rows, err := q.Query(ctx, sql+")", b)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (resultRow, error) {
		var row resultRow
		var v *int64
		err := r.Scan(&v, &row.Name, &row.Outcome, &row.Duration, &row.AppliedAt)
		if v != nil {
			row.Version = *v
		}
		return row, err
	})
}

func mustApplyText(t *testing.T, q querier, b string, opts string) []resultRow {
	t.Helper()
	rows, err := applyText(context.Background(), q, b, opts)
	if err != nil {
		t.Fatalf("migrate_apply: %s", describe(err))
	}
	return rows
}

// runText is run with the batch given as jsonb text.
func runText(ctx context.Context, conn *pgx.Conn, b string, opts string) (map[string]any, error) {
	sql := "call migrate_run($1::jsonb, details => true"
	if opts != "" {
		sql += ", " + opts
	}
	var doc []byte
	if err := conn.QueryRow(ctx, sql+")", b).Scan(&doc); err != nil {
		return nil, err
	}
	var r map[string]any
	return r, json.Unmarshal(doc, &r)
}

// repeatableOutcomes: name -> outcome of every row without a version.
func repeatableOutcomes(rows []resultRow) map[string]string {
	m := map[string]string{}
	for _, r := range rows {
		if r.Version == 0 {
			m[r.Name] = r.Outcome
		}
	}
	return m
}

// The repeatables of these tests: a function, a view that uses it (so name order matters:
// "a_" before "b_"), and one that leaves a row per run in rledger (so a second run shows).
func repeatablesV1() []repeatable {
	return []repeatable{
		rep("b_view", "create or replace view doubled as select id, twice(id) as d from t_001"),
		rep("a_function", "create or replace function twice(int) returns int language sql as 'select $1 * 2'"),
		rep("c_ledger", "insert into rledger (name) values ('c_ledger v1')"),
	}
}

func rledgerBatch() batch {
	return append(tableBatch(2), migration{Version: 3, Name: "create_rledger", SQL: "create table rledger (name text)"})
}

// TestRepeatableApplyChangeAndMissing: applied after the versioned migrations, in name
// order, recorded with their checksum; applied again only when changed; a changed one is
// not drift; one absent from the batch is reported, not an error.
func TestRepeatableApplyChangeAndMissing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	conn := db.Conn(t)

	reps := repeatablesV1()
	rows := mustApplyText(t, conn, withRepeatables(rledgerBatch(), reps...), "")
	if got := outcomes(rows); got["applied"] != 3 || got["repeatable_applied"] != 3 {
		t.Fatalf("first apply: outcomes %v, want 3 applied and 3 repeatable_applied", got)
	}
	// Rows in version order, then the repeatables in name order.
	var names []string
	for _, r := range rows[3:] {
		names = append(names, r.Name)
	}
	if strings.Join(names, ",") != "a_function,b_view,c_ledger" {
		t.Errorf("result rows of the repeatables: %v, want name order", names)
	}
	if got := mustQueryStrings(t, conn, "select name || ':' || checksum from pgmig.repeatable order by id"); len(got) != 3 ||
		got[0] != "a_function:"+sha256Hex(reps[1].SQL) || got[1] != "b_view:"+sha256Hex(reps[0].SQL) {
		t.Errorf("recorded: %v", got)
	}
	if n := count(t, conn, "select count(*) from doubled where d = 2 * id"); n != 0 {
		t.Errorf("doubled has %d rows, want 0 (t_001 is empty)", n)
	}

	// Unchanged: not run again, by either routine (the digest fast path and the full plan).
	for _, call := range []string{"apply", "run", "apply-target"} {
		switch call {
		case "apply":
			rows = mustApplyText(t, conn, withRepeatables(rledgerBatch(), reps...), "")
		case "apply-target":
			rows = mustApplyText(t, conn, withRepeatables(rledgerBatch(), reps...), "target_version => 3")
		case "run":
			r, err := runText(ctx, conn, withRepeatables(rledgerBatch(), reps...), "")
			if err != nil {
				t.Fatal(describe(err))
			}
			if r["applied"].(float64) != 0 {
				t.Errorf("run unchanged: %v", r)
			}
		}
		if call != "run" {
			if got := repeatableOutcomes(rows); len(got) != 3 || got["c_ledger"] != "repeatable_unchanged" {
				t.Errorf("%s unchanged: %v", call, got)
			}
		}
	}
	if n := count(t, conn, "select count(*) from rledger"); n != 1 {
		t.Fatalf("rledger has %d rows after unchanged pushes, want 1", n)
	}

	// Changed: run again and recorded again, not drift (no allow_* option needed).
	reps[2] = rep("c_ledger", "insert into rledger (name) values ('c_ledger v2')")
	rows = mustApplyText(t, conn, withRepeatables(rledgerBatch(), reps...), "")
	if got := repeatableOutcomes(rows); got["c_ledger"] != "repeatable_applied" || got["a_function"] != "repeatable_unchanged" || got["b_view"] != "repeatable_unchanged" {
		t.Errorf("after a change: %v", got)
	}
	if got := mustQueryStrings(t, conn, "select name from rledger order by name"); strings.Join(got, ",") != "c_ledger v1,c_ledger v2" {
		t.Errorf("rledger: %v", got)
	}
	if got := mustQueryStrings(t, conn, "select checksum from pgmig._repeatable_state('') where name = 'c_ledger'"); len(got) != 1 || got[0] != sha256Hex(reps[2].SQL) {
		t.Errorf("c_ledger's recorded checksum %v, want the new one", got)
	}
	if n := count(t, conn, "select count(*) from pgmig.repeatable"); n != 4 {
		t.Errorf("pgmig.repeatable has %d rows, want 4 (every application kept)", n)
	}

	// The history digest covers the repeatables: equal to the batch's exactly when nothing is to do.
	var equal bool
	if err := conn.QueryRow(ctx, "select migrate_history_digest() = pgmig._batch_digest($1::jsonb)", withRepeatables(rledgerBatch(), reps...)).Scan(&equal); err != nil || !equal {
		t.Errorf("digest equal after applying: %v %v", equal, err)
	}
	if err := conn.QueryRow(ctx, "select migrate_history_digest() = pgmig._batch_digest($1::jsonb)", withRepeatables(rledgerBatch(), repeatablesV1()...)).Scan(&equal); err != nil || equal {
		t.Errorf("digest equal with an old repeatable: %v %v", equal, err)
	}

	// Missing from the batch: reported, not an error, not forgotten.
	rows = mustApplyText(t, conn, withRepeatables(rledgerBatch(), reps[1], reps[2]), "")
	if got := repeatableOutcomes(rows); got["b_view"] != "repeatable_missing" || got["a_function"] != "repeatable_unchanged" {
		t.Errorf("with b_view left out: %v", got)
	}
	plan := mustQueryStrings(t, conn, "select coalesce(version::text, '-') || ' ' || name || ' ' || outcome || ' ' || coalesce(step::text, '-') from migrate_plan($1::jsonb)",
		withRepeatables(rledgerBatch(), reps[1], rep("b_view", "create or replace view doubled as select id, twice(id) + 0 as d from t_001")))
	if strings.Join(plan, "|") != "1 create_t_001 already_applied -|2 create_t_002 already_applied -|3 create_rledger already_applied -|"+
		"- a_function repeatable_unchanged -|- b_view repeatable_pending 1|- c_ledger repeatable_missing -" {
		t.Errorf("plan: %q", plan)
	}
	status := mustQueryStrings(t, conn, "select coalesce(version::text, '-') || ' ' || name || ' ' || state || ' ' || coalesce(detail, '') from migrate_status() where version is null")
	if strings.Join(status, "|") != "- a_function repeatable applied 1 time|- b_view repeatable applied 1 time|- c_ledger repeatable applied 2 times" {
		t.Errorf("status: %q", status)
	}

	// Updating or deleting the record is refused like the history's.
	if _, err := conn.Exec(ctx, "delete from pgmig.repeatable"); err == nil {
		t.Error("delete from pgmig.repeatable was allowed")
	} else {
		pgError(t, err, "PM008")
	}
}

// TestRepeatableOnly: a batch of repeatable migrations alone is applied, and a pending
// version with a target below it keeps them pending until the call that applies it.
func TestRepeatableOnlyAndTarget(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	conn := db.Conn(t)
	only := withRepeatables(nil, rep("a", "create table only_a (id int)"))
	if got := repeatableOutcomes(mustApplyText(t, conn, only, "")); got["a"] != "repeatable_applied" {
		t.Fatalf("repeatables alone: %v", got)
	}
	if got := repeatableOutcomes(mustApplyText(t, conn, only, "")); got["a"] != "repeatable_unchanged" {
		t.Fatalf("repeatables alone, again: %v", got)
	}

	b := withRepeatables(tableBatch(3), rep("a", "create table only_a (id int)"), rep("v", "create or replace view v3 as select * from t_003"))
	rows := mustApplyText(t, conn, b, "target_version => 2")
	if got := outcomes(rows); got["applied"] != 2 || got["beyond_target"] != 1 || got["repeatable_pending"] != 1 || got["repeatable_unchanged"] != 1 {
		t.Fatalf("with a target below the newest version: %v", got)
	}
	rows = mustApplyText(t, conn, b, "target_version => 3")
	if got := outcomes(rows); got["applied"] != 1 || got["repeatable_applied"] != 1 {
		t.Fatalf("with the target reaching the newest version: %v", got)
	}
	// A dry run reports them pending and runs nothing.
	b = withRepeatables(tableBatch(3), rep("a", "create table only_a (id int)"), rep("v", "create or replace view v3 as select *, 1 as x from t_003"))
	rows = mustApplyText(t, conn, b, "dry_run => true")
	if got := repeatableOutcomes(rows); got["v"] != "repeatable_pending" {
		t.Fatalf("dry run: %v", got)
	}
	if n := count(t, conn, "select count(*) from pgmig.repeatable where name = 'v'"); n != 1 {
		t.Errorf("dry run recorded something: %d rows for v", n)
	}
	// A rehearsal runs it (after the versioned ones) and rolls it back.
	got := mustQueryStrings(t, conn, "select coalesce(version::text, '-') || ' ' || name || ' ' || outcome from migrate_rehearse($1::jsonb, statement_timeout => '0')", b)
	if strings.Join(got, "|") != "1 create_t_001 already_applied|2 create_t_002 already_applied|3 create_t_003 already_applied|- a repeatable_unchanged|- v rehearsed" {
		t.Errorf("rehearsal: %q", got)
	}
	if n := count(t, conn, "select count(*) from pgmig.repeatable where name = 'v'"); n != 1 {
		t.Errorf("rehearsal recorded something: %d rows for v", n)
	}
}

// TestRepeatableFailureAppliesNothing: a failing repeatable migration fails its transaction
// like a failing migration: the original error, a PM010 warning naming it (with the
// statement and its line), nothing of the transaction applied.
func TestRepeatableFailureAppliesNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	var w warnings
	conn := w.connect(t, db.URL)
	sql := "create or replace view ok as select 1 as x;\nselect 1/0;\n"
	bad := repeatable{Repeatable: true, Name: "broken_view", SQL: sql, Statements: []int{0, strings.Index(sql, "\nselect") + 1}}
	b := withRepeatables(tableBatch(2), rep("a_fine", "create table fine (id int)"), bad)
	_, err := applyText(ctx, conn, b, "")
	pgError(t, err, "22012")
	n := w.pm010(t)
	if n == nil || !strings.Contains(n.Message, "repeatable migration broken_view failed with SQLSTATE 22012 in statement 2 (line 2)") {
		t.Fatalf("PM010: %+v", n)
	}
	for _, q := range []string{"select count(*) from pgmig.history", "select count(*) from pgmig.repeatable",
		"select count(*) from pg_class where relname in ('t_001', 'fine', 'ok')"} {
		if got := count(t, conn, q); got != 0 {
			t.Errorf("%s: %d after the failure, want 0", q, got)
		}
	}

	// migrate_run: the same, in its last transaction; earlier transactions stay.
	w.list = nil
	_, err = runText(ctx, conn, b, "max_per_transaction => 1")
	pgError(t, err, "22012")
	if n := w.pm010(t); n == nil || !strings.Contains(n.Message, "repeatable migration broken_view") {
		t.Fatalf("PM010 from migrate_run: %+v", n)
	}
	if got := count(t, conn, "select count(*) from pgmig.history"); got != 2 {
		t.Errorf("history after the run failed in its last transaction: %d rows, want 2 (earlier transactions)", got)
	}
	if got := count(t, conn, "select count(*) from pgmig.repeatable"); got != 0 {
		t.Errorf("repeatables recorded after a failure: %d", got)
	}
}

// TestRepeatableRunsInTheLastTransaction: migrate_run commits at commit_after markers and
// every max_per_transaction migrations; the repeatable migrations all run in its last
// transaction, with the last versioned migration.
func TestRepeatableRunsInTheLastTransaction(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	conn := db.Conn(t)
	var entries []any
	for _, m := range tableBatch(4) {
		e := map[string]any{"version": m.Version, "name": m.Name, "sql": m.SQL}
		if m.Version == 2 {
			e["commit_after"] = true
		}
		entries = append(entries, e)
	}
	for _, r := range []repeatable{rep("r1", "create or replace view r1 as select * from t_004"), rep("r2", "create or replace view r2 as select * from r1"),
		rep("r3", "create or replace view r3 as select * from r2")} {
		entries = append(entries, r)
	}
	b, _ := json.Marshal(entries)
	r, err := runText(ctx, conn, string(b), "max_per_transaction => 3")
	if err != nil {
		t.Fatal(describe(err))
	}
	if r["transactions"].(float64) != 2 || r["applied"].(float64) != 7 || r["repeatable_applied"].(float64) != 3 {
		t.Fatalf("result: %v", r)
	}
	// xmin: the transaction that wrote each row.
	txOf := func(q string) []string { return mustQueryStrings(t, conn, q) }
	hist := txOf("select xmin::text from pgmig.history order by version")
	reps := txOf("select distinct xmin::text from pgmig.repeatable")
	if len(reps) != 1 || reps[0] != hist[3] || hist[1] == hist[3] {
		t.Errorf("history transactions %v, repeatables' %v: want the repeatables with version 4, after the commit at 2", hist, reps)
	}
	for _, m := range r["migrations"].([]any) {
		m := m.(map[string]any)
		if m["repeatable"] == true && m["outcome"] != "repeatable_applied" {
			t.Errorf("details: %v", m)
		}
	}
}

// TestRepeatableConcurrentCallers: 8 callers at once (migrate_apply and migrate_run) push
// the same batch: each repeatable migration is applied once.
func TestRepeatableConcurrentCallers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	const callers = 8
	b := withRepeatables(ledgerBatch(raceBatchSz), rep("count_runs", "create table if not exists runs (n int); insert into runs values (1)"),
		rep("ledger_view", "create or replace view ledger_total as select count(*) from ledger"))
	conns := make([]*pgx.Conn, callers)
	for i := range conns {
		conns[i] = db.Conn(t)
	}
	var wg sync.WaitGroup
	start := make(chan struct{})
	errs := make([]error, callers)
	for i := range conns {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			<-start
			if i%2 == 0 {
				_, errs[i] = applyText(ctx, conns[i], b, "")
			} else {
				_, errs[i] = runText(ctx, conns[i], b, "max_per_transaction => 5")
			}
		}(i)
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("caller %d: %s", i, describe(err))
		}
	}
	conn := conns[0]
	if n := count(t, conn, "select count(*) from runs"); n != 1 {
		t.Errorf("count_runs ran %d times, want 1", n)
	}
	if n := count(t, conn, "select count(*) from pgmig.repeatable"); n != 2 {
		t.Errorf("pgmig.repeatable has %d rows, want 2", n)
	}
	checkLedger(t, db)
}

// TestRepeatableScopes: each tenant scope has its own record of repeatable migrations.
func TestRepeatableScopes(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	conn := db.Conn(t)
	v1 := withRepeatables(tableBatch(1), rep("v", "create or replace view v as select * from t_001"))
	v2 := withRepeatables(tableBatch(1), rep("v", "create or replace view v as select id, 2 as two from t_001"))
	for _, s := range []string{"tenant_a", "tenant_b"} {
		if got := repeatableOutcomes(mustApplyText(t, conn, v1, "scope => '"+s+"'")); got["v"] != "repeatable_applied" {
			t.Fatalf("%s: %v", s, got)
		}
	}
	if got := repeatableOutcomes(mustApplyText(t, conn, v2, "scope => 'tenant_a'")); got["v"] != "repeatable_applied" {
		t.Fatalf("tenant_a changed: %v", got)
	}
	if got := repeatableOutcomes(mustApplyText(t, conn, v1, "scope => 'tenant_b'")); got["v"] != "repeatable_unchanged" {
		t.Fatalf("tenant_b unchanged: %v", got)
	}
	if got := repeatableOutcomes(mustApplyText(t, conn, v1, "")); got["v"] != "repeatable_pending" && got["v"] != "repeatable_applied" {
		t.Fatalf("default scope: %v", got)
	}
	if n := count(t, conn, "select count(*) from tenant_a.v where two = 2"); n != 0 {
		t.Errorf("tenant_a.v: %d", n)
	}
	if got := mustQueryStrings(t, conn, "select scope || ':' || count(*) from pgmig.repeatable group by scope order by scope"); strings.Join(got, ",") != ":1,tenant_a:2,tenant_b:1" {
		t.Errorf("rows per scope: %v", got)
	}
}

// TestRepeatableBatchValidation: malformed repeatable entries are PM001 naming the entry,
// and the engine's two validators agree on each.
func TestRepeatableBatchValidation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	conn := db.Conn(t)
	good := `{"repeatable": true, "name": "v", "sql": "select 1"}`
	cases := []struct {
		entry string
		want  string // "" = valid
	}{
		{good, ""},
		{`{"repeatable": true, "name": "v", "checksum": "` + sha256Hex("select 1") + `"}`, ""},
		{`{"repeatable": true, "name": "v", "sql": "select 1; select 2", "statements": [0, 10]}`, ""},
		{`{"repeatable": true, "name": "v", "sql": "select 1", "transactional": true}`, ""},
		{`{"repeatable": false, "version": 7, "name": "v", "sql": "select 1"}`, ""},
		{`{"repeatable": true, "name": "v", "sql": "select 1", "transactional": false}`, "must be transactional"},
		{`{"repeatable": true, "version": 3, "name": "v", "sql": "select 1"}`, `takes no version`},
		{`{"repeatable": true, "name": "v", "sql": "select 1", "down": "select 2", "commit_after": true}`, `takes no commit_after, down`},
		{`{"repeatable": true, "name": "v", "sql": "select 1", "lock_timeout": "1s", "label": "x"}`, `takes no label, lock_timeout`},
		{`{"repeatable": "yes", "name": "v", "sql": "select 1"}`, `"repeatable" must be true or false`},
		{`{"repeatable": null, "name": "v", "sql": "select 1"}`, `"repeatable" must be true or false`},
		{`{"repeatable": true, "name": " ", "sql": "select 1"}`, `"name" is empty`},
		{`{"repeatable": true, "sql": "select 1"}`, `"name" is missing`},
		{`{"repeatable": true, "name": "v"}`, `has neither "sql" nor "checksum"`},
		{`{"repeatable": true, "name": "v", "sql": "  "}`, `"sql" is empty`},
		{`{"repeatable": true, "name": "v", "sql": "select 1", "checksum": "` + sha256Hex("select 2") + `"}`, `"checksum" is not the sha256`},
		{`{"repeatable": true, "name": "v", "sql": "select 1", "statements": [5, 1]}`, `"statements" must be`},
		{`{"repeatable": true, "name": "v", "sql": "select 1", "transactonal": true}`, `unknown key`},
		{`{"repeatable": false, "name": "v", "sql": "select 1"}`, `"version" is missing`},
		{good + `, {"repeatable": true, "name": "v", "sql": "select 2"}`, `the same repeatable migration name appears 2 times (entries 2, 3)`},
	}
	for _, c := range cases {
		b := `[{"version": 1, "name": "one", "sql": "select 1"}, ` + c.entry + `]`
		var ok, none bool
		if err := conn.QueryRow(ctx, "select pgmig._batch_ok($1::jsonb), not exists (select from pgmig._batch_problems($1::jsonb))", b).Scan(&ok, &none); err != nil {
			t.Fatalf("%s: %v", c.entry, err)
		}
		if ok != none || ok != (c.want == "") {
			t.Errorf("%s: _batch_ok %v, no problems %v; want valid=%v", c.entry, ok, none, c.want == "")
		}
		_, err := applyText(ctx, conn, b, "dry_run => true")
		if c.want == "" {
			if err != nil {
				t.Errorf("%s: %s", c.entry, describe(err))
			}
			continue
		}
		e := pgError(t, err, "PM001")
		if !strings.Contains(e.Detail, "entry 2") || !strings.Contains(e.Detail, c.want) {
			t.Errorf("%s: detail %q, want entry 2 and %q", c.entry, e.Detail, c.want)
		}
		if strings.Contains(c.entry, `"repeatable": true, "name": "v"`) && !strings.Contains(e.Detail, "(repeatable v)") {
			t.Errorf("%s: detail %q does not name the repeatable migration", c.entry, e.Detail)
		}
	}
	// A pending repeatable migration given by checksum only cannot be applied.
	_, err := applyText(ctx, conn, `[{"repeatable": true, "name": "v", "checksum": "`+sha256Hex("select 1")+`"}]`, "")
	if e := pgError(t, err, "PM001"); !strings.Contains(e.Message, "repeatable v") {
		t.Errorf("manifest-only repeatable: %s", e.Message)
	}
}
