package pgmig

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/template"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/Masterminds/sprig/v3"
	"github.com/jackc/tern/v2/migrate"
)

// The two markers of tern's file format. Both are matched exactly as tern
// matches them (migrate.go in github.com/jackc/tern/v2), so that a directory
// means the same thing to pgmig and to tern.
const downSeparator = "---- create above / drop below ----"

var (
	// tern: disableTxPattern; tern tests the *expanded* up SQL, so do we.
	// Unlike tern, a line ending in "\r\n" (a file with Windows line
	// endings) ends the marker too: tern misses it there and runs the file
	// in a transaction, where its CREATE INDEX CONCURRENTLY fails.
	disableTxPattern = regexp.MustCompile(`(?m)^---- tern: disable-tx ----\r?$`)
	// pgmig's own markers, in the same style.
	commitAfterPattern = regexp.MustCompile(`(?m)^---- pgmig: commit-after ----\r?$`)
	// lockTimeoutLine finds every line that means to be the lock-timeout
	// marker, lockTimeoutPattern is what it must look like: a misspelt one
	// is an error, not a comment that silently changes nothing.
	lockTimeoutLine    = regexp.MustCompile(`(?m)^---- pgmig: lock-timeout\b.*$`)
	lockTimeoutPattern = regexp.MustCompile(`^---- pgmig: lock-timeout ([0-9][0-9a-zµ.]*) ----\r?$`)
)

// maxLockTimeout is the largest value PostgreSQL's lock_timeout holds
// (2147483647 ms).
const maxLockTimeout = 2147483647 * time.Millisecond

// byteOrderMark is the UTF-8 encoding of U+FEFF, which some editors write
// at the start of a file. Files are loaded as if it were not there: sent to
// the server it is an invisible character in front of the first keyword,
// and a syntax error.
const byteOrderMark = "\ufeff"

// Migration is one migration file, loaded and expanded.
type Migration struct {
	// Version is the number in the file name (001_x.sql is version 1), the
	// key the engine records. Flyway's dotted versions are encoded (see
	// docs/formats.md: V1.2 is 10200), Label keeps them as written.
	Version int64
	// Label is the version as its tool shows it ("1.2" for Flyway's
	// V1_2__x.sql), for display; "" means the decimal Version. The engine
	// records it in the history.
	Label string
	// Name is the file name without the version prefix and the .sql suffix
	// (golang-migrate: without .up.sql; Flyway: the description).
	Name string
	// File is the path of the file inside the loaded fs.FS.
	File string
	// Format is the format the file was read in.
	Format Format
	// Repeatable marks a repeatable migration (Version 0): Flyway's R__
	// files, the other formats' repeatable/*.sql. The engine applies it
	// after the versioned migrations whenever its checksum changed.
	Repeatable bool
	// SQL is the up SQL pgmig runs: for tern exactly what tern would run
	// (the part above the down separator, trimmed, with templates
	// expanded); for the other formats docs/formats.md says what it is.
	SQL string
	// Down is the down SQL, trimmed and expanded ("" if none).
	Down string
	// Transactional is false when the migration must run outside a
	// transaction: tern's `---- tern: disable-tx ----` marker in the
	// expanded SQL, or the other tools' equivalents.
	Transactional bool
	// Checksum is the lowercase hex sha256 of the UTF-8 bytes of SQL, the
	// checksum the engine stores in its history.
	Checksum string
	// CommitAfter is set by a line `---- pgmig: commit-after ----` in the
	// expanded SQL: the migration ends a segment of the push, so what it
	// does is committed before the next migration runs (e.g. a new enum
	// value, unusable in the transaction that added it).
	CommitAfter bool
	// LockTimeout is set by a line `---- pgmig: lock-timeout D ----` in the
	// expanded SQL (D as Go writes durations: 5s, 500ms, 1m30s; 0: no
	// limit): the DDL lock timeout for this migration's statements,
	// overriding PushOpts.DDLLockTimeout (see there). nil: no marker.
	LockTimeout *time.Duration

	// source is the up section as it is in the file, before trimming and
	// template expansion; lead is what TrimSpace removed from its start.
	// Together they map an error position in SQL back to the file.
	source string
	lead   string
	// templated is true when expansion changed the text.
	templated bool
	// shared holds the shared template files (path → content) of the
	// directory, to find where included text came from.
	shared map[string]string
	// Formats other than tern: text is the file as read, spans where each
	// part of SQL came from in it.
	text  string
	spans []span
}

// LoadOpts configures Load and LoadDir. A nil *LoadOpts means defaults.
type LoadOpts struct {
	// Format forces a file format; "" tells it from the files (see
	// docs/formats.md).
	Format Format
	// Data is the template data, as tern's Migrator.Data (tern's CLI fills
	// it from the [data] section of tern.conf). For Flyway it holds the
	// placeholders: ${name} is Data["name"] (names match in any case, as
	// in Flyway; values are formatted with fmt.Sprint).
	Data map[string]any
	// Env is the environment goose's `-- +goose ENVSUB ON` substitutes
	// from; nil is an empty one. goose reads the process environment: pass
	// EnvMap(os.Environ()) for the same result.
	Env map[string]string
}

// EnvMap turns KEY=value strings (os.Environ()) into a map for
// LoadOpts.Env; for a key given twice the last value wins, as in
// os.Getenv.
func EnvMap(environ []string) map[string]string {
	env := make(map[string]string, len(environ))
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	return env
}

// LoadDir loads the migrations of a directory; see Load.
func LoadDir(dir string, opts *LoadOpts) ([]*Migration, error) {
	l, err := LoadDirAll(dir, opts)
	if err != nil {
		return nil, err
	}
	return versioned(l)
}

// dirFS is os.DirFS(dir) for LoadDir: knowing the files are plain files of
// a directory lets Load read them concurrently and with fewer system calls.
type dirFS struct {
	fs.FS
	dir string
}

// Load loads the migrations at the root of fsys (a directory via
// os.DirFS, or an embed.FS sub-tree via fs.Sub), in version order. The
// files may be in tern's format or in golang-migrate's, goose's, dbmate's,
// sql-migrate's or Flyway's: the format is told from the files (one format
// per directory) or forced with opts.Format, and recorded in each
// Migration. docs/formats.md gives each format's rules.
//
// Files in tern's format are read with tern's own loader, so the SQL is
// byte for byte what `tern migrate` would run: NNN_name.sql files numbered
// 1, 2, 3... without gaps, the down section after
// `---- create above / drop below ----`, Go templates (sprig functions,
// shared .sql files in sub-folders usable with {{ template "path" . }}, and
// opts.Data). When no migration file contains a template action ({{),
// tern's loader is not called: text without actions expands to itself, so
// the SQL is the trimmed sections of each file, exactly what tern would
// produce (a test loads a varied corpus both ways and compares).
//
// Every format: a UTF-8 byte-order mark at the start of a file is ignored;
// a .sql file that looks like a migration (its name starts with a digit,
// or with V, U or R as Flyway's do) but matches no rule of the format is
// an error, not skipped. Repeatable migrations (Flyway's R__ files, the
// *.sql files of a repeatable/ sub-directory in the other formats) follow
// the versioned ones, in name order, with Repeatable set and Version 0;
// a directory may hold only those.
//
// Problems are reported as a *LoadError naming the file (with a
// *LineError naming the line where there is one), matching one of
// ErrNoMigrations, ErrDuplicateVersion, ErrMissingVersion,
// ErrEmptyMigration, ErrTemplate, ErrInvalidFileName, ErrInvalidText (a
// file that is not valid UTF-8 or holds a NUL byte: the message gives the
// line and column), ErrMixedFormats, ErrUnmatchedFile, ErrMarker,
// ErrTransactionControl, ErrSubstitution, ErrUnsupported with errors.Is.
func Load(fsys fs.FS, opts *LoadOpts) ([]*Migration, error) {
	l, err := LoadAll(fsys, opts)
	if err != nil {
		return nil, err
	}
	return versioned(l)
}

// versioned: the migrations of l (versioned, then repeatable), which must
// not be none.
func versioned(l *Loaded) ([]*Migration, error) {
	if len(l.Migrations) == 0 && len(l.Repeatable) == 0 {
		return nil, noMigrations(l.Format)
	}
	return l.All(), nil
}

// loadTern loads a directory in tern's format, the files read already.
func loadTern(fsys fs.FS, d *dirScan, opts *LoadOpts) ([]*Migration, error) {
	files, err := scanMigrationFiles(d.root)
	if err != nil {
		return nil, err
	}
	bodies := make([]fileBody, len(files))
	for i, f := range files {
		rf := d.byPath[f.path]
		if rf == nil || rf.tern == nil { // read by scanDir as looking like a migration, parsed if tern-named
			return nil, fmt.Errorf("loading migrations: %s was not read", f.path)
		}
		bodies[i] = *rf.tern
	}
	shared, err := parseSharedTemplates(fsys, d.root)
	if err != nil {
		return nil, err
	}
	if slices.ContainsFunc(bodies, func(b fileBody) bool { return b.template }) {
		return loadTemplates(fsys, d.root, files, bodies, shared, opts)
	}
	return loadPlain(files, bodies, shared)
}

// fileBody is a migration file as read, and what can be derived from it
// while it is read.
type fileBody struct {
	text string
	// template: the file holds a template action, so it needs tern.
	template bool
	// source is the up section as in the file; lead is the white space it
	// starts with.
	source, lead string
	// The up and down sections, trimmed, and the checksum of the up SQL: what
	// the file expands to when it is not a template.
	up, down string
	checksum string
}

// loadPlain builds the migrations of a directory where no migration file
// holds a template action, without the template engine. It is tern's loader
// (LoadMigrations in github.com/jackc/tern/v2/migrate) minus the template
// steps, which change nothing here: text/template's lexer emits text
// without "{{" as one text node, executed as written, whatever the data
// and the shared templates are. Everything else is done as tern does it:
// the up section is everything before the first down separator, trimmed;
// the down section everything after it, trimmed; an up section with nothing
// but blank and -- comment lines is an error, reported for the first such
// file in version order (tern stops there).
func loadPlain(files []migrationFile, bodies []fileBody, shared map[string]string) ([]*Migration, error) {
	migrations := make([]*Migration, len(files))
	for i, f := range files {
		b := &bodies[i]
		if !hasSQL(b.up) {
			return nil, classifyTernError(f.path, migrate.ErrNoFwMigration)
		}
		migrations[i] = newMigration(f, b, b.up, b.down, b.checksum, shared)
	}
	return migrations, nil
}

// loadTemplates loads through tern's loader, for directories whose
// migrations use templates.
func loadTemplates(fsys fs.FS, root []fs.DirEntry, files []migrationFile, bodies []fileBody, shared map[string]string, opts *LoadOpts) ([]*Migration, error) {
	// Hand tern what was read already: every file is read once.
	cached := &readOnceFS{FS: fsys, files: make(map[string][]byte, len(files)+len(shared)), dirs: map[string][]fs.DirEntry{".": root}}
	for i, f := range files {
		cached.files[f.path] = []byte(bodies[i].text)
	}
	for p, body := range shared {
		cached.files[p] = []byte(body)
	}

	// A Migrator without a connection is supported by tern for loading only
	// (its gengen command does the same); none of the methods that need a
	// connection is called.
	m, err := migrate.NewMigrator(context.Background(), nil, "")
	if err != nil {
		return nil, fmt.Errorf("loading migrations: %w", err)
	}
	for k, v := range opts.Data {
		m.Data[k] = v
	}
	if err := m.LoadMigrations(cached); err != nil {
		// tern loads files in order and appends each one once it has loaded,
		// so the file that failed is the first one not appended yet.
		if n := len(m.Migrations); n < len(files) {
			return nil, classifyTernError(files[n].path, err)
		}
		return nil, fmt.Errorf("loading migrations: %w", err)
	}
	if len(m.Migrations) != len(files) {
		return nil, fmt.Errorf("loading migrations: tern loaded %d files, expected %d", len(m.Migrations), len(files))
	}

	migrations := make([]*Migration, len(files))
	for i, tm := range m.Migrations {
		f := files[i]
		// Template data can bring bad text too: check what will be sent.
		if err := checkText([]byte(tm.UpSQL), "the expanded up SQL"); err != nil {
			return nil, &LoadError{File: f.path, Err: err}
		}
		if err := checkText([]byte(tm.DownSQL), "the expanded down SQL"); err != nil {
			return nil, &LoadError{File: f.path, Err: err}
		}
		migrations[i] = newMigration(f, &bodies[i], tm.UpSQL, tm.DownSQL, checksum(tm.UpSQL), shared)
	}
	return migrations, nil
}

// newMigration: the migration of file f, read as body, whose up section
// expanded to up (with the given checksum) and down section to down.
func newMigration(f migrationFile, body *fileBody, up, down, sum string, shared map[string]string) *Migration {
	return &Migration{
		Version:       f.version,
		Name:          f.name,
		File:          f.path,
		Format:        FormatTern,
		SQL:           up,
		Down:          down,
		Transactional: !disableTx(up),
		CommitAfter:   commitAfter(up),
		Checksum:      sum,
		source:        body.source,
		lead:          body.lead,
		templated:     strings.TrimSpace(body.source) != up,
		shared:        shared,
	}
}

// commitAfter: the SQL holds pgmig's `---- pgmig: commit-after ----` line
// (a cheap search first: the multi-line regexp backtracks over every line).
func commitAfter(sql string) bool {
	return strings.Contains(sql, "---- pgmig: commit-after ----") && commitAfterPattern.MatchString(sql)
}

// readLockTimeout sets m.LockTimeout from its `---- pgmig: lock-timeout D
// ----` line, if it has one; a malformed or second marker is an ErrMarker
// naming the line.
func (m *Migration) readLockTimeout() error {
	if !strings.Contains(m.SQL, "---- pgmig: lock-timeout") {
		return nil
	}
	for _, at := range lockTimeoutLine.FindAllStringIndex(m.SQL, -1) {
		line := m.SQL[at[0]:at[1]]
		where := 0
		if loc, ok := m.Locate(utf8.RuneCountInString(m.SQL[:at[0]]) + 1); ok {
			where = loc.Line
		}
		fail := func(format string, args ...any) error {
			if where == 0 {
				return &LoadError{File: m.File, Err: fmt.Errorf("%w: "+format, append([]any{ErrMarker}, args...)...)}
			}
			return lineErr(m.File, where, ErrMarker, format, args...)
		}
		if m.LockTimeout != nil {
			return fail("a second `---- pgmig: lock-timeout D ----` line (one per migration)")
		}
		sub := lockTimeoutPattern.FindStringSubmatch(line)
		if sub == nil {
			return fail("malformed lock-timeout marker %q: write `---- pgmig: lock-timeout 5s ----` (a duration such as 500ms, 5s, 1m30s; 0 for no limit)",
				strings.TrimRight(line, "\r"))
		}
		d, err := time.ParseDuration(sub[1])
		if err != nil || d > maxLockTimeout {
			return fail("lock-timeout %q: want a duration from 0 to %s such as 500ms, 5s or 1m30s", sub[1], maxLockTimeout)
		}
		m.LockTimeout = &d
	}
	return nil
}

// readLockTimeouts reads the lock-timeout marker of every migration.
func readLockTimeouts(migrations []*Migration) error {
	for _, m := range migrations {
		if err := m.readLockTimeout(); err != nil {
			return err
		}
	}
	return nil
}

// checksum is Migration.Checksum of up SQL.
func checksum(up string) string { return checksumBytes([]byte(up)) }

func checksumBytes(up []byte) string {
	sum := sha256.Sum256(up)
	var h [2 * sha256.Size]byte
	hex.Encode(h[:], sum[:])
	return string(h[:])
}

// hasSQL is tern's test that an up section is not empty (ErrNoFwMigration):
// some line is neither blank nor a -- comment.
func hasSQL(up string) bool {
	for line := range strings.SplitSeq(up, "\n") {
		if s := strings.TrimSpace(line); len(s) != 0 && !strings.HasPrefix(s, "--") {
			return true
		}
	}
	return false
}

// disableTx is tern's test, with a cheap pre-filter: the multi-line regexp
// backtracks over every line of every file.
func disableTx(sql string) bool {
	return strings.Contains(sql, "---- tern: disable-tx ----") && disableTxPattern.MatchString(sql)
}

// readers is how many goroutines LoadDir reads n files with. Reading is
// mostly system calls, which run in parallel, but each reader keeps a CPU
// busy: one CPU is left to the rest of the program (pgmig push connects and
// queries meanwhile) and to the system (a database server on the same
// machine). On two CPUs shared with the server, a second reader made the
// no-op push of 1000 migrations slower, not faster. A reader gets at least
// 256 files: below that, starting one costs more than it saves.
func readers(n int) int {
	return max(1, min(runtime.GOMAXPROCS(0)-1, n/256))
}

// readMigrationFiles reads every migration file of a tern directory,
// checks its text and, in case no file turns out to be a template, derives
// its sections and checksum.
func readMigrationFiles(fsys fs.FS, files []migrationFile, maxReaders int) ([]fileBody, error) {
	bodies := make([]fileBody, len(files))
	paths := make([]string, len(files))
	for i, f := range files {
		paths[i] = f.path
	}
	err := readFiles(fsys, paths, maxReaders, func(i int, b []byte) { bodies[i] = parseBody(b) })
	if err != nil {
		return nil, err
	}
	return bodies, nil
}

// readFiles reads the files at paths, removes a leading byte-order mark,
// checks the text and hands it to parse (b is only valid during the call).
// Text PostgreSQL cannot store must be refused here, naming the file: the
// JSON encoder would turn invalid UTF-8 into U+FFFD (the engine then finds
// a checksum that does not match, naming no file) and the server rejects a
// NUL (22P05).
//
// The first problem in the order of paths is reported. A directory from
// LoadDir is read by up to maxReaders goroutines (parse is called from
// them concurrently, for distinct i); any other fs.FS is read from this
// goroutine only, as fs.FS implementations need not be safe for concurrent
// use.
func readFiles(fsys fs.FS, paths []string, maxReaders int, parse func(i int, b []byte)) error {
	errs := make([]error, len(paths))
	var read func(name string, buf []byte) ([]byte, error)
	workers := 1
	if d, ok := fsys.(*dirFS); ok {
		r := newFileReader(d)
		defer r.close()
		read = r.read
		workers = max(1, maxReaders)
	} else {
		read = func(name string, _ []byte) ([]byte, error) { return fs.ReadFile(fsys, name) }
	}
	var next atomic.Int64
	work := func() {
		var buf []byte
		for {
			i := int(next.Add(1) - 1)
			if i >= len(paths) {
				return
			}
			b, err := read(paths[i], buf[:0])
			if err == nil {
				buf = b
				b = bytes.TrimPrefix(b, []byte(byteOrderMark))
				err = checkText(b, "")
			}
			if err != nil {
				errs[i] = &LoadError{File: paths[i], Err: err}
				continue
			}
			parse(i, b)
		}
	}
	var wg sync.WaitGroup
	for range workers - 1 {
		wg.Go(work)
	}
	work()
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func parseBody(b []byte) fileBody {
	text := string(b)
	source, down, hasDown := strings.Cut(text, downSeparator)
	body := fileBody{
		text:     text,
		template: strings.Contains(text, "{{"),
		source:   source,
		lead:     source[:len(source)-len(strings.TrimLeftFunc(source, unicode.IsSpace))],
	}
	if body.template {
		return body
	}
	body.up = strings.TrimSpace(source)
	if hasDown {
		body.down = strings.TrimSpace(down)
	}
	// The checksum from b, where the up SQL is at the same offset as in
	// text: hashing the string would copy it first.
	body.checksum = checksumBytes(b[len(body.lead) : len(body.lead)+len(body.up)])
	return body
}

// readOnceFS serves the files and directories already read from memory,
// the rest from the underlying FS.
type readOnceFS struct {
	fs.FS
	mu    sync.Mutex
	files map[string][]byte
	dirs  map[string][]fs.DirEntry
}

func (r *readOnceFS) ReadFile(name string) ([]byte, error) {
	r.mu.Lock()
	b, ok := r.files[name]
	r.mu.Unlock()
	if ok {
		return b, nil
	}
	b, err := fs.ReadFile(r.FS, name)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	r.files[name] = b
	r.mu.Unlock()
	return b, nil
}

func (r *readOnceFS) ReadDir(name string) ([]fs.DirEntry, error) {
	r.mu.Lock()
	d, ok := r.dirs[name]
	r.mu.Unlock()
	if ok {
		return d, nil
	}
	return fs.ReadDir(r.FS, name)
}

type migrationFile struct {
	path    string
	version int64
	name    string
}

// scanMigrationFiles does what tern's FindMigrations does with the root
// directory's entries, but reports gaps and duplicates naming the files
// involved.
func scanMigrationFiles(entries []fs.DirEntry) ([]migrationFile, error) {
	var files []migrationFile
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		digits, name, ok := splitMigrationFileName(e.Name())
		if !ok {
			continue
		}
		// tern numbers migrations with int32 sequences.
		v, err := strconv.ParseInt(digits, 10, 32)
		if err != nil {
			return nil, &LoadError{File: e.Name(), Err: fmt.Errorf("%w: version %s out of range (tern allows at most %d)", ErrInvalidFileName, digits, int32(^uint32(0)>>1))}
		}
		files = append(files, migrationFile{path: e.Name(), version: v, name: name})
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("loading migrations: %w (files named like 001_create_users.sql)", ErrNoMigrations)
	}
	sort.SliceStable(files, func(i, j int) bool { return files[i].version < files[j].version })
	for i, f := range files {
		if i > 0 && files[i-1].version == f.version {
			return nil, &LoadError{File: f.path, Err: fmt.Errorf("%w %d: also in %s", ErrDuplicateVersion, f.version, files[i-1].path)}
		}
		want := int64(1)
		if i > 0 {
			want = files[i-1].version + 1
		}
		if f.version > want {
			after := "versions start at 1"
			if i > 0 {
				after = "after " + files[i-1].path
			}
			return nil, &LoadError{File: f.path, Err: fmt.Errorf("%w %d (%s)", ErrMissingVersion, want, after)}
		}
		if f.version < 1 {
			return nil, &LoadError{File: f.path, Err: fmt.Errorf("%w: version 0 (versions start at 1)", ErrInvalidFileName)}
		}
	}
	return files, nil
}

// splitMigrationFileName matches a file name as tern's migrationPattern,
// `\A(\d+)_.+\.sql\z`, does (\d: ASCII digits; .: any character but a
// newline, an invalid byte included), without the regexp, which took a
// tenth of the time of loading a thousand files: the version digits, then
// the name between "_" and ".sql", not empty.
func splitMigrationFileName(file string) (digits, name string, ok bool) {
	n := 0
	for n < len(file) && '0' <= file[n] && file[n] <= '9' {
		n++
	}
	if n == 0 || len(file) <= n+len("_.sql") || file[n] != '_' || !strings.HasSuffix(file, ".sql") {
		return "", "", false
	}
	name = file[n+1 : len(file)-len(".sql")]
	if strings.Contains(name, "\n") {
		return "", "", false
	}
	return file[:n], name, true
}

// parseSharedTemplates parses every shared file (a .sql file in a
// sub-folder, at any depth) the way tern will, so that a syntax error is
// reported with the shared file's name before tern's loader (which does not
// name it) trips over it. root holds the entries of the root directory,
// read already: only its sub-folders are walked, in the order tern's walk
// from the root visits them.
func parseSharedTemplates(fsys fs.FS, root []fs.DirEntry) (map[string]string, error) {
	shared := map[string]string{}
	var funcs template.FuncMap
	walk := func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || path.Dir(p) == "." || path.Ext(p) != ".sql" {
			return nil
		}
		body, err := fs.ReadFile(fsys, p)
		if err != nil {
			return &LoadError{File: p, Err: err}
		}
		if err := checkText(body, ""); err != nil {
			return &LoadError{File: p, Err: err}
		}
		if funcs == nil {
			funcs = sprig.TxtFuncMap()
			funcs["install_snapshot"] = func(string) (string, error) { return "", nil }
		}
		if _, err = template.New(p).Funcs(funcs).Parse(string(body)); err != nil {
			return &LoadError{File: p, Err: fmt.Errorf("%w: %w", ErrTemplate, err)}
		}
		shared[p] = string(body)
		return nil
	}
	for _, e := range root {
		if e.IsDir() {
			if err := fs.WalkDir(fsys, e.Name(), walk); err != nil {
				return nil, err
			}
		}
	}
	return shared, nil
}

// locateShared finds the one line of a shared file that produced an
// expanded line: identical, else with the same literal text around actions.
func (m *Migration) locateShared(expLine string, expCol int) (file string, line, col int) {
	type hit struct {
		file      string
		line, col int
	}
	var exact, fuzzy []hit
	for f, body := range m.shared {
		for i, l := range strings.Split(body, "\n") {
			l = strings.TrimSuffix(l, "\r")
			if l == expLine {
				exact = append(exact, hit{f, i + 1, expCol})
			} else if _, ok := fuzzyFragments(l, expLine); ok {
				fuzzy = append(fuzzy, hit{f, i + 1, fuzzyColumn(l, expLine, expCol)})
			}
		}
	}
	switch {
	case len(exact) == 1:
		return exact[0].file, exact[0].line, exact[0].col
	case len(exact) == 0 && len(fuzzy) == 1:
		return fuzzy[0].file, fuzzy[0].line, fuzzy[0].col
	}
	return "", 0, 0
}

func classifyTernError(file string, err error) error {
	var execErr template.ExecError
	switch {
	case errors.Is(err, migrate.ErrNoFwMigration):
		return &LoadError{File: file, Err: fmt.Errorf("%w: no SQL above the down separator (only blanks and -- comments)", ErrEmptyMigration)}
	case errors.As(err, &execErr), strings.HasPrefix(err.Error(), "template: "):
		return &LoadError{File: file, Err: fmt.Errorf("%w: %w", ErrTemplate, err)}
	default:
		return &LoadError{File: file, Err: err}
	}
}

// Location is a place in a migration file.
type Location struct {
	// File is the migration file (Migration.File).
	File string
	// Line and Column are 1-based; Column counts characters (runes), as
	// PostgreSQL positions do.
	Line, Column int
	// Text is the file's line at Line, without the newline.
	Text string
	// Expanded is set when the position falls in text produced by a
	// template: Line is the source line whose template produced it (best
	// effort, see Locate), and ExpandedText/ExpandedColumn give the line as
	// it was sent to the server and the column in it.
	Expanded       bool
	ExpandedText   string
	ExpandedColumn int
	// Shared, SharedLine, SharedColumn: the shared template file and place
	// the expanded line came from, when exactly one line of the shared
	// files matches it ("" otherwise).
	Shared       string
	SharedLine   int
	SharedColumn int
}

// Locate maps a 1-based character position in m.SQL (PostgreSQL's error
// position) to a line and column of the file.
//
// For formats other than tern the SQL is assembled from parts of the file
// and the mapping is exact, except in text that goose's ENVSUB or a Flyway
// placeholder produced: that maps to where the variable is written, and
// Expanded is set.
//
// Without templates the up SQL is the file's first section minus leading
// blanks, so the mapping is exact. With templates, lines of the expanded SQL
// are matched to lines of the source by a longest-common-subsequence of
// identical lines: a position on a line that survived expansion unchanged
// maps exactly; a position on a line produced by a template action maps to
// the first source line with a {{ action }} between the nearest unchanged
// lines around it (column: that action's start), and Expanded is set.
func (m *Migration) Locate(position int) (Location, bool) {
	sqlRunes := []rune(m.SQL)
	if position < 1 || position > len(sqlRunes)+1 {
		return Location{}, false
	}
	if position == len(sqlRunes)+1 { // "at end of input"
		position = len(sqlRunes)
		if position == 0 {
			return Location{}, false
		}
	}
	before := string(sqlRunes[:position-1])
	if m.Format != "" && m.Format != FormatTern {
		return m.locateMapped(len(before))
	}
	expLine := strings.Count(before, "\n")                                // 0-based
	expCol := len([]rune(before[strings.LastIndex(before, "\n")+1:])) + 1 // 1-based
	expLines := strings.Split(m.SQL, "\n")
	srcLines := strings.Split(m.source, "\n")
	leadLines := strings.Count(m.lead, "\n")
	leadCols := len([]rune(m.lead[strings.LastIndex(m.lead, "\n")+1:]))

	loc := Location{File: m.File}
	if !m.templated {
		loc.Line = leadLines + expLine + 1
		loc.Column = expCol
		if expLine == 0 {
			loc.Column += leadCols
		}
		loc.Text = strings.TrimSuffix(srcLines[loc.Line-1], "\r")
		return loc, true
	}

	// Templated: the source that was parsed as a template is the trimmed
	// up section, whose first line starts leadLines lines into the file.
	trimmed := strings.Split(strings.TrimSpace(m.source), "\n")
	match := alignLines(trimmed, expLines)
	src, col := 0, 1
	expanded := true
	if s, ok := match[expLine]; ok {
		src = s
		if trimmed[s] == expLines[expLine] {
			col, expanded = expCol, false
		} else {
			col = fuzzyColumn(trimmed[s], expLines[expLine], expCol)
		}
	} else {
		// Produced by an action: look between the nearest aligned lines.
		lo, hi := 0, len(trimmed)-1
		for e := expLine - 1; e >= 0; e-- {
			if s, ok := match[e]; ok {
				lo = s + 1
				break
			}
		}
		for e := expLine + 1; e < len(expLines); e++ {
			if s, ok := match[e]; ok {
				hi = s - 1
				break
			}
		}
		lo = min(lo, len(trimmed)-1)
		hi = max(hi, lo)
		src = lo
		for s := lo; s <= hi && s < len(trimmed); s++ {
			if i := strings.Index(trimmed[s], "{{"); i >= 0 {
				src, col = s, len([]rune(trimmed[s][:i]))+1
				break
			}
		}
	}
	loc.Line = leadLines + src + 1
	loc.Column = col
	if src == 0 {
		loc.Column += leadCols
	}
	loc.Text = strings.TrimSuffix(srcLines[loc.Line-1], "\r")
	if expanded {
		loc.Expanded = true
		loc.ExpandedText = strings.TrimSuffix(expLines[expLine], "\r")
		loc.ExpandedColumn = expCol
		loc.Shared, loc.SharedLine, loc.SharedColumn = m.locateShared(loc.ExpandedText, expCol)
	}
	return loc, true
}

// alignLines maps expanded lines to source lines: first identical lines
// (longest common subsequence), then, between those anchors, source lines
// with actions whose literal text appears in order in an expanded line.
func alignLines(src, exp []string) map[int]int {
	match := matchLines(src, exp, func(a, b string) bool { return a == b })
	out := make(map[int]int, len(match))
	for e, s := range match {
		out[e] = s
	}
	// Gaps between consecutive anchors (and before the first / after the last).
	ps, pe := -1, -1
	for e := 0; e <= len(exp); e++ {
		s, ok := match[e]
		if e == len(exp) {
			s, ok = len(src), true
		}
		if !ok {
			continue
		}
		if s-ps > 1 && e-pe > 1 {
			gs, ge := src[ps+1:s], exp[pe+1:e]
			for ge2, gs2 := range matchLines(gs, ge, func(a, b string) bool { _, ok := fuzzyFragments(a, b); return ok }) {
				out[pe+1+ge2] = ps + 1 + gs2
			}
		}
		ps, pe = s, e
	}
	return out
}

// fragment is a run of literal text of a template line and where it landed
// in the expanded line (byte offsets).
type fragment struct{ src, exp, n int }

// fuzzyFragments: the literal parts of a source line with {{ actions }},
// found in order in an expanded line; ok only if there is literal text and
// all of it is found.
func fuzzyFragments(src, exp string) ([]fragment, bool) {
	if !strings.Contains(src, "{{") {
		return nil, false
	}
	var frags []fragment
	pos, e := 0, 0
	for pos < len(src) {
		open := strings.Index(src[pos:], "{{")
		lit := src[pos:]
		if open >= 0 {
			lit = src[pos : pos+open]
		}
		// Trim markers ({{- -}}) eat white space around actions.
		t := strings.TrimSpace(lit)
		if t != "" {
			i := strings.Index(exp[e:], t)
			if i < 0 {
				return nil, false
			}
			frags = append(frags, fragment{src: pos + strings.Index(lit, t), exp: e + i, n: len(t)})
			e += i + len(t)
		}
		if open < 0 {
			break
		}
		end := strings.Index(src[pos+open:], "}}")
		if end < 0 {
			break
		}
		pos += open + end + 2
	}
	return frags, len(frags) > 0
}

// fuzzyColumn maps a 1-based character column of an expanded line to its
// source line: exactly inside literal text, else the start of the action
// that produced the text.
func fuzzyColumn(src, exp string, expCol int) int {
	frags, _ := fuzzyFragments(src, exp)
	off := len(string([]rune(exp)[:min(expCol-1, len([]rune(exp)))]))
	action := strings.Index(src, "{{")
	for _, f := range frags {
		if off >= f.exp && off < f.exp+f.n {
			return len([]rune(src[:f.src+off-f.exp])) + 1
		}
		if f.exp+f.n <= off {
			if i := strings.Index(src[f.src+f.n:], "{{"); i >= 0 {
				action = f.src + f.n + i
			}
		}
	}
	if action < 0 {
		return 1
	}
	return len([]rune(src[:action])) + 1
}

// matchLines aligns lines of a and b equal by eq (longest common
// subsequence) and returns b-index → a-index for the aligned pairs.
func matchLines(a, b []string, eq func(a, b string) bool) map[int]int {
	out := make(map[int]int)
	n, m := len(a), len(b)
	if n*m > 16_000_000 {
		// Too big for the quadratic table: greedy forward matching.
		j := 0
		for i := 0; i < n && j < m; i++ {
			for k := j; k < m; k++ {
				if eq(a[i], b[k]) {
					out[k] = i
					j = k + 1
					break
				}
			}
		}
		return out
	}
	// lcs[i][j] = LCS length of a[i:], b[j:].
	lcs := make([][]int32, n+1)
	for i := range lcs {
		lcs[i] = make([]int32, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if eq(a[i], b[j]) {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	for i, j := 0, 0; i < n && j < m; {
		switch {
		case eq(a[i], b[j]) && lcs[i][j] == lcs[i+1][j+1]+1:
			out[j] = i
			i++
			j++
		case lcs[i+1][j] >= lcs[i][j+1]:
			i++
		default:
			j++
		}
	}
	return out
}

// checkText returns an error matching ErrInvalidText, with the line and
// column (in characters, 1-based) of the first byte that is not valid
// UTF-8 or is NUL; nil for good text. where, when not empty, says what text
// it is (for text produced by templates rather than read from the file).
func checkText(b []byte, where string) error {
	if utf8.Valid(b) && bytes.IndexByte(b, 0) < 0 {
		return nil
	}
	line, col := 1, 1
	for i := 0; i < len(b); {
		r, size := utf8.DecodeRune(b[i:])
		var problem string
		switch {
		case r == utf8.RuneError && size <= 1:
			problem = fmt.Sprintf("invalid UTF-8 (byte 0x%02X)", b[i])
		case r == 0:
			problem = "a NUL byte"
		}
		if problem != "" {
			in := ""
			if where != "" {
				in = " in " + where
			}
			return fmt.Errorf("%w: %s at line %d, column %d%s: PostgreSQL text must be UTF-8 without NUL bytes (convert the file, e.g. iconv -f latin1 -t utf-8)",
				ErrInvalidText, problem, line, col, in)
		}
		if r == '\n' {
			line, col = line+1, 1
		} else {
			col++
		}
		i += size
	}
	return nil
}
