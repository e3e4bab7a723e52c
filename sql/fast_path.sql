-- The trigger's UPDATE contract as an expression (src/fast_path.rs): when the library is
-- loaded at plan time, the planner puts a call in the SET list of an UPDATE of a versioned
-- table and the statement skips the trigger. EXPLAIN VERBOSE shows the call. EXECUTE stays
-- granted because the caller's UPDATE runs it; a call written by hand is refused (0A000).
CREATE FUNCTION rowversion.next_version(stored bigint, supplied bigint, row_table oid,
    row_id tid, mode integer) RETURNS bigint
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'rowversion_next_version';

CREATE FUNCTION rowversion.next_version(stored integer, supplied integer, row_table oid,
    row_id tid, mode integer) RETURNS integer
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'rowversion_next_version';

CREATE FUNCTION rowversion.next_version(stored smallint, supplied smallint, row_table oid,
    row_id tid, mode integer) RETURNS smallint
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'rowversion_next_version';

COMMENT ON FUNCTION rowversion.next_version(bigint, bigint, oid, tid, integer) IS
'The version trigger''s UPDATE rule as an expression: what the planner fast path puts in an UPDATE''s SET list';
COMMENT ON FUNCTION rowversion.next_version(integer, integer, oid, tid, integer) IS
'The version trigger''s UPDATE rule as an expression: what the planner fast path puts in an UPDATE''s SET list';
COMMENT ON FUNCTION rowversion.next_version(smallint, smallint, oid, tid, integer) IS
'The version trigger''s UPDATE rule as an expression: what the planner fast path puts in an UPDATE''s SET list';
