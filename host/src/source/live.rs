//! The live source: rowhook connects as a replica and streams the binlog.
//!
//! mysql_async's binlog stream frames the events; everything in them is
//! decoded by [`crate::decode`]. This module asks the server for what the
//! decoder needs (MariaDB's real GTID events, heartbeats, a start position)
//! and tells a quiet server from a dead connection.

use std::time::Duration;

use anyhow::Context as _;
use futures_util::StreamExt as _;
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStream, BinlogStreamRequest, Conn};
use mysql_common::binlog::events::Event;

use super::StartPosition;
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
    first_event: bool,
    start_gtids: GtidState,
    names_conn: Option<Conn>,
}

impl LiveSource {
    /// Connects, checks the server, and requests the binlog from `opts.start`.
    pub async fn open(opts: &LiveOptions) -> anyhow::Result<LiveSource> {
        let url = &opts.url;
        let mut conn = url.connect().await?;
        let info = ServerInfo::read(&mut conn).await?;
        let mut problems = info.problems();
        if opts.allow_minimal_metadata {
            problems.retain(|p| p.kind != ProblemKind::RowMetadata);
        }
        if !problems.is_empty() {
            let list: Vec<String> = problems.iter().map(|p| format!("  - {p}")).collect();
            anyhow::bail!("{url} cannot feed a row-based replica:\n{}", list.join("\n"));
        }
        match super::server::server_id_problem(&mut conn, &info, opts.server_id).await {
            // A replica still listed under our id is usually our own previous
            // connection, which the server drops when this one registers.
            Some(p) if p.kind == ProblemKind::ServerIdInUse => {
                tracing::warn!(server_id = opts.server_id, "{p}");
            }
            Some(p) => anyhow::bail!("{url}: {p}"),
            None => {}
        }
        let missing = super::server::missing_grants(&mut conn).await.unwrap_or_default();
        if !missing.is_empty() {
            let list: Vec<String> = missing.iter().map(|p| format!("  - {p}")).collect();
            anyhow::bail!("{url}: the user cannot replicate:\n{}", list.join("\n"));
        }

        let period_ns = opts.heartbeat.as_nanos().max(1_000_000) as u64;
        conn.query_drop(format!("SET @master_heartbeat_period = {period_ns}"))
            .await
            .map_err(|e| url.explain(e))?;
        if info.mariadb {
            // Without this MariaDB hides its GTID events behind BEGIN queries.
            conn.query_drop("SET @mariadb_slave_capability = 4")
                .await
                .map_err(|e| url.explain(e))?;
        }

        let mut start_gtids = GtidState::None;
        let (file, pos, gtid_request) = match &opts.start {
            StartPosition::Earliest => {
                let logs: Vec<mysql_async::Row> = conn.query("SHOW BINARY LOGS").await.map_err(|e| url.explain(e))?;
                let first: String = logs
                    .first()
                    .and_then(|r| r.get_opt(0))
                    .and_then(Result::ok)
                    .context("the server lists no binary logs (SHOW BINARY LOGS is empty)")?;
                (first, 4, None)
            }
            StartPosition::Latest => {
                let (f, p) = master_status(&mut conn).await.map_err(|e| url.explain(e))?;
                (f, p, None)
            }
            StartPosition::File { file, pos } => {
                let logs: Vec<mysql_async::Row> = conn.query("SHOW BINARY LOGS").await.map_err(|e| url.explain(e))?;
                let names: Vec<String> = logs.iter().filter_map(|r| r.get_opt(0).and_then(Result::ok)).collect();
                if !names.iter().any(|n| n == file) {
                    anyhow::bail!(
                        "{url} has no binlog file {file} (it has {}..{}); it was purged or never existed. \
                         Start from `earliest` or a GTID instead",
                        names.first().map_or("none", String::as_str),
                        names.last().map_or("none", String::as_str)
                    );
                }
                (file.clone(), *pos, None)
            }
            StartPosition::Gtid(set_text) => {
                start_gtids = GtidState::parse(set_text).map_err(|e| anyhow::anyhow!("start GTID: {e}"))?;
                (String::new(), 4, Some(set_text.clone()))
            }
        };

        let mut request = BinlogStreamRequest::new(opts.server_id);
        let sids: Vec<mysql_common::packets::Sid<'static>>;
        if let Some(text) = &gtid_request {
            if info.mariadb {
                if !matches!(start_gtids, GtidState::MariaDb(_)) {
                    anyhow::bail!("{url} is MariaDB: start from a MariaDB GTID such as 0-1-42, not `{text}`");
                }
                conn.query_drop(format!("SET @slave_connect_state = '{start_gtids}'"))
                    .await
                    .map_err(|e| url.explain(e))?;
                conn.query_drop("SET @slave_gtid_strict_mode = 0")
                    .await
                    .map_err(|e| url.explain(e))?;
                conn.query_drop("SET @slave_gtid_ignore_duplicates = 0")
                    .await
                    .map_err(|e| url.explain(e))?;
            } else {
                if !matches!(start_gtids, GtidState::MySql(_)) {
                    anyhow::bail!("{url} is MySQL: start from a GTID set such as uuid:1-42, not `{text}`");
                }
                sids = text
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| s.parse().map_err(|e| anyhow::anyhow!("start GTID `{s}`: {e}")))
                    .collect::<anyhow::Result<_>>()?;
                request = request.with_gtid().with_gtid_set(sids);
            }
        } else {
            request = request.with_filename(file.as_bytes()).with_pos(pos);
        }
        let stream = conn.get_binlog_stream(request).await.map_err(|e| url.explain(e))?;
        Ok(LiveSource {
            url: url.clone(),
            stream,
            info,
            heartbeat: opts.heartbeat,
            skip: 0,
            first_event: true,
            start_gtids,
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

    /// The next event, or `None` when the server ended the stream.
    ///
    /// Fails when neither an event nor a heartbeat arrived for three
    /// heartbeat periods: the connection is dead even if TCP has not noticed.
    pub async fn next_event(&mut self) -> anyhow::Result<Option<Event>> {
        loop {
            let wait = (self.heartbeat * 3).max(Duration::from_secs(2));
            let next = tokio::time::timeout(wait, self.stream.next()).await.map_err(|_| {
                anyhow::anyhow!(
                    "no event or heartbeat from {} for {:.1}s: the connection is presumed dead",
                    self.url,
                    wait.as_secs_f64()
                )
            })?;
            let Some(event) = next else { return Ok(None) };
            let event = event.map_err(|e| self.url.explain(e))?;
            if self.skip > 0 {
                self.skip -= 1;
                continue;
            }
            let t = event.header().event_type_raw();
            if t == types::HEARTBEAT || t == types::HEARTBEAT_V2 {
                continue;
            }
            return Ok(Some(event));
        }
    }

    /// The event as the decoder takes it.
    pub fn raw<'a>(&mut self, event: &'a Event) -> RawEvent<'a> {
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
        if header.type_code == types::ROTATE && self.first_event && !self.info.checksum.eq_ignore_ascii_case("NONE") {
            // The stream's first ROTATE comes before the format description,
            // so mysql_common cannot know it carries a checksum: it is still
            // on the end of the file name.
            body = &body[..body.len().saturating_sub(4)];
        }
        self.first_event = false;
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
        Err(_) => conn.query_first("SHOW BINARY LOG STATUS").await?,
    };
    let row =
        row.ok_or_else(|| mysql_async::Error::Other("SHOW MASTER STATUS returned nothing: is the binlog on?".into()))?;
    let file: String = row.get_opt(0).and_then(Result::ok).unwrap_or_default();
    let pos: u64 = row.get_opt(1).and_then(Result::ok).unwrap_or(4);
    Ok((file, pos))
}
