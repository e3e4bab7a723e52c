"""The conflict counters under concurrency (rowversion.conflict_stats, #24): sixteen clients race
to update the same two rows of each of two tables, each stating the version it read, and count
the version conflicts they receive (40001, or try_update()'s applied = false) and their
accepted writes. The counters must count every conflict once, on the table it was raised for,
whichever path decided it: the trigger (pg_rowversion.fast_path off) or the planner fast path,
in autocommit statements, in transactions that hold the row and roll back on the conflict, and
in rowversion.try_update(). Every accepted write moved its row's version by one and lost no
other (each client writes the value it read plus one). `checked` is exact on both paths: one
per accepted write and per conflict (a fast-path row whose check EvalPlanQual repeats after
waiting for a concurrent writer is counted once).

The counters live in shared memory: without pg_rowversion in shared_preload_libraries there are
none (reading them raises 55000), and this module is skipped. The sequential cases (each kind
of event, resets, privileges, databases) are tests/pg_regress/sql/conflict_stats.sql's."""

import random
import threading

import psycopg
import pytest
from psycopg import errors

from conftest import Background, restart_server

CLIENTS = 16
ROUNDS = 50
TABLES = ["conflict_stats_a", "conflict_stats_b"]
KEYS = [1, 2]
# How a client writes: read the row, then an UPDATE stating the version read ("statement"),
# the same UPDATE in a transaction that holds the row a moment before it commits, so that
# others wait for it ("held"), or rowversion.try_update() ("try_update").
STYLES = ["statement", "held", "try_update", "statement"]


@pytest.fixture(scope="module", autouse=True)
def preloaded():
    with psycopg.connect("", autocommit=True) as conn:
        libraries = conn.execute("SELECT current_setting('shared_preload_libraries')").fetchone()[0]
    if "pg_rowversion" not in libraries:
        pytest.skip("the conflict counters need pg_rowversion in shared_preload_libraries "
                    f"(this server preloads {libraries!r}): without it there are none to test")


@pytest.fixture
def tables(admin):
    for t in TABLES:
        admin.execute(f"DROP TABLE IF EXISTS {t}")
        admin.execute(f"CREATE TABLE {t} (id int PRIMARY KEY, n int NOT NULL)")
        admin.execute(f"SELECT rowversion.enable('{t}')")
        admin.execute(f"INSERT INTO {t} SELECT k, 0 FROM unnest(%s::int[]) k", (KEYS,))
        admin.execute("SELECT rowversion.conflict_stats_reset(%s)", (t,))
    yield TABLES
    for t in TABLES:
        admin.execute(f"DROP TABLE IF EXISTS {t}")


def uses_fast_path(conn, t):
    plan = "\n".join(row[0] for row in conn.execute(
        f"EXPLAIN (VERBOSE, COSTS OFF) UPDATE {t} SET n = 1, version = 1 WHERE id = 1"))
    return "rowversion.next_version(" in plan


class Client:
    """One connection that writes ROUNDS times, to a random row of a random table, and tallies
    per table what it was told: accepted writes (per row) and conflicts."""

    def __init__(self, number, path, style):
        self.number, self.path, self.style = number, path, style
        self.accepted = {(t, k): 0 for t in TABLES for k in KEYS}
        self.conflicts = {t: 0 for t in TABLES}

    def run(self, dsn, start):
        rng = random.Random(20260506 + self.number)
        with psycopg.connect(dsn, autocommit=True) as conn:
            if self.path == "trigger":
                conn.execute("SET pg_rowversion.fast_path = off")
            # The path this client's UPDATEs take, or the comparison would be moot.
            assert uses_fast_path(conn, TABLES[0]) == (self.path == "fast path"), self.path
            start.wait(timeout=30)
            for _ in range(ROUNDS):
                t, k = rng.choice(TABLES), rng.choice(KEYS)
                n, version = conn.execute(f"SELECT n, version FROM {t} WHERE id = %s", (k,)).fetchone()
                if self.write(conn, t, k, n + 1, version):
                    self.accepted[(t, k)] += 1
                else:
                    self.conflicts[t] += 1
        return self

    def write(self, conn, t, k, n, version):
        """Writes n to row k of t stating `version`: whether it was accepted (False: a
        conflict)."""
        if self.style == "try_update":
            applied, _ = conn.execute(
                "SELECT applied, version FROM rowversion.try_update(%s, jsonb_build_object('id', %s::int), %s, "
                "jsonb_build_object('n', %s::int))", (t, k, version, n)).fetchone()
            return applied
        try:
            if self.style == "held":
                # The conflict aborts the transaction, which rolls back: counted all the same.
                with conn.transaction():
                    cursor = conn.execute(f"UPDATE {t} SET n = %s, version = %s WHERE id = %s", (n, version, k))
                    conn.execute("SELECT pg_sleep(0.003)")
            else:
                cursor = conn.execute(f"UPDATE {t} SET n = %s, version = %s WHERE id = %s", (n, version, k))
        except errors.SerializationFailure as error:
            assert error.diag.message_primary.startswith("row version conflict"), error.diag.message_primary
            return False
        assert cursor.rowcount == 1
        return True


def race(dsn, paths):
    """CLIENTS clients at once, client i on paths[i % len(paths)], in the style STYLES[i //
    len(paths) % len(STYLES)]: the clients, once all are done."""
    clients = [Client(i, paths[i % len(paths)], STYLES[i // len(paths) % len(STYLES)]) for i in range(CLIENTS)]
    start = threading.Barrier(CLIENTS)
    running = [Background(lambda client=client: client.run(dsn, start)) for client in clients]
    for background in running:
        background.join(timeout=120)
        if background.error is not None:
            raise background.error
    return clients


def counters(admin, t):
    row = admin.execute(
        "SELECT checked, conflicts, merged, observed, observed_mergeable, version_required, last_conflict "
        "FROM rowversion.conflict_stats WHERE rel = %s::regclass", (t,)).fetchone()
    assert row is not None, f"no counters for {t}"
    return dict(zip(["checked", "conflicts", "merged", "observed", "observed_mergeable", "version_required",
                     "last_conflict"], row))


def check_tallies(admin, clients):
    """Per table: the counters against what the clients were told, and the rows against the
    writes accepted. Returns per table (accepted, conflicts, counters)."""
    found = {}
    for t in TABLES:
        accepted = sum(client.accepted[(t, k)] for client in clients for k in KEYS)
        conflicts = sum(client.conflicts[t] for client in clients)
        counted = counters(admin, t)
        # The race did produce conflicts on this table: the counting was put to the test.
        assert conflicts > 0 and accepted > 0, (t, accepted, conflicts)
        assert counted["conflicts"] == conflicts, (t, counted, conflicts)
        assert counted["last_conflict"] is not None
        # No other kind of event happened here (reject mode, lenient, every write states a
        # version).
        assert (counted["merged"], counted["observed"], counted["observed_mergeable"],
                counted["version_required"]) == (0, 0, 0, 0), (t, counted)
        # Every accepted write moved the version by one (from 1) and wrote what it read plus
        # one: none was lost.
        for k in KEYS:
            writes = sum(client.accepted[(t, k)] for client in clients)
            row = admin.execute(f"SELECT n, version FROM {t} WHERE id = %s", (k,)).fetchone()
            assert row == (writes, 1 + writes), (t, k, row, writes)
        found[t] = (accepted, conflicts, counted)
    return found


def test_sixteen_clients_raising_conflicts_are_each_counted_once(admin, dsn, tables):
    """Half the clients on the trigger, half on the fast path: every conflict counted once, on
    its own table, and every accepted write or conflict counted once as checked."""
    clients = race(dsn, ["trigger", "fast path"])
    for t, (accepted, conflicts, counted) in check_tallies(admin, clients).items():
        assert counted["checked"] == accepted + conflicts, (t, counted, accepted, conflicts)
    # Each path and each way of writing met conflicts of its own.
    for path in ("trigger", "fast path"):
        assert sum(sum(c.conflicts.values()) for c in clients if c.path == path) > 0, path
    for style in set(STYLES):
        assert sum(sum(c.conflicts.values()) for c in clients if c.style == style) > 0, style


def test_tables_beyond_conflict_stats_max_are_reported_and_a_reset_frees_dropped_ones(admin, dsn):
    """With room for 3 tables, a fourth table's events are not counted, and reading the counters
    says so (a WARNING) instead of showing nothing as if nothing had happened; dropping a table
    and resetting gives its room back."""
    admin.execute("ALTER SYSTEM SET pg_rowversion.conflict_stats_max = 3")
    restart_server()
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            warnings = []
            conn.add_notice_handler(lambda notice: warnings.append(notice.message_primary))
            tables = [f"conflict_stats_room_{i}" for i in range(4)]
            for t in tables:
                conn.execute(f"DROP TABLE IF EXISTS {t}")
                conn.execute(f"CREATE TABLE {t} (id int PRIMARY KEY)")
                conn.execute(f"SELECT rowversion.enable('{t}')")
                conn.execute(f"INSERT INTO {t} VALUES (1)")
            conn.execute("SELECT rowversion.conflict_stats_reset()")

            def counted():
                warnings.clear()
                rows = conn.execute("SELECT rel::text, checked FROM rowversion.conflict_stats "
                                    "WHERE rel::text LIKE 'conflict_stats_room_%' ORDER BY 1").fetchall()
                return dict(rows), list(warnings)

            for t in tables:
                conn.execute(f"UPDATE {t} SET version = version")
            rows, said = counted()
            assert rows == {t: 1 for t in tables[:3]}, rows
            assert said == ["1 events on tables without counters were not counted"], said
            conn.execute(f"DROP TABLE {tables[0]}")
            conn.execute("SELECT rowversion.conflict_stats_reset()")
            conn.execute(f"UPDATE {tables[3]} SET version = version")
            rows, said = counted()
            assert rows == {tables[1]: 0, tables[2]: 0, tables[3]: 1}, rows
            assert said == [], said
            for t in tables[1:]:
                conn.execute(f"DROP TABLE {t}")
    finally:
        # The restart ended `admin`'s connection.
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("ALTER SYSTEM RESET pg_rowversion.conflict_stats_max")
        restart_server()
