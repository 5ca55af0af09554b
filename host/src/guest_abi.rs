//! The row change encoding: how one [`RowChange`] travels to a handler.
//!
//! A handler's `on-change` export (WIT package `rowhook:handler`,
//! `guest-sdk/wit/handler.wit`) takes the change as one `list<u8>` in the
//! format below, and `rowhook-guest` reads it for Rust handlers. This module
//! writes it; the text here is the contract between the two.
//!
//! Why bytes and not a typed WIT record: lowering a record of a dozen columns
//! costs about three times what copying the same event as bytes does (the
//! canonical ABI allocates for every string), and most handlers read two or
//! three columns. So the format puts an index up front: reading it is
//! O(columns), and a reader decodes only the values it touches.
//!
//! # Format, version 1
//!
//! Integers are little-endian and unaligned. A *span* is `u32 offset`,
//! `u32 length`: bytes elsewhere in the same buffer, the offset counted from
//! the buffer's first byte. All text is UTF-8. A buffer holds one change.
//!
//! Header, 72 bytes:
//!
//! | offset | type | field |
//! |---|---|---|
//! | 0 | `[u8; 4]` | magic `RHC` and the version byte `1` |
//! | 4 | `u8` | op: 1 insert, 2 update, 3 delete |
//! | 5 | `u8` | flags: 1 before image present, 2 after image present, 4 gtid present, 8 column names come from the binlog (clear: `@1`, `@2`, … by position) |
//! | 6 | `u16` | `n`, the number of columns of the table |
//! | 8 | `u32` | ts: the rows event's header timestamp (seconds) |
//! | 12 | `u32` | index of the rows event in the transaction |
//! | 16 | `u32` | index of the row in the rows event |
//! | 20 | `u32` | length of the transaction part at the start of the id |
//! | 24 | `u64` | pos: offset of the rows event in its binlog file |
//! | 32 | span | id, `<txn>:<event>:<row>` as in the row change JSON |
//! | 40 | span | gtid (offset and length 0 when absent) |
//! | 48 | span | binlog file name |
//! | 56 | span | db |
//! | 64 | span | table |
//!
//! Then the column directory, `n` entries of 8 bytes in table order:
//! `u32` name offset, `u16` name length, `u8` MySQL type code (as in
//! TABLE_MAP), `u8` flags (1 primary key, 2 nullable).
//!
//! Then the before image if flag 1 is set, then the after image if flag 2 is
//! set: each `n` value entries of 9 bytes, in column order, a `u8` tag and
//! 8 bytes of payload. After that, data: names, text and bytes, which only
//! spans point at, in no set order.
//!
//! | tag | value | payload |
//! |---|---|---|
//! | 0 | absent: the column is not in this image (MINIMAL row image) | zero |
//! | 1 | SQL NULL | zero |
//! | 2 | signed integer (TINYINT…BIGINT) | `i64` |
//! | 3 | unsigned integer (UNSIGNED, YEAR; ENUM index or SET bits when labels are unknown) | `u64` |
//! | 4 | FLOAT, widened exactly | `f64` |
//! | 5 | DOUBLE | `f64` |
//! | 6 | DECIMAL: exact digits with the column's scale, `-10.55` | span of text |
//! | 7 | CHAR, VARCHAR, TEXT: decoded from the column's charset | span of text |
//! | 8 | BINARY (zero-padded to its length), VARBINARY, BLOB, GEOMETRY, text in a charset rowhook cannot decode | span of bytes |
//! | 9 | DATE, `YYYY-MM-DD` | span of text |
//! | 10 | DATETIME, `YYYY-MM-DD HH:MM:SS[.f…]` | span of text |
//! | 11 | TIMESTAMP, `YYYY-MM-DDTHH:MM:SS[.f…]Z` | span of text |
//! | 12 | TIME, `[-]HH:MM:SS[.f…]` | span of text |
//! | 13 | JSON, as JSON text | span of text |
//! | 14 | ENUM label (`""` for the invalid-value index 0) | span of text |
//! | 15 | SET labels in definition order joined with `,` | span of text |
//! | 16 | BIT | `u64` |
//! | 17 | VECTOR | span of little-endian `f32`s |
//!
//! Texts are exactly those of the row change JSON (DESIGN.md, "Row change
//! JSON") without the JSON quoting; numbers are the numbers it shows; bytes
//! are the bytes it base64-encodes. So the JSON of a change can be rebuilt
//! from its encoding alone (`rowhook_guest::Change::to_json`).
//!
//! A reader rejects a buffer whose magic or version it does not know, and a
//! span or tag that does not fit; a change to this format that an old reader
//! would misread takes a new version byte.

use crate::decode::RowChange;
use crate::decode::charset::{self, Charset};
use crate::decode::rows::Op;
use crate::decode::table_map::{Column, ColumnKind};
use crate::decode::value::{self, RenderError, Value};

/// The first four bytes of every encoded change: magic and version.
pub const MAGIC: [u8; 4] = *b"RHC\x01";
/// Length of the fixed header.
pub const HEADER_LEN: usize = 72;
/// Length of one column directory entry.
pub const COLUMN_ENTRY_LEN: usize = 8;
/// Length of one value entry.
pub const VALUE_ENTRY_LEN: usize = 9;

/// Header flag bits.
pub mod flags {
    /// The change has a before image (update, delete).
    pub const BEFORE: u8 = 1;
    /// The change has an after image (insert, update).
    pub const AFTER: u8 = 2;
    /// The transaction has a GTID.
    pub const GTID: u8 = 4;
    /// Column names come from the binlog, not `@N` placeholders.
    pub const NAMES: u8 = 8;
}

/// Column directory flag bits.
pub mod column_flags {
    /// The column is part of the primary key.
    pub const PRIMARY_KEY: u8 = 1;
    /// The column allows NULL.
    pub const NULLABLE: u8 = 2;
}

/// Value tags.
#[allow(missing_docs)]
pub mod tag {
    pub const ABSENT: u8 = 0;
    pub const NULL: u8 = 1;
    pub const INT: u8 = 2;
    pub const UINT: u8 = 3;
    pub const FLOAT: u8 = 4;
    pub const DOUBLE: u8 = 5;
    pub const DECIMAL: u8 = 6;
    pub const STRING: u8 = 7;
    pub const BYTES: u8 = 8;
    pub const DATE: u8 = 9;
    pub const DATETIME: u8 = 10;
    pub const TIMESTAMP: u8 = 11;
    pub const TIME: u8 = 12;
    pub const JSON: u8 = 13;
    pub const ENUM: u8 = 14;
    pub const SET: u8 = 15;
    pub const BIT: u8 = 16;
    pub const VECTOR: u8 = 17;
}

/// A table's column directory, laid out once when the table is planned:
/// the names go first in the data area, right after the value entries, so
/// the directory is the same bytes for every change with the same images.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ColumnDirectory {
    /// The column names, concatenated.
    names: Box<[u8]>,
    /// The directory entries for a change with one image (insert, delete)
    /// and with two (update).
    entries: [Box<[u8]>; 2],
}

impl ColumnDirectory {
    /// The directory of `columns`; `None` where a name does not fit.
    pub fn new(columns: &[Column]) -> Option<ColumnDirectory> {
        let n = columns.len();
        let names: Vec<u8> = columns.iter().flat_map(|c| c.name.bytes()).collect();
        let entries = [1, 2].map(|images| {
            let data_at = HEADER_LEN + n * COLUMN_ENTRY_LEN + images * n * VALUE_ENTRY_LEN;
            let mut at = data_at;
            let mut e = Vec::with_capacity(n * COLUMN_ENTRY_LEN);
            for col in columns {
                e.extend_from_slice(&u32::try_from(at).ok()?.to_le_bytes());
                e.extend_from_slice(&u16::try_from(col.name.len()).ok()?.to_le_bytes());
                e.push(col.type_code);
                e.push(
                    (u8::from(col.primary_key) * column_flags::PRIMARY_KEY)
                        | (u8::from(col.nullable) * column_flags::NULLABLE),
                );
                at += col.name.len();
            }
            Some(e.into_boxed_slice())
        });
        let [Some(one), Some(two)] = entries else { return None };
        Some(ColumnDirectory {
            names: names.into_boxed_slice(),
            entries: [one, two],
        })
    }
}

/// Writes `change` into `out` in the row change encoding, replacing what
/// `out` held. Reusing `out` across changes, nothing is allocated per row
/// except for the rare values that allocate in the JSON path too (charsets
/// other than UTF-8, latin1 and ASCII; MariaDB COMPRESSED columns).
///
/// Fails where [`RowChange::write_json`] fails (a value whose bytes
/// contradict its column), or for a change over 4 GiB encoded.
pub fn encode_change(change: &RowChange<'_>, out: &mut Vec<u8>) -> Result<(), RenderError> {
    out.clear();
    let columns = &change.table.columns;
    let n = columns.len();
    let ncols = u16::try_from(n).map_err(|_| RenderError(format!("{n} columns do not fit the row change encoding")))?;
    let mut flag_bits = 0;
    if change.before.is_some() {
        flag_bits |= flags::BEFORE;
    }
    if change.after.is_some() {
        flag_bits |= flags::AFTER;
    }
    if change.gtid.is_some() {
        flag_bits |= flags::GTID;
    }
    if change.table.has_names {
        flag_bits |= flags::NAMES;
    }
    let directory = HEADER_LEN;
    let before_at = directory + n * COLUMN_ENTRY_LEN;
    let after_at = before_at
        + if change.before.is_some() {
            n * VALUE_ENTRY_LEN
        } else {
            0
        };
    let data_at = after_at + if change.after.is_some() { n * VALUE_ENTRY_LEN } else { 0 };
    out.resize(data_at, 0);

    out[0..4].copy_from_slice(&MAGIC);
    out[4] = match change.op {
        Op::Insert => 1,
        Op::Update => 2,
        Op::Delete => 3,
    };
    out[5] = flag_bits;
    put(out, 6, &ncols.to_le_bytes());
    put(out, 8, &change.ts.to_le_bytes());
    put(out, 12, &change.event_index.to_le_bytes());
    put(out, 16, &change.row_index.to_le_bytes());
    put(out, 20, &len32(change.txn.len())?.to_le_bytes());
    put(out, 24, &change.pos.to_le_bytes());

    let images = usize::from(change.before.is_some()) + usize::from(change.after.is_some());
    match &change.table.guest_directory {
        Some(dir) if images > 0 => {
            out[directory..before_at].copy_from_slice(&dir.entries[images - 1]);
            out.extend_from_slice(&dir.names);
        }
        _ => write_directory(out, columns)?,
    }
    let id = out.len();
    out.extend_from_slice(change.txn.as_bytes());
    out.push(b':');
    out.extend_from_slice(itoa::Buffer::new().format(change.event_index).as_bytes());
    out.push(b':');
    out.extend_from_slice(itoa::Buffer::new().format(change.row_index).as_bytes());
    let id_span = span(id, out.len() - id)?;
    put(out, 32, &id_span);
    let gtid_span = match change.gtid {
        None => [0; 8],
        // Where the transaction has a GTID, the id's transaction part is it.
        Some(g) if g == change.txn => span(id, g.len())?,
        Some(g) => push_span(out, g.as_bytes())?,
    };
    put(out, 40, &gtid_span);
    let s = push_span(out, change.file.as_bytes())?;
    put(out, 48, &s);
    let s = push_span(out, change.table.db.as_bytes())?;
    put(out, 56, &s);
    let s = push_span(out, change.table.table.as_bytes())?;
    put(out, 64, &s);

    if let Some(before) = change.before {
        write_image(out, before_at, columns, before, None)?;
    }
    if let Some(after) = change.after {
        write_image(out, after_at, columns, after, change.before)?;
    }
    len32(out.len())?;
    Ok(())
}

/// Writes the column directory and the names (where the table has no
/// precomputed [`ColumnDirectory`]).
fn write_directory(out: &mut Vec<u8>, columns: &[Column]) -> Result<(), RenderError> {
    let directory = HEADER_LEN;
    for (i, col) in columns.iter().enumerate() {
        let name_at = len32(out.len())?;
        out.extend_from_slice(col.name.as_bytes());
        let name_len = u16::try_from(col.name.len())
            .map_err(|_| RenderError(format!("column name of {} bytes", col.name.len())))?;
        let mut entry = [0u8; COLUMN_ENTRY_LEN];
        entry[0..4].copy_from_slice(&name_at.to_le_bytes());
        entry[4..6].copy_from_slice(&name_len.to_le_bytes());
        entry[6] = col.type_code;
        entry[7] =
            (u8::from(col.primary_key) * column_flags::PRIMARY_KEY) | (u8::from(col.nullable) * column_flags::NULLABLE);
        put(out, directory + i * COLUMN_ENTRY_LEN, &entry);
    }
    Ok(())
}

/// Writes the value entries of one image at `at`, and their data at the end.
fn write_image(
    out: &mut Vec<u8>,
    at: usize,
    columns: &[Column],
    values: &[Value<'_>],
    before: Option<&[Value<'_>]>,
) -> Result<(), RenderError> {
    for (i, (col, v)) in columns.iter().zip(values).enumerate() {
        let (tag, payload) = encode_value(out, col, v, before.and_then(|b| b.get(i)))
            .map_err(|e| RenderError(format!("column `{}`: {}", col.name, e.0)))?;
        let entry = at + i * VALUE_ENTRY_LEN;
        out[entry] = tag;
        put(out, entry + 1, &payload);
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
) -> Result<(u8, [u8; 8]), RenderError> {
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
) -> Result<(u8, [u8; 8]), RenderError> {
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
fn json_string(out: &mut Vec<u8>, col: &Column, v: &Value<'_>) -> Result<[u8; 8], RenderError> {
    let at = out.len();
    value::write_json(out, col, v, None)?;
    if matches!(
        v,
        Value::Decimal(_) | Value::Date(_) | Value::DateTime(_) | Value::Timestamp(..) | Value::Time(_)
    ) {
        // Digits, signs and separators only: nothing escaped, no scan needed.
        return span(at + 1, out.len() - at - 2);
    }
    unquote(out, at)
}

/// Turns the JSON string written at `out[at..]` into its text: the span
/// inside the quotes where nothing is escaped (the quotes stay behind as two
/// unused bytes), else the text unescaped in place.
fn unquote(out: &mut Vec<u8>, at: usize) -> Result<[u8; 8], RenderError> {
    let end = out.len();
    if end < at + 2 || out[at] != b'"' || out[end - 1] != b'"' {
        return Err(RenderError("expected a JSON string".into()));
    }
    let body = at + 1..end - 1;
    if !out[body.clone()].contains(&b'\\') {
        return span(body.start, body.len());
    }
    let len = unescape_in_place(out, body.start, body.end, at)?;
    out.truncate(at + len);
    span(at, len)
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

fn put(out: &mut [u8], at: usize, bytes: &[u8]) {
    out[at..at + bytes.len()].copy_from_slice(bytes);
}

fn len32(n: usize) -> Result<u32, RenderError> {
    u32::try_from(n).map_err(|_| RenderError("row change over 4 GiB encoded".into()))
}

fn span(at: usize, len: usize) -> Result<[u8; 8], RenderError> {
    let mut s = [0u8; 8];
    s[0..4].copy_from_slice(&len32(at)?.to_le_bytes());
    s[4..8].copy_from_slice(&len32(len)?.to_le_bytes());
    Ok(s)
}

fn push_span(out: &mut Vec<u8>, bytes: &[u8]) -> Result<[u8; 8], RenderError> {
    let at = out.len();
    out.extend_from_slice(bytes);
    span(at, bytes.len())
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
