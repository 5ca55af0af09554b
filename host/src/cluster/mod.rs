//! Many processes on one source, over NATS JetStream (`[cluster]`).
//!
//! JetStream is the log, the lease and the checkpoint store: no protocol
//! of rowhook's own runs between the processes. `rowhook capture` reads
//! the binlog once and publishes every change of the subscribed tables to
//! one stream, on subjects `rowhook.SOURCE.DB.TABLE.PARTITION`
//! ([`partition`]), under a lease only one capture holds at a time
//! ([`lease`]); its checkpoint is in a bucket beside the stream
//! ([`capture`]).

pub mod capture;
pub mod config;
pub mod lease;
pub mod partition;
pub mod state;
pub mod work;

use std::time::Duration;

use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::kv::{self, CreateErrorKind};
use async_nats::jetstream::stream::{self, StorageType};
use async_nats::jetstream::{self, context::GetStreamErrorKind};

use self::capture::{CHECKPOINT_KEY, PARTITIONS_KEY, Replay, Stored};
use self::config::ClusterPlan;
use crate::sink::nats::{Reconnect, connect};
use crate::store::Checkpoint;

/// A connection to the cluster's JetStream, its stream and buckets.
pub struct Joined {
    /// The client.
    pub client: async_nats::Client,
    /// Its JetStream context.
    pub js: jetstream::Context,
    /// The lease bucket.
    pub leases: kv::Store,
    /// The checkpoint bucket.
    pub checkpoints: kv::Store,
    /// The workers' state bucket.
    pub states: kv::Store,
}

/// A `[cluster]` setting the servers refuse: trying again will not help.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// How long a JetStream request may take before it is retried.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// [`join`], tried again with a backoff while the servers cannot be
/// reached or JetStream is not ready (a cluster electing its leaders);
/// `None` if stopped first. A setting the servers refuse is an error at once.
pub async fn join_when_ready(
    plan: &ClusterPlan,
    window: usize,
    stop: &mut crate::driver::Stop,
) -> anyhow::Result<Option<Joined>> {
    let mut backoff = crate::backoff::Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        match join(plan, window).await {
            Ok(joined) => return Ok(Some(joined)),
            Err(e) if e.is::<Refused>() => return Err(e),
            Err(e) => {
                let wait = backoff.delay();
                tracing::warn!("{e:#}; trying again in {wait:?}");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.requested_wait() => return Ok(None),
                }
            }
        }
    }
}

/// Connects, and creates the stream and buckets that are missing: a stream
/// that exists is used as it is, once it is seen to capture the source's
/// subjects. The partition count is recorded on first use; a config that
/// names another one is refused.
pub async fn join(plan: &ClusterPlan, window: usize) -> anyhow::Result<Joined> {
    let servers = plan.nats.servers.join(", ");
    let client = connect(
        &plan.nats.servers,
        &plan.nats.auth,
        plan.nats.tls.as_ref(),
        Reconnect::Always,
    )
    .await
    .map_err(|e| match e {
        crate::sink::nats::ConnectFailure::Options(why) => anyhow::Error::new(Refused(format!("[cluster] {why}"))),
        e => anyhow::anyhow!("[cluster] cannot connect to {servers}: {e}; start NATS or fix `nats`"),
    })?;
    let js = jetstream::ContextBuilder::new()
        .timeout(REQUEST_TIMEOUT)
        .max_ack_inflight(window.max(1))
        .build(client.clone());
    ensure_stream(&js, plan).await?;
    let leases = bucket(&js, plan, plan.lease_bucket(), plan.lease_ttl).await?;
    let checkpoints = bucket(&js, plan, plan.checkpoint_bucket(), Duration::ZERO).await?;
    let states = bucket(&js, plan, plan.state_bucket(), Duration::ZERO).await?;
    let count = plan.partitions.to_string();
    match checkpoints.create(PARTITIONS_KEY, count.clone().into()).await {
        Ok(_) => {}
        Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {
            let held = checkpoints.get(PARTITIONS_KEY).await?.unwrap_or_default();
            if let Some(why) = partitions_problem(plan, &String::from_utf8_lossy(&held)) {
                return Err(Refused(why).into());
            }
        }
        Err(e) => anyhow::bail!(
            "[cluster] recording the partition count in {}: {e}",
            plan.checkpoint_bucket()
        ),
    }
    Ok(Joined {
        client,
        js,
        leases,
        checkpoints,
        states,
    })
}

/// Why the existing stream `info` cannot hold the source's changes, if it
/// cannot.
fn stream_problem(plan: &ClusterPlan, info: &stream::Info) -> Option<String> {
    let subjects = format!("{}>", plan.subject_prefix());
    (!info.config.subjects.iter().any(|x| x == &subjects || x == ">")).then(|| {
        format!(
            "[cluster] stream {} exists but does not capture {subjects} (it has {:?}); add the subject \
             (`nats stream edit {} --subjects '{subjects}'`) or name another stream",
            plan.stream, info.config.subjects, plan.stream
        )
    })
}

/// Why `plan.partitions` is not the count `held` the stream was made with.
fn partitions_problem(plan: &ClusterPlan, held: &str) -> Option<String> {
    let count = plan.partitions.to_string();
    (held != count).then(|| {
        format!(
            "[cluster] partitions = {count}, but stream {} was made with {held} partitions: the count cannot change \
             under a stream. Set partitions = {held}, or name a new stream",
            plan.stream
        )
    })
}

/// What `rowhook check` finds of `[cluster]`, without changing anything:
/// the servers answer and authenticate, JetStream is on, and the stream,
/// if it exists, captures the source's subjects with the partition count
/// of the config.
pub async fn probe(plan: &ClusterPlan) -> Vec<crate::probe::CheckLine> {
    use crate::probe::CheckLine;
    let line = |ok: bool, text: String| CheckLine { ok, text };
    let servers = plan.nats.servers.join(", ");
    let client = match connect(
        &plan.nats.servers,
        &plan.nats.auth,
        plan.nats.tls.as_ref(),
        Reconnect::Never,
    )
    .await
    {
        Ok(c) => c,
        Err(crate::sink::nats::ConnectFailure::Options(why)) => return vec![line(false, format!("[cluster] {why}"))],
        Err(e) => {
            return vec![line(
                false,
                format!("[cluster] cannot connect to {servers}: {e}; start NATS or fix `nats` and its credentials"),
            )];
        }
    };
    let info = client.server_info();
    let mut lines = vec![line(
        true,
        format!(
            "[cluster] connected to {servers} (nats-server {}, max_payload {} bytes)",
            info.version, info.max_payload
        ),
    )];
    let js = jetstream::ContextBuilder::new().timeout(REQUEST_TIMEOUT).build(client);
    match js.get_stream(&plan.stream).await {
        Ok(mut s) => match s.info().await {
            Ok(info) => match stream_problem(plan, info) {
                Some(why) => lines.push(line(false, why)),
                None => {
                    let held = async {
                        let kv = js.get_key_value(plan.checkpoint_bucket()).await.ok()?;
                        let held = kv.get(PARTITIONS_KEY).await.ok()??;
                        Some(String::from_utf8_lossy(&held).into_owned())
                    }
                    .await;
                    match held.as_deref().and_then(|h| partitions_problem(plan, h)) {
                        Some(why) => lines.push(line(false, why)),
                        None => lines.push(line(
                            true,
                            format!(
                                "[cluster] stream {} captures {}>, {} partitions, {} messages",
                                plan.stream,
                                plan.subject_prefix(),
                                plan.partitions,
                                info.state.messages
                            ),
                        )),
                    }
                }
            },
            Err(e) => lines.push(line(false, format!("[cluster] reading stream {}: {e}", plan.stream))),
        },
        Err(e) if matches!(e.kind(), GetStreamErrorKind::JetStream(j) if j.error_code() == ErrorCode::STREAM_NOT_FOUND) => {
            lines.push(line(
                true,
                format!(
                    "[cluster] stream {} does not exist yet: the first `rowhook capture` makes it ({} partitions, {} replicas)",
                    plan.stream, plan.partitions, plan.replicas
                ),
            ))
        }
        Err(e) => lines.push(line(
            false,
            format!("[cluster] {servers} did not answer the JetStream API ({e}); enable JetStream (nats-server -js)"),
        )),
    }
    lines
}

async fn ensure_stream(js: &jetstream::Context, plan: &ClusterPlan) -> anyhow::Result<()> {
    let subjects = format!("{}>", plan.subject_prefix());
    match js.get_stream(&plan.stream).await {
        Ok(mut s) => {
            let info = s.info().await?;
            if let Some(why) = stream_problem(plan, info) {
                return Err(Refused(why).into());
            }
            if info.config.max_age != plan.max_age || info.config.max_bytes != plan.max_bytes {
                let mut config = info.config.clone();
                config.max_age = plan.max_age;
                config.max_bytes = plan.max_bytes;
                match js.update_stream(config).await {
                    Ok(_) => tracing::info!(
                        stream = %plan.stream,
                        "the stream's limits follow the config now: max_age_hours = {}, max_bytes_mb = {}",
                        plan.max_age.as_secs() / 3600,
                        plan.max_bytes.max(0) >> 20
                    ),
                    Err(e) => tracing::warn!("stream {}: setting its limits: {e}", plan.stream),
                }
            }
            if info.config.duplicate_window < 2 * plan.lease_ttl {
                tracing::warn!(
                    "stream {}'s duplicate window is {:?}, less than twice the lease: a takeover may store some messages twice",
                    plan.stream,
                    info.config.duplicate_window
                );
            }
            Ok(())
        }
        Err(e) if matches!(e.kind(), GetStreamErrorKind::JetStream(j) if j.error_code() == ErrorCode::STREAM_NOT_FOUND) =>
        {
            js.create_stream(stream::Config {
                name: plan.stream.clone(),
                subjects: vec![subjects],
                storage: StorageType::File,
                num_replicas: plan.replicas,
                duplicate_window: plan.duplicate_window,
                max_age: plan.max_age,
                max_bytes: plan.max_bytes,
                description: Some(format!(
                    "rowhook changes of source {}, {} partitions",
                    plan.source, plan.partitions
                )),
                ..Default::default()
            })
            .await
            .map_err(|e| anyhow::anyhow!("[cluster] creating stream {}: {e}", plan.stream))?;
            tracing::info!(stream = %plan.stream, partitions = plan.partitions, "created the stream");
            Ok(())
        }
        Err(e) => Err(anyhow::anyhow!(
            "[cluster] {} did not answer the JetStream API ({e}); enable JetStream (nats-server -js)",
            plan.nats.servers.join(", ")
        )),
    }
}

/// The key-value bucket `name`, created if missing. It is made as the
/// stream a bucket is (`KV_NAME`, subjects `$KV.NAME.>`, one entry per
/// key) directly: the client's own bucket creation asks for account
/// details that JetStream servers before 2.10 do not send.
pub(crate) async fn bucket(
    js: &jetstream::Context,
    plan: &ClusterPlan,
    name: String,
    ttl: Duration,
) -> anyhow::Result<kv::Store> {
    if let Ok(kv) = js.get_key_value(&name).await {
        return Ok(kv);
    }
    js.get_or_create_stream(stream::Config {
        name: format!("KV_{name}"),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        max_age: ttl,
        storage: StorageType::File,
        num_replicas: plan.replicas,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    })
    .await
    .map_err(|e| anyhow::anyhow!("[cluster] creating bucket {name}: {e}"))?;
    js.get_key_value(&name)
        .await
        .map_err(|e| anyhow::anyhow!("[cluster] opening bucket {name}: {e}"))
}

/// What a capture that takes the lease finds at the stream's end.
#[derive(Debug, Clone, Default)]
pub struct Tail {
    /// The stream's last sequence.
    pub last_seq: u64,
    /// The messages after the checkpoint's sequence.
    pub replay: Replay,
}

/// The subject of the marks a capture leaves when it takes the lease:
/// `rowhook.SOURCE.capture`, which no worker's filter takes.
pub fn mark_subject(plan: &ClusterPlan) -> String {
    format!("{}capture", plan.subject_prefix())
}

/// The stream's last sequence (0 while it is empty).
pub async fn last_sequence(js: &jetstream::Context, plan: &ClusterPlan) -> anyhow::Result<u64> {
    Ok(js.get_stream(&plan.stream).await?.info().await?.state.last_sequence)
}

/// Reads the stream's end: its last sequence, and the flushes of the
/// messages after sequence `after` (the checkpoint's), which a capture
/// that takes over makes again in the same messages. A message removed
/// meanwhile (by the stream's limits) is passed over.
pub async fn tail(js: &jetstream::Context, plan: &ClusterPlan, after: u64) -> anyhow::Result<Tail> {
    let mut s = js.get_stream(&plan.stream).await?;
    let last_seq = s.info().await?.state.last_sequence;
    let mut tail = Tail {
        last_seq,
        ..Tail::default()
    };
    let mark = mark_subject(plan);
    for seq in after.saturating_add(1)..=last_seq {
        // Deleted, or not there: nothing to make again.
        let Ok(m) = s.get_raw_message(seq).await else { continue };
        if m.subject.as_str() == mark {
            continue;
        }
        tail.replay.messages += 1;
        if let Some(txn) = m.headers.get(capture::FLUSH_HEADER)
            && tail.replay.flushes.back().map(String::as_str) != Some(txn.as_str())
        {
            tail.replay.flushes.push_back(txn.as_str().to_owned());
        }
    }
    Ok(tail)
}

/// Publishes the mark of `holder`'s term (`revision`: its claim of the
/// checkpoint) right after sequence `last_seq`, and returns its id: every
/// message a capture publishes names the one before it, so one still
/// publishing after losing the lease is refused from now on.
pub async fn mark_term(
    js: &jetstream::Context,
    plan: &ClusterPlan,
    holder: &str,
    revision: u64,
    last_seq: u64,
) -> anyhow::Result<String> {
    let id = format!("capture:{holder}:{revision}");
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", id.as_str());
    headers.insert("Nats-Expected-Last-Sequence", itoa::Buffer::new().format(last_seq));
    js.publish_with_headers(mark_subject(plan), headers, bytes::Bytes::new())
        .await?
        .await
        .map_err(|e| anyhow::anyhow!("marking the stream as this capture's (after sequence {last_seq}): {e}"))?;
    Ok(id)
}

/// The capture's checkpoint, read and written back as `holder`'s: from
/// now on a capture that still thinks it holds the lease cannot move it
/// (its next write names an older revision). Returns the checkpoint, if
/// any, the stream sequence it follows (`last_seq`, the stream's last
/// now, when there is no checkpoint yet), and the revision to write the
/// next one at.
pub async fn claim_checkpoint(
    kv: &kv::Store,
    holder: &str,
    last_seq: u64,
) -> anyhow::Result<(Option<Checkpoint>, Option<u64>, u64)> {
    let mut tries = 0;
    loop {
        let entry = kv.entry(CHECKPOINT_KEY).await?;
        let (at, seq, revision) = match entry {
            Some(e) if e.operation == kv::Operation::Put => {
                let stored: Stored = serde_json::from_slice(&e.value).map_err(|err| {
                    Refused(format!(
                        "the capture checkpoint in bucket {} is unreadable ({err}); \
                         `rowhook state` shows it, and deleting the key `{CHECKPOINT_KEY}` starts over from [source] start",
                        kv.name
                    ))
                })?;
                (stored.at, stored.seq, Some(e.revision))
            }
            _ => (None, Some(last_seq), None),
        };
        let claim = serde_json::to_vec(&Stored {
            at: at.clone(),
            holder: holder.to_owned(),
            seq,
        })?;
        let written = match revision {
            Some(r) => kv
                .update(CHECKPOINT_KEY, claim.into(), r)
                .await
                .map_err(|e| e.to_string()),
            None => kv.create(CHECKPOINT_KEY, claim.into()).await.map_err(|e| e.to_string()),
        };
        match written {
            Ok(r) => return Ok((at, seq, r)),
            Err(e) if tries < 25 => {
                tries += 1;
                tracing::info!("claiming the checkpoint: {e}; reading it again");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => anyhow::bail!("claiming the capture checkpoint in bucket {}: {e}", kv.name),
        }
    }
}

/// Serves `/metrics` (and `/healthz`, `/readyz` over `registry`) on the
/// config's `[http]`, if it has one.
pub fn serve_metrics(
    plan: &crate::config::Plan,
    registry: &crate::telemetry::Registry,
    client: &async_nats::Client,
) -> anyhow::Result<()> {
    let connected = client.clone();
    registry.computed_gauge(
        crate::telemetry::names::CLUSTER_NATS_CONNECTED,
        "1 while connected to a NATS server of the cluster, else 0.",
        vec![],
        std::sync::Arc::new(move || {
            f64::from(u8::from(
                connected.connection_state() == async_nats::connection::State::Connected,
            ))
        }),
    );
    let Some(http) = &plan.http else { return Ok(()) };
    #[cfg(feature = "http-server")]
    {
        let observed = crate::http::Observed {
            registry: registry.clone(),
            status: crate::status::LiveStatus::new(),
            control: None,
            // No source of its own to be connected to (a worker), or one
            // held only with the lease (a capture).
            replay: true,
            deploy: None,
            roster: crate::cli::roster_of(plan),
        };
        let server = crate::http::HttpServer::start(http, observed)?;
        tracing::info!("serving /metrics on http://{}", server.addr());
        Ok(())
    }
    #[cfg(not(feature = "http-server"))]
    {
        let _ = registry;
        anyhow::bail!(
            "{}: [http] listen = \"{}\" is configured, but this build of rowhook has no HTTP server",
            plan.file.display(),
            http.listen
        )
    }
}

/// What JetStream holds of `plan`: the stream, the capture's lease and
/// checkpoint (`rowhook state`). Creates nothing.
pub async fn report(plan: &ClusterPlan) -> crate::status::ClusterReport {
    let mut report = crate::status::ClusterReport {
        stream: plan.stream.clone(),
        ..Default::default()
    };
    let read = async {
        let client = connect(
            &plan.nats.servers,
            &plan.nats.auth,
            plan.nats.tls.as_ref(),
            Reconnect::Never,
        )
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", plan.nats.servers.join(", ")))?;
        let js = jetstream::new(client);
        let mut stream = js
            .get_stream(&plan.stream)
            .await
            .map_err(|e| format!("not readable ({e}); `rowhook capture` makes it"))?;
        let info = stream.info().await.map_err(|e| e.to_string())?;
        report.messages = info.state.messages;
        report.bytes = info.state.bytes;
        report.last_sequence = info.state.last_sequence;
        if let Ok(kv) = js.get_key_value(plan.checkpoint_bucket()).await {
            if let Ok(Some(v)) = kv.get(PARTITIONS_KEY).await {
                report.partitions = String::from_utf8_lossy(&v).parse().unwrap_or(0);
            }
            if let Ok(Some(v)) = kv.get(CHECKPOINT_KEY).await {
                report.capture_position = serde_json::from_slice::<Stored>(&v).ok().and_then(|s| s.at);
            }
        }
        let holder_of = |v: Option<bytes::Bytes>| {
            v.and_then(|v| serde_json::from_slice::<lease::Holder>(&v).ok())
                .map(|h| h.holder)
        };
        let leases = js.get_key_value(plan.lease_bucket()).await.ok();
        let states = js.get_key_value(plan.state_bucket()).await.ok();
        if let Some(kv) = &leases {
            report.capture_holder = holder_of(kv.get(capture::LEASE_KEY).await.ok().flatten());
            if let Ok(mut keys) = kv.keys().await {
                use futures_util::StreamExt as _;
                let prefix = format!("work.{}.w.", plan.group);
                while let Some(k) = keys.next().await {
                    if let Ok(k) = k
                        && k.starts_with(&prefix)
                        && let Ok(Some(v)) = kv.get(&k).await
                    {
                        report.workers.push(String::from_utf8_lossy(&v).into_owned());
                    }
                }
            }
        }
        for p in 0..report.partitions {
            let mut part = crate::status::PartitionReport {
                partition: p,
                ..Default::default()
            };
            if let Some(kv) = &leases {
                part.owner = holder_of(kv.get(format!("work.{}.p{p}", plan.group)).await.ok().flatten());
            }
            if let Some(kv) = &states
                && let Ok(Some(v)) = kv.get(state::head_key(&plan.group, p)).await
                && let Ok((head, _)) = state::split_head(&v)
            {
                part.state_seq = head.seq;
            }
            if let Ok(mut c) = stream
                .get_consumer::<jetstream::consumer::pull::Config>(&work::consumer_name(&plan.group, p))
                .await
                && let Ok(info) = c.info().await
            {
                part.pending = Some(info.num_pending);
                part.unacked = Some(info.num_ack_pending as u64);
            }
            report.partitions_detail.push(part);
        }
        Ok::<(), String>(())
    };
    let outcome = tokio::time::timeout(REQUEST_TIMEOUT * 2, read).await;
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(e)) => report.error = Some(e),
        Err(_) => report.error = Some(format!("{} did not answer in time", plan.nats.servers.join(", "))),
    }
    report
}
