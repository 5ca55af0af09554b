//! Snapshot chunks in the stream (see [`crate::snapshot`]): between two
//! transactions the pipeline asks the reader for the next chunk and learns
//! the binlog place it is consistent with; the stream goes on up to exactly
//! there, and then the chunk's rows go to the subscribed handlers as one
//! transaction of `op = "snapshot"` changes, whose commit carries what is
//! left of the snapshot to the store with their state.

use tokio::runtime::Runtime;
use tokio::sync::oneshot;

use super::Pipeline;
use super::control::{ControlError, SnapshotQueued};
use crate::decode::{ChangeVisitor, Commit, Decoder, Flow, Op, RowChange};
use crate::driver::{Interrupted, Stop};
use crate::snapshot::reader::{Chunk, Opened, Reader, ReaderOptions, Reply};
use crate::snapshot::{Progress, TableProgress};
use crate::store::binlog_at;
use crate::telemetry::{Counter, Gauge, Registry, names};

/// Where the snapshot is between two chunks.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Nothing asked for, or everything read.
    Idle,
    /// The next chunk is to be opened at the next transaction boundary.
    Want,
    /// The next chunk's rows are the tables as of this place.
    Opened(Opened),
}

/// A snapshot asked for while running (the admin API), waiting for the
/// next transaction boundary.
pub(super) struct Request {
    table: TableProgress,
    reply: oneshot::Sender<Result<SnapshotQueued, ControlError>>,
}

/// The pipeline's side of snapshots.
pub(super) struct Snapshots {
    opts: Option<ReaderOptions>,
    reader: Option<Reader>,
    /// What is left, as of the last chunk handed to handlers.
    progress: Progress,
    phase: Phase,
    requests: Vec<Request>,
    chunks: Counter,
    tables_left: Gauge,
}

impl Snapshots {
    pub(super) fn new(registry: &Registry) -> Snapshots {
        Snapshots {
            opts: None,
            reader: None,
            progress: Progress::default(),
            phase: Phase::Idle,
            requests: Vec::new(),
            chunks: registry.counter(
                names::SNAPSHOT_CHUNKS,
                "Snapshot chunks handed to handlers (their rows count as changes with op=\"snapshot\").",
                vec![],
            ),
            tables_left: registry.gauge(
                names::SNAPSHOT_TABLES,
                "Tables whose snapshot is asked for and not done.",
                vec![],
            ),
        }
    }

    /// Whether a chunk is to be opened (the stream may be idle: a tick
    /// should come at once).
    pub(super) fn wants_step(&self) -> bool {
        self.phase == Phase::Want || !self.requests.is_empty()
    }

    /// What is left to read.
    pub(super) fn progress(&self) -> &Progress {
        &self.progress
    }

    fn reader(&mut self) -> anyhow::Result<&mut Reader> {
        if self.reader.is_none() {
            let opts = self.opts.clone().ok_or_else(|| {
                anyhow::anyhow!("snapshots need a [source]: rowhook reads them from the server it streams from")
            })?;
            self.reader = Some(Reader::start(opts)?);
        }
        Ok(self.reader.as_mut().expect("started above"))
    }
}

impl Pipeline {
    /// How snapshots read (from `[source]`); without it, none can be asked for.
    pub fn snapshots_with(&mut self, opts: ReaderOptions) {
        self.snapshots.opts = Some(opts);
    }

    /// Starts reading `progress`: a snapshot asked for at start, or one a
    /// stopped run left. Each table is checked first (its key, its types,
    /// its filter). `strict`: a table that cannot be read fails the start;
    /// otherwise it is dropped from the snapshot with an error logged (a
    /// table dropped or changed since the snapshot began).
    pub fn start_snapshot(&mut self, rt: &Runtime, progress: Progress, strict: bool) -> anyhow::Result<()> {
        for table in progress.tables {
            let name = table.name();
            if strict && let Some(why) = self.no_taker(&table) {
                anyhow::bail!(why);
            }
            let added = rt.block_on(self.snapshots.reader()?.add(table.clone()));
            match added.unwrap_or_else(|_| Err(anyhow::anyhow!("the snapshot reader has stopped"))) {
                Ok(()) => {
                    tracing::info!(table = %name, chunks_done = table.chunks, "snapshot queued");
                    self.queue(table);
                }
                Err(e) if strict => return Err(e),
                Err(e) => tracing::error!(table = %name, error = %e, "the snapshot of this table is dropped"),
            }
        }
        Ok(())
    }

    /// Adds `table`, which the reader took, to what is left; a snapshot
    /// that was idle opens its next chunk at the next boundary.
    fn queue(&mut self, table: TableProgress) {
        self.snapshots.progress.tables.push(table);
        self.snapshots
            .tables_left
            .set(self.snapshots.progress.tables.len() as f64);
        if self.snapshots.phase == Phase::Idle {
            self.snapshots.phase = Phase::Want;
        }
    }

    /// Queues a snapshot of `table` (`db.table`) asked for while running;
    /// the reply comes once the reader has checked it.
    pub(super) fn request_snapshot(
        &mut self,
        table: &str,
        filter: Option<String>,
        reply: oneshot::Sender<Result<SnapshotQueued, ControlError>>,
    ) {
        let Some((db, name)) = table.split_once('.').filter(|(d, t)| !d.is_empty() && !t.is_empty()) else {
            let _ = reply.send(Err(ControlError::Failed(format!(
                "`{table}` is not `db.table`: name one table"
            ))));
            return;
        };
        if let Some(tenant) = self.detached.keys().next() {
            let _ = reply.send(Err(ControlError::Failed(format!(
                "tenant `{tenant}`'s lane reads on a connection of its own, and a snapshot's rows go to the handlers of the shared one; \
                 try again once it is back (status lists it under `lanes_apart` until then)"
            ))));
            return;
        }
        let table = TableProgress::new(db, name, filter);
        if let Some(why) = self.no_taker(&table) {
            let _ = reply.send(Err(ControlError::Failed(why)));
            return;
        }
        self.snapshots.requests.push(Request { table, reply });
    }

    /// Why no handler would see a snapshot of `table`, if none would.
    fn no_taker(&self, table: &TableProgress) -> Option<String> {
        self.router
            .subscribers(&table.db, &table.table, Op::Snapshot)
            .is_empty()
            .then(|| {
                format!(
                    "no handler takes `snapshot` changes of `{}`: reading it would hand its rows to nobody. \
                 Fix: subscribe a handler to the table with \"snapshot\" in its ops (the default ops include it)",
                    table.name()
                )
            })
    }

    /// The snapshot's work at a transaction boundary: queue what was asked
    /// for, open the next chunk, and hand over a chunk whose place the
    /// stream has reached, as many as are ready there.
    pub(super) fn step_snapshot(&mut self, rt: &Runtime, decoder: &Decoder, stop: &mut Stop) -> anyhow::Result<()> {
        for Request { table, reply } in std::mem::take(&mut self.snapshots.requests) {
            let answer = self.snapshots.reader().map(|r| r.add(table.clone()));
            let answer = match answer {
                Ok(rx) => rt
                    .block_on(rx)
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("the snapshot reader has stopped"))),
                Err(e) => Err(e),
            };
            let answer = answer.map(|()| {
                tracing::info!(table = %table.name(), filter = table.filter.as_deref().unwrap_or(""), "snapshot queued");
                let queued = SnapshotQueued {
                    table: table.name(),
                    filter: table.filter.clone(),
                    ahead: self.snapshots.progress.tables.len(),
                };
                self.queue(table);
                queued
            });
            let _ = reply.send(answer.map_err(|e| ControlError::Failed(format!("{e:#}"))));
        }
        loop {
            match &self.snapshots.phase {
                Phase::Idle => return Ok(()),
                Phase::Opened(at) => {
                    let (file, end) = decoder.read_to();
                    if binlog_at(file, end) < binlog_at(&at.file, at.pos) {
                        // The stream reads on up to the chunk's place.
                        return Ok(());
                    }
                }
                Phase::Want => self.snapshots.reader()?.open(),
            }
            self.await_reply(rt, decoder, stop)?;
        }
    }

    /// The reader's next reply; a stop request gives way.
    fn next_reply(&mut self, rt: &Runtime, stop: &mut Stop) -> anyhow::Result<Reply> {
        let reader = self.snapshots.reader()?;
        let reply = rt.block_on(async {
            tokio::select! {
                r = reader.next() => Ok(r),
                () = stop.requested_wait() => Err(Interrupted),
            }
        })?;
        reply.ok_or_else(|| anyhow::anyhow!("the snapshot reader has stopped"))
    }

    /// Waits for the reader's next reply and acts on it.
    fn await_reply(&mut self, rt: &Runtime, decoder: &Decoder, stop: &mut Stop) -> anyhow::Result<()> {
        match self.next_reply(rt, stop)? {
            Reply::Rows(chunk) => {
                // The stream stays at the chunk's place while its rows are
                // handed over: the next chunk is opened first (its place
                // is at or past this one), and the server reads it
                // meanwhile.
                self.snapshots.reader()?.open();
                let next = self.next_reply(rt, stop)?;
                if matches!(next, Reply::Rows(_)) {
                    anyhow::bail!("the snapshot reader sent rows before their place");
                }
                self.hand_over_chunk(rt, decoder, &chunk, stop)?;
                self.snapshots.phase = Phase::Want;
                self.take_reply(next)
            }
            reply => self.take_reply(reply),
        }
    }

    /// Acts on a reply that is not a chunk's rows.
    fn take_reply(&mut self, reply: Reply) -> anyhow::Result<()> {
        match reply {
            Reply::Opened(at) => self.snapshots.phase = Phase::Opened(at),
            Reply::Rows(_) => anyhow::bail!("the snapshot reader sent rows before their place"),
            Reply::Idle => {
                self.snapshots.phase = Phase::Idle;
                if !self.snapshots.progress.is_empty() {
                    anyhow::bail!("the snapshot reader has nothing left to read, yet the snapshot is not done");
                }
            }
            Reply::Failed(e) => {
                // The table cannot be read on (dropped, or changed so that
                // it has no key): the run stops, and the next one drops
                // the table from the snapshot if it still cannot be read.
                let table = (self.snapshots.progress.tables.first())
                    .map(TableProgress::name)
                    .unwrap_or_default();
                anyhow::bail!("the snapshot of `{table}` cannot go on: {e:#}");
            }
        }
        Ok(())
    }

    /// Hands `chunk`'s rows to the handlers as one transaction at the
    /// stream's place, and flushes it.
    fn hand_over_chunk(
        &mut self,
        rt: &Runtime,
        decoder: &Decoder,
        chunk: &Chunk,
        stop: &mut Stop,
    ) -> anyhow::Result<()> {
        let (file, pos, gtids) = decoder.resume_position();
        let map = &chunk.table.map;
        let txn = format!("snapshot:{}.{}", map.db, map.table);
        let ts = super::unix_now() as u32;
        let index = u32::try_from(chunk.index).unwrap_or(u32::MAX);
        self.table_map(map);
        let mut values = Vec::with_capacity(map.columns.len());
        for row in 0..chunk.len() {
            chunk.row(row, &mut values);
            let change = RowChange {
                txn: &txn,
                event_index: index,
                row_index: row as u32,
                op: Op::Snapshot,
                table: map,
                ts,
                gtid: None,
                file,
                pos,
                before: None,
                after: Some(&values),
            };
            if self.change(&change) == Flow::Stop {
                return Err(self
                    .take_halt()
                    .unwrap_or_else(|| anyhow::anyhow!("a handler halted on snapshot row {}", change.id())));
            }
        }
        self.snapshots.chunks.inc();
        let progress = &mut self.snapshots.progress;
        match progress.tables.first_mut() {
            Some(t) if t.db == map.db && t.table == map.table => {
                if chunk.done {
                    progress.tables.remove(0);
                } else {
                    *t = chunk.progress.clone();
                }
            }
            _ => anyhow::bail!(
                "the snapshot reader sent a chunk of `{}.{}` out of turn",
                map.db,
                map.table
            ),
        }
        if chunk.done {
            tracing::info!(table = %format!("{}.{}", map.db, map.table), rows = chunk.progress.rows, chunks = chunk.progress.chunks, "snapshot done");
        }
        self.snapshots
            .tables_left
            .set(self.snapshots.progress.tables.len() as f64);
        self.checkpointer.snapshot_seen(self.snapshots.progress.clone());
        self.commit(&Commit {
            txn: &txn,
            gtid: None,
            file,
            end: pos,
            gtid_state: gtids,
            rows: chunk.len() as u64,
            ts,
        });
        self.in_transaction = true;
        rt.block_on(async {
            tokio::select! {
                r = self.flush() => r,
                () = stop.requested_wait() => Err(Interrupted.into()),
            }
        })
    }
}
