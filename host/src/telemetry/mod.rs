//! Metrics every part of rowhook writes and anyone may read: the pipeline,
//! the live source, the sinks and the handlers' own `metrics` calls all
//! count into one [`Registry`]; `status.json`, `rowhook state` and
//! [`render_prometheus`] (for a `/metrics` endpoint) read it.
//!
//! The pipeline counts per row change, so an increment must cost no lock
//! and no allocation: a component asks the registry once, at start, for a
//! [`Counter`] or [`Gauge`] handle (an `Arc` of one atomic) and keeps it;
//! counting is then one relaxed atomic add. The registry's lock is taken
//! only to register a series and to read them all ([`Registry::snapshot`]).
//!
//! Names follow the Prometheus conventions (`rowhook_…_total` for
//! counters, snake case, labels for what varies: `sink`, `tenant` +
//! `handler`, `cause`); [`names`] lists them.

mod prometheus;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

pub use self::prometheus::render_prometheus;

/// The metric names rowhook registers, in one place for writers and readers.
pub mod names {
    /// Row changes of subscribed tables seen.
    pub const CHANGES: &str = "rowhook_changes_total";
    /// Transactions whose commit was seen.
    pub const TRANSACTIONS: &str = "rowhook_transactions_total";
    /// Batches committed to the store.
    pub const CHECKPOINTS: &str = "rowhook_checkpoints_total";
    /// Prefix of the per-handler host counters (`{tenant, handler}`).
    pub const HANDLER_PREFIX: &str = "rowhook_handler_";
    /// Handler calls made.
    pub const HANDLER_CALLS: &str = "rowhook_handler_calls_total";
    /// Handler failures handled by `skip` or `dead-letter`.
    pub const HANDLER_ERRORS: &str = "rowhook_handler_errors_total";
    /// Module versions swapped in by hot reload.
    pub const HANDLER_RELOADS: &str = "rowhook_handler_reloads_total";
    /// Changed module files refused.
    pub const HANDLER_RELOAD_FAILURES: &str = "rowhook_handler_reload_failures_total";
    /// Times a handler's circuit breaker suspended it.
    pub const HANDLER_SUSPENSIONS: &str = "rowhook_handler_suspensions_total";
    /// Changes not handed to a suspended handler.
    pub const HANDLER_SUSPENDED: &str = "rowhook_handler_suspended_total";
    /// Changes held back from a suspended or paused handler.
    pub const HANDLER_HELD: &str = "rowhook_handler_held_total";
    /// Held changes handed over later.
    pub const HANDLER_RELEASED: &str = "rowhook_handler_released_total";
    /// Changes held for a handler now.
    pub const HANDLER_HELD_NOW: &str = "rowhook_handler_held_changes";
    /// Instances replaced at a transaction boundary because their memory
    /// had grown past half of its headroom.
    pub const HANDLER_RECYCLED: &str = "rowhook_handler_recycled_total";
    /// Guest log lines dropped by the per-call cap.
    pub const HANDLER_LOG_LINES_DROPPED: &str = "rowhook_handler_log_lines_dropped_total";
    /// Guest `metrics` calls ignored (invalid name, too many names).
    pub const HANDLER_METRIC_CALLS_IGNORED: &str = "rowhook_handler_metric_calls_ignored_total";
    /// A guest counter (`{tenant, handler, name}`).
    pub const GUEST_COUNTER: &str = "rowhook_guest_counter_total";
    /// A guest gauge (`{tenant, handler, name}`).
    pub const GUEST_GAUGE: &str = "rowhook_guest_gauge";
    /// Prefix of the per-sink counters (`{sink}`).
    pub const SINK_PREFIX: &str = "rowhook_sink_";
    /// Messages a sink acknowledged.
    pub const SINK_MESSAGES: &str = "rowhook_sink_messages_total";
    /// Writes retried because the sink was unavailable.
    pub const SINK_RETRIES: &str = "rowhook_sink_retries_total";
    /// Messages the sink refused beyond its retries (handled by `skip` or `dead-letter`).
    pub const SINK_REFUSED: &str = "rowhook_sink_refused_total";
    /// Streams resumed, by `cause`.
    pub const SOURCE_RECONNECTS: &str = "rowhook_source_reconnects_total";
    /// Reconnection attempts that failed.
    pub const SOURCE_RECONNECT_FAILURES: &str = "rowhook_source_reconnect_failures_total";
    /// Binlog rotations followed.
    pub const SOURCE_ROTATIONS: &str = "rowhook_source_rotations_total";
    /// 1 while a stream is connected, 0 while reconnecting.
    pub const SOURCE_CONNECTED: &str = "rowhook_source_connected";
}

/// A monotonic count. Cloning gives another handle on the same count.
#[derive(Debug, Clone, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    /// A count that belongs to no registry until [`Registry::attach_counter`].
    pub fn detached() -> Counter {
        Counter::default()
    }

    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n`.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds `n`, stopping at `u64::MAX` (for counts a guest drives).
    pub fn saturating_add(&self, n: u64) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| Some(v.saturating_add(n)));
    }

    /// The count now.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down. Cloning gives another handle on it.
#[derive(Debug, Clone, Default)]
pub struct Gauge(Arc<AtomicU64>);

impl Gauge {
    /// A gauge that belongs to no registry until [`Registry::attach_gauge`].
    pub fn detached() -> Gauge {
        Gauge::default()
    }

    /// Sets the value.
    #[inline]
    pub fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }

    /// The value now (0 until set).
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

/// Label pairs of one series, in the order given at registration.
pub type Labels = Vec<(&'static str, String)>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
enum Kind {
    Counter,
    Gauge,
}

#[derive(Debug)]
struct Family {
    help: &'static str,
    kind: Kind,
    series: BTreeMap<Labels, Arc<AtomicU64>>,
}

/// Every metric of one rowhook process, readable from any thread.
/// Cloning gives another handle on the same registry.
#[derive(Debug, Clone, Default)]
pub struct Registry(Arc<Mutex<BTreeMap<&'static str, Family>>>);

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// The counter `name{labels}`, created at 0 on first use. Keep the
    /// handle: this takes the registry's lock.
    ///
    /// # Panics
    /// If `name` was registered as a gauge: a programming error.
    pub fn counter(&self, name: &'static str, help: &'static str, labels: Labels) -> Counter {
        Counter(self.series(name, help, Kind::Counter, labels, None))
    }

    /// The gauge `name{labels}`, created at 0 on first use.
    ///
    /// # Panics
    /// If `name` was registered as a counter.
    pub fn gauge(&self, name: &'static str, help: &'static str, labels: Labels) -> Gauge {
        Gauge(self.series(name, help, Kind::Gauge, labels, None))
    }

    /// Registers a count a component already keeps (such as a source that
    /// also runs without a registry) as `name{labels}`, replacing any
    /// series of that name and labels.
    pub fn attach_counter(&self, name: &'static str, help: &'static str, labels: Labels, counter: &Counter) {
        self.series(name, help, Kind::Counter, labels, Some(counter.0.clone()));
    }

    /// Registers a gauge a component already keeps, like [`Registry::attach_counter`].
    pub fn attach_gauge(&self, name: &'static str, help: &'static str, labels: Labels, gauge: &Gauge) {
        self.series(name, help, Kind::Gauge, labels, Some(gauge.0.clone()));
    }

    fn series(
        &self,
        name: &'static str,
        help: &'static str,
        kind: Kind,
        labels: Labels,
        attach: Option<Arc<AtomicU64>>,
    ) -> Arc<AtomicU64> {
        let mut families = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let family = families.entry(name).or_insert_with(|| Family {
            help,
            kind,
            series: BTreeMap::new(),
        });
        assert_eq!(family.kind, kind, "metric `{name}` registered as two kinds");
        match attach {
            Some(cell) => {
                family.series.insert(labels, cell.clone());
                cell
            }
            None => family.series.entry(labels).or_default().clone(),
        }
    }

    /// Every series and its value now, ordered by name, then labels.
    pub fn snapshot(&self) -> Snapshot {
        let families = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let mut samples = Vec::new();
        for (name, family) in families.iter() {
            for (labels, cell) in &family.series {
                let bits = cell.load(Ordering::Relaxed);
                samples.push(Sample {
                    name: (*name).to_owned(),
                    help: family.help.to_owned(),
                    labels: labels.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect(),
                    value: match family.kind {
                        Kind::Counter => Value::Counter(bits),
                        Kind::Gauge => Value::Gauge(f64::from_bits(bits)),
                    },
                });
            }
        }
        Snapshot { samples }
    }
}

/// A series' value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// A count.
    Counter(u64),
    /// A gauge's value.
    Gauge(f64),
}

/// One series at the moment of a [`Snapshot`].
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The metric name.
    pub name: String,
    /// What it measures.
    pub help: String,
    /// Label pairs, in registration order.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: Value,
}

impl Sample {
    /// The value of label `key`.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The value as a count (a gauge's value truncated).
    pub fn count(&self) -> u64 {
        match self.value {
            Value::Counter(n) => n,
            Value::Gauge(v) => v as u64,
        }
    }
}

/// Every series of a [`Registry`] at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Ordered by name, then labels.
    pub samples: Vec<Sample>,
}

impl Snapshot {
    /// The series of metric `name`.
    pub fn family<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| s.name == name)
    }

    /// The sum of metric `name` over all its labels (0 if it has no series).
    pub fn sum(&self, name: &str) -> u64 {
        self.family(name).map(Sample::count).fold(0, u64::saturating_add)
    }

    /// Whether metric `name` has a series.
    pub fn has(&self, name: &str) -> bool {
        self.family(name).next().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_share_one_count_and_readers_see_it() {
        let registry = Registry::new();
        let a = registry.counter(names::SINK_MESSAGES, "m", vec![("sink", "audit".into())]);
        let b = registry.counter(names::SINK_MESSAGES, "m", vec![("sink", "audit".into())]);
        let other = registry.counter(names::SINK_MESSAGES, "m", vec![("sink", "queue".into())]);
        a.inc();
        b.add(2);
        other.inc();
        assert_eq!(a.get(), 3);
        let snap = registry.snapshot();
        assert_eq!(snap.sum(names::SINK_MESSAGES), 4);
        let audit = snap
            .family(names::SINK_MESSAGES)
            .find(|s| s.label("sink") == Some("audit"));
        assert_eq!(audit.map(|s| s.value), Some(Value::Counter(3)));
        assert!(!snap.has(names::CHANGES));
    }

    #[test]
    fn counts_from_other_threads_add_up() {
        let registry = Registry::new();
        let c = registry.counter(names::CHANGES, "c", vec![]);
        std::thread::scope(|s| {
            for _ in 0..4 {
                let c = c.clone();
                s.spawn(move || (0..10_000).for_each(|_| c.inc()));
            }
        });
        assert_eq!(registry.snapshot().sum(names::CHANGES), 40_000);
    }

    #[test]
    fn attached_counts_are_read_through_the_registry() {
        let registry = Registry::new();
        let kept = Counter::detached();
        kept.add(5);
        registry.attach_counter(names::SOURCE_ROTATIONS, "r", vec![], &kept);
        kept.inc();
        let gauge = Gauge::detached();
        registry.attach_gauge(names::SOURCE_CONNECTED, "c", vec![], &gauge);
        gauge.set(1.0);
        let snap = registry.snapshot();
        assert_eq!(snap.sum(names::SOURCE_ROTATIONS), 6);
        assert_eq!(
            snap.family(names::SOURCE_CONNECTED).next().unwrap().value,
            Value::Gauge(1.0)
        );
    }

    #[test]
    fn guest_counts_saturate() {
        let c = Counter::detached();
        c.saturating_add(u64::MAX - 1);
        c.saturating_add(5);
        assert_eq!(c.get(), u64::MAX);
    }

    #[test]
    #[should_panic(expected = "two kinds")]
    fn a_name_has_one_kind() {
        let registry = Registry::new();
        registry.counter(names::CHANGES, "c", vec![]);
        registry.gauge(names::CHANGES, "c", vec![]);
    }
}
