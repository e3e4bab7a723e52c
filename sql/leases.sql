-- Leases: named locks with a lifetime and a fencing token (src/lease/).
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
