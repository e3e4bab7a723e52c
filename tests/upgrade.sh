#!/usr/bin/env bash
# ALTER EXTENSION pg_rowversion UPDATE from every released version: the updated extension's
# objects equal a fresh install's, existing versioned tables and their data keep working, and
# the new features work on the updated database.
# Usage: tests/upgrade.sh SOCKET_DIR PORT
set -euo pipefail
host=$1 port=$2
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
sql() { "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$host" -p "$port" -U postgres "$@"; }
current=$(sed -n 's/^version = "\(.*\)"/\1/p' "$REPO/Cargo.toml" | head -1)

# Every object of the extension with its definition, comment and privileges, sorted: what
# must be the same after an update as after a fresh install.
catalog() {
    sql -d "$1" -At <<'SQL'
SELECT pg_catalog.pg_describe_object(d.classid, d.objid, d.objsubid) || ' | ' ||
       coalesce(CASE d.classid
           WHEN 'pg_catalog.pg_proc'::pg_catalog.regclass THEN
               pg_catalog.pg_get_functiondef(d.objid) || ' acl=' || coalesce(p.proacl::text, '')
           WHEN 'pg_catalog.pg_class'::pg_catalog.regclass THEN
               pg_catalog.pg_get_viewdef(d.objid) || ' acl=' || coalesce(c.relacl::text, '')
           END, '') || ' | ' ||
       coalesce(pg_catalog.obj_description(d.objid, (SELECT relname FROM pg_catalog.pg_class WHERE oid = d.classid)), '')
FROM pg_catalog.pg_depend d
LEFT JOIN pg_catalog.pg_proc p ON d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND p.oid = d.objid
LEFT JOIN pg_catalog.pg_class c ON d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND c.oid = d.objid
WHERE d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass AND d.deptype = 'e'
  AND d.refobjid = (SELECT oid FROM pg_catalog.pg_extension WHERE extname = 'pg_rowversion')
ORDER BY 1;
SELECT 'schema acl: ' || coalesce(nspacl::text, '') FROM pg_catalog.pg_namespace WHERE nspname = 'rowversion';
SQL
}

for script in "$REPO"/sql/releases/pg_rowversion--*.sql; do
    release=${script##*/pg_rowversion--} release=${release%.sql}
    echo "==> from $release to $current"
    for db in rowversion_upgrade rowversion_fresh; do
        sql -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" 2>/dev/null
    done
    sql -d rowversion_upgrade -o /dev/null <<SQL
CREATE EXTENSION pg_rowversion VERSION '$release';
CREATE TABLE products (id int PRIMARY KEY, price int);
SELECT rowversion.enable('products');
INSERT INTO products VALUES (1, 100), (2, 200);
UPDATE products SET price = price + 1 WHERE id = 2;
CREATE TABLE lines (id int PRIMARY KEY, qty int, lock_version integer);
INSERT INTO lines VALUES (1, 1, NULL);
SELECT rowversion.enable('lines', 'lock_version', 'strict');
CREATE TABLE readings (id int, at date, value int, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE readings_2026 PARTITION OF readings FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
SELECT rowversion.enable('readings');
INSERT INTO readings VALUES (1, '2026-05-01', 10);
SQL
    sql -d rowversion_upgrade -c "ALTER EXTENSION pg_rowversion UPDATE"
    sql -d rowversion_fresh -c "CREATE EXTENSION pg_rowversion"
    version=$(sql -d rowversion_upgrade -At -c "SELECT extversion FROM pg_extension WHERE extname = 'pg_rowversion'")
    [ "$version" = "$current" ] || { echo "updated to $version, not $current"; exit 1; }
    if ! diff <(catalog rowversion_fresh) <(catalog rowversion_upgrade); then
        echo "the updated extension differs from a fresh install (< fresh, > updated)"
        exit 1
    fi
    # The tables versioned before the update: listed, their versions kept, their triggers
    # enforcing; then what the new version adds, on the same database.
    check=$(sql -d rowversion_upgrade -At <<'SQL'
CREATE FUNCTION pg_temp.sqlstate_of(statement text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN EXECUTE statement; RETURN 'ok'; EXCEPTION WHEN OTHERS THEN RETURN SQLSTATE; END $$;
SELECT string_agg(rel || ':' || version_column || ':' || mode, ',' ORDER BY rel::text) FROM rowversion.tables;
SELECT string_agg(id || '@' || version, ',' ORDER BY id) FROM products;
SELECT pg_temp.sqlstate_of('UPDATE products SET price = 0, version = 1 WHERE id = 2');
SELECT pg_temp.sqlstate_of('UPDATE lines SET qty = 2');
SELECT rowversion.update('readings', '{"id": 1, "at": "2026-05-01"}', 1, '{"value": 11}');
SELECT rowversion.enable('products', ignore_columns => '{price}');
UPDATE products SET price = 5 WHERE id = 1;
SELECT version FROM products WHERE id = 1;
UPDATE products SET version = 1700000000000 WHERE id = 1;
SELECT version FROM products WHERE id = 1;
SELECT ignore_columns FROM rowversion.tables WHERE rel = 'products'::regclass;
SQL
)
    expected='lines:lock_version:strict,products:version:lenient,readings:version:lenient
1@1,2@2
40001
42P10
2

1
1700000000000
{price}'
    if [ "$check" != "$expected" ]; then
        echo "after the update:"
        diff <(echo "$expected") <(echo "$check")
        exit 1
    fi
    echo "updated from $release: same objects as a fresh install, old tables enforced, new features work"
done
