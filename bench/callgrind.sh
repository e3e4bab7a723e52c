#!/usr/bin/env bash
# Instructions counted by callgrind: noise-free, repeatable figures.
#
# 1. Per row of a bulk UPDATE: the whole UPDATE (standard_ExecutorRun), Postgres' machinery
#    for BEFORE ROW UPDATE triggers (ExecBRUpdateTriggers, "...New" in Debian's 15.20 build),
#    the row lock that machinery takes (heap_lock_tuple) and the versioning function itself:
#    the trigger (in reject and in merge mode), or rowversion.next_version() on the planner
#    fast path (library preloaded).
# 2. Per call of a single-row checked update: the hand-written prepared UPDATE (on the planner
#    fast path, with and without the conflict counters) against SELECT rowversion.update(...),
#    with where the difference goes. Each is run for N and for
#    2N calls and the difference divided by N, so backend start-up and the first calls'
#    catalog lookups cancel out.
# Each run is a single-user backend under valgrind.
# Usage: bench/callgrind.sh WORK_DIR [ROWS] [CALLS]   (called by bench/run --callgrind)
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"

work=$1 rows=${2:-10000} calls=${3:-500} port=54318
command -v valgrind >/dev/null || as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null
stop_server "$work"
as_root rm -rf "$work"
start_server "$work" "$port" autovacuum=off
psql_work() { "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$work" -p "$port" -U postgres -d postgres "$@"; }

declare -A trigger prime update function settings
trigger[no_trigger]=""
update[no_trigger]="UPDATE t_no_trigger SET balance = balance + 1, version = version + 1"
function[no_trigger]=""
trigger[builtin_noop]="CREATE TRIGGER t BEFORE UPDATE ON t_builtin_noop FOR EACH ROW EXECUTE FUNCTION suppress_redundant_updates_trigger()"
update[builtin_noop]="UPDATE t_builtin_noop SET balance = balance + 1, version = version + 1"
function[builtin_noop]=suppress_redundant_updates_trigger
trigger[moddatetime]="CREATE TRIGGER t BEFORE UPDATE ON t_moddatetime FOR EACH ROW EXECUTE FUNCTION moddatetime(modified)"
update[moddatetime]="UPDATE t_moddatetime SET balance = balance + 1"
function[moddatetime]=moddatetime
trigger[plpgsql]="CREATE TRIGGER t BEFORE UPDATE ON t_plpgsql FOR EACH ROW EXECUTE FUNCTION bench_plpgsql_version()"
update[plpgsql]="UPDATE t_plpgsql SET balance = balance + 1"
function[plpgsql]=plpgsql_call_handler
trigger[rowversion]="SELECT rowversion.enable('t_rowversion')"
update[rowversion]="UPDATE t_rowversion SET balance = balance + 1"
function[rowversion]=rowversion_version_trigger
# Merge mode: every row already has its record (its first UPDATE in merge mode writes it).
trigger[rowversion_merge]="SELECT rowversion.enable('t_rowversion_merge', conflicts => 'merge')"
prime[rowversion_merge]="UPDATE t_rowversion_merge SET balance = balance"
update[rowversion_merge]="UPDATE t_rowversion_merge SET balance = balance + 1"
function[rowversion_merge]=rowversion_version_trigger
trigger[rowversion_fast]="SELECT rowversion.enable('t_rowversion_fast')"
update[rowversion_fast]="UPDATE t_rowversion_fast SET balance = balance + 1"
function[rowversion_fast]=rowversion_next_version
settings[rowversion_fast]="shared_preload_libraries=pg_rowversion"
variants=(no_trigger builtin_noop moddatetime plpgsql rowversion rowversion_merge rowversion_fast)

psql_work -c "CREATE EXTENSION pg_rowversion" -c "CREATE EXTENSION moddatetime" \
    -c "$(python3 -c 'import sys; sys.path.insert(0, sys.argv[1]); import bench; print(bench.PLPGSQL_TRIGGER)' "$REPO/bench")"
for v in "${variants[@]}"; do
    psql_work -c "CREATE TABLE t_$v (id int PRIMARY KEY, balance bigint NOT NULL, version bigint NOT NULL DEFAULT 1, modified timestamptz NOT NULL DEFAULT now())" \
        -c "INSERT INTO t_$v (id, balance) SELECT g, 0 FROM generate_series(1, $rows) g" \
        -c "${trigger[$v]:-SELECT 1}" -c "${prime[$v]:-SELECT 1}" -c "VACUUM (FULL, ANALYZE) t_$v" >/dev/null
done
# Per call: one table per variant, 3N rows at version 1 (the N-call run takes rows 1..N, the
# 2N-call run rows N+1..3N, so every call updates a row once).
for v in hand uncounted function; do
    psql_work -c "CREATE TABLE c_$v (id int PRIMARY KEY, balance bigint NOT NULL)" \
        -c "SELECT rowversion.enable('c_$v')" \
        -c "INSERT INTO c_$v SELECT g, 0 FROM generate_series(1, $((3 * calls))) g" -c "VACUUM (ANALYZE) c_$v" >/dev/null
done
stop_server "$work"

# Runs standard input in a single-user backend under callgrind, writing profile $1 (further
# arguments: settings).
profile() {
    local out=$1 setting options=()
    shift
    for setting in "$@"; do options+=(-c "$setting"); done
    as_postgres valgrind --tool=callgrind --callgrind-out-file="$out" \
        "$PG_BIN/postgres" --single -D "$work/data" -c autovacuum=off "${options[@]}" postgres >/dev/null 2>&1
}
# Inclusive instruction count of the first function matching a regular expression; the whole
# program's with "PROGRAM TOTALS".
inclusive() {
    callgrind_annotate --inclusive=yes --threshold=100 "$1" 2>/dev/null \
        | awk -v fn="$2" '!found && $0 ~ ("[ :](" fn ")( |$)") { gsub(",", "", $1); print $1; found = 1 }'
}
per_row() { if [ -n "$1" ]; then echo $(($1 / rows)); else echo -; fi; }

printf '\nInstructions per row (callgrind, %s-row UPDATE in a single-user backend)\n' "$rows"
printf '  %-16s %13s %21s %10s %19s\n' variant "whole UPDATE" "BEFORE-trigger calls" "row lock" "versioning function"
for v in "${variants[@]}"; do
    out="$work/callgrind.$v.out"
    # shellcheck disable=SC2086 # settings[$v] is empty or one setting
    echo "${update[$v]}" | profile "$out" ${settings[$v]:-}
    fn=""
    [ -n "${function[$v]}" ] && fn=$(inclusive "$out" "${function[$v]}")
    printf '  %-16s %13s %21s %10s %19s\n' "$v" \
        "$(per_row "$(inclusive "$out" standard_ExecutorRun)")" \
        "$(per_row "$(inclusive "$out" 'ExecBRUpdateTriggers|ExecBRUpdateTriggersNew')")" \
        "$(per_row "$(inclusive "$out" heap_lock_tuple)")" "$(per_row "$fn")"
done

# The statements of the per-call runs: PREPARE, then one EXECUTE per key in [first, last]
# (each its own transaction), as pgbench -M prepared sends bench.py's statements.
declare -A prepare
prepare[hand]="PREPARE p(int, bigint, bigint) AS UPDATE c_hand SET balance = \$3, version = \$2 WHERE id = \$1 AND version = \$2"
# The same UPDATE with the conflict counters off: what counting costs per call.
prepare[uncounted]="PREPARE p(int, bigint, bigint) AS UPDATE c_uncounted SET balance = \$3, version = \$2 WHERE id = \$1 AND version = \$2"
prepare[function]="PREPARE p(int, bigint, bigint) AS SELECT rowversion.update('c_function', jsonb_build_object('id', \$1), \$2, jsonb_build_object('balance', \$3))"
statements() { echo "${prepare[$1]}"; for ((key = $2; key <= $3; key++)); do echo "EXECUTE p($key, 1, 5)"; done; }
# Instructions per call of `function` (a regular expression; "PROGRAM TOTALS" for the whole
# backend) in variant $1: the 2N-call run's count less the N-call run's, divided by N.
per_call() {
    local once twice
    once=$(inclusive "$work/calls.$1.once.out" "$2") twice=$(inclusive "$work/calls.$1.twice.out" "$2")
    if [ -n "$twice" ]; then echo $(((twice - ${once:-0}) / calls)); else echo -; fi
}

printf '\nInstructions per call (callgrind, single-row checked update, prepared, %s against %s calls)\n' \
    "$((2 * calls))" "$calls"
printf '  %-22s %9s %15s %19s %20s %22s\n' variant "per call" "executor start" "building the jsonb" \
    "rowversion.update()" "jsonb_populate_record"
for v in hand uncounted function; do
    count=true
    [ "$v" = uncounted ] && count=false
    statements "$v" 1 "$calls" | profile "$work/calls.$v.once.out" shared_preload_libraries=pg_rowversion \
        pg_rowversion.count_conflicts=$count
    statements "$v" $((calls + 1)) $((3 * calls)) | profile "$work/calls.$v.twice.out" \
        shared_preload_libraries=pg_rowversion pg_rowversion.count_conflicts=$count
    printf '  %-22s %9s %15s %19s %20s %22s\n' "$v" "$(per_call "$v" "PROGRAM TOTALS")" \
        "$(per_call "$v" standard_ExecutorStart)" "$(per_call "$v" jsonb_build_object)" \
        "$(per_call "$v" rowversion_update)" "$(per_call "$v" jsonb_populate_record)"
done
