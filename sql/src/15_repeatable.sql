-- Repeatable migrations (added in 0.2.0): views, functions, grants that are applied again
-- whenever their SQL changes (Flyway's R__ files, a repeatable/ directory in the other
-- formats). A batch entry {"repeatable": true, "name": ..., "sql": ...} has no version; the
-- engine applies it, under the history lock, after every versioned migration of the batch and
-- in the same transaction as the last of them, when its checksum differs from the one
-- recorded last for its name (or it was never applied), in name order (docs/sql-api.md,
-- "Repeatable migrations").
--
-- Append-only, like the history: each application is a new row, and the current state of a
-- name is its newest row. So the engine never updates a row (the guard of pgmig's tables,
-- _history_guard, needs no exception for it: migrations cannot write it, and UPDATE, DELETE
-- and TRUNCATE need pgmig.maintenance as for the history), and every version of a view that
-- was ever applied stays on record, with who applied it and when.
CREATE TABLE IF NOT EXISTS pgmig.repeatable (
    id                 bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    scope              text        NOT NULL DEFAULT '',
    name               text        NOT NULL CHECK (name <> ''),
    checksum           text        NOT NULL CHECK (checksum ~ '^[0-9a-f]{64}$'),
    sql                text,
    applied_at         timestamptz NOT NULL,
    applied_by         text        NOT NULL,
    login_role         text        NOT NULL,
    client_application text,
    client_addr        inet,
    client_info        text,
    backend_pid        integer,
    duration           interval    NOT NULL,
    engine_version     text        NOT NULL
);
COMMENT ON TABLE pgmig.repeatable IS 'One row per application of a repeatable migration; the newest row of a (scope, name) is its current state.';
COMMENT ON COLUMN pgmig.repeatable.checksum IS 'lowercase hex sha256 of the UTF-8 bytes of sql';
CREATE INDEX IF NOT EXISTS repeatable_scope_name_id ON pgmig.repeatable (scope, name, id);
REVOKE ALL ON pgmig.repeatable FROM PUBLIC;

-- Upgrading (or installing into a database whose roles were granted the history before this
-- table existed): whoever could write the history can record repeatables, whoever could read
-- it can read them. Only while nobody but the owner has a grant on the table yet, so that a
-- deliberate REVOKE later is not undone by the next install.
DO $pgmig$
DECLARE
    r record;
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_class AS c CROSS JOIN LATERAL pg_catalog.aclexplode(c.relacl) AS a
               WHERE c.oid = 'pgmig.repeatable'::pg_catalog.regclass AND a.grantee <> c.relowner) THEN
        RETURN;
    END IF;
    FOR r IN SELECT a.grantee::pg_catalog.regrole::text AS grantee,
                    bool_or(a.privilege_type = 'INSERT') AS writes
             FROM pg_catalog.pg_class AS c CROSS JOIN LATERAL pg_catalog.aclexplode(c.relacl) AS a
             WHERE c.oid = 'pgmig.history'::pg_catalog.regclass AND a.privilege_type IN ('SELECT', 'INSERT')
               AND a.grantee <> 0 AND a.grantee <> c.relowner
             GROUP BY a.grantee LOOP
        EXECUTE pg_catalog.format('GRANT %s ON pgmig.repeatable TO %s',
                                  CASE WHEN r.writes THEN 'SELECT, INSERT' ELSE 'SELECT' END, r.grantee);
    END LOOP;
END
$pgmig$;

-- How a migration is named in messages: 'migration 42 (add_users)', or for a repeatable one
-- (no version) 'repeatable migration warehouse_view'. p_what replaces 'migration' ('rollback
-- of migration'). (The executor also runs the deferred constraint checks, named as such.)
CREATE OR REPLACE FUNCTION pgmig._what(p_version bigint, p_name text, p_what text DEFAULT 'migration')
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path TO pg_catalog, pg_temp
AS $fn$
SELECT CASE WHEN p_version IS NOT NULL THEN format('%s %s (%s)', p_what, p_version, p_name)
            WHEN p_name = 'deferred constraints and triggers' THEN 'the ' || p_name
            ELSE format('repeatable %s %s', p_what, p_name) END
$fn$;

-- The current state of every repeatable migration of scope p_scope: the newest row per name.
CREATE OR REPLACE FUNCTION pgmig._repeatable_state(p_scope text)
RETURNS SETOF pgmig.repeatable
LANGUAGE sql STABLE
SET search_path TO pg_catalog, pg_temp
AS $fn$
SELECT DISTINCT ON (r.name) r.*
FROM pgmig.repeatable AS r
WHERE r.scope = p_scope
ORDER BY r.name, r.id DESC
$fn$;

-- The one way rows get into pgmig.repeatable (see _record_history): one row per repeatable
-- migration this transaction applied. Raises PM005 when the table did not take exactly these
-- rows (a rule or trigger a migration planted would be refused by _assert_intact too; this
-- names the symptom at once).
CREATE OR REPLACE FUNCTION pgmig._record_repeatables(p_rows pgmig.history_entry[], p_client_info text,
                                                     p_client_application text, p_scope text)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path TO pg_catalog, pg_temp
AS $fn$
DECLARE
    v_count bigint;
BEGIN
    INSERT INTO pgmig.repeatable (scope, name, checksum, sql, applied_at, applied_by, login_role, client_application,
                                  client_addr, client_info, backend_pid, duration, engine_version)
    SELECT p_scope, r.name, r.checksum, r.sql, r.applied_at, current_user, session_user, p_client_application,
           inet_client_addr(), p_client_info, coalesce(r.backend_pid, pg_backend_pid()),
           coalesce(r.duration, interval '0'), pgmig.engine_version()
    FROM unnest(p_rows) AS r;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    IF v_count IS DISTINCT FROM cardinality(p_rows)::bigint THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM005',
            MESSAGE = format('pgmig: recording the applied repeatable migrations wrote %s rows instead of %s; nothing was applied',
                             v_count, cardinality(p_rows)),
            HINT = 'Something altered pgmig.repeatable (a rule or a trigger): reinstall the engine.';
    END IF;
    PERFORM pg_notify('pgmig_history', p_scope);
    RETURN v_count;
END
$fn$;
