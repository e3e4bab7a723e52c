#!/usr/bin/env bash
# Native logical replication: the versioning trigger does not fire on a subscriber (the apply
# worker runs with session_replication_role = replica), so versions replicate exactly as the
# publisher wrote them, even a version the publisher moved backwards with the trigger off,
# which the trigger would refuse as a conflict.
# Usage: tests/logical_replication.sh PUBLISHER_DIR PUBLISHER_PORT SUBSCRIBER_DIR SUBSCRIBER_PORT
set -euo pipefail
pub=$1 pub_port=$2 sub=$3 sub_port=$4
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
on_pub() { "$PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$pub" -p "$pub_port" -U postgres -d rowversion_pub "$@"; }
on_sub() { "$PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$sub" -p "$sub_port" -U postgres -d rowversion_sub "$@"; }
rows() { "on_$1" -c "SELECT string_agg(id || ':' || balance || '@' || version, ',' ORDER BY id) FROM accounts"; }
# Waits (a bounded number of polls) until the subscriber has the publisher's rows.
caught_up() {
    local tries=0
    until [ "$(rows sub)" = "$(rows pub)" ]; do
        tries=$((tries + 1))
        if [ "$tries" -ge 600 ]; then
            echo "the subscriber did not catch up: publisher $(rows pub), subscriber $(rows sub)"
            return 1
        fi
        sleep 0.05
    done
}

for dir in "$pub" "$sub"; do
    stop_server "$dir"
    as_root rm -rf "$dir"
done
start_server "$pub" "$pub_port" wal_level=logical
start_server "$sub" "$sub_port"
trap 'stop_server "$sub"; stop_server "$pub"' EXIT
"$PG_BIN/psql" -X -q -h "$pub" -p "$pub_port" -U postgres -d postgres -c "CREATE DATABASE rowversion_pub"
"$PG_BIN/psql" -X -q -h "$sub" -p "$sub_port" -U postgres -d postgres -c "CREATE DATABASE rowversion_sub"

schema="CREATE EXTENSION pg_rowversion;
CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL);
SELECT rowversion.enable('accounts', 'version', 'strict');"
on_pub -c "$schema" >/dev/null
on_sub -c "$schema" >/dev/null
on_pub -c "INSERT INTO accounts VALUES (1, 100), (2, 200)" -c "CREATE PUBLICATION accounts_pub FOR TABLE accounts"
on_sub -c "CREATE SUBSCRIPTION accounts_sub CONNECTION 'host=$pub port=$pub_port user=postgres dbname=rowversion_pub'
           PUBLICATION accounts_pub"
caught_up

# Checked writes on the publisher: the subscriber gets the versions the publisher's trigger wrote.
on_pub -c "UPDATE accounts SET balance = 150, version = 1 WHERE id = 1" \
       -c "UPDATE accounts SET balance = 175, version = 2 WHERE id = 1" \
       -c "SELECT rowversion.update('accounts', '{\"id\": 2}', 1, '{\"balance\": 250}')" >/dev/null
caught_up
[ "$(rows sub)" = "1:175@3,2:250@2" ] || { echo "unexpected rows on the subscriber: $(rows sub)"; exit 1; }

# The publisher moves a version backwards with its trigger off. Were the subscriber's trigger
# to fire for the apply worker, this update would be a conflict there (and, in strict mode, so
# would every replicated UPDATE that does not name the version); it replicates as written.
on_pub -c "SET session_replication_role = replica" -c "UPDATE accounts SET version = 1 WHERE id = 1" \
       -c "RESET session_replication_role" -c "UPDATE accounts SET balance = 99, version = 1 WHERE id = 1"
caught_up
[ "$(rows sub)" = "1:99@2,2:250@2" ] || { echo "unexpected rows on the subscriber: $(rows sub)"; exit 1; }
# The subscriber's own sessions are still checked.
outcome=$(on_sub -c "UPDATE accounts SET balance = 0, version = 1 WHERE id = 1" 2>&1 || true)
case $outcome in
    *"row version conflict"*) ;;
    *) echo "a local stale write on the subscriber was not refused: $outcome"; exit 1 ;;
esac
on_sub -c "DROP SUBSCRIPTION accounts_sub"
echo "logical replication: versions replicate as the publisher wrote them; local writes still checked"
