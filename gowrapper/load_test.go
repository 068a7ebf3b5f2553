package pgmig

import (
	"errors"
	"strings"
	"testing"
	"testing/fstest"
)

func mapFS(files map[string]string) fstest.MapFS {
	fsys := fstest.MapFS{}
	for name, body := range files {
		fsys[name] = &fstest.MapFile{Data: []byte(body)}
	}
	return fsys
}

func TestLoadFormat(t *testing.T) {
	t.Parallel()
	ms, err := Load(mapFS(map[string]string{
		"001_create_users.sql":  "\n\ncreate table users (id int);\n---- create above / drop below ----\n\ndrop table users;\n",
		"002_index.sql":         "---- tern: disable-tx ----\ncreate index concurrently on users (id);\n",
		"003_plain.sql":         "select 1",
		"README.md":             "not a migration",
		"should_be_ignored.sql": "select 'ignored'",
	}), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 3 {
		t.Fatalf("got %d migrations, want 3", len(ms))
	}
	m := ms[0]
	if m.Version != 1 || m.Name != "create_users" || m.File != "001_create_users.sql" {
		t.Errorf("identity: %+v", m)
	}
	if m.SQL != "create table users (id int);" || m.Down != "drop table users;" || !m.Transactional {
		t.Errorf("sections: sql=%q down=%q tx=%v", m.SQL, m.Down, m.Transactional)
	}
	if m.Checksum != "3f8b42df7ebea372c88b7e07d0a21f1019559791003266088819a12cf161e826" { // sha256sum of the SQL
		t.Errorf("checksum %q", m.Checksum)
	}
	if ms[1].Transactional {
		t.Errorf("002 has the disable-tx marker: want Transactional false")
	}
	if ms[2].Down != "" || !ms[2].Transactional {
		t.Errorf("003: %+v", ms[2])
	}
}

func TestLoadErrorsNameTheFile(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		files    map[string]string
		sentinel error
		file     string
	}{
		{"gap", map[string]string{"001_a.sql": "select 1", "003_c.sql": "select 3"}, ErrMissingVersion, "003_c.sql"},
		{"starts at 2", map[string]string{"002_b.sql": "select 2"}, ErrMissingVersion, "002_b.sql"},
		{"duplicate", map[string]string{"001_a.sql": "select 1", "002_b.sql": "select 2", "002_c.sql": "select 2"}, ErrDuplicateVersion, "002_c.sql"},
		{"empty file", map[string]string{"001_a.sql": "select 1", "002_empty.sql": "  \n"}, ErrEmptyMigration, "002_empty.sql"},
		{"only comments", map[string]string{"001_a.sql": "-- nothing\n---- create above / drop below ----\ndrop table x;"}, ErrEmptyMigration, "001_a.sql"},
		{"bad template", map[string]string{"001_a.sql": "select 1", "002_b.sql": "select {{ .x"}, ErrTemplate, "002_b.sql"},
		{"template exec error", map[string]string{"001_a.sql": "select {{ template \"nope\" }}"}, ErrTemplate, "001_a.sql"},
		{"bad shared file", map[string]string{"001_a.sql": "select 1", "shared/x.sql": "{{ if }}"}, ErrTemplate, "shared/x.sql"},
		{"no migrations", map[string]string{"README": "x"}, ErrNoMigrations, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := Load(mapFS(tt.files), nil)
			if !errors.Is(err, tt.sentinel) {
				t.Fatalf("err = %v, want %v", err, tt.sentinel)
			}
			if tt.file == "" {
				return
			}
			var le *LoadError
			if !errors.As(err, &le) || le.File != tt.file {
				t.Fatalf("err = %v, want a *LoadError for %s", err, tt.file)
			}
			if !strings.HasPrefix(err.Error(), tt.file+": ") {
				t.Errorf("message %q does not start with the file name", err)
			}
		})
	}
}

func TestLoadTemplateData(t *testing.T) {
	t.Parallel()
	ms, err := Load(mapFS(map[string]string{
		"001_a.sql":    "create table {{.prefix}}t (id int);\n{{ template \"shared/c.sql\" . }}",
		"shared/c.sql": "comment on table {{.prefix}}t is 'x';",
	}), &LoadOpts{Data: map[string]any{"prefix": "app_"}})
	if err != nil {
		t.Fatal(err)
	}
	want := "create table app_t (id int);\ncomment on table app_t is 'x';"
	if ms[0].SQL != want {
		t.Errorf("SQL = %q, want %q", ms[0].SQL, want)
	}
}

// position returns the 1-based character position of the first occurrence
// of needle in s.
func position(t *testing.T, s, needle string) int {
	t.Helper()
	i := strings.Index(s, needle)
	if i < 0 {
		t.Fatalf("%q not in %q", needle, s)
	}
	return len([]rune(s[:i])) + 1
}

func TestLocate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		files     map[string]string
		data      map[string]any
		needle    string // the error is at its first occurrence in the SQL
		line, col int
		text      string
		expanded  bool
	}{
		{
			name:   "plain, leading blank lines trimmed by tern",
			files:  map[string]string{"001_a.sql": "\n\n  -- comment\ncreate table t (id int);\nselect * fromm t;\n"},
			needle: "fromm", line: 5, col: 10, text: "select * fromm t;",
		},
		{
			name:   "first line after leading spaces",
			files:  map[string]string{"001_a.sql": "\n   selec 1;"},
			needle: "selec", line: 2, col: 4, text: "   selec 1;",
		},
		{
			name:   "characters, not bytes",
			files:  map[string]string{"001_a.sql": "select 'héllo wörld ✓' as x,\n       'ünïcode' bogus here;"},
			needle: "here", line: 2, col: 24, text: "       'ünïcode' bogus here;",
		},
		{
			name:   "template: unchanged line after a multi-line expansion",
			files:  map[string]string{"001_a.sql": "{{ template \"shared/two.sql\" }}\nselect 1;\nselect * fromm t;", "shared/two.sql": "create table a (id int);\ncreate table b (id int);"},
			needle: "fromm", line: 3, col: 10, text: "select * fromm t;",
		},
		{
			name:   "template: error in a line with an action, before the action",
			files:  map[string]string{"001_a.sql": "select 1;\ncreat table {{.p}}t (id int);"},
			data:   map[string]any{"p": "app_"},
			needle: "creat", line: 2, col: 1, text: "creat table {{.p}}t (id int);", expanded: true,
		},
		{
			name:   "template: error after an action, in literal text",
			files:  map[string]string{"001_a.sql": "{{ template \"shared/two.sql\" }}\ncreate table {{.p}}t (id int, x text nott null);\nselect 1;", "shared/two.sql": "select 10;\nselect 11;"},
			data:   map[string]any{"p": "app_"},
			needle: "nott", line: 2, col: 38, text: "create table {{.p}}t (id int, x text nott null);", expanded: true,
		},
		{
			name:   "template: error in an action's output",
			files:  map[string]string{"001_a.sql": "select 1;\ncreate table {{.p}}t (id int);"},
			data:   map[string]any{"p": "bad name "},
			needle: "name", line: 2, col: 14, text: "create table {{.p}}t (id int);", expanded: true,
		},
		{
			name:   "template: error inside included text",
			files:  map[string]string{"001_a.sql": "select 1;\n{{ template \"shared/bad.sql\" }}\nselect 2;", "shared/bad.sql": "select 10;\nselec 11;"},
			needle: "selec 11", line: 2, col: 1, text: "{{ template \"shared/bad.sql\" }}", expanded: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ms, err := Load(mapFS(tt.files), &LoadOpts{Data: tt.data})
			if err != nil {
				t.Fatal(err)
			}
			m := ms[0]
			loc, ok := m.Locate(position(t, m.SQL, tt.needle))
			if !ok {
				t.Fatal("not located")
			}
			if loc.Line != tt.line || loc.Column != tt.col || loc.Text != tt.text || loc.Expanded != tt.expanded {
				t.Errorf("got %d:%d %q expanded=%v, want %d:%d %q expanded=%v", loc.Line, loc.Column, loc.Text, loc.Expanded, tt.line, tt.col, tt.text, tt.expanded)
			}
			if tt.expanded && !strings.Contains(loc.ExpandedText, tt.needle) {
				t.Errorf("ExpandedText %q does not contain %q", loc.ExpandedText, tt.needle)
			}
		})
	}
}

func TestLocateBounds(t *testing.T) {
	t.Parallel()
	ms, err := Load(mapFS(map[string]string{"001_a.sql": "select"}), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := ms[0].Locate(0); ok {
		t.Error("position 0 located")
	}
	// "syntax error at end of input" points one past the end.
	loc, ok := ms[0].Locate(7)
	if !ok || loc.Line != 1 || loc.Column != 6 {
		t.Errorf("end of input: %+v %v", loc, ok)
	}
}

func TestLocateShared(t *testing.T) {
	t.Parallel()
	ms, err := Load(mapFS(map[string]string{
		"001_a.sql":         "select 1;\n{{ template \"shared/t.sql\" dict \"t\" \"users\" }}\n{{ template \"shared/u.sql\" }}",
		"shared/t.sql":      "comment on table {{.t}} is 'x';\nalter table {{.t}} add colum y int;",
		"shared/u.sql":      "select 2;",
		"shared/deep/x.sql": "select 3;",
	}), nil)
	if err != nil {
		t.Fatal(err)
	}
	m := ms[0]
	loc, ok := m.Locate(position(t, m.SQL, "int;"))
	if !ok || loc.Line != 2 || !loc.Expanded || loc.Shared != "shared/t.sql" || loc.SharedLine != 2 || loc.SharedColumn != 32 {
		t.Fatalf("%+v", loc)
	}
}

func TestLoadInvalidTextNamesLineAndColumn(t *testing.T) {
	t.Parallel()
	for body, want := range map[string]string{
		"select 1;\nselect 'gr\xfc';\n": "invalid UTF-8 (byte 0xFC) at line 2, column 11",
		"select 'é';\x00":               "a NUL byte at line 1, column 12",
		"select 1;\n---- create above / drop below ----\nselect '\xe2\x82';": "invalid UTF-8 (byte 0xE2) at line 3, column 9",
	} {
		_, err := Load(mapFS(map[string]string{"001_a.sql": "select 1;", "002_bad.sql": body}), nil)
		var lerr *LoadError
		if !errors.As(err, &lerr) || lerr.File != "002_bad.sql" || !errors.Is(err, ErrInvalidText) {
			t.Errorf("%q: want a *LoadError for 002_bad.sql matching ErrInvalidText, got %v", body, err)
			continue
		}
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %q does not say %q", body, err, want)
		}
	}
	// Template data is checked too, after expansion.
	_, err := Load(mapFS(map[string]string{"001_a.sql": "select '{{ .x }}';"}), &LoadOpts{Data: map[string]any{"x": "\x00"}})
	if !errors.Is(err, ErrInvalidText) || !strings.Contains(err.Error(), "expanded up SQL") {
		t.Errorf("NUL from template data: %v", err)
	}
}
