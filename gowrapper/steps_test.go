package pgmig

import (
	"encoding/json"
	"fmt"
	"testing"
)

func TestPlanSteps(t *testing.T) {
	t.Parallel()
	var ms []*Migration
	for v := int64(1); v <= 9; v++ {
		ms = append(ms, &Migration{Version: v, Name: fmt.Sprint("m", v), SQL: "select 1", Transactional: v != 5, CommitAfter: v == 2})
	}
	show := func(steps []step) string {
		s := ""
		for _, st := range steps {
			if st.nontx != nil {
				s += fmt.Sprintf("[nontx %d]", st.nontx.Version)
			} else {
				s += fmt.Sprintf("[%d..%d n=%d]", st.after, st.target, st.count)
			}
		}
		return s
	}
	for _, tc := range []struct {
		pending      []int64
		size         int
		target, want string
	}{
		{[]int64{1, 2, 3, 4, 5, 6, 7, 8, 9}, 0, "", "[0..2 n=2][2..4 n=2][nontx 5][5..0 n=4]"},
		{[]int64{1, 2, 3, 4, 5, 6, 7, 8, 9}, 3, "", "[0..2 n=2][2..4 n=2][nontx 5][5..8 n=3][8..0 n=1]"},
		{[]int64{6, 7, 8, 9}, 2, "", "[0..7 n=2][7..0 n=2]"},
		{[]int64{3, 4}, 0, "", "[0..0 n=2]"},
		{[]int64{}, 0, "", "[0..0 n=0]"},
	} {
		if got := show(planSteps(ms, tc.pending, tc.size, 0)); got != tc.want {
			t.Errorf("pending %v size %d: %s, want %s", tc.pending, tc.size, got, tc.want)
		}
	}
	// A segment's batch carries its own SQL and a manifest for the rest.
	b, err := segmentBatch(ms, 2, 4)
	if err != nil {
		t.Fatal(err)
	}
	var entries []map[string]any
	if err := json.Unmarshal(b, &entries); err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		v := int64(e["version"].(float64))
		_, hasSQL := e["sql"]
		if hasSQL != (v == 3 || v == 4) || e["checksum"] == nil {
			t.Errorf("entry %v", e)
		}
	}
	full, _ := Batch(ms)
	if err := json.Unmarshal(full, &entries); err != nil || entries[1]["commit_after"] != true || entries[0]["commit_after"] != nil {
		t.Errorf("commit_after in the batch: %v %v", entries[:2], err)
	}
}
