-- Scenario 1 of shared/SCENARIOS.md: the lost update between two editors.
\set ON_ERROR_STOP off
\set VERBOSITY verbose
\set ECHO queries
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_rowversion;
DROP TABLE IF EXISTS products;
CREATE TABLE products (id int PRIMARY KEY, name text NOT NULL, price int NOT NULL);
SELECT rowversion.enable('products');
INSERT INTO products (id, name, price) VALUES (1, 'Espresso machine', 100000);

\echo '-- Editors A and B both open product 1 (version 1):'
SELECT id, price, version FROM products WHERE id = 1;

\echo '-- A saves 120000, stating the version A read:'
UPDATE products SET price = 120000, version = 1 WHERE id = 1;

\echo '-- B, still looking at the old form, saves 110000 with version 1:'
UPDATE products SET price = 110000, version = 1 WHERE id = 1;

\echo '-- B''s write was rejected (SQLSTATE 40001, the application answers HTTP 409); A''s price stays:'
SELECT id, price, version FROM products WHERE id = 1;
