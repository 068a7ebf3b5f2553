package pgmig

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// statement is one statement of a non-transactional migration and where it
// starts in the migration's SQL (byte offset).
type statement struct {
	text   string
	offset int
}

// splitStatements splits SQL into statements exactly as tern does for its
// disable-tx migrations (github.com/jackc/tern/v2/migrate/internal/sqlsplit,
// MIT licence, Jack Christensen), quirks included, so that both tools run
// the same statements; it also keeps each statement's offset, to map error
// positions back to the file. tern's package is internal, hence the copy.
// Two deliberate differences: tern stops splitting at an invalid UTF-8 byte
// (dropping the rest) and panics on a `$` at the very end of a dollar-quoted
// string; here only the end of the input ends the last statement.
func splitStatements(sql string) []statement {
	l := &sqlLexer{src: sql}
	for state := rawState; state != nil; {
		state = state(l)
	}
	if len(l.statements) == 0 {
		l.statements = []statement{{text: sql}}
	}
	return l.statements
}

type sqlLexer struct {
	src        string
	start      int
	pos        int
	nested     int // multi-line comment nesting level
	statements []statement
}

func (l *sqlLexer) addStatement(s string, offset int) {
	t := strings.TrimSpace(s)
	if t != "" {
		lead := len(s) - len(strings.TrimLeftFunc(s, unicode.IsSpace))
		l.statements = append(l.statements, statement{text: t, offset: offset + lead})
	}
}

// flush ends the input: whatever is left is the last statement.
func (l *sqlLexer) flush() stateFn {
	if l.pos-l.start > 0 {
		l.addStatement(l.src[l.start:min(l.pos, len(l.src))], l.start)
		l.start = l.pos
	}
	return nil
}

type stateFn func(*sqlLexer) stateFn

func (l *sqlLexer) next() (rune, int) {
	if l.pos >= len(l.src) {
		return utf8.RuneError, 0
	}
	r, w := utf8.DecodeRuneInString(l.src[l.pos:])
	l.pos += w
	return r, w
}

func (l *sqlLexer) peek() (rune, int) {
	if l.pos >= len(l.src) {
		return utf8.RuneError, 0
	}
	return utf8.DecodeRuneInString(l.src[l.pos:])
}

func rawState(l *sqlLexer) stateFn {
	for {
		r, w := l.next()
		switch r {
		case 'e', 'E':
			if n, nw := l.peek(); n == '\'' {
				l.pos += nw
				return escapeStringState
			}
		case '\'':
			return quoteState('\'')
		case '"':
			return quoteState('"')
		case '$':
			if tag, ok := readDollarTag(l.src[l.pos:]); ok {
				l.pos += len(tag) + 1
				return dollarQuoteState(tag)
			}
		case ';':
			l.addStatement(l.src[l.start:l.pos], l.start)
			l.start = l.pos
			return rawState
		case '-':
			if n, nw := l.peek(); n == '-' {
				l.pos += nw
				return oneLineCommentState
			}
		case '/':
			if n, nw := l.peek(); n == '*' {
				l.pos += nw
				return multilineCommentState
			}
		case utf8.RuneError:
			if w == 0 {
				return l.flush()
			}
		}
	}
}

func quoteState(q rune) stateFn {
	return func(l *sqlLexer) stateFn {
		for {
			r, w := l.next()
			switch {
			case r == q:
				n, nw := l.peek()
				if n != q {
					return rawState
				}
				l.pos += nw
			case r == utf8.RuneError && w == 0:
				return l.flush()
			}
		}
	}
}

func dollarQuoteState(openingTag string) stateFn {
	return func(l *sqlLexer) stateFn {
		for {
			r, w := l.next()
			switch {
			case r == '$':
				tag, ok := readDollarTag(l.src[l.pos:])
				if ok && tag == openingTag {
					l.pos += len(tag) + 1
					return rawState
				}
				l.pos += w // tern skips the character after a non-matching '$'
				if l.pos > len(l.src) {
					l.pos = len(l.src)
				}
			case r == utf8.RuneError && w == 0:
				return l.flush()
			}
		}
	}
}

func readDollarTag(src string) (string, bool) {
	r, w := utf8.DecodeRuneInString(src)
	if r == '$' {
		return "", true
	}
	if !unicode.IsLetter(r) && r != '_' {
		return "", false // not a tag: perhaps a parameter like $1
	}
	n := w
	for {
		r, w := utf8.DecodeRuneInString(src[n:])
		switch {
		case r == '$':
			return src[:n], true
		case unicode.IsLetter(r) || r == '_' || '0' <= r && r <= '9':
			n += w
		default:
			return "", false
		}
	}
}

func escapeStringState(l *sqlLexer) stateFn {
	for {
		r, w := l.next()
		switch {
		case r == '\\':
			l.next()
		case r == '\'':
			n, nw := l.peek()
			if n != '\'' {
				return rawState
			}
			l.pos += nw
		case r == utf8.RuneError && w == 0:
			return l.flush()
		}
	}
}

func oneLineCommentState(l *sqlLexer) stateFn {
	for {
		r, w := l.next()
		switch {
		case r == '\\':
			l.next()
		case r == '\n' || r == '\r':
			return rawState
		case r == utf8.RuneError && w == 0:
			return l.flush()
		}
	}
}

func multilineCommentState(l *sqlLexer) stateFn {
	for {
		r, w := l.next()
		switch {
		case r == '/':
			if n, nw := l.peek(); n == '*' {
				l.pos += nw
				l.nested++
			}
		case r == '*':
			n, nw := l.peek()
			if n != '/' {
				continue
			}
			l.pos += nw
			if l.nested == 0 {
				return rawState
			}
			l.nested--
		case r == utf8.RuneError && w == 0:
			return l.flush()
		}
	}
}
