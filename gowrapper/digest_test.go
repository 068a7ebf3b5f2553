package pgmig_test

import (
	"context"
	"fmt"
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
