'use strict';
// PostGraphile v4, run as its CLI (a GraphQL HTTP server, a process of its own), in front of
// tables versioned by pg_rowversion. PostGraphile's generated mutation
//   updateNoteById(input: {id: 1, notePatch: {note: "...", version: "1"}})
// runs, inside SAVEPOINT graphql_mutation of the request's transaction,
//   update "public"."notes" set "note" = $1, "version" = $2 where ("id" = $3) returning *
// so the version the client read is checked by the trigger (or the planner fast path when the
// library is preloaded). A refusal comes back as a GraphQL error of an HTTP 200 response; with
// --extended-errors the Postgres fields ride along. PostGraphile v4 never retries a mutation.
//
// Each UPDATE statement is counted on the server: a statement-level BEFORE UPDATE trigger calls
// nextval() of a sequence, which survives the rollback of a refused statement. (A statement-level
// trigger keeps the planner fast path; only another BEFORE ROW UPDATE trigger would turn it off.)
const { test, before, after, beforeEach } = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const path = require('node:path');
const { Client } = require('pg');

for (const name of ['PGHOST', 'PGPORT', 'PGUSER', 'PGDATABASE']) {
  if (!process.env[name]) throw new Error(`${name} must name the server to test against`);
}
const server = {
  host: process.env.PGHOST,
  port: Number(process.env.PGPORT),
  user: process.env.PGUSER,
  database: process.env.PGDATABASE,
};

const TABLE = 'notes';
const STRICT_TABLE = 'strict_notes';
const CONFLICT_HINT = 'Re-read the row and retry with its current version.';

let db; // our own connection, for setting up and for reading what is stored
let api; // { child, url, output() }: the PostGraphile CLI process

// ---------------------------------------------------------------------------------------------
// The PostGraphile CLI as users start it, on a port the system picks (--port 0; the banner
// names the port it got), bound to the loopback address.

const CLI = path.join(__dirname, '..', 'node_modules', 'postgraphile', 'cli.js');

// postgres://user@/db?host=<socket directory or host name>&port=N: what node-postgres'
// pg-connection-string reads for a Unix socket (an empty URL host, the directory as ?host=).
function connectionString() {
  const e = encodeURIComponent;
  return `postgres://${e(server.user)}@/${e(server.database)}?host=${e(server.host)}&port=${server.port}`;
}

function startPostGraphile() {
  const args = [
    CLI, '--connection', connectionString(), '--schema', 'public',
    '--host', '127.0.0.1', '--port', '0',
    '--extended-errors', 'hint,detail,errcode,schema,table,column',
    '--disable-query-log', '--disable-graphiql',
  ];
  const child = spawn(process.execPath, args, {
    env: { ...process.env, FORCE_COLOR: '0', NO_COLOR: '1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  const ready = new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`PostGraphile did not start within 30 s:\n${output}`)), 30000);
    const onData = (chunk) => {
      output += chunk;
      const clean = output.replace(/\x1b\[[0-9;]*m/g, ''); // in case colours are on anyway
      const match = /listening on port (\d+)/.exec(clean);
      if (match) {
        clearTimeout(timer);
        resolve(Number(match[1]));
      }
    };
    child.stdout.setEncoding('utf8').on('data', onData);
    child.stderr.setEncoding('utf8').on('data', onData);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`PostGraphile exited (${signal ?? code}) before listening:\n${output}`));
    });
  });
  // Never leave the server behind, whatever ends this process.
  process.on('exit', () => child.kill('SIGKILL'));
  return ready.then((port) => ({
    child, url: `http://127.0.0.1:${port}/graphql`, output: () => output,
  }));
}

async function stopPostGraphile() {
  const { child } = api;
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(timer);
}

// One GraphQL request over HTTP; returns the status and the parsed JSON body.
async function graphql(query, variables = {}) {
  const response = await fetch(api.url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json' },
    body: JSON.stringify({ query, variables }),
  });
  const text = await response.text();
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    throw new Error(`HTTP ${response.status}, not JSON: ${text}`);
  }
  return { status: response.status, body };
}

// PostGraphile maps bigint (the column enable() adds) to its BigInt scalar: a string in JSON,
// accepted as a number or a string in variables (a literal in the query text must be a string).
const READ = 'query Read($id: Int!) { noteById(id: $id) { id note version } }';
const EDIT = `mutation Edit($id: Int!, $note: String!, $version: BigInt!) {
  updateNoteById(input: {id: $id, notePatch: {note: $note, version: $version}}) {
    note { id note version }
  }
}`;
const EDIT_STRICT = `mutation EditStrict($id: Int!, $note: String!, $version: BigInt) {
  updateStrictNoteById(input: {id: $id, strictNotePatch: {note: $note, version: $version}}) {
    strictNote { id note version }
  }
}`;
// The same without the version: the patch does not name it, nor does the UPDATE.
const EDIT_STRICT_BLIND = `mutation EditStrictBlind($id: Int!, $note: String!) {
  updateStrictNoteById(input: {id: $id, strictNotePatch: {note: $note}}) {
    strictNote { id note version }
  }
}`;

async function read(id = 1) {
  const { status, body } = await graphql(READ, { id });
  assert.equal(status, 200);
  assert.equal(body.errors, undefined, JSON.stringify(body.errors));
  return body.data.noteById;
}

async function edit(note, version, id = 1) {
  return graphql(EDIT, { id, note, version });
}

// ---------------------------------------------------------------------------------------------
// What is stored, and how many UPDATE statements the server ran on a table.

async function stored(table = TABLE, id = 1) {
  const { rows } = await db.query(
    `SELECT note, version::bigint::text AS version FROM ${table} WHERE id = $1`, [id]);
  return rows[0] && { note: rows[0].note, version: Number(rows[0].version) };
}

async function updateStatements(table = TABLE) {
  const { rows } = await db.query(
    'SELECT coalesce(pg_sequence_last_value($1::regclass), 0)::int AS n', [`${table}_updates`]);
  return rows[0].n;
}

// Asserts a refused mutation: HTTP 200 (GraphQL's way), no data for the field, exactly one
// error with the given SQLSTATE; returns that error for the test's own checks.
function refused({ status, body }, field, errcode) {
  assert.equal(status, 200);
  assert.deepEqual(body.data, { [field]: null });
  assert.equal(body.errors?.length, 1, JSON.stringify(body));
  const [error] = body.errors;
  assert.equal(error.errcode, errcode, JSON.stringify(error));
  assert.deepEqual(error.path, [field]);
  return error;
}

// ---------------------------------------------------------------------------------------------

before(async () => {
  db = new Client(server);
  await db.connect();
  await db.query('SET client_min_messages = warning');
  await db.query('CREATE EXTENSION IF NOT EXISTS pg_rowversion');
  await db.query(`CREATE OR REPLACE FUNCTION count_update_statement() RETURNS trigger
    LANGUAGE plpgsql AS $$ BEGIN PERFORM nextval(TG_ARGV[0]::regclass); RETURN NULL; END $$`);
  for (const [table, mode] of [[TABLE, 'lenient'], [STRICT_TABLE, 'strict']]) {
    await db.query(`DROP TABLE IF EXISTS ${table}`);
    await db.query(`DROP SEQUENCE IF EXISTS ${table}_updates`);
    await db.query(`CREATE TABLE ${table} (id int PRIMARY KEY, note text NOT NULL)`);
    await db.query(`SELECT rowversion.enable($1, mode => $2)`, [table, mode]); // bigint version
    await db.query(`CREATE SEQUENCE ${table}_updates`);
    await db.query(`CREATE TRIGGER count_updates BEFORE UPDATE ON ${table}
      FOR EACH STATEMENT EXECUTE FUNCTION count_update_statement('${table}_updates')`);
  }
  // PostGraphile reads the schema once, at startup: the tables exist before it starts.
  api = await startPostGraphile();
});

after(async () => {
  if (api) await stopPostGraphile();
  await db?.end();
});

beforeEach(async () => {
  for (const table of [TABLE, STRICT_TABLE]) {
    await db.query(`TRUNCATE ${table}`);
    await db.query(`INSERT INTO ${table} (id, note) VALUES (1, 'draft')`); // version 1
  }
});

test('a mutation with the current version succeeds and returns the next version', async () => {
  assert.deepEqual(await read(), { id: 1, note: 'draft', version: '1' });
  const before = await updateStatements();
  let { status, body } = await edit('first edit', '1');
  assert.equal(status, 200);
  assert.deepEqual(body, { data: { updateNoteById: { note: { id: 1, note: 'first edit', version: '2' } } } });
  // The version in the payload is the one to send next.
  ({ status, body } = await edit('second edit', body.data.updateNoteById.note.version));
  assert.deepEqual(body, { data: { updateNoteById: { note: { id: 1, note: 'second edit', version: '3' } } } });
  assert.deepEqual(await stored(), { note: 'second edit', version: 3 });
  assert.equal(await updateStatements() - before, 2, 'one UPDATE per mutation');
});

test("a stale mutation returns the conflict's 40001, message and detail, keeps the other writer's value, and ran once", async () => {
  const mine = await read(); // the form is opened at version 1
  const theirs = await edit('saved by someone else', mine.version); // another writer saves
  assert.equal(theirs.body.data.updateNoteById.note.version, '2');

  const before = await updateStatements();
  const error = refused(await edit('my stale edit', mine.version), 'updateNoteById', '40001');
  assert.equal(await updateStatements() - before, 1, 'PostGraphile sent the UPDATE exactly once');

  assert.equal(error.message, `row version conflict on table "public.${TABLE}"`);
  assert.equal(error.detail, 'Key (id)=(1): expected version 1, found version 2.');
  assert.equal(error.hint, CONFLICT_HINT);
  assert.deepEqual([error.schema, error.table, error.column], ['public', TABLE, 'version']);
  // The same fields under extensions.exception, where GraphQL clients look for them.
  assert.equal(error.extensions.exception.errcode, '40001');
  assert.equal(error.extensions.exception.detail, error.detail);
  assert.deepEqual(await stored(), { note: 'saved by someone else', version: 2 });

  // What the client does next: re-read, and the edit goes through at the version found.
  const fresh = await read();
  assert.equal(fresh.version, '2');
  const retried = await edit('my edit, reapplied', fresh.version);
  assert.equal(retried.body.data.updateNoteById.note.version, '3');
  assert.deepEqual(await stored(), { note: 'my edit, reapplied', version: 3 });
});

test('strict mode: a mutation that leaves the version out is refused with 42P10; one that states it passes', async () => {
  const before = await updateStatements(STRICT_TABLE);
  const error = refused(
    await graphql(EDIT_STRICT_BLIND, { id: 1, note: 'blind write' }), 'updateStrictNoteById', '42P10');
  assert.equal(error.message,
    `UPDATE of table "public.${STRICT_TABLE}" must set version column "version"`);
  assert.deepEqual([error.schema, error.table, error.column], ['public', STRICT_TABLE, 'version']);
  assert.deepEqual(await stored(STRICT_TABLE), { note: 'draft', version: 1 });

  const { body } = await graphql(EDIT_STRICT, { id: 1, note: 'stated', version: '1' });
  assert.deepEqual(body.data.updateStrictNoteById.strictNote, { id: 1, note: 'stated', version: '2' });
  assert.deepEqual(await stored(STRICT_TABLE), { note: 'stated', version: 2 });
  assert.equal(await updateStatements(STRICT_TABLE) - before, 2, 'one UPDATE per mutation');
});

test('two clients race with the same version: exactly one wins, the other gets 40001, the winner is stored', async () => {
  const [left, right] = await Promise.all([read(), read()]);
  assert.equal(left.version, '1');
  assert.equal(right.version, '1');
  const before = await updateStatements();
  const results = await Promise.all([
    edit('left wins', left.version),
    edit('right wins', right.version),
  ]);
  assert.equal(await updateStatements() - before, 2, 'each mutation sent its UPDATE once');

  const won = results.filter((r) => r.body.data?.updateNoteById);
  const lost = results.filter((r) => !r.body.data?.updateNoteById);
  assert.equal(won.length, 1, JSON.stringify(results.map((r) => r.body)));
  assert.equal(lost.length, 1);
  const winner = won[0].body.data.updateNoteById.note;
  assert.equal(winner.version, '2');
  const error = refused(lost[0], 'updateNoteById', '40001');
  assert.equal(error.message, `row version conflict on table "public.${TABLE}"`);
  assert.equal(error.detail, 'Key (id)=(1): expected version 1, found version 2.');
  assert.deepEqual(await stored(), { note: winner.note, version: 2 });
  assert.deepEqual(await read(), { id: 1, note: winner.note, version: '2' });
});
