-- Conflict counters (#24): rowversion.conflict_stats counts, per table, the rows written with
-- a stated version (checked), stale ones refused (conflicts), accepted by merge (merged), let
-- through by observe mode (observed, of which merge would have accepted observed_mergeable)
-- and strict-mode refusals (version_required). Both paths count the same events. The counters
-- live in shared memory: on a server without pg_rowversion in shared_preload_libraries every
-- query here raises 55000 (expected/conflict_stats_1.out).
\set VERBOSITY default
SELECT rowversion.conflict_stats_reset();
CREATE TABLE counted_trigger (id int PRIMARY KEY, n int);
CREATE TABLE counted_fast (id int PRIMARY KEY, n int);
SELECT rowversion.enable('counted_trigger', mode => 'strict'), rowversion.enable('counted_fast', mode => 'strict');
INSERT INTO counted_trigger SELECT g, 0 FROM generate_series(1, 3) g;
INSERT INTO counted_fast SELECT g, 0 FROM generate_series(1, 3) g;
-- The same statements through the trigger and through the planner fast path (which counts
-- only when the library is preloaded, as it is here).
CREATE FUNCTION count_events(rel regclass) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('UPDATE %s SET n = 1, version = 1', rel);                 -- 3 checked
    EXECUTE format('UPDATE %s SET n = 2, version = 2 WHERE id = 1', rel);    -- 1 checked
    EXECUTE format('UPDATE %s SET n = 3, version = 9 WHERE id = 2', rel);    -- newer: 1 checked
    BEGIN
        EXECUTE format('UPDATE %s SET n = 4, version = 1 WHERE id = 3', rel);  -- ok: 1 checked
        EXECUTE format('UPDATE %s SET n = 5, version = 1 WHERE id = 3', rel);  -- stale: 1 conflict
    EXCEPTION WHEN serialization_failure THEN
        NULL;  -- rolled back, still counted
    END;
    BEGIN
        EXECUTE format('UPDATE %s SET n = 6 WHERE id = 1', rel);             -- 1 version_required
    EXCEPTION WHEN invalid_column_reference THEN
        NULL;
    END;
    BEGIN
        EXECUTE format('UPDATE %s SET version = NULL WHERE id = 1', rel);    -- not counted
    EXCEPTION WHEN null_value_not_allowed THEN
        NULL;
    END;
    EXECUTE format('UPDATE %s SET n = 7, version = version WHERE id = 1', rel);  -- 1 checked
END
$$;
SET pg_rowversion.fast_path = off;
SELECT count_events('counted_trigger');
RESET pg_rowversion.fast_path;
SELECT count_events('counted_fast');
SELECT rel, checked, conflicts, merged, observed, observed_mergeable, version_required,
       last_conflict IS NOT NULL AS had_conflict, stats_reset <= now() AS since
FROM rowversion.conflict_stats WHERE rel::text LIKE 'counted%' ORDER BY rel::text;
-- Behind an HTTP layer If-Match states the version (at a request's top level): counted as
-- checked, a failed one as a conflict, on both paths; an UPDATE of ignored columns only is
-- bookkeeping, counted on neither.
CREATE TABLE counted_http_trigger (id int PRIMARY KEY, n int, hits int);
CREATE TABLE counted_http_fast (id int PRIMARY KEY, n int, hits int);
SELECT rowversion.enable('counted_http_trigger', ignore_columns => '{hits}'),
       rowversion.enable('counted_http_fast', ignore_columns => '{hits}');
INSERT INTO counted_http_trigger VALUES (1, 0, 0);
INSERT INTO counted_http_fast VALUES (1, 0, 0);
SET pg_rowversion.error_mapping = postgrest;
SET request.headers = '{"if-match": "\"1\""}';
SET pg_rowversion.fast_path = off;
UPDATE counted_http_trigger SET hits = hits + 1;
UPDATE counted_http_trigger SET n = 1;
UPDATE counted_http_trigger SET n = 2;
RESET pg_rowversion.fast_path;
UPDATE counted_http_fast SET hits = hits + 1;
UPDATE counted_http_fast SET n = 1;
UPDATE counted_http_fast SET n = 2;
RESET request.headers;
RESET pg_rowversion.error_mapping;
SELECT rel, checked, conflicts FROM rowversion.conflict_stats WHERE rel::text LIKE 'counted_http%' ORDER BY rel::text;
DROP TABLE counted_http_trigger, counted_http_fast;
-- A conflict in a transaction that rolls back is counted all the same.
BEGIN;
UPDATE counted_fast SET n = 8, version = 1 WHERE id = 1;
ROLLBACK;
SELECT conflicts FROM rowversion.conflict_stats WHERE rel = 'counted_fast'::regclass;
-- The checked functions count their conflicts once, whichever way they report them.
CREATE TABLE counted_functions (id int PRIMARY KEY, n int);
SELECT rowversion.enable('counted_functions');
INSERT INTO counted_functions VALUES (1, 0), (2, 0);
SELECT rowversion.update('counted_functions', '{"id": 1}', 1, '{"n": 1}');
SELECT rowversion.update('counted_functions', '{"id": 1}', 1, '{"n": 2}');
SELECT * FROM rowversion.try_update('counted_functions', '{"id": 1}', 1, '{"n": 3}');
SELECT rowversion.delete('counted_functions', '{"id": 2}', 5);
SELECT rowversion.update_many('counted_functions', '[{"key": {"id": 2}, "version": 1, "changes": {"n": 4}}]');
SELECT rowversion.delete('counted_functions', '{"id": 2}', 2);
SELECT checked, conflicts FROM rowversion.conflict_stats WHERE rel = 'counted_functions'::regclass;
-- Merge mode: merged writes, and refusals (a try_update() skip once).
CREATE TABLE counted_merge (id int PRIMARY KEY, a int, b int);
SELECT rowversion.enable('counted_merge', conflicts => 'merge');
INSERT INTO counted_merge VALUES (1, 0, 0);
UPDATE counted_merge SET a = 1, version = 1 WHERE id = 1;
UPDATE counted_merge SET b = 1, version = 1 WHERE id = 1;
UPDATE counted_merge SET a = 2, version = 1 WHERE id = 1;
SELECT * FROM rowversion.try_update('counted_merge', '{"id": 1}', 1, '{"a": 3}');
SELECT rowversion.update('counted_merge', '{"id": 1}', 1, '{"b": 2}');
SELECT checked, conflicts, merged FROM rowversion.conflict_stats WHERE rel = 'counted_merge'::regclass;
-- Observe mode: would-be refusals, and how many of them merge would have accepted.
CREATE TABLE counted_observe (id int PRIMARY KEY, a int, b int);
SELECT rowversion.enable('counted_observe', mode => 'strict', conflicts => 'observe');
INSERT INTO counted_observe VALUES (1, 0, 0);
UPDATE counted_observe SET a = 1, version = 1 WHERE id = 1;
UPDATE counted_observe SET b = 1, version = 1 WHERE id = 1;
UPDATE counted_observe SET a = 2, version = 1 WHERE id = 1;
UPDATE counted_observe SET a = 3 WHERE id = 1;
SELECT checked, conflicts, observed, observed_mergeable, version_required
FROM rowversion.conflict_stats WHERE rel = 'counted_observe'::regclass;
-- A role sees the tables it holds a privilege on, counts only: no key, no version.
CREATE ROLE stats_reader;
GRANT SELECT (id) ON counted_fast TO stats_reader;
SET ROLE stats_reader;
SELECT rel, conflicts FROM rowversion.conflict_stats ORDER BY rel::text;
SELECT relid::regclass, conflicts FROM rowversion.conflict_counts() ORDER BY 1::text;
-- Resetting is for superusers, as pg_stat_reset() is, unless granted.
SELECT rowversion.conflict_stats_reset('counted_fast');
RESET ROLE;
\d rowversion.conflict_stats
-- Reset one table, then all.
SELECT rowversion.conflict_stats_reset('counted_fast');
SELECT rel, checked, conflicts, last_conflict IS NULL AS no_conflict_since, stats_reset > now() - interval '1 hour' AS reset
FROM rowversion.conflict_stats WHERE rel::text LIKE 'counted_f%' ORDER BY rel::text;
GRANT EXECUTE ON FUNCTION rowversion.conflict_stats_reset(regclass) TO stats_reader;
SET ROLE stats_reader;
SELECT rowversion.conflict_stats_reset();
RESET ROLE;
SELECT count(*) AS tables, sum(checked + conflicts + merged + observed + version_required) AS events
FROM rowversion.conflict_stats WHERE rel::text LIKE 'counted%';
-- Counters of two databases do not mix.
SELECT current_database() AS regress_db \gset
CREATE DATABASE conflict_stats_other;
\c conflict_stats_other
CREATE EXTENSION pg_rowversion;
CREATE TABLE elsewhere (id int PRIMARY KEY);
SELECT rowversion.enable('elsewhere');
INSERT INTO elsewhere VALUES (1);
UPDATE elsewhere SET version = 1;
UPDATE elsewhere SET version = 1;
SELECT rel, checked, conflicts FROM rowversion.conflict_stats;
SELECT 'elsewhere'::regclass::oid AS elsewhere \gset
\c :regress_db
SELECT count(*) AS tables, sum(checked + conflicts) AS events FROM rowversion.conflict_stats
WHERE rel::text LIKE 'counted%';
SELECT count(*) AS from_the_other_database FROM rowversion.conflict_counts() WHERE relid = :elsewhere;
DROP DATABASE conflict_stats_other;
DROP TABLE counted_trigger, counted_fast, counted_functions, counted_merge, counted_observe;
DROP FUNCTION count_events(regclass);
REVOKE EXECUTE ON FUNCTION rowversion.conflict_stats_reset(regclass) FROM stats_reader;
DROP ROLE stats_reader;
