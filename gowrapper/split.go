package pgmig

import (
	"strings"
	"unicode/utf8"
)

// statement is one statement of a non-transactional migration and where it
// starts in the migration's SQL (byte offset).
type statement struct {
	text   string
	offset int
}

// statementStarts is where each statement of sql starts (splitStatements),
// in characters (runes) from 0, as the engine counts them.
func statementStarts(sql string) []int {
	stmts := splitStatements(sql)
	starts := make([]int, len(stmts))
	for i, st := range stmts {
		starts[i] = utf8.RuneCountInString(sql[:st.offset])
	}
	return starts
}

// splitStatements splits a non-transactional migration into the statements
// it runs one by one at top level. A statement ends at a `;` that is not
// inside a string, a quoted identifier, a dollar-quoted string or a
// comment, recognised as PostgreSQL's lexer (src/backend/parser/scan.l)
// recognises them, with standard_conforming_strings on:
//
//   - '...' with ” inside; backslashes are ordinary characters;
//   - E'...' (only where the E starts a token: `like'x'` is the keyword
//     LIKE and a standard string) with \x escapes and ”;
//   - "..." with "" inside;
//   - $tag$...$tag$ where the tag is empty or an identifier without `$`,
//     only where the `$` starts a token (`a$b$` is an identifier, `$1` a
//     parameter);
//   - -- to the end of the line (a backslash does not escape the newline);
//   - /* ... */ nested.
//
// Unterminated constructs run to the end of the text. Statements are
// trimmed of surrounding whitespace; empty ones are dropped.
//
// A `;` inside the SQL-standard body of CREATE [OR REPLACE] FUNCTION or
// PROCEDURE (`BEGIN ATOMIC ... END`, PostgreSQL 14+) does not end the
// statement: the server's lexer does not split statements at all (its
// grammar knows the body), so this follows psql's lexer (psqlscan.l),
// which counts BEGIN / CASE / END words outside parentheses in a statement
// that starts with those words. Without it, such a function in a
// non-transactional migration was sent in pieces, and an `END;` closing it
// looked like transaction control. tern's own
// splitter (for its disable-tx migrations) differs in a few corner cases
// where it misreads SQL — a backslash at the end of a -- comment, `e'`
// after an identifier, `$` inside an identifier, a `$$` just before the
// closing tag of a dollar quote; pgmig follows PostgreSQL there.
func splitStatements(sql string) []statement {
	var out []statement
	add := func(from, to int) {
		s := sql[from:to]
		t := strings.TrimSpace(s)
		if t != "" {
			out = append(out, statement{text: t, offset: from + strings.Index(s, t)})
		}
	}
	start := 0
	identBefore := false // the previous byte continues an identifier or number
	var body atomicBody
	parens := 0
	for i := 0; i < len(sql); {
		c := sql[i]
		next := byte(0)
		if i+1 < len(sql) {
			next = sql[i+1]
		}
		switch {
		case c == '\'':
			i = skipQuoted(sql, i+1, '\'', false)
			identBefore = false
		case (c == 'e' || c == 'E') && next == '\'' && !identBefore:
			i = skipQuoted(sql, i+2, '\'', true)
			identBefore = false
		case c == '"':
			i = skipQuoted(sql, i+1, '"', false)
			identBefore = false
		case c == '$' && !identBefore:
			if tag, ok := dollarTag(sql[i:]); ok {
				if end := strings.Index(sql[i+len(tag):], tag); end >= 0 {
					i += len(tag) + end + len(tag)
				} else {
					i = len(sql)
				}
				identBefore = false
			} else {
				i++
				identBefore = true // $1: a parameter, digits follow
			}
		case c == '-' && next == '-':
			if end := strings.IndexByte(sql[i:], '\n'); end >= 0 {
				i += end + 1
			} else {
				i = len(sql)
			}
			identBefore = false
		case c == '/' && next == '*':
			i = skipBlockComment(sql, i+2)
			identBefore = false
		case c == ';':
			i++
			identBefore = false
			if body.depth == 0 {
				add(start, i)
				start = i
				body = atomicBody{}
				parens = 0
			}
		case !identBefore && identStart(c):
			j := i + 1
			for j < len(sql) && (identByte(sql[j]) || sql[j] == '$') {
				j++
			}
			body.word(sql[i:j], parens)
			i = j
			identBefore = true
		default:
			switch c {
			case '(':
				parens++
			case ')':
				parens = max(0, parens-1)
			}
			identBefore = identByte(c) || c == '$' && identBefore
			i++
		}
	}
	add(start, len(sql))
	if len(out) == 0 {
		out = []statement{{text: sql}}
	}
	return out
}

// atomicBody follows psql's heuristic for the BEGIN ATOMIC body of a
// statement: the first letters of its first four words where those words
// are CREATE, OR, REPLACE, FUNCTION or PROCEDURE, and, in a statement that
// starts CREATE [OR REPLACE] FUNCTION|PROCEDURE, the nesting of BEGIN (and
// CASE inside it) against END outside parentheses.
type atomicBody struct {
	words int
	first [4]byte
	depth int
}

func (b *atomicBody) word(w string, parens int) {
	if b.words < len(b.first) {
		for _, k := range [...]string{"create", "function", "procedure", "or", "replace"} {
			if strings.EqualFold(w, k) {
				b.first[b.words] = k[0]
			}
		}
	}
	b.words++
	f := b.first
	if f[0] != 'c' || parens != 0 || !(f[1] == 'f' || f[1] == 'p' || f[1] == 'o' && f[2] == 'r' && (f[3] == 'f' || f[3] == 'p')) {
		return
	}
	switch {
	case strings.EqualFold(w, "begin"):
		b.depth++
	case strings.EqualFold(w, "case"):
		if b.depth > 0 {
			b.depth++
		}
	case strings.EqualFold(w, "end"):
		if b.depth > 0 {
			b.depth--
		}
	}
}

// identStart: a byte that can start an identifier (scan.l's ident_start).
func identStart(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || c >= 0x80
}

// identByte: a byte that can continue an identifier or a number (scan.l's
// ident_cont, plus digits; bytes >= 0x80 are letters to the lexer).
func identByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c >= 0x80
}

// skipQuoted returns the index after the closing quote q, a doubled quote
// standing for itself; with backslashes, a backslash escapes the next byte.
func skipQuoted(sql string, i int, q byte, backslashes bool) int {
	for i < len(sql) {
		switch c := sql[i]; {
		case c == '\\' && backslashes:
			i += 2
		case c == q:
			if i+1 < len(sql) && sql[i+1] == q {
				i += 2
				continue
			}
			return i + 1
		default:
			i++
		}
	}
	return len(sql)
}

// dollarTag returns the opening delimiter ($$ or $tag$) at the start of s.
func dollarTag(s string) (string, bool) {
	for j := 1; j < len(s); j++ {
		c := s[j]
		switch {
		case c == '$':
			return s[:j+1], true
		case c >= '0' && c <= '9':
			if j == 1 {
				return "", false // a parameter: $1
			}
		case !identByte(c):
			return "", false
		}
	}
	return "", false
}

// skipBlockComment returns the index after the */ that closes a comment
// opened just before i, counting nested /* */ pairs.
func skipBlockComment(sql string, i int) int {
	depth := 1
	for i < len(sql) {
		switch {
		case sql[i] == '/' && i+1 < len(sql) && sql[i+1] == '*':
			depth++
			i += 2
		case sql[i] == '*' && i+1 < len(sql) && sql[i+1] == '/':
			depth--
			i += 2
			if depth == 0 {
				return i
			}
		default:
			i++
		}
	}
	return len(sql)
}
