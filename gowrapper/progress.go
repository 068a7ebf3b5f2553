package pgmig

import (
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// Progress is a migration the server is about to apply, from the engine's
// PM000 notice "pgmig: applying version 42 (3/7): add_users".
type Progress struct {
	Version int64
	Name    string
	Index   int // 1-based position among the migrations this call applies
	Total   int
	// File is the migration's file when the pushed migrations came from
	// Load ("" otherwise).
	File string
	// At is when the notice arrived.
	At time.Time
}

var progressPattern = regexp.MustCompile(`^pgmig: (?:applying|rolling back) version (\d+) \((\d+)/(\d+)\): (.*)$`)

// failedPattern is the engine's PM010 WARNING, "pgmig: migration 42
// (add_users) failed with SQLSTATE 42601; nothing was applied": it names the
// failing migration even when no progress notice was sent before it.
var failedPattern = regexp.MustCompile(`^pgmig: (?:rolling back )?migration (\d+) \((.*)\) failed with SQLSTATE `)

func parseProgress(n *pgconn.Notice) (Progress, bool) {
	if n.Code != codeProgress {
		return Progress{}, false
	}
	m := progressPattern.FindStringSubmatch(n.Message)
	if m == nil {
		return Progress{}, false
	}
	v, _ := strconv.ParseInt(m[1], 10, 64)
	i, _ := strconv.Atoi(m[2])
	t, _ := strconv.Atoi(m[3])
	return Progress{Version: v, Name: m[4], Index: i, Total: t, At: time.Now()}, true
}

// noticeRoute receives the notices of one connection while a pgmig call
// runs on it.
type noticeRoute struct {
	progress func(Progress)
	notice   func(*pgconn.Notice)
	files    map[int64]string
	// current is the version named by the last PM000 notice: the migration
	// running when an error arrives.
	current     int64
	currentName string
	hasCurrent  bool
	// offset and total renumber the engine's per-call "(i/n)" across the
	// segments of one push (total 0: keep the engine's).
	offset, total int
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
	if p, ok := parseProgress(n); ok {
		r.current, r.currentName, r.hasCurrent = p.Version, p.Name, true
		p.File = r.files[p.Version]
		if r.total > 0 {
			p.Index, p.Total = p.Index+r.offset, r.total
		}
		if r.progress != nil {
			r.progress(p)
		}
		return
	}
	if n.Code == codeMigrationFailed {
		if m := failedPattern.FindStringSubmatch(n.Message); m != nil {
			if v, err := strconv.ParseInt(m[1], 10, 64); err == nil {
				r.current, r.currentName, r.hasCurrent = v, m[2], true
			}
		}
		return
	}
	if strings.HasPrefix(n.Code, "PM") {
		// pgmig's own: PM011 (ahead: in the result rows), PM012 (summary:
		// in the result).
		return
	}
	if r.notice != nil {
		r.notice(n)
	}
}

func attachRoute(c *pgconn.PgConn, r *noticeRoute) func() {
	routes.Store(c, r)
	return func() { routes.Delete(c) }
}
