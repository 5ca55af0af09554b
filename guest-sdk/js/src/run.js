// The component's `on-change` export around the author's handler: parse the
// change, call the handler, and turn an exception into the WIT `err` text.

import { Change } from './change.js';

/**
 * Calls `handler` with the change encoded in `bytes`. Returns normally when
 * the change is handled; throws a string, the message of what the handler
 * threw (or of a malformed change), which both engines turn into
 * `err(message)`.
 */
export function runHandler(bytes, handler) {
  let result;
  try {
    result = handler(Change.parse(bytes));
  } catch (e) {
    throw messageOf(e);
  }
  if (result !== null && typeof result === 'object' && typeof result.then === 'function') {
    throw 'onChange returned a Promise: handlers are synchronous (capability calls do not wait), so drop `async` and `await`';
  }
}

/** The text rowhook shows for an exception: its message, or the thrown value. */
export function messageOf(e) {
  if (e instanceof Error) return e.message === '' ? e.name : e.message;
  if (typeof e === 'string') return e;
  try {
    return `${String(e)}`;
  } catch {
    return 'the handler threw a value that has no text';
  }
}
