//! The row change encoding: how one [`RowChange`] travels to a handler.
//!
//! A handler's `on-change` export (WIT package `rowhook:handler`,
//! `guest-sdk/wit/handler.wit`) takes the change as one `list<u8>` in the
//! row change encoding. The format is specified in
//! `guest-sdk/abi/SPEC.md` and implemented once, in the `rowhook-abi` crate:
//! its writer lays out the header, the column directory and the value
//! entries; its reader is what `rowhook-guest` gives Rust handlers. This
//! module is the host's side: it turns decoded values into the format's
//! tags and texts, which are exactly those of the row change JSON (the same
//! writers make both), and keeps each table's column directory.
//!
//! Why bytes and not a typed WIT record: lowering a record of a dozen
//! columns costs about three times what copying the same event as bytes
//! does (the canonical ABI allocates for every string), and most handlers
//! read two or three columns. So the format puts an index up front: reading
//! it is O(columns), and a reader decodes only the values it touches.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use rowhook_abi::write::{ChangeWriter, Header, Span, WriteError, push_span, span};
use rowhook_abi::{Image, tag};

pub use rowhook_abi::write::ColumnDirectory;

use crate::decode::RowChange;
use crate::decode::charset::{self, Charset};
use crate::decode::table_map::{Column, ColumnKind, TableMap};
use crate::decode::value::{self, RenderError, Value};

/// The column directory of `table`; an error where a name does not fit.
pub fn column_directory(table: &TableMap) -> Result<ColumnDirectory, RenderError> {
    ColumnDirectory::new(table.columns.iter().map(|c| rowhook_abi::Column {
        name: &c.name,
        type_code: c.type_code,
        primary_key: c.primary_key,
        nullable: c.nullable,
    }))
    .map_err(render)
}

/// The column directories of the tables whose changes were encoded, laid
/// out once per table map rather than per row.
///
/// Keyed by table id: a new TABLE_MAP for an id (announced to a
/// [`crate::decode::ChangeVisitor`] by `table_map`) must [`forget`] the old
/// layout, since the same id can name other columns after a DDL or a
/// server restart.
///
/// [`forget`]: DirectoryCache::forget
#[derive(Debug, Default)]
pub struct DirectoryCache {
    tables: HashMap<u64, ColumnDirectory, BuildHasherDefault<TableIdHasher>>,
}

/// Hashes a table id with one multiply: this lookup runs for every row
/// change a handler gets, where SipHash would cost more than the rest of
/// laying out the header. Table ids are server-assigned counters, not
/// attacker-chosen keys.
#[derive(Debug, Default)]
struct TableIdHasher(u64);

impl Hasher for TableIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(self.0.rotate_left(8) ^ u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

impl DirectoryCache {
    /// Drops the directory of table id `table_id`: a new table map came.
    pub fn forget(&mut self, table_id: u64) {
        self.tables.remove(&table_id);
    }

    /// The directory of `table`, laid out on its first change.
    pub fn get(&mut self, table: &TableMap) -> Result<&ColumnDirectory, RenderError> {
        use std::collections::hash_map::Entry;
        match self.tables.entry(table.table_id) {
            Entry::Occupied(e) => Ok(e.into_mut()),
            Entry::Vacant(e) => Ok(e.insert(column_directory(table)?)),
        }
    }

    /// Writes `change` into `out` as [`encode_change`] does, with its table's
    /// directory from this cache.
    pub fn encode(&mut self, change: &RowChange<'_>, out: &mut Vec<u8>) -> Result<(), RenderError> {
        encode_change(change, self.get(change.table)?, out)
    }
}

impl From<WriteError> for RenderError {
    fn from(e: WriteError) -> Self {
        RenderError(e.to_string())
    }
}

fn render(e: WriteError) -> RenderError {
    e.into()
}

/// Writes `change` into `out` in the row change encoding, replacing what
/// `out` held; `directory` is its table's [`ColumnDirectory`]. Reusing
/// `out` across changes, nothing is allocated per row except for the rare
/// values that allocate in the JSON path too (charsets other than UTF-8,
/// latin1 and ASCII; MariaDB COMPRESSED columns).
///
/// Fails where [`RowChange::write_json`] fails (a value whose bytes
/// contradict its column), or for a change over 4 GiB encoded.
pub fn encode_change(
    change: &RowChange<'_>,
    directory: &ColumnDirectory,
    out: &mut Vec<u8>,
) -> Result<(), RenderError> {
    let columns = &change.table.columns;
    if directory.len() != columns.len() {
        return Err(render(WriteError::Columns {
            directory: directory.len(),
            change: columns.len(),
        }));
    }
    let header = Header {
        op: change.op,
        before: change.before.is_some(),
        after: change.after.is_some(),
        has_names: change.table.has_names,
        ts: change.ts,
        event_index: change.event_index,
        row_index: change.row_index,
        txn: change.txn,
        gtid: change.gtid,
        file: change.file,
        pos: change.pos,
        db: &change.table.db,
        table: &change.table.table,
    };
    let mut w = ChangeWriter::new(out, &header, directory).map_err(render)?;
    if let Some(before) = change.before {
        write_image(&mut w, Image::Before, columns, before, None)?;
    }
    if let Some(after) = change.after {
        write_image(&mut w, Image::After, columns, after, change.before)?;
    }
    w.finish().map_err(render)
}

/// Writes the value entries of one image, and their data at the end.
fn write_image(
    w: &mut ChangeWriter<'_>,
    image: Image,
    columns: &[Column],
    values: &[Value<'_>],
    before: Option<&[Value<'_>]>,
) -> Result<(), RenderError> {
    for (i, (col, v)) in columns.iter().zip(values).enumerate() {
        let (tag, payload) = encode_value(w.data(), col, v, before.and_then(|b| b.get(i)))
            .map_err(|e| RenderError(format!("column `{}`: {}", col.name, e.0)))?;
        w.entry(image, i, tag, payload);
    }
    Ok(())
}

/// The tag and payload of `v`, a value of `col`; variable-length data is
/// appended to `out` and the payload is its span.
fn encode_value(
    out: &mut Vec<u8>,
    col: &Column,
    v: &Value<'_>,
    before: Option<&Value<'_>>,
) -> Result<(u8, Span), RenderError> {
    Ok(match *v {
        Value::Absent => (tag::ABSENT, [0; 8]),
        Value::Null => (tag::NULL, [0; 8]),
        Value::Int(i) => (tag::INT, i.to_le_bytes()),
        Value::UInt(u) => (tag::UINT, u.to_le_bytes()),
        Value::Bit(u) => (tag::BIT, u.to_le_bytes()),
        Value::Float(f) => (tag::FLOAT, f64::from(f).to_le_bytes()),
        Value::Double(d) => (tag::DOUBLE, d.to_le_bytes()),
        // Text the JSON path writes as a string: the same writer, unquoted.
        Value::Decimal(_) => (tag::DECIMAL, json_string(out, col, v)?),
        Value::Date(_) => (tag::DATE, json_string(out, col, v)?),
        Value::DateTime(_) => (tag::DATETIME, json_string(out, col, v)?),
        Value::Timestamp(..) => (tag::TIMESTAMP, json_string(out, col, v)?),
        Value::Time(_) => (tag::TIME, json_string(out, col, v)?),
        Value::Enum(i) => {
            if i == 0 || col.labels.get(usize::from(i) - 1).is_some() {
                (tag::ENUM, json_string(out, col, v)?)
            } else {
                // Labels unknown (no FULL metadata) or out of range: the JSON
                // path writes the index.
                (tag::UINT, u64::from(i).to_le_bytes())
            }
        }
        Value::Set(bits) => {
            if col.labels.is_empty() && bits != 0 {
                (tag::UINT, bits.to_le_bytes())
            } else {
                (tag::SET, json_string(out, col, v)?)
            }
        }
        Value::Json(_) | Value::JsonDiff(_) => {
            let at = out.len();
            value::write_json(out, col, v, before)?;
            (tag::JSON, span(at, out.len() - at)?)
        }
        Value::Bytes(b) => match col.kind {
            ColumnKind::String { charset, pad_to, .. } => text_or_bytes(out, b, charset, pad_to)?,
            ColumnKind::Vector { .. } => {
                if !b.len().is_multiple_of(4) {
                    return Err(RenderError(format!(
                        "VECTOR of {} bytes is not a whole number of floats",
                        b.len()
                    )));
                }
                (tag::VECTOR, push_span(out, b)?)
            }
            _ => (tag::BYTES, push_span(out, b)?),
        },
        Value::Compressed(b) => {
            let ColumnKind::Compressed { charset, .. } = col.kind else {
                return Err(RenderError("compressed value in a plain column".into()));
            };
            let plain = value::decompress_column(b).map_err(RenderError)?;
            text_or_bytes(out, &plain, charset, None)?
        }
    })
}

/// A CHAR/VARCHAR/TEXT/BLOB value: text decoded from `charset`, or bytes
/// (BINARY(n) zero-padded to n, as the JSON path pads it).
fn text_or_bytes(
    out: &mut Vec<u8>,
    b: &[u8],
    charset: Charset,
    pad_to: Option<u16>,
) -> Result<(u8, Span), RenderError> {
    match charset {
        Charset::Binary | Charset::Unsupported(_) => {
            let at = out.len();
            out.extend_from_slice(b);
            if let Some(n) = pad_to {
                // The JSON path pads into a 256-byte buffer; BINARY(n) has n <= 255.
                let n = usize::from(n).min(256);
                if b.len() < n {
                    out.resize(at + n, 0);
                }
            }
            Ok((tag::BYTES, span(at, out.len() - at)?))
        }
        // Most text: valid UTF-8 or ASCII, the same bytes either way.
        // `is_ascii` first: much faster than UTF-8 validation on the short,
        // mostly ASCII values of typical tables.
        Charset::Utf8 if b.is_ascii() || std::str::from_utf8(b).is_ok() => Ok((tag::STRING, push_span(out, b)?)),
        Charset::Latin1 | Charset::Ascii if b.is_ascii() => Ok((tag::STRING, push_span(out, b)?)),
        cs => {
            // The JSON path's decoder (lossy where the bytes are invalid),
            // then the quoting undone.
            let at = out.len();
            charset::write_json_text(out, b, cs);
            Ok((tag::STRING, unquote(out, at)?))
        }
    }
}

/// Writes `v` with [`value::write_json`], which quotes it, and returns the
/// span of the text inside the quotes.
fn json_string(out: &mut Vec<u8>, col: &Column, v: &Value<'_>) -> Result<Span, RenderError> {
    let at = out.len();
    value::write_json(out, col, v, None)?;
    if matches!(
        v,
        Value::Decimal(_) | Value::Date(_) | Value::DateTime(_) | Value::Timestamp(..) | Value::Time(_)
    ) {
        // Digits, signs and separators only: nothing escaped, no scan needed.
        return Ok(span(at + 1, out.len() - at - 2)?);
    }
    unquote(out, at)
}

/// Turns the JSON string written at `out[at..]` into its text: the span
/// inside the quotes where nothing is escaped (the quotes stay behind as two
/// unused bytes), else the text unescaped in place.
fn unquote(out: &mut Vec<u8>, at: usize) -> Result<Span, RenderError> {
    let end = out.len();
    if end < at + 2 || out[at] != b'"' || out[end - 1] != b'"' {
        return Err(RenderError("expected a JSON string".into()));
    }
    let body = at + 1..end - 1;
    if !out[body.clone()].contains(&b'\\') {
        return Ok(span(body.start, body.len())?);
    }
    let len = unescape_in_place(out, body.start, body.end, at)?;
    out.truncate(at + len);
    Ok(span(at, len)?)
}

/// Unescapes the JSON string body `out[from..to]` into `out[dst..]`
/// (`dst <= from`: unescaped text is never longer) and returns its length.
fn unescape_in_place(out: &mut [u8], from: usize, to: usize, dst: usize) -> Result<usize, RenderError> {
    let bad = || RenderError("invalid escape in a JSON string".into());
    let (mut r, mut w) = (from, dst);
    while r < to {
        let b = out[r];
        if b != b'\\' {
            out[w] = b;
            w += 1;
            r += 1;
            continue;
        }
        let e = *out.get(r + 1).filter(|_| r + 1 < to).ok_or_else(bad)?;
        r += 2;
        let c = match e {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b't' => '\t',
            b'n' => '\n',
            b'f' => '\u{c}',
            b'r' => '\r',
            b'u' => {
                let hi = hex4(out, r, to).ok_or_else(bad)?;
                r += 4;
                if (0xD800..0xDC00).contains(&hi) && out.get(r..r + 2) == Some(b"\\u") && r + 6 <= to {
                    let lo = hex4(out, r + 2, to).ok_or_else(bad)?;
                    if (0xDC00..0xE000).contains(&lo) {
                        r += 6;
                        let c = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                        char::from_u32(c).ok_or_else(bad)?
                    } else {
                        '\u{FFFD}'
                    }
                } else {
                    char::from_u32(hi).unwrap_or('\u{FFFD}')
                }
            }
            _ => return Err(bad()),
        };
        let mut utf8 = [0u8; 4];
        let s = c.encode_utf8(&mut utf8).as_bytes();
        out[w..w + s.len()].copy_from_slice(s);
        w += s.len();
    }
    Ok(w - dst)
}

fn hex4(b: &[u8], at: usize, to: usize) -> Option<u32> {
    if at + 4 > to {
        return None;
    }
    let s = std::str::from_utf8(b.get(at..at + 4)?).ok()?;
    u32::from_str_radix(s, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unescaped(json: &str) -> String {
        let mut out = b"xx".to_vec();
        out.extend_from_slice(json.as_bytes());
        let s = unquote(&mut out, 2).unwrap();
        let at = u32::from_le_bytes(s[0..4].try_into().unwrap()) as usize;
        let len = u32::from_le_bytes(s[4..8].try_into().unwrap()) as usize;
        String::from_utf8(out[at..at + len].to_vec()).unwrap()
    }

    #[test]
    fn unquotes_every_escape() {
        for text in [
            "",
            "plain",
            "q\"uote",
            "back\\slash",
            "\u{1}\u{1f}\n\t\r\u{8}\u{c}",
            "żółw ✓ 😀 \\\"x",
        ] {
            let json = serde_json::to_string(text).unwrap();
            assert_eq!(unescaped(&json), text, "{json}");
        }
        assert_eq!(unescaped(r#""\ud83d\ude00\u00e9\/""#), "😀é/");
        assert_eq!(unescaped(r#""\ud83d""#), "\u{FFFD}");
    }

    #[test]
    fn rejects_broken_strings() {
        for json in [r#""\"#, r#""\x""#, r#""\u12""#, "\"", "x"] {
            let mut out = json.as_bytes().to_vec();
            assert!(unquote(&mut out, 0).is_err(), "{json}");
        }
    }
}
