//! Stress driver: N concurrent clients read a row and its version, compute a new balance,
//! and write it back with a versioned write, retrying on SQLSTATE 40001. Then it checks the
//! invariant that proves no update was lost: for every row, the final balance equals the
//! initial balance plus the deltas of the writes the clients saw succeed, and the final
//! version equals 1 + the number of those writes.
//!
//! Modes: `sql` (UPDATE ... SET balance = $new, version = $read WHERE id = $id, checked by the
//! trigger), `function` (rowversion.update()), and `unversioned`, the control run: the trigger
//! disabled and plain `UPDATE ... SET balance = $new`, which must lose updates under READ
//! COMMITTED (run with `--expect lost`), proving the check can fail.
//!
//! Prints one summary line per run; exits non-zero when the outcome is not the expected one.

use std::collections::HashMap;
use std::time::Instant;

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls, Statement};

const INITIAL_BALANCE: i64 = 1_000_000;
const TABLE: &str = "stress_accounts";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Sql,
    Function,
    Unversioned,
}

#[derive(Clone, Debug)]
struct Options {
    host: String,
    port: u16,
    user: String,
    dbname: String,
    clients: usize,
    ops: usize,
    hot_rows: i32,
    cold_rows: i32,
    hot_percent: u64,
    mode: Mode,
    isolation: String,
    expect_lost: bool,
    seed: u64,
}

impl Options {
    fn parse() -> Result<Self, String> {
        let mut o = Options {
            host: "/tmp".into(),
            port: 5432,
            user: "postgres".into(),
            dbname: "postgres".into(),
            clients: 16,
            ops: 4000,
            hot_rows: 3,
            cold_rows: 100,
            hot_percent: 50,
            mode: Mode::Sql,
            isolation: "read committed".into(),
            expect_lost: false,
            seed: 42,
        };
        let args: Vec<String> = std::env::args().skip(1).collect();
        let mut i = 0;
        while i < args.len() {
            let value = || args.get(i + 1).cloned().ok_or(format!("{} needs a value", args[i]));
            let number = |v: String| v.parse::<u64>().map_err(|e| format!("{}: {e}", args[i]));
            match args[i].as_str() {
                "--host" => o.host = value()?,
                "--port" => o.port = number(value()?)? as u16,
                "--user" => o.user = value()?,
                "--dbname" => o.dbname = value()?,
                "--clients" => o.clients = number(value()?)? as usize,
                "--ops" => o.ops = number(value()?)? as usize,
                "--hot-rows" => o.hot_rows = number(value()?)? as i32,
                "--cold-rows" => o.cold_rows = number(value()?)? as i32,
                "--hot-percent" => o.hot_percent = number(value()?)?,
                "--seed" => o.seed = number(value()?)?,
                "--mode" => {
                    o.mode = match value()?.as_str() {
                        "sql" => Mode::Sql,
                        "function" => Mode::Function,
                        "unversioned" => Mode::Unversioned,
                        other => return Err(format!("unknown mode {other}")),
                    }
                }
                "--isolation" => {
                    o.isolation = match value()?.as_str() {
                        "read-committed" => "read committed".into(),
                        "repeatable-read" => "repeatable read".into(),
                        other => return Err(format!("unknown isolation level {other}")),
                    }
                }
                "--expect" => {
                    o.expect_lost = match value()?.as_str() {
                        "ok" => false,
                        "lost" => true,
                        other => return Err(format!("--expect ok|lost, not {other}")),
                    }
                }
                other => return Err(format!("unknown option {other}")),
            }
            i += 2;
        }
        if o.clients == 0 || o.hot_rows + o.cold_rows < 1 || o.hot_percent > 100 {
            return Err("need at least one client, one row, and --hot-percent <= 100".into());
        }
        Ok(o)
    }
}

/// xorshift64*: a small deterministic generator per client, no dependency needed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Default)]
struct Tally {
    attempts: u64,
    conflicts: u64,
    /// Per row: (sum of deltas, number) of the writes that committed.
    committed: HashMap<i32, (i64, i64)>,
}

async fn connect(o: &Options) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::Config::new()
        .host(&o.host)
        .port(o.port)
        .user(&o.user)
        .dbname(&o.dbname)
        .application_name("rowversion-stress")
        .connect(NoTls)
        .await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("connection error: {e}");
        }
    });
    Ok(client)
}

async fn setup(o: &Options) -> Result<(), tokio_postgres::Error> {
    let client = connect(o).await?;
    client
        .batch_execute(&format!(
            "SET client_min_messages = warning;
             CREATE EXTENSION IF NOT EXISTS pg_rowversion;
             DROP TABLE IF EXISTS {TABLE};
             CREATE TABLE {TABLE} (id int PRIMARY KEY, balance bigint NOT NULL);
             SELECT rowversion.enable('{TABLE}');
             INSERT INTO {TABLE} (id, balance) SELECT g, {INITIAL_BALANCE} FROM generate_series(1, {}) g;",
            o.hot_rows + o.cold_rows
        ))
        .await?;
    if o.mode == Mode::Unversioned {
        client.batch_execute(&format!("SELECT rowversion.disable('{TABLE}')")).await?;
    }
    Ok(())
}

struct Statements {
    read: Statement,
    write: Statement,
}

async fn prepare(client: &Client, mode: Mode) -> Result<Statements, tokio_postgres::Error> {
    let read = client.prepare(&format!("SELECT balance, version FROM {TABLE} WHERE id = $1")).await?;
    let write = match mode {
        Mode::Sql => format!("UPDATE {TABLE} SET balance = $1, version = $2 WHERE id = $3"),
        Mode::Function => format!(
            "SELECT rowversion.update('{TABLE}', jsonb_build_object('id', $3::int), $2,
                                      jsonb_build_object('balance', $1::bigint))"
        ),
        Mode::Unversioned => format!("UPDATE {TABLE} SET balance = $1 WHERE id = $3 AND $2::bigint IS NOT NULL"),
    };
    let write = client.prepare(&write).await?;
    Ok(Statements { read, write })
}

/// One read-modify-write in its own transaction.
async fn attempt(client: &Client, s: &Statements, isolation: &str, id: i32, delta: i64) -> Result<(), tokio_postgres::Error> {
    client.batch_execute(&format!("BEGIN ISOLATION LEVEL {isolation}")).await?;
    let row = client.query_one(&s.read, &[&id]).await?;
    let (balance, version): (i64, i64) = (row.get(0), row.get(1));
    client.query(&s.write, &[&(balance + delta), &version, &id]).await?;
    client.batch_execute("COMMIT").await
}

async fn run_client(o: Options, index: usize, ops: usize) -> Result<Tally, tokio_postgres::Error> {
    let client = connect(&o).await?;
    let statements = prepare(&client, o.mode).await?;
    let mut rng = Rng(o.seed.wrapping_add(index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut tally = Tally::default();
    for _ in 0..ops {
        let id = if o.hot_rows > 0 && rng.below(100) < o.hot_percent {
            1 + rng.below(o.hot_rows as u64) as i32
        } else if o.cold_rows > 0 {
            1 + o.hot_rows + rng.below(o.cold_rows as u64) as i32
        } else {
            1 + rng.below(o.hot_rows as u64) as i32
        };
        let delta = rng.below(2001) as i64 - 1000;
        loop {
            tally.attempts += 1;
            match attempt(&client, &statements, &o.isolation, id, delta).await {
                Ok(()) => {
                    let entry = tally.committed.entry(id).or_default();
                    entry.0 += delta;
                    entry.1 += 1;
                    break;
                }
                Err(e) if e.code() == Some(&SqlState::T_R_SERIALIZATION_FAILURE) => {
                    tally.conflicts += 1;
                    client.batch_execute("ROLLBACK").await?;
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(tally)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let o = match Options::parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("rowversion-stress: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&o).await {
        eprintln!("rowversion-stress: {e}");
        std::process::exit(1);
    }
}

async fn run(o: &Options) -> Result<(), Box<dyn std::error::Error>> {
    setup(o).await?;
    let started = Instant::now();
    let handles: Vec<_> = (0..o.clients)
        .map(|i| {
            let share = o.ops / o.clients + usize::from(i < o.ops % o.clients);
            tokio::spawn(run_client(o.clone(), i, share))
        })
        .collect();
    let mut total = Tally::default();
    for handle in handles {
        let tally = handle.await??;
        total.attempts += tally.attempts;
        total.conflicts += tally.conflicts;
        for (id, (sum, count)) in tally.committed {
            let entry = total.committed.entry(id).or_default();
            entry.0 += sum;
            entry.1 += count;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();

    let client = connect(o).await?;
    let (mut lost_rows, mut lost_amount, mut version_mismatches) = (0u64, 0i64, 0u64);
    for row in client.query(&format!("SELECT id, balance, version FROM {TABLE}"), &[]).await? {
        let (id, balance, version): (i32, i64, i64) = (row.get(0), row.get(1), row.get(2));
        let (sum, count) = total.committed.get(&id).copied().unwrap_or_default();
        if balance != INITIAL_BALANCE + sum {
            lost_rows += 1;
            lost_amount += (INITIAL_BALANCE + sum - balance).abs();
        }
        if o.mode != Mode::Unversioned && version != 1 + count {
            version_mismatches += 1;
        }
    }
    let writes: i64 = total.committed.values().map(|(_, count)| count).sum();
    let invariant_holds = lost_rows == 0 && version_mismatches == 0;
    let passed = invariant_holds != o.expect_lost;
    println!(
        "stress mode={:?} isolation=\"{}\" clients={} writes={writes} attempts={} conflicts={} retries={} \
         seconds={elapsed:.1} writes_per_s={:.0} lost_rows={lost_rows} lost_amount={lost_amount} \
         version_mismatches={version_mismatches} expected={} result={}",
        o.mode,
        o.isolation,
        o.clients,
        total.attempts,
        total.conflicts,
        total.conflicts,
        writes as f64 / elapsed,
        if o.expect_lost { "lost-updates" } else { "no-lost-update" },
        if passed { "PASS" } else { "FAIL" },
    );
    if passed {
        Ok(())
    } else {
        Err("the invariant did not come out as expected".into())
    }
}
