-- migrate_run: the whole job in one statement, for every caller (psql, pg_cron, an admin GUI,
-- pgmig push). A procedure, so that it can commit by itself where one transaction must end:
-- after a migration marked commit_after (a new enum value is usable only after the commit),
-- when the transaction's lock count nears the lock budget (one transaction holds a lock on every
-- object it creates until it commits; on default settings ~5 000 small DDL migrations exhaust
-- the shared lock table, SQLSTATE 53200), and every max_per_transaction migrations if asked.
-- Each transaction takes the history lock and reads the history after it, as migrate_apply
-- does, so exactly once holds against any concurrent caller: between two of its transactions
-- another migrator may take the lock, and the next transaction then re-reads the plan. Each
-- transaction is all or nothing; a failure leaves the earlier transactions of the call applied,
-- and says so.
--
-- p_capture_failure (for migrate_run_staged): a failing migration ends the call normally, its
-- transaction rolled back, with the error as data in p_result->'failed', and the transaction
-- left open (still holding the lock) for the caller to record it and commit.
--
-- p_ddl_lock_timeout: the lock_timeout for the migrations' own statements (see _execute_plan
-- and 26_ddl_lock.sql); NULL leaves the session's.
--
-- PostgreSQL allows COMMIT in a procedure only when CALL runs in its own transaction, not
-- inside BEGIN ... COMMIT (or a multi-statement query string): there the first COMMIT fails
-- with SQLSTATE 2D000 "invalid transaction termination", before anything was done.
CREATE OR REPLACE PROCEDURE pgmig._run(
    p_batch                  jsonb,
    p_target_version         bigint,
    p_lock_timeout           interval,
    p_allow_out_of_order     boolean,
    p_allow_missing          boolean,
    p_dry_run                boolean,
    p_client_info            text,
    p_lock_budget            integer,
    p_max_per_transaction    integer,
    p_stop_before_nontx      boolean,
    p_notices                text,
    p_details                boolean,
    INOUT p_result           jsonb,
    p_capture_failure        boolean DEFAULT false,
    p_scope                  text DEFAULT NULL,
    p_ddl_lock_timeout       interval DEFAULT NULL)
LANGUAGE plpgsql
AS $fn$
DECLARE
    -- Captured before anything else, with schema-qualified calls only (see _apply).
    v_caller_path text := pg_catalog.current_setting('search_path');
    v_caller_role text := pg_catalog.current_setting('role');
    v_app         text := pg_catalog.current_setting('application_name');
    v_call_start  timestamptz := pg_catalog.clock_timestamp();
    v_ctx         pgmig.call_context;
    v_plan        record;
    v_run         record;
    v_wait        record;
    v_plan_array  pgmig.plan_entry[];
    v_pos         integer := 1;     -- where the next transaction continues in v_plan_array
    v_txn         integer := 0;     -- transactions that applied something
    v_applied_v   bigint[] := '{}'::bigint[];            -- what this call applied, in order: version,
    v_applied_n   text[] := '{}'::text[];                -- name (a repeatable migration has no version),
    v_applied_at  timestamptz[] := '{}'::timestamptz[];  -- start
    v_applied_d   interval[] := '{}'::interval[];        -- and duration
    v_mark        text;             -- the history as this call left it at its last commit
    v_stopped     jsonb;
    v_first       boolean := true;
    v_left        bigint;
    v_next        integer;
    v_entry       pgmig.plan_entry;
    v_budget_stops integer := 0;    -- transactions ended at the lock budget
    v_failed      jsonb;            -- p_capture_failure: the failing migration and its error
    v_scope       text;
    v_session     pgmig.session_state;    -- the caller's session, put back before every COMMIT
    v_integrity   pgmig.integrity_state;  -- pgmig's objects after each transaction's lock
    v_ran         record;
    v_written     record;   -- what the migrations that ran wrote to the history (_versioned)
BEGIN
    IF pg_catalog.transaction_timestamp() <> pg_catalog.statement_timestamp()
       AND coalesce(p_notices, 'text') = 'text' THEN
        -- Earlier statements ran in this transaction: most likely an explicit BEGIN, where the
        -- COMMIT below fails with a message that does not say what to do instead. (Through the
        -- extended query protocol the two timestamps differ in autocommit too, hence a NOTICE,
        -- not an error.)
        RAISE NOTICE USING
            ERRCODE = 'PM000',
            MESSAGE = 'pgmig: migrate_run commits by itself: inside BEGIN ... COMMIT it fails next with "invalid transaction termination"',
            HINT = 'CALL migrate_run(...) outside a transaction block (autocommit), or use select * from migrate_apply(...) inside one.';
    END IF;
    -- End the CALL's own transaction at once: every transaction of this call is then started
    -- here, READ COMMITTED whatever default_transaction_isolation says (a snapshot older than
    -- the lock would hide a racer's commit). COMMIT AND CHAIN keeps that for the next ones.
    COMMIT;
    SET TRANSACTION ISOLATION LEVEL READ COMMITTED;
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    -- The caller's session, as it is between transactions (the CALL's own ended above, so no
    -- SET LOCAL of the caller's can be in force).
    v_session := pgmig._session_snapshot(v_caller_path, false);
    -- notices => 'none': quiet for every transaction of the call (set again after each COMMIT,
    -- which ends a local setting; nothing to put back at the end, for the same reason).
    PERFORM pgmig._quiet(p_notices);

    PERFORM pgmig._assert_can_migrate('migrate_run');
    PERFORM pgmig._assert_options(p_target_version, p_lock_budget, p_max_per_transaction);
    v_scope := pgmig._scope(p_scope);
    v_ctx := pgmig._call_context(v_caller_path, v_caller_role, v_app, p_client_info, p_notices, p_lock_budget,
                                 pgmig._default_lock_budget(), p_max_per_transaction, true, p_capture_failure, v_scope,
                                 p_ddl_lock_timeout);
    v_ctx.session := v_session;
    -- Validated once: the batch does not change between the transactions of this call.
    PERFORM pgmig._assert_well_formed(p_batch);
    v_ctx.lock_timeouts := pgmig._batch_lock_timeouts(p_batch);

    LOOP
        -- The lock, waiting as lock_wait decides: queued in slices, or, while a
        -- non-transactional migration runs, between transactions without a snapshot.
        SELECT * INTO v_wait FROM pgmig.lock_wait(p_lock_timeout, NULL, 0, v_scope);
        WHILE NOT v_wait.acquired LOOP
            ROLLBACK AND CHAIN;
            IF v_wait.retry_after > interval '0' THEN
                PERFORM pg_catalog.pg_sleep(extract(epoch FROM v_wait.retry_after));
                COMMIT AND CHAIN;
            END IF;
            SELECT * INTO v_wait FROM pgmig.lock_wait(p_lock_timeout, v_wait.waiting_since, v_wait.attempt, v_scope);
        END LOOP;
        PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
        PERFORM pgmig._quiet(p_notices);
        PERFORM pgmig._assert_no_interrupted(v_scope);

        -- The plan: read on the first transaction, and again whenever the history is not
        -- exactly as this call left it at its last commit (another migrator got the lock in
        -- between, or an operator rolled back, repaired...).
        IF v_first THEN
            v_mark := pgmig._history_digest(v_scope);
            IF v_mark <> pgmig._empty_digest() AND v_mark = pgmig._batch_digest(p_batch) THEN
                -- Racing migrators of the same batch: exactly these migrations are applied,
                -- unchanged; nothing else to read (the plan only for the details).
                IF p_details THEN
                    SELECT * INTO v_plan FROM pgmig._read_plan(p_batch, p_target_version, p_allow_out_of_order, p_allow_missing, v_scope);
                    v_plan_array := v_plan.plan;
                END IF;
                EXIT;
            END IF;
        END IF;
        IF v_first OR v_mark IS DISTINCT FROM pgmig._history_mark(v_scope) THEN
            SELECT * INTO v_plan FROM pgmig._read_plan(p_batch, p_target_version, p_allow_out_of_order, p_allow_missing, v_scope);
            IF v_plan.drift THEN
                PERFORM pgmig._assert_no_drift(p_batch, p_allow_out_of_order, p_allow_missing,
                    CASE WHEN v_txn = 0 THEN 'nothing was applied'
                         ELSE format('nothing more was applied (%s migrations committed earlier by this call stay applied)', v_ctx.committed) END,
                    v_ctx.data, v_scope);
            END IF;
            IF v_first THEN
                PERFORM pgmig._assert_runnable(v_plan.manifest_only,
                    CASE WHEN NOT p_stop_before_nontx THEN v_plan.non_transactional END, v_plan.ahead, p_dry_run,
                    'From SQL: CALL migrate_run(batch, stop_before_non_transactional => true) applies everything before it; '
                    || 'then run its statements yourself outside a transaction and record it with migrate_baseline.', v_ctx.notices);
            ELSIF NOT p_dry_run AND v_plan.manifest_only IS NOT NULL THEN
                PERFORM pgmig._assert_runnable(v_plan.manifest_only, NULL, NULL, false, NULL, v_ctx.notices);
            END IF;
            IF v_first THEN
                v_ctx.total := v_plan.to_apply;
                v_ctx.commit_points := v_plan.commit_points;
            END IF;
            v_plan_array := v_plan.plan;
            v_pos := 1;
        END IF;
        v_first := false;

        -- The next migration this call applies, if any.
        SELECT min(o) INTO v_next FROM generate_subscripts(v_plan_array, 1) AS o
         WHERE o >= v_pos AND (v_plan_array[o]).outcome = 'pending';
        IF v_next IS NULL OR p_dry_run THEN
            EXIT;
        END IF;
        v_entry := v_plan_array[v_next];
        IF NOT v_entry.transactional THEN
            v_stopped := jsonb_build_object('reason', 'non_transactional', 'version', v_entry.version, 'name', v_entry.name);
            EXIT;
        END IF;

        v_txn := v_txn + 1;
        v_integrity := pgmig._integrity_snapshot(v_scope);
        SELECT * INTO v_run FROM pgmig._execute_plan(v_plan_array, v_next, v_ctx, v_txn);
        IF v_run.stopped = 'failed' THEN
            v_failed := v_run.failure;
            v_txn := v_txn - 1;
            EXIT;
        END IF;
        SELECT v_applied_v || array_agg(e.version ORDER BY e.ordinality), v_applied_at || array_agg(t.at ORDER BY e.ordinality),
               v_applied_d || array_agg(t.d ORDER BY e.ordinality), v_applied_n || array_agg(e.name ORDER BY e.ordinality)
          INTO v_applied_v, v_applied_at, v_applied_d, v_applied_n
          FROM unnest(v_plan_array) WITH ORDINALITY AS e
          JOIN unnest(v_run.started, v_run.durations) WITH ORDINALITY AS t(at, d, o) ON t.o = e.ordinality
         WHERE t.d IS NOT NULL;
        v_ctx.committed := v_ctx.committed + v_run.done;
        IF v_run.stopped = 'lock_budget' THEN
            v_budget_stops := v_budget_stops + 1;
        END IF;
        v_pos := v_run.next_index;
        -- Before the COMMIT: pgmig's own functions unchanged (inlined, see _apply), the session
        -- put back (a migration's plain SET survives COMMIT), the bookkeeping intact.
        SELECT * INTO v_ran FROM pgmig._ran(v_plan_array, v_run.durations);
        IF ARRAY(SELECT p.xmin FROM pg_proc AS p
                 WHERE p.pronamespace = to_regnamespace('pgmig') AND p.proname >= '_' AND p.proname < '`'
                 ORDER BY p.oid) IS DISTINCT FROM v_integrity.functions THEN
            RAISE EXCEPTION USING
                ERRCODE = 'PM013',
                MESSAGE = format('pgmig: the bookkeeping was tampered with during this call by %s; nothing more was applied',
                                 pgmig._suspects(v_ran.versions, v_ran.names)),
                DETAIL = 'pgmig''s own functions, its checkers among them, were replaced or altered (CREATE OR REPLACE or ALTER FUNCTION in schema pgmig).',
                HINT = 'Migrations must not touch pgmig''s own objects (schema pgmig).';
        END IF;
        PERFORM pgmig._session_restore(v_session, v_ran.versions, v_ran.names);
        SELECT * INTO v_written FROM pgmig._versioned(v_ran.versions, v_ran.checksums);
        PERFORM pgmig._assert_intact(v_integrity, v_ran.versions, v_ran.names, v_written.count, v_written.versions, v_written.checksums);
        v_mark := pgmig._history_mark(v_scope);
        COMMIT AND CHAIN;
        PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
        PERFORM pgmig._quiet(p_notices);
        IF v_run.stopped = 'non_transactional' THEN
            v_entry := v_plan_array[v_run.next_index];
            v_stopped := jsonb_build_object('reason', 'non_transactional', 'version', v_entry.version, 'name', v_entry.name);
            EXIT;
        END IF;
        EXIT WHEN v_run.stopped IS NULL;
    END LOOP;

    IF v_stopped IS NOT NULL AND NOT p_stop_before_nontx THEN
        -- Became pending after this call's first plan (another migrator changed the history).
        RAISE EXCEPTION USING
            ERRCODE = 'PM005',
            MESSAGE = format('pgmig: non-transactional migration %s (%s) is next; %s migration%s of this call were applied and committed, nothing more was applied',
                             v_stopped->>'version', v_stopped->>'name', v_ctx.committed, CASE WHEN v_ctx.committed = 1 THEN '' ELSE 's' END),
            HINT = 'Apply the rest with `pgmig push`, which runs non-transactional migrations from the client under the same lock.';
    END IF;
    -- The outcome, from the last plan and what this call applied.
    SELECT count(*) INTO v_left
      FROM unnest(v_plan_array) AS x
      LEFT JOIN unnest(v_applied_v, v_applied_n) AS a(version, name)
        -- One hashable key (a version, or a repeatable migration's name): an OR here would make
        -- it a nested loop, quadratic in the batch (~0.2 s at 1000 migrations).
        ON coalesce(a.version::text, 'R ' || a.name) = coalesce(x.version::text, 'R ' || x.name)
     WHERE x.outcome = 'pending' AND a.name IS NULL;
    p_result := jsonb_build_object(
        'applied', coalesce(cardinality(v_applied_v), 0),
        -- of which repeatable migrations (counted in 'applied' too)
        'repeatable_applied', (SELECT count(*) FROM unnest(v_applied_v) AS a(version) WHERE a.version IS NULL),
        'pending', v_left,
        'transactions', v_txn,
        'lock_budget', v_ctx.lock_budget,
        'lock_budget_stops', v_budget_stops,
        'version', (SELECT max(h.version) FROM pgmig.history AS h WHERE h.scope = v_scope),
        'ahead', coalesce((SELECT jsonb_agg(x.version ORDER BY x.version) FROM unnest(v_plan_array) AS x WHERE x.outcome = 'ahead'), '[]'),
        'stopped', v_stopped,
        'failed', v_failed,
        'dry_run', p_dry_run,
        'duration', (pg_catalog.clock_timestamp() - v_call_start)::text);
    IF p_details THEN
        p_result := p_result || jsonb_build_object('migrations', coalesce((
            SELECT jsonb_agg(jsonb_strip_nulls(jsonb_build_object(
                       'version', x.version, 'name', x.name, 'label', x.label,
                       'repeatable', CASE WHEN x.version IS NULL THEN true END,
                       'outcome', pgmig._outcome(x.version, CASE WHEN a.o IS NOT NULL THEN 'applied' ELSE x.outcome END),
                       'duration_us', (extract(epoch FROM v_applied_d[a.o]) * 1000000)::bigint,
                       'applied_at', coalesce(v_applied_at[a.o], x.applied_at)))
                   ORDER BY x.ordinality)
            FROM unnest(v_plan_array) WITH ORDINALITY AS x
            LEFT JOIN unnest(v_applied_v, v_applied_n) WITH ORDINALITY AS a(version, name, o)
              ON coalesce(a.version::text, 'R ' || a.name) = coalesce(x.version::text, 'R ' || x.name)), '[]'));
    END IF;
    IF v_ctx.committed > 0 THEN
        PERFORM pgmig._notice('PM012',
            format('pgmig: applied %s migration%s in %s (%s transaction%s)%s', v_ctx.committed,
                   CASE WHEN v_ctx.committed > 1 THEN 's' ELSE '' END,
                   date_trunc('milliseconds', pg_catalog.clock_timestamp() - v_call_start),
                   v_txn, CASE WHEN v_txn > 1 THEN 's' ELSE '' END,
                   CASE WHEN v_stopped IS NOT NULL
                        THEN format('; stopped before non-transactional migration %s (%s)', v_stopped->>'version', v_stopped->>'name')
                        ELSE '' END),
            p_result - 'migrations', v_ctx.notices);
    END IF;
    PERFORM pgmig._unpin_search_path(v_session);
END
$fn$;

-- What migrate_run's default lock budget is: half the server's shared lock table, which has
-- room for max_locks_per_transaction * (max_connections + max_prepared_transactions) locks
-- (docs "Lock Management"; it may borrow some spare shared memory beyond that, which is not
-- counted on). The other half is headroom for every other session.
CREATE OR REPLACE FUNCTION pgmig._default_lock_budget()
RETURNS integer
LANGUAGE sql STABLE
SET search_path TO pg_catalog, pg_temp
AS $fn$
SELECT greatest(1, least(2147483647,
       current_setting('max_locks_per_transaction')::bigint
       * (current_setting('max_connections')::bigint + current_setting('max_prepared_transactions')::bigint) / 2))::integer
$fn$;

-- A cheap mark of the history's state: changes whenever anyone else changes the history
-- (a row added or removed changes the count or the newest version; a rollback, repair,
-- baseline or resolve also writes an audit row; applying a repeatable migration adds a row to
-- pgmig.repeatable). migrate_run compares it across its commits
-- to know whether its plan still holds. Per scope (other tenants' changes do not matter).
CREATE OR REPLACE FUNCTION pgmig._history_mark(p_scope text)
RETURNS text
LANGUAGE sql STABLE
SET search_path TO pg_catalog, pg_temp
AS $fn$
SELECT concat_ws('/', (SELECT count(*) FROM pgmig.history AS h WHERE h.scope = p_scope),
                 (SELECT max(h.version) FROM pgmig.history AS h WHERE h.scope = p_scope),
                 (SELECT max(a.id) FROM pgmig.audit AS a WHERE a.scope = p_scope),
                 (SELECT count(*) FROM pgmig.nontx_run AS r WHERE r.scope = p_scope),
                 -- a repeatable migration applied by another migrator in between
                 (SELECT max(r.id) FROM pgmig.repeatable AS r WHERE r.scope = p_scope))
$fn$;
