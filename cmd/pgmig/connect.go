package main

import (
	"context"
	"os"

	pgmig "github.com/pgmig/pgmig/gowrapper"
)

// engineConfig is the library configuration the flags ask for.
func (inv *invocation) engineConfig() *pgmig.Config {
	return &pgmig.Config{Schema: inv.opts.apiSchema, Scope: inv.opts.schema}
}

// connect opens the connection the flags ask for; the invocation closes
// it after the result is rendered.
func (inv *invocation) connect(ctx context.Context) (*pgmig.Client, error) {
	client, err := pgmig.Connect(ctx, inv.opts.database, inv.engineConfig())
	if err != nil {
		return nil, err
	}
	inv.client = client
	return client, nil
}

// loadOpts is how the migration files are read: the template data of
// --data, PGMIG_DATA and [data].
func (inv *invocation) loadOpts() (*pgmig.LoadOpts, error) {
	opts := &pgmig.LoadOpts{Format: pgmig.Format(inv.opts.format), Env: pgmig.EnvMap(os.Environ())}
	if len(inv.opts.data) > 0 {
		opts.Data = make(map[string]any, len(inv.opts.data))
		for k, v := range inv.opts.data {
			opts.Data[k] = v
		}
	}
	return opts, nil
}

// loadAndConnect loads the migrations of --dir while it connects: loading
// waits on the disk, connecting on the network and on the server starting a
// backend, so doing both at once saves the shorter of the two. connected,
// when not nil, runs as soon as the connection is up, still while the files
// load (push reads the history digest there). The outcome is reported as if
// one followed the other: a load error wins (the connection, if one was
// made, is closed unused), then a connection error.
func (inv *invocation) loadAndConnect(ctx context.Context, connected func(context.Context, *pgmig.Client)) ([]*pgmig.Migration, *pgmig.Client, error) {
	lopts, err := inv.loadOpts()
	if err != nil {
		return nil, nil, err
	}
	type connection struct {
		client *pgmig.Client
		err    error
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // the connection does not keep the context it was opened with
	done := make(chan connection, 1)
	go func() {
		client, err := pgmig.Connect(ctx, inv.opts.database, inv.engineConfig())
		if err == nil && connected != nil {
			connected(ctx, client)
		}
		done <- connection{client, err}
	}()
	ms, err := pgmig.LoadDir(inv.opts.dir, lopts)
	if err != nil {
		cancel()
		if c := <-done; c.client != nil {
			c.client.Close(context.WithoutCancel(ctx))
		}
		return nil, nil, err
	}
	c := <-done
	if c.err != nil {
		return nil, nil, c.err
	}
	inv.client = c.client
	return ms, c.client, nil
}
