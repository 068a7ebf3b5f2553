package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/tern/v2/migrate"
	pgmig "github.com/pgmig/pgmig/gowrapper"
)

// The contenders. Each timed run starts from nothing (no connection, files
// not yet read) and ends when the work is committed and the connection
// closed: what a deploy step or a service start-up pays.
const (
	cPhysical = "physical limit" // the workload's SQL, BEGIN..COMMIT, one simple-protocol round trip
	cLib      = "pgmig library"  // LoadDir + Connect + Push + Close, in-process
	cCLI      = "pgmig CLI"      // pgmig push --dir: process start, file loading, connect, push
	cTern     = "tern library"   // pgx.Connect + NewMigrator + LoadMigrations + Migrate, in-process
	cPsql     = "psql select 1"  // psql -X -c 'select 1': the cost of a client process doing nothing
	cSelect1  = "pgx select 1"   // pgx.Connect + select 1 + Close, in-process: the no-op's physical limit
)

// runner holds what every contender needs.
type runner struct {
	cli  string // built pgmig binary
	psql string
	tern string // tern's CLI (cTernCLI, the fleet's tern loop), built by buildTern
	// pgmigSegment is PushOpts.SegmentSize / --segment-size for every
	// pgmig push: 0 is pgmig's default (automatic), as users run it.
	pgmigSegment int
	// segments counts, per workload, the transactions the last pgmig
	// library push used (PushResult.Segments), for the report.
	mu       sync.Mutex
	segments map[string]int
}

// apply runs contender c once against url. segment > 0 makes the physical
// limit commit every segment migrations (for workloads one transaction's
// lock table cannot hold); pgmig segments as r.pgmigSegment says; tern
// commits after every migration anyway.
func (r *runner) apply(ctx context.Context, c string, url string, w *workload, segment int) (time.Duration, error) {
	var sql string
	switch c {
	case cPhysical:
		sql = w.physicalSQL(segment) // built before the clock starts: the limit reads no files
	case cBundle:
		if _, err := w.bundleFile(); err != nil { // likewise: a release script is built beforehand
			return 0, err
		}
	}
	start := time.Now()
	var err error
	switch c {
	case cPhysical:
		err = physical(ctx, url, sql)
	case cLib:
		var segs int
		segs, err = pgmigLibrary(ctx, url, w.dir, r.pgmigSegment)
		r.noteSegments(w, segs)
	case cCLI:
		err = r.pgmigCLI(ctx, url, w.dir, r.pgmigSegment)
	case cTern:
		err = ternLibrary(ctx, url, w.dir)
	case cTernCLI:
		err = r.ternCLI(ctx, url, w.dir)
	case cBundle:
		err = r.psqlBundle(ctx, url, w)
	case cPsql:
		err = r.psqlSelect1(ctx, url)
	case cSelect1:
		err = pgxSelect1(ctx, url)
	default:
		err = fmt.Errorf("unknown contender %q", c)
	}
	return time.Since(start), err
}

func physical(ctx context.Context, url, sql string) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	// No arguments and simple protocol: pgx sends it as one Query message.
	_, err = conn.Exec(ctx, sql, pgx.QueryExecModeSimpleProtocol)
	return err
}

func (r *runner) noteSegments(w *workload, segs int) {
	if segs == 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.segments == nil {
		r.segments = map[string]int{}
	}
	r.segments[fmt.Sprintf("%s-%d", w.kind, w.n)] = segs
}

// pgmigLibrary returns how many transactions the push used.
func pgmigLibrary(ctx context.Context, url, dir string, segment int) (int, error) {
	ms, err := pgmig.LoadDir(dir, nil)
	if err != nil {
		return 0, err
	}
	client, err := pgmig.Connect(ctx, url, nil)
	if err != nil {
		return 0, err
	}
	defer client.Close(ctx)
	res, err := client.Push(ctx, ms, &pgmig.PushOpts{SegmentSize: segment})
	if err != nil {
		return 0, err
	}
	return res.Segments, nil
}

func (r *runner) pgmigCLI(ctx context.Context, url, dir string, segment int) error {
	args := []string{"push", "--dir", dir, "--database", url, "--quiet"}
	switch {
	case segment == pgmig.SegmentAll:
		args = append(args, "--segment-size", "all")
	case segment > 0:
		args = append(args, "--segment-size", strconv.Itoa(segment))
	}
	return r.command(ctx, r.cli, args...)
}

func ternLibrary(ctx context.Context, url, dir string) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	m, err := migrate.NewMigrator(ctx, conn, "public.schema_version")
	if err != nil {
		return err
	}
	if err := m.LoadMigrations(os.DirFS(dir)); err != nil {
		return err
	}
	return m.Migrate(ctx)
}

func (r *runner) psqlSelect1(ctx context.Context, url string) error {
	return r.command(ctx, r.psql, "-X", "-q", "-d", url, "-c", "select 1")
}

func pgxSelect1(ctx context.Context, url string) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "select 1")
	return err
}

// command runs a client program without our PG* variables (they would
// override --database for libpq) and with its output discarded unless it
// fails.
func (r *runner) command(ctx context.Context, bin string, args ...string) error {
	cmd := exec.CommandContext(ctx, bin, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") && !strings.HasPrefix(kv, "DATABASE_URL=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w\n%s", bin, args[0], err, tail(out.String(), 1500))
	}
	return nil
}

// concurrent runs p copies of contender c at once against url (each with
// its own connection or process) and returns the wall time until the last
// one finished. Every copy must succeed.
func (r *runner) concurrent(ctx context.Context, c string, url string, w *workload, p int) (time.Duration, error) {
	var sql string
	if c == cPhysical {
		sql = w.physicalSQL(0)
	}
	var wg sync.WaitGroup
	errs := make([]error, p)
	gate := make(chan struct{})
	for i := range p {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-gate
			switch c {
			case cPhysical:
				errs[i] = physical(ctx, url, sql)
			case cLib:
				_, errs[i] = pgmigLibrary(ctx, url, w.dir, r.pgmigSegment)
			case cCLI:
				errs[i] = r.pgmigCLI(ctx, url, w.dir, r.pgmigSegment)
			case cTern:
				errs[i] = ternLibrary(ctx, url, w.dir)
			}
		}()
	}
	start := time.Now()
	close(gate)
	wg.Wait()
	d := time.Since(start)
	failed := 0
	var first error
	for _, e := range errs {
		if e != nil {
			failed++
			if first == nil {
				first = e
			}
		}
	}
	if failed > 0 {
		return d, fmt.Errorf("%d of %d pushers failed, first: %w", failed, p, first)
	}
	return d, nil
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}
