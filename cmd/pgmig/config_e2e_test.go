package main

import (
	"context"
	"net/url"
	"strings"
	"testing"

	"github.com/pgmig/pgmig/tests/pgtest"
)

// settings is `pgmig config --json` as name → value and name → source.
func settings(t *testing.T, r cliRun) (values, sources map[string]string, data map[string][2]string) {
	t.Helper()
	doc := oneJSON(t, r)
	values, sources, data = map[string]string{}, map[string]string{}, map[string][2]string{}
	for _, s := range doc["settings"].([]any) {
		m := s.(map[string]any)
		values[m["name"].(string)], sources[m["name"].(string)] = m["value"].(string), m["source"].(string)
	}
	for _, s := range doc["data"].([]any) {
		m := s.(map[string]any)
		data[m["name"].(string)] = [2]string{m["value"].(string), m["source"].(string)}
	}
	return values, sources, data
}

// Precedence: flag > environment > config file > default, per setting and
// per template data key; passwords never shown.
func TestConfigPrecedenceAndMasking(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{configName: `# pgmig settings
[database]
host = 127.0.0.1
port = 5999
database = fromfile
user = fileuser
password = filesecret

[pgmig]
dir = filedir
lock_timeout = 7s
segment_size = 50
schema = fileschema

[data]
owner = fileowner
api_password = hunter2
level = file
`})
	secrets := []string{"filesecret", "hunter2", "envsecret", "flagsecret"}
	noSecrets := func(r cliRun) {
		t.Helper()
		for _, s := range secrets {
			if strings.Contains(r.stdout+r.stderr, s) {
				t.Errorf("output shows the secret %q:\n%s", s, r.stdout)
			}
		}
	}

	// The file over the defaults.
	r := pgmigRun(t, dir, nil, "config", "--json").must(t, exitOK)
	noSecrets(r)
	v, src, data := settings(t, r)
	want := map[string][2]string{
		"dir":          {"filedir", "config pgmig.conf:10"},
		"lock-timeout": {"7s", "config pgmig.conf:11"},
		"segment-size": {"50", "config pgmig.conf:12"},
		"schema":       {"fileschema", "config pgmig.conf:13"},
		"wait-timeout": {"none", "default"},
		"tern-table":   {"public.schema_version", "default"},
		"format":       {"tern", "default"},
	}
	for name, w := range want {
		if v[name] != w[0] || src[name] != w[1] {
			t.Errorf("%s = %q from %q, want %q from %q", name, v[name], src[name], w[0], w[1])
		}
	}
	if !strings.Contains(v["database"], "host='127.0.0.1'") || !strings.Contains(v["database"], "password='*****'") && !strings.Contains(v["database"], "password=*****") ||
		src["database"] != "config pgmig.conf:3 [database]" {
		t.Errorf("database = %q from %q", v["database"], src["database"])
	}
	if data["owner"] != [2]string{"fileowner", "config pgmig.conf:16"} || data["api_password"][0] != "*****" {
		t.Errorf("data: %v", data)
	}

	// The environment over the file.
	env := []string{"PGMIG_LOCK_TIMEOUT=3s", "PGMIG_DATA=level=env,extra=e", "DATABASE_URL=postgres://envuser:envsecret@envhost/envdb",
		"PGMIG_ALLOW_MISSING=yes"}
	r = pgmigRun(t, dir, env, "config", "--json").must(t, exitOK)
	noSecrets(r)
	v, src, data = settings(t, r)
	if v["lock-timeout"] != "3s" || src["lock-timeout"] != "env PGMIG_LOCK_TIMEOUT" ||
		v["allow-missing"] != "true" || src["allow-missing"] != "env PGMIG_ALLOW_MISSING" ||
		v["dir"] != "filedir" || src["database"] != "env DATABASE_URL" || v["database"] != "postgres://envuser:*****@envhost/envdb" ||
		data["level"] != [2]string{"env", "env PGMIG_DATA"} || data["extra"][0] != "e" || data["owner"][0] != "fileowner" {
		t.Errorf("with the environment: %v %v %v", v, src, data)
	}
	// PGMIG_DATABASE over DATABASE_URL.
	_, src, _ = settings(t, pgmigRun(t, dir, append(env, "PGMIG_DATABASE=postgres://x@y/z"), "config", "--json").must(t, exitOK))
	if src["database"] != "env PGMIG_DATABASE" {
		t.Errorf("PGMIG_DATABASE and DATABASE_URL: database from %s", src["database"])
	}

	// Flags over the environment.
	r = pgmigRun(t, dir, env, "config", "--json", "--lock-timeout", "1s", "--data", "level=flag", "--database", "postgres://u:flagsecret@x/y", "--dir", "flagdir").must(t, exitOK)
	noSecrets(r)
	v, src, data = settings(t, r)
	if v["lock-timeout"] != "1s" || src["lock-timeout"] != "flag --lock-timeout" || v["dir"] != "flagdir" || src["dir"] != "flag --dir" ||
		src["database"] != "flag --database" || data["level"] != [2]string{"flag", "flag --data"} || data["extra"][0] != "e" {
		t.Errorf("with flags: %v %v %v", v, src, data)
	}

	// Text: the same, masked, with where the connection goes.
	r = pgmigRun(t, dir, nil, "config").must(t, exitOK, "Config file: pgmig.conf (found in the current directory)",
		"lock-timeout", "7s", "config pgmig.conf:11", "data api_password", "*****", "Connects to 127.0.0.1:5999 as fileuser, database fromfile, with a password")
	noSecrets(r)
	// --config names another file; a missing one is an error.
	writeFiles(t, dir, map[string]string{"other.conf": "lock_timeout = 9s\n"})
	v, src, _ = settings(t, pgmigRun(t, dir, nil, "config", "--json", "--config", "other.conf").must(t, exitOK))
	if v["lock-timeout"] != "9s" || src["lock-timeout"] != "config other.conf:1" || v["dir"] != "." {
		t.Errorf("--config other.conf: %v %v", v, src)
	}
	pgmigRun(t, dir, []string{"PGMIG_CONFIG=missing.conf"}, "config").must(t, exitUsage).stderrHas(t, "missing.conf", "does not exist")
}

// A config file must not hide a typo: unknown keys and sections, bad
// values and tern features pgmig lacks are refused naming file and line,
// before anything is connected to.
func TestConfigFileErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ file, says string }{
		{"[pgmig]\nlock_timout = 5s\n", "pgmig.conf:2: unknown setting \"lock_timout\""},
		{"[pgmig]\nlock_timeout = soon\n", "pgmig.conf:2 (for --lock-timeout)"},
		{"[database]\nhots = x\n", "pgmig.conf:2: unknown key \"hots\" in [database]"},
		{"[databse]\n", "pgmig.conf:1: unknown section [databse]"},
		{"[ssh-tunnel]\nhost = bastion\n", "does not open SSH tunnels"},
		{"[pgmig]\nto = 3\n", "per-run flags"},
		{"[pgmig]\nformat = liquibase\n", "unknown format \"liquibase\""},
		{"dir = {{ .Nope }\n", "template"},
		{"just words\n", "pgmig.conf:1: cannot parse"},
	} {
		dir := t.TempDir()
		writeFiles(t, dir, map[string]string{configName: tc.file, "001_a.sql": "select 1;"})
		r := pgmigRun(t, dir, []string{"DATABASE_URL=" + silentServer(t)}, "push").must(t, exitUsage)
		r.stderrHas(t, tc.says)
		// Help and version still answer.
		pgmigRun(t, dir, nil, "help").must(t, exitOK)
		pgmigRun(t, dir, nil, "version").must(t, exitOK)
	}
}

// The config file, the environment and --data drive a real push: the
// connection from [database] keys, --dir from [pgmig], template data from
// [data], PGMIG_DATA and --data.
func TestConfigDrivesPush(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	u, err := url.Parse(db.URL)
	if err != nil {
		t.Fatal(err)
	}
	pw, _ := u.User.Password()
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		configName: "[database]\nhost = " + u.Hostname() + "\nport = " + u.Port() + "\nuser = " + u.User.Username() +
			"\npassword = " + pw + "\ndatabase = " + strings.TrimPrefix(u.Path, "/") + "\nsslmode = disable\n" +
			"\n[pgmig]\ndir = db/migrations\n\n[data]\nfrom_file = ff\n",
		"db/migrations/001_t.sql": "create table t_{{.from_file}}_{{.from_env}}_{{.from_flag}} (id int);\n",
	})
	pgmigRun(t, dir, []string{"PGMIG_DATA=from_env=ee"}, "push", "--data", "from_flag=gg").must(t, exitOK, "applied 001_t.sql", "now at version 1.")
	var n int
	if err := db.Conn(t).QueryRow(context.Background(), "select count(*) from pg_class where relname = 't_ff_ee_gg'").Scan(&n); err != nil || n != 1 {
		t.Fatalf("table t_ff_ee_gg: %d %v", n, err)
	}
	// Other data would change the applied SQL: drift.
	pgmigRun(t, dir, []string{"PGMIG_DATA=from_env=ee"}, "push", "--data", "from_flag=other").must(t, exitValidation)
	pgmigRun(t, dir, nil, "status", "--data", "from_env=ee", "--data", "from_flag=gg").must(t, exitOK, "Nothing pending.")
	pgmigRun(t, dir, nil, "push", "--format", "tern", "--data", "from_env=ee", "--data", "from_flag=gg").must(t, exitOK, "Nothing to apply")
}

// tern's tern.conf works as it is: found in the current directory,
// expanded as a template ({{env "..."}}), [data] and version_table read.
func TestTernConfRead(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	u, err := url.Parse(db.URL)
	if err != nil {
		t.Fatal(err)
	}
	pw, _ := u.User.Password()
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		ternConfigName: `[database]
# host is required (network host or path to Unix domain socket)
host = ` + u.Hostname() + `
port = ` + u.Port() + `
# database is required
database = {{ env "E2E_DATABASE" }}
user = ` + u.User.Username() + `
password = ` + pw + `
version_table = public.my_versions
sslmode = disable

[ssh-tunnel]
# host =
# port = 22

[data]
prefix = tern
`,
		"001_t.sql": "create table {{.prefix}}_t (id int);\n",
	})
	env := []string{"E2E_DATABASE=" + strings.TrimPrefix(u.Path, "/")}
	v, src, data := settings(t, pgmigRun(t, dir, env, "config", "--json").must(t, exitOK))
	if v["tern-table"] != "public.my_versions" || src["tern-table"] != "config tern.conf:9 [database] version_table" || data["prefix"][0] != "tern" {
		t.Errorf("tern.conf: %v %v %v", v, src, data)
	}
	pgmigRun(t, dir, env, "push").must(t, exitOK, "applied 001_t.sql")
	pgmigRun(t, dir, env, "status").must(t, exitOK, "the database is at version 1")
}
