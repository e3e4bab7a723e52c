-- Scenario 4: writes that do not know about versions.
\set VERBOSITY default
CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL);
INSERT INTO accounts SELECT g, 1000000 FROM generate_series(1, 3) g;
SELECT rowversion.enable('accounts');
-- lenient (the default): a bulk update still moves every version, so readers notice.
UPDATE accounts SET balance = balance + 500000 WHERE id <= 2;
SELECT id, balance, version FROM accounts ORDER BY id;
-- strict: an UPDATE that does not state the version is refused.
SELECT rowversion.enable('accounts', mode => 'strict');
UPDATE accounts SET balance = balance + 1;
UPDATE accounts SET balance = balance - 300000, version = 2 WHERE id = 1;
SELECT id, balance, version FROM accounts ORDER BY id;
UPDATE accounts SET version = NULL WHERE id = 3;
SELECT * FROM rowversion.tables;
SELECT rowversion.disable('accounts');
SELECT rowversion.disable('accounts');
SELECT count(*) AS versioned_tables FROM rowversion.tables;
DROP TABLE accounts;
