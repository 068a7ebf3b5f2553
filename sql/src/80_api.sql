-- The API: routines named migrate_*, installed twice. Once in schema pgmig, where only the
-- engine's owner can create objects, so that a qualified call (pgmig.migrate_apply(...)) runs
-- the engine whatever other roles create elsewhere; and once in the install's API schema
-- (default public) so that `select * from migrate_apply(...)` works with the default
-- search_path. Both are thin wrappers over pgmig internals, created here with format(%I)
-- because the API schema is chosen at install time (a literal schema in this file could not
-- follow the choice, and @extschema@ would not work for the plain script).
--
-- An API routine whose arguments or result change between versions is dropped first (its
-- grants are replayed by 99_replay_grants.sql), and any other routine of ours with an API name is
-- dropped as left over from an earlier version.
--
-- Calling the API safely (docs/sql-api.md): a role that can create objects in a schema on a
-- caller's search_path (the README's deploy role has CREATE on public) can create an overload
-- that PostgreSQL's function resolution prefers for an unqualified call, and a superuser who
-- then makes that call runs the role's code with superuser rights. Two defences: the API in
-- schema pgmig, where no other role can create anything, for qualified calls (which the docs,
-- the CLI and the library use); and, for the unqualified call with an untyped literal batch
-- (`select * from migrate_apply('[...]')`), a twin of each batch-taking routine that takes the
-- batch as text: an untyped literal resolves to the string category's preferred type, text,
-- so no overload another role creates (varchar, a domain, a longer argument list) can be a
-- better match, and an exact copy of the twin's signature only makes the call ambiguous.
CREATE OR REPLACE FUNCTION pgmig._api_routines()
RETURNS TABLE (name text, kind text, args text, identity text, result text, body text, volatility text, comment text)
LANGUAGE sql IMMUTABLE
AS $fn$
WITH base (name, kind, args, identity, result, body, volatility, comment) AS (
VALUES
    ('migrate_apply', 'f',
     'batch jsonb, target_version bigint DEFAULT NULL, lock_timeout interval DEFAULT NULL, '
     'allow_out_of_order boolean DEFAULT false, allow_missing boolean DEFAULT false, dry_run boolean DEFAULT false, '
     'client_info text DEFAULT NULL, lock_budget integer DEFAULT NULL, notices text DEFAULT ''text'', scope text DEFAULT NULL, '
     'ddl_lock_timeout interval DEFAULT NULL',
     'jsonb,bigint,interval,boolean,boolean,boolean,text,integer,text,text,interval',
     'TABLE(version bigint, name text, outcome text, duration interval, applied_at timestamp with time zone)',
     'SELECT * FROM pgmig._apply($1, $2, $3, coalesce($4, false), coalesce($5, false), coalesce($6, false), $7, $8, coalesce($9, ''text''), $10, $11)',
     'VOLATILE',
     'pgmig: lock the history, validate the batch against it, apply what is pending in one transaction'),
    ('migrate_run', 'p',
     'batch jsonb, target_version bigint DEFAULT NULL, lock_timeout interval DEFAULT NULL, '
     'allow_out_of_order boolean DEFAULT false, allow_missing boolean DEFAULT false, dry_run boolean DEFAULT false, '
     'client_info text DEFAULT NULL, lock_budget integer DEFAULT NULL, max_per_transaction integer DEFAULT NULL, '
     'stop_before_non_transactional boolean DEFAULT false, notices text DEFAULT ''text'', details boolean DEFAULT false, '
     'scope text DEFAULT NULL, ddl_lock_timeout interval DEFAULT NULL, INOUT result jsonb DEFAULT NULL',
     'jsonb,bigint,interval,boolean,boolean,boolean,text,integer,integer,boolean,text,boolean,text,interval,jsonb',
     NULL,
     'BEGIN CALL pgmig._run(batch, target_version, lock_timeout, coalesce(allow_out_of_order, false), coalesce(allow_missing, false), '
     'coalesce(dry_run, false), client_info, lock_budget, max_per_transaction, coalesce(stop_before_non_transactional, false), '
     'coalesce(notices, ''text''), coalesce(details, false), result, false, scope, ddl_lock_timeout); END',
     NULL,
     'pgmig: apply a whole batch in one statement, committing by itself at commit_after markers and near the lock budget'),
    ('migrate_plan', 'f',
     'batch jsonb, target_version bigint DEFAULT NULL, allow_out_of_order boolean DEFAULT false, '
     'allow_missing boolean DEFAULT false, report_drift boolean DEFAULT false, scope text DEFAULT NULL',
     'jsonb,bigint,boolean,boolean,boolean,text',
     'TABLE(version bigint, name text, label text, outcome text, applied_at timestamp with time zone, transactional boolean, commit_after boolean, step integer, drift text, detail text, down_differs boolean)',
     'SELECT * FROM pgmig._plan($1, $2, coalesce($3, false), coalesce($4, false), coalesce($5, false), $6)',
     'STABLE',
     'pgmig: what migrate_apply / migrate_run would do with this batch, without taking the lock'),
    ('migrate_rehearse', 'f',
     'batch jsonb, target_version bigint DEFAULT NULL, lock_timeout interval DEFAULT NULL, '
     'allow_out_of_order boolean DEFAULT false, allow_missing boolean DEFAULT false, '
     'ddl_lock_timeout interval DEFAULT ''1 second'', statement_timeout interval DEFAULT ''1 minute'', notices text DEFAULT ''text'', '
     'scope text DEFAULT NULL',
     'jsonb,bigint,interval,boolean,boolean,interval,interval,text,text',
     'TABLE(version bigint, name text, outcome text, duration interval, wal_bytes bigint, relations jsonb, note text)',
     'SELECT * FROM pgmig._rehearse($1, $2, $3, coalesce($4, false), coalesce($5, false), $6, $7, coalesce($8, ''text''), $9)',
     'VOLATILE',
     'pgmig: run the pending migrations for real under the lock, measure each (locks, rewrites, WAL, duration), roll everything back'),
    ('migrate_status', 'f', 'scope text DEFAULT NULL', 'text',
     'TABLE(version bigint, name text, label text, state text, applied_at timestamp with time zone, applied_by text, client text, duration interval, checksum text, detail text)',
     'SELECT * FROM pgmig._status(pgmig._scope($1))', 'STABLE',
     'pgmig: the migration history, plus who is migrating right now'),
    ('migrate_lock_holder', 'f', 'scope text DEFAULT NULL', 'text',
     'TABLE(pid integer, role text, application_name text, client_addr inet, since timestamp with time zone, state text, query text)',
     'SELECT * FROM pgmig._lock_holder(pgmig._scope($1))', 'STABLE',
     'pgmig: the session holding the migration lock, if any'),
    ('migrate_history_digest', 'f', 'scope text DEFAULT NULL', 'text', 'text',
     'SELECT pgmig._history_digest(pgmig._scope($1))', 'STABLE',
     'pgmig: sha256 over "version<TAB>name<TAB>checksum<LF>" of every applied migration, in version order'),
    ('migrate_scopes', 'f', '', '',
     'TABLE(scope text, version bigint, migrations bigint, last_applied_at timestamp with time zone)',
     'SELECT h.scope, max(h.version), count(*), max(h.applied_at) FROM pgmig.history AS h GROUP BY h.scope ORDER BY h.scope',
     'STABLE',
     'pgmig: every scope with a history (the default scope is ''''; tenant scopes by schema name), where it stands'),
    ('migrate_rollback', 'f',
     'to_version bigint, lock_timeout interval DEFAULT NULL, dry_run boolean DEFAULT false, client_info text DEFAULT NULL, '
     'notices text DEFAULT ''text'', stop_before_non_transactional boolean DEFAULT false, scope text DEFAULT NULL',
     'bigint,interval,boolean,text,text,boolean,text',
     'TABLE(version bigint, name text, outcome text, duration interval, applied_at timestamp with time zone)',
     'SELECT * FROM pgmig._rollback($1, $2, coalesce($3, false), $4, coalesce($5, ''text''), coalesce($6, false), $7)', 'VOLATILE',
     'pgmig: run the recorded down SQL of every version above to_version, newest first, in one transaction'),
    ('migrate_baseline', 'f',
     'batch jsonb, version bigint, lock_timeout interval DEFAULT NULL, client_info text DEFAULT NULL, scope text DEFAULT NULL',
     'jsonb,bigint,interval,text,text',
     'TABLE(version bigint, name text, outcome text, duration interval, applied_at timestamp with time zone)',
     'SELECT * FROM pgmig._baseline($1, $2, $3, $4, $5)', 'VOLATILE',
     'pgmig: record the batch''s versions up to version as applied without running them'),
    ('migrate_adopt', 'f',
     'batch jsonb, tool text, table_name text DEFAULT NULL, checksums jsonb DEFAULT NULL, drop_old boolean DEFAULT false, '
     'dry_run boolean DEFAULT false, lock_timeout interval DEFAULT NULL, client_info text DEFAULT NULL, scope text DEFAULT NULL',
     'jsonb,text,text,jsonb,boolean,boolean,interval,text,text',
     'TABLE(version bigint, name text, outcome text, duration interval, applied_at timestamp with time zone)',
     'SELECT * FROM pgmig._adopt($1, $2, $3, $4, coalesce($5, false), coalesce($6, false), $7, $8, $9)', 'VOLATILE',
     'pgmig: take over another tool''s history: record as applied, without running them, the migrations its history table says it applied, after checking that table against the batch'),
    ('migrate_repair', 'f',
     'batch jsonb, versions bigint[] DEFAULT NULL, lock_timeout interval DEFAULT NULL, client_info text DEFAULT NULL, scope text DEFAULT NULL',
     'jsonb,bigint[],interval,text,text',
     'TABLE(version bigint, name text, outcome text, duration interval, applied_at timestamp with time zone)',
     'SELECT * FROM pgmig._repair($1, $2, $3, $4, $5)', 'VOLATILE',
     'pgmig: accept deliberate edits of applied migrations (checksum, name, label, down SQL), audited'),
    ('migrate_resolve', 'f',
     'version bigint, action text, lock_timeout interval DEFAULT NULL, client_info text DEFAULT NULL, scope text DEFAULT NULL',
     'bigint,text,interval,text,text',
     'TABLE(version bigint, name text, outcome text, duration interval, applied_at timestamp with time zone)',
     'SELECT * FROM pgmig._resolve($1, $2, $3, $4, $5)', 'VOLATILE',
     'pgmig: after an interrupted non-transactional migration: retry it, or record it as applied'),
    -- Staged releases (56_stage.sql, docs/admin-tooling.md).
    ('migrate_stage', 'f',
     'batch jsonb, label text, client_info text DEFAULT NULL',
     'jsonb,text,text',
     'TABLE(label text, outcome text, state text, migrations integer, pending bigint, digest text, staged_at timestamp with time zone, staged_by text)',
     'SELECT * FROM pgmig._stage($1, $2, $3)', 'VOLATILE',
     'pgmig: store a validated batch under a label, for CALL migrate_run_staged(label) later'),
    ('migrate_run_staged', 'p',
     'label text, lock_timeout interval DEFAULT NULL, notices text DEFAULT ''text'', INOUT result jsonb DEFAULT NULL',
     'text,interval,text,jsonb',
     NULL,
     'BEGIN CALL pgmig._run_staged(label, lock_timeout, notices, result); END',
     NULL,
     'pgmig: apply a staged release exactly as migrate_run would, and record what became of it'),
    ('migrate_staged', 'f', '', '',
     'TABLE(label text, state text, migrations integer, first_version bigint, last_version bigint, digest text, staged_at timestamp with time zone, staged_by text, attempts integer, applied integer, applied_at timestamp with time zone, applied_by text, last_run_at timestamp with time zone, last_run_by text, failed_version bigint, failed_name text, error text, detail text)',
     'SELECT * FROM pgmig._staged()', 'STABLE',
     'pgmig: the staged releases and what became of each (pending, running, applied, failed, interrupted)')
), text_twins AS (
    -- the batch as text, cast to jsonb at once (positional bodies use $1, the procedure's its name)
    SELECT b.name, b.kind,
           'batch text' || substr(b.args, length('batch jsonb') + 1),
           'text' || substr(b.identity, length('jsonb') + 1),
           b.result,
           CASE WHEN b.kind = 'p' THEN replace(b.body, 'CALL pgmig._run(batch,', 'CALL pgmig._run(batch::jsonb,')
                ELSE replace(b.body, '($1,', '($1::jsonb,') END,
           b.volatility,
           b.comment || ' (batch as text: for an untyped literal)'
    FROM base AS b
    WHERE b.args LIKE 'batch jsonb%'
)
SELECT * FROM base
UNION ALL
SELECT * FROM text_twins
$fn$;

CREATE OR REPLACE FUNCTION pgmig._install_api(p_schema text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path TO pg_catalog, pg_temp
AS $fn$
-- (The DDL is spliced from _api_routines(), constants of this file; the schema with %I.)
-- @plpgsql_check_options: security_warnings = false
DECLARE
    v_owner oid := (SELECT n.nspowner FROM pg_namespace AS n WHERE n.nspname = 'pgmig');
    r       record;
BEGIN
    -- Ours with an API name, but not as this version defines it: a left-over signature, or a
    -- result that CREATE OR REPLACE cannot change.
    FOR r IN
        SELECT p.oid::regprocedure AS sig
        FROM pg_proc AS p
        LEFT JOIN pgmig._api_routines() AS a
               ON a.name = p.proname
              AND a.identity = coalesce(array_to_string(p.proargtypes::oid[]::regtype[], ','), '')
        WHERE p.pronamespace = p_schema::regnamespace
          AND p.proowner = v_owner
          AND p.proname IN (SELECT x.name FROM pgmig._api_routines() AS x)
          AND (a.name IS NULL OR a.kind <> p.prokind::text
               OR (a.kind = 'f' AND pg_get_function_result(p.oid) IS DISTINCT FROM a.result))
    LOOP
        EXECUTE format('DROP ROUTINE %s', r.sig);
    END LOOP;

    FOR r IN SELECT * FROM pgmig._api_routines() LOOP
        IF r.kind = 'p' THEN
            EXECUTE format('CREATE OR REPLACE PROCEDURE %I.%I(%s) LANGUAGE plpgsql SECURITY INVOKER AS %L',
                           p_schema, r.name, r.args, r.body);
        ELSE
            EXECUTE format('CREATE OR REPLACE FUNCTION %I.%I(%s) RETURNS %s LANGUAGE sql %s SECURITY INVOKER AS %L',
                           p_schema, r.name, r.args, r.result, r.volatility, r.body);
        END IF;
        -- Routines are created executable by PUBLIC; pgmig's are not.
        EXECUTE format('REVOKE ALL ON ROUTINE %I.%I(%s) FROM PUBLIC', p_schema, r.name, r.identity);
        EXECUTE format('COMMENT ON ROUTINE %I.%I(%s) IS %L', p_schema, r.name, r.identity, r.comment);
    END LOOP;
END
$fn$;

-- Routines named like the API that pgmig did not create (another owner), in any schema: an
-- unqualified call may resolve to one of them (see _api_routines). The install warns about
-- them; `pgmig status` shows them.
CREATE OR REPLACE FUNCTION pgmig.api_shadows()
RETURNS TABLE (routine text, owner text, schema_name text)
LANGUAGE sql STABLE
SET search_path TO pg_catalog, pg_temp
AS $fn$
SELECT p.oid::regprocedure::text, pg_get_userbyid(p.proowner)::text, n.nspname::text
FROM pg_proc AS p
JOIN pg_namespace AS n ON n.oid = p.pronamespace
WHERE p.proname IN (SELECT a.name FROM pgmig._api_routines() AS a)
  AND p.proowner <> (SELECT s.nspowner FROM pg_namespace AS s WHERE s.nspname = 'pgmig')
ORDER BY 3, 1
$fn$;
COMMENT ON FUNCTION pgmig.api_shadows() IS 'pgmig: routines named like the API that pgmig did not create (an unqualified call may resolve to them)';
