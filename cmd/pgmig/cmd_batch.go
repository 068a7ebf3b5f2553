package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/jackc/pgx/v5/pgconn"
	pgmig "github.com/pgmig/pgmig/gowrapper"
)

const batchHelp = `usage: pgmig batch [--dir DIR] [--target N] [--json]

Prints the batch pgmig push would send for the migrations in --dir: the jsonb array the
engine's migrate_run / migrate_apply take (docs/sql-api.md, "Batch format"), with the same
loader, templates and checksums as push. For psql, scripts and schedulers; see
docs/admin-tooling.md. Needs no database.

  pgmig batch --dir migrations > batch.json
  psql -v ON_ERROR_STOP=1 -v batch="$(cat batch.json)" <<'SQL'
  CALL migrate_run(:'batch');
  SQL

The batch goes to stdout; the count and history digest to stderr. With --json stdout holds
one document: {"batch": [...], "migrations": N, "history_digest": "..."} (errors too).

Flags:
`

// adminFlags are the flags pgmig batch, bundle and stage share: the
// migrations and how output is rendered.
type adminFlags struct {
	dir    string
	target int64
	json   bool
	quiet  bool
}

func (a *adminFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&a.dir, "dir", ".", "migrations directory")
	fs.Int64Var(&a.target, "target", 0, "only the migrations up to this version")
	fs.BoolVar(&a.json, "json", false, "machine-readable output on stdout (errors too)")
	fs.BoolVar(&a.quiet, "quiet", false, "print only errors")
}

// parseAdminFlags parses args with fs, whose usage text is help followed by
// the flags. No positional arguments. ok false: return code.
func parseAdminFlags(fs *flag.FlagSet, help string, args []string, stderr io.Writer) (code int, ok bool) {
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, help)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK, false
		}
		return exitUsage, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "%s: unexpected argument %q; see %s --help\n", fs.Name(), fs.Arg(0), fs.Name())
		return exitUsage, false
	}
	return exitOK, true
}

// upTo keeps the migrations up to version target (0: all). A batch cut at
// the target is what push --target would apply: the engine needs no option
// for it, so psql, a bundle and a staged release all stop there.
func upTo(ms []*pgmig.Migration, target int64) ([]*pgmig.Migration, error) {
	if target <= 0 {
		return ms, nil
	}
	var kept []*pgmig.Migration
	for _, m := range ms {
		if m.Version <= target {
			kept = append(kept, m)
		}
	}
	if len(kept) == 0 {
		return nil, fmt.Errorf("--target %d: no migration has a version up to %d (the first is %d)", target, target, ms[0].Version)
	}
	return kept, nil
}

// failCode reports err like every other command (output.fail), but with
// this command's exit code, which --json's error object carries too.
func failCode(out *output, err error, code int) int {
	if !out.json {
		out.fail(err)
		return code
	}
	var j jsonError
	j.Error.Message = err.Error()
	j.Error.ExitCode = code
	var lerr *pgmig.LoadError
	if errors.As(err, &lerr) {
		j.Error.File = lerr.File
	}
	if pgErr := pgError(err); pgErr != nil {
		j.Error.SQLState, j.Error.Detail, j.Error.Hint = pgErr.Code, pgErr.Detail, pgErr.Hint
	}
	writeJSON(out.stdout, j)
	return code
}

// pgError is the server's error inside err, if any.
func pgError(err error) *pgconn.PgError {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr
	}
	return nil
}

// loadUpTo loads --dir and cuts it at --target.
func loadUpTo(a adminFlags, out *output) ([]*pgmig.Migration, int) {
	ms, err := pgmig.LoadDir(a.dir, nil)
	if err != nil {
		return nil, failCode(out, err, exitCode(err))
	}
	ms, err = upTo(ms, a.target)
	if err != nil {
		return nil, failCode(out, err, exitUsage)
	}
	return ms, exitOK
}

// runBatch is `pgmig batch` (docs/admin-tooling.md).
func runBatch(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var a adminFlags
	fs := flag.NewFlagSet("pgmig batch", flag.ContinueOnError)
	a.register(fs)
	if code, ok := parseAdminFlags(fs, batchHelp, args, stderr); !ok {
		return code
	}
	out := newOutput(stdout, stderr, a.json, a.quiet)
	out.dir = a.dir
	ms, code := loadUpTo(a, out)
	if ms == nil {
		return code
	}
	batch, err := pgmig.Batch(ms)
	if err != nil {
		return failCode(out, err, exitUsage)
	}
	if a.json {
		writeJSON(stdout, struct {
			Batch         json.RawMessage `json:"batch"`
			Migrations    int             `json:"migrations"`
			HistoryDigest string          `json:"history_digest"`
		}{batch, len(ms), pgmig.HistoryDigest(ms)})
		return exitOK
	}
	if _, err := fmt.Fprintf(stdout, "%s\n", batch); err != nil {
		return failCode(out, err, exitUsage)
	}
	out.info("%s, versions %d to %d; history digest once applied: %s",
		plural(len(ms), "migration", "migrations"), ms[0].Version, ms[len(ms)-1].Version, pgmig.HistoryDigest(ms))
	return exitOK
}
