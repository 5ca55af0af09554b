//! The connection that reads snapshot chunks, on a thread of its own, so
//! that the server sends the next chunk while handlers take the last one.
//!
//! The pipeline asks for a chunk with [`Reader::open`]; the reader starts a
//! transaction `WITH CONSISTENT SNAPSHOT` and answers at once with the
//! binlog position that transaction sees ([`Opened`]), then reads the rows
//! and sends them ([`Reader::rows`]). A lost connection is reopened with
//! backoff and the chunk read again from a new transaction, announced with
//! a new position.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Params, Value as MyValue};
use tokio::sync::{mpsc, oneshot};

use super::table::SnapTable;
use super::{KeyValue, TableProgress};
use crate::backoff::Backoff;
use crate::decode::decimal::encode_decimal;
use crate::decode::table_map::ColumnKind;
use crate::decode::temporal::{DateTime, Time};
use crate::decode::value::Value;
use crate::source::server::SourceUrl;

/// How a snapshot reads.
#[derive(Debug, Clone)]
pub struct ReaderOptions {
    /// The server, as a user that may SELECT the tables.
    pub url: SourceUrl,
    /// Rows per chunk.
    pub chunk_rows: u32,
    /// At most this many rows a second; `None`: as fast as the server sends.
    pub rows_per_second: Option<u32>,
}

/// One column value of a chunk, owned; text and bytes in the chunk's arena.
#[derive(Debug, Clone, Copy)]
enum Cell {
    Null,
    Int(i64),
    UInt(u64),
    Float(f32),
    Double(f64),
    Bytes(u32, u32),
    Decimal(u32, u32),
    Date(DateTime),
    DateTime(DateTime),
    Timestamp(u32, u32),
    Time(Time),
    Enum(u16),
    Set(u64),
    Bit(u64),
}

/// Rows of a table read in one consistent snapshot.
#[derive(Debug)]
pub struct Chunk {
    /// The table.
    pub table: Arc<SnapTable>,
    /// The chunk's number within the table's snapshot, from 0.
    pub index: u64,
    /// The table's snapshot after this chunk.
    pub progress: TableProgress,
    /// Whether it is the table's last chunk.
    pub done: bool,
    cells: Vec<Cell>,
    arena: Vec<u8>,
}

impl Chunk {
    /// How many rows it holds.
    pub fn len(&self) -> usize {
        self.cells.len().checked_div(self.table.columns.len()).unwrap_or(0)
    }

    /// Whether it holds no row.
    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }

    /// Row `i`'s values, in table order, into `out`.
    pub fn row<'a>(&'a self, i: usize, out: &mut Vec<Value<'a>>) {
        let width = self.table.columns.len();
        let arena = &self.arena;
        let bytes = |at: u32, len: u32| &arena[at as usize..(at + len) as usize];
        out.clear();
        out.extend(self.cells[i * width..(i + 1) * width].iter().map(|c| match *c {
            Cell::Null => Value::Null,
            Cell::Int(v) => Value::Int(v),
            Cell::UInt(v) => Value::UInt(v),
            Cell::Float(v) => Value::Float(v),
            Cell::Double(v) => Value::Double(v),
            Cell::Bytes(at, len) => Value::Bytes(bytes(at, len)),
            Cell::Decimal(at, len) => Value::Decimal(bytes(at, len)),
            Cell::Date(d) => Value::Date(d),
            Cell::DateTime(d) => Value::DateTime(d),
            Cell::Timestamp(s, us) => Value::Timestamp(s, us),
            Cell::Time(t) => Value::Time(t),
            Cell::Enum(v) => Value::Enum(v),
            Cell::Set(v) => Value::Set(v),
            Cell::Bit(v) => Value::Bit(v),
        }));
    }
}

/// The binlog position a chunk's rows are consistent with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The binlog file.
    pub file: String,
    /// The offset in it: every transaction that ends at or before it is in
    /// the chunk's rows, and none after it.
    pub pos: u64,
}

/// What the reader sends the pipeline.
#[derive(Debug)]
pub enum Reply {
    /// The next chunk's transaction is open: its rows are the table as of there.
    Opened(Opened),
    /// The rows of the chunk opened last.
    Rows(Box<Chunk>),
    /// No table is left to read.
    Idle,
    /// The reader cannot go on: the snapshot fails.
    Failed(anyhow::Error),
}

enum Request {
    Open,
    Add(TableProgress, oneshot::Sender<anyhow::Result<()>>),
}

/// The reading thread's handle.
pub struct Reader {
    requests: mpsc::UnboundedSender<Request>,
    replies: mpsc::UnboundedReceiver<Reply>,
}

impl Reader {
    /// Starts the thread; it connects at the first request.
    pub fn start(opts: ReaderOptions) -> anyhow::Result<Reader> {
        let (requests, rx) = mpsc::unbounded_channel();
        let (tx, replies) = mpsc::unbounded_channel();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| anyhow::anyhow!("starting the snapshot runtime: {e}"))?;
        std::thread::Builder::new()
            .name("rowhook-snapshot".into())
            .spawn(move || rt.block_on(serve(opts, rx, tx)))
            .map_err(|e| anyhow::anyhow!("starting the snapshot thread: {e}"))?;
        Ok(Reader { requests, replies })
    }

    /// Queues `table` after the tables already asked for, once its shape is
    /// read and checked (a key to read it by, types a snapshot reads, the
    /// filter valid): the returned receiver answers.
    pub fn add(&self, table: TableProgress) -> oneshot::Receiver<anyhow::Result<()>> {
        let (tx, rx) = oneshot::channel();
        if let Err(mpsc::error::SendError(Request::Add(_, tx))) = self.requests.send(Request::Add(table, tx)) {
            let _ = tx.send(Err(anyhow::anyhow!("the snapshot reader has stopped")));
        }
        rx
    }

    /// Asks for the next chunk: [`Reply::Opened`] comes first, then
    /// [`Reply::Rows`]; or [`Reply::Idle`].
    pub fn open(&self) {
        let _ = self.requests.send(Request::Open);
    }

    /// The next reply, or `None` once the thread has ended.
    pub async fn next(&mut self) -> Option<Reply> {
        self.replies.recv().await
    }
}

/// A table being read: its progress and plan, and the key to go on after.
struct Current {
    progress: TableProgress,
    table: Arc<SnapTable>,
    after: Option<Vec<MyValue>>,
}

struct State {
    opts: ReaderOptions,
    conn: Option<Conn>,
    tables: VecDeque<Current>,
    planned: u64,
    started: Instant,
    read: u64,
}

async fn serve(opts: ReaderOptions, mut rx: mpsc::UnboundedReceiver<Request>, tx: mpsc::UnboundedSender<Reply>) {
    let mut s = State {
        opts,
        conn: None,
        tables: VecDeque::new(),
        planned: 0,
        started: Instant::now(),
        read: 0,
    };
    while let Some(request) = rx.recv().await {
        match request {
            Request::Add(progress, reply) => {
                let added = s.add(progress).await;
                let _ = reply.send(added);
            }
            Request::Open => {
                if s.tables.is_empty() {
                    let _ = tx.send(Reply::Idle);
                    continue;
                }
                if let Err(e) = s.chunk(&tx).await {
                    let _ = tx.send(Reply::Failed(e));
                }
            }
        }
    }
}

/// Whether a server error is worth reading the chunk again for.
fn transient(e: &mysql_async::Error) -> bool {
    match e {
        mysql_async::Error::Io(_) | mysql_async::Error::Driver(_) => true,
        // Lock wait timeout, deadlock, server shutdown, lost connection.
        mysql_async::Error::Server(s) => matches!(s.code, 1205 | 1213 | 1053 | 2006 | 2013 | 1927),
        _ => false,
    }
}

impl State {
    async fn conn(&mut self) -> anyhow::Result<&mut Conn> {
        if self.conn.is_none() {
            let mut conn = self.opts.url.connect().await?;
            // Values as stored: UTC timestamps, text in the column's own
            // charset; repeatable read, and nothing written.
            conn.query_drop(
                "SET SESSION time_zone = '+00:00', SESSION character_set_results = NULL; \
                 SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY",
            )
            .await
            .map_err(|e| self.opts.url.explain(e))?;
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("connected above"))
    }

    async fn plan(&mut self, progress: &TableProgress) -> anyhow::Result<SnapTable> {
        let n = self.planned;
        self.planned += 1;
        SnapTable::read(self.conn().await?, &progress.db, &progress.table, n).await
    }

    async fn add(&mut self, progress: TableProgress) -> anyhow::Result<()> {
        let n = self.planned;
        self.planned += 1;
        let url = self.opts.url.clone();
        let table = readable(self.conn().await?, &url, &progress, n).await?;
        let after = progress.after.as_ref().map(|keys| keys.iter().map(to_my).collect());
        self.tables.push_back(Current {
            progress,
            table: Arc::new(table),
            after,
        });
        Ok(())
    }

    /// Reads the next chunk of the first table, again from a new
    /// transaction after a lost connection.
    async fn chunk(&mut self, tx: &mpsc::UnboundedSender<Reply>) -> anyhow::Result<()> {
        self.keep_rate().await;
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        let mut planned_again = false;
        loop {
            match self.try_chunk(tx).await {
                Ok(()) => return Ok(()),
                Err(ChunkError::Server(e)) if transient(&e) => {
                    let url = self.opts.url.clone();
                    tracing::warn!(error = %url.explain_ref(&e), "snapshot connection lost: reading the chunk again");
                    self.conn = None;
                    tokio::time::sleep(backoff.delay()).await;
                }
                // The table changed shape since it was planned (an ALTER).
                Err(ChunkError::Shape(_)) | Err(ChunkError::Server(_)) if !planned_again => {
                    planned_again = true;
                    let _ = self.rollback().await;
                    let progress = self.tables[0].progress.clone();
                    let table = self.plan(&progress).await?;
                    self.tables[0].table = Arc::new(table);
                }
                Err(ChunkError::Shape(e)) => return Err(e),
                Err(ChunkError::Server(e)) => {
                    let name = self.tables[0].progress.name();
                    return Err(grant_error(&self.opts.url, &name, &e));
                }
            }
        }
    }

    async fn rollback(&mut self) -> anyhow::Result<()> {
        if let Some(conn) = self.conn.as_mut() {
            conn.query_drop("ROLLBACK").await?;
        }
        Ok(())
    }

    async fn keep_rate(&mut self) {
        if let Some(rate) = self.opts.rows_per_second {
            let due = self.started + Duration::from_secs_f64(self.read as f64 / f64::from(rate.max(1)));
            tokio::time::sleep_until(due.into()).await;
        }
    }

    async fn try_chunk(&mut self, tx: &mpsc::UnboundedSender<Reply>) -> Result<(), ChunkError> {
        let limit = self.opts.chunk_rows;
        let current = &self.tables[0];
        let table = current.table.clone();
        let sql = table.chunk_query(current.progress.filter.as_deref(), current.after.is_some(), limit);
        let params = match &current.after {
            Some(key) => Params::Positional(table.param_order().into_iter().map(|k| key[k].clone()).collect()),
            None => Params::Empty,
        };
        let conn = self.conn().await.map_err(ChunkError::Shape)?;
        conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
            .await?;
        let status: Vec<(String, String)> = conn.query("SHOW STATUS LIKE 'binlog_snapshot_%'").await?;
        let get = |name: &str| {
            status
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let (Some(file), Some(pos)) = (
            get("Binlog_snapshot_file"),
            get("Binlog_snapshot_position").and_then(|p| p.parse::<u64>().ok()),
        ) else {
            return Err(ChunkError::Shape(anyhow::anyhow!(
                "the server does not say which binlog position a consistent snapshot sees \
                 (MariaDB reports it as Binlog_snapshot_file and Binlog_snapshot_position; MySQL does not), \
                 so rowhook cannot place a snapshot's rows in the stream. Snapshots need MariaDB"
            )));
        };
        if file.is_empty() {
            return Err(ChunkError::Shape(anyhow::anyhow!(
                "the server's binlog is off (Binlog_snapshot_file is empty); a snapshot needs it on, as the stream does"
            )));
        }
        let _ = tx.send(Reply::Opened(Opened { file, pos }));

        let width = table.columns.len();
        let label_columns = table.label_columns();
        let mut learned: Vec<(usize, usize, Vec<u8>, u32)> = Vec::new();
        let key = table.key.clone();
        let mut cells = Vec::with_capacity(limit as usize * width);
        let mut arena = Vec::new();
        let mut last: Option<Vec<Option<MyValue>>> = None;
        let mut bad: Option<String> = None;
        let mut rows = 0u64;
        let mut result = conn.exec_iter(sql, params).await?;
        result
            .for_each(|row| {
                if bad.is_some() {
                    return;
                }
                let raw = row.unwrap_raw();
                if raw.len() != width + label_columns.len() {
                    bad = Some(format!("{} columns where {width} were planned", raw.len()));
                    return;
                }
                for (k, &(i, collation)) in label_columns.iter().enumerate() {
                    if let (Some(index), Some(MyValue::Bytes(text))) = (&raw[i], &raw[width + k]) {
                        let set = matches!(table.map.columns[i].kind, ColumnKind::Set { .. });
                        learn_labels((i, set, collation), index, text, &mut learned);
                    }
                }
                for (v, c) in raw.iter().zip(&table.map.columns) {
                    match cell(&c.kind, v.as_ref().unwrap_or(&MyValue::NULL), &mut arena) {
                        Ok(cell) => cells.push(cell),
                        Err(e) => {
                            bad = Some(format!("column `{}`: {e}", c.name));
                            return;
                        }
                    }
                }
                rows += 1;
                last = Some(raw);
            })
            .await?;
        drop(result);
        conn.query_drop("COMMIT").await?;
        if let Some(why) = bad {
            return Err(ChunkError::Shape(anyhow::anyhow!(
                "cannot read a snapshot of `{}`: {why}",
                self.tables[0].progress.name()
            )));
        }
        self.read += rows;
        let done = rows < u64::from(limit);
        let current = &mut self.tables[0];
        let mut table = table;
        if !learned.is_empty() {
            let mut patched = (*table).clone();
            let mut changed = false;
            for (column, index, label, collation) in learned {
                changed |= patched.map.set_label(column, index, &label, collation);
            }
            if changed {
                table = Arc::new(patched);
            }
        }
        current.table = table.clone();
        if let Some(raw) = last {
            let key: Vec<MyValue> = key.iter().map(|&k| raw[k].clone().unwrap_or(MyValue::NULL)).collect();
            current.progress.after = Some(key.iter().map(from_my).collect());
            current.after = Some(key);
        }
        let index = current.progress.chunks;
        current.progress.chunks += 1;
        current.progress.rows += rows;
        let chunk = Chunk {
            table,
            index,
            progress: current.progress.clone(),
            done,
            cells,
            arena,
        };
        if done {
            self.tables.pop_front();
        }
        let _ = tx.send(Reply::Rows(Box::new(chunk)));
        Ok(())
    }
}

enum ChunkError {
    Server(mysql_async::Error),
    Shape(anyhow::Error),
}

impl From<mysql_async::Error> for ChunkError {
    fn from(e: mysql_async::Error) -> Self {
        ChunkError::Server(e)
    }
}

/// Plans the table of `progress` and tries its statement once, reading
/// nothing: a table without a key, of a type a snapshot cannot read, that
/// the user may not SELECT, or a filter that does not parse is refused
/// before any chunk. `n` numbers the table (its table id).
pub async fn readable(conn: &mut Conn, url: &SourceUrl, progress: &TableProgress, n: u64) -> anyhow::Result<SnapTable> {
    let table = SnapTable::read(conn, &progress.db, &progress.table, n).await?;
    let name = progress.name();
    let sql = table.chunk_query(progress.filter.as_deref(), false, 0);
    conn.query_drop(&sql).await.map_err(|e| match &progress.filter {
        Some(f) => anyhow::anyhow!(
            "cannot read a snapshot of `{name}` where {f}: {}. Fix the condition (it is SQL, as in a WHERE clause)",
            url.scrub(&e.to_string())
        ),
        None => grant_error(url, &name, &e),
    })?;
    Ok(table)
}

/// Whether the server says which binlog position a consistent snapshot
/// sees (MariaDB does; MySQL does not).
pub async fn places_snapshots(conn: &mut Conn) -> anyhow::Result<()> {
    let status: Vec<(String, String)> = conn.query("SHOW STATUS LIKE 'binlog_snapshot_file'").await?;
    match status.first() {
        Some((_, file)) if !file.is_empty() => Ok(()),
        Some(_) => anyhow::bail!("the server's binlog is off; a snapshot needs it on, as the stream does"),
        None => anyhow::bail!(
            "the server does not say which binlog position a consistent snapshot sees \
             (MariaDB reports Binlog_snapshot_file and Binlog_snapshot_position; MySQL does not), \
             so rowhook cannot place a snapshot's rows in the stream: snapshots need MariaDB"
        ),
    }
}

/// A refused SELECT, explained.
fn grant_error(url: &SourceUrl, table: &str, e: &mysql_async::Error) -> anyhow::Error {
    let msg = url.scrub(&e.to_string());
    match e {
        mysql_async::Error::Server(s) if matches!(s.code, 1142 | 1143 | 1044) => anyhow::anyhow!(
            "{url} may not read `{table}` for a snapshot: {msg}. Fix: GRANT SELECT ON {table} TO the snapshot user"
        ),
        _ => anyhow::anyhow!("reading a snapshot of `{table}` from {url}: {msg}"),
    }
}

fn to_my(k: &KeyValue) -> MyValue {
    match k {
        KeyValue::Int(v) => MyValue::Int(*v),
        KeyValue::UInt(v) => MyValue::UInt(*v),
        KeyValue::Float(v) => MyValue::Float(*v),
        KeyValue::Double(v) => MyValue::Double(*v),
        KeyValue::Bytes(v) => MyValue::Bytes(v.clone()),
        &KeyValue::Date(y, m, d, h, i, s, us) => MyValue::Date(y, m, d, h, i, s, us),
        &KeyValue::Time(neg, days, h, m, s, us) => MyValue::Time(neg, days, h, m, s, us),
    }
}

fn from_my(v: &MyValue) -> KeyValue {
    match v {
        MyValue::Int(v) => KeyValue::Int(*v),
        MyValue::UInt(v) => KeyValue::UInt(*v),
        MyValue::Float(v) => KeyValue::Float(*v),
        MyValue::Double(v) => KeyValue::Double(*v),
        MyValue::Bytes(v) => KeyValue::Bytes(v.clone()),
        &MyValue::Date(y, m, d, h, i, s, us) => KeyValue::Date(y, m, d, h, i, s, us),
        &MyValue::Time(neg, days, h, m, s, us) => KeyValue::Time(neg, days, h, m, s, us),
        // A key column is NOT NULL.
        MyValue::NULL => KeyValue::Bytes(Vec::new()),
    }
}

fn signed(v: &MyValue) -> Result<i64, String> {
    match v {
        MyValue::Int(i) => Ok(*i),
        MyValue::UInt(u) => i64::try_from(*u).map_err(|_| format!("{u} is out of range")),
        MyValue::Bytes(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("{:?} is not an integer", String::from_utf8_lossy(b))),
        v => Err(format!("{v:?} is not an integer")),
    }
}

fn unsigned(v: &MyValue) -> Result<u64, String> {
    match v {
        MyValue::UInt(u) => Ok(*u),
        MyValue::Int(i) => u64::try_from(*i).map_err(|_| format!("{i} is out of range")),
        MyValue::Bytes(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("{:?} is not an unsigned integer", String::from_utf8_lossy(b))),
        v => Err(format!("{v:?} is not an unsigned integer")),
    }
}

/// The labels a row shows of an ENUM or SET column `column`: `index` is
/// the column's `+ 0` (the ENUM's index, the SET's bits), `text` its value
/// (the label, or the SET's labels joined by commas, in label order).
fn learn_labels(
    (column, set, collation): (usize, bool, u32),
    index: &MyValue,
    text: &[u8],
    out: &mut Vec<(usize, usize, Vec<u8>, u32)>,
) {
    let Ok(n) = bits(index) else { return };
    let mut known = |i: usize, label: &[u8]| {
        if !out.iter().any(|(c, k, _, _)| *c == column && *k == i) {
            out.push((column, i, label.to_vec(), collation));
        }
    };
    if text.is_empty() || n == 0 {
        return;
    }
    if set {
        // A SET's labels, in label order, never hold a comma.
        let set_bits: Vec<usize> = (0..64).filter(|b| n & (1 << b) != 0).collect();
        let parts: Vec<&[u8]> = text.split(|&b| b == b',').collect();
        if parts.len() == set_bits.len() {
            for (bit, label) in set_bits.into_iter().zip(parts) {
                known(bit, label);
            }
        }
    } else if let Some(i) = (n as usize).checked_sub(1) {
        // An ENUM's value is one label, which may hold commas.
        known(i, text);
    }
}

/// The 64 bits of a SET or BIT value (`col + 0` may come typed signed).
fn bits(v: &MyValue) -> Result<u64, String> {
    match v {
        MyValue::Int(i) => Ok(*i as u64),
        v => unsigned(v),
    }
}

/// Seconds since the epoch of a UTC date and time (0 for the zero date).
fn epoch(y: u16, m: u8, d: u8, h: u8, i: u8, s: u8) -> Result<u32, String> {
    if y == 0 && m == 0 && d == 0 {
        return Ok(0);
    }
    // Days from 1970-01-01 of the proleptic Gregorian calendar.
    let (y, m) = (i64::from(y) - i64::from(m <= 2), i64::from(m));
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + i64::from(h) * 3600 + i64::from(i) * 60 + i64::from(s);
    u32::try_from(secs).map_err(|_| format!("timestamp {secs} is out of range"))
}

/// `v`, a value the server sent for a column of `kind`, as the decoder's
/// value; text and bytes go to `arena`.
fn cell(kind: &ColumnKind, v: &MyValue, arena: &mut Vec<u8>) -> Result<Cell, String> {
    let mut keep = |b: &[u8]| -> Result<(u32, u32), String> {
        let at =
            u32::try_from(arena.len()).map_err(|_| "the chunk is over 4 GiB: lower snapshot_chunk_rows".to_owned())?;
        arena.extend_from_slice(b);
        Ok((at, b.len() as u32))
    };
    Ok(match (kind, v) {
        (_, MyValue::NULL) => Cell::Null,
        (ColumnKind::Int { unsigned: false, .. }, v) => Cell::Int(signed(v)?),
        (ColumnKind::Int { unsigned: true, .. } | ColumnKind::Year, v) => Cell::UInt(unsigned(v)?),
        (ColumnKind::Float, MyValue::Float(f)) => Cell::Float(*f),
        (ColumnKind::Float, MyValue::Double(d)) => Cell::Float(*d as f32),
        (ColumnKind::Double, MyValue::Double(d)) => Cell::Double(*d),
        (ColumnKind::Double, MyValue::Float(f)) => Cell::Double(f64::from(*f)),
        (ColumnKind::Decimal { precision, scale, .. }, MyValue::Bytes(text)) => {
            let at = arena.len();
            encode_decimal(text, *precision, *scale, arena).map_err(|_| {
                format!(
                    "{:?} is not a DECIMAL({precision},{scale})",
                    String::from_utf8_lossy(text)
                )
            })?;
            Cell::Decimal(at as u32, (arena.len() - at) as u32)
        }
        (ColumnKind::Date, &MyValue::Date(year, month, day, ..)) => Cell::Date(DateTime {
            year,
            month,
            day,
            ..DateTime::default()
        }),
        (
            ColumnKind::DateTime2 { .. } | ColumnKind::DateTimeOld,
            &MyValue::Date(year, month, day, hour, minute, second, micros),
        ) => Cell::DateTime(DateTime {
            year,
            month,
            day,
            hour,
            minute,
            second,
            micros,
        }),
        (ColumnKind::Timestamp2 { .. } | ColumnKind::TimestampOld, &MyValue::Date(y, m, d, h, i, s, us)) => {
            Cell::Timestamp(epoch(y, m, d, h, i, s)?, us)
        }
        (
            ColumnKind::Time2 { .. } | ColumnKind::TimeOld,
            &MyValue::Time(negative, days, hours, minutes, seconds, micros),
        ) => {
            let hours = u16::try_from(days * 24 + u32::from(hours))
                .map_err(|_| format!("TIME of {days} days is out of range"))?;
            Cell::Time(Time {
                negative,
                hours,
                minutes,
                seconds,
                micros,
            })
        }
        (
            ColumnKind::String { .. }
            | ColumnKind::Json { .. }
            | ColumnKind::Geometry { .. }
            | ColumnKind::Vector { .. }
            | ColumnKind::Compressed { .. },
            MyValue::Bytes(b),
        ) => {
            let (at, len) = keep(b)?;
            Cell::Bytes(at, len)
        }
        (ColumnKind::Enum { .. }, v) => {
            Cell::Enum(u16::try_from(unsigned(v)?).map_err(|_| "an ENUM index over 65535".to_owned())?)
        }
        (ColumnKind::Set { .. }, v) => Cell::Set(bits(v)?),
        (ColumnKind::Bit { .. }, v) => Cell::Bit(bits(v)?),
        (kind, v) => return Err(format!("the server sent {v:?} for a {kind:?} column")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_seconds_of_utc_dates() {
        assert_eq!(epoch(1970, 1, 1, 0, 0, 1), Ok(1));
        assert_eq!(epoch(2038, 1, 19, 3, 14, 7), Ok(i32::MAX as u32));
        assert_eq!(epoch(2024, 2, 29, 12, 34, 56), Ok(1_709_210_096));
        assert_eq!(epoch(2023, 11, 14, 22, 13, 20), Ok(1_700_000_000));
        assert_eq!(epoch(0, 0, 0, 0, 0, 0), Ok(0));
    }

    #[test]
    fn server_values_become_the_decoders() {
        let mut arena = Vec::new();
        let dec = ColumnKind::Decimal {
            precision: 4,
            scale: 2,
            size: 2,
        };
        let Ok(Cell::Decimal(at, len)) = cell(&dec, &MyValue::Bytes(b"-10.55".to_vec()), &mut arena) else {
            panic!("a decimal");
        };
        assert_eq!(&arena[at as usize..(at + len) as usize], [0x75, 0xc8]);
        let int = ColumnKind::Int {
            bytes: 1,
            unsigned: true,
        };
        assert!(matches!(
            cell(&int, &MyValue::Int(255), &mut arena),
            Ok(Cell::UInt(255))
        ));
        assert!(cell(&int, &MyValue::Int(-1), &mut arena).is_err());
        let time = ColumnKind::Time2 { fsp: 0 };
        let Ok(Cell::Time(t)) = cell(&time, &MyValue::Time(true, 34, 22, 59, 59, 0), &mut arena) else {
            panic!("a time");
        };
        assert_eq!((t.negative, t.hours, t.minutes), (true, 838, 59));
        assert!(matches!(cell(&time, &MyValue::NULL, &mut arena), Ok(Cell::Null)));
    }
}
