#!/usr/bin/env bash
# Instructions per row, counted by callgrind: noise-free, repeatable figures for the
# per-row cost, split into the whole UPDATE (standard_ExecutorRun), Postgres' machinery for
# BEFORE ROW UPDATE triggers (ExecBRUpdateTriggers, "...New" in Debian's 15.20 build), the row
# lock that machinery takes (heap_lock_tuple) and the trigger function itself.
# Each variant's UPDATE runs alone in a single-user backend under valgrind.
# Usage: bench/callgrind.sh WORK_DIR [ROWS]   (called by bench/run --callgrind)
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"

work=$1 rows=${2:-10000} port=54318
command -v valgrind >/dev/null || as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null
stop_server "$work"
as_root rm -rf "$work"
start_server "$work" "$port" autovacuum=off
psql_work() { "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$work" -p "$port" -U postgres -d postgres "$@"; }

declare -A trigger update function
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
variants=(no_trigger builtin_noop moddatetime plpgsql rowversion)

psql_work -c "CREATE EXTENSION pg_rowversion" -c "CREATE EXTENSION moddatetime" \
    -c "$(python3 -c 'import sys; sys.path.insert(0, sys.argv[1]); import bench; print(bench.PLPGSQL_TRIGGER)' "$REPO/bench")"
for v in "${variants[@]}"; do
    psql_work -c "CREATE TABLE t_$v (id int PRIMARY KEY, balance bigint NOT NULL, version bigint NOT NULL DEFAULT 1, modified timestamptz NOT NULL DEFAULT now())" \
        -c "INSERT INTO t_$v (id, balance) SELECT g, 0 FROM generate_series(1, $rows) g" \
        -c "${trigger[$v]:-SELECT 1}" -c "VACUUM (ANALYZE) t_$v" >/dev/null
done
stop_server "$work"

# Inclusive instruction count of the first function matching a regular expression.
inclusive() {
    callgrind_annotate --inclusive=yes --threshold=100 "$1" 2>/dev/null \
        | awk -v fn="$2" '!found && $0 ~ ("[ :](" fn ") ") { gsub(",", "", $1); print $1; found = 1 }'
}
per_row() { if [ -n "$1" ]; then echo $(($1 / rows)); else echo -; fi; }

printf '\nInstructions per row (callgrind, %s-row UPDATE in a single-user backend)\n' "$rows"
printf '  %-13s %13s %21s %10s %17s\n' variant "whole UPDATE" "BEFORE-trigger calls" "row lock" "trigger function"
for v in "${variants[@]}"; do
    out="$work/callgrind.$v.out"
    echo "${update[$v]}" | as_postgres valgrind --tool=callgrind --callgrind-out-file="$out" \
        "$PG_BIN/postgres" --single -D "$work/data" -c autovacuum=off postgres >/dev/null 2>&1
    fn=""
    [ -n "${function[$v]}" ] && fn=$(inclusive "$out" "${function[$v]}")
    printf '  %-13s %13s %21s %10s %17s\n' "$v" \
        "$(per_row "$(inclusive "$out" standard_ExecutorRun)")" \
        "$(per_row "$(inclusive "$out" 'ExecBRUpdateTriggers|ExecBRUpdateTriggersNew')")" \
        "$(per_row "$(inclusive "$out" heap_lock_tuple)")" "$(per_row "$fn")"
done
