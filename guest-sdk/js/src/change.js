// Reading a row change from its encoding, lazily (guest-sdk/abi/SPEC.md).
//
// `Change.parse` checks the header and that the index fits the buffer, as
// the Rust reader does; a column's name, tag and value are checked when it
// is read, so a handler pays for the columns it touches, not for the width
// of the table. Values are decoded from the buffer on every read and never
// cached: a change lives for one call.

import { FormatError, noColumn, noImage, notInImage } from './errors.js';
import { decode, encode, Utf8Error } from './utf8.js';

const HEADER_LEN = 72;
const COLUMN_ENTRY_LEN = 8;
const VALUE_ENTRY_LEN = 9;

const FLAG_BEFORE = 1;
const FLAG_AFTER = 2;
const FLAG_GTID = 4;
const FLAG_NAMES = 8;

const OPS = [undefined, 'insert', 'update', 'delete'];

/** The value tags of the encoding, by name. */
export const Tag = Object.freeze({
  ABSENT: 0,
  NULL: 1,
  INT: 2,
  UINT: 3,
  FLOAT: 4,
  DOUBLE: 5,
  DECIMAL: 6,
  STRING: 7,
  BYTES: 8,
  DATE: 9,
  DATETIME: 10,
  TIMESTAMP: 11,
  TIME: 12,
  JSON: 13,
  ENUM: 14,
  SET: 15,
  BIT: 16,
  VECTOR: 17,
});

/** What each tag holds, as `Row.kind` names it. */
const KINDS = [
  'absent', 'null', 'int', 'uint', 'float', 'double', 'decimal', 'string', 'bytes',
  'date', 'datetime', 'timestamp', 'time', 'json', 'enum', 'set', 'bit', 'vector',
];

const TWO_32 = 4294967296;
// |hi| below 2^21 keeps hi * 2^32 + lo within ±(2^53 - 1), where a number is exact.
const SAFE_HI = 0x200000;

// Eight bytes in, a double out, whatever the alignment (wasm and every
// host Node runs on are little-endian, like the encoding).
const scratchF64 = new Float64Array(1);
const scratchBytes = new Uint8Array(scratchF64.buffer);
const scratchF32 = new Float32Array(scratchF64.buffer, 0, 1);

function u16(b, p) {
  return b[p] | (b[p + 1] << 8);
}

function u32(b, p) {
  return (b[p] | (b[p + 1] << 8) | (b[p + 2] << 16) | (b[p + 3] << 24)) >>> 0;
}

function f64(b, p) {
  for (let i = 0; i < 8; i++) scratchBytes[i] = b[p + i];
  return scratchF64[0];
}

/** A signed 64-bit integer: a number where it is a safe integer, else a BigInt. */
function i64(b, p) {
  const lo = u32(b, p);
  const hi = b[p + 4] | (b[p + 5] << 8) | (b[p + 6] << 16) | (b[p + 7] << 24);
  if (hi < SAFE_HI && hi >= -SAFE_HI) {
    // Exact: |hi * 2^32 + lo| <= 2^53. Only -2^53 itself is not safe.
    const v = hi * TWO_32 + lo;
    return v >= -Number.MAX_SAFE_INTEGER ? v : BigInt(v);
  }
  return BigInt(hi) * 4294967296n + BigInt(lo);
}

/** An unsigned 64-bit integer: a number where it is a safe integer, else a BigInt. */
function u64(b, p) {
  const lo = u32(b, p);
  const hi = u32(b, p + 4);
  if (hi < SAFE_HI) return hi * TWO_32 + lo;
  return BigInt(hi) * 4294967296n + BigInt(lo);
}

/** Offset of a valid span's bytes; its length is `u32(b, p + 4)`. */
function spanStart(b, p) {
  const off = u32(b, p);
  const len = u32(b, p + 4);
  // Both below 2^32, so the sum is exact in a double: no overflow.
  if (off + len > b.length) throw new FormatError('span');
  return off;
}

function text(b, p) {
  const off = spanStart(b, p);
  try {
    return decode(b, off, off + u32(b, p + 4));
  } catch (e) {
    if (e instanceof Utf8Error) throw new FormatError('utf8');
    throw e;
  }
}

function hex2(x) {
  return (x < 16 ? '0' : '') + x.toString(16);
}

// Names asked for, as UTF-8, so a look-up compares bytes and decodes no
// column name. Bounded: a handler that builds names on the fly starts over.
const nameBytes = new Map();

function encodedName(name) {
  let bytes = nameBytes.get(name);
  if (bytes === undefined) {
    if (nameBytes.size >= 1024) nameBytes.clear();
    bytes = encode(name);
    nameBytes.set(name, bytes);
  }
  return bytes;
}

/**
 * One column of the table: its name (`@1`, `@2`, … by position where the
 * binlog has no names), MySQL type code (as in the binlog's TABLE_MAP:
 * 3 INT, 15 VARCHAR, 246 DECIMAL, …), and flags.
 */
export class Column {
  constructor(name, typeCode, primaryKey, nullable) {
    this.name = name;
    this.typeCode = typeCode;
    this.primaryKey = primaryKey;
    this.nullable = nullable;
  }
}

/**
 * One row change, read in place from its encoding.
 *
 * `get(name)` reads a column from the row as it is now: the after image, or
 * the before image of a delete. `before` and `after` pick an image.
 */
export class Change {
  /**
   * Reads the header and index of an encoded change; throws a
   * `FormatError` where they are not in the row change encoding, version 1.
   * @param {Uint8Array} bytes
   */
  static parse(bytes) {
    return new Change(bytes);
  }

  /** @param {Uint8Array} b */
  constructor(b) {
    if (!(b instanceof Uint8Array)) b = new Uint8Array(b);
    if (b.length < HEADER_LEN) throw new FormatError('truncated');
    if (b[0] !== 0x52 || b[1] !== 0x48 || b[2] !== 0x43 || b[3] !== 1) {
      throw new FormatError('magic', [b[0], b[1], b[2], b[3]].map(hex2).join(', '));
    }
    const op = OPS[b[4]];
    if (op === undefined) throw new FormatError('op', b[4]);
    const flags = b[5];
    const n = u16(b, 6);
    let at = HEADER_LEN + n * COLUMN_ENTRY_LEN;
    let before = -1;
    let after = -1;
    if (flags & FLAG_BEFORE) {
      before = at;
      at += n * VALUE_ENTRY_LEN;
    }
    if (flags & FLAG_AFTER) {
      after = at;
      at += n * VALUE_ENTRY_LEN;
    }
    if (b.length < at) throw new FormatError('truncated');
    this.bytes = b;
    this.op = op;
    this.flags = flags;
    this.columnCount = n;
    this._before = before;
    this._after = after;
    this.gtid = flags & FLAG_GTID ? text(b, 40) : null;
    this.id = text(b, 32);
    this.file = text(b, 48);
    this.db = text(b, 56);
    this.table = text(b, 64);
    // The id's first `txn length` bytes are its transaction part, which
    // must end on a character boundary.
    const txnLen = u32(b, 20);
    const idLen = u32(b, 36);
    if (txnLen > idLen || (txnLen < idLen && (b[u32(b, 32) + txnLen] & 0xc0) === 0x80)) {
      throw new FormatError('span');
    }
    this._txnLen = txnLen;
    this._columns = null;
  }

  /** The transaction part of the id: its GTID, or `<file>/<pos>` of its first event. */
  get txn() {
    const b = this.bytes;
    const off = u32(b, 32);
    return decode(b, off, off + this._txnLen);
  }

  /** The rows event's header timestamp, seconds since the Unix epoch. */
  get ts() {
    return u32(this.bytes, 8);
  }

  /** Index of the rows event within the transaction, from 0. */
  get eventIndex() {
    return u32(this.bytes, 12);
  }

  /** Index of the row within its rows event, from 0. */
  get rowIndex() {
    return u32(this.bytes, 16);
  }

  /** Offset of the rows event in its binlog file (a BigInt past 2^53). */
  get pos() {
    return u64(this.bytes, 24);
  }

  /** Whether column names come from the binlog; if not, they are `@1`, `@2`, … */
  get hasColumnNames() {
    return (this.flags & FLAG_NAMES) !== 0;
  }

  /** The columns of the table, in table order. */
  get columns() {
    if (this._columns === null) {
      const cols = [];
      for (let i = 0; i < this.columnCount; i++) cols.push(this.column(i));
      this._columns = cols;
    }
    return this._columns;
  }

  /** The `i`th column (from 0), or `undefined`. */
  column(i) {
    if (i < 0 || i >= this.columnCount) return undefined;
    const b = this.bytes;
    const e = HEADER_LEN + i * COLUMN_ENTRY_LEN;
    const bits = b[e + 7];
    return new Column(this._name(i), b[e + 6], (bits & 1) !== 0, (bits & 2) !== 0);
  }

  /** Column `i`'s name; a name out of bounds or not UTF-8 reads as "". */
  _name(i) {
    const b = this.bytes;
    const e = HEADER_LEN + i * COLUMN_ENTRY_LEN;
    const off = u32(b, e);
    const len = u16(b, e + 4);
    if (off + len > b.length) return '';
    try {
      return decode(b, off, off + len);
    } catch (e) {
      if (e instanceof Utf8Error) return '';
      throw e;
    }
  }

  /** The position of column `name`, or -1. */
  columnIndex(name) {
    const want = encodedName(name);
    const len = want.length;
    const b = this.bytes;
    const end = b.length;
    for (let i = 0, e = HEADER_LEN; i < this.columnCount; i++, e += COLUMN_ENTRY_LEN) {
      if ((b[e + 4] | (b[e + 5] << 8)) !== len) continue;
      const off = u32(b, e);
      if (off + len > end) continue;
      let j = 0;
      while (j < len && b[off + j] === want[j]) j++;
      if (j === len) return i;
    }
    return -1;
  }

  /** The before image (update, delete), or null. */
  get before() {
    return this._before < 0 ? null : new Row(this, 'before', this._before);
  }

  /** The after image (insert, update), or null. */
  get after() {
    return this._after < 0 ? null : new Row(this, 'after', this._after);
  }

  /** The image `get` reads: after, or before for a delete. */
  get row() {
    const at = this._after >= 0 ? this._after : this._before;
    return new Row(this, this._before >= 0 && this._after < 0 ? 'before' : 'after', at);
  }

  /**
   * Column `name` of the row as it is now (after image; before image of a
   * delete). Throws where the table has no such column or the image lacks
   * it (MINIMAL row image); SQL NULL is `null`.
   */
  get(name) {
    const at = this._after >= 0 ? this._after : this._before;
    return readNamed(this, at, this._before >= 0 && this._after < 0 ? 'before' : 'after', name);
  }

  /**
   * Whether an update changed column `name`: its before and after values
   * differ (floats compared bit for bit, so an unchanged NaN is no change).
   * False for inserts and deletes, and where either image lacks the column.
   */
  changed(name) {
    if (this._before < 0 || this._after < 0) return false;
    const i = this.columnIndex(name);
    if (i < 0) throw noColumn(name);
    const b = this.bytes;
    const x = this._before + i * VALUE_ENTRY_LEN;
    const y = this._after + i * VALUE_ENTRY_LEN;
    // Reading both checks their tags, spans and text, as the Rust reader does.
    const vx = valueAt(this, x);
    const vy = valueAt(this, y);
    if (vx === undefined || vy === undefined) return false;
    const tag = b[x];
    if (tag !== b[y]) return true;
    if (tag <= Tag.NULL) return false;
    if (tag <= Tag.DOUBLE || tag === Tag.BIT) {
      for (let k = 1; k <= 8; k++) if (b[x + k] !== b[y + k]) return true;
      return false;
    }
    const ox = u32(b, x + 1);
    const oy = u32(b, y + 1);
    const len = u32(b, x + 5);
    if (len !== u32(b, y + 5)) return true;
    for (let k = 0; k < len; k++) if (b[ox + k] !== b[oy + k]) return true;
    return false;
  }

  /** The image `image` (`"before"` or `"after"`), or a `no-image` error. */
  image(image) {
    const row = image === 'before' ? this.before : image === 'after' ? this.after : undefined;
    if (row === undefined) throw new TypeError(`image must be "before" or "after", not ${String(image)}`);
    if (row === null) throw noImage(image);
    return row;
  }
}

/**
 * One image of a change: the row before or after it.
 */
export class Row {
  constructor(change, image, at) {
    this.change = change;
    /** `"before"` or `"after"`. */
    this.image = image;
    this._at = at;
  }

  /** Column `name`; throws where there is no such column or the image lacks it. */
  get(name) {
    return readNamed(this.change, this._at, this.image, name);
  }

  /** Whether the image holds column `name` (false where the table has no such column). */
  has(name) {
    const i = this.change.columnIndex(name);
    return i >= 0 && this._at >= 0 && this.change.bytes[this._at + i * VALUE_ENTRY_LEN] !== Tag.ABSENT;
  }

  /** The value of the `i`th column; `undefined` where the image lacks it or there is no such column. */
  valueAt(i) {
    if (i < 0 || i >= this.change.columnCount || this._at < 0) return undefined;
    return valueAt(this.change, this._at + i * VALUE_ENTRY_LEN);
  }

  /** What column `name` holds: `"null"`, `"int"`, `"decimal"`, … or `"absent"` (see `Tag`). */
  kind(name) {
    const i = this.change.columnIndex(name);
    if (i < 0) throw noColumn(name);
    if (this._at < 0) return 'absent';
    const tag = this.change.bytes[this._at + i * VALUE_ENTRY_LEN];
    return KINDS[tag] ?? `tag ${tag}`;
  }

  /** The columns present in this image as a plain object, in table order. */
  toObject() {
    const out = {};
    const c = this.change;
    if (this._at < 0) return out;
    for (let i = 0; i < c.columnCount; i++) {
      const v = valueAt(c, this._at + i * VALUE_ENTRY_LEN);
      if (v !== undefined) out[c._name(i)] = v;
    }
    return out;
  }
}

function readNamed(change, at, image, name) {
  const i = change.columnIndex(name);
  if (i < 0) throw noColumn(name);
  // A change with neither image (rowhook never sends one) holds no column.
  const v = at < 0 ? undefined : valueAt(change, at + i * VALUE_ENTRY_LEN);
  if (v === undefined) throw notInImage(name, image);
  return v;
}

/**
 * The value of the entry at `e` as JS shows it; `undefined` for an absent
 * column. Integers (tags int, uint, bit) are numbers where they are safe
 * integers, BigInts past that; decimals, dates and times are their exact
 * text; bytes a Uint8Array view of the change; vectors a Float32Array.
 */
export function valueAt(change, e) {
  const b = change.bytes;
  const p = e + 1;
  switch (b[e]) {
    case Tag.ABSENT:
      return undefined;
    case Tag.NULL:
      return null;
    case Tag.INT:
      return i64(b, p);
    case Tag.UINT:
    case Tag.BIT:
      return u64(b, p);
    case Tag.FLOAT:
    case Tag.DOUBLE:
      return f64(b, p);
    case Tag.DECIMAL:
    case Tag.STRING:
    case Tag.DATE:
    case Tag.DATETIME:
    case Tag.TIMESTAMP:
    case Tag.TIME:
    case Tag.JSON:
    case Tag.ENUM:
    case Tag.SET:
      return text(b, p);
    case Tag.BYTES: {
      const off = spanStart(b, p);
      return b.subarray(off, off + u32(b, p + 4));
    }
    case Tag.VECTOR: {
      const off = spanStart(b, p);
      const n = u32(b, p + 4) >>> 2;
      const out = new Float32Array(n);
      for (let i = 0, q = off; i < n; i++, q += 4) {
        scratchBytes[0] = b[q];
        scratchBytes[1] = b[q + 1];
        scratchBytes[2] = b[q + 2];
        scratchBytes[3] = b[q + 3];
        out[i] = scratchF32[0];
      }
      return out;
    }
    default:
      throw new FormatError('tag', b[e]);
  }
}

/** The tag of the entry at `e` (for writers of JSON that tell texts from JSON and floats from doubles). */
export function tagAt(change, e) {
  return change.bytes[e];
}

export { HEADER_LEN, COLUMN_ENTRY_LEN, VALUE_ENTRY_LEN };
