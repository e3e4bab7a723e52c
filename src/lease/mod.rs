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
//! hash of the name, ticket, [`queue::WAITER_TAG`]), taken from the lock manager without waiting, so
//! that waiters are visible (`pg_locks`, the `waiting` column of `rowversion.leases`) and
//! ordered (tickets come from a sequence), and one on the lease's queue tag ([`queue::QUEUE_TAG`]).
//! It sleeps on its latch. The waiter with the oldest
//! ticket, the head, sleeps until the lease expires; the others until they are woken. Every
//! transaction that touched a lease wakes that lease's head when it commits or aborts (a
//! transaction callback), when its changes and row locks are visible to the head; a waiter
//! that gives up wakes the next one. Every waiter also re-reads the lease at least once a
//! second, so a lost wake-up costs at most that.
//!
//! Files: the entry points here; [`args`], the checks of their arguments; [`statements`], what
//! they run on the lease table; [`queue`], the waiters; [`error`], the errors of them all.

mod args;
mod error;
pub mod queue;
mod statements;

use std::ffi::c_int;

use pgrx::datum::DatumWithOid;
use pgrx::pg_sys;

use crate::fmgr::v1_function;
use args::{check_ttl, label, required, wait_deadline, Name};
use error::{LeaseError, Result};
use queue::{ending_attempt, wake_at_end, Place};
use statements::{as_lease_owner, next_ticket, prepared, try_take, Attempt, Statement};

/// A waiter re-reads the lease at least this often, whatever it was told.
const RECHECK_US: i64 = 1_000_000;

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
            ending_attempt(!keep, || {
                if keep {
                    pg_sys::ReleaseCurrentSubTransaction();
                } else {
                    pg_sys::RollbackAndReleaseCurrentSubTransaction();
                }
            });
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
    let place = Place::enter(name.hash(), ticket);
    let mut last_try = now;
    let outcome = loop {
        pgrx::check_for_interrupts!();
        // SAFETY: a plain read of the clock.
        let now = unsafe { pg_sys::GetCurrentTimestamp() };
        let mut wake_at = deadline.min(lock_deadline).min(now.saturating_add(RECHECK_US));
        let head = place.is_head();
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
    place.leave(matches!(outcome, Ok(Some(_))));
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
    declared ["lease_acquire(text, interval, interval, text) -> bigint"],
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
    declared ["lease_renew(text, bigint, interval) -> boolean"],
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
    declared ["lease_release(text, bigint) -> boolean"],
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
    declared ["lease_check(text, bigint) -> void"],
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
    declared ["lease_break(text) -> boolean"],
    fn rowversion_lease_break(args) -> LeaseError {
        // SAFETY: the argument is text.
        let name = unsafe { Name::from_arg(args, 0)? };
        Ok(Some(change(name, Statement::Break, &[name.arg()])?.into()))
    }
}
