package pgmig

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/pgmig/pgmig/tests/pgtest"
)

func TestQuoteTag(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ text, want string }{
		{"", "$b$"},
		{"plain $$ text $a$", "$b$"},
		{"x $b$ y", "$b_1$"},
		// The tag across the end of the text and the closing tag: "...$b" + "$b$"
		// would close the quote one character early.
		{"ends in $b", "$b_1$"},
		{"$b$ and $b_1$ and ends in $b_2", "$b_3$"},
		{"$B$ differs in case", "$b$"},
		{"$b_$ is another tag", "$b$"},
	} {
		if got := quoteTag("b", tc.text); got != tc.want {
			t.Errorf("quoteTag(%q) = %s, want %s", tc.text, got, tc.want)
		}
	}
}

// Random texts made of dollar-quote fragments, quoted with quoteTag, read
// back by the server unchanged: PostgreSQL's lexer is the judge, not a copy
// of its rules.
func TestQuoteTagAgainstServer(t *testing.T) {
	t.Parallel()
	conn := pgtest.NewEmptyDB(t).Conn(t)
	frags := []string{"$", "$b", "$b$", "b$", "_", "_1", "1$", "$b_1", "$b_1$", "$b_2$", "'", `\`, "x", "\n", "--", "/*", "é", "😀"}
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 300; i++ {
		var sb strings.Builder
		for n := r.IntN(12); n >= 0; n-- {
			sb.WriteString(frags[r.IntN(len(frags))])
		}
		text := sb.String()
		tag := quoteTag("b", text)
		var got string
		if err := conn.QueryRow(context.Background(), "select "+tag+text+tag).Scan(&got); err != nil {
			t.Fatalf("select %s%s%s: %v", tag, text, tag, err)
		}
		if got != text {
			t.Fatalf("%s%s%s read back as %q", tag, text, tag, got)
		}
	}
}

func TestEscapeNonASCII(t *testing.T) {
	t.Parallel()
	orig := "Grüße 日本語 😀 \u2028 e\u0301 \U0010FFFF"
	b, err := json.Marshal(orig)
	if err != nil {
		t.Fatal(err)
	}
	esc := escapeNonASCII(string(b))
	for i := 0; i < len(esc); i++ {
		if esc[i] >= utf8.RuneSelf {
			t.Fatalf("not ASCII: %q", esc)
		}
	}
	var back string
	if err := json.Unmarshal([]byte(esc), &back); err != nil || back != orig {
		t.Fatalf("round trip: %q, %v", back, err)
	}
}

func TestSQLLiteral(t *testing.T) {
	t.Parallel()
	conn := pgtest.NewEmptyDB(t).Conn(t)
	for _, s := range []string{"plain", "it's", `back\slash`, `both\'`, "unicode é"} {
		for _, scs := range []string{"on", "off"} {
			var got string
			if err := conn.QueryRow(context.Background(), "select set_config('standard_conforming_strings', '"+scs+"', false), "+sqlLiteral(s)).Scan(new(string), &got); err != nil {
				t.Fatal(err)
			}
			if want := asciiOnly(s); got != want {
				t.Errorf("standard_conforming_strings=%s: %s read back as %q, want %q", scs, sqlLiteral(s), got, want)
			}
		}
	}
}

func TestCommentText(t *testing.T) {
	t.Parallel()
	if got := commentText("a\nb\\c\u00e9d\x00", 100); got != "a?b?c?d?" {
		t.Errorf("commentText = %q", got)
	}
	if got := commentText(strings.Repeat("x", 120), 100); len(got) != 100 || !strings.HasSuffix(got, "...") {
		t.Errorf("commentText long = %q", got)
	}
}

// The engine part of a bundle is the install script's transaction body,
// ASCII only, and executes as one string (checked against a server in
// tests/admin).
func TestEngineScript(t *testing.T) {
	t.Parallel()
	s, err := engineScript()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(s, "\nBEGIN;\n") || strings.Contains(s, "\nCOMMIT;\n") {
		t.Error("the engine part kept the install script's BEGIN/COMMIT")
	}
	for i, l := range strings.Split(s, "\n") {
		for _, r := range l {
			if r >= utf8.RuneSelf {
				t.Fatalf("line %d of the engine part is not ASCII (a non-ASCII character outside a whole-line comment in sql/src?): %q", i+1, l)
			}
		}
	}
}
