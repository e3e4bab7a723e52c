CREATE EXTENSION pg_rowversion;
-- The fields of the error a statement raises, as a driver sees them.
CREATE FUNCTION error_fields(statement text)
RETURNS TABLE (state text, schema_name text, table_name text, column_name text)
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE statement;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, schema_name = SCHEMA_NAME,
        table_name = TABLE_NAME, column_name = COLUMN_NAME;
    RETURN NEXT;
END
$$;
-- The SQLSTATE and message (its first 100 characters) of a statement, or 'ok'.
CREATE FUNCTION outcome(statement text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE statement;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || left(SQLERRM, 100);
END
$$;
