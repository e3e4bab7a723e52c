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
