// Package pgmig loads tern-format migration directories and applies them
// with the pgmig engine, which runs inside PostgreSQL.
//
//	import pgmig "github.com/pgmig/pgmig/gowrapper"
//
// The engine decides what to apply, under its own lock, in one server-side
// transaction; this package only reads files, uploads them as one batch,
// calls migrate_apply and presents the outcome (typed errors pointing at
// the file, line and column; live progress).
package pgmig

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	pgmigsql "github.com/pgmig/pgmig/sql"
)

// Config configures a Client. A nil *Config means all defaults.
type Config struct {
	// Schema is the API schema Install puts the unqualified API into
	// (default "public"; a previous install's schema is kept). The Client
	// itself always calls the copy of the API in schema pgmig, where no
	// other role can create an overload (docs/sql-api.md, "Calling the API
	// safely").
	Schema string
	// ClientInfo is stored with each applied migration. Default
	// "pgmig/<version> host=<hostname> pid=<pid>".
	ClientInfo string
	// DisablePrecheck turns off the lock-free manifest check that Push runs
	// before uploading the full SQL (see Push).
	DisablePrecheck bool
	// Scope is a tenant schema: every call of the Client then works in it —
	// the migrations run with it first in their search_path, so that what
	// they create lands there (it is created if missing), and it has a
	// history and a lock of its own, so tenants never wait for each other
	// (docs/fleet.md, "Schema per tenant"). Empty: the database's own
	// migrations (the default scope).
	Scope string
}

// Client applies migrations to one database through a *pgx.Conn, a
// *pgxpool.Pool, or a connection it opened itself (Connect). It is safe for
// concurrent use when it wraps a pool; a *pgx.Conn is not, so neither is a
// Client wrapping one.
type Client struct {
	config Config
	conn   *pgx.Conn
	pool   *pgxpool.Pool
	owned  bool

	mu             sync.Mutex
	engineVerified bool
}

// scope is Config.Scope as a call argument: NULL for the default scope.
func (c *Client) scope() any {
	if c.config.Scope == "" {
		return nil
	}
	return c.config.Scope
}

// New returns a Client that runs everything on conn. Live progress needs
// HandleNotice in conn's configuration (see HandleNotice).
func New(conn *pgx.Conn, config *Config) *Client {
	return newClient(conn, nil, config)
}

// NewPool returns a Client that acquires a connection from pool for each
// call. Live progress needs HandleNotice in the pool's ConnConfig.
func NewPool(pool *pgxpool.Pool, config *Config) *Client {
	return newClient(nil, pool, config)
}

// Connect opens a connection from a DSN (URL or key=value; "" means libpq
// defaults: PG* environment variables, ~/.pgpass) with progress notices
// enabled and application_name "pgmig" unless the DSN or PGAPPNAME sets
// one. Close closes it.
func Connect(ctx context.Context, dsn string, config *Config) (*Client, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("parsing connection string: %w", err)
	}
	// Named sessions make the lock holder recognisable in pg_stat_activity
	// and in ErrLockTimeout's detail.
	if cfg.RuntimeParams["application_name"] == "" {
		cfg.RuntimeParams["application_name"] = "pgmig"
	}
	if prev := cfg.OnNotice; prev != nil {
		cfg.OnNotice = func(c *pgconn.PgConn, n *pgconn.Notice) { prev(c, n); HandleNotice(c, n) }
	} else {
		cfg.OnNotice = HandleNotice
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connecting: %w", err)
	}
	c := newClient(conn, nil, config)
	c.owned = true
	return c, nil
}

func newClient(conn *pgx.Conn, pool *pgxpool.Pool, config *Config) *Client {
	c := &Client{conn: conn, pool: pool}
	if config != nil {
		c.config = *config
	}
	if c.config.Schema == "" {
		c.config.Schema = "public"
	}
	if c.config.ClientInfo == "" {
		host, _ := os.Hostname()
		c.config.ClientInfo = fmt.Sprintf("pgmig/%s host=%s pid=%d", pgmigsql.Version(), host, os.Getpid())
	}
	return c
}

// Close closes the connection opened by Connect; for New and NewPool it
// does nothing (the caller owns the connection).
func (c *Client) Close(ctx context.Context) error {
	if c.owned && c.conn != nil {
		return c.conn.Close(ctx)
	}
	return nil
}

// Conn returns the connection of a Client from New or Connect (nil for a
// pool).
func (c *Client) Conn() *pgx.Conn { return c.conn }

func (c *Client) acquire(ctx context.Context) (*pgx.Conn, func(), error) {
	if c.pool == nil {
		return c.conn, func() {}, nil
	}
	pc, err := c.pool.Acquire(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("acquiring connection: %w", err)
	}
	return pc.Conn(), pc.Release, nil
}

// SupportedEngineVersion is the engine version embedded in this package;
// it supports installed engines with the same major.minor.
func SupportedEngineVersion() string { return pgmigsql.Version() }

func engineSupported(installed string) bool {
	return majorMinor(installed) == majorMinor(pgmigsql.Version())
}

func majorMinor(v string) string {
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 {
		return v
	}
	return parts[0] + "." + parts[1]
}

// EngineVersion returns the version of the engine installed in the
// database, or an error matching ErrEngineNotInstalled.
func (c *Client) EngineVersion(ctx context.Context) (string, error) {
	conn, release, err := c.acquire(ctx)
	if err != nil {
		return "", err
	}
	defer release()
	return engineVersion(ctx, conn)
}

func engineVersion(ctx context.Context, conn *pgx.Conn) (string, error) {
	var v string
	err := conn.QueryRow(ctx, "select pgmig.engine_version()", pgx.QueryExecModeExec).Scan(&v)
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && isEngineMissing(pgErr) {
			return "", fmt.Errorf("reading engine version: %w: %w", ErrEngineNotInstalled, err)
		}
		if errors.As(err, &pgErr) && pgErr.Code == codeInsufficientPrivilege {
			// Installed, but not usable by this role: `pgmig install`
			// is not the way out, GRANTs are.
			return "", fmt.Errorf("reading engine version: %w: %w", ErrPermissionDenied, err)
		}
		return "", fmt.Errorf("reading engine version: %w", err)
	}
	return v, nil
}

// verifyEngine checks the installed engine once per Client.
func (c *Client) verifyEngine(ctx context.Context, conn *pgx.Conn) error {
	if c.engineChecked() {
		return nil
	}
	v, err := engineVersion(ctx, conn)
	if err != nil {
		return err
	}
	return c.acceptEngine(v)
}

// engineChecked: the installed engine was found supported on this Client.
func (c *Client) engineChecked() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.engineVerified
}

func (c *Client) acceptEngine(installed string) error {
	if !engineSupported(installed) {
		return &EngineVersionError{Installed: installed, Supported: pgmigsql.Version()}
	}
	c.mu.Lock()
	c.engineVerified = true
	c.mu.Unlock()
	return nil
}

// InstallOpts configures Install. A nil *InstallOpts means defaults.
type InstallOpts struct{}

// InstallResult reports what Install did.
type InstallResult struct {
	// PreviousVersion is the engine version before ("" if none).
	PreviousVersion string
	// Version is the engine version now installed.
	Version string
	// Warnings are the install script's WARNINGs, e.g. routines named like
	// the API that pgmig did not create (pgmig.api_shadows()).
	Warnings []string `json:"warnings,omitempty"`
}

// InstallScript returns the engine's install/upgrade script embedded in
// this package (for `psql -f`, or managed databases' SQL consoles).
func InstallScript() string { return pgmigsql.InstallScript() }

// Install installs the engine, or upgrades it to the version embedded in
// this package. The script is one transaction and idempotent, so racing
// installers are safe. The API functions go into Config.Schema when it is
// not public, else into the schema of a previous install, else public.
func (c *Client) Install(ctx context.Context, opts *InstallOpts) (*InstallResult, error) {
	conn, release, err := c.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	res := &InstallResult{}
	if v, err := engineVersion(ctx, conn); err == nil {
		res.PreviousVersion = v
	} else if !errors.Is(err, ErrEngineNotInstalled) && !errors.Is(err, ErrPermissionDenied) {
		// (Permission denied: let the script say what this role may not do.)
		return nil, fmt.Errorf("installing engine %s: %w", pgmigsql.Version(), err)
	}
	// The script reads the API schema from this setting. It must be a
	// session setting, as the script commits its own transaction; reset it
	// afterwards so that a pooled connection does not keep it.
	if c.config.Schema != "public" {
		if _, err := conn.Exec(ctx, "select pg_catalog.set_config('pgmig.api_schema', $1, false)", pgx.QueryExecModeExec, c.config.Schema); err != nil {
			return nil, fmt.Errorf("installing engine %s: %w", pgmigsql.Version(), err)
		}
		defer conn.Exec(context.WithoutCancel(ctx), "reset pgmig.api_schema")
	}
	// The script carries its own BEGIN/COMMIT, so it must go through the
	// simple query protocol as one multi-statement string.
	route := newNoticeRoute(nil, func(n *pgconn.Notice) {
		if n.Severity == "WARNING" {
			res.Warnings = append(res.Warnings, n.Message)
		}
	}, nil)
	detach := attachRoute(conn.PgConn(), route)
	_, err = conn.PgConn().Exec(ctx, pgmigsql.InstallScript()).ReadAll()
	detach()
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == codeInsufficientPrivilege {
			// Installing needs ownership (or CREATE), not the GRANTs of
			// ErrPermissionDenied: report the server's error as is.
			return nil, fmt.Errorf("installing engine %s: %w", pgmigsql.Version(), err)
		}
		return nil, engineError(fmt.Sprintf("installing engine %s", pgmigsql.Version()), err)
	}
	v, err := engineVersion(ctx, conn)
	if err != nil {
		return nil, fmt.Errorf("installing engine %s: %w", pgmigsql.Version(), err)
	}
	res.Version = v
	c.mu.Lock()
	c.engineVerified = false
	c.mu.Unlock()
	return res, nil
}
