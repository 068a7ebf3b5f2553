package pgmig

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

// TestLockTimeoutMarkerLoad: `---- pgmig: lock-timeout D ----` sets
// Migration.LockTimeout in every format, reaches the batch as the engine's
// "lock_timeout" key, and a malformed or second marker is an ErrMarker
// naming the file and line (a misspelt marker must not silently be a
// comment that changes nothing).
func TestLockTimeoutMarkerLoad(t *testing.T) {
	t.Parallel()
	ms, err := Load(mapFS(map[string]string{
		"001_a.sql": "create table a (i int);\n",
		"002_b.sql": "-- waits for the nightly report at most this long\n---- pgmig: lock-timeout 1m30s ----\nalter table a add column j int;\n",
		"003_c.sql": "---- pgmig: lock-timeout 0 ----\r\nalter table a add column k int;\n",
		"004_d.sql": "---- pgmig: lock-timeout 250ms ----\nalter table a add column l int;\n",
	}), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []*time.Duration{nil, ptr(90 * time.Second), ptr(time.Duration(0)), ptr(250 * time.Millisecond)}
	for i, m := range ms {
		if (m.LockTimeout == nil) != (want[i] == nil) || m.LockTimeout != nil && *m.LockTimeout != *want[i] {
			t.Errorf("%s: LockTimeout %v, want %v", m.File, m.LockTimeout, want[i])
		}
	}
	batch, err := Batch(ms)
	if err != nil {
		t.Fatal(err)
	}
	var entries []map[string]any
	if err := json.Unmarshal(batch, &entries); err != nil {
		t.Fatal(err)
	}
	for i, w := range []any{nil, "90000ms", "0ms", "250ms"} {
		if got := entries[i]["lock_timeout"]; got != w {
			t.Errorf("batch entry %d lock_timeout = %v, want %v", i+1, got, w)
		}
	}

	// Other formats: the marker is a line of the up SQL there too.
	gs, err := Load(mapFS(map[string]string{
		"20240101000000_a.sql": "-- +goose Up\n---- pgmig: lock-timeout 5s ----\ncreate table a (i int);\n-- +goose Down\ndrop table a;\n",
	}), nil)
	if err != nil || gs[0].LockTimeout == nil || *gs[0].LockTimeout != 5*time.Second {
		t.Fatalf("goose: %v %v", gs, err)
	}

	for name, tc := range map[string]struct {
		body string
		line int
		msg  string
	}{
		"no unit":     {"select 1;\n---- pgmig: lock-timeout 5 ----\n", 2, `lock-timeout "5"`},
		"negative":    {"---- pgmig: lock-timeout -5s ----\nselect 1;\n", 1, "malformed lock-timeout marker"},
		"no value":    {"select 1;\n\n---- pgmig: lock-timeout ----\n", 3, "malformed lock-timeout marker"},
		"too long":    {"---- pgmig: lock-timeout 600h ----\nselect 1;\n", 1, "from 0 to"},
		"twice":       {"---- pgmig: lock-timeout 1s ----\nselect 1;\n---- pgmig: lock-timeout 2s ----\n", 3, "a second"},
		"misspelt":    {"---- pgmig: lock-timeout: 1s ----\nselect 1;\n", 1, "malformed lock-timeout marker"},
		"after blank": {"\n\n  select 1;\n---- pgmig: lock-timeout 1x ----\n", 4, `lock-timeout "1x"`},
	} {
		_, err := Load(mapFS(map[string]string{"001_a.sql": tc.body}), nil)
		var lerr *LoadError
		var line *LineError
		if !errors.Is(err, ErrMarker) || !errors.As(err, &lerr) || lerr.File != "001_a.sql" || !errors.As(err, &line) ||
			line.Line != tc.line || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: %v, want an ErrMarker at 001_a.sql line %d saying %q", name, err, tc.line, tc.msg)
		}
	}
}

func ptr[T any](v T) *T { return &v }
