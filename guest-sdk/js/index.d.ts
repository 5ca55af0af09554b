// Types of @rowhook/guest: write rowhook handlers in JavaScript.

/**
 * Insert, update or delete, from the binlog; or snapshot: a row read by an
 * initial or on-demand snapshot of its table (an after image only, as an
 * insert has).
 */
export type Op = 'insert' | 'update' | 'delete' | 'snapshot';

/** Which image of a change: the row before it or after it. */
export type Image = 'before' | 'after';

/**
 * A column value as the SDK hands it out, by the encoding's value tag:
 *
 * | tag | JS |
 * |---|---|
 * | null | `null` |
 * | int, uint, bit (TINYINT … BIGINT, YEAR, BIT(n)) | `number` where it is a safe integer, `bigint` past ±(2^53 − 1) |
 * | float, double | `number` (a FLOAT exactly as stored; NaN and infinities as they are) |
 * | decimal | `string`, exact (`"-10.55"`, `"1.50"`) |
 * | string, enum, set | `string` |
 * | date, datetime, timestamp, time | `string` (`2025-11-21`, `2025-11-21 09:31:00`, `2025-11-21T09:31:00.000Z`, `-838:59:59`) |
 * | json | `string`: the JSON text (`JSON.parse` it where wanted) |
 * | bytes (BINARY, BLOB, GEOMETRY, undecodable text) | `Uint8Array`, a view of the change's bytes |
 * | vector | `Float32Array` |
 */
export type Value = null | number | bigint | string | Uint8Array | Float32Array;

/** What a column holds in an image, by the encoding's tags. */
export type Kind =
  | 'absent' | 'null' | 'int' | 'uint' | 'float' | 'double' | 'decimal' | 'string' | 'bytes'
  | 'date' | 'datetime' | 'timestamp' | 'time' | 'json' | 'enum' | 'set' | 'bit' | 'vector';

/** The value tags of the row change encoding (guest-sdk/abi/SPEC.md). */
export declare const Tag: Readonly<{
  ABSENT: 0; NULL: 1; INT: 2; UINT: 3; FLOAT: 4; DOUBLE: 5; DECIMAL: 6; STRING: 7; BYTES: 8;
  DATE: 9; DATETIME: 10; TIMESTAMP: 11; TIME: 12; JSON: 13; ENUM: 14; SET: 15; BIT: 16; VECTOR: 17;
}>;

/** One column of the table. */
export declare class Column {
  /** The column's name, or `@1`, `@2`, … by position where the binlog has no names. */
  readonly name: string;
  /** The MySQL type code, as in the binlog's TABLE_MAP (3 INT, 15 VARCHAR, 246 DECIMAL, …). */
  readonly typeCode: number;
  readonly primaryKey: boolean;
  readonly nullable: boolean;
}

/** One row change, read lazily from its encoding: only what is asked for is decoded. */
export declare class Change {
  /** Reads the header and index of an encoded change; throws a `FormatError` where they are wrong. */
  static parse(bytes: Uint8Array): Change;
  /** The encoded bytes. */
  readonly bytes: Uint8Array;
  readonly op: Op;
  /** The header flags (1 before, 2 after, 4 GTID, 8 names). */
  readonly flags: number;
  /** The schema (database) name. */
  readonly db: string;
  readonly table: string;
  /**
   * The change's stable id, `<txn>:<event>:<row>`: the same every time the same binlog is replayed.
   * A snapshot's is `snapshot:<db>.<table>:<chunk>:<row>`.
   */
  readonly id: string;
  /** The transaction part of the id: its GTID, or `<file>/<pos>` of its first event; `snapshot:<db>.<table>` for a snapshot. */
  readonly txn: string;
  /** The transaction's GTID, where the server wrote one. */
  readonly gtid: string | null;
  /** The binlog file of the rows event. */
  readonly file: string;
  /** Offset of the rows event in its binlog file. */
  readonly pos: number | bigint;
  /** The rows event's header timestamp, seconds since the Unix epoch. */
  readonly ts: number;
  readonly eventIndex: number;
  readonly rowIndex: number;
  /** Whether column names come from the binlog (else `@1`, `@2`, …). */
  readonly hasColumnNames: boolean;
  readonly columnCount: number;
  /** The columns of the table, in table order. */
  readonly columns: Column[];
  column(i: number): Column | undefined;
  /** The position of column `name`, or -1. */
  columnIndex(name: string): number;
  /** The before image (update, delete), or null. */
  readonly before: Row | null;
  /** The after image (insert, update, snapshot), or null. */
  readonly after: Row | null;
  /** The image `get` reads: after, or before for a delete. */
  readonly row: Row;
  /** The image `image`; throws a `no-image` RowhookError where the change has none. */
  image(image: Image): Row;
  /**
   * Column `name` of the row as it is now (the after image, or the before
   * image of a delete). Throws a RowhookError where the table has no such
   * column (`no-column`) or the image lacks it (`not-in-image`, a MINIMAL
   * row image); SQL NULL is `null`.
   */
  get(name: string): Value;
  /** Whether an update changed column `name` (floats compared bit for bit). False for inserts, deletes and snapshots. */
  changed(name: string): boolean;
  /** The change as one line of row change JSON, as `rowhook inspect` prints it. */
  json(): string;
}

/** One image of a change: the row before or after it. */
export declare class Row {
  readonly change: Change;
  readonly image: Image;
  /** Column `name`; throws where there is no such column or the image lacks it. */
  get(name: string): Value;
  /** Whether the image holds column `name`. */
  has(name: string): boolean;
  /** The `i`th column's value; `undefined` where the image lacks it. */
  valueAt(i: number): Value | undefined;
  /** What column `name` holds here. */
  kind(name: string): Kind;
  /** The columns present, as a plain object in table order. */
  toObject(): Record<string, Value>;
}

/** An error of the SDK or a capability call. */
export declare class RowhookError extends Error {
  readonly kind: 'format' | 'no-column' | 'no-image' | 'not-in-image' | 'emit' | 'state';
  /** For `emit` and `state`: the WIT error case (`denied`, `quota`, `too-large`, …). */
  readonly reason?: string;
}

/** The change buffer is not in the row change encoding this SDK reads. */
export declare class FormatError extends RowhookError {
  readonly kind: 'format';
  readonly reason: 'truncated' | 'magic' | 'op' | 'tag' | 'span' | 'utf8';
}

export interface EmitOptions {
  /** The message key where the sink has one (Redis, NATS, Kafka, …); numbers and BigInts become their digits. */
  key?: string | number | bigint | null;
}

/**
 * Sends `payload` to sink `sink`: a Uint8Array or string as it is, a Change
 * as its row change JSON, any other value as one line of JSON (`jsonLine`). Throws a RowhookError of kind
 * `emit` (reason `denied`, `quota`, `unavailable`, `too-large`, `invalid`).
 */
export declare function emit(sink: string, payload: unknown, options?: EmitOptions): void;

/**
 * `value` as one line of JSON: like JSON.stringify, plus BigInt as exact
 * digits, Uint8Array as base64, typed arrays as arrays, and DEL and
 * U+0080–U+009F escaped so any line sink takes it.
 */
export declare function jsonLine(value: unknown): string;

/** The change as one line of row change JSON (`change.json()`). */
export declare function changeJson(change: Change): string;

/** A finite number as rowhook's JSON writes it (`1.0`, `0.1`, `1e-7`), shortest as an f32 where `single`. */
export declare function formatFloat(x: number, single: boolean): string;

/** The handler's own key-value state, kept across events, restarts and reloads. */
export declare const state: {
  get(key: string): Uint8Array | null;
  /** The value as UTF-8 text; null where there is none or it is not UTF-8. */
  getString(key: string): string | null;
  /** The counter written by `increment`; 0 where there is none. */
  counter(key: string): number | bigint;
  /** Stores bytes, or a string as UTF-8. Throws a RowhookError of kind `state` (`too-large`, `quota`). */
  set(key: string, value: Uint8Array | string): void;
  delete(key: string): void;
  /** Adds `delta` (default 1) and returns the new value. Throws a RowhookError of kind `state` (`not-a-counter`, `overflow`, `quota`, `too-large`). */
  increment(key: string, delta?: number | bigint): number | bigint;
};

/** Fields of a log line; values that are not strings are written as JSON. */
export type LogFields = Record<string, unknown>;

/** Structured lines in rowhook's log. Never fails. */
export declare const log: {
  trace(message: string, fields?: LogFields): void;
  debug(message: string, fields?: LogFields): void;
  info(message: string, fields?: LogFields): void;
  warn(message: string, fields?: LogFields): void;
  error(message: string, fields?: LogFields): void;
  log(level: 'trace' | 'debug' | 'info' | 'warn' | 'error', message: string, fields?: LogFields): void;
};

/** Named counters and gauges that rowhook exposes with the handler's labels. */
export declare const metrics: {
  counterAdd(name: string, delta?: number | bigint): void;
  gaugeSet(name: string, value: number): void;
};
