-- Session state: nothing a migration does may outlive the call (docs/sql-api.md, "Session
-- state"). _session_snapshot notes the caller's session before the first migration runs;
-- _session_restore puts it back before the call returns (and before every COMMIT of a call
-- that commits by itself). Between migrations, _execute_as_caller puts back the common
-- settings of _settings() cheaply; these two cover everything else, once per call.
--
-- What PostgreSQL lets a function see, and therefore what this can and cannot do:
-- * pg_settings lists every setting except custom placeholders (a SET of 'myapp.x' creates
--   one, flagged GUC_NO_SHOW_ALL) and role/session_authorization; with its source: 'session'
--   when a SET, SET LOCAL, set_config or a function's SET clause gave the value, otherwise
--   the session default (configuration file, ALTER ROLE/DATABASE, connection options...),
--   which RESET restores exactly, source included.
-- * The GUC stack is not exposed at all: neither whether the current value is a SET LOCAL
--   nor the session value beneath it (guc.c keeps it in the stack entry's "prior"/"masked",
--   and no SQL function or view reads those). A migration runs in a subtransaction of the
--   caller's transaction; when that ends, a plain SET made in it turns a SET LOCAL of the
--   caller into a session value (AtEOXact_GUC merges it downward as GUC_SET), and no SQL
--   statement turns it back. So a setting the caller set with SET LOCAL and a migration
--   changed cannot be restored beneath: pgmig puts the caller's value back for the rest of
--   its transaction, keeps it after COMMIT too, and says so (PM014), rather than guess.
--   A caller that cannot hold SET LOCAL values (one statement in its own transaction, not
--   called from another function) gets every setting back exactly.

-- True unless the caller certainly holds no SET LOCAL value (nor a function SET clause) that
-- a migration could turn into a session value: false only when this call is the whole of
-- its transaction's first client message (statement_timestamp() = transaction_timestamp():
-- the simple protocol, as psql -c or pg_cron send it; the extended protocol restamps the
-- statement at Bind and Execute, so it always counts as "may") and is not called from a
-- function other than pgmig's. Not seen, because PostgreSQL shows it nowhere: several
-- statements sent in one simple-protocol message ('SET LOCAL ...; SELECT migrate_apply(...)'),
-- which share one transaction and one statement_timestamp(), and a set_config(..., true)
-- earlier in the same statement. (A transaction block shows only in the error of a statement
-- that refuses to run in one, and catching that error takes a subtransaction, which counts as
-- a block itself.)
CREATE OR REPLACE FUNCTION pgmig._caller_may_hold_local()
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path TO pg_catalog, pg_temp
AS $fn$
DECLARE
    v_context text;
    v_frame   text;
BEGIN
    -- An earlier message of the same transaction: BEGIN, then statements; a pipeline.
    IF statement_timestamp() <> transaction_timestamp() THEN
        RETURN true;
    END IF;
    -- A wrapper function or a DO block: it may have run SET LOCAL, or have a SET clause.
    -- (LIKE rather than a regular expression: nothing to compile in a new connection.)
    GET DIAGNOSTICS v_context = PG_CONTEXT;
    FOREACH v_frame IN ARRAY string_to_array(v_context, E'\n') LOOP
        CONTINUE WHEN v_frame NOT LIKE 'PL/pgSQL function %' AND v_frame NOT LIKE 'SQL function %';
        v_frame := replace(replace(replace(v_frame, 'PL/pgSQL function ', ''), 'SQL function ', ''), '"', '');
        IF NOT (v_frame LIKE 'pgmig.%' OR v_frame LIKE '\_%' OR v_frame LIKE 'migrate\_%' OR v_frame LIKE '%.migrate\_%'
                OR v_frame LIKE 'nontx\_%') THEN
            RETURN true;
        END IF;
    END LOOP;
    RETURN false;
END
$fn$;

-- The custom settings a migration names in a SET, RESET or set_config call, lowercased.
-- PostgreSQL lists custom settings nowhere, so the migration's text is the only place to
-- learn them from; one set through a name built at run time, or inside a function the
-- migration calls, is not seen (docs/sql-api.md, "Session state").
CREATE OR REPLACE FUNCTION pgmig._custom_settings_in(p_sql text)
RETURNS text[]
LANGUAGE plpgsql IMMUTABLE
SET search_path TO pg_catalog, pg_temp
AS $fn$
BEGIN
    -- PL/pgSQL rather than SQL for its cached plan (a SQL function is planned at every call).
    RETURN ARRAY(
        SELECT DISTINCT lower(regexp_replace(m[1], '["[:space:]]', '', 'g'))
        FROM regexp_matches(p_sql,
                            '(?:\m(?:re)?set(?:\s+(?:session|local))?\s+|set_config\s*\(\s*'')'
                            '("?[a-z_][a-z0-9_$]*"?\s*\.\s*"?[a-z_][a-z0-9_$.]*"?)', 'gi') AS m);
END
$fn$;

-- Objects in the session's temporary schema, 'catalog:oid' (what _session_restore drops
-- when a migration created them).
CREATE OR REPLACE FUNCTION pgmig._temp_objects()
RETURNS text[]
LANGUAGE plpgsql STABLE
SET search_path TO pg_catalog, pg_temp
AS $fn$
DECLARE
    v_ns oid := pg_my_temp_schema();
BEGIN
    IF v_ns = 0 THEN
        RETURN '{}'::text[];
    END IF;
    RETURN ARRAY(
        SELECT 'pg_class:' || c.oid FROM pg_class AS c
         WHERE c.relnamespace = v_ns AND c.relkind IN ('r', 'p', 'f', 'v', 'm', 'S', 'c')
        UNION ALL
        SELECT 'pg_proc:' || p.oid FROM pg_proc AS p WHERE p.pronamespace = v_ns
        UNION ALL
        SELECT 'pg_type:' || t.oid FROM pg_type AS t
         WHERE t.typnamespace = v_ns AND t.typtype IN ('d', 'e', 'r', 'm'));
END
$fn$;

-- Releases every session-level hold of one advisory lock as pg_locks shows it.
-- pg_advisory_unlock returns false, with a WARNING, for a lock held only at transaction level
-- (which the commit releases anyway): hence client_min_messages for this function only.
CREATE OR REPLACE FUNCTION pgmig._release_session_advisory(p_classid oid, p_objid oid, p_objsubid smallint, p_mode text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path TO pg_catalog, pg_temp
SET client_min_messages TO error
AS $fn$
DECLARE
    v_key    bigint;
    v_k1     integer;
    v_k2     integer;
    v_shared boolean := p_mode = 'ShareLock';
BEGIN
    IF p_objsubid = 1 THEN
        -- One bigint key: its high half in classid, its low half in objid (unsigned).
        v_key := (p_classid::bigint << 32) | p_objid::bigint;
        LOOP
            EXIT WHEN NOT CASE WHEN v_shared THEN pg_advisory_unlock_shared(v_key) ELSE pg_advisory_unlock(v_key) END;
        END LOOP;
    ELSE
        -- Two integer keys, stored as unsigned oids.
        v_k1 := (p_classid::bigint - CASE WHEN p_classid::bigint > 2147483647 THEN 4294967296 ELSE 0 END)::integer;
        v_k2 := (p_objid::bigint - CASE WHEN p_objid::bigint > 2147483647 THEN 4294967296 ELSE 0 END)::integer;
        LOOP
            EXIT WHEN NOT CASE WHEN v_shared THEN pg_advisory_unlock_shared(v_k1, v_k2) ELSE pg_advisory_unlock(v_k1, v_k2) END;
        END LOOP;
    END IF;
END
$fn$;

-- Every setting SET can change (context user or superuser) that pg_settings lists, in its
-- order: what _session_snapshot notes and _session_restore compares, by one shared statement
-- (a new connection plans it once). Excluded: the transaction's own characteristics, which
-- belong to the transaction and cannot be changed back in it (a migration that changes them
-- fails).
CREATE OR REPLACE FUNCTION pgmig._settings_now()
RETURNS pgmig.setting[]
LANGUAGE plpgsql STABLE
SET search_path TO pg_catalog, pg_temp
AS $fn$
BEGIN
    RETURN ARRAY(SELECT ROW(x.name, x.setting, x.source, x.reset_val)::pgmig.setting
                 FROM pg_settings AS x
                 WHERE x.context IN ('user', 'superuser')
                   AND x.name NOT IN ('transaction_isolation', 'transaction_read_only', 'transaction_deferrable'));
END
$fn$;

-- What a session holds besides settings, 'kind:id' each: WITH HOLD cursors, prepared
-- statements, advisory locks ('advisory:classid:objid:objsubid:mode'), objects in its
-- temporary schema ('temp:catalog:oid'). One statement, shared like _settings_now.
CREATE OR REPLACE FUNCTION pgmig._session_residue()
RETURNS text[]
LANGUAGE plpgsql STABLE
SET search_path TO pg_catalog, pg_temp
AS $fn$
BEGIN
    RETURN ARRAY(
        SELECT 'cursor:' || c.name FROM pg_cursors AS c WHERE c.is_holdable
        UNION ALL
        SELECT 'prepared:' || p.name FROM pg_prepared_statements AS p
        UNION ALL
        SELECT 'advisory:' || concat_ws(':', l.classid, l.objid, l.objsubid, l.mode)
        FROM pg_locks AS l WHERE l.locktype = 'advisory' AND l.pid = pg_backend_pid()
        UNION ALL
        SELECT 'temp:' || o FROM unnest(pgmig._temp_objects()) AS o
        ORDER BY 1);
END
$fn$;

-- The caller's session as it is now, before the first migration runs: every setting, pgmig's
-- own custom settings, and what else a session holds (WITH HOLD cursors, prepared
-- statements, advisory locks, temporary objects). Call it once at the start of a call, with
-- search_path already pinned, and give it the caller's (p_caller_path, read before pinning):
-- _execute_as_caller restores search_path after each migration, _unpin_search_path at the end.
-- p_may_be_local: whether the caller may hold SET LOCAL values (NULL: _caller_may_hold_local
-- decides; a procedure called outside any transaction block, which commits by itself, knows
-- that it cannot and says false).
CREATE OR REPLACE FUNCTION pgmig._session_snapshot(p_caller_path text DEFAULT NULL, p_may_be_local boolean DEFAULT NULL)
RETURNS pgmig.session_state
LANGUAGE plpgsql VOLATILE
SET search_path TO pg_catalog, pg_temp
AS $fn$
DECLARE
    s pgmig.session_state;
BEGIN
    s.settings := pgmig._settings_now();
    s.common := pgmig._settings();
    s.application_name := current_setting('application_name');
    s.search_path := p_caller_path;
    s.role := current_setting('role');
    -- Custom settings pg_settings does not list: pgmig's own (the others a migration names
    -- are read by _execute_as_caller before it runs).
    s.custom := ARRAY[ROW('pgmig.maintenance', current_setting('pgmig.maintenance', true), NULL, NULL)::pgmig.setting,
                      ROW('pgmig.api_schema', current_setting('pgmig.api_schema', true), NULL, NULL)::pgmig.setting];
    s.caller := ROW(coalesce(p_may_be_local, pgmig._caller_may_hold_local()),
                    ARRAY(SELECT b.name FROM unnest(s.settings) AS b
                          WHERE b.source = 'session' AND b.value IS DISTINCT FROM b.reset_value),
                    (SELECT b.reset_value FROM unnest(s.settings) AS b WHERE b.name = 'search_path'))::pgmig.caller_state;
    s.residue := pgmig._session_residue();
    RETURN s;
END
$fn$;

-- 'migration 3 (a)', 'one of the migrations 3 (a), 4 (b)', for messages about what the
-- migrations of a call (or of one transaction of it) did together.
CREATE OR REPLACE FUNCTION pgmig._migrations_text(p_versions bigint[], p_names text[])
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path TO pg_catalog, pg_temp
AS $fn$
BEGIN
    RETURN CASE WHEN coalesce(cardinality(p_versions), 0) = 0 THEN 'a migration of this call'
                WHEN cardinality(p_versions) = 1 THEN pgmig._what(p_versions[1], left(p_names[1], 100))
                ELSE 'one of the migrations ' || (SELECT string_agg(CASE WHEN u.v IS NULL THEN 'repeatable ' || left(u.n, 100)
                                                                         ELSE format('%s (%s)', u.v, left(u.n, 100)) END,
                                                                    ', ' ORDER BY u.v, u.n)
                                                 FROM unnest(p_versions, p_names) AS u(v, n)) END;
END
$fn$;

-- Puts the session back as p_snapshot saw it: every setting (exactly, except the case
-- _caller_may_hold_local describes: PM014), custom settings pgmig can name, and drops what
-- migrations left in it (WITH HOLD cursors, whose query the commit would run, prepared
-- statements, session advisory locks, temporary objects). State of the caller that a
-- migration destroyed and that cannot be rebuilt (PM015) fails the call, which also rolls
-- back what the transaction can. p_ran_versions/p_ran_names, the migrations the call ran,
-- name them in messages. Call it after the last migration, as the caller's role, with
-- search_path pinned (it does not touch search_path or role: _execute_as_caller restored
-- them after each migration). p_failed: called from an error handler, after the rollback of
-- the migrations' subtransaction, which undid everything transactional: only drops what a
-- rollback leaves (prepared statements, session advisory locks), and raises nothing.
-- This part only compares; the work is in _restore_residue and _restore_session_settings,
-- which a new connection then does not even compile in the common case, where nothing changed.
CREATE OR REPLACE FUNCTION pgmig._session_restore(p_snapshot pgmig.session_state,
                                                  p_ran_versions bigint[] DEFAULT NULL,
                                                  p_ran_names text[] DEFAULT NULL,
                                                  p_failed boolean DEFAULT false)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path TO pg_catalog, pg_temp
AS $fn$
DECLARE
    v_now      text[] := pgmig._session_residue();
    v_settings pgmig.setting[];
BEGIN
    IF v_now IS DISTINCT FROM p_snapshot.residue THEN
        PERFORM pgmig._restore_residue(p_snapshot, v_now, p_ran_versions, p_ran_names, p_failed);
    END IF;
    IF p_failed THEN
        RETURN;
    END IF;
    -- When the caller cannot hold a SET LOCAL, its role goes back at session level even when
    -- it reads as before: a migration may have hidden a SET ROLE beneath a SET LOCAL ROLE.
    IF NOT (p_snapshot.caller).may_be_local THEN
        PERFORM set_config('role', p_snapshot.role, false);
    END IF;
    v_settings := pgmig._settings_now();
    -- So do the caller's own settings (see _restore_session_settings); pgmig.maintenance
    -- whenever it exists.
    IF v_settings IS DISTINCT FROM p_snapshot.settings
       OR (NOT (p_snapshot.caller).may_be_local
           AND EXISTS (SELECT FROM unnest(p_snapshot.settings) AS b WHERE b.source = 'session' AND b.name <> 'search_path'))
       OR EXISTS (SELECT FROM unnest(p_snapshot.custom) AS c
                  WHERE c.value IS NOT NULL OR current_setting(c.name, true) IS NOT NULL) THEN
        PERFORM pgmig._restore_session_settings(p_snapshot, v_settings, p_ran_versions, p_ran_names);
    END IF;
END
$fn$;

-- _session_restore's work on what the session holds (p_now: _session_residue() now).
CREATE OR REPLACE FUNCTION pgmig._restore_residue(p_snapshot pgmig.session_state, p_now text[],
                                                  p_ran_versions bigint[], p_ran_names text[], p_failed boolean)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path TO pg_catalog, pg_temp
AS $fn$
-- (EXECUTE of CLOSE/DEALLOCATE/UNLISTEN for names read from the catalogs, quoted.)
-- @plpgsql_check_options: security_warnings = false
DECLARE
    r      record;
    v_now  text[] := p_now;
    v_lost text[];
    v_msg  text;
BEGIN
    FOR r IN SELECT split_part(n, ':', 1) AS kind, substr(n, strpos(n, ':') + 1) AS id
             FROM unnest(v_now) AS n WHERE n <> ALL (coalesce(p_snapshot.residue, '{}'))
             ORDER BY split_part(n, ':', 1) <> 'cursor', n LOOP
        IF r.kind = 'cursor' THEN
            -- Its query would run to completion at COMMIT, outside every migration (it
            -- could still write the history then), and it would stay open in the session.
            EXECUTE format('CLOSE %I', r.id);
        ELSIF r.kind = 'prepared' THEN
            EXECUTE format('DEALLOCATE %I', r.id);
        ELSIF r.kind = 'advisory' THEN
            PERFORM pgmig._release_session_advisory(split_part(r.id, ':', 1)::oid, split_part(r.id, ':', 2)::oid,
                                                    split_part(r.id, ':', 3)::smallint, split_part(r.id, ':', 4));
        ELSIF r.kind = 'temp' AND NOT p_failed THEN
            -- IF EXISTS: dropping a table already took its dependent objects with it.
            IF split_part(r.id, ':', 1) = 'pg_class' THEN
                SELECT format('DROP %s IF EXISTS %s CASCADE',
                              CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'S' THEN 'SEQUENCE'
                                             WHEN 'f' THEN 'FOREIGN TABLE' WHEN 'c' THEN 'TYPE' ELSE 'TABLE' END,
                              CASE WHEN c.relkind = 'c' THEN format_type(c.reltype, NULL) ELSE c.oid::regclass::text END)
                  INTO v_msg FROM pg_class AS c WHERE c.oid = split_part(r.id, ':', 2)::oid;
            ELSIF split_part(r.id, ':', 1) = 'pg_proc' THEN
                SELECT format('DROP ROUTINE IF EXISTS %s CASCADE', p.oid::regprocedure) INTO v_msg
                  FROM pg_proc AS p WHERE p.oid = split_part(r.id, ':', 2)::oid;
            ELSE
                SELECT format('DROP %s IF EXISTS %s CASCADE', CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END, format_type(t.oid, NULL))
                  INTO v_msg FROM pg_type AS t WHERE t.oid = split_part(r.id, ':', 2)::oid;
            END IF;
            IF v_msg IS NOT NULL THEN
                EXECUTE v_msg;
            END IF;
        END IF;
    END LOOP;
    -- What the caller had and a migration destroyed: not transactional (prepared
    -- statements, cursors, session advisory locks, which another session may hold by now),
    -- or dropped temporary objects. Failing the call brings back what a rollback can.
    IF NOT p_failed THEN
        v_lost := ARRAY(SELECT CASE split_part(n, ':', 1) WHEN 'cursor' THEN 'WITH HOLD cursor ' WHEN 'prepared' THEN 'prepared statement '
                                    WHEN 'advisory' THEN 'session advisory lock ' ELSE 'temporary object ' END
                               || substr(n, strpos(n, ':') + 1)
                        FROM unnest(p_snapshot.residue) AS n WHERE n <> ALL (v_now));
        IF v_lost <> '{}' THEN
            RAISE EXCEPTION USING
                ERRCODE = 'PM015',
                MESSAGE = format('pgmig: %s removed session state the caller had: %s; nothing was applied',
                                 pgmig._migrations_text(p_ran_versions, p_ran_names), array_to_string(v_lost, ', ')),
                HINT = 'A migration must leave the session as it found it: no DEALLOCATE, CLOSE, DISCARD, pg_advisory_unlock_all() or DROP of objects it did not create. '
                    || 'Prepared statements, cursors and session advisory locks are not transactional: the client may have to reconnect.';
        END IF;
    END IF;
END
$fn$;

-- _session_restore's work on settings (p_now: _settings_now() now).
CREATE OR REPLACE FUNCTION pgmig._restore_session_settings(p_snapshot pgmig.session_state, p_now pgmig.setting[],
                                                           p_ran_versions bigint[], p_ran_names text[])
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path TO pg_catalog, pg_temp
AS $fn$
DECLARE
    r       record;
    v_name  text;
    v_from  text;
    v_to    text;
    v_state text;
    v_msg   text;
BEGIN
    -- Settings. A setting the caller had not set (its source is a session default) goes back
    -- with RESET, which restores its source too; one the caller had set goes back to its
    -- value at session level (see above: PM014 when it may have been a SET LOCAL). When the
    -- caller cannot hold a SET LOCAL, those go back even when they read as before: a
    -- migration may have hidden a session-level SET beneath a SET LOCAL of the same value,
    -- which only the COMMIT would reveal; the caller's own SET values are exact either way.
    v_name := NULL;
    BEGIN
        FOR r IN
            SELECT coalesce(b.name, n.name) AS name, b.value AS v0, b.source AS s0, n.value AS v1, n.source AS s1
            FROM unnest(p_snapshot.settings) AS b
            FULL JOIN unnest(p_now) AS n ON n.name = b.name
            WHERE coalesce(b.name, n.name) <> 'search_path'
              AND ((b.value, b.source) IS DISTINCT FROM (n.value, n.source)
                   OR (b.source = 'session' AND NOT (p_snapshot.caller).may_be_local))
        LOOP
            -- Gone (cannot happen), or defined during the call by a library a migration
            -- loaded and still at its default.
            CONTINUE WHEN r.v1 IS NULL OR (r.v0 IS NULL AND r.s1 <> 'session');
            v_name := r.name; v_from := r.v1; v_to := coalesce(r.v0, 'its default');
            IF r.s0 IS DISTINCT FROM 'session' THEN
                EXECUTE format('RESET %I', r.name);
            ELSE
                PERFORM set_config(r.name, r.v0, false);
                IF (p_snapshot.caller).may_be_local AND r.name = ANY ((p_snapshot.caller).warn_if_restored) AND r.v1 IS DISTINCT FROM r.v0 THEN
                    PERFORM pgmig._warn_restored(r.name, r.v0, pgmig._migrations_text(p_ran_versions, p_ran_names));
                END IF;
            END IF;
        END LOOP;
        v_name := NULL;
        FOR r IN SELECT c.name, c.value AS v0, current_setting(c.name, true) AS v1 FROM unnest(p_snapshot.custom) AS c LOOP
            v_name := r.name; v_from := r.v1; v_to := coalesce(r.v0, '');
            IF r.name = 'pgmig.maintenance' THEN
                -- Put back unconditionally: a migration could hide a session-level 'on'
                -- beneath a SET LOCAL of the old value, unseen until the commit. The
                -- caller's own 'on' stays for the rest of its transaction only: the history
                -- guard's switch is never left on for later transactions by a call.
                IF r.v0 IS NOT NULL OR r.v1 IS NOT NULL THEN
                    PERFORM set_config('pgmig.maintenance', CASE WHEN r.v0 = 'on' THEN '' ELSE coalesce(r.v0, '') END, false);
                    IF r.v0 = 'on' THEN
                        PERFORM set_config('pgmig.maintenance', 'on', true);
                    END IF;
                END IF;
            ELSIF r.v1 IS DISTINCT FROM r.v0 OR (r.v0 IS NOT NULL AND NOT (p_snapshot.caller).may_be_local) THEN
                -- A custom setting cannot be undefined again: one that did not exist is left empty.
                PERFORM set_config(r.name, coalesce(r.v0, ''), false);
                IF (p_snapshot.caller).may_be_local AND r.v0 IS NOT NULL AND r.v1 IS DISTINCT FROM r.v0 THEN
                    PERFORM pgmig._warn_restored(r.name, r.v0, pgmig._migrations_text(p_ran_versions, p_ran_names));
                END IF;
            END IF;
        END LOOP;
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_msg = MESSAGE_TEXT;
        IF v_name IS NULL THEN
            RAISE;
        END IF;
        RAISE EXCEPTION USING
            ERRCODE = 'PM015',
            MESSAGE = format('pgmig: %s changed %s to %L, which cannot be put back to %L; nothing was applied',
                             pgmig._migrations_text(p_ran_versions, p_ran_names), v_name, v_from, v_to),
            DETAIL = format('PostgreSQL said: %s (SQLSTATE %s)', v_msg, v_state),
            HINT = 'A migration must leave the session as it found it. Remove the SET, or SET LOCAL it where PostgreSQL allows that.';
    END;
END
$fn$;

-- The last statement of a call: search_path back to the caller's, as the caller had it. The
-- engine pinned its own for the transaction (SET LOCAL): now the caller's value, and its
-- source when it was the session default (SET LOCAL search_path TO DEFAULT). When the caller
-- cannot hold a SET LOCAL, also at session level: a migration may have hidden a
-- session-level SET search_path beneath a SET LOCAL, which only the COMMIT would reveal
-- (and which would then point every later statement of the session at its schemas). When it
-- may, and a migration changed search_path (_execute_as_caller then put the session value
-- back), the session default goes back with RESET: the stacked value PostgreSQL restores at
-- COMMIT would otherwise carry source 'session'.
-- Nothing may be resolved through search_path after it: call it last, by qualified name.
-- No SET clause: it would undo a SET LOCAL made in here.
CREATE OR REPLACE FUNCTION pgmig._unpin_search_path(p_snapshot pgmig.session_state)
RETURNS void
LANGUAGE plpgsql VOLATILE
AS $fn$
-- (v_ignored holds the value of calls made for their effect.)
-- @plpgsql_check_options: extra_warnings = false
DECLARE
    v_default boolean := p_snapshot.search_path IS NOT DISTINCT FROM (p_snapshot.caller).search_path_reset;
    v_ignored text;
BEGIN
    IF p_snapshot.search_path IS NULL THEN
        RETURN;
    END IF;
    IF v_default AND (NOT (p_snapshot.caller).may_be_local
                      OR pg_catalog.current_setting('pgmig.search_path_restored', true) = 'on') THEN
        RESET search_path;
    ELSIF NOT (p_snapshot.caller).may_be_local THEN
        v_ignored := pg_catalog.set_config('search_path', p_snapshot.search_path, false);
    ELSIF v_default THEN
        SET LOCAL search_path TO DEFAULT;
    ELSE
        v_ignored := pg_catalog.set_config('search_path', p_snapshot.search_path, true);
    END IF;
END
$fn$;
