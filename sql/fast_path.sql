-- The trigger's UPDATE contract as an expression (src/fast_path.rs): when the library is
-- loaded at plan time, the planner puts a call in the SET list of a plain UPDATE of a
-- versioned table and the statement skips the trigger. EXPLAIN VERBOSE shows the call.
-- Not meant to be called by hand; EXECUTE stays granted because the caller's UPDATE runs it.
CREATE FUNCTION rowversion.next_version(stored bigint, supplied bigint, rel oid, row_id tid,
    version_column smallint, mode integer) RETURNS bigint
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'rowversion_next_version';

CREATE FUNCTION rowversion.next_version(stored integer, supplied integer, rel oid, row_id tid,
    version_column smallint, mode integer) RETURNS integer
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'rowversion_next_version';

CREATE FUNCTION rowversion.next_version(stored smallint, supplied smallint, rel oid, row_id tid,
    version_column smallint, mode integer) RETURNS smallint
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'rowversion_next_version';

COMMENT ON FUNCTION rowversion.next_version(bigint, bigint, oid, tid, smallint, integer) IS
'The version trigger''s UPDATE rule as an expression: what the planner fast path puts in an UPDATE''s SET list';
COMMENT ON FUNCTION rowversion.next_version(integer, integer, oid, tid, smallint, integer) IS
'The version trigger''s UPDATE rule as an expression: what the planner fast path puts in an UPDATE''s SET list';
COMMENT ON FUNCTION rowversion.next_version(smallint, smallint, oid, tid, smallint, integer) IS
'The version trigger''s UPDATE rule as an expression: what the planner fast path puts in an UPDATE''s SET list';
