package pgmig

import (
	"encoding/json"
	"fmt"
	"testing"
)

// The batch carries commit_after and label only where set, and SQL for every entry.
func TestBatchFields(t *testing.T) {
	t.Parallel()
	var ms []*Migration
	for v := int64(1); v <= 3; v++ {
		ms = append(ms, &Migration{Version: v, Name: fmt.Sprint("m", v), SQL: "select 1", Transactional: true, CommitAfter: v == 2,
			Checksum: checksum("select 1")})
	}
	ms[2].Label = "1.3"
	full, err := Batch(ms)
	if err != nil {
		t.Fatal(err)
	}
	var entries []map[string]any
	if err := json.Unmarshal(full, &entries); err != nil {
		t.Fatal(err)
	}
	if entries[1]["commit_after"] != true || entries[0]["commit_after"] != nil {
		t.Errorf("commit_after in the batch: %v", entries[:2])
	}
	if entries[2]["label"] != "1.3" || entries[0]["label"] != nil {
		t.Errorf("label in the batch: %v", entries)
	}
	for _, e := range entries {
		if e["sql"] != "select 1" {
			t.Errorf("entry without its SQL: %v", e)
		}
	}
	manifest, _ := Manifest(ms)
	entries = nil
	if err := json.Unmarshal(manifest, &entries); err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if _, ok := e["sql"]; ok || e["checksum"] == nil {
			t.Errorf("manifest entry %v", e)
		}
	}
}
