//! Changes held back from handlers that cannot take them yet: a handler
//! suspended by its circuit breaker with `while_suspended = "hold"`, or
//! paused by an operator.
//!
//! Each handler has a queue of its held changes, in binlog order. While
//! the queue holds anything (or the handler is paused), every further
//! change routed to the handler joins it, so the handler still sees its
//! changes in order. The pipeline hands the queue's changes over once the
//! handler may be called again, oldest first, between transactions.
//!
//! With a store and a source that can start again at a place (`run`,
//! `replay --checkpoint`), held changes stay in the binlog: the queue
//! counts them and records where the oldest one is, and a reader
//! ([`super::reread`]) reads them back from there when they are handed
//! over. Holding a change then costs a count. Changes the binlog does not
//! have (snapshot rows), and those held after a change was refused for
//! want of room, go to the handler's held file ([`super::held_file`]),
//! behind the ones in the binlog; so does everything with
//! `breaker.hold_in = "file"`. Holding a change in the file appends it,
//! handing changes over reads them back a window at a time. The store
//! records, in the batch of each transaction and hand-over, what is held
//! where. The position therefore moves on for the other handlers while a
//! held change waits, a restart finds it again, and memory holds only the
//! window. Without a store the queue lives in memory only.
//!
//! A queue is bounded by its handler's `breaker.hold_mb`, counted as the
//! changes' size as handlers receive them: a change that would grow it
//! further is not held, and fails under the handler's `on_error` instead.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, TryRecvError};

use super::held_file::HeldFile;
use super::reread::{Reread, RereadJob, RereadStarter};
use super::router::Subscription;
use crate::config::{BreakerPlan, HandlerPlan};
use crate::driver::Stop;
use crate::handler_id::HandlerId;
use crate::store::{Checkpoint, HeldAt, HeldChange, HeldRange};

/// How many changes a reader may have read ahead of the hand-over.
const READ_AHEAD: usize = 1024;
/// How long after a reader failed a new one starts.
const REREAD_RETRY: std::time::Duration = std::time::Duration::from_secs(5);
/// How long after a reader read to the end of the files a new one starts.
const REREAD_IDLE: std::time::Duration = std::time::Duration::from_millis(100);
/// How often a hand-over waiting on a reader looks again.
const REREAD_POLL: std::time::Duration = std::time::Duration::from_millis(2);
use crate::telemetry::{Counter, Gauge, Registry, names};

/// A held change in memory: the change, its size, and (in a file) the
/// offset after its record.
struct Held {
    change: Arc<HeldChange>,
    size: u64,
    next: u64,
}

/// A queue's file, and where in it the queue is.
struct FileQueue {
    /// Where the file is, until it is opened: when the first change is
    /// held, or at once if the store says it holds some.
    dir: std::path::PathBuf,
    file: Option<HeldFile>,
    /// The offset of the oldest held change.
    head: u64,
    /// The offset of the first change not in the window.
    read_at: u64,
    /// The file's end when the transaction in progress held its first change.
    txn_start: u64,
}

impl FileQueue {
    fn end(&self) -> u64 {
        self.file.as_ref().map_or(0, HeldFile::end)
    }

    fn file(&mut self, key: &str) -> anyhow::Result<&mut HeldFile> {
        if self.file.is_none() {
            self.file = Some(HeldFile::open(&self.dir, key, HeldRange::default())?);
        }
        Ok(self.file.as_mut().expect("opened"))
    }
}

/// The oldest held changes, left in the binlog.
struct InBinlog {
    at: HeldAt,
    /// What the handler subscribed to when they were held: what a reader
    /// picks from the binlog.
    subscription: Subscription,
    /// How many of them the transaction in progress held.
    in_txn: u64,
    /// Changes read back and not yet released, each with where its
    /// transaction starts.
    window: VecDeque<(Held, Arc<Checkpoint>)>,
    reader: Option<Reader>,
    /// Why reading failed last, logged once.
    failed: Option<String>,
    /// After a failure: when to try again.
    retry_at: Option<std::time::Instant>,
}

/// A reader's thread, as the queue sees it: stopped when dropped.
struct Reader {
    changes: Receiver<Reread>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Drop for Reader {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

impl InBinlog {
    /// Takes what the reader has read, until the window holds change `n`,
    /// starting the reader first if need be.
    fn read(&mut self, id: &HandlerId, starter: Option<&dyn RereadStarter>, dead_letters: bool, n: usize) {
        while self.window.len() <= n {
            if self.reader.is_none() {
                let Some(starter) = starter else { return };
                if self.retry_at.is_some_and(|at| at > std::time::Instant::now()) {
                    return;
                }
                // On from the last change read, or from the oldest held.
                let at = match self.window.back() {
                    Some((h, from)) => HeldAt {
                        from: Checkpoint::clone(from),
                        first: h.change.id.clone(),
                        past: true,
                        count: self.at.count - self.window.len() as u64,
                        closed: self.at.closed,
                    },
                    None => self.at.clone(),
                };
                let (out, changes) = std::sync::mpsc::sync_channel(READ_AHEAD);
                let (stop, watch) = tokio::sync::watch::channel(false);
                let job = RereadJob {
                    handler: id.clone(),
                    at,
                    subscription: self.subscription.clone(),
                    dead_letters,
                    out,
                    stop: Stop::on(watch),
                };
                match starter.start(job) {
                    Ok(()) => self.reader = Some(Reader { changes, stop }),
                    Err(e) => {
                        self.failed(id, &e);
                        return;
                    }
                }
            }
            let reader = self.reader.as_ref().expect("started");
            match reader.changes.try_recv() {
                Ok(Reread::Change(change, from)) => {
                    let size = change.size();
                    let held = Held {
                        change: Arc::new(change),
                        size,
                        next: 0,
                    };
                    self.window.push_back((held, from));
                }
                Ok(Reread::Failed(e)) => {
                    self.failed(id, &e);
                    self.reader = None;
                    return;
                }
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Disconnected) => {
                    // It read to the end of what there is: asked again
                    // later, it goes on from there.
                    self.reader = None;
                    self.retry_at = Some(std::time::Instant::now() + REREAD_IDLE);
                    return;
                }
            }
        }
    }

    /// Reading failed with `e`: logged once per cause; the next hand-over
    /// starts a new reader.
    fn failed(&mut self, id: &HandlerId, e: &anyhow::Error) {
        let why = format!("{e:#}");
        if self.failed.as_deref() != Some(why.as_str()) {
            tracing::error!(
                handler = %id,
                "its {} held changes cannot be read from the binlog at {}:{} (tried again until they can): {why}; \
                 if the server no longer has that binlog file, they are lost: keep binlogs for as long as a handler may be held, \
                 or set breaker.hold_in = \"file\"",
                self.at.count,
                self.at.from.file,
                self.at.from.pos,
            );
            self.failed = Some(why);
        }
        self.retry_at = Some(std::time::Instant::now() + REREAD_RETRY);
    }
}

/// One handler's held changes.
struct Queue {
    /// What is in the binlog, before what is in `window` and the file.
    binlog: Option<InBinlog>,
    /// What the handler subscribes to, and whether its held changes carry
    /// their JSON.
    subscription: Subscription,
    dead_letters: bool,
    /// Held changes may stay in the binlog (`breaker.hold_in`).
    in_binlog: bool,
    /// What is held changed in the transaction in progress other than by
    /// holding a change: the store is to record it.
    moved: bool,
    /// The oldest held changes: with a file, those read back so far;
    /// without one, all of them.
    window: VecDeque<Held>,
    file: Option<FileQueue>,
    count: u64,
    bytes: u64,
    /// The most `bytes` may be.
    room: u64,
    /// Changes (and their bytes) the transaction in progress held.
    in_txn: u64,
    txn_bytes: u64,
    paused: bool,
    /// Whether a change was refused for want of room since the queue was
    /// last empty (the refusal is logged once).
    overflowed: bool,
    held: Counter,
    released: Counter,
    now: Gauge,
}

impl Queue {
    fn holding(&self) -> bool {
        self.paused || self.count > 0
    }

    /// The file's range, as the store is to record it.
    fn range(&self, f: &FileQueue) -> HeldRange {
        HeldRange {
            head: f.head,
            end: f.end(),
            count: self.count,
            bytes: self.bytes,
            binlog: self.binlog.as_ref().map(|b| b.at.clone()),
        }
    }

    /// Lets no further held change join those in the binlog: they go to
    /// the file, behind them.
    fn close_binlog(&mut self) {
        if let Some(b) = &mut self.binlog
            && !b.at.closed
        {
            b.at.closed = true;
            self.moved = true;
        }
    }

    /// How many held changes are in the binlog.
    fn in_binlog(&self) -> u64 {
        self.binlog.as_ref().map_or(0, |b| b.at.count)
    }
}

/// Why a change was not held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full {
    /// The handler's room for held changes, in bytes.
    pub room: u64,
    /// Whether this is the first refusal since the queue was last empty.
    pub first: bool,
}

/// Every handler's held changes.
#[derive(Default)]
pub struct Holds {
    queues: HashMap<HandlerId, Queue>,
    /// Whether any queue holds something or is paused: on the path of a
    /// healthy pipeline, the only thing read.
    active: bool,
    /// Reads held changes back from the binlog, where the source can.
    reread: Option<Arc<dyn RereadStarter>>,
}

impl Holds {
    /// A queue for handler `id` (planned as `plan`), counted in `registry`.
    pub fn add(&mut self, id: HandlerId, plan: &HandlerPlan, registry: &Registry) {
        let labels = || vec![("tenant", plan.tenant.clone()), ("handler", plan.name.clone())];
        let room = plan
            .breaker
            .hold_bytes
            .unwrap_or(u64::from(BreakerPlan::DEFAULT_HOLD_MB) << 20);
        self.queues.insert(
            id,
            Queue {
                binlog: None,
                subscription: Subscription {
                    tables: plan.tables.clone(),
                    ops: plan.ops,
                },
                dead_letters: matches!(plan.on_error, crate::config::OnError::DeadLetter { .. }),
                in_binlog: !plan.breaker.hold_in_file,
                moved: false,
                window: VecDeque::new(),
                file: None,
                count: 0,
                bytes: 0,
                room,
                in_txn: 0,
                txn_bytes: 0,
                paused: false,
                overflowed: false,
                held: registry.counter(
                    names::HANDLER_HELD,
                    "Changes held back from the handler while it was suspended or paused.",
                    labels(),
                ),
                released: registry.counter(
                    names::HANDLER_RELEASED,
                    "Held changes handed over to the handler (or to its on_error) later.",
                    labels(),
                ),
                now: registry.gauge(names::HANDLER_HELD_NOW, "Changes held for the handler now.", labels()),
            },
        );
    }

    /// Keeps `id`'s queue in its held file under `dir`, which holds `range`
    /// as the store recorded it. Call before anything is held.
    pub fn open_file(&mut self, id: &HandlerId, dir: &Path, range: HeldRange) -> anyhow::Result<()> {
        let Some(q) = self.queues.get_mut(id) else {
            return Ok(());
        };
        let file = (range.in_file() > 0)
            .then(|| HeldFile::open(dir, id.key(), range.clone()))
            .transpose()?;
        let head = if range.in_file() == 0 { 0 } else { range.head };
        q.binlog = range.binlog.clone().map(|at| InBinlog {
            at,
            subscription: q.subscription.clone(),
            in_txn: 0,
            window: VecDeque::new(),
            reader: None,
            failed: None,
            retry_at: None,
        });
        q.file = Some(FileQueue {
            dir: dir.to_owned(),
            file,
            head,
            read_at: head,
            txn_start: 0,
        });
        q.count = range.count;
        q.bytes = range.bytes;
        q.now.set(q.count as f64);
        self.refresh();
        Ok(())
    }

    /// Appends `changes`, which an earlier version kept in the store, to
    /// `id`'s held file and syncs it; returns the range the store is to
    /// record for it.
    pub fn adopt(&mut self, id: &HandlerId, changes: &[HeldChange]) -> anyhow::Result<Option<HeldRange>> {
        let Some(q) = self.queues.get_mut(id) else {
            return Ok(None);
        };
        let Some(f) = &mut q.file else { return Ok(None) };
        let file = f.file(id.key())?;
        for c in changes {
            file.append(&c.id, &c.json, &c.encoded)?;
            q.count += 1;
            q.bytes += c.size();
        }
        file.sync()?;
        q.now.set(q.count as f64);
        let range = q.range(q.file.as_ref().expect("a file"));
        self.refresh();
        Ok(Some(range))
    }

    /// Handler `id` was changed (deployed anew): what it subscribes to may
    /// differ, so changes held from now on go to its held file, behind any
    /// it has in the binlog, which a reader finds under the subscription
    /// they were held under.
    pub fn changed(&mut self, id: &HandlerId, plan: &HandlerPlan) {
        if let Some(q) = self.queues.get_mut(id) {
            q.close_binlog();
            q.subscription = Subscription {
                tables: plan.tables.clone(),
                ops: plan.ops,
            };
            q.dead_letters = matches!(plan.on_error, crate::config::OnError::DeadLetter { .. });
        }
    }

    /// Drops handler `id`'s queue (the handler was removed): what its file
    /// holds stays there, with the range the store last recorded.
    pub fn remove(&mut self, id: &HandlerId) {
        self.queues.remove(id);
        self.refresh();
    }

    /// Whether handler `id` has a queue.
    pub fn has(&self, id: &HandlerId) -> bool {
        self.queues.contains_key(id)
    }

    fn refresh(&mut self) {
        self.active = self.queues.values().any(Queue::holding);
    }

    /// Whether any handler is holding: if not, nothing else here matters.
    pub fn any(&self) -> bool {
        self.active
    }

    /// Whether changes for `id` must be held: it holds changes already (so
    /// a new one goes behind them), or it is paused.
    pub fn holding(&self, id: &HandlerId) -> bool {
        self.active && self.queues.get(id).is_some_and(Queue::holding)
    }

    /// Reads held changes back from the binlog through `starter` from now
    /// on, for handlers whose `breaker.hold_in` allows it. Only for a
    /// source that can start again at a held place.
    pub fn reread_with(&mut self, starter: Arc<dyn RereadStarter>) {
        self.reread = Some(starter);
    }

    /// Holds change `change_id` (its `json`, its `encoded` form) for `id`,
    /// in the transaction in progress, or says why it could not be held.
    /// `from`: where the change's transaction starts in the binlog, if the
    /// change is one a reader can find there again (a snapshot row is not).
    pub fn push(
        &mut self,
        id: &HandlerId,
        change_id: String,
        json: Vec<u8>,
        encoded: &[u8],
        from: Option<&Checkpoint>,
    ) -> anyhow::Result<Result<(), Full>> {
        let q = self.queues.get_mut(id).expect("every handler has a queue");
        let size = HeldChange::bytes_len(&change_id, &json, encoded) as u64;
        if q.bytes + size > q.room {
            let first = !q.overflowed;
            q.overflowed = true;
            // Those held after it cannot be found by counting from here.
            q.close_binlog();
            return Ok(Err(Full { room: q.room, first }));
        }
        let store = q.file.is_some();
        match (&mut q.binlog, from) {
            (Some(b), Some(_)) if !b.at.closed => {
                b.at.count += 1;
                b.in_txn += 1;
            }
            (None, Some(from)) if store && q.in_binlog && self.reread.is_some() && q.count == 0 => {
                q.binlog = Some(InBinlog {
                    at: HeldAt {
                        from: from.clone(),
                        first: change_id,
                        past: false,
                        count: 1,
                        closed: false,
                    },
                    subscription: q.subscription.clone(),
                    in_txn: 1,
                    window: VecDeque::new(),
                    reader: None,
                    failed: None,
                    retry_at: None,
                });
            }
            _ => {
                q.close_binlog();
                match &mut q.file {
                    Some(f) => {
                        if q.in_txn == q.binlog.as_ref().map_or(0, |b| b.in_txn) {
                            f.txn_start = f.end();
                        }
                        f.file(id.key())?.append(&change_id, &json, encoded)?;
                    }
                    None => q.window.push_back(Held {
                        change: Arc::new(HeldChange {
                            id: change_id,
                            encoded: encoded.to_vec(),
                            json,
                        }),
                        size,
                        next: 0,
                    }),
                }
            }
        }
        q.count += 1;
        q.bytes += size;
        q.in_txn += 1;
        q.txn_bytes += size;
        q.held.inc();
        q.now.set(q.count as f64);
        self.active = true;
        Ok(Ok(()))
    }

    /// The transaction in progress is acknowledged: what it held stays.
    /// Returns the ranges of the held files it grew, for the store.
    pub fn end_transaction(&mut self) -> Vec<(HandlerId, HeldRange)> {
        let mut ranges = Vec::new();
        if !self.active {
            return ranges;
        }
        for (id, q) in &mut self.queues {
            if (q.in_txn > 0 || std::mem::take(&mut q.moved))
                && let Some(f) = &q.file
            {
                ranges.push((id.clone(), q.range(f)));
            }
            q.in_txn = 0;
            q.txn_bytes = 0;
            if let Some(b) = &mut q.binlog {
                b.in_txn = 0;
            }
        }
        ranges
    }

    /// The transaction in progress was cut: what it held goes (its
    /// changes come again).
    pub fn abandon_transaction(&mut self) -> anyhow::Result<()> {
        self.abandon_where(|_| true)
    }

    /// What the transaction in progress held for the handlers `which`
    /// picks goes (their lane stopped inside it, and takes it again).
    pub fn abandon_where(&mut self, which: impl Fn(&HandlerId) -> bool) -> anyhow::Result<()> {
        if !self.active {
            return Ok(());
        }
        for (id, q) in &mut self.queues {
            if !which(id) {
                continue;
            }
            let n = std::mem::take(&mut q.in_txn);
            if n == 0 {
                continue;
            }
            let in_binlog = match &mut q.binlog {
                Some(b) => {
                    let k = std::mem::take(&mut b.in_txn);
                    b.at.count -= k;
                    k
                }
                None => 0,
            };
            if n > in_binlog {
                match &mut q.file {
                    Some(f) => {
                        let at = f.txn_start;
                        f.file(id.key())?.cut(at)?;
                    }
                    None => q.window.truncate(q.window.len() - (n - in_binlog) as usize),
                }
            }
            if q.binlog.as_ref().is_some_and(|b| b.at.count == 0) {
                q.binlog = None;
            }
            q.count -= n;
            q.bytes -= std::mem::take(&mut q.txn_bytes);
            q.now.set(q.count as f64);
        }
        self.refresh();
        Ok(())
    }

    /// The handlers with held changes (paused ones only if `paused_too`),
    /// in no order.
    pub fn with_changes(&self, paused_too: bool) -> Vec<HandlerId> {
        if !self.active {
            return Vec::new();
        }
        self.queues
            .iter()
            .filter(|(_, q)| (paused_too || !q.paused) && q.count > 0)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// `id`'s `n`th held change (0: the oldest), read back from the binlog
    /// or its file if need be: `None` past the last, or while a reader has
    /// not read it yet. Call between transactions.
    pub fn get(&mut self, id: &HandlerId, n: usize) -> anyhow::Result<Option<Arc<HeldChange>>> {
        let starter = self.reread.as_deref();
        let Some(q) = self.queues.get_mut(id) else {
            return Ok(None);
        };
        let in_binlog = q.in_binlog() as usize;
        if n < in_binlog {
            let b = q.binlog.as_mut().expect("held changes in the binlog");
            b.read(id, starter, q.dead_letters, n);
            return Ok(b.window.get(n).map(|(h, _)| h.change.clone()));
        }
        let n = n - in_binlog;
        if let Some(f) = &mut q.file {
            let end = f.end();
            while q.window.len() <= n && f.read_at < end {
                let at = f.read_at;
                let (change, next) = f.file(id.key())?.read(at)?;
                let size = change.size();
                q.window.push_back(Held {
                    change: Arc::new(change),
                    size,
                    next,
                });
                f.read_at = next;
            }
        }
        Ok(q.window.get(n).map(|h| h.change.clone()))
    }

    /// When `id`'s oldest held change may be there to hand over, if it is
    /// being read back from the binlog and is not there yet.
    pub fn read_due(&self, id: &HandlerId, now: std::time::Instant) -> Option<std::time::Instant> {
        let b = self.queues.get(id)?.binlog.as_ref()?;
        if !b.window.is_empty() {
            return None;
        }
        Some(match (b.reader.is_none(), b.retry_at) {
            (true, Some(at)) => at.max(now),
            _ => now + REREAD_POLL,
        })
    }

    /// Drops `id`'s `n` oldest held changes, handed over (each got by
    /// [`Holds::get`] first); returns what is held after them, for the
    /// store.
    pub fn release(&mut self, id: &HandlerId, n: usize) -> Option<HeldRange> {
        let q = self.queues.get_mut(id)?;
        let mut n = n;
        let mut released = 0;
        if let Some(b) = &mut q.binlog {
            let k = n.min(b.window.len());
            let mut last = None;
            for (h, from) in b.window.drain(..k) {
                q.bytes = q.bytes.saturating_sub(h.size);
                q.count -= 1;
                last = Some((h, from));
            }
            if let Some((h, from)) = last {
                b.at.count -= k as u64;
                b.at.first.clone_from(&h.change.id);
                b.at.past = true;
                b.at.from = Checkpoint::clone(&from);
            }
            if b.at.count == 0 {
                q.binlog = None;
            }
            n -= k;
            released += k;
        }
        let n = n.min(q.window.len());
        for h in q.window.drain(..n) {
            q.bytes = q.bytes.saturating_sub(h.size);
            q.count -= 1;
            if let Some(f) = &mut q.file {
                f.head = h.next;
            }
        }
        q.released.add((released + n) as u64);
        q.now.set(q.count as f64);
        if q.count == 0 {
            q.overflowed = false;
            q.bytes = 0;
        }
        let range = q.file.as_ref().map(|f| q.range(f));
        self.refresh();
        range
    }

    /// Makes every held file durable up to its end: before a batch that
    /// records their ranges commits.
    pub fn sync(&mut self) -> anyhow::Result<()> {
        if !self.active {
            return Ok(());
        }
        for q in self.queues.values_mut() {
            if let Some(f) = q.file.as_mut().and_then(|f| f.file.as_mut()) {
                f.sync()?;
            }
        }
        Ok(())
    }

    /// A batch committed: the files of queues that were emptied, and whose
    /// empty range the store now records, are cut back to nothing.
    pub fn committed(&mut self) -> anyhow::Result<()> {
        for q in self.queues.values_mut() {
            if q.count > q.in_binlog() || q.in_txn > 0 {
                continue;
            }
            if let Some(f) = &mut q.file
                && f.end() > 0
            {
                f.file.as_mut().expect("a file with an end").clear()?;
                f.head = 0;
                f.read_at = 0;
            }
        }
        Ok(())
    }

    /// Holds every further change of `id` until [`Holds::resume`].
    pub fn pause(&mut self, id: &HandlerId) -> bool {
        let Some(q) = self.queues.get_mut(id) else { return false };
        q.paused = true;
        self.active = true;
        true
    }

    /// Lets `id`'s held changes be handed over again.
    pub fn resume(&mut self, id: &HandlerId) -> bool {
        let Some(q) = self.queues.get_mut(id) else { return false };
        q.paused = false;
        self.refresh();
        true
    }

    /// Whether `id` is paused.
    pub fn paused(&self, id: &HandlerId) -> bool {
        self.queues.get(id).is_some_and(|q| q.paused)
    }

    /// How many changes are held for `id`, and their bytes.
    pub fn size(&self, id: &HandlerId) -> (u64, u64) {
        self.queues.get(id).map_or((0, 0), |q| (q.count, q.bytes))
    }

    /// Where the changes held for `id` wait ([`crate::store::held_place`]).
    pub fn place(&self, id: &HandlerId) -> String {
        self.queues.get(id).map_or_else(String::new, |q| {
            crate::store::held_place(q.binlog.as_ref().map(|b| &b.at), q.count)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::testing::TempDir;

    fn plan(room_mb: u32) -> HandlerPlan {
        let text = format!(
            "[[handlers]]\nname = \"h\"\nmodule = \"h.wasm\"\ntables = [\"a.b\"]\non_error = \"skip\"\nbreaker = {{ while_suspended = \"hold\", hold_mb = {room_mb} }}\n"
        );
        let plan = crate::config::Plan::parse(&text, std::path::Path::new("/tmp/rowhook.toml"), |_| None).unwrap();
        plan.handlers[0].clone()
    }

    fn holds(room_mb: u32) -> (Holds, HandlerId) {
        let p = plan(room_mb);
        let id = HandlerId::new(&p.tenant, &p.name);
        let mut h = Holds::default();
        h.add(id.clone(), &p, &Registry::new());
        (h, id)
    }

    fn push(h: &mut Holds, id: &HandlerId, change: &str, len: usize) -> Result<(), Full> {
        h.push(id, change.to_owned(), Vec::new(), &vec![7; len], None).unwrap()
    }

    fn ids(h: &mut Holds, id: &HandlerId) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(c) = h.get(id, out.len()).unwrap() {
            out.push(c.id.clone());
        }
        out
    }

    /// The same queue in memory and in a file.
    fn both(room_mb: u32, check: impl Fn(&mut Holds, &HandlerId)) {
        let (mut h, id) = holds(room_mb);
        check(&mut h, &id);
        let dir = TempDir::new("holds");
        let (mut h, id) = holds(room_mb);
        h.open_file(&id, dir.path(), HeldRange::default()).unwrap();
        check(&mut h, &id);
    }

    #[test]
    fn held_changes_keep_their_order_and_a_cut_transaction_takes_back_its_own() {
        both(1, |h, id| {
            assert!(!h.any() && !h.holding(id));
            push(h, id, "t:1:0", 10).unwrap();
            h.end_transaction();
            assert!(h.holding(id), "a handler with held changes holds the next ones too");
            push(h, id, "t:2:0", 10).unwrap();
            h.abandon_transaction().unwrap();
            assert_eq!(h.size(id).0, 1);
            push(h, id, "t:2:0", 10).unwrap();
            h.end_transaction();
            assert_eq!(ids(h, id), ["t:1:0", "t:2:0"]);
            assert_eq!(h.with_changes(false), vec![id.clone()]);
            h.release(id, 1);
            assert_eq!(h.get(id, 0).unwrap().unwrap().id, "t:2:0");
            h.release(id, 5);
            assert!(!h.any() && h.size(id) == (0, 0));
        });
    }

    #[test]
    fn a_lane_that_stops_inside_a_transaction_takes_back_only_its_handlers_changes() {
        both(1, |h, id| {
            let p = plan(1);
            let other = HandlerId::new("other", &p.name);
            h.add(other.clone(), &p, &Registry::new());
            push(h, id, "t:1:0", 10).unwrap();
            push(h, &other, "t:1:0", 10).unwrap();
            h.abandon_where(|h| h.tenant() == "other").unwrap();
            h.end_transaction();
            assert_eq!((h.size(id).0, h.size(&other).0), (1, 0));
        });
    }

    #[test]
    fn the_room_bounds_the_queue_and_its_first_refusal_is_reported_once() {
        both(1, |h, id| {
            push(h, id, "t:1:0", 600_000).unwrap();
            assert_eq!(
                push(h, id, "t:2:0", 600_000),
                Err(Full {
                    room: 1 << 20,
                    first: true
                })
            );
            assert_eq!(
                push(h, id, "t:3:0", 600_000),
                Err(Full {
                    room: 1 << 20,
                    first: false
                })
            );
            push(h, id, "t:4:0", 1000).expect("a small change still fits");
            h.end_transaction();
            assert_eq!(ids(h, id).len(), 2);
            h.release(id, 2);
            push(h, id, "t:5:0", 600_000).unwrap();
            assert!(
                push(h, id, "t:6:0", 600_000).unwrap_err().first,
                "reported again once emptied"
            );
        });
    }

    #[test]
    fn a_paused_handler_holds_until_resumed() {
        both(1, |h, id| {
            assert!(h.pause(id));
            assert!(h.holding(id) && h.with_changes(false).is_empty());
            push(h, id, "t:1:0", 1).unwrap();
            h.end_transaction();
            assert_eq!(h.with_changes(true), vec![id.clone()]);
            assert!(h.with_changes(false).is_empty());
            assert!(h.resume(id));
            assert_eq!(h.with_changes(false), vec![id.clone()]);
            assert!(!h.pause(&HandlerId::new("default", "nobody")));
        });
    }

    #[test]
    fn a_file_queue_reports_its_range_and_comes_back_from_it() {
        let dir = TempDir::new("holds-file");
        let (mut h, id) = holds(64);
        h.open_file(&id, dir.path(), HeldRange::default()).unwrap();
        for i in 0..3000 {
            push(&mut h, &id, &format!("t:{i}:0"), 100).unwrap();
        }
        let ranges = h.end_transaction();
        assert_eq!(ranges.len(), 1);
        let r = ranges[0].1.clone();
        assert_eq!((r.head, r.count), (0, 3000));
        assert!(h.end_transaction().is_empty(), "reported once");
        for n in 0..1000 {
            h.get(&id, n).unwrap().unwrap();
        }
        let after = h.release(&id, 1000).unwrap();
        assert_eq!((after.end, after.count), (r.end, 2000));
        assert!(after.head > 0);
        h.sync().unwrap();
        drop(h);

        // A restart with the range the store recorded: the same 2000, in order.
        let (mut h, id) = holds(64);
        h.open_file(&id, dir.path(), after.clone()).unwrap();
        assert!(h.holding(&id));
        assert_eq!(h.size(&id), (2000, after.bytes));
        let all = ids(&mut h, &id);
        assert_eq!(all.len(), 2000);
        assert_eq!((all[0].as_str(), all[1999].as_str()), ("t:1000:0", "t:2999:0"));
        let empty = h.release(&id, 2000).unwrap();
        assert!(empty.is_empty());
        h.committed().unwrap();
        assert_eq!(
            std::fs::metadata(dir.path().join("default/h")).unwrap().len(),
            0,
            "emptied once committed"
        );

        // Changes an earlier version kept in the store join the file.
        let legacy = [HeldChange {
            id: "t:9:0".into(),
            encoded: vec![1],
            json: b"{}".to_vec(),
        }];
        let r = h.adopt(&id, &legacy).unwrap().unwrap();
        assert_eq!(r.count, 1);
        assert_eq!(*h.get(&id, 0).unwrap().unwrap(), legacy[0]);
    }
}
