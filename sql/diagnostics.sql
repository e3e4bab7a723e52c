-- Lock diagnostics: who blocks whom (scenario 6). Plain SQL over pg_stat_activity, pg_locks
-- and pg_blocking_pids(), run with the caller's rights: Postgres itself shows the query text and
-- details of other roles' sessions only to superusers and members of pg_read_all_stats.
-- Read-only, and they take no lock beyond what those views take.
-- The bodies are BEGIN ATOMIC: parsed when the extension is created, with pg_catalog first on
-- the search_path, so every operator and function in them is fixed then, whatever the
-- caller's search_path is later.

-- The advisory-lock key of a pg_locks row, as pg_advisory_lock(bigint) and as the
-- pg_advisory_lock(int4, int4) pair: classid holds the high half (or key1), objid the low half
-- (or key2); objsubid says which function took the lock (1: bigint, 2: two int4).
CREATE FUNCTION rowversion.advisory_key(classid oid, objid oid, objsubid smallint,
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

CREATE FUNCTION rowversion.lock_tree()
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

COMMENT ON FUNCTION rowversion.lock_tree() IS
'Every waiting or blocking session: its blockers, the root of its chain, depth (0 for a root), the lock it waits for; roots first, then their waiters in tree order; cycles are marked';

CREATE FUNCTION rowversion.advisory_locks()
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

COMMENT ON FUNCTION rowversion.advisory_locks() IS
'Held and awaited advisory locks of this database, with the key as bigint and as the (int4, int4) pair';

CREATE VIEW rowversion.lock_summary AS
WITH tree AS (SELECT * FROM rowversion.lock_tree())
SELECT (SELECT pg_catalog.count(*) FROM tree WHERE pg_catalog.cardinality(tree.blocked_by) > 0) AS waiting_sessions,
       (SELECT pg_catalog.max(tree.waiting_for) FROM tree) AS longest_wait,
       top.root_pid AS top_blocker_pid,
       top.blocked_sessions AS top_blocker_blocks,
       root.state AS top_blocker_state,
       root.xact_age AS top_blocker_xact_age,
       root.application_name AS top_blocker_application,
       root.query AS top_blocker_query
FROM (SELECT 1) one
LEFT JOIN LATERAL (
    SELECT tree.root_pid, pg_catalog.count(*) - 1 AS blocked_sessions
    FROM tree GROUP BY tree.root_pid ORDER BY pg_catalog.count(*) DESC, tree.root_pid LIMIT 1
) top ON true
LEFT JOIN tree root ON root.pid = top.root_pid;

COMMENT ON VIEW rowversion.lock_summary IS
'One row for on-call: how many sessions wait, the longest wait, and the root blocker holding up the most sessions, with what it runs';

GRANT SELECT ON rowversion.lock_summary TO PUBLIC;

-- src/diagnostics.rs
CREATE FUNCTION rowversion.row_locks(rel regclass, key jsonb)
RETURNS TABLE (locker xid, multixact xid, mode text, pids integer[], waiting_pids integer[])
LANGUAGE c STRICT VOLATILE
AS 'MODULE_PATHNAME', 'row_locks_wrapper';

COMMENT ON FUNCTION rowversion.row_locks(regclass, jsonb) IS
'Who holds a lock on the row with this primary key right now (one row per locking transaction; multixact members each), and which sessions wait for it; requires SELECT on the table';
