//! Reading a row change from its encoding, lazily, for handlers.
//!
//! [`Change`] and [`Row`] wrap the reader of `rowhook-abi`, which owns the
//! format (specified in its `SPEC.md`): parsing checks the header and the
//! index, and reading a column decodes that one value, borrowed from the
//! buffer. These wrappers add typed access ([`FromValue`]) and the SDK's
//! [`Error`]. Nothing is copied or allocated.

use core::fmt;

pub use rowhook_abi::{Column, Image, Op, VERSION, Value};

use crate::error::{Error, FormatError, Result};

/// One row change, read in place from its encoding.
///
/// `Change` borrows the buffer and is `Copy`; its accessors decode only what
/// they are asked for. [`Change::get`] reads a column from the after image,
/// or from the before image of a delete: the row as it is now, or as it was
/// when it went away. A snapshot ([`Op::Snapshot`]) has an after image only,
/// as an insert has: the row as the snapshot of its table read it.
#[derive(Clone, Copy)]
pub struct Change<'a>(rowhook_abi::Change<'a>);

impl fmt::Debug for Change<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<'a> Change<'a> {
    /// Reads the header and index of an encoded change.
    ///
    /// Checks the magic and version, the header's texts, and that the
    /// column directory and value entries fit the buffer. Column names,
    /// tags and values are checked when read, so a handler pays only for
    /// the columns it touches.
    #[inline]
    pub fn parse(buf: &'a [u8]) -> core::result::Result<Self, FormatError> {
        rowhook_abi::Change::parse(buf).map(Change)
    }

    /// The reader this change wraps, for what the format has and the SDK
    /// does not show.
    #[inline]
    pub fn raw(&self) -> rowhook_abi::Change<'a> {
        self.0
    }

    /// The encoded bytes this change reads from.
    #[inline]
    pub fn as_bytes(&self) -> &'a [u8] {
        self.0.as_bytes()
    }

    /// Insert, update or delete, from the binlog; or snapshot, a row read by
    /// a snapshot of its table.
    #[inline]
    pub fn op(&self) -> Op {
        self.0.op()
    }

    /// The schema (database) name.
    #[inline]
    pub fn db(&self) -> &'a str {
        self.0.db()
    }

    /// The table name.
    #[inline]
    pub fn table(&self) -> &'a str {
        self.0.table()
    }

    /// The change's stable id, `<txn>:<event>:<row>`: the same every time
    /// the same binlog is replayed, so a sink can deduplicate on it. A
    /// snapshot's is `snapshot:<db>.<table>:<chunk>:<row>`.
    #[inline]
    pub fn id(&self) -> &'a str {
        self.0.id()
    }

    /// The transaction part of the id: its GTID, or `<file>/<pos>` of its
    /// first event where there is none; `snapshot:<db>.<table>` for a
    /// snapshot.
    #[inline]
    pub fn txn(&self) -> &'a str {
        self.0.txn()
    }

    /// Index of the rows event within the transaction, from 0 (of the
    /// chunk, for a snapshot).
    #[inline]
    pub fn event_index(&self) -> u32 {
        self.0.event_index()
    }

    /// Index of the row within its rows event (or snapshot chunk), from 0.
    #[inline]
    pub fn row_index(&self) -> u32 {
        self.0.row_index()
    }

    /// The transaction's GTID, where the server wrote one.
    #[inline]
    pub fn gtid(&self) -> Option<&'a str> {
        self.0.gtid()
    }

    /// The binlog file of the rows event.
    #[inline]
    pub fn file(&self) -> &'a str {
        self.0.file()
    }

    /// Offset of the rows event in its binlog file.
    #[inline]
    pub fn pos(&self) -> u64 {
        self.0.pos()
    }

    /// The rows event's header timestamp, seconds since the epoch.
    #[inline]
    pub fn ts(&self) -> u32 {
        self.0.ts()
    }

    /// Whether column names come from the binlog; if not, they are `@1`,
    /// `@2`, … by position (a server with `binlog_row_metadata=MINIMAL`).
    #[inline]
    pub fn has_column_names(&self) -> bool {
        self.0.has_column_names()
    }

    /// The number of columns of the table.
    #[inline]
    pub fn column_count(&self) -> usize {
        self.0.column_count()
    }

    /// The columns of the table, in table order.
    pub fn columns(&self) -> impl ExactSizeIterator<Item = Column<'a>> + 'a {
        self.0.columns()
    }

    /// The `i`th column (from 0), if there is one.
    #[inline]
    pub fn column(&self, i: usize) -> Option<Column<'a>> {
        self.0.column(i)
    }

    /// The position of the column `name`, if the table has it.
    #[inline]
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.0.column_index(name)
    }

    /// The after image (insert, update, snapshot).
    #[inline]
    pub fn after_image(&self) -> Option<Row<'a>> {
        self.0.after_image().map(Row)
    }

    /// The before image (update, delete).
    #[inline]
    pub fn before_image(&self) -> Option<Row<'a>> {
        self.0.before_image().map(Row)
    }

    /// The image [`Change::get`] reads: after (insert, update, snapshot), or
    /// before for a delete.
    #[inline]
    pub fn row(&self) -> Row<'a> {
        Row(self.0.row())
    }

    /// The image `image`, or [`Error::NoImage`].
    #[inline]
    pub fn image(&self, image: Image) -> Result<Row<'a>> {
        self.0.image(image).map(Row).ok_or(Error::NoImage { image })
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
    #[inline]
    pub fn get<T: FromValue<'a>>(&self, name: &str) -> Result<T> {
        self.row().get(name)
    }

    /// Column `name`'s value, from the image [`Change::get`] reads: for a
    /// handler that passes values on as they are ([`crate::json::Object::value`]).
    #[inline]
    pub fn value(&self, name: &str) -> Result<Value<'a>> {
        self.row().value(name)
    }

    /// Column `name` as `T` from the after image ([`Error::NoImage`] for a delete).
    pub fn after<T: FromValue<'a>>(&self, name: &str) -> Result<T> {
        self.image(Image::After)?.get(name)
    }

    /// Column `name` as `T` from the before image ([`Error::NoImage`] for an
    /// insert or a snapshot).
    pub fn before<T: FromValue<'a>>(&self, name: &str) -> Result<T> {
        self.image(Image::Before)?.get(name)
    }

    /// Whether an update changed column `name`: its before and after values
    /// differ. False for inserts, deletes and snapshots, and where either
    /// image lacks the column (MINIMAL row image).
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
pub struct Row<'a>(rowhook_abi::Row<'a>);

impl fmt::Debug for Row<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<'a> Row<'a> {
    /// Which image this is.
    #[inline]
    pub fn image(&self) -> Image {
        self.0.image()
    }

    /// Column `name` as `T`. `Option<T>` reads NULL as `None`.
    #[inline]
    pub fn get<T: FromValue<'a>>(&self, name: &str) -> Result<T> {
        let value = self.value(name)?;
        T::from_value(value).ok_or_else(|| Error::WrongType {
            column: name.into(),
            expected: T::EXPECTED,
            found: value.kind(),
        })
    }

    /// Column `name`'s value; [`Error::NotInImage`] where the image lacks it.
    #[inline]
    pub fn value(&self, name: &str) -> Result<Value<'a>> {
        let i = self
            .0
            .change()
            .column_index(name)
            .ok_or_else(|| Error::NoColumn { column: name.into() })?;
        self.value_at(i)?.ok_or_else(|| Error::NotInImage {
            column: name.into(),
            image: self.image(),
        })
    }

    /// The value of the `i`th column (from 0); `None` where the image lacks
    /// it (MINIMAL row image) or there is no such column.
    #[inline]
    pub fn value_at(&self, i: usize) -> Result<Option<Value<'a>>> {
        self.0.value_at(i).map_err(Error::Format)
    }

    /// The columns present in this image, with their values, in table order.
    pub fn iter(&self) -> impl Iterator<Item = Result<(Column<'a>, Value<'a>)>> + 'a {
        self.0.iter().map(|item| item.map_err(Error::Format))
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
    use rowhook_abi::{COLUMN_ENTRY_LEN, HEADER_LEN, VALUE_ENTRY_LEN, tag};

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
    fn a_snapshot_reads_like_an_insert() {
        let buf = ChangeBuilder::snapshot("shop", "orders")
            .index(3, 17)
            .at("mysql-bin.000003", 1234)
            .primary_key("id")
            .column("id", Value::Int(7))
            .column("status", Value::Enum("paid"))
            .build();
        let c = Change::parse(&buf).unwrap();
        assert_eq!(c.op(), Op::Snapshot);
        assert_eq!(
            (c.id(), c.txn(), c.gtid()),
            ("snapshot:shop.orders:3:17", "snapshot:shop.orders", None)
        );
        assert_eq!((c.event_index(), c.row_index()), (3, 17));
        assert_eq!((c.file(), c.pos()), ("mysql-bin.000003", 1234));
        assert_eq!(c.row().image(), Image::After);
        assert_eq!(c.get::<i64>("id").unwrap(), 7);
        assert_eq!(c.after::<&str>("status").unwrap(), "paid");
        assert_eq!(c.before::<i64>("id"), Err(Error::NoImage { image: Image::Before }));
        assert!(!c.changed("status").unwrap());
        assert_eq!(
            c.to_json().unwrap(),
            r#"{"id":"snapshot:shop.orders:3:17","op":"snapshot","db":"shop","table":"orders","ts":0,"gtid":null,"file":"mysql-bin.000003","pos":1234,"before":null,"after":{"id":7,"status":"paid"}}"#
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
