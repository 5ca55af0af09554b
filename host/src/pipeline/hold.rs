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
//! Held changes live in the store (see [`crate::store::HeldChange`]): a
//! transaction's held changes join its batch, and those handed over are
//! removed by a later batch, after the sinks acknowledged what they
//! emitted. The position therefore moves on for the other handlers while
//! a held change waits, and a restart finds it again. Without a store the
//! queue lives in memory only.
//!
//! A queue is bounded by its handler's `breaker.hold_mb`: a change that
//! would grow it further is not held, and fails under the handler's
//! `on_error` instead.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::config::{BreakerPlan, HandlerPlan};
use crate::handler_id::HandlerId;
use crate::store::HeldChange;
use crate::telemetry::{Counter, Gauge, Registry, names};

/// One handler's held changes.
struct Queue {
    entries: VecDeque<(u64, Arc<HeldChange>)>,
    bytes: u64,
    /// The most `bytes` may be.
    room: u64,
    /// The sequence number of the next change held.
    next_seq: u64,
    /// Entries at the back that the transaction in progress held.
    in_txn: usize,
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
        self.paused || !self.entries.is_empty()
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
                entries: VecDeque::new(),
                bytes: 0,
                room,
                next_seq: 0,
                in_txn: 0,
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

    /// Holds `change` for `id`, in the transaction in progress; returns its
    /// sequence number and the shared change (for the store's batch), or
    /// why it could not be held.
    pub fn push(&mut self, id: &HandlerId, change: HeldChange) -> Result<(u64, Arc<HeldChange>), Full> {
        let q = self.queues.get_mut(id).expect("every handler has a queue");
        let size = change.size();
        if q.bytes + size > q.room {
            let first = !q.overflowed;
            q.overflowed = true;
            return Err(Full { room: q.room, first });
        }
        let seq = q.next_seq;
        q.next_seq += 1;
        q.bytes += size;
        q.in_txn += 1;
        let change = Arc::new(change);
        q.entries.push_back((seq, change.clone()));
        q.held.inc();
        q.now.set(q.entries.len() as f64);
        self.active = true;
        Ok((seq, change))
    }

    /// Takes back changes a store kept for `id`, oldest first.
    pub fn load(&mut self, id: &HandlerId, held: Vec<(u64, HeldChange)>) {
        let Some(q) = self.queues.get_mut(id) else { return };
        for (seq, change) in held {
            q.bytes += change.size();
            q.next_seq = q.next_seq.max(seq + 1);
            q.entries.push_back((seq, Arc::new(change)));
        }
        q.now.set(q.entries.len() as f64);
        self.refresh();
    }

    /// The transaction in progress is acknowledged: what it held stays.
    pub fn end_transaction(&mut self) {
        if self.active {
            for q in self.queues.values_mut() {
                q.in_txn = 0;
            }
        }
    }

    /// The transaction in progress was cut: what it held goes (its
    /// changes come again).
    pub fn abandon_transaction(&mut self) {
        if !self.active {
            return;
        }
        for q in self.queues.values_mut() {
            for _ in 0..std::mem::take(&mut q.in_txn) {
                if let Some((_, c)) = q.entries.pop_back() {
                    q.bytes -= c.size();
                    q.next_seq -= 1;
                }
            }
            q.now.set(q.entries.len() as f64);
        }
        self.refresh();
    }

    /// The handlers with held changes (paused ones only if `paused_too`),
    /// in no order.
    pub fn with_changes(&self, paused_too: bool) -> Vec<HandlerId> {
        if !self.active {
            return Vec::new();
        }
        self.queues
            .iter()
            .filter(|(_, q)| (paused_too || !q.paused) && !q.entries.is_empty())
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// `id`'s `n`th held change (0: the oldest).
    pub fn get(&self, id: &HandlerId, n: usize) -> Option<(u64, Arc<HeldChange>)> {
        self.queues.get(id)?.entries.get(n).cloned()
    }

    /// Drops `id`'s `n` oldest held changes, handed over; returns their
    /// sequence numbers.
    pub fn release(&mut self, id: &HandlerId, n: usize) -> Vec<u64> {
        let Some(q) = self.queues.get_mut(id) else {
            return Vec::new();
        };
        let seqs = q
            .entries
            .drain(..n.min(q.entries.len()))
            .map(|(seq, c)| {
                q.bytes -= c.size();
                seq
            })
            .collect();
        q.released.add(n as u64);
        q.now.set(q.entries.len() as f64);
        if q.entries.is_empty() {
            q.overflowed = false;
        }
        self.refresh();
        seqs
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
        self.queues
            .get(id)
            .map_or((0, 0), |q| (q.entries.len() as u64, q.bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(room_mb: u32) -> HandlerPlan {
        let text = format!(
            "[[handlers]]\nname = \"h\"\nmodule = \"h.wasm\"\ntables = [\"a.b\"]\non_error = \"skip\"\nbreaker = {{ while_suspended = \"hold\", hold_mb = {room_mb} }}\n"
        );
        let plan = crate::config::Plan::parse(&text, std::path::Path::new("/tmp/rowhook.toml"), |_| None).unwrap();
        plan.handlers[0].clone()
    }

    fn change(id: &str, len: usize) -> HeldChange {
        HeldChange {
            id: id.to_owned(),
            encoded: vec![7; len],
            json: Vec::new(),
        }
    }

    fn holds(room_mb: u32) -> (Holds, HandlerId) {
        let p = plan(room_mb);
        let id = HandlerId::new(&p.tenant, &p.name);
        let mut h = Holds::default();
        h.add(id.clone(), &p, &Registry::new());
        (h, id)
    }

    #[test]
    fn held_changes_keep_their_order_and_a_cut_transaction_takes_back_its_own() {
        let (mut h, id) = holds(1);
        assert!(!h.any() && !h.holding(&id));
        assert_eq!(h.push(&id, change("t:1:0", 10)).unwrap().0, 0);
        h.end_transaction();
        assert!(h.holding(&id), "a handler with held changes holds the next ones too");
        assert_eq!(h.push(&id, change("t:2:0", 10)).unwrap().0, 1);
        h.abandon_transaction();
        assert_eq!(h.size(&id).0, 1);
        assert_eq!(
            h.push(&id, change("t:2:0", 10)).unwrap().0,
            1,
            "the cut change's number is used again"
        );
        h.end_transaction();
        assert_eq!(h.get(&id, 0).unwrap().1.id, "t:1:0");
        assert_eq!(h.get(&id, 1).unwrap().1.id, "t:2:0");
        assert_eq!(h.with_changes(false), vec![id.clone()]);
        assert_eq!(h.release(&id, 1), vec![0]);
        assert_eq!(h.get(&id, 0).unwrap().1.id, "t:2:0");
        assert_eq!(h.release(&id, 5), vec![1]);
        assert!(!h.any() && h.size(&id) == (0, 0));
    }

    #[test]
    fn the_room_bounds_the_queue_and_its_first_refusal_is_reported_once() {
        let (mut h, id) = holds(1);
        h.push(&id, change("t:1:0", 600_000)).unwrap();
        assert_eq!(
            h.push(&id, change("t:2:0", 600_000)),
            Err(Full {
                room: 1 << 20,
                first: true
            })
        );
        assert_eq!(
            h.push(&id, change("t:3:0", 600_000)),
            Err(Full {
                room: 1 << 20,
                first: false
            })
        );
        h.push(&id, change("t:4:0", 1000)).expect("a small change still fits");
        h.release(&id, 2);
        h.push(&id, change("t:5:0", 600_000)).unwrap();
        assert!(
            h.push(&id, change("t:6:0", 600_000)).unwrap_err().first,
            "reported again once emptied"
        );
    }

    #[test]
    fn a_paused_handler_holds_until_resumed_and_a_store_s_changes_come_back() {
        let (mut h, id) = holds(1);
        assert!(h.pause(&id));
        assert!(h.holding(&id) && h.with_changes(false).is_empty());
        h.load(&id, vec![(4, change("t:1:0", 1)), (9, change("t:2:0", 1))]);
        assert_eq!(
            h.push(&id, change("t:3:0", 1)).unwrap().0,
            10,
            "numbers go on after the store's"
        );
        assert!(h.resume(&id));
        assert_eq!(h.with_changes(false), vec![id.clone()]);
        assert_eq!(h.release(&id, 3), vec![4, 9, 10]);
        assert!(!h.any());
        assert!(!h.pause(&HandlerId::new("default", "nobody")));
    }
}
