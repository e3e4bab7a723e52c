//! The contract's errors and what they may disclose: the version trigger, the planner fast
//! path and the checked functions apply the same contract (see the README), so they raise the
//! same errors, with the same SQLSTATEs, HTTP statuses, texts and error fields. A conflict
//! shows the row's key and stored version only as far as the current role could read them
//! itself ([`describe_key`], [`column_privilege`]).

use pgrx::pg_sys;
use pgrx::spi::quote_identifier;
use pgrx::PgSqlErrorCode;

use crate::citus;
use crate::encoding;
use crate::node::attribute;
use crate::report::Report;

/// Every error of the contract, raised by the trigger, the fast path and the checked
/// functions alike, each with a stable SQLSTATE.
#[derive(Debug, thiserror::Error)]
pub enum ContractError {
    #[error("trigger \"{trigger}\" was not created by rowversion.enable()")]
    NotCreatedByEnable { trigger: String },
    #[error("version column \"{column}\" has type {type_name}")]
    UnsupportedType { column: String, type_name: String },
    #[error("UPDATE of table \"{table}\" must set version column \"{column}\"")]
    VersionRequired { table: String, column: String },
    #[error("null value supplied for version column \"{column}\" of table \"{table}\"")]
    NullVersion { table: String, column: String },
    /// `key` and `found` are `None` where the current role may not read them; `changed`, in
    /// merge mode, the columns the UPDATE changes that the current role may read and that
    /// changed since `expected` (or, in `unknown`, may have: the row's record does not reach
    /// back that far).
    #[error("row version conflict on table \"{table}\"")]
    Conflict {
        table: String,
        key: Option<String>,
        expected: i64,
        found: Option<i64>,
        changed: Vec<String>,
        unknown: Vec<String>,
    },
    /// The request's If-Match names no version the row has (behind an HTTP layer).
    #[error("If-Match precondition failed on table \"{table}\"")]
    PreconditionFailed { table: String, key: Option<String>, found: Option<i64> },
}

impl ContractError {
    pub fn sqlstate(&self) -> PgSqlErrorCode {
        match self {
            Self::NotCreatedByEnable { .. } => PgSqlErrorCode::ERRCODE_INVALID_OBJECT_DEFINITION,
            Self::UnsupportedType { .. } => PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH,
            Self::VersionRequired { .. } => PgSqlErrorCode::ERRCODE_INVALID_COLUMN_REFERENCE,
            Self::NullVersion { .. } => PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            Self::Conflict { .. } | Self::PreconditionFailed { .. } => {
                PgSqlErrorCode::ERRCODE_T_R_SERIALIZATION_FAILURE
            }
        }
    }

    /// The HTTP status under an HTTP error mapping (see [`crate::http`]).
    fn status(&self) -> Option<u16> {
        match self {
            Self::VersionRequired { .. } => Some(428),
            Self::NullVersion { .. } => Some(400),
            Self::Conflict { .. } => Some(409),
            Self::PreconditionFailed { .. } => Some(412),
            _ => None,
        }
    }

    fn detail(&self) -> Option<String> {
        match self {
            Self::VersionRequired { table, .. } => {
                Some(format!("Table \"{table}\" is versioned in strict mode: every UPDATE states the version it read."))
            }
            Self::Conflict { key, expected, found, changed, unknown, .. } => {
                let mut detail = match (key, found) {
                    (Some(key), Some(found)) => {
                        format!("Key {key}: expected version {expected}, found version {found}.")
                    }
                    (None, Some(found)) => format!("Expected version {expected}, found version {found}."),
                    (Some(key), None) => {
                        format!("Key {key}: expected version {expected}; the stored version is hidden.")
                    }
                    (None, None) => "Key and version hidden: the row has changed.".into(),
                };
                if !changed.is_empty() {
                    detail.push_str(&format!(" Changed since version {expected}: {}.", changed.join(", ")));
                }
                if !unknown.is_empty() {
                    detail.push_str(&format!(
                        " Not known to be unchanged since version {expected}: {}.",
                        unknown.join(", ")
                    ));
                }
                Some(detail)
            }
            Self::PreconditionFailed { key, found, .. } => Some(match (key, found) {
                (Some(key), Some(found)) => format!("Key {key}: If-Match does not name version {found}."),
                (None, Some(found)) => format!("If-Match does not name version {found}."),
                (Some(key), None) => format!("Key {key}: If-Match does not name the stored version, which is hidden."),
                (None, None) => "Key and version hidden: If-Match does not name the stored version.".into(),
            }),
            _ => None,
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            Self::NotCreatedByEnable { .. } => {
                Some("Create the trigger with rowversion.enable().".into())
            }
            Self::UnsupportedType { .. } => {
                Some("A version column must be smallint, integer or bigint.".into())
            }
            Self::VersionRequired { column, .. } => Some(format!(
                "Add {} = <the version you read> to the SET list, or switch the table to lenient mode with rowversion.enable().",
                quote_identifier(column)
            )),
            Self::NullVersion { .. } => Some("Supply the version you read.".into()),
            Self::Conflict { .. } => {
                Some("Re-read the row and retry with its current version.".into())
            }
            Self::PreconditionFailed { .. } => {
                Some("Re-read the row and send its ETag in If-Match.".into())
            }
        }
    }
}

impl From<ContractError> for Report {
    fn from(error: ContractError) -> Self {
        let report = Report::new(error.sqlstate(), error.to_string(), error.detail(), error.hint());
        match error.status() {
            Some(status) => report.with_status(status),
            None => report,
        }
    }
}

/// `(id)=(42)` for the primary key of `row`, as unique violations show it; `None` when the
/// table has no primary key or the current role may not see those columns (Postgres'
/// `BuildIndexValueDescription` checks column privileges and row-level security).
pub unsafe fn describe_key(rel: pg_sys::Relation, row: pg_sys::HeapTuple) -> Option<String> {
    // SAFETY: `rel` is open and `row` is one of its rows; the primary key index is opened and
    // closed here, its key columns are plain columns of `rel`.
    unsafe {
        #[cfg(feature = "pg18")]
        let index_oid = pg_sys::RelationGetPrimaryKeyIndex(rel, true);
        #[cfg(not(feature = "pg18"))]
        let index_oid = pg_sys::RelationGetPrimaryKeyIndex(rel);
        if index_oid == pg_sys::InvalidOid {
            return None;
        }
        let index = pg_sys::index_open(index_oid, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        let key_count = (*(*index).rd_index).indnkeyatts as usize;
        let key_attnums = (*(*index).rd_index).indkey.values.as_slice(key_count);
        let mut values = [pg_sys::Datum::from(0); pg_sys::INDEX_MAX_KEYS as usize];
        let mut nulls = [false; pg_sys::INDEX_MAX_KEYS as usize];
        for (i, &attnum) in key_attnums.iter().enumerate() {
            values[i] = pg_sys::heap_getattr(row, attnum.into(), (*rel).rd_att, &mut nulls[i]);
        }
        let description = pg_sys::BuildIndexValueDescription(index, values.as_mut_ptr(), nulls.as_mut_ptr());
        pg_sys::index_close(index, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        (!description.is_null()).then(|| encoding::cstr_from_server_lossy(description))
    }
}

/// Whether the current role has `mode` on column `attnum` of `relid`, through the table's
/// privileges or the column's own (`attnum` 0: the table's only).
pub fn column_privilege(relid: pg_sys::Oid, attnum: i16, mode: pg_sys::AclMode) -> bool {
    // SAFETY: plain catalog checks for the current user on an existing relation.
    unsafe {
        let user = pg_sys::GetUserId();
        pg_sys::pg_class_aclcheck(relid, user, mode) == pg_sys::AclResult::ACLCHECK_OK
            || (attnum > 0
                && pg_sys::pg_attribute_aclcheck(relid, attnum, user, mode) == pg_sys::AclResult::ACLCHECK_OK)
    }
}

/// Whether the current role could read the version column of `rel` with a plain SELECT: it
/// has SELECT on the table or the column, and no row-level security applies, the rules by
/// which `BuildIndexValueDescription` shows a key. A partition's row can also be read through
/// any partitioned table above it, so those are asked too.
unsafe fn version_readable(rel: pg_sys::Relation, attnum: i16) -> bool {
    // SAFETY: `rel` is open and `attnum` one of its columns; the ancestors of a partition
    // exist while it is open, and the column, inherited, has the same name in each.
    unsafe {
        let name = attribute((*rel).rd_att, attnum).attname.data.as_ptr();
        let (mut relid, mut attnum) = ((*rel).rd_id, attnum);
        loop {
            let no_rls = pg_sys::check_enable_rls(relid, pg_sys::InvalidOid, true)
                != pg_sys::CheckEnableRlsResult::RLS_ENABLED as i32;
            if no_rls && column_privilege(relid, attnum, pg_sys::ACL_SELECT as pg_sys::AclMode) {
                return true;
            }
            if !pg_sys::get_rel_relispartition(relid) {
                return false;
            }
            // SAFETY: `relid` is a partition (checked above), so it has a parent; an ERROR
            // from it becomes a Rust panic at this boundary.
            relid = partition_parent(relid);
            attnum = pg_sys::get_attnum(relid, name);
        }
    }
}

unsafe extern "C-unwind" {
    /// partition.h, not in pgrx's bindings: the parent of a partition (errors for a table
    /// that is not one).
    fn get_partition_parent(relid: pg_sys::Oid, even_if_detached: bool) -> pg_sys::Oid;
}

/// The parent of partition `relid`.
///
/// # Safety
/// `relid` must be a partition, locked.
pub unsafe fn partition_parent(relid: pg_sys::Oid) -> pg_sys::Oid {
    // SAFETY: forwarded from the caller.
    unsafe { pg_sys::ffi::pg_guard_ffi_boundary(|| get_partition_parent(relid, true)) }
}

/// The error built by `make(table, column)` about the version column `attnum` of `rel`,
/// naming it in the error's fields.
pub unsafe fn report(rel: pg_sys::Relation, attnum: i16, make: impl FnOnce(String, String) -> ContractError) -> Report {
    // SAFETY: `rel` is open and `attnum` is one of its columns.
    unsafe {
        let report = Report::from(make(qualified_name(rel), column_name(rel, attnum)));
        report.on_column((*rel).rd_id, attnum)
    }
}

/// What the stored version of a refused row failed to match.
#[derive(Clone, Copy)]
pub enum Mismatch {
    /// The version the UPDATE stated: a conflict.
    Supplied(i64),
    /// The request's If-Match (behind an HTTP layer): a failed precondition.
    IfMatch,
}

/// The error for `stored_row` of `rel`, whose version (column `attnum`) is `stored` and does
/// not match: the key and the stored version shown as the caller may see them.
pub unsafe fn mismatch(
    rel: pg_sys::Relation,
    attnum: i16,
    stored_row: pg_sys::HeapTuple,
    stored: i64,
    mismatch: Mismatch,
) -> Report {
    // SAFETY: forwarded: `stored_row` is a row of the open `rel`.
    unsafe {
        let key = describe_key(rel, stored_row);
        let found = version_readable(rel, attnum).then_some(stored);
        report(rel, attnum, |table, _| match mismatch {
            Mismatch::Supplied(expected) => {
                ContractError::Conflict { table, key, expected, found, changed: Vec::new(), unknown: Vec::new() }
            }
            Mismatch::IfMatch => ContractError::PreconditionFailed { table, key, found },
        })
    }
}

/// The conflict of a stale UPDATE of `stored_row` in merge mode, which states version
/// `expected` and changes `columns` that changed since (each with whether that is known, or
/// only not excluded): the columns named as far as the current role may SELECT them, the key
/// and the stored version as for any conflict.
pub unsafe fn merge_conflict(
    rel: pg_sys::Relation,
    attnum: i16,
    stored_row: pg_sys::HeapTuple,
    stored: i64,
    expected: i64,
    columns: impl Iterator<Item = (i16, bool)>,
) -> Report {
    // SAFETY: forwarded: `stored_row` is a row of the open `rel` and `columns` its columns.
    unsafe {
        let key = describe_key(rel, stored_row);
        let found = version_readable(rel, attnum).then_some(stored);
        let relid = (*rel).rd_id;
        let (mut changed, mut unknown) = (Vec::new(), Vec::new());
        for (column, known) in columns {
            if column_privilege(relid, column, pg_sys::ACL_SELECT as pg_sys::AclMode) {
                let name = quote_identifier(column_name(rel, column));
                if known {
                    changed.push(name)
                } else {
                    unknown.push(name)
                }
            }
        }
        report(rel, attnum, |table, _| ContractError::Conflict { table, key, expected, found, changed, unknown })
    }
}

/// `schema.table` of `rel`; for a Citus shard on a worker, of the table the application wrote
/// to (the error's fields still name the shard, the relation that refused the row).
unsafe fn qualified_name(rel: pg_sys::Relation) -> String {
    // SAFETY: `rel` is an open relation; its namespace exists while it is open, and the shard's
    // table is in the same one.
    unsafe {
        let schema = encoding::cstr_from_server_lossy(pg_sys::get_namespace_name((*(*rel).rd_rel).relnamespace));
        let table = match citus::table_of_shard(rel) {
            Some(table) => encoding::cstr_from_server_lossy(pg_sys::get_rel_name(table)),
            None => encoding::cstr_from_server_lossy((*(*rel).rd_rel).relname.data.as_ptr()),
        };
        format!("{schema}.{table}")
    }
}

unsafe fn column_name(rel: pg_sys::Relation, attnum: i16) -> String {
    // SAFETY: `attnum` is a column of the open relation `rel`.
    unsafe {
        let attribute = attribute((*rel).rd_att, attnum);
        encoding::cstr_from_server_lossy(attribute.attname.data.as_ptr())
    }
}
