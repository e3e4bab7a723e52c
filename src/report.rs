//! Raising an `ERROR` (and logging a report): the one way every error of the extension leaves it.
//!
//! Drivers expose `schema_name`, `table_name` and `column_name` of an error (psycopg's
//! `diag.table_name`, JDBC's `getServerErrorMessage()`), and applications use them to map a
//! conflict to the entity that changed. pgrx's `ErrorReport` has no such fields, an error that
//! travels through pgrx's panic machinery loses them, and pgrx passes the text on as UTF-8
//! whatever the database's encoding. So errors go straight to Postgres' own
//! `errstart`/`errtablecol`/`errfinish`, as a C function's `ereport` would, with their text
//! converted to the database encoding first.

use std::ffi::{c_char, c_int, CString};

use pgrx::pg_sys;
use pgrx::PgSqlErrorCode;

use crate::encoding;
use crate::http::{self, ErrorMapping};

/// What an error says, and optionally the column of a table it is about.
pub struct Report {
    /// The SQLSTATE, as Postgres encodes it (`MAKE_SQLSTATE`).
    pub code: c_int,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
    /// (table, attnum): sets the error's schema, table and column fields.
    pub column: Option<(pg_sys::Oid, i16)>,
    /// The HTTP status of an error a client caused, under an HTTP error mapping
    /// (`pg_rowversion.error_mapping`, [`crate::http`]); `None` keeps the SQLSTATE there too.
    pub status: Option<u16>,
}

impl Report {
    pub fn new(code: PgSqlErrorCode, message: String, detail: Option<String>, hint: Option<String>) -> Self {
        Self::with_code(code as c_int, message, detail, hint)
    }

    /// A report with a SQLSTATE of the extension's own (see [`sqlstate`]).
    pub fn with_code(code: c_int, message: String, detail: Option<String>, hint: Option<String>) -> Self {
        Self { code, message, detail, hint, column: None, status: None }
    }

    /// The same report, naming column `attnum` of `relid` in its error fields.
    pub fn on_column(self, relid: pg_sys::Oid, attnum: i16) -> Self {
        Self { column: Some((relid, attnum)), ..self }
    }

    /// The same report, answered with HTTP `status` under an HTTP error mapping.
    pub fn with_status(self, status: u16) -> Self {
        Self { status: Some(status), ..self }
    }

    /// The report as raised under the error mapping in effect (see [`crate::http`]).
    fn mapped(self) -> Self {
        let Some(status) = self.status else { return self };
        match http::mapping() {
            ErrorMapping::Sqlstate => self,
            ErrorMapping::PostgrestPt => {
                let code = format!("PT{status}");
                Self { code: sqlstate(code.as_bytes().try_into().unwrap_or(b"PT400")), ..self }
            }
            // PostgREST's RAISE 'PGRST': the body (its `code` the SQLSTATE the error has
            // without a mapping) in the message, the status in the detail; it ignores the hint.
            ErrorMapping::Postgrest => {
                let optional = |text: &Option<String>| text.as_deref().map_or("null".into(), http::json_string);
                let message = format!(
                    "{{\"code\": {}, \"message\": {}, \"details\": {}, \"hint\": {}}}",
                    http::json_string(&unpacked_sqlstate(self.code)),
                    http::json_string(&self.message),
                    optional(&self.detail),
                    optional(&self.hint),
                );
                let detail = format!(
                    "{{\"status\": {status}, \"status_text\": {}, \"headers\": {{}}}}",
                    http::json_string(http::reason_phrase(status))
                );
                Self { code: sqlstate(b"PGRST"), message, detail: Some(detail), hint: None, ..self }
            }
        }
    }

    /// Raises the report as an `ERROR`, reporting the caller's source location (through
    /// `#[track_caller]` functions such as [`crate::fmgr::finish`]: the entry point's).
    ///
    /// Callers must not hold values with destructors on the stack: `errfinish` leaves through
    /// `siglongjmp`, as every Postgres `ERROR` does, and only plain frames may be skipped that
    /// way. [`crate::fmgr::finish`] and the trigger call it from such frames. A table named
    /// in `column` must be open or locked by this transaction.
    #[track_caller]
    pub fn raise(self) -> ! {
        // `self` is consumed here, so its Strings are freed before the jump.
        PallocReport::from(self.mapped()).emit(pgrx::PgLogLevel::ERROR, std::panic::Location::caller());
        unreachable!("errfinish returned from an ERROR")
    }

    /// Writes the report to the server log at level `LOG`, with its SQLSTATE and its table
    /// and column fields, and returns (a client sees it only under `client_min_messages =
    /// log`). Not mapped for HTTP: the log keeps the SQLSTATE. A table named in `column` must
    /// be open or locked by this transaction.
    #[track_caller]
    pub fn log(self) {
        PallocReport::from(self).emit(pgrx::PgLogLevel::LOG, std::panic::Location::caller());
    }

    /// Sends the report as a `WARNING` (to the client and the log) and returns. Not mapped for
    /// HTTP.
    #[track_caller]
    pub fn warn(self) {
        PallocReport::from(self).emit(pgrx::PgLogLevel::WARNING, std::panic::Location::caller());
    }
}

/// A five-character SQLSTATE encoded as Postgres' `MAKE_SQLSTATE` does.
pub const fn sqlstate(code: &[u8; 5]) -> c_int {
    let mut encoded = 0;
    let mut i = 0;
    while i < 5 {
        encoded |= ((code[i].wrapping_sub(b'0') & 0x3F) as c_int) << (6 * i);
        i += 1;
    }
    encoded
}

/// The five characters of a SQLSTATE encoded by [`sqlstate`].
fn unpacked_sqlstate(code: c_int) -> String {
    (0..5).map(|i| char::from((((code >> (6 * i)) & 0x3F) as u8).wrapping_add(b'0'))).collect()
}

/// Sends a NOTICE, in the database encoding.
#[track_caller]
pub fn notice(message: &str) {
    let report = Report::new(PgSqlErrorCode::ERRCODE_SUCCESSFUL_COMPLETION, message.into(), None, None);
    PallocReport::from(report).emit(pgrx::PgLogLevel::NOTICE, std::panic::Location::caller());
}

// Declared here, unguarded, on purpose: pgrx's guarded bindings would turn the `ERROR` into a
// Rust panic and re-raise it without the table and column fields.
unsafe extern "C-unwind" {
    fn errstart(elevel: c_int, domain: *const c_char) -> bool;
    fn errcode(sqlerrcode: c_int) -> c_int;
    fn errmsg(fmt: *const c_char, ...) -> c_int;
    fn errdetail(fmt: *const c_char, ...) -> c_int;
    fn errhint(fmt: *const c_char, ...) -> c_int;
    fn errtablecol(rel: pg_sys::Relation, attnum: c_int) -> c_int;
    fn errfinish(filename: *const c_char, lineno: c_int, funcname: *const c_char);
}

/// Copies `text` into the current memory context, in the database encoding, so that no Rust
/// value that needs dropping is alive when `errfinish` jumps out.
fn palloc_cstring(text: &str) -> *mut c_char {
    // Interior NULs cannot come from identifiers, JSON text or formatted numbers; drop them
    // defensively.
    let owned = CString::new(text.replace('\0', "")).unwrap_or_default();
    encoding::palloc_in_server_encoding(&owned)
}

/// A report copied into palloc'd memory: nothing in it needs dropping.
struct PallocReport {
    code: c_int,
    message: *mut c_char,
    detail: *mut c_char,
    hint: *mut c_char,
    column: Option<(pg_sys::Oid, i16)>,
}

impl PallocReport {
    /// `ereport(level, ...)` from `location`: for ERROR it does not return.
    fn emit(self, level: pgrx::PgLogLevel, location: &std::panic::Location) {
        let file = palloc_cstring(location.file());
        // SAFETY: every pointer is a palloc'd NUL-terminated string or NULL (checked); the
        // relation is open or locked by this transaction (the callers' contract), so opening
        // it with NoLock is safe. `errstart` returns false when nobody would see the report
        // (never for ERROR); `errfinish` returns below ERROR and jumps out at ERROR.
        unsafe {
            if errstart(level as c_int, std::ptr::null()) {
                errcode(self.code);
                errmsg(c"%s".as_ptr(), self.message);
                if !self.detail.is_null() {
                    errdetail(c"%s".as_ptr(), self.detail);
                }
                if !self.hint.is_null() {
                    errhint(c"%s".as_ptr(), self.hint);
                }
                if let Some((relid, attnum)) = self.column {
                    let rel = pg_sys::relation_open(relid, pg_sys::NoLock as pg_sys::LOCKMODE);
                    errtablecol(rel, c_int::from(attnum));
                    pg_sys::relation_close(rel, pg_sys::NoLock as pg_sys::LOCKMODE);
                }
                // Below ERROR, errfinish ends with CHECK_FOR_INTERRUPTS(), whose ERROR (a
                // cancel, statement_timeout) would jump over the caller's Rust frames: held
                // until the caller returns to Postgres, which then sees the interrupt.
                let below_error = (level as c_int) < pgrx::PgLogLevel::ERROR as c_int;
                if below_error {
                    pg_sys::InterruptHoldoffCount += 1;
                }
                errfinish(file, location.line() as c_int, c"pg_rowversion".as_ptr());
                if below_error {
                    pg_sys::InterruptHoldoffCount -= 1;
                }
            }
        }
    }
}

impl From<Report> for PallocReport {
    fn from(report: Report) -> Self {
        Self {
            code: report.code,
            message: palloc_cstring(&report.message),
            detail: report.detail.as_deref().map_or(std::ptr::null_mut(), palloc_cstring),
            hint: report.hint.as_deref().map_or(std::ptr::null_mut(), palloc_cstring),
            column: report.column,
        }
    }
}
