-- pg_rowversion 0.1.0 -> 0.2.0, run by ALTER EXTENSION pg_rowversion UPDATE.
-- It collects every schema change until 0.2.0 is released (CHANGELOG.md, "Unreleased");
-- once released it is never edited again: the next change adds pg_rowversion--0.2.0--0.3.0.sql.
-- The 0.1.0 objects named here point at symbols the 0.2.0 library still exports, so a
-- database keeps working between installing the new library and running this script.

-- Issue 10: SQL bodies resolved when created (BEGIN ATOMIC), whatever the caller's
-- search_path. Same signatures: replaced in place (lock_summary depends on lock_tree).
CREATE OR REPLACE FUNCTION rowversion.advisory_key(classid oid, objid oid, objsubid smallint,
    OUT key bigint, OUT key1 integer, OUT key2 integer, OUT taken_with text)
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT (classid::bigint << 32) | objid::bigint,
           (classid::bigint - CASE WHEN classid::bigint >= 2147483648 THEN 4294967296 ELSE 0 END)::integer,
           (objid::bigint - CASE WHEN objid::bigint >= 2147483648 THEN 4294967296 ELSE 0 END)::integer,
           CASE objsubid WHEN 1 THEN 'bigint' WHEN 2 THEN 'int4, int4' END;
END;

COMMENT ON FUNCTION rowversion.advisory_key(oid, oid, smallint) IS
'Decodes the classid/objid/objsubid of an advisory lock in pg_locks into the key a client passed';

CREATE OR REPLACE FUNCTION rowversion.lock_tree()
RETURNS TABLE (
    pid integer,
    blocked_by integer[],
    root_pid integer,
    depth integer,
    in_cycle boolean,
    state text,
    wait_event_type text,
    wait_event text,
    waiting_for interval,
    xact_age interval,
    locktype text,
    mode text,
    relation regclass,
    advisory_key bigint,
    application_name text,
    query text
)
LANGUAGE sql VOLATILE
BEGIN ATOMIC
WITH RECURSIVE
activity AS MATERIALIZED (
    SELECT a.pid, pg_catalog.pg_blocking_pids(a.pid) AS blocked_by, a.state, a.wait_event_type,
           a.wait_event, pg_catalog.now() - a.xact_start AS xact_age, a.application_name,
           pg_catalog.left(a.query, 1000) AS query
    FROM pg_catalog.pg_stat_activity a
    WHERE a.pid IS NOT NULL
),
-- Sessions that wait for another, or that another waits for.
involved AS MATERIALIZED (
    SELECT a.* FROM activity a
    WHERE pg_catalog.cardinality(a.blocked_by) > 0
       OR EXISTS (SELECT FROM activity w WHERE a.pid = ANY (w.blocked_by))
),
-- From each session, follow its first blocker upwards until a root (a session that waits for
-- nobody) or until a session repeats: a cycle, a deadlock not detected yet.
walk AS (
    SELECT i.pid AS start, i.pid AS at, ARRAY[i.pid] AS path, false AS looped
    FROM involved i
  UNION ALL
    SELECT w.start, p.blocked_by[1], w.path || p.blocked_by[1], p.blocked_by[1] = ANY (w.path)
    FROM walk w JOIN involved p ON p.pid = w.at
    WHERE pg_catalog.cardinality(p.blocked_by) > 0 AND NOT w.looped
),
longest AS (
    SELECT DISTINCT ON (start) start, path, looped
    FROM walk ORDER BY start, pg_catalog.cardinality(path) DESC
),
-- Without a cycle the root is the end of the walk; in a cycle, its smallest pid.
rooted AS (
    SELECT l.start, l.looped,
           CASE WHEN l.looped THEN (
               SELECT pg_catalog.min(m) FROM pg_catalog.unnest(
                   l.path[pg_catalog.array_position(l.path, l.path[pg_catalog.cardinality(l.path)]) :
                          pg_catalog.cardinality(l.path) - 1]) m)
           ELSE l.path[pg_catalog.cardinality(l.path)] END AS root,
           l.path
    FROM longest l
),
placed AS (
    SELECT r.start, r.root,
           -- the chain from the root down to this session: the order of the tree
           ARRAY(SELECT r.path[i] FROM pg_catalog.generate_subscripts(r.path, 1) i
                 WHERE i <= pg_catalog.array_position(r.path, r.root) ORDER BY i DESC) AS chain,
           r.looped AND r.start = ANY (r.path[pg_catalog.array_position(r.path, r.path[pg_catalog.cardinality(r.path)]) :
                                              pg_catalog.cardinality(r.path) - 1]) AS in_cycle
    FROM rooted r
),
awaited AS (
    SELECT DISTINCT ON (l.pid) l.pid, l.locktype, l.mode, l.relation, l.waitstart,
           CASE WHEN l.locktype = 'advisory'
                THEN (rowversion.advisory_key(l.classid, l.objid, l.objsubid)).key END AS advisory_key
    FROM pg_catalog.pg_locks l
    WHERE NOT l.granted
    ORDER BY l.pid, l.waitstart
)
SELECT i.pid, i.blocked_by, p.root, pg_catalog.cardinality(p.chain) - 1, p.in_cycle, i.state,
       i.wait_event_type, i.wait_event, pg_catalog.now() - w.waitstart, i.xact_age,
       w.locktype, w.mode, w.relation::pg_catalog.regclass, w.advisory_key, i.application_name, i.query
FROM involved i
JOIN placed p ON p.start = i.pid
LEFT JOIN awaited w ON w.pid = i.pid
ORDER BY p.chain;
END;

CREATE OR REPLACE FUNCTION rowversion.advisory_locks()
RETURNS TABLE (
    key bigint,
    key1 integer,
    key2 integer,
    taken_with text,
    mode text,
    granted boolean,
    pid integer,
    application_name text,
    waiting_for interval,
    xact_age interval
)
LANGUAGE sql VOLATILE
BEGIN ATOMIC
    SELECT k.key, k.key1, k.key2, k.taken_with, l.mode, l.granted, l.pid, a.application_name,
           pg_catalog.now() - l.waitstart, pg_catalog.now() - a.xact_start
    FROM pg_catalog.pg_locks l
    CROSS JOIN LATERAL rowversion.advisory_key(l.classid, l.objid, l.objsubid) k
    LEFT JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
    WHERE l.locktype = 'advisory'
      AND l.objsubid IN (1, 2)  -- pg_advisory_*(bigint) and (int4, int4); 21078: lease waiters
      AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database())
    ORDER BY k.key, l.granted DESC, l.waitstart, l.pid;
END;

-- Issue 12: ignore_columns. enable() gains an argument: a new signature. (The symbol also
-- accepts 0.1.0's three arguments.)
DROP FUNCTION rowversion.enable(regclass, name, text);

CREATE FUNCTION rowversion.enable(
    rel regclass,
    version_column name DEFAULT 'version',
    mode text DEFAULT 'lenient',
    ignore_columns name[] DEFAULT '{}'
) RETURNS void
LANGUAGE c VOLATILE STRICT
AS 'MODULE_PATHNAME', 'enable_wrapper';

COMMENT ON FUNCTION rowversion.enable(regclass, name, text, name[]) IS
'Puts a table under version control: adds the version column if missing and installs the trigger "rowversion"; an UPDATE of ignore_columns only does not count as a change';

CREATE FUNCTION rowversion.trigger_columns(rel regclass, tgqual pg_node_tree,
    OUT version_column name, OUT ignore_columns name[])
LANGUAGE c STABLE STRICT
AS 'MODULE_PATHNAME', 'rowversion_trigger_columns';

COMMENT ON FUNCTION rowversion.trigger_columns(regclass, pg_node_tree) IS
'The version column and the ignored columns named in the WHEN clause of a trigger that rowversion.enable() created';

CREATE OR REPLACE VIEW rowversion.tables AS
SELECT t.tgrelid::pg_catalog.regclass AS rel,
       c.version_column,
       pg_catalog.split_part(pg_catalog.encode(t.tgargs, 'escape'), '\000', 1) AS mode,
       t.tgenabled IN ('O', 'A') AS enabled,
       c.ignore_columns
FROM pg_catalog.pg_trigger t
CROSS JOIN LATERAL rowversion.trigger_columns(t.tgrelid, t.tgqual) c
WHERE t.tgfoid = 'rowversion.version_trigger()'::pg_catalog.regprocedure
  AND t.tgparentid = 0;

COMMENT ON VIEW rowversion.tables IS
'Versioned tables: version column, mode (lenient or strict), whether the trigger fires in ordinary sessions, and the columns whose updates alone do not count';

-- Leases: named locks with a lifetime and a fencing token (src/lease.rs).
--
-- One row per name ever acquired, kept after release so that its token keeps increasing. The
-- functions read and write it as the extension's owner; nobody else has any privilege on it.
-- Ordinary WAL-logged data: tokens survive restarts, crash recovery and standby promotion,
-- and pg_dump keeps them (pg_extension_config_dump below).
CREATE TABLE rowversion.lease_state (
    name text PRIMARY KEY,
    token bigint NOT NULL,
    holder text,
    role oid NOT NULL,
    acquired_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    released boolean NOT NULL DEFAULT false
);
REVOKE ALL ON rowversion.lease_state FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('rowversion.lease_state', '');

-- Arrival order of waiters (non-transactional).
CREATE SEQUENCE rowversion.lease_ticket CYCLE;
REVOKE ALL ON rowversion.lease_ticket FROM PUBLIC;

CREATE FUNCTION rowversion.lease_acquire(name text, ttl interval, wait interval DEFAULT '0 s',
    holder text DEFAULT NULL) RETURNS bigint
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'rowversion_lease_acquire';

CREATE FUNCTION rowversion.lease_renew(name text, token bigint, ttl interval) RETURNS boolean
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'rowversion_lease_renew';

CREATE FUNCTION rowversion.lease_release(name text, token bigint) RETURNS boolean
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'rowversion_lease_release';

CREATE FUNCTION rowversion.lease_check(name text, token bigint) RETURNS void
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'rowversion_lease_check';

CREATE FUNCTION rowversion.lease_break(name text) RETURNS boolean
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'rowversion_lease_break';

COMMENT ON FUNCTION rowversion.lease_acquire(text, interval, interval, text) IS
'Takes lease "name" for ttl if it is free or expired and returns its new fencing token; waits up to "wait" for it, then returns NULL';
COMMENT ON FUNCTION rowversion.lease_renew(text, bigint, interval) IS
'Extends a lease still held under token to now + ttl; false if it was released or taken over';
COMMENT ON FUNCTION rowversion.lease_release(text, bigint) IS
'Frees a lease still held under token; false if it expired, was released or taken over';
COMMENT ON FUNCTION rowversion.lease_check(text, bigint) IS
'The fence: raises RV001 unless token holds the lease, and keeps it from being taken over until the transaction ends';
COMMENT ON FUNCTION rowversion.lease_break(text) IS
'Frees a live lease whatever its token: for the role that holds it and for superusers';

-- A session waiting in lease_acquire() holds share locks on the advisory lock tags
-- (database, hashtext(name), ticket, 21078) and (database, hashtext(name), 0, 21079) until it
-- stops waiting.
CREATE VIEW rowversion.leases WITH (security_barrier) AS
SELECT s.name,
       s.holder,
       s.token,
       pg_catalog.pg_get_userbyid(s.role) AS role,
       s.acquired_at,
       s.expires_at,
       s.released OR s.expires_at OPERATOR(pg_catalog.<=) pg_catalog.clock_timestamp() AS expired,
       COALESCE(w.waiting, 0) AS waiting
FROM rowversion.lease_state s
LEFT JOIN (
    SELECT l.classid, pg_catalog.count(*) AS waiting
    FROM pg_catalog.pg_locks l
    JOIN pg_catalog.pg_database d ON d.oid OPERATOR(pg_catalog.=) l.database
    WHERE l.locktype OPERATOR(pg_catalog.=) 'advisory'
      AND l.objsubid OPERATOR(pg_catalog.=) 21078
      AND l.granted
      AND d.datname OPERATOR(pg_catalog.=) pg_catalog.current_database()
    GROUP BY l.classid
) w ON w.classid OPERATOR(pg_catalog.=) pg_catalog.hashtext(s.name)::pg_catalog.oid
WHERE pg_catalog.pg_has_role(s.role, 'USAGE')
   OR pg_catalog.pg_has_role('pg_read_all_stats', 'USAGE');

COMMENT ON VIEW rowversion.leases IS
'Leases of the roles whose privileges you have (all of them for members of pg_read_all_stats): holder, token, expiry, and how many sessions wait';

GRANT SELECT ON rowversion.leases TO PUBLIC;

-- The trigger's UPDATE contract as an expression (src/fast_path.rs): when the library is
-- loaded at plan time, the planner puts a call in the SET list of an UPDATE of a versioned
-- table and the statement skips the trigger. EXPLAIN VERBOSE shows the call. EXECUTE stays
-- granted because the caller's UPDATE runs it; a call written by hand is refused (0A000).
CREATE FUNCTION rowversion.next_version(stored bigint, supplied bigint, row_table oid,
    row_id tid, mode integer) RETURNS bigint
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'rowversion_next_version';

CREATE FUNCTION rowversion.next_version(stored integer, supplied integer, row_table oid,
    row_id tid, mode integer) RETURNS integer
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'rowversion_next_version';

CREATE FUNCTION rowversion.next_version(stored smallint, supplied smallint, row_table oid,
    row_id tid, mode integer) RETURNS smallint
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'rowversion_next_version';

COMMENT ON FUNCTION rowversion.next_version(bigint, bigint, oid, tid, integer) IS
'The version trigger''s UPDATE rule as an expression: what the planner fast path puts in an UPDATE''s SET list';
COMMENT ON FUNCTION rowversion.next_version(integer, integer, oid, tid, integer) IS
'The version trigger''s UPDATE rule as an expression: what the planner fast path puts in an UPDATE''s SET list';
COMMENT ON FUNCTION rowversion.next_version(smallint, smallint, oid, tid, integer) IS
'The version trigger''s UPDATE rule as an expression: what the planner fast path puts in an UPDATE''s SET list';
