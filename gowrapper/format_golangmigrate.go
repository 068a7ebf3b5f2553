package pgmig

import (
	"fmt"
	"regexp"
	"strings"
)

// golangMigratePattern is golang-migrate's file name rule
// (`^([0-9]+)_(.*)\.(down|up)\.(.*)$`, source/parse.go) for SQL files.
var golangMigratePattern = regexp.MustCompile(`^([0-9]+)_(.*)\.(down|up)\.sql$`)

// golangMigrateName: version, title and direction of a golang-migrate file
// name, nil if it is not one.
func golangMigrateName(name string) []string {
	if !strings.HasSuffix(name, ".up.sql") && !strings.HasSuffix(name, ".down.sql") {
		return nil // most names: the regexp costs a few percent of loading a directory
	}
	return golangMigratePattern.FindStringSubmatch(name)
}

// loadGolangMigrate loads a golang-migrate directory: VERSION_title.up.sql
// is the migration, VERSION_title.down.sql (optional) its down SQL.
func loadGolangMigrate(d *dirScan) ([]*Migration, error) {
	var ups []numbered
	downs := map[int64]*rawFile{}
	for _, rf := range d.files {
		m := golangMigrateName(rf.path)
		if m == nil {
			continue
		}
		v, err := parseVersion(rf.path, m[1])
		if err != nil {
			return nil, err
		}
		if m[3] == "up" {
			ups = append(ups, numbered{rf: rf, version: v, name: nameOr(m[2], rf.path)})
			continue
		}
		if prev := downs[v]; prev != nil {
			return nil, &LoadError{File: rf.path, Err: fmt.Errorf("%w %d: a second down file (also %s)", ErrDuplicateVersion, v, prev.path)}
		}
		downs[v] = rf
	}
	if err := sortByVersion(ups); err != nil {
		return nil, err
	}
	if len(ups) == 0 {
		return nil, noMigrations(FormatGolangMigrate)
	}
	byVersion := make(map[int64]bool, len(ups))
	for _, u := range ups {
		byVersion[u.version] = true
	}
	for _, rf := range d.files {
		if m := golangMigrateName(rf.path); m != nil && m[3] == "down" {
			if v, _ := parseVersion(rf.path, m[1]); !byVersion[v] {
				return nil, &LoadError{File: rf.path, Err: fmt.Errorf("%w: a down file without an up file for version %d", ErrMissingVersion, v)}
			}
		}
	}
	ms := make([]*Migration, len(ups))
	for i, u := range ups {
		up, tx, err := golangMigrateSQL(u.rf)
		if err != nil {
			return nil, err
		}
		var down string
		if rf := downs[u.version]; rf != nil {
			d, _, err := golangMigrateSQL(rf)
			if err != nil {
				return nil, err
			}
			down = d.sql
		}
		ms[i] = mappedMigration(FormatGolangMigrate, u.rf, u.version, u.name, up, down, tx)
	}
	return ms, nil
}

// golangMigrateSQL is the SQL pgmig runs for a golang-migrate file.
// golang-migrate sends a file as written, in one query; projects that want
// it atomic wrap it in their own BEGIN ... COMMIT (or END). pgmig runs a
// migration in its own transaction, so a BEGIN that starts the file and a
// COMMIT or END that ends it are left out; transaction control anywhere
// else would change what the file means and is refused, naming the line.
//
// golang-migrate has no marker for statements that cannot run in a
// transaction (CREATE INDEX CONCURRENTLY, VACUUM, ...): it simply does not
// open one. pgmig recognises them (outsideTransaction) and makes the
// migration non-transactional: its statements then run one by one, as the
// file's own statements in autocommit would.
func golangMigrateSQL(rf *rawFile) (mappedSQL, bool, error) {
	text := rf.text
	stmts := splitStatements(text)
	type stmt struct {
		statement
		toks tokens
		kind txKind
		at   int // file offset of the first token
	}
	all := make([]stmt, 0, len(stmts))
	for _, s := range stmts {
		toks := tokens(statementTokens(s.text, statementTokenLimit))
		at := s.offset
		if len(toks) > 0 {
			at += toks[0].off
		}
		all = append(all, stmt{statement: s, toks: toks, kind: transactionControl(toks), at: at})
	}
	skip := make([]bool, len(all))
	first, last := 0, len(all)-1
	begins := all[first].kind == txBegin
	skip[first] = begins
	if all[last].kind == txCommit {
		skip[last] = true
	} else if begins {
		return mappedSQL{}, false, lineErr(rf.path, lineOf(text, all[first].at), ErrTransactionControl,
			"%s opens a transaction that no COMMIT or END at the end of the file closes: pgmig runs the file in a transaction of its own, "+
				"and can replace one that wraps the whole file only", keyword(all[first].toks))
	}
	for i, s := range all {
		if !skip[i] && s.kind != txNone {
			return mappedSQL{}, false, lineErr(rf.path, lineOf(text, s.at), ErrTransactionControl,
				"%s inside the file: pgmig runs the file in a transaction of its own, and can replace one BEGIN ... COMMIT "+
					"(or END) that wraps the whole file only; split the file where its transactions end", keyword(s.toks))
		}
	}
	b := sqlBuilder{text: text}
	from := 0
	tx := true
	for i, s := range all {
		if skip[i] {
			// Comments before the statement stay; the statement goes, with
			// the rest of its line when nothing else is on it.
			b.copy(from, s.at)
			from = s.offset + len(s.text)
			if rest := afterLine(text, from); strings.TrimSpace(text[from:rest]) == "" {
				from = rest
			}
			continue
		}
		if outsideTransaction(s.toks) != "" {
			tx = false
		}
	}
	b.copy(from, len(text))
	return b.done(), tx, nil
}

// keyword is how a transaction control statement starts, for messages.
func keyword(t tokens) string {
	w := strings.ToUpper(t.word(0))
	if next := t.word(1); w == "START" || w == "PREPARE" || next == "to" || next == "and" {
		w += " " + strings.ToUpper(next)
	}
	return w
}
