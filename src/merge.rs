//! Column-aware conflicts, `rowversion.enable(..., conflicts => 'merge')`: an UPDATE that
//! states an older version `s` than the stored `V` is accepted when none of the columns it
//! changes changed after `s`.
//!
//! A table in merge mode keeps, in each row, the record column [`RECORD_COLUMN`] (`bytea`): a
//! 4-byte check, then one byte per merge unit ([`MergeLayout`]: a merge group, or one column)
//! saying how many versions ago that unit last changed, 255 meaning 255 or more. 5 bytes of
//! record plus one per unit, in the row itself (no side table, no extra tuple per update).
//!
//! The check is the layout's fingerprint XOR the low 32 bits of the version the record was
//! written at. A record is read only if both still hold: a row whose version moved without the
//! trigger (while the table was in `reject` mode or its trigger disabled), or whose table's
//! columns changed since (renamed, added, dropped, regrouped), counts as changed in every unit
//! at its current version, as rows written before merge was enabled do. That is the safe
//! direction: such a row merges nothing until its next update writes a fresh record.
//!
//! Which units an UPDATE changes: those with a column whose new value differs, byte for byte,
//! from the stored one (`datum_image_eq`, which detoasts). Columns the SET list names with
//! their stored value do not count; a value equal but stored differently (`-0` for `0`)
//! counts, again the safe direction.

use pgrx::pg_sys;

use crate::version_column::{MergeLayout, VersionType};

/// The name `enable()` gives the record column.
pub const RECORD_COLUMN: &str = "rowversion_changes";

/// The age that means "this many versions ago or longer".
const SATURATED: u8 = u8::MAX;

unsafe extern "C-unwind" {
    /// utils/datum.h, not in pgrx's bindings: whether two values have the same image,
    /// detoasting varlenas.
    fn datum_image_eq(value1: pg_sys::Datum, value2: pg_sys::Datum, typ_by_val: bool, typ_len: i32) -> bool;
}

/// One UPDATE of one row of a table in merge mode: when each unit last changed, and which units
/// the UPDATE changes. Its slices are palloc'd in the trigger's per-row memory context.
pub struct RowChange<'a> {
    layout: &'a MergeLayout,
    /// Versions since each unit last changed, relative to the stored version.
    ages: &'a mut [u8],
    /// Whether `ages` came from the row's record (else: all 0, "changed at the stored version").
    recorded: bool,
    changed: &'a mut [bool],
}

impl<'a> RowChange<'a> {
    /// The stored row's record and what `new_row` changes of it.
    ///
    /// # Safety
    /// `stored_row` and `new_row` must be rows of the relation described by `tupdesc`, for
    /// which `layout` was resolved; `stored` is the stored row's version.
    pub unsafe fn new(
        layout: &'a MergeLayout,
        tupdesc: pg_sys::TupleDesc,
        stored_row: pg_sys::HeapTuple,
        new_row: pg_sys::HeapTuple,
        stored: i64,
    ) -> Self {
        // SAFETY: forwarded; the arrays are palloc'd for `units` and `natts` entries and read
        // within them; heap_deform_tuple fills `natts` values and nulls.
        unsafe {
            let changed = palloc_slice::<bool>(usize::from(layout.units));
            let natts = (*tupdesc).natts as usize;
            let (old_values, old_nulls) = (palloc_slice::<pg_sys::Datum>(natts), palloc_slice::<bool>(natts));
            let (new_values, new_nulls) = (palloc_slice::<pg_sys::Datum>(natts), palloc_slice::<bool>(natts));
            pg_sys::heap_deform_tuple(stored_row, tupdesc, old_values.as_mut_ptr(), old_nulls.as_mut_ptr());
            pg_sys::heap_deform_tuple(new_row, tupdesc, new_values.as_mut_ptr(), new_nulls.as_mut_ptr());
            // The record is a user column (the WHEN clause names NEW's columns 1 and up).
            let record = (layout.record - 1) as usize;
            let (ages, recorded) = ages(layout, (!old_nulls[record]).then_some(old_values[record]), stored);
            for i in 0..natts {
                let Some(unit) = layout.unit_of(i as i16 + 1) else { continue };
                let unit = usize::from(unit);
                if changed[unit] {
                    continue;
                }
                changed[unit] = match (old_nulls[i], new_nulls[i]) {
                    (true, true) => false,
                    (false, false) => {
                        let column = crate::node::attribute(tupdesc, i as i16 + 1);
                        !same_image(old_values[i], new_values[i], column.attbyval, column.attlen)
                    }
                    _ => true,
                };
            }
            RowChange { layout, ages, recorded, changed }
        }
    }

    /// The units this UPDATE changes that changed after version `since`, `distance` versions
    /// before the stored one ([`changed_after`]).
    pub fn changed_since(&self, distance: u64) -> impl Iterator<Item = u16> + '_ {
        (0..self.layout.units).filter(move |&unit| self.conflicts(unit, distance))
    }

    /// Whether this UPDATE changes `unit` and it changed after the version `distance`
    /// versions before the stored one.
    fn conflicts(&self, unit: u16, distance: u64) -> bool {
        self.changed[usize::from(unit)] && changed_after(self.ages[usize::from(unit)], distance)
    }

    /// The columns (1 to `natts`, in order) of the units [`changed_since`](Self::changed_since)
    /// finds, each with whether the record says when it changed: not for a row without a valid
    /// record, nor for an age of 255 or more, which count as changed without being known to.
    pub fn changed_columns(&self, distance: u64, natts: i16) -> impl Iterator<Item = (i16, bool)> + '_ {
        (1..=natts).filter_map(move |attnum| {
            let unit = self.layout.unit_of(attnum)?;
            let known = self.recorded && self.ages[usize::from(unit)] != SATURATED;
            self.conflicts(unit, distance).then_some((attnum, known))
        })
    }

    /// The record of the new row at version `next`, `advance` versions after the stored one:
    /// the units this UPDATE changes at age 0, the others older by `advance`.
    pub fn record(&mut self, next: i64, advance: u64) -> pg_sys::Datum {
        let units = usize::from(self.layout.units);
        // SAFETY: a palloc'd bytea of VARHDRSZ + 4 + units bytes, its header set for that size.
        unsafe {
            let size = pg_sys::VARHDRSZ + 4 + units;
            let record = pg_sys::palloc(size) as *mut pg_sys::varlena;
            pgrx::varlena::set_varsize_4b(record, size as i32);
            let bytes =
                std::slice::from_raw_parts_mut(pgrx::varlena::vardata_any(record).cast_mut().cast::<u8>(), 4 + units);
            bytes[..4].copy_from_slice(&check(self.layout, next).to_le_bytes());
            for unit in 0..units {
                bytes[4 + unit] = if self.changed[unit] {
                    0
                } else {
                    u8::try_from(u64::from(self.ages[unit]).saturating_add(advance)).unwrap_or(SATURATED)
                };
            }
            pg_sys::Datum::from(record)
        }
    }
}

/// Whether two values of a column have the same image. A column the UPDATE does not set keeps
/// its stored bytes, a TOAST pointer included, so equal bytes answer without detoasting
/// (`datum_image_eq` would fetch and compare both copies of a large value).
///
/// # Safety
/// Both must be non-NULL values of a column with `by_value` and `length`.
unsafe fn same_image(old: pg_sys::Datum, new: pg_sys::Datum, by_value: bool, length: i16) -> bool {
    if by_value || old == new {
        return old == new;
    }
    // SAFETY: forwarded; a varlena's size is read from its header, in the same format for both
    // when they are equal.
    unsafe {
        if length == -1 {
            let (a, b) = (old.cast_mut_ptr::<pg_sys::varlena>(), new.cast_mut_ptr::<pg_sys::varlena>());
            let size = pgrx::varlena::varsize_any(a);
            if size == pgrx::varlena::varsize_any(b)
                && std::slice::from_raw_parts(a.cast::<u8>(), size) == std::slice::from_raw_parts(b.cast::<u8>(), size)
            {
                return true;
            }
        }
        pg_sys::ffi::pg_guard_ffi_boundary(|| datum_image_eq(old, new, by_value, i32::from(length)))
    }
}

/// How many versions ago each unit of a row at version `stored` last changed, from its
/// `record` (a bytea Datum), and whether the record was valid; all 0 ("at the stored
/// version") for a missing record or one written at another version or under another layout.
/// Palloc'd.
///
/// # Safety
/// `record` must be a bytea Datum.
pub unsafe fn ages<'a>(layout: &MergeLayout, record: Option<pg_sys::Datum>, stored: i64) -> (&'a mut [u8], bool) {
    // SAFETY: forwarded; the detoasted bytea is read within its length.
    unsafe {
        let units = usize::from(layout.units);
        let ages = palloc_slice::<u8>(units);
        if let Some(record) = record {
            let record = pg_sys::pg_detoast_datum_packed(record.cast_mut_ptr());
            let bytes = std::slice::from_raw_parts(
                pgrx::varlena::vardata_any(record).cast::<u8>(),
                pgrx::varlena::varsize_any_exhdr(record),
            );
            if bytes.len() == 4 + units && bytes[..4] == check(layout, stored).to_le_bytes() {
                ages.copy_from_slice(&bytes[4..]);
                return (ages, true);
            }
        }
        (ages, false)
    }
}

/// Whether a unit of age `age` changed after a version `distance` versions before the stored
/// one. A saturated age says "at least 255 ago", so it may be below any distance above 255:
/// such a unit counts as changed, the safe direction.
pub fn changed_after(age: u8, distance: u64) -> bool {
    u64::from(age) < distance || (age == SATURATED && distance > u64::from(SATURATED))
}

/// The version at which a unit of age `age` last changed, for a row at `stored`; `None` when
/// saturated (255 or more versions ago).
pub fn changed_at(version_type: VersionType, stored: i64, age: u8) -> Option<i64> {
    (age != SATURATED).then(|| version_type.earlier(stored, age))
}

thread_local! {
    /// The table whose stale rows a checked function's statement skips instead of raising a
    /// conflict (`try_update` on a table in merge mode): the trigger returns no row, the
    /// statement updates none, and the function reports the conflict. Postgres backends are
    /// single-threaded.
    static SKIPPING: std::cell::Cell<pg_sys::Oid> = const { std::cell::Cell::new(pg_sys::InvalidOid) };
}

/// Runs `statement` with conflicts on `relid` (or its partitions) skipped instead of raised.
pub fn skipping_conflicts<T>(relid: pg_sys::Oid, statement: impl FnOnce() -> T) -> T {
    struct Reset(pg_sys::Oid);
    impl Drop for Reset {
        fn drop(&mut self) {
            SKIPPING.set(self.0);
        }
    }
    let _reset = Reset(SKIPPING.replace(relid));
    statement()
}

/// Whether a conflict on `rel` is to be skipped (see [`skipping_conflicts`]): `rel` is the
/// checked function's table or one of its partitions.
///
/// # Safety
/// `rel` must be open.
pub unsafe fn skips_conflicts(rel: pg_sys::Relation) -> bool {
    let skipping = SKIPPING.get();
    if skipping == pg_sys::InvalidOid {
        return false;
    }
    // SAFETY: an open relation's catalog row; a partition's ancestors exist while it is locked.
    unsafe {
        let mut relid = (*rel).rd_id;
        let mut partition = (*(*rel).rd_rel).relispartition;
        while relid != skipping && partition {
            relid = crate::contract::partition_parent(relid);
            partition = pg_sys::get_rel_relispartition(relid);
        }
        relid == skipping
    }
}

/// The record's check for a row at `version`.
fn check(layout: &MergeLayout, version: i64) -> u32 {
    layout.fingerprint ^ version as u32
}

/// A zeroed, palloc'd slice of `len` elements, in the current memory context.
///
/// # Safety
/// All-zero bytes must be a valid `T` (numbers, `bool`, `Datum`).
unsafe fn palloc_slice<'a, T>(len: usize) -> &'a mut [T] {
    // SAFETY: palloc0 returns zeroed memory aligned for any type (MAXALIGN), of at least one
    // byte; the caller guarantees zero is a valid T.
    unsafe { std::slice::from_raw_parts_mut(pg_sys::palloc0(size_of::<T>() * len.max(1)).cast::<T>(), len) }
}
