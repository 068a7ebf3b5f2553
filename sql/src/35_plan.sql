-- The batch as rows and joined with the history. Internal helpers pin search_path so that
-- hostile objects in the caller's schemas cannot change what they see.

DO $pgmig$ BEGIN PERFORM pgmig._drop_if_changed('pgmig._batch_rows(jsonb)',
    'TABLE(version bigint, name text, label text, sql text, down_sql text, transactional boolean, commit_after boolean, checksum text, statements integer[])'); END $pgmig$;
DO $pgmig$ BEGIN PERFORM pgmig._drop_if_changed('pgmig._plan_rows(jsonb)', 'SETOF pgmig.plan_entry'); END $pgmig$;
DO $pgmig$ BEGIN PERFORM pgmig._drop_if_changed('pgmig._drift_problems(jsonb,boolean,boolean)',
    'TABLE(version bigint, kind text, problem text)'); END $pgmig$;

-- The batch's versioned migrations as rows, for a batch that _batch_ok found well-formed
-- (repeatable ones: _repeatable_rows). The checksum is the batch's own when given (it was
-- verified against sql), otherwise computed here.
CREATE OR REPLACE FUNCTION pgmig._batch_rows(p_batch jsonb)
RETURNS TABLE (version bigint, name text, label text, sql text, down_sql text, transactional boolean,
               commit_after boolean, checksum text, statements integer[])
LANGUAGE sql STABLE
SET search_path TO pg_catalog, pg_temp
AS $fn$
SELECT (e->>'version')::bigint,
       e->>'name',
       e->>'label',
       e->>'sql',
       e->>'down',
       coalesce((e->>'transactional')::boolean, true),
       coalesce((e->>'commit_after')::boolean, false),
       coalesce(e->>'checksum', encode(sha256(convert_to(e->>'sql', 'UTF8')), 'hex')),
       CASE WHEN jsonb_typeof(e->'statements') = 'array'
            THEN ARRAY(SELECT s::integer FROM jsonb_array_elements_text(e->'statements') AS s) END
FROM jsonb_array_elements(p_batch) AS e
WHERE e->'repeatable' IS DISTINCT FROM 'true'::jsonb
$fn$;

-- The batch's repeatable migrations joined with their current state in scope p_scope (the
-- engine calls it only after it holds the scope's lock), as plan entries without a version:
-- 'pending' when the checksum differs from the one recorded last for the name or none is,
-- 'already_applied' when it is the same, and one 'missing' entry per recorded name absent
-- from the batch (not an error: status and plan report it). In name order, byte by byte
-- (COLLATE "C": the same order whatever the database's collation, and the order the Go
-- loader sorts files in).
CREATE OR REPLACE FUNCTION pgmig._repeatable_rows(p_batch jsonb, p_scope text)
RETURNS SETOF pgmig.plan_entry
LANGUAGE sql STABLE
SET search_path TO pg_catalog, pg_temp
AS $fn$
WITH b AS MATERIALIZED (
    SELECT e->>'name' AS name, e->>'sql' AS sql,
           coalesce(e->>'checksum', encode(sha256(convert_to(e->>'sql', 'UTF8')), 'hex')) AS checksum,
           CASE WHEN jsonb_typeof(e->'statements') = 'array'
                THEN ARRAY(SELECT s::integer FROM jsonb_array_elements_text(e->'statements') AS s) END AS statements
    FROM jsonb_array_elements(p_batch) AS e
    WHERE e->'repeatable' = 'true'::jsonb
), r AS MATERIALIZED (
    SELECT * FROM pgmig._repeatable_state(p_scope)
)
SELECT * FROM (
    SELECT NULL::bigint, b.name, NULL::text,
           CASE WHEN r.checksum = b.checksum THEN 'already_applied' ELSE 'pending' END,
           b.sql, NULL::text, true, false, b.checksum, r.name, r.checksum, r.applied_at, b.statements
    FROM b LEFT JOIN r ON r.name = b.name
  UNION ALL
    SELECT NULL::bigint, r.name, NULL::text, 'missing', NULL::text, NULL::text, true, false, r.checksum, r.name, r.checksum,
           r.applied_at, NULL::integer[]
    FROM r WHERE NOT EXISTS (SELECT FROM b WHERE b.name = r.name)
) AS rows (version, name, label, outcome, sql, down_sql, transactional, commit_after, checksum, recorded_name,
           recorded_checksum, applied_at, statements)
ORDER BY rows.name COLLATE "C"
$fn$;

-- The batch joined with the history of scope p_scope as of the calling statement's snapshot
-- (the engine calls it only after it holds the scope's lock). One row per batch entry
-- ('pending' or 'already_applied') and one per applied version absent from the batch ('ahead'
-- when newer than every batch entry, else 'missing'), in version order.
CREATE OR REPLACE FUNCTION pgmig._plan_rows(p_batch jsonb, p_scope text)
RETURNS SETOF pgmig.plan_entry
LANGUAGE sql STABLE
SET search_path TO pg_catalog, pg_temp
AS $fn$
WITH b AS MATERIALIZED (
    SELECT * FROM pgmig._batch_rows(p_batch)
), newest AS (
    SELECT max(b.version) AS v FROM b
)
SELECT * FROM (
    SELECT b.version, b.name, b.label,
           CASE WHEN h.version IS NULL THEN 'pending' ELSE 'already_applied' END,
           b.sql, b.down_sql, b.transactional, b.commit_after, b.checksum, h.name, h.checksum, h.applied_at, b.statements
    FROM b LEFT JOIN pgmig.history AS h ON h.scope = p_scope AND h.version = b.version
  UNION ALL
    SELECT h.version, h.name, h.label,
           CASE WHEN h.version > coalesce((SELECT v FROM newest), 0) THEN 'ahead' ELSE 'missing' END,
           NULL, NULL, h.transactional, false, h.checksum, h.name, h.checksum, h.applied_at, NULL::integer[]
    FROM pgmig.history AS h
    WHERE h.scope = p_scope AND NOT EXISTS (SELECT FROM b WHERE b.version = h.version)
) AS rows
ORDER BY 1
$fn$;

-- Drift between a (well-formed) batch and the history: every changed, renamed, missing and
-- out-of-order version, one row each, with its kind ('changed', 'renamed', 'missing',
-- 'out_of_order') for clients and a sentence for people. An applied version newer than the
-- whole batch is not drift: the database is ahead (a newer release migrated it).
-- _read_plan computes whether this finds anything with one flag from the same rules: a rule
-- added here must be added there (TestDrift has a case for each).
CREATE OR REPLACE FUNCTION pgmig._drift_problems(p_batch jsonb, p_allow_out_of_order boolean,
                                                 p_allow_missing boolean, p_scope text)
RETURNS TABLE (version bigint, kind text, problem text)
LANGUAGE sql STABLE
SET search_path TO pg_catalog, pg_temp
AS $fn$
WITH p AS MATERIALIZED (
    SELECT * FROM pgmig._plan_rows(p_batch, p_scope)
), newest_applied AS (
    SELECT max(p.version) AS v FROM p WHERE p.outcome <> 'pending'
)
SELECT d.version, d.kind, d.problem FROM (
    SELECT p.version, 'changed' AS kind,
           format('version %s (%s): changed after it was applied on %s: recorded sha256 %s, the batch has %s',
                  p.version, left(p.name, 100), p.applied_at, p.recorded_checksum, p.checksum) AS problem
    FROM p WHERE p.outcome = 'already_applied' AND p.checksum <> p.recorded_checksum
  UNION ALL
    SELECT p.version, 'renamed',
           format('version %s: applied as %s, the batch names it %s',
                  p.version, quote_literal(left(p.recorded_name, 100)), quote_literal(left(p.name, 100)))
    FROM p WHERE p.outcome = 'already_applied' AND p.name <> p.recorded_name
  UNION ALL
    SELECT p.version, 'missing',
           format('version %s (%s): applied on %s but missing from the batch',
                  p.version, left(p.name, 100), p.applied_at)
    FROM p WHERE p.outcome = 'missing' AND NOT p_allow_missing
  UNION ALL
    SELECT p.version, 'out_of_order',
           format('version %s (%s): pending but older than the newest applied version %s (out of order)',
                  p.version, left(p.name, 100), (SELECT v FROM newest_applied))
    FROM p WHERE p.outcome = 'pending' AND NOT p_allow_out_of_order
           AND p.version < (SELECT v FROM newest_applied)
) AS d
ORDER BY d.version, d.kind
$fn$;

-- The digest migrate_history_digest() would return if exactly this (well-formed) batch were
-- applied: sha256 over "<version>\t<name>\t<checksum>\n" per entry in version order, then
-- "R\t<name>\t<checksum>\n" per repeatable migration in name order (byte order; none, and
-- the digest is what it was before repeatable migrations existed). Equal to the history's
-- digest under the lock, it proves that nothing is pending, ahead, missing or drifted, and
-- that every repeatable migration is applied as it is, so racing migrators of the same batch
-- finish with one comparison each.
CREATE OR REPLACE FUNCTION pgmig._batch_digest(p_batch jsonb)
RETURNS text
LANGUAGE sql STABLE
SET search_path TO pg_catalog, pg_temp
AS $fn$
SELECT encode(sha256(convert_to(
           coalesce((SELECT string_agg(b.version::text || E'\t' || b.name || E'\t' || b.checksum || E'\n', '' ORDER BY b.version)
                     FROM pgmig._batch_rows(p_batch) AS b), '')
        || coalesce((SELECT string_agg('R' || E'\t' || (e->>'name') || E'\t'
                                       || coalesce(e->>'checksum', encode(sha256(convert_to(e->>'sql', 'UTF8')), 'hex')) || E'\n',
                                       '' ORDER BY (e->>'name') COLLATE "C")
                     FROM jsonb_array_elements(p_batch) AS e WHERE e->'repeatable' = 'true'::jsonb), ''),
        'UTF8')), 'hex')
$fn$;
