//! The planner fast path: versioning at the cost of one SET-list expression.
//!
//! Any `BEFORE ROW UPDATE` trigger makes Postgres lock each row (an extra WAL record) and copy
//! tuples before it runs (measured: a 1M-row UPDATE 1.25x the trigger-less statement, WAL
//! 1.18x). When this library is loaded at plan time, `planner_hook` rewrites the SET lists of
//! an UPDATE, of an `INSERT ... ON CONFLICT DO UPDATE` and of a `MERGE`'s WHEN MATCHED THEN
//! UPDATE actions on a versioned table so that the version column's new value is computed
//! there by `rowversion.next_version()`, which applies the trigger's contract to the
//! stored version (a Var of the row being updated, re-evaluated by EvalPlanQual against the
//! newest row version under READ COMMITTED) and the stated one. `ExecutorStart_hook` then
//! turns the trigger off for that statement's result relations, and only when the plan carries
//! the expression: a plan made before the library was loaded keeps the trigger. The same holds
//! for each UPDATE in a data-modifying WITH (PostgREST writes every PATCH that way), which
//! has a ModifyTable, result relations and trigger descriptors of its own.
//!
//! A partitioned table or an inheritance parent is rewritten too: the planner translates the
//! SET list to every partition or child it updates, each result relation has its own trigger,
//! and the plan is kept only if every one of them is versioned the way the parent is (else
//! the statement is planned again as written). The plan depends on each of them, so a change
//! to any one re-plans it; partitions pruned at plan time are not among them, and receive
//! rows only by INSERT (row movement), which fires their INSERT trigger.
//!
//! Everything else keeps the trigger, which stays the single source of truth: `INSERT ... ON
//! CONFLICT` into a partitioned table (the partition is chosen while the statement runs, and
//! the plan does not depend on it), tables with another `BEFORE ROW UPDATE` trigger (whose
//! order against ours the expression could not keep), a trigger enabled other than `ORIGIN`
//! (`ALTER TABLE ... ENABLE ALWAYS/REPLICA TRIGGER`), a version set by a multiple-column
//! assignment, and databases whose extension is older than the library (no
//! `next_version()`). Plans are invalidated by Postgres when the table changes (enable,
//! disable, mode, column: all change its triggers), as for any plan.
//!
//! The call is marked as the planner hook's by `COERCE_SQL_SYNTAX`, a form SQL text cannot
//! give a call of this function: `next_version()` refuses to run in any other form, and only a
//! marked call turns the trigger off, so no statement can forge its way past the check.

use std::ffi::c_int;

use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::citus;
use crate::contract::{self, ContractError, Mismatch};
use crate::fmgr::v1_function;
use crate::http::{self, IfMatch};
use crate::merge_action;
use crate::node::{attribute, cells, is_node, result_relations};
use crate::report::Report;
use crate::stats::{self, Event};
use crate::version_column::{self, Mode, VersionColumn, VersionType};

/// What `next_version()` does for one SET list, as the planner hook chose it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SetListMode {
    /// The version column is not in the SET list: lenient, +1.
    Lenient = 0,
    /// ... strict: refused.
    Strict = 1,
    /// The SET list states the version: checked.
    Check = 2,
    /// Only ignored columns are set: the version stays.
    Keep = 3,
}

/// `next_version()`'s last argument, an `integer` constant in the expression the planner hook
/// wrote. Plans and the SQL declaration carry its encoding, so it stays as it is: [`MAGIC`] in
/// the high bits, the mode's number in the low 8 bits, and [`MERGE_ACTION`] or'ed in.
///
/// [`MAGIC`]: ModeArgument::MAGIC
/// [`MERGE_ACTION`]: ModeArgument::MERGE_ACTION
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ModeArgument {
    /// `None` for a number that is no mode: such a call accepts no row.
    mode: Option<SetListMode>,
    /// The SET list is a MERGE action's. After waiting for a concurrent update, MERGE
    /// re-evaluates an action with the target's stored values read from the newest row version
    /// but its row id still from the join's row (`ExecMergeMatched` does not refresh it), so a
    /// refusal looks at the row's newest version (see [`lock_row`]).
    merge_action: bool,
}

impl ModeArgument {
    /// The high 16 bits of every argument the planner hook writes.
    const MAGIC: i32 = 0x5256_0000;
    /// The bit of [`Self::merge_action`].
    const MERGE_ACTION: i32 = 0x100;
    /// Every mode; the number of each is its discriminant.
    const MODES: [SetListMode; 4] = [SetListMode::Lenient, SetListMode::Strict, SetListMode::Check, SetListMode::Keep];

    fn encode(mode: SetListMode, merge_action: bool) -> i32 {
        Self::MAGIC | mode as i32 | if merge_action { Self::MERGE_ACTION } else { 0 }
    }

    /// The argument of a call the planner hook made (see [`Self::is_planners`]).
    fn decode(value: i32) -> Self {
        let value = value & 0xFFFF;
        Self {
            mode: Self::MODES.into_iter().find(|&mode| mode as i32 == value & 0xFF),
            merge_action: value & Self::MERGE_ACTION != 0,
        }
    }

    /// Whether `value` has the high bits the planner hook writes.
    fn is_planners(value: i32) -> bool {
        value & !0xFFFF == Self::MAGIC
    }
}

/// `pg_rowversion.fast_path`: off makes the planner leave UPDATEs to the trigger (for a
/// session, a role or a database; for comparing the two paths).
static FAST_PATH: pgrx::GucSetting<bool> = pgrx::GucSetting::<bool>::new(true);

/// The trigger function's code, which the fast path stands in for: it recognises the trigger
/// by it. Given by `_PG_init` (the trigger module is above this one).
static VERSION_TRIGGER: std::sync::OnceLock<V1Function> = std::sync::OnceLock::new();

static mut PREV_PLANNER: pg_sys::planner_hook_type = None;
static mut PREV_EXECUTOR_START: pg_sys::ExecutorStart_hook_type = None;

/// Installs the hooks and the setting (from `_PG_init`); `version_trigger` is the code of
/// `rowversion.version_trigger()`.
pub fn install(version_trigger: V1Function) {
    VERSION_TRIGGER.get_or_init(|| version_trigger);
    pgrx::GucRegistry::define_bool_guc(
        c"pg_rowversion.fast_path",
        c"Checks and increments versions in the UPDATE's SET list instead of the row trigger.",
        c"When on (the default), an UPDATE of a versioned table planned while pg_rowversion is loaded computes the new version in its SET list and skips the trigger. A plan made before a change keeps its path until Postgres re-plans it.",
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
    // SAFETY: the planner's arguments, passed on; `rewrite` changes the Query's SET lists with
    // nodes made in the planner's memory context, after copying the Query as it was.
    unsafe {
        let planner = |parse| match PREV_PLANNER {
            Some(previous) => previous(parse, query_string, cursor_options, bound_params),
            None => pg_sys::standard_planner(parse, query_string, cursor_options, bound_params),
        };
        let rewritten = if FAST_PATH.get() { rewrite(parse) } else { None };
        let stmt = planner(parse);
        match rewritten {
            Some(Rewritten { original, statements }) if checked_statements(stmt) != Some(statements) => {
                planner(original)
            }
            _ => stmt,
        }
    }
}

/// A Query in which [`rewrite`] changed the SET lists of `statements` UPDATEs (the Query's
/// own, and those of its data-modifying WITH). Its plan is kept only if executor start will
/// recognise each of them ([`carries_version_check`]: a plan shape it does not know, say from
/// another extension's planner hook, would have both the expression and the trigger run) and
/// every result relation of each is versioned as its root is ([`checked_statements`]).
/// Otherwise `original`, the Query as it was, is planned instead. The result relations are
/// known only after planning: the planner expands a partitioned table or inheritance parent,
/// locking only the partitions it does not prune, and a child may have been added since the
/// Query was parsed.
struct Rewritten {
    original: *mut pg_sys::Query,
    statements: usize,
}

/// The ModifyTable nodes of a plan: the statement's own, and those of its data-modifying
/// WITH (each a subplan of its own).
///
/// # Safety
/// `stmt` must be a planned statement.
unsafe fn modify_tables(stmt: *mut pg_sys::PlannedStmt) -> impl Iterator<Item = *mut pg_sys::ModifyTable> {
    // SAFETY: the plan's nodes, read as their tags say (a removed subplan is NULL).
    unsafe {
        std::iter::once((*stmt).planTree)
            .chain(cells((*stmt).subplans).iter().map(|cell| cell.ptr_value as *mut pg_sys::Plan))
            .filter(|&plan| is_node(plan.cast(), pg_sys::NodeTag::T_ModifyTable))
            .map(|plan| plan as *mut pg_sys::ModifyTable)
    }
}

/// How many ModifyTables of a rewritten statement's plan check versions, each of whose
/// result relations is versioned as its root is (see [`Rewritten`]); `None` when one is not.
///
/// # Safety
/// `stmt` must be the plan the planner just made for a rewritten Query; its relations are
/// locked by the planner.
unsafe fn checked_statements(stmt: *mut pg_sys::PlannedStmt) -> Option<usize> {
    // SAFETY: forwarded.
    unsafe {
        let mut count = 0;
        for mt in modify_tables(stmt).filter(|&mt| carries_version_check(mt)) {
            if !versioned_like_root(stmt, mt) {
                return None;
            }
            count += 1;
        }
        Some(count)
    }
}

/// A V1 function of this library, as fmgr calls it.
pub type V1Function = unsafe extern "C-unwind" fn(pg_sys::FunctionCallInfo) -> pg_sys::Datum;

/// `rowversion.<name>(argument types)`, if the extension in this database has it: a function
/// of that name that is not this library's `code` is never trusted nor put in a plan (in a
/// database without the extension, a schema `rowversion` may belong to anyone).
fn function_oid(name: &std::ffi::CStr, argument_types: &[pg_sys::Oid], code: V1Function) -> Option<pg_sys::Oid> {
    // SAFETY: a name lookup with missing_ok, the name list built from palloc'd strings; then
    // the function's call information, which resolves a C function's symbol without calling it.
    unsafe {
        let schema = pg_sys::makeString(pg_sys::pstrdup(c"rowversion".as_ptr()));
        let function = pg_sys::makeString(pg_sys::pstrdup(name.as_ptr()));
        let names = pg_sys::lappend(pg_sys::lappend(std::ptr::null_mut(), schema.cast()), function.cast());
        let oid = pg_sys::LookupFuncName(names, argument_types.len() as c_int, argument_types.as_ptr(), true);
        if oid == pg_sys::InvalidOid {
            return None;
        }
        let mut call: pg_sys::FmgrInfo = std::mem::zeroed();
        pg_sys::fmgr_info(oid, &mut call);
        (call.fn_addr.map(|f| f as usize) == Some(code as usize)).then_some(oid)
    }
}

/// The only `BEFORE ROW UPDATE` trigger of `rel`, if it fires in ordinary sessions. It lives
/// in the relcache, which the lock on the relation keeps from changing.
///
/// # Safety
/// `rel` must be open and locked.
unsafe fn only_before_update_row_trigger<'a>(rel: pg_sys::Relation) -> Option<&'a pg_sys::Trigger> {
    // SAFETY: the relation's trigger descriptor, read as its counts say.
    unsafe {
        let trigdesc = (*rel).trigdesc;
        if trigdesc.is_null() || !(*trigdesc).trig_update_before_row {
            return None;
        }
        let triggers = std::slice::from_raw_parts((*trigdesc).triggers, (*trigdesc).numtriggers as usize);
        let mut before_update_row = triggers.iter().filter(|t| {
            let kind = t.tgtype as u32;
            kind & pg_sys::TRIGGER_TYPE_ROW != 0
                && kind & pg_sys::TRIGGER_TYPE_TIMING_MASK == pg_sys::TRIGGER_TYPE_BEFORE
                && kind & pg_sys::TRIGGER_TYPE_UPDATE != 0
        });
        let only = before_update_row.next()?;
        let fires = only.tgenabled == pg_sys::TRIGGER_FIRES_ON_ORIGIN as std::ffi::c_char;
        (before_update_row.next().is_none() && fires).then_some(only)
    }
}

/// The trigger `rowversion` of `rel` (or a Citus shard's, see [`version_trigger_name`]), if it
/// is the only `BEFORE ROW UPDATE` trigger, fires in ordinary sessions and for every UPDATE
/// (no `UPDATE OF` column list). The planner hook also
/// checks its function; executor start, for a statement whose plan was made with it (any
/// change to the table's triggers since would have invalidated the plan), goes by the name
/// alone: one catalog lookup less per execution.
///
/// # Safety
/// `rel` must be open and locked.
unsafe fn named_version_trigger<'a>(rel: pg_sys::Relation) -> Option<&'a pg_sys::Trigger> {
    // SAFETY: forwarded from the caller; a trigger's name is a C string.
    unsafe {
        only_before_update_row_trigger(rel)
            .filter(|t| t.tgnattr == 0 && version_trigger_name(rel, std::ffi::CStr::from_ptr(t.tgname)))
    }
}

/// `rowversion`, or `rowversion_<shard id>` on a Citus shard `<table>_<shard id>`: Citus
/// gives a table's triggers that suffix on its shards, on the workers.
///
/// # Safety
/// `rel` must be open.
unsafe fn version_trigger_name(rel: pg_sys::Relation, name: &std::ffi::CStr) -> bool {
    let name = name.to_bytes();
    if name == b"rowversion" {
        return true;
    }
    let Some(shard) = name.strip_prefix(b"rowversion_") else { return false };
    // SAFETY: the open relation's catalog row.
    let relation = unsafe { std::ffi::CStr::from_ptr((*(*rel).rd_rel).relname.data.as_ptr()) }.to_bytes();
    !shard.is_empty()
        && shard.iter().all(u8::is_ascii_digit)
        && relation.strip_suffix(shard).is_some_and(|rest| rest.ends_with(b"_"))
        // SAFETY: forwarded.
        && unsafe { citus::table_of_shard(rel) }.is_some()
}

/// Whether `rel` is an ordinary table stored by the heap: the rows the expression reads and a
/// conflict report fetches by their ctid (`heap_fetch`). A foreign partition or a table of
/// another access method keeps the trigger.
///
/// # Safety
/// `rel` must be open.
unsafe fn heap_table(rel: pg_sys::Relation) -> bool {
    // SAFETY: an open relation's catalog row and access method routine.
    unsafe {
        (*(*rel).rd_rel).relkind == pg_sys::RELKIND_RELATION as std::ffi::c_char
            && std::ptr::eq((*rel).rd_tableam, pg_sys::GetHeapamTableAmRoutine())
    }
}

/// How a version trigger versions its table, by column names (a partition's columns can be
/// numbered differently from its parent's): what a partition or child must share with its
/// parent for the parent's SET list to apply to it. Copied out of the relcache (a handful of
/// names, at most one per column): opening the next partition can rebuild the parent's entry.
#[derive(PartialEq)]
struct Versioning {
    function: pg_sys::Oid,
    mode: std::ffi::CString,
    /// The version column, then the ignored ones, as the WHEN clause names them.
    columns: Vec<std::ffi::CString>,
}

/// The versioning of `trigger` on `rel`; `None` for a trigger `enable()` did not write.
///
/// # Safety
/// `rel` must be open and `trigger` one of its triggers.
unsafe fn versioning(rel: pg_sys::Relation, trigger: &pg_sys::Trigger) -> Option<Versioning> {
    // SAFETY: a trigger's `tgargs` holds `tgnargs` C strings and `tgqual` is NULL or a node
    // string; the columns are checked against the descriptor's count before they are read.
    unsafe {
        if trigger.tgnargs != 1 || trigger.tgqual.is_null() {
            return None;
        }
        let tupdesc = (*rel).rd_att;
        let columns = version_column::when_clause(trigger.tgqual)?
            .columns
            .into_iter()
            .map(|attnum| {
                (attnum >= 1 && i32::from(attnum) <= (*tupdesc).natts)
                    .then(|| std::ffi::CStr::from_ptr(attribute(tupdesc, attnum).attname.data.as_ptr()).to_owned())
            })
            .collect::<Option<Vec<_>>>()?;
        let mode = std::ffi::CStr::from_ptr(*trigger.tgargs).to_owned();
        Some(Versioning { function: trigger.tgfoid, mode, columns })
    }
}

/// Whether every result relation of the planned UPDATE `mt` is its root (the table the
/// statement names) itself or has a version trigger that versions it as the root's does, and
/// that the fast path may turn off (see [`Rewritten`]). A partitioned root is a result
/// relation only when the planner pruned every partition.
///
/// # Safety
/// `mt` must be a ModifyTable of `stmt`, the plan the planner just made for a rewritten
/// Query; its relations are locked by the planner.
unsafe fn versioned_like_root(stmt: *mut pg_sys::PlannedStmt, mt: *mut pg_sys::ModifyTable) -> bool {
    // SAFETY: the plan tree as the planner made it, read as its tags say; every relation is
    // locked by the planner and closed again here.
    unsafe {
        let rtable = cells((*stmt).rtable);
        let Some(root_entry) = ((*mt).nominalRelation as usize).checked_sub(1).and_then(|i| rtable.get(i)) else {
            return false;
        };
        let root = (*(root_entry.ptr_value as *mut pg_sys::RangeTblEntry)).relid;
        let root_rel = pg_sys::RelationIdGetRelation(root);
        if root_rel.is_null() {
            return false;
        }
        // Copied before any partition is opened (see `Versioning`).
        let root_trigger = named_version_trigger(root_rel);
        let root_versioned = root_trigger.is_some();
        let root_versioning = root_trigger.and_then(|trigger| versioning(root_rel, trigger));
        let partitioned = (*(*root_rel).rd_rel).relkind == pg_sys::RELKIND_PARTITIONED_TABLE as std::ffi::c_char;
        let all = cells((*mt).resultRelations).iter().all(|cell| {
            let Some(entry) = (cell.int_value as usize).checked_sub(1).and_then(|i| rtable.get(i)) else {
                return false;
            };
            let relid = (*(entry.ptr_value as *mut pg_sys::RangeTblEntry)).relid;
            if relid == root {
                return root_versioned && (partitioned || heap_table(root_rel));
            }
            let rel = pg_sys::RelationIdGetRelation(relid);
            if rel.is_null() {
                return false;
            }
            let same = match (&root_versioning, named_version_trigger(rel)) {
                (Some(root_versioning), Some(trigger)) => {
                    heap_table(rel) && versioning(rel, trigger).as_ref() == Some(root_versioning)
                }
                _ => false,
            };
            pg_sys::RelationClose(rel);
            same
        });
        pg_sys::RelationClose(root_rel);
        all
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

/// Rewrites the SET lists of the UPDATEs of versioned tables in a Query (see the module
/// comment): its own, and those of its data-modifying WITH, which is how PostgREST writes
/// every PATCH (`WITH pgrst_source AS (UPDATE ... RETURNING ...) SELECT ...`).
///
/// # Safety
/// `parse` must be a Query about to be planned.
unsafe fn rewrite(parse: *mut pg_sys::Query) -> Option<Rewritten> {
    // SAFETY: the Query and the Queries of its WITH, as the parser and rewriter left them;
    // their SET lists are changed only after the whole Query has been copied.
    unsafe {
        let with = cells((*parse).cteList).iter().filter_map(|cell| {
            let query = (*(cell.ptr_value as *mut pg_sys::CommonTableExpr)).ctequery;
            is_node(query, pg_sys::NodeTag::T_Query).then_some(query as *mut pg_sys::Query)
        });
        let rewrites: Vec<Rewrite> = std::iter::once(parse).chain(with).filter_map(|query| prepare(query)).collect();
        if rewrites.is_empty() {
            return None;
        }
        let original = pg_sys::copyObjectImpl(parse.cast()).cast();
        for rewrite in &rewrites {
            for &(list, mode, stated) in &rewrite.set_lists {
                add_next_version(
                    list,
                    rewrite.result,
                    &rewrite.column,
                    rewrite.next_version,
                    ModeArgument::encode(mode, rewrite.merge_action),
                    stated,
                );
            }
        }
        Some(Rewritten { original, statements: rewrites.len() })
    }
}

/// How [`rewrite`] changes one UPDATE: each SET list with its mode and stated version.
struct Rewrite {
    result: c_int,
    /// Whether the SET lists are a MERGE's actions.
    merge_action: bool,
    column: VersionColumn,
    next_version: pg_sys::Oid,
    set_lists: Vec<(*mut *mut pg_sys::List, SetListMode, Option<*mut pg_sys::TargetEntry>)>,
}

/// How to rewrite the SET lists of an UPDATE of a versioned table: all of them, or none when
/// one cannot be (`None`, also for any other statement).
///
/// # Safety
/// `parse` must be a Query about to be planned, or one of its WITH.
unsafe fn prepare(parse: *mut pg_sys::Query) -> Option<Rewrite> {
    // SAFETY: the Query, its range table and SET lists as the parser and rewriter left them;
    // the result relation is locked by them, so opening it with NoLock is safe.
    unsafe {
        set_lists(parse).next()?;
        let result = (*parse).resultRelation;
        let rte =
            cells((*parse).rtable).get((result as usize).checked_sub(1)?)?.ptr_value as *mut pg_sys::RangeTblEntry;
        let partitioned = (*rte).relkind == pg_sys::RELKIND_PARTITIONED_TABLE as std::ffi::c_char;
        // INSERT ... ON CONFLICT into a partitioned table updates a partition chosen by tuple
        // routing while the statement runs: the plan does not depend on the partition, so a
        // change to its trigger would not re-plan it.
        let routed = partitioned && (*parse).commandType == pg_sys::CmdType::CMD_INSERT;
        if routed || !(partitioned || (*rte).relkind == pg_sys::RELKIND_RELATION as std::ffi::c_char) {
            return None;
        }
        let rel = pg_sys::RelationIdGetRelation((*rte).relid);
        if rel.is_null() {
            return None;
        }
        // The function is looked up only for a table with a trigger `rowversion`: an UPDATE of
        // any other table pays one scan of its trigger descriptor.
        let column = (partitioned || heap_table(rel))
            .then(|| named_version_trigger(rel))
            .flatten()
            .filter(|trigger| {
                VERSION_TRIGGER.get().and_then(|&code| function_oid(c"version_trigger", &[], code))
                    == Some(trigger.tgfoid)
            })
            .and_then(|trigger| version_column::lookup(rel, trigger).ok())
            // A table in merge mode keeps the trigger: its per-row record needs the stored and
            // the new value of every column (src/merge.rs).
            .filter(|column| column.merge.is_none())
            // Citus plans a Citus table's statements for its shards, whose own triggers version
            // the rows, and refuses the VOLATILE call in what it distributes (src/citus.rs).
            .filter(|_| !citus::is_citus_table((*rte).relid));
        pg_sys::RelationClose(rel);
        let column = column?;
        let type_oid = column.version_type.type_oid();
        let argument_types = [type_oid, type_oid, pg_sys::OIDOID, pg_sys::TIDOID, pg_sys::INT4OID];
        let next_version = function_oid(c"next_version", &argument_types, rowversion_next_version)?;
        // All SET lists or none: one a multiple-column assignment sets is left to the trigger.
        let set_lists = set_lists(parse)
            .map(|list| mode_of(*list, &column).map(|(mode, stated)| (list, mode, stated)))
            .collect::<Option<Vec<_>>>()?;
        let merge_action = (*parse).commandType == pg_sys::CmdType::CMD_MERGE;
        Some(Rewrite { result, merge_action, column, next_version, set_lists })
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
) -> Option<(SetListMode, Option<*mut pg_sys::TargetEntry>)> {
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
            Some(_) => SetListMode::Check,
            None if column.ignored.cover(updated) => SetListMode::Keep,
            None if column.mode == Mode::Strict => SetListMode::Strict,
            None => SetListMode::Lenient,
        };
        Some((mode, stated))
    }
}

/// Sets the version column in `set_list` to `next_version(stored, stated or NULL, ...,
/// argument)`, `argument` an encoded [`ModeArgument`].
///
/// # Safety
/// `set_list` must be a SET list of the Query being planned, whose result relation is range
/// table entry `result`.
unsafe fn add_next_version(
    set_list: *mut *mut pg_sys::List,
    result: c_int,
    column: &VersionColumn,
    next_version: pg_sys::Oid,
    argument: i32,
    stated: Option<*mut pg_sys::TargetEntry>,
) {
    // SAFETY: nodes made here in the planner's memory context, put into the Query's list.
    unsafe {
        let type_oid = column.version_type.type_oid();
        let stored = pg_sys::makeVar(result, column.attnum, type_oid, -1, pg_sys::InvalidOid, 0);
        let system_column = |attnum: i32, type_oid| {
            pg_sys::makeVar(result, attnum as pg_sys::AttrNumber, type_oid, -1, pg_sys::InvalidOid, 0)
        };
        // The row's own table (a partition's or a child's for a parent) and its place there:
        // a conflict names the table and describes the row's key, as the trigger does.
        let row_table = system_column(pg_sys::TableOidAttributeNumber, pg_sys::OIDOID);
        let row_id = system_column(pg_sys::SelfItemPointerAttributeNumber, pg_sys::TIDOID);
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
            row_table.cast(),
            row_id.cast(),
            constant(pg_sys::INT4OID, 4, argument.into(), false),
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
            // The mark of the planner hook's call (see the module comment).
            pg_sys::CoercionForm::COERCE_SQL_SYNTAX,
        );
        match stated {
            Some(entry) => (*entry).expr = call.cast(),
            None => {
                let name = pg_sys::get_attname(column.relid, column.attnum, false);
                let entry = pg_sys::makeTargetEntry(call.cast(), column.attnum, name, false);
                // Before the first junk entry (a multiple-column assignment's sub-select):
                // the planner wants every column's entry first ("subplan target list is out
                // of order" otherwise).
                let first_junk = cells(*set_list)
                    .iter()
                    .position(|cell| (*(cell.ptr_value as *mut pg_sys::TargetEntry)).resjunk)
                    .unwrap_or(cells(*set_list).len());
                *set_list = pg_sys::list_insert_nth(*set_list, first_junk as c_int, entry.cast());
            }
        }
    }
}

/// Whether a planned UPDATE (or INSERT ... ON CONFLICT DO UPDATE, or MERGE) checks versions
/// in its SET lists.
///
/// # Safety
/// `mt` must be a ModifyTable of a planned statement.
unsafe fn carries_version_check(mt: *mut pg_sys::ModifyTable) -> bool {
    // SAFETY: the plan tree as the planner made it; nodes are read as their tags say.
    unsafe {
        // Checked at every execution: nothing allocated here.
        match (*mt).operation {
            pg_sys::CmdType::CMD_UPDATE => computes_version((*mt).plan.lefttree),
            pg_sys::CmdType::CMD_INSERT => marked((*mt).onConflictSet),
            pg_sys::CmdType::CMD_MERGE => cells((*mt).mergeActionLists).iter().any(|actions| {
                cells(actions.ptr_value as *mut pg_sys::List)
                    .iter()
                    .any(|action| marked((*(action.ptr_value as *mut pg_sys::MergeAction)).targetList))
            }),
            _ => false,
        }
    }
}

/// Whether an UPDATE's subplan computes the version with the planner hook's call: in its
/// top node's target list, or for a partitioned table or inheritance parent in those of the
/// Append's children (the Append only passes their rows on). The first marked list ends the
/// walk: one node for an UPDATE of a table.
///
/// # Safety
/// `plan` must be NULL or a plan node.
unsafe fn computes_version(plan: *mut pg_sys::Plan) -> bool {
    // SAFETY: plan nodes and their children, read as their tags say.
    unsafe {
        if plan.is_null() {
            return false;
        }
        if marked((*plan).targetlist) {
            return true;
        }
        let children = if is_node(plan.cast(), pg_sys::NodeTag::T_Append) {
            cells((*(plan as *mut pg_sys::Append)).appendplans)
        } else {
            &[]
        };
        children.iter().any(|child| computes_version(child.ptr_value.cast()))
            || computes_version((*plan).lefttree)
            || computes_version((*plan).righttree)
    }
}

/// Whether a target list has a `next_version()` call the planner hook made.
///
/// # Safety
/// `list` must be NIL or a target list.
unsafe fn marked(list: *mut pg_sys::List) -> bool {
    // SAFETY: target entries, read as their tags say.
    unsafe { cells(list).iter().any(|cell| planner_call((*(cell.ptr_value as *mut pg_sys::TargetEntry)).expr.cast())) }
}

/// Whether `expr` is a `next_version()` call the planner hook made: marked `COERCE_SQL_SYNTAX`
/// (see the module comment), its last argument the mode constant.
///
/// # Safety
/// `expr` must be NULL or an expression node.
unsafe fn planner_call(expr: *const pg_sys::Node) -> bool {
    // SAFETY: an expression and its arguments, read as their tags say.
    unsafe {
        if !is_node(expr, pg_sys::NodeTag::T_FuncExpr) {
            return false;
        }
        let call = expr as *const pg_sys::FuncExpr;
        let [.., mode] = cells((*call).args) else { return false };
        let mode = mode.ptr_value as *const pg_sys::Const;
        (*call).funcformat == pg_sys::CoercionForm::COERCE_SQL_SYNTAX
            && is_node(mode.cast(), pg_sys::NodeTag::T_Const)
            && (*mode).consttype == pg_sys::INT4OID
            && !(*mode).constisnull
            && ModeArgument::is_planners((*mode).constvalue.value() as i32)
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn executor_start(query_desc: *mut pg_sys::QueryDesc, eflags: c_int) {
    // SAFETY: the executor's arguments, passed on; afterwards the statement's plan and the
    // states of its subplans (a data-modifying WITH), as executor start made them. Only a
    // ModifyTable whose own plan computes versions has its triggers turned off.
    unsafe {
        LAST_MERGE_ROW = None;
        match PREV_EXECUTOR_START {
            Some(previous) => previous(query_desc, eflags),
            None => pg_sys::standard_ExecutorStart(query_desc, eflags),
        }
        // The statement's own ModifyTable and those of its data-modifying WITH, each checked
        // by its own plan: one that computes versions skips the trigger; a MERGE that keeps
        // it tells the trigger each action's own columns.
        let states = std::iter::once((*query_desc).planstate).chain(
            cells((*(*query_desc).estate).es_subplanstates).iter().map(|cell| cell.ptr_value as *mut pg_sys::PlanState),
        );
        let mut merges = Vec::new();
        for state in states.filter(|&state| is_node(state.cast(), pg_sys::NodeTag::T_ModifyTableState)) {
            let plan = (*state).plan as *mut pg_sys::ModifyTable;
            if carries_version_check(plan) {
                skip_version_triggers(state);
            } else if (*plan).operation == pg_sys::CmdType::CMD_MERGE {
                merges.push(state);
            }
        }
        if !merges.is_empty() {
            merge_action::track(query_desc, &merges);
        }
    }
}

/// Turns the version trigger off for the result relations of a ModifyTable whose plan
/// computes versions, in their own copies of the trigger descriptor (InitResultRelInfo copies
/// it per statement).
///
/// # Safety
/// `state` must be the started state of such a ModifyTable.
unsafe fn skip_version_triggers(state: *mut pg_sys::PlanState) {
    // SAFETY: forwarded; each result relation is open and locked by the statement.
    unsafe {
        for info in result_relations(state) {
            if !info.ri_TrigDesc.is_null() && named_version_trigger(info.ri_RelationDesc).is_some() {
                (*info.ri_TrigDesc).trig_update_before_row = false;
            }
        }
    }
}

/// Errors of `next_version()` itself; those of the contract are the trigger's.
#[derive(Debug, thiserror::Error)]
enum FastPathError {
    #[error("rowversion.next_version() can only be called by an UPDATE the planner fast path rewrote")]
    CalledDirectly,
}

impl From<FastPathError> for Report {
    fn from(error: FastPathError) -> Self {
        match error {
            FastPathError::CalledDirectly => Report::new(
                pgrx::PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                error.to_string(),
                None,
                Some("Write the UPDATE itself: while pg_rowversion is loaded, the planner puts this call in its SET list.".into()),
            ),
        }
    }
}

v1_function! {
    /// `rowversion.next_version(stored T, supplied T, row_table oid, row_id tid, mode integer)
    /// RETURNS T` for T smallint, integer and bigint: the trigger's UPDATE contract as an
    /// expression, which the planner hook puts in the target list.
    pg_finfo_rowversion_next_version,
    declared [
        "next_version(bigint, bigint, oid, tid, integer) -> bigint",
        "next_version(integer, integer, oid, tid, integer) -> integer",
        "next_version(smallint, smallint, oid, tid, integer) -> smallint",
    ],
    fn rowversion_next_version(args) -> Report {
        // SAFETY: the declared argument types; a call the planner hook made (checked first)
        // has the row's table, locked by the statement, and its place there as arguments 2
        // and 3.
        unsafe {
            let fcinfo = args.fcinfo();
            // A call written by hand could name any table and row, and turn nothing off.
            if !planner_call((*(*fcinfo).flinfo).fn_expr) {
                return Err(FastPathError::CalledDirectly.into());
            }
            let type_oid = pg_sys::get_fn_expr_rettype((*fcinfo).flinfo);
            let version_type = VersionType::from_oid(type_oid).ok_or(FastPathError::CalledDirectly)?;
            let stored_datum = args.datum(0);
            let argument = args.datum(4).map_or(
                ModeArgument { mode: Some(SetListMode::Check), merge_action: false },
                |d| ModeArgument::decode(d.value() as i32),
            );
            let mode = argument.mode;
            // A session replaying changes (session_replication_role = replica): the trigger
            // would not fire, and the row is written as stated.
            if pg_sys::SessionReplicationRole == pg_sys::SESSION_REPLICATION_ROLE_REPLICA as c_int {
                return Ok(if mode == Some(SetListMode::Check) { args.datum(1) } else { stored_datum });
            }
            // A NULL can only have been written while the trigger was off; it counts as 0.
            let stored = stored_datum.map_or(0, |d| version_type.read(d));
            let next = version_type.next(stored);
            let supplied = args.datum(1).map(|d| version_type.read(d));
            // Behind an HTTP layer, the request's If-Match is a precondition, and states the
            // version for an UPDATE that does not.
            let http = http::active();
            let if_match = if http { http::if_match() } else { IfMatch::Absent };
            let precondition = if_match.matches(stored);
            let accepted = match (mode, supplied) {
                _ if !precondition => None,
                (Some(SetListMode::Keep), _) => Some(stored),
                (Some(SetListMode::Lenient), _) => Some(next),
                (Some(SetListMode::Strict), _) if matches!(if_match, IfMatch::Tags { .. }) => Some(next),
                (Some(SetListMode::Check), Some(supplied)) if supplied == stored => Some(next),
                (Some(SetListMode::Check), Some(supplied)) if version_type.is_newer(supplied, stored) => Some(supplied),
                _ => None,
            };
            let relid = args.oid(2).unwrap_or(pg_sys::InvalidOid);
            // Counted as the trigger counts (src/stats.rs), once per row: a row's check
            // repeated by EvalPlanQual (in_recheck) is not counted again. A MERGE action
            // evaluated again after waiting for a concurrent writer runs in the statement's own
            // plan, with the join's row id (see lock_row): the same row again.
            let merge_row = argument.merge_action.then(|| {
                let row = args.datum(3).map(|row_id| {
                    let tid = &*(row_id.cast_mut_ptr::<pg_sys::ItemPointerData>());
                    (u64::from(tid.ip_blkid.bi_hi) << 32) | (u64::from(tid.ip_blkid.bi_lo) << 16) | u64::from(tid.ip_posid)
                });
                (relid, row)
            });
            let merge_repeat = merge_row.is_some() && LAST_MERGE_ROW == merge_row;
            if argument.merge_action {
                LAST_MERGE_ROW = merge_row;
            }
            if !in_recheck((*fcinfo).flinfo) && !merge_repeat {
                stats::set_row_counted(false);
            }
            match accepted {
                Some(version) => {
                    // A row whose version the SET list or If-Match states (an UPDATE of ignored
                    // columns only is bookkeeping, as in the trigger).
                    let stated = mode == Some(SetListMode::Check)
                        || (mode != Some(SetListMode::Keep) && matches!(if_match, IfMatch::Tags { .. }));
                    if stated && !stats::row_counted() {
                        stats::count(relid, Event::Checked);
                        stats::set_row_counted(true);
                    }
                    if http {
                        http::send_version(version);
                    }
                    // A kept version stays as stored (a NULL too).
                    Ok(if mode == Some(SetListMode::Keep) { stored_datum } else { Some(version_type.to_datum(version)) })
                }
                // The trigger decides on the row it has locked, after waiting for a concurrent
                // writer: so does this. A row that changed meanwhile is left to the executor,
                // which the same write fails in the same way (skipped when deleted or no longer
                // matching, re-evaluated here when updated, 27000 when a function of this
                // statement changed it).
                None if !lock_row(args, argument.merge_action) => Ok(stored_datum),
                None => {
                    let refusal = match (mode, supplied) {
                        _ if !precondition => Refusal::PreconditionFailed,
                        (Some(SetListMode::Strict), _) => Refusal::VersionRequired,
                        (_, None) => Refusal::NullVersion,
                        (_, Some(supplied)) => Refusal::Conflict(supplied),
                    };
                    match refusal {
                        Refusal::VersionRequired => stats::count(relid, Event::VersionRequired),
                        Refusal::Conflict(_) | Refusal::PreconditionFailed if stats::row_counted() => {
                            stats::count(relid, Event::ConflictOnRecheck)
                        }
                        Refusal::Conflict(_) | Refusal::PreconditionFailed => stats::count(relid, Event::Conflict),
                        Refusal::NullVersion => {}
                    }
                    Err(refused(args, refusal, stored))
                }
            }
        }
    }
}

/// Whether a `next_version()` call is an EvalPlanQual re-check: its expression belongs to the
/// plan EvalPlanQual starts for re-checking rows, whose executor state (`fn_mcxt`, an
/// "ExecutorState" memory context) is created inside the statement's own (execMain.c,
/// EvalPlanQualStart); a statement's executor state never is. Decided on a call's first row
/// and kept in `fn_extra` (a byte: 1 re-check, 2 not).
///
/// # Safety
/// `flinfo` must be the FmgrInfo of the current call.
unsafe fn in_recheck(flinfo: *mut pg_sys::FmgrInfo) -> bool {
    // SAFETY: `fn_mcxt` and its parent are valid memory contexts whose names are C strings;
    // `fn_extra` is this function's, allocated in `fn_mcxt`, which outlives the call.
    unsafe {
        let cached = (*flinfo).fn_extra as *const u8;
        if !cached.is_null() {
            return *cached == 1;
        }
        let executor_state = |context: pg_sys::MemoryContext| {
            !context.is_null() && std::ffi::CStr::from_ptr((*context).name) == c"ExecutorState"
        };
        let context = (*flinfo).fn_mcxt;
        let recheck = executor_state(context) && executor_state((*context).parent);
        let extra = pg_sys::MemoryContextAlloc(context, 1) as *mut u8;
        *extra = if recheck { 1 } else { 2 };
        (*flinfo).fn_extra = extra.cast();
        recheck
    }
}

/// The table and row id of the last MERGE action `next_version()` decided in this statement:
/// an evaluation of the same row again is a re-check (forgotten when a statement starts).
static mut LAST_MERGE_ROW: Option<(pg_sys::Oid, Option<u64>)> = None;

/// Why `next_version()` refuses a row: the trigger's errors.
#[derive(Clone, Copy)]
enum Refusal {
    VersionRequired,
    NullVersion,
    /// The stated version is stale.
    Conflict(i64),
    /// The request's If-Match names another version.
    PreconditionFailed,
}

/// Whether the row being updated is still its table's newest version once locked, as the
/// trigger's row is: `heap_lock_tuple` waits for a transaction that is changing it, then
/// reports whether that transaction changed or deleted it (or a later command of this one
/// did). Only a refusal pays for it; an accepted row is locked by the UPDATE itself.
///
/// A MERGE action (`merge`) can be evaluated with a stale row id: after a concurrent update,
/// `ExecMergeMatched` locks the newest row version and evaluates the action again on it, but
/// the row id comes from the join's old row. So for a MERGE action whose row was updated, the
/// refusal stands when the newest version is one this transaction already holds locked (the
/// executor's lock before that re-evaluation); otherwise the executor has yet to wait for it
/// and re-evaluate (its conditions may no longer hold).
///
/// # Safety
/// `args` must be those of a `next_version()` call the planner hook made.
unsafe fn lock_row(args: crate::fmgr::Args, merge: bool) -> bool {
    // SAFETY: the row's table is locked by the UPDATE and is a heap table (checked when the
    // plan was made); the row id is the one being updated. The command id is the statement's
    // own (its snapshot's), not one a function of the SET list may have moved on. The buffer
    // pinned by heap_lock_tuple is released here.
    unsafe {
        let (Some(relid), Some(row_id)) = (args.oid(2), args.datum(3)) else { return true };
        let rel = pg_sys::RelationIdGetRelation(relid);
        if rel.is_null() {
            return true;
        }
        let mut tuple =
            pg_sys::HeapTupleData { t_self: *(row_id.cast_mut_ptr::<pg_sys::ItemPointerData>()), ..Default::default() };
        let mut buffer: pg_sys::Buffer = 0;
        let mut failure = pg_sys::TM_FailureData::default();
        let result = pg_sys::heap_lock_tuple(
            rel,
            &mut tuple,
            (*pg_sys::GetActiveSnapshot()).curcid,
            pg_sys::LockTupleMode::LockTupleNoKeyExclusive,
            pg_sys::LockWaitPolicy::LockWaitBlock,
            false,
            &mut buffer,
            &mut failure,
        );
        if buffer != 0 {
            pg_sys::ReleaseBuffer(buffer);
        }
        let current = match result {
            pg_sys::TM_Result::TM_Ok => true,
            pg_sys::TM_Result::TM_Updated if merge => newest_locked_by_us(rel, failure.ctid),
            _ => false,
        };
        pg_sys::RelationClose(rel);
        current
    }
}

/// Whether the newest version of the row whose update chain continues at `next` is locked
/// (or updated) by this transaction. A row moved to another partition ends the chain: the
/// executor raises its own 40001 for it.
///
/// # Safety
/// `rel` must be open and locked; `next` a row id of its update chain, whose versions the
/// statement's snapshot keeps from being pruned.
unsafe fn newest_locked_by_us(rel: pg_sys::Relation, mut next: pg_sys::ItemPointerData) -> bool {
    // SAFETY: each version is fetched by its row id with the buffer pinned while its header
    // is read, and released before the next one.
    unsafe {
        loop {
            let moved = next.ip_posid as u32 == pg_sys::MovedPartitionsOffsetNumber
                && next.ip_blkid.bi_hi == u16::MAX
                && next.ip_blkid.bi_lo == u16::MAX;
            let mut tuple = pg_sys::HeapTupleData { t_self: next, ..Default::default() };
            let mut buffer: pg_sys::Buffer = 0;
            if moved
                || !pg_sys::heap_fetch(
                    rel,
                    std::ptr::addr_of_mut!(pg_sys::SnapshotAnyData),
                    &mut tuple,
                    &mut buffer,
                    false,
                )
            {
                return false;
            }
            let header = tuple.t_data;
            let mut following = (*header).t_ctid;
            let newest = pg_sys::ItemPointerEquals(&mut following, &mut tuple.t_self);
            let ours = newest && held_by_this_transaction(header);
            pg_sys::ReleaseBuffer(buffer);
            if newest {
                return ours;
            }
            next = following;
        }
    }
}

/// Whether this transaction (or one of its live subtransactions) is among the holders of a
/// row version's xmax: a plain transaction id or the members of a multixact.
///
/// # Safety
/// `header` must be the header of a row version whose buffer is pinned.
unsafe fn held_by_this_transaction(header: pg_sys::HeapTupleHeader) -> bool {
    // SAFETY: the header's fields; a multixact's members are a palloc'd array, freed here.
    unsafe {
        let infomask = u32::from((*header).t_infomask);
        let xmax = (*header).t_choice.t_heap.t_xmax;
        if infomask & pg_sys::HEAP_XMAX_INVALID != 0 {
            return false;
        }
        if infomask & pg_sys::HEAP_XMAX_IS_MULTI == 0 {
            return pg_sys::TransactionIdIsCurrentTransactionId(xmax);
        }
        let mut members: *mut pg_sys::MultiXactMember = std::ptr::null_mut();
        let count =
            pg_sys::GetMultiXactIdMembers(xmax, &mut members, false, infomask & pg_sys::HEAP_XMAX_LOCK_ONLY != 0);
        if count <= 0 || members.is_null() {
            return false;
        }
        let ours = std::slice::from_raw_parts(members, count as usize)
            .iter()
            .any(|member| pg_sys::TransactionIdIsCurrentTransactionId(member.xid));
        pg_sys::pfree(members.cast());
        ours
    }
}

/// The trigger's error for a row `next_version()` refuses: strict mode without a version, a
/// NULL version, a conflict or a failed If-Match (whose key comes from the stored row, fetched
/// by its ctid), naming the row's own table and its version column.
///
/// # Safety
/// `args` must be those of a `next_version()` call the planner hook made.
unsafe fn refused(args: crate::fmgr::Args, refusal: Refusal, stored: i64) -> Report {
    // SAFETY: the row's table is locked by the UPDATE, and versioned by a trigger that the
    // plan was checked against (any change to it re-plans); the row at the ctid is the one
    // being updated, pinned while its key is read.
    unsafe {
        let rel = pg_sys::RelationIdGetRelation(args.oid(2).unwrap_or(pg_sys::InvalidOid));
        let column = (!rel.is_null())
            .then(|| named_version_trigger(rel))
            .flatten()
            .and_then(|trigger| version_column::lookup(rel, trigger).ok());
        let Some(column) = column else {
            if !rel.is_null() {
                pg_sys::RelationClose(rel);
            }
            return FastPathError::CalledDirectly.into();
        };
        let report = match refusal {
            Refusal::VersionRequired => contract::report(rel, column.attnum, |table, name| {
                ContractError::VersionRequired { table, column: name }
            }),
            Refusal::NullVersion => {
                contract::report(rel, column.attnum, |table, name| ContractError::NullVersion { table, column: name })
            }
            Refusal::Conflict(_) | Refusal::PreconditionFailed => {
                let mut tuple = pg_sys::HeapTupleData::default();
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
                let report =
                    match (refusal, found) {
                        (Refusal::Conflict(supplied), true) => {
                            contract::mismatch(rel, column.attnum, &mut tuple, stored, Mismatch::Supplied(supplied))
                        }
                        (Refusal::Conflict(supplied), false) => {
                            contract::report(rel, column.attnum, |table, _| ContractError::Conflict {
                                table,
                                key: None,
                                expected: supplied,
                                found: None,
                                changed: Vec::new(),
                                unknown: Vec::new(),
                            })
                        }
                        (_, true) => contract::mismatch(rel, column.attnum, &mut tuple, stored, Mismatch::IfMatch),
                        (_, false) => contract::report(rel, column.attnum, |table, _| {
                            ContractError::PreconditionFailed { table, key: None, found: None }
                        }),
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

#[cfg(test)]
mod unit_tests {
    use super::{ModeArgument, SetListMode};

    #[test]
    fn the_mode_argument_keeps_the_encoding_that_plans_and_the_sql_declaration_carry() {
        assert_eq!(ModeArgument::encode(SetListMode::Lenient, false), 0x5256_0000);
        assert_eq!(ModeArgument::encode(SetListMode::Strict, false), 0x5256_0001);
        assert_eq!(ModeArgument::encode(SetListMode::Check, false), 0x5256_0002);
        assert_eq!(ModeArgument::encode(SetListMode::Keep, false), 0x5256_0003);
        assert_eq!(ModeArgument::encode(SetListMode::Check, true), 0x5256_0102);
    }

    #[test]
    fn every_mode_decodes_as_it_was_encoded_and_is_recognised_as_the_planners() {
        for mode in ModeArgument::MODES {
            for merge_action in [false, true] {
                let encoded = ModeArgument::encode(mode, merge_action);
                assert!(ModeArgument::is_planners(encoded));
                assert_eq!(ModeArgument::decode(encoded), ModeArgument { mode: Some(mode), merge_action });
            }
        }
        assert!(!ModeArgument::is_planners(2), "a bare mode number is not the planner's");
    }

    #[test]
    fn a_number_that_is_no_mode_decodes_to_none_and_keeps_the_merge_bit() {
        assert_eq!(ModeArgument::decode(0x5256_0104), ModeArgument { mode: None, merge_action: true });
        assert_eq!(ModeArgument::decode(0x5256_00FF), ModeArgument { mode: None, merge_action: false });
    }
}
