-- Upgrades: an engine function whose signature or result type changes between versions cannot
-- be replaced in place (CREATE OR REPLACE refuses a new result type, and a new argument list
-- makes a second function beside the old one). Such functions are dropped and created anew,
-- which would lose the EXECUTE privileges granted on them. So the grants on every pgmig routine
-- are remembered here, before anything changes, and replayed at the end of the script
-- (99_replay_grants.sql) onto the routines of the same name, as pg_partman's upgrade scripts do.
-- Transaction-local: the script runs in one transaction.
DO $pgmig$
DECLARE
    v_snapshot jsonb;
    pgmig_installed boolean := pg_catalog.to_regnamespace('pgmig') IS NOT NULL;
BEGIN
    -- Only pgmig's own routines: those owned by the owner of schema pgmig (an API function of
    -- the same name created by someone else is not ours to grant on).
    SELECT coalesce(jsonb_agg(jsonb_build_object('schema', n.nspname, 'name', p.proname,
                                                 'grantee', a.grantee::pg_catalog.regrole::text)), '[]')
      INTO v_snapshot
      FROM pg_catalog.pg_proc AS p
      JOIN pg_catalog.pg_namespace AS n ON n.oid = p.pronamespace
      CROSS JOIN LATERAL pg_catalog.aclexplode(p.proacl) AS a
     WHERE pgmig_installed
       AND (n.nspname = 'pgmig' OR p.proname LIKE 'migrate\_%')
       AND p.proowner = (SELECT s.nspowner FROM pg_catalog.pg_namespace AS s WHERE s.nspname = 'pgmig')
       AND a.privilege_type = 'EXECUTE'
       AND a.grantee <> 0                 -- PUBLIC is never given anything
       AND a.grantee <> p.proowner;
    PERFORM pg_catalog.set_config('pgmig.install_grants', v_snapshot::text, true);
    -- And which routines exist already: a routine this install adds gets the grants of the one
    -- it stands beside (99_replay_grants.sql), a routine that existed keeps exactly its own.
    SELECT coalesce(jsonb_agg(DISTINCT jsonb_build_object('schema', n.nspname, 'name', p.proname)), '[]')
      INTO v_snapshot
      FROM pg_catalog.pg_proc AS p
      JOIN pg_catalog.pg_namespace AS n ON n.oid = p.pronamespace
     WHERE pgmig_installed
       AND (n.nspname = 'pgmig' OR p.proname LIKE 'migrate\_%')
       AND p.proowner = (SELECT s.nspowner FROM pg_catalog.pg_namespace AS s WHERE s.nspname = 'pgmig');
    PERFORM pg_catalog.set_config('pgmig.install_routines', v_snapshot::text, true);
END
$pgmig$;
