//! Snapshots: the rows tables hold, read in chunks by key and handed to
//! handlers as changes with `op = "snapshot"`, in the binlog stream at the
//! exact place each chunk was read at.
//!
//! Each chunk is read in a transaction of its own, started `WITH
//! CONSISTENT SNAPSHOT`; MariaDB reports the binlog position that
//! transaction sees (`Binlog_snapshot_file`, `Binlog_snapshot_position`).
//! The pipeline hands the chunk's rows to its handlers when the stream has
//! read exactly up to there, between two transactions: every change before
//! that place is in the chunk's rows and every change after it comes after
//! them, so no row is left at an older value and none is missed. No lock,
//! no write to the source, and no transaction open longer than one chunk.
//!
//! `reader` is the connection that reads chunks, on a thread of its own;
//! `table` plans a table the way the decoder plans a TABLE_MAP. What is
//! left of a snapshot ([`Progress`]) is committed to the store with the
//! position and handler state of the chunk that moved it, so a snapshot
//! stopped at any point goes on from its last committed chunk.

pub mod reader;
pub mod table;

use serde::{Deserialize, Serialize};

/// One key column's value of the last row of a chunk: where the next chunk
/// starts (after it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyValue {
    /// A signed integer.
    Int(i64),
    /// An unsigned integer.
    UInt(u64),
    /// A FLOAT.
    Float(f32),
    /// A DOUBLE.
    Double(f64),
    /// Bytes: text in the column's charset, DECIMAL digits, binary.
    Bytes(Vec<u8>),
    /// A date or date and time: year, month, day, hour, minute, second, microseconds.
    Date(u16, u8, u8, u8, u8, u8, u32),
    /// A time: negative, days, hours, minutes, seconds, microseconds.
    Time(bool, u32, u8, u8, u8, u32),
}

/// A table whose snapshot is asked for, and how far it got.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableProgress {
    /// The schema.
    pub db: String,
    /// The table.
    pub table: String,
    /// Only the rows this SQL condition selects (`--where`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// Chunks handed to handlers and committed.
    pub chunks: u64,
    /// Rows in them.
    pub rows: u64,
    /// The key of the last row committed; `None` before the first chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Vec<KeyValue>>,
}

impl TableProgress {
    /// A snapshot of `db.table` (rows `filter` selects) from its start.
    pub fn new(db: &str, table: &str, filter: Option<String>) -> TableProgress {
        TableProgress {
            db: db.to_owned(),
            table: table.to_owned(),
            filter,
            chunks: 0,
            rows: 0,
            after: None,
        }
    }

    /// `db.table`.
    pub fn name(&self) -> String {
        format!("{}.{}", self.db, self.table)
    }
}

/// What is left of the snapshots asked for: tables in the order they are
/// read, the first one in progress.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// The tables.
    pub tables: Vec<TableProgress>,
}

impl Progress {
    /// Whether every snapshot asked for is done.
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }
}
