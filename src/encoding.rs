//! Text between Rust, which works in UTF-8, and the database, which keeps names and jsonb
//! strings in its own encoding (LATIN1, EUC_JP, ...).
//!
//! Names read from the catalogs arrive as UTF-8 (the catalog queries select
//! `convert_to(name, 'UTF8')`); SQL texts and error messages go back through [`to_server`];
//! jsonb strings, compared with column names, are compared in the database encoding. In a
//! UTF-8 database every conversion here returns its input.

use std::ffi::{c_char, CStr, CString};

use pgrx::pg_sys;

/// `text` in the database encoding, for SPI. SQL texts are built from names that came from the
/// database, so they convert.
pub fn to_server(text: &str) -> CString {
    let utf8 = CString::new(text.replace('\0', "")).unwrap_or_default();
    let converted = palloc_in_server_encoding(&utf8);
    // SAFETY: `converted` is a palloc'd NUL-terminated string.
    unsafe { CStr::from_ptr(converted) }.to_owned()
}

/// A palloc'd copy of UTF-8 `text` in the database encoding.
pub fn palloc_in_server_encoding(text: &CStr) -> *mut c_char {
    let len = text.to_bytes().len() as i32;
    // SAFETY: `text` is NUL-terminated and `len` long; pg_any_to_server returns either its
    // input or a palloc'd converted copy, and raises 22021 for text the database cannot hold.
    unsafe {
        let converted = pg_sys::pg_any_to_server(text.as_ptr(), len, pg_sys::pg_enc::PG_UTF8 as i32);
        if std::ptr::eq(converted, text.as_ptr()) {
            pg_sys::pstrdup(converted)
        } else {
            converted
        }
    }
}

/// `len` bytes of database-encoded text as UTF-8, for messages: bytes that are not UTF-8 in
/// an SQL_ASCII database (which has no encoding to convert from) are replaced.
///
/// # Safety
/// `text` must point to `len` readable bytes.
pub unsafe fn from_server_lossy(text: *const c_char, len: usize) -> String {
    // SAFETY: forwarded from the caller; pg_server_to_any returns a palloc'd NUL-terminated
    // converted copy when the encodings differ.
    unsafe {
        if len == 0 {
            return String::new();
        }
        let encoding = pg_sys::GetDatabaseEncoding();
        let bytes = if encoding == pg_sys::pg_enc::PG_UTF8 as i32 || encoding == pg_sys::pg_enc::PG_SQL_ASCII as i32 {
            std::slice::from_raw_parts(text.cast::<u8>(), len)
        } else {
            CStr::from_ptr(pg_sys::pg_server_to_any(text, len as i32, pg_sys::pg_enc::PG_UTF8 as i32)).to_bytes()
        };
        String::from_utf8_lossy(bytes).into_owned()
    }
}

/// At most `max_chars` characters of `len` bytes of database-encoded text, as UTF-8 for a
/// message, with `...` when cut; cut before it is copied, so a huge value costs nothing here.
///
/// # Safety
/// `text` must point to `len` readable bytes of valid text in the database encoding.
pub unsafe fn clipped_from_server(text: *const c_char, len: usize, max_chars: usize) -> String {
    // SAFETY: forwarded from the caller; pg_mbcharcliplen cuts at a character boundary.
    unsafe {
        let kept = pg_sys::pg_mbcharcliplen(text, len as i32, max_chars as i32) as usize;
        let mut shown = from_server_lossy(text, kept);
        if kept < len {
            shown.push_str("...");
        }
        shown
    }
}

/// A NUL-terminated database-encoded string as UTF-8, for messages.
///
/// # Safety
/// `text` must be a valid NUL-terminated string.
pub unsafe fn cstr_from_server_lossy(text: *const c_char) -> String {
    // SAFETY: forwarded from the caller.
    unsafe { from_server_lossy(text, CStr::from_ptr(text).to_bytes().len()) }
}

/// A NUL-terminated database-encoded string as UTF-8, exactly: a name that is to be used
/// again, in SQL. Raises 22021 for bytes that are not UTF-8 in an SQL_ASCII database.
///
/// # Safety
/// `text` must be a valid NUL-terminated string.
pub unsafe fn cstr_from_server(text: *const c_char) -> String {
    // SAFETY: forwarded from the caller; pg_server_to_any returns its input or a palloc'd
    // NUL-terminated converted copy, and verifies what it cannot convert.
    unsafe {
        let len = CStr::from_ptr(text).to_bytes().len();
        if len == 0 {
            return String::new();
        }
        let converted = pg_sys::pg_server_to_any(text, len as i32, pg_sys::pg_enc::PG_UTF8 as i32);
        CStr::from_ptr(converted).to_string_lossy().into_owned()
    }
}
