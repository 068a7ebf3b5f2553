-- Who holds the history lock right now. pg_locks shows the lock, pg_stat_activity the
-- session; sessions of other roles show NULL query/client_addr unless the caller has
-- pg_read_all_stats (PostgreSQL's rule, docs "The Cumulative Statistics System").
-- A prepared transaction holding the lock has no backend (pid IS NULL in pg_locks).
CREATE OR REPLACE FUNCTION pgmig._lock_holder()
RETURNS TABLE (pid integer, role text, application_name text, client_addr inet,
               since timestamptz, state text, query text)
LANGUAGE sql STABLE
SET search_path TO pg_catalog, pg_temp
AS $fn$
SELECT l.pid, a.usename::text, a.application_name, a.client_addr,
       coalesce(a.xact_start, a.backend_start), a.state, a.query
FROM pg_locks AS l
LEFT JOIN pg_stat_activity AS a ON a.pid = l.pid
WHERE l.locktype = 'relation'
  AND l.database = (SELECT d.oid FROM pg_database AS d WHERE d.datname = current_database())
  AND l.relation = 'pgmig.history'::regclass
  AND l.granted
  AND l.mode IN ('ShareLock', 'ShareRowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock')
ORDER BY l.pid
$fn$;

-- One line per holder, for error details.
CREATE OR REPLACE FUNCTION pgmig._lock_holder_text()
RETURNS text
LANGUAGE sql STABLE
SET search_path TO pg_catalog, pg_temp
AS $fn$
SELECT string_agg(
         CASE WHEN h.pid IS NULL THEN 'a prepared transaction (see pg_prepared_xacts)'
              ELSE format('pid %s, role %s, application_name %s, client %s, since %s (%s ago), %s: %s',
                          h.pid, coalesce(h.role, '?'), coalesce(quote_literal(h.application_name), '?'),
                          coalesce(host(h.client_addr), 'local socket or not visible'),
                          h.since, date_trunc('second', clock_timestamp() - h.since),
                          coalesce(h.state, '?'), coalesce(left(h.query, 200), '?'))
         END, E'\n')
FROM pgmig._lock_holder() AS h
$fn$;
