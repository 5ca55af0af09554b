//! The handler pipeline: route → call → buffer → forward → acknowledge →
//! checkpoint.
//!
//! For each row change the [`router`] picks the handlers subscribed to its
//! table and operation (tables nobody subscribed to are not even decoded:
//! the decoder's table filter is the union of all subscriptions), the change
//! is encoded once, and [`dispatch`] calls each handler in binlog order.
//! What handlers emit is buffered per transaction by [`delivery`] and
//! written to the sinks when the transaction's commit has been seen; inside
//! a huge transaction it goes out in bounded batches. Handler state writes
//! commit only after every sink acknowledged the transaction's messages.
//!
//! A failure (a handler's, rows that cannot be decoded, a sink refusing a
//! message beyond its retries) goes through the failing handler's
//! `on_error` ([`dead_letter`]). With a store attached, committed
//! transactions are gathered into a batch (their state writes, dead letters
//! and the position after them) that [`checkpoint`] commits at most every
//! `commit_interval`, always after the sinks made every message of its
//! transactions durable.
//!
//! Handlers are referred to by their [`HandlerId`] (tenant and name)
//! throughout: routes, buffered messages, reloads.

pub mod breaker;
pub mod checkpoint;
pub mod control;
pub mod dead_letter;
pub mod delivery;
pub mod dispatch;
mod held_file;
pub mod hold;
pub mod lanes;
pub mod reread;
pub mod router;
pub mod snapshot;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::config::Plan;
use crate::decode::table_map::TableMap;
use crate::decode::txn::TableFilter;
use crate::decode::{ChangeVisitor, Commit, Flow, RowChange, Undecodable};
use crate::driver::{Consumer, Interrupted, Stop};
use crate::guest_abi::DirectoryCache;
pub use crate::handler_id::HandlerId;
use crate::runtime::reload::{Reload, Reloader};
use crate::runtime::{Emitted, HandlerRuntime};
use crate::sink::Message;
use crate::source::reconnect::SourceStats;
use crate::status::{LiveStatus, Stats};
use crate::store::{Checkpoint, StateStore, binlog_at};
use crate::telemetry::{Counter, Registry, names};
use checkpoint::Checkpointer;
use control::{Control, ControlError, Paused, Reloaded, StatePage};
use dead_letter::{Decision, Failed};
use delivery::{Delivery, Refused};
use dispatch::{ErrorKind, Handlers};
pub use dispatch::{grants_of, runtime_limits};
use hold::Holds;
use router::{Router, Subscription};

/// The most held changes handed over between two transactions, so that a
/// long backlog does not stop the stream while it is handed over.
const HAND_OVER_SLICE: usize = 1024;

/// The message index of a held change's messages starts here, plus the
/// handler's place in the call order times 65536: they cannot take the
/// index of a message another handler emitted for the same change.
const HELD_INDEX: u32 = 1 << 31;

/// How often lanes are looked after while the stream is idle.
const LANE_TICK: Duration = Duration::from_millis(50);

/// What the pipeline counts that belongs to no handler or sink.
struct PipelineCounters {
    transactions: Counter,
    checkpoints: Counter,
    /// Read by `rowhook_source_lag_seconds`.
    lag: Arc<LagClock>,
    /// Unix seconds of the last store commit (or of opening the store),
    /// read by `rowhook_checkpoint_age_seconds`.
    checkpointed_at: Arc<AtomicU64>,
}

/// How far behind the binlog the pipeline is: the binlog timestamp of the
/// last transaction it handled, and whether the source has been idle since
/// (caught up). Written once per transaction and once per idle spell.
#[derive(Debug, Default)]
struct LagClock {
    last_ts: AtomicU64,
    caught_up: AtomicBool,
}

impl LagClock {
    /// Now minus the last transaction's timestamp; 0 when caught up and
    /// idle, or before the first transaction.
    fn lag_seconds(&self) -> f64 {
        let ts = self.last_ts.load(Ordering::Relaxed);
        if ts == 0 || self.caught_up.load(Ordering::Relaxed) {
            return 0.0;
        }
        unix_now().saturating_sub(ts) as f64
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Runs the configured handlers over decoded row changes.
pub struct Pipeline {
    handlers: Handlers,
    router: Router,
    delivery: Delivery,
    checkpointer: Checkpointer,
    /// Per table id: the column directory of the encoding handlers receive,
    /// laid out at the table's first routed change, not per row.
    directories: DirectoryCache,
    encoded: Vec<u8>,
    /// What the handler called last emitted, kept to be reused.
    emitted: Vec<Emitted>,
    commit_seen: bool,
    /// Changes held for suspended or paused handlers.
    holds: Holds,
    halted: Option<anyhow::Error>,
    registry: Registry,
    counters: PipelineCounters,
    reloader: Option<Reloader>,
    /// The I/O runtime and the stop request, to flush a full buffer in the
    /// middle of a rows event (see [`Pipeline::flush_inside_events`]).
    io: Option<(Arc<tokio::runtime::Runtime>, Stop)>,
    /// When the status file is rewritten next, and how often, if it is
    /// rewritten on a timer as well as at checkpoints.
    status_timer: Option<(tokio::time::Instant, Duration)>,
    /// Where each status report is also published for other threads.
    live_status: Option<LiveStatus>,
    /// Commands from other threads (the admin API).
    control: Option<std::sync::mpsc::Receiver<Control>>,
    /// Whether the decoder was inside a transaction after the last event:
    /// commands wait for its end.
    in_transaction: bool,
    /// Each tenant's emit rate, shared by its handlers, deployed ones too.
    rates: std::collections::BTreeMap<String, Arc<crate::runtime::rate::EmitRate>>,
    /// Handlers deployed while running, from the tenants' directories.
    deployments: Option<std::sync::mpsc::Receiver<crate::deploy::Deployment>>,
    /// Handlers that take no change before their gate: deployed with
    /// `start = "latest"` (the end of the server's binlog when deployed),
    /// or of a tenant whose lane is past where the stream resumed.
    /// Places are [`crate::store::binlog_at`]'s, comparable across files.
    gates: crate::handler_id::IdMap<(u64, u64)>,
    /// Whether tenants are declared: then a halt stops its tenant's lane
    /// only (see [`Pipeline::halt_lane`]).
    lanes: bool,
    /// The tenants whose lane halted.
    halted_lanes: std::collections::BTreeSet<String>,
    /// The position after the commit seen last, until its transaction is
    /// flushed; then the position after the last transaction done.
    seen: Option<Checkpoint>,
    done: Option<Checkpoint>,
    /// Where the stream's first transaction starts, until a commit says
    /// where the next one does (see [`Checkpointer::txn_start`]).
    stream_start: Option<Checkpoint>,
    /// Halted lanes whose handler was reloaded or resumed since the last
    /// transaction boundary.
    lanes_to_resume: std::collections::BTreeSet<String>,
    /// The config running (with the deployments applied since).
    plan: Plan,
    /// What each tenant took of the loop's time, once lanes may read on
    /// connections of their own (see [`lanes`]).
    fair: Option<lanes::Fairness>,
    /// Opens lanes on connections of their own.
    starter: Option<Box<dyn lanes::LaneStarter>>,
    /// The lanes reading on connections of their own.
    detached: std::collections::BTreeMap<String, lanes::Detached>,
    /// Set when this pipeline is one tenant's lane on its own connection.
    lane: Option<lanes::LaneMode>,
    /// Tenants that left the loop, whose lanes start on their own
    /// connection at the next boundary.
    leaving: std::collections::BTreeSet<String>,
    /// Where the stream's own counts go (transactions, lag, checkpoints):
    /// `registry`, but a registry apart for a lane's pipeline, whose
    /// stream the main one counts.
    stream_registry: Registry,
    /// Snapshot chunks to hand to handlers in the stream.
    snapshots: snapshot::Snapshots,
}

impl Pipeline {
    /// Loads every handler's module and opens every sink of `plan`.
    /// Counts in a registry of its own: see [`Pipeline::registry`].
    pub async fn new(plan: &Plan, runtime: HandlerRuntime) -> anyhow::Result<Pipeline> {
        Pipeline::build(plan, runtime, Registry::new(), None).await
    }

    /// The pipeline of tenant `run.tenant`'s lane on its own connection
    /// (see [`lanes`]): the handlers and sinks of `run.plan`, counted in
    /// `registry` (the main pipeline's), keeping the lane's position
    /// alone once a store is attached.
    pub async fn for_lane(
        run: lanes::LaneRun,
        runtime: HandlerRuntime,
        registry: Registry,
    ) -> anyhow::Result<Pipeline> {
        let lanes::LaneRun {
            tenant,
            plan,
            place,
            link,
            cpu_share,
            gates,
        } = run;
        let mut p = Pipeline::build(&plan, runtime, registry, Some(lanes::LaneMode::new(link, cpu_share))).await?;
        p.checkpointer.own_lane(&tenant, place);
        p.gates.extend(gates);
        // A failure halts this pipeline: the main one halts the lane.
        p.lanes = false;
        Ok(p)
    }

    async fn build(
        plan: &Plan,
        runtime: HandlerRuntime,
        registry: Registry,
        lane: Option<lanes::LaneMode>,
    ) -> anyhow::Result<Pipeline> {
        // Sinks first: what a handler may emit depends on their limits.
        let delivery = Delivery::open(plan, &registry).await?;
        let mut handlers = Handlers::new(runtime);
        handlers.tenant_breakers(plan, &registry);
        let mut router = Router::counting(&registry);
        let mut holds = Holds::default();
        let rates = dispatch::emit_rates(plan);
        for h in &plan.handlers {
            let grants = grants_of(plan, h, |sink| delivery.limits(sink), rates.get(&h.tenant).cloned());
            let id = handlers.add(h, grants, &registry)?;
            holds.add(id.clone(), h, &registry);
            router.add(
                id,
                Subscription {
                    tables: h.tables.clone(),
                    ops: h.ops,
                },
            );
        }
        // A lane's pipeline counts its handlers and sinks with the main
        // one's, and the stream's totals apart: the stream is the main one's.
        let stream_registry = if lane.is_some() {
            Registry::new()
        } else {
            registry.clone()
        };
        let counters = PipelineCounters {
            transactions: stream_registry.counter(names::TRANSACTIONS, "Transactions whose commit was seen.", vec![]),
            checkpoints: stream_registry.counter(names::CHECKPOINTS, "Batches committed to the store.", vec![]),
            lag: Arc::default(),
            checkpointed_at: Arc::default(),
        };
        let lag = counters.lag.clone();
        stream_registry.computed_gauge(
            names::SOURCE_LAG_SECONDS,
            "Now minus the binlog timestamp of the last transaction handled, in seconds; 0 when caught up and idle.",
            vec![],
            Arc::new(move || lag.lag_seconds()),
        );
        let mut checkpointer = Checkpointer::new(plan.state.commit_interval);
        // Every tenant has a position of its own (lanes a restart finds
        // apart are kept apart, whatever the config says now); only
        // declared tenants halt apart.
        let labels = plan.handlers.iter().map(|h| h.tenant.clone());
        checkpointer.lanes(plan.tenants.keys().cloned().chain(labels));
        Ok(Pipeline {
            handlers,
            router,
            delivery,
            checkpointer,
            directories: DirectoryCache::default(),
            encoded: Vec::new(),
            emitted: Vec::new(),
            commit_seen: false,
            holds,
            halted: None,
            registry,
            counters,
            reloader: None,
            io: None,
            status_timer: None,
            live_status: None,
            control: None,
            in_transaction: false,
            rates,
            deployments: None,
            gates: Default::default(),
            lanes: !plan.tenants.is_empty(),
            halted_lanes: Default::default(),
            seen: None,
            done: None,
            stream_start: None,
            lanes_to_resume: Default::default(),
            plan: plan.clone(),
            fair: None,
            starter: None,
            detached: Default::default(),
            lane,
            leaving: Default::default(),
            snapshots: snapshot::Snapshots::new(&stream_registry),
            stream_registry,
        })
    }

    /// Leaves held changes in the binlog, read again through `starter` when
    /// they are handed over (see [`reread`]): for a source that can start
    /// again at a held place.
    pub fn reread_with(&mut self, starter: Arc<dyn reread::RereadStarter>) {
        self.holds.reread_with(starter);
    }

    /// Keeps handler state and the resume position in `store`: loads every
    /// handler's state from it and returns the position to resume at.
    pub fn attach_store(&mut self, mut store: StateStore) -> anyhow::Result<Option<Checkpoint>> {
        let moved = store.key_by_tenant(|name| self.handlers.find(name).map(|id| id.tenant().to_owned()))?;
        if moved > 0 {
            tracing::info!(
                "{moved} entries of handler state and held changes are now kept under their handler's tenant"
            );
        }
        self.handlers.load_state(|id| store.load_state(id.key()))?;
        let dir = store.held_dir();
        let mut ranges = store.held_ranges()?;
        let mut legacy = store.legacy_held()?;
        for id in self.handlers.ids().to_vec() {
            let range = ranges.remove(id.key()).unwrap_or_default();
            self.holds.open_file(&id, &dir, range)?;
            if let Some(changes) = legacy.remove(id.key())
                && let Some(range) = self.holds.adopt(&id, &changes)?
            {
                store.adopt_held(id.key(), range)?;
            }
            let (n, _) = self.holds.size(&id);
            if n > 0 {
                self.handlers.trial_first(&id);
                tracing::info!(handler = %id, "{n} changes held in an earlier run go to the handler, in order, once a trial with the oldest succeeds");
            }
        }
        // A lane's pipeline has its tenant's handlers only.
        if self.lane.is_some() {
            ranges.clear();
            legacy.clear();
        }
        let unconfigured = (ranges.into_iter())
            .map(|(key, r)| (key, r.count))
            .chain(legacy.into_iter().map(|(key, c)| (key, c.len() as u64)));
        for (key, n) in unconfigured {
            tracing::warn!(
                handler = %key,
                "{n} changes held for handler `{key}`, which is no longer configured, stay in the store"
            );
        }
        self.delivery.attach_ledger(&store.ledger());
        let position = self.checkpointer.attach(store)?;
        self.done = position.clone();
        // Tenants whose lane is past where the stream resumes (another
        // lane halted behind it) take nothing they already have.
        for (tenant, at) in self.checkpointer.lanes_ahead().clone() {
            let gate = at.at();
            for id in self.handlers.ids().iter().filter(|id| id.tenant() == tenant) {
                self.gates.insert(id.clone(), gate);
            }
            tracing::info!(
                tenant = %tenant, file = %at.file, pos = at.pos,
                "the tenant's lane is past where the stream resumes (another tenant's lane halted behind it): it takes the transactions after its own position"
            );
        }
        let at = self.counters.checkpointed_at.clone();
        at.store(unix_now(), Ordering::Relaxed);
        self.stream_registry.computed_gauge(
            names::CHECKPOINT_AGE,
            "Seconds since the last checkpoint was committed to the store (or since it was opened).",
            vec![],
            Arc::new(move || unix_now().saturating_sub(at.load(Ordering::Relaxed)) as f64),
        );
        // The checkpoint makes sink writes durable before it moves.
        self.delivery.defer_durability();
        Ok(position)
    }

    /// Commits the batch of acknowledged transactions to the store now,
    /// once every sink made what it acknowledged durable (group commit: one
    /// fsync per file sink for the whole batch).
    pub async fn checkpoint(&mut self) -> anyhow::Result<()> {
        if self.checkpointer.pending() {
            self.delivery.make_durable().await?;
            self.holds.sync()?;
        }
        if self.checkpointer.commit()? {
            self.holds.committed()?;
            self.counters.checkpoints.inc();
            self.counters.checkpointed_at.store(unix_now(), Ordering::Relaxed);
            self.write_status();
        }
        Ok(())
    }

    /// Asks every sink for its health (see [`Delivery::check_health`]): the
    /// live loop calls this about once a second.
    pub async fn check_sinks(&mut self) {
        self.delivery.check_health().await;
    }

    /// Counts the live source's reconnects and rotations in the pipeline's
    /// registry, so the status file and `/metrics` show them.
    pub fn attach_source(&mut self, stats: Arc<SourceStats>) {
        stats.register(&self.registry);
    }

    /// The registry the pipeline, its handlers, sinks and attached source
    /// count in; readable from any thread.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Rewrites the status file beside the store (see [`crate::status`]):
    /// position, state sizes, dead letters and the metrics of the registry;
    /// and publishes the same report to the [`LiveStatus`] slot, if one is
    /// attached (also without a store). A failure to write is logged:
    /// status is advisory.
    pub fn write_status(&mut self) {
        // The main pipeline reports for a lane on its own connection.
        if self.lane.is_some() {
            return;
        }
        let store = self
            .checkpointer
            .store()
            .map(|s| (s.path().to_owned(), s.dead_letter_total()));
        if store.is_none() && self.live_status.is_none() {
            return;
        }
        let metrics = self.registry.snapshot();
        let now = Some(unix_now());
        let report = crate::status::Report {
            store: store.as_ref().map(|(p, _)| p.clone()).unwrap_or_default(),
            position: self.checkpointer.resume().cloned(),
            lanes: self.checkpointer.stored_lanes().clone(),
            lanes_apart: self.checkpointer.detached_lanes(),
            snapshot: Some(self.snapshots.progress().clone()).filter(|p| !p.is_empty()),
            handlers: self
                .handlers
                .state_sizes()
                .into_iter()
                .map(|(id, keys, bytes)| {
                    let (held, held_bytes) = self.holds.size(&id);
                    crate::status::HandlerState {
                        last_error: self.handlers.last_error(&id).cloned(),
                        tenant: id.tenant().to_owned(),
                        name: id.name().to_owned(),
                        keys,
                        bytes,
                        held,
                        held_bytes,
                        held_where: self.holds.place(&id),
                    }
                })
                .collect(),
            dead_letters: store.as_ref().map_or(0, |(_, n)| *n),
            live_status_written_at: now,
            metrics_written_at: now,
            server: None,
            stats: Some(Stats::from_snapshot(&metrics)),
            source: SourceStats::from_snapshot(&metrics),
            handler_metrics: crate::status::HandlerMetrics::from_snapshot(&metrics),
            sinks: crate::status::SinkMetrics::from_snapshot(&metrics),
            cluster: None,
        };
        if let Some(live) = &self.live_status {
            live.publish(&report);
        }
        let Some((path, _)) = store else { return };
        let dir = path.parent().unwrap_or(std::path::Path::new("."));
        if let Err(e) = crate::status::write_status(dir, &report) {
            tracing::warn!("writing {}: {e}", dir.join(crate::status::STATUS_FILE).display());
        }
    }

    /// Publishes every status report to `slot` as well (see
    /// [`Pipeline::write_status`]), for readers on other threads.
    pub fn publish_status(&mut self, slot: LiveStatus) {
        self.live_status = Some(slot);
    }

    /// Takes commands from other threads (the admin API) through the
    /// returned sender, at transaction boundaries and on the status timer
    /// (so within about a second while the stream is idle, if
    /// [`Pipeline::write_status_every`] set one).
    pub fn accept_control(&mut self) -> control::ControlSender {
        let (tx, rx) = control::channel();
        self.control = Some(rx);
        tx
    }

    /// Answers the commands waiting (call at a transaction boundary).
    fn apply_control(&mut self) {
        let Some(rx) = &self.control else { return };
        let waiting: Vec<Control> = rx.try_iter().collect();
        for command in waiting {
            match command {
                Control::Pause { handler, reply } | Control::Resume { handler, reply }
                    if self.handlers.find(&handler).is_none() =>
                {
                    let _ = reply.send(Err(self.no_handler(handler)));
                }
                Control::Pause { handler, reply } => {
                    let id = self.handlers.find(&handler).expect("found above");
                    self.pause(&id);
                    let _ = reply.send(Ok(self.paused_answer(&id)));
                }
                Control::Resume { handler, reply } => {
                    let id = self.handlers.find(&handler).expect("found above");
                    self.resume(&id);
                    if self.halted_lanes.contains(id.tenant()) {
                        self.lanes_to_resume.insert(id.tenant().to_owned());
                    }
                    let _ = reply.send(Ok(self.paused_answer(&id)));
                }
                Control::Reload { handler, reply } => {
                    let result = match self.handlers.find(&handler) {
                        None => Err(self.no_handler(handler)),
                        Some(id) => self
                            .handlers
                            .reload_now(&id)
                            .map(|module| Reloaded {
                                handler: handler.clone(),
                                module,
                            })
                            .map_err(ControlError::Failed),
                    };
                    let _ = reply.send(result);
                }
                Control::State {
                    handler,
                    prefix,
                    limit,
                    reply,
                } => {
                    let found = self.handlers.find(&handler);
                    let result = match found.as_ref().and_then(|id| self.handlers.state_of(id)) {
                        None => Err(self.no_handler(handler)),
                        Some(state) => Ok(StatePage::of(&handler, state.iter(), state.bytes(), &prefix, limit)),
                    };
                    let _ = reply.send(result);
                }
                Control::Snapshot { table, filter, reply } => self.request_snapshot(&table, filter, reply),
            }
        }
    }

    /// Rewrites the status file every `every` as well as at checkpoints, so
    /// that it shows a live run's counters while no checkpoint is due.
    pub fn write_status_every(&mut self, every: Duration) {
        self.status_timer = Some((tokio::time::Instant::now() + every, every));
    }

    /// When the next timed work is due: a waiting checkpoint, the status
    /// file, or held changes a handler may take again.
    pub fn next_tick(&self) -> Option<tokio::time::Instant> {
        let checkpoint = self.checkpoint_due_in().map(|d| tokio::time::Instant::now() + d);
        [checkpoint, self.status_timer.map(|(at, _)| at), self.hand_over_due()]
            .into_iter()
            .flatten()
            .min()
    }

    /// When held changes can next be handed over, if any can: between
    /// transactions, to a handler not paused whose breaker is closed or
    /// whose cool-down ends.
    fn hand_over_due(&self) -> Option<tokio::time::Instant> {
        if !self.holds.any() || self.in_transaction {
            return None;
        }
        let now = std::time::Instant::now();
        let at = (self.holds.with_changes(false).iter())
            .filter_map(|id| {
                let callable = self.handlers.callable_at(id, now)?;
                // Held changes read back from the binlog: once read.
                Some(self.holds.read_due(id, now).map_or(callable, |read| read.max(callable)))
            })
            .min()?;
        Some(tokio::time::Instant::now() + at.saturating_duration_since(now))
    }

    /// Hands held changes over to the handlers that may take them again,
    /// oldest first, at most [`HAND_OVER_SLICE`] at a time: each is called
    /// as if the change had just come (the first after a suspension is its
    /// breaker's trial), what they emit is delivered and acknowledged, and
    /// then their state writes, dead letters and the changes' release
    /// join the store's batch. A change on which the handler fails again
    /// so that its breaker opens stays held, first in line; one it fails
    /// on otherwise goes to its `on_error`. Call only between transactions.
    fn hand_over_held(&mut self, rt: &tokio::runtime::Runtime, stop: &mut Stop) -> anyhow::Result<()> {
        if !self.holds.any() || self.in_transaction {
            return Ok(());
        }
        let now = std::time::Instant::now();
        let mut handed: Vec<(HandlerId, usize)> = Vec::new();
        let mut budget = HAND_OVER_SLICE;
        for id in self.holds.with_changes(false) {
            if !self.halted_lanes.is_empty() && self.halted_lanes.contains(id.tenant()) {
                continue;
            }
            let base = HELD_INDEX | (((self.handlers.place(&id) as u32) & 0x7fff) << 16);
            let mut n = 0;
            while budget > 0 && !self.delivery.full() {
                if self.handlers.callable_at(&id, now).is_none_or(|at| at > now) {
                    break;
                }
                let Some(held) = self.holds.get(&id, n)? else { break };
                match self.handlers.call(&id, &held.encoded, &mut self.emitted) {
                    Ok(()) => {
                        for (i, e) in self.emitted.drain(..).enumerate() {
                            let message = Message {
                                key: e.key,
                                payload: e.payload,
                                id: held.id.clone(),
                                index: base | (i as u32 & 0xffff),
                            };
                            self.delivery.push(&e.sink, message, id.clone());
                        }
                    }
                    Err(e) if e.is_interrupted() => return Err(Interrupted.into()),
                    // Suspended again: it stays first in line.
                    Err(e) if e.is_suspended() => break,
                    Err(e) if e.is_costly() && self.handlers.suspended(&id) => {
                        self.note_error(&id, held.id.clone(), e.kind(), &e);
                        break;
                    }
                    Err(e) => {
                        if self.handle_error(&id, Failed::Held(&held), &e, e.kind()) == Flow::Stop {
                            return Err(self.take_halt().expect("a stop is a halt"));
                        }
                        if self.halted_lanes.contains(id.tenant()) {
                            // Its lane halted: what it handed over in this
                            // slice was undone, and stays held.
                            n = 0;
                            break;
                        }
                    }
                }
                n += 1;
                budget -= 1;
            }
            if n > 0 {
                handed.push((id, n));
            }
        }
        if !self.halted_lanes.is_empty() {
            handed.retain(|(id, _)| !self.halted_lanes.contains(id.tenant()));
        }
        if handed.is_empty() {
            return Ok(());
        }
        rt.block_on(async {
            tokio::select! {
                r = self.finish_hand_over(handed) => r,
                () = stop.requested_wait() => Err(Interrupted.into()),
            }
        })
    }

    /// Delivers what the handed-over changes emitted, then records them as
    /// handed over (see [`Pipeline::hand_over_held`]).
    async fn finish_hand_over(&mut self, handed: Vec<(HandlerId, usize)>) -> anyhow::Result<()> {
        for refused in self.delivery.flush().await? {
            self.sink_refused(refused).await?;
        }
        let checkpointer = &mut self.checkpointer;
        self.handlers
            .commit_state(|id, writes| checkpointer.state_writes(id.key(), writes));
        let mut ranges = Vec::new();
        for (id, n) in handed {
            // A lane that halted on a refused message keeps its changes held.
            if self.halted_lanes.contains(id.tenant()) {
                continue;
            }
            ranges.extend(self.holds.release(&id, n).map(|r| (id.key().to_owned(), r)));
        }
        if self.checkpointer.handed_over(ranges) {
            self.checkpoint().await?;
        }
        Ok(())
    }

    /// Holds `change` for handler `id`, or, if its held changes fill
    /// `breaker.hold_mb`, applies its `on_error` to it.
    fn hold(&mut self, id: &HandlerId, change: &RowChange<'_>) -> Flow {
        let mut json = Vec::new();
        if self.handlers.dead_letters(id) && change.write_json(&mut json).is_err() {
            json.clear();
        }
        // A snapshot row is not in the binlog, to be read from there again.
        let from = (change.op != crate::decode::rows::Op::Snapshot)
            .then(|| self.checkpointer.txn_start().or(self.stream_start.as_ref()))
            .flatten();
        match self.holds.push(id, change.id(), json, &self.encoded, from) {
            Ok(Ok(())) => Flow::Continue,
            Err(e) => {
                self.halted = Some(e.context(format!("holding a change of handler `{id}`")));
                Flow::Stop
            }
            Ok(Err(full)) => {
                let why = format!(
                    "the handler's held changes fill breaker.hold_mb ({} MiB): the change was not held",
                    full.room >> 20
                );
                if full.first {
                    tracing::warn!(handler = %id.name(), "{why}; further changes go to its on_error until the held ones are handed over");
                }
                self.handle_error(id, Failed::Change(change), &why, ErrorKind::Suspended)
            }
        }
    }

    /// Stops calling handler `id`: its changes are held, and the
    /// checkpoint does not pass them, until [`Pipeline::resume`]. Returns
    /// whether `id` is a handler.
    pub fn pause(&mut self, id: &HandlerId) -> bool {
        let known = self.holds.pause(id);
        if known {
            tracing::info!(handler = %id.name(), "handler paused: its changes are held until it is resumed");
        }
        known
    }

    /// Lets paused handler `id` take its held changes and new ones again.
    pub fn resume(&mut self, id: &HandlerId) -> bool {
        let (held, _) = self.holds.size(id);
        let known = self.holds.resume(id);
        if known {
            tracing::info!(handler = %id.name(), "handler resumed: {held} held changes are handed over first");
        }
        known
    }

    /// Whether `id` is paused, and what is held for it.
    fn paused_answer(&self, id: &HandlerId) -> Paused {
        Paused {
            handler: id.name().to_owned(),
            paused: self.holds.paused(id),
            held: self.holds.size(id).0,
        }
    }

    /// Without a store, held changes cannot outlive the run: at its end,
    /// each goes to its handler's `on_error` (dead letters are delivered).
    async fn release_unkept(&mut self) -> anyhow::Result<()> {
        if self.checkpointer.keeps() || !self.holds.any() {
            return Ok(());
        }
        for id in self.holds.with_changes(true) {
            let (n, _) = self.holds.size(&id);
            for i in 0..n as usize {
                let Some(held) = self.holds.get(&id, i)? else { break };
                let why = "the run ended while the change was held, and no store keeps held changes";
                if self.handle_error(&id, Failed::Held(&held), &why, ErrorKind::Suspended) == Flow::Stop {
                    return Err(self.take_halt().expect("a stop is a halt"));
                }
            }
            self.holds.release(&id, n as usize);
            tracing::warn!(handler = %id.name(), "{n} held changes went to the handler's on_error: the run ended and no store keeps them");
        }
        for refused in self.delivery.flush().await? {
            self.sink_refused(refused).await?;
        }
        Ok(())
    }

    /// Does the timed work that is due: the checkpoint, the sinks' health
    /// (their housekeeping, such as an interval fsync), the status file.
    pub async fn tick(&mut self) -> anyhow::Result<()> {
        if self.checkpoint_due_in().is_some_and(|d| d.is_zero()) {
            self.checkpoint().await?;
        }
        if let Some((at, every)) = self.status_timer
            && at <= tokio::time::Instant::now()
        {
            // Also when the stream is idle: an interval fsync is due
            // whether or not another batch comes.
            self.check_sinks().await;
            self.write_status();
            if !self.in_transaction {
                self.apply_control();
            }
            self.status_timer = Some((tokio::time::Instant::now() + every, every));
        }
        Ok(())
    }

    /// Whether acknowledged transactions wait for a checkpoint.
    pub fn checkpoint_pending(&self) -> bool {
        self.checkpointer.pending()
    }

    /// Time until the waiting batch is due (zero if it is), `None` if none waits.
    pub fn checkpoint_due_in(&self) -> Option<Duration> {
        self.checkpointer.due_in()
    }

    /// Watches every handler's module file and swaps a changed one in at
    /// the next transaction boundary (see [`crate::runtime::reload`]).
    pub fn watch_modules(&mut self) -> anyhow::Result<()> {
        self.reloader = Some(Reloader::watch(self.handlers.runtime(), &self.handlers.modules())?);
        Ok(())
    }

    /// Swaps in modules that changed and compiled, and reports those that
    /// did not. Call only at a transaction boundary, after the flush: the
    /// new instance takes over the handler's committed state.
    pub fn apply_reloads(&mut self) {
        let Some(reloader) = &self.reloader else { return };
        while let Some(outcome) = reloader.try_next() {
            match outcome {
                Reload::Ready { handlers, module } => {
                    self.handlers.reloaded(&handlers, &module);
                    // A new version of a halted lane's handler lets the lane go on.
                    for id in handlers.iter().filter(|id| self.halted_lanes.contains(id.tenant())) {
                        self.lanes_to_resume.insert(id.tenant().to_owned());
                    }
                }
                Reload::Failed { handlers, error } => self.handlers.reload_failed(&handlers, &error),
            }
        }
    }

    /// The decoder table filter: the union of all handlers' subscriptions,
    /// and with `[deploy]`, of every tenant's tables (a handler deployed
    /// while running may subscribe to any of them).
    pub fn table_filter(plan: &Plan) -> TableFilter {
        let deployable = (plan.deploy.is_some())
            .then(|| plan.tenants.values().flat_map(|t| t.tables.iter()))
            .into_iter()
            .flatten();
        router::table_filter(plan.handlers.iter().flat_map(|h| h.tables.iter()).chain(deployable))
    }

    /// Takes deployments through the returned sender and applies each at
    /// the next transaction boundary (see [`crate::deploy`]).
    pub fn accept_deployments(&mut self) -> std::sync::mpsc::Sender<crate::deploy::Deployment> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.deployments = Some(rx);
        tx
    }

    /// Applies the deployments waiting (call at a transaction boundary),
    /// answering each.
    fn apply_deployments(&mut self, rt: &tokio::runtime::Runtime) {
        let Some(rx) = &self.deployments else { return };
        let waiting: Vec<crate::deploy::Deployment> = rx.try_iter().collect();
        for d in waiting {
            // A lane on its own connection stops where it is for the
            // deployment, and goes on there with the handlers it leaves.
            let recalled = self.recall_lane(&d.tenant);
            let result = self.deploy(rt, &d);
            if recalled {
                self.resume_lane(rt, &d.tenant);
            }
            if let Err(e) = &result {
                tracing::error!(tenant = %d.tenant, "deployment refused, nothing running changed: {e}");
            }
            let _ = d.reply.send(result);
        }
    }

    /// Adds, changes and removes the handlers of deployment `d`: every new
    /// instance is created first, so a failure changes nothing. A changed
    /// handler keeps its place, state and held changes; a new one starts
    /// with what the store keeps for it (the state of a handler of that
    /// name removed earlier); a removed one's state and held changes stay
    /// in the store.
    fn deploy(&mut self, rt: &tokio::runtime::Runtime, d: &crate::deploy::Deployment) -> Result<(), String> {
        // The store is brought up to date first: new handlers read it.
        rt.block_on(self.checkpoint())
            .map_err(|e| format!("committing the checkpoint before deploying: {e:#}"))?;
        let mut ready = Vec::with_capacity(d.put.len());
        for p in &d.put {
            let h = &p.plan;
            let id = HandlerId::new(&h.tenant, &h.name);
            let grants = grants_of(
                &d.plan,
                h,
                |s| self.delivery.limits(s),
                self.rates.get(&h.tenant).cloned(),
            );
            let prepared = (self.handlers)
                .prepare(h, p.module.clone(), grants, &self.registry)
                .map_err(|e| format!("handler `{}`: {e:#}", h.name))?;
            let fresh = !self.handlers.contains(&id);
            let (state, range) = match self.checkpointer.store() {
                Some(store) if fresh => (
                    store.load_state(id.key()).map_err(|e| format!("{e:#}"))?,
                    store.held_ranges().map_err(|e| format!("{e:#}"))?.remove(id.key()),
                ),
                _ => Default::default(),
            };
            ready.push((id, prepared, state, range));
        }
        for id in &d.remove {
            self.handlers.remove(id);
            self.router.remove(id);
            self.holds.remove(id);
            self.gates.remove(id);
        }
        self.plan = (*d.plan).clone();
        for ((id, prepared, state, range), p) in ready.into_iter().zip(&d.put) {
            self.put_prepared(&id, &p.plan, prepared, state, range);
            // A new handler starts at its tenant's lane, which may be past
            // the stream after a restart; `start = "latest"` may be further.
            let lane = (self.checkpointer.lanes_ahead().get(id.tenant())).map(Checkpoint::at);
            let latest = p.gate.as_ref().map(|(file, pos)| binlog_at(file, *pos));
            if let Some(gate) = lane.into_iter().chain(latest).max() {
                self.gates.insert(id.clone(), gate);
            }
            if self.halted_lanes.contains(id.tenant()) {
                tracing::info!(handler = %id, module = %p.module.path(), "handler deployed: its tenant's lane is halted, and it takes changes once the lane resumes");
            } else {
                tracing::info!(handler = %id, module = %p.module.path(), "handler deployed: it takes the next transaction");
            }
        }
        for id in &d.remove {
            tracing::info!(handler = %id, "handler removed: its state stays in the store until `rowhook state reset`");
        }
        self.write_status();
        Ok(())
    }

    /// Puts handler `id` of `h`, prepared, in: with `state` and the held
    /// changes in `range` if it is new, in its place otherwise.
    fn put_prepared(
        &mut self,
        id: &HandlerId,
        h: &crate::config::HandlerPlan,
        prepared: dispatch::Prepared,
        state: std::collections::HashMap<String, Vec<u8>>,
        range: Option<crate::store::HeldRange>,
    ) {
        if self.holds.has(id) {
            self.holds.changed(id, h);
        } else {
            self.holds.add(id.clone(), h, &self.registry);
            if let Some(dir) = self.checkpointer.store().map(StateStore::held_dir)
                && let Err(e) = self.holds.open_file(id, &dir, range.unwrap_or_default())
            {
                tracing::error!(handler = %id, "its held changes cannot be read: {e:#}");
            }
        }
        self.handlers.put(id, prepared, state);
        if self.holds.size(id).0 > 0 {
            self.handlers.trial_first(id);
        }
        self.router.add(
            id.clone(),
            Subscription {
                tables: h.tables.clone(),
                ops: h.ops,
            },
        );
    }

    /// Creates handler `h`'s instance of `module` and puts it in, with its
    /// state and held changes from the store.
    fn install(&mut self, h: &crate::config::HandlerPlan, module: crate::runtime::Module) -> anyhow::Result<()> {
        let id = HandlerId::new(&h.tenant, &h.name);
        let grants = grants_of(
            &self.plan,
            h,
            |s| self.delivery.limits(s),
            self.rates.get(&h.tenant).cloned(),
        );
        let prepared = self.handlers.prepare(h, module, grants, &self.registry)?;
        let (state, range) = match self.checkpointer.store() {
            Some(store) => (store.load_state(id.key())?, store.held_ranges()?.remove(id.key())),
            None => Default::default(),
        };
        self.put_prepared(&id, h, prepared, state, range);
        Ok(())
    }

    /// The totals so far, read from the registry.
    pub fn stats(&self) -> Stats {
        Stats::from_snapshot(&self.registry.snapshot())
    }

    /// Whether the decoder should stop: a handler failed under `halt`.
    pub fn take_halt(&mut self) -> Option<anyhow::Error> {
        self.halted.take()
    }

    /// Lets the pipeline flush a full buffer as soon as it is full, in the
    /// middle of a rows event, on `rt` (giving way to `stop`). Without it,
    /// the buffer is flushed between events only, and one event of many
    /// rows can buffer what every row emits. `run` and `replay` call it;
    /// the decoder must then be fed outside `rt`, as the driver does.
    pub fn flush_inside_events(&mut self, rt: Arc<tokio::runtime::Runtime>, stop: Stop) {
        self.io = Some((rt, stop));
    }

    /// Flushes a full buffer now, if the pipeline may (see
    /// [`Pipeline::flush_inside_events`]); `false` (with the reason kept
    /// for [`Pipeline::take_halt`]) if the flush failed or was interrupted.
    fn flush_full_buffer(&mut self) -> bool {
        if !self.delivery.full() || tokio::runtime::Handle::try_current().is_ok() {
            return true;
        }
        let Some((rt, mut stop)) = self.io.clone() else {
            return true;
        };
        let flushed = rt.block_on(async {
            tokio::select! {
                r = self.flush() => r,
                () = stop.requested_wait() => Err(Interrupted.into()),
            }
        });
        match flushed {
            Ok(()) => true,
            Err(e) => {
                self.halted = Some(e);
                false
            }
        }
    }

    /// Whether a flush is due: a commit was seen, or the buffer is large.
    pub fn flush_due(&self) -> bool {
        self.commit_seen || self.delivery.full()
    }

    /// Writes buffered messages to their sinks; at a commit, then commits the
    /// handlers' state. Retries unavailable sinks with capped backoff.
    pub async fn flush(&mut self) -> anyhow::Result<()> {
        for refused in self.delivery.flush().await? {
            self.sink_refused(refused).await?;
        }
        if self.commit_seen {
            if let Some(done) = self.seen.take() {
                self.done = Some(done);
            }
            let checkpointer = &mut self.checkpointer;
            self.handlers
                .commit_state(|id, writes| checkpointer.state_writes(id.key(), writes));
            let ranges = self.holds.end_transaction();
            self.checkpointer
                .held_ranges(ranges.into_iter().map(|(id, r)| (id.key().to_owned(), r)));
            self.in_transaction = false;
            if self.checkpointer.end_transaction() {
                self.checkpoint().await?;
            }
            self.commit_seen = false;
        }
        Ok(())
    }

    /// A sink refused messages beyond its retries: each message's handler's
    /// `on_error` decides (halt: the error; skip: dropped, logged and
    /// counted; dead-letter: to its dead-letter sink, which must take it).
    async fn sink_refused(&mut self, refused: Refused) -> anyhow::Result<()> {
        let Refused {
            sink,
            messages,
            origins,
            error,
        } = refused;
        let mut letters: std::collections::BTreeMap<String, Vec<Message>> = Default::default();
        // Each tenant whose messages the sink refused: one failure of its breaker.
        let tenants: std::collections::BTreeSet<&str> = origins.iter().map(HandlerId::tenant).collect();
        for tenant in tenants {
            if !self.halted_lanes.contains(tenant) {
                self.handlers.tenant_sink_failed(tenant, &sink);
            }
        }
        for (msg, origin) in messages.into_iter().zip(&origins) {
            if !self.halted_lanes.is_empty() && self.halted_lanes.contains(origin.tenant()) {
                continue;
            }
            match dead_letter::sink_refused(origin, self.handlers.on_error(origin), &sink, msg, &error) {
                Decision::Halt(e) => {
                    self.handlers.mark_halted(origin);
                    if !self.halt_lane(origin.tenant(), &e) {
                        return Err(e);
                    }
                }
                Decision::Skip => self.delivery.count_refused(&sink, 1),
                Decision::DeadLetter {
                    sink: dl,
                    letter,
                    record,
                } => {
                    self.delivery.count_refused(&sink, 1);
                    self.handlers.count_dead_letter(origin);
                    self.checkpointer.dead_letter(record);
                    letters.entry(dl).or_default().push(letter);
                }
            }
        }
        for (dl, batch) in letters {
            self.delivery
                .deliver(&dl, &batch)
                .await
                .map_err(|e| anyhow::anyhow!("dead-letter sink `{dl}` refused too: {e}"))?;
        }
        Ok(())
    }

    /// Drops the transaction in progress: its stream was cut before its
    /// commit, and the new stream sends it again from its first change.
    /// Its buffered messages are dropped (they will be emitted again, with
    /// the same ids) and its state writes undone.
    pub fn abandon_transaction(&mut self) {
        self.delivery.clear();
        self.commit_seen = false;
        self.in_transaction = false;
        if let Err(e) = self.holds.abandon_transaction() {
            self.halted.get_or_insert(e);
        }
        self.checkpointer.abandon_transaction();
        self.handlers.abandon_transaction();
    }

    /// Closes every sink (making delivered messages durable), then commits
    /// the waiting batch to the store. Messages of a transaction whose
    /// commit was not seen are not sent, and its state writes not kept.
    pub async fn close(&mut self) -> anyhow::Result<()> {
        // Lanes on their own connection commit where they are first: the
        // position this one commits resumes no later than theirs.
        self.stop_lanes();
        self.release_unkept().await?;
        self.delivery.close().await?;
        self.checkpoint().await?;
        // The run's last counts, also when no checkpoint was due.
        self.write_status();
        Ok(())
    }

    /// Applies handler `id`'s `on_error` to its failure on `failed`. A
    /// skipped failure is logged, but not each change of a suspended
    /// handler: its suspension was logged, and they are counted.
    fn handle_error(
        &mut self,
        id: &HandlerId,
        failed: Failed<'_, '_>,
        err: &dyn std::fmt::Display,
        kind: ErrorKind,
    ) -> Flow {
        if kind != ErrorKind::Suspended {
            self.note_error(id, failed.id(), kind, err);
        }
        match dead_letter::handler_failed(id, self.handlers.on_error(id), failed, err) {
            Decision::Halt(e) => {
                self.handlers.mark_halted(id);
                if self.halt_lane(id.tenant(), &e) {
                    return Flow::Continue;
                }
                self.halted = Some(e);
                Flow::Stop
            }
            Decision::Skip => {
                self.handlers.count_error(id, kind);
                // A suspended handler's suspension was logged; its changes
                // are counted.
                let quiet = kind == ErrorKind::Suspended;
                if !quiet {
                    tracing::warn!(handler = %id.name(), change = %failed.id(), "handler failed, event skipped (on_error = \"skip\"): {err}");
                }
                Flow::Continue
            }
            Decision::DeadLetter { sink, letter, record } => {
                self.handlers.count_error(id, kind);
                self.handlers.count_dead_letter(id);
                self.checkpointer.dead_letter(record);
                self.delivery.push(&sink, letter, id.clone());
                Flow::Continue
            }
        }
    }

    /// With tenants declared, a halt stops its tenant's lane only: the
    /// tenant's handlers take no more changes, their part of the
    /// transaction in progress is undone (its state writes and buffered
    /// messages), and the store keeps the position after the tenant's last
    /// transaction done as its lane's, where a restart resumes it while
    /// the others skip what they have. Returns `false` (the run halts) when
    /// tenants are not declared, nothing was done yet, or no other tenant
    /// would be left running.
    fn halt_lane(&mut self, tenant: &str, error: &anyhow::Error) -> bool {
        if !self.lanes || self.halted_lanes.contains(tenant) {
            return self.lanes && self.halted_lanes.contains(tenant);
        }
        let Some(done) = self.set_lane_aside(tenant) else {
            return false;
        };
        for id in self.handlers.ids().iter().filter(|id| id.tenant() == tenant) {
            self.handlers.mark_halted(id);
        }
        tracing::error!(
            tenant = %tenant, file = %done.file, pos = done.pos,
            "the tenant's lane halted: {error:#}. Its handlers take no more changes and the other tenants go on; its position stays where it was. Fix the handler (a new module file, or POST /admin/handlers/NAME/resume once its sink is back) or restart rowhook: the tenant catches up from its position"
        );
        true
    }

    /// Takes `tenant`'s lane out of the loop (a halt, or a lane leaving for
    /// a connection of its own): its handlers take no more changes, their
    /// part of the transaction in progress is undone, and the store keeps
    /// the position after its last transaction done, which this returns.
    /// `None` (nothing done) when nothing was done yet or no other tenant
    /// would be left running.
    fn set_lane_aside(&mut self, tenant: &str) -> Option<Checkpoint> {
        let done = self.done.clone()?;
        let others =
            (self.handlers.ids().iter()).any(|h| h.tenant() != tenant && !self.halted_lanes.contains(h.tenant()));
        if !others {
            return None;
        }
        self.halted_lanes.insert(tenant.to_owned());
        self.checkpointer.halt_lane(tenant, done.clone());
        self.handlers.abandon_tenant(tenant);
        // Its transaction comes again: what it held of it goes.
        if let Err(e) = self.holds.abandon_where(|id| id.tenant() == tenant) {
            self.halted.get_or_insert(e);
        }
        self.delivery.drop_from(|origin| origin.tenant() == tenant);
        Some(done)
    }

    /// Work on lanes due between transactions: the halted lanes asked for
    /// go on (see [`Pipeline::resume_lane`]), lanes on their own connection
    /// are answered, and the loop's time is shared out.
    fn tend_lanes(&mut self, rt: &tokio::runtime::Runtime, stop: &Stop) {
        if self.in_transaction || !self.lanes {
            return;
        }
        while let Some(tenant) = self.lanes_to_resume.pop_first() {
            self.resume_lane(rt, &tenant);
        }
        self.share_fairly();
        while let Some(tenant) = self.leaving.pop_first() {
            if let Some(from) = self.checkpointer.halted_at(&tenant).cloned() {
                self.detach_lane(rt, &tenant, from);
            }
        }
        self.poll_lanes(stop);
    }

    /// Keeps a failure as handler `id`'s latest, for the status report.
    fn note_error(&mut self, id: &HandlerId, change: String, kind: ErrorKind, err: &dyn std::fmt::Display) {
        let error = crate::status::LastError::new(unix_now(), change, kind.as_str(), &err.to_string());
        self.handlers.note_error(id, error);
    }

    /// Rows that cannot be decoded or encoded count as a failure of every
    /// handler subscribed to them: each one's `on_error` applies.
    fn fail_rows(&mut self, handlers: &[HandlerId], rows: &Undecodable<'_>) -> Flow {
        for id in handlers {
            if !self.halted_lanes.is_empty() && self.halted_lanes.contains(id.tenant()) {
                continue;
            }
            if self.handle_error(id, Failed::Rows(rows), rows, ErrorKind::Undecodable) == Flow::Stop {
                return Flow::Stop;
            }
        }
        Flow::Continue
    }
}

/// The pipeline is what the driver hands row changes to in `run` and `replay`.
impl Consumer for Pipeline {
    /// Flushes at commits and when the buffer is large; a flush waiting on a
    /// sink gives way to `stop` (with [`Interrupted`]). Reloads are applied
    /// between transactions.
    fn after_event(
        &mut self,
        rt: &tokio::runtime::Runtime,
        decoder: &crate::decode::Decoder,
        began: bool,
        stop: &mut Stop,
    ) -> anyhow::Result<()> {
        if let Some(e) = self.take_halt() {
            return Err(e);
        }
        if began && self.done.is_none() && self.fair.is_some() {
            // The first transaction of a run with no checkpoint: a lane
            // that leaves in the middle of it starts where it began.
            self.done = Checkpoint::resume_of(decoder);
        }
        if began && self.checkpointer.keeps() && self.checkpointer.txn_start().is_none() {
            // The stream's first transaction: where it starts, for changes
            // held in it.
            self.stream_start = Checkpoint::resume_of(decoder);
        }
        if let Some(f) = &mut self.fair {
            f.woke();
        }
        if self.flush_due() {
            rt.block_on(async {
                tokio::select! {
                    r = self.flush() => r,
                    () = stop.requested_wait() => Err(Interrupted.into()),
                }
            })?;
        }
        self.in_transaction = decoder.in_transaction();
        if !self.in_transaction {
            self.apply_reloads();
            self.apply_control();
            self.tend_lanes(rt, stop);
            self.apply_deployments(rt);
            self.hand_over_held(rt, stop)?;
            self.step_snapshot(rt, decoder, stop)?;
            if let Some(lane) = &mut self.lane {
                lane.check_join(self.done.as_ref())?;
                lane.keep_to_share(Some(stop));
            }
        }
        Ok(())
    }

    /// The source has nothing ready: the stream is caught up.
    fn idle(&mut self) -> anyhow::Result<()> {
        self.counters.lag.caught_up.store(true, Ordering::Relaxed);
        if let Some(f) = &mut self.fair {
            f.idle();
        }
        if let Some(lane) = &mut self.lane
            && !self.in_transaction
        {
            lane.check_join(self.done.as_ref())?;
            lane.idle(self.done.as_ref());
        }
        Ok(())
    }

    /// A handler that halted says why better than the decoder's error does.
    fn decode_failed(&mut self, e: crate::decode::DecodeError) -> anyhow::Error {
        self.take_halt().unwrap_or_else(|| e.into())
    }

    fn abandon_transaction(&mut self) {
        Pipeline::abandon_transaction(self);
    }

    fn next_tick(&self) -> Option<tokio::time::Instant> {
        let next = Pipeline::next_tick(self);
        // Lanes are looked after while the stream is idle too.
        let lanes = (self.lane.is_some() || !self.detached.is_empty()).then(|| tokio::time::Instant::now() + LANE_TICK);
        // A snapshot asked for while the stream is idle starts at once.
        let snapshot = self.snapshots.wants_step().then(tokio::time::Instant::now);
        next.into_iter().chain(lanes).chain(snapshot).min()
    }

    fn tick(&mut self, rt: &tokio::runtime::Runtime, decoder: &crate::decode::Decoder) -> anyhow::Result<()> {
        rt.block_on(Pipeline::tick(self))?;
        if self.in_transaction {
            return Ok(());
        }
        let mut stop = self.io.as_ref().map(|(_, stop)| stop.clone()).unwrap_or_default();
        if let Some(lane) = &mut self.lane {
            // A tick comes while the server has nothing more.
            lane.check_join(self.done.as_ref())?;
            lane.idle(self.done.as_ref());
        }
        // Between transactions, also while the stream is idle: a new
        // version of a suspended handler takes its held changes.
        self.apply_reloads();
        self.tend_lanes(rt, &stop);
        self.apply_deployments(rt);
        let stepped = self
            .hand_over_held(rt, &mut stop)
            .and_then(|()| self.step_snapshot(rt, decoder, &mut stop));
        match stepped {
            // The driver sees the stop request next; the changes stay held,
            // the chunk is read again at the next start.
            Err(e) if e.is::<Interrupted>() => {
                Pipeline::abandon_transaction(self);
                Ok(())
            }
            r => r,
        }
    }
}

impl ChangeVisitor for Pipeline {
    fn change(&mut self, change: &RowChange<'_>) -> Flow {
        let t = &change.table;
        let targets = self.router.route(t.table_id, &t.db, &t.table, change.op);
        if targets.is_empty() {
            return Flow::Continue;
        }
        self.in_transaction = true;
        if let Err(e) = self.directories.encode(change, &mut self.encoded) {
            let rows = Undecodable::of_change(change, &e.0);
            return self.fail_rows(&targets, &rows);
        }
        // The id is formatted once, and only for a change that emitted;
        // the last message takes it, the others a copy.
        let mut id: Option<String> = None;
        let mut index = 0u32;
        for (h, handler) in targets.iter().enumerate() {
            if !self.halted_lanes.is_empty() && self.halted_lanes.contains(handler.tenant()) {
                continue;
            }
            if !self.gates.is_empty()
                && let Some(gate) = self.gates.get(handler)
                && binlog_at(change.file, change.pos) < *gate
            {
                continue;
            }
            if self.holds.any() && self.holds.holding(handler) {
                if self.hold(handler, change) == Flow::Stop {
                    return Flow::Stop;
                }
                continue;
            }
            let called = self.handlers.call(handler, &self.encoded, &mut self.emitted);
            if let Some(lane) = &mut self.lane {
                lane.keep_to_share(self.io.as_ref().map(|(_, stop)| stop));
            }
            if self.fair.is_some() && self.charge(handler.tenant(), self.handlers.last_call()) {
                // Its lane left: what it emitted is not kept.
                self.emitted.clear();
                continue;
            }
            match called {
                Ok(()) => {
                    let last = self.emitted.len();
                    let last_handler = h + 1 == targets.len();
                    for (n, e) in self.emitted.drain(..).enumerate() {
                        let id = if last_handler && n + 1 == last {
                            id.take().unwrap_or_else(|| change.id())
                        } else {
                            id.get_or_insert_with(|| change.id()).clone()
                        };
                        let message = Message {
                            key: e.key,
                            payload: e.payload,
                            id,
                            index,
                        };
                        index += 1;
                        self.delivery.push(&e.sink, message, handler.clone());
                    }
                    // A rows event may hold thousands of rows: what they emit
                    // goes out as it fills the buffer.
                    if !self.flush_full_buffer() {
                        return Flow::Stop;
                    }
                }
                Err(err) if err.is_interrupted() => {
                    // rowhook is stopping: not the handler's failure, so no
                    // on_error; no further row is handed to a handler, and
                    // the transaction is abandoned and handled again at the
                    // next start.
                    self.halted = Some(Interrupted.into());
                    return Flow::Stop;
                }
                Err(err)
                    if self.handlers.holds_while_suspended(handler)
                        && (err.is_suspended() || (err.is_costly() && self.handlers.suspended(handler))) =>
                {
                    if !err.is_suspended() {
                        self.note_error(handler, change.id(), err.kind(), &err);
                    }
                    if self.hold(handler, change) == Flow::Stop {
                        return Flow::Stop;
                    }
                }
                Err(err) => {
                    if self.handle_error(handler, Failed::Change(change), &err, err.kind()) == Flow::Stop {
                        return Flow::Stop;
                    }
                }
            }
        }
        // The driver flushes between events once enough is buffered; one
        // rows event holds a bounded number of rows.
        Flow::Continue
    }

    fn table_map(&mut self, table: &TableMap) {
        // The id may now name other columns (a DDL, a restarted server).
        self.directories.forget(table.table_id);
    }

    fn undecodable(&mut self, rows: &Undecodable<'_>) -> Flow {
        self.in_transaction = true;
        let subscribed = self.router.subscribers(rows.db, rows.table, rows.op);
        self.fail_rows(&subscribed, rows)
    }

    fn commit(&mut self, commit: &Commit<'_>) -> Flow {
        let lanes = self.lanes || self.lane.is_some();
        if self.checkpointer.keeps() || lanes {
            let at = Checkpoint::after(commit);
            if lanes {
                self.seen = Some(at.clone());
            }
            self.checkpointer.commit_seen(at);
        }
        self.commit_seen = true;
        if !self.gates.is_empty() {
            let at = binlog_at(commit.file, commit.end);
            self.gates.retain(|_, gate| *gate > at);
            self.checkpointer.passed(at);
        }
        self.counters.transactions.inc();
        let lag = &self.counters.lag;
        lag.last_ts.store(u64::from(commit.ts), Ordering::Relaxed);
        if lag.caught_up.load(Ordering::Relaxed) {
            lag.caught_up.store(false, Ordering::Relaxed);
        }
        Flow::Continue
    }
}
