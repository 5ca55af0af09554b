// UTF-8 to and from JS strings.
//
// StarlingMonkey (and Node) have TextEncoder and TextDecoder; QuickJS has
// neither, and its interpreter spends some 50 ns on every byte a JS loop
// touches. So each direction uses native calls only: where there is no
// TextDecoder, bytes become a "binary string" (one char per byte,
// String.fromCharCode) and `decodeURIComponent(escape(...))` decodes it,
// rejecting what is not UTF-8 (overlong forms, surrogates, past U+10FFFF)
// as the row change encoding asks; where there is no TextEncoder,
// `encodeURIComponent` and base64 make the bytes. The JS loops below are the
// fallback for what those cannot take.

/** Thrown by `decode` for bytes that are not UTF-8; the reader turns it into its `utf8` error. */
export class Utf8Error extends Error {}

const Decoder = typeof TextDecoder === 'function' ? TextDecoder : null;
const Encoder = typeof TextEncoder === 'function' ? TextEncoder : null;
const strict = Decoder === null ? null : new Decoder('utf-8', { fatal: true, ignoreBOM: true });
const encoder = Encoder === null ? null : new Encoder();
const fromBase64 = typeof Uint8Array.fromBase64 === 'function' ? Uint8Array.fromBase64 : null;

// Arguments per String.fromCharCode call: engines cap how many a call takes.
const CHUNK = 8192;
const NON_ASCII = /[^\x00-\x7f]/;

// Where typed arrays write base64 natively (QuickJS-ng), base64 and atob
// make a binary string faster than String.fromCharCode.apply, which QuickJS
// feeds one element at a time.
const toBase64 = typeof Uint8Array.prototype.toBase64 === 'function' && typeof atob === 'function';

/** `b[start..end)` as a binary string: one char (U+0000 to U+00FF) per byte. */
export function binary(b, start, end) {
  if (toBase64) return atob(b.subarray(start, end).toBase64());
  if (end - start <= CHUNK) return String.fromCharCode.apply(null, b.subarray(start, end));
  let out = '';
  for (let i = start; i < end; i += CHUNK) {
    out += String.fromCharCode.apply(null, b.subarray(i, Math.min(i + CHUNK, end)));
  }
  return out;
}

/**
 * A string that is the same for two byte ranges exactly when their bytes
 * are: base64 where typed arrays write it natively (one call, no second
 * string as `binary` makes), else the binary string.
 */
export function bytesKey(b, start, end) {
  return toBase64 ? b.subarray(start, end).toBase64() : binary(b, start, end);
}

/**
 * `b[start..end)` as text where it is at most 8 bytes, all ASCII, without
 * the view and base64 of `binary` (a column value is often a short code or
 * word); else null. The bytes past `end` are read and tested too (they
 * are only ever a reason to return null: an index past the buffer reads
 * as undefined, which the OR takes as 0).
 */
export function shortAscii(b, start, end) {
  const n = end - start;
  if (n > 8) return null;
  const c0 = b[start];
  const c1 = b[start + 1];
  const c2 = b[start + 2];
  const c3 = b[start + 3];
  const c4 = b[start + 4];
  const c5 = b[start + 5];
  const c6 = b[start + 6];
  const c7 = b[start + 7];
  if ((c0 | c1 | c2 | c3 | c4 | c5 | c6 | c7) > 0x7f) return null;
  const s = String.fromCharCode(c0, c1, c2, c3, c4, c5, c6, c7);
  return n === 8 ? s : s.substring(0, n);
}

/** The text of `b[start..end)`, or a `Utf8Error` where it is not UTF-8. */
export function decode(b, start, end) {
  if (end - start <= 8) {
    const s = shortAscii(b, start, end);
    if (s !== null) return s;
  }
  if (strict !== null) {
    try {
      return strict.decode(b.subarray(start, end));
    } catch {
      throw new Utf8Error('not UTF-8');
    }
  }
  return decodeBinary(binary(b, start, end));
}

/** The text whose UTF-8 bytes are the binary string `s` (the path without TextDecoder). */
export function decodeBinary(s) {
  if (!NON_ASCII.test(s)) return s;
  try {
    return decodeURIComponent(escape(s));
  } catch {
    throw new Utf8Error('not UTF-8');
  }
}

/**
 * `s` as UTF-8 bytes. A lone surrogate (which no UTF-8 can hold) becomes
 * U+FFFD, as TextEncoder does.
 */
export function encode(s) {
  if (encoder !== null) return encoder.encode(s);
  if (fromBase64 !== null) return encodeBase64(s, fromBase64);
  return encodeLoop(s);
}

/** `s` as UTF-8 through native calls only (the path without TextEncoder); `fromBase64` decodes base64. */
export function encodeBase64(s, fromBase64) {
  if (!NON_ASCII.test(s)) return fromBase64(btoa(s));
  let uri;
  try {
    uri = encodeURIComponent(s);
  } catch {
    // A lone surrogate.
    return encodeLoop(s);
  }
  return fromBase64(btoa(unescape(uri)));
}

/** `s` as UTF-8, one char at a time. */
export function encodeLoop(s) {
  const n = s.length;
  const out = new Uint8Array(n * 3);
  let o = 0;
  for (let i = 0; i < n; i++) {
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
