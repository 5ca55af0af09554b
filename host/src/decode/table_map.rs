//! TABLE_MAP events and the per-table decode plan built from them.
//!
//! The server writes a TABLE_MAP before the rows events of a table in every
//! transaction, and a new table id after every ALTER, so the plan built here
//! always matches the rows that follow. Everything a row decode needs per
//! column (width, signedness, charset, labels, the column name already
//! escaped as a JSON key) is worked out once, here.

use super::charset::{Charset, charset_of_collation};
use super::cursor::{Cursor, Short};
use super::event::Flavor;
use crate::json_text;

/// MySQL column type codes as they appear in TABLE_MAP.
#[allow(missing_docs)]
pub mod col {
    pub const DECIMAL: u8 = 0;
    pub const TINY: u8 = 1;
    pub const SHORT: u8 = 2;
    pub const LONG: u8 = 3;
    pub const FLOAT: u8 = 4;
    pub const DOUBLE: u8 = 5;
    pub const NULL: u8 = 6;
    pub const TIMESTAMP: u8 = 7;
    pub const LONGLONG: u8 = 8;
    pub const INT24: u8 = 9;
    pub const DATE: u8 = 10;
    pub const TIME: u8 = 11;
    pub const DATETIME: u8 = 12;
    pub const YEAR: u8 = 13;
    pub const NEWDATE: u8 = 14;
    pub const VARCHAR: u8 = 15;
    pub const BIT: u8 = 16;
    pub const TIMESTAMP2: u8 = 17;
    pub const DATETIME2: u8 = 18;
    pub const TIME2: u8 = 19;
    pub const MARIA_BLOB_COMPRESSED: u8 = 140;
    pub const MARIA_VARCHAR_COMPRESSED: u8 = 141;
    pub const VECTOR: u8 = 242;
    pub const JSON: u8 = 245;
    pub const NEWDECIMAL: u8 = 246;
    pub const ENUM: u8 = 247;
    pub const SET: u8 = 248;
    pub const TINY_BLOB: u8 = 249;
    pub const MEDIUM_BLOB: u8 = 250;
    pub const LONG_BLOB: u8 = 251;
    pub const BLOB: u8 = 252;
    pub const VAR_STRING: u8 = 253;
    pub const STRING: u8 = 254;
    pub const GEOMETRY: u8 = 255;
}

/// How to read and render one column's value.
#[derive(Debug, Clone, PartialEq)]
pub enum ColumnKind {
    /// Integer of `bytes` (1, 2, 3, 4 or 8) bytes.
    Int {
        /// Width in bytes.
        bytes: u8,
        /// Whether the column is UNSIGNED.
        unsigned: bool,
    },
    /// YEAR: one byte, 0 or 1900 + n.
    Year,
    /// FLOAT.
    Float,
    /// DOUBLE.
    Double,
    /// DECIMAL(precision, scale) in MySQL's binary format.
    Decimal {
        /// Total digits.
        precision: u8,
        /// Digits after the point.
        scale: u8,
        /// Stored size in bytes.
        size: usize,
    },
    /// DATE (3 bytes).
    Date,
    /// Pre-5.6 DATETIME (8-byte YYYYMMDDhhmmss).
    DateTimeOld,
    /// DATETIME(fsp).
    DateTime2 {
        /// Fraction digits.
        fsp: u8,
    },
    /// Pre-5.6 TIMESTAMP (4 bytes).
    TimestampOld,
    /// TIMESTAMP(fsp).
    Timestamp2 {
        /// Fraction digits.
        fsp: u8,
    },
    /// Pre-5.6 TIME (3-byte HHMMSS).
    TimeOld,
    /// TIME(fsp).
    Time2 {
        /// Fraction digits.
        fsp: u8,
    },
    /// CHAR/VARCHAR/TEXT/BLOB: a length prefix of `len_bytes` and the bytes.
    /// `pad_to` is set for BINARY(n), whose trailing zero bytes the server
    /// strips and the contract restores.
    String {
        /// Length prefix width (1..=4).
        len_bytes: u8,
        /// Charset; `Binary` renders as base64.
        charset: Charset,
        /// For BINARY(n): n.
        pad_to: Option<u16>,
    },
    /// ENUM stored in 1 or 2 bytes.
    Enum {
        /// Stored width.
        bytes: u8,
    },
    /// SET stored in 1..=8 bytes.
    Set {
        /// Stored width.
        bytes: u8,
    },
    /// BIT(n) in `bytes` big-endian bytes.
    Bit {
        /// Stored width.
        bytes: u8,
    },
    /// MySQL binary JSON with a length prefix.
    Json {
        /// Length prefix width.
        len_bytes: u8,
    },
    /// GEOMETRY: length prefix, then SRID + WKB.
    Geometry {
        /// Length prefix width.
        len_bytes: u8,
    },
    /// MySQL 9 VECTOR: length prefix, then little-endian f32s.
    Vector {
        /// Length prefix width.
        len_bytes: u8,
    },
    /// MariaDB `COMPRESSED` column: a length prefix, then a compression header and data.
    Compressed {
        /// Length prefix width.
        len_bytes: u8,
        /// Charset of the decompressed value; `Binary` renders as base64.
        charset: Charset,
    },
}

/// One column of a table, planned.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// Column name, or `@N` (1-based) where the binlog has no names.
    pub name: String,
    /// `"name":` ready to append to a JSON object.
    pub key_json: Box<[u8]>,
    /// The raw type code from the TABLE_MAP.
    pub type_code: u8,
    /// How to decode it.
    pub kind: ColumnKind,
    /// Whether NULL is allowed.
    pub nullable: bool,
    /// ENUM/SET labels, each already escaped for a JSON string body.
    pub labels: Vec<Box<str>>,
    /// Whether it is part of the primary key.
    pub primary_key: bool,
}

/// A table as announced by a TABLE_MAP event, with its decode plan.
#[derive(Debug, Clone, PartialEq)]
pub struct TableMap {
    /// The table id rows events refer to.
    pub table_id: u64,
    /// Schema name.
    pub db: String,
    /// Table name.
    pub table: String,
    /// `"db":"…","table":"…"` ready for output.
    pub names_json: Box<[u8]>,
    /// Columns in table order.
    pub columns: Vec<Column>,
    /// Whether the column names came from the binlog (`binlog_row_metadata=FULL`).
    pub has_names: bool,
    /// Whether signedness and charsets came from the binlog (MINIMAL or FULL).
    pub has_types: bool,
}

/// What went wrong planning a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableMapError {
    /// The event is shorter than what it announces.
    Short(&'static str),
    /// A column type this decoder does not know.
    UnsupportedType {
        /// 0-based column index.
        index: usize,
        /// The type code.
        type_code: u8,
    },
    /// A field with an impossible value.
    Invalid(&'static str, String),
}

fn short(what: &'static str) -> impl Fn(Short) -> TableMapError {
    move |_| TableMapError::Short(what)
}

/// Optional metadata field types (MySQL `Table_map_log_event::Optional_metadata_field_type`).
mod meta {
    pub const SIGNEDNESS: u8 = 1;
    pub const DEFAULT_CHARSET: u8 = 2;
    pub const COLUMN_CHARSET: u8 = 3;
    pub const COLUMN_NAME: u8 = 4;
    pub const SET_STR_VALUE: u8 = 5;
    pub const ENUM_STR_VALUE: u8 = 6;
    pub const SIMPLE_PRIMARY_KEY: u8 = 8;
    pub const PRIMARY_KEY_WITH_PREFIX: u8 = 9;
    pub const ENUM_AND_SET_DEFAULT_CHARSET: u8 = 10;
    pub const ENUM_AND_SET_COLUMN_CHARSET: u8 = 11;
}

/// The column as the type code and metadata bytes describe it, before
/// optional metadata (signedness, charset) refines it.
#[derive(Debug, Clone, Copy)]
struct RawColumn {
    type_code: u8,
    /// The real type: for STRING columns the metadata says ENUM, SET or STRING.
    real_type: u8,
    meta: u16,
    meta2: u8,
}

impl RawColumn {
    /// Whether the column takes a bit in the SIGNEDNESS metadata. The
    /// servers disagree on YEAR: MySQL lists only the integer, floating and
    /// decimal types (`is_numeric_type`), while MariaDB gives a bit to every
    /// `Field_num`, and its `Field_year` is one (it is stored as a TINYINT).
    /// BIT takes no bit on either. A YEAR counted wrongly shifts the bits of
    /// every numeric column after it onto its neighbour: silent corruption of
    /// signed and unsigned values, so the rule is pinned by tests on both.
    fn takes_signedness_bit(&self, flavor: Flavor) -> bool {
        match self.real_type {
            col::TINY
            | col::SHORT
            | col::INT24
            | col::LONG
            | col::LONGLONG
            | col::FLOAT
            | col::DOUBLE
            | col::NEWDECIMAL
            | col::DECIMAL => true,
            col::YEAR => flavor == Flavor::MariaDb,
            _ => false,
        }
    }

    fn is_enum_or_set(&self) -> bool {
        matches!(self.real_type, col::ENUM | col::SET)
    }

    /// Whether the server lists the column in the charset metadata. MariaDB
    /// also lists GEOMETRY and COMPRESSED columns; MySQL does not.
    fn is_character(&self, flavor: Flavor) -> bool {
        match self.real_type {
            col::STRING
            | col::VAR_STRING
            | col::VARCHAR
            | col::BLOB
            | col::TINY_BLOB
            | col::MEDIUM_BLOB
            | col::LONG_BLOB => true,
            col::GEOMETRY | col::MARIA_BLOB_COMPRESSED | col::MARIA_VARCHAR_COMPRESSED => flavor == Flavor::MariaDb,
            _ => false,
        }
    }
}

/// Reads the per-column metadata block into raw columns.
fn read_column_meta(types: &[u8], meta: &[u8]) -> Result<Vec<RawColumn>, TableMapError> {
    let mut c = Cursor::new(meta);
    let mut out = Vec::with_capacity(types.len());
    for (index, &t) in types.iter().enumerate() {
        let mut rc = RawColumn {
            type_code: t,
            real_type: t,
            meta: 0,
            meta2: 0,
        };
        let m = short("column metadata");
        match t {
            col::FLOAT
            | col::DOUBLE
            | col::BLOB
            | col::TINY_BLOB
            | col::MEDIUM_BLOB
            | col::LONG_BLOB
            | col::GEOMETRY
            | col::JSON
            | col::VECTOR
            | col::TIMESTAMP2
            | col::DATETIME2
            | col::TIME2
            | col::MARIA_BLOB_COMPRESSED => rc.meta = u16::from(c.u8().map_err(m)?),
            col::VARCHAR | col::VAR_STRING | col::MARIA_VARCHAR_COMPRESSED => rc.meta = c.u16().map_err(m)?,
            col::BIT | col::NEWDECIMAL => {
                let a = c.u8().map_err(&m)?;
                let b = c.u8().map_err(&m)?;
                rc.meta = u16::from(a);
                rc.meta2 = b;
            }
            col::STRING | col::ENUM | col::SET => {
                let b0 = c.u8().map_err(&m)?;
                let b1 = c.u8().map_err(&m)?;
                // CHAR longer than 255 bytes borrows two bits of the type byte
                // (MySQL bug #37426): a real type with bits 0x30 not both set
                // carries length bits 8-9 there, inverted.
                if b0 & 0x30 != 0x30 {
                    rc.real_type = b0 | 0x30;
                    rc.meta = u16::from(b1) | (u16::from((b0 & 0x30) ^ 0x30) << 4);
                } else {
                    rc.real_type = b0;
                    rc.meta = u16::from(b1);
                }
                if t != col::STRING {
                    rc.real_type = t;
                }
            }
            col::DECIMAL
            | col::TINY
            | col::SHORT
            | col::LONG
            | col::NULL
            | col::TIMESTAMP
            | col::LONGLONG
            | col::INT24
            | col::DATE
            | col::TIME
            | col::DATETIME
            | col::YEAR
            | col::NEWDATE => {}
            _ => return Err(TableMapError::UnsupportedType { index, type_code: t }),
        }
        out.push(rc);
    }
    Ok(out)
}

/// What the optional metadata says, per column.
#[derive(Default)]
struct Optional {
    signed_known: bool,
    unsigned: Vec<bool>,
    charset_known: bool,
    collations: Vec<Option<u32>>,
    names: Option<Vec<String>>,
    labels: Vec<Option<Vec<Vec<u8>>>>,
    enum_set_collations: Vec<Option<u32>>,
    primary_key: Vec<bool>,
}

fn read_optional(raw: &[RawColumn], flavor: Flavor, bytes: &[u8]) -> Result<Optional, TableMapError> {
    let n = raw.len();
    let mut o = Optional {
        unsigned: vec![false; n],
        collations: vec![None; n],
        labels: vec![None; n],
        enum_set_collations: vec![None; n],
        primary_key: vec![false; n],
        ..Optional::default()
    };
    let numeric: Vec<usize> = (0..n).filter(|&i| raw[i].takes_signedness_bit(flavor)).collect();
    let character: Vec<usize> = (0..n).filter(|&i| raw[i].is_character(flavor)).collect();
    let enum_set: Vec<usize> = (0..n).filter(|&i| raw[i].is_enum_or_set()).collect();
    let mut c = Cursor::new(bytes);
    while !c.is_empty() {
        let t = c.u8().map_err(short("optional metadata type"))?;
        let v = c.packed_bytes().map_err(short("optional metadata field"))?;
        let mut f = Cursor::new(v);
        let s = short("optional metadata value");
        match t {
            meta::SIGNEDNESS => {
                o.signed_known = true;
                for (k, &i) in numeric.iter().enumerate() {
                    let byte = v.get(k / 8).copied().unwrap_or(0);
                    o.unsigned[i] = byte & (0x80 >> (k % 8)) != 0;
                }
            }
            meta::DEFAULT_CHARSET | meta::ENUM_AND_SET_DEFAULT_CHARSET => {
                let (targets, slot) = if t == meta::DEFAULT_CHARSET {
                    o.charset_known = true;
                    (&character, &mut o.collations)
                } else {
                    (&enum_set, &mut o.enum_set_collations)
                };
                let default = f.packed().map_err(&s)? as u32;
                for &i in targets {
                    slot[i] = Some(default);
                }
                while !f.is_empty() {
                    let k = f.packed().map_err(&s)? as usize;
                    let coll = f.packed().map_err(&s)? as u32;
                    if let Some(&i) = targets.get(k) {
                        slot[i] = Some(coll);
                    }
                }
            }
            meta::COLUMN_CHARSET | meta::ENUM_AND_SET_COLUMN_CHARSET => {
                let (targets, slot) = if t == meta::COLUMN_CHARSET {
                    o.charset_known = true;
                    (&character, &mut o.collations)
                } else {
                    (&enum_set, &mut o.enum_set_collations)
                };
                for &i in targets {
                    if f.is_empty() {
                        break;
                    }
                    slot[i] = Some(f.packed().map_err(&s)? as u32);
                }
            }
            meta::COLUMN_NAME => {
                let mut names = Vec::with_capacity(n);
                while !f.is_empty() && names.len() < n {
                    names.push(String::from_utf8_lossy(f.packed_bytes().map_err(&s)?).into_owned());
                }
                if names.len() == n {
                    o.names = Some(names);
                }
            }
            meta::SET_STR_VALUE | meta::ENUM_STR_VALUE => {
                let want = if t == meta::SET_STR_VALUE { col::SET } else { col::ENUM };
                for &i in enum_set.iter().filter(|&&i| raw[i].real_type == want) {
                    if f.is_empty() {
                        break;
                    }
                    let count = f.packed().map_err(&s)?;
                    let mut labels = Vec::new();
                    for _ in 0..count {
                        labels.push(f.packed_bytes().map_err(&s)?.to_vec());
                    }
                    o.labels[i] = Some(labels);
                }
            }
            meta::SIMPLE_PRIMARY_KEY => {
                while !f.is_empty() {
                    let i = f.packed().map_err(&s)? as usize;
                    if let Some(pk) = o.primary_key.get_mut(i) {
                        *pk = true;
                    }
                }
            }
            meta::PRIMARY_KEY_WITH_PREFIX => {
                while !f.is_empty() {
                    let i = f.packed().map_err(&s)? as usize;
                    let _prefix = f.packed().map_err(&s)?;
                    if let Some(pk) = o.primary_key.get_mut(i) {
                        *pk = true;
                    }
                }
            }
            // GEOMETRY_TYPE, COLUMN_VISIBILITY and future fields do not
            // change how values decode.
            _ => {}
        }
    }
    Ok(o)
}

/// Input to [`TableMap::parse`] besides the body.
#[derive(Debug, Clone, Copy)]
pub struct TableMapContext {
    /// Which server wrote the binlog.
    pub flavor: Flavor,
    /// Table id width in bytes: 6, or 4 for binlogs written by MySQL 5.0/5.1.early.
    pub table_id_len: usize,
}

impl TableMap {
    /// Reads only the table id, schema and table name: enough to decide
    /// whether a table is wanted before planning it.
    pub fn peek_names(body: &[u8], table_id_len: usize) -> Option<(u64, &[u8], &[u8])> {
        let mut c = Cursor::new(body);
        let table_id = c.uint_n(table_id_len).ok()?;
        c.skip(2).ok()?;
        let dl = usize::from(c.u8().ok()?);
        let db = c.take(dl).ok()?;
        c.skip(1).ok()?;
        let tl = usize::from(c.u8().ok()?);
        let table = c.take(tl).ok()?;
        Some((table_id, db, table))
    }

    /// Parses a TABLE_MAP body and plans the table.
    pub fn parse(body: &[u8], ctx: TableMapContext) -> Result<TableMap, TableMapError> {
        let mut c = Cursor::new(body);
        let table_id = c.uint_n(ctx.table_id_len).map_err(short("table id"))?;
        let _flags = c.u16().map_err(short("flags"))?;
        let dl = usize::from(c.u8().map_err(short("schema name length"))?);
        let db = String::from_utf8_lossy(c.take(dl).map_err(short("schema name"))?).into_owned();
        c.skip(1).map_err(short("schema name"))?;
        let tl = usize::from(c.u8().map_err(short("table name length"))?);
        let table = String::from_utf8_lossy(c.take(tl).map_err(short("table name"))?).into_owned();
        c.skip(1).map_err(short("table name"))?;
        let n = c.packed().map_err(short("column count"))?;
        if n > 4096 {
            return Err(TableMapError::Invalid("column count", n.to_string()));
        }
        let n = n as usize;
        let types = c.take(n).map_err(short("column types"))?;
        let meta = c.packed_bytes().map_err(short("column metadata"))?;
        let nulls = c.take(n.div_ceil(8)).map_err(short("null bitmap"))?;
        let raw = read_column_meta(types, meta)?;
        let opt = read_optional(&raw, ctx.flavor, c.rest())?;

        let mut columns = Vec::with_capacity(n);
        for (i, rc) in raw.iter().enumerate() {
            let name = match &opt.names {
                Some(names) => names[i].clone(),
                None => format!("@{}", i + 1),
            };
            let charset = |coll: Option<u32>| coll.and_then(charset_of_collation);
            let kind = plan_kind(i, rc, opt.unsigned[i], charset(opt.collations[i]), opt.charset_known)?;
            let labels = match &opt.labels[i] {
                Some(labels) => {
                    let cs = charset(opt.enum_set_collations[i]).unwrap_or(Charset::Utf8);
                    labels.iter().map(|l| label_json_body(l, cs)).collect()
                }
                None => Vec::new(),
            };
            let mut key_json = Vec::with_capacity(name.len() + 3);
            json_text::write_str(&mut key_json, &name);
            key_json.push(b':');
            columns.push(Column {
                key_json: key_json.into_boxed_slice(),
                name,
                type_code: rc.type_code,
                kind,
                nullable: nulls.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0),
                labels,
                primary_key: opt.primary_key[i],
            });
        }
        let mut names_json = Vec::new();
        names_json.extend_from_slice(b"\"db\":");
        json_text::write_str(&mut names_json, &db);
        names_json.extend_from_slice(b",\"table\":");
        json_text::write_str(&mut names_json, &table);
        Ok(TableMap {
            table_id,
            db,
            table,
            names_json: names_json.into_boxed_slice(),
            columns,
            has_names: opt.names.is_some(),
            has_types: opt.signed_known || opt.charset_known,
        })
    }

    /// Sets label `index` (0-based) of ENUM or SET column `column` to
    /// `label`, text in the collation `collation`'s charset; whether it
    /// changed. (A snapshot learns the labels information_schema cannot
    /// show, those with characters outside its utf8mb3, from the rows.)
    pub fn set_label(&mut self, column: usize, index: usize, label: &[u8], collation: u32) -> bool {
        let cs = charset_of_collation(collation).unwrap_or(Charset::Utf8);
        let body = label_json_body(label, cs);
        match self.columns.get_mut(column).and_then(|c| c.labels.get_mut(index)) {
            Some(old) if *old != body => {
                *old = body;
                true
            }
            _ => false,
        }
    }

    /// Replaces positional names with `names` (from information_schema), when
    /// the count matches.
    pub fn rename_columns(&mut self, names: &[String]) -> bool {
        if names.len() != self.columns.len() {
            return false;
        }
        for (c, name) in self.columns.iter_mut().zip(names) {
            let mut key_json = Vec::with_capacity(name.len() + 3);
            json_text::write_str(&mut key_json, name);
            key_json.push(b':');
            c.key_json = key_json.into_boxed_slice();
            c.name = name.clone();
        }
        true
    }
}

fn label_json_body(label: &[u8], cs: Charset) -> Box<str> {
    let mut quoted = Vec::with_capacity(label.len() + 2);
    super::charset::write_json_text(&mut quoted, label, cs);
    // Strip the quotes: SET values are joined inside one string.
    let body = &quoted[1..quoted.len() - 1];
    String::from_utf8_lossy(body).into()
}

fn len_bytes_for(max_len: u16) -> u8 {
    if max_len > 255 { 2 } else { 1 }
}

fn plan_kind(
    index: usize,
    rc: &RawColumn,
    unsigned: bool,
    charset: Option<Charset>,
    charset_known: bool,
) -> Result<ColumnKind, TableMapError> {
    // Without charset metadata, CHAR/VARCHAR are taken as UTF-8 text and
    // BLOB/TEXT as bytes: the binlog cannot tell TEXT from BLOB then.
    let text_cs = charset.unwrap_or(if charset_known { Charset::Binary } else { Charset::Utf8 });
    let blob_cs = charset.unwrap_or(Charset::Binary);
    let fsp = |m: u16| -> Result<u8, TableMapError> {
        if m > 6 {
            Err(TableMapError::Invalid("fractional seconds precision", m.to_string()))
        } else {
            Ok(m as u8)
        }
    };
    let blob_len = |m: u16| -> Result<u8, TableMapError> {
        if (1..=4).contains(&m) {
            Ok(m as u8)
        } else {
            Err(TableMapError::Invalid("blob length width", m.to_string()))
        }
    };
    Ok(match rc.real_type {
        col::TINY => ColumnKind::Int { bytes: 1, unsigned },
        col::SHORT => ColumnKind::Int { bytes: 2, unsigned },
        col::INT24 => ColumnKind::Int { bytes: 3, unsigned },
        col::LONG => ColumnKind::Int { bytes: 4, unsigned },
        col::LONGLONG => ColumnKind::Int { bytes: 8, unsigned },
        col::YEAR => ColumnKind::Year,
        col::FLOAT => ColumnKind::Float,
        col::DOUBLE => ColumnKind::Double,
        col::NEWDECIMAL => {
            let (precision, scale) = (rc.meta as u8, rc.meta2);
            if precision == 0 || precision > 65 || scale > 38 || scale > precision {
                return Err(TableMapError::Invalid(
                    "DECIMAL precision/scale",
                    format!("({precision},{scale})"),
                ));
            }
            ColumnKind::Decimal {
                precision,
                scale,
                size: super::decimal::decimal_bin_size(precision, scale),
            }
        }
        col::DATE | col::NEWDATE => ColumnKind::Date,
        col::DATETIME => ColumnKind::DateTimeOld,
        col::DATETIME2 => ColumnKind::DateTime2 { fsp: fsp(rc.meta)? },
        col::TIMESTAMP => ColumnKind::TimestampOld,
        col::TIMESTAMP2 => ColumnKind::Timestamp2 { fsp: fsp(rc.meta)? },
        col::TIME => ColumnKind::TimeOld,
        col::TIME2 => ColumnKind::Time2 { fsp: fsp(rc.meta)? },
        col::VARCHAR | col::VAR_STRING => ColumnKind::String {
            len_bytes: len_bytes_for(rc.meta),
            charset: text_cs,
            pad_to: None,
        },
        col::STRING => {
            let cs = text_cs;
            ColumnKind::String {
                len_bytes: len_bytes_for(rc.meta),
                charset: cs,
                pad_to: (cs == Charset::Binary).then_some(rc.meta),
            }
        }
        col::BLOB | col::TINY_BLOB | col::MEDIUM_BLOB | col::LONG_BLOB => ColumnKind::String {
            len_bytes: blob_len(rc.meta)?,
            charset: blob_cs,
            pad_to: None,
        },
        col::ENUM => match rc.meta {
            1 | 2 => ColumnKind::Enum { bytes: rc.meta as u8 },
            m => return Err(TableMapError::Invalid("ENUM width", m.to_string())),
        },
        col::SET => match rc.meta {
            1..=8 => ColumnKind::Set { bytes: rc.meta as u8 },
            m => return Err(TableMapError::Invalid("SET width", m.to_string())),
        },
        col::BIT => {
            let bytes = rc.meta2 as usize + usize::from(rc.meta > 0);
            if bytes == 0 || bytes > 8 {
                return Err(TableMapError::Invalid("BIT width", bytes.to_string()));
            }
            ColumnKind::Bit { bytes: bytes as u8 }
        }
        col::JSON => ColumnKind::Json {
            len_bytes: blob_len(rc.meta)?,
        },
        col::GEOMETRY => ColumnKind::Geometry {
            len_bytes: blob_len(rc.meta)?,
        },
        col::VECTOR => ColumnKind::Vector {
            len_bytes: blob_len(rc.meta)?,
        },
        col::MARIA_BLOB_COMPRESSED => ColumnKind::Compressed {
            len_bytes: blob_len(rc.meta)?,
            charset: blob_cs,
        },
        col::MARIA_VARCHAR_COMPRESSED => ColumnKind::Compressed {
            len_bytes: len_bytes_for(rc.meta),
            charset: text_cs,
        },
        t => return Err(TableMapError::UnsupportedType { index, type_code: t }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TABLE_MAP body for `test`.`t` with `columns` (type code, metadata
    /// bytes) and a SIGNEDNESS field of `signedness` bytes.
    fn table_map(columns: &[(u8, &[u8])], signedness: &[u8]) -> Vec<u8> {
        let mut b = vec![1, 0, 0, 0, 0, 0, 0, 0]; // table id 1, flags
        b.extend_from_slice(&[4, b't', b'e', b's', b't', 0, 1, b't', 0]);
        b.push(columns.len() as u8);
        b.extend(columns.iter().map(|c| c.0));
        let meta: Vec<u8> = columns.iter().flat_map(|c| c.1.iter().copied()).collect();
        b.push(meta.len() as u8);
        b.extend_from_slice(&meta);
        b.extend(std::iter::repeat_n(0xff, columns.len().div_ceil(8)));
        b.extend_from_slice(&[meta::SIGNEDNESS, signedness.len() as u8]);
        b.extend_from_slice(signedness);
        b
    }

    fn unsigned_ints(t: &TableMap) -> Vec<(usize, bool)> {
        t.columns
            .iter()
            .enumerate()
            .filter_map(|(i, c)| match c.kind {
                ColumnKind::Int { unsigned, .. } => Some((i, unsigned)),
                _ => None,
            })
            .collect()
    }

    fn plan(flavor: Flavor, columns: &[(u8, &[u8])], signedness: &[u8]) -> TableMap {
        let ctx = TableMapContext {
            flavor,
            table_id_len: 6,
        };
        TableMap::parse(&table_map(columns, signedness), ctx).expect("plans")
    }

    #[test]
    fn year_takes_a_signedness_bit_on_mariadb_only() {
        // y YEAR, a TINYINT UNSIGNED, bt BIT(4), b TINYINT, c TINYINT UNSIGNED
        let columns: &[(u8, &[u8])] = &[
            (col::YEAR, &[]),
            (col::TINY, &[]),
            (col::BIT, &[4, 0]),
            (col::TINY, &[]),
            (col::TINY, &[]),
        ];
        // MariaDB writes y=1 (YEAR is unsigned), a=1, b=0, c=1; BIT takes no bit.
        let t = plan(Flavor::MariaDb, columns, &[0b1101_0000]);
        assert_eq!(unsigned_ints(&t), [(1, true), (3, false), (4, true)]);
        // MySQL writes no bit for YEAR: a=1, b=0, c=1.
        let t = plan(Flavor::MySql, columns, &[0b1010_0000]);
        assert_eq!(unsigned_ints(&t), [(1, true), (3, false), (4, true)]);
    }

    #[test]
    fn signedness_bits_run_over_bytes_past_bit_and_year() {
        // Nine integers alternating unsigned/signed with a BIT and a YEAR
        // among them: the ninth bit is in the second byte.
        let mut columns: Vec<(u8, &[u8])> = Vec::new();
        let mut bits = Vec::new();
        for i in 0..9 {
            if i == 2 {
                columns.push((col::BIT, &[1, 0]));
            }
            if i == 5 {
                columns.push((col::YEAR, &[]));
                bits.push(true);
            }
            columns.push((col::LONGLONG, &[]));
            bits.push(i % 2 == 0);
        }
        let mut bytes = vec![0u8; bits.len().div_ceil(8)];
        for (k, &b) in bits.iter().enumerate() {
            if b {
                bytes[k / 8] |= 0x80 >> (k % 8);
            }
        }
        let t = plan(Flavor::MariaDb, &columns, &bytes);
        let got: Vec<bool> = unsigned_ints(&t).into_iter().map(|(_, u)| u).collect();
        assert_eq!(got, (0..9).map(|i| i % 2 == 0).collect::<Vec<_>>());
    }

    #[test]
    fn decimal_scale_up_to_38() {
        for (precision, scale, ok) in [
            (38, 38, true),
            (65, 38, true),
            (1, 1, true),
            (65, 0, true),
            (39, 39, false),
            (66, 0, false),
            (5, 6, false),
            (0, 0, false),
        ] {
            let r = TableMap::parse(
                &table_map(&[(col::NEWDECIMAL, &[precision, scale])], &[0]),
                TableMapContext {
                    flavor: Flavor::MariaDb,
                    table_id_len: 6,
                },
            );
            assert_eq!(r.is_ok(), ok, "DECIMAL({precision},{scale}): {:?}", r.err());
        }
    }
}
