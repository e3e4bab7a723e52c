-- Plain V1 C functions (src/enable.rs).
CREATE FUNCTION rowversion.enable(
    rel regclass,
    version_column name DEFAULT 'version',
    mode text DEFAULT 'lenient',
    ignore_columns name[] DEFAULT '{}',
    conflicts text DEFAULT 'reject',
    merge_groups jsonb DEFAULT '[]',
    multi_node boolean DEFAULT false
) RETURNS void
LANGUAGE c VOLATILE STRICT
AS 'MODULE_PATHNAME', 'enable_wrapper';

COMMENT ON FUNCTION rowversion.enable(regclass, name, text, name[], text, jsonb, boolean) IS
'Puts a table under version control: adds the version column if missing and installs the trigger "rowversion"; an UPDATE of ignore_columns only does not count as a change; conflicts => ''merge'' accepts a stale UPDATE whose changed columns (widened to their merge group) did not change since the version it states; conflicts => ''observe'' lets every stale or version-less UPDATE through, counting and logging each; multi_node => true decides rows arriving from another node that writes the table too (trigger "rowversion_replication") and records the losers';

CREATE FUNCTION rowversion.disable(rel regclass) RETURNS void
LANGUAGE c VOLATILE STRICT
AS 'MODULE_PATHNAME', 'disable_wrapper';

COMMENT ON FUNCTION rowversion.disable(regclass) IS
'Removes the trigger "rowversion" from a table; the version column stays';
