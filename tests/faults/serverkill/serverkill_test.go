// Package serverkill_test stops the test server the way a crash would
// (pg_ctl stop -m immediate) in the middle of a 500-migration push, starts
// it again (crash recovery), and checks that the database holds all or none
// of the batch and that the next push completes (I2).
//
// It is a package of its own because it stops the server every other test
// of its binary would share: this binary runs this one test, never in
// parallel with anything.
package serverkill_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pgmig/pgmig/tests/faults/workload"
	"github.com/pgmig/pgmig/tests/pgtest"
)

var cli string

func TestMain(m *testing.M) { workload.Main(m, &cli) }

const batchSize = 500

func TestServerStoppedMidBatch(t *testing.T) {
	ctx := context.Background()
	c := pgtest.Server(t)
	if c.Kind() != "local" {
		t.Fatalf("this test stops and restarts the server, which needs the harness's local cluster; this run uses the %q backend "+
			"(unset %s, and make sure no Docker engine answers, or set DOCKER_HOST to nothing reachable)", c.Kind(), pgtest.EnvDatabaseURL)
	}
	dir := t.TempDir()
	workload.WriteDir(t, dir, batchSize)

	var full time.Duration
	t.Run("calibrate", func(t *testing.T) {
		db := pgtest.NewDB(t)
		r := workload.Run(t, cli, []string{"DATABASE_URL=" + pgtest.SetParam(db.URL, "options", "-csynchronous_commit=on")}, workload.PushArgs(dir, "--quiet")...)
		if r.Code != 0 {
			t.Fatalf("calibration push: %v", r)
		}
		full = r.Took
		t.Logf("an undisturbed push of %d migrations takes %v", batchSize, full.Round(time.Millisecond))
	})
	if full == 0 {
		t.FailNow()
	}

	trials := workload.Trials(3, 51)
	var none, all int
	var recovery time.Duration
	for i := range trials {
		// The moment rotates between a random time over the push and a
		// quarter more, a random number of applied migrations (certainly
		// mid-apply), and right after the push reported success (the
		// commit must survive the crash).
		mode := []string{"time", "progress", "done"}[i%3]
		t.Run(fmt.Sprintf("trial%02d_%s", i+1, mode), func(t *testing.T) {
			db := pgtest.NewDB(t)
			// The harness runs with synchronous_commit=off, which may lose
			// the last acknowledged commits in a crash; the push asks for
			// on, so that a push reported successful must survive the stop.
			env := []string{"DATABASE_URL=" + pgtest.SetParam(db.URL, "options", "-csynchronous_commit=on")}
			run := workload.Start(t, cli, env, workload.PushArgs(dir)...)
			var when string
			var alive bool
			if mode == "time" {
				after := workload.RandomDuration(full * 5 / 4)
				alive = run.AfterTime(after)
				when = after.Round(time.Millisecond).String()
			} else {
				k := 1 + int(workload.RandomDuration(batchSize))
				if mode == "done" {
					k = batchSize + 1 // never reached: wait for the exit
				}
				alive = run.AfterProgress(k)
				when = fmt.Sprintf("migration %d of %d", k, batchSize)
				if mode == "done" {
					when = "the push's exit"
				}
			}
			stopErr := c.StopImmediate()
			exited := make(chan struct{})
			var code int
			var stderr string
			go func() { code, stderr = run.Wait(); close(exited) }()
			select {
			case <-exited:
			case <-time.After(30 * time.Second):
				run.Kill()
				<-exited
				t.Error("the CLI did not notice the server was gone within 30s")
			}
			began := time.Now()
			if err := c.Start(); err != nil {
				t.Fatalf("restarting the server: %v (stop: %v)", err, stopErr)
			}
			recovery += time.Since(began)
			if stopErr != nil {
				t.Fatal(stopErr)
			}
			conn := db.Conn(t)
			got := workload.AllOrNone(t, ctx, conn, batchSize)
			if got {
				all++
			} else {
				none++
			}
			t.Logf("server stopped at %s (push finished first: %v; exit %d %s): all=%v", when, !alive, code, strings.TrimSpace(stderr), got)
			if !alive && code == 0 && !got {
				t.Fatalf("the push reported success before the server stopped, but after recovery nothing is there")
			}
			if mode == "done" && code != 0 {
				t.Fatalf("the undisturbed push failed (exit %d): %s", code, stderr)
			}

			r := workload.Run(t, cli, env, workload.PushArgs(dir, "--quiet")...)
			if r.Code != 0 {
				t.Fatalf("the push after the restart failed: %v", r)
			}
			workload.ExactlyOnce(t, ctx, conn, batchSize)
		})
	}
	t.Logf("%d trials: %d left nothing, %d left everything; restart with crash recovery took %v on average",
		trials, none, all, (recovery / time.Duration(max(1, trials))).Round(time.Millisecond))
}
