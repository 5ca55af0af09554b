// The capability calls inside a component: rowhook's WIT imports
// (guest-sdk/wit/handler.wit), as the two JS engines bind them.
//
// Only the entry that `rowhook-js build` generates imports this module;
// the `rowhook:handler/...` modules exist only inside the component.

import { emit } from 'rowhook:handler/emit@0.1.0';
import * as state from 'rowhook:handler/state@0.1.0';
import { log } from 'rowhook:handler/log@0.1.0';
import * as metrics from 'rowhook:handler/metrics@0.1.0';

import { setHost } from './host.js';

const SAFE = 9007199254740991n;

/**
 * Installs rowhook's imports as the host of the capability calls.
 *
 * `engine` is the build's: StarlingMonkey (componentize-js) binds WIT
 * `s64`/`u64` to BigInt, QuickJS (componentize-qjs) to number, so a
 * counter past 2^53 comes back rounded there and is read again exactly
 * from its 8 bytes.
 */
export function installWit(engine) {
  const bigints = engine === 'starlingmonkey';
  setHost({
    emit,
    stateGet: state.get,
    stateSet: state.set,
    stateDelete: state.delete,
    stateIncrement: bigints
      ? state.increment
      : (key, delta) => {
          if (delta > SAFE || delta < -SAFE) {
            throw new RangeError(
              `state.increment delta ${delta} for \`${key}\`: a QuickJS build passes 64-bit integers as numbers, exact to 2^53; build with --engine starlingmonkey for larger steps`,
            );
          }
          const v = state.increment(key, Number(delta));
          if (Number.isSafeInteger(v)) return BigInt(v);
          const b = state.get(key);
          let x = 0n;
          for (let i = 7; i >= 0; i--) x = (x << 8n) | BigInt(b[i]);
          return BigInt.asIntN(64, x);
        },
    log,
    counterAdd: bigints
      ? metrics.counterAdd
      : (name, delta) => {
          if (delta > SAFE) {
            throw new RangeError(
              `metrics.counterAdd delta ${delta} for \`${name}\`: a QuickJS build passes 64-bit integers as numbers, exact to 2^53`,
            );
          }
          metrics.counterAdd(name, Number(delta));
        },
    gaugeSet: metrics.gaugeSet,
  });
}
