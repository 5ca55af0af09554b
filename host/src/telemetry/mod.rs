//! Metrics every part of rowhook writes and anyone may read: the pipeline,
//! the live source, the sinks and the handlers' own `metrics` calls all
//! count into one [`Registry`]; `status.json`, `rowhook state` and
//! [`render_prometheus`] and [`render_openmetrics`] (the HTTP server's
//! `/metrics`) read it.
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

mod process;
mod prometheus;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

pub use self::process::register_process_metrics;
pub use self::prometheus::{OPENMETRICS_CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE, render_openmetrics, render_prometheus};

/// The metric names rowhook registers, in one place for writers and readers.
///
/// Every counter's name ends in `_total`: the OpenMetrics family is the
/// name without it ([`render_openmetrics`]).
pub mod names {
    /// Row changes of subscribed tables seen (`{table, op}`; past
    /// [`super::MAX_TABLE_LABELS`] tables the rest count as `table="other"`).
    pub const CHANGES: &str = "rowhook_changes_total";
    /// Transactions whose commit was seen.
    pub const TRANSACTIONS: &str = "rowhook_transactions_total";
    /// Snapshot chunks handed to handlers (their rows count in
    /// [`CHANGES`] with `op="snapshot"`).
    pub const SNAPSHOT_CHUNKS: &str = "rowhook_snapshot_chunks_total";
    /// Tables whose snapshot is asked for and not done.
    pub const SNAPSHOT_TABLES: &str = "rowhook_snapshot_tables_left";
    /// Batches committed to the store.
    pub const CHECKPOINTS: &str = "rowhook_checkpoints_total";
    /// `[cluster]`: 1 while this process holds the lease of its role
    /// (`{role="capture"}`), else 0.
    pub const CLUSTER_LEASE_HELD: &str = "rowhook_cluster_lease_held";
    /// `[cluster]`: changes the capture published that JetStream stored.
    pub const CLUSTER_PUBLISHED: &str = "rowhook_cluster_published_total";
    /// `[cluster]`: 1 while the process is connected to a NATS server of
    /// the cluster, else 0 (read when asked).
    pub const CLUSTER_NATS_CONNECTED: &str = "rowhook_cluster_nats_connected";
    /// `[cluster]`: partitions this worker owns.
    pub const CLUSTER_PARTITIONS_OWNED: &str = "rowhook_cluster_partitions_owned";
    /// `[cluster]`: live workers of the group, as this worker last counted.
    pub const CLUSTER_WORKERS: &str = "rowhook_cluster_workers";
    /// `[cluster]`: messages of an owned partition its consumer has not
    /// delivered yet (`{partition}`; 0 once the partition is given up).
    pub const CLUSTER_PARTITION_PENDING: &str = "rowhook_cluster_partition_pending";
    /// Seconds since the last batch was committed to the store (or since
    /// the store was opened), read when asked.
    pub const CHECKPOINT_AGE: &str = "rowhook_checkpoint_age_seconds";
    /// Prefix of the per-handler host counters (`{tenant, handler}`).
    pub const HANDLER_PREFIX: &str = "rowhook_handler_";
    /// Handler calls made.
    pub const HANDLER_CALLS: &str = "rowhook_handler_calls_total";
    /// How long handler calls took (a histogram).
    pub const HANDLER_CALL_SECONDS: &str = "rowhook_handler_call_seconds";
    /// Handler failures handled by `skip` or `dead-letter`, by `kind`.
    pub const HANDLER_ERRORS: &str = "rowhook_handler_errors_total";
    /// Hot reloads, by `result` (`ok`: swapped in; `failed`: refused, the
    /// previous version kept serving).
    pub const HANDLER_RELOADS: &str = "rowhook_handler_reloads_total";
    /// 1 once a handler's failure (or a sink's refusal of its messages)
    /// stopped the run under `on_error = "halt"`.
    pub const HANDLER_HALTED: &str = "rowhook_handler_halted";
    /// Times a handler's circuit breaker suspended it.
    pub const HANDLER_SUSPENSIONS: &str = "rowhook_handler_suspensions_total";
    /// Changes not handed to a suspended handler.
    pub const HANDLER_SUSPENDED: &str = "rowhook_handler_suspended_total";
    /// Times a tenant's circuit breaker suspended all its handlers.
    pub const TENANT_SUSPENSIONS: &str = "rowhook_tenant_suspensions_total";
    /// 1 while a tenant's circuit breaker holds its handlers suspended.
    pub const TENANT_SUSPENDED: &str = "rowhook_tenant_suspended";
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
    /// A counter a handler adds to (`{tenant, handler, name}`).
    pub const GUEST_COUNTER: &str = "rowhook_handler_counter_total";
    /// A gauge a handler sets (`{tenant, handler, name}`).
    pub const GUEST_GAUGE: &str = "rowhook_handler_gauge";
    /// Dead letters written for a handler (`{tenant, handler}`).
    pub const DEAD_LETTERS: &str = "rowhook_dead_letters_total";
    /// Prefix of the per-sink counters (`{sink}`).
    pub const SINK_PREFIX: &str = "rowhook_sink_";
    /// Messages written to a sink, by `result` (`ok`: acknowledged;
    /// `refused`: refused beyond its retries, handled by `skip` or `dead-letter`).
    pub const SINK_MESSAGES: &str = "rowhook_sink_messages_total";
    /// Writes retried because the sink was unavailable.
    pub const SINK_RETRIES: &str = "rowhook_sink_retries_total";
    /// How long a sink took to take a batch, retries included (a histogram).
    pub const SINK_WRITE_SECONDS: &str = "rowhook_sink_write_seconds";
    /// 1 while a sink's last batch was refused beyond its retries.
    pub const SINK_FAILING: &str = "rowhook_sink_failing";
    /// Streams resumed after a loss, by `cause`.
    pub const RECONNECTS: &str = "rowhook_reconnects_total";
    /// Reconnection attempts that failed.
    pub const SOURCE_RECONNECT_FAILURES: &str = "rowhook_source_reconnect_failures_total";
    /// Binlog rotations followed.
    pub const BINLOG_ROTATIONS: &str = "rowhook_binlog_rotations_total";
    /// 1 while a stream is connected, 0 while reconnecting.
    pub const SOURCE_CONNECTED: &str = "rowhook_source_connected";
    /// Now minus the binlog timestamp of the last transaction handled; 0
    /// while the stream is caught up and idle.
    pub const SOURCE_LAG_SECONDS: &str = "rowhook_source_lag_seconds";
    /// Binlog bytes the server has written past the last transaction
    /// handled (`run` with `[http]`; asked every 2 s).
    pub const SOURCE_LAG_BYTES: &str = "rowhook_source_lag_bytes";
    /// CPU time of the process (user + system), read from `/proc/self/stat`.
    pub const PROCESS_CPU: &str = "process_cpu_seconds_total";
    /// Resident memory of the process, read from `/proc/self/statm`.
    pub const PROCESS_RSS: &str = "process_resident_memory_bytes";
}

/// Distinct tables `rowhook_changes_total` is labelled with; changes of
/// tables past these count as `table="other"`, so a schema of many tables
/// cannot grow the metrics without bound.
pub const MAX_TABLE_LABELS: usize = 100;

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

/// A distribution of durations: a fixed set of buckets, each an atomic
/// count, so that observing is a few relaxed atomic adds, no lock, no
/// allocation. Cloning gives another handle on the same histogram.
#[derive(Debug, Clone)]
pub struct Histogram(Arc<HistogramCells>);

#[derive(Debug)]
struct HistogramCells {
    /// Upper bounds in seconds, ascending; a last bucket (`+Inf`) follows.
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative), `bounds.len() + 1` of them.
    buckets: Box<[AtomicU64]>,
    /// Sum of the observations, in nanoseconds.
    sum_nanos: AtomicU64,
}

/// The buckets of rowhook's duration histograms: 10 µs to 10 s.
pub const DURATION_BUCKETS: &[f64] = &[
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    0.5, 1.0, 2.5, 5.0, 10.0,
];

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram(Arc::new(HistogramCells {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }))
    }

    /// A histogram that belongs to no registry.
    pub fn detached() -> Histogram {
        Histogram::new(DURATION_BUCKETS)
    }

    /// Counts one observation of `d`.
    #[inline]
    pub fn observe(&self, d: std::time::Duration) {
        let secs = d.as_secs_f64();
        let cells = &self.0;
        let i = cells
            .bounds
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(cells.bounds.len());
        cells.buckets[i].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        cells.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.0.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    fn value(&self) -> HistogramValue {
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(self.0.buckets.len());
        for (i, b) in self.0.buckets.iter().enumerate() {
            cumulative += b.load(Ordering::Relaxed);
            buckets.push((self.0.bounds.get(i).copied().unwrap_or(f64::INFINITY), cumulative));
        }
        HistogramValue {
            buckets,
            count: cumulative,
            sum: self.0.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

/// A histogram's value at the moment of a [`Snapshot`].
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramValue {
    /// Upper bound and cumulative count of each bucket, the last `+Inf`.
    pub buckets: Vec<(f64, u64)>,
    /// Observations.
    pub count: u64,
    /// Their sum, in seconds.
    pub sum: f64,
}

/// A value computed when the registry is read (an age, a lag, what
/// `/proc` says), not kept up to date by the code it describes.
pub type Computed = Arc<dyn Fn() -> f64 + Send + Sync>;

/// Label pairs of one series, in the order given at registration.
pub type Labels = Vec<(&'static str, String)>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Where one series' value lives.
#[derive(Clone)]
enum Cell {
    Atomic(Arc<AtomicU64>),
    Histogram(Histogram),
    Computed(Computed),
}

impl std::fmt::Debug for Cell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cell::Atomic(a) => a.fmt(f),
            Cell::Histogram(h) => h.fmt(f),
            Cell::Computed(_) => f.write_str("Computed"),
        }
    }
}

#[derive(Debug)]
struct Family {
    help: &'static str,
    kind: Kind,
    series: BTreeMap<Labels, Cell>,
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
    /// If `name` was registered as another kind: a programming error.
    pub fn counter(&self, name: &'static str, help: &'static str, labels: Labels) -> Counter {
        Counter(self.atomic(name, help, Kind::Counter, labels, None))
    }

    /// The gauge `name{labels}`, created at 0 on first use.
    ///
    /// # Panics
    /// If `name` was registered as another kind.
    pub fn gauge(&self, name: &'static str, help: &'static str, labels: Labels) -> Gauge {
        Gauge(self.atomic(name, help, Kind::Gauge, labels, None))
    }

    /// The duration histogram `name{labels}` ([`DURATION_BUCKETS`]),
    /// created empty on first use.
    ///
    /// # Panics
    /// If `name` was registered as another kind.
    pub fn histogram(&self, name: &'static str, help: &'static str, labels: Labels) -> Histogram {
        let mut families = self.families(name, help, Kind::Histogram);
        let family = families.get_mut(name).expect("just made");
        match family
            .series
            .entry(labels)
            .or_insert_with(|| Cell::Histogram(Histogram::new(DURATION_BUCKETS)))
        {
            Cell::Histogram(h) => h.clone(),
            _ => unreachable!("a histogram family holds histograms"),
        }
    }

    /// The gauge `name{labels}` whose value `read` computes whenever the
    /// registry is read (replacing any series of that name and labels).
    pub fn computed_gauge(&self, name: &'static str, help: &'static str, labels: Labels, read: Computed) {
        self.computed(name, help, Kind::Gauge, labels, read);
    }

    /// Like [`Registry::computed_gauge`], for a count kept elsewhere (CPU
    /// seconds): rendered as a counter.
    pub fn computed_counter(&self, name: &'static str, help: &'static str, labels: Labels, read: Computed) {
        self.computed(name, help, Kind::Counter, labels, read);
    }

    fn computed(&self, name: &'static str, help: &'static str, kind: Kind, labels: Labels, read: Computed) {
        self.families(name, help, kind)
            .get_mut(name)
            .expect("just made")
            .series
            .insert(labels, Cell::Computed(read));
    }

    /// Registers a count a component already keeps (such as a source that
    /// also runs without a registry) as `name{labels}`, replacing any
    /// series of that name and labels.
    pub fn attach_counter(&self, name: &'static str, help: &'static str, labels: Labels, counter: &Counter) {
        self.atomic(name, help, Kind::Counter, labels, Some(counter.0.clone()));
    }

    /// Registers a gauge a component already keeps, like [`Registry::attach_counter`].
    pub fn attach_gauge(&self, name: &'static str, help: &'static str, labels: Labels, gauge: &Gauge) {
        self.atomic(name, help, Kind::Gauge, labels, Some(gauge.0.clone()));
    }

    /// The families, locked, with `name` present as `kind`.
    fn families(
        &self,
        name: &'static str,
        help: &'static str,
        kind: Kind,
    ) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, Family>> {
        let mut families = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let family = families.entry(name).or_insert_with(|| Family {
            help,
            kind,
            series: BTreeMap::new(),
        });
        assert_eq!(family.kind, kind, "metric `{name}` registered as two kinds");
        families
    }

    fn atomic(
        &self,
        name: &'static str,
        help: &'static str,
        kind: Kind,
        labels: Labels,
        attach: Option<Arc<AtomicU64>>,
    ) -> Arc<AtomicU64> {
        let mut families = self.families(name, help, kind);
        let family = families.get_mut(name).expect("just made");
        match attach {
            Some(cell) => {
                family.series.insert(labels, Cell::Atomic(cell.clone()));
                cell
            }
            None => match family
                .series
                .entry(labels)
                .or_insert_with(|| Cell::Atomic(Arc::default()))
            {
                Cell::Atomic(a) => a.clone(),
                // A computed series of that name and labels gives way to a
                // kept one.
                other => {
                    let a = Arc::<AtomicU64>::default();
                    *other = Cell::Atomic(a.clone());
                    a
                }
            },
        }
    }

    /// Every series and its value now, ordered by name, then labels.
    /// Computed series are read outside the registry's lock.
    pub fn snapshot(&self) -> Snapshot {
        let cells: Vec<(&'static str, &'static str, Kind, Labels, Cell)> = {
            let families = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            families
                .iter()
                .flat_map(|(name, family)| {
                    family
                        .series
                        .iter()
                        .map(move |(labels, cell)| (*name, family.help, family.kind, labels.clone(), cell.clone()))
                })
                .collect()
        };
        let samples = cells
            .into_iter()
            .map(|(name, help, kind, labels, cell)| Sample {
                name: name.to_owned(),
                help: help.to_owned(),
                labels: labels.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
                value: match (kind, cell) {
                    (Kind::Counter, Cell::Atomic(a)) => Value::Counter(a.load(Ordering::Relaxed)),
                    (Kind::Gauge, Cell::Atomic(a)) => Value::Gauge(f64::from_bits(a.load(Ordering::Relaxed))),
                    (Kind::Counter, Cell::Computed(read)) => Value::CounterF64(read()),
                    (_, Cell::Computed(read)) => Value::Gauge(read()),
                    (_, Cell::Histogram(h)) => Value::Histogram(h.value()),
                    (Kind::Histogram, Cell::Atomic(_)) => unreachable!("a histogram family holds histograms"),
                },
            })
            .collect();
        Snapshot { samples }
    }
}

/// A series' value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A count.
    Counter(u64),
    /// A count that is not whole (CPU seconds).
    CounterF64(f64),
    /// A gauge's value.
    Gauge(f64),
    /// A histogram's buckets, count and sum.
    Histogram(HistogramValue),
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

    /// The value as a count (a gauge's value truncated, a histogram's
    /// observations).
    pub fn count(&self) -> u64 {
        match &self.value {
            Value::Counter(n) => *n,
            Value::CounterF64(v) | Value::Gauge(v) => *v as u64,
            Value::Histogram(h) => h.count,
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

    /// The sum of metric `name` over its series whose label `key` is `value`.
    pub fn sum_where(&self, name: &str, key: &str, value: &str) -> u64 {
        self.family(name)
            .filter(|s| s.label(key) == Some(value))
            .map(Sample::count)
            .fold(0, u64::saturating_add)
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
        assert_eq!(audit.map(|s| s.value.clone()), Some(Value::Counter(3)));
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
        registry.attach_counter(names::BINLOG_ROTATIONS, "r", vec![], &kept);
        kept.inc();
        let gauge = Gauge::detached();
        registry.attach_gauge(names::SOURCE_CONNECTED, "c", vec![], &gauge);
        gauge.set(1.0);
        let snap = registry.snapshot();
        assert_eq!(snap.sum(names::BINLOG_ROTATIONS), 6);
        assert_eq!(
            snap.family(names::SOURCE_CONNECTED).next().unwrap().value.clone(),
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
    fn histograms_count_into_fixed_buckets() {
        let registry = Registry::new();
        let h = registry.histogram(names::HANDLER_CALL_SECONDS, "h", vec![]);
        h.observe(std::time::Duration::from_micros(5));
        h.observe(std::time::Duration::from_millis(3));
        h.observe(std::time::Duration::from_secs(60));
        let snap = registry.snapshot();
        let Value::Histogram(v) = &snap.family(names::HANDLER_CALL_SECONDS).next().unwrap().value else {
            panic!("not a histogram");
        };
        assert_eq!(v.count, 3);
        assert!((v.sum - 60.003_005).abs() < 1e-9, "{}", v.sum);
        assert_eq!(v.buckets.first(), Some(&(0.000_01, 1)));
        assert_eq!(v.buckets.iter().find(|(le, _)| *le == 0.005), Some(&(0.005, 2)));
        assert_eq!(v.buckets.last(), Some(&(f64::INFINITY, 3)));
    }

    #[test]
    fn computed_series_are_read_at_snapshot() {
        let registry = Registry::new();
        let n = Arc::new(AtomicU64::new(1));
        let read = n.clone();
        registry.computed_gauge(
            names::SOURCE_LAG_SECONDS,
            "l",
            vec![],
            Arc::new(move || read.load(Ordering::Relaxed) as f64),
        );
        n.store(7, Ordering::Relaxed);
        assert_eq!(registry.snapshot().sum(names::SOURCE_LAG_SECONDS), 7);
    }

    #[test]
    #[should_panic(expected = "two kinds")]
    fn a_name_has_one_kind() {
        let registry = Registry::new();
        registry.counter(names::CHANGES, "c", vec![]);
        registry.gauge(names::CHANGES, "c", vec![]);
    }
}
