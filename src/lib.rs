//! pg_rowversion: the database itself enforces optimistic concurrency.
//!
//! A `BEFORE INSERT OR UPDATE` trigger keeps a version column on every versioned table,
//! increments it on every UPDATE, and rejects an UPDATE that states a version which is no
//! longer the stored one with SQLSTATE 40001, naming table, row, expected and found version.
//!
//! Modules:
//! - [`enable`]: `rowversion.enable()` / `rowversion.disable()`, putting tables under version control;
//! - [`trigger`]: the per-row trigger, the product's hot path;
//! - [`contract`]: the contract's errors and what they may show, raised by the trigger, the
//!   fast path and the checked functions alike;
//! - [`checked`]: `rowversion.update()` and friends, checked writes as function calls;
//! - [`diagnostics`]: `rowversion.row_locks()`, who holds a lock on one row (the other lock
//!   diagnostics are SQL);
//! - [`lease`]: `rowversion.lease_acquire()` and friends, named locks with a lifetime and
//!   fencing tokens;
//! - [`fast_path`]: the planner fast path, the trigger's contract in the UPDATE's SET list;
//! - [`merge`]: column-aware conflicts (`conflicts => 'merge'`), the per-row record of when
//!   each column last changed;
//! - [`merge_action`]: which MERGE action the trigger fires for;
//! - [`observe`]: `conflicts => 'observe'`, would-be refusals let through and logged;
//! - [`stats`]: the conflict counters in shared memory (`rowversion.conflict_stats`);
//! - [`replication`]: `multi_node`, tables written on several nodes that replicate to each
//!   other: replication conflicts decided alike on every node, the losers recorded;
//! - [`version_column`]: which column, type and mode a trigger works on, cached per session;
//! - [`http`]: errors, If-Match and ETag for HTTP layers (`pg_rowversion.error_mapping`);
//! - [`citus`]: what the fast path and the errors need to know of Citus tables and shards;
//! - [`report`]: raising errors that carry schema, table and column fields.

use pgrx::prelude::*;

mod checked;
mod citus;
mod contract;
mod diagnostics;
mod enable;
mod encoding;
mod fast_path;
mod fmgr;
mod http;
mod identity;
mod jsonb;
mod key;
mod lease;
mod merge;
mod merge_action;
mod node;
mod observe;
mod replication;
mod report;
mod stats;
mod table;
mod trigger;
mod version_column;

::pgrx::pg_module_magic!(name, version);

extension_sql_file!("../sql/bootstrap.sql", name = "schema_check", bootstrap);
extension_sql_file!("../sql/trigger.sql", name = "trigger_function");
extension_sql_file!("../sql/enable.sql", name = "enable_functions");
extension_sql_file!("../sql/tables.sql", name = "tables_view", requires = ["trigger_function", "replication"]);
extension_sql_file!("../sql/checked.sql", name = "checked_functions");
extension_sql_file!("../sql/diagnostics.sql", name = "diagnostics");
extension_sql_file!("../sql/leases.sql", name = "leases");
extension_sql_file!("../sql/fast_path.sql", name = "fast_path");
extension_sql_file!("../sql/conflict_stats.sql", name = "conflict_stats");
extension_sql_file!("../sql/replication.sql", name = "replication");

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    // SAFETY: called once per backend when the library is loaded; the callback has the
    // signature Postgres expects and lives as long as the library.
    unsafe { pg_sys::CacheRegisterRelcacheCallback(Some(forget_relation), pg_sys::Datum::from(0)) };
    fast_path::install(trigger::rowversion_version_trigger);
    http::install();
    observe::install();
    stats::install();
}

/// Relcache invalidation: the table's definition changed (or, for InvalidOid, maybe all did),
/// so what the session cached about it is dropped.
#[pg_guard]
unsafe extern "C-unwind" fn forget_relation(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    version_column::forget(relid);
    table::forget(relid);
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
