// {{name}}: every new order of `shop.orders` as one JSON line to the sink
// `out`, keyed by the order id, and a count of the orders in the handler's
// state.
import { emit, state } from '@rowhook/guest';

export function onChange(change) {
  if (change.op !== 'insert') return;
  const id = change.get('id');
  emit('out', { order: id, amount: change.get('amount') }, { key: String(id) });
  state.increment('orders', 1);
}
