//go:build lint

// Package lint checks the engine's PL/pgSQL with plpgsql_check, every warning on
// (`make lint`; the build tag keeps it out of `make test`). plpgsql_check reads each
// function body through PostgreSQL's own parser against the installed objects: unknown
// columns and types, unused or never-read variables, hidden casts, SQL-injection risks
// in EXECUTE. A warning that is by design is silenced where it occurs, with an
// @plpgsql_check_options comment saying why.
package lint_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/pgmig/pgmig/tests/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestEngineFunctionsPassPlpgsqlCheck(t *testing.T) {
	ctx := context.Background()
	db := pgtest.NewDB(t)
	conn := db.Conn(t)
	if _, err := conn.Exec(ctx, "create extension if not exists plpgsql_check"); err != nil {
		t.Fatalf("plpgsql_check is not available on this server (%v): apt-get install postgresql-%d-plpgsql-check",
			err, pgtest.Server(t).ServerVersionNum()/10000)
	}
	rows, err := conn.Query(ctx, `
		select p.oid::regprocedure::text, coalesce(r.lineno, 0), r.level, r.message, coalesce(r.detail, '')
		from pg_proc as p
		join pg_language as l on l.oid = p.prolang and l.lanname = 'plpgsql'
		left join pg_trigger as tg on tg.tgfoid = p.oid
		cross join lateral plpgsql_check_function_tb(p.oid, coalesce(tg.tgrelid, 0),
			fatal_errors => false, other_warnings => true, performance_warnings => true,
			extra_warnings => true, security_warnings => true) as r
		where (p.pronamespace = 'pgmig'::regnamespace or p.proname like 'migrate\_%')
		  and (p.prorettype <> 'trigger'::regtype or tg.tgrelid is not null)
		order by 1, 2`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var found []string
	for rows.Next() {
		var fn, level, msg, detail string
		var line int
		if err := rows.Scan(&fn, &line, &level, &msg, &detail); err != nil {
			t.Fatal(err)
		}
		found = append(found, strings.TrimSpace(fmt.Sprintf("%s line %d %s: %s %s", fn, line, level, msg, detail)))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	var checked int
	if err := conn.QueryRow(ctx, `select count(*) from pg_proc p join pg_language l on l.oid = p.prolang and l.lanname = 'plpgsql'
		where p.pronamespace = 'pgmig'::regnamespace or p.proname like 'migrate\_%'`).Scan(&checked); err != nil {
		t.Fatal(err)
	}
	t.Logf("plpgsql_check, every warning on: %d PL/pgSQL routines, %d findings", checked, len(found))
	for _, f := range found {
		t.Error(f)
	}
}
