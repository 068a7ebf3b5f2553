package pgmig_test

import (
	"context"
	"fmt"
	"testing"

	pgmig "github.com/pgmig/pgmig/gowrapper"
	"github.com/pgmig/pgmig/tests/pgtest"
)

// BenchmarkNoopPush measures a push that finds nothing pending, with 1000
// migrations applied: with the lock-free manifest precheck (the default)
// and without it (full SQL uploaded, history lock taken), next to a bare
// `select 1` on the same connection.
//
//	go test ./gowrapper -run '^$' -bench NoopPush
func BenchmarkNoopPush(b *testing.B) {
	ctx := context.Background()
	db := pgtest.NewDB(b)
	files := map[string]string{}
	for i := 1; i <= 1000; i++ {
		files[fmt.Sprintf("%04d_table_%d.sql", i, i)] = fmt.Sprintf(
			"-- migration %d\ncreate table t_%d (\n    id bigint primary key,\n    payload text not null default ''\n);\ncomment on table t_%d is 'benchmark table %d';\n", i, i, i, i)
	}
	ms := loadFiles(b, files)
	client, err := pgmig.Connect(ctx, db.URL, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close(ctx)
	for _, target := range []int64{250, 500, 750, 1000} { // stay within the lock table
		if _, err := client.Push(ctx, ms, &pgmig.PushOpts{TargetVersion: target}); err != nil {
			b.Fatal(err)
		}
	}
	batch, _ := pgmig.Batch(ms)
	manifest, _ := pgmig.Manifest(ms)
	b.Logf("batch %d bytes, manifest %d bytes", len(batch), len(manifest))

	b.Run("select1", func(b *testing.B) {
		for b.Loop() {
			if _, err := client.Conn().Exec(ctx, "select 1"); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, bc := range []struct {
		name   string
		config *pgmig.Config
	}{{"precheck", nil}, {"no-precheck", &pgmig.Config{DisablePrecheck: true}}} {
		b.Run(bc.name, func(b *testing.B) {
			c := pgmig.New(client.Conn(), bc.config)
			for b.Loop() {
				res, err := c.Push(ctx, ms, nil)
				if err != nil || res.Applied != 0 {
					b.Fatal(res, err)
				}
			}
		})
	}
}
