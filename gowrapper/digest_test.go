package pgmig_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"

	pgmig "github.com/pgmig/pgmig/gowrapper"
	"github.com/pgmig/pgmig/tests/pgtest"
)

// TestHistoryDigestMatchesEngine: the no-op fast path compares HistoryDigest with the
// engine's migrate_history_digest(); they must agree exactly when the files are applied,
// and disagree as soon as one file differs.
func TestHistoryDigestMatchesEngine(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	files := map[string]string{}
	for i, sql := range []string{"create table a (id int)", "create table b (id int)", "create table c (id int)",
		"create table d (id int)", "create table e (id int)", "create table f (id int)", "create table g (id int)",
		"create table h (id int)", "create table i (id int)", "create table j (id int)", "create table k (id int)"} {
		files[fileName(i+1)] = sql
	}
	ms := load(t, files)
	client := pgmig.New(db.Conn(t), nil)
	if _, err := client.Push(ctx, ms, nil); err != nil {
		t.Fatal(err)
	}
	var engine string
	if err := db.Conn(t).QueryRow(ctx, "select migrate_history_digest()").Scan(&engine); err != nil {
		t.Fatal(err)
	}
	if got := pgmig.HistoryDigest(ms); got != engine {
		t.Fatalf("HistoryDigest %s, engine %s", got, engine)
	}
	res, err := client.Push(ctx, ms, nil)
	if err != nil || !res.Prechecked || res.Applied != 0 || res.Version != 11 {
		t.Fatalf("no-op push: %+v, %v", res, err)
	}
	files[fileName(11)] = "create table k (id bigint)"
	if pgmig.HistoryDigest(load(t, files)) == engine {
		t.Fatal("digest ignores an edited migration")
	}
	if _, err := client.Push(ctx, load(t, files), nil); err == nil {
		t.Fatal("an edited migration got past the digest fast path")
	}
}

func fileName(v int) string { return fmt.Sprintf("%03d_m.sql", v) }

// TestPushWithHistoryDigestReadEarly: PushOpts.HistoryDigest, read with
// Client.HistoryDigest before the migrations were loaded, answers the no-op
// push without a query; a stale one changes nothing about what Push does.
func TestPushWithHistoryDigestReadEarly(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	files := map[string]string{fileName(1): "create table a (id int)", fileName(2): "create table b (id int)"}
	ms := load(t, files)

	// A client that has not checked the engine does not take a digest on trust.
	if res, err := pgmig.New(db.Conn(t), nil).Push(ctx, ms, &pgmig.PushOpts{TargetVersion: 1, HistoryDigest: pgmig.HistoryDigest(ms)}); err != nil || res.Applied != 1 {
		t.Fatalf("push with an unverified digest: %+v, %v", res, err)
	}

	client := pgmig.New(db.Conn(t), nil)
	stale, err := client.HistoryDigest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	res, err := client.Push(ctx, ms, &pgmig.PushOpts{HistoryDigest: stale})
	if err != nil || res.Applied != 1 || res.Prechecked {
		t.Fatalf("push with a stale digest: %+v, %v", res, err)
	}
	digest, err := client.HistoryDigest(ctx)
	if err != nil || digest != pgmig.HistoryDigest(ms) {
		t.Fatalf("HistoryDigest %q, %v; want %q", digest, err, pgmig.HistoryDigest(ms))
	}
	early, err := client.Push(ctx, ms, &pgmig.PushOpts{HistoryDigest: digest})
	if err != nil || !early.Prechecked || early.Applied != 0 || early.Version != 2 {
		t.Fatalf("no-op push with the digest: %+v, %v", early, err)
	}
	plain, err := client.Push(ctx, ms, nil)
	if err != nil || !reflect.DeepEqual(early.Migrations, plain.Migrations) {
		t.Fatalf("no-op push without the digest: %+v, %v; with it: %+v", plain, err, early)
	}

	files[fileName(2)] = "create table b (id bigint)"
	if _, err := client.Push(ctx, load(t, files), &pgmig.PushOpts{HistoryDigest: digest}); !errors.Is(err, pgmig.ErrDrift) {
		t.Fatalf("edited migration with the old digest: %v, want ErrDrift", err)
	}

	if _, err := pgmig.New(pgtest.NewEmptyDB(t).Conn(t), nil).HistoryDigest(ctx); !errors.Is(err, pgmig.ErrEngineNotInstalled) {
		t.Fatalf("HistoryDigest without the engine: %v", err)
	}
}
