-- Who holds the history lock right now. pg_locks shows the lock, pg_stat_activity the
-- session; sessions of other roles show NULL query/client_addr unless the caller has
-- pg_read_all_stats (PostgreSQL's rule, docs "The Cumulative Statistics System").
-- A prepared transaction holding the lock has no backend (pid IS NULL in pg_locks).
-- p_scope '' (the default scope): whoever holds a lock on pgmig.history that conflicts with
-- EXCLUSIVE, tenant migrators included (14_scope.sql). A tenant scope: the holder of its row
-- of pgmig.scope (named by its marker, see 14_scope.sql), and a default-scope migrator, which
-- excludes every tenant.
CREATE OR REPLACE FUNCTION pgmig._lock_holder(p_scope text)
RETURNS TABLE (pid integer, role text, application_name text, client_addr inet,
               since timestamptz, state text, query text)
LANGUAGE sql STABLE
SET search_path TO pg_catalog, pg_temp
AS $fn$
WITH holders AS (
    SELECT l.pid
    FROM pg_locks AS l
    WHERE l.locktype = 'relation'
      AND l.database = (SELECT d.oid FROM pg_database AS d WHERE d.datname = current_database())
      AND l.relation = 'pgmig.history'::regclass
      AND l.granted
      AND (l.mode IN ('ShareLock', 'ShareRowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock')
           OR (p_scope = '' AND l.mode = 'RowExclusiveLock' AND l.pid IS DISTINCT FROM pg_backend_pid()))
  UNION
    SELECT h.pid FROM pgmig._scope_holders(p_scope) AS h(pid)
)
SELECT h.pid, a.usename::text, a.application_name, a.client_addr,
       coalesce(a.xact_start, a.backend_start), a.state, a.query
FROM holders AS h
LEFT JOIN pg_stat_activity AS a ON a.pid = h.pid
ORDER BY h.pid
$fn$;

-- One line per holder, for error details.
CREATE OR REPLACE FUNCTION pgmig._lock_holder_text(p_scope text)
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
FROM pgmig._lock_holder(p_scope) AS h
$fn$;

-- The lock protocol. Every migrator takes LOCK TABLE pgmig.history IN EXCLUSIVE MODE in the
-- transaction that reads and writes the history. How it waits is decided here, once, for every
-- caller: migrate_apply (one statement), migrate_run (a procedure that commits between
-- attempts) and clients that hold the lock from outside (the non-transactional protocol in
-- 75_nontx.sql, through lock_wait below).
--
-- The one hazard: a waiter that holds a snapshot while a non-transactional migration runs. Its
-- CREATE INDEX CONCURRENTLY waits for every transaction whose snapshot predates the build, the
-- waiter waits for the lock holder, and the holder waits for its build: nobody moves until a
-- timeout. A queued LOCK TABLE holds its statement's snapshot (even the lookup of the table name
-- can register a catalog snapshot, visible as pg_stat_activity.backend_xmin). So waiters queue in
-- PostgreSQL's lock queue, which hands them the lock the moment the holder commits, only in
-- slices of at most lock_slice(), and only while no non-transactional migration runs; while one
-- runs they wait without a snapshot between attempts (outside any statement: only a client or a
-- procedure can), or, inside a single statement, give up with PM003.

-- The longest one queued attempt waits: how long a waiter that queued just before a
-- non-transactional migration started can hold up its index build, and how long the session of
-- a vanished client keeps its place in the queue. Each slice that runs out costs the waiter one
-- more attempt (~1 ms of server time). Well below deadlock_timeout (1 s by default), so these
-- waits never run the deadlock detector, which takes every partition of the shared lock table.
CREATE OR REPLACE FUNCTION pgmig._lock_slice()
RETURNS interval
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $fn$ SELECT interval '200 milliseconds' $fn$;

-- True while a non-transactional migration runs: a 'running' row in pgmig.nontx_run, or a
-- session that nontx_begin named, which it does from the moment it holds the lock, before the
-- first row is written. The session is looked up in this database's pg_stat_activity rather
-- than through pg_locks: pg_locks copies the whole shared lock table, which the holder of a
-- large batch fills with thousands of entries, and waiters look once per slice. Which runs
-- matter: those whose holder a waiter of p_scope could queue behind — every scope's for the
-- default scope (its EXCLUSIVE lock waits for every tenant's), the default scope's and its
-- own for a tenant.
CREATE OR REPLACE FUNCTION pgmig._nontx_running(p_scope text)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path TO pg_catalog, pg_temp
AS $fn$
SELECT EXISTS (SELECT FROM pgmig.nontx_run AS r WHERE r.state = 'running' AND (p_scope = '' OR r.scope IN ('', p_scope)))
    OR EXISTS (SELECT FROM pg_stat_activity AS a
               WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()
                 AND a.application_name LIKE 'pgmig: non-transactional migration %'
                 AND (p_scope = '' OR a.application_name NOT LIKE '% in scope %'
                      OR a.application_name LIKE '%' || pgmig._in_scope(p_scope)))
$fn$;

-- One attempt at the lock of scope p_scope (see 14_scope.sql): NOWAIT when p_wait is NULL,
-- else queued for at most p_wait. True when this transaction holds the lock afterwards. The
-- session's lock_timeout is put back for the rest of the transaction (the migrations' own lock
-- waits).
CREATE OR REPLACE FUNCTION pgmig._lock_attempt(p_wait interval, p_scope text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path TO pg_catalog, pg_temp
AS $fn$
DECLARE
    v_saved text := current_setting('lock_timeout');
BEGIN
    BEGIN
        IF p_scope = '' AND p_wait IS NULL THEN
            LOCK TABLE pgmig.history IN EXCLUSIVE MODE NOWAIT;
        ELSIF p_scope = '' THEN
            -- lock_timeout 0 would mean "forever": ask for at least 1 ms.
            PERFORM set_config('lock_timeout', greatest(1, ceil(extract(epoch FROM p_wait) * 1000))::bigint::text || 'ms', true);
            LOCK TABLE pgmig.history IN EXCLUSIVE MODE;
            PERFORM set_config('lock_timeout', v_saved, true);
        ELSE
            -- A tenant: the table in ROW EXCLUSIVE mode, then the scope's row (created on the
            -- first run; a racer's INSERT waits for ours, then finds the row). NOWAIT is 1 ms
            -- here: INSERT ... ON CONFLICT has no NOWAIT.
            PERFORM set_config('lock_timeout', greatest(1, ceil(extract(epoch FROM coalesce(p_wait, interval '0')) * 1000))::bigint::text || 'ms', true);
            LOCK TABLE pgmig.history IN ROW EXCLUSIVE MODE;
            PERFORM FROM pgmig.scope AS s WHERE s.name = p_scope FOR UPDATE;
            IF NOT FOUND THEN
                INSERT INTO pgmig.scope (name) VALUES (p_scope) ON CONFLICT DO NOTHING;
                PERFORM FROM pgmig.scope AS s WHERE s.name = p_scope FOR UPDATE;
            END IF;
            PERFORM pg_try_advisory_xact_lock_shared(pgmig._scope_key(p_scope));
            PERFORM set_config('lock_timeout', v_saved, true);
        END IF;
        RETURN true;
    EXCEPTION WHEN lock_not_available THEN
        -- (the subtransaction rollback already put lock_timeout back)
        RETURN false;
    END;
END
$fn$;

-- PM001 for a negative lock_timeout.
CREATE OR REPLACE FUNCTION pgmig._assert_lock_timeout(p_lock_timeout interval)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path TO pg_catalog, pg_temp
AS $fn$
BEGIN
    IF p_lock_timeout < interval '0' THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM001',
            MESSAGE = format('pgmig: lock_timeout must not be negative, got %s', p_lock_timeout);
    END IF;
END
$fn$;

-- PM003: the lock was not granted in time. p_how says how long it waited.
CREATE OR REPLACE FUNCTION pgmig._raise_lock_timeout(p_how text, p_scope text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path TO pg_catalog, pg_temp
AS $fn$
BEGIN
    RAISE EXCEPTION USING
        ERRCODE = 'PM003',
        MESSAGE = format('pgmig: another migrator holds the migration lock%s (%s)', pgmig._in_scope(p_scope), p_how),
        DETAIL = 'held by ' || coalesce(pgmig._lock_holder_text(p_scope),
                 'a session this role cannot see (grant pg_read_all_stats to see it)'),
        HINT = 'Wait for it to finish and run again: already applied migrations are skipped. migrate_status() shows who is migrating.';
END
$fn$;

-- How long a wait that started at p_since may still go on: NULL for no limit. p_lock_timeout
-- NULL means the session's lock_timeout (0 there: no limit).
CREATE OR REPLACE FUNCTION pgmig._lock_time_left(p_lock_timeout interval, p_since timestamptz)
RETURNS interval
LANGUAGE sql VOLATILE
SET search_path TO pg_catalog, pg_temp
AS $fn$
SELECT CASE WHEN t > interval '0' THEN t - (clock_timestamp() - p_since) END
FROM (SELECT coalesce(p_lock_timeout, current_setting('lock_timeout')::interval) AS t) AS x
$fn$;

-- How long the current statement may still run before the session's statement_timeout
-- cancels it (NULL: no statement_timeout). A whole CALL migrate_run is one statement.
CREATE OR REPLACE FUNCTION pgmig._statement_time_left()
RETURNS interval
LANGUAGE sql VOLATILE
SET search_path TO pg_catalog, pg_temp
AS $fn$
SELECT CASE WHEN t > interval '0' THEN t - (clock_timestamp() - statement_timestamp()) END
FROM (SELECT current_setting('statement_timeout')::interval AS t) AS x
$fn$;

-- The longest queued slice allowed now: lock_slice(), less than the time left, and ending well
-- before the statement_timeout would cancel the queued LOCK (57014, a failure instead of a
-- retry). Raises PM003 when the statement has no time left to wait in: the session's
-- statement_timeout, not the lock timeout, ends the wait then, and the error says so.
CREATE OR REPLACE FUNCTION pgmig._lock_slice_now(p_left interval, p_scope text)
RETURNS interval
LANGUAGE plpgsql VOLATILE
SET search_path TO pg_catalog, pg_temp
AS $fn$
DECLARE
    v_stmt   interval := pgmig._statement_time_left();
    -- kept for raising the error (it reads pg_locks and pg_stat_activity) before the timeout
    v_margin interval := greatest(interval '100 milliseconds', current_setting('statement_timeout')::interval / 4);
BEGIN
    IF v_stmt IS NOT NULL AND v_stmt < v_margin THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM003',
            MESSAGE = format('pgmig: another migrator holds the migration lock, and this statement reached the session''s statement_timeout (%s) waiting for it',
                             current_setting('statement_timeout')),
            DETAIL = 'held by ' || coalesce(pgmig._lock_holder_text(p_scope),
                     'a session this role cannot see (grant pg_read_all_stats to see it)'),
            HINT = 'A whole CALL migrate_run(...) is one statement: the session''s statement_timeout bounds the wait for the lock and the migrations together. '
                || 'Run migrations with a longer (or no) statement_timeout, e.g. SET statement_timeout = 0 in the migration session.';
    END IF;
    RETURN least(pgmig._lock_slice(), p_left, v_stmt - v_margin);
END
$fn$;

-- One step of the lock protocol for a caller that can end its transaction between attempts
-- (a client, or migrate_run): call it first thing in a READ COMMITTED transaction; when
-- acquired, the transaction holds the history lock; otherwise roll back, wait retry_after
-- outside any transaction, and call again in a new transaction with the waiting_since and
-- attempt it returned. p_lock_timeout: NULL = the session's lock_timeout (0 there: no limit),
-- 0 = do not wait. Raises PM003 naming the holder when the time is up.
-- p_scope: the tenant scope ('' or NULL: the default scope).
CREATE OR REPLACE FUNCTION pgmig.lock_wait(p_lock_timeout interval DEFAULT NULL,
                                           p_waiting_since timestamptz DEFAULT NULL,
                                           p_attempt integer DEFAULT 0,
                                           p_scope text DEFAULT NULL,
                                           OUT acquired boolean, OUT retry_after interval,
                                           OUT waiting_since timestamptz, OUT attempt integer)
LANGUAGE plpgsql VOLATILE
SET search_path TO pg_catalog, pg_temp
AS $fn$
DECLARE
    v_left interval;
    v_delay interval;
    v_scope text := pgmig._scope(p_scope);
BEGIN
    PERFORM pgmig._assert_lock_timeout(p_lock_timeout);
    waiting_since := coalesce(p_waiting_since, clock_timestamp());
    attempt := coalesce(p_attempt, 0) + 1;
    retry_after := interval '0';
    acquired := pgmig._lock_attempt(NULL, v_scope);
    IF acquired THEN
        RETURN;
    END IF;
    IF p_lock_timeout = interval '0' THEN
        PERFORM pgmig._raise_lock_timeout('did not wait', v_scope);
    END IF;
    v_left := pgmig._lock_time_left(p_lock_timeout, waiting_since);
    IF v_left <= interval '0' THEN
        PERFORM pgmig._raise_lock_timeout('waited ' || coalesce(p_lock_timeout::text, 'lock_timeout = ' || current_setting('lock_timeout')), v_scope);
    END IF;
    IF pgmig._nontx_running(v_scope) THEN
        -- Wait outside any statement: 5 ms doubling to 200 ms, with jitter.
        v_delay := least(pgmig._lock_slice(), interval '5 milliseconds' * power(2, least(attempt - 1, 6)));
        retry_after := least(v_delay + v_delay * random(), coalesce(v_left, v_delay * 2));
        RETURN;
    END IF;
    acquired := pgmig._lock_attempt(pgmig._lock_slice_now(v_left, v_scope), v_scope);
END
$fn$;
COMMENT ON FUNCTION pgmig.lock_wait(interval, timestamptz, integer, text)
    IS 'pgmig client protocol: one attempt at the history lock; see docs/sql-api.md, "Client protocol"';

-- Takes the history lock inside one statement (migrate_apply and the other functions),
-- waiting at most p_lock_timeout (NULL: the session's lock_timeout, 0 there: no limit; 0: do
-- not wait), in slices. Inside a statement there is no way to let go of the snapshot between
-- slices, so while a non-transactional migration runs it raises PM003 at once instead of
-- waiting (migrate_run and pgmig push wait for it without a snapshot).
CREATE OR REPLACE FUNCTION pgmig._lock_history(p_lock_timeout interval, p_scope text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path TO pg_catalog, pg_temp
AS $fn$
DECLARE
    v_since timestamptz := clock_timestamp();
    v_left  interval;
BEGIN
    PERFORM pgmig._assert_lock_timeout(p_lock_timeout);
    LOOP
        IF pgmig._lock_attempt(NULL, p_scope) THEN
            RETURN;
        END IF;
        IF p_lock_timeout = interval '0' THEN
            PERFORM pgmig._raise_lock_timeout('did not wait', p_scope);
        END IF;
        IF pgmig._nontx_running(p_scope) THEN
            RAISE EXCEPTION USING
                ERRCODE = 'PM003',
                MESSAGE = 'pgmig: another migrator is running a non-transactional migration; not waiting for it from inside a statement',
                DETAIL = 'held by ' || coalesce(pgmig._lock_holder_text(p_scope), 'a session this role cannot see')
                      || coalesce(E'\nrunning: ' || (SELECT string_agg(format('version %s (%s)%s, statement %s of %s', r.version, r.name,
                                                                     pgmig._in_scope(r.scope), r.statements_done + 1, r.statements), '; ')
                                             FROM pgmig.nontx_run AS r WHERE r.state = 'running'), ''),
                HINT = 'Waiting inside a statement would hold a snapshot that its CREATE INDEX CONCURRENTLY must wait for. '
                    || 'Retry when it has finished, or use CALL migrate_run(...) or pgmig push, which wait for it without a snapshot.';
        END IF;
        v_left := pgmig._lock_time_left(p_lock_timeout, v_since);
        IF v_left <= interval '0' THEN
            PERFORM pgmig._raise_lock_timeout('waited ' || coalesce(p_lock_timeout::text, 'lock_timeout = ' || current_setting('lock_timeout')), p_scope);
        END IF;
        IF pgmig._lock_attempt(pgmig._lock_slice_now(v_left, p_scope), p_scope) THEN
            RETURN;
        END IF;
    END LOOP;
END
$fn$;
