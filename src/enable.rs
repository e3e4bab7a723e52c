//! `rowversion.enable()` and `rowversion.disable()`: putting a table under version control
//! and taking it out again. Declared in `sql/enable.sql`.
//!
//! Both run with the caller's privileges and require ownership of the table, as `ALTER
//! TABLE` does; all DDL is built with quoted identifiers and qualified names and runs in the
//! caller's transaction, so a failure leaves nothing half-done.
//!
//! The one statement that runs the table owner's code, the UPDATE that fills NULL versions
//! (it fires the owner's triggers and evaluates their index expressions), runs as the owner
//! in a security-restricted operation, as Postgres runs VACUUM, ANALYZE and CREATE INDEX
//! since CVE-2022-1552: a superuser enabling another role's table never runs that role's
//! code with superuser rights.

use pgrx::prelude::*;
use pgrx::spi::{quote_identifier, quote_literal, SpiClient};
use pgrx::PgSqlErrorCode;

use crate::encoding;
use crate::fmgr::v1_function;
use crate::identity::as_owner;
use crate::merge::RECORD_COLUMN;
use crate::replication::{self, WRITE_COLUMN};
use crate::report::{self, Report};
use crate::table::{self, utf8};
use crate::version_column::{Conflicts, Mode, VersionType};

/// The name of the trigger `enable()` installs, documented in the README.
pub const TRIGGER_NAME: &str = "rowversion";

#[derive(Debug, thiserror::Error)]
pub enum EnableError {
    #[error("relation with OID {0} does not exist")]
    NoSuchRelation(u32),
    #[error("\"{table}\" is {kind}, not a table")]
    NotATable { table: String, kind: &'static str },
    #[error("must be owner of table {table}")]
    NotOwner { table: String },
    #[error("column \"{column}\" of table \"{table}\" does not exist")]
    NoSuchColumn { table: String, column: String },
    #[error("the version column \"{column}\" cannot be one of the ignored columns")]
    VersionIgnored { column: String },
    #[error("ignore_columns must not contain NULL")]
    NullIgnoredColumn,
    #[error("ignore_columns names {0} columns, more than a table can have")]
    TooManyIgnored(usize),
    #[error("invalid mode \"{0}\"")]
    InvalidMode(String),
    #[error("column \"{column}\" of table \"{table}\" has type {type_name}, which cannot hold a version")]
    UnsupportedType { table: String, column: String, type_name: String },
    #[error("column \"{column}\" of table \"{table}\" is {kind} column")]
    GeneratedColumn { table: String, column: String, kind: &'static str },
    #[error("column \"{column}\" of table \"{table}\" is a generated column, which cannot be ignored")]
    GeneratedIgnored { table: String, column: String },
    #[error("trigger \"{trigger}\" on table \"{table}\" is not pg_rowversion's")]
    TriggerNameTaken { table: String, trigger: &'static str },
    #[error("table \"{table}\" is a partition of versioned table \"{parent}\"")]
    InheritedFromParent { table: String, parent: String },
    #[error("invalid conflicts \"{0}\"")]
    InvalidConflicts(String),
    #[error("merge_groups must be a JSON array of arrays of column names")]
    MergeGroupsShape,
    #[error("merge_groups names {0} columns, more than a table can have")]
    TooManyGrouped(usize),
    #[error("merge_groups is only for conflicts => 'merge' or 'observe'")]
    MergeGroupsWithoutMerge,
    #[error("column \"{column}\" cannot be in merge_groups: it is {what}")]
    NotMergeable { column: String, what: &'static str },
    #[error("column \"{column}\" of table \"{table}\" has type {type_name}; {what} in a bytea column of that name")]
    RecordColumnType { table: String, column: String, type_name: String, what: &'static str },
    #[error(
        "column \"{column}\" of table \"{table}\" cannot be {role}: it is pg_rowversion's write column of multi_node"
    )]
    WriteColumnReserved { table: String, column: String, role: &'static str },
    #[error(
        "table \"{table}\" is a Citus table, whose triggers Citus refuses while citus.enable_unsafe_triggers is off"
    )]
    CitusTriggersOff { table: String },
    #[error("catalog query failed: {0}")]
    Spi(#[from] pgrx::spi::SpiError),
}

impl EnableError {
    fn sqlstate(&self) -> PgSqlErrorCode {
        match self {
            Self::NoSuchRelation(_) => PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
            Self::NotATable { .. } | Self::InheritedFromParent { .. } => PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
            Self::NotOwner { .. } => PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            Self::InvalidMode(_)
            | Self::InvalidConflicts(_)
            | Self::MergeGroupsShape
            | Self::TooManyGrouped(_)
            | Self::MergeGroupsWithoutMerge
            | Self::NotMergeable { .. }
            | Self::VersionIgnored { .. }
            | Self::WriteColumnReserved { .. }
            | Self::GeneratedIgnored { .. }
            | Self::TooManyIgnored(_) => PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            Self::NoSuchColumn { .. } => PgSqlErrorCode::ERRCODE_UNDEFINED_COLUMN,
            Self::NullIgnoredColumn => PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            Self::UnsupportedType { .. } | Self::RecordColumnType { .. } => PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH,
            Self::GeneratedColumn { .. } => PgSqlErrorCode::ERRCODE_INVALID_COLUMN_DEFINITION,
            Self::TriggerNameTaken { .. } => PgSqlErrorCode::ERRCODE_DUPLICATE_OBJECT,
            Self::CitusTriggersOff { .. } => PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            Self::Spi(_) => PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            Self::NotATable { .. } => {
                Some("Only ordinary and partitioned tables can be versioned.".into())
            }
            Self::InvalidMode(_) => Some("The mode is 'lenient' or 'strict'.".into()),
            Self::InvalidConflicts(_) => Some("conflicts is 'reject', 'merge' or 'observe'.".into()),
            Self::MergeGroupsShape => Some("For example: '[[\"street\", \"city\", \"zip\"]]'.".into()),
            Self::MergeGroupsWithoutMerge => {
                Some("Merge groups say which columns must not be merged apart; pass conflicts => 'merge' or 'observe' too.".into())
            }
            Self::NotMergeable { .. } => Some(
                "A merge group lists columns that count as one: not the version column, an ignored, generated or record column, and each column in one group only."
                    .into(),
            ),
            Self::RecordColumnType { column, .. } => {
                Some(format!("Rename that column, or drop it if it is an old record; enable() adds \"{column}\" as bytea."))
            }
            Self::VersionIgnored { .. } => Some(
                "ignore_columns lists columns whose updates alone do not move the version; the version column always counts."
                    .into(),
            ),
            Self::UnsupportedType { .. } => Some(
                "A version column must be smallint, integer or bigint; name another column, or a new one to have it added as bigint."
                    .into(),
            ),
            Self::GeneratedColumn { .. } => {
                Some("A version column must be a plain column the trigger can write.".into())
            }
            Self::GeneratedIgnored { .. } => Some(
                "An UPDATE never sets a generated column: it counts as changed when a column it is computed from is set."
                    .into(),
            ),
            Self::TriggerNameTaken { trigger, .. } => Some(format!(
                "Rename or drop that trigger; pg_rowversion installs its own as \"{trigger}\"."
            )),
            Self::WriteColumnReserved { .. } => Some(
                "multi_node stamps each row image in that column: name another version column, or leave it out of ignore_columns."
                    .into(),
            ),
            Self::CitusTriggersOff { .. } => Some(
                "Set it for the database (ALTER DATABASE ... SET citus.enable_unsafe_triggers = on): Citus then puts the trigger on every shard, and create_distributed_table() accepts a versioned table. See docs/scaling-out.md."
                    .into(),
            ),
            Self::InheritedFromParent { parent, .. } => Some(format!(
                "Versioning of a partition follows its parent: enable or disable \"{parent}\"."
            )),
            _ => None,
        }
    }
}

impl From<EnableError> for Report {
    fn from(error: EnableError) -> Self {
        Report::new(error.sqlstate(), error.to_string(), None, error.hint())
    }
}

v1_function! {
    /// `rowversion.enable(rel regclass, version_column name DEFAULT 'version', mode text DEFAULT
    /// 'lenient', ignore_columns name[] DEFAULT '{}', conflicts text DEFAULT 'reject',
    /// merge_groups jsonb DEFAULT '[]', multi_node boolean DEFAULT false)`, STRICT. Older
    /// declarations, which a database runs
    /// until ALTER EXTENSION UPDATE, stop earlier: 0.1.0's after `mode`, 0.2.0's after
    /// `ignore_columns`. (The symbol keeps the name pgrx gave it in 0.1.0.)
    pg_finfo_enable_wrapper,
    declared [
        "enable(regclass, name, text, name[], text, jsonb, boolean) -> void",
        "enable(regclass, name, text, name[]) -> void",
        "enable(regclass, name, text) -> void",
    ],
    fn enable_wrapper(args) -> EnableError {
        let (Some(rel), Some(column), Some(mode)) = (args.oid(0), args.datum(1), args.datum(2)) else {
            return Ok(None);
        };
        // SAFETY: arguments 1 to 3 are a name, a text and a name[].
        unsafe {
            let column = encoding::cstr_from_server(column.cast_mut_ptr::<std::ffi::c_char>());
            let mode = encoding::cstr_from_server_lossy(pg_sys::text_to_cstring(mode.cast_mut_ptr()));
            let ignore = match args.datum(3) {
                Some(array) => names(array)?,
                None => Vec::new(),
            };
            let conflicts = match args.datum(4) {
                Some(text) => encoding::cstr_from_server_lossy(pg_sys::text_to_cstring(text.cast_mut_ptr())),
                None => Conflicts::Reject.as_str().into(),
            };
            let options = Options {
                mode: &mode,
                ignore: &ignore,
                conflicts: &conflicts,
                merge_groups: args.datum(5),
                multi_node: args.datum(6).is_some_and(|d| d.value() != 0),
            };
            Spi::connect_mut(|client| enable_table(client, rel, &column, options)).map(|()| None)
        }
    }
}

/// The elements of a `name[]` argument, at most as many as a table can have columns.
///
/// # Safety
/// `array` must be a `name[]` Datum of the current call.
unsafe fn names(array: pg_sys::Datum) -> Result<Vec<String>, EnableError> {
    // SAFETY: deconstruct_array reads a detoasted name[] into palloc'd element and null arrays.
    unsafe {
        let array = pg_sys::pg_detoast_datum(array.cast_mut_ptr()) as *mut pg_sys::ArrayType;
        let (mut elements, mut nulls, mut count) = (std::ptr::null_mut(), std::ptr::null_mut(), 0);
        pg_sys::deconstruct_array(
            array,
            pg_sys::NAMEOID,
            pg_sys::NAMEDATALEN as i32,
            false,
            pg_sys::TYPALIGN_CHAR as std::ffi::c_char,
            &mut elements,
            &mut nulls,
            &mut count,
        );
        let count = count as usize;
        if count > pg_sys::MaxHeapAttributeNumber as usize {
            return Err(EnableError::TooManyIgnored(count));
        }
        if count > 0 && std::slice::from_raw_parts(nulls, count).contains(&true) {
            return Err(EnableError::NullIgnoredColumn);
        }
        Ok(std::slice::from_raw_parts(elements, count)
            .iter()
            .map(|name| encoding::cstr_from_server(name.cast_mut_ptr::<std::ffi::c_char>()))
            .collect())
    }
}

v1_function! {
    /// `rowversion.disable(rel regclass)`, STRICT.
    pg_finfo_disable_wrapper,
    declared ["disable(regclass) -> void"],
    fn disable_wrapper(args) -> EnableError {
        let Some(rel) = args.oid(0) else { return Ok(None) };
        Spi::connect_mut(|client| disable_table(client, rel)).map(|()| None)
    }
}

/// The catalog facts about a table that both functions check.
struct Table {
    oid: pg_sys::Oid,
    /// `schema.table` for messages.
    display: String,
    /// `"schema"."table"` for SQL.
    quoted: String,
    owner: pg_sys::Oid,
}

/// Our trigger on a table, if there is one.
enum Installed {
    None,
    Ours,
    Inherited { parent: String },
    Foreign,
}

fn owned_table(client: &mut SpiClient<'_>, rel: pg_sys::Oid) -> Result<Table, EnableError> {
    let relation = table::relation(client, rel)?.ok_or(EnableError::NoSuchRelation(rel.to_u32()))?;
    if let Some(kind) = relation.not_a_table {
        return Err(EnableError::NotATable { table: relation.display, kind });
    }
    if !relation.caller_owns {
        return Err(EnableError::NotOwner { table: relation.display });
    }
    // Citus refuses triggers on its tables unless told they are safe (XX000 otherwise); the
    // version trigger touches only its own row, on the shard that holds it.
    if crate::citus::is_citus_table(rel) && !citus_allows_triggers() {
        return Err(EnableError::CitusTriggersOff { table: relation.display });
    }
    Ok(Table { oid: rel, display: relation.display, quoted: relation.quoted, owner: relation.owner })
}

/// Whether `citus.enable_unsafe_triggers` is on.
fn citus_allows_triggers() -> bool {
    // SAFETY: a setting read by name, NULL when Citus has not defined it.
    unsafe {
        let value = pg_sys::GetConfigOption(c"citus.enable_unsafe_triggers".as_ptr(), true, false);
        !value.is_null() && std::ffi::CStr::from_ptr(value) == c"on"
    }
}

/// Our triggers: the version trigger, and the replication trigger of `multi_node`.
#[derive(Clone, Copy)]
enum Trigger {
    Version,
    Replication,
}

impl Trigger {
    fn name(self) -> &'static str {
        match self {
            Self::Version => TRIGGER_NAME,
            Self::Replication => replication::TRIGGER_NAME,
        }
    }

    fn function(self) -> &'static str {
        match self {
            Self::Version => "rowversion.version_trigger()",
            Self::Replication => "rowversion.replication_trigger()",
        }
    }
}

fn installed_trigger(client: &mut SpiClient<'_>, table: &Table, trigger: Trigger) -> Result<Installed, EnableError> {
    let row = client
        .select(
            "SELECT t.tgfoid OPERATOR(pg_catalog.=) pg_catalog.to_regprocedure($3)::pg_catalog.oid,
                    pg_catalog.convert_to(parent.tgrelid::pg_catalog.regclass::pg_catalog.text, 'UTF8')
             FROM pg_catalog.pg_trigger t
             LEFT JOIN pg_catalog.pg_trigger parent ON parent.oid OPERATOR(pg_catalog.=) t.tgparentid
             WHERE t.tgrelid OPERATOR(pg_catalog.=) $1 AND t.tgname OPERATOR(pg_catalog.=) $2::pg_catalog.name",
            Some(1),
            &[table.oid.into(), trigger.name().into(), trigger.function().into()],
        )?
        .first();
    if row.is_empty() {
        return Ok(Installed::None);
    }
    let ours = row.get::<bool>(1)?;
    let parent = row.get::<Vec<u8>>(2)?.map(|bytes| utf8(Some(bytes)));
    Ok(match (ours, parent) {
        (Some(true), Some(parent)) => Installed::Inherited { parent },
        (Some(true), None) => Installed::Ours,
        _ => Installed::Foreign,
    })
}

/// A live column of table $1 by its name, $2 as UTF-8 bytes: its type, type name (UTF-8),
/// NOT NULL, generated and identity flags.
const COLUMN_BY_NAME: &str = "SELECT a.atttypid,
        pg_catalog.convert_to(pg_catalog.format_type(a.atttypid, a.atttypmod), 'UTF8'),
        a.attnotnull, a.attgenerated::pg_catalog.text, a.attidentity::pg_catalog.text
 FROM pg_catalog.pg_attribute a
 WHERE a.attrelid OPERATOR(pg_catalog.=) $1
   AND a.attname OPERATOR(pg_catalog.=) pg_catalog.convert_from($2, 'UTF8')::pg_catalog.name
   AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped";

/// `enable()`'s arguments after the column.
struct Options<'a> {
    mode: &'a str,
    ignore: &'a [String],
    conflicts: &'a str,
    /// A jsonb Datum of the call, `None` under older declarations.
    merge_groups: Option<pg_sys::Datum>,
    multi_node: bool,
}

fn enable_table(
    client: &mut SpiClient<'_>,
    rel: pg_sys::Oid,
    column: &str,
    options: Options,
) -> Result<(), EnableError> {
    let mode = Mode::parse(options.mode).ok_or_else(|| EnableError::InvalidMode(options.mode.into()))?;
    let conflicts =
        Conflicts::parse(options.conflicts).ok_or_else(|| EnableError::InvalidConflicts(options.conflicts.into()))?;
    let ignore = options.ignore;
    let table = owned_table(client, rel)?;
    // A trigger of that name that is not ours is in the way only when ours is to be created.
    let ours = if options.multi_node { &[Trigger::Version, Trigger::Replication][..] } else { &[Trigger::Version] };
    for &trigger in ours {
        match installed_trigger(client, &table, trigger)? {
            Installed::None | Installed::Ours => {}
            Installed::Inherited { parent } => {
                return Err(EnableError::InheritedFromParent { table: table.display, parent })
            }
            Installed::Foreign => {
                return Err(EnableError::TriggerNameTaken { table: table.display, trigger: trigger.name() })
            }
        }
    }
    if options.multi_node {
        let reserved = if column == WRITE_COLUMN {
            Some("the version column")
        } else if ignore.iter().any(|name| name == WRITE_COLUMN) {
            Some("ignored")
        } else {
            None
        };
        if let Some(role) = reserved {
            return Err(EnableError::WriteColumnReserved { table: table.display, column: WRITE_COLUMN.into(), role });
        }
    }

    let quoted_column = quote_identifier(column);
    let existing = client.select(COLUMN_BY_NAME, Some(1), &[table.oid.into(), column.as_bytes().into()])?.first();
    let may_hold_nulls = if existing.is_empty() {
        let add = format!("ALTER TABLE {} ADD COLUMN {quoted_column} bigint NOT NULL DEFAULT 1", table.quoted);
        client.update(&encoding::to_server(&add), None, &[])?;
        false
    } else {
        let type_oid = existing.get::<pg_sys::Oid>(1)?.unwrap_or(pg_sys::InvalidOid);
        if VersionType::from_oid(type_oid).is_none() {
            return Err(EnableError::UnsupportedType {
                table: table.display,
                column: column.into(),
                type_name: utf8(existing.get::<Vec<u8>>(2)?),
            });
        }
        let generated = existing.get::<String>(4)?.unwrap_or_default();
        let identity = existing.get::<String>(5)?.unwrap_or_default();
        let kind = match (generated.is_empty(), identity.is_empty()) {
            (true, true) => None,
            (false, _) => Some("a generated"),
            (_, false) => Some("an identity"),
        };
        if let Some(kind) = kind {
            return Err(EnableError::GeneratedColumn { table: table.display, column: column.into(), kind });
        }
        !existing.get::<bool>(3)?.unwrap_or(false)
    };

    // The WHEN clause names the version column first, then the ignored ones; in merge mode
    // the record column and the merge groups (src/version_column.rs).
    let mut when = format!("NEW.{quoted_column} IS NULL OR ");
    let ignored = ignore_columns(client, &table, column, ignore)?;
    for name in &ignored {
        when.push_str(&format!("NEW.{} IS NULL OR ", quote_identifier(name)));
    }
    let groups = merge_groups(client, &table, options.merge_groups)?;
    if conflicts == Conflicts::Reject && !groups.is_empty() {
        return Err(EnableError::MergeGroupsWithoutMerge);
    }
    let mut arguments = quote_literal(mode.as_str());
    // Merge and observe mode keep the record (observe says whether merge would accept).
    if conflicts != Conflicts::Reject {
        let mut seen: Vec<&String> = Vec::new();
        for name in groups.iter().flatten() {
            let what = if name == column {
                Some("the version column")
            } else if ignored.contains(&name) {
                Some("an ignored column")
            } else if seen.contains(&name) {
                Some("in another group too")
            } else {
                None
            };
            if let Some(what) = what {
                return Err(EnableError::NotMergeable { column: name.clone(), what });
            }
            seen.push(name);
        }
        if column == RECORD_COLUMN || ignored.iter().any(|&name| name == RECORD_COLUMN) {
            return Err(EnableError::NotMergeable { column: RECORD_COLUMN.into(), what: "the record column" });
        }
        bytea_column(client, &table, RECORD_COLUMN, "merge mode keeps its record")?;
        when.push_str(&format!("NEW.{} IS NOT NULL OR ", quote_identifier(RECORD_COLUMN)));
        for group in &groups {
            let members: Vec<String> = group.iter().map(|name| format!("NEW.{}", quote_identifier(name))).collect();
            when.push_str(&format!("ROW({}) IS NULL OR ", members.join(", ")));
        }
        arguments.push_str(&format!(", {}", quote_literal(conflicts.as_str())));
    }
    let trigger = format!(
        "CREATE OR REPLACE TRIGGER {TRIGGER_NAME} BEFORE INSERT OR UPDATE ON {table}
         FOR EACH ROW WHEN ({when}true)
         EXECUTE FUNCTION rowversion.version_trigger({arguments})",
        table = table.quoted,
    );
    client.update(&encoding::to_server(&trigger), None, &[])?;
    if options.multi_node {
        // Enabled ALWAYS: it fires in the apply worker too (src/replication.rs). Named after
        // the version trigger, it fires after it and sees the new version.
        bytea_column(client, &table, WRITE_COLUMN, "multi_node keeps its write stamps")?;
        let trigger = format!(
            "CREATE OR REPLACE TRIGGER {name} BEFORE INSERT OR UPDATE ON {table}
             FOR EACH ROW WHEN (NEW.{quoted_column} IS NULL OR NEW.{write} IS NOT NULL OR true)
             EXECUTE FUNCTION rowversion.replication_trigger()",
            name = replication::TRIGGER_NAME,
            table = table.quoted,
            write = quote_identifier(WRITE_COLUMN),
        );
        client.update(&encoding::to_server(&trigger), None, &[])?;
        let always = format!("ALTER TABLE {} ENABLE ALWAYS TRIGGER {}", table.quoted, replication::TRIGGER_NAME);
        client.update(&encoding::to_server(&always), None, &[])?;
    } else {
        drop_replication_trigger(client, &table)?;
    }
    // Versioning is per table: a plain table's inheritance children are tables of their own
    // (the trigger does not fire for their rows, the checked functions use ONLY). Partitions
    // share their parent's trigger.
    let unversioned_children = client
        .select(
            "SELECT pg_catalog.count(*) FROM pg_catalog.pg_inherits i
             JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) i.inhrelid
             WHERE i.inhparent OPERATOR(pg_catalog.=) $1 AND NOT c.relispartition
               AND NOT EXISTS (SELECT FROM pg_catalog.pg_trigger t
                               WHERE t.tgrelid OPERATOR(pg_catalog.=) i.inhrelid
                                 AND t.tgfoid OPERATOR(pg_catalog.=)
                                     'rowversion.version_trigger()'::pg_catalog.regprocedure::pg_catalog.oid)",
            Some(1),
            &[table.oid.into()],
        )?
        .first()
        .get_one::<i64>()?
        .unwrap_or(0);
    if unversioned_children > 0 {
        report::notice(&format!(
            "table \"{}\" has inheritance children that are not versioned: versioning and the checked functions cover only its own rows",
            table.display
        ));
    }
    if may_hold_nulls {
        // Runs under the new trigger: a stored NULL counts as version 0, so setting 1 is
        // accepted as the next version in either mode.
        let fill = format!("UPDATE {} SET {quoted_column} = 1 WHERE {quoted_column} IS NULL", table.quoted);
        let fill = encoding::to_server(&fill);
        as_owner(table.owner, || client.update(&fill, None, &[]))?;
    }
    Ok(())
}

/// The distinct columns of `ignore`, each checked to be a column of the table other than the
/// version column.
fn ignore_columns<'a>(
    client: &mut SpiClient<'_>,
    table: &Table,
    version_column: &str,
    ignore: &'a [String],
) -> Result<Vec<&'a String>, EnableError> {
    let mut columns: Vec<&String> = Vec::new();
    for name in ignore {
        if name == version_column {
            return Err(EnableError::VersionIgnored { column: name.clone() });
        }
        if generated_column(client, table, name)? {
            return Err(EnableError::GeneratedIgnored { table: table.display.clone(), column: name.clone() });
        }
        if !columns.contains(&name) {
            columns.push(name);
        }
    }
    Ok(columns)
}

/// Whether live column `name` of the table is generated; `NoSuchColumn` when there is none.
fn generated_column(client: &mut SpiClient<'_>, table: &Table, name: &str) -> Result<bool, EnableError> {
    let found = client.select(COLUMN_BY_NAME, Some(1), &[table.oid.into(), name.as_bytes().into()])?;
    if found.is_empty() {
        return Err(EnableError::NoSuchColumn { table: table.display.clone(), column: name.into() });
    }
    Ok(!found.first().get::<String>(4)?.unwrap_or_default().is_empty())
}

/// The merge groups of the `merge_groups` argument, each a list of distinct columns of the
/// table; empty for `'[]'` or an older declaration without the argument.
fn merge_groups(
    client: &mut SpiClient<'_>,
    table: &Table,
    merge_groups: Option<pg_sys::Datum>,
) -> Result<Vec<Vec<String>>, EnableError> {
    let Some(merge_groups) = merge_groups else { return Ok(Vec::new()) };
    // SAFETY: the Datum is the call's jsonb argument, alive for the call.
    let argument = || unsafe { pgrx::datum::DatumWithOid::new(merge_groups, pg_sys::JSONBOID) };
    // The shape first, and the size, so that a large argument is not read into memory here.
    let shape = client
        .select(
            "SELECT pg_catalog.jsonb_typeof($1) OPERATOR(pg_catalog.=) 'array'
                    AND NOT EXISTS (SELECT FROM pg_catalog.jsonb_array_elements($1) g
                                    WHERE pg_catalog.jsonb_typeof(g) OPERATOR(pg_catalog.<>) 'array'
                                       OR EXISTS (SELECT FROM pg_catalog.jsonb_array_elements(g) e
                                                  WHERE pg_catalog.jsonb_typeof(e) OPERATOR(pg_catalog.<>) 'string')),
                    (SELECT pg_catalog.count(*) FROM pg_catalog.jsonb_array_elements($1) g,
                            pg_catalog.jsonb_array_elements(g) e
                     WHERE pg_catalog.jsonb_typeof($1) OPERATOR(pg_catalog.=) 'array'
                       AND pg_catalog.jsonb_typeof(g) OPERATOR(pg_catalog.=) 'array')",
            Some(1),
            &[argument()],
        )?
        .first();
    if !shape.get::<bool>(1)?.unwrap_or(false) {
        return Err(EnableError::MergeGroupsShape);
    }
    let count = shape.get::<i64>(2)?.unwrap_or(0) as usize;
    if count > pg_sys::MaxHeapAttributeNumber as usize {
        return Err(EnableError::TooManyGrouped(count));
    }
    let mut groups: Vec<Vec<String>> = Vec::new();
    let names = client.select(
        "SELECT g.n, pg_catalog.convert_to(
                    (e OPERATOR(pg_catalog.#>>) '{}'::pg_catalog.text[])::pg_catalog.name::pg_catalog.text, 'UTF8')
         FROM pg_catalog.jsonb_array_elements($1) WITH ORDINALITY g(g, n), pg_catalog.jsonb_array_elements(g.g) e
         ORDER BY g.n",
        None,
        &[argument()],
    )?;
    let mut last = 0;
    for row in names {
        let group = row.get::<i64>(1)?.unwrap_or(0);
        let name = utf8(row.get::<Vec<u8>>(2)?);
        if group != last {
            groups.push(Vec::new());
            last = group;
        }
        if name == RECORD_COLUMN {
            return Err(EnableError::NotMergeable { column: name, what: "the record column" });
        }
        if name == WRITE_COLUMN {
            return Err(EnableError::NotMergeable { column: name, what: "the write column of multi_node" });
        }
        if generated_column(client, table, &name)? {
            return Err(EnableError::NotMergeable { column: name, what: "a generated column" });
        }
        let group = groups.last_mut().expect("a group was pushed");
        if group.contains(&name) {
            return Err(EnableError::NotMergeable { column: name, what: "in the same group twice" });
        }
        group.push(name);
    }
    Ok(groups)
}

/// A column of the extension's (merge mode's record [`RECORD_COLUMN`], multi_node's
/// [`WRITE_COLUMN`]), `bytea`, added when missing; `what` it keeps, for the error.
fn bytea_column(client: &mut SpiClient<'_>, table: &Table, name: &str, what: &'static str) -> Result<(), EnableError> {
    let existing = client.select(COLUMN_BY_NAME, Some(1), &[table.oid.into(), name.as_bytes().into()])?.first();
    if existing.is_empty() {
        let add = format!("ALTER TABLE {} ADD COLUMN {} pg_catalog.bytea", table.quoted, quote_identifier(name));
        client.update(&encoding::to_server(&add), None, &[])?;
    } else if existing.get::<pg_sys::Oid>(1)?.unwrap_or(pg_sys::InvalidOid) != pg_sys::BYTEAOID
        || !existing.get::<String>(4)?.unwrap_or_default().is_empty()
    {
        return Err(EnableError::RecordColumnType {
            table: table.display.clone(),
            column: name.into(),
            type_name: utf8(existing.get::<Vec<u8>>(2)?),
            what,
        });
    }
    Ok(())
}

fn disable_table(client: &mut SpiClient<'_>, rel: pg_sys::Oid) -> Result<(), EnableError> {
    let table = owned_table(client, rel)?;
    // multi_node's trigger goes too, also when the version trigger was dropped by hand.
    drop_replication_trigger(client, &table)?;
    match installed_trigger(client, &table, Trigger::Version)? {
        Installed::Ours => {
            let drop = format!("DROP TRIGGER {TRIGGER_NAME} ON {}", table.quoted);
            client.update(&encoding::to_server(&drop), None, &[])?;
        }
        Installed::Inherited { parent } => {
            return Err(EnableError::InheritedFromParent { table: table.display, parent })
        }
        Installed::None | Installed::Foreign => {
            report::notice(&format!("table \"{}\" is not versioned, skipping", table.display));
        }
    }
    Ok(())
}

/// Drops the replication trigger of `multi_node`, if the table has it; its write column stays.
fn drop_replication_trigger(client: &mut SpiClient<'_>, table: &Table) -> Result<(), EnableError> {
    if let Installed::Ours = installed_trigger(client, table, Trigger::Replication)? {
        let drop = format!("DROP TRIGGER {} ON {}", replication::TRIGGER_NAME, table.quoted);
        client.update(&encoding::to_server(&drop), None, &[])?;
    }
    Ok(())
}
