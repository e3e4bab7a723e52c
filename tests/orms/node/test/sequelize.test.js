'use strict';
// Sequelize 6 with `version: true` on tables where pg_rowversion's trigger guards the same
// `version` column. Sequelize saves an instance with
//   UPDATE t SET ..., version = read+1 WHERE id = ? AND version = read
// and throws OptimisticLockError when no row matched.
const { test, before, after, beforeEach } = require('node:test');
const assert = require('node:assert/strict');
const { Sequelize, DataTypes, OptimisticLockError, DatabaseError } = require('sequelize');
const { server, admin, versionedTable, row } = require('./helpers');

const TABLE = 'node_sequelize_items';
const COLUMNS = 'id int PRIMARY KEY, price int NOT NULL, views int NOT NULL DEFAULT 0, '
  + 'version integer NOT NULL DEFAULT 0';

let db; // our own connection
let sequelize;
let Item;
let statements = []; // the SQL Sequelize sent, for the tests that check it

const attributes = {
  id: { type: DataTypes.INTEGER, primaryKey: true },
  price: { type: DataTypes.INTEGER, allowNull: false },
  views: { type: DataTypes.INTEGER, allowNull: false, defaultValue: 0 },
};

before(async () => {
  db = await admin();
  sequelize = new Sequelize(server.database, server.user, null, {
    host: server.host, port: server.port, dialect: 'postgres',
    logging: (sql) => statements.push(sql),
  });
  Item = sequelize.define('Item', attributes, { tableName: TABLE, version: true, timestamps: false });
});

after(async () => {
  await sequelize?.close();
  await db?.end();
});

beforeEach(async () => {
  statements = [];
  await versionedTable(db, TABLE, COLUMNS);
  await Item.create({ id: 1, price: 100 }); // Sequelize inserts version 0 itself; kept
});

// The error Sequelize wraps around a server error, with its SQLSTATE.
function serverError(code) {
  return (error) => {
    assert.ok(error instanceof DatabaseError, `expected DatabaseError, got ${error}`);
    assert.equal(error.parent.code, code);
    return true;
  };
}

test('insert keeps the version Sequelize sends (0)', async () => {
  assert.deepEqual(await row(db, TABLE), { price: 100, views: 0, version: 0 });
});

test('two saves of one object: one increment each, in memory and stored alike', async () => {
  const item = await Item.findByPk(1);
  item.price = 110;
  await item.save();
  item.price = 120;
  await item.save();
  assert.equal(item.version, 2);
  assert.deepEqual(await row(db, TABLE), { price: 120, views: 0, version: 2 });
  assert.ok(statements.some((sql) => /SET "price"=\$1,"version"=\$2 WHERE "id" = \$3 AND "version" = \$4/.test(sql)),
    'Sequelize sends read+1 with the read version in its WHERE');
});

test("two editors: the second one's stale save is Sequelize's OptimisticLockError, the winner kept", async () => {
  const first = await Item.findByPk(1);
  const second = await Item.findByPk(1);
  first.price = 110;
  await first.save();
  second.price = 120;
  await assert.rejects(second.save(), OptimisticLockError);
  assert.deepEqual(await row(db, TABLE), { price: 110, views: 0, version: 1 });
  await second.reload(); // the usual answer: reload and apply the change again
  second.price = 120;
  await second.save();
  assert.deepEqual(await row(db, TABLE), { price: 120, views: 0, version: 2 });
});

test('a raw UPDATE through sequelize.query moves the version, so an older instance is refused', async () => {
  const item = await Item.findByPk(1);
  await sequelize.query(`UPDATE ${TABLE} SET price = 105 WHERE id = 1`);
  assert.deepEqual(await row(db, TABLE), { price: 105, views: 0, version: 1 });
  item.price = 110;
  await assert.rejects(item.save(), OptimisticLockError);
  assert.equal((await row(db, TABLE)).price, 105);
});

test('without the trigger the same raw UPDATE is lost: the older instance overwrites it', async () => {
  await versionedTable(db, TABLE, COLUMNS, null);
  await Item.create({ id: 1, price: 100 });
  const item = await Item.findByPk(1);
  await sequelize.query(`UPDATE ${TABLE} SET price = 105 WHERE id = 1`);
  item.price = 110;
  await item.save();
  assert.deepEqual(await row(db, TABLE), { price: 110, views: 0, version: 1 });
});

test('a raw UPDATE that names a stale version is refused with 40001 and its DETAIL', async () => {
  await sequelize.query(`UPDATE ${TABLE} SET price = 105 WHERE id = 1`); // now version 1
  await assert.rejects(
    sequelize.query(`UPDATE ${TABLE} SET price = 110, version = 0 WHERE id = 1`),
    (error) => serverError('40001')(error)
      && /row version conflict on table/.test(error.message)
      && error.parent.detail === 'Key (id)=(1): expected version 0, found version 1.');
  await sequelize.query(`UPDATE ${TABLE} SET price = 110, version = 1 WHERE id = 1`);
  assert.deepEqual(await row(db, TABLE), { price: 110, views: 0, version: 2 });
});

test('bulk Model.update without the version: the trigger adds one to every row (lenient)', async () => {
  await Item.create({ id: 2, price: 200 });
  const [count] = await Item.update({ price: 1 }, { where: {} });
  assert.equal(count, 2);
  assert.ok(statements.some((sql) => /UPDATE "node_sequelize_items" SET "price"=\$1$/.test(sql.trim())),
    'Sequelize itself leaves the version out of a bulk update');
  assert.equal((await row(db, TABLE, 1)).version, 1);
  assert.equal((await row(db, TABLE, 2)).version, 1);
});

test('bulk Model.update with the read version in its WHERE: 0 rows when stale, one increment when not', async () => {
  const read = (await Item.findByPk(1)).version;
  await sequelize.query(`UPDATE ${TABLE} SET price = 105 WHERE id = 1`); // someone else
  let [count] = await Item.update({ price: 110, version: read + 1 }, { where: { id: 1, version: read } });
  assert.equal(count, 0);
  const fresh = (await Item.findByPk(1)).version;
  [count] = await Item.update({ price: 110, version: fresh + 1 }, { where: { id: 1, version: fresh } });
  assert.equal(count, 1);
  assert.deepEqual(await row(db, TABLE), { price: 110, views: 0, version: fresh + 1 });
});

test('bulk Model.update with the read version in SET: the trigger checks it and returns the new one', async () => {
  const read = (await Item.findByPk(1)).version;
  const [count, rows] = await Item.update({ price: 110, version: read }, { where: { id: 1 }, returning: true });
  assert.equal(count, 1);
  assert.equal(rows[0].version, read + 1);
  await assert.rejects(Item.update({ price: 120, version: read }, { where: { id: 1 } }), serverError('40001'));
  assert.deepEqual(await row(db, TABLE), { price: 110, views: 0, version: read + 1 });
});

test('strict mode: saves and increment() work (they name the version); a bulk update without it is 42P10', async () => {
  await versionedTable(db, TABLE, COLUMNS, 'strict');
  await Item.create({ id: 1, price: 100 });
  const item = await Item.findByPk(1);
  const stale = await Item.findByPk(1);
  item.price = 110;
  await item.save();
  await item.increment('views'); // SET views = views + 1, version = version + 1
  assert.deepEqual(await row(db, TABLE), { price: 110, views: 1, version: 2 });
  stale.price = 120;
  await assert.rejects(stale.save(), OptimisticLockError);
  await assert.rejects(Item.update({ price: 130 }, { where: { id: 1 } }), serverError('42P10'));
  await assert.rejects(sequelize.query(`UPDATE ${TABLE} SET price = 130 WHERE id = 1`), serverError('42P10'));
  await Item.update({ views: 7 }, { where: { id: 1 } }); // only an ignored column: allowed, no increment
  assert.deepEqual(await row(db, TABLE), { price: 110, views: 7, version: 2 });
});

test('ignore_columns: a bulk update of views leaves the version, an instance save still moves it', async () => {
  await Item.update({ views: 5 }, { where: { id: 1 } });
  assert.deepEqual(await row(db, TABLE), { price: 100, views: 5, version: 0 });
  const item = await Item.findByPk(1);
  item.views = 6;
  await item.save(); // Sequelize sends version = read+1 itself
  assert.deepEqual(await row(db, TABLE), { price: 100, views: 6, version: 1 });
});

// Without `version: true`: the trigger alone keeps the version. A hook sends the version the
// instance was read at (so the trigger checks it) and asks for RETURNING (so the new one is read
// back). A stale save is then the server's 40001, not OptimisticLockError.
test('server-generated versions: a hook sends the read version, RETURNING reads back the new one', async () => {
  const SERVER_TABLE = 'node_sequelize_server_items';
  await versionedTable(db, SERVER_TABLE, 'id int PRIMARY KEY, price int NOT NULL, views int NOT NULL DEFAULT 0');
  const ServerItem = sequelize.define('ServerItem', {
    ...attributes,
    version: { type: DataTypes.BIGINT }, // the bigint NOT NULL DEFAULT 1 that enable() added
  }, {
    tableName: SERVER_TABLE, timestamps: false,
    hooks: {
      beforeUpdate(instance, options) {
        instance.changed('version', true);
        options.returning = true;
      },
    },
  });
  const created = await ServerItem.create({ id: 1, price: 100 });
  assert.equal(Number(created.version), 1); // the column default, read back by INSERT ... RETURNING
  const item = await ServerItem.findByPk(1);
  const stale = await ServerItem.findByPk(1);
  item.price = 110;
  await item.save();
  assert.equal(Number(item.version), 2);
  item.price = 120;
  await item.save();
  assert.equal(Number(item.version), 3);
  assert.deepEqual(await row(db, SERVER_TABLE), { price: 120, views: 0, version: 3 });
  stale.price = 130;
  await assert.rejects(stale.save(), serverError('40001'));
  assert.deepEqual(await row(db, SERVER_TABLE), { price: 120, views: 0, version: 3 });
  await db.query(`DROP TABLE ${SERVER_TABLE}`);
});
