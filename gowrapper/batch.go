package pgmig

import (
	"bytes"
	"encoding/json"
)

// batchEntry is one element of the jsonb batch (docs/sql-api.md).
type batchEntry struct {
	Version       int64  `json:"version"`
	Name          string `json:"name"`
	SQL           string `json:"sql,omitempty"`
	Down          string `json:"down,omitempty"`
	Transactional bool   `json:"transactional"`
	Checksum      string `json:"checksum"`
}

// Batch encodes migrations as migrate_apply's batch argument, full SQL
// included. The result can be passed to psql as is:
// select * from migrate_apply('<batch>'::jsonb).
func Batch(migrations []*Migration) ([]byte, error) { return encodeBatch(migrations, false) }

// Manifest encodes migrations as a manifest: versions, names and checksums,
// no SQL. It is enough for the engine to tell whether anything is pending
// or drifted, at a fraction of the size.
func Manifest(migrations []*Migration) ([]byte, error) { return encodeBatch(migrations, true) }

func encodeBatch(migrations []*Migration, manifest bool) ([]byte, error) {
	entries := make([]batchEntry, len(migrations))
	for i, m := range migrations {
		entries[i] = batchEntry{Version: m.Version, Name: m.Name, Transactional: m.Transactional, Checksum: m.Checksum}
		if !manifest {
			entries[i].SQL = m.SQL
			entries[i].Down = m.Down
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
