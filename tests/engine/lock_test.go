package engine_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgmig/pgmig/tests/pgtest"
)

// TestLockTimeoutNamesHolder: while another session holds the history lock,
// migrate_apply with lock_timeout gives up with PM003 and says who holds it
// (design problem 8).
func TestLockTimeoutNamesHolder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)

	holder := pgtest.Connect(t, pgtest.SetParam(db.URL, "application_name", "holder-app"))
	var holderPid int
	if err := holder.QueryRow(ctx, "select pg_backend_pid()").Scan(&holderPid); err != nil {
		t.Fatal(err)
	}
	tx, err := holder.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "lock table pgmig.history in exclusive mode"); err != nil {
		t.Fatal(err)
	}

	conn := db.Conn(t)
	start := time.Now()
	_, err = apply(ctx, conn, tableBatch(3), "lock_timeout => '200ms'")
	waited := time.Since(start)
	pgErr := pgError(t, err, "PM003")
	if !strings.Contains(pgErr.Detail, strconv.Itoa(holderPid)) || !strings.Contains(pgErr.Detail, "holder-app") {
		t.Errorf("PM003 DETAIL should name the holder (pid %d, holder-app): %s", holderPid, describe(err))
	}
	if waited < 150*time.Millisecond || waited > 5*time.Second {
		t.Errorf("gave up after %v, want about 200ms", waited)
	}

	// The lock is free again: the same call goes through.
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	rows := mustApply(t, conn, tableBatch(3), "lock_timeout => '200ms'")
	if got := outcomes(rows)["applied"]; got != 3 {
		t.Errorf("after the holder left: %v, want 3 applied", outcomes(rows))
	}
}
