//! Checked updates and deletes as SQL functions, for clients that would rather call a
//! function than hand-write `UPDATE ... WHERE id = ? AND version = ?` and check the row count:
//! `rowversion.update`, `try_update`, `delete`, `current_version` and `update_many`, declared
//! in `sql/checked.sql`.
//!
//! Each runs one statement with the caller's privileges, built with quoted identifiers and
//! run with the key, the changes and the version as parameters. Values are converted by
//! `jsonb_populate_record` on the table's row type, so they follow Postgres' own JSON-to-column
//! rules. Statements are prepared once per table and column set and kept for the session,
//! until the table's definition changes (a relcache invalidation).
//!
//! Every name in these statements is qualified: tables and columns are quoted, functions,
//! types and operators are pg_catalog's, and a key column is compared with the equality
//! operator of its primary-key index's operator class, named by that operator's own schema.
//! So the caller's `search_path` cannot put another role's operator into a statement that a
//! superuser runs.
//!
//! The version check is in the statement's WHERE clause; when it matches no row, a second
//! look tells a missing row (`P0002`) from a stale version, which is reported as the same
//! `40001` conflict the trigger raises, error fields included. The functions are plain V1 C
//! functions so that this error leaves through Postgres' `errfinish` with those fields intact.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::spi::{quote_identifier, quote_literal, quote_qualified_identifier, OwnedPreparedStatement};
use pgrx::{JsonB, PgOid, PgRelation, PgSqlErrorCode};
use serde_json::Value;

use crate::report::{raise_on_column, Report};
use crate::trigger::{describe_key, TriggerError};

#[derive(Debug, thiserror::Error)]
pub enum CheckedError {
    #[error("{0} must not be NULL")]
    NullArgument(&'static str),
    #[error("relation with OID {0} does not exist")]
    NoSuchRelation(u32),
    #[error("table \"{table}\" is not versioned")]
    NotVersioned { table: String, quoted: String },
    #[error("versioning of table \"{table}\" is disabled")]
    VersioningDisabled { table: String, quoted: String },
    #[error("table \"{0}\" has no primary key")]
    NoPrimaryKey(String),
    #[error("{0} must be a JSON object")]
    NotAnObject(&'static str),
    #[error("key does not match the primary key of table \"{table}\"")]
    KeyMismatch { table: String, missing: Vec<String>, extra: Vec<String>, primary_key: Vec<String> },
    #[error("column \"{column}\" of table \"{table}\" does not exist")]
    UnknownColumn { table: String, column: String },
    #[error("changes must not set {kind} column \"{column}\" of table \"{table}\"")]
    SystemSetColumn { table: String, column: String, kind: &'static str },
    #[error("no row in table \"{table}\" has key {key}")]
    NoSuchRow { table: String, key: String },
    #[error("rows[{index}]: {problem}")]
    BadRow { index: usize, problem: &'static str },
    #[error("row version conflict on table \"{table}\"")]
    Conflict { relid: pg_sys::Oid, attnum: i16, table: String, key: Option<String>, expected: i64, found: i64 },
    #[error("internal query failed: {0}")]
    Spi(#[from] pgrx::spi::SpiError),
}

impl CheckedError {
    fn sqlstate(&self) -> PgSqlErrorCode {
        match self {
            Self::NullArgument(_) => PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            Self::NoSuchRelation(_) => PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
            Self::NotVersioned { .. } | Self::VersioningDisabled { .. } | Self::NoPrimaryKey(_) => {
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE
            }
            Self::NotAnObject(_) | Self::KeyMismatch { .. } | Self::BadRow { .. } => {
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE
            }
            Self::UnknownColumn { .. } => PgSqlErrorCode::ERRCODE_UNDEFINED_COLUMN,
            Self::SystemSetColumn { .. } => PgSqlErrorCode::ERRCODE_GENERATED_ALWAYS,
            Self::NoSuchRow { .. } => PgSqlErrorCode::ERRCODE_NO_DATA_FOUND,
            Self::Conflict { .. } => PgSqlErrorCode::ERRCODE_T_R_SERIALIZATION_FAILURE,
            Self::Spi(_) => PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
        }
    }

    fn detail(&self) -> Option<String> {
        let names = |columns: &[String]| {
            columns.iter().map(|c| format!("\"{c}\"")).collect::<Vec<_>>().join(", ")
        };
        match self {
            Self::KeyMismatch { missing, extra, primary_key, .. } => {
                let mut detail = String::new();
                if !missing.is_empty() {
                    detail.push_str(&format!("Missing: {}. ", names(missing)));
                }
                if !extra.is_empty() {
                    detail.push_str(&format!("Not in the primary key: {}. ", names(extra)));
                }
                detail.push_str(&format!("The primary key is ({}).", names(primary_key)));
                Some(detail)
            }
            Self::NoPrimaryKey(_) => Some("Checked updates find rows by their primary key.".into()),
            _ => None,
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            // `quoted` is the quoted identifier, pasted as a literal: safe for any table name.
            Self::NotVersioned { quoted, .. } => {
                Some(format!("Enable it with: SELECT rowversion.enable({});", quote_literal(quoted)))
            }
            Self::VersioningDisabled { quoted, .. } => {
                Some(format!("Re-enable the trigger with: ALTER TABLE {quoted} ENABLE TRIGGER rowversion;"))
            }
            Self::SystemSetColumn { kind: "version", .. } => Some(
                "The version moves by itself: pass the version you read as expected_version.".into(),
            ),
            _ => None,
        }
    }

    /// Raises this error. A conflict goes out as the trigger's conflict, with its fields.
    pub fn raise(self) -> ! {
        if let Self::Conflict { relid, attnum, table, key, expected, found } = self {
            // The stored version came from the probe, a SELECT with the caller's privileges and
            // row-level security: the caller could read it with plain SQL.
            let report = TriggerError::Conflict { table, key, expected, found: Some(found) }.into_report();
            // SAFETY: the table was just updated through, so it exists and is locked; this
            // frame holds nothing that needs dropping (report is consumed).
            unsafe {
                let rel = pg_sys::relation_open(relid, pg_sys::NoLock as pg_sys::LOCKMODE);
                raise_on_column(rel, attnum, report)
            }
        }
        Report { code: self.sqlstate(), message: self.to_string(), detail: self.detail(), hint: self.hint() }
            .raise()
    }
}

pub type Result<T> = std::result::Result<T, CheckedError>;

/// What statements that find one row by its primary key need to know about a table.
pub struct Table {
    pub display: String,
    pub quoted: String,
    /// `None` when the table is not versioned.
    versioning: Option<Versioning>,
    primary_key: Vec<KeyColumn>,
    /// Every column, and whether it is generated.
    columns: HashMap<String, bool>,
}

/// A primary key column, and `OPERATOR(schema.=)`: the equality operator of the key index's
/// operator class, which is what makes the condition an index lookup.
struct KeyColumn {
    name: String,
    equals: String,
}

struct Versioning {
    column: String,
    attnum: i16,
    enabled: bool,
}

#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Statement {
    /// UPDATE of these columns (sorted) and the version.
    Update(Vec<String>),
    Delete,
    /// The current version of a row, and its key as a row of the table's type.
    Probe,
    /// Where a row is: its partition and its tuple (block, offset).
    Locate,
}

struct CachedTable {
    table: Rc<Table>,
    statements: HashMap<Statement, Rc<OwnedPreparedStatement>>,
}

/// Relations whose cached statements must be rebuilt, or `All` of them.
enum Stale {
    Some(HashSet<pg_sys::Oid>),
    All,
}

thread_local! {
    static TABLES: RefCell<HashMap<pg_sys::Oid, CachedTable>> = RefCell::new(HashMap::new());
    /// Written by the relcache callback, which must not free plans or touch `TABLES` (it can
    /// run while `TABLES` is borrowed, inside any catalog access).
    static STALE: RefCell<Stale> = RefCell::new(Stale::Some(HashSet::new()));
}

/// Called from the relcache invalidation callback.
pub fn forget(relid: pg_sys::Oid) {
    STALE.with_borrow_mut(|stale| match stale {
        Stale::All => {}
        Stale::Some(_) if relid == pg_sys::InvalidOid => *stale = Stale::All,
        Stale::Some(relids) => {
            relids.insert(relid);
        }
    });
}

/// Drops cache entries that were invalidated since the last call.
fn drop_stale() {
    let stale = STALE.with_borrow_mut(|stale| std::mem::replace(stale, Stale::Some(HashSet::new())));
    TABLES.with_borrow_mut(|tables| match stale {
        Stale::All => tables.clear(),
        Stale::Some(relids) => relids.iter().for_each(|relid| {
            tables.remove(relid);
        }),
    });
}

/// The table, from the session's cache.
pub fn table(relid: pg_sys::Oid) -> Result<Rc<Table>> {
    drop_stale();
    if let Some(table) = TABLES.with_borrow(|tables| tables.get(&relid).map(|t| t.table.clone())) {
        return Ok(table);
    }
    let table = Rc::new(load_table(relid)?);
    TABLES.with_borrow_mut(|tables| {
        tables.insert(relid, CachedTable { table: table.clone(), statements: HashMap::new() })
    });
    Ok(table)
}

fn load_table(relid: pg_sys::Oid) -> Result<Table> {
    Spi::connect(|client| {
        let row = client
            .select(
                "SELECT n.nspname::pg_catalog.text, c.relname::pg_catalog.text
                 FROM pg_catalog.pg_class c
                 JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
                 WHERE c.oid OPERATOR(pg_catalog.=) $1",
                Some(1),
                &[relid.into()],
            )?
            .first();
        if row.is_empty() {
            return Err(CheckedError::NoSuchRelation(relid.to_u32()));
        }
        let (schema, name) = row.get_two::<String, String>()?;
        let (schema, name) = (schema.unwrap_or_default(), name.unwrap_or_default());
        let display = format!("{schema}.{name}");

        let trigger = client
            .select(
                "SELECT a.attname::pg_catalog.text, a.attnum,
                        t.tgenabled OPERATOR(pg_catalog.=) 'O' OR t.tgenabled OPERATOR(pg_catalog.=) 'A'
                 FROM pg_catalog.pg_trigger t
                 JOIN pg_catalog.pg_depend d
                   ON d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_trigger'::pg_catalog.regclass::pg_catalog.oid
                  AND d.objid OPERATOR(pg_catalog.=) t.oid
                  AND d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass::pg_catalog.oid
                  AND d.refobjid OPERATOR(pg_catalog.=) t.tgrelid AND d.refobjsubid OPERATOR(pg_catalog.>) 0
                 JOIN pg_catalog.pg_attribute a
                   ON a.attrelid OPERATOR(pg_catalog.=) t.tgrelid AND a.attnum OPERATOR(pg_catalog.=) d.refobjsubid
                 WHERE t.tgrelid OPERATOR(pg_catalog.=) $1
                   AND t.tgfoid OPERATOR(pg_catalog.=) 'rowversion.version_trigger()'::pg_catalog.regprocedure::pg_catalog.oid",
                Some(1),
                &[relid.into()],
            )?
            .first();
        let versioning = if trigger.is_empty() {
            None
        } else {
            let (column, attnum, enabled) = trigger.get_three::<String, i16, bool>()?;
            Some(Versioning {
                column: column.unwrap_or_default(),
                attnum: attnum.unwrap_or_default(),
                enabled: enabled.unwrap_or(false),
            })
        };

        // The key columns (not INCLUDE columns) in index order, each with the equality
        // operator of its operator class (btree strategy 3) and that operator's schema.
        let primary_key = client
            .select(
                "SELECT a.attname::pg_catalog.text, n.nspname::pg_catalog.text, o.oprname::pg_catalog.text
                 FROM pg_catalog.pg_index i
                 CROSS JOIN LATERAL ROWS FROM (pg_catalog.unnest(i.indkey::pg_catalog.int2[]),
                                               pg_catalog.unnest(i.indclass::pg_catalog.oid[]))
                      WITH ORDINALITY AS k (attnum, opclass, position)
                 JOIN pg_catalog.pg_attribute a
                   ON a.attrelid OPERATOR(pg_catalog.=) i.indrelid AND a.attnum OPERATOR(pg_catalog.=) k.attnum
                 JOIN pg_catalog.pg_opclass c ON c.oid OPERATOR(pg_catalog.=) k.opclass
                 JOIN pg_catalog.pg_amop e
                   ON e.amopfamily OPERATOR(pg_catalog.=) c.opcfamily
                  AND e.amoplefttype OPERATOR(pg_catalog.=) c.opcintype
                  AND e.amoprighttype OPERATOR(pg_catalog.=) c.opcintype
                  AND e.amopstrategy OPERATOR(pg_catalog.=) 3
                 JOIN pg_catalog.pg_operator o ON o.oid OPERATOR(pg_catalog.=) e.amopopr
                 JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) o.oprnamespace
                 WHERE i.indrelid OPERATOR(pg_catalog.=) $1 AND i.indisprimary
                   AND k.position OPERATOR(pg_catalog.<=) i.indnkeyatts
                 ORDER BY k.position",
                None,
                &[relid.into()],
            )?
            .map(|row| {
                let text = |column| row.get::<String>(column).map(Option::unwrap_or_default);
                Ok(KeyColumn {
                    name: text(1)?,
                    equals: format!("OPERATOR({}.{})", quote_identifier(text(2)?), text(3)?),
                })
            })
            .collect::<std::result::Result<Vec<_>, pgrx::spi::SpiError>>()?;
        let columns = client
            .select(
                "SELECT attname::pg_catalog.text, attgenerated OPERATOR(pg_catalog.<>) ''
                 FROM pg_catalog.pg_attribute
                 WHERE attrelid OPERATOR(pg_catalog.=) $1 AND attnum OPERATOR(pg_catalog.>) 0
                   AND NOT attisdropped",
                None,
                &[relid.into()],
            )?
            .map(|row| Ok((row.get::<String>(1)?.unwrap_or_default(), row.get::<bool>(2)?.unwrap_or(false))))
            .collect::<std::result::Result<HashMap<_, _>, pgrx::spi::SpiError>>()?;
        Ok(Table {
            display,
            quoted: quote_qualified_identifier(&schema, &name),
            versioning,
            primary_key,
            columns,
        })
    })
}

impl Table {
    fn versioning(&self) -> Result<&Versioning> {
        match &self.versioning {
            None => Err(CheckedError::NotVersioned { table: self.display.clone(), quoted: self.quoted.clone() }),
            Some(versioning) if !versioning.enabled => Err(CheckedError::VersioningDisabled {
                table: self.display.clone(),
                quoted: self.quoted.clone(),
            }),
            Some(versioning) => Ok(versioning),
        }
    }

    /// Checks that `key` names exactly the primary key columns.
    pub fn check_key(&self, key: &Value) -> Result<()> {
        if self.primary_key.is_empty() {
            return Err(CheckedError::NoPrimaryKey(self.display.clone()));
        }
        let Value::Object(fields) = key else {
            return Err(CheckedError::NotAnObject("key"));
        };
        let missing: Vec<String> =
            self.key_names().filter(|c| !fields.contains_key(*c)).cloned().collect();
        let extra: Vec<String> =
            fields.keys().filter(|k| !self.key_names().any(|c| c == *k)).cloned().collect();
        if missing.is_empty() && extra.is_empty() {
            return Ok(());
        }
        Err(CheckedError::KeyMismatch {
            table: self.display.clone(),
            missing,
            extra,
            primary_key: self.key_names().cloned().collect(),
        })
    }

    fn key_names(&self) -> impl Iterator<Item = &String> {
        self.primary_key.iter().map(|c| &c.name)
    }

    /// The columns `changes` sets, sorted, once checked.
    fn changed_columns(&self, changes: &Value) -> Result<Vec<String>> {
        let Value::Object(fields) = changes else {
            return Err(CheckedError::NotAnObject("changes"));
        };
        let mut columns = Vec::with_capacity(fields.len());
        for column in fields.keys() {
            let kind = match self.columns.get(column) {
                None => {
                    return Err(CheckedError::UnknownColumn {
                        table: self.display.clone(),
                        column: column.clone(),
                    })
                }
                Some(_) if self.versioning.as_ref().is_some_and(|v| v.column == *column) => {
                    Some("version")
                }
                Some(true) => Some("generated"),
                Some(false) => None,
            };
            if let Some(kind) = kind {
                return Err(CheckedError::SystemSetColumn {
                    table: self.display.clone(),
                    column: column.clone(),
                    kind,
                });
            }
            columns.push(column.clone());
        }
        columns.sort();
        Ok(columns)
    }

    /// `t.pk OPERATOR(s.=) (jsonb_populate_record(NULL::table, $1)).pk AND ...`: an index
    /// condition whose right side is computed once per execution, so the plan is a plain
    /// primary-key lookup.
    pub fn key_condition(&self) -> String {
        self.primary_key
            .iter()
            .map(|KeyColumn { name, equals }| {
                let c = quote_identifier(name);
                format!("t.{c} {equals} (pg_catalog.jsonb_populate_record(NULL::{}, $1)).{c}", self.quoted)
            })
            .collect::<Vec<_>>()
            .join(" AND ")
    }

    /// SQL text and parameter types of a statement on this table. Values are converted with
    /// `jsonb_populate_record` on the table's row type, in expressions rather than in a FROM
    /// list: measured with callgrind, the joins to two function scans cost more to start
    /// per execution than the whole hand-written UPDATE.
    fn sql(&self, statement: &Statement) -> (String, Vec<PgOid>) {
        let version_column = self.versioning.as_ref().map_or("", |v| v.column.as_str());
        let (t, v, keys) = (&self.quoted, quote_identifier(version_column), self.key_condition());
        let jsonb = PgOid::BuiltIn(pg_sys::BuiltinOid::JSONBOID);
        let int8 = PgOid::BuiltIn(pg_sys::BuiltinOid::INT8OID);
        match statement {
            Statement::Update(columns) => {
                let set = columns
                    .iter()
                    .map(|c| {
                        let c = quote_identifier(c);
                        format!("{c} = (pg_catalog.jsonb_populate_record(NULL::{t}, $2)).{c}, ")
                    })
                    .collect::<String>();
                (
                    format!(
                        "UPDATE {t} AS t SET {set}{v} = $3
                         WHERE {keys} AND t.{v} OPERATOR(pg_catalog.=) $3
                         RETURNING t.{v}::pg_catalog.int8"
                    ),
                    vec![jsonb, jsonb, int8],
                )
            }
            Statement::Delete => (
                format!("DELETE FROM {t} AS t WHERE {keys} AND t.{v} OPERATOR(pg_catalog.=) $2 RETURNING 1"),
                vec![jsonb, int8],
            ),
            Statement::Probe => (
                format!(
                    "SELECT t.{v}::pg_catalog.int8, pg_catalog.jsonb_populate_record(NULL::{t}, $1)
                     FROM {t} AS t WHERE {keys}"
                ),
                vec![jsonb],
            ),
            Statement::Locate => (
                format!(
                    "SELECT t.tableoid, (t.ctid::pg_catalog.text::pg_catalog.point)[0]::pg_catalog.int8,
                            (t.ctid::pg_catalog.text::pg_catalog.point)[1]::pg_catalog.int4
                     FROM {t} AS t WHERE {keys}"
                ),
                vec![jsonb],
            ),
        }
    }
}

/// The prepared statement for `statement` on `relid`, prepared on first use.
pub fn prepared(relid: pg_sys::Oid, table: &Table, statement: Statement) -> Result<Rc<OwnedPreparedStatement>> {
    let cached = TABLES.with_borrow(|tables| {
        tables.get(&relid).and_then(|t| t.statements.get(&statement).cloned())
    });
    if let Some(plan) = cached {
        return Ok(plan);
    }
    let (sql, types) = table.sql(&statement);
    let plan = Rc::new(Spi::connect(|client| client.prepare_mut(sql.as_str(), &types).map(|p| p.keep()))?);
    TABLES.with_borrow_mut(|tables| {
        if let Some(cached) = tables.get_mut(&relid) {
            cached.statements.insert(statement, plan.clone());
        }
    });
    Ok(plan)
}

/// A jsonb argument, both parsed (to check it) and as the Datum handed to the statement.
pub struct JsonArg {
    pub value: Value,
    datum: pg_sys::Datum,
}

impl JsonArg {
    pub fn from_datum(datum: pg_sys::Datum) -> Self {
        // SAFETY: the datum is a non-NULL jsonb argument of this call.
        let value = unsafe { JsonB::from_datum(datum, false) }.map(|j| j.0).unwrap_or(Value::Null);
        Self { value, datum }
    }

    pub fn from_value(value: Value) -> Self {
        let datum = JsonB(value.clone()).into_datum().expect("jsonb is never NULL here");
        Self { value, datum }
    }

    pub fn arg(&self) -> DatumWithOid<'static> {
        // SAFETY: `datum` is a jsonb datum that lives for the rest of this call.
        unsafe { DatumWithOid::new(self.datum, pg_sys::JSONBOID) }
    }
}

/// The outcome of a checked statement.
enum Checked {
    Applied(i64),
    Conflict { found: i64, key: Option<String> },
    Missing,
}

fn checked_update(relid: pg_sys::Oid, key: &JsonArg, expected: i64, changes: &JsonArg) -> Result<(Rc<Table>, Checked)> {
    let table = table(relid)?;
    table.versioning()?;
    table.check_key(&key.value)?;
    let columns = table.changed_columns(&changes.value)?;
    let plan = prepared(relid, &table, Statement::Update(columns))?;
    let updated = Spi::connect_mut(|client| {
        let rows = client.update(&*plan, Some(1), &[key.arg(), changes.arg(), expected.into()])?;
        if rows.is_empty() {
            Ok(None)
        } else {
            rows.first().get_one::<i64>()
        }
    })?;
    let outcome = match updated {
        Some(version) => Checked::Applied(version),
        None => why_not(relid, &table, key, expected)?,
    };
    Ok((table, outcome))
}

fn checked_delete(relid: pg_sys::Oid, key: &JsonArg, expected: i64) -> Result<(Rc<Table>, Checked)> {
    let table = table(relid)?;
    table.versioning()?;
    table.check_key(&key.value)?;
    let plan = prepared(relid, &table, Statement::Delete)?;
    let deleted = Spi::connect_mut(|client| {
        client.update(&*plan, Some(1), &[key.arg(), expected.into()]).map(|rows| !rows.is_empty())
    })?;
    let outcome = if deleted { Checked::Applied(expected) } else { why_not(relid, &table, key, expected)? };
    Ok((table, outcome))
}

/// After a checked statement matched no row: is the row missing, or at another version?
fn why_not(relid: pg_sys::Oid, table: &Table, key: &JsonArg, expected: i64) -> Result<Checked> {
    let plan = prepared(relid, table, Statement::Probe)?;
    Spi::connect(|client| {
        let rows = client.select(&*plan, Some(1), &[key.arg()])?;
        if rows.is_empty() {
            return Ok(Checked::Missing);
        }
        let row = rows.first();
        let found = row.get::<i64>(1)?.unwrap_or(0);
        if found == expected {
            // Visible to SELECT but not to UPDATE/DELETE (row-level security): as a plain
            // statement would, treat it as no row.
            return Ok(Checked::Missing);
        }
        let key_row = row.get_datum_by_ordinal(2)?;
        // SAFETY: column 2 is a row of the table's own type, so the table's descriptor reads
        // its key columns; the relation is open for the duration of the call.
        let key = key_row.and_then(|datum| unsafe {
            let relation = PgRelation::with_lock(relid, pg_sys::NoLock as pg_sys::LOCKMODE);
            let header = pg_sys::pg_detoast_datum(datum.cast_mut_ptr()) as pg_sys::HeapTupleHeader;
            let mut tuple = pg_sys::HeapTupleData {
                t_len: pgrx::varlena::varsize(header.cast()) as u32,
                t_data: header,
                ..Default::default()
            };
            describe_key(relation.as_ptr(), &mut tuple)
        });
        Ok(Checked::Conflict { found, key })
    })
}

fn current(relid: pg_sys::Oid, key: &JsonArg) -> Result<Option<i64>> {
    let table = table(relid)?;
    table.versioning()?;
    table.check_key(&key.value)?;
    let plan = prepared(relid, &table, Statement::Probe)?;
    Ok(Spi::connect(|client| {
        let rows = client.select(&*plan, Some(1), &[key.arg()])?;
        if rows.is_empty() {
            Ok(None)
        } else {
            rows.first().get::<i64>(1)
        }
    })?)
}

/// Turns a missing row or a conflict into the error `update`/`delete` raise.
fn require_applied(relid: pg_sys::Oid, table: &Table, key: &JsonArg, expected: i64, outcome: Checked) -> Result<i64> {
    match outcome {
        Checked::Applied(version) => Ok(version),
        Checked::Missing => Err(CheckedError::NoSuchRow { table: table.display.clone(), key: key.value.to_string() }),
        Checked::Conflict { found, key } => Err(CheckedError::Conflict {
            relid,
            attnum: table.versioning()?.attnum,
            table: table.display.clone(),
            key,
            expected,
            found,
        }),
    }
}

fn update_many(relid: pg_sys::Oid, rows: &Value) -> Result<i64> {
    let Value::Array(rows) = rows else {
        return Err(CheckedError::NotAnObject("rows (an array of objects)"));
    };
    let mut updated = 0;
    for (index, row) in rows.iter().enumerate() {
        let bad = |problem| CheckedError::BadRow { index, problem };
        let Value::Object(row) = row else {
            return Err(bad("each row must be an object with \"key\", \"version\" and \"changes\""));
        };
        let key = row.get("key").filter(|k| k.is_object()).ok_or_else(|| bad("\"key\" must be an object"))?;
        let expected = row.get("version").and_then(Value::as_i64).ok_or_else(|| bad("\"version\" must be an integer"))?;
        let changes = row.get("changes").filter(|c| c.is_object()).ok_or_else(|| bad("\"changes\" must be an object"))?;
        let key = JsonArg::from_value(key.clone());
        let (table, outcome) = checked_update(relid, &key, expected, &JsonArg::from_value(changes.clone()))?;
        require_applied(relid, &table, &key, expected, outcome)?;
        updated += 1;
    }
    Ok(updated)
}

/// The arguments of a V1 call; `None` for SQL NULL.
unsafe fn args(fcinfo: pg_sys::FunctionCallInfo) -> Vec<Option<pg_sys::Datum>> {
    // SAFETY: Postgres passes `nargs` arguments.
    unsafe {
        let args = (*fcinfo).args.as_slice((*fcinfo).nargs as usize);
        args.iter().map(|a| (!a.isnull).then_some(a.value)).collect()
    }
}

/// The arguments of `update` and `try_update`: (rel, key, expected_version, changes).
fn update_args(args: &[Option<pg_sys::Datum>]) -> Result<(pg_sys::Oid, JsonArg, i64, JsonArg)> {
    Ok((
        relid(args[0])?,
        JsonArg::from_datum(required(args[1], "key")?),
        required(args[2], "expected_version")?.value() as i64,
        JsonArg::from_datum(required(args[3], "changes")?),
    ))
}

fn required(arg: Option<pg_sys::Datum>, name: &'static str) -> Result<pg_sys::Datum> {
    arg.ok_or(CheckedError::NullArgument(name))
}

fn relid(arg: Option<pg_sys::Datum>) -> Result<pg_sys::Oid> {
    required(arg, "rel").map(|d| pg_sys::Oid::from(d.value() as u32))
}

/// Runs `body` and returns its Datum, or raises its error once every value `body` owned has
/// been dropped: a conflict leaves through `errfinish`, skipping this frame.
unsafe fn finish(fcinfo: pg_sys::FunctionCallInfo, body: impl FnOnce(Vec<Option<pg_sys::Datum>>) -> Result<Option<pg_sys::Datum>>) -> pg_sys::Datum {
    // SAFETY: forwarded from the V1 caller.
    let outcome = body(unsafe { args(fcinfo) });
    match outcome {
        Ok(Some(datum)) => datum,
        Ok(None) => {
            // SAFETY: a V1 function signals SQL NULL through fcinfo.
            unsafe { (*fcinfo).isnull = true };
            pg_sys::Datum::from(0)
        }
        Err(error) => error.raise(),
    }
}

macro_rules! v1_function_info {
    ($($finfo:ident),*) => {$(
        #[unsafe(no_mangle)]
        #[doc(hidden)]
        pub extern "C" fn $finfo() -> &'static pg_sys::Pg_finfo_record {
            const V1_API: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
            &V1_API
        }
    )*};
}
v1_function_info!(
    pg_finfo_rowversion_update,
    pg_finfo_rowversion_try_update,
    pg_finfo_rowversion_delete,
    pg_finfo_rowversion_current_version,
    pg_finfo_rowversion_update_many
);

/// `rowversion.update(rel regclass, key jsonb, expected_version bigint, changes jsonb) RETURNS bigint`
///
/// # Safety
/// Called by Postgres through the V1 calling convention.
#[pg_guard]
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn rowversion_update(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    // SAFETY: a V1 call.
    unsafe {
        finish(fcinfo, |args| {
            let (relid, key, expected, changes) = update_args(&args)?;
            let (table, outcome) = checked_update(relid, &key, expected, &changes)?;
            require_applied(relid, &table, &key, expected, outcome).map(|v| Some(v.into()))
        })
    }
}

/// `rowversion.try_update(...) RETURNS TABLE(applied boolean, version bigint)`
///
/// # Safety
/// Called by Postgres through the V1 calling convention.
#[pg_guard]
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn rowversion_try_update(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    // SAFETY: a V1 call; the result row is formed with the function's declared result type.
    unsafe {
        finish(fcinfo, |args| {
            let (relid, key, expected, changes) = update_args(&args)?;
            let (applied, version) = match checked_update(relid, &key, expected, &changes)?.1 {
                Checked::Applied(version) => (true, Some(version)),
                Checked::Conflict { found, .. } => (false, Some(found)),
                Checked::Missing => (false, None),
            };
            let mut tupdesc: pg_sys::TupleDesc = std::ptr::null_mut();
            pg_sys::get_call_result_type(fcinfo, std::ptr::null_mut(), &mut tupdesc);
            let tupdesc = pg_sys::BlessTupleDesc(tupdesc);
            let mut values = [applied.into(), pg_sys::Datum::from(version.unwrap_or(0))];
            let mut nulls = [false, version.is_none()];
            let tuple = pg_sys::heap_form_tuple(tupdesc, values.as_mut_ptr(), nulls.as_mut_ptr());
            Ok(Some(pg_sys::HeapTupleHeaderGetDatum((*tuple).t_data)))
        })
    }
}

/// `rowversion.delete(rel regclass, key jsonb, expected_version bigint) RETURNS void`
///
/// # Safety
/// Called by Postgres through the V1 calling convention.
#[pg_guard]
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn rowversion_delete(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    // SAFETY: a V1 call.
    unsafe {
        finish(fcinfo, |args| {
            let relid = relid(args[0])?;
            let key = JsonArg::from_datum(required(args[1], "key")?);
            let expected = required(args[2], "expected_version")?.value() as i64;
            let (table, outcome) = checked_delete(relid, &key, expected)?;
            require_applied(relid, &table, &key, expected, outcome).map(|_| Some(pg_sys::Datum::from(0)))
        })
    }
}

/// `rowversion.current_version(rel regclass, key jsonb) RETURNS bigint`: NULL when no row.
///
/// # Safety
/// Called by Postgres through the V1 calling convention.
#[pg_guard]
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn rowversion_current_version(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    // SAFETY: a V1 call.
    unsafe {
        finish(fcinfo, |args| {
            let relid = relid(args[0])?;
            let key = JsonArg::from_datum(required(args[1], "key")?);
            Ok(current(relid, &key)?.map(pg_sys::Datum::from))
        })
    }
}

/// `rowversion.update_many(rel regclass, rows jsonb) RETURNS bigint`
///
/// # Safety
/// Called by Postgres through the V1 calling convention.
#[pg_guard]
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn rowversion_update_many(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    // SAFETY: a V1 call.
    unsafe {
        finish(fcinfo, |args| {
            let relid = relid(args[0])?;
            let rows = JsonArg::from_datum(required(args[1], "rows")?);
            update_many(relid, &rows.value).map(|n| Some(n.into()))
        })
    }
}
