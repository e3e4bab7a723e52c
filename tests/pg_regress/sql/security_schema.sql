-- Security (issue 10, section 2): CREATE EXTENSION refuses a "rowversion" schema that another
-- role prepared, where it could have planted an overload of rowversion.update() that better
-- matches what a superuser passes.
\set VERBOSITY default
\set SHOW_CONTEXT never
SELECT current_database() AS home \gset
CREATE ROLE rowversion_dbowner;
CREATE DATABASE rowversion_schema_attack OWNER rowversion_dbowner;
\c rowversion_schema_attack
SET ROLE rowversion_dbowner;
CREATE SCHEMA rowversion;
CREATE FUNCTION rowversion.update(rel text, key text, expected_version int, changes text)
RETURNS bigint LANGUAGE sql AS 'SELECT 0::bigint';
RESET ROLE;
CREATE EXTENSION pg_rowversion;
-- Owned by the installing role but open to others: refused too.
DROP SCHEMA rowversion CASCADE;
CREATE SCHEMA rowversion;
GRANT CREATE ON SCHEMA rowversion TO rowversion_dbowner;
CREATE EXTENSION pg_rowversion;
-- Owned by the installing role, with something in it already: refused.
REVOKE CREATE ON SCHEMA rowversion FROM rowversion_dbowner;
CREATE TABLE rowversion.leftover (id int);
CREATE EXTENSION pg_rowversion;
-- An empty schema of the installing role (pg_restore creates one before CREATE EXTENSION),
-- or none at all: installed.
DROP TABLE rowversion.leftover;
CREATE EXTENSION pg_rowversion;
SELECT extname, extnamespace::regnamespace FROM pg_extension WHERE extname = 'pg_rowversion';
DROP EXTENSION pg_rowversion;
DROP SCHEMA rowversion;
CREATE EXTENSION pg_rowversion;
SELECT extname, extnamespace::regnamespace FROM pg_extension WHERE extname = 'pg_rowversion';
\c :home
DROP DATABASE rowversion_schema_attack;
DROP ROLE rowversion_dbowner;
