// JSON out of a handler.
//
// `changeJson` writes the row change JSON of a change, byte for byte what
// `rowhook inspect` prints: the same key order, string escaping, number
// formatting (the shortest text that reads back to the same float or
// double, written the way the host's `ryu` writes it) and base64.
//
// `jsonLine` writes any JS value as one line of JSON for a sink: 64-bit
// integers (BigInt) as their exact digits, bytes as base64, and strings
// escaped so the line has no control character at all (DEL and U+0080 to
// U+009F too), which is what line sinks (stdout, file, fifo) take.

import { Change, Tag, VALUE_ENTRY_LEN, valueAt } from './change.js';
import { encode } from './utf8.js';

const BASE64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';

/** `b` as standard base64 with padding (without quotes). */
export function base64(b) {
  let out = '';
  const n = b.length;
  let i = 0;
  for (; i + 2 < n; i += 3) {
    const v = (b[i] << 16) | (b[i + 1] << 8) | b[i + 2];
    out += BASE64[v >> 18] + BASE64[(v >> 12) & 63] + BASE64[(v >> 6) & 63] + BASE64[v & 63];
  }
  if (i + 1 === n) {
    const v = b[i] << 16;
    out += BASE64[v >> 18] + BASE64[(v >> 12) & 63] + '==';
  } else if (i + 2 === n) {
    const v = (b[i] << 16) | (b[i + 1] << 8);
    out += BASE64[v >> 18] + BASE64[(v >> 12) & 63] + BASE64[(v >> 6) & 63] + '=';
  }
  return out;
}

/**
 * A finite number as the host's `ryu` writes it: the shortest digits that
 * read back to the same value (as an f32 where `single`), then `12.5`,
 * `3.0`, `0.001`, `1e-7`, `1.5e300`.
 */
export function formatFloat(x, single) {
  if (x === 0) return Object.is(x, -0) ? '-0.0' : '0.0';
  const sign = x < 0 ? '-' : '';
  const [digits, exp] = single ? shortestSingle(Math.abs(x)) : shortestDouble(Math.abs(x));
  const length = digits.length;
  const kk = exp + 1; // 10^(kk-1) <= |x| < 10^kk
  const k = kk - length;
  const wide = single ? 13 : 16;
  const small = single ? -6 : -5;
  let body;
  if (k >= 0 && kk <= wide) {
    body = digits + '0'.repeat(k) + '.0';
  } else if (kk > 0 && kk <= wide) {
    body = digits.slice(0, kk) + '.' + digits.slice(kk);
  } else if (kk > small && kk <= 0) {
    body = '0.' + '0'.repeat(-kk) + digits;
  } else if (length === 1) {
    body = digits + 'e' + (kk - 1);
  } else {
    body = digits[0] + '.' + digits.slice(1) + 'e' + (kk - 1);
  }
  return sign + body;
}

/** `[digits, exponent]` of `x.toExponential(p)`, without the point. */
function scientific(s) {
  const e = s.indexOf('e');
  return [s.slice(0, e).replace('.', ''), Number(s.slice(e + 1))];
}

function shortestDouble(x) {
  // Without an argument, toExponential gives as many digits as it takes to
  // tell x from every other double, and no more, the closest such.
  return scientific(x.toExponential());
}

function shortestSingle(x) {
  for (let p = 1; p <= 9; p++) {
    const [digits, exp] = scientific(x.toExponential(p - 1));
    if (Math.fround(Number(digits + 'e' + (exp - p + 1))) === x) return trim(digits, exp);
    // The nearest p digits may miss x's rounding interval on the side
    // where it is narrower (at a power of two) while a neighbour hits it.
    for (const d of [-1, 1]) {
      const m = Number(digits) + d;
      if (m <= 0) continue;
      const cand = m + 'e' + (exp - p + 1);
      if (Math.fround(Number(cand)) === x) return scientific(Number(cand).toExponential(p - 1));
    }
  }
  return trim(...scientific(x.toExponential(8)));
}

function trim(digits, exp) {
  let end = digits.length;
  while (end > 1 && digits[end - 1] === '0') end--;
  return [digits.slice(0, end), exp];
}

// A string needs the extra escapes of a line sink only if it holds DEL or
// a C1 control; JSON.stringify escapes the rest (`"`, `\`, C0 controls).
const LINE_UNSAFE = /[\u007f-\u009f]/;
const LINE_UNSAFE_ALL = /[\u007f-\u009f]/g;
const BEYOND_ASCII_PRINTABLE = /[^\x00-\x7e]/;

function lineEscape(c) {
  return '\\u00' + c.charCodeAt(0).toString(16);
}

/** `s` as a quoted JSON string that a line sink takes. */
export function lineString(s) {
  const q = JSON.stringify(s);
  return LINE_UNSAFE.test(q) ? q.replace(LINE_UNSAFE_ALL, lineEscape) : q;
}

/** The value at entry `e` as the row change JSON shows it. */
function rowChangeValue(change, e) {
  const v = valueAt(change, e);
  switch (change.bytes[e]) {
    case Tag.NULL:
      return 'null';
    case Tag.INT:
    case Tag.UINT:
    case Tag.BIT:
      return String(v);
    case Tag.FLOAT:
      return Number.isFinite(v) ? formatFloat(v, true) : 'null';
    case Tag.DOUBLE:
      return Number.isFinite(v) ? formatFloat(v, false) : 'null';
    case Tag.JSON:
      return v;
    case Tag.BYTES:
      return '"' + base64(v) + '"';
    case Tag.VECTOR: {
      const parts = [];
      for (let i = 0; i < v.length; i++) parts.push(Number.isFinite(v[i]) ? formatFloat(v[i], true) : 'null');
      return '[' + parts.join(',') + ']';
    }
    default:
      return JSON.stringify(v);
  }
}

function rowChangeImage(row) {
  if (row === null) return 'null';
  const c = row.change;
  const parts = [];
  for (let i = 0; i < c.columnCount; i++) {
    const e = row._at + i * VALUE_ENTRY_LEN;
    if (c.bytes[e] === Tag.ABSENT) continue;
    parts.push(JSON.stringify(c._name(i)) + ':' + rowChangeValue(c, e));
  }
  return '{' + parts.join(',') + '}';
}

/** The change as one line of row change JSON (no newline), as `rowhook inspect` prints it. */
export function changeJson(c) {
  return (
    '{"id":' + JSON.stringify(c.id) +
    ',"op":"' + c.op +
    '","db":' + JSON.stringify(c.db) +
    ',"table":' + JSON.stringify(c.table) +
    ',"ts":' + c.ts +
    ',"gtid":' + (c.gtid === null ? 'null' : JSON.stringify(c.gtid)) +
    ',"file":' + JSON.stringify(c.file) +
    ',"pos":' + String(c.pos) +
    ',"before":' + rowChangeImage(c.before) +
    ',"after":' + rowChangeImage(c.after) +
    '}'
  );
}

/**
 * `value` as one line of JSON, for a sink. As JSON.stringify, and also:
 * BigInt as its digits, a Uint8Array as a base64 string, other typed arrays
 * as arrays of numbers, and DEL and U+0080 to U+009F escaped. `toJSON`
 * methods are called (a Date gives its ISO text); NaN and infinities are
 * `null`; a cycle is a TypeError.
 */
export function jsonLine(value) {
  const out = stringify(value);
  return LINE_UNSAFE.test(out) ? out.replace(LINE_UNSAFE_ALL, lineEscape) : out;
}

/** `jsonLine(value)` as UTF-8 bytes, for emit. */
export function jsonLineBytes(value) {
  return encodeLine(stringify(value));
}

/**
 * The line `text` (JSON, whose strings may still hold DEL or C1 controls)
 * as UTF-8 with those escaped.
 */
function encodeLine(text) {
  if (percentBase64 !== null) return encodeLineBase64(text, percentBase64);
  return encode(LINE_UNSAFE.test(text) ? text.replace(LINE_UNSAFE_ALL, lineEscape) : text);
}

/**
 * `encodeLine` without TextEncoder (QuickJS), by native calls only:
 * `fromBase64` decodes base64 into a Uint8Array.
 */
export function encodeLineBase64(text, fromBase64) {
  // Below DEL throughout (the usual document): nothing to escape, a byte a char.
  if (!BEYOND_ASCII_PRINTABLE.test(text)) return fromBase64(btoa(text));
  // JSON text has no lone surrogate (JSON.stringify escapes them), so this
  // does not throw.
  return fromBase64(btoa(unescape(encodeURIComponent(text.replace(LINE_UNSAFE_ALL, lineEscape)))));
}

const percentBase64 =
  typeof TextEncoder !== 'function' && typeof Uint8Array.fromBase64 === 'function' ? Uint8Array.fromBase64 : null;

// Set by `detect` when JSON.stringify meets what it would write wrong.
let special = false;

function detect(key, v) {
  if (typeof v === 'bigint' || (typeof v === 'object' && v !== null && ArrayBuffer.isView(v))) {
    special = true;
    return null;
  }
  return v;
}

/** `value` as JSON text, before the line escapes. */
function stringify(value) {
  // JSON.stringify writes everything but BigInt and typed arrays as a
  // line wants it; `detect` (a replacer that passes every value on as it
  // is) sees every value after its toJSON and says whether there is one,
  // and then the writer below writes the whole value again. A replacer
  // call per value costs QuickJS less than a for-in over the object first.
  special = false;
  let out = JSON.stringify(value, detect);
  if (special) out = write(value, '', []);
  if (out === undefined) throw new TypeError(`${typeof value} has no JSON form; emit an object, array, string or number`);
  return out;
}

function write(value, key, stack) {
  if (value !== null && typeof value === 'object' && typeof value.toJSON === 'function') {
    value = value.toJSON(key);
  }
  switch (typeof value) {
    case 'string':
      return lineString(value);
    case 'number':
      return Number.isFinite(value) ? String(value) : 'null';
    case 'bigint':
      return value.toString();
    case 'boolean':
      return value ? 'true' : 'false';
    case 'object':
      break;
    default:
      // undefined, functions and symbols: left out of objects, null in arrays.
      return undefined;
  }
  if (value === null) return 'null';
  if (value instanceof Uint8Array) return '"' + base64(value) + '"';
  if (ArrayBuffer.isView(value) && !(value instanceof DataView)) {
    const parts = [];
    for (let i = 0; i < value.length; i++) parts.push(write(value[i], String(i), stack));
    return '[' + parts.join(',') + ']';
  }
  if (stack.includes(value)) throw new TypeError('cannot emit a value that contains itself (a cycle)');
  stack.push(value);
  let out;
  if (Array.isArray(value)) {
    const parts = [];
    for (let i = 0; i < value.length; i++) {
      const v = write(value[i], String(i), stack);
      parts.push(v === undefined ? 'null' : v);
    }
    out = '[' + parts.join(',') + ']';
  } else {
    const parts = [];
    const keys = Object.keys(value);
    for (let i = 0; i < keys.length; i++) {
      const k = keys[i];
      const v = write(value[k], k, stack);
      if (v !== undefined) parts.push(lineString(k) + ':' + v);
    }
    out = '{' + parts.join(',') + '}';
  }
  stack.pop();
  return out;
}

/** The change as one line of row change JSON (no newline), as `rowhook inspect` prints it. */
Change.prototype.json = function json() {
  return changeJson(this);
};
