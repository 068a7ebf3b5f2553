package hostile_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	pgmig "github.com/pgmig/pgmig/gowrapper"
	"github.com/pgmig/pgmig/tests/pgtest"
)

// byteSource turns fuzz input into choices; exhausted, it yields zeros.
type byteSource struct{ b []byte }

func (s *byteSource) next() byte {
	if len(s.b) == 0 {
		return 0
	}
	c := s.b[0]
	s.b = s.b[1:]
	return c
}

func (s *byteSource) pick(n int) int { return int(s.next()) % n }

// str takes up to max raw bytes as a string: any bytes but NUL (which
// jsonb cannot hold: that case is generated on purpose), invalid UTF-8
// included (encoding/json turns those into U+FFFD).
func (s *byteSource) str(max int) string {
	n := s.pick(max + 1)
	if n > len(s.b) {
		n = len(s.b)
	}
	out := strings.ReplaceAll(string(s.b[:n]), "\x00", "0")
	s.b = s.b[n:]
	return out
}

// fuzzEntry is one generated batch element and what the engine must make
// of it.
type fuzzEntry struct {
	value   any    // what goes into the JSON array
	version int64  // for a valid entry
	problem string // "" valid; else why the batch must fail: "PM001", "22012", "22P05"
}

// genBatch builds a batch of 1-6 entries from the fuzz input: valid
// migrations (each inserts its version into fz) mixed with every kind of
// malformed entry, random keys and random values.
func genBatch(src *byteSource) (entries []fuzzEntry) {
	n := 1 + src.pick(6)
	used := map[int64]bool{}
	for range n {
		v := int64(1 + src.pick(9))
		valid := func() map[string]any {
			sql := fmt.Sprintf("insert into fz values (%d)", v)
			m := map[string]any{"version": v, "name": "m" + src.str(12), "sql": sql}
			switch src.pick(4) {
			case 1:
				m["checksum"] = sha256Hex(sql)
			case 2:
				m["down"] = src.str(8)
			case 3:
				m["transactional"] = true
			}
			return m
		}
		e := fuzzEntry{version: v}
		switch k := src.pick(25); {
		case k < 8:
			e.value = valid()
			if used[v] {
				e.problem = "PM001" // duplicate version
			}
		case k == 8:
			e.value = src.pick(100) // not an object
			e.problem = "PM001"
		case k == 9:
			e.value = []any{valid()}
			e.problem = "PM001"
		case k == 10:
			e.value = nil
			e.problem = "PM001"
		case k == 24:
			// The version written as a number that jsonb may or may not read
			// as an integer (1e0 is 1; 10e-1 is 1.0, which is not), as another
			// client might write it (encoding/json writes a float64 2.0 as 2).
			m := valid()
			forms := []struct {
				format string
				ok     bool
			}{{"%de0", true}, {"%dE+0", true}, {"%d.0", false}, {"%d.00", false}, {"%d0e-1", false}, {"%d00e-2", false}}
			f := forms[src.pick(len(forms))]
			m["version"] = json.Number(fmt.Sprintf(f.format, v))
			e.value = m
			if !f.ok || used[v] {
				e.problem = "PM001"
			}
		default:
			m := valid()
			e.value = m
			e.problem = "PM001"
			switch k {
			case 11:
				m["version"] = []any{0, -1, "1", 1.5, nil, true, 9223372036854775808.0, map[string]any{}}[src.pick(8)]
			case 12:
				delete(m, "version")
			case 13:
				m["name"] = []any{"", " \t\n", 7, nil, false, []any{"x"}}[src.pick(6)]
			case 14:
				delete(m, "name")
			case 15:
				m["sql"] = []any{"", "  \n\t", 1, nil, map[string]any{"q": 1}}[src.pick(5)]
			case 16:
				delete(m, "sql") // no sql, no checksum: pending without SQL
				delete(m, "checksum")
			case 17:
				m["checksum"] = []any{"abc", strings.Repeat("0", 64), strings.Repeat("G", 64), 5}[src.pick(4)]
			case 18:
				m["transactional"] = []any{"true", 1, nil}[src.pick(3)]
			case 19:
				m["down"] = []any{1, true, []any{}}[src.pick(3)]
			case 20:
				m["x"+src.str(6)] = src.str(6) // unknown key
			case 21:
				m["sql"] = fmt.Sprintf("insert into fz values (%d); select 1/0", v)
				e.problem = "22012"
			case 22:
				m["name"] = "nul\x00name" // \u0000: jsonb cannot hold it
				e.problem = "22P05"
			case 23:
				m["sql"] = fmt.Sprintf("insert into fz values (%d); commit", v)
				e.problem = "PM005"
			}
			if k == 21 || k == 23 {
				// The SQL changed: a checksum valid() added must follow it,
				// or the batch is malformed (PM001) for another reason.
				if _, ok := m["checksum"]; ok {
					m["checksum"] = sha256Hex(m["sql"].(string))
				}
			}
		}
		if used[v] && (e.problem == "22012" || e.problem == "PM005") {
			e.problem = "PM001" // a duplicate version is found before anything runs
		}
		used[v] = true
		entries = append(entries, e)
	}
	return entries
}

// expectedFailure is the SQLSTATE the batch must fail with ("" = must
// succeed). jsonb input errors come first (before the engine runs), then
// the engine's validation of the whole batch (PM001), then execution.
func expectedFailure(entries []fuzzEntry) (string, bool) {
	has := map[string]bool{}
	for _, e := range entries {
		has[e.problem] = true
	}
	for _, code := range []string{"22P05", "PM001"} {
		if has[code] {
			return code, false
		}
	}
	// Execution errors: which one fires depends on version order, so any
	// of them is acceptable.
	if has["22012"] || has["PM005"] {
		return "22012|PM005", true
	}
	return "", false
}

// FuzzBatchSQL: random jsonb batches against migrate_apply on a real
// database. Never an internal error, never a dead server; a batch either
// succeeds with exactly its (valid) entries applied once, or fails with the
// expected SQLSTATE and nothing applied.
func FuzzBatchSQL(f *testing.F) {
	for _, seed := range []string{
		"", "\x00", "\x05\x01\x02\x03\x04\x05\x06", "\x03\x00\x00\x0b\x05\x01\x00\x15",
		"\x02\x07\x08\x09\x0a\x0b\x0c", "\x04\x10\x11\x12\x13\x14\x15\x16\x17", "\x01\x20\x21\x22",
		"\x05\x03\x00\x03\x00\x03\x00\x03\x00\x03\x00", "\x06\xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8\xf7",
		"\x02\x01\x09\x02\x09\x03\x09\x04\x09", "\x01\x05\x17", "\x01\x05\x16", "\x01\x05\x15",
		// versions written with a fraction or an exponent (the 25th kind of entry)
		"\x00\x00\x18\x00\x00\x00", "\x00\x01\x18\x00\x00\x01", "\x00\x02\x18\x00\x00\x02",
		"\x01\x03\x18\x00\x00\x04\x03\x18\x00\x00\x00", "\x00\x04\x18\x00\x00\x05",
	} {
		f.Add([]byte(seed))
	}
	db := pgtest.NewDB(f)
	ctx := context.Background()
	conn := db.Conn(f)
	if _, err := conn.Exec(ctx, "create table fz (v int not null); set statement_timeout = '30s'"); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		entries := genBatch(&byteSource{b: data})
		values := make([]any, len(entries))
		for i, e := range entries {
			values[i] = e.value
		}
		batch, err := json.Marshal(values)
		if err != nil {
			t.Fatal(err)
		}
		// The engine's quick well-formedness check and its detailed report
		// must agree: the quick one accepting a batch the report rejects
		// would let a malformed batch through.
		// (Text that is not jsonb, e.g. with \u0000, never reaches the engine.)
		var quick, none bool
		var castErr *pgconn.PgError
		if err := conn.QueryRow(ctx, "select coalesce(pgmig._batch_ok($1::jsonb), false), not exists (select from pgmig._batch_problems($1::jsonb))",
			string(batch)).Scan(&quick, &none); err != nil && !(errors.As(err, &castErr) && strings.HasPrefix(castErr.Code, "22P0")) {
			t.Fatalf("batch %s: checking: %v", batch, err)
		} else if err == nil && quick != none {
			t.Fatalf("batch %s: _batch_ok = %v but _batch_problems finds %s", batch, quick, map[bool]string{true: "nothing", false: "problems"}[none])
		}
		defer func() {
			if _, err := conn.Exec(ctx, "set pgmig.maintenance = 'on'; truncate pgmig.history, fz; reset pgmig.maintenance"); err != nil {
				t.Fatalf("cleanup: %v", err)
			}
		}()
		got, err := applyRaw(ctx, conn, string(batch))
		want, _ := expectedFailure(entries)

		// The server and the session survive whatever happened.
		var one int
		if qerr := conn.QueryRow(ctx, "select 1").Scan(&one); qerr != nil {
			t.Fatalf("session unusable after batch %s: %v (call error: %v)", batch, qerr, err)
		}
		var hist, rows, distinct int
		if qerr := conn.QueryRow(ctx, "select (select count(*) from pgmig.history), count(*), count(distinct v) from fz").Scan(&hist, &rows, &distinct); qerr != nil {
			t.Fatal(qerr)
		}

		if err != nil {
			var e *pgconn.PgError
			if !errors.As(err, &e) {
				t.Fatalf("batch %s: not a server error: %v", batch, err)
			}
			if e.Code == "XX000" || strings.HasPrefix(e.Code, "58") || e.Severity == "PANIC" || e.Severity == "FATAL" {
				t.Fatalf("batch %s: internal error %s", batch, describe(e))
			}
			if want == "" || !strings.Contains(want, e.Code) {
				t.Fatalf("batch %s failed with %s, want %q", batch, describe(e), want)
			}
			if hist != 0 || rows != 0 {
				t.Fatalf("batch %s failed (%s) but left %d history rows and %d fz rows", batch, e.Code, hist, rows)
			}
			return
		}
		if want != "" {
			t.Fatalf("batch %s succeeded (%v), want failure %s", batch, got, want)
		}
		if got["applied"] != len(entries) || hist != len(entries) || rows != len(entries) || distinct != len(entries) {
			t.Fatalf("batch %s of %d valid entries: outcomes %v, %d history rows, fz %d rows (%d distinct)",
				batch, len(entries), got, hist, rows, distinct)
		}
	})
}

// FuzzLoad: any bytes as a migration file, through the library's loader
// (tern's loader plus pgmig's own checks). Never a panic; an error names
// the file; a success keeps the loader's contract (version from the name,
// checksum = sha256 of the SQL, SQL trimmed, down separated).
func FuzzLoad(f *testing.F) {
	for _, seed := range []string{
		"create table a (id int);",
		"",
		" \n\t",
		"-- only a comment\n",
		"/* block */",
		"select 1;\n---- create above / drop below ----\ndrop table a;",
		"---- create above / drop below ----\ndrop table a;",
		"---- tern: disable-tx ----\ncreate index concurrently i on a (id);\ncreate index concurrently j on a (id);",
		"---- pgmig: commit-after ----\nalter type t add value 'x';",
		"{{ if }}",
		"{{ .missing.field }}",
		"{{ template \"shared/x.sql\" . }}",
		"{{ template \"002_fuzz.sql\" . }}",
		"{{ define \"loop\" }}{{ template \"loop\" . }}{{ end }}{{ template \"loop\" . }}",
		"{{ printf \"%s\" 1 }} {{ upper \"x\" }} {{ env \"HOME\" }}",
		"select 'gr\xfc\xdfe';",
		"select 1;\x00",
		"select $$ */ $$; -- \r\n",
		strings.Repeat("select 1;\n", 1000),
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		// Template functions that allocate or compute without bound
		// (sprig's repeat, until, seq, key generation) are the template
		// author's business, not input validation: leave them out.
		for _, costly := range []string{"repeat", "until", "seq", "gen", "derive", "bcrypt", "htpasswd", "rand", "Bytes", "indent", "pad", "wrap", "trunc", "substr", "abbrev", "list", "dict", "range", "tuple"} {
			if bytes.Contains(body, []byte(costly)) && bytes.Contains(body, []byte("{{")) {
				return
			}
		}
		fsys := fstest.MapFS{
			"001_first.sql":   {Data: []byte("create table first (id int);\n")},
			"002_fuzz.sql":    {Data: body},
			"shared/x.sql":    {Data: []byte("select 'shared';")},
			"not_a_migration": {Data: []byte("ignored")},
		}
		done := make(chan struct{})
		var ms []*pgmig.Migration
		var err error
		go func() {
			defer close(done)
			ms, err = pgmig.Load(fsys, nil)
		}()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Fatalf("Load did not return within 20s for %q", body)
		}
		if err != nil {
			if !strings.Contains(err.Error(), "002_fuzz.sql") {
				t.Fatalf("error does not name the file: %v (input %q)", err, body)
			}
			var lerr *pgmig.LoadError
			if !errors.As(err, &lerr) || lerr.File != "002_fuzz.sql" {
				t.Fatalf("error is not a *LoadError for 002_fuzz.sql: %#v", err)
			}
			return
		}
		if len(ms) != 2 {
			t.Fatalf("%d migrations, want 2", len(ms))
		}
		m := ms[1]
		sum := sha256.Sum256([]byte(m.SQL))
		switch {
		case m.Version != 2 || m.Name != "fuzz" || m.File != "002_fuzz.sql":
			t.Fatalf("migration %d %q %q, want 2 fuzz 002_fuzz.sql", m.Version, m.Name, m.File)
		case m.Checksum != hex.EncodeToString(sum[:]):
			t.Fatalf("checksum %s is not the sha256 of the SQL", m.Checksum)
		case strings.TrimSpace(m.SQL) != m.SQL || strings.TrimSpace(m.Down) != m.Down:
			t.Fatalf("SQL or down not trimmed: %q / %q", m.SQL, m.Down)
		case m.SQL == "":
			t.Fatalf("empty SQL accepted for %q", body)
		case strings.Contains(m.SQL, "---- create above / drop below ----"):
			t.Fatalf("the down separator leaked into the up SQL: %q", m.SQL)
		}
		// The batch the library would send is valid JSON holding this
		// migration, whatever the bytes.
		b, err := pgmig.Batch(ms)
		if err != nil || !json.Valid(b) {
			t.Fatalf("Batch: %v (valid JSON %v)", err, json.Valid(b))
		}
	})
}

// TestLoadRejectsInvalidText: a file that is not valid UTF-8 or holds a
// NUL byte cannot be stored as PostgreSQL text; the loader must say which
// file, instead of the JSON encoder silently replacing the bytes (the
// checksum then no longer matches: PM001 naming no file) or the server
// rejecting \u0000 (22P05, naming no file).
func TestLoadRejectsInvalidText(t *testing.T) {
	t.Parallel()
	for name, body := range map[string]string{
		"invalid UTF-8 in the up SQL":   "select 'gr\xfc\xdfe';",
		"invalid UTF-8 in the down SQL": "select 1;\n---- create above / drop below ----\nselect '\xff';",
		"NUL in the up SQL":             "select 1;\x00",
		"NUL in the down SQL":           "select 1;\n---- create above / drop below ----\nselect 2;\x00",
		"invalid UTF-8 in a comment":    "-- caf\xe9\nselect 1;",
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			fsys := fstest.MapFS{"001_first.sql": {Data: []byte("select 1;")}, "002_bad.sql": {Data: []byte(body)}}
			ms, err := pgmig.Load(fsys, nil)
			if err == nil {
				var sqls []string
				for _, m := range ms {
					sqls = append(sqls, fmt.Sprintf("%q/%q", m.SQL, m.Down))
				}
				sort.Strings(sqls)
				t.Fatalf("loaded without error: %v", sqls)
			}
			var lerr *pgmig.LoadError
			if !errors.As(err, &lerr) || lerr.File != "002_bad.sql" {
				t.Fatalf("error %v does not name 002_bad.sql as a *LoadError", err)
			}
		})
	}
}
