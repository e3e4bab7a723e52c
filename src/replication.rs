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
//! - a local write stamps the row (after the version trigger, which fires first by name):
//!   every UPDATE is a new image, an UPDATE of ignored columns too, and its values stored out
//!   of line are written again in full; an INSERT keeps a well-formed supplied stamp (a
//!   restore, a copy);
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
use crate::node::{self, attribute};
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
                // A remote row, or a local one with a well-formed lineage (a restore, a copy
                // from another node), is kept as it comes.
                let supplied = node::value(row, tupdesc, columns.write).and_then(|datum| read_lineage(datum));
                if applying_remote_changes() || supplied.is_some() {
                    row
                } else {
                    let lineage = Lineage { stamp: Stamp::now(), base: Stamp::default() };
                    stamped(row, tupdesc, columns.write, lineage, false)
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

/// A local UPDATE: a new image, stamped now and based on the stored one, whatever it changes
/// (an UPDATE of ignored columns only too, which leaves the version: two nodes changing them
/// at once would otherwise each apply the other's row). A write column set by hand is not the
/// row's lineage. Values Postgres keeps out of line are written again in full, so that the
/// image that reaches the other node is all of it (see [`stamped`]).
unsafe fn local_update(data: *mut pg_sys::TriggerData, columns: Columns) -> pg_sys::HeapTuple {
    // SAFETY: `data` is the TriggerData of a BEFORE UPDATE row trigger: tg_trigtuple is the
    // stored row, tg_newtuple the row about to be written.
    unsafe {
        let tupdesc = (*(*data).tg_relation).rd_att;
        let (stored_row, new_row) = ((*data).tg_trigtuple, (*data).tg_newtuple);
        let base = lineage(stored_row, tupdesc, columns.write).stamp;
        stamped(new_row, tupdesc, columns.write, Lineage { stamp: Stamp::now(), base }, true)
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
        // The same image (a change sent again), or one written on top of the local one.
        if remote.stamp == local.stamp || remote.base == local.stamp {
            return Ok(remote_row);
        }
        let local_version = version(local_row, tupdesc, columns).unwrap_or(0);
        let remote_version = version(remote_row, tupdesc, columns).unwrap_or(0);
        // Versions exactly half the type's range apart are newer neither way: the stamps decide.
        let version_type = columns.version_type;
        let remote_wins = if version_type.is_newer(remote_version, local_version) {
            true
        } else if version_type.is_newer(local_version, remote_version) {
            false
        } else {
            remote.stamp > local.stamp
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

/// Records `lost` (and `kept`) in `rowversion.replication_conflict_log`, under the table the
/// application writes to (a partition's root), with the row's key (its replica identity
/// index's columns), and removes the records of the images of the same row either was written
/// on, and theirs in turn: an image that a node built on is not lost, its changes are in the
/// newer image, kept or recorded. So both nodes keep the same records whatever the order their
/// writes crossed in (tests/multi_node.sh).
///
/// The rows are turned into jsonb as the current role (the table's owner in the apply worker:
/// a column type's output function runs with no other rights than it would in a query), the
/// log written as its owner, by statements that name every operator with its schema.
unsafe fn record(rel: pg_sys::Relation, kept: Image, lost: Image) -> Result<(), Report> {
    // SAFETY: `rel` is the trigger's relation and the tuples are its rows; the composite
    // Datums are palloc'd copies of the tuples with the relation's row type, and the jsonb
    // Datums the SPI query returns stay in SPI memory while the connection is open.
    unsafe {
        let relid = (*rel).rd_id;
        let mut table = relid;
        while pg_sys::get_rel_relispartition(table) {
            table = crate::contract::partition_parent(table);
        }
        let tupdesc = (*rel).rd_att;
        let row_type = (*(*rel).rd_rel).reltype;
        let identity = pg_sys::RelationGetReplicaIndex(rel);
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
        // An unknown base (a row written before multi_node) is no image to look for.
        let base = |stamp: Stamp| stamp.known().then(|| stamp_bytes(stamp));
        let written_at = |stamp: Stamp| stamp.known().then_some(stamp.written_at);
        let node = |stamp: Stamp| stamp.known().then_some(stamp.node as i64);
        Spi::connect_mut(|client| {
            // The lost row is turned into jsonb once, for itself and for its key.
            let rows = client.select(
                "SELECT pg_catalog.to_jsonb($1), lost.image,
                        (SELECT pg_catalog.jsonb_object_agg(a.attname,
                                    lost.image OPERATOR(pg_catalog.->) a.attname::pg_catalog.text)
                         FROM pg_catalog.pg_index i
                         JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) i.indrelid
                          AND a.attnum OPERATOR(pg_catalog.=) ANY (i.indkey::pg_catalog.int2[])
                         WHERE i.indexrelid OPERATOR(pg_catalog.=) $3)
                 FROM (SELECT pg_catalog.to_jsonb($2)) lost(image)",
                Some(1),
                &[image(kept.0), image(lost.0), identity.into()],
            )?;
            let row = rows.first();
            let (kept_row, lost_row, key) =
                (row.get_datum_by_ordinal(1)?, row.get_datum_by_ordinal(2)?, row.get_datum_by_ordinal(3)?);
            let jsonb = |datum: Option<pg_sys::Datum>| match datum {
                Some(datum) => DatumWithOid::new(datum, pg_sys::JSONBOID),
                None => DatumWithOid::null_oid(pg_sys::JSONBOID),
            };
            let timestamp = |value: Option<i64>| match value {
                Some(value) => DatumWithOid::new(pg_sys::Datum::from(value), pg_sys::TIMESTAMPTZOID),
                None => DatumWithOid::null_oid(pg_sys::TIMESTAMPTZOID),
            };
            as_role(table_owner(c"replication_conflict_log"), || {
                if key.is_some() {
                    client.update(
                        "WITH RECURSIVE ancestor(write) AS (
                             VALUES ($3::pg_catalog.bytea), ($4::pg_catalog.bytea)
                             UNION
                             SELECT l.lost_base FROM rowversion.replication_conflict_log l, ancestor a
                             WHERE l.rel OPERATOR(pg_catalog.=) $1 AND l.row_key OPERATOR(pg_catalog.=) $2
                               AND l.lost_write OPERATOR(pg_catalog.=) a.write)
                         DELETE FROM rowversion.replication_conflict_log l
                         WHERE l.rel OPERATOR(pg_catalog.=) $1 AND l.row_key OPERATOR(pg_catalog.=) $2
                           AND EXISTS (SELECT FROM ancestor a WHERE l.lost_write OPERATOR(pg_catalog.=) a.write)",
                        None,
                        &[table.into(), jsonb(key), base(kept.2.base).into(), base(lost.2.base).into()],
                    )?;
                }
                client.update(
                    "INSERT INTO rowversion.replication_conflict_log
                         (rel, row_key, kept_version, lost_version, kept_node, lost_node, kept_written_at,
                          lost_written_at, lost_write, lost_base, kept_row, lost_row)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                    None,
                    &[
                        table.into(),
                        jsonb(key),
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
    // SAFETY: `tuple` belongs to the relation described by `tupdesc`, and the version column
    // is one of its columns.
    unsafe { node::value(tuple, tupdesc, columns.version) }.map(|datum| columns.version_type.read(datum))
}

/// The row's lineage; all unknown for a NULL or malformed write column.
unsafe fn lineage(tuple: pg_sys::HeapTuple, tupdesc: pg_sys::TupleDesc, write: i16) -> Lineage {
    // SAFETY: forwarded.
    unsafe { node::value(tuple, tupdesc, write).and_then(|datum| read_lineage(datum)).unwrap_or_default() }
}

/// The lineage a write column holds; `None` when it is not 32 bytes.
///
/// # Safety
/// `datum` must be a bytea Datum.
unsafe fn read_lineage(datum: pg_sys::Datum) -> Option<Lineage> {
    // SAFETY: forwarded; the detoasted bytea is read within its length.
    unsafe {
        let bytea = pg_sys::pg_detoast_datum_packed(datum.cast_mut_ptr());
        let bytes = std::slice::from_raw_parts(
            pgrx::varlena::vardata_any(bytea).cast::<u8>(),
            pgrx::varlena::varsize_any_exhdr(bytea),
        );
        (bytes.len() == LINEAGE_BYTES)
            .then(|| Lineage { stamp: Stamp::from_bytes(&bytes[..16]), base: Stamp::from_bytes(&bytes[16..]) })
    }
}

/// `tuple` with `lineage` in the write column and, with `inline`, every value stored out of
/// line (TOAST) fetched into the row. Logical replication sends an UPDATE's unchanged
/// out-of-line values as "unchanged", and the receiving node fills them in from its own row:
/// from an image that lost, the node would keep a mix of both. Fetched, they are stored anew
/// and sent in full.
unsafe fn stamped(
    tuple: pg_sys::HeapTuple,
    tupdesc: pg_sys::TupleDesc,
    write: i16,
    lineage: Lineage,
    inline: bool,
) -> pg_sys::HeapTuple {
    // SAFETY: a palloc'd bytea of VARHDRSZ + 32 bytes, its header set for that size, written
    // into the write column (a bytea column of `tupdesc`); the other replaced values are
    // palloc'd copies of varlena columns of `tuple`, of the same types.
    unsafe {
        let size = pg_sys::VARHDRSZ + LINEAGE_BYTES;
        let value = pg_sys::palloc(size) as *mut pg_sys::varlena;
        pgrx::varlena::set_varsize_4b(value, size as i32);
        let bytes =
            std::slice::from_raw_parts_mut(pgrx::varlena::vardata_any(value).cast_mut().cast::<u8>(), LINEAGE_BYTES);
        lineage.stamp.write(&mut bytes[..16]);
        lineage.base.write(&mut bytes[16..]);
        let mut attnums = vec![std::ffi::c_int::from(write)];
        let mut values = vec![pg_sys::Datum::from(value)];
        if inline {
            for attnum in 1..=(*tupdesc).natts as i16 {
                let column = attribute(tupdesc, attnum);
                if attnum == write || column.attisdropped || column.attlen != -1 {
                    continue;
                }
                let datum = node::value(tuple, tupdesc, attnum);
                if let Some(datum) = datum.filter(|d| pgrx::varlena::varatt_is_1b_e(d.cast_mut_ptr())) {
                    attnums.push(attnum.into());
                    values.push(pg_sys::Datum::from(pg_sys::detoast_external_attr(datum.cast_mut_ptr())));
                }
            }
        }
        let mut isnull = vec![false; attnums.len()];
        pg_sys::heap_modify_tuple_by_cols(
            tuple,
            tupdesc,
            attnums.len() as std::ffi::c_int,
            attnums.as_mut_ptr(),
            values.as_mut_ptr(),
            isnull.as_mut_ptr(),
        )
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
