-- Added in 0.2.0: a display label per migration (a Flyway version such as "1.2" as written in
-- its file name; NULL means the version number itself), and the composite types the engine
-- passes between its steps. The types are created once and never replaced: a type used in a
-- function signature cannot be dropped without dropping the function (and its grants).
ALTER TABLE pgmig.history ADD COLUMN IF NOT EXISTS label text;
-- Added in 0.2.0: a non-transactional run is an up (applying) or a down (rolling back).
ALTER TABLE pgmig.nontx_run ADD COLUMN IF NOT EXISTS direction text NOT NULL DEFAULT 'up' CHECK (direction IN ('up', 'down'));
COMMENT ON COLUMN pgmig.history.label IS 'the version as written in the migration file name, when it is not the plain number (e.g. Flyway "1.2")';

DO $pgmig$
BEGIN
    -- One batch entry joined with the history, as the engine plans it (see _plan_rows).
    IF pg_catalog.to_regtype('pgmig.plan_entry') IS NULL THEN
        CREATE TYPE pgmig.plan_entry AS (
            version           bigint,
            name              text,
            label             text,
            outcome           text,
            sql               text,
            down_sql          text,
            transactional     boolean,
            commit_after      boolean,
            checksum          text,
            recorded_name     text,
            recorded_checksum text,
            applied_at        timestamptz);
    END IF;
    -- One row to record in pgmig.history (see _record_history).
    IF pg_catalog.to_regtype('pgmig.history_entry') IS NULL THEN
        CREATE TYPE pgmig.history_entry AS (
            version       bigint,
            name          text,
            label         text,
            checksum      text,
            sql           text,
            down_sql      text,
            transactional boolean,
            applied_at    timestamptz,
            duration      interval,
            backend_pid   integer);
    END IF;
END
$pgmig$;

DO $pgmig$
BEGIN
    -- What one call of the engine passes to the step that executes migrations
    -- (_execute_plan): who the caller is and the call's options.
    IF pg_catalog.to_regtype('pgmig.call_context') IS NULL THEN
        CREATE TYPE pgmig.call_context AS (
            caller_path         text,     -- the caller's search_path, for the migrations
            caller_role         text,     -- the caller's role setting, for the migrations
            settings            text[],   -- _settings() at the start of the call
            client_info         text,
            client_application  text,     -- application_name at the start of the call
            notices             text,     -- progress notices: 'text', 'json' or 'none' (nobody listens)
            data                boolean,  -- JSON DETAIL on pgmig's warnings (notices 'json' or 'none' asked for)
            lock_budget         integer,  -- NULL: none
            max_per_transaction integer,  -- NULL: none
            run_mode            boolean,  -- migrate_run: end the transaction at commit_after
            commit_points       text,     -- versions marked commit_after, for hints
            total               bigint,   -- migrations this call will apply, for progress
            committed           bigint,   -- migrations committed earlier by this call
            capture_failure     boolean); -- return a failing migration's error as data instead of raising it
    END IF;
END
$pgmig$;

-- Added in 0.2.0 (DDL lock timeouts, rehearsals): attributes of call_context, added in place
-- (the type is never replaced, see above); each guarded so that the script stays idempotent.
DO $pgmig$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_attribute
                   WHERE attrelid = 'pgmig.call_context'::pg_catalog.regclass AND attname = 'ddl_lock_timeout' AND NOT attisdropped) THEN
        -- lock_timeout for the migrations' own statements (NULL: the session's)
        ALTER TYPE pgmig.call_context ADD ATTRIBUTE ddl_lock_timeout interval;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_attribute
                   WHERE attrelid = 'pgmig.call_context'::pg_catalog.regclass AND attname = 'lock_timeouts' AND NOT attisdropped) THEN
        -- per-migration overrides from the batch's "lock_timeout" keys: {"<version>": <ms>}
        ALTER TYPE pgmig.call_context ADD ATTRIBUTE lock_timeouts jsonb;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_attribute
                   WHERE attrelid = 'pgmig.call_context'::pg_catalog.regclass AND attname = 'rehearse' AND NOT attisdropped) THEN
        -- migrate_rehearse: measure each migration (locks, rewrites, WAL) for the report
        ALTER TYPE pgmig.call_context ADD ATTRIBUTE rehearse boolean;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_attribute
                   WHERE attrelid = 'pgmig.call_context'::pg_catalog.regclass AND attname = 'session' AND NOT attisdropped) THEN
        -- the caller's session as _session_snapshot saw it, put back when the call ends or fails
        ALTER TYPE pgmig.call_context ADD ATTRIBUTE session pgmig.session_state;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_attribute
                   WHERE attrelid = 'pgmig.plan_entry'::pg_catalog.regclass AND attname = 'statements' AND NOT attisdropped) THEN
        -- the batch's "statements": where each statement of sql starts (see _execute_as_caller)
        ALTER TYPE pgmig.plan_entry ADD ATTRIBUTE statements integer[];
    END IF;
END
$pgmig$;
