// Command pgmig applies PostgreSQL schema migrations (tern's file format)
// with the pgmig engine, which runs inside the database.
//
//	pgmig install            install or upgrade the engine
//	pgmig push               apply pending migrations
//	pgmig help               every command; pgmig <command> --help: its flags
//
// Layout: commands.go is the command table; cmd_*.go the commands;
// flags.go and config.go where settings come from; render*.go, hints.go
// and progress.go what the user sees; exitcodes.go the exit codes;
// connect.go the connection and the files. See docs/cli.md.
package main

import (
	"context"
	"errors"
	"io"
	"os"
	"os/signal"
	"syscall"

	pgmig "github.com/pgmig/pgmig/gowrapper"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.LookupEnv)
	stop()
	os.Exit(code)
}

// invocation is one run of one command: its parsed arguments, where they
// came from, and the connection once one is open.
type invocation struct {
	cmd  *command
	args []string // positional arguments
	opts *options
	cfg  *configFile
	env  lookupEnv
	out  *output
	// client is the open connection, closed after the result is rendered;
	// the error's presentation may still ask it for data (hints.go).
	client *pgmig.Client
	// resolveVersion is resolve's V, checked by its validate.
	resolveVersion int64
}

// run is the whole CLI: parse and check the arguments (before anything is
// connected to), run the command, render its result or error once, in
// text or JSON, and return the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, env lookupEnv) int {
	out := newOutput(stdout, stderr, wantsJSON(args, env), false)
	if len(args) == 0 {
		if out.json {
			out.report(nil, usagef("pgmig needs a command; `pgmig help` lists them"))
			return exitUsage
		}
		out.generalHelp(stderr)
		return exitUsage
	}
	name, rest := args[0], args[1:]
	switch name {
	case "-h", "-help", "--help":
		name = "help"
	case "-version", "--version":
		name = "version"
	}
	cmd := lookupCommand(name)
	if cmd == nil {
		out.report(nil, usagef("unknown command %q; `pgmig help` lists the commands", name))
		return exitUsage
	}
	out.cmd = cmd
	opts, positional, cfg, err := parseFlags(cmd, rest, env)
	if errors.Is(err, errHelp) {
		out.report(helpResult{cmd: cmd}, nil)
		return exitOK
	}
	if err != nil {
		out.report(nil, err)
		return exitCode(err)
	}
	out.json, out.quiet, out.dir = opts.json, opts.quiet, opts.dir
	inv := &invocation{cmd: cmd, args: positional, opts: opts, cfg: cfg, env: env, out: out}
	if err := cmd.checkArgs(positional); err != nil {
		out.report(nil, err)
		return exitCode(err)
	}
	if cmd.validate != nil {
		if err := cmd.validate(inv); err != nil {
			out.report(nil, err)
			return exitCode(err)
		}
	}
	res, err := cmd.run(ctx, inv)
	if err != nil {
		out.hints = gatherHintData(ctx, inv, err)
	}
	inv.close(ctx)
	out.report(res, err)
	return exitCode(err)
}

func (inv *invocation) close(ctx context.Context) {
	if inv.client != nil {
		inv.client.Close(context.WithoutCancel(ctx))
		inv.client = nil
	}
}
