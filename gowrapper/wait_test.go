package pgmig_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	pgmig "github.com/pgmig/pgmig/gowrapper"
	"github.com/pgmig/pgmig/tests/pgtest"
)

var threeMigrations = map[string]string{
	"001_a.sql": "create table a (i int);\n",
	"002_b.sql": "create table b (i int);\n",
	"003_c.sql": "create table c (i int);\n",
}

// waitFor runs Wait in the background; the result arrives on the channel.
func waitFor(ctx context.Context, client *pgmig.Client, ms []*pgmig.Migration, opts *pgmig.WaitOpts) <-chan waitOutcome {
	done := make(chan waitOutcome, 1)
	start := time.Now()
	go func() {
		res, err := client.Wait(ctx, ms, opts)
		done <- waitOutcome{res, err, time.Now(), time.Since(start)}
	}()
	return done
}

type waitOutcome struct {
	res  *pgmig.WaitResult
	err  error
	at   time.Time
	took time.Duration
}

// TestWaitListens: on a connection of its own, Wait listens for the
// engine's notification and returns as soon as the push that applies the
// migrations commits, long before its next poll would have.
func TestWaitListens(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db := pgtest.NewDB(t)
	ms := load(t, threeMigrations)
	var states []pgmig.WaitState
	done := waitFor(ctx, connect(t, db.URL, nil), ms, &pgmig.WaitOpts{PollInterval: 20 * time.Second,
		OnWaiting: func(s pgmig.WaitState) { states = append(states, s) }})
	time.Sleep(500 * time.Millisecond)
	pushed := time.Now()
	if _, err := connect(t, db.URL, nil).Push(ctx, ms, nil); err != nil {
		t.Fatal(err)
	}
	var w waitOutcome
	select {
	case w = <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("Wait did not return after the push: the notification did not end its 20s poll")
	}
	if w.err != nil {
		t.Fatal(w.err)
	}
	if w.res.Ready != "digest" || !w.res.Listened || w.res.Version != 3 || w.res.Polls != 2 {
		t.Errorf("result: %+v", w.res)
	}
	t.Logf("Wait returned %v after the push returned", w.at.Sub(pushed))
	if len(states) != 1 || !states[0].EngineInstalled || states[0].Pending != 3 || states[0].Version != 0 {
		t.Errorf("waiting states: %+v", states)
	}
}

// TestWaitPolls: without LISTEN (as behind a transaction-pooling proxy)
// Wait polls, and returns at the first poll after the push.
func TestWaitPolls(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db := pgtest.NewDB(t)
	ms := load(t, threeMigrations)
	done := waitFor(ctx, connect(t, db.URL, nil), ms, &pgmig.WaitOpts{PollInterval: 200 * time.Millisecond, Listen: pgmig.ListenOff})
	time.Sleep(700 * time.Millisecond)
	if _, err := connect(t, db.URL, nil).Push(ctx, ms, nil); err != nil {
		t.Fatal(err)
	}
	w := <-done
	if w.err != nil || w.res.Ready != "digest" || w.res.Listened || w.res.Polls < 3 {
		t.Fatalf("%+v %v", w.res, w.err)
	}
}

// TestWaitTimesOut: a database without the engine yet is not ready (a
// deploy job installs it as it pushes): Wait keeps waiting, then says what
// it saw.
func TestWaitTimesOut(t *testing.T) {
	t.Parallel()
	db := pgtest.NewEmptyDB(t)
	ms := load(t, threeMigrations)
	ctx, cancel := context.WithTimeout(context.Background(), 800*time.Millisecond)
	defer cancel()
	_, err := connect(t, db.URL, nil).Wait(ctx, ms, &pgmig.WaitOpts{PollInterval: 100 * time.Millisecond})
	var te *pgmig.WaitTimeoutError
	if !errors.Is(err, pgmig.ErrWaitTimeout) || !errors.As(err, &te) || te.State.EngineInstalled {
		t.Fatalf("want a *WaitTimeoutError with the engine not installed, got %v", err)
	}

	// Installed, one of three applied: still waiting, and it says so.
	client := connect(t, db.URL, nil)
	if _, err := client.Install(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Push(context.Background(), ms[:1], nil); err != nil {
		t.Fatal(err)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 800*time.Millisecond)
	defer cancel2()
	_, err = client.Wait(ctx2, ms, &pgmig.WaitOpts{PollInterval: 100 * time.Millisecond})
	if !errors.As(err, &te) || !te.State.EngineInstalled || te.State.Pending != 2 || te.State.Version != 1 {
		t.Fatalf("want a timeout with 2 pending at version 1, got %v", err)
	}
}

// TestWaitDriftFailsFast: drift will not go away by waiting.
func TestWaitDriftFailsFast(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	client := connect(t, db.URL, nil)
	if _, err := client.Push(context.Background(), load(t, threeMigrations), nil); err != nil {
		t.Fatal(err)
	}
	edited := load(t, map[string]string{
		"001_a.sql": "create table a (i bigint);\n",
		"002_b.sql": "create table b (i int);\n",
		"003_c.sql": "create table c (i int);\n",
		"004_d.sql": "create table d (i int);\n",
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	_, err := client.Wait(ctx, edited, nil)
	var drift *pgmig.DriftError
	if !errors.As(err, &drift) || !errors.Is(err, pgmig.ErrDrift) || !slices.Equal(drift.Changed, []int64{1}) {
		t.Fatalf("want a *DriftError naming version 1, got %v", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("drift took %v to report", took)
	}
}

// TestWaitAheadAndVersion: a database ahead of the files (a newer release
// migrated it) is ready for them; --version waits for a version only.
func TestWaitAheadAndVersion(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db := pgtest.NewDB(t)
	client := connect(t, db.URL, nil)
	ms := load(t, threeMigrations)
	if _, err := client.Push(ctx, ms, nil); err != nil {
		t.Fatal(err)
	}
	res, err := client.Wait(ctx, ms[:2], nil)
	if err != nil || res.Ready != "ahead" || !slices.Equal(res.Ahead, []int64{3}) || res.Polls != 1 {
		t.Fatalf("ahead: %+v %v", res, err)
	}
	if res, err := client.Wait(ctx, nil, &pgmig.WaitOpts{Version: 2}); err != nil || res.Ready != "version" || res.Version != 3 {
		t.Fatalf("version 2: %+v %v", res, err)
	}
	short, cancel2 := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel2()
	_, err = client.Wait(short, nil, &pgmig.WaitOpts{Version: 4, PollInterval: 100 * time.Millisecond})
	var te *pgmig.WaitTimeoutError
	if !errors.As(err, &te) || te.State.Version != 3 || te.Version != 4 {
		t.Fatalf("version 4: %v", err)
	}
}
