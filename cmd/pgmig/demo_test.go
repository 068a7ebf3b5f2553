package main

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/pgmig/pgmig/tests/pgtest"
)

// TestDemo runs `make demo`'s script with this test's pgmig binary and the
// harness's server binaries: the front door must work on a fresh checkout.
func TestDemo(t *testing.T) {
	t.Parallel()
	env := []string{"PGMIG_DEMO_BINARY=" + binary}
	if dir := pgtest.Server(t).BinDir(); dir != "" {
		env = append(env, "PGMIG_PGBIN="+dir)
	}
	cmd := exec.Command("bash", "../../examples/demo.sh")
	cmd.Env = pgmigCommand("", env).Env
	out, err := cmd.CombinedOutput()
	text := string(out)
	if err != nil {
		t.Fatalf("examples/demo.sh: %v\n%s", err, text)
	}
	for _, want := range []string{
		"$ pgmig install\nInstalled the pgmig engine",
		"pgmig: created directory migrations",
		"Applied 2 migrations in ",
		"migrations/003_add_profiles.sql:3:14: ERROR:  syntax error at or near \"nott\"\nLINE 3:     bio text nott null\n                     ^\n",
		"Migration 3 (add_profiles) failed, nothing was applied: the database was left unchanged at version 2.",
		"(exit 1: the migration failed and was rolled back)",
		"the database is at version 3 (3 migrations applied)",
		"$ pgmig push --dir migrations\nNothing to apply: the database is at version 3.",
		"seed_admin       | already_applied",
		"== demo done",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("the demo's output lacks %q:\n%s", want, text)
		}
	}
}
