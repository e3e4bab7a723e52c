-- requires: file_fdw
-- Foreign tables: no versioning, no checked writes, and row_locks() says where a row is.
-- (scripts/lib.sh skips this file on a Postgres build without contrib's file_fdw.)
\set VERBOSITY terse
SET client_min_messages = notice;
CREATE TABLE parent (id int PRIMARY KEY, note text);
SELECT rowversion.enable('parent');
INSERT INTO parent VALUES (1, 'here');
CREATE EXTENSION file_fdw;
CREATE SERVER files FOREIGN DATA WRAPPER file_fdw;
CREATE FOREIGN TABLE remote () INHERITS (parent) SERVER files OPTIONS (program 'echo 7,far,1', format 'csv');
SELECT outcome($$SELECT * FROM rowversion.row_locks('parent', '{"id": 7}')$$);
SELECT outcome($$SELECT * FROM rowversion.row_locks('remote', '{"id": 7}')$$);
SELECT outcome($$SELECT rowversion.update('remote', '{"id": 7}', 1, '{}')$$);
SELECT outcome($$SELECT rowversion.enable('remote')$$);
SELECT outcome($$SELECT rowversion.update('parent', '{"id": 7}', 1, '{}')$$);
DROP TABLE parent CASCADE;
DROP EXTENSION file_fdw CASCADE;
