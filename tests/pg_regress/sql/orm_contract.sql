-- The trigger's contract for ORMs that keep their own version column (issue 12).
\set VERBOSITY terse
-- 1. A version the writer moves forward itself, by one or by a time-based jump, is accepted and
-- kept when it is newer than the stored one; the same version is "I read it" (checked, then
-- incremented); an older one is a conflict.
CREATE TABLE concurrency_items (id int PRIMARY KEY, name text, version bigint NOT NULL DEFAULT 1);
SELECT rowversion.enable('concurrency_items');
INSERT INTO concurrency_items (id, name) VALUES (1, 'a');
-- django-concurrency's IntegerVersionField: filter(version=read).update(version=<new number>)
UPDATE concurrency_items SET name = 'b', version = 1763850000000001 WHERE id = 1 AND version = 1;
SELECT name, version FROM concurrency_items;
-- a stale editor, who read version 1, sends its own newer number but filters on version 1: no row
UPDATE concurrency_items SET name = 'stale', version = 1763850000000002 WHERE id = 1 AND version = 1;
-- a writer without a WHERE on the version that sends an older number: a conflict
UPDATE concurrency_items SET name = 'stale', version = 1 WHERE id = 1;
-- Django's filter(version=read).update(version=read+1), and plain SQL stating the read version
UPDATE concurrency_items SET name = 'c', version = 1763850000000002 WHERE id = 1 AND version = 1763850000000001;
UPDATE concurrency_items SET name = 'd', version = 1763850000000002 WHERE id = 1;
SELECT name, version FROM concurrency_items;

-- 2. Bookkeeping columns: an UPDATE of ignored columns only neither moves the version nor is
-- refused in strict mode, so it turns no open form into a conflict.
CREATE TABLE accounts_user (id int PRIMARY KEY, email text, last_login timestamptz, sign_in_count int NOT NULL DEFAULT 0);
SELECT rowversion.enable('accounts_user', 'version', 'strict', '{last_login, sign_in_count}');
SELECT rel, version_column, mode, ignore_columns FROM rowversion.tables WHERE rel = 'accounts_user'::regclass;
INSERT INTO accounts_user (id, email) VALUES (1, 'ann@example.com');
-- Django's update_last_login, Rails' increment_counter:
UPDATE accounts_user SET last_login = '2026-11-22 10:00+00' WHERE id = 1;
UPDATE accounts_user SET sign_in_count = sign_in_count + 1 WHERE id = 1;
SELECT sign_in_count, version FROM accounts_user;
-- the form a user opened at version 1 still saves
UPDATE accounts_user SET email = 'anne@example.com', version = 1 WHERE id = 1;
-- a change of anything else still needs the version in strict mode
UPDATE accounts_user SET email = 'x@example.com', last_login = now() WHERE id = 1;
SELECT email, version FROM accounts_user;
-- renames follow; an ignored column can be dropped once enable() no longer names it
ALTER TABLE accounts_user RENAME COLUMN sign_in_count TO logins;
SELECT ignore_columns FROM rowversion.tables WHERE rel = 'accounts_user'::regclass;
ALTER TABLE accounts_user DROP COLUMN logins;
SELECT rowversion.enable('accounts_user', 'version', 'strict', '{last_login}');
ALTER TABLE accounts_user DROP COLUMN logins;
SELECT ignore_columns FROM rowversion.tables WHERE rel = 'accounts_user'::regclass;
-- bad lists
SELECT rowversion.enable('accounts_user', ignore_columns => '{nope}');
SELECT rowversion.enable('accounts_user', ignore_columns => '{version}');
DROP TABLE concurrency_items, accounts_user;
