//! `rowhook work`: the config's handlers and sinks run on the partitions
//! this worker owns.
//!
//! Workers share a group's partitions through leases (`work.GROUP.pN`
//! in the lease bucket) and announce themselves there (`work.GROUP.w.ID`,
//! aging out with the lease), so each can take its fair share, the
//! partition count over the live workers rounded up. For each partition it
//! owns, a worker loads the handlers' state from the state bucket
//! ([`super::state`]), makes the partition's durable pull consumer start
//! after the sequence that state covers, and calls the handlers on each
//! change in stream order. A transaction's slice of a partition ends at
//! its `Rowhook-Last` message; there the handlers' writes settle. Every
//! checkpoint interval, each partition at the end of a slice is made
//! durable: what its handlers emitted is acknowledged by the sinks, then
//! its state is written with the sequence it covers (compare-and-set), and
//! only then are its messages acknowledged to JetStream. A worker that dies
//! leaves its partitions to the others once their leases lapse; they
//! resume from the state, so a change is counted in state exactly once and
//! delivered again only if it came after the last state write.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::{self, AckKind, kv};
use futures_util::StreamExt as _;
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, watch};

use super::Joined;
use super::config::ClusterPlan;
use super::lease::Lease;
use super::partition::partition_filter;
use super::state::{self, PartitionState, Stored, Taken};
use crate::config::{OnError, Plan};
use crate::decode::Op;
use crate::driver::Stop;
use crate::handler_id::HandlerId;
use crate::pipeline::delivery::Delivery;
use crate::pipeline::dispatch::{self, Handlers, grants_of};
use crate::pipeline::router::{Router, Subscription};
use crate::runtime::{Emitted, HandlerRuntime};
use crate::sink::Message;
use crate::telemetry::Registry;

/// What a worker did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkStats {
    /// Changes handed to handlers.
    pub changes: u64,
    /// Messages the handlers emitted.
    pub messages: u64,
    /// State writes (each with the acknowledgement of its messages).
    pub commits: u64,
    /// Partitions taken (over the run).
    pub taken: u64,
    /// Partitions given up (released for a fair share, or lost).
    pub released: u64,
}

/// A message of an owned partition, tagged with the term it was pulled in.
type Pulled = (u32, u64, jetstream::Message);

/// One partition this worker owns.
struct Part {
    term: u64,
    /// Whether the lease is still held: a task of its own renews it.
    fence: Arc<super::lease::Fence>,
    /// That task; it gives the lease back when `keep_quit` fires.
    keeper: tokio::task::JoinHandle<Lease>,
    keep_quit: watch::Sender<bool>,
    handlers: Handlers,
    stored: Stored,
    /// The last message handed to the handlers.
    done: u64,
    /// The last message that ended a slice; its writes settled.
    settled: u64,
    /// That message, to acknowledge once the state covers it.
    settled_msg: Option<jetstream::Message>,
    /// Messages handed over after `settled`.
    open: bool,
    /// The transaction of the open slice.
    txn: String,
    /// A write of the state is due at the next slice end.
    due: bool,
    /// The consumer sequence of the last message taken in this term.
    delivered: u64,
    /// `rowhook_cluster_partition_pending` of this partition.
    pending: crate::telemetry::Gauge,
    quit: watch::Sender<bool>,
}

/// The worker.
pub struct Worker<'a> {
    plan: &'a Plan,
    cluster: &'a ClusterPlan,
    group: String,
    holder: String,
    member: String,
    joined: &'a Joined,
    states: kv::Store,
    runtime: HandlerRuntime,
    registry: Registry,
    delivery: Delivery,
    /// The handlers' subscriptions.
    router: Router,
    /// Its answers by `DB\0TABLE\0OP`, and the buffer a key is written in.
    routes: HashMap<String, Arc<[HandlerId]>>,
    route_key: String,
    /// The last answer, by database, table and operation.
    last_route: Option<(String, String, Op, Arc<[HandlerId]>)>,
    parts: BTreeMap<u32, Part>,
    tx: mpsc::Sender<Pulled>,
    rx: mpsc::Receiver<Pulled>,
    terms: u64,
    emitted: Vec<Emitted>,
    owned_gauge: crate::telemetry::Gauge,
    workers_gauge: crate::telemetry::Gauge,
    /// What it did.
    pub stats: WorkStats,
}

/// Messages a partition's consumer pulls at once.
const PULL_BATCH: usize = 64;
/// Bytes the consumers of all partitions pull at once, about: well below
/// what a NATS server lets one connection fall behind by (64 MiB by
/// default) before it drops messages for it.
const PULL_BYTES: usize = 32 << 20;
/// Pulled messages waiting to be handled, at most.
const WAITING: usize = 256;

/// How long a stopping worker spends writing its partitions' state.
const STOP_WITHIN: Duration = Duration::from_secs(10);

/// The key of partition `p`'s lease.
fn lease_key(group: &str, p: u32) -> String {
    format!("work.{group}.p{p}")
}

/// The prefix of the keys workers announce themselves under.
fn member_prefix(group: &str) -> String {
    format!("work.{group}.w.")
}

/// The consumer of partition `p`.
pub fn consumer_name(group: &str, p: u32) -> String {
    format!("{group}_p{p}")
}

impl<'a> Worker<'a> {
    /// A worker of `plan`'s handlers in `cluster`'s group, owning nothing yet.
    pub async fn new(
        plan: &'a Plan,
        cluster: &'a ClusterPlan,
        joined: &'a Joined,
        holder: String,
    ) -> anyhow::Result<Self> {
        let registry = Registry::new();
        let delivery = Delivery::open(plan, &registry).await?;
        let runtime = HandlerRuntime::new()?.with_compile_cache(plan.state.compile_cache_dir());
        let states = joined.states.clone();
        let member_id: String = holder
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        let (tx, rx) = mpsc::channel(WAITING);
        let mut router = Router::default();
        for h in &plan.handlers {
            router.add(
                HandlerId::new(&h.tenant, &h.name),
                Subscription {
                    tables: h.tables.clone(),
                    ops: h.ops,
                },
            );
        }
        super::serve_metrics(plan, &registry, &joined.client)?;
        let owned_gauge = registry.gauge(
            crate::telemetry::names::CLUSTER_PARTITIONS_OWNED,
            "Partitions this worker owns.",
            vec![],
        );
        let workers_gauge = registry.gauge(
            crate::telemetry::names::CLUSTER_WORKERS,
            "Live workers of the group, as this worker last counted.",
            vec![],
        );
        Ok(Worker {
            plan,
            cluster,
            group: cluster.group.clone(),
            member: format!("{}{member_id}", member_prefix(&cluster.group)),
            holder,
            joined,
            states,
            runtime,
            registry,
            delivery,
            router,
            routes: HashMap::new(),
            route_key: String::new(),
            last_route: None,
            parts: BTreeMap::new(),
            tx,
            rx,
            terms: 0,
            emitted: Vec::new(),
            owned_gauge,
            workers_gauge,
            stats: WorkStats::default(),
        })
    }

    /// The partitions owned now.
    pub fn owned(&self) -> Vec<u32> {
        self.parts.keys().copied().collect()
    }

    /// Runs until `stop`: takes and gives up partitions as workers come
    /// and go, handles what they bring, and makes it durable every
    /// checkpoint interval. On a stop, the partitions at a slice end are
    /// written and released.
    pub fn run(&mut self, nats: &Runtime, stop: &mut Stop) -> anyhow::Result<()> {
        let every = self.cluster.lease_ttl / 3;
        // Workers started together see each other before the first of
        // them takes every partition.
        self.announce(nats);
        std::thread::sleep((self.cluster.lease_ttl / 5).min(Duration::from_secs(1)));
        let mut next_balance = Instant::now();
        let mut next_commit = Instant::now() + self.cluster.checkpoint_interval;
        let result = loop {
            if stop.requested() {
                break Ok(());
            }
            if Instant::now() >= next_balance {
                if let Err(e) = self.balance(nats, stop) {
                    break Err(e);
                }
                next_balance = Instant::now() + every;
            }
            let wait = next_commit.min(next_balance).saturating_duration_since(Instant::now());
            let first = nats.block_on(async {
                tokio::select! {
                    m = self.rx.recv() => m,
                    _ = tokio::time::sleep(wait) => None,
                    _ = stop.requested_wait() => None,
                }
            });
            let mut handled = 0;
            let mut next = first;
            while let Some(m) = next {
                if let Err(e) = self.handle(nats, m) {
                    return self.end(nats, Err(e));
                }
                handled += 1;
                if handled >= 4096 {
                    break;
                }
                next = self.rx.try_recv().ok();
            }
            if Instant::now() >= next_commit {
                for p in self.owned() {
                    if let Err(e) = self.commit_now(nats, p) {
                        return self.end(nats, Err(e));
                    }
                }
                next_commit = Instant::now() + self.cluster.checkpoint_interval;
            }
        };
        self.end(nats, result)
    }

    fn end(&mut self, nats: &Runtime, result: anyhow::Result<()>) -> anyhow::Result<()> {
        // A stop writes what it can within this; the rest is handled again
        // by the partitions' next owners.
        let until = Instant::now() + STOP_WITHIN;
        for p in self.owned() {
            let settled = self.parts.get(&p).is_some_and(|part| !part.open);
            if result.is_ok()
                && settled
                && Instant::now() < until
                && let Err(e) = self.commit_now(nats, p)
            {
                tracing::warn!("partition {p}: {e:#}");
            }
            self.drop_part(nats, p, true);
        }
        let _ = nats.block_on(self.joined.leases.delete(&self.member));
        let closed = nats.block_on(self.delivery.close());
        result.and(closed)
    }

    /// Writes (renews) this worker's announcement in the lease bucket.
    fn announce(&self, nats: &Runtime) {
        if let Err(e) = nats.block_on(self.joined.leases.put(&self.member, self.holder.clone().into())) {
            tracing::warn!("announcing this worker: {e}");
        }
    }

    /// Renews this worker's leases and presence, gives up what is over its
    /// fair share, and takes free partitions up to it.
    fn balance(&mut self, nats: &Runtime, stop: &Stop) -> anyhow::Result<()> {
        self.announce(nats);
        for p in self.owned() {
            if !self.parts[&p].fence.holds() {
                tracing::warn!("partition {p}: its lease was lost; letting it go");
                self.drop_part(nats, p, false);
            }
        }
        // The subjects of the announcements, from the bucket's stream in
        // one request (no consumer to make).
        let bucket = self.cluster.lease_bucket();
        let members = nats.block_on(async {
            let stream = self.joined.js.get_stream(format!("KV_{bucket}")).await?;
            let mut subjects = stream
                .info_with_subjects(format!("$KV.{bucket}.{}>", member_prefix(&self.group)))
                .await?;
            let mut n = 0u32;
            while let Some(s) = subjects.next().await {
                s?;
                n += 1;
            }
            Ok::<u32, anyhow::Error>(n)
        });
        let members = match members {
            Ok(n) => n.max(1),
            Err(e) => {
                tracing::warn!("counting the workers: {e:#}");
                return Ok(());
            }
        };
        self.workers_gauge.set(f64::from(members));
        let partitions = self.cluster.partitions;
        let share = partitions.div_ceil(members) as usize;
        // Over the share: the highest partitions go, once at a slice end.
        while self.parts.len() > share {
            let Some(p) = self.parts.iter().rev().find(|(_, part)| !part.open).map(|(p, _)| *p) else {
                break;
            };
            self.commit_now(nats, p)?;
            tracing::info!(
                partition = p,
                workers = members,
                "giving up a partition for a fair share"
            );
            self.drop_part(nats, p, true);
            self.stats.released += 1;
        }
        if self.parts.len() < share {
            // Each worker starts looking at another place.
            let start = (super::partition::fnv_of(self.holder.as_bytes()) % u64::from(partitions)) as u32;
            for i in 0..partitions {
                if self.parts.len() >= share || stop.requested() {
                    break;
                }
                let p = (start + i) % partitions;
                if self.parts.contains_key(&p) {
                    continue;
                }
                self.try_take(nats, p)?;
            }
        }
        self.owned_gauge.set(self.parts.len() as f64);
        Ok(())
    }

    fn pending_gauge(&self, p: u32) -> crate::telemetry::Gauge {
        self.registry.gauge(
            crate::telemetry::names::CLUSTER_PARTITION_PENDING,
            "Messages of an owned partition its consumer has not delivered yet.",
            vec![("partition", p.to_string())],
        )
    }

    fn try_take(&mut self, nats: &Runtime, p: u32) -> anyhow::Result<()> {
        let key = lease_key(&self.group, p);
        let lease = match nats.block_on(Lease::try_take(
            &self.joined.leases,
            &key,
            &self.holder,
            self.cluster.lease_ttl,
        )) {
            Ok(Ok(lease)) => lease,
            Ok(Err(_)) => return Ok(()),
            Err(e) => {
                tracing::warn!("partition {p}: {e:#}");
                return Ok(());
            }
        };
        let started = Instant::now();
        // Renewed from now on, however long the rest takes.
        let (keep_quit, keep_quit_rx) = watch::channel(false);
        let fence = lease.fence();
        let keeper = nats.spawn(lease.keep(keep_quit_rx));
        let give_back = |nats: &Runtime, quit: watch::Sender<bool>, keeper: tokio::task::JoinHandle<Lease>| {
            quit.send_replace(true);
            if let Ok(lease) = nats.block_on(keeper) {
                nats.block_on(lease.release());
            }
        };
        // State and consumer: what a cluster electing its leaders may not
        // answer now. The partition is let go and tried again later.
        let claimed = nats.block_on(async {
            let mut stored = state::load(&self.states, &self.group, p).await?;
            let claim = stored.state.clone();
            stored.write(&self.states, &self.group, p, &self.holder, claim).await?;
            let consumer = self.consumer(p, stored.state.seq).await?;
            Ok::<_, anyhow::Error>((stored, consumer))
        });
        let (stored, consumer) = match claimed {
            Ok(c) => c,
            Err(e) => {
                if !e.is::<Taken>() {
                    tracing::warn!("partition {p}: {e:#}; trying again later");
                }
                give_back(nats, keep_quit, keeper);
                return Ok(());
            }
        };
        let mut handlers = Handlers::new(self.runtime.clone());
        handlers.tenant_breakers(self.plan, &self.registry);
        let rates = dispatch::emit_rates(self.plan);
        for h in &self.plan.handlers {
            let grants = grants_of(
                self.plan,
                h,
                |sink| self.delivery.limits(sink),
                rates.get(&h.tenant).cloned(),
            );
            handlers.add(h, grants, &self.registry)?;
        }
        let saved = &stored.state.handlers;
        handlers.load_state(|id| Ok(saved.get(id.key()).cloned().unwrap_or_default()))?;
        let seq = stored.state.seq;
        self.terms += 1;
        let term = self.terms;
        let (quit, quit_rx) = watch::channel(false);
        let tx = self.tx.clone();
        nats.spawn(pull(consumer, p, term, self.pull_bytes(), tx, quit_rx));
        tracing::info!(
            partition = p,
            seq,
            took_ms = started.elapsed().as_millis() as u64,
            "took a partition: its state covers the stream up to this sequence"
        );
        self.parts.insert(
            p,
            Part {
                term,
                fence,
                keeper,
                keep_quit,
                handlers,
                stored,
                done: seq,
                settled: seq,
                settled_msg: None,
                open: false,
                txn: String::new(),
                due: false,
                delivered: 0,
                pending: self.pending_gauge(p),
                quit,
            },
        );
        self.stats.taken += 1;
        Ok(())
    }

    /// Makes partition `p`'s consumer anew after the last message handled,
    /// in a new term.
    fn repull(&mut self, nats: &Runtime, p: u32) -> anyhow::Result<()> {
        let Some(done) = self.parts.get(&p).map(|part| part.done) else {
            return Ok(());
        };
        let consumer = match nats.block_on(self.consumer(p, done)) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("partition {p}: {e:#}; letting it go");
                self.drop_part(nats, p, true);
                return Ok(());
            }
        };
        self.terms += 1;
        let term = self.terms;
        let (quit, quit_rx) = watch::channel(false);
        nats.spawn(pull(consumer, p, term, self.pull_bytes(), self.tx.clone(), quit_rx));
        let part = self.parts.get_mut(&p).expect("checked");
        // The old pull task ends; the lease's keeper goes on.
        let old = std::mem::replace(&mut part.quit, quit);
        old.send_replace(true);
        part.term = term;
        part.delivered = 0;
        Ok(())
    }

    /// Partition `p`'s durable consumer, made anew to start after `seq`:
    /// what the last owner was sent and did not acknowledge comes at once,
    /// not after its acknowledgement wait.
    async fn consumer(&self, p: u32, seq: u64) -> anyhow::Result<jetstream::consumer::Consumer<pull::Config>> {
        let stream = self.joined.js.get_stream(&self.cluster.stream).await?;
        let name = consumer_name(&self.group, p);
        let first = stream.cached_info().state.first_sequence;
        if first > seq + 1 {
            tracing::error!(
                partition = p,
                "the stream starts at sequence {first}, after the sequence this partition's state covers ({seq}): \
                 the messages between were removed by the stream's limits (max_age_hours, max_bytes_mb) before \
                 group `{}` handled them, and this partition's changes among them are lost to it; \
                 raise the limits, or run more workers",
                self.group
            );
        }
        let _ = stream.delete_consumer(&name).await;
        let deliver_policy = if seq == 0 {
            DeliverPolicy::All
        } else {
            DeliverPolicy::ByStartSequence {
                start_sequence: seq + 1,
            }
        };
        stream
            .create_consumer(pull::Config {
                durable_name: Some(name.clone()),
                filter_subject: partition_filter(&self.cluster.subject_prefix(), p),
                deliver_policy,
                ack_policy: AckPolicy::All,
                ack_wait: Duration::from_secs(60),
                max_ack_pending: self.cluster.max_unacked as i64,
                ..Default::default()
            })
            .await
            .map_err(|e| anyhow::anyhow!("creating consumer {name}: {e}"))
    }

    /// Stops pulling `p` and forgets it; `release` gives its lease up.
    fn drop_part(&mut self, nats: &Runtime, p: u32, release: bool) {
        let Some(mut part) = self.parts.remove(&p) else { return };
        part.pending.set(0.0);
        self.owned_gauge.set(self.parts.len() as f64);
        part.quit.send_replace(true);
        part.keep_quit.send_replace(true);
        part.handlers.abandon_transaction();
        if let Ok(lease) = nats.block_on(part.keeper)
            && release
        {
            nats.block_on(lease.release());
        }
    }

    /// The bytes each partition's consumer pulls at once: a share of
    /// [`PULL_BYTES`], and never less than the largest message the server
    /// takes (a pull that a message does not fit in would never get it).
    fn pull_bytes(&self) -> usize {
        let largest = self.joined.client.server_info().max_payload + (64 << 10);
        (PULL_BYTES / self.cluster.partitions.max(1) as usize).max(largest)
    }

    fn route(&mut self, db: &str, table: &str, op: Op) -> Arc<[HandlerId]> {
        // A message's changes are of one table: most answers are the last.
        if let Some((d, t, o, ids)) = &self.last_route
            && *o == op
            && d == db
            && t == table
        {
            return ids.clone();
        }
        let ids = self.route_of(db, table, op);
        match &mut self.last_route {
            Some((d, t, o, last)) => {
                db.clone_into(d);
                table.clone_into(t);
                *o = op;
                *last = ids.clone();
            }
            None => self.last_route = Some((db.to_owned(), table.to_owned(), op, ids.clone())),
        }
        ids
    }

    fn route_of(&mut self, db: &str, table: &str, op: Op) -> Arc<[HandlerId]> {
        let key = &mut self.route_key;
        key.clear();
        key.push_str(db);
        key.push('\0');
        key.push_str(table);
        key.push('\0');
        key.push_str(op.as_str());
        if let Some(r) = self.routes.get(key.as_str()) {
            return r.clone();
        }
        let ids: Arc<[HandlerId]> = self.router.subscribers(db, table, op).into();
        self.routes.insert(key.clone(), ids.clone());
        ids
    }

    fn handle(&mut self, nats: &Runtime, (p, term, msg): Pulled) -> anyhow::Result<()> {
        let Some(part) = self.parts.get(&p) else { return Ok(()) };
        if part.term != term {
            return Ok(());
        }
        let info = msg
            .info()
            .map_err(|e| anyhow::anyhow!("a message without its sequence: {e}"))?;
        let (seq, pending, delivered) = (info.stream_sequence, info.pending, info.consumer_sequence);
        if seq <= part.done {
            return Ok(());
        }
        // A message the client dropped (a slow subscription) leaves a gap
        // in the consumer's sequence: the consumer is made anew after the
        // last message handled, and what was pulled meanwhile is dropped.
        if part.delivered != 0 && delivered != part.delivered + 1 {
            tracing::warn!(
                partition = p,
                "a message was lost between the consumer and this worker; pulling again after sequence {}",
                part.done
            );
            return self.repull(nats, p);
        }
        part.pending.set(pending as f64);
        let last = (msg.headers.as_ref())
            .and_then(|h| h.get(super::capture::LAST_HEADER))
            .is_some_and(|v| v.as_str() == "1");
        let part = self.parts.get_mut(&p).expect("checked");
        part.delivered = delivered;
        for frame in super::capture::frames(&msg.payload) {
            let frame =
                frame.map_err(|e| anyhow::anyhow!("partition {p}: message {seq} is not a rowhook message: {e}"))?;
            self.handle_change(nats, p, seq, frame)?;
        }
        let part = self.parts.get_mut(&p).expect("checked");
        part.done = seq;
        part.open = true;
        if last {
            part.handlers.commit_state(|_, _| {});
            part.open = false;
            part.settled = seq;
            part.settled_msg = Some(msg);
            if part.due {
                self.commit_if_settled(nats, p)?;
            }
        }
        Ok(())
    }

    /// Calls the handlers of partition `p` on one change of message `seq`.
    fn handle_change(&mut self, nats: &Runtime, p: u32, seq: u64, frame: &[u8]) -> anyhow::Result<()> {
        let change = rowhook_abi::Change::parse(frame).map_err(|e| {
            anyhow::anyhow!("partition {p}: message {seq} holds something that is not a row change: {e}")
        })?;
        let id = change.id();
        let targets = self.route(change.db(), change.table(), change.op());
        let part = self.parts.get_mut(&p).expect("checked");
        // A slice whose last mark is missing ends where the next begins.
        if part.txn != change.txn() {
            if part.open {
                part.handlers.commit_state(|_, _| {});
                part.open = false;
            }
            change.txn().clone_into(&mut part.txn);
        }
        let mut index = 0u32;
        for h in targets.iter() {
            match part.handlers.call(h, frame, &mut self.emitted) {
                Ok(()) => {
                    for e in self.emitted.drain(..) {
                        self.delivery.push(
                            &e.sink,
                            Message {
                                key: e.key,
                                payload: e.payload,
                                id: id.to_owned(),
                                index,
                            },
                            h.clone(),
                        );
                        index += 1;
                    }
                }
                Err(err) if err.is_interrupted() => return Err(crate::driver::Interrupted.into()),
                Err(err) => match part.handlers.on_error(h).clone() {
                    OnError::Skip => {
                        tracing::warn!(handler = %h, change = %id, "skipped: {err}");
                    }
                    OnError::DeadLetter { sink } => {
                        tracing::warn!(handler = %h, change = %id, "dead-lettered to `{sink}`: {err}");
                        let letter = serde_json::json!({
                            "handler": h.key(),
                            "change_id": id,
                            "error": err.to_string(),
                            "partition": p,
                            "sequence": seq,
                        });
                        self.delivery.push(
                            &sink,
                            Message {
                                key: None,
                                payload: letter.to_string().into_bytes(),
                                id: id.to_owned(),
                                index,
                            },
                            h.clone(),
                        );
                        index += 1;
                    }
                    OnError::Halt => {
                        anyhow::bail!("handler `{h}` failed on change {id} (partition {p}, sequence {seq}): {err}")
                    }
                },
            }
        }
        self.stats.changes += 1;
        self.stats.messages += u64::from(index);
        if self.delivery.full() {
            self.flush(nats)?;
        }
        Ok(())
    }

    fn flush(&mut self, nats: &Runtime) -> anyhow::Result<()> {
        let refused = nats.block_on(self.delivery.flush())?;
        for r in refused {
            let skip = r.origins.iter().all(|h| {
                (self.plan.handlers.iter())
                    .any(|p| p.name == h.name() && p.tenant == h.tenant() && p.on_error == OnError::Skip)
            });
            if !skip {
                return Err(anyhow::anyhow!(
                    "sink `{}` refused {} messages: {}",
                    r.sink,
                    r.messages.len(),
                    r.error
                ));
            }
            tracing::warn!(sink = %r.sink, "skipped {} messages the sink refused: {}", r.messages.len(), r.error);
        }
        nats.block_on(self.delivery.make_durable())
    }

    /// Makes a write of partition `p`'s state due if it has handled
    /// anything since the last one, and writes it now if it is at a slice
    /// end (else at the next one).
    fn commit_now(&mut self, nats: &Runtime, p: u32) -> anyhow::Result<()> {
        if let Some(part) = self.parts.get_mut(&p) {
            part.due = part.settled > part.stored.state.seq;
        }
        self.commit_if_settled(nats, p)
    }

    /// Writes partition `p`'s state if a write is due and it is at a slice
    /// end, after its messages are delivered; then acknowledges the stream.
    fn commit_if_settled(&mut self, nats: &Runtime, p: u32) -> anyhow::Result<()> {
        let Some(part) = self.parts.get(&p) else { return Ok(()) };
        if !part.due || part.open || part.settled <= part.stored.state.seq {
            return Ok(());
        }
        self.flush(nats)?;
        let part = self.parts.get_mut(&p).expect("checked");
        let state = PartitionState {
            seq: part.settled,
            handlers: (part.handlers.state_values().into_iter())
                .map(|(id, values)| (id.key().to_owned(), values.clone()))
                .collect(),
        };
        let written = nats.block_on(part.stored.write(&self.states, &self.group, p, &self.holder, state));
        match written {
            Ok(()) => {}
            Err(e) if e.is::<Taken>() => {
                tracing::warn!("{e}");
                self.drop_part(nats, p, false);
                return Ok(());
            }
            Err(e) => {
                tracing::warn!("partition {p}: {e:#}; trying again at the next slice end");
                return Ok(());
            }
        }
        part.due = false;
        self.stats.commits += 1;
        if let Some(msg) = part.settled_msg.take()
            && let Err(e) = nats.block_on(msg.ack_with(AckKind::Ack))
        {
            // The state covers it: a new owner passes over it.
            tracing::info!("partition {p}: acknowledging: {e}");
        }
        Ok(())
    }
}

/// Pulls partition `p`'s messages into `tx` until `quit`, at most
/// [`PULL_BATCH`] messages and `bytes` at once.
async fn pull(
    consumer: jetstream::consumer::Consumer<pull::Config>,
    p: u32,
    term: u64,
    bytes: usize,
    tx: mpsc::Sender<Pulled>,
    mut quit: watch::Receiver<bool>,
) {
    let mut backoff = crate::backoff::Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        let pulled = consumer
            .stream()
            .max_messages_per_batch(PULL_BATCH)
            .max_bytes_per_batch(bytes)
            .heartbeat(Duration::from_secs(15))
            .messages()
            .await;
        let mut messages = match pulled {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!("partition {p}: pulling: {e}");
                tokio::select! {
                    _ = tokio::time::sleep(backoff.delay()) => continue,
                    _ = quit.changed() => return,
                }
            }
        };
        loop {
            tokio::select! {
                m = messages.next() => match m {
                    Some(Ok(m)) => {
                        backoff.reset();
                        if tx.send((p, term, m)).await.is_err() {
                            return;
                        }
                    }
                    Some(Err(e)) => {
                        // Made anew after a pause (a server gone, a
                        // consumer leader moving).
                        tracing::debug!("partition {p}: pulling: {e}");
                        tokio::select! {
                            _ = tokio::time::sleep(backoff.delay()) => break,
                            _ = quit.changed() => return,
                        }
                    }
                    None => break,
                },
                _ = quit.changed() => return,
            }
        }
    }
}
