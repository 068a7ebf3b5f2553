-- Settings a migration commonly changes, compared after every migration so that one
-- migration's SET does not leak into the next or into the bookkeeping (tern runs each
-- migration in its own transaction, so there a SET LOCAL ends with the migration; here the
-- whole batch shares one transaction). search_path and role are handled by
-- _execute_as_caller itself because they must be restored before any unqualified name is
-- resolved. Every other setting is put back once, when the call ends (_session_restore):
-- reading pg_settings costs ~0.6 ms, this array ~4 µs, and it is read once per migration;
-- so only settings that change what the next migration or the bookkeeping does are here
-- (not, say, application_name or default_transaction_*, which act on later transactions).
-- transaction_read_only is here to be noticed, not restored: a migration must not make the
-- caller's transaction read-only (_restore_settings refuses it).
-- Each element is 'name=value'; setting names never contain '='. Settings unknown to this
-- server (missing_ok) yield NULL elements, which _restore_settings skips.
CREATE OR REPLACE FUNCTION pgmig._settings()
RETURNS text[]
LANGUAGE sql STABLE
AS $fn$
SELECT ARRAY[
    'statement_timeout='                   || pg_catalog.current_setting('statement_timeout', true),
    'lock_timeout='                        || pg_catalog.current_setting('lock_timeout', true),
    'idle_in_transaction_session_timeout=' || pg_catalog.current_setting('idle_in_transaction_session_timeout', true),
    'default_tablespace='                  || pg_catalog.current_setting('default_tablespace', true),
    'temp_tablespaces='                    || pg_catalog.current_setting('temp_tablespaces', true),
    'default_table_access_method='         || pg_catalog.current_setting('default_table_access_method', true),
    'default_toast_compression='           || pg_catalog.current_setting('default_toast_compression', true),
    'session_replication_role='            || pg_catalog.current_setting('session_replication_role', true),
    'check_function_bodies='               || pg_catalog.current_setting('check_function_bodies', true),
    'row_security='                        || pg_catalog.current_setting('row_security', true),
    'DateStyle='                           || pg_catalog.current_setting('DateStyle', true),
    'TimeZone='                            || pg_catalog.current_setting('TimeZone', true),
    'IntervalStyle='                       || pg_catalog.current_setting('IntervalStyle', true),
    'extra_float_digits='                  || pg_catalog.current_setting('extra_float_digits', true),
    'bytea_output='                        || pg_catalog.current_setting('bytea_output', true),
    'xmloption='                           || pg_catalog.current_setting('xmloption', true),
    'standard_conforming_strings='         || pg_catalog.current_setting('standard_conforming_strings', true),
    'client_min_messages='                 || pg_catalog.current_setting('client_min_messages', true),
    'client_encoding='                     || pg_catalog.current_setting('client_encoding', true),
    'synchronous_commit='                  || pg_catalog.current_setting('synchronous_commit', true),
    'work_mem='                            || pg_catalog.current_setting('work_mem', true),
    'maintenance_work_mem='                || pg_catalog.current_setting('maintenance_work_mem', true),
    'plpgsql.variable_conflict='           || pg_catalog.current_setting('plpgsql.variable_conflict', true),
    -- Would end the session at the next error, even one the engine catches itself.
    'exit_on_error='                       || pg_catalog.current_setting('exit_on_error', true),
    'transaction_read_only='               || pg_catalog.current_setting('transaction_read_only', true)
]
$fn$;

-- Before 0.1.0 settled, _restore_settings took only the array.
DROP FUNCTION IF EXISTS pgmig._restore_settings(text[]);

-- Puts back every setting of p_settings (from _settings()) that differs now, at session level
-- (is_local => false): a migration's plain SET changed the session value, which would
-- otherwise survive the commit, and PostgreSQL does not show whether it was a SET or a SET
-- LOCAL (see docs/sql-api.md, "Session state"). With p_caller (the call's
-- _session_snapshot(...).caller), a setting the caller itself had set is reported (PM014) when the
-- caller may hold a SET LOCAL value, whose session value beneath cannot be put back.
-- p_version/p_name name the migration in errors and warnings.
CREATE OR REPLACE FUNCTION pgmig._restore_settings(p_settings text[],
                                                   p_caller pgmig.caller_state DEFAULT NULL,
                                                   p_version bigint DEFAULT NULL,
                                                   p_name text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path TO pg_catalog, pg_temp
AS $fn$
DECLARE
    v_pair  text;
    v_name  text;
    v_value text;
    v_now   text;
    v_state text;
    v_msg   text;
    -- (pgmig._what spelled out: this runs right after a migration, see _execute_as_caller)
    v_what  text := CASE WHEN p_version IS NOT NULL THEN format('migration %s (%s)', p_version, p_name)
                         WHEN p_name = 'deferred constraints and triggers' THEN 'the ' || p_name
                         ELSE 'repeatable migration ' || p_name END;
BEGIN
    FOREACH v_pair IN ARRAY p_settings LOOP
        CONTINUE WHEN v_pair IS NULL;
        v_name  := split_part(v_pair, '=', 1);
        v_value := substr(v_pair, length(v_name) + 2);
        v_now   := current_setting(v_name, true);
        CONTINUE WHEN v_now IS NOT DISTINCT FROM v_value;
        IF v_name = 'transaction_read_only' THEN
            -- SET TRANSACTION READ ONLY (or SET transaction_read_only) cannot be undone in the
            -- same transaction, and the rest of the batch and its bookkeeping would fail in
            -- the next migration, naming the wrong one.
            RAISE EXCEPTION USING
                ERRCODE = 'PM005',
                MESSAGE = format('pgmig: %s made the transaction read-only (SET TRANSACTION READ ONLY); nothing was applied',
                                 v_what),
                HINT = pgmig._hint_transaction_characteristics();
        END IF;
        BEGIN
            PERFORM set_config(v_name, v_value, false);
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_msg = MESSAGE_TEXT;
            RAISE EXCEPTION USING
                ERRCODE = 'PM015',
                MESSAGE = format('pgmig: %s changed %s to %L, which cannot be put back to %L; nothing was applied',
                                 v_what, v_name, v_now, v_value),
                DETAIL = format('PostgreSQL said: %s (SQLSTATE %s)', v_msg, v_state),
                HINT = 'A migration must leave the session as it found it. Remove the SET, or SET LOCAL it where PostgreSQL allows that.';
        END;
        IF p_caller.may_be_local AND v_name = ANY (p_caller.warn_if_restored) THEN
            PERFORM pgmig._warn_restored(v_name, v_value, v_what);
        END IF;
    END LOOP;
END
$fn$;

-- The PM014 warning: the setting p_name, which the caller itself had set to p_value before
-- the call, was changed by p_who and has been put back at session level. Exact when the
-- caller's value was a session value; when it was a SET LOCAL, the session value beneath it
-- is lost, because PostgreSQL exposes neither (docs/sql-api.md, "Session state").
CREATE OR REPLACE FUNCTION pgmig._warn_restored(p_name text, p_value text, p_who text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path TO pg_catalog, pg_temp
AS $fn$
BEGIN
    RAISE WARNING USING
        ERRCODE = 'PM014',
        MESSAGE = format('pgmig: %s changed %s, which the caller had set to %L before the call; it is %L again, '
                         'but if the caller had set it with SET LOCAL, %L now also stays after COMMIT',
                         p_who, p_name, p_value, p_value, p_value),
        DETAIL = 'PostgreSQL shows neither whether a value was set with SET LOCAL nor the session value beneath it, '
              || 'so pgmig puts the caller''s value back at session level.',
        HINT = 'Let migrations leave the settings the caller sets alone (a SET LOCAL in a migration is undone after it), '
            || 'or call migrate_apply in a transaction of its own (autocommit), where every setting is put back exactly.';
END
$fn$;

-- The hint for a migration that tries to change its transaction's characteristics.
CREATE OR REPLACE FUNCTION pgmig._hint_transaction_characteristics()
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path TO pg_catalog, pg_temp
AS $fn$
SELECT 'The transaction and its characteristics (isolation level, read-only, deferrable, snapshot) belong to the caller: '
    || 'migrate_apply runs every migration in the caller''s READ COMMITTED read-write transaction. Remove the statement; '
    || 'marking the migration non-transactional would not help (each of its statements then runs in a transaction of its own).'
$fn$;
