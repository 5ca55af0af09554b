// The languages benchmark's handler in JavaScript: reads `id` and `status`
// of a `cdcbench.orders` change and emits them as one JSON line.
import { emit } from '@rowhook/guest';

export function onChange(change) {
  emit('out', { id: change.get('id'), status: change.get('status') });
}
