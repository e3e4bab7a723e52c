//! `#[pg_test]`s: one per rule of the contract in the README. Each test runs in its own
//! transaction, which the harness rolls back. Errors are caught in PL/pgSQL by
//! `tests.error_of()`, so tests match on the SQLSTATE and on the error fields a driver sees.

use pgrx::prelude::*;

#[pg_schema]
mod tests {
    use pgrx::prelude::*;
    use serde::Deserialize;

    extension_sql!(
        r#"
    CREATE FUNCTION tests.error_of(statement text) RETURNS jsonb
    LANGUAGE plpgsql AS $$
    DECLARE
        state text; message text; detail text; hint text;
        schema_name text; table_name text; column_name text;
    BEGIN
        EXECUTE statement;
        RETURN NULL;
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS
            state = RETURNED_SQLSTATE, message = MESSAGE_TEXT,
            detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT,
            schema_name = SCHEMA_NAME, table_name = TABLE_NAME, column_name = COLUMN_NAME;
        RETURN jsonb_build_object(
            'sqlstate', state, 'message', message,
            'detail', nullif(detail, ''), 'hint', nullif(hint, ''),
            'schema', nullif(schema_name, ''), 'table', nullif(table_name, ''),
            'column', nullif(column_name, ''));
    END
    $$;
    GRANT USAGE ON SCHEMA tests TO PUBLIC;
    "#,
        name = "error_of"
    );

    #[derive(Debug, Deserialize)]
    struct SqlError {
        sqlstate: String,
        message: String,
        detail: Option<String>,
        hint: Option<String>,
        schema: Option<String>,
        table: Option<String>,
        column: Option<String>,
    }

    fn run(sql: &str) {
        Spi::run(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    fn int(sql: &str) -> i64 {
        Spi::get_one::<i64>(sql).unwrap_or_else(|e| panic!("{sql}: {e}")).expect("NULL result")
    }

    fn text(sql: &str) -> Option<String> {
        Spi::get_one::<String>(sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// The error `sql` raises; panics when it succeeds.
    fn error(sql: &str) -> SqlError {
        let json = Spi::get_one_with_args::<pgrx::JsonB>("SELECT tests.error_of($1)", &[sql.into()])
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .unwrap_or_else(|| panic!("expected an error from: {sql}"));
        serde_json::from_value(json.0).expect("error_of() returns the SqlError shape")
    }

    fn products(table: &str) {
        run(&format!("CREATE TABLE {table} (id int PRIMARY KEY, name text, price int)"));
        run(&format!("SELECT rowversion.enable('{table}')"));
        run(&format!("INSERT INTO {table} (id, name, price) VALUES (1, 'Widget', 100000)"));
    }

    // ---- enable() ----

    #[pg_test]
    fn enable_adds_a_bigint_not_null_default_1_column() {
        run("CREATE TABLE plain (id int PRIMARY KEY)");
        run("INSERT INTO plain SELECT generate_series(1, 3)");
        run("SELECT rowversion.enable('plain')");
        assert_eq!(
            text(
                "SELECT format_type(atttypid, atttypmod) || ' ' || attnotnull || ' ' || pg_get_expr(d.adbin, d.adrelid)
                  FROM pg_attribute a JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                  WHERE attrelid = 'plain'::regclass AND attname = 'version'"
            ),
            Some("bigint true 1".into())
        );
        assert_eq!(int("SELECT count(*) FROM plain WHERE version = 1"), 3);
    }

    #[pg_test]
    fn enable_keeps_an_existing_integer_column_and_fills_its_nulls() {
        for (table, sql_type) in [("v_small", "smallint"), ("v_int", "integer"), ("v_big", "bigint")] {
            run(&format!("CREATE TABLE {table} (id int PRIMARY KEY, lock_version {sql_type})"));
            run(&format!("INSERT INTO {table} VALUES (1, NULL), (2, 7)"));
            run(&format!("SELECT rowversion.enable('{table}', 'lock_version')"));
            assert_eq!(
                text(&format!("SELECT format_type(atttypid, NULL) FROM pg_attribute WHERE attrelid = '{table}'::regclass AND attname = 'lock_version'")),
                Some(sql_type.into())
            );
            assert_eq!(int(&format!("SELECT lock_version FROM {table} WHERE id = 1")), 1, "{table}: NULL became 1");
            assert_eq!(int(&format!("SELECT lock_version FROM {table} WHERE id = 2")), 7, "{table}: 7 kept");
        }
    }

    #[pg_test]
    fn enable_rejects_a_column_of_another_type() {
        run("CREATE TABLE t_text (id int PRIMARY KEY, version text)");
        let e = error("SELECT rowversion.enable('t_text')");
        assert_eq!(e.sqlstate, "42804");
        assert_eq!(
            e.message,
            "column \"version\" of table \"public.t_text\" has type text, which cannot hold a version"
        );
        assert_eq!(int("SELECT count(*) FROM pg_trigger WHERE tgrelid = 't_text'::regclass"), 0);
    }

    #[pg_test]
    fn enable_rejects_generated_and_identity_columns() {
        run("CREATE TABLE t_gen (id int PRIMARY KEY, v bigint GENERATED ALWAYS AS (id * 2) STORED, w bigint GENERATED ALWAYS AS IDENTITY)");
        assert_eq!(error("SELECT rowversion.enable('t_gen', 'v')").sqlstate, "42611");
        assert_eq!(error("SELECT rowversion.enable('t_gen', 'w')").sqlstate, "42611");
    }

    #[pg_test]
    fn enable_twice_changes_mode_and_column_in_place() {
        products("twice");
        run("UPDATE twice SET price = 0"); // the session now caches the column and mode
        let trigger_oid = int("SELECT oid::bigint FROM pg_trigger WHERE tgrelid = 'twice'::regclass");
        run("SELECT rowversion.enable('twice', mode => 'strict')");
        assert_eq!(int("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'twice'::regclass"), 1);
        assert_eq!(text("SELECT mode FROM rowversion.tables WHERE rel = 'twice'::regclass"), Some("strict".into()));
        assert_eq!(error("UPDATE twice SET price = 1").sqlstate, "42P10", "strict mode is in force at once");

        run("ALTER TABLE twice ADD COLUMN revision integer");
        run("SELECT rowversion.enable('twice', 'revision')");
        assert_eq!(int("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'twice'::regclass"), 1);
        assert_eq!(
            text("SELECT version_column || ' ' || mode FROM rowversion.tables WHERE rel = 'twice'::regclass"),
            Some("revision lenient".into())
        );
        run("UPDATE twice SET price = 2");
        assert_eq!(
            int("SELECT oid::bigint FROM pg_trigger WHERE tgrelid = 'twice'::regclass"),
            trigger_oid,
            "replaced in place"
        );
        assert_eq!(int("SELECT revision FROM twice"), 2, "the new column moves");
        assert_eq!(int("SELECT version FROM twice"), 2, "the old column no longer does");
        run("ALTER TABLE twice DROP COLUMN version"); // no longer referenced by the trigger
    }

    #[pg_test]
    fn enable_and_disable_require_ownership() {
        products("owned");
        run("CREATE ROLE rv_stranger");
        run("GRANT ALL ON owned TO rv_stranger"); // even with every privilege
        run("SET LOCAL ROLE rv_stranger");
        let e = error("SELECT rowversion.enable('owned', mode => 'strict')");
        assert_eq!((e.sqlstate.as_str(), e.message.as_str()), ("42501", "must be owner of table public.owned"));
        assert_eq!(error("SELECT rowversion.disable('owned')").sqlstate, "42501");
        run("RESET ROLE");
        run("CREATE ROLE rv_owner_member");
        run("GRANT rv_owner_member TO rv_stranger");
        run("ALTER TABLE owned OWNER TO rv_owner_member");
        run("SET LOCAL ROLE rv_stranger");
        run("SELECT rowversion.disable('owned')"); // members of the owning role may
        run("RESET ROLE");
    }

    #[pg_test]
    fn disable_removes_the_trigger_and_keeps_the_column() {
        products("off");
        run("SELECT rowversion.disable('off')");
        assert_eq!(int("SELECT count(*) FROM rowversion.tables WHERE rel = 'off'::regclass"), 0);
        run("UPDATE off SET price = 1, version = 99");
        assert_eq!(int("SELECT version FROM off"), 99, "no trigger any more");
        run("SELECT rowversion.disable('off')"); // not versioned: a NOTICE, no error
    }

    #[pg_test]
    fn tables_view_follows_renames_and_the_trigger_state() {
        products("before_rename");
        run("ALTER TABLE before_rename RENAME TO after_rename");
        run("ALTER TABLE after_rename RENAME COLUMN version TO lock_version");
        assert_eq!(
            text("SELECT rel::text || ' ' || version_column || ' ' || mode || ' ' || enabled FROM rowversion.tables WHERE rel = 'after_rename'::regclass"),
            Some("after_rename lock_version lenient true".into())
        );
        run("UPDATE after_rename SET price = 1");
        assert_eq!(int("SELECT lock_version FROM after_rename"), 2, "the trigger follows the rename too");
        run("ALTER TABLE after_rename DISABLE TRIGGER rowversion");
        assert_eq!(
            text("SELECT enabled::text FROM rowversion.tables WHERE rel = 'after_rename'::regclass"),
            Some("false".into())
        );
    }

    #[pg_test]
    fn the_version_column_cannot_be_dropped_while_versioned() {
        products("keep_col");
        assert_eq!(error("ALTER TABLE keep_col DROP COLUMN version").sqlstate, "2BP01");
    }

    #[pg_test]
    fn enable_rejects_what_is_not_a_table() {
        assert_eq!(error("SELECT rowversion.enable('no_such_table')").sqlstate, "42P01");
        assert_eq!(error("SELECT rowversion.enable(4000000000::oid::regclass)").sqlstate, "42P01");
        run("CREATE TABLE base (id int PRIMARY KEY)");
        run("CREATE VIEW a_view AS SELECT * FROM base");
        let e = error("SELECT rowversion.enable('a_view')");
        assert_eq!((e.sqlstate.as_str(), e.message.as_str()), ("42809", "\"public.a_view\" is a view, not a table"));
        run("CREATE MATERIALIZED VIEW a_matview AS SELECT * FROM base");
        assert_eq!(error("SELECT rowversion.enable('a_matview')").sqlstate, "42809");
        run("CREATE SEQUENCE a_seq");
        assert_eq!(error("SELECT rowversion.enable('a_seq')").sqlstate, "42809");
    }

    #[pg_test]
    fn enable_rejects_an_unknown_mode() {
        run("CREATE TABLE modes (id int PRIMARY KEY)");
        let e = error("SELECT rowversion.enable('modes', mode => 'loose')");
        assert_eq!((e.sqlstate.as_str(), e.message.as_str()), ("22023", "invalid mode \"loose\""));
        assert_eq!(
            int("SELECT count(*) FROM pg_attribute WHERE attrelid = 'modes'::regclass AND attname = 'version'"),
            0,
            "nothing half-done"
        );
    }

    #[pg_test]
    fn enable_refuses_to_replace_a_foreign_trigger_named_rowversion() {
        run("CREATE TABLE taken (id int PRIMARY KEY, version int)");
        run("CREATE FUNCTION pg_temp.noop() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END'");
        run("CREATE TRIGGER rowversion BEFORE UPDATE ON taken FOR EACH ROW EXECUTE FUNCTION pg_temp.noop()");
        assert_eq!(error("SELECT rowversion.enable('taken')").sqlstate, "42710");
    }

    #[pg_test]
    fn quoted_column_and_table_names_work() {
        run(r#"CREATE TABLE "Order Lines" (id int PRIMARY KEY, "Version" int)"#);
        run(r#"SELECT rowversion.enable('"Order Lines"', 'Version')"#);
        run(r#"INSERT INTO "Order Lines" (id) VALUES (1)"#);
        run(r#"UPDATE "Order Lines" SET "Version" = 1 WHERE id = 1"#);
        assert_eq!(int(r#"SELECT "Version" FROM "Order Lines""#), 2);
        let e = error(r#"UPDATE "Order Lines" SET "Version" = 1 WHERE id = 1"#);
        assert_eq!(e.message, "row version conflict on table \"public.Order Lines\"");
        assert_eq!((e.table.as_deref(), e.column.as_deref()), (Some("Order Lines"), Some("Version")));
    }

    #[pg_test]
    fn partitioned_tables_version_every_partition() {
        run("CREATE TABLE parted (id int PRIMARY KEY, price int) PARTITION BY RANGE (id)");
        run("CREATE TABLE parted_1 PARTITION OF parted FOR VALUES FROM (0) TO (100)");
        run("SELECT rowversion.enable('parted')");
        run("CREATE TABLE parted_2 PARTITION OF parted FOR VALUES FROM (100) TO (200)"); // attached later
        run("INSERT INTO parted (id, price) VALUES (1, 10), (150, 20)");
        run("UPDATE parted SET price = price + 1");
        assert_eq!(int("SELECT sum(version)::bigint FROM parted"), 4);
        let e = error("UPDATE parted SET price = 0, version = 1 WHERE id = 150");
        assert_eq!((e.sqlstate.as_str(), e.table.as_deref()), ("40001", Some("parted_2")));
        assert_eq!(
            text("SELECT string_agg(rel::text, ',') FROM rowversion.tables WHERE rel::text LIKE 'parted%'"),
            Some("parted".into())
        );
        let e = error("SELECT rowversion.disable('parted_1')");
        assert_eq!(
            (e.sqlstate.as_str(), e.message.as_str()),
            ("42809", "table \"public.parted_1\" is a partition of versioned table \"parted\"")
        );
    }

    // ---- the trigger ----

    #[pg_test]
    fn insert_sets_a_null_version_to_1_and_keeps_a_supplied_one() {
        run("CREATE TABLE ins (id int PRIMARY KEY, version int)");
        run("SELECT rowversion.enable('ins')");
        run("INSERT INTO ins VALUES (1, NULL), (2, 42)");
        run("INSERT INTO ins (id) VALUES (3)");
        assert_eq!(text("SELECT string_agg(version::text, ',' ORDER BY id) FROM ins"), Some("1,42,1".into()));
    }

    #[pg_test]
    fn lenient_update_without_version_increments_every_row() {
        products("bulk");
        run("INSERT INTO bulk (id, price) SELECT g, g FROM generate_series(2, 5) g");
        run("UPDATE bulk SET price = price + 1");
        run("UPDATE bulk SET price = price + 1 WHERE id <= 2");
        assert_eq!(text("SELECT string_agg(version::text, ',' ORDER BY id) FROM bulk"), Some("3,3,2,2,2".into()));
    }

    #[pg_test]
    fn strict_update_without_version_is_rejected() {
        products("strictly");
        run("SELECT rowversion.enable('strictly', mode => 'strict')");
        let e = error("UPDATE strictly SET price = 1");
        assert_eq!(e.sqlstate, "42P10");
        assert_eq!(e.message, "UPDATE of table \"public.strictly\" must set version column \"version\"");
        assert!(e.hint.unwrap().starts_with("Add version = <the version you read> to the SET list"));
        assert_eq!((e.table.as_deref(), e.column.as_deref()), (Some("strictly"), Some("version")));
        run("UPDATE strictly SET price = 1, version = 1");
        assert_eq!(int("SELECT version FROM strictly"), 2, "stating the version is accepted");
    }

    #[pg_test]
    fn supplied_version_equal_to_stored_is_accepted_and_incremented() {
        products("same");
        run("UPDATE same SET price = 120000, version = 1 WHERE id = 1");
        assert_eq!(int("SELECT version FROM same"), 2);
    }

    #[pg_test]
    fn orm_pattern_supplying_read_plus_one_is_not_double_incremented() {
        products("orm");
        run("UPDATE orm SET price = 120000, version = 2 WHERE id = 1 AND version = 1");
        assert_eq!(int("SELECT version FROM orm"), 2);
        // The stale ORM write matches no row: the ORM sees 0 rows and raises its own error.
        assert_eq!(int("WITH u AS (UPDATE orm SET price = 110000, version = 2 WHERE id = 1 AND version = 1 RETURNING 1) SELECT count(*) FROM u"), 0);
        assert_eq!(int("SELECT price FROM orm"), 120000);
    }

    #[pg_test]
    fn null_supplied_version_is_rejected() {
        products("nulls");
        let e = error("UPDATE nulls SET version = NULL");
        assert_eq!((e.sqlstate.as_str(), e.column.as_deref()), ("22004", Some("version")));
    }

    #[pg_test]
    fn stale_version_raises_the_conflict_with_key_versions_and_fields() {
        products("stale");
        run("UPDATE stale SET price = 120000, version = 1 WHERE id = 1"); // editor A
        let e = error("UPDATE stale SET price = 110000, version = 1 WHERE id = 1"); // editor B
        assert_eq!(e.sqlstate, "40001");
        assert_eq!(e.message, "row version conflict on table \"public.stale\"");
        assert_eq!(e.detail.as_deref(), Some("Key (id)=(1): expected version 1, found version 2."));
        assert_eq!(e.hint.as_deref(), Some("Re-read the row and retry with its current version."));
        assert_eq!(
            (e.schema.as_deref(), e.table.as_deref(), e.column.as_deref()),
            (Some("public"), Some("stale"), Some("version"))
        );
        assert_eq!(int("SELECT price FROM stale"), 120000, "A's write stays");
        let e = error("UPDATE stale SET version = 0 WHERE id = 1"); // older than either: a conflict
        assert_eq!(e.detail.as_deref(), Some("Key (id)=(1): expected version 0, found version 2."));
    }

    #[pg_test]
    fn a_newer_version_is_kept_as_supplied() {
        products("newer");
        // django-concurrency's IntegerVersionField: a time-based number, checked by the
        // statement's own WHERE clause.
        run("UPDATE newer SET price = 2, version = 1700000000000 WHERE id = 1 AND version = 1");
        assert_eq!(int("SELECT version FROM newer"), 1700000000000);
        run("UPDATE newer SET price = 3, version = 1700000000000 WHERE id = 1");
        assert_eq!(int("SELECT version FROM newer"), 1700000000001, "the stored one: incremented");
        let e = error("UPDATE newer SET price = 4, version = 1699999999999 WHERE id = 1");
        assert_eq!(
            e.detail.as_deref(),
            Some("Key (id)=(1): expected version 1699999999999, found version 1700000000001.")
        );
    }

    #[pg_test]
    fn updates_of_ignored_columns_only_do_not_count() {
        run("CREATE TABLE users (id int PRIMARY KEY, name text, last_login timestamptz, logins int DEFAULT 0)");
        run("SELECT rowversion.enable('users', ignore_columns => '{last_login, logins}')");
        run("INSERT INTO users (id, name) VALUES (1, 'ann')");
        run("UPDATE users SET last_login = now(), logins = logins + 1");
        assert_eq!(int("SELECT version FROM users"), 1, "bookkeeping: no new version");
        run("UPDATE users SET name = 'anne', last_login = now()");
        assert_eq!(int("SELECT version FROM users"), 2, "any other column counts");
        run("SELECT rowversion.enable('users', mode => 'strict', ignore_columns => '{last_login, logins}')");
        run("UPDATE users SET logins = logins + 1");
        assert_eq!(int("SELECT version FROM users"), 2, "not refused in strict mode either");
        assert_eq!(error("UPDATE users SET name = 'x'").sqlstate, "42P10");
        run("UPDATE users SET logins = 5, version = 2");
        assert_eq!(int("SELECT version FROM users"), 3, "naming the version: checked and moved");
        assert_eq!(error("UPDATE users SET logins = 6, version = 1").sqlstate, "40001");
        assert_eq!(
            int(r#"SELECT rowversion.update('users', '{"id": 1}', 3, '{"logins": 7}')"#),
            4,
            "checked functions always count"
        );
    }

    #[pg_test]
    fn ignored_columns_follow_renames_are_listed_and_can_be_dropped_once_released() {
        run("CREATE TABLE counted (id int PRIMARY KEY, hits int DEFAULT 0)");
        run("SELECT rowversion.enable('counted', ignore_columns => ARRAY['hits'])");
        let listed = "SELECT ignore_columns::text FROM rowversion.tables WHERE rel = 'counted'::regclass";
        assert_eq!(text(listed), Some("{hits}".into()));
        run("ALTER TABLE counted RENAME COLUMN hits TO views");
        assert_eq!(text(listed), Some("{views}".into()));
        run("INSERT INTO counted VALUES (1)");
        run("UPDATE counted SET views = views + 1");
        assert_eq!(int("SELECT version FROM counted"), 1);
        let e = error("ALTER TABLE counted DROP COLUMN views");
        assert_eq!(e.sqlstate, "2BP01", "the trigger depends on it: versioning is never lost silently");
        run("SELECT rowversion.enable('counted')");
        run("ALTER TABLE counted DROP COLUMN views");
        assert_eq!(text(listed), Some("{}".into()));
        run("UPDATE counted SET id = 1");
        assert_eq!(int("SELECT version FROM counted"), 2);
    }

    #[pg_test]
    fn ignore_columns_must_name_other_columns_of_the_table() {
        products("ign");
        let e = error("SELECT rowversion.enable('ign', ignore_columns => '{nope}')");
        assert_eq!(
            (e.sqlstate.as_str(), e.message.as_str()),
            ("42703", "column \"nope\" of table \"public.ign\" does not exist")
        );
        assert_eq!(error("SELECT rowversion.enable('ign', ignore_columns => '{version}')").sqlstate, "22023");
        assert_eq!(error("SELECT rowversion.enable('ign', ignore_columns => ARRAY[NULL]::name[])").sqlstate, "22004");
        let e = error("SELECT rowversion.enable('ign', ignore_columns => array_fill('price'::name, ARRAY[1601]))");
        assert_eq!(
            (e.sqlstate.as_str(), e.message.as_str()),
            ("22023", "ignore_columns names 1601 columns, more than a table can have")
        );
        run("SELECT rowversion.enable('ign', ignore_columns => '{price, price}')");
        assert_eq!(
            text("SELECT ignore_columns::text FROM rowversion.tables WHERE rel = 'ign'::regclass"),
            Some("{price}".into())
        );
    }

    #[pg_test]
    fn newer_is_serial_number_order_in_the_column_width() {
        run("CREATE TABLE narrow (id int PRIMARY KEY, version smallint)");
        run("SELECT rowversion.enable('narrow')");
        run("INSERT INTO narrow VALUES (1, 32767)");
        run("UPDATE narrow SET version = -32768");
        assert_eq!(int("SELECT version FROM narrow"), -32768, "stored + 1, across the wrap, is newer");
        run("UPDATE narrow SET version = -1");
        assert_eq!(int("SELECT version FROM narrow"), -1, "32,767 ahead is newer");
        let e = error("UPDATE narrow SET version = 32767");
        assert_eq!(e.sqlstate, "40001", "32,768 ahead is not newer: behind, in serial-number order");
    }

    #[pg_test]
    fn conflict_detail_shows_composite_keys() {
        run("CREATE TABLE lines (order_id int, line int, qty int, PRIMARY KEY (order_id, line))");
        run("SELECT rowversion.enable('lines')");
        run("INSERT INTO lines VALUES (7, 2, 1)");
        let e = error("UPDATE lines SET qty = 2, version = 0");
        assert_eq!(e.detail.as_deref(), Some("Key (order_id, line)=(7, 2): expected version 0, found version 1."));
    }

    #[pg_test]
    fn conflict_detail_hides_key_and_version_from_a_role_that_may_not_read_them() {
        products("secret");
        run("CREATE ROLE rv_writer");
        run("GRANT UPDATE (price, version) ON secret TO rv_writer");
        run("SET LOCAL ROLE rv_writer");
        let e = error("UPDATE secret SET price = 1, version = 0");
        run("RESET ROLE");
        assert_eq!(e.sqlstate, "40001");
        assert_eq!(e.detail.as_deref(), Some("Key and version hidden: the row has changed."));
    }

    #[pg_test]
    fn include_columns_of_the_primary_key_are_not_part_of_the_key() {
        run("CREATE TABLE incl (id int, extra int, note text, PRIMARY KEY (id) INCLUDE (extra))");
        run("SELECT rowversion.enable('incl')");
        run("INSERT INTO incl VALUES (1, 2, 'a')");
        assert_eq!(int(r#"SELECT rowversion.update('incl', '{"id": 1}', 1, '{"note": "b"}')"#), 2);
    }

    #[pg_test]
    fn conflict_detail_shows_the_version_to_a_role_that_reads_it_through_the_partitioned_table() {
        run("CREATE TABLE parted (id int PRIMARY KEY, price int) PARTITION BY RANGE (id)");
        run("CREATE TABLE parted_1 PARTITION OF parted FOR VALUES FROM (0) TO (10)");
        run("SELECT rowversion.enable('parted')");
        run("INSERT INTO parted VALUES (1, 1)");
        run("CREATE ROLE rv_reader");
        run("GRANT SELECT, UPDATE ON parted TO rv_reader");
        run("SET LOCAL ROLE rv_reader");
        let e = error("UPDATE parted SET price = 2, version = 0 WHERE id = 1");
        run("RESET ROLE");
        // The key comes from the partition's own index, which the role may not read, as in
        // Postgres' unique-violation details; the version it may read through the parent.
        assert_eq!(e.detail.as_deref(), Some("Expected version 0, found version 1."));
    }

    #[pg_test]
    fn conflict_detail_without_a_primary_key_has_no_key() {
        run("CREATE TABLE nokey (name text)");
        run("SELECT rowversion.enable('nokey')");
        run("INSERT INTO nokey VALUES ('x')");
        assert_eq!(
            error("UPDATE nokey SET version = 0").detail.as_deref(),
            Some("Expected version 0, found version 1.")
        );
    }

    #[pg_test]
    fn increments_wrap_at_the_maximum_of_the_type() {
        for (table, sql_type, max, min) in [
            ("w2", "smallint", "32767", "-32768"),
            ("w4", "integer", "2147483647", "-2147483648"),
            ("w8", "bigint", "9223372036854775807", "-9223372036854775808"),
        ] {
            run(&format!("CREATE TABLE {table} (id int PRIMARY KEY, n int, version {sql_type})"));
            run(&format!("SELECT rowversion.enable('{table}')"));
            run(&format!("INSERT INTO {table} VALUES (1, 0, {max}), (2, 0, {max})"));
            run(&format!("UPDATE {table} SET n = 1 WHERE id = 1")); // lenient
            run(&format!("UPDATE {table} SET n = 1, version = {max} WHERE id = 2")); // stated
            assert_eq!(
                text(&format!("SELECT string_agg(version::text, ',' ORDER BY id) FROM {table}")),
                Some(format!("{min},{min}")),
                "{sql_type}"
            );
            run(&format!("UPDATE {table} SET n = 2, version = {min} + 1 WHERE id = 1 AND version = {min}")); // ORM across the wrap
            assert_eq!(
                text(&format!("SELECT version::text FROM {table} WHERE id = 1")),
                Some(format!("{}", min.parse::<i64>().unwrap() + 1))
            );
        }
    }

    #[pg_test]
    fn a_stored_null_counts_as_version_0() {
        products("was_off");
        run("ALTER TABLE was_off ALTER COLUMN version DROP NOT NULL");
        run("ALTER TABLE was_off DISABLE TRIGGER rowversion");
        run("UPDATE was_off SET version = NULL");
        run("ALTER TABLE was_off ENABLE TRIGGER rowversion");
        run("UPDATE was_off SET price = 1");
        assert_eq!(int("SELECT version FROM was_off"), 1);
    }

    #[pg_test]
    fn the_version_column_type_cannot_be_altered_while_versioned() {
        products("altered");
        let e = error("ALTER TABLE altered ALTER COLUMN version TYPE numeric");
        assert_eq!(
            (e.sqlstate.as_str(), e.message.as_str()),
            ("0A000", "cannot alter type of a column used in a trigger definition")
        );
    }

    #[pg_test]
    fn a_hand_made_trigger_without_when_clause_is_reported() {
        run("CREATE TABLE by_hand (id int PRIMARY KEY, version int)");
        run("CREATE TRIGGER by_hand BEFORE UPDATE ON by_hand FOR EACH ROW EXECUTE FUNCTION rowversion.version_trigger('lenient')");
        run("INSERT INTO by_hand VALUES (1, 1)");
        let e = error("UPDATE by_hand SET version = 2");
        assert_eq!(
            (e.sqlstate.as_str(), e.message.as_str()),
            ("42P17", "trigger \"by_hand\" was not created by rowversion.enable()")
        );
        run("CREATE TABLE after_stmt (id int)");
        run("CREATE TRIGGER after_stmt AFTER UPDATE ON after_stmt EXECUTE FUNCTION rowversion.version_trigger('lenient')");
        run("INSERT INTO after_stmt VALUES (1)");
        assert_eq!(error("UPDATE after_stmt SET id = 2").sqlstate, "39P01");
        assert_eq!(error("SELECT rowversion.version_trigger()").sqlstate, "39P01");
        run("CREATE TABLE text_version (id int PRIMARY KEY, version text)");
        run("CREATE TRIGGER rowversion BEFORE UPDATE ON text_version FOR EACH ROW WHEN (NEW.version IS NULL OR true) EXECUTE FUNCTION rowversion.version_trigger('lenient')");
        run("INSERT INTO text_version VALUES (1, 'a')");
        let e = error("UPDATE text_version SET version = 'b'");
        assert_eq!((e.sqlstate.as_str(), e.message.as_str()), ("42804", "version column \"version\" has type text"));
    }

    #[pg_test]
    fn upsert_and_merge_updates_are_versioned() {
        products("upsert");
        run("INSERT INTO upsert (id, price) VALUES (1, 5) ON CONFLICT (id) DO UPDATE SET price = excluded.price");
        assert_eq!(int("SELECT version FROM upsert"), 2);
        run("MERGE INTO upsert u USING (SELECT 1 AS id) s ON u.id = s.id WHEN MATCHED THEN UPDATE SET price = 6");
        assert_eq!(int("SELECT version FROM upsert"), 3);
    }

    #[pg_test]
    fn replica_role_does_not_fire_the_trigger() {
        products("replicated");
        run("SET LOCAL session_replication_role = replica");
        run("UPDATE replicated SET price = 1, version = 40");
        run("SET LOCAL session_replication_role = origin");
        assert_eq!(int("SELECT version FROM replicated"), 40, "versions arrive as the publisher wrote them");
    }

    // ---- checked updates and deletes ----

    fn accounts(table: &str) {
        run(&format!(
            "CREATE TABLE {table} (id int PRIMARY KEY, owner text, balance bigint, opened timestamptz, \
             tags text[], meta jsonb, doubled bigint GENERATED ALWAYS AS (balance * 2) STORED)"
        ));
        run(&format!("SELECT rowversion.enable('{table}')"));
        run(&format!("INSERT INTO {table} (id, owner, balance) VALUES (1, 'ann', 1000000)"));
    }

    #[pg_test]
    fn update_applies_changes_of_every_kind_and_returns_the_new_version() {
        accounts("acc_update");
        let version = int(r#"SELECT rowversion.update('acc_update', '{"id": 1}', 1,
            '{"owner": "bob", "balance": 1500000, "opened": "2026-01-02T03:04:05Z",
              "tags": ["a", "b"], "meta": {"x": [1, 2]}}')"#);
        assert_eq!(version, 2);
        assert_eq!(
            text("SELECT concat_ws('|', owner, balance, opened AT TIME ZONE 'UTC', tags, meta, doubled, version) FROM acc_update"),
            Some(r#"bob|1500000|2026-01-02 03:04:05|{a,b}|{"x": [1, 2]}|3000000|2"#.into())
        );
        assert_eq!(int(r#"SELECT rowversion.update('acc_update', '{"id": 1}', 2, '{"owner": null}')"#), 3);
        assert_eq!(text("SELECT coalesce(owner, 'NULL') FROM acc_update"), Some("NULL".into()));
        assert_eq!(
            int(r#"SELECT rowversion.update('acc_update', '{"id": 1}', 3, '{}')"#),
            4,
            "no changes still moves the version"
        );
    }

    #[pg_test]
    fn update_with_a_stale_version_raises_the_triggers_conflict() {
        accounts("acc_stale");
        run(r#"SELECT rowversion.update('acc_stale', '{"id": 1}', 1, '{"balance": 1500000}')"#);
        let e = error(r#"SELECT rowversion.update('acc_stale', '{"id": 1}', 1, '{"balance": 700000}')"#);
        assert_eq!(e.sqlstate, "40001");
        assert_eq!(e.message, "row version conflict on table \"public.acc_stale\"");
        assert_eq!(e.detail.as_deref(), Some("Key (id)=(1): expected version 1, found version 2."));
        assert_eq!(e.hint.as_deref(), Some("Re-read the row and retry with its current version."));
        assert_eq!(
            (e.schema.as_deref(), e.table.as_deref(), e.column.as_deref()),
            (Some("public"), Some("acc_stale"), Some("version"))
        );
        // The version after the stored one is a conflict too (the trigger alone would take it
        // as the ORM pattern; a checked update states the version it read).
        assert_eq!(error(r#"SELECT rowversion.update('acc_stale', '{"id": 1}', 3, '{}')"#).sqlstate, "40001");
        assert_eq!(int("SELECT balance FROM acc_stale"), 1500000);
    }

    #[pg_test]
    fn update_of_a_missing_row_is_no_data_found() {
        accounts("acc_missing");
        let e = error(r#"SELECT rowversion.update('acc_missing', '{"id": 42}', 1, '{"balance": 1}')"#);
        assert_eq!(
            (e.sqlstate.as_str(), e.message.as_str()),
            ("P0002", r#"no row in table "public.acc_missing" has key {"id": 42}"#)
        );
    }

    #[pg_test]
    fn the_key_must_be_exactly_the_primary_key() {
        accounts("acc_key");
        let e = error(r#"SELECT rowversion.update('acc_key', '{"owner": "ann"}', 1, '{}')"#);
        assert_eq!(
            (e.sqlstate.as_str(), e.message.as_str()),
            ("22023", "key does not match the primary key of table \"public.acc_key\"")
        );
        assert_eq!(
            e.detail.as_deref(),
            Some(r#"Missing: "id". Not in the primary key: "owner". The primary key is ("id")."#)
        );
        let e = error(r#"SELECT rowversion.update('acc_key', '{"id": 1, "x": 2}', 1, '{}')"#);
        assert_eq!(e.detail.as_deref(), Some(r#"Not in the primary key: "x". The primary key is ("id")."#));
        assert_eq!(
            error(r#"SELECT rowversion.update('acc_key', '[1]', 1, '{}')"#).message,
            "key must be a JSON object"
        );
        assert_eq!(
            error(r#"SELECT rowversion.update('acc_key', '{"id": 1}', 1, '[]')"#).message,
            "changes must be a JSON object"
        );
    }

    #[pg_test]
    fn changes_may_not_name_unknown_version_or_generated_columns() {
        accounts("acc_changes");
        let e = error(r#"SELECT rowversion.update('acc_changes', '{"id": 1}', 1, '{"nope": 1}')"#);
        assert_eq!(
            (e.sqlstate.as_str(), e.message.as_str()),
            ("42703", "column \"nope\" of table \"public.acc_changes\" does not exist")
        );
        let e = error(r#"SELECT rowversion.update('acc_changes', '{"id": 1}', 1, '{"version": 5}')"#);
        assert_eq!(
            (e.sqlstate.as_str(), e.message.as_str()),
            ("428C9", "changes must not set version column \"version\" of table \"public.acc_changes\"")
        );
        assert_eq!(
            error(r#"SELECT rowversion.update('acc_changes', '{"id": 1}', 1, '{"doubled": 5}')"#).sqlstate,
            "428C9"
        );
        assert_eq!(
            error(r#"SELECT rowversion.update('acc_changes', '{"id": 1}', 1, '{"ctid": "(0,1)"}')"#).sqlstate,
            "42703"
        );
    }

    #[pg_test]
    fn checked_functions_need_a_versioned_table_with_a_primary_key() {
        run("CREATE TABLE unversioned (id int PRIMARY KEY)");
        let e = error(r#"SELECT rowversion.update('unversioned', '{"id": 1}', 1, '{}')"#);
        assert_eq!(
            (e.sqlstate.as_str(), e.message.as_str()),
            ("55000", "table \"public.unversioned\" is not versioned")
        );
        assert_eq!(e.hint.as_deref(), Some("Enable it with: SELECT rowversion.enable('public.unversioned');"));
        run("CREATE TABLE keyless (n int)");
        run("SELECT rowversion.enable('keyless')");
        assert_eq!(error(r#"SELECT rowversion.current_version('keyless', '{}')"#).sqlstate, "55000");
        accounts("acc_paused");
        run("ALTER TABLE acc_paused DISABLE TRIGGER rowversion");
        assert_eq!(error(r#"SELECT rowversion.update('acc_paused', '{"id": 1}', 1, '{}')"#).sqlstate, "55000");
    }

    #[pg_test]
    fn null_arguments_are_errors_not_silent_no_ops() {
        accounts("acc_nulls");
        let e = error(r#"SELECT rowversion.update('acc_nulls', '{"id": 1}', NULL, '{}')"#);
        assert_eq!((e.sqlstate.as_str(), e.message.as_str()), ("22004", "expected_version must not be NULL"));
        assert_eq!(error(r#"SELECT rowversion.delete('acc_nulls', NULL, 1)"#).sqlstate, "22004");
        assert_eq!(error(r#"SELECT * FROM rowversion.try_update(NULL, '{"id": 1}', 1, '{}')"#).sqlstate, "22004");
    }

    #[pg_test]
    fn try_update_reports_instead_of_raising() {
        accounts("acc_try");
        let outcome = |sql: &str| text(&format!("SELECT applied || '/' || coalesce(version::text, 'NULL') FROM {sql}"));
        assert_eq!(
            outcome(r#"rowversion.try_update('acc_try', '{"id": 1}', 1, '{"balance": 5}')"#),
            Some("true/2".into())
        );
        assert_eq!(
            outcome(r#"rowversion.try_update('acc_try', '{"id": 1}', 1, '{"balance": 6}')"#),
            Some("false/2".into())
        );
        assert_eq!(
            outcome(r#"rowversion.try_update('acc_try', '{"id": 9}', 1, '{"balance": 6}')"#),
            Some("false/NULL".into())
        );
        assert_eq!(int("SELECT balance FROM acc_try"), 5);
    }

    #[pg_test]
    fn delete_checks_the_version() {
        accounts("acc_delete");
        run("INSERT INTO acc_delete (id) VALUES (2)");
        run(r#"SELECT rowversion.update('acc_delete', '{"id": 1}', 1, '{}')"#);
        let e = error(r#"SELECT rowversion.delete('acc_delete', '{"id": 1}', 1)"#);
        assert_eq!(
            (e.sqlstate.as_str(), e.detail.as_deref()),
            ("40001", Some("Key (id)=(1): expected version 1, found version 2."))
        );
        run(r#"SELECT rowversion.delete('acc_delete', '{"id": 1}', 2)"#);
        assert_eq!(error(r#"SELECT rowversion.delete('acc_delete', '{"id": 1}', 2)"#).sqlstate, "P0002");
        assert_eq!(int("SELECT count(*) FROM acc_delete"), 1);
    }

    #[pg_test]
    fn current_version_is_null_for_a_missing_row() {
        accounts("acc_current");
        run("UPDATE acc_current SET balance = 0");
        assert_eq!(int(r#"SELECT rowversion.current_version('acc_current', '{"id": 1}')"#), 2);
        assert_eq!(text(r#"SELECT rowversion.current_version('acc_current', '{"id": 2}')::text"#), None);
    }

    #[pg_test]
    fn update_many_is_all_or_nothing() {
        accounts("acc_many");
        run("INSERT INTO acc_many (id, balance) VALUES (2, 0), (3, 0)");
        assert_eq!(
            int(r#"SELECT rowversion.update_many('acc_many', '[
            {"key": {"id": 1}, "version": 1, "changes": {"balance": 10}},
            {"key": {"id": 2}, "version": 1, "changes": {"balance": 20}}]')"#),
            2
        );
        let e = error(
            r#"SELECT rowversion.update_many('acc_many', '[
            {"key": {"id": 3}, "version": 1, "changes": {"balance": 30}},
            {"key": {"id": 1}, "version": 1, "changes": {"balance": 11}}]')"#,
        );
        assert_eq!(
            (e.sqlstate.as_str(), e.detail.as_deref()),
            ("40001", Some("Key (id)=(1): expected version 1, found version 2."))
        );
        assert_eq!(
            text("SELECT string_agg(balance || '@' || version, ',' ORDER BY id) FROM acc_many"),
            Some("10@2,20@2,0@1".into()),
            "row 3 rolled back"
        );
        let e = error(
            r#"SELECT rowversion.update_many('acc_many', '[{"key": {"id": 3}, "version": "1", "changes": {}}]')"#,
        );
        assert_eq!(
            (e.sqlstate.as_str(), e.message.as_str()),
            ("22023", r#"rows[0]: "version" must be an integer within the range of bigint"#)
        );
        assert_eq!(error(r#"SELECT rowversion.update_many('acc_many', '{}')"#).sqlstate, "22023");
    }

    #[pg_test]
    fn checked_functions_work_with_smallint_and_integer_versions_and_composite_keys() {
        for sql_type in ["smallint", "integer"] {
            run("DROP TABLE IF EXISTS order_lines");
            run(&format!("CREATE TABLE order_lines (order_id int, line int, qty int, version {sql_type}, PRIMARY KEY (order_id, line))"));
            run("SELECT rowversion.enable('order_lines')");
            run("INSERT INTO order_lines VALUES (7, 1, 1), (7, 2, 1)");
            assert_eq!(
                int(r#"SELECT rowversion.update('order_lines', '{"order_id": 7, "line": 2}', 1, '{"qty": 5}')"#),
                2
            );
            let e = error(r#"SELECT rowversion.update('order_lines', '{"line": 2, "order_id": 7}', 1, '{"qty": 6}')"#);
            assert_eq!(
                e.detail.as_deref(),
                Some("Key (order_id, line)=(7, 2): expected version 1, found version 2."),
                "{sql_type}"
            );
            assert_eq!(
                text("SELECT string_agg(qty || '@' || version, ',' ORDER BY line) FROM order_lines"),
                Some("1@1,5@2".into())
            );
        }
    }

    #[pg_test]
    fn checked_functions_run_with_the_callers_privileges() {
        accounts("acc_priv");
        run("CREATE ROLE rv_reader");
        run("GRANT SELECT ON acc_priv TO rv_reader");
        run("SET LOCAL ROLE rv_reader");
        let e = error(r#"SELECT rowversion.update('acc_priv', '{"id": 1}', 1, '{"balance": 0}')"#);
        assert_eq!(e.sqlstate, "42501");
        assert_eq!(int(r#"SELECT rowversion.current_version('acc_priv', '{"id": 1}')"#), 1);
        run("RESET ROLE");
        run("CREATE ROLE rv_clerk");
        run("GRANT SELECT, UPDATE ON acc_priv TO rv_clerk");
        run("ALTER TABLE acc_priv ENABLE ROW LEVEL SECURITY");
        run("CREATE POLICY own_rows ON acc_priv USING (owner = current_user)");
        run("SET LOCAL ROLE rv_clerk");
        // The row is invisible under the policy, as it would be to a plain UPDATE.
        assert_eq!(
            error(r#"SELECT rowversion.update('acc_priv', '{"id": 1}', 1, '{"balance": 0}')"#).sqlstate,
            "P0002"
        );
        run("RESET ROLE");
        assert_eq!(int("SELECT balance FROM acc_priv"), 1000000);
    }

    #[pg_test]
    fn hostile_identifiers_and_keys_get_a_clean_error_or_a_correct_update() {
        run(
            r#"CREATE TABLE "evil""; DROP TABLE evil_victim; --" ("id; DROP" int PRIMARY KEY, "it's ""quoted""" text)"#,
        );
        run("CREATE TABLE evil_victim (n int)");
        run(r#"SELECT rowversion.enable('"evil""; DROP TABLE evil_victim; --"')"#);
        run(r#"INSERT INTO "evil""; DROP TABLE evil_victim; --" VALUES (1, 'x')"#);
        let table = r#"'"evil""; DROP TABLE evil_victim; --"'"#;
        assert_eq!(
            int(&format!(
                r#"SELECT rowversion.update({table}, '{{"id; DROP": 1}}', 1, '{{"it''s \"quoted\"": "'');DROP TABLE evil_victim;--"}}')"#
            )),
            2
        );
        assert_eq!(
            text(r#"SELECT "it's ""quoted""" FROM "evil""; DROP TABLE evil_victim; --""#),
            Some("');DROP TABLE evil_victim;--".into())
        );
        let e = error(&format!(
            r#"SELECT rowversion.update({table}, '{{"id; DROP": 1}}', 2, '{{"\"; DROP TABLE evil_victim; --": 1}}')"#
        ));
        assert_eq!(e.sqlstate, "42703");
        let e = error(&format!(r#"SELECT rowversion.update({table}, '{{"1) OR (1=1": 1}}', 2, '{{}}')"#));
        assert_eq!(e.sqlstate, "22023");
        assert_eq!(int("SELECT count(*) FROM evil_victim"), 0, "the victim table still exists");
    }

    #[pg_test]
    fn cached_statements_follow_renames_and_new_columns() {
        accounts("acc_ddl");
        run(r#"SELECT rowversion.update('acc_ddl', '{"id": 1}', 1, '{"balance": 1}')"#); // prepares
        run("ALTER TABLE acc_ddl RENAME COLUMN balance TO amount");
        run("ALTER TABLE acc_ddl RENAME COLUMN version TO lock_version");
        assert_eq!(int(r#"SELECT rowversion.update('acc_ddl', '{"id": 1}', 2, '{"amount": 2}')"#), 3);
        assert_eq!(error(r#"SELECT rowversion.update('acc_ddl', '{"id": 1}', 3, '{"balance": 3}')"#).sqlstate, "42703");
        run("ALTER TABLE acc_ddl ADD COLUMN note text");
        assert_eq!(int(r#"SELECT rowversion.update('acc_ddl', '{"id": 1}', 3, '{"note": "hi"}')"#), 4);
        assert_eq!(text("SELECT amount || note || lock_version FROM acc_ddl"), Some("2hi4".into()));
    }

    #[pg_test]
    fn checked_functions_reach_rows_through_a_partitioned_parent() {
        run("CREATE TABLE acc_parted (id int PRIMARY KEY, balance int) PARTITION BY RANGE (id)");
        run("CREATE TABLE acc_parted_1 PARTITION OF acc_parted FOR VALUES FROM (0) TO (100)");
        run("SELECT rowversion.enable('acc_parted')");
        run("INSERT INTO acc_parted VALUES (5, 0)");
        assert_eq!(int(r#"SELECT rowversion.update('acc_parted', '{"id": 5}', 1, '{"balance": 1}')"#), 2);
        assert_eq!(error(r#"SELECT rowversion.update('acc_parted', '{"id": 5}', 1, '{}')"#).sqlstate, "40001");
    }

    // ---- lock diagnostics ----

    #[pg_test]
    fn row_locks_requires_select_on_the_table() {
        run("CREATE TABLE guarded (id int PRIMARY KEY)");
        run("INSERT INTO guarded VALUES (1)");
        run("CREATE ROLE rv_outsider");
        run("SET LOCAL ROLE rv_outsider");
        let e = error(r#"SELECT * FROM rowversion.row_locks('guarded', '{"id": 1}')"#);
        run("RESET ROLE");
        assert_eq!((e.sqlstate.as_str(), e.message.as_str()), ("42501", "permission denied for table guarded"));
    }

    #[pg_test]
    fn row_locks_checks_the_key_and_the_row() {
        run("CREATE TABLE lockable (id int PRIMARY KEY, n int)");
        run("INSERT INTO lockable VALUES (1, 0)");
        assert_eq!(error(r#"SELECT * FROM rowversion.row_locks('lockable', '{"n": 1}')"#).sqlstate, "22023");
        assert_eq!(error(r#"SELECT * FROM rowversion.row_locks('lockable', '{"id": 2}')"#).sqlstate, "P0002");
        assert_eq!(int(r#"SELECT count(*) FROM rowversion.row_locks('lockable', '{"id": 1}')"#), 0);
        run("SELECT * FROM lockable WHERE id = 1 FOR NO KEY UPDATE");
        assert_eq!(
            text(
                r#"SELECT mode || ' ' || (pids = ARRAY[pg_backend_pid()]) || ' ' || (locker = pg_current_xact_id()::xid) FROM rowversion.row_locks('lockable', '{"id": 1}')"#
            ),
            Some("For No Key Update true true".into()),
            "the current transaction's own lock"
        );
    }

    #[pg_test]
    fn the_advisory_locks_of_lease_waiters_are_left_out_of_advisory_locks_and_counted_by_leases() {
        use crate::lease::queue::{waiter_tag, QUEUE_TAG, WAITER_TAG};
        run("SELECT rowversion.lease_acquire('printer', '1 min')");
        run("SELECT pg_advisory_xact_lock(42)");
        let hash = int("SELECT hashtext('printer')::bigint") as u32;
        for tag in [waiter_tag(hash, 0, QUEUE_TAG), waiter_tag(hash, 7, WAITER_TAG)] {
            // SAFETY: a share lock of this transaction, granted at once (nobody else locks the
            // tag) and released when the harness rolls the transaction back.
            unsafe { pg_sys::LockAcquire(&tag, pg_sys::ShareLock as pg_sys::LOCKMODE, false, true) };
        }
        let held = format!(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND objsubid IN ({WAITER_TAG}, {QUEUE_TAG})"
        );
        assert_eq!(int(&held), 2, "a waiter's tags are advisory locks");
        assert_eq!(
            int("SELECT count(*) FROM rowversion.advisory_locks() WHERE pid = pg_backend_pid()"),
            1,
            "only pg_advisory_xact_lock(42) is listed"
        );
        assert_eq!(
            int("SELECT waiting FROM rowversion.leases WHERE name = 'printer'"),
            1,
            "the waiter tag counts, the queue tag does not"
        );
    }

    // ---- the library's symbols and their SQL declarations ----

    /// Every `v1_function!` of the library.
    const V1_FUNCTIONS: [crate::fmgr::Declaration; 21] = [
        crate::checked::rowversion_update::DECLARATION,
        crate::checked::rowversion_try_update::DECLARATION,
        crate::checked::rowversion_delete::DECLARATION,
        crate::checked::rowversion_current_version::DECLARATION,
        crate::checked::rowversion_update_many::DECLARATION,
        crate::checked::rowversion_changed_since::DECLARATION,
        crate::diagnostics::row_locks_wrapper::DECLARATION,
        crate::enable::enable_wrapper::DECLARATION,
        crate::enable::disable_wrapper::DECLARATION,
        crate::fast_path::rowversion_next_version::DECLARATION,
        crate::lease::rowversion_lease_acquire::DECLARATION,
        crate::lease::rowversion_lease_renew::DECLARATION,
        crate::lease::rowversion_lease_release::DECLARATION,
        crate::lease::rowversion_lease_check::DECLARATION,
        crate::lease::rowversion_lease_break::DECLARATION,
        crate::replication::rowversion_replication_trigger::DECLARATION,
        crate::stats::rowversion_conflict_counts::DECLARATION,
        crate::stats::rowversion_conflict_stats_reset::DECLARATION,
        crate::trigger::rowversion_version_trigger::DECLARATION,
        crate::version_column::rowversion_trigger_columns::DECLARATION,
        crate::version_column::rowversion_merge_groups::DECLARATION,
    ];

    #[pg_test]
    fn every_c_function_of_the_extension_is_declared_as_its_v1_function_states() {
        // Each C function of the extension's schema: its symbol, a tab, and its signature
        // written as `Declaration` writes it.
        let declared = text(
            r#"SELECT string_agg(p.prosrc || E'\t' || p.proname || '(' || pg_catalog.oidvectortypes(p.proargtypes) || ') -> '
                   || CASE WHEN p.proretset THEN 'SETOF ' ELSE '' END
                   || CASE WHEN p.proallargtypes IS NULL THEN pg_catalog.format_type(p.prorettype, NULL)
                      ELSE '(' || (SELECT string_agg(pg_catalog.format_type(a.type, NULL), ', ' ORDER BY a.n)
                                   FROM unnest(p.proallargtypes, p.proargmodes) WITH ORDINALITY AS a(type, mode, n)
                                   WHERE a.mode IN ('o', 'b', 't')) || ')' END,
                   E'\n' ORDER BY p.prosrc, p.proname, p.oid)
               FROM pg_catalog.pg_proc p
               WHERE p.pronamespace = 'rowversion'::regnamespace
                 AND p.prolang = (SELECT oid FROM pg_catalog.pg_language WHERE lanname = 'c')"#,
        )
        .expect("the extension has C functions");
        let declared: Vec<(&str, &str)> =
            declared.lines().map(|line| line.split_once('\t').expect("symbol and signature")).collect();
        for &(symbol, signature) in &declared {
            let function = V1_FUNCTIONS
                .iter()
                .find(|function| function.symbol == symbol)
                .unwrap_or_else(|| panic!("{signature}: no v1_function! in V1_FUNCTIONS is {symbol}"));
            assert!(
                function.signatures.contains(&signature),
                "{signature} is declared with symbol {symbol}, whose v1_function! states {:?}",
                function.signatures
            );
        }
        for function in V1_FUNCTIONS {
            assert!(
                declared.iter().any(|&(symbol, _)| symbol == function.symbol),
                "no SQL function calls {}",
                function.symbol
            );
        }
    }

    #[pg_test]
    fn advisory_key_decodes_both_forms_of_the_key() {
        run("SELECT pg_advisory_xact_lock(-2)");
        run("SELECT pg_advisory_xact_lock(7, -3)");
        assert_eq!(
            text("SELECT string_agg(key || ' ' || key1 || ' ' || key2 || ' ' || taken_with, '; ' ORDER BY taken_with) FROM rowversion.advisory_locks() WHERE pid = pg_backend_pid()"),
            Some("-2 -1 -2 bigint; 34359738365 7 -3 int4, int4".into())
        );
    }
}
