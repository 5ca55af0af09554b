//! `rowhook inspect`: decoded row changes as JSON lines, from a live server
//! or binlog files, with no handlers involved.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use tokio::runtime::Runtime;

use crate::decode::gtid::GtidState;
use crate::decode::txn::TableFilter;
use crate::decode::value::RenderError;
use crate::decode::{ChangeVisitor, Commit, DecodeError, Decoder, DecoderOptions, Flow, RowChange, Undecodable};
use crate::driver::{Consumer, DriveOptions, Ended, Stop, drive};
use crate::source::StartPosition;
use crate::source::file::{BinlogFiles, FileStart};
use crate::source::live::LiveOptions;
use crate::source::reconnect::{Reconnects, Resilient, RetryPolicy};

/// What to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per row change.
    Json,
    /// Only the number of row changes, at the end.
    Count,
}

/// What to do with rows the decoder cannot decode (a table it cannot plan,
/// a value it cannot read).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnUndecodable {
    /// Stop with an error naming the table, column and position.
    #[default]
    Halt,
    /// Log them (table, column, position, reason) and read on.
    Skip,
}

/// Where the binlog comes from.
#[derive(Debug, Clone)]
pub enum Input {
    /// A live server.
    Live(LiveOptions),
    /// Binlog files, read in the order given.
    Files(Vec<PathBuf>),
}

/// Options of `rowhook inspect`.
#[derive(Debug, Clone)]
pub struct InspectOptions {
    /// The binlog source.
    pub input: Input,
    /// Where to start (files: `earliest` is the first file's start).
    pub start: StartPosition,
    /// Tables to print.
    pub tables: TableFilter,
    /// Stop after this many row changes.
    pub limit: Option<u64>,
    /// Output format.
    pub format: Format,
    /// Files: wait for more at the end instead of stopping.
    pub follow: bool,
    /// Accept tables without column names in the binlog.
    pub allow_minimal_metadata: bool,
    /// Log and skip statement-based changes instead of stopping.
    pub skip_statements: bool,
    /// Live: when to reconnect after a lost connection.
    pub reconnect: RetryPolicy,
    /// Rows that cannot be decoded: halt, or log them and read on.
    pub on_undecodable: OnUndecodable,
}

/// What a run saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Row changes printed (or counted).
    pub changes: u64,
    /// Transactions committed.
    pub commits: u64,
    /// Position after the last commit: file and offset.
    pub resume_file: String,
    /// Offset in `resume_file`.
    pub resume_pos: u64,
    /// GTID state after the last commit.
    pub resume_gtids: String,
    /// A partial event at the end of the last file (offset), if any.
    pub partial_tail: Option<u64>,
    /// Live: lost connections resumed, by cause.
    pub reconnects: Reconnects,
    /// Rows events (or their rest) passed over as undecodable, with `--on-error skip`.
    pub undecodable: u64,
}

/// Writes row changes as JSON lines.
struct Printer<W: Write> {
    out: W,
    buf: Vec<u8>,
    format: Format,
    changes: u64,
    commits: u64,
    limit: Option<u64>,
    /// Transactions already executed (start at a GTID set over files).
    skip_gtids: Option<GtidState>,
    skipping: bool,
    /// The open transaction and its last change printed (event, row).
    printed_txn: String,
    printed_at: Option<(u32, u32)>,
    /// After a lost connection: the abandoned transaction comes again, and
    /// its changes up to this one (event, row) were printed already.
    printed_before_loss: Option<(u32, u32)>,
    on_undecodable: OnUndecodable,
    undecodable: u64,
    error: Option<anyhow::Error>,
}

impl<W: Write> Printer<W> {
    /// Writes what is buffered through to the output.
    fn flush_out(&mut self) -> anyhow::Result<()> {
        self.flush_buf();
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        match self.out.flush() {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                Err(anyhow::Error::new(e).context("writing output"))
            }
            _ => Ok(()),
        }
    }

    fn flush_buf(&mut self) -> Flow {
        if self.buf.is_empty() {
            return Flow::Continue;
        }
        let r = self.out.write_all(&self.buf);
        self.buf.clear();
        match r {
            Ok(()) => Flow::Continue,
            // A reader that went away (`| head`) is the end, not a failure.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Flow::Stop,
            Err(e) => {
                self.error = Some(anyhow::Error::new(e).context("writing output"));
                Flow::Stop
            }
        }
    }
}

impl<W: Write> ChangeVisitor for Printer<W> {
    fn change(&mut self, change: &RowChange<'_>) -> Flow {
        if self.skipping {
            return Flow::Continue;
        }
        let at = (change.event_index, change.row_index);
        if let Some(last) = self.printed_before_loss {
            if change.txn == self.printed_txn && at <= last {
                return Flow::Continue;
            }
            self.printed_before_loss = None;
        }
        if self.printed_at.is_none() || change.txn != self.printed_txn {
            self.printed_txn.clear();
            self.printed_txn.push_str(change.txn);
        }
        self.printed_at = Some(at);
        if self.format == Format::Json {
            let mark = self.buf.len();
            if let Err(RenderError(e)) = change.write_json(&mut self.buf) {
                self.buf.truncate(mark);
                let rows = Undecodable::of_change(change, &e);
                return match self.undecodable(&rows) {
                    Flow::Continue => Flow::Continue,
                    Flow::Stop => {
                        self.error = Some(anyhow::anyhow!("{rows}{}", SKIP_HINT));
                        Flow::Stop
                    }
                };
            }
            self.buf.push(b'\n');
            if self.buf.len() >= 1 << 16 && self.flush_buf() == Flow::Stop {
                return Flow::Stop;
            }
        }
        self.changes += 1;
        if self.limit.is_some_and(|l| self.changes >= l) {
            return Flow::Stop;
        }
        Flow::Continue
    }

    fn statement(&mut self, at: &crate::decode::At, sql: &[u8]) {
        let text = String::from_utf8_lossy(&sql[..sql.len().min(200)]);
        tracing::warn!(at = %at, sql = %text, "statement-based change skipped: its rows are not in the binlog");
    }

    fn undecodable(&mut self, rows: &Undecodable<'_>) -> Flow {
        if self.skipping {
            return Flow::Continue;
        }
        match self.on_undecodable {
            OnUndecodable::Halt => Flow::Stop,
            OnUndecodable::Skip => {
                self.undecodable += 1;
                tracing::warn!(change = %rows.id(), "{rows}; passed over (--on-error skip)");
                Flow::Continue
            }
        }
    }

    fn commit(&mut self, _commit: &Commit<'_>) -> Flow {
        self.commits += 1;
        self.skipping = false;
        self.printed_at = None;
        self.printed_before_loss = None;
        Flow::Continue
    }
}

impl<W: Write> Printer<W> {
    /// The stream was lost inside a transaction: it comes again from its
    /// first event, and what was printed of it is not printed twice.
    fn abandon_transaction(&mut self) {
        self.skipping = false;
        if let Some(at) = self.printed_at.take() {
            self.printed_before_loss = Some(at);
        }
    }

    /// Called when a transaction begins with `gtid`: skip it if the start
    /// GTID set already holds it.
    fn begin(&mut self, gtid: Option<&str>) {
        self.skipping = match (&self.skip_gtids, gtid) {
            (Some(set), Some(g)) => set.contains_text(g),
            _ => false,
        };
    }
}

impl<W: Write> Consumer for Printer<W> {
    fn after_event(&mut self, _: &Runtime, decoder: &Decoder, began: bool, _: &mut Stop) -> anyhow::Result<()> {
        if began && self.skip_gtids.is_some() {
            self.begin(decoder.current_gtid());
        }
        match self.error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn decode_failed(&mut self, e: DecodeError) -> anyhow::Error {
        match e {
            DecodeError::Undecodable(what) => anyhow::anyhow!("{what}{SKIP_HINT}"),
            e => e.into(),
        }
    }

    fn abandon_transaction(&mut self) {
        Printer::abandon_transaction(self);
    }

    /// A live tail shows changes as they happen; bulk reads still write in chunks.
    fn idle(&mut self) -> anyhow::Result<()> {
        self.flush_out()
    }
}

/// How to go on past rows that cannot be decoded.
const SKIP_HINT: &str = "; to log such rows and read on, pass --on-error skip";

/// Runs `inspect`, writing to `out`, until the input ends, the limit is
/// reached, or `stop` is requested. Call it outside any async runtime; `rt`
/// serves the live source.
pub fn run<W: Write>(rt: &Runtime, opts: InspectOptions, out: W, mut stop: Stop) -> anyhow::Result<Summary> {
    let mut printer = Printer {
        out,
        buf: Vec::with_capacity(1 << 17),
        format: opts.format,
        changes: 0,
        commits: 0,
        limit: opts.limit,
        skip_gtids: None,
        skipping: false,
        printed_txn: String::new(),
        printed_at: None,
        printed_before_loss: None,
        on_undecodable: opts.on_undecodable,
        undecodable: 0,
        error: None,
    };
    let dopts = DecoderOptions {
        require_names: !opts.allow_minimal_metadata,
        tables: opts.tables.clone(),
        skip_statements: opts.skip_statements,
    };
    if opts.limit == Some(0) {
        return Ok(Summary::default());
    }
    let mut summary = Summary::default();
    let mut decoder = Decoder::new(dopts, "");
    let driven = match &opts.input {
        Input::Live(live) => {
            let mut live = live.clone();
            live.allow_minimal_metadata = opts.allow_minimal_metadata;
            live.start = opts.start.clone();
            let mut source = rt.block_on(Resilient::open(live, opts.reconnect.clone()))?;
            let stats = source.stats();
            decoder.set_gtid_state(source.start_gtids().clone());
            let driven = drive(
                rt,
                &mut source,
                &mut decoder,
                &mut printer,
                &mut stop,
                DriveOptions {
                    names_from_source: opts.allow_minimal_metadata,
                },
            );
            summary.reconnects = stats.reconnects();
            driven
        }
        Input::Files(files) => {
            let (first, start) = match &opts.start {
                StartPosition::Earliest => (0, None),
                StartPosition::Latest => (files.len().saturating_sub(1), Some(FileStart::End)),
                StartPosition::File { file, pos } => (
                    BinlogFiles::position_of(files, file)
                        .with_context(|| format!("--start names {file}, which is not among the files given"))?,
                    Some(FileStart::At(*pos)),
                ),
                StartPosition::Gtid(set) => {
                    printer.skip_gtids = Some(GtidState::parse(set).map_err(|e| anyhow::anyhow!("--start: {e}"))?);
                    (0, None)
                }
            };
            let mut source = BinlogFiles::new(files, first, start, opts.follow)?;
            drive(
                rt,
                &mut source,
                &mut decoder,
                &mut printer,
                &mut stop,
                DriveOptions::default(),
            )
        }
    };
    // What was decoded before an error is still written out.
    match driven {
        Ok(Ended::End { partial }) => summary.partial_tail = partial,
        Ok(Ended::Stopped | Ended::Interrupted) => {}
        Err(e) => {
            printer.flush_buf();
            let _ = printer.out.flush();
            return Err(e);
        }
    }
    let (file, pos, gtids) = decoder.resume_position();
    summary.resume_file = file.to_owned();
    summary.resume_pos = pos;
    summary.resume_gtids = gtids.to_string();
    finish(printer, summary)
}

fn finish<W: Write>(mut printer: Printer<W>, mut summary: Summary) -> anyhow::Result<Summary> {
    printer.flush_buf();
    if let Some(e) = printer.error.take() {
        return Err(e);
    }
    if printer.format == Format::Count {
        let _ = writeln!(printer.out, "{}", printer.changes);
    }
    let _ = printer.out.flush();
    summary.changes = printer.changes;
    summary.commits = printer.commits;
    summary.undecodable = printer.undecodable;
    Ok(summary)
}

/// Reads the names of the binlog files in `dir` in order, from its index file.
pub fn files_in_index(index: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string(index).with_context(|| format!("reading {}", index.display()))?;
    let dir = index.parent().unwrap_or(Path::new("."));
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| dir.join(Path::new(l).file_name().unwrap_or_default()))
        .collect())
}
