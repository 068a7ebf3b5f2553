-- Staged releases: migrate_stage stores a validated batch under a label (pgmig.staged);
-- CALL migrate_run_staged(label) applies it later exactly as CALL migrate_run(batch) would, from
-- whatever can send one statement: a GUI, psql, pg_cron. Staging and running are separate
-- privileges (docs/admin-tooling.md): staging needs INSERT on pgmig.staged and SELECT on the
-- history, running needs what migrating needs plus UPDATE on pgmig.staged.
--
-- What became of a release is recorded with it, durably, also when the run fails: migrate_run
-- (pgmig._run) is a procedure that commits by itself, and no caller can catch an error raised
-- inside it and still commit, so a failing migration comes back from _run as data
-- (p_capture_failure) with its transaction rolled back and the history lock still held; the
-- failure is recorded and committed, then raised, so that the caller (pg_cron's
-- cron.job_run_details, psql) sees the error too. The checks that stop a run before anything is
-- applied (drift, an interrupted non-transactional migration...) are made once more here, before
-- _run, where they can be caught and recorded the same way. Anything else that ends a run (a
-- lock timeout, the session killed, statement_timeout) leaves the run marked as started and not
-- finished: migrate_staged() reports it as 'interrupted'.

-- Raises PM001 unless p_label is a usable label: it is typed into cron jobs and GUIs, so a
-- conservative character set that never needs quoting beyond the SQL literal.
CREATE OR REPLACE FUNCTION pgmig._assert_label(p_label text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path TO pg_catalog, pg_temp
AS $fn$
BEGIN
    IF p_label IS NULL OR p_label !~ '^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$' THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM001',
            MESSAGE = format('pgmig: invalid staged release label %s', coalesce(quote_literal(left(p_label, 200)), 'NULL')),
            HINT = 'A label is 1 to 128 characters from A-Z a-z 0-9 . _ : / @ + -, starting with a letter or a digit (e.g. v1.4.0, release-2026-03-01, build/1234).';
    END IF;
END
$fn$;

-- The integrity of pgmig.staged, whoever writes to it (a stager may hold INSERT on the table
-- itself): on INSERT everything but the label, the batch and client_info is derived here -- the
-- digest, the counts, who staged it, when and from where, a pending state -- so that none of it
-- can be forged; on UPDATE what was staged never changes (PM021), only what became of it.
CREATE OR REPLACE FUNCTION pgmig._staged_guard()
RETURNS trigger
LANGUAGE plpgsql
SET search_path TO pg_catalog, pg_temp
AS $fn$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM pgmig._assert_well_formed(NEW.batch);
        NEW.digest := pgmig._batch_digest(NEW.batch);
        NEW.migrations := jsonb_array_length(NEW.batch);
        NEW.first_version := (SELECT min(b.version) FROM pgmig._batch_rows(NEW.batch) AS b);
        NEW.last_version := (SELECT max(b.version) FROM pgmig._batch_rows(NEW.batch) AS b);
        NEW.staged_at := clock_timestamp();
        NEW.staged_by := current_user::text;
        NEW.login_role := session_user::text;
        NEW.client_application := current_setting('application_name');
        NEW.client_addr := inet_client_addr();
        NEW.state := 'pending';
        NEW.attempts := 0;
        NEW.run_pid := NULL;
        NEW.run_started_at := NULL;
        NEW.run_by := NULL;
        NEW.finished_at := NULL;
        NEW.applied := 0;
        NEW.applied_at := NULL;
        NEW.applied_by := NULL;
        NEW.result := NULL;
        NEW.failure := NULL;
        RETURN NEW;
    END IF;
    IF (NEW.label, NEW.batch, NEW.digest, NEW.migrations, NEW.first_version, NEW.last_version, NEW.staged_at,
        NEW.staged_by, NEW.login_role, NEW.client_application, NEW.client_addr, NEW.client_info)
       IS DISTINCT FROM
       (OLD.label, OLD.batch, OLD.digest, OLD.migrations, OLD.first_version, OLD.last_version, OLD.staged_at,
        OLD.staged_by, OLD.login_role, OLD.client_application, OLD.client_addr, OLD.client_info) THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM021',
            MESSAGE = format('pgmig: staged release %s cannot change; only what became of it is recorded', OLD.label),
            HINT = 'A staged release never changes: stage the new batch under a new label.';
    END IF;
    RETURN NEW;
END
$fn$;

DO $pgmig$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_trigger
                   WHERE tgrelid = 'pgmig.staged'::pg_catalog.regclass AND tgname = 'staged_guard') THEN
        CREATE TRIGGER staged_guard
            BEFORE INSERT OR UPDATE ON pgmig.staged
            FOR EACH ROW EXECUTE FUNCTION pgmig._staged_guard();
    END IF;
END
$pgmig$;

-- migrate_stage: see docs/admin-tooling.md. Validates the batch as migrate_run would if it ran
-- now (shape, drift, pending entries without SQL, pending non-transactional migrations), against
-- the committed history and without the lock, as migrate_plan does: the run checks again under
-- the lock. Staging the same label again with an equal batch changes nothing; with another
-- batch it is refused (PM021): a staged release never changes, so what an operator reviewed is
-- what runs.
CREATE OR REPLACE FUNCTION pgmig._stage(p_batch jsonb, p_label text, p_client_info text)
RETURNS TABLE (label text, outcome text, state text, migrations integer, pending bigint, digest text,
               staged_at timestamptz, staged_by text)
LANGUAGE plpgsql VOLATILE
SET search_path TO pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
    v_plan record;
    v_row  pgmig.staged;
BEGIN
    PERFORM pgmig._assert_label(p_label);
    PERFORM pgmig._assert_well_formed(p_batch);
    IF jsonb_array_length(p_batch) = 0 THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM001',
            MESSAGE = format('pgmig: the batch for staged release %s is empty; nothing was staged', p_label);
    END IF;
    SELECT * INTO v_plan FROM pgmig._read_plan(p_batch, NULL, false, false, '');
    IF v_plan.drift THEN
        PERFORM pgmig._assert_no_drift(p_batch, false, false, 'nothing was staged', false, '');
    END IF;
    IF v_plan.manifest_only IS NOT NULL THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM001',
            MESSAGE = format('pgmig: versions %s are pending but the batch carries only their checksum; nothing was staged', v_plan.manifest_only),
            HINT = 'Stage the full batch (with "sql"): pgmig stage sends it.';
    END IF;
    IF v_plan.non_transactional IS NOT NULL THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM005',
            MESSAGE = format('pgmig: non-transactional migrations are pending: %s; nothing was staged', v_plan.non_transactional),
            DETAIL = 'A migration marked "transactional": false (tern: ---- tern: disable-tx ----) runs statements that PostgreSQL refuses inside a transaction or a procedure, so migrate_run_staged cannot run it.',
            HINT = 'Apply those with `pgmig push` (it runs them from the client under the same lock), then stage the rest.';
    END IF;

    -- (_staged_guard derives every other column.)
    INSERT INTO pgmig.staged AS s (label, batch, client_info)
    VALUES (p_label, p_batch, p_client_info)
    ON CONFLICT (label) DO NOTHING
    RETURNING * INTO v_row;
    IF v_row.label IS NOT NULL THEN
        outcome := 'staged';
    ELSE
        -- Staged before (or by a racing stager, whose INSERT this one waited for).
        SELECT * INTO v_row FROM pgmig.staged AS s WHERE s.label = p_label;
        IF v_row.batch <> p_batch THEN
            RAISE EXCEPTION USING
                ERRCODE = 'PM021',
                MESSAGE = format('pgmig: staged release %s already exists with another batch; nothing was staged', p_label),
                DETAIL = format('%s was staged on %s by %s: %s migrations (versions %s to %s), history digest %s; this batch has history digest %s.',
                                p_label, v_row.staged_at, v_row.staged_by, v_row.migrations, v_row.first_version,
                                v_row.last_version, v_row.digest, pgmig._batch_digest(p_batch)),
                HINT = 'A staged release never changes: stage this batch under a new label.';
        END IF;
        outcome := 'already_staged';
    END IF;
    label := v_row.label;
    state := v_row.state;
    migrations := v_row.migrations;
    pending := v_plan.to_apply;
    digest := v_row.digest;
    staged_at := v_row.staged_at;
    staged_by := v_row.staged_by;
    RETURN NEXT;
END
$fn$;

-- Records a failed run of staged release p_label: p_failure is the error as data (from _run's
-- p_result->'failed', or from the checks of _run_staged), p_result what the run reports.
CREATE OR REPLACE FUNCTION pgmig._staged_failed(p_label text, p_failure jsonb, p_result jsonb)
RETURNS void
LANGUAGE sql VOLATILE
SET search_path TO pg_catalog, pg_temp
AS $fn$
UPDATE pgmig.staged AS s
   SET state = 'failed',
       run_pid = NULL,
       finished_at = clock_timestamp(),
       applied = s.applied + coalesce((p_result->>'applied')::integer, 0),
       result = p_result,
       failure = p_failure || jsonb_build_object('at', clock_timestamp(), 'by', current_user,
                                                 'committed', coalesce((p_result->>'applied')::integer, 0))
 WHERE s.label = p_label
$fn$;

-- Raises the recorded failure of staged release p_label as the run's error: the original
-- SQLSTATE, a message naming the release and the failing migration, the original detail and
-- hint. With a migration to name, the PM010 WARNING that precedes every failing migration's
-- error comes first, as from migrate_run (with a JSON DETAIL for programs when p_notices asks).
CREATE OR REPLACE FUNCTION pgmig._raise_staged_failure(p_label text, p_failure jsonb, p_notices text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path TO pg_catalog, pg_temp
AS $fn$
DECLARE
    v_committed integer := coalesce((p_failure->>'committed')::integer, 0);
    v_outcome   text;
BEGIN
    v_outcome := CASE WHEN v_committed > 0
                      THEN format('nothing of its transaction was applied (%s migration%s committed earlier by this run stay applied)',
                                  v_committed, CASE WHEN v_committed > 1 THEN 's' ELSE '' END)
                      ELSE 'nothing was applied' END;
    IF p_failure ? 'version' THEN
        IF coalesce(p_notices, 'text') <> 'text' THEN
            RAISE WARNING USING
                ERRCODE = 'PM010',
                MESSAGE = format('pgmig: migration %s (%s) failed with SQLSTATE %s; %s', p_failure->>'version', p_failure->>'name',
                                 p_failure->>'sqlstate', v_outcome),
                DETAIL = jsonb_build_object('version', (p_failure->>'version')::bigint, 'name', p_failure->>'name',
                                            'sqlstate', p_failure->>'sqlstate', 'transaction', (p_failure->>'transaction')::integer,
                                            'committed', v_committed, 'label', p_label)::text;
        ELSE
            RAISE WARNING USING
                ERRCODE = 'PM010',
                MESSAGE = format('pgmig: migration %s (%s) failed with SQLSTATE %s; %s', p_failure->>'version', p_failure->>'name',
                                 p_failure->>'sqlstate', v_outcome);
        END IF;
    END IF;
    RAISE EXCEPTION USING
        ERRCODE = p_failure->>'sqlstate',
        -- (pgmig's own messages start with "pgmig: " already)
        MESSAGE = CASE WHEN p_failure ? 'version'
                       THEN format('pgmig: staged release %s failed at migration %s (%s): %s', p_label,
                                   p_failure->>'version', p_failure->>'name', regexp_replace(p_failure->>'message', '^pgmig: ', ''))
                       ELSE format('pgmig: staged release %s failed: %s', p_label, regexp_replace(p_failure->>'message', '^pgmig: ', '')) END,
        DETAIL = concat_ws(E'\n', p_failure->>'detail',
                           CASE WHEN v_committed > 0
                                THEN format('Its transaction was rolled back; the %s migration%s committed earlier by this run stay applied.',
                                            v_committed, CASE WHEN v_committed > 1 THEN 's' ELSE '' END)
                                ELSE 'Nothing was applied.' END
                           || ' The failure is recorded with the release: select * from migrate_staged().'),
        HINT = coalesce(p_failure->>'hint',
                        'Fix the cause and run it again, or stage corrected migration files under a new label (a staged release never changes).');
END
$fn$;

-- migrate_run_staged: see docs/admin-tooling.md. A procedure (it commits), and therefore
-- without a SET search_path clause, which PostgreSQL forbids in a procedure that commits: the
-- path is pinned by hand, after every COMMIT, and only qualified names are used before that.
CREATE OR REPLACE PROCEDURE pgmig._run_staged(
    p_label        text,
    p_lock_timeout interval,
    p_notices      text,
    INOUT p_result jsonb)
LANGUAGE plpgsql
AS $fn$
DECLARE
    -- Captured with schema-qualified calls only (see _apply); the migrations run with it.
    v_caller_path text := pg_catalog.current_setting('search_path');
    v_notices     text := coalesce(p_notices, 'text');
    v_rel         pgmig.staged;
    v_plan        record;
    v_result      jsonb;
    v_failed      jsonb;
    v_state       text;
    v_message     text;
    v_detail      text;
    v_hint        text;
    v_applied     integer;
    -- _run's arguments, as variables of its parameters' types (CALL resolves nothing else)
    v_info        text;
    v_no_target   bigint;
    v_no_limit    integer;
    v_false       boolean := false;
    v_true        boolean := true;
BEGIN
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    SELECT * INTO v_rel FROM pgmig.staged AS s WHERE s.label = p_label;
    IF NOT FOUND THEN
        PERFORM pgmig._assert_label(p_label);
        RAISE EXCEPTION USING
            ERRCODE = 'PM021',
            MESSAGE = format('pgmig: no staged release is labelled %s; nothing was applied', quote_literal(p_label)),
            DETAIL = coalesce('Staged releases, newest first: '
                              || (SELECT string_agg(x.label || ' (' || x.state || ')', ', ' ORDER BY x.staged_at DESC)
                                  FROM (SELECT s.label, s.state, s.staged_at FROM pgmig.staged AS s
                                        ORDER BY s.staged_at DESC LIMIT 10) AS x),
                              'No release is staged in this database.'),
            HINT = 'select * from migrate_staged() lists them; `pgmig stage --label L` (or migrate_stage(batch, label)) stages one.';
    END IF;
    IF v_rel.state = 'applied' THEN
        -- Once applied, a release is done: a schedule left behind, or a second operator, must not
        -- apply it again after someone deliberately rolled some of it back.
        PERFORM pgmig._notice('PM012',
            format('pgmig: staged release %s was applied on %s by %s; nothing to do', p_label, v_rel.applied_at, v_rel.applied_by),
            jsonb_build_object('label', p_label, 'state', 'applied', 'applied', 0), pgmig._notices_mode(v_notices));
        p_result := jsonb_build_object('label', p_label, 'state', 'applied', 'applied', 0,
                                       'applied_at', v_rel.applied_at, 'applied_by', v_rel.applied_by,
                                       'version', (SELECT max(h.version) FROM pgmig.history AS h WHERE h.scope = ''));
        PERFORM pg_catalog.set_config('search_path', v_caller_path, true);
        RETURN;
    END IF;

    -- The checks that would stop the run before anything is applied, made here where their
    -- error can be recorded (see the top of this file). Without the lock: _run makes them again
    -- under it.
    BEGIN
        PERFORM pgmig._assert_no_interrupted('');
        SELECT * INTO v_plan FROM pgmig._read_plan(v_rel.batch, NULL, false, false, '');
        IF v_plan.drift THEN
            PERFORM pgmig._assert_no_drift(v_rel.batch, false, false, 'nothing was applied', false, '');
        END IF;
        IF v_plan.manifest_only IS NOT NULL THEN
            RAISE EXCEPTION USING
                ERRCODE = 'PM001',
                MESSAGE = format('pgmig: versions %s are pending but the batch carries only their checksum; nothing was applied', v_plan.manifest_only);
        END IF;
        IF v_plan.non_transactional IS NOT NULL THEN
            RAISE EXCEPTION USING
                ERRCODE = 'PM005',
                MESSAGE = format('pgmig: non-transactional migrations are pending: %s; nothing was applied', v_plan.non_transactional),
                HINT = 'Apply them with `pgmig push`, which runs them from the client under the same lock; then run the staged release again.';
        END IF;
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT,
                                v_detail = PG_EXCEPTION_DETAIL, v_hint = PG_EXCEPTION_HINT;
        v_failed := jsonb_strip_nulls(jsonb_build_object('phase', 'check', 'sqlstate', v_state, 'message', v_message,
                                                         'detail', nullif(v_detail, ''), 'hint', nullif(v_hint, '')));
    END;
    IF v_failed IS NOT NULL THEN
        UPDATE pgmig.staged AS s SET attempts = s.attempts + 1, run_started_at = clock_timestamp(), run_by = current_user
         WHERE s.label = p_label;
        PERFORM pgmig._staged_failed(p_label, v_failed, NULL);
        COMMIT;
        PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
        PERFORM pgmig._raise_staged_failure(p_label, v_failed, v_notices);
    END IF;

    -- Started: committed together with _run's first COMMIT, before it waits for the lock. If the
    -- run ends without recording an outcome, this is what migrate_staged() shows.
    UPDATE pgmig.staged AS s
       SET run_pid = pg_backend_pid(), run_started_at = clock_timestamp(), run_by = current_user,
           attempts = s.attempts + 1
     WHERE s.label = p_label;
    v_info := format('pgmig staged release %s (staged by %s)', p_label, v_rel.staged_by);
    -- _run takes the caller's search_path for the migrations from the session as it finds it.
    PERFORM pg_catalog.set_config('search_path', v_caller_path, true);
    CALL pgmig._run(v_rel.batch, v_no_target, p_lock_timeout, v_false, v_false, v_false, v_info, v_no_limit,
                    v_no_limit, v_false, v_notices, v_false, v_result, v_true, '');
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);

    v_applied := coalesce((v_result->>'applied')::integer, 0);
    v_failed := nullif(v_result->'failed', 'null'::jsonb);
    IF v_failed IS NOT NULL THEN
        -- The failing transaction was rolled back; this one still holds the history lock, so the
        -- failure is recorded before any other migrator can run.
        PERFORM pgmig._staged_failed(p_label, v_failed, v_result);
        COMMIT;
        PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
        PERFORM pgmig._raise_staged_failure(p_label, v_failed || jsonb_build_object('committed', v_applied), v_notices);
    END IF;

    -- Applied (possibly by a racing migrator: then this run applied nothing, and whoever applied
    -- something keeps the credit).
    UPDATE pgmig.staged AS s
       SET state = 'applied',
           run_pid = NULL,
           finished_at = clock_timestamp(),
           applied = s.applied + v_applied,
           applied_at = CASE WHEN s.applied_at IS NULL OR (s.applied = 0 AND v_applied > 0) THEN clock_timestamp() ELSE s.applied_at END,
           applied_by = CASE WHEN s.applied_at IS NULL OR (s.applied = 0 AND v_applied > 0) THEN current_user ELSE s.applied_by END,
           result = v_result
     WHERE s.label = p_label
    RETURNING * INTO v_rel;
    PERFORM pgmig._notice('PM012',
        format('pgmig: staged release %s is applied: this run applied %s of its %s migration%s; the database is at version %s',
               p_label, v_applied, v_rel.migrations, CASE WHEN v_rel.migrations > 1 THEN 's' ELSE '' END,
               coalesce(v_result->>'version', 'none')),
        jsonb_build_object('label', p_label, 'state', 'applied', 'applied', v_applied), pgmig._notices_mode(v_notices));
    p_result := v_result || jsonb_build_object('label', p_label, 'state', 'applied',
                                               'applied_at', v_rel.applied_at, 'applied_by', v_rel.applied_by);
    PERFORM pg_catalog.set_config('search_path', v_caller_path, true);
END
$fn$;

-- migrate_staged: every staged release and what became of it, newest first. state is
-- 'pending' (never run), 'running' (its session is running it now), 'applied', 'failed' (the
-- last run failed: error names the SQLSTATE and message, failed_version/failed_name the
-- migration when one failed), or 'interrupted' (a run started and ended without recording an
-- outcome: its session died, or an error it could not catch, such as a lock timeout, stopped
-- it; the caller saw the error: cron.job_run_details, the server log). Sessions of other roles
-- whose state the caller may not see (pg_read_all_stats) count as running.
CREATE OR REPLACE FUNCTION pgmig._staged()
RETURNS TABLE (label text, state text, migrations integer, first_version bigint, last_version bigint,
               digest text, staged_at timestamptz, staged_by text, attempts integer, applied integer,
               applied_at timestamptz, applied_by text, last_run_at timestamptz, last_run_by text,
               failed_version bigint, failed_name text, error text, detail text)
LANGUAGE sql STABLE
SET search_path TO pg_catalog, pg_temp
AS $fn$
SELECT s.label, x.state, s.migrations, s.first_version, s.last_version, s.digest, s.staged_at, s.staged_by,
       s.attempts, s.applied, s.applied_at, s.applied_by, s.run_started_at, s.run_by,
       CASE WHEN x.state = 'failed' THEN (s.failure->>'version')::bigint END,
       CASE WHEN x.state = 'failed' THEN s.failure->>'name' END,
       CASE WHEN x.state = 'failed' THEN format('%s: %s', s.failure->>'sqlstate', s.failure->>'message') END,
       CASE x.state
           WHEN 'pending' THEN format('staged, not run yet; %s migrations, versions %s to %s', s.migrations, s.first_version, s.last_version)
           WHEN 'running' THEN format('being run by %s since %s (pid %s)', s.run_by, s.run_started_at, s.run_pid)
           WHEN 'interrupted' THEN format('the run started on %s by %s (pid %s) ended without recording an outcome: its session ended, or an error such as a lock timeout stopped it (see cron.job_run_details or the server log); run it again',
                                          s.run_started_at, s.run_by, s.run_pid)
           WHEN 'applied' THEN format('its runs applied %s of its %s migrations (the others were applied already)', s.applied, s.migrations)
           ELSE concat_ws(E'\n', s.failure->>'detail',
                          format('failed on %s by %s after %s attempt%s', s.failure->>'at', s.failure->>'by', s.attempts,
                                 CASE WHEN s.attempts > 1 THEN 's' ELSE '' END),
                          CASE WHEN (s.failure->>'committed')::integer > 0
                               THEN format('%s migrations committed earlier by that run stay applied', s.failure->>'committed') END)
       END
FROM pgmig.staged AS s
CROSS JOIN LATERAL (
    SELECT CASE WHEN s.run_pid IS NULL THEN s.state
                WHEN EXISTS (SELECT FROM pg_stat_activity AS a
                             WHERE a.pid = s.run_pid AND a.pid <> pg_backend_pid()
                               AND a.backend_start <= s.run_started_at
                               AND a.state IS DISTINCT FROM 'idle') THEN 'running'
                ELSE 'interrupted' END AS state
) AS x
ORDER BY s.staged_at DESC, s.label
$fn$;
