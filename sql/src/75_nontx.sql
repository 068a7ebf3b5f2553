-- Non-transactional migrations (CREATE INDEX CONCURRENTLY, VACUUM, ALTER SYSTEM, ...).
-- PostgreSQL refuses these inside a transaction or a function, so the client runs them, one
-- statement at a time at top level, on a second connection ("executor"). The first
-- connection ("holder") keeps the history lock for the whole time in an open transaction
-- that holds no snapshot, so it excludes every other migrator without blocking the
-- concurrent index build (CREATE INDEX CONCURRENTLY waits only for transactions that hold a
-- snapshot or a lock on its table). Protocol, as `pgmig push` runs it (docs/sql-api.md):
--
--   holder:   BEGIN; LOCK TABLE pgmig.history IN EXCLUSIVE MODE;   -- waits without a snapshot
--             SELECT pgmig.nontx_begin(batch, version);
--   executor: for each statement i of n:
--               SELECT pgmig.nontx_progress(version, ..., done => i-1, current => stmt_i);
--               <stmt_i>                        -- at top level, autocommit
--             SELECT pgmig.nontx_progress(version, ..., done => n, current => NULL);
--   holder:   SELECT pgmig.nontx_finish(batch, version, duration); COMMIT;
--
-- If the client dies or a statement fails, the holder's transaction ends (the lock with it)
-- and pgmig.nontx_run keeps the truth: which statements completed. Every migrator then
-- refuses to continue until an operator resolves it (migrate_resolve).

-- Raises PM009 when a non-transactional migration was interrupted. Called under the lock:
-- a run row seen then cannot belong to a live run (its holder would have the lock).
CREATE OR REPLACE FUNCTION pgmig._assert_no_interrupted()
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path TO pg_catalog, pg_temp
AS $fn$
DECLARE
    r         record;
    v_invalid text;
    v_orphan  integer;
BEGIN
    SELECT * INTO r FROM pgmig.nontx_run ORDER BY version LIMIT 1;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    SELECT string_agg(i.indexrelid::regclass::text, ', ' ORDER BY i.indexrelid::regclass::text) INTO v_invalid
      FROM pg_index AS i WHERE NOT i.indisvalid;
    SELECT a.pid INTO v_orphan FROM pg_stat_activity AS a WHERE a.pid = r.pid AND a.pid <> pg_backend_pid() AND a.state = 'active';
    RAISE EXCEPTION USING
        ERRCODE = 'PM009',
        MESSAGE = format('pgmig: non-transactional migration %s (%s) was %s after %s of %s statements; nothing was applied',
                         r.version, r.name, CASE r.state WHEN 'failed' THEN 'stopped by an error' ELSE 'interrupted' END,
                         r.statements_done, r.statements),
        DETAIL = concat_ws(E'\n',
            CASE WHEN r.statements_done = 0 THEN 'No statement completed.'
                 ELSE format('Statements 1 to %s ran outside a transaction and stay applied.', r.statements_done) END,
            CASE WHEN r.current_statement IS NOT NULL
                 THEN format('It stopped in statement %s: %s', r.statements_done + 1, left(r.current_statement, 500)) END,
            CASE WHEN r.error IS NOT NULL THEN 'Error: ' || r.error END,
            format('Started %s by %s (pid %s).', r.started_at, r.by_role, r.pid),
            CASE WHEN v_orphan IS NOT NULL
                 THEN format('Its statement is still running in pid %s (the client is gone): wait for it, or pg_cancel_backend(%s), before resolving.', v_orphan, v_orphan) END,
            CASE WHEN v_invalid IS NOT NULL
                 THEN format('Invalid indexes (left by a failed concurrent build, to be dropped or rebuilt; an index still being built concurrently is invalid until the build ends): %s.', v_invalid) END),
        HINT = format('Check what the completed statements did. Then either undo them (e.g. DROP INDEX CONCURRENTLY the invalid index) '
                      'and run: select migrate_resolve(%s, ''retry'') to run the migration again from its first statement; '
                      'or finish it by hand and run: select migrate_resolve(%s, ''applied'') to record it as applied.',
                      r.version, r.version);
END
$fn$;

-- Holder, in its open transaction: take (or confirm) the lock, validate the batch and check
-- that p_version is the next thing to do: pending, non-transactional, nothing pending below.
CREATE OR REPLACE FUNCTION pgmig.nontx_begin(p_batch jsonb, p_version bigint,
                                             p_lock_timeout interval DEFAULT NULL,
                                             p_allow_out_of_order boolean DEFAULT false,
                                             p_allow_missing boolean DEFAULT false)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path TO pg_catalog, pg_temp
AS $fn$
DECLARE
    v_versions text;
    r          record;
BEGIN
    PERFORM pgmig._assert_can_migrate('nontx_begin');
    PERFORM pgmig._assert_well_formed(p_batch);
    PERFORM pgmig._lock_history(p_lock_timeout);
    -- Tell would-be waiters, from the moment the lock is ours, that queueing behind it from
    -- inside a statement would stall the coming index build (_lock_history checks this). The
    -- progress rows come later; application_name is visible to every role at once, and
    -- is_local ends it with this transaction.
    PERFORM set_config('application_name', format('pgmig: non-transactional migration %s', p_version), true);
    -- The holder sits idle in its transaction for as long as the statements take: a
    -- database-level idle_in_transaction_session_timeout must not end it (and with it the
    -- lock) half-way. Local: ends with this transaction.
    PERFORM set_config('idle_in_transaction_session_timeout', '0', true);
    PERFORM pgmig._assert_no_interrupted();
    PERFORM pgmig._assert_no_drift(p_batch, p_allow_out_of_order, p_allow_missing, 'nothing was applied');
    SELECT * INTO r FROM pgmig._plan_rows(p_batch) AS p WHERE p.version = p_version;
    IF NOT FOUND OR r.outcome <> 'pending' OR r.transactional OR r.sql IS NULL THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM001',
            MESSAGE = format('pgmig: version %s is not a pending non-transactional migration of this batch (%s)', p_version,
                             CASE WHEN NOT FOUND THEN 'not in the batch' WHEN r.outcome <> 'pending' THEN r.outcome
                                  WHEN r.sql IS NULL THEN 'no SQL' ELSE 'it is transactional' END);
    END IF;
    SELECT string_agg(p.version::text, ', ' ORDER BY p.version) INTO v_versions
      FROM pgmig._plan_rows(p_batch) AS p WHERE p.outcome = 'pending' AND p.version < p_version;
    IF v_versions IS NOT NULL THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM001',
            MESSAGE = format('pgmig: versions %s are pending below non-transactional migration %s; apply them first', v_versions, p_version);
    END IF;
END
$fn$;

-- Executor, in autocommit, before each statement and once after the last: how far it got.
-- Committed at once, so it survives the client dying.
CREATE OR REPLACE FUNCTION pgmig.nontx_progress(p_version bigint, p_name text, p_checksum text,
                                                p_sql text, p_down_sql text,
                                                p_statements integer, p_done integer,
                                                p_current text, p_error text DEFAULT NULL,
                                                p_client_info text DEFAULT NULL)
RETURNS void
LANGUAGE sql VOLATILE
SET search_path TO pg_catalog, pg_temp
AS $fn$
INSERT INTO pgmig.nontx_run AS r (version, name, checksum, sql, down_sql, statements, statements_done,
                                  current_statement, state, error, started_at, updated_at, pid,
                                  by_role, client_info)
VALUES (p_version, p_name, p_checksum, p_sql, p_down_sql, p_statements, p_done, p_current,
        CASE WHEN p_error IS NULL THEN 'running' ELSE 'failed' END, p_error,
        clock_timestamp(), clock_timestamp(), pg_backend_pid(), current_user, p_client_info)
ON CONFLICT (version) DO UPDATE
   SET statements_done   = excluded.statements_done,
       current_statement = excluded.current_statement,
       state             = excluded.state,
       error             = excluded.error,
       updated_at        = excluded.updated_at,
       pid               = excluded.pid
$fn$;

-- Holder, after the executor reported every statement done: record the migration in the
-- history and forget the run, then the client commits (which releases the lock).
CREATE OR REPLACE FUNCTION pgmig.nontx_finish(p_batch jsonb, p_version bigint, p_duration interval,
                                              p_client_info text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path TO pg_catalog, pg_temp
AS $fn$
DECLARE
    b   record;
    run record;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_locks AS l
                   WHERE l.locktype = 'relation' AND l.relation = 'pgmig.history'::regclass
                     AND l.pid = pg_backend_pid() AND l.granted AND l.mode = 'ExclusiveLock') THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM004',
            MESSAGE = 'pgmig: nontx_finish must run in the transaction that called nontx_begin (it does not hold the history lock)';
    END IF;
    SELECT * INTO b FROM pgmig._batch_rows(p_batch) AS x WHERE x.version = p_version;
    SELECT * INTO run FROM pgmig.nontx_run AS x WHERE x.version = p_version;
    IF b.version IS NULL OR run.version IS NULL OR run.statements_done <> run.statements
       OR run.state <> 'running' OR run.checksum <> b.checksum THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM001',
            MESSAGE = format('pgmig: non-transactional migration %s has not completed all its statements; not recorded', p_version);
    END IF;
    PERFORM pgmig._record_history(
        ARRAY[(b.version, b.name, b.label, b.checksum, b.sql, b.down_sql, false, run.started_at, p_duration, run.pid)::pgmig.history_entry],
        'applied', p_client_info, current_setting('application_name'));
    DELETE FROM pgmig.nontx_run AS x WHERE x.version = p_version;
END
$fn$;

-- Operator, after an interrupted non-transactional migration: 'retry' forgets the run (the
-- operator has undone what completed; the next push runs it from its first statement),
-- 'applied' records it as applied (the operator finished it by hand). Audited.
CREATE OR REPLACE FUNCTION pgmig._resolve(p_version bigint, p_action text, p_lock_timeout interval,
                                          p_client_info text)
RETURNS TABLE (version bigint, name text, outcome text, duration interval, applied_at timestamptz)
LANGUAGE plpgsql VOLATILE
SET search_path TO pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
    run record;
BEGIN
    PERFORM pgmig._assert_can_migrate('migrate_resolve');
    IF p_action IS NULL OR p_action NOT IN ('retry', 'applied') THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM001',
            MESSAGE = format('pgmig: action must be ''retry'' or ''applied'', got %s', coalesce(quote_literal(p_action), 'NULL'));
    END IF;
    PERFORM pgmig._lock_history(coalesce(p_lock_timeout, interval '0'));
    SELECT * INTO run FROM pgmig.nontx_run AS x WHERE x.version = p_version;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM001',
            MESSAGE = format('pgmig: no interrupted non-transactional migration with version %s', p_version);
    END IF;
    IF p_action = 'applied' THEN
        PERFORM pgmig._record_history(
            ARRAY[(run.version, run.name, NULL, run.checksum, run.sql, run.down_sql, false, run.started_at,
                   clock_timestamp() - run.started_at, NULL)::pgmig.history_entry],
            'applied', p_client_info, current_setting('application_name'));
    END IF;
    DELETE FROM pgmig.nontx_run AS x WHERE x.version = p_version;
    PERFORM pgmig._audit('resolve', p_version, p_client_info, jsonb_build_object('action', p_action, 'run', to_jsonb(run)));
    version    := run.version;
    name       := run.name;
    outcome    := CASE p_action WHEN 'applied' THEN 'applied' ELSE 'pending' END;
    duration   := NULL;
    applied_at := CASE p_action WHEN 'applied' THEN run.started_at END;
    RETURN NEXT;
END
$fn$;
