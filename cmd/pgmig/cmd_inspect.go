package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	pgmig "github.com/pgmig/pgmig/gowrapper"
)

// The commands that look without changing anything: status, plan,
// validate.

func (inv *invocation) planOpts() *pgmig.PlanOpts {
	return &pgmig.PlanOpts{TargetVersion: inv.opts.target, AllowOutOfOrder: inv.opts.allowOutOfOrder, AllowMissing: inv.opts.allowMissing}
}

func runPlan(ctx context.Context, inv *invocation) (result, error) {
	ms, client, err := inv.loadAndConnect(ctx, nil)
	if err != nil {
		return nil, err
	}
	res, err := client.Plan(ctx, ms, inv.planOpts())
	if err != nil {
		return nil, err
	}
	return planResult{res: res, format: formatOf(ms)}, nil
}

// runStatus shows the history, and what is pending when --dir holds
// migrations (status also works from anywhere, for the history alone). A
// problem with the files (drift, a bad file) is reported with the history,
// as one result.
func runStatus(ctx context.Context, inv *invocation) (result, error) {
	lopts, err := inv.loadOpts()
	if err != nil {
		return nil, err
	}
	type loaded struct {
		ms  []*pgmig.Migration
		err error
	}
	load := make(chan loaded, 1)
	go func() {
		ms, err := pgmig.LoadDir(inv.opts.dir, lopts)
		load <- loaded{ms, err}
	}()
	client, err := inv.connect(ctx)
	if err != nil {
		<-load
		return nil, err
	}
	st, err := client.Status(ctx)
	if err != nil {
		<-load
		return nil, err
	}
	res := statusResult{st: st, all: inv.opts.all}
	l := <-load
	switch {
	case l.err == nil:
		res.format = formatOf(l.ms)
		res.plan, err = client.Plan(ctx, l.ms, inv.planOpts())
	case !errors.Is(l.err, pgmig.ErrNoMigrations):
		err = l.err
	}
	return res, err
}

func runValidate(ctx context.Context, inv *invocation) (result, error) {
	o := inv.opts
	ms, client, err := inv.loadAndConnect(ctx, nil)
	if err != nil {
		return nil, err
	}
	if o.wait && o.waitTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.waitTimeout)
		defer cancel()
	}
	lockTimeout := o.lockTimeout
	if lockTimeout == 0 {
		// Without --wait, fail fast rather than queue behind a migrator.
		lockTimeout = time.Second
		if o.wait {
			lockTimeout = 200 * time.Millisecond
		}
	}
	announced := false
	for {
		if o.wait {
			if err := waitForLock(ctx, client, inv.out, &announced); err != nil {
				return nil, err
			}
		}
		res, err := client.Push(ctx, ms, &pgmig.PushOpts{
			DryRun: true, TargetVersion: o.target, LockTimeout: lockTimeout,
			AllowOutOfOrder: o.allowOutOfOrder, AllowMissing: o.allowMissing,
		})
		if o.wait && errors.Is(err, pgmig.ErrLockTimeout) && ctx.Err() == nil {
			continue // another migrator took the lock between our poll and our call
		}
		if err != nil {
			return nil, err
		}
		return validateResult{res}, nil
	}
}

// waitForLock polls the lock holder until nobody holds the history lock.
func waitForLock(ctx context.Context, client *pgmig.Client, out *output, announced *bool) error {
	for {
		h, err := client.LockHolder(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("%w: gave up waiting: %w", pgmig.ErrLockTimeout, ctx.Err())
			}
			return err
		}
		if h == nil {
			return nil
		}
		if !*announced {
			out.info("waiting for the migration lock held by %s", h)
			*announced = true
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: still held by %s: %w", pgmig.ErrLockTimeout, h, ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// formatOf is the file format the migrations were read in.
func formatOf(ms []*pgmig.Migration) pgmig.Format {
	if len(ms) == 0 {
		return ""
	}
	return ms[0].Format
}
