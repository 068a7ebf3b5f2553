package main

import (
	"context"

	pgmig "github.com/pgmig/pgmig/gowrapper"
)

func runPush(ctx context.Context, inv *invocation) (result, error) {
	o := inv.opts
	if o.fleet() {
		return runFleet(ctx, inv)
	}
	// An up-to-date database is answered by comparing this digest with the
	// files': ask for it while they load. An error here is left for Push to
	// report, as it would without the early read.
	var digest string
	ms, client, err := inv.loadAndConnect(ctx, func(ctx context.Context, client *pgmig.Client) {
		digest, _ = client.HistoryDigest(ctx)
	})
	if err != nil {
		return nil, err
	}
	live := inv.out.startProgress()
	popts := &pgmig.PushOpts{
		TargetVersion:   o.target,
		LockTimeout:     o.lockTimeout,
		AllowOutOfOrder: o.allowOutOfOrder,
		AllowMissing:    o.allowMissing,
		SegmentSize:     o.segmentSize,
		HistoryDigest:   digest,
		DDLLockTimeout:  o.ddlLockTimeout,
		Retries:         o.retries,
		RetryMaxWait:    o.retryMaxWait,
		OnRetry:         func(a pgmig.RetryAttempt) { inv.out.retrying(live, a) },
	}
	if live.enabled {
		// --quiet and --json show neither: without callbacks the server is
		// asked not to send the notices at all.
		popts.Progress, popts.Notice = live.progress, live.notice
	}
	res, err := client.Push(ctx, ms, popts)
	live.stop(err == nil)
	if err != nil {
		return nil, err
	}
	return pushResult{res: res, live: live}, nil
}
