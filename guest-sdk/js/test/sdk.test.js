// The SDK around the reader: emit's JSON lines, the capability calls and
// their errors, and a handler run the way rowhook runs it, against the
// in-memory recorder of src/testing.js.

import { test, beforeEach } from 'node:test';
import assert from 'node:assert/strict';

import {
  ChangeBuilder,
  value as v,
  run,
  grant,
  setEmitLimit,
  messages,
  logs,
  state as recordedState,
  counters,
  gauges,
  reset,
} from '../src/testing.js';
import { Change, FormatError, RowhookError, emit, jsonLine, formatFloat, state, log, metrics } from '../src/index.js';

beforeEach(reset);

function update() {
  return ChangeBuilder.update('shop', 'orders')
    .gtid('0-1-42')
    .index(2, 5)
    .at('mysql-bin.000003', 1234)
    .ts(1763712000)
    .primaryKey('id')
    .column('id', v.int(7))
    .before('status', v.enum('new'))
    .column('status', v.enum('paid'))
    .column('amount', v.decimal('12.50'))
    .column('note', v.null())
    .build();
}

test('reads the header and columns', () => {
  const c = Change.parse(update());
  assert.deepEqual([c.op, c.db, c.table], ['update', 'shop', 'orders']);
  assert.deepEqual([c.id, c.txn, c.gtid], ['0-1-42:2:5', '0-1-42', '0-1-42']);
  assert.deepEqual([c.eventIndex, c.rowIndex, c.file, c.pos, c.ts], [2, 5, 'mysql-bin.000003', 1234, 1763712000]);
  assert.deepEqual(
    c.columns.map((col) => [col.name, col.primaryKey]),
    [['id', true], ['status', false], ['amount', false], ['note', false]],
  );
  assert.equal(c.get('id'), 7);
  assert.equal(c.before.get('status'), 'new');
  assert.equal(c.after.get('status'), 'paid');
  assert.equal(c.get('amount'), '12.50');
  assert.equal(c.get('note'), null);
  assert.ok(c.changed('status'));
  assert.ok(!c.changed('id'));
  assert.deepEqual(c.after.toObject(), { id: 7, status: 'paid', amount: '12.50', note: null });
  assert.equal(c.after.kind('amount'), 'decimal');
});

test('reads a change at any offset of its buffer', () => {
  const b = update();
  for (const shift of [1, 2, 3, 5]) {
    const copy = new Uint8Array(b.length + shift);
    copy.set(b, shift);
    const c = Change.parse(copy.subarray(shift));
    assert.equal(c.json(), Change.parse(b).json());
    assert.equal(c.get('amount'), '12.50');
    assert.equal(c.columns[0].primaryKey, true);
  }
});

test('reads the before image of a delete, and names what is missing', () => {
  const c = Change.parse(ChangeBuilder.delete('d', 't').column('id', v.int(-1)).build());
  assert.equal(c.get('id'), -1);
  assert.equal(c.after, null);
  assert.equal(c.row.image, 'before');
  assert.ok(!c.changed('id'));
  const err = (f) => {
    try {
      f();
    } catch (e) {
      assert.ok(e instanceof RowhookError);
      return [e.kind, e.message];
    }
    assert.fail('no error');
  };
  assert.deepEqual(err(() => c.get('nope')), ['no-column', 'no column `nope`']);
  assert.deepEqual(err(() => c.image('after')), ['no-image', 'the change has no after image']);
});

test('a snapshot reads like an insert: the after image only, and its own id', () => {
  const b = ChangeBuilder.snapshot('shop', 'orders')
    .index(3, 17)
    .at('mysql-bin.000003', 1234)
    .primaryKey('id')
    .column('id', v.int(7))
    .column('status', v.enum('paid'))
    .build();
  const c = Change.parse(b);
  assert.equal(c.op, 'snapshot');
  assert.equal(b[4], 4);
  assert.deepEqual([c.id, c.txn, c.gtid], ['snapshot:shop.orders:3:17', 'snapshot:shop.orders', null]);
  assert.deepEqual([c.eventIndex, c.rowIndex, c.file, c.pos], [3, 17, 'mysql-bin.000003', 1234]);
  assert.equal(c.before, null);
  assert.equal(c.row.image, 'after');
  assert.equal(c.get('id'), 7);
  assert.equal(c.after.get('status'), 'paid');
  assert.ok(!c.changed('status'));
  assert.throws(() => c.image('before'), { kind: 'no-image', message: 'the change has no before image' });
  assert.equal(
    c.json(),
    '{"id":"snapshot:shop.orders:3:17","op":"snapshot","db":"shop","table":"orders","ts":0,"gtid":null,' +
      '"file":"mysql-bin.000003","pos":1234,"before":null,"after":{"id":7,"status":"paid"}}',
  );
});

test('a column a MINIMAL row image lacks is not null', () => {
  const b = update();
  // Clear the after entry of `note` (column 3).
  b[72 + 4 * 8 + 4 * 9 + 3 * 9] = 0;
  const c = Change.parse(b);
  assert.throws(() => c.get('note'), { kind: 'not-in-image', message: 'column `note` is not in the after image (MINIMAL row image)' });
  assert.equal(c.after.has('note'), false);
  assert.equal(c.after.valueAt(3), undefined);
  assert.deepEqual(Object.keys(c.after.toObject()), ['id', 'status', 'amount']);
  assert.ok(!c.changed('note'));
});

test('64-bit integers are numbers while safe, BigInt past 2^53, exact either way', () => {
  const c = Change.parse(
    ChangeBuilder.insert('d', 't')
      .column('safe', v.int(Number.MAX_SAFE_INTEGER))
      .column('neg', v.int(-Number.MAX_SAFE_INTEGER))
      .column('big', v.int(2n ** 53n))
      .column('min', v.int(-(2n ** 63n)))
      .column('umax', v.uint(2n ** 64n - 1n))
      .column('bit', v.bit(5))
      .build(),
  );
  assert.equal(c.get('safe'), Number.MAX_SAFE_INTEGER);
  assert.equal(c.get('neg'), -Number.MAX_SAFE_INTEGER);
  assert.equal(c.get('big'), 2n ** 53n);
  assert.equal(c.get('min'), -(2n ** 63n));
  assert.equal(c.get('umax'), 2n ** 64n - 1n);
  assert.equal(c.get('bit'), 5);
  assert.equal(
    c.json().slice(c.json().indexOf('"after"')),
    '"after":{"safe":9007199254740991,"neg":-9007199254740991,"big":9007199254740992,"min":-9223372036854775808,"umax":18446744073709551615,"bit":5}}',
  );
  assert.equal(jsonLine(c.after.toObject()), c.json().slice(c.json().indexOf('"after"') + 8, -1));
});

test('floats print as the host prints them', () => {
  assert.equal(formatFloat(1, false), '1.0');
  assert.equal(formatFloat(1e-5, false), '0.00001');
  assert.equal(formatFloat(1e-7, false), '1e-7');
  assert.equal(formatFloat(-2.5e-300, false), '-2.5e-300');
  assert.equal(formatFloat(1e16, false), '1e16');
  assert.equal(formatFloat(1234e13, false), '1.234e16');
  assert.equal(formatFloat(123456789012345.6, false), '123456789012345.6');
  assert.equal(formatFloat(Math.fround(1.1), true), '1.1');
  assert.equal(formatFloat(Math.fround(0.1), true), '0.1');
  assert.equal(formatFloat(Math.fround(1e-6), true), '0.000001');
  assert.equal(formatFloat(Math.fround(3.4028235e38), true), '3.4028235e38');
  assert.equal(formatFloat(Math.fround(1e13), true), '1e13');
  assert.equal(formatFloat(-0, true), '-0.0');
  // Every float's text reads back to it, and is no longer than JS's own.
  for (const x of [1.5, 16777216, 7.0064923e-45, 1.17549435e-38, 0.3, 2 ** 24 + 2, 8.589973e9]) {
    const f = Math.fround(x);
    const s = formatFloat(f, true);
    assert.equal(Math.fround(Number(s)), f, s);
  }
});

test('jsonLine writes one line of exact JSON', () => {
  assert.equal(
    jsonLine({ a: 1, b: 2n ** 64n, c: 'x\ny\u007f\u0085\u00a0é\t"\\', d: null, e: undefined, f: [undefined, NaN, -0, 1.5] }),
    '{"a":1,"b":18446744073709551616,"c":"x\\ny\\u007f\\u0085\u00a0é\\t\\"\\\\","d":null,"f":[null,null,0,1.5]}',
  );
  assert.equal(jsonLine({ bytes: new Uint8Array([0, 0xff, 0x10, 7]), v: new Float32Array([0.5]) }), '{"bytes":"AP8QBw==","v":[0.5]}');
  assert.equal(jsonLine({ when: new Date(0) }), '{"when":"1970-01-01T00:00:00.000Z"}');
  assert.equal(jsonLine({ '\u0085k': true }), '{"\\u0085k":true}');
  assert.equal(jsonLine([]), '[]');
  assert.equal(jsonLine('s'), '"s"');
  const cyclic = { a: {} };
  cyclic.a.b = cyclic;
  assert.throws(() => jsonLine(cyclic), TypeError);
  assert.throws(() => jsonLine(undefined), TypeError);
  // Plain objects come out as JSON.stringify writes them.
  const doc = { order_id: 1002, amount: '89.99', paid: true, nested: { list: [1, 'two', false] } };
  assert.equal(jsonLine(doc), JSON.stringify(doc));
});

test('emit sends bytes and text as they are, anything else as a JSON line', () => {
  emit('q', new Uint8Array([1, 2]));
  emit('q', 'héllo', { key: 'k' });
  emit('q', { id: 7n }, { key: 7 });
  const c = Change.parse(update());
  emit('q', c);
  const sent = messages();
  assert.equal(sent[3].text, c.json());
  assert.deepEqual(sent[0].payload, new Uint8Array([1, 2]));
  assert.equal(sent[0].key, null);
  assert.deepEqual([sent[1].text, sent[1].key], ['héllo', 'k']);
  assert.deepEqual([sent[2].text, sent[2].key], ['{"id":7}', '7']);
});

test('emit refusals are exceptions that name the sink and the fix', () => {
  grant(['q']);
  assert.throws(() => emit('other', 'x'), {
    name: 'RowhookError',
    kind: 'emit',
    reason: 'denied',
    message: 'emit to sink `other`: denied (the handler has no grant for this sink)',
  });
  setEmitLimit(1);
  emit('q', 'one');
  assert.throws(() => emit('q', 'two'), { reason: 'quota', message: /emit quota of this event reached/ });
  assert.throws(() => emit(7, 'x'), TypeError);
});

test('state: bytes, text and counters', () => {
  assert.equal(state.get('k'), null);
  state.set('k', 'vé');
  assert.equal(state.getString('k'), 'vé');
  assert.deepEqual(state.get('k'), new Uint8Array([0x76, 0xc3, 0xa9]));
  state.set('b', new Uint8Array([0xff]));
  assert.equal(state.getString('b'), null);
  assert.equal(state.increment('n'), 1);
  assert.equal(state.increment('n', 41), 42);
  assert.equal(state.increment('n', 2n ** 60n), 2n ** 60n + 42n);
  assert.equal(state.counter('n'), 2n ** 60n + 42n);
  assert.equal(state.increment('n', -(2n ** 60n)), 42);
  assert.equal(state.counter('missing'), 0);
  assert.throws(() => state.increment('k', 1), { kind: 'state', reason: 'not-a-counter', message: /state key `k`: value is not a counter/ });
  assert.throws(() => state.increment('n', 2n ** 63n), RangeError);
  assert.throws(() => state.increment('n', 0.5), RangeError);
  state.set('big', new Uint8Array([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]));
  assert.throws(() => state.increment('big', 1), { reason: 'overflow' });
  state.delete('k');
  state.delete('k');
  assert.equal(recordedState().has('k'), false);
});

test('log and metrics', () => {
  log.info('order paid', { order: 42, amount: '12.50', ok: true });
  log.log('warn', 'careful');
  metrics.counterAdd('orders');
  metrics.counterAdd('orders', 2n);
  metrics.gaugeSet('lag', 1.5);
  assert.deepEqual(logs(), [
    { level: 'info', message: 'order paid', fields: { order: '42', amount: '12.50', ok: 'true' } },
    { level: 'warn', message: 'careful', fields: {} },
  ]);
  assert.equal(counters().get('orders'), 3n);
  assert.equal(gauges().get('lag'), 1.5);
  assert.throws(() => metrics.counterAdd('orders', -1), RangeError);
  assert.throws(() => log.log('loud', 'x'), TypeError);
});

test('a handler that throws fails the change with the message, and its emits and writes are dropped', () => {
  const change = update();
  const handler = (c) => {
    emit('q', c.id);
    state.set('seen', c.id);
    if (c.get('status') === 'paid') throw new Error(`order ${c.get('id')} is paid`);
  };
  assert.equal(run(handler, change), 'order 7 is paid');
  assert.deepEqual(messages(), []);
  assert.equal(state.get('seen'), null);
  assert.equal(run(() => { throw 'plain text'; }, change), 'plain text');
  assert.equal(run(() => { throw new RangeError(''); }, change), 'RangeError');
  assert.equal(run(async () => {}, change), 'onChange returned a Promise: handlers are synchronous (capability calls do not wait), so drop `async` and `await`');
  assert.equal(run(() => {}, new Uint8Array(10)), 'malformed row change: buffer is truncated');
  assert.equal(run((c) => c.get('nope'), change), 'no column `nope`');
  assert.equal(run((c) => { emit('q', c.id); }, change), null);
  assert.equal(messages()[0].text, '0-1-42:2:5');
});

test('the QuickJS paths of UTF-8 (no TextEncoder or TextDecoder) agree with Node', async () => {
  const { decodeBinary, binary, encodeBase64, encodeLoop, Utf8Error } = await import('../src/utf8.js');
  const { encodeLineBase64 } = await import('../src/json.js');
  const fromBase64 = (s) => new Uint8Array(Buffer.from(s, 'base64'));
  const strict = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
  const samples = ['', 'ascii', 'é', 'ü€𝄞', '\ufeffbom', 'a\u0000b', '%41%', '+ .*@_-', '\u0085\u007f', 'x'.repeat(20000) + 'é'];
  for (const s of samples) {
    const utf8 = new TextEncoder().encode(s);
    assert.deepEqual(encodeBase64(s, fromBase64), utf8, s);
    assert.deepEqual(encodeLoop(s), utf8, s);
    assert.equal(decodeBinary(binary(utf8, 0, utf8.length)), s);
  }
  // Lone surrogates become U+FFFD, as TextEncoder writes them.
  assert.deepEqual(encodeBase64('a\ud800b', fromBase64), new TextEncoder().encode('a\ud800b'));
  // Bytes that are not UTF-8 are rejected as TextDecoder rejects them:
  // overlong forms, surrogates, past U+10FFFF, truncated and stray bytes.
  const bad = [[0xc0, 0x80], [0xe0, 0x80, 0x80], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80], [0xf8], [0xe2, 0x82], [0x80], [0xff]];
  for (const b of bad) {
    const u = new Uint8Array(b);
    assert.throws(() => strict.decode(u));
    assert.throws(() => decodeBinary(binary(u, 0, u.length)), Utf8Error, String(b));
  }
  // And agree on random bytes, valid or not.
  let seed = 7;
  const rand = () => (seed = (seed * 1103515245 + 12345) >>> 0) >>> 24;
  for (let n = 0; n < 2000; n++) {
    const u = new Uint8Array(1 + (n % 7)).map(() => (rand() & 1 ? rand() : 0x80 | (rand() & 0x3f)) | (n % 3 === 0 ? 0xc0 : 0));
    let want;
    try {
      want = strict.decode(u);
    } catch {
      want = null;
    }
    let got;
    try {
      got = decodeBinary(binary(u, 0, u.length));
    } catch (e) {
      assert.ok(e instanceof Utf8Error);
      got = null;
    }
    assert.equal(got, want, String(u));
  }
  for (const line of ['{"a":"plain"}', '{"a":"\u007f\u0085\u00a0é𝄞"}']) {
    assert.deepEqual(encodeLineBase64(line, fromBase64), new TextEncoder().encode(jsonLine(JSON.parse(line))));
  }
});

test('short ASCII texts are read without base64, and anything else falls back to the full decoder', async () => {
  const { shortAscii, decode, decodeBinary, binary } = await import('../src/utf8.js');
  const enc = new TextEncoder();
  for (const s of ['', 'a', 'paid', 'shipped', 'exactly8', 'nine char', 'é', 'aé', 'abcdefgé', '\u007f', '\u0000x']) {
    const body = enc.encode(s);
    // Followed by ASCII, by non-ASCII, and by the end of the buffer.
    for (const tail of [[], [0x41], [0xc3, 0xa9], [0xff]]) {
      const b = new Uint8Array([0x20, ...body, ...tail]);
      const got = shortAscii(b, 1, 1 + body.length);
      if (got !== null) {
        assert.equal(got, s);
        assert.ok(body.length <= 8 && /^[\x00-\x7f]*$/.test(s));
      } else {
        assert.ok(body.length > 8 || !/^[\x00-\x7f]*$/.test(s) || tail.some((x) => x > 0x7f), `${s} ${tail}`);
      }
      assert.equal(decode(b, 1, 1 + body.length), s);
      assert.equal(decodeBinary(binary(b, 1, 1 + body.length)), s);
    }
  }
  // Not UTF-8, short or not: rejected either way.
  for (const bad of [[0xff], [0x61, 0x80], [0xc3], [0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0xc3]]) {
    assert.throws(() => decode(new Uint8Array(bad), 0, bad.length));
  }
});

test('column look-up is right for every table of a run, whatever was cached before', () => {
  const build = (names) => {
    let b = ChangeBuilder.insert('d', 't');
    names.forEach((n, i) => (b = b.column(n, v.int(i))));
    return Change.parse(b.build());
  };
  // Same directory bytes (name lengths), other names: no stale hit.
  for (let round = 0; round < 3; round++) {
    assert.equal(build(['aa', 'bb']).get('aa'), 0);
    assert.equal(build(['bb', 'aa']).get('aa'), 1);
    assert.equal(build(['é', 'x']).get('é'), 0);
    assert.equal(build(['x', 'é']).get('é'), 1);
  }
});

test('header texts known from earlier changes are still checked byte for byte', () => {
  const build = (db, gtid = '0-1-42', row = 5) =>
    ChangeBuilder.insert(db, 'orders').gtid(gtid).index(2, row).at('mysql-bin.000003', 1234).column('id', v.int(7)).build();
  const find = (b, text) => {
    const t = new TextEncoder().encode(text);
    outer: for (let i = 0; i + t.length <= b.length; i++) {
      for (let k = 0; k < t.length; k++) if (b[i + k] !== t[k]) continue outer;
      return i;
    }
    return -1;
  };
  for (let round = 0; round < 2; round++) {
    const good = build('shop');
    const c = Change.parse(good);
    assert.equal(c.db, 'shop');
    assert.equal(c.id, '0-1-42:2:5');
    assert.equal(c.gtid, '0-1-42');
    assert.equal(c.table, 'orders');
    // The same bytes but one of the db name: not UTF-8, refused at parse.
    const bad = good.slice();
    bad[find(bad, 'shop') + 1] = 0xff;
    assert.throws(() => Change.parse(bad), (e) => e instanceof FormatError && e.reason === 'utf8');
    // A byte of the transaction part or of the id's tail.
    const badTxn = good.slice();
    badTxn[find(badTxn, '0-1-42') + 2] = 0xc3;
    assert.throws(() => Change.parse(badTxn), (e) => e instanceof FormatError);
    const badTail = good.slice();
    badTail[find(badTail, '0-1-42:2:5') + 9] = 0x80;
    assert.throws(() => Change.parse(badTail), (e) => e instanceof FormatError);
    // Non-ASCII texts that are UTF-8 read as they are.
    const other = Change.parse(build('shöp', '0-1-43', 6));
    assert.equal(other.db, 'shöp');
    assert.equal(other.id, '0-1-43:2:6');
    assert.equal(Change.parse(good).db, 'shop');
  }
});

test('emit writes every value as JSON.stringify does, BigInt and bytes apart', async () => {
  const { jsonLineBytes } = await import('../src/json.js');
  const line = (x) => new TextDecoder().decode(jsonLineBytes(x));
  const escapeLine = (s) => s.replace(/[\u007f-\u009f]/g, (c) => '\\u00' + c.charCodeAt(0).toString(16));
  class WithProto {
    constructor() {
      this.own = 1;
    }
  }
  WithProto.prototype.inherited = { skipped: true };
  const plain = [
    { id: 123456, status: 'paid' },
    { id: -0, f: 1e21, g: 1.5e-7, h: NaN, i: Infinity, s: 'ascii' },
    { s: 'é€𝄞', del: '\u007f', c1: '\u0085', tab: '\t', nul: '\u0000', lone: '\ud800' },
    { fn() {}, u: undefined, sym: Symbol('x'), n: null, b: false },
    { nested: { list: [1, 'two', null, undefined, () => 1], deep: { deeper: [{}] } } },
    { when: new Date(86400000), custom: { toJSON: (k) => `key ${k}` } },
    new WithProto(),
    Object.assign(Object.create({ inheritedScalar: 5 }), { own: 'x' }),
    [1, 'a', { b: 2 }],
    'just a string',
    42,
    true,
    null,
  ];
  for (const v of plain) assert.equal(line(v), escapeLine(JSON.stringify(v)), JSON.stringify(v));
  // BigInt and typed arrays, at the top, in objects, in arrays, from toJSON.
  assert.equal(line(2n ** 63n), '9223372036854775808');
  assert.equal(line({ a: 1, n: -(2n ** 70n) }), '{"a":1,"n":-1180591620717411303424}');
  assert.equal(line([1n, new Uint8Array([1, 2, 3])]), '[1,"AQID"]');
  assert.equal(line({ deep: { bytes: new Uint8Array([0xff]) }, s: '\u0085' }), '{"deep":{"bytes":"/w=="},"s":"\\u0085"}');
  assert.equal(line({ t: { toJSON: () => 5n } }), '{"t":5}');
  assert.equal(line({ f: new Float64Array([0.25, NaN]) }), '{"f":[0.25,null]}');
  assert.equal(line({ s: 'é', big: 1n }), '{"s":"é","big":1}');
});
