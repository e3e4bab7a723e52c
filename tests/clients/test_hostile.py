"""Hostile input against real servers (issue 11): cancellation and statement_timeout take
effect promptly during long argument processing; memory is Postgres', so running out of it is
an ordinary ERROR (53200) that leaves every other session alive."""

import os
import shutil
import subprocess
import tempfile
import threading
import time

import psycopg
import pytest
from psycopg import errors
from psycopg.types.json import Jsonb

from conftest import wait_until

# How long a cancel or a timeout may take to end a call (the bound), plus what the
# client adds between the server's reaction and the exception it raises here.
PROMPT = 0.100
CLIENT_SLACK = 0.050


ROWS = 300_000


@pytest.fixture(scope="module")
def big_arguments():
    """A versioned table of 300,000 rows, an update_many() argument for all of them, and a key
    with 3,000,000 fields. The arguments are stored uncompressed, so that a call spends its
    time in the extension, not in parsing or decompressing them: update_many() takes about
    10 s here, the walk over the key's fields about 2 s."""
    with psycopg.connect("", autocommit=True) as conn:
        conn.execute("SET client_min_messages = warning")
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_rowversion")
        conn.execute("DROP TABLE IF EXISTS hostile_rows, hostile_arguments")
        conn.execute("CREATE TABLE hostile_rows (id int PRIMARY KEY, n bigint)")
        conn.execute("SELECT rowversion.enable('hostile_rows')")
        conn.execute("INSERT INTO hostile_rows SELECT g, 0 FROM generate_series(1, %s) g", (ROWS,))
        conn.execute("CREATE TABLE hostile_arguments (name text PRIMARY KEY, doc jsonb)")
        conn.execute("ALTER TABLE hostile_arguments ALTER doc SET STORAGE EXTERNAL")
        conn.execute("""INSERT INTO hostile_arguments
            SELECT 'rows', jsonb_agg(jsonb_build_object('key', jsonb_build_object('id', g), 'version', 1,
                                                         'changes', jsonb_build_object('n', g)))
            FROM generate_series(1, %s) g""", (ROWS,))
        conn.execute("""INSERT INTO hostile_arguments
            SELECT 'key', jsonb_object_agg('f' || g, g) FROM generate_series(1, 3000000) g""")
        yield conn


UPDATE_MANY = "SELECT rowversion.update_many('hostile_rows', doc) FROM hostile_arguments WHERE name = 'rows'"
KEY_WALK = "SELECT rowversion.update('hostile_rows', doc, 1, '{}') FROM hostile_arguments WHERE name = 'key'"


def run_in_thread(sql, setup=()):
    """Runs `sql` in a session of its own; returns the thread and a dict with the backend's
    pid, the error and the moment the call ended."""
    outcome = {}
    ready = threading.Event()

    def work():
        with psycopg.connect("", autocommit=True) as conn:
            for statement in setup:
                conn.execute(statement)
            outcome["pid"] = conn.info.backend_pid
            ready.set()
            outcome["started"] = time.monotonic()
            try:
                conn.execute(sql)
                outcome["error"] = None
            except psycopg.Error as error:
                outcome["error"] = error
            outcome["ended"] = time.monotonic()

    thread = threading.Thread(target=work)
    thread.start()
    assert ready.wait(30)
    return thread, outcome


def running_for(admin, pid, seconds):
    row = admin.execute(
        "SELECT state = 'active' AND now() - query_start > make_interval(secs => %s)"
        " FROM pg_stat_activity WHERE pid = %s", (seconds, pid)).fetchone()
    return row is not None and row[0]


def cancel_after(admin, sql, seconds):
    """Starts `sql`, cancels it once it has run `seconds`, and returns how long the cancel took."""
    thread, outcome = run_in_thread(sql)
    wait_until(lambda: running_for(admin, outcome["pid"], seconds), what="the call to be running")
    admin.execute("SELECT pg_cancel_backend(%s)", (outcome["pid"],))
    cancelled = time.monotonic()
    thread.join(60)
    assert isinstance(outcome["error"], errors.QueryCanceled), outcome["error"]
    print(f"cancel took {(outcome['ended'] - cancelled) * 1000:.1f} ms")
    return outcome["ended"] - cancelled


def test_pg_cancel_backend_ends_update_many_promptly(big_arguments):
    took = cancel_after(big_arguments, UPDATE_MANY, 1.0)
    assert took < PROMPT + CLIENT_SLACK, f"cancel took {took * 1000:.0f} ms"
    # All or nothing: the rows it had applied are rolled back.
    assert big_arguments.execute("SELECT count(*) FROM hostile_rows WHERE version > 1").fetchone() == (0,)


def test_statement_timeout_ends_update_many_promptly(big_arguments):
    thread, outcome = run_in_thread(UPDATE_MANY, setup=["SET statement_timeout = 1000"])
    thread.join(60)
    assert isinstance(outcome["error"], errors.QueryCanceled), outcome["error"]
    took = outcome["ended"] - outcome["started"]
    print(f"1 s statement_timeout took {took * 1000:.1f} ms")
    assert took < 1.0 + PROMPT + CLIENT_SLACK, f"a 1 s statement_timeout took {took * 1000:.0f} ms"


def test_pg_cancel_backend_ends_the_walk_over_a_huge_key_promptly(big_arguments):
    took = cancel_after(big_arguments, KEY_WALK, 0.7)
    assert took < PROMPT + CLIENT_SLACK, f"cancel took {took * 1000:.0f} ms"


# --- Out of memory, on a throw-away server whose backends have a 1 GiB address space ---

ADDRESS_SPACE_KB = 1024 * 1024
HUGE_MB = 250
WIDE_ELEMENTS = 2_000_000


def as_postgres(command):
    return ["sudo", "-u", "postgres"] + command if os.geteuid() == 0 else command


@pytest.fixture(scope="module")
def small_server():
    """Arguments are built by the server while it runs without a limit and stored (they
    compress to almost nothing); then it restarts with every process limited to 1 GiB of
    address space, which shared memory and the libraries already take about 300 MB of."""
    bindir = os.environ["PG_BIN"]
    base = tempfile.mkdtemp(prefix="rowversion-oom-")
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
    data = os.path.join(base, "data")
    port = int(os.environ.get("PGPORT", "5432")) + 7
    pg_ctl = os.path.join(bindir, "pg_ctl")
    subprocess.run(as_postgres([os.path.join(bindir, "initdb"), "-D", data, "-A", "trust", "-U", "postgres",
                                "--no-sync"]), check=True, stdout=subprocess.DEVNULL)

    def start(limit=""):
        command = (f"{limit} exec {pg_ctl} -D {data} -l {base}/server.log -w start"
                   f" -o \"-p {port} -k {base} -c listen_addresses=''\"")
        subprocess.run(as_postgres(["bash", "-c", command]), check=True, stdout=subprocess.DEVNULL)

    def stop(mode="fast"):
        subprocess.run(as_postgres([pg_ctl, "-D", data, "-m", mode, "-w", "stop"]),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    dsn = f"host={base} port={port} user=postgres dbname=postgres"
    try:
        start()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION pg_rowversion")
            conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body jsonb, note text)")
            conn.execute("SELECT rowversion.enable('docs')")
            conn.execute("INSERT INTO docs VALUES (1, '{}', ''), (2, '{}', '')")
            conn.execute("CREATE TABLE args (name text PRIMARY KEY, doc jsonb)")
            conn.execute("""INSERT INTO args SELECT 'huge', jsonb_build_array(jsonb_build_object(
                'key', '{"id": 2}'::jsonb, 'version', 1, 'changes', jsonb_build_object('note', repeat('y', %s))))""",
                         (HUGE_MB * 1024 * 1024,))
            conn.execute("""INSERT INTO args SELECT 'wide', jsonb_build_object('body', jsonb_agg(0))
                            FROM generate_series(1, %s)""", (WIDE_ELEMENTS,))
        stop()
        start(f"ulimit -v {ADDRESS_SPACE_KB} &&")
        yield dsn
    finally:
        stop("immediate")
        shutil.rmtree(base, ignore_errors=True)


def postmaster_start(conn):
    return conn.execute("SELECT pg_postmaster_start_time()").fetchone()[0]


def test_memory_is_proportional_to_the_arguments(small_server):
    """A document of 2,000,000 elements (24 MB as jsonb) goes through update() and
    update_many() within the limit: it stays one jsonb value in Postgres memory."""
    with psycopg.connect(small_server, autocommit=True) as conn:
        version = conn.execute("SELECT rowversion.update('docs', '{\"id\": 1}', 1, doc) FROM args"
                               " WHERE name = 'wide'").fetchone()[0]
        assert version == 2
        assert conn.execute("""SELECT rowversion.update_many('docs', jsonb_build_array(jsonb_build_object(
                                   'key', '{"id": 1}'::jsonb, 'version', 2, 'changes', doc)))
                               FROM args WHERE name = 'wide'""").fetchone()[0] == 1
        assert conn.execute("SELECT jsonb_array_length(body), version FROM docs WHERE id = 1").fetchone() \
            == (WIDE_ELEMENTS, 3)


def test_out_of_memory_inside_a_call_is_an_error_and_other_sessions_survive(small_server):
    """update_many() of a 250 MB value: the argument, the row's changes, the column value and the
    new row version do not fit in 1 GiB together."""
    with psycopg.connect(small_server, autocommit=True) as bystander:
        started = postmaster_start(bystander)
        pid = bystander.info.backend_pid
        with psycopg.connect(small_server, autocommit=True) as conn:
            with pytest.raises(errors.OutOfMemory) as raised:  # 53200, an ordinary ERROR
                conn.execute("SELECT rowversion.update_many('docs', doc) FROM args WHERE name = 'huge'")
            print(f"{raised.value}: {raised.value.diag.message_detail}")
            # The session that asked is still there, and so is its data.
            assert conn.execute("SELECT version FROM docs WHERE id = 2").fetchone() == (1,)
        # No backend died: the postmaster did not restart, the bystander is the same backend.
        assert bystander.execute("SELECT pg_backend_pid()").fetchone()[0] == pid
        assert postmaster_start(bystander) == started
