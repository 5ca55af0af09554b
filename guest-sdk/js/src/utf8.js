// UTF-8 to and from JS strings, written out because QuickJS has no
// TextEncoder or TextDecoder, and the row change encoding wants text that is
// not UTF-8 rejected, not replaced.

/** Thrown by `decode` for bytes that are not UTF-8; the reader turns it into its `utf8` error. */
export class Utf8Error extends Error {}

// Short texts (names, ids, most column values) decode fastest as one
// String.fromCharCode call over a small array, which both engines do
// natively; a loop of string concatenations costs a string per character.
const CHUNK = 4096;

/**
 * The text of `b[start..end)`, or a `Utf8Error` where it is not UTF-8
 * (overlong forms, surrogates and code points past U+10FFFF included).
 */
export function decode(b, start, end) {
  // ASCII, the common case: one check per byte, then one native call.
  let i = start;
  while (i < end && b[i] < 0x80) i++;
  if (i === end) {
    const n = end - start;
    if (n <= CHUNK) return String.fromCharCode.apply(null, b.subarray(start, end));
  }
  const units = [];
  let out = '';
  i = start;
  while (i < end) {
    const c = b[i];
    if (c < 0x80) {
      units.push(c);
      i++;
    } else if (c >= 0xc2 && c <= 0xdf) {
      const c1 = b[i + 1];
      if (i + 1 >= end || (c1 & 0xc0) !== 0x80) throw new Utf8Error();
      units.push(((c & 0x1f) << 6) | (c1 & 0x3f));
      i += 2;
    } else if (c >= 0xe0 && c <= 0xef) {
      const c1 = b[i + 1];
      const c2 = b[i + 2];
      if (i + 2 >= end || (c1 & 0xc0) !== 0x80 || (c2 & 0xc0) !== 0x80) throw new Utf8Error();
      // E0 needs A0..BF (no overlong form), ED needs 80..9F (no surrogate).
      if ((c === 0xe0 && c1 < 0xa0) || (c === 0xed && c1 > 0x9f)) throw new Utf8Error();
      units.push(((c & 0x0f) << 12) | ((c1 & 0x3f) << 6) | (c2 & 0x3f));
      i += 3;
    } else if (c >= 0xf0 && c <= 0xf4) {
      const c1 = b[i + 1];
      const c2 = b[i + 2];
      const c3 = b[i + 3];
      if (i + 3 >= end || (c1 & 0xc0) !== 0x80 || (c2 & 0xc0) !== 0x80 || (c3 & 0xc0) !== 0x80) {
        throw new Utf8Error();
      }
      // F0 needs 90..BF (no overlong form), F4 needs 80..8F (at most U+10FFFF).
      if ((c === 0xf0 && c1 < 0x90) || (c === 0xf4 && c1 > 0x8f)) throw new Utf8Error();
      const cp = ((c & 0x07) << 18) | ((c1 & 0x3f) << 12) | ((c2 & 0x3f) << 6) | (c3 & 0x3f);
      const v = cp - 0x10000;
      units.push(0xd800 | (v >> 10), 0xdc00 | (v & 0x3ff));
      i += 4;
    } else {
      throw new Utf8Error();
    }
    if (units.length >= CHUNK) {
      out += String.fromCharCode.apply(null, units);
      units.length = 0;
    }
  }
  return out + String.fromCharCode.apply(null, units);
}

/** Whether `b[start..end)` is UTF-8. */
export function isUtf8(b, start, end) {
  try {
    decode(b, start, end);
    return true;
  } catch (e) {
    if (e instanceof Utf8Error) return false;
    throw e;
  }
}

/**
 * `s` as UTF-8 bytes. A lone surrogate (which no UTF-8 can hold) becomes
 * U+FFFD, as TextEncoder does.
 */
export function encode(s) {
  const n = s.length;
  let i = 0;
  while (i < n && s.charCodeAt(i) < 0x80) i++;
  const out = new Uint8Array(i === n ? n : i + (n - i) * 3);
  for (let j = 0; j < i; j++) out[j] = s.charCodeAt(j);
  if (i === n) return out;
  let o = i;
  for (; i < n; i++) {
    let c = s.charCodeAt(i);
    if (c < 0x80) {
      out[o++] = c;
    } else if (c < 0x800) {
      out[o++] = 0xc0 | (c >> 6);
      out[o++] = 0x80 | (c & 0x3f);
    } else {
      if (c >= 0xd800 && c <= 0xdfff) {
        const d = i + 1 < n ? s.charCodeAt(i + 1) : 0;
        if (c <= 0xdbff && d >= 0xdc00 && d <= 0xdfff) {
          const cp = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
          out[o++] = 0xf0 | (cp >> 18);
          out[o++] = 0x80 | ((cp >> 12) & 0x3f);
          out[o++] = 0x80 | ((cp >> 6) & 0x3f);
          out[o++] = 0x80 | (cp & 0x3f);
          i++;
          continue;
        }
        c = 0xfffd;
      }
      out[o++] = 0xe0 | (c >> 12);
      out[o++] = 0x80 | ((c >> 6) & 0x3f);
      out[o++] = 0x80 | (c & 0x3f);
    }
  }
  return out.subarray(0, o);
}
