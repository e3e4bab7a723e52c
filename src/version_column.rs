//! Which column of a table holds its version, of which type, in which mode.
//!
//! `rowversion.enable()` names the columns in the trigger's `WHEN (NEW.version IS NULL OR
//! NEW.ignored1 IS NULL OR ... OR true)` clause: the first is the version column, the others
//! the columns whose updates do not count (`ignore_columns`). The clause is always true; it is
//! there so that Postgres itself keeps track of the columns: the stored expression refers to
//! them by attribute number, so `ALTER TABLE ... RENAME COLUMN` follows them, `pg_dump` writes
//! their current names, and `DROP COLUMN` is refused while the table is versioned (call
//! `enable()` again without the column first). Trigger arguments, by contrast, are frozen text.
//!
//! With `conflicts => 'merge'` or `'observe'` the trigger has a second argument, the mode, and
//! the clause also names the record column (`NEW.rowversion_changes IS NOT NULL`) and each
//! merge group (`ROW(NEW.street, NEW.city) IS NULL`): see [`MergeLayout`] and `src/merge.rs`.
//!
//! Reading the clause costs a `stringToNode`, so the result is kept per trigger for the
//! session and forgotten when the table's relcache entry is invalidated (any `ALTER TABLE`,
//! `CREATE OR REPLACE TRIGGER`, ...). Within one statement the trigger keeps its copy in
//! `fn_extra`, so a row costs no lookup at all.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::CStr;

use pgrx::pg_sys;

use crate::contract::ContractError;
use crate::encoding;
use crate::node::{attribute, cells, is_node};

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

    pub fn type_oid(self) -> pg_sys::Oid {
        match self {
            Self::Int2 => pg_sys::INT2OID,
            Self::Int4 => pg_sys::INT4OID,
            Self::Int8 => pg_sys::INT8OID,
        }
    }

    /// The type's length in bytes (`typlen`).
    pub fn width(self) -> i32 {
        match self {
            Self::Int2 => 2,
            Self::Int4 => 4,
            Self::Int8 => 8,
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

    pub fn read(self, datum: pg_sys::Datum) -> i64 {
        match self {
            Self::Int2 => i64::from(datum.value() as i16),
            Self::Int4 => i64::from(datum.value() as i32),
            Self::Int8 => datum.value() as i64,
        }
    }

    /// Whether `supplied` is newer than `stored` in serial-number order for the type's width
    /// (RFC 1982): `(supplied - stored) mod 2^bits` lies in `[1, 2^(bits-1))`.
    pub fn is_newer(self, supplied: i64, stored: i64) -> bool {
        match self {
            Self::Int2 => (supplied as i16).wrapping_sub(stored as i16) > 0,
            Self::Int4 => (supplied as i32).wrapping_sub(stored as i32) > 0,
            Self::Int8 => supplied.wrapping_sub(stored) > 0,
        }
    }

    /// How many versions `to` is after `from`, in the type's width.
    pub fn distance(self, from: i64, to: i64) -> u64 {
        match self {
            Self::Int2 => u64::from((to as i16).wrapping_sub(from as i16) as u16),
            Self::Int4 => u64::from((to as i32).wrapping_sub(from as i32) as u32),
            Self::Int8 => to.wrapping_sub(from) as u64,
        }
    }

    /// The version `steps` versions before `version`, wrapping as [`next`](Self::next) does.
    pub fn earlier(self, version: i64, steps: u8) -> i64 {
        match self {
            Self::Int2 => i64::from((version as i16).wrapping_sub(i16::from(steps))),
            Self::Int4 => i64::from((version as i32).wrapping_sub(i32::from(steps))),
            Self::Int8 => version.wrapping_sub(i64::from(steps)),
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
    pub ignored: IgnoredColumns,
    pub conflicts: Conflicts,
    /// `Some` for a table in `merge` or `observe` mode, which keep the per-row record.
    pub merge: Option<MergeLayout>,
}

/// How a stale UPDATE is decided: `enable()`'s `conflicts`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conflicts {
    /// Refused (40001): today's contract.
    Reject,
    /// Accepted when none of the columns it changes changed since the version it states.
    Merge,
    /// Accepted, counted and logged, with whether `Merge` would have accepted it.
    Observe,
}

impl Conflicts {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "reject" => Some(Self::Reject),
            "merge" => Some(Self::Merge),
            "observe" => Some(Self::Observe),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reject => "reject",
            Self::Merge => "merge",
            Self::Observe => "observe",
        }
    }
}

/// A column in no merge unit (the version column, the record column, ignored, generated or
/// dropped columns).
const NO_UNIT: u16 = u16::MAX;

/// The merge units of a table in `merge` mode: each merge group, and each other column that
/// counts as a change, is one unit, whose last change the per-row record keeps. Units are
/// ordered by the name of their first column (columns in a unit by name), so that a partition
/// whose columns are numbered differently and a restored dump, whose dropped columns are
/// gone, agree on the order; the fingerprint of the names and the order is in every record,
/// so a record written under another layout (a column renamed, added or dropped, groups
/// changed) is not read as this one's (see `src/merge.rs`).
#[derive(Clone, Copy, Debug)]
pub struct MergeLayout {
    /// The record column (`bytea`).
    pub record: i16,
    pub fingerprint: u32,
    pub units: u16,
    /// The unit of each column by attribute number, [`NO_UNIT`] for none.
    unit_of: [u16; pg_sys::MaxHeapAttributeNumber as usize + 1],
}

impl MergeLayout {
    /// The unit of column `attnum`, if it is in one.
    pub fn unit_of(&self, attnum: i16) -> Option<u16> {
        let unit = *self.unit_of.get(usize::try_from(attnum).ok()?)?;
        (unit != NO_UNIT).then_some(unit)
    }
}

/// Bitmapset words for every column a table can have (1,600), offset as `tg_updatedcols` is.
const IGNORED_WORDS: usize =
    (pg_sys::MaxHeapAttributeNumber as i32 - pg_sys::FirstLowInvalidHeapAttributeNumber) as usize / 64 + 1;

/// The columns whose updates alone neither move nor require the version, as the bits of
/// `tg_updatedcols` (a Bitmapset of `attnum - FirstLowInvalidHeapAttributeNumber`), inline so
/// that the per-row test touches no other memory.
///
/// A generated column is never in a SET list; it changes with the columns it is computed
/// from. So an ignored column that a generated column is computed from counts as a change,
/// and the generated columns themselves are left out of the SET list's columns: Postgres
/// names every stored generated column in `tg_updatedcols` once the table has a BEFORE ROW
/// UPDATE trigger (ours), whatever the SET list, and the fast path sees none.
#[derive(Clone, Copy, Debug, Default)]
pub struct IgnoredColumns {
    words: [u64; IGNORED_WORDS],
    generated: [u64; IGNORED_WORDS],
    any: bool,
}

/// Word and bit of column `attnum` in a mask offset as `tg_updatedcols` is.
fn bit(attnum: i16) -> (usize, u64) {
    let member = (i32::from(attnum) - pg_sys::FirstLowInvalidHeapAttributeNumber) as usize;
    (member / 64, 1 << (member % 64))
}

impl IgnoredColumns {
    const NONE: Self = Self { words: [0; IGNORED_WORDS], generated: [0; IGNORED_WORDS], any: false };

    fn insert(&mut self, attnum: i16) {
        let (word, bit) = bit(attnum);
        self.words[word] |= bit;
        self.any = true;
    }

    /// Generated column `attnum`, computed from the columns of `sources` (a Bitmapset offset
    /// the same way): its sources count as changes. (It cannot be ignored itself: a trigger's
    /// WHEN clause cannot name a generated column.)
    ///
    /// # Safety
    /// `sources` must be NULL or a valid Bitmapset.
    unsafe fn add_generated(&mut self, attnum: i16, sources: *const pg_sys::Bitmapset) {
        let (word, bit) = bit(attnum);
        self.generated[word] |= bit;
        if sources.is_null() {
            return;
        }
        // SAFETY: a valid Bitmapset holds `nwords` words.
        let sources = unsafe { (*sources).words.as_slice((*sources).nwords as usize) };
        for (ignored, &source) in self.words.iter_mut().zip(sources) {
            *ignored &= !source;
        }
        self.any = self.words.iter().any(|&w| w != 0);
    }

    /// Whether updates of column `attnum` alone do not count.
    pub fn contains(&self, attnum: i16) -> bool {
        let (word, bit) = bit(attnum);
        self.words[word] & bit != 0
    }

    /// Whether the SET list `updated` names columns and every one of them is ignored
    /// (generated columns in `updated` are not the SET list's: see the type).
    ///
    /// # Safety
    /// `updated` must be NULL or a valid Bitmapset.
    pub unsafe fn cover(&self, updated: *const pg_sys::Bitmapset) -> bool {
        if !self.any || updated.is_null() {
            return false;
        }
        // SAFETY: a valid Bitmapset holds `nwords` words.
        let words = unsafe { (*updated).words.as_slice((*updated).nwords as usize) };
        let mut named = false;
        for (i, &word) in words.iter().enumerate() {
            let word = word & !self.generated.get(i).copied().unwrap_or(0);
            let ignored = self.words.get(i).copied().unwrap_or(0);
            if word & !ignored != 0 {
                return false;
            }
            named |= word != 0;
        }
        named
    }
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
pub unsafe fn lookup(rel: pg_sys::Relation, trigger: *const pg_sys::Trigger) -> Result<VersionColumn, ContractError> {
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

/// What a trigger's WHEN clause names, as `enable()` writes it.
#[derive(Debug, Default)]
pub struct WhenClause {
    /// `NEW.a IS NULL` terms in order: the version column, then the ignored ones.
    pub columns: Vec<i16>,
    /// `NEW.rowversion_changes IS NOT NULL`: the record column of a table in `merge` mode.
    pub record: Option<i16>,
    /// `ROW(NEW.a, NEW.b) IS NULL` terms: the merge groups.
    pub groups: Vec<Vec<i16>>,
}

/// The columns a trigger's WHEN clause names, as `enable()` writes it: `NEW.a IS NULL OR
/// NEW.b IS NULL OR ... [OR NEW.rowversion_changes IS NOT NULL OR ROW(NEW.c, NEW.d) IS NULL
/// ...] OR true` (0.1.0 wrote only the version column). `None` when the clause has another
/// shape.
///
/// # Safety
/// `tgqual` must be a node string of a trigger's WHEN clause.
pub unsafe fn when_clause(tgqual: *const std::ffi::c_char) -> Option<WhenClause> {
    /// A column of NEW.
    unsafe fn new_column(node: *mut pg_sys::Node) -> Option<i16> {
        // SAFETY: the caller passes a node; it is read as a Var only when its tag says so.
        unsafe {
            if !is_node(node, pg_sys::NodeTag::T_Var) {
                return None;
            }
            let var = node as *mut pg_sys::Var;
            ((*var).varno as u32 == pg_sys::PRS2_NEW_VARNO && (*var).varattno >= 1).then_some((*var).varattno)
        }
    }
    // SAFETY: stringToNode reads a valid node string into palloc'd nodes; the list cells are
    // read as the node types their tags say.
    unsafe {
        let when = pg_sys::stringToNode(tgqual) as *mut pg_sys::Node;
        if !is_node(when, pg_sys::NodeTag::T_BoolExpr) {
            return None;
        }
        let or = when as *mut pg_sys::BoolExpr;
        if (*or).boolop != pg_sys::BoolExprType::OR_EXPR {
            return None;
        }
        let mut clause = WhenClause::default();
        for cell in cells((*or).args) {
            let arg = cell.ptr_value as *mut pg_sys::Node;
            match (*arg).type_ {
                pg_sys::NodeTag::T_NullTest => {
                    let test = arg as *mut pg_sys::NullTest;
                    let operand = (*test).arg as *mut pg_sys::Node;
                    let is_null = (*test).nulltesttype == pg_sys::NullTestType::IS_NULL;
                    if is_node(operand, pg_sys::NodeTag::T_RowExpr) && is_null {
                        let row = operand as *mut pg_sys::RowExpr;
                        let group = cells((*row).args)
                            .iter()
                            .map(|cell| new_column(cell.ptr_value.cast()))
                            .collect::<Option<Vec<i16>>>()?;
                        clause.groups.push(group);
                    } else if is_null {
                        clause.columns.push(new_column(operand)?);
                    } else if clause.record.is_none() {
                        clause.record = Some(new_column(operand)?);
                    } else {
                        return None;
                    }
                }
                pg_sys::NodeTag::T_Const => {}
                _ => return None,
            }
        }
        (!clause.columns.is_empty()).then_some(clause)
    }
}

/// Reads the mode from the trigger's argument and the columns from its WHEN clause.
unsafe fn resolve(rel: pg_sys::Relation, trigger: *const pg_sys::Trigger) -> Result<VersionColumn, ContractError> {
    // SAFETY: the caller guarantees that `rel` and `trigger` are valid; a trigger's `tgargs`
    // holds `tgnargs` C strings and `tgqual` is NULL or a node string.
    unsafe {
        let trigger = &*trigger;
        let not_from_enable =
            || ContractError::NotCreatedByEnable { trigger: encoding::cstr_from_server_lossy(trigger.tgname) };
        if !(1..=2).contains(&trigger.tgnargs) || trigger.tgqual.is_null() {
            return Err(not_from_enable());
        }
        let arguments = std::slice::from_raw_parts(trigger.tgargs, trigger.tgnargs as usize);
        let mode = CStr::from_ptr(arguments[0]).to_str().ok().and_then(Mode::parse);
        let conflicts = match arguments.get(1) {
            Some(&argument) => CStr::from_ptr(argument).to_str().ok().and_then(Conflicts::parse),
            None => Some(Conflicts::Reject),
        };
        let (Some(mode), Some(conflicts)) = (mode, conflicts) else {
            return Err(not_from_enable());
        };

        let tupdesc = (*rel).rd_att;
        let clause = when_clause(trigger.tgqual).ok_or_else(not_from_enable)?;
        let mut named = clause.columns.iter().chain(clause.record.iter()).chain(clause.groups.iter().flatten());
        if named.any(|&attnum| i32::from(attnum) > (*tupdesc).natts) {
            return Err(not_from_enable());
        }
        let attnum = clause.columns[0];
        let mut ignored = IgnoredColumns::NONE;
        clause.columns[1..].iter().for_each(|&attnum| ignored.insert(attnum));
        add_generated_columns(tupdesc, &mut ignored);
        let merge = match (conflicts, clause.record) {
            (Conflicts::Reject, _) => None,
            (Conflicts::Merge | Conflicts::Observe, Some(record)) => {
                Some(merge_layout(tupdesc, attnum, record, &ignored, &clause.groups))
            }
            (Conflicts::Merge | Conflicts::Observe, None) => return Err(not_from_enable()),
        };
        let attribute = *attribute(tupdesc, attnum);
        let version_type = VersionType::from_oid(attribute.atttypid).ok_or_else(|| ContractError::UnsupportedType {
            column: encoding::cstr_from_server_lossy(attribute.attname.data.as_ptr()),
            type_name: type_name(attribute.atttypid),
        })?;
        Ok(VersionColumn { relid: (*rel).rd_id, attnum, version_type, mode, ignored, conflicts, merge })
    }
}

/// The merge units of `tupdesc` (see [`MergeLayout`]): every live, non-generated column other
/// than the version column, the record column and the ignored ones; a merge group's columns
/// together.
///
/// # Safety
/// `tupdesc` must be the descriptor of an open relation and the column numbers its columns.
unsafe fn merge_layout(
    tupdesc: pg_sys::TupleDesc,
    version: i16,
    record: i16,
    ignored: &IgnoredColumns,
    groups: &[Vec<i16>],
) -> MergeLayout {
    // SAFETY: forwarded: the attribute numbers are columns of `tupdesc`, whose names are
    // NUL-terminated.
    unsafe {
        let name = |attnum: i16| CStr::from_ptr(attribute(tupdesc, attnum).attname.data.as_ptr()).to_bytes();
        let counts = |attnum: i16| {
            let column = attribute(tupdesc, attnum);
            !column.attisdropped
                && column.attgenerated == 0
                && attnum != version
                && attnum != record
                && !ignored.contains(attnum)
        };
        let natts = (*tupdesc).natts as i16;
        let mut units: Vec<Vec<i16>> = groups
            .iter()
            .map(|group| group.iter().copied().filter(|&a| counts(a)).collect::<Vec<_>>())
            .filter(|unit| !unit.is_empty())
            .collect();
        let grouped: Vec<i16> = units.iter().flatten().copied().collect();
        units.extend((1..=natts).filter(|&a| counts(a) && !grouped.contains(&a)).map(|a| vec![a]));
        units.iter_mut().for_each(|unit| unit.sort_by(|&a, &b| name(a).cmp(name(b))));
        units.sort_by(|a, b| name(a[0]).cmp(name(b[0])));
        let mut layout = MergeLayout {
            record,
            fingerprint: 0,
            units: units.len() as u16,
            unit_of: [NO_UNIT; pg_sys::MaxHeapAttributeNumber as usize + 1],
        };
        // FNV-1a over the format and each unit's names, in order.
        let mut hash: u32 = 0x811c_9dc5;
        let mut feed = |bytes: &[u8]| {
            for &byte in bytes {
                hash = (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193);
            }
        };
        feed(b"pg_rowversion merge record 1");
        for (index, unit) in units.iter().enumerate() {
            for &attnum in unit {
                layout.unit_of[attnum as usize] = index as u16;
                feed(name(attnum));
                feed(&[0]);
            }
            feed(&[1]);
        }
        layout.fingerprint = hash;
        layout
    }
}

/// Adds the generated columns of `tupdesc` and the columns each is computed from (its
/// expression's Vars) to `ignored`.
///
/// # Safety
/// `tupdesc` must be the descriptor of an open relation.
unsafe fn add_generated_columns(tupdesc: pg_sys::TupleDesc, ignored: &mut IgnoredColumns) {
    // SAFETY: the descriptor's defaults, `num_defval` of them, each a node string; the
    // expression and the Bitmapset are palloc'd in the current (statement or planner) context.
    unsafe {
        let constr = (*tupdesc).constr;
        if constr.is_null() || (*constr).defval.is_null() {
            return;
        }
        let defaults = std::slice::from_raw_parts((*constr).defval, usize::from((*constr).num_defval));
        for default in defaults {
            let attnum = default.adnum;
            if attnum < 1 || i32::from(attnum) > (*tupdesc).natts || attribute(tupdesc, attnum).attgenerated == 0 {
                continue;
            }
            let mut sources: *mut pg_sys::Bitmapset = std::ptr::null_mut();
            pg_sys::pull_varattnos(pg_sys::stringToNode(default.adbin).cast(), 1, &mut sources);
            ignored.add_generated(attnum, sources);
        }
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

    #[test]
    fn newer_is_serial_number_order_in_the_type_width() {
        assert!(VersionType::Int8.is_newer(2, 1));
        assert!(VersionType::Int8.is_newer(1_700_000_000_000, 3), "a time-based version");
        assert!(!VersionType::Int8.is_newer(1, 1));
        assert!(!VersionType::Int8.is_newer(0, 1));
        assert!(VersionType::Int8.is_newer(i64::MIN, i64::MAX), "across the wrap");
        assert!(VersionType::Int2.is_newer(i64::from(i16::MIN), i64::from(i16::MAX)));
        assert!(VersionType::Int2.is_newer(32767, 0), "2^15 - 1 ahead");
        assert!(!VersionType::Int2.is_newer(-32768, 0), "2^15 ahead is not newer");
        assert!(!VersionType::Int4.is_newer(5, 6));
    }
}

crate::fmgr::v1_function! {
    /// `rowversion.trigger_columns(rel regclass, tgqual pg_node_tree, OUT version_column name,
    /// OUT ignore_columns name[])`: the columns a versioning trigger's WHEN clause names, for the
    /// `rowversion.tables` view and the checked functions; NULLs for a clause of another shape.
    pg_finfo_rowversion_trigger_columns,
    declared ["trigger_columns(regclass, pg_node_tree) -> (name, name[])"],
    fn rowversion_trigger_columns(args) -> crate::fmgr::CallError {
        let (Some(relid), Some(qual)) = (args.oid(0), args.datum(1)) else { return Ok(None) };
        // SAFETY: argument 1 is a pg_node_tree (text); the result row is formed with the
        // declared result type, its names as palloc'd Name datums.
        unsafe {
            let qual = pg_sys::text_to_cstring(qual.cast_mut_ptr());
            // A column `rel` does not have (the clause may be another table's): a NULL version
            // column, and no name among the ignored ones.
            let name = |attnum: i16| {
                let attname = pg_sys::get_attname(relid, attnum, true);
                if attname.is_null() {
                    return None;
                }
                pgrx::direct_function_call_as_datum(pg_sys::namein, &[Some(pg_sys::Datum::from(attname))])
            };
            let mut values = [pg_sys::Datum::from(0); 2];
            let mut nulls = [true; 2];
            if let Some(WhenClause { columns, .. }) = when_clause(qual) {
                if let Some(version) = name(columns[0]) {
                    values[0] = version;
                    nulls[0] = false;
                }
                let mut ignored: Vec<pg_sys::Datum> = columns[1..].iter().filter_map(|&a| name(a)).collect();
                let array = pg_sys::construct_array(
                    ignored.as_mut_ptr(),
                    ignored.len() as i32,
                    pg_sys::NAMEOID,
                    pg_sys::NAMEDATALEN as i32,
                    false,
                    pg_sys::TYPALIGN_CHAR as std::ffi::c_char,
                );
                values[1] = pg_sys::Datum::from(array);
                nulls[1] = false;
            }
            crate::fmgr::result_row(args.fcinfo(), &mut values, &mut nulls).map(Some)
        }
    }
}

crate::fmgr::v1_function! {
    /// `rowversion.merge_groups(rel regclass, tgqual pg_node_tree) RETURNS jsonb`: the merge
    /// groups a versioning trigger's WHEN clause names, as a JSON array of arrays of column
    /// names (`[]` for none), for the `rowversion.tables` view; NULL for a clause of another
    /// shape.
    pg_finfo_rowversion_merge_groups,
    declared ["merge_groups(regclass, pg_node_tree) -> jsonb"],
    fn rowversion_merge_groups(args) -> crate::fmgr::CallError {
        let (Some(relid), Some(qual)) = (args.oid(0), args.datum(1)) else { return Ok(None) };
        // SAFETY: argument 1 is a pg_node_tree (text); the JSON is built in a palloc'd
        // StringInfo, names escaped by escape_json, and parsed by jsonb_in.
        unsafe {
            let Some(clause) = when_clause(pg_sys::text_to_cstring(qual.cast_mut_ptr())) else { return Ok(None) };
            let json = pg_sys::makeStringInfo();
            pg_sys::appendStringInfoChar(json, b'[' as std::ffi::c_char);
            for (i, group) in clause.groups.iter().enumerate() {
                pg_sys::appendStringInfoString(json, if i == 0 { c"[" } else { c", [" }.as_ptr());
                let mut first = true;
                for &attnum in group {
                    // A column `rel` does not have (the clause may be another table's) is left out.
                    let attname = pg_sys::get_attname(relid, attnum, true);
                    if attname.is_null() {
                        continue;
                    }
                    if !first {
                        pg_sys::appendStringInfoString(json, c", ".as_ptr());
                    }
                    pg_sys::escape_json(json, attname);
                    first = false;
                }
                pg_sys::appendStringInfoChar(json, b']' as std::ffi::c_char);
            }
            pg_sys::appendStringInfoChar(json, b']' as std::ffi::c_char);
            Ok(pgrx::direct_function_call_as_datum(pg_sys::jsonb_in, &[Some(pg_sys::Datum::from((*json).data))]))
        }
    }
}
