package pgmig

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

// fuzzFormats: for each format other than tern (FuzzPlainLoad and
// tests/hostile's FuzzLoad cover tern), a good first migration and the
// name of the fuzzed second one.
var fuzzFormats = []struct {
	format        Format
	first, body   string
	fuzzed        string
	fuzzedVersion int64
}{
	{FormatGolangMigrate, "1_first.up.sql", "select 1;", "2_fuzz.up.sql", 2},
	{FormatGoose, "1_first.sql", "-- +goose Up\nselect 1;\n", "2_fuzz.sql", 2},
	{FormatDbmate, "1_first.sql", "-- migrate:up\nselect 1;\n", "2_fuzz.sql", 2},
	{FormatSQLMigrate, "1-first.sql", "-- +migrate Up\nselect 1;\n", "2-fuzz.sql", 2},
	{FormatFlyway, "V1__first.sql", "select 1;", "V2__fuzz.sql", 20000},
}

var formatSeeds = []string{
	"",
	"select 1;",
	"\ufeffBEGIN;\r\ncreate table t (x int);\r\nCOMMIT;\r\n",
	"START TRANSACTION; select 1; END;",
	"BEGIN; select 1;",
	"select 1; COMMIT; select 2;",
	"create index concurrently i on t (x);",
	"create function f() returns int language sql begin atomic select 1; end;\nEND;",
	"-- +goose Up\n-- +goose StatementBegin\nDO $$ BEGIN PERFORM 1; END $$;\n-- +goose StatementEnd\n-- +goose Down\ndrop table t;\n",
	"-- +goose NO TRANSACTION\n-- +goose ENVSUB ON\n-- +goose Up\nselect '${A}', '${B:-x}', $$, \\$, ${A:1:1};\n",
	"-- +goose Up\n-- +goose ENVSUB ON\nselect ${B?no};\n",
	"-- +goose Up\n  -- +goose Down\n",
	"-- migrate:up transaction:false\nvacuum;\n-- migrate:down\n-- migrate:up\nselect 2;\n-- migrate:down\n",
	"--migrate:up\r\nselect 1;\r\n--migrate:down\r\n",
	"-- +migrate Up notransaction\r\nselect 1;\r\n-- +migrate StatementBegin\r\nselect 2;\r\n-- +migrate StatementEnd\r\n-- +migrate Down\r\n",
	"comment on table t is '${p}' || '${flyway:filename}';\ncopy t from stdin;\n",
	"select '${unknown';",
	"select 'é' -- ünïcode\n/* ; */ ;",
}

// FuzzFormats: any text as a migration file of each format: never a panic;
// an error is a *LoadError naming that file (and a line that exists); a
// migration keeps the loader's contract: checksum = sha256 of the SQL, the
// SQL trimmed and not empty, every character that came from the file
// located at that character of it; a golang-migrate migration holds no
// transaction control and is non-transactional when a statement needs it.
//
//	go test ./gowrapper -run '^$' -fuzz '^FuzzFormats$' -fuzztime 60s
func FuzzFormats(f *testing.F) {
	for i := range fuzzFormats {
		for _, s := range formatSeeds {
			f.Add(uint8(i), s)
		}
	}
	f.Fuzz(func(t *testing.T, which uint8, body string) {
		ff := fuzzFormats[int(which)%len(fuzzFormats)]
		l, err := LoadAll(mapFS(map[string]string{ff.first: ff.body, ff.fuzzed: body}),
			&LoadOpts{Format: ff.format, Env: map[string]string{"A": "ä$b", "B": ""}, Data: map[string]any{"P": "v"}})
		if err != nil {
			var le *LoadError
			if !errors.As(err, &le) || le.File != ff.fuzzed {
				t.Fatalf("%s: %v is not a *LoadError for %s", ff.format, err, ff.fuzzed)
			}
			var line *LineError
			if errors.As(err, &line) && (line.Line < 1 || line.Line > strings.Count(body, "\n")+1) {
				t.Fatalf("%s: %v names line %d of %d", ff.format, err, line.Line, strings.Count(body, "\n")+1)
			}
			return
		}
		if len(l.Migrations) != 2 {
			t.Fatalf("%s: %d migrations", ff.format, len(l.Migrations))
		}
		m := l.Migrations[1]
		sum := sha256.Sum256([]byte(m.SQL))
		switch {
		case m.File != ff.fuzzed || m.Version != ff.fuzzedVersion || m.Format != ff.format:
			t.Fatalf("%s: %s version %d format %s", ff.format, m.File, m.Version, m.Format)
		case m.Checksum != hex.EncodeToString(sum[:]):
			t.Fatalf("%s: checksum %s is not the sha256 of %q", ff.format, m.Checksum, m.SQL)
		case m.SQL == "" || strings.TrimSpace(m.SQL) != m.SQL || strings.TrimSpace(m.Down) != m.Down:
			t.Fatalf("%s: SQL %q, down %q", ff.format, m.SQL, m.Down)
		case !utf8.ValidString(m.SQL) || !utf8.ValidString(m.Down) || strings.ContainsRune(m.SQL+m.Down, 0):
			t.Fatalf("%s: SQL %q or down %q is not PostgreSQL text", ff.format, m.SQL, m.Down)
		}
		if m.SQL != emptySQL {
			checkLocateAll(t, m, strings.TrimPrefix(body, byteOrderMark))
		}
		if ff.format == FormatGolangMigrate {
			for _, st := range splitStatements(m.SQL) {
				toks := tokens(statementTokens(st.text, statementTokenLimit))
				if k := transactionControl(toks); k != txNone {
					t.Fatalf("transaction control %q left in %q", st.text, m.SQL)
				}
				if outsideTransaction(toks) != "" && m.Transactional {
					t.Fatalf("%q needs to run outside a transaction, the migration is transactional", st.text)
				}
			}
		}
	})
}
