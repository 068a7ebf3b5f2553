package pgmig

import (
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"
)

// The SQL of a migration in another tool's format is assembled from parts
// of its file: the lines between that tool's markers, the file minus a
// BEGIN/COMMIT wrapper, the file with placeholders replaced. A span records
// where each part came from, so that an error position in the SQL maps back
// to the file (Migration.Locate) whatever was left out or substituted.
type span struct {
	// SQL bytes [sql, sql+n) are the file's bytes [file, file+n) when exact;
	// otherwise they were produced by a substitution written at file.
	sql, file, n int
	exact        bool
}

// mappedSQL is SQL assembled from a file, and where each part came from.
type mappedSQL struct {
	sql   string
	spans []span
}

// sqlBuilder assembles a mappedSQL from a file's text.
type sqlBuilder struct {
	text  string
	b     strings.Builder
	spans []span
}

// copy appends the file's bytes [from, to).
func (b *sqlBuilder) copy(from, to int) {
	if from >= to {
		return
	}
	at := b.b.Len()
	b.b.WriteString(b.text[from:to])
	if n := len(b.spans); n > 0 {
		if l := &b.spans[n-1]; l.exact && l.sql+l.n == at && l.file+l.n == from {
			l.n += to - from
			return
		}
	}
	b.spans = append(b.spans, span{sql: at, file: from, n: to - from, exact: true})
}

// insert appends s, produced by the substitution written at file offset at.
func (b *sqlBuilder) insert(s string, at int) {
	if s == "" {
		return
	}
	b.spans = append(b.spans, span{sql: b.b.Len(), file: at, n: len(s)})
	b.b.WriteString(s)
}

// done returns the SQL trimmed of surrounding white space (as tern trims
// its sections), "" when nothing but white space was assembled.
func (b *sqlBuilder) done() mappedSQL {
	s := b.b.String()
	t := strings.TrimSpace(s)
	if t == "" {
		return mappedSQL{}
	}
	lead := len(s) - len(strings.TrimLeftFunc(s, unicode.IsSpace))
	end := lead + len(t)
	spans := make([]span, 0, len(b.spans))
	for _, sp := range b.spans {
		lo, hi := max(sp.sql, lead), min(sp.sql+sp.n, end)
		if lo >= hi {
			continue
		}
		ns := span{sql: lo - lead, file: sp.file, n: hi - lo, exact: sp.exact}
		if sp.exact {
			ns.file += lo - sp.sql
		}
		spans = append(spans, ns)
	}
	return mappedSQL{sql: t, spans: spans}
}

// emptySQL is what pgmig sends for a migration whose up section holds
// nothing at all: the engine needs SQL that is not blank (a comment is
// fine, and runs as nothing), and goose, golang-migrate, dbmate,
// sql-migrate and Flyway all record an empty migration as applied.
const emptySQL = "-- (empty migration: nothing to run)"

// locateMapped is Locate for SQL assembled with spans: off is the byte
// offset of the error position in m.SQL.
func (m *Migration) locateMapped(off int) (Location, bool) {
	i := sort.Search(len(m.spans), func(i int) bool { return m.spans[i].sql+m.spans[i].n > off })
	if i == len(m.spans) || m.spans[i].sql > off {
		return Location{}, false
	}
	sp := m.spans[i]
	loc := Location{File: m.File}
	at := sp.file
	if sp.exact {
		at += off - sp.sql
	}
	loc.Line, loc.Column, loc.Text = lineAt(m.text, at)
	if !sp.exact {
		loc.Expanded = true
		_, loc.ExpandedColumn, loc.ExpandedText = lineAt(m.SQL, off)
	}
	return loc, true
}

// lineAt: the 1-based line and character column of byte offset off in
// text, and that line without its line ending.
func lineAt(text string, off int) (line, col int, lineText string) {
	start := strings.LastIndexByte(text[:off], '\n') + 1
	end := strings.IndexByte(text[off:], '\n')
	if end < 0 {
		end = len(text)
	} else {
		end += off
	}
	return strings.Count(text[:off], "\n") + 1, utf8.RuneCountInString(text[start:off]) + 1,
		strings.TrimSuffix(text[start:end], "\r")
}

// fileLine is one line of a file: bytes [start, end) without its line
// ending ("\n" or "\r\n", as bufio.ScanLines reads lines, which is how
// goose and sql-migrate read them), next is where the following line
// starts, num its 1-based number.
type fileLine struct {
	num, start, end, next int
	text                  string
}

// lines splits text as bufio.ScanLines does (a final line without a line
// ending counts, an empty text has no lines).
func lines(text string) []fileLine {
	var out []fileLine
	for start, num := 0, 1; start < len(text); num++ {
		next := len(text)
		end := next
		if i := strings.IndexByte(text[start:], '\n'); i >= 0 {
			end = start + i
			next = end + 1
		}
		if end > start && text[end-1] == '\r' {
			end--
		}
		out = append(out, fileLine{num: num, start: start, end: end, next: next, text: text[start:end]})
		start = next
	}
	return out
}

// lineOf is the 1-based line of byte offset off in text.
func lineOf(text string, off int) int { return strings.Count(text[:off], "\n") + 1 }

// sqlToken is a token of a statement, for recognising what kind of
// statement it is: words (keywords and unquoted identifiers) lower-cased,
// quoted identifiers as written, punctuation one byte each, strings and
// numbers as such.
type sqlToken struct {
	text string
	off  int // byte offset in the statement
	word bool
}

// statementTokens returns the first max tokens of a statement, skipping
// white space and comments, lexed as PostgreSQL's lexer does (see
// splitStatements).
func statementTokens(s string, max int) []sqlToken {
	var out []sqlToken
	for i := 0; i < len(s) && len(out) < max; {
		c := s[i]
		next := byte(0)
		if i+1 < len(s) {
			next = s[i+1]
		}
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			i++
		case c == '-' && next == '-':
			if end := strings.IndexByte(s[i:], '\n'); end >= 0 {
				i += end + 1
			} else {
				i = len(s)
			}
		case c == '/' && next == '*':
			i = skipBlockComment(s, i+2)
		case c == '\'':
			j := skipQuoted(s, i+1, '\'', false)
			out = append(out, sqlToken{text: s[i:j], off: i})
			i = j
		case (c == 'e' || c == 'E') && next == '\'':
			j := skipQuoted(s, i+2, '\'', true)
			out = append(out, sqlToken{text: s[i:j], off: i})
			i = j
		case c == '"':
			j := skipQuoted(s, i+1, '"', false)
			out = append(out, sqlToken{text: s[i:j], off: i, word: true})
			i = j
		case c == '$':
			if tag, ok := dollarTag(s[i:]); ok {
				j := len(s)
				if end := strings.Index(s[i+len(tag):], tag); end >= 0 {
					j = i + len(tag) + end + len(tag)
				}
				out = append(out, sqlToken{text: s[i:j], off: i})
				i = j
				continue
			}
			j := i + 1
			for j < len(s) && s[j] >= '0' && s[j] <= '9' {
				j++
			}
			out = append(out, sqlToken{text: s[i:j], off: i})
			i = j
		case identStart(c):
			j := i + 1
			for j < len(s) && (identByte(s[j]) || s[j] == '$') {
				j++
			}
			out = append(out, sqlToken{text: strings.ToLower(s[i:j]), off: i, word: true})
			i = j
		case c >= '0' && c <= '9':
			j := i + 1
			for j < len(s) && (identByte(s[j]) || s[j] == '.') {
				j++
			}
			out = append(out, sqlToken{text: s[i:j], off: i})
			i = j
		default:
			out = append(out, sqlToken{text: s[i : i+1], off: i})
			i++
		}
	}
	return out
}

// tokens are a statement's tokens with accessors that return "" past the
// end or for anything but a word.
type tokens []sqlToken

func (t tokens) word(i int) string {
	if i < len(t) && t[i].word {
		return t[i].text
	}
	return ""
}

// txKind: whether a statement is transaction control, and which.
type txKind int

const (
	txNone   txKind = iota
	txBegin         // BEGIN / START TRANSACTION
	txCommit        // COMMIT / END (not COMMIT PREPARED, not AND CHAIN)
	txOther         // ROLLBACK, SAVEPOINT, RELEASE, PREPARE TRANSACTION, COMMIT AND CHAIN, ABORT
)

func transactionControl(t tokens) txKind {
	switch t.word(0) {
	case "begin":
		return txBegin
	case "start":
		if t.word(1) == "transaction" {
			return txBegin
		}
	case "commit", "end":
		if t.word(0) == "commit" && t.word(1) == "prepared" {
			return txNone
		}
		i := 1
		if w := t.word(i); w == "work" || w == "transaction" {
			i++
		}
		if t.word(i) == "and" && t.word(i+1) == "chain" {
			return txOther
		}
		return txCommit
	case "rollback":
		if t.word(1) == "prepared" {
			return txNone
		}
		return txOther
	case "abort", "savepoint", "release":
		return txOther
	case "prepare":
		if t.word(1) == "transaction" {
			return txOther
		}
	}
	return txNone
}

// outsideTransaction names the statement when PostgreSQL refuses to run it
// inside a transaction block (the commands that call
// PreventInTransactionBlock, PostgreSQL 13 to 18), "" otherwise. Where
// PostgreSQL decides by something a file cannot show (whether a table is
// partitioned, whether a subscription has a slot) the statement is named
// too: running a statement outside a transaction always works, inside one
// it fails.
func outsideTransaction(t tokens) string {
	switch t.word(0) {
	case "create":
		i := 1
		if t.word(i) == "unique" {
			i++
		}
		if t.word(i) == "index" && t.word(i+1) == "concurrently" {
			return "CREATE INDEX CONCURRENTLY"
		}
		switch t.word(1) {
		case "database", "tablespace", "subscription":
			return "CREATE " + strings.ToUpper(t.word(1))
		}
	case "drop":
		if t.word(1) == "index" && t.word(2) == "concurrently" {
			return "DROP INDEX CONCURRENTLY"
		}
		switch t.word(1) {
		case "database", "tablespace", "subscription":
			return "DROP " + strings.ToUpper(t.word(1))
		}
	case "reindex":
		i := 1
		if i < len(t) && t[i].text == "(" {
			for i++; i < len(t) && t[i].text != ")"; i++ {
				if t.word(i) == "concurrently" {
					return "REINDEX CONCURRENTLY"
				}
			}
			i++
		}
		switch t.word(i) {
		case "schema", "database", "system":
			return "REINDEX " + strings.ToUpper(t.word(i))
		}
		if t.word(i+1) == "concurrently" {
			return "REINDEX CONCURRENTLY"
		}
	case "vacuum":
		return "VACUUM"
	case "cluster":
		// Without a table, or for a partitioned table (PostgreSQL 15+).
		return "CLUSTER"
	case "alter":
		switch t.word(1) {
		case "system":
			return "ALTER SYSTEM"
		case "subscription":
			// REFRESH PUBLICATION and SET/ADD/DROP PUBLICATION with refresh.
			return "ALTER SUBSCRIPTION"
		case "database":
			if t.word(3) == "set" && t.word(4) == "tablespace" {
				return "ALTER DATABASE ... SET TABLESPACE"
			}
		case "table":
			for i := 2; i+1 < len(t); i++ {
				if t.word(i) == "detach" && t.word(i+1) == "partition" {
					for j := i + 2; j < len(t); j++ {
						if w := t.word(j); w == "concurrently" || w == "finalize" {
							return "ALTER TABLE ... DETACH PARTITION ... " + strings.ToUpper(w)
						}
					}
				}
			}
		}
	case "discard":
		if t.word(1) == "all" {
			return "DISCARD ALL"
		}
	case "commit", "rollback":
		if t.word(1) == "prepared" {
			return strings.ToUpper(t.word(0)) + " PREPARED"
		}
	}
	return ""
}

// statementTokenLimit: enough tokens to recognise every statement kind
// above (ALTER TABLE ... DETACH PARTITION with qualified names included).
const statementTokenLimit = 64
