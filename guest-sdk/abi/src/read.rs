//! Reading a row change from its encoding, lazily.
//!
//! [`Change::parse`] checks the header and the index (the column directory
//! and the value entries of each image), which is O(columns) and touches no
//! value data. Reading a column then decodes that one value: a number from
//! its entry, or text and bytes borrowed from the buffer, checked for UTF-8
//! when read. Nothing is copied or allocated.

use core::fmt;

use crate::{COLUMN_ENTRY_LEN, Column, FormatError, HEADER_LEN, Image, MAGIC, Op, VALUE_ENTRY_LEN, Value};
use crate::{column_flags, flags, header, tag};

/// One row change, read in place from its encoding.
///
/// `Change` borrows the buffer and is `Copy`; its accessors decode only what
/// they are asked for.
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

#[inline]
fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

#[inline]
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[inline]
fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// The bytes of the span at `at`.
#[inline]
fn span(b: &[u8], at: usize) -> Result<&[u8], FormatError> {
    let off = u32_at(b, at) as usize;
    let len = u32_at(b, at + 4) as usize;
    off.checked_add(len)
        .and_then(|end| b.get(off..end))
        .ok_or(FormatError::Span)
}

#[inline]
fn text(b: &[u8]) -> Result<&str, FormatError> {
    core::str::from_utf8(b).map_err(|_| FormatError::Utf8)
}

/// The id of an encoded change, read from its header's span alone: the
/// rest of the buffer is not checked, nor is the id's UTF-8. For a host
/// that needs only the id (rowhook seeds a handler's randomness with it
/// at each call); `None` if the buffer is too short for the header or the
/// span does not fit it.
#[inline]
pub fn id_bytes(buf: &[u8]) -> Option<&[u8]> {
    if buf.len() < HEADER_LEN {
        return None;
    }
    span(buf, header::ID).ok()
}

impl<'a> Change<'a> {
    /// Reads the header and index of an encoded change.
    ///
    /// Checks the magic and version, the op, the header's texts, and that
    /// the column directory and value entries fit the buffer. Column names,
    /// tags and values are checked when read, so a handler pays only for
    /// the columns it touches.
    #[inline]
    pub fn parse(buf: &'a [u8]) -> Result<Self, FormatError> {
        let head = buf.get(..HEADER_LEN).ok_or(FormatError::Truncated)?;
        let magic = [head[0], head[1], head[2], head[3]];
        if magic != MAGIC {
            return Err(FormatError::Magic(magic));
        }
        let op = Op::from_code(head[header::OP]).ok_or(FormatError::Op(head[header::OP]))?;
        let bits = head[header::FLAGS];
        let ncols = usize::from(u16_at(head, header::COLUMNS));
        let mut at = HEADER_LEN + ncols * COLUMN_ENTRY_LEN;
        let before = (bits & flags::BEFORE != 0).then(|| {
            let b = at;
            at += ncols * VALUE_ENTRY_LEN;
            b
        });
        let after = (bits & flags::AFTER != 0).then(|| {
            let a = at;
            at += ncols * VALUE_ENTRY_LEN;
            a
        });
        if buf.len() < at {
            return Err(FormatError::Truncated);
        }
        let gtid = if bits & flags::GTID != 0 {
            Some(text(span(buf, header::GTID)?)?)
        } else {
            None
        };
        let change = Change {
            buf,
            op,
            ncols,
            before,
            after,
            id: text(span(buf, header::ID)?)?,
            gtid,
            file: text(span(buf, header::FILE)?)?,
            db: text(span(buf, header::DB)?)?,
            table: text(span(buf, header::TABLE)?)?,
        };
        if change.txn_len() > change.id.len() || !change.id.is_char_boundary(change.txn_len()) {
            return Err(FormatError::Span);
        }
        Ok(change)
    }

    /// The encoded bytes this change reads from.
    #[inline]
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }

    /// Insert, update, delete or snapshot.
    #[inline]
    pub fn op(&self) -> Op {
        self.op
    }

    /// The schema (database) name.
    #[inline]
    pub fn db(&self) -> &'a str {
        self.db
    }

    /// The table name.
    #[inline]
    pub fn table(&self) -> &'a str {
        self.table
    }

    /// The change's stable id, `<txn>:<event>:<row>`.
    #[inline]
    pub fn id(&self) -> &'a str {
        self.id
    }

    /// The transaction part of the id: its GTID, or `<file>/<pos>` of its
    /// first event where there is none; `snapshot:<db>.<table>` for a
    /// snapshot.
    #[inline]
    pub fn txn(&self) -> &'a str {
        &self.id[..self.txn_len()]
    }

    #[inline]
    fn txn_len(&self) -> usize {
        u32_at(self.buf, header::TXN_LEN) as usize
    }

    /// Index of the rows event within the transaction, from 0 (of the
    /// chunk, for a snapshot).
    #[inline]
    pub fn event_index(&self) -> u32 {
        u32_at(self.buf, header::EVENT_INDEX)
    }

    /// Index of the row within its rows event (or snapshot chunk), from 0.
    #[inline]
    pub fn row_index(&self) -> u32 {
        u32_at(self.buf, header::ROW_INDEX)
    }

    /// The transaction's GTID, where the server wrote one.
    #[inline]
    pub fn gtid(&self) -> Option<&'a str> {
        self.gtid
    }

    /// The binlog file of the rows event.
    #[inline]
    pub fn file(&self) -> &'a str {
        self.file
    }

    /// Offset of the rows event in its binlog file.
    #[inline]
    pub fn pos(&self) -> u64 {
        u64_at(self.buf, header::POS)
    }

    /// The rows event's header timestamp, seconds since the epoch.
    #[inline]
    pub fn ts(&self) -> u32 {
        u32_at(self.buf, header::TS)
    }

    /// Whether column names come from the binlog; if not, they are `@1`,
    /// `@2`, … by position.
    #[inline]
    pub fn has_column_names(&self) -> bool {
        self.buf[header::FLAGS] & flags::NAMES != 0
    }

    /// The number of columns of the table.
    #[inline]
    pub fn column_count(&self) -> usize {
        self.ncols
    }

    /// The columns of the table, in table order.
    pub fn columns(&self) -> impl ExactSizeIterator<Item = Column<'a>> + 'a {
        let this = *self;
        (0..self.ncols).map(move |i| this.column(i).expect("index in range"))
    }

    /// The `i`th column (from 0), if there is one.
    #[inline]
    pub fn column(&self, i: usize) -> Option<Column<'a>> {
        if i >= self.ncols {
            return None;
        }
        let e = HEADER_LEN + i * COLUMN_ENTRY_LEN;
        let bits = self.buf[e + 7];
        Some(Column {
            // A name out of bounds or not UTF-8 shows as empty rather than
            // failing an iteration.
            name: text(self.name_bytes(i)).unwrap_or(""),
            type_code: self.buf[e + 6],
            primary_key: bits & column_flags::PRIMARY_KEY != 0,
            nullable: bits & column_flags::NULLABLE != 0,
        })
    }

    #[inline]
    fn name_bytes(&self, i: usize) -> &'a [u8] {
        let e = HEADER_LEN + i * COLUMN_ENTRY_LEN;
        let off = u32_at(self.buf, e) as usize;
        let len = usize::from(u16_at(self.buf, e + 4));
        self.buf.get(off..off.saturating_add(len)).unwrap_or(&[])
    }

    /// The position of the column `name`, if the table has it.
    #[inline]
    pub fn column_index(&self, name: &str) -> Option<usize> {
        (0..self.ncols).find(|&i| self.name_bytes(i) == name.as_bytes())
    }

    /// The after image (insert, update).
    #[inline]
    pub fn after_image(&self) -> Option<Row<'a>> {
        self.after.map(|at| Row {
            change: *self,
            image: Image::After,
            at,
        })
    }

    /// The before image (update, delete).
    #[inline]
    pub fn before_image(&self) -> Option<Row<'a>> {
        self.before.map(|at| Row {
            change: *self,
            image: Image::Before,
            at,
        })
    }

    /// The image `image`, if the change has it.
    #[inline]
    pub fn image(&self, image: Image) -> Option<Row<'a>> {
        match image {
            Image::Before => self.before_image(),
            Image::After => self.after_image(),
        }
    }

    /// The row as it is after the change, or as it was before a delete:
    /// the after image, else the before image (else an image without
    /// values, which rowhook never sends).
    #[inline]
    pub fn row(&self) -> Row<'a> {
        self.after_image().or_else(|| self.before_image()).unwrap_or(Row {
            change: *self,
            image: Image::After,
            at: usize::MAX,
        })
    }
}

/// One image of a change: the row before or after it.
#[derive(Clone, Copy)]
pub struct Row<'a> {
    change: Change<'a>,
    image: Image,
    /// Offset of the value entries; `usize::MAX` for a change with neither
    /// image.
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
    #[inline]
    pub fn image(&self) -> Image {
        self.image
    }

    /// The change this image belongs to.
    #[inline]
    pub fn change(&self) -> Change<'a> {
        self.change
    }

    /// The value of the `i`th column (from 0); `None` where the image lacks
    /// it (MINIMAL row image) or there is no such column.
    #[inline]
    pub fn value_at(&self, i: usize) -> Result<Option<Value<'a>>, FormatError> {
        if i >= self.change.ncols || self.at == usize::MAX {
            return Ok(None);
        }
        let b = self.change.buf;
        let e = self.at + i * VALUE_ENTRY_LEN;
        let p = e + 1;
        let txt = || text(span(b, p)?);
        Ok(Some(match b[e] {
            tag::ABSENT => return Ok(None),
            tag::NULL => Value::Null,
            tag::INT => Value::Int(u64_at(b, p) as i64),
            tag::UINT => Value::UInt(u64_at(b, p)),
            // Widened from an f32 by the writer, so narrowing is exact.
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
            other => return Err(FormatError::Tag(other)),
        }))
    }

    /// The columns present in this image, with their values, in table order.
    pub fn iter(&self) -> impl Iterator<Item = Result<(Column<'a>, Value<'a>), FormatError>> + 'a {
        let row = *self;
        (0..row.change.ncols).filter_map(move |i| match row.value_at(i) {
            Ok(Some(v)) => Some(Ok((row.change.column(i).expect("index in range"), v))),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        })
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec::Vec;

    use super::*;
    use crate::write::{ChangeWriter, ColumnDirectory, Header};

    /// A one-column change of `op`, with the images its op has.
    fn change(op: Op) -> Vec<u8> {
        let column = Column {
            name: "id",
            type_code: 3,
            primary_key: true,
            nullable: false,
        };
        let directory = ColumnDirectory::new([column]).unwrap();
        let head = Header {
            op,
            before: matches!(op, Op::Update | Op::Delete),
            after: op != Op::Delete,
            ..Header::default()
        };
        let mut buf = Vec::new();
        let mut w = ChangeWriter::new(&mut buf, &head, &directory).unwrap();
        for (image, present) in [(Image::Before, head.before), (Image::After, head.after)] {
            if present {
                w.value(image, 0, Some(Value::Int(7))).unwrap();
            }
        }
        w.finish().unwrap();
        buf
    }

    #[test]
    fn knows_every_op_and_no_other() {
        for op in [Op::Insert, Op::Update, Op::Delete, Op::Snapshot] {
            assert_eq!(Op::from_code(op.code()), Some(op));
            let buf = change(op);
            let c = Change::parse(&buf).unwrap();
            assert_eq!(c.op(), op);
            // A snapshot is read as an insert is: the row is its after image.
            let row_image = if op == Op::Delete { Image::Before } else { Image::After };
            assert_eq!(c.row().image(), row_image);
            assert_eq!(c.row().value_at(0), Ok(Some(Value::Int(7))));
        }
        let mut buf = change(Op::Snapshot);
        for code in [0, 5, 255] {
            buf[header::OP] = code;
            assert_eq!(Change::parse(&buf).unwrap_err(), FormatError::Op(code));
        }
    }
}
