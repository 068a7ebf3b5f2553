-- migrate_rehearse (docs/sql-api.md, "migrate_rehearse"): run the pending migrations for real,
-- exactly as migrate_run would (the same plan, _execute_plan, under the history lock), measure
-- what each one does — the relations it locks and in which mode, the tables it rewrites and
-- their size, the WAL it writes, how long it takes — and roll everything back. The rollback is a
-- raise caught inside the function (PM019), so it works from psql and needs nothing from the
-- caller; nothing remains but the report.
--
-- Guard rails, so that a rehearsal on a busy production database cannot become the outage it is
-- meant to prevent: every migration runs under a DDL lock timeout (default 1 second: a blocked
-- migration gives up with PM017 naming the blocker instead of queueing every reader behind it),
-- and the calling statement must carry a statement_timeout (default at most 1 minute; PM018
-- refuses otherwise): a function cannot bound its own statement, only the session's
-- statement_timeout, armed when the statement starts, can.

-- Relations a rehearsal reports on: the user's, not the catalogs, pgmig's own, TOAST or
-- temporary ones.
CREATE OR REPLACE FUNCTION pgmig._rehearse_visible(p_schema name)
RETURNS boolean
LANGUAGE sql IMMUTABLE
SET search_path TO pg_catalog, pg_temp
AS $fn$
SELECT p_schema NOT IN ('pg_catalog', 'information_schema', 'pgmig')
       AND p_schema NOT LIKE 'pg\_toast%' AND p_schema NOT LIKE 'pg\_temp\_%'
$fn$;

-- The state a migration's measure compares with, taken right before it runs: the WAL insert
-- position, the relation locks this transaction holds, and every relation's storage (relfilenode),
-- name and kind. A rewrite shows as a new relfilenode; its name is kept for relations the
-- migration drops.
CREATE OR REPLACE FUNCTION pgmig._rehearse_probe()
RETURNS jsonb
LANGUAGE sql VOLATILE
SET search_path TO pg_catalog, pg_temp
AS $fn$
SELECT jsonb_build_object(
    'lsn', pg_current_wal_insert_lsn()::text,
    'locks', (SELECT coalesce(jsonb_agg(l.relation::text || ' ' || l.mode), '[]'::jsonb)
              FROM pg_locks AS l
              WHERE l.pid = pg_backend_pid() AND l.locktype = 'relation'
                AND l.database = (SELECT d.oid FROM pg_database AS d WHERE d.datname = current_database())),
    'relations', (SELECT coalesce(jsonb_object_agg(c.oid::text, jsonb_build_array(c.relfilenode, format('%I.%I', n.nspname, c.relname),
                                                                                  c.relkind::text)), '{}'::jsonb)
                  FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
                  WHERE pgmig._rehearse_visible(n.nspname)))
$fn$;

-- What the migration that ran since p_probe did: {"wal_bytes", "relations": [{"relation",
-- "kind", "lock_mode", "new_modes", "created", "dropped", "rewritten", "size_bytes"}, ...]}, one
-- entry per relation it locked or rewrote: "new_modes" are the lock modes it added (strongest
-- first), "lock_mode" the strongest mode the transaction holds on the relation once it ran — which is what other
-- sessions faced while it ran, also when an earlier migration of the batch took it (the batch
-- is one transaction, so the rehearsal's is too) — and "size_bytes" the size of a rewritten
-- relation's new storage. The WAL is the server's insert position before and after: other
-- sessions' WAL written meanwhile counts too.
CREATE OR REPLACE FUNCTION pgmig._rehearse_measure(p_probe jsonb)
RETURNS jsonb
LANGUAGE sql VOLATILE
SET search_path TO pg_catalog, pg_temp
AS $fn$
WITH before AS (
    SELECT r.key::oid AS oid, (r.value->>0)::oid AS filenode, r.value->>1 AS name, r.value->>2 AS kind
    FROM jsonb_each(p_probe->'relations') AS r
), held AS (
    SELECT l.relation AS oid, l.mode,
           array_position(ARRAY['AccessShareLock', 'RowShareLock', 'RowExclusiveLock', 'ShareUpdateExclusiveLock', 'ShareLock',
                                'ShareRowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock'], l.mode) AS strength,
           NOT (p_probe->'locks') ? (l.relation::text || ' ' || l.mode) AS added
    FROM pg_locks AS l
    WHERE l.pid = pg_backend_pid() AND l.locktype = 'relation' AND l.granted
      AND l.database = (SELECT d.oid FROM pg_database AS d WHERE d.datname = current_database())
), new_locks AS (
    SELECT h.oid, h.mode, h.strength FROM held AS h WHERE h.added
), touched AS (
    SELECT n.oid FROM new_locks AS n
  UNION
    SELECT b.oid FROM before AS b JOIN pg_class AS c ON c.oid = b.oid
    WHERE b.filenode <> 0 AND c.relfilenode <> b.filenode
), described AS (
    SELECT t.oid,
           coalesce(format('%I.%I', n.nspname, c.relname), b.name) AS name,
           coalesce(c.relkind::text, b.kind) AS kind,
           b.oid IS NULL AS created,
           c.oid IS NULL AS dropped,
           coalesce(b.filenode <> 0 AND c.relfilenode <> b.filenode, false) AS rewritten,
           (SELECT array_agg(k.mode ORDER BY k.strength DESC) FROM new_locks AS k WHERE k.oid = t.oid) AS modes,
           (SELECT h.mode FROM held AS h WHERE h.oid = t.oid ORDER BY h.strength DESC LIMIT 1) AS lock
    FROM touched AS t
    LEFT JOIN pg_class AS c ON c.oid = t.oid
    LEFT JOIN pg_namespace AS n ON n.oid = c.relnamespace
    LEFT JOIN before AS b ON b.oid = t.oid
    -- a relation both created and dropped by the migration (a scratch table) is not reported
    WHERE (b.oid IS NOT NULL OR (c.oid IS NOT NULL AND pgmig._rehearse_visible(n.nspname)))
)
SELECT jsonb_build_object(
    'wal_bytes', pg_wal_lsn_diff(pg_current_wal_insert_lsn(), (p_probe->>'lsn')::pg_lsn)::bigint,
    'relations', coalesce(jsonb_agg(jsonb_strip_nulls(jsonb_build_object(
        'relation', d.name,
        'kind', CASE d.kind WHEN 'r' THEN 'table' WHEN 'p' THEN 'partitioned table' WHEN 'i' THEN 'index'
                            WHEN 'I' THEN 'partitioned index' WHEN 'S' THEN 'sequence' WHEN 'v' THEN 'view'
                            WHEN 'm' THEN 'materialized view' WHEN 'f' THEN 'foreign table' WHEN 'c' THEN 'composite type'
                            ELSE d.kind END,
        'lock_mode', d.lock, 'new_modes', coalesce(to_jsonb(d.modes), '[]'::jsonb),
        'created', d.created, 'dropped', d.dropped, 'rewritten', d.rewritten,
        'size_bytes', CASE WHEN d.rewritten AND NOT d.dropped THEN pg_table_size(d.oid) END))
        ORDER BY d.name), '[]'::jsonb))
FROM described AS d
$fn$;

-- The engine behind migrate_rehearse: see the top of this file and docs/sql-api.md.
CREATE OR REPLACE FUNCTION pgmig._rehearse(
    p_batch              jsonb,
    p_target_version     bigint,
    p_lock_timeout       interval,
    p_allow_out_of_order boolean,
    p_allow_missing      boolean,
    p_ddl_lock_timeout   interval,
    p_statement_timeout  interval,
    p_notices            text,
    p_scope              text)
RETURNS TABLE (version bigint, name text, outcome text, duration interval, wal_bytes bigint, relations jsonb, note text)
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
AS $fn$
#variable_conflict use_column
DECLARE
    -- Captured before anything else, with schema-qualified calls only (see _apply).
    v_caller_path text := pg_catalog.current_setting('search_path');
    v_caller_role text := pg_catalog.current_setting('role');
    v_app         text := pg_catalog.current_setting('application_name');
    v_start       timestamptz := pg_catalog.clock_timestamp();
    v_limit       interval := coalesce(p_statement_timeout, interval '1 minute');
    v_session     interval;
    v_limit_text  text;         -- v_limit as a statement_timeout value
    v_ctx         pgmig.call_context;
    v_quiet       text;
    v_plan        record;
    v_run         record;
    v_durations   interval[] := '{}'::interval[];
    v_measures    jsonb[] := '{}'::jsonb[];
    v_stopped     text;         -- why the rehearsal stopped before the end: 'non_transactional' or 'commit_after'
    v_stop_at     bigint;       -- the version it stopped at (before, or after: commit_after)
    v_rows        jsonb := '[]'::jsonb;
    v_count       integer := 0;
    v_scope       text;
    v_snapshot    pgmig.session_state;
BEGIN
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    v_snapshot := pgmig._session_snapshot(v_caller_path);
    PERFORM pgmig._assert_can_migrate('migrate_rehearse');
    PERFORM pgmig._assert_options(p_target_version, NULL, NULL);
    v_scope := pgmig._scope(p_scope);
    IF v_limit < interval '0' THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM001',
            MESSAGE = format('pgmig: statement_timeout must not be negative, got %s', v_limit);
    END IF;
    -- The guard rail only the session can give: a statement_timeout, armed when this statement
    -- started, that stops a migration running (and locking) for longer than the team allows.
    v_session := current_setting('statement_timeout')::interval;
    IF v_limit > interval '0' AND (v_session = interval '0' OR v_session > v_limit) THEN
        v_limit_text := CASE WHEN extract(epoch FROM v_limit) % 60 = 0 THEN (extract(epoch FROM v_limit) / 60)::bigint::text || 'min'
                             ELSE ceil(extract(epoch FROM v_limit) * 1000)::bigint::text || 'ms' END;
        RAISE EXCEPTION USING
            ERRCODE = 'PM018',
            MESSAGE = format('pgmig: migrate_rehearse runs the migrations for real and needs a statement_timeout of at most %s to stop a long one; this session''s is %s',
                             v_limit_text, CASE WHEN v_session = interval '0' THEN 'none' ELSE current_setting('statement_timeout') END),
            HINT = format('SET statement_timeout = ''%s'' (or less) before calling it, or call it with statement_timeout => ''0'' to rehearse without that limit. '
                          '`pgmig plan --rehearse` sets it (--statement-timeout).', v_limit_text);
    END IF;
    -- Every migration under the rehearsal's DDL lock timeout, whatever its own "lock_timeout"
    -- says: a guard rail is not for the migrations to lift.
    v_ctx := pgmig._call_context(v_caller_path, v_caller_role, v_app, NULL, p_notices, 0, NULL, NULL,
                                 true, false, v_scope, p_ddl_lock_timeout);
    v_ctx.rehearse := true;
    v_ctx.session := v_snapshot;
    v_quiet := pgmig._quiet(p_notices);
    v_ctx.settings := pgmig._settings();
    PERFORM pgmig._assert_well_formed(p_batch);

    BEGIN
        PERFORM pgmig._lock_history(p_lock_timeout, v_scope);
        PERFORM pgmig._assert_no_interrupted(v_scope);
        SELECT * INTO v_plan FROM pgmig._read_plan(p_batch, p_target_version, p_allow_out_of_order, p_allow_missing, v_scope);
        IF v_plan.drift THEN
            PERFORM pgmig._assert_no_drift(p_batch, p_allow_out_of_order, p_allow_missing, 'nothing was rehearsed', v_ctx.data, v_scope);
        END IF;
        -- (Non-transactional migrations are not refused: the rehearsal stops before one.)
        PERFORM pgmig._assert_runnable(v_plan.manifest_only, NULL, v_plan.ahead, false, NULL, v_ctx.notices);
        IF v_plan.to_apply > 0 THEN
            v_ctx.commit_points := v_plan.commit_points;
            v_ctx.total := v_plan.to_apply;
            -- One transaction, as far as one can go: run_mode stops after a commit_after
            -- migration (later ones may need its changes committed), and _execute_plan stops
            -- before a non-transactional one (it cannot run inside a function).
            SELECT * INTO v_run FROM pgmig._execute_plan(v_plan.plan, 1, v_ctx, 1);
            v_durations := v_run.durations;
            v_measures := v_run.measures;
            v_count := v_run.done;
            v_stopped := v_run.stopped;
            IF v_stopped = 'non_transactional' THEN
                v_stop_at := (v_plan.plan[v_run.next_index]).version;
            ELSIF v_stopped = 'commit_after' THEN
                SELECT max(e.version) INTO v_stop_at
                  FROM unnest(v_plan.plan) WITH ORDINALITY AS e
                  JOIN unnest(v_durations) WITH ORDINALITY AS t(d, o) ON t.o = e.ordinality
                 WHERE t.d IS NOT NULL;
            END IF;
        END IF;
        SELECT coalesce(jsonb_agg(jsonb_build_object(
                   'version', e.version, 'name', e.name,
                   'outcome', CASE WHEN t.d IS NOT NULL THEN 'rehearsed'
                                   WHEN e.outcome = 'pending' THEN 'not_rehearsed' ELSE pgmig._outcome(e.version, e.outcome) END,
                   'duration', t.d, 'wal_bytes', t.m->'wal_bytes', 'relations', t.m->'relations',
                   'note', CASE
                       WHEN t.d IS NOT NULL OR e.outcome <> 'pending' THEN NULL
                       WHEN v_stopped = 'non_transactional' AND e.version = v_stop_at
                           THEN 'non-transactional: it runs statement by statement outside a transaction, which a rehearsal cannot roll back'
                       WHEN v_stopped = 'non_transactional'
                           THEN format('after non-transactional version %s, which a rehearsal cannot run', v_stop_at)
                       WHEN v_stopped = 'commit_after'
                           THEN format('after version %s (commit_after): later migrations may need its changes committed, which a rehearsal cannot do',
                                       v_stop_at)
                   END) ORDER BY e.ordinality), '[]'::jsonb)
          INTO v_rows
          FROM unnest(v_plan.plan) WITH ORDINALITY AS e
          LEFT JOIN unnest(v_durations, v_measures) WITH ORDINALITY AS t(d, m, o) ON t.o = e.ordinality;
        -- Everything above is undone here, the history lock released with it.
        RAISE EXCEPTION USING ERRCODE = 'PM019', MESSAGE = 'pgmig: rehearsal done; rolling it back';
    EXCEPTION WHEN SQLSTATE 'PM019' THEN
        -- What the rollback does not undo (prepared statements, session advisory locks...).
        PERFORM pgmig._session_restore(v_snapshot, p_failed => true);
    END;

    PERFORM pgmig._notice('PM012',
        format('pgmig: rehearsed %s migration%s in %s; everything was rolled back', v_count,
               CASE WHEN v_count = 1 THEN '' ELSE 's' END, date_trunc('milliseconds', clock_timestamp() - v_start)),
        jsonb_build_object('rehearsed', v_count, 'stopped', v_stopped), v_ctx.notices);
    RETURN QUERY
        SELECT r.version, r.name, r.outcome, r.duration, r.wal_bytes, r.relations, r.note
        FROM jsonb_to_recordset(v_rows)
             AS r(version bigint, name text, outcome text, duration interval, wal_bytes bigint, relations jsonb, note text);
    PERFORM pgmig._unquiet(v_quiet);
    PERFORM pgmig._unpin_search_path(v_snapshot);
END
$fn$;
