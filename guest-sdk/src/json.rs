//! JSON out of a handler: the row change JSON of DESIGN.md, rebuilt from the
//! encoding ([`Change::to_json`]), and [`Object`], for the small documents a
//! handler builds from the columns it reads.
//!
//! [`Change::to_json`] is byte for byte what `rowhook inspect` prints for the
//! same change: the same key order, string escaping, number formatting
//! (`ryu`, as the host uses) and base64.

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
pub(crate) fn write_value(out: &mut Vec<u8>, value: &Value<'_>) {
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
pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) {
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
pub(crate) fn write_base64(out: &mut Vec<u8>, b: &[u8]) {
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

/// A JSON object written field by field, straight into the bytes a handler
/// emits: no intermediate tree, one growing buffer.
///
/// ```
/// # fn f(change: &rowhook_guest::Change) -> rowhook_guest::Result<()> {
/// use rowhook_guest::json::Object;
/// let mut doc = Object::new();
/// doc.str("change", change.id())
///     .value("order", &change.value("id")?)
///     .value("amount", &change.value("amount")?);
/// rowhook_guest::emit("orders_queue", Some(change.id()), doc.finish())?;
/// # Ok(()) }
/// ```
///
/// Values are written as the row change JSON shows them ([`Object::value`]:
/// decimals and dates as strings, bytes as base64), with one difference
/// that makes every document fit a line sink (`stdout`, `file`, `fifo`,
/// which take no control characters): strings escape DEL and the C1
/// controls (U+0080 to U+009F) as `\u007f` … `\u009f`, besides `"`, `\\`
/// and the C0 controls. Field names are escaped alike. The builder does not
/// check that names are distinct.
#[derive(Debug, Clone)]
pub struct Object {
    buf: Vec<u8>,
}

impl Default for Object {
    fn default() -> Self {
        Object::new()
    }
}

impl Object {
    /// An empty object, with room for a small document.
    pub fn new() -> Object {
        Object::with_capacity(128)
    }

    /// An empty object with room for `bytes` of JSON.
    pub fn with_capacity(bytes: usize) -> Object {
        let mut buf = Vec::with_capacity(bytes.max(2));
        buf.push(b'{');
        Object { buf }
    }

    fn name(&mut self, name: &str) -> &mut Vec<u8> {
        if self.buf.len() > 1 {
            self.buf.push(b',');
        }
        write_line_str(&mut self.buf, name);
        self.buf.push(b':');
        &mut self.buf
    }

    /// Adds `"name":"value"`.
    pub fn str(&mut self, name: &str, value: &str) -> &mut Object {
        write_line_str(self.name(name), value);
        self
    }

    /// Adds a signed integer.
    pub fn int(&mut self, name: &str, value: i64) -> &mut Object {
        write_value(self.name(name), &Value::Int(value));
        self
    }

    /// Adds an unsigned integer.
    pub fn uint(&mut self, name: &str, value: u64) -> &mut Object {
        write_value(self.name(name), &Value::UInt(value));
        self
    }

    /// Adds a number, or `null` for NaN and infinities (JSON has neither).
    pub fn float(&mut self, name: &str, value: f64) -> &mut Object {
        write_value(self.name(name), &Value::Double(value));
        self
    }

    /// Adds `true` or `false`.
    pub fn bool(&mut self, name: &str, value: bool) -> &mut Object {
        self.name(name)
            .extend_from_slice(if value { b"true" } else { b"false" });
        self
    }

    /// Adds `null`.
    pub fn null(&mut self, name: &str) -> &mut Object {
        self.name(name).extend_from_slice(b"null");
        self
    }

    /// Adds a column's value as the row change JSON shows it (see the type's docs).
    pub fn value(&mut self, name: &str, value: &Value<'_>) -> &mut Object {
        let out = self.name(name);
        match *value {
            // Texts get the line-safe escaping; JSON columns are JSON text
            // already (MySQL's writer escapes controls) and go as they are.
            Value::Json(_) | Value::Bytes(_) | Value::Vector(_) => write_value(out, value),
            ref v => match v.as_text() {
                Some(text) => write_line_str(out, text),
                None => write_value(out, v),
            },
        }
        self
    }

    /// Adds `json` as the value, unchecked: it must be one JSON value
    /// (another [`Object::finish`], say, as UTF-8).
    pub fn raw(&mut self, name: &str, json: &str) -> &mut Object {
        self.name(name).extend_from_slice(json.as_bytes());
        self
    }

    /// The object's bytes, closed.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf.push(b'}');
        self.buf
    }
}

/// The bytes after which [`write_line_str`] must look closer: C0 controls,
/// `"`, `\`, DEL, and 0xC2 (the lead byte of U+0080 to U+009F).
const LINE_SPECIAL: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 0x20 {
        t[c] = true;
        c += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t[0x7f] = true;
    t[0xc2] = true;
    t
};

/// Appends `s` as a quoted JSON string that a line sink takes: as
/// [`write_str`], and DEL and U+0080 to U+009F as `\u` escapes too.
fn write_line_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let b = s.as_bytes();
    // Most strings need no escape at all: one pass to tell (a table look-up
    // a byte), then one copy.
    if !b.iter().any(|&c| LINE_SPECIAL[usize::from(c)]) {
        out.reserve(b.len() + 2);
        out.push(b'"');
        out.extend_from_slice(b);
        out.push(b'"');
        return;
    }
    out.push(b'"');
    let mut start = 0;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let (len, code) = match c {
            b'"' | b'\\' => (1, None),
            0..0x20 | 0x7f => (1, Some(c)),
            0xc2 if matches!(b.get(i + 1), Some(0x80..=0x9f)) => (2, Some(b[i + 1])),
            _ => {
                i += 1;
                continue;
            }
        };
        out.extend_from_slice(&b[start..i]);
        match (c, code) {
            (b'\x08', _) => out.extend_from_slice(b"\\b"),
            (b'\t', _) => out.extend_from_slice(b"\\t"),
            (b'\n', _) => out.extend_from_slice(b"\\n"),
            (0x0c, _) => out.extend_from_slice(b"\\f"),
            (b'\r', _) => out.extend_from_slice(b"\\r"),
            (_, Some(code)) => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(code >> 4)],
                HEX[usize::from(code & 0xf)],
            ]),
            (c, None) => out.extend_from_slice(&[b'\\', c]),
        }
        i += len;
        start = i;
    }
    out.extend_from_slice(&b[start..]);
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

    #[test]
    fn objects_fit_a_line() {
        let mut doc = Object::new();
        doc.str("a\"b", "x\ny\u{7f}\u{85}\u{a0}\u{9f}é\t\\")
            .int("i", -3)
            .uint("u", 7)
            .float("f", f64::INFINITY)
            .bool("t", true)
            .null("n")
            .value("d", &Value::Decimal("-1.50"))
            .value("b", &Value::Bytes(b"ab"))
            .value("j", &Value::Json("{\"k\":[1]}"))
            .raw("o", "[]");
        let text = String::from_utf8(doc.finish()).unwrap();
        assert_eq!(
            text,
            // U+00A0 is no control: it stays as it is.
            concat!(
                r#"{"a\"b":"x\ny\u007f\u0085"#,
                "\u{a0}",
                r#"\u009fé\t\\","i":-3,"u":7,"f":null,"t":true,"n":null,"d":"-1.50","b":"YWI=","j":{"k":[1]},"o":[]}"#
            )
        );
        assert!(!text.bytes().any(|c| c < 0x20 || c == 0x7f));
        assert_eq!(String::from_utf8(Object::new().finish()).unwrap(), "{}");
    }
}
