package pgmig

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Format is a migration tool's file format: how its migration files are
// named and how a file marks its down section and says it cannot run in a
// transaction. docs/formats.md describes each one.
type Format string

const (
	FormatTern          Format = "tern"           // 001_name.sql, ---- create above / drop below ----
	FormatGolangMigrate Format = "golang-migrate" // 1_name.up.sql, 1_name.down.sql
	FormatGoose         Format = "goose"          // 1_name.sql, -- +goose Up / Down
	FormatDbmate        Format = "dbmate"         // 20240131120000_name.sql, -- migrate:up / down
	FormatSQLMigrate    Format = "sql-migrate"    // 1-name.sql, -- +migrate Up / Down
	FormatFlyway        Format = "flyway"         // V1.2__name.sql, U1.2__name.sql, R__name.sql
)

// formats in the order they are listed to users.
var formats = []Format{FormatTern, FormatGolangMigrate, FormatGoose, FormatDbmate, FormatSQLMigrate, FormatFlyway}

// Formats lists the formats Load reads.
func Formats() []Format { return slices.Clone(formats) }

// Errors of loading other tools' formats. Like the other loading errors
// they arrive in a *LoadError naming the file; a *LineError inside it names
// the line where there is one.
var (
	// ErrUnknownFormat: LoadOpts.Format is not one of Formats().
	ErrUnknownFormat = errors.New("unknown migration format")
	// ErrMixedFormats: the directory holds migrations of more than one
	// format, or one file holds markers of two tools. The *DetectError
	// lists the files of each format.
	ErrMixedFormats = errors.New("the directory mixes migration formats")
	// ErrUnmatchedFile: files that look like migrations (a .sql file
	// whose name starts with a digit, or with V, U or R as Flyway names
	// them) match no rule of the directory's format, so that tool would
	// skip them or fail on them. The *DetectError lists them.
	ErrUnmatchedFile = errors.New("files look like migrations but match no rule of the format")
	// ErrMarker: a tool's markers are misplaced or unknown (a second
	// `-- +goose Up`, a StatementBegin without StatementEnd, SQL before the
	// first marker where the tool refuses it, ...).
	ErrMarker = errors.New("malformed migration markers")
	// ErrTransactionControl: a golang-migrate file holds BEGIN, COMMIT,
	// ROLLBACK or SAVEPOINT other than one BEGIN at its start and one
	// COMMIT or END at its end, which pgmig replaces by its own transaction.
	ErrTransactionControl = errors.New("transaction control inside a migration")
	// ErrSubstitution: goose's ENVSUB or a Flyway placeholder could not be
	// substituted (a required variable is unset, a placeholder has no value).
	ErrSubstitution = errors.New("substitution failed")
	// ErrUnsupported: the file uses a feature of its tool that pgmig cannot
	// honour (goose Go migrations, Flyway callbacks, COPY ... FROM STDIN).
	ErrUnsupported = errors.New("not supported by pgmig")
)

// LineError is a problem at one line of a migration file (inside the
// *LoadError that names the file).
type LineError struct {
	Line int // 1-based
	Err  error
}

func (e *LineError) Error() string { return fmt.Sprintf("line %d: %v", e.Line, e.Err) }
func (e *LineError) Unwrap() error { return e.Err }

// lineErr is a *LoadError for file at line, its message formatted.
func lineErr(file string, line int, sentinel error, format string, args ...any) error {
	return &LoadError{File: file, Err: &LineError{Line: line, Err: fmt.Errorf("%w: "+format, append([]any{sentinel}, args...)...)}}
}

// DetectError says why a directory's format could not be told or why some
// of its files do not fit it. It matches ErrMixedFormats when Files holds
// more than one format, ErrUnmatchedFile when Unmatched is not empty.
type DetectError struct {
	// Format is the format in use (detected or forced), "" if none.
	Format Format
	// Files lists, per format, the files that are that format's
	// migrations (sorted).
	Files map[Format][]string
	// Unmatched lists the files that look like migrations but match no
	// rule of Format (of any format when Format is "").
	Unmatched []string
}

func (e *DetectError) Is(target error) bool {
	return target == ErrMixedFormats && len(e.Files) > 1 || target == ErrUnmatchedFile && len(e.Unmatched) > 0
}

func (e *DetectError) Error() string {
	var b strings.Builder
	if len(e.Files) > 1 {
		b.WriteString(ErrMixedFormats.Error() + ":")
		for _, f := range formats {
			if files := e.Files[f]; len(files) > 0 {
				fmt.Fprintf(&b, " %s (%s);", f, fileList(files))
			}
		}
		b.WriteString(" keep one tool's files per directory, or force a format (LoadOpts.Format, pgmig --format)")
		return b.String()
	}
	if e.Format == "" {
		fmt.Fprintf(&b, "%s: %s match no rule of any format; ", strings.TrimSuffix(ErrUnmatchedFile.Error(), " of the format"), fileList(e.Unmatched))
		b.WriteString("names: tern 001_name.sql; golang-migrate 1_name.up.sql and 1_name.down.sql; goose 1_name.sql with -- +goose Up; " +
			"dbmate 1_name.sql with -- migrate:up; sql-migrate 1-name.sql with -- +migrate Up; Flyway V1__name.sql, U1__name.sql, R__name.sql")
		return b.String()
	}
	fmt.Fprintf(&b, "%s (%s: %s): %s; rename them, or move them out of the directory", ErrUnmatchedFile, e.Format, fileRule[e.Format], fileList(e.Unmatched))
	return b.String()
}

// fileRule describes each format's file names, for messages.
var fileRule = map[Format]string{
	FormatTern:          "NNN_name.sql, numbered 1, 2, 3 ... without gaps",
	FormatGolangMigrate: "VERSION_title.up.sql and VERSION_title.down.sql",
	FormatGoose:         "VERSION_name.sql",
	FormatDbmate:        "VERSIONname.sql",
	FormatSQLMigrate:    "VERSION-name.sql (any .sql file is one)",
	FormatFlyway:        "V<version>__<description>.sql, U<version>__<description>.sql, R__<description>.sql",
}

// fileList: up to five names, then how many more.
func fileList(files []string) string {
	const show = 5
	if len(files) <= show {
		return strings.Join(files, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(files[:show], ", "), len(files)-show)
}

// Loaded is what LoadAll found in a directory.
type Loaded struct {
	// Format is the directory's format, detected or forced.
	Format Format
	// Migrations are the versioned migrations in version order.
	Migrations []*Migration
	// Repeatable are the repeatable migrations in name order (byte order):
	// Flyway's R__ files, or the *.sql files of the repeatable/
	// sub-directory in the other formats (Version 0, Repeatable set). Load
	// returns them after Migrations; the engine applies them after the
	// versioned ones whenever their checksum changed.
	Repeatable []*Migration
}

// LoadDirAll loads the migrations of a directory; see LoadAll.
func LoadDirAll(dir string, opts *LoadOpts) (*Loaded, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("loading migrations: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("loading migrations: %s is not a directory", dir)
	}
	return LoadAll(&dirFS{FS: os.DirFS(dir), dir: dir}, opts)
}

// LoadAll loads the migrations at the root of fsys in the format
// opts.Format names or, when it is empty, in the one format the files are
// in: tern, golang-migrate, goose, dbmate, sql-migrate or Flyway (see
// Load, and docs/formats.md for each format's rules and how the format is
// told).
func LoadAll(fsys fs.FS, opts *LoadOpts) (*Loaded, error) {
	if opts == nil {
		opts = &LoadOpts{}
	}
	if opts.Format != "" && !slices.Contains(formats, opts.Format) {
		names := make([]string, len(formats))
		for i, f := range formats {
			names[i] = string(f)
		}
		return nil, fmt.Errorf("loading migrations: %w %q (known: %s)", ErrUnknownFormat, opts.Format, strings.Join(names, ", "))
	}
	root, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, fmt.Errorf("loading migrations: %w", err)
	}
	d, err := scanDir(fsys, root, opts.Format)
	if err != nil {
		return nil, err
	}
	if err := d.read(fsys, opts.Format); err != nil {
		return nil, err
	}
	format := opts.Format
	hasRepeatableDir := slices.ContainsFunc(root, func(e fs.DirEntry) bool { return e.IsDir() && e.Name() == RepeatableDir })
	if format == "" {
		if len(d.files) == 0 && hasRepeatableDir {
			// Repeatable migrations only: their files are plain SQL, as in tern's format.
			format = FormatTern
		} else if format, err = d.detect(); err != nil {
			return nil, err
		}
	}
	if err := d.checkUnmatched(format); err != nil {
		return nil, err
	}
	l := &Loaded{Format: format}
	switch {
	case len(d.files) == 0 && hasRepeatableDir && format != FormatFlyway:
		// no versioned migration: nothing for the format's loader
	default:
		err = l.loadVersioned(fsys, d, opts)
	}
	if err != nil {
		return nil, err
	}
	if format != FormatFlyway {
		if l.Repeatable, err = loadRepeatableDir(fsys, root, format, opts); err != nil {
			return nil, err
		}
	} else if err := checkRepeatables(l.Repeatable); err != nil {
		return nil, err
	}
	if err := readLockTimeouts(l.Migrations); err != nil {
		return nil, err
	}
	return l, nil
}

// All is what Load returns: the versioned migrations in version order, then
// the repeatable ones in name order.
func (l *Loaded) All() []*Migration {
	if len(l.Repeatable) == 0 {
		return l.Migrations
	}
	return append(slices.Clip(l.Migrations), l.Repeatable...)
}

// loadVersioned loads the versioned migrations (and Flyway's repeatable ones)
// in the format l.Format.
func (l *Loaded) loadVersioned(fsys fs.FS, d *dirScan, opts *LoadOpts) (err error) {
	format := l.Format
	switch format {
	case FormatTern:
		l.Migrations, err = loadTern(fsys, d, opts)
	case FormatGolangMigrate:
		l.Migrations, err = loadGolangMigrate(d)
	case FormatGoose:
		l.Migrations, err = loadGoose(d, opts)
	case FormatDbmate:
		l.Migrations, err = loadDbmate(d)
	case FormatSQLMigrate:
		l.Migrations, err = loadSQLMigrate(d)
	case FormatFlyway:
		l.Migrations, l.Repeatable, err = loadFlyway(fsys, d, opts)
	}
	return err
}

// noMigrations is the error for a directory without a migration file.
func noMigrations(format Format) error {
	if format == "" {
		return fmt.Errorf("loading migrations: %w (tern: 001_name.sql; golang-migrate: 1_name.up.sql; goose, dbmate, sql-migrate: "+
			"20240131120000_name.sql with their markers; Flyway: V1__name.sql)", ErrNoMigrations)
	}
	return fmt.Errorf("loading migrations: %w (%s: %s)", ErrNoMigrations, format, fileRule[format])
}

// rawFile is a file that looks like a migration, as read: its text (a
// leading UTF-8 byte-order mark removed), the tools' markers in it, and,
// when it is named as tern names migrations and the format may be tern,
// its tern sections (derived while reading, as before formats were
// detected).
type rawFile struct {
	path  string
	text  string
	marks marks
	tern  *fileBody
}

// dirScan is what the file names of a directory say, and the files read.
type dirScan struct {
	root []fs.DirEntry
	// files: the files that look like migrations (looksLikeMigration), in
	// reading order: numbered ones by number, then the others by path.
	files  []*rawFile
	byPath map[string]*rawFile
	// sqlFiles: the root's files named *.sql (sql-migrate takes them all).
	sqlFiles []string
	// gooseGo: the root's goose Go migrations (NNN_name.go).
	gooseGo []string
	// callbacks: Flyway callback scripts (beforeMigrate.sql, ...).
	callbacks []string
	// confs: the Flyway script configuration files (*.sql.conf) seen.
	confs map[string]bool
}

// looksLikeMigration: a file name that some tool would take for a
// migration: *.sql (any case) starting with a digit, or with V or U and a
// digit or underscore, or R and an underscore (Flyway's prefixes, any case).
func looksLikeMigration(name string) bool {
	if len(name) < len(".sql")+1 || !strings.EqualFold(name[len(name)-len(".sql"):], ".sql") {
		return false
	}
	c, next := name[0], name[1]
	switch {
	case c >= '0' && c <= '9':
		return true
	case c == 'V' || c == 'v' || c == 'U' || c == 'u':
		return next >= '0' && next <= '9' || next == '_'
	case c == 'R' || c == 'r':
		return next == '_'
	}
	return false
}

// flywayCallbackPattern: Flyway's SQL callbacks are named after the event,
// optionally with __description (beforeMigrate.sql, afterEachMigrate__grants.sql).
var flywayCallbackPattern = regexp.MustCompile(`^(before|after)[A-Z][A-Za-z]*(__.*)?\.(?i:sql)$`)

// gooseGoMigration: a goose Go migration (NNN_name.go), compiled into a goose
// binary; goose skips *_test.go.
func gooseGoMigration(name string) bool {
	digits, _, ok := strings.Cut(name, "_")
	return ok && allDigits(digits) && strings.HasSuffix(name, ".go") && !strings.HasSuffix(name, "_test.go")
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// leadingDigits: the decimal digits a name starts with.
func leadingDigits(name string) string {
	n := 0
	for n < len(name) && name[n] >= '0' && name[n] <= '9' {
		n++
	}
	return name[:n]
}

// scanDir sorts the root's entries into what they look like. Flyway reads
// sub-directories too; they are walked when the format is Flyway, or may
// be: forced, or Flyway files at the root, or nothing else there. (A tern
// directory's sub-folders hold shared templates, which tern loads itself.)
func scanDir(fsys fs.FS, root []fs.DirEntry, format Format) (*dirScan, error) {
	d := &dirScan{root: root, byPath: map[string]*rawFile{}, confs: map[string]bool{}}
	flywayAtRoot, other, subdirs := false, false, false
	add := func(p, name string) {
		if looksLikeMigration(name) {
			rf := &rawFile{path: p}
			d.files = append(d.files, rf)
			d.byPath[p] = rf
		}
		if (strings.HasPrefix(name, "before") || strings.HasPrefix(name, "after")) && flywayCallbackPattern.MatchString(name) {
			d.callbacks = append(d.callbacks, p)
		}
		if strings.HasSuffix(name, ".sql.conf") {
			d.confs[p] = true
		}
	}
	for _, e := range root {
		name := e.Name()
		if e.IsDir() {
			subdirs = true
			continue
		}
		add(name, name)
		if strings.HasSuffix(name, ".sql") {
			d.sqlFiles = append(d.sqlFiles, name)
		}
		if gooseGoMigration(name) {
			d.gooseGo = append(d.gooseGo, name)
		}
		if looksLikeMigration(name) {
			if flywayKindOf(name) != flywayNone {
				flywayAtRoot = true
			} else {
				other = true
			}
		}
	}
	if subdirs && (format == FormatFlyway || format == "" && (flywayAtRoot || !other && len(d.gooseGo) == 0)) {
		for _, e := range root {
			if !e.IsDir() {
				continue
			}
			if e.Name() == RepeatableDir && format != FormatFlyway && !flywayAtRoot {
				continue // the other formats' repeatable migrations (loadRepeatableDir)
			}
			err := fs.WalkDir(fsys, e.Name(), func(p string, de fs.DirEntry, err error) error {
				if err != nil {
					return &LoadError{File: p, Err: err}
				}
				if !de.IsDir() {
					add(p, de.Name())
				}
				return nil
			})
			if err != nil {
				return nil, err
			}
		}
	}
	slices.SortFunc(d.files, func(a, b *rawFile) int { return comparePaths(a.path, b.path) })
	return d, nil
}

// comparePaths orders files by the number their names start with (as
// numbers: 9_x before 10_x), then by path; names without a number after
// the numbered ones.
func comparePaths(a, b string) int {
	da, db := leadingDigits(a), leadingDigits(b)
	if (da == "") != (db == "") {
		if da == "" {
			return 1
		}
		return -1
	}
	ta, tb := strings.TrimLeft(da, "0"), strings.TrimLeft(db, "0")
	if c := cmp.Compare(len(ta), len(tb)); c != 0 {
		return c
	}
	if c := strings.Compare(ta, tb); c != 0 {
		return c
	}
	return strings.Compare(a, b)
}

// read reads every file that looks like a migration (with LoadDir's
// readers), checks its text, notes the tools' markers in it and, where the
// format may be tern, derives its tern sections.
func (d *dirScan) read(fsys fs.FS, format Format) error {
	paths := make([]string, len(d.files))
	for i, rf := range d.files {
		paths[i] = rf.path
	}
	maybeTern := format == "" || format == FormatTern
	return readFiles(fsys, paths, readers(len(paths)), func(i int, b []byte) {
		rf := d.files[i]
		if _, _, ok := splitMigrationFileName(rf.path); ok && maybeTern {
			body := parseBody(b)
			rf.tern = &body
			rf.text = body.text
		} else {
			rf.text = string(b)
		}
		rf.marks = scanMarks(rf.text)
	})
}

// marks are the tools' markers found in a file.
type marks uint8

const (
	markGoose      marks = 1 << iota // a line `-- +goose ...`
	markDbmate                       // a line `-- migrate:up` or `-- migrate:down`
	markSQLMigrate                   // a line `-- +migrate ...`
)

// scanMarks finds the markers that tell goose, dbmate and sql-migrate
// files apart. A cheap search for each tool's word comes first: most
// files hold none.
func scanMarks(text string) marks {
	goose, dbmate, sqlMigrate := strings.Contains(text, "+goose"), strings.Contains(text, "migrate:"), strings.Contains(text, "+migrate")
	if !goose && !dbmate && !sqlMigrate {
		return 0
	}
	var m marks
	for _, l := range lines(text) {
		t := strings.TrimSpace(l.text)
		if !strings.HasPrefix(t, "--") {
			continue
		}
		rest := strings.TrimLeft(t[2:], " \t")
		switch {
		case goose && len(rest) >= len("+goose") && strings.EqualFold(rest[:len("+goose")], "+goose"):
			m |= markGoose
		case sqlMigrate && strings.HasPrefix(l.text, "-- +migrate "):
			m |= markSQLMigrate
		case dbmate && dbmateDirective.MatchString(l.text):
			m |= markDbmate
		}
	}
	return m
}

// dbmateDirective: a line dbmate takes for a section marker.
var dbmateDirective = regexp.MustCompile(`^--\s*migrate:(up|down)(\s|$)`)

// family is the one tool whose markers a file holds, "" if none.
func (rf *rawFile) family() (Format, error) {
	var found []Format
	for _, x := range []struct {
		m marks
		f Format
	}{{markGoose, FormatGoose}, {markDbmate, FormatDbmate}, {markSQLMigrate, FormatSQLMigrate}} {
		if rf.marks&x.m != 0 {
			found = append(found, x.f)
		}
	}
	switch len(found) {
	case 0:
		return "", nil
	case 1:
		return found[0], nil
	}
	return "", &LoadError{File: rf.path, Err: fmt.Errorf("%w: the file holds markers of both %s and %s", ErrMixedFormats, found[0], found[1])}
}

// detect tells the directory's format from its file names and, for
// numbered .sql files (which tern, goose, dbmate and sql-migrate all use),
// from the markers in them: goose, dbmate and sql-migrate require theirs in
// every migration, tern has none it requires.
func (d *dirScan) detect() (Format, error) {
	ev := map[Format][]string{}
	for _, rf := range d.files {
		name := path.Base(rf.path)
		switch {
		case rf.path != name:
			if flywayKindOf(name) != flywayNone {
				ev[FormatFlyway] = append(ev[FormatFlyway], rf.path)
			}
		case golangMigrateName(name) != nil:
			ev[FormatGolangMigrate] = append(ev[FormatGolangMigrate], name)
		case flywayKindOf(name) != flywayNone:
			ev[FormatFlyway] = append(ev[FormatFlyway], name)
		default:
			f, err := rf.family()
			if err != nil {
				return "", err
			}
			if f == "" {
				if _, _, ok := splitMigrationFileName(name); ok {
					f = FormatTern
				}
			}
			if f != "" {
				ev[f] = append(ev[f], name)
			}
		}
	}
	if len(d.gooseGo) > 0 {
		ev[FormatGoose] = append(ev[FormatGoose], d.gooseGo...)
	}
	switch len(ev) {
	case 0:
		if len(d.files) > 0 {
			unmatched := d.paths()
			if sub := subDirectories(unmatched); sub != nil {
				// Nothing at the top, migrations one level down: the
				// directory given is the project's, not the migrations'.
				return "", fmt.Errorf("loading migrations: %w: %s, in %s, not in the directory itself, where migrations are read: give that directory (pgmig --dir %s)",
					ErrUnmatchedFile, fileList(unmatched), strings.Join(sub, ", "), sub[0])
			}
			return "", &LoadError{File: unmatched[0], Err: &DetectError{Unmatched: unmatched}}
		}
		return "", noMigrations("")
	case 1:
		for f := range ev {
			return f, nil
		}
	}
	// The odd files out are named: those of the formats other than the
	// one with the most files (on a tie, the one whose first file sorts
	// first).
	var major Format
	for _, f := range formats {
		slices.SortFunc(ev[f], comparePaths)
		if files := ev[f]; len(files) > 0 && (major == "" || len(files) > len(ev[major]) ||
			len(files) == len(ev[major]) && comparePaths(files[0], ev[major][0]) < 0) {
			major = f
		}
	}
	var blame string
	for f, files := range ev {
		if f != major && (blame == "" || comparePaths(files[0], blame) < 0) {
			blame = files[0]
		}
	}
	return "", &LoadError{File: blame, Err: &DetectError{Files: ev}}
}

// subDirectories: the sub-directories holding paths, sorted, when every
// path is in one (nil otherwise).
func subDirectories(paths []string) []string {
	var dirs []string
	for _, p := range paths {
		dir := path.Dir(p)
		if dir == "." {
			return nil
		}
		if !slices.Contains(dirs, dir) {
			dirs = append(dirs, dir)
		}
	}
	slices.Sort(dirs)
	return dirs
}

func (d *dirScan) paths() []string {
	out := make([]string, len(d.files))
	for i, rf := range d.files {
		out[i] = rf.path
	}
	return out
}

// checkUnmatched refuses the files that look like migrations but that
// format would skip (or, for tern, silently ignore): a directory holds no
// file that pgmig leaves out without saying so.
func (d *dirScan) checkUnmatched(format Format) error {
	var unmatched []string
	for _, rf := range d.files {
		if !matchesFormat(format, rf.path) {
			unmatched = append(unmatched, rf.path)
		}
	}
	if len(unmatched) == 0 {
		return nil
	}
	return &LoadError{File: unmatched[0], Err: &DetectError{Format: format, Unmatched: unmatched}}
}

// matchesFormat: the format takes the file for a migration (or refuses it
// with an error of its own).
func matchesFormat(format Format, p string) bool {
	name := path.Base(p)
	if p != name {
		return format == FormatFlyway && flywayKindOf(name) != flywayNone
	}
	switch format {
	case FormatTern:
		_, _, ok := splitMigrationFileName(name)
		return ok
	case FormatGolangMigrate:
		return golangMigrateName(name) != nil
	case FormatGoose:
		digits, _, ok := strings.Cut(name, "_")
		return ok && allDigits(digits) && strings.HasSuffix(name, ".sql")
	case FormatDbmate:
		return leadingDigits(name) != "" && strings.HasSuffix(name, ".sql")
	case FormatSQLMigrate:
		return strings.HasSuffix(name, ".sql")
	case FormatFlyway:
		return flywayKindOf(name) != flywayNone
	}
	return false
}

// numbered is a migration file of a format that takes its version from
// the decimal number its name starts with.
type numbered struct {
	rf      *rawFile
	version int64
	name    string
}

// parseVersion: the version written as digits in file, an int64 from 1.
func parseVersion(file, digits string) (int64, error) {
	v, err := strconv.ParseInt(digits, 10, 64)
	if err != nil {
		return 0, &LoadError{File: file, Err: fmt.Errorf("%w: version %s out of range (pgmig versions are PostgreSQL bigints: at most %d)",
			ErrInvalidFileName, digits, int64(^uint64(0)>>1))}
	}
	if v < 1 {
		return 0, &LoadError{File: file, Err: fmt.Errorf("%w: version %s (pgmig versions start at 1)", ErrInvalidFileName, digits)}
	}
	return v, nil
}

// sortByVersion sorts files by version and refuses two with one version.
func sortByVersion(files []numbered) error {
	slices.SortStableFunc(files, func(a, b numbered) int {
		return cmp.Or(cmp.Compare(a.version, b.version), strings.Compare(a.rf.path, b.rf.path))
	})
	for i := 1; i < len(files); i++ {
		if files[i].version == files[i-1].version {
			return &LoadError{File: files[i].rf.path, Err: fmt.Errorf("%w %d: also in %s", ErrDuplicateVersion, files[i].version, files[i-1].rf.path)}
		}
	}
	return nil
}

// nameOr is name, or when it is blank (a file named 1_.up.sql or 1.sql) the
// file name without .sql: the engine needs a name.
func nameOr(name, file string) string {
	if strings.TrimSpace(name) != "" {
		return name
	}
	base := path.Base(file)
	if i := len(base) - len(".sql"); i > 0 && strings.EqualFold(base[i:], ".sql") {
		return base[:i]
	}
	return base
}

// mappedMigration builds a migration of a format other than tern from its
// assembled up and down SQL.
func mappedMigration(format Format, rf *rawFile, version int64, name string, up mappedSQL, down string, transactional bool) *Migration {
	sql := up.sql
	if sql == "" {
		sql, up.spans = emptySQL, nil
	}
	return &Migration{
		Version:       version,
		Name:          name,
		File:          rf.path,
		Format:        format,
		SQL:           sql,
		Down:          down,
		Transactional: transactional,
		CommitAfter:   commitAfter(sql),
		Checksum:      checksum(sql),
		text:          rf.text,
		spans:         up.spans,
	}
}
