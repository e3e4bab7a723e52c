-- Scenario 15, several writable nodes (#25): enable(..., multi_node => true) stamps every
-- image of a row with when and on which node it was written and the image it replaced
-- (rowversion_write), and decides rows that arrive from another node. The apply worker is
-- played here by this session: a replication origin set up and session_replication_role =
-- replica, as logical replication's apply worker runs; tests/multi_node.sh runs two real nodes.
\set VERBOSITY default
CREATE TABLE shared_accounts (id int PRIMARY KEY, balance int NOT NULL, note text);
SELECT rowversion.enable('shared_accounts', ignore_columns => '{note}', multi_node => true);
SELECT rel, version_column, multi_node FROM rowversion.tables WHERE rel = 'shared_accounts'::regclass;
-- The replication trigger fires ALWAYS (in the apply worker too), after the version trigger.
SELECT tgname, tgenabled FROM pg_trigger WHERE tgrelid = 'shared_accounts'::regclass ORDER BY tgname;
SELECT attname, atttypid::regtype FROM pg_attribute
WHERE attrelid = 'shared_accounts'::regclass AND attname = 'rowversion_write';
-- This node's system identifier, as stamps hold it.
CREATE TEMP TABLE node AS SELECT system_identifier AS id FROM pg_control_system();
CREATE TEMP TABLE images (step text, w bytea);
-- A local INSERT is stamped by this node; the image it replaced is unknown (zeros).
INSERT INTO shared_accounts VALUES (1, 100), (2, 200);
INSERT INTO images SELECT 'insert', rowversion_write FROM shared_accounts WHERE id = 1;
SELECT length(w) AS bytes, substr(w, 9, 8) = (SELECT int8send(id) FROM node) AS this_node,
       substr(w, 17) = '\x00000000000000000000000000000000'::bytea AS no_base
FROM images WHERE step = 'insert';
-- A local UPDATE that moves the version: a new stamp, based on the one before.
UPDATE shared_accounts SET balance = 110 WHERE id = 1;
INSERT INTO images SELECT 'update', rowversion_write FROM shared_accounts WHERE id = 1;
SELECT substr(u.w, 1, 16) <> substr(i.w, 1, 16) AS new_stamp, substr(u.w, 17) = substr(i.w, 1, 16) AS based_on_insert
FROM images u, images i WHERE u.step = 'update' AND i.step = 'insert';
-- An UPDATE of an ignored column leaves the version but is a new image of the row: two nodes
-- changing the note at once must not each take the other's.
UPDATE shared_accounts SET note = 'checked' WHERE id = 1;
INSERT INTO images SELECT 'note', rowversion_write FROM shared_accounts WHERE id = 1;
SELECT version, substr(n.w, 1, 16) <> substr(u.w, 1, 16) AS new_stamp, substr(n.w, 17) = substr(u.w, 1, 16) AS based_on_update
FROM shared_accounts, images n, images u WHERE id = 1 AND n.step = 'note' AND u.step = 'update';
-- A stamp set by hand is not the row's lineage: the trigger stamps.
UPDATE shared_accounts SET rowversion_write = '\x01' WHERE id = 1;
SELECT version, length(rowversion_write) AS bytes,
       substr(rowversion_write, 17) = substr((SELECT w FROM images WHERE step = 'note'), 1, 16) AS based_on_note
FROM shared_accounts WHERE id = 1;
-- An INSERT that brings its stamp (a restore, a copy) keeps it; a malformed one is replaced.
INSERT INTO shared_accounts SELECT 3, 300, NULL, 1, w FROM images WHERE step = 'insert';
SELECT rowversion_write = (SELECT w FROM images WHERE step = 'insert') AS kept FROM shared_accounts WHERE id = 3;
INSERT INTO shared_accounts VALUES (5, 500, NULL, 1, '\x0102');
SELECT length(rowversion_write) AS bytes FROM shared_accounts WHERE id = 5;

-- Stamps of another node (system identifier 2), earlier and later than any of this node's.
CREATE FUNCTION stamp(written_at bigint, node bigint) RETURNS bytea LANGUAGE sql
AS $$ SELECT int8send(written_at) || int8send(node) $$;
SELECT pg_replication_origin_create('node_b') > 0 AS origin;
SELECT pg_replication_origin_session_setup('node_b');
SET session_replication_role = replica;
-- A row the other node wrote on top of the local image: applied, nothing recorded.
UPDATE shared_accounts SET balance = 120, version = 3,
       rowversion_write = stamp(9000000000000000, 2) || substr(rowversion_write, 1, 16) WHERE id = 1;
-- The same image again (a change sent twice): applied.
UPDATE shared_accounts SET note = 'from b' WHERE id = 1;
SELECT id, balance, note, version FROM shared_accounts WHERE id = 1;
SELECT count(*) AS recorded FROM rowversion.replication_conflicts;
-- Written there from an image this node has moved past, at the same version: the later stamp
-- wins. This one is earlier: skipped, and recorded as lost.
UPDATE shared_accounts SET balance = 999, version = 3,
       rowversion_write = stamp(1, 2) || stamp(5, 2) WHERE id = 1;
SELECT balance, version FROM shared_accounts WHERE id = 1;
-- A higher version wins, however early its stamp: applied, and the local image recorded.
UPDATE shared_accounts SET balance = 250, version = 9,
       rowversion_write = stamp(2, 2) || stamp(5, 2) WHERE id = 2;
SELECT balance, version FROM shared_accounts WHERE id = 2;
-- The same version with a later stamp wins too.
UPDATE shared_accounts SET balance = 130, version = 3,
       rowversion_write = stamp(9100000000000000, 2) || stamp(5, 2) WHERE id = 1;
SELECT balance, version FROM shared_accounts WHERE id = 1;
SELECT rel, row_key, kept_version, lost_version, kept_node, lost_node = (SELECT id FROM node) AS lost_here,
       kept_row ->> 'balance' AS kept_balance, lost_row ->> 'balance' AS lost_balance
FROM rowversion.replication_conflicts ORDER BY id;
-- The image recorded lost first (balance 999) comes back as the base of a winning image: the
-- other node built on it, so nothing of it was lost and its record goes.
UPDATE shared_accounts SET balance = 1000, version = 4,
       rowversion_write = stamp(3, 2) || stamp(1, 2) WHERE id = 1;
SELECT balance, version FROM shared_accounts WHERE id = 1;
SELECT kept_row ->> 'balance' AS kept_balance, lost_row ->> 'balance' AS lost_balance
FROM rowversion.replication_conflicts ORDER BY id;
-- A remote INSERT is kept as it comes.
INSERT INTO shared_accounts VALUES (4, 400, NULL, 7, stamp(4, 2) || stamp(0, 0));
SELECT version, rowversion_write = stamp(4, 2) || stamp(0, 0) AS as_sent FROM shared_accounts WHERE id = 4;
SELECT pg_replication_origin_session_reset();
RESET session_replication_role;
-- A session that only sets session_replication_role (a data fix, a load) writes as this
-- node: the version trigger is off, the row gets a new image of this node, nothing is decided.
SET session_replication_role = replica;
UPDATE shared_accounts SET balance = 1 WHERE id = 4;
SELECT version, substr(rowversion_write, 9, 8) = (SELECT int8send(id) FROM node) AS this_node,
       substr(rowversion_write, 17) = stamp(4, 2) AS based_on_remote
FROM shared_accounts WHERE id = 4;
RESET session_replication_role;
-- Versions half the range apart are newer neither way: the later stamp decides.
CREATE TABLE small_versions (id int PRIMARY KEY, v int, version smallint NOT NULL DEFAULT 1);
SELECT rowversion.enable('small_versions', multi_node => true);
INSERT INTO small_versions VALUES (1, 1, 0, stamp(10, 2) || stamp(0, 0));
SELECT pg_replication_origin_session_setup('node_b');
SET session_replication_role = replica;
UPDATE small_versions SET v = 2, version = -32768, rowversion_write = stamp(20, 2) || stamp(5, 2) WHERE id = 1;
SELECT v, version FROM small_versions;
UPDATE small_versions SET v = 3, version = 0, rowversion_write = stamp(15, 2) || stamp(5, 2) WHERE id = 1;
SELECT v, version FROM small_versions;
SELECT pg_replication_origin_session_reset();
RESET session_replication_role;
DROP TABLE small_versions;

-- Who sees the records: roles that may SELECT from the table; nobody reads the log itself.
CREATE ROLE multi_node_reader;
SET ROLE multi_node_reader;
SELECT count(*) AS visible FROM rowversion.replication_conflicts;
SELECT count(*) FROM rowversion.replication_conflict_log;
RESET ROLE;
GRANT SELECT ON shared_accounts TO multi_node_reader;
SET ROLE multi_node_reader;
SELECT count(*) AS visible FROM rowversion.replication_conflicts;
-- A reader deletes the records it has reconciled, and only those it sees.
DELETE FROM rowversion.replication_conflicts WHERE lost_row ->> 'balance' = '200';
SELECT count(*) AS visible FROM rowversion.replication_conflicts;
RESET ROLE;
-- Under row-level security whole rows are not shown at all.
ALTER TABLE shared_accounts ENABLE ROW LEVEL SECURITY;
SET ROLE multi_node_reader;
SELECT count(*) AS visible FROM rowversion.replication_conflicts;
DELETE FROM rowversion.replication_conflicts;
RESET ROLE;
ALTER TABLE shared_accounts DISABLE ROW LEVEL SECURITY;
SELECT count(*) AS recorded FROM rowversion.replication_conflict_log;
DROP OWNED BY multi_node_reader;
DROP ROLE multi_node_reader;

-- Bad input.
CREATE TABLE multi_node_errors (id int PRIMARY KEY, rowversion_write int, v int);
SELECT rowversion.enable('multi_node_errors', multi_node => true);
SELECT rowversion.enable('multi_node_errors', 'rowversion_write', multi_node => true);
SELECT rowversion.enable('multi_node_errors', ignore_columns => '{rowversion_write}', multi_node => true);
SELECT rowversion.enable('multi_node_errors', conflicts => 'merge', merge_groups => '[["rowversion_write", "v"]]', multi_node => true);
ALTER TABLE multi_node_errors DROP COLUMN rowversion_write;
CREATE FUNCTION not_ours() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
CREATE TRIGGER rowversion_replication BEFORE UPDATE ON multi_node_errors FOR EACH ROW EXECUTE FUNCTION not_ours();
SELECT rowversion.enable('multi_node_errors', multi_node => true);
DROP TRIGGER rowversion_replication ON multi_node_errors;
-- enable() without multi_node takes the replication trigger away, the column stays; disable()
-- takes both triggers.
SELECT rowversion.enable('multi_node_errors', multi_node => true);
SELECT rowversion.enable('multi_node_errors');
SELECT tgname FROM pg_trigger WHERE tgrelid = 'multi_node_errors'::regclass ORDER BY tgname;
SELECT rowversion.enable('multi_node_errors', multi_node => true);
SELECT rowversion.disable('multi_node_errors');
SELECT tgname FROM pg_trigger WHERE tgrelid = 'multi_node_errors'::regclass ORDER BY tgname;
SELECT count(*) AS write_column FROM pg_attribute
WHERE attrelid = 'multi_node_errors'::regclass AND attname = 'rowversion_write';
-- The trigger function checks how it was created.
CREATE TRIGGER by_hand BEFORE UPDATE ON multi_node_errors FOR EACH ROW
EXECUTE FUNCTION rowversion.replication_trigger();
INSERT INTO multi_node_errors VALUES (1, 1);
UPDATE multi_node_errors SET v = 2;
DROP TABLE multi_node_errors, shared_accounts;
DROP FUNCTION stamp(bigint, bigint), not_ours();
SELECT pg_replication_origin_drop('node_b');
