// Write rowhook handlers in JavaScript.
//
// rowhook calls the handler's `onChange(change)` once for every row change
// of the tables it subscribed to, in binlog order. The handler reads the
// change (`Change`: lazy, only the columns it asks for are decoded), and
// may emit messages to the sinks the operator granted it, keep counters and
// values in its state, log, and set metrics. Returning means the change is
// handled; throwing fails it, with the exception's message, under the
// handler's `on_error` policy.

export { Change, Row, Column, Tag } from './change.js';
export { RowhookError, FormatError } from './errors.js';
export { jsonLine, changeJson, formatFloat } from './json.js';
export { emit, state, log, metrics } from './caps.js';
