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
-- message: what did not happen because of it.
CREATE OR REPLACE FUNCTION pgmig._assert_no_drift(p_batch jsonb, p_allow_out_of_order boolean,
                                                  p_allow_missing boolean, p_outcome text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path TO pg_catalog, pg_temp
AS $fn$
DECLARE
    v_count    bigint;
    v_versions text;
    v_detail   text;
BEGIN
    SELECT count(*), string_agg(DISTINCT d.version::text, ', '), string_agg(d.problem, E'\n' ORDER BY d.version)
      INTO v_count, v_versions, v_detail
      FROM pgmig._drift_problems(p_batch, p_allow_out_of_order, p_allow_missing) AS d;
    IF v_count > 0 THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM002',
            MESSAGE = format('pgmig: the batch does not match the applied history (versions %s)%s', v_versions,
                             coalesce('; ' || p_outcome, '')),
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

-- Takes the history lock (EXCLUSIVE: excludes other migrators and writers, not readers),
-- waiting at most p_lock_timeout (NULL: the session's lock_timeout; 0: do not wait).
-- On timeout raises PM003 naming the holder.
CREATE OR REPLACE FUNCTION pgmig._lock_history(p_lock_timeout interval)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path TO pg_catalog, pg_temp
AS $fn$
DECLARE
    v_saved text := current_setting('lock_timeout');
BEGIN
    IF p_lock_timeout < interval '0' THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM001',
            MESSAGE = format('pgmig: lock_timeout must not be negative, got %s', p_lock_timeout);
    END IF;
    IF p_lock_timeout IS NOT NULL THEN
        -- lock_timeout = 0 means "wait forever" to PostgreSQL; a zero interval here means
        -- "do not wait", so ask for at least 1 ms.
        PERFORM set_config('lock_timeout',
                           greatest(1, ceil(extract(epoch FROM p_lock_timeout) * 1000))::bigint::text || 'ms',
                           true);
    END IF;
    -- Queueing here would hold this statement's snapshot while waiting. A concurrent index
    -- build run by a non-transactional migration waits for every transaction with an older
    -- snapshot, and that build is what the lock holder is waiting for: nobody would move until
    -- a timeout. So when the holder is running a non-transactional migration, do not queue.
    -- (`pgmig push` takes the lock before calling this, and while a non-transactional
    -- migration runs it waits by retrying LOCK TABLE ... NOWAIT, holding nothing in between.)
    BEGIN
        LOCK TABLE pgmig.history IN EXCLUSIVE MODE NOWAIT;
        PERFORM set_config('lock_timeout', v_saved, true);
        RETURN;
    EXCEPTION WHEN lock_not_available THEN
        IF EXISTS (SELECT FROM pgmig.nontx_run AS r WHERE r.state = 'running')
           OR EXISTS (SELECT FROM pgmig._lock_holder() AS h
                      WHERE h.application_name LIKE 'pgmig: non-transactional migration %') THEN
            RAISE EXCEPTION USING
                ERRCODE = 'PM003',
                MESSAGE = 'pgmig: another migrator is running a non-transactional migration; not waiting for it from inside a statement',
                DETAIL = 'held by ' || coalesce(pgmig._lock_holder_text(), 'a session this role cannot see')
                      || coalesce(E'\nrunning: ' || (SELECT string_agg(format('version %s (%s), statement %s of %s', r.version, r.name,
                                                                     r.statements_done + 1, r.statements), '; ')
                                             FROM pgmig.nontx_run AS r WHERE r.state = 'running'), ''),
                HINT = 'Waiting inside a statement would hold a snapshot that its CREATE INDEX CONCURRENTLY must wait for. Retry when it has finished, or use `pgmig push`, which waits without a snapshot.';
        END IF;
    END;
    BEGIN
        LOCK TABLE pgmig.history IN EXCLUSIVE MODE;
    EXCEPTION WHEN lock_not_available THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM003',
            MESSAGE = format('pgmig: another migrator holds the migration lock (%s)',
                             CASE WHEN p_lock_timeout = interval '0' THEN 'did not wait'
                                  WHEN p_lock_timeout IS NOT NULL THEN 'waited ' || p_lock_timeout::text
                                  ELSE 'waited lock_timeout = ' || v_saved END),
            DETAIL = 'held by ' || coalesce(pgmig._lock_holder_text(),
                     'a session this role cannot see (grant pg_read_all_stats to see it)'),
            HINT = 'Wait for it to finish and run again: already applied migrations are skipped. migrate_status() shows who is migrating.';
    END;
    PERFORM set_config('lock_timeout', v_saved, true);
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

-- The engine: see docs/sql-api.md, "migrate_apply". Runs in the caller's transaction.
CREATE OR REPLACE FUNCTION pgmig._apply(
    p_batch              jsonb,
    p_target_version     bigint,
    p_lock_timeout       interval,
    p_allow_out_of_order boolean,
    p_allow_missing      boolean,
    p_dry_run            boolean,
    p_client_info        text,
    p_lock_budget        integer)
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
    v_safe_path   constant text := 'pg_catalog, pg_temp';
    v_settings    text[];
    v_drift       boolean;
    v_ignored     text;   -- the value of a call made for its effect (cheaper than PERFORM)
    v_progress    boolean;
    v_manifest_only   text;
    v_nontransactional text;
    v_total       bigint;
    v_done        bigint := 0;
    v_ahead       text;
    v_commit_points text;
    -- The plan, read once after the lock, one array element per row in version order:
    -- what is returned, what is run and what is recorded all come from these.
    v_version     bigint[];
    v_name        text[];
    v_outcome     text[];
    v_at          timestamptz[];
    v_duration    interval[];
    v_to_apply    boolean[];
    v_sql         text[];
    v_down        text[];
    v_tx          boolean[];
    v_checksum    text[];
    i             integer;
    v_started     timestamptz;
    v_batch_start timestamptz;
    v_cur_version bigint;
    v_cur_name    text;
    v_phase       text;
    v_state       text;
    v_message     text;
    -- p_lock_budget: locks held at the last count, and the most one migration added
    v_locks       integer;
    v_locks_prev  integer;
    v_done_prev   bigint := 0;
    v_growth      integer := 1;
    v_next_check  bigint := 1;
    v_stopped     boolean := false;
BEGIN
    PERFORM pg_catalog.set_config('search_path', v_safe_path, true);
    v_settings := pgmig._settings();
    v_batch_start := clock_timestamp();

    PERFORM pgmig._assert_can_migrate('migrate_apply');
    IF p_target_version IS NOT NULL AND p_target_version < 1 THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM001',
            MESSAGE = format('pgmig: target_version must be at least 1, got %s', p_target_version);
    END IF;
    IF p_lock_budget IS NOT NULL AND p_lock_budget < 1 THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM001',
            MESSAGE = format('pgmig: lock_budget must be at least 1, got %s', p_lock_budget);
    END IF;
    -- Shape errors need no history: reject them before queueing for the lock.
    PERFORM pgmig._assert_well_formed(p_batch);

    PERFORM pgmig._lock_history(p_lock_timeout);
    PERFORM pgmig._assert_no_interrupted();

    -- From here on the history cannot change under us, and (READ COMMITTED) each statement
    -- below sees everything committed before the lock was granted.
    -- One pass over the plan for everything the loop needs to know up front, including
    -- whether _drift_problems would find anything (its rules as one flag; the report itself
    -- is built only when it will be raised).
    SELECT coalesce(bool_or(p.outcome = 'already_applied'
                            AND (p.checksum <> p.recorded_checksum OR p.name <> p.recorded_name)), false)
           OR (NOT p_allow_missing AND coalesce(bool_or(p.outcome = 'missing'), false))
           OR (NOT p_allow_out_of_order AND coalesce(min(p.version) FILTER (WHERE p.outcome = 'pending')
                                                     < max(p.version) FILTER (WHERE p.outcome <> 'pending'), false)),
           count(*) FILTER (WHERE p.to_apply),
           string_agg(p.version::text, ', ' ORDER BY p.version) FILTER (WHERE p.to_apply AND p.sql IS NULL),
           string_agg(format('%s (%s)', p.version, left(p.name, 100)), ', ' ORDER BY p.version)
               FILTER (WHERE p.to_apply AND NOT p.transactional),
           string_agg(p.version::text, ', ' ORDER BY p.version) FILTER (WHERE p.outcome = 'ahead'),
           string_agg(p.version::text, ',' ORDER BY p.version) FILTER (WHERE p.to_apply AND p.commit_after),
           -- No ORDER BY here: each one would sort on its own (~4 µs per migration for the
           -- nine). _plan_rows returns its rows in version order and a plain aggregate over
           -- a function scan consumes them in that order; checked below, as SQL does not
           -- promise it.
           array_agg(p.version), array_agg(p.name), array_agg(p.outcome), array_agg(p.applied_at),
           array_agg(p.to_apply), array_agg(CASE WHEN p.to_apply THEN p.sql END),
           array_agg(CASE WHEN p.to_apply THEN p.down_sql END),
           array_agg(p.transactional), array_agg(p.checksum)
      INTO v_drift, v_total, v_manifest_only, v_nontransactional, v_ahead, v_commit_points,
           v_version, v_name, v_outcome, v_at, v_to_apply, v_sql, v_down, v_tx, v_checksum
      FROM (SELECT r.*, r.outcome = 'pending' AND (p_target_version IS NULL OR r.version <= p_target_version) AS to_apply
            FROM pgmig._plan_rows(p_batch) AS r) AS p;
    IF v_version IS DISTINCT FROM (SELECT array_agg(x ORDER BY x) FROM unnest(v_version) AS x) THEN
        SELECT array_agg(v_version[o] ORDER BY v_version[o]), array_agg(v_name[o] ORDER BY v_version[o]),
               array_agg(v_outcome[o] ORDER BY v_version[o]), array_agg(v_at[o] ORDER BY v_version[o]),
               array_agg(v_to_apply[o] ORDER BY v_version[o]), array_agg(v_sql[o] ORDER BY v_version[o]),
               array_agg(v_down[o] ORDER BY v_version[o]), array_agg(v_tx[o] ORDER BY v_version[o]),
               array_agg(v_checksum[o] ORDER BY v_version[o])
          INTO v_version, v_name, v_outcome, v_at, v_to_apply, v_sql, v_down, v_tx, v_checksum
          FROM generate_subscripts(v_version, 1) AS o;
    END IF;
    IF v_drift THEN
        PERFORM pgmig._assert_no_drift(p_batch, p_allow_out_of_order, p_allow_missing, 'nothing was applied');
    END IF;
    IF NOT p_dry_run AND v_manifest_only IS NOT NULL THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM001',
            MESSAGE = format('pgmig: versions %s are pending but the batch carries only their checksum; nothing was applied', v_manifest_only),
            HINT = 'Send the full batch (with "sql") to apply them.';
    END IF;
    IF NOT p_dry_run AND v_nontransactional IS NOT NULL THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM005',
            MESSAGE = format('pgmig: non-transactional migrations are pending: %s; nothing was applied', v_nontransactional),
            DETAIL = 'A migration marked "transactional": false (tern: ---- tern: disable-tx ----) runs statements that PostgreSQL refuses inside a transaction or a function, so migrate_apply cannot run it.',
            HINT = 'Apply the batch with `pgmig push`, which runs such migrations from the client under the same lock. '
                || 'From SQL: apply the migrations below it (target_version => the one before), then run its statements yourself '
                || 'outside a transaction, then record it with migrate_baseline or continue with pgmig push.';
    END IF;

    IF v_ahead IS NOT NULL THEN
        RAISE NOTICE USING
            ERRCODE = 'PM011',
            MESSAGE = format('pgmig: the database is ahead of this batch: versions %s are applied but newer than every migration in it', v_ahead);
    END IF;

    -- RAISE formats its message even when nobody will get it: skip the progress notices when
    -- neither the client nor the server log takes NOTICE (pgmig push without a progress
    -- display sets client_min_messages = warning for its transaction).
    v_progress := pg_catalog.current_setting('client_min_messages') NOT IN ('warning', 'error')
                  OR pg_catalog.current_setting('log_min_messages') IN ('debug5', 'debug4', 'debug3', 'debug2', 'debug1', 'info', 'notice');
    v_duration := array_fill(NULL::interval, ARRAY[coalesce(cardinality(v_version), 0)]);
    IF p_lock_budget IS NOT NULL THEN
        v_locks_prev := pgmig._locks_held();
    END IF;
    BEGIN
        FOR i IN 1 .. CASE WHEN p_dry_run THEN 0 ELSE coalesce(cardinality(v_version), 0) END LOOP
            CONTINUE WHEN NOT v_to_apply[i];
            -- Stopped at the lock budget: the rest stays 'pending' for the next call.
            EXIT WHEN v_stopped;
            v_done := v_done + 1;
            v_cur_version := v_version[i];
            v_cur_name := v_name[i];
            v_phase := 'migration';
            IF v_progress THEN
                RAISE NOTICE USING
                    ERRCODE = 'PM000',
                    MESSAGE = format('pgmig: applying version %s (%s/%s): %s', v_cur_version, v_done, v_total, v_cur_name);
            END IF;
            v_started := clock_timestamp();
            v_ignored := pgmig._execute_as_caller(v_sql[i], v_caller_path, v_caller_role, v_settings, v_cur_version, v_cur_name)::text;
            v_duration[i] := clock_timestamp() - v_started;
            v_at[i] := v_started;
            v_outcome[i] := 'applied';
            v_phase := NULL;

            -- Lock budget: stop after the migration that brings this transaction near it
            -- (the caller commits and calls again for the rest). Counting locks reads the
            -- whole lock table, so it is done only as often as the growth seen so far
            -- requires: halfway to the budget at that rate, then closer and closer.
            IF p_lock_budget IS NOT NULL AND v_done >= v_next_check AND v_done < v_total THEN
                v_locks := pgmig._locks_held();
                v_growth := greatest(v_growth, ceil((v_locks - v_locks_prev)::numeric / (v_done - v_done_prev))::integer);
                v_locks_prev := v_locks;
                v_done_prev := v_done;
                IF v_locks + v_growth > p_lock_budget THEN
                    v_stopped := true;
                ELSE
                    v_next_check := v_done + greatest(1, (p_lock_budget - v_locks) / (2 * v_growth));
                END IF;
            END IF;
        END LOOP;

        -- Recorded in one statement after the last migration rather than one INSERT each
        -- (~45 µs per migration, more than some migrations cost). Same transaction, so the
        -- outcome is identical; only a migration reading pgmig.history would notice that the
        -- batch's earlier entries are not there yet.
        IF v_done > 0 THEN
            v_phase := 'recording';
            INSERT INTO pgmig.history (version, name, checksum, sql, down_sql, transactional, kind,
                                       applied_at, applied_by, login_role, client_application,
                                       client_addr, client_info, backend_pid, duration, engine_version)
            SELECT u.version, u.name, u.checksum, u.sql, u.down_sql, u.transactional, 'applied',
                   u.started, current_user, session_user, current_setting('application_name'),
                   inet_client_addr(), p_client_info, pg_backend_pid(), u.duration,
                   pgmig.engine_version()
            FROM unnest(v_version, v_name, v_checksum, v_sql, v_down, v_tx, v_at, v_duration, v_outcome)
                 AS u(version, name, checksum, sql, down_sql, transactional, started, duration, outcome)
            WHERE u.outcome = 'applied';
        END IF;
    EXCEPTION WHEN OTHERS THEN
        -- Only errors of a migration or of its bookkeeping get here; the subtransaction of
        -- this block is already rolled back, so nothing of the batch survives. A bare RAISE
        -- re-throws the original error with its SQLSTATE, detail, hint and internal
        -- query/position intact (rebuilding it with RAISE ... USING would lose the position).
        IF v_phase IS NULL THEN
            RAISE;
        END IF;
        GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT;
        IF v_phase = 'migration' THEN
            -- The WARNING first, whatever error follows: it names the migration to a
            -- client that received no progress notices (client_min_messages = warning).
            RAISE WARNING USING
                ERRCODE = 'PM010',
                MESSAGE = format('pgmig: migration %s (%s) failed with SQLSTATE %s; nothing was applied',
                                 v_cur_version, v_cur_name, v_state);
            PERFORM pgmig._raise_explained('migration', v_cur_version, v_cur_name, v_state, v_message, v_commit_points);
        ELSE
            -- Recording failed: a migration of this call altered pgmig.history (checked once
            -- here rather than after every migration). Name them all.
            RAISE EXCEPTION USING
                ERRCODE = 'PM005',
                MESSAGE = format('pgmig: recording the applied migrations failed (%s): one of the migrations of this call altered pgmig.history: %s; nothing was applied',
                                 v_message,
                                 (SELECT string_agg(format('%s (%s)', u.version, left(u.name, 100)), ', ' ORDER BY u.version)
                                  FROM unnest(v_version, v_name, v_outcome) AS u(version, name, outcome)
                                  WHERE u.outcome = 'applied')),
                DETAIL = format('PostgreSQL said: %s (SQLSTATE %s)', v_message, v_state),
                HINT = 'Migrations must not touch pgmig''s own objects.';
        END IF;
        RAISE;
    END;

    IF v_done > 0 THEN
        RAISE NOTICE USING
            ERRCODE = 'PM012',
            MESSAGE = format('pgmig: applied %s migration%s in %s%s', v_done,
                             CASE WHEN v_done > 1 THEN 's' ELSE '' END,
                             date_trunc('milliseconds', clock_timestamp() - v_batch_start),
                             CASE WHEN v_stopped
                                  THEN format('; stopped at the lock budget (%s of %s locks held), %s still pending: commit and call again',
                                              v_locks, p_lock_budget, v_total - v_done)
                                  ELSE '' END);
    END IF;
    RETURN QUERY
        SELECT u.version, u.name, u.outcome, u.duration, u.applied_at
        FROM unnest(v_version, v_name, v_outcome, v_duration, v_at) AS u(version, name, outcome, duration, applied_at);
    PERFORM pg_catalog.set_config('search_path', v_caller_path, true);
END
$fn$;
