//! Which column of a table holds its version, of which type, in which mode.
//!
//! `rowversion.enable()` names the column in the trigger's `WHEN (NEW.col IS NULL OR true)`
//! clause. The clause is always true; it is there so that Postgres itself keeps track of the
//! column: the stored expression refers to it by attribute number, so `ALTER TABLE ... RENAME
//! COLUMN` follows it, `pg_dump` writes its current name, and `DROP COLUMN` is refused while the
//! table is versioned. Trigger arguments, by contrast, are frozen text.
//!
//! Reading the clause costs a `stringToNode`, so the result is kept per trigger for the
//! session and forgotten when the table's relcache entry is invalidated (any `ALTER TABLE`,
//! `CREATE OR REPLACE TRIGGER`, ...). Within one statement the trigger keeps its copy in
//! `fn_extra`, so a row costs no lookup at all.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{c_int, CStr};

use pgrx::pg_sys;

use crate::encoding;
use crate::trigger::TriggerError;

/// The integer type of a version column; increments wrap like two's-complement arithmetic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VersionType {
    Int2,
    Int4,
    Int8,
}

impl VersionType {
    pub fn from_oid(type_oid: pg_sys::Oid) -> Option<Self> {
        match type_oid {
            pg_sys::INT2OID => Some(Self::Int2),
            pg_sys::INT4OID => Some(Self::Int4),
            pg_sys::INT8OID => Some(Self::Int8),
            _ => None,
        }
    }

    /// `version + 1`, wrapping from the type's maximum to its minimum, so a version never
    /// errors and matches what Java/C# ORMs compute with fixed-width integers.
    pub fn next(self, version: i64) -> i64 {
        match self {
            Self::Int2 => i64::from((version as i16).wrapping_add(1)),
            Self::Int4 => i64::from((version as i32).wrapping_add(1)),
            Self::Int8 => version.wrapping_add(1),
        }
    }

    pub fn from_datum(self, datum: pg_sys::Datum) -> i64 {
        match self {
            Self::Int2 => i64::from(datum.value() as i16),
            Self::Int4 => i64::from(datum.value() as i32),
            Self::Int8 => datum.value() as i64,
        }
    }

    pub fn to_datum(self, version: i64) -> pg_sys::Datum {
        match self {
            Self::Int2 => pg_sys::Datum::from(version as i16),
            Self::Int4 => pg_sys::Datum::from(version as i32),
            Self::Int8 => pg_sys::Datum::from(version),
        }
    }
}

/// What an UPDATE that does not name the version column gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The version is incremented anyway.
    Lenient,
    /// The UPDATE is rejected.
    Strict,
}

impl Mode {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "lenient" => Some(Self::Lenient),
            "strict" => Some(Self::Strict),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Lenient => "lenient",
            Self::Strict => "strict",
        }
    }
}

/// Everything the trigger needs per row, resolved once per trigger.
#[derive(Clone, Copy, Debug)]
pub struct VersionColumn {
    pub relid: pg_sys::Oid,
    pub attnum: i16,
    pub version_type: VersionType,
    pub mode: Mode,
}

thread_local! {
    /// Resolved version columns by trigger OID. Postgres backends are single-threaded.
    static BY_TRIGGER: RefCell<HashMap<pg_sys::Oid, VersionColumn>> = RefCell::new(HashMap::new());
}

/// Called from the relcache invalidation callback.
pub fn forget(relid: pg_sys::Oid) {
    BY_TRIGGER.with_borrow_mut(|cache| {
        if relid == pg_sys::InvalidOid {
            cache.clear();
        } else {
            cache.retain(|_, column| column.relid != relid);
        }
    });
}

/// The version column of the table the trigger `trigger` belongs to.
///
/// # Safety
/// `rel` and `trigger` must be the valid relation and trigger of a firing trigger.
pub unsafe fn lookup(
    rel: pg_sys::Relation,
    trigger: *const pg_sys::Trigger,
) -> Result<VersionColumn, TriggerError> {
    // SAFETY: the caller guarantees `trigger` is valid.
    let trigger_oid = unsafe { (*trigger).tgoid };
    if let Some(column) = BY_TRIGGER.with_borrow(|cache| cache.get(&trigger_oid).copied()) {
        return Ok(column);
    }
    // SAFETY: forwarded from the caller.
    let column = unsafe { resolve(rel, trigger) }?;
    BY_TRIGGER.with_borrow_mut(|cache| cache.insert(trigger_oid, column));
    Ok(column)
}

/// Reads the mode from the trigger's argument and the column from its WHEN clause.
unsafe fn resolve(
    rel: pg_sys::Relation,
    trigger: *const pg_sys::Trigger,
) -> Result<VersionColumn, TriggerError> {
    // SAFETY: the caller guarantees that `rel` and `trigger` are valid; a trigger's `tgargs`
    // holds `tgnargs` C strings and `tgqual` is NULL or a node string.
    unsafe {
        let trigger = &*trigger;
        let not_from_enable = || TriggerError::NotCreatedByEnable {
            trigger: encoding::cstr_from_server_lossy(trigger.tgname),
        };
        if trigger.tgnargs != 1 || trigger.tgqual.is_null() {
            return Err(not_from_enable());
        }
        let mode = CStr::from_ptr(*trigger.tgargs).to_str().ok().and_then(Mode::parse);
        let Some(mode) = mode else {
            return Err(not_from_enable());
        };

        let when = pg_sys::stringToNode(trigger.tgqual) as *mut pg_sys::Node;
        let mut referenced: *mut pg_sys::Bitmapset = std::ptr::null_mut();
        pg_sys::pull_varattnos(when, pg_sys::PRS2_NEW_VARNO, &mut referenced);
        let mut member: c_int = 0;
        if !pg_sys::bms_get_singleton_member(referenced, &mut member) {
            return Err(not_from_enable());
        }
        let attnum = (member + pg_sys::FirstLowInvalidHeapAttributeNumber) as i16;

        let tupdesc = (*rel).rd_att;
        if attnum < 1 || i32::from(attnum) > (*tupdesc).natts {
            return Err(not_from_enable());
        }
        let attribute = *attribute(tupdesc, attnum);
        let version_type = VersionType::from_oid(attribute.atttypid).ok_or_else(|| {
            TriggerError::UnsupportedType {
                column: encoding::cstr_from_server_lossy(attribute.attname.data.as_ptr()),
                type_name: type_name(attribute.atttypid),
            }
        })?;
        Ok(VersionColumn { relid: (*rel).rd_id, attnum, version_type, mode })
    }
}

/// Column `attnum` (1-based) of a tuple descriptor. Postgres 18 stores `natts` compact
/// attributes first and the full ones after them.
///
/// # Safety
/// `tupdesc` must be valid and `attnum` one of its columns.
pub unsafe fn attribute<'a>(tupdesc: pg_sys::TupleDesc, attnum: i16) -> &'a pg_sys::FormData_pg_attribute {
    // SAFETY: forwarded from the caller.
    unsafe {
        let natts = (*tupdesc).natts as usize;
        #[cfg(not(feature = "pg18"))]
        let attributes = (*tupdesc).attrs.as_slice(natts);
        #[cfg(feature = "pg18")]
        let attributes = std::slice::from_raw_parts(
            (*tupdesc).compact_attrs.as_ptr().add(natts).cast::<pg_sys::FormData_pg_attribute>(),
            natts,
        );
        &attributes[attnum as usize - 1]
    }
}

fn type_name(type_oid: pg_sys::Oid) -> String {
    // SAFETY: format_type_be accepts any OID and returns a palloc'd string.
    unsafe { encoding::cstr_from_server_lossy(pg_sys::format_type_be(type_oid)) }
}

#[cfg(test)]
mod unit_tests {
    use super::VersionType;

    #[test]
    fn next_wraps_at_the_maximum_of_each_type() {
        assert_eq!(VersionType::Int2.next(i64::from(i16::MAX)), i64::from(i16::MIN));
        assert_eq!(VersionType::Int4.next(i64::from(i32::MAX)), i64::from(i32::MIN));
        assert_eq!(VersionType::Int8.next(i64::MAX), i64::MIN);
        assert_eq!(VersionType::Int4.next(41), 42);
    }
}
