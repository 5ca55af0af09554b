//! `rowhook capture`: the binlog of `[source]` published to the JetStream
//! stream of `[cluster]`, by the one capture that holds the source's lease;
//! the others stand by and take over when it lapses.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::{decoder_for, io_runtime, resume_gtids};
use crate::cluster::capture::{Capture, Counters, LEASE_KEY, LeaseLost, checkpoint, publish};
use crate::cluster::config::ClusterPlan;
use crate::cluster::lease::{Lease, holder_name};
use crate::cluster::{Joined, claim_checkpoint, join_when_ready};
use crate::config::Plan;
use crate::driver::{DriveOptions, Ended, Stop, drive, stop_on_signals};
use crate::source::reconnect::{Resilient, RetryPolicy};

/// How long a stopping capture waits for the acknowledgements of what it
/// published.
const DRAIN_WITHIN: Duration = Duration::from_secs(10);

/// What a capture did, over all the times it held the lease.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaptureStats {
    /// Row changes decoded and published.
    pub changes: u64,
    /// Changes JetStream acknowledged (stored, or dropped as copies).
    pub acked: u64,
    /// Of those, acknowledged as duplicates.
    pub duplicates: u64,
    /// Transactions whose messages were all acknowledged.
    pub commits: u64,
    /// Times the lease was taken.
    pub terms: u64,
}

/// Runs as the capture of `plan`'s source until SIGINT or SIGTERM: stands
/// by until the lease is free, takes it, publishes from the checkpoint on,
/// and stands by again if the lease is lost. Call it outside any runtime.
pub fn capture(plan: &Plan) -> anyhow::Result<CaptureStats> {
    let (cluster, nats) = super::cluster_of(plan, "capture")?;
    anyhow::ensure!(
        plan.source.is_some(),
        "{}: `rowhook capture` needs a [source] section",
        plan.file.display()
    );
    anyhow::ensure!(
        !plan.source.as_ref().is_some_and(|s| s.snapshot.initial),
        "{}: [source] snapshot = \"initial\", but `rowhook capture` publishes the binlog only and takes no \
         snapshot: the rows that exist before its start would never reach the workers. Remove `snapshot` \
         from [source] to publish from the start position on, or run the handlers with `rowhook run`, \
         which takes the snapshot",
        plan.file.display()
    );
    let io = io_runtime()?;
    let mut stop = stop_on_signals(|| {})?;
    let holder = holder_name();
    let Some(joined) = nats.block_on(join_when_ready(cluster, cluster.max_unacked, &mut stop))? else {
        return Ok(CaptureStats::default());
    };
    let registry = crate::telemetry::Registry::new();
    crate::cluster::serve_metrics(plan, &registry, &joined.client)?;
    let held = registry.gauge(
        crate::telemetry::names::CLUSTER_LEASE_HELD,
        "1 while this process holds the lease of its role, else 0.",
        vec![("role", "capture".into())],
    );
    let published = registry.counter(
        crate::telemetry::names::CLUSTER_PUBLISHED,
        "Changes the capture published that JetStream stored.",
        vec![],
    );
    let mut stats = CaptureStats::default();
    loop {
        let Some(lease) = nats.block_on(stand_by(&joined, cluster, &holder, &mut stop))? else {
            return Ok(stats);
        };
        stats.terms += 1;
        held.set(1.0);
        let outcome = term(
            plan, cluster, &joined, &nats, &io, lease, &holder, &mut stop, &mut stats, &published,
        );
        held.set(0.0);
        match outcome? {
            Term::Stopped => return Ok(stats),
            Term::Lost(why) => {
                tracing::warn!("{why}: stopped publishing; standing by");
            }
        }
    }
}

enum Term {
    Stopped,
    Lost(String),
}

/// Waits until the lease is free and takes it; `None` if stopped first.
async fn stand_by(
    joined: &Joined,
    cluster: &ClusterPlan,
    holder: &str,
    stop: &mut Stop,
) -> anyhow::Result<Option<Lease>> {
    let mut said = String::new();
    loop {
        match Lease::try_take(&joined.leases, LEASE_KEY, holder, cluster.lease_ttl).await {
            Ok(Ok(lease)) => {
                tracing::info!(holder, "took the capture lease of source {}", cluster.source);
                return Ok(Some(lease));
            }
            Ok(Err(other)) => {
                let who = other.map(|h| h.holder).unwrap_or_else(|| "another capture".into());
                if who != said {
                    tracing::info!(
                        "standing by: {who} holds the capture lease of source {}",
                        cluster.source
                    );
                    said = who;
                }
            }
            Err(e) => tracing::warn!("{e:#}; trying again"),
        }
        tokio::select! {
            _ = tokio::time::sleep(cluster.lease_ttl / 5) => {}
            _ = stop.requested_wait() => return Ok(None),
        }
    }
}

/// One term as the holder: from the checkpoint on, until stopped or the
/// lease is lost.
#[allow(clippy::too_many_arguments)]
fn term(
    plan: &Plan,
    cluster: &ClusterPlan,
    joined: &Joined,
    nats: &tokio::runtime::Runtime,
    io: &tokio::runtime::Runtime,
    lease: Lease,
    holder: &str,
    stop: &mut Stop,
    stats: &mut CaptureStats,
    published: &crate::telemetry::Counter,
) -> anyhow::Result<Term> {
    let source = plan.source.as_ref().expect("checked");
    let fence = lease.fence();
    let (quit_tx, quit_rx) = watch::channel(false);
    let keeper = nats.spawn(lease.keep(quit_rx.clone()));
    // What JetStream answers before publishing starts. A cluster electing
    // its leaders may time out: the lease goes back and the capture stands
    // by to try again; only what trying again cannot fix ends it.
    let setup = nats.block_on(async {
        let read_end = |e: anyhow::Error| e.context(format!("reading the end of stream {}", cluster.stream));
        let end = crate::cluster::last_sequence(&joined.js, cluster).await.map_err(read_end)?;
        let (resume, seq, revision) = claim_checkpoint(&joined.checkpoints, holder, end).await?;
        // A checkpoint of an earlier version does not say where its
        // messages end: the stream's messages are all taken as before it.
        let seq = seq.unwrap_or(end);
        let tail = crate::cluster::tail(&joined.js, cluster, seq).await.map_err(read_end)?;
        let mark = crate::cluster::mark_term(&joined.js, cluster, holder, revision, tail.last_seq).await?;
        if tail.replay.messages > 0 {
            tracing::info!(
                "the stream holds {} messages after the checkpoint: they are made again with the same ids before anything new",
                tail.replay.messages
            );
        }
        Ok::<_, anyhow::Error>((resume, seq, revision, Some(mark), tail.replay))
    });
    let (resume, seq, revision, last, replay) = match setup {
        Ok(s) => s,
        Err(e) => {
            quit_tx.send_replace(true);
            if let Ok(lease) = nats.block_on(keeper) {
                nats.block_on(lease.release());
            }
            if e.is::<crate::cluster::Refused>() {
                return Err(e);
            }
            return Ok(Term::Lost(format!("{e:#}")));
        }
    };
    let acked_before = published.get();
    let counters = Arc::new(Counters {
        acked: published.clone(),
        ..Counters::default()
    });
    let (acked_tx, acked_rx) = watch::channel(None);
    let (tx, rx) = mpsc::channel(64);
    let publisher = nats.spawn(publish(
        joined.client.clone(),
        last,
        seq,
        rx,
        fence.clone(),
        acked_tx,
        cluster.max_unacked,
        crate::cluster::REQUEST_TIMEOUT,
        counters.clone(),
    ));
    let writer = nats.spawn(checkpoint(
        joined.checkpoints.clone(),
        revision,
        holder.to_owned(),
        acked_rx,
        fence.clone(),
        cluster.checkpoint_interval,
        quit_rx,
    ));
    let opts = crate::source::live::LiveOptions {
        // Every capture of a source has its replica id: one that held the
        // lease before may still be listed.
        successor: true,
        ..super::live_after(source, resume.as_ref(), "publishing")
    };
    let max_payload = joined.client.server_info().max_payload;
    let mut consumer = Capture::new(cluster, tx, fence.clone(), max_payload, Some(replay));
    let driven = (|| {
        let mut live = io.block_on(Resilient::open(opts, RetryPolicy::default()))?;
        let mut decoder = decoder_for(plan, "");
        decoder.set_gtid_state(live.start_gtids().clone());
        if let Some(cp) = &resume {
            resume_gtids(&mut decoder, cp)?;
        }
        drive(
            io,
            &mut live,
            &mut decoder,
            &mut consumer,
            stop,
            DriveOptions::default(),
        )
    })();
    // What is open goes out before the channel closes, which lets the
    // publisher finish the window.
    let driven = driven.and_then(|ended| consumer.finish().map(|()| ended));
    stats.changes += consumer.changes;
    drop(consumer);
    let published = nats.block_on(async {
        match tokio::time::timeout(DRAIN_WITHIN, publisher).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(anyhow::anyhow!("the publisher failed: {e}")),
            Err(_) => Err(anyhow::anyhow!(
                "JetStream did not acknowledge the last messages within {} s; the next capture publishes them again",
                DRAIN_WITHIN.as_secs()
            )),
        }
    });
    quit_tx.send_replace(true);
    let written = nats.block_on(writer).ok().flatten();
    let lease = nats.block_on(keeper).ok();
    stats.acked += counters.acked.get() - acked_before;
    stats.duplicates += counters.duplicates.load(Ordering::Relaxed);
    stats.commits += counters.commits.load(Ordering::Relaxed);
    if let Some(at) = &written {
        tracing::info!(file = %at.file, pos = at.pos, gtids = %at.gtids, "checkpoint written");
    }
    let lost = |e: &anyhow::Error| e.downcast_ref::<LeaseLost>().map(|l| l.0.clone());
    let outcome = match (&driven, &published) {
        (Err(e), _) | (_, Err(e)) if lost(e).is_some() => Ok(Term::Lost(lost(e).unwrap_or_default())),
        _ if !fence.holds() && !stop.requested() => Ok(Term::Lost(fence.why())),
        (Err(e), _) => Err(anyhow::anyhow!("{e:#}")),
        (_, Err(e)) => Err(anyhow::anyhow!("{e:#}")),
        (Ok(Ended::Interrupted | Ended::Stopped), Ok(())) => Ok(Term::Stopped),
        (Ok(Ended::End { .. }), Ok(())) => Ok(Term::Stopped),
    };
    if !matches!(outcome, Ok(Term::Lost(_)))
        && let Some(lease) = lease
    {
        nats.block_on(lease.release());
    }
    outcome
}
