-- Replays the grants remembered by 01_upgrade.sql: a role that could execute a pgmig routine
-- before this script ran can execute the routine of the same name (in the same schema, or an
-- API function of the same name in the other API location) afterwards, even when the script
-- had to drop and re-create it. A role that could execute every routine in schema pgmig (the
-- README's GRANT ... ON ALL FUNCTIONS IN SCHEMA pgmig) can also execute the routines this
-- version adds there, and a role that could run migrate_apply can run the API routines this
-- install adds beside it (0.2.0: migrate_run, the same job in one statement, migrate_rehearse,
-- the same job rolled back, the staged releases, migrate_scopes...), except migrate_adopt,
-- which goes to whoever could run migrate_baseline (a baseline taken from another tool's
-- history, which `pgmig baseline --from-tern` now calls); a routine that existed before keeps
-- exactly its own grants, so that roles kept apart on purpose (docs/admin-tooling.md) stay
-- apart. Nothing is ever granted to PUBLIC.
DO $pgmig$
DECLARE
    v_snapshot jsonb := coalesce(nullif(pg_catalog.current_setting('pgmig.install_grants', true), ''), '[]')::jsonb;
    v_existed  jsonb := coalesce(nullif(pg_catalog.current_setting('pgmig.install_routines', true), ''), '[]')::jsonb;
    r          record;
BEGIN
    FOR r IN
        WITH granted AS (
            SELECT g->>'schema' AS schema_name, g->>'name' AS name, g->>'grantee' AS grantee
            FROM pg_catalog.jsonb_array_elements(v_snapshot) AS g
        ), all_of_pgmig AS (
            -- grantees that held EXECUTE on every pgmig routine that existed before
            SELECT g.grantee
            FROM granted AS g WHERE g.schema_name = 'pgmig'
            GROUP BY g.grantee
            HAVING count(DISTINCT g.name) = (SELECT count(DISTINCT x->>'name')
                                             FROM pg_catalog.jsonb_array_elements(v_snapshot) AS x
                                             WHERE x->>'schema' = 'pgmig')
        )
        SELECT DISTINCT p.oid::pg_catalog.regprocedure AS sig, g.grantee
        FROM pg_catalog.pg_proc AS p
        JOIN pg_catalog.pg_namespace AS n ON n.oid = p.pronamespace
        LEFT JOIN LATERAL (SELECT CASE WHEN p.proname = 'migrate_adopt' THEN 'migrate_baseline' ELSE 'migrate_apply' END AS as_name) AS same
          ON p.proname LIKE 'migrate\_%'
         AND NOT v_existed @> pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object('schema', n.nspname, 'name', p.proname))
        JOIN granted AS g
          ON g.name IN (p.proname, same.as_name) AND (g.schema_name = n.nspname OR p.proname LIKE 'migrate\_%')
        WHERE (n.nspname = 'pgmig' OR p.proname LIKE 'migrate\_%')
          AND p.proowner = (SELECT s.nspowner FROM pg_catalog.pg_namespace AS s WHERE s.nspname = 'pgmig')
        UNION
        SELECT p.oid::pg_catalog.regprocedure, a.grantee
        FROM pg_catalog.pg_proc AS p
        CROSS JOIN all_of_pgmig AS a
        WHERE p.pronamespace = 'pgmig'::pg_catalog.regnamespace
    LOOP
        -- The role may have been dropped since (regrole printed it as a number then).
        CONTINUE WHEN pg_catalog.to_regrole(r.grantee) IS NULL;
        EXECUTE pg_catalog.format('GRANT EXECUTE ON ROUTINE %s TO %s', r.sig, r.grantee);
    END LOOP;
END
$pgmig$;

-- Say so when other roles have created routines named like the API (pgmig.api_shadows()).
DO $pgmig$
DECLARE
    v_list text;
BEGIN
    SELECT string_agg(format('%s (owner %s)', s.routine, s.owner), ', ') INTO v_list FROM pgmig.api_shadows() AS s;
    IF v_list IS NOT NULL THEN
        RAISE WARNING USING
            ERRCODE = 'PM016',
            MESSAGE = 'pgmig: routines named like the pgmig API that pgmig did not create: ' || v_list,
            HINT = 'An unqualified call such as select * from migrate_apply(...) may run one of them with the caller''s rights. '
                || 'Call pgmig.migrate_apply(...) (schema-qualified), and drop them or find out who created them.';
    END IF;
END
$pgmig$;
