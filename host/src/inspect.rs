//! `rowhook inspect`: decoded row changes as JSON lines, from a live server
//! or binlog files, with no handlers involved.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;

use crate::decode::gtid::GtidState;
use crate::decode::txn::TableFilter;
use crate::decode::value::RenderError;
use crate::decode::{ChangeVisitor, Commit, DecodeError, Decoder, DecoderOptions, Flow, RowChange, Undecodable};
use crate::source::StartPosition;
use crate::source::file::{BinlogFile, Next};
use crate::source::live::LiveOptions;
use crate::source::reconnect::{Reconnects, Resilient, RetryPolicy, Step};

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

/// Runs `inspect`, writing to `out`, until the input ends, the limit is
/// reached, or `shutdown` resolves.
pub async fn run<W: Write>(
    opts: InspectOptions,
    out: W,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<Summary> {
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
    let decoder = match &opts.input {
        Input::Live(live) => {
            tokio::pin!(shutdown);
            let mut live = live.clone();
            live.allow_minimal_metadata = opts.allow_minimal_metadata;
            live.start = opts.start.clone();
            let r = tokio::select! {
                r = run_live(&live, &opts.reconnect, dopts, &mut printer, &mut summary) => r,
                () = &mut shutdown => return finish(printer, summary),
            };
            r
        }
        Input::Files(files) => run_files(files, &opts, dopts, &mut printer, &mut summary),
    };
    // What was decoded before an error is still written out.
    let decoder = match decoder {
        Ok(d) => d,
        Err(e) => {
            printer.flush_buf();
            let _ = printer.out.flush();
            return Err(e);
        }
    };
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

/// How to go on past rows that cannot be decoded.
const SKIP_HINT: &str = "; to log such rows and read on, pass --on-error skip";

/// Feeds one event, telling the printer where transactions begin.
fn feed<W: Write>(
    decoder: &mut Decoder,
    ev: crate::decode::RawEvent<'_>,
    printer: &mut Printer<W>,
) -> anyhow::Result<Flow> {
    let was_open = decoder.in_transaction();
    let flow = decoder.feed(ev, printer).map_err(|e| match e {
        DecodeError::Undecodable(what) => anyhow::anyhow!("{what}{SKIP_HINT}"),
        e => e.into(),
    })?;
    if !was_open && decoder.in_transaction() && printer.skip_gtids.is_some() {
        printer.begin(decoder.current_gtid());
    }
    if let Some(e) = printer.error.take() {
        return Err(e);
    }
    Ok(flow)
}

async fn run_live<W: Write>(
    live: &LiveOptions,
    policy: &RetryPolicy,
    dopts: DecoderOptions,
    printer: &mut Printer<W>,
    summary: &mut Summary,
) -> anyhow::Result<Decoder> {
    let mut source = Resilient::open(live.clone(), policy.clone()).await?;
    let stats = source.stats();
    let mut decoder = Decoder::new(dopts, "");
    decoder.set_gtid_state(source.start_gtids().clone());
    let mut named = std::collections::HashSet::new();
    loop {
        // Output goes out whenever the stream has nothing ready: a live tail
        // shows changes as they happen, and bulk reads still write in chunks.
        let next = {
            let mut next = std::pin::pin!(source.next_event());
            match std::future::poll_fn(|cx| std::task::Poll::Ready(next.as_mut().poll(cx))).await {
                std::task::Poll::Ready(r) => r,
                std::task::Poll::Pending => {
                    printer.flush_out()?;
                    next.await
                }
            }
        };
        let event = match next {
            Ok(Step::Event(event)) => event,
            Ok(Step::Resumed(_)) => {
                summary.reconnects = stats.reconnects();
                let txn = decoder.current_gtid().map(str::to_owned);
                if decoder.abandon_transaction() {
                    tracing::info!(
                        txn = txn.as_deref().unwrap_or("-"),
                        printed = printer.printed_at.is_some(),
                        "the stream was lost inside a transaction: it is read again from its start, and its changes already printed are not printed again"
                    );
                }
                printer.abandon_transaction();
                continue;
            }
            Err(e) => {
                summary.reconnects = stats.reconnects();
                return Err(e.into());
            }
        };
        let raw = source.raw(&event);
        if live.allow_minimal_metadata
            && raw.header.type_code == crate::decode::event::types::TABLE_MAP
            && let Some((_, db, table)) =
                crate::decode::table_map::TableMap::peek_names(raw.body, decoder.table_id_len())
        {
            let key = (
                String::from_utf8_lossy(db).into_owned(),
                String::from_utf8_lossy(table).into_owned(),
            );
            if named.insert(key.clone()) {
                let names = source.column_names(&key.0, &key.1).await?;
                tracing::warn!(
                    db = %key.0, table = %key.1,
                    "column names taken from information_schema (binlog_row_metadata is not FULL): they are today's names and are wrong for rows written before a rename"
                );
                decoder.provide_names(&key.0, &key.1, names);
            }
        }
        let is_payload = raw.header.type_code == crate::decode::event::types::TRANSACTION_PAYLOAD;
        let commits = printer.commits;
        let flow = feed(&mut decoder, raw, printer)?;
        if printer.commits != commits {
            source.committed(decoder.resume_position());
        }
        if is_payload {
            source.skip_payload_copies(decoder.payload_events());
        }
        if flow == Flow::Stop {
            break;
        }
    }
    summary.reconnects = stats.reconnects();
    Ok(decoder)
}

fn run_files<W: Write>(
    files: &[PathBuf],
    opts: &InspectOptions,
    dopts: DecoderOptions,
    printer: &mut Printer<W>,
    summary: &mut Summary,
) -> anyhow::Result<Decoder> {
    anyhow::ensure!(!files.is_empty(), "no binlog files given");
    let mut decoder = Decoder::new(dopts, "");
    let mut first = 0;
    let mut seek_to = None;
    match &opts.start {
        StartPosition::Earliest => {}
        StartPosition::Latest => {
            first = files.len() - 1;
            seek_to = Some(u64::MAX);
        }
        StartPosition::File { file, pos } => {
            first = files
                .iter()
                .position(|p| p.file_name().is_some_and(|n| n.to_string_lossy() == *file))
                .with_context(|| format!("--start names {file}, which is not among the files given"))?;
            seek_to = Some(*pos);
        }
        StartPosition::Gtid(set) => {
            printer.skip_gtids = Some(GtidState::parse(set).map_err(|e| anyhow::anyhow!("--start: {e}"))?);
        }
    }
    let mut queue: Vec<PathBuf> = files[first..].to_vec();
    let mut i = 0;
    while i < queue.len() {
        let path = queue[i].clone();
        let mut file = BinlogFile::open(&path)?;
        decoder.set_file(file.name());
        if let Some(pos) = seek_to.take() {
            // The format description is needed before any other event.
            if let Next::Event(ev) = file.next_event()? {
                feed(&mut decoder, ev, printer)?;
            }
            let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            let target = if pos == u64::MAX { len } else { pos };
            if target > len {
                anyhow::bail!(
                    "--start {}:{target} is past the end of the file ({len} bytes)",
                    file.name()
                );
            }
            file.seek(target)?;
        }
        let name_before = file.name().to_owned();
        loop {
            match file.next_event()? {
                Next::Event(ev) => {
                    let flow = feed(&mut decoder, ev, printer)?;
                    if flow == Flow::Stop {
                        return Ok(decoder);
                    }
                    if opts.follow && decoder.file() != name_before && i + 1 == queue.len() {
                        // A ROTATE at the end of a file names the next one.
                        let next = path.with_file_name(decoder.file());
                        queue.push(next);
                    }
                }
                Next::End { partial } => {
                    if opts.follow && i + 1 == queue.len() && decoder.file() == file.name() {
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                    if partial.is_some() && i + 1 == queue.len() {
                        summary.partial_tail = partial;
                        tracing::warn!(
                            file = %path.display(),
                            offset = partial,
                            "the file ends inside an event (still being written, or cut): stopped at the last whole event"
                        );
                    }
                    break;
                }
            }
        }
        i += 1;
    }
    Ok(decoder)
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
