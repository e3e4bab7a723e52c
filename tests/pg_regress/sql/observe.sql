-- Scenario 12, observing before enforcing (#24): in conflicts => 'observe' mode nothing is
-- refused for a versioning reason (a stale version, or none in strict mode). The write goes
-- through as a lenient one would, and the error it would have raised goes to the server log,
-- shown here under client_min_messages = log, with whether conflicts => 'merge' would have
-- accepted it. The counters are tests/pg_regress/sql/conflict_stats.sql's.
\set VERBOSITY default
CREATE TABLE observed (id int PRIMARY KEY, price int, description text, street text, city text);
SELECT rowversion.enable('observed', mode => 'strict', conflicts => 'observe',
                         merge_groups => '[["street", "city"]]');
SELECT rel, mode, conflicts, merge_groups FROM rowversion.tables WHERE rel = 'observed'::regclass;
-- Observe mode keeps merge mode's record, to say what merge would have done.
SELECT attname, atttypid::regtype FROM pg_attribute
WHERE attrelid = 'observed'::regclass AND attname = 'rowversion_changes';
INSERT INTO observed VALUES (1, 100, 'Red', 'Main St 1', 'Springfield'), (2, 200, 'Blue', 'Elm St 2', 'Shelbyville');
SET client_min_messages = log;
-- Every line, until the rate limit's own test below.
SET pg_rowversion.observe_log_rate = 100000;
-- Two editors read version 1. A saves the price; B, stale, the description: let through,
-- and merge would have accepted it.
UPDATE observed SET price = 110, version = 1 WHERE id = 1 RETURNING price, description, version;
UPDATE observed SET description = 'Red, 15 bar', version = 1 WHERE id = 1 RETURNING price, description, version;
-- C, stale too, saves the price: let through, and merge would have refused it, naming the
-- column that changed since.
UPDATE observed SET price = 120, version = 1 WHERE id = 1 RETURNING price, version;
-- Merge groups count: the street changed since version 1, so a stale change of the city
-- would have been refused by merge.
UPDATE observed SET street = 'Main St 3', version = 3 WHERE id = 1 RETURNING version;
UPDATE observed SET city = 'Capital City', version = 1 WHERE id = 1 RETURNING version;
-- Strict mode's missing version: let through, the version moves on.
UPDATE observed SET price = 130 WHERE id = 1 RETURNING price, version;
-- A whole-table UPDATE: one line per stale row.
UPDATE observed SET price = price + 1, version = 1;
-- Not a versioning reason: a NULL version is still refused.
UPDATE observed SET version = NULL WHERE id = 1;
-- The current version and a newer one are accepted as always, and not logged.
UPDATE observed SET price = 140, version = 8 WHERE id = 1 RETURNING version;
UPDATE observed SET price = 150, version = 20 WHERE id = 1 RETURNING version;
-- The same through the planner fast path's setting: observe mode keeps the trigger, which
-- decides alike.
SET pg_rowversion.fast_path = off;
UPDATE observed SET description = 'Blue, 9 bar', version = 1 WHERE id = 2 RETURNING version;
RESET pg_rowversion.fast_path;
UPDATE observed SET description = 'Blue, 10 bar', version = 1 WHERE id = 2 RETURNING version;
-- The checked functions: a stale update() and try_update() are applied, a stale delete() too.
SELECT rowversion.update('observed', '{"id": 2}', 1, '{"price": 210}');
SELECT * FROM rowversion.try_update('observed', '{"id": 2}', 1, '{"price": 220}');
SELECT rowversion.update_many('observed', '[{"key": {"id": 2}, "version": 1, "changes": {"price": 230}}]');
INSERT INTO observed VALUES (3, 300, 'Green', NULL, NULL);
UPDATE observed SET price = 310, version = 1 WHERE id = 3;
SELECT rowversion.delete('observed', '{"id": 3}', 1);
-- A version newer than the row's is no version it had: refused in every mode.
SELECT rowversion.delete('observed', '{"id": 2}', 99);
SELECT id, price, description, street, city, version FROM observed ORDER BY id;
-- changed_since() reads the record of observe mode as of merge mode.
SELECT * FROM rowversion.changed_since('observed', '{"id": 1}', 1);
-- A role that may not read the price sees it named nowhere, in the log neither.
CREATE ROLE observe_clerk;
GRANT SELECT (id, description, version), UPDATE (price, description, version) ON observed TO observe_clerk;
SET ROLE observe_clerk;
UPDATE observed SET price = 1, version = 1 WHERE id = 1;
RESET ROLE;
-- The log is rate-limited per session: at most pg_rowversion.observe_log_rate lines per
-- second (a bucket holding one second's worth); the next line logged says how many were left
-- out. At 1 line per second, a 50-row UPDATE logs 1 line (unless it takes a second).
CREATE TABLE observed_bulk (id int PRIMARY KEY, n int);
SELECT rowversion.enable('observed_bulk', conflicts => 'observe');
INSERT INTO observed_bulk SELECT g, 0 FROM generate_series(1, 50) g;
UPDATE observed_bulk SET n = 1;
SET pg_rowversion.observe_log_rate = 1;
UPDATE observed_bulk SET n = 2, version = 1;
SET pg_rowversion.observe_log_rate = 1000;
SELECT pg_sleep(0.01);
UPDATE observed_bulk SET n = 3, version = 1 WHERE id = 1;
SET pg_rowversion.observe_log_rate = 0;
UPDATE observed_bulk SET n = 4, version = 1;
SELECT count(*) FILTER (WHERE n = 4) AS let_through FROM observed_bulk;
RESET pg_rowversion.observe_log_rate;
-- Only a superuser sets the rate.
SET ROLE observe_clerk;
SET pg_rowversion.observe_log_rate = 100000;
RESET ROLE;
RESET client_min_messages;
-- Switching to merge keeps the record: what observe said merge would accept, it accepts.
SELECT rowversion.enable('observed', conflicts => 'merge', merge_groups => '[["street", "city"]]');
UPDATE observed SET price = 500, version = 21 WHERE id = 1 RETURNING version;
UPDATE observed SET description = 'merged', version = 21 WHERE id = 1 RETURNING version;
UPDATE observed SET price = 510, version = 21 WHERE id = 1;
-- And to reject: a stale version is refused again.
SELECT rowversion.enable('observed', mode => 'strict');
UPDATE observed SET price = 520, version = 21 WHERE id = 1;
UPDATE observed SET price = 520 WHERE id = 1;
DROP TABLE observed, observed_bulk;
DROP ROLE observe_clerk;
