-- Every versioned table. The version column is read from the dependency that the trigger's
-- WHEN clause records on it, so the view follows renames of the table and of the column.
-- Partitions of a versioned partitioned table inherit its trigger and are not listed.
CREATE VIEW rowversion.tables AS
SELECT t.tgrelid::pg_catalog.regclass AS rel,
       a.attname AS version_column,
       pg_catalog.split_part(pg_catalog.encode(t.tgargs, 'escape'), '\000', 1) AS mode,
       t.tgenabled IN ('O', 'A') AS enabled
FROM pg_catalog.pg_trigger t
JOIN pg_catalog.pg_depend d
  ON d.classid = 'pg_catalog.pg_trigger'::pg_catalog.regclass
 AND d.objid = t.oid
 AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
 AND d.refobjid = t.tgrelid
 AND d.refobjsubid > 0
JOIN pg_catalog.pg_attribute a
  ON a.attrelid = t.tgrelid
 AND a.attnum = d.refobjsubid
WHERE t.tgfoid = 'rowversion.version_trigger()'::pg_catalog.regprocedure
  AND t.tgparentid = 0;

COMMENT ON VIEW rowversion.tables IS
'Versioned tables: version column, mode (lenient or strict), and whether the trigger fires in ordinary sessions';

GRANT USAGE ON SCHEMA rowversion TO PUBLIC;
GRANT SELECT ON rowversion.tables TO PUBLIC;
