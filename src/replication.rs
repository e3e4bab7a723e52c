//! Tables written on several nodes that replicate to each other
//! (`rowversion.enable(..., multi_node => true)`): a change arriving from another node that was
//! not based on the local row is a replication conflict, decided the same way on every node,
//! and the losing row image is recorded in `rowversion.replication_conflict_log`.
//!
//! Logical replication's apply worker runs with `session_replication_role = replica`, so the
//! version trigger does not fire for the rows it applies, and it applies an UPDATE to whatever
//! row it finds by the key: with two nodes writing the same row from the same version, each
//! node ends with the other's row (measured, Postgres 18: the nodes swapped). The remote
//! writer's base version is not sent (only the key is, under the default replica identity), so
//! the row carries its lineage itself: the write column [`WRITE_COLUMN`] (`bytea`, 32 bytes)
//! holds the stamp of the image (when and on which node it was written) and the stamp of the
//! image it replaced.
//!
//! The trigger `rowversion_replication` is enabled `ALWAYS`, so it fires in ordinary sessions
//! and in the apply worker alike:
//! - a local write stamps the row whenever its version moves (after the version trigger, which
//!   fires first by name); an UPDATE that leaves the version (ignored columns) keeps the
//!   image's stamp, and an INSERT keeps a supplied one (a restore, a copy);
//! - a remote UPDATE of the same image, or of its successor (its base is the local image), is
//!   applied as before;
//! - any other remote UPDATE is a conflict: the higher version wins (serial-number order),
//!   equal versions the later stamp, then the higher system identifier. Both nodes compare the
//!   same two images by values both carry, so both keep the same one. The loser is recorded;
//!   records of images either was built on are removed, since their changes live on in it.
//!
//! Deletes, and inserts of a key that exists, are left to Postgres (see docs/scaling-out.md).

use pgrx::datum::DatumWithOid;
use pgrx::pg_sys;
use pgrx::spi::Spi;
use pgrx::trigger_support::{
    trigger_fired_before, trigger_fired_by_insert, trigger_fired_by_update, trigger_fired_for_row,
};
use pgrx::PgSqlErrorCode;

use crate::encoding;
use crate::identity::{as_role, table_owner};
use crate::node::attribute;
use crate::report::Report;
use crate::stats::{self, Event};
use crate::version_column::{self, VersionType};

/// The name of the trigger `enable(..., multi_node => true)` installs.
pub const TRIGGER_NAME: &str = "rowversion_replication";

/// The name `enable()` gives the write column.
pub const WRITE_COLUMN: &str = "rowversion_write";

#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    #[error("rowversion.replication_trigger() must be fired BEFORE INSERT OR UPDATE FOR EACH ROW")]
    NotCalledAsRowTrigger,
    #[error("trigger \"{0}\" was not created by rowversion.enable()")]
    NotCreatedByEnable(String),
    #[error("could not record a replication conflict on table \"{table}\": {error}")]
    Record { table: String, error: pgrx::spi::SpiError },
}

impl From<ReplicationError> for Report {
    fn from(error: ReplicationError) -> Self {
        let (code, hint) = match error {
            ReplicationError::NotCalledAsRowTrigger => {
                (PgSqlErrorCode::ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED, None)
            }
            ReplicationError::NotCreatedByEnable(_) => (
                PgSqlErrorCode::ERRCODE_INVALID_OBJECT_DEFINITION,
                Some("Call rowversion.enable() with multi_node => true to recreate it.".into()),
            ),
            ReplicationError::Record { .. } => (PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, None),
        };
        Report::new(code, error.to_string(), None, hint)
    }
}

/// When and on which node a row image was written: what orders two images of equal version.
/// Every node sees the same stamp for the same image, since it travels in the row.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
struct Stamp {
    /// Microseconds since 2000-01-01 (a `timestamptz`), on the writer's clock; 0 for unknown.
    written_at: i64,
    /// The writer's system identifier (`pg_control_system()`).
    node: u64,
}

impl Stamp {
    fn now() -> Self {
        // SAFETY: plain reads of the clock and of the control file's identifier.
        unsafe { Self { written_at: pg_sys::GetCurrentTimestamp(), node: pg_sys::GetSystemIdentifier() } }
    }

    fn from_bytes(bytes: &[u8]) -> Self {
        let mut written_at = [0; 8];
        let mut node = [0; 8];
        written_at.copy_from_slice(&bytes[..8]);
        node.copy_from_slice(&bytes[8..16]);
        Self { written_at: i64::from_be_bytes(written_at), node: u64::from_be_bytes(node) }
    }

    fn write(self, bytes: &mut [u8]) {
        bytes[..8].copy_from_slice(&self.written_at.to_be_bytes());
        bytes[8..16].copy_from_slice(&self.node.to_be_bytes());
    }

    fn known(self) -> bool {
        self != Self::default()
    }
}

/// What the write column holds: the image's stamp and the stamp of the image it replaced.
/// A NULL (a row written before `multi_node`) or malformed column reads as all unknown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Lineage {
    stamp: Stamp,
    base: Stamp,
}

const LINEAGE_BYTES: usize = 32;

/// The columns the trigger's WHEN clause names: `NEW.version IS NULL OR NEW.rowversion_write
/// IS NOT NULL OR true`.
#[derive(Clone, Copy)]
struct Columns {
    version: i16,
    version_type: VersionType,
    write: i16,
}

crate::fmgr::v1_function! {
    /// The trigger function, declared in `sql/replication.sql`.
    pg_finfo_rowversion_replication_trigger,
    declared ["replication_trigger() -> trigger"],
    fn rowversion_replication_trigger(args) -> Report {
        let data = args.trigger_data().ok_or(ReplicationError::NotCalledAsRowTrigger)?;
        // SAFETY: a trigger call: `data` is its TriggerData, whose relation, trigger and
        // tuples are valid for this call.
        unsafe {
            let event = (*data).tg_event;
            if !trigger_fired_before(event)
                || !trigger_fired_for_row(event)
                || !(trigger_fired_by_insert(event) || trigger_fired_by_update(event))
            {
                return Err(ReplicationError::NotCalledAsRowTrigger.into());
            }
            let columns = columns_for_statement((*args.fcinfo()).flinfo, data)?;
            let tupdesc = (*(*data).tg_relation).rd_att;
            let row = (*data).tg_trigtuple;
            let tuple = if trigger_fired_by_insert(event) {
                // A remote row, or a local one with a supplied lineage, is kept as it comes.
                if applying_remote_changes() || lineage_datum(row, tupdesc, columns.write).is_some() {
                    row
                } else {
                    with_lineage(row, tupdesc, columns.write, Lineage { stamp: Stamp::now(), base: Stamp::default() })
                }
            } else if applying_remote_changes() {
                decide(data, columns)?
            } else {
                local_update(data, columns)
            };
            Ok(Some(pg_sys::Datum::from(tuple)))
        }
    }
}

/// Whether this session applies changes that another node made: logical replication's apply
/// worker (and any replication tool) sets the session's replication origin. A session that
/// merely sets `session_replication_role = replica` writes as this node.
fn applying_remote_changes() -> bool {
    // SAFETY: a plain read of a backend global.
    let origin = unsafe { pg_sys::replorigin_session_origin };
    origin != pg_sys::InvalidRepOriginId as pg_sys::RepOriginId
        && origin != pg_sys::DoNotReplicateId as pg_sys::RepOriginId
}

/// The trigger's columns, kept in `fn_extra` for the rest of the statement.
unsafe fn columns_for_statement(
    flinfo: *mut pg_sys::FmgrInfo,
    data: *mut pg_sys::TriggerData,
) -> Result<Columns, ReplicationError> {
    // SAFETY: the caller passes the FmgrInfo and TriggerData of a firing row trigger;
    // `fn_extra` of this FmgrInfo is ours, and `fn_mcxt` outlives the statement.
    unsafe {
        let cached = (*flinfo).fn_extra as *const Columns;
        if !cached.is_null() {
            return Ok(*cached);
        }
        let trigger = &*(*data).tg_trigger;
        let tupdesc = (*(*data).tg_relation).rd_att;
        let not_from_enable = || ReplicationError::NotCreatedByEnable(encoding::cstr_from_server_lossy(trigger.tgname));
        if trigger.tgqual.is_null() {
            return Err(not_from_enable());
        }
        let clause = version_column::when_clause(trigger.tgqual).ok_or_else(not_from_enable)?;
        let (Some(&version), Some(write), 1) = (clause.columns.first(), clause.record, clause.columns.len()) else {
            return Err(not_from_enable());
        };
        let natts = (*tupdesc).natts;
        if i32::from(version) > natts
            || i32::from(write) > natts
            || attribute(tupdesc, write).atttypid != pg_sys::BYTEAOID
        {
            return Err(not_from_enable());
        }
        let version_type = VersionType::from_oid(attribute(tupdesc, version).atttypid).ok_or_else(not_from_enable)?;
        let columns = Columns { version, version_type, write };
        let slot = pg_sys::MemoryContextAlloc((*flinfo).fn_mcxt, size_of::<Columns>()) as *mut Columns;
        slot.write(columns);
        (*flinfo).fn_extra = slot.cast();
        Ok(columns)
    }
}

/// A local UPDATE: a new stamp when the version moves, the stored one otherwise (a write
/// column set by hand is not the row's lineage).
unsafe fn local_update(data: *mut pg_sys::TriggerData, columns: Columns) -> pg_sys::HeapTuple {
    // SAFETY: `data` is the TriggerData of a BEFORE UPDATE row trigger: tg_trigtuple is the
    // stored row, tg_newtuple the row about to be written.
    unsafe {
        let tupdesc = (*(*data).tg_relation).rd_att;
        let (stored_row, new_row) = ((*data).tg_trigtuple, (*data).tg_newtuple);
        if version(stored_row, tupdesc, columns) != version(new_row, tupdesc, columns) {
            let base = lineage(stored_row, tupdesc, columns.write).stamp;
            return with_lineage(new_row, tupdesc, columns.write, Lineage { stamp: Stamp::now(), base });
        }
        let stored = lineage_datum(stored_row, tupdesc, columns.write);
        if lineage_datum(new_row, tupdesc, columns.write).map(|d| read_lineage(d)) == stored.map(|d| read_lineage(d)) {
            return new_row;
        }
        let mut attnum = std::ffi::c_int::from(columns.write);
        let mut value = stored.unwrap_or(pg_sys::Datum::from(0));
        let mut isnull = stored.is_none();
        pg_sys::heap_modify_tuple_by_cols(new_row, tupdesc, 1, &raw mut attnum, &raw mut value, &raw mut isnull)
    }
}

/// A remote UPDATE: applied (the new row) or skipped (NULL), the same way on every node.
unsafe fn decide(data: *mut pg_sys::TriggerData, columns: Columns) -> Result<pg_sys::HeapTuple, Report> {
    // SAFETY: as in `local_update`; here tg_trigtuple is the local row the apply worker found
    // by the key and tg_newtuple the row the other node wrote.
    unsafe {
        let rel = (*data).tg_relation;
        let tupdesc = (*rel).rd_att;
        let (local_row, remote_row) = ((*data).tg_trigtuple, (*data).tg_newtuple);
        let local = lineage(local_row, tupdesc, columns.write);
        let remote = lineage(remote_row, tupdesc, columns.write);
        // The same image (an UPDATE of ignored columns), or one written on top of the local one.
        if remote.stamp == local.stamp || remote.base == local.stamp {
            return Ok(remote_row);
        }
        let local_version = version(local_row, tupdesc, columns).unwrap_or(0);
        let remote_version = version(remote_row, tupdesc, columns).unwrap_or(0);
        let remote_wins = if remote_version == local_version {
            remote.stamp > local.stamp
        } else {
            columns.version_type.is_newer(remote_version, local_version)
        };
        stats::count((*rel).rd_id, Event::ReplicationConflict);
        let (kept, lost) = if remote_wins {
            ((remote_row, remote_version, remote), (local_row, local_version, local))
        } else {
            ((local_row, local_version, local), (remote_row, remote_version, remote))
        };
        record(rel, kept, lost)?;
        Ok(if remote_wins { remote_row } else { std::ptr::null_mut() })
    }
}

/// One row image in a conflict: the tuple, its version and its lineage.
type Image = (pg_sys::HeapTuple, i64, Lineage);

/// Records `lost` (and `kept`) in `rowversion.replication_conflict_log`, and removes the
/// records of the images either was written on, and theirs in turn: an image that a node built
/// on is not lost, its changes are in the newer image, kept or recorded. So both nodes keep
/// the same records whatever the order their writes crossed in (tests/multi_node.sh).
///
/// The rows are turned into jsonb as the current role (the table's owner in the apply worker:
/// a column type's output function runs with no other rights than it would in a query), the
/// log written as its owner.
unsafe fn record(rel: pg_sys::Relation, kept: Image, lost: Image) -> Result<(), Report> {
    // SAFETY: `rel` is the trigger's relation and the tuples are its rows; the composite
    // Datums are palloc'd copies of the tuples with the relation's row type, and the jsonb
    // Datums the SPI query returns stay in SPI memory while the connection is open.
    unsafe {
        let relid = (*rel).rd_id;
        let tupdesc = (*rel).rd_att;
        let row_type = (*(*rel).rd_rel).reltype;
        let failed = |error| {
            let table = encoding::cstr_from_server_lossy(pg_sys::get_rel_name(relid));
            Report::from(ReplicationError::Record { table, error })
        };
        let image = |tuple| DatumWithOid::new(pg_sys::heap_copy_tuple_as_datum(tuple, tupdesc), row_type);
        let stamp_bytes = |stamp: Stamp| {
            let mut bytes = [0u8; 16];
            stamp.write(&mut bytes);
            bytes.to_vec()
        };
        let written_at = |stamp: Stamp| stamp.known().then_some(stamp.written_at);
        let node = |stamp: Stamp| stamp.known().then_some(stamp.node as i64);
        Spi::connect_mut(|client| {
            let rows = client.select(
                "SELECT pg_catalog.to_jsonb($1), pg_catalog.to_jsonb($2)",
                Some(1),
                &[image(kept.0), image(lost.0)],
            )?;
            let row = rows.first();
            let (kept_row, lost_row) = (row.get_datum_by_ordinal(1)?, row.get_datum_by_ordinal(2)?);
            let jsonb = |datum: Option<pg_sys::Datum>| match datum {
                Some(datum) => DatumWithOid::new(datum, pg_sys::JSONBOID),
                None => DatumWithOid::null_oid(pg_sys::JSONBOID),
            };
            let timestamp = |value: Option<i64>| match value {
                Some(value) => DatumWithOid::new(pg_sys::Datum::from(value), pg_sys::TIMESTAMPTZOID),
                None => DatumWithOid::null_oid(pg_sys::TIMESTAMPTZOID),
            };
            as_role(table_owner(c"replication_conflict_log"), || {
                client.update(
                    "WITH RECURSIVE ancestor(write) AS (
                         VALUES ($2::pg_catalog.bytea), ($3::pg_catalog.bytea)
                         UNION
                         SELECT l.lost_base FROM rowversion.replication_conflict_log l, ancestor a
                         WHERE l.rel OPERATOR(pg_catalog.=) $1 AND l.lost_write OPERATOR(pg_catalog.=) a.write)
                     DELETE FROM rowversion.replication_conflict_log
                     WHERE rel OPERATOR(pg_catalog.=) $1 AND lost_write IN (SELECT write FROM ancestor)",
                    None,
                    &[relid.into(), stamp_bytes(kept.2.base).into(), stamp_bytes(lost.2.base).into()],
                )?;
                client.update(
                    "INSERT INTO rowversion.replication_conflict_log
                         (rel, kept_version, lost_version, kept_node, lost_node, kept_written_at,
                          lost_written_at, lost_write, lost_base, kept_row, lost_row)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                    None,
                    &[
                        relid.into(),
                        kept.1.into(),
                        lost.1.into(),
                        node(kept.2.stamp).into(),
                        node(lost.2.stamp).into(),
                        timestamp(written_at(kept.2.stamp)),
                        timestamp(written_at(lost.2.stamp)),
                        stamp_bytes(lost.2.stamp).into(),
                        stamp_bytes(lost.2.base).into(),
                        jsonb(kept_row),
                        jsonb(lost_row),
                    ],
                )
            })?;
            Ok::<(), pgrx::spi::SpiError>(())
        })
        .map_err(failed)
    }
}

unsafe fn version(tuple: pg_sys::HeapTuple, tupdesc: pg_sys::TupleDesc, columns: Columns) -> Option<i64> {
    let mut isnull = false;
    // SAFETY: `tuple` belongs to the relation described by `tupdesc`, and the version column
    // is one of its columns.
    let datum = unsafe { pg_sys::heap_getattr(tuple, columns.version.into(), tupdesc, &mut isnull) };
    (!isnull).then(|| columns.version_type.read(datum))
}

/// The write column's Datum, `None` for NULL.
unsafe fn lineage_datum(tuple: pg_sys::HeapTuple, tupdesc: pg_sys::TupleDesc, write: i16) -> Option<pg_sys::Datum> {
    let mut isnull = false;
    // SAFETY: as in `version`.
    let datum = unsafe { pg_sys::heap_getattr(tuple, write.into(), tupdesc, &mut isnull) };
    (!isnull).then_some(datum)
}

unsafe fn lineage(tuple: pg_sys::HeapTuple, tupdesc: pg_sys::TupleDesc, write: i16) -> Lineage {
    // SAFETY: forwarded.
    unsafe { lineage_datum(tuple, tupdesc, write).map(|datum| read_lineage(datum)).unwrap_or_default() }
}

/// # Safety
/// `datum` must be a bytea Datum.
unsafe fn read_lineage(datum: pg_sys::Datum) -> Lineage {
    // SAFETY: forwarded; the detoasted bytea is read within its length.
    unsafe {
        let bytea = pg_sys::pg_detoast_datum_packed(datum.cast_mut_ptr());
        let bytes = std::slice::from_raw_parts(
            pgrx::varlena::vardata_any(bytea).cast::<u8>(),
            pgrx::varlena::varsize_any_exhdr(bytea),
        );
        if bytes.len() != LINEAGE_BYTES {
            return Lineage::default();
        }
        Lineage { stamp: Stamp::from_bytes(&bytes[..16]), base: Stamp::from_bytes(&bytes[16..]) }
    }
}

/// `tuple` with `lineage` in the write column.
unsafe fn with_lineage(
    tuple: pg_sys::HeapTuple,
    tupdesc: pg_sys::TupleDesc,
    write: i16,
    lineage: Lineage,
) -> pg_sys::HeapTuple {
    // SAFETY: a palloc'd bytea of VARHDRSZ + 32 bytes, its header set for that size, written
    // into the write column (a bytea column of `tupdesc`).
    unsafe {
        let size = pg_sys::VARHDRSZ + LINEAGE_BYTES;
        let value = pg_sys::palloc(size) as *mut pg_sys::varlena;
        pgrx::varlena::set_varsize_4b(value, size as i32);
        let bytes =
            std::slice::from_raw_parts_mut(pgrx::varlena::vardata_any(value).cast_mut().cast::<u8>(), LINEAGE_BYTES);
        lineage.stamp.write(&mut bytes[..16]);
        lineage.base.write(&mut bytes[16..]);
        let mut attnum = std::ffi::c_int::from(write);
        let mut datum = pg_sys::Datum::from(value);
        let mut isnull = false;
        pg_sys::heap_modify_tuple_by_cols(tuple, tupdesc, 1, &raw mut attnum, &raw mut datum, &raw mut isnull)
    }
}

#[cfg(test)]
mod unit_tests {
    use super::Stamp;

    #[test]
    fn stamps_order_by_time_then_node_and_survive_their_bytes() {
        let earlier = Stamp { written_at: 10, node: 9 };
        let later = Stamp { written_at: 11, node: 1 };
        assert!(later > earlier);
        assert!(Stamp { written_at: 11, node: 2 } > later, "the same microsecond: the higher node");
        let mut bytes = [0u8; 16];
        later.write(&mut bytes);
        assert_eq!(Stamp::from_bytes(&bytes), later);
        assert!(!Stamp::default().known());
    }
}
