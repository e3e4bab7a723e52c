//! Checked updates and deletes as SQL functions, for clients that would rather call a
//! function than hand-write `UPDATE ... WHERE id = ? AND version = ?` and check the row count:
//! `rowversion.update`, `try_update`, `delete`, `current_version` and `update_many`, declared
//! in `sql/checked.sql`.
//!
//! Each runs one statement with the caller's privileges (see [`crate::table`]), with the key,
//! the changes and the version as parameters. Before it reads a large argument it checks the
//! table (versioned, with a primary key) and the caller's privileges, so a role that may not
//! write the table cannot make the server work through a payload. The jsonb arguments are read
//! in place ([`crate::jsonb`]) and their values converted by Postgres.
//!
//! The version check is in the statement's WHERE clause; when it matches no row, a second
//! look tells a missing row (`P0002`) from a stale version, which is reported as the same
//! `40001` conflict the trigger raises, error fields included.

use std::rc::Rc;

use pgrx::prelude::*;
use pgrx::spi::quote_literal;
use pgrx::{PgRelation, PgSqlErrorCode};

use crate::contract::{column_privilege, describe_key, ContractError};
use crate::fmgr::{result_row, v1_function, Args, CallError};
use crate::jsonb::{numeric_to_i64, Container, Value};
use crate::key::{self, check_key, JsonArg, KeyError};
use crate::merge;
use crate::observe;
use crate::report::Report;
use crate::stats::{self, Event};
use crate::table::{prepared, table, Statement, Table, TableError};

#[derive(Debug, thiserror::Error)]
pub enum CheckedError {
    #[error("{0} must not be NULL")]
    NullArgument(&'static str),
    #[error("table \"{table}\" is not versioned")]
    NotVersioned { table: String, quoted: String },
    #[error("versioning of table \"{table}\" is disabled")]
    VersioningDisabled { table: String, quoted: String },
    #[error("\"{table}\" is {kind}, not a table")]
    NotATable { table: String, kind: &'static str },
    #[error("permission denied for table {0}")]
    PermissionDenied(String),
    /// `changed_since` without SELECT on the record column.
    #[error("permission denied for table {0}")]
    RecordNotReadable(String),
    #[error("{0} must be a JSON object")]
    NotAnObject(&'static str),
    #[error("column \"{column}\" of table \"{table}\" does not exist")]
    UnknownColumn { table: String, column: String },
    #[error("changes must not set {kind} column \"{column}\" of table \"{table}\"")]
    SystemSetColumn { table: String, column: String, kind: &'static str },
    #[error("table \"{table}\" does not record which columns changed")]
    NotMerging { table: String, quoted: String },
    #[error("no row in table \"{table}\" has key {key}")]
    NoSuchRow { table: String, key: String },
    #[error("rows[{index}]: {problem}")]
    BadRow { index: usize, problem: &'static str },
    #[error("row version conflict on table \"{table}\"")]
    Conflict { relid: pg_sys::Oid, attnum: i16, table: String, key: Option<String>, expected: i64, found: i64 },
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Table(#[from] TableError),
    #[error(transparent)]
    Call(#[from] CallError),
    #[error("internal query failed: {0}")]
    Spi(#[from] pgrx::spi::SpiError),
}

impl CheckedError {
    fn sqlstate(&self) -> PgSqlErrorCode {
        match self {
            Self::NullArgument(_) => PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            Self::NotATable { .. } => PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
            Self::NotVersioned { .. } | Self::VersioningDisabled { .. } | Self::NotMerging { .. } => {
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE
            }
            Self::PermissionDenied(_) | Self::RecordNotReadable(_) => PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            Self::NotAnObject(_) | Self::BadRow { .. } => PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            Self::UnknownColumn { .. } => PgSqlErrorCode::ERRCODE_UNDEFINED_COLUMN,
            Self::SystemSetColumn { .. } => PgSqlErrorCode::ERRCODE_GENERATED_ALWAYS,
            Self::NoSuchRow { .. } => PgSqlErrorCode::ERRCODE_NO_DATA_FOUND,
            Self::Conflict { .. } => PgSqlErrorCode::ERRCODE_T_R_SERIALIZATION_FAILURE,
            Self::Spi(_) | Self::Key(_) | Self::Table(_) | Self::Call(_) => PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
        }
    }

    fn detail(&self) -> Option<String> {
        match self {
            Self::NotATable { .. } => {
                Some("Checked functions write the rows of an ordinary or partitioned table.".into())
            }
            _ => None,
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            // `quoted` is the quoted identifier, pasted as a literal: safe for any table name.
            Self::NotVersioned { quoted, .. } => {
                Some(format!("Enable it with: SELECT rowversion.enable({});", quote_literal(quoted)))
            }
            Self::NotMerging { quoted, .. } => Some(format!(
                "Only a table in merge or observe mode does: SELECT rowversion.enable({}, conflicts => 'merge');",
                quote_literal(quoted)
            )),
            Self::VersioningDisabled { quoted, .. } => {
                Some(format!("Re-enable the trigger with: ALTER TABLE {quoted} ENABLE TRIGGER rowversion;"))
            }
            Self::SystemSetColumn { kind: "version", .. } => Some(
                "The version moves by itself: pass the version you read as expected_version.".into(),
            ),
            Self::RecordNotReadable(_) => Some(
                "changed_since needs SELECT on the key and version columns and on rowversion_changes, which tells when every column changed."
                    .into(),
            ),
            Self::PermissionDenied(_) => Some(
                "A checked function needs what its statement needs: SELECT on the key and version columns, and UPDATE (or DELETE) on the table."
                    .into(),
            ),
            _ => None,
        }
    }
}

impl From<CheckedError> for Report {
    /// A conflict goes out as the trigger's conflict, with its fields.
    fn from(error: CheckedError) -> Self {
        if let CheckedError::Conflict { relid, attnum, table, key, expected, found } = error {
            // The stored version came from the probe, a SELECT with the caller's privileges and
            // row-level security: the caller could read it with plain SQL.
            return Report::from(ContractError::Conflict {
                table,
                key,
                expected,
                found: Some(found),
                changed: Vec::new(),
                unknown: Vec::new(),
            })
            .on_column(relid, attnum);
        }
        match error {
            CheckedError::Key(error) => return error.into(),
            CheckedError::Table(error) => return error.into(),
            CheckedError::Call(error) => return error.into(),
            _ => {}
        }
        let not_found = matches!(error, CheckedError::NoSuchRow { .. });
        let report = Report::new(error.sqlstate(), error.to_string(), error.detail(), error.hint());
        // Behind an HTTP layer, a row that is not there is 404 (PostgREST says 500 for P0002).
        if not_found {
            report.with_status(404)
        } else {
            report
        }
    }
}

pub type Result<T> = std::result::Result<T, CheckedError>;

/// What the caller is about to do to a table.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    Update,
    Delete,
}

/// The caller's rights, checked before any large argument is read: what the statement itself
/// will need, SELECT on the key and version columns, and UPDATE of the version column or
/// DELETE on the table.
fn check_access(table: &Table, version_attnum: i16, access: Access) -> Result<()> {
    let write = match access {
        Access::Read => 0,
        Access::Update => pg_sys::ACL_UPDATE,
        Access::Delete => pg_sys::ACL_DELETE,
    } as pg_sys::AclMode;
    let wanted = pg_sys::ACL_SELECT as pg_sys::AclMode | write;
    // SAFETY: a plain catalog check for the current user on an existing table. One lookup of
    // the table's ACL answers the common case; column privileges are asked only without it.
    let granted =
        unsafe { pg_sys::pg_class_aclmask(table.relid, pg_sys::GetUserId(), wanted, pg_sys::AclMaskHow::ACLMASK_ALL) };
    if granted == wanted {
        return Ok(());
    }
    let may = |attnum: i16, mode: u32| column_privilege(table.relid, attnum, mode as pg_sys::AclMode);
    let reads = table.primary_key.iter().map(|c| c.attnum).chain([version_attnum]).all(|a| may(a, pg_sys::ACL_SELECT));
    let writes = match access {
        Access::Read => true,
        Access::Update => may(version_attnum, pg_sys::ACL_UPDATE),
        Access::Delete => may(0, pg_sys::ACL_DELETE),
    };
    if reads && writes {
        Ok(())
    } else {
        Err(CheckedError::PermissionDenied(table.relation.name.clone()))
    }
}

/// The table, checked to be versioned and enabled, with a primary key, and `access`ible to
/// the caller; and the attnum of its version column.
fn checked_table(relid: pg_sys::Oid, access: Access) -> Result<(Rc<Table>, i16)> {
    let table = table(relid)?;
    if let Some(kind) = table.relation.not_a_table {
        return Err(CheckedError::NotATable { table: table.relation.display.clone(), kind });
    }
    let attnum = match &table.versioning {
        None => {
            return Err(CheckedError::NotVersioned {
                table: table.relation.display.clone(),
                quoted: table.relation.quoted.clone(),
            })
        }
        Some(v) if !v.enabled => {
            return Err(CheckedError::VersioningDisabled {
                table: table.relation.display.clone(),
                quoted: table.relation.quoted.clone(),
            })
        }
        Some(v) => v.attnum,
    };
    if table.primary_key.is_empty() {
        return Err(KeyError::NoPrimaryKey(table.relation.display.clone()).into());
    }
    check_access(&table, attnum, access)?;
    Ok((table, attnum))
}

/// The columns `changes` sets, as sorted attnums (at most one per column of the table).
fn changed_columns(table: &Table, version_attnum: i16, changes: Container) -> Result<Vec<i16>> {
    if !changes.is_object() {
        return Err(CheckedError::NotAnObject("changes"));
    }
    let mut attnums = Vec::new();
    changes.for_each_key(|name| {
        let Some(column) = table.column(name) else {
            return Err(CheckedError::UnknownColumn {
                table: table.relation.display.clone(),
                column: key::shown_name(name),
            });
        };
        let kind = match (column.attnum == version_attnum, column.generated) {
            (true, _) => Some("version"),
            (false, true) => Some("generated"),
            (false, false) => None,
        };
        if let Some(kind) = kind {
            return Err(CheckedError::SystemSetColumn {
                table: table.relation.display.clone(),
                column: column.name.clone(),
                kind,
            });
        }
        attnums.push(column.attnum);
        Ok(())
    })?;
    attnums.sort_unstable();
    Ok(attnums)
}

/// The outcome of a checked statement.
enum Checked {
    Applied(i64),
    Conflict { found: i64, key: Option<String> },
    Missing,
}

fn checked_update(
    table: &Table,
    version_attnum: i16,
    key: JsonArg,
    expected: i64,
    changes: JsonArg,
) -> Result<Checked> {
    check_key(table, key.document)?;
    let columns = changed_columns(table, version_attnum, changes.document)?;
    let plan = prepared(table, Statement::Update(columns))?;
    stats::set_row_counted(false);
    let updated = Spi::connect_mut(|client| {
        let rows = client.update(&*plan, Some(1), &[key.arg(), changes.arg(), expected.into()])?;
        if rows.is_empty() {
            Ok(None)
        } else {
            rows.first().get_one::<i64>()
        }
    })?;
    match updated {
        Some(version) => Ok(Checked::Applied(version)),
        None => why_not(table, key, expected),
    }
}

fn checked_delete(table: &Table, version_attnum: i16, key: JsonArg, expected: i64) -> Result<Checked> {
    check_key(table, key.document)?;
    let plan = prepared(table, Statement::Delete)?;
    stats::set_row_counted(false);
    // In observe mode the statement deletes whatever the row's version: a stale one is counted
    // and logged (src/observe.rs) as the conflict it would have been.
    let stale = Spi::connect_mut(|client| {
        let rows = client.update(&*plan, Some(1), &[key.arg(), expected.into()])?;
        if rows.is_empty() {
            return Ok::<_, CheckedError>(None);
        }
        let row = rows.first();
        let found = row.get::<i64>(1)?.unwrap_or(0);
        if found == expected {
            return Ok(Some(None));
        }
        // The key for the log, as a row of the table's type (Statement::KeyRow).
        let key_row = prepared(table, Statement::KeyRow)?;
        let key_rows = client.select(&*key_row, Some(1), &[key.arg()])?;
        Ok(Some(Some((found, key_of_row(table, key_rows.first().get_datum_by_ordinal(1)?)))))
    })?;
    match stale {
        None => why_not(table, key, expected),
        Some(None) => {
            stats::count(table.relid, Event::Checked);
            Ok(Checked::Applied(expected))
        }
        Some(Some((found, shown_key))) => {
            stats::count(table.relid, Event::ObservedStale { mergeable: false });
            observe::let_through(Some(false), || {
                Report::from(conflict(table, version_attnum, shown_key, expected, found))
            });
            Ok(Checked::Applied(expected))
        }
    }
}

/// The key of a row given as a row of `table`'s type, as a conflict may show it.
fn key_of_row(table: &Table, row: Option<pg_sys::Datum>) -> Option<String> {
    // SAFETY: the Datum is a row of the table's own type, so the table's descriptor reads its
    // key columns; the relation is open for the duration of the call.
    row.and_then(|datum| unsafe {
        let relation = PgRelation::with_lock(table.relid, pg_sys::NoLock as pg_sys::LOCKMODE);
        let header = pg_sys::pg_detoast_datum(datum.cast_mut_ptr()) as pg_sys::HeapTupleHeader;
        let mut tuple = pg_sys::HeapTupleData {
            t_len: pgrx::varlena::varsize(header.cast()) as u32,
            t_data: header,
            ..Default::default()
        };
        describe_key(relation.as_ptr(), &mut tuple)
    })
}

/// After a checked statement matched no row: is the row missing, or at another version?
fn why_not(table: &Table, key: JsonArg, expected: i64) -> Result<Checked> {
    let plan = prepared(table, Statement::Probe)?;
    Spi::connect(|client| {
        let rows = client.select(&*plan, Some(1), &[key.arg()])?;
        if rows.is_empty() {
            return Ok(Checked::Missing);
        }
        let row = rows.first();
        let found = row.get::<i64>(1)?.unwrap_or(0);
        if found == expected {
            // Visible to SELECT but not to UPDATE/DELETE (row-level security): as a plain
            // statement would, treat it as no row.
            return Ok(Checked::Missing);
        }
        let key = key_of_row(table, row.get_datum_by_ordinal(2)?);
        // The trigger counted none of it: the statement matched no row, or the trigger
        // skipped it for try_update. The fast path counted a row as checked that the statement
        // then skipped, when a concurrent writer changed its version after the check
        // (EvalPlanQual found `version = $3` false): counted once (src/stats.rs).
        let event = if stats::row_counted() { Event::ConflictOnRecheck } else { Event::Conflict };
        stats::count(table.relid, event);
        Ok(Checked::Conflict { found, key })
    })
}

fn current(table: &Table, key: JsonArg) -> Result<Option<i64>> {
    check_key(table, key.document)?;
    let plan = prepared(table, Statement::Probe)?;
    Ok(Spi::connect(|client| {
        let rows = client.select(&*plan, Some(1), &[key.arg()])?;
        if rows.is_empty() {
            Ok(None)
        } else {
            rows.first().get::<i64>(1)
        }
    })?)
}

/// Turns a missing row or a conflict into the error `update`/`delete` raise.
fn require_applied(table: &Table, version_attnum: i16, key: JsonArg, expected: i64, outcome: Checked) -> Result<i64> {
    match outcome {
        Checked::Applied(version) => Ok(version),
        Checked::Missing => Err(CheckedError::NoSuchRow {
            table: table.relation.display.clone(),
            key: key.document.to_text(key::KEY_CHARS_SHOWN),
        }),
        Checked::Conflict { found, key } => Err(conflict(table, version_attnum, key, expected, found)),
    }
}

fn conflict(table: &Table, version_attnum: i16, key: Option<String>, expected: i64, found: i64) -> CheckedError {
    CheckedError::Conflict {
        relid: table.relid,
        attnum: version_attnum,
        table: table.relation.display.clone(),
        key,
        expected,
        found,
    }
}

fn update_many(table: &Table, version_attnum: i16, rows: Container) -> Result<i64> {
    if !rows.is_array() {
        return Err(CheckedError::NotAnObject("rows (an array of objects)"));
    }
    let (mut index, mut updated) = (0, 0);
    rows.for_each_element(|row| {
        let here = index;
        let bad = move |problem| CheckedError::BadRow { index: here, problem };
        let Value::Object(row) = row else {
            return Err(bad("each row must be an object with \"key\", \"version\" and \"changes\""));
        };
        let Some(Value::Object(key)) = row.get("key") else {
            return Err(bad("\"key\" must be an object"));
        };
        let expected = match row.get("version") {
            Some(Value::Numeric(number)) => numeric_to_i64(number),
            _ => None,
        };
        let Some(expected) = expected else {
            return Err(bad("\"version\" must be an integer within the range of bigint"));
        };
        let Some(Value::Object(changes)) = row.get("changes") else {
            return Err(bad("\"changes\" must be an object"));
        };
        let key = JsonArg::from_container(key);
        let outcome = checked_update(table, version_attnum, key, expected, JsonArg::from_container(changes))?;
        require_applied(table, version_attnum, key, expected, outcome)?;
        index += 1;
        updated += 1;
        Ok(())
    })?;
    Ok(updated)
}

fn required<T>(arg: Option<T>, name: &'static str) -> Result<T> {
    arg.ok_or(CheckedError::NullArgument(name))
}

/// A jsonb argument, read in place.
///
/// # Safety
/// Argument `n` must be a jsonb argument of the current call.
unsafe fn json(args: Args, n: usize, name: &'static str) -> Result<JsonArg> {
    // SAFETY: forwarded from the caller.
    required(args.datum(n), name).map(|datum| unsafe { JsonArg::from_datum(datum) })
}

/// `update` and `try_update`: (rel, key, expected_version, changes). The arguments are read
/// only once the table and the caller's rights are checked.
///
/// # Safety
/// `args` must be the arguments of one of those functions.
unsafe fn update_call(args: Args, conflicts: Conflicts) -> Result<(Rc<Table>, i16, JsonArg, i64, Checked)> {
    let (table, attnum) = checked_table(required(args.oid(0), "rel")?, Access::Update)?;
    // SAFETY: arguments 1 and 3 are jsonb.
    let (key, changes) = unsafe { (json(args, 1, "key")?, json(args, 3, "changes")?) };
    let expected = required(args.int8(2), "expected_version")?;
    // In merge mode the trigger decides a stale version; a conflict it raises has its
    // changed columns, so `update` lets it through and `try_update` has the row skipped.
    let update = || checked_update(&table, attnum, key, expected, changes);
    let outcome = match conflicts {
        Conflicts::Report if table.merging() => merge::skipping_conflicts(table.relid, update)?,
        _ => update()?,
    };
    Ok((table, attnum, key, expected, outcome))
}

/// What a checked update does with a conflict the trigger finds in merge mode.
#[derive(Clone, Copy)]
enum Conflicts {
    Raise,
    Report,
}

v1_function! {
    /// `rowversion.update(rel regclass, key jsonb, expected_version bigint, changes jsonb) RETURNS bigint`
    pg_finfo_rowversion_update,
    declared ["update(regclass, jsonb, bigint, jsonb) -> bigint"],
    fn rowversion_update(args) -> CheckedError {
        // SAFETY: this function's arguments.
        let (table, attnum, key, expected, outcome) = unsafe { update_call(args, Conflicts::Raise)? };
        require_applied(&table, attnum, key, expected, outcome).map(|v| Some(v.into()))
    }
}

v1_function! {
    /// `rowversion.try_update(...) RETURNS TABLE(applied boolean, version bigint)`
    pg_finfo_rowversion_try_update,
    declared ["try_update(regclass, jsonb, bigint, jsonb) -> SETOF (boolean, bigint)"],
    fn rowversion_try_update(args) -> CheckedError {
        // SAFETY: this function's arguments.
        let (applied, version) = match unsafe { update_call(args, Conflicts::Report)? }.4 {
            Checked::Applied(version) => (true, Some(version)),
            Checked::Conflict { found, .. } => (false, Some(found)),
            Checked::Missing => (false, None),
        };
        let mut values = [applied.into(), pg_sys::Datum::from(version.unwrap_or(0))];
        let mut nulls = [false, version.is_none()];
        // SAFETY: the values match the declared result type (boolean, bigint).
        Ok(Some(unsafe { result_row(args.fcinfo(), &mut values, &mut nulls)? }))
    }
}

v1_function! {
    /// `rowversion.delete(rel regclass, key jsonb, expected_version bigint) RETURNS void`
    pg_finfo_rowversion_delete,
    declared ["delete(regclass, jsonb, bigint) -> void"],
    fn rowversion_delete(args) -> CheckedError {
        let (table, attnum) = checked_table(required(args.oid(0), "rel")?, Access::Delete)?;
        // SAFETY: argument 1 is jsonb.
        let key = unsafe { json(args, 1, "key")? };
        let expected = required(args.int8(2), "expected_version")?;
        let outcome = checked_delete(&table, attnum, key, expected)?;
        require_applied(&table, attnum, key, expected, outcome).map(|_| Some(pg_sys::Datum::from(0)))
    }
}

v1_function! {
    /// `rowversion.current_version(rel regclass, key jsonb) RETURNS bigint`: NULL when no row.
    pg_finfo_rowversion_current_version,
    declared ["current_version(regclass, jsonb) -> bigint"],
    fn rowversion_current_version(args) -> CheckedError {
        let (table, _) = checked_table(required(args.oid(0), "rel")?, Access::Read)?;
        // SAFETY: argument 1 is jsonb.
        let key = unsafe { json(args, 1, "key")? };
        Ok(current(&table, key)?.map(pg_sys::Datum::from))
    }
}

v1_function! {
    /// `rowversion.update_many(rel regclass, rows jsonb) RETURNS bigint`
    pg_finfo_rowversion_update_many,
    declared ["update_many(regclass, jsonb) -> bigint"],
    fn rowversion_update_many(args) -> CheckedError {
        let (table, attnum) = checked_table(required(args.oid(0), "rel")?, Access::Update)?;
        // SAFETY: argument 1 is jsonb.
        let rows = unsafe { json(args, 1, "rows")? };
        update_many(&table, attnum, rows.document).map(|n| Some(n.into()))
    }
}

v1_function! {
    /// `rowversion.changed_since(rel regclass, key jsonb, since bigint) RETURNS TABLE
    /// (column_name name, version bigint)`, STRICT: for a merge screen, the columns of the row
    /// that changed after version `since` and the version at which each last changed (NULL:
    /// 255 or more versions ago), in column order, only those the caller may SELECT. A table
    /// in merge mode only (`55000` otherwise). Returns its rows in materialize mode.
    pg_finfo_rowversion_changed_since,
    declared ["changed_since(regclass, jsonb, bigint) -> SETOF (name, bigint)"],
    fn rowversion_changed_since(args) -> CheckedError {
        let (table, _) = checked_table(required(args.oid(0), "rel")?, Access::Read)?;
        if !table.merging() {
            return Err(CheckedError::NotMerging {
                table: table.relation.display.clone(),
                quoted: table.relation.quoted.clone(),
            });
        }
        // The record tells when every column changed, the caller's unreadable ones included:
        // reading it takes SELECT on it, as a SELECT of the column would.
        let record = table.versioning.as_ref().and_then(|v| v.record.as_deref()).and_then(|r| table.column(r.as_bytes()));
        if !record.is_some_and(|r| column_privilege(table.relid, r.attnum, pg_sys::ACL_SELECT as pg_sys::AclMode)) {
            return Err(CheckedError::RecordNotReadable(table.relation.name.clone()));
        }
        // SAFETY: argument 1 is jsonb.
        let key = unsafe { json(args, 1, "key")? };
        let since = required(args.int8(2), "since")?;
        check_key(&table, key.document)?;
        let plan = prepared(&table, Statement::Record)?;
        // SAFETY: the table is locked by the probe's statement for the rest of the
        // transaction; its trigger is the one `table` was loaded from (any change to it
        // invalidates the cache); the record is a bytea Datum copied out of SPI's memory. The
        // rows go to the tuplestore InitMaterializedSRF sets up, with the declared result type.
        unsafe {
            let found = Spi::connect(|client| {
                let rows = client.select(&*plan, Some(1), &[key.arg()])?;
                if rows.is_empty() {
                    return Ok::<_, CheckedError>(None);
                }
                let row = rows.first();
                let stored = row.get::<i64>(1)?.unwrap_or(0);
                let record = row.get_datum_by_ordinal(2)?.map(|record| {
                    pg_sys::Datum::from(pg_sys::pg_detoast_datum_copy(record.cast_mut_ptr()))
                });
                Ok(Some((stored, record)))
            })?;
            let Some((stored, record)) = found else {
                return Err(CheckedError::NoSuchRow {
                    table: table.relation.display.clone(),
                    key: key.document.to_text(key::KEY_CHARS_SHOWN),
                });
            };
            let relation = PgRelation::with_lock(table.relid, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
            let rel = relation.as_ptr();
            let trigdesc = (*rel).trigdesc;
            let triggers = if trigdesc.is_null() {
                &[][..]
            } else {
                std::slice::from_raw_parts((*trigdesc).triggers, (*trigdesc).numtriggers as usize)
            };
            let trigger = triggers.iter().find(|t| std::ffi::CStr::from_ptr(t.tgname) == c"rowversion");
            let column = trigger.and_then(|trigger| crate::version_column::lookup(rel, trigger).ok());
            let Some((column, layout)) = column.and_then(|c| c.merge.map(|layout| (c, layout))) else {
                return Err(CheckedError::NotMerging {
                    table: table.relation.display.clone(),
                    quoted: table.relation.quoted.clone(),
                });
            };
            let (ages, _) = merge::ages(&layout, record, stored);
            // A `since` at or after the stored version: nothing changed since.
            let distance = if column.version_type.is_newer(since, stored) {
                0
            } else {
                column.version_type.distance(since, stored)
            };
            pg_sys::InitMaterializedSRF(args.fcinfo(), 0);
            let result = (*args.fcinfo()).resultinfo as *mut pg_sys::ReturnSetInfo;
            for attnum in 1..=(*(*rel).rd_att).natts as i16 {
                let Some(unit) = layout.unit_of(attnum) else { continue };
                let age = ages[usize::from(unit)];
                if !merge::changed_after(age, distance)
                    || !column_privilege(table.relid, attnum, pg_sys::ACL_SELECT as pg_sys::AclMode)
                {
                    continue;
                }
                let at = merge::changed_at(column.version_type, stored, age);
                let name = &crate::node::attribute((*rel).rd_att, attnum).attname;
                let mut values = [pg_sys::Datum::from(name as *const pg_sys::NameData), pg_sys::Datum::from(at.unwrap_or(0))];
                let mut nulls = [false, at.is_none()];
                pg_sys::tuplestore_putvalues((*result).setResult, (*result).setDesc, values.as_mut_ptr(), nulls.as_mut_ptr());
            }
        }
        Ok(Some(pg_sys::Datum::from(0)))
    }
}
