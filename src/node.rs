//! Reading Postgres node trees: Lists and node tags (the WHEN clause of a trigger, a Query
//! about to be planned, a plan), and the result relations of a started statement.

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

/// The result relations of a started statement's own ModifyTable (not those of a
/// data-modifying WITH); empty for any other statement.
///
/// # Safety
/// `query_desc` must be a statement that executor start has started.
pub unsafe fn result_relations<'a>(query_desc: *mut pg_sys::QueryDesc) -> &'a mut [pg_sys::ResultRelInfo] {
    // SAFETY: the plan state as executor start made it, read as its tag says; a ModifyTable's
    // state holds `mt_nrels` result relations.
    unsafe {
        let state = (*query_desc).planstate;
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
