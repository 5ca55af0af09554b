//! `rowhook capture`'s data path: every row change of the subscribed
//! tables published to the JetStream stream, acknowledged, and the
//! checkpoint after the last transaction whose messages were all
//! acknowledged, written to the checkpoint bucket.
//!
//! The driver's thread decodes and encodes ([`Capture`], a
//! [`Consumer`]); a task on the NATS runtime publishes ([`publish`]) with
//! a window of unacknowledged messages, publishing the window again after a
//! failure (the stream drops the copies by `Nats-Msg-Id`); another writes
//! the checkpoint ([`checkpoint`]) by compare-and-set, so that a capture
//! that lost its lease cannot move it.
//!
//! A message carries consecutive changes of one table and one partition,
//! each framed by its length ([`frames`]), of one transaction or of
//! several in a row. Each partition's message gathers changes until the
//! partition's next change is of another table, or would take it past
//! [`MESSAGE_CHANGES`] changes or [`MESSAGE_BYTES`] bytes (a cut), or
//! until the capture publishes every partition's message at a commit (a
//! flush): once they have lingered `[cluster] linger_ms` (at the next
//! commit, or when that time is up if the source paused at a commit), or
//! hold [`FLUSH_BYTES`] in all. The checkpoint moves
//! only to flushes, where no message is open. Cuts depend on the binlog
//! alone; a flush also depends on time, so each message a flush publishes
//! names its commit, and a capture that takes over reads the names of the
//! messages after the checkpoint back ([`Replay`]) and flushes at the same
//! commits: it publishes the same messages with the same ids, and the
//! stream drops the copies. Every message carries:
//!
//! - `Nats-Msg-Id`: the id of its first change;
//! - `Rowhook-Txn`: the transaction part of that id;
//! - `Rowhook-Position`: `FILE:POS` of its first change's rows event;
//! - `Rowhook-Count`: how many changes it holds;
//! - `Rowhook-Last: 1` when the transaction of its last change has no
//!   more changes in the partition, so a worker knows the slices it
//!   holds have ended;
//! - `Rowhook-Flush`: the transaction whose commit published it, on the
//!   messages of a flush.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::kv;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, watch};

use super::config::ClusterPlan;
use super::lease::Fence;
use super::partition::{Partitioner, subject};
use crate::backoff::Backoff;
use crate::decode::{ChangeVisitor, Commit, Decoder, Flow, RowChange};
use crate::driver::{Consumer, Stop};
use crate::guest_abi::DirectoryCache;
use crate::store::Checkpoint;

/// The header of the transaction id.
pub const TXN_HEADER: &str = "Rowhook-Txn";
/// The header of the rows event's position.
pub const POSITION_HEADER: &str = "Rowhook-Position";
/// The header that marks the last message of a transaction in a partition.
pub const LAST_HEADER: &str = "Rowhook-Last";
/// The header of the number of changes in a message.
pub const COUNT_HEADER: &str = "Rowhook-Count";
/// The header of the transaction whose commit published a message.
pub const FLUSH_HEADER: &str = "Rowhook-Flush";
/// The checkpoint bucket's key of the capture's position.
pub const CHECKPOINT_KEY: &str = "capture";
/// The lease bucket's key of the capture's lease.
pub const LEASE_KEY: &str = "capture";
/// The checkpoint bucket's key of the partition count.
pub const PARTITIONS_KEY: &str = "partitions";

/// Messages handed to the publisher at once, at most.
const BATCH: usize = 512;
/// Bytes of messages handed to the publisher at once, at most (a message
/// may pass it).
const BATCH_BYTES: usize = 1 << 20;
/// The most changes a message holds.
pub const MESSAGE_CHANGES: u32 = 1024;
/// A message is cut before a change that would take it past this many
/// bytes (or the server's `max_payload` less [`HEADROOM`], if smaller); a
/// change larger than that is a message of its own.
pub const MESSAGE_BYTES: usize = 256 << 10;
/// What a message's headers and framing may take of the server's
/// `max_payload`.
const HEADROOM: usize = 1024;
/// Bytes of open messages at which the next commit publishes them all.
pub const FLUSH_BYTES: usize = 8 << 20;
/// Bytes of published messages waiting for their acknowledgement, at most
/// (beside the window's count; one message may pass it).
pub const WINDOW_BYTES: usize = 64 << 20;

/// Appends `change` (an encoded row change) to a message's payload as one
/// frame: its length (four bytes, little-endian), then its bytes.
pub fn push_frame(payload: &mut Vec<u8>, change: &[u8]) {
    payload.extend_from_slice(&(change.len() as u32).to_le_bytes());
    payload.extend_from_slice(change);
}

/// A payload that is not a sequence of frames.
#[derive(Debug, thiserror::Error)]
#[error("a frame at byte {at} runs past the payload's {len} bytes")]
pub struct BadFrame {
    at: usize,
    len: usize,
}

/// The changes of a message's payload, in order: each frame's bytes.
pub fn frames(payload: &[u8]) -> impl Iterator<Item = Result<&[u8], BadFrame>> {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        if at == payload.len() {
            return None;
        }
        let bad = BadFrame { at, len: payload.len() };
        let Some(head) = payload.get(at..at + 4) else {
            at = payload.len();
            return Some(Err(bad));
        };
        let n = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        match payload.get(at + 4..).and_then(|rest| rest.get(..n)) {
            Some(change) => {
                at += 4 + n;
                Some(Ok(change))
            }
            None => {
                at = payload.len();
                Some(Err(bad))
            }
        }
    })
}

/// The capture's checkpoint as the bucket holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    /// Where the next capture starts; none before the first transaction.
    pub at: Option<Checkpoint>,
    /// Who wrote it: the capture that holds the lease.
    pub holder: String,
    /// The stream sequence of the last message published before `at`:
    /// the messages after it are what a capture that takes over publishes
    /// again ([`Replay`]). Absent in checkpoints of earlier versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

/// What the stream holds after the checkpoint: the messages a capture
/// that takes over makes again before it may flush where it likes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replay {
    /// The transactions whose commits flushed, in order.
    pub flushes: VecDeque<String>,
    /// How many messages, markers left out.
    pub messages: u64,
}

/// One message to publish.
#[derive(Debug, Clone)]
pub struct Out {
    subject: String,
    id: String,
    txn: Arc<str>,
    position: String,
    payload: Bytes,
    count: u32,
    last: bool,
    /// The transaction whose commit flushed it, if a flush did.
    flush: Option<Arc<str>>,
}

impl Out {
    fn headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("Nats-Msg-Id", self.id.as_str());
        h.insert(TXN_HEADER, &*self.txn);
        h.insert(POSITION_HEADER, self.position.as_str());
        h.insert(COUNT_HEADER, itoa::Buffer::new().format(self.count));
        if self.last {
            h.insert(LAST_HEADER, "1");
        }
        if let Some(txn) = &self.flush {
            h.insert(FLUSH_HEADER, &**txn);
        }
        h
    }
}

/// A message being filled: changes of one table and partition.
#[derive(Debug)]
struct Filling {
    subject: String,
    id: String,
    txn: Arc<str>,
    position: String,
    payload: Vec<u8>,
    count: u32,
    /// The serial of its last change's transaction.
    tail: u64,
}

impl Filling {
    fn done(self, last: bool, flush: Option<Arc<str>>) -> Out {
        Out {
            subject: self.subject,
            id: self.id,
            txn: self.txn,
            position: self.position,
            payload: self.payload.into(),
            count: self.count,
            last,
            flush,
        }
    }
}

/// How to take a partition's open message back to where it was when the
/// transaction at hand began, if the source has to read it again.
#[derive(Debug)]
enum Undo {
    /// No message was open.
    Empty,
    /// The open message held this many bytes and changes.
    Open { len: usize, count: u32, tail: u64 },
    /// That message was cut inside the transaction and handed over; its
    /// first `len` bytes are what it held.
    Cut {
        out: Out,
        len: usize,
        count: u32,
        tail: u64,
    },
}

/// What the decoding thread hands the publisher.
#[derive(Debug)]
pub enum Item {
    /// A message.
    Msg(Out),
    /// A transaction ended: once every message before it is acknowledged,
    /// the checkpoint may move here.
    Commit(Checkpoint),
}

/// Counters of a capture, shared with its tasks.
#[derive(Debug, Default)]
pub struct Counters {
    /// Changes published and acknowledged:
    /// `rowhook_cluster_published_total` when it comes from the registry.
    pub acked: crate::telemetry::Counter,
    /// Of those, acknowledged as duplicates (published again after a
    /// failure or a takeover).
    pub duplicates: AtomicU64,
    /// Transactions whose messages were all acknowledged.
    pub commits: AtomicU64,
    /// Times the window was published again after a failure.
    pub retries: AtomicU64,
}

/// The consumer of the driver loop: encodes each change, picks its
/// partition, fills each partition's message, and hands messages and
/// commits to the publisher.
pub struct Capture {
    prefix: String,
    partitions: u32,
    directories: DirectoryCache,
    partitioner: Partitioner,
    /// Per partition, the message being filled, handed over when it is
    /// cut or at a flush.
    filling: Vec<Option<Filling>>,
    /// The partitions with a message open.
    touched: Vec<u32>,
    /// Per partition, how to take its message back to the start of the
    /// transaction at hand, for the partitions it touched (`in_txn`).
    undo: Vec<Option<Undo>>,
    in_txn: Vec<u32>,
    /// The serial of the transaction at hand.
    txn_serial: u64,
    txn: Arc<str>,
    /// The last commit, until a flush hands it over.
    pending: Option<Checkpoint>,
    /// Bytes of the open messages, and when the first of them opened.
    open_bytes: usize,
    opened: Option<Instant>,
    linger: Duration,
    /// A flush is due at the next commit.
    flush_wanted: bool,
    /// A message holding changes of the transaction at hand was handed
    /// over: until its commit, no flush (one now would publish a
    /// partition's earlier changes without them, under the id of the
    /// message that has them, and the stream would drop it as a copy).
    half_out: bool,
    /// What the stream holds after the checkpoint, until it is made again.
    replay: Option<Replay>,
    batch: Vec<Item>,
    batch_bytes: usize,
    tx: mpsc::Sender<Vec<Item>>,
    fence: Arc<Fence>,
    error: Option<anyhow::Error>,
    /// Row changes handed to the publisher.
    pub changes: u64,
    /// The encoding of the change at hand.
    scratch: Vec<u8>,
    /// The subject of the change at hand.
    subject: String,
    /// Where a message is cut.
    cut_bytes: usize,
    /// The server's `max_payload`.
    max_payload: usize,
}

/// The capture lost its lease (or the publisher stopped): it must not
/// publish anything more.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LeaseLost(pub String);

impl Capture {
    /// A consumer that hands its messages to `tx` while `fence` holds, for
    /// a server that takes messages of up to `max_payload` bytes, making
    /// again first what `replay` says the stream holds.
    pub fn new(
        cluster: &ClusterPlan,
        tx: mpsc::Sender<Vec<Item>>,
        fence: Arc<Fence>,
        max_payload: usize,
        replay: Option<Replay>,
    ) -> Capture {
        Capture {
            prefix: cluster.subject_prefix(),
            partitions: cluster.partitions,
            directories: DirectoryCache::default(),
            partitioner: Partitioner::default(),
            filling: (0..cluster.partitions).map(|_| None).collect(),
            touched: Vec::new(),
            undo: (0..cluster.partitions).map(|_| None).collect(),
            in_txn: Vec::new(),
            txn_serial: 1,
            txn: Arc::from(""),
            pending: None,
            open_bytes: 0,
            opened: None,
            linger: cluster.linger,
            flush_wanted: false,
            half_out: false,
            replay: replay.filter(|r| r.messages > 0),
            batch: Vec::with_capacity(BATCH),
            batch_bytes: 0,
            tx,
            fence,
            error: None,
            changes: 0,
            scratch: Vec::with_capacity(256),
            subject: String::new(),
            cut_bytes: MESSAGE_BYTES.min(max_payload.saturating_sub(HEADROOM)),
            max_payload,
        }
    }

    fn hand_over(&mut self) -> anyhow::Result<()> {
        if !self.fence.holds() {
            return Err(LeaseLost(self.fence.why()).into());
        }
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH));
        self.batch_bytes = 0;
        self.tx
            .blocking_send(batch)
            .map_err(|_| anyhow::Error::new(LeaseLost(self.fence.why())))
    }

    fn push(&mut self, out: Out) {
        self.batch_bytes += out.payload.len();
        if let Some(r) = &mut self.replay {
            r.messages -= 1;
            if r.messages == 0 {
                self.replay = None;
            }
        }
        self.batch.push(Item::Msg(out));
    }

    /// Hands over every open message and then the last commit. Only
    /// between transactions' changes: no open message holds a change of a
    /// transaction that has not committed.
    fn flush(&mut self) {
        let Some(at) = self.pending.take() else { return };
        if !self.touched.is_empty() {
            let mark: Arc<str> = Arc::from(at.txn.as_str());
            for i in 0..self.touched.len() {
                let p = self.touched[i] as usize;
                if let Some(filling) = self.filling[p].take() {
                    self.push(filling.done(true, Some(mark.clone())));
                }
            }
            self.touched.clear();
        }
        self.batch.push(Item::Commit(at));
        self.open_bytes = 0;
        self.opened = None;
        self.flush_wanted = false;
    }

    fn lingered(&self) -> bool {
        self.opened.is_some_and(|t| t.elapsed() >= self.linger)
    }

    /// Whether no transaction's changes are half in the open messages or
    /// half out of them: a flush now publishes only whole transactions.
    fn between_transactions(&self) -> bool {
        self.in_txn.is_empty() && !self.half_out
    }

    /// Flushes if the open messages have lingered long enough and no
    /// transaction's changes are half in them; else makes a flush due at
    /// the next commit.
    fn settle(&mut self) {
        if self.replay.is_some() {
            return;
        }
        if self.touched.is_empty() || self.lingered() {
            if self.between_transactions() {
                self.flush();
            } else {
                self.flush_wanted = true;
            }
        }
    }

    /// Hands over what is left at the end of a term: the open messages (if
    /// no transaction is half in them, and the stream's messages after the
    /// checkpoint have all been made again) and the last commit.
    pub fn finish(&mut self) -> anyhow::Result<()> {
        if self.replay.is_none() && self.between_transactions() {
            self.flush();
        }
        self.hand_over()
    }

    fn encode(&mut self, change: &RowChange<'_>) -> anyhow::Result<()> {
        let what = || {
            format!(
                "change {}:{}:{} of {}.{}",
                change.txn, change.event_index, change.row_index, change.table.db, change.table.table
            )
        };
        self.directories
            .encode(change, &mut self.scratch)
            .map_err(|e| anyhow::anyhow!("cannot encode {}: {e}", what()))?;
        if self.scratch.len() + 4 + HEADROOM > self.max_payload {
            anyhow::bail!(
                "{} is {} bytes encoded, more than the NATS server takes in a message (max_payload = {} bytes): \
                 raise max_payload in the configuration of every nats-server of the cluster (up to 64 MB), \
                 or leave the table out of the handlers' subscriptions",
                what(),
                self.scratch.len(),
                self.max_payload
            );
        }
        if *self.txn != *change.txn {
            self.txn = Arc::from(change.txn);
        }
        let p = self.partitioner.partition(change, self.partitions);
        self.subject.clear();
        subject(
            &mut self.subject,
            &self.prefix,
            &change.table.db,
            &change.table.table,
            p,
        );
        let p = p as usize;
        if self.undo[p].is_none() {
            self.undo[p] = Some(match &self.filling[p] {
                None => Undo::Empty,
                Some(f) => Undo::Open {
                    len: f.payload.len(),
                    count: f.count,
                    tail: f.tail,
                },
            });
            self.in_txn.push(p as u32);
        }
        let slot = &mut self.filling[p];
        let full = slot.as_ref().is_some_and(|f| {
            f.subject != self.subject
                || f.count == MESSAGE_CHANGES
                || f.payload.len() + 4 + self.scratch.len() > self.cut_bytes
        });
        let cut = if full { slot.take() } else { None };
        let fresh = slot.is_none();
        let filling = slot.get_or_insert_with(|| {
            let mut id = String::with_capacity(change.txn.len() + 12);
            id.push_str(change.txn);
            id.push(':');
            id.push_str(itoa::Buffer::new().format(change.event_index));
            id.push(':');
            id.push_str(itoa::Buffer::new().format(change.row_index));
            let mut position = String::with_capacity(change.file.len() + 12);
            position.push_str(change.file);
            position.push(':');
            position.push_str(itoa::Buffer::new().format(change.pos));
            Filling {
                subject: self.subject.clone(),
                id,
                txn: self.txn.clone(),
                position,
                payload: Vec::with_capacity((self.scratch.len() + 4).next_power_of_two().max(4096)),
                count: 0,
                tail: 0,
            }
        });
        push_frame(&mut filling.payload, &self.scratch);
        filling.count += 1;
        filling.tail = self.txn_serial;
        self.open_bytes += 4 + self.scratch.len();
        if let Some(before) = cut {
            self.open_bytes -= before.payload.len();
            // Its last transaction goes on in this partition only if this
            // change is of it.
            let last = before.tail != self.txn_serial;
            self.half_out |= !last;
            let out = before.done(last, None);
            if let Some(Undo::Open { len, count, tail }) = self.undo[p] {
                self.undo[p] = Some(Undo::Cut {
                    out: out.clone(),
                    len,
                    count,
                    tail,
                });
            }
            self.push(out);
        } else if fresh {
            self.touched.push(p as u32);
            self.opened.get_or_insert_with(Instant::now);
        }
        self.changes += 1;
        Ok(())
    }
}

impl ChangeVisitor for Capture {
    fn change(&mut self, change: &RowChange<'_>) -> Flow {
        match self.encode(change) {
            Ok(()) => Flow::Continue,
            Err(e) => {
                self.error = Some(e);
                Flow::Stop
            }
        }
    }

    fn commit(&mut self, commit: &Commit<'_>) -> Flow {
        for p in self.in_txn.drain(..) {
            self.undo[p as usize] = None;
        }
        self.half_out = false;
        self.txn_serial += 1;
        self.pending = Some(Checkpoint::after(commit));
        let flush = match &mut self.replay {
            // Where the capture that published the stream's messages
            // flushed: a commit with nothing open is one for any capture.
            Some(r) => {
                let recorded = r.flushes.front().is_some_and(|t| *t == *commit.txn);
                if recorded {
                    r.flushes.pop_front();
                }
                recorded || self.touched.is_empty()
            }
            None => self.touched.is_empty() || self.flush_wanted || self.open_bytes >= FLUSH_BYTES || self.lingered(),
        };
        if flush {
            self.flush();
        }
        Flow::Continue
    }
}

impl Consumer for Capture {
    fn after_event(&mut self, _: &Runtime, _: &Decoder, _: bool, _: &mut Stop) -> anyhow::Result<()> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        if self.batch.len() >= BATCH || self.batch_bytes >= BATCH_BYTES {
            self.hand_over()?;
        }
        Ok(())
    }

    fn decode_failed(&mut self, e: crate::decode::DecodeError) -> anyhow::Error {
        self.error.take().unwrap_or_else(|| e.into())
    }

    fn abandon_transaction(&mut self) {
        // The transaction is read again from its start: each partition's
        // message goes back to what it held then, so the same messages are
        // made again with the same ids. What was handed over of it comes
        // again, and the stream drops the copies.
        for p in self.in_txn.drain(..) {
            let p = p as usize;
            match self.undo[p].take() {
                None | Some(Undo::Empty) => self.filling[p] = None,
                Some(Undo::Open { len, count, tail }) => {
                    if let Some(f) = &mut self.filling[p] {
                        f.payload.truncate(len);
                        f.count = count;
                        f.tail = tail;
                    }
                }
                Some(Undo::Cut { out, len, count, tail }) => {
                    self.filling[p] = Some(Filling {
                        subject: out.subject,
                        id: out.id,
                        txn: out.txn,
                        position: out.position,
                        payload: out.payload[..len].to_vec(),
                        count,
                        tail,
                    });
                }
            }
        }
        let filling = &self.filling;
        self.touched.retain(|&p| filling[p as usize].is_some());
        self.open_bytes = self
            .touched
            .iter()
            .map(|&p| filling[p as usize].as_ref().map_or(0, |f| f.payload.len()))
            .sum();
        if self.touched.is_empty() {
            self.opened = None;
        }
    }

    fn idle(&mut self) -> anyhow::Result<()> {
        self.settle();
        self.hand_over()
    }

    fn next_tick(&self) -> Option<tokio::time::Instant> {
        let later = tokio::time::Instant::now() + Duration::from_millis(100);
        match self.opened {
            Some(t) if self.replay.is_none() && self.between_transactions() => {
                Some(later.min(tokio::time::Instant::from_std(t + self.linger)))
            }
            _ => Some(later),
        }
    }

    fn tick(&mut self, _: &Runtime, _: &Decoder) -> anyhow::Result<()> {
        self.settle();
        self.hand_over()
    }
}

/// A message published and not yet acknowledged.
struct Flight {
    out: Out,
    /// The id of the message the stream must hold last when this one
    /// comes (the one published before it).
    expect: Option<String>,
    serial: u64,
    /// The round it was last published in.
    round: u64,
    acked: bool,
    /// Its stream sequence, once acknowledged.
    seq: u64,
    sent: tokio::time::Instant,
}

/// The header that makes JetStream refuse a message unless the stream's
/// last message has the id given.
const EXPECTED_LAST: &str = "Nats-Expected-Last-Msg-Id";

impl Flight {
    fn headers(&self) -> HeaderMap {
        let mut h = self.out.headers();
        if let Some(id) = &self.expect {
            h.insert(EXPECTED_LAST, id.as_str());
        }
        h
    }
}

/// What the stream answered to one message.
enum Answer {
    Stored {
        duplicate: bool,
        seq: u64,
    },
    /// The stream's last message is not the one this one follows: the one
    /// before it was lost (it is published again first), or the stream
    /// holds a message not of this capture's (its id).
    OutOfOrder(String),
    Refused(String),
}

/// Reads a JetStream publish acknowledgement: `{"stream":…,"seq":…}`
/// (with `"duplicate":true` for a copy), an `{"error":…}`, or a status
/// message (503: no stream, no responders).
fn answer(m: &async_nats::Message) -> Answer {
    if let Some(status) = m.status
        && !status.is_success()
    {
        return Answer::Refused(format!(
            "status {status}{}",
            m.description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default()
        ));
    }
    let text = String::from_utf8_lossy(&m.payload);
    if let Some((_, last)) = text.split_once("wrong last msg ID: ") {
        let last = last.split('"').next().unwrap_or_default();
        return Answer::OutOfOrder(last.to_owned());
    }
    if text.contains("\"error\"") || !text.contains("\"seq\"") {
        return Answer::Refused(text.into_owned());
    }
    // `"duplicate": true`, present only when true; a copy's `seq` is the
    // message the stream holds.
    Answer::Stored {
        duplicate: text.contains("\"duplicate\""),
        seq: seq_of(&text),
    }
}

/// The `"seq"` of a publish acknowledgement (0 if it has none).
fn seq_of(text: &str) -> u64 {
    let Some((_, rest)) = text.split_once("\"seq\"") else {
        return 0;
    };
    let rest = rest.trim_start().trim_start_matches(':').trim_start();
    let end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    rest[..end].parse().unwrap_or(0)
}

/// Publishes what `rx` brings while `fence` holds, at most `window`
/// messages (and about [`WINDOW_BYTES`]) unacknowledged, and moves `acked`
/// to each commit whose messages were all acknowledged, with the stream
/// sequence of the last message before it (`seq` at first: the
/// checkpoint's). Each message asks for its
/// acknowledgement on one inbox of the capture's (`INBOX.ROUND.SERIAL`), read by
/// one subscription, so a message costs a publish and the parse of a short
/// reply. A refused or missing acknowledgement (none within `ack_timeout`)
/// publishes every unacknowledged message again, in order, after a
/// backoff, until it is taken. Each such round has its number in the
/// reply subjects, and answers to an earlier round are passed over: a
/// dropped connection's refusals, still queued, would otherwise fail the
/// next round one message at a time.
///
/// Each message names the one published before it as the stream's last
/// (`Nats-Expected-Last-Msg-Id`; the first names `last`, the stream's last
/// message when the term began). A message lost on a dropped connection
/// makes the stream refuse every later one, so nothing is stored out of
/// order; and a message published again that the stream holds already is
/// dropped as a duplicate before that check. Ends when `rx` closes and
/// everything was acknowledged, or with the reason it stopped.
#[allow(clippy::too_many_arguments)]
pub async fn publish(
    client: async_nats::Client,
    mut last: Option<String>,
    mut seq: u64,
    mut rx: mpsc::Receiver<Vec<Item>>,
    fence: Arc<Fence>,
    acked: watch::Sender<Option<(Checkpoint, u64)>>,
    window: usize,
    ack_timeout: Duration,
    counters: Arc<Counters>,
) -> anyhow::Result<()> {
    use futures_util::StreamExt as _;
    let inbox = client.new_inbox();
    let mut acks = client
        .subscribe(format!("{inbox}.*.*"))
        .await
        .map_err(|e| anyhow::anyhow!("subscribing to the acknowledgements: {e}"))?;
    let reply_of = |round: u64, serial: u64| format!("{inbox}.{round}.{serial}");
    let mut round = 0u64;
    let mut flights: VecDeque<Flight> = VecDeque::new();
    // Each commit with the serial its transaction's messages end before.
    let mut commits: VecDeque<(u64, Checkpoint)> = VecDeque::new();
    let mut next_serial = 0u64;
    let mut window_bytes = 0usize;
    let mut closed = false;
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
    loop {
        loop {
            let floor = flights.front().map_or(next_serial, |f| f.serial);
            while commits.front().is_some_and(|(bound, _)| *bound <= floor) {
                if let Some((_, at)) = commits.pop_front() {
                    counters.commits.fetch_add(1, Ordering::Relaxed);
                    acked.send_replace(Some((at, seq)));
                }
            }
            if !flights.front().is_some_and(|f| f.acked) {
                break;
            }
            if let Some(f) = flights.pop_front() {
                window_bytes -= f.out.payload.len();
                seq = f.seq;
            }
        }
        if closed && flights.is_empty() && commits.is_empty() {
            return Ok(());
        }
        let taking = !closed && flights.len() < window && window_bytes < WINDOW_BYTES;
        let deadline = flights.front().map(|f| f.sent + ack_timeout);
        let failed = tokio::select! {
            biased;
            m = acks.next() => {
                let Some(m) = m else { anyhow::bail!("the acknowledgement subscription ended") };
                let mut tail = m.subject.rsplit('.').map(|t| t.parse::<u64>().ok());
                let (serial, answered) = (tail.next().flatten(), tail.next().flatten());
                let at = serial.and_then(|s| s.checked_sub(flights.front()?.serial));
                let at = at.map(|i| i as usize).filter(|&i| {
                    i < flights.len() && !flights[i].acked && Some(flights[i].round) == answered
                });
                match (answer(&m), at) {
                    // An answer to a message acknowledged already, or to an
                    // earlier round.
                    (_, None) => None,
                    (Answer::Stored { duplicate, seq }, Some(i)) => {
                        flights[i].acked = true;
                        flights[i].seq = seq;
                        let changes = u64::from(flights[i].out.count);
                        counters.acked.add(changes);
                        if duplicate {
                            counters.duplicates.fetch_add(changes, Ordering::Relaxed);
                        }
                        backoff.reset();
                        None
                    }
                    (Answer::Refused(why), Some(i)) => Some(format!("change {}: {why}", flights[i].out.id)),
                    (Answer::OutOfOrder(held), Some(i)) => {
                        let why = format!("change {}: the stream's last message is {held}", flights[i].out.id);
                        // Every message before it is stored: what the stream
                        // holds last is where it goes on.
                        if flights.iter().take(i).all(|f| f.acked) {
                            flights[i].expect = Some(held);
                        }
                        Some(why)
                    }
                }
            }
            batch = rx.recv(), if taking => {
                match batch {
                    None => closed = true,
                    Some(items) => {
                        if !fence.holds() {
                            anyhow::bail!(LeaseLost(fence.why()));
                        }
                        for item in items {
                            match item {
                                Item::Msg(out) => {
                                    let serial = next_serial;
                                    next_serial += 1;
                                    let expect = last.replace(out.id.clone());
                                    let flight = Flight {
                                        out,
                                        expect,
                                        serial,
                                        round,
                                        acked: false,
                                        seq: 0,
                                        sent: tokio::time::Instant::now(),
                                    };
                                    if let Err(e) = client
                                        .publish_with_reply_and_headers(
                                            flight.out.subject.clone(),
                                            reply_of(round, serial),
                                            flight.headers(),
                                            flight.out.payload.clone(),
                                        )
                                        .await
                                    {
                                        tracing::debug!(change = %flight.out.id, "publishing: {e}");
                                    }
                                    window_bytes += flight.out.payload.len();
                                    flights.push_back(flight);
                                }
                                Item::Commit(at) => commits.push_back((next_serial, at)),
                            }
                        }
                    }
                }
                None
            }
            () = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() => {
                Some(format!("no acknowledgement within {ack_timeout:?}"))
            }
        };
        if let Some(why) = failed {
            let unacked = flights.iter().filter(|f| !f.acked).count();
            let wait = backoff.delay();
            tracing::warn!(
                "JetStream did not store a message ({why}); publishing {unacked} messages again in {wait:?}"
            );
            tokio::time::sleep(wait).await;
            if !fence.holds() {
                anyhow::bail!(LeaseLost(fence.why()));
            }
            counters.retries.fetch_add(1, Ordering::Relaxed);
            round += 1;
            for f in flights.iter_mut().filter(|f| !f.acked) {
                f.round = round;
                if let Err(e) = client
                    .publish_with_reply_and_headers(
                        f.out.subject.clone(),
                        reply_of(round, f.serial),
                        f.headers(),
                        f.out.payload.clone(),
                    )
                    .await
                {
                    tracing::debug!(change = %f.out.id, "publishing: {e}");
                }
                f.sent = tokio::time::Instant::now();
            }
        }
    }
}

/// Writes the latest acknowledged position `acked` holds to the checkpoint
/// bucket every `every`, by compare-and-set from `revision`, and once more
/// when `stop` fires. A write that finds someone else's revision loses the
/// fence: another capture took over.
pub async fn checkpoint(
    kv: kv::Store,
    mut revision: u64,
    holder: String,
    mut acked: watch::Receiver<Option<(Checkpoint, u64)>>,
    fence: Arc<Fence>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) -> Option<Checkpoint> {
    let mut written: Option<Checkpoint> = None;
    let mut failing = false;
    loop {
        let stopping = tokio::select! {
            _ = tokio::time::sleep(every) => false,
            _ = stop.wait_for(|s| *s) => true,
        };
        let at = acked.borrow_and_update().clone();
        if let Some((at, seq)) = at
            && written.as_ref() != Some(&at)
            && fence.holds()
        {
            let value = match serde_json::to_vec(&Stored {
                at: Some(at.clone()),
                holder: holder.clone(),
                seq: Some(seq),
            }) {
                Ok(v) => v,
                Err(e) => {
                    tracing::error!("cannot write the checkpoint: {e}");
                    return written;
                }
            };
            match kv.update(CHECKPOINT_KEY, value.into(), revision).await {
                Ok(r) => {
                    revision = r;
                    written = Some(at);
                    if std::mem::take(&mut failing) {
                        tracing::info!("the checkpoint is written again");
                    }
                }
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    fence.lose("another capture wrote the checkpoint: it holds the lease now");
                    return written;
                }
                Err(e) => {
                    if !std::mem::replace(&mut failing, true) {
                        tracing::warn!("writing the checkpoint: {e}; retrying until it is taken");
                    }
                }
            }
        }
        if stopping {
            return written;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_give_back_what_was_pushed_and_refuse_a_cut_payload() {
        let mut payload = Vec::new();
        for change in [&b"one"[..], b"", &[7u8; 300][..]] {
            push_frame(&mut payload, change);
        }
        let got: Vec<&[u8]> = frames(&payload).collect::<Result<_, _>>().unwrap();
        assert_eq!(got, [&b"one"[..], b"", &[7u8; 300][..]]);
        assert_eq!(frames(&[]).count(), 0);
        for cut in [1, 3, 5, payload.len() - 1] {
            let got: Vec<_> = frames(&payload[..cut]).collect();
            let err = got.last().unwrap().as_ref().unwrap_err().to_string();
            assert!(err.contains(&format!("payload's {cut} bytes")), "{err}");
            assert!(got.len() <= 3, "a bad frame ends the payload");
        }
    }

    #[test]
    fn an_acknowledgement_s_sequence_is_read_with_or_without_spaces() {
        assert_eq!(seq_of(r#"{"stream":"S","seq":1234}"#), 1234);
        assert_eq!(seq_of(r#"{"stream":"S", "seq": 7,"duplicate":true}"#), 7);
        assert_eq!(seq_of(r#"{"error":{}}"#), 0);
    }
}
