#!/usr/bin/env python3
"""What a version trigger costs, measured side by side in one run.

Every variant runs on the same table shape (id int PRIMARY KEY, balance bigint, version bigint,
modified timestamptz), interleaved round by round so that drift in the machine hits them all
alike; the table shows medians and ratios. Three measurements:

1. per-row trigger time: EXPLAIN (ANALYZE) of an UPDATE of every row, trigger time / calls,
   for the built-in C trigger suppress_redundant_updates_trigger (returns the row as it is:
   the floor of any trigger), contrib's C trigger moddatetime, a hand-written PL/pgSQL check-and-increment trigger,
   and pg_rowversion in lenient mode (version not in SET) and strict mode (version stated);
2. a whole-table UPDATE ... SET balance = balance + 1 on a versioned table, against the same
   statement on a table without trigger that increments the version in its SET list, and on
   one with the built-in no-op trigger: the part of the cost that any BEFORE ROW trigger pays
   (Postgres locks each row before calling BEFORE UPDATE triggers, and copies the tuples);
3. pgbench (prepared statements), 8 clients: a single-row checked update through the trigger against the
   hand-written UPDATE ... SET version = version + 1 WHERE id = :id AND version = :v, without
   and with the built-in no-op trigger;
4. pgbench on versioned tables: SELECT rowversion.update(...) against the hand-written
   UPDATE ... SET balance = :b, version = :v WHERE id = :id AND version = :v;
5. rowversion.row_locks() against contrib's pgrowlocks on the whole-table UPDATE's table,
   while another session holds one row FOR UPDATE.

It prints figures and never fails on timing. Usage: see bench/run.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import tempfile

PLPGSQL_TRIGGER = """
CREATE OR REPLACE FUNCTION bench_plpgsql_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.version = OLD.version THEN
        NEW.version := OLD.version + 1;
    ELSIF NEW.version IS DISTINCT FROM OLD.version + 1 THEN
        RAISE EXCEPTION 'row version conflict' USING ERRCODE = '40001';
    END IF;
    RETURN NEW;
END $$;
"""

SHAPE = "(id int PRIMARY KEY, balance bigint NOT NULL, version bigint NOT NULL DEFAULT 1, modified timestamptz NOT NULL DEFAULT now())"

# name -> (table, trigger DDL or None, the UPDATE measured)
PER_ROW = {
    "built-in no-op C trigger (floor)": (
        "bench_noop",
        "CREATE TRIGGER noop BEFORE UPDATE ON bench_noop FOR EACH ROW EXECUTE FUNCTION suppress_redundant_updates_trigger()",
        "UPDATE bench_noop SET balance = balance + 1",
    ),
    "moddatetime (C, contrib)": (
        "bench_moddatetime",
        "CREATE TRIGGER stamp BEFORE UPDATE ON bench_moddatetime FOR EACH ROW EXECUTE FUNCTION moddatetime(modified)",
        "UPDATE bench_moddatetime SET balance = balance + 1",
    ),
    "PL/pgSQL check-and-increment": (
        "bench_plpgsql",
        "CREATE TRIGGER version BEFORE UPDATE ON bench_plpgsql FOR EACH ROW EXECUTE FUNCTION bench_plpgsql_version()",
        "UPDATE bench_plpgsql SET balance = balance + 1",
    ),
    "pg_rowversion lenient": (
        "bench_lenient",
        "SELECT rowversion.enable('bench_lenient')",
        "UPDATE bench_lenient SET balance = balance + 1",
    ),
    "pg_rowversion strict, version stated": (
        "bench_strict",
        "SELECT rowversion.enable('bench_strict', mode => 'strict')",
        "UPDATE bench_strict SET balance = balance + 1, version = version",
    ),
}

WHOLE_TABLE = {
    "no trigger, SET version = version + 1": (
        "bench_big_plain",
        None,
        "UPDATE bench_big_plain SET balance = balance + 1, version = version + 1",
    ),
    "built-in no-op C trigger (floor)": (
        "bench_big_noop",
        "CREATE TRIGGER noop BEFORE UPDATE ON bench_big_noop FOR EACH ROW EXECUTE FUNCTION suppress_redundant_updates_trigger()",
        "UPDATE bench_big_noop SET balance = balance + 1, version = version + 1",
    ),
    "pg_rowversion lenient, trigger": (
        "bench_big_lenient",
        "SELECT rowversion.enable('bench_big_lenient')",
        "UPDATE bench_big_lenient SET balance = balance + 1",
    ),
    "pg_rowversion merge, trigger": (
        "bench_big_merge",
        "SELECT rowversion.enable('bench_big_merge', conflicts => 'merge')",
        "UPDATE bench_big_merge SET balance = balance + 1",
    ),
    "pg_rowversion lenient, fast path": (
        "bench_big_fast",
        "SELECT rowversion.enable('bench_big_fast')",
        "UPDATE bench_big_fast SET balance = balance + 1",
    ),
    "pg_rowversion lenient, fast path, postgrest mapping": (
        "bench_big_fast_http",
        "SELECT rowversion.enable('bench_big_fast_http')",
        "UPDATE bench_big_fast_http SET balance = balance + 1",
    ),
}

PGBENCH = {
    "hand-written WHERE id AND version": (
        "bench_pgb_plain",
        None,
        "UPDATE bench_pgb_plain SET balance = balance + 1, version = version + 1 WHERE id = :id AND version = :v;",
    ),
    "hand-written + built-in no-op trigger (floor)": (
        "bench_pgb_noop",
        "CREATE TRIGGER noop BEFORE UPDATE ON bench_pgb_noop FOR EACH ROW EXECUTE FUNCTION suppress_redundant_updates_trigger()",
        "UPDATE bench_pgb_noop SET balance = balance + 1, version = version + 1 WHERE id = :id AND version = :v;",
    ),
    "pg_rowversion trigger, SET version = :v": (
        "bench_pgb_checked",
        "SELECT rowversion.enable('bench_pgb_checked')",
        "UPDATE bench_pgb_checked SET balance = balance + 1, version = :v WHERE id = :id;",
    ),
    "pg_rowversion merge, SET version = :v": (
        "bench_pgb_merge",
        "SELECT rowversion.enable('bench_pgb_merge', conflicts => 'merge')",
        "UPDATE bench_pgb_merge SET balance = balance + 1, version = :v WHERE id = :id;",
    ),
    "pg_rowversion fast path, SET version = :v": (
        "bench_pgb_fast",
        "SELECT rowversion.enable('bench_pgb_fast')",
        "UPDATE bench_pgb_fast SET balance = balance + 1, version = :v WHERE id = :id;",
    ),
    # The same two without the conflict counters (pg_rowversion.count_conflicts = off): what
    # counting costs.
    "pg_rowversion trigger, SET version = :v, not counted": (
        "bench_pgb_checked_nc",
        "SELECT rowversion.enable('bench_pgb_checked_nc')",
        "UPDATE bench_pgb_checked_nc SET balance = balance + 1, version = :v WHERE id = :id;",
    ),
    "pg_rowversion fast path, SET version = :v, not counted": (
        "bench_pgb_fast_nc",
        "SELECT rowversion.enable('bench_pgb_fast_nc')",
        "UPDATE bench_pgb_fast_nc SET balance = balance + 1, version = :v WHERE id = :id;",
    ),
}


CHECKED = {
    "hand-written UPDATE ... WHERE id AND version": (
        "bench_chk_plain",
        "SELECT rowversion.enable('bench_chk_plain')",
        "UPDATE bench_chk_plain SET balance = :b, version = :v WHERE id = :id AND version = :v;",
    ),
    "rowversion.update()": (
        "bench_chk_function",
        "SELECT rowversion.enable('bench_chk_function')",
        "SELECT rowversion.update('bench_chk_function', jsonb_build_object('id', :id::int), :v, jsonb_build_object('balance', :b::bigint));",
    ),
}


def session_options(name):
    """libpq options for a variant's sessions: the trigger path turns the planner fast path
    off; the fast path has the library loaded before the session plans anything (as
    shared_preload_libraries, with which bench/run starts the server, does), since a session
    that has not loaded it plans for the trigger; "not counted" turns the conflict counters
    off. Every other variant runs with the defaults."""
    if "not counted" in name:
        return session_options(name.replace(", not counted", "")) + " -c pg_rowversion.count_conflicts=off"
    if "postgrest mapping" in name:
        # As behind PostgREST: every row checks for an If-Match and sends its ETag.
        return "-c session_preload_libraries=pg_rowversion -c pg_rowversion.error_mapping=postgrest"
    if "fast path" in name:
        return "-c session_preload_libraries=pg_rowversion"
    if "pg_rowversion" in name:
        return "-c pg_rowversion.fast_path=off"
    return ""


class Server:
    def __init__(self, args):
        self.args = args
        self.base = ["-X", "-h", args.host, "-p", str(args.port), "-U", "postgres"]

    def sql(self, *commands, db=None, options=""):
        """Runs psql commands in one session (with libpq `options`); prints what they print."""
        out = subprocess.run(
            [os.path.join(self.args.bindir, "psql"), *self.base, "-d", db or self.args.dbname,
             "-At", "-q", "-v", "ON_ERROR_STOP=1", *(arg for c in commands for arg in ("-c", c))],
            check=True, capture_output=True, text=True, env={**os.environ, "PGOPTIONS": options})
        return out.stdout.strip()

    def explain(self, statement, timing=True, warm=False, options=""):
        """EXPLAIN ANALYZE in a new session; with warm, the statement runs once before in the
        same session, so that loading libraries and catalog caches is not measured."""
        explain = f"EXPLAIN (ANALYZE, TIMING {'ON' if timing else 'OFF'}, FORMAT JSON) {statement}"
        commands = ("\\o /dev/null", statement, "\\o", explain) if warm else (explain,)
        return json.loads(self.sql(*commands, options=options))[0]


def create_tables(server, variants, rows):
    for table, trigger, _ in variants.values():
        server.sql(f"DROP TABLE IF EXISTS {table}")
        server.sql(f"CREATE TABLE {table} {SHAPE}")
        server.sql(f"INSERT INTO {table} (id, balance) SELECT g, 0 FROM generate_series(1, {rows}) g")
        if trigger:
            server.sql(trigger)
        if trigger and "conflicts => 'merge'" in trigger:
            # Every row with its record (written by its first UPDATE in merge mode), as in a
            # table that has been in merge mode for a while.
            server.sql(f"UPDATE {table} SET balance = balance", f"VACUUM FULL {table}")
        server.sql(f"VACUUM (ANALYZE) {table}")


def interleaved_medians(names, rounds, measure):
    """Median of `measure(name)` per variant, the variants in a different order each round so
    that none always runs first and drift in the machine hits them all alike."""
    values = {name: [] for name in names}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            values[name].append(measure(name))
    return {name: statistics.median(v) for name, v in values.items()}


def per_row_trigger_time(server, name):
    """µs per row spent in the trigger, from EXPLAIN ANALYZE's trigger instrumentation."""
    table, _, update = PER_ROW[name]
    server.sql(f"VACUUM {table}")
    trigger = server.explain(update, options=session_options(name))["Triggers"][0]
    return trigger["Time"] * 1000.0 / trigger["Calls"]


def whole_table_time(server, name):
    """Execution time in ms, without per-node timing."""
    table, _, update = WHOLE_TABLE[name]
    server.sql(f"VACUUM {table}", "CHECKPOINT")
    return server.explain(update, timing=False, options=session_options(name))["Execution Time"]


def whole_table_wal(server, name):
    """WAL bytes the statement writes."""
    table, _, update = WHOLE_TABLE[name]
    server.sql(f"VACUUM {table}", "CHECKPOINT")
    before, after = server.sql(
        "SELECT pg_current_wal_insert_lsn()", update, "SELECT pg_current_wal_insert_lsn()",
        options=session_options(name)).split()
    return float(server.sql(f"SELECT pg_wal_lsn_diff('{after}', '{before}')"))


def pgbench_tps(server, variants, rows, clients, seconds, rounds):
    """Median TPS of each variant; a variant's script reads the row's version, then writes."""
    with tempfile.TemporaryDirectory() as scripts:
        files = {}
        for name, (table, _, write) in variants.items():
            files[name] = os.path.join(scripts, f"{table}.sql")
            with open(files[name], "w") as f:
                f.write(f"\\set id random(1, {rows})\n"
                        f"\\set b random(1, 1000000)\n"
                        f"SELECT version AS v FROM {table} WHERE id = :id \\gset\n"
                        f"{write}\n")

        def run(name):
            server.sql(f"VACUUM {variants[name][0]}")
            out = subprocess.run(
                [os.path.join(server.args.bindir, "pgbench"), *server.base[1:], "-n",
                 "-M", "prepared", "-c", str(clients), "-j", str(min(clients, 2)),
                 "-T", str(seconds), "--max-tries=10", "-f", files[name], server.args.dbname],
                check=True, capture_output=True, text=True,
                env={**os.environ, "PGOPTIONS": session_options(name)}).stdout
            return float(re.search(r"tps = ([0-9.]+)", out).group(1))

        return interleaved_medians(list(variants), rounds, run)


def row_lock_times(server, table, rows, rounds):
    """Who holds a lock on one row: pgrowlocks (reads every row) against row_locks (reads the
    row found through the primary key), while another session holds that row FOR UPDATE."""
    target = rows // 2
    holder = subprocess.Popen(
        [os.path.join(server.args.bindir, "psql"), *server.base, "-d", server.args.dbname, "-q"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    holder.stdin.write(f"BEGIN;\nSELECT 1 FROM {table} WHERE id = {target} FOR UPDATE;\n")
    holder.stdin.flush()
    row_locks = f"SELECT * FROM rowversion.row_locks('{table}', jsonb_build_object('id', {target}))"
    while server.sql(f"SELECT count(*) FROM ({row_locks}) l") != "1":
        pass  # until the other session holds the lock
    variants = {
        "pgrowlocks (contrib, reads every row)": f"SELECT * FROM pgrowlocks('{table}')",
        "rowversion.row_locks (primary key)": row_locks,
        "for reference: SELECT the row by primary key": f"SELECT * FROM {table} WHERE id = {target}",
    }
    def measure(variant):
        name, state = variant.rsplit(", ", 1)
        return server.explain(variants[name], timing=False, warm=state == "warm session")["Execution Time"]

    times = interleaved_medians(
        [f"{name}, {state}" for name in variants for state in ("new session", "warm session")], rounds, measure)
    holder.stdin.write("COMMIT;\n")
    holder.stdin.close()
    holder.wait()
    return times


def print_table(title, figures, unit, baseline, fmt):
    print(f"\n{title}")
    width = max(len(name) for name in figures)
    for name, value in figures.items():
        print(f"  {name:<{width}}  {fmt.format(value):>10} {unit:<5} {value / figures[baseline]:6.2f}x")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", required=True, help="socket directory of the server")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bindir", default="/usr/lib/postgresql/15/bin")
    parser.add_argument("--dbname", default="rowversion_bench")
    parser.add_argument("--rows", type=int, default=100_000, help="rows for the per-row and pgbench tables")
    parser.add_argument("--big-rows", type=int, default=1_000_000, help="rows for the whole-table UPDATE")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=int, default=10, help="length of one pgbench run")
    args = parser.parse_args()

    server = Server(args)
    server.sql(f"DROP DATABASE IF EXISTS {args.dbname}", db="postgres")
    server.sql(f"CREATE DATABASE {args.dbname}", db="postgres")
    server.sql("CREATE EXTENSION pg_rowversion")
    server.sql("CREATE EXTENSION moddatetime")
    server.sql("CREATE EXTENSION pgrowlocks")
    server.sql(PLPGSQL_TRIGGER)
    create_tables(server, PER_ROW, args.rows)
    create_tables(server, WHOLE_TABLE, args.big_rows)
    create_tables(server, PGBENCH, args.rows)
    create_tables(server, CHECKED, args.rows)
    print(f"Postgres: {server.sql('SHOW server_version')}; "
          f"rounds: {args.rounds}, interleaved; medians shown")

    per_row = interleaved_medians(list(PER_ROW), args.rounds, lambda name: per_row_trigger_time(server, name))
    print_table(f"Per-row trigger time, EXPLAIN ANALYZE of an UPDATE of {args.rows} rows",
                per_row, "µs", "moddatetime (C, contrib)", "{:.3f}")
    whole = interleaved_medians(list(WHOLE_TABLE), args.rounds, lambda name: whole_table_time(server, name))
    print_table(f"UPDATE ... SET balance = balance + 1 of {args.big_rows} rows, execution time",
                whole, "ms", "no trigger, SET version = version + 1", "{:.0f}")
    wal = interleaved_medians(list(WHOLE_TABLE), args.rounds, lambda name: whole_table_wal(server, name))
    print_table("The same UPDATE, WAL written", {k: v / 1e6 for k, v in wal.items()}, "MB",
                "no trigger, SET version = version + 1", "{:.1f}")
    tps = pgbench_tps(server, PGBENCH, args.rows, args.clients, args.seconds, args.rounds)
    print_table(f"pgbench single-row checked update, {args.clients} clients, {args.seconds} s runs",
                tps, "tps", "hand-written WHERE id AND version", "{:.0f}")
    checked = pgbench_tps(server, CHECKED, args.rows, args.clients, args.seconds, args.rounds)
    print_table(f"pgbench, versioned table: function call against hand-written UPDATE, {args.clients} clients",
                checked, "tps", "hand-written UPDATE ... WHERE id AND version", "{:.0f}")

    locks = row_lock_times(server, "bench_big_plain", args.big_rows, args.rounds)
    print_table(f"Who holds one row of a {args.big_rows}-row table (another session holds it FOR UPDATE)",
                locks, "ms", "pgrowlocks (contrib, reads every row), warm session", "{:.3f}")

    print("\nTargets")
    plain = "no trigger, SET version = version + 1"
    checks = [
        ("per-row lenient <= moddatetime",
         per_row["pg_rowversion lenient"] / per_row["moddatetime (C, contrib)"], 1.0, "<="),
        ("whole-table UPDATE, fast path <= 1.02x",
         whole["pg_rowversion lenient, fast path"] / whole[plain], 1.02, "<="),
        ("WAL of that UPDATE, fast path <= 1.01x", wal["pg_rowversion lenient, fast path"] / wal[plain], 1.01, "<="),
        ("whole-table UPDATE, merge <= 1.10x reject",
         whole["pg_rowversion merge, trigger"] / whole["pg_rowversion lenient, trigger"], 1.10, "<="),
        ("WAL of that UPDATE, merge <= 1.05x reject",
         wal["pg_rowversion merge, trigger"] / wal["pg_rowversion lenient, trigger"], 1.05, "<="),
        ("pgbench, merge >= 0.95x reject (trigger)",
         tps["pg_rowversion merge, SET version = :v"] / tps["pg_rowversion trigger, SET version = :v"], 0.95, ">="),
        ("pgbench, counted >= 0.98x not (trigger)",
         tps["pg_rowversion trigger, SET version = :v"] / tps["pg_rowversion trigger, SET version = :v, not counted"],
         0.98, ">="),
        ("pgbench, counted >= 0.98x not (fast path)",
         tps["pg_rowversion fast path, SET version = :v"]
         / tps["pg_rowversion fast path, SET version = :v, not counted"], 0.98, ">="),
        ("pgbench, fast path >= 0.99x hand-written",
         tps["pg_rowversion fast path, SET version = :v"] / tps["hand-written WHERE id AND version"], 0.99, ">="),
        ("rowversion.update() tps >= 0.95x hand-written",
         checked["rowversion.update()"] / checked["hand-written UPDATE ... WHERE id AND version"], 0.95, ">="),
    ]
    for label, ratio, target, op in checks:
        met = ratio <= target if op == "<=" else ratio >= target
        print(f"  {label:<40} {ratio:5.2f}x  {'met' if met else 'NOT met'}")


if __name__ == "__main__":
    main()
