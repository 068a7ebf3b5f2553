package pgmig_test

import (
	"testing"
	"testing/fstest"

	pgmig "github.com/pgmig/pgmig/gowrapper"
)

// Flyway's checksum of a file, as Flyway records it in
// flyway_schema_history. The numbers were computed with a Java program
// doing what Flyway's ChecksumCalculator does (BufferedReader.readLine over
// the file read as UTF-8, the byte-order mark dropped from the first line,
// each line's UTF-8 bytes into java.util.zip.CRC32, the value as an int).
func TestFlywayChecksum(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		text string
		want int32
	}{
		{"select 1;", -690524359},
		// Line endings do not count, whichever they are; blank lines neither.
		{"select 1;\r\nselect 2;\rx\n\n", 46029120},
		{"select 1;select 2;x", 46029120},
		// A byte-order mark does not count; other characters as UTF-8.
		{"\ufeffcreate table t();\n-- é ✓ 𝄞\n", 834434702},
		// Placeholders are not replaced: the file as written.
		{"COMMENT ON TABLE warehouses IS 'owned by ${owner}';\n", 583550800},
	} {
		ms, err := pgmig.Load(fstest.MapFS{"V1__x.sql": {Data: []byte(c.text)}},
			&pgmig.LoadOpts{Data: map[string]any{"owner": "logistics"}})
		if err != nil {
			t.Fatal(err)
		}
		if got, ok := ms[0].FlywayChecksum(); !ok || got != c.want {
			t.Errorf("FlywayChecksum(%q) = %d, %v; Flyway's is %d", c.text, got, ok, c.want)
		}
	}
	// Not a Flyway file: Flyway has no checksum for it.
	ms, err := pgmig.Load(fstest.MapFS{"1_x.up.sql": {Data: []byte("select 1;")}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := ms[0].FlywayChecksum(); ok {
		t.Error("a golang-migrate file has a Flyway checksum")
	}
}

func TestAdoptTable(t *testing.T) {
	t.Parallel()
	for tool, want := range map[pgmig.Format]string{
		pgmig.FormatTern: "public.schema_version", pgmig.FormatGolangMigrate: "schema_migrations", pgmig.FormatGoose: "goose_db_version",
		pgmig.FormatDbmate: "schema_migrations", pgmig.FormatSQLMigrate: "gorp_migrations", pgmig.FormatFlyway: "flyway_schema_history",
	} {
		if got := pgmig.AdoptTable(tool); got != want {
			t.Errorf("AdoptTable(%s) = %q, want %q", tool, got, want)
		}
	}
}
