-- Non-transactional migrations (CREATE INDEX CONCURRENTLY, VACUUM, ALTER SYSTEM, ...).
-- PostgreSQL refuses these inside a transaction or a function, so the client runs them, one
-- statement at a time at top level, on a second connection ("executor"). The first
-- connection ("holder") keeps the history lock for the whole time in an open transaction
-- that holds no snapshot, so it excludes every other migrator without blocking the
-- concurrent index build (CREATE INDEX CONCURRENTLY waits only for transactions that hold a
-- snapshot or a lock on its table). Protocol, as `pgmig push` runs it (docs/sql-api.md):
--
--   holder:   BEGIN; SELECT * FROM pgmig.lock_wait(...);            -- waits without a snapshot
--             SELECT pgmig.nontx_begin(batch, version);             -- the statements' search_path
--   executor: SET search_path to what nontx_begin returned, if anything (a tenant scope);
--             for each statement i of n:
--               SELECT pgmig.nontx_progress(version, ..., done => i-1, current => stmt_i);
--               <stmt_i>                        -- at top level, autocommit
--             SELECT pgmig.nontx_progress(version, ..., done => n, current => NULL);
--   holder:   SELECT pgmig.nontx_finish(batch, version, duration); COMMIT;
--
-- If the client dies or a statement fails, the holder's transaction ends (the lock with it)
-- and pgmig.nontx_run keeps the truth: which statements completed. Every migrator then
-- refuses to continue until an operator resolves it (migrate_resolve).

-- Raises PM009 when a non-transactional migration was interrupted. Called under the lock:
-- a run row seen then cannot belong to a live run (its holder would have the lock). A run whose
-- statements all completed (the executor recorded the last one done, and then the holder went
-- away before recording it: a killed client, a timeout, a lost connection) is applied: it is
-- recorded as such, audited, and reported in a NOTICE, instead of blocking every migrator.
-- Only runs of scope p_scope matter (under its lock).
CREATE OR REPLACE FUNCTION pgmig._assert_no_interrupted(p_scope text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path TO pg_catalog, pg_temp
AS $fn$
DECLARE
    r         record;
    v_invalid text;
    v_orphan  integer;
BEGIN
    FOR r IN SELECT * FROM pgmig.nontx_run AS x
             WHERE x.scope = p_scope AND x.state = 'running' AND x.statements_done = x.statements ORDER BY x.version LOOP
        IF r.direction = 'down' THEN
            PERFORM pgmig._forget_applied(r.version, r.client_info,
                                          jsonb_build_object('completed_run', to_jsonb(r), 'non_transactional', true), p_scope);
            DELETE FROM pgmig.nontx_run AS x WHERE x.scope = p_scope AND x.version = r.version;
            RAISE NOTICE USING
                ERRCODE = 'PM009',
                MESSAGE = format('pgmig: the rollback of non-transactional migration %s (%s) had completed all %s statements when its client went away; recorded it as rolled back',
                                 r.version, r.name, r.statements);
            CONTINUE;
        END IF;
        PERFORM pgmig._record_history(
            ARRAY[(r.version, r.name, NULL, r.checksum, r.sql, r.down_sql, false, r.started_at,
                   r.updated_at - r.started_at, r.pid)::pgmig.history_entry],
            'applied', r.client_info, current_setting('application_name'), p_scope);
        DELETE FROM pgmig.nontx_run AS x WHERE x.scope = p_scope AND x.version = r.version;
        PERFORM pgmig._audit('resolve', r.version, r.client_info,
                             jsonb_build_object('action', 'completed', 'run', to_jsonb(r)), p_scope);
        RAISE NOTICE USING
            ERRCODE = 'PM009',
            MESSAGE = format('pgmig: non-transactional migration %s (%s) had completed all %s statements when its client went away; recorded it as applied',
                             r.version, r.name, r.statements);
    END LOOP;
    SELECT * INTO r FROM pgmig.nontx_run AS x WHERE x.scope = p_scope ORDER BY x.version LIMIT 1;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    SELECT string_agg(i.indexrelid::regclass::text, ', ' ORDER BY i.indexrelid::regclass::text) INTO v_invalid
      FROM pg_index AS i WHERE NOT i.indisvalid;
    SELECT a.pid INTO v_orphan FROM pg_stat_activity AS a WHERE a.pid = r.pid AND a.pid <> pg_backend_pid() AND a.state = 'active';
    RAISE EXCEPTION USING
        ERRCODE = 'PM009',
        MESSAGE = format('pgmig: %snon-transactional migration %s (%s)%s was %s after %s of %s statements, before it was recorded; '
                         'every migrator refuses to go on until it is resolved, and this call applied nothing',
                         CASE WHEN r.direction = 'down' THEN 'the rollback of ' ELSE '' END,
                         r.version, r.name, pgmig._in_scope(p_scope), CASE r.state WHEN 'failed' THEN 'stopped by an error' ELSE 'interrupted' END,
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
                      'and run: select migrate_resolve(%s, ''retry''%s) to run the migration again from its first statement; '
                      'or finish it by hand and run: select migrate_resolve(%s, ''applied''%s) to record it as applied.',
                      r.version, CASE WHEN p_scope <> '' THEN ', scope => ' || quote_literal(p_scope) ELSE '' END,
                      r.version, CASE WHEN p_scope <> '' THEN ', scope => ' || quote_literal(p_scope) ELSE '' END);
END
$fn$;

-- Holder, in its open transaction: take (or confirm) the lock, validate the batch and check
-- that p_version is the next thing to do: pending, non-transactional, nothing pending below.
-- p_statements, when given, are the migration's statements as the client will run them: one
-- that could never finish while this transaction holds the history lock is refused up front
-- (see _nontx_statement_problem), before anything runs. p_scope: the tenant scope ('' or NULL:
-- the default scope). Returns the search_path the executor must run the statements with (the
-- tenant schema first, then the caller's), or NULL: leave it as it is.
DO $pgmig$ BEGIN PERFORM pgmig._drop_if_changed('pgmig.nontx_begin(jsonb,bigint,interval,boolean,boolean,text[])', 'text'); END $pgmig$;
CREATE OR REPLACE FUNCTION pgmig.nontx_begin(p_batch jsonb, p_version bigint,
                                             p_lock_timeout interval DEFAULT NULL,
                                             p_allow_out_of_order boolean DEFAULT false,
                                             p_allow_missing boolean DEFAULT false,
                                             p_statements text[] DEFAULT NULL,
                                             p_scope text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql VOLATILE
AS $fn$
DECLARE
    -- read before pinning search_path (see _apply)
    v_caller_path text := pg_catalog.current_setting('search_path');
    v_versions text;
    v_problem  text;
    r          record;
    v_scope    text;
BEGIN
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    v_scope := pgmig._scope(p_scope);
    PERFORM pgmig._assert_can_migrate('nontx_begin');
    PERFORM pgmig._assert_well_formed(p_batch);
    PERFORM pgmig._lock_history(p_lock_timeout, v_scope);
    -- For nontx_finish, in this transaction: the client's application_name (renamed below)
    -- and pgmig's objects before the statements run on the other connection.
    PERFORM set_config('pgmig.client_application', current_setting('application_name'), true);
    PERFORM set_config('pgmig.integrity', pgmig._integrity_snapshot(v_scope)::text, true);
    -- Tell would-be waiters, from the moment the lock is ours, that queueing behind it from
    -- inside a statement would stall the coming index build (_lock_history checks this). The
    -- progress rows come later; application_name is visible to every role at once, and
    -- is_local ends it with this transaction.
    PERFORM set_config('application_name', format('pgmig: non-transactional migration %s%s', p_version, pgmig._in_scope(v_scope)), true);
    -- The holder sits idle in its transaction for as long as the statements take: a
    -- database-level idle_in_transaction_session_timeout must not end it (and with it the
    -- lock) half-way. Local: ends with this transaction.
    PERFORM set_config('idle_in_transaction_session_timeout', '0', true);
    PERFORM pgmig._assert_no_interrupted(v_scope);
    PERFORM pgmig._assert_no_drift(p_batch, p_allow_out_of_order, p_allow_missing, 'nothing was applied', false, v_scope);
    SELECT * INTO r FROM pgmig._plan_rows(p_batch, v_scope) AS p WHERE p.version = p_version;
    IF NOT FOUND OR r.outcome <> 'pending' OR r.transactional OR r.sql IS NULL THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM001',
            MESSAGE = format('pgmig: version %s is not a pending non-transactional migration of this batch (%s)', p_version,
                             CASE WHEN NOT FOUND THEN 'not in the batch' WHEN r.outcome <> 'pending' THEN r.outcome
                                  WHEN r.sql IS NULL THEN 'no SQL' ELSE 'it is transactional' END);
    END IF;
    SELECT string_agg(p.version::text, ', ' ORDER BY p.version) INTO v_versions
      FROM pgmig._plan_rows(p_batch, v_scope) AS p WHERE p.outcome = 'pending' AND p.version < p_version;
    IF v_versions IS NOT NULL THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM001',
            MESSAGE = format('pgmig: versions %s are pending below non-transactional migration %s; apply them first', v_versions, p_version);
    END IF;
    FOR i IN 1 .. coalesce(cardinality(p_statements), 0) LOOP
        v_problem := pgmig._nontx_statement_problem(p_statements[i]);
        IF v_problem IS NOT NULL THEN
            RAISE EXCEPTION USING
                ERRCODE = 'PM005',
                MESSAGE = format('pgmig: non-transactional migration %s (%s): statement %s of %s %s; nothing was run',
                                 p_version, r.name, i, cardinality(p_statements), v_problem),
                DETAIL = 'The statement: ' || left(p_statements[i], 500),
                HINT = 'While a non-transactional migration runs, pgmig holds a lock on its history table in another session, '
                    || 'so a statement that needs a lock on every table, or on pgmig''s own tables, would wait for it forever. '
                    || 'Name the tables (VACUUM t1, t2; ANALYZE t1), and leave pgmig''s objects alone.';
        END IF;
    END LOOP;
    PERFORM pgmig._create_scope_schema(v_scope);
    PERFORM pg_catalog.set_config('search_path', v_caller_path, true);
    RETURN CASE WHEN v_scope <> '' THEN pgmig._scope_path(v_scope, v_caller_path) END;
END
$fn$;

-- Why a statement of a non-transactional migration could never finish while the history lock
-- is held by the migration's own holder, or NULL: a database-wide VACUUM / ANALYZE / CLUSTER /
-- REINDEX DATABASE or SYSTEM (each needs a lock on every table, pgmig.history included), or a
-- statement naming one of pgmig's objects. A static check of the statement's text (comments
-- removed, case ignored); what it cannot see — a function that touches pgmig's tables — the
-- client's watchdog catches while it waits (nontx_blocked).
CREATE OR REPLACE FUNCTION pgmig._nontx_statement_problem(p_statement text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path TO pg_catalog, pg_temp
AS $fn$
DECLARE
    v_text text := lower(p_statement);
    v_rest text;
BEGIN
    -- comments out, then white space folded
    v_text := regexp_replace(v_text, '/\*.*?\*/', ' ', 'g');
    v_text := regexp_replace(v_text, '--[^\n]*', ' ', 'g');
    v_text := btrim(regexp_replace(v_text, '\s+', ' ', 'g'), ' ;');
    IF v_text ~ '"?\mpgmig"?\s*\.' THEN
        RETURN 'touches pgmig''s own objects (schema pgmig)';
    END IF;
    IF v_text ~ '^(vacuum|analyze|analyse)\M' THEN
        -- what is left after the command, its parenthesized options and its option words
        v_rest := regexp_replace(v_text, '^(vacuum|analyze|analyse)\M\s*(\([^)]*\))?', '');
        v_rest := btrim(regexp_replace(v_rest, '\m(full|freeze|verbose|analyze|analyse|skip_locked)\M', '', 'g'), ' ');
        IF v_rest = '' THEN
            RETURN format('is a database-wide %s, which needs a lock on every table', upper(split_part(v_text, ' ', 1)));
        END IF;
    END IF;
    IF v_text ~ '^cluster(\s+verbose)?$' THEN
        RETURN 'is a database-wide CLUSTER, which needs a lock on every clustered table';
    END IF;
    IF v_text ~ '^reindex\M\s*(\([^)]*\)\s*)?(database|system)\M' THEN
        RETURN 'reindexes the whole database, which needs a lock on every table';
    END IF;
    RETURN NULL;
END
$fn$;

-- The client's watchdog, on a connection of its own while the executor runs a statement: a
-- description of the wait when the executor (p_executor_pid) waits for a lock held by the
-- session holding the history lock — the migration's own holder, so the wait could never end —
-- else NULL.
CREATE OR REPLACE FUNCTION pgmig.nontx_blocked(p_executor_pid integer, p_scope text DEFAULT NULL)
RETURNS text
LANGUAGE sql VOLATILE
SET search_path TO pg_catalog, pg_temp
AS $fn$
SELECT format('pid %s waits for a lock held by pid %s, which holds pgmig''s history lock for this migration (%s)',
              p_executor_pid, b.pid, coalesce(a.wait_event_type || ': ' || a.wait_event, 'waiting'))
FROM unnest(pg_blocking_pids(p_executor_pid)) AS b(pid)
JOIN pgmig._lock_holder(pgmig._scope(p_scope)) AS h ON h.pid = b.pid
LEFT JOIN pg_stat_activity AS a ON a.pid = p_executor_pid
LIMIT 1
$fn$;
COMMENT ON FUNCTION pgmig.nontx_blocked(integer, text)
    IS 'pgmig client protocol: is the executor waiting for its own holder? see docs/sql-api.md, "Client protocol"';

-- Executor, in autocommit, before each statement and once after the last: how far it got.
-- Committed at once, so it survives the client dying. p_direction: 'up' (applying) or 'down'
-- (rolling back, see nontx_down_begin).
CREATE OR REPLACE FUNCTION pgmig.nontx_progress(p_version bigint, p_name text, p_checksum text,
                                                p_sql text, p_down_sql text,
                                                p_statements integer, p_done integer,
                                                p_current text, p_error text DEFAULT NULL,
                                                p_client_info text DEFAULT NULL,
                                                p_direction text DEFAULT 'up',
                                                p_scope text DEFAULT NULL)
RETURNS void
LANGUAGE sql VOLATILE
SET search_path TO pg_catalog, pg_temp
AS $fn$
INSERT INTO pgmig.nontx_run AS r (scope, version, name, checksum, sql, down_sql, statements, statements_done,
                                  current_statement, state, error, started_at, updated_at, pid,
                                  by_role, client_info, direction)
VALUES (pgmig._scope(p_scope), p_version, p_name, p_checksum, p_sql, p_down_sql, p_statements, p_done, p_current,
        CASE WHEN p_error IS NULL THEN 'running' ELSE 'failed' END, p_error,
        clock_timestamp(), clock_timestamp(), pg_backend_pid(), current_user, p_client_info,
        coalesce(p_direction, 'up'))
ON CONFLICT (scope, version) DO UPDATE
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
                                              p_client_info text DEFAULT NULL, p_scope text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path TO pg_catalog, pg_temp
AS $fn$
DECLARE
    b       record;
    run     record;
    v_scope text := pgmig._scope(p_scope);
BEGIN
    PERFORM pgmig._assert_holds_lock('nontx_finish', 'nontx_begin', v_scope);
    SELECT * INTO b FROM pgmig._batch_rows(p_batch) AS x WHERE x.version = p_version;
    SELECT * INTO run FROM pgmig.nontx_run AS x WHERE x.scope = v_scope AND x.version = p_version;
    IF b.version IS NULL OR run.version IS NULL OR run.statements_done <> run.statements
       OR run.state <> 'running' OR run.checksum <> b.checksum THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM001',
            MESSAGE = format('pgmig: non-transactional migration %s has not completed all its statements; not recorded', p_version);
    END IF;
    PERFORM pgmig._record_history(
        ARRAY[(b.version, b.name, b.label, b.checksum, b.sql, b.down_sql, false, run.started_at, p_duration, run.pid)::pgmig.history_entry],
        'applied', p_client_info,
        coalesce(nullif(current_setting('pgmig.client_application', true), ''), current_setting('application_name')), v_scope);
    DELETE FROM pgmig.nontx_run AS x WHERE x.scope = v_scope AND x.version = p_version;
    -- The statements ran, and committed, on the other connection: whatever they did to
    -- pgmig's objects shows here.
    PERFORM pgmig._assert_intact(current_setting('pgmig.integrity')::pgmig.integrity_state,
                                 ARRAY[b.version], ARRAY[b.name], 1, ARRAY[b.version], ARRAY[b.checksum], ARRAY[b.sql]);
END
$fn$;

-- Operator, after an interrupted non-transactional migration: 'retry' forgets the run (the
-- operator has undone what completed; the next push runs it from its first statement),
-- 'applied' records it as applied (the operator finished it by hand). Audited.
CREATE OR REPLACE FUNCTION pgmig._resolve(p_version bigint, p_action text, p_lock_timeout interval,
                                          p_client_info text, p_scope text)
RETURNS TABLE (version bigint, name text, outcome text, duration interval, applied_at timestamptz)
LANGUAGE plpgsql VOLATILE
SET search_path TO pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
    run     record;
    v_scope text := pgmig._scope(p_scope);
    v_integrity pgmig.integrity_state;
BEGIN
    PERFORM pgmig._assert_can_migrate('migrate_resolve');
    IF p_action IS NULL OR p_action NOT IN ('retry', 'applied') THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM001',
            MESSAGE = format('pgmig: action must be ''retry'' or ''applied'', got %s', coalesce(quote_literal(p_action), 'NULL'));
    END IF;
    PERFORM pgmig._lock_history(coalesce(p_lock_timeout, interval '0'), v_scope);
    v_integrity := pgmig._integrity_snapshot(v_scope);
    SELECT * INTO run FROM pgmig.nontx_run AS x WHERE x.scope = v_scope AND x.version = p_version;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM001',
            MESSAGE = format('pgmig: no interrupted non-transactional migration with version %s%s', p_version, pgmig._in_scope(v_scope));
    END IF;
    -- For a rollback ('down' run), 'applied' means the operator finished the down by hand: the
    -- version is rolled back; 'retry' leaves it applied, for the next rollback to run its down.
    IF p_action = 'applied' AND run.direction = 'down' THEN
        PERFORM pgmig._forget_applied(run.version, p_client_info, jsonb_build_object('resolved_run', to_jsonb(run), 'non_transactional', true), v_scope);
    ELSIF p_action = 'applied' THEN
        PERFORM pgmig._record_history(
            ARRAY[(run.version, run.name, NULL, run.checksum, run.sql, run.down_sql, false, run.started_at,
                   clock_timestamp() - run.started_at, NULL)::pgmig.history_entry],
            'applied', p_client_info, current_setting('application_name'), v_scope);
    END IF;
    DELETE FROM pgmig.nontx_run AS x WHERE x.scope = v_scope AND x.version = p_version;
    PERFORM pgmig._audit('resolve', p_version, p_client_info, jsonb_build_object('action', p_action, 'run', to_jsonb(run)), v_scope);
    -- 'applied' of an up adds its row, of a down removes it; 'retry' changes no row.
    PERFORM pgmig._assert_intact(v_integrity, '{}', '{}',
                                 CASE WHEN p_action <> 'applied' THEN 0 WHEN run.direction = 'down' THEN -1 ELSE 1 END,
                                 CASE WHEN p_action = 'applied' THEN ARRAY[run.version] ELSE '{}' END,
                                 CASE WHEN p_action = 'applied' AND run.direction <> 'down' THEN ARRAY[run.checksum]
                                      WHEN p_action = 'applied' THEN ARRAY[NULL::text] ELSE '{}' END);
    version    := run.version;
    name       := run.name;
    outcome    := CASE WHEN run.direction = 'down' THEN CASE p_action WHEN 'applied' THEN 'rolled_back' ELSE 'already_applied' END
                       ELSE CASE p_action WHEN 'applied' THEN 'applied' ELSE 'pending' END END;
    duration   := NULL;
    applied_at := CASE WHEN p_action = 'applied' OR run.direction = 'down' THEN run.started_at END;
    RETURN NEXT;
END
$fn$;

-- Rolling back a non-transactional migration: its down SQL (DROP INDEX CONCURRENTLY...) runs
-- from the client with the same protocol as an up, and the same recording and recovery
-- (pgmig.nontx_run with direction 'down'; PM009 when interrupted; migrate_resolve). Holder, in
-- its open transaction after lock_wait: checks that p_version is applied, non-transactional,
-- the newest applied version, with down SQL; p_statements are the down's statements as the
-- client will run them (checked like an up's). Returns the down SQL to run, and the search_path
-- to run it with (NULL: leave it as it is; a tenant scope: its schema first).
DO $pgmig$ BEGIN PERFORM pgmig._drop_if_changed('pgmig.nontx_down_begin(bigint,text[])', 'record'); END $pgmig$;
CREATE OR REPLACE FUNCTION pgmig.nontx_down_begin(p_version bigint, p_statements text[] DEFAULT NULL,
                                                  p_scope text DEFAULT NULL,
                                                  OUT down_sql text, OUT search_path text)
LANGUAGE plpgsql VOLATILE
AS $fn$
DECLARE
    v_caller_path text := pg_catalog.current_setting('search_path');
    h         record;
    v_newer   text;
    v_problem text;
    v_scope   text;
BEGIN
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    v_scope := pgmig._scope(p_scope);
    PERFORM pgmig._begin('nontx_down_begin', interval '0', v_scope);
    PERFORM set_config('pgmig.client_application', current_setting('application_name'), true);
    PERFORM set_config('pgmig.integrity', pgmig._integrity_snapshot(v_scope)::text, true);
    PERFORM set_config('application_name', format('pgmig: non-transactional migration %s%s', p_version, pgmig._in_scope(v_scope)), true);
    PERFORM set_config('idle_in_transaction_session_timeout', '0', true);
    SELECT * INTO h FROM pgmig.history AS x WHERE x.scope = v_scope AND x.version = p_version;
    SELECT string_agg(x.version::text, ', ' ORDER BY x.version) INTO v_newer FROM pgmig.history AS x
     WHERE x.scope = v_scope AND x.version > p_version;
    IF h.version IS NULL OR h.transactional OR v_newer IS NOT NULL
       OR h.down_sql IS NULL OR btrim(h.down_sql, E' \t\r\n\f\x0b') = '' THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM001',
            MESSAGE = format('pgmig: version %s cannot be rolled back outside a transaction now (%s)', p_version,
                             CASE WHEN h.version IS NULL THEN 'it is not applied'
                                  WHEN h.transactional THEN 'it is transactional'
                                  WHEN v_newer IS NOT NULL THEN 'newer versions are applied: ' || v_newer
                                  ELSE 'no down SQL was recorded' END);
    END IF;
    FOR i IN 1 .. coalesce(cardinality(p_statements), 0) LOOP
        v_problem := pgmig._nontx_statement_problem(p_statements[i]);
        IF v_problem IS NOT NULL THEN
            RAISE EXCEPTION USING
                ERRCODE = 'PM005',
                MESSAGE = format('pgmig: the down SQL of non-transactional migration %s (%s): statement %s of %s %s; nothing was rolled back',
                                 p_version, h.name, i, cardinality(p_statements), v_problem),
                DETAIL = 'The statement: ' || left(p_statements[i], 500);
        END IF;
    END LOOP;
    down_sql := h.down_sql;
    search_path := CASE WHEN v_scope <> '' THEN pgmig._scope_path(v_scope, v_caller_path) END;
    PERFORM pg_catalog.set_config('search_path', v_caller_path, true);
END
$fn$;

-- Holder, after the executor reported every statement of the down done: the version is rolled
-- back (its history row goes to the audit, as migrate_rollback does), then the client commits.
CREATE OR REPLACE FUNCTION pgmig.nontx_down_finish(p_version bigint, p_duration interval, p_client_info text DEFAULT NULL,
                                                   p_scope text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path TO pg_catalog, pg_temp
AS $fn$
DECLARE
    run     record;
    h       record;
    v_scope text := pgmig._scope(p_scope);
BEGIN
    PERFORM pgmig._assert_holds_lock('nontx_down_finish', 'nontx_down_begin', v_scope);
    SELECT * INTO run FROM pgmig.nontx_run AS x WHERE x.scope = v_scope AND x.version = p_version;
    SELECT * INTO h FROM pgmig.history AS x WHERE x.scope = v_scope AND x.version = p_version;
    IF run.version IS NULL OR h.version IS NULL OR run.direction <> 'down' OR run.statements_done <> run.statements
       OR run.state <> 'running' THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM001',
            MESSAGE = format('pgmig: the down SQL of non-transactional migration %s has not completed all its statements; not recorded', p_version);
    END IF;
    PERFORM pgmig._forget_applied(p_version, p_client_info, jsonb_build_object('duration', p_duration::text, 'non_transactional', true), v_scope);
    DELETE FROM pgmig.nontx_run AS x WHERE x.scope = v_scope AND x.version = p_version;
    PERFORM pgmig._assert_intact(current_setting('pgmig.integrity')::pgmig.integrity_state,
                                 ARRAY[h.version], ARRAY[h.name], -1, ARRAY[h.version], ARRAY[NULL::text], ARRAY[h.down_sql]);
END
$fn$;

-- The one way an applied version leaves the history when it is rolled back: the row goes to
-- the audit with p_details.
CREATE OR REPLACE FUNCTION pgmig._forget_applied(p_version bigint, p_client_info text, p_details jsonb, p_scope text,
                                                 p_client_application text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path TO pg_catalog, pg_temp
AS $fn$
DECLARE
    h record;
BEGIN
    SELECT * INTO h FROM pgmig.history AS x WHERE x.scope = p_scope AND x.version = p_version;
    PERFORM set_config('pgmig.maintenance', 'on', true);
    DELETE FROM pgmig.history AS x WHERE x.scope = p_scope AND x.version = p_version;
    PERFORM set_config('pgmig.maintenance', '', true);
    PERFORM pgmig._audit('rollback', p_version, p_client_info, p_details || jsonb_build_object('history', to_jsonb(h)), p_scope,
                         p_client_application);
END
$fn$;

-- Raises PM004 unless this transaction holds the lock of scope p_scope (p_what is the function
-- that needs it, p_begin the one that should have taken it).
CREATE OR REPLACE FUNCTION pgmig._assert_holds_lock(p_what text, p_begin text, p_scope text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path TO pg_catalog, pg_temp
AS $fn$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_locks AS l
                   WHERE p_scope = '' AND l.locktype = 'relation' AND l.relation = 'pgmig.history'::regclass
                     AND l.pid = pg_backend_pid() AND l.granted AND l.mode = 'ExclusiveLock')
       AND NOT (pg_backend_pid() IN (SELECT h.pid FROM pgmig._scope_holders(p_scope) AS h(pid))) THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM004',
            MESSAGE = format('pgmig: %s must run in the transaction that called %s (it does not hold the history lock)', p_what, p_begin);
    END IF;
END
$fn$;
