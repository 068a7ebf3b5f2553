-- The API functions live in the install's API schema (default public) so that
-- `select * from migrate_apply(...)` works with the default search_path. They are thin SQL
-- wrappers over pgmig internals, created here with format(%I) because the schema is chosen at
-- install time (a literal schema in this file could not follow the choice, and @extschema@
-- would not work for the plain script).
CREATE OR REPLACE FUNCTION pgmig._install_api(p_schema text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path TO pg_catalog, pg_temp
AS $fn$
DECLARE
    v_fn record;
BEGIN
    EXECUTE format($ddl$
        CREATE OR REPLACE FUNCTION %I.migrate_apply(
            batch              jsonb,
            target_version     bigint   DEFAULT NULL,
            lock_timeout       interval DEFAULT NULL,
            allow_out_of_order boolean  DEFAULT false,
            allow_missing      boolean  DEFAULT false,
            dry_run            boolean  DEFAULT false,
            client_info        text     DEFAULT NULL,
            lock_budget        integer  DEFAULT NULL)
        RETURNS TABLE (version bigint, name text, outcome text, duration interval, applied_at timestamptz)
        LANGUAGE sql VOLATILE SECURITY INVOKER
        AS 'SELECT * FROM pgmig._apply($1, $2, $3, coalesce($4, false), coalesce($5, false), coalesce($6, false), $7, $8)'
    $ddl$, p_schema);

    EXECUTE format($ddl$
        CREATE OR REPLACE FUNCTION %I.migrate_plan(
            batch              jsonb,
            target_version     bigint  DEFAULT NULL,
            allow_out_of_order boolean DEFAULT false,
            allow_missing      boolean DEFAULT false)
        RETURNS TABLE (version bigint, name text, outcome text, duration interval, applied_at timestamptz)
        LANGUAGE sql STABLE SECURITY INVOKER
        AS 'SELECT * FROM pgmig._plan($1, $2, coalesce($3, false), coalesce($4, false))'
    $ddl$, p_schema);

    EXECUTE format($ddl$
        CREATE OR REPLACE FUNCTION %I.migrate_status()
        RETURNS TABLE (version bigint, name text, state text, applied_at timestamptz, applied_by text,
                       client text, duration interval, checksum text, detail text)
        LANGUAGE sql STABLE SECURITY INVOKER
        AS 'SELECT * FROM pgmig._status()'
    $ddl$, p_schema);

    EXECUTE format($ddl$
        CREATE OR REPLACE FUNCTION %I.migrate_lock_holder()
        RETURNS TABLE (pid integer, role text, application_name text, client_addr inet,
                       since timestamptz, state text, query text)
        LANGUAGE sql STABLE SECURITY INVOKER
        AS 'SELECT * FROM pgmig._lock_holder()'
    $ddl$, p_schema);

    EXECUTE format($ddl$
        CREATE OR REPLACE FUNCTION %I.migrate_rollback(
            to_version   bigint,
            lock_timeout interval DEFAULT NULL,
            dry_run      boolean  DEFAULT false,
            client_info  text     DEFAULT NULL)
        RETURNS TABLE (version bigint, name text, outcome text, duration interval, applied_at timestamptz)
        LANGUAGE sql VOLATILE SECURITY INVOKER
        AS 'SELECT * FROM pgmig._rollback($1, $2, coalesce($3, false), $4)'
    $ddl$, p_schema);

    EXECUTE format($ddl$
        CREATE OR REPLACE FUNCTION %I.migrate_baseline(
            batch        jsonb,
            version      bigint,
            lock_timeout interval DEFAULT NULL,
            client_info  text     DEFAULT NULL)
        RETURNS TABLE (version bigint, name text, outcome text, duration interval, applied_at timestamptz)
        LANGUAGE sql VOLATILE SECURITY INVOKER
        AS 'SELECT * FROM pgmig._baseline($1, $2, $3, $4)'
    $ddl$, p_schema);

    EXECUTE format($ddl$
        CREATE OR REPLACE FUNCTION %I.migrate_repair(
            batch        jsonb,
            versions     bigint[] DEFAULT NULL,
            lock_timeout interval DEFAULT NULL,
            client_info  text     DEFAULT NULL)
        RETURNS TABLE (version bigint, name text, outcome text, duration interval, applied_at timestamptz)
        LANGUAGE sql VOLATILE SECURITY INVOKER
        AS 'SELECT * FROM pgmig._repair($1, $2, $3, $4)'
    $ddl$, p_schema);

    EXECUTE format($ddl$
        CREATE OR REPLACE FUNCTION %I.migrate_resolve(
            version      bigint,
            action       text,
            lock_timeout interval DEFAULT NULL,
            client_info  text     DEFAULT NULL)
        RETURNS TABLE (version bigint, name text, outcome text, duration interval, applied_at timestamptz)
        LANGUAGE sql VOLATILE SECURITY INVOKER
        AS 'SELECT * FROM pgmig._resolve($1, $2, $3, $4)'
    $ddl$, p_schema);

    EXECUTE format($ddl$
        CREATE OR REPLACE FUNCTION %I.migrate_history_digest()
        RETURNS text
        LANGUAGE sql STABLE SECURITY INVOKER
        AS 'SELECT pgmig._history_digest()'
    $ddl$, p_schema);

    -- Functions are created executable by PUBLIC; pgmig's are not.
    FOR v_fn IN
        SELECT p.oid::regprocedure AS sig
        FROM pg_proc AS p
        WHERE p.pronamespace = p_schema::regnamespace
          AND p.proname IN ('migrate_apply', 'migrate_plan', 'migrate_status', 'migrate_lock_holder',
                            'migrate_rollback', 'migrate_baseline', 'migrate_repair', 'migrate_resolve',
                            'migrate_history_digest')
    LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', v_fn.sig);
    END LOOP;

    EXECUTE format($ddl$COMMENT ON FUNCTION %I.migrate_apply(jsonb, bigint, interval, boolean, boolean, boolean, text, integer)
        IS 'pgmig: lock the history, validate the batch against it, apply what is pending in one transaction'$ddl$, p_schema);
    EXECUTE format($ddl$COMMENT ON FUNCTION %I.migrate_plan(jsonb, bigint, boolean, boolean)
        IS 'pgmig: what migrate_apply would do with this batch, without taking the lock'$ddl$, p_schema);
    EXECUTE format($ddl$COMMENT ON FUNCTION %I.migrate_status()
        IS 'pgmig: the migration history, plus who is migrating right now'$ddl$, p_schema);
    EXECUTE format($ddl$COMMENT ON FUNCTION %I.migrate_lock_holder()
        IS 'pgmig: the session holding the migration lock, if any'$ddl$, p_schema);
    EXECUTE format($ddl$COMMENT ON FUNCTION %I.migrate_history_digest()
        IS 'pgmig: sha256 over "version<TAB>name<TAB>checksum<LF>" of every applied migration, in version order'$ddl$, p_schema);
    EXECUTE format($ddl$COMMENT ON FUNCTION %I.migrate_rollback(bigint, interval, boolean, text)
        IS 'pgmig: run the recorded down SQL of every version above to_version, newest first, in one transaction'$ddl$, p_schema);
    EXECUTE format($ddl$COMMENT ON FUNCTION %I.migrate_baseline(jsonb, bigint, interval, text)
        IS 'pgmig: record the batch''s versions up to version as applied without running them'$ddl$, p_schema);
    EXECUTE format($ddl$COMMENT ON FUNCTION %I.migrate_repair(jsonb, bigint[], interval, text)
        IS 'pgmig: accept deliberate edits of applied migrations (checksum, name), audited'$ddl$, p_schema);
    EXECUTE format($ddl$COMMENT ON FUNCTION %I.migrate_resolve(bigint, text, interval, text)
        IS 'pgmig: after an interrupted non-transactional migration: retry it, or record it as applied'$ddl$, p_schema);
END
$fn$;
