-- Declared by hand because pgrx has no mapping for the `name` type (src/enable.rs).
CREATE FUNCTION rowversion.enable(
    rel regclass,
    version_column name DEFAULT 'version',
    mode text DEFAULT 'lenient'
) RETURNS void
LANGUAGE c VOLATILE STRICT
AS 'MODULE_PATHNAME', 'enable_wrapper';

COMMENT ON FUNCTION rowversion.enable(regclass, name, text) IS
'Puts a table under version control: adds the version column if missing and installs the trigger "rowversion"';

CREATE FUNCTION rowversion.disable(rel regclass) RETURNS void
LANGUAGE c VOLATILE STRICT
AS 'MODULE_PATHNAME', 'disable_wrapper';

COMMENT ON FUNCTION rowversion.disable(regclass) IS
'Removes the trigger "rowversion" from a table; the version column stays';
