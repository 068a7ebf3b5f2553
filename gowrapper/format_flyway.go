package pgmig

import (
	"bytes"
	"cmp"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strconv"
	"strings"
)

// flywayKind is what Flyway takes a file for, with its default prefixes
// (V, U, R), separator (__) and suffix (.sql, any case).
type flywayKind int

const (
	flywayNone       flywayKind = iota
	flywayVersioned             // V<version>__<description>.sql
	flywayUndo                  // U<version>__<description>.sql
	flywayRepeatable            // R__<description>.sql
)

func flywayKindOf(name string) flywayKind {
	n := len(name) - len(".sql")
	if n < 2 || !strings.EqualFold(name[n:], ".sql") {
		return flywayNone
	}
	base := name[:n]
	switch {
	case strings.HasPrefix(base, "R__"):
		return flywayRepeatable
	case base[0] == 'V' && strings.Contains(base[1:], "__"):
		return flywayVersioned
	case base[0] == 'U' && strings.Contains(base[1:], "__"):
		return flywayUndo
	}
	return flywayNone
}

// Flyway versions map to pgmig's bigint version key with a fixed
// encoding that keeps their order and never depends on the other files:
// key = part1*10^4 + part2*10^2 + part3, missing parts 0 (docs/formats.md).
const (
	flywayMaxMajor = 922337203685476 // part1 * 10^4 + 9999 still fits a bigint
	flywayMaxMinor = 99
)

// flywayKey encodes the version written in file (digits separated by . or
// _, as Flyway reads them) and returns it with its label, the version as
// Flyway shows it (underscores as dots). Trailing zero parts do not count,
// as in Flyway: 1.0 is 1.
func flywayKey(file, version string) (int64, string, error) {
	label := strings.ReplaceAll(version, "_", ".")
	limits := func(why string) error {
		return &LoadError{File: file, Err: fmt.Errorf("%w: Flyway version %q %s; pgmig keys a Flyway version as part1*10^4 + part2*10^2 + part3 "+
			"(at most three parts; part2 and part3 at most %d; part1 at most %d)", ErrInvalidFileName, version, why, flywayMaxMinor, flywayMaxMajor)}
	}
	if version == "" {
		return 0, "", &LoadError{File: file, Err: fmt.Errorf("%w: no version before __ (Flyway: V<version>__<description>.sql)", ErrInvalidFileName)}
	}
	var parts []int64
	for _, p := range strings.Split(label, ".") {
		if !allDigits(p) {
			return 0, "", &LoadError{File: file, Err: fmt.Errorf("%w: Flyway version %q: a version is numbers separated by . or _", ErrInvalidFileName, version)}
		}
		if t := strings.TrimLeft(p, "0"); len(t) > 15 {
			return 0, "", limits("has a part too large")
		}
		v, _ := strconv.ParseInt(p, 10, 64)
		parts = append(parts, v)
	}
	for len(parts) > 1 && parts[len(parts)-1] == 0 {
		parts = parts[:len(parts)-1]
	}
	if len(parts) > 3 {
		return 0, "", limits("has more than three parts")
	}
	parts = append(parts, 0, 0)
	if parts[0] > flywayMaxMajor || parts[1] > flywayMaxMinor || parts[2] > flywayMaxMinor {
		return 0, "", limits("has a part too large")
	}
	key := parts[0]*10_000 + parts[1]*100 + parts[2]
	if key == 0 {
		return 0, "", &LoadError{File: file, Err: fmt.Errorf("%w: Flyway version %q is 0 (pgmig versions start at 1)", ErrInvalidFileName, version)}
	}
	return key, label, nil
}

// flywayFile is a versioned, undo or repeatable Flyway file.
type flywayFile struct {
	rf          *rawFile
	kind        flywayKind
	key         int64
	label, desc string
}

// loadFlyway loads a Flyway directory, sub-directories included (Flyway
// scans its locations recursively): versioned migrations V<version>__*.sql
// with their undo files U<version>__*.sql as down SQL, and repeatable
// migrations R__*.sql, returned apart.
func loadFlyway(fsys fs.FS, d *dirScan, opts *LoadOpts) (ms, reps []*Migration, err error) {
	if len(d.callbacks) > 0 {
		return nil, nil, &LoadError{File: d.callbacks[0], Err: fmt.Errorf("%w: a Flyway callback script (Flyway runs it around its own commands); "+
			"pgmig has no callbacks: move its SQL into a migration, or out of the directory", ErrUnsupported)}
	}
	var versioned, repeatable, undoFiles []flywayFile
	undos := map[int64]flywayFile{}
	for _, rf := range d.files {
		name := path.Base(rf.path)
		f := flywayFile{rf: rf, kind: flywayKindOf(name)}
		base := name[:len(name)-len(".sql")]
		switch f.kind {
		case flywayNone:
			continue
		case flywayRepeatable:
			f.desc = base[len("R__"):]
			repeatable = append(repeatable, f)
			continue
		}
		version, desc, _ := strings.Cut(base[1:], "__")
		f.desc = desc
		if f.key, f.label, err = flywayKey(rf.path, version); err != nil {
			return nil, nil, err
		}
		if f.kind == flywayUndo {
			if prev, dup := undos[f.key]; dup {
				return nil, nil, &LoadError{File: rf.path, Err: fmt.Errorf("%w %s: a second undo file (also %s)", ErrDuplicateVersion, f.label, prev.rf.path)}
			}
			undos[f.key] = f
			undoFiles = append(undoFiles, f)
			continue
		}
		versioned = append(versioned, f)
	}
	slices.SortStableFunc(versioned, func(a, b flywayFile) int {
		return cmp.Or(cmp.Compare(a.key, b.key), strings.Compare(a.rf.path, b.rf.path))
	})
	for i := 1; i < len(versioned); i++ {
		if a, b := versioned[i-1], versioned[i]; a.key == b.key {
			return nil, nil, &LoadError{File: b.rf.path, Err: fmt.Errorf("%w %s: also in %s (Flyway compares versions as numbers: 1.0 is 1, 1_1 is 1.1)",
				ErrDuplicateVersion, b.label, a.rf.path)}
		}
	}
	byKey := make(map[int64]bool, len(versioned))
	for _, f := range versioned {
		byKey[f.key] = true
	}
	for _, u := range undoFiles {
		if !byKey[u.key] {
			return nil, nil, &LoadError{File: u.rf.path, Err: fmt.Errorf("%w: an undo file for version %s, which has no V%s__ migration", ErrMissingVersion, u.label, u.label)}
		}
	}
	placeholders := make(map[string]string, len(opts.Data))
	for k, v := range opts.Data {
		placeholders[strings.ToLower(k)] = fmt.Sprint(v)
	}
	load := func(f flywayFile) (mappedSQL, bool, error) {
		conf, err := readFlywayConf(fsys, d, f.rf.path+".conf")
		if err != nil {
			return mappedSQL{}, false, err
		}
		return flywaySQL(f.rf, conf, placeholders)
	}
	for _, f := range versioned {
		up, tx, err := load(f)
		if err != nil {
			return nil, nil, err
		}
		var down string
		if u, ok := undos[f.key]; ok {
			sql, _, err := load(u)
			if err != nil {
				return nil, nil, err
			}
			down = sql.sql
		}
		m := mappedMigration(FormatFlyway, f.rf, f.key, nameOr(f.desc, f.rf.path), up, down, tx)
		m.Label = f.label
		ms = append(ms, m)
	}
	slices.SortStableFunc(repeatable, func(a, b flywayFile) int {
		return cmp.Or(strings.Compare(a.desc, b.desc), strings.Compare(a.rf.path, b.rf.path))
	})
	for i, f := range repeatable {
		if i > 0 && repeatable[i-1].desc == f.desc {
			return nil, nil, &LoadError{File: f.rf.path, Err: fmt.Errorf("%w: a second repeatable migration %q (also %s)", ErrDuplicateVersion, f.desc, repeatable[i-1].rf.path)}
		}
		sql, tx, err := load(f)
		if err != nil {
			return nil, nil, err
		}
		m := mappedMigration(FormatFlyway, f.rf, 0, nameOr(f.desc, f.rf.path), sql, "", tx)
		m.Repeatable = true
		reps = append(reps, m)
	}
	return ms, reps, nil
}

// flywayConf is a Flyway script configuration file (V1__x.sql.conf).
type flywayConf struct {
	executeInTransaction   *bool
	placeholderReplacement *bool
}

// readFlywayConf reads the script configuration p if the directory has
// it: key=value lines, # and ! comments. executeInTransaction and
// placeholderReplacement are honoured, encoding must be UTF-8; Flyway
// refuses keys it does not know, and so does pgmig (shouldExecute
// included, whose expressions pgmig does not evaluate).
func readFlywayConf(fsys fs.FS, d *dirScan, p string) (flywayConf, error) {
	var conf flywayConf
	if !d.confs[p] {
		return conf, nil
	}
	b, err := fs.ReadFile(fsys, p)
	if err != nil {
		return conf, &LoadError{File: p, Err: err}
	}
	b = bytes.TrimPrefix(b, []byte(byteOrderMark))
	if err := checkText(b, ""); err != nil {
		return conf, &LoadError{File: p, Err: err}
	}
	for _, l := range lines(string(b)) {
		t := strings.TrimSpace(l.text)
		if t == "" || t[0] == '#' || t[0] == '!' {
			continue
		}
		k, v, ok := strings.Cut(t, "=")
		if !ok {
			return conf, lineErr(p, l.num, ErrMarker, "not a key=value line")
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		boolean := func() (*bool, error) {
			b := strings.EqualFold(v, "true")
			if !b && !strings.EqualFold(v, "false") {
				return nil, lineErr(p, l.num, ErrMarker, "%s must be true or false, got %q", k, v)
			}
			return &b, nil
		}
		switch k {
		case "executeInTransaction":
			if conf.executeInTransaction, err = boolean(); err != nil {
				return conf, err
			}
		case "placeholderReplacement":
			if conf.placeholderReplacement, err = boolean(); err != nil {
				return conf, err
			}
		case "encoding":
			if e := strings.ToUpper(v); e != "UTF-8" && e != "UTF8" {
				return conf, lineErr(p, l.num, ErrUnsupported, "encoding %s: pgmig reads migrations as UTF-8 (convert the file, e.g. iconv -f %s -t utf-8)", v, v)
			}
		case "shouldExecute":
			return conf, lineErr(p, l.num, ErrUnsupported, "shouldExecute: pgmig applies every migration of the directory; remove the setting, "+
				"or the migration from the directory")
		default:
			return conf, lineErr(p, l.num, ErrMarker, "unknown script configuration %q (Flyway knows executeInTransaction, encoding, "+
				"placeholderReplacement, shouldExecute)", k)
		}
	}
	return conf, nil
}

// flywaySQL is the SQL pgmig runs for a Flyway file: the file with its
// placeholders replaced, as Flyway replaces them (before it parses the
// SQL): ${name} takes the value of the placeholder name (any case); one
// without a value is an error, as in Flyway. Of Flyway's own placeholders,
// ${flyway:filename} is the file's name; the others (defaultSchema, user,
// database, timestamp, table, workingDirectory, environment) come from the
// connection or the clock when Flyway runs, and must be given as data:
// pgmig reads the files before it connects, and the checksum must not
// change from one run to the next.
//
// Flyway runs a migration in a transaction unless a statement cannot run
// in one (its PostgreSQL parser detects CREATE INDEX CONCURRENTLY and the
// like) or the script configuration says executeInTransaction=false; so
// does pgmig. COPY ... FROM STDIN, whose data Flyway sends from the file,
// is refused: the engine runs SQL text.
func flywaySQL(rf *rawFile, conf flywayConf, placeholders map[string]string) (mappedSQL, bool, error) {
	text := rf.text
	b := sqlBuilder{text: text}
	if conf.placeholderReplacement == nil || *conf.placeholderReplacement {
		from := 0
		for {
			i := strings.Index(text[from:], "${")
			if i < 0 {
				break
			}
			i += from
			end := strings.IndexByte(text[i+2:], '}')
			if end < 0 {
				return mappedSQL{}, false, lineErr(rf.path, lineOf(text, i), ErrSubstitution, "a Flyway placeholder ${ without a closing }")
			}
			name := text[i+2 : i+2+end]
			v, ok := placeholders[strings.ToLower(name)]
			if !ok && strings.EqualFold(name, "flyway:filename") {
				v, ok = path.Base(rf.path), true
			}
			if !ok {
				why := "no value for the Flyway placeholder ${%s}: pass it as template data (LoadOpts.Data, pgmig --data %s=...)"
				if strings.HasPrefix(strings.ToLower(name), "flyway:") {
					why = "Flyway fills ${%s} from the connection or the clock when it runs; pgmig reads the files before it connects " +
						"and needs the same SQL every time: pass the value as template data (LoadOpts.Data, pgmig --data %s=...)"
				}
				return mappedSQL{}, false, lineErr(rf.path, lineOf(text, i), ErrSubstitution, why, name, name)
			}
			b.copy(from, i)
			b.insert(v, i)
			from = i + 2 + end + 1
		}
		b.copy(from, len(text))
	} else {
		b.copy(0, len(text))
	}
	sql := b.done()
	if err := checkText([]byte(sql.sql), "the SQL with its placeholders replaced"); err != nil {
		return mappedSQL{}, false, &LoadError{File: rf.path, Err: err}
	}
	tx := true
	for _, s := range splitStatements(sql.sql) {
		toks := tokens(statementTokens(s.text, statementTokenLimit))
		if outsideTransaction(toks) != "" {
			tx = false
		}
		if toks.word(0) == "copy" {
			for i := range toks {
				if toks.word(i) == "from" && toks.word(i+1) == "stdin" {
					return mappedSQL{}, false, lineErr(rf.path, sql.fileLine(text, s.offset+toks[0].off), ErrUnsupported,
						"COPY ... FROM STDIN: Flyway sends the data that follows from the file; pgmig sends SQL text to the engine. "+
							"Load the data with INSERT, or with COPY from a server file")
				}
			}
		}
	}
	if conf.executeInTransaction != nil {
		tx = *conf.executeInTransaction
	}
	return sql, tx, nil
}

// fileLine is the line of text (the file sql was assembled from) that
// byte offset off of sql comes from.
func (m mappedSQL) fileLine(text string, off int) int {
	for _, sp := range m.spans {
		if off >= sp.sql && off < sp.sql+sp.n {
			if sp.exact {
				return lineOf(text, sp.file+off-sp.sql)
			}
			return lineOf(text, sp.file)
		}
	}
	return 1
}
