//! The statements of the lease functions on `rowversion.lease_state` (and the tickets of
//! `rowversion.lease_ticket`), prepared once per session and run as the table's owner.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use pgrx::datum::DatumWithOid;
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::spi::{OwnedPreparedStatement, SpiClient};
use pgrx::PgOid;

use super::args::Name;
use super::error::Result;
use crate::identity::{as_role, extension_relation, table_owner};

/// The statements of the lease functions, run as the table's owner. Every name qualified.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum Statement {
    /// ($1 name, $2 ttl, $3 holder, $4 role, $5 patient): takes a free or expired lease that
    /// no transaction is fencing or taking (patient: only one free for a second already); its
    /// new token.
    Take,
    /// The same for a name never acquired: token 1.
    Insert,
    /// ($1 name): microseconds until a live lease expires (NULL when it is free but locked).
    State,
    /// ($1 name, $2 token, $3 ttl): the lease's role when `token` still holds it.
    Renew,
    /// ($1 name, $2 token): the same, freeing it.
    Release,
    /// ($1 name): the lease, locked until the transaction ends.
    Check,
    /// ($1 name): the role of a live lease, freeing it.
    Break,
}

impl Statement {
    fn sql(self) -> &'static str {
        match self {
            Self::Take => {
                "WITH free AS (
                     SELECT name FROM rowversion.lease_state
                     WHERE name OPERATOR(pg_catalog.=) $1
                       AND (released OR expires_at OPERATOR(pg_catalog.<=) pg_catalog.clock_timestamp())
                       AND (NOT $5 OR expires_at OPERATOR(pg_catalog.<=)
                            (pg_catalog.clock_timestamp() OPERATOR(pg_catalog.-) '1 s'::pg_catalog.interval))
                     FOR NO KEY UPDATE SKIP LOCKED),
                 now AS (SELECT pg_catalog.clock_timestamp() AS at)
                 UPDATE rowversion.lease_state AS l
                 SET token = l.token OPERATOR(pg_catalog.+) 1, holder = $3, role = $4, acquired_at = now.at,
                     expires_at = now.at OPERATOR(pg_catalog.+) $2, released = false
                 FROM free, now
                 WHERE l.name OPERATOR(pg_catalog.=) free.name
                 RETURNING l.token"
            }
            Self::Insert => {
                "INSERT INTO rowversion.lease_state AS l (name, token, holder, role, acquired_at, expires_at)
                 SELECT $1, 1, $3, $4, now.at, now.at OPERATOR(pg_catalog.+) $2
                 FROM (SELECT pg_catalog.clock_timestamp() AS at) AS now
                 ON CONFLICT (name) DO NOTHING
                 RETURNING l.token"
            }
            Self::State => {
                "SELECT CASE WHEN released OR expires_at OPERATOR(pg_catalog.<=) pg_catalog.clock_timestamp()
                        THEN NULL
                        ELSE pg_catalog.ceil(pg_catalog.extract('epoch',
                                 expires_at OPERATOR(pg_catalog.-) pg_catalog.clock_timestamp())
                             OPERATOR(pg_catalog.*) 1000000)::pg_catalog.int8 END
                 FROM rowversion.lease_state WHERE name OPERATOR(pg_catalog.=) $1"
            }
            Self::Renew => {
                "UPDATE rowversion.lease_state
                 SET expires_at = pg_catalog.clock_timestamp() OPERATOR(pg_catalog.+) $3
                 WHERE name OPERATOR(pg_catalog.=) $1 AND token OPERATOR(pg_catalog.=) $2 AND NOT released
                 RETURNING role"
            }
            Self::Release => {
                "UPDATE rowversion.lease_state SET released = true, expires_at = pg_catalog.clock_timestamp()
                 WHERE name OPERATOR(pg_catalog.=) $1 AND token OPERATOR(pg_catalog.=) $2 AND NOT released
                   AND expires_at OPERATOR(pg_catalog.>) pg_catalog.clock_timestamp()
                 RETURNING role"
            }
            Self::Check => {
                "SELECT token, role, released,
                        NOT released AND expires_at OPERATOR(pg_catalog.>) pg_catalog.clock_timestamp()
                 FROM rowversion.lease_state WHERE name OPERATOR(pg_catalog.=) $1
                 FOR SHARE"
            }
            Self::Break => {
                "UPDATE rowversion.lease_state SET released = true, expires_at = pg_catalog.clock_timestamp()
                 WHERE name OPERATOR(pg_catalog.=) $1 AND NOT released
                   AND expires_at OPERATOR(pg_catalog.>) pg_catalog.clock_timestamp()
                 RETURNING role"
            }
        }
    }

    fn argument_types(self) -> &'static [pg_sys::Oid] {
        use pg_sys::{BOOLOID, INT8OID, INTERVALOID, OIDOID, TEXTOID};
        match self {
            Self::Take => &[TEXTOID, INTERVALOID, TEXTOID, OIDOID, BOOLOID],
            Self::Insert => &[TEXTOID, INTERVALOID, TEXTOID, OIDOID],
            Self::State | Self::Check | Self::Break => &[TEXTOID],
            Self::Renew => &[TEXTOID, INT8OID, INTERVALOID],
            Self::Release => &[TEXTOID, INT8OID],
        }
    }
}

thread_local! {
    /// The prepared statements, per session. Plans name the table, so they follow its
    /// re-creation (DROP and CREATE EXTENSION) through Postgres' plan invalidation.
    static STATEMENTS: RefCell<HashMap<Statement, Rc<OwnedPreparedStatement>>> = RefCell::new(HashMap::new());
}

pub fn prepared(client: &SpiClient<'_>, statement: Statement) -> Result<Rc<OwnedPreparedStatement>> {
    if let Some(plan) = STATEMENTS.with(|s| s.borrow().get(&statement).cloned()) {
        return Ok(plan);
    }
    let types: Vec<PgOid> = statement.argument_types().iter().map(|&oid| PgOid::from(oid)).collect();
    let plan = Rc::new(client.prepare_mut(statement.sql(), &types)?.keep());
    STATEMENTS.with(|s| s.borrow_mut().insert(statement, plan.clone()));
    Ok(plan)
}

/// Runs `work` with an SPI connection as the owner of `rowversion.lease_state`.
pub fn as_lease_owner<T>(work: impl FnOnce(&mut SpiClient<'_>) -> Result<T>) -> Result<T> {
    as_role(table_owner(c"lease_state"), || Spi::connect_mut(work))
}

/// The outcome of one attempt to take a lease.
pub enum Attempt {
    Taken(i64),
    /// Held for this many more microseconds, or (`None`) free but being fenced or taken by a
    /// transaction.
    Busy(Option<i64>),
}

pub fn try_take(
    name: Name,
    ttl: pg_sys::Datum,
    holder: Option<pg_sys::Datum>,
    role: pg_sys::Oid,
    patient: bool,
) -> Result<Attempt> {
    // SAFETY: an interval and a text Datum that live for the rest of this call.
    let (ttl, holder) = unsafe {
        (
            DatumWithOid::new(ttl, pg_sys::INTERVALOID),
            match holder {
                Some(holder) => DatumWithOid::new(holder, pg_sys::TEXTOID),
                None => DatumWithOid::null_oid(pg_sys::TEXTOID),
            },
        )
    };
    let args = [name.arg(), ttl, holder, role.into(), patient.into()];
    // No statement here waits for another transaction (SKIP LOCKED, a plain read; the INSERT
    // only for a name that has no row yet): a wait would consume the latch a waker sets.
    as_lease_owner(|client| {
        let plan = prepared(client, Statement::Take)?;
        let rows = client.update(&*plan, Some(1), &args)?;
        if !rows.is_empty() {
            return Ok(Attempt::Taken(rows.first().get_one::<i64>()?.unwrap_or(0)));
        }
        let plan = prepared(client, Statement::State)?;
        let rows = client.select(&*plan, Some(1), &[name.arg()])?;
        if !rows.is_empty() {
            return Ok(Attempt::Busy(rows.first().get_one::<i64>()?));
        }
        let plan = prepared(client, Statement::Insert)?;
        let rows = client.update(&*plan, Some(1), &args[..4])?;
        Ok(if rows.is_empty() {
            Attempt::Busy(None)
        } else {
            Attempt::Taken(rows.first().get_one::<i64>()?.unwrap_or(0))
        })
    })
}

/// A waiter's place in line: the next value of `rowversion.lease_ticket` (non-transactional).
pub fn next_ticket() -> Result<u32> {
    let sequence = extension_relation(c"lease_ticket");
    // SAFETY: nextval(regclass) of the extension's sequence, as its owner.
    let ticket = as_role(table_owner(c"lease_state"), || unsafe {
        pgrx::direct_function_call_as_datum(pg_sys::nextval_oid, &[Some(sequence.into())])
    });
    Ok(ticket.map_or(0, |d| d.value() as u32))
}
