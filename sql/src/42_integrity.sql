-- Bookkeeping a migration cannot fool (docs/sql-api.md, "What is guaranteed"). Right after
-- the history lock is granted, before the first migration, _integrity_snapshot notes
-- pgmig's own objects and the history; after the engine wrote its own rows and before the
-- transaction can commit, _assert_intact proves that they are intact, that nothing changed
-- them in between, and that the history holds exactly the rows the engine wrote. Migrations
-- cannot write the bookkeeping at all (_history_guard); this covers what a trigger cannot
-- see: DDL on pgmig's objects (a disabled or dropped trigger, a replaced function, a rule or
-- trigger that swallows or rewrites the engine's INSERT, a new column, row security,
-- ownership...).

-- The xmin of every catalog row that defines pgmig's objects, in a fixed order. Any change
-- to one of them writes a new row version, whose xmin is the transaction that made it: so a
-- change made and undone again (DISABLE TRIGGER, DELETE, ENABLE TRIGGER) shows too, and
-- contents need not be compared. (VACUUM and ANALYZE update pg_class in place, without a new
-- xmin: they do not count.) The rows: the schema, its relations (tables, indexes, sequences,
-- types: a new, dropped or rebuilt one shows, and so do a new column, CHECK constraint, the
-- first rule, row security, an inheritance child, a new owner or privilege, which all change
-- pg_class), the columns and triggers of pgmig's five tables, the ALTER ROLE/DATABASE
-- defaults of pgmig.maintenance in this database, and the functions of schema pgmig whose name starts with an
-- underscore (an index range scan), plus the non-transactional protocol's and engine_version.
-- Rules, policies and inheritance that leave pg_class alone are refused outright by
-- _integrity_problems; a changed column default or constraint mode does not count (the
-- engine names every column it writes). As few catalogs and operators as that, and no text:
-- a new connection (every push opens one) pays for each it uses the first time. PL/pgSQL
-- rather than SQL: its plan is cached, a SQL function's is made again at every call; and a
-- generic plan at once (plan_cache_mode, for these checkers alone), not a new custom plan at
-- each of the first five calls of a connection.
CREATE OR REPLACE FUNCTION pgmig._integrity_objects()
RETURNS xid[]
LANGUAGE plpgsql STABLE
SET search_path TO pg_catalog, pg_temp
SET plan_cache_mode TO force_generic_plan
AS $fn$
DECLARE
    v_ns     oid := to_regnamespace('pgmig')::oid;
    v_tables oid[] := ARRAY[to_regclass('pgmig.history'), to_regclass('pgmig.audit'),
                            to_regclass('pgmig.nontx_run'), to_regclass('pgmig.install_log'),
                            to_regclass('pgmig.repeatable')]::oid[];
    v_db     oid := (SELECT d.oid FROM pg_database AS d WHERE d.datname = current_database());
BEGIN
    RETURN ARRAY(SELECT n.xmin FROM pg_namespace AS n WHERE n.oid = v_ns)
        || ARRAY(SELECT c.xmin FROM pg_class AS c WHERE c.relnamespace = v_ns ORDER BY c.oid)
        || ARRAY(SELECT a.xmin FROM pg_attribute AS a WHERE a.attrelid = ANY (v_tables) ORDER BY a.attrelid, a.attnum)
        || ARRAY(SELECT g.xmin FROM pg_trigger AS g WHERE g.tgrelid = ANY (v_tables) ORDER BY g.oid)
        || ARRAY(SELECT d.xmin FROM pg_db_role_setting AS d
                 WHERE d.setdatabase IN (0, v_db) AND d.setconfig::text ILIKE '%pgmig.maintenance=%'
                 ORDER BY d.setdatabase, d.setrole)
        || pgmig._functions_digest()
        || ARRAY(SELECT p.xmin FROM pg_proc AS p
                 WHERE p.pronamespace = v_ns AND p.proname = ANY ('{engine_version,nontx_begin,nontx_progress,nontx_finish}'::name[])
                 ORDER BY p.oid);
END
$fn$;

-- The xmin of pgmig's functions whose name starts with an underscore, in oid order: every
-- checker among them. A migration run as their owner can replace a checker, and PostgreSQL
-- then runs the new body at the next call; only a function already running keeps its own
-- for the call. So migrate_apply, after the migrations and before it calls _assert_intact,
-- compares this with _integrity_snapshot's in its own body (docs/sql-api.md, "What is
-- guaranteed"); this function shows the query it inlines.
CREATE OR REPLACE FUNCTION pgmig._functions_digest()
RETURNS xid[]
LANGUAGE plpgsql STABLE
SET search_path TO pg_catalog, pg_temp
SET plan_cache_mode TO force_generic_plan
AS $fn$
BEGIN
    RETURN ARRAY(SELECT p.xmin FROM pg_proc AS p
                 WHERE p.pronamespace = to_regnamespace('pgmig') AND p.proname >= '_' AND p.proname < '`'
                 ORDER BY p.oid);
END
$fn$;

-- The migrations a PM013 names: those whose SQL mentions pgmig, if any, else all that ran
-- ('no migration ran' when none did). p_ran_sql NULL: their SQL is read from the history
-- (where the engine just recorded it), when it is still there. Only on the way to an error.
CREATE OR REPLACE FUNCTION pgmig._suspects(p_ran_versions bigint[], p_ran_names text[], p_ran_sql text[] DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path TO pg_catalog, pg_temp
AS $fn$
DECLARE
    v_versions bigint[];
    v_names    text[];
    v_sql      text[] := p_ran_sql;
BEGIN
    IF v_sql IS NULL AND to_regclass('pgmig.history') IS NOT NULL THEN
        BEGIN
            v_sql := ARRAY(SELECT h.sql FROM unnest(p_ran_versions) WITH ORDINALITY AS u(version, o)
                           LEFT JOIN pgmig.history AS h ON h.version = u.version ORDER BY u.o);
        EXCEPTION WHEN OTHERS THEN
            v_sql := NULL; -- (a table past recognition: name them all)
        END;
    END IF;
    SELECT array_agg(u.version ORDER BY u.version), array_agg(u.name ORDER BY u.version) INTO v_versions, v_names
      FROM unnest(p_ran_versions, p_ran_names, v_sql) AS u(version, name, sql)
     WHERE u.sql ~* 'pgmig';
    IF v_versions IS NULL THEN
        v_versions := p_ran_versions;
        v_names := p_ran_names;
    END IF;
    IF coalesce(cardinality(v_versions), 0) = 0 THEN
        RETURN 'this transaction before the call (no migration ran)';
    END IF;
    RETURN pgmig._migrations_text(v_versions, v_names);
END
$fn$;

-- What is wrong with pgmig's objects as they are now, whoever did it, one problem a row:
-- what the engine's guarantees rest on, and what a trigger on the history cannot watch.
-- (tgtype 62: BEFORE, FOR EACH STATEMENT, INSERT, DELETE, UPDATE and TRUNCATE.)
-- Owners: one role owns the history, its fellow tables and the functions that guard and run
-- migrations (the installer); a role that owns one of them could disable or replace it
-- later, outside any call.
-- Runs once a call, in a new connection as often as not (every push opens one), where every
-- statement is planned for the first time and every catalog read for the first time: so one
-- statement, over the catalogs the digest reads anyway, with pg_class's flags standing for
-- the catalogs it would otherwise read (relhasrules for rules, relrowsecurity for policies,
-- relhassubclass for children); only when a flag is up (PostgreSQL leaves relhasrules and
-- relhassubclass up after the last rule or child is gone) are rules, policies and children
-- looked up, to be named.
CREATE OR REPLACE FUNCTION pgmig._integrity_problems()
RETURNS SETOF text
LANGUAGE plpgsql STABLE
SET search_path TO pg_catalog, pg_temp
SET plan_cache_mode TO force_generic_plan
AS $fn$
DECLARE
    v_guard   oid := to_regprocedure('pgmig._history_guard()')::oid;
    v_exec    oid := to_regprocedure('pgmig._execute_as_caller(text,text,text,text[],bigint,text,pgmig.caller_state,integer[])')::oid;
    v_owner   oid := (SELECT c.relowner FROM pg_class AS c WHERE c.oid = to_regclass('pgmig.history'));
    v_db      oid := (SELECT d.oid FROM pg_database AS d WHERE d.datname = current_database());
    v_tables  regclass[] := ARRAY[to_regclass('pgmig.history'), to_regclass('pgmig.audit'), to_regclass('pgmig.nontx_run'),
                                  to_regclass('pgmig.repeatable')];
    v_names   text[] := '{history,audit,nontx_run,repeatable}'::text[];
    v_trigs   text[] := '{history_append_only,audit_append_only,nontx_run_guard,repeatable_append_only}'::text[];
    v_flagged boolean;
BEGIN
    IF to_regnamespace('pgmig') IS NULL THEN
        RETURN NEXT 'schema pgmig is missing';
        RETURN;
    END IF;
    RETURN QUERY
    WITH t (name, trig, rel) AS (SELECT * FROM unnest(v_names, v_trigs, v_tables))
    SELECT 'the guard function pgmig._history_guard() is missing' WHERE v_guard IS NULL
    UNION ALL
    SELECT format('table pgmig.%s is missing', t.name) FROM t WHERE t.rel IS NULL
    UNION ALL
    SELECT x.problem
    FROM t JOIN pg_class AS c ON c.oid = t.rel
    LEFT JOIN pg_trigger AS g ON g.tgrelid = c.oid AND g.tgname = t.trig,
    LATERAL (VALUES
        (CASE WHEN c.relkind <> 'r' THEN format('pgmig.%s is not an ordinary table', t.name) END),
        (CASE WHEN c.relowner <> v_owner
              THEN format('pgmig.%s is owned by %s, not by %s, the owner of pgmig.history', t.name, c.relowner::regrole, v_owner::regrole) END),
        (CASE WHEN g.oid IS NULL THEN format('trigger %s on pgmig.%s is missing', t.trig, t.name)
              WHEN g.tgenabled <> 'A'
              THEN format('trigger %s on pgmig.%s is %s, not ENABLE ALWAYS', t.trig, t.name,
                          CASE g.tgenabled WHEN 'D' THEN 'disabled' WHEN 'R' THEN 'enabled for replicas only' ELSE 'enabled for origin sessions only' END) END),
        (CASE WHEN g.oid IS NOT NULL AND (g.tgfoid IS DISTINCT FROM v_guard OR g.tgtype <> 62)
              THEN format('trigger %s on pgmig.%s no longer runs pgmig._history_guard() before every INSERT, UPDATE, DELETE and TRUNCATE', t.trig, t.name) END),
        (CASE WHEN c.relrowsecurity OR c.relforcerowsecurity THEN format('pgmig.%s has row level security enabled', t.name) END)
    ) AS x (problem)
    WHERE x.problem IS NOT NULL
    UNION ALL
    SELECT format('pgmig.%s has a trigger of someone else''s: %s', t.name, quote_ident(g.tgname))
    FROM t JOIN pg_trigger AS g ON g.tgrelid = t.rel AND g.tgname <> t.trig AND NOT g.tgisinternal
    UNION ALL
    -- Exactly once (per scope) rests on the primary key.
    SELECT 'pgmig.history lost its primary key on (scope, version)'
    WHERE NOT EXISTS (SELECT FROM pg_index AS i
                      WHERE i.indrelid = v_tables[1] AND i.indisprimary AND i.indisvalid AND i.indnatts = 2
                        AND i.indkey[0] = (SELECT a.attnum FROM pg_attribute AS a WHERE a.attrelid = v_tables[1] AND a.attname = 'scope')
                        AND i.indkey[1] = (SELECT a.attnum FROM pg_attribute AS a WHERE a.attrelid = v_tables[1] AND a.attname = 'version'))
    UNION ALL
    SELECT format('function %s is owned by %s, not by %s, the owner of pgmig.history', p.oid::regprocedure, p.proowner::regrole, v_owner::regrole)
    FROM pg_proc AS p WHERE p.oid IN (v_guard, v_exec) AND p.proowner <> v_owner
    UNION ALL
    -- For any role, in this database or all of them: every session that gets it would have
    -- the history guard's switch on (and the guard refuses to honour it).
    SELECT format('pgmig.maintenance is set by ALTER %s: %s', CASE WHEN d.setrole = 0 THEN 'DATABASE' ELSE 'ROLE ' || d.setrole::regrole::text END, c)
    FROM pg_db_role_setting AS d, unnest(d.setconfig) AS c
    WHERE lower(c) LIKE 'pgmig.maintenance=%' AND d.setdatabase IN (0, v_db);

    SELECT bool_or(c.relhasrules OR c.relrowsecurity OR c.relforcerowsecurity OR c.relhassubclass) INTO v_flagged
      FROM pg_class AS c WHERE c.oid = ANY (v_tables);
    IF v_flagged THEN
        RETURN QUERY
        WITH t (name, rel) AS (SELECT * FROM unnest(v_names, v_tables))
        SELECT format('pgmig.%s has a rule: %s', t.name, quote_ident(w.rulename)) FROM t JOIN pg_rewrite AS w ON w.ev_class = t.rel
        UNION ALL
        SELECT format('pgmig.%s has a row security policy: %s', t.name, quote_ident(p.polname)) FROM t JOIN pg_policy AS p ON p.polrelid = t.rel
        UNION ALL
        SELECT format('pgmig.%s has a child table, %s', t.name, h.inhrelid::regclass) FROM t JOIN pg_inherits AS h ON h.inhparent = t.rel;
    END IF;
END
$fn$;

-- Right after the history lock is granted, before the first migration: notes pgmig's
-- objects and the history for _assert_intact. (Whether they are intact is checked once, by
-- _assert_intact, before the call can commit: every check costs a new connection its first
-- planning, and a call that finds them tampered with before it fails either way.) The history
-- is counted in scope p_scope only: other tenants commit theirs meanwhile (14_scope.sql).
CREATE OR REPLACE FUNCTION pgmig._integrity_snapshot(p_scope text)
RETURNS pgmig.integrity_state
LANGUAGE plpgsql STABLE
SET search_path TO pg_catalog, pg_temp
SET plan_cache_mode TO force_generic_plan
AS $fn$
DECLARE
    s pgmig.integrity_state;
BEGIN
    s.functions := pgmig._functions_digest();
    s.objects := pgmig._integrity_objects();
    s.scope := p_scope;
    SELECT count(*) INTO s.history_rows FROM pgmig.history AS h WHERE h.scope = p_scope;
    RETURN s;
END
$fn$;

-- After the engine wrote its own rows and before the transaction can commit: raises PM013
-- unless pgmig's objects are exactly as p_snapshot saw them and intact, and the history holds
-- exactly the rows the engine wrote: p_history_delta rows more than at the snapshot, and for
-- each p_written_versions[i] a row with checksum p_written_checksums[i] (NULL: no row, the
-- version was removed). p_ran_versions/p_ran_names are the migrations (or down migrations)
-- this transaction ran: the suspects the message names (those whose SQL, p_ran_sql or else
-- the history's, mentions pgmig, if any; else all). Costs about 1 µs per written row.
CREATE OR REPLACE FUNCTION pgmig._assert_intact(p_snapshot pgmig.integrity_state,
                                                p_ran_versions bigint[], p_ran_names text[],
                                                p_history_delta bigint,
                                                p_written_versions bigint[], p_written_checksums text[],
                                                p_ran_sql text[] DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path TO pg_catalog, pg_temp
SET plan_cache_mode TO force_generic_plan
AS $fn$
DECLARE
    v_problems text[];
    v_changed  boolean;
    v_rows     bigint;
    v_present  bigint;
    v_absent   bigint;
BEGIN
    -- Structure first: row security could hide rows from the counts below.
    v_problems := ARRAY(SELECT pgmig._integrity_problems());
    v_changed := to_regnamespace('pgmig') IS NULL OR pgmig._integrity_objects() IS DISTINCT FROM p_snapshot.objects;
    IF v_problems <> '{}' AND NOT v_changed THEN
        -- Not this call's doing: altered before it, outside pgmig.
        RAISE EXCEPTION USING
            ERRCODE = 'PM013',
            MESSAGE = 'pgmig: pgmig''s own objects are not intact (altered before this call, outside pgmig); nothing was applied',
            DETAIL = array_to_string(v_problems, E'\n'),
            HINT = 'Reinstall the engine (pgmig install, or psql -f pgmig.sql), which restores its triggers and functions, '
                || 'and remove what it lists as someone else''s (triggers, rules, policies, child tables, ALTER ROLE/DATABASE ... SET pgmig.maintenance).';
    END IF;
    IF v_problems = '{}' AND v_changed THEN
        v_problems := v_problems || 'the definition of pgmig''s objects changed (a table, column, default, constraint, index, trigger, function, owner or privilege of schema pgmig)'::text;
    END IF;
    IF v_problems = '{}' THEN
        SELECT count(*) INTO v_rows FROM pgmig.history AS h WHERE h.scope = p_snapshot.scope;
        IF v_rows <> p_snapshot.history_rows + p_history_delta THEN
            v_problems := v_problems || format('pgmig.history has %s rows, %s expected (%s before, %s written by the engine)',
                                               v_rows, p_snapshot.history_rows + p_history_delta, p_snapshot.history_rows, p_history_delta);
        END IF;
        -- Counted first (a hash join), itemized only when something is off.
        SELECT count(*) INTO v_present
          FROM unnest(p_written_versions, p_written_checksums) AS w(version, checksum)
          JOIN pgmig.history AS h ON h.scope = p_snapshot.scope AND h.version = w.version AND h.checksum = w.checksum;
        SELECT count(*) INTO v_absent
          FROM pgmig.history AS h
         WHERE h.scope = p_snapshot.scope AND h.version = ANY (ARRAY(SELECT w.version FROM unnest(p_written_versions, p_written_checksums) AS w(version, checksum)
                                      WHERE w.checksum IS NULL));
        IF v_present <> (SELECT count(*) FROM unnest(p_written_checksums) AS c WHERE c IS NOT NULL) OR v_absent <> 0 THEN
            v_problems := v_problems || ARRAY(
                SELECT CASE WHEN w.checksum IS NULL THEN format('version %s is still in pgmig.history', w.version)
                            WHEN h.version IS NULL THEN format('version %s is not in pgmig.history', w.version)
                            ELSE format('version %s is recorded with checksum %s, not %s', w.version, h.checksum, w.checksum) END
                FROM unnest(p_written_versions, p_written_checksums) AS w(version, checksum)
                LEFT JOIN pgmig.history AS h ON h.scope = p_snapshot.scope AND h.version = w.version
                WHERE (w.checksum IS NULL) <> (h.version IS NULL) OR h.checksum IS DISTINCT FROM coalesce(w.checksum, h.checksum)
                ORDER BY w.version);
        END IF;
    END IF;
    IF v_problems = '{}' THEN
        RETURN;
    END IF;

    -- Which migration did it cannot be told afterwards; the ones that name pgmig in their SQL
    -- are the likely ones.
    RAISE EXCEPTION USING
        ERRCODE = 'PM013',
        MESSAGE = format('pgmig: the bookkeeping was tampered with during this call by %s; nothing was applied',
                         pgmig._suspects(p_ran_versions, p_ran_names, p_ran_sql)),
        DETAIL = array_to_string(v_problems, E'\n'),
        HINT = 'Migrations must not touch pgmig''s own objects (schema pgmig): the history would no longer say what was applied, and later pushes would apply migrations again.';
END
$fn$;

-- After the last migration of a transaction, before the engine records anything: runs the
-- deferred constraint checks and constraint triggers now, beneath the migration executor,
-- instead of at COMMIT after the bookkeeping was verified (where a migration's deferred
-- trigger could still write the history, and where its error would name no migration).
-- Then defers every deferrable constraint again for the rest of the caller's transaction
-- (PostgreSQL cannot show the modes it had; deferring is the one that never fails a valid
-- transaction). Does nothing when the database has no deferrable trigger at all.
-- The first four arguments as for _execute_as_caller; p_ran_versions/p_ran_names name the
-- migrations in the PM010 warning that precedes a failure.
CREATE OR REPLACE FUNCTION pgmig._execute_deferred(p_caller_path text, p_caller_role text, p_settings text[],
                                                   p_caller pgmig.caller_state,
                                                   p_ran_versions bigint[], p_ran_names text[])
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path TO pg_catalog, pg_temp
AS $fn$
DECLARE
    v_state text;
    v_msg   text;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_trigger AS g WHERE g.tgdeferrable) THEN
        RETURN;
    END IF;
    BEGIN
        PERFORM pgmig._execute_as_caller('SET CONSTRAINTS ALL IMMEDIATE; SET CONSTRAINTS ALL DEFERRED',
                                         p_caller_path, p_caller_role, p_settings, NULL,
                                         'deferred constraints and triggers', p_caller);
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_msg = MESSAGE_TEXT;
        RAISE WARNING USING
            ERRCODE = 'PM010',
            MESSAGE = format('pgmig: a deferred constraint or trigger pending after %s failed with SQLSTATE %s; nothing was applied',
                             pgmig._migrations_text(p_ran_versions, p_ran_names), v_state);
        IF v_state = 'PM008' THEN
            RAISE EXCEPTION USING
                ERRCODE = 'PM008',
                MESSAGE = format('pgmig: a deferred trigger of %s tried to change pgmig''s bookkeeping: %s; nothing was applied',
                                 pgmig._migrations_text(p_ran_versions, p_ran_names), regexp_replace(v_msg, '^pgmig: ', '')),
                HINT = 'Migrations must not touch pgmig''s own objects; the history is changed only by migrate_rollback and migrate_repair.';
        END IF;
        RAISE;
    END;
END
$fn$;
