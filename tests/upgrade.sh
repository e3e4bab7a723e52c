#!/usr/bin/env bash
# ALTER EXTENSION pg_rowversion UPDATE from every released version, directly and one release
# at a time: the updated extension's objects equal a fresh install's of each version on the
# way, existing versioned tables and their data keep working, and the new features work on
# the updated database. Before the update, each release's own SQL runs on the current
# library: a library newer than a database's extension version must not break it (the
# symbols and argument lists that release's functions name).
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
               -- a view's definition; a table's columns and indexes (a sequence has neither)
               coalesce(pg_catalog.pg_get_viewdef(d.objid),
                        (SELECT pg_catalog.string_agg(a.attname || ' ' || pg_catalog.format_type(a.atttypid, a.atttypmod)
                                    || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
                                    || CASE a.attidentity WHEN '' THEN '' ELSE ' identity ' || a.attidentity::text END
                                    || coalesce(' default ' || pg_catalog.pg_get_expr(ad.adbin, ad.adrelid), ''),
                                    ', ' ORDER BY a.attnum)
                         FROM pg_catalog.pg_attribute a
                         LEFT JOIN pg_catalog.pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
                         WHERE a.attrelid = d.objid AND a.attnum > 0 AND NOT a.attisdropped), '')
               || coalesce(' ' || (SELECT pg_catalog.string_agg(pg_catalog.pg_get_indexdef(i.indexrelid), '; ' ORDER BY pg_catalog.pg_get_indexdef(i.indexrelid))
                                   FROM pg_catalog.pg_index i WHERE i.indrelid = d.objid), '')
               || ' acl=' || coalesce(c.relacl::text, '')
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

# The released versions (sql/releases/pg_rowversion--VERSION.sql), oldest first, then this one.
mapfile -t versions < <(for script in "$REPO"/sql/releases/pg_rowversion--*.sql; do
    release=${script##*/pg_rowversion--} && echo "${release%.sql}"; done | sort -V)
versions+=("$current")
recreate() { sql -d postgres -c "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1" 2>/dev/null; }
fresh=$(mktemp -d)
trap 'rm -rf "$fresh"' EXIT
for version in "${versions[@]}"; do
    recreate rowversion_fresh
    sql -d rowversion_fresh -c "CREATE EXTENSION pg_rowversion VERSION '$version'"
    catalog rowversion_fresh >"$fresh/$version"
done
same_as_fresh() {
    local version
    version=$(sql -d "$1" -At -c "SELECT extversion FROM pg_extension WHERE extname = 'pg_rowversion'")
    [ "$version" = "$2" ] || { echo "updated to $version, not $2"; return 1; }
    if ! diff "$fresh/$2" <(catalog "$1"); then
        echo "the extension updated to $2 differs from a fresh install of $2 (< fresh, > updated)"
        return 1
    fi
}

# What every release's functions do, run on the current library while the database still
# has that release's SQL: a table versioned and unversioned, each checked function, the lock
# diagnostics, a stale UPDATE refused.
old_sql_on_new_library() {
    local release=$1 check expected
    check=$(sql -d rowversion_upgrade -At <<'SQL'
CREATE FUNCTION pg_temp.sqlstate_of(statement text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN EXECUTE statement; RETURN 'ok'; EXCEPTION WHEN OTHERS THEN RETURN SQLSTATE; END $$;
CREATE TABLE notes (id int PRIMARY KEY, body text);
SELECT rowversion.enable('notes', 'version', 'lenient');
INSERT INTO notes VALUES (1, 'a'), (2, 'b');
SELECT rowversion.update('notes', '{"id": 1}', 1, '{"body": "a2"}');
SELECT applied || ',' || version FROM rowversion.try_update('notes', '{"id": 1}', 1, '{"body": "a3"}');
SELECT rowversion.update_many('notes', '[{"key": {"id": 1}, "version": 2, "changes": {"body": "a4"}}]');
SELECT rowversion.current_version('notes', '{"id": 1}');
SELECT pg_temp.sqlstate_of($$SELECT rowversion.delete('notes', '{"id": 1}', 1)$$);
SELECT rowversion.delete('notes', '{"id": 2}', 1);
SELECT pg_temp.sqlstate_of('UPDATE notes SET body = $$x$$, version = 1 WHERE id = 1');
UPDATE notes SET body = 'a5', version = 3 WHERE id = 1;
SELECT string_agg(id || '@' || version || ':' || body, ',') FROM notes;
SELECT count(*) FROM rowversion.row_locks('notes', '{"id": 1}');
SELECT count(*) FROM rowversion.lock_tree() WHERE pid = pg_backend_pid();
SELECT count(*) FROM rowversion.advisory_locks();
SELECT count(*) FROM rowversion.tables WHERE rel = 'notes'::regclass;
SELECT rowversion.disable('notes');
SELECT count(*) FROM rowversion.tables WHERE rel = 'notes'::regclass;
DROP TABLE notes;
SQL
)
    expected='
2
false,2
1
3
40001

40001
1@4:a5
0
0
0
1

0'
    if [ "$check" != "$expected" ]; then
        echo "$release's SQL on the current library:"
        diff <(echo "$expected") <(echo "$check")
        return 1
    fi
    # Leases came with 0.2.0.
    if [ "$(printf '%s\n' 0.2.0 "$release" | sort -V | head -1)" = 0.2.0 ]; then
        check=$(sql -d rowversion_upgrade -At -c "SELECT rowversion.lease_release('job', rowversion.lease_acquire('job', '1 min'))")
        [ "$check" = t ] || { echo "$release's leases on the current library: $check"; return 1; }
    fi
    echo "$release's SQL works on the current library"
}

# The tables versioned before the update, in a database at RELEASE.
old_tables() {
    sql -d rowversion_upgrade -o /dev/null <<SQL
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
}

for release in "${versions[@]}"; do
    [ "$release" = "$current" ] && continue
    # One release at a time: after each step, the objects of a fresh install of that release.
    echo "==> from $release to $current, one release at a time"
    recreate rowversion_upgrade
    sql -d rowversion_upgrade -c "CREATE EXTENSION pg_rowversion VERSION '$release'"
    old_sql_on_new_library "$release"
    later=false
    for version in "${versions[@]}"; do
        if $later; then
            sql -d rowversion_upgrade -c "ALTER EXTENSION pg_rowversion UPDATE TO '$version'"
            same_as_fresh rowversion_upgrade "$version"
            echo "updated to $version: same objects as a fresh install of $version"
        fi
        [ "$version" = "$release" ] && later=true
    done
    # Directly, as a user does: the path Postgres chooses.
    echo "==> from $release to $current with ALTER EXTENSION pg_rowversion UPDATE"
    recreate rowversion_upgrade
    sql -d rowversion_upgrade -c "CREATE EXTENSION pg_rowversion VERSION '$release'"
    old_tables
    sql -d rowversion_upgrade -c "ALTER EXTENSION pg_rowversion UPDATE"
    same_as_fresh rowversion_upgrade "$current"
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
SELECT rowversion.enable('readings', conflicts => 'merge');
UPDATE readings SET value = 12 WHERE id = 1;
SELECT pg_temp.sqlstate_of('UPDATE readings SET value = 13, version = 2 WHERE id = 1');
ALTER TABLE readings ADD COLUMN note text;
UPDATE readings SET note = 'checked' WHERE id = 1;
SELECT pg_temp.sqlstate_of('UPDATE readings SET value = 14, version = 3 WHERE id = 1');
SELECT version || ':' || value FROM readings;
SQL
)
    expected='lines:lock_version:strict,products:version:lenient,readings:version:lenient
1@1,2@2
40001
42P10
2

1
1700000000000
{price}

40001
ok
5:14'
    if [ "$check" != "$expected" ]; then
        echo "after the update:"
        diff <(echo "$expected") <(echo "$check")
        exit 1
    fi
    echo "updated from $release: same objects as a fresh install, old tables enforced, new features work"
done
