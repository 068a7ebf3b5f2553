-- Drops routine p_signature when it exists with a result other than p_result (as
-- pg_get_function_result prints it), or, when p_arguments is given, with other arguments than
-- those (as pg_get_function_arguments prints them: OUT parameters, names and defaults), so that
-- the CREATE that follows can define it anew. Its grants are replayed by 99_replay_grants.sql.
CREATE OR REPLACE FUNCTION pgmig._drop_if_changed(p_signature text, p_result text, p_arguments text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path TO pg_catalog, pg_temp
AS $fn$
DECLARE
    v_oid regprocedure := to_regprocedure(p_signature);
BEGIN
    IF v_oid IS NOT NULL AND (pg_get_function_result(v_oid) IS DISTINCT FROM p_result
                              OR pg_get_function_arguments(v_oid) IS DISTINCT FROM coalesce(p_arguments, pg_get_function_arguments(v_oid))) THEN
        EXECUTE format('DROP ROUTINE %s', v_oid);
    END IF;
END
$fn$;
