package pgmig_test

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"log"
	"os"
	"testing"
	"time"

	pgmig "github.com/pgmig/pgmig/gowrapper"
	"github.com/pgmig/pgmig/tests/pgtest"
)

// In a service this is `//go:embed migrations` next to main.go.
//
//go:embed testdata/example
var embeddedMigrations embed.FS

// A service applies its embedded migrations at start-up. Every replica may
// do this at the same time: the engine's lock lets one of them apply, the
// others wait and then find nothing pending. An up-to-date database costs
// one small lock-free query.
func Example_serviceStartup() {
	ctx := context.Background()

	dir, err := fs.Sub(embeddedMigrations, "testdata/example")
	if err != nil {
		log.Fatal(err)
	}
	migrations, err := pgmig.Load(dir, nil)
	if err != nil {
		log.Fatal(err) // e.g. 003_x.sql: missing migration version 2 (after 001_a.sql)
	}

	client, err := pgmig.Connect(ctx, os.Getenv("DATABASE_URL"), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close(ctx)

	res, err := client.Push(ctx, migrations, &pgmig.PushOpts{
		LockTimeout: time.Minute,
		Progress: func(p pgmig.Progress) {
			if !p.Done { // called again with Done and the server's Duration
				fmt.Printf("applying %s (%d/%d)\n", p.File, p.Index, p.Total)
			}
		},
	})
	if err != nil {
		log.Fatal(err) // *pgmig.MigrationError names the file, line and column
	}
	fmt.Printf("applied %d, database at version %d\n", res.Applied, res.Version)

	// The next start (or another replica) finds nothing to do.
	res, err = client.Push(ctx, migrations, nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("applied %d, nothing pending: %v\n", res.Applied, res.Prechecked)

	// Output:
	// applying 001_create_users.sql (1/2)
	// applying 002_add_created_at.sql (2/2)
	// applied 2, database at version 2
	// applied 0, nothing pending: true
}

// TestExample_serviceStartup_setup gives Example_serviceStartup its
// database through DATABASE_URL, as a service would get it. Examples run
// after all tests, so the database must outlive this test: it is created
// without cleanup (a throwaway cluster disappears with the test binary).
// The name matches -run Example_serviceStartup.
func TestExample_serviceStartup_setup(t *testing.T) {
	t.Parallel()
	srv := pgtest.Server(t)
	name := fmt.Sprintf("pgmig_example_%d", os.Getpid())
	conn := pgtest.Connect(t, srv.ConnString("postgres"))
	if _, err := conn.Exec(context.Background(), fmt.Sprintf("create database %s template %s", name, srv.TemplateName(t))); err != nil {
		t.Fatal(err)
	}
	os.Setenv("DATABASE_URL", srv.ConnString(name))
}
