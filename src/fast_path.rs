//! The planner fast path: versioning at the cost of one SET-list expression.
//!
//! Any `BEFORE ROW UPDATE` trigger makes Postgres lock each row (an extra WAL record) and copy
//! tuples before it runs (measured: a 1M-row UPDATE 1.25x the trigger-less statement, WAL
//! 1.18x). When this library is loaded at plan time, `planner_hook` rewrites the SET lists of
//! an UPDATE, of an `INSERT ... ON CONFLICT DO UPDATE` and of a `MERGE`'s WHEN MATCHED THEN
//! UPDATE actions on a versioned ordinary table so that the version column's new value is
//! computed there by `rowversion.next_version()`, which applies the trigger's contract to the
//! stored version (a Var of the row being updated, re-evaluated by EvalPlanQual against the
//! newest row version under READ COMMITTED) and the stated one. `ExecutorStart_hook` then
//! turns the trigger off for that statement's result relation, and only when the plan carries
//! the expression: a plan made before the library was loaded keeps the trigger.
//!
//! Everything else keeps the trigger, which stays the single source of truth: partitioned
//! and inheritance parents, tables with another
//! `BEFORE ROW UPDATE` trigger (whose order against ours the expression could not keep), a
//! trigger enabled other than `ORIGIN` (`ALTER TABLE ... ENABLE ALWAYS/REPLICA TRIGGER`), a
//! version set by a multiple-column assignment, and databases whose extension is older than
//! the library (no `next_version()`). Plans are invalidated by Postgres when the table
//! changes (enable, disable, mode, column: all change its triggers), as for any plan.

use std::ffi::c_int;

use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::fmgr::v1_function;
use crate::node::{cells, is_node};
use crate::report::Report;
use crate::trigger::{self, TriggerError};
use crate::version_column::{self, Mode, VersionColumn, VersionType};

/// The high bits of `next_version()`'s last argument in an expression the planner hook wrote,
/// with the mode in the low bits.
const MAGIC: i32 = 0x5256_0000;
/// The version column is not in the SET list: lenient, +1.
const MODE_LENIENT: i32 = 0;
/// ... strict: refused.
const MODE_STRICT: i32 = 1;
/// The SET list states the version: checked.
const MODE_CHECK: i32 = 2;
/// Only ignored columns are set: the version stays.
const MODE_KEEP: i32 = 3;

/// `pg_rowversion.fast_path`: off makes the planner leave UPDATEs to the trigger (for a
/// session, a role or a database; for comparing the two paths).
static FAST_PATH: pgrx::GucSetting<bool> = pgrx::GucSetting::<bool>::new(true);

static mut PREV_PLANNER: pg_sys::planner_hook_type = None;
static mut PREV_EXECUTOR_START: pg_sys::ExecutorStart_hook_type = None;

/// Installs the hooks and the setting (from `_PG_init`).
pub fn install() {
    pgrx::GucRegistry::define_bool_guc(
        c"pg_rowversion.fast_path",
        c"Checks and increments versions in the UPDATE's SET list instead of the row trigger.",
        c"When on (the default), a plain UPDATE of a versioned table planned while pg_rowversion is loaded computes the new version in its target list and skips the trigger.",
        &FAST_PATH,
        pgrx::GucContext::Userset,
        pgrx::GucFlags::default(),
    );
    // SAFETY: _PG_init runs once per backend, before any planning with this library; the
    // previous hooks are kept and called.
    unsafe {
        PREV_PLANNER = pg_sys::planner_hook;
        pg_sys::planner_hook = Some(plan);
        PREV_EXECUTOR_START = pg_sys::ExecutorStart_hook;
        pg_sys::ExecutorStart_hook = Some(executor_start);
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn plan(
    parse: *mut pg_sys::Query,
    query_string: *const std::ffi::c_char,
    cursor_options: c_int,
    bound_params: pg_sys::ParamListInfo,
) -> *mut pg_sys::PlannedStmt {
    // SAFETY: the planner's arguments, passed on; `rewrite` only adds to the Query's target
    // list nodes made in the planner's memory context.
    unsafe {
        if FAST_PATH.get() {
            rewrite(parse);
        }
        match PREV_PLANNER {
            Some(previous) => previous(parse, query_string, cursor_options, bound_params),
            None => pg_sys::standard_planner(parse, query_string, cursor_options, bound_params),
        }
    }
}

/// `rowversion.<name>(argument types)`, if the extension in this database has it.
fn function_oid(name: &std::ffi::CStr, argument_types: &[pg_sys::Oid]) -> Option<pg_sys::Oid> {
    // SAFETY: a name lookup with missing_ok; the name list is built from palloc'd strings.
    let oid = unsafe {
        let schema = pg_sys::makeString(pg_sys::pstrdup(c"rowversion".as_ptr()));
        let function = pg_sys::makeString(pg_sys::pstrdup(name.as_ptr()));
        let names = pg_sys::lappend(pg_sys::lappend(std::ptr::null_mut(), schema.cast()), function.cast());
        pg_sys::LookupFuncName(names, argument_types.len() as c_int, argument_types.as_ptr(), true)
    };
    (oid != pg_sys::InvalidOid).then_some(oid)
}

/// The version trigger of `rel`, if it is the only `BEFORE ROW UPDATE` trigger and fires in
/// ordinary sessions. `by_name`: recognised by its name `rowversion` rather than by its
/// function, for a statement whose plan was made for it (any change to the table's triggers
/// since would have invalidated the plan); one catalog lookup less per execution.
///
/// # Safety
/// `rel` must be open.
unsafe fn only_version_trigger(rel: pg_sys::Relation, by_name: bool) -> Option<*mut pg_sys::Trigger> {
    // SAFETY: the relation's trigger descriptor, read as its counts say.
    unsafe {
        let trigdesc = (*rel).trigdesc;
        if trigdesc.is_null() || !(*trigdesc).trig_update_before_row {
            return None;
        }
        let triggers = std::slice::from_raw_parts_mut((*trigdesc).triggers, (*trigdesc).numtriggers as usize);
        let mut before_update_row = triggers.iter_mut().filter(|t| {
            let kind = t.tgtype as u32;
            kind & pg_sys::TRIGGER_TYPE_ROW != 0
                && kind & pg_sys::TRIGGER_TYPE_TIMING_MASK == pg_sys::TRIGGER_TYPE_BEFORE
                && kind & pg_sys::TRIGGER_TYPE_UPDATE != 0
        });
        let only = before_update_row.next()?;
        if before_update_row.next().is_some() || only.tgenabled != pg_sys::TRIGGER_FIRES_ON_ORIGIN as std::ffi::c_char {
            return None;
        }
        let ours = if by_name {
            std::ffi::CStr::from_ptr(only.tgname) == c"rowversion"
        } else {
            Some(only.tgfoid) == function_oid(c"version_trigger", &[])
        };
        ours.then_some(only as *mut pg_sys::Trigger)
    }
}

/// The SET lists of a Query that an UPDATE of its result relation runs: an UPDATE's target
/// list, an INSERT's ON CONFLICT DO UPDATE SET list (where the target table's columns are
/// those of the existing row), or the target lists of a MERGE's WHEN MATCHED THEN UPDATE
/// actions.
///
/// # Safety
/// `parse` must be a Query about to be planned.
unsafe fn set_lists(parse: *mut pg_sys::Query) -> impl Iterator<Item = *mut *mut pg_sys::List> {
    // SAFETY: the Query's own fields and nodes, read as their tags say.
    unsafe {
        let on_conflict = (*parse).onConflict;
        let statement: Option<*mut *mut pg_sys::List> = match (*parse).commandType {
            pg_sys::CmdType::CMD_UPDATE if on_conflict.is_null() => Some(&mut (*parse).targetList),
            pg_sys::CmdType::CMD_INSERT
                if !on_conflict.is_null() && (*on_conflict).action == pg_sys::OnConflictAction::ONCONFLICT_UPDATE =>
            {
                Some(&mut (*on_conflict).onConflictSet)
            }
            _ => None,
        };
        let merge_actions =
            if (*parse).commandType == pg_sys::CmdType::CMD_MERGE { cells((*parse).mergeActionList) } else { &[] };
        statement.into_iter().chain(merge_actions.iter().filter_map(|cell| {
            let action = cell.ptr_value as *mut pg_sys::MergeAction;
            ((*action).commandType == pg_sys::CmdType::CMD_UPDATE).then_some(&mut (*action).targetList as *mut _)
        }))
    }
}

/// Rewrites the SET lists of an UPDATE of a versioned ordinary table (see the module
/// comment): all of them, or none when one cannot be.
///
/// # Safety
/// `parse` must be a Query about to be planned.
unsafe fn rewrite(parse: *mut pg_sys::Query) {
    // SAFETY: the Query, its range table and SET lists as the parser and rewriter left them;
    // the result relation is locked by them, so opening it with NoLock is safe.
    unsafe {
        if set_lists(parse).next().is_none() {
            return;
        }
        let result = (*parse).resultRelation;
        let Some(rte) = cells((*parse).rtable).get(result as usize - 1) else { return };
        let rte = rte.ptr_value as *mut pg_sys::RangeTblEntry;
        if (*rte).relkind != pg_sys::RELKIND_RELATION as std::ffi::c_char {
            return;
        }
        let rel = pg_sys::RelationIdGetRelation((*rte).relid);
        if rel.is_null() {
            return;
        }
        // An UPDATE of an inheritance parent writes its children's rows too.
        let children = (*rte).inh && (*(*rel).rd_rel).relhassubclass;
        let column = if children {
            None
        } else {
            only_version_trigger(rel, false).and_then(|trigger| version_column::lookup(rel, trigger).ok())
        };
        pg_sys::RelationClose(rel);
        let Some(column) = column else { return };
        let type_oid = column.version_type.type_oid();
        let argument_types = [type_oid, type_oid, pg_sys::OIDOID, pg_sys::TIDOID, pg_sys::INT2OID, pg_sys::INT4OID];
        let Some(next_version) = function_oid(c"next_version", &argument_types) else { return };
        if !set_lists(parse).all(|list| mode_of(*list, &column).is_some()) {
            return;
        }
        for list in set_lists(parse) {
            if let Some((mode, stated)) = mode_of(*list, &column) {
                add_next_version(list, result, &column, next_version, mode, stated);
            }
        }
    }
}

/// The mode of `next_version()` for this SET list, and the entry stating the version; `None`
/// when the version is set by a multiple-column assignment, `SET (a, version) = (SELECT ...)`,
/// whose Param belongs to the sub-select's row.
///
/// # Safety
/// `set_list` must be a SET list of the Query being planned.
unsafe fn mode_of(
    set_list: *mut pg_sys::List,
    column: &VersionColumn,
) -> Option<(i32, Option<*mut pg_sys::TargetEntry>)> {
    // SAFETY: the list's target entries, read as their tags say.
    unsafe {
        let mut updated: *mut pg_sys::Bitmapset = std::ptr::null_mut();
        let mut stated: Option<*mut pg_sys::TargetEntry> = None;
        for cell in cells(set_list) {
            let entry = cell.ptr_value as *mut pg_sys::TargetEntry;
            if (*entry).resjunk {
                continue;
            }
            updated = pg_sys::bms_add_member(
                updated,
                c_int::from((*entry).resno) - pg_sys::FirstLowInvalidHeapAttributeNumber,
            );
            if (*entry).resno == column.attnum {
                stated = Some(entry);
            }
        }
        let mode = match stated {
            Some(entry)
                if is_node((*entry).expr.cast(), pg_sys::NodeTag::T_Param)
                    && (*((*entry).expr as *mut pg_sys::Param)).paramkind == pg_sys::ParamKind::PARAM_MULTIEXPR =>
            {
                return None
            }
            Some(_) => MODE_CHECK,
            None if column.ignored.cover(updated) => MODE_KEEP,
            None if column.mode == Mode::Strict => MODE_STRICT,
            None => MODE_LENIENT,
        };
        Some((mode, stated))
    }
}

/// Sets the version column in `set_list` to `next_version(stored, stated or NULL, ...)`.
///
/// # Safety
/// `set_list` must be a SET list of the Query being planned, whose result relation is range
/// table entry `result`.
unsafe fn add_next_version(
    set_list: *mut *mut pg_sys::List,
    result: c_int,
    column: &VersionColumn,
    next_version: pg_sys::Oid,
    mode: i32,
    stated: Option<*mut pg_sys::TargetEntry>,
) {
    // SAFETY: nodes made here in the planner's memory context, put into the Query's list.
    unsafe {
        let type_oid = column.version_type.type_oid();
        let stored = pg_sys::makeVar(result, column.attnum, type_oid, -1, pg_sys::InvalidOid, 0);
        let row_id = pg_sys::makeVar(
            result,
            pg_sys::SelfItemPointerAttributeNumber as pg_sys::AttrNumber,
            pg_sys::TIDOID,
            -1,
            pg_sys::InvalidOid,
            0,
        );
        let constant = |type_oid, len, value: pg_sys::Datum, null| {
            pg_sys::makeConst(type_oid, -1, pg_sys::InvalidOid, len, value, null, true).cast::<std::ffi::c_void>()
        };
        let supplied = match stated {
            Some(entry) => (*entry).expr.cast(),
            None => constant(type_oid, column.version_type.width(), pg_sys::Datum::from(0), true),
        };
        let args = [
            stored.cast(),
            supplied,
            constant(pg_sys::OIDOID, 4, column.relid.into(), false),
            row_id.cast(),
            constant(pg_sys::INT2OID, 2, column.attnum.into(), false),
            constant(pg_sys::INT4OID, 4, (MAGIC | mode).into(), false),
        ];
        let mut list: *mut pg_sys::List = std::ptr::null_mut();
        for arg in args {
            list = pg_sys::lappend(list, arg);
        }
        let call = pg_sys::makeFuncExpr(
            next_version,
            type_oid,
            list,
            pg_sys::InvalidOid,
            pg_sys::InvalidOid,
            pg_sys::CoercionForm::COERCE_EXPLICIT_CALL,
        );
        match stated {
            Some(entry) => (*entry).expr = call.cast(),
            None => {
                let name = pg_sys::get_attname(column.relid, column.attnum, false);
                let entry = pg_sys::makeTargetEntry(call.cast(), column.attnum, name, false);
                *set_list = pg_sys::lappend(*set_list, entry.cast());
            }
        }
    }
}

/// The relation a planned UPDATE (or INSERT ... ON CONFLICT DO UPDATE) checks versions of in
/// its SET list, if it does.
///
/// # Safety
/// `stmt` must be a planned statement.
unsafe fn rewritten_relation(stmt: *mut pg_sys::PlannedStmt) -> Option<pg_sys::Oid> {
    // SAFETY: the plan tree as the planner made it; nodes are read as their tags say.
    unsafe {
        let top = (*stmt).planTree;
        if !is_node(top.cast(), pg_sys::NodeTag::T_ModifyTable) {
            return None;
        }
        // Checked at every execution: nothing allocated here.
        let mt = top as *mut pg_sys::ModifyTable;
        let statement = match (*stmt).commandType {
            pg_sys::CmdType::CMD_UPDATE if !(*top).lefttree.is_null() => Some((*(*top).lefttree).targetlist),
            pg_sys::CmdType::CMD_INSERT => Some((*mt).onConflictSet),
            _ => None,
        };
        let merge_actions =
            if (*stmt).commandType == pg_sys::CmdType::CMD_MERGE { cells((*mt).mergeActionLists) } else { &[] };
        let merge_lists = merge_actions
            .iter()
            .flat_map(|actions| cells(actions.ptr_value as *mut pg_sys::List))
            .map(|action| (*(action.ptr_value as *mut pg_sys::MergeAction)).targetList);
        statement.into_iter().chain(merge_lists).find_map(|list| marked_relation(list))
    }
}

/// The relation of the `next_version()` call the planner hook put in this SET list, if any.
///
/// # Safety
/// `set_list` must be a target list of a plan.
unsafe fn marked_relation(set_list: *mut pg_sys::List) -> Option<pg_sys::Oid> {
    // SAFETY: target entries and expressions of a plan, read as their tags say.
    unsafe {
        for cell in cells(set_list) {
            let expr = (*(cell.ptr_value as *mut pg_sys::TargetEntry)).expr;
            if !is_node(expr.cast(), pg_sys::NodeTag::T_FuncExpr) {
                continue;
            }
            let args = cells((*(expr as *mut pg_sys::FuncExpr)).args);
            let [_, _, rel, _, _, mode] = args else { continue };
            let (rel, mode) = (rel.ptr_value as *mut pg_sys::Const, mode.ptr_value as *mut pg_sys::Const);
            if is_node(mode.cast(), pg_sys::NodeTag::T_Const)
                && is_node(rel.cast(), pg_sys::NodeTag::T_Const)
                && (*mode).consttype == pg_sys::INT4OID
                && ((*mode).constvalue.value() as i32) & !0xFFFF == MAGIC
                && (*rel).consttype == pg_sys::OIDOID
            {
                return Some(pg_sys::Oid::from((*rel).constvalue.value() as u32));
            }
        }
        None
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn executor_start(query_desc: *mut pg_sys::QueryDesc, eflags: c_int) {
    // SAFETY: the executor's arguments, passed on; afterwards the result relations of the
    // statement's own ModifyTable are read (not those of a data-modifying WITH, which the
    // planner hook did not rewrite), and the trigger flag of the rewritten one cleared in its
    // own copy of the trigger descriptor (InitResultRelInfo copies it per statement).
    unsafe {
        match PREV_EXECUTOR_START {
            Some(previous) => previous(query_desc, eflags),
            None => pg_sys::standard_ExecutorStart(query_desc, eflags),
        }
        let Some(relid) = rewritten_relation((*query_desc).plannedstmt) else { return };
        let state = (*query_desc).planstate;
        if !is_node(state.cast(), pg_sys::NodeTag::T_ModifyTableState) {
            return;
        }
        let state = state as *mut pg_sys::ModifyTableState;
        let infos = std::slice::from_raw_parts_mut((*state).resultRelInfo, (*state).mt_nrels as usize);
        for info in infos {
            let rel = info.ri_RelationDesc;
            if (*rel).rd_id == relid && !info.ri_TrigDesc.is_null() && only_version_trigger(rel, true).is_some() {
                (*info.ri_TrigDesc).trig_update_before_row = false;
            }
        }
    }
}

v1_function! {
    /// `rowversion.next_version(stored T, supplied T, rel oid, row_id tid, version_column
    /// smallint, mode integer) RETURNS T` for T smallint, integer and bigint: the trigger's
    /// UPDATE contract as an expression, which the planner hook puts in the target list.
    pg_finfo_rowversion_next_version,
    fn rowversion_next_version(args) -> Report {
        // SAFETY: the declared argument types; the relation is locked by the statement.
        unsafe {
            let fcinfo = args.fcinfo();
            let type_oid = pg_sys::get_fn_expr_rettype((*fcinfo).flinfo);
            let version_type = VersionType::from_oid(type_oid).ok_or(TriggerError::NotCalledAsRowTrigger)?;
            let stored_datum = args.datum(0);
            let mode = args.datum(5).map_or(MODE_CHECK, |d| d.value() as i32 & 0xFFFF);
            // A session replaying changes (session_replication_role = replica): the trigger
            // would not fire, and the row is written as stated.
            if pg_sys::SessionReplicationRole == pg_sys::SESSION_REPLICATION_ROLE_REPLICA as c_int {
                return Ok(if mode == MODE_CHECK { args.datum(1) } else { stored_datum });
            }
            // A NULL can only have been written while the trigger was off; it counts as 0.
            let stored = stored_datum.map_or(0, |d| version_type.read(d));
            let next = version_type.next(stored);
            let supplied = args.datum(1).map(|d| version_type.read(d));
            match (mode, supplied) {
                (MODE_KEEP, _) => Ok(stored_datum),
                (MODE_LENIENT, _) => Ok(Some(version_type.to_datum(next))),
                (MODE_CHECK, Some(supplied)) if supplied == stored => Ok(Some(version_type.to_datum(next))),
                (MODE_CHECK, Some(supplied)) if version_type.is_newer(supplied, stored) => Ok(args.datum(1)),
                _ => Err(refusal(args, version_type, mode, supplied, stored)),
            }
        }
    }
}

/// The trigger's error for a row `next_version()` refuses: strict mode without a version, a
/// NULL version, or a conflict (whose key comes from the stored row, fetched by its ctid).
///
/// # Safety
/// `args` must be those of `next_version()` in an UPDATE of their relation.
unsafe fn refusal(
    args: crate::fmgr::Args,
    version_type: VersionType,
    mode: i32,
    supplied: Option<i64>,
    stored: i64,
) -> Report {
    // SAFETY: the relation is locked by the UPDATE; the row at the ctid is the one being
    // updated, pinned while its key is read.
    unsafe {
        let relid = args.oid(2).unwrap_or(pg_sys::InvalidOid);
        let attnum = args.datum(4).map_or(0, |d| d.value() as i16);
        let rel = pg_sys::RelationIdGetRelation(relid);
        let column = VersionColumn {
            relid,
            attnum,
            version_type,
            mode: if mode == MODE_STRICT { Mode::Strict } else { Mode::Lenient },
            ignored: Default::default(),
        };
        let report = match supplied {
            _ if mode == MODE_STRICT => {
                trigger::report(rel, &column, |table, name| TriggerError::VersionRequired { table, column: name })
            }
            None => trigger::report(rel, &column, |table, name| TriggerError::NullVersion { table, column: name }),
            Some(supplied) => {
                let mut tuple: pg_sys::HeapTupleData = std::mem::zeroed();
                if let Some(row_id) = args.datum(3) {
                    tuple.t_self = *(row_id.cast_mut_ptr::<pg_sys::ItemPointerData>());
                }
                let mut buffer: pg_sys::Buffer = 0;
                let found = pg_sys::heap_fetch(
                    rel,
                    std::ptr::addr_of_mut!(pg_sys::SnapshotAnyData),
                    &mut tuple,
                    &mut buffer,
                    false,
                );
                let report = if found {
                    trigger::conflict(rel, &column, &mut tuple, supplied, stored)
                } else {
                    trigger::report(rel, &column, |table, _| TriggerError::Conflict {
                        table,
                        key: None,
                        expected: supplied,
                        found: None,
                    })
                };
                if found {
                    pg_sys::ReleaseBuffer(buffer);
                }
                report
            }
        };
        pg_sys::RelationClose(rel);
        report
    }
}
