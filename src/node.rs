//! Reading Postgres node trees: Lists and node tags (the WHEN clause of a trigger, a Query
//! about to be planned, a plan).

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
