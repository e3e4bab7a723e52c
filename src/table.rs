//! What the checked functions and `row_locks()` know about a table, and the statements they
//! run on it: read from the catalogs once per session and table, prepared once per table and
//! column set, dropped when the table's definition changes (a relcache invalidation).
//!
//! Every name in these statements is qualified: tables and columns are quoted, functions,
//! types and operators are pg_catalog's, and a key column is compared with the equality
//! operator of its primary-key index's operator class, named by that operator's own schema.
//! So the caller's `search_path` cannot put another role's operator into a statement that a
//! superuser runs. Names are kept in UTF-8 for messages and SQL, and in the database encoding
//! for comparing them with jsonb keys.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use pgrx::prelude::*;
use pgrx::spi::{quote_identifier, quote_qualified_identifier, OwnedPreparedStatement, SpiClient};
use pgrx::PgOid;

use crate::report::Report;

/// What can go wrong finding a table: the caller named a relation that does not exist, or a
/// catalog query failed.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("relation with OID {0} does not exist")]
    NoSuchRelation(u32),
    #[error("internal query failed: {0}")]
    Spi(#[from] pgrx::spi::SpiError),
}

impl From<TableError> for Report {
    fn from(error: TableError) -> Self {
        let code = match error {
            TableError::NoSuchRelation(_) => pgrx::PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
            TableError::Spi(_) => pgrx::PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
        };
        Report::new(code, error.to_string(), None, None)
    }
}

type Result<T> = std::result::Result<T, TableError>;
use crate::encoding;

/// What statements that find one row by its primary key need to know about a table.
pub struct Table {
    pub relid: pg_sys::Oid,
    pub relation: Relation,
    /// `None` when the table is not versioned.
    pub versioning: Option<Versioning>,
    pub primary_key: Vec<KeyColumn>,
    /// Every column by its name in the database encoding.
    columns: HashMap<Vec<u8>, Column>,
}

pub struct Versioning {
    pub column: String,
    pub attnum: i16,
    pub enabled: bool,
    /// In merge and observe mode (`conflicts => 'merge'`, `'observe'`), the record column.
    pub record: Option<String>,
    /// In observe mode a stale `delete()` is let through (src/observe.rs).
    pub observing: bool,
}

/// A primary key column, and `OPERATOR(schema.=)`: the equality operator of the key index's
/// operator class, which is what makes the condition an index lookup.
pub struct KeyColumn {
    pub name: String,
    pub attnum: i16,
    equals: String,
}

pub struct Column {
    pub name: String,
    pub attnum: i16,
    pub generated: bool,
}

#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Statement {
    /// UPDATE of these columns (attnums, sorted) and the version.
    Update(Vec<i16>),
    Delete,
    /// A key as a row of the table's type.
    KeyRow,
    /// The current version of a row, and its key as a row of the table's type.
    Probe,
    /// Where a row is: its partition and its tuple (block, offset).
    Locate,
    /// The current version of a row and, in merge mode, its record.
    Record,
}

/// A session keeps at most this many prepared statements per table: one per column set a
/// caller changes, so a caller sending ever new column sets cannot grow it without bound.
const STATEMENTS_PER_TABLE: usize = 64;

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
    let table = Rc::new(Spi::connect(|client| load(client, relid))?);
    TABLES.with_borrow_mut(|tables| {
        tables.insert(relid, CachedTable { table: table.clone(), statements: HashMap::new() })
    });
    Ok(table)
}

/// A name column of a catalog query, selected as `convert_to(name, 'UTF8')`.
pub fn utf8(bytes: Option<Vec<u8>>) -> String {
    String::from_utf8_lossy(&bytes.unwrap_or_default()).into_owned()
}

/// What every entry point first learns about a relation from `pg_class`.
pub struct Relation {
    /// `schema.table`, for messages.
    pub display: String,
    /// `"schema"."table"`, for SQL.
    pub quoted: String,
    /// The table's name alone, as Postgres' own permission errors show it.
    pub name: String,
    /// What it is when it is not an ordinary or partitioned table of a user: `Some("a view")`.
    pub not_a_table: Option<&'static str>,
    pub partitioned: bool,
    pub owner: pg_sys::Oid,
    /// Whether the current role owns it (is a member of the owning role).
    pub caller_owns: bool,
}

/// The relation `relid`, `None` when there is no such relation.
pub fn relation(
    client: &SpiClient<'_>,
    relid: pg_sys::Oid,
) -> std::result::Result<Option<Relation>, pgrx::spi::SpiError> {
    let row = client
        .select(
            "SELECT pg_catalog.convert_to(n.nspname::pg_catalog.text, 'UTF8'),
                    pg_catalog.convert_to(c.relname::pg_catalog.text, 'UTF8'),
                    c.relkind::pg_catalog.text,
                    c.relnamespace OPERATOR(pg_catalog.=) 'pg_catalog'::pg_catalog.regnamespace::pg_catalog.oid
                    OR c.oid OPERATOR(pg_catalog.<) 16384,
                    c.relowner, pg_catalog.pg_has_role(c.relowner, 'USAGE')
             FROM pg_catalog.pg_class c
             JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
             WHERE c.oid OPERATOR(pg_catalog.=) $1",
            Some(1),
            &[relid.into()],
        )?
        .first();
    if row.is_empty() {
        return Ok(None);
    }
    let (schema, name) = (utf8(row.get::<Vec<u8>>(1)?), utf8(row.get::<Vec<u8>>(2)?));
    let relkind = row.get::<String>(3)?.unwrap_or_default();
    Ok(Some(Relation {
        display: format!("{schema}.{name}"),
        quoted: quote_qualified_identifier(&schema, &name),
        not_a_table: not_a_table(&relkind, row.get::<bool>(4)?.unwrap_or(false)),
        partitioned: relkind == "p",
        owner: row.get::<pg_sys::Oid>(5)?.unwrap_or(pg_sys::InvalidOid),
        caller_owns: row.get::<bool>(6)?.unwrap_or(false),
        name,
    }))
}

fn load(client: &SpiClient<'_>, relid: pg_sys::Oid) -> Result<Table> {
    let relation = relation(client, relid)?.ok_or(TableError::NoSuchRelation(relid.to_u32()))?;
    // The version column is read from the trigger's WHEN clause here, not through
    // rowversion.trigger_columns(): a database still on 0.1.0's SQL (before ALTER EXTENSION
    // UPDATE) has no such function, and the library must keep working for it.
    let trigger = client
        .select(
            "SELECT t.tgqual,
                    t.tgenabled OPERATOR(pg_catalog.=) 'O' OR t.tgenabled OPERATOR(pg_catalog.=) 'A',
                    CASE WHEN t.tgnargs OPERATOR(pg_catalog.>) 1 THEN pg_catalog.split_part(
                        pg_catalog.encode(t.tgargs, 'escape'), '\\000', 2) END
             FROM pg_catalog.pg_trigger t
             WHERE t.tgrelid OPERATOR(pg_catalog.=) $1 AND t.tgqual IS NOT NULL
               AND t.tgfoid OPERATOR(pg_catalog.=) 'rowversion.version_trigger()'::pg_catalog.regprocedure::pg_catalog.oid",
            Some(1),
            &[relid.into()],
        )?
        .first();
    let clause = if trigger.is_empty() {
        None
    } else {
        // SAFETY: column 1 is a non-NULL pg_node_tree (text) in SPI memory, valid until the
        // connection closes; when_clause parses it into palloc'd nodes.
        trigger.get_datum_by_ordinal(1)?.and_then(|qual| unsafe {
            crate::version_column::when_clause(pg_sys::text_to_cstring(qual.cast_mut_ptr()))
        })
    };
    let column_name = |attnum: i16| -> Result<Option<String>> {
        let column = client
            .select(
                "SELECT pg_catalog.convert_to(a.attname::pg_catalog.text, 'UTF8')
                 FROM pg_catalog.pg_attribute a
                 WHERE a.attrelid OPERATOR(pg_catalog.=) $1 AND a.attnum OPERATOR(pg_catalog.=) $2
                   AND NOT a.attisdropped",
                Some(1),
                &[relid.into(), attnum.into()],
            )?
            .first();
        Ok(if column.is_empty() { None } else { Some(utf8(column.get::<Vec<u8>>(1)?)) })
    };
    let versioning = match clause {
        None => None,
        Some(clause) => match column_name(clause.columns[0])? {
            None => None,
            Some(column) => {
                let conflicts = trigger.get::<String>(3)?;
                let record = match clause.record {
                    Some(attnum) if matches!(conflicts.as_deref(), Some("merge" | "observe")) => column_name(attnum)?,
                    _ => None,
                };
                Some(Versioning {
                    column,
                    attnum: clause.columns[0],
                    enabled: trigger.get::<bool>(2)?.unwrap_or(false),
                    observing: record.is_some() && conflicts.as_deref() == Some("observe"),
                    record,
                })
            }
        },
    };

    // The key columns (not INCLUDE columns) in index order, each with the equality operator
    // of its operator class (btree strategy 3) and that operator's schema.
    let primary_key = client
        .select(
            "SELECT pg_catalog.convert_to(a.attname::pg_catalog.text, 'UTF8'), a.attnum,
                    pg_catalog.convert_to(n.nspname::pg_catalog.text, 'UTF8'), o.oprname::pg_catalog.text
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
            Ok(KeyColumn {
                name: utf8(row.get::<Vec<u8>>(1)?),
                attnum: row.get::<i16>(2)?.unwrap_or_default(),
                equals: format!(
                    "OPERATOR({}.{})",
                    quote_identifier(utf8(row.get::<Vec<u8>>(3)?)),
                    row.get::<String>(4)?.unwrap_or_default()
                ),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let columns = client
        .select(
            "SELECT pg_catalog.convert_to(attname::pg_catalog.text, 'UTF8'), attnum,
                    attgenerated OPERATOR(pg_catalog.<>) ''
             FROM pg_catalog.pg_attribute
             WHERE attrelid OPERATOR(pg_catalog.=) $1 AND attnum OPERATOR(pg_catalog.>) 0
               AND NOT attisdropped",
            None,
            &[relid.into()],
        )?
        .map(|row| {
            let name = utf8(row.get::<Vec<u8>>(1)?);
            let column = Column {
                attnum: row.get::<i16>(2)?.unwrap_or_default(),
                generated: row.get::<bool>(3)?.unwrap_or(false),
                name,
            };
            Ok((encoding::to_server(&column.name).into_bytes(), column))
        })
        .collect::<Result<HashMap<_, _>>>()?;
    Ok(Table { relid, relation, versioning, primary_key, columns })
}

/// What a relation of this `pg_class.relkind` is, if not an ordinary or partitioned table of a
/// user (`system`: in pg_catalog, or created by initdb): what messages call it.
pub fn not_a_table(relkind: &str, system: bool) -> Option<&'static str> {
    match relkind {
        "r" | "p" if system => Some("a system catalog"),
        "r" | "p" => None,
        "v" => Some("a view"),
        "m" => Some("a materialized view"),
        "f" => Some("a foreign table"),
        "S" => Some("a sequence"),
        "i" | "I" => Some("an index"),
        "c" => Some("a composite type"),
        "t" => Some("a TOAST table"),
        _ => Some("not an ordinary or partitioned table"),
    }
}

impl Table {
    /// Whether the table keeps the record of merge mode (`conflicts => 'merge'` or
    /// `'observe'`), where the trigger decides a stale version.
    pub fn merging(&self) -> bool {
        self.versioning.as_ref().is_some_and(|v| v.record.is_some())
    }

    /// The column named by a jsonb key (database-encoded bytes).
    pub fn column(&self, name: &[u8]) -> Option<&Column> {
        self.columns.get(name)
    }

    pub fn key_names(&self) -> impl Iterator<Item = &String> {
        self.primary_key.iter().map(|c| &c.name)
    }

    pub fn column_name(&self, attnum: i16) -> &str {
        self.columns.values().find(|c| c.attnum == attnum).map_or("", |c| c.name.as_str())
    }

    /// `t.pk OPERATOR(s.=) (jsonb_populate_record(NULL::table, $1)).pk AND ...`: an index
    /// condition whose right side is computed once per execution, so the plan is a plain
    /// primary-key lookup.
    fn key_condition(&self) -> String {
        self.primary_key
            .iter()
            .map(|KeyColumn { name, equals, .. }| {
                let c = quote_identifier(name);
                format!("t.{c} {equals} (pg_catalog.jsonb_populate_record(NULL::{}, $1)).{c}", self.relation.quoted)
            })
            .collect::<Vec<_>>()
            .join(" AND ")
    }

    /// SQL text and parameter types of a statement on this table. Values are converted with
    /// `jsonb_populate_record` on the table's row type, in expressions rather than in a FROM
    /// list: measured with callgrind, the joins to two function scans cost more to start
    /// per execution than the whole hand-written UPDATE. A plain table's inheritance children
    /// are left out (`ONLY`): the checked functions act on the table they are given.
    fn sql(&self, statement: &Statement) -> (String, Vec<PgOid>) {
        let version_column = self.versioning.as_ref().map_or("", |v| v.column.as_str());
        let only = if self.relation.partitioned { "" } else { "ONLY " };
        let (t, v, keys) = (&self.relation.quoted, quote_identifier(version_column), self.key_condition());
        let jsonb = PgOid::BuiltIn(pg_sys::BuiltinOid::JSONBOID);
        let int8 = PgOid::BuiltIn(pg_sys::BuiltinOid::INT8OID);
        match statement {
            Statement::Update(attnums) => {
                // In merge mode the trigger decides a stale version (src/merge.rs); a newer one
                // than stored, which the trigger would take for the writer's own next
                // version, matches no row and is a conflict, as in reject mode.
                let check = if self.merging() { ">=" } else { "=" };
                let set = attnums
                    .iter()
                    .map(|&attnum| {
                        let c = quote_identifier(self.column_name(attnum));
                        format!("{c} = (pg_catalog.jsonb_populate_record(NULL::{t}, $2)).{c}, ")
                    })
                    .collect::<String>();
                (
                    format!(
                        "UPDATE {only}{t} AS t SET {set}{v} = $3
                         WHERE {keys} AND t.{v} OPERATOR(pg_catalog.{check}) $3
                         RETURNING t.{v}::pg_catalog.int8"
                    ),
                    vec![jsonb, jsonb, int8],
                )
            }
            // In observe mode a stale version is let through (a newer one is no version the row
            // had: refused as in every mode): the row's version comes back for the log
            // (src/observe.rs). Only IMMUTABLE expressions in RETURNING: Citus refuses others.
            Statement::Delete => {
                let observing = self.versioning.as_ref().is_some_and(|v| v.observing);
                let check = if observing { ">=" } else { "=" };
                (
                    format!(
                        "DELETE FROM {only}{t} AS t WHERE {keys} AND t.{v} OPERATOR(pg_catalog.{check}) $2
                         RETURNING t.{v}::pg_catalog.int8"
                    ),
                    vec![jsonb, int8],
                )
            }
            Statement::KeyRow => (format!("SELECT pg_catalog.jsonb_populate_record(NULL::{t}, $1)"), vec![jsonb]),
            Statement::Probe => (
                format!(
                    "SELECT t.{v}::pg_catalog.int8, pg_catalog.jsonb_populate_record(NULL::{t}, $1)
                     FROM {only}{t} AS t WHERE {keys}"
                ),
                vec![jsonb],
            ),
            Statement::Locate => (format!("SELECT t.tableoid, t.ctid FROM {t} AS t WHERE {keys}"), vec![jsonb]),
            Statement::Record => {
                let record = self
                    .versioning
                    .as_ref()
                    .and_then(|v| v.record.as_deref())
                    .map_or("NULL::pg_catalog.bytea".into(), |r| format!("t.{}", quote_identifier(r)));
                (format!("SELECT t.{v}::pg_catalog.int8, {record} FROM {only}{t} AS t WHERE {keys}"), vec![jsonb])
            }
        }
    }
}

/// The prepared statement for `statement` on `table`, prepared on first use.
pub fn prepared(table: &Table, statement: Statement) -> Result<Rc<OwnedPreparedStatement>> {
    let relid = table.relid;
    let cached = TABLES.with_borrow(|tables| tables.get(&relid).and_then(|t| t.statements.get(&statement).cloned()));
    if let Some(plan) = cached {
        return Ok(plan);
    }
    let (sql, types) = table.sql(&statement);
    let sql = encoding::to_server(&sql);
    let plan = Rc::new(Spi::connect(|client| client.prepare_mut(&sql, &types).map(|p| p.keep()))?);
    TABLES.with_borrow_mut(|tables| {
        if let Some(cached) = tables.get_mut(&relid) {
            if cached.statements.len() >= STATEMENTS_PER_TABLE {
                cached.statements.clear();
            }
            cached.statements.insert(statement, plan.clone());
        }
    });
    Ok(plan)
}
