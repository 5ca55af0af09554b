// Unit-testing handlers in Node, without rowhook or a wasm runtime.
//
// Importing this module routes the capability calls (emit, state, log,
// metrics) to an in-memory recorder. `run` calls a handler the way rowhook
// does, and `ChangeBuilder` makes the change to give it:
//
//   import { ChangeBuilder, value, run, messages } from '@rowhook/guest/testing';
//   import { onChange } from './handler.js';
//
//   const change = ChangeBuilder.insert('shop', 'orders').column('id', value.uint(7)).build();
//   assert.equal(run(onChange, change), null);
//   assert.equal(messages()[0].text, '{"order":7}');

import { Tag } from './change.js';
import { setHost } from './host.js';
import { messageOf, runHandler } from './run.js';
import { decode, encode } from './utf8.js';

/** A typed column value for `ChangeBuilder`: `{ tag, value }`. */
export const value = {
  null: () => ({ tag: Tag.NULL }),
  int: (v) => ({ tag: Tag.INT, value: BigInt(v) }),
  uint: (v) => ({ tag: Tag.UINT, value: BigInt(v) }),
  float: (v) => ({ tag: Tag.FLOAT, value: Math.fround(v) }),
  double: (v) => ({ tag: Tag.DOUBLE, value: v }),
  decimal: (v) => ({ tag: Tag.DECIMAL, value: v }),
  string: (v) => ({ tag: Tag.STRING, value: v }),
  bytes: (v) => ({ tag: Tag.BYTES, value: v }),
  date: (v) => ({ tag: Tag.DATE, value: v }),
  datetime: (v) => ({ tag: Tag.DATETIME, value: v }),
  timestamp: (v) => ({ tag: Tag.TIMESTAMP, value: v }),
  time: (v) => ({ tag: Tag.TIME, value: v }),
  json: (v) => ({ tag: Tag.JSON, value: v }),
  enum: (v) => ({ tag: Tag.ENUM, value: v }),
  set: (v) => ({ tag: Tag.SET, value: v }),
  bit: (v) => ({ tag: Tag.BIT, value: BigInt(v) }),
  vector: (v) => ({ tag: Tag.VECTOR, value: Float32Array.from(v) }),
};

/** A plausible MySQL type code for a value of this tag. */
const TYPE_CODES = [6, 6, 8, 8, 4, 5, 246, 15, 252, 10, 18, 17, 19, 245, 247, 248, 16, 242];

const OPS = { insert: 1, update: 2, delete: 3, snapshot: 4 };

/**
 * Builds an encoded row change for tests, as rowhook would send it.
 *
 * Columns appear in the order they are first named. For an update,
 * `column` sets the after value and `before` the before value; a column
 * given only one of them has the same value in both images.
 */
export class ChangeBuilder {
  constructor(op, db, table) {
    if (!(op in OPS)) throw new TypeError(`op must be insert, update, delete or snapshot, not ${op}`);
    this._op = op;
    this._db = db;
    this._table = table;
    // A snapshot's id is `snapshot:<db>.<table>:<chunk>:<row>`, with no GTID.
    this._txn = op === 'snapshot' ? `snapshot:${db}.${table}` : '0-1-1';
    this._gtid = op === 'snapshot' ? null : '0-1-1';
    this._file = 'mysql-bin.000001';
    this._pos = 4n;
    this._ts = 0;
    this._event = 0;
    this._row = 0;
    this._columns = [];
  }

  static insert(db, table) {
    return new ChangeBuilder('insert', db, table);
  }

  static update(db, table) {
    return new ChangeBuilder('update', db, table);
  }

  static delete(db, table) {
    return new ChangeBuilder('delete', db, table);
  }

  /** A row read by a snapshot of db.table: an after image only, id `snapshot:<db>.<table>:0:0`, no GTID. */
  static snapshot(db, table) {
    return new ChangeBuilder('snapshot', db, table);
  }

  /** Sets the transaction GTID (also the id's transaction part). */
  gtid(gtid) {
    this._txn = gtid;
    this._gtid = gtid;
    return this;
  }

  /** Sets the event timestamp (seconds since the epoch). */
  ts(ts) {
    this._ts = ts;
    return this;
  }

  /** Sets the binlog file and position. */
  at(file, pos) {
    this._file = file;
    this._pos = BigInt(pos);
    return this;
  }

  /** Sets the rows event and row indexes of the id (a snapshot's chunk and row). */
  index(event, row) {
    this._event = event;
    this._row = row;
    return this;
  }

  _slot(name) {
    let c = this._columns.find((c) => c.name === name);
    if (c === undefined) {
      c = { name, primaryKey: false, before: undefined, after: undefined };
      this._columns.push(c);
    }
    return c;
  }

  /** Sets column `name` (a `value.*`): the after value, or the before value of a delete. */
  column(name, v) {
    const c = this._slot(name);
    if (this._op === 'delete') c.before = v;
    else c.after = v;
    return this;
  }

  /** Sets column `name` in the before image of an update. */
  before(name, v) {
    this._slot(name).before = v;
    return this;
  }

  /** Marks column `name` as part of the primary key. */
  primaryKey(name) {
    this._slot(name).primaryKey = true;
    return this;
  }

  /** The encoded change, a Uint8Array. */
  build() {
    const cols = this._columns;
    const n = cols.length;
    const hasBefore = this._op === 'update' || this._op === 'delete';
    const hasAfter = this._op !== 'delete';
    const images = [];
    if (hasBefore) images.push(cols.map((c) => c.before ?? c.after));
    if (hasAfter) images.push(cols.map((c) => c.after ?? c.before));
    const dataStart = 72 + 8 * n + 9 * n * images.length;
    const data = [];
    let dataLen = 0;
    const put = (bytes) => {
      const off = dataStart + dataLen;
      data.push(bytes);
      dataLen += bytes.length;
      return [off, bytes.length];
    };
    const names = cols.map((c) => put(encode(c.name)));
    const id = `${this._txn}:${this._event}:${this._row}`;
    const idSpan = put(encode(id));
    const gtidSpan = this._gtid === null ? [0, 0] : put(encode(this._gtid));
    const fileSpan = put(encode(this._file));
    const dbSpan = put(encode(this._db));
    const tableSpan = put(encode(this._table));
    const entries = images.map((img) =>
      img.map((v) => {
        const tag = v.tag;
        if (tag <= Tag.NULL) return [tag, null];
        if (tag === Tag.INT || tag === Tag.UINT || tag === Tag.BIT) return [tag, le64(BigInt.asUintN(64, v.value))];
        if (tag === Tag.FLOAT || tag === Tag.DOUBLE) return [tag, new Uint8Array(new Float64Array([v.value]).buffer)];
        if (tag === Tag.BYTES) return [tag, put(v.value)];
        if (tag === Tag.VECTOR) return [tag, put(new Uint8Array(v.value.buffer.slice(0)))];
        return [tag, put(encode(v.value))];
      }),
    );
    const out = new Uint8Array(dataStart + dataLen);
    const dv = new DataView(out.buffer);
    out.set([0x52, 0x48, 0x43, 1, OPS[this._op]], 0);
    out[5] = (hasBefore ? 1 : 0) | (hasAfter ? 2 : 0) | (this._gtid === null ? 0 : 4) | 8;
    dv.setUint16(6, n, true);
    dv.setUint32(8, this._ts, true);
    dv.setUint32(12, this._event, true);
    dv.setUint32(16, this._row, true);
    dv.setUint32(20, encode(this._txn).length, true);
    dv.setBigUint64(24, this._pos, true);
    [idSpan, gtidSpan, fileSpan, dbSpan, tableSpan].forEach(([off, len], i) => {
      dv.setUint32(32 + 8 * i, off, true);
      dv.setUint32(36 + 8 * i, len, true);
    });
    cols.forEach((c, i) => {
      const e = 72 + 8 * i;
      const v = c.after ?? c.before;
      dv.setUint32(e, names[i][0], true);
      dv.setUint16(e + 4, names[i][1], true);
      out[e + 6] = TYPE_CODES[v.tag] ?? 252;
      out[e + 7] = (c.primaryKey ? 1 : 0) | 2;
    });
    let e = 72 + 8 * n;
    for (const img of entries) {
      for (const [tag, payload] of img) {
        out[e] = tag;
        if (payload instanceof Uint8Array) out.set(payload, e + 1);
        else if (payload !== null) {
          dv.setUint32(e + 1, payload[0], true);
          dv.setUint32(e + 5, payload[1], true);
        }
        e += 9;
      }
    }
    let at = dataStart;
    for (const d of data) {
      out.set(d, at);
      at += d.length;
    }
    return out;
  }
}

function le64(v) {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, v, true);
  return b;
}

function fresh() {
  return {
    granted: null,
    emitLimit: null,
    emittedThisEvent: 0,
    messages: [],
    state: new Map(),
    logs: [],
    counters: new Map(),
    gauges: new Map(),
  };
}

let rec = fresh();

/** A refusal shaped as the WIT bindings throw it. */
function refusal(payload) {
  const e = new Error(payload);
  e.payload = payload;
  return e;
}

setHost({
  emit(sink, key, payload) {
    if (rec.granted !== null && !rec.granted.includes(sink)) throw refusal('denied');
    if (rec.emitLimit !== null && rec.emittedThisEvent >= rec.emitLimit) throw refusal('quota');
    rec.emittedThisEvent++;
    const bytes = payload.slice();
    let text = null;
    try {
      text = decode(bytes, 0, bytes.length);
    } catch {
      text = null;
    }
    rec.messages.push({ sink, key, payload: bytes, text });
  },
  stateGet: (key) => (rec.state.has(key) ? rec.state.get(key).slice() : null),
  stateSet(key, value) {
    rec.state.set(key, value.slice());
  },
  stateDelete(key) {
    rec.state.delete(key);
  },
  stateIncrement(key, delta) {
    const old = rec.state.get(key);
    let v = 0n;
    if (old !== undefined) {
      if (old.length !== 8) throw refusal('not-a-counter');
      v = new DataView(old.buffer, old.byteOffset, 8).getBigInt64(0, true);
    }
    const next = v + delta;
    if (next !== BigInt.asIntN(64, next)) throw refusal('overflow');
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigInt64(0, next, true);
    rec.state.set(key, b);
    return next;
  },
  log(level, message, fields) {
    rec.logs.push({ level, message, fields: Object.fromEntries(fields) });
  },
  counterAdd(name, delta) {
    rec.counters.set(name, (rec.counters.get(name) ?? 0n) + delta);
  },
  gaugeSet(name, v) {
    rec.gauges.set(name, v);
  },
});

/**
 * Calls `handler` with the encoded `change` as rowhook does: a fresh emit
 * quota, and the call's messages and state writes discarded if it fails.
 * Returns null, or the error text rowhook would get.
 */
export function run(handler, change) {
  rec.emittedThisEvent = 0;
  const messages = rec.messages.length;
  const saved = new Map(rec.state);
  try {
    runHandler(change, handler);
    return null;
  } catch (e) {
    rec.messages.length = messages;
    rec.state = saved;
    return messageOf(e);
  }
}

/** Grants only these sinks; emitting to another is `denied`. By default every sink is granted. */
export function grant(sinks) {
  rec.granted = [...sinks];
}

/** Allows `limit` emits per `run` (`quota` past it). */
export function setEmitLimit(limit) {
  rec.emitLimit = limit;
}

/** The messages emitted so far: `{ sink, key, payload (Uint8Array), text (UTF-8 or null) }`. */
export function messages() {
  return rec.messages.slice();
}

/** The log lines so far: `{ level, message, fields }`. */
export function logs() {
  return rec.logs.slice();
}

/** The handler's state: a Map of key to Uint8Array. */
export function state() {
  return new Map(rec.state);
}

/** The metric counters: a Map of name to BigInt. */
export function counters() {
  return new Map(rec.counters);
}

/** The metric gauges: a Map of name to number. */
export function gauges() {
  return new Map(rec.gauges);
}

/** Forgets everything recorded, grants and limits included. */
export function reset() {
  rec = fresh();
}
