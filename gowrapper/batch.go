package pgmig

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"time"
)

// batchEntry is one element of the jsonb batch (docs/sql-api.md).
type batchEntry struct {
	// Version: none (0) for a repeatable migration.
	Version int64 `json:"version,omitempty"`
	// Repeatable: a repeatable migration (no version; docs/sql-api.md,
	// "Repeatable migrations").
	Repeatable    bool   `json:"repeatable,omitempty"`
	Name          string `json:"name"`
	Label         string `json:"label,omitempty"`
	SQL           string `json:"sql,omitempty"`
	Down          string `json:"down,omitempty"`
	Transactional bool   `json:"transactional"`
	// CommitAfter lets the engine's 55P04 hint name the marker when the
	// batch is applied in one call (psql).
	CommitAfter bool   `json:"commit_after,omitempty"`
	Checksum    string `json:"checksum"`
	// LockTimeout is Migration.LockTimeout (`---- pgmig: lock-timeout D
	// ----`) in milliseconds, as the engine's "lock_timeout" key takes it.
	LockTimeout string `json:"lock_timeout,omitempty"`
	// Statements: where each statement of SQL starts, in characters, when
	// there is more than one: the engine then runs them one by one and names
	// the one that fails, with its line (docs/sql-api.md, "Batch format").
	Statements []int `json:"statements,omitempty"`
}

// Batch encodes migrations as migrate_apply's batch argument, full SQL
// included. The result can be passed to psql as is:
// select * from migrate_apply('<batch>'::jsonb).
func Batch(migrations []*Migration) ([]byte, error) {
	return encodeBatch(migrations, func(*Migration) bool { return true })
}

// Manifest encodes migrations as a manifest: versions, names and checksums,
// no SQL. It is enough for the engine to tell whether anything is pending
// or drifted, at a fraction of the size.
func Manifest(migrations []*Migration) ([]byte, error) {
	return encodeBatch(migrations, func(*Migration) bool { return false })
}

func encodeBatch(migrations []*Migration, withSQL func(*Migration) bool) ([]byte, error) {
	entries := make([]batchEntry, len(migrations))
	for i, m := range migrations {
		entries[i] = newBatchEntry(m, withSQL(m))
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	// SQL is full of < > &: HTML escaping would only inflate the upload.
	enc.SetEscapeHTML(false)
	if err := enc.Encode(entries); err != nil {
		return nil, err
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}

// newBatchEntry is m's batch entry, with its SQL or as a manifest entry
// (checksum only). A repeatable migration has no version (nor label, down
// SQL or markers: the loader refuses them).
func newBatchEntry(m *Migration, withSQL bool) batchEntry {
	e := batchEntry{Version: m.Version, Name: m.Name, Label: m.Label, Transactional: m.Transactional, Checksum: m.Checksum}
	if m.Repeatable {
		e = batchEntry{Repeatable: true, Name: m.Name, Transactional: true, Checksum: m.Checksum}
	}
	if withSQL {
		e.SQL = m.SQL
		if !m.Repeatable {
			e.CommitAfter = m.CommitAfter
			if m.LockTimeout != nil {
				e.LockTimeout = strconv.FormatInt(ceilMillis(*m.LockTimeout), 10) + "ms"
			}
			e.Down = m.Down
		}
		if m.Transactional {
			if starts := statementStarts(m.SQL); len(starts) > 1 {
				e.Statements = starts
			}
		}
	}
	return e
}

// ceilMillis is d in whole milliseconds, rounded up: lock_timeout counts
// milliseconds, and a timeout must not round down to 0 (no limit).
func ceilMillis(d time.Duration) int64 {
	return int64((d + time.Millisecond - 1) / time.Millisecond)
}

// HistoryDigest is what the engine's migrate_history_digest() returns when exactly these
// migrations are applied, unchanged: the lowercase hex sha256 over one line per migration in
// version order, "<version>\t<name>\t<checksum>\n", then one line per repeatable migration in
// name order (byte order), "R\t<name>\t<checksum>\n".
func HistoryDigest(migrations []*Migration) string {
	sorted := migrations
	// Versioned first, by version; then repeatable, by name (Load's order).
	order := func(a, b *Migration) int {
		if a.Repeatable != b.Repeatable {
			if a.Repeatable {
				return 1
			}
			return -1
		}
		return cmp.Or(cmp.Compare(a.Version, b.Version), strings.Compare(a.Name, b.Name))
	}
	if !slices.IsSortedFunc(sorted, order) {
		sorted = slices.Clone(migrations)
		slices.SortStableFunc(sorted, order)
	}
	h := sha256.New()
	var line []byte
	for _, m := range sorted {
		if m.Repeatable {
			line = append(line[:0], 'R')
		} else {
			line = strconv.AppendInt(line[:0], m.Version, 10)
		}
		line = append(line, '\t')
		line = append(line, m.Name...)
		line = append(line, '\t')
		line = append(line, m.Checksum...)
		line = append(line, '\n')
		h.Write(line)
	}
	return hex.EncodeToString(h.Sum(nil))
}
