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
    merge_groups jsonb DEFAULT '[]',
    multi_node boolean DEFAULT false
) RETURNS void
LANGUAGE c VOLATILE STRICT
AS 'MODULE_PATHNAME', 'enable_wrapper';

COMMENT ON FUNCTION rowversion.enable(regclass, name, text, name[], text, jsonb, boolean) IS
'Puts a table under version control: adds the version column if missing and installs the trigger "rowversion"; an UPDATE of ignore_columns only does not count as a change; conflicts => ''merge'' accepts a stale UPDATE whose changed columns (widened to their merge group) did not change since the version it states; conflicts => ''observe'' lets every stale or version-less UPDATE through, counting and logging each; multi_node => true decides rows arriving from another node that writes the table too (trigger "rowversion_replication") and records the losers';

CREATE FUNCTION rowversion.merge_groups(rel regclass, tgqual pg_node_tree) RETURNS jsonb
LANGUAGE c STABLE STRICT
AS 'MODULE_PATHNAME', 'rowversion_merge_groups';

COMMENT ON FUNCTION rowversion.merge_groups(regclass, pg_node_tree) IS
'The merge groups named in the WHEN clause of a trigger that rowversion.enable() created, as a JSON array of arrays of column names';

-- Multi-node writes (#25), before the view below, which names the trigger function.
-- Tables written on several nodes that replicate to each other (src/replication.rs):
-- rowversion.enable(..., multi_node => true) installs this trigger, enabled ALWAYS so that it
-- also fires in logical replication's apply worker, with the version column and the write
-- column named in its WHEN clause.
CREATE FUNCTION rowversion.replication_trigger() RETURNS trigger
LANGUAGE c
AS 'MODULE_PATHNAME', 'rowversion_replication_trigger';

COMMENT ON FUNCTION rowversion.replication_trigger() IS
'Stamps the rows of a multi_node table and decides rows arriving from another node that were not written on the local row; install it with rowversion.enable(..., multi_node => true)';

-- One row per image that lost a replication conflict on this node, with the image that was
-- kept, under the table the application writes to (a partition's root) and the row's key (its
-- replica identity index's columns, NULL without one). Per node: not replicated (the apply
-- worker writes it under the remote transaction's origin, which a subscription with origin =
-- none does not send back), not in pg_dump. The trigger writes it as its owner (the
-- extension's); nobody else has any privilege on it.
CREATE TABLE rowversion.replication_conflict_log (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rel oid NOT NULL,
    row_key jsonb,
    kept_version bigint NOT NULL,
    lost_version bigint NOT NULL,
    kept_node bigint,
    lost_node bigint,
    kept_written_at timestamptz,
    lost_written_at timestamptz,
    decided_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    lost_write bytea NOT NULL,
    lost_base bytea NOT NULL,
    kept_row jsonb NOT NULL,
    lost_row jsonb NOT NULL
);
CREATE INDEX ON rowversion.replication_conflict_log (rel, row_key, lost_write);
REVOKE ALL ON rowversion.replication_conflict_log FROM PUBLIC;

-- What a role may see, and delete once reconciled: the conflicts of tables it may SELECT from
-- with no row-level security applying to it (whole rows are shown). Nodes are system
-- identifiers (pg_control_system()).
CREATE VIEW rowversion.replication_conflicts WITH (security_barrier) AS
SELECT l.id, l.rel::pg_catalog.regclass AS rel, l.row_key,
       l.kept_version, l.lost_version,
       l.kept_node, l.lost_node,
       l.kept_written_at, l.lost_written_at, l.decided_at,
       l.kept_row, l.lost_row
FROM rowversion.replication_conflict_log l
WHERE CASE WHEN pg_catalog.has_table_privilege(l.rel, 'SELECT')
           THEN NOT pg_catalog.row_security_active(l.rel) ELSE false END;

COMMENT ON VIEW rowversion.replication_conflicts IS
'Row images that lost a replication conflict on this node (multi_node tables), with the image kept, both versions, the system identifiers of the nodes that wrote them and when, for the tables the current role may SELECT from';

GRANT SELECT, DELETE ON rowversion.replication_conflicts TO PUBLIC;

-- rowversion.tables gains conflicts, merge_groups and multi_node (appended: CREATE OR
-- REPLACE VIEW).
CREATE OR REPLACE VIEW rowversion.tables AS
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
    OUT replication_conflicts bigint,
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
       s.replication_conflicts,
       s.last_conflict, s.stats_reset
FROM rowversion.conflict_counts() s;

COMMENT ON VIEW rowversion.conflict_stats IS
'Per table: rows written with a stated version (checked), stale ones refused (conflicts), accepted by merge (merged), let through by observe mode (observed, of which merge would have accepted observed_mergeable), strict-mode refusals (version_required), rows from another node decided by multi_node (replication_conflicts), the last of those, and when counting began or was reset';

GRANT SELECT ON rowversion.conflict_stats TO PUBLIC;

CREATE FUNCTION rowversion.conflict_stats_reset(rel regclass DEFAULT NULL) RETURNS void
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'rowversion_conflict_stats_reset';

COMMENT ON FUNCTION rowversion.conflict_stats_reset(regclass) IS
'Zeroes the conflict counters of a table, or of every table of this database (NULL); like pg_stat_reset(), superuser only unless granted';

REVOKE EXECUTE ON FUNCTION rowversion.conflict_stats_reset(regclass) FROM PUBLIC;
