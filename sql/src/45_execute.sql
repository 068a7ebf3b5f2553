-- Runs one migration's SQL (or its down SQL) as the caller would: with the caller's
-- search_path and role. Then undoes whatever the SQL changed in the session (search_path,
-- role, the settings of _settings()) so that nothing leaks into the bookkeeping or the next
-- migration. Called with search_path pinned to pg_catalog, pg_temp; returns the same way.
CREATE OR REPLACE FUNCTION pgmig._execute_as_caller(p_sql text, p_caller_path text,
                                                    p_caller_role text, p_settings text[],
                                                    p_version bigint, p_name text)
RETURNS void
LANGUAGE plpgsql VOLATILE
AS $fn$
-- (EXECUTE of the migration's SQL is the point of this function; v_ignored holds the value of
-- calls made for their effect.)
-- @plpgsql_check_options: security_warnings = false, extra_warnings = false
DECLARE
    v_path_after text;
    v_role_after text;
    v_session    text := pg_catalog.session_user()::text;
    v_ignored    text;
BEGIN
    -- Between the two set_config calls only EXECUTE and pg_catalog-qualified calls: the SQL
    -- may point search_path at schemas holding hostile functions and operators, and even
    -- "IS DISTINCT FROM" resolves an operator through search_path.
    -- (Assignments rather than PERFORM: an assignment is evaluated as a simple expression,
    -- PERFORM starts an executor each time, ~2 µs; this runs once per migration.)
    v_ignored := pg_catalog.set_config('search_path', p_caller_path, true);
    EXECUTE p_sql;
    v_path_after := pg_catalog.current_setting('search_path');
    v_role_after := pg_catalog.current_setting('role');
    v_ignored := pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);

    -- SET SESSION AUTHORIZATION cannot be put back from here the way a role can, and the
    -- bookkeeping would run as someone else: refuse (the error rolls the batch back, which
    -- also undoes the SET).
    IF session_user::text IS DISTINCT FROM v_session THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM005',
            MESSAGE = format('pgmig: migration %s (%s) changed the session authorization (SET SESSION AUTHORIZATION); nothing was applied',
                             p_version, p_name),
            HINT = 'Use SET LOCAL ROLE in the migration instead; pgmig puts the role back after each migration.';
    END IF;

    IF v_role_after IS DISTINCT FROM p_caller_role THEN
        PERFORM set_config('role', p_caller_role, false);
    END IF;
    -- The bookkeeping needs the history table where it was.
    IF to_regclass('pgmig.history') IS NULL THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM005',
            MESSAGE = format('pgmig: migration %s (%s) dropped, renamed or moved pgmig.history (or schema pgmig); nothing was applied',
                             p_version, p_name),
            HINT = 'Migrations must not touch pgmig''s own objects.';
    END IF;

    IF v_path_after IS DISTINCT FROM p_caller_path THEN
        -- A plain SET changed the session value, which would otherwise survive the commit:
        -- put it back (is_local => false), then pin the safe path again for this transaction.
        PERFORM set_config('search_path', p_caller_path, false);
        PERFORM set_config('search_path', 'pg_catalog, pg_temp', true);
    END IF;
    IF pgmig._settings() IS DISTINCT FROM p_settings THEN
        PERFORM pgmig._restore_settings(p_settings);
    END IF;
END
$fn$;

-- For errors of a migration that have a better explanation than PostgreSQL's own message,
-- raises pgmig's error instead; returns normally otherwise (the caller then re-raises the
-- original error unchanged, which keeps its position). p_what is 'migration' or 'rollback of
-- migration'. The subtransaction of the failed work is already rolled back when this runs.
CREATE OR REPLACE FUNCTION pgmig._raise_explained(p_what text, p_version bigint, p_name text,
                                                  p_state text, p_message text,
                                                  p_commit_points text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path TO pg_catalog, pg_temp
AS $fn$
BEGIN
    IF p_state = '2D000' OR (p_state = '0A000' AND p_message LIKE 'EXECUTE of transaction commands%') THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM005',
            MESSAGE = format('pgmig: %s %s (%s) contains transaction control (BEGIN, COMMIT, ROLLBACK, SAVEPOINT); nothing was applied',
                             p_what, p_version, p_name),
            DETAIL = 'PostgreSQL said: ' || p_message,
            HINT = 'pgmig runs it inside one transaction: remove the transaction control statements. '
                || 'For a change that must commit before the next migration, mark it with ---- pgmig: commit-after ---- ("commit_after": true).';
    END IF;
    IF p_state = '25001' THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM005',
            MESSAGE = format('pgmig: %s %s (%s) cannot run inside a transaction; nothing was applied',
                             p_what, p_version, p_name),
            DETAIL = 'PostgreSQL said: ' || p_message,
            HINT = 'Mark the migration non-transactional (tern: the line ---- tern: disable-tx ----; batch: "transactional": false) and apply it with `pgmig push`.';
    END IF;
    IF p_state = '55P04' THEN
        RAISE EXCEPTION USING
            ERRCODE = '55P04',
            MESSAGE = format('pgmig: %s %s (%s): %s; nothing was applied', p_what, p_version, p_name, p_message),
            DETAIL = 'A new enum value cannot be used in the transaction that added it, and migrate_apply runs the whole batch in one transaction.',
            HINT = CASE WHEN p_commit_points IS NOT NULL
                        THEN format('This batch marks version %s with commit_after: from SQL, apply up to it first '
                                    '(migrate_apply(batch, target_version => %s)), then call migrate_apply again; `pgmig push` does this by itself.',
                                    p_commit_points, split_part(p_commit_points, ',', 1))
                        ELSE 'Mark the migration that adds the value with ---- pgmig: commit-after ---- ("commit_after": true) and apply with `pgmig push`, '
                          || 'or from SQL apply up to that migration first (target_version => it), then call migrate_apply again.' END;
    END IF;
    IF p_state = 'PM008' THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM008',
            MESSAGE = format('pgmig: %s %s (%s) tried to change the history: %s; nothing was applied',
                             p_what, p_version, p_name, p_message),
            HINT = 'Migrations must not touch pgmig''s own objects; the history is changed only by migrate_rollback and migrate_repair.';
    END IF;
    IF p_state = '53200' THEN
        RAISE EXCEPTION USING
            ERRCODE = '53200',
            MESSAGE = format('pgmig: %s %s (%s): %s; nothing was applied', p_what, p_version, p_name, p_message),
            DETAIL = format('One transaction holds a lock on every object it creates or alters until it commits; this batch needed more than the shared lock table holds (max_locks_per_transaction = %s, max_connections = %s).',
                            current_setting('max_locks_per_transaction'), current_setting('max_connections')),
            HINT = '`pgmig push` sizes segments to the server''s lock table by itself (--segment-size auto, the default); otherwise apply fewer '
                || 'migrations per transaction (--segment-size N, or target_version from SQL), or raise max_locks_per_transaction (needs a restart).';
    END IF;
END
$fn$;

-- The history is append-only for migrations: DELETE, UPDATE and TRUNCATE are refused unless
-- pgmig's own rollback/repair (or an operator who means it) set pgmig.maintenance = 'on' for
-- the transaction. A migration that empties the history by accident would otherwise make
-- the next push apply everything again.
CREATE OR REPLACE FUNCTION pgmig._history_guard()
RETURNS trigger
LANGUAGE plpgsql
SET search_path TO pg_catalog, pg_temp
AS $fn$
BEGIN
    IF coalesce(current_setting('pgmig.maintenance', true), '') <> 'on' THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM008',
            MESSAGE = format('pgmig: %s on pgmig.history refused: the history is append-only', TG_OP),
            HINT = 'Use migrate_rollback or migrate_repair. To edit the history by hand anyway: SET LOCAL pgmig.maintenance = ''on'' in the same transaction.';
    END IF;
    RETURN NULL;
END
$fn$;
