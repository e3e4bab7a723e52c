-- One contract, two paths: each case runs through the trigger (pg_rowversion.fast_path off)
-- and through the planner fast path, on fresh tables, and shows per path the outcome and the
-- rows. Every pair of lines must agree. These are the divergences differential testing found.
LOAD 'pg_rowversion';
\set VERBOSITY terse
CREATE FUNCTION on_both_paths(setup text, statement text, query text DEFAULT 'SELECT * FROM t')
RETURNS TABLE (path text, outcome text, rows text) LANGUAGE plpgsql AS $$
DECLARE
    fast boolean;
BEGIN
    FOREACH fast IN ARRAY ARRAY[false, true] LOOP
        PERFORM set_config('pg_rowversion.fast_path', fast::text, true);
        EXECUTE 'DROP TABLE IF EXISTS t CASCADE';
        EXECUTE setup;
        path := CASE WHEN fast THEN 'fast path' ELSE 'trigger' END;
        outcome := outcome(statement);
        EXECUTE format('SELECT string_agg(r::text, %L ORDER BY r::text) FROM (%s) r', ' ', query) INTO rows;
        RETURN NEXT;
    END LOOP;
    PERFORM set_config('pg_rowversion.fast_path', 'on', true);
END $$;
\set t1 'CREATE TABLE t (id int PRIMARY KEY, note text, hits int NOT NULL DEFAULT 0); SELECT rowversion.enable(''t'', ignore_columns => ''{hits}''); INSERT INTO t (id, note) VALUES (1, ''a'')'

-- A multiple-column assignment from a sub-select that does not set the version: the
-- version's entry goes before the sub-select's (an internal error on the fast path before).
SELECT * FROM on_both_paths(:'t1', $$UPDATE t SET (note, hits) = (SELECT 'b', 1) WHERE id = 1$$);
SELECT * FROM on_both_paths(:'t1', $$UPDATE t SET (hits, hits) = (SELECT 1, 2) WHERE id = 1$$);
SELECT * FROM on_both_paths(:'t1', $$INSERT INTO t VALUES (1, 'x') ON CONFLICT (id) DO UPDATE SET (note, hits) = (SELECT 'c', 2)$$);
SELECT * FROM on_both_paths(:'t1', $$MERGE INTO t USING (VALUES (1)) s(id) ON t.id = s.id
                                     WHEN MATCHED THEN UPDATE SET (note, hits) = (SELECT 'd', 3)$$);

-- MERGE with several WHEN MATCHED actions: each action's own SET list decides, not the union
-- of them all. Strict: the action that runs does not state the version, another one does.
\set t2 'CREATE TABLE t (id int PRIMARY KEY, note text, hits int NOT NULL DEFAULT 0); SELECT rowversion.enable(''t'', mode => ''strict'', ignore_columns => ''{hits}''); INSERT INTO t (id, note) VALUES (1, ''a'')'
\set stated_elsewhere 'MERGE INTO t USING (VALUES (1, 1)) s(id, v) ON t.id = s.id WHEN MATCHED AND t.hits > 0 THEN UPDATE SET note = ''x'', version = s.v WHEN MATCHED THEN UPDATE SET note = ''y'''
SELECT * FROM on_both_paths(:'t2', :'stated_elsewhere');
-- The action that runs sets an ignored column only; the other one the note: the version stays.
\set ignored_only 'MERGE INTO t USING (VALUES (1)) s(id) ON t.id = s.id WHEN MATCHED AND t.hits > 0 THEN UPDATE SET note = ''x'', version = t.version WHEN MATCHED THEN UPDATE SET hits = t.hits + 1'
SELECT * FROM on_both_paths(:'t2', :'ignored_only');
-- The action that runs states the version; the other one does not.
SELECT * FROM on_both_paths(:'t2', $$MERGE INTO t USING (VALUES (1)) s(id) ON t.id = s.id
                                     WHEN MATCHED AND t.hits > 0 THEN UPDATE SET note = 'x'
                                     WHEN MATCHED THEN UPDATE SET note = 'y', version = 1$$);
-- The same when the table keeps the trigger on both paths (another BEFORE UPDATE trigger), and
-- when the table is partitioned (each partition's actions are its own).
CREATE FUNCTION pg_temp.touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
\set t2_another :t2 '; CREATE TRIGGER another BEFORE UPDATE ON t FOR EACH ROW EXECUTE FUNCTION pg_temp.touch()'
SELECT * FROM on_both_paths(:'t2_another', :'stated_elsewhere');
SELECT * FROM on_both_paths(:'t2_another', :'ignored_only');
\set t2_parted 'CREATE TABLE t (id int, note text, hits int NOT NULL DEFAULT 0) PARTITION BY RANGE (id); CREATE TABLE t_1 PARTITION OF t FOR VALUES FROM (0) TO (10); CREATE TABLE t_2 PARTITION OF t FOR VALUES FROM (10) TO (20); SELECT rowversion.enable(''t'', mode => ''strict'', ignore_columns => ''{hits}''); INSERT INTO t (id, note) VALUES (1, ''a''), (11, ''a'')'
SELECT * FROM on_both_paths(:'t2_parted', $$MERGE INTO t USING (VALUES (1), (11)) s(id) ON t.id = s.id
                                     WHEN MATCHED AND t.id > 10 THEN UPDATE SET hits = t.hits + 1
                                     WHEN MATCHED THEN UPDATE SET note = 'y', version = t.version$$);

-- Generated columns: one counts as changed when it is computed from a column the UPDATE sets
-- (and is not ignored itself); Postgres' marking every stored generated column as updated
-- under a BEFORE trigger does not count.
\set t3 'CREATE TABLE t (id int PRIMARY KEY, hits int NOT NULL DEFAULT 0, note text, shout text GENERATED ALWAYS AS (note || ''!'') STORED); SELECT rowversion.enable(''t'', ignore_columns => ''{hits}''); INSERT INTO t (id, note) VALUES (1, ''a'')'
SELECT * FROM on_both_paths(:'t3', $$UPDATE t SET hits = hits + 1 WHERE id = 1$$);
SELECT * FROM on_both_paths(:'t3', $$UPDATE t SET note = 'b' WHERE id = 1$$);
\set t3_from_ignored 'CREATE TABLE t (id int PRIMARY KEY, hits int NOT NULL DEFAULT 0, note text, double_hits int GENERATED ALWAYS AS (hits * 2) STORED); SELECT rowversion.enable(''t'', ignore_columns => ''{hits}''); INSERT INTO t (id, note) VALUES (1, ''a'')'
SELECT * FROM on_both_paths(:'t3_from_ignored', $$UPDATE t SET hits = hits + 1 WHERE id = 1$$);
-- (A generated column cannot be ignored itself: a trigger's WHEN clause cannot name it.)
SELECT outcome($$SELECT rowversion.enable('t', ignore_columns => '{hits,double_hits}')$$);

-- A function in the SET list that updates the same row: the row is no longer the one the
-- statement read, on both paths the executor's 27000 (strict mode used to say 42P10 on the
-- fast path, deciding before the row was locked).
CREATE FUNCTION pg_temp.bump(key int) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    UPDATE t SET note = 'inner', version = version WHERE id = key;
    RETURN 'outer';
END $$;
SELECT * FROM on_both_paths(:'t2', $$UPDATE t SET note = pg_temp.bump(id) WHERE id = 1$$);
SELECT * FROM on_both_paths(:'t2', $$UPDATE t SET note = pg_temp.bump(id), version = 7 WHERE id = 1$$);

DROP TABLE t CASCADE;
DROP FUNCTION on_both_paths(text, text, text);
