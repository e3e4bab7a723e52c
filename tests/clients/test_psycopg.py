"""Scenarios 1 and 2 from a real driver: the loser gets psycopg.errors.SerializationFailure
with every diagnostic field filled in."""

import threading

import psycopg
import pytest
from psycopg import errors

from conftest import is_waiting_for_lock, wait_until


@pytest.fixture
def products(admin):
    admin.execute("DROP TABLE IF EXISTS products")
    admin.execute("CREATE TABLE products (id int PRIMARY KEY, name text NOT NULL, price int NOT NULL)")
    admin.execute("SELECT rowversion.enable('products')")
    admin.execute("INSERT INTO products VALUES (1, 'Espresso machine', 100000)")
    return admin


def read(conn):
    price, version = conn.execute("SELECT price, version FROM products WHERE id = 1").fetchone()
    conn.commit()
    return price, version


def assert_conflict(error, expected, found):
    diag = error.diag
    assert diag.sqlstate == "40001"
    assert diag.message_primary == 'row version conflict on table "public.products"'
    assert diag.message_detail == f"Key (id)=(1): expected version {expected}, found version {found}."
    assert diag.message_hint == "Re-read the row and retry with its current version."
    assert (diag.schema_name, diag.table_name, diag.column_name) == ("public", "products", "version")


def test_second_editor_of_a_long_conversation_is_rejected(products, dsn):
    with psycopg.connect(dsn) as a, psycopg.connect(dsn) as b:
        _, version_a = read(a)
        _, version_b = read(b)
        a.execute("UPDATE products SET price = %s, version = %s WHERE id = 1", (120000, version_a))
        a.commit()
        with pytest.raises(errors.SerializationFailure) as caught:
            b.execute("UPDATE products SET price = %s, version = %s WHERE id = 1", (110000, version_b))
        b.rollback()
        assert_conflict(caught.value, expected=1, found=2)
    assert read(products) == (120000, 2)


def test_concurrent_writer_waits_then_is_checked_against_the_winners_row(products, dsn):
    with psycopg.connect(dsn) as a, psycopg.connect(dsn) as b:
        a.execute("SELECT version FROM products WHERE id = 1")
        b.execute("SELECT version FROM products WHERE id = 1")
        a.execute("UPDATE products SET price = price + 500000, version = 1 WHERE id = 1")
        outcome = {}

        def write_b():
            try:
                b.execute("UPDATE products SET price = price - 300000, version = 1 WHERE id = 1")
                outcome["error"] = None
            except errors.SerializationFailure as e:
                outcome["error"] = e

        writer = threading.Thread(target=write_b)
        writer.start()
        wait_until(lambda: is_waiting_for_lock(products, b.info.backend_pid), what="b to wait for a's row lock")
        a.commit()
        writer.join(timeout=30)
        assert not writer.is_alive()
        assert outcome["error"] is not None, "b must not overwrite a's committed write"
        b.rollback()
        assert_conflict(outcome["error"], expected=1, found=2)
    assert read(products) == (600000, 2)


def test_checked_update_function_raises_the_same_error(products, dsn):
    with psycopg.connect(dsn) as conn:
        conn.execute("SELECT rowversion.update('products', %s, 1, %s)",
                     (psycopg.types.json.Jsonb({"id": 1}), psycopg.types.json.Jsonb({"price": 1})))
        conn.commit()
        with pytest.raises(errors.SerializationFailure) as caught:
            conn.execute("SELECT rowversion.update('products', %s, 1, %s)",
                         (psycopg.types.json.Jsonb({"id": 1}), psycopg.types.json.Jsonb({"price": 2})))
        conn.rollback()
        assert_conflict(caught.value, expected=1, found=2)
