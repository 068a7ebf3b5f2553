package engine_test

import (
	"context"
	"testing"
	"time"

	"github.com/pgmig/pgmig/tests/pgtest"
)

// TestStandbyRefused: on a streaming standby migrate_apply refuses with PM004 (the server is
// in recovery) instead of failing somewhere inside; status still works there.
func TestStandbyRefused(t *testing.T) {
	t.Parallel()
	srv := pgtest.Server(t)
	if srv.Kind() != "local" {
		t.Skipf("a standby needs the local backend's binaries; backend %q (CI uses local)", srv.Kind())
	}
	db := pgtest.NewDB(t)
	mustApply(t, db.Conn(t), tableBatch(2), "")

	standby := pgtest.Connect(t, srv.StartStandby(t, db.Name))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var inRecovery bool
	if err := standby.QueryRow(ctx, "select pg_is_in_recovery()").Scan(&inRecovery); err != nil || !inRecovery {
		t.Fatalf("standby not in recovery: %v %v", inRecovery, err)
	}
	_, err := apply(ctx, standby, tableBatch(3), "")
	pgError(t, err, "PM004")
	if n := count(t, standby, "select count(*) from migrate_status() where state = 'applied'"); n != 2 {
		t.Errorf("status on the standby shows %d applied, want 2", n)
	}
}
