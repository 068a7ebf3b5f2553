-- Raises PM001 listing every shape problem of the batch, if any.
CREATE OR REPLACE FUNCTION pgmig._assert_well_formed(p_batch jsonb)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path TO pg_catalog, pg_temp
AS $fn$
DECLARE
    v_count    bigint;
    v_detail   text;
    v_versions text;
BEGIN
    IF coalesce(pgmig._batch_ok(p_batch), false) THEN
        RETURN;
    END IF;
    SELECT count(*),
           string_agg(p.problem, E'\n' ORDER BY p.entry, p.problem),
           string_agg(DISTINCT p.version::text, ', ')
      INTO v_count, v_detail, v_versions
      FROM pgmig._batch_problems(p_batch) AS p;
    IF v_count > 0 THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM001',
            MESSAGE = format('pgmig: invalid batch: %s problem%s%s; nothing was applied', v_count,
                             CASE WHEN v_count > 1 THEN 's' ELSE '' END,
                             CASE WHEN v_versions IS NOT NULL THEN ' (versions ' || v_versions || ')' ELSE '' END),
            DETAIL = v_detail,
            HINT = 'Fix the listed entries (see docs/sql-api.md, "Batch format") and run again.';
    END IF;
END
$fn$;

-- Raises PM002 listing every drifted version (_drift_problems), if any. p_outcome ends the
-- message: what did not happen because of it. With p_data a WARNING with the same SQLSTATE
-- comes first, its DETAIL listing each version and kind for programs (notices 'json'/'none').
CREATE OR REPLACE FUNCTION pgmig._assert_no_drift(p_batch jsonb, p_allow_out_of_order boolean,
                                                  p_allow_missing boolean, p_outcome text,
                                                  p_data boolean, p_scope text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path TO pg_catalog, pg_temp
AS $fn$
DECLARE
    v_count    bigint;
    v_versions text;
    v_detail   text;
    v_data     jsonb;
BEGIN
    SELECT count(*), string_agg(DISTINCT d.version::text, ', '), string_agg(d.problem, E'\n' ORDER BY d.version),
           jsonb_agg(jsonb_build_object('version', d.version, 'kind', d.kind) ORDER BY d.version, d.kind)
      INTO v_count, v_versions, v_detail, v_data
      FROM pgmig._drift_problems(p_batch, p_allow_out_of_order, p_allow_missing, p_scope) AS d;
    IF v_count > 0 AND p_data THEN
        RAISE WARNING USING
            ERRCODE = 'PM002',
            MESSAGE = format('pgmig: drift in versions %s', v_versions),
            DETAIL = jsonb_build_object('drift', v_data)::text;
    END IF;
    IF v_count > 0 THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM002',
            MESSAGE = format('pgmig: the batch does not match the applied history%s (versions %s)%s', pgmig._in_scope(p_scope),
                             v_versions, coalesce('; ' || p_outcome, '')),
            DETAIL = v_detail,
            HINT = 'An applied migration must not be edited, renamed or removed: restore it, or record a deliberate edit with migrate_repair. '
                || 'Pending migrations older than the newest applied one need allow_out_of_order => true.';
    END IF;
END
$fn$;

-- Raises PM004 unless this transaction can take the lock and then see fresh history.
CREATE OR REPLACE FUNCTION pgmig._assert_can_migrate(p_what text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path TO pg_catalog, pg_temp
AS $fn$
BEGIN
    IF pg_is_in_recovery() THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM004',
            MESSAGE = format('pgmig: %s cannot run on a standby (the server is in recovery)', p_what),
            HINT = 'Connect to the primary.';
    END IF;
    IF current_setting('transaction_read_only') = 'on' THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM004',
            MESSAGE = format('pgmig: %s cannot run in a read-only transaction', p_what),
            HINT = 'Run it in a read-write transaction (check default_transaction_read_only and target_session_attrs).';
    END IF;
    -- In READ COMMITTED every statement of a VOLATILE function takes a new snapshot, so the
    -- history read after LOCK TABLE sees every migrator that committed before the lock was
    -- granted. In REPEATABLE READ / SERIALIZABLE the snapshot is fixed at the first statement
    -- of the transaction, which is before the lock: a racer's commit would be invisible and
    -- its migrations applied twice (docs "Transaction Isolation", 13.2.2).
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM004',
            MESSAGE = format('pgmig: %s needs a READ COMMITTED transaction; this one is %s, so its snapshot may predate the history lock',
                             p_what, upper(current_setting('transaction_isolation'))),
            HINT = 'Call it in a READ COMMITTED transaction: BEGIN ISOLATION LEVEL READ COMMITTED, or autocommit with default_transaction_isolation = ''read committed''.';
    END IF;
END
$fn$;

-- How many locks this backend holds: what a transaction takes from the shared lock table
-- (a few fast-path relation locks that live outside it are counted too). Reads the whole lock
-- table, so _apply calls it sparingly.
CREATE OR REPLACE FUNCTION pgmig._locks_held()
RETURNS integer
LANGUAGE sql VOLATILE
SET search_path TO pg_catalog, pg_temp
AS $fn$
SELECT count(*)::integer FROM pg_catalog.pg_locks WHERE pid = pg_catalog.pg_backend_pid()
$fn$;


-- The prelude of every operation that changes the history: a transaction that can see fresh
-- history after the lock (PM004 otherwise), the lock (PM003 on timeout), and no interrupted
-- non-transactional migration waiting for an operator (PM009).
CREATE OR REPLACE FUNCTION pgmig._begin(p_what text, p_lock_timeout interval, p_scope text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path TO pg_catalog, pg_temp
AS $fn$
BEGIN
    PERFORM pgmig._assert_can_migrate(p_what);
    PERFORM pgmig._lock_history(p_lock_timeout, p_scope);
    PERFORM pgmig._assert_no_interrupted(p_scope);
END
$fn$;

-- The one way rows get into pgmig.history. p_client_application is the caller's
-- application_name as it was before any migration ran (a migration could change it).
-- It also tells listeners (pgmig wait) that the history changed: NOTIFY pgmig_history, sent at
-- commit, and once per transaction however often this runs (PostgreSQL folds identical
-- notifications of one transaction into one; a rolled-back transaction sends none).
CREATE OR REPLACE FUNCTION pgmig._record_history(p_rows pgmig.history_entry[], p_kind text,
                                                 p_client_info text, p_client_application text,
                                                 p_scope text)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path TO pg_catalog, pg_temp
AS $fn$
DECLARE
    v_count bigint;
BEGIN
    INSERT INTO pgmig.history (scope, version, name, label, checksum, sql, down_sql, transactional, kind,
                               applied_at, applied_by, login_role, client_application,
                               client_addr, client_info, backend_pid, duration, engine_version)
    SELECT p_scope, r.version, r.name, r.label, r.checksum, r.sql, r.down_sql, r.transactional, p_kind,
           r.applied_at, current_user, session_user, p_client_application,
           inet_client_addr(), p_client_info, coalesce(r.backend_pid, pg_backend_pid()),
           coalesce(r.duration, interval '0'), pgmig.engine_version()
    FROM unnest(p_rows) AS r;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    PERFORM pg_notify('pgmig_history', p_scope);
    RETURN v_count;
END
$fn$;

-- The one way rows get into pgmig.audit. p_client_application: the caller's application_name
-- as it was before any migration ran (NULL: the session's now, when none ran).
CREATE OR REPLACE FUNCTION pgmig._audit(p_action text, p_version bigint, p_client_info text, p_details jsonb, p_scope text,
                                        p_client_application text DEFAULT NULL)
RETURNS void
LANGUAGE sql VOLATILE
SET search_path TO pg_catalog, pg_temp
AS $fn$
INSERT INTO pgmig.audit (scope, action, version, client_application, client_addr, client_info, details)
VALUES (p_scope, p_action, p_version, coalesce(p_client_application, current_setting('application_name')), inet_client_addr(),
        p_client_info, p_details)
$fn$;

-- The plan, read once under the lock: every batch entry and applied version in version order,
-- then the repeatable migrations in name order (version NULL; see _repeatable_rows)
-- (outcome 'pending' for what this call would apply, 'beyond_target' for pending versions
-- above p_target, and for pending repeatable migrations while any is), and what the engine
-- must know up front, computed in the same pass:
-- whether _drift_problems would find anything (its rules as one flag; the report itself is
-- built only when it will be raised), how many migrations are to apply, which of them carry
-- no SQL (manifest entries) or are non-transactional, the versions the database is ahead by,
-- and the commit_after points.
CREATE OR REPLACE FUNCTION pgmig._read_plan(p_batch jsonb, p_target bigint, p_allow_out_of_order boolean,
                                            p_allow_missing boolean, p_scope text,
                                            OUT plan pgmig.plan_entry[], OUT drift boolean, OUT to_apply bigint,
                                            OUT manifest_only text, OUT non_transactional text, OUT ahead text,
                                            OUT commit_points text)
LANGUAGE sql STABLE
SET search_path TO pg_catalog, pg_temp
AS $fn$
SELECT array_agg((p.version, p.name, p.label,
                  CASE WHEN p.to_apply OR p.outcome <> 'pending' THEN p.outcome ELSE 'beyond_target' END,
                  p.sql, p.down_sql, p.transactional, p.commit_after, p.checksum,
                  p.recorded_name, p.recorded_checksum, p.applied_at, p.statements)::pgmig.plan_entry
                 ORDER BY p.version, p.name COLLATE "C"),
       -- (A changed or missing repeatable migration is not drift: changing is what it is for.)
       coalesce(bool_or(p.outcome = 'already_applied' AND p.version IS NOT NULL
                        AND (p.checksum <> p.recorded_checksum OR p.name <> p.recorded_name)), false)
       OR (NOT p_allow_missing AND coalesce(bool_or(p.outcome = 'missing' AND p.version IS NOT NULL), false))
       OR (NOT p_allow_out_of_order AND coalesce(min(p.version) FILTER (WHERE p.outcome = 'pending')
                                                 < max(p.version) FILTER (WHERE p.outcome <> 'pending'), false)),
       count(*) FILTER (WHERE p.to_apply),
       string_agg(coalesce(p.version::text, 'repeatable ' || p.name), ', ' ORDER BY p.version, p.name COLLATE "C")
           FILTER (WHERE p.to_apply AND p.sql IS NULL),
       string_agg(format('%s (%s)', p.version, left(p.name, 100)), ', ' ORDER BY p.version)
           FILTER (WHERE p.to_apply AND NOT p.transactional),
       string_agg(p.version::text, ', ' ORDER BY p.version) FILTER (WHERE p.outcome = 'ahead'),
       string_agg(p.version::text, ',' ORDER BY p.version) FILTER (WHERE p.to_apply AND p.commit_after)
FROM (SELECT r.*,
             r.outcome = 'pending'
             AND CASE WHEN r.version IS NOT NULL THEN p_target IS NULL OR r.version <= p_target
                      -- Repeatable migrations come after the last versioned one: not in a call
                      -- whose target leaves versioned migrations pending.
                      ELSE NOT coalesce(bool_or(r.outcome = 'pending' AND r.version > p_target) OVER (), false) END AS to_apply
      FROM (SELECT * FROM pgmig._plan_rows(p_batch, p_scope)
            UNION ALL
            SELECT * FROM pgmig._repeatable_rows(p_batch, p_scope)) AS r) AS p
$fn$;

-- The migrations of p_plan that ran (those with a duration in p_durations, aligned with it):
-- versions, names, checksums and SQL, in plan order, for the session and integrity checks.
CREATE OR REPLACE FUNCTION pgmig._ran(p_plan pgmig.plan_entry[], p_durations interval[],
                                      OUT versions bigint[], OUT names text[], OUT checksums text[], OUT sqls text[])
LANGUAGE sql IMMUTABLE
SET search_path TO pg_catalog, pg_temp
AS $fn$
SELECT coalesce(array_agg(e.version ORDER BY e.ordinality), '{}'), coalesce(array_agg(e.name ORDER BY e.ordinality), '{}'),
       coalesce(array_agg(e.checksum ORDER BY e.ordinality), '{}'), coalesce(array_agg(e.sql ORDER BY e.ordinality), '{}')
FROM unnest(p_plan) WITH ORDINALITY AS e
JOIN unnest(p_durations) WITH ORDINALITY AS t(d, o) ON t.o = e.ordinality
WHERE t.d IS NOT NULL
$fn$;

-- Executes the migrations of p_plan marked 'pending', from index p_from, in the caller's
-- transaction, and records them in the history. Stops (the rest stays pending for the next
-- transaction) at the end of the plan, before a non-transactional migration, after a
-- commit_after migration when p_ctx.run_mode, after p_ctx.max_per_transaction migrations, or
-- after the migration that brings the transaction's lock count near p_ctx.lock_budget.
-- Returns the index to continue from, how many it applied, why it stopped (NULL: end of plan)
-- and, aligned with p_plan, when each applied migration started and how long it took.
-- A failing migration raises its error (after the PM010 warning naming it); with
-- p_ctx.capture_failure the error comes back as data instead (stopped 'failed', failure: the
-- migration and every field of the error), its transaction's work rolled back all the same.
-- Under a DDL lock timeout (p_ctx.ddl_lock_timeout, p_ctx.lock_timeouts) each migration's own
-- statements run with that lock_timeout, and a migration it cancels fails with PM017 naming
-- the relation and the sessions in the way (26_ddl_lock.sql). With p_ctx.rehearse, measures
-- holds, aligned with p_plan, what each applied migration did (_rehearse_measure).
-- Called with search_path pinned to pg_catalog, pg_temp (migrations run through
-- _execute_as_caller with the caller's).
DO $pgmig$ BEGIN PERFORM pgmig._drop_if_changed('pgmig._execute_plan(pgmig.plan_entry[],integer,pgmig.call_context,integer)', 'record',
    'p_plan pgmig.plan_entry[], p_from integer, p_ctx pgmig.call_context, p_transaction integer, OUT next_index integer, OUT done integer, OUT stopped text, OUT started timestamp with time zone[], OUT durations interval[], OUT failure jsonb, OUT measures jsonb[]'); END $pgmig$;
CREATE OR REPLACE FUNCTION pgmig._execute_plan(p_plan pgmig.plan_entry[], p_from integer,
                                               p_ctx pgmig.call_context, p_transaction integer,
                                               OUT next_index integer, OUT done integer, OUT stopped text,
                                               OUT started timestamptz[], OUT durations interval[],
                                               OUT failure jsonb, OUT measures jsonb[])
LANGUAGE plpgsql VOLATILE
AS $fn$
-- (v_ignored holds the value of calls made for their effect: plpgsql_check's extra warning
-- about a variable never read is expected.)
-- @plpgsql_check_options: extra_warnings = false
DECLARE
    v_context     text;     -- a failure's CONTEXT
    v_where       record;   -- where in the migration it failed (_failed_statement)
    v_ran         record;   -- the migrations this transaction ran (_ran)
    v_entry       pgmig.plan_entry;
    v_count       integer := coalesce(cardinality(p_plan), 0);
    v_ignored     text;   -- the value of a call made for its effect (cheaper than PERFORM)
    v_marker      text;   -- application_name while a migration runs
    v_app_touched boolean := false;  -- a migration changed application_name: no more markers
    v_json        boolean := p_ctx.notices = 'json';
    v_progress    boolean := p_ctx.notices IN ('text', 'json');
    v_left        bigint := p_ctx.total - p_ctx.committed;   -- still to apply in this call
    v_t0          timestamptz;
    v_phase       text;
    v_state       text;
    v_message     text;
    v_rows        pgmig.history_entry[];
    v_repeatables pgmig.history_entry[];   -- the repeatable migrations applied, for pgmig.repeatable
    -- lock budget: locks held at the last count, and the most one migration added
    v_locks       integer;
    v_locks_prev  integer;
    v_done_prev   integer := 0;
    v_growth      integer := 1;
    v_next_check  integer := 1;
    -- DDL lock timeout: the call's, in milliseconds, and the current migration's (NULL: none)
    v_ddl_ms      integer := pgmig._ddl_lock_ms(p_ctx.ddl_lock_timeout);
    v_lock_ms     integer;
    v_probe       jsonb;   -- rehearsal: the state before the current migration
    i             integer;
BEGIN
    done := 0;
    started := array_fill(NULL::timestamptz, ARRAY[v_count]);
    durations := array_fill(NULL::interval, ARRAY[v_count]);
    IF p_ctx.rehearse THEN
        measures := array_fill(NULL::jsonb, ARRAY[v_count]);
    END IF;
    IF p_ctx.lock_budget IS NOT NULL THEN
        v_locks_prev := pgmig._locks_held();
    END IF;
    PERFORM pgmig._create_scope_schema(p_ctx.scope);
    BEGIN
        i := p_from;
        WHILE i <= v_count LOOP
            v_entry := p_plan[i];
            IF v_entry.outcome <> 'pending' THEN
                i := i + 1;
                CONTINUE;
            END IF;
            -- A limit reached after the previous migration, or one that cannot run here.
            EXIT WHEN stopped IS NOT NULL;
            IF NOT v_entry.transactional THEN
                stopped := 'non_transactional';
                EXIT;
            END IF;
            done := done + 1;
            v_phase := 'migration';
            IF v_progress THEN
                v_message := CASE WHEN v_entry.version IS NULL
                                  THEN format('pgmig: applying repeatable migration %s (%s/%s)', v_entry.name,
                                              p_ctx.committed + done, p_ctx.total)
                                  ELSE format('pgmig: applying version %s (%s/%s): %s', v_entry.version,
                                              p_ctx.committed + done, p_ctx.total, v_entry.name) END;
            END IF;
            IF v_json THEN
                RAISE NOTICE USING
                    ERRCODE = 'PM000',
                    MESSAGE = v_message,
                    DETAIL = json_strip_nulls(json_build_object('event', 'applying', 'version', v_entry.version, 'name', v_entry.name,
                                               'repeatable', CASE WHEN v_entry.version IS NULL THEN true END,
                                               'index', p_ctx.committed + done, 'total', p_ctx.total,
                                               'transaction', p_transaction))::text;
            ELSIF v_progress THEN
                RAISE NOTICE USING ERRCODE = 'PM000', MESSAGE = v_message;
            END IF;
            v_t0 := clock_timestamp();
            -- Tell other sessions (migrate_status) which migration runs, since when; local to
            -- this transaction, and put back after the loop.
            -- (The caller's own name follows, as much of it as fits in application_name's 63 bytes.)
            -- Not once a migration changed application_name itself: a transaction-local
            -- marker would hide that change from the restore at the end of the call.
            IF NOT v_app_touched THEN
                v_marker := format('pgmig: applying %s @%s %s', coalesce(v_entry.version::text, 'repeatable'),
                                   (extract(epoch FROM v_t0) * 1000)::bigint, p_ctx.client_application);
                v_ignored := set_config('application_name', v_marker, true);
            END IF;
            -- The DDL lock timeout covers the migration's own statements only: _execute_as_caller
            -- puts the caller's lock_timeout back before anything else runs (a failure's
            -- subtransaction rollback does too), so neither the bookkeeping nor the next
            -- migration runs under it.
            v_lock_ms := v_ddl_ms;
            IF p_ctx.lock_timeouts IS NOT NULL AND p_ctx.lock_timeouts ? v_entry.version::text THEN
                v_lock_ms := (p_ctx.lock_timeouts->>v_entry.version::text)::integer;
            END IF;
            IF v_lock_ms IS NOT NULL THEN
                v_ignored := set_config('lock_timeout', v_lock_ms::text || 'ms', true);
            END IF;
            IF p_ctx.rehearse THEN
                v_probe := pgmig._rehearse_probe();
                v_t0 := clock_timestamp();
            END IF;
            v_ignored := pgmig._execute_as_caller(v_entry.sql, p_ctx.caller_path, p_ctx.caller_role, p_ctx.settings,
                                                  v_entry.version, v_entry.name, (p_ctx.session).caller, v_entry.statements)::text;
            IF NOT v_app_touched AND current_setting('application_name') IS DISTINCT FROM v_marker THEN
                v_app_touched := true;
            END IF;
            started[i] := v_t0;
            durations[i] := clock_timestamp() - v_t0;
            IF p_ctx.rehearse THEN
                measures[i] := pgmig._rehearse_measure(v_probe);
            END IF;
            v_phase := NULL;
            IF v_json THEN
                RAISE NOTICE USING
                    ERRCODE = 'PM000',
                    MESSAGE = format('pgmig: applied %s in %s', pgmig._what(v_entry.version, v_entry.name), durations[i]),
                    DETAIL = json_strip_nulls(json_build_object('event', 'applied', 'version', v_entry.version, 'name', v_entry.name,
                                               'repeatable', CASE WHEN v_entry.version IS NULL THEN true END,
                                               'duration_us', (extract(epoch FROM durations[i]) * 1000000)::bigint,
                                               'transaction', p_transaction))::text;
            END IF;
            i := i + 1;

            IF v_entry.version IS NULL THEN
                -- Repeatable migrations: all of them in one transaction, whatever the limits.
                NULL;
            ELSIF p_ctx.run_mode AND v_entry.commit_after THEN
                stopped := 'commit_after';
            ELSIF done >= p_ctx.max_per_transaction THEN
                stopped := 'max_per_transaction';
            ELSIF p_ctx.lock_budget IS NOT NULL AND done >= v_next_check AND done < v_left THEN
                -- Counting locks reads the whole lock table, so it is done only as often as
                -- the growth seen so far requires: halfway to the budget at that rate, then
                -- closer and closer.
                v_locks := pgmig._locks_held();
                v_growth := greatest(v_growth, ceil((v_locks - v_locks_prev)::numeric / (done - v_done_prev))::integer);
                v_locks_prev := v_locks;
                v_done_prev := done;
                IF v_locks + v_growth > p_ctx.lock_budget THEN
                    stopped := 'lock_budget';
                ELSE
                    v_next_check := done + greatest(1, (p_ctx.lock_budget - v_locks) / (2 * v_growth));
                END IF;
            END IF;
        END LOOP;
        next_index := i;
        IF done > 0 AND NOT v_app_touched THEN
            v_ignored := set_config('application_name', p_ctx.client_application, true);
        END IF;
        -- A limit reached after the last pending migration stops nothing.
        IF stopped IS NOT NULL AND stopped <> 'non_transactional'
           AND NOT EXISTS (SELECT FROM unnest(p_plan[i:]) AS e WHERE e.outcome = 'pending') THEN
            stopped := NULL;
        END IF;

        -- Recorded in one statement after the last migration rather than one INSERT each:
        -- same transaction, same outcome; only a migration reading pgmig.history would notice
        -- that the earlier entries of its transaction are not there yet.
        IF done > 0 THEN
            -- The migrations' deferred triggers run now, beneath the executor, not at COMMIT.
            SELECT * INTO v_ran FROM pgmig._ran(p_plan, durations);
            PERFORM pgmig._execute_deferred(p_ctx.caller_path, p_ctx.caller_role, p_ctx.settings, (p_ctx.session).caller,
                                            v_ran.versions, v_ran.names);
            v_phase := 'recording';
            SELECT array_agg((e.version, e.name, e.label, e.checksum, e.sql, e.down_sql,
                              e.transactional, t.at, t.d, NULL)::pgmig.history_entry ORDER BY e.ordinality)
                       FILTER (WHERE e.version IS NOT NULL),
                   array_agg((e.version, e.name, e.label, e.checksum, e.sql, e.down_sql,
                              e.transactional, t.at, t.d, NULL)::pgmig.history_entry ORDER BY e.ordinality)
                       FILTER (WHERE e.version IS NULL)
              INTO v_rows, v_repeatables
              FROM unnest(p_plan) WITH ORDINALITY AS e
              JOIN unnest(started, durations) WITH ORDINALITY AS t(at, d, o) ON t.o = e.ordinality
             WHERE t.d IS NOT NULL;
            IF v_rows IS NOT NULL THEN
                v_ignored := pgmig._record_history(v_rows, 'applied', p_ctx.client_info, p_ctx.client_application, p_ctx.scope)::text;
            END IF;
            IF v_repeatables IS NOT NULL THEN
                v_ignored := pgmig._record_repeatables(v_repeatables, p_ctx.client_info, p_ctx.client_application, p_ctx.scope)::text;
            END IF;
        END IF;
    EXCEPTION WHEN OTHERS THEN
        -- Only errors of a migration or of its bookkeeping get here; the subtransaction of
        -- this block is already rolled back, so nothing of this transaction survives. A bare
        -- RAISE re-throws the original error with its SQLSTATE, detail, hint and internal
        -- query/position intact (rebuilding it with RAISE ... USING would lose the position).
        -- What a rollback does not undo first (prepared statements, session advisory locks...).
        IF p_ctx.session IS NOT NULL THEN
            PERFORM pgmig._session_restore(p_ctx.session, p_failed => true);
        END IF;
        IF v_phase IS NULL THEN
            RAISE;
        END IF;
        GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT;
        IF p_ctx.capture_failure THEN
            DECLARE
                v_detail text; v_hint text;
            BEGIN
                GET STACKED DIAGNOSTICS v_detail = PG_EXCEPTION_DETAIL, v_hint = PG_EXCEPTION_HINT,
                                        v_context = PG_EXCEPTION_CONTEXT;
                -- pgmig's own explanation, when it has one, as the message to keep.
                BEGIN
                    IF v_phase = 'migration' AND v_state = '55P03' AND v_lock_ms > 0 THEN
                        PERFORM pgmig._raise_blocked(v_entry.version, v_entry.name, v_entry.sql, v_lock_ms, p_ctx.caller_path,
                                                     p_ctx.data, p_transaction, p_ctx.committed);
                    END IF;
                    IF v_phase = 'migration' THEN
                        PERFORM pgmig._raise_explained('migration', v_entry.version, v_entry.name, v_state, v_message, p_ctx.commit_points);
                    END IF;
                EXCEPTION WHEN OTHERS THEN
                    GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT,
                                            v_detail = PG_EXCEPTION_DETAIL, v_hint = PG_EXCEPTION_HINT;
                END;
                SELECT * INTO v_where FROM pgmig._failed_statement(v_context, v_entry.sql, v_entry.statements);
                failure := jsonb_strip_nulls(jsonb_build_object(
                    'version', v_entry.version, 'name', v_entry.name, 'phase', v_phase, 'transaction', p_transaction,
                    'repeatable', CASE WHEN v_entry.version IS NULL THEN true END,
                    'sqlstate', v_state, 'message', v_message, 'detail', nullif(v_detail, ''),
                    'hint', nullif(v_hint, ''), 'context', nullif(v_context, ''),
                    'statement', v_where.statement, 'line', v_where.line, 'migration_context', v_where.context));
                stopped := 'failed';
                done := 0;
                next_index := i;
                started := array_fill(NULL::timestamptz, ARRAY[v_count]);
                durations := array_fill(NULL::interval, ARRAY[v_count]);
                RETURN;
            END;
        END IF;
        IF v_phase = 'migration' THEN
            -- The WARNING first, whatever error follows: it names the migration (and, when the
            -- engine ran it statement by statement, the statement and its line) to every
            -- client, also one that asked for no progress notices. Its DETAIL is for programs.
            GET STACKED DIAGNOSTICS v_context = PG_EXCEPTION_CONTEXT;
            SELECT * INTO v_where FROM pgmig._failed_statement(v_context, v_entry.sql, v_entry.statements);
            v_message := format('pgmig: %s failed with SQLSTATE %s%s; %s', pgmig._what(v_entry.version, v_entry.name), v_state,
                                CASE WHEN v_where.statement IS NOT NULL
                                     THEN format(' in statement %s (line %s)', v_where.statement, v_where.line) ELSE '' END,
                                CASE WHEN p_ctx.committed > 0
                                     THEN format('nothing of its transaction was applied (%s migration%s committed earlier by this call stay applied)',
                                                 p_ctx.committed, CASE WHEN p_ctx.committed > 1 THEN 's' ELSE '' END)
                                     ELSE 'nothing was applied' END);
            IF p_ctx.data THEN
                RAISE WARNING USING
                    ERRCODE = 'PM010', MESSAGE = v_message,
                    DETAIL = json_strip_nulls(json_build_object('version', v_entry.version, 'name', v_entry.name,
                                               'repeatable', CASE WHEN v_entry.version IS NULL THEN true END, 'sqlstate', v_state,
                                               'transaction', p_transaction, 'committed', p_ctx.committed,
                                               'statement', v_where.statement, 'line', v_where.line,
                                               'context', v_where.context))::text;
            ELSE
                RAISE WARNING USING ERRCODE = 'PM010', MESSAGE = v_message;
            END IF;
            IF v_state = '55P03' AND v_lock_ms > 0 THEN
                -- The DDL lock timeout cancelled it: say who was in the way (PM017).
                PERFORM pgmig._raise_blocked(v_entry.version, v_entry.name, v_entry.sql, v_lock_ms, p_ctx.caller_path,
                                             p_ctx.data, p_transaction, p_ctx.committed);
            END IF;
            GET STACKED DIAGNOSTICS v_message = MESSAGE_TEXT;
            PERFORM pgmig._raise_explained('migration', v_entry.version, v_entry.name, v_state, v_message, p_ctx.commit_points);
        ELSIF v_state = 'PM008' THEN
            -- The guard refused the recording: this call runs inside a migration (a nested
            -- migrate_apply), whose executor names it.
            RAISE;
        ELSE
            -- Recording failed: a migration of this transaction altered pgmig.history.
            RAISE EXCEPTION USING
                ERRCODE = 'PM005',
                MESSAGE = format('pgmig: recording the applied migrations failed (%s): one of the migrations of this transaction altered pgmig.history: %s; nothing was applied',
                                 v_message,
                                 (SELECT string_agg(CASE WHEN e.version IS NULL THEN 'repeatable ' || left(e.name, 100)
                                                                  ELSE format('%s (%s)', e.version, left(e.name, 100)) END, ', ' ORDER BY e.version)
                                  FROM unnest(p_plan) WITH ORDINALITY AS e
                                  JOIN unnest(durations) WITH ORDINALITY AS t(d, o) ON t.o = e.ordinality
                                  WHERE t.d IS NOT NULL)),
                DETAIL = format('PostgreSQL said: %s (SQLSTATE %s)', v_message, v_state),
                HINT = 'Migrations must not touch pgmig''s own objects.';
        END IF;
        RAISE;
    END;
END
$fn$;

-- A pgmig NOTICE: the message for people, and with notices => 'json' a DETAIL for programs
-- (RAISE refuses a NULL option, hence the two forms). Nothing when nobody listens.
CREATE OR REPLACE FUNCTION pgmig._notice(p_code text, p_message text, p_detail jsonb, p_mode text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path TO pg_catalog, pg_temp
AS $fn$
-- (Volatile although it reads nothing: sending a notice is its effect.)
-- @plpgsql_check_options: performance_warnings = false
BEGIN
    IF p_mode = 'json' THEN
        RAISE NOTICE USING ERRCODE = p_code, MESSAGE = p_message, DETAIL = p_detail::text;
    ELSIF p_mode = 'text' THEN
        RAISE NOTICE USING ERRCODE = p_code, MESSAGE = p_message;
    END IF;
END
$fn$;

-- Whether anybody takes this call's progress notices: RAISE formats its message even when
-- nobody will get it, so the engine skips them when neither the client nor the server log
-- takes NOTICE, or the caller asked for none.
CREATE OR REPLACE FUNCTION pgmig._notices_mode(p_notices text)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path TO pg_catalog, pg_temp
AS $fn$
BEGIN
    IF p_notices IS NULL OR p_notices NOT IN ('text', 'json', 'none') THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM001',
            MESSAGE = format('pgmig: notices must be ''text'', ''json'' or ''none'', got %s', coalesce(quote_literal(p_notices), 'NULL'));
    END IF;
    IF current_setting('client_min_messages') IN ('warning', 'error')
       AND current_setting('log_min_messages') NOT IN ('debug5', 'debug4', 'debug3', 'debug2', 'debug1', 'info', 'notice') THEN
        RETURN 'none';
    END IF;
    RETURN p_notices;
END
$fn$;

-- notices => 'none': nobody wants to hear from this call, the migrations' own notices
-- included (each costs a client reading them; a Go client ~30 µs). The engine's warnings that
-- name a failure still get through. Sets client_min_messages = warning for the transaction and
-- returns the value to put back when the call ends (NULL: nothing to put back).
CREATE OR REPLACE FUNCTION pgmig._quiet(p_notices text)
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path TO pg_catalog, pg_temp
AS $fn$
DECLARE
    v_was text := current_setting('client_min_messages');
BEGIN
    IF p_notices IS DISTINCT FROM 'none' OR v_was IN ('warning', 'error') THEN
        RETURN NULL;
    END IF;
    PERFORM set_config('client_min_messages', 'warning', true);
    RETURN v_was;
END
$fn$;

CREATE OR REPLACE FUNCTION pgmig._unquiet(p_was text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path TO pg_catalog, pg_temp
AS $fn$
BEGIN
    IF p_was IS NOT NULL THEN
        PERFORM set_config('client_min_messages', p_was, true);
    END IF;
END
$fn$;

-- The context of one call of the engine (see pgmig.call_context). p_lock_budget NULL means
-- p_default_budget, 0 means none. p_scope is checked already (_scope): the migrations of a
-- tenant scope run with its schema first in their search_path. p_ddl_lock_timeout: the
-- lock_timeout for the migrations' own statements (NULL: the session's; PM001 out of
-- lock_timeout's range); the batch's per-migration overrides are added once it is validated
-- (_batch_lock_timeouts).
CREATE OR REPLACE FUNCTION pgmig._call_context(p_caller_path text, p_caller_role text, p_client_application text,
                                               p_client_info text, p_notices text, p_lock_budget integer,
                                               p_default_budget integer, p_max_per_transaction integer,
                                               p_run_mode boolean, p_capture_failure boolean, p_scope text,
                                               p_ddl_lock_timeout interval DEFAULT NULL)
RETURNS pgmig.call_context
LANGUAGE plpgsql STABLE
SET search_path TO pg_catalog, pg_temp
AS $fn$
DECLARE
    v_ctx pgmig.call_context;
BEGIN
    v_ctx.caller_path := pgmig._scope_path(p_scope, p_caller_path);
    v_ctx.scope := p_scope;
    v_ctx.caller_role := p_caller_role;
    v_ctx.settings := pgmig._settings();
    v_ctx.client_info := p_client_info;
    v_ctx.client_application := p_client_application;
    v_ctx.notices := pgmig._notices_mode(coalesce(p_notices, 'text'));
    v_ctx.data := coalesce(p_notices, 'text') <> 'text';
    v_ctx.lock_budget := CASE WHEN p_lock_budget IS NULL THEN p_default_budget WHEN p_lock_budget > 0 THEN p_lock_budget END;
    v_ctx.max_per_transaction := p_max_per_transaction;
    v_ctx.run_mode := p_run_mode;
    v_ctx.committed := 0;
    v_ctx.capture_failure := coalesce(p_capture_failure, false);
    PERFORM pgmig._ddl_lock_ms(p_ddl_lock_timeout);
    v_ctx.ddl_lock_timeout := p_ddl_lock_timeout;
    v_ctx.rehearse := false;
    RETURN v_ctx;
END
$fn$;

-- Raises what keeps a plan from running (not in a dry run): pending versions that carry no
-- SQL (PM001), pending non-transactional migrations (PM005; p_hint says what to run instead);
-- then tells the caller when the database is ahead of the batch (PM011).
CREATE OR REPLACE FUNCTION pgmig._assert_runnable(p_manifest_only text, p_non_transactional text, p_ahead text,
                                                  p_dry_run boolean, p_nontx_hint text, p_notices text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path TO pg_catalog, pg_temp
AS $fn$
BEGIN
    IF NOT p_dry_run AND p_manifest_only IS NOT NULL THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM001',
            MESSAGE = format('pgmig: versions %s are pending but the batch carries only their checksum; nothing was applied', p_manifest_only),
            HINT = 'Send the full batch (with "sql") to apply them.';
    END IF;
    IF NOT p_dry_run AND p_non_transactional IS NOT NULL THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM005',
            MESSAGE = format('pgmig: non-transactional migrations are pending: %s; nothing was applied', p_non_transactional),
            DETAIL = 'A migration marked "transactional": false (tern: ---- tern: disable-tx ----) runs statements that PostgreSQL refuses inside a transaction, a function or a procedure, so the engine cannot run it.',
            HINT = 'Apply the batch with `pgmig push`, which runs such migrations from the client under the same lock. ' || p_nontx_hint;
    END IF;
    IF p_ahead IS NOT NULL THEN
        PERFORM pgmig._notice('PM011', format('pgmig: the database is ahead of this batch: versions %s are applied but newer than every migration in it', p_ahead),
                              jsonb_build_object('ahead', string_to_array(p_ahead, ', ')::bigint[]), p_notices);
    END IF;
END
$fn$;

-- Raises PM001 for option values no call accepts.
CREATE OR REPLACE FUNCTION pgmig._assert_options(p_target bigint, p_lock_budget integer, p_max_per_transaction integer)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path TO pg_catalog, pg_temp
AS $fn$
BEGIN
    IF p_target < 1 THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM001',
            MESSAGE = format('pgmig: target_version must be at least 1, got %s', p_target);
    END IF;
    IF p_lock_budget < 0 THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM001',
            MESSAGE = format('pgmig: lock_budget must be at least 1 (or 0 for none), got %s', p_lock_budget);
    END IF;
    IF p_max_per_transaction < 1 THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM001',
            MESSAGE = format('pgmig: max_per_transaction must be at least 1, got %s', p_max_per_transaction);
    END IF;
END
$fn$;

-- The outcome of a plan entry as callers see it: the engine's own for a versioned migration;
-- for a repeatable one (no version) 'repeatable_applied', 'repeatable_pending' (to apply, not
-- applied by this call), 'repeatable_unchanged' (applied with this checksum, not run again) or
-- 'repeatable_missing' (recorded, not in the batch).
CREATE OR REPLACE FUNCTION pgmig._outcome(p_version bigint, p_outcome text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path TO pg_catalog, pg_temp
AS $fn$
SELECT CASE WHEN p_version IS NOT NULL THEN p_outcome
            WHEN p_outcome IN ('pending', 'beyond_target') THEN 'repeatable_pending'
            WHEN p_outcome = 'already_applied' THEN 'repeatable_unchanged'
            ELSE 'repeatable_' || p_outcome END
$fn$;

-- The versions and checksums of p_versions/p_checksums (what a transaction ran, _ran) that
-- are versioned migrations: what it wrote to pgmig.history (repeatable ones have no version).
CREATE OR REPLACE FUNCTION pgmig._versioned(p_versions bigint[], p_checksums text[],
                                            OUT versions bigint[], OUT checksums text[], OUT count bigint)
LANGUAGE sql IMMUTABLE
SET search_path TO pg_catalog, pg_temp
AS $fn$
SELECT coalesce(array_agg(u.v ORDER BY u.o), '{}'), coalesce(array_agg(u.c ORDER BY u.o), '{}'), count(*)
FROM unnest(p_versions, p_checksums) WITH ORDINALITY AS u(v, c, o)
WHERE u.v IS NOT NULL
$fn$;

-- The result rows of migrate_apply (and of a dry run) from a plan: outcome 'applied' with
-- start and duration where this call applied the entry.
CREATE OR REPLACE FUNCTION pgmig._result_rows(p_plan pgmig.plan_entry[], p_started timestamptz[], p_durations interval[])
RETURNS TABLE (version bigint, name text, outcome text, duration interval, applied_at timestamptz)
LANGUAGE sql IMMUTABLE
SET search_path TO pg_catalog, pg_temp
AS $fn$
SELECT e.version, e.name,
       pgmig._outcome(e.version, CASE WHEN t.d IS NOT NULL THEN 'applied' ELSE e.outcome END),
       t.d, coalesce(t.at, e.applied_at)
FROM unnest(p_plan) WITH ORDINALITY AS e
LEFT JOIN unnest(p_started, p_durations) WITH ORDINALITY AS t(at, d, o) ON t.o = e.ordinality
ORDER BY e.ordinality
$fn$;

-- The engine: see docs/sql-api.md, "migrate_apply". Runs in the caller's transaction.
CREATE OR REPLACE FUNCTION pgmig._apply(
    p_batch              jsonb,
    p_target_version     bigint,
    p_lock_timeout       interval,
    p_allow_out_of_order boolean,
    p_allow_missing      boolean,
    p_dry_run            boolean,
    p_client_info        text,
    p_lock_budget        integer,
    p_notices            text,
    p_scope              text,
    p_ddl_lock_timeout   interval DEFAULT NULL)
RETURNS TABLE (version bigint, name text, outcome text, duration interval, applied_at timestamptz)
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
AS $fn$
#variable_conflict use_column
DECLARE
    -- The migrations run with the caller's search_path and role; the bookkeeping must not
    -- resolve a single name through them (a hostile public."=" or sha256() would otherwise
    -- decide what is recorded). So capture them with schema-qualified calls only, then pin
    -- search_path before evaluating anything else.
    v_caller_path text := pg_catalog.current_setting('search_path');
    v_caller_role text := pg_catalog.current_setting('role');
    v_app         text := pg_catalog.current_setting('application_name');
    v_ctx         pgmig.call_context;
    v_plan        record;
    v_run         record;
    v_digest      text;
    v_batch_start timestamptz;
    v_quiet       text;   -- client_min_messages to put back after notices => 'none'
    v_scope       text;
    v_session     pgmig.session_state;    -- the caller's session, put back before returning
    v_integrity   pgmig.integrity_state;  -- pgmig's objects after the lock, checked before returning
    v_ran         record;
    v_written     record;   -- what the migrations that ran wrote to the history (_versioned)
BEGIN
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    v_session := pgmig._session_snapshot(v_caller_path);
    v_batch_start := clock_timestamp();
    PERFORM pgmig._assert_can_migrate('migrate_apply');
    PERFORM pgmig._assert_options(p_target_version, p_lock_budget, NULL);
    v_scope := pgmig._scope(p_scope);
    v_ctx := pgmig._call_context(v_caller_path, v_caller_role, v_app, p_client_info, p_notices, p_lock_budget,
                                 NULL, NULL, false, false, v_scope, p_ddl_lock_timeout);
    v_ctx.session := v_session;
    v_quiet := pgmig._quiet(p_notices);
    -- Compared after every migration: with notices => 'none' quiet (the migrations' own notices too).
    v_ctx.settings := pgmig._settings();
    -- Shape errors need no history: reject them before queueing for the lock.
    PERFORM pgmig._assert_well_formed(p_batch);
    v_ctx.lock_timeouts := pgmig._batch_lock_timeouts(p_batch);

    PERFORM pgmig._lock_history(p_lock_timeout, v_scope);
    PERFORM pgmig._assert_no_interrupted(v_scope);

    -- From here on the history cannot change under us, and (READ COMMITTED) each statement
    -- below sees everything committed before the lock was granted.
    -- Racing migrators of the same batch: the history digest equal to the batch's proves
    -- that exactly these migrations are applied, unchanged; nothing else to read.
    v_digest := pgmig._history_digest(v_scope);
    IF v_digest <> pgmig._empty_digest() AND v_digest = pgmig._batch_digest(p_batch) THEN
        RETURN QUERY
            SELECT x.version, x.name, x.outcome, x.duration, x.applied_at FROM (
                SELECT b.version, b.name, 'already_applied'::text AS outcome, NULL::interval AS duration, h.applied_at
                FROM pgmig._batch_rows(p_batch) AS b JOIN pgmig.history AS h ON h.scope = v_scope AND h.version = b.version
                UNION ALL
                SELECT NULL::bigint, r.name, 'repeatable_unchanged'::text, NULL::interval, r.applied_at
                FROM pgmig._repeatable_state(v_scope) AS r) AS x
            ORDER BY x.version, x.name COLLATE "C";
        PERFORM pgmig._unquiet(v_quiet);
        PERFORM pgmig._unpin_search_path(v_session);
        RETURN;
    END IF;

    SELECT * INTO v_plan FROM pgmig._read_plan(p_batch, p_target_version, p_allow_out_of_order, p_allow_missing, v_scope);
    IF v_plan.drift THEN
        PERFORM pgmig._assert_no_drift(p_batch, p_allow_out_of_order, p_allow_missing, 'nothing was applied', v_ctx.data, v_scope);
    END IF;
    PERFORM pgmig._assert_runnable(v_plan.manifest_only, v_plan.non_transactional, v_plan.ahead, p_dry_run,
        'From SQL: apply the migrations below it (target_version => the one before), then run its statements yourself '
        || 'outside a transaction, then record it with migrate_baseline or continue with pgmig push.', v_ctx.notices);

    IF p_dry_run OR v_plan.to_apply = 0 THEN
        RETURN QUERY SELECT * FROM pgmig._result_rows(v_plan.plan, NULL, NULL);
        PERFORM pgmig._unquiet(v_quiet);
        PERFORM pgmig._unpin_search_path(v_session);
        RETURN;
    END IF;

    v_ctx.commit_points := v_plan.commit_points;
    v_ctx.total := v_plan.to_apply;
    v_integrity := pgmig._integrity_snapshot(v_scope);
    SELECT * INTO v_run FROM pgmig._execute_plan(v_plan.plan, 1, v_ctx, 1);

    IF v_run.done > 0 THEN
        SELECT * INTO v_ran FROM pgmig._ran(v_plan.plan, v_run.durations);
        -- pgmig._functions_digest() inlined: a migration run as the owner may have replaced
        -- the checkers called below; this body is the one PostgreSQL keeps for this call.
        IF ARRAY(SELECT p.xmin FROM pg_proc AS p
                 WHERE p.pronamespace = to_regnamespace('pgmig') AND p.proname >= '_' AND p.proname < '`'
                 ORDER BY p.oid) IS DISTINCT FROM v_integrity.functions THEN
            -- (Raised here, not by a function a migration could have replaced too.)
            RAISE EXCEPTION USING
                ERRCODE = 'PM013',
                MESSAGE = format('pgmig: the bookkeeping was tampered with during this call by %s; nothing was applied',
                                 pgmig._suspects(v_ran.versions, v_ran.names)),
                DETAIL = 'pgmig''s own functions, its checkers among them, were replaced or altered (CREATE OR REPLACE or ALTER FUNCTION in schema pgmig).',
                HINT = 'Migrations must not touch pgmig''s own objects (schema pgmig).';
        END IF;
        PERFORM pgmig._session_restore(v_session, v_ran.versions, v_ran.names);
        SELECT * INTO v_written FROM pgmig._versioned(v_ran.versions, v_ran.checksums);
        PERFORM pgmig._assert_intact(v_integrity, v_ran.versions, v_ran.names, v_written.count, v_written.versions, v_written.checksums);
        PERFORM pgmig._notice('PM012',
            format('pgmig: applied %s migration%s in %s%s', v_run.done,
                             CASE WHEN v_run.done > 1 THEN 's' ELSE '' END,
                             date_trunc('milliseconds', clock_timestamp() - v_batch_start),
                             CASE WHEN v_run.stopped = 'lock_budget'
                                  THEN format('; stopped at the lock budget (%s locks), %s still pending: commit and call again',
                                              p_lock_budget, v_plan.to_apply - v_run.done)
                                  ELSE '' END),
            jsonb_build_object('applied', v_run.done, 'pending', v_plan.to_apply - v_run.done, 'stopped', v_run.stopped),
            v_ctx.notices);
    END IF;
    RETURN QUERY SELECT * FROM pgmig._result_rows(v_plan.plan, v_run.started, v_run.durations);
    PERFORM pgmig._unquiet(v_quiet);
    PERFORM pgmig._unpin_search_path(v_session);
END
$fn$;
