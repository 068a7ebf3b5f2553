package adopt_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	pgmig "github.com/pgmig/pgmig/gowrapper"
	"github.com/pgmig/pgmig/tests/pgtest"
)

// The engine's Flyway checksum (pgmig._flyway_checksum, used when a caller
// passes none) and the client's (Migration.FlywayChecksum) agree on random
// files: line endings of every kind, blank lines, a byte-order mark,
// characters of one to four bytes. Both are checked against Flyway's own
// numbers elsewhere (TestFlywayChecksum, the fixture's golden checksums).
func TestFlywayChecksumSQL(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	conn := pgtest.NewDB(t).Conn(t)
	rng := rand.New(rand.NewPCG(13, 2))
	pieces := []string{"select", " ", "1", ";", "\n", "\r\n", "\r", "\n\n", "é", "✓", "𝄞", "--", "\t", "x"}
	dir := t.TempDir()
	const files = 40
	for i := 1; i <= files; i++ {
		var b strings.Builder
		if i%5 == 0 {
			b.WriteString("\ufeff")
		}
		for range rng.IntN(400) {
			b.WriteString(pieces[rng.IntN(len(pieces))])
		}
		writeFile(t, filepath.Join(dir, fmt.Sprintf("V%d__random.sql", i)), b.String())
	}
	ms, err := pgmig.LoadDir(dir, &pgmig.LoadOpts{Format: pgmig.FormatFlyway})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		text, err := os.ReadFile(filepath.Join(dir, m.File))
		if err != nil {
			t.Fatal(err)
		}
		var inSQL int32
		if err := conn.QueryRow(ctx, "select pgmig._flyway_checksum($1)", string(text)).Scan(&inSQL); err != nil {
			t.Fatal(err)
		}
		if inGo, _ := m.FlywayChecksum(); inGo != inSQL {
			t.Errorf("%s: the client's checksum %d, the engine's %d", m.File, inGo, inSQL)
		}
	}
	// And the fixture's golden numbers.
	for file, want := range flywayChecksums {
		p := filepath.Join("testdata", "flyway", "migrations", file)
		if file == "V3__add_capacity.sql" {
			p = filepath.Join("testdata", "flyway", "next", file)
		}
		text, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		var got int32
		if err := conn.QueryRow(ctx, "select pgmig._flyway_checksum($1)", string(text)).Scan(&got); err != nil || got != want {
			t.Errorf("%s: the engine's checksum %d (%v), Flyway's %d", file, got, err, want)
		}
	}
}
