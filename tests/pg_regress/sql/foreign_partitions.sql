-- requires: postgres_fdw
-- A partition that is a foreign table (postgres_fdw, back into this database): its rows are
-- not heap rows, so an UPDATE through the parent that reaches it keeps the triggers (the
-- planner fast path leaves the statement alone), and a conflict there is the trigger's.
-- (scripts/lib.sh skips this file on a Postgres build without contrib's postgres_fdw.)
\set VERBOSITY terse
LOAD 'pg_rowversion';
CREATE FUNCTION fast_path_taken(statement text) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE line text;
BEGIN
    FOR line IN EXECUTE 'EXPLAIN (VERBOSE, COSTS OFF) ' || statement LOOP
        IF line LIKE '%rowversion.next_version(%' THEN
            RETURN true;
        END IF;
    END LOOP;
    RETURN false;
END $$;
CREATE EXTENSION postgres_fdw;
DO $$
BEGIN
    EXECUTE format('CREATE SERVER loopback FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host %L, port %L, dbname %L)',
                   split_part(current_setting('unix_socket_directories'), ',', 1), current_setting('port'),
                   current_database());
END $$;
CREATE USER MAPPING FOR CURRENT_USER SERVER loopback;
CREATE TABLE far_rows (id int, note text, version bigint);
CREATE TABLE parted (id int, note text) PARTITION BY RANGE (id);
CREATE TABLE parted_near PARTITION OF parted FOR VALUES FROM (1) TO (100);
SELECT rowversion.enable('parted');
CREATE FOREIGN TABLE parted_far PARTITION OF parted FOR VALUES FROM (100) TO (200)
    SERVER loopback OPTIONS (table_name 'far_rows');
INSERT INTO parted VALUES (1, 'near'), (101, 'far');
-- Reaching the foreign partition: the triggers, on both partitions.
SELECT fast_path_taken($$UPDATE parted SET note = 'x'$$);
UPDATE parted SET note = 'x' RETURNING tableoid::regclass, id, note, version;
UPDATE parted SET note = 'y', version = 2 WHERE id = 101 RETURNING tableoid::regclass, id, note, version;
SELECT outcome($$UPDATE parted SET note = 'z', version = 1 WHERE id = 101$$);
SELECT outcome($$UPDATE parted SET note = 'z', version = 1$$);
-- Pruned to the heap partition: the fast path.
SELECT fast_path_taken($$UPDATE parted SET note = 'x' WHERE id < 100$$);
UPDATE parted SET note = 'n', version = 2 WHERE id < 100 RETURNING tableoid::regclass, id, note, version;
SELECT tableoid::regclass, * FROM parted ORDER BY id;
SELECT * FROM far_rows;

DROP TABLE parted, far_rows;
DROP SERVER loopback CASCADE;
DROP EXTENSION postgres_fdw;
DROP FUNCTION fast_path_taken(text);
