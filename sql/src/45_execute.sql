-- Before 0.1.0 settled, _execute_as_caller took no snapshot.
DROP FUNCTION IF EXISTS pgmig._execute_as_caller(text, text, text, text[], bigint, text);
DROP FUNCTION IF EXISTS pgmig._execute_as_caller(text, text, text, text[], bigint, text, pgmig.session_state);
-- Before 0.2.0 settled, it ran the migration as one string only.
DROP FUNCTION IF EXISTS pgmig._execute_as_caller(text, text, text, text[], bigint, text, pgmig.caller_state);

-- Where a migration failed, from its error's CONTEXT (p_context) and what _execute_as_caller
-- ran (p_sql, p_statements): the number of the failing statement (NULL when it ran as one
-- string, or the error names none: a syntax error, whose position PostgreSQL reports), the line
-- of the migration it starts on, and the part of the CONTEXT inside the migration (the frames
-- of a DO block or a function it called: "PL/pgSQL function inline_code_block line 3 at
-- RAISE"), pgmig's own frames cut off. Found by the text the engine ran, not by wording:
-- PostgreSQL's CONTEXT is translated with lc_messages.
CREATE OR REPLACE FUNCTION pgmig._failed_statement(p_context text, p_sql text, p_statements integer[],
                                                   OUT statement integer, OUT line integer, OUT context text)
LANGUAGE plpgsql IMMUTABLE
SET search_path TO pg_catalog, pg_temp
AS $fn$
DECLARE
    v_ran   text := p_sql;   -- the text whose frame ends the migration's part of the CONTEXT
    v_start integer;
    v_at    integer;
BEGIN
    statement := substring(p_context FROM '/\*pgmig:statement ([0-9]+)\*/')::integer;
    IF statement IS NOT NULL AND statement BETWEEN 1 AND cardinality(p_statements) THEN
        v_start := p_statements[statement];
        line := 1 + length(left(p_sql, v_start)) - length(replace(left(p_sql, v_start), E'\n', ''));
        v_ran := substr(p_sql, CASE WHEN statement = 1 THEN 1 ELSE v_start + 1 END,
                        coalesce(p_statements[statement + 1], length(p_sql)) - CASE WHEN statement = 1 THEN 0 ELSE v_start END);
    ELSE
        statement := NULL;
    END IF;
    v_at := position(v_ran IN coalesce(p_context, ''));
    IF v_at > 1 THEN
        -- the frame quoting what ran starts on the line of the quote
        context := nullif(btrim(regexp_replace(left(p_context, v_at - 1), '[^\n]*$', ''), E' \n'), '');
    END IF;
END
$fn$;

-- The migration executor: runs one migration's SQL (or its down SQL) as the caller would:
-- with the caller's search_path and role. Then undoes whatever the SQL changed in the
-- session (search_path, role, the settings of _settings(), custom settings it names) so that
-- nothing leaks into the bookkeeping or the next migration; _session_restore puts back the
-- rest when the call ends. p_caller is the call's _session_snapshot(...).caller (optional:
-- without it no PM014 warnings, and the caller is assumed to hold SET LOCAL values). Called with search_path pinned to pg_catalog, pg_temp; returns the
-- same way.
-- p_statements (the batch's "statements": where each statement starts in p_sql, in
-- characters, 0-based), when it lists more than one, makes it run the statements one by one,
-- each followed by a comment naming it, `/*pgmig:statement N*/`: an error's CONTEXT then
-- quotes the failing statement with its number (_failed_statement reads it), so that a
-- runtime error (division by zero, a foreign key violation, a RAISE), which has no position,
-- can be traced to its statement and line. One EXECUTE per statement, no subtransaction.
-- The history guard (_history_guard) recognises migration code by this function's frame in
-- the call stack: everything a migration runs runs beneath it. Keep the name.
CREATE OR REPLACE FUNCTION pgmig._execute_as_caller(p_sql text, p_caller_path text,
                                                    p_caller_role text, p_settings text[],
                                                    p_version bigint, p_name text,
                                                    p_caller pgmig.caller_state DEFAULT NULL,
                                                    p_statements integer[] DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE
AS $fn$
-- (EXECUTE of the migration's SQL is the point of this function; v_ignored holds the value of
-- calls made for their effect.)
-- @plpgsql_check_options: security_warnings = false, extra_warnings = false
DECLARE
    v_parts      text[];
    v_path_after text;
    v_role_after text;
    v_session    text := pg_catalog.session_user()::text;
    v_ignored    text;
    v_custom     text[];
    v_before     text[];
    v_now        text;
    v_local      boolean;
    -- How messages name the migration (pgmig._what, spelled out: a migration may have dropped
    -- schema pgmig or changed the session authorization to a role that cannot use it).
    v_what       text := CASE WHEN p_version IS NOT NULL THEN format('migration %s (%s)', p_version, p_name)
                              WHEN p_name = 'deferred constraints and triggers' THEN 'the ' || p_name
                              ELSE 'repeatable migration ' || p_name END;
BEGIN
    -- Custom settings ('myapp.tenant') are listed nowhere, not even in pg_settings: the ones
    -- the migration names in a SET, RESET or set_config are read before it runs and put back
    -- after. The patterns are a cheap pre-check for the rare migration that does.
    IF p_sql ILIKE '%set%' AND p_sql ~* '(set_config|\m(re)?set\s+(session\s+|local\s+)?"?[a-z_][a-z0-9_$]*"?\s*\.)' THEN
        v_custom := pgmig._custom_settings_in(p_sql);
        v_before := ARRAY(SELECT pg_catalog.current_setting(n, true) FROM unnest(v_custom) WITH ORDINALITY AS u(n, o) ORDER BY o);
    END IF;

    -- Between the two set_config calls only EXECUTE and pg_catalog-qualified calls: the SQL
    -- may point search_path at schemas holding hostile functions and operators, and even
    -- "IS DISTINCT FROM" resolves an operator through search_path.
    -- (Assignments rather than PERFORM: an assignment is evaluated as a simple expression,
    -- PERFORM starts an executor each time, ~2 µs; this runs once per migration.)
    IF pg_catalog.cardinality(p_statements) > 1 THEN
        -- Cut before the caller's search_path is set (the cutting uses operators); the first
        -- statement takes whatever precedes it (comments).
        v_parts := ARRAY(SELECT pg_catalog.substr(p_sql, CASE WHEN s.o = 1 THEN 1 ELSE s.off + 1 END,
                                                  coalesce(lead(s.off) OVER (ORDER BY s.o), pg_catalog.length(p_sql))
                                                  - CASE WHEN s.o = 1 THEN 0 ELSE s.off END)
                                || E'\n/*pgmig:statement ' || s.o || '*/'
                         FROM unnest(p_statements) WITH ORDINALITY AS s(off, o) ORDER BY s.o);
        v_ignored := pg_catalog.set_config('search_path', p_caller_path, true);
        FOR i IN 1 .. pg_catalog.cardinality(v_parts) LOOP
            EXECUTE v_parts[i];
        END LOOP;
    ELSE
        v_ignored := pg_catalog.set_config('search_path', p_caller_path, true);
        EXECUTE p_sql;
    END IF;
    v_path_after := pg_catalog.current_setting('search_path');
    v_role_after := pg_catalog.current_setting('role');
    v_ignored := pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);

    -- SET SESSION AUTHORIZATION cannot be put back from here the way a role can, and the
    -- bookkeeping would run as someone else: refuse (the error rolls the batch back, which
    -- also undoes the SET).
    IF session_user::text IS DISTINCT FROM v_session THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM005',
            MESSAGE = format('pgmig: %s changed the session authorization (SET SESSION AUTHORIZATION); nothing was applied',
                             v_what),
            HINT = 'Use SET LOCAL ROLE in the migration instead; pgmig puts the role back after each migration.';
    END IF;

    -- At session level: a plain SET ROLE would otherwise survive the commit (see
    -- _session_restore on why a SET LOCAL of the caller's cannot be told apart).
    IF v_role_after IS DISTINCT FROM p_caller_role THEN
        PERFORM set_config('role', p_caller_role, false);
        IF p_caller.may_be_local AND p_caller_role <> 'none' THEN
            PERFORM pgmig._warn_restored('role', p_caller_role, v_what);
        END IF;
    END IF;
    -- The bookkeeping needs the history table where it was.
    IF to_regclass('pgmig.history') IS NULL THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM005',
            MESSAGE = format('pgmig: %s dropped, renamed or moved pgmig.history (or schema pgmig); nothing was applied',
                             v_what),
            HINT = 'Migrations must not touch pgmig''s own objects.';
    END IF;

    IF v_path_after IS DISTINCT FROM p_caller_path THEN
        -- A plain SET changed the session value, which would otherwise survive the commit:
        -- put it back (at session level), then pin the safe path again for this transaction.
        -- The session default goes back with RESET, which restores its source too.
        -- (Qualified: between the two, names resolve through the caller's search_path.)
        IF p_caller_path = p_caller.search_path_reset THEN
            RESET search_path;
        ELSE
            v_ignored := pg_catalog.set_config('search_path', p_caller_path, false);
        END IF;
        v_ignored := pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
        -- For _unpin_search_path: the session value was put back (transaction-local note).
        v_ignored := pg_catalog.set_config('pgmig.search_path_restored', 'on', true);
        IF p_caller.may_be_local AND p_caller_path IS DISTINCT FROM p_caller.search_path_reset THEN
            PERFORM pgmig._warn_restored('search_path', p_caller_path, v_what);
        END IF;
    END IF;
    IF pgmig._settings() IS DISTINCT FROM p_settings THEN
        PERFORM pgmig._restore_settings(p_settings, p_caller, p_version, p_name);
    END IF;
    IF v_custom IS NOT NULL THEN
        v_local := coalesce(p_caller.may_be_local, true);
        FOR i IN 1 .. cardinality(v_custom) LOOP
            v_now := current_setting(v_custom[i], true);
            -- Also when it reads as before, if no SET LOCAL of the caller can lie beneath (none
            -- possible, or the setting empty): a session-level SET hidden beneath a SET LOCAL of
            -- the old value shows only at COMMIT.
            IF v_now IS DISTINCT FROM v_before[i]
               OR (v_now IS NOT NULL AND (coalesce(v_before[i], '') = '' OR NOT v_local)) THEN
                -- A custom setting cannot be undefined again: one that did not exist is left empty.
                PERFORM set_config(v_custom[i], coalesce(v_before[i], ''), false);
                IF p_caller.may_be_local AND v_before[i] <> '' AND v_now IS DISTINCT FROM v_before[i] THEN
                    PERFORM pgmig._warn_restored(v_custom[i], v_before[i], v_what);
                END IF;
            END IF;
        END LOOP;
    END IF;
END
$fn$;

-- For errors of a migration that have a better explanation than PostgreSQL's own message,
-- raises pgmig's error instead; returns normally otherwise (the caller then re-raises the
-- original error unchanged, which keeps its position). p_what is 'migration' or 'rollback of
-- migration'. The subtransaction of the failed work is already rolled back when this runs.
CREATE OR REPLACE FUNCTION pgmig._raise_explained(p_what text, p_version bigint, p_name text,
                                                  p_state text, p_message text,
                                                  p_commit_points text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path TO pg_catalog, pg_temp
AS $fn$
BEGIN
    IF p_state = '2D000' OR (p_state = '0A000' AND p_message LIKE 'EXECUTE of transaction commands%') THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM005',
            MESSAGE = format('pgmig: %s contains transaction control (BEGIN, COMMIT, ROLLBACK, SAVEPOINT); nothing was applied',
                             pgmig._what(p_version, p_name, p_what)),
            DETAIL = 'PostgreSQL said: ' || p_message,
            HINT = 'pgmig runs it inside one transaction: remove the transaction control statements. '
                || 'For a change that must commit before the next migration, mark it with ---- pgmig: commit-after ---- ("commit_after": true).';
    END IF;
    IF p_state = '25001' THEN
        -- One SQLSTATE, three kinds of statement; only the third runs anywhere else.
        -- (PostgreSQL words these messages with the statement's own SQL keywords, untranslated.)
        IF p_message ~ '^DISCARD' THEN
            RAISE EXCEPTION USING
                ERRCODE = 'PM005',
                MESSAGE = format('pgmig: %s resets the session (DISCARD); nothing was applied', pgmig._what(p_version, p_name, p_what)),
                DETAIL = 'PostgreSQL said: ' || p_message,
                HINT = 'DISCARD ALL throws away everything the session holds: the caller''s settings, prepared statements, temporary tables, listeners. '
                    || 'A migration must not do that, in a transaction or out of one (as a non-transactional migration it would reset only pgmig''s own connection). '
                    || 'Remove it: pgmig already puts back whatever a migration changes in the session.';
        END IF;
        IF p_message ~ 'SET TRANSACTION|read-write mode' THEN
            RAISE EXCEPTION USING
                ERRCODE = 'PM005',
                MESSAGE = format('pgmig: %s changes its transaction''s characteristics; nothing was applied', pgmig._what(p_version, p_name, p_what)),
                DETAIL = 'PostgreSQL said: ' || p_message,
                HINT = pgmig._hint_transaction_characteristics();
        END IF;
        RAISE EXCEPTION USING
            ERRCODE = 'PM005',
            MESSAGE = format('pgmig: %s cannot run inside a transaction; nothing was applied',
                             pgmig._what(p_version, p_name, p_what)),
            DETAIL = 'PostgreSQL said: ' || p_message,
            HINT = 'Mark the migration non-transactional (tern: the line ---- tern: disable-tx ----; batch: "transactional": false) and apply it with `pgmig push`.';
    END IF;
    IF p_state = '55P04' THEN
        RAISE EXCEPTION USING
            ERRCODE = '55P04',
            MESSAGE = format('pgmig: %s: %s; nothing was applied', pgmig._what(p_version, p_name, p_what), p_message),
            DETAIL = 'A new enum value cannot be used in the transaction that added it, and migrate_apply runs the whole batch in one transaction.',
            HINT = CASE WHEN p_commit_points IS NOT NULL
                        THEN format('This batch marks version %s with commit_after: from SQL, apply up to it first '
                                    '(migrate_apply(batch, target_version => %s)), then call migrate_apply again; `pgmig push` does this by itself.',
                                    p_commit_points, split_part(p_commit_points, ',', 1))
                        ELSE 'Mark the migration that adds the value with ---- pgmig: commit-after ---- ("commit_after": true) and apply with `pgmig push`, '
                          || 'or from SQL apply up to that migration first (target_version => it), then call migrate_apply again.' END;
    END IF;
    IF p_state = 'PM008' THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM008',
            MESSAGE = format('pgmig: %s tried to change pgmig''s bookkeeping: %s; nothing was applied',
                             pgmig._what(p_version, p_name, p_what), regexp_replace(p_message, '^pgmig: ', '')),
            HINT = 'Migrations must not touch pgmig''s own objects; the history is changed only by migrate_rollback and migrate_repair.';
    END IF;
    IF p_state = '53200' THEN
        RAISE EXCEPTION USING
            ERRCODE = '53200',
            MESSAGE = format('pgmig: %s: %s; nothing was applied', pgmig._what(p_version, p_name, p_what), p_message),
            DETAIL = format('One transaction holds a lock on every object it creates or alters until it commits; this batch needed more than the shared lock table holds (max_locks_per_transaction = %s, max_connections = %s).',
                            current_setting('max_locks_per_transaction'), current_setting('max_connections')),
            HINT = '`pgmig push` sizes segments to the server''s lock table by itself (--segment-size auto, the default); otherwise apply fewer '
                || 'migrations per transaction (--segment-size N, or target_version from SQL), or raise max_locks_per_transaction (needs a restart).';
    END IF;
END
$fn$;

-- The guard of pgmig's tables (history, audit, nontx_run, repeatable), a BEFORE ... FOR EACH STATEMENT
-- trigger enabled ALWAYS (so session_replication_role = replica does not silence it).
-- * No migration writes them, however it is spelled: migration code runs beneath the
--   executor (_execute_as_caller), whose frame the call stack shows for everything it runs:
--   nested functions, DO blocks, triggers, functions with a SET clause, SECURITY DEFINER
--   functions. Code a migration could leave to run later in the same transaction runs
--   beneath it too: _assert_intact fires deferred triggers through the executor, and
--   _session_restore closes WITH HOLD cursors, before the transaction can commit.
-- * The history and the audit trail are append-only for everyone else: UPDATE, DELETE and
--   TRUNCATE need pgmig.maintenance = 'on' in the transaction, which pgmig's own rollback and
--   repair set, as may an operator who means it; never a default from ALTER ROLE/DATABASE
--   (a migration could plant one for every later session).
-- Costs one call per INSERT statement (the engine records a call's migrations in one).
CREATE OR REPLACE FUNCTION pgmig._history_guard()
RETURNS trigger
LANGUAGE plpgsql
SET search_path TO pg_catalog, pg_temp
AS $fn$
DECLARE
    v_context text;
BEGIN
    GET DIAGNOSTICS v_context = PG_CONTEXT;
    -- Matched with or without the schema: how PostgreSQL prints the name depends on the
    -- search_path when the function was first compiled, and a false match only refuses.
    IF strpos(v_context, '_execute_as_caller(') > 0 THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM008',
            MESSAGE = format('pgmig: %s on pgmig.%s refused: migrations must not write pgmig''s bookkeeping', TG_OP, TG_TABLE_NAME),
            HINT = 'The history is changed only by migrate_apply, migrate_rollback, migrate_repair, migrate_baseline and migrate_resolve, outside migrations.';
    END IF;
    -- A non-transactional migration's statements run at top level on the client's second
    -- connection, outside any function: that session is recognised by its run row instead.
    -- What it could erase there with the switch set: the history (an UPDATE or DELETE would
    -- wait for the history lock the same push holds) and the audit trail, which no lock
    -- protects; appending is left to the engine's functions, which take that lock first. A
    -- session that cannot read the run rows cannot have written one, so it is not one.
    IF TG_OP <> 'INSERT' AND TG_TABLE_NAME <> 'nontx_run'
       AND has_table_privilege('pgmig.nontx_run', 'SELECT')
       AND EXISTS (SELECT FROM pgmig.nontx_run AS r WHERE r.pid = pg_backend_pid() AND r.state = 'running') THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM008',
            MESSAGE = format('pgmig: %s on pgmig.%s refused: a non-transactional migration is running in this session, and migrations must not write pgmig''s bookkeeping',
                             TG_OP, TG_TABLE_NAME),
            HINT = 'The history is changed only by migrate_apply, migrate_rollback, migrate_repair, migrate_baseline and migrate_resolve, outside migrations.';
    END IF;
    IF TG_OP = 'INSERT' OR TG_TABLE_NAME = 'nontx_run' THEN
        RETURN NULL;
    END IF;
    IF coalesce(current_setting('pgmig.maintenance', true), '') <> 'on' THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM008',
            MESSAGE = format('pgmig: %s on pgmig.%s refused: the %s is append-only', TG_OP, TG_TABLE_NAME,
                             CASE TG_TABLE_NAME WHEN 'audit' THEN 'audit trail'
                                                WHEN 'repeatable' THEN 'record of repeatable migrations' ELSE 'history' END),
            HINT = 'Use migrate_rollback or migrate_repair. To edit it by hand anyway: SET LOCAL pgmig.maintenance = ''on'' in the same transaction.';
    END IF;
    -- Defaults that apply to this session: of this database or all, of its login role or all.
    IF EXISTS (SELECT FROM pg_db_role_setting AS d, unnest(d.setconfig) AS c
               WHERE lower(c) LIKE 'pgmig.maintenance=%'
                 AND d.setdatabase IN (0, (SELECT db.oid FROM pg_database AS db WHERE db.datname = current_database()))
                 AND d.setrole IN (0, to_regrole(session_user))) THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM008',
            MESSAGE = format('pgmig: %s on pgmig.%s refused: pgmig.maintenance is set by ALTER ROLE or ALTER DATABASE', TG_OP, TG_TABLE_NAME),
            DETAIL = (SELECT string_agg(format('%s %s: %s',
                                               CASE WHEN d.setrole = 0 THEN 'every role' ELSE 'role ' || d.setrole::regrole::text END,
                                               CASE WHEN d.setdatabase = 0 THEN 'in every database'
                                                    ELSE 'in database ' || (SELECT quote_ident(db.datname) FROM pg_database AS db WHERE db.oid = d.setdatabase) END,
                                               c), E'\n')
                      FROM pg_db_role_setting AS d, unnest(d.setconfig) AS c
                      WHERE lower(c) LIKE 'pgmig.maintenance=%'
                        AND d.setdatabase IN (0, (SELECT db.oid FROM pg_database AS db WHERE db.datname = current_database()))
                        AND d.setrole IN (0, to_regrole(session_user))),
            HINT = 'The switch must be set by whoever edits the history, in that transaction, never as a default. Remove it: ALTER ROLE ... RESET pgmig.maintenance (or ALTER DATABASE ... RESET pgmig.maintenance).';
    END IF;
    RETURN NULL;
END
$fn$;
