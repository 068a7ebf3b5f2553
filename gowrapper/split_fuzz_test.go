package pgmig

import (
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

// topLevelSemicolons is an independent reading of PostgreSQL's lexical
// rules (scan.l, standard_conforming_strings on), written as an explicit
// state machine: the byte offsets of the semicolons that end statements.
// As in psql (psqlscan.l), a statement that starts CREATE [OR REPLACE]
// FUNCTION|PROCEDURE is not ended by a `;` between BEGIN and its END
// (CASE ... END nested inside counted), words in parentheses aside.
func topLevelSemicolons(sql string) []int {
	const (
		raw = iota
		single
		escaped
		double
		dollar
		lineComment
		blockComment
	)
	var out []int
	state, depth := raw, 0
	tag := ""
	prevIdent := false
	// The words of the current statement (lower case), the parentheses
	// open, and the BEGIN ... END nesting of a routine body.
	var words []string
	parens, nest := 0, 0
	routine := func() bool {
		is := func(i int, w ...string) bool {
			if i >= len(words) || i >= 4 {
				return false
			}
			for _, x := range w {
				if words[i] == x {
					return true
				}
			}
			return false
		}
		return is(0, "create") && (is(1, "function", "procedure") || is(1, "or") && is(2, "replace") && is(3, "function", "procedure"))
	}
	for i := 0; i < len(sql); i++ {
		c := sql[i]
		at := func(s string) bool { return strings.HasPrefix(sql[i:], s) }
		switch state {
		case raw:
			wasIdent := prevIdent
			prevIdent = false
			letter := func(b byte) bool { return b == '_' || b >= 0x80 || unicode.IsLetter(rune(b)) }
			switch {
			case c == ';' && nest > 0:
			case c == ';':
				out = append(out, i)
				words, parens = nil, 0
			case c == '(':
				parens++
			case c == ')' && parens > 0:
				parens--
			case c == '\'':
				state = single
			case (c == 'e' || c == 'E') && at(string(c)+"'") && !wasIdent:
				state = escaped
				i++
			case c == '"':
				state = double
			case at("--"):
				state = lineComment
				i++
			case at("/*"):
				state, depth = blockComment, 1
				i++
			case c == '$' && !wasIdent:
				j := i + 1
				for j < len(sql) && (sql[j] == '_' || sql[j] >= 0x80 || unicode.IsLetter(rune(sql[j])) ||
					j > i+1 && sql[j] >= '0' && sql[j] <= '9') {
					j++
				}
				if j < len(sql) && sql[j] == '$' {
					tag, state = sql[i:j+1], dollar
					i = j
				} else {
					prevIdent = true
				}
			case !wasIdent && letter(c) && !(c == 'e' || c == 'E') || !wasIdent && (c == 'e' || c == 'E') && !at(string(c)+"'"):
				j := i
				for j < len(sql) && (letter(sql[j]) || sql[j] >= '0' && sql[j] <= '9' || sql[j] == '$') {
					j++
				}
				w := strings.ToLower(sql[i:j])
				words = append(words, w)
				if routine() && parens == 0 {
					switch {
					case w == "begin":
						nest++
					case w == "case" && nest > 0:
						nest++
					case w == "end" && nest > 0:
						nest--
					}
				}
				i = j - 1
				prevIdent = true
			default:
				prevIdent = c == '_' || c == '$' || c >= 0x80 || unicode.IsLetter(rune(c)) || unicode.IsDigit(rune(c))
			}
		case single, double:
			q := byte('\'')
			if state == double {
				q = '"'
			}
			if c == q {
				if i+1 < len(sql) && sql[i+1] == q {
					i++
				} else {
					state = raw
				}
			}
		case escaped:
			switch {
			case c == '\\':
				i++
			case c == '\'' && at("''"):
				i++
			case c == '\'':
				state = raw
			}
		case dollar:
			if at(tag) {
				i += len(tag) - 1
				state = raw
			}
		case lineComment:
			if c == '\n' {
				state = raw
			}
		case blockComment:
			switch {
			case at("/*"):
				depth++
				i++
			case at("*/"):
				depth--
				i++
				if depth == 0 {
					state = raw
				}
			}
		}
	}
	return out
}

// nonSpace is s without whitespace, invalid UTF-8 bytes kept as they are.
func nonSpace(s string) string {
	var b strings.Builder
	for len(s) > 0 {
		r, w := utf8.DecodeRuneInString(s)
		if !(r != utf8.RuneError && unicode.IsSpace(r)) {
			b.WriteString(s[:w])
		}
		s = s[w:]
	}
	return b.String()
}

func checkSplit(t *testing.T, sql string) {
	stmts := splitStatements(sql)
	want := topLevelSemicolons(sql)
	var joined strings.Builder
	var ends []int
	for i, st := range stmts {
		if st.offset < 0 || st.offset+len(st.text) > len(sql) || sql[st.offset:st.offset+len(st.text)] != st.text {
			t.Fatalf("statement %d (%q) is not at offset %d of %q", i, st.text, st.offset, sql)
		}
		joined.WriteString(st.text)
		end := st.offset + len(st.text) - 1
		switch {
		case i < len(stmts)-1 && strings.HasSuffix(st.text, ";"):
			ends = append(ends, end)
		case i == len(stmts)-1 && len(want) > 0 && want[len(want)-1] == end:
			// The last statement may end in a ';' of an unterminated
			// string or comment; it is a boundary only if top-level.
			ends = append(ends, end)
		case i < len(stmts)-1:
			t.Fatalf("statement %d of %d (%q) does not end with ';' in %q", i+1, len(stmts), st.text, sql)
		}
	}
	if nonSpace(joined.String()) != nonSpace(sql) {
		t.Fatalf("statements %q do not re-join to %q", joined.String(), sql)
	}
	// Every boundary is a top-level ';', and every top-level ';' is a
	// boundary (a statement of only ';' is kept as a statement).
	if len(want) != len(ends) {
		t.Fatalf("boundaries at %v, top-level semicolons at %v in %q (%d statements)", ends, want, sql, len(stmts))
	}
	for i := range want {
		if want[i] != ends[i] {
			t.Fatalf("boundaries at %v, top-level semicolons at %v in %q", ends, want, sql)
		}
	}
}

var splitSeeds = []string{
	"",
	"select 1",
	"select 1; select 2;",
	"select ';' , \";\" ; select 2",
	"select 'it''s; fine'; select 2",
	"select E'it\\'s; fine'; select 2",
	"select e'\\\\'; select 2",
	"select 'a\\'; select 2",
	"select 'a' like'%\\'; select 2",
	"select $$;$$; select $tag$ $$ ; $tag$; select $t$ $tt$ ; $t$;",
	"select $a$ x $$a$; select 2",
	"select $1; select $2::text",
	"select a$b$; select 2 $x$",
	"create function f() returns int language plpgsql as $body$ begin return 1; end $body$;\nselect 2;",
	"select $_testął123$hello; world$_testął123$; select 2",
	"-- comment; here\nselect 1; -- trailing; comment\nselect 2",
	"-- backslash at the end \\\nselect 1; select 2",
	"/* one; /* nested; */ still; */ select 1; select 2",
	"/* unterminated; select 1",
	"select 'unterminated; select 1",
	"select \"quoted\"\"; ident\"; select 2",
	"select U&'\\0041;'; select B'1010', X'ff;'",
	"do $$ begin perform ';'; end $$; vacuum; create index concurrently i on t (x);",
	"select 1;;; ;  select 2",
	"select 1 /* */; select 2 --\n;",
	"select '\xff;'; select \xfe;",
	"select 1e'x'; select 2",
	"create function f() returns int language sql begin atomic select 1; select 2; end; select 3;",
	"CREATE OR REPLACE PROCEDURE p() BEGIN ATOMIC SELECT CASE WHEN true THEN 1 END; END; END;",
	"create function f(begin int) returns int return begin; select 2;",
	"create table begin (x int); select 1;",
	"create or replace function f() returns int begin atomic; end; begin; commit;",
}

func TestSplitSeeds(t *testing.T) {
	t.Parallel()
	for _, s := range splitSeeds {
		checkSplit(t, s)
	}
}

// FuzzSplit: go test ./gowrapper -run '^$' -fuzz FuzzSplit -fuzztime 60s
func FuzzSplit(f *testing.F) {
	for _, s := range splitSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, sql string) {
		checkSplit(t, sql)
	})
}
