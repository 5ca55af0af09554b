//! Hand-written JSON text output.
//!
//! Row changes are turned into JSON text directly into a reused byte buffer:
//! building a `serde_json::Value` tree per row costs several times more than
//! decoding the row, so the hot path never does.

/// Appends `s` as a quoted, escaped JSON string.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    write_str_body(out, s);
    out.push(b'"');
}

/// Appends the escaped body of a JSON string (no quotes).
///
/// Escapes `"`, `\` and the control characters below U+0020; everything else,
/// multi-byte UTF-8 included, is copied as is.
pub fn write_str_body(out: &mut Vec<u8>, s: &str) {
    let done = write_body(out, s.as_bytes(), true);
    debug_assert!(done);
}

/// Appends `bytes` as a quoted, escaped JSON string if they are valid UTF-8,
/// and says whether they were; otherwise `out` is left as it was.
///
/// One pass over text that is all ASCII (most column values), instead of
/// validating it first and escaping it after.
pub fn write_utf8(out: &mut Vec<u8>, bytes: &[u8]) -> bool {
    let mark = out.len();
    out.push(b'"');
    if !write_body(out, bytes, false) {
        out.truncate(mark);
        return false;
    }
    out.push(b'"');
    true
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// The escaped body of `bytes`. `valid`: the bytes are known to be UTF-8;
/// if not, they are checked from the first byte above 0x7F on, and on
/// failure the function stops and returns false (having written part).
fn write_body(out: &mut Vec<u8>, bytes: &[u8], mut valid: bool) -> bool {
    out.reserve(bytes.len());
    // `bytes[start..i]` is clean and not copied yet.
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let end = bytes.len().min(i + 8);
        // Most text has nothing to escape: look at eight bytes at a time and
        // copy clean runs in one go.
        if let Some(word) = bytes.get(i..i + 8) {
            let w = u64::from_le_bytes(word.try_into().expect("eight bytes"));
            if !may_need_escape(w) && (valid || w & HIGH == 0) {
                i += 8;
                continue;
            }
        }
        if !valid && bytes[i..end].iter().any(|&b| b >= 0x80) {
            // Everything before `i` is ASCII, so `i` starts a character.
            if std::str::from_utf8(&bytes[i..]).is_err() {
                return false;
            }
            valid = true;
        }
        // A word with something to escape (JSON text in a column has a quote
        // every few bytes): byte by byte, which beats a copy call per escape.
        out.extend_from_slice(&bytes[start..i]);
        for &b in &bytes[i..end] {
            match ESCAPE[usize::from(b)] {
                0 => out.push(b),
                b'u' => {
                    const HEX: &[u8; 16] = b"0123456789abcdef";
                    out.extend_from_slice(&[
                        b'\\',
                        b'u',
                        b'0',
                        b'0',
                        HEX[usize::from(b >> 4)],
                        HEX[usize::from(b & 0xf)],
                    ]);
                }
                e => out.extend_from_slice(&[b'\\', e]),
            }
        }
        i = end;
        start = end;
    }
    out.extend_from_slice(&bytes[start..]);
    true
}

/// For each byte, the letter after the backslash that escapes it (`u` for
/// `\u00XX`), or 0 where the byte is copied as is.
static ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = b'u';
        b += 1;
    }
    t[0x08] = b'b';
    t[0x09] = b't';
    t[0x0a] = b'n';
    t[0x0c] = b'f';
    t[0x0d] = b'r';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

/// Whether some byte of `w` is `"`, `\` or below 0x20 (the SWAR tests of
/// "Bit Twiddling Hacks": exact for "some byte", not for which one, so the
/// caller then looks at each byte).
#[inline]
fn may_need_escape(w: u64) -> bool {
    // A byte below n (n <= 0x80) sets its high bit in (x - n) & !x.
    let control = w.wrapping_sub(ONES * 0x20) & !w;
    let q = w ^ (ONES * u64::from(b'"'));
    let quote = q.wrapping_sub(ONES) & !q;
    let bs = w ^ (ONES * u64::from(b'\\'));
    let backslash = bs.wrapping_sub(ONES) & !bs;
    (control | quote | backslash) & HIGH != 0
}

/// Appends an integer.
pub fn write_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// Appends `v` in decimal with at least `width` digits, zero-padded.
pub fn write_u64_padded(out: &mut Vec<u8>, v: u64, width: usize) {
    let mut buf = itoa::Buffer::new();
    let s = buf.format(v);
    out.extend(std::iter::repeat_n(b'0', width.saturating_sub(s.len())));
    out.extend_from_slice(s.as_bytes());
}

/// Appends an unsigned integer.
pub fn write_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// Appends a double in the shortest form that round-trips; non-finite values,
/// which JSON cannot carry, become `null`.
pub fn write_f64(out: &mut Vec<u8>, v: f64) {
    if v.is_finite() {
        out.extend_from_slice(ryu::Buffer::new().format_finite(v).as_bytes());
    } else {
        out.extend_from_slice(b"null");
    }
}

/// Appends a float in the shortest form that round-trips as a FLOAT.
pub fn write_f32(out: &mut Vec<u8>, v: f32) {
    if v.is_finite() {
        out.extend_from_slice(ryu::Buffer::new().format_finite(v).as_bytes());
    } else {
        out.extend_from_slice(b"null");
    }
}

/// Appends `bytes` as a quoted standard base64 string (with padding).
pub fn write_base64(out: &mut Vec<u8>, bytes: &[u8]) {
    use base64::Engine as _;
    out.push(b'"');
    let start = out.len();
    let len = bytes.len().div_ceil(3) * 4;
    out.resize(start + len, 0);
    let written = base64::engine::general_purpose::STANDARD
        .encode_slice(bytes, &mut out[start..])
        .expect("buffer sized for the encoded length");
    debug_assert_eq!(written, len);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        f(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn escapes_like_serde_json() {
        for input in [
            "plain",
            "q\"uote",
            "back\\slash",
            "\u{1}\u{1f}\n\t\r\u{8}\u{c}",
            "żółw ✓ 😀",
            "",
        ] {
            assert_eq!(s(|o| write_str(o, input)), serde_json::to_string(input).unwrap());
        }
    }

    #[test]
    fn escapes_at_every_offset_of_a_word() {
        // The eight-byte fast path must not miss a byte that needs escaping
        // wherever it sits, nor touch the bytes around it.
        for special in [
            '"', '\\', '\u{0}', '\n', '\u{1f}', ' ', '!', '#', '[', ']', 'é', '\u{7f}',
        ] {
            for len in 0..24 {
                for at in 0..len {
                    let text: String = (0..len).map(|i| if i == at { special } else { 'a' }).collect();
                    assert_eq!(
                        s(|o| write_str(o, &text)),
                        serde_json::to_string(&text).unwrap(),
                        "{text:?}"
                    );
                }
            }
        }
        let all: String = (0u8..0x80).map(char::from).chain("żółw ✓ 😀".chars()).collect();
        let text = all.repeat(3);
        assert_eq!(s(|o| write_str(o, &text)), serde_json::to_string(&text).unwrap());
    }

    #[test]
    fn utf8_checked_in_the_same_pass() {
        for text in [
            "",
            "ascii only, long enough for words",
            "żółw ✓ 😀",
            "a\"b\\c\u{1}",
            "12345678é",
        ] {
            let mut out = b"x".to_vec();
            assert!(write_utf8(&mut out, text.as_bytes()));
            assert_eq!(out[1..], *serde_json::to_string(text).unwrap().as_bytes(), "{text:?}");
        }
        for bad in [
            &b"\xff"[..],
            b"abcdefgh\xc3",
            b"abcdefghijklmnop\"q\xe2\x82",
            b"\xc3\xa9\xc3",
        ] {
            let mut out = b"x".to_vec();
            assert!(!write_utf8(&mut out, bad), "{bad:?}");
            assert_eq!(out, b"x");
        }
    }

    #[test]
    fn numbers_round_trip() {
        assert_eq!(s(|o| write_f64(o, 1e300)), "1e300");
        assert_eq!(s(|o| write_f64(o, -0.5)), "-0.5");
        assert_eq!(s(|o| write_f32(o, 1.1)), "1.1");
        assert_eq!(s(|o| write_u64(o, u64::MAX)), "18446744073709551615");
        assert_eq!(s(|o| write_f64(o, f64::NAN)), "null");
    }

    #[test]
    fn base64_padded() {
        assert_eq!(s(|o| write_base64(o, b"")), "\"\"");
        assert_eq!(s(|o| write_base64(o, b"a")), "\"YQ==\"");
        assert_eq!(s(|o| write_base64(o, &[0, 0xff, 0x10, 7])), "\"AP8QBw==\"");
    }
}
