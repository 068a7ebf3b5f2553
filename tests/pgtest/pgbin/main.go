// Command pgbin prints the directory of PostgreSQL server binaries (initdb,
// pg_ctl, postgres) that the test harness would use, fetching a build from
// npm when the machine has none. Scripts that start a server of their own
// use it, so that the lookup and the download exist once (tests/pgtest):
//
//	go run ./tests/pgtest/pgbin                 # the harness's choice: PGMIG_PGBIN, PATH,
//	                                            # /usr/lib/postgresql/*/bin, else npm
//	go run ./tests/pgtest/pgbin -npm 17         # the npm build of a major (newest cached)
//	go run ./tests/pgtest/pgbin -npm -refresh 17  # ... newest published (make test-matrix)
//	go run ./tests/pgtest/pgbin -npm 17.10.0-beta.17
//
// Progress goes to stderr; the directory, alone, to stdout. Exit status 1
// and a message when there is none.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"

	"github.com/pgmig/pgmig/tests/pgtest"
)

func main() {
	npm := flag.Bool("npm", false, "use the npm build of the given major or version (default: the harness's choice)")
	refresh := flag.Bool("refresh", false, "with -npm and a major: ask npm for the newest published version even if one is cached")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: pgbin [-npm [-refresh] MAJOR|VERSION]")
		flag.PrintDefaults()
	}
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	var dir string
	var err error
	switch {
	case *npm && flag.NArg() == 1:
		dir, _, err = pgtest.NPMBinDir(ctx, flag.Arg(0), &pgtest.NPMOpts{Refresh: *refresh, Log: os.Stderr})
	case !*npm && flag.NArg() == 0:
		dir, err = pgtest.FindBinDir()
	default:
		flag.Usage()
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "pgbin: %v\n", err)
		os.Exit(1)
	}
	fmt.Println(dir)
}
