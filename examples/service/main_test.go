package main

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/pgmig/pgmig/tests/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// Five replicas start at once: all succeed, the migrations are applied once.
func TestReplicasStartTogether(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	var wg sync.WaitGroup
	errs := make(chan error, 5)
	for i := 0; i < 5; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- migrate(context.Background(), db.URL, func(string, ...any) {})
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	var n int
	if err := db.Conn(t).QueryRow(context.Background(), "select count(*) from pgmig.history").Scan(&n); err != nil || n != 2 {
		t.Fatal(fmt.Sprint(n, err))
	}
}
