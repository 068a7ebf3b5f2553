-- Record the install and create the API functions in the chosen schema: the setting
-- pgmig.api_schema if the installer set it (SET pgmig.api_schema = 'x' before running the
-- script), else the extension's schema (CREATE EXTENSION pgmig SCHEMA x), else the schema of
-- the previous install, else public.
DO $pgmig$
DECLARE
    v_mode   text;
    v_schema text;
BEGIN
    v_mode := CASE WHEN EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname = 'pgmig')
                   THEN 'extension' ELSE 'script' END;
    v_schema := coalesce(
        nullif(pg_catalog.current_setting('pgmig.api_schema', true), ''),
        (SELECT n.nspname::text FROM pg_catalog.pg_extension AS e
           JOIN pg_catalog.pg_namespace AS n ON n.oid = e.extnamespace WHERE e.extname = 'pgmig'),
        (SELECT l.api_schema FROM pgmig.install_log AS l ORDER BY l.installed_at DESC LIMIT 1),
        'public');
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_namespace WHERE nspname = v_schema) THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM006',
            MESSAGE = pg_catalog.format('pgmig: the API schema %I does not exist', v_schema),
            HINT = 'Create it first, or choose another with SET pgmig.api_schema = ''...'' before installing.';
    END IF;

    -- Always in schema pgmig (safe qualified calls), and in the chosen API schema.
    PERFORM pgmig._install_api('pgmig');
    IF v_schema <> 'pgmig' THEN
        PERFORM pgmig._install_api(v_schema);
    END IF;

    IF v_mode = 'extension' THEN
        -- Extension member tables are not dumped by pg_dump unless marked as configuration.
        PERFORM pg_catalog.pg_extension_config_dump('pgmig.history', '');
        PERFORM pg_catalog.pg_extension_config_dump('pgmig.install_log', '');
        -- The audit trail is kept forever: pg_dump must carry it (and where its ids are).
        PERFORM pg_catalog.pg_extension_config_dump('pgmig.audit', '');
        PERFORM pg_catalog.pg_extension_config_dump('pgmig.audit_id_seq', '');
        -- So is the record of repeatable migrations (append-only, like the history).
        PERFORM pg_catalog.pg_extension_config_dump('pgmig.repeatable', '');
        PERFORM pg_catalog.pg_extension_config_dump('pgmig.repeatable_id_seq', '');
    END IF;

    INSERT INTO pgmig.install_log (version, mode, api_schema)
    VALUES (pgmig.engine_version(), v_mode, v_schema)
    ON CONFLICT DO NOTHING;
END
$pgmig$;

-- The guard of pgmig's tables (pgmig._history_guard): before every INSERT, UPDATE, DELETE and
-- TRUNCATE statement, ENABLE ALWAYS so that session_replication_role = replica does not
-- silence it. Recreated unless it is exactly that: an older install guarded fewer
-- operations, and a disabled or redirected trigger is repaired here.
DO $pgmig$
DECLARE
    v_table text;
    v_trig  text;
BEGIN
    FOREACH v_table IN ARRAY ARRAY['history', 'audit', 'nontx_run', 'repeatable'] LOOP
        v_trig := CASE v_table WHEN 'nontx_run' THEN 'nontx_run_guard' ELSE v_table || '_append_only' END;
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_trigger AS g
                       WHERE g.tgrelid = pg_catalog.to_regclass('pgmig.' || v_table) AND g.tgname = v_trig
                         AND g.tgfoid = 'pgmig._history_guard()'::pg_catalog.regprocedure
                         AND g.tgtype = 62 AND g.tgenabled = 'A') THEN
            EXECUTE pg_catalog.format('DROP TRIGGER IF EXISTS %I ON pgmig.%I', v_trig, v_table);
            EXECUTE pg_catalog.format('CREATE TRIGGER %I BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON pgmig.%I '
                                      'FOR EACH STATEMENT EXECUTE FUNCTION pgmig._history_guard()', v_trig, v_table);
            EXECUTE pg_catalog.format('ALTER TABLE pgmig.%I ENABLE ALWAYS TRIGGER %I', v_table, v_trig);
        END IF;
    END LOOP;
END
$pgmig$;

-- PUBLIC gets nothing: routines are created executable by PUBLIC by default.
REVOKE ALL ON ALL ROUTINES IN SCHEMA pgmig FROM PUBLIC;
