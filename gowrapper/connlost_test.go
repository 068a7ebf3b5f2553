package pgmig_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	pgmig "github.com/pgmig/pgmig/gowrapper"
	"github.com/pgmig/pgmig/tests/pgtest"
)

// TestPushConnectionLostBeforeCommit: the push's session ends while
// migrate_apply runs (context cancelled, backend terminated). The COMMIT was
// never sent: the error is a *ConnectionLostError that does not claim an
// unknown outcome, nothing is applied, and pushing again applies everything.
func TestPushConnectionLostBeforeCommit(t *testing.T) {
	t.Parallel()
	files := map[string]string{
		"001_a.sql":    "create table a (id int);\n",
		"002_slow.sql": "select pg_sleep(30);\n",
	}
	for _, how := range []string{"cancel", "terminate"} {
		t.Run(how, func(t *testing.T) {
			t.Parallel()
			db := pgtest.NewDB(t)
			admin := db.Conn(t)
			client := connect(t, db.URL, &pgmig.Config{ClientInfo: "connlost-" + how})
			ms := load(t, files)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			watcherDone := make(chan struct{})
			go func() {
				defer close(watcherDone)
				for ctx.Err() == nil {
					var n int
					_ = admin.QueryRow(context.Background(),
						"select count(*) from pg_stat_activity where wait_event = 'PgSleep' and datname = current_database()").Scan(&n)
					if n > 0 {
						break
					}
					time.Sleep(20 * time.Millisecond)
				}
				if how == "cancel" {
					cancel()
					return
				}
				_, _ = admin.Exec(context.Background(),
					"select pg_terminate_backend(pid) from pg_stat_activity where wait_event = 'PgSleep' and datname = current_database()")
			}()
			_, err := client.Push(ctx, ms, nil)
			cancel()
			<-watcherDone // admin is not safe for concurrent use
			var lost *pgmig.ConnectionLostError
			if !errors.As(err, &lost) || !errors.Is(err, pgmig.ErrConnectionLost) {
				t.Fatalf("want a *ConnectionLostError, got %T %v", err, err)
			}
			if lost.OutcomeUnknown || errors.Is(err, pgmig.ErrOutcomeUnknown) {
				t.Errorf("COMMIT was never sent, but the outcome is reported unknown: %v", err)
			}
			if lost.Err == nil || !strings.Contains(err.Error(), "connection lost") {
				t.Errorf("message: %v", err)
			}
			var n int
			if err := admin.QueryRow(context.Background(), "select count(*) from pgmig.history").Scan(&n); err != nil || n != 0 {
				t.Fatalf("history rows after the lost push: %d (%v)", n, err)
			}
		})
	}
}

// TestPermissionDenied: a role without grants on the installed engine gets
// ErrPermissionDenied pointing at the GRANTs, never ErrEngineNotInstalled.
func TestPermissionDenied(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	role := pgtest.CreateRole(t, "")
	client := connect(t, db.URLAs(role, pgtest.RolePassword), nil)
	ms := load(t, twoMigrations)
	_, pushErr := client.Push(ctx, ms, nil)
	_, statusErr := client.Status(ctx)
	for name, err := range map[string]error{"push": pushErr, "status": statusErr} {
		if !errors.Is(err, pgmig.ErrPermissionDenied) || errors.Is(err, pgmig.ErrEngineNotInstalled) {
			t.Errorf("%s: want ErrPermissionDenied, got %v", name, err)
			continue
		}
		if !strings.Contains(err.Error(), "Privileges") || !strings.Contains(err.Error(), "42501") {
			t.Errorf("%s: the message does not point at the grants: %v", name, err)
		}
	}
}
