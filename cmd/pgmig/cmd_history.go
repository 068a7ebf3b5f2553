package main

import (
	"context"

	pgmig "github.com/pgmig/pgmig/gowrapper"
)

// The commands that change the history: rollback, baseline, repair,
// resolve.

func runRollback(ctx context.Context, inv *invocation) (result, error) {
	o := inv.opts
	client, err := inv.connect(ctx)
	if err != nil {
		return nil, err
	}
	live := inv.out.startProgress()
	live.verb, live.failedVerb = "rolled back", "failed rolling back"
	res, err := client.Rollback(ctx, o.to, &pgmig.RollbackOpts{
		LockTimeout: o.lockTimeout, DryRun: o.dryRun, Progress: live.progress, Notice: live.notice,
	})
	live.stop(err == nil)
	if err != nil {
		return nil, err
	}
	return rollbackResult{res: res, to: o.to, dryRun: o.dryRun, live: live}, nil
}

func runBaseline(ctx context.Context, inv *invocation) (result, error) {
	o := inv.opts
	ms, client, err := inv.loadAndConnect(ctx, nil)
	if err != nil {
		return nil, err
	}
	if o.fromTern {
		return baselineFromTern(ctx, inv, ms, client)
	}
	res, err := client.Baseline(ctx, ms, o.version, &pgmig.BaselineOpts{LockTimeout: o.lockTimeout})
	if err != nil {
		return nil, err
	}
	return baselineResult{res: res, version: o.version}, nil
}

func runRepair(ctx context.Context, inv *invocation) (result, error) {
	ms, client, err := inv.loadAndConnect(ctx, nil)
	if err != nil {
		return nil, err
	}
	res, err := client.Repair(ctx, ms, &pgmig.RepairOpts{Versions: inv.opts.versions, LockTimeout: inv.opts.lockTimeout})
	if err != nil {
		return nil, err
	}
	return repairResult{res}, nil
}

func runResolve(ctx context.Context, inv *invocation) (result, error) {
	action := pgmig.ResolveRetry
	if inv.opts.applied {
		action = pgmig.ResolveApplied
	}
	client, err := inv.connect(ctx)
	if err != nil {
		return nil, err
	}
	res, err := client.Resolve(ctx, inv.resolveVersion, action, &pgmig.ResolveOpts{LockTimeout: inv.opts.lockTimeout})
	if err != nil {
		return nil, err
	}
	return resolveResult{res: res, action: action}, nil
}
