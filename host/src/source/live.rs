//! The live source: rowhook connects as a replica and streams the binlog.
//!
//! mysql_async's binlog stream frames the events; everything in them is
//! decoded by [`crate::decode`]. This module asks the server for what the
//! decoder needs (MariaDB's real GTID events, heartbeats, a start position)
//! and tells a quiet server from a dead connection. Errors are typed
//! ([`SourceError`]): [`super::reconnect::Resilient`] retries the transient
//! ones and gives the others to the operator.

use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStream, BinlogStreamRequest, Conn};
use mysql_common::binlog::events::Event;

use super::StartPosition;
use super::error::{Cause, SourceError};
use super::server::{ProblemKind, ServerInfo, SourceUrl};
use crate::decode::event::{EventHeader, RawEvent, types};
use crate::decode::gtid::GtidState;

/// How to connect and where to start.
#[derive(Debug, Clone)]
pub struct LiveOptions {
    /// The source server.
    pub url: SourceUrl,
    /// Our replica id; unique among the server's replicas.
    pub server_id: u32,
    /// Where to start.
    pub start: StartPosition,
    /// Heartbeat period asked of the server; three missed heartbeats mean the
    /// connection is dead.
    pub heartbeat: Duration,
    /// Accept servers without `binlog_row_metadata=FULL`, taking column
    /// names from information_schema.
    pub allow_minimal_metadata: bool,
    /// Another reader with this replica id may still be listed by the
    /// server: the capture this one takes over from, whose connection the
    /// server drops when this one registers. Said at info level, not as a
    /// warning.
    pub successor: bool,
}

/// A connected binlog stream.
pub struct LiveSource {
    url: SourceUrl,
    stream: BinlogStream,
    info: ServerInfo,
    heartbeat: Duration,
    /// Events still to skip: mysql_async unpacks TRANSACTION_PAYLOAD events
    /// itself and yields their contents after them, but the decoder unpacks
    /// the payload too, so those copies are dropped.
    skip: usize,
    /// Whether the last event returned was the stream's first.
    at_first: bool,
    seen_any: bool,
    start_gtids: GtidState,
    /// Where the stream was asked to start, `earliest` and `latest` resolved.
    start: StartPosition,
    /// When the server started, by our clock (from its `Uptime`).
    booted: Option<Instant>,
    names_conn: Option<Conn>,
}

impl LiveSource {
    /// Connects, checks the server, and requests the binlog from `opts.start`.
    ///
    /// The error is a [`SourceError`] (see [`LiveSource::connect`]).
    pub async fn open(opts: &LiveOptions) -> anyhow::Result<LiveSource> {
        Ok(Self::connect(opts).await?)
    }

    /// Connects, checks the server and the start position, and requests the
    /// binlog from `opts.start`.
    pub async fn connect(opts: &LiveOptions) -> Result<LiveSource, SourceError> {
        Self::connect_as(opts, false).await
    }

    /// [`LiveSource::connect`]; `again` when resuming a lost stream, where
    /// our own previous registration is expected.
    pub(crate) async fn connect_as(opts: &LiveOptions, again: bool) -> Result<LiveSource, SourceError> {
        let url = &opts.url;
        let at = describe(&opts.start);
        let fail = |e: mysql_async::Error| connect_error(url, &at, e);
        let mut conn = Conn::new(url.opts().clone()).await.map_err(fail)?;
        let info = ServerInfo::read_strict(&mut conn).await.map_err(fail)?;
        let mut problems = info.problems();
        if opts.allow_minimal_metadata {
            problems.retain(|p| p.kind != ProblemKind::RowMetadata);
        }
        if !problems.is_empty() {
            let list: Vec<String> = problems.iter().map(|p| format!("  - {p}")).collect();
            return Err(fatal(format!(
                "{url} cannot feed a row-based replica:\n{}",
                list.join("\n")
            )));
        }
        match super::server::server_id_problem(&mut conn, &info, opts.server_id).await {
            // A replica still listed under our id is usually our own previous
            // connection, which the server drops when this one registers.
            Some(p) if p.kind == ProblemKind::ServerIdInUse => {
                if again {
                    tracing::debug!(server_id = opts.server_id, "{p}");
                } else if opts.successor {
                    tracing::info!(
                        server_id = opts.server_id,
                        "server_id {} is still listed as a connected replica: most likely by the capture this one takes over from, \
                         whose connection the server drops now (if another program uses this id, give this source another server_id)",
                        opts.server_id
                    );
                } else {
                    tracing::warn!(server_id = opts.server_id, "{p}");
                }
            }
            Some(p) => return Err(fatal(format!("{url}: {p}"))),
            None => {}
        }
        let missing = super::server::missing_grants(&mut conn).await.unwrap_or_default();
        if !missing.is_empty() {
            let list: Vec<String> = missing.iter().map(|p| format!("  - {p}")).collect();
            return Err(fatal(format!("{url}: the user cannot replicate:\n{}", list.join("\n"))));
        }
        let booted = server_uptime(&mut conn)
            .await
            .and_then(|up| Instant::now().checked_sub(Duration::from_secs(up)));

        let period_ns = opts.heartbeat.as_nanos().max(1_000_000) as u64;
        conn.query_drop(format!("SET @master_heartbeat_period = {period_ns}"))
            .await
            .map_err(fail)?;
        if info.mariadb {
            // Without this MariaDB hides its GTID events behind BEGIN queries.
            conn.query_drop("SET @mariadb_slave_capability = 4")
                .await
                .map_err(fail)?;
        }

        let mut start_gtids = GtidState::None;
        let server = url.to_string();
        let (file, pos, gtid_request) = match &opts.start {
            StartPosition::Earliest => {
                let logs = binary_logs(&mut conn).await.map_err(fail)?;
                let (first, _) = logs.into_iter().next().ok_or_else(|| {
                    fatal(format!(
                        "{url} lists no binary logs (SHOW BINARY LOGS is empty): is the binlog on?"
                    ))
                })?;
                (first, 4, None)
            }
            StartPosition::Latest => {
                let (f, p) = master_status(&mut conn).await.map_err(fail)?;
                (f, p, None)
            }
            StartPosition::File { file, pos } => {
                let logs = binary_logs(&mut conn).await.map_err(fail)?;
                super::error::check_file_position(&server, &logs, file, *pos)?;
                (file.clone(), *pos, None)
            }
            StartPosition::Gtid(set_text) => {
                start_gtids = GtidState::parse(set_text).map_err(|e| fatal(format!("start GTID: {e}")))?;
                (String::new(), 4, Some(set_text.clone()))
            }
        };

        let mut request = BinlogStreamRequest::new(opts.server_id);
        let sids: Vec<mysql_common::packets::Sid<'static>>;
        if let Some(text) = &gtid_request {
            if info.mariadb {
                if !matches!(start_gtids, GtidState::MariaDb(_)) {
                    return Err(fatal(format!(
                        "{url} is MariaDB: start from a MariaDB GTID such as 0-1-42, not `{text}`"
                    )));
                }
                let state = start_gtids.to_string();
                let binlog_state: Option<String> = conn
                    .query_first("SELECT @@GLOBAL.gtid_binlog_state")
                    .await
                    .map_err(fail)?;
                // The GTID position where the oldest binlog starts: anything
                // before it is purged. Best effort: the server's own error
                // 1236 covers what this misses.
                let oldest = match binary_logs(&mut conn).await.map_err(fail)?.first() {
                    Some((first, _)) => conn
                        .exec_first::<Option<String>, _, _>("SELECT BINLOG_GTID_POS(?, 4)", (first.as_str(),))
                        .await
                        .ok()
                        .flatten()
                        .flatten(),
                    None => None,
                };
                super::error::check_gtid_start(
                    &server,
                    &state,
                    binlog_state.as_deref().unwrap_or(""),
                    oldest.as_deref(),
                )?;
                conn.query_drop(format!("SET @slave_connect_state = '{state}'"))
                    .await
                    .map_err(fail)?;
                conn.query_drop("SET @slave_gtid_strict_mode = 0").await.map_err(fail)?;
                conn.query_drop("SET @slave_gtid_ignore_duplicates = 0")
                    .await
                    .map_err(fail)?;
            } else {
                if !matches!(start_gtids, GtidState::MySql(_)) {
                    return Err(fatal(format!(
                        "{url} is MySQL: start from a GTID set such as uuid:1-42, not `{text}`"
                    )));
                }
                sids = text
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| s.parse().map_err(|e| fatal(format!("start GTID `{s}`: {e}"))))
                    .collect::<Result<_, _>>()?;
                request = request.with_gtid().with_gtid_set(sids);
            }
        } else {
            request = request.with_filename(file.as_bytes()).with_pos(pos);
        }
        let stream = conn.get_binlog_stream(request).await.map_err(fail)?;
        let start = match gtid_request {
            Some(text) => StartPosition::Gtid(text),
            None => StartPosition::File { file, pos },
        };
        Ok(LiveSource {
            url: url.clone(),
            stream,
            info,
            heartbeat: opts.heartbeat,
            skip: 0,
            at_first: false,
            seen_any: false,
            start_gtids,
            start,
            booted,
            names_conn: None,
        })
    }

    /// The server's version and settings.
    pub fn server(&self) -> &ServerInfo {
        &self.info
    }

    /// The GTID state the stream was asked to start after.
    pub fn start_gtids(&self) -> &GtidState {
        &self.start_gtids
    }

    /// Where the stream was asked to start: a file and position (`earliest`
    /// and `latest` resolved at connect time), or the GTID set asked for.
    pub fn start(&self) -> &StartPosition {
        &self.start
    }

    /// When the server last started, by this process's clock; `None` if
    /// it did not say.
    pub fn server_booted(&self) -> Option<Instant> {
        self.booted
    }

    /// The next event, or `None` when the server ended the stream.
    ///
    /// The error is a [`SourceError`] (see [`LiveSource::next`]).
    pub async fn next_event(&mut self) -> anyhow::Result<Option<Event>> {
        Ok(self.next().await?)
    }

    /// The next event, or `None` when the server ended the stream.
    ///
    /// Fails when neither an event nor a heartbeat arrived for three
    /// heartbeat periods: the connection is dead even if TCP has not noticed.
    pub async fn next(&mut self) -> Result<Option<Event>, SourceError> {
        loop {
            let wait = (self.heartbeat * 3).max(Duration::from_secs(2));
            let next = tokio::time::timeout(wait, self.stream.next()).await.map_err(|_| {
                SourceError::lost(
                    Cause::Stalled,
                    format!(
                        "no event or heartbeat from {} for {:.1}s: the connection is presumed dead",
                        self.url,
                        wait.as_secs_f64()
                    ),
                )
            })?;
            let Some(event) = next else { return Ok(None) };
            let event = event.map_err(|e| stream_error(&self.url, &describe(&self.start), e))?;
            if self.skip > 0 {
                self.skip -= 1;
                continue;
            }
            let t = event.header().event_type_raw();
            if t == types::HEARTBEAT || t == types::HEARTBEAT_V2 {
                continue;
            }
            self.at_first = !self.seen_any;
            self.seen_any = true;
            return Ok(Some(event));
        }
    }

    /// The event as the decoder takes it (`event` is the last one
    /// [`LiveSource::next`] returned).
    pub fn raw<'a>(&self, event: &'a Event) -> RawEvent<'a> {
        let h = event.header();
        let header = EventHeader {
            timestamp: h.timestamp(),
            type_code: h.event_type_raw(),
            server_id: h.server_id(),
            event_size: h.event_size(),
            log_pos: h.log_pos(),
            flags: h.flags_raw(),
        };
        let mut body = event.data();
        if header.type_code == types::ROTATE && self.at_first && !self.info.checksum.eq_ignore_ascii_case("NONE") {
            // The stream's first ROTATE comes before the format description,
            // so mysql_common cannot know it carries a checksum: it is still
            // on the end of the file name.
            body = &body[..body.len().saturating_sub(4)];
        }
        let end = u64::from(header.log_pos);
        let pos = end.saturating_sub(u64::from(header.event_size));
        RawEvent { header, body, pos, end }
    }

    /// Tells the source how many unpacked copies of a transaction payload's
    /// events follow, to drop.
    pub fn skip_payload_copies(&mut self, n: usize) {
        self.skip = n;
    }

    /// Today's column names of `db.table` from information_schema.
    pub async fn column_names(&mut self, db: &str, table: &str) -> anyhow::Result<Vec<String>> {
        if self.names_conn.is_none() {
            self.names_conn = Some(self.url.connect().await?);
        }
        // A lost connection here fails the run; the binlog stream's own
        // losses are the ones retried.
        let conn = self.names_conn.as_mut().expect("connected above");
        let names: Vec<String> = conn
            .exec(
                "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
                (db, table),
            )
            .await
            .map_err(|e| self.url.explain(e))?;
        Ok(names)
    }
}

/// The server's current binlog file and position.
async fn master_status(conn: &mut Conn) -> Result<(String, u64), mysql_async::Error> {
    // MySQL 8.4 renamed SHOW MASTER STATUS.
    let row: Option<mysql_async::Row> = match conn.query_first("SHOW MASTER STATUS").await {
        Ok(r) => r,
        Err(mysql_async::Error::Server(_)) => conn.query_first("SHOW BINARY LOG STATUS").await?,
        Err(e) => return Err(e),
    };
    let row =
        row.ok_or_else(|| mysql_async::Error::Other("SHOW MASTER STATUS returned nothing: is the binlog on?".into()))?;
    let file: String = row.get_opt(0).and_then(Result::ok).unwrap_or_default();
    let pos: u64 = row.get_opt(1).and_then(Result::ok).unwrap_or(4);
    Ok((file, pos))
}

/// The server's binlog files and sizes, oldest first.
pub(crate) async fn binary_logs(conn: &mut Conn) -> Result<Vec<(String, u64)>, mysql_async::Error> {
    let rows: Vec<mysql_async::Row> = conn.query("SHOW BINARY LOGS").await?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let name: String = r.get_opt(0)?.ok()?;
            let size: u64 = r.get_opt(1).and_then(Result::ok).unwrap_or(u64::MAX);
            Some((name, size))
        })
        .collect())
}

/// Seconds since the server started.
async fn server_uptime(conn: &mut Conn) -> Option<u64> {
    let row: Option<(String, String)> = conn.query_first("SHOW GLOBAL STATUS LIKE 'Uptime'").await.ok()?;
    row?.1.parse().ok()
}

/// A start position as errors show it.
pub(crate) fn describe(start: &StartPosition) -> String {
    match start {
        StartPosition::Earliest => "the earliest binlog".into(),
        StartPosition::Latest => "the end of the binlog".into(),
        StartPosition::File { file, pos } => format!("{file}:{pos}"),
        StartPosition::Gtid(set) => set.clone(),
    }
}

fn fatal(message: String) -> SourceError {
    SourceError::Fatal(anyhow::anyhow!(message))
}

/// A driver error while connecting, sorted and explained.
fn connect_error(url: &SourceUrl, at: &str, e: mysql_async::Error) -> SourceError {
    let explained = url.explain_ref(&e);
    SourceError::from_driver(&e, explained, &url.to_string(), at)
}

/// A driver error on the binlog stream, sorted and explained.
fn stream_error(url: &SourceUrl, at: &str, e: mysql_async::Error) -> SourceError {
    let explained = match &e {
        mysql_async::Error::Io(_) | mysql_async::Error::Driver(mysql_async::DriverError::ConnectionClosed) => {
            anyhow::anyhow!("the binlog stream from {url} broke: {}", url.scrub(&e.to_string()))
        }
        _ => url.explain_ref(&e),
    };
    SourceError::from_driver(&e, explained, &url.to_string(), at)
}
