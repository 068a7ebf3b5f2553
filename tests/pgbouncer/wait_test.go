package pgbouncer_test

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
	"time"

	pgmig "github.com/pgmig/pgmig/gowrapper"
	"github.com/pgmig/pgmig/tests/faults/workload"
	"github.com/pgmig/pgmig/tests/pgtest"
)

// TestWaitThroughPgBouncer: `pgmig wait` through PgBouncer in transaction
// pooling returns once a push (through the same pool) applied the files. It
// polls there and does not LISTEN: a LISTEN would register on whichever
// server connection the pool lent for that one statement and stay there,
// delivering notifications to other clients. The library decides the same
// for its own pooled connection.
func TestWaitThroughPgBouncer(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := startBouncer(t, poolSize)
	db := pgtest.NewDB(t)
	dir := t.TempDir()
	workload.WriteDir(t, dir, 10)
	env := []string{"DATABASE_URL=" + b.URL(db)}

	cmd := workload.Command(cli, env, "wait", "--dir", dir, "--timeout", "60s", "--json")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	if r := workload.Run(t, cli, env, "push", "--dir", dir, "--quiet"); r.Code != 0 {
		t.Fatalf("push through pgbouncer: %v", r)
	}
	pushed := time.Now()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("wait through pgbouncer: %v\n%s\n%s", err, stdout.String(), stderr.String())
	}
	t.Logf("wait returned %v after the push", time.Since(pushed).Round(time.Millisecond))
	var res struct {
		Ready    string `json:"ready"`
		Version  int64  `json:"version"`
		Listened bool   `json:"listened"`
		Polls    int    `json:"polls"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		t.Fatalf("%v: %s", err, stdout.String())
	}
	if res.Ready != "digest" || res.Version != 10 || res.Listened || res.Polls < 2 {
		t.Errorf("wait through pgbouncer: %+v", res)
	}

	// The library on a connection through the pool: not its own session.
	client, err := pgmig.Connect(ctx, b.URL(db), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close(ctx)
	ms, err := pgmig.LoadDir(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	lres, err := client.Wait(ctx, ms, nil)
	if err != nil || lres.Listened || lres.Ready != "digest" {
		t.Fatalf("library wait through pgbouncer: %+v %v", lres, err)
	}
}
