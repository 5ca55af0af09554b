//! The binlog decoder: bytes in, row changes or a typed [`DecodeError`] out.
//!
//! It is pure: no I/O, no clock, no global state. A source (live replica
//! stream or binlog file) hands it one event at a time as a [`RawEvent`];
//! [`Decoder`] keeps the format description, the table maps and the open
//! transaction, and reports row changes and commits to a [`ChangeVisitor`].
//!
//! Each table is planned once, when its TABLE_MAP arrives ([`table_map`]);
//! rows are then decoded into a reused buffer of borrowed [`value::Value`]s
//! without allocating per row or per column.

pub mod charset;
pub mod cursor;
pub mod decimal;
pub mod event;
pub mod gtid;
pub mod mysql_json;
pub mod rows;
pub mod table_map;
pub mod tagged;
pub mod temporal;
pub mod txn;
pub mod value;

#[cfg(test)]
mod robustness;

pub use cursor::Cursor;
pub use event::{EventHeader, FormatDescription, RawEvent};
pub use txn::{ChangeVisitor, Commit, Decoder, DecoderOptions, Flow, Op, RowChange, Undecodable};

/// Why an event could not be decoded. Every variant that concerns bytes names
/// where they are (binlog file and offset), so a report points at the event.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The event ended before a field it announces.
    #[error("{at}: {what} is truncated (needs {need} more bytes)")]
    Truncated {
        /// Where the event starts.
        at: At,
        /// The field being read.
        what: &'static str,
        /// Bytes missing.
        need: usize,
    },
    /// A field holds a value the format does not allow.
    #[error("{at}: invalid {what}: {detail}")]
    Invalid {
        /// Where the event starts.
        at: At,
        /// The field being read.
        what: &'static str,
        /// What is wrong with it.
        detail: String,
    },
    /// A rows event names a table id no TABLE_MAP announced.
    #[error("{at}: rows event for table id {table_id} without a preceding TABLE_MAP")]
    UnknownTable {
        /// Where the event starts.
        at: At,
        /// The table id in the rows event.
        table_id: u64,
    },
    /// Rows the decoder cannot decode (a table it cannot plan, a row image
    /// it cannot read), and the visitor chose to halt on them; names the
    /// table, column and position.
    #[error("{0}")]
    Undecodable(String),
    /// An event type that cannot be skipped safely and is not understood.
    #[error("{at}: unknown event type {type_code} (not marked ignorable); refusing to skip it")]
    UnknownEvent {
        /// Where the event starts.
        at: At,
        /// The event type code.
        type_code: u8,
    },
    /// A binlog feature that is recognised but not supported.
    #[error("{at}: {what}")]
    Unsupported {
        /// Where the event starts.
        at: At,
        /// What it is, and what to do.
        what: String,
    },
    /// The table map has no column names and the decoder was told to require them.
    #[error(
        "{at}: TABLE_MAP of `{db}`.`{table}` has no column names: the server writes binlog_row_metadata=MINIMAL or NO_LOG. \
         Fix: SET GLOBAL binlog_row_metadata = 'FULL' (and in my.cnf: binlog_row_metadata = FULL), \
         then FLUSH BINARY LOGS"
    )]
    NoColumnNames {
        /// Where the TABLE_MAP starts.
        at: At,
        /// Schema name.
        db: String,
        /// Table name.
        table: String,
    },
}

/// A place in the binlog: file name and byte offset of an event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct At {
    /// Binlog file name, as the server names it.
    pub file: std::sync::Arc<str>,
    /// Offset of the event's first byte.
    pub pos: u64,
}

impl std::fmt::Display for At {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.pos)
    }
}
