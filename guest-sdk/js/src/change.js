// Reading a row change from its encoding, lazily (guest-sdk/abi/SPEC.md).
//
// `Change.parse` checks the header and that the index fits the buffer, as
// the Rust reader does; a column's name, tag and value are checked when it
// is read, so a handler pays for the columns it touches, not for the width
// of the table. Values are decoded from the buffer on every read and never
// cached: a change lives for one call.

import { FormatError, noColumn, noImage, notInImage } from './errors.js';
import { binary, bytesKey, decode, Utf8Error } from './utf8.js';

const HEADER_LEN = 72;
const COLUMN_ENTRY_LEN = 8;
const VALUE_ENTRY_LEN = 9;

const FLAG_BEFORE = 1;
const FLAG_AFTER = 2;
const FLAG_GTID = 4;
const FLAG_NAMES = 8;

const OPS = [undefined, 'insert', 'update', 'delete', 'snapshot'];

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

/**
 * The header and column directory as little-endian 32-bit words: header
 * field at byte offset `o` is word `o / 4`, and column `i`'s entry is words
 * `18 + 2i` (name offset) and `19 + 2i` (name length, type code, flags, in
 * its low, third and high byte). A typed array read is one step for the
 * interpreter where assembling bytes is a dozen.
 */
function wordsOf(b, n) {
  const count = 18 + 2 * n;
  if ((b.byteOffset & 3) === 0 && LITTLE_ENDIAN) return new Uint32Array(b.buffer, b.byteOffset, count);
  const w = new Uint32Array(count);
  const dv = new DataView(b.buffer, b.byteOffset, count * 4);
  for (let i = 0; i < count; i++) w[i] = dv.getUint32(4 * i, true);
  return w;
}

const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/**
 * The header's texts (id, gtid, file, db, table), read with one native call
 * where they lie within 4 KiB of each other and are all ASCII, as rowhook
 * writes them; else null, and each is decoded (and checked) on its own.
 * Throws a span error for a span that reaches past the end.
 */
function headerText(b, w, gtid) {
  const len = b.length;
  const idEnd = w[8] + w[9];
  const fileEnd = w[12] + w[13];
  const dbEnd = w[14] + w[15];
  const tableEnd = w[16] + w[17];
  if (idEnd > len || fileEnd > len || dbEnd > len || tableEnd > len) throw new FormatError('span');
  let lo = Math.min(w[8], w[12], w[14], w[16]);
  let hi = Math.max(idEnd, fileEnd, dbEnd, tableEnd);
  if (gtid) {
    const gtidEnd = w[10] + w[11];
    if (gtidEnd > len) throw new FormatError('span');
    lo = Math.min(lo, w[10]);
    hi = Math.max(hi, gtidEnd);
  }
  if (hi - lo > 4096) return null;
  const s = binary(b, lo, hi);
  return NON_ASCII.test(s) ? null : { s, lo };
}

/**
 * Checks the header's spans (throws a span error for one that reaches past
 * the end) and returns where its texts start where they lie within 4 KiB of
 * each other and are all ASCII (so UTF-8), checked without making a
 * string of them: the smallest of their bytes read as signed is not
 * negative. Else -1: then they are read, and checked, at once.
 */
function asciiHeaderStart(b, w, gtid) {
  const len = b.length;
  const idEnd = w[8] + w[9];
  const fileEnd = w[12] + w[13];
  const dbEnd = w[14] + w[15];
  const tableEnd = w[16] + w[17];
  if (idEnd > len || fileEnd > len || dbEnd > len || tableEnd > len) throw new FormatError('span');
  let lo = Math.min(w[8], w[12], w[14], w[16]);
  let hi = Math.max(idEnd, fileEnd, dbEnd, tableEnd);
  if (gtid) {
    const gtidEnd = w[10] + w[11];
    if (gtidEnd > len) throw new FormatError('span');
    lo = Math.min(lo, w[10]);
    hi = Math.max(hi, gtidEnd);
  }
  if (hi - lo > 4096) return -1;
  return Math.min.apply(null, new Int8Array(b.buffer, b.byteOffset + lo, hi - lo)) >= 0 ? lo : -1;
}

/** The header's texts known to be ASCII from `lo` on, as `headerText` gives them. */
function asciiHeader(b, w, gtid, lo) {
  let hi = Math.max(w[8] + w[9], w[12] + w[13], w[14] + w[15], w[16] + w[17]);
  if (gtid) hi = Math.max(hi, w[10] + w[11]);
  return { s: binary(b, lo, hi), lo };
}

/** The header text whose span is words `k`, `k + 1`. */
function headerField(b, w, k, header) {
  if (header === null) {
    try {
      return decode(b, w[k], w[k] + w[k + 1]);
    } catch (e) {
      if (e instanceof Utf8Error) throw new FormatError('utf8');
      throw e;
    }
  }
  const off = w[k] - header.lo;
  return header.s.substring(off, off + w[k + 1]);
}

const NON_ASCII = /[^\x00-\x7f]/;

function hex2(x) {
  return (x < 16 ? '0' : '') + x.toString(16);
}

// Column look-up by name without a JS loop over bytes (QuickJS interprets
// every byte a loop touches; native calls are cheap). A table's column
// directory (offsets, lengths, type codes, flags) and the bytes of its names
// are, as strings (`bytesKey`), the key of a map from name to position, kept for
// the tables seen last. A change whose directory and names are the same
// bytes as a cached one has the same positions; rowhook writes the same
// directory and names for every change of a table (SPEC.md, "What the
// writer guarantees"), so the map is built once per table, but a buffer
// that differs only gets a map of its own, never a wrong one.
const indexes = new Map();
const MAX_INDEXES = 64;
// Names past this many bytes from the directory's first name are looked up
// one by one instead (no writer puts them there, but a buffer may).
const MAX_NAMES_SPAN = 1 << 16;

class ColumnIndex {
  constructor(change) {
    const b = change.bytes;
    const w = change._w;
    const n = change.columnCount;
    let lo = b.length;
    let hi = 0;
    for (let i = 0; i < n; i++) {
      const off = w[18 + 2 * i];
      const end = off + (w[19 + 2 * i] & 0xffff);
      if (end > b.length) continue;
      if (off < lo) lo = off;
      if (end > hi) hi = end;
    }
    if (hi < lo) lo = hi = 0;
    this.lo = lo;
    this.hi = hi;
    this.names = bytesKey(b, lo, hi);
    this.positions = new Map();
    // Later columns of the same name do not replace the first, as a scan from the left finds it.
    for (let i = n - 1; i >= 0; i--) {
      const name = change._name(i, null);
      if (name !== null) this.positions.set(name, i);
    }
  }
}

/** The ColumnIndex of `change`'s table, from the cache or new. */
function columnIndexOf(change) {
  const b = change.bytes;
  const n = change.columnCount;
  const dir = bytesKey(b, HEADER_LEN, HEADER_LEN + n * COLUMN_ENTRY_LEN);
  let index = indexes.get(dir);
  if (index !== undefined && bytesKey(b, index.lo, index.hi) === index.names) return index;
  index = new ColumnIndex(change);
  if (index.hi - index.lo > MAX_NAMES_SPAN) return index;
  if (indexes.size >= MAX_INDEXES) indexes.delete(indexes.keys().next().value);
  indexes.set(dir, index);
  return index;
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
 * the before image of a delete. A snapshot (a row read by a snapshot of its
 * table) has an after image only, as an insert has. `before` and `after`
 * pick an image.
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
    const n = b[6] | (b[7] << 8);
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
    const w = wordsOf(b, n);
    const gtid = (flags & FLAG_GTID) !== 0;
    const asciiFrom = asciiHeaderStart(b, w, gtid);
    // Few fields: QuickJS pays for each one a new object gets.
    this.bytes = b;
    this.op = op;
    this._w = w;
    this._before = before;
    this._after = after;
    // The header's texts: where they are ASCII, where they start (a
    // number), and read when first asked for; else read now, so a text
    // that is not UTF-8 fails the parse: one ASCII string to cut them
    // from, or (not all ASCII) each decoded.
    this._header =
      asciiFrom >= 0
        ? asciiFrom
        : headerText(b, w, gtid) ?? [
            headerField(b, w, 8, null),
            gtid ? headerField(b, w, 10, null) : null,
            headerField(b, w, 12, null),
            headerField(b, w, 14, null),
            headerField(b, w, 16, null),
          ];
    // The id's first `txn length` bytes are its transaction part, which
    // must end on a character boundary.
    const txnLen = w[5];
    if (txnLen > w[9] || (txnLen < w[9] && (b[w[8] + txnLen] & 0xc0) === 0x80)) {
      throw new FormatError('span');
    }
  }

  /** The header flags (1 before, 2 after, 4 GTID, 8 names). */
  get flags() {
    return this.bytes[5];
  }

  /** The number of columns of the table. */
  get columnCount() {
    return this.bytes[6] | (this.bytes[7] << 8);
  }

  _text(k) {
    let h = this._header;
    if (typeof h === 'number') h = this._header = asciiHeader(this.bytes, this._w, (this.bytes[5] & FLAG_GTID) !== 0, h);
    return Array.isArray(h) ? h[(k - 8) >> 1] : headerField(this.bytes, this._w, k, h);
  }

  /** The change's stable id, `<txn>:<event>:<row>`: the same every time the same binlog is replayed. */
  get id() {
    return this._text(8);
  }

  /** The transaction's GTID, or null where the server wrote none. */
  get gtid() {
    return (this.bytes[5] & FLAG_GTID) === 0 ? null : this._text(10);
  }

  /** The binlog file of the rows event. */
  get file() {
    return this._text(12);
  }

  /** The schema (database) name. */
  get db() {
    return this._text(14);
  }

  /** The table name. */
  get table() {
    return this._text(16);
  }

  /** The transaction part of the id: its GTID, or `<file>/<pos>` of its first event. */
  get txn() {
    const w = this._w;
    return decode(this.bytes, w[8], w[8] + w[5]);
  }

  /** The rows event's header timestamp, seconds since the Unix epoch. */
  get ts() {
    return this._w[2];
  }

  /** Index of the rows event within the transaction, from 0. */
  get eventIndex() {
    return this._w[3];
  }

  /** Index of the row within its rows event, from 0. */
  get rowIndex() {
    return this._w[4];
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
    if (this._columns === undefined) {
      const cols = [];
      for (let i = 0; i < this.columnCount; i++) cols.push(this.column(i));
      this._columns = cols;
    }
    return this._columns;
  }

  /** The `i`th column (from 0), or `undefined`. */
  column(i) {
    if (i < 0 || i >= this.columnCount) return undefined;
    const entry = this._w[19 + 2 * i];
    const bits = entry >>> 24;
    return new Column(this._name(i), (entry >>> 16) & 0xff, (bits & 1) !== 0, (bits & 2) !== 0);
  }

  /** Column `i`'s name; `invalid` ("" unless given) where it is out of bounds or not UTF-8. */
  _name(i, invalid = '') {
    const b = this.bytes;
    const off = this._w[18 + 2 * i];
    const len = this._w[19 + 2 * i] & 0xffff;
    if (off + len > b.length) return invalid;
    try {
      return decode(b, off, off + len);
    } catch (e) {
      if (e instanceof Utf8Error) return invalid;
      throw e;
    }
  }

  /** The position of column `name`, or -1. */
  columnIndex(name) {
    if (this._index === undefined) this._index = columnIndexOf(this);
    const i = this._index.positions.get(name);
    return i === undefined ? -1 : i;
  }

  /** The before image (update, delete), or null. */
  get before() {
    return this._before < 0 ? null : new Row(this, 'before', this._before);
  }

  /** The after image (insert, update, snapshot), or null. */
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
   * False for inserts, deletes and snapshots, and where either image lacks
   * the column.
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
