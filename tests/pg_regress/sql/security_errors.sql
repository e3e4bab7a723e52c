-- Security (issue 10, section 4): errors reveal only what the caller could read with plain
-- SQL. A conflict shows the key when the caller may read the key columns and the stored
-- version when it may read the version column, neither when row-level security applies, as
-- Postgres' own unique-violation details do.
\set VERBOSITY default
CREATE ROLE rowversion_clerk;
CREATE TABLE ledger (id int PRIMARY KEY, amount int, note text);
SELECT rowversion.enable('ledger');
INSERT INTO ledger VALUES (1, 10, 'public'), (2, 20, 'secret');
UPDATE ledger SET amount = amount + 1;
UPDATE ledger SET amount = amount + 1;

-- UPDATE without any SELECT.
GRANT UPDATE, DELETE ON ledger TO rowversion_clerk;
SET ROLE rowversion_clerk;
UPDATE ledger SET amount = 0, version = 1;
-- The checked functions read the key and the version, so they need SELECT on both, as the
-- hand-written statement would.
SELECT rowversion.update('ledger', '{"id": 1}', 1, '{"amount": 0}');
SELECT * FROM rowversion.try_update('ledger', '{"id": 1}', 1, '{"amount": 0}');
SELECT rowversion.delete('ledger', '{"id": 1}', 1);
SELECT rowversion.current_version('ledger', '{"id": 1}');
SELECT rowversion.update_many('ledger', '[{"key": {"id": 1}, "version": 1, "changes": {"amount": 0}}]');
RESET ROLE;

-- SELECT on the key only: the key is shown, the version is not.
GRANT SELECT (id) ON ledger TO rowversion_clerk;
SET ROLE rowversion_clerk;
UPDATE ledger SET amount = 0, version = 1 WHERE id = 1;
SELECT rowversion.update('ledger', '{"id": 1}', 1, '{"amount": 0}');
SELECT * FROM rowversion.try_update('ledger', '{"id": 1}', 1, '{"amount": 0}');
RESET ROLE;

-- SELECT on the version only: the version is shown, the key is not.
REVOKE SELECT (id) ON ledger FROM rowversion_clerk;
GRANT SELECT (version) ON ledger TO rowversion_clerk;
SET ROLE rowversion_clerk;
UPDATE ledger SET amount = 0, version = 1;
RESET ROLE;

-- SELECT on both: everything, as for the owner.
GRANT SELECT ON ledger TO rowversion_clerk;
SET ROLE rowversion_clerk;
UPDATE ledger SET amount = 0, version = 1 WHERE id = 1;
SELECT rowversion.update('ledger', '{"id": 1}', 1, '{"amount": 0}');
SELECT * FROM rowversion.try_update('ledger', '{"id": 1}', 1, '{"amount": 0}');
RESET ROLE;

-- Row-level security: row 2 (now at version 4) is hidden from SELECT but open to UPDATE.
UPDATE ledger SET amount = amount + 1 WHERE id = 2;
ALTER TABLE ledger ENABLE ROW LEVEL SECURITY;
CREATE POLICY read_public ON ledger FOR SELECT USING (note = 'public');
CREATE POLICY write_all ON ledger FOR UPDATE USING (true);
CREATE POLICY delete_all ON ledger FOR DELETE USING (true);
SET ROLE rowversion_clerk;
-- An UPDATE without WHERE reaches row 2 (row 1 is at version 3), and learns nothing about it.
UPDATE ledger SET amount = 0, version = 3;
-- For the checked functions row 2 is as absent as row 3: the same error, whether the version
-- is stale or current, and try_update() returns no version.
SELECT rowversion.update('ledger', '{"id": 2}', 1, '{"amount": 0}');
SELECT rowversion.update('ledger', '{"id": 2}', 4, '{"amount": 0}');
SELECT rowversion.update('ledger', '{"id": 3}', 1, '{"amount": 0}');
SELECT * FROM rowversion.try_update('ledger', '{"id": 2}', 1, '{"amount": 0}');
SELECT * FROM rowversion.try_update('ledger', '{"id": 2}', 4, '{"amount": 0}');
SELECT * FROM rowversion.try_update('ledger', '{"id": 3}', 1, '{"amount": 0}');
SELECT rowversion.delete('ledger', '{"id": 2}', 1);
SELECT rowversion.delete('ledger', '{"id": 2}', 4);
SELECT rowversion.current_version('ledger', '{"id": 2}');
-- Row 1 is readable. The trigger cannot tell which rows the SELECT policies let through, so
-- under row-level security it shows neither key nor version; the checked functions found the
-- row with a SELECT, so they show its version (and, as Postgres does under RLS, not the key).
UPDATE ledger SET amount = 0, version = 1 WHERE id = 1;
SELECT rowversion.update('ledger', '{"id": 1}', 1, '{"amount": 0}');
SELECT * FROM rowversion.try_update('ledger', '{"id": 1}', 1, '{"amount": 0}');
RESET ROLE;
SELECT id, amount, version FROM ledger ORDER BY id;

-- Hints that suggest SQL quote what they paste: a table whose name has quotes.
CREATE TABLE "it's ""odd""" (id int PRIMARY KEY, note text);
SELECT rowversion.update('"it''s ""odd"""', '{"id": 1}', 1, '{}');
SELECT rowversion.enable('public."it''s ""odd"""');
ALTER TABLE "it's ""odd""" DISABLE TRIGGER rowversion;
SELECT rowversion.update('"it''s ""odd"""', '{"id": 1}', 1, '{}');
ALTER TABLE public."it's ""odd""" ENABLE TRIGGER rowversion;
ALTER TABLE "it's ""odd""" RENAME COLUMN version TO "v'""";
SELECT rowversion.enable('"it''s ""odd"""', 'v''"', 'strict');
INSERT INTO "it's ""odd""" VALUES (1, 'a');
UPDATE "it's ""odd""" SET note = 'b';
UPDATE "it's ""odd""" SET note = 'b', "v'""" = 1;

DROP TABLE ledger, "it's ""odd""";
DROP ROLE rowversion_clerk;
