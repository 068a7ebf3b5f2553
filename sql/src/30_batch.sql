-- Batch parsing and validation. Internal helpers pin search_path so that hostile objects in
-- the caller's schemas (an overloaded jsonb_typeof, a public."=") cannot change what they see.

-- A batch entry's "statements" (where each statement of "sql" starts, in characters, 0-based:
-- the engine then runs them one by one and can name the failing one, see _execute_as_caller):
-- absent or null, or an array of increasing integers within "sql" (which must be a string).
CREATE OR REPLACE FUNCTION pgmig._statements_ok(p_statements jsonb, p_sql jsonb)
RETURNS boolean
LANGUAGE sql IMMUTABLE
SET search_path TO pg_catalog, pg_temp
AS $fn$
SELECT coalesce(jsonb_typeof(p_statements), 'null') = 'null'
    OR (jsonb_typeof(p_statements) = 'array' AND coalesce(jsonb_typeof(p_sql), 'null') = 'string'
        AND jsonb_array_length(p_statements) >= 1
        AND NOT EXISTS (
            SELECT FROM (SELECT s.v, lag(s.v) OVER (ORDER BY s.o) AS prev
                         FROM jsonb_array_elements(p_statements) WITH ORDINALITY AS s(v, o)) AS x
            WHERE jsonb_typeof(x.v) <> 'number'
               OR x.v::numeric <> trunc(x.v::numeric) OR x.v::numeric < 0
               OR x.v::numeric >= length(p_sql #>> '{}')
               OR (x.prev IS NOT NULL AND x.v::numeric <= x.prev::numeric)))
$fn$;

-- Every shape problem of the batch, one row each; empty when the batch is well-formed.
-- Checks that need no history, so migrate_apply can reject a bad batch before locking.
CREATE OR REPLACE FUNCTION pgmig._batch_problems(p_batch jsonb)
RETURNS TABLE (entry bigint, version bigint, problem text)
LANGUAGE sql STABLE
SET search_path TO pg_catalog, pg_temp
AS $fn$
WITH entries AS (
    -- Every per-entry fact computed once; the checks below only compare them.
    SELECT e.ord,
           jsonb_typeof(e.elem) AS kind,
           CASE WHEN jsonb_typeof(e.elem) = 'object' THEN e.elem END AS obj,
           jsonb_typeof(e.elem->'version') AS version_type,
           jsonb_typeof(e.elem->'name') AS name_type,
           jsonb_typeof(e.elem->'sql') AS sql_type,
           jsonb_typeof(e.elem->'down') AS down_type,
           jsonb_typeof(e.elem->'label') AS label_type,
           jsonb_typeof(e.elem->'transactional') AS tx_type,
           jsonb_typeof(e.elem->'commit_after') AS commit_type,
           jsonb_typeof(e.elem->'checksum') AS checksum_type,
           jsonb_typeof(e.elem->'repeatable') AS repeatable_type,
           -- A repeatable migration (15_repeatable.sql): no version, applied whenever it changes.
           coalesce(e.elem->'repeatable' = 'true'::jsonb, false) AS repeatable,
           CASE WHEN jsonb_typeof(e.elem) = 'object'
                THEN e.elem - '{version,name,label,sql,down,transactional,commit_after,checksum,lock_timeout,statements,repeatable}'::text[] END AS unknown,
           CASE WHEN jsonb_typeof(e.elem) = 'object' AND e.elem->'repeatable' = 'true'::jsonb
                THEN ARRAY(SELECT k FROM jsonb_object_keys(e.elem) AS k
                           WHERE k IN ('version', 'label', 'down', 'commit_after', 'lock_timeout') ORDER BY k) END AS not_repeatable
    FROM jsonb_array_elements(CASE WHEN jsonb_typeof(p_batch) = 'array' THEN p_batch ELSE '[]' END)
         WITH ORDINALITY AS e(elem, ord)
), checked AS (
    SELECT entries.*,
           -- An integer written as one: scale 0. jsonb keeps the scale of what was written,
           -- so 2.0 (or 20e-1) stays 2.0, which is not a bigint's text; 1e2 is 100.
           CASE WHEN version_type = 'number' AND NOT repeatable THEN
               CASE WHEN scale((obj->>'version')::numeric) = 0
                     AND (obj->>'version')::numeric BETWEEN 1 AND 9223372036854775807
                    THEN (obj->>'version')::bigint END
           END AS version
    FROM entries
), problems AS (
    SELECT 0::bigint AS ord, NULL::bigint AS version,
           'the batch must be a JSON array of migration objects, got '
           || coalesce(jsonb_typeof(p_batch), 'SQL NULL') AS msg
    WHERE jsonb_typeof(p_batch) IS DISTINCT FROM 'array'
  UNION ALL
    -- One array of messages per entry, evaluated in a single projection: a LATERAL VALUES
    -- list here costs a rescan per entry (~6 µs each, 60 ms for 10 000 entries).
    SELECT x.ord, x.version, unnest(x.msgs)
    FROM (SELECT c.ord, c.version, array_remove(ARRAY[
        (CASE WHEN c.obj IS NULL THEN format('is a JSON %s, not an object', c.kind) END),
        (CASE WHEN c.obj IS NOT NULL AND c.version IS NULL AND NOT c.repeatable THEN
            CASE WHEN c.version_type IS NULL THEN '"version" is missing'
                 ELSE format('"version" must be an integer from 1 to 9223372036854775807, got %s',
                             left((c.obj->'version')::text, 40)) END
         END),
        (CASE WHEN c.obj IS NOT NULL THEN
            CASE WHEN c.name_type IS NULL THEN '"name" is missing'
                 WHEN c.name_type <> 'string'
                     THEN format('"name" must be a string, got a JSON %s', c.name_type)
                 WHEN btrim(c.obj->>'name', E' \t\r\n') = '' THEN '"name" is empty'
            END
         END),
        (CASE WHEN c.obj IS NOT NULL THEN
            CASE WHEN c.sql_type IS NULL AND c.checksum_type IS NULL
                     THEN 'has neither "sql" nor "checksum"'
                 WHEN c.sql_type IS NULL THEN NULL
                 WHEN c.sql_type <> 'string'
                     THEN format('"sql" must be a string, got a JSON %s', c.sql_type)
                 WHEN btrim(c.obj->>'sql', E' \t\r\n\f\x0b') = ''
                     THEN '"sql" is empty or only white space'
            END
         END),
        (CASE WHEN c.repeatable_type <> 'boolean'
              THEN format('"repeatable" must be true or false, got a JSON %s', c.repeatable_type) END),
        (CASE WHEN c.not_repeatable <> '{}'
              THEN format('a repeatable migration takes no %s (it has no version: it is applied again whenever its checksum changes)',
                          array_to_string(ARRAY(SELECT quote_ident(k) FROM unnest(c.not_repeatable) AS k), ', ')) END),
        (CASE WHEN c.repeatable AND c.obj->'transactional' = 'false'::jsonb
              THEN 'a repeatable migration must be transactional ("transactional": false): it is applied in the transaction of the last versioned migration' END),
        (CASE WHEN c.label_type NOT IN ('string', 'null')
              THEN format('"label" must be a string or null, got a JSON %s', c.label_type) END),
        (CASE WHEN c.down_type NOT IN ('string', 'null')
              THEN format('"down" must be a string or null, got a JSON %s', c.down_type) END),
        (CASE WHEN c.tx_type <> 'boolean'
              THEN format('"transactional" must be true or false, got a JSON %s', c.tx_type) END),
        (CASE WHEN c.commit_type <> 'boolean'
              THEN format('"commit_after" must be true or false, got a JSON %s', c.commit_type) END),
        (CASE WHEN NOT pgmig._statements_ok(c.obj->'statements', c.obj->'sql')
              THEN '"statements" must be an array of increasing character offsets into "sql" (from 0 to its length - 1), where its statements start' END),
        (CASE WHEN coalesce(jsonb_typeof(c.obj->'lock_timeout'), 'null') <> 'null' AND pgmig._lock_timeout_ms(c.obj->'lock_timeout') IS NULL
              THEN format('"lock_timeout" must be an interval from 0 to 2147483647 milliseconds such as "5s" or "500ms", got %s',
                          left((c.obj->'lock_timeout')::text, 40)) END),
        (CASE WHEN c.checksum_type IS NOT NULL THEN
            CASE WHEN c.checksum_type <> 'string' OR length(c.obj->>'checksum') <> 64
                      OR ltrim(c.obj->>'checksum', '0123456789abcdef') <> ''
                     THEN '"checksum" must be 64 lowercase hex digits (the sha256 of "sql")'
                 WHEN c.sql_type = 'string'
                      AND c.obj->>'checksum' <> encode(sha256(convert_to(c.obj->>'sql', 'UTF8')), 'hex')
                     THEN '"checksum" is not the sha256 of "sql"'
            END
         END),
        (CASE WHEN c.unknown <> '{}'::jsonb THEN
            format('unknown key%s %s (allowed: version, name, label, sql, down, transactional, commit_after, checksum, lock_timeout, statements, repeatable)',
                   CASE WHEN (SELECT count(*) FROM jsonb_object_keys(c.unknown)) > 1 THEN 's' ELSE '' END,
                   (SELECT string_agg(quote_ident(k), ', ' ORDER BY k) FROM jsonb_object_keys(c.unknown) AS k))
         END)
        ], NULL) AS msgs FROM checked AS c) AS x
    WHERE x.msgs <> '{}'
  UNION ALL
    SELECT min(ord), version,
           format('the same version appears %s times (entries %s)', count(*),
                  string_agg(ord::text, ', ' ORDER BY ord))
    FROM checked
    WHERE version IS NOT NULL
    GROUP BY version
    HAVING count(*) > 1
  UNION ALL
    SELECT min(ord), NULL::bigint,
           format('the same repeatable migration name appears %s times (entries %s)', count(*),
                  string_agg(ord::text, ', ' ORDER BY ord))
    FROM checked
    WHERE repeatable AND name_type = 'string'
    GROUP BY obj->>'name'
    HAVING count(*) > 1
)
SELECT p.ord, p.version,
       CASE WHEN p.ord = 0 THEN p.msg
            ELSE format('entry %s%s: %s', p.ord,
                        CASE WHEN p.version IS NOT NULL THEN format(' (version %s)', p.version)
                             WHEN c.repeatable AND c.name_type = 'string' THEN format(' (repeatable %s)', left(c.obj->>'name', 100))
                             ELSE '' END, p.msg)
       END
FROM problems AS p LEFT JOIN checked AS c ON c.ord = p.ord
ORDER BY p.ord, p.msg
$fn$;

-- True when _batch_problems would find nothing: the same rules as one boolean per entry,
-- at about half the cost (no messages, no materialized CTE, the checksum format implied by
-- comparing it with the sha256 of "sql"). _assert_well_formed asks this first and builds the
-- detailed report only for a batch that fails it. Keep the two in step: FuzzBatchSQL
-- (tests/hostile) checks that they agree on random batches.
CREATE OR REPLACE FUNCTION pgmig._batch_ok(p_batch jsonb)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path TO pg_catalog, pg_temp
AS $fn$
SELECT jsonb_typeof(p_batch) = 'array' AND coalesce((
    SELECT bool_and(x.ok) AND count(x.version) = count(DISTINCT x.version) AND count(x.rname) = count(DISTINCT x.rname)
    FROM (SELECT CASE WHEN jsonb_typeof(e) = 'object' AND jsonb_typeof(e->'version') = 'number'
                      THEN (e->'version')::numeric END AS version,
                 CASE WHEN jsonb_typeof(e) = 'object' AND e->'repeatable' = 'true'::jsonb AND jsonb_typeof(e->'name') = 'string'
                      THEN e->>'name' END AS rname,
                 -- CASE, not AND: the order matters (e - keys fails on a non-object).
                 CASE
                   WHEN jsonb_typeof(e) <> 'object' THEN false
                   WHEN (e - '{version,name,label,sql,down,transactional,commit_after,checksum,lock_timeout,statements,repeatable}'::text[]) <> '{}'::jsonb THEN false
                   WHEN coalesce(jsonb_typeof(e->'repeatable'), 'boolean') <> 'boolean' THEN false
                   WHEN e->'repeatable' = 'true'::jsonb
                        AND (e ?| '{version,label,down,commit_after,lock_timeout}'::text[] OR e->'transactional' = 'false'::jsonb) THEN false
                   WHEN jsonb_typeof(e->'version') IS DISTINCT FROM 'number' AND e->'repeatable' IS DISTINCT FROM 'true'::jsonb THEN false
                   WHEN jsonb_typeof(e->'name') IS DISTINCT FROM 'string' THEN false
                   WHEN coalesce(jsonb_typeof(e->'down'), 'null') NOT IN ('string', 'null') THEN false
                   WHEN coalesce(jsonb_typeof(e->'label'), 'null') NOT IN ('string', 'null') THEN false
                   WHEN coalesce(jsonb_typeof(e->'transactional'), 'boolean') <> 'boolean' THEN false
                   WHEN coalesce(jsonb_typeof(e->'commit_after'), 'boolean') <> 'boolean' THEN false
                   WHEN coalesce(jsonb_typeof(e->'checksum'), 'string') <> 'string' THEN false
                   WHEN coalesce(jsonb_typeof(e->'lock_timeout'), 'null') <> 'null' AND pgmig._lock_timeout_ms(e->'lock_timeout') IS NULL THEN false
                   WHEN e ? 'statements' AND NOT pgmig._statements_ok(e->'statements', e->'sql') THEN false
                   WHEN e->'repeatable' IS DISTINCT FROM 'true'::jsonb
                        AND NOT ((e->'version')::numeric BETWEEN 1 AND 9223372036854775807
                                 AND scale((e->'version')::numeric) = 0) THEN false
                   WHEN btrim(e->>'name', E' \t\r\n') = '' THEN false
                   WHEN e ? 'sql' THEN
                        jsonb_typeof(e->'sql') = 'string'
                        AND btrim(e->>'sql', E' \t\r\n\f\x0b') <> ''
                        AND (NOT e ? 'checksum'
                             OR e->>'checksum' = encode(sha256(convert_to(e->>'sql', 'UTF8')), 'hex'))
                   ELSE e ? 'checksum' AND length(e->>'checksum') = 64 AND e->>'checksum' !~ '[^0-9a-f]'
                 END AS ok
          FROM jsonb_array_elements(p_batch) AS e) AS x), true)
$fn$;
