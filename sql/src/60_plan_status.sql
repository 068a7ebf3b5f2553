-- What migrate_apply would do with this batch, without taking the lock: validates shape and
-- drift against the committed history as of now. Cheap enough for "is anything pending?"
-- checks with a manifest (versions and checksums only); the answer may be stale by the time
-- the caller acts on it, which is fine because migrate_apply re-checks under the lock.
CREATE OR REPLACE FUNCTION pgmig._plan(
    p_batch              jsonb,
    p_target_version     bigint,
    p_allow_out_of_order boolean,
    p_allow_missing      boolean)
RETURNS TABLE (version bigint, name text, outcome text, duration interval, applied_at timestamptz)
LANGUAGE plpgsql STABLE
SET search_path TO pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
BEGIN
    PERFORM pgmig._assert_well_formed(p_batch);
    PERFORM pgmig._assert_no_drift(p_batch, p_allow_out_of_order, p_allow_missing, NULL);
    RETURN QUERY
        SELECT p.version, p.name, p.outcome, NULL::interval, p.applied_at
        FROM pgmig._plan_rows(p_batch) AS p;
END
$fn$;

-- The history plus, when a migrator holds the lock right now, one 'in_progress' row naming
-- it. Reads take ACCESS SHARE, which EXCLUSIVE does not block: status never waits for a
-- running migration.
CREATE OR REPLACE FUNCTION pgmig._status()
RETURNS TABLE (version bigint, name text, state text, applied_at timestamptz, applied_by text,
               client text, duration interval, checksum text, detail text)
LANGUAGE sql STABLE
SET search_path TO pg_catalog, pg_temp
AS $fn$
SELECT * FROM (
    SELECT h.version, h.name, h.kind, h.applied_at, h.applied_by,
           nullif(concat_ws(' ', h.client_application, host(h.client_addr), h.client_info), ''),
           h.duration, h.checksum, NULL::text
    FROM pgmig.history AS h
    ORDER BY h.version
) AS applied
UNION ALL
-- Non-transactional migrations started and not recorded: running (their holder has the lock),
-- failed, or interrupted (the client died).
SELECT r.version, r.name,
       CASE WHEN r.state = 'failed' THEN 'failed'
            WHEN EXISTS (SELECT FROM pgmig._lock_holder()) THEN 'running'
            -- The client is gone but its statement still runs (a concurrent index build
            -- goes on until it notices the closed connection, or to the end).
            WHEN EXISTS (SELECT FROM pg_stat_activity AS a WHERE a.pid = r.pid AND a.pid <> pg_backend_pid() AND a.state = 'active') THEN 'orphaned'
            ELSE 'interrupted' END,
       r.started_at, r.by_role, r.client_info, r.updated_at - r.started_at, r.checksum,
       format('%s of %s statements done%s%s', r.statements_done, r.statements,
              CASE WHEN r.current_statement IS NOT NULL THEN '; at: ' || left(r.current_statement, 200) ELSE '' END,
              CASE WHEN r.error IS NOT NULL THEN '; error: ' || r.error ELSE '' END)
FROM pgmig.nontx_run AS r
UNION ALL
SELECT NULL::bigint, NULL::text, 'in_progress', l.since, l.role,
       nullif(concat_ws(' ', l.application_name, host(l.client_addr)), ''),
       clock_timestamp() - l.since, NULL::text,
       CASE WHEN l.pid IS NULL THEN 'a prepared transaction holds the lock'
            ELSE format('pid %s (%s): %s', l.pid, coalesce(l.state, '?'), coalesce(left(l.query, 200), '?')) END
FROM pgmig._lock_holder() AS l
$fn$;

-- A digest of the applied history: lowercase hex sha256 over one line per history row in
-- version order, "<version>\t<name>\t<checksum>\n". A client that computes the same digest
-- over its migration files learns in one tiny query, without uploading anything or taking
-- the lock, that exactly its migrations are applied and nothing drifted (the common "nothing
-- to do" case at every service start). Any difference means: ask migrate_plan.
CREATE OR REPLACE FUNCTION pgmig._history_digest()
RETURNS text
LANGUAGE sql STABLE
SET search_path TO pg_catalog, pg_temp
AS $fn$
SELECT encode(sha256(convert_to(coalesce(string_agg(h.version::text || E'\t' || h.name || E'\t' || h.checksum || E'\n',
                                                    '' ORDER BY h.version), ''), 'UTF8')), 'hex')
FROM pgmig.history AS h
$fn$;
