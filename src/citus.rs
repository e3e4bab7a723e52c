//! What pg_rowversion needs to know of Citus, read from Citus' catalog tables without linking
//! to it: whether a table is a Citus table (the planner fast path leaves its statements to
//! Citus, which refuses the VOLATILE `next_version()` in an UPDATE it distributes, and the
//! shards version their rows with their own triggers), and which table a shard belongs to
//! (a conflict on a worker names the table the application wrote to, not `t_102009`).
//! In a database without Citus each answer costs one catalog lookup by name.

use pgrx::pg_sys;

use crate::node;

/// `pg_catalog.NAME`, Citus' catalog table, if Citus is installed in this database.
fn catalog(name: &std::ffi::CStr) -> Option<pg_sys::Oid> {
    // SAFETY: a name lookup in pg_catalog.
    let relid = unsafe { pg_sys::get_relname_relid(name.as_ptr(), pg_sys::Oid::from(pg_sys::PG_CATALOG_NAMESPACE)) };
    (relid != pg_sys::InvalidOid).then_some(relid)
}

/// Column `attnum` of the first row of catalog `relid` whose column `key_attnum` equals
/// `key` (by `equal`, the key type's equality function), read as a Datum of a by-value type.
///
/// # Safety
/// `relid` must be a table whose column `key_attnum` has the type `equal` compares and whose
/// column `attnum` is of a by-value type.
unsafe fn lookup(
    relid: pg_sys::Oid,
    key_attnum: i16,
    equal: u32,
    key: pg_sys::Datum,
    attnum: i16,
) -> Option<pg_sys::Datum> {
    // SAFETY: a heap scan of the catalog under AccessShareLock with one equality key; the
    // value is copied out (by value) before the scan ends.
    unsafe {
        let rel = pg_sys::table_open(relid, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        let mut scan_key: pg_sys::ScanKeyData = std::mem::zeroed();
        pg_sys::ScanKeyInit(
            &mut scan_key,
            key_attnum,
            pg_sys::BTEqualStrategyNumber as pg_sys::StrategyNumber,
            pg_sys::Oid::from(equal),
            key,
        );
        let scan = pg_sys::systable_beginscan(rel, pg_sys::InvalidOid, false, std::ptr::null_mut(), 1, &mut scan_key);
        let tuple = pg_sys::systable_getnext(scan);
        let value = (!tuple.is_null()).then(|| node::value(tuple, (*rel).rd_att, attnum));
        pg_sys::systable_endscan(scan);
        pg_sys::table_close(rel, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        value.flatten()
    }
}

/// Whether `relid` is a Citus table (distributed, reference, schema-sharded or a local table
/// added to Citus' metadata): a row of `pg_dist_partition`, whose first column is
/// `logicalrelid`.
pub fn is_citus_table(relid: pg_sys::Oid) -> bool {
    let Some(partition) = catalog(c"pg_dist_partition") else { return false };
    // SAFETY: pg_dist_partition.logicalrelid is a regclass (an OID), compared by oideq.
    unsafe { lookup(partition, 1, pg_sys::F_OIDEQ, relid.into(), 1).is_some() }
}

/// The Citus table that shard `rel` belongs to: a shard is named `<table>_<shardid>` (its
/// table's name cut short and hashed when that is too long) in its table's schema, and
/// `pg_dist_shard` (logicalrelid, shardid, ...) names the table. `None` for any other table.
///
/// # Safety
/// `rel` must be an open relation.
pub unsafe fn table_of_shard(rel: pg_sys::Relation) -> Option<pg_sys::Oid> {
    // SAFETY: the open relation's catalog row; catalog lookups.
    unsafe {
        let name = std::ffi::CStr::from_ptr((*(*rel).rd_rel).relname.data.as_ptr()).to_bytes();
        let position = name.iter().rposition(|&b| b == b'_')?;
        let shard_id: i64 = std::str::from_utf8(&name[position + 1..]).ok()?.parse().ok()?;
        let shards = catalog(c"pg_dist_shard")?;
        let table = lookup(shards, 2, pg_sys::F_INT8EQ, shard_id.into(), 1)?;
        let table = pg_sys::Oid::from(table.value() as u32);
        let table_name = pg_sys::get_rel_name(table);
        if table_name.is_null() || pg_sys::get_rel_namespace(table) != (*(*rel).rd_rel).relnamespace {
            return None;
        }
        let table_name = std::ffi::CStr::from_ptr(table_name).to_bytes();
        let truncated = name.len() == pg_sys::NAMEDATALEN as usize - 1;
        (name[..position] == *table_name || truncated).then_some(table)
    }
}
