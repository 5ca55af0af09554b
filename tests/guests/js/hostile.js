// A JavaScript handler that misbehaves on purpose, one way per table of the
// shop binlog, so tests can check each is contained as a Rust handler's is:
//
// - `news`: loops forever (the deadline stops it);
// - `hits`: throws (the message must reach the dead-letter record);
// - `user_info`: emits far past its quota, swallowing every refusal;
// - `orders`: allocates until memory runs out;
// - `sms_outbox`: emits to a sink it was not granted and reports the
//   refusal, then what it sees of the clock (frozen at the epoch);
// - anything else: nothing.
import { emit } from '@rowhook/guest';

export function onChange(change) {
  switch (change.table) {
    case 'news':
      for (;;) {
        change.get('id');
      }
    case 'hits':
      throw new Error('hostile handler throws on purpose');
    case 'user_info':
      for (let i = 0; i < 100; i++) {
        try {
          emit('out', 'flood');
        } catch {
          // Refused past the quota: keep trying.
        }
      }
      return;
    case 'orders': {
      const hog = [];
      for (;;) hog.push(new Uint8Array(1 << 20).fill(1));
    }
    case 'sms_outbox':
      try {
        emit('secret', 'stolen');
        emit('out', 'NOT DENIED');
      } catch (e) {
        emit('out', `denied: ${e.message}`);
      }
      emit('out', `clock: ${Date.now()}`);
      return;
    default:
  }
}
