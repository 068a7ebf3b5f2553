-- The version is substituted by `make sql` from pgmig.control's default_version.
CREATE OR REPLACE FUNCTION pgmig.engine_version()
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $fn$ SELECT '@PGMIG_VERSION@'::text $fn$;
COMMENT ON FUNCTION pgmig.engine_version() IS 'The installed pgmig engine version.';
