package pgmig

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Waiting until the schema is ready (pgmig wait, docs/deploy.md): an
// application replica starting next to a deploy job that migrates waits
// until the database holds its migrations, without migrating itself. The
// answer is the engine's lock-free history digest, polled; where the
// connection is a session of its own, LISTEN on the channel the engine
// notifies when it records history (NOTIFY pgmig_history, sent at commit)
// ends each poll's pause at once. Behind a transaction-pooling proxy
// (PgBouncer) LISTEN would register on whichever server connection the pool
// lent for that statement and stay there for other clients: Wait only polls
// then.

// ErrWaitTimeout: the database did not hold the migrations before the
// wait's deadline (the context's). Matched by the error Wait returns then.
var ErrWaitTimeout = errors.New("timed out waiting for the migrations to be applied")

// ListenMode says whether Wait uses LISTEN/NOTIFY.
type ListenMode string

const (
	// ListenAuto (the default): only on a connection that is a session of
	// its own (the server sees this client's own address and port, or
	// Unix socket), not through a pooler.
	ListenAuto ListenMode = ""
	ListenOn   ListenMode = "on"
	ListenOff  ListenMode = "off"
)

// WaitOpts configures Wait. A nil *WaitOpts means defaults.
type WaitOpts struct {
	// Version, when not 0: wait until the newest applied version is at
	// least Version, instead of until exactly the migrations are applied.
	Version int64
	// PollInterval is the pause between two looks at the history (default
	// 1s); a notification ends it early.
	PollInterval time.Duration
	// Listen: whether to LISTEN for the engine's notifications (default
	// ListenAuto).
	Listen ListenMode
	// OnWaiting, if set, is called after the first look that found the
	// database not ready, and again whenever what it found changes.
	OnWaiting func(WaitState)
}

// WaitState is what one look at the database found.
type WaitState struct {
	// EngineInstalled is false while pgmig is not installed yet (a deploy
	// job installs it as it pushes): Wait keeps waiting.
	EngineInstalled bool `json:"engine_installed"`
	// Version is the newest applied version (0: none).
	Version int64 `json:"version"`
	// Pending is how many of the migrations are not applied yet (digest
	// mode, when known).
	Pending int `json:"pending"`
}

// WaitResult is how a wait ended.
type WaitResult struct {
	// Ready says what made the database ready: "digest" (exactly these
	// migrations are applied), "ahead" (all of them are applied, and newer
	// ones a newer release applied: not an error, as for Push) or
	// "version" (WaitOpts.Version reached).
	Ready   string `json:"ready"`
	Version int64  `json:"version"`
	// Ahead: the applied versions newer than every migration ("ahead").
	Ahead []int64 `json:"ahead,omitempty"`
	// Waited is how long it took; Polls how many looks it took.
	Waited time.Duration `json:"waited_ns"`
	Polls  int           `json:"polls"`
	// Listened: Wait listened for the engine's notifications (see
	// WaitOpts.Listen).
	Listened bool `json:"listened"`
}

// WaitTimeoutError is a wait that ran out of time: what the last look found.
// It matches ErrWaitTimeout.
type WaitTimeoutError struct {
	State   WaitState
	Version int64 // WaitOpts.Version (0: digest mode)
	Waited  time.Duration
	// Unreachable, for a caller that kept trying to connect (pgmig wait):
	// the database could not be reached at all; the last connection error.
	Unreachable error
	Err         error // the context's error
}

func (e *WaitTimeoutError) Error() string {
	var what string
	switch {
	case e.Unreachable != nil:
		what = fmt.Sprintf("the database could not be reached: %v", e.Unreachable)
	case !e.State.EngineInstalled:
		what = "the pgmig engine is not installed in the database yet"
	case e.Version > 0:
		what = fmt.Sprintf("the database is at version %d, waiting for %d", e.State.Version, e.Version)
	default:
		what = fmt.Sprintf("%d migration(s) still pending; the database is at version %d", e.State.Pending, e.State.Version)
	}
	return fmt.Sprintf("%v after %s: %s", ErrWaitTimeout, e.Waited.Round(time.Millisecond), what)
}

func (e *WaitTimeoutError) Is(target error) bool { return target == ErrWaitTimeout }
func (e *WaitTimeoutError) Unwrap() error        { return e.Err }

// Wait returns as soon as the database holds the migrations: exactly these
// (the engine's history digest equals HistoryDigest(migrations)), or all of
// them and newer ones (the database is ahead, Ready "ahead"), or, with
// opts.Version, any history whose newest version is at least that (the
// migrations are then not needed). It waits until ctx is done, then
// returns a *WaitTimeoutError (ErrWaitTimeout). Drift — an applied
// migration changed, renamed or missing from the migrations, or a pending
// one older than the newest applied — will not go away by waiting: Wait
// returns a *DriftError (ErrDrift) at once. It takes no lock and changes
// nothing; a database without the engine yet counts as not ready.
func (c *Client) Wait(ctx context.Context, migrations []*Migration, opts *WaitOpts) (*WaitResult, error) {
	if opts == nil {
		opts = &WaitOpts{}
	}
	if opts.Version == 0 && len(migrations) == 0 {
		return nil, fmt.Errorf("waiting for migrations: %w", ErrNoMigrations)
	}
	poll := opts.PollInterval
	if poll <= 0 {
		poll = time.Second
	}
	start := time.Now()
	conn, release, err := c.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer release()

	w := &waiter{conn: conn, migrations: migrations, version: opts.Version, digest: HistoryDigest(migrations), scope: c.scope()}
	if opts.Version == 0 {
		if w.manifest, err = Manifest(migrations); err != nil {
			return nil, fmt.Errorf("encoding the manifest: %w", err)
		}
	}
	res := &WaitResult{}
	switch opts.Listen {
	case ListenOn:
		res.Listened = true
	case ListenAuto:
		res.Listened = ownSession(ctx, conn)
	}
	if res.Listened {
		if _, err := conn.Exec(ctx, "listen pgmig_history", pgx.QueryExecModeSimpleProtocol); err != nil {
			return nil, fmt.Errorf("waiting for migrations: %w", err)
		}
		// A pooled connection goes back without it.
		defer conn.Exec(context.WithoutCancel(ctx), "unlisten pgmig_history", pgx.QueryExecModeSimpleProtocol)
	}

	var last *WaitState
	for {
		res.Polls++
		state, ready, err := w.look(ctx, res)
		if err != nil {
			if ctx.Err() != nil {
				var st WaitState
				if last != nil {
					st = *last
				}
				return nil, &WaitTimeoutError{State: st, Version: opts.Version, Waited: time.Since(start), Err: ctx.Err()}
			}
			return nil, err
		}
		if ready {
			res.Waited = time.Since(start)
			return res, nil
		}
		if opts.OnWaiting != nil && (last == nil || *last != state) {
			opts.OnWaiting(state)
		}
		last = &state
		if err := w.pause(ctx, poll, res.Listened); err != nil {
			return nil, &WaitTimeoutError{State: state, Version: opts.Version, Waited: time.Since(start), Err: err}
		}
	}
}

// waiter is one Wait's state between looks.
type waiter struct {
	conn       *pgx.Conn
	migrations []*Migration
	manifest   []byte
	version    int64
	digest     string // HistoryDigest(migrations)
	scope      any    // Config.Scope as an argument
	// seen and seenState: the history digest the last plan was made for,
	// and what it found (the plan is asked only when the digest changes).
	seen      string
	seenState WaitState
}

// look reads the history once: whether the database is ready, and if not,
// what it holds. Drift is an error.
func (w *waiter) look(ctx context.Context, res *WaitResult) (WaitState, bool, error) {
	var state WaitState
	var digest string
	var newest *int64
	err := w.conn.QueryRow(ctx, `select pgmig.migrate_history_digest($1::text),
		(select max(version) from pgmig.migrate_status($1::text) where state in ('applied', 'baseline'))`, pgx.QueryExecModeExec, w.scope).Scan(&digest, &newest)
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && isEngineMissing(pgErr) {
			return state, false, nil // not installed yet: the deploy job installs it
		}
		return state, false, engineError("waiting for migrations", err)
	}
	state.EngineInstalled = true
	if newest != nil {
		state.Version = *newest
	}
	res.Version = state.Version
	if w.version > 0 {
		if state.Version >= w.version {
			res.Ready = "version"
			return state, true, nil
		}
		return state, false, nil
	}
	if digest == w.digest {
		res.Ready = "digest"
		return state, true, nil
	}
	if digest == w.seen {
		return w.seenState, false, nil
	}
	// The history changed since the last plan: what is pending, drifted,
	// ahead (the engine's plan of the manifest, without a lock).
	rows, err := w.conn.Query(ctx, `select version, outcome, drift from pgmig.migrate_plan($1::jsonb, report_drift => true, scope => $2::text)`,
		pgx.QueryExecModeExec, string(w.manifest), w.scope)
	if err != nil {
		return state, false, engineError("waiting for migrations", err)
	}
	var drift *DriftError
	var ahead []int64
	var applied int64 // the newest applied version, as of the plan
	for rows.Next() {
		var v int64
		var version *int64 // NULL: a repeatable migration
		var outcome Outcome
		var kinds *string
		if err := rows.Scan(&version, &outcome, &kinds); err != nil {
			rows.Close()
			return state, false, engineError("waiting for migrations", err)
		}
		if version != nil {
			v = *version
		}
		if kinds != nil && *kinds != "" {
			if drift == nil {
				drift = &DriftError{}
			}
			for _, k := range strings.Split(*kinds, ",") {
				drift.add(v, k)
			}
		}
		switch outcome {
		case OutcomePending, OutcomeBeyondTarget, OutcomeRepeatablePending:
			state.Pending++
		case OutcomeAhead:
			ahead = append(ahead, v)
		}
		if outcome != OutcomePending && outcome != OutcomeBeyondTarget && v > applied {
			applied = v
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return state, false, engineError("waiting for migrations", err)
	}
	if drift != nil {
		drift.PgError = &pgconn.PgError{Severity: "ERROR", Code: codeDrift,
			Message: "the database history does not match the migrations: " + driftSummary(drift)}
		return state, false, fmt.Errorf("waiting for migrations: %w", drift)
	}
	if state.Pending == 0 && len(ahead) == 0 {
		// Applied between the digest's read and the plan's (two
		// statements, two snapshots, no lock): exactly the files.
		res.Ready, res.Version, state.Version = "digest", applied, applied
		return state, true, nil
	}
	if state.Pending == 0 {
		res.Ready, res.Ahead = "ahead", ahead
		return state, true, nil
	}
	w.seen, w.seenState = digest, state
	return state, false, nil
}

// driftSummary lists a drift report's versions by kind.
func driftSummary(d *DriftError) string {
	var parts []string
	for _, k := range []struct {
		what string
		vs   []int64
	}{{"changed", d.Changed}, {"missing from the files", d.Missing}, {"pending but older than the newest applied", d.OutOfOrder}} {
		if len(k.vs) == 0 {
			continue
		}
		vs := make([]string, len(k.vs))
		for i, v := range k.vs {
			vs[i] = fmt.Sprint(v)
		}
		parts = append(parts, fmt.Sprintf("%s: %s", k.what, strings.Join(vs, ", ")))
	}
	return strings.Join(parts, "; ")
}

// pause waits poll, or until the engine notifies (listening), or until ctx
// is done (its error then).
func (w *waiter) pause(ctx context.Context, poll time.Duration, listening bool) error {
	if !listening {
		t := time.NewTimer(poll)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			return nil
		}
	}
	pctx, cancel := context.WithTimeout(ctx, poll)
	defer cancel()
	// (pgx.Conn's, not pgconn's: a notification that arrived during the
	// last look is buffered there and returned at once.)
	_, err := w.conn.WaitForNotification(pctx)
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case err == nil, pctx.Err() != nil:
		return nil // notified, or the poll interval is over
	}
	return fmt.Errorf("waiting for migrations: %w", err)
}

// ownSession reports whether conn is a server session of this client's own
// rather than one lent by a pooler: the server sees the client's own TCP
// port, or a Unix-socket client on the socket this client dialled.
func ownSession(ctx context.Context, conn *pgx.Conn) bool {
	var port *int32
	var serverPort string
	if err := conn.QueryRow(ctx, "select inet_client_port(), current_setting('port')", pgx.QueryExecModeExec).Scan(&port, &serverPort); err != nil {
		return false
	}
	nc := conn.PgConn().Conn()
	switch a := nc.LocalAddr().(type) {
	case *net.TCPAddr:
		return port != nil && int(*port) == a.Port
	case *net.UnixAddr:
		return port == nil && strings.HasSuffix(nc.RemoteAddr().String(), ".s.PGSQL."+serverPort)
	}
	return false
}
