package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	pgmig "github.com/pgmig/pgmig/gowrapper"
)

const bundleHelp = `usage: pgmig bundle [--dir DIR] [-o release.sql] [--with-engine] [--target N] [--nontx-applied]

Writes one self-contained SQL script that applies the migrations in --dir when run, for a DBA
or a deploy job that has psql or an admin GUI but no pgmig: exactly once however many sessions
run it at once, each transaction all or nothing, nothing to do when run again. Needs no
database. See docs/admin-tooling.md.

  pgmig bundle --dir migrations -o release.sql
  psql -v ON_ERROR_STOP=1 -f release.sql     # or paste it into a GUI, in autocommit

--with-engine makes the script install or upgrade the pgmig engine first. Non-transactional
migrations (---- tern: disable-tx ----) cannot run from a script: they are refused, naming
them, unless --nontx-applied says they are applied already wherever the script will run (the
script then refuses to run, changing nothing, where one is still pending).

Without -o the script goes to stdout. A summary goes to stderr (with -o and --json, a JSON
document to stdout).

Flags:
`

// runBundle is `pgmig bundle` (docs/admin-tooling.md): the script comes
// from the library (pgmig.Bundle); this only writes it.
func runBundle(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var a adminFlags
	var output string
	var withEngine, nontxApplied bool
	fs := flag.NewFlagSet("pgmig bundle", flag.ContinueOnError)
	a.register(fs)
	fs.StringVar(&output, "o", "", "write the script to this file (default: stdout)")
	fs.StringVar(&output, "output", "", "same as -o")
	fs.BoolVar(&withEngine, "with-engine", false, "install or upgrade the pgmig engine first")
	fs.BoolVar(&nontxApplied, "nontx-applied", false, "non-transactional migrations are applied already where the script will run")
	if code, ok := parseAdminFlags(fs, bundleHelp, args, stderr); !ok {
		return code
	}
	out := newOutput(stdout, stderr, a.json, a.quiet)
	out.dir = a.dir
	if a.json && output == "" {
		return failCode(out, errors.New("pgmig bundle --json needs -o FILE: without it the script itself goes to stdout"), exitUsage)
	}
	ms, code := loadUpTo(a, out)
	if ms == nil {
		return code
	}
	script, err := pgmig.Bundle(ms, &pgmig.BundleOpts{WithEngine: withEngine, NonTransactionalApplied: nontxApplied})
	if err != nil {
		if errors.Is(err, pgmig.ErrNonTransactional) {
			return failCode(out, err, exitValidation)
		}
		return failCode(out, err, exitUsage)
	}
	if output == "" {
		if _, err := io.WriteString(stdout, script); err != nil {
			return failCode(out, err, exitUsage)
		}
	} else if err := writeFileAtomic(output, script); err != nil {
		return failCode(out, err, exitUsage)
	}
	digest := pgmig.HistoryDigest(ms)
	if a.json {
		writeJSON(stdout, struct {
			File          string `json:"file"`
			Migrations    int    `json:"migrations"`
			FirstVersion  int64  `json:"first_version"`
			LastVersion   int64  `json:"last_version"`
			HistoryDigest string `json:"history_digest"`
			WithEngine    bool   `json:"with_engine"`
			Bytes         int    `json:"bytes"`
		}{output, len(ms), ms[0].Version, ms[len(ms)-1].Version, digest, withEngine, len(script)})
		return exitOK
	}
	where := output
	if where == "" {
		where = "the script"
	}
	engine := ""
	if withEngine {
		engine = fmt.Sprintf(", installing engine %s first", pgmig.SupportedEngineVersion())
	}
	out.info("wrote %s: %s (versions %d to %d)%s, %d bytes; history digest once applied: %s",
		where, plural(len(ms), "migration", "migrations"), ms[0].Version, ms[len(ms)-1].Version, engine, len(script), digest)
	if output != "" {
		out.info("run it with: psql -v ON_ERROR_STOP=1 -f %s   (or paste it into an admin GUI, in autocommit)", output)
	}
	return exitOK
}

// writeFileAtomic writes the file whole or not at all: a half-written
// release script must never be left for someone to run.
func writeFileAtomic(path, text string) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	_, err = f.WriteString(text)
	if err == nil {
		err = f.Chmod(0o644)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
