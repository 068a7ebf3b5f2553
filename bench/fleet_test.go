package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

// TestFleetTiny runs the fleet benchmark's whole code path at a tiny scale
// (3 databases × 3 migrations, one run of each contender, the real pgmig
// and tern CLIs, a real server) so that it cannot rot: every contender must
// succeed on every database, the report must have its rows and model, the
// plot must be written, and merging the section into an existing
// BENCHMARKS.md must keep the rest of it. Nothing depends on timings.
func TestFleetTiny(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Fatal("the fleet benchmark's shell loops need bash")
	}
	ctx := context.Background()
	tmp := t.TempDir()
	cli := filepath.Join(tmp, "pgmig")
	build := exec.Command("go", "build", "-o", cli, "../cmd/pgmig")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/pgmig: %v\n%s", err, out)
	}
	cl, err := startCluster(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.destroy)
	admin, err := pgx.Connect(ctx, cl.url("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Close(ctx) })
	e := &env{cfg: &config{}, cl: cl, admin: admin, tmp: tmp, wl: map[string]*workload{},
		r: &runner{cli: cli}, report: &report{}}
	if err := e.describe(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.makeTemplate(ctx); err != nil {
		t.Fatal(err)
	}
	fc := fleetConfig{dbs: 3, n: 3, runs: 1, parallels: []int{1, 2}}
	if err := e.fleetScenario(ctx, fc); err != nil {
		t.Fatal(err)
	}
	fr := e.fleet
	for _, c := range fc.contenders() {
		if f := fr.failures[c]; len(f) > 0 {
			t.Errorf("%s failed: %v", c, f)
		}
		if got := len(fr.samples[c]); got != 1 {
			t.Errorf("%s: %d samples, want 1", c, got)
			continue
		}
		s := fr.samples[c][0]
		if s.wall <= 0 || s.client <= 0 {
			t.Errorf("%s: wall %v, client CPU %v: not measured", c, s.wall, s.client)
		}
	}
	// Every run's databases are gone again.
	var left int
	if err := admin.QueryRow(ctx, "select count(*) from pg_database where datname like 'fleet\\_%'").Scan(&left); err != nil || left != 0 {
		t.Errorf("%d fleet databases left (%v)", left, err)
	}

	// The section goes into an existing file between the other sections,
	// which stay byte for byte, and replaces itself on the next run.
	out := filepath.Join(tmp, "BENCHMARKS.md")
	before := "# Benchmarks\n\n" + beginMarker + "\nother numbers 1.23 s\n" + endMarker + "\n\n"
	after := "## What the numbers say\n\nanalysis\n"
	if err := os.WriteFile(out, []byte(before+after), 0o644); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := fr.write(out, e.report); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	if !strings.HasPrefix(doc, before+fleetHeading+"\n\n"+fleetBegin) || !strings.HasSuffix(doc, fleetEnd+"\n\n"+after) ||
		strings.Count(doc, fleetBegin) != 1 {
		t.Errorf("merged file:\n%s", doc)
	}
	for _, want := range []string{"| pgmig --parallel 1 | 1 |", "| pgmig --parallel 2 | 1 |", "| pgmig loop | 1 |", "| tern loop | 1 |",
		"`pgmig push --dir migrations --targets targets.txt --parallel 2`", "tern migrate --migrations migrations",
		"Where it saturates, and a model", "3 databases × 3 realistic DDL migrations"} {
		if !strings.Contains(doc, want) {
			t.Errorf("the fleet section lacks %q:\n%s", want, doc)
		}
	}
	// A saved run renders the same section again (-fleet-render).
	js := filepath.Join(tmp, "fleet.json")
	if err := fr.save(js, e.report); err != nil {
		t.Fatal(err)
	}
	rep := &report{}
	again, err := loadFleet(js, rep)
	if err != nil {
		t.Fatal(err)
	}
	if a, b := fr.markdown(e.report), again.markdown(rep); a[strings.Index(a, "- Fleet"):] != b[strings.Index(b, "- Fleet"):] {
		t.Errorf("rendered from the saved run:\n%s\nwant:\n%s", b, a)
	}
	png := filepath.Join(tmp, "fleet.png")
	if err := fr.plotPNG(png); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(png); err != nil || st.Size() < 1000 {
		t.Errorf("plot: %v", err)
	}
}

// TestMergeSection: a file without the markers gets the section before the
// analysis heading, or at the end; with them, only what is between changes.
func TestMergeSection(t *testing.T) {
	for _, tc := range []struct{ doc, want string }{
		{"", "# Benchmarks\n\n## H\n\n<b>\nX\n<e>\n\n"},
		{"# B\n\ntext\n", "# B\n\ntext\n\n## H\n\n<b>\nX\n<e>\n\n"},
		{"# B\n\n## What the numbers say\n\nz\n", "# B\n\n## H\n\n<b>\nX\n<e>\n\n## What the numbers say\n\nz\n"},
		{"a\n<b>\nold\n<e>\nz\n", "a\n<b>\nX\n<e>\nz\n"},
	} {
		if got := mergeSection(tc.doc, "<b>", "<e>", "X\n", "## H", "## What the numbers say"); got != tc.want {
			t.Errorf("mergeSection(%q) = %q, want %q", tc.doc, got, tc.want)
		}
	}
}
