package pgmig_test

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	pgmig "github.com/pgmig/pgmig/gowrapper"
	"github.com/pgmig/pgmig/tests/pgtest"
)

// Stage, StagedReleases and RunStaged: the library's side of staged
// releases (SQL-level behaviour, races and pg_cron: tests/admin).
func TestStageAndRunStaged(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	client := connect(t, db.URL, &pgmig.Config{ClientInfo: "ci job 7"})
	ms := load(t, twoMigrations)

	res, err := client.Stage(ctx, ms, "v1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Outcome != "staged" || res.State != "pending" || res.Migrations != 2 || res.Pending != 2 || res.Digest != pgmig.HistoryDigest(ms) {
		t.Errorf("Stage: %+v", res)
	}
	if res, err := client.Stage(ctx, ms, "v1", nil); err != nil || res.Outcome != "already_staged" {
		t.Errorf("Stage again: %+v %v", res, err)
	}
	if _, err := client.Stage(ctx, ms[:1], "v1", nil); !errors.Is(err, pgmig.ErrStagedRelease) {
		t.Errorf("Stage another batch under v1: %v, want ErrStagedRelease", err)
	}
	if _, err := client.Stage(ctx, ms, "no spaces allowed", nil); !errors.Is(err, pgmig.ErrInvalidBatch) {
		t.Errorf("Stage with a bad label: %v, want ErrInvalidBatch", err)
	}

	releases, err := client.StagedReleases(ctx)
	if err != nil || len(releases) != 1 || releases[0].State != "pending" || releases[0].FirstVersion != 1 || releases[0].LastVersion != 2 {
		t.Fatalf("StagedReleases: %+v %v", releases, err)
	}
	var info string
	if err := db.Conn(t).QueryRow(ctx, "select client_info from pgmig.staged").Scan(&info); err != nil || info != "ci job 7" {
		t.Errorf("staged client_info %q (%v), want the Config's", info, err)
	}

	run, err := client.RunStaged(ctx, "v1", nil)
	if err != nil || run.State != "applied" || run.Applied != 2 || run.Version != 2 || run.AppliedAt == nil {
		t.Fatalf("RunStaged: %+v %v", run, err)
	}
	if run, err := client.RunStaged(ctx, "v1", nil); err != nil || run.Applied != 0 {
		t.Errorf("RunStaged again: %+v %v", run, err)
	}
	if _, err := client.RunStaged(ctx, "v2", nil); !errors.Is(err, pgmig.ErrStagedRelease) {
		t.Errorf("RunStaged of an unknown label: %v, want ErrStagedRelease", err)
	}

	bad := load(t, map[string]string{
		"001_create_users.sql": twoMigrations["001_create_users.sql"],
		"002_add_email.sql":    twoMigrations["002_add_email.sql"],
		"003_bad.sql":          "alter table no_such_table add column x int;\n",
	})
	if _, err := client.Stage(ctx, bad, "v2", nil); err != nil {
		t.Fatal(err)
	}
	_, err = client.RunStaged(ctx, "v2", nil)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "42P01" {
		t.Fatalf("RunStaged of a failing release: %v, want the migration's 42P01", err)
	}
	releases, err = client.StagedReleases(ctx)
	if err != nil || releases[0].Label != "v2" || releases[0].State != "failed" || releases[0].FailedVersion != 3 ||
		releases[0].FailedName != "bad" || releases[0].Error != `42P01: relation "no_such_table" does not exist` {
		t.Fatalf("after the failure: %+v %v", releases, err)
	}
}
