package main

import (
	"context"

	pgmig "github.com/pgmig/pgmig/gowrapper"
)

// The commands about pgmig itself: version, help, config.

func runVersion(context.Context, *invocation) (result, error) {
	return versionResult{version: pgmig.SupportedEngineVersion()}, nil
}

func runHelp(_ context.Context, inv *invocation) (result, error) {
	switch len(inv.args) {
	case 0:
		return helpResult{}, nil
	case 1:
		c := lookupCommand(inv.args[0])
		if c == nil {
			return nil, usagef("unknown command %q; `pgmig help` lists the commands", inv.args[0])
		}
		return helpResult{cmd: c}, nil
	}
	return nil, usagef("usage: pgmig help [COMMAND]")
}

func runConfig(_ context.Context, inv *invocation) (result, error) {
	return newConfigResult(inv), nil
}
