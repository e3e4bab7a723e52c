-- The planner fast path (src/fast_path.rs): with the library loaded at plan time, a plain
-- UPDATE of a versioned table computes the version in its SET list and skips the trigger;
-- every other statement keeps the trigger. EXPLAIN shows which path a statement took.
LOAD 'pg_rowversion';
\set VERBOSITY terse
CREATE FUNCTION plan_of(statement text, run boolean DEFAULT false) RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE line text;
BEGIN
    -- The same lines on every major (Postgres 18 shows row counts with decimals, and index
    -- searches).
    FOR line IN EXECUTE CASE WHEN run THEN 'EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF, BUFFERS OFF) '
                             ELSE 'EXPLAIN (VERBOSE, COSTS OFF) ' END || statement LOOP
        CONTINUE WHEN line ~ '^\s*Index Searches: ';
        RETURN NEXT regexp_replace(regexp_replace(line, '''\d+''::oid', '<table>', 'g'),
                                   'rows=(\d+)\.\d+', 'rows=\1', 'g');
    END LOOP;
END $$;

CREATE TABLE fp (id int PRIMARY KEY, note text, hits int);
SELECT rowversion.enable('fp');
INSERT INTO fp SELECT g, 'n', 0 FROM generate_series(1, 3) g;
-- Rewritten: the call is in the SET list, and the trigger is not called.
SELECT plan_of($$UPDATE fp SET note = 'a' WHERE id = 1$$);
SELECT plan_of($$UPDATE fp SET note = 'a'$$, run => true);
SELECT id, version FROM fp ORDER BY id;
-- The trigger's contract: the stated version is checked and moves on, a newer one is kept,
-- a stale one and NULL are refused, with the trigger's errors.
UPDATE fp SET note = 'b', version = 2 WHERE id = 1 RETURNING version;
UPDATE fp SET version = 100 WHERE id = 2 RETURNING version;
SELECT outcome($$UPDATE fp SET note = 'c', version = 2 WHERE id = 1$$);
SELECT error_fields($$UPDATE fp SET note = 'c', version = 2 WHERE id = 1$$);
SELECT outcome($$UPDATE fp SET version = NULL WHERE id = 1$$);
-- Through an auto-updatable view, and from a prepared statement.
CREATE VIEW fp_view AS SELECT * FROM fp;
SELECT plan_of($$UPDATE fp_view SET note = 'v' WHERE id = 3$$);
PREPARE checked(int, bigint) AS UPDATE fp SET note = 'p', version = $2 WHERE id = $1 RETURNING version;
EXECUTE checked(3, 2);
SELECT outcome($$EXECUTE checked(3, 2)$$);
-- Strict mode, and an UPDATE of ignored columns only.
SELECT rowversion.enable('fp', mode => 'strict', ignore_columns => '{hits}');
SELECT outcome($$UPDATE fp SET note = 'd' WHERE id = 1$$);
UPDATE fp SET hits = hits + 1 WHERE id = 1 RETURNING version, hits;
SELECT plan_of($$UPDATE fp SET hits = hits + 1$$, run => true);
-- A prepared statement follows the table: planned for lenient mode, it is re-planned when the
-- mode changes (strict: refused), and when versioning is disabled (the version stays).
SELECT rowversion.enable('fp', mode => 'lenient', ignore_columns => '{hits}');
PREPARE touch_note(int) AS UPDATE fp SET note = 'r' WHERE id = $1 RETURNING version;
EXECUTE touch_note(1);
SELECT rowversion.enable('fp', mode => 'strict', ignore_columns => '{hits}');
SELECT outcome($$EXECUTE touch_note(1)$$);
SELECT rowversion.disable('fp');
EXECUTE touch_note(1);
SELECT rowversion.enable('fp', mode => 'strict', ignore_columns => '{hits}');
DEALLOCATE touch_note;
-- pg_rowversion.fast_path = off: the trigger again, with the same results.
SET pg_rowversion.fast_path = off;
SELECT plan_of($$UPDATE fp SET note = 'e', version = version$$, run => true);
RESET pg_rowversion.fast_path;
SELECT id, version FROM fp ORDER BY id;

-- An UPDATE of the table in a data-modifying WITH of a rewritten UPDATE of the same table
-- keeps its check: a stale version there is refused.
SELECT outcome($$WITH other AS (UPDATE fp SET note = 'w', version = 1 WHERE id = 2 RETURNING id)
                 UPDATE fp SET note = 'w', version = version WHERE id = 1$$);
-- INSERT ... ON CONFLICT DO UPDATE: the SET list computes the version (the existing row's
-- is the stored one), the trigger fires for the INSERT attempt only.
SELECT plan_of($$INSERT INTO fp VALUES (1, 'g', 0) ON CONFLICT (id) DO UPDATE SET note = 'g', version = fp.version$$,
               run => true);
SELECT outcome($$INSERT INTO fp VALUES (1, 'h', 0) ON CONFLICT (id) DO UPDATE SET note = 'h', version = 1$$);
SELECT error_fields($$INSERT INTO fp VALUES (1, 'h', 0) ON CONFLICT (id) DO UPDATE SET note = 'h', version = 1$$);
INSERT INTO fp VALUES (4, 'new', 0) ON CONFLICT (id) DO UPDATE SET note = 'i', version = fp.version
    RETURNING id, version;
-- MERGE: each WHEN MATCHED THEN UPDATE computes the version; the trigger fires for the
-- inserted row only.
SELECT plan_of($$MERGE INTO fp USING (VALUES (1, 'm'), (5, 'm')) AS s(id, note) ON fp.id = s.id
                 WHEN MATCHED THEN UPDATE SET note = s.note, version = fp.version
                 WHEN NOT MATCHED THEN INSERT (id, note, hits) VALUES (s.id, s.note, 0)$$, run => true);
SELECT outcome($$MERGE INTO fp USING (VALUES (1, 'n')) AS s(id, note) ON fp.id = s.id
                 WHEN MATCHED THEN UPDATE SET note = s.note, version = 1$$);
SELECT outcome($$MERGE INTO fp USING (VALUES (1, 'n')) AS s(id, note) ON fp.id = s.id
                 WHEN MATCHED THEN UPDATE SET note = s.note$$);
-- Left to the trigger: another BEFORE UPDATE row trigger (their order matters).
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
CREATE TRIGGER another BEFORE UPDATE ON fp FOR EACH ROW EXECUTE FUNCTION touch();
SELECT plan_of($$UPDATE fp SET note = 'f', version = version$$, run => true);
DROP TRIGGER another ON fp;
SELECT id, version FROM fp ORDER BY id;

-- A hand-made trigger `rowversion` that fires only for some columns (UPDATE OF note): its own
-- rules, not the fast path; an UPDATE of another column leaves the version alone.
CREATE TABLE some_columns (id int PRIMARY KEY, note text, other text, version bigint);
CREATE TRIGGER rowversion BEFORE INSERT OR UPDATE OF note ON some_columns FOR EACH ROW
    WHEN (NEW.version IS NULL OR true) EXECUTE FUNCTION rowversion.version_trigger('lenient');
INSERT INTO some_columns VALUES (1, 'a', 'a', 1);
SELECT plan_of($$UPDATE some_columns SET other = 'b'$$, run => true);
UPDATE some_columns SET other = 'c' RETURNING version;
UPDATE some_columns SET note = 'c' RETURNING version;
DROP TABLE some_columns;

-- next_version() runs only as the planner wrote it: a call written by hand, alone or in an
-- UPDATE's SET list (where a forged call would otherwise turn the trigger off), is refused.
SELECT outcome($$SELECT rowversion.next_version(5::bigint, 2::bigint, 0, '(0,1)', 1381367810)$$);
SELECT outcome($$SELECT rowversion.next_version(5::bigint, 2::bigint, 'pg_authid'::regclass, '(0,1)', 2)$$);
SELECT outcome($$SELECT rowversion.next_version(5::bigint, 2::bigint, 'fp'::regclass, '(0,1)', 1381367810)$$);
SELECT outcome($$UPDATE fp SET note = 'forged', version = rowversion.next_version(version, version, tableoid, ctid, 1381367811)$$);
SELECT id, note, version FROM fp ORDER BY id;

-- A partitioned table: the SET list is translated to every partition (parted_2 numbers its
-- columns differently, after a dropped one; parted_3 is partitioned itself), each skips its
-- trigger, and a conflict names the partition and the row's key, as the trigger does.
CREATE TABLE parted (id int PRIMARY KEY, note text) PARTITION BY RANGE (id);
CREATE TABLE parted_1 PARTITION OF parted FOR VALUES FROM (1) TO (100);
CREATE TABLE parted_2 (dropped int, id int NOT NULL, note text);
ALTER TABLE parted_2 DROP COLUMN dropped;
ALTER TABLE parted ATTACH PARTITION parted_2 FOR VALUES FROM (100) TO (200);
CREATE TABLE parted_3 PARTITION OF parted FOR VALUES FROM (200) TO (300) PARTITION BY RANGE (id);
CREATE TABLE parted_3a PARTITION OF parted_3 FOR VALUES FROM (200) TO (300);
SELECT rowversion.enable('parted');
INSERT INTO parted VALUES (1, 'x'), (101, 'x'), (201, 'x');
SELECT plan_of($$UPDATE parted SET note = 'y' WHERE id IN (1, 101)$$);
SELECT plan_of($$UPDATE parted SET note = 'y'$$, run => true);
UPDATE parted SET note = 'z', version = 2 WHERE id = 101 RETURNING tableoid::regclass, id, version;
\set VERBOSITY default
UPDATE parted SET note = 'z', version = 2 WHERE id = 101;
\set VERBOSITY terse
SELECT error_fields($$UPDATE parted SET note = 'z', version = 2 WHERE id = 101$$);
SELECT outcome($$UPDATE parted SET note = 'z', version = NULL WHERE id = 201$$);
-- A row moved to another partition: checked where it was, inserted where it goes.
UPDATE parted SET id = 150, version = 2 WHERE id = 1 RETURNING tableoid::regclass, id, version;
SELECT outcome($$UPDATE parted SET id = 2, version = 2 WHERE id = 150$$);
-- MERGE takes the fast path too; INSERT ... ON CONFLICT keeps the trigger (the partition is
-- chosen while the statement runs).
SELECT plan_of($$MERGE INTO parted USING (VALUES (101, 'm')) AS s(id, note) ON parted.id = s.id
                 WHEN MATCHED THEN UPDATE SET note = s.note, version = parted.version$$, run => true);
SELECT plan_of($$INSERT INTO parted VALUES (201, 'u') ON CONFLICT (id) DO UPDATE SET note = 'u', version = parted.version$$,
               run => true);
SELECT outcome($$INSERT INTO parted VALUES (201, 'u') ON CONFLICT (id) DO UPDATE SET note = 'u', version = 1$$);
SELECT tableoid::regclass, id, note, version FROM parted ORDER BY id;
-- A partition whose trigger is disabled, or has another BEFORE UPDATE row trigger: the whole
-- statement keeps the triggers, and that partition's rows keep their version. A plan made
-- before is made again.
SET plan_cache_mode = force_generic_plan;
PREPARE note_all AS UPDATE parted SET note = 'p' RETURNING id, version;
EXECUTE note_all;
ALTER TABLE parted_2 DISABLE TRIGGER rowversion;
SELECT plan_of($$UPDATE parted SET note = 'y'$$, run => true);
EXECUTE note_all;
ALTER TABLE parted_2 ENABLE TRIGGER rowversion;
CREATE TRIGGER another BEFORE UPDATE ON parted_3a FOR EACH ROW EXECUTE FUNCTION touch();
SELECT plan_of($$UPDATE parted SET note = 'y' WHERE id = 201$$);
DROP TRIGGER another ON parted_3a;
EXECUTE note_all;
DEALLOCATE note_all;
RESET plan_cache_mode;

-- An inheritance parent: its children are tables of their own, so the fast path applies only
-- when every child it updates is versioned as the parent is (UPDATE ONLY: the parent alone).
CREATE TABLE parent (id int PRIMARY KEY, note text, hits int);
CREATE TABLE child () INHERITS (parent);
SELECT rowversion.enable('parent');
INSERT INTO parent VALUES (1, 'x', 0);
INSERT INTO child VALUES (2, 'x', 0);
SELECT plan_of($$UPDATE parent SET note = 'y'$$, run => true);
SELECT plan_of($$UPDATE ONLY parent SET note = 'y'$$, run => true);
SELECT rowversion.enable('child', mode => 'strict');
SELECT plan_of($$UPDATE parent SET note = 'y', version = version$$, run => true);
SELECT rowversion.enable('child');
SELECT plan_of($$UPDATE parent SET note = 'y'$$, run => true);
SELECT rowversion.enable('child', ignore_columns => '{hits}');
SELECT plan_of($$UPDATE parent SET hits = 1$$, run => true);
SELECT tableoid::regclass, id, note, version FROM parent ORDER BY id;

DROP TABLE fp, parted, parent CASCADE;
DROP FUNCTION plan_of(text, boolean), touch();
