#!/usr/bin/env bash
# The Debian package as a user installs it: tests/deb_install.sh PACKAGE.deb (one that
# scripts/package built for Postgres 15). `apt-get install ./PACKAGE.deb` into the machine's
# Debian Postgres 15, then, on a throw-away server of that Postgres: CREATE EXTENSION, a
# versioned UPDATE and a stale one refused with 40001; then `apt-get remove` and no file of the
# package left. CI runs it (.ci/run) before scripts/demo installs its own build there. Files of
# pg_rowversion that no package owns (an earlier scripts/demo's build) are set aside while the
# package is tried and put back afterwards; a running server of that Postgres, which may have
# loaded them, makes it refuse (replacing a loaded library crashes its backends).
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
deb=$(realpath "$1")
name=$(dpkg-deb --field "$deb" Package)
[ "$name" = "postgresql-$PG_MAJOR-rowversion" ] || { echo "$deb is $name, not postgresql-$PG_MAJOR-rowversion"; exit 2; }
port=${PG_ROWVERSION_DEB_PORT:-54316}
if pgrep -f "^$SYSTEM_PG_BIN/postgres" >/dev/null; then
    echo "refusing: a server of $SYSTEM_PG_BIN is running; stop it first"
    exit 1
fi

dir=$(mktemp -d /tmp/pg_rowversion-deb.XXXXXX)
aside="$dir/set-aside"
mkdir "$aside"
cleanup() {
    stop_server "$dir"
    if dpkg-query -W -f='${Status}' "$name" 2>/dev/null | grep -q "ok installed"; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get remove -y -qq "$name" >/dev/null
    fi
    # Put back what was set aside, with its owner, mode and time.
    (cd "$aside" && find . -type f -print0 | while IFS= read -r -d '' file; do
        as_root mv -f "$file" "/${file#./}"
    done)
    rm -rf "$dir"
}
trap cleanup EXIT

for file in "/usr/lib/postgresql/$PG_MAJOR/lib"/pg_rowversion* "/usr/share/postgresql/$PG_MAJOR/extension"/pg_rowversion*; do
    if [ -e "$file" ] && ! dpkg -S "$file" >/dev/null 2>&1; then
        log "setting aside $file (no package's) until the package is removed"
        as_root mkdir -p "$aside$(dirname "$file")"
        as_root mv "$file" "$aside$file"
    fi
done

log "apt-get install $deb"
as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$deb" >/dev/null
dpkg-query -W -f='${Package} ${Version} ${Status}\n' "$name"
dpkg -L "$name" | grep -E '\.(so|control|sql)$'

start_server "$dir" "$port"
result=$("$PG_BIN/psql" -X -q -At -h "$dir" -p "$port" -U postgres -d postgres 2>&1 <<'SQL'
CREATE EXTENSION pg_rowversion;
SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'pg_rowversion';
CREATE TABLE products (id int PRIMARY KEY, price int);
SELECT rowversion.enable('products');
INSERT INTO products VALUES (1, 100);
UPDATE products SET price = 110, version = 1 WHERE id = 1 RETURNING version;
\set VERBOSITY sqlstate
UPDATE products SET price = 120, version = 1 WHERE id = 1;
\set VERBOSITY default
SELECT price || '@' || version FROM products;
DROP TABLE products;
DROP EXTENSION pg_rowversion;
SQL
)
version=$(dpkg-deb --field "$deb" Version)
expected="${version%-*}

2
ERROR:  40001
110@2"
echo "$result"
[ "$result" = "$expected" ] || { echo "expected:"; echo "$expected"; exit 1; }
stop_server "$dir"

log "apt-get remove $name"
as_root env DEBIAN_FRONTEND=noninteractive apt-get remove -y -qq "$name" >/dev/null
for file in "/usr/lib/postgresql/$PG_MAJOR/lib"/pg_rowversion* "/usr/share/postgresql/$PG_MAJOR/extension"/pg_rowversion*; do
    [ -e "$file" ] && { echo "left behind by apt-get remove: $file"; exit 1; }
done
echo "installed with apt, versioned a table, refused a stale update, removed without a trace"
