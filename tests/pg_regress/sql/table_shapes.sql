-- Table shapes (issue 11, section 4): none of them loses an update or fails obscurely.
\set VERBOSITY terse
SET client_min_messages = notice;

-- Inheritance (not partitioning): versioning is per table. The checked functions act on the
-- rows of the table they are given (UPDATE ONLY), so a row of an unversioned child is not
-- theirs to write: it is missing, never written twice with the same expected version.
CREATE TABLE parent (id int PRIMARY KEY, note text);
CREATE TABLE child (PRIMARY KEY (id)) INHERITS (parent);
SELECT rowversion.enable('parent');
INSERT INTO child VALUES (1, 'in the child');
INSERT INTO parent VALUES (2, 'in the parent');
SELECT outcome($$SELECT rowversion.update('parent', '{"id": 1}', 1, '{"note": "first"}')$$);
SELECT outcome($$SELECT rowversion.update('parent', '{"id": 1}', 1, '{"note": "second"}')$$);
SELECT outcome($$SELECT rowversion.delete('parent', '{"id": 1}', 1)$$);
SELECT rowversion.current_version('parent', '{"id": 1}');
SELECT rowversion.update('parent', '{"id": 2}', 1, '{"note": "checked"}');
SELECT outcome($$SELECT rowversion.update('parent', '{"id": 2}', 1, '{"note": "stale"}')$$);
SELECT tableoid::regclass, id, note, version FROM parent ORDER BY id;
-- Versioned, the child's rows are checked through the child.
SELECT rowversion.enable('child');
SELECT rowversion.update('child', '{"id": 1}', 1, '{"note": "checked"}');
SELECT outcome($$SELECT rowversion.update('child', '{"id": 1}', 1, '{"note": "stale"}')$$);
SELECT rowversion.enable('parent');
-- row_locks finds a row wherever it is (a foreign table: foreign_tables.sql).
SELECT count(*) FROM rowversion.row_locks('parent', '{"id": 1}');
DROP TABLE parent CASCADE;

-- Views, materialized views, sequences and system catalogs are no tables to version.
CREATE TABLE base (id int PRIMARY KEY, note text);
CREATE VIEW base_view AS SELECT * FROM base;
CREATE MATERIALIZED VIEW base_matview AS SELECT * FROM base;
CREATE SEQUENCE base_seq;
SELECT outcome($$SELECT rowversion.update('base_view', '{"id": 1}', 1, '{}')$$);
SELECT outcome($$SELECT rowversion.current_version('base_matview', '{"id": 1}')$$);
SELECT outcome($$SELECT * FROM rowversion.row_locks('base_view', '{"id": 1}')$$);
SELECT outcome($$SELECT rowversion.delete('base_seq', '{"id": 1}', 1)$$);
SELECT outcome($$SELECT rowversion.update('pg_class', '{"oid": 1259}', 1, '{}')$$);
SELECT outcome($$SELECT * FROM rowversion.row_locks('pg_class', '{"oid": 1259}')$$);
SELECT outcome($$SELECT rowversion.enable('pg_class')$$);
SELECT outcome($$SELECT rowversion.enable('information_schema.sql_features')$$);
SELECT outcome($$SELECT rowversion.update('pg_toast.pg_toast_1255', '{"chunk_id": 1}', 1, '{}')$$);
DROP TABLE base CASCADE;
DROP SEQUENCE base_seq;

-- Temporary and unlogged tables are tables like any other.
CREATE TEMP TABLE scratch (id int PRIMARY KEY, note text);
SELECT rowversion.enable('scratch');
INSERT INTO scratch VALUES (1, 'a');
SELECT rowversion.update('scratch', '{"id": 1}', 1, '{"note": "b"}');
SELECT outcome($$SELECT rowversion.update('scratch', '{"id": 1}', 1, '{"note": "c"}')$$) LIKE '40001:%' AS conflict;
CREATE UNLOGGED TABLE fast (id int PRIMARY KEY, note text);
SELECT rowversion.enable('fast');
INSERT INTO fast VALUES (1, 'a');
SELECT rowversion.update('fast', '{"id": 1}', 1, '{"note": "b"}');
SELECT outcome($$SELECT rowversion.update('fast', '{"id": 1}', 1, '{"note": "c"}')$$);
DROP TABLE scratch, fast;

-- Dropped columns, before and after the session has prepared its statements.
CREATE TABLE holes (gone int, id int PRIMARY KEY, a text, b text, c int);
ALTER TABLE holes DROP COLUMN gone;
SELECT rowversion.enable('holes');
INSERT INTO holes VALUES (1, 'a', 'b', 1);
SELECT rowversion.update('holes', '{"id": 1}', 1, '{"a": "a2", "c": 2}');
ALTER TABLE holes DROP COLUMN b;
SELECT rowversion.update('holes', '{"id": 1}', 2, '{"a": "a3", "c": 3}');
SELECT outcome($$SELECT rowversion.update('holes', '{"id": 1}', 3, '{"b": "b"}')$$);
ALTER TABLE holes DROP COLUMN a;
SELECT rowversion.update('holes', '{"id": 1}', 3, '{"c": 4}');
SELECT * FROM holes;
DROP TABLE holes;

-- 1,600 columns, the most a table can have (the version column is the last), all changed in
-- one call.
DO $$
BEGIN
    EXECUTE 'CREATE TABLE wide (id int PRIMARY KEY, '
        || (SELECT string_agg('c' || i || ' int', ', ') FROM generate_series(1, 1598) i) || ')';
END
$$;
SELECT rowversion.enable('wide');
INSERT INTO wide (id) VALUES (1);
SELECT rowversion.update('wide', '{"id": 1}', 1, (SELECT jsonb_object_agg('c' || i, i) FROM generate_series(1, 1598) i));
SELECT c1, c799, c1598, version FROM wide;
SELECT outcome($$ALTER TABLE wide ADD COLUMN one_too_many int$$);
DROP TABLE wide;
RESET client_min_messages;
