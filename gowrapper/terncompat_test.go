package pgmig_test

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/jackc/tern/v2/migrate"
	pgmig "github.com/pgmig/pgmig/gowrapper"
	"github.com/pgmig/pgmig/tests/pgtest"
)

// TestTernCompatibility loads testdata/terncompat (templates with data, a
// shared file in a sub-folder, sprig, down sections, the disable-tx marker,
// a non-migration file) with pgmig and with tern's own Migrator, runs tern
// against a real database, and requires pgmig's SQL to be exactly what tern
// ran.
func TestTernCompatibility(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const dir = "testdata/terncompat"
	data := map[string]any{"prefix": "app_"}

	ours, err := pgmig.LoadDir(dir, &pgmig.LoadOpts{Data: data})
	if err != nil {
		t.Fatal(err)
	}

	db := pgtest.NewEmptyDB(t)
	tern, err := migrate.NewMigrator(ctx, db.Conn(t), "public.schema_version")
	if err != nil {
		t.Fatal(err)
	}
	tern.Data = data
	if err := tern.LoadMigrations(os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	ran := map[int32]string{}
	tern.OnStart = func(seq int32, name, direction, sql string) {
		if direction == "up" {
			ran[seq] = sql
		}
	}
	if err := tern.Migrate(ctx); err != nil {
		t.Fatal(err)
	}

	if len(ours) != len(tern.Migrations) || len(ours) != 4 {
		t.Fatalf("pgmig loaded %d migrations, tern %d", len(ours), len(tern.Migrations))
	}
	for i, m := range ours {
		tm := tern.Migrations[i]
		if m.Version != int64(tm.Sequence) || m.File != tm.Name {
			t.Errorf("%d: pgmig %d %s, tern %d %s", i, m.Version, m.File, tm.Sequence, tm.Name)
		}
		if m.SQL != tm.UpSQL || m.SQL != ran[tm.Sequence] {
			t.Errorf("%s: up SQL differs\npgmig: %q\ntern:  %q\nran:   %q", m.File, m.SQL, tm.UpSQL, ran[tm.Sequence])
		}
		if m.Down != tm.DownSQL {
			t.Errorf("%s: down SQL differs\npgmig: %q\ntern:  %q", m.File, m.Down, tm.DownSQL)
		}
		if want := m.File != "003_index_concurrently.sql"; m.Transactional != want {
			t.Errorf("%s: Transactional = %v, want %v", m.File, m.Transactional, want)
		}
	}
	// The expansion really happened (shared file, data, sprig).
	for _, want := range []struct{ file, text string }{
		{"001_create_accounts.sql", "comment on table app_accounts is 'audited';"},
		{"002_seed.sql", "generate_series(1, 3)"},
		{"002_seed.sql", "-- sprig: UPPER"},
	} {
		found := false
		for _, m := range ours {
			if m.File == want.file && contains(m.SQL, want.text) {
				found = true
			}
		}
		if !found {
			t.Errorf("%s: expanded SQL lacks %q", want.file, want.text)
		}
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
