package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	pgmig "github.com/pgmig/pgmig/gowrapper"
)

// plan --sql and plan --rehearse: what push would run, as SQL, or for real
// and rolled back (issue 14).

func validatePlan(inv *invocation) error {
	o := inv.opts
	if o.rehearse && o.printSQL {
		return usagef("pgmig plan: --rehearse and --sql are two different answers; ask for one")
	}
	// (fail_on in the config file or PGMIG_FAIL_ON is a team's standing
	// rule for rehearsals, not a mistake in a plain plan.)
	if len(o.failOn) > 0 && !o.rehearse && strings.HasPrefix(o.sources[flagFailOn.name], "flag") {
		return usagef("pgmig plan: --fail-on judges a rehearsal: add --rehearse")
	}
	return nil
}

// runPlanCommand is plan: the plan, its SQL, or a rehearsal.
func runPlanCommand(ctx context.Context, inv *invocation) (result, error) {
	switch {
	case inv.opts.rehearse:
		return runRehearse(ctx, inv)
	case inv.opts.printSQL:
		return runPlanSQL(ctx, inv)
	}
	return runPlan(ctx, inv)
}

// runPlanSQL prints the SQL push would run now: the engine's plan decides
// which migrations are pending (the same rules as push), the files give
// their SQL as it would be sent, templates expanded.
func runPlanSQL(ctx context.Context, inv *invocation) (result, error) {
	ms, client, err := inv.loadAndConnect(ctx, nil)
	if err != nil {
		return nil, err
	}
	plan, err := client.Plan(ctx, ms, inv.planOpts())
	if err != nil {
		return nil, err
	}
	r := planSQLResult{version: plan.Version, steps: plan.Steps}
	byVersion := make(map[int64]*pgmig.Migration, len(ms))
	for _, m := range ms {
		byVersion[m.Version] = m
	}
	for _, e := range plan.Migrations {
		m := byVersion[e.Version]
		if e.Outcome != pgmig.OutcomePending || m == nil {
			continue
		}
		r.migrations = append(r.migrations, plannedSQL{PlanEntry: e, SQL: m.SQL, LockTimeout: m.LockTimeout})
	}
	return r, nil
}

// errFailOn: a rehearsed migration did what --fail-on forbids.
var errFailOn = errors.New("the rehearsal found what --fail-on forbids")

// violation is one thing a rehearsed migration did that --fail-on forbids.
type violation struct {
	Kind     string `json:"kind"`
	Version  int64  `json:"version"`
	File     string `json:"file,omitempty"`
	Relation string `json:"relation"`
	What     string `json:"what"`
}

// writeBlocking are the lock modes that keep other sessions from writing
// (INSERT/UPDATE/DELETE take ROW EXCLUSIVE, which these conflict with).
var writeBlocking = map[string]bool{"ShareLock": true, "ShareRowExclusiveLock": true, "ExclusiveLock": true, "AccessExclusiveLock": true}

// rehearseViolations: what the rehearsal's migrations did to relations
// other sessions can see (not ones they created) that kinds forbid. A lock
// is reported once per relation, at the migration that first held it (the
// batch's later migrations run under it too); each rewrite is reported.
func rehearseViolations(res *pgmig.RehearseResult, kinds []string) []violation {
	var out []violation
	seen := map[[2]string]bool{}
	for _, m := range res.Migrations {
		for _, r := range m.Relations {
			if r.Created {
				continue // nobody else sees it before the commit
			}
			for _, k := range kinds {
				var what string
				switch {
				case k == "rewrite" && r.Rewritten:
					what = fmt.Sprintf("rewrites %s %s (%s)", r.Kind, r.Relation, formatBytes(r.SizeBytes))
				case k == "access-exclusive" && r.LockMode == "AccessExclusiveLock":
					what = fmt.Sprintf("holds ACCESS EXCLUSIVE on %s %s: it blocks every reader and writer", r.Kind, r.Relation)
				case k == "blocks-writes" && writeBlocking[r.LockMode]:
					what = fmt.Sprintf("holds %s on %s %s: it blocks writers", lockName(r.LockMode), r.Kind, r.Relation)
				default:
					continue
				}
				if k != "rewrite" {
					if seen[[2]string{k, r.Relation}] {
						continue
					}
					seen[[2]string{k, r.Relation}] = true
				}
				out = append(out, violation{Kind: k, Version: m.Version, File: m.File, Relation: r.Relation, What: what})
			}
		}
	}
	return out
}

func runRehearse(ctx context.Context, inv *invocation) (result, error) {
	o := inv.opts
	ms, client, err := inv.loadAndConnect(ctx, nil)
	if err != nil {
		return nil, err
	}
	live := inv.out.startProgress()
	live.verb, live.failedVerb = "rehearsed", "failed"
	ropts := &pgmig.RehearseOpts{
		TargetVersion: o.target, AllowOutOfOrder: o.allowOutOfOrder, AllowMissing: o.allowMissing,
		LockTimeout: o.lockTimeout, DDLLockTimeout: o.ddlLockTimeout, StatementTimeout: o.statementTimeout,
	}
	if o.statementTimeout == 0 {
		ropts.StatementTimeout = -1 // --statement-timeout 0: no limit
	}
	if live.enabled && inv.out.ttyOut {
		// Live lines on a terminal only: piped, the report that follows
		// lists every migration anyway.
		ropts.Progress, ropts.Notice = live.progress, live.notice
	}
	res, err := client.Rehearse(ctx, ms, ropts)
	live.stop(err == nil)
	if err != nil {
		return nil, err
	}
	r := rehearseResult{res: res, failOn: o.failOn, violations: rehearseViolations(res, o.failOn)}
	if n := len(r.violations); n > 0 {
		return r, fmt.Errorf("%w (--fail-on %s): %s", errFailOn, strings.Join(o.failOn, ","), plural(n, "finding", "findings"))
	}
	return r, nil
}

func violationList(vs []violation) []string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = fmt.Sprintf("%s %s", label(v.File, v.Version, ""), v.What)
	}
	return out
}
