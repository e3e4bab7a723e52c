//! Reading Postgres node trees: Lists and node tags (the WHEN clause of a trigger, a Query
//! about to be planned, a plan), and the result relations of a started ModifyTable.

use pgrx::pg_sys;

/// The elements of a pointer List.
///
/// # Safety
/// `list` must be NIL or a valid List of pointers that outlives the slice.
pub unsafe fn cells<'a>(list: *mut pg_sys::List) -> &'a [pg_sys::ListCell] {
    if list.is_null() {
        return &[];
    }
    // SAFETY: a List holds `length` cells at `elements`.
    unsafe { std::slice::from_raw_parts((*list).elements, (*list).length as usize) }
}

/// Whether `node` is a node with this tag (false for NULL).
///
/// # Safety
/// `node` must be NULL or point to a node.
pub unsafe fn is_node(node: *const pg_sys::Node, tag: pg_sys::NodeTag) -> bool {
    // SAFETY: forwarded from the caller.
    !node.is_null() && unsafe { (*node).type_ } == tag
}

/// The result relations of a started ModifyTable; empty for any other plan state.
///
/// # Safety
/// `state` must be NULL or a plan state that executor start has made.
pub unsafe fn result_relations<'a>(state: *mut pg_sys::PlanState) -> &'a mut [pg_sys::ResultRelInfo] {
    // SAFETY: the plan state as executor start made it, read as its tag says; a ModifyTable's
    // state holds `mt_nrels` result relations.
    unsafe {
        if !is_node(state.cast(), pg_sys::NodeTag::T_ModifyTableState) {
            return &mut [];
        }
        let state = state as *mut pg_sys::ModifyTableState;
        if (*state).resultRelInfo.is_null() || (*state).mt_nrels < 1 {
            return &mut [];
        }
        std::slice::from_raw_parts_mut((*state).resultRelInfo, (*state).mt_nrels as usize)
    }
}
