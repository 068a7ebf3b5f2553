DO $pgmig$ BEGIN PERFORM pgmig._drop_if_changed('pgmig._plan(jsonb,bigint,boolean,boolean)', NULL); END $pgmig$;

-- What migrate_apply / migrate_run would do with this batch and these options, without taking
-- the lock: the same plan (_read_plan) against the committed history as of now. Cheap enough
-- for "is anything pending?" checks with a manifest (versions and checksums only); the answer
-- may be stale by the time the caller acts on it, which is fine because the engine re-checks
-- under the lock. Drift raises PM002 like migrate_apply, or, with p_report_drift, is reported
-- in the rows (drift: the kinds, detail: one sentence per problem); down_differs marks an
-- applied version whose down SQL in the batch is not the recorded one. step numbers the
-- transactions migrate_run would use as far as the batch decides them: a commit_after
-- migration ends one, a non-transactional migration is a step of its own (the lock budget may
-- cut more, which only running can tell). Repeatable migrations follow the versioned ones
-- (version NULL, name order) with outcome 'repeatable_pending', 'repeatable_unchanged' or
-- 'repeatable_missing' (recorded, not in the batch), in the step of the last versioned one.
CREATE OR REPLACE FUNCTION pgmig._plan(
    p_batch              jsonb,
    p_target_version     bigint,
    p_allow_out_of_order boolean,
    p_allow_missing      boolean,
    p_report_drift       boolean,
    p_scope              text)
RETURNS TABLE (version bigint, name text, label text, outcome text, applied_at timestamptz,
               transactional boolean, commit_after boolean, step integer, drift text, detail text,
               down_differs boolean)
LANGUAGE plpgsql STABLE
SET search_path TO pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
    v_plan  record;
    v_drift jsonb := '{}'::jsonb;
    v_downs jsonb;
    v_entry pgmig.plan_entry;
    v_step  integer := 1;
    v_open  boolean := false;   -- the current step has a pending migration
    v_scope text := pgmig._scope(p_scope);
BEGIN
    PERFORM pgmig._assert_options(p_target_version, NULL, NULL);
    PERFORM pgmig._assert_well_formed(p_batch);
    SELECT * INTO v_plan FROM pgmig._read_plan(p_batch, p_target_version, p_allow_out_of_order, p_allow_missing, v_scope);
    IF v_plan.drift AND NOT p_report_drift THEN
        PERFORM pgmig._assert_no_drift(p_batch, p_allow_out_of_order, p_allow_missing, NULL, false, v_scope);
    END IF;
    IF v_plan.drift THEN
        SELECT jsonb_object_agg(x.version::text, jsonb_build_object('kinds', x.kinds, 'problems', x.problems))
          INTO v_drift
          FROM (SELECT d.version, string_agg(d.kind, ',' ORDER BY d.kind) AS kinds,
                       string_agg(d.problem, '; ' ORDER BY d.kind) AS problems
                FROM pgmig._drift_problems(p_batch, p_allow_out_of_order, p_allow_missing, v_scope) AS d
                GROUP BY d.version) AS x;
    END IF;
    -- Applied versions whose down SQL in the batch is not the recorded one (a down section
    -- added or fixed after the migration was applied): migrate_repair records it.
    SELECT coalesce(jsonb_object_agg(b.version::text, true), '{}'::jsonb) INTO v_downs
      FROM pgmig._batch_rows(p_batch) AS b JOIN pgmig.history AS h ON h.scope = v_scope AND h.version = b.version
     WHERE b.down_sql IS NOT NULL AND b.down_sql IS DISTINCT FROM h.down_sql;
    FOREACH v_entry IN ARRAY coalesce(v_plan.plan, '{}') LOOP
        version := v_entry.version;
        name := v_entry.name;
        label := v_entry.label;
        outcome := pgmig._outcome(v_entry.version, v_entry.outcome);
        applied_at := v_entry.applied_at;
        transactional := v_entry.transactional;
        commit_after := v_entry.commit_after;
        step := NULL;
        IF v_entry.outcome = 'pending' THEN
            IF NOT v_entry.transactional THEN
                IF v_open THEN
                    v_step := v_step + 1;
                END IF;
                step := v_step;
                v_step := v_step + 1;
                v_open := false;
            ELSE
                step := v_step;
                v_open := true;
                IF v_entry.commit_after THEN
                    v_step := v_step + 1;
                    v_open := false;
                END IF;
            END IF;
        END IF;
        drift := v_drift->v_entry.version::text->>'kinds';
        detail := v_drift->v_entry.version::text->>'problems';
        down_differs := coalesce(v_downs ? v_entry.version::text, false);
        RETURN NEXT;
    END LOOP;
END
$fn$;

-- The history, then the repeatable migrations as last applied (state 'repeatable'), plus,
-- when a migrator holds the lock right now, one 'in_progress' row naming it
-- (and the migration it is applying, with how long it has been at it), and one row per
-- non-transactional migration started and not recorded. Reads take ACCESS SHARE, which
-- EXCLUSIVE does not block: status never waits for a running migration. p_scope is checked
-- already (_scope).
CREATE OR REPLACE FUNCTION pgmig._status(p_scope text)
RETURNS TABLE (version bigint, name text, label text, state text, applied_at timestamptz, applied_by text,
               client text, duration interval, checksum text, detail text)
LANGUAGE sql STABLE
SET search_path TO pg_catalog, pg_temp
AS $fn$
SELECT * FROM (
    SELECT h.version, h.name, h.label, h.kind, h.applied_at, h.applied_by,
           nullif(concat_ws(' ', h.client_application, host(h.client_addr), h.client_info), ''),
           h.duration, h.checksum, NULL::text
    FROM pgmig.history AS h
    WHERE h.scope = p_scope
    ORDER BY h.version
) AS applied
UNION ALL
-- Repeatable migrations as last applied (state 'repeatable'), in name order.
SELECT * FROM (
    SELECT NULL::bigint, r.name, NULL::text, 'repeatable', r.applied_at, r.applied_by,
           nullif(concat_ws(' ', r.client_application, host(r.client_addr), r.client_info), ''),
           r.duration, r.checksum,
           format('applied %s time%s', n.times, CASE WHEN n.times > 1 THEN 's' ELSE '' END)
    FROM pgmig._repeatable_state(p_scope) AS r
    CROSS JOIN LATERAL (SELECT count(*) AS times FROM pgmig.repeatable AS x WHERE x.scope = p_scope AND x.name = r.name) AS n
    ORDER BY r.name COLLATE "C"
) AS repeatables
UNION ALL
-- Non-transactional migrations started and not recorded: running (their holder has the lock),
-- failed, or interrupted (the client died).
SELECT r.version, r.name, NULL::text,
       CASE WHEN r.state = 'failed' THEN 'failed'
            WHEN EXISTS (SELECT FROM pgmig._lock_holder(p_scope)) THEN 'running'
            -- The client is gone but its statement still runs (a concurrent index build
            -- goes on until it notices the closed connection, or to the end).
            WHEN EXISTS (SELECT FROM pg_stat_activity AS a WHERE a.pid = r.pid AND a.pid <> pg_backend_pid() AND a.state = 'active') THEN 'orphaned'
            ELSE 'interrupted' END,
       r.started_at, r.by_role, r.client_info, r.updated_at - r.started_at, r.checksum,
       format('%s of %s statements done%s%s', r.statements_done, r.statements,
              CASE WHEN r.current_statement IS NOT NULL THEN '; at: ' || left(r.current_statement, 200) ELSE '' END,
              CASE WHEN r.error IS NOT NULL THEN '; error: ' || r.error ELSE '' END)
FROM pgmig.nontx_run AS r
WHERE r.scope = p_scope
UNION ALL
-- The engine names the migration it is applying in the holder's application_name
-- ('pgmig: applying <version> @<epoch ms> <the caller's application_name>', see _execute_plan).
SELECT m.version, NULL::text, NULL::text, 'in_progress', l.since, l.role,
       nullif(concat_ws(' ', CASE WHEN m.version IS NULL THEN l.application_name ELSE nullif(m.app, '') END, host(l.client_addr)), ''),
       clock_timestamp() - l.since, NULL::text,
       CASE WHEN l.pid IS NULL THEN 'a prepared transaction holds the lock'
            WHEN m.version IS NOT NULL
                 THEN format('applying version %s for %s; pid %s', m.version,
                             date_trunc('milliseconds', clock_timestamp() - m.started), l.pid)
            ELSE format('pid %s (%s): %s', l.pid, coalesce(l.state, '?'), coalesce(left(l.query, 200), '?')) END
FROM pgmig._lock_holder(p_scope) AS l
LEFT JOIN LATERAL (
    SELECT x[1]::bigint AS version, to_timestamp(x[2]::bigint / 1000.0) AS started, x[3] AS app
    FROM regexp_match(l.application_name, '^pgmig: applying ([0-9]+) @([0-9]+) ?(.*)$') AS x
) AS m ON true
$fn$;

-- A digest of the applied history: lowercase hex sha256 over one line per history row in
-- version order, "<version>\t<name>\t<checksum>\n". A client that computes the same digest
-- over its migration files learns in one tiny query, without uploading anything or taking
-- the lock, that exactly its migrations are applied and nothing drifted (the common "nothing
-- to do" case at every service start). Any difference means: call the engine.
-- Repeatable migrations follow, one line each in name order (byte order),
-- "R\t<name>\t<checksum>\n" with the checksum recorded last: so a changed repeatable file
-- changes the files' digest too (see _batch_digest).
CREATE OR REPLACE FUNCTION pgmig._history_digest(p_scope text)
RETURNS text
LANGUAGE sql STABLE
SET search_path TO pg_catalog, pg_temp
AS $fn$
SELECT encode(sha256(convert_to(
           coalesce((SELECT string_agg(h.version::text || E'\t' || h.name || E'\t' || h.checksum || E'\n', '' ORDER BY h.version)
                     FROM pgmig.history AS h WHERE h.scope = p_scope), '')
        || coalesce((SELECT string_agg('R' || E'\t' || r.name || E'\t' || r.checksum || E'\n', '' ORDER BY r.name COLLATE "C")
                     FROM pgmig._repeatable_state(p_scope) AS r), ''),
        'UTF8')), 'hex')
$fn$;

-- The digest of an empty history (sha256 of nothing).
CREATE OR REPLACE FUNCTION pgmig._empty_digest()
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $fn$ SELECT 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855'::text $fn$;
