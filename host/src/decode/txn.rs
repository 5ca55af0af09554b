//! The decoder state machine: events in, row changes and commits out.
//!
//! It groups events into transactions (GTID … XID, `COMMIT`, XA PREPARE, a
//! standalone DDL), gives every row change its stable id
//! `<txn>:<event>:<row>`, and after each commit reports the position a reader
//! resumes from.

use std::collections::HashMap;
use std::sync::Arc;

use super::event::{FLAG_IGNORABLE, FormatDescription, HEADER_LEN, RawEvent, types};
use super::gtid::{GtidState, format_uuid};
use super::rows::{self, ImageError, RowsKind};
use super::table_map::{TableMap, TableMapContext, TableMapError};
use super::value::{self, RenderError, Value};
use super::{At, Cursor, DecodeError};
use crate::json_text;

pub use super::rows::Op;

/// What a visitor wants after seeing a change or a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep going.
    Continue,
    /// Stop after this event.
    Stop,
}

/// Receives what the decoder finds.
pub trait ChangeVisitor {
    /// One row change. Everything it borrows is valid for this call only.
    fn change(&mut self, change: &RowChange<'_>) -> Flow;
    /// A statement-based change the decoder skipped (only with
    /// [`DecoderOptions::skip_statements`]): `sql` at `at`.
    fn statement(&mut self, at: &At, sql: &[u8]) {
        let _ = (at, sql);
    }
    /// A transaction ended; `commit` says where to resume after it.
    fn commit(&mut self, commit: &Commit<'_>) -> Flow {
        let _ = commit;
        Flow::Continue
    }
    /// A TABLE_MAP planned `table` anew: changes of its table id from now on
    /// carry this map, so what a visitor derived from an earlier map of the
    /// same id is stale. Not called when the same map is repeated.
    fn table_map(&mut self, table: &TableMap) {
        let _ = table;
    }
    /// Rows the decoder cannot turn into values (a table it cannot plan, a
    /// row image it cannot read). The visitor applies its error policy:
    /// [`Flow::Continue`] when it recorded them (logged, skipped,
    /// dead-lettered) and the stream goes on, [`Flow::Stop`] to halt, and
    /// then [`Decoder::feed`] returns [`DecodeError::Undecodable`] naming
    /// them. The default halts.
    fn undecodable(&mut self, rows: &Undecodable<'_>) -> Flow {
        let _ = rows;
        Flow::Stop
    }
}

/// Rows of a table that the decoder cannot decode: where they are, which
/// table and column, and why. Only the rows event's framing is trusted, so
/// the rest of the event is passed over; the stream goes on after it.
#[derive(Debug, Clone, Copy)]
pub struct Undecodable<'a> {
    /// The transaction part of the ids, as in [`RowChange::txn`].
    pub txn: &'a str,
    /// Index of the rows event within the transaction.
    pub event_index: u32,
    /// The first row not decoded; the rows before it were delivered. 0 when
    /// the table could not be planned: none of the event's rows were.
    pub row_index: u32,
    /// The operation of the rows event.
    pub op: Op,
    /// Schema name.
    pub db: &'a str,
    /// Table name.
    pub table: &'a str,
    /// The column, when the problem is in one.
    pub column: Option<&'a str>,
    /// The transaction's GTID, if the server wrote one.
    pub gtid: Option<&'a str>,
    /// Binlog file of the rows event.
    pub file: &'a str,
    /// Offset of the rows event.
    pub pos: u64,
    /// Header timestamp of the rows event (seconds).
    pub ts: u32,
    /// What is wrong.
    pub reason: &'a str,
}

impl Undecodable<'_> {
    /// The id of the first row not decoded (`<txn>:<event>:<row>`).
    pub fn id(&self) -> String {
        change_id(self.txn, self.event_index, self.row_index)
    }

    /// The row change JSON without images (`"before"` and `"after"` are
    /// null), with the reason under `"undecodable"`: for dead letters.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"id\":");
        json_text::write_str(out, &self.id());
        out.extend_from_slice(b",\"op\":\"");
        out.extend_from_slice(self.op.as_str().as_bytes());
        out.extend_from_slice(b"\",\"db\":");
        json_text::write_str(out, self.db);
        out.extend_from_slice(b",\"table\":");
        json_text::write_str(out, self.table);
        write_place(out, self.ts, self.gtid, self.file, self.pos);
        out.extend_from_slice(b",\"before\":null,\"after\":null,\"undecodable\":");
        json_text::write_str(out, &self.to_string());
        out.push(b'}');
    }

    /// A row change whose values cannot be rendered (`reason` names the column).
    pub fn of_change<'a>(change: &RowChange<'a>, reason: &'a str) -> Undecodable<'a> {
        Undecodable {
            txn: change.txn,
            event_index: change.event_index,
            row_index: change.row_index,
            op: change.op,
            db: &change.table.db,
            table: &change.table.table,
            column: None,
            gtid: change.gtid,
            file: change.file,
            pos: change.pos,
            ts: change.ts,
            reason,
        }
    }
}

/// The `"ts"`, `"gtid"`, `"file"` and `"pos"` keys of the row change JSON,
/// each after a comma: where a change is, shared by [`RowChange::write_json`]
/// and [`Undecodable::write_json`].
#[inline]
fn write_place(out: &mut Vec<u8>, ts: u32, gtid: Option<&str>, file: &str, pos: u64) {
    out.extend_from_slice(b",\"ts\":");
    json_text::write_u64(out, u64::from(ts));
    out.extend_from_slice(b",\"gtid\":");
    match gtid {
        Some(g) => json_text::write_str(out, g),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"file\":");
    json_text::write_str(out, file);
    out.extend_from_slice(b",\"pos\":");
    json_text::write_u64(out, pos);
}

impl std::fmt::Display for Undecodable<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cannot decode {} of `{}`.`{}` from row {} of the rows event at {}:{}",
            self.op.as_str(),
            self.db,
            self.table,
            self.row_index,
            self.file,
            self.pos
        )?;
        if let Some(c) = self.column {
            write!(f, ", column `{c}`")?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// One row change, borrowed from the event it was decoded from.
#[derive(Debug)]
pub struct RowChange<'a> {
    /// The transaction part of the id: its GTID, or `<file>/<pos>` of its first event.
    pub txn: &'a str,
    /// Index of the rows event within the transaction.
    pub event_index: u32,
    /// Index of the row within the rows event.
    pub row_index: u32,
    /// The operation.
    pub op: Op,
    /// The table and its columns.
    pub table: &'a TableMap,
    /// Header timestamp of the rows event (seconds).
    pub ts: u32,
    /// The transaction's GTID, if the server wrote one.
    pub gtid: Option<&'a str>,
    /// Binlog file of the rows event.
    pub file: &'a str,
    /// Offset of the rows event.
    pub pos: u64,
    /// Before image (update, delete): one value per table column.
    pub before: Option<&'a [Value<'a>]>,
    /// After image (insert, update): one value per table column.
    pub after: Option<&'a [Value<'a>]>,
}

impl RowChange<'_> {
    /// Appends the change as one line of contract JSON (no newline).
    pub fn write_json(&self, out: &mut Vec<u8>) -> Result<(), RenderError> {
        out.extend_from_slice(b"{\"id\":\"");
        json_text::write_str_body(out, self.txn);
        out.push(b':');
        json_text::write_u64(out, u64::from(self.event_index));
        out.push(b':');
        json_text::write_u64(out, u64::from(self.row_index));
        out.extend_from_slice(b"\",\"op\":\"");
        out.extend_from_slice(self.op.as_str().as_bytes());
        out.extend_from_slice(b"\",");
        out.extend_from_slice(&self.table.names_json);
        write_place(out, self.ts, self.gtid, self.file, self.pos);
        out.extend_from_slice(b",\"before\":");
        self.write_image(out, self.before, None)?;
        out.extend_from_slice(b",\"after\":");
        self.write_image(out, self.after, self.before)?;
        out.push(b'}');
        Ok(())
    }

    fn write_image(
        &self,
        out: &mut Vec<u8>,
        image: Option<&[Value<'_>]>,
        before: Option<&[Value<'_>]>,
    ) -> Result<(), RenderError> {
        let Some(values) = image else {
            out.extend_from_slice(b"null");
            return Ok(());
        };
        out.push(b'{');
        let mut first = true;
        for (i, (col, v)) in self.table.columns.iter().zip(values).enumerate() {
            if matches!(v, Value::Absent) {
                continue;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(&col.key_json);
            value::write_json(out, col, v, before.and_then(|b| b.get(i)))
                .map_err(|e| RenderError(format!("column `{}`: {}", col.name, e.0)))?;
        }
        out.push(b'}');
        Ok(())
    }

    /// The change's id, `<txn>:<event>:<row>`.
    pub fn id(&self) -> String {
        change_id(self.txn, self.event_index, self.row_index)
    }
}

/// `<txn>:<event>:<row>`, the id of a row change. Runs for every change
/// that emits, so it writes the digits itself rather than through `format!`.
fn change_id(txn: &str, event_index: u32, row_index: u32) -> String {
    let mut digits = itoa::Buffer::new();
    let mut id = String::with_capacity(txn.len() + 22);
    id.push_str(txn);
    id.push(':');
    id.push_str(digits.format(event_index));
    id.push(':');
    id.push_str(digits.format(row_index));
    id
}

/// A committed transaction and the position just after it.
#[derive(Debug)]
pub struct Commit<'a> {
    /// The transaction part of its row changes' ids.
    pub txn: &'a str,
    /// Its GTID, if any.
    pub gtid: Option<&'a str>,
    /// The binlog file the commit is in.
    pub file: &'a str,
    /// Offset just past the commit: resume here.
    pub end: u64,
    /// Executed GTIDs including this transaction.
    pub gtid_state: &'a GtidState,
    /// Row changes decoded from it: of every table, or only of the tables
    /// the decoder's table filter lets through.
    pub rows: u64,
    /// Header timestamp of the commit event.
    pub ts: u32,
}

/// Which tables to decode.
#[derive(Debug, Clone, Default)]
pub struct TableFilter {
    patterns: Vec<(String, String)>,
}

impl TableFilter {
    /// Parses `db.table,db.*,*.table`; an empty list matches everything.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut patterns = Vec::new();
        for p in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((db, table)) = p.split_once('.') else {
                return Err(format!(
                    "`{p}` is not `db.table` (use `db.*` for every table of a schema)"
                ));
            };
            if db.is_empty() || table.is_empty() {
                return Err(format!("`{p}` is not `db.table`"));
            }
            patterns.push((db.to_owned(), table.to_owned()));
        }
        Ok(Self { patterns })
    }

    /// Whether `db.table` is wanted.
    pub fn matches(&self, db: &[u8], table: &[u8]) -> bool {
        self.patterns.is_empty()
            || self
                .patterns
                .iter()
                .any(|(d, t)| (d == "*" || d.as_bytes() == db) && (t == "*" || t.as_bytes() == table))
    }
}

/// How the decoder behaves.
#[derive(Debug, Clone, Default)]
pub struct DecoderOptions {
    /// Refuse tables whose TABLE_MAP has no column names (not written with
    /// `binlog_row_metadata=FULL`), unless names were provided.
    pub require_names: bool,
    /// Tables to decode; row events of other tables are skipped undecoded.
    pub tables: TableFilter,
    /// Report statement-based changes to [`ChangeVisitor::statement`] and go
    /// on, instead of failing: they cannot be turned into rows.
    pub skip_statements: bool,
}

/// A planned table, a table the filter excludes, or one that cannot be planned.
struct TableSlot {
    /// The TABLE_MAP body it was planned from; an identical body (the same
    /// table in the next transaction) reuses the plan.
    body: Vec<u8>,
    plan: Planned,
}

enum Planned {
    Table(TableMap),
    Filtered,
    /// Its rows are reported to [`ChangeVisitor::undecodable`].
    Broken {
        db: String,
        table: String,
        column: Option<String>,
        reason: String,
    },
}

/// The open transaction.
#[derive(Default)]
struct Txn {
    open: bool,
    /// Whether a BEGIN / XA START was seen (otherwise the first statement
    /// query ends the transaction: a DDL).
    begun: bool,
    id: String,
    gtid: Option<String>,
    /// MariaDB (domain, server, seq) or MySQL (uuid, tag, gno) to record at commit.
    maria: Option<(u32, u32, u64)>,
    mysql: Option<(String, String, u64)>,
    rows_events: u32,
    rows: u64,
}

/// The binlog decoder. Feed it events in stream order.
pub struct Decoder {
    opts: DecoderOptions,
    fde: FormatDescription,
    table_id_len: usize,
    file: Arc<str>,
    tables: HashMap<u64, TableSlot>,
    names: HashMap<(String, String), Vec<String>>,
    txn: Txn,
    gtids: GtidState,
    /// Position after the last commit.
    resume: (Arc<str>, u64),
    /// Offset in `file` just past the last event read that has a place in
    /// it (artificial events have none).
    read_end: u64,
    before: Vec<Value<'static>>,
    after: Vec<Value<'static>>,
    payload_events: usize,
    /// Transactions committed so far.
    commits: u64,
}

/// Reuses a vector's allocation for values of another lifetime. The vector
/// is emptied first, so no value crosses lifetimes; the in-place collect
/// keeps the buffer.
fn recycle<'b>(mut v: Vec<Value<'_>>) -> Vec<Value<'b>> {
    v.clear();
    v.into_iter().map(|_| Value::Absent).collect()
}

impl Decoder {
    /// A decoder positioned at the start of `file`.
    pub fn new(opts: DecoderOptions, file: &str) -> Self {
        let file: Arc<str> = Arc::from(file);
        Self {
            opts,
            fde: FormatDescription::default(),
            table_id_len: 6,
            resume: (file.clone(), 4),
            read_end: 4,
            file,
            tables: HashMap::new(),
            names: HashMap::new(),
            txn: Txn::default(),
            gtids: GtidState::None,
            before: Vec::new(),
            after: Vec::new(),
            payload_events: 0,
            commits: 0,
        }
    }

    /// How many transactions have committed: a reader compares it across
    /// [`Decoder::feed`] to see that a commit happened.
    pub fn commits(&self) -> u64 {
        self.commits
    }

    /// Sets the GTID state the stream starts from (as requested by the reader).
    pub fn set_gtid_state(&mut self, state: GtidState) {
        self.gtids = state;
    }

    /// The format description in force.
    pub fn format(&self) -> &FormatDescription {
        &self.fde
    }

    /// Width of table ids in TABLE_MAP and rows events (6 bytes; 4 in
    /// binlogs of MySQL 5.0 and early 5.1).
    pub fn table_id_len(&self) -> usize {
        self.table_id_len
    }

    /// The binlog file being decoded.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// Where to resume to get everything after the last commit: file, offset, GTIDs.
    pub fn resume_position(&self) -> (&str, u64, &GtidState) {
        (&self.resume.0, self.resume.1, &self.gtids)
    }

    /// How far the stream has been read: the file and the offset just past
    /// the last event read that has a place in it. Every transaction that
    /// ends at or before it has been decoded.
    pub fn read_to(&self) -> (&str, u64) {
        (&self.file, self.read_end)
    }

    /// The GTID of the open transaction, if it has one.
    pub fn current_gtid(&self) -> Option<&str> {
        if self.txn.open { self.txn.gtid.as_deref() } else { None }
    }

    /// Whether a transaction is open (its commit not seen yet).
    pub fn in_transaction(&self) -> bool {
        self.txn.open
    }

    /// How many events the last TRANSACTION_PAYLOAD held.
    pub fn payload_events(&self) -> usize {
        self.payload_events
    }

    /// Column names for a table whose TABLE_MAP has none (from
    /// information_schema: today's names, not necessarily the row's).
    pub fn provide_names(&mut self, db: &str, table: &str, names: Vec<String>) {
        self.names.insert((db.to_owned(), table.to_owned()), names);
    }

    /// Drops the open transaction, whose commit will not come: the stream
    /// carrying it was lost. A source that reconnects at
    /// [`Decoder::resume_position`] sends it again from its first event, and
    /// its changes get the same ids. Returns whether one was open.
    pub fn abandon_transaction(&mut self) -> bool {
        let was_open = self.txn.open;
        self.txn.open = false;
        self.txn.begun = false;
        self.file = self.resume.0.clone();
        self.read_end = self.resume.1;
        was_open
    }

    /// Switches to another file (a file source moving on without a ROTATE).
    pub fn set_file(&mut self, file: &str) {
        if &*self.file != file {
            self.file = Arc::from(file);
            self.read_end = 4;
            if !self.txn.open {
                self.resume = (self.file.clone(), 4);
            }
        }
    }

    fn at(&self, pos: u64) -> At {
        At {
            file: self.file.clone(),
            pos,
        }
    }

    fn invalid(&self, pos: u64, what: &'static str, detail: impl Into<String>) -> DecodeError {
        DecodeError::Invalid {
            at: self.at(pos),
            what,
            detail: detail.into(),
        }
    }

    fn truncated(&self, pos: u64, what: &'static str) -> DecodeError {
        DecodeError::Truncated {
            at: self.at(pos),
            what,
            need: 1,
        }
    }

    /// Decodes one event.
    pub fn feed<V: ChangeVisitor>(&mut self, ev: RawEvent<'_>, v: &mut V) -> Result<Flow, DecodeError> {
        let t = ev.header.type_code;
        if ev.header.log_pos != 0 {
            self.read_end = ev.end;
        }
        if let Some(kind) = RowsKind::of(t) {
            return self.rows(ev, kind, v);
        }
        match t {
            types::FORMAT_DESCRIPTION => {
                let fde = FormatDescription::parse(ev.body, self.fde.checksum)
                    .map_err(|e| self.invalid(ev.pos, "format description", e))?;
                self.table_id_len = if fde.post_header(types::TABLE_MAP, 8) == 6 {
                    4
                } else {
                    6
                };
                self.fde = fde;
                Ok(Flow::Continue)
            }
            types::ROTATE => {
                let mut c = Cursor::new(ev.body);
                let pos = c.u64().map_err(|_| self.truncated(ev.pos, "rotate position"))?;
                let name = String::from_utf8_lossy(c.rest()).into_owned();
                if name.is_empty() || name.contains('/') {
                    return Err(self.invalid(ev.pos, "rotate file name", name));
                }
                self.file = Arc::from(name.as_str());
                self.read_end = pos;
                if !self.txn.open {
                    self.resume = (self.file.clone(), pos);
                }
                Ok(Flow::Continue)
            }
            types::TABLE_MAP => self.table_map(ev, v),
            types::QUERY | types::MARIA_QUERY_COMPRESSED => self.query(ev, v),
            types::XID | types::XA_PREPARE => Ok(self.commit(ev, v)),
            types::GTID | types::ANONYMOUS_GTID => {
                let mut c = Cursor::new(ev.body);
                let read = (|| Some((c.u8().ok()?, c.take(16).ok()?, c.u64().ok()?)))();
                let (_flags, sid, gno) = read.ok_or_else(|| self.truncated(ev.pos, "GTID event"))?;
                if t == types::ANONYMOUS_GTID || gno == 0 {
                    self.begin(ev.pos, None, None, None);
                } else {
                    let uuid = format_uuid(sid);
                    self.begin(
                        ev.pos,
                        Some(format!("{uuid}:{gno}")),
                        None,
                        Some((uuid, String::new(), gno)),
                    );
                }
                Ok(Flow::Continue)
            }
            types::GTID_TAGGED => {
                let (uuid, tag, gno) =
                    super::tagged::parse(ev.body).map_err(|e| self.invalid(ev.pos, "tagged GTID event", e))?;
                let text = if tag.is_empty() {
                    format!("{uuid}:{gno}")
                } else {
                    format!("{uuid}:{tag}:{gno}")
                };
                self.begin(ev.pos, Some(text), None, Some((uuid, tag, gno)));
                Ok(Flow::Continue)
            }
            types::MARIA_GTID => {
                let mut c = Cursor::new(ev.body);
                let read = (|| Some((c.u64().ok()?, c.u32().ok()?, c.u8().ok()?)))();
                let (seq, domain, flags) = read.ok_or_else(|| self.truncated(ev.pos, "GTID event"))?;
                let server = ev.header.server_id;
                self.begin(
                    ev.pos,
                    Some(format!("{domain}-{server}-{seq}")),
                    Some((domain, server, seq)),
                    None,
                );
                // FL_STANDALONE: a DDL or other statement that commits by itself.
                self.txn.begun = flags & 1 == 0;
                Ok(Flow::Continue)
            }
            types::MARIA_GTID_LIST => {
                if !self.txn.open
                    && let Some(s) = GtidState::from_mariadb_list(ev.body)
                    && (!s.is_empty() || self.gtids.is_empty())
                {
                    self.gtids = s;
                }
                Ok(Flow::Continue)
            }
            types::PREVIOUS_GTIDS => {
                if !self.txn.open
                    && let Some(s) = GtidState::from_mysql_previous(ev.body)
                    && (!s.is_empty() || self.gtids.is_empty())
                {
                    self.gtids = s;
                }
                Ok(Flow::Continue)
            }
            types::TRANSACTION_PAYLOAD => self.payload(ev, v),
            types::INCIDENT => Err(DecodeError::Unsupported {
                at: self.at(ev.pos),
                what: "INCIDENT event: the server recorded that changes may be missing from the binlog here; \
                       check the source and restart from a position after it"
                    .into(),
            }),
            types::MARIA_START_ENCRYPTION => Err(DecodeError::Unsupported {
                at: self.at(ev.pos),
                what: "the binlog file is encrypted (encrypt_binlog=ON); read it through the server with --url".into(),
            }),
            types::START_V3 => Err(DecodeError::Unsupported {
                at: self.at(ev.pos),
                what: "binlog format v1/v3 (MySQL 4.x); MySQL 5.0 or later is required".into(),
            }),
            types::WRITE_ROWS_V0 | types::UPDATE_ROWS_V0 | types::DELETE_ROWS_V0 => Err(DecodeError::Unsupported {
                at: self.at(ev.pos),
                what: "pre-GA rows events of MySQL 5.1.0-5.1.15".into(),
            }),
            // Load-file events only exist in statement-based logging.
            6..=12 | 17 | 18 if self.opts.skip_statements => {
                v.statement(&self.at(ev.pos), b"LOAD DATA");
                Ok(Flow::Continue)
            }
            6..=12 | 17 | 18 => Err(statement_based(self.at(ev.pos))),
            types::STOP
            | types::INTVAR
            | types::RAND
            | types::USER_VAR
            | types::HEARTBEAT
            | types::HEARTBEAT_V2
            | types::IGNORABLE
            | types::ROWS_QUERY
            | types::TRANSACTION_CONTEXT
            | types::VIEW_CHANGE
            | types::MARIA_ANNOTATE_ROWS
            | types::MARIA_BINLOG_CHECKPOINT => Ok(Flow::Continue),
            _ if ev.header.flags & FLAG_IGNORABLE != 0 => Ok(Flow::Continue),
            _ => Err(DecodeError::UnknownEvent {
                at: self.at(ev.pos),
                type_code: t,
            }),
        }
    }

    /// Opens a transaction. A transaction still open (a file cut before its
    /// commit) ends here unreported: its rows went out, its commit did not.
    fn begin(
        &mut self,
        pos: u64,
        gtid: Option<String>,
        maria: Option<(u32, u32, u64)>,
        mysql: Option<(String, String, u64)>,
    ) {
        let txn = &mut self.txn;
        txn.open = true;
        txn.begun = false;
        txn.rows_events = 0;
        txn.rows = 0;
        txn.id.clear();
        match &gtid {
            Some(g) => txn.id.push_str(g),
            None => {
                use std::fmt::Write as _;
                let _ = write!(txn.id, "{}/{}", self.file, pos);
            }
        }
        txn.gtid = gtid;
        txn.maria = maria;
        txn.mysql = mysql;
    }

    fn commit<V: ChangeVisitor>(&mut self, ev: RawEvent<'_>, v: &mut V) -> Flow {
        if !self.txn.open {
            // A commit whose start was before our first event.
            self.resume = (self.file.clone(), ev.end);
            return Flow::Continue;
        }
        if let Some((d, s, n)) = self.txn.maria {
            self.gtids.add_mariadb(d, s, n);
        }
        if let Some((u, t, n)) = &self.txn.mysql {
            self.gtids.add_mysql(u, t, *n);
        }
        self.txn.open = false;
        self.resume = (self.file.clone(), ev.end);
        self.commits += 1;
        v.commit(&Commit {
            txn: &self.txn.id,
            gtid: self.txn.gtid.as_deref(),
            file: &self.file,
            end: ev.end,
            gtid_state: &self.gtids,
            rows: self.txn.rows,
            ts: ev.header.timestamp,
        })
    }

    fn query<V: ChangeVisitor>(&mut self, ev: RawEvent<'_>, v: &mut V) -> Result<Flow, DecodeError> {
        let post = usize::from(self.fde.post_header(types::QUERY, 13));
        let mut c = Cursor::new(ev.body);
        let head = c.take(post).map_err(|_| self.truncated(ev.pos, "query event header"))?;
        let db_len = usize::from(head.get(8).copied().unwrap_or(0));
        let status_len = if post >= 13 {
            usize::from(u16::from_le_bytes([head[11], head[12]]))
        } else {
            0
        };
        c.skip(status_len + db_len + 1)
            .map_err(|_| self.truncated(ev.pos, "query event"))?;
        let inflated;
        let sql: &[u8] = if ev.header.type_code == types::MARIA_QUERY_COMPRESSED {
            inflated = inflate_mariadb(c.rest()).map_err(|e| self.invalid(ev.pos, "compressed query", e))?;
            &inflated
        } else {
            c.rest()
        };
        let kind = classify_query(sql);
        match kind {
            QueryKind::Begin => {
                if !self.txn.open {
                    self.begin(ev.pos, None, None, None);
                }
                self.txn.begun = true;
                Ok(Flow::Continue)
            }
            QueryKind::Commit => Ok(self.commit(ev, v)),
            QueryKind::InTxn => Ok(Flow::Continue),
            QueryKind::Dml if self.opts.skip_statements => {
                v.statement(&self.at(ev.pos), sql);
                Ok(Flow::Continue)
            }
            QueryKind::Dml => Err(statement_based(self.at(ev.pos))),
            QueryKind::Other => {
                if !self.txn.open {
                    self.begin(ev.pos, None, None, None);
                    return Ok(self.commit(ev, v));
                }
                if !self.txn.begun {
                    return Ok(self.commit(ev, v));
                }
                Ok(Flow::Continue)
            }
        }
    }

    fn table_map<V: ChangeVisitor>(&mut self, ev: RawEvent<'_>, v: &mut V) -> Result<Flow, DecodeError> {
        let Some((id, db, table)) = TableMap::peek_names(ev.body, self.table_id_len) else {
            return Err(self.truncated(ev.pos, "table map"));
        };
        if let Some(slot) = self.tables.get(&id)
            && slot.body == ev.body
        {
            return Ok(Flow::Continue);
        }
        if !self.opts.tables.matches(db, table) {
            self.tables.insert(
                id,
                TableSlot {
                    body: ev.body.to_vec(),
                    plan: Planned::Filtered,
                },
            );
            return Ok(Flow::Continue);
        }
        let ctx = TableMapContext {
            flavor: self.fde.flavor,
            table_id_len: self.table_id_len,
        };
        let mut plan = match TableMap::parse(ev.body, ctx) {
            Ok(plan) => plan,
            Err(e) => {
                // Only this table's rows are lost to it: they go to the
                // visitor's error policy as they come, and the stream goes on.
                let (column, reason) = match e {
                    TableMapError::Short(what) => (None, format!("its TABLE_MAP is truncated in the {what}")),
                    TableMapError::UnsupportedType { index, type_code } => (
                        Some(format!("@{}", index + 1)),
                        format!("unsupported column type {type_code}"),
                    ),
                    TableMapError::Invalid(what, detail) => (None, format!("invalid {what} {detail} in its TABLE_MAP")),
                };
                let (db, table) = (
                    String::from_utf8_lossy(db).into_owned(),
                    String::from_utf8_lossy(table).into_owned(),
                );
                tracing::warn!(at = %self.at(ev.pos), db = %db, table = %table, "cannot plan the table: {reason}");
                self.tables.insert(
                    id,
                    TableSlot {
                        body: ev.body.to_vec(),
                        plan: Planned::Broken {
                            db,
                            table,
                            column,
                            reason,
                        },
                    },
                );
                return Ok(Flow::Continue);
            }
        };
        if !plan.has_names {
            let key = (plan.db.clone(), plan.table.clone());
            let provided = self.names.get(&key).is_some_and(|names| plan.rename_columns(names));
            if !provided && self.opts.require_names {
                return Err(DecodeError::NoColumnNames {
                    at: self.at(ev.pos),
                    db: plan.db,
                    table: plan.table,
                });
            }
        }
        v.table_map(&plan);
        self.tables.insert(
            id,
            TableSlot {
                body: ev.body.to_vec(),
                plan: Planned::Table(plan),
            },
        );
        Ok(Flow::Continue)
    }

    fn rows<V: ChangeVisitor>(&mut self, ev: RawEvent<'_>, kind: RowsKind, v: &mut V) -> Result<Flow, DecodeError> {
        let table_id =
            rows::peek_table_id(ev.body, self.table_id_len).ok_or_else(|| self.truncated(ev.pos, "rows event"))?;
        if !self.txn.open {
            // Rows outside any transaction framing (a file cut mid-way, or a
            // server that writes neither GTID nor BEGIN): the event is its own.
            self.begin(ev.pos, None, None, None);
            self.txn.begun = true;
        }
        let event_index = self.txn.rows_events;
        self.txn.rows_events += 1;
        let Some(slot) = self.tables.get(&table_id) else {
            return Err(DecodeError::UnknownTable {
                at: self.at(ev.pos),
                table_id,
            });
        };
        let header =
            rows::parse_header(ev.body, kind, self.table_id_len).map_err(|what| self.truncated(ev.pos, what))?;
        let table = match &slot.plan {
            Planned::Table(table) => table,
            // Filtered out: count its rows cheaply is not possible without
            // decoding, so they are not counted in `rows` of the commit.
            Planned::Filtered => return Ok(Flow::Continue),
            Planned::Broken {
                db,
                table,
                column,
                reason,
            } => {
                let rows = Undecodable {
                    txn: &self.txn.id,
                    event_index,
                    row_index: 0,
                    op: kind.op,
                    db,
                    table,
                    column: column.as_deref(),
                    gtid: self.txn.gtid.as_deref(),
                    file: &self.file,
                    pos: ev.pos,
                    ts: ev.header.timestamp,
                    reason,
                };
                return match v.undecodable(&rows) {
                    Flow::Continue => Ok(Flow::Continue),
                    Flow::Stop => Err(DecodeError::Undecodable(rows.to_string())),
                };
            }
        };
        let inflated;
        let data: &[u8] = if kind.compressed {
            inflated = inflate_mariadb(header.rows).map_err(|e| self.invalid(ev.pos, "compressed rows", e))?;
            &inflated
        } else {
            header.rows
        };
        let mut before = recycle(std::mem::take(&mut self.before));
        let mut after = recycle(std::mem::take(&mut self.after));
        let mut c = Cursor::new(data);
        let mut flow = Flow::Continue;
        let mut row_index = 0u32;
        let mut result = Ok(());
        while !c.is_empty() {
            let w = header.width;
            let left = c.len();
            let read = match kind.op {
                // A rows event is never a snapshot; read like an insert.
                rows::Op::Insert | rows::Op::Snapshot => {
                    rows::read_image(&mut c, table, w, header.present, false, &mut after)
                }
                rows::Op::Delete => rows::read_image(&mut c, table, w, header.present, false, &mut before),
                rows::Op::Update => rows::read_image(&mut c, table, w, header.present, false, &mut before)
                    .and_then(|_| rows::read_image(&mut c, table, w, header.present_after, kind.partial, &mut after)),
            };
            let problem = match read {
                Err(ImageError::Short { column }) => Some((
                    table.columns.get(column).map(|c| c.name.as_str()),
                    "the row image ends inside this column".to_owned(),
                )),
                Err(ImageError::Width { event, table: n }) => Some((
                    None,
                    format!("the rows event has {event} columns but the TABLE_MAP has {n}"),
                )),
                // No column in the image (an empty bitmap): a row takes no
                // bytes, so the rows would never end.
                Ok(_) if c.len() == left => Some((None, "the row image has no columns".to_owned())),
                Ok(_) => None,
            };
            if let Some((column, reason)) = problem {
                // Row boundaries after a bad row are unknown: the rest of the
                // event goes to the visitor's error policy with it.
                let rows = Undecodable {
                    txn: &self.txn.id,
                    event_index,
                    row_index,
                    op: kind.op,
                    db: &table.db,
                    table: &table.table,
                    column,
                    gtid: self.txn.gtid.as_deref(),
                    file: &self.file,
                    pos: ev.pos,
                    ts: ev.header.timestamp,
                    reason: &reason,
                };
                if v.undecodable(&rows) == Flow::Stop {
                    result = Err(DecodeError::Undecodable(rows.to_string()));
                }
                break;
            }
            let change = RowChange {
                txn: &self.txn.id,
                event_index,
                row_index,
                op: kind.op,
                table,
                ts: ev.header.timestamp,
                gtid: self.txn.gtid.as_deref(),
                file: &self.file,
                pos: ev.pos,
                before: (kind.op != rows::Op::Insert).then_some(before.as_slice()),
                after: (kind.op != rows::Op::Delete).then_some(after.as_slice()),
            };
            row_index += 1;
            if v.change(&change) == Flow::Stop {
                flow = Flow::Stop;
                break;
            }
        }
        self.txn.rows += u64::from(row_index);
        self.before = recycle(before);
        self.after = recycle(after);
        result.map(|_| flow)
    }

    fn payload<V: ChangeVisitor>(&mut self, ev: RawEvent<'_>, v: &mut V) -> Result<Flow, DecodeError> {
        let mut c = Cursor::new(ev.body);
        let (mut compression, mut size) = (None, None);
        loop {
            let field = c
                .packed()
                .map_err(|_| self.truncated(ev.pos, "transaction payload header"))?;
            if field == 0 {
                break;
            }
            let len = c
                .packed()
                .map_err(|_| self.truncated(ev.pos, "transaction payload header"))?;
            let value = c
                .take(len as usize)
                .map_err(|_| self.truncated(ev.pos, "transaction payload header"))?;
            let value = Cursor::new(value)
                .packed()
                .map_err(|_| self.truncated(ev.pos, "transaction payload field"))?;
            match field {
                2 => compression = Some(value),
                3 => size = Some(value),
                _ => {}
            }
        }
        let data = c.rest();
        let inflated;
        let events: &[u8] = match compression {
            Some(0) => {
                // The header states the uncompressed size; nothing larger is
                // accepted, so a crafted payload cannot exhaust memory.
                let Some(size) = size.filter(|&s| s <= 1 << 30) else {
                    return Err(self.invalid(ev.pos, "transaction payload", "missing or oversized uncompressed size"));
                };
                inflated = zstd::bulk::decompress(data, size as usize)
                    .map_err(|e| self.invalid(ev.pos, "transaction payload", e.to_string()))?;
                &inflated
            }
            Some(255) | None => data,
            Some(other) => return Err(self.invalid(ev.pos, "transaction payload compression", other.to_string())),
        };
        let mut c = Cursor::new(events);
        let mut count = 0;
        let mut flow = Flow::Continue;
        while !c.is_empty() {
            let header = super::EventHeader::parse(c.rest())
                .ok_or_else(|| self.truncated(ev.pos, "event in transaction payload"))?;
            let size = header.event_size as usize;
            if size < HEADER_LEN {
                return Err(self.invalid(ev.pos, "event in transaction payload", format!("size {size}")));
            }
            if header.type_code == types::TRANSACTION_PAYLOAD {
                // Servers never nest payloads; decoding nested ones recursed
                // once per level and overflowed the stack.
                return Err(self.invalid(ev.pos, "event in transaction payload", "a nested transaction payload"));
            }
            let whole = c
                .take(size)
                .map_err(|_| self.truncated(ev.pos, "event in transaction payload"))?;
            count += 1;
            let inner = RawEvent {
                header,
                body: &whole[HEADER_LEN..],
                pos: ev.pos,
                end: ev.end,
            };
            if self.feed(inner, v)? == Flow::Stop {
                flow = Flow::Stop;
            }
        }
        self.payload_events = count;
        Ok(flow)
    }
}

fn statement_based(at: At) -> DecodeError {
    DecodeError::Unsupported {
        at,
        what: "statement-based change: the server logs with binlog_format=STATEMENT or MIXED, whose changes cannot be \
               decoded into rows. Fix: SET GLOBAL binlog_format = 'ROW' (and binlog_format = ROW in my.cnf), then \
               FLUSH BINARY LOGS and start from the new file (or pass --skip-statements to log and skip such changes)"
            .into(),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum QueryKind {
    Begin,
    Commit,
    InTxn,
    Dml,
    Other,
}

fn classify_query(sql: &[u8]) -> QueryKind {
    let s = skip_comments(sql);
    let word = |w: &str| {
        s.len() >= w.len()
            && s[..w.len()].eq_ignore_ascii_case(w.as_bytes())
            && s.get(w.len()).is_none_or(|b| !b.is_ascii_alphanumeric() && *b != b'_')
    };
    if word("BEGIN") || word("XA START") || word("XA BEGIN") {
        QueryKind::Begin
    } else if word("XA END") || word("SAVEPOINT") || word("ROLLBACK TO") || word("RELEASE SAVEPOINT") {
        QueryKind::InTxn
    } else if word("COMMIT") || word("ROLLBACK") || word("XA COMMIT") || word("XA ROLLBACK") {
        QueryKind::Commit
    } else if word("INSERT") || word("UPDATE") || word("DELETE") || word("REPLACE") || word("LOAD") {
        QueryKind::Dml
    } else {
        QueryKind::Other
    }
}

fn skip_comments(mut s: &[u8]) -> &[u8] {
    loop {
        let t = s.trim_ascii_start();
        if let Some(rest) = t.strip_prefix(b"/*") {
            // `/*!... */` executable comments hold SQL; plain ones do not.
            match rest.windows(2).position(|w| w == b"*/") {
                Some(end) if !rest.starts_with(b"!") => s = &rest[end + 2..],
                _ => return t,
            }
        } else {
            return t;
        }
    }
}

/// Inflates MariaDB's compressed binlog data (`log_bin_compress`): a header
/// byte (bit 7 set; bits 0-2: how many bytes of big-endian length follow;
/// bits 4-6: algorithm, 0 = zlib), the uncompressed length, a zlib stream.
pub fn inflate_mariadb(b: &[u8]) -> Result<Vec<u8>, String> {
    let Some((&h, rest)) = b.split_first() else {
        return Err("empty".into());
    };
    if h & 0x80 == 0 || (h >> 4) & 7 != 0 {
        return Err(format!("unknown compression header {h:#04x}"));
    }
    let n = usize::from(h & 7);
    if n == 0 || n > 4 || rest.len() < n {
        return Err(format!("bad length field in compression header {h:#04x}"));
    }
    let len = super::cursor::be_uint(&rest[..n]);
    super::value::inflate_exact(&rest[n..], len, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_kinds() {
        assert_eq!(classify_query(b"BEGIN"), QueryKind::Begin);
        assert_eq!(classify_query(b"COMMIT"), QueryKind::Commit);
        assert_eq!(classify_query(b"XA COMMIT X'31',X'',1"), QueryKind::Commit);
        assert_eq!(classify_query(b"ROLLBACK TO SAVEPOINT a"), QueryKind::InTxn);
        assert_eq!(classify_query(b"/* app */ insert into t values (1)"), QueryKind::Dml);
        assert_eq!(classify_query(b"ALTER TABLE t ADD c INT"), QueryKind::Other);
        assert_eq!(classify_query(b"BEGINNING"), QueryKind::Other);
    }

    /// Records ids as a consumer that drops the changes of an abandoned
    /// transaction would.
    #[derive(Default)]
    struct Consumer {
        ids: Vec<String>,
        committed: usize,
    }

    impl ChangeVisitor for Consumer {
        fn change(&mut self, change: &RowChange<'_>) -> Flow {
            self.ids.push(change.id());
            Flow::Continue
        }
        fn commit(&mut self, _: &Commit<'_>) -> Flow {
            self.committed = self.ids.len();
            Flow::Continue
        }
    }

    #[test]
    fn an_abandoned_transaction_is_decoded_again_with_the_same_ids() {
        use crate::source::file::{BinlogFile, MAGIC, Next};
        let body = include_bytes!("../../fuzz/corpus/decode/mariadb-types.bin");
        let path = std::env::temp_dir().join(format!("rowhook-abandon-{}.000001", std::process::id()));
        std::fs::write(&path, [&MAGIC[..], &body[..]].concat()).unwrap();
        // Every event, owned, with the offsets a source reports.
        let mut events: Vec<Owned> = Vec::new();
        let mut file = BinlogFile::open(&path).unwrap();
        while let Next::Event(ev) = file.next_event().unwrap() {
            events.push((ev.header, ev.body.to_vec(), ev.pos, ev.end));
        }
        std::fs::remove_file(&path).unwrap();
        type Owned = (super::super::EventHeader, Vec<u8>, u64, u64);
        fn raw(e: &Owned) -> RawEvent<'_> {
            RawEvent {
                header: e.0,
                body: &e.1,
                pos: e.2,
                end: e.3,
            }
        }
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        // As written, and without GTID events: then a transaction's id is
        // the position of its first event, and its rows events count on
        // from an unfinished attempt unless that attempt is dropped.
        let without_gtids: Vec<Owned> = events
            .iter()
            .filter(|e| e.0.type_code != types::MARIA_GTID)
            .cloned()
            .collect();
        for events in [&events, &without_gtids] {
            let mut whole = Consumer::default();
            let mut d = Decoder::new(DecoderOptions::default(), &name);
            for e in events {
                d.feed(raw(e), &mut whole).unwrap();
            }
            let (_, _, gtids) = d.resume_position();
            let final_gtids = gtids.clone();
            assert!(whole.ids.len() >= 15, "{} ids", whole.ids.len());

            // Lose the stream inside every rows-bearing transaction in turn,
            // after each of its rows events: resume from the last commit as a
            // reconnecting source does (format description first, then the
            // events from there).
            let mut cuts = 0;
            for cut in 0..events.len() {
                let mut d = Decoder::new(DecoderOptions::default(), &name);
                let mut c = Consumer::default();
                for e in &events[..=cut] {
                    d.feed(raw(e), &mut c).unwrap();
                }
                if !d.in_transaction() || c.ids.len() == c.committed {
                    continue;
                }
                cuts += 1;
                let before = d.resume_position().1;
                assert!(d.abandon_transaction());
                assert!(!d.in_transaction() && !d.abandon_transaction());
                assert_eq!(d.resume_position().1, before);
                c.ids.truncate(c.committed);
                let fde = events
                    .iter()
                    .find(|e| e.0.type_code == types::FORMAT_DESCRIPTION)
                    .unwrap();
                d.feed(raw(fde), &mut c).unwrap();
                for e in events.iter().filter(|e| e.2 >= before) {
                    d.feed(raw(e), &mut c).unwrap();
                }
                assert_eq!(c.ids, whole.ids, "lost inside the transaction at event {cut}");
                assert_eq!(d.resume_position().2, &final_gtids);
            }
            assert!(cuts >= 10, "only {cuts} cuts inside transactions");
        }
    }

    #[test]
    fn filters() {
        let f = TableFilter::parse("shop.orders, app.*").unwrap();
        assert!(f.matches(b"shop", b"orders"));
        assert!(f.matches(b"app", b"x"));
        assert!(!f.matches(b"shop", b"users"));
        assert!(TableFilter::parse("orders").is_err());
        assert!(TableFilter::parse("").unwrap().matches(b"a", b"b"));
    }
}
