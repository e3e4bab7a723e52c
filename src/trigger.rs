//! The version trigger: `rowversion.version_trigger()`, fired `BEFORE INSERT OR UPDATE` for
//! each row of a versioned table.
//!
//! It is a plain V1 C function rather than a `#[pg_trigger]`: it fires for every row of every
//! UPDATE, so it works the way contrib's C triggers do, with one `heap_modify_tuple_by_cols`
//! per row, the column resolved once per trigger (see [`crate::version_column`]) and no
//! per-row allocation of its own. The rules are the contract in the README; its errors, and
//! what they may show, are [`crate::contract`]'s.

use pgrx::pg_sys;
use pgrx::trigger_support::{
    trigger_fired_before, trigger_fired_by_insert, trigger_fired_by_update, trigger_fired_for_row,
};
use pgrx::PgSqlErrorCode;

use crate::contract::{self, ContractError, Mismatch};
use crate::http::{self, IfMatch};
use crate::merge::{self, RowChange};
use crate::merge_action;
use crate::node;
use crate::observe;
use crate::report::Report;
use crate::stats::{self, Event};
use crate::version_column::{self, Conflicts, Mode, VersionColumn};

/// The error of the trigger itself; the contract's errors are [`ContractError`]s.
#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    #[error("rowversion.version_trigger() must be fired BEFORE INSERT OR UPDATE FOR EACH ROW")]
    NotCalledAsRowTrigger,
}

impl From<TriggerError> for Report {
    fn from(error: TriggerError) -> Self {
        let code = match error {
            TriggerError::NotCalledAsRowTrigger => PgSqlErrorCode::ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED,
        };
        Report::new(code, error.to_string(), None, None)
    }
}

crate::fmgr::v1_function! {
    /// The trigger function, declared in `sql/trigger.sql`.
    pg_finfo_rowversion_version_trigger,
    declared ["version_trigger() -> trigger"],
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
) -> Result<&'a VersionColumn, ContractError> {
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
        with_version(tuple, tupdesc, column, 1, None)
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
        let relid = (*rel).rd_id;
        // Behind an HTTP layer, the request's If-Match is a precondition, and states the
        // version for an UPDATE that does not. It is the request's own condition: observe mode
        // does not relax it.
        let if_match = http::if_match();
        if !if_match.matches(stored) {
            stats::count(relid, Event::Conflict);
            return Err(contract::mismatch(rel, column.attnum, stored_row, stored, Mismatch::IfMatch));
        }
        let if_match_states = matches!(if_match, IfMatch::Tags { .. });
        // In merge and observe mode, the record of when each column last changed, and what
        // this UPDATE changes (src/merge.rs): read only once the UPDATE is to move the version.
        let row_change =
            || column.merge.as_ref().map(|layout| RowChange::new(layout, tupdesc, stored_row, new_row, stored));
        if !names_column(updated, column.attnum) {
            // Bookkeeping: an UPDATE of ignored columns only is not a change of the row.
            if column.ignored.cover(updated) {
                http::send_version(stored);
                return Ok(new_row);
            }
            let version_required = || {
                contract::report(rel, column.attnum, |table, name| ContractError::VersionRequired {
                    table,
                    column: name,
                })
            };
            if if_match_states {
                stats::count(relid, Event::Checked);
            } else if column.mode == Mode::Strict && column.conflicts == Conflicts::Observe {
                stats::count(relid, Event::ObservedUnversioned);
                observe::let_through(None, version_required);
            } else if column.mode == Mode::Strict {
                stats::count(relid, Event::VersionRequired);
                return Err(version_required());
            }
            http::send_version(next);
            return Ok(with_version(new_row, tupdesc, column, next, row_change().map(|mut c| c.record(next, 1))));
        }
        match read_version(new_row, tupdesc, column) {
            None => Err(contract::report(rel, column.attnum, |table, name| ContractError::NullVersion {
                table,
                column: name,
            })),
            // The version the writer read: the check passes, the version moves on.
            Some(supplied) if supplied == stored => {
                stats::count(relid, Event::Checked);
                http::send_version(next);
                Ok(with_version(new_row, tupdesc, column, next, row_change().map(|mut c| c.record(next, 1))))
            }
            // A newer version, in serial-number order for the column's width, is the writer's
            // own next version: ORMs send `SET version = read + 1 WHERE id = ? AND version =
            // read` (or a time-based number) and their WHERE clause did the check. Kept as is.
            Some(supplied) if column.version_type.is_newer(supplied, stored) => {
                stats::count(relid, Event::Checked);
                http::send_version(supplied);
                Ok(match row_change() {
                    None => new_row,
                    Some(mut change) => {
                        let advance = column.version_type.distance(stored, supplied);
                        with_version(new_row, tupdesc, column, supplied, Some(change.record(supplied, advance)))
                    }
                })
            }
            // A stale version: refused, unless in merge mode none of the columns the UPDATE
            // changes changed after the version it states, or in observe mode.
            Some(supplied) => match row_change() {
                Some(mut change) => {
                    let distance = column.version_type.distance(supplied, stored);
                    let mergeable = change.changed_since(distance).next().is_none();
                    let conflict = |change: &RowChange| {
                        let columns = change.changed_columns(distance, (*tupdesc).natts as i16);
                        contract::merge_conflict(rel, column.attnum, stored_row, stored, supplied, columns)
                    };
                    match column.conflicts {
                        Conflicts::Merge if mergeable => stats::count(relid, Event::Merged),
                        Conflicts::Observe => {
                            stats::count(relid, Event::ObservedStale { mergeable });
                            observe::let_through(Some(mergeable), || conflict(&change));
                        }
                        // A checked function that reports conflicts instead of raising them
                        // (try_update): the row is skipped, and the function says why (and
                        // counts it).
                        _ if merge::skips_conflicts(rel) => return Ok(std::ptr::null_mut()),
                        _ => {
                            stats::count(relid, Event::Conflict);
                            return Err(conflict(&change));
                        }
                    }
                    http::send_version(next);
                    Ok(with_version(new_row, tupdesc, column, next, Some(change.record(next, 1))))
                }
                None => {
                    stats::count(relid, Event::Conflict);
                    Err(contract::mismatch(rel, column.attnum, stored_row, stored, Mismatch::Supplied(supplied)))
                }
            },
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
    // SAFETY: `tuple` belongs to the relation described by `tupdesc`, and `attnum` is one of
    // its columns.
    unsafe { node::value(tuple, tupdesc, column.attnum) }.map(|datum| column.version_type.read(datum))
}

/// `tuple` with `version` in the version column and, in merge mode, `record` in the record
/// column.
unsafe fn with_version(
    tuple: pg_sys::HeapTuple,
    tupdesc: pg_sys::TupleDesc,
    column: &VersionColumn,
    version: i64,
    record: Option<pg_sys::Datum>,
) -> pg_sys::HeapTuple {
    let mut attnums = [std::ffi::c_int::from(column.attnum), 0];
    let mut values = [column.version_type.to_datum(version), pg_sys::Datum::from(0)];
    let mut isnull = [false; 2];
    let mut count = 1;
    if let (Some(record), Some(layout)) = (record, column.merge.as_ref()) {
        attnums[1] = layout.record.into();
        values[1] = record;
        count = 2;
    }
    // SAFETY: `count` replacement columns, their numbers valid for `tupdesc`, their Datums of
    // the columns' types (the version's, bytea).
    unsafe {
        pg_sys::heap_modify_tuple_by_cols(
            tuple,
            tupdesc,
            count,
            attnums.as_mut_ptr(),
            values.as_mut_ptr(),
            isnull.as_mut_ptr(),
        )
    }
}
