package pgmig

import (
	"context"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// watchdogInterval is how often the watchdog asks the engine whether the
// executor waits for its own holder.
const watchdogInterval = 500 * time.Millisecond

// watchdog guards the executor of a non-transactional migration against
// the one wait that can never end: a statement that needs a lock the
// migration's own holder has (a VACUUM of every table, a function touching
// pgmig's tables — the engine refuses the ones it can see in the text up
// front). PostgreSQL's deadlock detector cannot see the cycle, whose other
// half is the client. On a connection of its own the watchdog asks the engine
// (pgmig.nontx_blocked) a few times a second; when it answers, the watchdog
// cancels the executor's statement and keeps the engine's description. Each
// question is a short autocommit statement, so a concurrent index build waits
// for it no longer than it runs.
type watchdog struct {
	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	reason string
}

// watch starts a watchdog over the executor exec; stop it with stop.
func watch(ctx context.Context, holder, exec *pgx.Conn, scope any) *watchdog {
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	w := &watchdog{cancel: cancel, done: make(chan struct{})}
	cfg := holder.Config().Copy()
	cfg.RuntimeParams["application_name"] = "pgmig watchdog"
	pid := exec.PgConn().PID()
	go func() {
		defer close(w.done)
		var conn *pgx.Conn
		defer func() {
			if conn != nil {
				conn.Close(context.Background())
			}
		}()
		t := time.NewTicker(watchdogInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if conn == nil {
				var err error
				if conn, err = pgx.ConnectConfig(ctx, cfg); err != nil {
					conn = nil
					continue // a failed watch must not fail the migration
				}
			}
			var reason *string
			if err := conn.QueryRow(ctx, "select pgmig.nontx_blocked($1::integer, $2::text)", pgx.QueryExecModeSimpleProtocol,
				int64(pid), scope).Scan(&reason); err != nil || reason == nil {
				continue
			}
			w.mu.Lock()
			w.reason = *reason
			w.mu.Unlock()
			_ = exec.PgConn().CancelRequest(ctx)
			return
		}
	}()
	return w
}

// stop ends the watch and returns why it cancelled the statement ("" if it
// did not).
func (w *watchdog) stop() string {
	w.cancel()
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.reason
}
