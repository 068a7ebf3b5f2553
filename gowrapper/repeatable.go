package pgmig

import (
	"bytes"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"slices"
	"strings"
	"text/template"

	"github.com/Masterminds/sprig/v3"
)

// RepeatableDir is the sub-directory of a migrations directory that holds
// its repeatable migrations, in every format but Flyway's (whose R__ files
// are its repeatable migrations): one *.sql file each, the file name
// without .sql being the migration's name (docs/formats.md, "Repeatable
// migrations").
const RepeatableDir = "repeatable"

// noTransactionMarker: the other tools' ways of saying "not in a
// transaction", refused in a repeatable migration (the engine applies it in
// the transaction of the last versioned migration).
var noTransactionMarker = regexp.MustCompile(`(?mi)^--\s*\+goose\s+NO\s+TRANSACTION\s*$|^-- \+migrate \w+.*\bnotransaction\b|^--\s*migrate:up\b.*\btransaction:false\b`)

// loadRepeatableDir loads the repeatable migrations of a directory in a
// format other than Flyway's: the *.sql files of its repeatable/
// sub-directory (not its sub-directories), in name order (byte order, as
// the engine applies them). The same guarantees as for migration files:
// UTF-8 without NUL bytes (file, line and column otherwise), a byte-order
// mark ignored, the SQL trimmed; in tern's format Go templates are
// expanded as tern expands a migration (opts.Data, sprig, the shared
// templates of the directory). Nil when there is no such sub-directory.
func loadRepeatableDir(fsys fs.FS, root []fs.DirEntry, format Format, opts *LoadOpts) ([]*Migration, error) {
	if !slices.ContainsFunc(root, func(e fs.DirEntry) bool { return e.IsDir() && e.Name() == RepeatableDir }) {
		return nil, nil
	}
	entries, err := fs.ReadDir(fsys, RepeatableDir)
	if err != nil {
		return nil, &LoadError{File: RepeatableDir, Err: err}
	}
	var shared map[string]string
	var reps []*Migration
	for _, e := range entries {
		if e.IsDir() || !strings.EqualFold(path.Ext(e.Name()), ".sql") {
			continue
		}
		p := path.Join(RepeatableDir, e.Name())
		name := e.Name()[:len(e.Name())-len(".sql")]
		if strings.TrimSpace(name) == "" {
			return nil, &LoadError{File: p, Err: fmt.Errorf("%w: a repeatable migration needs a name (the file name without .sql)", ErrInvalidFileName)}
		}
		b, err := fs.ReadFile(fsys, p)
		if err != nil {
			return nil, &LoadError{File: p, Err: err}
		}
		b = bytes.TrimPrefix(b, []byte(byteOrderMark))
		if err := checkText(b, ""); err != nil {
			return nil, &LoadError{File: p, Err: err}
		}
		text := string(b)
		sql := strings.TrimSpace(text)
		lead := text[:len(text)-len(strings.TrimLeft(text, " \t\r\n\f\v"))]
		m := &Migration{Name: name, File: p, Format: format, Repeatable: true, Transactional: true}
		if format == FormatTern {
			m.source, m.lead = text, lead
			if strings.Contains(sql, "{{") {
				if shared == nil {
					if shared, err = parseSharedTemplates(fsys, root); err != nil {
						return nil, err
					}
				}
				if sql, err = expandTemplate(p, sql, shared, opts); err != nil {
					return nil, err
				}
				m.templated, m.shared = true, shared
			}
		} else {
			m.text = text
			m.spans = []span{{sql: 0, file: len(lead), n: len(sql), exact: true}}
		}
		if !hasSQL(sql) {
			return nil, &LoadError{File: p, Err: fmt.Errorf("%w: the repeatable migration holds no SQL", ErrEmptyMigration)}
		}
		m.SQL, m.Checksum = sql, checksum(sql)
		reps = append(reps, m)
	}
	slices.SortFunc(reps, func(a, b *Migration) int { return strings.Compare(a.Name, b.Name) })
	return reps, checkRepeatables(reps)
}

// expandTemplate expands a repeatable migration in tern's format as tern
// expands a migration file: text/template with sprig's functions, the
// directory's shared templates by their paths, opts.Data.
func expandTemplate(file, text string, shared map[string]string, opts *LoadOpts) (string, error) {
	funcs := sprig.TxtFuncMap()
	funcs["install_snapshot"] = func(string) (string, error) { return "", nil }
	t := template.New(file).Funcs(funcs)
	for p, body := range shared {
		if _, err := t.New(p).Parse(body); err != nil {
			return "", &LoadError{File: p, Err: fmt.Errorf("%w: %w", ErrTemplate, err)}
		}
	}
	if _, err := t.Parse(text); err != nil {
		return "", &LoadError{File: file, Err: fmt.Errorf("%w: %w", ErrTemplate, err)}
	}
	var data map[string]any
	if opts != nil {
		data = opts.Data
	}
	var out strings.Builder
	if err := t.Execute(&out, data); err != nil {
		return "", &LoadError{File: file, Err: fmt.Errorf("%w: %w", ErrTemplate, err)}
	}
	if err := checkText([]byte(out.String()), "the expanded SQL"); err != nil {
		return "", &LoadError{File: file, Err: err}
	}
	return strings.TrimSpace(out.String()), nil
}

// checkRepeatables refuses what a repeatable migration cannot be: not
// transactional (tern's disable-tx line, the other tools' markers, a Flyway
// executeInTransaction=false), or marked commit-after or lock-timeout, which
// belong to versioned migrations. The error names the file and the line.
func checkRepeatables(reps []*Migration) error {
	for _, m := range reps {
		refuse := func(at int, what string) error {
			if loc, ok := m.Locate(len([]rune(m.SQL[:at])) + 1); ok && loc.Line > 0 {
				return lineErr(m.File, loc.Line, ErrMarker, "%s", what)
			}
			return &LoadError{File: m.File, Err: fmt.Errorf("%w: %s", ErrMarker, what)}
		}
		const tx = "a repeatable migration runs in the transaction of the last versioned migration: it cannot be non-transactional (put statements such as CREATE INDEX CONCURRENTLY in a versioned migration)"
		if !m.Transactional {
			return &LoadError{File: m.File, Err: fmt.Errorf("%w: %s", ErrMarker, tx)}
		}
		if loc := disableTxPattern.FindStringIndex(m.SQL); loc != nil && disableTx(m.SQL) {
			return refuse(loc[0], tx)
		}
		if loc := noTransactionMarker.FindStringIndex(m.SQL); loc != nil {
			return refuse(loc[0], tx)
		}
		if loc := commitAfterPattern.FindStringIndex(m.SQL); loc != nil {
			return refuse(loc[0], "a repeatable migration cannot be marked commit-after: it is applied with the last versioned migration")
		}
		if loc := lockTimeoutLine.FindStringIndex(m.SQL); loc != nil {
			return refuse(loc[0], "a repeatable migration takes no lock-timeout marker: give the push a --ddl-lock-timeout instead")
		}
	}
	return nil
}
