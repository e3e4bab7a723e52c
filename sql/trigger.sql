-- The version trigger. Written in Rust as a plain V1 C function (src/trigger.rs);
-- rowversion.enable() installs it, with the version column named in its WHEN clause.
CREATE FUNCTION rowversion.version_trigger() RETURNS trigger
LANGUAGE c
AS 'MODULE_PATHNAME', 'rowversion_version_trigger';

COMMENT ON FUNCTION rowversion.version_trigger() IS
'Keeps and checks the version column of a table; install it with rowversion.enable()';
