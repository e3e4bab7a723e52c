#!/usr/bin/env bash
# Citus: a coordinator and two workers on 127.0.0.1; versioned distributed, reference and
# schema-sharded tables, with and without pg_rowversion preloaded. Runs only where Citus is
# installed into the Postgres under test (no registry these machines reach has it; see
# docs/scaling-out.md for how it was built and run), and says it skipped otherwise.
# Usage: tests/citus.sh DIR BASE_PORT [SETTING...]  (ports BASE_PORT to BASE_PORT + 2; a
# shared_preload_libraries=pg_rowversion setting is run as 'citus,pg_rowversion')
set -euo pipefail
dir=$1 base=$2
shift 2
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
if [ ! -f "$("$PG_BIN/pg_config" --sharedir)/extension/citus.control" ]; then
    echo "skipped: Citus is not installed in this Postgres ($("$PG_BIN/pg_config" --sharedir)/extension/citus.control)"
    exit 0
fi
preload=citus settings=()
for setting in "$@"; do
    case $setting in
        shared_preload_libraries=pg_rowversion) preload=citus,pg_rowversion ;;
        *) settings+=("$setting") ;;
    esac
done
db=rowversion_citus
ports=("$base" "$((base + 1))" "$((base + 2))")
node_dir() { echo "$dir/node$1"; }
on() {
    local port=$1
    shift
    "$PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d "$db" "$@"
}
coordinator() { on "${ports[0]}" "$@"; }
fail() { echo "FAILED: $*"; exit 1; }
# The SQLSTATE and message of a statement on the coordinator, or 'ok'.
outcome() {
    local output
    if output=$(coordinator -v VERBOSITY=verbose -c "$1" 2>&1); then echo ok; else
        sed -n 's/^ERROR:  //p' <<<"$output" | head -1
    fi
}
expect() {
    local got
    got=$(outcome "$1")
    # shellcheck disable=SC2254 # the expected outcome is a pattern
    case $got in
        $2) ;;
        *) fail "$1: expected $2, got: $got" ;;
    esac
}
version_of() { coordinator -c "SELECT version FROM $1 WHERE id = $2"; }

for i in 0 1 2; do
    stop_server "$(node_dir $i)"
    as_root rm -rf "$(node_dir $i)"
done
trap 'for i in 0 1 2; do stop_server "$(node_dir $i)"; done' EXIT
for i in 0 1 2; do
    start_server "$(node_dir $i)" "${ports[$i]}" "listen_addresses='127.0.0.1'" "shared_preload_libraries='$preload'" \
        max_prepared_transactions=100 wal_level=logical "${settings[@]}"
    "$PG_BIN/psql" -X -q -h 127.0.0.1 -p "${ports[$i]}" -U postgres -d postgres -c "CREATE DATABASE $db"
    on "${ports[$i]}" -c "CREATE EXTENSION citus" >/dev/null
done
coordinator -c "CREATE EXTENSION pg_rowversion" \
    -c "SELECT citus_set_coordinator_host('127.0.0.1', ${ports[0]})" \
    -c "SELECT citus_add_node('127.0.0.1', ${ports[1]})" -c "SELECT citus_add_node('127.0.0.1', ${ports[2]})" >/dev/null
[ "$(on "${ports[1]}" -c "SELECT extversion FROM pg_extension WHERE extname = 'pg_rowversion'")" != "" ] ||
    fail "CREATE EXTENSION pg_rowversion did not reach the workers"
echo "Citus $(coordinator -c "SELECT extversion FROM pg_extension WHERE extname = 'citus'"), shared_preload_libraries = '$preload'"

# Citus refuses triggers on its tables unless citus.enable_unsafe_triggers is on: enable()
# says so with its own SQLSTATE.
coordinator -c "CREATE TABLE early (id int PRIMARY KEY, v text)" -c "SELECT create_distributed_table('early', 'id')" >/dev/null
expect "SELECT rowversion.enable('early')" "55000: table \"public.early\" is a Citus table, whose triggers Citus refuses*"
coordinator -c "ALTER DATABASE $db SET citus.enable_unsafe_triggers = on"
for port in "${ports[@]}"; do on "$port" -c "ALTER DATABASE $db SET citus.enable_unsafe_triggers = on" 2>/dev/null || true; done

# Every kind of Citus table, versioned before and after it became one.
coordinator -c "CREATE TABLE before_hash (id int PRIMARY KEY, v text)" -c "SELECT rowversion.enable('before_hash')" \
    -c "SELECT create_distributed_table('before_hash', 'id')" -c "SELECT rowversion.enable('early')" \
    -c "CREATE TABLE ref (id int PRIMARY KEY, v text)" -c "SELECT create_reference_table('ref')" \
    -c "SELECT rowversion.enable('ref')" -c "SET citus.enable_schema_based_sharding = on" -c "CREATE SCHEMA tenant" \
    -c "CREATE TABLE tenant.t (id int PRIMARY KEY, v text)" -c "RESET citus.enable_schema_based_sharding" \
    -c "SELECT rowversion.enable('tenant.t')" >/dev/null
shards=$(on "${ports[1]}" -c "SELECT count(*) FROM pg_trigger WHERE tgfoid = 'rowversion.version_trigger()'::regprocedure
                               AND tgrelid::regclass::text ~ '^(before_hash|early)_[0-9]+$'")
[ "$shards" -gt 0 ] || fail "the shards on worker 1 have no version trigger"

for table in before_hash early ref tenant.t; do
    coordinator -c "INSERT INTO $table SELECT g, 'a' FROM generate_series(1, 20) g"
    # A router UPDATE without a version moves it; with the current one it passes; a stale one
    # is refused, naming the table the application wrote to.
    coordinator -c "UPDATE $table SET v = 'b' WHERE id = 1"
    [ "$(version_of "$table" 1)" = 2 ] || fail "$table: an UPDATE without a version did not move it"
    coordinator -c "UPDATE $table SET v = 'c', version = 2 WHERE id = 1"
    [ "$(version_of "$table" 1)" = 3 ] || fail "$table: an UPDATE with the current version did not move it"
    expect "UPDATE $table SET v = 'stale', version = 1 WHERE id = 1" \
        "40001: row version conflict on table \"$([ "$table" = tenant.t ] && echo tenant.t || echo "public.$table")\""
    # Every row of every shard.
    coordinator -c "UPDATE $table SET v = 'all'"
    [ "$(coordinator -c "SELECT count(*) FROM $table WHERE version = CASE id WHEN 1 THEN 4 ELSE 2 END")" = 20 ] ||
        fail "$table: a multi-shard UPDATE did not move every version"
    coordinator -c "INSERT INTO $table VALUES (2, 'upsert') ON CONFLICT (id) DO UPDATE SET v = excluded.v"
    [ "$(version_of "$table" 2)" = 3 ] || fail "$table: INSERT ... ON CONFLICT DO UPDATE did not move the version"
    expect "INSERT INTO $table VALUES (2, 'stale') ON CONFLICT (id) DO UPDATE SET v = excluded.v, version = 1" \
        "40001: row version conflict*"
    # The checked functions.
    [ "$(coordinator -c "SELECT rowversion.update('$table', '{\"id\": 3}', 2, '{\"v\": \"checked\"}')")" = 3 ] ||
        fail "$table: rowversion.update() did not apply"
    expect "SELECT rowversion.update('$table', '{\"id\": 3}', 2, '{\"v\": \"stale\"}')" "40001: row version conflict*"
    [ "$(coordinator -c "SELECT applied FROM rowversion.try_update('$table', '{\"id\": 4}', 1, '{\"v\": \"x\"}')")" = f ] ||
        fail "$table: try_update() with a stale version applied"
    coordinator -c "SELECT rowversion.delete('$table', '{\"id\": 5}', 2)" >/dev/null
    [ "$(coordinator -c "SELECT rowversion.current_version('$table', '{\"id\": 5}')")" = "" ] ||
        fail "$table: delete() did not delete"
done
# Preloaded, a worker plans its shard's UPDATEs with the fast path (Citus names the shard's
# trigger rowversion_<shard id>), and a stale one through it still names the table.
if [ "$preload" = citus,pg_rowversion ]; then
    shard=$(coordinator -c "SELECT shardid FROM pg_dist_shard_placement JOIN pg_dist_shard USING (shardid)
                            WHERE logicalrelid = 'before_hash'::regclass AND nodeport = ${ports[1]} ORDER BY shardid LIMIT 1")
    on "${ports[1]}" -c "EXPLAIN (VERBOSE, COSTS OFF) UPDATE before_hash_$shard SET v = 'x'" | grep -q 'next_version' ||
        fail "the worker did not plan its shard's UPDATE with the fast path"
    outcome=$(on "${ports[1]}" -v VERBOSITY=verbose -c "UPDATE before_hash_$shard SET v = 'x', version = -1" 2>&1 || true)
    case $outcome in
        *'40001: row version conflict on table "public.before_hash"'*) ;;
        *) fail "a stale UPDATE of a shard through the fast path: $outcome" ;;
    esac
fi
# MERGE into a distributed table, from a table co-located with it.
coordinator -c "CREATE TABLE changes (id int PRIMARY KEY, v text)" \
    -c "SELECT create_distributed_table('changes', 'id', colocate_with => 'before_hash')" \
    -c "INSERT INTO changes VALUES (7, 'merged')" >/dev/null
coordinator -c "MERGE INTO before_hash t USING changes c ON t.id = c.id WHEN MATCHED THEN UPDATE SET v = c.v"
[ "$(version_of before_hash 7)" = 3 ] || fail "MERGE did not move the version: $(version_of before_hash 7)"
# row_locks() reads one server's locks: a distributed table's rows are on a worker.
expect "SELECT * FROM rowversion.row_locks('before_hash', '{\"id\": 6}')" \
    "0A000: the row of \"public.before_hash\" with key {\"id\": 6} is not stored in this database"
# Leases are the coordinator's.
[ "$(coordinator -c "SELECT rowversion.lease_acquire('nightly', '1 minute') IS NOT NULL")" = t ] || fail "no lease"

# A shard move keeps the versions and the triggers.
shard=$(coordinator -c "SELECT shardid FROM pg_dist_shard_placement JOIN pg_dist_shard USING (shardid)
                        WHERE logicalrelid = 'before_hash'::regclass AND nodeport = ${ports[1]} ORDER BY shardid LIMIT 1")
before=$(coordinator -c "SELECT string_agg(id || '@' || version, ',' ORDER BY id) FROM before_hash")
coordinator -c "SELECT citus_move_shard_placement($shard, '127.0.0.1', ${ports[1]}, '127.0.0.1', ${ports[2]},
                    shard_transfer_mode => 'block_writes')" >/dev/null
[ "$(coordinator -c "SELECT string_agg(id || '@' || version, ',' ORDER BY id) FROM before_hash")" = "$before" ] ||
    fail "the shard move changed versions"
[ "$(on "${ports[2]}" -c "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'before_hash_$shard'::regclass
                          AND tgfoid = 'rowversion.version_trigger()'::regprocedure")" = 1 ] ||
    fail "the moved shard has no version trigger"
coordinator -c "UPDATE before_hash SET v = 'after move'" >/dev/null
expect "UPDATE before_hash SET v = 'stale', version = 1 WHERE id = 1" "40001: row version conflict on table \"public.before_hash\""
echo "Citus: distributed (versioned before and after), reference and schema-sharded tables versioned on their shards; conflicts name the table; checked functions, MERGE, ON CONFLICT; a shard move keeps versions and triggers"
