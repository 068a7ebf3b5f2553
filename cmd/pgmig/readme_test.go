package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/pgmig/pgmig/tests/pgtest"
)

// The README is the newcomer's first contact: its quick start is run as
// written, its Go snippet compiled, its references followed.

const readmePath = "../../README.md"

// readmeBlock is the fenced code between <!-- name:begin --> and
// <!-- name:end -->, without the fences.
func readmeBlock(t *testing.T, name string) string {
	t.Helper()
	readme, err := os.ReadFile(readmePath)
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(readme), "<!-- "+name+":begin -->")
	block, _, ok2 := strings.Cut(rest, "<!-- "+name+":end -->")
	if !ok || !ok2 {
		t.Fatalf("README.md lost its %s:begin/%s:end markers", name, name)
	}
	block = strings.TrimSpace(block)
	if i := strings.IndexByte(block, '\n'); i >= 0 && strings.HasPrefix(block, "```") {
		block = block[i+1:]
	}
	return strings.TrimSuffix(strings.TrimSpace(block), "```")
}

// TestREADMEQuickStart runs the quick start's shell lines with bash, as a
// reader would paste them, in an empty directory, with the built pgmig on
// PATH and the example DATABASE_URL pointed at a fresh database.
func TestREADMEQuickStart(t *testing.T) {
	t.Parallel()
	script := readmeBlock(t, "quickstart")
	db := pgtest.NewEmptyDB(t)
	export := regexp.MustCompile(`(?m)^export DATABASE_URL=\S+`)
	if !export.MatchString(script) {
		t.Fatalf("the quick start no longer sets DATABASE_URL:\n%s", script)
	}
	script = export.ReplaceAllLiteralString(script, "export DATABASE_URL='"+db.URL+"'")
	// The test's environment without PG* and DATABASE_URL, pgmig on PATH
	// (the last PATH wins).
	env := pgmigCommand("", []string{"PATH=" + filepath.Dir(binary) + string(os.PathListSeparator) + os.Getenv("PATH")}).Env
	cmd := exec.Command("bash", "-euo", "pipefail", "-c", script)
	cmd.Dir, cmd.Env = t.TempDir(), env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("the README's quick start failed: %v\n%s", err, out.String())
	}
	for _, want := range []string{
		"Installed the pgmig engine",
		"created directory migrations",
		"applied 001_create_accounts.sql (",
		"Applied 1 migration in ",
		"Nothing to apply: the database is at version 1.",
		"the database is at version 1 (1 migration applied)",
		"Nothing pending.",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the quick start's output lacks %q:\n%s", want, out.String())
		}
	}
	var n int
	if err := db.Conn(t).QueryRow(context.Background(), "select count(*) from pg_class where relname = 'accounts'").Scan(&n); err != nil || n != 1 {
		t.Errorf("table accounts after the quick start: %d %v", n, err)
	}
}

// TestREADMEGoSnippetCompiles builds the README's Go program in a module
// of its own that uses this checkout (a replace directive), as a reader's
// project would.
func TestREADMEGoSnippetCompiles(t *testing.T) {
	t.Parallel()
	src := readmeBlock(t, "gosnippet")
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	gomod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	gosum, err := os.ReadFile(filepath.Join(root, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	// The reader's go.mod: this module replaced by the checkout, and its
	// requirements (so that the build needs nothing from the network).
	_, requires, _ := strings.Cut(string(gomod), "\nrequire")
	mod := "module readme.example/app\n\ngo 1.26.0\n\nrequire github.com/pgmig/pgmig v0.0.0-00010101000000-000000000000\n\n" +
		"replace github.com/pgmig/pgmig => " + root + "\n\nrequire" + requires
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"go.mod": mod, "go.sum": string(gosum), "main.go": src,
		"migrations/001_create_accounts.sql": "create table accounts (id bigint primary key);\n",
	})
	cmd := exec.Command("go", "build", "-o", filepath.Join(dir, "app"), ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOPROXY=off", "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the README's Go snippet does not compile: %v\n%s\n--- main.go\n%s", err, out, src)
	}
}

// TestREADMEReferences: every file the README links to or names exists,
// and it does not tell readers to `go install` a module that is not
// published.
func TestREADMEReferences(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile(readmePath)
	if err != nil {
		t.Fatal(err)
	}
	text := string(readme)
	var refs []string
	for _, m := range regexp.MustCompile(`\]\(([^)#\s]+)(#[^)]*)?\)`).FindAllStringSubmatch(text, -1) {
		if !strings.Contains(m[1], "://") {
			refs = append(refs, m[1])
		}
	}
	for _, m := range regexp.MustCompile("`([A-Za-z0-9_./-]+\\.md)`").FindAllStringSubmatch(text, -1) {
		refs = append(refs, m[1])
	}
	if len(refs) < 5 {
		t.Fatalf("found only %d references in the README: %v", len(refs), refs)
	}
	for _, ref := range refs {
		if _, err := os.Stat(filepath.Join("../..", ref)); err != nil {
			t.Errorf("README.md refers to %s, which is not in the repository", ref)
		}
	}
	if regexp.MustCompile(`go install \S+@latest`).MatchString(text) && !strings.Contains(text, "make build") {
		t.Error("README.md says go install ...@latest without how to build from a checkout")
	}
	if regexp.MustCompile("(?m)^go install ").MatchString(text) {
		t.Error("README.md tells readers to go install a module that is not published")
	}
}

// TestDocsConfigExamples: every config file shown in the README and in
// docs/cli.md is accepted by pgmig as it is.
func TestDocsConfigExamples(t *testing.T) {
	t.Parallel()
	n := 0
	for _, doc := range []string{readmePath, "../../docs/cli.md"} {
		b, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range regexp.MustCompile("(?s)```ini\n(.*?)```").FindAllStringSubmatch(string(b), -1) {
			n++
			dir := t.TempDir()
			writeFiles(t, dir, map[string]string{"example.conf": m[1]})
			pgmigRun(t, dir, []string{"DEPLOY_PASSWORD=pw"}, "config", "--config", "example.conf").must(t, exitOK, "Config file: example.conf (flag --config)")
		}
	}
	if n < 2 {
		t.Fatalf("found %d config examples in the README and docs/cli.md", n)
	}
}
