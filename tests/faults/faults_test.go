// Package faults_test breaks pgmig pushes on purpose — the client killed
// with SIGKILL, the connection cut by a proxy, 64 pushers of three kinds at
// once — at random moments, and checks after each trial that the database
// holds the whole batch or none of it (I2), each migration exactly once
// (I1), no lock left behind, and that the next push just works.
//
// The server-kill trials live in ./serverkill: they stop the shared test
// server, so they need a test binary of their own.
//
// Trials: a handful in the default suite, 50 with PGMIG_TEST_FULL=1.
package faults_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	pgmig "github.com/pgmig/pgmig/gowrapper"
	"github.com/pgmig/pgmig/tests/faults/workload"
	"github.com/pgmig/pgmig/tests/pgtest"
)

var cli string // the pgmig binary, built once

func TestMain(m *testing.M) { workload.Main(m, &cli) }

// batchSize is the push every trial breaks: 500 migrations, each creating
// and filling a table (one to three seconds on a loaded 2-core machine).
const batchSize = 500

// calibrate pushes the batch once into a scratch database through url (a
// function of the database's URL) and returns how long the CLI took.
func calibrate(t *testing.T, dir string, urlOf func(*pgtest.DB) string) time.Duration {
	t.Helper()
	db := pgtest.NewDB(t)
	r := workload.Run(t, cli, []string{"DATABASE_URL=" + urlOf(db)}, workload.PushArgs(dir, "--quiet")...)
	if r.Code != 0 {
		t.Fatalf("calibration push: %v", r)
	}
	workload.ExactlyOnce(t, context.Background(), db.Conn(t), batchSize)
	t.Logf("an undisturbed push of %d migrations takes %v", batchSize, r.Took.Round(time.Millisecond))
	return r.Took
}

// TestClientKilledMidPush: `pgmig push` SIGKILLed at a random moment of a
// 500-migration push (a random time, or after a random number of applied
// migrations). The server aborts the dead client's transaction when
// it notices the closed socket; the database holds all or none of the
// batch, no session keeps the history lock, and the next push, unattended,
// leaves exactly the 500 migrations.
func TestClientKilledMidPush(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	workload.WriteDir(t, dir, batchSize)
	full := calibrate(t, dir, func(db *pgtest.DB) string { return db.URL })

	trials := workload.Trials(4, 50)
	var none, all, finished int
	for i := range trials {
		// Two ways to pick the moment, alternating: uniform over the length
		// of an undisturbed push and a quarter more (before the connection,
		// during the upload, mid-apply, after the commit, after the exit),
		// and after a uniformly random number of progress lines (certainly
		// mid-apply, whatever the machine's load does to the timing).
		mode := []string{"time", "progress"}[i%2]
		t.Run(fmt.Sprintf("trial%02d_%s", i+1, mode), func(t *testing.T) {
			db := pgtest.NewDB(t)
			conn := db.Conn(t)
			env := []string{"DATABASE_URL=" + db.URL}
			run := workload.Start(t, cli, env, workload.PushArgs(dir)...)
			var when string
			var alive bool
			if mode == "time" {
				after := workload.RandomDuration(full * 5 / 4)
				alive = run.AfterTime(after)
				when = after.Round(time.Millisecond).String()
			} else {
				k := 1 + int(workload.RandomDuration(batchSize))
				alive = run.AfterProgress(k)
				when = fmt.Sprintf("migration %d of %d", k, batchSize)
			}
			if alive {
				run.Kill()
			} else {
				finished++
			}
			code, stderr := run.Wait()
			settle := workload.WaitSettled(t, ctx, conn, 30*time.Second)
			got := workload.AllOrNone(t, ctx, conn, batchSize)
			if got {
				all++
			} else {
				none++
			}
			t.Logf("killed at %s (finished first: %v, exit %d %s): all=%v; server released the lock %v later",
				when, !alive, code, strings.TrimSpace(stderr), got, settle.Round(time.Millisecond))

			r := workload.Run(t, cli, env, workload.PushArgs(dir, "--quiet")...)
			if r.Code != 0 {
				t.Fatalf("the push after the kill failed: %v", r)
			}
			workload.ExactlyOnce(t, ctx, conn, batchSize)
		})
	}
	t.Logf("%d trials: %d left nothing, %d left everything (%d of them finished before the kill)", trials, none, all, finished)
}

// TestConnectionCutMidCall: a proxy between the CLI and the server cuts
// every connection at a random moment, after a random number of bytes from
// the server, or — the case a client can never resolve by itself — right
// after the server committed and before the client hears of it. The
// client fails; the server may or may not have committed; the database
// holds all or none; re-running the push converges to exactly once. The
// CLI must tell the operator that running the push again is safe, and,
// when the server may have committed, that the outcome is unknown.
func TestConnectionCutMidCall(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := pgtest.Server(t)
	proxy := workload.NewProxy(t, net.JoinHostPort(c.Host(), strconv.Itoa(c.Port())))
	dir := t.TempDir()
	workload.WriteDir(t, dir, batchSize)

	proxy.ArmBytes(0)
	full := calibrate(t, dir, func(db *pgtest.DB) string { return proxy.URL(db.URL) })
	fullBytes := proxy.ServerBytes()
	t.Logf("the server sends %d bytes during an undisturbed push", fullBytes)

	trials := workload.Trials(3, 50)
	var unknownCommitted, failedNone, succeeded int
	for i := range trials {
		mode := []string{"commit-ack", "time", "bytes"}[i%3]
		t.Run(fmt.Sprintf("trial%02d_%s", i+1, mode), func(t *testing.T) {
			db := pgtest.NewDB(t)
			conn := db.Conn(t)
			env := []string{"DATABASE_URL=" + proxy.URL(db.URL)}
			cmd := workload.Command(cli, env, workload.PushArgs(dir)...)
			var stderr strings.Builder
			cmd.Stderr = &stderr
			cutsBefore := proxy.Cuts()
			proxy.ResetApplySent()
			switch mode {
			case "commit-ack":
				proxy.ArmCommitAck()
			case "bytes":
				proxy.ArmBytes(1 + int64(workload.RandomDuration(time.Duration(fullBytes))))
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			var err error
			if mode == "time" {
				select {
				case err = <-done:
				case <-time.After(workload.RandomDuration(full)):
					proxy.Cut()
					err = <-done
				}
			} else {
				err = <-done
			}
			proxy.ArmBytes(0)
			cut := proxy.Cuts() > cutsBefore
			inFlight := cut && proxy.ApplySent()
			workload.WaitSettled(t, ctx, conn, 30*time.Second)
			got := workload.AllOrNone(t, ctx, conn, batchSize)
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			t.Logf("cut=%v (migrate_apply sent: %v) exit=%d all=%v stderr: %s", cut, inFlight, code, got, strings.TrimSpace(stderr.String()))
			switch {
			case code == 0 && !got:
				t.Fatalf("the push reported success but nothing is applied")
			case code == 0:
				succeeded++
			case got:
				unknownCommitted++
			default:
				failedNone++
			}
			if mode == "commit-ack" && (code == 0 || !got) {
				t.Fatalf("cut after the commit: exit %d, all applied %v; want a failed push and a committed batch", code, got)
			}
			if code != 0 && inFlight {
				// The connection died with migrate_apply in flight. The
				// operator must learn that running the push again is safe,
				// and — when the server did commit — that the outcome is
				// unknown to pgmig: never "nothing was applied". (A cut
				// before the COMMIT was sent may truthfully say that
				// nothing was applied: the server rolls back an open
				// transaction whose connection is gone.)
				msg := strings.ToLower(stderr.String())
				if !strings.Contains(msg, "safe") {
					t.Errorf("after a lost connection the CLI (exit %d) does not say that re-running is safe:\n%s", code, stderr.String())
				}
				if got && !strings.Contains(msg, "unknown") {
					t.Errorf("the server committed, but the CLI (exit %d) does not say that the outcome is unknown:\n%s", code, stderr.String())
				}
			}

			r := workload.Run(t, cli, env, workload.PushArgs(dir, "--quiet")...)
			if r.Code != 0 {
				t.Fatalf("re-running the push after the cut failed: %v", r)
			}
			workload.ExactlyOnce(t, ctx, conn, batchSize)
		})
	}
	t.Logf("%d trials: %d failed and committed (outcome unknown to the client), %d failed and left nothing, %d succeeded before the cut",
		trials, unknownCommitted, failedNone, succeeded)
}

// TestMixedConcurrentPushers: 64 pushers at once on one fresh database —
// 21 CLI processes, 21 library clients (each with its own connection) and
// 22 psql processes calling migrate_apply with the same batch. Every call
// succeeds; between them they apply each migration exactly once.
func TestMixedConcurrentPushers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const n = 100
	dir := t.TempDir()
	workload.WriteDir(t, dir, n)
	migrations, err := pgmig.LoadDir(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	batch, err := pgmig.Batch(migrations)
	if err != nil {
		t.Fatal(err)
	}
	db := pgtest.NewDB(t)
	psql := pgtest.Server(t).PsqlPath()
	if psql == "" {
		t.Fatal("psql not found: apt-get install postgresql-client")
	}

	const cliN, libN, psqlN = 21, 21, 22
	type outcome struct {
		who     string
		applied int
		err     error
	}
	results := make(chan outcome, cliN+libN+psqlN)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range cliN {
		wg.Go(func() {
			<-start
			who := fmt.Sprintf("cli-%02d", i)
			r := workload.Run(t, cli, []string{"DATABASE_URL=" + pgtest.SetParam(db.URL, "application_name", who)}, "push", "--dir", dir, "--json")
			if r.Code != 0 {
				results <- outcome{who: who, err: fmt.Errorf("%v", r)}
				return
			}
			var res struct{ Applied int }
			if err := json.Unmarshal([]byte(r.Stdout), &res); err != nil {
				results <- outcome{who: who, err: fmt.Errorf("reading --json output: %v\n%s", err, r.Stdout)}
				return
			}
			results <- outcome{who: who, applied: res.Applied}
		})
	}
	for i := range libN {
		wg.Go(func() {
			<-start
			who := fmt.Sprintf("lib-%02d", i)
			client, err := pgmig.Connect(ctx, pgtest.SetParam(db.URL, "application_name", who), nil)
			if err != nil {
				results <- outcome{who: who, err: err}
				return
			}
			defer client.Close(ctx)
			res, err := client.Push(ctx, migrations, nil)
			if err != nil {
				results <- outcome{who: who, err: err}
				return
			}
			results <- outcome{who: who, applied: res.Applied}
		})
	}
	sql := workload.ApplySQL(batch)
	for i := range psqlN {
		wg.Go(func() {
			<-start
			who := fmt.Sprintf("psql-%02d", i)
			out, err := workload.Psql(psql, pgtest.SetParam(db.URL, "application_name", who), sql)
			if err != nil {
				results <- outcome{who: who, err: fmt.Errorf("%v\n%s", err, out)}
				return
			}
			applied, err := strconv.Atoi(strings.TrimSpace(out)) // -tA: just the count
			results <- outcome{who: who, applied: applied, err: err}
		})
	}
	began := time.Now()
	close(start)
	wg.Wait()
	took := time.Since(began)
	close(results)

	total, appliers := 0, []string{}
	for r := range results {
		if r.err != nil {
			t.Errorf("%s failed: %v", r.who, r.err)
			continue
		}
		if r.applied > 0 {
			appliers = append(appliers, fmt.Sprintf("%s applied %d", r.who, r.applied))
		}
		total += r.applied
	}
	if total != n {
		t.Errorf("the 64 pushers applied %d migrations between them, want exactly %d: %v", total, n, appliers)
	}
	workload.ExactlyOnce(t, ctx, db.Conn(t), n)
	t.Logf("64 mixed pushers, %d migrations: all succeeded in %v; %v", n, took.Round(time.Millisecond), appliers)
}
