//! `rowhook state`: what the store holds (position, lag behind the server,
//! each handler's state size, dead letters), and the two explicit changes
//! an operator may make: reset a handler's state, move the start position.
//!
//! While `rowhook run` holds the store, the report comes from the status
//! file it writes at each checkpoint, and changes are refused. The status
//! file also carries the run's metrics (read from its
//! [`crate::telemetry::Registry`]); once the run is over, the report
//! shows the last ones it wrote beside what the store holds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::config::Plan;
use crate::pipeline::Stats;
use crate::source::StartPosition;
use crate::source::reconnect::SourceSnapshot;
use crate::store::{Checkpoint, StateSize, Store};
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
    /// `rowhook_handler_NAME_total`: `calls`, `errors`, `reloads`,
    /// `reload_failures`, `log_lines_dropped`, `metric_calls_ignored`.
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
            match (s.name.as_str(), s.value) {
                (names::GUEST_COUNTER, Value::Counter(n)) => {
                    h.counters.insert(guest, n);
                }
                (names::GUEST_GAUGE, Value::Gauge(v)) => {
                    h.gauges.insert(guest, v);
                }
                (other, Value::Counter(n)) => {
                    if let Some(key) = short_name(other, names::HANDLER_PREFIX) {
                        h.host.insert(key.to_owned(), n);
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
    /// `messages`, `retries`, `refused` for every sink, and a kind's own
    /// (a file sink's `fsyncs`, `rotations`, `repairs`).
    #[serde(flatten)]
    pub counters: BTreeMap<String, u64>,
}

impl SinkMetrics {
    /// Every sink's counters in a registry snapshot, by name.
    pub fn from_snapshot(snap: &Snapshot) -> Vec<SinkMetrics> {
        let mut by_sink: BTreeMap<String, SinkMetrics> = BTreeMap::new();
        for s in &snap.samples {
            let (Some(sink), Value::Counter(n)) = (s.label("sink"), s.value) else {
                continue;
            };
            let Some(key) = short_name(&s.name, names::SINK_PREFIX) else {
                continue;
            };
            by_sink
                .entry(sink.to_owned())
                .or_insert_with(|| SinkMetrics {
                    name: sink.to_owned(),
                    ..SinkMetrics::default()
                })
                .counters
                .insert(key.to_owned(), n);
        }
        by_sink.into_values().collect()
    }
}

/// `rowhook_sink_fsyncs_total` → `fsyncs` for prefix `rowhook_sink_`.
fn short_name<'a>(metric: &'a str, prefix: &str) -> Option<&'a str> {
    metric.strip_prefix(prefix)?.strip_suffix("_total")
}

/// One handler's state size.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct HandlerState {
    /// The handler.
    pub name: String,
    /// Keys.
    pub keys: u64,
    /// Bytes of keys and values (unknown in a status file: 0).
    pub bytes: u64,
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

/// Writes the status file of a running rowhook (atomically, by rename).
pub fn write_status(dir: &Path, report: &Report) -> std::io::Result<()> {
    let tmp = dir.join(format!("{STATUS_FILE}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec_pretty(report).map_err(std::io::Error::other)?)?;
    std::fs::rename(&tmp, dir.join(STATUS_FILE))
}

fn sizes(store: &Store) -> anyhow::Result<Vec<HandlerState>> {
    Ok(store
        .state_sizes()?
        .into_iter()
        .map(|(name, StateSize { keys, bytes })| HandlerState { name, keys, bytes })
        .collect())
}

/// Opens the store of `plan`, or says that a running rowhook holds it.
fn open(plan: &Plan) -> anyhow::Result<Result<Store, anyhow::Error>> {
    match Store::open(&plan.state.path) {
        Ok(s) => Ok(Ok(s)),
        Err(e) if e.is::<crate::store::InUse>() => Ok(Err(e)),
        Err(e) => Err(e),
    }
}

/// The report for `plan`'s store, with the server's position when the
/// config has a `[source]`.
pub async fn report(plan: &Plan) -> anyhow::Result<Report> {
    let mut report = match open(plan)? {
        Ok(store) => Report {
            store: store.path().to_owned(),
            position: store.position()?,
            handlers: sizes(&store)?,
            dead_letters: store.dead_letter_count()?,
            ..last_run_metrics(&plan.state.path.join(STATUS_FILE))
        },
        Err(_) => {
            let path = plan.state.path.join(STATUS_FILE);
            let text = std::fs::read(&path).with_context(|| {
                format!(
                    "the store in {} is held by a running rowhook, and its status file cannot be read",
                    plan.state.path.display()
                )
            })?;
            let mut report: Report =
                serde_json::from_slice(&text).with_context(|| format!("{} is unreadable", path.display()))?;
            report.metrics_written_at = report.live_status_written_at;
            report
        }
    };
    if let Some(source) = &plan.source {
        report.server = Some(match server_position(&source.url, report.position.as_ref()).await {
            Ok(p) => p,
            Err(e) => ServerPosition {
                error: Some(format!("{e:#}")),
                ..ServerPosition::default()
            },
        });
    }
    Ok(report)
}

/// The metrics of the status file the last run left (nothing if there is
/// none, or it is unreadable: status is advisory).
fn last_run_metrics(path: &Path) -> Report {
    let Some(last) = std::fs::read(path)
        .ok()
        .and_then(|text| serde_json::from_slice::<Report>(&text).ok())
    else {
        return Report::default();
    };
    Report {
        metrics_written_at: last.live_status_written_at,
        stats: last.stats,
        source: last.source,
        handler_metrics: last.handler_metrics,
        sinks: last.sinks,
        ..Report::default()
    }
}

async fn server_position(
    url: &crate::source::server::SourceUrl,
    cp: Option<&Checkpoint>,
) -> anyhow::Result<ServerPosition> {
    let mut conn = url.connect().await?;
    let logs = crate::source::live::binary_logs(&mut conn)
        .await
        .map_err(|e| url.explain(e))?;
    let _ = conn.disconnect().await;
    let (file, pos) = logs.last().cloned().context("the server lists no binary logs")?;
    let bytes_behind = cp.and_then(|cp| {
        let at = logs.iter().position(|(n, _)| *n == cp.file)?;
        let rest = logs[at..].iter().fold(0u64, |sum, (_, size)| sum.saturating_add(*size));
        Some(rest.saturating_sub(cp.pos))
    });
    Ok(ServerPosition {
        file,
        pos,
        bytes_behind,
        error: None,
    })
}

/// The report as text for people.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    out.push_str(&format!("store         {}\n", report.store.display()));
    if let Some(at) = report.live_status_written_at {
        out.push_str(&format!(
            "              (held by a running rowhook: as of its checkpoint at unix time {at})\n"
        ));
    }
    match &report.position {
        Some(cp) if cp.file.is_empty() => out.push_str(&format!("position      GTID set {}\n", cp.gtids)),
        Some(cp) => {
            out.push_str(&format!("position      {}:{}", cp.file, cp.pos));
            if !cp.gtids.is_empty() {
                out.push_str(&format!(" (GTIDs {})", cp.gtids));
            }
            out.push_str(&format!(", after transaction {} (binlog time {})\n", cp.txn, cp.ts));
        }
        None => out.push_str("position      none yet: the next run starts where [source] start says\n"),
    }
    if let Some(s) = &report.server {
        match (&s.error, s.bytes_behind) {
            (Some(e), _) => out.push_str(&format!("server        unreachable: {e}\n")),
            (None, Some(b)) => out.push_str(&format!(
                "server        at {}:{}, {b} binlog bytes behind\n",
                s.file, s.pos
            )),
            (None, None) if report.position.is_some() => out.push_str(&format!(
                "server        at {}:{}; the checkpoint's file is no longer on the server (purged)\n",
                s.file, s.pos
            )),
            (None, None) => out.push_str(&format!("server        at {}:{}\n", s.file, s.pos)),
        }
    }
    if report.handlers.is_empty() {
        out.push_str("state         no handler has state\n");
    }
    for h in &report.handlers {
        out.push_str(&format!(
            "state         {}: {} keys, {} bytes\n",
            h.name, h.keys, h.bytes
        ));
    }
    out.push_str(&format!("dead letters  {}\n", report.dead_letters));
    if let Some(s) = &report.source {
        let r = &s.reconnects;
        out.push_str(&format!(
            "source        {}; {} rotations; resumed {} times: {} server restarts, {} killed, {} stalled, {} network; {} failed attempts\n",
            if s.connected { "connected" } else { "reconnecting" },
            s.rotations,
            r.total(),
            r.server_restart,
            r.killed,
            r.stalled,
            r.network,
            r.failed_attempts
        ));
    }
    if let Some(s) = &report.stats {
        if report.live_status_written_at.is_none()
            && let Some(at) = report.metrics_written_at
        {
            out.push_str(&format!("last run      (its status file, written at unix time {at})\n"));
        }
        out.push_str(&format!(
            "since start   {} changes, {} handler calls, {} transactions, {} messages, {} checkpoints\n",
            s.changes, s.calls, s.commits, s.messages, s.checkpoints
        ));
        out.push_str(&format!(
            "              {} handler errors, {} sink retries, {} messages refused by sinks, {} reloads, {} refused reloads\n",
            s.handler_errors, s.sink_retries, s.sink_failures, s.reloads, s.reload_failures
        ));
    }
    for h in &report.handler_metrics {
        let host = |k: &str| h.host.get(k).copied().unwrap_or(0);
        out.push_str(&format!(
            "handler       {}/{}: {} calls, {} errors, {} log lines dropped, {} metric calls ignored\n",
            h.tenant,
            h.name,
            host("calls"),
            host("errors"),
            host("log_lines_dropped"),
            host("metric_calls_ignored")
        ));
        let metrics: Vec<String> = (h.counters.iter().map(|(k, v)| format!("{k}={v}")))
            .chain(h.gauges.iter().map(|(k, v)| format!("{k}={v}")))
            .collect();
        if !metrics.is_empty() {
            out.push_str(&format!("              metrics: {}\n", metrics.join(", ")));
        }
    }
    for s in &report.sinks {
        // Every sink's first, then the kind's own.
        const FIRST: [&str; 3] = ["messages", "retries", "refused"];
        let first = FIRST.iter().filter_map(|k| s.counters.get(*k).map(|v| (*k, v)));
        let own = (s.counters.iter()).filter(|(k, _)| !FIRST.contains(&k.as_str()));
        let counters: Vec<String> = first
            .chain(own.map(|(k, v)| (k.as_str(), v)))
            .map(|(k, v)| format!("{v} {k}"))
            .collect();
        out.push_str(&format!("sink          {}: {}\n", s.name, counters.join(", ")));
    }
    out
}

/// Removes every key of `handler`'s state. Refused while rowhook runs.
pub fn reset_state(plan: &Plan, handler: &str) -> anyhow::Result<u64> {
    let mut store = open(plan)?.map_err(|e| e.context("stop rowhook before resetting state"))?;
    store.reset_state(handler)
}

/// Moves the position the next run starts at. `config` forgets the
/// checkpoint (the config's `start` applies); `FILE:POS` and a GTID set are
/// stored as the position. Refused while rowhook runs.
pub fn set_start(plan: &Plan, to: &str) -> anyhow::Result<Option<Checkpoint>> {
    let mut store = open(plan)?.map_err(|e| e.context("stop rowhook before moving its start position"))?;
    let cp = match to.trim() {
        "config" => None,
        other => match other.parse::<StartPosition>().map_err(|e| anyhow::anyhow!("{e}"))? {
            StartPosition::File { file, pos } => Some(Checkpoint {
                file,
                pos,
                gtids: String::new(),
                txn: String::new(),
                ts: 0,
            }),
            StartPosition::Gtid(gtids) => Some(Checkpoint {
                file: String::new(),
                pos: 0,
                gtids,
                txn: String::new(),
                ts: 0,
            }),
            StartPosition::Earliest | StartPosition::Latest => anyhow::bail!(
                "`{other}` is resolved against the server at start: set it as [source] start in the config and use `set-start config`"
            ),
        },
    };
    store.set_position(cp.as_ref())?;
    Ok(cp)
}

/// Every key of `handler`'s state as JSON lines: `{"key":…,"value":…}`
/// with the value as UTF-8 text, or `"base64":…` for other bytes; an
/// 8-byte value (a counter, as `increment` writes it) also as `"counter":N`.
pub fn dump(plan: &Plan, handler: &str) -> anyhow::Result<String> {
    let store = open(plan)?.map_err(|e| e.context("stop rowhook to read its state"))?;
    let mut entries: Vec<(String, Vec<u8>)> = store.load_state(handler)?.into_iter().collect();
    entries.sort();
    let mut out = String::new();
    for (k, v) in entries {
        use base64::Engine as _;
        let mut line = serde_json::Map::new();
        line.insert("key".into(), k.into());
        if let Ok(b) = <[u8; 8]>::try_from(v.as_slice()) {
            line.insert("counter".into(), i64::from_le_bytes(b).into());
        }
        match std::str::from_utf8(&v) {
            Ok(s) if v.len() != 8 => line.insert("value".into(), s.into()),
            _ => line.insert(
                "base64".into(),
                base64::engine::general_purpose::STANDARD.encode(&v).into(),
            ),
        };
        out.push_str(&serde_json::Value::Object(line).to_string());
        out.push('\n');
    }
    Ok(out)
}
