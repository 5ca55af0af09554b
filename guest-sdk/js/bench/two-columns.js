// The benchmark handler: reads two columns of every change of the
// workload (orders and user_info) and emits one JSON line.
import { emit } from '@rowhook/guest';

export function onChange(change) {
  const id = change.get('id');
  const v = change.table === 'orders' ? change.get('status') : change.get('email');
  emit('out', { id, v });
}
