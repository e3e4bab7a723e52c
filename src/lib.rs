//! pg_rowversion: the database itself enforces optimistic concurrency.
//!
//! A `BEFORE INSERT OR UPDATE` trigger keeps a version column on every versioned table,
//! increments it on every UPDATE, and rejects an UPDATE that states a version which is no
//! longer the stored one with SQLSTATE 40001, naming table, row, expected and found version.
//!
//! Modules:
//! - [`enable`]: `rowversion.enable()` / `rowversion.disable()`, putting tables under version control;
//! - [`trigger`]: the per-row trigger, the product's hot path;
//! - [`version_column`]: which column, type and mode a trigger works on, cached per session;
//! - [`report`]: raising errors that carry schema, table and column fields.

use pgrx::prelude::*;

mod enable;
mod report;
mod trigger;
mod version_column;

::pgrx::pg_module_magic!(name, version);

extension_sql_file!("../sql/trigger.sql", name = "trigger_function");
extension_sql_file!("../sql/enable.sql", name = "enable_functions");
extension_sql_file!("../sql/tables.sql", name = "tables_view", requires = ["trigger_function"]);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    version_column::register_invalidation();
}

#[cfg(any(test, feature = "pg_test"))]
mod pg_tests;

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
