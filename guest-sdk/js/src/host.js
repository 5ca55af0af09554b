// Where capability calls go: rowhook's imports inside a component (set by
// the entry `rowhook-js build` generates, src/wit.js), or the in-memory
// recorder of `@rowhook/guest/testing` in a handler's unit tests.

const missing = () => {
  throw new Error(
    'rowhook capabilities (emit, state, log, metrics) work inside a component built with `rowhook-js build`, ' +
      'or in tests after `import "@rowhook/guest/testing"`',
  );
};

/**
 * The capability calls, WIT-shaped: `emit(sink, key|null, bytes)` and the
 * state calls throw `{ payload: "<error case>" }`-like errors (an object
 * with a `payload` naming the WIT error case); `increment` and
 * `counterAdd` take and return BigInt.
 */
export const host = {
  emit: missing,
  stateGet: missing,
  stateSet: missing,
  stateDelete: missing,
  stateIncrement: missing,
  log: missing,
  counterAdd: missing,
  gaugeSet: missing,
};

/** Routes capability calls to `impl` (an object with the methods of `host`). */
export function setHost(impl) {
  Object.assign(host, impl);
}
