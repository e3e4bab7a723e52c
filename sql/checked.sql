-- Checked updates and deletes (src/checked.rs). Plain V1 C functions: a version conflict
-- leaves them as the trigger's 40001 error, schema/table/column fields included.
-- Not STRICT: a NULL argument is an error (22004), never a silent no-op.
CREATE FUNCTION rowversion.update(rel regclass, key jsonb, expected_version bigint, changes jsonb)
RETURNS bigint
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'rowversion_update';

COMMENT ON FUNCTION rowversion.update(regclass, jsonb, bigint, jsonb) IS
'Updates the row with this primary key if its version is expected_version; returns the new version, raises 40001 on a conflict and P0002 when there is no such row';

CREATE FUNCTION rowversion.try_update(rel regclass, key jsonb, expected_version bigint, changes jsonb)
RETURNS TABLE (applied boolean, version bigint)
LANGUAGE c VOLATILE ROWS 1
AS 'MODULE_PATHNAME', 'rowversion_try_update';

COMMENT ON FUNCTION rowversion.try_update(regclass, jsonb, bigint, jsonb) IS
'Like update(), but reports instead of raising: applied, and the new or current version (NULL when there is no such row)';

CREATE FUNCTION rowversion.delete(rel regclass, key jsonb, expected_version bigint)
RETURNS void
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'rowversion_delete';

COMMENT ON FUNCTION rowversion.delete(regclass, jsonb, bigint) IS
'Deletes the row with this primary key if its version is expected_version; raises 40001 on a conflict and P0002 when there is no such row';

CREATE FUNCTION rowversion.current_version(rel regclass, key jsonb)
RETURNS bigint
LANGUAGE c STABLE
AS 'MODULE_PATHNAME', 'rowversion_current_version';

COMMENT ON FUNCTION rowversion.current_version(regclass, jsonb) IS
'The version of the row with this primary key, NULL when there is none';

CREATE FUNCTION rowversion.update_many(rel regclass, rows jsonb)
RETURNS bigint
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'rowversion_update_many';

COMMENT ON FUNCTION rowversion.update_many(regclass, jsonb) IS
'Checked updates of many rows, all or nothing: [{"key": {...}, "version": n, "changes": {...}}, ...]; returns the number of rows updated';

CREATE FUNCTION rowversion.changed_since(rel regclass, key jsonb, since bigint)
RETURNS TABLE (column_name name, version bigint)
LANGUAGE c STABLE
AS 'MODULE_PATHNAME', 'rowversion_changed_since';

COMMENT ON FUNCTION rowversion.changed_since(regclass, jsonb, bigint) IS
'For a table in merge mode: the columns of the row with this primary key that changed after version since, and the version at which each last changed (NULL: 255 or more versions ago); only columns the caller may SELECT';
