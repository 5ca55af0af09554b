//! The row change JSON of DESIGN.md, rebuilt from the encoding.
//!
//! The output is byte for byte what `rowhook inspect` prints for the same
//! change: the same key order, string escaping, number formatting (`ryu`,
//! as the host uses) and base64.

use crate::change::{Change, Row, Value};
use crate::error::Result;

impl Change<'_> {
    /// The change as one line of row change JSON (no newline), as
    /// `rowhook inspect` prints it and sinks receive it by default.
    ///
    /// Costs a pass over every column: a handler that reads a few columns
    /// does better with [`Change::get`].
    pub fn to_json(&self) -> Result<String> {
        let mut out = Vec::with_capacity(self.as_bytes().len() * 2);
        self.write_json(&mut out)?;
        // Only UTF-8 text and ASCII are written.
        Ok(String::from_utf8(out).expect("JSON text is UTF-8"))
    }

    /// Appends the change's row change JSON to `out` (no newline).
    pub fn write_json(&self, out: &mut Vec<u8>) -> Result<()> {
        out.extend_from_slice(b"{\"id\":");
        write_str(out, self.id());
        out.extend_from_slice(b",\"op\":\"");
        out.extend_from_slice(self.op().as_str().as_bytes());
        out.extend_from_slice(b"\",\"db\":");
        write_str(out, self.db());
        out.extend_from_slice(b",\"table\":");
        write_str(out, self.table());
        out.extend_from_slice(b",\"ts\":");
        out.extend_from_slice(itoa(u64::from(self.ts())).as_bytes());
        out.extend_from_slice(b",\"gtid\":");
        match self.gtid() {
            Some(g) => write_str(out, g),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"file\":");
        write_str(out, self.file());
        out.extend_from_slice(b",\"pos\":");
        out.extend_from_slice(itoa(self.pos()).as_bytes());
        out.extend_from_slice(b",\"before\":");
        write_image(out, self.before_image())?;
        out.extend_from_slice(b",\"after\":");
        write_image(out, self.after_image())?;
        out.push(b'}');
        Ok(())
    }
}

fn write_image(out: &mut Vec<u8>, row: Option<Row<'_>>) -> Result<()> {
    let Some(row) = row else {
        out.extend_from_slice(b"null");
        return Ok(());
    };
    out.push(b'{');
    for (i, item) in row.iter().enumerate() {
        let (col, value) = item?;
        if i > 0 {
            out.push(b',');
        }
        write_str(out, col.name);
        out.push(b':');
        write_value(out, &value);
    }
    out.push(b'}');
    Ok(())
}

/// Appends `value` as the row change JSON shows it.
pub fn write_value(out: &mut Vec<u8>, value: &Value<'_>) {
    match *value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Int(i) => {
            if i < 0 {
                out.push(b'-');
            }
            out.extend_from_slice(itoa(i.unsigned_abs()).as_bytes());
        }
        Value::UInt(u) | Value::Bit(u) => out.extend_from_slice(itoa(u).as_bytes()),
        Value::Float(f) => {
            if f.is_finite() {
                out.extend_from_slice(ryu::Buffer::new().format_finite(f).as_bytes());
            } else {
                out.extend_from_slice(b"null");
            }
        }
        Value::Double(d) => {
            if d.is_finite() {
                out.extend_from_slice(ryu::Buffer::new().format_finite(d).as_bytes());
            } else {
                out.extend_from_slice(b"null");
            }
        }
        Value::Json(s) => out.extend_from_slice(s.as_bytes()),
        Value::Bytes(b) => write_base64(out, b),
        Value::Vector(_) => {
            out.push(b'[');
            for (i, f) in value.vector().into_iter().flatten().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, &Value::Float(f));
            }
            out.push(b']');
        }
        ref v => write_str(out, v.as_text().unwrap_or_default()),
    }
}

/// Decimal digits of `v`.
fn itoa(mut v: u64) -> ItoaBuf {
    let mut buf = ItoaBuf {
        digits: [0; 20],
        start: 20,
    };
    loop {
        buf.start -= 1;
        buf.digits[buf.start] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            return buf;
        }
    }
}

struct ItoaBuf {
    digits: [u8; 20],
    start: usize,
}

impl ItoaBuf {
    fn as_bytes(&self) -> &[u8] {
        &self.digits[self.start..]
    }
}

/// Appends `s` as a quoted JSON string, escaped as the host escapes:
/// `"`, `\` and control characters only, `\b \t \n \f \r` short, the rest as
/// `\u00xx`.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let b = s.as_bytes();
    let mut start = 0;
    for (i, &c) in b.iter().enumerate() {
        let short = match c {
            b'"' => b'"',
            b'\\' => b'\\',
            0x08 => b'b',
            0x09 => b't',
            0x0a => b'n',
            0x0c => b'f',
            0x0d => b'r',
            0..0x20 => b'u',
            _ => continue,
        };
        out.extend_from_slice(&b[start..i]);
        start = i + 1;
        if short == b'u' {
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(c >> 4)],
                HEX[usize::from(c & 0xf)],
            ]);
        } else {
            out.extend_from_slice(&[b'\\', short]);
        }
    }
    out.extend_from_slice(&b[start..]);
    out.push(b'"');
}

/// Appends `b` as a quoted standard base64 string with padding.
pub fn write_base64(out: &mut Vec<u8>, b: &[u8]) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    out.push(b'"');
    let mut chunks = b.chunks_exact(3);
    for c in &mut chunks {
        let n = u32::from(c[0]) << 16 | u32::from(c[1]) << 8 | u32::from(c[2]);
        out.extend_from_slice(&[
            ALPHABET[(n >> 18) as usize & 63],
            ALPHABET[(n >> 12) as usize & 63],
            ALPHABET[(n >> 6) as usize & 63],
            ALPHABET[n as usize & 63],
        ]);
    }
    match *chunks.remainder() {
        [a] => {
            let n = u32::from(a) << 16;
            out.extend_from_slice(&[
                ALPHABET[(n >> 18) as usize & 63],
                ALPHABET[(n >> 12) as usize & 63],
                b'=',
                b'=',
            ]);
        }
        [a, b] => {
            let n = u32::from(a) << 16 | u32::from(b) << 8;
            out.extend_from_slice(&[
                ALPHABET[(n >> 18) as usize & 63],
                ALPHABET[(n >> 12) as usize & 63],
                ALPHABET[(n >> 6) as usize & 63],
                b'=',
            ]);
        }
        _ => {}
    }
    out.push(b'"');
}

#[cfg(feature = "json")]
mod serde {
    use super::*;
    use crate::change::FromValue;

    impl Change<'_> {
        /// The change's row change JSON as a `serde_json::Value` (feature `json`).
        pub fn to_json_value(&self) -> Result<serde_json::Value> {
            let text = self.to_json()?;
            Ok(serde_json::from_str(&text)?)
        }
    }

    impl FromValue<'_> for serde_json::Value {
        const EXPECTED: &'static str = "serde_json::Value";

        fn from_value(value: Value<'_>) -> Option<Self> {
            match value {
                Value::Json(s) => serde_json::from_str(s).ok(),
                Value::Null => Some(serde_json::Value::Null),
                Value::Int(i) => Some(i.into()),
                Value::UInt(u) | Value::Bit(u) => Some(u.into()),
                Value::Float(f) => Some(serde_json::Number::from_f64(f64::from(f)).map_or(Self::Null, Self::Number)),
                Value::Double(d) => Some(serde_json::Number::from_f64(d).map_or(Self::Null, Self::Number)),
                v => {
                    let mut out = Vec::new();
                    write_value(&mut out, &v);
                    serde_json::from_slice(&out).ok()
                }
            }
        }
    }
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
    fn base64_like_the_standard() {
        assert_eq!(s(|o| write_base64(o, b"")), "\"\"");
        assert_eq!(s(|o| write_base64(o, b"a")), "\"YQ==\"");
        assert_eq!(s(|o| write_base64(o, b"ab")), "\"YWI=\"");
        assert_eq!(s(|o| write_base64(o, &[0, 0xff, 0x10, 7])), "\"AP8QBw==\"");
        assert_eq!(s(|o| write_base64(o, &[0xfb, 0xff, 0xbf])), "\"+/+/\"");
    }

    #[test]
    fn strings_escaped_like_the_host() {
        assert_eq!(
            s(|o| write_str(o, "a\"b\\c\u{1}\n\u{1f}é")),
            r#""a\"b\\c\u0001\n\u001fé""#
        );
    }

    #[test]
    fn numbers() {
        assert_eq!(s(|o| write_value(o, &Value::Int(i64::MIN))), "-9223372036854775808");
        assert_eq!(s(|o| write_value(o, &Value::UInt(u64::MAX))), "18446744073709551615");
        assert_eq!(s(|o| write_value(o, &Value::Int(0))), "0");
        assert_eq!(s(|o| write_value(o, &Value::Float(1.1))), "1.1");
        assert_eq!(s(|o| write_value(o, &Value::Double(1e-5))), "0.00001");
        assert_eq!(s(|o| write_value(o, &Value::Double(1e-7))), "1e-7");
        assert_eq!(s(|o| write_value(o, &Value::Double(f64::NAN))), "null");
    }
}
