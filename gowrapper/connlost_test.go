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

// TestPushConnectionLostMidCall: the push's session ends while the engine
// runs (context cancelled, backend terminated). The engine commits by
// itself, so the client cannot know how far it got: the error is a
// *ConnectionLostError with an unknown outcome that says re-running is
// safe; the one transaction of this batch was interrupted, so nothing is
// applied, and pushing again applies everything.
func TestPushConnectionLostMidCall(t *testing.T) {
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
			if !lost.OutcomeUnknown || !errors.Is(err, pgmig.ErrOutcomeUnknown) {
				t.Errorf("the engine was running and commits by itself, but the outcome is reported known: %v", err)
			}
			if lost.Err == nil || !strings.Contains(err.Error(), "connection lost") {
				t.Errorf("message: %v", err)
			}
			var n int
			if err := admin.QueryRow(context.Background(), "select count(*) from pgmig.history").Scan(&n); err != nil || n != 0 {
				t.Fatalf("history rows after the lost push: %d (%v)", n, err)
			}
			// The server noticed: no session of the lost push holds or waits for the lock.
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
				var busy bool
				if err := admin.QueryRow(context.Background(), `select exists (select from pg_locks
					where relation = 'pgmig.history'::regclass and pid <> pg_backend_pid())`).Scan(&busy); err != nil {
					t.Fatal(err)
				}
				if !busy {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("the lost push's session still holds the history lock")
				}
			}
			// 002 was not recorded: a faster version of it is no drift.
			res, err := connect(t, db.URL, nil).Push(context.Background(), load(t, map[string]string{
				"001_a.sql": files["001_a.sql"], "002_slow.sql": "select pg_sleep(0);\n"}), nil)
			if err != nil || res.Applied != 2 {
				t.Fatalf("push after the lost one: %+v, %v", res, err)
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
