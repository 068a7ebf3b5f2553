-- Adoption: taking over the history of another migration tool (tern, golang-migrate, goose,
-- dbmate, sql-migrate, Flyway) in a database that tool migrated (docs/adopt.md). Under the
-- history lock, migrate_adopt reads the tool's own history table, checks it against the batch
-- (the files, read by the client as that tool reads them), and records what the tool applied
-- as applied in pgmig.history (kind 'baseline': nothing runs), audited with the tool's rows. It
-- refuses, naming every problem and the tool's own fix, when the tool's history is not clean:
-- pgmig adopts what the tool would say is done, and nothing the tool would still do or undo.

-- The version key of a Flyway version as Flyway records it ('1.2', '1_2', '2024.01.15'), by
-- the encoding of docs/formats.md ("Flyway's version key"), which the loader uses too
-- (flywayKey in gowrapper/format_flyway.go): numbers separated by . or _, trailing zero parts
-- dropped (1.0 is 1, as in Flyway), at most three parts, key = p1*10^4 + p2*10^2 + p3 with p2
-- and p3 at most 99. NULL when the version has no key: the loader refuses such a file.
CREATE OR REPLACE FUNCTION pgmig._flyway_key(p_version text)
RETURNS bigint
LANGUAGE plpgsql IMMUTABLE STRICT
SET search_path TO pg_catalog, pg_temp
AS $fn$
DECLARE
    v_parts numeric[] := '{}'::numeric[];
    v_part  text;
BEGIN
    FOREACH v_part IN ARRAY string_to_array(replace(p_version, '_', '.'), '.') LOOP
        IF v_part !~ '^[0-9]+$' THEN
            RETURN NULL;
        END IF;
        v_parts := v_parts || v_part::numeric;
    END LOOP;
    WHILE cardinality(v_parts) > 1 AND v_parts[cardinality(v_parts)] = 0 LOOP
        v_parts := v_parts[1:cardinality(v_parts) - 1];
    END LOOP;
    IF cardinality(v_parts) NOT BETWEEN 1 AND 3 THEN
        RETURN NULL;
    END IF;
    v_parts := v_parts || '{0,0}'::numeric[];
    IF v_parts[1] > 922337203685476 OR v_parts[2] > 99 OR v_parts[3] > 99 THEN
        RETURN NULL;
    END IF;
    RETURN nullif((v_parts[1] * 10000 + v_parts[2] * 100 + v_parts[3])::bigint, 0::bigint);
END
$fn$;

-- The CRC-32 lookup table of java.util.zip.CRC32 (IEEE 802.3, reflected polynomial
-- 0xEDB88320): entry n is the CRC of the byte n. Go's hash/crc32.IEEETable holds the same
-- numbers; TestFlywayChecksumSQL compares the two implementations.
CREATE OR REPLACE FUNCTION pgmig._crc32_table()
RETURNS bigint[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $fn$ SELECT '{
    0,1996959894,3993919788,2567524794,124634137,1886057615,3915621685,2657392035,
    249268274,2044508324,3772115230,2547177864,162941995,2125561021,3887607047,2428444049,
    498536548,1789927666,4089016648,2227061214,450548861,1843258603,4107580753,2211677639,
    325883990,1684777152,4251122042,2321926636,335633487,1661365465,4195302755,2366115317,
    997073096,1281953886,3579855332,2724688242,1006888145,1258607687,3524101629,2768942443,
    901097722,1119000684,3686517206,2898065728,853044451,1172266101,3705015759,2882616665,
    651767980,1373503546,3369554304,3218104598,565507253,1454621731,3485111705,3099436303,
    671266974,1594198024,3322730930,2970347812,795835527,1483230225,3244367275,3060149565,
    1994146192,31158534,2563907772,4023717930,1907459465,112637215,2680153253,3904427059,
    2013776290,251722036,2517215374,3775830040,2137656763,141376813,2439277719,3865271297,
    1802195444,476864866,2238001368,4066508878,1812370925,453092731,2181625025,4111451223,
    1706088902,314042704,2344532202,4240017532,1658658271,366619977,2362670323,4224994405,
    1303535960,984961486,2747007092,3569037538,1256170817,1037604311,2765210733,3554079995,
    1131014506,879679996,2909243462,3663771856,1141124467,855842277,2852801631,3708648649,
    1342533948,654459306,3188396048,3373015174,1466479909,544179635,3110523913,3462522015,
    1591671054,702138776,2966460450,3352799412,1504918807,783551873,3082640443,3233442989,
    3988292384,2596254646,62317068,1957810842,3939845945,2647816111,81470997,1943803523,
    3814918930,2489596804,225274430,2053790376,3826175755,2466906013,167816743,2097651377,
    4027552580,2265490386,503444072,1762050814,4150417245,2154129355,426522225,1852507879,
    4275313526,2312317920,282753626,1742555852,4189708143,2394877945,397917763,1622183637,
    3604390888,2714866558,953729732,1340076626,3518719985,2797360999,1068828381,1219638859,
    3624741850,2936675148,906185462,1090812512,3747672003,2825379669,829329135,1181335161,
    3412177804,3160834842,628085408,1382605366,3423369109,3138078467,570562233,1426400815,
    3317316542,2998733608,733239954,1555261956,3268935591,3050360625,752459403,1541320221,
    2607071920,3965973030,1969922972,40735498,2617837225,3943577151,1913087877,83908371,
    2512341634,3803740692,2075208622,213261112,2463272603,3855990285,2094854071,198958881,
    2262029012,4057260610,1759359992,534414190,2176718541,4139329115,1873836001,414664567,
    2282248934,4279200368,1711684554,285281116,2405801727,4167216745,1634467795,376229701,
    2685067896,3608007406,1308918612,956543938,2808555105,3495958263,1231636301,1047427035,
    2932959818,3654703836,1088359270,936918000,2847714899,3736837829,1202900863,817233897,
    3183342108,3401237130,1404277552,615818150,3134207493,3453421203,1423857449,601450431,
    3009837614,3294710456,1567103746,711928724,3020668471,3272380065,1510334235,755167117
}'::bigint[] $fn$;

-- The checksum Flyway records for a migration file with this text (ChecksumCalculator in
-- flyway-core): the file is read line by line with java.io.BufferedReader.readLine, which drops
-- every line terminator (\n, \r, \r\n), a byte-order mark is dropped from the first line, and
-- the UTF-8 bytes of the lines are fed to java.util.zip.CRC32, whose value is stored as a signed
-- 32-bit integer. So: CRC-32 of the text without its \r and \n characters. Flyway checksums a
-- versioned migration's file as written, placeholders not replaced: this equals its checksum
-- when p_text is the file (the batch's SQL is, for a file without placeholders). The client
-- computes the same in Go (Migration.FlywayChecksum) and passes it, placeholders or not.
CREATE OR REPLACE FUNCTION pgmig._flyway_checksum(p_text text)
RETURNS integer
LANGUAGE plpgsql IMMUTABLE STRICT
SET search_path TO pg_catalog, pg_temp
AS $fn$
DECLARE
    v_bytes bytea := convert_to(translate(p_text, E'\r\n', ''), 'UTF8');
    v_table bigint[] := pgmig._crc32_table();
    v_crc   bigint := 4294967295;
BEGIN
    IF substr(v_bytes, 1, 3) = decode('efbbbf', 'hex') THEN
        v_bytes := substr(v_bytes, 4);
    END IF;
    FOR i IN 0 .. length(v_bytes) - 1 LOOP
        v_crc := (v_crc >> 8) # v_table[((v_crc # get_byte(v_bytes, i)) & 255) + 1];
    END LOOP;
    v_crc := v_crc # 4294967295;
    RETURN (v_crc - CASE WHEN v_crc >= 2147483648 THEN 4294967296 ELSE 0 END)::integer;
END
$fn$;

-- The tools migrate_adopt knows, the table each keeps its history in by default (as the tool
-- creates it: unqualified names in the first schema of the search_path), and the columns that
-- tell its table from the others' (version_type: how its version column is typed, 'integer' or
-- 'text', NULL for any).
CREATE OR REPLACE FUNCTION pgmig._adopt_tools()
RETURNS TABLE (tool text, default_table text, columns text[], version_type text)
LANGUAGE sql IMMUTABLE
AS $fn$
VALUES ('tern',           'public.schema_version', '{version}'::text[],                                               'integer'),
       ('golang-migrate', 'schema_migrations',     '{version,dirty}'::text[],                                         'integer'),
       ('goose',          'goose_db_version',      '{id,version_id,is_applied}'::text[],                              NULL),
       ('dbmate',         'schema_migrations',     '{version}'::text[],                                               'text'),
       ('sql-migrate',    'gorp_migrations',       '{id,applied_at}'::text[],                                         NULL),
       ('flyway',         'flyway_schema_history', '{installed_rank,version,description,type,checksum,success}'::text[], 'text')
$fn$;

-- The table holding p_tool's history: p_table (the tool's default when NULL), a name as SQL
-- reads it ('goose_db_version', 'app.flyway_schema_history', '"Migrations"'), qualified or
-- looked up in p_schemas (the caller's search_path) as the tool looked it up. Raises PM001 when
-- there is no such table, or when it is not that tool's (naming the tool whose it looks like).
CREATE OR REPLACE FUNCTION pgmig._adopt_table(p_tool text, p_table text, p_schemas name[],
                                              OUT schema_name text, OUT table_name text)
LANGUAGE plpgsql STABLE
SET search_path TO pg_catalog, pg_temp
AS $fn$
DECLARE
    v_tool    record;
    v_name    text;
    v_parts   text[];
    v_oid     oid;
    v_columns text[];
    v_vtype   text;
    v_why     text;
    v_like    text;
BEGIN
    SELECT * INTO v_tool FROM pgmig._adopt_tools() AS t WHERE t.tool = p_tool;
    v_name := coalesce(p_table, v_tool.default_table);
    BEGIN
        v_parts := parse_ident(v_name);
    EXCEPTION WHEN invalid_parameter_value THEN
        v_parts := NULL;
    END;
    IF coalesce(cardinality(v_parts), 0) NOT BETWEEN 1 AND 2 THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM001',
            MESSAGE = format('pgmig: %s is not a table name (want table or schema.table, quoted where SQL needs quotes)', quote_literal(v_name));
    END IF;
    SELECT c.oid, n.nspname::text, c.relname::text INTO v_oid, schema_name, table_name
      FROM unnest(CASE WHEN cardinality(v_parts) = 2 THEN ARRAY[v_parts[1]::name] ELSE p_schemas END)
           WITH ORDINALITY AS s(nsp, ord)
      JOIN pg_namespace AS n ON n.nspname = s.nsp
      JOIN pg_class AS c ON c.relnamespace = n.oid AND c.relname = v_parts[cardinality(v_parts)] AND c.relkind IN ('r', 'p')
     ORDER BY s.ord
     LIMIT 1;
    IF v_oid IS NULL THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM001',
            MESSAGE = format('pgmig: %s''s history table %s does not exist%s; nothing was adopted', p_tool, v_name,
                             CASE WHEN cardinality(v_parts) = 1
                                  THEN format(' (looked in schema%s %s)', CASE WHEN cardinality(p_schemas) = 1 THEN '' ELSE 's' END,
                                              coalesce(array_to_string(p_schemas, ', '), 'none: the search_path is empty'))
                                  ELSE '' END),
            HINT = format('Name the table %s keeps its history in, as configured for it: table_name => ''schema.table'' (pgmig adopt --table). '
                          '%s''s default is %s.', p_tool, p_tool, v_tool.default_table);
    END IF;

    SELECT array_agg(a.attname::text),
           (SELECT CASE WHEN x.atttypid IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype, 'numeric'::regtype) THEN 'integer'
                        WHEN x.atttypid IN ('text'::regtype, 'varchar'::regtype, 'bpchar'::regtype) THEN 'text' ELSE 'other' END
              FROM pg_attribute AS x WHERE x.attrelid = v_oid AND x.attname = 'version' AND NOT x.attisdropped)
      INTO v_columns, v_vtype
      FROM pg_attribute AS a WHERE a.attrelid = v_oid AND a.attnum > 0 AND NOT a.attisdropped;
    v_why := CASE WHEN NOT v_tool.columns <@ v_columns
                  THEN format('it has no column %s', (SELECT string_agg(c, ', ') FROM unnest(v_tool.columns) AS c WHERE c <> ALL (v_columns)))
                  WHEN v_tool.version_type IS DISTINCT FROM NULL AND v_vtype IS DISTINCT FROM v_tool.version_type
                  THEN format('its column version holds %s, not %s',
                              CASE v_vtype WHEN 'integer' THEN 'numbers' WHEN 'text' THEN 'text' ELSE 'something else' END,
                              CASE v_tool.version_type WHEN 'integer' THEN 'numbers' ELSE 'text' END)
                  -- golang-migrate's and dbmate's tables share the default name schema_migrations
                  WHEN p_tool <> 'golang-migrate' AND 'dirty' = ANY (v_columns)
                  THEN 'it has a column dirty, as golang-migrate''s table has' END;
    IF v_why IS NOT NULL THEN
        SELECT string_agg(t.tool, ' or ') INTO v_like
          FROM pgmig._adopt_tools() AS t
         WHERE t.tool <> p_tool AND t.columns <@ v_columns
           AND (t.version_type IS NULL OR t.version_type = v_vtype)
           AND (t.tool = 'golang-migrate' OR NOT 'dirty' = ANY (v_columns));
        RAISE EXCEPTION USING
            ERRCODE = 'PM001',
            MESSAGE = format('pgmig: %I.%I is not %s''s history table: %s%s; nothing was adopted', schema_name, table_name, p_tool, v_why,
                             coalesce(format(' (it looks like %s''s)', v_like), '')),
            HINT = 'Name the tool that migrated this database (pgmig adopt --from), and its table if it is not the tool''s default (--table).';
    END IF;
END
$fn$;

-- p_tool's history table (its rows as jsonb, p_rows) as migrate_adopt reads it: one row per
-- version the tool recorded, in the state the tool itself would give it:
--   'through'     every version up to this one counts as applied (tern's and golang-migrate's
--                 single version; a Flyway baseline, which needs no file: needs_file false)
--   'applied'     this version is applied (goose, dbmate, sql-migrate, Flyway)
--   'dirty'       golang-migrate stopped in the middle of it
--   'failed'      Flyway recorded it with success = false (tool_version: a repeatable's script)
--   'rolled_back' goose recorded a down for it (is_applied = false, before goose v3)
--   'undone'      Flyway undid it or repair marked it deleted: not applied
--   'repeatable'  a Flyway repeatable migration (not versioned: not adopted)
--   'unmapped'    a version with no pgmig equivalent (version NULL)
-- description is Flyway's, or the name sql-migrate's file name gives; applied_at and duration
-- what the tool recorded, where it did.
CREATE OR REPLACE FUNCTION pgmig._adopt_recorded(p_tool text, p_rows jsonb)
RETURNS TABLE (version bigint, tool_version text, state text, needs_file boolean, checksum integer,
               description text, applied_at timestamptz, duration interval)
LANGUAGE sql STABLE
SET search_path TO pg_catalog, pg_temp
AS $fn$
WITH r AS MATERIALIZED (
    SELECT e FROM jsonb_array_elements(p_rows) AS e
)
-- tern and golang-migrate keep one row: the version the database is at. tern's 0 is "nothing";
-- golang-migrate's -1 is its NilVersion, written only with dirty (a first migration failed).
SELECT CASE WHEN x.v >= 1 THEN x.v::bigint END, r.e->>'version',
       CASE WHEN coalesce((r.e->>'dirty')::boolean, false) THEN 'dirty' WHEN x.v >= 1 THEN 'through' ELSE 'unmapped' END,
       true, NULL::integer, NULL::text, NULL::timestamptz, NULL::interval
FROM r, LATERAL (SELECT (r.e->>'version')::numeric AS v) AS x
WHERE p_tool IN ('tern', 'golang-migrate') AND NOT (p_tool = 'tern' AND x.v = 0)
UNION ALL
-- goose appends a row per up (and, before v3, per down with is_applied = false); its own
-- version is the newest version whose latest row is applied. version_id 0 is the row goose
-- writes when it creates the table.
SELECT * FROM (
    SELECT DISTINCT ON (x.v) CASE WHEN x.v >= 1 THEN x.v END, r.e->>'version_id',
           CASE WHEN x.v < 1 THEN 'unmapped' WHEN (r.e->>'is_applied')::boolean THEN 'applied' ELSE 'rolled_back' END,
           true, NULL::integer, NULL::text, (r.e->>'tstamp')::timestamptz, NULL::interval
    FROM r, LATERAL (SELECT (r.e->>'version_id')::bigint AS v) AS x
    WHERE p_tool = 'goose' AND x.v <> 0
    ORDER BY x.v, (r.e->>'id')::bigint DESC
) AS goose
UNION ALL
-- dbmate records the digits its file names start with, as text ('20230601100000', '001').
SELECT CASE WHEN x.ok THEN (r.e->>'version')::bigint END, r.e->>'version',
       CASE WHEN x.ok THEN 'applied' ELSE 'unmapped' END,
       true, NULL::integer, NULL::text, NULL::timestamptz, NULL::interval
FROM r, LATERAL (SELECT CASE WHEN r.e->>'version' ~ '^[0-9]+$' AND length(ltrim(r.e->>'version', '0')) <= 19
                             THEN (r.e->>'version')::numeric BETWEEN 1 AND 9223372036854775807 ELSE false END AS ok) AS x
WHERE p_tool = 'dbmate'
UNION ALL
-- sql-migrate records the file name ('20220301090000-create_authors.sql'): the version is the
-- number it starts with, the name the rest after one - or _, as the loader reads it.
SELECT CASE WHEN x.ok THEN x.digits::bigint END, x.id, CASE WHEN x.ok THEN 'applied' ELSE 'unmapped' END,
       true, NULL::integer,
       CASE WHEN btrim(y.rest) = '' THEN CASE WHEN right(x.id, 4) = '.sql' THEN left(x.id, -4) ELSE x.id END ELSE y.rest END,
       (r.e->>'applied_at')::timestamptz, NULL::interval
FROM r,
     LATERAL (SELECT r.e->>'id' AS id, substring(r.e->>'id' from '^[0-9]*') AS digits) AS x0,
     LATERAL (SELECT x0.id, x0.digits,
                     CASE WHEN x0.digits <> '' AND length(ltrim(x0.digits, '0')) <= 19
                          THEN x0.digits::numeric BETWEEN 1 AND 9223372036854775807 ELSE false END AS ok) AS x,
     LATERAL (SELECT substr(x.id, length(x.digits) + 1) AS s) AS y0,
     LATERAL (SELECT CASE WHEN right(y0.s, 4) = '.sql' THEN left(y0.s, -4) ELSE y0.s END AS s) AS y1,
     LATERAL (SELECT CASE WHEN left(y1.s, 1) IN ('-', '_') THEN substr(y1.s, 2) ELSE y1.s END AS rest) AS y
WHERE p_tool = 'sql-migrate'
UNION ALL
-- Flyway appends a row per migration run (installed_rank), failed ones too where it could not
-- roll back (success = false); the newest row of a version says its state. Its own rows:
-- SCHEMA (it created the schemas), BASELINE (flyway baseline: every version up to it counts as
-- applied), DELETE (repair marked a missing migration deleted), UNDO_* (an undo ran).
SELECT * FROM (
    SELECT DISTINCT ON (coalesce(x.k::text, 'v' || (r.e->>'version')))
           x.k, r.e->>'version',
           CASE WHEN x.k IS NULL THEN 'unmapped'
                WHEN x.t = 'DELETE' OR x.t LIKE 'UNDO%' THEN 'undone'
                WHEN x.t = 'BASELINE' OR x.t LIKE '%\_BASELINE' THEN 'through'
                WHEN NOT coalesce((r.e->>'success')::boolean, false) THEN 'failed'
                ELSE 'applied' END,
           NOT (x.t = 'BASELINE' OR x.t LIKE '%\_BASELINE'),
           (r.e->>'checksum')::integer, r.e->>'description', (r.e->>'installed_on')::timestamptz,
           make_interval(secs => coalesce((r.e->>'execution_time')::numeric, 0) / 1000)
    FROM r, LATERAL (SELECT pgmig._flyway_key(r.e->>'version') AS k, r.e->>'type' AS t) AS x
    WHERE p_tool = 'flyway' AND r.e->>'version' IS NOT NULL AND x.t <> 'SCHEMA'
    ORDER BY coalesce(x.k::text, 'v' || (r.e->>'version')), (r.e->>'installed_rank')::integer DESC
) AS flyway_versioned
UNION ALL
SELECT * FROM (
    SELECT DISTINCT ON (r.e->>'description')
           NULL::bigint, r.e->>'script',
           CASE WHEN coalesce((r.e->>'success')::boolean, false) THEN 'repeatable' ELSE 'failed' END,
           false, (r.e->>'checksum')::integer, r.e->>'description', (r.e->>'installed_on')::timestamptz,
           make_interval(secs => coalesce((r.e->>'execution_time')::numeric, 0) / 1000)
    FROM r
    WHERE p_tool = 'flyway' AND r.e->>'version' IS NULL
      AND r.e->>'type' NOT IN ('SCHEMA', 'BASELINE', 'DELETE') AND r.e->>'type' NOT LIKE 'UNDO%'
    ORDER BY r.e->>'description', (r.e->>'installed_rank')::integer DESC
) AS flyway_repeatable
$fn$;

-- The batch's versions that p_tool's history (p_rows) counts as applied: recorded as applied,
-- or at or below its 'through' version. With what the tool recorded of each.
CREATE OR REPLACE FUNCTION pgmig._adopt_versions(p_batch jsonb, p_tool text, p_rows jsonb)
RETURNS TABLE (version bigint, tool_version text, applied_at timestamptz, duration interval)
LANGUAGE sql STABLE
SET search_path TO pg_catalog, pg_temp
AS $fn$
WITH rec AS MATERIALIZED (
    SELECT * FROM pgmig._adopt_recorded(p_tool, p_rows)
)
SELECT b.version, a.tool_version, a.applied_at, a.duration
FROM pgmig._batch_rows(p_batch) AS b
LEFT JOIN LATERAL (SELECT * FROM rec WHERE rec.version = b.version AND rec.state = 'applied' LIMIT 1) AS a ON true
WHERE a.version IS NOT NULL
   OR b.version <= (SELECT max(rec.version) FROM rec WHERE rec.state = 'through')
ORDER BY b.version
$fn$;

-- What p_tool itself would do about a problem of this kind, for the lines of migrate_adopt's
-- refusal (p_table: the tool's table, qualified).
CREATE OR REPLACE FUNCTION pgmig._adopt_fix(p_tool text, p_kind text, p_table text)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path TO pg_catalog, pg_temp
AS $fn$
SELECT CASE p_tool || ':' || p_kind
    WHEN 'golang-migrate:dirty' THEN
        'golang-migrate''s fix: check what that migration did and repair the schema by hand, then `migrate force V` if it '
        'completed, or `migrate force <the version before it>` and `migrate up` if it did not'
    WHEN 'golang-migrate:rows' THEN
        'golang-migrate keeps one row: `migrate force V` (V: the version the database is at) rewrites the table'
    WHEN 'golang-migrate:no_file' THEN
        'restore the file from version control (golang-migrate cannot migrate up or down from a version without its file either)'
    WHEN 'tern:rows' THEN
        'tern keeps one row: delete the others, keeping the version the database is at'
    WHEN 'tern:no_file' THEN
        'restore the file from version control: tern numbers migrations 1, 2, 3 ... and needs every file up to its version'
    WHEN 'goose:rolled_back' THEN
        'goose before v3 recorded a down as a row with is_applied = false; goose v3 counts the version as applied when it '
        'migrates up but not in `goose version`. If its changes are not in the database, delete its rows and run '
        '`goose up -allow-missing`; if they are, delete only its is_applied = false rows'
    WHEN 'goose:no_file' THEN
        format('restore the file, or, if the migration was removed on purpose, delete its rows from %s', p_table)
    WHEN 'goose:pending' THEN
        'goose refuses to migrate with it ("found missing migrations"): `goose up -allow-missing` applies it; or remove the file'
    WHEN 'dbmate:no_file' THEN
        format('restore the file, or, if the migration was removed on purpose, delete its row from %s', p_table)
    WHEN 'dbmate:pending' THEN
        '`dbmate up` applies it (dbmate applies pending migrations whatever their order); or remove the file'
    WHEN 'dbmate:duplicate' THEN
        format('dbmate took these for different migrations: keep one file, and delete the other row from %s', p_table)
    WHEN 'sql-migrate:no_file' THEN
        format('sql-migrate records a migration by its file name: restore the file under that name, or, if the migration '
               'was removed on purpose, delete its row from %s', p_table)
    WHEN 'sql-migrate:renamed' THEN
        'sql-migrate records a migration by its file name and would run the renamed file again: give the file its recorded name back'
    WHEN 'sql-migrate:pending' THEN
        '`sql-migrate up` applies it (sql-migrate applies missing older migrations first); or remove the file'
    WHEN 'sql-migrate:duplicate' THEN
        format('pgmig keys migrations by the number their file name starts with: renumber one file and its row in %s', p_table)
    WHEN 'flyway:failed' THEN
        'Flyway''s fix: undo what the migration did (or finish it by hand), then `flyway repair` removes the failed row, '
        'and `flyway migrate` runs it again'
    WHEN 'flyway:no_file' THEN
        'restore the file, or, if the migration was removed on purpose, `flyway repair` marks it deleted'
    WHEN 'flyway:description' THEN
        '`flyway validate` refuses this too: give the file its recorded description back, or, if the rename was deliberate, '
        '`flyway repair` records the new one'
    WHEN 'flyway:checksum' THEN
        'the file changed after Flyway applied it (`flyway validate` refuses this too): restore it, or, if the change was '
        'deliberate, `flyway repair` records the new checksum'
    WHEN 'flyway:no_checksum' THEN
        'the batch entry has no SQL to compute Flyway''s checksum from: pass checksums => ''{"<version>": <checksum>}'' '
        '(pgmig adopt computes them from the files)'
    WHEN 'flyway:pending' THEN
        '`flyway migrate -outOfOrder=true` applies it (`flyway validate` reports it as not applied otherwise); or remove the file'
    ELSE CASE p_kind
        WHEN 'unmapped' THEN 'pgmig versions are integers from 1 to 9223372036854775807 (docs/formats.md); the loader refuses such a file too'
        WHEN 'no_file' THEN 'restore the file'
        WHEN 'pending' THEN format('apply it with %s, or remove the file', p_tool)
        WHEN 'duplicate' THEN 'keep one of them'
        ELSE format('bring %s''s history to a clean state with %s', p_tool, p_tool) END
END
$fn$;

-- Every reason not to adopt p_tool's history (p_rows, read from p_table) with this batch, one
-- line each with the tool's own fix; nothing when the tool's history is clean and matches the
-- batch. p_checksums: Flyway's checksum of each file, by version (else computed from the SQL).
CREATE OR REPLACE FUNCTION pgmig._adopt_problems(p_batch jsonb, p_tool text, p_table text, p_rows jsonb, p_checksums jsonb,
                                                 p_scope text)
RETURNS TABLE (version bigint, problem text)
LANGUAGE sql STABLE
SET search_path TO pg_catalog, pg_temp
AS $fn$
WITH rec AS MATERIALIZED (
    SELECT * FROM pgmig._adopt_recorded(p_tool, p_rows)
), b AS MATERIALIZED (
    SELECT * FROM pgmig._batch_rows(p_batch)
), adopted AS MATERIALIZED (
    SELECT * FROM pgmig._adopt_versions(p_batch, p_tool, p_rows)
), matched AS (
    -- the tool's applied versions that have a file
    SELECT rec.*, b.name AS file_name, b.label, b.sql, b.version AS file_version,
           CASE WHEN p_tool = 'flyway' AND rec.checksum IS NOT NULL
                THEN coalesce((p_checksums->>(b.version::text))::integer, pgmig._flyway_checksum(b.sql)) END AS file_checksum,
           coalesce(p_checksums ? (b.version::text), false) AS checksum_given
    FROM rec JOIN b ON b.version = rec.version
    WHERE rec.state = 'applied'
)
SELECT NULL::bigint,
       format('%s holds %s rows; %s', p_table, jsonb_array_length(p_rows), pgmig._adopt_fix(p_tool, 'rows', p_table))
WHERE p_tool IN ('tern', 'golang-migrate') AND jsonb_array_length(p_rows) > 1
UNION ALL
SELECT rec.version,
       format('%s %s %s: %s',
              CASE WHEN rec.version IS NULL AND rec.state = 'failed' THEN 'repeatable migration' ELSE 'version' END,
              rec.tool_version,
              CASE rec.state
                  WHEN 'dirty' THEN 'is dirty: golang-migrate stopped in the middle of it (a statement failed)'
                  WHEN 'failed' THEN 'failed (success = false)'
                  WHEN 'rolled_back' THEN 'is recorded as rolled back (is_applied = false)'
                  WHEN 'unmapped' THEN 'has no pgmig version' END,
              pgmig._adopt_fix(p_tool, CASE rec.state WHEN 'dirty' THEN 'dirty' WHEN 'failed' THEN 'failed'
                                                      WHEN 'rolled_back' THEN 'rolled_back' ELSE 'unmapped' END, p_table))
FROM rec WHERE rec.state IN ('dirty', 'failed', 'rolled_back', 'unmapped')
UNION ALL
SELECT rec.version,
       format('version %s: recorded by %s, but no migration file has it; %s', rec.tool_version, p_tool,
              pgmig._adopt_fix(p_tool, 'no_file', p_table))
FROM rec
WHERE rec.state IN ('applied', 'through') AND rec.needs_file AND NOT EXISTS (SELECT FROM b WHERE b.version = rec.version)
UNION ALL
SELECT min(rec.version),
       format('version %s is recorded %s times (%s); %s', min(rec.version), count(*),
              string_agg(quote_literal(rec.tool_version), ', ' ORDER BY rec.tool_version), pgmig._adopt_fix(p_tool, 'duplicate', p_table))
FROM rec WHERE rec.state = 'applied'
GROUP BY rec.version HAVING count(*) > 1
UNION ALL
SELECT m.version,
       format('version %s: recorded as %s, but the file of version %s is named %s; %s', m.version, quote_literal(m.tool_version),
              m.version, quote_literal(m.file_name), pgmig._adopt_fix(p_tool, 'renamed', p_table))
FROM matched AS m WHERE p_tool = 'sql-migrate' AND m.description <> m.file_name
UNION ALL
SELECT m.version,
       format('version %s: recorded with the description %s, the file''s is %s; %s', m.tool_version, quote_literal(m.description),
              quote_literal(replace(m.file_name, '_', ' ')), pgmig._adopt_fix(p_tool, 'description', p_table))
FROM matched AS m WHERE p_tool = 'flyway' AND m.description <> '' AND m.description <> replace(m.file_name, '_', ' ')
UNION ALL
SELECT m.version,
       CASE WHEN m.file_checksum IS NULL
            THEN format('version %s: Flyway recorded checksum %s, and there is nothing to compare it with; %s', m.tool_version,
                        m.checksum, pgmig._adopt_fix(p_tool, 'no_checksum', p_table))
            ELSE format('version %s (%s): Flyway recorded checksum %s, the file''s is %s%s; %s', m.tool_version, m.file_name,
                        m.checksum, m.file_checksum,
                        CASE WHEN NOT m.checksum_given
                             THEN ' (computed from the batch''s SQL: for a file with Flyway placeholders, pass the checksum of the '
                                  'file as written in checksums =>)' ELSE '' END,
                        pgmig._adopt_fix(p_tool, 'checksum', p_table)) END
FROM matched AS m WHERE p_tool = 'flyway' AND m.checksum IS NOT NULL AND m.file_checksum IS DISTINCT FROM m.checksum
UNION ALL
-- A file older than the newest version the tool applied, which the tool did not apply: the
-- tool would still apply it (or refuse to go on); pgmig would have to run it out of order.
SELECT b.version,
       format('version %s (%s): not recorded by %s, though older than the newest version it applied (%s): %s would still apply it; %s',
              coalesce(b.label, b.version::text), b.name, p_tool,
              (SELECT coalesce(bb.label, a.version::text) FROM adopted AS a JOIN b AS bb ON bb.version = a.version
               ORDER BY a.version DESC LIMIT 1),
              p_tool, pgmig._adopt_fix(p_tool, 'pending', p_table))
FROM b
WHERE b.version < (SELECT max(a.version) FROM adopted AS a)
  AND NOT EXISTS (SELECT FROM adopted AS a WHERE a.version = b.version)
  AND NOT EXISTS (SELECT FROM pgmig.history AS h WHERE h.scope = p_scope AND h.version = b.version)
  -- (a version the tool recorded in a state of its own has its line above)
  AND NOT EXISTS (SELECT FROM rec WHERE rec.version = b.version AND rec.state IN ('dirty', 'failed', 'rolled_back'))
$fn$;

-- migrate_adopt: records as applied, without running them, the batch's migrations that p_tool's
-- history table says are applied, after checking that history under the migration lock: a
-- refusal (PM020) lists every problem with the tool's own fix, and changes nothing. Versions
-- pgmig already recorded are left as they are (so adopting again is a no-op), after the usual
-- drift check (PM002). The rows get kind 'baseline', the tool's own applied time and duration
-- where it kept them; one audit row ('baseline', details.adopted_from: the tool) keeps the
-- tool's rows as they were. p_drop_old drops the tool's table in the same transaction.
-- Returns one row per batch entry: 'adopted' ('pending_adopt' in a dry run, which takes the
-- lock and checks but records nothing), 'already_applied' or 'pending'.
--
-- No SET search_path clause: an unqualified table name is looked up in the caller's
-- search_path, as the tool looked it up (in a tenant scope: the tenant's schema first, where a
-- tool that migrated schema per tenant kept its table); the path is pinned right after (and put
-- back at the end), and the table is only ever named by its quoted schema and name.
CREATE OR REPLACE FUNCTION pgmig._adopt(p_batch jsonb, p_tool text, p_table text, p_checksums jsonb,
                                        p_drop_old boolean, p_dry_run boolean, p_lock_timeout interval,
                                        p_client_info text, p_scope text)
RETURNS TABLE (version bigint, name text, outcome text, duration interval, applied_at timestamptz)
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
AS $fn$
#variable_conflict use_column
DECLARE
    v_schemas     name[] := pg_catalog.current_schemas(false);
    v_caller_path text := pg_catalog.current_setting('search_path');
    v_schema      text;
    v_table       text;
    v_qualified   text;
    v_rows        jsonb;
    v_now         timestamptz;
    v_count       bigint;
    v_problems    text;
    v_adopt       pgmig.history_entry[];
    v_versions    bigint[];
    v_recorded    bigint := 0::bigint;
    v_repeatable  text;
    v_lock_was    text;
    v_scope       text;
    v_integrity   pgmig.integrity_state;
BEGIN
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    v_scope := pgmig._scope(p_scope);
    IF v_scope <> '' THEN
        v_schemas := ARRAY[v_scope::name] || v_schemas;
    END IF;
    v_now := clock_timestamp();
    PERFORM pgmig._assert_well_formed(p_batch);
    IF NOT EXISTS (SELECT FROM pgmig._adopt_tools() AS t WHERE t.tool = p_tool) THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM001',
            MESSAGE = format('pgmig: tool must be one of %s, got %s',
                             (SELECT string_agg(quote_literal(t.tool), ', ') FROM pgmig._adopt_tools() AS t),
                             coalesce(quote_literal(p_tool), 'NULL'));
    END IF;
    IF p_checksums IS NOT NULL AND (jsonb_typeof(p_checksums) <> 'object' OR EXISTS (
            SELECT FROM jsonb_each(p_checksums) AS c
            WHERE c.key !~ '^[0-9]{1,19}$' OR jsonb_typeof(c.value) <> 'number'
               OR c.value::text::numeric NOT BETWEEN -2147483648 AND 2147483647
               OR c.value::text::numeric <> trunc(c.value::text::numeric))) THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM001',
            MESSAGE = 'pgmig: checksums must be a JSON object mapping versions to the tool''s checksums (32-bit integers), '
                      'e.g. {"10200": -1234567}';
    END IF;
    SELECT t.schema_name, t.table_name INTO v_schema, v_table FROM pgmig._adopt_table(p_tool, p_table, v_schemas) AS t;
    v_qualified := format('%I.%I', v_schema, v_table);

    PERFORM pgmig._begin('migrate_adopt', p_lock_timeout, v_scope);
    v_integrity := pgmig._integrity_snapshot(v_scope);
    -- The tool's table is locked too (SHARE: readers pass, writers wait), so that a straggling
    -- deploy still running the old tool cannot record a migration between the read and the
    -- commit; waited for as long as the history lock may be.
    v_lock_was := current_setting('lock_timeout');
    IF p_lock_timeout IS NOT NULL THEN
        PERFORM set_config('lock_timeout', (ceil(extract(epoch FROM p_lock_timeout) * 1000))::bigint::text, true);
    END IF;
    BEGIN
        EXECUTE format('LOCK TABLE %I.%I IN SHARE MODE', v_schema, v_table);
    EXCEPTION WHEN lock_not_available THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM003',
            MESSAGE = format('pgmig: timed out waiting for a lock on %s''s table %s: a transaction is writing to it; nothing was adopted',
                             p_tool, v_qualified),
            HINT = format('Let %s finish (or stop it) before adopting its history.', p_tool);
    END;
    PERFORM set_config('lock_timeout', v_lock_was, true);
    EXECUTE format('SELECT coalesce(jsonb_agg(to_jsonb(t)), ''[]''::jsonb) FROM %I.%I AS t', v_schema, v_table) INTO v_rows;

    SELECT count(*), string_agg(p.problem, E'\n' ORDER BY p.version NULLS FIRST, p.problem)
      INTO v_count, v_problems
      FROM pgmig._adopt_problems(p_batch, p_tool, v_qualified, v_rows, p_checksums, v_scope) AS p;
    IF v_count > 0 THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM020',
            MESSAGE = format('pgmig: cannot adopt %s''s history (%s): %s problem%s; nothing was adopted',
                             p_tool, v_qualified, v_count, CASE WHEN v_count > 1 THEN 's' ELSE '' END),
            DETAIL = v_problems,
            HINT = format('Bring %s''s history to a clean state with %s itself, as each line says, then adopt again: pgmig adopts '
                          'what %s has done, never what it would still do or undo.', p_tool, p_tool, p_tool);
    END IF;
    -- What pgmig recorded already must still match the files, as for every other operation.
    PERFORM pgmig._assert_no_drift(p_batch, true, false, 'nothing was adopted', false, v_scope);

    v_adopt := ARRAY(
        SELECT (b.version, b.name, b.label, b.checksum, b.sql, b.down_sql, b.transactional,
                coalesce(a.applied_at, v_now), coalesce(a.duration, interval '0'), NULL)::pgmig.history_entry
        FROM pgmig._batch_rows(p_batch) AS b
        JOIN pgmig._adopt_versions(p_batch, p_tool, v_rows) AS a ON a.version = b.version
        WHERE NOT EXISTS (SELECT FROM pgmig.history AS h WHERE h.scope = v_scope AND h.version = b.version)
        ORDER BY b.version);
    v_versions := ARRAY(SELECT x.version FROM unnest(v_adopt) AS x ORDER BY x.version);
    SELECT string_agg(quote_literal(rec.description), ', ' ORDER BY rec.description) INTO v_repeatable
      FROM pgmig._adopt_recorded(p_tool, v_rows) AS rec WHERE rec.state = 'repeatable';

    IF NOT p_dry_run THEN
        v_recorded := pgmig._record_history(v_adopt, 'baseline', p_client_info, current_setting('application_name'), v_scope);
        PERFORM pgmig._assert_intact(v_integrity, '{}', '{}', v_recorded, v_versions,
                                     ARRAY(SELECT x.checksum FROM unnest(v_adopt) AS x ORDER BY x.version));
        IF p_drop_old THEN
            EXECUTE format('DROP TABLE %I.%I', v_schema, v_table);
        END IF;
        IF v_recorded > 0 OR p_drop_old THEN
            PERFORM pgmig._audit('baseline', coalesce(v_versions[cardinality(v_versions)], 0), p_client_info,
                    jsonb_build_object('adopted_from', p_tool, 'table', v_qualified, 'recorded', v_recorded,
                                       'versions', to_jsonb(v_versions), 'dropped', p_drop_old,
                                       'checksums', CASE WHEN p_tool <> 'flyway' THEN 'not recorded by the tool'
                                                         WHEN p_checksums IS NULL THEN 'computed from the SQL'
                                                         ELSE 'given by the client' END,
                                       'repeatable_not_adopted', v_repeatable,
                                       'tool_rows', v_rows),
                    v_scope);
        END IF;
    END IF;

    IF v_repeatable IS NOT NULL THEN
        RAISE NOTICE USING
            ERRCODE = 'PM000',
            MESSAGE = format('pgmig: Flyway''s repeatable migrations %s are not adopted: pgmig adopts versioned migrations only', v_repeatable);
    END IF;
    RAISE NOTICE USING
        ERRCODE = 'PM012',
        MESSAGE = CASE
            WHEN cardinality(v_versions) = 0
                THEN format('pgmig: nothing to adopt: %s''s table %s records no migration that pgmig has not recorded%s', p_tool, v_qualified,
                            CASE WHEN p_drop_old AND NOT p_dry_run THEN format('; dropped %s', v_qualified) ELSE '' END)
            WHEN p_dry_run
                THEN format('pgmig: dry run: would adopt %s migration%s from %s (%s); nothing was recorded', cardinality(v_versions),
                            CASE WHEN cardinality(v_versions) = 1 THEN '' ELSE 's' END, p_tool, v_qualified)
            ELSE format('pgmig: adopted %s migration%s from %s (%s) without running them%s', v_recorded,
                        CASE WHEN v_recorded = 1 THEN '' ELSE 's' END, p_tool, v_qualified,
                        CASE WHEN p_drop_old THEN format('; dropped %s', v_qualified) ELSE '' END) END;

    RETURN QUERY
        SELECT b.version, b.name,
               CASE WHEN b.version = ANY (v_versions) THEN CASE WHEN p_dry_run THEN 'pending_adopt' ELSE 'adopted' END
                    WHEN h.version IS NOT NULL THEN 'already_applied'
                    ELSE 'pending' END,
               NULL::interval,
               CASE WHEN b.version = ANY (v_versions) THEN (SELECT x.applied_at FROM unnest(v_adopt) AS x WHERE x.version = b.version)
                    ELSE h.applied_at END
        FROM pgmig._batch_rows(p_batch) AS b
        LEFT JOIN pgmig.history AS h ON h.scope = v_scope AND h.version = b.version
        ORDER BY b.version;
    PERFORM pg_catalog.set_config('search_path', v_caller_path, true);
END
$fn$;
