//! Which MERGE action the version trigger fires for.
//!
//! The contract is per SET list: a MERGE action that states the version is checked, one that
//! does not is strict-refused or incremented, one that sets only ignored columns keeps the
//! version, whatever the statement's other actions do. The planner fast path computes the
//! version in each action's SET list, so it follows that rule by construction. A trigger sees
//! only `tg_updatedcols`, which for a MERGE is the union of every UPDATE action's columns:
//! through it, an action without the version passed in strict mode when another action stated
//! it, and an action of ignored columns moved the version.
//!
//! So when a MERGE that keeps the trigger starts (executor start, while this library is
//! loaded), each UPDATE action's projection of each versioned result relation is wrapped: the
//! wrapper records the action's own columns for its result relation, then projects the row as
//! before. Postgres projects an action's row right before it fires the BEFORE UPDATE triggers
//! for it (`ExecMergeMatched`; again after a concurrent update), so the trigger reads the
//! columns of the action that is running. The records live as long as the statement's memory
//! (a reset callback removes them, after an error too).
//!
//! A MERGE that started before this library was loaded in the backend (its first statement
//! that fires the trigger, without `shared_preload_libraries`) is not tracked: its trigger
//! goes by the union, as Postgres' own `UPDATE OF` triggers do.

use std::cell::RefCell;

use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::node::{cells, result_relations};

/// One wrapped UPDATE action of one result relation.
struct Action {
    projection: *mut pg_sys::ExprState,
    /// The projection's own evaluation function, called by the wrapper.
    evaluate: pg_sys::ExprStateEvalFunc,
    /// The action's SET list columns, offset as `tg_updatedcols` is, in the statement's memory.
    columns: *mut pg_sys::Bitmapset,
    /// The version trigger of the action's result relation (its copy in that ResultRelInfo).
    trigger: *const pg_sys::Trigger,
}

/// The tracked actions of one running MERGE.
struct Statement {
    memory: pg_sys::MemoryContext,
    actions: Vec<Action>,
    /// Per version trigger, the columns of its relation's action projected last.
    running: Vec<(*const pg_sys::Trigger, *mut pg_sys::Bitmapset)>,
}

thread_local! {
    /// The running MERGEs that keep the version trigger (nested ones included: a trigger or a
    /// function may run another).
    static STATEMENTS: RefCell<Vec<Statement>> = const { RefCell::new(Vec::new()) };
}

/// The SET list columns of the MERGE action the trigger `trigger` fires for, if its statement
/// is tracked; otherwise the trigger goes by `tg_updatedcols`.
pub fn columns(trigger: *const pg_sys::Trigger) -> Option<*const pg_sys::Bitmapset> {
    STATEMENTS.with_borrow(|statements| {
        statements
            .iter()
            .rev()
            .flat_map(|statement| statement.running.iter())
            .find(|(running, _)| std::ptr::eq(*running, trigger))
            .map(|&(_, columns)| columns.cast_const())
    })
}

/// Tracks the UPDATE actions of the MERGEs of a statement that keep their triggers (see the
/// module comment); `query_desc` has just been started, `merges` are the states of those
/// MERGEs (the statement's own, or in its WITH).
///
/// # Safety
/// `query_desc` must be a started statement and `merges` ModifyTable states of it.
pub unsafe fn track(query_desc: *mut pg_sys::QueryDesc, merges: &[*mut pg_sys::PlanState]) {
    // SAFETY: the statement's executor state as executor start left it; the actions'
    // projections are ready and live in its query memory, where the columns are put too.
    unsafe {
        let memory = (*(*query_desc).estate).es_query_cxt;
        let mut statement = Statement { memory, actions: Vec::new(), running: Vec::new() };
        let old_context = pg_sys::MemoryContextSwitchTo(memory);
        for info in merges.iter().flat_map(|&state| result_relations(state).iter()) {
            let Some(trigger) = version_trigger(info.ri_TrigDesc) else { continue };
            for action in update_actions(info) {
                let projection = std::ptr::addr_of_mut!((*(*action).mas_proj).pi_state);
                let mut columns: *mut pg_sys::Bitmapset = std::ptr::null_mut();
                for cell in int_cells((*(*action).mas_action).updateColnos) {
                    columns = pg_sys::bms_add_member(columns, cell - pg_sys::FirstLowInvalidHeapAttributeNumber);
                }
                statement.actions.push(Action { projection, evaluate: (*projection).evalfunc, columns, trigger });
                (*projection).evalfunc = Some(project_action);
            }
        }
        pg_sys::MemoryContextSwitchTo(old_context);
        if statement.actions.is_empty() {
            return;
        }
        let callback = pg_sys::MemoryContextAlloc(memory, size_of::<pg_sys::MemoryContextCallback>())
            as *mut pg_sys::MemoryContextCallback;
        callback.write(pg_sys::MemoryContextCallback {
            func: Some(forget),
            arg: memory.cast(),
            next: std::ptr::null_mut(),
        });
        pg_sys::MemoryContextRegisterResetCallback(memory, callback);
        STATEMENTS.with_borrow_mut(|statements| statements.push(statement));
    }
}

/// The trigger `rowversion` among a result relation's BEFORE ROW UPDATE triggers.
///
/// # Safety
/// `trigdesc` must be NULL or a valid trigger descriptor.
unsafe fn version_trigger(trigdesc: *mut pg_sys::TriggerDesc) -> Option<*const pg_sys::Trigger> {
    // SAFETY: the descriptor's triggers, read as its count says; names are C strings.
    unsafe {
        if trigdesc.is_null() || !(*trigdesc).trig_update_before_row {
            return None;
        }
        let triggers = std::slice::from_raw_parts((*trigdesc).triggers, (*trigdesc).numtriggers as usize);
        triggers
            .iter()
            .find(|t| {
                let kind = t.tgtype as u32;
                kind & pg_sys::TRIGGER_TYPE_ROW != 0
                    && kind & pg_sys::TRIGGER_TYPE_TIMING_MASK == pg_sys::TRIGGER_TYPE_BEFORE
                    && kind & pg_sys::TRIGGER_TYPE_UPDATE != 0
                    && std::ffi::CStr::from_ptr(t.tgname) == c"rowversion"
            })
            .map(std::ptr::from_ref)
    }
}

/// The UPDATE actions of a result relation of a MERGE: WHEN MATCHED, and on Postgres 17 and
/// later WHEN NOT MATCHED BY SOURCE.
///
/// # Safety
/// `info` must be a result relation of a started MERGE.
unsafe fn update_actions(info: &pg_sys::ResultRelInfo) -> impl Iterator<Item = *mut pg_sys::MergeActionState> + '_ {
    #[cfg(any(feature = "pg15", feature = "pg16"))]
    let lists = [info.ri_matchedMergeAction];
    #[cfg(not(any(feature = "pg15", feature = "pg16")))]
    let lists = [
        info.ri_MergeActions[pg_sys::MergeMatchKind::MERGE_WHEN_MATCHED as usize],
        info.ri_MergeActions[pg_sys::MergeMatchKind::MERGE_WHEN_NOT_MATCHED_BY_SOURCE as usize],
    ];
    // SAFETY: Lists of MergeActionState nodes, as executor start made them.
    lists.into_iter().flat_map(|list| unsafe { cells(list) }).filter_map(|cell| {
        let action = cell.ptr_value as *mut pg_sys::MergeActionState;
        // SAFETY: as above.
        unsafe {
            ((*(*action).mas_action).commandType == pg_sys::CmdType::CMD_UPDATE && !(*action).mas_proj.is_null())
                .then_some(action)
        }
    })
}

/// The elements of an integer List.
///
/// # Safety
/// `list` must be NIL or a valid integer List.
unsafe fn int_cells(list: *mut pg_sys::List) -> impl Iterator<Item = i32> {
    // SAFETY: forwarded from the caller; an integer cell holds `int_value`.
    unsafe { cells(list) }.iter().map(|cell| cell.int_value)
}

/// The wrapped evaluation of an UPDATE action's projection: records the action as its result
/// relation's running one, then projects as the original function does. That function may
/// replace itself on its first call (Postgres' interpreter checks the expression once, JIT
/// compiles it): its replacement is kept and the wrapper put back.
#[pg_guard]
unsafe extern "C-unwind" fn project_action(
    state: *mut pg_sys::ExprState,
    context: *mut pg_sys::ExprContext,
    is_null: *mut bool,
) -> pg_sys::Datum {
    let evaluate = STATEMENTS.with_borrow_mut(|statements| {
        statements.iter_mut().rev().find_map(|statement| {
            let action = statement.actions.iter().find(|action| action.projection == state)?;
            let (trigger, columns, evaluate) = (action.trigger, action.columns, action.evaluate);
            match statement.running.iter_mut().find(|(running, _)| std::ptr::eq(*running, trigger)) {
                Some(running) => running.1 = columns,
                None => statement.running.push((trigger, columns)),
            }
            Some(evaluate)
        })
    });
    let Some(Some(evaluate)) = evaluate else {
        // Not tracked (cannot happen: the wrapper is installed with its record).
        pgrx::error!("pg_rowversion: untracked MERGE action projection");
    };
    // SAFETY: the projection's own function with its own arguments; an ERROR in it is turned
    // into a panic here and back into the ERROR by `pg_guard`.
    unsafe {
        let datum = pg_sys::ffi::pg_guard_ffi_boundary(|| evaluate(state, context, is_null));
        let current = (*state).evalfunc;
        if current.map(|f| f as usize) != Some(project_action as *const () as usize) {
            STATEMENTS.with_borrow_mut(|statements| {
                let action = statements
                    .iter_mut()
                    .flat_map(|statement| statement.actions.iter_mut())
                    .find(|action| action.projection == state);
                if let Some(action) = action {
                    action.evaluate = current;
                }
            });
            (*state).evalfunc = Some(project_action);
        }
        datum
    }
}

/// The statement's memory is being reset or deleted: its records go.
#[pg_guard]
unsafe extern "C-unwind" fn forget(memory: *mut std::ffi::c_void) {
    STATEMENTS.with_borrow_mut(|statements| statements.retain(|statement| statement.memory.cast() != memory));
}
