package admin_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	pgmig "github.com/pgmig/pgmig/gowrapper"
	"github.com/pgmig/pgmig/tests/pgtest"
)

// BenchmarkBundleVsPush: the time `psql -f release.sql` takes to apply a
// bundle of 1000 migrations (each a table with a primary key and a comment)
// against `pgmig push` of the same files, both as processes from start to
// exit, each on a fresh database cloned from one with the engine installed,
// in alternating order, on one durable server (fsync on, PostgreSQL's defaults).
// Each iteration is one of each; the medians and their ratio are reported.
//
//	go test ./tests/admin -run '^$' -bench BundleVsPush -benchtime 7x
func BenchmarkBundleVsPush(b *testing.B) {
	const n = 1000
	ctx := context.Background()
	srv, err := pgtest.StartLocal(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Destroy()
	admin, err := pgx.Connect(ctx, srv.URL("postgres"))
	if err != nil {
		b.Fatal(err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "create database engine_tpl"); err != nil {
		b.Fatal(err)
	}
	tpl, err := pgx.Connect(ctx, srv.URL("engine_tpl"))
	if err != nil {
		b.Fatal(err)
	}
	if _, err := pgmig.New(tpl, nil).Install(ctx, nil); err != nil {
		b.Fatal(err)
	}
	tpl.Close(ctx)

	dir := b.TempDir()
	for v := 1; v <= n; v++ {
		body := fmt.Sprintf("create table t%04d (id bigint primary key, v text);\ncomment on table t%04d is 'migration %d';\n", v, v, v)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%04d_t%04d.sql", v, v)), []byte(body), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	ms, err := pgmig.LoadDir(dir, nil)
	if err != nil {
		b.Fatal(err)
	}
	script, err := pgmig.Bundle(ms, nil)
	if err != nil {
		b.Fatal(err)
	}
	release := filepath.Join(b.TempDir(), "release.sql")
	if err := os.WriteFile(release, []byte(script), 0o644); err != nil {
		b.Fatal(err)
	}
	cli := buildCLI(b, b.TempDir())
	psql := filepath.Join(srv.BinDir(), "psql")

	timed := func(db string, cmd *exec.Cmd) time.Duration {
		if _, err := admin.Exec(ctx, fmt.Sprintf("create database %s template engine_tpl", db)); err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		out, err := cmd.CombinedOutput()
		d := time.Since(start)
		if err != nil {
			b.Fatalf("%v: %v\n%s", cmd.Args, err, out)
		}
		var count int
		c, err := pgx.Connect(ctx, srv.URL(db))
		if err != nil {
			b.Fatal(err)
		}
		if err := c.QueryRow(ctx, "select count(*) from pgmig.history").Scan(&count); err != nil || count != n {
			b.Fatalf("%s: %d migrations applied (%v), want %d", db, count, err, n)
		}
		c.Close(ctx)
		if _, err := admin.Exec(ctx, "drop database "+db); err != nil {
			b.Fatal(err)
		}
		return d
	}
	var bundle, push []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		runBundle := func() {
			bundle = append(bundle, timed("bundle_run", exec.Command(psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", srv.URL("bundle_run"), "-f", release)))
		}
		runPush := func() {
			cmd := exec.Command(cli, "push", "--dir", dir, "--quiet")
			cmd.Env = append(os.Environ(), "DATABASE_URL="+srv.URL("push_run"))
			push = append(push, timed("push_run", cmd))
		}
		// Alternate which goes first: the second runs right after the first's
		// database was dropped, which may cost it.
		if i%2 == 0 {
			runBundle()
			runPush()
		} else {
			runPush()
			runBundle()
		}
	}
	b.StopTimer()
	mb, mp := median(bundle), median(push)
	b.ReportMetric(float64(mb.Milliseconds()), "bundle-ms")
	b.ReportMetric(float64(mp.Milliseconds()), "push-ms")
	b.ReportMetric(float64(mb)/float64(mp), "bundle/push")
	b.Logf("%d migrations, %d runs each: psql -f release.sql median %v %v; pgmig push median %v %v", n, b.N, mb, durations(bundle), mp, durations(push))
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func durations(ds []time.Duration) string {
	parts := make([]string, len(ds))
	for i, d := range ds {
		parts[i] = d.Round(time.Millisecond).String()
	}
	return "[" + strings.Join(parts, " ") + "]"
}
