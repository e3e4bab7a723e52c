-- pg_rowversion 0.2.0 -> 0.3.0, run by ALTER EXTENSION pg_rowversion UPDATE.
-- It collects every schema change until 0.3.0 is released (CHANGELOG.md, "0.3.0
-- (unreleased)"); once released it is never edited again (sql/releases/SHA256SUMS) and the
-- next change adds pg_rowversion--0.3.0--0.4.0.sql. The 0.2.0 objects point at symbols the
-- 0.3.0 library still exports (tests/upgrade.sh runs 0.2.0's SQL on it), so a database keeps
-- working between installing the new library and running this script.

-- Column-aware conflicts (#23): enable() gains conflicts and merge_groups. A new argument
-- list is a new function: the old one is dropped (same symbol, which accepts 3, 4 or 6
-- arguments).
DROP FUNCTION rowversion.enable(regclass, name, text, name[]);

CREATE FUNCTION rowversion.enable(
    rel regclass,
    version_column name DEFAULT 'version',
    mode text DEFAULT 'lenient',
    ignore_columns name[] DEFAULT '{}',
    conflicts text DEFAULT 'reject',
    merge_groups jsonb DEFAULT '[]'
) RETURNS void
LANGUAGE c VOLATILE STRICT
AS 'MODULE_PATHNAME', 'enable_wrapper';

COMMENT ON FUNCTION rowversion.enable(regclass, name, text, name[], text, jsonb) IS
'Puts a table under version control: adds the version column if missing and installs the trigger "rowversion"; an UPDATE of ignore_columns only does not count as a change; conflicts => ''merge'' accepts a stale UPDATE whose changed columns (widened to their merge group) did not change since the version it states';

CREATE FUNCTION rowversion.merge_groups(rel regclass, tgqual pg_node_tree) RETURNS jsonb
LANGUAGE c STABLE STRICT
AS 'MODULE_PATHNAME', 'rowversion_merge_groups';

COMMENT ON FUNCTION rowversion.merge_groups(regclass, pg_node_tree) IS
'The merge groups named in the WHEN clause of a trigger that rowversion.enable() created, as a JSON array of arrays of column names';

-- rowversion.tables gains conflicts and merge_groups (appended: CREATE OR REPLACE VIEW).
CREATE OR REPLACE VIEW rowversion.tables AS
SELECT t.tgrelid::pg_catalog.regclass AS rel,
       c.version_column,
       pg_catalog.split_part(pg_catalog.encode(t.tgargs, 'escape'), '\000', 1) AS mode,
       t.tgenabled IN ('O', 'A') AS enabled,
       c.ignore_columns,
       CASE WHEN t.tgnargs OPERATOR(pg_catalog.>) 1
            THEN pg_catalog.split_part(pg_catalog.encode(t.tgargs, 'escape'), '\000', 2)
            ELSE 'reject' END AS conflicts,
       rowversion.merge_groups(t.tgrelid, t.tgqual) AS merge_groups
FROM pg_catalog.pg_trigger t
CROSS JOIN LATERAL rowversion.trigger_columns(t.tgrelid, t.tgqual) c
WHERE t.tgfoid = 'rowversion.version_trigger()'::pg_catalog.regprocedure
  AND t.tgparentid = 0;

COMMENT ON VIEW rowversion.tables IS
'Versioned tables: version column, mode (lenient or strict), whether the trigger fires in ordinary sessions, the columns whose updates alone do not count, how a stale UPDATE is decided (reject or merge) and the merge groups';

-- For a merge screen: which columns of a row changed since a version.
CREATE FUNCTION rowversion.changed_since(rel regclass, key jsonb, since bigint)
RETURNS TABLE (column_name name, version bigint)
LANGUAGE c STABLE
AS 'MODULE_PATHNAME', 'rowversion_changed_since';

COMMENT ON FUNCTION rowversion.changed_since(regclass, jsonb, bigint) IS
'For a table in merge mode: the columns of the row with this primary key that changed after version since, and the version at which each last changed (NULL: 255 or more versions ago); only columns the caller may SELECT';
