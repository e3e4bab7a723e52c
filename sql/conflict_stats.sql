-- Conflict counters (src/stats.rs): per table of this database, since the server started or
-- the last reset; kept in shared memory, so they need pg_rowversion in
-- shared_preload_libraries (otherwise reading them raises 55000). Not transactional: a
-- refused UPDATE aborts its transaction but is counted.
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
