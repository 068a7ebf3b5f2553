package main

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/tern/v2/migrate"
	pgmig "github.com/pgmig/pgmig/gowrapper"
)

// profile splits pgmig's time on the trivial and the realistic N = 1000
// workloads into its parts (variants timed side by side, fresh database
// each), and times the engine's PL/pgSQL functions with track_functions =
// 'all' (pg_stat_user_functions).
func (e *env) profile(ctx context.Context) error {
	var b strings.Builder
	b.WriteString("### Where the time goes (engine profile)\n\n")
	// The variants on the trivial workload only: there pgmig's own cost is
	// not hidden behind the DDL's.
	w, err := e.workload(trivial, 1000)
	if err != nil {
		return err
	}
	if err := e.profileVariants(ctx, &b, w); err != nil {
		return err
	}
	for _, k := range []kind{trivial, realistic} {
		w, _ := e.workload(k, 1000)
		if err := e.profileFunctions(ctx, &b, w); err != nil {
			return err
		}
	}
	e.report.profile = b.String()
	return nil
}

type variant struct {
	name string
	run  func(ctx context.Context, url string) error // timed
}

func (e *env) profileVariants(ctx context.Context, b *strings.Builder, w *workload) error {
	ms, err := pgmig.LoadDir(w.dir, nil)
	if err != nil {
		return err
	}
	batch, err := pgmig.Batch(ms)
	if err != nil {
		return err
	}
	sql := w.physicalSQL(0)
	var do strings.Builder
	// The floor of any engine that runs migrations from inside a function:
	// the same statements, each through PL/pgSQL EXECUTE, in one DO block.
	do.WriteString("do $bench$ begin\n")
	for _, up := range w.ups {
		do.WriteString("execute " + quoteLiteral(up) + ";\n")
	}
	do.WriteString("end $bench$;")
	doSQL := "begin;\n" + do.String() + "\ncommit;"
	variants := []variant{
		{"physical limit (top-level statements)", func(ctx context.Context, url string) error { return physical(ctx, url, sql) }},
		{"same SQL, one PL/pgSQL EXECUTE per migration in a DO block", func(ctx context.Context, url string) error { return physical(ctx, url, doSQL) }},
		{"migrate_apply(batch) alone (batch prebuilt, psql-style call)", func(ctx context.Context, url string) error {
			conn, err := pgx.Connect(ctx, url)
			if err != nil {
				return err
			}
			defer conn.Close(ctx)
			_, err = conn.Exec(ctx, "select count(*) from migrate_apply($1::jsonb)", pgx.QueryExecModeExec, string(batch))
			return err
		}},
		{"pgmig library: Connect + Push (migrations preloaded)", func(ctx context.Context, url string) error {
			client, err := pgmig.Connect(ctx, url, nil)
			if err != nil {
				return err
			}
			defer client.Close(ctx)
			_, err = client.Push(ctx, ms, nil)
			return err
		}},
		{"pgmig library: Connect + Push, precheck disabled", func(ctx context.Context, url string) error {
			client, err := pgmig.Connect(ctx, url, &pgmig.Config{DisablePrecheck: true})
			if err != nil {
				return err
			}
			defer client.Close(ctx)
			_, err = client.Push(ctx, ms, nil)
			return err
		}},
		{"pgmig library: LoadDir + Connect + Push (the contender)", func(ctx context.Context, url string) error {
			_, err := pgmigLibrary(ctx, url, w.dir, e.cfg.pgmigSeg)
			return err
		}},
		{"pgmig CLI (the contender)", func(ctx context.Context, url string) error {
			return e.r.pgmigCLI(ctx, url, w.dir, e.cfg.pgmigSeg)
		}},
	}
	runs := e.cfg.runs
	samples := map[string][]time.Duration{}
	logf("profile %s-%d: %d runs of %d variants", w.kind, w.n, runs, len(variants))
	for r := range runs {
		for i := range variants {
			v := variants[(i+r)%len(variants)]
			db, err := e.freshDB(ctx)
			if err != nil {
				return err
			}
			start := time.Now()
			err = v.run(ctx, e.cl.url(db))
			d := time.Since(start)
			if err == nil {
				err = e.verify(ctx, db, w)
			}
			e.dropDB(ctx, db)
			if err != nil {
				return fmt.Errorf("profile variant %q: %w", v.name, err)
			}
			samples[v.name] = append(samples[v.name], d)
		}
	}
	// Client-side costs, no database involved.
	loadT := timeIt(runs, func() error { _, err := pgmig.LoadDir(w.dir, nil); return err })
	ternLoadT := timeIt(runs, func() error {
		m, err := migrate.NewMigrator(ctx, nil, "x")
		if err != nil {
			return err
		}
		return m.LoadMigrations(os.DirFS(w.dir))
	})
	batchT := timeIt(runs, func() error { _, err := pgmig.Batch(ms); return err })

	s := &scenario{samples: samples, failures: map[string][]string{}}
	phys := s.stats(variants[0].name).median
	what := "realistic DDL"
	if w.kind == trivial {
		what = "trivial"
	}
	fmt.Fprintf(b, "N = 1000 %s migrations, loopback, %d runs each, fresh database each:\n\n", what, runs)
	b.WriteString("| variant | median | − physical limit | per migration |\n|---|---:|---:|---:|\n")
	for _, v := range variants {
		m := s.stats(v.name).median
		fmt.Fprintf(b, "| %s | %s | %s | %s |\n", v.name, fmtDur(m), fmtDur(m-phys), fmtMicros((m-phys)/time.Duration(w.n)))
	}
	fmt.Fprintf(b, "| client only: pgmig.LoadDir (tern's loader + checksums) | %s | | %s |\n", fmtDur(loadT), fmtMicros(loadT/time.Duration(w.n)))
	fmt.Fprintf(b, "| client only: tern Migrator.LoadMigrations | %s | | %s |\n", fmtDur(ternLoadT), fmtMicros(ternLoadT/time.Duration(w.n)))
	fmt.Fprintf(b, "| client only: pgmig.Batch (JSON encoding, %d KB) | %s | | %s |\n\n", len(batch)/1024, fmtDur(batchT), fmtMicros(batchT/time.Duration(w.n)))
	return nil
}

func timeIt(runs int, f func() error) time.Duration {
	var ds []time.Duration
	for range max(runs, 3) {
		start := time.Now()
		if err := f(); err != nil {
			logf("profile: %v", err)
			return 0
		}
		ds = append(ds, time.Since(start))
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return ds[len(ds)/2]
}

func quoteLiteral(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

// profileFunctions pushes once with track_functions = 'all' and reports
// pg_stat_user_functions of the engine's functions.
func (e *env) profileFunctions(ctx context.Context, b *strings.Builder, w *workload) error {
	db, err := e.freshDB(ctx)
	if err != nil {
		return err
	}
	defer e.dropDB(ctx, db)
	ms, err := pgmig.LoadDir(w.dir, nil)
	if err != nil {
		return err
	}
	client, err := pgmig.Connect(ctx, e.cl.url(db)+"&options=-c%20track_functions%3Dall", nil)
	if err != nil {
		return err
	}
	defer client.Close(ctx)
	start := time.Now()
	if _, err := client.Push(ctx, ms, nil); err != nil {
		return err
	}
	total := time.Since(start)
	what := "realistic DDL"
	if w.kind == trivial {
		what = "trivial"
	}
	if err := functionStats(ctx, b, client.Conn(), fmt.Sprintf("one push of N = 1000 %s migrations (it took %s end to end, timing overhead included)", what, fmtDur(total))); err != nil {
		return err
	}
	if w.kind != realistic {
		return nil
	}
	// The same push again: nothing pending (the no-op).
	if _, err := client.Conn().Exec(ctx, "select pg_stat_reset()"); err != nil {
		return err
	}
	start = time.Now()
	if _, err := client.Push(ctx, ms, nil); err != nil {
		return err
	}
	return functionStats(ctx, b, client.Conn(), fmt.Sprintf("the no-op push of the same %d migrations (%s end to end)", w.n, fmtDur(time.Since(start))))
}

func functionStats(ctx context.Context, b *strings.Builder, conn *pgx.Conn, title string) error {
	// Statistics reach the shared view when the backend flushes them, at
	// the end of a transaction once forced.
	if _, err := conn.Exec(ctx, "select pg_stat_force_next_flush()"); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, "select 1"); err != nil {
		return err
	}
	rows, err := conn.Query(ctx, `select schemaname || '.' || funcname, calls, total_time, self_time
		from pg_stat_user_functions where schemaname in ('pgmig', 'public') and calls > 0 order by total_time desc`)
	if err != nil {
		return err
	}
	type fn struct {
		name        string
		calls       int64
		total, self float64
	}
	fns, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (fn, error) {
		var f fn
		err := r.Scan(&f.name, &f.calls, &f.total, &f.self)
		return f, err
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(b, "Engine functions during %s (`track_functions = 'all'`, `pg_stat_user_functions`; self time excludes nested pgmig functions; the migrations' own SQL counts in the self time of `_execute_as_caller`):\n\n", title)
	b.WriteString("| function | calls | total | self | self per call |\n|---|---:|---:|---:|---:|\n")
	for _, f := range fns {
		fmt.Fprintf(b, "| `%s` | %d | %.1f ms | %.1f ms | %.1f µs |\n", f.name, f.calls, f.total, f.self, f.self*1000/float64(max(f.calls, 1)))
	}
	b.WriteString("\n")
	return nil
}
