"""Connections to the test server that scripts/test starts (PGHOST, PGPORT, PGUSER, PGDATABASE)."""

import os
import subprocess
import threading
import time

import psycopg
import pytest


@pytest.fixture
def dsn():
    return ""  # libpq reads PGHOST, PGPORT, PGUSER and PGDATABASE


@pytest.fixture
def admin(dsn):
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET client_min_messages = warning")
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_rowversion")
        yield conn


def wait_until(predicate, timeout=30.0, what="condition", interval=0.02):
    """Polls a condition that another session brings about (a lock wait, a disconnect), every
    `interval` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


def is_waiting_for_lock(admin, pid):
    row = admin.execute(
        "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
    return row is not None and row[0] == "Lock"


def restart_server(mode="fast"):
    """Restarts the test server with the options it was started with (postmaster.opts). Mode
    "immediate" skips the shutdown checkpoint: the next start runs crash recovery."""
    pg_ctl = os.path.join(os.environ["PG_BIN"], "pg_ctl")
    data = os.environ["PG_ROWVERSION_PGDATA"]
    # With a log file the new server does not inherit our pipes (run() would wait for them).
    log = os.path.join(os.path.dirname(data), "server.log")
    command = [pg_ctl, "restart", "-D", data, "-l", log, "-m", mode, "-w"]
    if os.geteuid() == 0:
        command = ["sudo", "-u", "postgres"] + command
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)


class Background:
    """Runs fn in a thread; result, error and the monotonic time it finished."""

    def __init__(self, fn):
        self.result = self.error = self.finished = None
        self.thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self.thread.start()

    def _run(self, fn):
        try:
            self.result = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            self.error = e
        self.finished = time.monotonic()

    def join(self, timeout=30):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "background call did not return"
        return self

    def done(self):
        return not self.thread.is_alive()
