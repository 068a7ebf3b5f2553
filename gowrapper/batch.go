package pgmig

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"slices"
	"strconv"
	"time"
)

// batchEntry is one element of the jsonb batch (docs/sql-api.md).
type batchEntry struct {
	Version       int64  `json:"version"`
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
		entries[i] = batchEntry{Version: m.Version, Name: m.Name, Label: m.Label, Transactional: m.Transactional, Checksum: m.Checksum}
		if withSQL(m) {
			entries[i].CommitAfter = m.CommitAfter
			if m.LockTimeout != nil {
				entries[i].LockTimeout = strconv.FormatInt(ceilMillis(*m.LockTimeout), 10) + "ms"
			}
			entries[i].SQL = m.SQL
			entries[i].Down = m.Down
			if m.Transactional {
				if starts := statementStarts(m.SQL); len(starts) > 1 {
					entries[i].Statements = starts
				}
			}
		}
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

// ceilMillis is d in whole milliseconds, rounded up: lock_timeout counts
// milliseconds, and a timeout must not round down to 0 (no limit).
func ceilMillis(d time.Duration) int64 {
	return int64((d + time.Millisecond - 1) / time.Millisecond)
}

// HistoryDigest is what the engine's migrate_history_digest() returns when exactly these
// migrations are applied, unchanged: the lowercase hex sha256 over one line per migration in
// version order, "<version>\t<name>\t<checksum>\n".
func HistoryDigest(migrations []*Migration) string {
	sorted := migrations
	byVersion := func(a, b *Migration) int { return cmp.Compare(a.Version, b.Version) }
	if !slices.IsSortedFunc(sorted, byVersion) { // Load's are sorted
		sorted = slices.Clone(migrations)
		slices.SortStableFunc(sorted, byVersion)
	}
	h := sha256.New()
	var line []byte
	for _, m := range sorted {
		line = strconv.AppendInt(line[:0], m.Version, 10)
		line = append(line, '\t')
		line = append(line, m.Name...)
		line = append(line, '\t')
		line = append(line, m.Checksum...)
		line = append(line, '\n')
		h.Write(line)
	}
	return hex.EncodeToString(h.Sum(nil))
}
