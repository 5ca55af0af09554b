//! Delivery: the sinks, the messages buffered for them, and writing with
//! retries.
//!
//! Messages wait per sink, each with the handler it came from, until the
//! transaction's commit is seen or the buffer is full; then each sink gets
//! its messages as one batch. An unavailable sink is retried with capped
//! exponential backoff as its `retries` and `retry_max_ms` say; what a sink
//! still refuses is handed back with its origins, for each handler's
//! `on_error` to decide.

use std::collections::BTreeMap;

use crate::backoff::Backoff;
use crate::config::Plan;
use crate::handler_id::HandlerId;
use crate::sink::{AnySink, Message, Sink, SinkError, SinkLimits, SinkRetry};
use crate::telemetry::{Counter, Gauge, Histogram, Registry, names};

/// Messages buffered before a flush inside a transaction.
const FLUSH_EVERY: usize = 4096;
/// Payload and key bytes buffered before a flush inside a transaction.
pub const FLUSH_BYTES: usize = 32 << 20;

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
    write_seconds: Histogram,
    /// 1 while the last batch was refused beyond its retries.
    failing: Gauge,
}

impl SinkSlot {
    /// Writes `batch` with retries, timed and counted.
    async fn write(&mut self, name: &str, batch: &[Message]) -> Result<(), SinkError> {
        let started = std::time::Instant::now();
        let result = write_with_retries(self, name, batch).await;
        self.write_seconds.observe(started.elapsed());
        match &result {
            Ok(()) => {
                self.messages.add(batch.len() as u64);
                self.failing.set(0.0);
            }
            Err(_) => self.failing.set(1.0),
        }
        result
    }
}

/// Messages waiting for one sink, and the handler each came from.
#[derive(Default)]
struct Pending {
    messages: Vec<Message>,
    origins: Vec<HandlerId>,
}

/// Messages a sink refused beyond its retries.
pub struct Refused {
    /// The sink.
    pub sink: String,
    /// The messages, in order.
    pub messages: Vec<Message>,
    /// The handler each message came from.
    pub origins: Vec<HandlerId>,
    /// Why.
    pub error: SinkError,
}

/// The sinks and what waits for them.
pub struct Delivery {
    sinks: BTreeMap<String, SinkSlot>,
    pending: BTreeMap<String, Pending>,
    buffered: usize,
    buffered_bytes: usize,
    /// Per tenant, how long sinks took to take its handlers' messages,
    /// once [`Delivery::charge_tenants`] asked for it.
    charges: Option<BTreeMap<String, std::time::Duration>>,
}

impl Delivery {
    /// Keeps, per tenant, how long sinks take to take its handlers'
    /// messages (see [`Delivery::take_charges`]).
    pub fn charge_tenants(&mut self) {
        self.charges = Some(BTreeMap::new());
    }

    /// The time sinks took per tenant since the last call.
    pub fn take_charges(&mut self) -> BTreeMap<String, std::time::Duration> {
        self.charges.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Opens every sink of `plan`; counts in `registry`.
    pub async fn open(plan: &Plan, registry: &Registry) -> anyhow::Result<Delivery> {
        let mut sinks = BTreeMap::new();
        for (name, spec) in &plan.sinks {
            let sink = AnySink::open(name, spec)
                .await
                .map_err(|e| anyhow::anyhow!("opening sink `{name}`: {e}"))?;
            let retry = plan.sink_retry.get(name).copied().unwrap_or_default();
            sink.register_metrics(registry);
            let labels = || vec![("sink", name.clone())];
            let result = |r: &str| vec![("sink", name.clone()), ("result", r.to_owned())];
            const MESSAGES_HELP: &str = "Messages written to a sink: ok, acknowledged; refused, refused beyond its retries and handled by on_error skip or dead-letter.";
            sinks.insert(
                name.clone(),
                SinkSlot {
                    sink,
                    retry,
                    unhealthy: None,
                    messages: registry.counter(names::SINK_MESSAGES, MESSAGES_HELP, result("ok")),
                    retries: registry.counter(
                        names::SINK_RETRIES,
                        "Writes retried because a sink was unavailable.",
                        labels(),
                    ),
                    refused: registry.counter(names::SINK_MESSAGES, MESSAGES_HELP, result("refused")),
                    write_seconds: registry.histogram(
                        names::SINK_WRITE_SECONDS,
                        "How long a sink took to take a batch, retries included, in seconds.",
                        labels(),
                    ),
                    failing: registry.gauge(
                        names::SINK_FAILING,
                        "1 while the sink's last batch was refused beyond its retries.",
                        labels(),
                    ),
                },
            );
        }
        Ok(Delivery {
            sinks,
            pending: BTreeMap::new(),
            buffered: 0,
            buffered_bytes: 0,
            charges: None,
        })
    }

    /// The limits of the open sink `sink` (see [`Sink::limits`]).
    pub fn limits(&self, sink: &str) -> SinkLimits {
        self.sinks.get(sink).map(|s| s.sink.limits()).unwrap_or_default()
    }

    /// Buffers `message` of handler `origin` for `sink`.
    pub fn push(&mut self, sink: &str, message: Message, origin: HandlerId) {
        self.buffered_bytes += message.payload.len() + message.key.as_ref().map_or(0, Vec::len);
        let p = match self.pending.get_mut(sink) {
            Some(p) => p,
            None => self.pending.entry(sink.to_owned()).or_default(),
        };
        p.messages.push(message);
        p.origins.push(origin);
        self.buffered += 1;
    }

    /// Whether the buffer is full enough to flush inside a transaction:
    /// [`FLUSH_EVERY`] messages or [`FLUSH_BYTES`] of payloads and keys.
    pub fn full(&self) -> bool {
        self.buffered >= FLUSH_EVERY || self.buffered_bytes >= FLUSH_BYTES
    }

    /// Writes every buffered message, sink by sink, retrying unavailable
    /// sinks; returns what sinks refused beyond their retries.
    pub async fn flush(&mut self) -> anyhow::Result<Vec<Refused>> {
        let mut refused = Vec::new();
        self.buffered = 0;
        self.buffered_bytes = 0;
        for (sink, p) in std::mem::take(&mut self.pending) {
            let target = self
                .sinks
                .get_mut(&sink)
                .ok_or_else(|| anyhow::anyhow!("no sink `{sink}`"))?;
            let started = self.charges.is_some().then(std::time::Instant::now);
            let written = target.write(&sink, &p.messages).await;
            if let (Some(charges), Some(started)) = (&mut self.charges, started) {
                let took = started.elapsed();
                let tenants: std::collections::BTreeSet<&str> = p.origins.iter().map(HandlerId::tenant).collect();
                for t in tenants {
                    *charges.entry(t.to_owned()).or_default() += took;
                }
            }
            match written {
                Ok(()) => {}
                Err(error) => refused.push(Refused {
                    sink,
                    messages: p.messages,
                    origins: p.origins,
                    error,
                }),
            }
        }
        Ok(refused)
    }

    /// Writes `batch` to `sink` now, with retries (dead letters, which
    /// must not be refused).
    pub async fn deliver(&mut self, sink: &str, batch: &[Message]) -> anyhow::Result<()> {
        let target = self
            .sinks
            .get_mut(sink)
            .ok_or_else(|| anyhow::anyhow!("no sink `{sink}`"))?;
        target.write(sink, batch).await?;
        Ok(())
    }

    /// Counts `n` messages `sink` refused that `on_error` skipped or dead-lettered.
    pub fn count_refused(&self, sink: &str, n: u64) {
        if let Some(s) = self.sinks.get(sink) {
            s.refused.add(n);
        }
    }

    /// Drops the buffered messages whose handler `from` picks (its lane
    /// halted; they will be emitted again, with the same ids, when it
    /// catches up).
    pub fn drop_from(&mut self, from: impl Fn(&HandlerId) -> bool) {
        for p in self.pending.values_mut() {
            let mut keep = p.origins.iter().map(|o| !from(o));
            p.messages.retain(|_| keep.next().unwrap_or(true));
            p.origins.retain(|o| !from(o));
        }
        self.pending.retain(|_, p| !p.messages.is_empty());
        self.buffered = self.pending.values().map(|p| p.messages.len()).sum();
        self.buffered_bytes = (self.pending.values())
            .flat_map(|p| &p.messages)
            .map(|m| m.payload.len() + m.key.as_ref().map_or(0, Vec::len))
            .sum();
    }

    /// Drops every buffered message (their transaction was cut; they will
    /// be emitted again, with the same ids).
    pub fn clear(&mut self) {
        self.pending.clear();
        self.buffered = 0;
        self.buffered_bytes = 0;
    }

    /// Asks every sink for its health, which is also when sinks do their
    /// housekeeping: a file sink with `fsync = { interval_ms }` fsyncs lines
    /// written since its last fsync once the interval has passed, even if no
    /// batch follows them. A sink that is unavailable is not an error here
    /// (the next write retries it); changes are logged.
    pub async fn check_health(&mut self) {
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

    /// Leaves durability to [`Delivery::make_durable`], called before each
    /// checkpoint (group commit), instead of each write.
    pub fn defer_durability(&mut self) {
        for slot in self.sinks.values_mut() {
            slot.sink.defer_durability();
        }
    }

    /// Gives every sink the store's once-only ledger (see [`Sink::attach_ledger`]).
    pub fn attach_ledger(&mut self, ledger: &crate::store::Ledger) {
        for slot in self.sinks.values_mut() {
            slot.sink.attach_ledger(ledger);
        }
    }

    /// Makes every acknowledged message durable at its sink.
    pub async fn make_durable(&mut self) -> anyhow::Result<()> {
        for (name, slot) in &mut self.sinks {
            slot.sink.make_durable().await.map_err(|e| {
                anyhow::anyhow!(
                    "sink `{name}` could not make its messages durable, so the checkpoint stays where it was: {e}"
                )
            })?;
        }
        Ok(())
    }

    /// Closes every sink, making delivered messages durable.
    pub async fn close(&mut self) -> anyhow::Result<()> {
        for (name, slot) in &mut self.sinks {
            slot.sink
                .close()
                .await
                .map_err(|e| anyhow::anyhow!("closing sink `{name}`: {e}"))?;
        }
        Ok(())
    }

    #[cfg(test)]
    fn sink(&self, name: &str) -> &AnySink {
        &self.sinks[name].sink
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

#[cfg(all(test, feature = "sink-file"))]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::sink::testing::{TempDir, msgs};

    fn plan(dir: &TempDir, sinks: &str) -> Plan {
        Plan::parse(sinks, &dir.path().join("rowhook.toml"), |_| None).unwrap()
    }

    fn fsyncs(delivery: &Delivery, sink: &str) -> u64 {
        #[allow(unreachable_patterns)]
        match delivery.sink(sink) {
            AnySink::File(f) => f.stats().fsyncs,
            other => panic!("not a file sink: {other:?}"),
        }
    }

    fn push_all(d: &mut Delivery, sink: &str, origin: &HandlerId, messages: Vec<Message>) {
        for m in messages {
            d.push(sink, m, origin.clone());
        }
    }

    #[tokio::test]
    async fn an_interval_fsync_happens_with_no_further_writes() {
        let dir = TempDir::new("delivery-interval");
        let plan = plan(
            &dir,
            "[sinks.audit]\nkind = \"file\"\npath = \"audit.jsonl\"\nfsync = { interval_ms = 100 }\n",
        );
        let mut d = Delivery::open(&plan, &Registry::new()).await.unwrap();
        push_all(&mut d, "audit", &HandlerId::new("t", "h"), msgs("a", 0..2));
        assert!(d.flush().await.unwrap().is_empty());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap(),
            "a0\na1\n"
        );
        assert_eq!(fsyncs(&d, "audit"), 0, "written, not due yet");
        d.check_health().await;
        assert_eq!(fsyncs(&d, "audit"), 0);
        // No batch comes; the live loop's once-a-second tick does it.
        tokio::time::sleep(Duration::from_millis(150)).await;
        d.check_health().await;
        assert_eq!(fsyncs(&d, "audit"), 1, "synced without another write");
        d.check_health().await;
        assert_eq!(fsyncs(&d, "audit"), 1, "nothing new to sync");
    }

    #[tokio::test]
    async fn each_sink_gets_its_messages_in_order_and_the_buffer_empties() {
        let dir = TempDir::new("delivery-order");
        let plan = plan(
            &dir,
            "[sinks.a]\nkind = \"file\"\npath = \"a.jsonl\"\n[sinks.b]\nkind = \"file\"\npath = \"b.jsonl\"\n",
        );
        let registry = Registry::new();
        let mut d = Delivery::open(&plan, &registry).await.unwrap();
        let (h1, h2) = (HandlerId::new("t", "one"), HandlerId::new("t", "two"));
        push_all(&mut d, "a", &h1, msgs("x", 0..2));
        push_all(&mut d, "b", &h2, msgs("y", 0..1));
        push_all(&mut d, "a", &h2, msgs("z", 0..1));
        assert!(!d.full());
        assert!(d.flush().await.unwrap().is_empty());
        assert!(d.flush().await.unwrap().is_empty(), "nothing is written twice");
        let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap();
        assert_eq!(read("a.jsonl"), "x0\nx1\nz0\n");
        assert_eq!(read("b.jsonl"), "y0\n");
        let counted = crate::status::SinkMetrics::from_snapshot(&registry.snapshot());
        let a = counted.iter().find(|s| s.name == "a").expect("sink a counted");
        assert_eq!(a.counters["messages"], 3);
    }

    #[tokio::test]
    async fn a_full_buffer_asks_for_a_flush_and_a_cleared_one_writes_nothing() {
        let dir = TempDir::new("delivery-full");
        let plan = plan(&dir, "[sinks.a]\nkind = \"file\"\npath = \"a.jsonl\"\n");
        let mut d = Delivery::open(&plan, &Registry::new()).await.unwrap();
        let h = HandlerId::new("t", "h");
        push_all(&mut d, "a", &h, msgs("m", 0..FLUSH_EVERY - 1));
        assert!(!d.full());
        push_all(&mut d, "a", &h, msgs("n", 0..1));
        assert!(d.full());
        d.clear();
        assert!(!d.full());
        assert!(d.flush().await.unwrap().is_empty());
        assert_eq!(std::fs::read_to_string(dir.path().join("a.jsonl")).unwrap(), "");
        // Few messages, many bytes.
        let big = |n: usize| Message {
            key: Some(vec![b'k'; 1024]),
            payload: vec![b'x'; n],
            id: "i".into(),
            index: 0,
        };
        d.push("a", big(FLUSH_BYTES / 2), h.clone());
        assert!(!d.full());
        d.push("a", big(FLUSH_BYTES / 2 - 1024), h.clone());
        assert!(d.full(), "the keys count too");
        assert!(d.flush().await.unwrap().is_empty());
        assert!(!d.full(), "a flush empties the byte count");
    }

    #[tokio::test]
    async fn a_message_for_an_unknown_sink_is_an_error() {
        let dir = TempDir::new("delivery-unknown");
        let plan = plan(&dir, "[sinks.a]\nkind = \"file\"\npath = \"a.jsonl\"\n");
        let mut d = Delivery::open(&plan, &Registry::new()).await.unwrap();
        d.push("nope", msgs("m", 0..1).remove(0), HandlerId::new("t", "h"));
        let e = d.flush().await.err().expect("no such sink").to_string();
        assert!(e.contains("no sink `nope`"), "{e}");
    }
}
