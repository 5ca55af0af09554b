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
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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
    /// Messages published and acknowledged:
    /// `rowhook_cluster_published_total` when it comes from the registry.
    pub acked: crate::telemetry::Counter,
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

/// A message published and not yet acknowledged.
struct Flight {
    out: Out,
    /// The id of the message the stream must hold last when this one
    /// comes (the one published before it).
    expect: Option<String>,
    serial: u64,
    acked: bool,
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
    // `"duplicate": true`, present only when true.
    Answer::Stored {
        duplicate: text.contains("\"duplicate\""),
    }
}

/// Publishes what `rx` brings while `fence` holds, at most `window`
/// messages unacknowledged, and moves `acked` to each commit whose
/// messages were all acknowledged. Each message asks for its
/// acknowledgement on one inbox of the capture's (`INBOX.SERIAL`), read by
/// one subscription, so a message costs a publish and the parse of a short
/// reply. A refused or missing acknowledgement (none within `ack_timeout`)
/// publishes every unacknowledged message again, in order, after a
/// backoff, until it is taken.
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
    mut rx: mpsc::Receiver<Vec<Item>>,
    fence: Arc<Fence>,
    acked: watch::Sender<Option<Checkpoint>>,
    window: usize,
    ack_timeout: Duration,
    counters: Arc<Counters>,
) -> anyhow::Result<()> {
    use futures_util::StreamExt as _;
    let inbox = client.new_inbox();
    let mut acks = client
        .subscribe(format!("{inbox}.*"))
        .await
        .map_err(|e| anyhow::anyhow!("subscribing to the acknowledgements: {e}"))?;
    let reply_of = |serial: u64| format!("{inbox}.{serial}");
    let mut flights: VecDeque<Flight> = VecDeque::new();
    // Each commit with the serial its transaction's messages end before.
    let mut commits: VecDeque<(u64, Checkpoint)> = VecDeque::new();
    let mut next_serial = 0u64;
    let mut closed = false;
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
    loop {
        while flights.front().is_some_and(|f| f.acked) {
            flights.pop_front();
        }
        let floor = flights.front().map_or(next_serial, |f| f.serial);
        while commits.front().is_some_and(|(bound, _)| *bound <= floor) {
            if let Some((_, at)) = commits.pop_front() {
                counters.commits.fetch_add(1, Ordering::Relaxed);
                acked.send_replace(Some(at));
            }
        }
        if closed && flights.is_empty() && commits.is_empty() {
            return Ok(());
        }
        let taking = !closed && flights.len() < window;
        let deadline = flights.front().map(|f| f.sent + ack_timeout);
        let failed = tokio::select! {
            biased;
            m = acks.next() => {
                let Some(m) = m else { anyhow::bail!("the acknowledgement subscription ended") };
                let serial = m.subject.rsplit('.').next().and_then(|s| s.parse::<u64>().ok());
                let at = serial.and_then(|s| s.checked_sub(flights.front()?.serial));
                let at = at.map(|i| i as usize).filter(|&i| i < flights.len() && !flights[i].acked);
                match (answer(&m), at) {
                    // An answer to a message acknowledged already.
                    (_, None) => None,
                    (Answer::Stored { duplicate }, Some(i)) => {
                        flights[i].acked = true;
                        counters.acked.inc();
                        if duplicate {
                            counters.duplicates.fetch_add(1, Ordering::Relaxed);
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
                                        acked: false,
                                        sent: tokio::time::Instant::now(),
                                    };
                                    if let Err(e) = client
                                        .publish_with_reply_and_headers(
                                            flight.out.subject.clone(),
                                            reply_of(serial),
                                            flight.headers(),
                                            flight.out.payload.clone(),
                                        )
                                        .await
                                    {
                                        tracing::debug!(change = %flight.out.id, "publishing: {e}");
                                    }
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
            for f in flights.iter_mut().filter(|f| !f.acked) {
                if let Err(e) = client
                    .publish_with_reply_and_headers(
                        f.out.subject.clone(),
                        reply_of(f.serial),
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
