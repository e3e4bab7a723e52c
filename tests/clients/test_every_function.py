"""Every SQL function of the extension, called with hostile arguments: NULLs, OIDs of no
relation or of an index, a sequence, a view, a TOAST table or a system catalog, impossible
ctids, extreme numbers, malformed and deep JSON, huge arrays and strings. A call may fail, but
with an ordinary error: never a crash (the session is lost, every other one restarted) and
never an internal error (SQLSTATE class XX). The functions are read from the catalog, so a new
one is covered as soon as it exists, and a test fails if one of its argument types has no
hostile values below.

Found this way: rowversion.trigger_columns() with a relation that lacks the WHEN clause's
columns crashed the server (a NULL name)."""

import random

import psycopg
import pytest

ROLE = "rowversion_fuzz_nobody"

# SQL expressions per argument type: the first is an ordinary value, the rest are hostile.
RELATIONS = ["'fz_t'", "NULL", "0", "4294967295", "'fz_parted'", "'fz_view'", "'fz_seq'", "'fz_t_pkey'",
             "'fz_plain'", "'pg_class'", "'pg_authid'",
             "(SELECT reltoastrelid FROM pg_class WHERE oid = 'fz_t'::regclass)"]
INTEGERS = ["1", "NULL", "0", "-1"]
VALUES = {
    "regclass": [f"({r})::regclass" for r in RELATIONS],
    "oid": [f"({r})::regclass::oid" for r in RELATIONS],
    "bigint": [f"({v})::bigint" for v in INTEGERS + ["9223372036854775807", "-9223372036854775808"]],
    "integer": [f"({v})::integer" for v in INTEGERS + ["2147483647", "-2147483648", "1381367808", "1381367811"]],
    "smallint": [f"({v})::smallint" for v in INTEGERS + ["32767", "-32768"]],
    "tid": [f"{v}::tid" for v in ["'(0,1)'", "NULL", "'(0,0)'", "'(4294967295,65535)'", "'(1000,1)'", "'(0,65535)'"]],
    "jsonb": [f"{v}::jsonb" for v in [
        """'{"id": 1}'""", "NULL", "'{}'", "'[]'", "'null'", "'1'", """'"x"'""", """'{"id": "1"}'""",
        """'{"id": null}'""", """'{"id": 1e300}'""", """'{"id": 99999999999999999999}'""",
        """'{"id": [1, 2]}'""", """'{"id": {"a": 1}}'""", """'{"note": "x", "version": 5}'""",
        """'{"nope": 1, "id": 1}'""", """'{"ctid": "(0,1)", "id": 1}'""",
        """'[{"key": {"id": 1}, "version": 1, "changes": {"note": "y"}}]'""",
        """'[{"key": 1}, null, {"version": "x"}]'""",
        "(repeat('[', 5000) || repeat(']', 5000))",
        "(SELECT jsonb_object_agg('k' || g, g) FROM generate_series(1, 5000) g)",
    ]],
    "boolean": [f"{v}::boolean" for v in ["false", "NULL", "true"]],
    "text": [f"{v}::text" for v in ["'fz'", "NULL", "''", "repeat('x', 100000)", "E'\\x01'", "'fz_t'"]],
    "name": [f"{v}::name" for v in ["'version'", "NULL", "''", "repeat('x', 100)", "'id'", "'note'", "'ctid'"]],
    "name[]": [f"{v}::name[]" for v in ["'{}'", "NULL", "'{NULL}'", "'{note}'", "'{version}'", "'{nope}'",
                                        "'{id,id}'", "(SELECT array_agg('c' || g) FROM generate_series(1, 2000) g)"]],
    "interval": [f"{v}::interval" for v in ["'1 second'", "NULL", "'0'", "'-1 second'", "'1 microsecond'",
                                            "'100 years'", "'100000000 years'"]],
    "pg_node_tree": [
        "(SELECT tgqual FROM pg_trigger WHERE tgname = 'rowversion' LIMIT 1)", "NULL",
        "(SELECT ev_action FROM pg_rewrite WHERE ev_class = 'fz_view'::regclass)",
        "(SELECT adbin FROM pg_attrdef LIMIT 1)",
        "(SELECT tgqual FROM pg_trigger WHERE tgname = 'fz_when' LIMIT 1)",
    ],
}


@pytest.fixture(scope="module")
def functions():
    """(signature, [argument types]) of every function of the extension, and the objects the
    hostile values name."""
    with psycopg.connect("", autocommit=True) as conn:
        conn.execute("SET client_min_messages = warning")
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_rowversion")
        conn.execute("DROP TABLE IF EXISTS fz_t, fz_parted, fz_plain CASCADE")
        conn.execute("DROP SEQUENCE IF EXISTS fz_seq")
        conn.execute("DROP FUNCTION IF EXISTS fz_touch() CASCADE")
        conn.execute("CREATE TABLE fz_t (id int PRIMARY KEY, note text DEFAULT 'd', big text)")
        conn.execute("SELECT rowversion.enable('fz_t')")
        conn.execute("INSERT INTO fz_t (id, note) SELECT g, 'n' FROM generate_series(1, 10) g")
        conn.execute("UPDATE fz_t SET note = 'dead row behind' WHERE id = 1")
        conn.execute("CREATE TABLE fz_parted (id int PRIMARY KEY) PARTITION BY RANGE (id)")
        conn.execute("CREATE TABLE fz_parted_1 PARTITION OF fz_parted FOR VALUES FROM (1) TO (100)")
        conn.execute("SELECT rowversion.enable('fz_parted')")
        conn.execute("INSERT INTO fz_parted VALUES (1)")
        conn.execute("CREATE TABLE fz_plain (id int PRIMARY KEY, note text)")
        conn.execute("CREATE FUNCTION fz_touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$")
        conn.execute("CREATE TRIGGER fz_when BEFORE UPDATE ON fz_plain FOR EACH ROW WHEN (NEW.id > 0) "
                     "EXECUTE FUNCTION fz_touch()")
        conn.execute("CREATE VIEW fz_view AS SELECT * FROM fz_t")
        conn.execute("CREATE SEQUENCE fz_seq")
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (ROLE,)).fetchone():
            conn.execute(f"DROP OWNED BY {ROLE}")
            conn.execute(f"DROP ROLE {ROLE}")
        conn.execute(f"CREATE ROLE {ROLE}")
        conn.execute(f"GRANT USAGE ON SCHEMA rowversion TO {ROLE}")
        # Enough to get past the privilege checks on one table, none on the others.
        conn.execute(f"GRANT SELECT, UPDATE, DELETE ON fz_t TO {ROLE}")
        rows = conn.execute("""
            SELECT p.oid::regprocedure::text, p.proname, ARRAY(SELECT t::regtype::text FROM unnest(p.proargtypes) t)
            FROM pg_proc p
            JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
            JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'pg_rowversion'
            ORDER BY 1""").fetchall()
        yield [(f"rowversion.{name}", types, signature) for signature, name, types in rows]
        conn.execute("DROP TABLE fz_t, fz_parted, fz_plain CASCADE")
        conn.execute("DROP SEQUENCE fz_seq")
        conn.execute("DROP FUNCTION fz_touch()")
        conn.execute(f"DROP OWNED BY {ROLE}")
        conn.execute(f"DROP ROLE {ROLE}")


def calls(functions, seed):
    """For each function: every hostile value in each position with ordinary values in the
    others, then random combinations of hostile values."""
    rng = random.Random(seed)
    for name, types, signature in functions:
        missing = [t for t in types if t not in VALUES]
        assert not missing, f"{signature}: no hostile values for argument types {missing}"
        ordinary = [VALUES[t][0] for t in types]
        yield signature, f"SELECT * FROM {name}({', '.join(ordinary)})"
        for position, type_name in enumerate(types):
            for value in VALUES[type_name][1:]:
                arguments = ordinary[:position] + [value] + ordinary[position + 1:]
                yield signature, f"SELECT * FROM {name}({', '.join(arguments)})"
        for _ in range(30 if types else 0):
            arguments = [rng.choice(VALUES[t]) for t in types]
            yield signature, f"SELECT * FROM {name}({', '.join(arguments)})"


def run_all(functions, role):
    """Runs every call in one session (as `role` if given); fails on a lost session or an
    internal error. Before each function's calls, the tables are versioned again as at the
    start (earlier calls may have disabled them or changed their mode). Returns how many calls
    ran and how many failed with an ordinary error."""
    ran = failed = 0
    previous = None
    with psycopg.connect("", autocommit=True) as admin, psycopg.connect("", autocommit=True) as conn:
        conn.execute("SET client_min_messages = warning")
        # A lease wait or a lock wait ends here (55P03); the statement timeout only guards
        # against a hang, generous enough that the largest arguments reach the code under
        # test on a loaded machine.
        conn.execute("SET statement_timeout = '10s'")
        conn.execute("SET lock_timeout = '200ms'")
        if role:
            conn.execute(f"SET ROLE {role}")
        for signature, sql in calls(functions, seed=len(role or "")):
            if signature != previous:
                admin.execute("SELECT rowversion.enable('fz_t'), rowversion.enable('fz_parted')")
                previous = signature
            ran += 1
            try:
                conn.execute(sql).fetchall()
            except psycopg.OperationalError as error:
                if conn.closed or conn.broken:
                    pytest.fail(f"{signature}: the session was lost (a crash?) on\n  {sql}\n  {error}")
                failed += 1
            except psycopg.Error as error:
                assert error.sqlstate and not error.sqlstate.startswith("XX"), \
                    f"{signature}: internal error {error.sqlstate} on\n  {sql}\n  {error}"
                failed += 1
    return ran, failed


def test_every_function_fails_cleanly_for_a_superuser(functions):
    ran, failed = run_all(functions, role=None)
    # Some calls get through to their work, not only to an argument check.
    assert 0 < failed < ran


def test_every_function_fails_cleanly_for_a_role_without_privileges(functions):
    ran, failed = run_all(functions, role=ROLE)
    assert 0 < failed < ran
