'use strict';
// Shared by the ORM suites: the server comes from PGHOST (socket directory), PGPORT, PGUSER and
// PGDATABASE; each suite creates the extension if needed and its own tables.
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

// A plain connection of our own, for setting tables up and for reading what is stored.
async function admin() {
  const client = new Client(server);
  await client.connect();
  await client.query('SET client_min_messages = warning');
  await client.query('CREATE EXTENSION IF NOT EXISTS pg_rowversion');
  return client;
}

// Drops and creates TABLE with COLUMNS (SQL) and, unless mode is null, enables the trigger on
// its `version` column in that mode with `views` as an ignored column.
async function versionedTable(client, table, columns, mode = 'lenient') {
  await client.query(`DROP TABLE IF EXISTS ${table}`);
  await client.query(`CREATE TABLE ${table} (${columns})`);
  if (mode !== null) {
    await client.query(
      `SELECT rowversion.enable($1, 'version', $2, ignore_columns => '{views}')`, [table, mode]);
  }
}

async function row(client, table, id = 1) {
  const { rows } = await client.query(
    `SELECT price, views, version::bigint AS version FROM ${table} WHERE id = $1`, [id]);
  return rows[0] && { price: rows[0].price, views: rows[0].views, version: Number(rows[0].version) };
}

module.exports = { server, admin, versionedTable, row };
