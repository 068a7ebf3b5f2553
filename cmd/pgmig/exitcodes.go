package main

import (
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"
	pgmig "github.com/pgmig/pgmig/gowrapper"
)

// Exit codes (docs/cli.md, "Exit codes"): scripts branch on them, so each
// one keeps its meaning.
const (
	exitOK         = 0
	exitMigration  = 1 // a migration failed: SQL error, nothing applied
	exitUsage      = 2 // usage, configuration, connection, engine missing/unsupported, other
	exitLocked     = 3 // a timeout: another migrator holds the lock, a migration gave up waiting for a table lock, wait ran out of time
	exitValidation = 4 // drift, invalid batch, bad migration files
	exitLost       = 5 // connection lost mid-push: re-run (outcome possibly unknown)
)

// exitCodes is the table `pgmig help` prints.
var exitCodes = []struct {
	code    int
	meaning string
}{
	{exitOK, "success (including \"nothing to apply\")"},
	{exitMigration, "a migration failed; its transaction was rolled back (a fleet push: some target failed)"},
	{exitUsage, "usage, configuration, connection or engine problem (not installed, unsupported version)"},
	{exitLocked, "timeout: another migrator holds the lock; a migration waited longer than --ddl-lock-timeout for a table lock (after --retries); `pgmig wait` ran out of time"},
	{exitValidation, "drift or validation error (changed/missing/out-of-order versions, bad files, an interrupted non-transactional migration waiting for `pgmig resolve`)"},
	{exitLost, "the connection was lost (or the push interrupted) mid-push: re-running push is safe"},
}

// codePM008 is the engine's refusal of a change to pgmig.history; raised
// while a migration runs, the migration is what failed.
const codePM008 = "PM008"

// usageError is a mistake on the command line or in the configuration,
// found before anything is connected to.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// exitCode maps an error to its documented exit code. It looks at types,
// sentinels and SQLSTATEs only, never at message text.
func exitCode(err error) int {
	var merr *pgmig.MigrationError
	var lerr *pgmig.LoadError
	var pgErr *pgconn.PgError
	var uerr *usageError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &uerr):
		return exitUsage
	case errors.Is(err, pgmig.ErrConnectionLost):
		return exitLost
	case errors.As(err, &merr), errors.Is(err, pgmig.ErrNotRunnable), errors.Is(err, pgmig.ErrFleetFailed):
		return exitMigration
	case errors.As(err, &pgErr) && pgErr.Code == codePM008:
		// A migration (or a recorded down SQL) touched the history: that
		// migration failed and was rolled back like any other (issue 9 §5).
		return exitMigration
	case errors.Is(err, pgmig.ErrLockTimeout), errors.Is(err, pgmig.ErrBlocked), errors.Is(err, pgmig.ErrWaitTimeout):
		return exitLocked
	case errors.Is(err, errFailOn):
		return exitValidation
	case errors.Is(err, pgmig.ErrDrift), errors.Is(err, pgmig.ErrInvalidBatch), errors.As(err, &lerr),
		errors.Is(err, pgmig.ErrInterrupted), errors.Is(err, pgmig.ErrIrreversible),
		errors.Is(err, pgmig.ErrNoMigrations), errors.Is(err, pgmig.ErrUnmatchedFile), errors.Is(err, pgmig.ErrAdoptRefused), errorsAreFiles(err):
		return exitValidation
	}
	return exitUsage
}
