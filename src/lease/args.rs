//! The arguments of the lease functions, checked before any statement runs: names and
//! holder labels, ttls and waits.

use std::ffi::c_int;

use pgrx::datum::DatumWithOid;
use pgrx::pg_sys;

use super::error::{LeaseError, Result};
use crate::encoding;
use crate::fmgr::Args;

/// Longer names and holder labels are refused: a name is a key of a btree index.
const MAX_NAME_BYTES: usize = 1024;
/// At most this many characters of a name appear in a message.
const NAME_CHARS_SHOWN: usize = 64;
const USECS_PER_DAY: i128 = 86_400_000_000;

/// A lease name argument: non-empty text of at most [`MAX_NAME_BYTES`], detoasted once.
#[derive(Clone, Copy)]
pub struct Name {
    datum: pg_sys::Datum,
    bytes: *const u8,
    len: usize,
}

impl Name {
    /// # Safety
    /// Argument `n` of the call must be `text`.
    pub unsafe fn from_arg(args: Args, n: usize) -> Result<Self> {
        let datum = args.datum(n).ok_or(LeaseError::NullArgument("name"))?;
        // SAFETY: forwarded: a text Datum.
        let (datum, bytes, len) = unsafe { label(datum, "name")? };
        if len == 0 {
            return Err(LeaseError::EmptyName);
        }
        Ok(Self { datum, bytes, len })
    }

    pub fn arg(&self) -> DatumWithOid<'static> {
        // SAFETY: a text Datum that lives for the rest of this call.
        unsafe { DatumWithOid::new(self.datum, pg_sys::TEXTOID) }
    }

    /// The name for a message, cut to its first characters.
    pub fn shown(&self) -> String {
        // SAFETY: `bytes` holds `len` bytes of text in the database encoding.
        unsafe { encoding::clipped_from_server(self.bytes.cast(), self.len, NAME_CHARS_SHOWN) }
    }

    /// `hashtext(name)` for a deterministic collation, which the view computes too.
    pub fn hash(&self) -> u32 {
        // SAFETY: `bytes` holds `len` bytes; hash_bytes only reads them.
        unsafe { hash_bytes(self.bytes, self.len as c_int) }
    }
}

/// A lease name or holder label: the text detoasted once (the Datum to pass on, and its
/// bytes), at most [`MAX_NAME_BYTES`] long.
///
/// # Safety
/// `datum` must be a `text` Datum of the current call; the copy lives for the rest of it.
pub unsafe fn label(datum: pg_sys::Datum, what: &'static str) -> Result<(pg_sys::Datum, *const u8, usize)> {
    // SAFETY: forwarded from the caller.
    let (text, bytes, len) = unsafe {
        let text = pg_sys::pg_detoast_datum_packed(datum.cast_mut_ptr());
        (text, pgrx::varlena::vardata_any(text) as *const u8, pgrx::varlena::varsize_any_exhdr(text))
    };
    if len > MAX_NAME_BYTES {
        return Err(LeaseError::TooLong { what, bytes: len, limit: MAX_NAME_BYTES });
    }
    Ok((pg_sys::Datum::from(text), bytes, len))
}

unsafe extern "C-unwind" {
    /// common/hashfn.h: `hash_any`'s body (an inline wrapper there), which `hashtext` uses.
    fn hash_bytes(k: *const u8, keylen: c_int) -> u32;
}

/// A required argument.
pub fn required<T>(value: Option<T>, name: &'static str) -> Result<T> {
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
pub unsafe fn check_ttl(ttl: pg_sys::Datum) -> Result<pg_sys::Datum> {
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
pub unsafe fn wait_deadline(wait: pg_sys::Datum, now: pg_sys::TimestampTz) -> Result<pg_sys::TimestampTz> {
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
