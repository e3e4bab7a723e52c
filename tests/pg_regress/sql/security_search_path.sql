-- Security (issue 10, section 1): objects an unprivileged role plants in public never run
-- when a superuser calls the extension, whatever the superuser's search_path. Each planted
-- operator, function, aggregate and type answers correctly, so a hijack is silent, but it
-- logs itself and the role it ran as to public.pwned, which must stay empty.
\set VERBOSITY terse
CREATE ROLE rowversion_attacker;
GRANT CREATE ON SCHEMA public TO rowversion_attacker;
CREATE TABLE public.pwned (what text, ran_as name);
GRANT INSERT ON public.pwned TO PUBLIC;
CREATE TYPE mood AS ENUM ('sad', 'happy');

-- The tables a superuser works on: one per kind of primary key, each with a nullable version
-- column (so that enable() has NULLs to fill) and a note to change.
CREATE TABLE k_int (id int PRIMARY KEY, version int, note text);
CREATE TABLE k_bigint (id bigint PRIMARY KEY, version bigint, note text);
CREATE TABLE k_smallint (id smallint PRIMARY KEY, version smallint, note text);
CREATE TABLE k_text (id text PRIMARY KEY, version bigint, note text);
CREATE TABLE k_varchar (id varchar(20) PRIMARY KEY, version bigint, note text);
CREATE TABLE k_name (id name PRIMARY KEY, version bigint, note text);
CREATE TABLE k_numeric (id numeric PRIMARY KEY, version bigint, note text);
CREATE TABLE k_enum (id mood PRIMARY KEY, version bigint, note text);
CREATE TABLE k_array (id int[] PRIMARY KEY, version bigint, note text);
CREATE TABLE k_pair (a int, b varchar(10), version bigint, note text, PRIMARY KEY (a, b));
CREATE TABLE k_parted (id int PRIMARY KEY, version bigint, note text) PARTITION BY RANGE (id);
CREATE TABLE k_parted_1 PARTITION OF k_parted FOR VALUES FROM (0) TO (100);
CREATE TABLE keys (rel regclass, key jsonb);
INSERT INTO keys VALUES
    ('k_int', '{"id": 1}'), ('k_bigint', '{"id": 1}'), ('k_smallint', '{"id": 1}'),
    ('k_text', '{"id": "a"}'), ('k_varchar', '{"id": "a"}'), ('k_name', '{"id": "a"}'),
    ('k_numeric', '{"id": 1.5}'), ('k_enum', '{"id": "happy"}'), ('k_array', '{"id": [1, 2]}'),
    ('k_pair', '{"a": 1, "b": "x"}'), ('k_parted', '{"id": 1}');
DO $$
DECLARE r record;
BEGIN
    FOR r IN SELECT * FROM keys LOOP
        EXECUTE format('INSERT INTO %s SELECT * FROM jsonb_populate_record(NULL::%1$s, %L)', r.rel, r.key);
    END LOOP;
END
$$;

-- What the attacker plants.
SET ROLE rowversion_attacker;
CREATE FUNCTION public.pwned(what text) RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    INSERT INTO public.pwned VALUES (what, current_user);
    RETURN true;
END
$$;
-- Operators on every type the extension compares, computes or concatenates, each an exact
-- match for arguments where pg_catalog has only a match through a cast or a polymorphic type.
DO $$
DECLARE
    types text[] := ARRAY['oid', 'regclass', 'regprocedure', 'int2', 'int4', 'int8', 'text',
        'name', 'varchar', 'bpchar', 'jsonb', 'numeric', '"char"', 'xid', 'bool', 'interval',
        'timestamptz', 'bytea', 'tid', 'float8', 'mood', 'int2[]', 'int4[]', 'int8[]',
        'text[]', 'oid[]', 'name[]', 'varchar[]', 'int2vector', 'oidvector'];
    comparisons text[] := ARRAY['=', '<>', '<', '>', '<=', '>='];
    mixed text[][] := ARRAY[['oid', 'regclass'], ['regclass', 'oid'], ['oid', 'regprocedure'],
        ['name', 'text'], ['text', 'name'], ['varchar', 'text'], ['text', 'varchar'],
        ['int2', 'int8'], ['int8', 'int2'], ['int4', 'int8'], ['int8', 'int4'],
        ['int2', 'int4'], ['int4', 'int2'], ['"char"', 'text'], ['text', '"char"'],
        ['int4', 'numeric'], ['numeric', 'int4'], ['int8', 'numeric'], ['numeric', 'int8'],
        ['varchar', 'varchar[]'], ['int4', 'int4[]'], ['int2', 'int2[]']];
    others text[][] := ARRAY[
        ['||', 'text', 'text', 'text'], ['||', 'int4[]', 'int4[]', 'int4[]'],
        ['||', 'int4[]', 'int4', 'int4[]'], ['||', 'int8[]', 'int8[]', 'int8[]'],
        ['-', 'int8', 'int8', 'int8'], ['-', 'int4', 'int4', 'int4'], ['-', 'int8', 'int4', 'int8'],
        ['-', 'timestamptz', 'timestamptz', 'interval'], ['+', 'int8', 'int8', 'int8'],
        ['+', 'int4', 'int4', 'int4'], ['<<', 'int8', 'int4', 'int8'], ['|', 'int8', 'int8', 'int8'],
        ['->', 'jsonb', 'text', 'jsonb'], ['->>', 'jsonb', 'text', 'text'],
        ['@>', 'jsonb', 'jsonb', 'bool'], ['?', 'jsonb', 'text', 'bool']];
    t text;
    op text;
    pair text[];
    n int := 0;
BEGIN
    FOREACH t IN ARRAY types LOOP
        mixed := mixed || ARRAY[[t, t]];
    END LOOP;
    FOREACH pair SLICE 1 IN ARRAY mixed LOOP
        FOREACH op IN ARRAY comparisons LOOP
            others := others || ARRAY[[op, pair[1], pair[2], 'bool']];
        END LOOP;
    END LOOP;
    FOREACH pair SLICE 1 IN ARRAY others LOOP
        n := n + 1;
        BEGIN
            EXECUTE format($f$CREATE FUNCTION public.planted_op_%s(%s, %s) RETURNS %s LANGUAGE sql VOLATILE
                              AS $b$SELECT public.pwned(%L); SELECT $1 OPERATOR(pg_catalog.%s) $2 $b$ $f$,
                           n, pair[2], pair[3], pair[4], format('%s(%s,%s)', pair[1], pair[2], pair[3]), pair[1]);
        EXCEPTION WHEN undefined_function THEN
            CONTINUE;  -- pg_catalog has no such operator either: nothing to imitate
        END;
        EXECUTE format('CREATE OPERATOR public.%s (LEFTARG = %s, RIGHTARG = %s, FUNCTION = public.planted_op_%s)',
                       pair[1], pair[2], pair[3], n);
    END LOOP;
END
$$;
-- Copies of the functions and aggregates the extension calls: exact matches where pg_catalog
-- has a polymorphic one, and shadows for a caller whose search_path puts public first.
CREATE FUNCTION public.planted_accum(int4[], int4) RETURNS int4[] LANGUAGE sql VOLATILE
    AS 'SELECT public.pwned(''array_agg(int4)''); SELECT pg_catalog.array_append($1, $2)';
CREATE AGGREGATE public.array_agg(int4) (SFUNC = public.planted_accum, STYPE = int4[]);
CREATE FUNCTION public.planted_count(int8, int4) RETURNS int8 LANGUAGE sql VOLATILE
    AS 'SELECT public.pwned(''count(int4)''); SELECT $1 OPERATOR(pg_catalog.+) 1';
CREATE AGGREGATE public.count(int4) (SFUNC = public.planted_count, STYPE = int8, INITCOND = '0');
CREATE FUNCTION public.planted_min(int4, int4) RETURNS int4 LANGUAGE sql VOLATILE
    AS 'SELECT public.pwned(''min(int4)''); SELECT CASE WHEN $1 IS NULL OR $2 OPERATOR(pg_catalog.<) $1 THEN $2 ELSE $1 END';
CREATE AGGREGATE public.min(int4) (SFUNC = public.planted_min, STYPE = int4);
CREATE FUNCTION public.jsonb_populate_record(anyelement, jsonb) RETURNS anyelement LANGUAGE sql VOLATILE
    AS 'SELECT public.pwned(''jsonb_populate_record''); SELECT pg_catalog.jsonb_populate_record($1, $2)';
CREATE FUNCTION public.format_type(oid, int4) RETURNS text LANGUAGE sql VOLATILE
    AS 'SELECT public.pwned(''format_type''); SELECT pg_catalog.format_type($1, $2)';
CREATE FUNCTION public.pg_has_role(oid, text) RETURNS bool LANGUAGE sql VOLATILE
    AS 'SELECT public.pwned(''pg_has_role''); SELECT pg_catalog.pg_has_role($1, $2)';
CREATE FUNCTION public.array_position(anyarray, anyelement) RETURNS int4 LANGUAGE sql VOLATILE
    AS 'SELECT public.pwned(''array_position''); SELECT pg_catalog.array_position($1, $2)';
CREATE FUNCTION public.cardinality(anyarray) RETURNS int4 LANGUAGE sql VOLATILE
    AS 'SELECT public.pwned(''cardinality''); SELECT pg_catalog.cardinality($1)';
CREATE FUNCTION public.now() RETURNS timestamptz LANGUAGE sql VOLATILE
    AS 'SELECT public.pwned(''now''); SELECT pg_catalog.now()';
CREATE FUNCTION public.left(text, int4) RETURNS text LANGUAGE sql VOLATILE
    AS 'SELECT public.pwned(''left''); SELECT pg_catalog.left($1, $2)';
CREATE FUNCTION public.current_database() RETURNS name LANGUAGE sql VOLATILE
    AS 'SELECT public.pwned(''current_database''); SELECT pg_catalog.current_database()';
CREATE FUNCTION public.pg_blocking_pids(int4) RETURNS int4[] LANGUAGE sql VOLATILE
    AS 'SELECT public.pwned(''pg_blocking_pids''); SELECT pg_catalog.pg_blocking_pids($1)';
CREATE FUNCTION public.split_part(text, text, int4) RETURNS text LANGUAGE sql VOLATILE
    AS 'SELECT public.pwned(''split_part''); SELECT pg_catalog.split_part($1, $2, $3)';
CREATE FUNCTION public.encode(bytea, text) RETURNS text LANGUAGE sql VOLATILE
    AS 'SELECT public.pwned(''encode''); SELECT pg_catalog.encode($1, $2)';
-- Types named like pg_catalog's, for casts and type names that are not qualified: a cast to
-- a domain runs its CHECK.
DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['text', 'int8', 'int4', 'int2', 'oid', 'name', 'regclass', 'point',
                             'jsonb', 'numeric', 'bool', 'tid', 'xid', 'regprocedure'] LOOP
        EXECUTE format('CREATE DOMAIN public.%I AS pg_catalog.%I CHECK (public.pwned(%L))', t, t, 'type ' || t);
    END LOOP;
END
$$;
RESET ROLE;
SELECT count(*) > 300 AS planted_operators FROM pg_operator WHERE oprnamespace = 'public'::regnamespace;

-- Every entry point, run by the superuser under one search_path. Each call reports 'ok' or
-- its error; the calls themselves qualify what they use, so only the extension is on trial.
CREATE FUNCTION entry_points(path text) RETURNS TABLE (call text, outcome text)
LANGUAGE plpgsql AS $f$
DECLARE
    r record;
    calls text[] := ARRAY[]::pg_catalog.text[];
BEGIN
    FOR r IN SELECT * FROM keys LOOP
        calls := pg_catalog.array_cat(calls, ARRAY[
            pg_catalog.format('SELECT rowversion.disable(%L)', r.rel),
            pg_catalog.format('UPDATE %s SET version = NULL', r.rel),
            pg_catalog.format('SELECT rowversion.enable(%L)', r.rel),
            pg_catalog.format('SELECT rowversion.enable(%L, %L, %L)', r.rel, 'version', 'strict'),
            pg_catalog.format('SELECT rowversion.current_version(%L, %L)', r.rel, r.key),
            pg_catalog.format('SELECT rowversion.update(%L, %L, rowversion.current_version(%1$L, %2$L), %L)',
                              r.rel, r.key, '{"note": "by update"}'),
            pg_catalog.format('SELECT rowversion.update(%L, %L, -7, %L)', r.rel, r.key, '{"note": "stale"}'),
            pg_catalog.format('SELECT * FROM rowversion.try_update(%L, %L, -7, %L)', r.rel, r.key, '{"note": "stale"}'),
            pg_catalog.format('SELECT rowversion.update_many(%L, pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object('
                              '''key'', %L::pg_catalog.jsonb, ''version'', rowversion.current_version(%1$L, %2$L), '
                              '''changes'', %L::pg_catalog.jsonb)))', r.rel, r.key, '{"note": "by update_many"}'),
            pg_catalog.format('UPDATE %s SET version = -7, note = %L', r.rel, 'stale'),
            pg_catalog.format('SELECT FROM %s FOR UPDATE', r.rel),
            pg_catalog.format('SELECT * FROM rowversion.row_locks(%L, %L)', r.rel, r.key),
            pg_catalog.format('SELECT rowversion.delete(%L, %L, rowversion.current_version(%1$L, %2$L))', r.rel, r.key),
            pg_catalog.format('INSERT INTO %s SELECT * FROM pg_catalog.jsonb_populate_record(NULL::%1$s, %L)', r.rel, r.key)]);
    END LOOP;
    calls := pg_catalog.array_cat(calls, ARRAY[
        'SELECT pg_catalog.pg_advisory_xact_lock(42)',
        'SELECT * FROM rowversion.advisory_locks()',
        'SELECT * FROM rowversion.lock_tree()',
        'SELECT * FROM rowversion.lock_summary',
        'SELECT * FROM rowversion.tables',
        'SELECT * FROM rowversion.advisory_key(1, 2, 1::pg_catalog.int2)']);
    PERFORM pg_catalog.set_config('search_path', path, true);
    FOREACH call IN ARRAY calls LOOP
        BEGIN
            EXECUTE call;
            outcome := 'ok';
        EXCEPTION WHEN OTHERS THEN
            outcome := pg_catalog.concat(SQLSTATE, ': ', SQLERRM);
        END;
        RETURN NEXT;
    END LOOP;
END
$f$;

CREATE TABLE outcomes (path text, call text, outcome text);
INSERT INTO outcomes SELECT '"$user", public', * FROM entry_points('"$user", public');
INSERT INTO outcomes SELECT 'public, pg_catalog', * FROM entry_points('public, pg_catalog');
INSERT INTO outcomes SELECT 'pg_catalog, public', * FROM entry_points('pg_catalog, public');
INSERT INTO outcomes SELECT 'public, pg_temp, pg_catalog', * FROM entry_points('public, pg_temp, pg_catalog');
-- Under every path, each call works, and each stale write is a conflict.
SELECT path, count(*) AS calls, count(*) FILTER (WHERE outcome = 'ok') AS ok
FROM outcomes GROUP BY path ORDER BY path;
SELECT outcome, count(*) FROM outcomes WHERE outcome <> 'ok' GROUP BY outcome ORDER BY outcome;
-- Nothing planted ran.
SELECT what, ran_as, count(*) FROM pwned GROUP BY what, ran_as ORDER BY what, ran_as;
-- Every SQL-language function of the extension has its names resolved when it was created
-- (a BEGIN ATOMIC body) or runs with a fixed search_path, so a caller's path cannot reach it.
SELECT p.oid::regprocedure AS unpinned_sql_function
FROM pg_proc p JOIN pg_depend d ON d.classid = 'pg_proc'::regclass::oid AND d.objid = p.oid
JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'pg_rowversion'
WHERE p.prolang = (SELECT oid FROM pg_language WHERE lanname = 'sql')
  AND p.prosqlbody IS NULL
  AND NOT EXISTS (SELECT FROM unnest(p.proconfig) c WHERE c LIKE 'search\_path=%');

DROP TABLE k_int, k_bigint, k_smallint, k_text, k_varchar, k_name, k_numeric, k_enum, k_array,
    k_pair, k_parted, keys, pwned, outcomes;
DROP FUNCTION entry_points(text);
DROP TYPE mood CASCADE;
DROP OWNED BY rowversion_attacker;
DROP ROLE rowversion_attacker;
