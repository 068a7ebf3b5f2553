package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"text/template"

	"github.com/Masterminds/sprig/v3"
)

// The config file (docs/cli.md, "Configuration") is INI, parsed by the
// rules of the parser tern uses for tern.conf, so a tern.conf means the
// same thing to pgmig: lines `key = value` under `[section]` headers,
// `#` and `;` start comment lines, keys and values are trimmed, nothing is
// unquoted. Like tern, the file is first expanded as a Go template with
// sprig's functions ({{ env "PGPASSWORD" }}).
//
//	[database]   the connection: tern's host, port, database, user,
//	             password, sslmode, sslrootcert, sslcert, sslkey,
//	             conn_string (or url), version_table
//	[pgmig]      pgmig's settings: dir, schema, format, lock_timeout,
//	             segment_size, allow_out_of_order, allow_missing,
//	             tern_table, wait_timeout (keys before any section count
//	             as [pgmig])
//	[data]       template data, as tern's
const (
	configName     = "pgmig.conf"
	ternConfigName = "tern.conf"
)

// configFile is a parsed config file. A nil *configFile (no file) answers
// every lookup with nothing.
type configFile struct {
	path string // as given or found, relative to the current directory
	why  string // how it was chosen: "flag --config", "env PGMIG_CONFIG", "found in the current directory"
	// sections: section name → key → value; "" is folded into "pgmig".
	sections map[string]map[string]configEntry
	// conn is the connection string assembled from [database]; connWhere
	// says where it came from.
	conn, connWhere string
}

type configEntry struct {
	key, value string
	line       int
}

// databaseKeys are tern.conf's [database] keys that make up a connection,
// with the libpq keyword each becomes.
var databaseKeys = []struct{ key, keyword string }{
	{"host", "host"}, {"port", "port"}, {"database", "dbname"}, {"user", "user"}, {"password", "password"},
	{"sslmode", "sslmode"}, {"sslrootcert", "sslrootcert"}, {"sslcert", "sslcert"}, {"sslkey", "sslkey"},
}

// findConfig reads the config file named by --config or PGMIG_CONFIG, else
// ./pgmig.conf, else ./tern.conf (a tern user's directory works as it is);
// none at all is fine.
func findConfig(o *options, env lookupEnv) (*configFile, error) {
	path, why := o.config, "flag --config"
	if path == "" {
		if v, ok := env(envName(flagConfig.name)); ok && v != "" {
			path, why = v, "env "+envName(flagConfig.name)
		}
	}
	if path == "" {
		for _, name := range []string{configName, ternConfigName} {
			if st, err := os.Stat(name); err == nil && !st.IsDir() {
				path, why = name, "found in the current directory"
				break
			}
		}
	}
	if path == "" {
		o.sources[flagConfig.name] = "default"
		return nil, nil
	}
	o.config = path
	o.sources[flagConfig.name] = why
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, usagef("config file %s (%s) does not exist", path, why)
		}
		return nil, usagef("reading config file: %v", err)
	}
	cfg, err := parseConfig(path, b)
	if err != nil {
		return nil, err
	}
	cfg.why = why
	return cfg, nil
}

var (
	iniSection = regexp.MustCompile(`^\[(.*)\]$`)
	iniAssign  = regexp.MustCompile(`^([^=]+)=(.*)$`)
)

func parseConfig(path string, b []byte) (*configFile, error) {
	if bytes.Contains(b, []byte("{{")) {
		tpl, err := template.New(path).Funcs(sprig.TxtFuncMap()).Parse(string(b))
		if err != nil {
			return nil, usagef("config file %s: template: %v", path, err)
		}
		var buf bytes.Buffer
		if err := tpl.Execute(&buf, nil); err != nil {
			return nil, usagef("config file %s: template: %v", path, err)
		}
		b = buf.Bytes()
	}
	c := &configFile{path: path, sections: map[string]map[string]configEntry{}}
	section := "pgmig"
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		if m := iniAssign.FindStringSubmatch(line); m != nil {
			key, value := strings.TrimSpace(m[1]), strings.TrimSpace(m[2])
			if err := c.checkKey(section, key, n); err != nil {
				return nil, err
			}
			if c.sections[section] == nil {
				c.sections[section] = map[string]configEntry{}
			}
			if section == "pgmig" {
				key = strings.ReplaceAll(key, "-", "_")
			}
			c.sections[section][key] = configEntry{key: key, value: value, line: n}
			continue
		}
		if m := iniSection.FindStringSubmatch(line); m != nil {
			section = strings.TrimSpace(m[1])
			switch section {
			case "pgmig", "database", "data", "ssh-tunnel":
			default:
				return nil, usagef("%s: unknown section [%s]: a config file has [database], [pgmig] and [data]", c.where(n), section)
			}
			continue
		}
		return nil, usagef("%s: cannot parse %q: want `key = value` or `[section]`", c.where(n), line)
	}
	if err := sc.Err(); err != nil {
		return nil, usagef("config file %s: %v", path, err)
	}
	if err := c.assembleConnection(); err != nil {
		return nil, err
	}
	return c, nil
}

// checkKey refuses keys pgmig would not use: a typo must not silently
// leave a setting at its default.
func (c *configFile) checkKey(section, key string, line int) error {
	switch section {
	case "pgmig":
		k := strings.ReplaceAll(key, "-", "_")
		var known []string
		for _, d := range allFlags() {
			if d.config == k {
				return nil
			}
			if d.config != "" {
				known = append(known, d.config)
			}
		}
		return usagef("%s: unknown setting %q in [pgmig]: the file can set %s (per-run flags such as --to belong on the command line)",
			c.where(line), key, strings.Join(known, ", "))
	case "database":
		if key == "conn_string" || key == "url" || key == "version_table" {
			return nil
		}
		for _, k := range databaseKeys {
			if k.key == key {
				return nil
			}
		}
		return usagef("%s: unknown key %q in [database]: want conn_string (or url), host, port, database, user, password, sslmode, sslrootcert, sslcert, sslkey, version_table", c.where(line), key)
	case "data":
		if !dataKey.MatchString(key) {
			return usagef("%s: [data] key %q is not usable as {{.%s}} in a template", c.where(line), key, key)
		}
		return nil
	case "ssh-tunnel":
		return usagef("%s: pgmig does not open SSH tunnels ([ssh-tunnel]): open one yourself (ssh -L) and point [database] host and port at it", c.where(line))
	}
	return nil
}

// assembleConnection turns [database] into one connection string, as tern
// does: conn_string (or url) first, then the separate keys override what
// it says.
func (c *configFile) assembleConnection() error {
	db := c.sections["database"]
	if len(db) == 0 {
		return nil
	}
	base, hasBase := db["conn_string"]
	if u, ok := db["url"]; ok {
		if hasBase {
			return usagef("%s: [database] has both conn_string (line %d) and url: keep one", c.where(u.line), base.line)
		}
		base, hasBase = u, true
	}
	first := 0
	note := func(line int) {
		if first == 0 || line < first {
			first = line
		}
	}
	var kw []string
	for _, k := range databaseKeys {
		if e, ok := db[k.key]; ok {
			kw = append(kw, k.keyword+"="+quoteKeyword(e.value))
			note(e.line)
		}
	}
	switch {
	case hasBase && len(kw) == 0:
		c.conn = base.value
		note(base.line)
	case hasBase:
		note(base.line)
		prefix := base.value
		if isURL(base.value) {
			var err error
			if prefix, err = urlKeywords(base.value); err != nil {
				return usagef("%s: [database] %s: %v", c.where(base.line), base.key, err)
			}
		}
		// In a key=value string the last occurrence of a keyword wins.
		c.conn = prefix + " " + strings.Join(kw, " ")
	case len(kw) > 0:
		c.conn = strings.Join(kw, " ")
	default:
		return nil // version_table alone
	}
	c.connWhere = c.where(first) + " [database]"
	return nil
}

func isURL(s string) bool {
	return strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://")
}

// urlKeywords rewrites a one-host connection URL as key=value pairs, so
// that separate keys can follow it.
func urlKeywords(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("cannot parse the URL: %v", maskSecrets(err.Error()))
	}
	if strings.Contains(u.Host, ",") {
		return "", errors.New("a URL with several hosts cannot be combined with host, port, user... keys: write it as key=value pairs")
	}
	var kw []string
	add := func(k, v string) {
		if v != "" {
			kw = append(kw, k+"="+quoteKeyword(v))
		}
	}
	add("host", u.Hostname())
	add("port", u.Port())
	if u.User != nil {
		add("user", u.User.Username())
		pw, _ := u.User.Password()
		add("password", pw)
	}
	add("dbname", strings.TrimPrefix(u.Path, "/"))
	q := u.Query()
	keys := make([]string, 0, len(q))
	for k := range q {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		add(k, q.Get(k))
	}
	return strings.Join(kw, " "), nil
}

// quoteKeyword quotes a value for a key=value connection string (libpq's
// rules: single quotes, backslash escapes).
func quoteKeyword(v string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}

func (c *configFile) where(line int) string {
	return c.path + ":" + strconv.Itoa(line)
}

// lookup is d's value in the file and where it is.
func (c *configFile) lookup(d *flagDef) (value, where string, ok bool) {
	if c == nil {
		return "", "", false
	}
	switch d {
	case flagDatabase:
		return c.conn, c.connWhere, c.conn != ""
	case flagTernTable:
		if e, ok := c.sections["pgmig"]["tern_table"]; ok {
			return e.value, c.where(e.line), true
		}
		// tern.conf's own name for it.
		if e, ok := c.sections["database"]["version_table"]; ok {
			return e.value, c.where(e.line) + " [database] version_table", true
		}
		return "", "", false
	}
	if d.config == "" {
		return "", "", false
	}
	if e, ok := c.sections["pgmig"][d.config]; ok {
		return e.value, c.where(e.line), true
	}
	return "", "", false
}

// section is a section's entries in file order.
func (c *configFile) section(name string) []configEntry {
	if c == nil {
		return nil
	}
	entries := make([]configEntry, 0, len(c.sections[name]))
	for _, e := range c.sections[name] {
		entries = append(entries, e)
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].line < entries[j].line })
	return entries
}

// maskSecrets hides passwords in connection strings (URL user info, a
// password query parameter, a password=... keyword) before they are shown.
func maskSecrets(s string) string {
	s = urlPassword.ReplaceAllString(s, "${1}*****@")
	s = keywordPassword.ReplaceAllString(s, "${1}*****")
	return s
}

var (
	// postgres://user:secret@host → postgres://user:*****@host
	urlPassword = regexp.MustCompile(`(postgres(?:ql)?://[^:/?#@\s]*:)[^/?#\s]*@`)
	// password=secret, password='sec ret', ?password=secret&...
	keywordPassword = regexp.MustCompile(`(?i)(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]*)`)
)

// secretKey: a [data] key (or setting) whose value is shown masked.
func secretKey(key string) bool {
	k := strings.ToLower(key)
	return strings.Contains(k, "password") || strings.Contains(k, "passwd") || strings.Contains(k, "secret")
}
