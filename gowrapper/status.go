package pgmig

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
)

// PlanOpts configures Plan. A nil *PlanOpts means defaults.
type PlanOpts struct {
	TargetVersion   int64
	AllowOutOfOrder bool
	AllowMissing    bool
	// ReportDrift: drift does not fail the plan (no ErrDrift); it is
	// reported in PlanResult.Drift and on each entry.
	ReportDrift bool
}

// PlanEntry is one row of the engine's plan.
type PlanEntry struct {
	MigrationResult
	// Transactional is false for a migration run statement by statement
	// outside a transaction.
	Transactional bool `json:"transactional"`
	// CommitAfter: the transaction ends after this migration.
	CommitAfter bool `json:"commit_after,omitempty"`
	// Step numbers, for pending migrations, the transactions (and
	// non-transactional steps) a push would use as far as the migrations
	// decide them (commit-after markers, non-transactional migrations);
	// the engine's lock budget may cut more. A failure in one step leaves
	// the earlier steps applied. 0 for the others.
	Step int `json:"step,omitempty"`
	// Drift: what is wrong with this entry ("changed", "renamed",
	// "missing", "out_of_order", comma-separated), with ReportDrift.
	Drift  string `json:"drift,omitempty"`
	Detail string `json:"detail,omitempty"`
	// DownDiffers: applied, and its down SQL in the files is not the one
	// recorded (a down section written or fixed later); Repair records it.
	DownDiffers bool `json:"down_differs,omitempty"`
}

// PlanResult is what a push would do now.
type PlanResult struct {
	// Migrations as the engine plans them, in version order: pending ones
	// (OutcomePending) would be applied, OutcomeBeyondTarget ones not; then
	// the repeatable ones in name order (OutcomeRepeatablePending,
	// OutcomeRepeatableUnchanged, OutcomeRepeatableMissing).
	// A repeatable one pending while versioned ones stay beyond the target
	// is not applied by that push (it follows the last versioned one): it
	// has no Step, and Pending does not count it.
	Migrations []PlanEntry `json:"migrations"`
	// Pending is how many migrations a push would apply.
	Pending int `json:"pending"`
	// Steps is how many steps those take (see PlanEntry.Step).
	Steps int `json:"steps"`
	// Version is the newest applied version (0: none).
	Version int64 `json:"version"`
	Ahead   bool  `json:"ahead"`
	// Drift, with ReportDrift: every drifted version by kind (nil when
	// nothing drifted).
	Drift *DriftError `json:"-"`
}

// Plan asks the engine (migrate_plan) what a push would apply, changing
// nothing and taking no lock. The engine decides everything (pending,
// target, drift); the answer can be stale by the time you push, and the
// engine re-checks under the lock then. Drift comes back as a *DriftError
// (ErrDrift), or in the result with ReportDrift.
func (c *Client) Plan(ctx context.Context, migrations []*Migration, opts *PlanOpts) (*PlanResult, error) {
	if opts == nil {
		opts = &PlanOpts{}
	}
	conn, release, err := c.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	if err := c.verifyEngine(ctx, conn); err != nil {
		return nil, fmt.Errorf("planning: %w", err)
	}
	batch, err := Batch(migrations)
	if err != nil {
		return nil, fmt.Errorf("encoding batch: %w", err)
	}
	// Drift is always asked for as data; without ReportDrift it becomes the
	// engine's own PM002 below.
	rows, err := conn.Query(ctx, `select version, name, label, outcome, applied_at, transactional, commit_after, step, drift, detail, down_differs
		from pgmig.migrate_plan($1::jsonb, target_version => $2::bigint, allow_out_of_order => $3::boolean,
		                        allow_missing => $4::boolean, report_drift => true, scope => $5::text)`,
		pgx.QueryExecModeExec, string(batch), nullZero(opts.TargetVersion), opts.AllowOutOfOrder, opts.AllowMissing, c.scope())
	if err != nil {
		return nil, engineError("planning", err)
	}
	defer rows.Close()
	res := &PlanResult{Migrations: []PlanEntry{}}
	var drift *DriftError
	for rows.Next() {
		var e PlanEntry
		var version pgtype.Int8
		var label, kinds, detail pgtype.Text
		var step pgtype.Int4
		if err := rows.Scan(&version, &e.Name, &label, &e.Outcome, &e.AppliedAt, &e.Transactional, &e.CommitAfter, &step, &kinds, &detail, &e.DownDiffers); err != nil {
			return nil, engineError("planning", err)
		}
		e.Version, e.Repeatable = version.Int64, !version.Valid
		e.Label, e.Step, e.Drift, e.Detail = label.String, int(step.Int32), kinds.String, detail.String
		if e.Drift != "" {
			if drift == nil {
				drift = &DriftError{}
			}
			for _, k := range strings.Split(e.Drift, ",") {
				drift.add(e.Version, k)
			}
		}
		switch {
		case e.Outcome == OutcomeRepeatablePending && e.Step == 0:
			// left for the push that applies the versioned ones beyond the target
		case e.Outcome == OutcomePending || e.Outcome == OutcomeRepeatablePending:
			res.Pending++
			res.Steps = max(res.Steps, e.Step)
		case e.Outcome == OutcomeAhead:
			res.Ahead = true
		}
		if e.Outcome != OutcomePending && e.Outcome != OutcomeBeyondTarget && e.Version > res.Version {
			res.Version = e.Version
		}
		res.Migrations = append(res.Migrations, e)
	}
	if err := rows.Err(); err != nil {
		return nil, engineError("planning", err)
	}
	files := make([]MigrationResult, len(res.Migrations))
	for i := range res.Migrations {
		files[i] = res.Migrations[i].MigrationResult
	}
	addFiles(files, migrations)
	for i := range res.Migrations {
		res.Migrations[i].MigrationResult = files[i]
	}
	if drift != nil {
		if !opts.ReportDrift {
			// The engine's own error, with its message, detail and hint.
			_, perr := conn.Exec(ctx, `select from pgmig.migrate_plan($1::jsonb, target_version => $2::bigint,
				allow_out_of_order => $3::boolean, allow_missing => $4::boolean, scope => $5::text)`,
				pgx.QueryExecModeExec, string(batch), nullZero(opts.TargetVersion), opts.AllowOutOfOrder, opts.AllowMissing, c.scope())
			var pgErr *pgconn.PgError
			if errors.As(perr, &pgErr) && pgErr.Code == codeDrift {
				drift.PgError = pgErr
				return nil, fmt.Errorf("planning: %w", drift)
			}
			if perr != nil {
				return nil, engineError("planning", perr)
			}
		}
		res.Drift = drift
	}
	return res, nil
}

// HistoryEntry is one row of migrate_status().
type HistoryEntry struct {
	Version   int64         `json:"version"`
	Name      string        `json:"name"`
	Label     string        `json:"label,omitempty"`
	State     string        `json:"state"`
	AppliedAt *time.Time    `json:"applied_at,omitempty"`
	AppliedBy string        `json:"applied_by,omitempty"`
	Client    string        `json:"client,omitempty"`
	Duration  time.Duration `json:"duration_ns"`
	Checksum  string        `json:"checksum,omitempty"`
	Detail    string        `json:"detail,omitempty"`
}

// StatusResult is the database's migration history.
type StatusResult struct {
	// EngineVersion is the installed engine's version.
	EngineVersion string `json:"engine_version"`
	// History, newest first, without the in-progress row. State is
	// "applied" or "baseline", or for a non-transactional migration
	// started and not recorded "running", "failed" or "interrupted"; then
	// the repeatable migrations as last applied (state "repeatable",
	// Version 0, Detail "applied N times"), in name order.
	History []HistoryEntry `json:"history"`
	// InProgress is set while a migrator holds the lock.
	InProgress *HistoryEntry `json:"in_progress,omitempty"`
	// Version is the newest applied (or baselined) version (0: none).
	Version int64 `json:"version"`
	// Scope is Config.Scope: the tenant schema this status is of ("": the
	// database's own migrations).
	Scope string `json:"schema,omitempty"`
	// Tenants: in the default scope's status, every tenant schema with a
	// history and where it stands (migrate_scopes()).
	Tenants []ScopeState `json:"tenants,omitempty"`
}

// ScopeState is where one tenant schema stands.
type ScopeState struct {
	Schema        string    `json:"schema"`
	Version       int64     `json:"version"`
	Migrations    int64     `json:"migrations"`
	LastAppliedAt time.Time `json:"last_applied_at"`
}

// Status reads migrate_status(): the history, and who is migrating now.
func (c *Client) Status(ctx context.Context) (*StatusResult, error) {
	conn, release, err := c.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	v, err := engineVersion(ctx, conn)
	if err != nil {
		return nil, fmt.Errorf("reading status: %w", err)
	}
	if err := c.acceptEngine(v); err != nil {
		return nil, fmt.Errorf("reading status: %w", err)
	}
	rows, err := conn.Query(ctx, `select version, name, label, state, applied_at, applied_by, client, duration, checksum, detail
		from pgmig.migrate_status($1::text)`, pgx.QueryExecModeExec, c.scope())
	if err != nil {
		return nil, engineError("reading status", err)
	}
	defer rows.Close()
	res := &StatusResult{EngineVersion: v, History: []HistoryEntry{}}
	for rows.Next() {
		var e HistoryEntry
		var version pgtype.Int8
		var name, label, appliedBy, client, checksum, detail pgtype.Text
		var d pgtype.Interval
		if err := rows.Scan(&version, &name, &label, &e.State, &e.AppliedAt, &appliedBy, &client, &d, &checksum, &detail); err != nil {
			return nil, fmt.Errorf("reading status: %w", err)
		}
		e.Version, e.Name, e.Label, e.AppliedBy, e.Client = version.Int64, name.String, label.String, appliedBy.String, client.String
		e.Checksum, e.Detail, e.Duration = checksum.String, detail.String, intervalDuration(d)
		if e.State == "in_progress" {
			res.InProgress = &e
			continue
		}
		res.History = append(res.History, e)
		if (e.State == "applied" || e.State == "baseline") && e.Version > res.Version {
			res.Version = e.Version
		}
	}
	if err := rows.Err(); err != nil {
		return nil, engineError("reading status", err)
	}
	// Newest first whatever order the engine returns rows in.
	sort.SliceStable(res.History, func(i, j int) bool { return res.History[i].Version > res.History[j].Version })
	res.Scope = c.config.Scope
	if res.Scope == "" {
		rows, err := conn.Query(ctx, `select scope, version, migrations, last_applied_at from pgmig.migrate_scopes() where scope <> ''`,
			pgx.QueryExecModeExec)
		if err != nil {
			return nil, engineError("reading status", err)
		}
		if res.Tenants, err = pgx.CollectRows(rows, pgx.RowToStructByPos[ScopeState]); err != nil {
			return nil, engineError("reading status", err)
		}
	}
	return res, nil
}

// LockHolder is the session holding the history lock.
type LockHolder struct {
	PID             int       `json:"pid"`
	Role            string    `json:"role"`
	ApplicationName string    `json:"application_name"`
	ClientAddr      string    `json:"client_addr,omitempty"`
	Since           time.Time `json:"since"`
	State           string    `json:"state"`
	Query           string    `json:"query"`
}

func (h *LockHolder) String() string {
	s := fmt.Sprintf("pid %d, role %s", h.PID, h.Role)
	if h.ApplicationName != "" {
		s += ", application " + h.ApplicationName
	}
	if h.ClientAddr != "" {
		s += ", from " + h.ClientAddr
	}
	if !h.Since.IsZero() {
		s += fmt.Sprintf(", since %s", h.Since.Format(time.RFC3339))
	}
	return s
}

// LockHolder returns the session holding the history lock, or nil.
func (c *Client) LockHolder(ctx context.Context) (*LockHolder, error) {
	conn, release, err := c.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	var h LockHolder
	var pid pgtype.Int4
	var role, app, addr, state, query pgtype.Text
	var since pgtype.Timestamptz
	err = conn.QueryRow(ctx, `select pid, role, application_name, host(client_addr), since, state, query
		from pgmig.migrate_lock_holder($1::text)`, pgx.QueryExecModeExec, c.scope()).Scan(&pid, &role, &app, &addr, &since, &state, &query)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, engineError("reading lock holder", err)
	}
	h.PID, h.Role, h.ApplicationName, h.ClientAddr = int(pid.Int32), role.String, app.String, addr.String
	h.Since, h.State, h.Query = since.Time, state.String, query.String
	return &h, nil
}
