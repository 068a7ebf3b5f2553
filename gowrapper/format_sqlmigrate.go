package pgmig

import (
	"fmt"
	"slices"
	"strings"
)

// sqlMigratePrefix starts every sql-migrate command line (sqlparse in
// github.com/rubenv/sql-migrate), exactly so: no leading white space.
const sqlMigratePrefix = "-- +migrate "

// loadSQLMigrate loads a sql-migrate directory. sql-migrate takes every
// .sql file for a migration, keyed by its name and ordered by the number
// it starts with (files without one after the others, by name); pgmig
// keys migrations by number, so every file needs one (sql-migrate's
// `new` writes 20060102150405-name.sql), and two files with one number
// are refused.
func loadSQLMigrate(d *dirScan) ([]*Migration, error) {
	for _, p := range d.sqlFiles {
		if leadingDigits(p) == "" {
			return nil, &LoadError{File: p, Err: fmt.Errorf("%w: sql-migrate takes every .sql file for a migration, and this one's name does not "+
				"start with a version number, which pgmig needs: rename it to <number>-<name>.sql (sql-migrate orders such a file "+
				"after the numbered ones), or move it out of the directory", ErrInvalidFileName)}
		}
	}
	var files []numbered
	for _, rf := range d.files {
		if strings.Contains(rf.path, "/") || !strings.HasSuffix(rf.path, ".sql") {
			continue
		}
		digits := leadingDigits(rf.path)
		v, err := parseVersion(rf.path, digits)
		if err != nil {
			return nil, err
		}
		name := strings.TrimSuffix(rf.path[len(digits):], ".sql")
		if name != "" && (name[0] == '-' || name[0] == '_') {
			name = name[1:]
		}
		files = append(files, numbered{rf: rf, version: v, name: nameOr(name, rf.path)})
	}
	if len(files) == 0 {
		return nil, noMigrations(FormatSQLMigrate)
	}
	if err := sortByVersion(files); err != nil {
		return nil, err
	}
	ms := make([]*Migration, len(files))
	for i, f := range files {
		up, down, tx, err := sqlMigrateSQL(f.rf)
		if err != nil {
			return nil, err
		}
		ms[i] = mappedMigration(FormatSQLMigrate, f.rf, f.version, f.name, up, down.sql, tx)
	}
	return ms, nil
}

// sqlMigrateSQL reads a sql-migrate file as sql-migrate's parser does,
// line by line: `-- +migrate Up` and `-- +migrate Down` switch the
// direction the following lines belong to (a file may switch more than
// once; the lines before the first are ignored), `notransaction` after Up
// makes the migration non-transactional, lines starting with "-- +" are
// left out, StatementBegin/End must pair. sql-migrate also leaves out
// lines starting with "-- " (comments); pgmig keeps them, as comments.
func sqlMigrateSQL(rf *rawFile) (up, down mappedSQL, tx bool, err error) {
	const (
		none = iota
		inUp
		inDown
	)
	text := rf.text
	dir := none
	tx = true
	inBlock, blockLine := false, 0
	ub, db := sqlBuilder{text: text}, sqlBuilder{text: text}
	for _, l := range lines(text) {
		if strings.HasPrefix(l.text, sqlMigratePrefix) {
			fields := strings.Fields(l.text[len(sqlMigratePrefix):])
			if len(fields) == 0 {
				return up, down, false, lineErr(rf.path, l.num, ErrMarker, "an incomplete sql-migrate command (`-- +migrate` with nothing after it)")
			}
			switch fields[0] {
			case "Up":
				dir = inUp
				if slices.Contains(fields[1:], "notransaction") {
					tx = false
				}
			case "Down":
				dir = inDown
			case "StatementBegin":
				if dir != none {
					inBlock, blockLine = true, l.num
				}
			case "StatementEnd":
				if dir != none {
					inBlock = false
				}
			}
			continue
		}
		if dir == none || strings.HasPrefix(l.text, "-- +") {
			continue
		}
		b := &ub
		if dir == inDown {
			b = &db
		}
		b.copy(l.start, l.next)
	}
	if inBlock {
		return up, down, false, lineErr(rf.path, blockLine, ErrMarker, "`-- +migrate StatementBegin` without a StatementEnd after it")
	}
	if dir == none {
		return up, down, false, &LoadError{File: rf.path, Err: fmt.Errorf("%w: no `-- +migrate Up` or `-- +migrate Down` line (sql-migrate requires them)", ErrMarker)}
	}
	return ub.done(), db.done(), tx, nil
}
