package adopt_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	pgmig "github.com/pgmig/pgmig/gowrapper"
	"github.com/pgmig/pgmig/tests/pgtest"
)

// Every tool's history, reproduced, adopted: what the tool applied is
// recorded (kind baseline, nothing run), audited with the tool's rows, the
// tool's table left alone; push then has nothing to do and a new file
// applies; adopting again changes nothing.
func TestAdoptEveryTool(t *testing.T) {
	t.Parallel()
	for _, tool := range pgmig.Formats() {
		t.Run(string(tool), func(t *testing.T) {
			t.Parallel()
			b := setup(t, tool)
			ms := b.migrated(t)
			before := b.toolRows(t, toolTable[tool])
			res := b.mustAdopt(t, len(ms))
			for _, m := range res.Migrations {
				if m.Outcome != pgmig.OutcomeAdopted || m.File == "" || m.AppliedAt == nil {
					t.Errorf("result %+v: want adopted, with its file and time", m)
				}
			}
			if res.Version != ms[len(ms)-1].Version {
				t.Errorf("version after adopting: %d, want %d", res.Version, ms[len(ms)-1].Version)
			}
			var kinds []string
			for _, m := range ms {
				kinds = append(kinds, fmt.Sprintf("%d:baseline", m.Version))
			}
			if got := b.historyKinds(t); got != strings.Join(kinds, " ") {
				t.Errorf("history: %s, want %s", got, strings.Join(kinds, " "))
			}
			// The recorded SQL, down SQL and checksum are the files': later drift checks and rollbacks work.
			if n := b.count(t, `select count(*) from pgmig.history h join jsonb_to_recordset($1::jsonb) as f(version bigint, checksum text, down text)
				on f.version = h.version where h.checksum = f.checksum and h.down_sql is not distinct from nullif(f.down, '')`,
				mustBatch(t, ms)); n != len(ms) {
				t.Errorf("%d of %d history rows carry the file's checksum and down SQL", n, len(ms))
			}
			audit := b.audit(t)
			if len(audit) != 1 || audit[0].Action != "baseline" || audit[0].Details.AdoptedFrom != string(tool) ||
				audit[0].Details.Table != toolTable[tool] || audit[0].Details.Recorded != len(ms) || len(audit[0].Details.ToolRows) == 0 ||
				audit[0].Version != ms[len(ms)-1].Version {
				t.Errorf("audit: %+v", audit)
			}
			if after := b.toolRows(t, toolTable[tool]); after != before {
				t.Errorf("the tool's table changed:\n%s\n%s", before, after)
			}
			// Adopting again: nothing new, no audit row.
			res = b.mustAdopt(t, 0)
			for _, m := range res.Migrations {
				if m.Outcome != pgmig.OutcomeAlreadyApplied {
					t.Errorf("adopting again: %+v", m)
				}
			}
			if n := len(b.audit(t)); n != 1 {
				t.Errorf("adopting again wrote an audit row (%d)", n)
			}
			b.pushAfter(t)
		})
	}
}

func mustBatch(t *testing.T, ms []*pgmig.Migration) string {
	t.Helper()
	batch, err := pgmig.Batch(ms)
	if err != nil {
		t.Fatal(err)
	}
	return string(batch)
}

// --drop-old drops the tool's table in the same transaction; its rows stay
// in the audit. A dry run checks, records nothing and keeps the table.
func TestAdoptDropOldAndDryRun(t *testing.T) {
	t.Parallel()
	b := setup(t, pgmig.FormatDbmate)
	ms := b.migrated(t)
	before := b.snapshot(t, toolTable[b.tool])
	res, err := b.adopt(t, &pgmig.AdoptOpts{DryRun: true, DropOld: true})
	if err != nil || res.Changed != len(ms) {
		t.Fatalf("dry run: %v %+v", err, res)
	}
	for _, m := range res.Migrations {
		if m.Outcome != pgmig.OutcomePendingAdopt {
			t.Errorf("dry run: %+v", m)
		}
	}
	if b.snapshot(t, toolTable[b.tool]) != before {
		t.Fatal("a dry run changed the database")
	}
	if _, err := b.adopt(t, &pgmig.AdoptOpts{DropOld: true}); err != nil {
		t.Fatal(err)
	}
	if n := b.count(t, "select count(*) from pg_class where oid = to_regclass('public.schema_migrations')"); n != 0 {
		t.Fatal("--drop-old left the table")
	}
	audit := b.audit(t)
	if len(audit) != 1 || !audit[0].Details.Dropped || len(audit[0].Details.ToolRows) != len(ms) ||
		!strings.Contains(string(audit[0].Details.ToolRows[0]), `"version": "20230601100000"`) {
		t.Fatalf("audit: %+v", audit)
	}
	b.pushAfter(t)
}

func TestAdoptGolangMigrateRefusals(t *testing.T) {
	t.Parallel()
	t.Run("dirty", func(t *testing.T) {
		t.Parallel()
		b := setup(t, pgmig.FormatGolangMigrate)
		b.migrated(t)
		b.exec(t, `update "public"."schema_migrations" set dirty = true`)
		b.refused(t, toolTable[b.tool], "version 20240220080000 is dirty", "`migrate force V`")
	})
	t.Run("dirty first migration", func(t *testing.T) {
		t.Parallel()
		b := setup(t, pgmig.FormatGolangMigrate)
		b.migrated(t)
		// golang-migrate's NilVersion: the first migration failed.
		b.exec(t, `TRUNCATE "public"."schema_migrations"; INSERT INTO "public"."schema_migrations" VALUES (-1, true)`)
		b.refused(t, toolTable[b.tool], "version -1 is dirty")
	})
	t.Run("no file", func(t *testing.T) {
		t.Parallel()
		b := setup(t, pgmig.FormatGolangMigrate)
		b.migrated(t)
		b.exec(t, `update "public"."schema_migrations" set version = 20240301000000`)
		b.refused(t, toolTable[b.tool], "version 20240301000000: recorded by golang-migrate, but no migration file has it; restore the file")
	})
	t.Run("two rows", func(t *testing.T) {
		t.Parallel()
		b := setup(t, pgmig.FormatGolangMigrate)
		b.migrated(t)
		b.exec(t, `INSERT INTO "public"."schema_migrations" VALUES (20240105093000, false)`)
		b.refused(t, toolTable[b.tool], "public.schema_migrations holds 2 rows; golang-migrate keeps one")
	})
}

func TestAdoptGooseRefusals(t *testing.T) {
	t.Parallel()
	t.Run("rolled back", func(t *testing.T) {
		t.Parallel()
		b := setup(t, pgmig.FormatGoose)
		b.migrated(t)
		// goose before v3 recorded a down as a row.
		b.exec(t, "INSERT INTO goose_db_version (version_id, is_applied) VALUES (2, false)")
		pgErr := b.refused(t, toolTable[b.tool], "version 2 is recorded as rolled back (is_applied = false)", "`goose up -allow-missing`")
		if strings.Contains(pgErr.Detail, "not recorded by goose") {
			t.Errorf("version 2 is named twice:\n%s", pgErr.Detail)
		}
	})
	t.Run("rolled back then applied again", func(t *testing.T) {
		t.Parallel()
		b := setup(t, pgmig.FormatGoose)
		b.migrated(t)
		b.exec(t, "INSERT INTO goose_db_version (version_id, is_applied) VALUES (2, false), (2, true)")
		b.mustAdopt(t, 4)
	})
	t.Run("missing", func(t *testing.T) {
		t.Parallel()
		b := setup(t, pgmig.FormatGoose)
		b.migrated(t)
		b.exec(t, "DELETE FROM goose_db_version WHERE version_id = 3")
		b.refused(t, toolTable[b.tool], "version 3 (index_users_email): not recorded by goose, though older than the newest version it applied (20240131120000)",
			"`goose up -allow-missing` applies it")
	})
	t.Run("no file", func(t *testing.T) {
		t.Parallel()
		b := setup(t, pgmig.FormatGoose)
		b.migrated(t)
		if err := os.Remove(filepath.Join(b.dir, "00002_users_touch_trigger.sql")); err != nil {
			t.Fatal(err)
		}
		b.refused(t, toolTable[b.tool], "version 2: recorded by goose, but no migration file has it",
			"delete its rows from public.goose_db_version")
	})
}

func TestAdoptDbmateRefusals(t *testing.T) {
	t.Parallel()
	t.Run("missing", func(t *testing.T) {
		t.Parallel()
		b := setup(t, pgmig.FormatDbmate)
		b.migrated(t)
		b.exec(t, "delete from public.schema_migrations where version = '20230601100500'")
		b.refused(t, toolTable[b.tool], "version 20230601100500 (create_tasks): not recorded by dbmate", "`dbmate up` applies it")
	})
	t.Run("no file", func(t *testing.T) {
		t.Parallel()
		b := setup(t, pgmig.FormatDbmate)
		b.migrated(t)
		b.exec(t, "insert into public.schema_migrations (version) values ('20231001000000')")
		b.refused(t, toolTable[b.tool], "version 20231001000000: recorded by dbmate, but no migration file has it")
	})
	t.Run("one number twice", func(t *testing.T) {
		t.Parallel()
		b := setup(t, pgmig.FormatDbmate)
		b.migrated(t)
		b.exec(t, "insert into public.schema_migrations (version) values ('020230601100000')")
		b.refused(t, toolTable[b.tool], "version 20230601100000 is recorded 2 times ('020230601100000', '20230601100000')")
	})
}

func TestAdoptSQLMigrateRefusals(t *testing.T) {
	t.Parallel()
	t.Run("renamed", func(t *testing.T) {
		t.Parallel()
		b := setup(t, pgmig.FormatSQLMigrate)
		b.migrated(t)
		if err := os.Rename(filepath.Join(b.dir, "20220301090500-create_books.sql"), filepath.Join(b.dir, "20220301090500-books.sql")); err != nil {
			t.Fatal(err)
		}
		b.refused(t, toolTable[b.tool], "version 20220301090500: recorded as '20220301090500-create_books.sql', but the file of version 20220301090500 is named 'books'",
			"give the file its recorded name back")
	})
	t.Run("missing", func(t *testing.T) {
		t.Parallel()
		b := setup(t, pgmig.FormatSQLMigrate)
		b.migrated(t)
		b.exec(t, `delete from "gorp_migrations" where id = '20220301090000-create_authors.sql'`)
		b.refused(t, toolTable[b.tool], "version 20220301090000 (create_authors): not recorded by sql-migrate", "`sql-migrate up` applies it")
	})
	t.Run("no file", func(t *testing.T) {
		t.Parallel()
		b := setup(t, pgmig.FormatSQLMigrate)
		b.migrated(t)
		b.exec(t, `insert into "gorp_migrations" values ('20220501000000-seed.sql', now()), ('README-notes.sql', now())`)
		b.refused(t, toolTable[b.tool], "version 20220501000000-seed.sql: recorded by sql-migrate, but no migration file has it",
			"version README-notes.sql has no pgmig version")
	})
}

func TestAdoptTernRefusal(t *testing.T) {
	t.Parallel()
	b := setup(t, pgmig.FormatTern)
	b.migrated(t)
	b.exec(t, "update public.schema_version set version = 5")
	b.refused(t, toolTable[b.tool], "version 5: recorded by tern, but no migration file has it")
}

// Flyway's table as Flyway fills it: its schema-creation marker, every
// migration's checksum over the file as written (CRLF, byte-order mark,
// placeholder: the golden numbers), a repeatable migration (not adopted).
func TestAdoptFlyway(t *testing.T) {
	t.Parallel()
	flyway := func(t *testing.T) (*bundle, []*pgmig.Migration) {
		b := setup(t, pgmig.FormatFlyway)
		ctx := context.Background()
		all := b.load(t)
		if _, err := b.client.Push(ctx, all, nil); err != nil {
			t.Fatal(err)
		}
		// What Flyway applied, pgmig never did: no history, no repeatable migration recorded.
		b.exec(t, "begin; set local pgmig.maintenance = 'on'; delete from pgmig.history; delete from pgmig.repeatable; commit")
		var ms []*pgmig.Migration // the versioned ones (Load returns the repeatable one last)
		for _, m := range all {
			if !m.Repeatable {
				ms = append(ms, m)
			}
		}
		b.exec(t, createTable[b.tool])
		b.flywayRow(t, 1, nil, "<< Flyway Schema Creation >>", "SCHEMA", `"public"`, nil, true)
		for i, m := range ms {
			b.flywayRow(t, i+2, m.Label, strings.ReplaceAll(m.Name, "_", " "), "SQL", m.File, flywayChecksums[m.File], true)
		}
		b.flywayRow(t, len(ms)+2, nil, "warehouse view", "SQL", "R__warehouse_view.sql", flywayChecksums["R__warehouse_view.sql"], true)
		return b, ms
	}
	t.Run("adopted", func(t *testing.T) {
		t.Parallel()
		b, ms := flyway(t)
		for _, m := range ms {
			if sum, ok := m.FlywayChecksum(); !ok || sum != flywayChecksums[m.File] {
				t.Errorf("%s: FlywayChecksum %d, %v; Flyway's is %d", m.File, sum, ok, flywayChecksums[m.File])
			}
		}
		b.mustAdopt(t, len(ms))
		if a := b.audit(t); len(a) != 1 || a[0].Details.Checksums != "given by the client" {
			t.Errorf("audit: %+v", a)
		}
		b.pushAfter(t)
	})
	t.Run("checksum changed", func(t *testing.T) {
		t.Parallel()
		b, _ := flyway(t)
		writeFile(t, filepath.Join(b.dir, "V1.1__add_warehouse_city.sql"), "ALTER TABLE warehouses ADD COLUMN city text NOT NULL DEFAULT '';\n")
		b.refused(t, toolTable[b.tool], "version 1.1 (add_warehouse_city): Flyway recorded checksum -189483942, the file's is ",
			"`flyway repair` records the new checksum")
	})
	t.Run("line endings do not count", func(t *testing.T) {
		t.Parallel()
		b, _ := flyway(t)
		p := filepath.Join(b.dir, "V1_2__index_warehouse_code.sql")
		text, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, p, strings.ReplaceAll(string(text), "\r\n", "\n"))
		// pgmig's own checksum is of the SQL as it is: recorded as adopted, it is the LF file's.
		b.mustAdopt(t, 5)
	})
	t.Run("description changed", func(t *testing.T) {
		t.Parallel()
		b, _ := flyway(t)
		if err := os.Rename(filepath.Join(b.dir, "V1__create_warehouses.sql"), filepath.Join(b.dir, "V1__warehouses.sql")); err != nil {
			t.Fatal(err)
		}
		b.refused(t, toolTable[b.tool], "version 1: recorded with the description 'create warehouses', the file's is 'warehouses'")
	})
	t.Run("failed", func(t *testing.T) {
		t.Parallel()
		b, ms := flyway(t)
		// Flyway records a failure where it could not roll back: a non-transactional migration.
		b.exec(t, `update "public"."flyway_schema_history" set success = false where version = '1.2'`)
		b.flywayRow(t, len(ms)+3, nil, "warehouse view", "SQL", "R__warehouse_view.sql", 5, false)
		b.refused(t, toolTable[b.tool], "version 1.2 failed (success = false): Flyway's fix: undo what the migration did",
			"repeatable migration R__warehouse_view.sql failed")
	})
	t.Run("no file", func(t *testing.T) {
		t.Parallel()
		b, ms := flyway(t)
		b.flywayRow(t, len(ms)+3, "2.2", "drop stock", "SQL", "V2.2__drop_stock.sql", 7, true)
		b.flywayRow(t, len(ms)+4, "9.1.2.3", "odd", "SQL", "V9.1.2.3__odd.sql", 8, true)
		b.refused(t, toolTable[b.tool], "version 2.2: recorded by flyway, but no migration file has it", "`flyway repair` marks it deleted",
			"version 9.1.2.3 has no pgmig version")
	})
	t.Run("out of order", func(t *testing.T) {
		t.Parallel()
		b, _ := flyway(t)
		b.exec(t, `delete from "public"."flyway_schema_history" where version = '1.1'`)
		b.refused(t, toolTable[b.tool], "version 1.1 (add_warehouse_city): not recorded by flyway, though older than the newest version it applied (2.1)",
			"`flyway migrate -outOfOrder=true` applies it")
	})
	t.Run("deleted by repair", func(t *testing.T) {
		t.Parallel()
		b, ms := flyway(t)
		// flyway repair marked 2.1 deleted; its file is gone: not applied, not missing.
		if err := os.RemoveAll(filepath.Join(b.dir, "archive")); err != nil {
			t.Fatal(err)
		}
		b.flywayRow(t, len(ms)+3, "2.1", "create stock", "DELETE", "archive/V2.1__create_stock.sql", nil, true)
		b.mustAdopt(t, 4)
	})
	t.Run("baseline", func(t *testing.T) {
		t.Parallel()
		b := setup(t, pgmig.FormatFlyway)
		ms := b.load(t)
		if _, err := b.client.Push(context.Background(), ms, nil); err != nil {
			t.Fatal(err)
		}
		b.exec(t, "begin; set local pgmig.maintenance = 'on'; delete from pgmig.history; commit")
		b.exec(t, createTable[b.tool])
		// flyway baseline -baselineVersion=1.2, then migrate: 2 and 2.1 applied.
		b.flywayRow(t, 1, "1.2", "<< Flyway Baseline >>", "BASELINE", "<< Flyway Baseline >>", nil, true)
		b.flywayRow(t, 2, "2", "comment owner", "SQL", "V2__comment_owner.sql", flywayChecksums["V2__comment_owner.sql"], true)
		b.flywayRow(t, 3, "2.1", "create stock", "SQL", "archive/V2.1__create_stock.sql", flywayChecksums["archive/V2.1__create_stock.sql"], true)
		b.mustAdopt(t, len(ms)-1) // all but the repeatable migration, which Load returns last
		b.pushAfter(t)
	})
	// From psql: no checksums given, the engine computes them from the SQL.
	// Right for files without placeholders; a file with one needs its
	// checksum passed.
	t.Run("from SQL", func(t *testing.T) {
		t.Parallel()
		b, ms := flyway(t)
		var withPlaceholder, without []*pgmig.Migration
		for _, m := range ms {
			if strings.Contains(m.File, "comment_owner") {
				withPlaceholder = append(withPlaceholder, m)
			} else {
				without = append(without, m)
			}
		}
		_, err := b.conn.Exec(context.Background(), "select * from migrate_adopt($1::text, 'flyway')", mustBatch(t, ms))
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "PM020" || !strings.Contains(pgErr.Detail, "version 2 (comment_owner): Flyway recorded checksum 583550800") ||
			!strings.Contains(pgErr.Detail, "computed from the batch's SQL") {
			t.Fatalf("a placeholder file without its checksum: %v", err)
		}
		sums, _ := json.Marshal(map[string]int32{"20000": flywayChecksums["V2__comment_owner.sql"]})
		rows, err := b.conn.Query(context.Background(), "select version, outcome from pgmig.migrate_adopt($1::jsonb, 'flyway', checksums => $2::jsonb)",
			mustBatch(t, ms), string(sums))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for rows.Next() {
			var v int64
			var outcome string
			if err := rows.Scan(&v, &outcome); err != nil {
				t.Fatal(err)
			}
			if outcome == "adopted" {
				n++
			}
		}
		if rows.Err() != nil || n != len(without)+len(withPlaceholder) {
			t.Fatalf("adopted %d, want %d: %v", n, len(ms), rows.Err())
		}
		if a := b.audit(t); len(a) != 1 || a[0].Details.Checksums != "given by the client" {
			t.Errorf("audit: %+v", a)
		}
	})
}

// The table is data: named as the tool names it, looked up in the
// caller's search_path, quoted, refused when it does not exist or is
// another tool's.
func TestAdoptTable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	t.Run("not there", func(t *testing.T) {
		t.Parallel()
		b := setup(t, pgmig.FormatGoose)
		_, err := b.adopt(t, nil)
		var pgErr *pgconn.PgError
		if !errors.Is(err, pgmig.ErrInvalidBatch) || !errors.As(err, &pgErr) ||
			!strings.Contains(pgErr.Message, "goose's history table goose_db_version does not exist (looked in schema public)") {
			t.Fatalf("no table: %v", err)
		}
		_, err = b.adopt(t, &pgmig.AdoptOpts{Table: `x"; drop table pgmig.history; --`})
		if !errors.Is(err, pgmig.ErrInvalidBatch) || b.count(t, "select count(*) from pgmig.history") != 0 {
			t.Fatalf("a hostile name: %v", err)
		}
	})
	t.Run("another tool's", func(t *testing.T) {
		t.Parallel()
		b := setup(t, pgmig.FormatGolangMigrate)
		b.migrated(t)
		_, err := b.client.Adopt(ctx, b.load(t), pgmig.FormatDbmate, nil)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "PM001" ||
			!strings.Contains(pgErr.Message, "public.schema_migrations is not dbmate's history table: its column version holds numbers, not text (it looks like golang-migrate's)") {
			t.Fatalf("golang-migrate's table taken for dbmate's: %v", err)
		}
	})
	t.Run("schema and quotes", func(t *testing.T) {
		t.Parallel()
		b := setup(t, pgmig.FormatGoose)
		b.migrated(t)
		b.exec(t, `create schema "Ops"; alter table goose_db_version rename to "Goose"; alter table "Goose" set schema "Ops"`)
		b.mustAdoptWith(t, &pgmig.AdoptOpts{Table: `"Ops"."Goose"`}, 4)
	})
	t.Run("search_path", func(t *testing.T) {
		t.Parallel()
		b := setup(t, pgmig.FormatGoose)
		b.migrated(t)
		b.exec(t, `create schema app; alter table goose_db_version set schema app`)
		client, err := pgmig.Connect(ctx, pgtest.SetParam(b.db.URL, "search_path", "app,public"), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close(ctx)
		res, err := client.Adopt(ctx, b.load(t), pgmig.FormatGoose, nil)
		if err != nil || res.Changed != 4 {
			t.Fatalf("the table in the search_path: %v %+v", err, res)
		}
		if a := b.audit(t); len(a) != 1 || a[0].Details.Table != "app.goose_db_version" {
			t.Fatalf("audit: %+v", a)
		}
	})
	t.Run("bad arguments", func(t *testing.T) {
		t.Parallel()
		b := setup(t, pgmig.FormatGoose)
		for _, q := range []string{
			"select * from pgmig.migrate_adopt('[]', 'liquibase')",
			`select * from pgmig.migrate_adopt('[]', 'flyway', checksums => '{"1": "x"}')`,
			`select * from pgmig.migrate_adopt('[]', 'flyway', checksums => '{"1": 4294967296}')`,
		} {
			_, err := b.conn.Exec(ctx, q)
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.Code != "PM001" {
				t.Errorf("%s: %v", q, err)
			}
		}
	})
}

func (b *bundle) mustAdoptWith(t *testing.T, opts *pgmig.AdoptOpts, want int) {
	t.Helper()
	res, err := b.adopt(t, opts)
	if err != nil || res.Changed != want {
		t.Fatalf("adopt: %v %+v (want %d adopted)", err, res, want)
	}
}

// Adoption runs under the migration lock: racing adopters (replicas
// starting with the same command) record each migration once; the tool's
// table is locked too, so a tool still writing to it is waited for.
func TestAdoptConcurrentAndLocked(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, pgmig.FormatGoose)
	ms := b.migrated(t)

	// goose still running, its transaction open on its table.
	holder := b.db.Conn(t)
	if _, err := holder.Exec(ctx, "begin; insert into goose_db_version (version_id, is_applied) values (20240131120000, true)"); err != nil {
		t.Fatal(err)
	}
	_, err := b.adopt(t, &pgmig.AdoptOpts{LockTimeout: 200 * time.Millisecond})
	if !errors.Is(err, pgmig.ErrLockTimeout) || !strings.Contains(err.Error(), "a lock on goose's table public.goose_db_version") {
		t.Fatalf("adopting while goose writes: %v", err)
	}
	if _, err := holder.Exec(ctx, "rollback"); err != nil {
		t.Fatal(err)
	}

	const adopters = 8
	var wg sync.WaitGroup
	adopted := make([]int, adopters)
	errs := make([]error, adopters)
	for i := range adopters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client, err := pgmig.Connect(ctx, b.db.URL, nil)
			if err != nil {
				errs[i] = err
				return
			}
			defer client.Close(ctx)
			res, err := client.Adopt(ctx, ms, pgmig.FormatGoose, nil)
			if err == nil {
				adopted[i] = res.Changed
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	total := 0
	for i := range adopters {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		total += adopted[i]
	}
	if total != len(ms) || b.count(t, "select count(*) from pgmig.history") != len(ms) || len(b.audit(t)) != 1 {
		t.Fatalf("%d adopters adopted %d in all (want %d), %d audit rows", adopters, total, len(ms), len(b.audit(t)))
	}
}

// pgmig's own history must still match the files.
func TestAdoptDriftInPgmigHistory(t *testing.T) {
	t.Parallel()
	b := setup(t, pgmig.FormatGoose)
	ms := b.migrated(t)
	if _, err := b.client.Baseline(context.Background(), ms, 1, nil); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(b.dir, "00001_create_users.sql"), "-- +goose Up\nCREATE TABLE users (id bigint);\n")
	before := b.snapshot(t, toolTable[b.tool])
	if _, err := b.adopt(t, nil); !errors.Is(err, pgmig.ErrDrift) || !strings.Contains(err.Error(), "nothing was adopted") {
		t.Fatalf("adopt with drift in pgmig's history: %v", err)
	}
	if b.snapshot(t, toolTable[b.tool]) != before {
		t.Fatal("changed")
	}
}
