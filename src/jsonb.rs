//! Reading the jsonb arguments of the checked functions where they are, in Postgres memory.
//!
//! The extension only needs the top level of a document: the names in `key` and `changes`,
//! the rows of `update_many` and each row's three fields. Values are never converted here:
//! they go to the statement as jsonb, and `jsonb_populate_record` turns them into column
//! values by Postgres' own rules (a numeric stays exact, an out-of-range number is Postgres'
//! own 22003, a document as deep as jsonb allows fits a jsonb column). So work and memory are
//! proportional to the number of top-level entries, never to the depth or size of a value,
//! and long loops check for interrupts.

use std::ffi::c_char;

use pgrx::pg_sys;
use pgrx::pg_sys::JsonbIteratorToken::{WJB_DONE, WJB_ELEM, WJB_KEY};

use crate::encoding;

/// A jsonb document or one of its nested containers, detoasted, in Postgres memory.
#[derive(Clone, Copy)]
pub struct Container {
    container: *mut pg_sys::JsonbContainer,
    /// Its size in bytes.
    len: i32,
}

/// A top-level value: what the functions need to tell apart.
pub enum Value {
    Object(Container),
    Numeric(pg_sys::Numeric),
    /// An array, a string, a boolean or null.
    Other,
}

impl Container {
    /// The document of a non-NULL jsonb argument.
    ///
    /// # Safety
    /// `datum` must be a jsonb Datum that lives for the rest of the call.
    pub unsafe fn from_datum(datum: pg_sys::Datum) -> Self {
        // SAFETY: forwarded from the caller; detoasting copies into the current memory
        // context when the value is toasted.
        unsafe {
            let jsonb = pg_sys::pg_detoast_datum(datum.cast_mut_ptr()) as *mut pg_sys::Jsonb;
            let len = pgrx::varlena::varsize(jsonb.cast()) - pg_sys::VARHDRSZ;
            Self { container: &raw mut (*jsonb).root, len: len as i32 }
        }
    }

    fn header(self) -> u32 {
        // SAFETY: `container` points to a valid jsonb container.
        unsafe { (*self.container).header }
    }

    pub fn is_object(self) -> bool {
        self.header() & pg_sys::JB_FOBJECT != 0
    }

    /// An array, not a scalar (which jsonb stores as a one-element array).
    pub fn is_array(self) -> bool {
        self.header() & (pg_sys::JB_FARRAY | pg_sys::JB_FSCALAR) == pg_sys::JB_FARRAY
    }

    /// Calls `each` with every key of this object, as the database-encoded bytes jsonb keeps.
    pub fn for_each_key<E>(self, mut each: impl FnMut(&[u8]) -> Result<(), E>) -> Result<(), E> {
        self.for_each(WJB_KEY, |value| {
            // SAFETY: a key is a jbvString of `len` bytes.
            let key = unsafe {
                let string = value.val.string;
                std::slice::from_raw_parts(string.val.cast::<u8>(), string.len as usize)
            };
            each(key)
        })
    }

    /// Calls `each` with every element of this array.
    pub fn for_each_element<E>(self, mut each: impl FnMut(Value) -> Result<(), E>) -> Result<(), E> {
        self.for_each(WJB_ELEM, |value| each(Value::from(value)))
    }

    /// Walks the top level only (nested containers come back whole, unread), checking for
    /// interrupts at each entry.
    fn for_each<E>(
        self,
        wanted: pg_sys::JsonbIteratorToken::Type,
        mut each: impl FnMut(&pg_sys::JsonbValue) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut value = pg_sys::JsonbValue::default();
        // SAFETY: the iterator walks a valid container; with skipNested it returns nested
        // containers as jbvBinary values without entering them. Its state is palloc'd in the
        // current memory context.
        unsafe {
            let mut iterator = pg_sys::JsonbIteratorInit(self.container);
            loop {
                let token = pg_sys::JsonbIteratorNext(&mut iterator, &mut value, true);
                if token == WJB_DONE {
                    return Ok(());
                }
                if token == wanted {
                    pgrx::check_for_interrupts!();
                    each(&value)?;
                }
            }
        }
    }

    /// The value of `key` in this object, `None` when absent.
    pub fn get(self, key: &str) -> Option<Value> {
        self.lookup(key).map(|value| Value::from(&value))
    }

    /// The bytes of the string value of `key` in this object (in the database encoding),
    /// `None` when absent or not a string.
    pub fn get_string<'a>(self, key: &str) -> Option<&'a [u8]> {
        let value = self.lookup(key).filter(|value| value.type_ == pg_sys::jbvType::jbvString)?;
        // SAFETY: a string value, read as its type says, points into the container, which
        // lives as long as the document.
        unsafe {
            let string = value.val.string;
            Some(std::slice::from_raw_parts(string.val.cast::<u8>(), string.len as usize))
        }
    }

    fn lookup(self, key: &str) -> Option<pg_sys::JsonbValue> {
        let mut value = pg_sys::JsonbValue::default();
        // SAFETY: a lookup by an ASCII key (the same bytes in every server encoding) in a
        // valid object; the result points into the container.
        let found = unsafe {
            pg_sys::getKeyJsonValueFromContainer(
                self.container,
                key.as_ptr().cast::<c_char>(),
                key.len() as i32,
                &mut value,
            )
        };
        (!found.is_null()).then_some(value)
    }

    /// This container as a jsonb Datum of its own (a palloc'd copy), for a statement.
    pub fn to_datum(self) -> pg_sys::Datum {
        let mut value = pg_sys::JsonbValue { type_: pg_sys::jbvType::jbvBinary, ..Default::default() };
        // SAFETY: a jbvBinary value wrapping a valid container of `len` bytes;
        // JsonbValueToJsonb copies it.
        unsafe {
            value.val.binary.data = self.container;
            value.val.binary.len = self.len;
            pg_sys::Datum::from(pg_sys::JsonbValueToJsonb(&mut value))
        }
    }

    /// The document as JSON text, at most `max_chars` characters (`...` after a cut), for
    /// messages.
    pub fn to_text(self, max_chars: usize) -> String {
        // SAFETY: JsonbToCString returns a palloc'd NUL-terminated string in the database
        // encoding.
        unsafe {
            let text = pg_sys::JsonbToCString(std::ptr::null_mut(), self.container, 64);
            encoding::clipped_from_server(text, std::ffi::CStr::from_ptr(text).to_bytes().len(), max_chars)
        }
    }
}

impl From<&pg_sys::JsonbValue> for Value {
    fn from(value: &pg_sys::JsonbValue) -> Self {
        // SAFETY: the union field read is the one `type_` names.
        unsafe {
            match value.type_ {
                pg_sys::jbvType::jbvBinary => {
                    let binary = value.val.binary;
                    let container = Container { container: binary.data, len: binary.len };
                    if container.is_object() {
                        Value::Object(container)
                    } else {
                        Value::Other
                    }
                }
                pg_sys::jbvType::jbvNumeric => Value::Numeric(value.val.numeric),
                _ => Value::Other,
            }
        }
    }
}

/// A jsonb number as a bigint: `None` unless it is an integer within bigint's range.
pub fn numeric_to_i64(number: pg_sys::Numeric) -> Option<i64> {
    let cmp = |a: pg_sys::Numeric, b: pg_sys::Numeric| {
        // SAFETY: numeric_cmp takes two valid numerics and returns an int4.
        unsafe {
            pgrx::direct_function_call::<i32>(
                pg_sys::numeric_cmp,
                &[Some(pg_sys::Datum::from(a)), Some(pg_sys::Datum::from(b))],
            )
        }
        .unwrap_or(0)
    };
    // SAFETY: int64_to_numeric and numeric_int8 take valid values; numeric_int8 rounds, and
    // cannot fail for a number already checked to lie within bigint's range.
    unsafe {
        if cmp(number, pg_sys::int64_to_numeric(i64::MIN)) < 0 || cmp(number, pg_sys::int64_to_numeric(i64::MAX)) > 0 {
            return None;
        }
        let rounded = pgrx::direct_function_call::<i64>(pg_sys::numeric_int8, &[Some(pg_sys::Datum::from(number))])?;
        (cmp(number, pg_sys::int64_to_numeric(rounded)) == 0).then_some(rounded)
    }
}
