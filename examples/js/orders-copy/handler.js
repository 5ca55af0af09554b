// Copy every new or changed order into another store, reshaped: the
// JavaScript twin of examples/handlers/orders-copy (same output, byte for
// byte).
//
// In: inserts and updates of `shop.orders` (the config subscribes to those
// two operations; a delete that reaches the handler anyway is ignored).
//
// Out: one compact JSON document per change to the sink `orders_copy`,
// keyed by the order id, so a keyed store keeps the latest version of each
// order:
//
//   {"order_id":1002,"user_id":2,"amount":"89.99","amount_cents":8999,"currency":"USD",
//    "status":"paid","paid":true,"created_at":"2025-11-21T09:31:00.000Z","change_id":"0-1-12:0:0"}
//
// `amount_cents` and `paid` are derived: the exact DECIMAL amount in cents
// (no float on the way: the SDK hands DECIMAL over as its text) and whether
// the order has been paid for. `change_id` is the row change's stable id:
// delivery is at-least-once, so after a restart the same change may arrive
// again, with the same id, and the consumer can drop it.
//
// Build: `npx rowhook-js build examples/js/orders-copy/handler.js -o
// examples/js/orders-copy/orders-copy.wasm` (rowhook-js is in guest-sdk/js);
// run: `examples/orders-copy-js.toml`.

import { emit } from '@rowhook/guest';

/** The sink the documents go to; the config must grant it. */
const SINK = 'orders_copy';

export function onChange(change) {
  if (change.op === 'delete') return;
  const amount = text(change, 'amount');
  const status = text(change, 'status');
  const doc = {
    order_id: integer(change, 'id'),
    user_id: integer(change, 'user_id'),
    amount,
    amount_cents: cents(amount),
    currency: text(change, 'currency'),
    status,
    paid: status === 'paid' || status === 'shipped',
    created_at: text(change, 'created_at'),
    change_id: change.id,
  };
  emit(SINK, doc, { key: doc.order_id });
}

/** `"12.50"` → `1250`. A DECIMAL(12,2) column always arrives with exactly two fraction digits, so dropping the point gives the cents, exactly. */
export function cents(amount) {
  const m = /^(-?\d+)\.(\d\d)$/.exec(amount);
  if (m === null) throw new Error(`amount \`${amount}\` is not a decimal with two fraction digits`);
  const v = BigInt(m[1] + m[2]);
  return v >= -9007199254740991n && v <= 9007199254740991n ? Number(v) : v;
}

function integer(change, name) {
  const v = change.get(name);
  if (typeof v !== 'number' && typeof v !== 'bigint') throw new Error(`column \`${name}\` holds ${change.row.kind(name)}, not an integer`);
  return v;
}

function text(change, name) {
  const v = change.get(name);
  if (typeof v !== 'string') throw new Error(`column \`${name}\` holds ${change.row.kind(name)}, not text`);
  return v;
}
