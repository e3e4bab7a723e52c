'use strict';
// TypeORM with a version column (EntitySchema `version: true`, the JavaScript form of
// @VersionColumn) on tables where pg_rowversion's trigger guards the same `version` column.
//
// What TypeORM sends: save() first SELECTs the row, compares it with the entity, then
//   UPDATE t SET ..., "version" = "version" + 1 WHERE id = ? RETURNING "version"
// when the entity's version equals the one just selected, and
//   UPDATE t SET ..., "version" = <the entity's version> WHERE id = ? RETURNING "version"
// when it differs (a stale entity). It never puts the version in its WHERE. update() and the
// query builder's update always add "version" = "version" + 1 unless the version is in SET.
const { test, before, after, beforeEach } = require('node:test');
const assert = require('node:assert/strict');
const {
  DataSource, EntitySchema, QueryFailedError, OptimisticLockVersionMismatchError,
} = require('typeorm');
const { server, admin, versionedTable, row } = require('./helpers');

const TABLE = 'node_typeorm_items';
const COLUMNS = 'id int PRIMARY KEY, price int NOT NULL, views int NOT NULL DEFAULT 0, '
  + 'version integer NOT NULL DEFAULT 1';

const Item = new EntitySchema({
  name: 'Item',
  tableName: TABLE,
  columns: {
    id: { type: 'int', primary: true },
    price: { type: 'int' },
    views: { type: 'int', default: 0 },
    version: { type: 'int', version: true },
  },
});

// Runs hooks.beforeUpdate (when a test sets it) inside save(), after TypeORM has selected the
// row and before it sends its UPDATE: a window for another writer.
const hooks = { beforeUpdate: null };
class ItemSubscriber {
  async beforeUpdate(event) {
    if (event.metadata.tableName !== TABLE) return;
    const hook = hooks.beforeUpdate;
    hooks.beforeUpdate = null;
    if (hook) await hook(event);
  }
}

let db; // our own connection
let dataSource;
let repo;
let statements = []; // the SQL TypeORM sent

class Recorder {
  logQuery(sql, parameters) { statements.push({ sql, parameters }); }
  logQueryError() {}
  logQuerySlow() {}
  logSchemaBuild() {}
  logMigration() {}
  log() {}
}

before(async () => {
  db = await admin();
  dataSource = new DataSource({
    type: 'postgres', host: server.host, port: server.port, username: server.user,
    database: server.database, entities: [Item],
    logging: true, logger: new Recorder(),
  });
  await dataSource.initialize();
  // Option `subscribers` takes only @EventSubscriber classes; without decorators, add an instance.
  dataSource.subscribers.push(new ItemSubscriber());
  repo = dataSource.getRepository(Item);
});

after(async () => {
  if (dataSource?.isInitialized) await dataSource.destroy();
  await db?.end();
});

async function reset(mode = 'lenient') {
  await versionedTable(db, TABLE, COLUMNS, mode);
  await repo.save({ id: 1, price: 100 });
  statements = [];
}

beforeEach(async () => {
  statements = [];
  hooks.beforeUpdate = null;
  await reset();
});

function updates() {
  return statements.filter((s) => s.sql.startsWith('UPDATE')).map((s) => s.sql);
}

// TypeORM's wrapper around a server error, with its SQLSTATE.
function serverError(code) {
  return (error) => {
    assert.ok(error instanceof QueryFailedError, `expected QueryFailedError, got ${error}`);
    assert.equal(error.driverError.code, code);
    return true;
  };
}

test('insert: TypeORM sends version 1 itself and reads it back', async () => {
  const item = await repo.save({ id: 2, price: 200 });
  assert.equal(item.version, 1);
  assert.deepEqual(await row(db, TABLE, 2), { price: 200, views: 0, version: 1 });
});

test('two saves of one object: "version" = "version" + 1, one increment each, read back', async () => {
  const item = await repo.findOneBy({ id: 1 });
  item.price = 110;
  await repo.save(item);
  item.price = 120;
  await repo.save(item);
  assert.equal(item.version, 3);
  assert.deepEqual(await row(db, TABLE), { price: 120, views: 0, version: 3 });
  assert.deepEqual(updates(), Array(2).fill(
    'UPDATE "node_typeorm_items" SET "price" = $1, "version" = "version" + 1 WHERE "id" = $2 RETURNING "version"'));
});

test("two editors: the stale save sends its old version in SET and the trigger refuses it (40001)", async () => {
  const first = await repo.findOneBy({ id: 1 });
  const second = await repo.findOneBy({ id: 1 });
  first.price = 110;
  await repo.save(first);
  second.price = 120;
  await assert.rejects(repo.save(second), (error) => serverError('40001')(error)
    && error.driverError.detail === 'Key (id)=(1): expected version 1, found version 2.');
  assert.deepEqual(await row(db, TABLE), { price: 110, views: 0, version: 2 });
  assert.equal(updates().at(-1),
    'UPDATE "node_typeorm_items" SET "price" = $1, "version" = $2 WHERE "id" = $3 RETURNING "version"');
});

test('without the trigger the same stale save wins and even moves the version back', async () => {
  await reset(null);
  const first = await repo.findOneBy({ id: 1 });
  const second = await repo.findOneBy({ id: 1 });
  first.price = 110;
  await repo.save(first);
  second.price = 120;
  await repo.save(second);
  assert.deepEqual(await row(db, TABLE), { price: 120, views: 0, version: 1 });
});

test('unprotected: a save of an object without its version is "version" + 1 and overwrites', async () => {
  await db.query(`UPDATE ${TABLE} SET price = 105 WHERE id = 1`); // someone else: version 2
  const saved = await repo.save({ id: 1, price: 120 }); // e.g. a form that did not carry the version
  assert.equal(saved.version, 3);
  assert.deepEqual(await row(db, TABLE), { price: 120, views: 0, version: 3 });
});

test('unprotected: a write between save()\'s own SELECT and its UPDATE is lost', async () => {
  const item = await repo.findOneBy({ id: 1 });
  hooks.beforeUpdate = () => db.query(`UPDATE ${TABLE} SET price = 105 WHERE id = 1`);
  item.price = 110;
  await repo.save(item); // its SELECT saw version 1 = the entity's, so it sent "version" + 1
  assert.equal(hooks.beforeUpdate, null, 'the other writer ran');
  assert.deepEqual(await row(db, TABLE), { price: 110, views: 0, version: 3 });
  assert.equal(item.version, 3);
});

test('unprotected: update() by id alone is "version" + 1 and overwrites', async () => {
  await db.query(`UPDATE ${TABLE} SET price = 105 WHERE id = 1`);
  const result = await repo.update({ id: 1 }, { price: 120 });
  assert.equal(result.affected, 1);
  assert.deepEqual(await row(db, TABLE), { price: 120, views: 0, version: 3 });
});

test('protects: save() of an object that carries its read version is refused when stale', async () => {
  const read = (await repo.findOneBy({ id: 1 })).version;
  await db.query(`UPDATE ${TABLE} SET price = 105 WHERE id = 1`);
  await assert.rejects(repo.save({ id: 1, price: 120, version: read }), serverError('40001'));
  assert.deepEqual(await row(db, TABLE), { price: 105, views: 0, version: 2 });
});

test('protects (at read time only): findOne with lock {mode: "optimistic", version}', async () => {
  const read = (await repo.findOneBy({ id: 1 })).version;
  const found = await repo.findOne({ where: { id: 1 }, lock: { mode: 'optimistic', version: read } });
  assert.equal(found.price, 100);
  await db.query(`UPDATE ${TABLE} SET price = 105 WHERE id = 1`);
  await assert.rejects(
    repo.findOne({ where: { id: 1 }, lock: { mode: 'optimistic', version: read } }),
    OptimisticLockVersionMismatchError);
});

test('protects: update() with the read version in its criteria affects 0 rows when stale', async () => {
  const read = (await repo.findOneBy({ id: 1 })).version;
  await db.query(`UPDATE ${TABLE} SET price = 105 WHERE id = 1`);
  let result = await repo.update({ id: 1, version: read }, { price: 120 });
  assert.equal(result.affected, 0); // no exception: the caller must check affected
  result = await repo.update({ id: 1, version: read + 1 }, { price: 120 });
  assert.equal(result.affected, 1);
  assert.deepEqual(await row(db, TABLE), { price: 120, views: 0, version: 3 });
});

test('protects: update() with the read version in SET is checked by the trigger, one increment', async () => {
  const read = (await repo.findOneBy({ id: 1 })).version;
  await repo.update({ id: 1 }, { price: 110, version: read });
  assert.deepEqual(await row(db, TABLE), { price: 110, views: 0, version: read + 1 });
  assert.equal(updates().at(-1), 'UPDATE "node_typeorm_items" SET "price" = $1, "version" = $2 WHERE "id" = $3');
  await assert.rejects(repo.update({ id: 1 }, { price: 120, version: read }), serverError('40001'));
  assert.deepEqual(await row(db, TABLE), { price: 110, views: 0, version: read + 1 });
});

test('bulk query-builder update: TypeORM adds "version" + 1 per row, the trigger keeps it (no double)', async () => {
  await repo.save({ id: 2, price: 200 });
  const result = await dataSource.createQueryBuilder().update(Item).set({ price: 1 })
    .where('price >= :min', { min: 100 }).execute();
  assert.equal(result.affected, 2);
  assert.equal((await row(db, TABLE, 1)).version, 2);
  assert.equal((await row(db, TABLE, 2)).version, 2);
});

test('a raw UPDATE through dataSource.query moves the version, so an entity read before is refused', async () => {
  const item = await repo.findOneBy({ id: 1 });
  await dataSource.query(`UPDATE ${TABLE} SET price = 105 WHERE id = 1`);
  assert.deepEqual(await row(db, TABLE), { price: 105, views: 0, version: 2 });
  item.price = 110;
  await assert.rejects(repo.save(item), serverError('40001'));
  await assert.rejects(dataSource.query(`UPDATE ${TABLE} SET price = 110, version = 1 WHERE id = 1`),
    serverError('40001'));
  assert.deepEqual(await row(db, TABLE), { price: 105, views: 0, version: 2 });
});

test('strict mode: TypeORM always names the version, so only raw SQL without it is refused (42P10)', async () => {
  await reset('strict');
  const item = await repo.findOneBy({ id: 1 });
  const stale = await repo.findOneBy({ id: 1 });
  item.price = 110;
  await repo.save(item);
  stale.price = 120;
  await assert.rejects(repo.save(stale), serverError('40001'));
  await repo.update({ id: 1 }, { price: 130 }); // "version" + 1 counts as naming it: accepted
  await repo.save({ id: 1, price: 140 }); // no read version either: accepted
  assert.deepEqual(await row(db, TABLE), { price: 140, views: 0, version: 4 });
  await assert.rejects(dataSource.query(`UPDATE ${TABLE} SET price = 150 WHERE id = 1`), serverError('42P10'));
  await dataSource.query(`UPDATE ${TABLE} SET views = 9 WHERE id = 1`); // only an ignored column
  assert.deepEqual(await row(db, TABLE), { price: 140, views: 9, version: 4 });
});

test('ignore_columns: TypeORM\'s own updates of views still move the version, raw ones do not', async () => {
  await repo.update({ id: 1 }, { views: 5 });
  assert.deepEqual(await row(db, TABLE), { price: 100, views: 5, version: 2 });
  await dataSource.query(`UPDATE ${TABLE} SET views = views + 1 WHERE id = 1`);
  assert.deepEqual(await row(db, TABLE), { price: 100, views: 6, version: 2 });
});

test('server-side versions are read back: save() takes the version from RETURNING', async () => {
  await dataSource.query(`UPDATE ${TABLE} SET price = 105 WHERE id = 1`); // trigger: version 2
  await dataSource.query(`UPDATE ${TABLE} SET price = 106 WHERE id = 1`); // trigger: version 3
  const item = await repo.findOneBy({ id: 1 });
  item.price = 110;
  await repo.save(item);
  assert.equal(item.version, 4);
  assert.deepEqual(await row(db, TABLE), { price: 110, views: 0, version: 4 });
});
