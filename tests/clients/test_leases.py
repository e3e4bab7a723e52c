"""Leases with fencing tokens (rowversion.lease_*): the proof that a paused holder's late write
is refused, wake-up latency, interruption of a waiting lease_acquire, holders that never wait
for waiters (also under churn), no session state, fairness (also with 200 waiters), tokens
that survive a restart and a crash, and the error table."""

import multiprocessing
import multiprocessing.connection
import os
import random
import signal
import threading
import time
import uuid
from datetime import timedelta

import psycopg
import pytest
from psycopg import errors

from conftest import Background, restart_server, wait_until

RV001 = "RV001"


def unique(prefix):
    """A lease name of its own for each test, so that runs and tests never share a lease."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def connect(dsn, **kwargs):
    return psycopg.connect(dsn, autocommit=True, **kwargs)


def acquire(conn, name, ttl, wait="0 s", holder=None):
    return conn.execute("SELECT rowversion.lease_acquire(%s, %s::interval, %s::interval, %s)",
                        (name, ttl, wait, holder)).fetchone()[0]


def renew(conn, name, token, ttl):
    return conn.execute("SELECT rowversion.lease_renew(%s, %s, %s::interval)", (name, token, ttl)).fetchone()[0]


def release(conn, name, token):
    return conn.execute("SELECT rowversion.lease_release(%s, %s)", (name, token)).fetchone()[0]


def check(conn, name, token):
    conn.execute("SELECT rowversion.lease_check(%s, %s)", (name, token))


def waiting(conn, name):
    return conn.execute("SELECT coalesce(sum(waiting), 0) FROM rowversion.leases WHERE name = %s",
                        (name,)).fetchone()[0]


def sqlstate(call):
    """The SQLSTATE that call() raises; fails if it raises none."""
    try:
        call()
    except psycopg.Error as e:
        return e.sqlstate
    raise AssertionError("no error raised")


def crash_and_recover():
    restart_server("immediate")


# ---------------------------------------------------------------------------------------------
# a. The proof: 16 worker processes; the parent pauses some of them with SIGSTOP for longer
# than the TTL, either holding the lease before their write (another worker takes the lease
# over, and the late write must be refused) or right after lease_check inside the write's
# transaction (nobody may take the lease over until that transaction ends).

PROOF_WORKERS = 16
PROOF_TTL = 0.3          # seconds
PROOF_PAUSE = 2 * PROOF_TTL
HOLDING, CHECKED = "holding", "checked"


def proof_worker(worker, pipe, stop, dsn, name, table, fenced):
    """Acquires, tells the parent which token it holds and waits for its go-ahead (the parent
    may SIGSTOP it in between), then writes in one transaction, fenced by lease_check (after
    which it reports and waits for the go-ahead again) or not, and releases. Reports every
    outcome through the pipe."""
    try:
        with connect(dsn) as conn:
            while not stop.is_set():
                token = acquire(conn, name, f"{int(PROOF_TTL * 1000)} ms", "5 s", f"worker {worker}")
                if token is None:
                    continue
                pipe.send((HOLDING, token))
                pipe.recv()
                try:
                    with conn.transaction():
                        if fenced:
                            check(conn, name, token)
                            pipe.send((CHECKED, token))
                            pipe.recv()
                        seq = conn.execute(
                            f"UPDATE {table}_resource SET seq = seq + 1, token = %s WHERE id = 1 RETURNING seq",
                            (token,)).fetchone()[0]
                        conn.execute(f"INSERT INTO {table}_writes (seq, token, worker) VALUES (%s, %s, %s)",
                                     (seq, token, worker))
                except psycopg.Error as e:
                    if e.sqlstate != RV001:
                        raise
                    pipe.send(("refused", token, e.sqlstate))
                else:
                    pipe.send(("wrote", token, seq))
                release(conn, name, token)
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which fails the test
        pipe.send(("error", repr(e)))
    finally:
        pipe.send(("done",))


def process_state(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


class Pause:
    def __init__(self, kind, worker, token):
        self.kind, self.worker, self.token = kind, worker, token
        self.stopped_at = time.monotonic()
        self.newer_token_seen = False     # another worker acquired while this one was stopped
        self.newer_write_seen = False     # ... and committed a write


def run_proof(admin, dsn, fenced, plan, min_seconds, max_seconds=25.0):
    """Runs the harness, pausing holders in the order of plan (a list of HOLDING, CHECKED).
    Returns (the writes that workers saw commit, the pauses, each paused token's outcome,
    the log in seq order)."""
    table = "lease_proof" if fenced else "lease_control"
    admin.execute(f"DROP TABLE IF EXISTS {table}_resource, {table}_writes")
    admin.execute(f"CREATE TABLE {table}_resource (id int PRIMARY KEY, seq bigint NOT NULL, token bigint)")
    admin.execute(f"INSERT INTO {table}_resource VALUES (1, 0, NULL)")
    admin.execute(f"CREATE TABLE {table}_writes (seq bigint PRIMARY KEY, token bigint NOT NULL, worker int NOT NULL)")
    name = unique(table)

    ctx = multiprocessing.get_context("fork")
    stop = ctx.Event()
    workers, pipes = {}, {}
    for worker in range(PROOF_WORKERS):
        parent_end, child_end = ctx.Pipe()
        process = ctx.Process(target=proof_worker, args=(worker, child_end, stop, dsn, name, table, fenced),
                              daemon=True)
        process.start()
        child_end.close()
        workers[worker], pipes[worker] = process, parent_end

    committed = set()            # (seq, token, worker) that workers saw commit
    outcome = {}                 # token -> ("wrote", seq) or ("refused", sqlstate)
    pauses, paused = [], None    # finished pauses, the current one
    last_pause_end = time.monotonic()
    done, failures = set(), []
    started = time.monotonic()
    try:
        while len(done) < PROOF_WORKERS:
            now = time.monotonic()
            if now - started > max_seconds + 15:
                raise AssertionError("the proof harness did not finish")
            if not stop.is_set() and ((len(pauses) == len(plan) and now - started >= min_seconds)
                                      or now - started > max_seconds):
                stop.set()
            if paused is not None:
                # A holder paused before its write resumes once the TTL is well past and a
                # newer holder's write has committed (or after 10 s, and then it is not taken
                # over); one paused inside its transaction, once the TTL is well past.
                waited = now - paused.stopped_at
                if waited >= PROOF_PAUSE and (paused.kind == CHECKED or paused.newer_write_seen) or waited > 10:
                    os.kill(workers[paused.worker].pid, signal.SIGCONT)
                    pauses.append(paused)
                    paused, last_pause_end = None, time.monotonic()
            live = [pipes[w] for w in pipes if w not in done]
            for pipe in multiprocessing.connection.wait(live, timeout=0.01):
                worker = next(w for w, p in pipes.items() if p is pipe)
                try:
                    message = pipe.recv()
                except EOFError:
                    done.add(worker)
                    continue
                kind = message[0]
                if kind in (HOLDING, CHECKED):
                    token = message[1]
                    if kind == HOLDING and paused is not None and token > paused.token:
                        paused.newer_token_seen = True
                    if (paused is None and not stop.is_set() and len(pauses) < len(plan)
                            and plan[len(pauses)] == kind and time.monotonic() - last_pause_end > PROOF_TTL):
                        pid = workers[worker].pid
                        os.kill(pid, signal.SIGSTOP)
                        wait_until(lambda: process_state(pid) == "T", timeout=5, what="the worker to stop")
                        paused = Pause(kind, worker, token)
                    pipe.send("go")  # a stopped worker reads it once it is continued
                elif kind == "wrote":
                    _, token, seq = message
                    committed.add((seq, token, worker))
                    outcome[token] = ("wrote", seq)
                    if paused is not None and token > paused.token:
                        paused.newer_write_seen = True
                elif kind == "refused":
                    outcome[message[1]] = ("refused", message[2])
                elif kind == "error":
                    failures.append((worker, message[1]))
                    stop.set()
                elif kind == "done":
                    done.add(worker)
    finally:
        stop.set()
        for process in workers.values():
            if process.is_alive():
                os.kill(process.pid, signal.SIGCONT)
        for process in workers.values():
            process.join(15)
            if process.is_alive():
                process.kill()
                process.join()
        for pipe in pipes.values():
            pipe.close()
    assert not failures, f"workers failed: {failures}"
    assert [p.kind for p in pauses] == plan, "not every planned pause happened"
    log = admin.execute(f"SELECT seq, token, worker FROM {table}_writes ORDER BY seq").fetchall()
    return committed, pauses, outcome, log


def test_fencing_refuses_writes_of_paused_holders(admin, dsn):
    plan = [HOLDING, CHECKED, HOLDING, CHECKED, HOLDING, HOLDING]
    committed, pauses, outcome, log = run_proof(admin, dsn, True, plan, min_seconds=3.0)
    for pause in pauses:
        if pause.kind == HOLDING:
            # Paused past its TTL before writing: another worker took the lease and wrote,
            # and the late write was refused by lease_check.
            assert pause.newer_write_seen, f"token {pause.token} was not taken over"
            assert outcome.get(pause.token) == ("refused", RV001), (pause.token, outcome.get(pause.token))
        else:
            # Paused past its TTL after lease_check, inside the transaction: nobody could take
            # the lease meanwhile, and the write went through.
            assert not pause.newer_token_seen, f"lease taken over inside token {pause.token}'s transaction"
            assert outcome.get(pause.token, ("missing",))[0] == "wrote", (pause.token, outcome.get(pause.token))
    # Nothing lost, nothing extra: the log is exactly the writes that workers saw commit.
    assert set(log) == committed
    assert [seq for seq, _, _ in log] == list(range(1, len(log) + 1))
    assert admin.execute("SELECT seq FROM lease_proof_resource").fetchone()[0] == len(log)
    assert len(log) >= 10
    # In commit order the tokens strictly increase: no write of an older holder came after a
    # newer holder's write.
    tokens = [token for _, token, _ in log]
    assert all(a < b for a, b in zip(tokens, tokens[1:])), tokens


def test_without_the_fence_a_stale_write_gets_through(admin, dsn):
    """The control run: the same harness without lease_check. The proof above could fail."""
    committed, pauses, outcome, log = run_proof(admin, dsn, False, [HOLDING, HOLDING], min_seconds=1.0)
    assert set(log) == committed
    assert all(p.newer_write_seen and outcome[p.token][0] == "wrote" for p in pauses), \
        [(p.token, outcome.get(p.token)) for p in pauses]
    tokens = [token for _, token, _ in log]
    stale = [(i, token) for i, token in enumerate(tokens) if token < max(tokens[:i], default=0)]
    assert stale, "expected a paused holder's write to land after a newer holder's write"


# ---------------------------------------------------------------------------------------------
# b. Wake-up latency, measured on the server clock.

WAKE_LIMIT = 0.1          # the promise
SERVER_SLACK = 0.05       # scheduling on a busy machine
CLIENT_SLACK = 0.3


def acquired_at(conn, name, token):
    row = conn.execute("SELECT acquired_at, expires_at FROM rowversion.leases WHERE name = %s AND token = %s",
                       (name, token)).fetchone()
    assert row is not None, f"no lease {name} with token {token} in rowversion.leases"
    return row


def test_waiter_wakes_promptly_after_release(admin, dsn):
    name = unique("wake-release")
    with connect(dsn) as holder, connect(dsn) as other:
        token = acquire(holder, name, "30 s")
        waiter = Background(lambda: acquire(other, name, "30 s", "5 s"))
        wait_until(lambda: waiting(admin, name) == 1, what="the waiter to wait")
        released, released_at = holder.execute(
            "SELECT rowversion.lease_release(%s, %s), clock_timestamp()", (name, token)).fetchone()
        returned_after = time.monotonic()
        assert released is True
        waiter.join()
        assert waiter.error is None, waiter.error
        assert waiter.result is not None and waiter.result > token
        got_at, _ = acquired_at(admin, name, waiter.result)
        assert timedelta(0) <= got_at - released_at <= timedelta(seconds=WAKE_LIMIT + SERVER_SLACK), \
            got_at - released_at
        assert waiter.finished - returned_after <= WAKE_LIMIT + CLIENT_SLACK
        assert release(other, name, waiter.result) is True


def test_waiter_wakes_promptly_after_expiry(admin, dsn):
    name = unique("wake-expiry")
    with connect(dsn) as holder, connect(dsn) as other:
        token = acquire(holder, name, "500 ms")
        _, expires_at = acquired_at(admin, name, token)
        waiter = Background(lambda: acquire(other, name, "30 s", "5 s"))
        waiter.join()
        assert waiter.error is None, waiter.error
        assert waiter.result is not None and waiter.result > token
        got_at, _ = acquired_at(admin, name, waiter.result)
        # Not before the expiry, and within 100 ms of it.
        assert timedelta(0) <= got_at - expires_at <= timedelta(seconds=WAKE_LIMIT + SERVER_SLACK), \
            got_at - expires_at
        # The old holder lost it.
        assert renew(holder, name, token, "30 s") is False
        assert release(holder, name, token) is False
        assert release(other, name, waiter.result) is True


# ---------------------------------------------------------------------------------------------
# c. Interrupting a waiter; a waiter never blocks the holder.

def held(dsn, name):
    conn = connect(dsn)
    return conn, acquire(conn, name, "60 s")


@pytest.mark.parametrize("setting, expected, error", [
    ("statement_timeout", "57014", errors.QueryCanceled),
    ("lock_timeout", "55P03", errors.LockNotAvailable),
])
def test_timeouts_end_a_waiting_acquire(admin, dsn, setting, expected, error):
    name = unique(setting)
    holder, token = held(dsn, name)
    with holder, connect(dsn) as waiter:
        waiter.execute(f"SET {setting} = '300ms'")
        started = time.monotonic()
        with pytest.raises(error) as raised:
            acquire(waiter, name, "30 s", "10 s")
        elapsed = time.monotonic() - started
        assert raised.value.sqlstate == expected
        assert 0.25 <= elapsed <= 0.3 + WAKE_LIMIT + CLIENT_SLACK, elapsed
        # The waiter left the queue, the holder still holds, and the session works.
        wait_until(lambda: waiting(admin, name) == 0, timeout=5, what="the waiter to leave the queue")
        waiter.execute(f"RESET {setting}")
        assert acquire(waiter, name, "30 s") is None
        assert release(holder, name, token) is True


def test_cancel_ends_a_waiting_acquire(admin, dsn):
    name = unique("cancel")
    holder, token = held(dsn, name)
    with holder, connect(dsn) as other:
        waiter = Background(lambda: acquire(other, name, "30 s", "20 s"))
        wait_until(lambda: waiting(admin, name) == 1, what="the waiter to wait")
        cancelled = time.monotonic()
        assert admin.execute("SELECT pg_cancel_backend(%s)", (other.info.backend_pid,)).fetchone()[0]
        waiter.join()
        assert isinstance(waiter.error, errors.QueryCanceled), waiter.error
        assert waiter.error.sqlstate == "57014"
        assert waiter.finished - cancelled <= WAKE_LIMIT + CLIENT_SLACK
        wait_until(lambda: waiting(admin, name) == 0, timeout=5, what="the waiter to leave the queue")
        assert release(holder, name, token) is True


def test_a_waiter_does_not_block_the_holder(admin, dsn):
    name = unique("holder-free")
    holder, token = held(dsn, name)
    with holder, connect(dsn) as other:
        waiter = Background(lambda: acquire(other, name, "30 s", "10 s"))
        wait_until(lambda: waiting(admin, name) == 1, what="the waiter to wait")

        def quick(call):
            started = time.monotonic()
            result = call()
            assert time.monotonic() - started < 0.5
            return result

        assert quick(lambda: renew(holder, name, token, "60 s")) is True
        with holder.transaction():
            quick(lambda: check(holder, name, token))
        assert not waiter.done()
        assert waiting(admin, name) == 1
        assert quick(lambda: release(holder, name, token)) is True
        waiter.join()
        assert waiter.error is None, waiter.error
        assert waiter.result > token
        assert release(other, name, waiter.result) is True


CHURN_NAMES = 4
CHURN_CLIENTS = 24          # 6 per lease: one holds it, the others wait
CHURN_SECONDS = 8.0
CHURN_TTL = "5 s"
CHURN_WAIT = 3.0            # seconds a client waits in lease_acquire
HOLDER_LOCK_TIMEOUT = "2s"
HOLDER_LIMIT = 1.0          # seconds any holder operation may take: well under the lock_timeout
CALL_SLACK = 1.5            # seconds an acquire may return after its wait on a busy 2-core machine

# The row locks on rowversion.lease_state right now: per lease, each locking transaction and
# the sessions running it (row_locks() knows top-level transactions; a subtransaction's lock
# is found through the lock on its own transaction id).
ROW_LOCKS = """
    SELECT n.name, l.locker::text,
           l.pids || ARRAY(SELECT k.pid FROM pg_locks k
                           WHERE k.locktype = 'transactionid' AND k.transactionid = l.locker
                             AND k.mode = 'ExclusiveLock' AND k.granted)
    FROM unnest(%s::text[]) AS n(name),
         LATERAL rowversion.row_locks('rowversion.lease_state', jsonb_build_object('name', n.name)) AS l"""
# Sessions asleep in lease_acquire (on their latch: wait_event_type Extension).
SLEEPING_IN_ACQUIRE = """
    SELECT pid FROM pg_stat_activity
    WHERE state = 'active' AND wait_event_type = 'Extension' AND query LIKE '%lease_acquire(%'
      AND pid <> pg_backend_pid()"""


def test_under_churn_a_holder_never_waits_for_a_waiter(admin, dsn):
    """24 clients take 4 leases in turn for 8 seconds: acquire (waiting up to 3 s), then in one
    transaction with lock_timeout 2 s lease_check, lease_renew and lease_release. What a holder
    would notice: its lease_check, renew or release waiting for a client that is only waiting
    for the lease, until lock_timeout (55P03) or that client's wait ends. That happened when a
    waiter lost a race (another took the lease between the waiter's snapshot and its row lock)
    and slept holding the lock it had taken on the lease's row. Meanwhile a sampler looks, about
    300 times a second, for a session asleep in lease_acquire that holds a row lock on
    rowversion.lease_state: there must be none. Every acquire returns a token within its wait or
    NULL at its end, and each lease's tokens increase in the order they were handed out."""
    names = [unique(f"churn{i}") for i in range(CHURN_NAMES)]
    for name in names:   # every lease has its row before row_locks() looks for it
        assert release(admin, name, acquire(admin, name, "1 s")) is True
    deadline = time.monotonic() + CHURN_SECONDS
    lock = threading.Lock()
    acquisitions = []      # (name, token, server time right after the acquisition)
    acquires = []          # (token or None, seconds the call took)
    holder_calls = []      # (operation, seconds, result)
    failures = []          # (client, operation, exception)

    def client(i, conn):
        name = names[i % CHURN_NAMES]
        work = random.Random(i)
        while time.monotonic() < deadline:
            started = time.monotonic()
            try:
                token, at = conn.execute(
                    "SELECT token, clock_timestamp() FROM (SELECT rowversion.lease_acquire(%s, %s::interval, "
                    "%s::interval, %s) AS token OFFSET 0) AS acquired",
                    (name, CHURN_TTL, f"{CHURN_WAIT} s", f"client {i}")).fetchone()
            except psycopg.Error as e:
                with lock:
                    failures.append((i, "lease_acquire", e))
                return
            with lock:
                acquires.append((token, time.monotonic() - started))
                if token is not None:
                    acquisitions.append((name, token, at))
            if token is None:
                continue
            operation = "lease_check"
            try:
                with conn.transaction():
                    conn.execute(f"SET LOCAL lock_timeout = '{HOLDER_LOCK_TIMEOUT}'")
                    for operation, call in [("lease_check", lambda: check(conn, name, token)),
                                            ("lease_renew", lambda: renew(conn, name, token, CHURN_TTL)),
                                            ("lease_release", lambda: release(conn, name, token))]:
                        started = time.monotonic()
                        result = call()
                        with lock:
                            holder_calls.append((operation, time.monotonic() - started, result))
                        if operation == "lease_check":
                            time.sleep(work.uniform(0, 0.01))   # the protected write
            except psycopg.Error as e:
                with lock:
                    failures.append((i, operation, e))
                return

    sleeping_holders = []    # (lease, locking transaction, pid): the defect
    samples = {"taken": 0, "with sleepers": 0, "with row locks": 0}

    def sampler(conn):
        while time.monotonic() < deadline:
            # A lock held before and after a moment at which its session slept in
            # lease_acquire was held while it slept: an attempt's own row lock is gone
            # before the waiter sleeps again.
            before = {(name, locker, pid) for name, locker, pids in conn.execute(ROW_LOCKS, (names,))
                      for pid in pids}
            sleeping = {pid for (pid,) in conn.execute(SLEEPING_IN_ACQUIRE)}
            after = {(name, locker, pid) for name, locker, pids in conn.execute(ROW_LOCKS, (names,))
                     for pid in pids}
            samples["taken"] += 1
            samples["with sleepers"] += bool(sleeping)
            samples["with row locks"] += bool(before)
            sleeping_holders.extend(lock for lock in before & after if lock[2] in sleeping)

    conns = [connect(dsn, application_name=f"churn {i}") for i in range(CHURN_CLIENTS)]
    watcher = connect(dsn)
    try:
        threads = [Background(lambda i=i: client(i, conns[i])) for i in range(CHURN_CLIENTS)]
        watching = Background(lambda: sampler(watcher))
        for thread in threads + [watching]:
            thread.join(timeout=CHURN_SECONDS + CHURN_WAIT + 20)
            assert thread.error is None, thread.error
    finally:
        for conn in conns + [watcher]:
            conn.close()

    timeouts = [f for f in failures if getattr(f[2], "sqlstate", None) == "55P03"]
    assert not timeouts, f"a holder waited {HOLDER_LOCK_TIMEOUT} (lock_timeout): {timeouts}"
    assert not failures, failures
    assert not sleeping_holders, \
        f"sessions asleep in lease_acquire held row locks on rowversion.lease_state: {sleeping_holders}"
    # The holders' calls: quick, and all of them succeeded (a holder renews and releases well
    # within its ttl).
    slowest = max(holder_calls, key=lambda call: call[1])
    assert slowest[1] < HOLDER_LIMIT, f"a holder's {slowest[0]} took {slowest[1]:.3f} s"
    assert all(result is not False for _, _, result in holder_calls), \
        [call for call in holder_calls if call[2] is False]
    # Every acquire returned a token within its wait, or NULL at its wait.
    for token, seconds in acquires:
        if token is None:
            assert CHURN_WAIT - 0.05 <= seconds <= CHURN_WAIT + CALL_SLACK, seconds
        else:
            assert seconds <= CHURN_WAIT + CALL_SLACK, seconds
    # Per lease, tokens strictly increase in the order the server handed them out.
    for name in names:
        tokens = [token for _, token, _ in sorted((a for a in acquisitions if a[0] == name), key=lambda a: a[2])]
        assert all(a < b for a, b in zip(tokens, tokens[1:])), (name, tokens)
    # The run did what it is for: many hand-overs, waiters asleep while the sampler looked,
    # and row locks it could see.
    assert len(acquisitions) >= 100, len(acquisitions)
    assert samples["with sleepers"] >= 50 and samples["with row locks"] >= 10, samples


# ---------------------------------------------------------------------------------------------
# d. No session state: a token works from any session.

def test_a_token_works_from_any_session(admin, dsn):
    name = unique("sessions")
    with connect(dsn) as first, connect(dsn) as second, connect(dsn) as third:
        token = acquire(first, name, "30 s", holder="first")
        row = admin.execute("SELECT holder, token, role, expired FROM rowversion.leases WHERE name = %s",
                            (name,)).fetchone()
        assert row == ("first", token, admin.info.parameter_status("session_authorization"), False)
        check(second, name, token)
        assert renew(third, name, token, "60 s") is True
        check(third, name, token)
        first.close()  # the acquiring session's end does not release the lease
        check(second, name, token)
        assert acquire(second, name, "30 s") is None
        assert release(second, name, token) is True
        assert release(third, name, token) is False
        assert renew(third, name, token, "60 s") is False
        assert sqlstate(lambda: check(third, name, token)) == RV001
        newer = acquire(third, name, "30 s")
        assert newer > token
        assert release(second, name, newer) is True


# ---------------------------------------------------------------------------------------------
# e. Fairness: waiters get the lease in the order they arrived.

def test_waiters_are_served_in_arrival_order(admin, dsn):
    name = unique("fair")
    holder, token = held(dsn, name)
    conns = [connect(dsn) for _ in range(4)]
    try:
        order, lock = [], threading.Lock()

        def wait_then_release(i):
            got = acquire(conns[i], name, "30 s", "20 s", holder=f"waiter {i}")
            with lock:
                order.append((i, got))
            release(conns[i], name, got)
            return got

        waiters = []
        for i in range(4):
            waiters.append(Background(lambda i=i: wait_then_release(i)))
            wait_until(lambda: waiting(admin, name) == i + 1, what=f"waiter {i} to wait")
        assert release(holder, name, token) is True
        for waiter in waiters:
            waiter.join()
            assert waiter.error is None, waiter.error
        assert [i for i, _ in order] == [0, 1, 2, 3]
        tokens = [got for _, got in order]
        assert tokens == sorted(tokens) and tokens[0] > token
    finally:
        holder.close()
        for conn in conns:
            conn.close()


MANY_WAITERS = int(os.environ.get("LEASE_WAITERS", "200"))
MANY_WAIT = "90 s"


def test_two_hundred_waiters_are_served_in_arrival_order(admin, dsn):
    """One holder, 200 sessions queued behind it (LEASE_WAITERS changes the number): when the
    holder releases, every waiter gets the lease in the order it arrived, each releasing it
    right away, all within their wait; the holder's release returns at once, however long the
    queue."""
    needed = MANY_WAITERS + 30
    max_connections = int(admin.execute("SHOW max_connections").fetchone()[0])
    if max_connections < needed:
        pytest.fail(f"this test opens {MANY_WAITERS + 2} connections and needs max_connections >= {needed}; "
                    f"the server has {max_connections}: start it with max_connections=260, as scripts/test does")
    name = unique("many")
    holder, token = held(dsn, name)
    conns = []
    try:
        conns = [connect(dsn, application_name=f"waiter {i}") for i in range(MANY_WAITERS)]
        served, lock = [], threading.Lock()

        def wait_then_release(i):
            started = time.monotonic()
            got = acquire(conns[i], name, "30 s", MANY_WAIT, holder=f"waiter {i}")
            waited = time.monotonic() - started
            with lock:
                served.append((i, got, waited))
            return release(conns[i], name, got) if got is not None else None

        waiters = []
        for i in range(MANY_WAITERS):
            waiters.append(Background(lambda i=i: wait_then_release(i)))
            wait_until(lambda: waiting(admin, name) == i + 1, timeout=10, what=f"waiter {i} to queue",
                       interval=0.002)
        started = time.monotonic()
        assert release(holder, name, token) is True
        release_took = time.monotonic() - started
        for waiter in waiters:
            waiter.join(timeout=100)
            assert waiter.error is None, waiter.error
            assert waiter.result is True, "a waiter could not release the lease it was given"
        assert release_took < 1.0, f"the holder's release took {release_took:.3f} s with {MANY_WAITERS} waiters"
        assert all(got is not None for _, got, _ in served), [s for s in served if s[1] is None]
        assert [i for i, _, _ in served] == list(range(MANY_WAITERS)), \
            f"not served in arrival order: {[i for i, _, _ in served]}"
        tokens = [got for _, got, _ in served]
        assert tokens[0] > token and all(a < b for a, b in zip(tokens, tokens[1:])), tokens
        assert max(waited for _, _, waited in served) < 90
        assert waiting(admin, name) == 0
    finally:
        holder.close()
        for conn in conns:
            conn.close()


# ---------------------------------------------------------------------------------------------
# f. Tokens keep increasing across a restart and across crash recovery.

@pytest.mark.parametrize("stop", [restart_server, crash_and_recover], ids=["restart", "crash"])
def test_tokens_increase_across_restart(admin, dsn, stop):
    released_name, held_name = unique("restart-released"), unique("restart-held")
    with connect(dsn) as conn:
        for _ in range(3):
            last_released = acquire(conn, released_name, "30 s")
            assert release(conn, released_name, last_released) is True
        last_held = acquire(conn, held_name, "1 s")  # still held when the server goes down
        assert last_held is not None
    stop()
    with connect(dsn) as conn:
        again = acquire(conn, released_name, "30 s")
        assert again is not None and again > last_released
        # The held lease is free by now or expires within its second; either way its next
        # token is higher.
        after = acquire(conn, held_name, "30 s", "5 s")
        assert after is not None and after > last_held
        assert release(conn, released_name, again) is True
        assert release(conn, held_name, after) is True


def test_an_acquisition_survives_a_crash_under_asynchronous_commit(admin, dsn):
    """With synchronous_commit off, a commit returns before its WAL is flushed; a crash right
    after it would lose an acquisition whose token the client has, and the next acquisition
    would hand out the same token. lease_acquire forces its commit to disk."""
    name = unique("async")
    with connect(dsn) as conn:
        conn.execute("SET synchronous_commit = off")
        first = acquire(conn, name, "1 s")
        assert first is not None
        # The crash follows at once: the WAL writer flushes asynchronous commits only every
        # wal_writer_delay (200 ms).
        crash_and_recover()
    with connect(dsn) as conn:
        row = conn.execute("SELECT token FROM rowversion.leases WHERE name = %s", (name,)).fetchone()
        assert row is not None and row[0] == first, "the acquisition was lost in the crash"
        after = acquire(conn, name, "30 s", "5 s")
        assert after is not None and after > first
        assert release(conn, name, after) is True


# ---------------------------------------------------------------------------------------------
# g. Bad input.

BAD_INPUT = [
    # NULL arguments
    ("SELECT rowversion.lease_acquire(NULL, '1 s')", "22004"),
    ("SELECT rowversion.lease_acquire('x', NULL)", "22004"),
    ("SELECT rowversion.lease_acquire('x', '1 s', NULL)", "22004"),
    ("SELECT rowversion.lease_renew(NULL, 1, '1 s')", "22004"),
    ("SELECT rowversion.lease_renew('x', NULL, '1 s')", "22004"),
    ("SELECT rowversion.lease_renew('x', 1, NULL)", "22004"),
    ("SELECT rowversion.lease_release(NULL, 1)", "22004"),
    ("SELECT rowversion.lease_release('x', NULL)", "22004"),
    ("SELECT rowversion.lease_check(NULL, 1)", "22004"),
    ("SELECT rowversion.lease_check('x', NULL)", "22004"),
    ("SELECT rowversion.lease_break(NULL)", "22004"),
    # empty name
    ("SELECT rowversion.lease_acquire('', '1 s')", "22023"),
    ("SELECT rowversion.lease_renew('', 1, '1 s')", "22023"),
    ("SELECT rowversion.lease_release('', 1)", "22023"),
    ("SELECT rowversion.lease_check('', 1)", "22023"),
    ("SELECT rowversion.lease_break('')", "22023"),
    # ttl <= 0 or > 1 year, negative wait
    ("SELECT rowversion.lease_acquire('x', '0 s')", "22023"),
    ("SELECT rowversion.lease_acquire('x', '-1 s')", "22023"),
    ("SELECT rowversion.lease_acquire('x', '1 year 1 mon')", "22023"),
    ("SELECT rowversion.lease_acquire('x', '400 days')", "22023"),
    ("SELECT rowversion.lease_acquire('x', '1 s', '-1 ms')", "22023"),
    ("SELECT rowversion.lease_renew('x', 1, '0 s')", "22023"),
    ("SELECT rowversion.lease_renew('x', 1, '2 years')", "22023"),
]


@pytest.mark.parametrize("statement, expected", BAD_INPUT, ids=[s for s, _ in BAD_INPUT])
def test_bad_input(admin, statement, expected):
    assert sqlstate(lambda: admin.execute(statement)) == expected


def test_bad_ttl_on_a_held_lease_leaves_it_alone(admin):
    name = unique("bad-ttl")
    token = acquire(admin, name, "30 s")
    for ttl in ["0 s", "-5 min", "2 years"]:
        assert sqlstate(lambda: renew(admin, name, token, ttl)) == "22023"
    check(admin, name, token)
    # A ttl of exactly a year is allowed.
    assert renew(admin, name, token, "1 year") is True
    assert release(admin, name, token) is True


def test_unknown_names_and_wrong_tokens(admin):
    unknown = unique("unknown")
    assert renew(admin, unknown, 1, "1 s") is False
    assert release(admin, unknown, 1) is False
    assert sqlstate(lambda: check(admin, unknown, 1)) == RV001
    assert admin.execute("SELECT rowversion.lease_break(%s)", (unknown,)).fetchone()[0] is False

    name = unique("wrong-token")
    token = acquire(admin, name, "30 s")
    for wrong in [token - 1, token + 1, 0, -1]:
        assert renew(admin, name, wrong, "1 s") is False
        assert release(admin, name, wrong) is False
        assert sqlstate(lambda: check(admin, name, wrong)) == RV001
    check(admin, name, token)
    assert admin.execute("SELECT rowversion.lease_break(%s)", (name,)).fetchone()[0] is True
    assert sqlstate(lambda: check(admin, name, token)) == RV001
    assert release(admin, name, token) is False
    assert admin.execute("SELECT rowversion.lease_break(%s)", (name,)).fetchone()[0] is False


LEASE_FUNCTIONS = ["lease_acquire(text, interval, interval, text)", "lease_renew(text, bigint, interval)",
                   "lease_release(text, bigint)", "lease_check(text, bigint)", "lease_break(text)"]


@pytest.fixture
def two_roles(admin):
    """Two ordinary login roles that may call the lease functions (the test server trusts local
    connections)."""
    roles = ["lease_role_a", "lease_role_b"]
    for role in roles:
        if admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is None:
            admin.execute(f"CREATE ROLE {role} LOGIN")
        for function in LEASE_FUNCTIONS:
            admin.execute(f"GRANT EXECUTE ON FUNCTION rowversion.{function} TO {role}")
        admin.execute(f"GRANT SELECT ON rowversion.leases TO {role}")
    yield roles
    for role in roles:
        admin.execute(f"DROP OWNED BY {role}")
        admin.execute(f"DROP ROLE {role}")


def test_another_roles_lease_is_off_limits(admin, dsn, two_roles):
    role_a, role_b = two_roles
    name = unique("role")
    with connect(dsn, user=role_a) as a, connect(dsn, user=role_b) as b:
        token = acquire(a, name, "60 s")
        assert admin.execute("SELECT role FROM rowversion.leases WHERE name = %s", (name,)).fetchone()[0] == role_a
        assert sqlstate(lambda: renew(b, name, token, "1 s")) == "42501"
        assert sqlstate(lambda: release(b, name, token)) == "42501"
        assert sqlstate(lambda: check(b, name, token)) == "42501"
        assert sqlstate(lambda: b.execute("SELECT rowversion.lease_break(%s)", (name,))) == "42501"
        assert acquire(b, name, "1 s") is None  # still held: acquiring is open to all, but it waits
        check(a, name, token)
        assert release(a, name, token) is True
