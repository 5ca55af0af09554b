// What can go wrong in a handler, as exceptions a handler may catch. One
// class, `RowhookError`, with a `kind` to branch on; the message is what
// rowhook shows when the handler lets it escape.

/** An error of the SDK or of a capability call; `kind` says which. */
export class RowhookError extends Error {
  /**
   * @param {string} kind  one of `format`, `no-column`, `no-image`,
   *   `not-in-image`, `emit`, `state`
   * @param {string} message
   */
  constructor(kind, message) {
    super(message);
    this.name = 'RowhookError';
    this.kind = kind;
  }
}

const FORMAT_TEXT = {
  truncated: 'buffer is truncated',
  op: 'unknown operation',
  tag: 'unknown value tag',
  span: 'a span reaches past the end',
  utf8: 'text is not UTF-8',
};

/**
 * The change buffer is not in the row change encoding this SDK reads (a
 * rowhook and SDK of different versions). `reason` names the check that
 * failed, as the test vectors do: `truncated`, `magic`, `op`, `tag`, `span`
 * or `utf8`.
 */
export class FormatError extends RowhookError {
  constructor(reason, detail) {
    let text;
    if (reason === 'magic') {
      text = `unknown magic or version [${detail}] (this reader knows version 1)`;
    } else if (detail !== undefined) {
      text = `${FORMAT_TEXT[reason]} ${detail}`;
    } else {
      text = FORMAT_TEXT[reason];
    }
    super('format', `malformed row change: ${text}`);
    this.name = 'FormatError';
    this.reason = reason;
  }
}

/** The table has no column `column`. */
export function noColumn(column) {
  return new RowhookError('no-column', `no column \`${column}\``);
}

/** The change has no `image` image (no before image for an insert or a snapshot, no after image for a delete). */
export function noImage(image) {
  return new RowhookError('no-image', `the change has no ${image} image`);
}

/** The server logs a MINIMAL row image and the statement did not touch the column. */
export function notInImage(column, image) {
  return new RowhookError(
    'not-in-image',
    `column \`${column}\` is not in the ${image} image (MINIMAL row image)`,
  );
}

const EMIT_TEXT = {
  denied: 'denied (the handler has no grant for this sink)',
  quota: 'emit quota of this event reached (limits.emits_per_event or limits.emit_mb_per_event)',
  unavailable: 'sink unavailable',
  'too-large': 'message too large (payload over 16 MiB or key over 64 KiB, or more than the sink takes)',
  invalid:
    'payload not valid for this sink: a line sink (stdout, file, fifo) takes one line of UTF-8 text with no control character but tab (no \\n, \\r, NUL or ESC)',
};

/** A sink refused a message; `reason` is the WIT `emit-error` case. */
export function emitError(sink, reason) {
  const e = new RowhookError('emit', `emit to sink \`${sink}\`: ${EMIT_TEXT[reason] ?? reason}`);
  e.reason = reason;
  return e;
}

const STATE_TEXT = {
  'too-large': 'key or value too large',
  quota: 'state quota reached (limits.state_mb); delete keys or store less',
  'not-a-counter': 'value is not a counter (8 bytes written by increment)',
  overflow: 'counter overflow (past a signed 64-bit integer)',
};

/** A state operation was refused; `reason` is the WIT `state-error` case. */
export function stateError(key, reason) {
  const e = new RowhookError('state', `state key \`${key}\`: ${STATE_TEXT[reason] ?? reason}`);
  e.reason = reason;
  return e;
}
