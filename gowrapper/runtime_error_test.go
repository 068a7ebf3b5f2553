package pgmig_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"

	pgmig "github.com/pgmig/pgmig/gowrapper"
	"github.com/pgmig/pgmig/tests/pgtest"
)

// Runtime errors carry no position from the server: the engine names the
// failing statement (the batch's "statements"), and the error points at the
// line where that statement starts in the file, with its CONTEXT, for
// transactional and non-transactional migrations alike; nothing is applied.
func TestPushRuntimeErrorNamesStatementLine(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, tc := range []struct {
		name        string
		file, text  string
		code        string
		line, stmt  int
		statements  int
		contextHas  string
		nonTx       bool
		appliedRows int
	}{
		{
			name: "division by zero in the third statement",
			file: "001_div.sql", code: "22012", line: 5, stmt: 3, statements: 3,
			text: "-- a comment line\ncreate table a (id int);\ninsert into a values (1);\n\nselect 1/0 from a;\n",
		},
		{
			name: "foreign key violation",
			file: "001_fk.sql", code: "23503", line: 4, stmt: 3, statements: 3,
			text: "create table p (id int primary key);\ncreate table c (p int references p);\n\ninsert into c\n  values (7);\n",
		},
		{
			name: "RAISE in a DO block",
			file: "001_do.sql", code: "P0001", line: 2, stmt: 2, statements: 2, contextHas: "PL/pgSQL function inline_code_block line 3 at RAISE",
			text: "create table a (id int);\ndo $$\nbegin\n  raise exception 'no way';\nend $$;\n",
		},
		{
			name: "non-transactional statement",
			file: "001_idx.sql", code: "22012", line: 4, stmt: 2, statements: 2, nonTx: true, appliedRows: 1,
			text: "---- tern: disable-tx ----\ncreate table a (id int);\n\nselect 1/0;\n",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			db := pgtest.NewDB(t)
			_, err := connect(t, db.URL, nil).Push(ctx, load(t, map[string]string{tc.file: tc.text}), nil)
			var merr *pgmig.MigrationError
			if !errors.As(err, &merr) {
				t.Fatalf("err = %v, want *MigrationError", err)
			}
			if merr.Code != tc.code || merr.File != tc.file || merr.Version != 1 {
				t.Errorf("identity: code %s file %s version %d", merr.Code, merr.File, merr.Version)
			}
			if merr.Location.Line != tc.line || merr.Location.Column != 0 {
				t.Errorf("location %+v, want line %d column 0", merr.Location, tc.line)
			}
			if merr.Statement != tc.stmt || merr.Statements != tc.statements {
				t.Errorf("statement %d of %d, want %d of %d", merr.Statement, merr.Statements, tc.stmt, tc.statements)
			}
			if merr.NonTransactional != tc.nonTx {
				t.Errorf("NonTransactional = %v", merr.NonTransactional)
			}
			if tc.contextHas != "" && !strings.Contains(merr.Context, tc.contextHas) {
				t.Errorf("context %q, want it to contain %q", merr.Context, tc.contextHas)
			}
			if strings.Contains(merr.Context, "pgmig") {
				t.Errorf("context shows pgmig's own frames: %q", merr.Context)
			}
			want := tc.file + ":" + strconv.Itoa(tc.line)
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not name %s", err, want)
			}
			// Transactional: nothing applied. Non-transactional: the statements
			// before the failing one stay (that is what the mode means).
			var n int
			if err := db.Conn(t).QueryRow(ctx, "select count(*) from pg_tables where schemaname = 'public'").Scan(&n); err != nil || n != tc.appliedRows {
				t.Errorf("%d tables after the failure (err %v), want %d", n, err, tc.appliedRows)
			}
		})
	}
}
