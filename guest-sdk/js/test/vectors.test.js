// The reader against every test vector of guest-sdk/abi/vectors (SPEC.md,
// "Test vectors"): valid vectors decode to their `expect` and print their
// row change `json`; malformed ones fail as their `error` says.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';

import { Change, FormatError, Tag } from '../src/index.js';
import { changeJson } from '../src/json.js';

const DIR = fileURLToPath(new URL('../../abi/vectors/', import.meta.url));

const vectors = readdirSync(DIR)
  .filter((f) => f.endsWith('.json'))
  .sort()
  .map((f) => {
    const name = f.slice(0, -'.json'.length);
    return {
      name,
      bytes: new Uint8Array(readFileSync(join(DIR, `${name}.bin`))),
      doc: JSON.parse(readFileSync(join(DIR, f), 'utf8')),
    };
  });

const hex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');

function f64Bits(x) {
  const b = new Uint8Array(new Float64Array([x]).buffer);
  return hex(b.reverse());
}

/** A value as the vectors' `expect` writes it (support/vectors.rs, `value`). */
function expectValue(row, i) {
  const v = row.valueAt(i);
  if (v === undefined) return { tag: Tag.ABSENT };
  const tag = row.change.bytes[row._at + i * 9];
  switch (tag) {
    case Tag.NULL:
      assert.equal(v, null);
      return { tag };
    case Tag.INT:
      return { tag, int: String(v) };
    case Tag.UINT:
    case Tag.BIT:
      return { tag, uint: String(v) };
    case Tag.FLOAT:
    case Tag.DOUBLE:
      return { tag, f64_bits: f64Bits(v) };
    case Tag.BYTES:
      assert.ok(v instanceof Uint8Array);
      return { tag, hex: hex(v) };
    case Tag.VECTOR:
      assert.ok(v instanceof Float32Array);
      return { tag, hex: hex(new Uint8Array(v.buffer, v.byteOffset, v.byteLength)) };
    default:
      assert.equal(typeof v, 'string');
      return { tag, text: v };
  }
}

function expectOf(c) {
  const image = (row) => (row === null ? null : Array.from({ length: c.columnCount }, (_, i) => expectValue(row, i)));
  return {
    op: c.op,
    flags: c.flags,
    id: c.id,
    txn: c.txn,
    event_index: c.eventIndex,
    row_index: c.rowIndex,
    gtid: c.gtid,
    file: c.file,
    pos: c.pos,
    ts: c.ts,
    db: c.db,
    table: c.table,
    has_column_names: c.hasColumnNames,
    columns: c.columns.map((col) => ({
      name: col.name,
      type_code: col.typeCode,
      primary_key: col.primaryKey,
      nullable: col.nullable,
    })),
    before: image(c.before),
    after: image(c.after),
  };
}

/** Reads everything a change holds, as a handler might. */
function readAll(c) {
  expectOf(c);
  changeJson(c);
}

const valid = vectors.filter((v) => v.doc.error === undefined);
const malformed = vectors.filter((v) => v.doc.error !== undefined);

test('there are vectors of every kind', () => {
  assert.ok(valid.length >= 20, `only ${valid.length} valid vectors`);
  assert.ok(malformed.length >= 10, `only ${malformed.length} malformed vectors`);
  const tags = new Set();
  const ops = new Set();
  for (const { doc } of valid) {
    ops.add(doc.expect.op);
    for (const image of ['before', 'after']) for (const v of doc.expect[image] ?? []) tags.add(v.tag);
  }
  assert.equal(ops.size, 4, 'every op');
  assert.deepEqual([...tags].sort((a, b) => a - b), Array.from({ length: 18 }, (_, i) => i), 'every tag');
});

for (const { name, bytes, doc } of valid) {
  test(`valid vector ${name}`, () => {
    const c = Change.parse(bytes);
    assert.deepEqual(expectOf(c), doc.expect);
    assert.equal(changeJson(c), doc.json);
    assert.equal(c.json(), doc.json);
    // Every prefix of a valid buffer either fails with a FormatError or
    // reads without reading outside it.
    for (let n = 0; n < bytes.length; n++) {
      try {
        readAll(Change.parse(bytes.subarray(0, n)));
      } catch (e) {
        if (!(e instanceof FormatError)) throw new Error(`${name}[..${n}]: ${e.stack}`);
      }
    }
  });
}

for (const { name, bytes, doc } of malformed) {
  test(`malformed vector ${name} is rejected (${doc.error})`, () => {
    let error;
    if (doc.at === 'parse') {
      error = catchIt(() => Change.parse(bytes));
    } else {
      const c = Change.parse(bytes);
      error = catchIt(() => c.image(doc.at.image).valueAt(doc.at.column));
    }
    assert.ok(error instanceof FormatError, `${name}: ${error}`);
    assert.equal(error.reason, doc.error, `${name}: ${error.message}`);
    assert.match(error.message, /^malformed row change: /);
  });
}

function catchIt(f) {
  try {
    f();
  } catch (e) {
    return e;
  }
  assert.fail('was read');
}
