package pgmig

import (
	"fmt"
	"regexp"
	"strings"
)

// dbmate's section markers (pkg/dbmate/migration.go in
// github.com/amacneil/dbmate): matched where dbmate matches them.
var (
	dbmateUp   = regexp.MustCompile(`(?m)^--\s*migrate:up(\s*$|\s+\S+)`)
	dbmateDown = regexp.MustCompile(`(?m)^--\s*migrate:down(\s*$|\s+\S+)`)
	// dbmateMarker is what dbmate strips from a marker line to read its options.
	dbmateMarker = regexp.MustCompile(`^--\s*migrate:(up|down)`)
)

// loadDbmate loads a dbmate directory: VERSION*.sql files (dbmate's
// `^(\d+).*\.sql$`, usually a timestamp and a name) with `-- migrate:up`
// and `-- migrate:down` sections.
func loadDbmate(d *dirScan) ([]*Migration, error) {
	var files []numbered
	for _, rf := range d.files {
		digits := leadingDigits(rf.path)
		if digits == "" || !strings.HasSuffix(rf.path, ".sql") {
			continue
		}
		v, err := parseVersion(rf.path, digits)
		if err != nil {
			return nil, err
		}
		name := strings.TrimLeft(strings.TrimSuffix(rf.path[len(digits):], ".sql"), "_-.")
		files = append(files, numbered{rf: rf, version: v, name: nameOr(name, rf.path)})
	}
	if len(files) == 0 {
		return nil, noMigrations(FormatDbmate)
	}
	if err := sortByVersion(files); err != nil {
		return nil, err
	}
	ms := make([]*Migration, len(files))
	for i, f := range files {
		up, down, tx, err := dbmateSQL(f.rf)
		if err != nil {
			return nil, err
		}
		ms[i] = mappedMigration(FormatDbmate, f.rf, f.version, f.name, up, down.sql, tx)
	}
	return ms, nil
}

// dbmateSQL reads a dbmate file as dbmate does: the up SQL is what follows
// the `-- migrate:up` line up to `-- migrate:down`, the down SQL what
// follows that; options on the up line (`transaction:false`) apply to the
// up SQL. A file may hold several up/down sections (dbmate 2.28+): dbmate
// runs their up parts in order, so pgmig's up SQL is their concatenation
// (and the down SQL that of their down parts), transactional when every
// section is. Before the first `-- migrate:up` only blank and comment
// lines may stand, as in dbmate. dbmate also requires a `-- migrate:down`
// line; pgmig accepts a file without one (no down SQL).
func dbmateSQL(rf *rawFile) (up, down mappedSQL, tx bool, err error) {
	text := rf.text
	ups := dbmateUp.FindAllStringIndex(text, -1)
	if ups == nil {
		return up, down, false, &LoadError{File: rf.path, Err: fmt.Errorf("%w: no `-- migrate:up` line (dbmate requires one in every migration)", ErrMarker)}
	}
	for _, l := range lines(text[:ups[0][0]]) {
		if t := strings.TrimSpace(l.text); t != "" && !strings.HasPrefix(t, "--") {
			return up, down, false, lineErr(rf.path, l.num, ErrMarker, "SQL before `-- migrate:up` (dbmate refuses it: every statement belongs to a section)")
		}
	}
	ub, db := sqlBuilder{text: text}, sqlBuilder{text: text}
	tx = true
	firstTx := 0 // the line of the first section's up marker, and whether it is transactional
	for i, u := range ups {
		start, end := u[0], len(text)
		if i+1 < len(ups) {
			end = ups[i+1][0]
		}
		section := text[start:end]
		downs := dbmateDown.FindAllStringIndex(section, -1)
		if len(downs) > 1 {
			return up, down, false, lineErr(rf.path, lineOf(text, start+downs[1][0]), ErrMarker,
				"a second `-- migrate:down` in the section of line %d (dbmate requires a `-- migrate:up` before each)", lineOf(text, start))
		}
		upEnd := end
		if len(downs) == 1 {
			upEnd = start + downs[0][0]
			db.copy(afterLine(text, upEnd), end)
		}
		ub.copy(afterLine(text, start), upEnd)
		sectionTx := dbmateTransaction(text[start:afterLine(text, start)])
		line := lineOf(text, start)
		if i == 0 {
			tx, firstTx = sectionTx, line
		} else if sectionTx != tx {
			return up, down, false, lineErr(rf.path, line, ErrMarker,
				"this section's transaction option differs from the section of line %d: pgmig runs a migration either in a transaction "+
					"or statement by statement outside one; split the file in two migrations", firstTx)
		}
	}
	return ub.done(), db.done(), tx, nil
}

// afterLine is the offset just after the line holding offset off.
func afterLine(text string, off int) int {
	if i := strings.IndexByte(text[off:], '\n'); i >= 0 {
		return off + i + 1
	}
	return len(text)
}

// dbmateTransaction reads the options of an up marker line as dbmate does
// ("-- migrate:up transaction:false foo:bar"): the section is
// transactional unless transaction is "false".
func dbmateTransaction(line string) bool {
	opts := strings.TrimSpace(dbmateMarker.ReplaceAllString(strings.TrimSuffix(line, "\n"), ""))
	transaction := ""
	for _, pair := range strings.Fields(opts) {
		if kv := strings.Split(pair, ":"); len(kv) == 2 && kv[0] == "transaction" {
			transaction = kv[1]
		}
	}
	return transaction != "false"
}
