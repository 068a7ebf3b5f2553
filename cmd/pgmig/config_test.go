package main

import (
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

// Secrets never reach the screen, whatever shape the connection string
// has.
func TestMaskSecrets(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"postgres://u:secret@h:5432/db":                     "postgres://u:*****@h:5432/db",
		"postgresql://u:se%40cret@h/db?sslmode=disable":     "postgresql://u:*****@h/db?sslmode=disable",
		"postgres://u:p@ss@h/db":                            "postgres://u:*****@h/db",
		"postgres://:secret@h/db":                           "postgres://:*****@h/db",
		"postgres://u@h/db?password=secret&sslmode=disable": "postgres://u@h/db?password=*****&sslmode=disable",
		"host=h password=secret user=u":                     "host=h password=***** user=u",
		`host=h password='sec ret\' x' user=u`:              "host=h password=***** user=u",
		"host=h PASSWORD = secret":                          "host=h PASSWORD = *****",
		"postgres://u@h/db":                                 "postgres://u@h/db",
		"connecting to postgres://u:secret@h/db: refused":   "connecting to postgres://u:*****@h/db: refused",
	} {
		got := maskSecrets(in)
		if got != want {
			t.Errorf("maskSecrets(%q) = %q, want %q", in, got, want)
		}
		if strings.Contains(got, "secret") || strings.Contains(got, "sec ret") || strings.Contains(got, "p@ss") {
			t.Errorf("maskSecrets(%q) leaks: %q", in, got)
		}
	}
}

// The config file is parsed by the rules of tern's INI parser.
func TestParseConfig(t *testing.T) {
	t.Parallel()
	cfg, err := parseConfig("x.conf", []byte(`lock_timeout = 5s
; a comment
# another
[database]
conn_string = postgres://u:pw@h:6543/db?sslmode=require
user = other
[data]
quoted = "kept as written"
eq = a=b
`))
	if err != nil {
		t.Fatal(err)
	}
	if v, where, ok := cfg.lookup(flagLockTimeout); !ok || v != "5s" || where != "x.conf:1" {
		t.Errorf("lock_timeout before any section: %q %q %v", v, where, ok)
	}
	// conn_string first, then the separate keys override its parts.
	v, where, _ := cfg.lookup(flagDatabase)
	for _, part := range []string{"host='h'", "port='6543'", "dbname='db'", "sslmode='require'", "password='pw'"} {
		if !strings.Contains(v, part) {
			t.Errorf("connection %q lacks %s", v, part)
		}
	}
	if strings.Index(v, "user='u'") > strings.Index(v, "user='other'") || where != "x.conf:5 [database]" {
		t.Errorf("connection %q from %s: user=other must come last", v, where)
	}
	cc, err := pgconn.ParseConfig(v)
	if err != nil || cc.User != "other" || cc.Host != "h" || cc.Port != 6543 || cc.Password != "pw" {
		t.Errorf("pgx reads %q as %+v, %v", v, cc, err)
	}
	data := map[string]string{}
	for _, e := range cfg.section("data") {
		data[e.key] = e.value
	}
	if data["quoted"] != `"kept as written"` || data["eq"] != "a=b" {
		t.Errorf("data: %v", data)
	}
}
