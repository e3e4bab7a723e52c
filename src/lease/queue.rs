//! The queue of a lease's waiters, kept in the lock manager: their advisory lock tags, who is
//! the head, and the transaction callbacks that set the head's latch (see "Waiting" in
//! [`super`]).

use std::cell::RefCell;
use std::ffi::c_int;

use pgrx::pg_sys;
use pgrx::prelude::*;

/// The fourth field of a waiter's advisory lock tag: Postgres' own advisory locks use 1 (one
/// bigint key) and 2 (two integer keys); 21078 is "RV".
pub const WAITER_TAG: u16 = 21078;
/// ... and of the tag (database, hash, 0) every waiter of a lease also holds, so that a
/// transaction that touched the lease can tell with one lock-table lookup that nobody waits
/// (measured: scanning the whole lock table at every commit halved the pairs per second).
pub const QUEUE_TAG: u16 = 21079;
/// A transaction that touched more leases than this wakes the head waiter of every lease.
const MAX_LEASES_TO_WAKE: usize = 64;

thread_local! {
    /// Hashes of the leases this transaction touched, whose head waiters it wakes when it
    /// ends; `None` once there were too many to list (then it wakes every lease's head).
    static TO_WAKE: RefCell<Option<Vec<u32>>> = const { RefCell::new(Some(Vec::new())) };
    /// The head waiters found at pre-commit, whose latches the commit sets.
    static LATCHES_AT_COMMIT: RefCell<Vec<c_int>> = const { RefCell::new(Vec::new()) };
    static CALLBACK_REGISTERED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Set while the subtransaction of an attempt to take a lease is rolled back (see
    /// [`ending_attempt`]): that rollback wakes nobody.
    static IN_ATTEMPT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Remembers that this transaction touched the lease with this hash: when it ends, the lease's
/// head waiter is woken.
pub fn wake_at_end(hash: u32) {
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

pub fn waiter_tag(hash: u32, ticket: u32, kind: u16) -> pg_sys::LOCKTAG {
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

/// A waiter's place in the queue of a lease: share locks on the lease's queue tag and on a
/// waiter tag of its own, with its ticket.
pub struct Place {
    hash: u32,
    ticket: u32,
    tags: [pg_sys::LOCKTAG; 2],
}

impl Place {
    /// Takes the place of `ticket` in the queue of the lease with this hash.
    pub fn enter(hash: u32, ticket: u32) -> Self {
        let tags = [waiter_tag(hash, 0, QUEUE_TAG), waiter_tag(hash, ticket, WAITER_TAG)];
        // SAFETY: share locks on tags that nobody locks in a conflicting mode (the queue tag is
        // only looked up, by GetLockConflicts): granted at once, held until released by
        // `leave` or, on an error, by the transaction's abort.
        unsafe {
            for tag in &tags {
                pg_sys::LockAcquire(tag, pg_sys::ShareLock as pg_sys::LOCKMODE, false, true);
            }
        }
        Self { hash, ticket, tags }
    }

    /// Whether no other session waits for the lease with an older ticket.
    pub fn is_head(&self) -> bool {
        let mut head = true;
        for_each_waiter(|h, t, _| head &= !(h == self.hash && earlier(t, self.ticket)));
        head
    }

    /// Leaves the queue; a waiter that did not take the lease wakes the next one, which takes
    /// over watching the expiry now, not when this transaction ends.
    pub fn leave(self, took_lease: bool) {
        // SAFETY: the locks taken by `enter`.
        unsafe {
            for tag in &self.tags {
                pg_sys::LockRelease(tag, pg_sys::ShareLock as pg_sys::LOCKMODE, false);
            }
        }
        if !took_lease {
            set_latches(&heads(Some(&[self.hash])));
        }
    }
}

/// Runs `end`, which ends the subtransaction of an attempt to take a lease, `rolled_back` or
/// released: the rollback of an attempt wakes nobody, since it changed nothing a waiter could
/// take.
pub fn ending_attempt(rolled_back: bool, end: impl FnOnce()) {
    IN_ATTEMPT.set(rolled_back);
    end();
    IN_ATTEMPT.set(false);
}
