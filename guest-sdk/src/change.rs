//! Reading a row change from its encoding, lazily.
//!
//! [`Change::parse`] checks the header and the index (the column directory
//! and the value entries of each image), which is O(columns) and touches no
//! value data. Reading a column then decodes that one value: a number from
//! its entry, or text and bytes borrowed from the buffer, checked for UTF-8
//! when read. Nothing is copied or allocated.
//!
//! The format is specified in the host crate's `rowhook::guest_abi` and in
//! `wit/handler.wit`.

use core::fmt;

use crate::error::{Error, FormatError, Result};

/// The version of the row change encoding this SDK reads.
pub const VERSION: u8 = 1;
const MAGIC: [u8; 4] = [b'R', b'H', b'C', VERSION];
const HEADER_LEN: usize = 72;
const COLUMN_ENTRY_LEN: usize = 8;
const VALUE_ENTRY_LEN: usize = 9;

const FLAG_BEFORE: u8 = 1;
const FLAG_AFTER: u8 = 2;
const FLAG_GTID: u8 = 4;
const FLAG_NAMES: u8 = 8;

mod tag {
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

/// What a row change does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// INSERT: an after image only.
    Insert,
    /// UPDATE: before and after images.
    Update,
    /// DELETE: a before image only.
    Delete,
}

impl Op {
    /// The name in the row change JSON: `insert`, `update`, `delete`.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Insert => "insert",
            Op::Update => "update",
            Op::Delete => "delete",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One of a change's two row images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Image {
    /// The row before the change (update, delete).
    Before,
    /// The row after the change (insert, update).
    After,
}

impl fmt::Display for Image {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Image::Before => "before",
            Image::After => "after",
        })
    }
}

/// One column value, borrowed from the change buffer.
///
/// The variants follow the row change JSON (DESIGN.md): where it shows text
/// (DECIMAL, temporal types, ENUM, SET), this holds the same text; where it
/// shows base64, this holds the raw bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Value<'a> {
    /// SQL NULL.
    Null,
    /// A signed integer column (TINYINT … BIGINT).
    Int(i64),
    /// An UNSIGNED integer column, YEAR (`0` for YEAR 0000), or an ENUM
    /// index / SET bits whose labels the binlog did not carry.
    UInt(u64),
    /// FLOAT.
    Float(f32),
    /// DOUBLE.
    Double(f64),
    /// DECIMAL: exact digits with the column's scale, e.g. `"-10.55"`.
    Decimal(&'a str),
    /// CHAR, VARCHAR, TEXT (decoded from the column's charset).
    String(&'a str),
    /// BINARY (zero-padded to its length), VARBINARY, BLOB, GEOMETRY (SRID
    /// + WKB), and text in a charset rowhook cannot decode.
    Bytes(&'a [u8]),
    /// DATE, `YYYY-MM-DD` (`0000-00-00` kept).
    Date(&'a str),
    /// DATETIME, `YYYY-MM-DD HH:MM:SS[.f…]`.
    DateTime(&'a str),
    /// TIMESTAMP in UTC, `YYYY-MM-DDTHH:MM:SS[.f…]Z`.
    Timestamp(&'a str),
    /// TIME, `[-]HH:MM:SS[.f…]` (hours may exceed 24).
    Time(&'a str),
    /// JSON, as JSON text.
    Json(&'a str),
    /// ENUM label (`""` for the invalid-value index 0).
    Enum(&'a str),
    /// SET labels in definition order, joined with `,`.
    Set(&'a str),
    /// BIT(n).
    Bit(u64),
    /// MySQL 9 VECTOR: little-endian `f32`s ([`Value::vector`] reads them).
    Vector(&'a [u8]),
}

impl<'a> Value<'a> {
    /// A short name of the variant, for messages: `"null"`, `"int"`, ...
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Int(_) => "int",
            Value::UInt(_) => "uint",
            Value::Float(_) => "float",
            Value::Double(_) => "double",
            Value::Decimal(_) => "decimal",
            Value::String(_) => "string",
            Value::Bytes(_) => "bytes",
            Value::Date(_) => "date",
            Value::DateTime(_) => "datetime",
            Value::Timestamp(_) => "timestamp",
            Value::Time(_) => "time",
            Value::Json(_) => "json",
            Value::Enum(_) => "enum",
            Value::Set(_) => "set",
            Value::Bit(_) => "bit",
            Value::Vector(_) => "vector",
        }
    }

    /// Whether it is SQL NULL.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The text of every variant that has text (what the JSON shows as a
    /// string, and JSON text).
    pub fn as_text(&self) -> Option<&'a str> {
        match *self {
            Value::Decimal(s)
            | Value::String(s)
            | Value::Date(s)
            | Value::DateTime(s)
            | Value::Timestamp(s)
            | Value::Time(s)
            | Value::Json(s)
            | Value::Enum(s)
            | Value::Set(s) => Some(s),
            _ => None,
        }
    }

    /// The elements of a VECTOR value.
    pub fn vector(&self) -> Option<impl ExactSizeIterator<Item = f32> + 'a> {
        match *self {
            Value::Vector(b) => Some(b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))),
            _ => None,
        }
    }
}

/// A column of the changed table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column<'a> {
    /// Its name, or `@1`, `@2`, … where the binlog has no names.
    pub name: &'a str,
    /// The MySQL type code from the binlog's TABLE_MAP (`3` INT, `15`
    /// VARCHAR, `246` DECIMAL, `252` BLOB/TEXT, `254` CHAR/ENUM/SET, ...).
    pub type_code: u8,
    /// Whether it is part of the primary key.
    pub primary_key: bool,
    /// Whether it allows NULL.
    pub nullable: bool,
}

/// One row change, read in place from its encoding.
///
/// `Change` borrows the buffer and is `Copy`; its accessors decode only what
/// they are asked for. [`Change::get`] reads a column from the after image,
/// or from the before image of a delete: the row as it is now, or as it was
/// when it went away.
#[derive(Clone, Copy)]
pub struct Change<'a> {
    buf: &'a [u8],
    op: Op,
    ncols: usize,
    before: Option<usize>,
    after: Option<usize>,
    id: &'a str,
    gtid: Option<&'a str>,
    file: &'a str,
    db: &'a str,
    table: &'a str,
}

impl fmt::Debug for Change<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Change")
            .field("id", &self.id)
            .field("op", &self.op)
            .field("db", &self.db)
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// The bytes of the span at `at`.
fn span(b: &[u8], at: usize) -> core::result::Result<&[u8], FormatError> {
    let off = u32_at(b, at) as usize;
    let len = u32_at(b, at + 4) as usize;
    off.checked_add(len)
        .and_then(|end| b.get(off..end))
        .ok_or(FormatError::Span)
}

fn text(b: &[u8]) -> core::result::Result<&str, FormatError> {
    core::str::from_utf8(b).map_err(|_| FormatError::Utf8)
}

impl<'a> Change<'a> {
    /// Reads the header and index of an encoded change.
    ///
    /// Checks the magic and version, the header's texts, and that the
    /// column directory and value entries fit the buffer. Column names,
    /// tags and values are checked when read, so a handler pays only for
    /// the columns it touches.
    pub fn parse(buf: &'a [u8]) -> core::result::Result<Self, FormatError> {
        let header = buf.get(..HEADER_LEN).ok_or(FormatError::Truncated)?;
        let magic = [header[0], header[1], header[2], header[3]];
        if magic != MAGIC {
            return Err(FormatError::Magic(magic));
        }
        let op = match header[4] {
            1 => Op::Insert,
            2 => Op::Update,
            3 => Op::Delete,
            other => return Err(FormatError::Op(other)),
        };
        let flags = header[5];
        let ncols = usize::from(u16_at(header, 6));
        let mut at = HEADER_LEN + ncols * COLUMN_ENTRY_LEN;
        let before = (flags & FLAG_BEFORE != 0).then(|| {
            let b = at;
            at += ncols * VALUE_ENTRY_LEN;
            b
        });
        let after = (flags & FLAG_AFTER != 0).then(|| {
            let a = at;
            at += ncols * VALUE_ENTRY_LEN;
            a
        });
        if buf.len() < at {
            return Err(FormatError::Truncated);
        }
        let gtid = if flags & FLAG_GTID != 0 {
            Some(text(span(buf, 40)?)?)
        } else {
            None
        };
        let change = Change {
            buf,
            op,
            ncols,
            before,
            after,
            id: text(span(buf, 32)?)?,
            gtid,
            file: text(span(buf, 48)?)?,
            db: text(span(buf, 56)?)?,
            table: text(span(buf, 64)?)?,
        };
        if change.txn_len() > change.id.len() || !change.id.is_char_boundary(change.txn_len()) {
            return Err(FormatError::Span);
        }
        Ok(change)
    }

    /// The encoded bytes this change reads from.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }

    /// Insert, update or delete.
    pub fn op(&self) -> Op {
        self.op
    }

    /// The schema (database) name.
    pub fn db(&self) -> &'a str {
        self.db
    }

    /// The table name.
    pub fn table(&self) -> &'a str {
        self.table
    }

    /// The change's stable id, `<txn>:<event>:<row>`: the same every time
    /// the same binlog is replayed, so a sink can deduplicate on it.
    pub fn id(&self) -> &'a str {
        self.id
    }

    /// The transaction part of the id: its GTID, or `<file>/<pos>` of its
    /// first event where there is none.
    pub fn txn(&self) -> &'a str {
        &self.id[..self.txn_len()]
    }

    fn txn_len(&self) -> usize {
        u32_at(self.buf, 20) as usize
    }

    /// Index of the rows event within the transaction, from 0.
    pub fn event_index(&self) -> u32 {
        u32_at(self.buf, 12)
    }

    /// Index of the row within its rows event, from 0.
    pub fn row_index(&self) -> u32 {
        u32_at(self.buf, 16)
    }

    /// The transaction's GTID, where the server wrote one.
    pub fn gtid(&self) -> Option<&'a str> {
        self.gtid
    }

    /// The binlog file of the rows event.
    pub fn file(&self) -> &'a str {
        self.file
    }

    /// Offset of the rows event in its binlog file.
    pub fn pos(&self) -> u64 {
        u64_at(self.buf, 24)
    }

    /// The rows event's header timestamp, seconds since the epoch.
    pub fn ts(&self) -> u32 {
        u32_at(self.buf, 8)
    }

    /// Whether column names come from the binlog; if not, they are `@1`,
    /// `@2`, … by position (a server with `binlog_row_metadata=MINIMAL`).
    pub fn has_column_names(&self) -> bool {
        self.buf[5] & FLAG_NAMES != 0
    }

    /// The number of columns of the table.
    pub fn column_count(&self) -> usize {
        self.ncols
    }

    /// The columns of the table, in table order.
    pub fn columns(&self) -> impl ExactSizeIterator<Item = Column<'a>> + 'a {
        let this = *self;
        (0..self.ncols).map(move |i| this.column(i).expect("index in range"))
    }

    /// The `i`th column (from 0), if there is one.
    pub fn column(&self, i: usize) -> Option<Column<'a>> {
        if i >= self.ncols {
            return None;
        }
        let e = HEADER_LEN + i * COLUMN_ENTRY_LEN;
        let flags = self.buf[e + 7];
        Some(Column {
            // A name out of bounds or not UTF-8 shows as empty rather than
            // failing an iteration.
            name: text(self.name_bytes(i)).unwrap_or(""),
            type_code: self.buf[e + 6],
            primary_key: flags & 1 != 0,
            nullable: flags & 2 != 0,
        })
    }

    fn name_bytes(&self, i: usize) -> &'a [u8] {
        let e = HEADER_LEN + i * COLUMN_ENTRY_LEN;
        let off = u32_at(self.buf, e) as usize;
        let len = usize::from(u16_at(self.buf, e + 4));
        self.buf.get(off..off.saturating_add(len)).unwrap_or(&[])
    }

    /// The position of the column `name`, if the table has it.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        (0..self.ncols).find(|&i| self.name_bytes(i) == name.as_bytes())
    }

    /// The after image (insert, update).
    pub fn after_image(&self) -> Option<Row<'a>> {
        self.after.map(|at| Row {
            change: *self,
            image: Image::After,
            at,
        })
    }

    /// The before image (update, delete).
    pub fn before_image(&self) -> Option<Row<'a>> {
        self.before.map(|at| Row {
            change: *self,
            image: Image::Before,
            at,
        })
    }

    /// The image [`Change::get`] reads: after, or before for a delete.
    pub fn row(&self) -> Row<'a> {
        self.after_image().or_else(|| self.before_image()).unwrap_or(Row {
            change: *self,
            image: Image::After,
            at: usize::MAX,
        })
    }

    /// The image `image`, or [`Error::NoImage`].
    pub fn image(&self, image: Image) -> Result<Row<'a>> {
        match image {
            Image::Before => self.before_image(),
            Image::After => self.after_image(),
        }
        .ok_or(Error::NoImage { image })
    }

    /// Column `name` as `T`, from the after image, or the before image of a
    /// delete. `T` is any [`FromValue`] type; `Option<T>` reads NULL as `None`.
    ///
    /// ```
    /// # fn f(change: &rowhook_guest::Change) -> rowhook_guest::Result<()> {
    /// let id: i64 = change.get("id")?;
    /// let email: Option<&str> = change.get("email")?;
    /// # Ok(()) }
    /// ```
    pub fn get<T: FromValue<'a>>(&self, name: &str) -> Result<T> {
        self.row().get(name)
    }

    /// Column `name` as `T` from the after image ([`Error::NoImage`] for a delete).
    pub fn after<T: FromValue<'a>>(&self, name: &str) -> Result<T> {
        self.image(Image::After)?.get(name)
    }

    /// Column `name` as `T` from the before image ([`Error::NoImage`] for an insert).
    pub fn before<T: FromValue<'a>>(&self, name: &str) -> Result<T> {
        self.image(Image::Before)?.get(name)
    }

    /// Whether an update changed column `name`: its before and after values
    /// differ. False for inserts and deletes, and where either image lacks
    /// the column (MINIMAL row image).
    pub fn changed(&self, name: &str) -> Result<bool> {
        let (Some(before), Some(after)) = (self.before_image(), self.after_image()) else {
            return Ok(false);
        };
        let i = self
            .column_index(name)
            .ok_or_else(|| Error::NoColumn { column: name.into() })?;
        let (Some(b), Some(a)) = (before.value_at(i)?, after.value_at(i)?) else {
            return Ok(false);
        };
        // Bitwise for floats: an unchanged NaN is not a change.
        Ok(match (b, a) {
            (Value::Float(x), Value::Float(y)) => x.to_bits() != y.to_bits(),
            (Value::Double(x), Value::Double(y)) => x.to_bits() != y.to_bits(),
            _ => b != a,
        })
    }
}

/// One image of a change: the row before or after it.
#[derive(Clone, Copy)]
pub struct Row<'a> {
    change: Change<'a>,
    image: Image,
    /// Offset of the value entries; `usize::MAX` for a change with neither
    /// image (which the host never sends).
    at: usize,
}

impl fmt::Debug for Row<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Row")
            .field("change", &self.change.id)
            .field("image", &self.image)
            .finish_non_exhaustive()
    }
}

impl<'a> Row<'a> {
    /// Which image this is.
    pub fn image(&self) -> Image {
        self.image
    }

    /// Column `name` as `T`. `Option<T>` reads NULL as `None`.
    pub fn get<T: FromValue<'a>>(&self, name: &str) -> Result<T> {
        let value = self.value(name)?;
        T::from_value(value).ok_or_else(|| Error::WrongType {
            column: name.into(),
            expected: T::EXPECTED,
            found: value.kind(),
        })
    }

    /// Column `name`'s value; [`Error::NotInImage`] where the image lacks it.
    pub fn value(&self, name: &str) -> Result<Value<'a>> {
        let i = self
            .change
            .column_index(name)
            .ok_or_else(|| Error::NoColumn { column: name.into() })?;
        self.value_at(i)?.ok_or_else(|| Error::NotInImage {
            column: name.into(),
            image: self.image,
        })
    }

    /// The value of the `i`th column (from 0); `None` where the image lacks
    /// it (MINIMAL row image) or there is no such column.
    pub fn value_at(&self, i: usize) -> Result<Option<Value<'a>>> {
        if i >= self.change.ncols || self.at == usize::MAX {
            return Ok(None);
        }
        let b = self.change.buf;
        let e = self.at + i * VALUE_ENTRY_LEN;
        let t = b[e];
        let p = e + 1;
        let txt = || -> Result<&'a str> { Ok(text(span(b, p)?)?) };
        Ok(Some(match t {
            tag::ABSENT => return Ok(None),
            tag::NULL => Value::Null,
            tag::INT => Value::Int(u64_at(b, p) as i64),
            tag::UINT => Value::UInt(u64_at(b, p)),
            // Widened from an f32 by the host, so narrowing is exact.
            tag::FLOAT => Value::Float(f64::from_bits(u64_at(b, p)) as f32),
            tag::DOUBLE => Value::Double(f64::from_bits(u64_at(b, p))),
            tag::BIT => Value::Bit(u64_at(b, p)),
            tag::DECIMAL => Value::Decimal(txt()?),
            tag::STRING => Value::String(txt()?),
            tag::BYTES => Value::Bytes(span(b, p)?),
            tag::DATE => Value::Date(txt()?),
            tag::DATETIME => Value::DateTime(txt()?),
            tag::TIMESTAMP => Value::Timestamp(txt()?),
            tag::TIME => Value::Time(txt()?),
            tag::JSON => Value::Json(txt()?),
            tag::ENUM => Value::Enum(txt()?),
            tag::SET => Value::Set(txt()?),
            tag::VECTOR => Value::Vector(span(b, p)?),
            other => return Err(FormatError::Tag(other).into()),
        }))
    }

    /// The columns present in this image, with their values, in table order.
    pub fn iter(&self) -> impl Iterator<Item = Result<(Column<'a>, Value<'a>)>> + 'a {
        let row = *self;
        (0..row.change.ncols).filter_map(move |i| match row.value_at(i) {
            Ok(Some(v)) => Some(Ok((row.change.column(i).expect("index in range"), v))),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        })
    }
}

impl From<FormatError> for Error {
    fn from(e: FormatError) -> Self {
        Error::Format(e)
    }
}

/// A Rust type a column value can be read as.
///
/// | type | reads |
/// |---|---|
/// | `i64`, `i32`, `i16`, `i8`, `u64`, `u32`, `u16`, `u8` | integers, YEAR, BIT, in range |
/// | `f64` | FLOAT, DOUBLE, integers (as `as f64`), DECIMAL text (nearest `f64`) |
/// | `f32` | FLOAT |
/// | `bool` | integers and BIT: not 0 |
/// | `&str`, `String` | every text variant (string, decimal, dates, times, JSON, ENUM, SET), and bytes that are UTF-8 |
/// | `&[u8]`, `Vec<u8>` | bytes and vectors, and the UTF-8 of every text variant |
/// | [`Value`] | anything but NULL |
/// | `Option<T>` | NULL as `None`, else as `T` |
/// | `serde_json::Value` (feature `json`) | anything, as in the row change JSON |
pub trait FromValue<'a>: Sized {
    /// The type's name in [`Error::WrongType`].
    const EXPECTED: &'static str;

    /// `value` as `Self`, or `None` if it is of another kind or out of range.
    fn from_value(value: Value<'a>) -> Option<Self>;
}

macro_rules! int_from_value {
    ($($t:ty),*) => {$(
        impl FromValue<'_> for $t {
            const EXPECTED: &'static str = stringify!($t);

            fn from_value(value: Value<'_>) -> Option<Self> {
                match value {
                    Value::Int(i) => <$t>::try_from(i).ok(),
                    Value::UInt(u) | Value::Bit(u) => <$t>::try_from(u).ok(),
                    _ => None,
                }
            }
        }
    )*};
}

int_from_value!(i64, i32, i16, i8, u64, u32, u16, u8);

impl FromValue<'_> for f64 {
    const EXPECTED: &'static str = "f64";

    fn from_value(value: Value<'_>) -> Option<Self> {
        match value {
            Value::Double(d) => Some(d),
            Value::Float(f) => Some(f64::from(f)),
            Value::Int(i) => Some(i as f64),
            Value::UInt(u) => Some(u as f64),
            Value::Decimal(s) => s.parse().ok(),
            _ => None,
        }
    }
}

impl FromValue<'_> for f32 {
    const EXPECTED: &'static str = "f32";

    fn from_value(value: Value<'_>) -> Option<Self> {
        match value {
            Value::Float(f) => Some(f),
            _ => None,
        }
    }
}

impl FromValue<'_> for bool {
    const EXPECTED: &'static str = "bool";

    fn from_value(value: Value<'_>) -> Option<Self> {
        match value {
            Value::Int(i) => Some(i != 0),
            Value::UInt(u) | Value::Bit(u) => Some(u != 0),
            _ => None,
        }
    }
}

impl<'a> FromValue<'a> for &'a str {
    const EXPECTED: &'static str = "&str";

    fn from_value(value: Value<'a>) -> Option<Self> {
        match value {
            Value::Bytes(b) => core::str::from_utf8(b).ok(),
            v => v.as_text(),
        }
    }
}

impl FromValue<'_> for String {
    const EXPECTED: &'static str = "String";

    fn from_value(value: Value<'_>) -> Option<Self> {
        <&str>::from_value(value).map(String::from)
    }
}

impl<'a> FromValue<'a> for &'a [u8] {
    const EXPECTED: &'static str = "&[u8]";

    fn from_value(value: Value<'a>) -> Option<Self> {
        match value {
            Value::Bytes(b) | Value::Vector(b) => Some(b),
            v => v.as_text().map(str::as_bytes),
        }
    }
}

impl FromValue<'_> for Vec<u8> {
    const EXPECTED: &'static str = "Vec<u8>";

    fn from_value(value: Value<'_>) -> Option<Self> {
        <&[u8]>::from_value(value).map(<[u8]>::to_vec)
    }
}

impl<'a> FromValue<'a> for Value<'a> {
    const EXPECTED: &'static str = "a value";

    fn from_value(value: Value<'a>) -> Option<Self> {
        (!value.is_null()).then_some(value)
    }
}

impl<'a, T: FromValue<'a>> FromValue<'a> for Option<T> {
    const EXPECTED: &'static str = T::EXPECTED;

    fn from_value(value: Value<'a>) -> Option<Self> {
        match value {
            Value::Null => Some(None),
            v => T::from_value(v).map(Some),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::ChangeBuilder;

    fn update() -> Vec<u8> {
        ChangeBuilder::update("shop", "orders")
            .gtid("0-1-42")
            .index(2, 5)
            .at("mysql-bin.000003", 1234)
            .ts(1_763_712_000)
            .primary_key("id")
            .column("id", Value::Int(7))
            .before("status", Value::Enum("new"))
            .column("status", Value::Enum("paid"))
            .column("amount", Value::Decimal("12.50"))
            .column("note", Value::Null)
            .build()
    }

    #[test]
    fn reads_header_and_columns() {
        let buf = update();
        let c = Change::parse(&buf).unwrap();
        assert_eq!((c.op(), c.db(), c.table()), (Op::Update, "shop", "orders"));
        assert_eq!((c.id(), c.txn(), c.gtid()), ("0-1-42:2:5", "0-1-42", Some("0-1-42")));
        assert_eq!((c.event_index(), c.row_index()), (2, 5));
        assert_eq!((c.file(), c.pos(), c.ts()), ("mysql-bin.000003", 1234, 1_763_712_000));
        let names: Vec<_> = c.columns().map(|col| (col.name, col.primary_key)).collect();
        assert_eq!(
            names,
            [("id", true), ("status", false), ("amount", false), ("note", false)]
        );
        assert_eq!(c.get::<i64>("id").unwrap(), 7);
        assert_eq!(c.get::<u8>("id").unwrap(), 7);
        assert_eq!(c.before::<&str>("status").unwrap(), "new");
        assert_eq!(c.after::<&str>("status").unwrap(), "paid");
        assert_eq!(c.get::<f64>("amount").unwrap(), 12.5);
        assert_eq!(c.get::<Option<&str>>("note").unwrap(), None);
        assert!(c.changed("status").unwrap());
        assert!(!c.changed("id").unwrap());
    }

    #[test]
    fn typed_errors() {
        let buf = update();
        let c = Change::parse(&buf).unwrap();
        assert_eq!(c.get::<i64>("nope"), Err(Error::NoColumn { column: "nope".into() }));
        assert_eq!(
            c.get::<i64>("status"),
            Err(Error::WrongType {
                column: "status".into(),
                expected: "i64",
                found: "enum"
            })
        );
        assert!(matches!(
            c.get::<&str>("note"),
            Err(Error::WrongType { found: "null", .. })
        ));
        let insert = ChangeBuilder::insert("d", "t").column("id", Value::Int(-1)).build();
        let c = Change::parse(&insert).unwrap();
        assert_eq!(c.before::<i64>("id"), Err(Error::NoImage { image: Image::Before }));
        assert!(matches!(c.get::<u64>("id"), Err(Error::WrongType { .. })));
        assert_eq!(
            c.get::<u64>("id").unwrap_err().to_string(),
            "column `id` holds int, not u64"
        );
    }

    #[test]
    fn absent_columns_are_not_null() {
        let mut buf = update();
        // Clear the after entry of `note` (column 3): a MINIMAL row image.
        let after = HEADER_LEN + 4 * COLUMN_ENTRY_LEN + 4 * VALUE_ENTRY_LEN;
        buf[after + 3 * VALUE_ENTRY_LEN] = tag::ABSENT;
        let c = Change::parse(&buf).unwrap();
        assert_eq!(
            c.get::<Option<i64>>("note"),
            Err(Error::NotInImage {
                column: "note".into(),
                image: Image::After
            })
        );
        assert_eq!(c.after_image().unwrap().iter().count(), 3);
        assert!(!c.changed("note").unwrap());
    }

    #[test]
    fn rejects_malformed_buffers() {
        let buf = update();
        assert_eq!(Change::parse(&buf[..40]).unwrap_err(), FormatError::Truncated);
        assert_eq!(
            Change::parse(&buf[..HEADER_LEN + 8]).unwrap_err(),
            FormatError::Truncated
        );
        let mut v2 = buf.clone();
        v2[3] = 2;
        assert_eq!(Change::parse(&v2).unwrap_err(), FormatError::Magic(*b"RHC\x02"));
        let mut bad = buf.clone();
        bad[4] = 9;
        assert_eq!(Change::parse(&bad).unwrap_err(), FormatError::Op(9));
        // Tags and spans of values are checked when read.
        let mut bad = buf.clone();
        bad[HEADER_LEN + 4 * COLUMN_ENTRY_LEN] = 99;
        let c = Change::parse(&bad).unwrap();
        assert_eq!(
            c.before_image().unwrap().value_at(0).unwrap_err(),
            Error::Format(FormatError::Tag(99))
        );
        let mut bad = buf.clone();
        bad[60..64].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(Change::parse(&bad).unwrap_err(), FormatError::Span);
        // Every truncation fails cleanly (no panic).
        for n in 0..buf.len() {
            let _ = Change::parse(&buf[..n]).map(|c| c.to_json());
        }
    }
}
