//! `rowhook state`: what the store holds (position, lag behind the server,
//! each handler's state size, dead letters), and the two explicit changes
//! an operator may make: reset a handler's state, move the start position.
//!
//! While `rowhook run` holds the store, the report comes from the status
//! file it writes at each checkpoint, and changes are refused. The status
//! file also carries the run's metrics (read from its
//! [`crate::telemetry::Registry`]); once the run is over, the report
//! shows the last ones it wrote beside what the store holds.

use std::path::Path;

use anyhow::Context as _;

use crate::config::Plan;
use crate::source::StartPosition;
pub use crate::status::{HandlerMetrics, HandlerState, Report, STATUS_FILE, ServerPosition, SinkMetrics};
use crate::store::{Checkpoint, StateSize, StateStore};

/// `tenant/name` → (tenant, name).
fn split_key(key: &str) -> (String, String) {
    match key.split_once('/') {
        Some((t, n)) => (t.to_owned(), n.to_owned()),
        None => ("default".to_owned(), key.to_owned()),
    }
}

/// Each handler's state size and held changes, by tenant and name: every
/// handler with either.
fn sizes(store: &StateStore) -> anyhow::Result<Vec<HandlerState>> {
    fn entry<'a>(by_key: &'a mut std::collections::BTreeMap<String, HandlerState>, key: &str) -> &'a mut HandlerState {
        by_key.entry(key.to_owned()).or_insert_with(|| {
            let (tenant, name) = split_key(key);
            HandlerState {
                tenant,
                name,
                ..HandlerState::default()
            }
        })
    }
    let mut by_key = std::collections::BTreeMap::new();
    for (key, StateSize { keys, bytes }) in store.state_sizes()? {
        let h = entry(&mut by_key, &key);
        h.keys = keys;
        h.bytes = bytes;
    }
    for (key, (held, held_bytes)) in store.held_sizes()? {
        let h = entry(&mut by_key, &key);
        h.held = held;
        h.held_bytes = held_bytes;
    }
    for (key, range) in store.held_ranges()? {
        if let Some(h) = by_key.get_mut(&key) {
            h.held_where = crate::store::held_place(range.binlog.as_ref(), h.held);
        }
    }
    Ok(by_key.into_values().collect())
}

/// Opens the store of `plan`, or says that a running rowhook holds it. A
/// store of an earlier version has its handlers keyed by tenant first.
fn open(plan: &Plan) -> anyhow::Result<Result<StateStore, anyhow::Error>> {
    match StateStore::open(&plan.state.path) {
        Ok(mut s) => {
            s.key_by_tenant(|name| {
                (plan.handlers.iter())
                    .find(|h| h.name == name)
                    .map(|h| h.tenant.clone())
            })?;
            Ok(Ok(s))
        }
        Err(e) if e.is::<crate::store::InUse>() => Ok(Err(e)),
        Err(e) => Err(e),
    }
}

/// Which handler `handler` names, as the store keys it (`tenant/name`):
/// `TENANT/NAME`, or a name alone, which is the config's handler of that
/// name or else the one handler of that name the store keeps state for.
fn resolve_handler(plan: &Plan, store: &StateStore, handler: &str) -> anyhow::Result<String> {
    let file = plan.file.display();
    if handler.contains('/') {
        let known = plan
            .handlers
            .iter()
            .any(|h| format!("{}/{}", h.tenant, h.name) == handler)
            || store.state_sizes()?.iter().any(|(k, _)| k == handler);
        anyhow::ensure!(
            known,
            "{file} has no handler `{handler}`, and the store keeps no state for one"
        );
        return Ok(handler.to_owned());
    }
    if let Some(h) = plan.handlers.iter().find(|h| h.name == handler) {
        return Ok(format!("{}/{}", h.tenant, h.name));
    }
    let kept: Vec<String> = (store.state_sizes()?.into_iter())
        .map(|(k, _)| k)
        .filter(|k| split_key(k).1 == handler)
        .collect();
    match kept.as_slice() {
        [one] => Ok(one.clone()),
        [] => anyhow::bail!("{file} has no handler `{handler}`, and the store keeps no state for one"),
        many => anyhow::bail!(
            "the store keeps state for `{handler}` of several tenants ({}); name one as TENANT/{handler}",
            many.join(", ")
        ),
    }
}

/// The report for `plan`'s store, with the server's position when the
/// config has a `[source]`.
pub async fn report(plan: &Plan) -> anyhow::Result<Report> {
    let mut report = match open(plan)? {
        Ok(store) => Report {
            store: store.path().to_owned(),
            position: store.position()?,
            lanes: store.lanes()?,
            snapshot: Some(store.snapshot()?).filter(|p| !p.is_empty()),
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
    #[cfg(feature = "cluster")]
    if let Some(cluster) = &plan.cluster {
        report.cluster = Some(crate::cluster::report(cluster).await);
    }
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

fn render_cluster(out: &mut String, c: &crate::status::ClusterReport) {
    if let Some(e) = &c.error {
        out.push_str(&format!("cluster       stream {}: {e}\n", c.stream));
        return;
    }
    out.push_str(&format!(
        "cluster       stream {}: {} partitions, {} messages, {} bytes, last sequence {}\n",
        c.stream, c.partitions, c.messages, c.bytes, c.last_sequence
    ));
    match &c.capture_holder {
        Some(h) => out.push_str(&format!("capture       held by {h}\n")),
        None => out.push_str("capture       no capture holds the lease\n"),
    }
    if let Some(cp) = &c.capture_position {
        out.push_str(&format!(
            "capture at    {}:{} (GTIDs {}), after transaction {}\n",
            cp.file, cp.pos, cp.gtids, cp.txn
        ));
    }
    out.push_str(&format!(
        "workers       {}: {}\n",
        c.workers.len(),
        c.workers.join(", ")
    ));
    for p in &c.partitions_detail {
        let lag = match (p.pending, p.unacked) {
            (Some(pending), Some(unacked)) => format!("{pending} pending, {unacked} unacknowledged"),
            _ => "no consumer yet".into(),
        };
        out.push_str(&format!(
            "partition {:<3} {}, state at sequence {}, {lag}\n",
            p.partition,
            p.owner.as_deref().unwrap_or("no owner"),
            p.state_seq
        ));
    }
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
    let bytes_behind = cp.and_then(|cp| crate::source::lag::bytes_behind(&logs, &cp.file, cp.pos));
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
    let lanes = [
        (
            "lanes        ",
            &report.lanes,
            "past the position, where another tenant's lane halted; their handlers take only what comes after",
        ),
        (
            "lanes apart  ",
            &report.lanes_apart,
            "reading on a connection of their own until they catch up",
        ),
    ];
    for (label, lanes, what) in lanes.into_iter().filter(|(_, l, _)| !l.is_empty()) {
        let each: Vec<String> = (lanes.iter())
            .map(|(tenant, cp)| format!("{tenant} at {}:{}", cp.file, cp.pos))
            .collect();
        out.push_str(&format!("{label} {}: {what}\n", each.join(", ")));
    }
    if let Some(snapshot) = &report.snapshot
        && let Some((first, rest)) = snapshot.tables.split_first()
    {
        out.push_str(&format!(
            "snapshot      {}{}: {} chunks ({} rows) read",
            first.name(),
            first.filter.as_ref().map(|f| format!(" where {f}")).unwrap_or_default(),
            first.chunks,
            first.rows
        ));
        if !rest.is_empty() {
            let names: Vec<String> = rest.iter().map(crate::snapshot::TableProgress::name).collect();
            out.push_str(&format!("; then {}", names.join(", ")));
        }
        out.push('\n');
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
    let mut handlers: Vec<&HandlerState> = report.handlers.iter().collect();
    handlers.sort_by(|a, b| (&a.tenant, &a.name).cmp(&(&b.tenant, &b.name)));
    for (i, h) in handlers.iter().enumerate() {
        if i == 0 || handlers[i - 1].tenant != h.tenant {
            let (keys, bytes) =
                (handlers.iter().filter(|o| o.tenant == h.tenant)).fold((0, 0), |(k, b), o| (k + o.keys, b + o.bytes));
            out.push_str(&format!(
                "tenant        {}: {keys} keys, {bytes} bytes of state\n",
                h.tenant
            ));
        }
        out.push_str(&format!(
            "state         {}/{}: {} keys, {} bytes\n",
            h.tenant, h.name, h.keys, h.bytes
        ));
        if h.held > 0 {
            out.push_str(&format!(
                "held          {}/{}: {} changes ({} bytes), handed over in order once it takes changes again\n",
                h.tenant, h.name, h.held, h.held_bytes
            ));
            if !h.held_where.is_empty() {
                out.push_str(&format!("              {}\n", h.held_where));
            }
        }
    }
    out.push_str(&format!("dead letters  {}\n", report.dead_letters));
    if let Some(c) = &report.cluster {
        render_cluster(&mut out, c);
    }
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

/// Removes every key of `handler`'s state (`TENANT/NAME` or a name, see
/// [`resolve_handler`]), also of a handler no longer configured; returns
/// the handler as `tenant/name` and how many keys went. Refused while
/// rowhook runs.
pub fn reset_state(plan: &Plan, handler: &str) -> anyhow::Result<(String, u64)> {
    let mut store = open(plan)?.map_err(|e| e.context("stop rowhook before resetting state"))?;
    let key = resolve_handler(plan, &store, handler)?;
    let n = store.reset_state(&key)?;
    Ok((key, n))
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

/// Every key of `handler`'s state (`TENANT/NAME` or a name, see
/// [`resolve_handler`]) as JSON lines: `{"key":…,"value":…}`
/// with the value as UTF-8 text, or `"base64":…` for other bytes; an
/// 8-byte value (a counter, as `increment` writes it) also as `"counter":N`.
pub fn dump(plan: &Plan, handler: &str) -> anyhow::Result<String> {
    let store = open(plan)?.map_err(|e| e.context("stop rowhook to read its state"))?;
    let key = resolve_handler(plan, &store, handler)?;
    let mut entries: Vec<(String, Vec<u8>)> = store.load_state(&key)?.into_iter().collect();
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
