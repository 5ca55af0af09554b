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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use crate::config::{HandlerPlan, OnError, Plan};
use crate::decode::txn::TableFilter;
use crate::decode::{ChangeVisitor, Commit, Flow, RowChange};
use crate::runtime::{GuestError, Instance, Limits, Module, Runtime};
use crate::sink::{AnySink, Message, Sink, SinkError};

/// Messages buffered before a flush inside a transaction.
const FLUSH_EVERY: usize = 4096;
/// Retries of a sink write before the batch counts as failed.
const SINK_RETRIES: u32 = 8;

/// One handler: its plan, compiled module and live instance.
struct HandlerSlot {
    plan: HandlerPlan,
    module: Module,
    instance: Instance,
    grants: Arc<HashSet<String>>,
}

/// The handlers (by index) a table's changes of one op go to; the names
/// guard against a table id reused for another table.
struct Route {
    db: Arc<str>,
    table: Arc<str>,
    handlers: Arc<[usize]>,
}

/// Counters a run reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Row changes seen (of subscribed tables).
    pub changes: u64,
    /// Handler calls made.
    pub calls: u64,
    /// Messages written to sinks.
    pub messages: u64,
    /// Handler failures handled by `skip` or `dead-letter`.
    pub handler_errors: u64,
    /// Transactions committed.
    pub commits: u64,
}

/// Runs the configured handlers over decoded row changes.
pub struct Pipeline {
    runtime: Runtime,
    handlers: Vec<HandlerSlot>,
    sinks: BTreeMap<String, AnySink>,
    pending: BTreeMap<String, Vec<Message>>,
    pending_count: usize,
    /// Per table id and op: which handlers (by index) subscribe.
    routes: HashMap<(u64, crate::decode::Op), Route>,
    encoded: Vec<u8>,
    commit_seen: bool,
    halted: Option<anyhow::Error>,
    stats: Stats,
}

fn runtime_limits(plan: &HandlerPlan) -> Limits {
    Limits {
        memory_bytes: plan.limits.memory_mb as usize * (1 << 20),
        time_ms: plan.limits.time.as_millis().max(1) as u64,
        emits_per_event: plan.limits.emits_per_event,
    }
}

impl Pipeline {
    /// Loads every handler's module and opens every sink of `plan`.
    pub async fn new(plan: &Plan, runtime: Runtime) -> anyhow::Result<Pipeline> {
        let mut handlers = Vec::new();
        for h in &plan.handlers {
            let module = runtime
                .load(&h.module)
                .map_err(|e| anyhow::anyhow!("handler `{}`: {e}", h.name))?;
            let grants: Arc<HashSet<String>> = Arc::new(h.grants.iter().map(str::to_owned).collect());
            let instance = runtime.instantiate(&module, &h.name, grants.clone(), runtime_limits(h))?;
            handlers.push(HandlerSlot {
                plan: h.clone(),
                module,
                instance,
                grants,
            });
        }
        let mut sinks = BTreeMap::new();
        for (name, spec) in &plan.sinks {
            let sink = AnySink::open(name, spec)
                .await
                .map_err(|e| anyhow::anyhow!("opening sink `{name}`: {e}"))?;
            sinks.insert(name.clone(), sink);
        }
        Ok(Pipeline {
            runtime,
            handlers,
            sinks,
            pending: BTreeMap::new(),
            pending_count: 0,
            routes: HashMap::new(),
            encoded: Vec::new(),
            commit_seen: false,
            halted: None,
            stats: Stats::default(),
        })
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

    /// Counters so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
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
        for (sink, batch) in std::mem::take(&mut self.pending) {
            let target = self
                .sinks
                .get_mut(&sink)
                .ok_or_else(|| anyhow::anyhow!("no sink `{sink}`"))?;
            let mut delay = Duration::from_millis(50);
            let mut attempt = 0;
            loop {
                match target.write_batch(&batch).await {
                    Ok(()) => break,
                    Err(e @ SinkError::Unavailable { .. }) if attempt < SINK_RETRIES => {
                        tracing::warn!(sink = %sink, attempt, "sink unavailable, retrying: {e}");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(5));
                        attempt += 1;
                    }
                    Err(e) => return Err(anyhow::anyhow!("{e}")),
                }
            }
            self.stats.messages += batch.len() as u64;
        }
        self.pending_count = 0;
        if self.commit_seen {
            for h in &mut self.handlers {
                // Issue 4 makes these writes durable with the checkpoint.
                let _writes = h.instance.state().commit();
            }
            self.commit_seen = false;
        }
        Ok(())
    }

    /// Closes every sink (making delivered messages durable).
    pub async fn close(&mut self) -> anyhow::Result<()> {
        for (name, sink) in &mut self.sinks {
            sink.close()
                .await
                .map_err(|e| anyhow::anyhow!("closing sink `{name}`: {e}"))?;
        }
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

    fn handle_error(&mut self, i: usize, change: &RowChange<'_>, err: GuestError) -> Flow {
        let h = &self.handlers[i];
        let id = change.id();
        match h.plan.on_error.clone() {
            OnError::Halt => {
                self.halted = Some(anyhow::anyhow!(
                    "handler `{}` failed on {} (`{}`.`{}` at {}:{}): {err}; halting before the checkpoint moves (on_error = \"halt\")",
                    h.plan.name,
                    id,
                    change.table.db,
                    change.table.table,
                    change.file,
                    change.pos
                ));
                Flow::Stop
            }
            OnError::Skip => {
                self.stats.handler_errors += 1;
                tracing::warn!(handler = %h.plan.name, change = %id, "handler failed, event skipped (on_error = \"skip\"): {err}");
                Flow::Continue
            }
            OnError::DeadLetter { sink } => {
                self.stats.handler_errors += 1;
                let mut payload = Vec::with_capacity(256);
                payload.extend_from_slice(b"{\"handler\":");
                crate::json_text::write_str(&mut payload, &h.plan.name);
                payload.extend_from_slice(b",\"error\":");
                crate::json_text::write_str(&mut payload, &err.to_string());
                payload.extend_from_slice(b",\"change\":");
                if change.write_json(&mut payload).is_err() {
                    payload.extend_from_slice(b"null");
                }
                payload.push(b'}');
                self.pending
                    .entry(sink)
                    .or_default()
                    .push(Message { key: None, payload, id });
                self.pending_count += 1;
                Flow::Continue
            }
        }
    }
}

impl ChangeVisitor for Pipeline {
    fn change(&mut self, change: &RowChange<'_>) -> Flow {
        let targets = self.route(change);
        if targets.is_empty() {
            return Flow::Continue;
        }
        self.stats.changes += 1;
        self.encoded.clear();
        if let Err(e) = crate::guest_abi::encode_change(change, &mut self.encoded) {
            self.halted = Some(anyhow::anyhow!(
                "{}:{}: cannot encode row change {}: {}",
                change.file,
                change.pos,
                change.id(),
                e.0
            ));
            return Flow::Stop;
        }
        // The id is formatted once, and only for a change that emitted.
        let mut id: Option<String> = None;
        for &i in targets.iter() {
            let h = &mut self.handlers[i];
            self.stats.calls += 1;
            let result = h.instance.call(&self.encoded);
            if h.instance.is_broken() {
                // A trapped component instance refuses further calls: start a
                // new one, keeping the handler's state.
                let state = std::mem::take(h.instance.state());
                match self
                    .runtime
                    .instantiate(&h.module, &h.plan.name, h.grants.clone(), runtime_limits(&h.plan))
                {
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
                tracing::info!(handler = %h.plan.name, level = line.level, fields = ?line.fields, "{}", line.message);
            }
            match result {
                Ok(()) => {
                    for e in h.instance.take_emitted() {
                        let id = id.get_or_insert_with(|| change.id()).clone();
                        self.pending.entry(e.sink).or_default().push(Message {
                            key: e.key.map(String::into_bytes),
                            payload: e.payload,
                            id,
                        });
                        self.pending_count += 1;
                    }
                }
                Err(err) => {
                    if self.handle_error(i, change, err) == Flow::Stop {
                        return Flow::Stop;
                    }
                }
            }
        }
        // The driver flushes between events once enough is buffered; one
        // rows event holds a bounded number of rows.
        Flow::Continue
    }

    fn commit(&mut self, _commit: &Commit<'_>) -> Flow {
        self.commit_seen = true;
        self.stats.commits += 1;
        Flow::Continue
    }
}
