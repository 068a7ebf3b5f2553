package pgmig

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// ErrStagedRelease: the engine refused a staged-release operation (PM021):
// the label is staged already with another batch (a staged release never
// changes), or no release has that label.
var ErrStagedRelease = errors.New("staged release refused")

const codeStagedRelease = "PM021"

// StageOpts configures Stage. A nil *StageOpts means defaults.
type StageOpts struct{}

// StageResult reports what Stage did.
type StageResult struct {
	Label string `json:"label"`
	// Outcome is "staged", or "already_staged" when the label held this
	// very batch already (nothing changed).
	Outcome string `json:"outcome"`
	// State is the release's state: "pending", "applied" or "failed".
	State      string `json:"state"`
	Migrations int    `json:"migrations"`
	// Pending is how many of them the database lacks now (a run may find
	// fewer: another migrator may apply some first).
	Pending int `json:"pending"`
	// Digest is migrate_history_digest() once exactly these migrations are
	// applied: HistoryDigest of the staged migrations.
	Digest   string    `json:"history_digest"`
	StagedAt time.Time `json:"staged_at"`
	StagedBy string    `json:"staged_by"`
}

// Stage stores migrations in the database as a staged release under label
// (the engine's migrate_stage), for CALL migrate_run_staged(label) later
// from psql, an admin GUI or pg_cron, possibly by another role. The engine
// validates the batch against the history as of now (shape, drift, pending
// migrations it could not run: non-transactional ones) without taking the
// lock. Staging a label again with the same migrations changes nothing
// (Outcome "already_staged"); with other migrations it fails with
// ErrStagedRelease. A label is 1 to 128 characters from A-Z a-z 0-9 . _ :
// / @ + -, starting with a letter or digit (else ErrInvalidBatch).
func (c *Client) Stage(ctx context.Context, migrations []*Migration, label string, opts *StageOpts) (*StageResult, error) {
	op := fmt.Sprintf("staging release %s", label)
	conn, release, err := c.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	if err := c.verifyEngine(ctx, conn); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	batch, err := Batch(migrations)
	if err != nil {
		return nil, fmt.Errorf("%s: encoding batch: %w", op, err)
	}
	var r StageResult
	err = conn.QueryRow(ctx, `select label, outcome, state, migrations, pending, digest, staged_at, staged_by
		from pgmig.migrate_stage($1::jsonb, $2::text, client_info => $3::text)`, pgx.QueryExecModeExec,
		string(batch), label, c.config.ClientInfo).
		Scan(&r.Label, &r.Outcome, &r.State, &r.Migrations, &r.Pending, &r.Digest, &r.StagedAt, &r.StagedBy)
	if err != nil {
		return nil, stageError(op, err)
	}
	return &r, nil
}

func stageError(op string, err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == codeStagedRelease {
		return fmt.Errorf("%s: %w: %w", op, ErrStagedRelease, err)
	}
	return engineError(op, err)
}

// StagedRelease is one staged release and what became of it (the engine's
// migrate_staged()).
type StagedRelease struct {
	Label string `json:"label"`
	// State: "pending" (never run), "running", "applied", "failed" (the
	// last run failed: Error, FailedVersion) or "interrupted" (a run started
	// and ended without recording an outcome: its session died, or an
	// error such as a lock timeout stopped it).
	State        string `json:"state"`
	Migrations   int    `json:"migrations"`
	FirstVersion int64  `json:"first_version"`
	LastVersion  int64  `json:"last_version"`
	Digest       string `json:"history_digest"`

	StagedAt time.Time `json:"staged_at"`
	StagedBy string    `json:"staged_by"`
	// Attempts counts the runs; Applied how many migrations they applied
	// (the others of the release were applied already, or by others).
	Attempts  int        `json:"attempts"`
	Applied   int        `json:"applied"`
	AppliedAt *time.Time `json:"applied_at,omitempty"`
	AppliedBy string     `json:"applied_by,omitempty"`
	LastRunAt *time.Time `json:"last_run_at,omitempty"`
	LastRunBy string     `json:"last_run_by,omitempty"`
	// FailedVersion and FailedName name the migration that failed (state
	// "failed"; 0 when the run failed before running one, e.g. drift).
	FailedVersion int64  `json:"failed_version,omitempty"`
	FailedName    string `json:"failed_name,omitempty"`
	// Error is "SQLSTATE: message" of the failure (state "failed").
	Error string `json:"error,omitempty"`
	// Detail says in words what the state means for this release.
	Detail string `json:"detail"`
}

// StagedReleases lists the staged releases, newest first, and what became
// of each (migrate_staged()).
func (c *Client) StagedReleases(ctx context.Context) ([]StagedRelease, error) {
	const op = "listing staged releases"
	conn, release, err := c.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	if err := c.verifyEngine(ctx, conn); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	rows, err := conn.Query(ctx, `select label, state, migrations, first_version, last_version, digest, staged_at,
		staged_by, attempts, applied, applied_at, applied_by, last_run_at, last_run_by, failed_version, failed_name,
		error, detail from pgmig.migrate_staged()`, pgx.QueryExecModeExec)
	if err != nil {
		return nil, engineError(op, err)
	}
	defer rows.Close()
	releases := []StagedRelease{}
	for rows.Next() {
		var s StagedRelease
		var appliedBy, lastRunBy, failedName, errText *string
		var failedVersion *int64
		if err := rows.Scan(&s.Label, &s.State, &s.Migrations, &s.FirstVersion, &s.LastVersion, &s.Digest, &s.StagedAt,
			&s.StagedBy, &s.Attempts, &s.Applied, &s.AppliedAt, &appliedBy, &s.LastRunAt, &lastRunBy, &failedVersion,
			&failedName, &errText, &s.Detail); err != nil {
			return nil, fmt.Errorf("%s: %w", op, err)
		}
		s.AppliedBy, s.LastRunBy, s.FailedName, s.Error = deref(appliedBy), deref(lastRunBy), deref(failedName), deref(errText)
		if failedVersion != nil {
			s.FailedVersion = *failedVersion
		}
		releases = append(releases, s)
	}
	if err := rows.Err(); err != nil {
		return nil, engineError(op, err)
	}
	return releases, nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// RunStagedOpts configures RunStaged. A nil *RunStagedOpts means defaults.
type RunStagedOpts struct {
	// LockTimeout: wait at most this long for the history lock (0: the
	// server's lock_timeout, by default forever).
	LockTimeout time.Duration
}

// RunStagedResult is migrate_run_staged's result document.
type RunStagedResult struct {
	Label string `json:"label"`
	State string `json:"state"`
	// Applied is how many migrations this run applied (0 when the release
	// was applied already: the run did nothing).
	Applied   int        `json:"applied"`
	Version   int64      `json:"version"`
	AppliedAt *time.Time `json:"applied_at"`
	AppliedBy string     `json:"applied_by"`
}

// RunStaged applies the staged release label exactly as CALL
// migrate_run_staged(label) does from psql or pg_cron, on this Client's
// connection: under the lock, exactly once, committing where the engine
// decides; a release applied already is not run again. A failure is
// recorded with the release (StagedReleases) and returned as the engine's
// error, whose SQLSTATE is the failing migration's own (ErrStagedRelease
// for an unknown label).
func (c *Client) RunStaged(ctx context.Context, label string, opts *RunStagedOpts) (*RunStagedResult, error) {
	if opts == nil {
		opts = &RunStagedOpts{}
	}
	op := fmt.Sprintf("running staged release %s", label)
	conn, release, err := c.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	if err := c.verifyEngine(ctx, conn); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	var doc []byte
	err = conn.QueryRow(ctx, `call pgmig.migrate_run_staged($1::text, lock_timeout => $2::interval, notices => 'none')`,
		pgx.QueryExecModeExec, label, intervalArg(opts.LockTimeout)).Scan(&doc)
	if err != nil {
		if connectionLost(conn, err) {
			return nil, &ConnectionLostError{Op: op, OutcomeUnknown: !pgconn.SafeToRetry(err), Err: err}
		}
		return nil, stageError(op, err)
	}
	var r RunStagedResult
	if err := json.Unmarshal(doc, &r); err != nil {
		return nil, fmt.Errorf("%s: reading the engine's result: %w", op, err)
	}
	return &r, nil
}
