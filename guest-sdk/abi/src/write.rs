//! Writing a row change: the header, the column directory, value entries
//! and the spans they point at.
//!
//! The writer knows the layout, not where values come from: rowhook turns
//! its decoded values into a tag and a payload (appending text and bytes to
//! [`ChangeWriter::data`] and pointing at them with a [`span`]) and stores
//! each with [`ChangeWriter::entry`]; a test builds changes from [`Value`]s
//! with [`ChangeWriter::value`].
//!
//! Data is laid out in this order, which the test vectors pin: the column
//! names, the id, the GTID (unless it is the id's transaction part), the
//! file, db and table names, then the data of the before image's values,
//! then the after image's.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::fmt;

use crate::{COLUMN_ENTRY_LEN, Column, HEADER_LEN, Image, MAGIC, Op, VALUE_ENTRY_LEN, Value};
use crate::{column_flags, flags, header, tag};

/// Why a change cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WriteError {
    /// The encoded change would be over 4 GiB: an offset or length does not
    /// fit a `u32`.
    TooLarge,
    /// More than 65535 columns.
    TooManyColumns(usize),
    /// A column name over 65535 bytes.
    NameTooLong(usize),
    /// The directory has a different number of columns than the change.
    Columns {
        /// Columns of the directory.
        directory: usize,
        /// Columns written.
        change: usize,
    },
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WriteError::TooLarge => f.write_str("row change over 4 GiB encoded"),
            WriteError::TooManyColumns(n) => write!(f, "{n} columns do not fit the row change encoding"),
            WriteError::NameTooLong(n) => write!(f, "column name of {n} bytes"),
            WriteError::Columns { directory, change } => {
                write!(f, "a column directory of {directory} columns for a change of {change}")
            }
        }
    }
}

impl core::error::Error for WriteError {}

/// A span: `u32` offset and `u32` length of bytes in the buffer.
pub type Span = [u8; 8];

/// The span of `len` bytes at `at`.
#[inline]
pub fn span(at: usize, len: usize) -> Result<Span, WriteError> {
    let mut s = [0u8; 8];
    s[0..4].copy_from_slice(&len32(at)?.to_le_bytes());
    s[4..8].copy_from_slice(&len32(len)?.to_le_bytes());
    Ok(s)
}

/// Appends `bytes` to `out` and returns their span.
#[inline]
pub fn push_span(out: &mut Vec<u8>, bytes: &[u8]) -> Result<Span, WriteError> {
    let at = out.len();
    out.extend_from_slice(bytes);
    span(at, bytes.len())
}

#[inline]
fn len32(n: usize) -> Result<u32, WriteError> {
    u32::try_from(n).map_err(|_| WriteError::TooLarge)
}

#[inline]
fn put(out: &mut [u8], at: usize, bytes: &[u8]) {
    out[at..at + bytes.len()].copy_from_slice(bytes);
}

/// A table's column directory, laid out once per table: the names go first
/// in the data area, right after the value entries, so the directory is the
/// same bytes for every change with the same number of images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnDirectory {
    /// The column names, concatenated.
    names: Box<[u8]>,
    /// The directory entries for a change with no image, one (insert,
    /// delete) and two (update).
    entries: [Box<[u8]>; 3],
}

impl ColumnDirectory {
    /// The directory of `columns`, in table order.
    pub fn new<'c, I>(columns: I) -> Result<ColumnDirectory, WriteError>
    where
        I: IntoIterator<Item = Column<'c>>,
        I::IntoIter: ExactSizeIterator,
    {
        let columns = columns.into_iter();
        let n = columns.len();
        if u16::try_from(n).is_err() {
            return Err(WriteError::TooManyColumns(n));
        }
        let mut names = Vec::new();
        let mut entries = [0, 1, 2].map(|_| Vec::with_capacity(n * COLUMN_ENTRY_LEN));
        for col in columns {
            let name_len = u16::try_from(col.name.len()).map_err(|_| WriteError::NameTooLong(col.name.len()))?;
            let bits = (u8::from(col.primary_key) * column_flags::PRIMARY_KEY)
                | (u8::from(col.nullable) * column_flags::NULLABLE);
            for (images, e) in entries.iter_mut().enumerate() {
                let data_at = HEADER_LEN + n * COLUMN_ENTRY_LEN + images * n * VALUE_ENTRY_LEN;
                e.extend_from_slice(&len32(data_at + names.len())?.to_le_bytes());
                e.extend_from_slice(&name_len.to_le_bytes());
                e.push(col.type_code);
                e.push(bits);
            }
            names.extend_from_slice(col.name.as_bytes());
        }
        Ok(ColumnDirectory {
            names: names.into_boxed_slice(),
            entries: entries.map(Vec::into_boxed_slice),
        })
    }

    /// The number of columns.
    #[inline]
    pub fn len(&self) -> usize {
        self.entries[0].len() / COLUMN_ENTRY_LEN
    }

    /// Whether the table has no columns.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The header fields of a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    /// Insert, update, delete or snapshot.
    pub op: Op,
    /// Whether the change has a before image.
    pub before: bool,
    /// Whether the change has an after image.
    pub after: bool,
    /// Whether the column names come from the binlog.
    pub has_names: bool,
    /// The rows event's header timestamp.
    pub ts: u32,
    /// Index of the rows event in the transaction.
    pub event_index: u32,
    /// Index of the row in the rows event.
    pub row_index: u32,
    /// The transaction part of the id.
    pub txn: &'a str,
    /// The transaction's GTID.
    pub gtid: Option<&'a str>,
    /// The binlog file of the rows event.
    pub file: &'a str,
    /// Offset of the rows event.
    pub pos: u64,
    /// Schema name.
    pub db: &'a str,
    /// Table name.
    pub table: &'a str,
}

impl Default for Header<'_> {
    /// An insert (after image only) with column names, in transaction
    /// `0-1-1` of `mysql-bin.000001`, everything else zero or empty.
    fn default() -> Self {
        Header {
            op: Op::Insert,
            before: false,
            after: true,
            has_names: true,
            ts: 0,
            event_index: 0,
            row_index: 0,
            txn: "0-1-1",
            gtid: Some("0-1-1"),
            file: "mysql-bin.000001",
            pos: 4,
            db: "",
            table: "",
        }
    }
}

/// Writes one change into a buffer: [`ChangeWriter::new`] writes the header,
/// the column directory and the header's texts; the value entries follow,
/// then [`ChangeWriter::finish`].
#[derive(Debug)]
pub struct ChangeWriter<'o> {
    out: &'o mut Vec<u8>,
    ncols: usize,
    before_at: Option<usize>,
    after_at: Option<usize>,
}

impl<'o> ChangeWriter<'o> {
    /// Starts a change in `out`, replacing what it held (its allocation is
    /// reused). Every value entry starts as absent (tag 0).
    #[inline]
    pub fn new(out: &'o mut Vec<u8>, head: &Header<'_>, directory: &ColumnDirectory) -> Result<Self, WriteError> {
        out.clear();
        let n = directory.len();
        let before_at = HEADER_LEN + n * COLUMN_ENTRY_LEN;
        let after_at = before_at + if head.before { n * VALUE_ENTRY_LEN } else { 0 };
        let data_at = after_at + if head.after { n * VALUE_ENTRY_LEN } else { 0 };
        out.resize(data_at, 0);

        let bits = (u8::from(head.before) * flags::BEFORE)
            | (u8::from(head.after) * flags::AFTER)
            | (u8::from(head.gtid.is_some()) * flags::GTID)
            | (u8::from(head.has_names) * flags::NAMES);
        out[0..4].copy_from_slice(&MAGIC);
        out[header::OP] = head.op.code();
        out[header::FLAGS] = bits;
        // `ColumnDirectory::new` refuses more than u16::MAX columns.
        put(out, header::COLUMNS, &(n as u16).to_le_bytes());
        put(out, header::TS, &head.ts.to_le_bytes());
        put(out, header::EVENT_INDEX, &head.event_index.to_le_bytes());
        put(out, header::ROW_INDEX, &head.row_index.to_le_bytes());
        put(out, header::TXN_LEN, &len32(head.txn.len())?.to_le_bytes());
        put(out, header::POS, &head.pos.to_le_bytes());

        let images = usize::from(head.before) + usize::from(head.after);
        out[HEADER_LEN..before_at].copy_from_slice(&directory.entries[images]);
        out.extend_from_slice(&directory.names);

        let id = out.len();
        out.extend_from_slice(head.txn.as_bytes());
        out.push(b':');
        out.extend_from_slice(itoa::Buffer::new().format(head.event_index).as_bytes());
        out.push(b':');
        out.extend_from_slice(itoa::Buffer::new().format(head.row_index).as_bytes());
        let s = span(id, out.len() - id)?;
        put(out, header::ID, &s);
        let s = match head.gtid {
            None => [0; 8],
            // Where the transaction has a GTID, the id's transaction part is it.
            Some(g) if g == head.txn => span(id, g.len())?,
            Some(g) => push_span(out, g.as_bytes())?,
        };
        put(out, header::GTID, &s);
        let s = push_span(out, head.file.as_bytes())?;
        put(out, header::FILE, &s);
        let s = push_span(out, head.db.as_bytes())?;
        put(out, header::DB, &s);
        let s = push_span(out, head.table.as_bytes())?;
        put(out, header::TABLE, &s);
        Ok(ChangeWriter {
            out,
            ncols: n,
            before_at: head.before.then_some(before_at),
            after_at: head.after.then_some(after_at),
        })
    }

    /// The number of columns.
    #[inline]
    pub fn column_count(&self) -> usize {
        self.ncols
    }

    /// The buffer, to append a value's text or bytes to (then
    /// [`span`] them for [`ChangeWriter::entry`]).
    #[inline]
    pub fn data(&mut self) -> &mut Vec<u8> {
        self.out
    }

    /// Sets the value entry of column `column` of `image` to `tag` and
    /// `payload`.
    ///
    /// # Panics
    ///
    /// If the change has no such image or column: a bug in the caller.
    #[inline]
    pub fn entry(&mut self, image: Image, column: usize, tag: u8, payload: [u8; 8]) {
        let at = match image {
            Image::Before => self.before_at,
            Image::After => self.after_at,
        };
        let Some(at) = at.filter(|_| column < self.ncols) else {
            panic!("no value entry for column {column} of the {image} image");
        };
        let e = at + column * VALUE_ENTRY_LEN;
        self.out[e] = tag;
        put(self.out, e + 1, &payload);
    }

    /// Sets the value of column `column` of `image`: `None` for a column
    /// absent from the image. Text and bytes are appended to the data.
    pub fn value(&mut self, image: Image, column: usize, value: Option<Value<'_>>) -> Result<(), WriteError> {
        let out = &mut *self.out;
        let (t, payload) = match value {
            None => (tag::ABSENT, [0; 8]),
            Some(v) => (
                v.tag(),
                match v {
                    Value::Null => [0; 8],
                    Value::Int(i) => i.to_le_bytes(),
                    Value::UInt(u) | Value::Bit(u) => u.to_le_bytes(),
                    Value::Float(f) => f64::from(f).to_le_bytes(),
                    Value::Double(d) => d.to_le_bytes(),
                    Value::Bytes(b) | Value::Vector(b) => push_span(out, b)?,
                    text => push_span(out, text.as_text().unwrap_or_default().as_bytes())?,
                },
            ),
        };
        self.entry(image, column, t, payload);
        Ok(())
    }

    /// Checks that the change fits the format's 4 GiB.
    #[inline]
    pub fn finish(self) -> Result<(), WriteError> {
        len32(self.out.len()).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use alloc::format;

    use super::*;
    use crate::Change;

    #[test]
    fn directory_offsets_follow_the_images() {
        let col = |name, type_code, primary_key, nullable| Column {
            name,
            type_code,
            primary_key,
            nullable,
        };
        let cols = [col("id", 3, true, false), col("note", 15, false, true)];
        let dir = ColumnDirectory::new(cols.iter().copied()).unwrap();
        assert_eq!(dir.len(), 2);
        for (op, before, after, txn, gtid) in [
            (Op::Insert, false, true, "0-1-1", Some("0-1-1")),
            (Op::Update, true, true, "0-1-1", Some("0-1-1")),
            (Op::Delete, true, false, "0-1-1", Some("0-1-1")),
            (Op::Snapshot, false, true, "snapshot:d.t", None),
        ] {
            let head = Header {
                op,
                before,
                after,
                txn,
                gtid,
                db: "d",
                table: "t",
                ..Header::default()
            };
            let mut buf = Vec::new();
            let mut w = ChangeWriter::new(&mut buf, &head, &dir).unwrap();
            for image in [Image::Before, Image::After] {
                if (image == Image::Before && before) || (image == Image::After && after) {
                    w.value(image, 0, Some(Value::Int(-7))).unwrap();
                    w.value(image, 1, Some(Value::String("żółw"))).unwrap();
                }
            }
            w.finish().unwrap();
            let c = Change::parse(&buf).unwrap();
            assert_eq!(c.op(), op);
            assert_eq!(c.columns().collect::<Vec<_>>(), cols);
            assert_eq!((c.id(), c.txn(), c.gtid()), (format!("{txn}:0:0").as_str(), txn, gtid));
            assert_eq!(c.row().value_at(1), Ok(Some(Value::String("żółw"))));
        }
    }

    #[test]
    fn refuses_what_does_not_fit() {
        let long = "x".repeat(70_000);
        let col = Column {
            name: &long,
            type_code: 3,
            primary_key: false,
            nullable: false,
        };
        assert_eq!(ColumnDirectory::new([col]), Err(WriteError::NameTooLong(70_000)));
        assert_eq!(span(1 << 32, 0), Err(WriteError::TooLarge));
    }
}
