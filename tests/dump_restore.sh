#!/usr/bin/env bash
# rowversion.tables and the trigger survive pg_dump + restore into a fresh database:
# renamed tables and columns, strict mode, quoted names, partitions, a disabled trigger,
# ignored columns (one renamed), merge mode with its per-row record and merge groups, observe
# mode (stale and version-less writes still let through); lease tokens go on increasing.
# Usage: tests/dump_restore.sh SOCKET_DIR PORT
set -euo pipefail
host=$1 port=$2
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
sql() { "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$host" -p "$port" -U postgres "$@"; }
for db in rowversion_dump_src rowversion_dump_dst; do
    sql -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
done

sql -d rowversion_dump_src -o /dev/null <<'SQL'
CREATE EXTENSION pg_rowversion;
CREATE TABLE products (id int PRIMARY KEY, price int);
SELECT rowversion.enable('products');
INSERT INTO products VALUES (1, 100), (2, 200);
UPDATE products SET price = price + 1 WHERE id = 2;
ALTER TABLE products RENAME TO catalog_items;
ALTER TABLE catalog_items RENAME COLUMN version TO lock_version;
CREATE TABLE "Order Lines" (id int PRIMARY KEY, "Version" integer);
SELECT rowversion.enable('"Order Lines"', 'Version', 'strict');
INSERT INTO "Order Lines" VALUES (1, 5);
CREATE TABLE readings (id int, at date, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE readings_2026 PARTITION OF readings FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
SELECT rowversion.enable('readings');
CREATE TABLE paused (id int PRIMARY KEY);
SELECT rowversion.enable('paused');
ALTER TABLE paused DISABLE TRIGGER rowversion;
CREATE TABLE members (id int PRIMARY KEY, "Last Login" timestamptz, hits int);
SELECT rowversion.enable('members', ignore_columns => '{"Last Login", hits}');
ALTER TABLE members RENAME COLUMN hits TO visits;
CREATE TABLE notes (id int PRIMARY KEY, title text, body text, street text, city text);
SELECT rowversion.enable('notes', conflicts => 'merge', merge_groups => '[["street", "city"]]');
INSERT INTO notes VALUES (1, 'title', 'body', 'Main St', 'Springfield');
UPDATE notes SET title = 'title 2' WHERE id = 1;
CREATE TABLE drafts (id int PRIMARY KEY, body text);
SELECT rowversion.enable('drafts', mode => 'strict', conflicts => 'observe');
INSERT INTO drafts VALUES (1, 'draft');
CREATE TABLE shared (id int PRIMARY KEY, v text);
INSERT INTO shared VALUES (1, 'a'), (2, 'b');
SELECT rowversion.enable('shared', multi_node => true);
UPDATE shared SET v = 'c' WHERE id = 1;
SELECT rowversion.lease_release('nightly', rowversion.lease_acquire('nightly', '1 min'));
SELECT rowversion.lease_acquire('nightly', '1 min');
SQL

snapshot() {
    sql -d "$1" -At -c "SELECT rel, version_column, mode, enabled, ignore_columns, conflicts, merge_groups, multi_node
                        FROM rowversion.tables ORDER BY rel::text" \
        -c "SELECT 'catalog_items', id, lock_version FROM catalog_items ORDER BY id" \
        -c "SELECT 'notes', id, version, rowversion_changes FROM notes ORDER BY id" \
        -c "SELECT 'shared', id, version, length(rowversion_write), tgenabled FROM shared, pg_trigger
            WHERE tgrelid = 'shared'::regclass AND tgname = 'rowversion_replication' ORDER BY id" \
        -c "SELECT 'shared stamp', md5(rowversion_write) FROM shared WHERE id = 1"
}
dump=$(mktemp)
trap 'rm -f "$dump"' EXIT
"$PG_BIN/pg_dump" -h "$host" -p "$port" -U postgres rowversion_dump_src >"$dump"
sql -d rowversion_dump_dst -f "$dump" >/dev/null

before=$(snapshot rowversion_dump_src)
after=$(snapshot rowversion_dump_dst)
echo "$after"
if [ "$before" != "$after" ]; then
    echo "rowversion.tables or the data differ after restore:"
    diff <(echo "$before") <(echo "$after")
    exit 1
fi
expected='"Order Lines"|Version|strict|t|{}|reject|[]|f
catalog_items|lock_version|lenient|t|{}|reject|[]|f
drafts|version|strict|t|{}|observe|[]|f
members|version|lenient|t|{"Last Login",visits}|reject|[]|f
notes|version|lenient|t|{}|merge|[["street", "city"]]|f
paused|version|lenient|f|{}|reject|[]|f
readings|version|lenient|t|{}|reject|[]|f
shared|version|lenient|t|{}|reject|[]|t
catalog_items|1|1
catalog_items|2|2
shared|1|2|32|A
shared|2|1||A'
# (the notes row's record and the shared row's stamp, bytes of the source's, compared above)
if [ "$(grep -v '^notes|1|\|^shared stamp|' <<<"$after")" != "$expected" ]; then
    echo "unexpected state after restore:"
    diff <(echo "$expected") <(echo "$after")
    exit 1
fi

# The restored triggers work: a stale write is rejected, a strict table demands its version.
check=$(sql -d rowversion_dump_dst -At <<'SQL'
CREATE FUNCTION pg_temp.sqlstate_of(statement text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN EXECUTE statement; RETURN 'ok'; EXCEPTION WHEN OTHERS THEN RETURN SQLSTATE; END $$;
SELECT pg_temp.sqlstate_of('UPDATE catalog_items SET price = 0, lock_version = 1 WHERE id = 2');
SELECT pg_temp.sqlstate_of('UPDATE "Order Lines" SET id = 1');
SELECT pg_temp.sqlstate_of('UPDATE catalog_items SET price = 0 WHERE id = 1');
SELECT lock_version FROM catalog_items WHERE id = 1;
INSERT INTO members (id) VALUES (1);
UPDATE members SET visits = 5, "Last Login" = now();
SELECT version FROM members;
SELECT token FROM rowversion.leases WHERE name = 'nightly';
SELECT pg_temp.sqlstate_of('UPDATE notes SET body = $$body 2$$, version = 1 WHERE id = 1');
SELECT pg_temp.sqlstate_of('UPDATE notes SET title = $$title 3$$, version = 1 WHERE id = 1');
SELECT pg_temp.sqlstate_of('UPDATE notes SET city = $$Shelbyville$$, version = 2 WHERE id = 1');
SELECT string_agg(column_name || '@' || version, ',') FROM rowversion.changed_since('notes', '{"id": 1}', 1);
SELECT rowversion.lease_break('nightly');
SELECT rowversion.lease_acquire('nightly', '1 min');
UPDATE drafts SET body = 'edited', version = 1 WHERE id = 1;
SELECT pg_temp.sqlstate_of('UPDATE drafts SET body = $$stale$$, version = 1 WHERE id = 1');
SELECT pg_temp.sqlstate_of('UPDATE drafts SET body = $$unversioned$$ WHERE id = 1');
SELECT body || '@' || version FROM drafts;
SQL
)
if [ "$check" != $'40001\n42P10\nok\n2\n1\n2\nok\n40001\nok\ntitle@2,body@3,street@4,city@4\nt\n3\nok\nok\nunversioned@4' ]; then
    echo "restored triggers misbehave: $check"
    exit 1
fi
echo "restored: same rowversion.tables, same versions, triggers enforce, ignored columns ignored, merge records kept, multi_node stamps kept and its trigger enabled ALWAYS, lease tokens go on"
