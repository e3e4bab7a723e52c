-- Runs first. The control file names the schema "rowversion"; CREATE EXTENSION creates it
-- when it does not exist and otherwise installs into it as it is. A schema that another role
-- prepared may already hold, say, an overload of rowversion.update() that matches a caller's
-- arguments better than ours, which would then run with the rights of every superuser who
-- calls it. So the schema must be owned by the installing role or a superuser (pg_restore
-- creates it, owned by the original installer, just before CREATE EXTENSION), no other role
-- may create objects in it, and it must be empty.
-- Every operator below is pg_catalog's: this script's search_path includes that schema.
DO $check$
DECLARE
    schema_oid pg_catalog.oid;
    owner_oid pg_catalog.oid;
    owner_name pg_catalog.text;
    detail constant pg_catalog.text :=
        'pg_rowversion installs only into a schema that the installing role or a superuser owns, '
        'that no other role may create objects in, and that is empty.';
    hint constant pg_catalog.text :=
        'Check what schema "rowversion" holds and who made it, drop or rename it, then run CREATE EXTENSION pg_rowversion again.';
BEGIN
    SELECT n.oid, n.nspowner, r.rolname INTO schema_oid, owner_oid, owner_name
    FROM pg_catalog.pg_namespace n
    JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) n.nspowner
    WHERE n.nspname OPERATOR(pg_catalog.=) 'rowversion';
    IF owner_oid OPERATOR(pg_catalog.<>) (SELECT u.oid FROM pg_catalog.pg_roles u WHERE u.rolname OPERATOR(pg_catalog.=) CURRENT_USER)
       AND NOT (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.oid OPERATOR(pg_catalog.=) owner_oid) THEN
        RAISE EXCEPTION 'schema "rowversion" is owned by role "%"', owner_name
            USING ERRCODE = 'insufficient_privilege', DETAIL = detail, HINT = hint;
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_namespace n, pg_catalog.aclexplode(n.nspacl) a
               WHERE n.oid OPERATOR(pg_catalog.=) schema_oid
                 AND a.privilege_type OPERATOR(pg_catalog.=) 'CREATE'
                 AND a.grantee OPERATOR(pg_catalog.<>) n.nspowner) THEN
        RAISE EXCEPTION 'other roles may create objects in schema "rowversion"'
            USING ERRCODE = 'insufficient_privilege', DETAIL = detail, HINT = hint;
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_class WHERE relnamespace OPERATOR(pg_catalog.=) schema_oid)
       OR EXISTS (SELECT FROM pg_catalog.pg_proc WHERE pronamespace OPERATOR(pg_catalog.=) schema_oid)
       OR EXISTS (SELECT FROM pg_catalog.pg_type WHERE typnamespace OPERATOR(pg_catalog.=) schema_oid)
       OR EXISTS (SELECT FROM pg_catalog.pg_operator WHERE oprnamespace OPERATOR(pg_catalog.=) schema_oid)
       OR EXISTS (SELECT FROM pg_catalog.pg_collation WHERE collnamespace OPERATOR(pg_catalog.=) schema_oid)
       OR EXISTS (SELECT FROM pg_catalog.pg_conversion WHERE connamespace OPERATOR(pg_catalog.=) schema_oid)
       OR EXISTS (SELECT FROM pg_catalog.pg_opclass WHERE opcnamespace OPERATOR(pg_catalog.=) schema_oid)
       OR EXISTS (SELECT FROM pg_catalog.pg_opfamily WHERE opfnamespace OPERATOR(pg_catalog.=) schema_oid)
       OR EXISTS (SELECT FROM pg_catalog.pg_ts_config WHERE cfgnamespace OPERATOR(pg_catalog.=) schema_oid)
       OR EXISTS (SELECT FROM pg_catalog.pg_ts_dict WHERE dictnamespace OPERATOR(pg_catalog.=) schema_oid)
       OR EXISTS (SELECT FROM pg_catalog.pg_statistic_ext WHERE stxnamespace OPERATOR(pg_catalog.=) schema_oid) THEN
        RAISE EXCEPTION 'schema "rowversion" already contains objects'
            USING ERRCODE = 'object_not_in_prerequisite_state', DETAIL = detail, HINT = hint;
    END IF;
END
$check$;
