package pgmig_test

import (
	"context"
	"testing"

	"github.com/pgmig/pgmig/tests/pgtest"
)

// throwawayCluster starts a private PostgreSQL cluster with default
// settings plus settings (e.g. "max_locks_per_transaction=10"), installs
// the engine into its postgres database and returns a URL for it. The
// shared test server cannot serve here: its max_connections=300 makes the
// lock table several times bigger than a default server's.
func throwawayCluster(t *testing.T, settings ...string) string {
	t.Helper()
	url := pgtest.PrivateCluster(t, settings...)
	c := connect(t, url, nil)
	if _, err := c.Install(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	return url
}
