//! Conflict counters: `rowversion.conflict_stats` and `rowversion.conflict_stats_reset()`.
//!
//! A rejected UPDATE aborts its transaction, so no table can count conflicts; the counters live
//! in shared memory instead, outside any transaction: a conflict is counted when it is raised,
//! whether or not its transaction commits. Shared memory is reserved only while
//! `shared_preload_libraries` loads the library; loaded any other way, nothing is counted and
//! reading or resetting the counters raises `55000` (an empty view would read as "no
//! conflicts", the one answer that must never be wrong).
//!
//! One slot per table and database, in a fixed array sized by `pg_rowversion.conflict_stats_max`
//! at server start (twice that many slots) and addressed by open addressing on `(database,
//! table)`. A writer finds its table's slot without a lock, and counting is one atomic add on
//! the table's own slot (128 bytes, aligned to cache lines: tables do not share one). Claiming a
//! slot, once per table, and freeing the slots of dropped tables and databases, which a reset
//! does, take the one lock of the extension's tranche. When `conflict_stats_max` tables are
//! counted, the events of further tables are counted as uncounted, and reading the counters
//! warns about them. Counters are lost when the server stops.

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};

use pgrx::pg_sys;
use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting, PgSqlErrorCode};

use crate::fmgr::v1_function;
use crate::report::Report;

/// What the trigger, the fast path and the checked functions count, per row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A row written with a stated version (SET list or If-Match): the current one or newer.
    Checked,
    /// A row refused for a stale version or a failed If-Match (40001; try_update's `false`).
    Conflict,
    /// A conflict on a row counted as checked already (see [`row_counted`]).
    ConflictOnRecheck,
    /// A stale version accepted by `conflicts => 'merge'`.
    Merged,
    /// A stale version let through by `conflicts => 'observe'`; `mergeable`: `merge` would
    /// have accepted it.
    ObservedStale { mergeable: bool },
    /// An UPDATE without a version let through by `conflicts => 'observe'` in strict mode.
    ObservedUnversioned,
    /// An UPDATE without a version refused in strict mode.
    VersionRequired,
    /// A row arriving from another node that was not written on the local one, decided by
    /// `multi_node` (src/replication.rs).
    ReplicationConflict,
}

/// The counters of a slot, in the view's column order.
const CHECKED: usize = 0;
const CONFLICTS: usize = 1;
const MERGED: usize = 2;
const OBSERVED: usize = 3;
const OBSERVED_MERGEABLE: usize = 4;
const VERSION_REQUIRED: usize = 5;
const REPLICATION_CONFLICTS: usize = 6;
const COUNTERS: usize = 7;

/// One table of one database. Two cache lines, so that writers of two tables never contend.
#[repr(C, align(128))]
struct Slot {
    /// `database << 32 | table`; [`FREE`] or [`FREED`].
    key: AtomicU64,
    counts: [AtomicU64; COUNTERS],
    /// `TimestampTz`s, 0 for none.
    last_conflict: AtomicI64,
    stats_reset: AtomicI64,
}

/// A key of a slot never used: a lookup stops there.
const FREE: u64 = 0;
/// A key of a slot given back (its table or database was dropped): a lookup goes on past it,
/// a claim may take it.
const FREED: u64 = u64::MAX;

/// What is shared besides the slots, before them.
#[repr(C, align(128))]
struct Header {
    /// Slots holding a table.
    used: AtomicUsize,
    /// Events of tables (of any database) that found no room since the last reset of all
    /// tables (in any database).
    uncounted: AtomicU64,
}

/// How far a lookup probes from a key's home slot: the array has twice `conflict_stats_max`
/// slots, so a run this long is all but impossible before it is full, and a full array costs
/// a bounded probe per row, not a scan.
const PROBES: usize = 32;

/// `pg_rowversion.conflict_stats_max`: the tables (of all databases) whose conflicts are counted.
static CONFLICT_STATS_MAX: GucSetting<i32> = GucSetting::<i32>::new(1000);

/// `pg_rowversion.count_conflicts`: off counts nothing (bench/ measures what counting costs
/// with it).
static COUNT_CONFLICTS: GucSetting<bool> = GucSetting::<bool>::new(true);

/// The header and the slots, set up by the shared-memory startup hook; NULL when not
/// preloaded.
static mut HEADER: *mut Header = std::ptr::null_mut();
static mut SLOTS: *mut Slot = std::ptr::null_mut();
static mut SLOT_COUNT: usize = 0;
/// The lock taken to claim or free a slot.
static mut LOCK: *mut pg_sys::LWLock = std::ptr::null_mut();
static mut PREV_SHMEM_REQUEST: pg_sys::shmem_request_hook_type = None;
static mut PREV_SHMEM_STARTUP: pg_sys::shmem_startup_hook_type = None;
/// Whether this backend has said, once, that a table did not fit.
static mut FULL_LOGGED: bool = false;
/// The name of the extension's lock tranche.
const TRANCHE: &std::ffi::CStr = c"pg_rowversion";

/// Defines the setting and, under `shared_preload_libraries`, reserves the slots (from
/// `_PG_init`).
pub fn install() {
    GucRegistry::define_bool_guc(
        c"pg_rowversion.count_conflicts",
        c"Counts version conflicts in rowversion.conflict_stats.",
        c"On (the default) when pg_rowversion is in shared_preload_libraries; off counts nothing, in the sessions it applies to.",
        &COUNT_CONFLICTS,
        GucContext::Suset,
        GucFlags::default(),
    );
    // SAFETY: _PG_init runs once per process, before shared memory is set up when preloading;
    // the previous hooks are kept and called.
    unsafe {
        // A setting that takes a restart can only be defined while preloading (Postgres
        // refuses it later, FATAL), as pg_stat_statements' are.
        if !pg_sys::process_shared_preload_libraries_in_progress {
            return;
        }
        GucRegistry::define_int_guc(
            c"pg_rowversion.conflict_stats_max",
            c"Tables whose version conflicts are counted in rowversion.conflict_stats (all databases).",
            c"Shared memory for the counters is reserved at server start (256 bytes per table) when pg_rowversion is in shared_preload_libraries; conflicts on tables beyond this number are not counted, and the server log says so.",
            &CONFLICT_STATS_MAX,
            1,
            1_000_000,
            GucContext::Postmaster,
            GucFlags::default(),
        );
        PREV_SHMEM_REQUEST = pg_sys::shmem_request_hook;
        pg_sys::shmem_request_hook = Some(request_shared_memory);
        PREV_SHMEM_STARTUP = pg_sys::shmem_startup_hook;
        pg_sys::shmem_startup_hook = Some(attach_shared_memory);
    }
}

fn slot_count() -> usize {
    2 * CONFLICT_STATS_MAX.get() as usize
}

/// The shared memory reserved: the header, the slots, and room to align them.
fn shared_size() -> usize {
    size_of::<Header>() + slot_count() * size_of::<Slot>() + align_of::<Header>()
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn request_shared_memory() {
    // SAFETY: called by the postmaster while it sizes shared memory.
    unsafe {
        if let Some(previous) = PREV_SHMEM_REQUEST {
            previous();
        }
        pg_sys::RequestAddinShmemSpace(shared_size());
        pg_sys::RequestNamedLWLockTranche(TRANCHE.as_ptr(), 1);
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn attach_shared_memory() {
    // SAFETY: called once in the postmaster (and in every backend under EXEC_BACKEND) after
    // shared memory exists; `AddinShmemInitLock` (MainLWLockArray[21], lwlocknames.txt)
    // serialises the first initialisation. The struct is over-allocated so that the header,
    // and the slots after it, can be aligned.
    unsafe {
        if let Some(previous) = PREV_SHMEM_STARTUP {
            previous();
        }
        let count = slot_count();
        let init_lock = &raw mut (*pg_sys::MainLWLockArray.add(21)).lock;
        pg_sys::LWLockAcquire(init_lock, pg_sys::LWLockMode::LW_EXCLUSIVE);
        let mut found = false;
        let base =
            pg_sys::ShmemInitStruct(c"pg_rowversion conflict counters".as_ptr(), shared_size(), &mut found) as *mut u8;
        let header = base.add(base.align_offset(align_of::<Header>())) as *mut Header;
        let slots = header.add(1) as *mut Slot;
        if !found {
            std::ptr::write_bytes(header, 0, 1);
            std::ptr::write_bytes(slots, 0, count);
        }
        HEADER = header;
        SLOTS = slots;
        SLOT_COUNT = count;
        LOCK = &raw mut (*pg_sys::GetNamedLWLockTranche(TRANCHE.as_ptr())).lock;
        pg_sys::LWLockRelease(init_lock);
    }
}

/// The header and the slots, if the library was preloaded.
fn shared() -> Option<(&'static Header, &'static [Slot])> {
    // SAFETY: set once at startup to a header and `SLOT_COUNT` slots in shared memory, zeroed
    // when created, which lives as long as the process; every field is an atomic.
    unsafe {
        let (header, slots) = (HEADER, SLOTS);
        (!slots.is_null()).then(|| (&*header, std::slice::from_raw_parts(slots, SLOT_COUNT)))
    }
}

fn key(relid: pg_sys::Oid) -> u64 {
    // SAFETY: MyDatabaseId is set for the life of a backend connected to a database.
    let database = unsafe { pg_sys::MyDatabaseId };
    u64::from(u32::from(database)) << 32 | u64::from(u32::from(relid))
}

/// The slots a lookup of `key` probes, in order.
fn probes(slots: &'static [Slot], key: u64) -> impl Iterator<Item = &'static Slot> {
    let home = (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize % slots.len();
    (0..PROBES.min(slots.len())).map(move |probe| &slots[(home + probe) % slots.len()])
}

/// The slot of `key`, without a lock.
fn find(slots: &'static [Slot], key: u64) -> Option<&'static Slot> {
    for slot in probes(slots, key) {
        match slot.key.load(Ordering::Acquire) {
            found if found == key => return Some(slot),
            FREE => return None,
            _ => {}
        }
    }
    None
}

/// Runs `f` holding the extension's lock exclusively.
fn locked<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: LOCK is the tranche's lock, set at startup whenever the slots are; an ERROR
    // inside `f` releases it (LWLockReleaseAll at abort).
    unsafe {
        pg_sys::LWLockAcquire(LOCK, pg_sys::LWLockMode::LW_EXCLUSIVE);
        let result = f();
        pg_sys::LWLockRelease(LOCK);
        result
    }
}

/// The slot of `key`, claimed for it if it has none and there is room.
fn claim(header: &'static Header, slots: &'static [Slot], key: u64) -> Option<&'static Slot> {
    find(slots, key).or_else(|| {
        // Full: no lock taken for every row of a table without a slot.
        if header.used.load(Ordering::Relaxed) >= CONFLICT_STATS_MAX.get() as usize {
            return None;
        }
        locked(|| {
            if let Some(slot) = find(slots, key) {
                return Some(slot);
            }
            if header.used.load(Ordering::Relaxed) >= CONFLICT_STATS_MAX.get() as usize {
                return None;
            }
            let slot = probes(slots, key).find(|slot| matches!(slot.key.load(Ordering::Relaxed), FREE | FREED))?;
            slot.counts.iter().for_each(|counter| counter.store(0, Ordering::Relaxed));
            slot.last_conflict.store(0, Ordering::Relaxed);
            // SAFETY: a plain clock read.
            slot.stats_reset.store(unsafe { pg_sys::GetCurrentTimestamp() }, Ordering::Relaxed);
            slot.key.store(key, Ordering::Release);
            header.used.fetch_add(1, Ordering::Relaxed);
            Some(slot)
        })
    })
}

/// Counts `event` on table `relid` of the current database; nothing when not preloaded.
pub fn count(relid: pg_sys::Oid, event: Event) {
    let Some((header, slots)) = shared().filter(|_| COUNT_CONFLICTS.get()) else { return };
    let Some(slot) = claim(header, slots, key(relid)) else {
        header.uncounted.fetch_add(1, Ordering::Relaxed);
        // SAFETY: a backend-local flag; the message is a LOG line, which returns.
        unsafe {
            if !FULL_LOGGED {
                FULL_LOGGED = true;
                pgrx::log!(
                    "pg_rowversion: conflicts on table {} are not counted: pg_rowversion.conflict_stats_max ({}) tables are counted already; rowversion.conflict_stats_reset() frees the counters of dropped tables",
                    u32::from(relid),
                    CONFLICT_STATS_MAX.get()
                );
            }
        }
        return;
    };
    let add = |counter: usize| slot.counts[counter].fetch_add(1, Ordering::Relaxed);
    match event {
        Event::Checked => {
            add(CHECKED);
            return;
        }
        Event::Merged => {
            add(CHECKED);
            add(MERGED);
            return;
        }
        Event::Conflict => {
            add(CHECKED);
            add(CONFLICTS);
        }
        Event::ConflictOnRecheck => {
            add(CONFLICTS);
        }
        Event::ObservedStale { mergeable } => {
            add(CHECKED);
            add(OBSERVED);
            if mergeable {
                add(OBSERVED_MERGEABLE);
            }
        }
        Event::ObservedUnversioned => {
            add(OBSERVED);
        }
        Event::VersionRequired => {
            add(VERSION_REQUIRED);
        }
        Event::ReplicationConflict => {
            add(REPLICATION_CONFLICTS);
        }
    }
    // SAFETY: a plain clock read.
    slot.last_conflict.store(unsafe { pg_sys::GetCurrentTimestamp() }, Ordering::Relaxed);
}

/// Whether the row the planner fast path decided last was counted as checked (its check
/// passed). EvalPlanQual checks a row again after waiting for a concurrent writer, and a
/// checked function that finds no row updated asks whether the statement counted one it then
/// skipped: neither counts it twice. Backend-local.
static mut ROW_COUNTED: bool = false;

/// See [`ROW_COUNTED`].
pub fn row_counted() -> bool {
    // SAFETY: backend-local state; Postgres backends are single-threaded.
    unsafe { ROW_COUNTED }
}

/// See [`ROW_COUNTED`].
pub fn set_row_counted(counted: bool) {
    // SAFETY: backend-local state; Postgres backends are single-threaded.
    unsafe { ROW_COUNTED = counted }
}

/// The errors of the counters' functions.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error("conflict counters need pg_rowversion in shared_preload_libraries")]
    NotPreloaded,
}

impl From<StatsError> for Report {
    fn from(error: StatsError) -> Self {
        match error {
            StatsError::NotPreloaded => Report::new(
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                error.to_string(),
                Some(
                    "The counters live in shared memory, which is reserved only when the library is preloaded.".into(),
                ),
                Some("Add pg_rowversion to shared_preload_libraries and restart the server.".into()),
            ),
        }
    }
}

fn timestamp(value: i64) -> (pg_sys::Datum, bool) {
    (pg_sys::Datum::from(value), value == 0)
}

/// Whether the table or database a slot's `key` names still exists: a table of the current
/// database in its catalog, another database's by the database alone.
fn exists(key: u64) -> bool {
    let (database, table) = ((key >> 32) as u32, key as u32);
    // SAFETY: MyDatabaseId is the backend's database; a syscache probe by OID, inside the
    // calling function's transaction.
    unsafe {
        let (cache, oid) = if database == u32::from(pg_sys::MyDatabaseId) {
            (pg_sys::SysCacheIdentifier::RELOID, table)
        } else {
            (pg_sys::SysCacheIdentifier::DATABASEOID, database)
        };
        pg_sys::SearchSysCacheExists(cache as i32, pg_sys::Datum::from(oid), 0.into(), 0.into(), 0.into())
    }
}

/// Whether a table of the current database that the catalog does not show may be one that an
/// uncommitted transaction is creating (and writing): its creator holds a lock on it.
fn being_created(key: u64) -> bool {
    let (database, table) = ((key >> 32) as u32, pg_sys::Oid::from(key as u32));
    // SAFETY: MyDatabaseId is the backend's database; a lock on a relation OID may be tried
    // whether or not the relation exists, and is released at once.
    unsafe {
        if database != u32::from(pg_sys::MyDatabaseId) {
            return false;
        }
        let lock = pg_sys::AccessShareLock as pg_sys::LOCKMODE;
        if !pg_sys::ConditionalLockRelationOid(table, lock) {
            return true;
        }
        pg_sys::UnlockRelationOid(table, lock);
        false
    }
}

/// Gives back the slots of dropped tables (of the current database) and of dropped databases.
/// The catalog is asked without the lock; a slot is freed under it, if it still holds the key
/// found gone.
fn free_dropped(header: &'static Header, slots: &'static [Slot]) {
    for slot in slots {
        let key = slot.key.load(Ordering::Acquire);
        if matches!(key, FREE | FREED) || exists(key) || being_created(key) {
            continue;
        }
        locked(|| {
            if slot.key.load(Ordering::Relaxed) == key {
                slot.key.store(FREED, Ordering::Release);
                header.used.fetch_sub(1, Ordering::Relaxed);
            }
        });
    }
}

/// Whether the current role sees the counters of table `relid`: it exists, and the role holds
/// a privilege on it or on one of its columns (`all`: a member of `pg_read_all_stats`).
///
/// # Safety
/// Inside a transaction.
unsafe fn visible(relid: pg_sys::Oid, all: bool) -> bool {
    // SAFETY: catalog checks for the current user; a missing relation is reported, not raised.
    unsafe {
        let user = pg_sys::GetUserId();
        let mask =
            (pg_sys::ACL_SELECT | pg_sys::ACL_INSERT | pg_sys::ACL_UPDATE | pg_sys::ACL_REFERENCES) as pg_sys::AclMode;
        let mut missing = false;
        let table = pg_sys::pg_class_aclcheck_ext(relid, user, mask, &mut missing);
        if missing {
            return false;
        }
        all || table == pg_sys::AclResult::ACLCHECK_OK
            || pg_sys::pg_attribute_aclcheck_all(relid, user, mask, pg_sys::AclMaskHow::ACLMASK_ANY)
                == pg_sys::AclResult::ACLCHECK_OK
    }
}

v1_function! {
    /// `rowversion.conflict_counts()`: the counters of the current database's tables that the
    /// current role may see (see [`visible`]), one row per table counted since the server
    /// started or the last reset, for the `rowversion.conflict_stats` view; a WARNING when
    /// tables (of any database) found no room.
    /// Returns its rows in materialize mode.
    pg_finfo_rowversion_conflict_counts,
    declared ["conflict_counts() -> SETOF (oid, bigint, bigint, bigint, bigint, bigint, bigint, bigint, timestamp with time zone, timestamp with time zone)"],
    fn rowversion_conflict_counts(args) -> StatsError {
        let (header, slots) = shared().ok_or(StatsError::NotPreloaded)?;
        let uncounted = header.uncounted.load(Ordering::Relaxed);
        if uncounted > 0 {
            Report::new(
                PgSqlErrorCode::ERRCODE_WARNING,
                format!("{uncounted} events on tables without counters were not counted"),
                Some(format!(
                    "pg_rowversion.conflict_stats_max ({}) tables are counted already.",
                    CONFLICT_STATS_MAX.get()
                )),
                Some("Free the counters of dropped tables with rowversion.conflict_stats_reset(), or raise pg_rowversion.conflict_stats_max (takes a restart).".into()),
            )
            .warn();
        }
        // SAFETY: MyDatabaseId is the backend's database; the rows go to the tuplestore
        // InitMaterializedSRF sets up, with the declared result type.
        unsafe {
            let database = u64::from(u32::from(pg_sys::MyDatabaseId));
            pg_sys::InitMaterializedSRF(args.fcinfo(), 0);
            let result = (*args.fcinfo()).resultinfo as *mut pg_sys::ReturnSetInfo;
            let all = pg_sys::has_privs_of_role(pg_sys::GetUserId(), pg_sys::Oid::from(pg_sys::ROLE_PG_READ_ALL_STATS));
            for slot in slots {
                let key = slot.key.load(Ordering::Acquire);
                if matches!(key, FREE | FREED) || key >> 32 != database || !visible(pg_sys::Oid::from(key as u32), all) {
                    continue;
                }
                let mut values = [pg_sys::Datum::from(0); 3 + COUNTERS];
                let mut nulls = [false; 3 + COUNTERS];
                values[0] = pg_sys::Datum::from(key as u32);
                for (i, counter) in slot.counts.iter().enumerate() {
                    values[1 + i] = pg_sys::Datum::from(counter.load(Ordering::Relaxed) as i64);
                }
                (values[1 + COUNTERS], nulls[1 + COUNTERS]) = timestamp(slot.last_conflict.load(Ordering::Relaxed));
                (values[2 + COUNTERS], nulls[2 + COUNTERS]) = timestamp(slot.stats_reset.load(Ordering::Relaxed));
                pg_sys::tuplestore_putvalues((*result).setResult, (*result).setDesc, values.as_mut_ptr(), nulls.as_mut_ptr());
            }
        }
        Ok(Some(pg_sys::Datum::from(0)))
    }
}

v1_function! {
    /// `rowversion.conflict_stats_reset(rel regclass DEFAULT NULL) RETURNS void`: zeroes the
    /// counters of `rel`, or of every table of the current database (NULL), and gives back the
    /// slots of dropped tables and databases. EXECUTE is revoked from PUBLIC, as for
    /// `pg_stat_reset()`.
    pg_finfo_rowversion_conflict_stats_reset,
    declared ["conflict_stats_reset(regclass) -> void"],
    fn rowversion_conflict_stats_reset(args) -> StatsError {
        let (header, slots) = shared().ok_or(StatsError::NotPreloaded)?;
        free_dropped(header, slots);
        // SAFETY: a plain clock read; MyDatabaseId is the backend's database.
        let (now, database) = unsafe { (pg_sys::GetCurrentTimestamp(), u64::from(u32::from(pg_sys::MyDatabaseId))) };
        let reset = |slot: &Slot| {
            slot.counts.iter().for_each(|counter| counter.store(0, Ordering::Relaxed));
            slot.last_conflict.store(0, Ordering::Relaxed);
            slot.stats_reset.store(now, Ordering::Relaxed);
        };
        match args.oid(0) {
            Some(relid) => find(slots, key(relid)).into_iter().for_each(reset),
            None => {
                header.uncounted.store(0, Ordering::Relaxed);
                slots.iter().filter(|slot| slot.key.load(Ordering::Acquire) >> 32 == database).for_each(reset)
            }
        }
        Ok(Some(pg_sys::Datum::from(0)))
    }
}
