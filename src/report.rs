//! Raising an `ERROR` that carries the table and column it is about.
//!
//! Drivers expose `schema_name`, `table_name` and `column_name` of an error (psycopg's
//! `diag.table_name`, JDBC's `getServerErrorMessage()`), and applications use them to map a
//! conflict to the entity that changed. pgrx's `ErrorReport` has no such fields, and an error
//! that travels through pgrx's panic machinery loses them, so errors raised by the trigger go
//! straight to Postgres' own `errstart`/`errtablecol`/`errfinish`, as a C trigger's `ereport`
//! would.

use std::ffi::{c_char, c_int, CString};

use pgrx::pg_sys;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::{PgLogLevel, PgSqlErrorCode};

/// What an error says: raised against a relation with [`raise_on_column`], or without
/// table fields by [`Report::raise`].
pub struct Report {
    pub code: PgSqlErrorCode,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl Report {
    /// Raises the report through pgrx, which unwinds Rust frames properly; for errors that
    /// name no table column.
    pub fn raise(self) -> ! {
        let mut report = ErrorReport::new(self.code, self.message, "rowversion");
        if let Some(detail) = self.detail {
            report = report.set_detail(detail);
        }
        if let Some(hint) = self.hint {
            report = report.set_hint(hint);
        }
        report.report(PgLogLevel::ERROR);
        unreachable!("ERROR returned")
    }
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

/// Copies `text` into the current memory context, so that no Rust value that needs dropping
/// is alive when `errfinish` jumps out of this frame.
fn palloc_cstring(text: &str) -> *mut c_char {
    // Interior NULs cannot come from identifiers or formatted numbers; drop them defensively.
    let owned = CString::new(text.replace('\0', "")).unwrap_or_default();
    // SAFETY: `owned` is a valid NUL-terminated string; pstrdup copies it into palloc'd memory
    // that Postgres frees with the memory context.
    unsafe { pg_sys::pstrdup(owned.as_ptr()) }
}

/// A report copied into palloc'd memory: nothing in it needs dropping.
struct PallocReport {
    code: c_int,
    message: *mut c_char,
    detail: *mut c_char,
    hint: *mut c_char,
}

impl From<Report> for PallocReport {
    fn from(report: Report) -> Self {
        Self {
            code: report.code as c_int,
            message: palloc_cstring(&report.message),
            detail: report.detail.as_deref().map_or(std::ptr::null_mut(), palloc_cstring),
            hint: report.hint.as_deref().map_or(std::ptr::null_mut(), palloc_cstring),
        }
    }
}

/// Raises `report` as an `ERROR` whose schema, table and column fields name `attnum` of `rel`.
///
/// # Safety
/// `rel` must be an open relation and `attnum` one of its columns. Callers must not hold
/// values with destructors on the stack: `errfinish` leaves through `siglongjmp`, as every
/// Postgres `ERROR` does, and only plain frames may be skipped that way.
pub unsafe fn raise_on_column(rel: pg_sys::Relation, attnum: i16, report: Report) -> ! {
    // `report` is consumed here, so its Strings are freed before the jump.
    let report = PallocReport::from(report);
    // SAFETY: every pointer is a palloc'd NUL-terminated string or NULL (checked); `rel` and
    // `attnum` are valid per this function's contract. `errstart` returns true for ERROR, and
    // `errfinish` does not return for ERROR.
    unsafe {
        if errstart(pgrx::PgLogLevel::ERROR as c_int, std::ptr::null()) {
            errcode(report.code);
            errmsg(c"%s".as_ptr(), report.message);
            if !report.detail.is_null() {
                errdetail(c"%s".as_ptr(), report.detail);
            }
            if !report.hint.is_null() {
                errhint(c"%s".as_ptr(), report.hint);
            }
            errtablecol(rel, c_int::from(attnum));
            errfinish(c"src/report.rs".as_ptr(), line!() as c_int, c"rowversion".as_ptr());
        }
        unreachable!("errfinish returned from an ERROR")
    }
}
