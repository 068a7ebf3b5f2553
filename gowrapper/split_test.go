package pgmig

import (
	"reflect"
	"testing"
)

// The cases of tern's own sqlsplit tests, plus offsets.
func TestSplitStatements(t *testing.T) {
	t.Parallel()
	for i, tt := range []struct {
		sql      string
		expected []string
	}{
		{``, []string{``}},
		{`select 42`, []string{`select 42`}},
		{`select $1`, []string{`select $1`}},
		{`select 42; select 7;`, []string{`select 42;`, `select 7;`}},
		{`select 42; select 7`, []string{`select 42;`, `select 7`}},
		{`select 42, ';' ";"; select 7;`, []string{`select 42, ';' ";";`, `select 7;`}},
		{"select * -- foo ; bar\nfrom users -- ; single line comments\nwhere id = $1;\nselect 1;\n",
			[]string{"select * -- foo ; bar\nfrom users -- ; single line comments\nwhere id = $1;", `select 1;`}},
		{"select * /* ; multi line ;\n;\n*/\n/* /* ; with nesting ; */ */\nfrom users\nwhere id = $1;\nselect 1;\n",
			[]string{"select * /* ; multi line ;\n;\n*/\n/* /* ; with nesting ; */ */\nfrom users\nwhere id = $1;", `select 1;`}},
		{"select 1;\n\nDO $$DECLARE r record;\nBEGIN\n   EXECUTE 'GRANT ALL ON ' || 'x; y';\nEND$$;\n\nselect 2;\n",
			[]string{`select 1;`, "DO $$DECLARE r record;\nBEGIN\n   EXECUTE 'GRANT ALL ON ' || 'x; y';\nEND$$;", `select 2;`}},
		{"select 1;\nSELECT $_testął123$hello; world$_testął123$;\nselect 2;",
			[]string{`select 1;`, `SELECT $_testął123$hello; world$_testął123$;`, `select 2;`}},
		{"select 1;\nSELECT $test", []string{`select 1;`, `SELECT $test`}},
		{"select 1;\nSELECT $test$ending", []string{`select 1;`, `SELECT $test$ending`}},
		{"select 1;\nSELECT $test$ending$test", []string{`select 1;`, `SELECT $test$ending$test`}},
		{"select 1;\nSELECT $test$ (select $$nested$$ || $testing$strings;$testing$) $test$;\nselect 2;",
			[]string{`select 1;`, `SELECT $test$ (select $$nested$$ || $testing$strings;$testing$) $test$;`, `select 2;`}},
		{"select E'it\\'s; fine'; select 2", []string{`select E'it\'s; fine';`, `select 2`}},
		{"select $a$ x $", []string{`select $a$ x $`}}, // tern itself panics here
		// SQL-standard routine bodies are one statement, as psql sends them.
		{"create function f() returns int language sql\nbegin atomic\n  select 1;\n  select case when true then 2 end;\nend;\nselect 3;",
			[]string{"create function f() returns int language sql\nbegin atomic\n  select 1;\n  select case when true then 2 end;\nend;", `select 3;`}},
		{"CREATE OR REPLACE PROCEDURE p() BEGIN ATOMIC INSERT INTO t VALUES (1); END; END;",
			[]string{"CREATE OR REPLACE PROCEDURE p() BEGIN ATOMIC INSERT INTO t VALUES (1); END;", "END;"}},
		{"create function f(begin int) returns int return 1; begin; select 1; commit;",
			[]string{"create function f(begin int) returns int return 1;", "begin;", "select 1;", "commit;"}},
		{"create table begin (x int); select 1;", []string{"create table begin (x int);", "select 1;"}},
	} {
		got := splitStatements(tt.sql)
		var texts []string
		for _, st := range got {
			texts = append(texts, st.text)
			if tt.sql != "" && tt.sql[st.offset:st.offset+len(st.text)] != st.text {
				t.Errorf("%d: offset %d does not point at %q", i, st.offset, st.text)
			}
		}
		if !reflect.DeepEqual(texts, tt.expected) {
			t.Errorf("%d: got %q, want %q", i, texts, tt.expected)
		}
	}
}
