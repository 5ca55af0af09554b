//! The handler pipeline: route → call → buffer → forward → acknowledge.
//!
//! For each row change the host picks the handlers subscribed to its table
//! and operation (tables nobody subscribed to are not even decoded: the
//! decoder's table filter is the union of all subscriptions), encodes the
//! change once, and calls each handler in binlog order. What handlers emit
//! is buffered per transaction and written to the sinks when the
//! transaction's commit has been seen; inside a huge transaction it goes out
//! in bounded batches. Handler state writes commit only after every sink
//! acknowledged the transaction's messages.
//!
//! With a [`StateStore`] attached, committed transactions are gathered into a
//! batch (their state writes, dead letters, and the position after them)
//! that is committed to the store at most every `commit_interval`, always
//! after the sinks acknowledged every message of its transactions. A sink
//! that fails beyond its retries applies the `on_error` policy of each
//! handler whose messages it refused.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::backoff::Backoff;
use crate::config::{HandlerPlan, OnError, Plan};
use crate::decode::table_map::TableMap;
use crate::decode::txn::TableFilter;
use crate::decode::{ChangeVisitor, Commit, Flow, RowChange, Undecodable};
use crate::driver::{Consumer, Interrupted, Stop};
use crate::guest_abi::DirectoryCache;
use crate::runtime::reload::{Reload, Reloader};
use crate::runtime::{Grants, GuestMetrics, HandlerRuntime, Instance, Limits, Module, SinkRules};
use crate::sink::{AnySink, Message, Sink, SinkError, SinkRetry};
use crate::source::reconnect::SourceStats;
use crate::status::Stats;
use crate::store::{Batch, Checkpoint, DeadLetter, StateStore};
use crate::telemetry::{Counter, Registry, names};

/// Messages buffered before a flush inside a transaction.
const FLUSH_EVERY: usize = 4096;

/// One handler: its plan, compiled module and live instance.
struct HandlerSlot {
    plan: HandlerPlan,
    module: Module,
    instance: Instance,
    grants: Arc<Grants>,
    counters: HandlerCounters,
    /// Its series for what the guest's `metrics` calls write; each new
    /// instance (after a trap, a reload) writes to the same series.
    metrics: GuestMetrics,
}

/// What the pipeline counts per handler, labelled `tenant`, `handler`.
struct HandlerCounters {
    calls: Counter,
    errors: Counter,
    reloads: Counter,
    reload_failures: Counter,
}

impl HandlerCounters {
    fn new(registry: &Registry, h: &HandlerPlan) -> HandlerCounters {
        let labels = || vec![("tenant", h.tenant.clone()), ("handler", h.name.clone())];
        HandlerCounters {
            calls: registry.counter(names::HANDLER_CALLS, "Handler calls made.", labels()),
            errors: registry.counter(
                names::HANDLER_ERRORS,
                "Handler failures handled by on_error skip or dead-letter.",
                labels(),
            ),
            reloads: registry.counter(
                names::HANDLER_RELOADS,
                "Module versions swapped in by hot reload.",
                labels(),
            ),
            reload_failures: registry.counter(
                names::HANDLER_RELOAD_FAILURES,
                "Changed module files refused; the previous version kept serving.",
                labels(),
            ),
        }
    }
}

/// One sink, how its unavailable writes are retried, and what the
/// pipeline counts of it (labelled `sink`).
struct SinkSlot {
    sink: AnySink,
    retry: SinkRetry,
    /// What the last health check found wrong, to log changes only.
    unhealthy: Option<SinkError>,
    messages: Counter,
    retries: Counter,
    refused: Counter,
}

/// What the pipeline counts that belongs to no handler or sink.
struct PipelineCounters {
    changes: Counter,
    transactions: Counter,
    checkpoints: Counter,
}

/// The handlers (by index) a table's changes of one op go to; the names
/// guard against a table id reused for another table.
struct Route {
    db: Arc<str>,
    table: Arc<str>,
    handlers: Arc<[usize]>,
}

/// Runs the configured handlers over decoded row changes.
pub struct Pipeline {
    runtime: HandlerRuntime,
    handlers: Vec<HandlerSlot>,
    sinks: BTreeMap<String, SinkSlot>,
    /// Per sink: buffered messages, and the handler (index) each came from.
    pending: BTreeMap<String, (Vec<Message>, Vec<usize>)>,
    pending_count: usize,
    /// Per table id and op: which handlers (by index) subscribe.
    routes: HashMap<(u64, crate::decode::Op), Route>,
    /// Per table id: the column directory of the encoding handlers receive,
    /// laid out at the table's first routed change, not per row.
    directories: DirectoryCache,
    encoded: Vec<u8>,
    commit_seen: bool,
    halted: Option<anyhow::Error>,
    registry: Registry,
    counters: PipelineCounters,
    reloader: Option<Reloader>,
    store: Option<StateStore>,
    /// Committed transactions not yet in the store.
    batch: Batch,
    commit_interval: Duration,
    last_checkpoint: Instant,
    /// The position after the last commit seen, until its flush.
    pending_position: Option<Checkpoint>,
    /// The position last committed to the store.
    position: Option<Checkpoint>,
    /// Dead letters of the transaction in progress.
    txn_dead_letters: Vec<DeadLetter>,
    /// When the status file is rewritten next, and how often, if it is
    /// rewritten on a timer as well as at checkpoints.
    status_timer: Option<(tokio::time::Instant, Duration)>,
}

/// What a configured handler may emit to, with each sink's rules.
pub fn grants_of(plan: &Plan, h: &HandlerPlan) -> Arc<Grants> {
    Arc::new(Grants::new(h.grants.iter().map(|name| {
        let single_line = plan.sinks.get(name).is_some_and(|s| s.one_line_per_message());
        (name.to_owned(), SinkRules { single_line })
    })))
}

/// The runtime limits of a configured handler.
pub fn runtime_limits(plan: &HandlerPlan) -> Limits {
    Limits {
        memory_bytes: plan.limits.memory_mb as usize * (1 << 20),
        time_ms: plan.limits.time.as_millis().max(1) as u64,
        emits_per_event: plan.limits.emits_per_event,
        state_bytes: plan.limits.state_bytes(),
    }
}

impl Pipeline {
    /// Loads every handler's module and opens every sink of `plan`.
    /// Counts in a registry of its own: see [`Pipeline::registry`].
    pub async fn new(plan: &Plan, runtime: HandlerRuntime) -> anyhow::Result<Pipeline> {
        let registry = Registry::new();
        let mut handlers = Vec::new();
        for h in &plan.handlers {
            let module = runtime
                .load(&h.module, h.limits.module_bytes())
                .map_err(|e| anyhow::anyhow!("handler `{}`: {e}", h.name))?;
            let grants = grants_of(plan, h);
            let metrics = GuestMetrics::new(&registry, &h.tenant, &h.name);
            let instance = runtime.instantiate_with(&module, grants.clone(), runtime_limits(h), metrics.clone())?;
            handlers.push(HandlerSlot {
                plan: h.clone(),
                module,
                instance,
                grants,
                counters: HandlerCounters::new(&registry, h),
                metrics,
            });
        }
        let mut sinks = BTreeMap::new();
        for (name, spec) in &plan.sinks {
            let sink = AnySink::open(name, spec)
                .await
                .map_err(|e| anyhow::anyhow!("opening sink `{name}`: {e}"))?;
            let retry = plan.sink_retry.get(name).copied().unwrap_or_default();
            sink.register_metrics(&registry);
            let labels = || vec![("sink", name.clone())];
            sinks.insert(
                name.clone(),
                SinkSlot {
                    sink,
                    retry,
                    unhealthy: None,
                    messages: registry.counter(names::SINK_MESSAGES, "Messages a sink acknowledged.", labels()),
                    retries: registry.counter(
                        names::SINK_RETRIES,
                        "Writes retried because a sink was unavailable.",
                        labels(),
                    ),
                    refused: registry.counter(
                        names::SINK_REFUSED,
                        "Messages a sink refused beyond its retries, handled by on_error skip or dead-letter.",
                        labels(),
                    ),
                },
            );
        }
        let counters = PipelineCounters {
            changes: registry.counter(names::CHANGES, "Row changes of subscribed tables seen.", vec![]),
            transactions: registry.counter(names::TRANSACTIONS, "Transactions whose commit was seen.", vec![]),
            checkpoints: registry.counter(names::CHECKPOINTS, "Batches committed to the store.", vec![]),
        };
        Ok(Pipeline {
            runtime,
            handlers,
            sinks,
            pending: BTreeMap::new(),
            pending_count: 0,
            routes: HashMap::new(),
            directories: DirectoryCache::default(),
            encoded: Vec::new(),
            commit_seen: false,
            halted: None,
            registry,
            counters,
            reloader: None,
            store: None,
            batch: Batch::default(),
            commit_interval: plan.state.commit_interval,
            last_checkpoint: Instant::now(),
            pending_position: None,
            position: None,
            txn_dead_letters: Vec::new(),
            status_timer: None,
        })
    }

    /// Keeps handler state and the resume position in `store`: loads every
    /// handler's state from it and returns the position to resume at.
    pub fn attach_store(&mut self, store: StateStore) -> anyhow::Result<Option<Checkpoint>> {
        for h in &mut self.handlers {
            let values = store.load_state(&h.plan.name)?;
            h.instance
                .replace_state(crate::runtime::StateOverlay::from_values(values));
        }
        let position = store.position()?;
        self.position = position.clone();
        self.store = Some(store);
        // The checkpoint makes sink writes durable before it moves.
        for slot in self.sinks.values_mut() {
            slot.sink.defer_durability();
        }
        Ok(position)
    }

    /// Commits the batch of acknowledged transactions to the store now,
    /// once every sink made what it acknowledged durable (group commit: one
    /// fsync per file sink for the whole batch).
    pub async fn checkpoint(&mut self) -> anyhow::Result<()> {
        let Some(store) = &mut self.store else { return Ok(()) };
        if !self.batch.is_empty() {
            for (name, slot) in &mut self.sinks {
                slot.sink.make_durable().await.map_err(|e| {
                    anyhow::anyhow!(
                        "sink `{name}` could not make its messages durable, so the checkpoint stays where it was: {e}"
                    )
                })?;
            }
            store.commit(&self.batch)?;
            self.counters.checkpoints.inc();
            if let Some(p) = self.batch.position.take() {
                self.position = Some(p);
            }
            self.batch = Batch::default();
            self.write_status();
        }
        self.last_checkpoint = Instant::now();
        Ok(())
    }

    /// Asks every sink for its health, which is also when sinks do their
    /// housekeeping: a file sink with `fsync = { interval_ms }` fsyncs lines
    /// written since its last fsync once the interval has passed, even if no
    /// batch follows them. The live loop calls this about once a second.
    /// A sink that is unavailable is not an error here (the next write
    /// retries it); changes are logged.
    pub async fn check_sinks(&mut self) {
        for (name, slot) in &mut self.sinks {
            match (slot.sink.health().await, &slot.unhealthy) {
                (Ok(()), None) => {}
                (Ok(()), Some(_)) => {
                    tracing::info!(sink = %name, "sink is available again");
                    slot.unhealthy = None;
                }
                (Err(e), was) => {
                    if was.as_ref() != Some(&e) {
                        if e.is_retryable() {
                            tracing::info!(sink = %name, "sink unavailable: {e}");
                        } else {
                            tracing::warn!(sink = %name, "sink failed its health check: {e}");
                        }
                    }
                    slot.unhealthy = Some(e);
                }
            }
        }
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
    /// position, state sizes, dead letters and the metrics of the registry.
    /// Without a store there is nothing to report. A failure is logged:
    /// status is advisory.
    pub fn write_status(&mut self) {
        let Some(store) = &self.store else { return };
        let metrics = self.registry.snapshot();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs());
        let report = crate::status::Report {
            store: store.path().to_owned(),
            position: self.position.clone(),
            handlers: self
                .handlers
                .iter_mut()
                .map(|h| crate::status::HandlerState {
                    name: h.plan.name.clone(),
                    keys: h.instance.state().len() as u64,
                    bytes: h.instance.state().bytes(),
                })
                .collect(),
            dead_letters: store.dead_letter_total(),
            live_status_written_at: now,
            metrics_written_at: now,
            server: None,
            stats: Some(Stats::from_snapshot(&metrics)),
            source: SourceStats::from_snapshot(&metrics),
            handler_metrics: crate::status::HandlerMetrics::from_snapshot(&metrics),
            sinks: crate::status::SinkMetrics::from_snapshot(&metrics),
        };
        let dir = store.path().parent().unwrap_or(std::path::Path::new("."));
        if let Err(e) = crate::status::write_status(dir, &report) {
            tracing::warn!("writing {}: {e}", dir.join(crate::status::STATUS_FILE).display());
        }
    }

    /// Rewrites the status file every `every` as well as at checkpoints, so
    /// that it shows a live run's counters while no checkpoint is due.
    pub fn write_status_every(&mut self, every: Duration) {
        self.status_timer = Some((tokio::time::Instant::now() + every, every));
    }

    /// When the next timed work is due: a waiting checkpoint, or the status file.
    pub fn next_tick(&self) -> Option<tokio::time::Instant> {
        let checkpoint = self.checkpoint_due_in().map(|d| tokio::time::Instant::now() + d);
        match (checkpoint, self.status_timer.map(|(at, _)| at)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
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
            self.status_timer = Some((tokio::time::Instant::now() + every, every));
        }
        Ok(())
    }

    /// Whether acknowledged transactions wait for a checkpoint.
    pub fn checkpoint_pending(&self) -> bool {
        !self.batch.is_empty()
    }

    /// Time until the waiting batch is due (zero if it is), `None` if none waits.
    pub fn checkpoint_due_in(&self) -> Option<Duration> {
        self.checkpoint_pending()
            .then(|| self.commit_interval.saturating_sub(self.last_checkpoint.elapsed()))
    }

    /// Watches every handler's module file and swaps a changed one in at
    /// the next transaction boundary (see [`crate::runtime::reload`]).
    pub fn watch_modules(&mut self) -> anyhow::Result<()> {
        let modules: Vec<_> = self
            .handlers
            .iter()
            .map(|h| (h.plan.module.clone(), h.plan.limits.module_bytes()))
            .collect();
        self.reloader = Some(Reloader::watch(&self.runtime, &modules)?);
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
                    for i in handlers {
                        let h = &mut self.handlers[i];
                        match self.runtime.instantiate_with(
                            &module,
                            h.grants.clone(),
                            runtime_limits(&h.plan),
                            h.metrics.clone(),
                        ) {
                            Ok(mut fresh) => {
                                fresh.replace_state(std::mem::take(h.instance.state()));
                                h.instance = fresh;
                                h.module = module.clone();
                                h.counters.reloads.inc();
                                tracing::info!(handler = %h.plan.name, module = %module.path(), "handler reloaded: the new version handles the next transaction");
                            }
                            Err(e) => {
                                let msg = format!("{e:#}");
                                tracing::error!(handler = %h.plan.name, "reload refused, the previous version keeps serving: {msg}");
                                h.counters.reload_failures.inc();
                            }
                        }
                    }
                }
                Reload::Failed { handlers, error } => {
                    for i in handlers {
                        let h = &self.handlers[i];
                        tracing::error!(handler = %h.plan.name, "reload refused, the previous version keeps serving: {error}");
                        h.counters.reload_failures.inc();
                    }
                }
            }
        }
    }

    /// The decoder table filter: the union of all handlers' subscriptions.
    pub fn table_filter(plan: &Plan) -> TableFilter {
        let list: Vec<String> = plan
            .handlers
            .iter()
            .flat_map(|h| h.tables.iter().map(|t| t.to_string()))
            .collect();
        if list.is_empty() {
            // No handler subscribes to anything: decode nothing.
            return TableFilter::parse("\u{0}.\u{0}").expect("valid pattern");
        }
        TableFilter::parse(&list.join(",")).expect("patterns were validated by the config")
    }

    /// The totals so far, read from the registry.
    pub fn stats(&self) -> Stats {
        Stats::from_snapshot(&self.registry.snapshot())
    }

    /// Whether the decoder should stop: a handler failed under `halt`.
    pub fn take_halt(&mut self) -> Option<anyhow::Error> {
        self.halted.take()
    }

    /// Whether a flush is due: a commit was seen, or the buffer is large.
    pub fn flush_due(&self) -> bool {
        self.commit_seen || self.pending_count >= FLUSH_EVERY
    }

    /// Writes buffered messages to their sinks; at a commit, then commits the
    /// handlers' state. Retries unavailable sinks with capped backoff.
    pub async fn flush(&mut self) -> anyhow::Result<()> {
        let mut refused: Vec<(String, Vec<Message>, Vec<usize>, SinkError)> = Vec::new();
        for (sink, (batch, origins)) in std::mem::take(&mut self.pending) {
            let target = self
                .sinks
                .get_mut(&sink)
                .ok_or_else(|| anyhow::anyhow!("no sink `{sink}`"))?;
            match write_with_retries(target, &sink, &batch).await {
                Ok(()) => target.messages.add(batch.len() as u64),
                Err(e) => refused.push((sink, batch, origins, e)),
            }
        }
        self.pending_count = 0;
        for (sink, batch, origins, err) in refused {
            self.sink_refused(&sink, batch, &origins, &err).await?;
        }
        if self.commit_seen {
            let keep = self.store.is_some();
            for h in &mut self.handlers {
                let writes = h.instance.state().commit();
                if keep {
                    for (key, value) in writes {
                        self.batch.state.insert((h.plan.name.clone(), key), value);
                    }
                }
            }
            if keep {
                if let Some(p) = self.pending_position.take() {
                    self.batch.position = Some(p);
                }
                self.batch.dead_letters.append(&mut self.txn_dead_letters);
                if self.last_checkpoint.elapsed() >= self.commit_interval {
                    self.checkpoint().await?;
                }
            }
            self.commit_seen = false;
        }
        Ok(())
    }

    /// A sink refused `batch` beyond its retries: each message's handler's
    /// `on_error` decides (halt: the error; skip: dropped, logged and
    /// counted; dead-letter: to its dead-letter sink, which must take it).
    async fn sink_refused(
        &mut self,
        sink: &str,
        batch: Vec<Message>,
        origins: &[usize],
        err: &SinkError,
    ) -> anyhow::Result<()> {
        let mut letters: BTreeMap<String, Vec<Message>> = BTreeMap::new();
        let refused = self.sinks.get(sink).map(|s| s.refused.clone()).unwrap_or_default();
        for (msg, &i) in batch.into_iter().zip(origins) {
            let h = &self.handlers[i];
            match &h.plan.on_error {
                OnError::Halt => {
                    anyhow::bail!(
                        "sink `{sink}` refused a message of handler `{}` ({}): {err}; halting before the checkpoint moves (on_error = \"halt\")",
                        h.plan.name,
                        msg.id
                    )
                }
                OnError::Skip => {
                    refused.inc();
                    tracing::warn!(handler = %h.plan.name, change = %msg.id, "sink `{sink}` refused a message, skipped (on_error = \"skip\"): {err}");
                }
                OnError::DeadLetter { sink: dl } => {
                    refused.inc();
                    anyhow::ensure!(
                        dl != sink,
                        "sink `{sink}` refused a message of handler `{}` ({}) and is its dead-letter sink too: {err}",
                        h.plan.name,
                        msg.id
                    );
                    let payload = dead_letter_payload(&h.plan.name, &err.to_string(), |out| {
                        out.extend_from_slice(b",\"id\":");
                        crate::json_text::write_str(out, &msg.id);
                        out.extend_from_slice(b",\"sink\":");
                        crate::json_text::write_str(out, sink);
                        out.extend_from_slice(b",\"payload\":");
                        crate::json_text::write_str(out, &String::from_utf8_lossy(&msg.payload));
                    });
                    if self.store.is_some() {
                        self.txn_dead_letters
                            .push(DeadLetter::new(&h.plan.name, &msg.id, err, dl));
                    }
                    letters.entry(dl.clone()).or_default().push(Message {
                        key: None,
                        payload,
                        id: msg.id,
                    });
                }
            }
        }
        for (dl, batch) in letters {
            let target = self
                .sinks
                .get_mut(&dl)
                .ok_or_else(|| anyhow::anyhow!("no sink `{dl}`"))?;
            write_with_retries(target, &dl, &batch)
                .await
                .map_err(|e| anyhow::anyhow!("dead-letter sink `{dl}` refused too: {e}"))?;
            target.messages.add(batch.len() as u64);
        }
        Ok(())
    }

    /// Drops the transaction in progress: its stream was cut before its
    /// commit, and the new stream sends it again from its first change.
    /// Its buffered messages are dropped (they will be emitted again, with
    /// the same ids) and its state writes undone.
    pub fn abandon_transaction(&mut self) {
        self.pending.clear();
        self.pending_count = 0;
        self.commit_seen = false;
        self.pending_position = None;
        self.txn_dead_letters.clear();
        for h in &mut self.handlers {
            h.instance.state().abandon();
            h.instance.take_emitted();
        }
    }

    /// Closes every sink (making delivered messages durable), then commits
    /// the waiting batch to the store. Messages of a transaction whose
    /// commit was not seen are not sent, and its state writes not kept.
    pub async fn close(&mut self) -> anyhow::Result<()> {
        for (name, slot) in &mut self.sinks {
            slot.sink
                .close()
                .await
                .map_err(|e| anyhow::anyhow!("closing sink `{name}`: {e}"))?;
        }
        self.checkpoint().await?;
        // The run's last counts, also when no checkpoint was due.
        self.write_status();
        Ok(())
    }

    fn route(&mut self, change: &RowChange<'_>) -> Arc<[usize]> {
        let key = (change.table.table_id, change.op);
        if let Some(r) = self.routes.get(&key)
            && *r.db == *change.table.db
            && *r.table == *change.table.table
        {
            return r.handlers.clone();
        }
        let r: Arc<[usize]> = self
            .handlers
            .iter()
            .enumerate()
            .filter(|(_, h)| h.plan.subscribes(&change.table.db, &change.table.table, change.op))
            .map(|(i, _)| i)
            .collect();
        let route = Route {
            db: Arc::from(change.table.db.as_str()),
            table: Arc::from(change.table.table.as_str()),
            handlers: r.clone(),
        };
        self.routes.insert(key, route);
        r
    }

    /// Applies handler `i`'s `on_error` to its failure on `failed`.
    fn handle_error(&mut self, i: usize, failed: Failed<'_, '_>, err: &dyn std::fmt::Display) -> Flow {
        let h = &self.handlers[i];
        let id = failed.id();
        match h.plan.on_error.clone() {
            OnError::Halt => {
                let (db, table, file, pos) = failed.place();
                self.halted = Some(anyhow::anyhow!(
                    "handler `{}` failed on {} (`{}`.`{}` at {}:{}): {err}; halting before the checkpoint moves (on_error = \"halt\")",
                    h.plan.name,
                    id,
                    db,
                    table,
                    file,
                    pos
                ));
                Flow::Stop
            }
            OnError::Skip => {
                h.counters.errors.inc();
                tracing::warn!(handler = %h.plan.name, change = %id, "handler failed, event skipped (on_error = \"skip\"): {err}");
                Flow::Continue
            }
            OnError::DeadLetter { sink } => {
                h.counters.errors.inc();
                let payload = dead_letter_payload(&h.plan.name, &err.to_string(), |out| {
                    out.extend_from_slice(b",\"change\":");
                    failed.write_json(out);
                });
                if self.store.is_some() {
                    self.txn_dead_letters
                        .push(DeadLetter::new(&h.plan.name, &id, err, &sink));
                }
                let (msgs, origins) = self.pending.entry(sink).or_default();
                msgs.push(Message { key: None, payload, id });
                origins.push(i);
                self.pending_count += 1;
                Flow::Continue
            }
        }
    }

    /// Rows that cannot be decoded or encoded count as a failure of every
    /// handler subscribed to them: each one's `on_error` applies.
    fn fail_undecodable(&mut self, rows: &Undecodable<'_>) -> Flow {
        let subscribed: Vec<usize> = (0..self.handlers.len())
            .filter(|&i| self.handlers[i].plan.subscribes(rows.db, rows.table, rows.op))
            .collect();
        for i in subscribed {
            if self.handle_error(i, Failed::Rows(rows), rows) == Flow::Stop {
                return Flow::Stop;
            }
        }
        Flow::Continue
    }
}

/// What a handler failed on: a row change, or rows that could not be decoded.
#[derive(Clone, Copy)]
enum Failed<'c, 'a> {
    Change(&'c RowChange<'a>),
    Rows(&'c Undecodable<'a>),
}

impl Failed<'_, '_> {
    fn id(&self) -> String {
        match self {
            Failed::Change(c) => c.id(),
            Failed::Rows(r) => r.id(),
        }
    }

    /// Schema, table, binlog file and offset.
    fn place(&self) -> (&str, &str, &str, u64) {
        match self {
            Failed::Change(c) => (&c.table.db, &c.table.table, c.file, c.pos),
            Failed::Rows(r) => (r.db, r.table, r.file, r.pos),
        }
    }

    /// The row change JSON, for a dead letter.
    fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            Failed::Change(c) => {
                let mark = out.len();
                if c.write_json(out).is_err() {
                    out.truncate(mark);
                    out.extend_from_slice(b"null");
                }
            }
            Failed::Rows(r) => r.write_json(out),
        }
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
        _: bool,
        stop: &mut Stop,
    ) -> anyhow::Result<()> {
        if let Some(e) = self.take_halt() {
            return Err(e);
        }
        if self.flush_due() {
            rt.block_on(async {
                tokio::select! {
                    r = self.flush() => r,
                    () = stop.requested_wait() => Err(Interrupted.into()),
                }
            })?;
        }
        if !decoder.in_transaction() {
            self.apply_reloads();
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
        Pipeline::next_tick(self)
    }

    fn tick(&mut self, rt: &tokio::runtime::Runtime) -> anyhow::Result<()> {
        rt.block_on(Pipeline::tick(self))
    }
}

/// Writes `batch` to `sink`, retrying an unavailable sink with capped
/// exponential backoff as its [`SinkRetry`] says (counting retries in the
/// slot); the error once retries run out, or at once for a permanent one.
async fn write_with_retries(target: &mut SinkSlot, sink: &str, batch: &[Message]) -> Result<(), SinkError> {
    let mut backoff = Backoff::new(SinkRetry::FIRST_DELAY, target.retry.max_delay);
    let mut attempt = 0;
    loop {
        match target.sink.write_batch(batch).await {
            Ok(()) => {
                if attempt > 0 {
                    tracing::info!(sink = %sink, retries = attempt, "sink took the batch again");
                }
                return Ok(());
            }
            Err(e) if e.is_retryable() && target.retry.allows(attempt) => {
                let delay = backoff.delay();
                tracing::warn!(sink = %sink, attempt = attempt + 1, "sink unavailable, retrying in {delay:?}: {e}");
                tokio::time::sleep(delay).await;
                attempt += 1;
                target.retries.inc();
            }
            Err(e) => return Err(e),
        }
    }
}

/// A dead letter: `{"handler":…,"error":…` then what `rest` writes: the
/// change (`,"change":{…}`) a handler failed on, or the message (`,"id":…,
/// "sink":…,"payload":…`) a sink refused.
fn dead_letter_payload(handler: &str, error: &str, rest: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut payload = Vec::with_capacity(256);
    payload.extend_from_slice(b"{\"handler\":");
    crate::json_text::write_str(&mut payload, handler);
    payload.extend_from_slice(b",\"error\":");
    crate::json_text::write_str(&mut payload, error);
    rest(&mut payload);
    payload.push(b'}');
    payload
}

impl ChangeVisitor for Pipeline {
    fn change(&mut self, change: &RowChange<'_>) -> Flow {
        let targets = self.route(change);
        if targets.is_empty() {
            return Flow::Continue;
        }
        self.counters.changes.inc();
        if let Err(e) = self.directories.encode(change, &mut self.encoded) {
            let rows = Undecodable::of_change(change, &e.0);
            for &i in targets.iter() {
                if self.handle_error(i, Failed::Rows(&rows), &rows) == Flow::Stop {
                    return Flow::Stop;
                }
            }
            return Flow::Continue;
        }
        // The id is formatted once, and only for a change that emitted.
        let mut id: Option<String> = None;
        for &i in targets.iter() {
            let h = &mut self.handlers[i];
            h.counters.calls.inc();
            let result = h.instance.call(&self.encoded);
            if h.instance.is_broken() {
                // A trapped component instance refuses further calls: start a
                // new one, keeping the handler's state.
                let state = std::mem::take(h.instance.state());
                match self.runtime.instantiate_with(
                    &h.module,
                    h.grants.clone(),
                    runtime_limits(&h.plan),
                    h.metrics.clone(),
                ) {
                    Ok(mut fresh) => {
                        fresh.replace_state(state);
                        h.instance = fresh;
                    }
                    Err(e) => {
                        self.halted = Some(e.context(format!("re-creating handler `{}` after a trap", h.plan.name)));
                        return Flow::Stop;
                    }
                }
            }
            for line in h.instance.take_logs() {
                let (name, fields, msg) = (&h.plan.name, &line.fields, &line.message);
                match line.level {
                    "error" => tracing::error!(handler = %name, fields = ?fields, "{msg}"),
                    "warn" => tracing::warn!(handler = %name, fields = ?fields, "{msg}"),
                    "info" => tracing::info!(handler = %name, fields = ?fields, "{msg}"),
                    "debug" => tracing::debug!(handler = %name, fields = ?fields, "{msg}"),
                    _ => tracing::trace!(handler = %name, fields = ?fields, "{msg}"),
                }
            }
            match result {
                Ok(()) => {
                    for e in h.instance.take_emitted() {
                        let id = id.get_or_insert_with(|| change.id()).clone();
                        let (msgs, origins) = self.pending.entry(e.sink).or_default();
                        msgs.push(Message {
                            key: e.key.map(String::into_bytes),
                            payload: e.payload,
                            id,
                        });
                        origins.push(i);
                        self.pending_count += 1;
                    }
                }
                Err(err) => {
                    if self.handle_error(i, Failed::Change(change), &err) == Flow::Stop {
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
        self.fail_undecodable(rows)
    }

    fn commit(&mut self, commit: &Commit<'_>) -> Flow {
        if self.store.is_some() {
            self.pending_position = Some(Checkpoint {
                file: commit.file.to_owned(),
                pos: commit.end,
                gtids: commit.gtid_state.to_string(),
                txn: commit.txn.to_owned(),
                ts: commit.ts,
            });
        }
        self.commit_seen = true;
        self.counters.transactions.inc();
        Flow::Continue
    }
}

#[cfg(all(test, feature = "sink-file"))]
mod tests {
    use super::*;
    use crate::sink::testing::{TempDir, msgs};

    fn fsyncs(pipeline: &Pipeline, sink: &str) -> u64 {
        #[allow(unreachable_patterns)]
        match &pipeline.sinks[sink].sink {
            AnySink::File(f) => f.stats().fsyncs,
            other => panic!("not a file sink: {other:?}"),
        }
    }

    #[tokio::test]
    async fn an_interval_fsync_happens_with_no_further_writes() {
        let dir = TempDir::new("pipeline-interval");
        let text = "[sinks.audit]\nkind = \"file\"\npath = \"audit.jsonl\"\nfsync = { interval_ms = 100 }\n";
        let plan = Plan::parse(text, &dir.path().join("rowhook.toml"), |_| None).unwrap();
        let mut pipeline = Pipeline::new(&plan, HandlerRuntime::new().unwrap()).await.unwrap();
        pipeline.pending.insert("audit".into(), (msgs("a", 0..2), vec![0, 0]));
        pipeline.flush().await.unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap(),
            "a0\na1\n"
        );
        assert_eq!(fsyncs(&pipeline, "audit"), 0, "written, not due yet");
        pipeline.check_sinks().await;
        assert_eq!(fsyncs(&pipeline, "audit"), 0);
        // No batch comes; the live loop's once-a-second tick does it.
        tokio::time::sleep(Duration::from_millis(150)).await;
        pipeline.check_sinks().await;
        assert_eq!(fsyncs(&pipeline, "audit"), 1, "synced without another write");
        pipeline.check_sinks().await;
        assert_eq!(fsyncs(&pipeline, "audit"), 1, "nothing new to sync");
    }
}
