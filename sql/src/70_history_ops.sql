-- Rollback, baseline and repair: the ways the history changes other than applying. Each runs
-- in the caller's transaction under the same history lock as migrate_apply and leaves an
-- audit row (pgmig.audit) saying what changed, when and by whom.

-- Rolls back every applied version above p_to_version, newest first, by running the down SQL
-- recorded in the history when it was applied (so it works without the files, e.g. from an
-- older release that never had them). One transaction: all of the range or none of it.
-- Fails fast by default (p_lock_timeout NULL means 0): going down while another migrator is
-- going up is a conflict to report, not to queue behind.
--
-- A non-transactional migration's down (DROP INDEX CONCURRENTLY...) cannot run inside this
-- transaction either: such a version in the range is refused up front (PM005, nothing rolled
-- back), or, with p_stop_before_nontx, everything newer than it is rolled back and it comes
-- back as 'pending_nontx_rollback' for the client protocol (nontx_down_begin); a dry run
-- reports it so.
CREATE OR REPLACE FUNCTION pgmig._rollback(p_to_version bigint, p_lock_timeout interval,
                                           p_dry_run boolean, p_client_info text, p_notices text,
                                           p_stop_before_nontx boolean, p_scope text)
RETURNS TABLE (version bigint, name text, outcome text, duration interval, applied_at timestamptz)
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
AS $fn$
#variable_conflict use_column
DECLARE
    v_caller_path text := pg_catalog.current_setting('search_path');
    v_caller_role text := pg_catalog.current_setting('role');
    v_settings    text[];
    v_total       bigint;
    v_done        bigint := 0::bigint;
    v_missing     text;
    r             record;
    v_started     timestamptz;
    v_duration    interval;
    v_batch_start timestamptz;
    v_cur_version bigint;
    v_cur_name    text;
    v_phase       text;
    v_state       text;
    v_message     text;
    v_notices     text;
    v_nontx       text;
    v_stop        bigint;   -- the newest non-transactional version in the range
    v_scope       text;
    v_snapshot    pgmig.session_state;
    v_integrity   pgmig.integrity_state;
    v_ran_version bigint[] := '{}'::bigint[];
    v_ran_name    text[] := '{}'::text[];
    v_ran_sql     text[] := '{}'::text[];
BEGIN
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    v_snapshot := pgmig._session_snapshot(v_caller_path);
    v_scope := pgmig._scope(p_scope);
    v_settings := v_snapshot.common;
    v_batch_start := clock_timestamp();
    v_notices := pgmig._notices_mode(p_notices);
    IF p_to_version IS NULL OR p_to_version < 0 THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM001',
            MESSAGE = format('pgmig: to_version must be 0 (roll back everything) or a version, got %s', coalesce(p_to_version::text, 'NULL'));
    END IF;
    PERFORM pgmig._begin('migrate_rollback', coalesce(p_lock_timeout, interval '0'), v_scope);
    v_integrity := pgmig._integrity_snapshot(v_scope);

    SELECT count(*),
           string_agg(format('%s (%s)', h.version, left(h.name, 100)), ', ' ORDER BY h.version)
               FILTER (WHERE h.down_sql IS NULL OR btrim(h.down_sql, E' \t\r\n\f\x0b') = '')
      INTO v_total, v_missing
      FROM pgmig.history AS h WHERE h.scope = v_scope AND h.version > p_to_version;
    IF v_missing IS NOT NULL THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM007',
            MESSAGE = format('pgmig: cannot roll back to version %s: no down SQL was recorded for %s; nothing was rolled back',
                             p_to_version, v_missing),
            HINT = 'Those migrations are irreversible as recorded. Roll back to a version at or above the newest of them, or undo them by hand.';
    END IF;
    SELECT string_agg(format('%s (%s)', h.version, left(h.name, 100)), ', ' ORDER BY h.version DESC), max(h.version)
      INTO v_nontx, v_stop
      FROM pgmig.history AS h WHERE h.scope = v_scope AND h.version > p_to_version AND NOT h.transactional;
    IF v_nontx IS NOT NULL AND NOT p_dry_run AND NOT p_stop_before_nontx THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM005',
            MESSAGE = format('pgmig: cannot roll back to version %s in one transaction: %s %s non-transactional; nothing was rolled back',
                             p_to_version, v_nontx, CASE WHEN v_nontx LIKE '%,%' THEN 'are' ELSE 'is' END),
            DETAIL = 'A non-transactional migration''s down SQL (DROP INDEX CONCURRENTLY, ...) must run outside a transaction, statement by statement.',
            HINT = 'Roll back with `pgmig rollback`, which runs such downs from the client under the same lock. From SQL: '
                || 'migrate_rollback(..., stop_before_non_transactional => true) rolls back what is newer than it and stops.';
    END IF;

    BEGIN
        FOR r IN SELECT h.* FROM pgmig.history AS h WHERE h.scope = v_scope AND h.version > p_to_version ORDER BY h.version DESC LOOP
            version    := r.version;
            name       := r.name;
            applied_at := r.applied_at;
            duration   := NULL;
            IF p_dry_run OR r.version <= v_stop THEN
                -- (a non-transactional one, and everything below it, waits for the client)
                outcome := CASE WHEN NOT r.transactional THEN 'pending_nontx_rollback' ELSE 'pending_rollback' END;
                RETURN NEXT;
                CONTINUE;
            END IF;
            v_done := v_done + 1;
            v_cur_version := r.version;
            v_cur_name := r.name;
            v_phase := 'migration';
            PERFORM pgmig._notice('PM000', format('pgmig: rolling back version %s (%s/%s): %s', r.version, v_done, v_total, r.name),
                                  jsonb_build_object('event', 'rolling_back', 'version', r.version, 'name', r.name,
                                                     'index', v_done, 'total', v_total), v_notices);
            v_started := clock_timestamp();
            PERFORM pgmig._execute_as_caller(r.down_sql, pgmig._scope_path(v_scope, v_caller_path), v_caller_role, v_settings,
                                             r.version, r.name, v_snapshot.caller);
            v_duration := clock_timestamp() - v_started;
            v_ran_version := v_ran_version || r.version;
            v_ran_name := v_ran_name || r.name;
            v_ran_sql := v_ran_sql || r.down_sql;
            PERFORM pgmig._notice('PM000', format('pgmig: rolled back version %s in %s', r.version, v_duration),
                                  jsonb_build_object('event', 'rolled_back', 'version', r.version, 'name', r.name,
                                                     'duration_us', (extract(epoch FROM v_duration) * 1000000)::bigint),
                                  CASE WHEN v_notices = 'json' THEN 'json' ELSE 'none' END);

            v_phase := 'recording';
            PERFORM pgmig._forget_applied(r.version, p_client_info,
                                          jsonb_build_object('to_version', p_to_version, 'duration', v_duration::text), v_scope,
                                          v_snapshot.application_name);
            v_phase := NULL;
            outcome  := 'rolled_back';
            duration := v_duration;
            RETURN NEXT;
        END LOOP;
        -- The down migrations' deferred triggers run now, beneath the executor, not at COMMIT.
        IF v_done > 0 THEN
            PERFORM pgmig._execute_deferred(pgmig._scope_path(v_scope, v_caller_path), v_caller_role, v_settings, v_snapshot.caller,
                                            v_ran_version, v_ran_name);
        END IF;
    EXCEPTION WHEN OTHERS THEN
        PERFORM pgmig._session_restore(v_snapshot, p_failed => true);
        IF v_phase IS NULL THEN
            RAISE;
        END IF;
        GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT;
        IF v_phase = 'migration' THEN
            PERFORM pgmig._raise_explained('rollback of migration', v_cur_version, v_cur_name, v_state, v_message);
        END IF;
        v_message := format('pgmig: rolling back migration %s (%s) failed with SQLSTATE %s; nothing was rolled back',
                            v_cur_version, v_cur_name, v_state);
        IF p_notices <> 'text' THEN
            RAISE WARNING USING ERRCODE = 'PM010', MESSAGE = v_message,
                DETAIL = jsonb_build_object('version', v_cur_version, 'name', v_cur_name, 'sqlstate', v_state,
                                            'committed', 0, 'rollback', true)::text;
        ELSE
            RAISE WARNING USING ERRCODE = 'PM010', MESSAGE = v_message;
        END IF;
        RAISE;
    END;

    IF v_done > 0 THEN
        -- pgmig._functions_digest() inlined (see migrate_apply).
        IF ARRAY(SELECT p.xmin FROM pg_proc AS p
                 WHERE p.pronamespace = to_regnamespace('pgmig') AND p.proname >= '_' AND p.proname < '`'
                 ORDER BY p.oid) IS DISTINCT FROM v_integrity.functions THEN
            -- (Raised here, not by a function a migration could have replaced too.)
            RAISE EXCEPTION USING
                ERRCODE = 'PM013',
                MESSAGE = format('pgmig: the bookkeeping was tampered with during this call by %s; nothing was applied',
                                 pgmig._suspects(v_ran_version, v_ran_name, v_ran_sql)),
                DETAIL = 'pgmig''s own functions, its checkers among them, were replaced or altered (CREATE OR REPLACE or ALTER FUNCTION in schema pgmig).',
                HINT = 'Migrations must not touch pgmig''s own objects (schema pgmig).';
        END IF;
        PERFORM pgmig._session_restore(v_snapshot, v_ran_version, v_ran_name);
        PERFORM pgmig._assert_intact(v_integrity, v_ran_version, v_ran_name, -v_done,
                                     v_ran_version, array_fill(NULL::text, ARRAY[cardinality(v_ran_version)]), v_ran_sql);
        PERFORM pgmig._notice('PM012', format('pgmig: rolled back %s migration%s in %s', v_done,
                                              CASE WHEN v_done > 1 THEN 's' ELSE '' END,
                                              date_trunc('milliseconds', clock_timestamp() - v_batch_start)),
                              jsonb_build_object('rolled_back', v_done), v_notices);
    END IF;
    PERFORM pgmig._unpin_search_path(v_snapshot);
END
$fn$;

-- Adopts an existing database: records the batch's versions up to p_version as applied
-- (kind 'baseline') without running them, with the batch's checksums (manifest entries are
-- enough). Refuses when the history already has versions above p_version.
CREATE OR REPLACE FUNCTION pgmig._baseline(p_batch jsonb, p_version bigint, p_lock_timeout interval,
                                           p_client_info text, p_scope text)
RETURNS TABLE (version bigint, name text, outcome text, duration interval, applied_at timestamptz)
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path TO pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
    v_above    text;
    v_count    bigint;
    v_now      timestamptz := clock_timestamp();
    v_scope    text := pgmig._scope(p_scope);
    v_integrity pgmig.integrity_state;
    v_versions bigint[];
    v_checksums text[];
BEGIN
    PERFORM pgmig._assert_well_formed(p_batch);
    IF p_version IS NULL OR p_version < 1 THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM001',
            MESSAGE = format('pgmig: baseline version must be at least 1, got %s', coalesce(p_version::text, 'NULL'));
    END IF;
    IF NOT EXISTS (SELECT FROM pgmig._batch_rows(p_batch) AS b WHERE b.version <= p_version) THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM001',
            MESSAGE = format('pgmig: the batch has no migration at or below version %s to baseline', p_version);
    END IF;
    PERFORM pgmig._begin('migrate_baseline', p_lock_timeout, v_scope);
    v_integrity := pgmig._integrity_snapshot(v_scope);

    SELECT string_agg(h.version::text, ', ' ORDER BY h.version) INTO v_above
      FROM pgmig.history AS h WHERE h.scope = v_scope AND h.version > p_version;
    IF v_above IS NOT NULL THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM002',
            MESSAGE = format('pgmig: cannot baseline at version %s: the history already has versions %s above it', p_version, v_above),
            HINT = 'A baseline adopts a database that pgmig has not migrated yet; this one already has history past that point.';
    END IF;
    -- Recorded versions at or below the baseline must still match the batch.
    PERFORM pgmig._assert_no_drift(p_batch, true, true, 'nothing was recorded', false, v_scope);

    v_count := pgmig._record_history(
        ARRAY(SELECT (p.version, p.name, p.label, p.checksum, p.sql, p.down_sql, p.transactional,
                      v_now, interval '0', NULL)::pgmig.history_entry
              FROM pgmig._plan_rows(p_batch, v_scope) AS p
              WHERE p.outcome = 'pending' AND p.version <= p_version),
        'baseline', p_client_info, current_setting('application_name'), v_scope);
    SELECT array_agg(h.version), array_agg(h.checksum) INTO v_versions, v_checksums
      FROM pgmig.history AS h WHERE h.scope = v_scope AND h.kind = 'baseline' AND h.applied_at = v_now;
    PERFORM pgmig._assert_intact(v_integrity, '{}', '{}', v_count, coalesce(v_versions, '{}'), coalesce(v_checksums, '{}'));

    PERFORM pgmig._audit('baseline', p_version, p_client_info,
            jsonb_build_object('recorded', v_count,
                               'versions', (SELECT jsonb_agg(h.version ORDER BY h.version) FROM pgmig.history AS h
                                            WHERE h.scope = v_scope AND h.kind = 'baseline' AND h.applied_at = v_now)),
            v_scope);
    RAISE NOTICE USING
        ERRCODE = 'PM012',
        MESSAGE = format('pgmig: baselined at version %s: recorded %s migration%s without running them',
                         p_version, v_count, CASE WHEN v_count = 1 THEN '' ELSE 's' END);

    RETURN QUERY
        SELECT h.version, h.name,
               CASE WHEN h.kind = 'baseline' AND h.applied_at = v_now THEN 'baselined' ELSE 'already_applied' END,
               NULL::interval, h.applied_at
        FROM pgmig.history AS h
        WHERE h.scope = v_scope
        UNION ALL
        SELECT p.version, p.name, 'pending', NULL::interval, NULL::timestamptz
        FROM pgmig._batch_rows(p_batch) AS p
        WHERE p.version > p_version
        ORDER BY 1;
END
$fn$;

-- Records a deliberate edit of applied migrations: their checksum, name, SQL and down SQL in
-- the history become the batch's, with the old values kept in pgmig.audit. p_versions NULL
-- means every applied version whose checksum or name differs from the batch.
CREATE OR REPLACE FUNCTION pgmig._repair(p_batch jsonb, p_versions bigint[], p_lock_timeout interval,
                                         p_client_info text, p_scope text)
RETURNS TABLE (version bigint, name text, outcome text, duration interval, applied_at timestamptz)
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path TO pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
    v_bad   text;
    r       record;
    v_scope text := pgmig._scope(p_scope);
    v_integrity pgmig.integrity_state;
    v_versions  bigint[] := '{}'::bigint[];
    v_checksums text[] := '{}'::text[];
BEGIN
    PERFORM pgmig._assert_well_formed(p_batch);
    PERFORM pgmig._begin('migrate_repair', p_lock_timeout, v_scope);
    v_integrity := pgmig._integrity_snapshot(v_scope);

    SELECT string_agg(v::text, ', ' ORDER BY v) INTO v_bad
      FROM unnest(p_versions) AS v
     WHERE NOT EXISTS (SELECT FROM pgmig._plan_rows(p_batch, v_scope) AS p
                       WHERE p.version = v AND p.outcome = 'already_applied');
    IF v_bad IS NOT NULL THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM001',
            MESSAGE = format('pgmig: cannot repair versions %s: each must be both applied and in the batch', v_bad);
    END IF;

    FOR r IN
        SELECT p.version, p.name, p.label, p.checksum, p.sql, p.down_sql, h AS old
        FROM pgmig._plan_rows(p_batch, v_scope) AS p
        JOIN pgmig.history AS h ON h.scope = v_scope AND h.version = p.version
        WHERE p.outcome = 'already_applied'
          AND (p.checksum <> p.recorded_checksum OR p.name <> p.recorded_name
               OR p.label IS DISTINCT FROM h.label
               -- a down section added or fixed after the migration was applied
               OR (p.down_sql IS NOT NULL AND p.down_sql IS DISTINCT FROM h.down_sql))
          AND (p_versions IS NULL OR p.version = ANY (p_versions))
        ORDER BY p.version
    LOOP
        PERFORM set_config('pgmig.maintenance', 'on', true);
        UPDATE pgmig.history AS h
           SET checksum = r.checksum,
               name     = r.name,
               label    = r.label,
               sql      = coalesce(r.sql, h.sql),
               down_sql = coalesce(r.down_sql, h.down_sql)
         WHERE h.scope = v_scope AND h.version = r.version;
        PERFORM set_config('pgmig.maintenance', '', true);
        PERFORM pgmig._audit('repair', r.version, p_client_info,
                jsonb_build_object('old', jsonb_build_object('name', (r.old).name, 'label', (r.old).label, 'checksum', (r.old).checksum,
                                                             'sql', (r.old).sql, 'down_sql', (r.old).down_sql),
                                   'new', jsonb_build_object('name', r.name, 'label', r.label, 'checksum', r.checksum,
                                                             'sql', coalesce(r.sql, (r.old).sql),
                                                             'down_sql', coalesce(r.down_sql, (r.old).down_sql))),
                v_scope);
        RAISE NOTICE USING
            ERRCODE = 'PM000',
            MESSAGE = format('pgmig: repaired version %s: %s', r.version, r.name);
        version    := r.version;
        name       := r.name;
        outcome    := 'repaired';
        duration   := NULL;
        applied_at := (r.old).applied_at;
        v_versions := v_versions || r.version;
        v_checksums := v_checksums || r.checksum;
        RETURN NEXT;
    END LOOP;
    PERFORM pgmig._assert_intact(v_integrity, '{}', '{}', 0, v_versions, v_checksums);
END
$fn$;
