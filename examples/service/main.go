// Command service is a minimal Go service that applies its embedded
// migrations at start-up with pgmig, then would start serving.
//
//	DATABASE_URL=postgres://... go run ./examples/service
//
// Run as many replicas at once as you like: the engine's lock lets one
// apply, the others wait and then find nothing pending. An up-to-date
// database costs one lock-free query.
package main

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log"
	"os"
	"time"

	pgmig "github.com/pgmig/pgmig/gowrapper"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := migrate(ctx, os.Getenv("DATABASE_URL"), log.Printf); err != nil {
		log.Fatal(err)
	}
	log.Print("schema up to date; serving...")
}

// migrate applies the embedded migrations; logf receives progress.
func migrate(ctx context.Context, dsn string, logf func(string, ...any)) error {
	dir, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		return err
	}
	migrations, err := pgmig.Load(dir, nil)
	if err != nil {
		return fmt.Errorf("loading migrations: %w", err)
	}
	client, err := pgmig.Connect(ctx, dsn, &pgmig.Config{ClientInfo: "example-service"})
	if err != nil {
		return err
	}
	defer client.Close(context.WithoutCancel(ctx))

	res, err := client.Push(ctx, migrations, &pgmig.PushOpts{
		LockTimeout: time.Minute,
		Progress: func(p pgmig.Progress) {
			if p.Done {
				logf("applied %s in %s", p.File, p.Duration)
			} else {
				logf("applying %s (%d/%d)", p.File, p.Index, p.Total)
			}
		},
	})
	var merr *pgmig.MigrationError
	switch {
	case errors.As(err, &merr):
		return fmt.Errorf("%s:%d:%d: %s (SQLSTATE %s); database left at version %d",
			merr.File, merr.Location.Line, merr.Location.Column, merr.Message, merr.Code, merr.CurrentVersion)
	case errors.Is(err, pgmig.ErrEngineNotInstalled), errors.Is(err, pgmig.ErrUnsupportedEngine):
		return fmt.Errorf("%w (an operator runs `pgmig install` once per database)", err)
	case err != nil:
		return err
	}
	if res.Ahead {
		logf("the database is ahead of this release (a newer one migrated it); carrying on")
	}
	logf("schema at version %d (%d applied now)", res.Version, res.Applied)
	return nil
}
