-- Checked updates and deletes as function calls (scenarios 1-4).
\set VERBOSITY default
CREATE TABLE accounts (id int PRIMARY KEY, owner text NOT NULL, balance bigint NOT NULL);
SELECT rowversion.enable('accounts');
INSERT INTO accounts VALUES (1, 'ann', 1000000), (2, 'bob', 0);
-- A transfer in two checked steps; each returns the new version.
SELECT rowversion.update('accounts', '{"id": 1}', 1, '{"balance": 700000}');
SELECT rowversion.update('accounts', '{"id": 2}', 1, '{"balance": 300000}');
-- A writer that read version 1 of account 1 is told, with the same error as the trigger's.
SELECT rowversion.update('accounts', '{"id": 1}', 1, '{"balance": 1500000}');
SELECT * FROM error_fields($$SELECT rowversion.update('accounts', '{"id": 1}', 1, '{"balance": 1500000}')$$);
-- try_update reports instead of raising.
SELECT * FROM rowversion.try_update('accounts', '{"id": 1}', 1, '{"balance": 1500000}');
SELECT * FROM rowversion.try_update('accounts', '{"id": 1}', 2, '{"balance": 1500000}');
SELECT * FROM rowversion.try_update('accounts', '{"id": 3}', 1, '{"balance": 1}');
SELECT rowversion.current_version('accounts', '{"id": 1}');
-- Bad input.
SELECT rowversion.update('accounts', '{"id": 3}', 1, '{"balance": 1}');
SELECT rowversion.update('accounts', '{"owner": "ann"}', 3, '{}');
SELECT rowversion.update('accounts', '{"id": 1}', 3, '{"balanse": 1}');
SELECT rowversion.update('accounts', '{"id": 1}', 3, '{"version": 9}');
SELECT rowversion.update('accounts', '{"id": 1}', NULL, '{}');
CREATE TABLE notes (id int PRIMARY KEY, body text);
SELECT rowversion.update('notes', '{"id": 1}', 1, '{}');
-- update_many: all or nothing.
SELECT rowversion.update_many('accounts', '[
  {"key": {"id": 2}, "version": 2, "changes": {"balance": 0}},
  {"key": {"id": 1}, "version": 1, "changes": {"balance": 1000000}}]');
SELECT id, balance, version FROM accounts ORDER BY id;
SELECT rowversion.update_many('accounts', '[
  {"key": {"id": 2}, "version": 2, "changes": {"balance": 0}},
  {"key": {"id": 1}, "version": 3, "changes": {"balance": 1000000}}]');
SELECT id, balance, version FROM accounts ORDER BY id;
-- Checked delete.
SELECT rowversion.delete('accounts', '{"id": 2}', 1);
SELECT rowversion.delete('accounts', '{"id": 2}', 3);
SELECT id, balance, version FROM accounts ORDER BY id;
DROP TABLE accounts, notes;
