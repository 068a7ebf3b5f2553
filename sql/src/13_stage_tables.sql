-- Staged releases (added in 0.2.0): a batch stored in the database by migrate_stage (`pgmig
-- stage`), to be applied later by CALL migrate_run_staged(label) from a GUI, psql or pg_cron,
-- by a role that may be another one than the stager's (docs/admin-tooling.md). One row per
-- label, never rewritten: restaging a label with the same batch is a no-op, with another batch
-- an error. The columns after `client_info` say what became of it; they are written by
-- migrate_run_staged only.
CREATE TABLE IF NOT EXISTS pgmig.staged (
    label              text        NOT NULL PRIMARY KEY
                                   CHECK (label ~ '^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$'),
    batch              jsonb       NOT NULL CHECK (jsonb_typeof(batch) = 'array'),
    digest             text        NOT NULL CHECK (digest ~ '^[0-9a-f]{64}$'),
    migrations         integer     NOT NULL,
    first_version      bigint,
    last_version       bigint,
    staged_at          timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    staged_by          text        NOT NULL DEFAULT CURRENT_USER,
    login_role         text        NOT NULL DEFAULT SESSION_USER,
    client_application text,
    client_addr        inet,
    client_info        text,
    state              text        NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'applied', 'failed')),
    attempts           integer     NOT NULL DEFAULT 0,
    run_pid            integer,
    run_started_at     timestamptz,
    run_by             text,
    finished_at        timestamptz,
    applied            integer     NOT NULL DEFAULT 0,
    applied_at         timestamptz,
    applied_by         text,
    result             jsonb,
    failure            jsonb
);
COMMENT ON TABLE pgmig.staged IS 'Staged releases: batches stored by migrate_stage for CALL migrate_run_staged(label), and what became of each.';
COMMENT ON COLUMN pgmig.staged.digest IS 'migrate_history_digest() once exactly this batch is applied (pgmig.HistoryDigest of the files)';
COMMENT ON COLUMN pgmig.staged.run_pid IS 'the session running it right now; left set when a run ended without recording an outcome (interrupted)';
COMMENT ON COLUMN pgmig.staged.applied IS 'migrations its runs applied (the others of the batch were applied by other migrators, or earlier)';
COMMENT ON COLUMN pgmig.staged.result IS 'migrate_run''s result document of the last run';
COMMENT ON COLUMN pgmig.staged.failure IS 'the last failure: version, name, sqlstate, message, detail, hint, context, at, by';

REVOKE ALL ON pgmig.staged FROM PUBLIC;

-- An extension's tables are left out of pg_dump unless marked as configuration (the history is,
-- in 99_install.sql). CREATE EXTENSION and ALTER EXTENSION UPDATE insert the pg_extension row
-- before they run this script; the plain script has none, and nothing to mark.
DO $pgmig$
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname = 'pgmig') THEN
        PERFORM pg_catalog.pg_extension_config_dump('pgmig.staged', '');
    END IF;
END
$pgmig$;
