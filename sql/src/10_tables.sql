-- The history. Its lock is the migrators' mutex: migrate_apply takes
-- LOCK TABLE pgmig.history IN EXCLUSIVE MODE, which conflicts with itself and with every
-- writer, but not with ACCESS SHARE, so status readers are never blocked by a migration.
CREATE TABLE IF NOT EXISTS pgmig.history (
    version            bigint      NOT NULL PRIMARY KEY CHECK (version >= 1),
    name               text        NOT NULL,
    checksum           text        NOT NULL CHECK (checksum ~ '^[0-9a-f]{64}$'),
    sql                text,
    down_sql           text,
    transactional      boolean     NOT NULL DEFAULT true,
    kind               text        NOT NULL DEFAULT 'applied' CHECK (kind IN ('applied', 'baseline')),
    applied_at         timestamptz NOT NULL,
    applied_by         text        NOT NULL,
    login_role         text        NOT NULL,
    client_application text,
    client_addr        inet,
    client_info        text,
    backend_pid        integer,
    duration           interval    NOT NULL,
    engine_version     text        NOT NULL
);
COMMENT ON TABLE pgmig.history IS 'One row per applied migration. Locked IN EXCLUSIVE MODE by migrators for the whole batch.';
COMMENT ON COLUMN pgmig.history.checksum IS 'lowercase hex sha256 of the UTF-8 bytes of sql';
COMMENT ON COLUMN pgmig.history.applied_by IS 'current_user that ran the migration';
COMMENT ON COLUMN pgmig.history.login_role IS 'session_user (the role that logged in)';
COMMENT ON COLUMN pgmig.history.client_info IS 'free text from the caller, e.g. host and tool version';

CREATE TABLE IF NOT EXISTS pgmig.install_log (
    version      text        NOT NULL,
    mode         text        NOT NULL CHECK (mode IN ('extension', 'script')),
    api_schema   text        NOT NULL,
    installed_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    installed_by text        NOT NULL DEFAULT CURRENT_USER,
    PRIMARY KEY (version, api_schema)
);
COMMENT ON TABLE pgmig.install_log IS 'Each engine version installed into this database, and where its API functions live.';

-- Every change to the history other than applying: rollback, baseline, repair, resolving an
-- interrupted non-transactional migration. Kept forever; nothing in pgmig deletes from it.
CREATE TABLE IF NOT EXISTS pgmig.audit (
    id                 bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    action             text        NOT NULL CHECK (action IN ('rollback', 'baseline', 'repair', 'resolve')),
    version            bigint      NOT NULL,
    at                 timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    by_role            text        NOT NULL DEFAULT CURRENT_USER,
    login_role         text        NOT NULL DEFAULT SESSION_USER,
    client_application text,
    client_addr        inet,
    client_info        text,
    details            jsonb       NOT NULL
);
COMMENT ON TABLE pgmig.audit IS 'Rollbacks, baselines, repairs and resolutions: what changed in the history, when and by whom.';

-- A non-transactional migration in flight. Its statements run at top level on the client's
-- second connection and commit one by one, so this row is written (and committed) by that
-- connection before and after each statement: if the client dies, the row says exactly how
-- far it got. The history row is written at the end, under the lock, by the lock holder.
CREATE TABLE IF NOT EXISTS pgmig.nontx_run (
    version         bigint      NOT NULL PRIMARY KEY,
    name            text        NOT NULL,
    checksum        text        NOT NULL,
    statements      integer     NOT NULL CHECK (statements >= 1),
    statements_done integer     NOT NULL CHECK (statements_done BETWEEN 0 AND statements),
    current_statement text,
    sql             text        NOT NULL,
    down_sql        text,
    state           text        NOT NULL CHECK (state IN ('running', 'failed')),
    error           text,
    started_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    pid             integer     NOT NULL,
    by_role         text        NOT NULL,
    client_info     text
);
COMMENT ON TABLE pgmig.nontx_run IS 'Non-transactional migrations started but not recorded: how many statements completed, and the error if one failed.';

REVOKE ALL ON pgmig.history, pgmig.install_log, pgmig.audit, pgmig.nontx_run FROM PUBLIC;

-- What migrate_apply notes about the caller's session before the first migration runs, so
-- that nothing a migration changes in the session outlives the call (pgmig._session_snapshot,
-- pgmig._session_restore). Composite types rather than jsonb: built and read once per call,
-- and jsonb would cost ~1 ms for the few hundred settings.
-- (CREATE TYPE has no IF NOT EXISTS; re-running the script keeps an existing type.)
DO $pgmig$
BEGIN
    IF pg_catalog.to_regtype('pgmig.setting') IS NULL THEN
        -- One row of pg_settings as the snapshot saw it; value NULL for a custom setting
        -- that did not exist.
        CREATE TYPE pgmig.setting AS (name text, value text, source text, reset_value text);
    END IF;
    IF pg_catalog.to_regtype('pgmig.caller_state') IS NULL THEN
        -- What the migration executor needs to know of the caller, after every migration:
        -- small, because it is passed at every call (the whole snapshot would be copied).
        CREATE TYPE pgmig.caller_state AS (
            may_be_local      boolean,  -- the caller may hold SET LOCAL values in this transaction
            warn_if_restored  text[],   -- settings the caller itself had changed from the default
            search_path_reset text      -- the session default of search_path (RESET search_path)
        );
    END IF;
    IF pg_catalog.to_regtype('pgmig.session_state') IS NULL THEN
        CREATE TYPE pgmig.session_state AS (
            settings         pgmig.setting[],  -- every setting SET can change that pg_settings lists (_settings_now)
            custom           pgmig.setting[],  -- custom settings pg_settings never lists: pgmig's own
            common           text[],           -- pgmig._settings(): compared after every migration
            caller           pgmig.caller_state, -- for the executor
            search_path      text,             -- the caller's (the engine pins its own while it works)
            role             text,             -- the caller's current_setting('role')
            application_name text,             -- the caller's, recorded in the history
            residue          text[]            -- what else the session holds (pgmig._session_residue)
        );
    END IF;
    IF pg_catalog.to_regtype('pgmig.integrity_state') IS NULL THEN
        -- pgmig's own objects and history as they were right after the history lock was
        -- granted (pgmig._integrity_snapshot, pgmig._assert_intact).
        CREATE TYPE pgmig.integrity_state AS (
            objects      xid[],   -- xmin of every catalog row that defines them (pgmig._integrity_objects)
            functions    xid[],   -- the same of pgmig's functions alone (pgmig._functions_digest)
            history_rows bigint   -- rows in pgmig.history
        );
    END IF;
END
$pgmig$;
