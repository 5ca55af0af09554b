//! Column values: decoded from row images without copying, written as the
//! JSON the contract fixes (DESIGN.md, "Row change JSON").

use super::charset::{self, Charset};
use super::cursor::{Cursor, Short, be_uint, le_uint};
use super::table_map::{Column, ColumnKind};
use super::temporal::{self, DateTime, Time};
use crate::json_text;

/// One column's value in a row image. Borrowed from the event body; nothing
/// here owns heap memory, so a row decodes without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Value<'a> {
    /// The column is not in this image (MINIMAL row image).
    #[default]
    Absent,
    /// SQL NULL.
    Null,
    /// Signed integer.
    Int(i64),
    /// Unsigned integer.
    UInt(u64),
    /// FLOAT.
    Float(f32),
    /// DOUBLE.
    Double(f64),
    /// DECIMAL, still in binary form; precision and scale are the column's.
    Decimal(&'a [u8]),
    /// DATE.
    Date(DateTime),
    /// DATETIME.
    DateTime(DateTime),
    /// TIMESTAMP: seconds since the epoch and microseconds.
    Timestamp(u32, u32),
    /// TIME.
    Time(Time),
    /// Text in the column's charset, or bytes for binary columns.
    Bytes(&'a [u8]),
    /// ENUM index (1-based; 0 is the invalid-value index).
    Enum(u16),
    /// SET bits.
    Set(u64),
    /// BIT value.
    Bit(u64),
    /// MySQL binary JSON.
    Json(&'a [u8]),
    /// A partial JSON update (diff against the before image).
    JsonDiff(&'a [u8]),
    /// MariaDB COMPRESSED column: header byte and data, still compressed.
    Compressed(&'a [u8]),
}

/// Reads one non-NULL value of `kind` from `c`.
#[inline]
pub fn read<'a>(c: &mut Cursor<'a>, kind: &ColumnKind) -> Result<Value<'a>, Short> {
    Ok(match *kind {
        ColumnKind::Int { bytes, unsigned } => {
            let raw = le_uint(c.take(usize::from(bytes))?);
            if unsigned {
                Value::UInt(raw)
            } else {
                let shift = 64 - 8 * u32::from(bytes);
                Value::Int(((raw << shift) as i64) >> shift)
            }
        }
        ColumnKind::Year => {
            let y = c.u8()?;
            Value::UInt(if y == 0 { 0 } else { 1900 + u64::from(y) })
        }
        ColumnKind::Float => Value::Float(f32::from_le_bytes(c.array()?)),
        ColumnKind::Double => Value::Double(f64::from_le_bytes(c.array()?)),
        ColumnKind::Decimal { size, .. } => Value::Decimal(c.take(size)?),
        ColumnKind::Date => Value::Date(temporal::date(c.array()?)),
        ColumnKind::DateTimeOld => Value::DateTime(temporal::datetime_old(c.u64()?)),
        ColumnKind::DateTime2 { fsp } => {
            let int = c.take(5)?;
            let frac = c.take(temporal::frac_bytes(fsp))?;
            Value::DateTime(temporal::datetime2(int, frac, fsp))
        }
        ColumnKind::TimestampOld => Value::Timestamp(c.u32()?, 0),
        ColumnKind::Timestamp2 { fsp } => {
            let int = c.array()?;
            let frac = c.take(temporal::frac_bytes(fsp))?;
            let (s, us) = temporal::timestamp2(int, frac, fsp);
            Value::Timestamp(s, us)
        }
        ColumnKind::TimeOld => Value::Time(temporal::time_old(c.array()?)),
        ColumnKind::Time2 { fsp } => {
            let int = c.array()?;
            let frac = c.take(temporal::frac_bytes(fsp))?;
            Value::Time(temporal::time2(int, frac, fsp))
        }
        ColumnKind::String { len_bytes, .. } => {
            let n = c.uint_n(usize::from(len_bytes))? as usize;
            Value::Bytes(c.take(n)?)
        }
        ColumnKind::Enum { bytes } => Value::Enum(c.uint_n(usize::from(bytes))? as u16),
        ColumnKind::Set { bytes } => Value::Set(c.uint_n(usize::from(bytes))?),
        ColumnKind::Bit { bytes } => Value::Bit(be_uint(c.take(usize::from(bytes))?)),
        ColumnKind::Json { len_bytes } => {
            let n = c.uint_n(usize::from(len_bytes))? as usize;
            Value::Json(c.take(n)?)
        }
        ColumnKind::Geometry { len_bytes } | ColumnKind::Vector { len_bytes } => {
            let n = c.uint_n(usize::from(len_bytes))? as usize;
            Value::Bytes(c.take(n)?)
        }
        ColumnKind::Compressed { len_bytes, .. } => {
            let n = c.uint_n(usize::from(len_bytes))? as usize;
            Value::Compressed(c.take(n)?)
        }
    })
}

/// A value that cannot be rendered: its bytes contradict its column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RenderError(pub String);

/// Appends the JSON of `v`, a value of column `col`.
///
/// `before` is the same column's before-image value, needed to apply a
/// partial JSON update.
pub fn write_json(
    out: &mut Vec<u8>,
    col: &Column,
    v: &Value<'_>,
    before: Option<&Value<'_>>,
) -> Result<(), RenderError> {
    match *v {
        Value::Absent | Value::Null => out.extend_from_slice(b"null"),
        Value::Int(i) => json_text::write_i64(out, i),
        Value::UInt(u) | Value::Bit(u) => json_text::write_u64(out, u),
        Value::Float(f) => json_text::write_f32(out, f),
        Value::Double(d) => json_text::write_f64(out, d),
        Value::Decimal(b) => {
            let ColumnKind::Decimal { precision, scale, .. } = col.kind else {
                return Err(RenderError("decimal value in a non-decimal column".into()));
            };
            out.push(b'"');
            super::decimal::write_decimal(b, precision, scale, out)
                .map_err(|e| RenderError(format!("DECIMAL({precision},{scale}): {e}")))?;
            out.push(b'"');
        }
        Value::Date(d) => {
            out.push(b'"');
            temporal::push_date(out, &d);
            out.push(b'"');
        }
        Value::DateTime(d) => {
            let fsp = match col.kind {
                ColumnKind::DateTime2 { fsp } => fsp,
                _ => 0,
            };
            out.push(b'"');
            temporal::push_datetime(out, &d, b' ', fsp);
            out.push(b'"');
        }
        Value::Timestamp(s, us) => {
            let fsp = match col.kind {
                ColumnKind::Timestamp2 { fsp } => fsp,
                _ => 0,
            };
            out.push(b'"');
            temporal::push_timestamp(out, s, us, fsp);
            out.push(b'"');
        }
        Value::Time(t) => {
            let fsp = match col.kind {
                ColumnKind::Time2 { fsp } => fsp,
                _ => 0,
            };
            out.push(b'"');
            temporal::push_time(out, &t, fsp);
            out.push(b'"');
        }
        Value::Bytes(b) => match col.kind {
            ColumnKind::String { charset, pad_to, .. } => write_text_or_bytes(out, b, charset, pad_to),
            ColumnKind::Vector { .. } => write_vector(out, b)?,
            _ => json_text::write_base64(out, b),
        },
        Value::Enum(i) => {
            if i == 0 {
                out.extend_from_slice(b"\"\"");
            } else if let Some(label) = col.labels.get(usize::from(i) - 1) {
                out.push(b'"');
                out.extend_from_slice(label.as_bytes());
                out.push(b'"');
            } else {
                // Labels unknown (no FULL metadata) or out of range: the index.
                json_text::write_u64(out, u64::from(i));
            }
        }
        Value::Set(bits) => {
            if col.labels.is_empty() && bits != 0 {
                json_text::write_u64(out, bits);
            } else {
                out.push(b'"');
                let mut first = true;
                for (i, label) in col.labels.iter().enumerate().take(64) {
                    if bits & (1 << i) != 0 {
                        if !first {
                            out.push(b',');
                        }
                        first = false;
                        out.extend_from_slice(label.as_bytes());
                    }
                }
                out.push(b'"');
            }
        }
        Value::Json(b) => super::mysql_json::write_json(b, out).map_err(|e| RenderError(format!("JSON: {e}")))?,
        Value::JsonDiff(diff) => match before {
            Some(Value::Json(base)) => super::mysql_json::write_json_with_diff(base, diff, out)
                .map_err(|e| RenderError(format!("partial JSON update: {e}")))?,
            // MINIMAL before image: the document is not in the event.
            _ => super::mysql_json::write_diff_list(diff, out)
                .map_err(|e| RenderError(format!("partial JSON update: {e}")))?,
        },
        Value::Compressed(b) => {
            let ColumnKind::Compressed { charset, .. } = col.kind else {
                return Err(RenderError("compressed value in a plain column".into()));
            };
            let plain = decompress_column(b).map_err(RenderError)?;
            write_text_or_bytes(out, &plain, charset, None);
        }
    }
    Ok(())
}

fn write_text_or_bytes(out: &mut Vec<u8>, b: &[u8], charset: Charset, pad_to: Option<u16>) {
    match charset {
        Charset::Binary | Charset::Unsupported(_) => match pad_to {
            Some(n) if b.len() < usize::from(n) => {
                let mut padded = [0u8; 256];
                let n = usize::from(n).min(padded.len());
                padded[..b.len()].copy_from_slice(b);
                json_text::write_base64(out, &padded[..n]);
            }
            _ => json_text::write_base64(out, b),
        },
        cs => {
            charset::write_json_text(out, b, cs);
        }
    }
}

fn write_vector(out: &mut Vec<u8>, b: &[u8]) -> Result<(), RenderError> {
    if !b.len().is_multiple_of(4) {
        return Err(RenderError(format!(
            "VECTOR of {} bytes is not a whole number of floats",
            b.len()
        )));
    }
    out.push(b'[');
    for (i, chunk) in b.chunks_exact(4).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json_text::write_f32(out, f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]));
    }
    out.push(b']');
    Ok(())
}

/// Inflates a MariaDB COMPRESSED column value.
///
/// The first byte is a header: 0 means the rest is stored plain (values
/// too short to gain); otherwise bit 7 is set, bits 0-2 give how many bytes
/// of big-endian original length follow, and bit 3 set means raw deflate
/// (the default, `column_compression_zlib_wrap=OFF`), clear a zlib stream.
pub fn decompress_column(b: &[u8]) -> Result<Vec<u8>, String> {
    let Some((&header, rest)) = b.split_first() else {
        return Ok(Vec::new());
    };
    if header == 0 {
        return Ok(rest.to_vec());
    }
    if header & 0x80 == 0 {
        return Err(format!("COMPRESSED column has an unknown header byte {header:#04x}"));
    }
    let len_bytes = usize::from(header & 0x07);
    let mut c = Cursor::new(rest);
    let len = c
        .take(len_bytes)
        .map(be_uint)
        .map_err(|_| "COMPRESSED column value is truncated".to_string())?;
    if len > 1 << 32 {
        return Err(format!("COMPRESSED column claims {len} bytes"));
    }
    inflate_exact(c.rest(), len, header & 0x08 != 0).map_err(|e| format!("COMPRESSED column {e}"))
}

/// Inflates `data` (raw deflate, or a zlib stream) to exactly `len` bytes.
///
/// The buffer reserved up front is no larger than the data can inflate to
/// (deflate's limit is 1032:1), so a corrupt length cannot allocate
/// gigabytes.
pub(crate) fn inflate_exact(data: &[u8], len: u64, raw_deflate: bool) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    let mut plain = Vec::with_capacity(len.min((data.len() as u64).saturating_mul(1032)) as usize);
    let result = if raw_deflate {
        flate2::read::DeflateDecoder::new(data)
            .take(len)
            .read_to_end(&mut plain)
    } else {
        flate2::read::ZlibDecoder::new(data).take(len).read_to_end(&mut plain)
    };
    result.map_err(|e| format!("does not inflate: {e}"))?;
    if plain.len() as u64 != len {
        return Err(format!("inflated to {} bytes, header says {len}", plain.len()));
    }
    Ok(plain)
}
