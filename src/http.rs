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
//! Under either, the rows the request's own statement updates are checked against its
//! `If-Match` header (`request.headers`, which PostgREST sets per request), one that does not
//! state the version as if it stated the header's, and a versioned row's new version goes out
//! as `ETag` (`response.headers`, which PostgREST reads in the same statement). Rows that a
//! trigger, a cascade or a function updates inside that statement are not the request's: the
//! executor hooks here count how deep statements nest.

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

static mut PREV_EXECUTOR_RUN: pg_sys::ExecutorRun_hook_type = None;
static mut PREV_EXECUTOR_FINISH: pg_sys::ExecutorFinish_hook_type = None;

thread_local! {
    /// How many statements are running, one inside the other (pg_stat_statements' nesting
    /// level): the request's own statement is 1; a trigger's, a cascade's or a function's
    /// statement inside it is deeper.
    static DEPTH: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    /// The depth at the start of each open subtransaction, restored when it is rolled back.
    static DEPTH_AT_SAVEPOINT: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
}

// Declared here, unguarded, on purpose: an ERROR inside the statement must leave through this
// hook's plain frame as it came (pgrx's guarded bindings would turn it into a Rust panic and
// raise it again without its schema, table and column fields). The level it leaves too high
// is restored when the transaction or the subtransaction that catches the ERROR aborts.
unsafe extern "C-unwind" {
    #[cfg(any(feature = "pg15", feature = "pg16"))]
    #[link_name = "standard_ExecutorRun"]
    fn standard_executor_run(
        query_desc: *mut pg_sys::QueryDesc,
        direction: pg_sys::ScanDirection::Type,
        count: u64,
        execute_once: bool,
    );
    #[cfg(not(any(feature = "pg15", feature = "pg16")))]
    #[link_name = "standard_ExecutorRun"]
    fn standard_executor_run(query_desc: *mut pg_sys::QueryDesc, direction: pg_sys::ScanDirection::Type, count: u64);
    #[link_name = "standard_ExecutorFinish"]
    fn standard_executor_finish(query_desc: *mut pg_sys::QueryDesc);
}

/// Runs `statement` one level deeper.
fn nested(statement: impl FnOnce()) {
    DEPTH.set(DEPTH.get() + 1);
    statement();
    DEPTH.set(DEPTH.get().saturating_sub(1));
}

#[cfg(any(feature = "pg15", feature = "pg16"))]
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn executor_run(
    query_desc: *mut pg_sys::QueryDesc,
    direction: pg_sys::ScanDirection::Type,
    count: u64,
    execute_once: bool,
) {
    // SAFETY: the executor's arguments, passed on (see the declarations above for ERRORs).
    nested(|| unsafe {
        match PREV_EXECUTOR_RUN {
            Some(previous) => previous(query_desc, direction, count, execute_once),
            None => standard_executor_run(query_desc, direction, count, execute_once),
        }
    });
}

#[cfg(not(any(feature = "pg15", feature = "pg16")))]
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn executor_run(
    query_desc: *mut pg_sys::QueryDesc,
    direction: pg_sys::ScanDirection::Type,
    count: u64,
) {
    // SAFETY: as above.
    nested(|| unsafe {
        match PREV_EXECUTOR_RUN {
            Some(previous) => previous(query_desc, direction, count),
            None => standard_executor_run(query_desc, direction, count),
        }
    });
}

/// ExecutorFinish fires the statement's AFTER triggers, whose statements are nested too.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn executor_finish(query_desc: *mut pg_sys::QueryDesc) {
    // SAFETY: as above.
    nested(|| unsafe {
        match PREV_EXECUTOR_FINISH {
            Some(previous) => previous(query_desc),
            None => standard_executor_finish(query_desc),
        }
    });
}

/// A transaction that aborts has no statement running any more.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn at_transaction_end(event: pg_sys::XactEvent::Type, _arg: *mut std::ffi::c_void) {
    use pg_sys::XactEvent::*;
    if matches!(event, XACT_EVENT_ABORT | XACT_EVENT_PARALLEL_ABORT) {
        DEPTH.set(0);
        DEPTH_AT_SAVEPOINT.with_borrow_mut(Vec::clear);
    }
}

/// A subtransaction that aborts (an ERROR caught by a PL/pgSQL exception block, a savepoint
/// rolled back) returns to the depth it started at.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn at_subtransaction_end(
    event: pg_sys::SubXactEvent::Type,
    _my_subid: pg_sys::SubTransactionId,
    _parent_subid: pg_sys::SubTransactionId,
    _arg: *mut std::ffi::c_void,
) {
    use pg_sys::SubXactEvent::*;
    match event {
        SUBXACT_EVENT_START_SUB => DEPTH_AT_SAVEPOINT.with_borrow_mut(|depths| depths.push(DEPTH.get())),
        SUBXACT_EVENT_COMMIT_SUB => {
            DEPTH_AT_SAVEPOINT.with_borrow_mut(Vec::pop);
        }
        SUBXACT_EVENT_ABORT_SUB => {
            if let Some(depth) = DEPTH_AT_SAVEPOINT.with_borrow_mut(Vec::pop) {
                DEPTH.set(depth);
            }
        }
        _ => {}
    }
}

/// Whether the row being versioned belongs to the request's own statement (or to a statement
/// that began before this library was loaded), not to one a trigger, a cascade or a function
/// runs inside it: If-Match and ETag are about the request's own rows.
fn request_statement() -> bool {
    DEPTH.get() <= 1
}

/// Defines the setting and the hooks that count statement nesting (from `_PG_init`).
pub fn install() {
    // SAFETY: _PG_init runs once per backend; the previous hooks are kept and called.
    unsafe {
        PREV_EXECUTOR_RUN = pg_sys::ExecutorRun_hook;
        pg_sys::ExecutorRun_hook = Some(executor_run);
        PREV_EXECUTOR_FINISH = pg_sys::ExecutorFinish_hook;
        pg_sys::ExecutorFinish_hook = Some(executor_finish);
        pg_sys::RegisterXactCallback(Some(at_transaction_end), std::ptr::null_mut());
        pg_sys::RegisterSubXactCallback(Some(at_subtransaction_end), std::ptr::null_mut());
    }
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

    /// The header's value, as PostgREST passes it. A weak or malformed tag, or one past the
    /// 16th, is left out: a list of only such tags matches nothing.
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
    if !active() || !request_statement() {
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
fn set_local(name: &CStr, value: &CStr) {
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
    if !active() || !request_statement() {
        return;
    }
    // Past the second row nothing changes any more: a bulk UPDATE pays one read per row.
    let rows = ETAG_ROWS.get();
    if rows >= 2 {
        return;
    }
    let rows = rows + 1;
    set_local(c"pg_rowversion.etag_rows", &std::ffi::CString::new(rows.to_string()).unwrap_or_default());
    // SAFETY: the setting's value is read in place (NULL when unset) and the new one built in
    // palloc'd memory before it replaces it: headers of any size stay off the Rust heap. Only
    // ASCII bytes are looked for, which every server encoding keeps as they are.
    unsafe {
        let current = pg_sys::GetConfigOption(c"response.headers".as_ptr(), true, false);
        let current = if current.is_null() { &[][..] } else { CStr::from_ptr(current).to_bytes() };
        let headers = pg_sys::makeStringInfo();
        let append = |bytes: &[u8]| pg_sys::appendBinaryStringInfo(headers, bytes.as_ptr().cast(), bytes.len() as i32);
        if rows == 1 {
            let entry = etag_entry(version);
            let trimmed = current.trim_ascii();
            match trimmed.strip_suffix(b"]") {
                None if trimmed.is_empty() => append(b"["),
                // Not a JSON array: PostgREST refuses it anyway; left as it is.
                None => return,
                Some(list) if list.trim_ascii() == b"[" => append(b"["),
                Some(list) => {
                    append(list);
                    append(b", ");
                }
            }
            append(entry.as_bytes());
            append(b"]");
        } else {
            let (before, after) = without_etag(current);
            append(before);
            append(after);
        }
        set_local(c"response.headers", CStr::from_ptr((*headers).data));
    }
}

/// `response.headers` without the ETag entry this module added to it: the text before it and
/// the text after it.
fn without_etag(headers: &[u8]) -> (&[u8], &[u8]) {
    let prefix: &[u8] = b"{\"ETag\": \"\\\"";
    let Some(start) = headers.windows(prefix.len()).position(|window| window == prefix) else {
        return (headers, &[]);
    };
    let Some(length) = headers[start..].iter().position(|&b| b == b'}').map(|end| end + 1) else {
        return (headers, &[]);
    };
    let (before, after) = (&headers[..start], &headers[start + length..]);
    match (before.strip_suffix(b", "), after.strip_prefix(b", ")) {
        (Some(before), _) => (before, after),
        (None, Some(after)) => (before, after),
        (None, None) => (before, after),
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
        let without = |headers: &str| {
            let (before, after) = without_etag(headers.as_bytes());
            String::from_utf8([before, after].concat()).unwrap()
        };
        let entry = etag_entry(-3);
        assert_eq!(without(&format!("[{entry}]")), "[]");
        assert_eq!(without(&format!(r#"[{{"A": "b"}}, {entry}]"#)), r#"[{"A": "b"}]"#);
        assert_eq!(without(&format!(r#"[{entry}, {{"A": "b"}}]"#)), r#"[{"A": "b"}]"#);
        assert_eq!(without(r#"[{"A": "b"}]"#), r#"[{"A": "b"}]"#);
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("a\"b\\c\nd\u{1}"), r#""a\"b\\c\nd\u0001""#);
        assert_eq!(json_string("\"3\""), r#""\"3\"""#);
    }
}
