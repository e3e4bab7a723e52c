//! `rowversion.enable(..., conflicts => 'observe')`: a write that would be refused for a
//! versioning reason (a stale version, or none in strict mode) goes through as a lenient one
//! would, is counted ([`crate::stats`]) and is written to the server log as the error it
//! replaces, with the application's name and whether `merge` would have accepted it.
//!
//! A bulk UPDATE of stale rows would write a line per row, so each session logs at most
//! `pg_rowversion.observe_log_rate` lines per second (a token bucket holding one second's
//! worth): the rest are counted, not logged, and the next line logged says how many were
//! left out. The counters see every one.

use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};

use crate::encoding;
use crate::report::Report;

/// `pg_rowversion.observe_log_rate`: lines per second and session; 0 logs none.
static OBSERVE_LOG_RATE: GucSetting<i32> = GucSetting::<i32>::new(10);

/// The session's token bucket: tokens left, when it was last filled, lines left out since the
/// last line logged. Backends are single-threaded.
static mut TOKENS: f64 = 0.0;
static mut FILLED_AT: i64 = 0;
static mut LEFT_OUT: u64 = 0;

/// Defines the setting (from `_PG_init`).
pub fn install() {
    GucRegistry::define_int_guc(
        c"pg_rowversion.observe_log_rate",
        c"Server-log lines per second and session for writes let through by conflicts => 'observe'.",
        c"A bulk UPDATE of stale rows would log a line per row: beyond this rate lines are left out (the next line logged says how many), while rowversion.conflict_stats counts every one. 0 logs none.",
        &OBSERVE_LOG_RATE,
        0,
        1_000_000,
        GucContext::Suset,
        GucFlags::default(),
    );
}

/// Whether the rate leaves room for one more line now.
fn take_token() -> bool {
    let rate = f64::from(OBSERVE_LOG_RATE.get());
    // SAFETY: backend-local state (Postgres backends are single-threaded); a plain clock read.
    unsafe {
        let now = pgrx::pg_sys::GetCurrentTimestamp();
        let elapsed = (now - FILLED_AT) as f64 / 1e6;
        FILLED_AT = now;
        TOKENS = (TOKENS + elapsed.max(0.0) * rate).min(rate);
        if TOKENS >= 1.0 {
            TOKENS -= 1.0;
            true
        } else {
            LEFT_OUT += 1;
            false
        }
    }
}

/// Logs the error a write would have raised (built by `refusal` only when the line is
/// logged) as let through; `mergeable`: whether `merge` would have accepted it (`None`: not a
/// stale version).
pub fn let_through(mergeable: Option<bool>, refusal: impl FnOnce() -> Report) {
    if !take_token() {
        return;
    }
    let refusal = refusal();
    let mut detail = refusal.detail.clone().map_or_else(String::new, |detail| detail + " ");
    detail.push_str("Let through: the table is in conflicts => 'observe' mode");
    match mergeable {
        Some(true) => detail.push_str("; conflicts => 'merge' would have accepted it."),
        Some(false) => detail.push_str("; conflicts => 'merge' would have refused it too."),
        None => detail.push('.'),
    }
    // SAFETY: application_name is a GUC's NUL-terminated string (at most NAMEDATALEN - 1
    // bytes), or NULL; backend-local state.
    unsafe {
        let application = pgrx::pg_sys::application_name;
        if !application.is_null() && *application != 0 {
            let name = encoding::cstr_from_server_lossy(application);
            detail.push_str(&format!(" Application: \"{name}\"."));
        }
        let left_out = LEFT_OUT;
        if left_out > 0 {
            detail.push_str(&format!(
                " {left_out} more let through in this session were not logged (pg_rowversion.observe_log_rate)."
            ));
            LEFT_OUT = 0;
        }
    }
    Report { message: format!("let through: {}", refusal.message), detail: Some(detail), hint: None, ..refusal }.log();
}
