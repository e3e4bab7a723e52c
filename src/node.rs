//! Reading Postgres node trees: Lists and node tags (the WHEN clause of a trigger, a Query
//! about to be planned, a plan), the result relations of a started ModifyTable, and the
//! columns of a tuple descriptor and their values in a heap tuple.

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

/// The value of column `attnum` (1-based) of a heap tuple, `None` for NULL.
///
/// # Safety
/// `tuple` must be a tuple described by `tupdesc`, and `attnum` one of its columns.
pub unsafe fn value(tuple: pg_sys::HeapTuple, tupdesc: pg_sys::TupleDesc, attnum: i16) -> Option<pg_sys::Datum> {
    let mut isnull = false;
    // SAFETY: forwarded from the caller.
    let datum = unsafe { pg_sys::heap_getattr(tuple, attnum.into(), tupdesc, &mut isnull) };
    (!isnull).then_some(datum)
}

/// Column `attnum` (1-based) of a tuple descriptor. Postgres 18 stores `natts` compact
/// attributes first and the full ones after them.
///
/// # Safety
/// `tupdesc` must be valid and `attnum` one of its columns.
pub unsafe fn attribute<'a>(tupdesc: pg_sys::TupleDesc, attnum: i16) -> &'a pg_sys::FormData_pg_attribute {
    // SAFETY: forwarded from the caller.
    unsafe {
        let natts = (*tupdesc).natts as usize;
        #[cfg(not(feature = "pg18"))]
        let attributes = (*tupdesc).attrs.as_slice(natts);
        #[cfg(feature = "pg18")]
        let attributes = std::slice::from_raw_parts(
            (*tupdesc).compact_attrs.as_ptr().add(natts).cast::<pg_sys::FormData_pg_attribute>(),
            natts,
        );
        &attributes[attnum as usize - 1]
    }
}
