package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"

	pgmig "github.com/pgmig/pgmig/gowrapper"
)

func TestConnectionLostOutput(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		err  *pgmig.ConnectionLostError
		want []string
	}{
		{&pgmig.ConnectionLostError{Op: "pushing migrations", OutcomeUnknown: true, Err: io.ErrUnexpectedEOF},
			[]string{"whether the migrations were committed is unknown", "Re-running `pgmig push` is safe", "pgmig status"}},
		{&pgmig.ConnectionLostError{Op: "pushing migrations", Err: io.ErrUnexpectedEOF},
			[]string{"nothing of this push was applied", "re-running `pgmig push` is safe"}},
		{&pgmig.ConnectionLostError{Op: "pushing migrations", Applied: 3, Err: io.ErrUnexpectedEOF},
			[]string{"nothing of that step was applied", "3 migrations committed by earlier steps of this push stay applied", "safe"}},
		{&pgmig.ConnectionLostError{Op: "applying", Version: 7, Err: io.ErrUnexpectedEOF},
			[]string{"non-transactional migration 7", "pgmig resolve 7 --retry", "safe"}},
	} {
		var stderr bytes.Buffer
		newOutput(io.Discard, &stderr, false, false).fail(tc.err)
		got := strings.ToLower(stderr.String())
		for _, w := range tc.want {
			if !strings.Contains(got, strings.ToLower(w)) {
				t.Errorf("%v: output does not say %q:\n%s", tc.err, w, stderr.String())
			}
		}
		if code := exitCode(tc.err); code != exitLost {
			t.Errorf("%v: exit %d, want %d", tc.err, code, exitLost)
		}
		var stdout bytes.Buffer
		newOutput(&stdout, io.Discard, true, false).report(nil, tc.err)
		var j struct {
			Error struct {
				ExitCode       int  `json:"exit_code"`
				ConnectionLost bool `json:"connection_lost"`
				OutcomeUnknown bool `json:"outcome_unknown"`
			} `json:"error"`
		}
		if err := json.Unmarshal(stdout.Bytes(), &j); err != nil {
			t.Fatal(err)
		}
		if j.Error.ExitCode != exitLost || !j.Error.ConnectionLost || j.Error.OutcomeUnknown != tc.err.OutcomeUnknown {
			t.Errorf("%v: --json error %s", tc.err, stdout.String())
		}
	}
	if errors.Is(&pgmig.ConnectionLostError{}, pgmig.ErrOutcomeUnknown) {
		t.Error("a rolled-back loss matches ErrOutcomeUnknown")
	}
}
