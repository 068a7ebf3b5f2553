package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgmig/pgmig/tests/pgtest"
)

// TestCLIRepeatable: repeatable migrations (a repeatable/ directory in tern's
// format) through the built binary: plan and status list them, push applies
// them after the versioned ones and again only when changed, --json says
// which, a file removed is reported, a failing one names its file and line.
func TestCLIRepeatable(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	dir := t.TempDir()
	writeFiles(t, dir, baseMigrations)
	writeFiles(t, dir, map[string]string{
		"repeatable/user_emails.sql": "create or replace view user_emails as select id, email from users;\n",
		"repeatable/z_grants.sql":    "grant select on user_emails to public;\n",
	})
	env := []string{"DATABASE_URL=" + db.URL}

	pgmigRun(t, dir, env, "plan").must(t, exitOK, "4 migrations would be applied", "002_add_email.sql",
		"repeatable/z_grants.sql", "repeatable/user_emails.sql", "repeatable: new or changed")
	r := pgmigRun(t, dir, env, "push").must(t, exitOK, "applied repeatable/z_grants.sql (", "applied repeatable/user_emails.sql (",
		"Applied 4 migrations (2 repeatable) in ", "now at version 2.")
	// In name order, after the versioned ones.
	if i, j, k := strings.Index(r.stdout, "002_add_email.sql"), strings.Index(r.stdout, "repeatable/user_emails.sql"), strings.Index(r.stdout, "repeatable/z_grants.sql"); !(i < j && j < k) {
		t.Errorf("push order:\n%s", r.stdout)
	}
	pgmigRun(t, dir, env, "status").must(t, exitOK, "at version 2 (2 migrations applied, and 2 repeatable migrations)",
		"R        z_grants", "user_emails", "repeatable", "Nothing pending.")
	pgmigRun(t, dir, env, "push").must(t, exitOK, "Nothing to apply: the database is at version 2.")

	// Changed: applied again; the other one is not.
	writeFiles(t, dir, map[string]string{"repeatable/user_emails.sql": "create or replace view user_emails as select id, email, email is null as no_email from users;\n"})
	pgmigRun(t, dir, env, "plan").must(t, exitOK, "1 migration would be applied", "repeatable/user_emails.sql")
	var plan struct {
		Pending    int `json:"pending"`
		Migrations []struct {
			Name       string `json:"name"`
			Outcome    string `json:"outcome"`
			Repeatable bool   `json:"repeatable"`
		} `json:"migrations"`
	}
	r = pgmigRun(t, dir, env, "plan", "--json").must(t, exitOK)
	if err := json.Unmarshal([]byte(r.stdout), &plan); err != nil || plan.Pending != 1 || len(plan.Migrations) != 4 ||
		plan.Migrations[2].Outcome != "repeatable_pending" || plan.Migrations[3].Outcome != "repeatable_unchanged" || !plan.Migrations[2].Repeatable {
		t.Fatalf("plan --json: %v %+v\n%s", err, plan, r.stdout)
	}
	var pushed struct {
		Applied           int `json:"applied"`
		RepeatableApplied int `json:"repeatable_applied"`
		Migrations        []struct {
			Name    string `json:"name"`
			Outcome string `json:"outcome"`
			File    string `json:"file"`
		} `json:"migrations"`
	}
	r = pgmigRun(t, dir, env, "push", "--json").must(t, exitOK)
	if err := json.Unmarshal([]byte(r.stdout), &pushed); err != nil || pushed.Applied != 1 || pushed.RepeatableApplied != 1 ||
		pushed.Migrations[2].Outcome != "repeatable_applied" || pushed.Migrations[2].File != "repeatable/user_emails.sql" || pushed.Migrations[3].Outcome != "repeatable_unchanged" {
		t.Fatalf("push --json: %v %+v\n%s", err, pushed, r.stdout)
	}

	// Removed from the files: reported, not an error.
	if err := os.Remove(filepath.Join(dir, "repeatable", "z_grants.sql")); err != nil {
		t.Fatal(err)
	}
	pgmigRun(t, dir, env, "status").must(t, exitOK, "Repeatable migrations missing from the files (applied earlier; not an error): z_grants.")
	pgmigRun(t, dir, env, "push").must(t, exitOK, "repeatable migration(s) z_grants applied earlier, missing from these files")

	// A failing one: its file and line, nothing of the transaction applied.
	writeFiles(t, dir, map[string]string{
		"003_phone.sql":              "alter table users add column phone text;\n",
		"repeatable/user_emails.sql": "create or replace view user_emails as\nselect id, email, email is null as no_email, phone from users;\nselect 1/0;\n",
	})
	r = pgmigRun(t, dir, env, "push")
	if r.code == exitOK {
		t.Fatalf("a failing repeatable migration: exit 0\n%s", r.stdout)
	}
	r.stderrHas(t, "repeatable/user_emails.sql:3", "22012", "Repeatable migration user_emails failed, nothing was applied")
	pgmigRun(t, dir, env, "status").must(t, exitOK, "at version 2 ", "Pending (2):", "003_phone.sql", "repeatable/user_emails.sql")
}
