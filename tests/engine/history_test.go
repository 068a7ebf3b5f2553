package engine_test

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pgmig/pgmig/tests/pgtest"
)

// TestHistoryRecordsEverything (I5): every field of an applied migration is kept, names that
// look like SQL are stored verbatim, and the SQL is the SQL that ran.
func TestHistoryRecordsEverything(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	conn := pgtest.Connect(t, pgtest.SetParam(db.URL, "application_name", "deployer-7"))
	hostile := "x */ drop table pgmig.history; -- ' \" \n\t$$ end $$ ü"
	b := batch{
		{Version: 1, Name: hostile, SQL: "create table one (id int)", Down: "drop table one"},
		{Version: 2, Name: "two", SQL: "select pg_sleep(0.05)"},
	}
	mustApply(t, conn, b, "client_info => 'host=ci-7 pgmig/test'")

	var (
		name, checksum, sql, down, appliedBy, loginRole, app, clientInfo, kind string
		transactional                                                          bool
		appliedAt                                                              time.Time
		durationMS                                                             float64
		pid                                                                    int32
		hasAddr                                                                bool
	)
	err := conn.QueryRow(ctx, `select name, checksum, sql, down_sql, applied_by, login_role, client_application,
		client_info, kind, transactional, applied_at, extract(epoch from duration) * 1000, backend_pid,
		client_addr is not null from pgmig.history where version = 1`).Scan(&name, &checksum, &sql, &down,
		&appliedBy, &loginRole, &app, &clientInfo, &kind, &transactional, &appliedAt, &durationMS, &pid, &hasAddr)
	if err != nil {
		t.Fatal(err)
	}
	if name != hostile {
		t.Errorf("name stored as %q, want %q", name, hostile)
	}
	if checksum != sha256Hex(b[0].SQL) || sql != b[0].SQL || down != b[0].Down {
		t.Errorf("checksum/sql/down = %s / %q / %q", checksum, sql, down)
	}
	if appliedBy != pgtest.Server(t).User() || loginRole != appliedBy || app != "deployer-7" ||
		clientInfo != "host=ci-7 pgmig/test" || kind != "applied" || !transactional || pid == 0 || !hasAddr {
		t.Errorf("who/where: applied_by %q login_role %q app %q client_info %q kind %q tx %v pid %d addr %v",
			appliedBy, loginRole, app, clientInfo, kind, transactional, pid, hasAddr)
	}
	if time.Since(appliedAt) > time.Minute || time.Since(appliedAt) < 0 {
		t.Errorf("applied_at %v is not now", appliedAt)
	}
	var sleptMS float64
	if err := conn.QueryRow(ctx, "select extract(epoch from duration) * 1000 from pgmig.history where version = 2").Scan(&sleptMS); err != nil {
		t.Fatal(err)
	}
	if sleptMS < 50 {
		t.Errorf("duration of a 50 ms migration recorded as %.1f ms", sleptMS)
	}
	if n := count(t, conn, "select count(*) from pgmig.history"); n != 2 {
		t.Errorf("history has %d rows, want 2", n)
	}
}

// TestStatusShowsTheRunningMigrator: while a migrator holds the lock, migrate_status() is not
// blocked and names it; afterwards the in_progress row is gone.
func TestStatusShowsTheRunningMigrator(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	reader := db.Conn(t)
	mustApply(t, reader, tableBatch(2), "")

	holder := pgtest.Connect(t, pgtest.SetParam(db.URL, "application_name", "slow-migrator"))
	done := make(chan error, 1)
	go func() {
		_, err := apply(ctx, holder, tableBatch(3).with(3, "select pg_sleep(1.5); create table t_003 (id int)"), "")
		done <- err
	}()

	// The row names the migration being applied and for how long, once it runs.
	deadline := time.Now().Add(10 * time.Second)
	var state, client, detail string
	var version *int64
	for {
		statusCtx, cancel := context.WithTimeout(ctx, time.Second)
		err := reader.QueryRow(statusCtx, `select state, coalesce(client, ''), coalesce(detail, ''), version from migrate_status() where state = 'in_progress'`).Scan(&state, &client, &detail, &version)
		cancel()
		if err == nil && strings.Contains(detail, "applying version 3 for") && version != nil && *version == 3 {
			break
		}
		if err != nil && !strings.Contains(err.Error(), "no rows") {
			t.Fatalf("migrate_status while a migration runs: %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no in_progress row naming version 3 while the migrator held the lock (last: %q)", detail)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(client, "slow-migrator") || !strings.Contains(detail, "pid ") {
		t.Errorf("in_progress row: client %q detail %q, want the holder named", client, detail)
	}
	if n := count(t, reader, "select count(*) from migrate_status() where state = 'applied'"); n != 2 {
		t.Errorf("status while migrating shows %d applied, want the committed 2", n)
	}
	if err := <-done; err != nil {
		t.Fatalf("migrator: %v", describe(err))
	}
	if n := count(t, reader, "select count(*) from migrate_status() where state = 'in_progress'"); n != 0 {
		t.Errorf("%d in_progress rows after the migrator finished", n)
	}
}

// TestReadOnlyTransactionRefused: a read-only transaction cannot migrate (PM004), before
// anything else is tried.
func TestReadOnlyTransactionRefused(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	conn := pgtest.NewDB(t).Conn(t)
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "set transaction read only"); err != nil {
		t.Fatal(err)
	}
	_, err = apply(ctx, tx, tableBatch(1), "")
	pgError(t, err, "PM004")
}

// TestSettingsDoNotLeakBetweenMigrations: a SET LOCAL or SET in one migration (timeouts,
// DateStyle) ends with that migration, as it would with one transaction per migration. (While
// a migration runs, the session's application_name says which one, for migrate_status.)
func TestSettingsDoNotLeakBetweenMigrations(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	conn := pgtest.NewDB(t).Conn(t)
	b := batch{
		{Version: 1, Name: "settings", SQL: "create table seen (k text, v text); set local statement_timeout = '1ms'; set datestyle = 'German'"},
		{Version: 2, Name: "observe", SQL: "insert into seen select name, setting from pg_settings where name in ('statement_timeout', 'DateStyle', 'application_name')"},
	}
	mustApply(t, conn, b, "")
	rows, err := conn.Query(ctx, "select k || '=' || v from seen order by k")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		got = append(got, s)
	}
	want := regexp.MustCompile(`^DateStyle=ISO, MDY,application_name=pgmig: applying 2 @[0-9]+ pgmig-tests,statement_timeout=0$`)
	if !want.MatchString(strings.Join(got, ",")) {
		t.Errorf("migration 2 saw %v, want %s", got, want)
	}
	var ds, app string
	if err := conn.QueryRow(ctx, "select current_setting('datestyle'), current_setting('application_name')").Scan(&ds, &app); err != nil ||
		ds != "ISO, MDY" || app != "pgmig-tests" {
		t.Errorf("caller's DateStyle and application_name after the call: %q %q (%v)", ds, app, err)
	}
}

// TestHistoryDigestMatchesTheFiles: migrate_history_digest() is the documented sha256 over
// "version<TAB>name<TAB>checksum<LF>" in version order, so a client can compute it from its
// files and skip everything when they are exactly what is applied.
func TestHistoryDigestMatchesTheFiles(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	conn := pgtest.NewDB(t).Conn(t)
	digest := func(b batch) string {
		var sb strings.Builder
		for _, m := range b {
			fmt.Fprintf(&sb, "%d\t%s\t%s\n", m.Version, m.Name, sha256Hex(m.SQL))
		}
		return sha256Hex(sb.String())
	}
	var got string
	if err := conn.QueryRow(ctx, "select migrate_history_digest()").Scan(&got); err != nil || got != sha256Hex("") {
		t.Fatalf("empty history digest %q (%v), want sha256 of nothing", got, err)
	}
	b := tableBatch(12) // versions 1..12: version order differs from text order
	mustApply(t, conn, b, "")
	if err := conn.QueryRow(ctx, "select migrate_history_digest()").Scan(&got); err != nil {
		t.Fatal(err)
	}
	if want := digest(b); got != want {
		t.Fatalf("digest %s, want %s", got, want)
	}
	if got == digest(b[:11]) {
		t.Fatal("digest does not depend on the last migration")
	}
}
