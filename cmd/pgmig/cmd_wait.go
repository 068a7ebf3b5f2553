package main

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	pgmig "github.com/pgmig/pgmig/gowrapper"
)

// runWait is pgmig wait: until the database holds the migrations (or
// --version), for application start-up next to a deploy job that pushes.
// The database itself may not be reachable yet (a pod starting with its
// database): connecting is retried within the same --timeout.
func runWait(ctx context.Context, inv *invocation) (result, error) {
	o := inv.opts
	start := time.Now()
	if o.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.timeout)
		defer cancel()
	}
	var ms []*pgmig.Migration
	if o.version == 0 {
		lopts, err := inv.loadOpts()
		if err != nil {
			return nil, err
		}
		if ms, err = pgmig.LoadDir(o.dir, lopts); err != nil {
			return nil, err
		}
	}
	client, err := inv.connectWithin(ctx, start)
	if err != nil {
		return nil, err
	}
	res, err := client.Wait(ctx, ms, &pgmig.WaitOpts{
		Version: o.version,
		OnWaiting: func(s pgmig.WaitState) {
			switch {
			case !s.EngineInstalled:
				inv.out.info("waiting: the pgmig engine is not installed in the database yet")
			case o.version > 0:
				inv.out.info("waiting for version %d: the database is at version %d", o.version, s.Version)
			default:
				inv.out.info("waiting for %s: the database is at version %d", plural(s.Pending, "pending migration", "pending migrations"), s.Version)
			}
		},
	})
	if err != nil {
		return nil, err
	}
	res.Waited = time.Since(start)
	return waitResult{res: res, files: len(ms), version: o.version}, nil
}

// connectWithin connects, trying again while the server cannot be reached
// or is starting up, until ctx ends: then a wait timeout naming the last
// error. A mistake (a malformed connection string, a wrong password, a
// database that does not exist) is reported at once.
func (inv *invocation) connectWithin(ctx context.Context, start time.Time) (*pgmig.Client, error) {
	announced := false
	pause := 250 * time.Millisecond
	for {
		client, err := inv.connect(ctx)
		if err == nil {
			return client, nil
		}
		if !notReachableYet(err) {
			return nil, err
		}
		if !announced {
			inv.out.info("waiting: cannot connect yet: %v", err)
			announced = true
		}
		select {
		case <-ctx.Done():
			return nil, &pgmig.WaitTimeoutError{Waited: time.Since(start), Unreachable: err, Err: ctx.Err()}
		case <-time.After(pause):
		}
		pause = min(2*pause, 2*time.Second)
	}
}

// notReachableYet: a connection error that waiting may cure — the network
// (nothing listens yet, no route, a timeout), or a server that is starting,
// shutting down or full — as opposed to the server's answer to this client.
func notReachableYet(err error) bool {
	var parse *pgconn.ParseConfigError
	if errors.As(err, &parse) {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "57P03", // cannot_connect_now: starting up, shutting down, in recovery
			"53300": // too_many_connections
			return true
		}
		return false
	}
	return true
}
