//! Rows events (WRITE/UPDATE/DELETE v1 and v2, MySQL PARTIAL_UPDATE, MariaDB
//! compressed): the header, the column bitmaps and the row images.

use super::cursor::{Cursor, Short};
use super::table_map::{ColumnKind, TableMap};
use super::value::{self, Value};

/// What a rows event does: insert, update or delete. One type from the
/// decoder to the handlers: the row change encoding's, whose crate
/// (`rowhook-abi`) is plain data with no dependencies on the host.
pub use rowhook_abi::Op;

/// How a rows event type is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowsKind {
    /// The operation.
    pub op: Op,
    /// v2 events carry an extra-data block after the flags.
    pub v2: bool,
    /// MySQL PARTIAL_UPDATE_ROWS: after images may hold JSON diffs.
    pub partial: bool,
    /// MariaDB compressed rows event: the row data is zlib-compressed.
    pub compressed: bool,
}

impl RowsKind {
    /// The layout of event type `t`, if it is a rows event.
    pub fn of(t: u8) -> Option<RowsKind> {
        use super::event::types::*;
        let k = |op, v2, partial, compressed| {
            Some(RowsKind {
                op,
                v2,
                partial,
                compressed,
            })
        };
        match t {
            WRITE_ROWS_V1 => k(Op::Insert, false, false, false),
            UPDATE_ROWS_V1 => k(Op::Update, false, false, false),
            DELETE_ROWS_V1 => k(Op::Delete, false, false, false),
            WRITE_ROWS_V2 => k(Op::Insert, true, false, false),
            UPDATE_ROWS_V2 => k(Op::Update, true, false, false),
            DELETE_ROWS_V2 => k(Op::Delete, true, false, false),
            PARTIAL_UPDATE_ROWS => k(Op::Update, true, true, false),
            MARIA_WRITE_ROWS_COMPRESSED_V1 => k(Op::Insert, false, false, true),
            MARIA_UPDATE_ROWS_COMPRESSED_V1 => k(Op::Update, false, false, true),
            MARIA_DELETE_ROWS_COMPRESSED_V1 => k(Op::Delete, false, false, true),
            MARIA_WRITE_ROWS_COMPRESSED => k(Op::Insert, true, false, true),
            MARIA_UPDATE_ROWS_COMPRESSED => k(Op::Update, true, false, true),
            MARIA_DELETE_ROWS_COMPRESSED => k(Op::Delete, true, false, true),
            _ => None,
        }
    }
}

/// The fixed part of a rows event.
#[derive(Debug, Clone, Copy)]
pub struct RowsHeader<'a> {
    /// Table id, as in the TABLE_MAP.
    pub table_id: u64,
    /// Number of columns the event describes.
    pub width: usize,
    /// Columns present in the before image (or the only image).
    pub present: &'a [u8],
    /// Columns present in the after image of an update.
    pub present_after: &'a [u8],
    /// The row images.
    pub rows: &'a [u8],
}

/// Reads the table id only.
pub fn peek_table_id(body: &[u8], table_id_len: usize) -> Option<u64> {
    Cursor::new(body).uint_n(table_id_len).ok()
}

/// Parses the header and bitmaps of a rows event.
pub fn parse_header(body: &[u8], kind: RowsKind, table_id_len: usize) -> Result<RowsHeader<'_>, &'static str> {
    let mut c = Cursor::new(body);
    let table_id = c.uint_n(table_id_len).map_err(|_| "table id")?;
    let _flags = c.u16().map_err(|_| "flags")?;
    if kind.v2 {
        let extra = c.u16().map_err(|_| "extra data length")?;
        c.skip(usize::from(extra.saturating_sub(2))).map_err(|_| "extra data")?;
    }
    let width = c.packed().map_err(|_| "column count")?;
    if width > 4096 {
        return Err("column count");
    }
    let width = width as usize;
    let bitmap = width.div_ceil(8);
    let present = c.take(bitmap).map_err(|_| "column bitmap")?;
    let present_after = if kind.op == Op::Update {
        c.take(bitmap).map_err(|_| "after-image column bitmap")?
    } else {
        present
    };
    Ok(RowsHeader {
        table_id,
        width,
        present,
        present_after,
        rows: c.rest(),
    })
}

/// Whether bit `i` of a little-endian-ordered bitmap is set.
#[inline]
pub fn bit(bitmap: &[u8], i: usize) -> bool {
    bitmap.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0)
}

/// Why a row image could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageError {
    /// The image ends early; `column` is where.
    Short {
        /// Column being read.
        column: usize,
    },
    /// The event describes more columns than the table has.
    Width {
        /// Width in the event.
        event: usize,
        /// Columns in the TABLE_MAP.
        table: usize,
    },
}

/// Reads one row image into `out` (one slot per table column; columns not in
/// the image are [`Value::Absent`]).
///
/// `partial_after` is set for the after image of a PARTIAL_UPDATE_ROWS
/// event, which starts with value options and a bitmap of JSON columns
/// written as diffs.
pub fn read_image<'a>(
    c: &mut Cursor<'a>,
    table: &TableMap,
    width: usize,
    present: &[u8],
    partial_after: bool,
    out: &mut Vec<Value<'a>>,
) -> Result<(), ImageError> {
    let cols = &table.columns;
    if width > cols.len() {
        return Err(ImageError::Width {
            event: width,
            table: cols.len(),
        });
    }
    out.clear();
    out.resize(cols.len(), Value::Absent);
    let short = |column| move |_: Short| ImageError::Short { column };
    let mut partial_bits: &[u8] = &[];
    if partial_after {
        let options = c.packed().map_err(short(0))?;
        if options & 1 != 0 {
            let json_cols = (0..width)
                .filter(|&i| bit(present, i) && matches!(cols[i].kind, ColumnKind::Json { .. }))
                .count();
            partial_bits = c.take(json_cols.div_ceil(8)).map_err(short(0))?;
        }
    }
    let n_present = present.iter().map(|b| b.count_ones() as usize).sum::<usize>();
    let nulls = c.take(n_present.div_ceil(8)).map_err(short(0))?;
    let mut k = 0; // index among present columns
    let mut json_k = 0; // index among present JSON columns
    for (i, slot) in out.iter_mut().enumerate().take(width) {
        if !bit(present, i) {
            continue;
        }
        let null = bit(nulls, k);
        k += 1;
        let kind = &cols[i].kind;
        let is_json = matches!(kind, ColumnKind::Json { .. });
        if null {
            *slot = Value::Null;
        } else if is_json && bit(partial_bits, json_k) {
            let ColumnKind::Json { len_bytes } = *kind else {
                unreachable!()
            };
            let n = c.uint_n(usize::from(len_bytes)).map_err(short(i))? as usize;
            *slot = Value::JsonDiff(c.take(n).map_err(short(i))?);
        } else {
            *slot = value::read(c, kind).map_err(short(i))?;
        }
        if is_json {
            json_k += 1;
        }
    }
    Ok(())
}
