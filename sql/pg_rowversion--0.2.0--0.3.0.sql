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
'Puts a table under version control: adds the version column if missing and installs the trigger "rowversion"; an UPDATE of ignore_columns only does not count as a change; conflicts => ''merge'' accepts a stale UPDATE whose changed columns (widened to their merge group) did not change since the version it states; conflicts => ''observe'' lets every stale or version-less UPDATE through, counting and logging each';

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

-- Conflict counters and observe mode (#24).
-- (as sql/conflict_stats.sql)
CREATE FUNCTION rowversion.conflict_counts(
    OUT relid oid,
    OUT checked bigint,
    OUT conflicts bigint,
    OUT merged bigint,
    OUT observed bigint,
    OUT observed_mergeable bigint,
    OUT version_required bigint,
    OUT last_conflict timestamptz,
    OUT stats_reset timestamptz
) RETURNS SETOF record
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'rowversion_conflict_counts';

COMMENT ON FUNCTION rowversion.conflict_counts() IS
'The conflict counters of the tables of this database the current role holds a privilege on (all of them for pg_read_all_stats), counted since the server started or the last reset: read rowversion.conflict_stats instead';

-- conflict_counts() returns the tables the role holds a privilege on (or all of them, for
-- members of pg_read_all_stats), existing ones only: counts only, no key or version.
CREATE VIEW rowversion.conflict_stats AS
SELECT s.relid::pg_catalog.regclass AS rel,
       s.checked, s.conflicts, s.merged, s.observed, s.observed_mergeable, s.version_required,
       s.last_conflict, s.stats_reset
FROM rowversion.conflict_counts() s;

COMMENT ON VIEW rowversion.conflict_stats IS
'Per table: rows written with a stated version (checked), stale ones refused (conflicts), accepted by merge (merged), let through by observe mode (observed, of which merge would have accepted observed_mergeable), strict-mode refusals (version_required), the last of those, and when counting began or was reset';

GRANT SELECT ON rowversion.conflict_stats TO PUBLIC;

CREATE FUNCTION rowversion.conflict_stats_reset(rel regclass DEFAULT NULL) RETURNS void
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'rowversion_conflict_stats_reset';

COMMENT ON FUNCTION rowversion.conflict_stats_reset(regclass) IS
'Zeroes the conflict counters of a table, or of every table of this database (NULL); like pg_stat_reset(), superuser only unless granted';

REVOKE EXECUTE ON FUNCTION rowversion.conflict_stats_reset(regclass) FROM PUBLIC;
