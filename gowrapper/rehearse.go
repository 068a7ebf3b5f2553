package pgmig

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Outcomes of a rehearsal (besides the plan's: already applied, beyond the
// target, ahead).
const (
	OutcomeRehearsed    Outcome = "rehearsed"     // ran, measured, rolled back
	OutcomeNotRehearsed Outcome = "not_rehearsed" // pending, but the rehearsal stopped before it (RehearsedMigration.Note says why)
)

// RehearseOpts configures Rehearse. A nil *RehearseOpts means defaults.
type RehearseOpts struct {
	TargetVersion   int64
	AllowOutOfOrder bool
	AllowMissing    bool
	// LockTimeout: wait at most this long for the history lock
	// (ErrLockTimeout), as for Push (0: the session's lock_timeout).
	LockTimeout time.Duration
	// DDLLockTimeout: how long each migration's statements may wait for a
	// lock before the rehearsal gives up with a *BlockedError; it applies
	// to every migration, whatever its own lock-timeout marker says (a
	// guard rail). 0: the engine's default, 1s; negative: the session's
	// lock_timeout.
	DDLLockTimeout time.Duration
	// StatementTimeout bounds the whole rehearsal: the lock wait and every
	// migration (statement_timeout of the call; a migration it stops fails
	// with SQLSTATE 57014). 0: DefaultRehearseStatementTimeout; negative:
	// none.
	StatementTimeout time.Duration
	// Progress and Notice as for Push.
	Progress func(Progress)
	Notice   func(*pgconn.Notice)
}

// DefaultRehearseStatementTimeout is RehearseOpts.StatementTimeout's
// default, the engine's own (migrate_rehearse's statement_timeout).
const DefaultRehearseStatementTimeout = time.Minute

// RehearsedRelation is a relation a rehearsed migration locked or rewrote.
type RehearsedRelation struct {
	// Relation is schema-qualified; Kind "table", "index", "sequence", ...
	Relation string `json:"relation"`
	Kind     string `json:"kind"`
	// LockMode is the strongest lock its transaction held on the relation
	// once the migration ran (taken by it, or by an earlier migration of
	// the batch: the batch is one transaction): what other sessions faced
	// while it ran. NewModes are the modes this migration added.
	LockMode string   `json:"lock_mode,omitempty"`
	NewModes []string `json:"new_modes"`
	// Created and Dropped by the migration (a created relation's locks
	// block nobody: no other session can see it before the commit).
	Created bool `json:"created"`
	Dropped bool `json:"dropped"`
	// Rewritten: its storage changed (a new relfilenode: the table, or the
	// index, was written anew); SizeBytes is the size of the new storage.
	Rewritten bool  `json:"rewritten"`
	SizeBytes int64 `json:"size_bytes,omitempty"`
}

// RehearsedMigration is one migration in a rehearsal's report.
type RehearsedMigration struct {
	MigrationResult
	// DurationMS is Duration in milliseconds, for JSON readers.
	DurationMS float64 `json:"duration_ms,omitempty"`
	// WALBytes is the WAL written while it ran (the server's insert
	// position before and after: other sessions' WAL meanwhile counts too).
	WALBytes  int64               `json:"wal_bytes,omitempty"`
	Relations []RehearsedRelation `json:"relations,omitempty"`
	// Note says why a pending migration was not rehearsed.
	Note string `json:"note,omitempty"`
}

// RehearseResult is a rehearsal's report.
type RehearseResult struct {
	Migrations   []RehearsedMigration `json:"migrations"`
	Rehearsed    int                  `json:"rehearsed"`
	NotRehearsed int                  `json:"not_rehearsed"`
	Duration     time.Duration        `json:"duration_ns"`
}

// Rehearse runs the pending migrations for real, exactly as Push would
// (the engine's migrate_rehearse: the same plan and executor, under the
// history lock, in one transaction), measures each one — every relation it
// locks and in which mode, the tables and indexes it rewrites with their
// size, the WAL it writes, how long it takes — and rolls everything back:
// nothing remains but the report. It stops before a non-transactional
// migration and after a commit-after one (it cannot commit), reporting the
// rest as OutcomeNotRehearsed. A failing migration is reported as Push
// reports it (*MigrationError with file, line and column; *BlockedError when
// the DDL lock timeout ran out). Guard rails: opts.DDLLockTimeout and
// opts.StatementTimeout (defaults 1s and 1 minute).
func (c *Client) Rehearse(ctx context.Context, migrations []*Migration, opts *RehearseOpts) (*RehearseResult, error) {
	if opts == nil {
		opts = &RehearseOpts{}
	}
	start := time.Now()
	conn, release, err := c.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	if err := c.verifyEngine(ctx, conn); err != nil {
		return nil, fmt.Errorf("rehearsing: %w", err)
	}
	batch, err := Batch(migrations)
	if err != nil {
		return nil, fmt.Errorf("encoding batch: %w", err)
	}
	route := newNoticeRoute(opts.Progress, opts.Notice, migrations)
	defer attachRoute(conn.PgConn(), route)()
	// Progress as data always: a migration the statement timeout cancels
	// sends no PM010 (PL/pgSQL cannot catch a cancel), and the last
	// progress notice is then what names it.
	notices := "json"

	// The engine's defaults apply unless an option says otherwise: named
	// arguments are passed only when set.
	sql := `select version, name, outcome, duration, wal_bytes, relations, note from pgmig.migrate_rehearse($1::jsonb,
		target_version => $2::bigint, lock_timeout => $3::interval, allow_out_of_order => $4::boolean,
		allow_missing => $5::boolean, notices => $6::text, scope => $7::text`
	args := []any{string(batch), nullZero(opts.TargetVersion), intervalArg(opts.LockTimeout), opts.AllowOutOfOrder,
		opts.AllowMissing, notices, c.scope()}
	switch {
	case opts.DDLLockTimeout > 0:
		args = append(args, durationArg(opts.DDLLockTimeout))
		sql += fmt.Sprintf(", ddl_lock_timeout => $%d::interval", len(args))
	case opts.DDLLockTimeout < 0:
		sql += ", ddl_lock_timeout => NULL"
	}
	// The session's statement_timeout for the call, and the engine's check
	// of it: the same value.
	stmtTimeout := "0"
	switch limit := cmp.Or(opts.StatementTimeout, DefaultRehearseStatementTimeout); {
	case limit > 0:
		stmtTimeout = fmt.Sprintf("%dms", ceilMillis(limit))
		args = append(args, durationArg(limit))
		sql += fmt.Sprintf(", statement_timeout => $%d::interval", len(args))
	default:
		sql += ", statement_timeout => '0'"
	}
	sql += ")"

	// One transaction: SET LOCAL statement_timeout arms the timer of the
	// call that follows (a function cannot bound its own statement).
	bg := context.WithoutCancel(ctx)
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.ReadCommitted})
	if err != nil {
		return nil, lostBeforeApply(conn, "rehearsing", fmt.Errorf("rehearsing: %w", err))
	}
	defer tx.Rollback(bg)
	if _, err := tx.Exec(ctx, "select set_config('statement_timeout', $1, true)", pgx.QueryExecModeExec, stmtTimeout); err != nil {
		return nil, engineError("rehearsing", err)
	}
	route.reset()
	rows, err := tx.Query(ctx, sql, append([]any{pgx.QueryExecModeExec}, args...)...)
	res := &RehearseResult{Migrations: []RehearsedMigration{}}
	if err == nil {
		for rows.Next() {
			var m RehearsedMigration
			var dur *time.Duration
			var wal *int64
			var rels []byte
			var note *string
			var version *int64 // NULL: a repeatable migration
			if err = rows.Scan(&version, &m.Name, &m.Outcome, &dur, &wal, &rels, &note); err != nil {
				break
			}
			if version != nil {
				m.Version = *version
			} else {
				m.Repeatable = true
			}
			if dur != nil {
				m.Duration = *dur
				m.DurationMS = float64(m.Duration.Microseconds()) / 1000
			}
			if wal != nil {
				m.WALBytes = *wal
			}
			if note != nil {
				m.Note = *note
			}
			if len(rels) > 0 {
				if err = json.Unmarshal(rels, &m.Relations); err != nil {
					break
				}
			}
			switch m.Outcome {
			case OutcomeRehearsed:
				res.Rehearsed++
			case OutcomeNotRehearsed:
				res.NotRehearsed++
			}
			res.Migrations = append(res.Migrations, m)
		}
		rows.Close()
		if err == nil {
			err = rows.Err()
		}
	}
	if err != nil {
		_ = tx.Rollback(bg)
		var pgErr *pgconn.PgError
		switch {
		case connectionLost(conn, err):
			// Nothing of a rehearsal is ever committed.
			return nil, &ConnectionLostError{Op: "rehearsing", Err: err}
		case errors.As(err, &pgErr) && (pgErr.Code == codeBlocked || !strings.HasPrefix(pgErr.Code, "PM")):
			// A migration failed (or was blocked): reported as Push reports it.
			return nil, c.pushError(ctx, conn, migrations, route, 0, err)
		}
		return nil, engineError("rehearsing", err)
	}
	results := make([]MigrationResult, len(res.Migrations))
	for i := range res.Migrations {
		results[i] = res.Migrations[i].MigrationResult
	}
	addFiles(results, migrations)
	for i := range res.Migrations {
		res.Migrations[i].MigrationResult = results[i]
	}
	res.Duration = time.Since(start)
	return res, nil
}
