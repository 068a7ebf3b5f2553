package pgtest

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/ory/dockertest/v3"
	dc "github.com/ory/dockertest/v3/docker"
)

const dockerPassword = "pgmig"

type dockerServer struct {
	pool     *dockertest.Pool
	resource *dockertest.Resource
}

// startDocker runs postgres:<PGMIG_TEST_PG_VERSION or 17> when a Docker
// engine answers; errUnavailable when none does.
func startDocker(ctx context.Context) (*Cluster, error) {
	pool, err := dockertest.NewPool("")
	if err != nil {
		return nil, fmt.Errorf("%v: %w", err, errUnavailable)
	}
	pingCtx, cancel := context.WithTimeout(ctx, 3*time.Second)
	err = pool.Client.PingWithContext(pingCtx)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("no Docker engine answers (%v): %w", err, errUnavailable)
	}
	tag := os.Getenv(EnvPGVersion)
	if tag == "" {
		tag = "17"
	}
	resource, err := pool.RunWithOptions(&dockertest.RunOptions{
		Repository: "postgres",
		Tag:        tag,
		Env: []string{
			"POSTGRES_PASSWORD=" + dockerPassword,
			"POSTGRES_INITDB_ARGS=--no-sync -E UTF8 --locale=C",
		},
		Cmd: []string{"postgres",
			"-c", "fsync=off",
			"-c", "synchronous_commit=off",
			"-c", "full_page_writes=off",
			"-c", "max_connections=300",
			"-c", "shared_buffers=128MB",
		},
		ExposedPorts: []string{"5432/tcp"},
		Labels:       map[string]string{"org.pgmig.pgtest": strconv.Itoa(os.Getpid())},
	}, func(hc *dc.HostConfig) {
		hc.AutoRemove = true
		hc.RestartPolicy = dc.RestartPolicy{Name: "no"}
	})
	if err != nil {
		return nil, fmt.Errorf("pgtest: starting container postgres:%s: %w", tag, err)
	}
	// If this binary dies without cleaning up, the engine still removes the
	// container after this long (AutoRemove does the rest once it stops).
	_ = resource.Expire(1800)
	ds := &dockerServer{pool: pool, resource: resource}

	host := resource.GetBoundIP("5432/tcp")
	if u, err := url.Parse(os.Getenv("DOCKER_HOST")); err == nil && u.Scheme == "tcp" && u.Hostname() != "" {
		// A remote engine publishes ports on its own address, not ours.
		host = u.Hostname()
	}
	port, err := strconv.Atoi(resource.GetPort("5432/tcp"))
	if err != nil {
		_ = ds.purge()
		return nil, fmt.Errorf("pgtest: container postgres:%s publishes no port for 5432/tcp", tag)
	}
	c := &Cluster{
		kind:     "docker",
		host:     host,
		port:     port,
		user:     "postgres",
		password: dockerPassword,
		maintDB:  "postgres",
		params:   url.Values{"sslmode": {"disable"}},
		docker:   ds,
	}
	if p, err := exec.LookPath("psql"); err == nil {
		c.psql = p
	}
	// The entrypoint starts a temporary server for initialisation and then
	// restarts it, so one successful connection is not enough: wait for a
	// query to work over TCP (the init server listens on the socket only).
	pool.MaxWait = 2 * time.Minute
	err = pool.Retry(func() error {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		conn, err := pgx.Connect(rctx, c.ConnString("postgres"))
		if err != nil {
			return err
		}
		defer conn.Close(rctx)
		return conn.Ping(rctx)
	})
	if err != nil {
		_ = ds.purge()
		return nil, fmt.Errorf("pgtest: container postgres:%s at %s did not become ready: %w", tag, net.JoinHostPort(host, strconv.Itoa(port)), err)
	}
	return c, nil
}

func (ds *dockerServer) purge() error {
	return ds.pool.Purge(ds.resource)
}
