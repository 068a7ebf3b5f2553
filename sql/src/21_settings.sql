-- Settings a migration may change that must not leak into the next migration or into the
-- bookkeeping (tern runs each migration in its own transaction, so there a SET LOCAL ends
-- with the migration; here the whole batch shares one transaction). search_path and role are
-- handled separately by _apply because they must be restored before any unqualified name is
-- resolved. The list is explicit rather than a scan of pg_settings: that view costs ~0.4 ms
-- per read, this array ~3 µs, and it is read once per migration.
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
    'synchronous_commit='                  || pg_catalog.current_setting('synchronous_commit', true),
    'work_mem='                            || pg_catalog.current_setting('work_mem', true),
    'maintenance_work_mem='                || pg_catalog.current_setting('maintenance_work_mem', true)
]
$fn$;

-- Puts back every setting of p_settings (from _settings()) that differs now. is_local =>
-- false: a migration's plain SET changes the session value, which must be put back too, or it
-- would survive the commit.
CREATE OR REPLACE FUNCTION pgmig._restore_settings(p_settings text[])
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path TO pg_catalog, pg_temp
AS $fn$
DECLARE
    v_pair  text;
    v_name  text;
    v_value text;
BEGIN
    FOREACH v_pair IN ARRAY p_settings LOOP
        CONTINUE WHEN v_pair IS NULL;
        v_name  := split_part(v_pair, '=', 1);
        v_value := substr(v_pair, length(v_name) + 2);
        IF current_setting(v_name, true) IS DISTINCT FROM v_value THEN
            PERFORM set_config(v_name, v_value, false);
        END IF;
    END LOOP;
END
$fn$;
