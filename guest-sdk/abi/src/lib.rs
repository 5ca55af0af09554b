//! The row change encoding: the bytes a rowhook handler's `on-change`
//! export receives for one row change.
//!
//! This crate is the one Rust statement of the format that `SPEC.md` (beside
//! this crate's `Cargo.toml`) specifies for every language. rowhook writes
//! changes with [`write`](mod@write); the Rust SDK, `rowhook-guest`, reads them with
//! [`Change`]. Both depend on this crate, so they cannot drift apart, and
//! the test vectors in `vectors/` hold each of them to the same bytes.
//!
//! `no_std` (the writer needs `alloc`): the reader runs inside every
//! handler call, in a WebAssembly guest.
//!
//! ```
//! use rowhook_abi::write::{ChangeWriter, ColumnDirectory, Header};
//! use rowhook_abi::{Change, Column, Image, Op, Value};
//!
//! let columns = [Column { name: "id", type_code: 3, primary_key: true, nullable: false }];
//! let directory = ColumnDirectory::new(columns.iter().copied()).unwrap();
//! let header = Header { op: Op::Insert, db: "shop", table: "orders", ..Header::default() };
//! let mut buf = Vec::new();
//! let mut w = ChangeWriter::new(&mut buf, &header, &directory).unwrap();
//! w.value(Image::After, 0, Some(Value::Int(7))).unwrap();
//! w.finish().unwrap();
//!
//! let change = Change::parse(&buf).unwrap();
//! assert_eq!(change.table(), "orders");
//! assert_eq!(change.row().value_at(0), Ok(Some(Value::Int(7))));
//! ```

#![no_std]

extern crate alloc;

use core::fmt;

mod read;
pub mod write;

pub use read::{Change, Row, id_bytes};

/// The version of the encoding this crate writes and reads.
pub const VERSION: u8 = 1;
/// The first four bytes of every encoded change: `RHC` and the version.
pub const MAGIC: [u8; 4] = [b'R', b'H', b'C', VERSION];
/// Length of the fixed header.
pub const HEADER_LEN: usize = 72;
/// Length of one column directory entry.
pub const COLUMN_ENTRY_LEN: usize = 8;
/// Length of one value entry: a tag and 8 bytes of payload.
pub const VALUE_ENTRY_LEN: usize = 9;

/// Offsets of the header fields.
pub mod header {
    /// `u8` op: 1 insert, 2 update, 3 delete, 4 snapshot.
    pub const OP: usize = 4;
    /// `u8` flags, [`crate::flags`].
    pub const FLAGS: usize = 5;
    /// `u16` number of columns.
    pub const COLUMNS: usize = 6;
    /// `u32` the rows event's header timestamp (seconds).
    pub const TS: usize = 8;
    /// `u32` index of the rows event in the transaction.
    pub const EVENT_INDEX: usize = 12;
    /// `u32` index of the row in the rows event.
    pub const ROW_INDEX: usize = 16;
    /// `u32` length of the transaction part at the start of the id.
    pub const TXN_LEN: usize = 20;
    /// `u64` offset of the rows event in its binlog file.
    pub const POS: usize = 24;
    /// Span of the id, `<txn>:<event>:<row>`.
    pub const ID: usize = 32;
    /// Span of the GTID (offset and length 0 when absent).
    pub const GTID: usize = 40;
    /// Span of the binlog file name.
    pub const FILE: usize = 48;
    /// Span of the schema name.
    pub const DB: usize = 56;
    /// Span of the table name.
    pub const TABLE: usize = 64;
}

/// Header flag bits.
pub mod flags {
    /// The change has a before image (update, delete).
    pub const BEFORE: u8 = 1;
    /// The change has an after image (insert, update, snapshot).
    pub const AFTER: u8 = 2;
    /// The transaction has a GTID.
    pub const GTID: u8 = 4;
    /// Column names come from the binlog, not `@1`, `@2`, … placeholders.
    pub const NAMES: u8 = 8;
}

/// Column directory flag bits.
pub mod column_flags {
    /// The column is part of the primary key.
    pub const PRIMARY_KEY: u8 = 1;
    /// The column allows NULL.
    pub const NULLABLE: u8 = 2;
}

/// Value tags: the first byte of a value entry. `SPEC.md` says what each
/// payload holds.
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

/// What a row change does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    /// INSERT: an after image only.
    Insert,
    /// UPDATE: before and after images.
    Update,
    /// DELETE: a before image only.
    Delete,
    /// A row as it is, read by a snapshot of its table: an after image only.
    Snapshot,
}

impl Op {
    /// The name in the row change JSON: `insert`, `update`, `delete`,
    /// `snapshot`.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Insert => "insert",
            Op::Update => "update",
            Op::Delete => "delete",
            Op::Snapshot => "snapshot",
        }
    }

    /// Its code in the header: 1, 2, 3, 4.
    pub fn code(self) -> u8 {
        match self {
            Op::Insert => 1,
            Op::Update => 2,
            Op::Delete => 3,
            Op::Snapshot => 4,
        }
    }

    /// The op of header code `code`.
    pub fn from_code(code: u8) -> Option<Op> {
        match code {
            1 => Some(Op::Insert),
            2 => Some(Op::Update),
            3 => Some(Op::Delete),
            4 => Some(Op::Snapshot),
            _ => None,
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
    /// The row after the change (insert, update), or as a snapshot read it.
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

/// A column of the changed table: one column directory entry.
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

    /// Its tag in a value entry.
    pub fn tag(&self) -> u8 {
        match self {
            Value::Null => tag::NULL,
            Value::Int(_) => tag::INT,
            Value::UInt(_) => tag::UINT,
            Value::Float(_) => tag::FLOAT,
            Value::Double(_) => tag::DOUBLE,
            Value::Decimal(_) => tag::DECIMAL,
            Value::String(_) => tag::STRING,
            Value::Bytes(_) => tag::BYTES,
            Value::Date(_) => tag::DATE,
            Value::DateTime(_) => tag::DATETIME,
            Value::Timestamp(_) => tag::TIMESTAMP,
            Value::Time(_) => tag::TIME,
            Value::Json(_) => tag::JSON,
            Value::Enum(_) => tag::ENUM,
            Value::Set(_) => tag::SET,
            Value::Bit(_) => tag::BIT,
            Value::Vector(_) => tag::VECTOR,
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

/// What is wrong with a change buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FormatError {
    /// Shorter than its header or directory says.
    Truncated,
    /// Not a row change, or a version of the encoding this reader does not know.
    Magic([u8; 4]),
    /// An operation code other than 1, 2, 3, 4.
    Op(u8),
    /// A value tag this reader does not know.
    Tag(u8),
    /// A span reaches past the end of the buffer (or the id's transaction
    /// part is longer than the id).
    Span,
    /// Text that is not UTF-8.
    Utf8,
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FormatError::Truncated => f.write_str("buffer is truncated"),
            FormatError::Magic(m) => write!(
                f,
                "unknown magic or version {m:02x?} (this reader knows version {VERSION})"
            ),
            FormatError::Op(op) => write!(f, "unknown operation {op}"),
            FormatError::Tag(t) => write!(f, "unknown value tag {t}"),
            FormatError::Span => f.write_str("a span reaches past the end"),
            FormatError::Utf8 => f.write_str("text is not UTF-8"),
        }
    }
}

// An error type like any other, so `?` can carry it; the SDK keeps it apart
// from handler failures with `Error::Format`.
impl core::error::Error for FormatError {}
