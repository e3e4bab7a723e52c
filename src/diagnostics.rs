//! `rowversion.row_locks(rel, key)`: who holds a lock on one row right now, and who waits for
//! it. (`lock_tree()`, `advisory_locks()` and `lock_summary` are plain SQL, in
//! `sql/diagnostics.sql`.)
//!
//! contrib's `pgrowlocks` reads the locker of every row of a table, so it costs a full scan.
//! Here the row is found through its primary key by an ordinary SELECT (the caller's
//! privileges and row-level security apply), and only that tuple's header is read, under a
//! share lock on its buffer, as `pgrowlocks` reads each one: the cost of a primary-key lookup.
//! Like `pgrowlocks`, it requires SELECT on the table.

use std::cell::RefCell;
use std::rc::Rc;

use pgrx::prelude::*;
use pgrx::spi::{OwnedPreparedStatement, SpiClient};
use pgrx::{PgOid, PgSqlErrorCode};

use crate::encoding;
use crate::fmgr::v1_function;
use crate::key::{self, check_key, JsonArg, KeyError};
use crate::report::Report;
use crate::table::{self, Statement, TableError};

#[derive(Debug, thiserror::Error)]
pub enum DiagnosticsError {
    #[error("permission denied for table {0}")]
    PermissionDenied(String),
    #[error("\"{table}\" is {kind}, not a table")]
    NotATable { table: String, kind: &'static str },
    #[error("no row in table \"{table}\" has key {key}")]
    NoSuchRow { table: String, key: String },
    #[error("the row of \"{table}\" with key {key} is in foreign table \"{foreign}\"")]
    ForeignRow { table: String, key: String, foreign: String },
    #[error("the row of \"{table}\" with key {key} is not stored in this database")]
    RemoteRow { table: String, key: String },
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Table(#[from] TableError),
}

impl From<DiagnosticsError> for Report {
    fn from(error: DiagnosticsError) -> Self {
        let error = match error {
            DiagnosticsError::Key(error) => return error.into(),
            DiagnosticsError::Table(error) => return error.into(),
            error => error,
        };
        let (code, hint) = match &error {
            DiagnosticsError::Key(_) | DiagnosticsError::Table(_) => unreachable!("returned above"),
            // The same error as the checked functions give for a missing row.
            DiagnosticsError::NoSuchRow { .. } => {
                return Report::new(PgSqlErrorCode::ERRCODE_NO_DATA_FOUND, error.to_string(), None, None)
            }
            DiagnosticsError::PermissionDenied(_) => (
                PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                "row_locks() requires SELECT on the table, as pgrowlocks does.",
            ),
            DiagnosticsError::NotATable { .. } => (
                PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
                "row_locks() reads the lock on a row of an ordinary or partitioned table.",
            ),
            DiagnosticsError::ForeignRow { .. } => (
                PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                "A foreign table's rows are locked on its own server; ask that server.",
            ),
            DiagnosticsError::RemoteRow { .. } => (
                PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                "The query returned the row from another node (a Citus distributed table's shard, say): ask that node, with the shard's name.",
            ),
        };
        Report::new(code, error.to_string(), None, Some(hint.into()))
    }
}

/// One transaction holding a lock on the row (or, for an update or delete in progress, about
/// to replace it).
struct Locker {
    xid: pg_sys::TransactionId,
    multixact: Option<pg_sys::TransactionId>,
    mode: &'static str,
}

/// A locker with the sessions running it and the sessions queued for the row.
struct RowLock {
    locker: Locker,
    pids: Vec<i32>,
    waiting_pids: Vec<i32>,
}

v1_function! {
    /// `rowversion.row_locks(rel regclass, key jsonb) RETURNS TABLE (locker xid, multixact xid,
    /// mode text, pids int[], waiting_pids int[])`, STRICT, declared in `sql/diagnostics.sql`.
    /// Returns its rows in materialize mode. (The symbol keeps the name pgrx gave it in 0.1.0.)
    pg_finfo_row_locks_wrapper,
    declared ["row_locks(regclass, jsonb) -> SETOF (xid, xid, text, integer[], integer[])"],
    fn row_locks_wrapper(args) -> DiagnosticsError {
        let (Some(rel), Some(key)) = (args.oid(0), args.datum(1)) else { return Ok(None) };
        // SAFETY: argument 1 is jsonb; the rows go to the tuplestore InitMaterializedSRF sets
        // up, with the declared result type.
        unsafe {
            let rows = locks_on_row(rel, key)?;
            pg_sys::InitMaterializedSRF(args.fcinfo(), 0);
            let result = (*args.fcinfo()).resultinfo as *mut pg_sys::ReturnSetInfo;
            for row in rows {
                let mut values = [
                    pg_sys::Datum::from(row.locker.xid.into_inner()),
                    pg_sys::Datum::from(row.locker.multixact.map_or(0, |m| m.into_inner())),
                    row.locker.mode.into_datum().unwrap_or(pg_sys::Datum::from(0)),
                    row.pids.into_datum().unwrap_or(pg_sys::Datum::from(0)),
                    row.waiting_pids.into_datum().unwrap_or(pg_sys::Datum::from(0)),
                ];
                let mut nulls = [false, row.locker.multixact.is_none(), false, false, false];
                pg_sys::tuplestore_putvalues(
                    (*result).setResult,
                    (*result).setDesc,
                    values.as_mut_ptr(),
                    nulls.as_mut_ptr(),
                );
            }
        }
        Ok(Some(pg_sys::Datum::from(0)))
    }
}

unsafe extern "C-unwind" {
    /// pg_inherits.h, not in pgrx's bindings: a table and all its partitions and inheritance
    /// children, as a List of OIDs.
    fn find_all_inheritors(
        parent: pg_sys::Oid,
        lockmode: pg_sys::LOCKMODE,
        parents: *mut *mut pg_sys::List,
    ) -> *mut pg_sys::List;
}

/// The locks on the row of `relid` with primary key `key` (a jsonb Datum).
///
/// # Safety
/// `key` must be a jsonb Datum that lives for the rest of the call.
unsafe fn locks_on_row(relid: pg_sys::Oid, key: pg_sys::Datum) -> Result<Vec<RowLock>, DiagnosticsError> {
    let table = table::table(relid)?;
    if let Some(kind) = table.relation.not_a_table {
        return Err(DiagnosticsError::NotATable { table: table.relation.display.clone(), kind });
    }
    // SAFETY: plain catalog check for the current user.
    let allowed =
        unsafe { pg_sys::pg_class_aclcheck(relid, pg_sys::GetUserId(), pg_sys::ACL_SELECT as pg_sys::AclMode) };
    if allowed != pg_sys::AclResult::ACLCHECK_OK {
        return Err(DiagnosticsError::PermissionDenied(table.relation.name.clone()));
    }
    // SAFETY: forwarded from the caller.
    let key = unsafe { JsonArg::from_datum(key) };
    check_key(&table, key.document)?;

    let locate = table::prepared(&table, Statement::Locate)?;
    let (partition, tid) = Spi::connect(|client| {
        let row = client.select(&*locate, Some(1), &[key.arg()])?.first();
        if row.is_empty() {
            return Ok(None);
        }
        let partition = row.get::<pg_sys::Oid>(1)?.unwrap_or_default();
        Ok::<_, pgrx::spi::SpiError>(row.get::<pg_sys::ItemPointerData>(2)?.map(|tid| (partition, tid)))
    })
    .map_err(TableError::from)?
    .ok_or_else(|| DiagnosticsError::NoSuchRow {
        table: table.relation.display.clone(),
        key: key.document.to_text(key::KEY_CHARS_SHOWN),
    })?;
    // The row must come from the table or one of its partitions or inheritance children: an
    // extension that runs the query elsewhere (Citus returns a shard's OID from a worker)
    // names a relation that is not here, or is another one.
    // SAFETY: find_all_inheritors returns a palloc'd List of OIDs, the table's first; the
    // query locked every one of them.
    let here = unsafe {
        let family = pg_sys::ffi::pg_guard_ffi_boundary(|| {
            find_all_inheritors(relid, pg_sys::NoLock as pg_sys::LOCKMODE, std::ptr::null_mut())
        });
        crate::node::cells(family).iter().any(|cell| cell.oid_value == partition)
    };
    if !here {
        return Err(DiagnosticsError::RemoteRow {
            table: table.relation.display.clone(),
            key: key.document.to_text(key::KEY_CHARS_SHOWN),
        });
    }
    // SAFETY: catalog lookups of the relation the row was just read from.
    if unsafe { pg_sys::get_rel_relkind(partition) } != b'r' as std::ffi::c_char {
        return Err(DiagnosticsError::ForeignRow {
            table: table.relation.display.clone(),
            key: key.document.to_text(key::KEY_CHARS_SHOWN),
            // SAFETY: as above; get_rel_name returns a palloc'd name of an existing relation.
            foreign: unsafe { encoding::cstr_from_server_lossy(pg_sys::get_rel_name(partition)) },
        });
    }

    // SAFETY: `partition` is the relation the row was just read from, and `tid` its tuple;
    // the tuple header is read under a share lock on its pinned buffer.
    let lockers = unsafe { lockers_of(partition, tid) };
    if lockers.is_empty() {
        return Ok(Vec::new());
    }
    let locker_pids: Vec<Vec<i32>> = lockers
        .iter()
        // SAFETY: looks up the backend running a transaction id; 0 when none is.
        .map(|l| Some(unsafe { pg_sys::BackendXidGetPid(l.xid) }).filter(|pid| *pid != 0).into_iter().collect())
        .collect();
    let all_pids: Vec<i32> = locker_pids.iter().flatten().copied().collect();
    let block = (u32::from(tid.ip_blkid.bi_hi) << 16) | u32::from(tid.ip_blkid.bi_lo);
    let waiting = Spi::connect(|client| {
        let plan = waiters_statement(client)?;
        client
            .select(
                &*plan,
                Some(1),
                &[partition.into(), (block as i32).into(), (tid.ip_posid as i16).into(), all_pids.into()],
            )?
            .first()
            .get_one::<Vec<i32>>()
    })
    .map_err(TableError::from)?
    .unwrap_or_default();

    Ok(lockers
        .into_iter()
        .zip(locker_pids)
        .map(|(locker, pids)| RowLock { locker, pids, waiting_pids: waiting.clone() })
        .collect())
}

thread_local! {
    /// The sessions queued for a tuple, prepared once per session.
    static WAITERS: RefCell<Option<Rc<OwnedPreparedStatement>>> = const { RefCell::new(None) };
}

fn waiters_statement(client: &SpiClient<'_>) -> Result<Rc<OwnedPreparedStatement>, pgrx::spi::SpiError> {
    if let Some(plan) = WAITERS.with_borrow(|w| w.clone()) {
        return Ok(plan);
    }
    let plan = Rc::new(
        client
            .prepare(
                "SELECT coalesce(pg_catalog.array_agg(DISTINCT l.pid ORDER BY l.pid), '{}')
                 FROM pg_catalog.pg_locks l
                 WHERE l.locktype OPERATOR(pg_catalog.=) 'tuple'
                   AND l.database OPERATOR(pg_catalog.=) (SELECT d.oid FROM pg_catalog.pg_database d
                                     WHERE d.datname OPERATOR(pg_catalog.=) pg_catalog.current_database())
                   AND l.relation OPERATOR(pg_catalog.=) $1 AND l.page OPERATOR(pg_catalog.=) $2
                   AND l.tuple OPERATOR(pg_catalog.=) $3 AND l.pid OPERATOR(pg_catalog.<>) ALL ($4)",
                &[
                    PgOid::BuiltIn(pg_sys::BuiltinOid::OIDOID),
                    PgOid::BuiltIn(pg_sys::BuiltinOid::INT4OID),
                    PgOid::BuiltIn(pg_sys::BuiltinOid::INT2OID),
                    PgOid::BuiltIn(pg_sys::BuiltinOid::INT4ARRAYOID),
                ],
            )?
            .keep(),
    );
    WAITERS.with_borrow_mut(|w| *w = Some(plan.clone()));
    Ok(plan)
}

// htup_details.h's infomask bits, as the u16 a tuple header holds.
const HEAP_XMAX_KEYSHR_LOCK: u16 = pg_sys::HEAP_XMAX_KEYSHR_LOCK as u16;
const HEAP_XMAX_EXCL_LOCK: u16 = pg_sys::HEAP_XMAX_EXCL_LOCK as u16;
const HEAP_XMAX_LOCK_ONLY: u16 = pg_sys::HEAP_XMAX_LOCK_ONLY as u16;
const HEAP_XMAX_SHR_LOCK: u16 = pg_sys::HEAP_XMAX_SHR_LOCK as u16;
const HEAP_LOCK_MASK: u16 = pg_sys::HEAP_LOCK_MASK as u16;
const HEAP_XMAX_IS_MULTI: u16 = pg_sys::HEAP_XMAX_IS_MULTI as u16;
const HEAP_KEYS_UPDATED: u16 = pg_sys::HEAP_KEYS_UPDATED as u16;

/// The in-progress transactions holding a lock on (or replacing) one tuple, read as
/// `pgrowlocks` reads them.
unsafe fn lockers_of(relid: pg_sys::Oid, tid: pg_sys::ItemPointerData) -> Vec<Locker> {
    // SAFETY: the caller passes a tuple that was just read; see the function's contract.
    unsafe {
        let rel = pg_sys::relation_open(relid, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        let mut tuple = pg_sys::HeapTupleData { t_self: tid, ..Default::default() };
        let mut buffer: pg_sys::Buffer = pg_sys::InvalidBuffer as pg_sys::Buffer;
        let found = pg_sys::heap_fetch(rel, &raw mut pg_sys::SnapshotAnyData, &mut tuple, &mut buffer, true);
        if !found {
            if buffer != pg_sys::InvalidBuffer as pg_sys::Buffer {
                pg_sys::ReleaseBuffer(buffer);
            }
            pg_sys::relation_close(rel, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
            return Vec::new();
        }
        pg_sys::LockBuffer(buffer, pg_sys::BUFFER_LOCK_SHARE as i32);
        let state = pg_sys::HeapTupleSatisfiesUpdate(&mut tuple, pg_sys::GetCurrentCommandId(false), buffer);
        let header = &*tuple.t_data;
        let (xmax, infomask, infomask2) = (header.t_choice.t_heap.t_xmax, header.t_infomask, header.t_infomask2);
        pg_sys::LockBuffer(buffer, pg_sys::BUFFER_LOCK_UNLOCK as i32);
        pg_sys::ReleaseBuffer(buffer);
        pg_sys::relation_close(rel, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        if state != pg_sys::TM_Result::TM_BeingModified {
            return Vec::new();
        }

        let locked_only = infomask & HEAP_XMAX_LOCK_ONLY != 0
            || infomask & (HEAP_XMAX_IS_MULTI | HEAP_LOCK_MASK) == HEAP_XMAX_EXCL_LOCK;
        if infomask & HEAP_XMAX_IS_MULTI == 0 {
            let keys_updated = infomask2 & HEAP_KEYS_UPDATED != 0;
            let mode = match (locked_only, infomask & HEAP_LOCK_MASK) {
                (true, HEAP_XMAX_SHR_LOCK) => "For Share",
                (true, HEAP_XMAX_KEYSHR_LOCK) => "For Key Share",
                (true, _) if keys_updated => "For Update",
                (true, _) => "For No Key Update",
                (false, _) if keys_updated => "Update",
                (false, _) => "No Key Update",
            };
            return vec![Locker { xid: xmax, multixact: None, mode }];
        }
        let mut members: *mut pg_sys::MultiXactMember = std::ptr::null_mut();
        let count = pg_sys::GetMultiXactIdMembers(xmax, &mut members, false, locked_only);
        if count <= 0 {
            return Vec::new();
        }
        std::slice::from_raw_parts(members, count as usize)
            .iter()
            .filter(|m| pg_sys::TransactionIdIsInProgress(m.xid))
            .map(|m| Locker {
                xid: m.xid,
                multixact: Some(xmax),
                mode: match m.status {
                    pg_sys::MultiXactStatus::MultiXactStatusForKeyShare => "For Key Share",
                    pg_sys::MultiXactStatus::MultiXactStatusForShare => "For Share",
                    pg_sys::MultiXactStatus::MultiXactStatusForNoKeyUpdate => "For No Key Update",
                    pg_sys::MultiXactStatus::MultiXactStatusForUpdate => "For Update",
                    pg_sys::MultiXactStatus::MultiXactStatusNoKeyUpdate => "No Key Update",
                    _ => "Update",
                },
            })
            .collect()
    }
}
