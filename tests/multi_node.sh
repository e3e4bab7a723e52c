#!/usr/bin/env bash
# Two nodes that replicate to each other (native logical replication, origin = none, Postgres
# 16+): with rowversion.enable(..., multi_node => true), two writes of the same row from the
# same version on different nodes end with the same row on both nodes, and the losing image
# recorded on both; without it the same writes leave the nodes silently swapped.
# Usage: tests/multi_node.sh NODE_A_DIR NODE_A_PORT NODE_B_DIR NODE_B_PORT [SETTING...]
set -euo pipefail
a=$1 a_port=$2 b=$3 b_port=$4
shift 4
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
major=$("$PG_BIN/pg_config" --version | sed 's/^PostgreSQL \([0-9]*\).*/\1/')
if [ "$major" -lt 16 ]; then
    echo "skipped: Postgres $major has no subscriptions with origin = none (Postgres 16+)"
    exit 0
fi
db=rowversion_multi_node
on_a() { "$PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$a" -p "$a_port" -U postgres -d "$db" "$@"; }
on_b() { "$PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$b" -p "$b_port" -U postgres -d "$db" "$@"; }
fail() { echo "FAILED: $*"; exit 1; }
rows() {
    local extra="''"
    [ "$2" = accounts ] && extra="':' || coalesce(note, '') || ':' || md5(coalesce(doc, '')) || ':' || md5(rowversion_write)"
    "on_$1" -c "SELECT string_agg(id || ':' || balance || '@' || version || $extra, ',' ORDER BY id) FROM $2"
}
# The lost images as both nodes must hold them. (What each lost against can differ: the
# image a node held when the loser arrived, which the timing of the two streams decides.)
conflicts() {
    "on_$1" -c "SELECT coalesce(string_agg(format('%s v%s %s %s %s', rel, lost_version, lost_node, lost_written_at,
                    lost_row), E'\n' ORDER BY rel, lost_row::text, lost_written_at), '')
                FROM rowversion.replication_conflicts"
}
# Waits (a bounded number of polls) until each node has applied everything the other wrote so
# far: a marker row written on each node after the writes arrives on the other, and apply is
# in commit order.
marker=0
caught_up() {
    local tries=0
    marker=$((marker + 1))
    on_a -c "INSERT INTO markers VALUES ('a$marker')"
    on_b -c "INSERT INTO markers VALUES ('b$marker')"
    until [ "$(on_a -c "SELECT count(*) FROM markers WHERE name = 'b$marker'")" = 1 ] &&
        [ "$(on_b -c "SELECT count(*) FROM markers WHERE name = 'a$marker'")" = 1 ]; do
        tries=$((tries + 1))
        [ "$tries" -lt 600 ] || fail "the nodes did not catch up with each other (marker $marker)"
        sleep 0.05
    done
}
# Stops (enabled=false) or starts both subscriptions, waiting for the apply workers to be gone
# or running: writes made while they are stopped are concurrent for sure.
subscriptions() {
    local enabled=$1 node tries
    for node in a b; do
        "on_$node" -c "ALTER SUBSCRIPTION from_other $([ "$enabled" = true ] && echo ENABLE || echo DISABLE)"
    done
    for node in a b; do
        tries=0
        until [ "$("on_$node" -c "SELECT count(*) FROM pg_stat_subscription WHERE subname = 'from_other' AND pid IS NOT NULL")" = \
            "$([ "$enabled" = true ] && echo 1 || echo 0)" ]; do
            tries=$((tries + 1))
            [ "$tries" -lt 600 ] || fail "the apply worker on node $node did not $([ "$enabled" = true ] && echo start || echo stop)"
            sleep 0.05
        done
    done
}

for dir in "$a" "$b"; do
    stop_server "$dir"
    as_root rm -rf "$dir"
done
start_server "$a" "$a_port" wal_level=logical "$@"
start_server "$b" "$b_port" wal_level=logical "$@"
trap 'stop_server "$a"; stop_server "$b"' EXIT
for node in a b; do
    dir=$a port=$a_port
    [ "$node" = b ] && dir=$b port=$b_port
    "$PG_BIN/psql" -X -q -h "$dir" -p "$port" -U postgres -d postgres -c "CREATE DATABASE $db"
    "on_$node" -c "CREATE EXTENSION pg_rowversion;
        CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL, note text, doc text);
        ALTER TABLE accounts ALTER COLUMN doc SET STORAGE EXTERNAL;
        CREATE TABLE plain_accounts (id int PRIMARY KEY, balance bigint NOT NULL);
        CREATE TABLE markers (name text PRIMARY KEY);
        SELECT rowversion.enable('accounts', multi_node => true, ignore_columns => '{note}');
        SELECT rowversion.enable('plain_accounts');
        CREATE PUBLICATION to_other FOR TABLE accounts, plain_accounts, markers" >/dev/null
done
on_a -c "CREATE SUBSCRIPTION from_other CONNECTION 'host=$b port=$b_port user=postgres dbname=$db'
         PUBLICATION to_other WITH (origin = none, copy_data = false)"
on_b -c "CREATE SUBSCRIPTION from_other CONNECTION 'host=$a port=$a_port user=postgres dbname=$db'
         PUBLICATION to_other WITH (origin = none, copy_data = false)"
[ "$(on_a -c "SELECT multi_node FROM rowversion.tables WHERE rel = 'accounts'::regclass")" = t ] ||
    fail "rowversion.tables does not say accounts is multi_node"

# The rows are written once, on node A, and reach B with their lineage.
on_a -c "INSERT INTO accounts SELECT g, 100 FROM generate_series(1, 4) g" \
     -c "INSERT INTO plain_accounts SELECT g, 100 FROM generate_series(1, 4) g"
caught_up
[ "$(rows a accounts)" = "$(rows b accounts)" ] || fail "the first rows differ: A $(rows a accounts), B $(rows b accounts)"

# Writes that do not conflict replicate as before, both ways, without a record.
on_a -c "UPDATE accounts SET balance = balance + 1 WHERE id = 1"
caught_up
on_b -c "UPDATE accounts SET balance = balance + 1, version = 2 WHERE id = 1"
caught_up
[ "$(rows a accounts)" = "$(rows b accounts)" ] || fail "sequential writes diverged: A $(rows a accounts), B $(rows b accounts)"
[ "$(rows a accounts | cut -d, -f1 | cut -d: -f1-2)" = "1:102@3" ] || fail "sequential writes were not both applied: $(rows a accounts)"
[ -z "$(conflicts a)$(conflicts b)" ] || fail "sequential writes were recorded as conflicts: $(conflicts a)"
# An UPDATE of an ignored column does not move the version, nor is it a conflict.
on_b -c "UPDATE accounts SET note = 'from b' WHERE id = 2"
caught_up
[ "$(on_a -c "SELECT note FROM accounts WHERE id = 2")" = "from b" ] || fail "an ignored column's update did not arrive"

# Rounds of conflicting writes: both nodes update every row from the same version while the
# subscriptions are stopped. In odd rounds node A writes twice (a higher version wins), in even
# rounds once each (equal versions: the later write wins; B writes after A).
rounds=6
expected=0
for round in $(seq 1 $rounds); do
    subscriptions false
    for id in 1 2 3 4; do
        version=$(on_a -c "SELECT version FROM accounts WHERE id = $id")
        on_a -c "UPDATE accounts SET balance = $((10000 * round + 1000 + id)), version = $version WHERE id = $id" \
             -c "UPDATE plain_accounts SET balance = $((10000 * round + 1000 + id)) WHERE id = $id"
        if [ $((round % 2)) = 1 ]; then on_a -c "UPDATE accounts SET balance = balance + 500 WHERE id = $id"; fi
        on_b -c "UPDATE accounts SET balance = $((10000 * round + 2000 + id)), version = $version WHERE id = $id" \
             -c "UPDATE plain_accounts SET balance = $((10000 * round + 2000 + id)) WHERE id = $id"
    done
    subscriptions true
    caught_up
    [ "$(rows a accounts)" = "$(rows b accounts)" ] ||
        fail "round $round: multi_node rows diverged: A $(rows a accounts), B $(rows b accounts)"
    expected=$((expected + 4))
    for node in a b; do
        winner=$(( 10000 * round + (round % 2 == 1 ? 1500 : 2000) ))
        [ "$("on_$node" -c "SELECT count(*) FROM accounts WHERE balance - id = $winner")" = 4 ] ||
            fail "round $round: node $node did not keep the expected writes: $(rows "$node" accounts)"
        [ "$("on_$node" -c "SELECT count(*) FROM rowversion.replication_conflicts")" = "$expected" ] ||
            fail "round $round: node $node recorded $("on_$node" -c "SELECT count(*) FROM rowversion.replication_conflicts") lost images, not $expected"
    done
    # The lost images are the other node's writes of this round.
    loser=$(( 10000 * round + (round % 2 == 1 ? 2000 : 1000) ))
    [ "$(on_a -c "SELECT count(*) FROM rowversion.replication_conflicts
                  WHERE (lost_row ->> 'balance')::bigint - (lost_row ->> 'id')::int = $loser")" = 4 ] ||
        fail "round $round: the lost images are not the losing node's writes: $(conflicts a)"
    [ "$(conflicts a)" = "$(conflicts b)" ] || fail "round $round: the nodes recorded different conflicts:
A: $(conflicts a)
B: $(conflicts b)"
    # Without multi_node: each node applied the other's row, silently.
    [ "$(rows a plain_accounts)" != "$(rows b plain_accounts)" ] ||
        fail "round $round: the plain table did not diverge, so this test shows nothing"
    if [ "$(on_a -c "SELECT min(balance - id) FROM plain_accounts")" != $((10000 * round + 2000)) ] ||
        [ "$(on_b -c "SELECT min(balance - id) FROM plain_accounts")" != $((10000 * round + 1000)) ]; then
        fail "round $round: the plain table did not swap: A $(rows a plain_accounts), B $(rows b plain_accounts)"
    fi
    on_a -c "UPDATE plain_accounts SET balance = 100" >/dev/null
    caught_up
done
echo "$rounds rounds of conflicting writes: the nodes converged, $expected lost images recorded alike on both; the plain table swapped every round"

# Crossing writes of other columns. Node A rewrites a value Postgres keeps out of line (TOAST;
# replication sends an unchanged one as "unchanged", filled in from the receiving node's own
# row), node B changes the balance and wins: both must end with B's whole row. And both change
# an ignored column, which leaves the version: the later write wins on both.
on_a -c "UPDATE accounts SET doc = repeat(md5('first'), 200) WHERE id = 3"
caught_up
subscriptions false
version=$(on_a -c "SELECT version FROM accounts WHERE id = 3")
on_a -c "UPDATE accounts SET doc = repeat(md5('from a'), 200), version = $version WHERE id = 3" \
     -c "UPDATE accounts SET note = 'from a' WHERE id = 4"
on_b -c "UPDATE accounts SET balance = balance + 7, version = $version WHERE id = 3" \
     -c "UPDATE accounts SET note = 'from b' WHERE id = 4"
subscriptions true
caught_up
[ "$(rows a accounts)" = "$(rows b accounts)" ] ||
    fail "crossing writes of other columns diverged: A $(rows a accounts), B $(rows b accounts)"
[ "$(on_a -c "SELECT (SELECT doc = repeat(md5('first'), 200) FROM accounts WHERE id = 3)
                  AND (SELECT note = 'from b' FROM accounts WHERE id = 4)")" = t ] ||
    fail "the later writes did not win: $(rows a accounts)"
[ "$(conflicts a)" = "$(conflicts b)" ] || fail "crossing writes of other columns: different records"
expected=$((expected + 2))
echo "crossing writes of an out-of-line value and of an ignored column: the same rows on both nodes"

# Free running: a client per node updates the same rows as fast as it can, both subscriptions
# on. Whatever the interleaving, the nodes end with the same rows and the same records.
script=$(mktemp)
trap 'rm -f "$script"; stop_server "$a"; stop_server "$b"' EXIT
echo "\\set id random(1, 4)
UPDATE accounts SET balance = balance + 1 WHERE id = :id;" >"$script"
chmod 644 "$script"
"$PG_BIN/pgbench" -n -h "$a" -p "$a_port" -U postgres -f "$script" -t 300 "$db" >/dev/null &
client_a=$!
"$PG_BIN/pgbench" -n -h "$b" -p "$b_port" -U postgres -f "$script" -t 300 "$db" >/dev/null
wait "$client_a"
caught_up
[ "$(rows a accounts)" = "$(rows b accounts)" ] ||
    fail "free-running writers diverged: A $(rows a accounts), B $(rows b accounts)"
[ "$(conflicts a)" = "$(conflicts b)" ] || fail "free-running writers: the nodes recorded different conflicts (< only on A, > only on B):
$(diff <(conflicts a) <(conflicts b) | grep '^[<>]')"
recorded=$(on_a -c "SELECT count(*) FROM rowversion.replication_conflicts")
[ "$recorded" -gt "$expected" ] || fail "free-running writers: no conflict recorded, so this part shows nothing"
echo "free-running writers (300 updates per node): converged, $((recorded - expected)) more lost images recorded alike on both"
# With the library preloaded, rowversion.conflict_stats counts every decision (a record that a
# later image superseded was a decision too).
if [ "$(on_a -c "SHOW shared_preload_libraries")" = pg_rowversion ]; then
    for node in a b; do
        counted=$("on_$node" -c "SELECT replication_conflicts FROM rowversion.conflict_stats WHERE rel = 'accounts'::regclass")
        recorded=$("on_$node" -c "SELECT count(*) FROM rowversion.replication_conflicts")
        if [ "${counted:-0}" -lt "$recorded" ] || [ "$recorded" -eq 0 ]; then
            fail "node $node counted ${counted:-no} replication conflicts for $recorded records"
        fi
    done
    echo "conflict_stats counted the decisions on both nodes"
fi
