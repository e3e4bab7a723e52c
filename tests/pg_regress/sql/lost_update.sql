-- Scenarios 1 and 3: two editors, read and write in separate transactions.
\set VERBOSITY default
CREATE TABLE products (id int PRIMARY KEY, name text NOT NULL, price int NOT NULL);
SELECT rowversion.enable('products');
INSERT INTO products (id, name, price) VALUES (1, 'Espresso machine', 100000);
-- A and B both read version 1.
SELECT id, price, version FROM products WHERE id = 1;
-- A saves first.
UPDATE products SET price = 120000, version = 1 WHERE id = 1;
-- B's stale write is rejected: first commit wins.
UPDATE products SET price = 110000, version = 1 WHERE id = 1;
SELECT id, price, version FROM products WHERE id = 1;
-- B re-reads (version 2) and saves again.
UPDATE products SET price = 110000, version = 2 WHERE id = 1;
SELECT id, price, version FROM products WHERE id = 1;
-- The error fields a driver exposes (psycopg diag.*, JDBC ServerErrorMessage):
SELECT * FROM error_fields('UPDATE products SET price = 1, version = 1 WHERE id = 1');
SELECT * FROM rowversion.tables;
DROP TABLE products;
