//! The version trigger: `rowversion.version_trigger()`, fired `BEFORE INSERT OR UPDATE` for
//! each row of a versioned table.
//!
//! It is a plain V1 C function rather than a `#[pg_trigger]`: it fires for every row of every
//! UPDATE, so it works the way contrib's C triggers do, with one `heap_modify_tuple_by_cols`
//! per row, the column resolved once per trigger (see [`crate::version_column`]) and no
//! per-row allocation of its own. The rules are the contract in the README.

use pgrx::pg_sys;
use pgrx::spi::quote_identifier;
use pgrx::trigger_support::{
    trigger_fired_before, trigger_fired_by_insert, trigger_fired_by_update, trigger_fired_for_row,
};
use pgrx::PgSqlErrorCode;

use crate::encoding;
use crate::http::{self, IfMatch};
use crate::merge_action;
use crate::report::Report;
use crate::version_column::{self, Mode, VersionColumn};

/// Every error the trigger raises, each with a stable SQLSTATE.
#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    #[error("rowversion.version_trigger() must be fired BEFORE INSERT OR UPDATE FOR EACH ROW")]
    NotCalledAsRowTrigger,
    #[error("trigger \"{trigger}\" was not created by rowversion.enable()")]
    NotCreatedByEnable { trigger: String },
    #[error("version column \"{column}\" has type {type_name}")]
    UnsupportedType { column: String, type_name: String },
    #[error("UPDATE of table \"{table}\" must set version column \"{column}\"")]
    VersionRequired { table: String, column: String },
    #[error("null value supplied for version column \"{column}\" of table \"{table}\"")]
    NullVersion { table: String, column: String },
    /// `key` and `found` are `None` where the current role may not read them.
    #[error("row version conflict on table \"{table}\"")]
    Conflict { table: String, key: Option<String>, expected: i64, found: Option<i64> },
    /// The request's If-Match names no version the row has (behind an HTTP layer).
    #[error("If-Match precondition failed on table \"{table}\"")]
    PreconditionFailed { table: String, key: Option<String>, found: Option<i64> },
}

impl TriggerError {
    pub fn sqlstate(&self) -> PgSqlErrorCode {
        match self {
            Self::NotCalledAsRowTrigger => PgSqlErrorCode::ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED,
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
            Self::Conflict { key, expected, found, .. } => Some(match (key, found) {
                (Some(key), Some(found)) => {
                    format!("Key {key}: expected version {expected}, found version {found}.")
                }
                (None, Some(found)) => format!("Expected version {expected}, found version {found}."),
                (Some(key), None) => {
                    format!("Key {key}: expected version {expected}; the stored version is hidden.")
                }
                (None, None) => "Key and version hidden: the row has changed.".into(),
            }),
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
            Self::NotCalledAsRowTrigger => None,
        }
    }
}

impl From<TriggerError> for Report {
    fn from(error: TriggerError) -> Self {
        let report = Report::new(error.sqlstate(), error.to_string(), error.detail(), error.hint());
        match error.status() {
            Some(status) => report.with_status(status),
            None => report,
        }
    }
}

crate::fmgr::v1_function! {
    /// The trigger function, declared in `sql/trigger.sql`.
    pg_finfo_rowversion_version_trigger,
    fn rowversion_version_trigger(args) -> Report {
        let data = args.trigger_data().ok_or(TriggerError::NotCalledAsRowTrigger)?;
        // SAFETY: a trigger call: `data` is its TriggerData, whose relation, trigger and
        // tuples are valid for this call.
        unsafe {
            let event = (*data).tg_event;
            if !trigger_fired_before(event)
                || !trigger_fired_for_row(event)
                || !(trigger_fired_by_insert(event) || trigger_fired_by_update(event))
            {
                return Err(TriggerError::NotCalledAsRowTrigger.into());
            }
            let column = column_for_statement(args.fcinfo(), data)?;
            let tuple = if trigger_fired_by_insert(event) { on_insert(data, column) } else { on_update(data, column)? };
            Ok(Some(pg_sys::Datum::from(tuple)))
        }
    }
}

/// The version column, kept in `fn_extra` for the rest of the statement and read in place (it
/// carries the ignored-column mask, about 200 bytes).
unsafe fn column_for_statement<'a>(
    fcinfo: pg_sys::FunctionCallInfo,
    data: *mut pg_sys::TriggerData,
) -> Result<&'a VersionColumn, TriggerError> {
    // SAFETY: the caller passes the valid fcinfo and TriggerData of a firing row trigger;
    // `fn_extra` of this FmgrInfo is ours, and `fn_mcxt` outlives the statement.
    unsafe {
        let flinfo = (*fcinfo).flinfo;
        let cached = (*flinfo).fn_extra as *const VersionColumn;
        if !cached.is_null() {
            return Ok(&*cached);
        }
        let column = version_column::lookup((*data).tg_relation, (*data).tg_trigger)?;
        let slot = pg_sys::MemoryContextAlloc((*flinfo).fn_mcxt, size_of::<VersionColumn>()) as *mut VersionColumn;
        slot.write(column);
        (*flinfo).fn_extra = slot.cast();
        Ok(&*slot)
    }
}

/// INSERT: a NULL version becomes 1; a supplied one is kept (imports, COPY, restores).
unsafe fn on_insert(data: *mut pg_sys::TriggerData, column: &VersionColumn) -> pg_sys::HeapTuple {
    // SAFETY: `data` is the TriggerData of a BEFORE INSERT row trigger: tg_trigtuple is the
    // new row and tg_relation its relation.
    unsafe {
        let tuple = (*data).tg_trigtuple;
        let tupdesc = (*(*data).tg_relation).rd_att;
        if read_version(tuple, tupdesc, column).is_some() {
            return tuple;
        }
        with_version(tuple, tupdesc, column, 1)
    }
}

/// UPDATE: see the README's contract.
unsafe fn on_update(data: *mut pg_sys::TriggerData, column: &VersionColumn) -> Result<pg_sys::HeapTuple, Report> {
    // SAFETY: `data` is the TriggerData of a BEFORE UPDATE row trigger: tg_trigtuple is the
    // stored row (the newest one, after any wait for a concurrent writer), tg_newtuple the row
    // about to be written, tg_updatedcols the columns of the SET list.
    unsafe {
        let rel = (*data).tg_relation;
        let tupdesc = (*rel).rd_att;
        let stored_row = (*data).tg_trigtuple;
        let new_row = (*data).tg_newtuple;
        // A NULL can only have been written while the trigger was off; it counts as 0.
        let stored = read_version(stored_row, tupdesc, column).unwrap_or(0);
        let next = column.version_type.next(stored);

        // A MERGE's running action's own SET list, not the union of every action's.
        let updated = merge_action::columns((*data).tg_trigger).unwrap_or((*data).tg_updatedcols);
        // Behind an HTTP layer, the request's If-Match is a precondition, and states the
        // version for an UPDATE that does not.
        let if_match = http::if_match();
        if !if_match.matches(stored) {
            return Err(precondition_failed(rel, column, stored_row, stored));
        }
        if !names_column(updated, column.attnum) {
            // Bookkeeping: an UPDATE of ignored columns only is not a change of the row.
            if column.ignored.cover(updated) {
                http::send_version(stored);
                return Ok(new_row);
            }
            if column.mode == Mode::Strict && !matches!(if_match, IfMatch::Tags { .. }) {
                return Err(report(rel, column, |table, name| TriggerError::VersionRequired { table, column: name }));
            }
            http::send_version(next);
            return Ok(with_version(new_row, tupdesc, column, next));
        }
        match read_version(new_row, tupdesc, column) {
            None => Err(report(rel, column, |table, name| TriggerError::NullVersion { table, column: name })),
            // The version the writer read: the check passes, the version moves on.
            Some(supplied) if supplied == stored => {
                http::send_version(next);
                Ok(with_version(new_row, tupdesc, column, next))
            }
            // A newer version, in serial-number order for the column's width, is the writer's
            // own next version: ORMs send `SET version = read + 1 WHERE id = ? AND version =
            // read` (or a time-based number) and their WHERE clause did the check. Kept as is.
            Some(supplied) if column.version_type.is_newer(supplied, stored) => {
                http::send_version(supplied);
                Ok(new_row)
            }
            Some(supplied) => Err(conflict(rel, column, stored_row, supplied, stored)),
        }
    }
}

/// Whether the UPDATE's SET list names `attnum` (a Bitmapset membership test, inline).
unsafe fn names_column(updated: *const pg_sys::Bitmapset, attnum: i16) -> bool {
    if updated.is_null() {
        return false;
    }
    let member = (i32::from(attnum) - pg_sys::FirstLowInvalidHeapAttributeNumber) as usize;
    let bits = pg_sys::bitmapword::BITS;
    let (word, bit) = (member / bits as usize, member % bits as usize);
    // SAFETY: `updated` is a valid Bitmapset holding `nwords` words.
    unsafe {
        let words = (*updated).words.as_slice((*updated).nwords as usize);
        words.get(word).is_some_and(|w| w & (1 << bit) != 0)
    }
}

unsafe fn read_version(tuple: pg_sys::HeapTuple, tupdesc: pg_sys::TupleDesc, column: &VersionColumn) -> Option<i64> {
    let mut isnull = false;
    // SAFETY: `tuple` belongs to the relation described by `tupdesc`, and `attnum` is one of
    // its columns.
    let datum = unsafe { pg_sys::heap_getattr(tuple, column.attnum.into(), tupdesc, &mut isnull) };
    (!isnull).then(|| column.version_type.read(datum))
}

unsafe fn with_version(
    tuple: pg_sys::HeapTuple,
    tupdesc: pg_sys::TupleDesc,
    column: &VersionColumn,
    version: i64,
) -> pg_sys::HeapTuple {
    let mut attnum = std::ffi::c_int::from(column.attnum);
    let mut value = column.version_type.to_datum(version);
    let mut isnull = false;
    // SAFETY: one replacement column, its number valid for `tupdesc`, its Datum of the
    // column's type.
    unsafe { pg_sys::heap_modify_tuple_by_cols(tuple, tupdesc, 1, &mut attnum, &mut value, &mut isnull) }
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
        let name = version_column::attribute((*rel).rd_att, attnum).attname.data.as_ptr();
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
            relid = pg_sys::ffi::pg_guard_ffi_boundary(|| get_partition_parent(relid, true));
            attnum = pg_sys::get_attnum(relid, name);
        }
    }
}

unsafe extern "C-unwind" {
    /// partition.h, not in pgrx's bindings: the parent of a partition (errors for a table
    /// that is not one).
    fn get_partition_parent(relid: pg_sys::Oid, even_if_detached: bool) -> pg_sys::Oid;
}

/// The error built by `make(table, column)`, naming the version column of `rel` in its fields.
pub unsafe fn report(
    rel: pg_sys::Relation,
    column: &VersionColumn,
    make: impl FnOnce(String, String) -> TriggerError,
) -> Report {
    // SAFETY: `rel` is open and `column.attnum` is one of its columns.
    unsafe {
        let report = Report::from(make(qualified_name(rel), column_name(rel, column.attnum)));
        report.on_column((*rel).rd_id, column.attnum)
    }
}

/// The conflict the trigger raises for `stored_row` of `rel`, whose version is `stored`, when
/// `supplied` was stated: the key and the stored version shown as the caller may see them.
pub unsafe fn conflict(
    rel: pg_sys::Relation,
    column: &VersionColumn,
    stored_row: pg_sys::HeapTuple,
    supplied: i64,
    stored: i64,
) -> Report {
    // SAFETY: forwarded.
    unsafe {
        row_error(rel, column, stored_row, stored, |table, key, found| TriggerError::Conflict {
            table,
            key,
            expected: supplied,
            found,
        })
    }
}

/// The error for `stored_row` of `rel`, whose version is `stored`, when the request's If-Match
/// names another version.
pub unsafe fn precondition_failed(
    rel: pg_sys::Relation,
    column: &VersionColumn,
    stored_row: pg_sys::HeapTuple,
    stored: i64,
) -> Report {
    // SAFETY: forwarded.
    unsafe {
        row_error(rel, column, stored_row, stored, |table, key, found| TriggerError::PreconditionFailed {
            table,
            key,
            found,
        })
    }
}

/// The error `make(table, key, found)` about `stored_row` of `rel`, whose version is
/// `stored`: the key and the stored version as the caller may see them.
unsafe fn row_error(
    rel: pg_sys::Relation,
    column: &VersionColumn,
    stored_row: pg_sys::HeapTuple,
    stored: i64,
    make: impl FnOnce(String, Option<String>, Option<i64>) -> TriggerError,
) -> Report {
    // SAFETY: forwarded: `stored_row` is a row of the open `rel`.
    unsafe {
        let key = describe_key(rel, stored_row);
        let found = version_readable(rel, column.attnum).then_some(stored);
        report(rel, column, |table, _| make(table, key, found))
    }
}

unsafe fn qualified_name(rel: pg_sys::Relation) -> String {
    // SAFETY: `rel` is an open relation; its namespace exists while it is open.
    unsafe {
        let schema = encoding::cstr_from_server_lossy(pg_sys::get_namespace_name((*(*rel).rd_rel).relnamespace));
        let table = encoding::cstr_from_server_lossy((*(*rel).rd_rel).relname.data.as_ptr());
        format!("{schema}.{table}")
    }
}

unsafe fn column_name(rel: pg_sys::Relation, attnum: i16) -> String {
    // SAFETY: `attnum` is a column of the open relation `rel`.
    unsafe {
        let attribute = version_column::attribute((*rel).rd_att, attnum);
        encoding::cstr_from_server_lossy(attribute.attname.data.as_ptr())
    }
}
