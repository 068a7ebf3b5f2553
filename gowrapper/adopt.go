package pgmig

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// Outcomes of Adopt.
const (
	// OutcomeAdopted: the other tool had applied it; now recorded in
	// pgmig's history (nothing ran).
	OutcomeAdopted Outcome = "adopted"
	// OutcomePendingAdopt: a dry run would adopt it.
	OutcomePendingAdopt Outcome = "pending_adopt"
)

// ErrAdoptRefused: the other tool's history is not clean (golang-migrate
// dirty, a failed Flyway migration, a goose version recorded as rolled
// back), or does not match the files (a version without a file, a
// changed checksum, files the tool would still apply). The engine's
// refusal (PM020) lists every problem with the tool's own fix in its
// DETAIL; nothing was adopted.
var ErrAdoptRefused = errors.New("the other tool's history cannot be adopted as it is")

// codeAdoptRefused is the engine's SQLSTATE for ErrAdoptRefused.
const codeAdoptRefused = "PM020"

// AdoptOpts configures Adopt. A nil *AdoptOpts means defaults.
type AdoptOpts struct {
	// Table is the tool's history table, as SQL reads a name ("app.goose_db_version";
	// quote a name with capitals: `"Migrations"`); an unqualified name is
	// looked up in the connection's search_path, as the tool looks it up.
	// "": the tool's default (AdoptTable).
	Table string
	// DropOld drops the tool's table in the same transaction, once its
	// history is recorded (its rows are kept in pgmig.audit).
	DropOld bool
	// DryRun takes the lock and checks everything, records nothing
	// (OutcomePendingAdopt).
	DryRun bool
	// LockTimeout: wait at most this long for the history lock and the
	// tool's table (0: the server's lock_timeout, by default forever).
	LockTimeout time.Duration
}

// AdoptTable is the table tool keeps its history in by default: tern's
// public.schema_version, golang-migrate's and dbmate's schema_migrations,
// goose's goose_db_version, sql-migrate's gorp_migrations, Flyway's
// flyway_schema_history ("" for a format that is no tool's).
func AdoptTable(tool Format) string {
	return map[Format]string{
		FormatTern:          "public.schema_version",
		FormatGolangMigrate: "schema_migrations",
		FormatGoose:         "goose_db_version",
		FormatDbmate:        "schema_migrations",
		FormatSQLMigrate:    "gorp_migrations",
		FormatFlyway:        "flyway_schema_history",
	}[tool]
}

// Adopt takes over the history of another migration tool in a database
// that tool migrated (docs/adopt.md): under the migration lock the engine
// reads the tool's own history table, checks it against migrations (the
// tool's directory, loaded as usual), and records what the tool applied as
// applied, without running anything, audited in pgmig.audit with the
// tool's rows. Later pushes apply only what the tool had not applied.
//
// It refuses with ErrAdoptRefused, changing nothing, when the tool's
// history is not clean or does not match the files; the error's
// *pgconn.PgError DETAIL lists each problem with the tool's own fix.
// Adopting again is a no-op (OutcomeAlreadyApplied). For Flyway the
// checksums Flyway recorded are compared with the files'
// (Migration.FlywayChecksum); the other tools record none.
func (c *Client) Adopt(ctx context.Context, migrations []*Migration, tool Format, opts *AdoptOpts) (*HistoryResult, error) {
	if opts == nil {
		opts = &AdoptOpts{}
	}
	op := fmt.Sprintf("adopting %s's history", tool)
	var table any
	if opts.Table != "" {
		table = opts.Table
	}
	var checksums any
	if tool == FormatFlyway {
		sums := map[string]int32{}
		for _, m := range migrations {
			if sum, ok := m.FlywayChecksum(); ok {
				sums[strconv.FormatInt(m.Version, 10)] = sum
			}
		}
		if len(sums) > 0 {
			b, err := json.Marshal(sums)
			if err != nil {
				return nil, fmt.Errorf("%s: encoding checksums: %w", op, err)
			}
			checksums = string(b)
		}
	}
	changed := OutcomeAdopted
	if opts.DryRun {
		changed = OutcomePendingAdopt
	}
	res, err := c.historyCall(ctx, op, migrations, changed, `select version, name, outcome, duration, applied_at from
		pgmig.migrate_adopt($1::jsonb, $2::text, table_name => $3::text, checksums => $4::jsonb, drop_old => $5::boolean,
		dry_run => $6::boolean, lock_timeout => $7::interval, client_info => $8::text, scope => $9::text)`,
		string(tool), table, checksums, opts.DropOld, opts.DryRun, intervalArg(opts.LockTimeout), c.config.ClientInfo, c.scope())
	var pgErr *pgconn.PgError
	if err != nil && errors.As(err, &pgErr) && pgErr.Code == codeAdoptRefused {
		return nil, fmt.Errorf("%s: %w: %w", op, ErrAdoptRefused, pgErr)
	}
	return res, err
}

// FlywayChecksum is the checksum Flyway records for the migration's file
// in flyway_schema_history, and false when the migration was not read from
// a Flyway file. Flyway (ChecksumCalculator in flyway-core) reads the file
// line by line with Java's BufferedReader.readLine, which drops every line
// terminator (\n, \r and \r\n alike), removes a byte-order mark from the
// first line, feeds each line's UTF-8 bytes to java.util.zip.CRC32 and
// stores the value as a signed 32-bit integer. It checksums the file as
// written: placeholders are not replaced.
func (m *Migration) FlywayChecksum() (int32, bool) {
	if m.Format != FormatFlyway || m.Repeatable {
		return 0, false
	}
	return flywayChecksum(m.text), true
}

// flywayChecksum is Flyway's checksum of a file's text: CRC-32 (IEEE) of
// the text without its \r and \n characters and without a leading
// byte-order mark.
func flywayChecksum(text string) int32 {
	text = strings.TrimPrefix(text, byteOrderMark)
	h := crc32.NewIEEE()
	start := 0
	for i := 0; i < len(text); i++ {
		if text[i] == '\r' || text[i] == '\n' {
			_, _ = h.Write([]byte(text[start:i]))
			start = i + 1
		}
	}
	_, _ = h.Write([]byte(text[start:]))
	return int32(h.Sum32())
}
