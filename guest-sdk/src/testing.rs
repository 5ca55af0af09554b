//! Unit-testing handlers natively, without rowhook or a wasm runtime.
//!
//! Outside wasm32, the capability calls ([`emit`](crate::emit),
//! [`state`](crate::state), [`log`](crate::log), [`metrics`](crate::metrics))
//! go to an in-memory recorder, one per thread (so per test). [`run`] calls a
//! handler the way rowhook does, and [`ChangeBuilder`] makes the change to
//! give it.
//!
//! ```
//! use rowhook_guest::testing::{self, ChangeBuilder};
//! use rowhook_guest::{Change, Result, Value};
//!
//! fn handler(change: &Change) -> Result<()> {
//!     let id: i64 = change.get("id")?;
//!     rowhook_guest::emit("queue", None, id.to_string())
//! }
//!
//! let change = ChangeBuilder::insert("shop", "orders").column("id", Value::Int(7)).build();
//! testing::run(handler, &change).unwrap();
//! assert_eq!(testing::messages()[0].payload, b"7");
//! ```

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::BTreeMap;

use rowhook_abi::write::{ChangeWriter, ColumnDirectory, Header};

use crate::change::{Change, Column, Image, Op, Value};
use crate::error::{EmitError, Result, StateError};
use crate::log::Level;

/// A message a handler emitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The sink.
    pub sink: String,
    /// The message key.
    pub key: Option<String>,
    /// The payload.
    pub payload: Vec<u8>,
}

/// A line a handler logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Its level.
    pub level: Level,
    /// The message.
    pub message: String,
    /// The fields.
    pub fields: Vec<(String, String)>,
}

#[derive(Default)]
struct Recorder {
    granted: Option<Vec<String>>,
    emit_limit: Option<usize>,
    emitted_this_event: usize,
    messages: Vec<Message>,
    state: BTreeMap<String, Vec<u8>>,
    logs: Vec<LogLine>,
    counters: BTreeMap<String, u64>,
    gauges: BTreeMap<String, f64>,
}

thread_local! {
    static RECORDER: RefCell<Recorder> = RefCell::new(Recorder::default());
}

fn with<T>(f: impl FnOnce(&mut Recorder) -> T) -> T {
    RECORDER.with(|r| f(&mut r.borrow_mut()))
}

/// Calls `handler` with `change` as rowhook does: a fresh emit quota, and
/// the call's messages and state writes discarded if it fails. Returns the
/// text rowhook would get for a failure.
pub fn run(handler: impl FnOnce(&Change<'_>) -> Result<()>, change: &[u8]) -> Result<(), String> {
    let (messages, state) = with(|r| {
        r.emitted_this_event = 0;
        (r.messages.len(), r.state.clone())
    });
    let result = crate::__private::run(change, handler);
    if result.is_err() {
        with(|r| {
            r.messages.truncate(messages);
            r.state = state;
        });
    }
    result
}

/// Grants only these sinks; emitting to another fails with
/// [`EmitError::Denied`]. By default every sink is granted.
pub fn grant(sinks: &[&str]) {
    with(|r| r.granted = Some(sinks.iter().map(|s| s.to_string()).collect()));
}

/// Allows `limit` emits per [`run`] ([`EmitError::Quota`] past it).
pub fn set_emit_limit(limit: usize) {
    with(|r| r.emit_limit = Some(limit));
}

/// Every message emitted so far on this thread.
pub fn messages() -> Vec<Message> {
    with(|r| r.messages.clone())
}

/// Every line logged so far on this thread.
pub fn logs() -> Vec<LogLine> {
    with(|r| r.logs.clone())
}

/// The handler state.
pub fn state() -> BTreeMap<String, Vec<u8>> {
    with(|r| r.state.clone())
}

/// The counters.
pub fn counters() -> BTreeMap<String, u64> {
    with(|r| r.counters.clone())
}

/// The gauges.
pub fn gauges() -> BTreeMap<String, f64> {
    with(|r| r.gauges.clone())
}

/// Forgets everything recorded, grants and limits included.
pub fn reset() {
    with(|r| *r = Recorder::default());
}

/// The capability calls of native builds.
pub(crate) mod recorder {
    use super::*;

    pub fn emit(sink: &str, key: Option<&str>, payload: &[u8]) -> Result<(), EmitError> {
        with(|r| {
            if r.granted.as_ref().is_some_and(|g| !g.iter().any(|s| s == sink)) {
                return Err(EmitError::Denied);
            }
            if r.emit_limit.is_some_and(|l| r.emitted_this_event >= l) {
                return Err(EmitError::Quota);
            }
            r.emitted_this_event += 1;
            r.messages.push(Message {
                sink: sink.into(),
                key: key.map(Into::into),
                payload: payload.to_vec(),
            });
            Ok(())
        })
    }

    pub fn state_get(key: &str) -> Option<Vec<u8>> {
        with(|r| r.state.get(key).cloned())
    }

    pub fn state_set(key: &str, value: &[u8]) -> Result<(), StateError> {
        with(|r| r.state.insert(key.into(), value.to_vec()));
        Ok(())
    }

    pub fn state_delete(key: &str) {
        with(|r| r.state.remove(key));
    }

    pub fn state_increment(key: &str, delta: i64) -> Result<i64, StateError> {
        with(|r| {
            let old = match r.state.get(key) {
                None => 0,
                Some(v) => i64::from_le_bytes(v.as_slice().try_into().map_err(|_| StateError::NotACounter)?),
            };
            let new = old.checked_add(delta).ok_or(StateError::Overflow)?;
            r.state.insert(key.into(), new.to_le_bytes().to_vec());
            Ok(new)
        })
    }

    pub fn log(level: Level, message: &str, fields: &[(&str, &str)]) {
        with(|r| {
            r.logs.push(LogLine {
                level,
                message: message.into(),
                fields: fields.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            })
        });
    }

    pub fn counter_add(name: &str, delta: u64) {
        with(|r| *r.counters.entry(name.into()).or_default() += delta);
    }

    pub fn gauge_set(name: &str, value: f64) {
        with(|r| r.gauges.insert(name.into(), value));
    }
}

/// Builds an encoded change for tests, as rowhook would send it.
///
/// Columns appear in the order they are first named. For an update,
/// [`ChangeBuilder::column`] sets the after value and
/// [`ChangeBuilder::before`] the before value; a column given only one of
/// them has the same value in both images.
#[derive(Debug, Clone)]
pub struct ChangeBuilder<'a> {
    op: Op,
    db: &'a str,
    table: &'a str,
    // Owned for a snapshot, whose transaction part is made of its table.
    txn: Cow<'a, str>,
    gtid: Option<&'a str>,
    file: &'a str,
    pos: u64,
    ts: u32,
    event_index: u32,
    row_index: u32,
    columns: Vec<BuiltColumn<'a>>,
}

#[derive(Debug, Clone)]
struct BuiltColumn<'a> {
    name: &'a str,
    primary_key: bool,
    before: Option<Value<'a>>,
    after: Option<Value<'a>>,
}

impl<'a> ChangeBuilder<'a> {
    /// A change of `op` to `db`.`table`, with id `0-1-1:0:0` in
    /// `mysql-bin.000001` (a snapshot's: [`ChangeBuilder::snapshot`]).
    pub fn new(op: Op, db: &'a str, table: &'a str) -> Self {
        let (txn, gtid) = match op {
            Op::Snapshot => (Cow::Owned(format!("snapshot:{db}.{table}")), None),
            _ => (Cow::Borrowed("0-1-1"), Some("0-1-1")),
        };
        Self {
            op,
            db,
            table,
            txn,
            gtid,
            file: "mysql-bin.000001",
            pos: 4,
            ts: 0,
            event_index: 0,
            row_index: 0,
            columns: Vec::new(),
        }
    }

    /// An insert.
    pub fn insert(db: &'a str, table: &'a str) -> Self {
        Self::new(Op::Insert, db, table)
    }

    /// An update.
    pub fn update(db: &'a str, table: &'a str) -> Self {
        Self::new(Op::Update, db, table)
    }

    /// A delete.
    pub fn delete(db: &'a str, table: &'a str) -> Self {
        Self::new(Op::Delete, db, table)
    }

    /// A row read by a snapshot of `db`.`table`: an after image only, id
    /// `snapshot:<db>.<table>:0:0` ([`ChangeBuilder::index`] sets the chunk
    /// and row), no GTID, in `mysql-bin.000001`.
    pub fn snapshot(db: &'a str, table: &'a str) -> Self {
        Self::new(Op::Snapshot, db, table)
    }

    /// Sets the transaction GTID (also the id's transaction part).
    pub fn gtid(mut self, gtid: &'a str) -> Self {
        self.txn = Cow::Borrowed(gtid);
        self.gtid = Some(gtid);
        self
    }

    /// Sets the event timestamp (a snapshot's: when it read the row).
    pub fn ts(mut self, ts: u32) -> Self {
        self.ts = ts;
        self
    }

    /// Sets the binlog file and position (a snapshot's: where the stream
    /// was when it read the row).
    pub fn at(mut self, file: &'a str, pos: u64) -> Self {
        self.file = file;
        self.pos = pos;
        self
    }

    /// Sets the rows event and row indexes of the id (a snapshot's chunk
    /// and row).
    pub fn index(mut self, event: u32, row: u32) -> Self {
        self.event_index = event;
        self.row_index = row;
        self
    }

    fn slot(&mut self, name: &'a str) -> &mut BuiltColumn<'a> {
        let i = match self.columns.iter().position(|c| c.name == name) {
            Some(i) => i,
            None => {
                self.columns.push(BuiltColumn {
                    name,
                    primary_key: false,
                    before: None,
                    after: None,
                });
                self.columns.len() - 1
            }
        };
        &mut self.columns[i]
    }

    /// Sets column `name`: the after value, or the before value of a delete.
    pub fn column(mut self, name: &'a str, value: Value<'a>) -> Self {
        let op = self.op;
        let c = self.slot(name);
        if op == Op::Delete {
            c.before = Some(value);
        } else {
            c.after = Some(value);
        }
        self
    }

    /// Sets column `name` in the before image of an update.
    pub fn before(mut self, name: &'a str, value: Value<'a>) -> Self {
        self.slot(name).before = Some(value);
        self
    }

    /// Marks column `name` as part of the primary key.
    pub fn primary_key(mut self, name: &'a str) -> Self {
        self.slot(name).primary_key = true;
        self
    }

    /// The encoded change.
    pub fn build(&self) -> Vec<u8> {
        let directory = ColumnDirectory::new(self.columns.iter().map(|c| Column {
            name: c.name,
            type_code: type_code(&c.after.or(c.before).unwrap_or(Value::Null)),
            primary_key: c.primary_key,
            nullable: true,
        }))
        .expect("a test change fits the encoding");
        let header = Header {
            op: self.op,
            before: matches!(self.op, Op::Update | Op::Delete),
            after: self.op != Op::Delete,
            has_names: true,
            ts: self.ts,
            event_index: self.event_index,
            row_index: self.row_index,
            txn: &self.txn,
            gtid: self.gtid,
            file: self.file,
            pos: self.pos,
            db: self.db,
            table: self.table,
        };
        let mut out = Vec::new();
        let mut w = ChangeWriter::new(&mut out, &header, &directory).expect("a test change fits the encoding");
        for (image, present) in [(Image::Before, header.before), (Image::After, header.after)] {
            if !present {
                continue;
            }
            for (i, c) in self.columns.iter().enumerate() {
                let v = match image {
                    Image::Before => c.before.or(c.after),
                    Image::After => c.after.or(c.before),
                };
                w.value(image, i, v).expect("a test change fits the encoding");
            }
        }
        w.finish().expect("a test change fits the encoding");
        out
    }
}

/// A plausible MySQL type code for a value of this kind.
fn type_code(v: &Value<'_>) -> u8 {
    match v {
        Value::Null => 6,
        Value::Int(_) | Value::UInt(_) => 8,
        Value::Float(_) => 4,
        Value::Double(_) => 5,
        Value::Decimal(_) => 246,
        Value::String(_) => 15,
        Value::Bytes(_) => 252,
        Value::Date(_) => 10,
        Value::DateTime(_) => 18,
        Value::Timestamp(_) => 17,
        Value::Time(_) => 19,
        Value::Json(_) => 245,
        Value::Enum(_) => 247,
        Value::Set(_) => 248,
        Value::Bit(_) => 16,
        Value::Vector(_) => 242,
        _ => 252,
    }
}
