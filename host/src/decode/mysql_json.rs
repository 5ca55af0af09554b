//! MySQL binary JSON (column type 245) decoded straight into JSON text, and
//! MySQL partial JSON updates applied to it.
//!
//! MySQL does not store or replicate a `JSON` column as text: it uses its own
//! binary format (`sql-common/json_binary.h`). A value is a type byte and a
//! body. Objects and arrays carry an element count and their byte size, then
//! a table of key entries (offset, length) and value entries (type, offset);
//! offsets are relative to the start of the container body, and the entry
//! holds the value itself instead of an offset when it is a literal or a
//! small integer ("inlined"). Containers come in a small flavour (16-bit
//! counts and offsets) and a large one (32-bit). Scalars are little-endian
//! integers, an IEEE double, a length-prefixed UTF-8 string, or an "opaque"
//! value: a MySQL field type byte and that type's binary image (DECIMAL,
//! DATE, TIME, DATETIME, TIMESTAMP, or raw bytes).
//!
//! Rows are decoded on the hot path into a reused byte buffer, so a document
//! is written as text while it is walked, without building a tree. Only a
//! partial update (`binlog_row_value_options=PARTIAL_JSON`), which edits the
//! before-image by path, decodes the document into a small tree first.
//!
//! The text follows what MySQL's `JSON_EXTRACT` prints, compacted: keys in
//! stored order, DECIMALs with their exact digits, temporal values with six
//! fraction digits, other opaque values as `"base64:typeNN:..."`. Doubles are
//! written in shortest round-trip form rather than MySQL's 17-digit `%g`.
//!
//! The input is untrusted: every offset is bounds-checked, nesting is limited
//! to MySQL's 100 levels, and the work done is bounded by the input size even
//! when a corrupt document points many entries at the same bytes.

use super::decimal::{decimal_bin_size, decimal_text};
use crate::json_text::{self, write_base64, write_f64, write_i64, write_str, write_u64};

/// MySQL's limit on nesting (`JSON_DOCUMENT_MAX_DEPTH`).
const MAX_DEPTH: usize = 100;

const T_SMALL_OBJECT: u8 = 0x00;
const T_LARGE_OBJECT: u8 = 0x01;
const T_SMALL_ARRAY: u8 = 0x02;
const T_LARGE_ARRAY: u8 = 0x03;
const T_LITERAL: u8 = 0x04;
const T_INT16: u8 = 0x05;
const T_UINT16: u8 = 0x06;
const T_INT32: u8 = 0x07;
const T_UINT32: u8 = 0x08;
const T_INT64: u8 = 0x09;
const T_UINT64: u8 = 0x0a;
const T_DOUBLE: u8 = 0x0b;
const T_STRING: u8 = 0x0c;
const T_OPAQUE: u8 = 0x0f;

const LITERAL_NULL: u8 = 0x00;
const LITERAL_TRUE: u8 = 0x01;
const LITERAL_FALSE: u8 = 0x02;

// MySQL `enum_field_types` values that opaque JSON values are printed by.
const FT_TIMESTAMP: u8 = 7;
const FT_DATE: u8 = 10;
const FT_TIME: u8 = 11;
const FT_DATETIME: u8 = 12;
const FT_VAR_STRING: u8 = 253;
const FT_NEWDECIMAL: u8 = 246;

// `enum_json_diff_operation`.
const OP_REPLACE: u8 = 0;
const OP_INSERT: u8 = 1;
const OP_REMOVE: u8 = 2;

/// Errors from decoding MySQL binary JSON. Every variant names the byte offset inside the value.
///
/// Offsets count from the start of the document given to [`write_json`] (or
/// of `before` in [`write_json_with_diff`]), or from the start of `diff` for
/// errors in a diff list, or of the bytes given to [`super::decimal::write_decimal`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JsonError {
    /// A field runs past the end of the data.
    #[error("binary JSON is truncated: the field at byte {offset} runs past the end")]
    Truncated {
        /// Where the field that does not fit starts.
        offset: usize,
    },
    /// A value has a type byte the format does not define.
    #[error("unknown binary JSON type {type_byte:#04x} at byte {offset}")]
    BadType {
        /// Where the type byte is.
        offset: usize,
        /// The type byte.
        type_byte: u8,
    },
    /// A literal is none of null, true, false.
    #[error("unknown JSON literal {byte:#04x} at byte {offset}")]
    BadLiteral {
        /// Where the literal is.
        offset: usize,
        /// The literal byte.
        byte: u8,
    },
    /// A string or an object key is not UTF-8.
    #[error("string at byte {offset} is not valid UTF-8")]
    BadUtf8 {
        /// Where the string's bytes start.
        offset: usize,
    },
    /// A variable-length length is longer than 5 bytes or exceeds 32 bits.
    #[error("bad length field at byte {offset}")]
    BadLength {
        /// Where the length field starts.
        offset: usize,
    },
    /// An object or array header is inconsistent.
    #[error("malformed object or array at byte {offset}: {reason}")]
    BadContainer {
        /// Where the offending field or container is.
        offset: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// Objects and arrays are nested deeper than MySQL allows (100 levels).
    #[error("JSON nested deeper than {MAX_DEPTH} levels at byte {offset}")]
    TooDeep {
        /// Where the container past the limit is (in a diff: where the diff starts).
        offset: usize,
    },
    /// An opaque value's bytes do not fit its MySQL type.
    #[error("opaque value of MySQL type {field_type} at byte {offset} is malformed")]
    BadOpaque {
        /// Where the opaque value's bytes start.
        offset: usize,
        /// Its MySQL field type.
        field_type: u8,
    },
    /// A binary DECIMAL has an impossible precision/scale or digit group.
    #[error("malformed DECIMAL at byte {offset}")]
    BadDecimal {
        /// Where the offending part is.
        offset: usize,
    },
    /// A partial-update diff list is malformed or cannot be applied.
    #[error("malformed JSON diff at byte {offset}: {reason}")]
    BadDiff {
        /// Where in the diff list.
        offset: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// A diff's path is not a simple JSON path (`$`, `.member`, `[n]`, `[last-n]`).
    #[error("bad JSON path in diff at byte {offset}")]
    BadPath {
        /// Where in the diff list.
        offset: usize,
    },
    /// A diff's path does not lead to a place in the document it can apply to.
    #[error("JSON diff at byte {offset}: its path is not in the document")]
    PathNotFound {
        /// Where the diff starts in the diff list.
        offset: usize,
    },
    /// The binary JSON value carried by a diff is malformed.
    #[error("JSON value of the diff at byte {offset}: {inner}")]
    DiffValue {
        /// Where the value starts in the diff list.
        offset: usize,
        /// The error, with offsets inside the value.
        inner: Box<JsonError>,
    },
}

impl From<super::decimal::DecimalError> for JsonError {
    fn from(e: super::decimal::DecimalError) -> Self {
        use super::decimal::DecimalError;
        match e {
            DecimalError::Truncated { offset } => JsonError::Truncated { offset },
            DecimalError::Malformed { offset } => JsonError::BadDecimal { offset },
        }
    }
}

/// Appends the JSON text of the MySQL binary JSON document `bytes` to `out`.
/// An empty `bytes` (MySQL writes a zero-length value for JSON null in some cases) is written as `null`.
///
/// On error `out` is left as it was.
pub fn write_json(bytes: &[u8], out: &mut Vec<u8>) -> Result<(), JsonError> {
    let Some((&t, data)) = bytes.split_first() else {
        out.extend_from_slice(b"null");
        return Ok(());
    };
    let start = out.len();
    let mut budget = Budget::new(bytes.len());
    let root = Val {
        t,
        t_abs: 0,
        data,
        abs: 1,
        inline: false,
    };
    let r = write_value(root, 0, &mut budget, out);
    if r.is_err() {
        out.truncate(start);
    }
    r
}

/// Applies a partial-update diff list (the after-image of a JSON column in a
/// PARTIAL_UPDATE_ROWS_EVENT, binlog_row_value_options=PARTIAL_JSON) to the
/// before-image document `before` (binary JSON) and appends the resulting full document as JSON text to `out`.
///
/// `diff` is MySQL's `Json_diff_vector` image: a 4-byte little-endian length
/// followed by that many bytes of diffs. The diffs alone (the length already
/// stripped, as for the length prefix of a full JSON value) are accepted too:
/// the two are told apart by whether the first four bytes equal the number of
/// bytes after them. Each diff is an operation byte (0 REPLACE, 1 INSERT,
/// 2 REMOVE), a length-encoded path text, and for REPLACE and INSERT a
/// length-encoded binary JSON value. They are applied in order with the
/// semantics of MySQL's `apply_json_diffs`; one that does not apply (missing
/// path, INSERT of an existing member, ...) is an error, as it is on a replica.
///
/// On error `out` is left as it was.
pub fn write_json_with_diff(before: &[u8], diff: &[u8], out: &mut Vec<u8>) -> Result<(), JsonError> {
    let start = out.len();
    let r = apply_diffs(before, diff).map(|root| write_node(&root, out));
    if r.is_err() {
        out.truncate(start);
    }
    r
}

// ---------------------------------------------------------------------------
// Reading primitives

/// Clamped addition for error offsets: they are reports, never indexes.
fn at(abs: usize, off: usize) -> usize {
    abs.saturating_add(off)
}

/// `n` bytes of `data` at `pos`; `abs` is where `data` starts in the input.
fn field(data: &[u8], pos: usize, n: usize, abs: usize) -> Result<&[u8], JsonError> {
    pos.checked_add(n)
        .and_then(|end| data.get(pos..end))
        .ok_or(JsonError::Truncated { offset: at(abs, pos) })
}

fn arr<const N: usize>(data: &[u8], pos: usize, abs: usize) -> Result<[u8; N], JsonError> {
    field(data, pos, N, abs)?
        .try_into()
        .map_err(|_| JsonError::Truncated { offset: at(abs, pos) })
}

/// Little-endian unsigned integer of up to 8 bytes.
fn le(b: &[u8]) -> u64 {
    b.iter().rev().fold(0, |acc, &x| (acc << 8) | u64::from(x))
}

fn to_usize(v: u64, offset: usize) -> Result<usize, JsonError> {
    usize::try_from(v).map_err(|_| JsonError::BadLength { offset })
}

/// The length prefix of strings and opaque values: 7 bits per byte, low
/// bits first, high bit set on all but the last byte; at most 5 bytes
/// because lengths are 32-bit. Returns the length and the bytes it took.
fn var_len(data: &[u8], pos: usize, abs: usize) -> Result<(usize, usize), JsonError> {
    let offset = at(abs, pos);
    let mut len: u64 = 0;
    for i in 0..5 {
        let Some(&b) = pos.checked_add(i).and_then(|p| data.get(p)) else {
            return Err(JsonError::Truncated { offset });
        };
        len |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            if len > u64::from(u32::MAX) {
                return Err(JsonError::BadLength { offset });
            }
            return Ok((to_usize(len, offset)?, i + 1));
        }
    }
    Err(JsonError::BadLength { offset })
}

// ---------------------------------------------------------------------------
// Containers

/// A value to decode: its type, where the type byte was, and the bytes its
/// body may use (for an inlined value, the entry's offset field).
#[derive(Clone, Copy)]
struct Val<'a> {
    t: u8,
    t_abs: usize,
    data: &'a [u8],
    abs: usize,
    inline: bool,
}

/// An object or array body, cut to its declared size.
struct Container<'a> {
    data: &'a [u8],
    abs: usize,
    large: bool,
    object: bool,
    count: usize,
    header: usize,
}

fn offset_size(large: bool) -> usize {
    if large { 4 } else { 2 }
}

/// Whether a value of type `t` sits in the entry instead of being pointed to.
fn inlined(t: u8, large: bool) -> bool {
    match t {
        T_LITERAL | T_INT16 | T_UINT16 => true,
        T_INT32 | T_UINT32 => large,
        _ => false,
    }
}

impl<'a> Container<'a> {
    fn parse(t: u8, data: &'a [u8], abs: usize) -> Result<Self, JsonError> {
        let large = t == T_LARGE_OBJECT || t == T_LARGE_ARRAY;
        let object = t == T_SMALL_OBJECT || t == T_LARGE_OBJECT;
        let os = offset_size(large);
        let count = to_usize(le(field(data, 0, os, abs)?), abs)?;
        let size = to_usize(le(field(data, os, os, abs)?), at(abs, os))?;
        // Nested values may only use their container's bytes, as in MySQL.
        let data = data.get(..size).ok_or(JsonError::Truncated { offset: abs })?;
        let entry = if object { (os + 2) + (1 + os) } else { 1 + os };
        let header = count
            .checked_mul(entry)
            .and_then(|n| n.checked_add(2 * os))
            .filter(|&h| h <= size)
            .ok_or(JsonError::BadContainer {
                offset: abs,
                reason: "entries do not fit in its size",
            })?;
        Ok(Container {
            data,
            abs,
            large,
            object,
            count,
            header,
        })
    }

    fn key(&self, i: usize) -> Result<(&'a str, usize), JsonError> {
        let os = offset_size(self.large);
        let pos = 2 * os + i * (os + 2);
        let off = to_usize(le(field(self.data, pos, os, self.abs)?), at(self.abs, pos))?;
        let len = usize::from(u16::from_le_bytes(arr(self.data, pos + os, self.abs)?));
        if off < self.header {
            return Err(JsonError::BadContainer {
                offset: at(self.abs, pos),
                reason: "key offset inside the header",
            });
        }
        let key = off
            .checked_add(len)
            .and_then(|end| self.data.get(off..end))
            .ok_or(JsonError::BadContainer {
                offset: at(self.abs, pos),
                reason: "key outside its container",
            })?;
        let key = std::str::from_utf8(key).map_err(|_| JsonError::BadUtf8 {
            offset: at(self.abs, off),
        })?;
        Ok((key, at(self.abs, off)))
    }

    fn value(&self, i: usize) -> Result<Val<'a>, JsonError> {
        let os = offset_size(self.large);
        let keys = if self.object { self.count * (os + 2) } else { 0 };
        let pos = 2 * os + keys + i * (1 + os);
        let [t] = arr(self.data, pos, self.abs)?;
        let raw = field(self.data, pos + 1, os, self.abs)?;
        let t_abs = at(self.abs, pos);
        if inlined(t, self.large) {
            return Ok(Val {
                t,
                t_abs,
                data: raw,
                abs: at(self.abs, pos + 1),
                inline: true,
            });
        }
        let off = to_usize(le(raw), at(self.abs, pos + 1))?;
        if off < self.header {
            return Err(JsonError::BadContainer {
                offset: at(self.abs, pos + 1),
                reason: "value offset inside the header",
            });
        }
        let data = self
            .data
            .get(off..)
            .filter(|d| !d.is_empty())
            .ok_or(JsonError::BadContainer {
                offset: at(self.abs, pos + 1),
                reason: "value offset outside its container",
            })?;
        Ok(Val {
            t,
            t_abs,
            data,
            abs: at(self.abs, off),
            inline: false,
        })
    }
}

/// Bounds the work on one document. In a well-formed document the headers,
/// keys and scalar bodies are disjoint, so visiting them costs at most the
/// document's size; a corrupt one can point many entries at the same bytes
/// and make the walk (and the output) grow exponentially, so each visit is
/// charged and running out is an error.
struct Budget(usize);

impl Budget {
    fn new(len: usize) -> Self {
        Budget(len.saturating_mul(2).saturating_add(16))
    }

    fn charge(&mut self, n: usize, offset: usize) -> Result<(), JsonError> {
        self.0 = self.0.checked_sub(n).ok_or(JsonError::BadContainer {
            offset,
            reason: "values overlap (the same bytes are used repeatedly)",
        })?;
        Ok(())
    }
}

fn is_container(t: u8) -> bool {
    matches!(t, T_SMALL_OBJECT | T_LARGE_OBJECT | T_SMALL_ARRAY | T_LARGE_ARRAY)
}

fn write_value(v: Val<'_>, depth: usize, budget: &mut Budget, out: &mut Vec<u8>) -> Result<(), JsonError> {
    if !is_container(v.t) {
        let n = write_scalar(v, out)?;
        if !v.inline {
            budget.charge(n, v.abs)?;
        }
        return Ok(());
    }
    if depth >= MAX_DEPTH {
        return Err(JsonError::TooDeep { offset: v.t_abs });
    }
    let c = Container::parse(v.t, v.data, v.abs)?;
    budget.charge(c.header, v.abs)?;
    out.push(if c.object { b'{' } else { b'[' });
    for i in 0..c.count {
        if i > 0 {
            out.push(b',');
        }
        if c.object {
            let (key, key_abs) = c.key(i)?;
            budget.charge(key.len(), key_abs)?;
            write_str(out, key);
            out.push(b':');
        }
        write_value(c.value(i)?, depth + 1, budget, out)?;
    }
    out.push(if c.object { b'}' } else { b']' });
    Ok(())
}

// ---------------------------------------------------------------------------
// Scalars

/// Writes a scalar and returns how many body bytes it took.
fn write_scalar(v: Val<'_>, out: &mut Vec<u8>) -> Result<usize, JsonError> {
    let (d, abs) = (v.data, v.abs);
    match v.t {
        T_LITERAL => {
            let [b] = arr(d, 0, abs)?;
            out.extend_from_slice(match b {
                LITERAL_NULL => b"null".as_slice(),
                LITERAL_TRUE => b"true",
                LITERAL_FALSE => b"false",
                byte => return Err(JsonError::BadLiteral { offset: abs, byte }),
            });
            Ok(1)
        }
        T_INT16 => {
            write_i64(out, i16::from_le_bytes(arr(d, 0, abs)?).into());
            Ok(2)
        }
        T_UINT16 => {
            write_u64(out, u16::from_le_bytes(arr(d, 0, abs)?).into());
            Ok(2)
        }
        T_INT32 => {
            write_i64(out, i32::from_le_bytes(arr(d, 0, abs)?).into());
            Ok(4)
        }
        T_UINT32 => {
            write_u64(out, u32::from_le_bytes(arr(d, 0, abs)?).into());
            Ok(4)
        }
        T_INT64 => {
            write_i64(out, i64::from_le_bytes(arr(d, 0, abs)?));
            Ok(8)
        }
        T_UINT64 => {
            write_u64(out, u64::from_le_bytes(arr(d, 0, abs)?));
            Ok(8)
        }
        T_DOUBLE => {
            write_f64(out, f64::from_le_bytes(arr(d, 0, abs)?));
            Ok(8)
        }
        T_STRING => {
            let (len, n) = var_len(d, 0, abs)?;
            let s = field(d, n, len, abs)?;
            let s = std::str::from_utf8(s).map_err(|_| JsonError::BadUtf8 { offset: at(abs, n) })?;
            write_str(out, s);
            Ok(n + len)
        }
        T_OPAQUE => {
            let [ft] = arr(d, 0, abs)?;
            let (len, n) = var_len(d, 1, abs)?;
            let body = field(d, 1 + n, len, abs)?;
            write_opaque(ft, body, at(abs, 1 + n), out)?;
            Ok(1 + n + len)
        }
        type_byte => Err(JsonError::BadType {
            offset: v.t_abs,
            type_byte,
        }),
    }
}

/// Writes an opaque value the way MySQL's `Json_wrapper::to_string` does.
fn write_opaque(ft: u8, body: &[u8], abs: usize, out: &mut Vec<u8>) -> Result<(), JsonError> {
    let bad = || JsonError::BadOpaque {
        offset: abs,
        field_type: ft,
    };
    match ft {
        FT_NEWDECIMAL => {
            let [precision, scale] = arr(body, 0, abs).map_err(|_| bad())?;
            let digits = body.get(2..).unwrap_or_default();
            if digits.len() != decimal_bin_size(precision, scale) {
                return Err(bad());
            }
            decimal_text(digits, precision, scale, at(abs, 2), out)?;
        }
        FT_DATE | FT_TIME | FT_DATETIME | FT_TIMESTAMP => {
            let packed: [u8; 8] = body.try_into().map_err(|_| bad())?;
            out.push(b'"');
            write_packed_temporal(ft, i64::from_le_bytes(packed), out);
            out.push(b'"');
        }
        // MySQL prints strings it stored as opaque VAR_STRING as strings.
        FT_VAR_STRING => match std::str::from_utf8(body) {
            Ok(s) => write_str(out, s),
            Err(_) => write_opaque_base64(ft, body, out),
        },
        _ => write_opaque_base64(ft, body, out),
    }
    Ok(())
}

/// `"base64:typeNN:<base64>"`, with the line breaks MySQL's base64 encoder
/// puts after every 76 characters (escaped as `\n` in the JSON string).
fn write_opaque_base64(ft: u8, body: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    write_base64(out, body);
    let quoted = out.split_off(start);
    let encoded = quoted.get(1..quoted.len().saturating_sub(1)).unwrap_or_default();
    out.extend_from_slice(b"\"base64:type");
    write_u64(out, ft.into());
    out.push(b':');
    for (i, line) in encoded.chunks(76).enumerate() {
        if i > 0 {
            out.extend_from_slice(b"\\n");
        }
        out.extend_from_slice(line);
    }
    out.push(b'"');
}

/// A temporal value in MySQL's packed longlong form, unpacked as
/// `TIME_from_longlong_{time,datetime,date}_packed` do and printed as
/// `my_TIME_to_str(.., 6)` does: always six fraction digits for TIME and
/// DATETIME/TIMESTAMP, none for DATE.
fn write_packed_temporal(ft: u8, packed: i64, out: &mut Vec<u8>) {
    let v = packed.unsigned_abs();
    let frac = v % (1 << 24);
    let int = v >> 24;
    if ft == FT_TIME {
        if packed < 0 {
            out.push(b'-');
        }
        json_text::write_u64_padded(out, (int >> 12) % (1 << 10), 2);
        out.push(b':');
        json_text::write_u64_padded(out, (int >> 6) % (1 << 6), 2);
        out.push(b':');
        json_text::write_u64_padded(out, int % (1 << 6), 2);
        out.push(b'.');
        json_text::write_u64_padded(out, frac, 6);
        return;
    }
    let ymd = int >> 17;
    let ym = ymd >> 5;
    let hms = int % (1 << 17);
    json_text::write_u64_padded(out, ym / 13, 4);
    out.push(b'-');
    json_text::write_u64_padded(out, ym % 13, 2);
    out.push(b'-');
    json_text::write_u64_padded(out, ymd % (1 << 5), 2);
    if ft == FT_DATE {
        return;
    }
    out.push(b' ');
    json_text::write_u64_padded(out, hms >> 12, 2);
    out.push(b':');
    json_text::write_u64_padded(out, (hms >> 6) % (1 << 6), 2);
    out.push(b':');
    json_text::write_u64_padded(out, hms % (1 << 6), 2);
    out.push(b'.');
    json_text::write_u64_padded(out, frac, 6);
}

// ---------------------------------------------------------------------------
// Partial updates

/// A decoded document. Scalars keep their JSON text, so numbers stay exact.
enum Node {
    Scalar(Vec<u8>),
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
}

/// Decodes a document into a tree; returns it and its nesting depth.
fn build_doc(bytes: &[u8]) -> Result<(Node, usize), JsonError> {
    let Some((&t, data)) = bytes.split_first() else {
        return Ok((Node::Scalar(b"null".to_vec()), 0));
    };
    let mut budget = Budget::new(bytes.len());
    build(
        Val {
            t,
            t_abs: 0,
            data,
            abs: 1,
            inline: false,
        },
        0,
        &mut budget,
    )
}

fn build(v: Val<'_>, depth: usize, budget: &mut Budget) -> Result<(Node, usize), JsonError> {
    if !is_container(v.t) {
        let mut text = Vec::new();
        let n = write_scalar(v, &mut text)?;
        if !v.inline {
            budget.charge(n, v.abs)?;
        }
        return Ok((Node::Scalar(text), 0));
    }
    if depth >= MAX_DEPTH {
        return Err(JsonError::TooDeep { offset: v.t_abs });
    }
    let c = Container::parse(v.t, v.data, v.abs)?;
    budget.charge(c.header, v.abs)?;
    let mut height = 0;
    let node = if c.object {
        let mut members = Vec::with_capacity(c.count);
        for i in 0..c.count {
            let (key, key_abs) = c.key(i)?;
            budget.charge(key.len(), key_abs)?;
            let (child, h) = build(c.value(i)?, depth + 1, budget)?;
            height = height.max(h);
            members.push((key.to_owned(), child));
        }
        Node::Object(members)
    } else {
        let mut items = Vec::with_capacity(c.count);
        for i in 0..c.count {
            let (child, h) = build(c.value(i)?, depth + 1, budget)?;
            height = height.max(h);
            items.push(child);
        }
        Node::Array(items)
    };
    Ok((node, height + 1))
}

fn write_node(node: &Node, out: &mut Vec<u8>) {
    match node {
        Node::Scalar(text) => out.extend_from_slice(text),
        Node::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_node(item, out);
            }
            out.push(b']');
        }
        Node::Object(members) => {
            out.push(b'{');
            for (i, (key, value)) in members.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(out, key);
                out.push(b':');
                write_node(value, out);
            }
            out.push(b'}');
        }
    }
}

/// One step of a diff path.
enum Leg {
    Member(String),
    /// `[index]`, or `[last-index]` when `from_end`.
    Cell {
        index: u64,
        from_end: bool,
    },
}

/// A length in MySQL's `net_field_length` encoding; returns it and the bytes
/// it took. 251 is SQL NULL, which a diff never holds.
fn net_len(data: &[u8], pos: usize, abs: usize) -> Result<(usize, usize), JsonError> {
    let offset = at(abs, pos);
    let [first] = arr(data, pos, abs)?;
    let (v, n) = match first {
        0..=250 => (u64::from(first), 1),
        251 => {
            return Err(JsonError::BadDiff {
                offset,
                reason: "NULL length",
            });
        }
        252 => (le(field(data, pos + 1, 2, abs)?), 3),
        253 => (le(field(data, pos + 1, 3, abs)?), 4),
        _ => (le(field(data, pos + 1, 8, abs)?), 9),
    };
    Ok((usize::try_from(v).map_err(|_| JsonError::Truncated { offset })?, n))
}

/// Appends a partial-update diff list as `{"$json_diff":[{"op":"replace","path":"$.a","value":1},…]}`.
///
/// Used when the before image does not hold the column (MySQL with
/// `binlog_row_image=MINIMAL` and `binlog_row_value_options=PARTIAL_JSON`),
/// so the whole document cannot be rebuilt from the event alone.
///
/// On error `out` is left as it was.
pub fn write_diff_list(diff: &[u8], out: &mut Vec<u8>) -> Result<(), JsonError> {
    let start = out.len();
    let r = write_diff_list_inner(diff, out);
    if r.is_err() {
        out.truncate(start);
    }
    r
}

fn write_diff_list_inner(diff: &[u8], out: &mut Vec<u8>) -> Result<(), JsonError> {
    let prefixed = diff.len() >= 4 && diff.get(..4).map(le) == Some((diff.len() - 4) as u64);
    let (list, base) = if prefixed {
        (diff.get(4..).unwrap_or_default(), 4)
    } else {
        (diff, 0)
    };
    out.extend_from_slice(b"{\"$json_diff\":[");
    let mut pos = 0;
    let mut first = true;
    while pos < list.len() {
        let diff_at = at(base, pos);
        let [op] = arr(list, pos, base)?;
        let name: &[u8] = match op {
            0 => b"replace",
            1 => b"insert",
            2 => b"remove",
            _ => {
                return Err(JsonError::BadDiff {
                    offset: diff_at,
                    reason: "unknown operation",
                });
            }
        };
        pos += 1;
        let (path_len, n) = net_len(list, pos, base)?;
        pos += n;
        let path = field(list, pos, path_len, base)?;
        let path = std::str::from_utf8(path).map_err(|_| JsonError::BadUtf8 { offset: at(base, pos) })?;
        pos += path_len;
        if !first {
            out.push(b',');
        }
        first = false;
        out.extend_from_slice(b"{\"op\":\"");
        out.extend_from_slice(name);
        out.extend_from_slice(b"\",\"path\":");
        crate::json_text::write_str(out, path);
        if op != OP_REMOVE {
            let (value_len, n) = net_len(list, pos, base)?;
            pos += n;
            let bytes = field(list, pos, value_len, base)?;
            pos += value_len;
            out.extend_from_slice(b",\"value\":");
            write_json(bytes, out)?;
        }
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
    Ok(())
}

fn apply_diffs(before: &[u8], diff: &[u8]) -> Result<Node, JsonError> {
    let (mut root, _) = build_doc(before)?;
    let prefixed = diff.len() >= 4 && diff.get(..4).map(le) == Some((diff.len() - 4) as u64);
    let (list, base) = if prefixed {
        (diff.get(4..).unwrap_or_default(), 4)
    } else {
        (diff, 0)
    };
    let mut pos = 0;
    while pos < list.len() {
        let diff_at = at(base, pos);
        let [op] = arr(list, pos, base)?;
        if op > OP_REMOVE {
            return Err(JsonError::BadDiff {
                offset: diff_at,
                reason: "unknown operation",
            });
        }
        pos += 1;
        let (path_len, n) = net_len(list, pos, base)?;
        pos += n;
        let path = field(list, pos, path_len, base)?;
        let legs = parse_path(path, at(base, pos))?;
        pos += path_len;
        let value = if op == OP_REMOVE {
            None
        } else {
            let (value_len, n) = net_len(list, pos, base)?;
            pos += n;
            let bytes = field(list, pos, value_len, base)?;
            let value_at = at(base, pos);
            if bytes.is_empty() {
                return Err(JsonError::BadDiff {
                    offset: value_at,
                    reason: "empty value",
                });
            }
            pos += value_len;
            Some(build_doc(bytes).map_err(|e| JsonError::DiffValue {
                offset: value_at,
                inner: Box::new(e),
            })?)
        };
        apply(&mut root, op, &legs, value, diff_at)?;
    }
    Ok(root)
}

/// The position a path leg names in an array of `len` elements, and whether
/// it is an existing element (MySQL's `Json_array_index`): positions past the
/// end clamp to the end, and `last-N` past the start clamps to 0.
fn cell_index(index: u64, from_end: bool, len: usize) -> (usize, bool) {
    let within = index < len as u64;
    let index = usize::try_from(index).unwrap_or(usize::MAX);
    let pos = match (from_end, within) {
        (true, true) => len - 1 - index,
        (true, false) => 0,
        (false, _) => index.min(len),
    };
    (pos, within)
}

/// The node at `legs`, following members and existing array cells only (no
/// auto-wrapping), as MySQL's `seek_exact_path` does.
fn seek<'n>(root: &'n mut Node, legs: &[Leg]) -> Option<&'n mut Node> {
    let mut cur = root;
    for leg in legs {
        cur = match (cur, leg) {
            (Node::Array(items), &Leg::Cell { index, from_end }) => {
                let (pos, within) = cell_index(index, from_end, items.len());
                if !within {
                    return None;
                }
                items.get_mut(pos)?
            }
            (Node::Object(members), Leg::Member(name)) => &mut members.iter_mut().find(|(k, _)| k == name)?.1,
            _ => return None,
        };
    }
    Some(cur)
}

/// MySQL orders object members by key length, then bytes; a member it inserts
/// lands in that order.
fn key_before(a: &str, b: &str) -> bool {
    (a.len(), a.as_bytes()) < (b.len(), b.as_bytes())
}

fn apply(root: &mut Node, op: u8, legs: &[Leg], value: Option<(Node, usize)>, offset: usize) -> Result<(), JsonError> {
    let not_found = || JsonError::PathNotFound { offset };
    let Some((last, parent_legs)) = legs.split_last() else {
        return Err(JsonError::BadDiff {
            offset,
            reason: "path is the whole document",
        });
    };
    let value = match value {
        Some((_, height)) if legs.len() + height > MAX_DEPTH => {
            return Err(JsonError::TooDeep { offset });
        }
        Some((node, _)) => Some(node),
        None => None,
    };
    match (op, value) {
        (OP_REPLACE, Some(node)) => {
            *seek(root, legs).ok_or_else(not_found)? = node;
        }
        (OP_INSERT, Some(node)) => match (seek(root, parent_legs).ok_or_else(not_found)?, last) {
            (Node::Object(members), Leg::Member(name)) => {
                if members.iter().any(|(k, _)| k == name) {
                    return Err(JsonError::BadDiff {
                        offset,
                        reason: "INSERT of a member that exists",
                    });
                }
                let pos = members
                    .iter()
                    .position(|(k, _)| key_before(name, k))
                    .unwrap_or(members.len());
                members.insert(pos, (name.clone(), node));
            }
            (Node::Array(items), &Leg::Cell { index, from_end }) => {
                let (pos, _) = cell_index(index, from_end, items.len());
                items.insert(pos, node);
            }
            _ => return Err(not_found()),
        },
        (OP_REMOVE, None) => match (seek(root, parent_legs).ok_or_else(not_found)?, last) {
            (Node::Object(members), Leg::Member(name)) => {
                let pos = members.iter().position(|(k, _)| k == name).ok_or_else(not_found)?;
                members.remove(pos);
            }
            (Node::Array(items), &Leg::Cell { index, from_end }) => {
                let (pos, within) = cell_index(index, from_end, items.len());
                if !within {
                    return Err(not_found());
                }
                items.remove(pos);
            }
            _ => return Err(not_found()),
        },
        _ => {
            return Err(JsonError::BadDiff {
                offset,
                reason: "operation and value do not match",
            });
        }
    }
    Ok(())
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while b.get(i).is_some_and(u8::is_ascii_whitespace) {
        i += 1;
    }
    i
}

fn parse_digits(b: &[u8], mut i: usize, abs: usize) -> Result<(u64, usize), JsonError> {
    let start = i;
    let mut v: u64 = 0;
    while let Some(&c) = b.get(i).filter(|c| c.is_ascii_digit()) {
        v = v
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(c - b'0')))
            .ok_or(JsonError::BadPath { offset: at(abs, start) })?;
        i += 1;
    }
    if i == start {
        return Err(JsonError::BadPath { offset: at(abs, i) });
    }
    Ok((v, i))
}

/// Parses the path text MySQL's `Json_path::to_string` writes for a diff:
/// `$` followed by `.name`, `."quoted name"`, `[n]` or `[last-n]` legs.
/// Wildcards and ranges cannot occur in a diff and are rejected.
fn parse_path(path: &[u8], abs: usize) -> Result<Vec<Leg>, JsonError> {
    let s = std::str::from_utf8(path).map_err(|_| JsonError::BadPath { offset: abs })?;
    let b = s.as_bytes();
    let bad = |i: usize| JsonError::BadPath { offset: at(abs, i) };
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'$') {
        return Err(bad(i));
    }
    i += 1;
    let mut legs = Vec::new();
    loop {
        i = skip_ws(b, i);
        match b.get(i) {
            None => return Ok(legs),
            Some(b'.') => {
                i = skip_ws(b, i + 1);
                if b.get(i) == Some(&b'"') {
                    let (name, next) = parse_quoted(s, i, abs)?;
                    legs.push(Leg::Member(name));
                    i = next;
                    continue;
                }
                let start = i;
                while b
                    .get(i)
                    .is_some_and(|&c| !matches!(c, b'.' | b'[' | b']' | b'"' | b'*') && !c.is_ascii_whitespace())
                {
                    i += 1;
                }
                // Stops only at ASCII bytes, so both ends are char boundaries.
                let name = s.get(start..i).filter(|n| !n.is_empty()).ok_or(bad(start))?;
                legs.push(Leg::Member(name.to_owned()));
            }
            Some(b'[') => {
                i = skip_ws(b, i + 1);
                let from_end = b.get(i..).is_some_and(|r| r.starts_with(b"last"));
                let index = if from_end {
                    i = skip_ws(b, i + 4);
                    if b.get(i) == Some(&b'-') {
                        let (n, next) = parse_digits(b, skip_ws(b, i + 1), abs)?;
                        i = next;
                        n
                    } else {
                        0
                    }
                } else {
                    let (n, next) = parse_digits(b, i, abs)?;
                    i = next;
                    n
                };
                i = skip_ws(b, i);
                if b.get(i) != Some(&b']') {
                    return Err(bad(i));
                }
                i += 1;
                legs.push(Leg::Cell { index, from_end });
            }
            Some(_) => return Err(bad(i)),
        }
    }
}

/// Parses the JSON string starting at the quote at byte `open` of `s`;
/// returns its value and the index after the closing quote.
fn parse_quoted(s: &str, open: usize, abs: usize) -> Result<(String, usize), JsonError> {
    let bad = |i: usize| JsonError::BadPath { offset: at(abs, i) };
    let body = open + 1;
    let rest = s.get(body..).ok_or(bad(open))?;
    let mut name = String::new();
    let mut chars = rest.char_indices();
    while let Some((j, c)) = chars.next() {
        match c {
            '"' => return Ok((name, body + j + 1)),
            '\\' => {
                let (_, e) = chars.next().ok_or(bad(body + j))?;
                let decoded = match e {
                    '"' | '\\' | '/' => e,
                    'b' => '\u{8}',
                    'f' => '\u{c}',
                    'n' => '\n',
                    'r' => '\r',
                    't' => '\t',
                    'u' => {
                        let hi = hex4(&mut chars).ok_or(bad(body + j))?;
                        let code = if (0xd800..0xdc00).contains(&hi) {
                            let lo = match (chars.next(), chars.next()) {
                                (Some((_, '\\')), Some((_, 'u'))) => hex4(&mut chars),
                                _ => None,
                            }
                            .filter(|lo| (0xdc00..0xe000).contains(lo))
                            .ok_or(bad(body + j))?;
                            0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00)
                        } else {
                            hi
                        };
                        char::from_u32(code).ok_or(bad(body + j))?
                    }
                    _ => return Err(bad(body + j)),
                };
                name.push(decoded);
            }
            _ => name.push(c),
        }
    }
    Err(bad(open))
}

fn hex4(chars: &mut std::str::CharIndices<'_>) -> Option<u32> {
    (0..4).try_fold(0u32, |acc, _| Some(acc * 16 + chars.next()?.1.to_digit(16)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(bytes: &[u8]) -> Result<String, JsonError> {
        let mut out = Vec::new();
        write_json(bytes, &mut out)?;
        Ok(String::from_utf8(out).expect("UTF-8 output"))
    }

    fn json(bytes: &[u8]) -> String {
        text(bytes).unwrap_or_else(|e| panic!("{e} decoding {bytes:02x?}"))
    }

    fn with_diff(before: &[u8], diff: &[u8]) -> Result<String, JsonError> {
        let mut out = Vec::new();
        write_json_with_diff(before, diff, &mut out)?;
        Ok(String::from_utf8(out).expect("UTF-8 output"))
    }

    // --- A small test-side encoder, so structured cases stay readable. ---

    #[derive(Clone)]
    enum T {
        Lit(u8),
        I16(i16),
        U16(u16),
        I32(i32),
        U32(u32),
        I64(i64),
        U64(u64),
        F64(f64),
        Str(&'static str),
        Opaque(u8, Vec<u8>),
        Arr(bool, Vec<T>),
        Obj(bool, Vec<(&'static str, T)>),
    }

    fn type_of(v: &T) -> u8 {
        match v {
            T::Obj(large, _) => u8::from(*large),
            T::Arr(large, _) => 2 + u8::from(*large),
            T::Lit(_) => T_LITERAL,
            T::I16(_) => T_INT16,
            T::U16(_) => T_UINT16,
            T::I32(_) => T_INT32,
            T::U32(_) => T_UINT32,
            T::I64(_) => T_INT64,
            T::U64(_) => T_UINT64,
            T::F64(_) => T_DOUBLE,
            T::Str(_) => T_STRING,
            T::Opaque(..) => T_OPAQUE,
        }
    }

    fn enc_len(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn body(v: &T) -> Vec<u8> {
        match v {
            T::Lit(b) => vec![*b],
            T::I16(x) => x.to_le_bytes().to_vec(),
            T::U16(x) => x.to_le_bytes().to_vec(),
            T::I32(x) => x.to_le_bytes().to_vec(),
            T::U32(x) => x.to_le_bytes().to_vec(),
            T::I64(x) => x.to_le_bytes().to_vec(),
            T::U64(x) => x.to_le_bytes().to_vec(),
            T::F64(x) => x.to_le_bytes().to_vec(),
            T::Str(s) => {
                let mut out = Vec::new();
                enc_len(s.len(), &mut out);
                out.extend_from_slice(s.as_bytes());
                out
            }
            T::Opaque(ft, b) => {
                let mut out = vec![*ft];
                enc_len(b.len(), &mut out);
                out.extend_from_slice(b);
                out
            }
            T::Arr(large, items) => container(*large, None, items),
            T::Obj(large, members) => {
                let keys: Vec<&str> = members.iter().map(|(k, _)| *k).collect();
                let vals: Vec<T> = members.iter().map(|(_, v)| v.clone()).collect();
                container(*large, Some(&keys), &vals)
            }
        }
    }

    fn container(large: bool, keys: Option<&[&str]>, vals: &[T]) -> Vec<u8> {
        let os = if large { 4 } else { 2 };
        let put = |out: &mut Vec<u8>, v: usize| out.extend_from_slice(&(v as u32).to_le_bytes()[..os]);
        let n = vals.len();
        let header = 2 * os + keys.map_or(0, |_| n * (os + 2)) + n * (1 + os);
        let mut key_entries = Vec::new();
        let mut value_entries = Vec::new();
        let mut tail = Vec::new();
        for k in keys.unwrap_or_default() {
            put(&mut key_entries, header + tail.len());
            key_entries.extend_from_slice(&(k.len() as u16).to_le_bytes());
            tail.extend_from_slice(k.as_bytes());
        }
        for v in vals {
            let t = type_of(v);
            value_entries.push(t);
            if inlined(t, large) {
                let mut b = body(v);
                b.resize(os, 0);
                value_entries.extend_from_slice(&b);
            } else {
                put(&mut value_entries, header + tail.len());
                tail.extend_from_slice(&body(v));
            }
        }
        let mut out = Vec::new();
        put(&mut out, n);
        put(&mut out, header + tail.len());
        out.extend(key_entries);
        out.extend(value_entries);
        out.extend(tail);
        out
    }

    fn enc(v: &T) -> Vec<u8> {
        let mut out = vec![type_of(v)];
        out.extend(body(v));
        out
    }

    // --- Scalars ---

    #[test]
    fn empty_is_null() {
        assert_eq!(json(&[]), "null");
    }

    #[test]
    fn top_level_scalars() {
        assert_eq!(json(&[0x04, 0x00]), "null");
        assert_eq!(json(&[0x04, 0x01]), "true");
        assert_eq!(json(&[0x04, 0x02]), "false");
        assert_eq!(json(&[0x05, 0xfe, 0xff]), "-2");
        assert_eq!(json(&[0x06, 0xff, 0xff]), "65535");
        assert_eq!(json(&[0x07, 0x00, 0x00, 0x00, 0x80]), "-2147483648");
        assert_eq!(json(&[0x08, 0xff, 0xff, 0xff, 0xff]), "4294967295");
        assert_eq!(json(&enc(&T::I64(i64::MIN))), "-9223372036854775808");
        assert_eq!(json(&enc(&T::U64(u64::MAX))), "18446744073709551615");
        assert_eq!(json(&enc(&T::F64(1.5))), "1.5");
        assert_eq!(json(&enc(&T::F64(1.0))), "1.0");
        assert_eq!(json(&enc(&T::F64(-1e300))), "-1e300");
        assert_eq!(json(&enc(&T::F64(0.1))), "0.1");
        assert_eq!(json(&[0x0c, 0x03, b'a', b'"', b'\n']), r#""a\"\n""#);
        assert_eq!(json(&enc(&T::Str("żółw ✓ 😀\u{1}"))), "\"żółw ✓ 😀\\u0001\"");
        assert_eq!(json(&[0x0c, 0x00]), r#""""#);
    }

    #[test]
    fn long_string_uses_multibyte_length() {
        let s: &'static str = Box::leak("x".repeat(20_000).into_boxed_str());
        let bytes = enc(&T::Str(s));
        // 20000 = 0b100_1110_0010_0000: three length bytes.
        assert_eq!(&bytes[..4], &[0x0c, 0xa0, 0x9c, 0x01]);
        assert_eq!(json(&bytes), format!("\"{s}\""));
    }

    // --- Containers ---

    /// `{"age": 24, "data": "xxxxxxxxxx", "name": "Joe"}` as MySQL 8.0.22
    /// wrote it (json.binlog.000001, first WRITE_ROWS event; the row's
    /// generated columns name='Joe' and age=24 give the expected values).
    const FIXTURE_JOE_24: &[u8] = &[
        0x00, 0x03, 0x00, 0x33, 0x00, 0x19, 0x00, 0x03, 0x00, 0x1c, 0x00, 0x04, 0x00, 0x20, 0x00, 0x04, 0x00, 0x05,
        0x18, 0x00, 0x0c, 0x24, 0x00, 0x0c, 0x2f, 0x00, 0x61, 0x67, 0x65, 0x64, 0x61, 0x74, 0x61, 0x6e, 0x61, 0x6d,
        0x65, 0x0a, 0x78, 0x78, 0x78, 0x78, 0x78, 0x78, 0x78, 0x78, 0x78, 0x78, 0x03, 0x4a, 0x6f, 0x65,
    ];

    /// The same row after `age` became 25 (the UPDATE_ROWS after-image).
    const FIXTURE_JOE_25: &[u8] = &[
        0x00, 0x03, 0x00, 0x33, 0x00, 0x19, 0x00, 0x03, 0x00, 0x1c, 0x00, 0x04, 0x00, 0x20, 0x00, 0x04, 0x00, 0x05,
        0x19, 0x00, 0x0c, 0x24, 0x00, 0x0c, 0x2f, 0x00, 0x61, 0x67, 0x65, 0x64, 0x61, 0x74, 0x61, 0x6e, 0x61, 0x6d,
        0x65, 0x0a, 0x78, 0x78, 0x78, 0x78, 0x78, 0x78, 0x78, 0x78, 0x78, 0x78, 0x03, 0x4a, 0x6f, 0x65,
    ];

    /// The PARTIAL_UPDATE_ROWS_EVENT after-image of that row's JSON column:
    /// length 11, then REPLACE `$.age` with int16 26 (the event's generated
    /// column age=26 gives the expected value).
    const FIXTURE_DIFF_AGE_26: &[u8] = &[
        0x0b, 0x00, 0x00, 0x00, 0x00, 0x05, 0x24, 0x2e, 0x61, 0x67, 0x65, 0x03, 0x05, 0x1a, 0x00,
    ];

    #[test]
    fn mysql_8_small_object() {
        assert_eq!(json(FIXTURE_JOE_24), r#"{"age":24,"data":"xxxxxxxxxx","name":"Joe"}"#);
    }

    #[test]
    fn hand_assembled_small_array() {
        // [1, "a", null]: int16 and literal inlined, the string at offset 13.
        let bytes = [
            0x02, 0x03, 0x00, 0x0f, 0x00, 0x05, 0x01, 0x00, 0x0c, 0x0d, 0x00, 0x04, 0x00, 0x00, 0x01, b'a',
        ];
        assert_eq!(json(&bytes), r#"[1,"a",null]"#);
    }

    #[test]
    fn hand_assembled_large_array_inlines_int32() {
        // [-1 (int32, inlined in the large format), "a" at offset 18].
        let bytes = [
            0x03, 0x02, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x07, 0xff, 0xff, 0xff, 0xff, 0x0c, 0x12, 0x00, 0x00,
            0x00, 0x01, b'a',
        ];
        assert_eq!(json(&bytes), r#"[-1,"a"]"#);
    }

    #[test]
    fn small_array_points_to_int32() {
        // In the small format an int32 is not inlined: entry holds offset 7.
        let bytes = [0x02, 0x01, 0x00, 0x0b, 0x00, 0x07, 0x07, 0x00, 0x40, 0xe2, 0x01, 0x00];
        assert_eq!(json(&bytes), "[123456]");
    }

    #[test]
    fn hand_assembled_large_object() {
        // {"k": true} in the large format: key entry (offset 4, length 2),
        // value entry (type, 4 bytes), key at 19.
        let bytes = [
            0x01, 0x01, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x13, 0x00, 0x00, 0x00, 0x01, 0x00, 0x04, 0x01, 0x00,
            0x00, 0x00, b'k',
        ];
        assert_eq!(json(&bytes), r#"{"k":true}"#);
    }

    fn all_types(large: bool) -> T {
        T::Obj(
            large,
            vec![
                ("n", T::Lit(0)),
                ("t", T::Lit(1)),
                ("f", T::Lit(2)),
                ("i16", T::I16(-300)),
                ("u16", T::U16(60000)),
                ("i32", T::I32(-70000)),
                ("u32", T::U32(4_000_000_000)),
                ("i64", T::I64(-5_000_000_000)),
                ("u64", T::U64(10_000_000_000_000_000_000)),
                ("dbl", T::F64(2.5e-8)),
                ("str", T::Str("tab\there")),
                ("empty", T::Arr(large, vec![])),
                ("eobj", T::Obj(!large, vec![])),
                (
                    "nested",
                    T::Arr(
                        !large,
                        vec![T::Obj(large, vec![("a b", T::Arr(false, vec![T::Lit(1), T::I16(7)]))])],
                    ),
                ),
                (
                    "date",
                    T::Opaque(FT_DATE, 0x198be40000000000_i64.to_le_bytes().to_vec()),
                ),
            ],
        )
    }

    const ALL_TYPES_TEXT: &str = concat!(
        r#"{"n":null,"t":true,"f":false,"i16":-300,"u16":60000,"i32":-70000,"u32":4000000000,"#,
        r#""i64":-5000000000,"u64":10000000000000000000,"dbl":2.5e-8,"str":"tab\there","empty":[],"eobj":{},"#,
        r#""nested":[{"a b":[true,7]}],"date":"2012-03-18"}"#
    );

    #[test]
    fn every_type_small_and_large() {
        assert_eq!(json(&enc(&all_types(false))), ALL_TYPES_TEXT);
        assert_eq!(json(&enc(&all_types(true))), ALL_TYPES_TEXT);
    }

    #[test]
    fn output_is_appended() {
        let mut out = b"x=".to_vec();
        write_json(&[0x04, 0x01], &mut out).unwrap();
        assert_eq!(out, b"x=true");
    }

    // --- Opaque values ---

    /// Documents from json-opaque.binlog (MySQL 9.0.1), one per WRITE_ROWS
    /// event. Expected texts: the DECIMAL digits read off the image by hand,
    /// the temporal values computed from the packed integers with MySQL's
    /// unpacking formulas, the base64 of the single byte 0x55 ('U', from
    /// b'01010101').
    const FIXTURE_OPAQUE: &[(&[u8], &str)] = &[
        (
            &[
                0x00, 0x01, 0x00, 0x0f, 0x00, 0x0b, 0x00, 0x01, 0x00, 0x0f, 0x0c, 0x00, 0x61, 0x0f, 0x01, 0x55,
            ],
            r#"{"a":"base64:type15:VQ=="}"#,
        ),
        (
            &[
                0x00, 0x01, 0x00, 0x16, 0x00, 0x0b, 0x00, 0x01, 0x00, 0x0f, 0x0c, 0x00, 0x62, 0x0a, 0x08, 0x00, 0x00,
                0x00, 0x00, 0x00, 0xe4, 0x8b, 0x19,
            ],
            r#"{"b":"2012-03-18"}"#,
        ),
        (
            &[
                0x00, 0x01, 0x00, 0x16, 0x00, 0x0b, 0x00, 0x01, 0x00, 0x0f, 0x0c, 0x00, 0x63, 0x0c, 0x08, 0x00, 0x00,
                0x00, 0xad, 0xb7, 0xe4, 0x8b, 0x19,
            ],
            r#"{"c":"2012-03-18 11:30:45.000000"}"#,
        ),
        (
            &[
                0x00, 0x01, 0x00, 0x16, 0x00, 0x0b, 0x00, 0x01, 0x00, 0x0f, 0x0c, 0x00, 0x63, 0x0b, 0x08, 0xf1, 0xfb,
                0x09, 0xee, 0x77, 0x05, 0x00, 0x00,
            ],
            r#"{"c":"87:31:46.654321"}"#,
        ),
        (
            &[
                0x00, 0x01, 0x00, 0x14, 0x00, 0x0b, 0x00, 0x01, 0x00, 0x0f, 0x0c, 0x00, 0x64, 0xf6, 0x06, 0x06, 0x03,
                0x80, 0x7b, 0x01, 0xc8,
            ],
            r#"{"d":123.456}"#,
        ),
        (
            &[
                0x00, 0x01, 0x00, 0x15, 0x00, 0x0b, 0x00, 0x01, 0x00, 0x0f, 0x0c, 0x00, 0x65, 0xf6, 0x07, 0x0b, 0x02,
                0x80, 0x00, 0x00, 0x09, 0x00,
            ],
            r#"{"e":9.00}"#,
        ),
        (
            &[
                0x00, 0x01, 0x00, 0x1c, 0x00, 0x0b, 0x00, 0x01, 0x00, 0x02, 0x0c, 0x00, 0x65, 0x04, 0x00, 0x10, 0x00,
                0x05, 0x00, 0x00, 0x05, 0x01, 0x00, 0x04, 0x01, 0x00, 0x04, 0x02, 0x00,
            ],
            r#"{"e":[0,1,true,false]}"#,
        ),
        (
            &[
                0x00, 0x01, 0x00, 0x0c, 0x00, 0x0b, 0x00, 0x01, 0x00, 0x04, 0x00, 0x00, 0x65,
            ],
            r#"{"e":null}"#,
        ),
    ];

    #[test]
    fn mysql_9_opaque_values() {
        for (bytes, want) in FIXTURE_OPAQUE {
            assert_eq!(json(bytes), *want);
        }
    }

    fn packed_time(neg: bool, h: u64, m: u64, s: u64, us: u64) -> Vec<u8> {
        let v = ((((h << 12) | (m << 6) | s) << 24) | us) as i64;
        (if neg { -v } else { v }).to_le_bytes().to_vec()
    }

    fn packed_datetime(y: u64, mo: u64, d: u64, h: u64, mi: u64, s: u64, us: u64) -> Vec<u8> {
        let ymd = ((y * 13 + mo) << 5) | d;
        let hms = (h << 12) | (mi << 6) | s;
        ((((ymd << 17) | hms) << 24) | us).to_le_bytes().to_vec()
    }

    #[test]
    fn temporal_opaques() {
        let op = |ft, b: Vec<u8>| json(&enc(&T::Opaque(ft, b)));
        assert_eq!(op(FT_TIME, packed_time(true, 838, 59, 59, 0)), r#""-838:59:59.000000""#);
        assert_eq!(op(FT_TIME, packed_time(false, 1, 2, 3, 4)), r#""01:02:03.000004""#);
        assert_eq!(op(FT_TIME, packed_time(false, 0, 0, 0, 0)), r#""00:00:00.000000""#);
        let dt = packed_datetime(1999, 12, 31, 23, 59, 58, 999_999);
        assert_eq!(op(FT_DATETIME, dt.clone()), r#""1999-12-31 23:59:58.999999""#);
        assert_eq!(op(FT_TIMESTAMP, dt.clone()), r#""1999-12-31 23:59:58.999999""#);
        assert_eq!(op(FT_DATE, dt), r#""1999-12-31""#);
        assert_eq!(op(FT_DATE, vec![0; 8]), r#""0000-00-00""#);
        assert_eq!(
            op(FT_DATETIME, packed_datetime(5, 1, 2, 3, 4, 5, 60)),
            r#""0005-01-02 03:04:05.000060""#
        );
        // A temporal image is always 8 bytes.
        assert_eq!(
            text(&enc(&T::Opaque(FT_DATE, vec![0; 7]))),
            Err(JsonError::BadOpaque {
                offset: 3,
                field_type: FT_DATE
            })
        );
    }

    #[test]
    fn other_opaques_are_base64_like_mysql() {
        let op = |ft, b: Vec<u8>| json(&enc(&T::Opaque(ft, b)));
        assert_eq!(op(252, b"raw".to_vec()), r#""base64:type252:cmF3""#);
        assert_eq!(op(16, vec![]), r#""base64:type16:""#);
        // MySQL's encoder breaks the line after 76 characters (57 bytes).
        assert_eq!(op(252, vec![0; 57]), format!("\"base64:type252:{}\"", "A".repeat(76)));
        assert_eq!(
            op(252, vec![0; 60]),
            format!("\"base64:type252:{}\\n{}\"", "A".repeat(76), "A".repeat(4))
        );
        assert_eq!(
            op(252, vec![0; 120]),
            format!(
                "\"base64:type252:{}\\n{}\\n{}\"",
                "A".repeat(76),
                "A".repeat(76),
                "A".repeat(8)
            )
        );
        // A VAR_STRING opaque is shown as the string, as MySQL does...
        assert_eq!(op(FT_VAR_STRING, b"hi \"x\"".to_vec()), r#""hi \"x\"""#);
        // ...unless it is not text.
        assert_eq!(op(FT_VAR_STRING, vec![0xff]), r#""base64:type253:/w==""#);
    }

    #[test]
    fn decimal_opaque_needs_exact_size() {
        let mut b = vec![6, 3, 0x80, 0x7b, 0x01, 0xc8];
        assert_eq!(json(&enc(&T::Opaque(FT_NEWDECIMAL, b.clone()))), "123.456");
        b.push(0);
        assert_eq!(
            text(&enc(&T::Opaque(FT_NEWDECIMAL, b))),
            Err(JsonError::BadOpaque {
                offset: 3,
                field_type: FT_NEWDECIMAL
            })
        );
        assert_eq!(
            text(&enc(&T::Opaque(FT_NEWDECIMAL, vec![6]))),
            Err(JsonError::BadOpaque {
                offset: 3,
                field_type: FT_NEWDECIMAL
            })
        );
    }

    // --- Errors ---

    #[test]
    fn malformed_documents() {
        assert_eq!(
            text(&[0x0d]),
            Err(JsonError::BadType {
                offset: 0,
                type_byte: 0x0d
            })
        );
        assert_eq!(text(&[0x04, 0x03]), Err(JsonError::BadLiteral { offset: 1, byte: 3 }));
        assert_eq!(text(&[0x0c, 0x01, 0xff]), Err(JsonError::BadUtf8 { offset: 2 }));
        assert_eq!(
            text(&[0x0c, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01]),
            Err(JsonError::BadLength { offset: 1 })
        );
        assert_eq!(
            text(&[0x0c, 0xff, 0xff, 0xff, 0xff, 0x7f]),
            Err(JsonError::BadLength { offset: 1 })
        );
        assert_eq!(text(&[0x0c, 0x05, b'a']), Err(JsonError::Truncated { offset: 2 }));
        // Count 5 in a 4-byte container.
        assert!(matches!(
            text(&[0x02, 0x05, 0x00, 0x04, 0x00]),
            Err(JsonError::BadContainer { offset: 1, .. })
        ));
        // Size past the end.
        assert_eq!(
            text(&[0x02, 0x00, 0x00, 0x09, 0x00]),
            Err(JsonError::Truncated { offset: 1 })
        );
        // Value offset 2 points into the header; offset 7 is past the end.
        assert!(matches!(
            text(&[0x02, 0x01, 0x00, 0x07, 0x00, 0x0c, 0x02, 0x00]),
            Err(JsonError::BadContainer { offset: 6, .. })
        ));
        assert!(matches!(
            text(&[0x02, 0x01, 0x00, 0x07, 0x00, 0x0c, 0x07, 0x00]),
            Err(JsonError::BadContainer { offset: 6, .. })
        ));
        // Unknown type in an entry.
        assert_eq!(
            text(&[0x02, 0x01, 0x00, 0x08, 0x00, 0x0e, 0x07, 0x00, 0x00]),
            Err(JsonError::BadType {
                offset: 5,
                type_byte: 0x0e
            })
        );
        // Key running past its container, and a key that is not UTF-8.
        let mut obj = enc(&T::Obj(false, vec![("k", T::Lit(1))]));
        obj[7] = 9;
        assert!(matches!(text(&obj), Err(JsonError::BadContainer { offset: 5, .. })));
        obj[7] = 1;
        obj[12] = 0xc3;
        assert_eq!(text(&obj), Err(JsonError::BadUtf8 { offset: 12 }));
        let mut out = b"keep".to_vec();
        assert!(write_json(&obj, &mut out).is_err());
        assert_eq!(out, b"keep");
    }

    fn nested_arrays(levels: usize) -> Vec<u8> {
        let mut v = T::Arr(false, vec![]);
        for _ in 1..levels {
            v = T::Arr(false, vec![v]);
        }
        enc(&v)
    }

    #[test]
    fn depth_limit_is_mysqls() {
        let ok = json(&nested_arrays(100));
        assert_eq!(ok, format!("{}{}", "[".repeat(100), "]".repeat(100)));
        assert!(matches!(text(&nested_arrays(101)), Err(JsonError::TooDeep { .. })));
        assert!(matches!(
            with_diff(&nested_arrays(101), &[]),
            Err(JsonError::TooDeep { .. })
        ));
    }

    #[test]
    fn shared_values_cannot_blow_up() {
        // Each level is an array of 8 entries all pointing at one child:
        // 8^40 visits if followed naively.
        let mut doc = vec![0x00, 0x00, 0x04, 0x00];
        for _ in 0..40 {
            let k = 8;
            let header = 4 + 3 * k;
            let mut level = Vec::new();
            level.extend_from_slice(&(k as u16).to_le_bytes());
            level.extend_from_slice(&((header + doc.len()) as u16).to_le_bytes());
            for _ in 0..k {
                level.push(T_SMALL_ARRAY);
                level.extend_from_slice(&(header as u16).to_le_bytes());
            }
            level.extend_from_slice(&doc);
            doc = level;
        }
        let mut bytes = vec![T_SMALL_ARRAY];
        bytes.extend(doc);
        assert!(matches!(text(&bytes), Err(JsonError::BadContainer { .. })));
        assert!(matches!(with_diff(&bytes, &[]), Err(JsonError::BadContainer { .. })));
    }

    fn valid_docs() -> Vec<Vec<u8>> {
        let mut docs = vec![
            FIXTURE_JOE_24.to_vec(),
            enc(&all_types(false)),
            enc(&all_types(true)),
            enc(&T::F64(3.25)),
            enc(&T::Str("hello")),
            enc(&T::Opaque(
                FT_NEWDECIMAL,
                vec![14, 4, 0x81, 0x0d, 0xfb, 0x38, 0xd2, 0x04, 0xd2],
            )),
            vec![0x04, 0x01],
        ];
        docs.extend(FIXTURE_OPAQUE.iter().map(|(b, _)| b.to_vec()));
        docs
    }

    #[test]
    fn every_truncation_is_an_error() {
        for doc in valid_docs() {
            assert!(text(&doc).is_ok());
            for len in 1..doc.len() {
                assert!(text(&doc[..len]).is_err(), "prefix {len} of {doc:02x?} decoded");
                assert!(with_diff(&doc[..len], &[]).is_err());
            }
        }
    }

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let docs = valid_docs();
        let mut out = Vec::new();
        for round in 0..20_000 {
            let bytes: Vec<u8> = if round % 2 == 0 {
                let len = rng.below(64);
                let mut b: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                // Mostly valid type bytes, to get past the first check.
                if let Some(first) = b.first_mut() {
                    *first %= 16;
                }
                b
            } else {
                // A valid document with a few bytes changed.
                let mut b = docs[rng.below(docs.len())].clone();
                for _ in 0..1 + rng.below(3) {
                    let i = rng.below(b.len());
                    b[i] = rng.next() as u8;
                }
                b
            };
            out.clear();
            let _ = write_json(&bytes, &mut out);
            let _ =
                super::super::decimal::write_decimal(&bytes, rng.next() as u8 % 70, rng.next() as u8 % 35, &mut out);
            let _ = write_json_with_diff(FIXTURE_JOE_24, &bytes, &mut out);
            let _ = write_json_with_diff(&bytes, &diff_list(&[(OP_REMOVE, "$[0]", None)]), &mut out);
        }
    }

    // --- Partial updates ---

    fn diff_list(diffs: &[(u8, &str, Option<&[u8]>)]) -> Vec<u8> {
        let mut body = Vec::new();
        for (op, path, value) in diffs {
            body.push(*op);
            body.push(path.len() as u8);
            body.extend_from_slice(path.as_bytes());
            if let Some(v) = value {
                if v.len() < 251 {
                    body.push(v.len() as u8);
                } else {
                    body.push(252);
                    body.extend_from_slice(&(v.len() as u16).to_le_bytes());
                }
                body.extend_from_slice(v);
            }
        }
        let mut out = (body.len() as u32).to_le_bytes().to_vec();
        out.extend(body);
        out
    }

    #[test]
    fn mysql_8_partial_update() {
        let want = r#"{"age":26,"data":"xxxxxxxxxx","name":"Joe"}"#;
        assert_eq!(with_diff(FIXTURE_JOE_25, FIXTURE_DIFF_AGE_26).unwrap(), want);
        // The same diffs with the length prefix already stripped.
        assert_eq!(with_diff(FIXTURE_JOE_25, &FIXTURE_DIFF_AGE_26[4..]).unwrap(), want);
        assert_eq!(
            diff_list(&[(OP_REPLACE, "$.age", Some(&[0x05, 0x1a, 0x00]))]),
            FIXTURE_DIFF_AGE_26
        );
    }

    fn base() -> Vec<u8> {
        enc(&T::Obj(
            false,
            vec![
                ("a", T::I16(1)),
                ("b", T::Arr(false, vec![T::I16(1), T::I16(2), T::I16(3)])),
                ("b c", T::Lit(0)),
            ],
        ))
    }

    fn apply1(op: u8, path: &str, value: Option<&T>) -> Result<String, JsonError> {
        let v = value.map(enc);
        with_diff(&base(), &diff_list(&[(op, path, v.as_deref())]))
    }

    #[test]
    fn replace() {
        let x = T::Str("x");
        assert_eq!(
            apply1(OP_REPLACE, "$.b[1]", Some(&x)).unwrap(),
            r#"{"a":1,"b":[1,"x",3],"b c":null}"#
        );
        assert_eq!(
            apply1(OP_REPLACE, "$.b[last]", Some(&x)).unwrap(),
            r#"{"a":1,"b":[1,2,"x"],"b c":null}"#
        );
        assert_eq!(
            apply1(OP_REPLACE, "$.b[last-2]", Some(&x)).unwrap(),
            r#"{"a":1,"b":["x",2,3],"b c":null}"#
        );
        assert_eq!(
            apply1(OP_REPLACE, r#"$."b c""#, Some(&x)).unwrap(),
            r#"{"a":1,"b":[1,2,3],"b c":"x"}"#
        );
        assert_eq!(
            apply1(OP_REPLACE, r#" $ . "b\u0020c" "#, Some(&x)).unwrap(),
            r#"{"a":1,"b":[1,2,3],"b c":"x"}"#
        );
        let obj = T::Obj(false, vec![("z", T::Arr(true, vec![]))]);
        assert_eq!(
            apply1(OP_REPLACE, "$.a", Some(&obj)).unwrap(),
            r#"{"a":{"z":[]},"b":[1,2,3],"b c":null}"#
        );
        // Numbers keep their exact text through the tree.
        let d = T::Opaque(FT_NEWDECIMAL, vec![14, 4, 0x81, 0x0d, 0xfb, 0x38, 0xd2, 0x04, 0xd2]);
        assert_eq!(
            apply1(OP_REPLACE, "$.b[0]", Some(&d)).unwrap(),
            r#"{"a":1,"b":[1234567890.1234,2,3],"b c":null}"#
        );
        assert_eq!(
            apply1(OP_REPLACE, "$.a", Some(&T::U64(u64::MAX))).unwrap(),
            r#"{"a":18446744073709551615,"b":[1,2,3],"b c":null}"#
        );
    }

    #[test]
    fn insert() {
        let t = T::Lit(1);
        assert_eq!(
            apply1(OP_INSERT, "$.c", Some(&t)).unwrap(),
            r#"{"a":1,"b":[1,2,3],"c":true,"b c":null}"#
        );
        // Members go where MySQL's key order (length, then bytes) puts them.
        assert_eq!(
            apply1(OP_INSERT, "$.aa", Some(&t)).unwrap(),
            r#"{"a":1,"b":[1,2,3],"aa":true,"b c":null}"#
        );
        assert_eq!(
            apply1(OP_INSERT, "$.zzzz", Some(&t)).unwrap(),
            r#"{"a":1,"b":[1,2,3],"b c":null,"zzzz":true}"#
        );
        assert_eq!(
            apply1(OP_INSERT, "$.b[1]", Some(&t)).unwrap(),
            r#"{"a":1,"b":[1,true,2,3],"b c":null}"#
        );
        assert_eq!(
            apply1(OP_INSERT, "$.b[0]", Some(&t)).unwrap(),
            r#"{"a":1,"b":[true,1,2,3],"b c":null}"#
        );
        assert_eq!(
            apply1(OP_INSERT, "$.b[3]", Some(&t)).unwrap(),
            r#"{"a":1,"b":[1,2,3,true],"b c":null}"#
        );
        assert_eq!(
            apply1(OP_INSERT, "$.b[99]", Some(&t)).unwrap(),
            r#"{"a":1,"b":[1,2,3,true],"b c":null}"#
        );
        assert_eq!(
            apply1(OP_INSERT, "$.b[last]", Some(&t)).unwrap(),
            r#"{"a":1,"b":[1,2,true,3],"b c":null}"#
        );
        assert_eq!(
            apply1(OP_INSERT, "$.b[last-9]", Some(&t)).unwrap(),
            r#"{"a":1,"b":[true,1,2,3],"b c":null}"#
        );
    }

    #[test]
    fn remove() {
        assert_eq!(
            apply1(OP_REMOVE, "$.b[0]", None).unwrap(),
            r#"{"a":1,"b":[2,3],"b c":null}"#
        );
        assert_eq!(
            apply1(OP_REMOVE, "$.b[last]", None).unwrap(),
            r#"{"a":1,"b":[1,2],"b c":null}"#
        );
        assert_eq!(apply1(OP_REMOVE, "$.a", None).unwrap(), r#"{"b":[1,2,3],"b c":null}"#);
        assert_eq!(
            apply1(OP_REMOVE, r#"$."a""#, None).unwrap(),
            r#"{"b":[1,2,3],"b c":null}"#
        );
    }

    #[test]
    fn diffs_apply_in_order() {
        let one = enc(&T::I16(1));
        let arr = enc(&T::Arr(false, vec![]));
        let diff = diff_list(&[
            (OP_REMOVE, "$.a", None),
            (OP_INSERT, "$.a", Some(&arr)),
            (OP_INSERT, "$.a[0]", Some(&one)),
            (OP_REPLACE, "$.b", Some(&one)),
            (OP_REMOVE, r#"$."b c""#, None),
        ]);
        assert_eq!(with_diff(&base(), &diff).unwrap(), r#"{"a":[1],"b":1}"#);
        // No diffs: the document as it was.
        assert_eq!(
            with_diff(&base(), &[0, 0, 0, 0]).unwrap(),
            r#"{"a":1,"b":[1,2,3],"b c":null}"#
        );
        assert_eq!(with_diff(&base(), &[]).unwrap(), r#"{"a":1,"b":[1,2,3],"b c":null}"#);
    }

    #[test]
    fn diffs_that_do_not_apply() {
        let t = T::Lit(1);
        assert_eq!(
            apply1(OP_REPLACE, "$.zz", Some(&t)),
            Err(JsonError::PathNotFound { offset: 4 })
        );
        assert_eq!(
            apply1(OP_REPLACE, "$.b[3]", Some(&t)),
            Err(JsonError::PathNotFound { offset: 4 })
        );
        assert_eq!(
            apply1(OP_REPLACE, "$.a.x", Some(&t)),
            Err(JsonError::PathNotFound { offset: 4 })
        );
        assert_eq!(
            apply1(OP_REPLACE, "$[0]", Some(&t)),
            Err(JsonError::PathNotFound { offset: 4 })
        );
        assert!(matches!(
            apply1(OP_REPLACE, "$", Some(&t)),
            Err(JsonError::BadDiff { offset: 4, .. })
        ));
        assert!(matches!(
            apply1(OP_INSERT, "$.a", Some(&t)),
            Err(JsonError::BadDiff { offset: 4, .. })
        ));
        assert_eq!(
            apply1(OP_INSERT, "$.x.y", Some(&t)),
            Err(JsonError::PathNotFound { offset: 4 })
        );
        assert_eq!(
            apply1(OP_INSERT, "$.b.y", Some(&t)),
            Err(JsonError::PathNotFound { offset: 4 })
        );
        assert_eq!(
            apply1(OP_REMOVE, "$.b[3]", None),
            Err(JsonError::PathNotFound { offset: 4 })
        );
        assert_eq!(
            apply1(OP_REMOVE, "$.nope", None),
            Err(JsonError::PathNotFound { offset: 4 })
        );
        assert_eq!(
            apply1(OP_REMOVE, "$.b.x", None),
            Err(JsonError::PathNotFound { offset: 4 })
        );
        // Nothing to apply diffs to but a null.
        assert_eq!(
            with_diff(&[], &diff_list(&[(OP_REMOVE, "$.a", None)])),
            Err(JsonError::PathNotFound { offset: 4 })
        );
    }

    #[test]
    fn malformed_diffs() {
        for path in [
            "a",
            "$.",
            "$[",
            "$[x]",
            "$[1",
            "$[*]",
            "$.*",
            "$**.a",
            "$[1 to 2]",
            r#"$."a"#,
            r#"$."\x""#,
            "$.a]",
        ] {
            assert!(
                matches!(apply1(OP_REMOVE, path, None), Err(JsonError::BadPath { .. })),
                "{path} parsed"
            );
        }
        assert_eq!(
            with_diff(&base(), &[1, 0, 0, 0, 3]),
            Err(JsonError::BadDiff {
                offset: 4,
                reason: "unknown operation"
            })
        );
        // A 251 (NULL) path length.
        assert!(matches!(
            with_diff(&base(), &[2, 0, 0, 0, 2, 251]),
            Err(JsonError::BadDiff { offset: 5, .. })
        ));
        // An empty value, and a malformed value.
        let diff = diff_list(&[(OP_REPLACE, "$.a", Some(&[]))]);
        assert!(matches!(
            with_diff(&base(), &diff),
            Err(JsonError::BadDiff { offset: 10, .. })
        ));
        let diff = diff_list(&[(OP_REPLACE, "$.a", Some(&[0x0d]))]);
        assert_eq!(
            with_diff(&base(), &diff),
            Err(JsonError::DiffValue {
                offset: 10,
                inner: Box::new(JsonError::BadType {
                    offset: 0,
                    type_byte: 0x0d
                })
            })
        );
        let mut out = b"keep".to_vec();
        assert!(write_json_with_diff(&base(), &diff, &mut out).is_err());
        assert_eq!(out, b"keep");
    }

    #[test]
    fn every_truncated_diff_is_an_error() {
        let diff = diff_list(&[
            (OP_REPLACE, "$.b[1]", Some(&enc(&T::Str("x")))),
            (OP_INSERT, r#"$."q r""#, Some(&enc(&all_types(false)))),
            (OP_REMOVE, "$.a", None),
        ]);
        assert!(with_diff(&base(), &diff).is_ok());
        for len in 1..diff.len() {
            assert!(with_diff(&base(), &diff[..len]).is_err(), "prefix {len} applied");
        }
    }

    #[test]
    fn long_values_use_longer_length_encoding() {
        let s: &'static str = Box::leak("y".repeat(300).into_boxed_str());
        let diff = diff_list(&[(OP_REPLACE, "$.a", Some(&enc(&T::Str(s))))]);
        assert_eq!(diff[4 + 1 + 1 + 3], 252);
        assert_eq!(
            with_diff(&base(), &diff).unwrap(),
            format!(r#"{{"a":"{s}","b":[1,2,3],"b c":null}}"#)
        );
    }

    #[test]
    fn diffs_cannot_nest_past_the_limit() {
        // base() is 2 deep at $.b[0]; a 98-deep value there makes 100.
        let deep = |n| nested_arrays(n);
        assert!(with_diff(&base(), &diff_list(&[(OP_REPLACE, "$.b[0]", Some(&deep(98)))])).is_ok());
        assert_eq!(
            with_diff(&base(), &diff_list(&[(OP_REPLACE, "$.b[0]", Some(&deep(99)))])),
            Err(JsonError::TooDeep { offset: 4 })
        );
        assert_eq!(
            with_diff(&base(), &diff_list(&[(OP_INSERT, "$.b[0]", Some(&deep(99)))])),
            Err(JsonError::TooDeep { offset: 4 })
        );
    }
}
