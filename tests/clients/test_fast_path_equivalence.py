"""The planner fast path and the trigger give the same results: the same random sequence of
statements (UPDATEs stating good, stale, newer, NULL and extreme versions, multiple-column
assignments, upserts, MERGE, whole-table updates, deletes, mode and ignored-column changes)
runs against two identical versioned tables, one with pg_rowversion.fast_path off (the
trigger) and one with it on, and every statement must end the same way: the same rows
returned, or the same SQLSTATE, message, detail and error fields; and the tables must hold the
same rows at the end. Run for a bigint and for a smallint version column (which wraps), and
for a partitioned table whose partitions number their columns differently (rows also move
between partitions)."""

import random

import psycopg
import pytest

KEYS = [1, 2, 3, 4, 5, 99]
STEPS = 600


def versions(t, k):
    """SQL for versions a writer might state for row k of table t."""
    current = f"(SELECT version FROM {t} WHERE id = {k})"
    return ["NULL", "0", "-1", current, f"{current} + 1", f"{current} + 5", f"{current} - 1", "version",
            "version + 1", "32767", "-32768", "1000000"]


def statement(rng, t):
    """A random statement against table t (the same choices give the same text for each table)."""
    k = rng.choice(KEYS)
    v = rng.choice(versions(t, k))
    return rng.choice([
        f"UPDATE {t} SET note = 'a' WHERE id = {k} RETURNING id, note, hits, version",
        f"UPDATE {t} SET note = 'b', version = {v} WHERE id = {k} RETURNING id, note, hits, version",
        f"UPDATE {t} SET version = {v} WHERE id = {k} RETURNING id, version",
        f"UPDATE {t} SET hits = hits + 1 WHERE id = {k} RETURNING id, hits, version",
        f"UPDATE {t} SET hits = hits + 1, version = {v} WHERE id = {k} RETURNING id, hits, version",
        f"UPDATE {t} SET (note, version) = (SELECT 'm', {v}) WHERE id = {k} RETURNING id, version",
        f"UPDATE {t} SET note = 'all' RETURNING id, version",
        f"UPDATE {t} SET note = 'w' WHERE id IN ({k}, {rng.choice(KEYS)}) AND version > 0 RETURNING id, version",
        f"INSERT INTO {t} (id, note, hits) VALUES ({k}, 'i', 0) ON CONFLICT (id) DO UPDATE SET note = 'u' "
        f"RETURNING id, note, version",
        f"INSERT INTO {t} (id, note, hits) VALUES ({k}, 'i', 0) ON CONFLICT (id) DO UPDATE SET note = 'u', "
        f"version = {v} RETURNING id, note, version",
        f"INSERT INTO {t} (id, note, hits, version) VALUES ({k}, 'i', 0, {v}) ON CONFLICT (id) DO UPDATE SET "
        f"hits = {t}.hits + 1 RETURNING id, hits, version",
        f"MERGE INTO {t} USING (VALUES ({k})) AS s(id) ON {t}.id = s.id "
        f"WHEN MATCHED THEN UPDATE SET note = 'mm', version = {v} "
        f"WHEN NOT MATCHED THEN INSERT (id, note, hits) VALUES (s.id, 'mi', 0)",
        f"MERGE INTO {t} USING (VALUES ({k})) AS s(id) ON {t}.id = s.id "
        f"WHEN MATCHED AND {t}.hits > 2 THEN DELETE WHEN MATCHED THEN UPDATE SET hits = {t}.hits + 1",
        f"DELETE FROM {t} WHERE id = {k} AND version = {v} RETURNING id",
        f"UPDATE {t} SET id = {rng.choice(KEYS)}, version = {v} WHERE id = {k} RETURNING id, version",
        f"SELECT rowversion.enable('{t}', mode => 'strict', ignore_columns => '{{hits}}')",
        f"SELECT rowversion.enable('{t}', mode => 'lenient', ignore_columns => '{{hits}}')",
        f"SELECT rowversion.enable('{t}', mode => 'lenient')",
    ])


def outcome(conn, sql):
    """What a statement did, as a user sees it: its rows, or its error and error fields."""
    try:
        with conn.transaction():
            cursor = conn.execute(sql)
            # In any order: the two tables' rows need not lie in the same physical order.
            return ("ok", sorted(cursor.fetchall(), key=repr) if cursor.description else cursor.rowcount)
    except psycopg.Error as error:
        diag = error.diag
        return ("error", error.sqlstate, diag.message_primary, diag.message_detail, diag.message_hint,
                diag.table_name, diag.column_name)


@pytest.mark.parametrize("version_type, partitioned", [("bigint", False), ("smallint", False), ("bigint", True)])
def test_fast_path_and_trigger_end_every_statement_the_same_way(admin, version_type, partitioned):
    shape = f"{version_type}{'_parted' if partitioned else ''}"
    tables = {"off": f"fpe_trigger_{shape}", "on": f"fpe_fast_{shape}"}
    for t in tables.values():
        admin.execute(f"DROP TABLE IF EXISTS {t}")
        columns = f"id int, note text, hits int NOT NULL DEFAULT 0, version {version_type}"
        if partitioned:
            admin.execute(f"CREATE TABLE {t} ({columns}, PRIMARY KEY (id)) PARTITION BY RANGE (id)")
            admin.execute(f"CREATE TABLE {t}_low PARTITION OF {t} FOR VALUES FROM (MINVALUE) TO (3)")
            # Another column order, after a dropped column: other attribute numbers.
            admin.execute(f"CREATE TABLE {t}_high (dropped int, version {version_type}, hits int NOT NULL DEFAULT 0, "
                          f"note text, id int NOT NULL)")
            admin.execute(f"ALTER TABLE {t}_high DROP COLUMN dropped")
            admin.execute(f"ALTER TABLE {t} ATTACH PARTITION {t}_high FOR VALUES FROM (3) TO (MAXVALUE)")
        else:
            admin.execute(f"CREATE TABLE {t} ({columns}, PRIMARY KEY (id))")
        admin.execute(f"SELECT rowversion.enable('{t}')")
        admin.execute(f"INSERT INTO {t} (id, note) SELECT g, 'n' FROM generate_series(1, 5) g")
    sessions = {}
    try:
        for mode in tables:
            conn = psycopg.connect("", autocommit=True)
            conn.execute("LOAD 'pg_rowversion'")
            conn.execute(f"SET pg_rowversion.fast_path = {mode}")
            sessions[mode] = conn
        plan = "\n".join(row[0] for row in sessions["on"].execute(
            f"EXPLAIN (VERBOSE, COSTS OFF) UPDATE {tables['on']} SET note = 'x'"))
        assert plan.count("rowversion.next_version(") == (2 if partitioned else 1), \
            "the fast path is not taken: the comparison would be moot"
        plan = "\n".join(row[0] for row in sessions["off"].execute(
            f"EXPLAIN (VERBOSE, COSTS OFF) UPDATE {tables['off']} SET note = 'x'"))
        assert "rowversion.next_version(" not in plan

        def fast_path_taken(mode):
            plan = "\n".join(row[0] for row in sessions[mode].execute(
                f"EXPLAIN (VERBOSE, COSTS OFF) UPDATE {tables[mode]} SET note = 'x'"))
            return "rowversion.next_version(" in plan

        rng_seed = 20261123
        choices = {mode: random.Random(rng_seed) for mode in tables}
        kinds = set()
        for step in range(STEPS):
            seen = {}
            for mode, t in tables.items():
                sql = statement(choices[mode], t)
                result = outcome(sessions[mode], sql)
                seen[mode] = (sql.replace(t, "T"), repr(result).replace(t, "T"))
            assert seen["on"] == seen["off"], f"step {step}: the two paths differ:\n{seen['off']}\n{seen['on']}"
            if "rowversion.enable(" in seen["on"][0]:
                # Still one path each after a mode or column change (else the comparison is moot).
                assert fast_path_taken("on") and not fast_path_taken("off"), f"step {step}"
            kinds.add(seen["on"][1].split(",")[0] + (seen["on"][1].split(",")[1] if "error" in seen["on"][1] else ""))
        rows = {mode: sessions[mode].execute(f"SELECT id, note, hits, version FROM {t} ORDER BY id").fetchall()
                for mode, t in tables.items()}
        assert rows["on"] == rows["off"]
        # The sequence reached conflicts, NULLs and strict-mode refusals, not only successes.
        assert any("40001" in k for k in kinds) and any("22004" in k for k in kinds)
    finally:
        for conn in sessions.values():
            conn.close()
        for t in tables.values():
            admin.execute(f"DROP TABLE IF EXISTS {t}")


def test_a_schema_rowversion_of_a_database_without_the_extension_is_not_used(admin):
    """In a database without the extension, anyone may create a schema `rowversion` with a
    trigger function and a `next_version()` of their own: the planner hook (the library
    preloaded in every database) must not put that function in a plan or turn their trigger
    off. The UPDATE runs their trigger, as Postgres would without pg_rowversion. Table `t`
    (bigint) tests the check of next_version() (theirs); table `t4` (integer), whose
    next_version() is this library's own (a superuser may declare it anywhere), the check of
    the trigger function."""
    admin.execute("DROP DATABASE IF EXISTS rowversion_impostor WITH (FORCE)")
    admin.execute("CREATE DATABASE rowversion_impostor")
    try:
        with psycopg.connect(dbname="rowversion_impostor", autocommit=True) as conn:
            conn.execute("CREATE SCHEMA rowversion")
            conn.execute("CREATE FUNCTION rowversion.version_trigger() RETURNS trigger LANGUAGE plpgsql AS "
                         "$$ BEGIN NEW.version := 424242; RETURN NEW; END $$")
            for version_type in ("bigint", "integer", "smallint"):
                conn.execute(f"CREATE FUNCTION rowversion.next_version({version_type}, {version_type}, oid, tid, "
                             f"integer) RETURNS {version_type} LANGUAGE plpgsql AS $$ BEGIN RETURN 777; END $$")
            conn.execute("CREATE TABLE t (id int PRIMARY KEY, note text, version bigint)")
            conn.execute("CREATE TRIGGER rowversion BEFORE INSERT OR UPDATE ON t FOR EACH ROW "
                         "WHEN (NEW.version IS NULL OR true) EXECUTE FUNCTION rowversion.version_trigger('lenient')")
            conn.execute("INSERT INTO t VALUES (1, 'a', 1)")
            conn.execute("DROP FUNCTION rowversion.next_version(integer, integer, oid, tid, integer)")
            conn.execute("CREATE FUNCTION rowversion.next_version(integer, integer, oid, tid, integer) RETURNS integer "
                         "LANGUAGE c AS 'pg_rowversion', 'rowversion_next_version'")
            conn.execute("CREATE TABLE t4 (id int PRIMARY KEY, note text, version integer)")
            conn.execute("CREATE TRIGGER rowversion BEFORE INSERT OR UPDATE ON t4 FOR EACH ROW "
                         "WHEN (NEW.version IS NULL OR true) EXECUTE FUNCTION rowversion.version_trigger('lenient')")
            conn.execute("INSERT INTO t4 VALUES (1, 'a', 1)")
            conn.execute("LOAD 'pg_rowversion'")
            for table in ("t", "t4"):
                assert conn.execute(f"UPDATE {table} SET note = 'b' RETURNING version").fetchone()[0] == 424242
                plan = "\n".join(row[0] for row in conn.execute(f"EXPLAIN (VERBOSE, COSTS OFF) UPDATE {table} SET note = 'c'"))
                assert "next_version" not in plan
    finally:
        admin.execute("DROP DATABASE IF EXISTS rowversion_impostor WITH (FORCE)")
