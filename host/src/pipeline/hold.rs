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
//! With a store, a queue lives in the handler's held file
//! ([`super::held_file`]): holding a change appends it, handing changes
//! over reads them back a window at a time, and the store records, in the
//! batch of each transaction and hand-over, the range of the file that is
//! held. The position therefore moves on for the other handlers while a
//! held change waits, a restart finds it again, and memory holds only the
//! window. Without a store the queue lives in memory only.
//!
//! A queue is bounded by its handler's `breaker.hold_mb`: a change that
//! would grow it further is not held, and fails under the handler's
//! `on_error` instead.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::Arc;

use super::held_file::HeldFile;
use crate::config::{BreakerPlan, HandlerPlan};
use crate::handler_id::HandlerId;
use crate::store::{HeldChange, HeldRange};
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

/// One handler's held changes.
struct Queue {
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
        }
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
        let file = (!range.is_empty())
            .then(|| HeldFile::open(dir, id.key(), range))
            .transpose()?;
        let head = if range.is_empty() { 0 } else { range.head };
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

    /// Holds change `change_id` (its `json`, its `encoded` form) for `id`,
    /// in the transaction in progress, or says why it could not be held.
    pub fn push(
        &mut self,
        id: &HandlerId,
        change_id: String,
        json: Vec<u8>,
        encoded: &[u8],
    ) -> anyhow::Result<Result<(), Full>> {
        let q = self.queues.get_mut(id).expect("every handler has a queue");
        let size = HeldChange::bytes_len(&change_id, &json, encoded) as u64;
        if q.bytes + size > q.room {
            let first = !q.overflowed;
            q.overflowed = true;
            return Ok(Err(Full { room: q.room, first }));
        }
        match &mut q.file {
            Some(f) => {
                if q.in_txn == 0 {
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
            if q.in_txn > 0
                && let Some(f) = &q.file
            {
                ranges.push((id.clone(), q.range(f)));
            }
            q.in_txn = 0;
            q.txn_bytes = 0;
        }
        ranges
    }

    /// The transaction in progress was cut: what it held goes (its
    /// changes come again).
    pub fn abandon_transaction(&mut self) -> anyhow::Result<()> {
        if !self.active {
            return Ok(());
        }
        for (id, q) in &mut self.queues {
            let n = std::mem::take(&mut q.in_txn);
            if n == 0 {
                continue;
            }
            match &mut q.file {
                Some(f) => {
                    let at = f.txn_start;
                    f.file(id.key())?.cut(at)?;
                }
                None => q.window.truncate(q.window.len() - n as usize),
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

    /// `id`'s `n`th held change (0: the oldest), read back from its file
    /// if need be. Call between transactions.
    pub fn get(&mut self, id: &HandlerId, n: usize) -> anyhow::Result<Option<Arc<HeldChange>>> {
        let Some(q) = self.queues.get_mut(id) else {
            return Ok(None);
        };
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

    /// Drops `id`'s `n` oldest held changes, handed over (each got by
    /// [`Holds::get`] first); returns the range of its held file after
    /// them, for the store.
    pub fn release(&mut self, id: &HandlerId, n: usize) -> Option<HeldRange> {
        let q = self.queues.get_mut(id)?;
        let n = n.min(q.window.len());
        for h in q.window.drain(..n) {
            q.bytes -= h.size;
            q.count -= 1;
            if let Some(f) = &mut q.file {
                f.head = h.next;
            }
        }
        q.released.add(n as u64);
        q.now.set(q.count as f64);
        if q.count == 0 {
            q.overflowed = false;
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
            if q.count > 0 || q.in_txn > 0 {
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
        h.push(id, change.to_owned(), Vec::new(), &vec![7; len]).unwrap()
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
        let r = ranges[0].1;
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
        h.open_file(&id, dir.path(), after).unwrap();
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
