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
//! Merge modes (a table enabled with `conflicts => 'merge'`, docs/merge.md): each client owns
//! one column of a few hot rows (`--hot-rows`) and, half of the time, states a version it read
//! up to a few operations earlier, on purpose. `merge` (UPDATE ... SET cK = $new, version =
//! $old) and `merge-function` (rowversion.update()) must accept every write: zero conflicts
//! (but for a stated version more than 255 versions old, which merge mode refuses by design),
//! and at the end every column holds its client's last committed value. `merge-overlap` lets
//! pairs of clients share a column: there conflicts must occur, each one justified by a
//! committed change of that column after the stated version, and still no column write is
//! lost. `merge-unchecked`, the control run, writes the shared columns without stating a
//! version (lenient mode) and must lose column writes (run with `--expect lost`).
//!
//! Prints one summary line per run; exits non-zero when the outcome is not the expected one.

use std::collections::{HashMap, VecDeque};
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
    Merge,
    MergeFunction,
    MergeOverlap,
    MergeUnchecked,
}

impl Mode {
    fn is_merge(self) -> bool {
        matches!(self, Mode::Merge | Mode::MergeFunction | Mode::MergeOverlap | Mode::MergeUnchecked)
    }

    /// In the overlap and control runs, clients 2k and 2k + 1 share a column.
    fn shares_columns(self) -> bool {
        matches!(self, Mode::MergeOverlap | Mode::MergeUnchecked)
    }
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
    /// The merge table's `conflicts` setting: `reject` only to see the merge check fail.
    conflicts: String,
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
            conflicts: "merge".into(),
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
                        "merge" => Mode::Merge,
                        "merge-function" => Mode::MergeFunction,
                        "merge-overlap" => Mode::MergeOverlap,
                        "merge-unchecked" => Mode::MergeUnchecked,
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
                "--conflicts" => {
                    o.conflicts = match value()?.as_str() {
                        c @ ("merge" | "reject") => c.into(),
                        other => return Err(format!("--conflicts merge|reject, not {other}")),
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
        if o.mode.is_merge() && o.hot_rows < 1 {
            return Err("the merge modes write hot rows only: need --hot-rows >= 1".into());
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
        _ => unreachable!("the merge modes prepare their own statements"),
    };
    let write = client.prepare(&write).await?;
    Ok(Statements { read, write })
}

/// One read-modify-write in its own transaction.
async fn attempt(
    client: &Client,
    s: &Statements,
    isolation: &str,
    id: i32,
    delta: i64,
) -> Result<(), tokio_postgres::Error> {
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
    if o.mode.is_merge() {
        return run_merge(o).await;
    }
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

// Merge modes: one column per client (or per pair of clients) of a few hot rows.

const MERGE_TABLE: &str = "stress_merge";
/// A client states a version it learned up to this many of its own operations ago...
const STALE_OPS: usize = 8;
/// ...and at most this many versions behind the one it just read: the record counts a column's
/// age up to 255 versions, and a stated version older than that is refused by design.
const STALE_VERSIONS: i64 = 128;

fn merge_columns(o: &Options) -> usize {
    if o.mode.shares_columns() {
        o.clients.div_ceil(2)
    } else {
        o.clients
    }
}

/// The column client `index` writes: c1, c2, ...
fn merge_column(o: &Options, index: usize) -> usize {
    1 + if o.mode.shares_columns() { index / 2 } else { index }
}

/// An accepted write: the version it read just before, the version it stated (in
/// `merge-unchecked`, the version its value was based on) and the version it made
/// (RETURNING), which is the row's commit order.
#[derive(Clone, Copy)]
struct Write {
    id: i32,
    column: usize,
    read: i64,
    stated: i64,
    made: i64,
    value: i64,
}

/// A write refused with "row version conflict": what it stated, and what the DETAIL said.
struct Refusal {
    id: i32,
    column: usize,
    stated: i64,
    found: Option<i64>,
    named: String,
}

#[derive(Default)]
struct MergeTally {
    attempts: u64,
    /// 40001 raised by Postgres itself (REPEATABLE READ: could not serialize access due to
    /// concurrent update): not a row version conflict, retried as it comes.
    serialization_failures: u64,
    /// Reads of a client's own column that found a value it did not write (owned columns only).
    foreign_values: u64,
    writes: Vec<Write>,
    refusals: Vec<Refusal>,
}

async fn merge_setup(o: &Options) -> Result<(), tokio_postgres::Error> {
    let client = connect(o).await?;
    let columns: String = (1..=merge_columns(o)).map(|c| format!(", c{c} bigint NOT NULL DEFAULT 0")).collect();
    client
        .batch_execute(&format!(
            "SET client_min_messages = warning;
             CREATE EXTENSION IF NOT EXISTS pg_rowversion;
             DROP TABLE IF EXISTS {MERGE_TABLE};
             CREATE TABLE {MERGE_TABLE} (id int PRIMARY KEY{columns});
             SELECT rowversion.enable('{MERGE_TABLE}', conflicts => '{}');
             INSERT INTO {MERGE_TABLE} (id) SELECT generate_series(1, {});",
            o.conflicts, o.hot_rows
        ))
        .await
}

/// "Key (id)=(1): expected version 1, found version 3. Changed since version 1: c1." (or, for
/// a column whose change the record cannot date, "Not known to be unchanged since version 1:
/// c1."): the version found, and the columns named by either sentence.
fn parse_conflict_detail(detail: &str) -> (Option<i64>, String) {
    let found = detail
        .split("found version ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|digits| digits.parse().ok());
    let named = ["Changed since version ", "Not known to be unchanged since version "]
        .iter()
        .filter_map(|sentence| detail.split(sentence).nth(1))
        .filter_map(|rest| rest.split_once(": "))
        .map(|(_, columns)| columns.split_once('.').map_or(columns, |(names, _)| names).to_string())
        .collect::<Vec<_>>()
        .join(", ");
    (found, named)
}

async fn run_merge_client(o: Options, index: usize, ops: usize) -> Result<MergeTally, tokio_postgres::Error> {
    let client = connect(&o).await?;
    let column = merge_column(&o, index);
    let read = client.prepare(&format!("SELECT version, c{column} FROM {MERGE_TABLE} WHERE id = $1")).await?;
    let write = match o.mode {
        Mode::MergeFunction => format!(
            "SELECT rowversion.update('{MERGE_TABLE}', jsonb_build_object('id', $3::int), $2,
                                      jsonb_build_object('c{column}', $1::bigint))"
        ),
        Mode::MergeUnchecked => {
            format!(
                "UPDATE {MERGE_TABLE} SET c{column} = $1 WHERE id = $3 AND $2::bigint IS NOT NULL RETURNING version"
            )
        }
        _ => format!("UPDATE {MERGE_TABLE} SET c{column} = $1, version = $2 WHERE id = $3 RETURNING version"),
    };
    let write = client.prepare(&write).await?;
    let mut rng = Rng(o.seed.wrapping_add(index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut tally = MergeTally::default();
    // Per row, the versions this client may state, oldest first, with the operation that
    // learned them. Never older than its own last write there: its own change would (rightly)
    // refuse a write stating a version before it.
    let mut known: HashMap<i32, VecDeque<(usize, i64)>> = HashMap::new();
    let mut mine: HashMap<i32, i64> = HashMap::new();
    // Every attempt writes a value no one else writes, so every write is a change.
    let mut counter = (index as i64 + 1) * 1_000_000_000;
    for op in 0..ops {
        let id = 1 + rng.below(o.hot_rows as u64) as i32;
        // After a refusal, retry with the version just read, as an application would.
        let mut stale_allowed = true;
        loop {
            tally.attempts += 1;
            counter += 1;
            client.batch_execute(&format!("BEGIN ISOLATION LEVEL {}", o.isolation)).await?;
            let row = client.query_one(&read, &[&id]).await?;
            let (current, held): (i64, i64) = (row.get(0), row.get(1));
            if !o.mode.shares_columns() && held != mine.get(&id).copied().unwrap_or(0) {
                tally.foreign_values += 1;
            }
            let versions = known.entry(id).or_default();
            versions.retain(|&(learned, v)| op - learned <= STALE_OPS && current - v <= STALE_VERSIONS);
            versions.push_back((op, current));
            let stated = match versions.front() {
                Some(&(_, oldest)) if stale_allowed && rng.below(2) == 0 => oldest,
                _ => current,
            };
            match client.query_one(&write, &[&counter, &stated, &id]).await {
                Ok(row) => {
                    client.batch_execute("COMMIT").await?;
                    let made: i64 = row.get(0);
                    tally.writes.push(Write { id, column, read: current, stated, made, value: counter });
                    mine.insert(id, counter);
                    *versions = VecDeque::from([(op, made)]);
                    break;
                }
                Err(e) if e.code() == Some(&SqlState::T_R_SERIALIZATION_FAILURE) => {
                    client.batch_execute("ROLLBACK").await?;
                    match e.as_db_error() {
                        Some(db) if db.message().starts_with("row version conflict") => {
                            let (found, named) = parse_conflict_detail(db.detail().unwrap_or(""));
                            tally.refusals.push(Refusal { id, column, stated, found, named });
                            stale_allowed = false;
                        }
                        _ => tally.serialization_failures += 1,
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(tally)
}

async fn run_merge(o: &Options) -> Result<(), Box<dyn std::error::Error>> {
    merge_setup(o).await?;
    let started = Instant::now();
    let handles: Vec<_> = (0..o.clients)
        .map(|i| {
            let share = o.ops / o.clients + usize::from(i < o.ops % o.clients);
            tokio::spawn(run_merge_client(o.clone(), i, share))
        })
        .collect();
    let mut total = MergeTally::default();
    for handle in handles {
        let tally = handle.await??;
        total.attempts += tally.attempts;
        total.serialization_failures += tally.serialization_failures;
        total.foreign_values += tally.foreign_values;
        total.writes.extend(tally.writes);
        total.refusals.extend(tally.refusals);
    }
    let elapsed = started.elapsed().as_secs_f64();

    // Each (row, column)'s accepted writes in commit order: the order of the versions they made.
    let mut history: HashMap<(i32, usize), Vec<Write>> = HashMap::new();
    for w in &total.writes {
        history.entry((w.id, w.column)).or_default().push(*w);
    }
    for writes in history.values_mut() {
        writes.sort_by_key(|w| w.made);
    }
    // A column write is lost when the next write of that column states (or read) a version
    // before it: that writer overwrote a value it never saw. Merge mode must refuse it.
    let lost_column_writes =
        history.values().flat_map(|writes| writes.windows(2)).filter(|pair| pair[0].made > pair[1].stated).count();
    // Stale on purpose: stated a version older than the one read in the same transaction.
    let stale = total.writes.iter().filter(|w| w.stated < w.read).count();
    // Merged: accepted although another write made a version after the one it stated.
    let merged = total.writes.iter().filter(|w| w.made - 1 > w.stated).count();
    // A refusal is justified when a committed write changed its column after the version it
    // stated, up to the version the error found, or when the stated version is more than 255
    // versions older than that one: the record counts a column's age up to 255 and refuses
    // such a write by design (docs/merge.md). It must name its column, and only it.
    let (mut justified, mut aged, mut spurious, mut misnamed) = (0u64, 0u64, 0u64, 0u64);
    for r in &total.refusals {
        let changed = |found: i64| {
            history.get(&(r.id, r.column)).is_some_and(|writes| {
                let after = writes.partition_point(|w| w.made <= r.stated);
                writes.get(after).is_some_and(|w| w.made <= found)
            })
        };
        match r.found {
            Some(found) if changed(found) => justified += 1,
            Some(found) if found - r.stated > 255 => aged += 1,
            _ => spurious += 1,
        }
        if o.conflicts == "merge" && r.named != format!("c{}", r.column) {
            misnamed += 1;
        }
    }

    // Every column holds the value of its last accepted write (0 if none), and every row's
    // version is 1 + its accepted writes, which made each version in between exactly once.
    let client = connect(o).await?;
    let columns: String = (1..=merge_columns(o)).map(|c| format!(", c{c}")).collect();
    let (mut final_mismatches, mut version_mismatches) = (0u64, 0u64);
    for row in client.query(&format!("SELECT id, version{columns} FROM {MERGE_TABLE}"), &[]).await? {
        let (id, version): (i32, i64) = (row.get(0), row.get(1));
        for c in 1..=merge_columns(o) {
            let last = history.get(&(id, c)).and_then(|writes| writes.last()).map_or(0, |w| w.value);
            if row.get::<_, i64>(1 + c) != last {
                final_mismatches += 1;
            }
        }
        let mut made: Vec<i64> = total.writes.iter().filter(|w| w.id == id).map(|w| w.made).collect();
        made.sort_unstable();
        if version != 1 + made.len() as i64 || made.iter().zip(2..).any(|(m, expected)| *m != expected) {
            version_mismatches += 1;
        }
    }

    let conflicts = total.refusals.len() as u64;
    let violations =
        lost_column_writes as u64 + spurious + misnamed + final_mismatches + version_mismatches + total.foreign_values;
    // Owned columns: every write merges, none is refused but for age (with a READ COMMITTED
    // queue of writers on one row, a version read just before can be over 255 versions old by
    // the time the UPDATE gets the row). Shared columns: refusals must occur. Merges must
    // occur in both, or the run proved nothing.
    let conflicts_as_expected = match o.mode {
        Mode::MergeOverlap => conflicts > 0 && merged > 0,
        Mode::MergeUnchecked => conflicts == 0,
        _ => conflicts == aged && merged > 0,
    };
    let invariant_holds = violations == 0 && conflicts_as_expected;
    let passed = invariant_holds != o.expect_lost;
    println!(
        "stress mode={:?} conflicts_setting={} isolation=\"{}\" clients={} rows={} columns={} writes={} \
         attempts={} stale={stale} merged={merged} conflicts={conflicts} justified={justified} aged={aged} \
         serialization_failures={} seconds={elapsed:.1} writes_per_s={:.0} \
         lost_column_writes={lost_column_writes} spurious_conflicts={spurious} misnamed_conflicts={misnamed} \
         final_mismatches={final_mismatches} version_mismatches={version_mismatches} foreign_values={} \
         expected={} result={}",
        o.mode,
        o.conflicts,
        o.isolation,
        o.clients,
        o.hot_rows,
        merge_columns(o),
        total.writes.len(),
        total.attempts,
        total.serialization_failures,
        total.writes.len() as f64 / elapsed,
        total.foreign_values,
        if o.expect_lost {
            "lost-column-writes"
        } else if o.mode == Mode::MergeOverlap {
            "conflicts-on-shared-columns-only"
        } else {
            "every-write-merged"
        },
        if passed { "PASS" } else { "FAIL" },
    );
    if passed {
        Ok(())
    } else {
        Err("the merge invariant did not come out as expected".into())
    }
}
