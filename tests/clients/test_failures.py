"""Failures between read and write leave versions and balances consistent: nothing half
applied, nothing lost."""

import os
import signal
import subprocess
import sys

import psycopg
import pytest
from psycopg import errors

from conftest import is_waiting_for_lock, restart_server, wait_until


@pytest.fixture
def account(admin):
    admin.execute("DROP TABLE IF EXISTS failure_accounts")
    admin.execute("CREATE TABLE failure_accounts (id int PRIMARY KEY, balance bigint NOT NULL)")
    admin.execute("SELECT rowversion.enable('failure_accounts')")
    admin.execute("INSERT INTO failure_accounts VALUES (1, 1000000)")
    return admin


def state(conn):
    return conn.execute("SELECT balance, version FROM failure_accounts WHERE id = 1").fetchone()


# A client that takes the row lock with an uncommitted versioned write, says so, and hangs.
HANGING_CLIENT = """
import psycopg, sys
conn = psycopg.connect("")
conn.execute("UPDATE failure_accounts SET balance = balance - 999, version = 1 WHERE id = 1")
print(conn.info.backend_pid, flush=True)
sys.stdin.read()
"""


def test_client_killed_in_the_middle_of_a_transaction(account, dsn):
    child = subprocess.Popen([sys.executable, "-c", HANGING_CLIENT],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    backend_pid = int(child.stdout.readline())
    child.send_signal(signal.SIGKILL)
    child.wait()
    # The server notices the dead client and rolls its transaction back; this versioned
    # write then gets the row at version 1, untouched.
    with psycopg.connect(dsn) as conn:
        conn.execute("SET lock_timeout = '30s'")
        conn.execute("UPDATE failure_accounts SET balance = balance + 500, version = 1 WHERE id = 1")
        conn.commit()
    wait_until(lambda: account.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (backend_pid,)).fetchone()[0] == 0,
        what="the killed client's backend to exit")
    assert state(account) == (1000500, 2)


def test_statement_timeout_while_waiting_for_a_row_lock(account, dsn):
    with psycopg.connect(dsn) as holder, psycopg.connect(dsn) as waiter:
        holder.execute("UPDATE failure_accounts SET balance = balance + 100, version = 1 WHERE id = 1")
        waiter.execute("SET statement_timeout = '300ms'")
        with pytest.raises(errors.QueryCanceled):
            waiter.execute("UPDATE failure_accounts SET balance = balance + 7, version = 1 WHERE id = 1")
        waiter.rollback()
        holder.commit()
        assert state(account) == (1000100, 2)
        waiter.execute("SET statement_timeout = 0")
        with pytest.raises(errors.SerializationFailure):  # its version 1 is stale now
            waiter.execute("UPDATE failure_accounts SET balance = balance + 7, version = 1 WHERE id = 1")
        waiter.rollback()
        waiter.execute("UPDATE failure_accounts SET balance = balance + 7, version = 2 WHERE id = 1")
        waiter.commit()
    assert state(account) == (1000107, 3)


def test_server_restart_between_read_and_write(account, dsn):
    with psycopg.connect(dsn) as before:
        balance, version = state(before)
        before.commit()
        restart_server()
        with pytest.raises(psycopg.OperationalError):
            before.execute("SELECT 1")
    # The versions survived the restart: the write that read before it still applies once,
    # and a second writer holding the same stale read is refused.
    with psycopg.connect(dsn) as after, psycopg.connect(dsn) as other:
        after.execute("UPDATE failure_accounts SET balance = %s, version = %s WHERE id = 1",
                      (balance + 1, version))
        after.commit()
        with pytest.raises(errors.SerializationFailure):
            other.execute("UPDATE failure_accounts SET balance = %s, version = %s WHERE id = 1",
                          (balance + 2, version))
        other.rollback()
        assert state(after) == (1000001, 2)
