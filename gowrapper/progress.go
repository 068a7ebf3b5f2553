package pgmig

import (
	"encoding/json"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// Progress is a migration the server is about to apply (Done false) or has
// just applied (Done true, with the server's measured Duration), from the
// engine's PM000 notices.
type Progress struct {
	Version int64
	// Repeatable: a repeatable migration (Version 0), named by Name.
	Repeatable bool
	Name       string
	// Label is the version as written in the file name, when it is not the
	// plain number (Migration.Label).
	Label string
	Index int // 1-based position among the migrations this push applies
	Total int
	// File is the migration's file when the pushed migrations came from
	// Load ("" otherwise).
	File string
	// Done: the migration was applied (its transaction may still fail
	// later, which the push's error reports).
	Done bool
	// Duration is how long the server took to run it (Done only).
	Duration time.Duration
	// At is when the notice arrived.
	At time.Time
}

// The engine's signals to clients are data, never message wording: with
// notices => 'json' (or 'none') pgmig's notices and warnings carry a JSON
// DETAIL (docs/sql-api.md, "Signals for programs"); only their SQLSTATE
// and that DETAIL are read here.
type (
	// progressEvent is the DETAIL of a PM000 notice.
	progressEvent struct {
		Event      string `json:"event"` // "applying", "applied", "rolling_back" or "rolled_back"
		Version    int64  `json:"version"`
		Repeatable bool   `json:"repeatable"`
		Name       string `json:"name"`
		Index      int    `json:"index"`
		Total      int    `json:"total"`
		DurationUS int64  `json:"duration_us"`
	}
	// failureEvent is the DETAIL of the PM010 WARNING that precedes the
	// error of a failing migration.
	failureEvent struct {
		Version    int64  `json:"version"`
		Repeatable bool   `json:"repeatable"`
		Name       string `json:"name"`
		SQLState   string `json:"sqlstate"`
		Committed  int    `json:"committed"`
		// Statement (1-based) and Line: where the engine, running the
		// statements one by one, saw the migration fail; Context: the
		// error's CONTEXT inside the migration.
		Statement int    `json:"statement"`
		Line      int    `json:"line"`
		Context   string `json:"context"`
	}
	// driftEvent is the DETAIL of the PM002 WARNING that precedes a drift
	// error.
	driftEvent struct {
		Drift []struct {
			Version int64  `json:"version"`
			Kind    string `json:"kind"`
		} `json:"drift"`
	}
)

// noticeRoute receives the notices of one connection while a pgmig call
// runs on it.
type noticeRoute struct {
	progress func(Progress)
	notice   func(*pgconn.Notice)
	files    map[migrationKey]*Migration

	mu sync.Mutex
	// current is the migration the last PM000 notice named: the one
	// running when an error arrives.
	current    migrationKey
	hasCurrent bool
	failure    *failureEvent
	drift      *driftEvent
	// offset and total renumber the engine's per-call index across the
	// calls of one push (total 0: the first call's).
	offset, total int
}

func newNoticeRoute(progress func(Progress), notice func(*pgconn.Notice), migrations []*Migration) *noticeRoute {
	r := &noticeRoute{progress: progress, notice: notice}
	if progress != nil {
		r.files = make(map[migrationKey]*Migration, len(migrations))
		for _, m := range migrations {
			r.files[keyOf(m)] = m
		}
	}
	return r
}

// wantsNotices: whether the engine should send progress notices at all.
func (r *noticeRoute) wantsNotices() bool { return r.progress != nil || r.notice != nil }

// reset forgets what an earlier engine call reported.
func (r *noticeRoute) reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failure, r.drift, r.hasCurrent = nil, nil, false
}

// running is the migration the last PM000 notice named, if any.
func (r *noticeRoute) running() (migrationKey, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.current, r.hasCurrent
}

func (r *noticeRoute) failed() (*failureEvent, *driftEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failure, r.drift
}

func (r *noticeRoute) emit(p Progress) {
	if m := r.files[progressKey(p.Version, p.Name, p.Repeatable)]; m != nil {
		p.File, p.Label = m.File, m.Label
	}
	r.progress(p)
}

// routes maps a connection to the pgmig call running on it. A pgconn
// notice handler is fixed when the connection is configured, so a handler
// installed once (HandleNotice) looks up per call where notices should go.
var routes sync.Map // *pgconn.PgConn → *noticeRoute

// HandleNotice is a pgconn.NoticeHandler that delivers pgmig's progress
// notices to the Progress callback of the pgmig call running on that
// connection, and other notices to its Notice callback. A Client from
// Connect installs it itself. For a *pgx.Conn or *pgxpool.Pool of your own,
// set it in the configuration before connecting, or call it from your own
// handler:
//
//	cfg, _ := pgxpool.ParseConfig(dsn)
//	cfg.ConnConfig.OnNotice = pgmig.HandleNotice
//
// Without it pushes still work and a failing migration is still identified
// (by matching the failing SQL against the batch), but Progress is not
// called.
func HandleNotice(c *pgconn.PgConn, n *pgconn.Notice) {
	v, ok := routes.Load(c)
	if !ok {
		return
	}
	r := v.(*noticeRoute)
	switch n.Code {
	case codeProgress:
		var e progressEvent
		if json.Unmarshal([]byte(n.Detail), &e) != nil || e.Version == 0 && !e.Repeatable {
			return // a pgmig notice without data (notices => 'text'): nothing to route
		}
		r.mu.Lock()
		r.current, r.hasCurrent = progressKey(e.Version, e.Name, e.Repeatable), true
		if r.total == 0 {
			// The first engine call of a push counts everything it will apply.
			r.total = e.Total
		}
		offset, total := r.offset, r.total
		r.mu.Unlock()
		if r.progress == nil {
			return
		}
		p := Progress{Version: e.Version, Repeatable: e.Repeatable, Name: e.Name, Index: offset + e.Index, Total: total, At: time.Now()}
		if e.Event == "applied" || e.Event == "rolled_back" {
			p.Done, p.Duration, p.Index = true, time.Duration(e.DurationUS)*time.Microsecond, 0
		}
		r.emit(p)
		return
	case codeMigrationFailed:
		var e failureEvent
		if json.Unmarshal([]byte(n.Detail), &e) == nil && (e.Version != 0 || e.Repeatable) {
			r.mu.Lock()
			r.failure = &e
			r.current, r.hasCurrent = progressKey(e.Version, e.Name, e.Repeatable), true
			r.mu.Unlock()
		}
		return
	case codeDrift:
		var e driftEvent
		if json.Unmarshal([]byte(n.Detail), &e) == nil {
			r.mu.Lock()
			r.drift = &e
			r.mu.Unlock()
		}
		return
	}
	if len(n.Code) == 5 && n.Code[:2] == "PM" && n.Severity != "WARNING" {
		// pgmig's own notices (ahead, summary): in the call's result.
		return
	}
	if r.notice != nil {
		r.notice(n)
	}
}

// progressKey: the key of the migration an engine notice names.
func progressKey(version int64, name string, repeatable bool) migrationKey {
	if repeatable {
		return migrationKey{name: name}
	}
	return migrationKey{version: version}
}

// migration: the migration of migrations that k names, if any.
func (k migrationKey) migration(migrations []*Migration) *Migration {
	if k.version == 0 {
		return repeatableByName(migrations, k.name)
	}
	return migrationByVersion(migrations, k.version)
}

// migration: the migration of migrations the failure names, if any.
func (e *failureEvent) migration(migrations []*Migration) *Migration {
	return progressKey(e.Version, e.Name, e.Repeatable).migration(migrations)
}

func attachRoute(c *pgconn.PgConn, r *noticeRoute) func() {
	routes.Store(c, r)
	return func() { routes.Delete(c) }
}
