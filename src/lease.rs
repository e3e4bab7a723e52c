//! Leases: named locks with a lifetime and a fencing token, kept in `rowversion.lease_state`
//! (`sql/leases.sql`): `lease_acquire`, `lease_renew`, `lease_release`, `lease_check`,
//! `lease_break`.
//!
//! Everything is data: a lease is a row, its token a counter in that row, its expiry a time of
//! the server's clock, so a lease outlives the session and the connection that took it (poolers
//! in transaction mode), and tokens survive restarts, crash recovery and promotion like any
//! other row. The functions run their statements as the table's owner, after checking the
//! caller's role against the lease's.
//!
//! The fence: `lease_check` locks the row `FOR SHARE` until its transaction ends; acquisition
//! takes the row `FOR NO KEY UPDATE SKIP LOCKED`, so it passes over a lease being fenced and
//! waits for that transaction instead.
//!
//! Waiting: a waiter holds a share lock on an advisory lock tag of its own, (database,
//! hash of the name, ticket, [`WAITER_TAG`]), taken from the lock manager without waiting, so
//! that waiters are visible (`pg_locks`, the `waiting` column of `rowversion.leases`) and
//! ordered (tickets come from a sequence), and one on the lease's queue tag ([`QUEUE_TAG`]).
//! It sleeps on its latch. The waiter with the oldest
//! ticket, the head, sleeps until the lease expires; the others until they are woken. Every
//! transaction that touched a lease wakes that lease's head when it commits or aborts (a
//! transaction callback), when its changes and row locks are visible to the head; a waiter
//! that gives up wakes the next one. Every waiter also re-reads the lease at least once a
//! second, so a lost wake-up costs at most that.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::c_int;
use std::rc::Rc;

use pgrx::datum::DatumWithOid;
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::spi::{OwnedPreparedStatement, SpiClient};
use pgrx::{PgOid, PgSqlErrorCode};

use crate::encoding;
use crate::fmgr::{v1_function, Args};
use crate::identity::as_role;
use crate::report::{sqlstate, Report};

/// The fourth field of a waiter's advisory lock tag: Postgres' own advisory locks use 1 (one
/// bigint key) and 2 (two integer keys); 21078 is "RV".
const WAITER_TAG: u16 = 21078;
/// ... and of the tag (database, hash, 0) every waiter of a lease also holds, so that a
/// transaction that touched the lease can tell with one lock-table lookup that nobody waits
/// (measured: scanning the whole lock table at every commit halved the pairs per second).
const QUEUE_TAG: u16 = 21079;
/// Longer names and holder labels are refused: a name is a key of a btree index.
const MAX_NAME_BYTES: usize = 1024;
/// At most this many characters of a name appear in a message.
const NAME_CHARS_SHOWN: usize = 64;
/// A waiter re-reads the lease at least this often, whatever it was told.
const RECHECK_US: i64 = 1_000_000;
/// A transaction that touched more leases than this wakes the head waiter of every lease.
const MAX_LEASES_TO_WAKE: usize = 64;
const USECS_PER_DAY: i128 = 86_400_000_000;
/// The SQLSTATE of a fenced-off holder: its own class, not 40001, because it must stop, not
/// retry.
pub const LEASE_NOT_HELD: &[u8; 5] = b"RV001";

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("{0} must not be NULL")]
    NullArgument(&'static str),
    #[error("lease name must not be empty")]
    EmptyName,
    #[error("lease {what} is too long")]
    TooLong { what: &'static str, bytes: usize },
    #[error("lease ttl must be more than 0 and at most 1 year")]
    TtlOutOfRange,
    #[error("lease wait must not be negative")]
    NegativeWait,
    #[error("lease_acquire() can wait only in a READ COMMITTED transaction")]
    WaitNeedsReadCommitted,
    #[error("lease \"{name}\" is not held by token {token}")]
    NotHeld { name: String, token: i64, why: Option<String> },
    #[error("permission denied for lease \"{0}\"")]
    NotYours(String),
    #[error("canceling statement due to lock timeout")]
    LockTimeout,
    #[error("internal query failed: {0}")]
    Spi(#[from] pgrx::spi::SpiError),
}

impl From<LeaseError> for Report {
    fn from(error: LeaseError) -> Self {
        use PgSqlErrorCode::*;
        let message = error.to_string();
        let (code, detail, hint): (c_int, Option<String>, Option<&str>) = match error {
            LeaseError::NullArgument(_) => (ERRCODE_NULL_VALUE_NOT_ALLOWED as c_int, None, None),
            LeaseError::EmptyName => (ERRCODE_INVALID_PARAMETER_VALUE as c_int, None, None),
            LeaseError::TooLong { bytes, .. } => (
                ERRCODE_INVALID_PARAMETER_VALUE as c_int,
                Some(format!("It has {bytes} bytes; at most {MAX_NAME_BYTES} are allowed.")),
                None,
            ),
            LeaseError::TtlOutOfRange => (
                ERRCODE_INVALID_PARAMETER_VALUE as c_int,
                None,
                Some("A holder that needs longer renews its lease with lease_renew()."),
            ),
            LeaseError::NegativeWait => (
                ERRCODE_INVALID_PARAMETER_VALUE as c_int,
                None,
                Some("Pass '0 s' to take the lease only if it is free now."),
            ),
            LeaseError::WaitNeedsReadCommitted => (
                ERRCODE_FEATURE_NOT_SUPPORTED as c_int,
                Some("A waiter must see releases committed after its transaction began.".into()),
                Some("Acquire the lease in a transaction of its own, or pass wait => '0 s'."),
            ),
            LeaseError::NotHeld { why, .. } => (
                sqlstate(LEASE_NOT_HELD),
                why,
                Some("Stop: another holder may have written since. Acquire the lease again before writing."),
            ),
            LeaseError::NotYours(_) => (
                ERRCODE_INSUFFICIENT_PRIVILEGE as c_int,
                None,
                Some("A lease belongs to the role that acquired it; lease_break() frees it for that role, its members and superusers."),
            ),
            LeaseError::LockTimeout => (ERRCODE_LOCK_NOT_AVAILABLE as c_int, None, None),
            LeaseError::Spi(_) => (ERRCODE_INTERNAL_ERROR as c_int, None, None),
        };
        let report = Report::with_code(code, message, detail, hint.map(str::to_owned));
        // Behind an HTTP layer, a fenced-off holder is 409: the lease is no longer its own.
        if code == sqlstate(LEASE_NOT_HELD) {
            report.with_status(409)
        } else {
            report
        }
    }
}

type Result<T> = std::result::Result<T, LeaseError>;

/// A lease name argument: non-empty text of at most [`MAX_NAME_BYTES`], detoasted once.
#[derive(Clone, Copy)]
struct Name {
    datum: pg_sys::Datum,
    bytes: *const u8,
    len: usize,
}

impl Name {
    /// # Safety
    /// Argument `n` of the call must be `text`.
    unsafe fn from_arg(args: Args, n: usize) -> Result<Self> {
        let datum = args.datum(n).ok_or(LeaseError::NullArgument("name"))?;
        // SAFETY: forwarded: a text Datum.
        let (datum, bytes, len) = unsafe { label(datum, "name")? };
        if len == 0 {
            return Err(LeaseError::EmptyName);
        }
        Ok(Self { datum, bytes, len })
    }

    fn arg(&self) -> DatumWithOid<'static> {
        // SAFETY: a text Datum that lives for the rest of this call.
        unsafe { DatumWithOid::new(self.datum, pg_sys::TEXTOID) }
    }

    /// The name for a message, cut to its first characters.
    fn shown(&self) -> String {
        // SAFETY: `bytes` holds `len` bytes of text in the database encoding.
        unsafe { encoding::clipped_from_server(self.bytes.cast(), self.len, NAME_CHARS_SHOWN) }
    }

    /// `hashtext(name)` for a deterministic collation, which the view computes too.
    fn hash(&self) -> u32 {
        // SAFETY: `bytes` holds `len` bytes; hash_bytes only reads them.
        unsafe { hash_bytes(self.bytes, self.len as c_int) }
    }
}

/// A lease name or holder label: the text detoasted once (the Datum to pass on, and its
/// bytes), at most [`MAX_NAME_BYTES`] long.
///
/// # Safety
/// `datum` must be a `text` Datum of the current call; the copy lives for the rest of it.
unsafe fn label(datum: pg_sys::Datum, what: &'static str) -> Result<(pg_sys::Datum, *const u8, usize)> {
    // SAFETY: forwarded from the caller.
    let (text, bytes, len) = unsafe {
        let text = pg_sys::pg_detoast_datum_packed(datum.cast_mut_ptr());
        (text, pgrx::varlena::vardata_any(text) as *const u8, pgrx::varlena::varsize_any_exhdr(text))
    };
    if len > MAX_NAME_BYTES {
        return Err(LeaseError::TooLong { what, bytes: len });
    }
    Ok((pg_sys::Datum::from(text), bytes, len))
}

unsafe extern "C-unwind" {
    /// common/hashfn.h: `hash_any`'s body (an inline wrapper there), which `hashtext` uses.
    fn hash_bytes(k: *const u8, keylen: c_int) -> u32;
}

/// A required argument.
fn required<T>(value: Option<T>, name: &'static str) -> Result<T> {
    value.ok_or(LeaseError::NullArgument(name))
}

/// An interval argument, as Postgres' interval comparison counts it (a month is 30 days, a
/// day 24 hours), in microseconds: the sign and rough size of a ttl or a wait.
///
/// # Safety
/// `datum` must be an `interval`.
unsafe fn nominal_us(datum: pg_sys::Datum) -> i128 {
    // SAFETY: an interval is passed by reference.
    let interval = unsafe { &*(datum.cast_mut_ptr::<pg_sys::Interval>()) };
    i128::from(interval.time)
        + i128::from(interval.day) * USECS_PER_DAY
        + i128::from(interval.month) * 30 * USECS_PER_DAY
}

/// `at + interval` on the calendar, as `timestamptz + interval` computes it.
///
/// # Safety
/// `interval` must be an `interval` Datum.
unsafe fn plus(at: pg_sys::TimestampTz, interval: pg_sys::Datum) -> pg_sys::TimestampTz {
    // SAFETY: the function's arguments are a timestamptz and an interval.
    unsafe {
        pgrx::direct_function_call_as_datum(pg_sys::timestamptz_pl_interval, &[Some(at.into()), Some(interval)])
            .map_or(at, |d| d.value() as i64)
    }
}

/// A ttl: more than 0 and at most one calendar year from now.
///
/// # Safety
/// `ttl` must be an `interval`.
unsafe fn check_ttl(ttl: pg_sys::Datum) -> Result<pg_sys::Datum> {
    // SAFETY: forwarded.
    let nominal = unsafe { nominal_us(ttl) };
    // Out of this range it is wrong whatever the calendar says, and adding it could overflow.
    if nominal <= 0 || nominal > 400 * USECS_PER_DAY {
        return Err(LeaseError::TtlOutOfRange);
    }
    let year = pg_sys::Interval { time: 0, day: 0, month: 12 };
    let year = pg_sys::Datum::from(&year as *const pg_sys::Interval);
    // SAFETY: `ttl` and `year` are intervals, within a range where the sums cannot overflow.
    let (now, expires, limit) = unsafe {
        let now = pg_sys::GetCurrentTimestamp();
        (now, plus(now, ttl), plus(now, year))
    };
    if expires <= now || expires > limit {
        return Err(LeaseError::TtlOutOfRange);
    }
    Ok(ttl)
}

/// When a wait of `wait` from `now` ends; `i64::MAX` for a wait of a century or more.
///
/// # Safety
/// `wait` must be an `interval`.
unsafe fn wait_deadline(wait: pg_sys::Datum, now: pg_sys::TimestampTz) -> Result<pg_sys::TimestampTz> {
    // SAFETY: forwarded.
    let nominal = unsafe { nominal_us(wait) };
    if nominal < 0 {
        return Err(LeaseError::NegativeWait);
    }
    if nominal >= 36_500 * USECS_PER_DAY {
        return Ok(i64::MAX);
    }
    // SAFETY: `wait` is an interval of less than a century.
    Ok(unsafe { plus(now, wait) }.max(now))
}

/// The statements of the lease functions, run as the table's owner. Every name qualified.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Statement {
    /// ($1 name, $2 ttl, $3 holder, $4 role, $5 patient): takes a free or expired lease that
    /// no transaction is fencing or taking (patient: only one free for a second already); its
    /// new token.
    Take,
    /// The same for a name never acquired: token 1.
    Insert,
    /// ($1 name): microseconds until a live lease expires (NULL when it is free but locked).
    State,
    /// ($1 name, $2 token, $3 ttl): the lease's role when `token` still holds it.
    Renew,
    /// ($1 name, $2 token): the same, freeing it.
    Release,
    /// ($1 name): the lease, locked until the transaction ends.
    Check,
    /// ($1 name): the role of a live lease, freeing it.
    Break,
}

impl Statement {
    fn sql(self) -> &'static str {
        match self {
            Self::Take => {
                "WITH free AS (
                     SELECT name FROM rowversion.lease_state
                     WHERE name OPERATOR(pg_catalog.=) $1
                       AND (released OR expires_at OPERATOR(pg_catalog.<=) pg_catalog.clock_timestamp())
                       AND (NOT $5 OR expires_at OPERATOR(pg_catalog.<=)
                            (pg_catalog.clock_timestamp() OPERATOR(pg_catalog.-) '1 s'::pg_catalog.interval))
                     FOR NO KEY UPDATE SKIP LOCKED),
                 now AS (SELECT pg_catalog.clock_timestamp() AS at)
                 UPDATE rowversion.lease_state AS l
                 SET token = l.token OPERATOR(pg_catalog.+) 1, holder = $3, role = $4, acquired_at = now.at,
                     expires_at = now.at OPERATOR(pg_catalog.+) $2, released = false
                 FROM free, now
                 WHERE l.name OPERATOR(pg_catalog.=) free.name
                 RETURNING l.token"
            }
            Self::Insert => {
                "INSERT INTO rowversion.lease_state AS l (name, token, holder, role, acquired_at, expires_at)
                 SELECT $1, 1, $3, $4, now.at, now.at OPERATOR(pg_catalog.+) $2
                 FROM (SELECT pg_catalog.clock_timestamp() AS at) AS now
                 ON CONFLICT (name) DO NOTHING
                 RETURNING l.token"
            }
            Self::State => {
                "SELECT CASE WHEN released OR expires_at OPERATOR(pg_catalog.<=) pg_catalog.clock_timestamp()
                        THEN NULL
                        ELSE pg_catalog.ceil(pg_catalog.extract('epoch',
                                 expires_at OPERATOR(pg_catalog.-) pg_catalog.clock_timestamp())
                             OPERATOR(pg_catalog.*) 1000000)::pg_catalog.int8 END
                 FROM rowversion.lease_state WHERE name OPERATOR(pg_catalog.=) $1"
            }
            Self::Renew => {
                "UPDATE rowversion.lease_state
                 SET expires_at = pg_catalog.clock_timestamp() OPERATOR(pg_catalog.+) $3
                 WHERE name OPERATOR(pg_catalog.=) $1 AND token OPERATOR(pg_catalog.=) $2 AND NOT released
                 RETURNING role"
            }
            Self::Release => {
                "UPDATE rowversion.lease_state SET released = true, expires_at = pg_catalog.clock_timestamp()
                 WHERE name OPERATOR(pg_catalog.=) $1 AND token OPERATOR(pg_catalog.=) $2 AND NOT released
                   AND expires_at OPERATOR(pg_catalog.>) pg_catalog.clock_timestamp()
                 RETURNING role"
            }
            Self::Check => {
                "SELECT token, role, released,
                        NOT released AND expires_at OPERATOR(pg_catalog.>) pg_catalog.clock_timestamp()
                 FROM rowversion.lease_state WHERE name OPERATOR(pg_catalog.=) $1
                 FOR SHARE"
            }
            Self::Break => {
                "UPDATE rowversion.lease_state SET released = true, expires_at = pg_catalog.clock_timestamp()
                 WHERE name OPERATOR(pg_catalog.=) $1 AND NOT released
                   AND expires_at OPERATOR(pg_catalog.>) pg_catalog.clock_timestamp()
                 RETURNING role"
            }
        }
    }

    fn argument_types(self) -> &'static [pg_sys::Oid] {
        use pg_sys::{BOOLOID, INT8OID, INTERVALOID, OIDOID, TEXTOID};
        match self {
            Self::Take => &[TEXTOID, INTERVALOID, TEXTOID, OIDOID, BOOLOID],
            Self::Insert => &[TEXTOID, INTERVALOID, TEXTOID, OIDOID],
            Self::State | Self::Check | Self::Break => &[TEXTOID],
            Self::Renew => &[TEXTOID, INT8OID, INTERVALOID],
            Self::Release => &[TEXTOID, INT8OID],
        }
    }
}

thread_local! {
    /// The prepared statements, per session. Plans name the table, so they follow its
    /// re-creation (DROP and CREATE EXTENSION) through Postgres' plan invalidation.
    static STATEMENTS: RefCell<HashMap<Statement, Rc<OwnedPreparedStatement>>> = RefCell::new(HashMap::new());
    /// Hashes of the leases this transaction touched, whose head waiters it wakes when it
    /// ends; `None` once there were too many to list (then it wakes every lease's head).
    static TO_WAKE: RefCell<Option<Vec<u32>>> = const { RefCell::new(Some(Vec::new())) };
    /// The head waiters found at pre-commit, whose latches the commit sets.
    static LATCHES_AT_COMMIT: RefCell<Vec<c_int>> = const { RefCell::new(Vec::new()) };
    static CALLBACK_REGISTERED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Set while an attempt runs in its own subtransaction (see [`in_subtransaction`]), whose rollback
    /// wakes nobody.
    static IN_ATTEMPT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn prepared(client: &SpiClient<'_>, statement: Statement) -> Result<Rc<OwnedPreparedStatement>> {
    if let Some(plan) = STATEMENTS.with(|s| s.borrow().get(&statement).cloned()) {
        return Ok(plan);
    }
    let types: Vec<PgOid> = statement.argument_types().iter().map(|&oid| PgOid::from(oid)).collect();
    let plan = Rc::new(client.prepare_mut(statement.sql(), &types)?.keep());
    STATEMENTS.with(|s| s.borrow_mut().insert(statement, plan.clone()));
    Ok(plan)
}

/// The relation `rowversion.NAME`, which the extension's script created.
fn extension_relation(name: &std::ffi::CStr) -> pg_sys::Oid {
    // SAFETY: catalog lookups by name; InvalidOid when missing (then statements fail cleanly).
    unsafe {
        let schema = pg_sys::get_namespace_oid(c"rowversion".as_ptr(), true);
        pg_sys::get_relname_relid(name.as_ptr(), schema)
    }
}

/// The owner of `rowversion.lease_state`, as whom the lease functions act on it.
fn lease_owner() -> pg_sys::Oid {
    let relid = extension_relation(c"lease_state");
    // SAFETY: the relation exists while the extension does; RelationIdGetRelation takes no
    // lock, and the descriptor is closed right after reading its owner.
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

/// Runs `work` with an SPI connection as the owner of `rowversion.lease_state`.
fn as_lease_owner<T>(work: impl FnOnce(&mut SpiClient<'_>) -> Result<T>) -> Result<T> {
    as_role(lease_owner(), || Spi::connect_mut(work))
}

/// Remembers that this transaction touched the lease with this hash: when it ends, the lease's
/// head waiter is woken.
fn wake_at_end(hash: u32) {
    if !CALLBACK_REGISTERED.replace(true) {
        // SAFETY: registered once per session; the callbacks live as long as the library.
        unsafe {
            pg_sys::RegisterXactCallback(Some(at_transaction_end), std::ptr::null_mut());
            pg_sys::RegisterSubXactCallback(Some(at_subtransaction_end), std::ptr::null_mut());
        }
    }
    TO_WAKE.with(|to_wake| {
        let mut to_wake = to_wake.borrow_mut();
        if let Some(hashes) = to_wake.as_mut() {
            if !hashes.contains(&hash) {
                if hashes.len() == MAX_LEASES_TO_WAKE {
                    *to_wake = None;
                } else {
                    hashes.push(hash);
                }
            }
        }
    });
}

/// The head waiters of the leases this transaction touched.
fn heads_to_wake() -> Vec<c_int> {
    TO_WAKE.with_borrow(|to_wake| match to_wake {
        Some(hashes) if hashes.is_empty() => Vec::new(),
        Some(hashes) => heads(Some(hashes)),
        None => heads(None),
    })
}

/// At the end of a transaction that touched leases, their head waiters are woken. Who they are
/// is found at pre-commit, where an error (an allocation failure) still aborts the transaction;
/// after the commit, when the change is visible, only their latches are set, which cannot fail:
/// an error there would be a PANIC. A waiter that starts waiting in between re-reads within a
/// second. On abort, the transaction's row locks are gone and the heads are woken at once.
#[pg_guard]
unsafe extern "C-unwind" fn at_transaction_end(event: pg_sys::XactEvent::Type, _arg: *mut std::ffi::c_void) {
    use pg_sys::XactEvent::*;
    match event {
        XACT_EVENT_PRE_COMMIT | XACT_EVENT_PARALLEL_PRE_COMMIT => {
            let pids = heads_to_wake();
            LATCHES_AT_COMMIT.set(pids);
        }
        XACT_EVENT_COMMIT | XACT_EVENT_PARALLEL_COMMIT => {
            set_latches(&LATCHES_AT_COMMIT.take());
            TO_WAKE.set(Some(Vec::new()));
        }
        XACT_EVENT_ABORT | XACT_EVENT_PARALLEL_ABORT => {
            LATCHES_AT_COMMIT.take();
            set_latches(&heads_to_wake());
            TO_WAKE.set(Some(Vec::new()));
        }
        // A prepared transaction keeps its locks; its waiters find out at their next re-read.
        XACT_EVENT_PREPARE => {
            LATCHES_AT_COMMIT.take();
            TO_WAKE.set(Some(Vec::new()));
        }
        _ => {}
    }
}

/// A rolled-back savepoint released its row locks and lease waits (a waiter cancelled inside
/// a PL/pgSQL exception block): the heads are woken now, not when the transaction ends.
#[pg_guard]
unsafe extern "C-unwind" fn at_subtransaction_end(
    event: pg_sys::SubXactEvent::Type,
    _my_subid: pg_sys::SubTransactionId,
    _parent_subid: pg_sys::SubTransactionId,
    _arg: *mut std::ffi::c_void,
) {
    if event == pg_sys::SubXactEvent::SUBXACT_EVENT_ABORT_SUB && !IN_ATTEMPT.get() {
        set_latches(&heads_to_wake());
    }
}

fn waiter_tag(hash: u32, ticket: u32, kind: u16) -> pg_sys::LOCKTAG {
    pg_sys::LOCKTAG {
        // SAFETY: a plain read of this backend's database.
        locktag_field1: unsafe { pg_sys::MyDatabaseId }.to_u32(),
        locktag_field2: hash,
        locktag_field3: ticket,
        locktag_field4: kind,
        locktag_type: pg_sys::LockTagType::LOCKTAG_ADVISORY as u8,
        locktag_lockmethodid: pg_sys::USER_LOCKMETHOD as u8,
    }
}

/// Whether ticket `a` was drawn before `b` (tickets wrap around at 2^32).
fn earlier(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// Calls `each(hash, ticket, pid)` for every other session of this database waiting for a
/// lease.
fn for_each_waiter(mut each: impl FnMut(u32, u32, c_int)) {
    // SAFETY: GetLockStatusData returns a palloc'd copy of the lock table, freed here; the
    // fields read are plain values.
    unsafe {
        let database = pg_sys::MyDatabaseId.to_u32();
        let data = pg_sys::GetLockStatusData();
        let locks = std::slice::from_raw_parts((*data).locks, (*data).nelements as usize);
        for lock in locks {
            let tag = &lock.locktag;
            if tag.locktag_type == pg_sys::LockTagType::LOCKTAG_ADVISORY as u8
                && tag.locktag_field4 == WAITER_TAG
                && tag.locktag_field1 == database
                && lock.holdMask != 0
                && lock.pid != pg_sys::MyProcPid
            {
                each(tag.locktag_field2, tag.locktag_field3, lock.pid);
            }
        }
        if !(*data).locks.is_null() {
            pg_sys::pfree((*data).locks.cast());
        }
        pg_sys::pfree(data.cast());
    }
}

/// Whether another session waits for a lease with this hash: holds its queue tag.
fn has_waiters(hash: u32) -> bool {
    let tag = waiter_tag(hash, 0, QUEUE_TAG);
    let mut count: c_int = 0;
    // SAFETY: GetLockConflicts looks the tag up in the lock table (not counting this backend)
    // and returns a palloc'd array, freed here.
    unsafe {
        let holders = pg_sys::GetLockConflicts(&tag, pg_sys::ExclusiveLock as pg_sys::LOCKMODE, &mut count);
        if !holders.is_null() {
            pg_sys::pfree(holders.cast());
        }
    }
    count > 0
}

/// The head waiter (oldest ticket) of each lease with one of these hashes (`None`: of every
/// lease): their pids, at most one per waiting backend.
fn heads(hashes: Option<&[u32]>) -> Vec<c_int> {
    if hashes.is_some_and(|hashes| !hashes.iter().any(|&hash| has_waiters(hash))) {
        return Vec::new();
    }
    let mut heads: Vec<(u32, u32, c_int)> = Vec::new();
    for_each_waiter(|hash, ticket, pid| {
        if hashes.is_some_and(|h| !h.contains(&hash)) {
            return;
        }
        match heads.iter_mut().find(|(h, _, _)| *h == hash) {
            Some(head) if earlier(ticket, head.1) => *head = (hash, ticket, pid),
            Some(_) => {}
            None => heads.push((hash, ticket, pid)),
        }
    });
    heads.into_iter().map(|(_, _, pid)| pid).collect()
}

/// Sets the latches of these backends (those still there).
fn set_latches(pids: &[c_int]) {
    for &pid in pids {
        // SAFETY: BackendPidGetProc returns NULL for a backend that is gone; a PGPROC's latch
        // is in shared memory and SetLatch is safe from any backend. Neither raises errors.
        unsafe {
            let proc = pg_sys::BackendPidGetProc(pid);
            if !proc.is_null() {
                pg_sys::SetLatch(&mut (*proc).procLatch);
            }
        }
    }
}

/// Whether no other session waits for the lease with an older ticket.
fn is_head(hash: u32, ticket: u32) -> bool {
    let mut head = true;
    for_each_waiter(|h, t, _| head &= !(h == hash && earlier(t, ticket)));
    head
}

/// The outcome of one attempt to take a lease.
enum Attempt {
    Taken(i64),
    /// Held for this many more microseconds, or (`None`) free but being fenced or taken by a
    /// transaction.
    Busy(Option<i64>),
}

fn try_take(
    name: Name,
    ttl: pg_sys::Datum,
    holder: Option<pg_sys::Datum>,
    role: pg_sys::Oid,
    patient: bool,
) -> Result<Attempt> {
    // SAFETY: an interval and a text Datum that live for the rest of this call.
    let (ttl, holder) = unsafe {
        (
            DatumWithOid::new(ttl, pg_sys::INTERVALOID),
            match holder {
                Some(holder) => DatumWithOid::new(holder, pg_sys::TEXTOID),
                None => DatumWithOid::null_oid(pg_sys::TEXTOID),
            },
        )
    };
    let args = [name.arg(), ttl, holder, role.into(), patient.into()];
    // No statement here waits for another transaction (SKIP LOCKED, a plain read; the INSERT
    // only for a name that has no row yet): a wait would consume the latch a waker sets.
    as_lease_owner(|client| {
        let plan = prepared(client, Statement::Take)?;
        let rows = client.update(&*plan, Some(1), &args)?;
        if !rows.is_empty() {
            return Ok(Attempt::Taken(rows.first().get_one::<i64>()?.unwrap_or(0)));
        }
        let plan = prepared(client, Statement::State)?;
        let rows = client.select(&*plan, Some(1), &[name.arg()])?;
        if !rows.is_empty() {
            return Ok(Attempt::Busy(rows.first().get_one::<i64>()?));
        }
        let plan = prepared(client, Statement::Insert)?;
        let rows = client.update(&*plan, Some(1), &args[..4])?;
        Ok(if rows.is_empty() {
            Attempt::Busy(None)
        } else {
            Attempt::Taken(rows.first().get_one::<i64>()?.unwrap_or(0))
        })
    })
}

/// `attempt` (a [`try_take`]) in a subtransaction of its own, kept only when it took the
/// lease. A locking read can end up holding a row lock on a row it does not return: when a
/// transaction that took the lease commits between the statement's snapshot and its lock,
/// Postgres locks the newest row version, finds on the recheck that it is no longer free, and
/// keeps the lock. Held by a waiter while it sleeps (or by a caller that got NULL until its
/// transaction ends), that lock would block the holder's `lease_check` and `lease_release`.
/// Rolling the attempt back releases it. Only the attempt's own rollback wakes nobody: it
/// changed nothing a waiter could take (a waiter that skipped the row re-reads within a second).
fn in_subtransaction(attempt: impl FnOnce() -> Result<Attempt> + std::panic::UnwindSafe) -> Result<Attempt> {
    // SAFETY: the subtransaction is begun here and ended here on every path, an ERROR
    // included (rolled back, then re-raised), with the caller's memory context and resource
    // owner restored, as PL/Python's subtransactions do.
    unsafe {
        let context = pg_sys::CurrentMemoryContext;
        let owner = pg_sys::CurrentResourceOwner;
        let end = |keep: bool| {
            IN_ATTEMPT.set(!keep);
            if keep {
                pg_sys::ReleaseCurrentSubTransaction();
            } else {
                pg_sys::RollbackAndReleaseCurrentSubTransaction();
            }
            IN_ATTEMPT.set(false);
            pg_sys::MemoryContextSwitchTo(context);
            pg_sys::CurrentResourceOwner = owner;
        };
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        pg_sys::MemoryContextSwitchTo(context);
        let outcome = pgrx::PgTryBuilder::new(attempt)
            .catch_others(|error| {
                end(false);
                error.rethrow()
            })
            .execute();
        end(matches!(outcome, Ok(Attempt::Taken(_))));
        outcome
    }
}

/// The caller's role may act for a lease of `role` (it is that role, a member of it, or a
/// superuser).
fn may_act_for(role: pg_sys::Oid) -> bool {
    // SAFETY: a catalog check for the current user.
    unsafe { pg_sys::has_privs_of_role(pg_sys::GetUserId(), role) }
}

/// `lease_acquire`: see the module's description of waiting.
fn acquire(name: Name, ttl: pg_sys::Datum, wait: pg_sys::Datum, holder: Option<pg_sys::Datum>) -> Result<Option<i64>> {
    // SAFETY: plain reads of the current time, user and GUCs.
    let (now, role, lock_timeout_ms, isolation) =
        unsafe { (pg_sys::GetCurrentTimestamp(), pg_sys::GetUserId(), pg_sys::LockTimeout, pg_sys::XactIsoLevel) };
    // SAFETY: `wait` is an interval.
    let deadline = unsafe { wait_deadline(wait, now)? };
    wake_at_end(name.hash());
    if let Attempt::Taken(token) = in_subtransaction(|| try_take(name, ttl, holder, role, false))? {
        return Ok(Some(issued(token)));
    }
    if deadline <= now {
        return Ok(None);
    }
    if isolation >= pg_sys::XACT_REPEATABLE_READ as c_int {
        return Err(LeaseError::WaitNeedsReadCommitted);
    }
    let lock_deadline = if lock_timeout_ms > 0 { now + i64::from(lock_timeout_ms) * 1000 } else { i64::MAX };
    let ticket = next_ticket()?;
    let tags = [waiter_tag(name.hash(), 0, QUEUE_TAG), waiter_tag(name.hash(), ticket, WAITER_TAG)];
    // SAFETY: share locks on tags that nobody locks in a conflicting mode (the queue tag is
    // only looked up, by GetLockConflicts): granted at once, held until released below or, on
    // an error, by the transaction's abort.
    unsafe {
        for tag in &tags {
            pg_sys::LockAcquire(tag, pg_sys::ShareLock as pg_sys::LOCKMODE, false, true);
        }
    }
    let mut last_try = now;
    let outcome = loop {
        pgrx::check_for_interrupts!();
        // SAFETY: a plain read of the clock.
        let now = unsafe { pg_sys::GetCurrentTimestamp() };
        let mut wake_at = deadline.min(lock_deadline).min(now.saturating_add(RECHECK_US));
        let head = is_head(name.hash(), ticket);
        if head || now - last_try >= RECHECK_US {
            last_try = now;
            // A waiter behind the head takes only a lease free for a second already: the head,
            // woken within milliseconds of a release, goes first (fairness), while a waiter
            // whose head waits for another name of the same hash still gets its own.
            match in_subtransaction(|| try_take(name, ttl, holder, role, !head)) {
                Ok(Attempt::Taken(token)) => break Ok(Some(issued(token))),
                Ok(Attempt::Busy(Some(left))) if head => wake_at = wake_at.min(now.saturating_add(left)),
                Ok(Attempt::Busy(_)) => {}
                Err(error) => break Err(error),
            }
        }
        // SAFETY: as above.
        let now = unsafe { pg_sys::GetCurrentTimestamp() };
        if now >= deadline {
            break Ok(None);
        }
        if now >= lock_deadline {
            break Err(LeaseError::LockTimeout);
        }
        let timeout_ms = (wake_at - now + 999) / 1000;
        // SAFETY: this backend's own latch; waking on it, a timeout or postmaster death.
        unsafe {
            pg_sys::WaitLatch(
                pg_sys::MyLatch,
                (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as c_int,
                timeout_ms.max(1) as std::ffi::c_long,
                pg_sys::PG_WAIT_EXTENSION,
            );
            pg_sys::ResetLatch(pg_sys::MyLatch);
        }
    };
    // SAFETY: the locks taken above.
    unsafe {
        for tag in &tags {
            pg_sys::LockRelease(tag, pg_sys::ShareLock as pg_sys::LOCKMODE, false);
        }
    }
    if !matches!(outcome, Ok(Some(_))) {
        // The next waiter takes over watching the expiry now, not when this transaction ends.
        set_latches(&heads(Some(&[name.hash()])));
    }
    outcome
}

/// A token handed out: its transaction's commit is flushed to the local disk whatever
/// `synchronous_commit` says, so that a crash cannot lose an acquisition whose token a client
/// already has and hand the same token out again.
fn issued(token: i64) -> i64 {
    // SAFETY: sets a flag of the current transaction.
    unsafe { pg_sys::ForceSyncCommit() };
    token
}

/// A waiter's place in line: the next value of `rowversion.lease_ticket` (non-transactional).
fn next_ticket() -> Result<u32> {
    let sequence = extension_relation(c"lease_ticket");
    // SAFETY: nextval(regclass) of the extension's sequence, as its owner.
    let ticket = as_role(lease_owner(), || unsafe {
        pgrx::direct_function_call_as_datum(pg_sys::nextval_oid, &[Some(sequence.into())])
    });
    Ok(ticket.map_or(0, |d| d.value() as u32))
}

/// Runs Renew, Release or Break and returns whether it changed the lease; raises 42501 (and so
/// undoes the change) when the lease belongs to a role the caller may not act for.
fn change(name: Name, statement: Statement, args: &[DatumWithOid<'_>]) -> Result<bool> {
    wake_at_end(name.hash());
    let role = as_lease_owner(|client| {
        let plan = prepared(client, statement)?;
        let rows = client.update(&*plan, Some(1), args)?;
        Ok(if rows.is_empty() { None } else { rows.first().get_one::<pg_sys::Oid>()? })
    })?;
    match role {
        None => Ok(false),
        Some(role) if may_act_for(role) => Ok(true),
        Some(_) => Err(LeaseError::NotYours(name.shown())),
    }
}

/// `lease_check`: the lease row stays share-locked until the transaction ends.
fn check(name: Name, token: i64) -> Result<()> {
    wake_at_end(name.hash());
    let lease = as_lease_owner(|client| {
        let plan = prepared(client, Statement::Check)?;
        let rows = client.select(&*plan, Some(1), &[name.arg()])?;
        if rows.is_empty() {
            return Ok(None);
        }
        let row = rows.first();
        Ok(Some((
            row.get::<i64>(1)?.unwrap_or(0),
            row.get::<pg_sys::Oid>(2)?.unwrap_or(pg_sys::InvalidOid),
            row.get::<bool>(3)?.unwrap_or(false),
            row.get::<bool>(4)?.unwrap_or(false),
        )))
    })?;
    let why = match lease {
        Some((current, role, _, true)) if current == token => {
            return if may_act_for(role) { Ok(()) } else { Err(LeaseError::NotYours(name.shown())) };
        }
        None => Some("No lease of this name was ever acquired.".to_owned()),
        // What happened to it is for the roles that may read it in rowversion.leases.
        Some((_, role, _, _)) if !may_act_for(role) => None,
        Some((current, _, _, _)) if current != token => Some(format!("Its current token is {current}.")),
        Some((_, _, true, _)) => Some("It was released.".to_owned()),
        Some(_) => Some("It expired.".to_owned()),
    };
    Err(LeaseError::NotHeld { name: name.shown(), token, why })
}

v1_function! {
    /// `rowversion.lease_acquire(name text, ttl interval, wait interval DEFAULT '0 s', holder
    /// text DEFAULT NULL) RETURNS bigint`: the new token, or NULL when still taken after `wait`.
    pg_finfo_rowversion_lease_acquire,
    fn rowversion_lease_acquire(args) -> LeaseError {
        // SAFETY: the arguments are (text, interval, interval, text).
        unsafe {
            let name = Name::from_arg(args, 0)?;
            let ttl = check_ttl(required(args.datum(1), "ttl")?)?;
            let wait = required(args.datum(2), "wait")?;
            let holder = match args.datum(3) {
                Some(holder) => Some(holder),
                None if !pg_sys::application_name.is_null() && *pg_sys::application_name != 0 => {
                    Some(pg_sys::Datum::from(pg_sys::cstring_to_text(pg_sys::application_name)))
                }
                None => None,
            };
            let holder = match holder {
                Some(holder) => Some(label(holder, "holder")?.0),
                None => None,
            };
            Ok(acquire(name, ttl, wait, holder)?.map(pg_sys::Datum::from))
        }
    }
}

v1_function! {
    /// `rowversion.lease_renew(name text, token bigint, ttl interval) RETURNS boolean`
    pg_finfo_rowversion_lease_renew,
    fn rowversion_lease_renew(args) -> LeaseError {
        // SAFETY: the arguments are (text, bigint, interval).
        unsafe {
            let name = Name::from_arg(args, 0)?;
            let token = required(args.int8(1), "token")?;
            let ttl = check_ttl(required(args.datum(2), "ttl")?)?;
            let ttl = DatumWithOid::new(ttl, pg_sys::INTERVALOID);
            Ok(Some(change(name, Statement::Renew, &[name.arg(), token.into(), ttl])?.into()))
        }
    }
}

v1_function! {
    /// `rowversion.lease_release(name text, token bigint) RETURNS boolean`
    pg_finfo_rowversion_lease_release,
    fn rowversion_lease_release(args) -> LeaseError {
        // SAFETY: the arguments are (text, bigint).
        let name = unsafe { Name::from_arg(args, 0)? };
        let token = required(args.int8(1), "token")?;
        Ok(Some(change(name, Statement::Release, &[name.arg(), token.into()])?.into()))
    }
}

v1_function! {
    /// `rowversion.lease_check(name text, token bigint) RETURNS void`: raises RV001 unless
    /// `token` holds the lease.
    pg_finfo_rowversion_lease_check,
    fn rowversion_lease_check(args) -> LeaseError {
        // SAFETY: the arguments are (text, bigint).
        let name = unsafe { Name::from_arg(args, 0)? };
        let token = required(args.int8(1), "token")?;
        check(name, token).map(|()| Some(pg_sys::Datum::from(0)))
    }
}

v1_function! {
    /// `rowversion.lease_break(name text) RETURNS boolean`: frees a live lease whatever its
    /// token, for its role and superusers.
    pg_finfo_rowversion_lease_break,
    fn rowversion_lease_break(args) -> LeaseError {
        // SAFETY: the argument is text.
        let name = unsafe { Name::from_arg(args, 0)? };
        Ok(Some(change(name, Statement::Break, &[name.arg()])?.into()))
    }
}
