package pgmig_test

import (
	"context"
	"path/filepath"
	"testing"

	pgmig "github.com/pgmig/pgmig/gowrapper"
	"github.com/pgmig/pgmig/tests/pgtest"
)

// formatFixtureOpts: the data the fixtures' substitutions need (goose's
// ENVSUB, Flyway's placeholders).
var formatFixtureOpts = &pgmig.LoadOpts{
	Env:  map[string]string{"TEAM_NAME": "payments"},
	Data: map[string]any{"owner": "logistics"},
}

// TestPushEveryFormat: each tool's directory, as that tool has it, loads
// with its format detected and is applied by Push against the real server,
// non-transactional migrations included (their indexes valid); a second
// push finds nothing to do, without taking the lock.
func TestPushEveryFormat(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		format pgmig.Format
		// What the migrations built, checked with one query each
		// returning true.
		checks []string
	}{
		{pgmig.FormatTern, []string{
			`select indisvalid from pg_index where indexrelid = 'accounts_email_idx'::regclass`,
			`select count(*) = 1 from pg_trigger where tgname = 'accounts_touch'`,
		}},
		{pgmig.FormatGolangMigrate, []string{
			`select indisvalid from pg_index where indexrelid = 'orders_customer_idx'::regclass`,
			`select obj_description('customers'::regclass) = 'one row per paying customer'`,
			`select count(*) = 3 from pg_enum where enumtypid = 'order_status'::regtype`,
			`select count(*) = 1 from pg_trigger where tgname = 'orders_touch'`,
		}},
		{pgmig.FormatGoose, []string{
			`select indisvalid and indisunique from pg_index where indexrelid = 'users_email_key'::regclass`,
			`select obj_description('users'::regclass) = 'owned by payments, contact nobody'`,
			`select col_description('users'::regclass, 5) = 'costs ${not substituted}'`,
			`select count(*) = 1 from users where username = 'admin'`,
			`select count(*) = 1 from pg_trigger where tgname = 'users_touch'`,
		}},
		{pgmig.FormatDbmate, []string{
			`select indisvalid from pg_index where indexrelid = 'tasks_project_idx'::regclass`,
			`select tasks_open(1) = 0`,
			`select to_regclass('labels') is not null and to_regclass('label_aliases') is not null`,
			`select count(*) = 1 from projects where name = 'inbox'`,
		}},
		{pgmig.FormatSQLMigrate, []string{
			`select indisvalid from pg_index where indexrelid = 'books_author_idx'::regclass`,
			`select count(*) = 0 from books_of(1)`,
			`select count(*) = 1 from authors where name = 'Ursula'`,
		}},
		{pgmig.FormatFlyway, []string{
			`select indisvalid and indisunique from pg_index where indexrelid = 'warehouses_code_key'::regclass`,
			`select indisvalid from pg_index where indexrelid = 'stock_sku_idx'::regclass`,
			`select obj_description('warehouses'::regclass) = 'owned by logistics, created by V2__comment_owner.sql'`,
			`select count(*) = 1 from warehouses where code = 'BER1'`,
			`select count(*) = 1 from information_schema.columns where table_name = 'stock' and column_name = 'updated_at'`,
			// The repeatable migration is applied after the versioned ones.
			`select to_regclass('warehouse_totals') is not null`,
		}},
	} {
		t.Run(string(tc.format), func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			l, err := pgmig.LoadDirAll(filepath.Join("testdata", "formats", string(tc.format)), formatFixtureOpts)
			if err != nil {
				t.Fatal(err)
			}
			if l.Format != tc.format {
				t.Fatalf("detected %s, want %s", l.Format, tc.format)
			}
			nontx := 0
			for _, m := range l.Migrations {
				if !m.Transactional {
					nontx++
				}
			}
			if nontx == 0 {
				t.Fatal("the fixture has no non-transactional migration")
			}
			db := pgtest.NewDB(t)
			client := connect(t, db.URL, nil)
			res, err := client.Push(ctx, l.All(), nil)
			if err != nil {
				t.Fatal(err)
			}
			last := l.Migrations[len(l.Migrations)-1]
			if res.Applied != len(l.All()) || res.RepeatableApplied != len(l.Repeatable) || res.Version != last.Version {
				t.Fatalf("first push applied %d of %d, version %d (want %d)", res.Applied, len(l.All()), res.Version, last.Version)
			}
			for i, r := range res.Migrations {
				m := l.All()[i]
				want := pgmig.OutcomeApplied
				if m.Repeatable {
					want = pgmig.OutcomeRepeatableApplied
				}
				if r.Version != m.Version || r.Name != m.Name || r.Outcome != want || r.File != m.File || r.Repeatable != m.Repeatable {
					t.Errorf("result %d: %+v, want %d %s (%s) %s", i, r, m.Version, m.Name, m.File, want)
				}
			}
			conn := db.Conn(t)
			for _, q := range tc.checks {
				var ok bool
				if err := conn.QueryRow(ctx, q).Scan(&ok); err != nil || !ok {
					t.Errorf("%s: %v %v", q, ok, err)
				}
			}
			// What the history recorded is what the files say.
			st, err := client.Status(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(st.History) != len(l.All()) {
				t.Fatalf("history holds %d rows, want %d", len(st.History), len(l.All()))
			}
			for i, h := range st.History[:len(l.Migrations)] { // newest first, then the repeatable ones
				m := l.Migrations[len(l.Migrations)-1-i]
				if h.Version != m.Version || h.Name != m.Name || h.Checksum != m.Checksum || h.State != "applied" {
					t.Errorf("history row %d: %+v, want %d %s %s", i, h, m.Version, m.Name, m.Checksum)
				}
			}

			// Loaded again, the same files are already applied.
			again, err := pgmig.LoadDir(filepath.Join("testdata", "formats", string(tc.format)), formatFixtureOpts)
			if err != nil {
				t.Fatal(err)
			}
			res, err = client.Push(ctx, again, nil)
			if err != nil {
				t.Fatal(err)
			}
			if res.Applied != 0 || !res.Prechecked || res.Version != last.Version {
				t.Fatalf("second push: %+v", res)
			}
		})
	}
}
