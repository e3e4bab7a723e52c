-- What enable() and disable() answer to bad input.
\set VERBOSITY default
SELECT rowversion.enable('no_such_table');
CREATE TABLE base (id int PRIMARY KEY, note text);
CREATE VIEW base_view AS SELECT * FROM base;
SELECT rowversion.enable('base_view');
SELECT rowversion.enable('base', 'note');
SELECT rowversion.enable('base', mode => 'optimistic');
CREATE TABLE "Price List" (id int PRIMARY KEY, "Version" smallint);
SELECT rowversion.enable('"Price List"', 'Version');
SELECT rel, version_column, mode FROM rowversion.tables;
ALTER TABLE "Price List" DROP COLUMN "Version";
CREATE TABLE measurements (id int, taken date NOT NULL, PRIMARY KEY (id, taken)) PARTITION BY RANGE (taken);
CREATE TABLE measurements_2026 PARTITION OF measurements FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
SELECT rowversion.enable('measurements');
SELECT rowversion.enable('measurements_2026');
CREATE ROLE rowversion_regress_clerk;
GRANT ALL ON base TO rowversion_regress_clerk;
SET ROLE rowversion_regress_clerk;
SELECT rowversion.enable('base');
RESET ROLE;
DROP TABLE base CASCADE;
DROP TABLE "Price List", measurements;
DROP ROLE rowversion_regress_clerk;
