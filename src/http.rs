//! HTTP layers over Postgres: PostgREST (and Supabase, which runs it) and the like.
//!
//! PostgREST up to v14 re-runs a transaction that fails with `40001` without limit
//! (hasql-transaction's retrying `transaction`, `Hasql/Transaction/Private/Sessions.hs`; v16
//! switched to `transactionNoRetry`, PostgREST#4222), and maps every `40xxx` to HTTP 500
//! (`pgErrorStatus` in `src/PostgREST/Error.hs`). A stale version fails the same way on every
//! run: one stale PATCH loops until something dies. `pg_rowversion.error_mapping` makes the
//! extension raise the errors a client causes in a form PostgREST turns into the HTTP status a
//! client expects, and that no version of it retries (it retries `40001` and `40P01` only):
//!
//! - `postgrest`: SQLSTATE `PGRST` with a JSON message (`code`, `message`, `details`, `hint`)
//!   and a JSON detail (`status`, `status_text`, `headers`), PostgREST v12 and later;
//! - `postgrest_pt`: SQLSTATE `PTnnn`, status nnn, every PostgREST since v0.4.4.
//!
//! Under either, an UPDATE is checked against the request's `If-Match` header (`request.headers`,
//! which PostgREST sets per request), one that does not state the version as if it stated the
//! header's, and a versioned
//! UPDATE sends the row's new version as `ETag` (`response.headers`, which PostgREST reads in
//! the same statement).

use std::ffi::CStr;

use pgrx::pg_sys;
use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting, PostgresGucEnum};

use crate::jsonb;

/// How the extension raises the errors a client causes.
#[derive(PostgresGucEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorMapping {
    /// The SQLSTATEs of the README (the default).
    #[name = c"sqlstate"]
    Sqlstate,
    /// `PGRST` errors that carry the HTTP status (PostgREST v12 and later).
    #[name = c"postgrest"]
    Postgrest,
    /// `PTnnn` errors, status nnn (every PostgREST since v0.4.4).
    #[name = c"postgrest_pt"]
    PostgrestPt,
}

/// `pg_rowversion.error_mapping`: a user setting, so that `ALTER ROLE authenticator SET` (or
/// `ALTER DATABASE ... SET`) applies it to the connections of an HTTP layer only, while every
/// other client keeps the SQLSTATEs.
static ERROR_MAPPING: GucSetting<ErrorMapping> = GucSetting::<ErrorMapping>::new(ErrorMapping::Sqlstate);

/// Defines the setting (from `_PG_init`).
pub fn install() {
    GucRegistry::define_enum_guc(
        c"pg_rowversion.error_mapping",
        c"How pg_rowversion raises the errors a client causes: sqlstate, postgrest or postgrest_pt.",
        c"sqlstate (the default) raises the SQLSTATEs of the documentation. postgrest raises SQLSTATE PGRST with the HTTP status in its detail (PostgREST v12 and later); postgrest_pt raises SQLSTATE PTnnn (any PostgREST). Under either, a version conflict is HTTP 409, never a retried 40001, If-Match is checked and ETag sent.",
        &ERROR_MAPPING,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"pg_rowversion.etag_rows",
        c"Internal: rows of versioned tables this transaction updated under a PostgREST mapping.",
        c"Set for the transaction by pg_rowversion itself: an ETag goes out when it is 1.",
        &ETAG_ROWS,
        0,
        i32::MAX,
        GucContext::Userset,
        GucFlags::NO_SHOW_ALL | GucFlags::NO_RESET_ALL | GucFlags::DISALLOW_IN_FILE,
    );
}

/// The error mapping in effect.
pub fn mapping() -> ErrorMapping {
    ERROR_MAPPING.get()
}

/// Whether an HTTP layer's mapping is in effect: If-Match is read and ETag sent. Off, a row
/// pays this one read.
pub fn active() -> bool {
    mapping() != ErrorMapping::Sqlstate
}

/// The reason phrase of the HTTP statuses the extension's errors map to (RFC 9110, RFC 6585).
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        404 => "Not Found",
        409 => "Conflict",
        412 => "Precondition Failed",
        428 => "Precondition Required",
        _ => "Error",
    }
}

/// `text` as a JSON string literal.
pub fn json_string(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            '\r' => quoted.push_str("\\r"),
            '\t' => quoted.push_str("\\t"),
            c if (c as u32) < 0x20 => quoted.push_str(&format!("\\u{:04x}", c as u32)),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// The most entity tags of one `If-Match` header that are compared; those past it never
/// match.
const MAX_TAGS: usize = 16;

/// What the request's `If-Match` header asks of the row being updated (RFC 9110, 13.1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IfMatch {
    /// No `If-Match` header (or no request).
    Absent,
    /// `If-Match: *`: any current row. States no version.
    Any,
    /// A list of entity tags: the versions of its strong tags that are numbers. A weak tag,
    /// or a strong one that is no version, never matches (If-Match compares strongly).
    Tags { versions: [i64; MAX_TAGS], count: usize },
}

impl IfMatch {
    /// Whether the precondition holds for a row at version `stored`.
    pub fn matches(self, stored: i64) -> bool {
        match self {
            Self::Absent | Self::Any => true,
            Self::Tags { versions, count } => versions[..count].contains(&stored),
        }
    }

    /// The header's value, as PostgREST passes it (`None`: the list is malformed or too
    /// long; then nothing matches).
    fn parse(value: &[u8]) -> Self {
        let value = value.trim_ascii();
        if value == b"*" {
            return Self::Any;
        }
        let mut tags = Self::Tags { versions: [0; MAX_TAGS], count: 0 };
        for tag in value.split(|&b| b == b',') {
            let tag = tag.trim_ascii();
            let Some(opaque) = tag.strip_prefix(b"\"").and_then(|t| t.strip_suffix(b"\"")) else {
                continue; // weak (W/"...") or malformed: never matches
            };
            // Strong comparison is byte for byte: only the ETag's own text (`"3"`, not `"03"`).
            let version = std::str::from_utf8(opaque)
                .ok()
                .and_then(|text| text.parse::<i64>().ok().filter(|version| version.to_string() == text));
            if let (Some(version), Self::Tags { versions, count }) = (version, &mut tags) {
                if *count < MAX_TAGS {
                    versions[*count] = version;
                    *count += 1;
                }
            }
        }
        tags
    }
}

/// The `If-Match` header of the current request, under a PostgREST mapping: from
/// `request.headers`, the JSON object of the request's headers with lower-case names that
/// PostgREST sets for the transaction.
pub fn if_match() -> IfMatch {
    if !active() {
        return IfMatch::Absent;
    }
    // SAFETY: a GUC lookup that returns NULL for an unset or unknown name; a non-empty value
    // is read as json by jsonb_in, whose errors (a value that is not JSON) are the caller's
    // statement's; the header's string is copied out before the document is freed.
    unsafe {
        let headers = pg_sys::GetConfigOption(c"request.headers".as_ptr(), true, false);
        if headers.is_null() || *headers == 0 {
            return IfMatch::Absent;
        }
        let document = pgrx::direct_function_call_as_datum(pg_sys::jsonb_in, &[Some(pg_sys::Datum::from(headers))]);
        let Some(document) = document else { return IfMatch::Absent };
        let document = jsonb::Container::from_datum(document);
        if !document.is_object() {
            return IfMatch::Absent;
        }
        match document.get_string("if-match") {
            Some(value) => IfMatch::parse(value),
            None => IfMatch::Absent,
        }
    }
}

/// `pg_rowversion.etag_rows`, internal: how many rows of versioned tables this transaction
/// updated under a PostgREST mapping, set for the transaction like `response.headers` is, so
/// that a rolled-back savepoint takes its rows back with the ETag they sent.
static ETAG_ROWS: GucSetting<i32> = GucSetting::<i32>::new(0);

/// Sets a setting for the rest of the transaction, as `SET LOCAL` does.
fn set_local(name: &CStr, value: &str) {
    let value = std::ffi::CString::new(value).unwrap_or_default();
    // SAFETY: NUL-terminated name and value; a placeholder or user setting, set with the
    // user's context, so no privilege is involved.
    unsafe {
        pg_sys::set_config_option(
            name.as_ptr(),
            value.as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_LOCAL,
            true,
            0,
            false,
        );
    }
}

/// The ETag entry of `response.headers` for `version`, as this module writes it.
fn etag_entry(version: i64) -> String {
    format!("{{\"ETag\": {}}}", json_string(&format!("\"{version}\"")))
}

/// A row of a versioned table was updated to `version`: under a PostgREST mapping its
/// version goes out as the response's `ETag` when it is the only row the request (its
/// transaction) versioned; a second row takes the ETag away again, since no one version
/// describes them. (The fast path counts a row twice when it re-evaluates it after a
/// concurrent update: then no ETag goes out.)
pub fn send_version(version: i64) {
    if !active() {
        return;
    }
    // Past the second row nothing changes any more: a bulk UPDATE pays one read per row.
    let rows = ETAG_ROWS.get();
    if rows >= 2 {
        return;
    }
    let rows = rows + 1;
    set_local(c"pg_rowversion.etag_rows", &rows.to_string());
    // SAFETY: a GUC lookup that returns NULL for an unset name, copied out at once.
    let current = unsafe {
        let current = pg_sys::GetConfigOption(c"response.headers".as_ptr(), true, false);
        if current.is_null() {
            String::new()
        } else {
            CStr::from_ptr(current).to_string_lossy().into_owned()
        }
    };
    let headers = if rows == 1 {
        let entry = etag_entry(version);
        match current.trim().strip_suffix(']') {
            None if current.trim().is_empty() => format!("[{entry}]"),
            // Not a JSON array: PostgREST refuses it anyway; left as it is.
            None => return,
            Some(list) if list.trim() == "[" => format!("[{entry}]"),
            Some(list) => format!("{list}, {entry}]"),
        }
    } else {
        without_etag(&current)
    };
    set_local(c"response.headers", &headers);
}

/// `response.headers` without the ETag entry this module added to it.
fn without_etag(headers: &str) -> String {
    let prefix = "{\"ETag\": \"\\\"";
    let Some(start) = headers.find(prefix) else { return headers.to_owned() };
    let Some(length) = headers[start..].find('}').map(|end| end + 1) else { return headers.to_owned() };
    let (before, after) = (&headers[..start], &headers[start + length..]);
    match (before.strip_suffix(", "), after.strip_prefix(", ")) {
        (Some(before), _) => format!("{before}{after}"),
        (None, Some(after)) => format!("{before}{after}"),
        (None, None) => format!("{before}{after}"),
    }
}

#[cfg(test)]
mod unit_tests {
    use super::{etag_entry, json_string, without_etag, IfMatch};

    #[test]
    fn if_match_reads_strong_numeric_tags_only() {
        assert_eq!(IfMatch::parse(b" * "), IfMatch::Any);
        let tags = IfMatch::parse(br#""3", W/"4", "x", "-7""#);
        assert!(tags.matches(3) && tags.matches(-7));
        assert!(!tags.matches(4), "a weak tag never matches");
        assert!(!IfMatch::parse(b"3").matches(3), "an unquoted tag is malformed");
        assert!(!IfMatch::parse(br#""03", "+3""#).matches(3), "strong comparison is byte for byte");
        assert!(!IfMatch::parse(b"").matches(1));
        assert!(IfMatch::Absent.matches(1));
    }

    #[test]
    fn the_etag_entry_is_taken_out_of_the_headers_it_was_added_to() {
        let entry = etag_entry(-3);
        assert_eq!(without_etag(&format!("[{entry}]")), "[]");
        assert_eq!(without_etag(&format!(r#"[{{"A": "b"}}, {entry}]"#)), r#"[{"A": "b"}]"#);
        assert_eq!(without_etag(&format!(r#"[{entry}, {{"A": "b"}}]"#)), r#"[{"A": "b"}]"#);
        assert_eq!(without_etag(r#"[{"A": "b"}]"#), r#"[{"A": "b"}]"#);
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("a\"b\\c\nd\u{1}"), r#""a\"b\\c\nd\u0001""#);
        assert_eq!(json_string("\"3\""), r#""\"3\"""#);
    }
}
