package pgmig

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"testing/fstest"
	"unicode/utf8"

	"github.com/jackc/tern/v2/migrate"
)

// plainCorpus: migration bodies without template actions, covering what the
// plain loader must reproduce exactly as tern's loader does it.
var plainCorpus = []string{
	"select 1",
	"create table a (id int);\n---- create above / drop below ----\ndrop table a;\n",
	"\n\n  \t-- leading blanks and a comment\ncreate table b (id int);\n\n\n",
	"create table c (id int);\r\n-- CRLF\r\n---- create above / drop below ----\r\ndrop table c;\r\n",
	"\ufeffselect 'a byte order mark is dropped (tern keeps it: a syntax error)';",
	"\u00a0\u2028\u3000select 'Unicode blanks are trimmed';\u00a0\u3000\n",
	"\u0085\v\f select 'NEL, VT, FF too';\u0085\n---- create above / drop below ----\u0085drop\u00a0",
	"---- tern: disable-tx ----\ncreate index concurrently on a (id);\n",
	"create index concurrently on a (id);\n---- tern: disable-tx ----",
	"select 1; ---- tern: disable-tx ---- (not on a line of its own)",
	"alter type e add value 'x';\n---- pgmig: commit-after ----\n",
	"select 1;\n---- create above / drop below ----\n",
	"select 1;\n---- create above / drop below ----",
	"select 1;\n---- create above / drop below ----\ndrop 1;\n---- create above / drop below ----\ndrop 2;",
	"select '---- create above / drop below ----' as inside_a_string;\nselect 2;",
	"select '}}' as closing_braces, '{' as brace, '{ {' as spaced;",
	"-- only comments first\n-- and more\nselect 'then SQL';",
	"   -- indented comment\n\tselect 'tab';\n---- create above / drop below ----\n\t-- comment only down\n",
	"select 'héllo wörld ✓', 'ünïcode';\n---- create above / drop below ----\nselect '✓';",
	"/* block comment */ select 1;",
	"select $$ dollar {quoted} $$;\n",
	"select 1;\n\n---- create above / drop below ----\n\n\n",
	strings.Repeat("insert into big values ('a long line of text to make a file larger than the read buffer');\n", 1200),
}

// loadBothWays loads fsys with the plain loader and through tern's loader.
func loadBothWays(t *testing.T, fsys fs.FS, opts *LoadOpts) (plain, tern []*Migration, plainErr, ternErr error) {
	t.Helper()
	root, err := fs.ReadDir(fsys, ".")
	if err != nil {
		t.Fatal(err)
	}
	files, err := scanMigrationFiles(root)
	if err != nil {
		t.Fatal(err)
	}
	bodies, err := readMigrationFiles(fsys, files, 1)
	if err != nil {
		t.Fatal(err)
	}
	shared, err := parseSharedTemplates(fsys, root)
	if err != nil {
		t.Fatal(err)
	}
	for i, b := range bodies {
		if b.template {
			t.Fatalf("%s holds a template action", files[i].path)
		}
	}
	if opts == nil {
		opts = &LoadOpts{}
	}
	plain, plainErr = loadPlain(files, bodies, shared)
	tern, ternErr = loadTemplates(fsys, root, files, bodies, shared, opts)
	return plain, tern, plainErr, ternErr
}

func corpusFS() fstest.MapFS {
	fsys := fstest.MapFS{
		"README.md":         {Data: []byte("not a migration")},
		"notes.sql":         {Data: []byte("{{ not a migration either")},
		"shared/grants.sql": {Data: []byte("grant select on {{.table}} to reader;")},
		"shared/deep/x.sql": {Data: []byte("select 'unused shared template';")},
	}
	// More than one reader goroutine's share of files, each body several
	// times at different places.
	for i := range 3 * len(plainCorpus) {
		fsys[fmt.Sprintf("%03d_m%d.sql", i+1, i)] = &fstest.MapFile{Data: []byte(plainCorpus[(i*7)%len(plainCorpus)])}
	}
	return fsys
}

// TestPlainLoadMatchesTern: without template actions, the plain loader
// gives exactly what tern's loader gives (every field, unexported ones
// included), and what tern's own Migrator loads.
func TestPlainLoadMatchesTern(t *testing.T) {
	t.Parallel()
	fsys := corpusFS()
	data := &LoadOpts{Data: map[string]any{"table": "x", "unused": "{{"}}
	plain, tern, plainErr, ternErr := loadBothWays(t, fsys, data)
	if plainErr != nil || ternErr != nil {
		t.Fatal(plainErr, ternErr)
	}
	if len(plain) != len(fsys)-4 {
		t.Fatalf("loaded %d migrations", len(plain))
	}
	for i := range plain {
		if !reflect.DeepEqual(plain[i], tern[i]) {
			t.Errorf("%s: plain loader\n%#v\ntern's loader\n%#v", plain[i].File, *plain[i], *tern[i])
		}
	}

	// What tern's own Migrator makes of the directory.
	m, err := migrate.NewMigrator(t.Context(), nil, "")
	if err != nil {
		t.Fatal(err)
	}
	m.Data = data.Data
	if err := m.LoadMigrations(fsys); err != nil {
		t.Fatal(err)
	}
	for i, tm := range m.Migrations {
		p := plain[i]
		// The one difference: pgmig loads a file as if a leading byte-order
		// mark were not there.
		tm.UpSQL = strings.TrimPrefix(tm.UpSQL, "\ufeff")
		if p.File != tm.Name || p.Version != int64(tm.Sequence) || p.SQL != tm.UpSQL || p.Down != tm.DownSQL {
			t.Errorf("%s: pgmig %d %q %q, tern %d %q %q", p.File, p.Version, p.SQL, p.Down, tm.Sequence, tm.UpSQL, tm.DownSQL)
		}
	}

	// Load takes the plain path here, LoadDir too (reading with several
	// goroutines): the same migrations.
	loaded, err := Load(fsys, data)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, f := range fsys {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, f.Data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	fromDir, err := LoadDir(dir, data)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(loaded, plain) || !reflect.DeepEqual(fromDir, plain) {
		t.Error("Load or LoadDir differ from the plain loader")
	}
}

// TestPlainLoadErrorsMatchTern: an empty up section is reported for the same
// file, with the same error, both ways; the first one in version order.
func TestPlainLoadErrorsMatchTern(t *testing.T) {
	t.Parallel()
	for name, files := range map[string]map[string]string{
		"blank":            {"001_a.sql": "select 1", "002_b.sql": " \r\n\t\n"},
		"comments only":    {"001_a.sql": "-- x\n  -- y\n---- create above / drop below ----\ndrop table t;"},
		"first one wins":   {"001_a.sql": "select 1", "002_b.sql": "--", "003_c.sql": ""},
		"separator only":   {"001_a.sql": "---- create above / drop below ----\nselect 1;"},
		"after a good one": {"001_a.sql": "select 1", "002_b.sql": "select 2", "003_c.sql": "\u00a0"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, _, plainErr, ternErr := loadBothWays(t, mapFS(files), nil)
			if plainErr == nil || plainErr.Error() != ternErr.Error() || !errors.Is(plainErr, ErrEmptyMigration) {
				t.Fatalf("plain loader: %v; tern's loader: %v", plainErr, ternErr)
			}
			_, loadErr := Load(mapFS(files), nil)
			if loadErr == nil || loadErr.Error() != plainErr.Error() {
				t.Fatalf("Load: %v, want %v", loadErr, plainErr)
			}
		})
	}
}

// TestLoadTakesTernPathForTemplates: one file with an action anywhere sends
// the whole directory through tern (templates may define and use each
// other across files).
func TestLoadTakesTernPathForTemplates(t *testing.T) {
	t.Parallel()
	ms, err := Load(mapFS(map[string]string{
		"001_a.sql": "select 1;{{/* a comment is an action too */}}",
		"002_b.sql": "select 2;\n---- create above / drop below ----\nselect '{{.x}}';",
		"003_c.sql": "select 3;",
	}), &LoadOpts{Data: map[string]any{"x": "expanded"}})
	if err != nil {
		t.Fatal(err)
	}
	if ms[0].SQL != "select 1;" || ms[1].Down != "select 'expanded';" || ms[2].SQL != "select 3;" {
		t.Errorf("%q %q %q", ms[0].SQL, ms[1].Down, ms[2].SQL)
	}
}

// FuzzPlainLoad: any file without a template action loads as tern loads it.
//
//	go test ./gowrapper -run '^$' -fuzz FuzzPlainLoad
func FuzzPlainLoad(f *testing.F) {
	for _, body := range plainCorpus {
		f.Add(body)
	}
	f.Add("-- x\n---- create above / drop below ----\n")
	f.Fuzz(func(t *testing.T, body string) {
		if strings.Contains(body, "{{") || !utf8.ValidString(body) || strings.ContainsRune(body, 0) {
			t.Skip() // templates go to tern; bad text is refused before either loader
		}
		fsys := mapFS(map[string]string{"001_a.sql": "select 1", "002_b.sql": body})
		plain, tern, plainErr, ternErr := loadBothWays(t, fsys, nil)
		if (plainErr == nil) != (ternErr == nil) || plainErr != nil && plainErr.Error() != ternErr.Error() {
			t.Fatalf("plain loader: %v; tern's loader: %v", plainErr, ternErr)
		}
		if plainErr == nil && !reflect.DeepEqual(plain, tern) {
			t.Fatalf("plain loader\n%#v\ntern's loader\n%#v", *plain[1], *tern[1])
		}
	})
}

// ternMigrationPattern is tern's migrationPattern (migrate.go).
var ternMigrationPattern = regexp.MustCompile(`\A(\d+)_.+\.sql\z`)

func TestSplitMigrationFileNameMatchesTern(t *testing.T) {
	t.Parallel()
	names := []string{
		"001_a.sql", "1_a.sql", "001_create users.sql", "001_.sql", "001_..sql", "001_a.sql.sql",
		"001_a.SQL", "001a.sql", "_a.sql", "001_a.sqlx", "001__.sql", "001_a\n.sql", "001_\n.sql",
		"001_a\r.sql", "001_\xff.sql", "001_é.sql", "٣_arabic_digit.sql", "00000000000000000000001_a.sql",
		"99999999999_big.sql", "001_a.sq", "001_", "001", "", ".sql", "1_.sql", "1__.sql", "0_a.sql",
		"001-a.sql", " 001_a.sql", "001_a.sql ", "001_a/b.sql",
	}
	for _, name := range names {
		digits, rest, ok := splitMigrationFileName(name)
		m := ternMigrationPattern.FindStringSubmatch(name)
		if ok != (m != nil) {
			t.Errorf("%q: matched %v, tern %v", name, ok, m != nil)
			continue
		}
		if ok && (digits != m[1] || rest != strings.TrimSuffix(strings.TrimPrefix(name, m[1]+"_"), ".sql")) {
			t.Errorf("%q: %q %q, tern %q", name, digits, rest, m[1])
		}
	}
}

func FuzzSplitMigrationFileName(f *testing.F) {
	f.Add("001_a.sql")
	f.Add("1_\n.sql")
	f.Fuzz(func(t *testing.T, name string) {
		digits, _, ok := splitMigrationFileName(name)
		m := ternMigrationPattern.FindStringSubmatch(name)
		if ok != (m != nil) || ok && digits != m[1] {
			t.Fatalf("%q: %q %v, tern %q", name, digits, ok, m)
		}
	})
}

// TestLoadDirReadErrorsMatchDirFS: LoadDir's own reading reports what
// reading through os.DirFS reports.
func TestLoadDirReadErrorsMatchDirFS(t *testing.T) {
	t.Parallel()
	for name, target := range map[string]string{"dangling symlink": "nowhere.sql", "symlink to a directory": "sub"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
				t.Fatal(err)
			}
			for i := 1; i <= 100; i++ {
				if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%03d_m.sql", i)), []byte("select 1;"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.Symlink(target, filepath.Join(dir, "101_link.sql")); err != nil {
				t.Skip(err)
			}
			_, want := Load(os.DirFS(dir), nil)
			_, got := LoadDir(dir, nil)
			var le *LoadError
			if want == nil || got == nil || got.Error() != want.Error() || !errors.As(got, &le) || le.File != "101_link.sql" {
				t.Fatalf("LoadDir: %v, Load(os.DirFS): %v", got, want)
			}
		})
	}
}

// TestReadersAgree: several goroutines read a directory as one does, and
// report the same first problem.
func TestReadersAgree(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	n := 500
	for i := 1; i <= n; i++ {
		body := plainCorpus[i%len(plainCorpus)]
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%03d_m.sql", i)), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	read := func(readers int) ([]fileBody, error) {
		fsys := &dirFS{FS: os.DirFS(dir), dir: dir}
		root, err := fs.ReadDir(fsys, ".")
		if err != nil {
			t.Fatal(err)
		}
		files, err := scanMigrationFiles(root)
		if err != nil {
			t.Fatal(err)
		}
		return readMigrationFiles(fsys, files, readers)
	}
	one, err := read(1)
	if err != nil {
		t.Fatal(err)
	}
	four, err := read(4)
	if err != nil || len(four) != n || !reflect.DeepEqual(one, four) {
		t.Fatalf("4 readers: %d files, %v; differ from 1 reader", len(four), err)
	}
	// Of two bad files, the first in version order is reported, whichever
	// goroutines read them.
	for _, v := range []int{n - 1, 250} {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%03d_m.sql", v)), []byte("select 'gr\xfc';"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, readers := range []int{1, 4} {
		if _, err := read(readers); !errors.Is(err, ErrInvalidText) || !strings.HasPrefix(err.Error(), "250_m.sql: ") {
			t.Fatalf("%d readers, bad files: %v", readers, err)
		}
	}
}
