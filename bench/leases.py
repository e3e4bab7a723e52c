#!/usr/bin/env python3
"""Leases: rowversion.lease_acquire + lease_release against Redis SET NX PX + a compare-and-delete
script, side by side in one run.

Each of --clients processes (8 by default) repeats acquire-then-release on a lease name of its
own (uncontended) for --seconds, on one connection, one round trip per call:

  Postgres  SELECT rowversion.lease_acquire(name, '30 s')      (autocommit; a fencing token)
            SELECT rowversion.lease_release(name, token)
  Redis     SET name value NX PX 30000                         (a unique value per acquire)
            EVALSHA <if GET key == value then DEL key> 1 name value

Both clients are Python (psycopg 3, redis-py), so the client cost is alike. The two systems
alternate round by round (--rounds) and the table shows the median; Redis runs with the
transport Postgres uses (a Unix socket when --host is a directory, else TCP). The script starts
its own redis-server (--save '' --appendonly no: nothing persisted) and stops it; Postgres must
be running with pg_rowversion installed; --dbname is dropped and created afresh. Its durability settings are printed:
with synchronous_commit on, each lease_acquire waits for a WAL flush, which Redis never does
(--async-commit sets synchronous_commit = off in the benchmark sessions).

Usage, with the client venv (psycopg and redis from tests/clients/requirements.txt):
  target/clients-venv/bin/python bench/leases.py --host /tmp/pg_rowversion-test/pg15/server --port 25316
"""

import argparse
import multiprocessing
import os
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid

import psycopg
import redis

RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


def postgres_client(args, client, run, ready, start, result):
    name = f"bench-leases-{run}-{client}"
    connection = {"host": args.host, "port": args.port, "user": args.user, "dbname": args.dbname}
    with psycopg.connect(**connection, autocommit=True) as conn:
        if args.async_commit:
            conn.execute("SET synchronous_commit = off")
        acquire = "SELECT rowversion.lease_acquire(%s, '30 s')"
        release = "SELECT rowversion.lease_release(%s, %s)"
        # Warm up (psycopg prepares a statement from its fifth execution on).
        for _ in range(10):
            token = conn.execute(acquire, (name,)).fetchone()[0]
            conn.execute(release, (name, token))
        pairs = 0
        ready.put(client)
        start.wait()
        deadline = time.monotonic() + args.seconds
        while time.monotonic() < deadline:
            token = conn.execute(acquire, (name,)).fetchone()[0]
            if token is None or conn.execute(release, (name, token)).fetchone()[0] is not True:
                raise RuntimeError(f"lease {name}: acquire gave {token} or the release failed")
            pairs += 1
        result.put(pairs)


def redis_client(args, client, run, ready, start, result, connection):
    name = f"bench-leases-{run}-{client}"
    r = redis.Redis(**connection)
    sha = r.script_load(RELEASE_SCRIPT)
    prefix = f"{client}:{uuid.uuid4().hex}:"
    i = 0
    for _ in range(10):
        i += 1
        r.set(name, prefix + str(i), nx=True, px=30000)
        r.evalsha(sha, 1, name, prefix + str(i))
    pairs = 0
    ready.put(client)
    start.wait()
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        i += 1
        value = prefix + str(i)
        if not r.set(name, value, nx=True, px=30000) or r.evalsha(sha, 1, name, value) != 1:
            raise RuntimeError(f"key {name}: SET NX or the release failed")
        pairs += 1
    r.close()
    result.put(pairs)


def measure(args, target, extra=()):
    """Pairs per second of --clients processes running target together."""
    ctx = multiprocessing.get_context("spawn")
    ready, start, result = ctx.Queue(), ctx.Event(), ctx.Queue()
    run = uuid.uuid4().hex[:8]
    processes = [ctx.Process(target=target, args=(args, client, run, ready, start, result, *extra))
                 for client in range(args.clients)]
    for p in processes:
        p.start()
    for _ in processes:  # every client connected and warmed up
        ready.get(timeout=60)
    start.set()
    total = sum(result.get(timeout=args.seconds + 60) for _ in processes)
    for p in processes:
        p.join(30)
        if p.exitcode != 0:
            raise SystemExit(f"a benchmark client failed (exit code {p.exitcode})")
    return total / args.seconds


def start_redis(args, directory):
    server = shutil.which("redis-server")
    if server is None:
        raise SystemExit("redis-server not found (Debian package redis-server)")
    socket = os.path.join(directory, "redis.sock")
    process = subprocess.Popen(
        [server, "--port", str(args.redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--unixsocket", socket, "--unixsocketperm", "700", "--dir", directory, "--daemonize", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    connection = {"unix_socket_path": socket} if args.host.startswith("/") else \
        {"host": "127.0.0.1", "port": args.redis_port}
    deadline = time.monotonic() + 10
    while True:
        try:
            redis.Redis(**connection).ping()
            return process, connection
        except redis.ConnectionError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise SystemExit(f"redis-server did not start on port {args.redis_port}")
            time.sleep(0.05)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default=os.environ.get("PGHOST", "/var/run/postgresql"),
                        help="socket directory (or address) of the Postgres server")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PGPORT", 5432)))
    parser.add_argument("--user", default=os.environ.get("PGUSER", "postgres"))
    parser.add_argument("--dbname", default="rowversion_bench_leases", help="dropped and created afresh")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10, help="length of one measurement")
    parser.add_argument("--rounds", type=int, default=3, help="measurements of each system, alternating")
    parser.add_argument("--redis-port", type=int, default=6390)
    parser.add_argument("--async-commit", action="store_true", help="synchronous_commit = off for Postgres")
    args = parser.parse_args()

    with psycopg.connect(host=args.host, port=args.port, user=args.user, dbname="postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{args.dbname}"')
        conn.execute(f'CREATE DATABASE "{args.dbname}"')
    with psycopg.connect(host=args.host, port=args.port, user=args.user, dbname=args.dbname, autocommit=True) as conn:
        conn.execute("SET client_min_messages = warning")
        conn.execute("CREATE EXTENSION pg_rowversion")
        settings = dict(conn.execute(
            "SELECT name, setting FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit', 'server_version')"
        ).fetchall())
    if args.async_commit:
        settings["synchronous_commit"] = "off (sessions)"

    with tempfile.TemporaryDirectory(prefix="bench-leases-") as directory:
        process, connection = start_redis(args, directory)
        try:
            redis_version = redis.Redis(**connection).info("server")["redis_version"]
            rates = {"postgres": [], "redis": []}
            for round_ in range(args.rounds):
                rates["postgres"].append(measure(args, postgres_client))
                rates["redis"].append(measure(args, redis_client, (connection,)))
                print(f"round {round_ + 1}/{args.rounds}: Postgres {rates['postgres'][-1]:,.0f}/s, "
                      f"Redis {rates['redis'][-1]:,.0f}/s", flush=True)
        finally:
            process.terminate()
            process.wait(10)

    transport = "Unix socket" if "unix_socket_path" in connection else "TCP loopback"
    print()
    print(f"acquire+release pairs per second: {args.clients} client processes, each its own lease, "
          f"{args.seconds:g} s x {args.rounds} rounds (median), {transport}, {os.cpu_count()} cores")
    print(f"Postgres {settings['server_version']} (fsync={settings['fsync']}, "
          f"synchronous_commit={settings['synchronous_commit']}); Redis {redis_version} (no persistence)")
    print()
    pg, rd = statistics.median(rates["postgres"]), statistics.median(rates["redis"])
    rows = [("Postgres lease_acquire + lease_release", pg), ("Redis SET NX PX + EVALSHA compare-and-delete", rd)]
    width = max(len(label) for label, _ in rows)
    print(f"{'':{width}}  {'pairs/s':>10}  {'ms/pair/client':>14}")
    for label, rate in rows:
        print(f"{label:{width}}  {rate:>10,.0f}  {args.clients * 1000 / rate:>14.3f}")
    print()
    print(f"Postgres/Redis: {pg / rd:.2f}")


if __name__ == "__main__":
    main()
