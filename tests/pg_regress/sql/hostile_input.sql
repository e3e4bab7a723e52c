-- Hostile input (issue 11): unusual but legal arguments write exactly the right row, with
-- exactly the given values, or fail with Postgres' own error; never XX000.
\set VERBOSITY terse
-- Numbers are never rounded: keys match exactly one row, values are stored as given.
CREATE TABLE exact (id numeric PRIMARY KEY, amount numeric, n int, b bigint, r real, doc jsonb);
SELECT rowversion.enable('exact');
INSERT INTO exact (id) VALUES (1), (1.00000000000000000001);
SELECT rowversion.update('exact', '{"id": 1.00000000000000000001}', 1, '{"amount": 0.1000000000000000000000001}');
SELECT rowversion.update_many('exact', '[{"key": {"id": 1}, "version": 1, "changes": {"amount": 12345678901234567890.123456789}}]');
SELECT id, amount, version FROM exact ORDER BY id;
SELECT rowversion.current_version('exact', '{"id": 1.00000000000000000001}');
SELECT count(*) FROM rowversion.row_locks('exact', '{"id": 1.00000000000000000001}');
SELECT rowversion.delete('exact', '{"id": 1.00000000000000000001}', 1);
SELECT rowversion.delete('exact', '{"id": 1.00000000000000000001}', 2);
SELECT id, version FROM exact ORDER BY id;

-- Numbers outside a column's range are Postgres' own errors.
SELECT outcome($$SELECT rowversion.update('exact', '{"id": 1}', 2, '{"n": 1e400}')$$);
SELECT outcome($$SELECT rowversion.update('exact', '{"id": 1}', 2, '{"b": 1e400}')$$);
SELECT outcome($$SELECT rowversion.update('exact', '{"id": 1}', 2, '{"n": 2147483648}')$$);
SELECT outcome($$SELECT rowversion.update('exact', '{"id": 1}', 2, '{"b": 9223372036854775808}')$$);
SELECT outcome($$SELECT rowversion.update('exact', '{"id": 1}', 2, '{"r": 1e400}')$$);
SELECT outcome($$SELECT rowversion.update('exact', '{"id": 1}', 2, '{"n": "seven"}')$$);
SELECT outcome($$SELECT rowversion.update('exact', '{"id": 1}', 2, '{"n": 1.5}')$$);
SELECT outcome($$SELECT rowversion.update('exact', '{"id": 1e400}', 2, '{}')$$);
SELECT outcome($$SELECT rowversion.update('exact', '{"id": {"nested": [1, 2]}}', 2, '{}')$$);
SELECT outcome($$SELECT rowversion.update('exact', '{"id": 1}', 2, '{"n": 2147483647, "b": -9223372036854775808}')$$);
SELECT n, b, version FROM exact WHERE id = 1;
-- Every integer width and a scaled numeric, at and past their bounds.
CREATE TABLE bounds (id int PRIMARY KEY, s smallint, i int, b bigint, m numeric(5, 2));
SELECT rowversion.enable('bounds');
INSERT INTO bounds (id) VALUES (1);
SELECT rowversion.update('bounds', '{"id": 1}', 1, '{"s": 32767, "i": -2147483648, "b": 9223372036854775807, "m": 999.99}');
SELECT rowversion.update('bounds', '{"id": 1}', 2, '{"s": -32768, "i": 2147483647, "b": -9223372036854775808, "m": -999.99}');
SELECT s, i, b, m, version FROM bounds;
SELECT outcome($$SELECT rowversion.update('bounds', '{"id": 1}', 3, '{"s": 32768}')$$);
SELECT outcome($$SELECT rowversion.update('bounds', '{"id": 1}', 3, '{"s": -32769}')$$);
SELECT outcome($$SELECT rowversion.update('bounds', '{"id": 1}', 3, '{"i": -2147483649}')$$);
SELECT outcome($$SELECT rowversion.update('bounds', '{"id": 1}', 3, '{"b": -9223372036854775809}')$$);
SELECT outcome($$SELECT rowversion.update('bounds', '{"id": 1}', 3, '{"m": 999.995}')$$);
SELECT outcome($$SELECT rowversion.update('bounds', '{"id": 2147483648}', 3, '{}')$$);
SELECT outcome($$SELECT rowversion.update('bounds', '{"id": 1}', 3, '{"m": 1e-400}')$$);
SELECT outcome($$SELECT rowversion.update_many('bounds', '[{"key": {"id": 1}, "version": -9223372036854775808, "changes": {}}]')$$);
SELECT outcome($$SELECT rowversion.update_many('bounds', '[{"key": {"id": 1}, "version": -9223372036854775809, "changes": {}}]')$$);
SELECT outcome($$SELECT rowversion.update_many('bounds', '[{"key": {"id": 1}, "version": 9223372036854775807, "changes": {}}]')$$);
SELECT s, i, b, m, version FROM bounds;
DROP TABLE bounds;

-- update_many: a version is an integer within bigint's range, or the row is refused (22023).
SELECT outcome($$SELECT rowversion.update_many('exact', '[{"key": {"id": 1}, "version": 1e400, "changes": {}}]')$$);
SELECT outcome($$SELECT rowversion.update_many('exact', '[{"key": {"id": 1}, "version": 9223372036854775808, "changes": {}}]')$$);
SELECT outcome($$SELECT rowversion.update_many('exact', '[{"key": {"id": 1}, "version": 3.5, "changes": {}}]')$$);
SELECT outcome($$SELECT rowversion.update_many('exact', '[{"key": {"id": 1}, "version": "3", "changes": {}}]')$$);
SELECT outcome($$SELECT rowversion.update_many('exact', '[{"key": {"id": 1}, "version": null, "changes": {}}]')$$);
SELECT outcome($$SELECT rowversion.update_many('exact', '[{"key": {"id": 1}, "version": 3.0, "changes": {}}]')$$);
SELECT outcome($$SELECT rowversion.update_many('exact', '[{"key": {"id": 1}, "version": 4, "changes": {}}, [1]]')$$);
SELECT outcome($$SELECT rowversion.update_many('exact', '[{"key": [1], "version": 5, "changes": {}}]')$$);
SELECT outcome($$SELECT rowversion.update_many('exact', '[{"key": {"id": 1}, "version": 5, "changes": "x"}]')$$);
SELECT outcome($$SELECT rowversion.update_many('exact', '{"key": {"id": 1}}')$$);
SELECT outcome($$SELECT rowversion.update_many('exact', '5')$$);
SELECT outcome($$SELECT rowversion.update_many('exact', '[]')$$);
SELECT version FROM exact WHERE id = 1;

-- Documents as deep as jsonb accepts are values like any other; a key or rows nested past what
-- the function reads are 22023.
SELECT rowversion.update('exact', '{"id": 1}', 4,
    jsonb_build_object('doc', (repeat('[', 3000) || '"deep"' || repeat(']', 3000))::jsonb));
SELECT doc = (repeat('[', 3000) || '"deep"' || repeat(']', 3000))::jsonb AS stored_exactly FROM exact WHERE id = 1;
SELECT outcome(format('SELECT rowversion.update(%L, %L, 5, %L)', 'exact',
    repeat('[', 3000) || repeat(']', 3000), '{}'));
SELECT outcome(format('SELECT rowversion.update_many(%L, %L)', 'exact',
    '[' || repeat('[', 3000) || repeat(']', 3000) || ']'));
SELECT outcome(format('SELECT rowversion.update(%L, %L, 5, %L)', 'exact', '{"id": 1}',
    '{"doc": ' || repeat('{"a": ', 3000) || '1' || repeat('}', 3000) || '}'));
SELECT jsonb_typeof(doc) FROM exact WHERE id = 1;

-- A key with many fields that are not columns: the message names a few and counts the rest.
\set VERBOSITY default
SELECT rowversion.update('exact', (SELECT jsonb_object_agg('extra_' || i, i) FROM generate_series(1, 50000) i), 6, '{}');
\set VERBOSITY terse
-- Long names and keys are cut in messages.
SELECT outcome(format('SELECT rowversion.update(%L, %L, 6, %L)', 'exact', '{"id": 1}',
    jsonb_build_object(repeat('x', 1000), 1)));
SELECT outcome(format('SELECT rowversion.update(%L, %L, 6, %L)', 'exact',
    jsonb_build_object('id', repeat('9', 1000)), '{}'));

-- Privileges and the table's state come before the arguments: a role without rights learns
-- nothing about its payload, however malformed.
CREATE ROLE rowversion_stranger;
SET ROLE rowversion_stranger;
SELECT outcome($$SELECT rowversion.update('exact', '[]', 1, '5')$$);
SELECT outcome($$SELECT rowversion.update_many('exact', '"not rows"')$$);
SELECT outcome($$SELECT rowversion.delete('exact', '[]', 1)$$);
SELECT outcome($$SELECT rowversion.current_version('exact', '[]')$$);
SELECT outcome($$SELECT * FROM rowversion.row_locks('exact', '[]')$$);
RESET ROLE;
DROP ROLE rowversion_stranger;
CREATE TABLE unversioned (id int PRIMARY KEY);
SELECT outcome($$SELECT rowversion.update('unversioned', '[]', 1, '5')$$);
CREATE TABLE keyless (id int);
SELECT rowversion.enable('keyless');
SELECT outcome($$SELECT rowversion.update('keyless', '[]', 1, '5')$$);

-- trigger_columns() with a WHEN clause and a relation that does not have its columns (or
-- no relation at all): NULL names, not a crash.
SELECT * FROM rowversion.trigger_columns(0, (SELECT tgqual FROM pg_trigger WHERE tgrelid = 'keyless'::regclass));
SELECT * FROM rowversion.trigger_columns('unversioned', (SELECT tgqual FROM pg_trigger WHERE tgrelid = 'keyless'::regclass));

DROP TABLE exact, unversioned, keyless;
