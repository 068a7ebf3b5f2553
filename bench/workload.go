package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// kind of generated migrations.
type kind string

const (
	// realistic: a table with a primary key, a secondary index, a comment
	// and three rows; what a schema's history is mostly made of.
	realistic kind = "ddl"
	// trivial: one small insert each (after one migration creating the
	// table), so that the per-migration overhead dominates.
	trivial kind = "trivial"
)

// workload is one generated migration directory, in tern's format.
type workload struct {
	kind kind
	n    int
	dir  string
	ups  []string // up SQL of each migration, as tern and pgmig read it
	// bundle is the path of its `pgmig bundle` script once written.
	bundle string
}

func migrationSQL(k kind, i int) (up, down string) {
	switch k {
	case trivial:
		if i == 1 {
			return "create table bench_kv (k int primary key, v text not null);", "drop table bench_kv;"
		}
		return fmt.Sprintf("insert into bench_kv (k, v) values (%d, 'migration %d');", i, i),
			fmt.Sprintf("delete from bench_kv where k = %d;", i)
	default:
		t := fmt.Sprintf("bench_t%05d", i)
		up = fmt.Sprintf(`-- migration %d: a realistic table
create table %s (
    id         bigint primary key,
    account_id bigint not null,
    name       text not null,
    created_at timestamptz not null default now()
);
create index %s_account_idx on %s (account_id);
comment on table %s is 'benchmark table %d';
insert into %s (id, account_id, name) values (1, 1, 'one'), (2, 1, 'two'), (3, 2, 'three');`,
			i, t, t, t, t, i, t)
		return up, "drop table " + t + ";"
	}
}

func writeWorkload(base string, k kind, n int) (*workload, error) {
	w := &workload{kind: k, n: n, dir: filepath.Join(base, fmt.Sprintf("%s-%d", k, n))}
	if err := os.MkdirAll(w.dir, 0o755); err != nil {
		return nil, err
	}
	for i := 1; i <= n; i++ {
		up, down := migrationSQL(k, i)
		w.ups = append(w.ups, up)
		body := up + "\n\n---- create above / drop below ----\n\n" + down + "\n"
		name := fmt.Sprintf("%05d_%s_%d.sql", i, k, i)
		if err := os.WriteFile(filepath.Join(w.dir, name), []byte(body), 0o644); err != nil {
			return nil, err
		}
	}
	return w, nil
}

// physicalSQL is the whole workload as one simple-protocol query string:
// BEGIN; every migration; COMMIT. With segment > 0 a COMMIT; BEGIN; is put
// after every segment migrations, still in the same single round trip (a
// multi-statement simple query may contain transaction control).
func (w *workload) physicalSQL(segment int) string {
	var b strings.Builder
	b.WriteString("begin;\n")
	for i, up := range w.ups {
		b.WriteString(up)
		b.WriteString("\n")
		if segment > 0 && (i+1)%segment == 0 && i+1 < len(w.ups) {
			b.WriteString("commit;\nbegin;\n")
		}
	}
	b.WriteString("commit;\n")
	return b.String()
}

// check verifies that a run really applied the workload.
func (w *workload) checkQuery() (string, int) {
	if w.kind == trivial {
		return "select count(*) from bench_kv", w.n - 1
	}
	return "select count(*) from pg_class where relkind = 'r' and relname like 'bench\\_t%'", w.n
}
