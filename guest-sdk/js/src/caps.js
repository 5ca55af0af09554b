// The capabilities a handler calls: emit, state, log, metrics. Each checks
// and converts its arguments, calls the host (src/host.js), and turns a
// refusal into a RowhookError whose message names the sink or key.

import { Change } from './change.js';
import { emitError, stateError } from './errors.js';
import { host } from './host.js';
import { jsonLine, jsonLineBytes } from './json.js';
import { decode, encode, Utf8Error } from './utf8.js';

const I64_MIN = -(2n ** 63n);
const I64_MAX = 2n ** 63n - 1n;
const U64_MAX = 2n ** 64n - 1n;

/** The WIT error case a host call failed with, or undefined for any other exception. */
function errorCase(e) {
  return e !== null && typeof e === 'object' && typeof e.payload === 'string' ? e.payload : undefined;
}

/** A 64-bit integer as the SDK hands it out: a number where it is safe, else a BigInt. */
function fromI64(v) {
  return v >= -9007199254740991n && v <= 9007199254740991n ? Number(v) : v;
}

function toI64(what, v) {
  if (typeof v === 'number') {
    if (!Number.isSafeInteger(v)) {
      throw new RangeError(`${what} must be an integer (a safe integer, or a BigInt past 2^53), not ${v}`);
    }
    return BigInt(v);
  }
  if (typeof v === 'bigint') {
    if (v < I64_MIN || v > I64_MAX) throw new RangeError(`${what} ${v} does not fit a signed 64-bit integer`);
    return v;
  }
  throw new TypeError(`${what} must be a number or a BigInt, not ${typeof v}`);
}

/** Text or bytes as the bytes a WIT `list<u8>` takes. */
function bytesOf(what, v) {
  if (v instanceof Uint8Array) return v;
  if (typeof v === 'string') return encode(v);
  throw new TypeError(`${what} must be a Uint8Array or a string, not ${v === null ? 'null' : typeof v}`);
}

/**
 * Sends `payload` to the sink named `sink` (a key of `[sinks]` in the
 * configuration). A Uint8Array or string goes as it is, a Change as its row
 * change JSON (`change.json()`), and any other value as one line of JSON
 * (`jsonLine`: BigInt exact, bytes as base64).
 * `options.key` is the message key where the sink has one.
 *
 * The message goes out when the change's transaction has been handled,
 * and only if this call of the handler succeeds. Throws a RowhookError of
 * kind `emit` whose `reason` is `denied`, `quota`, `unavailable`,
 * `too-large` or `invalid`.
 */
export function emit(sink, payload, options) {
  if (typeof sink !== 'string') throw new TypeError(`emit: sink must be a string (a key of [sinks]), not ${typeof sink}`);
  let bytes;
  if (payload instanceof Uint8Array) bytes = payload;
  else if (typeof payload === 'string') bytes = encode(payload);
  else if (payload instanceof Change) bytes = encode(payload.json());
  else bytes = jsonLineBytes(payload);
  const k = options == null || options.key == null ? null : String(options.key);
  try {
    host.emit(sink, k, bytes);
  } catch (e) {
    const reason = errorCase(e);
    if (reason === undefined) throw e;
    throw emitError(sink, reason);
  }
}

/**
 * The handler's own key-value state, kept by rowhook across events,
 * restarts and reloads. Writes are committed with the checkpoint at the end
 * of the transaction (never applied twice after a crash) and discarded if
 * the call fails; reads see every earlier write.
 */
export const state = {
  /** The value stored under `key` (a Uint8Array), or null. */
  get(key) {
    const v = host.stateGet(String(key));
    return v == null ? null : v;
  },

  /** The value under `key` as text, or null where there is none or it is not UTF-8. */
  getString(key) {
    const v = state.get(key);
    if (v === null) return null;
    try {
      return decode(v, 0, v.length);
    } catch (e) {
      if (e instanceof Utf8Error) return null;
      throw e;
    }
  },

  /** The counter under `key` (see `increment`); 0 where there is none or the value is not a counter. */
  counter(key) {
    const v = state.get(key);
    if (v === null || v.length !== 8) return 0;
    let x = 0n;
    for (let i = 7; i >= 0; i--) x = (x << 8n) | BigInt(v[i]);
    return fromI64(BigInt.asIntN(64, x));
  },

  /** Stores `value` (a Uint8Array, or a string stored as UTF-8) under `key`. */
  set(key, value) {
    key = String(key);
    const bytes = bytesOf(`state.set value of \`${key}\``, value);
    try {
      host.stateSet(key, bytes);
    } catch (e) {
      const reason = errorCase(e);
      if (reason === undefined) throw e;
      throw stateError(key, reason);
    }
  },

  /** Removes `key`; removing a missing key is not an error. */
  delete(key) {
    host.stateDelete(String(key));
  },

  /**
   * Adds `delta` (a number or a BigInt, default 1, may be negative) to the
   * counter under `key`, a missing key counting as 0, and returns the new
   * value: a number, or a BigInt past 2^53. The counter is stored as 8
   * little-endian bytes; `counter` reads it.
   */
  increment(key, delta = 1) {
    key = String(key);
    const d = toI64(`state.increment delta for \`${key}\``, delta);
    try {
      return fromI64(host.stateIncrement(key, d));
    } catch (e) {
      const reason = errorCase(e);
      if (reason === undefined) throw e;
      throw stateError(key, reason);
    }
  },
};

const LEVELS = ['trace', 'debug', 'info', 'warn', 'error'];

function fieldsOf(fields) {
  if (fields == null) return [];
  const out = [];
  for (const k of Object.keys(fields)) {
    const v = fields[k];
    out.push([k, typeof v === 'string' ? v : v === undefined ? 'undefined' : jsonLine(v)]);
  }
  return out;
}

function logAt(level) {
  return (message, fields) => host.log(level, String(message), fieldsOf(fields));
}

/**
 * Structured lines in rowhook's log, labelled with the handler:
 * `log.info("order paid", { order: 42, amount: "12.50" })`. Field values
 * that are not strings are written as JSON. A log call never fails.
 */
export const log = {
  trace: logAt('trace'),
  debug: logAt('debug'),
  info: logAt('info'),
  warn: logAt('warn'),
  error: logAt('error'),
  /** Writes at `level` (`"trace"` … `"error"`). */
  log(level, message, fields) {
    if (!LEVELS.includes(level)) throw new TypeError(`log level must be one of ${LEVELS.join(', ')}, not ${level}`);
    host.log(level, String(message), fieldsOf(fields));
  },
};

/**
 * Named counters and gauges that rowhook exposes (in `rowhook state`, and
 * as Prometheus metrics), labelled with the handler's tenant and name.
 * Names are 1 to 64 ASCII letters, digits and `_`, not starting with a
 * digit; rowhook ignores calls with other names.
 */
export const metrics = {
  /** Adds `delta` (a number or BigInt, at least 0, default 1) to counter `name`. */
  counterAdd(name, delta = 1) {
    let d;
    if (typeof delta === 'number' && Number.isSafeInteger(delta) && delta >= 0) d = BigInt(delta);
    else if (typeof delta === 'bigint' && delta >= 0n && delta <= U64_MAX) d = delta;
    else throw new RangeError(`metrics.counterAdd delta for \`${name}\` must be an integer from 0 to 2^64-1, not ${delta}`);
    host.counterAdd(String(name), d);
  },
  /** Sets gauge `name` to `value` (a number). */
  gaugeSet(name, value) {
    host.gaugeSet(String(name), Number(value));
  },
};
