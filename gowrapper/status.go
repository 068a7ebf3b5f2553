package pgmig

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

// PlanOpts configures Plan. A nil *PlanOpts means defaults.
type PlanOpts struct {
	TargetVersion   int64
	AllowOutOfOrder bool
	AllowMissing    bool
}

// PlanResult is what a push would do now.
type PlanResult struct {
	// Migrations as Push would report them, pending ones with
	// OutcomePending.
	Migrations []MigrationResult `json:"migrations"`
	// Pending is how many migrations a push would apply.
	Pending int `json:"pending"`
	// Version is the newest applied version (0: none).
	Version int64 `json:"version"`
	Ahead   bool  `json:"ahead"`
}

// Plan asks migrate_plan what a push would apply, changing nothing and
// taking no lock. The answer can be stale by the time you push; Push
// re-checks under the lock. Drift comes back as ErrDrift.
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
	rows, err := conn.Query(ctx, `select version, name, outcome, duration, applied_at from `+c.fn("migrate_plan")+
		`($1::jsonb, target_version => $2, allow_out_of_order => $3, allow_missing => $4)`,
		pgx.QueryExecModeExec, string(batch), nullZero(opts.TargetVersion), opts.AllowOutOfOrder, opts.AllowMissing)
	if err != nil {
		return nil, engineError("planning", err)
	}
	results, err := scanResults(rows, migrations)
	if err != nil {
		return nil, engineError("planning", err)
	}
	s := summarize(results)
	res := &PlanResult{Migrations: s.Migrations, Version: s.Version, Ahead: s.Ahead}
	for _, r := range results {
		if r.Outcome == OutcomePending {
			res.Pending++
		}
	}
	return res, nil
}

// HistoryEntry is one row of migrate_status().
type HistoryEntry struct {
	Version   int64         `json:"version"`
	Name      string        `json:"name"`
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
	// started and not recorded "running", "failed" or "interrupted".
	History []HistoryEntry `json:"history"`
	// InProgress is set while a migrator holds the lock.
	InProgress *HistoryEntry `json:"in_progress,omitempty"`
	// Version is the newest applied (or baselined) version (0: none).
	Version int64 `json:"version"`
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
	rows, err := conn.Query(ctx, `select version, name, state, applied_at, applied_by, client, duration, checksum, detail from `+
		c.fn("migrate_status")+`()`, pgx.QueryExecModeExec)
	if err != nil {
		return nil, engineError("reading status", err)
	}
	defer rows.Close()
	res := &StatusResult{EngineVersion: v, History: []HistoryEntry{}}
	for rows.Next() {
		var e HistoryEntry
		var version pgtype.Int8
		var name, appliedBy, client, checksum, detail pgtype.Text
		var d pgtype.Interval
		if err := rows.Scan(&version, &name, &e.State, &e.AppliedAt, &appliedBy, &client, &d, &checksum, &detail); err != nil {
			return nil, fmt.Errorf("reading status: %w", err)
		}
		e.Version, e.Name, e.AppliedBy, e.Client = version.Int64, name.String, appliedBy.String, client.String
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
	err = conn.QueryRow(ctx, `select pid, role, application_name, host(client_addr), since, state, query from `+
		c.fn("migrate_lock_holder")+`()`, pgx.QueryExecModeExec).Scan(&pid, &role, &app, &addr, &since, &state, &query)
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
