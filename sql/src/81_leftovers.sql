-- Internal routines of an earlier version that this one no longer defines (a changed argument
-- list leaves the old one behind as an overload): every routine this script defines was just
-- created or replaced, which writes its pg_proc row in this transaction; a routine of ours in
-- schema pgmig whose row was not written here is a left-over, and goes. (The script creates its
-- routines in its top-level transaction, never inside a block with an exception handler, whose
-- subtransaction would write another xid.) Runs before 99_install.sql, whose REVOKE rewrites
-- every row; the API routines are left to _install_api, which knows their signatures.
DO $pgmig$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT p.oid::pg_catalog.regprocedure AS sig
        FROM pg_catalog.pg_proc AS p
        WHERE p.pronamespace = 'pgmig'::pg_catalog.regnamespace
          AND p.proowner = (SELECT n.nspowner FROM pg_catalog.pg_namespace AS n WHERE n.nspname = 'pgmig')
          AND p.proname NOT IN (SELECT a.name FROM pgmig._api_routines() AS a)
          AND p.xmin::text <> (pg_catalog.pg_current_xact_id()::text::bigint % 4294967296)::text
    LOOP
        EXECUTE pg_catalog.format('DROP ROUTINE %s', r.sig);
    END LOOP;
END
$pgmig$;
