#!/usr/bin/env bash
# The lock diagnostics are read-only: they answer on a hot standby. Builds a streaming
# standby of the test server with pg_basebackup, lets it replay a versioned table, and runs
# lock_tree(), lock_summary, advisory_locks() and row_locks() there, with an advisory lock
# held and awaited on the standby itself. Then promotes the standby: lease tokens, ordinary
# WAL-logged data, keep increasing on the new primary.
# Usage: tests/standby.sh PRIMARY_SOCKET_DIR PRIMARY_PORT STANDBY_DIR STANDBY_PORT
set -euo pipefail
primary=$1 primary_port=$2 standby=$3 standby_port=$4
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
on_primary() { "$PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$primary" -p "$primary_port" -U postgres "$@"; }
on_standby() { "$PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$standby" -p "$standby_port" -U postgres "$@"; }
# Waits until a query on the standby returns the expected value (another session's lock).
wait_for() {
    local expected=$1 query=$2 tries=0
    until [ "$(on_standby -d rowversion_standby -c "$query")" = "$expected" ]; do
        tries=$((tries + 1))
        [ "$tries" -lt 3000 ] || { echo "timed out waiting for: $query"; return 1; }
    done
}

stop_server "$standby"
as_root rm -rf "$standby"
as_root mkdir -p "$standby"
as_root chown "$(as_postgres id -un)" "$standby"
on_primary -d postgres -c "DROP DATABASE IF EXISTS rowversion_standby" -c "CREATE DATABASE rowversion_standby"
on_primary -d rowversion_standby -c "CREATE EXTENSION pg_rowversion" \
    -c "CREATE TABLE accounts (id int PRIMARY KEY, balance bigint)" \
    -c "SELECT rowversion.enable('accounts')" -c "INSERT INTO accounts VALUES (1, 100)" \
    -c "SELECT rowversion.lease_release('nightly', rowversion.lease_acquire('nightly', '1 min'))" \
    -c "SELECT rowversion.lease_acquire('nightly', '1 min')" >/dev/null
as_postgres "$PG_BIN/pg_basebackup" -h "$primary" -p "$primary_port" -U postgres -D "$standby/data" -R -X stream --checkpoint=fast
# A hot standby needs at least the primary's max_connections.
connections=$(on_primary -d postgres -c "SHOW max_connections")
as_postgres "$PG_BIN/pg_ctl" -D "$standby/data" -l "$standby/server.log" -w start \
    -o "-p $standby_port -k $standby -c listen_addresses='' -c hot_standby=on -c max_connections=$connections" >/dev/null
trap 'stop_server "$standby"' EXIT

[ "$(on_standby -d rowversion_standby -c "SELECT pg_is_in_recovery()")" = t ]
# An advisory lock held by one standby session and awaited by another.
on_standby -d rowversion_standby -c "SELECT pg_advisory_lock(7)" -c "SELECT pg_sleep(30)" >/dev/null 2>&1 &
holder=$!
wait_for 1 "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
on_standby -d rowversion_standby -c "SET application_name = 'standby_waiter'" -c "SELECT pg_advisory_lock(7)" >/dev/null 2>&1 &
waiter=$!
wait_for 1 "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"

result=$(on_standby -d rowversion_standby \
    -c "SELECT 'tree', count(*), count(*) FILTER (WHERE depth = 0), max(advisory_key) FROM rowversion.lock_tree()" \
    -c "SELECT 'summary', waiting_sessions, top_blocker_blocks FROM rowversion.lock_summary" \
    -c "SELECT 'advisory', key, string_agg(granted::text, ',' ORDER BY granted) FROM rowversion.advisory_locks() GROUP BY key" \
    -c "SELECT 'row_locks', count(*) FROM rowversion.row_locks('accounts', '{\"id\": 1}')")
kill "$holder" "$waiter" 2>/dev/null || true
wait 2>/dev/null || true
expected='tree|2|1|7
summary|1|1
advisory|7|false,true
row_locks|0'
if [ "$result" != "$expected" ]; then
    echo "lock diagnostics on the standby:"
    diff <(echo "$expected") <(echo "$result")
    exit 1
fi
echo "lock diagnostics answer on a hot standby"

# Promotion: the lease taken on the old primary (token 2) is there, and the next token is 3.
lsn=$(on_primary -d postgres -c "SELECT pg_current_wal_lsn()")
wait_for t "SELECT pg_last_wal_replay_lsn() >= '$lsn'::pg_lsn"
as_postgres "$PG_BIN/pg_ctl" -D "$standby/data" -w promote >/dev/null
tokens=$(on_standby -d rowversion_standby -c "SELECT token FROM rowversion.leases WHERE name = 'nightly'" \
    -c "SELECT rowversion.lease_break('nightly')" -c "SELECT rowversion.lease_acquire('nightly', '1 min')")
if [ "$tokens" != $'2\nt\n3' ]; then
    echo "lease tokens after promotion: expected 2, t, 3; got: $tokens"
    exit 1
fi
echo "lease tokens keep increasing after promotion"
