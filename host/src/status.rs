//! The status report: what the store holds (position, each handler's state
//! size, dead letters) and, from a run, its metrics: the totals, each
//! handler's and each sink's counters and the handlers' own metrics, read
//! from its [`crate::telemetry::Registry`]. `rowhook state` prints it
//! ([`crate::cli::state`]); `rowhook run` (and `replay --checkpoint`)
//! rewrite it as `status.json` beside the store, so that the report can be
//! read while the store is held and the last run's metrics after it ended.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::source::reconnect::SourceSnapshot;
use crate::store::Checkpoint;
use crate::telemetry::{Snapshot, Value, names};

/// The status file a running rowhook rewrites at each checkpoint.
pub const STATUS_FILE: &str = "status.json";

/// What `rowhook state` reports.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    /// The store's database file.
    pub store: PathBuf,
    /// Where a restart resumes, if anything was committed.
    pub position: Option<Checkpoint>,
    /// Tenants' lanes past `position` (another tenant's lane halted behind
    /// them), and where each is: a restart gives their handlers only what
    /// comes after it.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub lanes: std::collections::BTreeMap<String, Checkpoint>,
    /// Tenants' lanes reading on a connection of their own (catching up,
    /// or kept to their CPU share), and where each is in the store.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub lanes_apart: std::collections::BTreeMap<String, Checkpoint>,
    /// What is left of a snapshot: the tables still to read, the first in
    /// progress (committed chunks and rows, and the key it goes on after).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<crate::snapshot::Progress>,
    /// Per handler: keys and bytes of state.
    pub handlers: Vec<HandlerState>,
    /// Dead letters recorded.
    pub dead_letters: u64,
    /// Set when the report comes from a running rowhook's status file.
    pub live_status_written_at: Option<u64>,
    /// When the status file that the metrics below come from was written
    /// (unix seconds): by the running rowhook, or by the last run that
    /// kept checkpoints (`run`, `replay --checkpoint`) once it is over.
    #[serde(default)]
    pub metrics_written_at: Option<u64>,
    /// Where the server is and how far behind the position is.
    pub server: Option<ServerPosition>,
    /// A run's totals since it started (status file only).
    #[serde(default)]
    pub stats: Option<Stats>,
    /// A run's connection to the server (status file of `run` only).
    #[serde(default)]
    pub source: Option<SourceSnapshot>,
    /// A run's metrics per handler (status file only).
    #[serde(default)]
    pub handler_metrics: Vec<HandlerMetrics>,
    /// A run's counters per sink (status file only).
    #[serde(default)]
    pub sinks: Vec<SinkMetrics>,
    /// With `[cluster]`: the stream, the capture's lease and checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterReport>,
}

/// What JetStream holds of a `[cluster]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterReport {
    /// The stream.
    pub stream: String,
    /// Its partitions, as recorded when it was made (0: not yet).
    pub partitions: u32,
    /// Messages it holds.
    pub messages: u64,
    /// Bytes it holds.
    pub bytes: u64,
    /// Its last sequence.
    pub last_sequence: u64,
    /// Who holds the capture lease, if anyone.
    pub capture_holder: Option<String>,
    /// The capture's checkpoint: where the next capture starts.
    pub capture_position: Option<Checkpoint>,
    /// The workers of the group that announce themselves now.
    #[serde(default)]
    pub workers: Vec<String>,
    /// Each partition: its owner, what its state covers, and its lag.
    #[serde(default)]
    pub partitions_detail: Vec<PartitionReport>,
    /// Why the rest could not be read, if so.
    pub error: Option<String>,
}

/// One partition of a `[cluster]` group.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionReport {
    /// The partition.
    pub partition: u32,
    /// The worker holding its lease, if any.
    pub owner: Option<String>,
    /// The stream sequence its handler state covers.
    pub state_seq: u64,
    /// Messages of the partition its consumer has not delivered yet.
    pub pending: Option<u64>,
    /// Messages delivered and not yet acknowledged.
    pub unacked: Option<u64>,
}

/// One handler's metrics: what the host counted of it, and what the
/// handler's own `metrics` calls set.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct HandlerMetrics {
    /// Its tenant.
    pub tenant: String,
    /// The handler.
    pub name: String,
    /// The host's counters of it, by the name of metric
    /// `rowhook_handler_NAME_total` (summed over its other labels): `calls`,
    /// `errors`, `reloads` (`result="ok"`), `reload_failures`
    /// (`result="failed"`), `log_lines_dropped`, `metric_calls_ignored`.
    #[serde(flatten)]
    pub host: BTreeMap<String, u64>,
    /// Its `metrics.counter-add` counters.
    #[serde(default)]
    pub counters: BTreeMap<String, u64>,
    /// Its `metrics.gauge-set` gauges.
    #[serde(default)]
    pub gauges: BTreeMap<String, f64>,
}

impl HandlerMetrics {
    /// Every handler's metrics in a registry snapshot, by tenant and name.
    pub fn from_snapshot(snap: &Snapshot) -> Vec<HandlerMetrics> {
        let mut by_handler: BTreeMap<(String, String), HandlerMetrics> = BTreeMap::new();
        for s in &snap.samples {
            let (Some(tenant), Some(name)) = (s.label("tenant"), s.label("handler")) else {
                continue;
            };
            let h = by_handler
                .entry((tenant.to_owned(), name.to_owned()))
                .or_insert_with(|| HandlerMetrics {
                    tenant: tenant.to_owned(),
                    name: name.to_owned(),
                    ..HandlerMetrics::default()
                });
            let guest = s.label("name").unwrap_or_default().to_owned();
            match (s.name.as_str(), &s.value) {
                (names::GUEST_COUNTER, Value::Counter(n)) => {
                    h.counters.insert(guest, *n);
                }
                (names::GUEST_GAUGE, Value::Gauge(v)) => {
                    h.gauges.insert(guest, *v);
                }
                (names::HANDLER_RELOADS, Value::Counter(n)) => {
                    let key = match s.label("result") {
                        Some("failed") => "reload_failures",
                        _ => "reloads",
                    };
                    *h.host.entry(key.to_owned()).or_default() += n;
                }
                (other, Value::Counter(n)) => {
                    // Series of one name (errors by kind) add up.
                    if let Some(key) = short_name(other, names::HANDLER_PREFIX) {
                        *h.host.entry(key.to_owned()).or_default() += n;
                    }
                }
                _ => {}
            }
        }
        by_handler.into_values().collect()
    }
}

/// One sink's counters.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SinkMetrics {
    /// The sink.
    pub name: String,
    /// Its counters, by the name of metric `rowhook_sink_NAME_total`:
    /// `messages` (`rowhook_sink_messages_total{result="ok"}`), `refused`
    /// (`{result="refused"}`), `retries` for every sink, and a kind's own
    /// (a file sink's `fsyncs`, `rotations`, `repairs`).
    #[serde(flatten)]
    pub counters: BTreeMap<String, u64>,
}

impl SinkMetrics {
    /// Every sink's counters in a registry snapshot, by name.
    pub fn from_snapshot(snap: &Snapshot) -> Vec<SinkMetrics> {
        let mut by_sink: BTreeMap<String, SinkMetrics> = BTreeMap::new();
        for s in &snap.samples {
            let (Some(sink), Value::Counter(n)) = (s.label("sink"), &s.value) else {
                continue;
            };
            let key = match (s.name.as_str(), s.label("result")) {
                (names::SINK_MESSAGES, Some("refused")) => "refused",
                (names::SINK_MESSAGES, _) => "messages",
                (other, _) => match short_name(other, names::SINK_PREFIX) {
                    Some(key) => key,
                    None => continue,
                },
            };
            *by_sink
                .entry(sink.to_owned())
                .or_insert_with(|| SinkMetrics {
                    name: sink.to_owned(),
                    ..SinkMetrics::default()
                })
                .counters
                .entry(key.to_owned())
                .or_default() += n;
        }
        by_sink.into_values().collect()
    }
}

/// `rowhook_sink_fsyncs_total` → `fsyncs` for prefix `rowhook_sink_`.
fn short_name<'a>(metric: &'a str, prefix: &str) -> Option<&'a str> {
    metric.strip_prefix(prefix)?.strip_suffix("_total")
}

fn default_tenant() -> String {
    "default".to_owned()
}

/// One handler's state size.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct HandlerState {
    /// Its tenant.
    #[serde(default = "default_tenant")]
    pub tenant: String,
    /// The handler.
    pub name: String,
    /// Keys.
    pub keys: u64,
    /// Bytes of keys and values: what counts against `limits.state_mb`.
    pub bytes: u64,
    /// Changes held for it (suspended with `while_suspended = "hold"`, or
    /// paused), not yet handed over.
    #[serde(default)]
    pub held: u64,
    /// Their bytes: what counts against `breaker.hold_mb`.
    #[serde(default)]
    pub held_bytes: u64,
    /// Where they wait: how many in the binlog and from where, how many
    /// in its held file ([`crate::store::held_place`]).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub held_where: String,
    /// Its latest failure in this run, if it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<LastError>,
}

/// A handler's latest failure: what the dashboard shows beside its counts.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct LastError {
    /// When, in seconds since the Unix epoch.
    pub at: u64,
    /// The change it failed on (`file:pos:row`).
    pub change: String,
    /// Its kind, as the `kind` label of `rowhook_handler_errors_total`.
    pub kind: String,
    /// What failed; past [`LastError::MAX_MESSAGE`] bytes its beginning
    /// and its end (where a trap's text ends with what the guest wrote to
    /// stderr: its panic message), the middle cut out.
    pub message: String,
}

impl LastError {
    /// The most of a failure's message kept.
    pub const MAX_MESSAGE: usize = 512;
    /// Of a longer message, the bytes kept from its beginning; the rest
    /// are its end.
    const HEAD: usize = 160;

    /// A failure; a message past [`LastError::MAX_MESSAGE`] bytes keeps
    /// its beginning and its end, cut on character boundaries and joined
    /// by ` … `.
    pub fn new(at: u64, change: String, kind: &str, message: &str) -> LastError {
        let kept = if message.len() <= LastError::MAX_MESSAGE {
            message.to_owned()
        } else {
            let mut head = LastError::HEAD;
            while !message.is_char_boundary(head) {
                head -= 1;
            }
            let mut tail = message.len() - (LastError::MAX_MESSAGE - LastError::HEAD);
            while !message.is_char_boundary(tail) {
                tail += 1;
            }
            format!("{} … {}", &message[..head], &message[tail..])
        };
        LastError {
            at,
            change,
            kind: kind.to_owned(),
            message: kept,
        }
    }
}

/// The server's binlog end and the lag of the checkpoint behind it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ServerPosition {
    /// The file being written.
    pub file: String,
    /// Its current end.
    pub pos: u64,
    /// Binlog bytes between the checkpoint and the end; `None` if the
    /// checkpoint's file is no longer on the server.
    pub bytes_behind: Option<u64>,
    /// Why the server could not be asked, if it could not.
    pub error: Option<String>,
}

/// The latest status report of a running rowhook, shared with readers on
/// other threads (the HTTP server's `/status`, `/events` and `/readyz`).
/// The pipeline replaces it when it writes the status file (at checkpoints
/// and on its timer), never per change; a reader takes the lock only to
/// clone an `Arc`. Cloning gives another handle on the same slot.
#[derive(Debug, Clone, Default)]
pub struct LiveStatus(Arc<Mutex<LiveInner>>);

#[derive(Debug, Default)]
struct LiveInner {
    /// The report as one line of JSON.
    json: Option<Arc<str>>,
    /// Why the run stopped, once it did on an error.
    stopped: Option<Arc<str>>,
}

impl LiveStatus {
    /// A slot with no report yet.
    pub fn new() -> LiveStatus {
        LiveStatus::default()
    }

    /// Replaces the report (serialised before the lock is taken).
    pub fn publish(&self, report: &Report) {
        match serde_json::to_string(report) {
            Ok(json) => self.lock().json = Some(json.into()),
            Err(e) => tracing::warn!("serialising the status report: {e}"),
        }
    }

    /// The latest report as one line of JSON, if one was published.
    pub fn json(&self) -> Option<Arc<str>> {
        self.lock().json.clone()
    }

    /// Records that the run stopped on an error, and why.
    pub fn set_stopped(&self, why: &str) {
        self.lock().stopped = Some(why.into());
    }

    /// Why the run stopped, if it stopped on an error.
    pub fn stopped(&self) -> Option<Arc<str>> {
        self.lock().stopped.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LiveInner> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Writes the status file of a running rowhook (atomically, by rename:
/// see [`replace_file`]).
pub fn write_status(dir: &Path, report: &Report) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(report).map_err(std::io::Error::other)?;
    replace_file(&dir.join(STATUS_FILE), &bytes, false)
}

/// Replaces `path` with `bytes` by writing a temporary file beside it and
/// renaming it over `path`, so that no reader sees half of it (after an
/// fsync of the temporary file if `sync`).
///
/// The temp file (`NAME.tmp`) is created anew (`O_EXCL`, mode 0600):
/// whatever is at its name, a file a crash left or a link planted there,
/// is removed first and never followed, so the write cannot land anywhere
/// but beside `path`; the rename replaces a link at `path` itself, never
/// what it points to.
pub fn replace_file(path: &Path, bytes: &[u8], sync: bool) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;

    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!("{name}.tmp"));
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(&tmp)?;
    file.write_all(bytes)?;
    if sync {
        file.sync_all()?;
    }
    drop(file);
    std::fs::rename(&tmp, path)
}

/// The totals of a run, summed over handlers and sinks: what `rowhook
/// replay` prints and `stats` of the status file. Read from the
/// [`crate::telemetry::Registry`] ([`Stats::from_snapshot`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
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
    /// Module versions swapped in by hot reload.
    pub reloads: u64,
    /// Changed module files refused (the previous version kept serving).
    pub reload_failures: u64,
    /// Batches committed to the store.
    pub checkpoints: u64,
    /// Messages a sink refused beyond its retries, handled by `skip` or `dead-letter`.
    pub sink_failures: u64,
    /// Writes retried because a sink was unavailable.
    pub sink_retries: u64,
}

impl Stats {
    /// The totals in a snapshot of the registry a
    /// [`crate::pipeline::Pipeline`] counts in.
    pub fn from_snapshot(snap: &Snapshot) -> Stats {
        Stats {
            changes: snap.sum(names::CHANGES),
            calls: snap.sum(names::HANDLER_CALLS),
            messages: snap.sum_where(names::SINK_MESSAGES, "result", "ok"),
            handler_errors: snap.sum(names::HANDLER_ERRORS),
            commits: snap.sum(names::TRANSACTIONS),
            reloads: snap.sum_where(names::HANDLER_RELOADS, "result", "ok"),
            reload_failures: snap.sum_where(names::HANDLER_RELOADS, "result", "failed"),
            checkpoints: snap.sum(names::CHECKPOINTS),
            sink_failures: snap.sum_where(names::SINK_MESSAGES, "result", "refused"),
            sink_retries: snap.sum(names::SINK_RETRIES),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn a_long_error_keeps_its_beginning_and_end_on_character_boundaries() {
        let short = LastError::new(7, "f:4:0".into(), "trap", "boom");
        assert_eq!(short.message, "boom");
        // 'é' is two bytes: both cuts fall inside one.
        let long = format!("start x{} panicked at the end", "é".repeat(400));
        let cut = LastError::new(7, "f:4:0".into(), "trap", &long);
        let (head, tail) = cut.message.split_once(" … ").unwrap();
        assert!(long.starts_with(head) && long.ends_with(tail), "{}", cut.message);
        assert!(head.starts_with("start x") && tail.ends_with("panicked at the end"));
        assert!(head.len() + tail.len() <= LastError::MAX_MESSAGE, "{}", cut.message);
        assert!(head.len() + tail.len() >= LastError::MAX_MESSAGE - 2, "{}", cut.message);
    }

    #[test]
    fn a_planted_temp_link_is_not_followed() {
        let dir = std::env::temp_dir().join(format!("rowhook-status-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let victim = dir.join("victim");
        std::fs::write(&victim, "keep").unwrap();
        std::os::unix::fs::symlink(&victim, dir.join(format!("{STATUS_FILE}.tmp"))).unwrap();
        write_status(&dir, &Report::default()).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        let status = dir.join(STATUS_FILE);
        assert!(std::fs::read_to_string(&status).unwrap().contains("\"dead_letters\""));
        assert_eq!(std::fs::metadata(&status).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
