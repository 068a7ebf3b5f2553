package main

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/pgmig/pgmig/tests/pgtest"
)

// cluster is the benchmark's own PostgreSQL, started like the test harness's
// clusters (pgtest.StartLocal) but, unlike them, with the durability defaults
// (fsync, synchronous_commit, full_page_writes on), because commits and their
// WAL flushes are part of what users pay for. Everything else
// (max_connections = 100, max_locks_per_transaction = 64, shared_buffers...)
// stays the default.
type cluster struct {
	local  *pgtest.Local
	binDir string
	port   int
}

func startCluster(ctx context.Context, settings []string) (*cluster, error) {
	l, err := pgtest.StartLocal(ctx, settings...)
	if err != nil {
		return nil, err
	}
	return &cluster{local: l, binDir: l.BinDir(), port: l.Port()}, nil
}

func (c *cluster) url(db string) string { return c.local.URL(db) }

// urlAt is a URL for db through another port (the delaying proxy).
func (c *cluster) urlAt(port int, db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", port, db)
}

func (c *cluster) destroy() { _ = c.local.Destroy() }

func (c *cluster) version() string {
	out, err := exec.Command(filepath.Join(c.binDir, "postgres"), "--version").Output()
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(out))
}
