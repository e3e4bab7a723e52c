"""A LATIN1 database (issue 11, section 3): non-ASCII names and values go through every entry
point exactly, in DDL, statements, messages and error fields. The client talks UTF-8; the
database stores LATIN1; the extension converts with Postgres' own encoding functions."""

import psycopg
import pytest
from psycopg import errors


@pytest.fixture
def latin1(admin):
    admin.execute("DROP DATABASE IF EXISTS rowversion_latin1")
    admin.execute("CREATE DATABASE rowversion_latin1 TEMPLATE template0 ENCODING 'LATIN1'"
                  " LC_COLLATE 'C' LC_CTYPE 'C'")
    with psycopg.connect("dbname=rowversion_latin1", autocommit=True) as conn:
        conn.execute("SET client_encoding = 'UTF8'")
        conn.execute("CREATE EXTENSION pg_rowversion")
        conn.execute('CREATE TABLE "café" ("clé" text PRIMARY KEY, "crème" text)')
        conn.execute("""SELECT rowversion.enable('"café"', 'vérsion')""")
        conn.execute("""INSERT INTO "café" VALUES ('brûlée', 'à la carte')""")
        yield conn
    admin.execute("DROP DATABASE rowversion_latin1")


def test_enable_adds_the_named_column(latin1):
    assert latin1.execute("SELECT server_encoding FROM current_setting('server_encoding') server_encoding").fetchone() \
        == ("LATIN1",)
    columns = latin1.execute("""SELECT attname FROM pg_attribute WHERE attrelid = '"café"'::regclass
                                AND attnum > 0 ORDER BY attnum""").fetchall()
    assert columns == [("clé",), ("crème",), ("vérsion",)]
    assert latin1.execute("""SELECT rel = '"café"'::regclass, version_column FROM rowversion.tables""").fetchone() \
        == (True, "vérsion")
    assert latin1.execute('SELECT "vérsion" FROM "café"').fetchone() == (1,)


def test_checked_functions_round_trip_names_and_values(latin1):
    key = '{"clé": "brûlée"}'
    assert latin1.execute("""SELECT rowversion.update('"café"', %s, 1, '{"crème": "déjà vu"}')""", (key,)).fetchone() \
        == (2,)
    assert latin1.execute("""SELECT rowversion.current_version('"café"', %s)""", (key,)).fetchone() == (2,)
    assert latin1.execute("""SELECT * FROM rowversion.try_update('"café"', %s, 1, '{"crème": "être"}')""",
                          (key,)).fetchone() == (False, 2)
    rows = '[{"key": {"clé": "brûlée"}, "version": 2, "changes": {"crème": "naïve"}}]'
    assert latin1.execute("""SELECT rowversion.update_many('"café"', %s)""", (rows,)).fetchone() == (1,)
    assert latin1.execute("""SELECT count(*) FROM rowversion.row_locks('"café"', %s)""", (key,)).fetchone() == (0,)
    assert latin1.execute('SELECT "clé", "crème", "vérsion" FROM "café"').fetchone() == ("brûlée", "naïve", 3)
    latin1.execute("""SELECT rowversion.delete('"café"', %s, 3)""", (key,))
    assert latin1.execute('SELECT count(*) FROM "café"').fetchone() == (0,)


def test_errors_name_the_objects_exactly(latin1):
    key = '{"clé": "brûlée"}'
    latin1.execute('UPDATE "café" SET "crème" = \'x\'')  # version 2
    for statement in ("""SELECT rowversion.update('"café"', '{"clé": "brûlée"}', 1, '{"crème": "y"}')""",
                      """UPDATE "café" SET "crème" = 'y', "vérsion" = 1"""):
        with pytest.raises(errors.SerializationFailure) as raised:
            latin1.execute(statement)
        error = raised.value
        assert error.diag.message_primary == 'row version conflict on table "public.café"'
        assert error.diag.message_detail == 'Key ("clé")=(brûlée): expected version 1, found version 2.'
        assert (error.diag.table_name, error.diag.column_name) == ("café", "vérsion")
    with pytest.raises(errors.UndefinedColumn) as raised:
        latin1.execute("""SELECT rowversion.update('"café"', %s, 2, '{"crèmes": 1}')""", (key,))
    assert raised.value.diag.message_primary == 'column "crèmes" of table "public.café" does not exist'
    with pytest.raises(errors.InvalidParameterValue) as raised:
        latin1.execute("""SELECT rowversion.update('"café"', '{"cle": 1}', 2, '{}')""")
    assert raised.value.diag.message_detail == 'Missing: "clé". Not in the primary key: "cle". The primary key is ("clé").'
    with pytest.raises(errors.NoDataFound) as raised:
        latin1.execute("""SELECT rowversion.update('"café"', '{"clé": "thé"}', 2, '{}')""")
    assert raised.value.diag.message_primary == 'no row in table "public.café" has key {"clé": "thé"}'
    latin1.execute('CREATE TABLE "thé" (id int PRIMARY KEY)')
    with pytest.raises(errors.ObjectNotInPrerequisiteState) as raised:
        latin1.execute("""SELECT rowversion.update('"thé"', '{"id": 1}', 1, '{}')""")
    assert raised.value.diag.message_hint == """Enable it with: SELECT rowversion.enable('public."thé"');"""
    latin1.execute("""SELECT rowversion.enable('"café"', 'vérsion', 'strict')""")
    with pytest.raises(errors.InvalidColumnReference) as raised:
        latin1.execute('UPDATE "café" SET "crème" = \'z\'')
    assert raised.value.diag.message_primary == 'UPDATE of table "public.café" must set version column "vérsion"'
    notices = []
    latin1.add_notice_handler(lambda notice: notices.append(notice.message_primary))
    latin1.execute("""SELECT rowversion.disable('"thé"')""")
    assert notices == ['table "public.thé" is not versioned, skipping']


def test_a_character_the_database_cannot_hold_is_postgres_own_error(latin1):
    with pytest.raises(errors.UntranslatableCharacter):
        latin1.execute("""SELECT rowversion.update('"café"', '{"clé": "brûlée"}', 1, '{"crème": "€"}')""")
