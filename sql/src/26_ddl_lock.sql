-- DDL lock timeouts (docs/sql-api.md, "DDL lock timeout"). A migration's ALTER TABLE that queues
-- behind a long transaction (a report, a pg_dump) makes every later reader and writer of that
-- table queue behind it in turn: PostgreSQL's lock queue is first come, first served, and an
-- ACCESS EXCLUSIVE request conflicts with everything. With ddl_lock_timeout the engine sets
-- lock_timeout for the migrations' own statements only (never for the history lock, which has its
-- own lock_timeout, nor for the bookkeeping), so a blocked migration gives up after that long,
-- rolls back (nothing applied, nobody waits any more) and says who blocked it (PM017); a client
-- can then retry the whole batch later (pgmig push --retries).
--
-- PostgreSQL's lock-timeout error names neither the relation nor the holder, and once it is
-- raised the wait is gone from pg_locks. So the engine reconstructs it: the relations the
-- migration's SQL names (resolved as the migration resolved them, with the caller's
-- search_path), with their indexes' tables, inheritance relatives and foreign-key partners, and
-- the other sessions that held or awaited a lock on one of them since before the wait began.
-- A blocker that ended between the timeout and this look is not named (the retry then goes
-- through); a relation the SQL does not name (one a called function locks) is not found.

-- A lock timeout given as JSON ("5s", "500ms", "2 minutes": PostgreSQL interval input) in
-- milliseconds, as the lock_timeout setting takes it; NULL when it is not a string holding an
-- interval from 0 to lock_timeout's maximum (2147483647 ms). 0 means no timeout.
CREATE OR REPLACE FUNCTION pgmig._lock_timeout_ms(p_value jsonb)
RETURNS integer
LANGUAGE plpgsql STABLE
SET search_path TO pg_catalog, pg_temp
AS $fn$
DECLARE
    v_ms numeric;
BEGIN
    IF jsonb_typeof(p_value) IS DISTINCT FROM 'string' THEN
        RETURN NULL;
    END IF;
    BEGIN
        v_ms := ceil(extract(epoch FROM (p_value #>> '{}')::interval) * 1000);
    EXCEPTION WHEN data_exception THEN
        -- not an interval (22007), or out of its range (22008, 22015): the caller reports it
        RETURN NULL;
    END;
    IF v_ms < 0 OR v_ms > 2147483647 THEN
        RETURN NULL;
    END IF;
    RETURN v_ms::integer;
END
$fn$;

-- ddl_lock_timeout as the lock_timeout setting takes it (milliseconds; NULL for NULL), or
-- PM001 for a value lock_timeout cannot hold.
CREATE OR REPLACE FUNCTION pgmig._ddl_lock_ms(p_ddl_lock_timeout interval)
RETURNS integer
LANGUAGE plpgsql IMMUTABLE
SET search_path TO pg_catalog, pg_temp
AS $fn$
DECLARE
    v_ms numeric := ceil(extract(epoch FROM p_ddl_lock_timeout) * 1000);
BEGIN
    IF v_ms < 0 OR v_ms > 2147483647 THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM001',
            MESSAGE = format('pgmig: ddl_lock_timeout must be from 0 to 2147483647 milliseconds (lock_timeout''s range), got %s', p_ddl_lock_timeout);
    END IF;
    RETURN v_ms::integer;
END
$fn$;

-- The per-migration lock timeouts of a (well-formed) batch, {"<version>": <milliseconds>},
-- from its entries' "lock_timeout" keys; NULL when no entry has one.
CREATE OR REPLACE FUNCTION pgmig._batch_lock_timeouts(p_batch jsonb)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path TO pg_catalog, pg_temp
AS $fn$
SELECT jsonb_object_agg((e->>'version')::bigint::text, pgmig._lock_timeout_ms(e->'lock_timeout'))
FROM jsonb_array_elements(p_batch) AS e
WHERE jsonb_typeof(e->'lock_timeout') = 'string'
$fn$;

-- Who kept a statement of p_sql from getting a lock for p_waited (its lock timeout), as far as
-- can be told after the wait is over (see the top of this file): {"relation": the relation
-- named first, "blockers": [{pid, application, role, client_addr, state, since, state_since,
-- seconds, query, relation, modes, granted, prepared}, ...]}, blockers oldest first, at most 20.
-- "relation" is null when no session holds or awaits a lock on a relation the SQL names.
-- p_caller_path is the search_path the SQL ran with: names resolve as they did for it. Seeing
-- other roles' sessions (state, query) needs pg_read_all_stats, as for pg_stat_activity.
CREATE OR REPLACE FUNCTION pgmig._lock_blockers(p_sql text, p_caller_path text, p_waited interval)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path TO pg_catalog, pg_temp
AS $fn$
DECLARE
    -- Held since before this moment: the wait began when the timeout started counting. A
    -- session that got its lock later was queued behind the migration, not in its way.
    v_before  timestamptz := clock_timestamp() - p_waited;
    v_names   text[];
    v_name    text;
    v_rel     regclass;
    v_oids    oid[] := '{}'::oid[];
    v_shown   text[] := '{}'::text[];
    v_result  jsonb;
BEGIN
    -- Every identifier or schema-qualified name in the text (quoted or not). Words that are not
    -- relations resolve to nothing; a relation named only in a comment or a string is at worst
    -- one more place to look.
    SELECT array_agg(DISTINCT regexp_replace(m[1], '\s*\.\s*', '.', 'g'))
      INTO v_names
      FROM (SELECT m FROM regexp_matches(p_sql,
                '((?:"(?:[^"]|"")+"|[[:alpha:]_][[:alnum:]_$]*)(?:\s*\.\s*(?:"(?:[^"]|"")+"|[[:alpha:]_][[:alnum:]_$]*))?)', 'g') AS m
            LIMIT 20000) AS x;

    -- Resolved with the search_path the migration had. Between the two set_config calls only
    -- pg_catalog-qualified calls and casts: the caller's path may lead to hostile operators.
    PERFORM pg_catalog.set_config('search_path', p_caller_path, true);
    FOREACH v_name IN ARRAY coalesce(v_names, '{}'::text[]) LOOP
        v_rel := pg_catalog.to_regclass(v_name);
        IF v_rel IS NOT NULL THEN
            v_oids := pg_catalog.array_append(v_oids, v_rel::oid);
            v_shown := pg_catalog.array_append(v_shown, v_rel::text);
        END IF;
    END LOOP;
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);

    -- pg_stat_activity is read once per transaction and kept (the backend status snapshot): the
    -- engine read it before the migration ran (the lock wait looks at it), so sessions would
    -- show as they were then — a reader that got its lock a moment ago still "idle", its
    -- transaction not started. Look afresh.
    PERFORM pg_stat_clear_snapshot();

    WITH RECURSIVE named AS (
        SELECT DISTINCT ON (n.oid) n.oid, n.shown, n.ord
        FROM unnest(v_oids, v_shown) WITH ORDINALITY AS n(oid, shown, ord)
        ORDER BY n.oid, n.ord
    ), related AS (
        -- what the statements on the named relations also lock: an index's table, a partition's
        -- or child's parents and a parent's partitions, both ends of their foreign keys
        SELECT n.oid, n.shown, n.ord, 0 AS depth FROM named AS n
      UNION
        SELECT r.rel, NULL::text, 1000000 + x.ord, x.depth + 1
        FROM related AS x
        CROSS JOIN LATERAL (
            SELECT i.indrelid FROM pg_index AS i WHERE i.indexrelid = x.oid
            UNION SELECT h.inhparent FROM pg_inherits AS h WHERE h.inhrelid = x.oid
            UNION SELECT h.inhrelid FROM pg_inherits AS h WHERE h.inhparent = x.oid
            UNION SELECT c.confrelid FROM pg_constraint AS c WHERE c.conrelid = x.oid AND c.contype = 'f'
            UNION SELECT c.conrelid FROM pg_constraint AS c WHERE c.confrelid = x.oid AND c.contype = 'f'
        ) AS r(rel)
        WHERE x.depth < 3
    ), candidates AS (
        SELECT DISTINCT ON (r.oid) r.oid, coalesce(r.shown, r.oid::regclass::text) AS shown, r.ord
        FROM related AS r
        ORDER BY r.oid, r.ord
    ), locks AS (
        SELECT c.shown, c.ord, l.pid, l.granted, l.mode, l.virtualtransaction,
               a.application_name, a.usename, a.client_addr, a.state, a.state_change, a.query,
               a.xact_start AS since
        FROM pg_locks AS l
        JOIN candidates AS c ON c.oid = l.relation
        LEFT JOIN pg_stat_activity AS a ON a.pid = l.pid
        WHERE l.locktype = 'relation'
          AND l.database = (SELECT d.oid FROM pg_database AS d WHERE d.datname = current_database())
          AND l.pid IS DISTINCT FROM pg_backend_pid()
          -- pg_locks and pg_stat_activity are two looks, a moment apart: a session whose lock
          -- shows but whose transaction is over (idle now, or in a newer transaction) was a
          -- reader that went through once the migration let go, not a blocker.
          AND (l.pid IS NULL                                              -- a prepared transaction
               OR (a.pid IS NOT NULL AND a.state IS NULL AND a.xact_start IS NULL)  -- details hidden from this role
               OR CASE WHEN l.granted THEN a.xact_start <= v_before
                       -- queued ahead of the migration (waitstart: PostgreSQL 14+)
                       ELSE a.state <> 'idle' AND coalesce((to_jsonb(l)->>'waitstart')::timestamptz, a.query_start) <= v_before END)
    ), blockers AS (
        SELECT k.shown, min(k.ord) AS ord, k.pid, bool_and(k.granted) AS granted,
               array_agg(DISTINCT k.mode) AS modes, min(k.virtualtransaction) AS vxid,
               min(k.application_name) AS application_name, min(k.usename::text) AS usename,
               min(host(k.client_addr)) AS client_addr, min(k.state) AS state,
               min(k.state_change) AS state_change, min(k.query) AS query, min(k.since) AS since
        FROM locks AS k
        GROUP BY k.shown, k.pid
        ORDER BY min(k.since) NULLS LAST, min(k.ord), k.pid
        LIMIT 20
    )
    SELECT jsonb_build_object(
               'relation', (SELECT b.shown FROM blockers AS b ORDER BY b.since NULLS LAST, b.ord, b.pid LIMIT 1),
               'blockers', coalesce(jsonb_agg(jsonb_strip_nulls(jsonb_build_object(
                   'pid', b.pid, 'relation', b.shown, 'modes', to_jsonb(b.modes), 'granted', b.granted,
                   'prepared', b.pid IS NULL,
                   'application', b.application_name, 'role', b.usename, 'client_addr', b.client_addr,
                   'state', b.state, 'since', b.since, 'state_since', b.state_change,
                   'seconds', round(extract(epoch FROM clock_timestamp() - b.since)::numeric, 1),
                   -- (PostgreSQL's placeholder for a session this role may not look into)
                   'query', left(nullif(b.query, '<insufficient privilege>'), 1000),
                   'transaction', CASE WHEN b.pid IS NULL THEN b.vxid END))
                   ORDER BY b.since NULLS LAST, b.ord, b.pid), '[]'::jsonb))
      INTO v_result
      FROM blockers AS b;
    RETURN v_result;
END
$fn$;

-- A duration for people: "500ms", "40s", "2m05s", "1h02m".
CREATE OR REPLACE FUNCTION pgmig._duration_text(p_seconds numeric)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path TO pg_catalog, pg_temp
AS $fn$
SELECT CASE WHEN p_seconds IS NULL THEN '?'
            WHEN p_seconds < 1 THEN round(p_seconds * 1000)::text || 'ms'
            WHEN p_seconds < 60 THEN trim(trailing '.' FROM trim(trailing '0' FROM round(p_seconds, 1)::text)) || 's'
            WHEN p_seconds < 3600 THEN format('%sm%ss', floor(p_seconds / 60), lpad(floor(p_seconds % 60)::text, 2, '0'))
            ELSE format('%sh%sm', floor(p_seconds / 3600), lpad(floor(p_seconds % 3600 / 60)::text, 2, '0')) END
$fn$;

-- One blocker of a _lock_blockers report in a few words: "pid 4242 (reporting, idle in
-- transaction 40s)", the age its transaction's.
CREATE OR REPLACE FUNCTION pgmig._blocker_text(p_blocker jsonb)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path TO pg_catalog, pg_temp
AS $fn$
SELECT CASE WHEN (p_blocker->>'prepared')::boolean
            THEN format('a prepared transaction (%s; see pg_prepared_xacts)', coalesce(p_blocker->>'transaction', '?'))
            ELSE format('pid %s (%s%s %s)', p_blocker->>'pid',
                        coalesce(nullif(p_blocker->>'application', '') || ', ', ''),
                        coalesce(p_blocker->>'state', 'state not visible'),
                        pgmig._duration_text((p_blocker->>'seconds')::numeric))
       END
$fn$;

-- PM017: migration p_version's statement waited p_lock_ms (its DDL lock timeout) for a lock and
-- was cancelled. Raised after the subtransaction of the failed work is rolled back: nothing of
-- the transaction is applied and nothing waits any more. With p_data (notices 'json'/'none')
-- the DETAIL is JSON for programs: {version, name, lock_timeout_ms, relation, blockers,
-- transaction, committed, statement}; otherwise it lists the blockers for people.
CREATE OR REPLACE FUNCTION pgmig._raise_blocked(p_version bigint, p_name text, p_sql text, p_lock_ms integer,
                                                p_caller_path text, p_data boolean, p_transaction integer,
                                                p_committed bigint, p_statement integer DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path TO pg_catalog, pg_temp
AS $fn$
DECLARE
    v_report  jsonb;
    v_first   jsonb;
    v_others  integer;
    v_waited  interval := p_lock_ms * interval '1 millisecond';
    v_outcome text;
    v_detail  text;
BEGIN
    BEGIN
        v_report := pgmig._lock_blockers(p_sql, p_caller_path, v_waited);
    EXCEPTION WHEN OTHERS THEN
        -- The report is a courtesy: whatever keeps it from being made must not hide the timeout.
        v_report := jsonb_build_object('relation', NULL, 'blockers', '[]'::jsonb);
    END;
    v_first := v_report->'blockers'->0;
    v_others := jsonb_array_length(v_report->'blockers') - 1;
    IF p_data THEN
        v_detail := (jsonb_strip_nulls(jsonb_build_object(
                         'version', p_version, 'name', p_name, 'lock_timeout_ms', p_lock_ms,
                         'relation', v_report->'relation', 'transaction', p_transaction,
                         'committed', p_committed, 'statement', p_statement))
                     || jsonb_build_object('blockers', v_report->'blockers'))::text;
    ELSE
        SELECT string_agg(format('blocked on %s by %s, holding %s since %s: %s', b->>'relation', pgmig._blocker_text(b),
                                 (SELECT string_agg(m, ', ') FROM jsonb_array_elements_text(b->'modes') AS m),
                                 coalesce(b->>'since', '?'), coalesce(b->>'query', '?')), E'\n')
          INTO v_detail
          FROM jsonb_array_elements(v_report->'blockers') AS b;
        v_detail := coalesce(v_detail, 'No session holds a lock on a relation the migration names any more (the blocker ended, '
                                       || 'or the relation is locked by something the migration calls).');
    END IF;
    v_outcome := CASE WHEN p_committed > 0
                      THEN format('nothing of its transaction was applied (%s migration%s committed earlier by this call stay applied)',
                                  p_committed, CASE WHEN p_committed > 1 THEN 's' ELSE '' END)
                      ELSE 'nothing was applied' END;
    RAISE EXCEPTION USING
        ERRCODE = 'PM017',
        MESSAGE = format('pgmig: %s waited %s (ddl_lock_timeout) for a lock on %s and gave up; %s',
                         pgmig._what(p_version, p_name), pgmig._duration_text(p_lock_ms / 1000.0),
                         CASE WHEN v_first IS NULL THEN 'a relation it needs'
                              ELSE format('%s, held by %s%s', v_report->>'relation', pgmig._blocker_text(v_first),
                                          CASE WHEN v_others > 0 THEN format(' and %s other session%s', v_others,
                                                                            CASE WHEN v_others > 1 THEN 's' ELSE '' END)
                                               ELSE '' END) END,
                         v_outcome),
        DETAIL = v_detail,
        HINT = 'Nothing waits any more: the migration''s transaction was rolled back. Run it again once the blocking sessions end '
            || '(pgmig push --retries N does that by itself, with backoff), or end them (pg_terminate_backend(pid)). '
            || 'A migration that must wait longer can say so: the line ---- pgmig: lock-timeout 30s ---- (batch key "lock_timeout").';
END
$fn$;

-- Client protocol (non-transactional migrations, docs/sql-api.md): the lock_timeout for each of
-- a non-transactional migration's statements under a DDL lock timeout: p_lock_timeout, except
-- NULL (leave the session's) for a statement that builds or drops something CONCURRENTLY.
-- Those take locks that block no reader or writer, then wait by design for every older
-- transaction to end; a timeout there would only cancel the build half-way (leaving an INVALID
-- index behind) without sparing anyone a wait.
CREATE OR REPLACE FUNCTION pgmig.nontx_lock_timeouts(p_statements text[], p_lock_timeout interval)
RETURNS interval[]
LANGUAGE sql STABLE
SET search_path TO pg_catalog, pg_temp
AS $fn$
SELECT coalesce(array_agg(CASE WHEN s ~* '\mconcurrently\M' THEN NULL ELSE p_lock_timeout END ORDER BY o), '{}')
FROM unnest(p_statements) WITH ORDINALITY AS x(s, o)
$fn$;
COMMENT ON FUNCTION pgmig.nontx_lock_timeouts(text[], interval)
    IS 'pgmig client protocol: the lock_timeout for each statement of a non-transactional migration under a DDL lock timeout';

-- Client protocol: the blockers report of _lock_blockers for a statement the client ran itself
-- (a non-transactional migration's) that failed after waiting p_waited (its lock timeout), with
-- names resolved on the calling session's search_path.
CREATE OR REPLACE FUNCTION pgmig.lock_blockers(p_sql text, p_waited interval)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
AS $fn$
DECLARE
    -- captured before anything else, schema-qualified (see _apply)
    v_path text := pg_catalog.current_setting('search_path');
BEGIN
    RETURN pgmig._lock_blockers(p_sql, v_path, p_waited);
END
$fn$;
COMMENT ON FUNCTION pgmig.lock_blockers(text, interval)
    IS 'pgmig client protocol: who held the locks a statement of the client''s timed out waiting for';
