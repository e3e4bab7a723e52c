-- The checked functions and rowversion.changed_since() on a table in merge mode (#23): a
-- stale expected_version whose changes touch no column changed since is applied; update()
-- and update_many() raise the trigger's conflict, naming the columns; try_update() reports
-- it; changed_since() lists what changed, only columns the caller may read.
\set VERBOSITY default
CREATE TABLE items (id int PRIMARY KEY, name text, price int, stock int);
SELECT rowversion.enable('items', conflicts => 'merge');
INSERT INTO items VALUES (1, 'Kettle', 3000, 10), (2, 'Toaster', 4000, 5);
-- Written before merge mode recorded anything: every column counts as changed at version 1.
SELECT * FROM rowversion.changed_since('items', '{"id": 1}', 0);
SELECT rowversion.update('items', '{"id": 1}', 1, '{"price": 3200}');
-- Stale by one, another column: applied, the new version returned.
SELECT rowversion.update('items', '{"id": 1}', 1, '{"stock": 9}');
SELECT * FROM rowversion.changed_since('items', '{"id": 1}', 1);
SELECT * FROM rowversion.changed_since('items', '{"id": 1}', 2);
-- At or after the stored version: nothing changed since.
SELECT count(*) FROM rowversion.changed_since('items', '{"id": 1}', 3);
SELECT count(*) FROM rowversion.changed_since('items', '{"id": 1}', 99);
-- Stale, the same column: update() raises the conflict with the column; try_update() reports.
SELECT rowversion.update('items', '{"id": 1}', 1, '{"price": 2900}');
SELECT * FROM rowversion.try_update('items', '{"id": 1}', 1, '{"price": 2900}');
SELECT * FROM rowversion.try_update('items', '{"id": 1}', 2, '{"name": "Kettle 2"}');
-- A version newer than the stored one is a conflict, as in reject mode (the trigger would
-- take it for the writer's own next version).
SELECT * FROM rowversion.try_update('items', '{"id": 1}', 10, '{"name": "Kettle 3"}');
SELECT rowversion.update('items', '{"id": 1}', 10, '{"name": "Kettle 3"}');
-- No such row.
SELECT * FROM rowversion.try_update('items', '{"id": 3}', 1, '{"name": "x"}');
-- update_many: all or nothing; a disjoint stale row merges, an overlapping one fails them all.
SELECT rowversion.update_many('items', '[{"key": {"id": 1}, "version": 3, "changes": {"stock": 8}},
                                         {"key": {"id": 2}, "version": 1, "changes": {"stock": 4}}]');
SELECT rowversion.update_many('items', '[{"key": {"id": 2}, "version": 1, "changes": {"name": "T"}},
                                         {"key": {"id": 1}, "version": 4, "changes": {"stock": 7}}]');
SELECT rowversion.update_many('items', '[{"key": {"id": 1}, "version": 4, "changes": {"name": "K"}},
                                         {"key": {"id": 2}, "version": 1, "changes": {"stock": 3}}]');
SELECT id, name, price, stock, version FROM items ORDER BY id;
-- A stale delete() is always a conflict, whatever changed: deleting drops every column.
SELECT rowversion.delete('items', '{"id": 2}', 1);
SELECT rowversion.current_version('items', '{"id": 2}');
-- try_update's skipped conflict does not leak into the statements after it.
SELECT * FROM rowversion.try_update('items', '{"id": 1}', 1, '{"stock": 1}');
UPDATE items SET stock = 0, version = 1 WHERE id = 1;
-- Errors: a table not in merge mode, no such row, NULLs, a key that is not the primary key.
CREATE TABLE plain (id int PRIMARY KEY);
SELECT rowversion.enable('plain');
SELECT * FROM rowversion.changed_since('plain', '{"id": 1}', 1);
SELECT * FROM rowversion.changed_since('items', '{"id": 3}', 1);
SELECT * FROM rowversion.changed_since('items', '{"id": 1}', NULL);
SELECT * FROM rowversion.changed_since(NULL, '{"id": 1}', 1);
SELECT * FROM rowversion.changed_since('items', '{"name": "K"}', 1);
-- A partitioned table: the rows of its partitions, named by the parent's columns.
CREATE TABLE readings (id int, at date, value int, note text, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE readings_2026 PARTITION OF readings FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
SELECT rowversion.enable('readings', conflicts => 'merge');
INSERT INTO readings VALUES (1, '2026-05-01', 10, 'a');
UPDATE readings SET value = 11 WHERE id = 1;
SELECT * FROM rowversion.try_update('readings', '{"id": 1, "at": "2026-05-01"}', 1, '{"note": "b"}');
SELECT * FROM rowversion.try_update('readings', '{"id": 1, "at": "2026-05-01"}', 1, '{"value": 12}');
SELECT * FROM rowversion.changed_since('readings', '{"id": 1, "at": "2026-05-01"}', 2);
-- Privileges: SELECT on the key and version columns is needed; a column the caller may not
-- read is never named, in changed_since() nor in a conflict.
CREATE ROLE merge_clerk;
GRANT SELECT (id, name, stock, version), UPDATE (price, stock, version) ON items TO merge_clerk;
UPDATE items SET price = 3300 WHERE id = 1;
SET ROLE merge_clerk;
SELECT * FROM rowversion.changed_since('items', '{"id": 1}', 5);
SELECT rowversion.update('items', '{"id": 1}', 5, '{"price": 1}');
SELECT rowversion.update('items', '{"id": 1}', 5, '{"stock": 1}');
RESET ROLE;
-- With the record readable: the changes of the columns it may read only (not price, at 6).
GRANT SELECT (rowversion_changes) ON items TO merge_clerk;
SET ROLE merge_clerk;
SELECT * FROM rowversion.changed_since('items', '{"id": 1}', 5);
RESET ROLE;
SELECT * FROM rowversion.changed_since('items', '{"id": 1}', 5);
REVOKE SELECT (version) ON items FROM merge_clerk;
SET ROLE merge_clerk;
SELECT * FROM rowversion.changed_since('items', '{"id": 1}', 5);
RESET ROLE;
DROP OWNED BY merge_clerk;
DROP ROLE merge_clerk;
