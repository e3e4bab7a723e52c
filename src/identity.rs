//! Running a statement as another role: the owner of the table `enable()` fills, or of a
//! table of the extension (the leases, the replication conflicts) that its functions keep.

use pgrx::pg_sys;

/// Runs `work` as `owner` in a security-restricted operation (no SET ROLE, no temporary
/// objects, no lasting GUC changes) with `search_path` set to `pg_catalog, pg_temp`: what
/// Postgres does around code of a table's owner that a maintenance command runs (the
/// search_path part since Postgres 17). Functions that the owner's triggers and index
/// expressions call must therefore be schema-qualified or set their own search_path.
///
/// On an error nothing here is restored: the (sub)transaction abort that follows every
/// ERROR restores the user and the GUC nesting level, as it does for VACUUM.
pub fn as_owner<T>(owner: pg_sys::Oid, work: impl FnOnce() -> T) -> T {
    let (mut caller, mut context) = (pg_sys::InvalidOid, 0);
    // SAFETY: plain calls into Postgres' user-identity and GUC machinery, paired below.
    let nest_level = unsafe {
        pg_sys::GetUserIdAndSecContext(&mut caller, &mut context);
        pg_sys::SetUserIdAndSecContext(owner, context | pg_sys::SECURITY_RESTRICTED_OPERATION as i32);
        let nest_level = pg_sys::NewGUCNestLevel();
        pg_sys::set_config_option(
            c"search_path".as_ptr(),
            c"pg_catalog, pg_temp".as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_SAVE,
            true,
            0,
            false,
        );
        nest_level
    };
    let result = work();
    // SAFETY: undoes the above, in reverse order.
    unsafe {
        pg_sys::AtEOXact_GUC(true, nest_level);
        pg_sys::SetUserIdAndSecContext(caller, context);
    }
    result
}

/// Runs `work` as `role` with the caller's search_path, as a `SECURITY DEFINER` function owned
/// by `role` would without a SET clause: for statements of the extension's own that name every
/// object with its schema (the lease functions). Cheaper than [`as_owner`], whose search_path
/// change costs a GUC nesting level per call (measured with pgbench, 8 clients: 11,900
/// acquire+release pairs per second with it, 14,800 with this).
///
/// As for [`as_owner`], an error's abort restores the user.
pub fn as_role<T>(role: pg_sys::Oid, work: impl FnOnce() -> T) -> T {
    let (mut caller, mut context) = (pg_sys::InvalidOid, 0);
    // SAFETY: plain calls into Postgres' user-identity machinery, paired below.
    unsafe {
        pg_sys::GetUserIdAndSecContext(&mut caller, &mut context);
        pg_sys::SetUserIdAndSecContext(role, context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32);
    }
    let result = work();
    // SAFETY: undoes the above.
    unsafe { pg_sys::SetUserIdAndSecContext(caller, context) };
    result
}

/// The relation `rowversion.NAME`, which the extension's script created; InvalidOid when it is
/// missing (then statements on it fail cleanly).
pub fn extension_relation(name: &std::ffi::CStr) -> pg_sys::Oid {
    // SAFETY: catalog lookups by name.
    unsafe {
        let schema = pg_sys::get_namespace_oid(c"rowversion".as_ptr(), true);
        pg_sys::get_relname_relid(name.as_ptr(), schema)
    }
}

/// The owner of the table `rowversion.NAME`, as whom the extension's functions act on it (the
/// caller when it is missing).
pub fn table_owner(name: &std::ffi::CStr) -> pg_sys::Oid {
    let relid = extension_relation(name);
    // SAFETY: RelationIdGetRelation takes no lock, and the descriptor is closed right after
    // reading its owner.
    unsafe {
        let rel = pg_sys::RelationIdGetRelation(relid);
        if rel.is_null() {
            pg_sys::GetUserId()
        } else {
            let owner = (*(*rel).rd_rel).relowner;
            pg_sys::RelationClose(rel);
            owner
        }
    }
}
