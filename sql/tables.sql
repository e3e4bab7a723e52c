-- The columns a versioning trigger's WHEN clause names (src/version_column.rs): the version
-- column first, then the ignored ones. Postgres keeps the clause's columns by attribute
-- number, so they follow renames; NULLs for a clause enable() did not write.
CREATE FUNCTION rowversion.trigger_columns(rel regclass, tgqual pg_node_tree,
    OUT version_column name, OUT ignore_columns name[])
LANGUAGE c STABLE STRICT
AS 'MODULE_PATHNAME', 'rowversion_trigger_columns';

COMMENT ON FUNCTION rowversion.trigger_columns(regclass, pg_node_tree) IS
'The version column and the ignored columns named in the WHEN clause of a trigger that rowversion.enable() created';

-- The merge groups a versioning trigger's WHEN clause names (src/version_column.rs), for the
-- view below.
CREATE FUNCTION rowversion.merge_groups(rel regclass, tgqual pg_node_tree) RETURNS jsonb
LANGUAGE c STABLE STRICT
AS 'MODULE_PATHNAME', 'rowversion_merge_groups';

COMMENT ON FUNCTION rowversion.merge_groups(regclass, pg_node_tree) IS
'The merge groups named in the WHEN clause of a trigger that rowversion.enable() created, as a JSON array of arrays of column names';

-- Every versioned table. Follows renames of the table and of its columns.
-- Partitions of a versioned partitioned table inherit its trigger and are not listed.
CREATE VIEW rowversion.tables AS
SELECT t.tgrelid::pg_catalog.regclass AS rel,
       c.version_column,
       pg_catalog.split_part(pg_catalog.encode(t.tgargs, 'escape'), '\000', 1) AS mode,
       t.tgenabled IN ('O', 'A') AS enabled,
       c.ignore_columns,
       CASE WHEN t.tgnargs OPERATOR(pg_catalog.>) 1
            THEN pg_catalog.split_part(pg_catalog.encode(t.tgargs, 'escape'), '\000', 2)
            ELSE 'reject' END AS conflicts,
       rowversion.merge_groups(t.tgrelid, t.tgqual) AS merge_groups,
       EXISTS (SELECT FROM pg_catalog.pg_trigger r
               WHERE r.tgrelid OPERATOR(pg_catalog.=) t.tgrelid
                 AND r.tgname OPERATOR(pg_catalog.=) 'rowversion_replication'
                 AND r.tgfoid OPERATOR(pg_catalog.=) 'rowversion.replication_trigger()'::pg_catalog.regprocedure) AS multi_node
FROM pg_catalog.pg_trigger t
CROSS JOIN LATERAL rowversion.trigger_columns(t.tgrelid, t.tgqual) c
WHERE t.tgfoid = 'rowversion.version_trigger()'::pg_catalog.regprocedure
  AND t.tgparentid = 0;

COMMENT ON VIEW rowversion.tables IS
'Versioned tables: version column, mode (lenient or strict), whether the trigger fires in ordinary sessions, the columns whose updates alone do not count, how a stale UPDATE is decided (reject, merge or observe), the merge groups, and whether rows from other nodes are decided (multi_node)';

GRANT USAGE ON SCHEMA rowversion TO PUBLIC;
GRANT SELECT ON rowversion.tables TO PUBLIC;
