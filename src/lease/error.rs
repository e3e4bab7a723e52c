//! The errors of the lease functions, one enum for the whole module.

use std::ffi::c_int;

use pgrx::PgSqlErrorCode;

use crate::report::{sqlstate, Report};

/// The SQLSTATE of a fenced-off holder: its own class, not 40001, because it must stop, not
/// retry.
const LEASE_NOT_HELD: &[u8; 5] = b"RV001";

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("{0} must not be NULL")]
    NullArgument(&'static str),
    #[error("lease name must not be empty")]
    EmptyName,
    #[error("lease {what} is too long")]
    TooLong { what: &'static str, bytes: usize, limit: usize },
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
            LeaseError::TooLong { bytes, limit, .. } => (
                ERRCODE_INVALID_PARAMETER_VALUE as c_int,
                Some(format!("It has {bytes} bytes; at most {limit} are allowed.")),
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

pub type Result<T> = std::result::Result<T, LeaseError>;
