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
//! that lost its lease cannot move it. Every message carries:
//!
//! - `Nats-Msg-Id`: the change id;
//! - `Rowhook-Txn`: the transaction part of the id;
//! - `Rowhook-Position`: `FILE:POS` of its rows event;
//! - `Rowhook-Last: 1` on the last message of a transaction in its
//!   partition, so a worker knows where the transaction's slice ends.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::context::PublishError;
use async_nats::jetstream::publish::PublishAck;
use async_nats::jetstream::{self, kv};
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
/// The checkpoint bucket's key of the capture's position.
pub const CHECKPOINT_KEY: &str = "capture";
/// The lease bucket's key of the capture's lease.
pub const LEASE_KEY: &str = "capture";
/// The checkpoint bucket's key of the partition count.
pub const PARTITIONS_KEY: &str = "partitions";

/// Messages handed to the publisher at once.
const BATCH: usize = 512;

/// The capture's checkpoint as the bucket holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    /// Where the next capture starts; none before the first transaction.
    pub at: Option<Checkpoint>,
    /// Who wrote it: the capture that holds the lease.
    pub holder: String,
}

/// One message to publish.
#[derive(Debug, Clone)]
pub struct Out {
    subject: String,
    id: String,
    txn: Arc<str>,
    position: String,
    payload: Bytes,
    last: bool,
}

impl Out {
    fn headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("Nats-Msg-Id", self.id.as_str());
        h.insert(TXN_HEADER, &*self.txn);
        h.insert(POSITION_HEADER, self.position.as_str());
        if self.last {
            h.insert(LAST_HEADER, "1");
        }
        h
    }
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
    /// Messages published and acknowledged.
    pub acked: AtomicU64,
    /// Acknowledged as duplicates (published again after a failure or a takeover).
    pub duplicates: AtomicU64,
    /// Transactions whose messages were all acknowledged.
    pub commits: AtomicU64,
    /// Times the window was published again after a failure.
    pub retries: AtomicU64,
}

/// The consumer of the driver loop: encodes each change, picks its
/// partition, and hands messages and commits to the publisher.
pub struct Capture {
    prefix: String,
    partitions: u32,
    directories: DirectoryCache,
    partitioner: Partitioner,
    /// Per partition, the transaction's latest message, held back until the
    /// next one of the partition or the commit says whether it is the last.
    held: Vec<Option<Out>>,
    touched: Vec<u32>,
    txn: Arc<str>,
    batch: Vec<Item>,
    tx: mpsc::Sender<Vec<Item>>,
    fence: Arc<Fence>,
    error: Option<anyhow::Error>,
    /// Row changes handed to the publisher.
    pub changes: u64,
    payload_hint: usize,
}

/// The capture lost its lease (or the publisher stopped): it must not
/// publish anything more.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LeaseLost(pub String);

impl Capture {
    /// A consumer that hands its messages to `tx` while `fence` holds.
    pub fn new(cluster: &ClusterPlan, tx: mpsc::Sender<Vec<Item>>, fence: Arc<Fence>) -> Capture {
        Capture {
            prefix: cluster.subject_prefix(),
            partitions: cluster.partitions,
            directories: DirectoryCache::default(),
            partitioner: Partitioner::default(),
            held: vec![None; cluster.partitions as usize],
            touched: Vec::new(),
            txn: Arc::from(""),
            batch: Vec::with_capacity(BATCH),
            tx,
            fence,
            error: None,
            changes: 0,
            payload_hint: 256,
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
        self.tx
            .blocking_send(batch)
            .map_err(|_| anyhow::Error::new(LeaseLost(self.fence.why())))
    }

    fn encode(&mut self, change: &RowChange<'_>) -> anyhow::Result<()> {
        let mut payload = Vec::with_capacity(self.payload_hint);
        self.directories.encode(change, &mut payload).map_err(|e| {
            anyhow::anyhow!(
                "cannot encode change {}:{}:{} of {}.{}: {e}",
                change.txn,
                change.event_index,
                change.row_index,
                change.table.db,
                change.table.table
            )
        })?;
        self.payload_hint = payload.len().next_power_of_two().max(64);
        if *self.txn != *change.txn {
            self.txn = Arc::from(change.txn);
        }
        let p = self.partitioner.partition(change, self.partitions);
        let mut subj = String::with_capacity(self.prefix.len() + 32);
        subject(&mut subj, &self.prefix, &change.table.db, &change.table.table, p);
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
        let out = Out {
            subject: subj,
            id,
            txn: self.txn.clone(),
            position,
            payload: payload.into(),
            last: false,
        };
        match self.held[p as usize].replace(out) {
            Some(before) => self.batch.push(Item::Msg(before)),
            None => self.touched.push(p),
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
        for p in self.touched.drain(..) {
            if let Some(mut out) = self.held[p as usize].take() {
                out.last = true;
                self.batch.push(Item::Msg(out));
            }
        }
        self.batch.push(Item::Commit(Checkpoint {
            file: commit.file.to_owned(),
            pos: commit.end,
            gtids: commit.gtid_state.to_string(),
            txn: commit.txn.to_owned(),
            ts: commit.ts,
        }));
        Flow::Continue
    }
}

impl Consumer for Capture {
    fn after_event(&mut self, _: &Runtime, _: &Decoder, _: bool, _: &mut Stop) -> anyhow::Result<()> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        if self.batch.len() >= BATCH {
            self.hand_over()?;
        }
        Ok(())
    }

    fn decode_failed(&mut self, e: crate::decode::DecodeError) -> anyhow::Error {
        self.error.take().unwrap_or_else(|| e.into())
    }

    fn abandon_transaction(&mut self) {
        // What was handed over of it comes again with the same ids and the
        // same marks, and the stream drops the copies.
        for p in self.touched.drain(..) {
            self.held[p as usize] = None;
        }
    }

    fn idle(&mut self) -> anyhow::Result<()> {
        self.hand_over()
    }

    fn next_tick(&self) -> Option<tokio::time::Instant> {
        Some(tokio::time::Instant::now() + Duration::from_millis(100))
    }

    fn tick(&mut self, _: &Runtime, _: &Decoder) -> anyhow::Result<()> {
        self.hand_over()
    }
}

type AckFuture = Pin<Box<dyn Future<Output = Result<PublishAck, PublishError>> + Send>>;

enum Slot {
    Msg(Out, Option<AckFuture>),
    Commit(Checkpoint),
}

async fn send(js: &jetstream::Context, out: &Out) -> Option<AckFuture> {
    match js
        .publish_with_headers(out.subject.clone(), out.headers(), out.payload.clone())
        .await
    {
        Ok(ack) => Some(std::future::IntoFuture::into_future(ack)),
        Err(e) => {
            tracing::warn!(change = %out.id, "publishing to {}: {e}", out.subject);
            None
        }
    }
}

/// Publishes what `rx` brings while `fence` holds, at most `window`
/// messages unacknowledged, and moves `acked` to each commit whose
/// messages were all acknowledged. A failed acknowledgement publishes the
/// whole window again, after a backoff, until it is taken. Ends when `rx`
/// closes and everything was acknowledged, or with the reason it stopped.
pub async fn publish(
    js: jetstream::Context,
    mut rx: mpsc::Receiver<Vec<Item>>,
    fence: Arc<Fence>,
    acked: watch::Sender<Option<Checkpoint>>,
    window: usize,
    counters: Arc<Counters>,
) -> anyhow::Result<()> {
    let mut q: VecDeque<Slot> = VecDeque::new();
    let mut unacked = 0usize;
    let mut closed = false;
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
    loop {
        while let Some(Slot::Commit(_)) = q.front() {
            if let Some(Slot::Commit(at)) = q.pop_front() {
                counters.commits.fetch_add(1, Ordering::Relaxed);
                acked.send_replace(Some(at));
            }
        }
        if closed && q.is_empty() {
            return Ok(());
        }
        let taking = !closed && unacked < window;
        let front = match q.front_mut() {
            Some(Slot::Msg(_, ack)) => Some(ack),
            _ => None,
        };
        let waiting = front.is_some();
        let event = tokio::select! {
            biased;
            r = async {
                match front {
                    Some(Some(ack)) => ack.await.map_err(|e| e.to_string()),
                    _ => Err("it was not sent".to_owned()),
                }
            }, if waiting => Event::Ack(r),
            batch = rx.recv(), if taking => Event::Batch(batch),
        };
        match event {
            Event::Ack(Ok(ack)) => {
                q.pop_front();
                unacked -= 1;
                counters.acked.fetch_add(1, Ordering::Relaxed);
                if ack.duplicate {
                    counters.duplicates.fetch_add(1, Ordering::Relaxed);
                }
                backoff.reset();
            }
            Event::Ack(Err(e)) => {
                let id = match q.front() {
                    Some(Slot::Msg(out, _)) => out.id.clone(),
                    _ => String::new(),
                };
                let wait = backoff.delay();
                tracing::warn!(
                    change = %id,
                    "JetStream did not acknowledge ({e}); publishing {unacked} messages again in {wait:?}"
                );
                tokio::time::sleep(wait).await;
                if !fence.holds() {
                    anyhow::bail!(LeaseLost(fence.why()));
                }
                counters.retries.fetch_add(1, Ordering::Relaxed);
                for slot in q.iter_mut() {
                    if let Slot::Msg(out, ack) = slot {
                        *ack = send(&js, out).await;
                    }
                }
            }
            Event::Batch(None) => closed = true,
            Event::Batch(Some(items)) => {
                if !fence.holds() {
                    anyhow::bail!(LeaseLost(fence.why()));
                }
                for item in items {
                    match item {
                        Item::Msg(out) => {
                            let ack = send(&js, &out).await;
                            q.push_back(Slot::Msg(out, ack));
                            unacked += 1;
                        }
                        Item::Commit(at) => q.push_back(Slot::Commit(at)),
                    }
                }
            }
        }
    }
}

enum Event {
    Ack(Result<PublishAck, String>),
    Batch(Option<Vec<Item>>),
}

/// Writes the latest acknowledged position `acked` holds to the checkpoint
/// bucket every `every`, by compare-and-set from `revision`, and once more
/// when `stop` fires. A write that finds someone else's revision loses the
/// fence: another capture took over.
pub async fn checkpoint(
    kv: kv::Store,
    mut revision: u64,
    holder: String,
    mut acked: watch::Receiver<Option<Checkpoint>>,
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
        if let Some(at) = at
            && written.as_ref() != Some(&at)
            && fence.holds()
        {
            let value = match serde_json::to_vec(&Stored {
                at: Some(at.clone()),
                holder: holder.clone(),
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
