package main

import (
	"context"

	pgmig "github.com/pgmig/pgmig/gowrapper"
)

func runInstall(ctx context.Context, inv *invocation) (result, error) {
	if inv.opts.print {
		return installScript{version: pgmig.SupportedEngineVersion(), sql: pgmig.InstallScript()}, nil
	}
	client, err := inv.connect(ctx)
	if err != nil {
		return nil, err
	}
	res, err := client.Install(ctx, nil)
	if err != nil {
		return nil, err
	}
	return installResult{res}, nil
}
