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
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => {
                out.extend_from_slice(&bytes[start..i]);
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(b >> 4) as usize]);
                out.push(HEX[(b & 0xf) as usize]);
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escape);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

/// Appends an integer.
pub fn write_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
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
