//! The primary key of a row, as a jsonb object: `{"id": 1}`, or `{"a": 1, "b": "x"}` for a
//! composite key. Shared by the checked functions and `row_locks()`, which find a row the
//! same way.

use pgrx::datum::DatumWithOid;
use pgrx::pg_sys;
use pgrx::PgSqlErrorCode;

use crate::encoding;
use crate::jsonb::Container;
use crate::report::Report;
use crate::table::Table;

/// At most this many names of a key's extra fields, and this many characters of a key or of
/// one name, appear in a message.
const NAMES_SHOWN: usize = 10;
pub const KEY_CHARS_SHOWN: usize = 200;
const NAME_CHARS_SHOWN: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("table \"{0}\" has no primary key")]
    NoPrimaryKey(String),
    #[error("key must be a JSON object")]
    NotAnObject,
    #[error("key does not match the primary key of table \"{table}\"")]
    KeyMismatch { table: String, missing: Vec<String>, extra: Vec<String>, more: usize, primary_key: Vec<String> },
}

impl From<KeyError> for Report {
    fn from(error: KeyError) -> Self {
        let names = |columns: &[String]| columns.iter().map(|c| format!("\"{c}\"")).collect::<Vec<_>>().join(", ");
        let (code, detail) = match &error {
            KeyError::NoPrimaryKey(_) => (
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                Some("Checked updates find rows by their primary key.".into()),
            ),
            KeyError::NotAnObject => (PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, None),
            KeyError::KeyMismatch { missing, extra, more, primary_key, .. } => {
                let mut detail = String::new();
                if !missing.is_empty() {
                    detail.push_str(&format!("Missing: {}. ", names(missing)));
                }
                if !extra.is_empty() {
                    let more = if *more > 0 { format!(" and {more} more") } else { String::new() };
                    detail.push_str(&format!("Not in the primary key: {}{more}. ", names(extra)));
                }
                detail.push_str(&format!("The primary key is ({}).", names(primary_key)));
                (PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, Some(detail))
            }
        };
        Report::new(code, error.to_string(), detail, None)
    }
}

/// A jsonb name (a key of `key` or `changes`) for a message, cut to its first characters
/// before it is copied.
pub fn shown_name(name: &[u8]) -> String {
    // SAFETY: a jsonb key: readable bytes of valid text in the database encoding.
    unsafe { encoding::clipped_from_server(name.as_ptr().cast(), name.len(), NAME_CHARS_SHOWN) }
}

/// Checks that `key` names exactly the primary key columns.
pub fn check_key(table: &Table, key: Container) -> Result<(), KeyError> {
    if table.primary_key.is_empty() {
        return Err(KeyError::NoPrimaryKey(table.relation.display.clone()));
    }
    if !key.is_object() {
        return Err(KeyError::NotAnObject);
    }
    // A primary key has at most INDEX_MAX_KEYS (32) columns: one bit each.
    let mut seen = 0u64;
    let (mut extra, mut more) = (Vec::new(), 0);
    key.for_each_key(|name| {
        let position = table.column(name).and_then(|c| table.primary_key.iter().position(|k| k.attnum == c.attnum));
        match position {
            Some(position) => seen |= 1 << position,
            None if extra.len() < NAMES_SHOWN => extra.push(shown_name(name)),
            None => more += 1,
        }
        Ok::<_, KeyError>(())
    })?;
    let missing: Vec<String> = table
        .key_names()
        .enumerate()
        .filter(|(position, _)| seen & (1 << position) == 0)
        .map(|(_, name)| name.clone())
        .collect();
    if missing.is_empty() && extra.is_empty() {
        return Ok(());
    }
    Err(KeyError::KeyMismatch {
        table: table.relation.display.clone(),
        missing,
        extra,
        more,
        primary_key: table.key_names().cloned().collect(),
    })
}

/// A jsonb argument: its Datum for the statement, and its document to read.
#[derive(Clone, Copy)]
pub struct JsonArg {
    datum: pg_sys::Datum,
    pub document: Container,
}

impl JsonArg {
    /// # Safety
    /// `datum` must be a non-NULL jsonb Datum that lives for the rest of the call.
    pub unsafe fn from_datum(datum: pg_sys::Datum) -> Self {
        // SAFETY: forwarded from the caller.
        let document = unsafe { Container::from_datum(datum) };
        Self { datum, document }
    }

    /// A nested object, copied into a jsonb Datum of its own.
    pub fn from_container(document: Container) -> Self {
        Self { datum: document.to_datum(), document }
    }

    pub fn arg(&self) -> DatumWithOid<'static> {
        // SAFETY: `datum` is a jsonb datum that lives for the rest of this call.
        unsafe { DatumWithOid::new(self.datum, pg_sys::JSONBOID) }
    }
}
