-- Scenario 8, column-aware conflicts (#23): in conflicts => 'merge' mode an UPDATE that
-- states an older version s than the stored V is accepted when none of the columns it
-- changes (widened to their merge group) changed after s; otherwise the usual 40001, whose
-- detail names what changed.
\set VERBOSITY default
CREATE TABLE products (id int PRIMARY KEY, name text, price int, description text);
SELECT rowversion.enable('products', conflicts => 'merge');
\d products
INSERT INTO products VALUES (1, 'Espresso machine', 100000, 'Red');
-- Two editors read version 1. A changes the price, B the description: both saved.
UPDATE products SET price = 120000, version = 1 WHERE id = 1 RETURNING version;
UPDATE products SET description = 'Red, 15 bar', version = 1 WHERE id = 1 RETURNING version;
SELECT id, name, price, description, version FROM products;
-- C read version 1 too and changes the price: refused, naming the column.
UPDATE products SET price = 110000, version = 1 WHERE id = 1;
-- Every changed column the UPDATE sets, in column order; unchanged ones are not named.
UPDATE products SET description = 'x', name = 'y', price = 1, version = 1 WHERE id = 1;
-- D read version 2 (after the price change): the price did not change after 2.
UPDATE products SET price = 125000, version = 2 WHERE id = 1 RETURNING version;
-- Setting a column to its stored value is not a change: the price is named with the value
-- it has, only the name changes.
UPDATE products SET price = 125000, name = 'Espresso machine Pro', version = 1 WHERE id = 1
RETURNING version;
-- An UPDATE that changes nothing at all merges, and still moves the version.
UPDATE products SET price = 125000, version = 1 WHERE id = 1 RETURNING version;
-- The current version is accepted as always.
UPDATE products SET price = 130000, version = 6 WHERE id = 1 RETURNING version;
SELECT id, name, price, description, version FROM products;
-- A newer version than the stored one is kept (ORM style), as in reject mode; a stale
-- update of the name is then refused, of the description merged.
UPDATE products SET name = 'Espresso', version = 100 WHERE id = 1 RETURNING version;
UPDATE products SET name = 'Espresso machine', version = 7 WHERE id = 1;
UPDATE products SET description = 'Red', version = 7 WHERE id = 1 RETURNING version;
-- The record column cannot be forged: what the SET list puts there is replaced, and it is
-- not a change itself.
UPDATE products SET rowversion_changes = '\x00000000000000ff', version = 1 WHERE id = 1
RETURNING version, length(rowversion_changes) AS record_bytes;
UPDATE products SET price = 1, version = 1 WHERE id = 1;
-- The error fields a driver sees are those of any conflict.
SELECT * FROM error_fields('UPDATE products SET price = 1, version = 1 WHERE id = 1');
SELECT * FROM rowversion.tables;
-- Lenient UPDATEs without a version move it and keep the record: the description changed
-- at 103 and the price at 104, so a form read at 102 may change the name only, one read at
-- 103 the name and the description.
UPDATE products SET description = 'Blue' WHERE id = 1 RETURNING version;
UPDATE products SET price = price + 100 WHERE id = 1 RETURNING version;
UPDATE products SET description = 'Green', version = 102 WHERE id = 1;
UPDATE products SET price = 1, version = 103 WHERE id = 1;
UPDATE products SET name = 'Espresso machine', version = 102 WHERE id = 1 RETURNING version;
UPDATE products SET description = 'Green', version = 103 WHERE id = 1 RETURNING version;
-- NULLs: NULL to NULL is no change, NULL to a value is one. A toasted value set to itself
-- is no change either (compared detoasted).
UPDATE products SET description = NULL WHERE id = 1 RETURNING version;
UPDATE products SET description = NULL, version = 1 WHERE id = 1 RETURNING version;
UPDATE products SET description = '', version = 1 WHERE id = 1;
CREATE FUNCTION long_text(tail text) RETURNS text LANGUAGE sql
RETURN (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 2000) i) || tail;
UPDATE products SET description = long_text('') WHERE id = 1 RETURNING version;
SELECT pg_relation_size(reltoastrelid) > 0 AS toasted FROM pg_class WHERE oid = 'products'::regclass;
UPDATE products SET description = long_text(''), version = 1 WHERE id = 1 RETURNING version;
UPDATE products SET description = long_text('.'), version = 1 WHERE id = 1;
-- The same through the fast path's usual shapes: several rows, a sub-select, upserts.
INSERT INTO products VALUES (2, 'Grinder', 20000, 'Black'), (3, 'Kettle', 5000, 'Steel');
UPDATE products SET price = price + 1 WHERE id IN (2, 3);
UPDATE products SET name = name || '!', version = 1 WHERE id IN (2, 3) RETURNING id, version;
UPDATE products SET price = 0, version = 1 WHERE id IN (2, 3);
UPDATE products SET (description, version) = (SELECT 'Matte', 1) WHERE id = 3 RETURNING version;
UPDATE products SET (price, version) = (SELECT 0, 1) WHERE id = 3;
INSERT INTO products VALUES (2, 'Grinder', 0, 'Black')
ON CONFLICT (id) DO UPDATE SET description = 'White', version = 1 RETURNING id, version;
INSERT INTO products VALUES (2, 'Grinder', 0, 'Black')
ON CONFLICT (id) DO UPDATE SET price = excluded.price, version = 1;
-- MERGE's UPDATE actions too.
MERGE INTO products p USING (VALUES (3, 'Kettle 2')) v(id, name) ON p.id = v.id
WHEN MATCHED THEN UPDATE SET name = v.name, version = 3;
MERGE INTO products p USING (VALUES (3, 1)) v(id, price) ON p.id = v.id
WHEN MATCHED THEN UPDATE SET price = v.price, version = 1;
SELECT id, name, price, left(description, 20) AS description, version FROM products ORDER BY id;
DROP TABLE products;
DROP FUNCTION long_text(text);

-- Merge groups: a change to one column of a group conflicts with a change to any column of
-- the group since s; the detail names the whole group, in column order.
CREATE TABLE customers (id int PRIMARY KEY, name text, street text, city text, zip text);
SELECT rowversion.enable('customers', conflicts => 'merge',
                         merge_groups => '[["zip", "street", "city"]]');
\d customers
SELECT rel, conflicts, merge_groups FROM rowversion.tables;
INSERT INTO customers VALUES (1, 'Ada', 'Main St 1', 'Springfield', '12345');
UPDATE customers SET street = 'Oak Ave 2', version = 1 WHERE id = 1;
UPDATE customers SET city = 'Shelbyville', version = 1 WHERE id = 1;
UPDATE customers SET zip = '54321', name = 'Ada L.', version = 1 WHERE id = 1;
-- Outside the group, merged.
UPDATE customers SET name = 'Ada L.', version = 1 WHERE id = 1 RETURNING version;
-- Read after the street change: the group did not change since 2.
UPDATE customers SET city = 'Shelbyville', zip = '54321', version = 2 WHERE id = 1
RETURNING version;
SELECT * FROM customers;
-- Two groups, and a group following RENAME COLUMN.
CREATE TABLE order_lines (id int PRIMARY KEY, price int, quantity int, total int, note text,
                          street text, city text);
SELECT rowversion.enable('order_lines', conflicts => 'merge',
                         merge_groups => '[["price", "quantity", "total"], ["street", "city"]]');
INSERT INTO order_lines VALUES (1, 100, 2, 200, '', 'Main St 1', 'Springfield');
UPDATE order_lines SET quantity = 3, total = 300, version = 1 WHERE id = 1;
UPDATE order_lines SET city = 'Shelbyville', version = 1 WHERE id = 1 RETURNING version;
UPDATE order_lines SET price = 90, total = 180, version = 1 WHERE id = 1;
ALTER TABLE order_lines RENAME COLUMN total TO line_total;
SELECT rel, merge_groups FROM rowversion.tables WHERE rel = 'order_lines'::regclass;
-- The trigger depends on the group's columns and on the record column.
ALTER TABLE order_lines DROP COLUMN city;
ALTER TABLE order_lines DROP COLUMN rowversion_changes;
-- 5 bytes of record per row, and one per merge unit (id, note and the two groups: 4).
SELECT pg_column_size(rowversion_changes) FROM order_lines;
-- Changing the groups resets the records: refused once, then merged again.
SELECT rowversion.enable('order_lines', conflicts => 'merge',
                         merge_groups => '[["price", "quantity", "line_total"]]');
UPDATE order_lines SET note = 'gift', version = 2 WHERE id = 1;
UPDATE order_lines SET street = 'Oak Ave 2' WHERE id = 1 RETURNING version;
UPDATE order_lines SET note = 'gift', version = 3 WHERE id = 1 RETURNING version;
DROP TABLE customers, order_lines;

-- ignore_columns are not merge units: their changes since s do not refuse a stale UPDATE.
CREATE TABLE articles (id int PRIMARY KEY, title text, body text, views int NOT NULL DEFAULT 0);
SELECT rowversion.enable('articles', ignore_columns => '{views}', conflicts => 'merge');
INSERT INTO articles VALUES (1, 'Hello', 'First draft');
UPDATE articles SET title = 'Hello, world', views = 10, version = 1 WHERE id = 1;
UPDATE articles SET body = 'Second draft', views = 11, version = 1 WHERE id = 1 RETURNING version;
-- An UPDATE of ignored columns only keeps the version, and the record with it: the title
-- changed at 2, the body at 3.
UPDATE articles SET views = views + 1 WHERE id = 1 RETURNING version;
UPDATE articles SET title = 'Hi', version = 1 WHERE id = 1;
UPDATE articles SET title = 'Hi', version = 2 WHERE id = 1 RETURNING version;
UPDATE articles SET body = 'Third draft', version = 2 WHERE id = 1;
SELECT id, title, body, views, version FROM articles;
DROP TABLE articles;

-- Rows written before merge was enabled count as changed in every column at their current
-- version: any stale UPDATE of them is refused, until one update writes their record.
CREATE TABLE products (id int PRIMARY KEY, name text, price int, description text);
SELECT rowversion.enable('products');
INSERT INTO products VALUES (1, 'Espresso machine', 100000, 'Red'), (2, 'Grinder', 20000, 'Black');
UPDATE products SET price = price + 1;
SELECT rowversion.enable('products', conflicts => 'merge');
\d products
UPDATE products SET description = 'Blue', version = 1 WHERE id = 1;
UPDATE products SET name = 'Mill', description = 'Blue', version = 1 WHERE id = 2;
-- One update at version 2 (lenient here) writes the record: a form read at 2 merges, one
-- read at 1 still cannot (the record knows nothing older).
UPDATE products SET price = price + 1 WHERE id = 1 RETURNING version;
UPDATE products SET description = 'Blue', version = 2 WHERE id = 1 RETURNING version;
UPDATE products SET name = 'Espresso', version = 1 WHERE id = 1;
-- reject -> merge -> reject -> merge: the record is left alone in reject mode, and an update
-- made there makes it stale (refused); without one, it still holds.
SELECT rowversion.enable('products', conflicts => 'reject');
SELECT rel, conflicts FROM rowversion.tables WHERE rel = 'products'::regclass;
UPDATE products SET name = 'Espresso', version = 2 WHERE id = 1;
SELECT rowversion.enable('products', conflicts => 'merge');
UPDATE products SET name = 'Espresso', version = 2 WHERE id = 1 RETURNING version;
SELECT rowversion.enable('products', conflicts => 'reject');
UPDATE products SET price = price + 1 WHERE id = 1 RETURNING version;
SELECT rowversion.enable('products', conflicts => 'merge');
UPDATE products SET name = 'Espresso machine', version = 5 WHERE id = 1;
-- The same with the trigger disabled: the version moves by hand, the record goes stale.
UPDATE products SET price = price + 1 WHERE id = 1 RETURNING version;
ALTER TABLE products DISABLE TRIGGER rowversion;
UPDATE products SET price = price + 1, version = version + 1 WHERE id = 1;
ALTER TABLE products ENABLE TRIGGER rowversion;
UPDATE products SET name = 'Espresso machine', version = 7 WHERE id = 1;

-- Changing the table's columns keeps it working and makes existing records refuse, once.
UPDATE products SET price = 1 WHERE id = 1 RETURNING version;
UPDATE products SET name = 'Espresso machine', version = 8 WHERE id = 1 RETURNING version;
ALTER TABLE products RENAME COLUMN description TO details;
UPDATE products SET details = 'Brown', version = 9 WHERE id = 1;
UPDATE products SET price = 2 WHERE id = 1 RETURNING version;
UPDATE products SET details = 'Brown', version = 10 WHERE id = 1 RETURNING version;
ALTER TABLE products ADD COLUMN weight int;
UPDATE products SET weight = 5000, version = 11 WHERE id = 1;
UPDATE products SET price = 3 WHERE id = 1 RETURNING version;
UPDATE products SET weight = 5000, version = 12 WHERE id = 1 RETURNING version;
ALTER TABLE products DROP COLUMN details;
UPDATE products SET name = 'Espresso', version = 13 WHERE id = 1;
UPDATE products SET price = 4 WHERE id = 1 RETURNING version;
UPDATE products SET name = 'Espresso', version = 14 WHERE id = 1 RETURNING version;
SELECT id, name, price, weight, version FROM products ORDER BY id;
DROP TABLE products;

-- A partitioned table whose partitions number their columns differently merges the same.
CREATE TABLE parts (id int, region text, name text, price int, description text,
                    PRIMARY KEY (id, region)) PARTITION BY LIST (region);
CREATE TABLE parts_eu PARTITION OF parts FOR VALUES IN ('eu');
SELECT rowversion.enable('parts', conflicts => 'merge');
CREATE TABLE parts_us (dropped int, description text, version bigint NOT NULL DEFAULT 1,
                       rowversion_changes bytea, price int, name text, region text NOT NULL,
                       id int NOT NULL);
ALTER TABLE parts_us DROP COLUMN dropped;
ALTER TABLE parts ATTACH PARTITION parts_us FOR VALUES IN ('us');
INSERT INTO parts (id, region, name, price, description)
VALUES (1, 'eu', 'Espresso machine', 100000, 'Red'), (1, 'us', 'Espresso machine', 100000, 'Red');
UPDATE parts SET price = 120000, version = 1 WHERE id = 1;
UPDATE parts SET description = 'Blue', version = 1 WHERE id = 1 RETURNING region, version;
UPDATE parts SET price = 110000, version = 1 WHERE id = 1 AND region = 'eu';
UPDATE parts SET price = 110000, version = 1 WHERE id = 1 AND region = 'us';
-- Rows moving between the partitions keep their record.
INSERT INTO parts (id, region, name, price, description) VALUES (2, 'eu', 'Grinder', 20000, 'Black');
UPDATE parts SET price = 25000, version = 1 WHERE id = 2;
UPDATE parts SET region = 'us', version = 1 WHERE id = 2 RETURNING tableoid::regclass, version;
UPDATE parts SET price = 21000, version = 1 WHERE id = 2;
UPDATE parts SET name = 'Mill', version = 2 WHERE id = 2 RETURNING version;
SELECT tableoid::regclass, id, region, name, price, description, version, rowversion_changes
FROM parts ORDER BY id, region;
DROP TABLE parts;

-- A record remembers 255 versions: a unit last changed longer ago counts as changed for a
-- form read more than 255 versions ago (refused, the safe direction).
CREATE TABLE counters (id int PRIMARY KEY, name text, hits int);
SELECT rowversion.enable('counters', conflicts => 'merge');
INSERT INTO counters VALUES (1, 'home', 0);
UPDATE counters SET name = 'Home' WHERE id = 1;
DO $$ BEGIN FOR i IN 1..300 LOOP UPDATE counters SET hits = hits + 1 WHERE id = 1; END LOOP; END $$;
SELECT version FROM counters;
UPDATE counters SET name = 'Start', version = 46 WHERE id = 1;
UPDATE counters SET name = 'Start', version = 47 WHERE id = 1 RETURNING version;
DROP TABLE counters;

-- Column privileges: the detail names only the changed columns the caller may SELECT.
CREATE TABLE products (id int PRIMARY KEY, name text, price int, description text);
SELECT rowversion.enable('products', conflicts => 'merge');
INSERT INTO products VALUES (1, 'Espresso machine', 100000, 'Red');
UPDATE products SET price = 120000, description = 'Blue', version = 1 WHERE id = 1;
CREATE ROLE rowversion_merge_clerk;
GRANT SELECT (id, name, description, version) ON products TO rowversion_merge_clerk;
GRANT UPDATE (name, price, description, version) ON products TO rowversion_merge_clerk;
SET ROLE rowversion_merge_clerk;
UPDATE products SET price = 110000, description = 'Green', version = 1 WHERE id = 1;
UPDATE products SET price = 110000, version = 1 WHERE id = 1;
UPDATE products SET name = 'Espresso', version = 1 WHERE id = 1;
RESET ROLE;
SELECT id, name, price, description, version FROM products;
DROP TABLE products;
DROP ROLE rowversion_merge_clerk;

-- enable()'s errors.
CREATE TABLE products (id int PRIMARY KEY, name text, price int, description text,
                       street text, city text, views int,
                       total int GENERATED ALWAYS AS (price * 2) STORED);
SELECT rowversion.enable('products', merge_groups => '[["street", "city"]]');
SELECT rowversion.enable('products', conflicts => 'merge', merge_groups => '[["street", "version"]]');
SELECT rowversion.enable('products', conflicts => 'merge', merge_groups => '[["street", "rowversion_changes"]]');
SELECT rowversion.enable('products', ignore_columns => '{views}', conflicts => 'merge',
                         merge_groups => '[["street", "views"]]');
SELECT rowversion.enable('products', conflicts => 'merge',
                         merge_groups => '[["street", "city"], ["city", "name"]]');
SELECT rowversion.enable('products', conflicts => 'merge', merge_groups => '[["street", "street"]]');
SELECT rowversion.enable('products', conflicts => 'merge', merge_groups => '[["price", "total"]]');
SELECT rowversion.enable('products', conflicts => 'merge', merge_groups => '["street", "city"]');
SELECT rowversion.enable('products', conflicts => 'merge', merge_groups => '{"street": "city"}');
SELECT rowversion.enable('products', conflicts => 'merge', merge_groups => '[["street", 1]]');
SELECT rowversion.enable('products', conflicts => 'merge', merge_groups => '[["nope"]]');
SELECT rowversion.enable('products', conflicts => 'overwrite');
-- Their SQLSTATEs.
SELECT left(outcome(format('SELECT rowversion.enable(%L, conflicts => %L, merge_groups => %L)',
                           'products', conflicts, groups)), 5) AS sqlstate, conflicts, groups
FROM (VALUES ('reject', '[["street"]]'), ('merge', '[["version"]]'), ('merge', '[["street", "street"]]'),
             ('merge', '[["total"]]'), ('merge', '[1]'), ('merge', '[["nope"]]'),
             ('overwrite', '[]')) v(conflicts, groups);
-- None of them left anything behind.
SELECT count(*) FROM rowversion.tables WHERE rel = 'products'::regclass;
SELECT count(*) FROM pg_attribute WHERE attrelid = 'products'::regclass AND attname = 'rowversion_changes';
-- Once the record column exists, it cannot be grouped either.
SELECT rowversion.enable('products', conflicts => 'merge');
SELECT rowversion.enable('products', conflicts => 'merge', merge_groups => '[["street", "rowversion_changes"]]');
SELECT rel, conflicts, merge_groups FROM rowversion.tables WHERE rel = 'products'::regclass;
DROP TABLE products;
CREATE TABLE t (id int PRIMARY KEY, rowversion_changes int);
SELECT rowversion.enable('t', conflicts => 'merge');
SELECT left(outcome($$SELECT rowversion.enable('t', conflicts => 'merge')$$), 5) AS sqlstate;
DROP TABLE t;
-- An existing bytea column of that name is used as it is.
CREATE TABLE t (id int PRIMARY KEY, a text, rowversion_changes bytea);
INSERT INTO t VALUES (1, 'x', '\xdeadbeef00');
SELECT rowversion.enable('t', conflicts => 'merge');
UPDATE t SET a = 'y', version = 0 WHERE id = 1;
UPDATE t SET a = 'y' WHERE id = 1 RETURNING version, length(rowversion_changes);
DROP TABLE t;
