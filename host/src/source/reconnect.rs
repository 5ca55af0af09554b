//! A live source that survives connection faults.
//!
//! [`Resilient`] owns a [`LiveSource`] and replaces it when the stream is
//! lost: the server restarting, the dump thread killed, a network that
//! stalls (missed heartbeats). It reconnects with capped exponential
//! backoff at the last transaction boundary the caller reported
//! ([`Resilient::committed`]), so nothing is lost or read twice, and tells
//! the caller ([`Step::Resumed`]) to drop the transaction it was decoding:
//! the new stream sends it again from its first event, with the same ids.
//!
//! What is retried and what is not:
//! - Lost connections ([`SourceError::Lost`]) are retried, forever by
//!   default ([`RetryPolicy::max_attempts`]), with delays doubling from
//!   100 ms to 10 s. The backoff starts over once a new stream has
//!   delivered data or lived for the longest delay.
//! - Login, grant and server-setting problems, and a resume position the
//!   server no longer has (purged binlogs, unknown GTIDs) are returned at
//!   once: retrying cannot fix them, and starting elsewhere would lose
//!   changes without a word.
//! - The first connection is not retried: a wrong host or port should fail
//!   while someone is watching.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mysql_common::binlog::events::Event;

use super::StartPosition;
use super::error::{Cause, SourceError};
use super::live::{LiveOptions, LiveSource, describe};
use crate::backoff::Backoff;
use crate::decode::Cursor;
use crate::decode::event::{RawEvent, types};
use crate::decode::gtid::GtidState;
use crate::source::server::ServerInfo;
use crate::telemetry::{Counter, Gauge, Registry, names};

/// When and how often to reconnect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay before the first attempt after a loss.
    pub first_delay: Duration,
    /// Longest delay between attempts (the doubling stops here).
    pub max_delay: Duration,
    /// Failed attempts in a row after which to give up; `None`: never give
    /// up; `Some(0)`: a lost stream is an error, as without this module.
    pub max_attempts: Option<u32>,
    /// How long one attempt may take (a stalled server accepts TCP
    /// connections and never answers).
    pub connect_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
            max_attempts: None,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// Reconnect counters, readable from any thread while the source runs:
/// get them with [`Resilient::stats`], and put them in a metrics
/// [`Registry`] with [`SourceStats::register`].
#[derive(Debug, Default)]
pub struct SourceStats {
    server_restart: Counter,
    killed: Counter,
    stalled: Counter,
    network: Counter,
    failed_attempts: Counter,
    rotations: Counter,
    /// 1 while connected.
    connected: Gauge,
    /// The end of the last transaction handled (file, offset): what
    /// [`super::lag`] measures the server's binlog end against.
    handled: std::sync::Mutex<(String, u64)>,
}

/// A snapshot of [`SourceStats`]: streams resumed, by cause.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Reconnects {
    /// After the server restarted.
    pub server_restart: u64,
    /// After the server closed the connection (`KILL`).
    pub killed: u64,
    /// After missed heartbeats.
    pub stalled: u64,
    /// After other network errors.
    pub network: u64,
    /// Reconnection attempts that failed.
    pub failed_attempts: u64,
}

impl Reconnects {
    /// Streams resumed, all causes.
    pub fn total(&self) -> u64 {
        self.server_restart + self.killed + self.stalled + self.network
    }

    /// Resumed streams of one cause.
    pub fn of(&self, cause: Cause) -> u64 {
        match cause {
            Cause::ServerRestart => self.server_restart,
            Cause::Killed => self.killed,
            Cause::Stalled => self.stalled,
            Cause::Network => self.network,
        }
    }
}

impl SourceStats {
    /// The counters now.
    pub fn reconnects(&self) -> Reconnects {
        Reconnects {
            server_restart: self.server_restart.get(),
            killed: self.killed.get(),
            stalled: self.stalled.get(),
            network: self.network.get(),
            failed_attempts: self.failed_attempts.get(),
        }
    }

    /// Whether a stream is connected (false while reconnecting).
    pub fn connected(&self) -> bool {
        self.connected.get() != 0.0
    }

    fn set_connected(&self, connected: bool) {
        self.connected.set(if connected { 1.0 } else { 0.0 });
    }

    /// The end of the last transaction handled, once one was (or the
    /// stream's start, if it was given as a file and offset).
    pub fn handled(&self) -> Option<(String, u64)> {
        let h = self.handled.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        (!h.0.is_empty()).then(|| h.clone())
    }

    /// Records the end of the last transaction handled (once per
    /// transaction: the file's name is copied only when it changes).
    fn set_handled(&self, file: &str, pos: u64) {
        let mut h = self.handled.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if h.0 != file {
            file.clone_into(&mut h.0);
        }
        h.1 = pos;
    }

    /// Moves from one binlog file into the next.
    pub fn rotations(&self) -> u64 {
        self.rotations.get()
    }

    /// Makes these counters part of `registry`: resumes by `cause`, failed
    /// attempts, rotations, and whether a stream is connected.
    pub fn register(&self, registry: &Registry) {
        for cause in Cause::ALL {
            registry.attach_counter(
                names::RECONNECTS,
                "Binlog streams resumed after a loss, by cause.",
                vec![("cause", cause.as_str().to_owned())],
                self.counter(cause),
            );
        }
        registry.attach_counter(
            names::SOURCE_RECONNECT_FAILURES,
            "Reconnection attempts that failed.",
            vec![],
            &self.failed_attempts,
        );
        registry.attach_counter(
            names::BINLOG_ROTATIONS,
            "Binlog rotations followed into the next file.",
            vec![],
            &self.rotations,
        );
        registry.attach_gauge(
            names::SOURCE_CONNECTED,
            "1 while a binlog stream is connected, 0 while reconnecting.",
            vec![],
            &self.connected,
        );
    }

    /// The source's state as a [`Registry`] snapshot has it, if a source
    /// was registered there.
    pub fn from_snapshot(snap: &crate::telemetry::Snapshot) -> Option<SourceSnapshot> {
        if !snap.has(names::SOURCE_CONNECTED) {
            return None;
        }
        let by_cause = |cause: Cause| {
            snap.family(names::RECONNECTS)
                .filter(|s| s.label("cause") == Some(cause.as_str()))
                .map(|s| s.count())
                .sum()
        };
        Some(SourceSnapshot {
            connected: snap.sum(names::SOURCE_CONNECTED) != 0,
            rotations: snap.sum(names::BINLOG_ROTATIONS),
            reconnects: Reconnects {
                server_restart: by_cause(Cause::ServerRestart),
                killed: by_cause(Cause::Killed),
                stalled: by_cause(Cause::Stalled),
                network: by_cause(Cause::Network),
                failed_attempts: snap.sum(names::SOURCE_RECONNECT_FAILURES),
            },
        })
    }

    /// Everything at once, for a status report.
    pub fn snapshot(&self) -> SourceSnapshot {
        SourceSnapshot {
            connected: self.connected(),
            rotations: self.rotations(),
            reconnects: self.reconnects(),
        }
    }

    fn counter(&self, cause: Cause) -> &Counter {
        match cause {
            Cause::ServerRestart => &self.server_restart,
            Cause::Killed => &self.killed,
            Cause::Stalled => &self.stalled,
            Cause::Network => &self.network,
        }
    }

    fn count(&self, cause: Cause) {
        self.counter(cause).inc();
    }
}

/// The state of a live source, as `rowhook state` shows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SourceSnapshot {
    /// Whether a stream is connected (false while reconnecting).
    pub connected: bool,
    /// Moves from one binlog file into the next.
    pub rotations: u64,
    /// Streams resumed, by cause.
    pub reconnects: Reconnects,
}

/// What [`Resilient::next_event`] found.
#[derive(Debug)]
pub enum Step {
    /// The next event.
    Event(Event),
    /// The stream was lost and a new one started at the last reported
    /// commit: drop the open transaction (see
    /// [`crate::decode::Decoder::abandon_transaction`]) and anything
    /// buffered for it; its events come again.
    Resumed(Cause),
}

/// A live source that reconnects at the last commit. See the module docs.
pub struct Resilient {
    opts: LiveOptions,
    policy: RetryPolicy,
    live: LiveSource,
    /// Where to reconnect: the stream's resolved start until the first
    /// reported commit, then the commit's end (or the next file after a
    /// rotation).
    resume: StartPosition,
    stats: Arc<SourceStats>,
    backoff: Backoff,
    connected_at: Instant,
    delivered: bool,
    /// The binlog file the stream is in (empty until its first ROTATE).
    file: String,
    /// Set while reconnecting. Kept here rather than in the future of
    /// [`Resilient::next_event`], so that a caller may drop that future
    /// (`select!` against a timer) without losing the outage's progress.
    outage: Option<Outage>,
    /// The last event [`crate::source::Source::next`] gave.
    current: Option<Event>,
}

/// A lost stream being replaced.
struct Outage {
    /// The loss's cause as first seen (a restart shows later).
    cause: Cause,
    /// Whether an attempt was refused: nothing listened, the server was down.
    refused: bool,
    /// How the stream was lost.
    lost: String,
    since: Instant,
    /// When the server we lost had started.
    booted: Option<Instant>,
    attempts: u32,
    next_try: Instant,
    /// The connection attempt in flight, if any.
    attempt: Option<Attempt>,
    last: Option<String>,
}

/// [`LiveSource::connect_as`], given up after `limit`: a stalled server
/// accepts the TCP connection and never answers.
async fn connect_within(opts: &LiveOptions, limit: Duration, again: bool) -> Result<LiveSource, SourceError> {
    match tokio::time::timeout(limit, LiveSource::connect_as(opts, again)).await {
        Ok(result) => result,
        Err(_) => Err(SourceError::lost(
            Cause::Network,
            format!(
                "{} accepted the connection but did not answer within {:.1}s; is the server stopped or overloaded?",
                opts.url,
                limit.as_secs_f64()
            ),
        )),
    }
}

type Attempt = std::pin::Pin<Box<dyn std::future::Future<Output = Result<LiveSource, SourceError>> + Send>>;

impl Resilient {
    /// Connects (once: a first connection that fails is an error, and so
    /// is one the server does not answer within `policy.connect_timeout`).
    pub async fn open(opts: LiveOptions, policy: RetryPolicy) -> Result<Self, SourceError> {
        let live = connect_within(&opts, policy.connect_timeout, false).await?;
        let stats = Arc::new(SourceStats::default());
        stats.set_connected(true);
        if let StartPosition::File { file, pos } = live.start() {
            stats.set_handled(file, *pos);
        }
        Ok(Self {
            resume: live.start().clone(),
            backoff: Backoff::new(policy.first_delay, policy.max_delay),
            opts,
            policy,
            live,
            stats,
            connected_at: Instant::now(),
            delivered: false,
            file: String::new(),
            outage: None,
            current: None,
        })
    }

    /// Keeps `rowhook_source_lag_bytes` in `registry` up to date, asking
    /// the server on a connection of its own (see [`super::lag`]).
    pub fn watch_lag_bytes(&self, registry: &Registry) -> anyhow::Result<()> {
        super::lag::watch(self.opts.url.clone(), &self.stats, registry)
    }

    /// The counters, shared: they keep counting after this call.
    pub fn stats(&self) -> Arc<SourceStats> {
        self.stats.clone()
    }

    /// The server's version and settings (as of the last connection).
    pub fn server(&self) -> &ServerInfo {
        self.live.server()
    }

    /// The GTID state the first stream was asked to start after.
    pub fn start_gtids(&self) -> &GtidState {
        self.live.start_gtids()
    }

    /// Where a lost stream would resume.
    pub fn resume_position(&self) -> &StartPosition {
        &self.resume
    }

    /// Reports that the caller has processed every transaction up to
    /// `file:pos` (a commit's end, e.g. from
    /// [`crate::decode::Decoder::resume_position`]): a lost stream resumes
    /// there. The caller's decoder keeps the GTID state across the resume.
    pub fn committed(&mut self, (file, pos, _gtids): (&str, u64, &GtidState)) {
        self.stats.set_handled(file, pos);
        match &mut self.resume {
            StartPosition::File { file: f, pos: p } => {
                if f != file {
                    file.clone_into(f);
                }
                *p = pos;
            }
            other => {
                *other = StartPosition::File {
                    file: file.to_owned(),
                    pos,
                }
            }
        }
    }

    /// The event as the decoder takes it.
    pub fn raw<'a>(&self, event: &'a Event) -> RawEvent<'a> {
        self.live.raw(event)
    }

    /// Tells the source how many unpacked copies of a transaction payload's
    /// events follow, to drop.
    pub fn skip_payload_copies(&mut self, n: usize) {
        self.live.skip_payload_copies(n);
    }

    /// Today's column names of `db.table` from information_schema.
    pub async fn column_names(&mut self, db: &str, table: &str) -> anyhow::Result<Vec<String>> {
        self.live.column_names(db, table).await
    }

    /// The next event, or [`Step::Resumed`] after a lost stream was
    /// replaced. Fails on what retrying cannot fix, or when the policy's
    /// attempts are used up.
    ///
    /// Cancel-safe: dropping the future (say, in a `select!`) loses no
    /// event, and a reconnection in progress goes on at the next call.
    pub async fn next_event(&mut self) -> Result<Step, SourceError> {
        if self.outage.is_none() {
            let loss = match self.live.next().await {
                Ok(Some(event)) => {
                    self.track(&event);
                    return Ok(Step::Event(event));
                }
                Ok(None) => SourceError::lost(Cause::Killed, format!("{} closed the binlog stream", self.opts.url)),
                Err(e) if e.is_transient() => e,
                Err(e) => return Err(e),
            };
            self.lost(loss);
        }
        self.reconnect().await.map(Step::Resumed)
    }

    /// Follows rotations (a file boundary is a transaction boundary) and
    /// notes when the stream is healthy.
    fn track(&mut self, event: &Event) {
        let t = event.header().event_type_raw();
        match t {
            types::ROTATE => {
                let raw = self.live.raw(event);
                let mut c = Cursor::new(raw.body);
                let Ok(pos) = c.u64() else { return };
                let name = String::from_utf8_lossy(c.rest()).into_owned();
                if name.is_empty() {
                    return;
                }
                // A stream starts with a ROTATE to its first file; a
                // reconnect's names the file it resumes in.
                if !self.file.is_empty() && self.file != name {
                    self.stats.rotations.inc();
                    tracing::info!(from = %self.file, to = %name, "the server rotated its binlog: following into the next file");
                }
                if let StartPosition::File { .. } = self.resume {
                    self.committed((&name, pos, &GtidState::None));
                }
                self.file = name;
            }
            types::FORMAT_DESCRIPTION
            | types::MARIA_GTID_LIST
            | types::MARIA_BINLOG_CHECKPOINT
            | types::PREVIOUS_GTIDS => {}
            _ => self.delivered = true,
        }
    }

    /// Starts an outage after the stream was lost (`loss` is transient).
    fn lost(&mut self, loss: SourceError) {
        self.stats.set_connected(false);
        let (cause, refused) = match &loss {
            SourceError::Lost { cause, refused, .. } => (*cause, *refused),
            _ => (Cause::Network, false),
        };
        // A stream that worked for a while starts the backoff over; one
        // that keeps failing at once keeps backing off.
        if self.delivered || self.connected_at.elapsed() >= self.policy.max_delay {
            self.backoff.reset();
        }
        tracing::warn!(error = %loss, resume = %describe(&self.resume), "binlog stream lost; reconnecting");
        self.outage = Some(Outage {
            cause,
            refused,
            lost: loss.to_string(),
            since: Instant::now(),
            booted: self.live.server_booted(),
            attempts: 0,
            next_try: Instant::now() + self.backoff.delay(),
            attempt: None,
            last: None,
        });
    }

    async fn reconnect(&mut self) -> Result<Cause, SourceError> {
        let resume = describe(&self.resume);
        loop {
            let outage = self.outage.as_mut().expect("reconnecting during an outage");
            if outage.attempt.is_none() {
                if self.policy.max_attempts.is_some_and(|max| outage.attempts >= max) {
                    let outage = self.outage.take().expect("checked");
                    return Err(SourceError::GaveUp {
                        attempts: outage.attempts,
                        lost: outage.lost,
                        last: outage.last,
                    });
                }
                tokio::time::sleep_until(outage.next_try.into()).await;
                let opts = LiveOptions {
                    start: self.resume.clone(),
                    ..self.opts.clone()
                };
                let limit = self.policy.connect_timeout;
                outage.attempt = Some(Box::pin(async move { connect_within(&opts, limit, true).await }));
            }
            let result = outage.attempt.as_mut().expect("set above").await;
            outage.attempt = None;
            outage.attempts += 1;
            match result {
                Ok(live) => {
                    let outage = self.outage.take().expect("still reconnecting");
                    let cause = if outage.refused || restarted(outage.booted, live.server_booted()) {
                        Cause::ServerRestart
                    } else {
                        outage.cause
                    };
                    self.live = live;
                    self.connected_at = Instant::now();
                    self.delivered = false;
                    self.stats.count(cause);
                    self.stats.set_connected(true);
                    tracing::warn!(
                        cause = %cause,
                        attempt = outage.attempts,
                        down_ms = outage.since.elapsed().as_millis() as u64,
                        resume = %resume,
                        "binlog stream resumed"
                    );
                    return Ok(cause);
                }
                Err(e) if e.is_transient() => {
                    if let SourceError::Lost { refused: true, .. } = e {
                        // Nothing listens: the server is down, and will
                        // have restarted when it answers again.
                        outage.refused = true;
                        outage.cause = Cause::ServerRestart;
                    }
                    let delay = self.backoff.delay();
                    outage.next_try = Instant::now() + delay;
                    self.stats.failed_attempts.inc();
                    tracing::warn!(
                        cause = %outage.cause,
                        attempt = outage.attempts,
                        retry_in_ms = delay.as_millis() as u64,
                        error = %e,
                        "reconnecting failed"
                    );
                    outage.last = Some(e.to_string());
                }
                Err(e) => {
                    self.outage = None;
                    tracing::error!(error = %e, resume = %resume, "cannot resume the binlog stream");
                    return Err(e);
                }
            }
        }
    }
}

/// Whether the server's start time moved between two connections. Uptime
/// has whole seconds and is read a moment after connecting, so small
/// differences are noise; a restart moves it by the old server's whole
/// uptime.
fn restarted(before: Option<Instant>, after: Option<Instant>) -> bool {
    const NOISE: Duration = Duration::from_millis(1500);
    match (before, after) {
        (Some(a), Some(b)) => b.checked_duration_since(a).is_some_and(|d| d > NOISE),
        _ => false,
    }
}

impl super::Source for Resilient {
    async fn next(&mut self) -> anyhow::Result<super::SourceStep> {
        Ok(match self.next_event().await? {
            Step::Event(event) => {
                self.current = Some(event);
                super::SourceStep::Event
            }
            Step::Resumed(_) => super::SourceStep::Resumed,
        })
    }

    fn event(&self) -> RawEvent<'_> {
        self.raw(self.current.as_ref().expect("event() follows a SourceStep::Event"))
    }

    fn committed(&mut self, at: (&str, u64, &GtidState)) {
        Resilient::committed(self, at);
    }

    fn skip_payload_copies(&mut self, n: usize) {
        Resilient::skip_payload_copies(self, n);
    }

    async fn column_names(&mut self, db: &str, table: &str) -> anyhow::Result<Option<Vec<String>>> {
        Resilient::column_names(self, db, table).await.map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_is_a_moved_start_time() {
        let now = Instant::now();
        let t = |secs: u64| now.checked_sub(Duration::from_secs(secs));
        // The same boot seen twice, one second of rounding apart.
        assert!(!restarted(t(100), t(99)));
        assert!(!restarted(t(100), t(101)));
        // Booted 40 s after the one seen before.
        assert!(restarted(t(100), t(60)));
        assert!(!restarted(None, t(1)));
    }

    #[test]
    fn reconnect_counters() {
        let stats = SourceStats::default();
        stats.count(Cause::Killed);
        stats.count(Cause::Killed);
        stats.count(Cause::ServerRestart);
        let r = stats.reconnects();
        assert_eq!((r.killed, r.server_restart, r.stalled, r.total()), (2, 1, 0, 3));
        assert_eq!(r.of(Cause::Killed), 2);
        assert_eq!(Cause::ALL.map(|c| r.of(c)).iter().sum::<u64>(), r.total());
        let registry = Registry::new();
        stats.register(&registry);
        stats.set_connected(true);
        stats.failed_attempts.inc();
        let snap = registry.snapshot();
        assert_eq!(SourceStats::from_snapshot(&snap), Some(stats.snapshot()));
        assert_eq!(SourceStats::from_snapshot(&Registry::new().snapshot()), None);
    }
}
