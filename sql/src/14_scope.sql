-- Scopes (added in 0.2.0): schema per tenant. The same migrations applied inside tenant schema
-- S have a history of their own — the rows of pgmig.history with scope = S — and a lock of
-- their own, so that tenants never wait for each other. The default scope ('') is the
-- database's own migrations, as before.
--
-- The lock of a scope: the default scope takes LOCK TABLE pgmig.history IN EXCLUSIVE MODE, as
-- always. A tenant scope takes LOCK TABLE pgmig.history IN ROW EXCLUSIVE MODE (which does not
-- conflict with itself, and does conflict with the default scope's EXCLUSIVE lock) and then
-- locks its own row of pgmig.scope with SELECT ... FOR UPDATE. Both are transaction locks,
-- taken before the history is read, released at commit; other tenants' rows are not touched.
-- So the default scope and the tenants exclude each other, and tenants exclude only a migrator
-- of the same tenant. Locking a row needs UPDATE on pgmig.scope: a role without privileges on
-- pgmig's tables cannot hold up a tenant's migrations (an advisory lock would let anyone).
-- Who holds a row lock is not visible from SQL when it was taken in a subtransaction (as the
-- engine does, to catch its lock timeout): so the holder also takes a shared transaction-level
-- advisory lock on the scope's key (_scope_key), a marker only — it never waits, excludes
-- nobody, and is released with the transaction — that names it in pg_locks.
ALTER TABLE pgmig.history ADD COLUMN IF NOT EXISTS scope text NOT NULL DEFAULT '';
ALTER TABLE pgmig.nontx_run ADD COLUMN IF NOT EXISTS scope text NOT NULL DEFAULT '';
ALTER TABLE pgmig.audit ADD COLUMN IF NOT EXISTS scope text NOT NULL DEFAULT '';
COMMENT ON COLUMN pgmig.history.scope IS 'the tenant schema this migration was applied in; '''' for the database''s own migrations';

DO $pgmig$
DECLARE
    t text;
BEGIN
    -- A version is applied once per scope: the primary keys become (scope, version).
    FOREACH t IN ARRAY ARRAY['history', 'nontx_run'] LOOP
        IF (SELECT array_agg(a.attname::text ORDER BY k.ord)
              FROM pg_catalog.pg_constraint AS c
              CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY AS k(attnum, ord)
              JOIN pg_catalog.pg_attribute AS a ON a.attrelid = c.conrelid AND a.attnum = k.attnum
             WHERE c.conrelid = pg_catalog.to_regclass('pgmig.' || t) AND c.contype = 'p') = ARRAY['version'] THEN
            EXECUTE pg_catalog.format('ALTER TABLE pgmig.%I DROP CONSTRAINT %I, ADD CONSTRAINT %I PRIMARY KEY (scope, version)',
                                      t, t || '_pkey', t || '_pkey');
        END IF;
    END LOOP;
END
$pgmig$;

DO $pgmig$
DECLARE
    r record;
BEGIN
    IF pg_catalog.to_regclass('pgmig.scope') IS NOT NULL THEN
        RETURN;
    END IF;
    CREATE TABLE pgmig.scope (
        name       text        NOT NULL PRIMARY KEY CHECK (name <> '' AND octet_length(name) <= 63),
        created_at timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
        created_by text        NOT NULL DEFAULT CURRENT_USER
    );
    COMMENT ON TABLE pgmig.scope IS 'One row per tenant scope: its lock (SELECT ... FOR UPDATE by the scope''s migrators).';
    REVOKE ALL ON pgmig.scope FROM PUBLIC;
    -- Upgrading: whoever could write the history can lock a scope.
    FOR r IN SELECT DISTINCT a.grantee::pg_catalog.regrole::text AS grantee
             FROM pg_catalog.pg_class AS c CROSS JOIN LATERAL pg_catalog.aclexplode(c.relacl) AS a
             WHERE c.oid = 'pgmig.history'::pg_catalog.regclass AND a.privilege_type = 'INSERT'
               AND a.grantee <> 0 AND a.grantee <> c.relowner LOOP
        EXECUTE pg_catalog.format('GRANT SELECT, INSERT, UPDATE ON pgmig.scope TO %s', r.grantee);
    END LOOP;
END
$pgmig$;

DO $pgmig$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_attribute
                   WHERE attrelid = 'pgmig.call_context'::pg_catalog.regclass AND attname = 'scope' AND NOT attisdropped) THEN
        ALTER TYPE pgmig.call_context ADD ATTRIBUTE scope text;   -- '' or the tenant schema
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_attribute
                   WHERE attrelid = 'pgmig.integrity_state'::pg_catalog.regclass AND attname = 'scope' AND NOT attisdropped) THEN
        -- the scope whose history rows history_rows counts (other tenants write theirs meanwhile)
        ALTER TYPE pgmig.integrity_state ADD ATTRIBUTE scope text;
    END IF;
END
$pgmig$;

-- The scope a caller asked for, checked: '' (the default scope) for NULL or '', else the tenant
-- schema's name exactly as given (case matters, as in "Tenant"). Raises PM001 for a name that
-- cannot be a tenant schema: pgmig's, the system's, or a schema holding pgmig's API functions
-- (the API schema is chosen at install; a scope names where migrations create their objects).
CREATE OR REPLACE FUNCTION pgmig._scope(p_scope text)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path TO pg_catalog, pg_temp
AS $fn$
BEGIN
    IF p_scope IS NULL OR p_scope = '' THEN
        RETURN '';
    END IF;
    IF octet_length(p_scope) > 63 OR p_scope IN ('pgmig', 'information_schema') OR p_scope LIKE 'pg\_%' THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM001',
            MESSAGE = format('pgmig: %s cannot be a tenant scope: %s', quote_literal(p_scope),
                             CASE WHEN octet_length(p_scope) > 63 THEN 'a schema name has at most 63 bytes'
                                  ELSE 'it is pgmig''s or the system''s schema' END);
    END IF;
    IF EXISTS (SELECT FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace
               WHERE n.nspname = p_scope AND p.proname = 'migrate_apply'
                 AND p.proowner = (SELECT s.nspowner FROM pg_namespace AS s WHERE s.nspname = 'pgmig')) THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM001',
            MESSAGE = format('pgmig: schema %I holds pgmig''s API functions; it cannot be a tenant scope', p_scope),
            HINT = 'A scope names the tenant schema the migrations create their objects in. The schema of the API functions '
                || 'is chosen at install (pgmig install --api-schema); calls do not need it (call pgmig.migrate_run).';
    END IF;
    RETURN p_scope;
END
$fn$;

-- The marker key of a scope's lock holder (see above): a 64-bit hash, shown in pg_locks as
-- classid (high 32 bits) and objid (low 32 bits) of an advisory lock with objsubid 1.
CREATE OR REPLACE FUNCTION pgmig._scope_key(p_scope text)
RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path TO pg_catalog, pg_temp
AS $fn$ SELECT hashtextextended('pgmig scope lock: ' || p_scope, 0) $fn$;

-- The sessions that hold the marker of scope p_scope ('' has none: its lock is a table lock).
CREATE OR REPLACE FUNCTION pgmig._scope_holders(p_scope text)
RETURNS SETOF integer
LANGUAGE sql STABLE
SET search_path TO pg_catalog, pg_temp
AS $fn$
SELECT l.pid
FROM pg_locks AS l, pgmig._scope_key(p_scope) AS k(key)
WHERE p_scope <> '' AND l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND l.database = (SELECT d.oid FROM pg_database AS d WHERE d.datname = current_database())
  AND l.classid::bigint = (k.key >> 32) & 4294967295 AND l.objid::bigint = k.key & 4294967295
$fn$;

-- How a scope is named in messages: '' for the default scope, else ' in scope "S"'.
CREATE OR REPLACE FUNCTION pgmig._in_scope(p_scope text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path TO pg_catalog, pg_temp
AS $fn$
SELECT CASE WHEN coalesce(p_scope, '') = '' THEN '' ELSE format(' in scope %I', p_scope) END
$fn$;

-- The search_path the migrations of a scope run with: the tenant schema first, so that what
-- they create lands there, then the caller's (functions of extensions in public, say).
CREATE OR REPLACE FUNCTION pgmig._scope_path(p_scope text, p_caller_path text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path TO pg_catalog, pg_temp
AS $fn$
SELECT CASE WHEN coalesce(p_scope, '') = '' THEN p_caller_path
            ELSE concat_ws(', ', quote_ident(p_scope), nullif(p_caller_path, '')) END
$fn$;

-- Before the first migration of a scope whose schema does not exist yet: create it (as the
-- caller, who needs CREATE on the database), under the scope's lock.
CREATE OR REPLACE FUNCTION pgmig._create_scope_schema(p_scope text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path TO pg_catalog, pg_temp
AS $fn$
BEGIN
    IF p_scope <> '' AND to_regnamespace(quote_ident(p_scope)) IS NULL THEN
        BEGIN
            EXECUTE format('CREATE SCHEMA IF NOT EXISTS %I', p_scope);
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE EXCEPTION USING
                ERRCODE = 'insufficient_privilege',
                MESSAGE = format('pgmig: schema %I of the tenant scope does not exist, and this role may not create it; nothing was applied', p_scope),
                HINT = format('Create it first (CREATE SCHEMA %I AUTHORIZATION <the deploy role>), or GRANT CREATE ON DATABASE to this role.', p_scope);
        END;
    END IF;
END
$fn$;
