// Types of @rowhook/guest/testing: unit-testing handlers in Node.

import type { Change, Op } from './index.js';

/** A typed column value for ChangeBuilder. */
export interface TestValue {
  readonly tag: number;
  readonly value?: unknown;
}

export declare const value: {
  null(): TestValue;
  int(v: number | bigint): TestValue;
  uint(v: number | bigint): TestValue;
  float(v: number): TestValue;
  double(v: number): TestValue;
  decimal(v: string): TestValue;
  string(v: string): TestValue;
  bytes(v: Uint8Array): TestValue;
  date(v: string): TestValue;
  datetime(v: string): TestValue;
  timestamp(v: string): TestValue;
  time(v: string): TestValue;
  json(v: string): TestValue;
  enum(v: string): TestValue;
  set(v: string): TestValue;
  bit(v: number | bigint): TestValue;
  vector(v: ArrayLike<number>): TestValue;
};

/** Builds an encoded row change, as rowhook sends it. */
export declare class ChangeBuilder {
  constructor(op: Op, db: string, table: string);
  static insert(db: string, table: string): ChangeBuilder;
  static update(db: string, table: string): ChangeBuilder;
  static delete(db: string, table: string): ChangeBuilder;
  /** A row read by a snapshot of the table: an after image only, id `snapshot:<db>.<table>:0:0`, no GTID. */
  static snapshot(db: string, table: string): ChangeBuilder;
  gtid(gtid: string): this;
  ts(ts: number): this;
  at(file: string, pos: number | bigint): this;
  /** The rows event and row of the id (a snapshot's chunk and row). */
  index(event: number, row: number): this;
  /** The after value, or the before value of a delete. */
  column(name: string, v: TestValue): this;
  /** The before value of an update. */
  before(name: string, v: TestValue): this;
  primaryKey(name: string): this;
  build(): Uint8Array;
}

export interface Message {
  sink: string;
  key: string | null;
  payload: Uint8Array;
  /** The payload as text, or null where it is not UTF-8. */
  text: string | null;
}

export interface LogLine {
  level: string;
  message: string;
  fields: Record<string, string>;
}

/** Calls `handler` as rowhook does; null, or the error text rowhook would get. */
export declare function run(handler: (change: Change) => void, change: Uint8Array): string | null;
export declare function grant(sinks: string[]): void;
export declare function setEmitLimit(limit: number): void;
export declare function messages(): Message[];
export declare function logs(): LogLine[];
export declare function state(): Map<string, Uint8Array>;
export declare function counters(): Map<string, bigint>;
export declare function gauges(): Map<string, number>;
export declare function reset(): void;
